//! The scheduling policy: how much of each endpoint and tenant this worker
//! may hold, which claimed delivery starts when, and when a busy worker
//! claims again.
//!
//! Plain logic over plain data: the caller passes the time (`now`), and a
//! job is any `J` (the dispatcher's is a claimed delivery), so every rule
//! below is unit-tested without a database, a network or a clock.
//!
//! The rules:
//! - **Per endpoint**: at most its in-flight limit (its `max_in_flight`
//!   option, else POSTBOX_ENDPOINT_MAX_IN_FLIGHT), never above the tenant
//!   limit.
//! - **Fast lane**: an endpoint answering under [`FAST_ENDPOINT`] on average
//!   is fast. Fast endpoints with work share POSTBOX_FAST_IN_FLIGHT equally,
//!   each below its own limit, and may hold [`QUEUED_ROUNDS`] rounds of
//!   their limit claimed (they start within milliseconds), so claims come in
//!   large batches. Slow endpoints hold only what they start.
//! - **Tenants**: requests to endpoints that are not fast share the slow
//!   slots: the worker's, less those kept for the fast lane
//!   ([`Limits::slow_slots`]). A tenant may start one only while it has
//!   fewer of them in flight than there are slow slots free
//!   ([`tenant_room`]), and never more than POSTBOX_TENANT_MAX_IN_FLIGHT.
//!   So no tenant takes more than half of what is left: alone it gets half,
//!   k tenants whose receivers hang hold at most 1 - 1/2^k of the slow slots
//!   however they ramp up (1 - 1/(k+1) once their requests have turned over),
//!   and a tenant with nothing in flight can always start one. Fast endpoints
//!   do not count: they share the fast lane, and a hanging endpoint is never
//!   fast, so no tenant's stuck endpoints can starve fast ones.
//! - **Rate limits**: a token bucket per endpoint with `rate_limit_per_s`,
//!   holding one second's worth.
//! - **Claim pacing**: a busy worker claims once an endpoint the last claim
//!   had work for has room for a good batch again, or every [`CLAIM_GAP`].
//! - **Rooms**: what each endpoint and tenant may still have claimed, which
//!   the claim statement obeys ([`Schedule::rooms`]).
//! - **Batches**: a batching endpoint's request carries up to its
//!   `batch_max_events` queued deliveries with the same [`BatchKey`] (fewer
//!   for one split before: [`BatchKey::halvings`]) within `batch_max_bytes`;
//!   one that is not full waits for company until its first delivery has
//!   been queued `batch_max_wait` ([`Schedule::next_batch_due`]). Its limits
//!   count requests as for any endpoint, and its rooms rows: a request's
//!   worth of rows per request.

use postbox_rules::options::Batching;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Endpoints answering faster than this on average are fast (see the module
/// header): claimed deliveries waiting for such an endpoint start within
/// milliseconds, while a slower (or stuck) one must have none waiting.
pub const FAST_ENDPOINT: Duration = Duration::from_millis(50);

/// While busy, claim at least this often: work for endpoints this worker
/// holds nothing of is found within this time even when no queue runs low.
/// A full worker expands events this often too, so they are routed (and
/// counted as pending) while it waits for room.
pub const CLAIM_GAP: Duration = Duration::from_millis(10);

/// A fast endpoint may hold this many rounds of its in-flight limit: one in
/// flight and three waiting, which start within milliseconds. Enough that a
/// claim every few ms keeps it busy; a slow endpoint holds one round.
pub const QUEUED_ROUNDS: u32 = 4;

/// A busy worker claims again once an endpoint the last claim had work for
/// has this many rounds of its limit free (fast endpoints; others: one), so
/// claims carry batches rather than the one or two rows each completion frees.
pub const FAST_BATCH_ROUNDS: u32 = 2;

/// A busy worker claims only when at least this fraction (1/4) of a batch
/// is wanted: a claim has a fixed cost, and a handful of rows does not pay it.
pub const MIN_CLAIM_FRACTION: usize = 4;

/// While the worker serves endpoints that batch, a claim may take this many
/// times POSTBOX_BATCH_SIZE rows: their rows go a hundred or so to a
/// request, and a claim's fixed cost (finding the endpoints with work: 2 to
/// 3 ms with a busy outbox, docs/measurements.md) is better paid per several
/// requests than per few.
pub const BATCHING_CLAIM_ROUNDS: usize = 4;

/// With large payloads, ask for about this many times the rows
/// POSTBOX_CLAIM_MAX_BYTES holds: enough to fill the bound, without
/// PostgreSQL rendering many payloads per claim only to leave them.
pub const CLAIM_BYTES_HEADROOM: usize = 2;

/// The latency average weighs each attempt 1/8: one slow answer does not make
/// a fast endpoint slow, a run of them does.
pub const LATENCY_WEIGHT: u32 = 8;

/// What the worker remembers of an endpoint it holds nothing of is dropped
/// after this long idle (checked every PRUNE_EVERY): every claim walks and
/// sends the rooms of the endpoints it remembers, so they must be the ones
/// with recent traffic, not every endpoint ever served. A forgotten endpoint
/// gets the default room again; any excess is given back at once.
pub const KNOWN_TTL: Duration = Duration::from_secs(600);
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The worker's limits (from its configuration).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests in flight, all endpoints.
    pub max_in_flight: usize,
    /// Per endpoint, unless its `max_in_flight` option says otherwise.
    pub endpoint_max_in_flight: u32,
    /// Per tenant (endpoints that are not fast); never above `max_in_flight`.
    pub tenant_max_in_flight: u32,
    /// All fast endpoints together.
    pub fast_in_flight: usize,
    /// Most rows per claim.
    pub batch_size: usize,
    /// Most payload bytes per claim.
    pub claim_max_bytes: u64,
}

impl Limits {
    /// What requests to endpoints that are not fast may hold together: the
    /// worker's slots less the fast lane's (at most half of them), so
    /// hanging endpoints can never take the slots fast ones need.
    pub fn slow_slots(&self) -> usize {
        self.max_in_flight - self.fast_in_flight.min(self.max_in_flight / 2)
    }

    /// The most a tenant alone has in flight to endpoints that are not
    /// fast: half the slow slots (rounded up), within the tenant limit.
    pub fn tenant_alone(&self) -> u32 {
        tenant_room(0, self.slow_slots(), self.tenant_max_in_flight)
    }
}

/// How many more requests to endpoints that are not fast a tenant with
/// `held` of them may start while `free` slow slots are free: it may start
/// one while it holds fewer than are free, so it stops at about half of
/// what was free (and a tenant holding nothing always gets one of the last
/// free slots); never past `tenant_max` in all.
pub fn tenant_room(held: u32, free: usize, tenant_max: u32) -> u32 {
    let held_n = held as usize;
    let by_share = if held_n < free {
        (free - held_n).div_ceil(2).min(u32::MAX as usize) as u32
    } else {
        0
    };
    by_share.min(tenant_max.saturating_sub(held))
}

/// What a claim says about a delivery's endpoint.
#[derive(Debug, Clone, Copy)]
pub struct EndpointFacts<'a> {
    pub id: Uuid,
    pub tenant: &'a str,
    /// Its `max_in_flight` option.
    pub max_in_flight: Option<u32>,
    /// Its `rate_limit_per_s` option.
    pub rate_limit_per_s: Option<f64>,
    /// How it batches (its `batch_max_*` options); None: one per request.
    pub batching: Option<Batching>,
}

/// Which queued deliveries of a batching endpoint may share a request: those
/// with the same `group`, at most `batch_max_events / 2^halvings` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchKey {
    pub group: u64,
    pub halvings: u32,
}

/// A claimed delivery, as far as the policy is concerned: its endpoint, and
/// for batching what it may go with and its size.
pub trait Job {
    fn endpoint(&self) -> EndpointFacts<'_>;
    /// None: it always goes alone (a test send).
    fn batch_key(&self) -> Option<BatchKey> {
        None
    }
    /// Bytes of event data it adds to a batch.
    fn bytes(&self) -> usize {
        0
    }
}

/// What a started request counts against; handed back to
/// [`Schedule::finish`] when it ends.
#[derive(Debug, Clone)]
pub struct Slot {
    pub endpoint: Uuid,
    /// The tenant whose limit it counts against: none for a fast endpoint.
    pub tenant: Option<Arc<str>>,
}

/// How much a claim may take: per endpoint and per tenant, where it differs
/// from the defaults (so idle endpoints cost nothing to describe).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rooms {
    /// Endpoints whose room is not `default_endpoint`: held ones, fast ones,
    /// rate-limited ones, ones with their own `max_in_flight`.
    pub endpoints: HashMap<Uuid, u32>,
    /// The room of any other endpoint (the default limit, within the tenant's).
    pub default_endpoint: u32,
    /// Tenants whose room is not `default_tenant`.
    pub tenants: HashMap<Arc<str>, u32>,
    /// The room of any other tenant (the tenant limit).
    pub default_tenant: u32,
}

/// Endpoints and tenants that can start nothing more now; their due rows
/// must not wake an idle worker (see `claim::next_due`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Blocked<'a> {
    pub endpoints: Vec<Uuid>,
    pub tenants: Vec<&'a str>,
}

/// A token bucket for an endpoint's `rate_limit_per_s`: one second's burst.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate.max(1.0),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + self.rate * elapsed).min(self.rate.max(1.0));
        self.at = now;
    }

    /// When the next token is there, counted from `now`; None if there is one.
    fn next_token(&self, now: Instant) -> Option<Instant> {
        (self.tokens < 1.0).then(|| now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }
}

/// What the worker learned about an endpoint from its claims.
#[derive(Debug)]
struct Known {
    tenant: Arc<str>,
    /// Its own in-flight limit: the `max_in_flight` option or the default.
    own_cap: u32,
    /// Recent attempt time (moving average), once it has had one.
    latency: Option<Duration>,
    /// Last claimed or finished.
    seen: Instant,
    batching: Option<Batching>,
}

/// The policy's state: what this worker holds, per endpoint and tenant.
#[derive(Debug)]
pub struct Schedule<J> {
    limits: Limits,
    /// Requests in flight, all endpoints.
    running: usize,
    /// Requests in flight per endpoint this worker holds anything of
    /// (an endpoint with queued work has an entry, maybe 0).
    in_flight: HashMap<Uuid, u32>,
    /// Requests in flight per tenant to endpoints that are not fast, and
    /// their sum.
    tenant_running: HashMap<Arc<str>, u32>,
    slow_running: usize,
    /// Claimed deliveries waiting for a slot, per endpoint, with when each
    /// was queued.
    queues: HashMap<Uuid, VecDeque<(Instant, J)>>,
    queued: usize,
    /// Endpoints this worker has had deliveries for.
    known: HashMap<Uuid, Known>,
    /// Known endpoints whose claim room may differ from the default even when
    /// nothing of theirs is held: fast ones and ones with their own limit.
    special: HashSet<Uuid>,
    buckets: HashMap<Uuid, Bucket>,
    /// When the last claim ran, and the endpoints it returned work for.
    last_claim: Instant,
    claimed_from: HashSet<Uuid>,
    /// Payload bytes per claimed row, recently (see [`Schedule::claim_size`]).
    bytes_per_row: usize,
    last_prune: Instant,
    /// When a delivery of an endpoint that batches was last queued.
    batching_seen: Option<Instant>,
}

impl<J> Schedule<J> {
    pub fn new(limits: Limits, now: Instant) -> Schedule<J> {
        Schedule {
            limits,
            running: 0,
            in_flight: HashMap::new(),
            tenant_running: HashMap::new(),
            slow_running: 0,
            queues: HashMap::new(),
            queued: 0,
            known: HashMap::new(),
            special: HashSet::new(),
            buckets: HashMap::new(),
            last_claim: now,
            claimed_from: HashSet::new(),
            bytes_per_row: 0,
            last_prune: now,
            batching_seen: None,
        }
    }

    /// Requests in flight, all endpoints.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Claimed deliveries waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queued
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
        (self.limits.fast_in_flight / n.max(1)).max(1) as u32
    }

    /// The room of an endpoint the worker knows nothing of: the default
    /// limit, never above the tenant limit.
    fn default_room(&self) -> u32 {
        self.limits
            .endpoint_max_in_flight
            .min(self.limits.tenant_max_in_flight)
    }

    /// An endpoint's in-flight limit: its own (option or default), never
    /// above the tenant limit (so no endpoint takes more than a tenant's
    /// share of the worker), and for a fast endpoint at most its share of
    /// the fast lane.
    fn cap(&self, ep: &Uuid, share: u32) -> u32 {
        let own = self
            .known
            .get(ep)
            .map_or(self.limits.endpoint_max_in_flight, |k| k.own_cap)
            .min(self.limits.tenant_max_in_flight);
        if self.is_fast(ep) {
            own.min(share)
        } else {
            own
        }
    }

    /// Deliveries per request: a batching endpoint's `batch_max_events`,
    /// else 1. Holdings and rooms count deliveries (rows), limits requests.
    fn per_request(&self, ep: &Uuid) -> u32 {
        per_request(&self.known, ep)
    }

    /// What may be held of an endpoint, in flight or waiting, in
    /// deliveries: its limit, and for a fast endpoint [`QUEUED_ROUNDS`] of
    /// it, in requests' worth of deliveries.
    fn allowance(&self, ep: &Uuid, share: u32) -> u32 {
        let cap = self.cap(ep, share);
        let rounds = if self.is_fast(ep) { QUEUED_ROUNDS } else { 1 };
        cap.saturating_mul(rounds)
            .saturating_mul(self.per_request(ep))
    }

    /// Deliveries in flight (a request's worth each) plus claimed
    /// deliveries waiting to start.
    fn held_by(&self, ep: &Uuid) -> u32 {
        self.in_flight
            .get(ep)
            .copied()
            .unwrap_or(0)
            .saturating_mul(self.per_request(ep))
            + self.queues.get(ep).map_or(0, |q| q.len() as u32)
    }

    /// Whether `ep` is special (see the field) given what is known of it.
    fn mark_special(&mut self, ep: Uuid) {
        let special = self.known.get(&ep).is_some_and(|k| {
            k.latency.is_some_and(|d| d < FAST_ENDPOINT)
                || k.own_cap != self.limits.endpoint_max_in_flight
                || k.batching.is_some()
        });
        if special {
            self.special.insert(ep);
        } else {
            self.special.remove(&ep);
        }
    }

    /// How many rows to claim now, or None when a claim is not worth it: no
    /// free slot, less than [`MIN_CLAIM_FRACTION`] of a batch wanted (a
    /// batch: POSTBOX_BATCH_SIZE rows, [`BATCHING_CLAIM_ROUNDS`] of them while
    /// the worker serves endpoints that batch), or
    /// (unless `forced`, by a NOTIFY) too soon after the last claim for the
    /// endpoints it had work for. An idle worker always claims.
    pub fn claim_size(&self, now: Instant, forced: bool) -> Option<usize> {
        let free = self.limits.max_in_flight.saturating_sub(self.running);
        let batching = self
            .batching_seen
            .is_some_and(|t| now.saturating_duration_since(t) < KNOWN_TTL);
        let size = if batching {
            self.limits.batch_size * BATCHING_CLAIM_ROUNDS
        } else {
            self.limits.batch_size
        };
        let want = size.saturating_sub(self.queued);
        let idle = self.running == 0 && self.queued == 0;
        if !idle
            && (free == 0
                || want < (size / MIN_CLAIM_FRACTION).max(1)
                || !(forced || self.claim_wanted(now)))
        {
            return None;
        }
        let want = want.max(1);
        Some(match self.bytes_per_row {
            0 => want,
            b => want.min((CLAIM_BYTES_HEADROOM * self.limits.claim_max_bytes as usize / b).max(1)),
        })
    }

    /// Whether a busy worker should claim now. Claiming after every completion
    /// would make batches of one or two rows, each paying a claim's fixed cost;
    /// so claim once an endpoint the last claim had work for has room for a
    /// good batch again (fast endpoints: [`FAST_BATCH_ROUNDS`] of their
    /// in-flight limit, others: one), or [`CLAIM_GAP`] has passed.
    fn claim_wanted(&self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last_claim) >= CLAIM_GAP {
            return true;
        }
        let share = self.fast_share();
        self.claimed_from.iter().any(|ep| {
            let cap = self.cap(ep, share);
            let batch = if self.is_fast(ep) {
                cap * FAST_BATCH_ROUNDS
            } else {
                cap
            };
            let batch = batch.saturating_mul(self.per_request(ep));
            self.allowance(ep, share).saturating_sub(self.held_by(ep)) >= batch.max(1)
        })
    }

    /// A claim ran at `now` and returned `rows` rows of `bytes` payload bytes
    /// in all, for `endpoints`.
    pub fn claimed(
        &mut self,
        now: Instant,
        endpoints: impl IntoIterator<Item = Uuid>,
        rows: usize,
        bytes: usize,
    ) {
        self.last_claim = now;
        self.claimed_from.clear();
        self.claimed_from.extend(endpoints);
        if let Some(per_row) = bytes.checked_div(rows) {
            self.bytes_per_row = per_row;
        }
    }

    /// Slow slots free now (see [`Limits::slow_slots`]).
    fn slow_free(&self) -> usize {
        self.limits.slow_slots().saturating_sub(self.slow_running)
    }

    /// Claim rooms that differ from the defaults: per endpoint (held, fast,
    /// own limit, rate limit) and per tenant ([`tenant_room`] of what its
    /// endpoints that are not fast hold, running or waiting, with the slow
    /// slots not started in free; plus the room of its fast ones, which do
    /// not count against it).
    pub fn rooms(&mut self, now: Instant) -> Rooms {
        let share = self.fast_share();
        let default_room = self.default_room();
        let tenant_max = self.limits.tenant_max_in_flight;
        let mut endpoints = HashMap::new();
        let mut tenant_held: HashMap<Arc<str>, u32> = HashMap::new();
        let mut tenant_extra: HashMap<Arc<str>, u32> = HashMap::new();
        for ep in self.in_flight.keys().chain(self.special.iter()) {
            if endpoints.contains_key(ep) {
                continue;
            }
            let held = self.held_by(ep);
            let room = self.allowance(ep, share).saturating_sub(held);
            if room != default_room {
                endpoints.insert(*ep, room);
            }
            if let Some(k) = self.known.get(ep) {
                // A fast endpoint's whole room comes on top of the tenant's
                // (it does not count against the limit), and so does a
                // batching one's (its rooms are rows, the tenant's
                // requests; starting its requests obeys the tenant's limit);
                // others count.
                if self.is_fast(ep) || k.batching.is_some() {
                    *tenant_extra.entry(k.tenant.clone()).or_default() += room;
                } else {
                    *tenant_held.entry(k.tenant.clone()).or_default() += held;
                    tenant_extra.entry(k.tenant.clone()).or_default();
                }
            }
        }
        for (ep, b) in self.buckets.iter_mut() {
            b.refill(now);
            let tokens =
                (b.tokens.max(0.0).floor() as u32).saturating_mul(per_request(&self.known, ep));
            let room = endpoints.get(ep).copied().unwrap_or(default_room);
            endpoints.insert(*ep, room.min(tokens));
        }
        // Free: not started. Another tenant's claimed deliveries waiting for
        // a slot must not shut a quiet tenant out of claims.
        let free = self.slow_free();
        let default_tenant = tenant_room(0, free, tenant_max);
        let tenants = tenant_extra
            .into_iter()
            .filter_map(|(t, extra)| {
                let held = tenant_held.get(&t).copied().unwrap_or(0);
                let room = tenant_room(held, free, tenant_max) + extra;
                (room != default_tenant).then_some((t, room))
            })
            .collect();
        Rooms {
            endpoints,
            default_endpoint: default_room,
            tenants,
            default_tenant,
        }
    }

    /// Takes a claimed delivery: counts it against its endpoint and queues
    /// it. Gives it back when the endpoint may not hold it (its own limits
    /// were not known when it was claimed, or its rate limit has no token).
    pub fn enqueue(&mut self, job: J, now: Instant) -> Result<(), J>
    where
        J: Job,
    {
        let ep = job.endpoint();
        let rate = ep.rate_limit_per_s;
        let own_cap = ep
            .max_in_flight
            .unwrap_or(self.limits.endpoint_max_in_flight);
        let known = self.known.entry(ep.id).or_insert_with(|| Known {
            tenant: Arc::from(ep.tenant),
            own_cap,
            latency: None,
            seen: now,
            batching: ep.batching,
        });
        known.own_cap = own_cap;
        known.seen = now;
        known.batching = ep.batching;
        if ep.batching.is_some() {
            self.batching_seen = Some(now);
        }
        if &*known.tenant != ep.tenant {
            known.tenant = Arc::from(ep.tenant);
        }
        let id = ep.id;
        self.mark_special(id);
        let share = self.fast_share();
        if self.held_by(&id) >= self.allowance(&id, share) {
            return Err(job);
        }
        // A batching endpoint's tokens are taken per request, when one starts.
        if let (Some(rate), None) = (rate, ep.batching) {
            let b = self
                .buckets
                .entry(id)
                .or_insert_with(|| Bucket::new(rate, now));
            b.rate = rate;
            b.refill(now);
            if b.tokens < 1.0 {
                return Err(job);
            }
            b.tokens -= 1.0;
        } else if let Some(rate) = rate {
            let b = self
                .buckets
                .entry(id)
                .or_insert_with(|| Bucket::new(rate, now));
            b.rate = rate;
        } else {
            self.buckets.remove(&id);
        }
        self.in_flight.entry(id).or_insert(0);
        self.queues.entry(id).or_default().push_back((now, job));
        self.queued += 1;
        Ok(())
    }

    /// Starts queued deliveries while their endpoints, their tenants and the
    /// worker have room: `start` gets each request's deliveries (one, or a
    /// batch: [`take`]) with what it counts against.
    pub fn pump(&mut self, mut start: impl FnMut(Vec<J>, Slot), now: Instant)
    where
        J: Job,
    {
        if self.queued == 0 {
            return;
        }
        let share = self.fast_share();
        let tenant_max = self.limits.tenant_max_in_flight;
        let endpoints: Vec<Uuid> = self.queues.keys().copied().collect();
        for ep in endpoints {
            let cap = self.cap(&ep, share);
            let Some(tenant) = self.known.get(&ep).map(|k| k.tenant.clone()) else {
                continue;
            };
            let fast = self.is_fast(&ep);
            let batching = self.known.get(&ep).and_then(|k| k.batching);
            loop {
                if self.running >= self.limits.max_in_flight {
                    return;
                }
                let running = self.in_flight.get(&ep).copied().unwrap_or(0);
                if running >= cap
                    || (!fast
                        && tenant_room(
                            self.tenant_running.get(&tenant).copied().unwrap_or(0),
                            self.slow_free(),
                            tenant_max,
                        ) == 0)
                {
                    break;
                }
                let Some(q) = self.queues.get_mut(&ep).filter(|q| !q.is_empty()) else {
                    self.queues.remove(&ep);
                    break;
                };
                if let (Some(_), Some(b)) = (batching, self.buckets.get_mut(&ep)) {
                    b.refill(now);
                    if b.tokens < 1.0 {
                        break;
                    }
                }
                let Some(jobs) = take(q, batching, now) else {
                    break;
                };
                if let (Some(_), Some(b)) = (batching, self.buckets.get_mut(&ep)) {
                    b.tokens -= 1.0;
                }
                self.queued -= jobs.len();
                self.running += 1;
                *self.in_flight.entry(ep).or_insert(0) += 1;
                let counted = (!fast).then(|| tenant.clone());
                if let Some(t) = &counted {
                    *self.tenant_running.entry(t.clone()).or_insert(0) += 1;
                    self.slow_running += 1;
                }
                start(
                    jobs,
                    Slot {
                        endpoint: ep,
                        tenant: counted,
                    },
                );
            }
        }
    }

    /// A started request ended at `now`; `took` is its attempt's duration
    /// (None if it was aborted or panicked).
    pub fn finish(&mut self, slot: Slot, took: Option<Duration>, now: Instant) {
        self.running -= 1;
        let ep = slot.endpoint;
        if let Some(n) = self.in_flight.get_mut(&ep) {
            *n -= 1;
            if *n == 0 && !self.queues.contains_key(&ep) {
                self.in_flight.remove(&ep);
            }
        }
        if let Some(tenant) = slot.tenant {
            if let Some(n) = self.tenant_running.get_mut(&tenant) {
                self.slow_running -= 1;
                *n -= 1;
                if *n == 0 {
                    self.tenant_running.remove(&tenant);
                }
            }
        }
        if let Some(k) = self.known.get_mut(&ep) {
            k.seen = now;
            if let Some(took) = took {
                let avg = k.latency.get_or_insert(took);
                *avg = (*avg * (LATENCY_WEIGHT - 1) + took) / LATENCY_WEIGHT;
                self.mark_special(ep);
            }
        }
    }

    /// Endpoints that can start nothing more (at their limit, or out of rate
    /// tokens) and tenants that may start nothing more ([`tenant_room`]).
    pub fn blocked(&self) -> Blocked<'_> {
        let share = self.fast_share();
        // Held counts deliveries, the limit requests: a request's worth each.
        let endpoints = self
            .in_flight
            .keys()
            .filter(|ep| {
                self.held_by(ep) >= self.cap(ep, share).saturating_mul(self.per_request(ep))
            })
            .copied()
            .chain(
                self.buckets
                    .iter()
                    .filter(|(_, b)| b.tokens < 1.0)
                    .map(|(id, _)| *id),
            )
            .collect();
        let free = self.slow_free();
        let tenants = self
            .tenant_running
            .iter()
            .filter(|(_, n)| tenant_room(**n, free, self.limits.tenant_max_in_flight) == 0)
            .map(|(t, _)| &**t)
            .collect();
        Blocked { endpoints, tenants }
    }

    /// When the first rate-limited endpoint out of tokens gets one.
    pub fn next_token(&self, now: Instant) -> Option<Instant> {
        self.buckets
            .values()
            .filter_map(|b| b.next_token(now))
            .min()
    }

    /// Forgets endpoints idle for [`KNOWN_TTL`] that it holds nothing of.
    pub fn prune(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_prune) < PRUNE_EVERY {
            return;
        }
        self.last_prune = now;
        let in_flight = &self.in_flight;
        self.known.retain(|ep, k| {
            in_flight.contains_key(ep) || now.saturating_duration_since(k.seen) < KNOWN_TTL
        });
        let known = &self.known;
        self.special.retain(|ep| known.contains_key(ep));
        self.buckets.retain(|ep, _| known.contains_key(ep));
    }

    /// Every claimed delivery not started yet (to give back at shutdown).
    pub fn take_queued(&mut self) -> Vec<J> {
        self.queued = 0;
        self.queues
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|(_, j)| j))
            .collect()
    }

    /// When the first batch waiting for company must go, if one waits: the
    /// time its first delivery was queued plus its endpoint's
    /// `batch_max_wait`.
    pub fn next_batch_due(&self) -> Option<Instant>
    where
        J: Job,
    {
        self.queues
            .iter()
            .filter_map(|(ep, q)| {
                let b = self.known.get(ep)?.batching?;
                let (at, first) = q.front()?;
                first.batch_key()?;
                Some(*at + b.max_wait)
            })
            .min()
    }
}

/// Deliveries per request of `ep`: its `batch_max_events` if it batches,
/// else 1 ([`Schedule`]'s holdings and rooms count deliveries).
fn per_request(known: &HashMap<Uuid, Known>, ep: &Uuid) -> u32 {
    known
        .get(ep)
        .and_then(|k| k.batching)
        .map_or(1, |b| b.max_events.max(1))
}

/// The next request's deliveries from the front of an endpoint's queue: the
/// first alone, or for a batching endpoint the run of deliveries after it
/// with its [`BatchKey`], at most `max_events / 2^halvings` of them and
/// `max_bytes` of data (the first goes whatever its size). None while such
/// a batch is not full, nothing else is queued behind it, and its first
/// delivery has waited less than `max_wait`: more may come with the next
/// claim.
pub fn take<J: Job>(
    q: &mut VecDeque<(Instant, J)>,
    batching: Option<Batching>,
    now: Instant,
) -> Option<Vec<J>> {
    let (queued_at, first) = q.front()?;
    let (Some(b), Some(key)) = (batching, first.batch_key()) else {
        return q.pop_front().map(|(_, j)| vec![j]);
    };
    let limit = (b.max_events >> key.halvings.min(31)).max(1) as usize;
    let (mut n, mut bytes, mut full) = (0, 0usize, false);
    for (_, j) in q.iter() {
        if n == limit || j.batch_key() != Some(key) {
            full = true;
            break;
        }
        if n > 0 && bytes + j.bytes() > b.max_bytes {
            full = true;
            break;
        }
        bytes += j.bytes();
        n += 1;
    }
    full |= n == limit;
    if !full && now < *queued_at + b.max_wait {
        return None;
    }
    Some(q.drain(..n).map(|(_, j)| j).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_in_flight: 256,
        endpoint_max_in_flight: 16,
        tenant_max_in_flight: 64,
        fast_in_flight: 64,
        batch_size: 500,
        claim_max_bytes: 16 << 20,
    };

    fn ep(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// A test job: a number, and its endpoint's facts.
    #[derive(Debug, Clone, Copy)]
    struct F {
        n: u32,
        id: Uuid,
        tenant: &'static str,
        max_in_flight: Option<u32>,
        rate_limit_per_s: Option<f64>,
    }

    impl Job for F {
        fn endpoint(&self) -> EndpointFacts<'_> {
            EndpointFacts {
                id: self.id,
                tenant: self.tenant,
                max_in_flight: self.max_in_flight,
                rate_limit_per_s: self.rate_limit_per_s,
                batching: None,
            }
        }
    }

    fn facts(id: Uuid, tenant: &'static str) -> F {
        F {
            n: 0,
            id,
            tenant,
            max_in_flight: None,
            rate_limit_per_s: None,
        }
    }

    /// Enqueues job `n` of `f`'s endpoint; gives back its number if refused.
    fn put(s: &mut Schedule<F>, n: u32, f: F, now: Instant) -> Result<(), u32> {
        s.enqueue(F { n, ..f }, now).map_err(|j| j.n)
    }

    /// Starts everything `pump` lets start; returns the slots.
    fn start_all(s: &mut Schedule<F>) -> Vec<(F, Slot)> {
        let mut started = Vec::new();
        s.pump(
            |jobs, slot| {
                assert_eq!(jobs.len(), 1, "one delivery per request");
                started.extend(jobs.into_iter().map(|j| (j, slot.clone())));
            },
            Instant::now(),
        );
        started
    }

    /// Makes `id` known and fast (or slow): one request that took `took`.
    fn teach(s: &mut Schedule<F>, id: Uuid, tenant: &'static str, took: Duration, now: Instant) {
        put(s, 0, facts(id, tenant), now).unwrap();
        for (_, slot) in start_all(s) {
            s.finish(slot, Some(took), now);
        }
    }

    #[test]
    fn an_endpoint_holds_at_most_its_limit_and_gives_back_the_rest() {
        let now = Instant::now();
        let mut s = Schedule::new(LIMITS, now);
        let a = ep(1);
        for i in 0..16 {
            put(&mut s, i, facts(a, "t"), now).unwrap();
        }
        assert_eq!(
            put(&mut s, 16, facts(a, "t"), now),
            Err(16),
            "the 17th is given back"
        );
        let mut own = facts(ep(2), "t");
        own.max_in_flight = Some(2);
        put(&mut s, 0, own, now).unwrap();
        put(&mut s, 1, own, now).unwrap();
        assert_eq!(put(&mut s, 2, own, now), Err(2), "its own max_in_flight");
        assert_eq!(start_all(&mut s).len(), 18);
        assert_eq!(s.running(), 18);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn no_endpoint_gets_more_than_the_tenant_limit() {
        let now = Instant::now();
        let mut s = Schedule::new(
            Limits {
                tenant_max_in_flight: 4,
                ..LIMITS
            },
            now,
        );
        for i in 0..4 {
            put(&mut s, i, facts(ep(1), "t"), now).unwrap();
        }
        assert!(put(&mut s, 4, facts(ep(1), "t"), now).is_err());
        let rooms = s.rooms(now);
        assert_eq!(
            rooms.default_endpoint, 4,
            "the default limit 16, capped at 4"
        );
        assert_eq!(rooms.endpoints.get(&ep(1)), Some(&0));
    }

    #[test]
    fn slow_endpoints_of_a_tenant_share_the_tenant_limit() {
        let now = Instant::now();
        let mut s = Schedule::new(
            Limits {
                tenant_max_in_flight: 20,
                ..LIMITS
            },
            now,
        );
        // Two slow endpoints of one tenant, 16 each claimed: 20 start.
        for e in [ep(1), ep(2)] {
            teach(&mut s, e, "t", Duration::from_secs(1), now);
        }
        for e in [ep(1), ep(2)] {
            for i in 0..16 {
                put(&mut s, i, facts(e, "t"), now).unwrap();
            }
        }
        assert_eq!(start_all(&mut s).len(), 20, "the tenant limit");
        assert_eq!(s.queued(), 12);
        // The tenant has no room left; another tenant has its whole limit.
        let rooms = s.rooms(now);
        assert_eq!(rooms.tenants.get("t"), Some(&0));
        assert_eq!(rooms.default_tenant, 20);
        assert_eq!(s.blocked().tenants, vec!["t"]);
        assert!(s.blocked().endpoints.contains(&ep(1)));
    }

    #[test]
    fn a_tenant_takes_at_most_half_of_the_free_slow_slots() {
        assert_eq!(tenant_room(0, 192, 128), 96, "alone: half");
        assert_eq!(tenant_room(95, 97, 128), 1);
        assert_eq!(tenant_room(96, 96, 128), 0, "as many as are free: no more");
        assert_eq!(tenant_room(0, 1, 128), 1, "nothing held: the last slot");
        assert_eq!(tenant_room(0, 0, 128), 0);
        assert_eq!(tenant_room(0, 192, 20), 20, "the tenant limit");
        assert_eq!(tenant_room(30, 10, 128), 0);
        let limits = Limits {
            max_in_flight: 256,
            fast_in_flight: 64,
            tenant_max_in_flight: 128,
            ..LIMITS
        };
        assert_eq!(limits.slow_slots(), 192, "the fast lane's 64 kept apart");
        assert_eq!(limits.tenant_alone(), 96);
        let small = Limits {
            max_in_flight: 10,
            ..limits
        };
        assert_eq!(small.slow_slots(), 5, "at most half kept for the fast lane");
    }

    /// Tenants whose receivers hang (every request they start stays in
    /// flight), with work for far more than the worker's slots, claimed and
    /// started in any order, leave slow slots free; a quiet tenant then
    /// starts at once, and the fast lane keeps its slots.
    #[test]
    fn noisy_tenants_always_leave_room_for_a_quiet_one() {
        let now = Instant::now();
        let limits = Limits {
            max_in_flight: 256,
            fast_in_flight: 64,
            tenant_max_in_flight: 128,
            ..LIMITS
        };
        const NOISY: [&str; 4] = ["n1", "n2", "n3", "n4"];
        for k in [1, 2, 4] {
            // Ramping up one after another (each fills what it may before the
            // next arrives), and all at once: 8 endpoints each, 16 jobs each.
            for staggered in [true, false] {
                let mut s = Schedule::new(limits, now);
                let mut id = 0u128;
                for tenant in &NOISY[..k] {
                    for _ in 0..8 {
                        id += 1;
                        for i in 0..16 {
                            put(&mut s, i, facts(ep(id), tenant), now).unwrap();
                        }
                    }
                    if staggered {
                        start_all(&mut s);
                    }
                }
                start_all(&mut s);
                let running = s.running();
                let free = limits.slow_slots() - running;
                assert!(
                    free >= limits.slow_slots() >> k,
                    "{k} noisy tenants (staggered: {staggered}): {running} of 192 slow slots held"
                );
                // A quiet tenant's endpoint, not known to be fast: claimable
                // and started at once.
                let rooms = s.rooms(now);
                assert!(
                    rooms.default_tenant >= 1,
                    "{k}: room to claim for a quiet tenant"
                );
                put(&mut s, 0, facts(ep(1000), "quiet"), now).unwrap();
                let started = start_all(&mut s);
                assert_eq!(started.len(), 1, "{k} (staggered: {staggered})");
                assert_eq!(started[0].1.endpoint, ep(1000));
                // The fast lane's 64 stay free for fast endpoints.
                assert!(256 - s.running() >= 64);
            }
        }
    }

    #[test]
    fn fast_endpoints_do_not_count_against_the_tenant_limit() {
        let now = Instant::now();
        let mut s = Schedule::new(
            Limits {
                tenant_max_in_flight: 4,
                ..LIMITS
            },
            now,
        );
        let (slow, fast) = (ep(1), ep(2));
        teach(&mut s, slow, "t", Duration::from_secs(1), now);
        teach(&mut s, fast, "t", Duration::from_millis(2), now);
        for i in 0..4 {
            put(&mut s, i, facts(slow, "t"), now).unwrap();
        }
        let slots = start_all(&mut s);
        assert_eq!(slots.len(), 4);
        assert!(slots.iter().all(|(_, s)| s.tenant.as_deref() == Some("t")));
        // The tenant limit is full of slow requests; the fast endpoint still
        // starts its whole limit (4, the tenant limit caps each endpoint).
        for i in 0..4 {
            put(&mut s, i, facts(fast, "t"), now).unwrap();
        }
        let slots = start_all(&mut s);
        assert_eq!(
            slots.len(),
            4,
            "fast requests start while the tenant is full"
        );
        assert!(
            slots.iter().all(|(_, s)| s.tenant.is_none()),
            "and count against no tenant"
        );
        // Its room comes on top of the tenant's: it may hold 4 rounds (16), 4 held.
        let rooms = s.rooms(now);
        assert_eq!(rooms.endpoints.get(&fast), Some(&12));
        assert_eq!(
            rooms.tenants.get("t"),
            Some(&12),
            "0 left for slow ones + 12 fast"
        );
    }

    #[test]
    fn fast_endpoints_split_the_fast_lane_evenly() {
        let now = Instant::now();
        let mut s = Schedule::new(
            Limits {
                fast_in_flight: 8,
                ..LIMITS
            },
            now,
        );
        let (a, b, slow) = (ep(1), ep(2), ep(3));
        teach(&mut s, a, "t", Duration::from_millis(5), now);
        teach(&mut s, b, "u", Duration::from_millis(5), now);
        teach(&mut s, slow, "v", Duration::from_millis(500), now);
        // One fast endpoint with work: the whole lane (8), 4 rounds held.
        for i in 0..32 {
            put(&mut s, i, facts(a, "t"), now).unwrap();
        }
        assert!(put(&mut s, 32, facts(a, "t"), now).is_err());
        assert_eq!(start_all(&mut s).len(), 8);
        // Two with work: 4 each. a has 8 running already and starts no more.
        for i in 0..16 {
            put(&mut s, i, facts(b, "u"), now).unwrap();
        }
        let started = start_all(&mut s);
        assert_eq!(started.len(), 4, "b gets its share, 4");
        assert!(started.iter().all(|(_, s)| s.endpoint == b));
        // A slow endpoint is held to its own limit, not to a share.
        for i in 0..16 {
            put(&mut s, i, facts(slow, "v"), now).unwrap();
        }
        assert_eq!(start_all(&mut s).len(), 16);
    }

    #[test]
    fn latency_is_a_moving_average() {
        let now = Instant::now();
        let mut s = Schedule::new(LIMITS, now);
        let a = ep(1);
        teach(&mut s, a, "t", Duration::from_millis(10), now);
        assert!(s.is_fast(&a));
        // One slow answer does not make it slow; a run of them does.
        teach(&mut s, a, "t", Duration::from_millis(200), now);
        assert!(s.is_fast(&a), "10 ms * 7/8 + 200 ms / 8 = 33.75 ms");
        teach(&mut s, a, "t", Duration::from_millis(200), now);
        assert!(!s.is_fast(&a), "then 54.5 ms");
    }

    #[test]
    fn a_rate_limit_is_a_bucket_of_one_second() {
        let t0 = Instant::now();
        let mut s = Schedule::new(LIMITS, t0);
        let mut f = facts(ep(1), "t");
        f.rate_limit_per_s = Some(5.0);
        for i in 0..5 {
            put(&mut s, i, f, t0).unwrap();
        }
        assert_eq!(put(&mut s, 5, f, t0), Err(5), "five tokens to start with");
        assert_eq!(s.rooms(t0).endpoints.get(&ep(1)), Some(&0));
        assert_eq!(
            s.next_token(t0),
            Some(t0 + Duration::from_millis(200)),
            "a token every 200 ms"
        );
        assert_eq!(s.blocked().endpoints, vec![ep(1)]);
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!(s.rooms(t1).endpoints.get(&ep(1)), Some(&2), "refilled: two");
        put(&mut s, 5, f, t1).unwrap();
        put(&mut s, 6, f, t1).unwrap();
        assert!(put(&mut s, 7, f, t1).is_err());
        // Never more than one second's worth.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(s.rooms(later).endpoints.get(&ep(1)), Some(&5));
        // Below 1/s the bucket still holds one.
        let mut slow = facts(ep(2), "t");
        slow.rate_limit_per_s = Some(0.5);
        put(&mut s, 0, slow, t0).unwrap();
        assert!(put(&mut s, 1, slow, t0).is_err());
        assert_eq!(s.next_token(t0), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_busy_worker_claims_after_the_gap_or_when_a_batch_is_free() {
        let t0 = Instant::now();
        let mut s = Schedule::new(LIMITS, t0);
        assert_eq!(
            s.claim_size(t0, false),
            Some(500),
            "an idle worker claims a batch"
        );
        let a = ep(1);
        // Slow endpoint a: 16 in flight, claimed just now.
        teach(&mut s, a, "t", Duration::from_secs(1), t0);
        for i in 0..16 {
            put(&mut s, i, facts(a, "t"), t0).unwrap();
        }
        let mut slots = start_all(&mut s);
        s.claimed(t0, [a], 16, 1600);
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(s.claim_size(t1, false), None, "nothing freed, too soon");
        assert_eq!(s.claim_size(t1, true), Some(500), "a NOTIFY forces a claim");
        assert_eq!(
            s.claim_size(t0 + CLAIM_GAP, false),
            Some(500),
            "after CLAIM_GAP"
        );
        // One request of 16 ends: not a batch's worth (a slow endpoint's
        // batch is one round, 16).
        let (_, slot) = slots.pop().unwrap();
        s.finish(slot, Some(Duration::from_secs(1)), t1);
        assert_eq!(s.claim_size(t1, false), None);
        for (_, slot) in slots {
            s.finish(slot, Some(Duration::from_secs(1)), t1);
        }
        assert_eq!(s.claim_size(t1, false), Some(500), "all 16 free: a batch");
    }

    #[test]
    fn a_fast_endpoints_batch_is_two_rounds() {
        let t0 = Instant::now();
        let mut s = Schedule::new(LIMITS, t0);
        let a = ep(1);
        teach(&mut s, a, "t", Duration::from_millis(1), t0);
        // Allowance 4 x 16 = 64; hold 64, then free rounds one by one.
        for i in 0..64 {
            put(&mut s, i, facts(a, "t"), t0).unwrap();
        }
        let mut slots = start_all(&mut s);
        assert_eq!(slots.len(), 16);
        s.claimed(t0, [a], 64, 0);
        let t1 = t0 + Duration::from_millis(1);
        for _ in 0..16 {
            let (_, slot) = slots.pop().unwrap();
            s.finish(slot, Some(Duration::from_millis(1)), t1);
            slots.extend(start_all(&mut s));
        }
        assert_eq!(s.claim_size(t1, false), None, "one round free");
        for _ in 0..16 {
            let (_, slot) = slots.pop().unwrap();
            s.finish(slot, Some(Duration::from_millis(1)), t1);
            slots.extend(start_all(&mut s));
        }
        assert_eq!(s.claim_size(t1, false), Some(500 - 16), "two rounds free");
    }

    #[test]
    fn claims_stop_when_full_or_when_little_is_wanted() {
        let t0 = Instant::now();
        let limits = Limits {
            max_in_flight: 2,
            batch_size: 8,
            ..LIMITS
        };
        let mut s = Schedule::new(limits, t0);
        // Two fast endpoints (the one slow slot would hold one slow request).
        for i in 0..2 {
            teach(&mut s, ep(i), "t", Duration::from_millis(2), t0);
        }
        for i in 0..2 {
            put(&mut s, i, facts(ep(i as u128), "t"), t0).unwrap();
        }
        assert_eq!(start_all(&mut s).len(), 2);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(s.claim_size(later, true), None, "no free slot");
        // Plenty of free slots, but a fast endpoint (own limit 3, so 12 may
        // be held) has 3 running and 6 waiting of a batch of 8: 2 wanted, a
        // quarter; with 7 waiting, 1 wanted is too little.
        let mut s = Schedule::new(
            Limits {
                batch_size: 8,
                ..LIMITS
            },
            t0,
        );
        let mut a = facts(ep(1), "t");
        a.max_in_flight = Some(3);
        put(&mut s, 0, a, t0).unwrap();
        for (_, slot) in start_all(&mut s) {
            s.finish(slot, Some(Duration::from_millis(1)), t0);
        }
        for i in 0..9 {
            put(&mut s, i, a, t0).unwrap();
        }
        assert_eq!(start_all(&mut s).len(), 3);
        assert_eq!(s.queued(), 6);
        assert_eq!(s.claim_size(later, true), Some(2));
        put(&mut s, 9, a, t0).unwrap();
        assert_eq!(s.claim_size(later, true), None, "1 of 8 wanted");
    }

    #[test]
    fn large_payloads_ask_for_about_twice_what_the_bytes_bound_holds() {
        let t0 = Instant::now();
        let mut s = Schedule::<u32>::new(
            Limits {
                claim_max_bytes: 1_000_000,
                ..LIMITS
            },
            t0,
        );
        s.claimed(t0, [], 10, 2_000_000);
        assert_eq!(
            s.claim_size(t0, false),
            Some(10),
            "2 MB bound / 200 kB rows"
        );
        s.claimed(t0, [], 10, 100);
        assert_eq!(
            s.claim_size(t0, false),
            Some(500),
            "small rows: a whole batch"
        );
        s.claimed(t0, [], 0, 0);
        assert_eq!(
            s.claim_size(t0, false),
            Some(500),
            "an empty claim teaches nothing"
        );
    }

    #[test]
    fn idle_endpoints_are_forgotten() {
        let t0 = Instant::now();
        let mut s = Schedule::new(LIMITS, t0);
        let mut own = facts(ep(1), "t");
        own.max_in_flight = Some(2);
        teach_with(&mut s, own, t0);
        assert_eq!(
            s.rooms(t0).endpoints.get(&ep(1)),
            Some(&2),
            "its own limit, remembered"
        );
        s.prune(t0 + PRUNE_EVERY);
        assert_eq!(
            s.rooms(t0).endpoints.get(&ep(1)),
            Some(&2),
            "not idle long enough"
        );
        s.prune(t0 + KNOWN_TTL + PRUNE_EVERY);
        assert_eq!(
            s.rooms(t0).endpoints.get(&ep(1)),
            None,
            "forgotten: the default room"
        );
    }

    fn teach_with(s: &mut Schedule<F>, f: F, now: Instant) {
        put(s, 0, f, now).unwrap();
        for (_, slot) in start_all(s) {
            s.finish(slot, Some(Duration::from_secs(1)), now);
        }
    }

    #[test]
    fn queued_work_is_given_back_whole() {
        let now = Instant::now();
        let mut s = Schedule::new(
            Limits {
                max_in_flight: 1,
                ..LIMITS
            },
            now,
        );
        for i in 0..3 {
            put(&mut s, i, facts(ep(1), "t"), now).unwrap();
        }
        assert_eq!(start_all(&mut s).len(), 1);
        let mut back: Vec<u32> = s.take_queued().into_iter().map(|j| j.n).collect();
        back.sort();
        assert_eq!(back, [1, 2]);
        assert_eq!(s.queued(), 0);
    }

    /// A batching endpoint's job: number, key group, halvings, bytes.
    #[derive(Debug, Clone, Copy)]
    struct B {
        n: u32,
        group: u64,
        halvings: u32,
        bytes: usize,
        test: bool,
        rate: Option<f64>,
    }

    const BATCHING: Batching = Batching {
        max_events: 10,
        max_wait: Duration::from_millis(100),
        max_bytes: 1000,
    };

    impl Job for B {
        fn endpoint(&self) -> EndpointFacts<'_> {
            EndpointFacts {
                id: ep(7),
                tenant: "t",
                max_in_flight: Some(2),
                rate_limit_per_s: self.rate,
                batching: Some(BATCHING),
            }
        }
        fn batch_key(&self) -> Option<BatchKey> {
            (!self.test).then_some(BatchKey {
                group: self.group,
                halvings: self.halvings,
            })
        }
        fn bytes(&self) -> usize {
            self.bytes
        }
    }

    fn b(n: u32) -> B {
        B {
            n,
            group: 0,
            halvings: 0,
            bytes: 10,
            test: false,
            rate: None,
        }
    }

    fn numbers(jobs: Option<Vec<B>>) -> Option<Vec<u32>> {
        jobs.map(|j| j.into_iter().map(|j| j.n).collect())
    }

    #[test]
    fn a_batch_takes_the_run_of_its_key_within_its_limits_and_waits_for_company() {
        let t0 = Instant::now();
        let later = t0 + BATCHING.max_wait;
        let q = |jobs: &[B]| -> VecDeque<(Instant, B)> { jobs.iter().map(|j| (t0, *j)).collect() };
        // Three of one key, nothing behind: it waits, then goes.
        let mut three = q(&[b(1), b(2), b(3)]);
        assert_eq!(numbers(take(&mut three, Some(BATCHING), t0)), None);
        assert_eq!(three.len(), 3, "nothing taken while it waits");
        assert_eq!(
            numbers(take(&mut three, Some(BATCHING), later)),
            Some(vec![1, 2, 3])
        );
        // Full at max_events: goes at once, the rest stays.
        let mut many = q(&(1..=12).map(b).collect::<Vec<_>>());
        assert_eq!(
            numbers(take(&mut many, Some(BATCHING), t0)),
            Some((1..=10).collect())
        );
        assert_eq!(many.len(), 2);
        // Another key behind it: the run cannot grow, so it goes at once.
        let mut mixed = q(&[b(1), b(2), B { group: 1, ..b(3) }, b(4)]);
        assert_eq!(
            numbers(take(&mut mixed, Some(BATCHING), t0)),
            Some(vec![1, 2])
        );
        assert_eq!(numbers(take(&mut mixed, Some(BATCHING), t0)), Some(vec![3]));
        // Split twice: at most 10 / 4 = 2 together.
        let split = |n| B {
            halvings: 2,
            ..b(n)
        };
        let mut halves = q(&[split(1), split(2), split(3)]);
        assert_eq!(
            numbers(take(&mut halves, Some(BATCHING), t0)),
            Some(vec![1, 2])
        );
        // Halved past one: one at a time.
        let mut alone = q(&[
            B {
                halvings: 9,
                ..b(1)
            },
            B {
                halvings: 9,
                ..b(2)
            },
        ]);
        assert_eq!(numbers(take(&mut alone, Some(BATCHING), t0)), Some(vec![1]));
        // Bytes: 400 + 400 fit, the third would pass 1000; the first goes
        // whatever its size.
        let big = |n, bytes| B { bytes, ..b(n) };
        let mut sized = q(&[big(1, 400), big(2, 400), big(3, 400)]);
        assert_eq!(
            numbers(take(&mut sized, Some(BATCHING), t0)),
            Some(vec![1, 2])
        );
        let mut huge = q(&[big(1, 5000), big(2, 10)]);
        assert_eq!(numbers(take(&mut huge, Some(BATCHING), t0)), Some(vec![1]));
        // A test send goes alone and at once; so does anything of an
        // endpoint that does not batch.
        let mut test = q(&[B { test: true, ..b(1) }, b(2)]);
        assert_eq!(numbers(take(&mut test, Some(BATCHING), t0)), Some(vec![1]));
        let mut plain = q(&[b(1), b(2)]);
        assert_eq!(numbers(take(&mut plain, None, t0)), Some(vec![1]));
    }

    #[test]
    fn a_batching_endpoint_counts_requests_against_its_limits_and_rows_in_its_room() {
        let t0 = Instant::now();
        let mut s: Schedule<B> = Schedule::new(LIMITS, t0);
        s.enqueue(b(0), t0).unwrap();
        assert_eq!(
            s.claim_size(t0, true),
            Some(LIMITS.batch_size * BATCHING_CLAIM_ROUNDS - 1),
            "claims of several batches' worth"
        );
        s.take_queued();
        // max_in_flight 2, 10 a batch: it may hold 20 deliveries.
        for n in 0..20 {
            s.enqueue(b(n), t0).unwrap();
        }
        assert_eq!(s.enqueue(b(20), t0).map_err(|j| j.n), Err(20));
        assert_eq!(s.rooms(t0).endpoints.get(&ep(7)), Some(&0));
        let mut started = Vec::new();
        s.pump(|jobs, slot| started.push((jobs.len(), slot)), t0);
        assert_eq!(
            started.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [10, 10],
            "two requests of ten"
        );
        assert_eq!(s.running(), 2);
        assert_eq!(s.queued(), 0);
        assert_eq!(s.blocked().endpoints, [ep(7)], "both requests in flight");
        // One request ends: room for a request's worth of rows.
        let (_, slot) = started.pop().unwrap();
        s.finish(slot, Some(Duration::from_secs(1)), t0);
        assert_eq!(s.rooms(t0).endpoints.get(&ep(7)), Some(&10));
        assert!(s.blocked().endpoints.is_empty(), "room for a request");
        // Three queued wait for company, and say until when.
        for n in 0..3 {
            s.enqueue(b(n), t0).unwrap();
        }
        let mut none = 0;
        s.pump(|_, _| none += 1, t0);
        assert_eq!(none, 0);
        assert_eq!(s.next_batch_due(), Some(t0 + BATCHING.max_wait));
        let mut late = Vec::new();
        s.pump(|jobs, _| late.push(jobs.len()), t0 + BATCHING.max_wait);
        assert_eq!(late, [3]);
        assert_eq!(s.next_batch_due(), None);
    }

    #[test]
    fn a_batching_endpoints_rate_limit_counts_requests() {
        let t0 = Instant::now();
        let mut s: Schedule<B> = Schedule::new(LIMITS, t0);
        let limited = |n| B {
            rate: Some(1.0),
            ..b(n)
        };
        // One token a second: its room is a request's worth of rows.
        for n in 0..20 {
            s.enqueue(limited(n), t0).unwrap();
        }
        let mut started = Vec::new();
        s.pump(|jobs, _| started.push(jobs.len()), t0);
        assert_eq!(started, [10], "one request of ten, not one of one");
        assert_eq!(s.next_token(t0), Some(t0 + Duration::from_secs(1)));
        s.pump(
            |jobs, _| started.push(jobs.len()),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(started, [10, 10], "the next with the next token");
    }
}
