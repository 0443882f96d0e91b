//! postbox-api: postbox's management HTTP API.
//!
//! Tenants' tools and the application's backend manage endpoints,
//! deliveries and keys over HTTP with API keys; every rule stays in
//! postbox's tenant-scoped SQL, which each route calls. [`run`] is the whole
//! API; the binary only reads configuration and waits for a signal. Tests
//! drive [`serve`] in-process on a listener of their own.
//!
//! # Layout
//! - [`config`]: settings (flags, `POSTBOX_API_*`, TOML), the worker's layering.
//! - [`auth`]: API keys, portal sessions, roles, and the tenant a request
//!   acts for.
//! - [`session`]: a portal session's cookie and its CSRF token.
//! - [`limit`]: rate limits per key, and of failed authentications per address.
//! - [`connections`]: database connections: a wait deadline, a share per tenant.
//! - [`server`]: the HTTP/1.1 connection loop: header deadline, graceful stop.
//! - [`body`]: JSON bodies, bounded, unknown fields refused.
//! - [`idempotency`]: writes in one transaction, with `Idempotency-Key`.
//! - [`error`]: errors as JSON; SQL rules as 422, unknown ids as 404.
//! - [`routes`]: the handlers, each with its OpenAPI operation.
//! - [`openapi`]: the document's shared parts.
//! - [`portal`]: the settings portal: links, sessions, CSRF, its page (`portal/`).
//! - [`metrics`]: Prometheus metrics, the request log, `/healthz`.
//! - [`request_id`]: clients' `X-Request-Id`, kept only when it is a plain token.
//! - this file: [`run`] and [`serve`], which wire them together.

pub mod auth;
pub mod body;
pub mod config;
pub mod connections;
pub mod error;
pub mod idempotency;
pub mod limit;
pub mod metrics;
pub mod openapi;
pub mod portal;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod session;

pub use config::{Cli, Config};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use error::ApiError;
use postbox_runtime::error::{pg_message, pool_message};
use postbox_runtime::settings::ConfigError;
use postbox_runtime::{conninfo, shutdown, ExtensionError};
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// What every request shares.
pub struct Shared {
    pub db: connections::Connections,
    pub limiter: limit::Limiter,
    /// How long a client may take to send a body.
    pub body_timeout: Duration,
    pub metrics: metrics::Metrics,
    pub portal: portal::Settings,
}

#[derive(Clone)]
pub struct App(Arc<Shared>);

impl Deref for App {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Db(String),
    /// Not installed, or a version this API does not drive.
    #[error(transparent)]
    Extension(#[from] ExtensionError),
    #[error("{0}")]
    Role(&'static str),
    #[error("{0}")]
    Logging(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl RunError {
    /// Configuration errors exit with 2, as the worker's do.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::Config(_) | RunError::Role(_) | RunError::Logging(_)
        ) || matches!(self, RunError::Extension(e) if e.is_config())
    }
}

/// How often rate limit buckets of idle keys are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The router and the finished OpenAPI document.
pub fn router() -> (Router<App>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes::all().split_for_parts();
    openapi::finish(&mut doc, routes::OPERATOR_KEYS);
    (router, doc)
}

/// The OpenAPI document as served at /openapi.json and committed as api/openapi.json.
pub fn openapi_json() -> String {
    render(&router().1)
}

/// The document's text: pretty JSON and a final newline.
fn render(doc: &utoipa::openapi::OpenApi) -> String {
    doc.to_pretty_json().expect("the document serializes") + "\n"
}

/// Refuses to start when the database would log the API's statement
/// parameters: new keys, new signing secrets, customers' own secrets and
/// stored Idempotency-Key answers travel as parameters, and PostgreSQL logs
/// them in full with `log_statement = all` or `log_min_duration_statement`
/// unless `log_parameter_max_length` is 0 (and, on errors,
/// `log_parameter_max_length_on_error`). Both are superuser settings, so
/// the message gives the command for a superuser to run.
async fn parameters_unlogged(db: &deadpool_postgres::Object, allow: bool) -> Result<(), RunError> {
    let row = db
        .query_one(
            "SELECT current_setting('log_parameter_max_length')::int,
                    current_setting('log_parameter_max_length_on_error')::int,
                    quote_ident(current_user)",
            &[],
        )
        .await
        .map_err(|e| RunError::Db(pg_message(&e)))?;
    let (normal, on_error, role): (i32, i32, String) = (row.get(0), row.get(1), row.get(2));
    if normal == 0 && on_error == 0 {
        return Ok(());
    }
    if allow {
        tracing::warn!(
            log_parameter_max_length = normal,
            log_parameter_max_length_on_error = on_error,
            "the database may log this API's statement parameters, which carry new keys and secrets (allowed by POSTBOX_API_ALLOW_PARAMETER_LOGGING)"
        );
        return Ok(());
    }
    Err(RunError::Logging(format!(
        "the database may log this API's statement parameters (log_parameter_max_length = {normal}, \
         log_parameter_max_length_on_error = {on_error}), and new keys and secrets travel as parameters: \
         as a superuser, run ALTER ROLE {role} SET log_parameter_max_length = 0; \
         ALTER ROLE {role} SET log_parameter_max_length_on_error = 0; \
         (or start with POSTBOX_API_ALLOW_PARAMETER_LOGGING=true to accept the risk)"
    )))
}

/// Binds the configured address and serves until `shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    serve(listener, config, shutdown).await
}

/// Serves on `listener` until `shutdown`, then lets requests in flight
/// finish for up to the shutdown timeout.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    if let Some(warning) = conninfo::transport_warning(config.database_url.as_str()) {
        tracing::warn!("{warning}");
    }
    let (mut pg, tls) =
        conninfo::parse(config.database_url.as_str()).map_err(|e| RunError::Db(e.to_string()))?;
    let tls = postbox_runtime::tls::connector(&tls).map_err(|e| RunError::Db(e.to_string()))?;
    pg.application_name("postbox-api");
    let pool = postbox_runtime::pool::pool(pg, tls, config.db_pool_size)
        .map_err(|e| RunError::Db(e.to_string()))?;
    {
        // The API calls the extension's functions: only the version it was built with.
        let db = pool
            .get()
            .await
            .map_err(|e| RunError::Db(pool_message(&e)))?;
        postbox_runtime::extension_version(&db).await?;
        // The API acts with postbox_admin's rights and no more: never as a
        // superuser, which could read every secret.
        let row = db
            .query_one(
                "SELECT rolsuper, pg_has_role(current_user, 'postbox_admin', 'USAGE') FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| RunError::Db(pg_message(&e)))?;
        if row.get::<_, bool>(0) {
            return Err(RunError::Role(
                "the database role is a superuser: connect as a LOGIN role granted postbox_admin",
            ));
        }
        if !row.get::<_, bool>(1) {
            return Err(RunError::Role(
                "the database role is not granted postbox_admin",
            ));
        }
        parameters_unlogged(&db, config.allow_parameter_logging).await?;
    }
    let app = App(Arc::new(Shared {
        db: connections::Connections::new(pool, config.db_wait_timeout, config.per_tenant()),
        limiter: limit::Limiter::new(
            limit::Rate::new(config.rate_limit, config.rate_burst),
            limit::Rate::new(config.auth_failure_rate, config.auth_failure_burst),
        ),
        body_timeout: config.body_timeout,
        metrics: metrics::Metrics::new(),
        portal: portal::Settings::from_config(&config)?,
    }));
    let stop = shutdown::watch_for(shutdown);
    if let Some(addr) = config.metrics_addr {
        let bound = metrics::serve(addr, app.clone(), stop.clone())
            .await
            .map_err(|source| RunError::Listen { addr, source })?;
        tracing::info!(%bound, "metrics at /metrics, liveness at /healthz");
    }
    let sweeper = app.clone();
    let mut sweep_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {
                    sweeper.limiter.sweep(Instant::now());
                    sweeper.db.sweep();
                }
                _ = sweep_stop.changed() => return,
            }
        }
    });

    let (routes, doc) = router();
    let doc: Arc<str> = render(&doc).into();
    let app_router = routes
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc.to_string(),
                )
            }),
        )
        .route("/healthz", get(metrics::healthz))
        .route(
            "/portal",
            get(|| async { axum::response::Redirect::permanent("/portal/") }),
        )
        .route("/portal/", get(portal::index))
        .route("/portal/enter", get(portal::enter))
        .route("/portal/app.js", get(portal::script))
        .route("/portal/app.css", get(portal::style))
        .route("/portal/theme.css", get(portal::theme))
        .route("/portal/logo", get(portal::logo))
        .route("/v1/portal/session", get(portal::session))
        .route("/v1/portal/sign-out", axum::routing::post(portal::sign_out))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::BadRequest {
                code: "method_not_allowed",
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "this route does not take this method".into(),
                field: None,
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            metrics::track,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::Internal.into_response()
        }))
        .layer(DefaultBodyLimit::max(config.max_body as usize))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn(request_id::fit))
        .with_state(app);

    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "postbox-api listening");
    server::serve(
        listener,
        app_router,
        config.header_timeout,
        config.shutdown_timeout,
        stop,
    )
    .await;
    tracing::info!("postbox-api stopped");
    Ok(())
}
