//! Errors as JSON: `{"error": {"code", "message", "field", "item", "rule"}}`,
//! with stable codes. postbox's errors carry their rule's code in DETAIL
//! (`postbox_rules::codes`), and the answer is decided on that code, never
//! on the message: the unknown-id codes are 404 (another tenant's id gets
//! exactly what a missing one gets), an Idempotency-Key reused is 422
//! idempotency_key_reused, every other rule 422 rule_violation, each with
//! the rule's own message, its code as `rule`, and the request field (and
//! item) it is about. Anything else from the database is logged and
//! answered with a message that shows nothing of it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use postbox_rules::codes::{Code, Detail};
use serde::Serialize;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;

/// The error body of every non-2xx answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: unauthorized, forbidden, not_found, method_not_allowed,
    /// invalid_json, unknown_field, invalid_request, unsupported_media_type,
    /// payload_too_large, request_timeout, rule_violation,
    /// idempotency_key_reused, rate_limited, busy, unavailable, internal.
    pub code: &'static str,
    pub message: String,
    /// The request field the error is about, where one is: a body field
    /// (`url`, `headers`, `event_types`, `signature_header`, ...), a query
    /// or path parameter, or the `Idempotency-Key` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a rule about one element of `field`: that element, such as the
    /// header's name or the event type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The code of the postbox rule the request broke (the list is in
    /// docs/errors.md), on answers that come from one: rule_violation,
    /// idempotency_key_reused, and not_found for an unknown id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
}

/// A broken postbox rule: its code, its message, and what it is about.
#[derive(Debug)]
pub struct Broken {
    pub rule: Code,
    pub message: String,
    pub field: Option<String>,
    pub item: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, unknown and revoked keys alike.
    #[error("a valid API key is required (Authorization: Bearer pbk_...)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        status: StatusCode,
        message: String,
        field: Option<String>,
    },
    /// One of postbox's rules, in its own words, with its code.
    #[error("{}", .0.message)]
    Rule(Broken),
    #[error("too many requests for this key: retry after {0:?}")]
    RateLimited(Duration),
    /// Before the database: too many unknown keys from this address lately.
    #[error("too many failed authentications from this address: retry after {0:?}")]
    AuthFailures(Duration),
    /// The tenant already uses its share of the API's database connections.
    #[error("this tenant has too many requests in progress: retry shortly")]
    Busy,
    #[error("the database is unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_request(
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        ApiError::BadRequest {
            code,
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field,
        }
    }

    /// A broken rule, about `field` (as the request names it).
    pub fn rule(rule: Code, field: Option<&str>, message: impl Into<String>) -> Self {
        ApiError::Rule(Broken {
            rule,
            message: message.into(),
            field: field.map(String::from),
            item: None,
        })
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { status, .. } => *status,
            ApiError::Rule(b) if not_found(b.rule) => StatusCode::NOT_FOUND,
            // The tenant's plan has no webhooks: its keys, and what it asks, are refused.
            ApiError::Rule(b) if b.rule == Code::TenantSuspended => StatusCode::FORBIDDEN,
            ApiError::Rule(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited(_) | ApiError::AuthFailures(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest { code, .. } => code,
            ApiError::Rule(b) if not_found(b.rule) => "not_found",
            ApiError::Rule(b) if b.rule == Code::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::Rule(_) => "rule_violation",
            ApiError::RateLimited(_) | ApiError::AuthFailures(_) => "rate_limited",
            ApiError::Busy => "busy",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

/// The codes of unknown ids; each is a 404.
fn not_found(rule: Code) -> bool {
    matches!(
        rule,
        Code::EndpointNotFound | Code::DeliveryNotFound | Code::ApiKeyNotFound
    )
}

/// Where the request names an argument of postbox's SQL functions
/// differently: (the SQL argument, the request's field).
const REQUEST_NAMES: &[(&str, &str)] = &[
    ("own_secret", "secret"),
    ("grace", "grace_seconds"),
    ("max_rows", "limit"),
    ("valid_for", "valid_for_seconds"),
    ("idempotency_key", "Idempotency-Key"),
];

/// The request's name for the SQL argument `field`.
fn request_field(field: String) -> String {
    match REQUEST_NAMES.iter().find(|(sql, _)| *sql == field) {
        Some((_, name)) => name.to_string(),
        None => field,
    }
}

impl ApiError {
    /// The answer to a postbox error with this DETAIL, by its code; `None`
    /// for codes that are not the caller's doing (a worker's, internal).
    fn from_detail(d: Detail, message: &str) -> Option<ApiError> {
        if d.code == Code::SessionMayNotManageKeys {
            // The API refuses such requests before SQL, which is the backstop.
            return Some(ApiError::Forbidden("this credential may not do this"));
        }
        if !d.code.sqlstate().starts_with("22") {
            return None;
        }
        Some(ApiError::Rule(Broken {
            rule: d.code,
            message: message.to_string(),
            field: d.field.map(request_field),
            item: d.item,
        }))
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            tracing::warn!(error = %postbox_runtime::error::pg_message(&e), "database connection failed");
            return ApiError::Unavailable;
        };
        if let Some(e) = db
            .detail()
            .and_then(Detail::parse)
            .and_then(|d| ApiError::from_detail(d, db.message()))
        {
            return e;
        }
        let code = db.code();
        if *code == SqlState::INVALID_PARAMETER_VALUE || *code == SqlState::NULL_VALUE_NOT_ALLOWED {
            // Not postbox's (each of postbox's carries its code): PostgreSQL's
            // own refusal of an argument, in its words, as before codes.
            tracing::warn!(sqlstate = code.code(), error = %db.message(), "an invalid value without a postbox code");
            return ApiError::rule(Code::ValueRefused, None, db.message());
        }
        if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *code == SqlState::UNTRANSLATABLE_CHARACTER
        {
            // PostgreSQL's own refusal; its message may quote the value.
            return ApiError::rule(Code::TextHasNul, None, "postbox: text and JSON must not contain the NUL character (\\u0000), which PostgreSQL cannot store");
        }
        if code.code().starts_with("22") {
            // Any other data exception is the caller's value too; PostgreSQL's
            // message may quote it, so only the class is told.
            return ApiError::rule(
                Code::ValueRefused,
                None,
                format!(
                    "postbox: PostgreSQL refused a value (SQLSTATE {})",
                    code.code()
                ),
            );
        }
        // The statement failed for a reason that is not the caller's: say
        // so in the log (postbox's messages show no secret), not to the caller.
        tracing::error!(sqlstate = code.code(), error = %db.message(), "statement failed");
        if code.code().starts_with("08") || code.code().starts_with("57") {
            ApiError::Unavailable
        } else {
            ApiError::Internal
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %postbox_runtime::error::pool_message(&e), "no database connection");
        ApiError::Unavailable
    }
}

impl From<crate::limit::Refused> for ApiError {
    fn from(r: crate::limit::Refused) -> Self {
        match r {
            crate::limit::Refused::Rate(d) => ApiError::RateLimited(d),
            crate::limit::Refused::Failures(d) => ApiError::AuthFailures(d),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (field, item, rule) = match &self {
            ApiError::BadRequest { field, .. } => (field.clone(), None, None),
            ApiError::Rule(b) => (b.field.clone(), b.item.clone(), Some(b.rule.as_str())),
            _ => (None, None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field,
                item,
                rule,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            ApiError::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Busy => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            ApiError::RateLimited(wait) | ApiError::AuthFailures(wait) => {
                // Whole seconds, rounded up: a client that waits this long gets in.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer is decided by the code in DETAIL: a message that reads
    /// like another rule's changes nothing.
    #[test]
    fn postbox_errors_are_answered_by_their_code() {
        let answer = |code: Code, field: Option<&str>, item: Option<&str>| {
            let detail = postbox_rules::codes::detail(code, field, item);
            let d = Detail::parse(&detail).unwrap();
            let e = ApiError::from_detail(d, "postbox: no endpoint has this id: x").unwrap();
            let (rule, field, item) = match &e {
                ApiError::Rule(b) => (Some(b.rule), b.field.clone(), b.item.clone()),
                _ => (None, None, None),
            };
            (e.status().as_u16(), e.code(), rule, field, item)
        };
        assert_eq!(
            answer(Code::EndpointNotFound, Some("id"), None),
            (
                404,
                "not_found",
                Some(Code::EndpointNotFound),
                Some("id".into()),
                None
            )
        );
        assert_eq!(answer(Code::DeliveryNotFound, None, None).1, "not_found");
        assert_eq!(answer(Code::ApiKeyNotFound, None, None).1, "not_found");
        assert_eq!(
            answer(Code::IdempotencyKeyReused, Some("idempotency_key"), None),
            (
                422,
                "idempotency_key_reused",
                Some(Code::IdempotencyKeyReused),
                Some("Idempotency-Key".into()),
                None
            )
        );
        assert_eq!(
            answer(Code::HeaderNameReserved, Some("headers"), Some("Host")),
            (
                422,
                "rule_violation",
                Some(Code::HeaderNameReserved),
                Some("headers".into()),
                Some("Host".into())
            )
        );
        // SQL's names become the request's.
        assert_eq!(
            answer(Code::SecretInvalid, Some("own_secret"), None)
                .3
                .as_deref(),
            Some("secret")
        );
        assert_eq!(
            answer(Code::OutOfRange, Some("grace"), None).3.as_deref(),
            Some("grace_seconds")
        );
        assert_eq!(
            answer(Code::OutOfRange, Some("max_rows"), None)
                .3
                .as_deref(),
            Some("limit")
        );
        assert_eq!(answer(Code::SessionMayNotManageKeys, None, None).0, 403);
        // Not the caller's doing: left to the SQLSTATE (logged, 500).
        for code in [Code::WorkerIdInUse, Code::Internal] {
            let d = Detail::parse(&postbox_rules::codes::detail(code, None, None)).unwrap();
            assert!(ApiError::from_detail(d, "m").is_none(), "{code}");
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        for (wait, want) in [(1, "1"), (1_001, "2"), (0, "1"), (30_000, "30")] {
            let r = ApiError::RateLimited(Duration::from_millis(wait)).into_response();
            assert_eq!(r.status(), 429);
            assert_eq!(r.headers()[header::RETRY_AFTER], want, "{wait} ms");
        }
    }
}
