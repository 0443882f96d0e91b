//! Signature formats. Pure functions: the worker calls them per attempt.
//!
//! - `standard` ([Standard Webhooks](https://www.standardwebhooks.com/)):
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, the
//!   key being the bytes behind `whsec_`; one `v1,` entry per valid secret,
//!   space-separated, during a rotation.
//! - `sha256-hex`: `sha256=<hex HMAC-SHA256 of the body>`, keyed with the
//!   secret string exactly as shown (`whsec_` included), as GitHub-style
//!   receivers expect.
//! - `hex`: the bare lowercase hex HMAC-SHA256 of the body, keyed the same
//!   way, as receivers that compare `hmac(secret, body).hexdigest()` expect.

use crate::error::RuleError;
use crate::secret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC takes any key length")
}

/// The `webhook-signature` value for `secrets` (newest first).
pub fn standard(
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    secrets: &[&str],
) -> Result<String, RuleError> {
    let ts = timestamp.to_string();
    let mut out = String::with_capacity(secrets.len() * 48);
    for s in secrets {
        let mut m = mac(&secret::key(s)?);
        m.update(msg_id.as_bytes());
        m.update(b".");
        m.update(ts.as_bytes());
        m.update(b".");
        m.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        STANDARD.encode_string(m.finalize().into_bytes(), &mut out);
    }
    Ok(out)
}

/// The bare lowercase hex HMAC-SHA256 of `body`, keyed with `secret`'s bytes.
pub fn hex(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret.as_bytes());
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// The `sha256=<hex>` value for one secret: `sha256=` and [`hex`].
pub fn sha256_hex(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(secret, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn standard_matches_the_reference_vector() {
        assert_eq!(
            standard(ID, TS, BODY, &[SECRET]).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn standard_signs_once_per_secret() {
        let other = secret::encode(&[9u8; 32]);
        let both = standard(ID, TS, BODY, &[&other, SECRET]).unwrap();
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_ne!(parts[0], parts[1]);
        assert!(standard(ID, TS, BODY, &["not-a-secret"]).is_err());
    }

    #[test]
    fn sha256_hex_keys_with_the_whole_secret_string() {
        // Computed independently: printf '%s' '{"test": 2432232314}' | openssl dgst -sha256 -hmac "$SECRET"
        assert_eq!(
            sha256_hex(SECRET, BODY),
            "sha256=80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c"
        );
    }

    #[test]
    fn hex_is_the_bare_digest_of_an_own_secret() {
        // Computed independently: printf '%s' '{"test": 2432232314}' | openssl dgst -sha256 -hmac 'my own secret 16'
        assert_eq!(
            hex("my own secret 16", BODY),
            "5251f50488cfb7f86f1f89a7407871416a843fc416c5e2331a1e8e8b3690a630"
        );
    }
}
