//! The ceiling C: the least work any table-based outbox does for figure 2,
//! as bare loops run together for a fixed window, in the same run as the
//! figures it bounds (the machine's speed moves between runs and machines).
//!
//! - The writer (this process): each event once and one row per delivery,
//!   10 endpoints, the payload of figure 2, in transactions of 1,000 events;
//!   it stays [`BACKLOG`] deliveries ahead, so the claim always finds work.
//! - The sender (a child process, [`sender`], standing for the worker):
//!   claims batches of [`CLAIM_ROWS`] with `FOR UPDATE SKIP LOCKED` and a
//!   lease, reads each event's payload, signs it (Standard Webhooks, the
//!   shared `postbox_rules::sign`) and POSTs it with the worker's HTTP stack
//!   (reqwest, rustls, keep-alive, [`IN_FLIGHT`] at once), and deletes the
//!   acknowledged rows in batches.
//! - The receiver: the benchmark's own (this process).
//!
//! What it leaves out is all that postbox adds: routing by event type and
//! tenant, fairness and rooms, the endpoints' settings and secrets, the
//! envelope, retries, the attempt log, endpoint health. So no outbox that
//! does figure 2's work on this machine can beat it; figure 2 is reported
//! as a ratio of it.

use crate::procstat;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_postgres::NoTls;

/// Rows per claim: the worker's batches are about this size at figure 2's
/// rate (claims of up to 500 rows).
pub const CLAIM_ROWS: i64 = 500;
/// Requests in flight: what the worker has in flight to figure 2's
/// endpoints, which answer fast (its fast lane, DEFAULT_FAST_IN_FLIGHT:
/// past 64, each request cost more CPU on this machine kind).
pub const IN_FLIGHT: usize = 64;
/// Deliveries the writer keeps ahead of the receiver.
pub const BACKLOG: u64 = 50_000;
/// Acknowledgements per delete, at most (one delete at a time, of what
/// arrived meanwhile).
const ACK_ROWS: usize = 500;
/// The signing secret (the Standard Webhooks reference one).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Events keep their data as text (json), rendered once when written, as
/// postbox's do since 0.9.0: rendering jsonb on every claim is work an outbox
/// need not do, so the floor does not do it either.
const SCHEMA: &str = "
DROP SCHEMA IF EXISTS ceiling CASCADE;
CREATE SCHEMA ceiling;
CREATE TABLE ceiling.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), data json NOT NULL);
CREATE TABLE ceiling.deliveries (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id bigint NOT NULL, endpoint int NOT NULL, lease_until timestamptz);
";

const WRITE: &str = "
WITH e AS (INSERT INTO ceiling.events (data)
           SELECT jsonb_build_object('i', i, 'pad', repeat('x', 560)) FROM generate_series(1, 1000) i
           RETURNING id)
INSERT INTO ceiling.deliveries (event_id, endpoint) SELECT e.id, n FROM e, generate_series(0, 9) n";

const CLAIM: &str = "
WITH c AS (SELECT id FROM ceiling.deliveries WHERE lease_until IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED),
     u AS (UPDATE ceiling.deliveries d SET lease_until = now() + interval '30 s' FROM c WHERE d.id = c.id
           RETURNING d.id, d.event_id, d.endpoint)
SELECT u.id, u.endpoint, v.created_at::text, v.data::text FROM u JOIN ceiling.events v ON v.id = u.event_id";

const ACK: &str = "DELETE FROM ceiling.deliveries WHERE id = ANY($1)";

/// What one measurement found.
pub struct Ceiling {
    /// Deliveries a second, all loops together.
    pub rate: f64,
    pub deliveries: u64,
    pub postgres: Duration,
    pub sender: Duration,
    /// The receiver and the writer's client (this process).
    pub rest: Duration,
}

/// Runs the loops for `window` after `warmup` on `b`'s cluster and
/// receiver, and measures them over the window.
pub async fn measure(b: &crate::Bench, warmup: Duration, window: Duration) -> Ceiling {
    let (db, stats, postmaster) = (&b.db, &b.stats, b.postmaster());
    let url = b.pg.url("postgres");
    db.batch_execute(SCHEMA)
        .await
        .expect("the ceiling's tables");
    db.batch_execute("CHECKPOINT").await.unwrap();
    stats.reset();
    let writer = b.pg.connect("postgres").await;
    let mut child = crate::Started::spawn(
        std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--ceiling-sender")
            .env("POSTBOX_CEILING_DB", &url)
            .env("POSTBOX_CEILING_RX", b.rx.to_string()),
    );
    let sender_pid = child.id();
    let mut written = 0u64;
    let start = Instant::now();
    let mut marks: Option<(u64, Instant, Duration, Duration, Duration)> = None;
    let end = start + warmup + window;
    let result = loop {
        let now = Instant::now();
        let ok = stats.ok.load(Ordering::SeqCst);
        if marks.is_none() && now >= start + warmup {
            marks = Some((
                ok,
                now,
                procstat::cluster_cpu(postmaster),
                procstat::process_cpu(sender_pid),
                procstat::process_cpu(std::process::id()),
            ));
        }
        if now >= end {
            let (ok0, t0, p0, s0, b0) = marks.unwrap();
            let n = ok - ok0;
            break Ceiling {
                rate: n as f64 / now.duration_since(t0).as_secs_f64(),
                deliveries: n,
                postgres: procstat::cluster_cpu(postmaster) - p0,
                sender: procstat::process_cpu(sender_pid) - s0,
                rest: procstat::process_cpu(std::process::id()) - b0,
            };
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the ceiling's sender exited: {status}");
        }
        if written < ok + BACKLOG {
            writer
                .execute(WRITE, &[])
                .await
                .expect("the ceiling's write");
            written += 10_000;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    drop(child);
    db.batch_execute("DROP SCHEMA ceiling CASCADE")
        .await
        .unwrap();
    result
}

/// The sender loop, run as `postbox-bench --ceiling-sender` until killed.
pub async fn sender() {
    let url = std::env::var("POSTBOX_CEILING_DB").expect("POSTBOX_CEILING_DB");
    let rx: SocketAddr = std::env::var("POSTBOX_CEILING_RX")
        .expect("POSTBOX_CEILING_RX")
        .parse()
        .unwrap();
    let connect = || async {
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    };
    let claimer = connect().await;
    let acker = Arc::new(connect().await);
    let claim = claimer.prepare(CLAIM).await.unwrap();
    let ack = acker.prepare(ACK).await.unwrap();
    // As the worker's client is built (worker/src/deliver.rs), less the
    // resolver: the URLs are IP literals.
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(IN_FLIGHT)
        .tcp_nodelay(true)
        .user_agent("postbox-bench-ceiling")
        .build()
        .unwrap();
    let urls: Arc<Vec<String>> = Arc::new((0..10).map(|n| format!("http://{rx}/e{n}")).collect());
    // Acknowledgements: one delete at a time, of all that came meanwhile
    // (at most ACK_ROWS), as the worker batches them.
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel::<i64>();
    tokio::spawn(async move {
        while let Some(first) = answers.recv().await {
            let mut ids = vec![first];
            while ids.len() < ACK_ROWS {
                match answers.try_recv() {
                    Ok(id) => ids.push(id),
                    Err(_) => break,
                }
            }
            acker.execute(&ack, &[&ids]).await.unwrap();
        }
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    // Claims run ahead of the sending by a batch, as the worker's do, so
    // that a claim's round trip (its commit) never leaves the slots idle.
    let (claimed, mut batches) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let rows = claimer.query(&claim, &[&CLAIM_ROWS]).await.unwrap();
            if rows.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else if claimed.send(rows).await.is_err() {
                return;
            }
        }
    });
    while let Some(rows) = batches.recv().await {
        for r in rows {
            let slot = slots.clone().acquire_owned().await.unwrap();
            let (id, endpoint, created, data): (i64, i32, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let (http, urls, done) = (http.clone(), urls.clone(), done.clone());
            tokio::spawn(async move {
                let body =
                    format!(r#"{{"type":"bench.event","timestamp":"{created}","data":{data}}}"#);
                let unix = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let msg = format!("msg_{id}");
                let sig =
                    postbox_rules::sign::standard(&msg, unix, body.as_bytes(), &[SECRET]).unwrap();
                let resp = http
                    .post(&urls[endpoint as usize])
                    .header("content-type", "application/json")
                    .header("webhook-id", msg)
                    .header("webhook-timestamp", unix.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .expect("the ceiling's POST");
                assert!(
                    resp.status().is_success(),
                    "the ceiling's POST: {}",
                    resp.status()
                );
                let _ = resp.bytes().await;
                drop(slot);
                let _ = done.send(id);
            });
        }
    }
}
