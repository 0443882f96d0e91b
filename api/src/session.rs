//! A portal session's primitives: its cookie, and the CSRF token derived
//! from it. [`crate::auth`] reads them to authenticate a session's
//! requests; [`crate::portal`] sets the cookie and hands the page its token.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "postbox_session";

/// The session cookie's value, if the request has one of the right form.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find(|v| postbox_rules::api_key::has_form(postbox_rules::api_key::SESSION_PREFIX, v))
}

/// The session's CSRF token: derived from its cookie, which only this
/// origin's responses and the browser (HttpOnly) know.
pub fn csrf_token(cookie: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"postbox portal csrf\0");
    h.update(cookie.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Whether the request carries the session's CSRF token (constant time).
pub fn csrf_ok(headers: &HeaderMap, cookie: &str) -> bool {
    let want = csrf_token(cookie);
    headers
        .get("x-csrf-token")
        .is_some_and(|got| got.as_bytes().ct_eq(want.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let a = csrf_token("pbs_a");
        let mut h = HeaderMap::new();
        h.insert("x-csrf-token", HeaderValue::from_str(&a).unwrap());
        assert!(csrf_ok(&h, "pbs_a"));
        assert!(!csrf_ok(&h, "pbs_b"));
        assert!(!csrf_ok(&HeaderMap::new(), "pbs_a"));
    }

    #[test]
    fn the_cookie_is_read_only_in_its_form() {
        let token = postbox_rules::api_key::encode_with(
            postbox_rules::api_key::SESSION_PREFIX,
            &[7u8; postbox_rules::api_key::GENERATED_BYTES],
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE}={token}")).unwrap(),
        );
        assert_eq!(session_cookie(&h), Some(token.as_str()));
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}=pbs_short")).unwrap(),
        );
        assert_eq!(session_cookie(&h), None);
    }
}
