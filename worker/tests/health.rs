//! The worker's health: a background task that panics stops the worker
//! with an error (the binary then exits non-zero), and `/healthz` answers
//! 503 while the database does not answer or the dispatcher is stuck.

use postbox_tests::fixtures::{cluster, endpoint};
use postbox_tests::receivers::{Behavior, Receiver};
use postbox_tests::worker::{metrics_addr, test_config, Worker};
use postbox_tests::{eventually, wait_until};
use postbox_worker::RunError;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// `/healthz`: its status and body.
async fn healthz(addr: SocketAddr) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://{addr}/healthz")).await.ok()?;
    Some((resp.status().as_u16(), resp.text().await.ok()?))
}

/// Waits (up to `limit`) until `/healthz` answers `status`; returns the body.
async fn healthz_until(addr: SocketAddr, status: u16, limit: Duration) -> String {
    wait_until(limit, &format!("/healthz {status}"), || async {
        healthz(addr)
            .await
            .filter(|(s, _)| *s == status)
            .map(|(_, b)| b)
    })
    .await
}

/// Each of the acknowledger, the purger and the heartbeat panicking (made
/// to, through the test hook) stops its worker, whose `run` returns the
/// panic as its error: the binary exits 1 on it, not 0.
#[cfg(debug_assertions)]
#[tokio::test]
async fn a_panicked_task_stops_the_worker_with_an_error() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    endpoint(&db, "t", &rx.url(), "").await;
    for (n, task) in ["acknowledger", "purger", "heartbeat"]
        .into_iter()
        .enumerate()
    {
        let cfg = test_config(&pg);
        let id = cfg.worker_id.clone();
        let worker = Worker::start(cfg);
        db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
            .await
            .unwrap();
        eventually("a delivery", || rx.count() > n).await;
        postbox_worker::test_hooks::panic_in(&id, task);
        match worker.ended().await {
            Err(RunError::Panicked { task: t, message }) => {
                assert_eq!(t, task);
                assert!(message.contains("test hook"), "{message}");
            }
            other => panic!("{task}: {other:?}"),
        }
    }
}

/// `/healthz` is 200 while the worker works, 503 naming the database while
/// PostgreSQL is down, and 200 again once it is back.
#[tokio::test]
async fn healthz_fails_while_the_database_is_down() {
    // Commits that survive an immediate stop (the harness's default leaves
    // them to the WAL writer).
    let pg =
        postbox_tests::Cluster::start_with(&[("synchronous_commit", "on"), ("fsync", "on")]).await;
    let addr = metrics_addr();
    let mut cfg = test_config(&pg);
    cfg.metrics_addr = Some(addr);
    let worker = Worker::start(cfg);
    assert_eq!(
        healthz_until(addr, 200, Duration::from_secs(30)).await,
        "ok\n"
    );
    pg.kill();
    let body = healthz_until(addr, 503, Duration::from_secs(30)).await;
    assert!(body.contains("database"), "{body}");
    pg.restart("fast");
    healthz_until(addr, 200, Duration::from_secs(30)).await;
    worker.stop().await.unwrap();
}

/// A dispatcher stuck in a statement (here: the outbox locked by another
/// session) makes `/healthz` 503 naming the dispatcher, while heartbeats
/// still succeed; 200 again once it runs.
#[tokio::test]
async fn healthz_fails_while_the_dispatcher_is_stuck() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    endpoint(&db, "t", &rx.url(), "").await;
    let addr = metrics_addr();
    let mut cfg = test_config(&pg);
    cfg.metrics_addr = Some(addr);
    let worker = Worker::start(cfg);
    healthz_until(addr, 200, Duration::from_secs(30)).await;
    db.batch_execute("BEGIN; LOCK TABLE postbox.outbox IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // The dispatcher's next look at the outbox (within the poll interval)
    // waits for the lock.
    let limit = test_config(&pg).poll_interval
        + postbox_worker::metrics::LOOP_GRACE
        + Duration::from_secs(30);
    let body = healthz_until(addr, 503, limit).await;
    assert!(body.contains("dispatcher"), "{body}");
    db.batch_execute("ROLLBACK").await.unwrap();
    healthz_until(addr, 200, Duration::from_secs(30)).await;
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually("the delivery", || rx.count() == 1).await;
    worker.stop().await.unwrap();
}
