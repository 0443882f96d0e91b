//! Taking work from the outbox: expanding emitted events into deliveries,
//! claiming due deliveries fairly with `FOR UPDATE SKIP LOCKED` and a lease,
//! giving claims back, and when the next one is due. Also what a claimed
//! delivery is ([`Claimed`]) and its endpoint's settings; its request body
//! is [`crate::body`]'s.
//!
//! "Due" is spelled once, in `due!`: pending, its time come, and not
//! leased (or its lease run out). The claim and the metrics use it;
//! [`NEXT_DUE`] uses the same rule without the time (`claimable!`).
//!
//! Every statement here runs as a generic plan (the worker forces those), so
//! each is shaped to reach rows through indexes whatever the parameters: the
//! endpoints with work come from the due index, never from a scan of all
//! endpoints. Rooms and limits come from the worker as arrays; the SQL reads
//! no endpoint options.

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
    /// The custom headers' names with masked values (JSON), for the attempt
    /// log; `None`: none. Never the values: they are often credentials, and
    /// the log outlives a replaced one. Shared, so an attempt's outcome takes
    /// it without a copy.
    pub headers_json: Option<Arc<str>>,
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
    pub data: String,
    pub endpoint: Arc<Endpoint>,
}

impl Claimed {
    /// The request body: the endpoint's envelope around the event's data
    /// ([`crate::body::render`]).
    pub fn body(&self) -> String {
        crate::body::render(
            self.endpoint.envelope,
            &crate::body::Event {
                id: self.event_id,
                event_type: &self.event_type,
                time: self.event_time,
                data: &self.data,
            },
        )
    }
}

impl crate::schedule::Job for Claimed {
    fn endpoint(&self) -> crate::schedule::EndpointFacts<'_> {
        crate::schedule::EndpointFacts {
            id: self.endpoint_id,
            tenant: &self.tenant,
            max_in_flight: self.endpoint.options.max_in_flight,
            rate_limit_per_s: self.endpoint.options.rate_limit_per_s,
        }
    }
}

/// Expansion, per call: at most this many emitted events; a call that
/// returns fewer has emptied the buffer.
pub const EXPAND_BATCH: usize = 1000;
/// At most this many expansion calls per cycle (10,000 events), so a large
/// buffer of emitted rows does not hold up the claim behind it.
pub const EXPAND_ROUNDS: usize = 10;

pub const EXPAND: &str = "SELECT postbox.expand_events($1)";

/// Not leased, or its lease has run out (a crashed worker's claim). `$t` is
/// the outbox's alias.
macro_rules! unleased {
    ($t:literal) => {
        concat!(
            "(",
            $t,
            ".lease_until IS NULL OR ",
            $t,
            ".lease_until < now())"
        )
    };
}
pub(crate) use unleased;

/// Claimable at some time: pending and `unleased!`. [`NEXT_DUE`] uses it.
macro_rules! claimable {
    ($t:literal) => {
        concat!($t, ".status = 'pending' AND ", $crate::claim::unleased!($t))
    };
}

/// An endpoint that gets deliveries: enabled by its admin, not suspended by
/// its tenant's plan (limit 0), not disabled for failing. Written once for the
/// claim and [`NEXT_DUE`]; test sends take the endpoints this leaves out,
/// except suspended ones.
macro_rules! sending {
    ($t:literal) => {
        concat!(
            $t,
            ".enabled AND NOT ",
            $t,
            ".suspended AND ",
            $t,
            ".disabled_at IS NULL"
        )
    };
}

/// Due: claimable, and its time has come. The one definition the claim and
/// the metrics use.
macro_rules! due {
    ($t:literal) => {
        concat!(
            $t,
            ".status = 'pending' AND ",
            $t,
            ".next_attempt_at <= now() AND ",
            $crate::claim::unleased!($t)
        )
    };
}
pub(crate) use due;

/// Endpoints with pending rows, one probe of `outbox_due` each (a loose index
/// scan): the cost follows the endpoints that have work, not every endpoint
/// there is (200,000 idle endpoints made a scan of them all cost 0.5 s). The
/// last row is NULL; joins on it find nothing.
macro_rules! due_endpoints {
    () => {
        "due(endpoint_id) AS (
    (SELECT o.endpoint_id FROM postbox.outbox o WHERE o.status = 'pending'
      ORDER BY o.endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT o.endpoint_id FROM postbox.outbox o
             WHERE o.status = 'pending' AND o.endpoint_id > d.endpoint_id
             ORDER BY o.endpoint_id LIMIT 1)
      FROM due d WHERE d.endpoint_id IS NOT NULL
)"
    };
}
pub(crate) use due_endpoints;

/// Test sends to paused or disabled endpoints per claim (the claim's second
/// branch): they are rare and attempted once, and this keeps a flood of them
/// from filling a claim meant for routable endpoints. [`TESTS_PER_CLAIM`].
macro_rules! tests_per_claim {
    () => {
        "16"
    };
}
/// See `tests_per_claim!`, which the SQL text needs as a literal.
pub const TESTS_PER_CLAIM: usize = 16;

// Fair claim: each routable endpoint with pending rows, in random order,
// offers at most its room (computed by the worker: its in-flight limit minus
// what this worker holds, within its rate limit; $5 for endpoints the worker
// has no figure for), and all of a tenant's endpoints together at most the
// tenant's room ($8 unless listed). A running sum over the events' sizes
// stops the claim at $10 bytes (the first row goes whatever its size, so a
// large payload still goes out). Only then are rows leased, so rows cut by a
// cap are never leased. A second branch takes
// test sends to endpoints that are paused or disabled.
pub const CLAIM: &str = concat!(
    "WITH RECURSIVE ",
    due_endpoints!(),
    ", eps AS (
    SELECT e.id, e.tenant,
           least(coalesce(r.room, $5::int4), coalesce(t.room, $8::int4)) AS room,
           coalesce(t.room, $8::int4) AS tenant_room,
           random() AS r
      FROM due d
     CROSS JOIN LATERAL (SELECT e.id, e.tenant FROM postbox.endpoints e
                          WHERE e.id = d.endpoint_id AND ",
    sending!("e"),
    "
                         OFFSET 0) e
      LEFT JOIN unnest($3::uuid[], $4::int4[]) AS r(endpoint_id, room) ON r.endpoint_id = e.id
      LEFT JOIN unnest($6::text[], $7::int4[]) AS t(tenant, room) ON t.tenant = e.tenant
), fair AS (
    SELECT d.id, d.event_id, d.next_attempt_at, o.tenant, o.tenant_room, o.r
      FROM (SELECT * FROM eps WHERE eps.room > 0 ORDER BY eps.r) o
     CROSS JOIN LATERAL (
           SELECT d.id, d.event_id, d.next_attempt_at FROM postbox.outbox d
            WHERE d.endpoint_id = o.id AND ",
    due!("d"),
    "
            ORDER BY d.next_attempt_at
            LIMIT o.room
              FOR UPDATE SKIP LOCKED) d
     LIMIT $2
), capped AS (
    SELECT f.id, f.event_id, f.r, f.next_attempt_at
      FROM (SELECT f.*, row_number() OVER (PARTITION BY f.tenant ORDER BY f.r, f.next_attempt_at) AS n
              FROM fair f) f
     WHERE f.n <= f.tenant_room
), tests AS (
    SELECT d.id, d.event_id, 2.0::float8 AS r, d.next_attempt_at FROM postbox.outbox d
     WHERE d.is_test AND ",
    due!("d"),
    "
       AND EXISTS (SELECT FROM postbox.endpoints e
                    WHERE e.id = d.endpoint_id AND NOT e.suspended AND NOT (",
    sending!("e"),
    "))
     ORDER BY d.next_attempt_at
     LIMIT ",
    tests_per_claim!(),
    "
       FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT s.id, s.event_type, s.created_at, s.data
      FROM (SELECT p.id, v.event_type, v.created_at, v.data,
                   octet_length(v.data) AS size,
                   sum(octet_length(v.data)) OVER (ORDER BY p.r, p.next_attempt_at, p.id
                                                   ROWS UNBOUNDED PRECEDING) AS upto
              FROM (SELECT * FROM capped UNION ALL SELECT * FROM tests) p
             -- Events fetched per row, by primary key (the generic plan cannot
             -- scan the table); the text is made once and returned as is.
             CROSS JOIN LATERAL (SELECT v.event_type, v.created_at, v.data::text AS data
                                   FROM postbox.events v WHERE v.id = p.event_id OFFSET 0) v) s
     WHERE s.upto <= $10 OR s.upto = s.size
), claimed AS (
    -- Ids as an array, for the primary key (see `picked`).
    UPDATE postbox.outbox o
       SET lease_until = now() + make_interval(secs => $9::float8), leased_by = $1
     WHERE o.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING o.id, o.tenant, o.endpoint_id, o.event_id, o.attempts, o.is_test, o.created_at,
              o.lease_until
)
SELECT c.id, c.tenant, c.endpoint_id, c.event_id, c.attempts, c.is_test, c.created_at,
       p.event_type, p.created_at, p.data, c.lease_until
  FROM claimed c JOIN picked p ON p.id = c.id"
);

// Endpoint settings and valid secrets, once per endpoint of a claim batch.
pub const ENDPOINTS: &str = "
SELECT e.id, e.url, e.headers::text, e.signature_style, e.signature_header, e.options::text,
       ARRAY(SELECT s.secret FROM postbox.endpoint_secrets s
              WHERE s.endpoint_id = e.id AND (s.expires_at IS NULL OR s.expires_at > now())
              ORDER BY s.created_at DESC),
       e.envelope
  FROM postbox.endpoints e
 WHERE e.id = ANY($1)";

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
                data: r.get(9),
                endpoint,
            })
        })
        .collect();
    Ok(Batch { jobs, lease_until })
}

/// What the attempt log keeps of an endpoint's custom headers: the names,
/// each value masked ([`postbox_rules::headers::masked`]); `None` for none.
fn logged_headers(headers: &serde_json::Map<String, serde_json::Value>) -> Option<Arc<str>> {
    (!headers.is_empty()).then(|| {
        Arc::from(serde_json::Value::Object(postbox_rules::headers::masked(headers)).to_string())
    })
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
            let headers_json = logged_headers(&headers);
            Ok((
                id,
                Arc::new(Endpoint {
                    url: r.get(1),
                    headers: headers
                        .into_iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                        .collect(),
                    headers_json,
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
    Ok(db
        .execute(
            "UPDATE postbox.outbox SET lease_until = NULL, leased_by = NULL
              WHERE id = ANY($1) AND leased_by = $2 AND status = 'pending'",
            &[&ids, &worker_id],
        )
        .await?)
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
    Ok(db
        .execute(
            "UPDATE postbox.outbox SET lease_until = NULL, leased_by = NULL
              WHERE leased_by = $1 AND status = 'pending'
                AND lease_until > coalesce($2, '-infinity'::timestamptz)",
            &[&worker_id, &after],
        )
        .await?)
}

/// The earliest attempt time of a claimable row (see `claimable!`, the
/// claim's rule: a row whose lease ran out counts) of a routable endpoint,
/// except those in `$1` (endpoints) and `$2` (tenants).
pub const NEXT_DUE: &str = concat!(
    "WITH RECURSIVE ",
    due_endpoints!(),
    "
SELECT min(x.n) FROM due d
 CROSS JOIN LATERAL (SELECT FROM postbox.endpoints e
                      WHERE e.id = d.endpoint_id AND ",
    sending!("e"),
    "
                        AND e.id <> ALL ($1::uuid[]) AND e.tenant <> ALL ($2::text[])
                     OFFSET 0) e
 CROSS JOIN LATERAL (SELECT o.next_attempt_at AS n FROM postbox.outbox o
                      WHERE o.endpoint_id = d.endpoint_id AND ",
    claimable!("o"),
    "
                      ORDER BY o.next_attempt_at LIMIT 1) x"
);

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
            headers_json: None,
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
            data: data.into(),
            endpoint: Arc::new(Endpoint {
                url: "https://hooks.example.com/in".into(),
                headers: Vec::new(),
                signature_style: SignatureStyle::Standard,
                signature_header: None,
                options: Default::default(),
                secrets: Vec::new(),
                headers_json: None,
                envelope: Envelope::Postbox,
            }),
        }
    }

    #[test]
    fn the_attempt_log_gets_header_names_never_values() {
        let stored = serde_json::json!({"Authorization": "Bearer s3cr3t", "X-Team": "blue"});
        let logged = logged_headers(stored.as_object().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&logged).unwrap();
        let mask = postbox_rules::headers::MASKED_VALUE;
        assert_eq!(
            v,
            serde_json::json!({"Authorization": mask, "X-Team": mask})
        );
        assert!(!logged.contains("s3cr3t") && !logged.contains("blue"));
        assert_eq!(
            logged_headers(&serde_json::Map::new()),
            None,
            "none: nothing"
        );
    }

    #[test]
    fn due_is_spelled_once() {
        assert_eq!(
            due!("d"),
            "d.status = 'pending' AND d.next_attempt_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())"
        );
        // Both branches of the claim, the metrics' count and oldest row.
        assert_eq!(CLAIM.matches(due!("d")).count(), 2);
        assert_eq!(crate::metrics::REFRESH.matches(due!("o")).count(), 2);
        // next_due: claimable rows (expired leases included), whatever their time.
        assert!(NEXT_DUE.contains(claimable!("o")));
        assert!(CLAIM.contains(&format!("LIMIT {TESTS_PER_CLAIM}\n")));
    }
}
