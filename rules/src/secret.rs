//! `whsec_` signing secrets: base64 of random bytes behind a fixed prefix, as
//! Svix and Standard Webhooks use them. Error messages never show a secret.

use crate::error::RuleError;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

pub const PREFIX: &str = "whsec_";
pub const GENERATED_BYTES: usize = 32;
pub const MIN_BYTES: usize = 24;
pub const MAX_BYTES: usize = 64;

// Secrets from other providers come with and without base64 padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A new secret from `GENERATED_BYTES` bytes of CSPRNG output.
pub fn encode(random: &[u8; GENERATED_BYTES]) -> String {
    format!("{PREFIX}{}", STANDARD.encode(random))
}

/// The HMAC key of a secret: the bytes behind `whsec_`.
pub fn key(secret: &str) -> Result<Vec<u8>, RuleError> {
    let hidden = || format!("(secret hidden, {} characters)", secret.len());
    let Some(b64) = secret.strip_prefix(PREFIX) else {
        return Err(RuleError::new("secret must start with whsec_", hidden()));
    };
    let bytes = LENIENT
        .decode(b64)
        .map_err(|_| RuleError::new("secret must be whsec_ followed by base64", hidden()))?;
    if !(MIN_BYTES..=MAX_BYTES).contains(&bytes.len()) {
        return Err(RuleError::new(
            format!("secret must encode {MIN_BYTES} to {MAX_BYTES} bytes"),
            format!("(secret hidden, {} bytes)", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Checks a caller-supplied secret.
pub fn validate(secret: &str) -> Result<(), RuleError> {
    key(secret).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_round_trip() {
        let s = encode(&[7u8; 32]);
        assert!(s.starts_with("whsec_"));
        assert_eq!(key(&s).unwrap(), vec![7u8; 32]);
    }

    #[test]
    fn own_secrets_accept_24_to_64_bytes_with_or_without_padding() {
        // Standard Webhooks' documented example secret (24 bytes).
        validate("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        validate(&format!("whsec_{}", STANDARD.encode([1u8; 64]))).unwrap();
        let padded = format!("whsec_{}", STANDARD.encode([1u8; 25]));
        assert!(padded.ends_with('='));
        validate(&padded).unwrap();
        validate(padded.trim_end_matches('=')).unwrap();
    }

    #[test]
    fn bad_secrets_are_refused_without_being_shown() {
        let cases = [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "start with whsec_"),
            ("whsec_not*base64!!", "base64"),
            ("whsec_AAAA", "24 to 64 bytes"),
        ];
        for (s, want) in cases {
            let e = validate(s).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(
                !e.contains(s.trim_start_matches("whsec_")),
                "secret leaked: {e}"
            );
        }
        assert!(validate(&format!("whsec_{}", STANDARD.encode([1u8; 65]))).is_err());
    }
}
