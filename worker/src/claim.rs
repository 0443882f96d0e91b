//! Taking work from the outbox: expanding events into deliveries, claiming
//! due deliveries fairly with `FOR UPDATE SKIP LOCKED` and a lease, and the
//! wake-up flag.

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
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
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

// Fair claim: each routable endpoint, in random order, offers at most its free
// room (its in-flight limit minus what this worker already has in flight,
// and for rate-limited endpoints one second's worth); a second branch takes
// test sends to endpoints that are paused or disabled.
pub const CLAIM: &str = "
WITH busy AS (
    SELECT * FROM unnest($3::uuid[], $4::int4[]) AS b(endpoint_id, n)
), eps AS (
    SELECT e.id,
           least(CASE WHEN e.id = ANY($9::uuid[])
                      THEN least(coalesce((e.options ->> 'max_in_flight')::int4, $5::int4), $10::int4) * 4
                      ELSE coalesce((e.options ->> 'max_in_flight')::int4, $5::int4) END
                   - coalesce((SELECT b.n FROM busy b WHERE b.endpoint_id = e.id), 0),
                 coalesce(ceil((e.options ->> 'rate_limit_per_s')::float8)::int4, 2147483647),
                 coalesce((SELECT r.room FROM unnest($6::uuid[], $7::int4[]) AS r(endpoint_id, room)
                            WHERE r.endpoint_id = e.id), 2147483647)) AS room
      FROM postbox.endpoints e
     WHERE e.enabled AND e.disabled_at IS NULL
     ORDER BY random()
), fair AS (
    SELECT d.id
      FROM eps CROSS JOIN LATERAL (
           SELECT d.id FROM postbox.outbox d
            WHERE d.endpoint_id = eps.id AND d.status = 'pending' AND d.next_attempt_at <= now()
              AND (d.lease_until IS NULL OR d.lease_until < now())
            ORDER BY d.next_attempt_at
            LIMIT greatest(eps.room, 0)
              FOR UPDATE SKIP LOCKED) d
     LIMIT $2
), tests AS (
    SELECT d.id FROM postbox.outbox d
     WHERE d.is_test AND d.status = 'pending' AND d.next_attempt_at <= now()
       AND (d.lease_until IS NULL OR d.lease_until < now())
       AND NOT EXISTS (SELECT FROM postbox.endpoints e
                        WHERE e.id = d.endpoint_id AND e.enabled AND e.disabled_at IS NULL)
     ORDER BY d.next_attempt_at
     LIMIT 16
       FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM fair UNION ALL SELECT id FROM tests
), claimed AS (
    -- Shaped so the generic plan (the worker forces those) cannot scan whole
    -- tables: ids as an array for the primary key, events fetched per row.
    UPDATE postbox.outbox o
       SET lease_until = now() + make_interval(secs => $8::float8), leased_by = $1
     WHERE o.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING o.id, o.tenant, o.endpoint_id, o.event_id, o.attempts, o.is_test, o.created_at
)
SELECT c.id, c.tenant, c.endpoint_id, c.event_id, c.attempts, c.is_test, c.created_at,
       v.event_type, v.created_at, v.data::text
  FROM claimed c
 CROSS JOIN LATERAL (SELECT v.event_type, v.created_at, v.data FROM postbox.events v
                      WHERE v.id = c.event_id OFFSET 0) v";

// Endpoint settings and valid secrets, once per endpoint of a claim batch.
pub const ENDPOINTS: &str = "
SELECT e.id, e.url, e.headers::text, e.signature_style, e.signature_header, e.options::text,
       ARRAY(SELECT s.secret FROM postbox.endpoint_secrets s
              WHERE s.endpoint_id = e.id AND (s.expires_at IS NULL OR s.expires_at > now())
              ORDER BY s.created_at DESC)
  FROM postbox.endpoints e
 WHERE e.id = ANY($1)";

/// What bounds a claim per endpoint.
pub struct Room<'a> {
    /// In-flight limit of endpoints whose options set none.
    pub default_cap: u32,
    /// What this worker holds per endpoint (in flight or queued).
    pub held: &'a HashMap<Uuid, u32>,
    /// Further caps (rate limits).
    pub rate: &'a HashMap<Uuid, u32>,
    /// Endpoints that may have up to 4x their in-flight limit claimed.
    pub fast: &'a [Uuid],
    /// The in-flight limit of fast endpoints is at most this (their share).
    pub fast_share: u32,
}

/// Claims up to `limit` due deliveries within `room`, leased for `lease`.
pub async fn claim(
    db: &Client,
    worker_id: &str,
    limit: usize,
    room: Room<'_>,
    lease: Duration,
) -> Result<Vec<Claimed>, ClaimError> {
    let (busy_ids, busy_n): (Vec<Uuid>, Vec<i32>) =
        room.held.iter().map(|(k, v)| (*k, *v as i32)).unzip();
    let (room_ids, room_n): (Vec<Uuid>, Vec<i32>) =
        room.rate.iter().map(|(k, v)| (*k, *v as i32)).unzip();
    let stmt = db.prepare_cached(CLAIM).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &worker_id,
                &(limit as i64),
                &busy_ids,
                &busy_n,
                &(room.default_cap as i32),
                &room_ids,
                &room_n,
                &lease.as_secs_f64(),
                &room.fast,
                &(room.fast_share as i32),
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

/// The earliest scheduled attempt of a routable endpoint, to sleep exactly until it.
pub async fn next_due(db: &Client, full: &[Uuid]) -> Result<Option<SystemTime>, ClaimError> {
    // Endpoints this worker cannot start more for (at their in-flight limit,
    // or out of rate tokens) are left out: their due rows would wake the loop
    // at once, again and again, with nothing it may claim.
    let stmt = db
        .prepare_cached(
            "SELECT min(x.n) FROM postbox.endpoints e CROSS JOIN LATERAL (
                 SELECT d.next_attempt_at AS n FROM postbox.outbox d
                  WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.lease_until IS NULL
                  ORDER BY d.next_attempt_at LIMIT 1) x
              WHERE e.enabled AND e.disabled_at IS NULL AND e.id <> ALL ($1::uuid[])",
        )
        .await?;
    Ok(db.query_one(&stmt, &[&full]).await?.get(0))
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
