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
//! - [`auth`]: API keys, roles, and the tenant a request acts for.
//! - [`limit`]: per-key rate limits (token buckets).
//! - [`body`]: JSON bodies, bounded, unknown fields refused.
//! - [`idempotency`]: writes in one transaction, with `Idempotency-Key`.
//! - [`error`]: errors as JSON; SQL rules as 422, unknown ids as 404.
//! - [`routes`]: the handlers, each with its OpenAPI operation.
//! - [`openapi`]: the document's shared parts.
//! - [`portal`]: the settings portal: links, sessions, CSRF, its page (`portal/`).
//! - [`metrics`]: Prometheus metrics, the request log, `/healthz`.
//! - this file: [`run`] and [`serve`], which wire them together.

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod limit;
pub mod metrics;
pub mod openapi;
pub mod portal;
pub mod routes;

pub use config::{Cli, Config};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use error::ApiError;
use postbox_worker::config::ConfigError;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// What every request shares.
pub struct Shared {
    pub pool: deadpool_postgres::Pool,
    pub limiter: limit::Limiter,
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
    #[error(transparent)]
    Worker(#[from] postbox_worker::RunError),
    #[error("{0}")]
    Role(&'static str),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl RunError {
    /// Configuration errors exit with 2, as the worker's do.
    pub fn is_config(&self) -> bool {
        matches!(self, RunError::Config(_) | RunError::Role(_))
            || matches!(self, RunError::Worker(e) if e.is_config())
    }
}

/// How often rate limit buckets of idle keys are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The router and the finished OpenAPI document.
pub fn router() -> (Router<App>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes::all().split_for_parts();
    openapi::finish(&mut doc);
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
    let (mut pg, tls) = postbox_worker::db::parse(config.database_url.as_str())
        .map_err(|e| RunError::Db(e.to_string()))?;
    let tls = postbox_worker::db::connector(&tls).map_err(|e| RunError::Db(e.to_string()))?;
    pg.application_name("postbox-api");
    let pool = postbox_worker::db::pool(pg, tls, config.db_pool_size)
        .map_err(|e| RunError::Db(e.to_string()))?;
    {
        // The API calls the extension's functions: only the version it was built with.
        let db = pool
            .get()
            .await
            .map_err(|e| RunError::Db(postbox_worker::error::pool_message(&e)))?;
        postbox_worker::extension_version(&db).await?;
        // The API acts with postbox_admin's rights and no more: never as a
        // superuser, which could read every secret.
        let row = db
            .query_one(
                "SELECT rolsuper, pg_has_role(current_user, 'postbox_admin', 'USAGE') FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| RunError::Db(postbox_worker::error::pg_message(&e)))?;
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
    }
    let app = App(Arc::new(Shared {
        pool,
        limiter: limit::Limiter::new(config.rate_limit, config.rate_burst),
        metrics: metrics::Metrics::new(),
        portal: portal::Settings::from_config(&config)?,
    }));
    let stop = postbox_worker::shutdown::watch_for(shutdown);
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
                _ = tokio::time::sleep(SWEEP_EVERY) => sweeper.limiter.sweep(Instant::now()),
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
        .with_state(app);

    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "postbox-api listening");
    let mut graceful = stop.clone();
    let server = axum::serve(listener, app_router).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|s| *s).await;
    });
    let mut deadline = stop.clone();
    let timeout = config.shutdown_timeout;
    tokio::select! {
        r = server => r.map_err(|e| RunError::Db(format!("server: {e}")))?,
        _ = async move {
            let _ = deadline.wait_for(|s| *s).await;
            tokio::time::sleep(timeout).await;
        } => tracing::warn!(?timeout, "requests still in flight at the shutdown timeout: stopping anyway"),
    }
    tracing::info!("postbox-api stopped");
    Ok(())
}
