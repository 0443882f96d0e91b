//! Per-key request rate limits: a token bucket per API key (by the key's
//! hash, so it is found before any database work), in this process (N API
//! processes allow N times the rate). A bucket is made only for a key that
//! authenticated ([`Limiter::take`] after authentication), so made-up keys
//! cost no memory; a known key is stopped before it reaches the database
//! ([`Limiter::take_known`]). Plain data and an injected clock, so tests
//! pin it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A key's SHA-256.
pub type Key = [u8; 32];

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// `rate` requests a second per key, in bursts of up to `burst`.
pub struct Limiter {
    rate: f64,
    burst: f64,
    // A std mutex: the critical section is a few arithmetic operations.
    buckets: Mutex<HashMap<Key, Bucket>>,
}

impl Limiter {
    /// A rate of 0 turns the limit off.
    pub fn new(rate: u32, burst: u32) -> Limiter {
        Limiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` at `now` (making its bucket, full, if it has
    /// none), or says how long until one is there.
    pub fn take(&self, key: Key, now: Instant) -> Result<(), Duration> {
        self.take_with(key, now, true).unwrap_or(Ok(()))
    }

    /// [`Limiter::take`] for a key that has a bucket; None for one that has not.
    pub fn take_known(&self, key: Key, now: Instant) -> Option<Result<(), Duration>> {
        self.take_with(key, now, false)
    }

    fn take_with(&self, key: Key, now: Instant, make: bool) -> Option<Result<(), Duration>> {
        if self.rate == 0.0 {
            return Some(Ok(()));
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = match buckets.get_mut(&key) {
            Some(b) => b,
            None if make => buckets.entry(key).or_insert(Bucket {
                tokens: self.burst,
                at: now,
            }),
            None => return None,
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        Some(if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        })
    }

    /// Forgets keys whose bucket has refilled: a full bucket is the same as
    /// none, so memory stays bounded by the keys active lately.
    pub fn sweep(&self, now: Instant) {
        if self.rate == 0.0 {
            return;
        }
        let full = Duration::from_secs_f64(self.burst / self.rate);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|_, b| now.saturating_duration_since(b.at) < full);
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = Limiter::new(10, 5);
        let (k, t0) = ([1; 32], Instant::now());
        for _ in 0..5 {
            assert_eq!(l.take(k, t0), Ok(()));
        }
        let wait = l.take(k, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.take(k, t1), Ok(()));
        assert!(l.take(k, t1).is_err());
        // Another key has its own bucket.
        assert_eq!(l.take([2; 32], t1), Ok(()));
        // Never more than the burst, however long idle.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(l.take(k, t2), Ok(()));
        }
        assert!(l.take(k, t2).is_err());
    }

    #[test]
    fn only_taken_keys_have_buckets() {
        let l = Limiter::new(10, 1);
        let t0 = Instant::now();
        assert_eq!(l.take_known([9; 32], t0), None, "unknown: no bucket made");
        assert!(l.is_empty());
        assert_eq!(l.take([9; 32], t0), Ok(()));
        assert!(
            l.take_known([9; 32], t0).unwrap().is_err(),
            "known, and empty"
        );
        assert_eq!(
            l.take_known([9; 32], t0 + Duration::from_millis(100)),
            Some(Ok(()))
        );
    }

    #[test]
    fn zero_is_off_and_sweep_forgets_full_buckets() {
        let off = Limiter::new(0, 1);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(off.take([0; 32], t0), Ok(()));
        }
        let l = Limiter::new(10, 5);
        l.take([1; 32], t0).unwrap();
        l.take([2; 32], t0 + Duration::from_millis(400)).unwrap();
        l.sweep(t0 + Duration::from_millis(600));
        assert_eq!(
            l.len(),
            1,
            "the first refilled after 500 ms; the second not yet"
        );
    }
}
