//! Who is calling, and for which tenant.
//!
//! A key is `Authorization: Bearer pbk_...`. Its form is checked first (a
//! malformed key costs no database work), then its rate limit (see
//! [`crate::limit`]: before the database, so a refused request did
//! nothing), then its SHA-256 is looked up by `postbox.authenticate_api_key`,
//! which never sees the key itself (nor do the server's statement and
//! parameter logs). The lookup compares hashes, not keys: how long a
//! comparison takes depends on the hash of what the caller sent, which the
//! caller cannot steer byte by byte, so timing tells nothing about any
//! stored key, and the comparison is constant-time in effect. A missing,
//! malformed, unknown or revoked key gets the same 401.
//!
//! Authentication holds a database connection for its one statement only:
//! a request's own work takes one later, after its body is read
//! ([`Scope::db`], [`crate::connections`]).
//!
//! Then the key's reach:
//! - tenant keys (admin, member) act on their own tenant under `/v1/...`;
//!   member keys only read;
//! - operator keys act for any tenant under `/v1/tenants/{tenant}/...`;
//! - portal sessions act as their tenant's admin or member, and reach API
//!   keys only when the operator allowed it ([`Scope::require_key_manager`]).

use crate::connections::Conn;
use crate::error::ApiError;
use crate::App;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
    Operator,
}

/// A portal session's own grants.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: Uuid,
    /// Whether the operator let it make and manage API keys.
    pub manage_keys: bool,
    /// The product's user it is for, if the operator named one.
    pub user_id: Option<String>,
}

/// An authenticated key or portal session.
#[derive(Clone, Debug)]
pub struct Caller {
    /// None for operator keys.
    pub tenant: Option<String>,
    pub role: Role,
    /// The key's or session's id: stored Idempotency-Key answers are its own.
    pub credential: Uuid,
    /// Set for a portal session.
    pub session: Option<Session>,
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

/// A request's credential, admitted by the rate limits before any
/// database work: its hash, and the client's address (whose failed
/// authentications are limited).
pub struct Admission {
    pub hash: [u8; 32],
    from: IpAddr,
    credential: Credential,
}

/// The client's address, as the server loop records it on each request
/// (none in tests that call the router directly).
pub fn client(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
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
                    crate::session::session_cookie(&parts.headers).ok_or(ApiError::Unauthorized)?;
                (cookie.to_string(), Credential::Session(cookie.to_string()))
            }
        };
        let hash = postbox_rules::api_key::hash(&secret);
        let from = client(&parts.extensions);
        app.limiter
            .admit(hash, from, Instant::now())
            .map_err(ApiError::from)?;
        Ok(Admission {
            hash,
            from,
            credential,
        })
    }

    /// The database knew the credential.
    pub fn known(&self, app: &App) {
        app.limiter.known(self.hash);
    }

    /// The database did not know it: a 401, counted against the address.
    pub fn failed(&self, app: &App) -> ApiError {
        app.limiter.failed(self.hash, self.from, Instant::now());
        ApiError::Unauthorized
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

/// Authenticates the request (its rate limit first). A portal session's
/// change must carry its CSRF token (`X-CSRF-Token`). The connection it
/// uses goes back to the pool before this returns.
async fn authenticate(parts: &Parts, app: &App) -> Result<Caller, ApiError> {
    let admission = Admission::of(parts, app)?;
    let db = app.db.get().await?;
    let sql = match admission.credential {
        Credential::Key => "SELECT tenant, role, id, false, NULL::text FROM postbox.authenticate_api_key($1)",
        Credential::Session(_) => {
            "SELECT tenant, role, id, manage_keys, user_id FROM postbox.authenticate_portal_session($1)"
        }
    };
    let st = db.prepare_cached(sql).await?;
    let row = match db.query_opt(&st, &[&admission.hash.as_slice()]).await? {
        Some(row) => row,
        None => return Err(admission.failed(app)),
    };
    drop(db);
    admission.known(app);
    if let Credential::Session(cookie) = &admission.credential {
        if !matches!(parts.method, Method::GET | Method::HEAD)
            && !crate::session::csrf_ok(&parts.headers, cookie)
        {
            return Err(ApiError::Forbidden(
                "a portal change needs its CSRF token (X-CSRF-Token)",
            ));
        }
    }
    let credential: Uuid = row.get(2);
    let session = matches!(admission.credential, Credential::Session(_)).then(|| Session {
        id: credential,
        manage_keys: row.get(3),
        user_id: row.get(4),
    });
    Ok(Caller {
        tenant: row.get(0),
        role: role(row.get(1))?,
        credential,
        session,
    })
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        authenticate(parts, app).await
    }
}

/// An authenticated request's tenant and its caller: every tenant-scoped
/// handler takes one. The tenant is the key's own, or, for an operator
/// key, the one in the path. It holds no connection: [`Scope::db`] takes
/// one when the handler has read its body.
pub struct Scope {
    pub tenant: String,
    pub caller: Caller,
    app: App,
}

impl Scope {
    /// Citus's worker nodes (none off Citus).
    pub fn nodes(&self) -> &crate::nodes::Nodes {
        &self.app.nodes
    }

    /// A connection for this tenant's work, within its share.
    pub async fn db(&self) -> Result<Conn, ApiError> {
        self.app.db.for_tenant(&self.tenant).await
    }

    /// Only admin and operator keys (and admin sessions) may go on.
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

    /// API keys: admin and operator keys, and portal sessions only when the
    /// operator made them with the key-management permission (then only
    /// their own keys: SQL's rule, given the session's id).
    pub fn require_key_manager(&self) -> Result<(), ApiError> {
        self.require_admin()?;
        match &self.caller.session {
            Some(s) if !s.manage_keys => Err(ApiError::Forbidden(
                "a portal session may not manage API keys unless the operator allowed it when making the session",
            )),
            _ => Ok(()),
        }
    }

    /// The portal session this request comes from, if any.
    pub fn session_id(&self) -> Option<Uuid> {
        self.caller.session.as_ref().map(|s| s.id)
    }
}

impl FromRequestParts<App> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, app).await?;
        // A path whose tenant does not decode is refused, never read as a
        // path without one (that would act on the key's own tenant).
        let in_path = match RawPathParams::from_request_parts(parts, app).await {
            Ok(p) => p
                .iter()
                .find(|(k, _)| *k == "tenant")
                .map(|(_, v)| v.to_string()),
            Err(RawPathParamsRejection::MissingPathParams(_)) => None,
            Err(_) => {
                return Err(ApiError::BadRequest {
                    code: "invalid_request",
                    status: StatusCode::BAD_REQUEST,
                    message: "the path does not decode to UTF-8 text".into(),
                    field: Some("tenant".into()),
                })
            }
        };
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
        let scope = Scope {
            tenant,
            caller,
            app: app.clone(),
        };
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
