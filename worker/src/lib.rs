//! postbox-worker: turns the outbox into signed HTTP requests.
//!
//! [`run`] is the whole worker; the binary only parses configuration and
//! waits for a signal. Tests drive [`run`] in-process with their own
//! resolver, roots and shutdown future.
//!
//! # Layout
//! - [`config`]: flags, environment, TOML file; validation.
//! - [`listen`]: the LISTEN connection (a wake-up hint, never relied on).
//! - [`claim`]: expansion of events, fair claims with a lease, the wake-up flag.
//! - [`deliver`]: SSRF-checked resolution and one HTTP attempt.
//! - [`sign`]: the signature headers of an attempt.
//! - [`retry`]: the retry schedule, jitter and Retry-After.
//! - [`health`]: batched acknowledgements, endpoint health, auto-disable.
//! - [`metrics`]: Prometheus metrics and `/healthz`.
//! - [`shutdown`]: signals and the stop flag.
//! - this file: the dispatcher loop that ties them together.

pub mod claim;
pub mod config;
pub mod deliver;
pub mod health;
pub mod listen;
pub mod metrics;
pub mod retry;
pub mod shutdown;
pub mod sign;

pub use config::{Cli, Config, ConfigError};
pub use deliver::Resolve;

use claim::{ClaimError, Claimed};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use deliver::Sender;
use health::{DisablePolicy, Outcome, Verdict};
use metrics::Metrics;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{Id, JoinSet};
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Extension versions this worker can drive.
pub const SUPPORTED_EXTENSION_VERSIONS: &[&str] = &["0.2.0"];

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

/// Runs the worker until `shutdown` resolves, then stops claiming, lets
/// in-flight requests finish (or releases them after the shutdown timeout),
/// writes the last acknowledgements and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let mut pg: tokio_postgres::Config = config
        .database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| RunError::Db(e.to_string()))?;
    // Lets operators find (and tests terminate) the worker's sessions.
    pg.application_name("postbox-worker");
    // The worker runs the same few statements with new arrays each time;
    // custom plans would re-plan every claim and ack (measured: a fifth of
    // PostgreSQL's CPU), and the generic ones are as good here.
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c plan_cache_mode=force_generic_plan"),
        _ => "-c plan_cache_mode=force_generic_plan".to_string(),
    };
    pg.options(&options);
    let pg_listen = pg.clone();
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.db_pool_size)
        .build()
        .map_err(|e| RunError::Db(e.to_string()))?;
    let db = pool.get().await.map_err(|e| RunError::Db(e.to_string()))?;
    let version: Option<String> = db
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'postbox'",
            &[],
        )
        .await
        .map_err(|e| RunError::Db(claim::pg_message(&e)))?
        .map(|r| r.get(0));
    match version {
        None => return Err(RunError::NoExtension),
        Some(v) if !SUPPORTED_EXTENSION_VERSIONS.contains(&v.as_str()) => {
            return Err(RunError::UnsupportedExtension(v))
        }
        Some(_) => {}
    }
    let db_insecure: bool = db
        .query_one("SELECT coalesce(current_setting('postbox.allow_insecure_urls', true), 'off') IN ('on', 'true', '1', 'yes')", &[])
        .await
        .map_err(|e| RunError::Db(claim::pg_message(&e)))?
        .get(0);
    drop(db);
    let allow_private = config.allow_private_targets || db_insecure;
    if allow_private {
        tracing::warn!("private and http targets are allowed: for local development only");
    }

    let mut roots = config.root_certificates.clone();
    for path in &config.extra_root_certs {
        let pem = std::fs::read(path).map_err(|e| ConfigError::File {
            path: path.clone(),
            source: e,
        })?;
        roots.extend(
            reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| deliver::DeliverError::Client(e.to_string()))?,
        );
    }
    let sender = Arc::new(Sender::new(
        config.resolver.clone(),
        roots,
        allow_private,
        config.request_timeout,
        config.connect_timeout,
        config.max_request_time(),
    )?);
    let metrics = Arc::new(Metrics::new());
    let stop = shutdown::watch_for(shutdown);
    if let Some(addr) = config.metrics_addr {
        let bound = metrics::serve(addr, metrics.clone(), pool.clone(), stop.clone())
            .await
            .map_err(RunError::Metrics)?;
        tracing::info!(%bound, "metrics at /metrics, liveness at /healthz");
    }

    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen::run(pg_listen, wake.clone(), stop.clone()));
    let (ack_tx, ack_rx) = mpsc::channel(10_000);
    let policy = DisablePolicy {
        after_failures: config.disable_after_failures,
        after: config.disable_after,
    };
    let acker = tokio::spawn(health::run_acker(
        pool.clone(),
        ack_rx,
        policy,
        metrics.clone(),
    ));
    tracing::info!(worker_id = %config.worker_id, max_in_flight = config.max_in_flight, "postbox-worker started");

    let mut d = Dispatcher {
        cfg: config,
        pool,
        sender,
        metrics,
        ack: ack_tx,
        wake,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        in_flight: HashMap::new(),
        queues: HashMap::new(),
        queued: 0,
        latency: HashMap::new(),
        buckets: HashMap::new(),
        waiting: false,
        last_claim: Instant::now(),
        claimed_from: HashSet::new(),
        notified: false,
    };
    d.run(stop).await;
    d.drain().await;
    let pool = d.pool.clone();
    drop(d); // closes the acknowledgement channel: the acker flushes and ends
    let _ = acker.await;
    listener.abort();
    if let Ok(db) = pool.get().await {
        let _ = claim::set_waiting(&db, false).await;
    }
    tracing::info!("postbox-worker stopped");
    Ok(())
}

/// A token bucket for an endpoint's `rate_limit_per_s`: one second's burst.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + self.rate * now.duration_since(self.at).as_secs_f64())
            .min(self.rate.max(1.0));
        self.at = now;
    }
}

/// Endpoints answering faster than this on average may have a few claimed
/// deliveries queued locally (up to 3x their in-flight limit), so claims come
/// in large batches; slow or stuck endpoints never do.
const FAST_ENDPOINT: Duration = Duration::from_millis(50);

/// While busy, claim at least this often: work for endpoints this worker
/// holds nothing of is found within this time even when no queue runs low.
const CLAIM_GAP: Duration = Duration::from_millis(10);

/// What one claim cycle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Started,
    /// Nothing claimable right now.
    Nothing,
    /// Too little free room to be worth a claim.
    Full,
}

struct Dispatcher {
    cfg: Config,
    pool: Pool,
    sender: Arc<Sender>,
    metrics: Arc<Metrics>,
    ack: mpsc::Sender<Outcome>,
    wake: Arc<Notify>,
    /// Requests in flight; each returns its attempt's duration.
    tasks: JoinSet<Duration>,
    /// Task → (endpoint, delivery), for the per-endpoint counts and releases.
    running: HashMap<Id, (Uuid, i64)>,
    /// Per endpoint: requests in flight, and its in-flight limit.
    in_flight: HashMap<Uuid, (u32, u32)>,
    /// Claimed deliveries of endpoints that answer fast, waiting for a slot.
    queues: HashMap<Uuid, VecDeque<Claimed>>,
    queued: usize,
    /// Recent attempt time per endpoint (moving average).
    latency: HashMap<Uuid, Duration>,
    buckets: HashMap<Uuid, Bucket>,
    /// Whether this worker has set the wake-up flag.
    waiting: bool,
    /// When the last claim ran, and the endpoints it returned work for.
    last_claim: Instant,
    claimed_from: HashSet<Uuid>,
    /// A NOTIFY arrived: new work, so claim now even while busy.
    notified: bool,
}

impl Dispatcher {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut rechecked = false;
        // After a NOTIFY that brought nothing claimable (the new work is for
        // endpoints at their limit), the flag stays down for a while, so a
        // stream of such emits does not pay a NOTIFY each.
        let mut woke_by_notify = false;
        let mut rearm_at = Instant::now();
        let mut rearm_backoff = Duration::ZERO;
        loop {
            if *stop.borrow() {
                return;
            }
            self.reap();
            let step = match self.step().await {
                Ok(s) => {
                    backoff = Duration::from_millis(100);
                    s
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claim cycle failed; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if woke_by_notify {
                woke_by_notify = false;
                if step == Step::Nothing {
                    rearm_backoff = (rearm_backoff * 2)
                        .clamp(Duration::from_millis(10), self.cfg.poll_interval / 2);
                    rearm_at = Instant::now() + rearm_backoff;
                } else {
                    rearm_backoff = Duration::ZERO;
                }
            }
            match step {
                Step::Started => {
                    rechecked = false;
                    continue;
                }
                Step::Full => {}
                Step::Nothing => {
                    if !self.waiting && Instant::now() >= rearm_at {
                        // Say we wait, then look once more: an event committed
                        // before the flag was visible would otherwise wait for the poll.
                        if self.set_waiting(true).await.is_ok() && !rechecked {
                            rechecked = true;
                            continue;
                        }
                    }
                }
            }
            // Busy: completions wake the loop, and claims are paced by
            // CLAIM_GAP; only an idle loop asks the database when to look again.
            let mut deadline = if step == Step::Full {
                Instant::now() + CLAIM_GAP
            } else {
                self.deadline().await
            };
            if !self.waiting && step == Step::Nothing && rearm_at > Instant::now() {
                deadline = deadline.min(rearm_at);
            }
            tokio::select! {
                _ = self.wake.notified() => {
                    // Every emit NOTIFYs while the flag is set: clear it at once.
                    let _ = self.set_waiting(false).await;
                    rechecked = false;
                    woke_by_notify = true;
                    self.notified = true;
                }
                Some(res) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.finish(res),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let _ = self.set_waiting(false).await;
                    rechecked = false;
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// One cycle: expand events, claim what there is room for, start it.
    async fn step(&mut self) -> Result<Step, ClaimError> {
        let free = self.cfg.max_in_flight.saturating_sub(self.tasks.len());
        // Claim in batches: a claim is worth it when there are free slots and
        // the local queue is running low, or when nothing is going on.
        let want = self.cfg.batch_size.saturating_sub(self.queued);
        let idle = self.tasks.is_empty() && self.queued == 0;
        if !idle
            && (free == 0
                || want < (self.cfg.batch_size / 4).max(1)
                || !(self.notified || self.claim_wanted()))
        {
            return Ok(Step::Full);
        }
        let db = self.pool.get().await?;
        for _ in 0..10 {
            if claim::expand(&db, 1000).await? < 1000 {
                break;
            }
        }
        let rooms = self.rate_rooms();
        let fast: Vec<Uuid> = self
            .latency
            .keys()
            .filter(|ep| self.is_fast(ep))
            .copied()
            .collect();
        let jobs = claim::claim(
            &db,
            &self.cfg.worker_id,
            want.max(1),
            claim::Room {
                default_cap: self.cfg.endpoint_max_in_flight,
                held: &self.held(),
                rate: &rooms,
                fast: &fast,
                fast_share: self.fast_share(),
            },
            self.cfg.lease,
        )
        .await?;
        drop(db);
        self.last_claim = Instant::now();
        self.notified = false;
        self.claimed_from = jobs.iter().map(|j| j.endpoint_id).collect();
        if jobs.is_empty() {
            return Ok(Step::Nothing);
        }
        if self.waiting {
            let _ = self.set_waiting(false).await;
        }
        for job in jobs {
            self.enqueue(job);
        }
        self.pump();
        Ok(Step::Started)
    }

    /// Whether a busy worker should claim now. Claiming after every completion
    /// would make batches of one or two rows, each paying a claim's fixed cost;
    /// so claim once an endpoint the last claim had work for has room for a
    /// good batch again (fast endpoints: two rounds of their in-flight limit,
    /// others: one), or CLAIM_GAP has passed.
    fn claim_wanted(&self) -> bool {
        if self.last_claim.elapsed() >= CLAIM_GAP {
            return true;
        }
        let share = self.fast_share();
        self.claimed_from.iter().any(|ep| {
            let cap = self.cap(ep, share);
            let held = self.held_by(ep);
            let (allowance, batch) = if self.is_fast(ep) {
                (cap * 4, cap * 2)
            } else {
                (cap, cap)
            };
            allowance.saturating_sub(held) >= batch.max(1)
        })
    }

    fn is_fast(&self, ep: &Uuid) -> bool {
        self.latency.get(ep).is_some_and(|d| *d < FAST_ENDPOINT)
    }

    /// The in-flight limit each fast endpoint with work gets now: an equal
    /// share of POSTBOX_FAST_IN_FLIGHT. Fast requests are what costs CPU, and
    /// past about that many in flight more only cost more per request; slow or
    /// stuck endpoints need no share, so they cannot crowd out fast ones.
    fn fast_share(&self) -> u32 {
        let n = self.in_flight.keys().filter(|ep| self.is_fast(ep)).count();
        (self.cfg.fast_in_flight / n.max(1)).max(1) as u32
    }

    /// An endpoint's in-flight limit: its own (option or default), and for a
    /// fast endpoint at most its share of the fast lane.
    fn cap(&self, ep: &Uuid, share: u32) -> u32 {
        let own = self
            .in_flight
            .get(ep)
            .map_or(self.cfg.endpoint_max_in_flight, |e| e.1);
        if self.is_fast(ep) {
            own.min(share)
        } else {
            own
        }
    }

    /// Requests in flight plus claimed deliveries waiting to start.
    fn held_by(&self, ep: &Uuid) -> u32 {
        self.in_flight.get(ep).map_or(0, |e| e.0)
            + self.queues.get(ep).map_or(0, |q| q.len() as u32)
    }

    /// `held_by` for every endpoint this worker holds anything of.
    fn held(&self) -> HashMap<Uuid, u32> {
        self.in_flight
            .keys()
            .map(|ep| (*ep, self.held_by(ep)))
            .collect()
    }

    fn rate_rooms(&mut self) -> HashMap<Uuid, u32> {
        self.buckets
            .iter_mut()
            .map(|(id, b)| {
                b.refill();
                (*id, b.tokens.floor() as u32)
            })
            .collect()
    }

    /// Takes a claimed delivery: counts it against its endpoint and queues it.
    fn enqueue(&mut self, job: Claimed) {
        let opts = &job.endpoint.options;
        if let Some(rate) = opts.rate_limit_per_s {
            let b = self.buckets.entry(job.endpoint_id).or_insert(Bucket {
                rate,
                tokens: rate.max(1.0),
                at: Instant::now(),
            });
            b.rate = rate;
            b.refill();
            b.tokens -= 1.0;
        } else {
            self.buckets.remove(&job.endpoint_id);
        }
        let cap = opts
            .max_in_flight
            .unwrap_or(self.cfg.endpoint_max_in_flight);
        self.in_flight.entry(job.endpoint_id).or_insert((0, cap)).1 = cap;
        self.queues
            .entry(job.endpoint_id)
            .or_default()
            .push_back(job);
        self.queued += 1;
    }

    /// Starts queued deliveries while their endpoints and the worker have room.
    fn pump(&mut self) {
        if self.queued == 0 {
            return;
        }
        let share = self.fast_share();
        let endpoints: Vec<Uuid> = self.queues.keys().copied().collect();
        for ep in endpoints {
            let cap = self.cap(&ep, share);
            loop {
                if self.tasks.len() >= self.cfg.max_in_flight {
                    return;
                }
                let running = self.in_flight.get(&ep).map_or(0, |e| e.0);
                if running >= cap {
                    break;
                }
                let Some(job) = self.queues.get_mut(&ep).and_then(VecDeque::pop_front) else {
                    self.queues.remove(&ep);
                    break;
                };
                self.queued -= 1;
                self.launch(job);
            }
        }
    }

    fn launch(&mut self, job: Claimed) {
        if let Some(e) = self.in_flight.get_mut(&job.endpoint_id) {
            e.0 += 1;
        }
        let (endpoint_id, delivery_id) = (job.endpoint_id, job.id);
        let sender = self.sender.clone();
        let ack = self.ack.clone();
        let metrics = self.metrics.clone();
        let handle = self.tasks.spawn(async move {
            metrics.in_flight.inc();
            let opts = &job.endpoint.options;
            let result = sender.send(&job, opts).await;
            let took = result.duration;
            metrics.in_flight.dec();
            metrics.attempt_seconds.observe(result.duration.as_secs_f64());
            let attempt = job.attempts + 1;
            let verdict = if result.succeeded() {
                Verdict::Succeeded
            } else if result.status == Some(410) {
                Verdict::Gone
            } else if job.is_test {
                Verdict::Failed // a test send is attempted once
            } else {
                match retry::next_attempt(opts.retry_gaps(), attempt as u32, result.status, result.retry_after, SystemTime::now()) {
                    Some(at) => Verdict::Retry(at),
                    None => Verdict::Failed,
                }
            };
            tracing::debug!(
                delivery_id = job.id, endpoint_id = %job.endpoint_id, attempt, status = ?result.status,
                error = ?result.error, outcome = verdict.label(), "attempt"
            );
            let _ = ack
                .send(Outcome {
                    delivery_id: job.id,
                    tenant: job.tenant,
                    endpoint_id: job.endpoint_id,
                    event_id: job.event_id,
                    attempt,
                    is_test: job.is_test,
                    queued_at: job.queued_at,
                    result,
                    verdict,
                })
                .await;
            took
        });
        self.running.insert(handle.id(), (endpoint_id, delivery_id));
    }

    fn finish(&mut self, res: Result<(Id, Duration), tokio::task::JoinError>) {
        let (id, took) = match &res {
            Ok((id, took)) => (*id, Some(*took)),
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(error = %e, "delivery task panicked; its lease will expire and it will be retried");
                }
                (e.id(), None)
            }
        };
        if let Some((endpoint, _)) = self.running.remove(&id) {
            if let Some(e) = self.in_flight.get_mut(&endpoint) {
                e.0 -= 1;
                if e.0 == 0 && !self.queues.contains_key(&endpoint) {
                    self.in_flight.remove(&endpoint);
                }
            }
            if let Some(took) = took {
                let avg = self.latency.entry(endpoint).or_insert(took);
                *avg = (*avg * 7 + took) / 8;
            }
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
        let share = self.fast_share();
        let full: Vec<Uuid> = self
            .held()
            .into_iter()
            .filter(|(id, held)| *held >= self.cap(id, share))
            .map(|(id, _)| id)
            .chain(
                self.buckets
                    .iter()
                    .filter(|(_, b)| b.tokens < 1.0)
                    .map(|(id, _)| *id),
            )
            .collect();
        if let Ok(db) = self.pool.get().await {
            if let Ok(Some(at)) = claim::next_due(&db, &full).await {
                if let Ok(wait) = at.duration_since(SystemTime::now()) {
                    deadline = deadline.min(now + wait + Duration::from_millis(1));
                }
            }
        }
        for b in self.buckets.values() {
            if b.tokens < 1.0 {
                deadline = deadline.min(now + Duration::from_secs_f64((1.0 - b.tokens) / b.rate));
            }
        }
        deadline
    }

    async fn set_waiting(&mut self, waiting: bool) -> Result<(), ClaimError> {
        if self.waiting == waiting {
            return Ok(());
        }
        let db = self.pool.get().await?;
        claim::set_waiting(&db, waiting).await?;
        self.waiting = waiting;
        Ok(())
    }

    /// Lets in-flight requests finish within the shutdown timeout, then
    /// aborts the rest and gives their claims back.
    async fn drain(&mut self) {
        let deadline = Instant::now() + self.cfg.shutdown_timeout;
        // Claimed but not started: give back at once.
        let queued: Vec<i64> = self
            .queues
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|j| j.id))
            .collect();
        self.queued = 0;
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
        if self.tasks.is_empty() {
            return;
        }
        let ids: Vec<i64> = self.running.values().map(|(_, d)| *d).collect();
        self.tasks.abort_all();
        while let Some(res) = self.tasks.join_next_with_id().await {
            self.finish(res);
        }
        self.release(&ids).await;
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
