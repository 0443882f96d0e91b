//! Faults of the database under load: PostgreSQL restarted (fast, then
//! immediate) in the middle of a run. Driven by events and their order, not
//! by a stopwatch: every event committed before a fault is delivered, and
//! duplicates (from requests in flight) are counted and reported.

mod common;

use common::*;
use postbox_tests::Cluster;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Emits `n` events for tenant `t` in transactions of 1,000 (from `from`).
async fn emit(pg: &Cluster, from: i64, n: i64) {
    let db = pg.connect("postgres").await;
    for start in (from..from + n).step_by(1000) {
        db.batch_execute(&format!(
            "SELECT postbox.emit('t', 'order.paid', jsonb_build_object('n', i))
               FROM generate_series({start}, {}) i",
            (start + 999).min(from + n - 1)
        ))
        .await
        .unwrap();
    }
}

/// How many times each event arrived.
fn arrivals(rx: &Receiver) -> HashMap<i64, usize> {
    let mut seen = HashMap::new();
    for r in rx.received() {
        *seen
            .entry(r.json()["data"]["n"].as_i64().unwrap())
            .or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn postgresql_restarts_lose_nothing() {
    // Commits durable before they are acknowledged, as in production: an
    // immediate stop must not lose an event the emitter saw committed.
    let pg = Cluster::start_with(&[("synchronous_commit", "on"), ("fsync", "on")]).await;
    let db = pg.connect("postgres").await;
    db.batch_execute(
        "SET postbox.allow_insecure_urls = on; SELECT postbox.create_event_type('order.paid');",
    )
    .await
    .unwrap();
    let rx = Receiver::start(Behavior::Statuses(vec![204]), Arc::new(AtomicU64::new(0))).await;
    endpoint(&db, "t", &rx.url(), ", '{order.*}'").await;
    drop(db);
    let addr = metrics_addr();
    let mut config = test_config(&pg);
    config.metrics_addr = Some(addr);
    let worker = Worker::start(config);

    emit(&pg, 0, 5_000).await;
    eventually("deliveries under way", || rx.count() >= 1_000).await;
    pg.restart("fast");
    emit(&pg, 5_000, 5_000).await;
    eventually("deliveries after the fast restart", || rx.count() >= 6_000).await;
    pg.restart("immediate");
    postbox_tests::wait_until(Duration::from_secs(120), "all 10,000 events", || {
        let n = arrivals(&rx).len();
        std::future::ready((n == 10_000).then_some(()))
    })
    .await;
    let seen = arrivals(&rx);
    assert!((0..10_000).all(|n| seen.contains_key(&n)));
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    println!("restarts: 10,000 events delivered, {duplicates} duplicates (requests in flight at a restart)");
    // Duplicates come only from requests in flight: at most the worker's
    // limit per restart.
    assert!(duplicates <= 2 * 256, "{duplicates} duplicates");
    // The outage shows in the metrics.
    let errors = metric(addr, "postbox_database_errors_total")
        .await
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "no database errors counted");
    worker.stop().await.unwrap();
}
