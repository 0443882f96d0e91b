//! Acknowledgement: what an attempt means for its delivery ([`decide`]),
//! and writing outcomes in batches, one transaction each: the attempt log,
//! the deliveries' new state, endpoint health, and automatic disabling.
//!
//! Delivery tasks send an [`Outcome`] down a channel; [`run_acker`] takes
//! whatever has arrived (up to [`MAX_BATCH`]) and writes it with
//! [`write_batch`]: one call of `postbox.acknowledge` (sql/queue.sql), with
//! the policy (verdicts, health per endpoint) decided here. A batch that cannot be written
//! is retried with backoff, then dropped: the leases run out and the
//! deliveries are attempted again (at least once).

use crate::backoff::Backoff;
use crate::deliver::Attempt;
use crate::metrics::Metrics;
use crate::retry;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Outcomes waiting to be written: most of a second of deliveries at full
/// speed (about 14,000/s, docs/performance.md), so delivery tasks wait on
/// the acknowledgements only when the database falls behind for longer.
pub const CHANNEL_SIZE: usize = 10_000;

/// Most outcomes per transaction: large enough that a batch's fixed cost is
/// spread thin at full speed, small enough that one batch's arrays stay small.
pub const MAX_BATCH: usize = 1000;

/// Tries per batch before it is dropped (about a minute with the backoff).
const TRIES: u32 = 30;

/// Between tries: 50 ms, doubling, at most 2 s.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("database: {}", postbox_runtime::error::pg_message(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Retry(SystemTime),
    Failed,
    /// 410 Gone: the endpoint is disabled at once.
    Gone,
    /// A batch split in halves, sent again at once
    /// ([`crate::batch::splits`]); not an attempt of its deliveries.
    Split,
}

impl Verdict {
    /// The attempt log's `outcome`: what the attempt did to its delivery.
    pub fn logged_as(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Retry(_) => "retrying",
            Verdict::Failed | Verdict::Gone => "failed",
            Verdict::Split => "split",
        }
    }

    /// The metrics label, which keeps 410 Gone apart.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Retry(_) => "retrying",
            Verdict::Failed => "failed",
            Verdict::Gone => "gone",
            Verdict::Split => "split",
        }
    }
}

/// The outcome decision for attempt number `attempt` (from 1): 2xx
/// succeeds; 410 Gone disables the endpoint; a test send is attempted once;
/// anything else is retried per `gaps` (or the receiver's Retry-After on
/// 429 and 503), and fails after the last gap.
pub fn decide(
    result: &Attempt,
    attempt: u32,
    is_test: bool,
    gaps: &[Duration],
    now: SystemTime,
) -> Verdict {
    if result.succeeded() {
        Verdict::Succeeded
    } else if result.status == Some(410) {
        Verdict::Gone
    } else if is_test {
        Verdict::Failed
    } else {
        match retry::next_attempt(gaps, attempt, result.status, result.retry_after, now) {
            Some(at) => Verdict::Retry(at),
            None => Verdict::Failed,
        }
    }
}

/// A batch's attempt: its id and every delivery it carried, with its event,
/// in the body's order.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub id: Uuid,
    pub deliveries: Vec<(i64, Uuid)>,
}

/// One attempt's outcome, as the acker writes it: of one delivery, or of a
/// batch (whose first delivery and event are `delivery_id` and `event_id`).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: i64,
    pub tenant: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    /// This attempt's number, from 1.
    pub attempt: i32,
    pub is_test: bool,
    pub queued_at: SystemTime,
    pub result: Attempt,
    pub verdict: Verdict,
    pub batch: Option<BatchOutcome>,
}

impl Outcome {
    /// Its deliveries and their events.
    fn deliveries(&self) -> impl Iterator<Item = (i64, Uuid)> + '_ {
        let one = self
            .batch
            .is_none()
            .then_some((self.delivery_id, self.event_id));
        one.into_iter()
            .chain(self.batch.iter().flat_map(|b| b.deliveries.iter().copied()))
    }
}

/// When an endpoint is disabled for failing: its failure streak has both
/// this many attempts and this age.
#[derive(Debug, Clone, Copy)]
pub struct DisablePolicy {
    pub after_failures: u32,
    pub after: Duration,
}

/// Collects outcomes and writes them in batches until the channel closes.
pub async fn run_acker(
    pool: Pool,
    mut rx: mpsc::Receiver<Outcome>,
    policy: DisablePolicy,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while gather(&mut rx, &mut batch).await {
        let mut backoff = RETRY_BACKOFF;
        for attempt in 1.. {
            match write_batch(&pool, &batch, policy).await {
                Ok(disabled) => {
                    for d in disabled {
                        tracing::warn!(endpoint_id = %d.endpoint_id, reason = %d.reason, "endpoint disabled");
                    }
                    for o in &batch {
                        let n = o.batch.as_ref().map_or(1, |b| b.deliveries.len());
                        metrics
                            .deliveries
                            .get_or_create(&vec![("outcome".into(), o.verdict.label().into())])
                            .inc_by(n as u64);
                    }
                    break;
                }
                Err(e) if attempt < TRIES => {
                    metrics.database_errors.inc();
                    tracing::warn!(error = %e, batch = batch.len(), "acknowledgement failed; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => {
                    // The leases run out and the deliveries are attempted again: at least once.
                    tracing::error!(error = %e, batch = batch.len(), "acknowledgement dropped after {TRIES} tries");
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// Waits for an outcome, then takes whatever else has arrived, up to
/// [`MAX_BATCH`] in all. False once the channel is closed and empty.
async fn gather(rx: &mut mpsc::Receiver<Outcome>, batch: &mut Vec<Outcome>) -> bool {
    let Some(first) = rx.recv().await else {
        return false;
    };
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(o) => batch.push(o),
            Err(_) => break,
        }
    }
    true
}

/// An endpoint the batch disabled, and why.
#[derive(Debug)]
pub struct Disabled {
    pub endpoint_id: Uuid,
    pub reason: String,
}

/// Writes one batch in one call of `postbox.acknowledge` (sql/queue.sql),
/// one transaction: the attempt log, the deliveries' new state, endpoint
/// health and automatic disabling. Returns the endpoints it disabled.
async fn write_batch(
    pool: &Pool,
    batch: &[Outcome],
    policy: DisablePolicy,
) -> Result<Vec<Disabled>, AckError> {
    let db = pool.get().await?;
    let ids: Vec<i64> = batch.iter().map(|o| o.delivery_id).collect();
    let tenants: Vec<&str> = batch.iter().map(|o| o.tenant.as_str()).collect();
    let endpoints: Vec<Uuid> = batch.iter().map(|o| o.endpoint_id).collect();
    let events: Vec<Uuid> = batch.iter().map(|o| o.event_id).collect();
    let attempts: Vec<i32> = batch.iter().map(|o| o.attempt).collect();
    let started: Vec<SystemTime> = batch.iter().map(|o| o.result.started_at).collect();
    let durations: Vec<i32> = batch
        .iter()
        .map(|o| o.result.duration.as_millis().min(i32::MAX as u128) as i32)
        .collect();
    let codes: Vec<Option<i32>> = batch
        .iter()
        .map(|o| o.result.status.map(i32::from))
        .collect();
    let excerpts: Vec<Option<&str>> = batch.iter().map(|o| o.result.excerpt.as_deref()).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|o| o.result.error.as_deref()).collect();
    let outcomes: Vec<&str> = batch.iter().map(|o| o.verdict.logged_as()).collect();
    let tests: Vec<bool> = batch.iter().map(|o| o.is_test).collect();
    let queued: Vec<SystemTime> = batch.iter().map(|o| o.queued_at).collect();
    let headers: Vec<Option<&str>> = batch
        .iter()
        .map(|o| o.result.request_headers.as_deref())
        .collect();
    let batch_ids: Vec<Option<Uuid>> = batch
        .iter()
        .map(|o| o.batch.as_ref().map(|b| b.id))
        .collect();
    // Per delivery: its attempt (by position, from 1) and new state.
    let (mut d_attempts, mut d_ids, mut d_events) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d_statuses, mut d_next, mut d_split) = (Vec::new(), Vec::new(), Vec::new());
    for (i, o) in batch.iter().enumerate() {
        let next = match o.verdict {
            Verdict::Retry(t) => Some(t),
            _ => None,
        };
        for (id, event) in o.deliveries() {
            d_attempts.push(i as i32 + 1);
            d_ids.push(id);
            d_events.push(event);
            d_statuses.push(status_after(o.verdict));
            d_next.push(next);
            d_split.push(o.verdict == Verdict::Split);
        }
    }
    let health = health(batch);
    let h_ids: Vec<Uuid> = health.keys().copied().collect();
    let hs: Vec<&Health> = h_ids.iter().map(|id| &health[id]).collect();
    let reset: Vec<bool> = hs.iter().map(|h| h.reset).collect();
    let streak: Vec<i32> = hs.iter().map(|h| h.streak).collect();
    let first_fail: Vec<Option<SystemTime>> = hs.iter().map(|h| h.first_fail).collect();
    let last_at: Vec<Option<SystemTime>> = hs.iter().map(|h| h.last_at).collect();
    let last_ok: Vec<Option<SystemTime>> = hs.iter().map(|h| h.last_ok).collect();
    let last_err: Vec<Option<&str>> = hs.iter().map(|h| h.last_err.as_deref()).collect();
    let stmt = db.prepare_cached(ACKNOWLEDGE).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &ids,
                &tenants,
                &endpoints,
                &events,
                &attempts,
                &started,
                &durations,
                &codes,
                &excerpts,
                &errors,
                &outcomes,
                &tests,
                &queued,
                &headers,
                &batch_ids,
                &d_attempts,
                &d_ids,
                &d_events,
                &d_statuses,
                &d_next,
                &d_split,
                &h_ids,
                &reset,
                &streak,
                &first_fail,
                &last_at,
                &last_ok,
                &last_err,
                &gone(batch),
                &(policy.after_failures as i32),
                &policy.after.as_secs_f64(),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Disabled {
            endpoint_id: r.get(0),
            reason: r.get(1),
        })
        .collect())
}

/// The acknowledgement (sql/queue.sql), its arguments by name.
const ACKNOWLEDGE: &str = "SELECT * FROM postbox.acknowledge(
    ids => $1, tenants => $2, endpoint_ids => $3, event_ids => $4, attempts => $5,
    started_at => $6, durations_ms => $7, status_codes => $8, excerpts => $9, errors => $10,
    outcomes => $11, is_tests => $12, queued_at => $13, request_headers => $14, batch_ids => $15,
    d_attempts => $16, d_ids => $17, d_event_ids => $18, d_statuses => $19, d_next_at => $20,
    d_split => $21,
    h_ids => $22, h_reset => $23, h_streak => $24, h_first_fail => $25, h_last_at => $26,
    h_last_ok => $27, h_last_err => $28,
    gone => $29, disable_after_failures => $30, disable_after_seconds => $31)";

/// The outbox status an attempt leaves its delivery in; `None`: it
/// succeeded, and leaves the outbox (its record is the attempt log).
fn status_after(verdict: Verdict) -> Option<&'static str> {
    match verdict {
        Verdict::Succeeded => None,
        Verdict::Retry(_) | Verdict::Split => Some("pending"),
        _ => Some("failed"),
    }
}

/// An endpoint's health change from one batch.
#[derive(Debug, Default, PartialEq, Eq)]
struct Health {
    /// A success in this batch: the streak restarts from `streak`.
    reset: bool,
    /// Failures after the last success (or all of them, with no success).
    streak: i32,
    first_fail: Option<SystemTime>,
    last_at: Option<SystemTime>,
    last_ok: Option<SystemTime>,
    last_err: Option<String>,
}

/// Endpoint health from the batch's real (non-test) attempts, in arrival order.
fn health(batch: &[Outcome]) -> HashMap<Uuid, Health> {
    let mut health: HashMap<Uuid, Health> = HashMap::new();
    for o in batch.iter().filter(|o| !o.is_test) {
        let h = health.entry(o.endpoint_id).or_default();
        h.last_at = h.last_at.max(Some(o.result.started_at));
        if o.verdict == Verdict::Succeeded {
            h.reset = true;
            h.streak = 0;
            h.first_fail = None;
            h.last_ok = Some(o.result.started_at);
        } else {
            h.streak += 1;
            h.first_fail.get_or_insert(o.result.started_at);
            h.last_err = o.result.error.clone();
        }
    }
    health
}

/// Endpoints that answered 410 Gone to a real attempt.
fn gone(batch: &[Outcome]) -> Vec<Uuid> {
    batch
        .iter()
        .filter(|o| o.verdict == Verdict::Gone && !o.is_test)
        .map(|o| o.endpoint_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(secs)
    }

    fn attempt(status: Option<u16>, retry_after: Option<u64>) -> Attempt {
        Attempt {
            started_at: T0,
            duration: Duration::from_millis(3),
            status,
            retry_after: retry_after.map(Duration::from_secs),
            excerpt: None,
            error: (status != Some(200)).then(|| format!("HTTP {status:?}")),
            request_headers: None,
        }
    }

    #[test]
    fn the_outcome_decision() {
        let gaps = [Duration::from_secs(10), Duration::from_secs(100)];
        let now = at(1000);
        let decide = |status, retry_after, n, is_test| {
            decide(&attempt(status, retry_after), n, is_test, &gaps, now)
        };
        assert_eq!(decide(Some(200), None, 1, false), Verdict::Succeeded);
        assert_eq!(
            decide(Some(200), None, 1, true),
            Verdict::Succeeded,
            "tests succeed too"
        );
        assert_eq!(decide(Some(410), None, 1, false), Verdict::Gone);
        assert_eq!(
            decide(Some(410), None, 3, true),
            Verdict::Gone,
            "logged; never disables (see gone())"
        );
        assert_eq!(
            decide(Some(500), None, 1, true),
            Verdict::Failed,
            "a test send is attempted once"
        );
        assert_eq!(decide(None, None, 1, true), Verdict::Failed);
        // Retries follow the schedule (±20%), then fail.
        for (status, n, gap) in [(Some(500), 1, 10), (None, 2, 100), (Some(404), 1, 10)] {
            let Verdict::Retry(t) = decide(status, None, n, false) else {
                panic!("{status:?} attempt {n}: retried");
            };
            let wait = t.duration_since(now).unwrap().as_secs_f64();
            assert!(
                (0.8 * gap as f64..=1.2 * gap as f64).contains(&wait),
                "{wait}"
            );
        }
        assert_eq!(
            decide(Some(500), None, 3, false),
            Verdict::Failed,
            "after the last gap"
        );
        // 429 and 503 take the receiver's Retry-After; others do not.
        assert_eq!(
            decide(Some(429), Some(60), 1, false),
            Verdict::Retry(at(1060))
        );
        assert_eq!(
            decide(Some(503), Some(60), 2, false),
            Verdict::Retry(at(1060))
        );
        assert_ne!(
            decide(Some(500), Some(60), 1, false),
            Verdict::Retry(at(1060))
        );
        assert_eq!(
            decide(Some(429), Some(60), 3, false),
            Verdict::Failed,
            "not past the schedule"
        );
    }

    fn outcome(endpoint: u128, verdict: Verdict, started: u64, is_test: bool) -> Outcome {
        let mut result = attempt(
            Some(if verdict == Verdict::Succeeded {
                200
            } else {
                500
            }),
            None,
        );
        result.started_at = at(started);
        Outcome {
            delivery_id: started as i64,
            tenant: "t".into(),
            endpoint_id: Uuid::from_u128(endpoint),
            event_id: Uuid::nil(),
            attempt: 1,
            is_test,
            queued_at: T0,
            result,
            verdict,
            batch: None,
        }
    }

    #[test]
    fn health_follows_arrival_order_and_ignores_tests() {
        let retry = Verdict::Retry(at(99));
        let batch = [
            outcome(1, retry, 10, false),
            outcome(1, Verdict::Succeeded, 11, false),
            outcome(1, retry, 12, false),
            outcome(1, Verdict::Failed, 13, false),
            outcome(2, retry, 20, false),
            outcome(2, retry, 21, false),
            outcome(3, Verdict::Failed, 30, true),
            outcome(4, Verdict::Gone, 40, false),
            outcome(5, Verdict::Gone, 50, true),
        ];
        let h = health(&batch);
        assert_eq!(
            h[&Uuid::from_u128(1)],
            Health {
                reset: true,
                streak: 2,
                first_fail: Some(at(12)),
                last_at: Some(at(13)),
                last_ok: Some(at(11)),
                last_err: Some("HTTP Some(500)".into()),
            },
            "the streak restarts after the success"
        );
        let two = &h[&Uuid::from_u128(2)];
        assert_eq!(
            (two.reset, two.streak, two.first_fail),
            (false, 2, Some(at(20)))
        );
        assert!(
            !h.contains_key(&Uuid::from_u128(3)),
            "test sends leave health alone"
        );
        assert_eq!(
            gone(&batch),
            [Uuid::from_u128(4)],
            "a test's 410 disables nothing"
        );
        assert_eq!(status_after(retry), Some("pending"));
        assert_eq!(status_after(Verdict::Failed), Some("failed"));
        assert_eq!(status_after(Verdict::Gone), Some("failed"));
        assert_eq!(
            status_after(Verdict::Succeeded),
            None,
            "it leaves the outbox"
        );
    }

    #[tokio::test]
    async fn a_batch_is_what_has_arrived_up_to_the_maximum() {
        let (tx, mut rx) = mpsc::channel(CHANNEL_SIZE);
        for i in 0..(MAX_BATCH + 5) {
            tx.send(outcome(1, Verdict::Succeeded, i as u64, false))
                .await
                .unwrap();
        }
        let mut batch = Vec::new();
        assert!(gather(&mut rx, &mut batch).await);
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(batch[0].delivery_id, 0, "in arrival order");
        batch.clear();
        assert!(gather(&mut rx, &mut batch).await);
        assert_eq!(batch.len(), 5, "the rest, without waiting for more");
        batch.clear();
        drop(tx);
        assert!(!gather(&mut rx, &mut batch).await, "closed and empty: done");
    }
}
