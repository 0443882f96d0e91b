//! Liveness: each worker's heartbeat in `postbox.workers`, and the release
//! of dead workers' claims.
//!
//! A worker killed with SIGKILL cannot give back what it claimed; its leases
//! would hold those deliveries for minutes. Instead every worker calls
//! `postbox.worker_heartbeat` every [`HEARTBEAT_EVERY`]; the call also
//! releases the claims of any worker not seen for [`STALE_AFTER`] (and of
//! this worker's own previous process, when it restarts under the same id),
//! so the first retry of a stranded delivery comes within seconds. The rule
//! itself is in SQL (sql/delivery.sql), so all workers apply it alike.
//!
//! Two live processes must never share a worker id: each would take the
//! other for its own previous process and release its claims on every beat.
//! The heartbeat refuses a second live instance (SQLSTATE 55006). A process
//! refused at start waits a little over [`STALE_AFTER`] (its crashed
//! predecessor stops beating and goes stale) and then gives up; one refused
//! while running was taken over, and stops.

use crate::metrics::Metrics;
use deadpool_postgres::Pool;
use postbox_runtime::error::{pg_message, pool_message};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// Between heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A worker not seen for this long is dead: five missed heartbeats, so a
/// worker whose pool is busy for a moment is not taken for dead, and a
/// killed worker's claims are retried well within 10 s (the crash loop test).
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// A process whose first heartbeat is refused tries again for this long:
/// a little over [`STALE_AFTER`], so a crashed predecessor under the same id
/// has gone stale (and is taken over) before the new one gives up.
pub const REGISTER_FOR: Duration = Duration::from_secs(STALE_AFTER.as_secs() + 3);

/// SQLSTATE object_in_use: the heartbeat's refusal of a second live instance.
const IN_USE: &str = "55006";

#[derive(Debug, thiserror::Error)]
pub enum BeatError {
    /// Another live process has this worker id (the database's message).
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Db(String),
}

const HEARTBEAT: &str =
    "SELECT postbox.worker_heartbeat($1, $2, make_interval(secs => $3::float8))";
const STOPPED: &str = "SELECT postbox.worker_stopped($1, $2)";

/// This process in the registry: its worker id and a random instance id.
#[derive(Clone, Debug)]
pub struct Me {
    pub worker_id: String,
    pub instance: Uuid,
}

impl Me {
    pub fn new(worker_id: &str) -> Me {
        Me {
            worker_id: worker_id.to_string(),
            instance: Uuid::new_v4(),
        }
    }
}

/// One heartbeat; returns how many claims it released.
pub async fn beat(pool: &Pool, me: &Me, metrics: &Metrics) -> Result<i64, BeatError> {
    let db = pool
        .get()
        .await
        .map_err(|e| BeatError::Db(pool_message(&e)))?;
    let stmt = db
        .prepare_cached(HEARTBEAT)
        .await
        .map_err(|e| BeatError::Db(pg_message(&e)))?;
    let row = db
        .query_one(
            &stmt,
            &[&me.worker_id, &me.instance, &STALE_AFTER.as_secs_f64()],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c) if c.code() == IN_USE => BeatError::InUse(pg_message(&e)),
            _ => BeatError::Db(pg_message(&e)),
        })?;
    metrics.health.database_answered();
    Ok(row.get(0))
}

/// Registers this process (its first heartbeat, before it claims anything):
/// what a previous process under the same worker id had claimed is released.
/// While another live process has the id, tries again every
/// [`HEARTBEAT_EVERY`] for [`REGISTER_FOR`] (`wait`), then gives up.
pub async fn register(
    pool: &Pool,
    me: &Me,
    metrics: &Metrics,
    wait: Duration,
) -> Result<(), BeatError> {
    let until = Instant::now() + wait;
    let n = loop {
        match beat(pool, me, metrics).await {
            Err(BeatError::InUse(e)) if Instant::now() < until => {
                tracing::warn!(worker_id = %me.worker_id, error = %e,
                    "another process has this worker id; waiting for it to stop beating");
                tokio::time::sleep(HEARTBEAT_EVERY).await;
            }
            other => break other?,
        }
    };
    if n > 0 {
        tracing::warn!(
            released = n,
            "released what this worker's previous process had claimed"
        );
        metrics.released("restart", n);
    }
    Ok(())
}

/// Beats every [`HEARTBEAT_EVERY`] until `stop`; wakes the dispatcher when
/// it released claims, so they are taken at once. Ends with
/// [`BeatError::InUse`] when another process took this worker id over: this
/// one must stop claiming.
pub async fn run(
    pool: Pool,
    me: Me,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BeatError> {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        match beat(&pool, &me, &metrics).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    released = n,
                    "released the claims of workers not seen for {STALE_AFTER:?}"
                );
                metrics.released("dead_worker", n);
                wake.notify_one();
            }
            Err(e @ BeatError::InUse(_)) => {
                metrics.heartbeat_errors.inc();
                return Err(e);
            }
            Err(e) => {
                metrics.heartbeat_errors.inc();
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}

/// A clean stop: this process leaves the registry (its claims were given
/// back already).
pub async fn stopped(pool: &Pool, me: &Me) {
    if let Ok(db) = pool.get().await {
        if let Err(e) = db.execute(STOPPED, &[&me.worker_id, &me.instance]).await {
            tracing::debug!(error = %pg_message(&e), "could not leave the workers registry");
        }
    }
}
