//! A tenant's API keys: list (never the key), create and rotate (the key is
//! in that answer only), revoke. Admin and operator keys only. Operator
//! keys themselves are made in SQL (`postbox.create_api_key(NULL,
//! 'operator', ...)`), never over HTTP.

use crate::auth::Scope;
use crate::body::{ApiJson, ApiPath};
use crate::error::ApiError;
use crate::idempotency::{Reply, Write};

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
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKey>,
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
    "id, role, label, key_prefix, created_at, rotated_at, last_used_at, revoked_at";

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
    let row = db
        .query_opt(&st, &[&tenant, &id])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("postbox: no api key has this id: {id}")))?;
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
    }
}

/// The tenant's keys, revoked ones too, oldest first.
#[utoipa::path(get, path = "/api-keys", tag = "api keys", responses((status = 200, body = ApiKeyList)))]
pub async fn list(scope: Scope) -> Result<Json<ApiKeyList>, ApiError> {
    scope.require_admin()?;
    let st = scope
        .db
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM postbox.api_key_list WHERE tenant = $1 ORDER BY id"
        ))
        .await?;
    let data = scope
        .db
        .query(&st, &[&scope.tenant])
        .await?
        .iter()
        .map(key)
        .collect();
    Ok(Json(ApiKeyList { data }))
}

/// Creates a key for the tenant; the key is in this answer only.
#[utoipa::path(post, path = "/api-keys", tag = "api keys", request_body = NewApiKey,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    responses((status = 201, body = ApiKeyWithSecret)))]
pub async fn create(
    mut scope: Scope,
    write: Write,
    body: ApiJson<NewApiKey>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    let role = match b.role {
        KeyRole::Admin => "admin",
        KeyRole::Member => "member",
    };
    write
        .run(&mut scope, &body.raw, async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT id, key FROM postbox.create_api_key($1, $2, $3)")
                .await?;
            let row = tx.query_one(&st, &[&tenant, &role, &b.label]).await?;
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
    mut scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<KeyPath>,
) -> Result<Response, ApiError> {
    write
        .run(&mut scope, &[], async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT postbox.rotate_api_key($1, $2)")
                .await?;
            let new: String = tx.query_one(&st, &[&tenant, &p.id]).await?.get(0);
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
    mut scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<KeyPath>,
) -> Result<Response, ApiError> {
    write
        .run(&mut scope, &[], async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT postbox.revoke_api_key($1, $2)")
                .await?;
            tx.execute(&st, &[&tenant, &p.id]).await?;
            Ok(Reply::no_content())
        })
        .await
}
