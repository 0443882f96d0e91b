//! The headers of one attempt, in one list: what it sends, and what the
//! attempt log keeps of them (every header but the signature, custom
//! values masked: they are often credentials, and the log outlives a
//! replaced one). The log stores what was sent; nothing rebuilds it.

use crate::claim::Claimed;
use postbox_rules::headers::MASKED_VALUE;
use postbox_rules::RuleError;

/// The User-Agent of every attempt: the worker's version, which is the
/// extension's.
pub const USER_AGENT: &str = concat!("postbox/", env!("CARGO_PKG_VERSION"));

/// One attempt's headers.
pub struct Headers {
    /// (name, value), in the order they are sent.
    pub sent: Vec<(String, String)>,
    /// What the attempt log keeps, as a JSON object.
    pub logged: String,
}

/// The headers of an attempt to `job`'s endpoint at `unix` with `body`,
/// signed as `message_id` (the event's id, or a batch's): the content type,
/// the User-Agent, the endpoint's custom headers, then the signature
/// headers of its style ([`crate::sign::headers`]).
pub fn headers(
    job: &Claimed,
    message_id: uuid::Uuid,
    unix: i64,
    body: &[u8],
) -> Result<Headers, RuleError> {
    let signed = crate::sign::headers(job, message_id, unix, body)?;
    let mut sent: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        ("user-agent".into(), USER_AGENT.into()),
    ];
    let mut logged = serde_json::Map::new();
    for (name, value) in &sent {
        logged.insert(name.clone(), value.as_str().into());
    }
    for (name, value) in &job.endpoint.headers {
        sent.push((name.clone(), value.clone()));
        logged.insert(name.clone(), MASKED_VALUE.into());
    }
    let signature = signed.len() - 1;
    for (i, (name, value)) in signed.into_iter().enumerate() {
        if i != signature {
            logged.insert(name.clone(), value.as_str().into());
        }
        sent.push((name, value));
    }
    Ok(Headers {
        sent,
        logged: serde_json::Value::Object(logged).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::tests::sample_job;
    use postbox_rules::headers::SignatureStyle;
    use std::sync::Arc;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn the_log_keeps_what_was_sent_but_the_signature_and_custom_values() {
        let mut job = sample_job(SignatureStyle::Standard, None, &[SECRET]);
        Arc::get_mut(&mut job.endpoint).unwrap().headers =
            vec![("Authorization".into(), "Bearer s3cr3t".into())];
        let h = headers(&job, job.event_id, 1614265330, b"{}").unwrap();
        let names: Vec<&str> = h.sent.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "user-agent",
                "Authorization",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature"
            ]
        );
        assert_eq!(h.sent[2].1, "Bearer s3cr3t", "sent as configured");
        let logged: serde_json::Value = serde_json::from_str(&h.logged).unwrap();
        assert_eq!(
            logged,
            serde_json::json!({
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "Authorization": MASKED_VALUE,
                "webhook-id": "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
                "webhook-timestamp": "1614265330",
            })
        );
        assert!(!h.logged.contains("s3cr3t") && !h.logged.contains("v1,"));
    }

    #[test]
    fn a_hex_signature_header_is_not_logged_either() {
        let job = sample_job(
            SignatureStyle::Sha256Hex,
            Some("X-Hub-Signature-256"),
            &[SECRET],
        );
        let h = headers(&job, job.event_id, 1614265330, b"{}").unwrap();
        assert_eq!(h.sent.last().unwrap().0, "X-Hub-Signature-256");
        assert!(!h.logged.contains("X-Hub-Signature-256") && !h.logged.contains("sha256="));
    }
}
