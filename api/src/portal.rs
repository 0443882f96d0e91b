//! The settings portal: a page a product embeds (or links to) for one
//! tenant, served by this API, whose script calls the same routes as any
//! client (nothing goes around the API).
//!
//! - The product's backend asks for a link with its operator key
//!   (`POST /v1/tenants/{tenant}/portal-sessions`, routes/portal.rs): a
//!   one-time token, valid for minutes.
//! - `GET /portal/enter?token=` uses the token once and answers with the
//!   session cookie (`HttpOnly`, `SameSite`, `Secure` unless the API is
//!   served over plain http in development) and a redirect to `/portal/`,
//!   so the token is kept neither in the page nor in its history. Only
//!   SHA-256 of the token and the cookie are stored.
//! - Changes need `X-CSRF-Token`, derived from the session's cookie, which
//!   the page reads from `GET /v1/portal/session` (same origin only).
//! - The page (portal/: HTML, one script, CSS) is built into the binary and
//!   served with a strict Content-Security-Policy: no inline script or
//!   style, nothing from another origin, `frame-ancestors` as configured.
//!   The script writes every value a tenant typed as text, never as markup.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::session::{csrf_token, session_cookie, COOKIE};
use crate::App;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const INDEX: &str = include_str!("../portal/index.html");
const SCRIPT: &str = include_str!("../portal/app.js");
const STYLE: &str = include_str!("../portal/app.css");
const EXPIRED: &str = include_str!("../portal/expired.html");

/// What the portal's responses share, from the configuration.
pub struct Settings {
    pub public_url: String,
    pub lasts: std::time::Duration,
    pub csp: HeaderValue,
    pub theme: String,
    pub logo: Option<(&'static str, Vec<u8>)>,
    pub cookie_attributes: String,
}

impl Settings {
    pub fn from_config(c: &crate::Config) -> Result<Settings, crate::RunError> {
        let public_url = c.public_url();
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             base-uri 'none'; form-action 'self'; frame-ancestors {}",
            c.portal_frame_ancestors
        );
        let logo = if c.portal_logo.is_empty() {
            None
        } else {
            let bytes = std::fs::read(&c.portal_logo).map_err(|e| {
                crate::RunError::Config(postbox_runtime::settings::invalid(
                    "POSTBOX_API_PORTAL_LOGO",
                    format!("cannot read ({e})"),
                    &c.portal_logo,
                ))
            })?;
            let kind = if c.portal_logo.ends_with(".svg") {
                "image/svg+xml"
            } else {
                "image/png"
            };
            Some((kind, bytes))
        };
        // Secure unless plain http on loopback, in development, where
        // browsers drop Secure cookies (config refuses http anywhere else).
        let secure =
            !(public_url.starts_with("http://") && crate::config::is_loopback_url(&public_url));
        // The cookie goes only where the page and its API are: under the
        // public URL's path, which a proxy's prefix is part of.
        let path = url::Url::parse(&public_url)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| "/".into());
        let same_site = match c.portal_same_site.as_str() {
            "strict" => "Strict",
            "none" => "None",
            _ => "Lax",
        };
        Ok(Settings {
            csp: HeaderValue::from_str(&csp).map_err(|_| {
                crate::RunError::Config(postbox_runtime::settings::invalid(
                    "POSTBOX_API_PORTAL_FRAME_ANCESTORS",
                    "must be a valid header value",
                    &c.portal_frame_ancestors,
                ))
            })?,
            theme: format!(":root {{ --accent: {}; }}\n", c.portal_accent),
            logo,
            cookie_attributes: format!(
                "Path={path}; HttpOnly; SameSite={same_site}; Max-Age={}{}",
                c.portal_session.as_secs(),
                if secure { "; Secure" } else { "" }
            ),
            public_url,
            lasts: c.portal_session,
        })
    }
}

fn secured(app: &App, mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, app.portal.csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn asset(app: &App, kind: &'static str, body: impl Into<axum::body::Body>) -> Response {
    secured(
        app,
        ([(header::CONTENT_TYPE, kind)], body.into()).into_response(),
    )
}

pub async fn index(State(app): State<App>) -> Response {
    asset(&app, "text/html; charset=utf-8", INDEX)
}

pub async fn script(State(app): State<App>) -> Response {
    asset(&app, "text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style(State(app): State<App>) -> Response {
    asset(&app, "text/css; charset=utf-8", STYLE)
}

pub async fn theme(State(app): State<App>) -> Response {
    asset(&app, "text/css; charset=utf-8", app.portal.theme.clone())
}

pub async fn logo(State(app): State<App>) -> Response {
    match &app.portal.logo {
        Some((kind, bytes)) => asset(&app, kind, bytes.clone()),
        None => secured(&app, StatusCode::NOT_FOUND.into_response()),
    }
}

#[derive(Deserialize)]
pub struct Enter {
    token: Option<String>,
}

/// Uses a link's token: the session cookie and a redirect to the page; an
/// unknown, used or expired token gets a page that says so (401), and
/// counts as a failed authentication of the client's address, as an
/// unknown key does ([`crate::limit`]): a scan of made-up tokens is
/// refused (429) before the database.
pub async fn enter(
    State(app): State<App>,
    Query(q): Query<Enter>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let from = crate::auth::client(req.extensions());
    let expired = || {
        secured(
            &app,
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                EXPIRED,
            )
                .into_response(),
        )
    };
    let Some(token) = q
        .token
        .filter(|t| postbox_rules::api_key::has_form(postbox_rules::api_key::PORTAL_PREFIX, t))
    else {
        return Ok(expired());
    };
    let token_hash = postbox_rules::api_key::hash(&token);
    let now = std::time::Instant::now();
    app.limiter.admit(token_hash, from, now)?;
    let mut random = [0u8; postbox_rules::api_key::GENERATED_BYTES];
    getrandom::fill(&mut random).map_err(|_| ApiError::Internal)?;
    let cookie =
        postbox_rules::api_key::encode_with(postbox_rules::api_key::SESSION_PREFIX, &random);
    let db = app.db.get().await?;
    let st = db
        .prepare_cached(
            "SELECT tenant FROM postbox.open_portal_session($1, $2, $3::int * interval '1 second')",
        )
        .await?;
    let opened = db
        .query_opt(
            &st,
            &[
                &token_hash.as_slice(),
                &postbox_rules::api_key::hash(&cookie).as_slice(),
                &(app.portal.lasts.as_secs() as i32),
            ],
        )
        .await?;
    if opened.is_none() {
        app.limiter.failed(token_hash, from, now);
        return Ok(expired());
    }
    // A link works once: its bucket need not stay.
    app.limiter.forget(token_hash);
    // Relative (to /portal/enter): the page, under whatever prefix a proxy adds.
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "./")]).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}={cookie}; {}",
            app.portal.cookie_attributes
        ))
        .map_err(|_| ApiError::Internal)?,
    );
    Ok(secured(&app, resp))
}

/// The portal's session, for its script: the tenant, the role, and the
/// CSRF token its changes must carry.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    pub tenant: String,
    /// admin or member.
    pub role: String,
    pub csrf_token: String,
    pub logo: bool,
    /// Whether the session may make and manage API keys.
    pub manage_keys: bool,
}

pub async fn session(
    State(app): State<App>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let cookie = session_cookie(&headers).ok_or(ApiError::Unauthorized)?;
    let (Some(tenant), false) = (caller.tenant, headers.contains_key(header::AUTHORIZATION)) else {
        return Err(ApiError::Forbidden("only a portal session has one"));
    };
    let info = SessionInfo {
        tenant,
        role: if caller.role == Role::Admin {
            "admin"
        } else {
            "member"
        }
        .into(),
        csrf_token: csrf_token(cookie),
        logo: app.portal.logo.is_some(),
        manage_keys: caller.session.as_ref().is_some_and(|s| s.manage_keys),
    };
    Ok(secured(&app, Json(info).into_response()))
}

/// Signs out: ends the session (a change, so it needs the CSRF token, as
/// the [`Caller`] extractor checks) and clears the cookie.
pub async fn sign_out(
    State(app): State<App>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let cookie = session_cookie(&headers).ok_or(ApiError::Unauthorized)?;
    if caller.session.is_none() || headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::Forbidden("only a portal session signs out"));
    }
    let db = app.db.get().await?;
    let st = db
        .prepare_cached("SELECT postbox.end_portal_session($1)")
        .await?;
    db.execute(&st, &[&postbox_rules::api_key::hash(cookie).as_slice()])
        .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; {}",
            app.portal.cookie_attributes.replace(
                &format!("Max-Age={}", app.portal.lasts.as_secs()),
                "Max-Age=0"
            )
        ))
        .map_err(|_| ApiError::Internal)?,
    );
    Ok(secured(&app, resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(adjust: impl FnOnce(&mut crate::Config)) -> Result<Settings, String> {
        let mut c = crate::Config::new("postgres://h/db");
        adjust(&mut c);
        c.validate().map_err(|e| e.to_string())?;
        Settings::from_config(&c).map_err(|e| e.to_string())
    }

    #[test]
    fn the_cookie_is_secure_on_https_and_same_site_as_configured() {
        let dev = settings(|_| {}).unwrap();
        assert_eq!(
            dev.cookie_attributes,
            "Path=/; HttpOnly; SameSite=Lax; Max-Age=3600"
        );
        assert_eq!(dev.public_url, "http://127.0.0.1:8080");
        let prod = settings(|c| {
            c.public_url = "https://webhooks.example.com".into();
            c.portal_same_site = "none".into();
            c.portal_frame_ancestors = "https://app.example.com".into();
            c.portal_accent = "#FF6600".into();
        })
        .unwrap();
        assert_eq!(
            prod.cookie_attributes,
            "Path=/; HttpOnly; SameSite=None; Max-Age=3600; Secure"
        );
        assert!(prod
            .csp
            .to_str()
            .unwrap()
            .ends_with("frame-ancestors https://app.example.com"));
        assert_eq!(prod.theme, ":root { --accent: #FF6600; }\n");
        // Behind a proxy that adds a prefix, the cookie stays under it.
        let prefixed = settings(|c| c.public_url = "https://example.com/webhooks".into()).unwrap();
        assert!(
            prefixed.cookie_attributes.starts_with("Path=/webhooks; "),
            "{}",
            prefixed.cookie_attributes
        );
    }

    #[test]
    fn the_cookie_is_secure_unless_plain_http_on_loopback() {
        for (url, secure) in [
            ("http://127.0.0.1:8080", false),
            ("http://localhost:8080", false),
            ("http://[::1]:8080", false),
            ("http://127.3.4.5", false),
            ("https://127.0.0.1:8443", true),
            ("https://localhost", true),
            ("https://webhooks.example.com", true),
        ] {
            let s = settings(|c| c.public_url = url.into()).unwrap();
            assert_eq!(s.cookie_attributes.ends_with("; Secure"), secure, "{url}");
        }
        // Plain http anywhere else is refused, naming the setting.
        for url in [
            "http://webhooks.example.com",
            "http://10.0.0.5:8080",
            "http://0.0.0.0:8080",
            "http://localhost.example.com",
        ] {
            let e = settings(|c| c.public_url = url.into())
                .err()
                .unwrap_or_default();
            assert!(e.starts_with("POSTBOX_API_PUBLIC_URL"), "{url}: {e}");
        }
        // The default follows the listen address.
        let e = settings(|c| c.listen = "0.0.0.0:8080".parse().unwrap())
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("POSTBOX_API_PUBLIC_URL"), "{e}");
    }

    #[test]
    fn bad_portal_settings_are_refused_naming_the_setting() {
        for (what, adjust) in [
            (
                "POSTBOX_API_PORTAL_SAME_SITE",
                Box::new(|c: &mut crate::Config| c.portal_same_site = "none".into())
                    as Box<dyn FnOnce(&mut crate::Config)>,
            ),
            (
                "POSTBOX_API_PORTAL_ACCENT",
                Box::new(|c: &mut crate::Config| c.portal_accent = "red; } body { x".into()),
            ),
            (
                "POSTBOX_API_PORTAL_FRAME_ANCESTORS",
                Box::new(|c: &mut crate::Config| {
                    c.portal_frame_ancestors = "'self'; script-src *".into()
                }),
            ),
            (
                "POSTBOX_API_PUBLIC_URL",
                Box::new(|c: &mut crate::Config| c.public_url = "webhooks.example.com/".into()),
            ),
            (
                "POSTBOX_API_PORTAL_LOGO",
                Box::new(|c: &mut crate::Config| c.portal_logo = "/nonexistent/logo.svg".into()),
            ),
        ] {
            let e = settings(adjust).err().unwrap_or_default();
            assert!(e.starts_with(what), "{what}: {e}");
        }
    }
}
