//! When the next attempt happens: the endpoint's schedule with ±20% jitter,
//! or the receiver's Retry-After on 429 and 503, within bounds.

use std::time::{Duration, SystemTime};

pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(6 * 3600);

/// What to do after a failed attempt number `attempt` (1-based).
pub fn next_attempt(
    gaps: &[Duration],
    attempt: u32,
    status: Option<u16>,
    retry_after: Option<Duration>,
    now: SystemTime,
) -> Option<SystemTime> {
    let gap = *gaps.get(attempt as usize - 1)?;
    let gap = match (status, retry_after) {
        (Some(429 | 503), Some(ra)) => ra.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX),
        _ => jitter(gap),
    };
    Some(now + gap)
}

/// Each gap is moved by up to this share either way, so deliveries that
/// failed together (an endpoint's outage) do not all retry at once.
pub const JITTER: f64 = 0.2;

/// ±[`JITTER`], uniformly.
fn jitter(gap: Duration) -> Duration {
    gap.mul_f64(1.0 - JITTER + 2.0 * JITTER * fastrand::f64())
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use postbox_rules::options::DEFAULT_RETRY_SCHEDULE;

    /// The documented schedule (docs/design.md: "at once, then after 5 s, 5 min,
    /// 30 min, 2 h, 5 h, 10 h and 10 h"), written out here, not taken from
    /// the constant it checks.
    const DOCUMENTED: [u64; 7] = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];

    #[test]
    fn default_schedule_is_eight_attempts_with_jitter() {
        let documented = DOCUMENTED.map(Duration::from_secs);
        assert_eq!(DEFAULT_RETRY_SCHEDULE, documented);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for (attempt, secs) in (1..=7u32).zip(DOCUMENTED) {
            let (mut least, mut most) = (f64::MAX, 0f64);
            for _ in 0..200 {
                let gap = next_attempt(&DEFAULT_RETRY_SCHEDULE, attempt, Some(500), None, now)
                    .unwrap()
                    .duration_since(now)
                    .unwrap()
                    .as_secs_f64();
                least = least.min(gap);
                most = most.max(gap);
            }
            let want = secs as f64;
            assert!(
                least >= 0.8 * want && most <= 1.2 * want,
                "attempt {attempt}: {least}..{most}s, want {want}s ±20%"
            );
            // Jitter spreads retries: 200 draws cover most of the ±20%.
            assert!(
                least < 0.9 * want && most > 1.1 * want,
                "attempt {attempt}: {least}..{most}s is not spread"
            );
        }
        assert_eq!(
            next_attempt(&DEFAULT_RETRY_SCHEDULE, 8, Some(500), None, now),
            None,
            "eight attempts in all"
        );
        assert_eq!(next_attempt(&[], 1, None, None, now), None);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds_for_429_and_503_only() {
        assert_eq!(RETRY_AFTER_MIN, Duration::from_secs(1), "design.md: 1 s");
        assert_eq!(
            RETRY_AFTER_MAX,
            Duration::from_secs(6 * 3600),
            "docs/design.md: 6 h"
        );
        let now = SystemTime::UNIX_EPOCH;
        let at = |status, ra| {
            next_attempt(&DEFAULT_RETRY_SCHEDULE, 1, Some(status), ra, now)
                .unwrap()
                .duration_since(now)
                .unwrap()
        };
        assert_eq!(
            at(429, Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
        assert_eq!(at(503, Some(Duration::ZERO)), RETRY_AFTER_MIN);
        assert_eq!(at(503, Some(Duration::from_secs(999_999))), RETRY_AFTER_MAX);
        assert!(at(500, Some(Duration::from_secs(90))) <= Duration::from_secs(6));
    }

    #[test]
    fn parses_both_retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(3500) && d <= Duration::from_secs(3600),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
