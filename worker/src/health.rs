//! Acknowledgements, in batches: attempt rows, delivery state changes, endpoint
//! health and automatic disabling, all in one transaction per batch.

use crate::deliver::Attempt;
use crate::metrics::Metrics;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("database: {}", crate::claim::pg_message(.0))]
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
}

impl Verdict {
    /// The attempt log's `outcome`: what the attempt did to its delivery.
    pub fn logged_as(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Retry(_) => "retrying",
            Verdict::Failed | Verdict::Gone => "failed",
        }
    }

    /// The metrics label, which keeps 410 Gone apart.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Retry(_) => "retrying",
            Verdict::Failed => "failed",
            Verdict::Gone => "gone",
        }
    }
}

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
}

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
    const MAX_BATCH: usize = 1000;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        for attempt in 1.. {
            match write_batch(&pool, &batch, policy).await {
                Ok(disabled) => {
                    for (id, reason) in disabled {
                        tracing::warn!(endpoint_id = %id, %reason, "endpoint disabled");
                    }
                    for o in &batch {
                        metrics
                            .deliveries
                            .get_or_create(&vec![("outcome".into(), o.verdict.label().into())])
                            .inc();
                    }
                    break;
                }
                Err(e) if attempt < 30 => {
                    tracing::warn!(error = %e, batch = batch.len(), "acknowledgement failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    // The leases run out and the deliveries are attempted again: at least once.
                    tracing::error!(error = %e, batch = batch.len(), "acknowledgement dropped after 30 tries");
                    break;
                }
            }
        }
        batch.clear();
    }
}

#[derive(Default)]
struct Health {
    reset: bool,
    streak: i32,
    first_fail: Option<SystemTime>,
    last_at: Option<SystemTime>,
    last_ok: Option<SystemTime>,
    last_err: Option<String>,
}

async fn write_batch(
    pool: &Pool,
    batch: &[Outcome],
    policy: DisablePolicy,
) -> Result<Vec<(Uuid, String)>, AckError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;

    // 1. The attempt log.
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
    let stmt = tx
        .prepare_cached(
            "INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at,
                 duration_ms, status_code, response_excerpt, error, outcome, is_test, queued_at)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::uuid[], $4::uuid[], $5::int4[], $6::timestamptz[],
                 $7::int4[], $8::int4[], $9::text[], $10::text[], $11::text[], $12::bool[], $13::timestamptz[])",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &ids, &tenants, &endpoints, &events, &attempts, &started, &durations, &codes,
            &excerpts, &errors, &outcomes, &tests, &queued,
        ],
    )
    .await?;

    // 2. Succeeded deliveries leave the outbox; their record is the log.
    let done: Vec<i64> = batch
        .iter()
        .filter(|o| o.verdict == Verdict::Succeeded)
        .map(|o| o.delivery_id)
        .collect();
    if !done.is_empty() {
        let stmt = tx
            .prepare_cached("DELETE FROM postbox.outbox WHERE id = ANY($1)")
            .await?;
        tx.execute(&stmt, &[&done]).await?;
    }

    // 3. The rest: scheduled again, or finished as failed. A delivery
    //    cancelled meanwhile (endpoint deleted or disabled) stays cancelled.
    let rest: Vec<&Outcome> = batch
        .iter()
        .filter(|o| o.verdict != Verdict::Succeeded)
        .collect();
    if !rest.is_empty() {
        let ids: Vec<i64> = rest.iter().map(|o| o.delivery_id).collect();
        let attempts: Vec<i32> = rest.iter().map(|o| o.attempt).collect();
        let status: Vec<&str> = rest
            .iter()
            .map(|o| {
                if matches!(o.verdict, Verdict::Retry(_)) {
                    "pending"
                } else {
                    "failed"
                }
            })
            .collect();
        let next: Vec<Option<SystemTime>> = rest
            .iter()
            .map(|o| {
                if let Verdict::Retry(t) = o.verdict {
                    Some(t)
                } else {
                    None
                }
            })
            .collect();
        let at: Vec<SystemTime> = rest.iter().map(|o| o.result.started_at).collect();
        let codes: Vec<Option<i32>> = rest
            .iter()
            .map(|o| o.result.status.map(i32::from))
            .collect();
        let errors: Vec<Option<&str>> = rest.iter().map(|o| o.result.error.as_deref()).collect();
        let stmt = tx
            .prepare_cached(
                "UPDATE postbox.outbox o
                    SET attempts = u.attempts, status = u.status,
                        next_attempt_at = coalesce(u.next_at, o.next_attempt_at),
                        lease_until = NULL, leased_by = NULL, last_attempt_at = u.at,
                        last_status_code = u.code, last_error = u.err
                   FROM unnest($1::int8[], $2::int4[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int4[], $7::text[])
                        AS u(id, attempts, status, next_at, at, code, err)
                  WHERE o.id = u.id AND o.status = 'pending'",
            )
            .await?;
        tx.execute(
            &stmt,
            &[&ids, &attempts, &status, &next, &at, &codes, &errors],
        )
        .await?;
    }

    // 4. Endpoint health, from real (non-test) attempts in arrival order.
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
    let gone: Vec<Uuid> = batch
        .iter()
        .filter(|o| o.verdict == Verdict::Gone && !o.is_test)
        .map(|o| o.endpoint_id)
        .collect();
    let mut disabled: Vec<(Uuid, String)> = Vec::new();
    if !health.is_empty() {
        let ids: Vec<Uuid> = health.keys().copied().collect();
        let hs: Vec<&Health> = ids.iter().map(|id| &health[id]).collect();
        let reset: Vec<bool> = hs.iter().map(|h| h.reset).collect();
        let streak: Vec<i32> = hs.iter().map(|h| h.streak).collect();
        let first_fail: Vec<Option<SystemTime>> = hs.iter().map(|h| h.first_fail).collect();
        let last_at: Vec<Option<SystemTime>> = hs.iter().map(|h| h.last_at).collect();
        let last_ok: Vec<Option<SystemTime>> = hs.iter().map(|h| h.last_ok).collect();
        let last_err: Vec<Option<&str>> = hs.iter().map(|h| h.last_err.as_deref()).collect();
        let stmt = tx
            .prepare_cached(
                "UPDATE postbox.endpoints e
                    SET consecutive_failures = CASE WHEN h.reset THEN h.streak ELSE e.consecutive_failures + h.streak END,
                        failing_since = CASE WHEN h.streak = 0 THEN NULL
                                             WHEN h.reset THEN h.first_fail
                                             ELSE coalesce(e.failing_since, h.first_fail) END,
                        last_attempt_at = greatest(e.last_attempt_at, h.last_at),
                        last_success_at = coalesce(h.last_ok, e.last_success_at),
                        last_error = coalesce(h.last_err, e.last_error)
                   FROM unnest($1::uuid[], $2::bool[], $3::int4[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], $7::text[])
                        AS h(id, reset, streak, first_fail, last_at, last_ok, last_err)
                  WHERE e.id = h.id",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &ids,
                &reset,
                &streak,
                &first_fail,
                &last_at,
                &last_ok,
                &last_err,
            ],
        )
        .await?;

        // 5. Disable: at once on 410, or when the streak is long enough in
        //    both count and age. Their pending deliveries are cancelled, in a
        //    second statement run only when one was disabled: as one statement
        //    with the cancellation in a CTE, the generic plan scanned the whole
        //    outbox on every acknowledgement batch.
        let stmt = tx
            .prepare_cached(
                "UPDATE postbox.endpoints e
                    SET disabled_at = now(), updated_at = now(),
                        disabled_reason = CASE WHEN e.id = ANY($2)
                            THEN 'the endpoint answered 410 Gone'
                            ELSE format('%s consecutive failed attempts since %s', e.consecutive_failures,
                                        to_char(e.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS UTC')) END
                  WHERE e.id = ANY($1) AND e.disabled_at IS NULL
                    AND (e.id = ANY($2)
                         OR (e.consecutive_failures >= $3 AND e.failing_since <= now() - make_interval(secs => $4)))
                 RETURNING e.id, e.disabled_reason",
            )
            .await?;
        let rows = tx
            .query(
                &stmt,
                &[
                    &ids,
                    &gone,
                    &(policy.after_failures as i32),
                    &policy.after.as_secs_f64(),
                ],
            )
            .await?;
        disabled = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        // One endpoint at a time (disabling is rare): `endpoint_id = $1` keeps
        // even the generic plan on the endpoint's index range.
        for (id, reason) in &disabled {
            let stmt = tx
                .prepare_cached(
                    "UPDATE postbox.outbox
                        SET status = 'cancelled', lease_until = NULL, last_error = 'endpoint disabled: ' || $2
                      WHERE endpoint_id = $1 AND status = 'pending' AND NOT is_test",
                )
                .await?;
            tx.execute(&stmt, &[id, reason]).await?;
        }
    }
    tx.commit().await?;
    Ok(disabled)
}
