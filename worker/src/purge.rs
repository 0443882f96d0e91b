//! Retention: calls `postbox.purge` on a schedule.
//!
//! Each call is one short transaction that deletes at most
//! `POSTBOX_PURGE_BATCH` rows of each kind; a round repeats it until a call
//! finds less than that of every kind, so a large backlog of expired rows
//! goes in bounded steps rather than one long transaction. Several workers
//! may purge at once: the function skips rows another purge holds.

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use deadpool_postgres::Pool;
use postbox_runtime::error::{pg_message, pool_message};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// After a failed call, wait this long, doubling, before the next round.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// One round: calls until nothing of any kind is left at the batch size.
/// Returns how many rows it deleted.
pub async fn round(pool: &Pool, batch: i32, metrics: &Metrics) -> Result<u64, String> {
    let mut total = 0;
    loop {
        let db = pool.get().await.map_err(|e| pool_message(&e))?;
        let stmt = db
            .prepare_cached("SELECT kind, deleted FROM postbox.purge($1)")
            .await
            .map_err(|e| pg_message(&e))?;
        let started = Instant::now();
        let rows = db
            .query(&stmt, &[&batch])
            .await
            .map_err(|e| pg_message(&e))?;
        metrics
            .purge_seconds
            .inc_by(started.elapsed().as_secs_f64());
        let mut full = false;
        for r in rows {
            let (kind, n): (String, i64) = (r.get(0), r.get(1));
            if n > 0 {
                metrics
                    .purged
                    .get_or_create(&vec![("kind".to_string(), kind)])
                    .inc_by(n as u64);
                total += n as u64;
            }
            full |= n >= i64::from(batch);
        }
        if !full {
            return Ok(total);
        }
    }
}

/// Purges every `every` until `stop`; never runs when `every` is zero.
pub async fn run(
    pool: Pool,
    every: Duration,
    batch: i32,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    if every.is_zero() {
        return;
    }
    let mut backoff = RETRY_BACKOFF.clone();
    let mut wait = every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match round(&pool, batch, &metrics).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(deleted = n, "purged rows past their retention");
                }
                backoff.reset();
                wait = every;
            }
            Err(e) => {
                metrics.purge_errors.inc();
                wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in = ?wait, "purge failed");
            }
        }
    }
}
