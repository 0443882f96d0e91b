//! The signature headers of one attempt, from the shared signing functions.

use crate::claim::Claimed;
use postbox_rules::{sign, RuleError};

/// (name, value) pairs to add to the request. `unix` is this attempt's time.
pub fn headers(job: &Claimed, unix: i64, body: &[u8]) -> Result<Vec<(String, String)>, RuleError> {
    if job.endpoint.secrets.is_empty() {
        return Err(RuleError::new(
            "endpoint has no valid signing secret",
            job.endpoint_id,
        ));
    }
    match job.endpoint.signature_header.as_deref() {
        // sha256-hex carries one signature: always the newest secret.
        Some(header) if job.endpoint.signature_style == "sha256-hex" => Ok(vec![(
            header.to_string(),
            sign::sha256_hex(&job.endpoint.secrets[0], body),
        )]),
        _ => {
            let id = job.event_id.to_string();
            let secrets: Vec<&str> = job.endpoint.secrets.iter().map(String::as_str).collect();
            let sig = sign::standard(&id, unix, body, &secrets)?;
            Ok(vec![
                ("webhook-id".into(), id),
                ("webhook-timestamp".into(), unix.to_string()),
                ("webhook-signature".into(), sig),
            ])
        }
    }
}
