//! Who is calling, and for which tenant.
//!
//! A key is `Authorization: Bearer pbk_...`. Its form is checked first (a
//! malformed key costs no database work), then its SHA-256 is looked up by
//! `postbox.authenticate_api_key`, which never sees the key itself (nor do
//! the server's statement and parameter logs). The lookup compares hashes,
//! not keys: how long a comparison takes depends on the hash of what the
//! caller sent, which the caller cannot steer byte by byte, so timing tells
//! nothing about any stored key, and the comparison is constant-time in
//! effect. A missing, malformed, unknown or revoked key gets the same 401.
//!
//! The key's rate limit is checked before the lookup when its bucket is
//! known, else right after it (see [`crate::limit`]); then its reach:
//! - tenant keys (admin, member) act on their own tenant under `/v1/...`;
//!   member keys only read;
//! - operator keys act for any tenant under `/v1/tenants/{tenant}/...`.

use crate::error::ApiError;
use crate::App;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{header, Method};
use deadpool_postgres::Object;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
    Operator,
}

/// An authenticated key or portal session.
#[derive(Clone, Debug)]
pub struct Caller {
    /// None for operator keys.
    pub tenant: Option<String>,
    pub role: Role,
}

/// The bearer key of a request, if it has the form of a key.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && postbox_rules::api_key::well_formed(key))
        .then_some(key)
}

/// How a request proves who it is: an API key (`Authorization: Bearer`),
/// or, without one, a portal session's cookie.
enum Credential {
    Key,
    Session(String),
}

/// What a request's credential admits before any database work: its hash,
/// if it has the form of a key (or session cookie) and its bucket (if it
/// has one) has a token; and whether a token was taken (else
/// [`Admission::taken`] takes one once it has authenticated).
pub struct Admission {
    pub hash: [u8; 32],
    taken: bool,
    credential: Credential,
}

impl Admission {
    pub fn of(parts: &Parts, app: &App) -> Result<Admission, ApiError> {
        let (secret, credential) = match parts.headers.get(header::AUTHORIZATION) {
            Some(_) => (
                bearer(parts).ok_or(ApiError::Unauthorized)?.to_string(),
                Credential::Key,
            ),
            None => {
                let cookie =
                    crate::portal::session_cookie(&parts.headers).ok_or(ApiError::Unauthorized)?;
                (cookie.to_string(), Credential::Session(cookie.to_string()))
            }
        };
        let hash = postbox_rules::api_key::hash(&secret);
        let taken = match app.limiter.take_known(hash, Instant::now()) {
            Some(r) => {
                r.map_err(ApiError::RateLimited)?;
                true
            }
            None => false,
        };
        Ok(Admission {
            hash,
            taken,
            credential,
        })
    }

    /// After authentication: the credential's token, if not taken yet.
    pub fn taken(self, app: &App) -> Result<(), ApiError> {
        if self.taken {
            return Ok(());
        }
        app.limiter
            .take(self.hash, Instant::now())
            .map_err(ApiError::RateLimited)
    }
}

pub fn role(name: &str) -> Result<Role, ApiError> {
    match name {
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        "operator" => Ok(Role::Operator),
        other => {
            tracing::error!(role = other, "api key with an unknown role");
            Err(ApiError::Internal)
        }
    }
}

/// Authenticates the request and takes a token from its bucket; returns
/// the caller and the connection it used, for the request's work. A portal
/// session's change must carry its CSRF token (`X-CSRF-Token`).
async fn authenticate(parts: &Parts, app: &App) -> Result<(Caller, Object), ApiError> {
    let admission = Admission::of(parts, app)?;
    let db = app.pool.get().await?;
    let sql = match admission.credential {
        Credential::Key => "SELECT tenant, role FROM postbox.authenticate_api_key($1)",
        Credential::Session(_) => {
            "SELECT tenant, role FROM postbox.authenticate_portal_session($1)"
        }
    };
    let st = db.prepare_cached(sql).await?;
    let row = db
        .query_opt(&st, &[&admission.hash.as_slice()])
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if let Credential::Session(cookie) = &admission.credential {
        if !matches!(parts.method, Method::GET | Method::HEAD)
            && !crate::portal::csrf_ok(&parts.headers, cookie)
        {
            return Err(ApiError::Forbidden(
                "a portal change needs its CSRF token (X-CSRF-Token)",
            ));
        }
    }
    let caller = Caller {
        tenant: row.get(0),
        role: role(row.get(1))?,
    };
    admission.taken(app)?;
    Ok((caller, db))
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(authenticate(parts, app).await?.0)
    }
}

/// An authenticated request's tenant, its caller and a connection: every
/// tenant-scoped handler takes one. The tenant is the key's own, or, for an
/// operator key, the one in the path.
pub struct Scope {
    pub tenant: String,
    pub caller: Caller,
    pub db: Object,
}

impl Scope {
    /// Only admin and operator keys may go on.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.caller.role {
            Role::Member => Err(ApiError::Forbidden(
                "member keys only read endpoints and deliveries",
            )),
            Role::Admin | Role::Operator => Ok(()),
        }
    }

    /// Only operator keys may go on.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self.caller.role {
            Role::Operator => Ok(()),
            _ => Err(ApiError::Forbidden("only operator keys may do this")),
        }
    }
}

impl FromRequestParts<App> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let (caller, db) = authenticate(parts, app).await?;
        let in_path = RawPathParams::from_request_parts(parts, app)
            .await
            .ok()
            .and_then(|p| {
                p.iter()
                    .find(|(k, _)| *k == "tenant")
                    .map(|(_, v)| v.to_string())
            });
        let tenant = match (&caller.tenant, in_path) {
            (Some(own), None) => own.clone(),
            (None, Some(t)) => t,
            (Some(_), Some(_)) => {
                return Err(ApiError::Forbidden(
                    "tenant keys act for their own tenant only: use the path without /v1/tenants/{tenant}",
                ))
            }
            (None, None) => {
                return Err(ApiError::Forbidden(
                    "operator keys act for a tenant: use /v1/tenants/{tenant}/...",
                ))
            }
        };
        let scope = Scope { tenant, caller, db };
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            scope.require_admin()?;
        }
        Ok(scope)
    }
}

impl FromRequestParts<App> for Admission {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Admission::of(parts, app)
    }
}
