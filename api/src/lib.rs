//! postbox-api: postbox's management HTTP API.
//!
//! Tenants' tools and the application's backend manage endpoints,
//! deliveries and keys over HTTP with API keys; every rule stays in
//! postbox's tenant-scoped SQL, which each route calls. [`run`] is the whole
//! API; the binary only reads configuration and waits for a signal. Tests
//! drive [`serve`] in-process on a listener of their own.
//!
//! What it shares with the worker (the settings framework, connection
//! strings and TLS, the pool, error text, shutdown, the extension version
//! check, logging) is `postbox_runtime`'s; this crate does not depend on
//! the worker.
//!
//! # Layout
//! - [`config`]: the API's settings (its `settings!` table: flags,
//!   `POSTBOX_API_*`, TOML), defaults, validation.
//! - [`database`]: the pool, and what the API requires of its database
//!   before it serves (extension version, role, unlogged parameters).
//! - [`connections`]: database connections: a wait deadline, a share per tenant.
//! - [`nodes`]: on a Citus coordinator, the worker nodes, which keep
//!   deliveries, their log and health.
//! - [`server`]: the HTTP/1.1 connection loop: header deadline, graceful stop.
//! - [`request_id`]: clients' `X-Request-Id`, kept only when it is a plain token.
//! - [`auth`]: who is calling (API keys, portal sessions), roles, and the
//!   tenant a request acts for.
//! - [`session`]: a portal session's cookie and its CSRF token.
//! - [`limit`]: rate limits per key, and of failed authentications per address.
//! - [`body`]: JSON bodies, bounded, unknown fields refused.
//! - [`idempotency`]: writes in one transaction, with `Idempotency-Key`.
//! - [`error`]: errors as JSON; SQL rules as 422, unknown ids as 404.
//! - [`routes`]: every route: the API's handlers, each with its OpenAPI
//!   operation, and those outside the document (the document, `/healthz`,
//!   the portal's page).
//! - [`openapi`]: the document's shared parts.
//! - [`portal`]: the settings portal: its settings, its page (`portal/`)
//!   and its handlers (entering with a link, the session, signing out).
//! - [`metrics`]: Prometheus metrics, the request log, `/healthz`.
//! - this file: [`run`] and [`serve`], which wire them together.

pub mod auth;
pub mod body;
pub mod config;
pub mod connections;
pub mod database;
pub mod error;
pub mod idempotency;
pub mod limit;
pub mod metrics;
pub mod nodes;
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
use axum::Router;
use error::ApiError;
use postbox_runtime::settings::ConfigError;
use postbox_runtime::{shutdown, ExtensionError};
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
    /// Citus's worker nodes (none off Citus).
    pub nodes: nodes::Nodes,
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
    let (pool, nodes) = database::connect(&config).await?;
    let app = App(Arc::new(Shared {
        db: connections::Connections::new(pool, config.db_wait_timeout, config.per_tenant()),
        nodes,
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
        .merge(routes::undocumented(doc))
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
