//! A request's deliveries: one, or a batching endpoint's batch of them
//! ([`Request`]), and what happens to a batch that fails ([`splits`]).
//!
//! Which queued deliveries go together is the schedule's
//! ([`crate::schedule::take`]); the body is [`crate::body`]'s.

use crate::ack::Verdict;
use crate::claim::Claimed;
use uuid::Uuid;

/// One request's deliveries, all to one endpoint.
pub struct Request {
    /// One, or a batch in emit order (by event id, UUIDv7).
    pub jobs: Vec<Claimed>,
    /// A batch's own id: its `webhook-id` and its body's `id`, new for each
    /// attempt (a retried batch may not hold the same events); receivers
    /// deduplicate by each event's id. None for a single delivery.
    pub batch_id: Option<Uuid>,
}

impl Request {
    /// A request of `jobs` (at least one): a batch when the schedule put
    /// more than one together, or one of a batching endpoint's deliveries
    /// that went alone (which is still sent as a batch, so that a batching
    /// endpoint's receiver always gets one shape).
    pub fn new(mut jobs: Vec<Claimed>) -> Request {
        let batched = jobs.len() > 1
            || jobs
                .first()
                .is_some_and(|j| !j.is_test && j.endpoint.options.batching().is_some());
        if !batched {
            return Request {
                jobs,
                batch_id: None,
            };
        }
        jobs.sort_by_key(|j| j.event_id);
        Request {
            jobs,
            batch_id: Some(Uuid::now_v7()),
        }
    }

    pub fn first(&self) -> &Claimed {
        &self.jobs[0]
    }

    /// The id the request is signed with (`webhook-id`): the batch's, or the
    /// event's.
    pub fn message_id(&self) -> Uuid {
        self.batch_id.unwrap_or(self.first().event_id)
    }

    /// The request body: the event in its endpoint's envelope, or the batch
    /// ([`crate::body::render_batch`]).
    pub fn body(&self) -> String {
        match self.batch_id {
            None => self.first().body(),
            Some(id) => {
                let events: Vec<crate::body::Event<'_>> =
                    self.jobs.iter().map(Claimed::event).collect();
                crate::body::render_batch(id, &events)
            }
        }
    }
}

/// Whether a failed batch of `len` deliveries is split in halves, each
/// sent again at once, instead of being retried or given up whole:
/// - the receiver refused it (4xx but 408, 425 and 429, which say "later",
///   and 410, which disables the endpoint): something in it is refused, and
///   halving finds the event in log2(len) steps while the rest goes through;
/// - it ran out of attempts: a batch is never given up whole, so only
///   events that fail alone are given up.
///
/// A batch that fails otherwise (5xx, a timeout, no connection) is retried
/// whole on the endpoint's schedule: such a failure says nothing about its
/// events, and an endpoint that is down would otherwise end up receiving
/// single events. A split does not count as an attempt of its deliveries,
/// and a batch splits at most log2(`batch_max_events`) times, so a batch of
/// n costs at most 2n - 1 extra requests.
pub fn splits(len: usize, status: Option<u16>, verdict: Verdict) -> bool {
    len > 1
        && match verdict {
            Verdict::Succeeded | Verdict::Gone | Verdict::Split => false,
            Verdict::Failed => true,
            Verdict::Retry(_) => status.is_some_and(refused),
        }
}

/// A 4xx that refuses the request itself rather than asking for it later.
fn refused(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 410 | 425 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_refused_or_exhausted_batch_splits_and_a_failing_one_is_retried_whole() {
        let retry = Verdict::Retry(SystemTime::UNIX_EPOCH);
        for (len, status, verdict, want) in [
            (100, Some(400), retry, true),
            (2, Some(413), retry, true),
            (2, Some(422), retry, true),
            (100, Some(500), retry, false),
            (100, Some(503), retry, false),
            (100, None, retry, false),
            (100, Some(408), retry, false),
            (100, Some(425), retry, false),
            (100, Some(429), retry, false),
            (100, Some(301), retry, false),
            (100, Some(500), Verdict::Failed, true),
            (100, None, Verdict::Failed, true),
            (100, Some(410), Verdict::Gone, false),
            (100, Some(200), Verdict::Succeeded, false),
            (1, Some(400), retry, false),
            (1, Some(500), Verdict::Failed, false),
        ] {
            assert_eq!(
                splits(len, status, verdict),
                want,
                "{len} events, {status:?}, {verdict:?}"
            );
        }
    }
}
