//! Per-endpoint delivery options, stored as JSON on the endpoint.
//!
//! The extension validates them on write; the worker parses the same JSON
//! with the same function, so a stored value always means one thing.

use crate::codes::Code;
use crate::error::RuleError;
use serde_json::Value;
use std::time::Duration;

/// Gaps between attempts when an endpoint sets no `retry_schedule`: 8
/// attempts in all, the first at once.
pub const DEFAULT_RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

pub const TIMEOUT_MS: (u64, u64) = (100, 120_000);
pub const CONNECT_TIMEOUT_MS: (u64, u64) = (100, 60_000);
pub const MAX_IN_FLIGHT: (u64, u64) = (1, 1_000);
pub const RATE_LIMIT_PER_S: (f64, f64) = (0.01, 100_000.0);
pub const MAX_RETRIES: usize = 30;
pub const MAX_RETRY_GAP: Duration = Duration::from_secs(7 * 24 * 3600);
/// Events per request of a batching endpoint: 1 (no batching, the default)
/// to 1,000, the bound: a 1,000-event body of typical 1 KiB events
/// is about 1 MiB, the default `batch_max_bytes`.
pub const BATCH_MAX_EVENTS: (u64, u64) = (1, 1_000);
/// How long the first event of a batch may wait for company: at most a
/// minute, so that a batch never waits near a claim's lease.
pub const BATCH_MAX_WAIT_MS: (u64, u64) = (0, 60_000);
pub const DEFAULT_BATCH_MAX_WAIT: Duration = Duration::from_millis(100);
/// Bytes of event data per batch: 1 KiB to 16 MiB (the claim's default
/// byte budget, POSTBOX_CLAIM_MAX_BYTES); an event larger than the limit
/// goes alone.
pub const BATCH_MAX_BYTES: (u64, u64) = (1024, 16 << 20);
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1 << 20;

/// Whether an endpoint receives the events of one ordering key one at a
/// time, in emit order (`"ordering": "key"`), or as they come (`"none"`,
/// the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ordering {
    #[default]
    None,
    Key,
}

/// What an ordered endpoint does with a key whose delivery is given up
/// (`ordering_given_up`): `skip` (the default) sends the key's next event;
/// `hold` keeps the key waiting until the given-up delivery is retried or
/// replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GivenUp {
    #[default]
    Skip,
    Hold,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointOptions {
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub max_in_flight: Option<u32>,
    pub rate_limit_per_s: Option<f64>,
    pub retry_schedule: Option<Vec<Duration>>,
    pub batch_max_events: Option<u32>,
    pub batch_max_wait: Option<Duration>,
    pub batch_max_bytes: Option<usize>,
    pub ordering: Option<Ordering>,
    pub ordering_given_up: Option<GivenUp>,
    /// Of the waiting events with one ordering key and event type, only the
    /// newest is sent (`coalesce`); the older ones are marked `coalesced`.
    pub coalesce: Option<bool>,
}

/// How a batching endpoint's events are grouped into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// At most this many events per request (2 or more).
    pub max_events: u32,
    /// The first event waits at most this long for company.
    pub max_wait: Duration,
    /// At most this many bytes of event data per request, but for a single
    /// event larger than that, which goes alone.
    pub max_bytes: usize,
}

impl EndpointOptions {
    /// The gaps between attempts this endpoint uses.
    pub fn retry_gaps(&self) -> &[Duration] {
        self.retry_schedule
            .as_deref()
            .unwrap_or(&DEFAULT_RETRY_SCHEDULE)
    }

    /// How this endpoint batches; `None` when it does not
    /// (`batch_max_events` unset or 1).
    pub fn batching(&self) -> Option<Batching> {
        match self.batch_max_events {
            Some(n) if n > 1 => Some(Batching {
                max_events: n,
                max_wait: self.batch_max_wait.unwrap_or(DEFAULT_BATCH_MAX_WAIT),
                max_bytes: self.batch_max_bytes.unwrap_or(DEFAULT_BATCH_MAX_BYTES),
            }),
            _ => None,
        }
    }
}

const KEYS: &str = "timeout_ms, connect_timeout_ms, max_in_flight, rate_limit_per_s, retry_schedule, batch_max_events, batch_max_wait_ms, batch_max_bytes, ordering, ordering_given_up, coalesce";

/// One of a fixed set of words, for `ordering` and `ordering_given_up`.
fn word_in<T: Copy>(key: &str, v: &Value, words: &[(&str, T)]) -> Result<T, RuleError> {
    words
        .iter()
        .find(|(w, _)| v.as_str() == Some(w))
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let list: Vec<String> = words.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            RuleError::new(
                Code::OptionsValueInvalid,
                format!("options.{key} must be {}", list.join(" or ")),
                v,
            )
            .with_item(key)
        })
}

fn int_in(key: &str, v: &Value, (lo, hi): (u64, u64)) -> Result<u64, RuleError> {
    match v.as_u64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(RuleError::new(
            Code::OptionsValueInvalid,
            format!("options.{key} must be a whole number from {lo} to {hi}"),
            v,
        )
        .with_item(key)),
    }
}

/// Parses an endpoint's `options` object. Unknown keys and out-of-range
/// values are errors, about the field `options` (`item`: the key).
pub fn parse(v: &Value) -> Result<EndpointOptions, RuleError> {
    check(v).map_err(|e| e.in_field("options"))
}

fn check(v: &Value) -> Result<EndpointOptions, RuleError> {
    let Value::Object(map) = v else {
        return Err(RuleError::new(
            Code::OptionsNotObject,
            "options must be a JSON object",
            v,
        ));
    };
    let mut o = EndpointOptions::default();
    for (key, val) in map {
        match key.as_str() {
            "timeout_ms" => o.timeout = Some(Duration::from_millis(int_in(key, val, TIMEOUT_MS)?)),
            "connect_timeout_ms" => {
                o.connect_timeout =
                    Some(Duration::from_millis(int_in(key, val, CONNECT_TIMEOUT_MS)?))
            }
            "max_in_flight" => o.max_in_flight = Some(int_in(key, val, MAX_IN_FLIGHT)? as u32),
            "batch_max_events" => {
                o.batch_max_events = Some(int_in(key, val, BATCH_MAX_EVENTS)? as u32)
            }
            "batch_max_wait_ms" => {
                o.batch_max_wait = Some(Duration::from_millis(int_in(key, val, BATCH_MAX_WAIT_MS)?))
            }
            "batch_max_bytes" => {
                o.batch_max_bytes = Some(int_in(key, val, BATCH_MAX_BYTES)? as usize)
            }
            "ordering" => {
                o.ordering = Some(word_in(
                    key,
                    val,
                    &[("none", Ordering::None), ("key", Ordering::Key)],
                )?)
            }
            "ordering_given_up" => {
                o.ordering_given_up = Some(word_in(
                    key,
                    val,
                    &[("skip", GivenUp::Skip), ("hold", GivenUp::Hold)],
                )?)
            }
            "coalesce" => {
                o.coalesce = Some(val.as_bool().ok_or_else(|| {
                    RuleError::new(
                        Code::OptionsValueInvalid,
                        "options.coalesce must be true or false",
                        val,
                    )
                    .with_item(key)
                })?)
            }
            "rate_limit_per_s" => {
                let (lo, hi) = RATE_LIMIT_PER_S;
                match val.as_f64() {
                    Some(r) if (lo..=hi).contains(&r) => o.rate_limit_per_s = Some(r),
                    _ => {
                        return Err(RuleError::new(
                            Code::OptionsValueInvalid,
                            format!("options.rate_limit_per_s must be a number from {lo} to {hi}"),
                            val,
                        )
                        .with_item(key))
                    }
                }
            }
            "retry_schedule" => {
                o.retry_schedule = Some(parse_schedule(val).map_err(|e| e.with_item(key))?)
            }
            _ => {
                return Err(RuleError::new(
                    Code::OptionsUnknownKey,
                    format!("options may hold only {KEYS}"),
                    key,
                )
                .with_item(key))
            }
        }
    }
    if let (Some(c), Some(t)) = (o.connect_timeout, o.timeout) {
        if c > t {
            return Err(RuleError::new(
                Code::OptionsValueInvalid,
                "options.connect_timeout_ms must not exceed options.timeout_ms",
                format!("{} > {}", c.as_millis(), t.as_millis()),
            )
            .with_item("connect_timeout_ms"));
        }
    }
    Ok(o)
}

fn parse_schedule(v: &Value) -> Result<Vec<Duration>, RuleError> {
    let Value::Array(items) = v else {
        return Err(RuleError::new(
            Code::OptionsValueInvalid,
            "options.retry_schedule must be an array of intervals such as [\"30s\", \"5m\", \"2h\"]",
            v,
        ));
    };
    if items.len() > MAX_RETRIES {
        return Err(RuleError::new(
            Code::OptionsValueInvalid,
            format!("options.retry_schedule may hold at most {MAX_RETRIES} intervals"),
            items.len(),
        ));
    }
    items.iter().map(parse_gap).collect()
}

fn parse_gap(v: &Value) -> Result<Duration, RuleError> {
    let rule = || {
        RuleError::new(
            Code::OptionsValueInvalid,
            "options.retry_schedule intervals must be seconds or durations like \"500ms\", \"30s\", \"5m\", \"2h\", from 1ms to 7 days",
            v,
        )
    };
    let d = match v {
        Value::Number(n) => n
            .as_f64()
            // try_: past u64::MAX seconds from_secs_f64 panics; such a
            // gap is refused as out of range like any other.
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        Value::String(s) => humantime::parse_duration(s.trim()).ok(),
        _ => None,
    }
    .ok_or_else(rule)?;
    if d < Duration::from_millis(1) || d > MAX_RETRY_GAP {
        return Err(rule());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_every_option() {
        let o = parse(&json!({
            "timeout_ms": 2000, "connect_timeout_ms": 500, "max_in_flight": 4,
            "rate_limit_per_s": 2.5, "retry_schedule": ["100ms", "5s", 30, "2h"],
            "batch_max_events": 100, "batch_max_wait_ms": 250, "batch_max_bytes": 65536,
            "ordering": "key", "ordering_given_up": "hold", "coalesce": true
        }))
        .unwrap();
        assert_eq!(o.ordering, Some(Ordering::Key));
        assert_eq!(o.ordering_given_up, Some(GivenUp::Hold));
        assert_eq!(o.coalesce, Some(true));
        let o2 = parse(&json!({"ordering": "none", "ordering_given_up": "skip"})).unwrap();
        assert_eq!(
            (o2.ordering, o2.ordering_given_up),
            (Some(Ordering::None), Some(GivenUp::Skip))
        );
        assert_eq!(
            o.batching(),
            Some(Batching {
                max_events: 100,
                max_wait: Duration::from_millis(250),
                max_bytes: 65536
            })
        );
        // Batching is off unless batch_max_events is above 1; the other
        // two have defaults.
        assert_eq!(
            parse(&json!({"batch_max_wait_ms": 5})).unwrap().batching(),
            None
        );
        assert_eq!(
            parse(&json!({"batch_max_events": 1})).unwrap().batching(),
            None
        );
        assert_eq!(
            parse(&json!({"batch_max_events": 2})).unwrap().batching(),
            Some(Batching {
                max_events: 2,
                max_wait: DEFAULT_BATCH_MAX_WAIT,
                max_bytes: DEFAULT_BATCH_MAX_BYTES
            })
        );
        assert_eq!(o.timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(500)));
        assert_eq!(o.max_in_flight, Some(4));
        assert_eq!(o.rate_limit_per_s, Some(2.5));
        assert_eq!(
            o.retry_gaps(),
            [
                Duration::from_millis(100),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(7200)
            ]
        );
        // The documented default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
        let m = 60;
        let h = 3600;
        assert_eq!(
            parse(&json!({})).unwrap().retry_gaps(),
            [5, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h].map(Duration::from_secs)
        );
        assert!(parse(&json!({"retry_schedule": []}))
            .unwrap()
            .retry_gaps()
            .is_empty());
    }

    #[test]
    fn refuses_unknown_keys_and_out_of_range_values() {
        let cases = [
            (json!({"timeout": 5}), "may hold only"),
            (
                json!({"timeout_ms": 50}),
                "timeout_ms must be a whole number from 100 to 120000",
            ),
            (json!({"timeout_ms": 1.5}), "whole number"),
            (json!({"timeout_ms": "5s"}), "whole number"),
            (json!({"connect_timeout_ms": 999999}), "connect_timeout_ms"),
            (json!({"max_in_flight": 0}), "max_in_flight"),
            (
                json!({"batch_max_events": 1001}),
                "batch_max_events must be a whole number from 1 to 1000",
            ),
            (json!({"batch_max_events": 0}), "batch_max_events"),
            (
                json!({"batch_max_wait_ms": 60001}),
                "batch_max_wait_ms must be a whole number from 0 to 60000",
            ),
            (
                json!({"batch_max_bytes": 1023}),
                "batch_max_bytes must be a whole number from 1024 to 16777216",
            ),
            (json!({"rate_limit_per_s": -1}), "rate_limit_per_s"),
            (
                json!({"ordering": "fifo"}),
                "options.ordering must be \"none\" or \"key\"",
            ),
            (json!({"ordering": true}), "options.ordering must be"),
            (
                json!({"coalesce": "yes"}),
                "options.coalesce must be true or false",
            ),
            (
                json!({"ordering_given_up": "drop"}),
                "options.ordering_given_up must be \"skip\" or \"hold\"",
            ),
            (json!({"retry_schedule": "5s"}), "must be an array"),
            (json!({"retry_schedule": ["soon"]}), "intervals must be"),
            (json!({"retry_schedule": ["30d"]}), "intervals must be"),
            (json!({"retry_schedule": [0]}), "intervals must be"),
            (
                json!({"timeout_ms": 1000, "connect_timeout_ms": 2000}),
                "must not exceed",
            ),
            (json!([1]), "JSON object"),
        ];
        for (v, want) in cases {
            let e = parse(&v).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
