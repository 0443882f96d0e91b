//! The dispatcher: the loop that expands, claims, queues, starts, reaps and
//! finally drains, using [`crate::schedule`] for what may be claimed and
//! started, and [`crate::wakeup`] for when to look again.
//!
//! One cycle ([`Dispatcher::step`]): start what the queues may start; if a
//! claim is worth it, expand emitted events and claim within the rooms the
//! schedule computes; queue what came back and start it. Between cycles the
//! loop waits for a completion, a NOTIFY or the deadline (the next
//! scheduled attempt, a rate limit's next token, or the poll interval).
//!
//! The hot path is `step` → `claim` → `enqueue` → `pump` → `deliver` →
//! `finish`, and the acknowledgement batch in [`crate::ack`]: no statement,
//! lock or allocation per delivery beyond the request itself.

use crate::ack::{self, Outcome};
use crate::backoff::Backoff;
use crate::batch::Request;
use crate::claim::{self, ClaimError, Claimed};
use crate::config::Config;
use crate::deliver::Sender;
use crate::metrics::Metrics;
use crate::schedule::{Schedule, Slot, CLAIM_GAP};
use crate::wakeup::{Next, Step, Timer, Wakeup};
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinError, JoinSet};

/// After a failed claim cycle (database down), wait this long before the
/// next, doubling up to the maximum.
const CYCLE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// After a failed expansion, wait this long before the next, doubling up to
/// the maximum: a broken expansion must not cost a warning and a failing
/// statement on every cycle, and claiming goes on meanwhile.
const EXPAND_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Wake this long after the next scheduled attempt, not at it: the claim's
/// `now()` must have passed it, or the wake-up finds nothing.
const AFTER_DUE: Duration = Duration::from_millis(1);

/// A request in flight: what it counts against, and its deliveries (to give
/// back if it must be aborted).
struct Running {
    slot: Slot,
    delivery_ids: Vec<i64>,
}

/// Expansion's pacing: when it last ran, and after a failure when it may
/// run again.
struct Expansion {
    last: Instant,
    retry_at: Instant,
    backoff: Backoff,
}

pub struct Dispatcher {
    cfg: Config,
    pool: Pool,
    sender: Arc<Sender>,
    metrics: Arc<Metrics>,
    ack: mpsc::Sender<Outcome>,
    /// Requests in flight; each returns its attempt's duration.
    tasks: JoinSet<Duration>,
    running: HashMap<Id, Running>,
    schedule: Schedule<Claimed>,
    wakeup: Wakeup,
    expansion: Expansion,
    /// The lease of the last claim batch received whole (see
    /// [`claim::Batch::lease_until`]).
    last_lease: Option<SystemTime>,
    /// A claim cycle failed: rows may be leased to this worker that it
    /// does not hold. The next cycle gives them back first.
    maybe_lost: bool,
}

impl Dispatcher {
    pub fn new(
        cfg: Config,
        pool: Pool,
        sender: Arc<Sender>,
        metrics: Arc<Metrics>,
        ack: mpsc::Sender<Outcome>,
        wakeup: Wakeup,
    ) -> Dispatcher {
        let now = Instant::now();
        Dispatcher {
            schedule: Schedule::new(cfg.limits(), now),
            cfg,
            pool,
            sender,
            metrics,
            ack,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            wakeup,
            expansion: Expansion {
                last: now,
                retry_at: now,
                backoff: EXPAND_BACKOFF,
            },
            last_lease: None,
            maybe_lost: false,
        }
    }

    /// Runs until `stop`; then [`Dispatcher::drain`] finishes the work.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = CYCLE_BACKOFF;
        loop {
            if *stop.borrow() {
                return;
            }
            self.metrics.health.dispatcher_ran();
            self.reap();
            self.wakeup.begin(Instant::now());
            let step = match self.step().await {
                Ok(s) => {
                    backoff.reset();
                    s
                }
                Err(e) => {
                    self.maybe_lost = true;
                    self.metrics.database_errors.inc();
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, "claim cycle failed; retrying in {wait:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            match self.wakeup.after(step, Instant::now()) {
                Next::Claim => continue,
                Next::Arm => {
                    let ok = self.wakeup.set_flag(&self.pool, true).await.is_ok();
                    if self.wakeup.armed(ok) == Next::Claim {
                        continue;
                    }
                }
                Next::Wait => {}
            }
            // Busy: completions wake the loop, and claims are paced by
            // CLAIM_GAP; only an idle loop asks the database when to look again.
            let deadline = if step == Step::Full {
                Instant::now() + CLAIM_GAP
            } else {
                self.deadline().await
            };
            let deadline = self.wakeup.deadline(step, deadline, Instant::now());
            if !self.wait(deadline, &mut stop).await {
                return;
            }
        }
    }

    /// Waits for a completion, a NOTIFY whose turn has come, or `deadline`.
    /// False when `stop` fired.
    async fn wait(&mut self, deadline: Instant, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            let until = self.wakeup.sleep_until(deadline, Instant::now());
            tokio::select! {
                _ = self.wakeup.notification() => {
                    // Every emit NOTIFYs while the flag is set: clear it at once.
                    let _ = self.wakeup.set_flag(&self.pool, false).await;
                    if self.wakeup.on_notify(Instant::now()) {
                        return true;
                    }
                }
                Some(res) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finish(res);
                    return true;
                }
                _ = tokio::time::sleep_until(until.into()) => {
                    match self.wakeup.timer(deadline, Instant::now()) {
                        Some(Timer::Deadline) => {
                            let _ = self.wakeup.set_flag(&self.pool, false).await;
                            return true;
                        }
                        Some(Timer::Notify) => return true,
                        None => {}
                    }
                }
                _ = stop.changed() => return false,
            }
        }
    }

    /// One cycle: expand events, claim what there is room for, start it.
    async fn step(&mut self) -> Result<Step, ClaimError> {
        self.pump();
        let now = Instant::now();
        let Some(limit) = self.schedule.claim_size(now, self.wakeup.claim_forced()) else {
            // Full, or not worth a claim yet: expansion still goes on, so
            // new events are routed while every slot is taken.
            if now.saturating_duration_since(self.expansion.last) >= CLAIM_GAP {
                let db = self.pool.get().await?;
                self.expand(&db).await;
            }
            return Ok(Step::Full);
        };
        let db = self.pool.get().await?;
        if self.maybe_lost {
            let n = claim::release_lost(&db, &self.cfg.worker_id, self.last_lease).await?;
            if n > 0 {
                tracing::warn!(
                    released = n,
                    "gave back claims this worker never received whole"
                );
                self.metrics.released("lost", n as i64);
            }
            self.maybe_lost = false;
        }
        self.expand(&db).await;
        let now = Instant::now();
        self.schedule.prune(now);
        let rooms = self.schedule.rooms(now);
        let claim::Batch { jobs, lease_until } = claim::claim(
            &db,
            &self.cfg.worker_id,
            limit,
            &rooms,
            self.cfg.claim_max_bytes,
            self.cfg.lease,
        )
        .await?;
        if lease_until.is_some() {
            self.last_lease = lease_until;
        }
        let bytes: usize = jobs.iter().map(|j| j.data.len()).sum();
        self.schedule.claimed(
            Instant::now(),
            jobs.iter().map(|j| j.endpoint_id),
            jobs.len(),
            bytes,
        );
        self.wakeup.claimed();
        if jobs.is_empty() {
            return Ok(Step::Nothing);
        }
        let _ = self.wakeup.set_flag(&self.pool, false).await;
        let now = Instant::now();
        let mut excess = Vec::new();
        for job in jobs {
            if let Err(job) = self.schedule.enqueue(job, now) {
                excess.push(job.id);
            }
        }
        if !excess.is_empty() {
            // Claimed with the default room before the endpoint's own limits
            // were known: give back what it may not have, at once.
            if let Err(e) = claim::release(&db, &excess, &self.cfg.worker_id).await {
                tracing::warn!(error = %e, "could not give back excess claims; their leases will expire");
            }
        }
        drop(db);
        self.pump();
        Ok(Step::Started)
    }

    /// Expands emitted rows into deliveries. Never fails the cycle: claiming
    /// and delivering what is queued must not depend on expansion; failures
    /// are counted, logged and retried with backoff.
    async fn expand(&mut self, db: &deadpool_postgres::Client) {
        let now = Instant::now();
        if now < self.expansion.retry_at {
            return;
        }
        self.expansion.last = now;
        for _ in 0..claim::EXPAND_ROUNDS {
            match claim::expand(db, claim::EXPAND_BATCH).await {
                Ok(n) if n < claim::EXPAND_BATCH => break,
                Ok(_) => {}
                Err(e) => {
                    self.metrics.expand_errors.inc();
                    let wait = self.expansion.backoff.next_wait();
                    tracing::warn!(error = %e, retry_in = ?wait,
                        "expanding events failed; claiming goes on");
                    self.expansion.retry_at = Instant::now() + wait;
                    return;
                }
            }
        }
        self.expansion.backoff.reset();
    }

    /// Starts what the schedule lets start.
    fn pump(&mut self) {
        let Dispatcher {
            schedule,
            tasks,
            running,
            sender,
            ack,
            metrics,
            ..
        } = self;
        schedule.pump(
            |jobs, slot| {
                let delivery_ids = jobs.iter().map(|j| j.id).collect();
                let request = Request::new(jobs);
                let handle = tasks.spawn(deliver(
                    request,
                    sender.clone(),
                    ack.clone(),
                    metrics.clone(),
                ));
                running.insert(handle.id(), Running { slot, delivery_ids });
            },
            Instant::now(),
        );
    }

    /// A request ended (or was aborted): its slot is free; start more.
    fn finish(&mut self, res: Result<(Id, Duration), JoinError>) {
        let (id, took) = match &res {
            Ok((id, took)) => (*id, Some(*took)),
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(error = %e, "delivery task panicked; its lease will expire and it will be retried");
                }
                (e.id(), None)
            }
        };
        if let Some(r) = self.running.remove(&id) {
            self.schedule.finish(r.slot, took, Instant::now());
        }
        self.pump();
    }

    fn reap(&mut self) {
        while let Some(res) = self.tasks.try_join_next_with_id() {
            self.finish(res);
        }
    }

    /// When to look again without a wake-up: the next scheduled attempt, a
    /// rate limit's next token, or the poll interval, whichever is first.
    async fn deadline(&self) -> Instant {
        let now = Instant::now();
        let mut deadline = now + self.cfg.poll_interval;
        if let Ok(db) = self.pool.get().await {
            if let Ok(Some(at)) = claim::next_due(&db, &self.schedule.blocked()).await {
                if let Ok(wait) = at.duration_since(SystemTime::now()) {
                    deadline = deadline.min(now + wait + AFTER_DUE);
                }
            }
        }
        if let Some(token) = self.schedule.next_token(now) {
            deadline = deadline.min(token);
        }
        if let Some(batch) = self.schedule.next_batch_due() {
            deadline = deadline.min(batch);
        }
        deadline
    }

    /// Lets in-flight requests finish within the shutdown timeout, then
    /// aborts the rest and gives their claims back; then clears the flag.
    pub async fn drain(&mut self) {
        let deadline = Instant::now() + self.cfg.shutdown_timeout;
        // Claimed but not started: give back at once.
        let queued: Vec<i64> = self
            .schedule
            .take_queued()
            .into_iter()
            .map(|j| j.id)
            .collect();
        if !queued.is_empty() {
            self.release(&queued).await;
        }
        tracing::info!(
            in_flight = self.tasks.len(),
            "finishing in-flight deliveries"
        );
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(res) = self.tasks.join_next_with_id() => self.finish(res),
                _ = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
        if !self.tasks.is_empty() {
            let ids: Vec<i64> = self
                .running
                .values()
                .flat_map(|r| r.delivery_ids.iter().copied())
                .collect();
            self.tasks.abort_all();
            while let Some(res) = self.tasks.join_next_with_id().await {
                self.finish(res);
            }
            self.release(&ids).await;
        }
    }

    /// The pool, for what runs after the dispatcher is gone.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn release(&self, ids: &[i64]) {
        match self.pool.get().await {
            Ok(db) => match claim::release(&db, ids, &self.cfg.worker_id).await {
                Ok(n) => tracing::info!(released = n, "released unfinished deliveries"),
                Err(e) => tracing::warn!(error = %e, "could not release; their leases will expire"),
            },
            Err(e) => tracing::warn!(error = %e, "could not release; their leases will expire"),
        }
    }
}

/// One request: the attempt, its outcome decided (a failed batch maybe
/// split: [`crate::batch::splits`]), and the outcome sent to the
/// acknowledgement pipeline. Returns the attempt's duration.
async fn deliver(
    request: Request,
    sender: Arc<Sender>,
    ack: mpsc::Sender<Outcome>,
    metrics: Arc<Metrics>,
) -> Duration {
    metrics.in_flight.inc();
    let job = request.first();
    let opts = &job.endpoint.options;
    let result = sender.send(&request, opts).await;
    let took = result.duration;
    metrics.in_flight.dec();
    metrics.attempt_seconds.observe(took.as_secs_f64());
    let attempt = job.attempts + 1;
    let mut verdict = ack::decide(
        &result,
        attempt as u32,
        job.is_test,
        opts.retry_gaps(),
        SystemTime::now(),
    );
    if crate::batch::splits(request.jobs.len(), result.status, verdict) {
        verdict = ack::Verdict::Split;
    }
    tracing::debug!(
        delivery_id = job.id, endpoint_id = %job.endpoint_id, attempt, status = ?result.status,
        error = ?result.error, outcome = verdict.label(), events = request.jobs.len(), "attempt"
    );
    let outcome = Outcome {
        delivery_id: job.id,
        tenant: job.tenant.clone(),
        endpoint_id: job.endpoint_id,
        event_id: job.event_id,
        attempt,
        is_test: job.is_test,
        queued_at: request
            .jobs
            .iter()
            .map(|j| j.queued_at)
            .min()
            .unwrap_or(job.queued_at),
        batch: request.batch_id.map(|id| ack::BatchOutcome {
            id,
            deliveries: request.jobs.iter().map(|j| (j.id, j.event_id)).collect(),
        }),
        result,
        verdict,
    };
    let _ = ack.send(outcome).await;
    took
}
