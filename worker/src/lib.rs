//! postbox-worker: turns the outbox into signed HTTP requests.
//!
//! [`run`] is the whole worker; the binary only parses configuration and
//! waits for a signal. Tests drive [`run`] in-process with their own
//! resolver, roots and shutdown future.
//!
//! What the worker shares with the API (the settings framework, connection
//! strings and TLS, the pool, error text, shutdown, the extension version
//! check, logging) is `postbox_runtime`'s; this crate depends on no other
//! binary's crate.
//!
//! # Layout
//! - [`config`]: the worker's settings (its `settings!` table), defaults,
//!   validation, and the files they point at.
//! - [`db`]: the worker's database sessions: their options, the pool.
//! - [`dispatch`]: the loop that claims, queues, starts, reaps and drains.
//! - [`schedule`]: the scheduling policy: per-endpoint and tenant limits, the
//!   fast lane, rate limits, claim pacing and the rooms a claim may take.
//! - [`wakeup`]: the wake-up protocol: the LISTEN connection, the flag,
//!   re-arming and NOTIFY pacing.
//! - [`claim`]: expansion, the claim, release and next-due, as calls of the
//!   extension's functions (sql/queue.sql); what a claimed delivery is.
//! - [`batch`]: a request's deliveries (one, or a batch) and what happens
//!   to a batch that fails.
//! - [`body`]: the request body, an event in its endpoint's envelope, or a
//!   batch of events.
//! - [`request`]: an attempt's headers, once: what it sends, and what the
//!   attempt log keeps of them.
//! - [`sign`]: the signature headers of an attempt.
//! - [`deliver`]: one HTTP attempt and what came back.
//! - [`resolve`]: SSRF-checked name resolution.
//! - [`retry`]: the retry schedule, jitter and Retry-After.
//! - [`ack`]: the outcome decision, and batched acknowledgements: attempt
//!   log, delivery state, endpoint health, auto-disable.
//! - [`metrics`]: Prometheus metrics and `/healthz`.
//! - [`check`]: `postbox-worker check`, readiness findings.
//! - [`purge`]: retention, `postbox.purge` on a schedule.
//! - [`liveness`]: the heartbeat, and the release of dead workers' claims.
//! - [`tasks`]: the background tasks, watched: the first to fail stops the
//!   worker; test hooks that make one panic (debug builds).
//! - [`backoff`]: doubling waits after failures.
//! - this file: [`run`], which wires them together, and [`RunError`].

pub mod ack;
pub mod backoff;
pub mod batch;
pub mod body;
pub mod check;
pub mod claim;
pub mod config;
pub mod db;
pub mod deliver;
pub mod dispatch;
pub mod liveness;
pub mod metrics;
pub mod purge;
pub mod request;
pub mod resolve;
pub mod retry;
pub mod schedule;
pub mod sign;
pub mod tasks;
pub mod wakeup;

pub use config::{Cli, Config, ConfigError};
pub use resolve::Resolve;
#[cfg(debug_assertions)]
#[doc(hidden)]
pub use tasks::test_hooks;

use deadpool_postgres::Pool;
use deliver::{Sender, SenderSettings};
use dispatch::Dispatcher;
use futures_util::FutureExt;
use metrics::Metrics;
use postbox_runtime::error::{pg_message, pool_message};
use postbox_runtime::{conninfo, shutdown, ExtensionError};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tasks::Failure;
use tokio::sync::mpsc;
use wakeup::Wakeup;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// Not installed, or a version this worker does not drive.
    #[error(transparent)]
    Extension(#[from] ExtensionError),
    #[error("database: {0}")]
    Db(String),
    #[error("metrics address: {0}")]
    Metrics(std::io::Error),
    #[error("{0}")]
    Deliver(#[from] deliver::DeliverError),
    /// Another live process has this worker id (at start, after waiting
    /// [`liveness::REGISTER_FOR`]; or it took this one over while running).
    #[error("heartbeat refused: {0}")]
    WorkerIdInUse(String),
    /// A background task (acknowledger, purger, heartbeat, LISTEN) panicked:
    /// the worker stopped, and exits non-zero.
    #[error("the {task} task panicked: {message}")]
    Panicked { task: &'static str, message: String },
}

impl From<liveness::BeatError> for RunError {
    fn from(e: liveness::BeatError) -> RunError {
        match e {
            liveness::BeatError::InUse(m) => RunError::WorkerIdInUse(m),
            liveness::BeatError::Db(m) => RunError::Db(m),
        }
    }
}

impl RunError {
    /// Errors a configuration change fixes: the binary exits 2 on these.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::Config(_) | RunError::Metrics(_) | RunError::WorkerIdInUse(_)
        ) || matches!(self, RunError::Extension(e) if e.is_config())
    }
}

/// Runs the worker until `shutdown` resolves, then stops claiming, lets
/// in-flight requests finish (or releases them after the shutdown timeout),
/// writes the last acknowledgements and returns. A background task that
/// panics, or a heartbeat refused because another process took this worker
/// id over, stops the worker the same way, and `run` returns that error.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config::Prepared { mut pg, tls, roots } = config.prepare()?;
    if let Some(warning) = conninfo::transport_warning(config.database_url.as_str()) {
        tracing::warn!("{warning}");
    }
    db::session_options(&mut pg);
    let pool =
        db::pool(&config, pg.clone(), tls.clone()).map_err(|e| RunError::Db(e.to_string()))?;
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
        http2: config.http2,
    })?);
    let metrics = Arc::new(Metrics::new(liveness::STALE_AFTER));
    // Registered before the first claim, so that a death is noticed.
    let me = liveness::Me::new(&config.worker_id);
    liveness::register(&pool, &me, &metrics, liveness::REGISTER_FOR).await?;
    let (stopper, stop) = shutdown::stop_flag(shutdown);
    let failure = Failure::new(stopper);
    if let Some(addr) = config.metrics_addr {
        let loop_limit = config.poll_interval + metrics::LOOP_GRACE;
        let bound = metrics::serve(
            addr,
            metrics.clone(),
            pool.clone(),
            stop.clone(),
            loop_limit,
        )
        .await
        .map_err(RunError::Metrics)?;
        tracing::info!(%bound, "metrics at /metrics, liveness at /healthz");
    }

    let wakeup = Wakeup::new(config.poll_interval, Instant::now());
    let listen = wakeup.listen(
        pg,
        tls,
        metrics.listen_polling.clone(),
        metrics.database_errors.clone(),
        stop.clone(),
    );
    let listener = listen.abort_handle();
    failure.watch("LISTEN", &me.worker_id, async move {
        match listen.await {
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => Ok(()),
        }
    });
    let (ack_tx, ack_rx) = mpsc::channel(ack::CHANNEL_SIZE);
    let policy = ack::DisablePolicy {
        after_failures: config.disable_after_failures,
        after: config.disable_after,
    };
    let acker = failure.watch(
        "acknowledger",
        &me.worker_id,
        ack::run_acker(pool.clone(), ack_rx, policy, metrics.clone()).map(Ok),
    );
    let purger = failure.watch(
        "purger",
        &me.worker_id,
        purge::run(
            pool.clone(),
            config.purge_interval,
            config.purge_batch as i32,
            metrics.clone(),
            stop.clone(),
        )
        .map(Ok),
    );
    // Beats until the drain is over: a worker finishing its requests is alive.
    let (beat_stop, beat_stop_rx) = tokio::sync::watch::channel(false);
    let heart = failure.watch(
        "heartbeat",
        &me.worker_id,
        liveness::run(
            pool.clone(),
            me.clone(),
            metrics.clone(),
            wakeup.waker(),
            beat_stop_rx,
        )
        .map(|r| r.map_err(RunError::from)),
    );
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
    match failure.take() {
        Some(e) => {
            tracing::error!("postbox-worker stopped: {e}");
            Err(e)
        }
        None => {
            tracing::info!("postbox-worker stopped");
            Ok(())
        }
    }
}

/// Checks what is installed; returns whether the database allows insecure
/// URLs (`postbox.allow_insecure_urls`, or the SQL flavour's settings
/// table), which the worker honours.
async fn check_database(pool: &Pool) -> Result<bool, RunError> {
    let db = pool
        .get()
        .await
        .map_err(|e| RunError::Db(pool_message(&e)))?;
    postbox_runtime::extension_version(&db).await?;
    Ok(db
        .query_one("SELECT postbox._allow_insecure_urls()", &[])
        .await
        .map_err(|e| RunError::Db(pg_message(&e)))?
        .get(0))
}
