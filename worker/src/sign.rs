//! The signature headers of one attempt, from the shared signing functions
//! (`postbox_rules::sign`), in the endpoint's [`SignatureStyle`].

use crate::claim::Claimed;
use postbox_rules::headers::SignatureStyle;
use postbox_rules::{sign, RuleError};

/// (name, value) pairs to add to the request, the signature last (the
/// attempt log keeps the others). `message_id` is the request's
/// `webhook-id` (the event's, or a batch's), `unix` this attempt's time.
pub fn headers(
    job: &Claimed,
    message_id: uuid::Uuid,
    unix: i64,
    body: &[u8],
) -> Result<Vec<(String, String)>, RuleError> {
    let endpoint = &job.endpoint;
    if endpoint.secrets.is_empty() {
        return Err(RuleError::new(
            postbox_rules::Code::SecretMissing,
            "endpoint has no valid signing secret",
            job.endpoint_id,
        ));
    }
    match (
        endpoint.signature_style,
        endpoint.signature_header.as_deref(),
    ) {
        // The hex styles carry one signature: always the newest secret.
        (SignatureStyle::Sha256Hex, Some(header)) => Ok(vec![(
            header.to_string(),
            sign::sha256_hex(&endpoint.secrets[0], body),
        )]),
        (SignatureStyle::Hex, Some(header)) => Ok(vec![(
            header.to_string(),
            sign::hex(&endpoint.secrets[0], body),
        )]),
        _ => {
            let id = message_id.to_string();
            let secrets: Vec<&str> = endpoint.secrets.iter().map(String::as_str).collect();
            let sig = sign::standard(&id, unix, body, &secrets)?;
            Ok(vec![
                ("webhook-id".into(), id),
                ("webhook-timestamp".into(), unix.to_string()),
                ("webhook-signature".into(), sig),
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::tests::sample_job;

    // The Standard Webhooks reference secret; a second one for a rotation.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER: &str = "whsec_CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    // Computed independently (Python's hmac and base64) for the event id
    // 0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b:
    //   base64(HMAC-SHA256(base64decode(secret[6:]), f"{id}.{ts}.{body}"))
    //   hex(HMAC-SHA256(secret, body))
    const STANDARD: &str = "v1,e0zYNDG1XQ51+uEJwy0sxzHq6xUs22bfp6ROQVvb3Gc=";
    const STANDARD_OTHER: &str = "v1,v07g5CkIv2MJ/+BWP0jEbaye/+8UPGTpgJnE2z6olfc=";
    const HEX: &str = "sha256=80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c";
    const HEX_OTHER: &str =
        "sha256=061dacd1fd311d9492ae24bfb0e32b663dd934e310fa9ce915cc4c691e96dafa";

    fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn standard_style_matches_a_fixed_vector() {
        let job = sample_job(SignatureStyle::Standard, None, &[SECRET]);
        assert_eq!(
            pairs(&headers(&job, job.event_id, TS, BODY).unwrap()),
            [
                ("webhook-id", "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"),
                ("webhook-timestamp", "1614265330"),
                ("webhook-signature", STANDARD),
            ]
        );
        // During a rotation: one signature per valid secret, newest first.
        let job = sample_job(SignatureStyle::Standard, None, &[OTHER, SECRET]);
        let got = headers(&job, job.event_id, TS, BODY).unwrap();
        assert_eq!(got[2].1, format!("{STANDARD_OTHER} {STANDARD}"));
    }

    #[test]
    fn sha256_hex_signs_once_with_the_newest_secret() {
        let job = sample_job(
            SignatureStyle::Sha256Hex,
            Some("X-Hub-Signature-256"),
            &[SECRET],
        );
        assert_eq!(
            pairs(&headers(&job, job.event_id, TS, BODY).unwrap()),
            [("X-Hub-Signature-256", HEX)]
        );
        let job = sample_job(
            SignatureStyle::Sha256Hex,
            Some("X-Hub-Signature-256"),
            &[OTHER, SECRET],
        );
        assert_eq!(
            pairs(&headers(&job, job.event_id, TS, BODY).unwrap()),
            [("X-Hub-Signature-256", HEX_OTHER)]
        );
    }

    #[test]
    fn no_secret_no_request() {
        let job = sample_job(SignatureStyle::Standard, None, &[]);
        let e = headers(&job, job.event_id, TS, BODY)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no valid signing secret"), "{e}");
        assert!(!e.contains("whsec_"), "{e}");
    }
}
