//! Clients' `X-Request-Id`: kept when it is a plain token, replaced by a
//! fresh one otherwise, so what a client sends cannot forge or flood the
//! request log (which also quotes it). Runs before tower-http's
//! `SetRequestIdLayer`, which makes the replacement.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// The longest client request id kept: a UUID is 36, a trace id 32 to 55.
pub const MAX_LEN: usize = 128;

/// Whether a client's request id is kept: 1 to [`MAX_LEN`] visible ASCII
/// characters (no spaces, quotes are fine: the log quotes the value).
pub fn fits(value: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&value.len()) && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Drops an unfit `X-Request-Id`, so that a fresh one is made.
pub async fn fit(mut req: Request, next: Next) -> Response {
    let headers = req.headers_mut();
    let all: Vec<_> = headers.get_all("x-request-id").iter().collect();
    if all.len() > 1 || all.first().is_some_and(|v| !fits(v.as_bytes())) {
        headers.remove("x-request-id");
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_ascii_ids_are_kept() {
        assert!(fits(b"5f0c6d1e-6a7b-4c8d-9e0f-a1b2c3d4e5f6"));
        assert!(fits(&[b'a'; MAX_LEN]));
        assert!(!fits(&[b'a'; MAX_LEN + 1]));
        assert!(!fits(b""));
        assert!(!fits(b"id status=500 forged=1"));
        assert!(!fits(b"a\nb"));
        assert!(!fits("é".as_bytes()));
    }
}
