//! API keys of the HTTP API (`postbox-api`): `pbk_` and 43 characters of
//! unpadded base64url, from 32 bytes of CSPRNG output. The settings
//! portal's one-time link tokens (`pbp_`) and session cookies (`pbs_`) have
//! the same form and are kept the same way. The extension makes
//! them, the API checks their form before any database work, and both hash
//! them the same way: the database keeps only SHA-256 of the whole key.
//!
//! A fast hash is enough: a key holds 256 random bits, so there is nothing
//! low-entropy for a slow hash to protect, and a stolen hash gives no key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "pbk_";
/// A portal link's one-time token.
pub const PORTAL_PREFIX: &str = "pbp_";
/// A portal session's cookie.
pub const SESSION_PREFIX: &str = "pbs_";
pub const GENERATED_BYTES: usize = 32;
/// `PREFIX` and the base64url of `GENERATED_BYTES` without padding.
pub const LEN: usize = PREFIX.len() + (GENERATED_BYTES * 4).div_ceil(3);
/// How much of a key lists show, to tell keys apart: the prefix and 8
/// characters (48 of the 256 bits).
pub const SHOWN: usize = PREFIX.len() + 8;

/// A new key from `GENERATED_BYTES` bytes of CSPRNG output.
pub fn encode(random: &[u8; GENERATED_BYTES]) -> String {
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(random))
}

/// Whether `key` has the form of a key. Checked before hashing, so that a
/// malformed key costs nothing; the form is public, so answering faster for
/// it tells a caller nothing.
pub fn well_formed(key: &str) -> bool {
    has_form(PREFIX, key)
}

/// Whether `token` is `prefix` and 43 characters of base64url.
pub fn has_form(prefix: &str, token: &str) -> bool {
    token.len() == LEN
        && token.starts_with(prefix)
        && token[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new token with `prefix` (a 4-character one, as `pbp_` and `pbs_`).
pub fn encode_with(prefix: &str, random: &[u8; GENERATED_BYTES]) -> String {
    debug_assert_eq!(prefix.len(), PREFIX.len());
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random))
}

/// How lists show a key: its first [`SHOWN`] characters (the extension's
/// `postbox._api_key_prefix`, which `api_keys.key_prefix` stores).
pub fn shown(key: &str) -> &str {
    key.get(..SHOWN).unwrap_or(key)
}

/// What the database stores and looks a key up by: SHA-256 of its UTF-8
/// bytes (SQL: `sha256(convert_to(key, 'UTF8'))`).
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = encode(&[0u8; 32]);
        let b = encode(&[255u8; 32]);
        assert_eq!(a.len(), LEN);
        assert_eq!(LEN, 47);
        assert_eq!(shown(&a), &a[..12]);
        assert_eq!(shown("pbk_"), "pbk_", "short values are shown whole");
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(&b[..6], "pbk___");
    }

    #[test]
    fn portal_tokens_have_their_own_prefix() {
        let t = encode_with(SESSION_PREFIX, &[3u8; 32]);
        assert!(has_form(SESSION_PREFIX, &t));
        assert!(!well_formed(&t) && !has_form(PORTAL_PREFIX, &t));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = encode(&[7u8; 32]);
        for bad in [
            "",
            "pbk_",
            &good[..LEN - 1],
            &format!("{good}A"),
            &good.replacen("pbk_", "pbx_", 1),
            &format!("{}+", &good[..LEN - 1]),
            &format!("{}=", &good[..LEN - 1]),
            &format!("{}é", &good[..LEN - 2]),
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_is_sha256_of_the_key_text() {
        // As PostgreSQL's sha256(convert_to('pbk_', 'UTF8')) gives it.
        assert_eq!(
            hex::encode(hash("pbk_")),
            "52e5cbef271e7edca6743bf13aa0ce0bab4326254e79f514447cd00762f514e0"
        );
    }
}
