//! postbox-worker: turns the outbox into signed HTTP requests.
//!
//! [`run`] is the whole worker; the binary only parses configuration and
//! waits for a signal. Tests drive [`run`] in-process with their own
//! resolver, roots and shutdown future.
//!
//! # Layout
//! - [`config`]: flags, environment, TOML file; validation.
//! - [`db`]: connecting to PostgreSQL (sslmode, sslrootcert, rustls).
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
pub mod db;
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
use uuid::Uuid;

/// Extension versions this worker can drive.
pub const SUPPORTED_EXTENSION_VERSIONS: &[&str] = &["0.3.0"];

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
    #[error("database connection string: {0}")]
    DbConfig(#[from] db::DbError),
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
                | RunError::DbConfig(_)
                | RunError::NoExtension
                | RunError::UnsupportedExtension(_)
                | RunError::Metrics(_)
        )
    }
}

/// A pool error with its causes (deadpool shows only its own layer).
fn pool_message(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => claim::pg_message(e),
        other => other.to_string(),
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
    let (mut pg, tls) = db::parse(&config.database_url)?;
    let tls = db::connector(&tls)?;
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
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.db_pool_size)
        .build()
        .map_err(|e| RunError::Db(e.to_string()))?;
    let db = pool
        .get()
        .await
        .map_err(|e| RunError::Db(pool_message(&e)))?;
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
    let listener = tokio::spawn(listen::run(pg_listen, tls, wake.clone(), stop.clone()));
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
    tracing::info!(worker_id = %config.worker_id, max_in_flight = config.max_in_flight,
        tenant_max_in_flight = config.tenant_cap(), "postbox-worker started");

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
        tenant_running: HashMap::new(),
        queues: HashMap::new(),
        queued: 0,
        known: HashMap::new(),
        special: HashSet::new(),
        buckets: HashMap::new(),
        waiting: false,
        last_claim: Instant::now(),
        claimed_from: HashSet::new(),
        notified: false,
        pacer: NotifyPacer::default(),
        last_expand: Instant::now(),
        expand_retry_at: Instant::now(),
        expand_backoff: EXPAND_BACKOFF_MIN,
        bytes_per_row: 0,
        last_prune: Instant::now(),
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
/// A full worker expands events this often too, so they are routed (and
/// counted as pending) while it waits for room.
const CLAIM_GAP: Duration = Duration::from_millis(10);

/// After a failed expansion, wait this long before the next, doubling up to
/// the maximum: a broken expansion must not cost a warning and a failing
/// statement on every cycle, and claiming goes on meanwhile.
const EXPAND_BACKOFF_MIN: Duration = Duration::from_millis(100);
const EXPAND_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Any role may NOTIFY postbox_wakeup, so a NOTIFY forces at most one claim
/// per this gap; the rest are folded into it. A real emit NOTIFYs only when
/// the worker has said it waits, so it is delayed by this at most; a flood
/// costs at most 200 claim cycles a second, not one per NOTIFY.
const NOTIFY_GAP: Duration = Duration::from_millis(5);

/// Paces what NOTIFYs can cause (see [`NOTIFY_GAP`]). Plain and clock-free:
/// the caller passes the time.
#[derive(Debug, Default)]
struct NotifyPacer {
    /// When a NOTIFY last forced a claim.
    last: Option<Instant>,
    /// A NOTIFY arrived that has not forced a claim yet.
    pending: bool,
}

impl NotifyPacer {
    fn notified(&mut self) {
        self.pending = true;
    }

    /// When the pending NOTIFY may act; None if none is pending.
    fn due_at(&self, now: Instant) -> Option<Instant> {
        self.pending
            .then(|| self.last.map_or(now, |l| (l + NOTIFY_GAP).max(now)))
    }

    /// Whether a pending NOTIFY forces a claim at `now`; if so it is used up.
    fn take(&mut self, now: Instant) -> bool {
        if self.due_at(now).is_some_and(|at| at <= now) {
            self.pending = false;
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// What the worker remembers of an endpoint it holds nothing of is dropped
/// after this long idle (checked every PRUNE_EVERY): every claim walks and
/// sends the rooms of the endpoints it remembers, so they must be the ones
/// with recent traffic, not every endpoint ever served. A forgotten endpoint
/// gets the default room again; any excess is given back at once.
const KNOWN_TTL: Duration = Duration::from_secs(600);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What one claim cycle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Started,
    /// Nothing claimable right now.
    Nothing,
    /// Too little free room to be worth a claim.
    Full,
}

/// What the worker learned about an endpoint from its claims.
struct Known {
    tenant: Arc<str>,
    /// Its own in-flight limit: the `max_in_flight` option or the default.
    own_cap: u32,
    /// Recent attempt time (moving average), once it has had one.
    latency: Option<Duration>,
    /// Last claimed or finished.
    seen: Instant,
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
    /// Task → (endpoint, delivery, the tenant it counts against), for the
    /// counts and releases. Requests to fast endpoints count against no tenant.
    running: HashMap<Id, (Uuid, i64, Option<Arc<str>>)>,
    /// Requests in flight per endpoint this worker holds anything of.
    in_flight: HashMap<Uuid, u32>,
    /// Requests in flight per tenant to endpoints that are not fast (for the
    /// tenant limit): what can hold a slot for long is what the limit bounds.
    /// Fast endpoints share the fast lane instead, and a hanging endpoint is
    /// never fast, so a tenant's own stuck endpoints never starve its fast ones.
    tenant_running: HashMap<Arc<str>, u32>,
    /// Claimed deliveries of endpoints that answer fast, waiting for a slot.
    queues: HashMap<Uuid, VecDeque<Claimed>>,
    queued: usize,
    /// Endpoints this worker has had deliveries for.
    known: HashMap<Uuid, Known>,
    /// Known endpoints whose claim room may differ from the default even when
    /// nothing of theirs is held: fast ones and ones with their own limit.
    special: HashSet<Uuid>,
    buckets: HashMap<Uuid, Bucket>,
    /// Whether this worker has set the wake-up flag.
    waiting: bool,
    /// When the last claim ran, and the endpoints it returned work for.
    last_claim: Instant,
    claimed_from: HashSet<Uuid>,
    /// A NOTIFY arrived: new work, so claim now even while busy.
    notified: bool,
    pacer: NotifyPacer,
    /// Expansion: when it last ran, and when it may run again after failing.
    last_expand: Instant,
    expand_retry_at: Instant,
    expand_backoff: Duration,
    /// Payload bytes per claimed row, recently (see `claim_limit`).
    bytes_per_row: usize,
    last_prune: Instant,
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
            if self.pacer.take(Instant::now()) {
                rechecked = false;
                woke_by_notify = true;
                self.notified = true;
            }
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
            // Wait; a NOTIFY that may not act yet (NOTIFY_GAP) keeps waiting
            // until it may, without a claim cycle of its own.
            loop {
                let until = self
                    .pacer
                    .due_at(Instant::now())
                    .map_or(deadline, |at| at.min(deadline));
                tokio::select! {
                    _ = self.wake.notified() => {
                        // Every emit NOTIFYs while the flag is set: clear it at once.
                        let _ = self.set_waiting(false).await;
                        self.pacer.notified();
                        if self.pacer.due_at(Instant::now()).is_some_and(|at| at <= Instant::now()) {
                            break;
                        }
                    }
                    Some(res) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                        self.finish(res);
                        break;
                    }
                    _ = tokio::time::sleep_until(until.into()) => {
                        if Instant::now() >= deadline {
                            let _ = self.set_waiting(false).await;
                            rechecked = false;
                            break;
                        }
                        if self.pacer.due_at(Instant::now()).is_some_and(|at| at <= Instant::now()) {
                            break;
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// One cycle: expand events, claim what there is room for, start it.
    async fn step(&mut self) -> Result<Step, ClaimError> {
        self.pump();
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
            // Full, or not worth a claim yet: expansion still goes on, so
            // new events are routed while every slot is taken.
            if self.last_expand.elapsed() >= CLAIM_GAP {
                let db = self.pool.get().await?;
                self.expand(&db).await;
            }
            return Ok(Step::Full);
        }
        let db = self.pool.get().await?;
        self.expand(&db).await;
        self.prune();
        let share = self.fast_share();
        let (endpoints, tenants) = self.rooms(share);
        let jobs = claim::claim(
            &db,
            &self.cfg.worker_id,
            self.claim_limit(want.max(1)),
            claim::Room {
                endpoints: &endpoints,
                default_endpoint: self.default_room(),
                tenants: &tenants,
                default_tenant: self.cfg.tenant_cap(),
                max_bytes: self.cfg.claim_max_bytes,
            },
            self.cfg.lease,
        )
        .await?;
        self.last_claim = Instant::now();
        self.notified = false;
        self.claimed_from = jobs.iter().map(|j| j.endpoint_id).collect();
        if jobs.is_empty() {
            return Ok(Step::Nothing);
        }
        if self.waiting {
            let _ = self.set_waiting(false).await;
        }
        let bytes: usize = jobs.iter().map(|j| j.data.len()).sum();
        self.bytes_per_row = bytes / jobs.len();
        let mut excess = Vec::new();
        for job in jobs {
            if let Some(id) = self.enqueue(job) {
                excess.push(id);
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
        if now < self.expand_retry_at {
            return;
        }
        self.last_expand = now;
        for _ in 0..10 {
            match claim::expand(db, 1000).await {
                Ok(n) if n < 1000 => break,
                Ok(_) => {}
                Err(e) => {
                    self.metrics.expand_errors.inc();
                    tracing::warn!(error = %e, retry_in = ?self.expand_backoff,
                        "expanding events failed; claiming goes on");
                    self.expand_retry_at = Instant::now() + self.expand_backoff;
                    self.expand_backoff = (self.expand_backoff * 2).min(EXPAND_BACKOFF_MAX);
                    return;
                }
            }
        }
        self.expand_backoff = EXPAND_BACKOFF_MIN;
    }

    /// Forgets endpoints idle for KNOWN_TTL that it holds nothing of.
    fn prune(&mut self) {
        if self.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        self.last_prune = Instant::now();
        let in_flight = &self.in_flight;
        self.known
            .retain(|ep, k| in_flight.contains_key(ep) || k.seen.elapsed() < KNOWN_TTL);
        let known = &self.known;
        self.special.retain(|ep| known.contains_key(ep));
        self.buckets.retain(|ep, _| known.contains_key(ep));
    }

    /// Rows to ask for: `want`, and with large payloads about twice what
    /// POSTBOX_CLAIM_MAX_BYTES holds, so PostgreSQL does not render many
    /// payloads per claim only to leave them for the next one.
    fn claim_limit(&self, want: usize) -> usize {
        match self.bytes_per_row {
            0 => want,
            b => want.min((2 * self.cfg.claim_max_bytes as usize / b).max(1)),
        }
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
            let batch = if self.is_fast(ep) { cap * 2 } else { cap };
            self.allowance(ep, share).saturating_sub(self.held_by(ep)) >= batch.max(1)
        })
    }

    fn is_fast(&self, ep: &Uuid) -> bool {
        self.known
            .get(ep)
            .and_then(|k| k.latency)
            .is_some_and(|d| d < FAST_ENDPOINT)
    }

    /// The in-flight limit each fast endpoint with work gets now: an equal
    /// share of POSTBOX_FAST_IN_FLIGHT. Fast requests are what costs CPU, and
    /// past about that many in flight more only cost more per request; slow or
    /// stuck endpoints need no share, so they cannot crowd out fast ones.
    fn fast_share(&self) -> u32 {
        let n = self.in_flight.keys().filter(|ep| self.is_fast(ep)).count();
        (self.cfg.fast_in_flight / n.max(1)).max(1) as u32
    }

    /// The room of an endpoint the worker knows nothing of: the default
    /// limit, never above the tenant limit.
    fn default_room(&self) -> u32 {
        self.cfg.endpoint_max_in_flight.min(self.cfg.tenant_cap())
    }

    /// An endpoint's in-flight limit: its own (option or default), never
    /// above the tenant limit (so no endpoint takes more than a tenant's
    /// share of the worker), and for a fast endpoint at most its share of
    /// the fast lane.
    fn cap(&self, ep: &Uuid, share: u32) -> u32 {
        let own = self
            .known
            .get(ep)
            .map_or(self.cfg.endpoint_max_in_flight, |k| k.own_cap)
            .min(self.cfg.tenant_cap());
        if self.is_fast(ep) {
            own.min(share)
        } else {
            own
        }
    }

    /// What may be held of an endpoint, in flight or waiting: its limit, and
    /// for a fast endpoint three rounds more waiting (they start within ms).
    fn allowance(&self, ep: &Uuid, share: u32) -> u32 {
        let cap = self.cap(ep, share);
        if self.is_fast(ep) {
            cap * 4
        } else {
            cap
        }
    }

    /// Requests in flight plus claimed deliveries waiting to start.
    fn held_by(&self, ep: &Uuid) -> u32 {
        self.in_flight.get(ep).copied().unwrap_or(0)
            + self.queues.get(ep).map_or(0, |q| q.len() as u32)
    }

    /// Claim rooms that differ from the defaults: per endpoint (held, fast,
    /// own limit, rate limit) and per tenant (the tenant limit less what its
    /// endpoints that are not fast hold, plus the room of its fast ones,
    /// which do not count against it).
    fn rooms(&mut self, share: u32) -> (HashMap<Uuid, u32>, HashMap<Arc<str>, u32>) {
        let default_room = self.default_room();
        let tenant_cap = self.cfg.tenant_cap();
        let mut endpoints = HashMap::new();
        let mut tenant_held: HashMap<Arc<str>, u32> = HashMap::new();
        let mut tenant_extra: HashMap<Arc<str>, u32> = HashMap::new();
        for ep in self.in_flight.keys().chain(self.special.iter()) {
            if endpoints.contains_key(ep) {
                continue;
            }
            let held = self.held_by(ep);
            let allowance = self.allowance(ep, share);
            let room = allowance.saturating_sub(held);
            if room != default_room {
                endpoints.insert(*ep, room);
            }
            if let Some(k) = self.known.get(ep) {
                // A fast endpoint's whole room comes on top of the tenant's
                // (it does not count against the limit); others count.
                if self.is_fast(ep) {
                    *tenant_extra.entry(k.tenant.clone()).or_default() += room;
                } else {
                    *tenant_held.entry(k.tenant.clone()).or_default() += held;
                    tenant_extra.entry(k.tenant.clone()).or_default();
                }
            }
        }
        for (ep, b) in self.buckets.iter_mut() {
            b.refill();
            let tokens = b.tokens.max(0.0).floor() as u32;
            let room = endpoints.get(ep).copied().unwrap_or(default_room);
            endpoints.insert(*ep, room.min(tokens));
        }
        let tenants = tenant_extra
            .into_iter()
            .filter_map(|(t, extra)| {
                let held = tenant_held.get(&t).copied().unwrap_or(0);
                let room = tenant_cap.saturating_sub(held) + extra;
                (room != tenant_cap).then_some((t, room))
            })
            .collect();
        (endpoints, tenants)
    }

    /// Takes a claimed delivery: counts it against its endpoint and queues
    /// it. Returns its id instead when the endpoint may not hold it (its own
    /// limits were not known when it was claimed).
    fn enqueue(&mut self, job: Claimed) -> Option<i64> {
        let opts = &job.endpoint.options;
        let own_cap = opts
            .max_in_flight
            .unwrap_or(self.cfg.endpoint_max_in_flight);
        let known = self.known.entry(job.endpoint_id).or_insert_with(|| Known {
            tenant: Arc::from(job.tenant.as_str()),
            own_cap,
            latency: None,
            seen: Instant::now(),
        });
        known.own_cap = own_cap;
        known.seen = Instant::now();
        if &*known.tenant != job.tenant.as_str() {
            known.tenant = Arc::from(job.tenant.as_str());
        }
        let fast = known.latency.is_some_and(|d| d < FAST_ENDPOINT);
        if fast || own_cap != self.cfg.endpoint_max_in_flight {
            self.special.insert(job.endpoint_id);
        } else {
            self.special.remove(&job.endpoint_id);
        }
        let share = self.fast_share();
        if self.held_by(&job.endpoint_id) >= self.allowance(&job.endpoint_id, share) {
            return Some(job.id);
        }
        if let Some(rate) = opts.rate_limit_per_s {
            let b = self.buckets.entry(job.endpoint_id).or_insert(Bucket {
                rate,
                tokens: rate.max(1.0),
                at: Instant::now(),
            });
            b.rate = rate;
            b.refill();
            if b.tokens < 1.0 {
                return Some(job.id);
            }
            b.tokens -= 1.0;
        } else {
            self.buckets.remove(&job.endpoint_id);
        }
        self.in_flight.entry(job.endpoint_id).or_insert(0);
        self.queues
            .entry(job.endpoint_id)
            .or_default()
            .push_back(job);
        self.queued += 1;
        None
    }

    /// Starts queued deliveries while their endpoints, their tenants and the
    /// worker have room.
    fn pump(&mut self) {
        if self.queued == 0 {
            return;
        }
        let share = self.fast_share();
        let tenant_cap = self.cfg.tenant_cap();
        let endpoints: Vec<Uuid> = self.queues.keys().copied().collect();
        for ep in endpoints {
            let cap = self.cap(&ep, share);
            let Some(tenant) = self.known.get(&ep).map(|k| k.tenant.clone()) else {
                continue;
            };
            loop {
                if self.tasks.len() >= self.cfg.max_in_flight {
                    return;
                }
                let running = self.in_flight.get(&ep).copied().unwrap_or(0);
                if running >= cap
                    || (!self.is_fast(&ep)
                        && self.tenant_running.get(&tenant).copied().unwrap_or(0) >= tenant_cap)
                {
                    break;
                }
                let Some(job) = self.queues.get_mut(&ep).and_then(VecDeque::pop_front) else {
                    self.queues.remove(&ep);
                    break;
                };
                self.queued -= 1;
                self.launch(job, &tenant);
            }
        }
    }

    fn launch(&mut self, job: Claimed, tenant: &Arc<str>) {
        *self.in_flight.entry(job.endpoint_id).or_insert(0) += 1;
        let counted = (!self.is_fast(&job.endpoint_id)).then(|| tenant.clone());
        if let Some(t) = &counted {
            *self.tenant_running.entry(t.clone()).or_insert(0) += 1;
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
        self.running
            .insert(handle.id(), (endpoint_id, delivery_id, counted));
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
        if let Some((endpoint, _, tenant)) = self.running.remove(&id) {
            if let Some(n) = self.in_flight.get_mut(&endpoint) {
                *n -= 1;
                if *n == 0 && !self.queues.contains_key(&endpoint) {
                    self.in_flight.remove(&endpoint);
                }
            }
            if let Some(tenant) = tenant {
                if let Some(n) = self.tenant_running.get_mut(&tenant) {
                    *n -= 1;
                    if *n == 0 {
                        self.tenant_running.remove(&tenant);
                    }
                }
            }
            if let Some(k) = self.known.get_mut(&endpoint) {
                k.seen = Instant::now();
                if let Some(took) = took {
                    let avg = k.latency.get_or_insert(took);
                    *avg = (*avg * 7 + took) / 8;
                    if *avg < FAST_ENDPOINT || k.own_cap != self.cfg.endpoint_max_in_flight {
                        self.special.insert(endpoint);
                    } else {
                        self.special.remove(&endpoint);
                    }
                }
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
            .in_flight
            .keys()
            .filter(|ep| self.held_by(ep) >= self.cap(ep, share))
            .copied()
            .chain(
                self.buckets
                    .iter()
                    .filter(|(_, b)| b.tokens < 1.0)
                    .map(|(id, _)| *id),
            )
            .collect();
        let full_tenants: Vec<&str> = self
            .tenant_running
            .iter()
            .filter(|(_, n)| **n >= self.cfg.tenant_cap())
            .map(|(t, _)| &**t)
            .collect();
        if let Ok(db) = self.pool.get().await {
            if let Ok(Some(at)) = claim::next_due(&db, &full, &full_tenants).await {
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
        let ids: Vec<i64> = self.running.values().map(|(_, d, _)| *d).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_forces_at_most_one_claim_per_gap() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = NotifyPacer::default();
        assert!(!p.take(t0), "nothing pending, nothing forced");
        assert_eq!(p.due_at(t0), None);
        p.notified();
        assert_eq!(p.due_at(t0), Some(t0), "the first NOTIFY acts at once");
        assert!(p.take(t0));
        assert!(!p.take(t0), "used up");
        // A flood right after: folded into one claim, NOTIFY_GAP after the last.
        for n in 0..1000 {
            p.notified();
            assert!(!p.take(t0 + Duration::from_micros(n)), "{n}");
        }
        assert_eq!(p.due_at(ms(1)), Some(t0 + NOTIFY_GAP));
        assert!(!p.take(t0 + NOTIFY_GAP - Duration::from_micros(1)));
        assert!(p.take(t0 + NOTIFY_GAP));
        assert!(
            !p.take(ms(100)),
            "the flood forced one claim, not a thousand"
        );
        // Long after the last: at once again.
        p.notified();
        assert_eq!(p.due_at(ms(100)), Some(ms(100)));
        assert!(p.take(ms(100)));
        // Over a second of NOTIFYs every 100 µs: at most one claim per gap.
        let mut forced = 0;
        for n in 0..10_000u64 {
            let now = ms(200) + Duration::from_micros(100 * n);
            p.notified();
            if p.take(now) {
                forced += 1;
            }
        }
        let most = (Duration::from_secs(1).as_micros() / NOTIFY_GAP.as_micros()) as usize + 1;
        assert!(
            forced <= most && forced >= most - 2,
            "{forced} claims for 10,000 NOTIFYs"
        );
    }
}
