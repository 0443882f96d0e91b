//! Taking work from the outbox: expanding emitted events into deliveries,
//! claiming due deliveries fairly with `FOR UPDATE SKIP LOCKED` and a lease,
//! giving claims back, and when the next one is due. Also what a claimed
//! delivery is ([`Claimed`]) and its endpoint's settings; its request body
//! is [`crate::body`]'s.
//!
//! The statements are the extension's functions (sql/queue.sql:
//! `postbox.claim`, `claimed_endpoints`, `release_claims`, `release_lost`,
//! `next_due`), so they can be read, run and EXPLAINed as written; this
//! module passes the worker's figures (rooms, limits) and reads the rows.

use crate::body::Envelope;
use crate::schedule::Rooms;
use deadpool_postgres::Client;
use postbox_rules::headers::SignatureStyle;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("database: {}", postbox_runtime::error::pg_message(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("endpoint {0} has malformed stored JSON: {1}")]
    Json(Uuid, serde_json::Error),
}

/// An endpoint's delivery settings, loaded once per claim batch. No `Debug`:
/// it holds secrets.
pub struct Endpoint {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub signature_style: SignatureStyle,
    /// The header of a `sha256-hex` or `hex` signature.
    pub signature_header: Option<String>,
    pub options: postbox_rules::options::EndpointOptions,
    /// Valid secrets, newest first.
    pub secrets: Vec<String>,
    pub envelope: Envelope,
}

/// A claimed delivery with all it takes to send it.
pub struct Claimed {
    pub id: i64,
    pub tenant: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    /// Attempts already made.
    pub attempts: i32,
    pub is_test: bool,
    pub queued_at: SystemTime,
    pub event_type: String,
    pub event_time: SystemTime,
    /// Shared by the event's deliveries in one claim.
    pub data: Arc<str>,
    pub endpoint: Arc<Endpoint>,
    /// How often a batch that carried it was split (a batching endpoint's).
    pub batch_split: i16,
}

impl Claimed {
    /// Its event, for a body.
    pub fn event(&self) -> crate::body::Event<'_> {
        crate::body::Event {
            id: self.event_id,
            event_type: &self.event_type,
            time: self.event_time,
            data: &self.data,
        }
    }

    /// The request body of this delivery alone: the endpoint's envelope
    /// around the event's data ([`crate::body::render`]).
    pub fn body(&self) -> String {
        crate::body::render(self.endpoint.envelope, &self.event())
    }
}

impl crate::schedule::Job for Claimed {
    fn endpoint(&self) -> crate::schedule::EndpointFacts<'_> {
        crate::schedule::EndpointFacts {
            id: self.endpoint_id,
            tenant: &self.tenant,
            max_in_flight: self.endpoint.options.max_in_flight,
            rate_limit_per_s: self.endpoint.options.rate_limit_per_s,
            batching: self.endpoint.options.batching(),
        }
    }

    /// Deliveries at the same attempt and split count go together: a batch
    /// that failed is retried together, and one split goes in smaller
    /// batches. Test sends always go alone.
    fn batch_key(&self) -> Option<crate::schedule::BatchKey> {
        (!self.is_test).then_some(crate::schedule::BatchKey {
            group: ((self.attempts as u32 as u64) << 16) | self.batch_split as u16 as u64,
            halvings: self.batch_split.max(0) as u32,
        })
    }

    fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// Expansion, per call: at most this many emitted events; a call that
/// returns fewer has emptied the buffer.
pub const EXPAND_BATCH: usize = 1000;
/// At most this many expansion calls per cycle (10,000 events), so a large
/// buffer of emitted rows does not hold up the claim behind it.
pub const EXPAND_ROUNDS: usize = 10;

pub const EXPAND: &str = "SELECT postbox.expand_events($1)";

/// The claim (sql/queue.sql), its arguments by name.
pub const CLAIM: &str = "SELECT * FROM postbox.claim(worker_id => $1, max_rows => $2,
    endpoint_ids => $3, endpoint_rooms => $4, endpoint_room => $5,
    tenants => $6, tenant_rooms => $7, tenant_room => $8,
    lease_seconds => $9, max_bytes => $10)";

/// Endpoint settings and valid secrets, once per endpoint of a claim batch.
pub const ENDPOINTS: &str = "SELECT * FROM postbox.claimed_endpoints($1)";

/// An int4 parameter: rooms never come near i32::MAX, but never wrap.
fn int4(n: u32) -> i32 {
    n.min(i32::MAX as u32) as i32
}

/// What one claim took.
pub struct Batch {
    pub jobs: Vec<Claimed>,
    /// The lease the claim set (the database's time), if it took anything.
    /// Every claim's lease is later than the one before, so rows this worker
    /// leased later than the last batch it received are from a claim whose
    /// answer it never read ([`release_lost`]).
    pub lease_until: Option<SystemTime>,
}

/// Claims up to `limit` due deliveries within `rooms` and `max_bytes` of
/// payload (the first row is always taken), leased for `lease`.
pub async fn claim(
    db: &Client,
    worker_id: &str,
    limit: usize,
    rooms: &Rooms,
    max_bytes: u64,
    lease: Duration,
) -> Result<Batch, ClaimError> {
    let (ep_ids, ep_rooms): (Vec<Uuid>, Vec<i32>) =
        rooms.endpoints.iter().map(|(k, v)| (*k, int4(*v))).unzip();
    let (tenants, tenant_rooms): (Vec<&str>, Vec<i32>) =
        rooms.tenants.iter().map(|(k, v)| (&**k, int4(*v))).unzip();
    let stmt = db.prepare_cached(CLAIM).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &worker_id,
                &(limit as i64),
                &ep_ids,
                &ep_rooms,
                &int4(rooms.default_endpoint),
                &tenants,
                &tenant_rooms,
                &int4(rooms.default_tenant),
                &lease.as_secs_f64(),
                &(max_bytes.min(i64::MAX as u64) as i64),
            ],
        )
        .await?;
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.get(2)).collect();
    ids.sort();
    ids.dedup();
    let endpoints = endpoints(db, &ids).await?;
    let lease_until = rows.first().map(|r| r.get(10));
    // An event's rows (one per endpoint) share one copy of its data.
    let mut data: HashMap<Uuid, Arc<str>> = HashMap::new();
    for r in &rows {
        data.entry(r.get(3))
            .or_insert_with(|| Arc::from(r.get::<_, &str>(9)));
    }
    let jobs = rows
        .into_iter()
        .filter_map(|r| {
            // An endpoint deleted meanwhile: its deliveries were cancelled.
            let endpoint = endpoints.get(&r.get::<_, Uuid>(2))?.clone();
            Some(Claimed {
                id: r.get(0),
                tenant: r.get(1),
                endpoint_id: r.get(2),
                event_id: r.get(3),
                attempts: r.get(4),
                is_test: r.get(5),
                queued_at: r.get(6),
                event_type: r.get(7),
                event_time: r.get(8),
                data: data.get(&r.get::<_, Uuid>(3))?.clone(),
                endpoint,
                batch_split: r.get(11),
            })
        })
        .collect();
    Ok(Batch { jobs, lease_until })
}

async fn endpoints(db: &Client, ids: &[Uuid]) -> Result<HashMap<Uuid, Arc<Endpoint>>, ClaimError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let stmt = db.prepare_cached(ENDPOINTS).await?;
    let rows = db.query(&stmt, &[&ids]).await?;
    rows.into_iter()
        .map(|r| {
            let id: Uuid = r.get(0);
            let headers_text: &str = r.get(2);
            let headers: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(headers_text).map_err(|e| ClaimError::Json(id, e))?;
            let options: serde_json::Value =
                serde_json::from_str(r.get::<_, &str>(5)).map_err(|e| ClaimError::Json(id, e))?;
            let options = postbox_rules::options::parse(&options).unwrap_or_else(|e| {
                tracing::warn!(endpoint_id = %id, error = %e, "stored options are invalid; using defaults");
                Default::default()
            });
            let signature_style = SignatureStyle::parse(r.get(3)).unwrap_or_else(|e| {
                tracing::warn!(endpoint_id = %id, error = %e, "stored signature style is invalid; signing as standard");
                SignatureStyle::Standard
            });
            let envelope = Envelope::parse(r.get(7)).unwrap_or_else(|| {
                tracing::warn!(endpoint_id = %id, "stored envelope is invalid; using postbox");
                Envelope::Postbox
            });
            Ok((
                id,
                Arc::new(Endpoint {
                    url: r.get(1),
                    headers: headers
                        .into_iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                        .collect(),
                    signature_style,
                    signature_header: r.get(4),
                    options,
                    secrets: r.get(6),
                    envelope,
                }),
            ))
        })
        .collect()
}

/// Expands committed events into deliveries; returns how many events.
pub async fn expand(db: &Client, max_events: usize) -> Result<usize, ClaimError> {
    let stmt = db.prepare_cached(EXPAND).await?;
    let n: i32 = db.query_one(&stmt, &[&(max_events as i32)]).await?.get(0);
    Ok(n as usize)
}

/// Gives claims back (shutdown): the next claim anywhere takes them at once.
pub async fn release(db: &Client, ids: &[i64], worker_id: &str) -> Result<u64, ClaimError> {
    let n: i64 = db
        .query_one("SELECT postbox.release_claims($1, $2)", &[&ids, &worker_id])
        .await?
        .get(0);
    Ok(n as u64)
}

/// Gives back what this worker leased after `after` (its last batch's
/// lease; `None`: it has received none): rows of a claim whose answer was
/// lost with its connection, or whose endpoints could not be read. Run
/// after a failed claim cycle only: it reads the outbox by `leased_by`,
/// which has no index (claims stay HOT updates).
pub async fn release_lost(
    db: &Client,
    worker_id: &str,
    after: Option<SystemTime>,
) -> Result<u64, ClaimError> {
    let n: i64 = db
        .query_one("SELECT postbox.release_lost($1, $2)", &[&worker_id, &after])
        .await?
        .get(0);
    Ok(n as u64)
}

/// When the next claimable delivery is due (sql/queue.sql: `next_due`).
pub const NEXT_DUE: &str = "SELECT postbox.next_due($1, $2)";

/// The earliest scheduled attempt of a routable endpoint, to sleep exactly
/// until it. Endpoints and tenants this worker cannot start more for (at
/// their in-flight limit, out of rate tokens, a tenant at its limit) are
/// left out: their due rows would wake the loop at once, again and again,
/// with nothing it may claim.
pub async fn next_due(
    db: &Client,
    blocked: &crate::schedule::Blocked<'_>,
) -> Result<Option<SystemTime>, ClaimError> {
    let stmt = db.prepare_cached(NEXT_DUE).await?;
    Ok(db
        .query_one(&stmt, &[&blocked.endpoints, &blocked.tenants])
        .await?
        .get(0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A claimed delivery of event 0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b,
    /// for other modules' tests.
    pub(crate) fn sample_job(
        style: SignatureStyle,
        header: Option<&str>,
        secrets: &[&str],
    ) -> Claimed {
        let mut j = job("order.paid", "{}");
        j.endpoint = Arc::new(Endpoint {
            url: "https://hooks.example.com/in".into(),
            headers: Vec::new(),
            signature_style: style,
            signature_header: header.map(str::to_string),
            options: Default::default(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            envelope: Envelope::Postbox,
        });
        j
    }

    fn job(event_type: &str, data: &str) -> Claimed {
        Claimed {
            id: 7,
            tenant: "acme".into(),
            endpoint_id: Uuid::nil(),
            event_id: Uuid::parse_str("0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
            attempts: 0,
            is_test: false,
            queued_at: SystemTime::UNIX_EPOCH,
            event_type: event_type.into(),
            event_time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            data: Arc::from(data),
            batch_split: 0,
            endpoint: Arc::new(Endpoint {
                url: "https://hooks.example.com/in".into(),
                headers: Vec::new(),
                signature_style: SignatureStyle::Standard,
                signature_header: None,
                options: Default::default(),
                secrets: Vec::new(),
                envelope: Envelope::Postbox,
            }),
        }
    }
}
