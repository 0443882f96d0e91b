//! Per-key request rate limits: a token bucket per API key, in this
//! process (N API processes allow N times the rate). Plain data and an
//! injected clock, so tests pin it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// `rate` requests a second per key, in bursts of up to `burst`.
pub struct Limiter {
    rate: f64,
    burst: f64,
    // A std mutex: the critical section is a few arithmetic operations.
    buckets: Mutex<HashMap<Uuid, Bucket>>,
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

    /// Takes a token for `key` at `now`, or says how long until one is there.
    pub fn take(&self, key: Uuid, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
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
        let (k, t0) = (Uuid::from_u128(1), Instant::now());
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
        assert_eq!(l.take(Uuid::from_u128(2), t1), Ok(()));
        // Never more than the burst, however long idle.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(l.take(k, t2), Ok(()));
        }
        assert!(l.take(k, t2).is_err());
    }

    #[test]
    fn zero_is_off_and_sweep_forgets_full_buckets() {
        let off = Limiter::new(0, 1);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(off.take(Uuid::nil(), t0), Ok(()));
        }
        let l = Limiter::new(10, 5);
        l.take(Uuid::from_u128(1), t0).unwrap();
        l.take(Uuid::from_u128(2), t0 + Duration::from_millis(400))
            .unwrap();
        l.sweep(t0 + Duration::from_millis(600));
        assert_eq!(
            l.len(),
            1,
            "the first refilled after 500 ms; the second not yet"
        );
    }
}
