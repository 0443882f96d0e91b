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

/// ±20%, uniformly.
fn jitter(gap: Duration) -> Duration {
    gap.mul_f64(0.8 + 0.4 * fastrand::f64())
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

    #[test]
    fn default_schedule_is_eight_attempts_with_jitter() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for attempt in 1..=7u32 {
            let want = DEFAULT_RETRY_SCHEDULE[attempt as usize - 1];
            for _ in 0..50 {
                let gap = next_attempt(&DEFAULT_RETRY_SCHEDULE, attempt, Some(500), None, now)
                    .unwrap()
                    .duration_since(now)
                    .unwrap();
                assert!(
                    gap >= want.mul_f64(0.8) && gap <= want.mul_f64(1.2),
                    "attempt {attempt}: {gap:?}"
                );
            }
        }
        assert_eq!(
            next_attempt(&DEFAULT_RETRY_SCHEDULE, 8, Some(500), None, now),
            None
        );
        assert_eq!(next_attempt(&[], 1, None, None, now), None);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds_for_429_and_503_only() {
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
