//! Signing secrets. Generated ones are `whsec_` and base64 of random bytes,
//! as Svix and Standard Webhooks use them. For the hex styles a customer may
//! bring any printable ASCII string of 16–256 characters, used as the key
//! bytes as they are (other products let their customers choose such
//! secrets). Error messages never show a secret.

use crate::codes::Code;
use crate::error::RuleError;
use crate::headers::SignatureStyle;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

pub const PREFIX: &str = "whsec_";
pub const GENERATED_BYTES: usize = 32;
pub const MIN_BYTES: usize = 24;
pub const MAX_BYTES: usize = 64;
/// Bounds of a customer's own secret for the hex styles, in characters.
pub const OWN_MIN_CHARS: usize = 16;
pub const OWN_MAX_CHARS: usize = 256;

// Secrets from other providers come with and without base64 padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A new secret from `GENERATED_BYTES` bytes of CSPRNG output.
pub fn encode(random: &[u8; GENERATED_BYTES]) -> String {
    format!("{PREFIX}{}", STANDARD.encode(random))
}

/// A secret that breaks a rule: about the field `secret`; `shown` never
/// holds the secret.
fn invalid(rule: impl Into<String>, shown: String) -> RuleError {
    RuleError::new(Code::SecretInvalid, rule, shown).in_field("secret")
}

/// The HMAC key of a secret: the bytes behind `whsec_`.
pub fn key(secret: &str) -> Result<Vec<u8>, RuleError> {
    let hidden = || format!("(secret hidden, {} characters)", secret.len());
    let Some(b64) = secret.strip_prefix(PREFIX) else {
        return Err(invalid("secret must start with whsec_", hidden()));
    };
    let bytes = LENIENT
        .decode(b64)
        .map_err(|_| invalid("secret must be whsec_ followed by base64", hidden()))?;
    if !(MIN_BYTES..=MAX_BYTES).contains(&bytes.len()) {
        return Err(invalid(
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

/// Checks a caller-supplied secret for an endpoint signing in `style`:
/// `standard` needs the `whsec_` form ([`validate`]); the hex styles key
/// with the string's bytes, any printable ASCII of 16–256 characters.
pub fn validate_for(style: SignatureStyle, secret: &str) -> Result<(), RuleError> {
    if style == SignatureStyle::Standard {
        return validate(secret);
    }
    let hidden = || format!("(secret hidden, {} characters)", secret.chars().count());
    if !secret.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(invalid("secret must be printable ASCII", hidden()));
    }
    if !(OWN_MIN_CHARS..=OWN_MAX_CHARS).contains(&secret.len()) {
        return Err(invalid(
            format!("secret must be {OWN_MIN_CHARS} to {OWN_MAX_CHARS} characters"),
            hidden(),
        ));
    }
    Ok(())
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

    #[test]
    fn hex_styles_take_any_printable_ascii_of_16_to_256_characters() {
        for style in [SignatureStyle::Sha256Hex, SignatureStyle::Hex] {
            validate_for(style, "my own secret 16").unwrap();
            validate_for(style, &"~".repeat(256)).unwrap();
            validate_for(style, &encode(&[7u8; 32])).unwrap();
            let long = "a".repeat(257);
            for (s, want) in [
                ("fifteen chars!!", "16 to 256"),
                (long.as_str(), "16 to 256"),
                ("tab\there is not ok", "printable"),
                ("caf\u{e9} is not ascii!!", "printable"),
            ] {
                let e = validate_for(style, s).unwrap_err().to_string();
                assert!(e.contains(want), "{e}");
                assert!(!e.contains(s), "secret leaked: {e}");
            }
        }
        // standard keeps its whsec_ form.
        assert!(validate_for(SignatureStyle::Standard, "my own secret 16").is_err());
        validate_for(
            SignatureStyle::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap();
    }
}
