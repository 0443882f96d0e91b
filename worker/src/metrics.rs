//! Prometheus metrics at `/metrics` and a liveness answer at `/healthz`.
//!
//! `/healthz` answers 200 only while the database answered a heartbeat
//! within the heartbeat's staleness limit (the others take this worker for
//! dead after that; `liveness::STALE_AFTER`, which `run` passes to
//! [`Metrics::new`]) and the dispatcher's loop ran within the poll interval
//! plus [`LOOP_GRACE`]; 503 with the reason otherwise ([`Health`]).
//!
//! Every part of the worker records here; this module depends on none of
//! them.
//!
//! The server is a minimal HTTP/1.1 responder: scrapes are rare and small,
//! so it does not need a full HTTP stack.

use deadpool_postgres::Pool;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Labels = Vec<(String, String)>;

/// Attempt durations: from 1 ms, doubling, 16 buckets (to about 33 s): a
/// local receiver answers in about a millisecond, a timeout takes the
/// default 15 s.
const ATTEMPT_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 16);

pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<Labels, Counter>,
    pub attempt_seconds: Histogram,
    pub due: Gauge,
    pub oldest_due_seconds: Gauge<f64, AtomicU64>,
    pub in_flight: Gauge,
    pub expand_errors: Counter,
    pub database_errors: Counter,
    pub purged: Family<Labels, Counter>,
    pub purge_seconds: Counter<f64, AtomicU64>,
    pub purge_errors: Counter,
    pub released_claims: Family<Labels, Counter>,
    pub heartbeat_errors: Counter,
    pub listen_polling: Gauge,
    pub health: Health,
}

/// A dispatcher loop may take this long beyond the poll interval (its
/// longest idle wait) before `/healthz` calls it stuck: a slow claim or a
/// database outage's backoff (at most 5 s) stays well within it.
pub const LOOP_GRACE: Duration = Duration::from_secs(30);

/// What `/healthz` answers from: when the database last answered a
/// heartbeat, and when the dispatcher's loop last went round. Times are
/// milliseconds since the worker started (0: not yet), so they fit atomics.
pub struct Health {
    started: Instant,
    beat_ms: AtomicU64,
    loop_ms: AtomicU64,
    /// A heartbeat older than this is stale: the others take this worker
    /// for dead.
    stale: Duration,
}

impl Health {
    fn new(stale: Duration) -> Health {
        Health {
            started: Instant::now(),
            beat_ms: AtomicU64::new(0),
            loop_ms: AtomicU64::new(0),
            stale,
        }
    }

    fn since_start(&self) -> u64 {
        self.started.elapsed().as_millis().max(1) as u64
    }

    /// A heartbeat succeeded.
    pub fn database_answered(&self) {
        self.beat_ms.store(self.since_start(), Ordering::Relaxed);
    }

    /// The dispatcher's loop went round.
    pub fn dispatcher_ran(&self) {
        self.loop_ms.store(self.since_start(), Ordering::Relaxed);
    }

    /// Healthy now, or why not (see [`verdict`]).
    pub fn check(&self, loop_limit: Duration) -> Result<(), String> {
        let at = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        verdict(
            self.started.elapsed(),
            at(self.beat_ms.load(Ordering::Relaxed)),
            at(self.loop_ms.load(Ordering::Relaxed)),
            self.stale,
            loop_limit,
        )
    }
}

/// The health rule, with times since the worker started: the database
/// answered a heartbeat within `stale`, and the dispatcher's loop ran
/// within `loop_limit` (counted from the start until it first runs).
pub fn verdict(
    now: Duration,
    beat: Option<Duration>,
    looped: Option<Duration>,
    stale: Duration,
    loop_limit: Duration,
) -> Result<(), String> {
    let ago = |t: Option<Duration>| now.saturating_sub(t.unwrap_or_default());
    match beat {
        None => return Err("the database has not answered a heartbeat yet".into()),
        Some(_) if ago(beat) > stale => {
            return Err(format!(
                "the database has not answered a heartbeat for {} s",
                ago(beat).as_secs()
            ))
        }
        Some(_) => {}
    }
    if ago(looped) > loop_limit {
        return Err(format!(
            "the dispatcher has not run for {} s",
            ago(looped).as_secs()
        ));
    }
    Ok(())
}

impl Metrics {
    /// `heartbeat_stale_after`: how old a heartbeat may be before the
    /// others take this worker for dead (`liveness::STALE_AFTER`).
    pub fn new(heartbeat_stale_after: Duration) -> Metrics {
        let mut registry = Registry::with_prefix("postbox");
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by outcome (succeeded, retrying, failed, gone)",
            deliveries.clone(),
        );
        let attempt_seconds = Histogram::new(exponential_buckets(
            ATTEMPT_BUCKETS.0,
            ATTEMPT_BUCKETS.1,
            ATTEMPT_BUCKETS.2,
        ));
        registry.register(
            "attempt_duration_seconds",
            "Time from sending a request to its response or error",
            attempt_seconds.clone(),
        );
        let due = Gauge::default();
        registry.register(
            "deliveries_due",
            "Deliveries due now and not claimed, emitted rows not yet expanded counting once (each kind counted up to 100,000)",
            due.clone(),
        );
        let oldest_due_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_due_age_seconds",
            "Age of the oldest due, unclaimed delivery",
            oldest_due_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "HTTP requests in flight in this worker",
            in_flight.clone(),
        );
        let expand_errors = Counter::default();
        registry.register(
            "expand_errors",
            "Failed expansions of emitted events (claiming and delivering go on)",
            expand_errors.clone(),
        );
        let database_errors = Counter::default();
        registry.register(
            "database_errors",
            "Failed claim cycles, acknowledgement writes and LISTEN connections (each retried with backoff): an outage shows here",
            database_errors.clone(),
        );
        let purged = Family::<Labels, Counter>::default();
        registry.register(
            "purged_rows",
            "Rows past their retention deleted by postbox.purge, by kind",
            purged.clone(),
        );
        let purge_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "purge_seconds",
            "Time spent in postbox.purge calls",
            purge_seconds.clone(),
        );
        let purge_errors = Counter::default();
        registry.register(
            "purge_errors",
            "Failed purge calls (retried with backoff)",
            purge_errors.clone(),
        );
        let released_claims = Family::<Labels, Counter>::default();
        registry.register(
            "released_claims",
            "Claims given back for others to take at once, by reason: dead_worker (a worker stopped heartbeating), restart (this worker's previous process), lost (a claim whose answer this worker never read)",
            released_claims.clone(),
        );
        let heartbeat_errors = Counter::default();
        registry.register(
            "heartbeat_errors",
            format!(
                "Failed heartbeats: a worker not seen for {heartbeat_stale_after:?} is taken for dead by the others",
            ),
            heartbeat_errors.clone(),
        );
        let listen_polling = Gauge::default();
        registry.register(
            "listen_polling",
            "1 when NOTIFY wake-ups cannot reach this worker (its LISTEN goes through a pooler that does not keep sessions) and it only polls",
            listen_polling.clone(),
        );
        Metrics {
            health: Health::new(heartbeat_stale_after),
            listen_polling,
            released_claims,
            heartbeat_errors,
            expand_errors,
            database_errors,
            purged,
            purge_seconds,
            purge_errors,
            registry,
            deliveries,
            attempt_seconds,
            due,
            oldest_due_seconds,
            in_flight,
        }
    }

    /// Claims given back for others to take at once, by reason.
    pub fn released(&self, reason: &str, n: i64) {
        self.released_claims
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc_by(n.max(0) as u64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Refreshes the gauges that come from the database.
    ///
    /// Runs every few seconds in every worker, so it must not cost in
    /// proportion to the backlog (counting 500,000 stuck rows every 5 s was
    /// a seventh of PostgreSQL's CPU in the isolation benchmark).
    pub async fn refresh(&self, pool: &Pool) -> Result<(), deadpool_postgres::PoolError> {
        let db = pool.get().await?;
        let row = db
            .query_one(REFRESH, &[&DUE_CAP])
            .await
            .map_err(deadpool_postgres::PoolError::Backend)?;
        self.due.set(row.get::<_, i64>(0));
        self.oldest_due_seconds
            .set(row.get::<_, Option<f64>>(1).unwrap_or(0.0).max(0.0));
        Ok(())
    }
}

/// The gauges' statement ($1 = DUE_CAP; sql/queue.sql: `queue_gauges`,
/// which stays cheap with a large backlog).
pub const REFRESH: &str = "SELECT due, oldest_age_seconds FROM postbox.queue_gauges($1)";

/// The due gauge counts at most this many rows of each kind: enough to tell
/// a backlog apart, while a scrape never reads a large one whole.
const DUE_CAP: i64 = 100_000;

/// How often the database gauges are refreshed: about a scrape interval.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A scrape's request head: read at most this many bytes, for at most
/// this long (scrapes are small; anything else is not a scraper).
const REQUEST_HEAD_BYTES: usize = 4096;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves until `stop`; gauges refresh every
/// [`REFRESH_EVERY`] meanwhile. `loop_limit`: how long the dispatcher's
/// loop may go without running before `/healthz` fails.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    pool: Pool,
    mut stop: watch::Receiver<bool>,
    loop_limit: Duration,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let m = metrics.clone();
    let mut stop2 = stop.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = m.refresh(&pool).await {
                tracing::debug!(error = %e, "metrics refresh failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
                _ = stop2.changed() => return,
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = stop.changed() => return,
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; REQUEST_HEAD_BYTES];
                let mut n = 0;
                while n < buf.len() {
                    match tokio::time::timeout(REQUEST_TIMEOUT, sock.read(&mut buf[n..])).await {
                        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                        Ok(Ok(k)) => {
                            n += k;
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, ctype, body) = match path {
                    "/metrics" => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        metrics.render(),
                    ),
                    "/healthz" => match metrics.health.check(loop_limit) {
                        Ok(()) => ("200 OK", "text/plain", "ok\n".to_string()),
                        Err(why) => (
                            "503 Service Unavailable",
                            "text/plain",
                            format!("unhealthy: {why}\n"),
                        ),
                    },
                    _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
                };
                let resp = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(32);
    const STALE: Duration = Duration::from_secs(5);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn healthy_while_the_database_answers_and_the_loop_runs() {
        assert_eq!(
            verdict(s(100), Some(s(99)), Some(s(100)), STALE, LIMIT),
            Ok(())
        );
        assert_eq!(
            verdict(s(100), Some(s(95)), Some(s(68)), STALE, LIMIT),
            Ok(()),
            "both at their limits"
        );
        assert_eq!(
            verdict(s(10), Some(s(9)), None, STALE, LIMIT),
            Ok(()),
            "the loop not started yet, within its limit from the start"
        );
    }

    #[test]
    fn unhealthy_without_heartbeats_or_a_loop() {
        let why = verdict(s(100), Some(s(94)), Some(s(100)), STALE, LIMIT).unwrap_err();
        assert!(why.contains("database") && why.contains("6 s"), "{why}");
        let why = verdict(s(1), None, None, STALE, LIMIT).unwrap_err();
        assert!(why.contains("database"), "{why}");
        let why = verdict(s(100), Some(s(100)), Some(s(67)), STALE, LIMIT).unwrap_err();
        assert!(why.contains("dispatcher") && why.contains("33 s"), "{why}");
        let why = verdict(s(40), Some(s(40)), None, STALE, LIMIT).unwrap_err();
        assert!(why.contains("dispatcher"), "never ran: {why}");
    }
}
