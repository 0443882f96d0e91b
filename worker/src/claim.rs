//! Taking work from the outbox: expanding events into deliveries, claiming
//! due deliveries fairly with `FOR UPDATE SKIP LOCKED` and a lease, and the
//! wake-up flag.
//!
//! Every statement here runs as a generic plan (the worker forces those), so
//! each is shaped to reach rows through indexes whatever the parameters: the
//! endpoints with work come from the due index, never from a scan of all
//! endpoints. Rooms and limits come from the worker as arrays; the SQL reads
//! no endpoint options.

use deadpool_postgres::Client;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// A database error with PostgreSQL's own message (tokio-postgres shows only "db error").
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            // The causes too: a TLS failure says why only further down.
            let mut out = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let text = s.to_string();
                if !out.contains(&text) {
                    out.push_str(": ");
                    out.push_str(&text);
                }
                source = s.source();
            }
            out
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("database: {}", pg_message(.0))]
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
    pub signature_style: String,
    pub signature_header: Option<String>,
    pub options: postbox_rules::options::EndpointOptions,
    /// Valid secrets, newest first.
    pub secrets: Vec<String>,
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
    /// `{"id", "event", "timestamp", "data"}`; `data` is the stored JSON as is.
    pub fn body(&self) -> String {
        let ts = humantime::format_rfc3339_micros(self.event_time).to_string();
        let mut s = String::with_capacity(self.data.len() + 128);
        s.push_str("{\"id\":\"");
        s.push_str(&self.event_id.to_string());
        s.push_str("\",\"event\":");
        s.push_str(&serde_json::Value::String(self.event_type.clone()).to_string());
        s.push_str(",\"timestamp\":\"");
        s.push_str(&ts);
        s.push_str("\",\"data\":");
        s.push_str(&self.data);
        s.push('}');
        s
    }
}

pub const EXPAND: &str = "SELECT postbox.expand_events($1)";

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
                          WHERE e.id = d.endpoint_id AND e.enabled AND e.disabled_at IS NULL
                         OFFSET 0) e
      LEFT JOIN unnest($3::uuid[], $4::int4[]) AS r(endpoint_id, room) ON r.endpoint_id = e.id
      LEFT JOIN unnest($6::text[], $7::int4[]) AS t(tenant, room) ON t.tenant = e.tenant
), fair AS (
    SELECT d.id, d.event_id, d.next_attempt_at, o.tenant, o.tenant_room, o.r
      FROM (SELECT * FROM eps WHERE eps.room > 0 ORDER BY eps.r) o
     CROSS JOIN LATERAL (
           SELECT d.id, d.event_id, d.next_attempt_at FROM postbox.outbox d
            WHERE d.endpoint_id = o.id AND d.status = 'pending' AND d.next_attempt_at <= now()
              AND (d.lease_until IS NULL OR d.lease_until < now())
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
     WHERE d.is_test AND d.status = 'pending' AND d.next_attempt_at <= now()
       AND (d.lease_until IS NULL OR d.lease_until < now())
       AND NOT EXISTS (SELECT FROM postbox.endpoints e
                        WHERE e.id = d.endpoint_id AND e.enabled AND e.disabled_at IS NULL)
     ORDER BY d.next_attempt_at
     LIMIT 16
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
    RETURNING o.id, o.tenant, o.endpoint_id, o.event_id, o.attempts, o.is_test, o.created_at
)
SELECT c.id, c.tenant, c.endpoint_id, c.event_id, c.attempts, c.is_test, c.created_at,
       p.event_type, p.created_at, p.data
  FROM claimed c JOIN picked p ON p.id = c.id"
);

// Endpoint settings and valid secrets, once per endpoint of a claim batch.
pub const ENDPOINTS: &str = "
SELECT e.id, e.url, e.headers::text, e.signature_style, e.signature_header, e.options::text,
       ARRAY(SELECT s.secret FROM postbox.endpoint_secrets s
              WHERE s.endpoint_id = e.id AND (s.expires_at IS NULL OR s.expires_at > now())
              ORDER BY s.created_at DESC)
  FROM postbox.endpoints e
 WHERE e.id = ANY($1)";

/// What bounds a claim, computed by the worker from what it holds.
pub struct Room<'a> {
    /// Endpoints whose room is not `default_endpoint`: held ones, fast ones,
    /// rate-limited ones, ones with their own `max_in_flight`.
    pub endpoints: &'a HashMap<Uuid, u32>,
    /// The room of any other endpoint (the default in-flight limit).
    pub default_endpoint: u32,
    /// Tenants whose room is not `default_tenant`.
    pub tenants: &'a HashMap<Arc<str>, u32>,
    /// The room of any other tenant (the tenant in-flight limit).
    pub default_tenant: u32,
    /// Most payload bytes in one claim; the first row is always taken.
    pub max_bytes: u64,
}

fn clamp(n: u32) -> i32 {
    n.min(i32::MAX as u32) as i32
}

/// Claims up to `limit` due deliveries within `room`, leased for `lease`.
pub async fn claim(
    db: &Client,
    worker_id: &str,
    limit: usize,
    room: Room<'_>,
    lease: Duration,
) -> Result<Vec<Claimed>, ClaimError> {
    let (ep_ids, ep_rooms): (Vec<Uuid>, Vec<i32>) =
        room.endpoints.iter().map(|(k, v)| (*k, clamp(*v))).unzip();
    let (tenants, tenant_rooms): (Vec<&str>, Vec<i32>) =
        room.tenants.iter().map(|(k, v)| (&**k, clamp(*v))).unzip();
    let stmt = db.prepare_cached(CLAIM).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &worker_id,
                &(limit as i64),
                &ep_ids,
                &ep_rooms,
                &clamp(room.default_endpoint),
                &tenants,
                &tenant_rooms,
                &clamp(room.default_tenant),
                &lease.as_secs_f64(),
                &(room.max_bytes.min(i64::MAX as u64) as i64),
            ],
        )
        .await?;
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.get(2)).collect();
    ids.sort();
    ids.dedup();
    let endpoints = endpoints(db, &ids).await?;
    Ok(rows
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
        .collect())
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
            let headers: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(r.get::<_, &str>(2)).map_err(|e| ClaimError::Json(id, e))?;
            let options: serde_json::Value =
                serde_json::from_str(r.get::<_, &str>(5)).map_err(|e| ClaimError::Json(id, e))?;
            let options = postbox_rules::options::parse(&options).unwrap_or_else(|e| {
                tracing::warn!(endpoint_id = %id, error = %e, "stored options are invalid; using defaults");
                Default::default()
            });
            Ok((
                id,
                Arc::new(Endpoint {
                    url: r.get(1),
                    headers: headers
                        .into_iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                        .collect(),
                    signature_style: r.get(3),
                    signature_header: r.get(4),
                    options,
                    secrets: r.get(6),
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

/// The earliest unleased pending row of a routable endpoint, except those
/// in `$1` (endpoints) and `$2` (tenants).
pub const NEXT_DUE: &str = concat!(
    "WITH RECURSIVE ",
    due_endpoints!(),
    "
SELECT min(x.n) FROM due d
 CROSS JOIN LATERAL (SELECT FROM postbox.endpoints e
                      WHERE e.id = d.endpoint_id AND e.enabled AND e.disabled_at IS NULL
                        AND e.id <> ALL ($1::uuid[]) AND e.tenant <> ALL ($2::text[])
                     OFFSET 0) e
 CROSS JOIN LATERAL (SELECT o.next_attempt_at AS n FROM postbox.outbox o
                      WHERE o.endpoint_id = d.endpoint_id AND o.status = 'pending'
                        AND o.lease_until IS NULL
                      ORDER BY o.next_attempt_at LIMIT 1) x"
);

/// The earliest scheduled attempt of a routable endpoint, to sleep exactly until it.
pub async fn next_due(
    db: &Client,
    full: &[Uuid],
    full_tenants: &[&str],
) -> Result<Option<SystemTime>, ClaimError> {
    // Endpoints this worker cannot start more for (at their in-flight limit,
    // out of rate tokens, or of a tenant at its limit) are left out: their due
    // rows would wake the loop at once, again and again, with nothing it may claim.
    let stmt = db.prepare_cached(NEXT_DUE).await?;
    Ok(db.query_one(&stmt, &[&full, &full_tenants]).await?.get(0))
}

/// Sets the wake-up flag that tells emitters to NOTIFY (see sql/schema.sql).
pub async fn set_waiting(db: &Client, waiting: bool) -> Result<(), ClaimError> {
    let stmt = db
        .prepare_cached(
            "INSERT INTO postbox.wakeup AS w (singleton, waiting) VALUES (true, $1)
             ON CONFLICT (singleton) DO UPDATE SET waiting = EXCLUDED.waiting
              WHERE w.waiting IS DISTINCT FROM EXCLUDED.waiting",
        )
        .await?;
    db.execute(&stmt, &[&waiting]).await?;
    Ok(())
}
