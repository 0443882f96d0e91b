//! What a request carries, decoded, with JSON errors (axum's own rejections
//! are plain text): bodies are JSON only (no body reads as `{}`), bounded
//! in size (the router's body limit), unknown fields refused (each body
//! type denies them), and errors name the field where there is one; the raw
//! bytes are kept, for the Idempotency-Key's request hash. A body must
//! arrive within `body_timeout` (408). Query strings
//! and path parameters likewise ([`ApiQuery`], [`ApiPath`]).

use crate::error::ApiError;
use crate::App;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned> FromRequest<App> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        // The whole body within the deadline: a client that sends it slowly
        // holds its socket until then, and no database connection ever
        // (handlers take one after this).
        let read = tokio::time::timeout(app.body_timeout, Bytes::from_request(req, app))
            .await
            .map_err(|_| ApiError::BadRequest {
                code: "request_timeout",
                status: StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(app.body_timeout)
                ),
                field: None,
            })?;
        let raw = read.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BadRequest {
                    code: "payload_too_large",
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: "the body is larger than this API accepts".into(),
                    field: None,
                }
            } else {
                ApiError::bad_request("invalid_request", e.body_text(), None)
            }
        })?;
        // No body is an empty object: optional bodies need nothing, and a
        // required field is named as missing.
        if raw.is_empty() {
            return Ok(ApiJson {
                value: parse(b"{}")?,
                raw,
            });
        }
        if !json {
            return Err(ApiError::BadRequest {
                code: "unsupported_media_type",
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "the body must be JSON (Content-Type: application/json)".into(),
                field: None,
            });
        }
        let value = parse(&raw)?;
        Ok(ApiJson { value, raw })
    }
}

/// A query string, decoded; a bad one is a JSON 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_request", e.body_text(), None))
    }
}

/// Path parameters, decoded; a bad one (an id that is not one) is a JSON 400.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request("invalid_request", e.body_text(), None))
    }
}

/// Decodes a body; the error names the field and never shows a value.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let field = (path != ".").then_some(path);
        // serde_json names the unknown field in its message.
        if message.starts_with("unknown field") {
            let name = message.split('`').nth(1).unwrap_or_default().to_string();
            let field = Some(match field {
                Some(p) if p.ends_with(&name) => p,
                Some(p) => format!("{p}.{name}"),
                None => name,
            });
            return ApiError::bad_request("unknown_field", message, field);
        }
        let message = match inner.classify() {
            serde_json::error::Category::Data => message,
            _ => format!("the body is not valid JSON: {message}"),
        };
        ApiError::bad_request("invalid_json", message, field)
    })?;
    // One JSON value per body: a proxy and this API must never read two
    // different objects from the same bytes.
    de.end().map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the body is not valid JSON: one value only, then nothing but white space ({e})"
            ),
            None,
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        url: String,
        inner: Option<Inner>,
    }
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn err(raw: &str) -> (String, String, Option<String>) {
        match parse::<Body>(raw.as_bytes()).unwrap_err() {
            ApiError::BadRequest {
                code,
                message,
                field,
                ..
            } => (code.into(), message, field),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let (code, msg, field) = err(r#"{"url": "x", "nope": 1}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("unknown_field", Some("nope"))
        );
        assert!(msg.starts_with("unknown field `nope`"), "{msg}");
        let (code, _, field) = err(r#"{"url": "x", "inner": {"n": 1, "m": 2}}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("unknown_field", Some("inner.m"))
        );
        let (code, _, field) = err(r#"{"url": 5}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("invalid_json", Some("url"))
        );
        let (code, msg, _) = err(r#"{"url": "#);
        assert_eq!(code, "invalid_json");
        assert!(msg.starts_with("the body is not valid JSON"), "{msg}");
        for trailing in [
            r#"{"url": "x"}}"#,
            r#"{"url": "x"} and more"#,
            r#"{"url": "x"}{"url": "y"}"#,
            r#"{"url": "x"} 1"#,
        ] {
            let (code, msg, _) = err(trailing);
            assert_eq!(code, "invalid_json", "{trailing}");
            assert!(msg.contains("one value only"), "{trailing}: {msg}");
        }
        parse::<Body>(b"{\"url\": \"x\"} \n\t ").expect("white space after the value is fine");
        let (code, _, field) = err(r#"{"inner": {"n": -1}}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("invalid_json", Some("inner.n"))
        );
    }
}
