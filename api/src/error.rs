//! Errors as JSON: `{"error": {"code", "message", "field"}}`, with stable
//! codes. postbox's SQL rules (SQLSTATE 22023, 22004) become 422 with the
//! rule's own message, except "no ... has this id", which is 404: another
//! tenant's id gets exactly what a missing one gets. Anything else from the
//! database is logged and answered with a message that shows nothing of it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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
    /// The request field the error is about, where one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
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
    /// One of postbox's rules, in its own words.
    #[error("{0}")]
    Rule(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
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

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { status, .. } => *status,
            ApiError::Rule(_) | ApiError::IdempotencyKeyReused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
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
            ApiError::Rule(_) => "rule_violation",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            ApiError::RateLimited(_) | ApiError::AuthFailures(_) => "rate_limited",
            ApiError::Busy => "busy",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

/// The prefix of postbox's unknown-id errors (sql/api.sql: _no_endpoint,
/// _no_api_key, _no_delivery); each is a 404.
const NOT_FOUND: &[&str] = &[
    "postbox: no endpoint has this id:",
    "postbox: no api key has this id:",
    "postbox: no failed or cancelled delivery has this id:",
];

/// The prefix of api_request_begin's error for a key reused with another request.
const REUSED: &str = "postbox: this Idempotency-Key was used for another request";

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            tracing::warn!(error = %postbox_runtime::error::pg_message(&e), "database connection failed");
            return ApiError::Unavailable;
        };
        let code = db.code();
        if *code == SqlState::INVALID_PARAMETER_VALUE || *code == SqlState::NULL_VALUE_NOT_ALLOWED {
            let message = db.message();
            if NOT_FOUND.iter().any(|p| message.starts_with(p)) {
                return ApiError::NotFound(message.to_string());
            }
            if message.starts_with(REUSED) {
                return ApiError::IdempotencyKeyReused(message.to_string());
            }
            return ApiError::Rule(message.to_string());
        }
        if *code == SqlState::INSUFFICIENT_PRIVILEGE && db.message().starts_with("postbox:") {
            // postbox's own refusal (a portal session without a grant); the
            // API refuses such requests before SQL, which is the backstop.
            return ApiError::Forbidden("this credential may not do this");
        }
        if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *code == SqlState::UNTRANSLATABLE_CHARACTER
        {
            // PostgreSQL's own refusal; its message may quote the value.
            return ApiError::Rule("postbox: text and JSON must not contain the NUL character (\\u0000), which PostgreSQL cannot store".into());
        }
        if code.code().starts_with("22") {
            // Any other data exception is the caller's value too; PostgreSQL's
            // message may quote it, so only the class is told.
            return ApiError::Rule(format!(
                "postbox: PostgreSQL refused a value (SQLSTATE {})",
                code.code()
            ));
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
        let field = match &self {
            ApiError::BadRequest { field, .. } => field.clone(),
            ApiError::IdempotencyKeyReused(_) => Some("Idempotency-Key".into()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field,
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

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        for (wait, want) in [(1, "1"), (1_001, "2"), (0, "1"), (30_000, "30")] {
            let r = ApiError::RateLimited(Duration::from_millis(wait)).into_response();
            assert_eq!(r.status(), 429);
            assert_eq!(r.headers()[header::RETRY_AFTER], want, "{wait} ms");
        }
    }
}
