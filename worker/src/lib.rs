//! postbox-worker: turns the outbox into signed HTTP requests.
//!
//! [`run`] is the whole worker; the binary only parses configuration and
//! waits for a signal. Tests drive [`run`] in-process with their own
//! resolver, roots and shutdown future.
//!
//! # Layout
//! - [`config`]: settings (flags, environment, TOML file), defaults, validation.
//! - [`db`]: connecting to PostgreSQL (sslmode, sslrootcert, rustls).
//! - [`dispatch`]: the loop that claims, queues, starts, reaps and drains.
//! - [`schedule`]: the scheduling policy: per-endpoint and tenant limits, the
//!   fast lane, rate limits, claim pacing and the rooms a claim may take.
//! - [`wakeup`]: the wake-up protocol: the LISTEN connection, the flag,
//!   re-arming and NOTIFY pacing.
//! - [`claim`]: the claim, expansion, release and next-due statements; what a
//!   claimed delivery is.
//! - [`deliver`]: one HTTP attempt and what came back.
//! - [`resolve`]: SSRF-checked name resolution.
//! - [`sign`]: the signature headers of an attempt.
//! - [`retry`]: the retry schedule, jitter and Retry-After.
//! - [`ack`]: the outcome decision, and batched acknowledgements: attempt
//!   log, delivery state, endpoint health, auto-disable.
//! - [`metrics`]: Prometheus metrics and `/healthz`.
//! - [`check`]: `postbox-worker check`, readiness findings.
//! - [`purge`]: retention, `postbox.purge` on a schedule.
//! - [`liveness`]: the heartbeat, and the release of dead workers' claims.
//! - [`shutdown`]: signals and the stop flag.
//! - [`backoff`], [`error`]: doubling waits after failures; error text.
//! - this file: [`run`], which wires them together.

pub mod ack;
pub mod backoff;
pub mod check;
pub mod claim;
pub mod config;
pub mod db;
pub mod deliver;
pub mod dispatch;
pub mod error;
pub mod liveness;
pub mod metrics;
pub mod purge;
pub mod resolve;
pub mod retry;
pub mod schedule;
pub mod shutdown;
pub mod sign;
pub mod wakeup;

pub use config::{Cli, Config, ConfigError};
pub use resolve::Resolve;

use deadpool_postgres::Pool;
use deliver::{Sender, SenderSettings};
use dispatch::Dispatcher;
use error::pg_message;
use metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use wakeup::Wakeup;

/// Extension versions this worker can drive.
pub const SUPPORTED_EXTENSION_VERSIONS: &[&str] = &["0.6.0"];

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("the postbox extension is not installed in this database (CREATE EXTENSION postbox)")]
    NoExtension,
    #[error("the postbox extension is version {0}, which this worker does not support (supported: {supported})", supported = SUPPORTED_EXTENSION_VERSIONS.join(", "))]
    UnsupportedExtension(String),
    #[error("database: {0}")]
    Db(String),
    #[error("metrics address: {0}")]
    Metrics(std::io::Error),
    #[error("{0}")]
    Deliver(#[from] deliver::DeliverError),
}

impl RunError {
    /// Errors a configuration change fixes: the binary exits 2 on these.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::Config(_)
                | RunError::NoExtension
                | RunError::UnsupportedExtension(_)
                | RunError::Metrics(_)
        )
    }
}

/// What a binary (the worker's, the API's) does before its work: the log
/// (JSON lines or text, through the filter `log`), then the runtime.
pub fn start_process(log: &str, json: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let filter = tracing_subscriber::EnvFilter::new(log);
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    tokio::runtime::Runtime::new()
}

/// Runs the worker until `shutdown` resolves, then stops claiming, lets
/// in-flight requests finish (or releases them after the shutdown timeout),
/// writes the last acknowledgements and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config::Prepared { mut pg, tls, roots } = config.prepare()?;
    db::session_options(&mut pg);
    let pool = pool(&config, pg.clone(), tls.clone())?;
    let allow_private = check_database(&pool).await? || config.allow_private_targets;
    if allow_private {
        tracing::warn!("private and http targets are allowed: for local development only");
    }
    let sender = Arc::new(Sender::new(SenderSettings {
        resolver: config.resolver.clone(),
        roots,
        allow_private,
        default_timeout: config.request_timeout,
        default_connect_timeout: config.connect_timeout,
        max_request_time: config.max_request_time(),
    })?);
    let metrics = Arc::new(Metrics::new());
    // Registered before the first claim, so that a death is noticed.
    let me = liveness::Me::new(&config.worker_id);
    liveness::register(&pool, &me, &metrics)
        .await
        .map_err(RunError::Db)?;
    let stop = shutdown::watch_for(shutdown);
    if let Some(addr) = config.metrics_addr {
        let bound = metrics::serve(addr, metrics.clone(), pool.clone(), stop.clone())
            .await
            .map_err(RunError::Metrics)?;
        tracing::info!(%bound, "metrics at /metrics, liveness at /healthz");
    }

    let wakeup = Wakeup::new(config.poll_interval, Instant::now());
    let listener = wakeup.listen(pg, tls, stop.clone());
    let (ack_tx, ack_rx) = mpsc::channel(ack::CHANNEL_SIZE);
    let policy = ack::DisablePolicy {
        after_failures: config.disable_after_failures,
        after: config.disable_after,
    };
    let acker = tokio::spawn(ack::run_acker(
        pool.clone(),
        ack_rx,
        policy,
        metrics.clone(),
    ));
    let purger = tokio::spawn(purge::run(
        pool.clone(),
        config.purge_interval,
        config.purge_batch as i32,
        metrics.clone(),
        stop.clone(),
    ));
    // Beats until the drain is over: a worker finishing its requests is alive.
    let (beat_stop, beat_stop_rx) = tokio::sync::watch::channel(false);
    let heart = tokio::spawn(liveness::run(
        pool.clone(),
        me.clone(),
        metrics.clone(),
        wakeup.waker(),
        beat_stop_rx,
    ));
    tracing::info!(worker_id = %config.worker_id, max_in_flight = config.max_in_flight,
        tenant_max_in_flight = config.tenant_cap(), "postbox-worker started");

    let mut d = Dispatcher::new(config, pool.clone(), sender, metrics, ack_tx, wakeup);
    d.run(stop).await;
    d.drain().await;
    drop(d); // closes the acknowledgement channel: the acker flushes and ends
    let _ = acker.await;
    let _ = purger.await;
    let _ = beat_stop.send(true);
    let _ = heart.await;
    liveness::stopped(&pool, &me).await;
    listener.abort();
    if let Ok(db) = pool.get().await {
        let _ = wakeup::set_waiting(&db, false).await;
    }
    tracing::info!("postbox-worker stopped");
    Ok(())
}

/// The connection pool for claims and acknowledgements.
pub(crate) fn pool(
    config: &Config,
    pg: tokio_postgres::Config,
    tls: db::MakeRustls,
) -> Result<Pool, RunError> {
    db::pool(pg, tls, config.db_pool_size).map_err(|e| RunError::Db(e.to_string()))
}

/// The installed extension's version if this worker drives it, else the
/// error saying why not (not installed, or another version). The one home of
/// that rule: `run` refuses to start on it, `check` reports it.
pub async fn extension_version(db: &tokio_postgres::Client) -> Result<String, RunError> {
    let version: Option<String> = db
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'postbox'",
            &[],
        )
        .await
        .map_err(|e| RunError::Db(pg_message(&e)))?
        .map(|r| r.get(0));
    match version {
        None => Err(RunError::NoExtension),
        Some(v) if !SUPPORTED_EXTENSION_VERSIONS.contains(&v.as_str()) => {
            Err(RunError::UnsupportedExtension(v))
        }
        Some(v) => Ok(v),
    }
}

/// Checks the extension's version; returns whether the database allows
/// insecure URLs (`postbox.allow_insecure_urls`), which the worker honours.
async fn check_database(pool: &Pool) -> Result<bool, RunError> {
    let db = pool
        .get()
        .await
        .map_err(|e| RunError::Db(error::pool_message(&e)))?;
    extension_version(&db).await?;
    Ok(db
        .query_one("SELECT coalesce(current_setting('postbox.allow_insecure_urls', true), 'off') IN ('on', 'true', '1', 'yes')", &[])
        .await
        .map_err(|e| RunError::Db(pg_message(&e)))?
        .get(0))
}
