//! A tenant's API keys: list (never the key), create and rotate (the key is
//! in that answer only), revoke. Admin and operator keys, and portal
//! sessions that the operator made with `manage_keys` (then only the keys
//! the session made or its user's: SQL's rule, given the session's id).
//! Operator keys themselves are made in SQL (`postbox.create_api_key(NULL,
//! 'operator', ...)`), never over HTTP.

use crate::auth::Scope;
use crate::body::{ApiJson, ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::idempotency::{Reply, Write};
use crate::routes::endpoints::{page_size, PageQuery};

use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    /// admin or member.
    pub role: String,
    pub label: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    /// Recorded at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The portal session that made it, if one did.
    pub made_by_session: Option<Uuid>,
    /// The product's user that session was for, if the operator named one.
    pub for_user: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKey>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyWithSecret {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The key, shown only here: `Authorization: Bearer <key>`.
    pub key: String,
}

/// Tenant key roles.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// Reads and writes the tenant's endpoints.
    Admin,
    /// Only reads them.
    Member,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub role: KeyRole,
    /// 1 to 200 characters: whose key it is.
    pub label: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The key's id.
    pub id: Uuid,
}

const COLUMNS: &str =
    "id, role, label, key_prefix, created_at, rotated_at, last_used_at, revoked_at, \
     made_by_session, for_user";

async fn read(
    db: &impl deadpool_postgres::GenericClient,
    tenant: &str,
    id: Uuid,
) -> Result<ApiKey, ApiError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM postbox.api_key_list WHERE tenant = $1 AND id = $2"
        ))
        .await?;
    let row = db.query_opt(&st, &[&tenant, &id]).await?.ok_or_else(|| {
        ApiError::rule(
            postbox_rules::Code::ApiKeyNotFound,
            Some("id"),
            format!("postbox: no api key has this id: {id}"),
        )
    })?;
    Ok(key(&row))
}

fn key(row: &tokio_postgres::Row) -> ApiKey {
    ApiKey {
        id: row.get(0),
        role: row.get(1),
        label: row.get(2),
        prefix: row.get(3),
        created_at: row.get(4),
        rotated_at: row.get(5),
        last_used_at: row.get(6),
        revoked_at: row.get(7),
        made_by_session: row.get(8),
        for_user: row.get(9),
    }
}

/// The tenant's keys, oldest first, a page at a time; revoked ones show
/// until the revoked_api_keys retention window ends. A portal session
/// sees only the keys it may manage.
#[utoipa::path(get, path = "/api-keys", tag = "api keys", params(PageQuery),
    responses((status = 200, body = ApiKeyList)))]
pub async fn list(
    scope: Scope,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    scope.require_key_manager()?;
    let limit = page_size(q.limit)?;
    let db = scope.db().await?;
    let st = db
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM postbox.list_api_keys($1, $2, $3, $4::int)"
        ))
        .await?;
    let rows = db
        .query(
            &st,
            &[
                &scope.tenant,
                &scope.session_id(),
                &q.after,
                &(limit as i32 + 1),
            ],
        )
        .await?;
    let mut data: Vec<ApiKey> = rows.iter().map(key).collect();
    let next = (data.len() as i64 > limit).then(|| data[limit as usize - 1].id);
    data.truncate(limit as usize);
    Ok(Json(ApiKeyList { data, next }))
}

/// Creates a key for the tenant; the key is in this answer only.
#[utoipa::path(post, path = "/api-keys", tag = "api keys", request_body = NewApiKey,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    responses((status = 201, body = ApiKeyWithSecret)))]
pub async fn create(
    scope: Scope,
    write: Write,
    body: ApiJson<NewApiKey>,
) -> Result<Response, ApiError> {
    scope.require_key_manager()?;
    let session = scope.session_id();
    let b = &body.value;
    let role = match b.role {
        KeyRole::Admin => "admin",
        KeyRole::Member => "member",
    };
    write
        .run(&scope, &body.raw, async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT id, key FROM postbox.create_api_key($1, $2, $3, $4)")
                .await?;
            let row = tx
                .query_one(&st, &[&tenant, &role, &b.label, &session])
                .await?;
            let api_key = read(tx, tenant, row.get(0)).await?;
            Ok(Reply::new(
                StatusCode::CREATED,
                ApiKeyWithSecret {
                    api_key,
                    key: row.get(1),
                },
            ))
        })
        .await
}

/// Gives a key a new value, in this answer only; the old one stops working at once.
#[utoipa::path(post, path = "/api-keys/{id}/rotate", tag = "api keys", params(KeyPath,
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    responses((status = 200, body = ApiKeyWithSecret)))]
pub async fn rotate(
    scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<KeyPath>,
) -> Result<Response, ApiError> {
    scope.require_key_manager()?;
    let session = scope.session_id();
    write
        .run(&scope, &[], async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT postbox.rotate_api_key($1, $2, $3)")
                .await?;
            let new: String = tx.query_one(&st, &[&tenant, &p.id, &session]).await?.get(0);
            let api_key = read(tx, tenant, p.id).await?;
            Ok(Reply::new(
                StatusCode::OK,
                ApiKeyWithSecret { api_key, key: new },
            ))
        })
        .await
}

/// Revokes a key: it stops working at once.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "api keys", params(KeyPath),
    responses((status = 204, description = "Revoked.")))]
pub async fn revoke(
    scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<KeyPath>,
) -> Result<Response, ApiError> {
    scope.require_key_manager()?;
    let session = scope.session_id();
    write
        .run(&scope, &[], async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT postbox.revoke_api_key($1, $2, $3)")
                .await?;
            tx.execute(&st, &[&tenant, &p.id, &session]).await?;
            Ok(Reply::no_content())
        })
        .await
}
