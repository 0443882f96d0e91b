//! Writes, and `Idempotency-Key` on POST: a repeat within the
//! idempotency_keys window (24 h by default) gets the first response, with
//! `Idempotent-Replayed: true`; the same key with another request gets 422.
//!
//! Each write runs in one transaction with its key: `api_request_begin`
//! claims the key (a concurrent repeat waits for this one to commit, then
//! gets its response), the handler does its work, `api_request_end`
//! stores the response, and all commit together. A request that fails
//! stores nothing and changed nothing, so it may simply be sent again.
//! Stored responses may hold secrets; the table is granted to no one, and
//! an answer is stored under the credential that sent the request as well
//! as its tenant, so no other key or session of the tenant can fetch it.

use crate::auth::Scope;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Transaction;
use sha2::{Digest, Sha256};

/// What a write handler answers: a status and a JSON body (None: no body).
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<serde_json::Value>,
}

impl Reply {
    pub fn new(status: StatusCode, body: impl serde::Serialize) -> Reply {
        Reply {
            status,
            body: Some(serde_json::to_value(body).expect("response bodies serialize")),
        }
    }

    pub fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: None,
        }
    }
}

/// A write request's identity: its Idempotency-Key (POST only) and what
/// its hash covers besides the body. The path is taken without the
/// `/v1/tenants/{tenant}` prefix, so an operator's request and a tenant
/// key's request for the same thing are the same request.
pub struct Write {
    key: Option<String>,
    what: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Write {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let key = match parts.method {
            Method::POST => key(&parts.headers)?.map(str::to_string),
            _ => None,
        };
        let path = parts.uri.path();
        let scoped = match path.strip_prefix("/v1/tenants/") {
            Some(rest) => format!("/v1{}", &rest[rest.find('/').unwrap_or(rest.len())..]),
            None => path.to_string(),
        };
        Ok(Write {
            key,
            what: format!(
                "{} {} {}",
                parts.method,
                scoped,
                parts.uri.query().unwrap_or("")
            ),
        })
    }
}

/// A request's Idempotency-Key header, if it has one (its rules are SQL's:
/// `api_request_begin`, and `emit` for events).
pub fn key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_request",
                    "Idempotency-Key must be visible ASCII",
                    Some("Idempotency-Key".into()),
                )
            })
        })
        .transpose()
}

impl Write {
    fn hash(&self, body: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.what.as_bytes());
        h.update([0]);
        h.update(body);
        h.finalize().into()
    }

    /// Runs `work` in a transaction on a connection of the tenant's share,
    /// under the Idempotency-Key if there is one: a stored answer goes back
    /// only to the credential (key or portal session) that sent the first
    /// request.
    pub async fn run<F>(self, scope: &Scope, body: &[u8], work: F) -> Result<Response, ApiError>
    where
        F: AsyncFnOnce(&Transaction<'_>, &str) -> Result<Reply, ApiError>,
    {
        let mut db = scope.db().await?;
        let tx = db.transaction().await?;
        let credential = scope.caller.credential;
        if let Some(key) = &self.key {
            let st = tx
                .prepare_cached(
                    "SELECT status, body FROM postbox.api_request_begin($1, $2, $3, $4)",
                )
                .await?;
            if let Some(row) = tx
                .query_opt(
                    &st,
                    &[&scope.tenant, &credential, key, &self.hash(body).as_slice()],
                )
                .await?
            {
                tx.commit().await?;
                let status = StatusCode::from_u16(row.get::<_, i16>(0) as u16)
                    .map_err(|_| ApiError::Internal)?;
                let mut resp = respond(status, row.get(1));
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(resp);
            }
        }
        let reply = work(&tx, &scope.tenant).await?;
        let text = match &reply.body {
            Some(v) => v.to_string(),
            None => String::new(),
        };
        if let Some(key) = &self.key {
            let st = tx
                .prepare_cached("SELECT postbox.api_request_end($1, $2, $3, $4, $5)")
                .await?;
            tx.execute(
                &st,
                &[
                    &scope.tenant,
                    &credential,
                    key,
                    &i32::from(reply.status.as_u16()),
                    &text,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(respond(reply.status, text))
    }
}

fn respond(status: StatusCode, body: String) -> Response {
    if body.is_empty() {
        return status.into_response();
    }
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
