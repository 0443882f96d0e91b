//! Request rate limits, all decided before any database work, in this
//! process (N API processes allow N times the rates). Plain data and an
//! injected clock, so tests pin it.
//!
//! - **Per credential** (an API key or portal session, by its SHA-256): a
//!   token bucket. Every request takes its token before the database, so a
//!   burst is bounded from a key's very first request and no request is
//!   refused after its work was done. A credential seen for the first time
//!   gets a provisional bucket; it is dropped again if the credential does
//!   not authenticate, so made-up keys cost no lasting memory.
//! - **Per client address, failed authentications**: another bucket, taken
//!   from by each credential that the database did not know. When it is
//!   empty, credentials that this process has not seen authenticate lately
//!   are refused from that address before the database (429), so a flood of
//!   made-up keys costs no database work. Known credentials keep working.
//!
//! A full bucket is the same as none: [`Limiter::sweep`] forgets them, so
//! memory stays bounded by the credentials and addresses active lately.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a credential that authenticated stays known after its last
/// request: a tool that calls every few minutes stays known.
pub const KNOWN_FOR: Duration = Duration::from_secs(15 * 60);

/// A credential's SHA-256.
pub type Key = [u8; 32];

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Whether the credential has authenticated (else the bucket is
    /// provisional, and goes when it fails to).
    known: bool,
}

/// `rate` tokens a second, in bursts of up to `burst` (a rate of 0: no limit).
#[derive(Clone, Copy)]
pub struct Rate {
    pub rate: f64,
    pub burst: f64,
}

impl Rate {
    pub fn new(rate: u32, burst: u32) -> Rate {
        Rate {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
        }
    }

    fn off(&self) -> bool {
        self.rate == 0.0
    }

    /// Refills `b` to `now` and takes a token, or says how long until one is there.
    fn take(&self, b: &mut Bucket, now: Instant) -> Result<(), Duration> {
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
    }

    fn full(&self, b: &Bucket, now: Instant) -> bool {
        now.saturating_duration_since(b.at).as_secs_f64() * self.rate + b.tokens >= self.burst
    }

    fn fresh(&self, now: Instant, known: bool) -> Bucket {
        Bucket {
            tokens: self.burst,
            at: now,
            known,
        }
    }
}

/// Why a request was refused before the database.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The credential's own rate: retry after this long.
    Rate(Duration),
    /// Too many failed authentications from this address lately.
    Failures(Duration),
}

impl Refused {
    pub fn wait(&self) -> Duration {
        match self {
            Refused::Rate(d) | Refused::Failures(d) => *d,
        }
    }
}

pub struct Limiter {
    per_key: Rate,
    failures: Rate,
    // std mutexes: each critical section is a few arithmetic operations.
    keys: Mutex<HashMap<Key, Bucket>>,
    addresses: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    pub fn new(per_key: Rate, failures: Rate) -> Limiter {
        Limiter {
            per_key,
            failures,
            keys: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a request with credential `key` from `from` at `now`, before
    /// any database work: takes the credential's token (making a
    /// provisional bucket for one not seen lately, unless `from` is out of
    /// failed authentications).
    pub fn admit(&self, key: Key, from: IpAddr, now: Instant) -> Result<(), Refused> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = keys.get_mut(&key) {
            if self.per_key.off() {
                return Ok(());
            }
            return self.per_key.take(b, now).map_err(Refused::Rate);
        }
        if !self.failures.off() {
            let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = addresses.get_mut(&from) {
                self.failures.refill(a, now);
                if a.tokens < 1.0 {
                    return Err(Refused::Failures(Duration::from_secs_f64(
                        (1.0 - a.tokens) / self.failures.rate,
                    )));
                }
            }
        }
        let b = keys
            .entry(key)
            .or_insert_with(|| self.per_key.fresh(now, false));
        if self.per_key.off() {
            return Ok(());
        }
        self.per_key.take(b, now).map_err(Refused::Rate)
    }

    /// The credential authenticated: its bucket stays.
    pub fn known(&self, key: Key) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = keys.get_mut(&key) {
            b.known = true;
        }
    }

    /// The credential did not authenticate: its bucket goes (unless it had
    /// authenticated before, then it goes anyway: it is revoked now), and
    /// `from` spends one of its failures.
    pub fn failed(&self, key: Key, from: IpAddr, now: Instant) {
        self.forget(key);
        if self.failures.off() {
            return;
        }
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let a = addresses
            .entry(from)
            .or_insert_with(|| self.failures.fresh(now, true));
        self.failures.refill(a, now);
        a.tokens = (a.tokens - 1.0).max(0.0);
    }

    /// Drops `key`'s bucket (a portal link, used once).
    pub fn forget(&self, key: Key) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Forgets buckets that have refilled: a full bucket is the same as
    /// none. Except that a credential that authenticated is remembered for
    /// [`KNOWN_FOR`] after its last use, so that it still gets in while its
    /// address is out of failed authentications (a NAT or proxy shared with
    /// someone trying made-up keys).
    pub fn sweep(&self, now: Instant) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| {
                (b.known && now.saturating_duration_since(b.at) < KNOWN_FOR)
                    || (!self.per_key.off() && !self.per_key.full(b, now))
            });
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| !self.failures.off() && !self.failures.full(b, now));
    }

    /// Credentials with a bucket (known or provisional).
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` has a bucket that has authenticated.
    pub fn is_known(&self, key: Key) -> bool {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|b| b.known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn limiter(rate: u32, burst: u32, failures: u32, failure_burst: u32) -> Limiter {
        Limiter::new(Rate::new(rate, burst), Rate::new(failures, failure_burst))
    }

    #[test]
    fn a_burst_then_the_rate_from_the_first_request() {
        let l = limiter(10, 5, 1, 10);
        let (k, t0) = ([1; 32], Instant::now());
        // The first request of a key takes from a fresh bucket: the burst
        // holds even before the key has authenticated once.
        for _ in 0..5 {
            assert_eq!(l.admit(k, A, t0), Ok(()));
        }
        assert_eq!(
            l.admit(k, A, t0),
            Err(Refused::Rate(Duration::from_millis(100)))
        );
        l.known(k);
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.admit(k, A, t1), Ok(()));
        assert!(l.admit(k, A, t1).is_err());
        // Another key has its own bucket.
        assert_eq!(l.admit([2; 32], A, t1), Ok(()));
        // Never more than the burst, however long idle.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(l.admit(k, A, t2), Ok(()));
        }
        assert!(l.admit(k, A, t2).is_err());
    }

    #[test]
    fn failed_credentials_leave_no_bucket_and_spend_the_address_budget() {
        let l = limiter(100, 100, 1, 3);
        let t0 = Instant::now();
        let good = [9; 32];
        l.admit(good, A, t0).unwrap();
        l.known(good);
        for i in 0..3u8 {
            let made_up = [i; 32];
            assert_eq!(
                l.admit(made_up, A, t0),
                Ok(()),
                "failure {i} is still admitted"
            );
            l.failed(made_up, A, t0);
            assert!(!l.is_known(made_up));
        }
        assert_eq!(l.len(), 1, "only the good key keeps a bucket");
        // A's failures are spent: unknown credentials from A stop here...
        assert_eq!(
            l.admit([7; 32], A, t0),
            Err(Refused::Failures(Duration::from_secs(1)))
        );
        // ...a known one does not, and neither do other addresses.
        assert_eq!(l.admit(good, A, t0), Ok(()));
        assert_eq!(l.admit([7; 32], B, t0), Ok(()));
        // One failure a second comes back.
        assert_eq!(l.admit([8; 32], A, t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn known_credentials_are_remembered_a_while() {
        let l = limiter(10, 5, 1, 1);
        let t0 = Instant::now();
        l.admit([1; 32], A, t0).unwrap();
        l.known([1; 32]);
        l.admit([2; 32], A, t0).unwrap();
        l.sweep(t0 + Duration::from_secs(60));
        assert!(l.is_known([1; 32]), "known, used a minute ago");
        assert_eq!(l.len(), 1, "the provisional one went");
        l.sweep(t0 + KNOWN_FOR);
        assert!(l.is_empty());
    }

    #[test]
    fn zero_is_off_and_sweep_forgets_full_buckets() {
        let off = limiter(0, 1, 0, 1);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let k = [(i % 250) as u8; 32];
            assert_eq!(off.admit(k, A, t0), Ok(()));
            off.failed(k, A, t0);
        }
        let l = limiter(10, 5, 1, 2);
        l.admit([1; 32], A, t0).unwrap();
        l.admit([2; 32], A, t0 + Duration::from_millis(550))
            .unwrap();
        l.failed([3; 32], B, t0);
        l.sweep(t0 + Duration::from_millis(600));
        assert_eq!(
            l.len(),
            1,
            "the first refilled after 100 ms; the second not yet"
        );
        assert_eq!(l.addresses.lock().unwrap().len(), 1, "B refills after 1 s");
        l.sweep(t0 + Duration::from_secs(2));
        assert!(l.is_empty());
        assert!(l.addresses.lock().unwrap().is_empty());
    }
}
