//! Portal links, for the product's backend (operator keys): see
//! [`crate::portal`] for what the link opens.

use crate::auth::Scope;
use crate::body::{ApiJson, ApiQuery};
use crate::error::ApiError;
use crate::idempotency::{Reply, Write};
use crate::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Tenant roles in the portal.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum PortalRole {
    /// Sees and changes the tenant's endpoints.
    Admin,
    /// Sees everything, changes nothing.
    Member,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPortalSession {
    pub role: PortalRole,
    /// How long the link works, 60 to 86400 seconds (default 900); it works once.
    pub valid_for_seconds: Option<i32>,
    /// Whether the session may make and manage API keys (admin only;
    /// default false). It manages only the keys it made, or `user_id`'s.
    pub manage_keys: Option<bool>,
    /// The product's user the session is for (1 to 200 characters): keys
    /// it makes record it, and its sessions can be revoked by it.
    pub user_id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// Only this user's sessions (default: every session of the tenant).
    pub user_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    /// Sessions and unused links ended.
    pub revoked: i32,
}

#[derive(Serialize, ToSchema)]
pub struct PortalLink {
    /// Open it (or put it in an iframe) once, before `expires_at`.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// A one-time link to the tenant's settings portal.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/portal-sessions", tag = "portal", request_body = NewPortalSession,
    params(("tenant" = String, Path, description = "The tenant."),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    responses((status = 201, body = PortalLink)))]
pub async fn create(
    State(app): State<App>,
    scope: Scope,
    write: Write,
    body: ApiJson<NewPortalSession>,
) -> Result<Response, ApiError> {
    scope.require_operator()?;
    let role = match body.value.role {
        PortalRole::Admin => "admin",
        PortalRole::Member => "member",
    };
    let secs = body.value.valid_for_seconds;
    let manage_keys = body.value.manage_keys.unwrap_or(false);
    let user_id = &body.value.user_id;
    let base = app.portal.public_url.clone();
    write
        .run(&scope, &body.raw, async |tx, tenant| {
            let st = tx
                .prepare_cached(
                    "SELECT token, expires_at FROM postbox.create_portal_session($1, $2,
                        $3::int * interval '1 second', $4, $5)",
                )
                .await?;
            let row = tx
                .query_one(&st, &[&tenant, &role, &secs, &manage_keys, user_id])
                .await?;
            let token: String = row.get(0);
            Ok(Reply::new(
                StatusCode::CREATED,
                PortalLink {
                    url: format!("{base}/portal/enter?token={token}"),
                    expires_at: row.get(1),
                },
            ))
        })
        .await
}

/// Ends the tenant's portal sessions and unused links at once (only one
/// user's, with `user_id`): for a user who left the team or lost a device.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/portal-sessions", tag = "portal",
    params(("tenant" = String, Path, description = "The tenant."), RevokeQuery),
    responses((status = 200, body = Revoked)))]
pub async fn revoke(
    scope: Scope,
    write: Write,
    ApiQuery(q): ApiQuery<RevokeQuery>,
) -> Result<Response, ApiError> {
    scope.require_operator()?;
    write
        .run(&scope, &[], async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT postbox.revoke_portal_sessions($1, $2)")
                .await?;
            let n: i32 = tx.query_one(&st, &[&tenant, &q.user_id]).await?.get(0);
            Ok(Reply::new(StatusCode::OK, Revoked { revoked: n }))
        })
        .await
}
