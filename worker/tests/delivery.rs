//! The worker end to end: a real PostgreSQL cluster with the extension, the
//! worker through `run()`, and real HTTP receivers on 127.0.0.1.

use postbox_tests::fixtures::{cluster, endpoint, one};
use postbox_tests::receivers::{order, Behavior, Receiver};
use postbox_tests::resolver::TestResolver;
use postbox_tests::tls::{test_ca, tls_acceptor_alpn, tls_receiver_config};
use postbox_tests::verify::{python, python_verify, receiver_verify};
use postbox_tests::worker::{
    metric, metric_until, metrics_addr, test_config, worker_process, Running, Worker,
};
use postbox_tests::{eventually, eventually_sql};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn signed_deliveries_verify_in_both_styles_and_during_rotation() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![204]), order()).await;
    let (std_id, std_secret) = endpoint(
        &db,
        "acme",
        &rx.url(),
        ", '{order.*}', headers => '{\"Authorization\": \"Bearer t0k\"}'",
    )
    .await;
    let (_, hex_secret) = endpoint(
        &db,
        "acme",
        &rx.url().replace("/hook", "/hex"),
        ", '{order.paid}', signature_style => 'sha256-hex', signature_header => 'X-Hub-Signature-256'",
    )
    .await;
    let worker = Worker::start(test_config(&pg));
    let event: uuid::Uuid = one(
        &db,
        "SELECT postbox.emit('acme', 'order.paid', '{\"order_id\": 42, \"note\": \"caf\\u00e9\"}')",
    )
    .await;
    eventually("two deliveries", || rx.count() == 2).await;

    let got = rx.received();
    let std = got
        .iter()
        .find(|r| r.headers.contains_key("webhook-signature"))
        .unwrap();
    let hex = got
        .iter()
        .find(|r| r.headers.contains_key("x-hub-signature-256"))
        .unwrap();
    python_verify("standard", &std_secret, std, "")
        .expect("standardwebhooks verifies the standard style");
    python_verify("sha256-hex", &hex_secret, hex, "X-Hub-Signature-256")
        .expect("sha256-hex verifies");
    assert!(
        python_verify("standard", &hex_secret, std, "").is_err(),
        "a wrong secret must not verify"
    );

    let body = std.json();
    assert_eq!(body["id"], event.to_string());
    assert_eq!(body["event"], "order.paid");
    assert_eq!(
        body["data"],
        serde_json::json!({"order_id": 42, "note": "café"})
    );
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(std.header("webhook-id"), event.to_string());
    assert_eq!(
        hex.json()["id"],
        body["id"],
        "the same id for every endpoint"
    );
    assert_eq!(std.header("content-type"), "application/json");
    assert_eq!(
        std.header("user-agent"),
        concat!("postbox/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(std.header("authorization"), "Bearer t0k");

    // Rotation with a grace period: two signatures, each secret verifies.
    let new_secret: String = one(
        &db,
        &format!("SELECT postbox.rotate_secret('acme', '{std_id}', '1 hour')"),
    )
    .await;
    db.batch_execute("SELECT postbox.emit('acme', 'order.refunded', '{}')")
        .await
        .unwrap();
    eventually("the delivery after rotation", || rx.count() == 3).await;
    let rotated = rx
        .received()
        .into_iter()
        .find(|r| r.json()["event"] == "order.refunded")
        .unwrap();
    assert_eq!(rotated.header("webhook-signature").split(' ').count(), 2);
    python_verify("standard", &new_secret, &rotated, "").expect("the new secret verifies");
    python_verify("standard", &std_secret, &rotated, "")
        .expect("the old secret verifies during the grace period");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_500_is_retried_and_delivered_once() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![500, 200]), order()).await;
    let (ep, _) = endpoint(
        &db,
        "t",
        &rx.url(),
        ", options => '{\"retry_schedule\": [\"100ms\", \"100ms\"]}'",
    )
    .await;
    let worker = Worker::start(test_config(&pg));
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually_sql(
        &db,
        "the delivery succeeds",
        "SELECT count(*) = 1 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "the id is stable across retries"
    );
    let (attempts, codes): (i32, String) = {
        let r = db.query_one("SELECT attempts, (SELECT string_agg(status_code::text, ',' ORDER BY attempt) FROM postbox.attempts) FROM postbox.deliveries", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((attempts, codes.as_str()), (2, "500,200"));
    let status: String = one(
        &db,
        &format!("SELECT status FROM postbox.endpoint_status WHERE id = '{ep}'"),
    )
    .await;
    assert_eq!(status, "healthy");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn gone_disables_the_endpoint_at_once() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![410]), order()).await;
    // One token in 100 s: exactly one attempt before the disable (without
    // it, a second attempt could start before the first's acknowledgement).
    let (ep, _) = endpoint(
        &db,
        "t",
        &rx.url(),
        ", options => '{\"rate_limit_per_s\": 0.01}'",
    )
    .await;
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 3)")
        .await
        .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "the endpoint is disabled",
        &format!("SELECT status = 'disabled' AND disabled_reason LIKE '%410 Gone%' FROM postbox.endpoint_status WHERE id = '{ep}'"),
    )
    .await;
    eventually_sql(
        &db,
        "nothing left pending",
        &format!("SELECT pending = 0 FROM postbox.endpoint_status WHERE id = '{ep}'"),
    )
    .await;
    let (attempts, cancelled): (i64, i64) = {
        let r = db
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM postbox.attempts WHERE endpoint_id = '{ep}'),
                            (SELECT count(*) FROM postbox.deliveries WHERE endpoint_id = '{ep}' AND status = 'cancelled')"
                ),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (attempts, cancelled),
        (1, 2),
        "one attempt, the other two deliveries cancelled"
    );
    // Emits after the disable are not routed to it by expansion, while an
    // endpoint created since (so routable for them) gets them.
    let control = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    let (control_id, _) = endpoint(&db, "t", &control.url(), "").await;
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 2)")
        .await
        .unwrap();
    eventually_sql(
        &db,
        "the new events expanded and routed to the endpoint that may have them",
        &format!(
            "SELECT (SELECT count(*) FROM postbox.emitted) = 0
                AND (SELECT count(*) FROM postbox.deliveries WHERE endpoint_id = '{control_id}') = 2"
        ),
    )
    .await;
    let for_ep: i64 = one(
        &db,
        &format!("SELECT count(*) FROM postbox.outbox WHERE endpoint_id = '{ep}'"),
    )
    .await;
    assert_eq!(for_ep, 3, "none added for the disabled endpoint");
    eventually("the control deliveries", || control.count() == 2).await;
    assert_eq!(rx.count(), 1);
    worker.stop().await.unwrap();
}

/// Succeeded attempts to `endpoint` that finished no later than the first
/// attempt matching `others` (a condition on `postbox.attempts h`) finished:
/// isolation judged by order, not by a stopwatch.
async fn succeeded_before_first(db: &tokio_postgres::Client, endpoint: &str, others: &str) -> i64 {
    one(
        db,
        &format!(
            "SELECT count(*) FROM postbox.attempts a
              WHERE a.endpoint_id = '{endpoint}' AND a.outcome = 'succeeded'
                AND a.started_at + a.duration_ms * interval '1 ms' <=
                    (SELECT min(h.started_at + h.duration_ms * interval '1 ms')
                       FROM postbox.attempts h WHERE {others})"
        ),
    )
    .await
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_up_a_healthy_one() {
    let (pg, db) = cluster().await;
    let o = order();
    let hang = Receiver::start(Behavior::Hang, o.clone()).await;
    let ok = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    let (hang_id, _) = endpoint(
        &db,
        "t",
        &hang.url(),
        ", '{order.refunded}', options => '{\"timeout_ms\": 3000}'",
    )
    .await;
    let (ok_id, _) = endpoint(&db, "t", &ok.url(), ", '{order.paid}'").await;
    db.batch_execute(
        "SELECT postbox.emit('t', 'order.refunded', '{}') FROM generate_series(1, 50);
         SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 300);",
    )
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "the hanging endpoint's first attempt to time out",
        &format!("SELECT count(*) > 0 FROM postbox.attempts WHERE endpoint_id = '{hang_id}'"),
    )
    .await;
    let before = succeeded_before_first(&db, &ok_id, &format!("h.endpoint_id = '{hang_id}'")).await;
    assert_eq!(
        before, 300,
        "every healthy delivery finished before the first hanging attempt timed out"
    );
    let err: String = one(
        &db,
        &format!("SELECT error FROM postbox.attempts WHERE endpoint_id = '{hang_id}' LIMIT 1"),
    )
    .await;
    assert!(err.contains("timed out"), "{err}");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_burst_for_one_endpoint_does_not_hold_up_another() {
    let (pg, db) = cluster().await;
    let o = order();
    let busy = Receiver::start(Behavior::Statuses(vec![200]), o.clone()).await;
    let quiet = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    endpoint(&db, "big", &busy.url(), ", '{burst.*}'").await;
    endpoint(&db, "small", &quiet.url(), ", '{single.*}'").await;
    db.batch_execute("SELECT postbox.emit('big', 'burst.item', jsonb_build_object('i', i)) FROM generate_series(1, 10000) i").await.unwrap();
    db.batch_execute("SELECT postbox.emit('small', 'single.item', '{}')")
        .await
        .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually("the single delivery", || quiet.count() == 1).await;
    let single = quiet.received()[0].seq;
    eventually("the burst's 2,000th delivery", || busy.count() >= 2000).await;
    let mut burst: Vec<u64> = busy.received().iter().map(|r| r.seq).collect();
    burst.sort();
    assert!(
        single < burst[1999],
        "the single delivery arrived {single}th, after the burst's 2,000th ({})",
        burst[1999]
    );
    worker.stop().await.unwrap();
}

/// Names that resolve to a loopback address are refused, though an HTTPS
/// receiver that would accept the request (its certificate holds both
/// names, signed by a CA the worker trusts) listens there.
#[tokio::test]
async fn private_targets_are_refused_by_resolved_address() {
    let (pg, db) = cluster().await;
    let ca = test_ca();
    let rx = Receiver::start_tls(
        Behavior::Statuses(vec![200]),
        order(),
        Some(tls_receiver_config(
            &["internal.example.test", "rebind.example.test"],
            &ca,
        )),
    )
    .await;
    let resolver = Arc::new(TestResolver::default());
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    resolver.set("internal.example.test", vec![vec![lo]]);
    // A public answer first and a private one after it, in one response: a
    // client that checks the first and connects to the rest would leak.
    resolver.set(
        "rebind.example.test",
        vec![vec!["93.184.216.34".parse().unwrap(), lo]],
    );
    let port = rx.addr.port();
    let (private, _) = endpoint(
        &db,
        "t",
        &format!("https://internal.example.test:{port}/hook"),
        ", options => '{\"retry_schedule\": []}'",
    )
    .await;
    let (rebind, _) = endpoint(
        &db,
        "t",
        &format!("https://rebind.example.test:{port}/hook"),
        ", options => '{\"retry_schedule\": []}'",
    )
    .await;
    // The worker honours the database's setting too: the fixture's is the
    // whole database's in the SQL flavour, so it is turned off again.
    db.batch_execute(pg.insecure_urls_sql(false)).await.unwrap();
    let mut cfg = test_config(&pg);
    cfg.allow_private_targets = false;
    cfg.resolver = resolver.clone();
    cfg.root_certificates = vec![reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()];
    let worker = Worker::start(cfg);
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually_sql(
        &db,
        "both attempts",
        "SELECT count(*) = 2 FROM postbox.attempts",
    )
    .await;
    assert_eq!(rx.count(), 0, "nothing reached the private address");
    for (ep, host) in [
        (&private, "internal.example.test"),
        (&rebind, "rebind.example.test"),
    ] {
        let err: String = one(
            &db,
            &format!("SELECT error FROM postbox.attempts WHERE endpoint_id = '{ep}' AND outcome = 'failed'"),
        )
        .await;
        assert!(
            err.contains("blocked") && err.contains(host) && err.contains("loopback"),
            "{err}"
        );
        // The internal address a name resolved to is not shown.
        assert!(!err.contains("127.0.0.1"), "{err}");
        let last: String = one(
            &db,
            &format!("SELECT last_error FROM postbox.endpoint_status WHERE id = '{ep}'"),
        )
        .await;
        assert!(last.contains("blocked"), "{last}");
    }
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn https_with_a_test_ca_and_hostname_verification() {
    let (pg, db) = cluster().await;
    let ca = test_ca();
    let o = order();
    let good = Receiver::start_tls(
        Behavior::Statuses(vec![200]),
        o.clone(),
        Some(tls_receiver_config(&["hooks.example.test"], &ca)),
    )
    .await;
    let wrong = Receiver::start_tls(
        Behavior::Statuses(vec![200]),
        o,
        Some(tls_receiver_config(&["other.example.test"], &ca)),
    )
    .await;
    let resolver = Arc::new(TestResolver::default());
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    resolver.set("hooks.example.test", vec![vec![lo]]);
    resolver.set("wrong.example.test", vec![vec![lo]]);
    let (_good_id, _) = endpoint(
        &db,
        "t",
        &format!("https://hooks.example.test:{}/in", good.addr.port()),
        "",
    )
    .await;
    let (wrong_id, _) = endpoint(
        &db,
        "t",
        &format!("https://wrong.example.test:{}/in", wrong.addr.port()),
        ", options => '{\"retry_schedule\": []}'",
    )
    .await;
    let mut cfg = test_config(&pg);
    cfg.resolver = resolver;
    cfg.root_certificates = vec![reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()];
    let worker = Worker::start(cfg);
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually("the HTTPS delivery", || good.count() == 1).await;
    eventually_sql(&db, "the mismatched host fails", &format!("SELECT count(*) = 1 FROM postbox.deliveries WHERE endpoint_id = '{wrong_id}' AND status = 'failed'")).await;
    let err: String = one(
        &db,
        &format!("SELECT error FROM postbox.attempts WHERE endpoint_id = '{wrong_id}'"),
    )
    .await;
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(wrong.count(), 0);
    worker.stop().await.unwrap();
}

/// With POSTBOX_HTTP2 on, a receiver that offers HTTP/2 (ALPN) gets it and
/// one that offers only HTTP/1.1 gets that; off (the default), every
/// receiver gets HTTP/1.1. The requests verify alike.
#[tokio::test]
async fn https_receivers_get_http2_when_it_is_turned_on_and_offered() {
    let (pg, db) = cluster().await;
    let ca = test_ca();
    let o = order();
    let offer = |alpn: &'static [&'static [u8]]| {
        let params = rcgen::CertificateParams::new(vec!["hooks.example.test".to_string()]).unwrap();
        tls_acceptor_alpn(params, &ca, alpn)
    };
    let h2 = Receiver::start_tls(
        Behavior::Statuses(vec![200]),
        o.clone(),
        Some(offer(&[b"h2", b"http/1.1"])),
    )
    .await;
    let h1 = Receiver::start_tls(
        Behavior::Statuses(vec![200]),
        o,
        Some(offer(&[b"http/1.1"])),
    )
    .await;
    let resolver = Arc::new(TestResolver::default());
    resolver.set(
        "hooks.example.test",
        vec![vec!["127.0.0.1".parse().unwrap()]],
    );
    let mut secrets = Vec::new();
    for rx in [&h2, &h1] {
        let (_, secret) = endpoint(
            &db,
            "t",
            &format!("https://hooks.example.test:{}/in", rx.addr.port()),
            "",
        )
        .await;
        secrets.push(secret);
    }
    for (http2, versions) in [
        (true, ["HTTP/2.0", "HTTP/1.1"]),
        (false, ["HTTP/1.1", "HTTP/1.1"]),
    ] {
        let mut cfg = test_config(&pg);
        cfg.resolver = resolver.clone();
        cfg.http2 = http2;
        cfg.root_certificates = vec![reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()];
        let worker = Worker::start(cfg);
        let before = h2.count();
        db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{\"n\": 1}')")
            .await
            .unwrap();
        eventually("both HTTPS deliveries", || {
            h2.count() == before + 1 && h1.count() == before + 1
        })
        .await;
        for ((rx, version), secret) in [&h2, &h1].into_iter().zip(versions).zip(&secrets) {
            let got = rx.received().pop().unwrap();
            assert_eq!(got.version, version, "http2 = {http2}");
            postbox_tests::verify::python_verify("standard", secret, &got, "")
                .unwrap_or_else(|e| panic!("{version}: {e}"));
        }
        worker.stop().await.unwrap();
    }
}

#[tokio::test]
async fn paused_endpoints_hold_deliveries_until_resumed() {
    let (pg, db) = cluster().await;
    let o = order();
    let paused = Receiver::start(Behavior::Statuses(vec![200]), o.clone()).await;
    let control = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    let (p, _) = endpoint(&db, "t", &paused.url(), ", '{order.*}'").await;
    endpoint(&db, "t", &control.url(), ", '{order.*}'").await;
    // Queued while active, then paused before any worker runs.
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', jsonb_build_object('n', i)) FROM generate_series(1, 3) i").await.unwrap();
    db.batch_execute(&format!(
        "SELECT postbox.update_endpoint('t', '{p}', enabled => false)"
    ))
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    db.batch_execute("SELECT postbox.emit('t', 'order.refunded', '{}')")
        .await
        .unwrap();
    eventually("the control endpoint gets all four", || {
        control.count() == 4
    })
    .await;
    eventually_sql(
        &db,
        "the worker went idle",
        "SELECT count(*) = 0 FROM postbox.deliveries WHERE status IN ('pending', 'in_flight')",
    )
    .await;
    assert_eq!(paused.count(), 0, "a paused endpoint receives nothing");
    let held: i64 = one(
        &db,
        &format!(
            "SELECT count(*) FROM postbox.deliveries WHERE endpoint_id = '{p}' AND status = 'held'"
        ),
    )
    .await;
    assert_eq!(held, 3);
    db.batch_execute(&format!(
        "SELECT postbox.update_endpoint('t', '{p}', enabled => true)"
    ))
    .await
    .unwrap();
    eventually("the held deliveries after resume", || paused.count() == 3).await;
    let events: HashSet<String> = paused
        .received()
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        HashSet::from(["order.paid".to_string()]),
        "nothing emitted during the pause"
    );
    eventually_sql(&db, "their acknowledgements", &format!("SELECT count(*) = 3 FROM postbox.deliveries WHERE endpoint_id = '{p}' AND status = 'succeeded'")).await;
    let attempts: i64 = one(
        &db,
        &format!("SELECT count(*) FROM postbox.attempts WHERE endpoint_id = '{p}'"),
    )
    .await;
    assert_eq!(
        attempts, 3,
        "held deliveries spent no attempts while paused"
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_failures_disable_an_endpoint() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![500]), order()).await;
    let (ep, _) = endpoint(
        &db,
        "t",
        &rx.url(),
        ", options => '{\"retry_schedule\": [\"50ms\", \"50ms\", \"50ms\", \"50ms\"]}'",
    )
    .await;
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 2)")
        .await
        .unwrap();
    let mut cfg = test_config(&pg);
    cfg.disable_after_failures = 4;
    cfg.disable_after = Duration::ZERO;
    cfg.endpoint_max_in_flight = 1;
    let worker = Worker::start(cfg);
    eventually_sql(
        &db,
        "auto-disable",
        &format!("SELECT status = 'disabled' FROM postbox.endpoint_status WHERE id = '{ep}'"),
    )
    .await;
    let (n, reason): (i32, String) = {
        let r = db.query_one(&format!("SELECT consecutive_failures, disabled_reason FROM postbox.endpoint_status WHERE id = '{ep}'"), &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert!(
        n >= 4 && reason.contains("consecutive failed attempts"),
        "{n} {reason}"
    );
    eventually_sql(
        &db,
        "its deliveries cancelled",
        &format!("SELECT pending = 0 FROM postbox.endpoint_status WHERE id = '{ep}'"),
    )
    .await;
    // Resume clears the disable and the streak.
    db.batch_execute(&format!(
        "SELECT postbox.update_endpoint('t', '{ep}', enabled => true)"
    ))
    .await
    .unwrap();
    let status: String = one(
        &db,
        &format!(
            "SELECT status || consecutive_failures FROM postbox.endpoint_status WHERE id = '{ep}'"
        ),
    )
    .await;
    assert_eq!(status, "healthy0");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_killed_worker_loses_nothing() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Hang, order()).await;
    endpoint(&db, "t", &rx.url(), "").await;
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', jsonb_build_object('n', i)) FROM generate_series(1, 20) i").await.unwrap();
    // A real worker process, killed with SIGKILL while its requests hang.
    let mut child = Running::new(
        worker_process(env!("CARGO_BIN_EXE_postbox-worker"), &pg)
            .env("POSTBOX_LEASE", "4s")
            .spawn()
            .unwrap(),
    );
    eventually("requests in flight", || rx.count() >= 8).await;
    child.kill();
    rx.set_behavior(Behavior::Statuses(vec![200]));
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "all 20 delivered",
        "SELECT count(*) = 20 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    let distinct: i64 = one(
        &db,
        "SELECT count(DISTINCT event_id) FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    assert_eq!(distinct, 20);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn two_workers_send_no_duplicates() {
    let (pg, db) = cluster().await;
    let o = order();
    let a = Receiver::start(Behavior::Statuses(vec![200]), o.clone()).await;
    let b = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    endpoint(&db, "t", &a.url(), "").await;
    endpoint(&db, "t", &b.url(), "").await;
    let (m1, m2) = (metrics_addr(), metrics_addr());
    let mut c1 = test_config(&pg);
    c1.worker_id = "one".into();
    c1.metrics_addr = Some(m1);
    let mut c2 = test_config(&pg);
    c2.worker_id = "two".into();
    c2.metrics_addr = Some(m2);
    let (w1, w2) = (Worker::start(c1), Worker::start(c2));
    for _ in 0..10 {
        db.batch_execute(
            "SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 100)",
        )
        .await
        .unwrap();
    }
    eventually("2,000 deliveries", || a.count() + b.count() >= 2000).await;
    eventually_sql(
        &db,
        "all acknowledged",
        "SELECT count(*) = 2000 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    for rx in [&a, &b] {
        let ids: HashSet<String> = rx
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect();
        assert_eq!(ids.len(), 1000);
        assert_eq!(rx.count(), 1000, "no duplicate sends");
    }
    let workers: i64 = one(&db, "SELECT count(DISTINCT leased_by) FROM postbox.outbox").await;
    assert_eq!(workers, 0, "succeeded deliveries left the outbox");
    // Both workers took part: each delivered some, together all 2,000.
    let sent = |addr| async move {
        metric(addr, r#"postbox_deliveries_total{outcome="succeeded"}"#)
            .await
            .unwrap_or(0.0)
    };
    postbox_tests::wait_until(
        Duration::from_secs(30),
        "both workers' counters",
        || async { (sent(m1).await + sent(m2).await >= 2000.0).then_some(()) },
    )
    .await;
    let (one_sent, two_sent) = (sent(m1).await, sent(m2).await);
    assert!(
        one_sent > 0.0 && two_sent > 0.0 && one_sent + two_sent == 2000.0,
        "worker one sent {one_sent}, worker two {two_sent}"
    );
    w1.stop().await.unwrap();
    w2.stop().await.unwrap();
}

#[tokio::test]
async fn a_missed_notify_is_covered_by_the_poll() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    let (ep, _) = endpoint(&db, "t", &rx.url(), "").await;
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "the worker waits",
        "SELECT waiting FROM postbox.wakeup",
    )
    .await;
    // Queue a delivery behind the extension's back: no NOTIFY is sent.
    db.batch_execute(&format!(
        "INSERT INTO postbox.events (id, tenant, event_type, created_at, data) VALUES (gen_random_uuid(), 't', 'order.paid', now(), '{{}}');
         INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, next_attempt_at)
         SELECT 't', '{ep}', id, now() FROM postbox.events WHERE tenant = 't';"
    ))
    .await
    .unwrap();
    eventually("the polled delivery", || rx.count() == 1).await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn test_sends_go_out_while_paused_and_leave_health_alone() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![500]), order()).await;
    let (ep, _) = endpoint(&db, "t", &rx.url(), ", '{order.refunded}'").await;
    db.batch_execute(&format!(
        "SELECT postbox.update_endpoint('t', '{ep}', enabled => false)"
    ))
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    db.batch_execute(&format!("SELECT postbox.send_test('t', '{ep}')"))
        .await
        .unwrap();
    eventually("the test send", || rx.count() == 1).await;
    assert_eq!(rx.received()[0].json()["event"], "webhook.test");
    eventually_sql(&db, "it is logged", &format!("SELECT count(*) = 1 FROM postbox.attempts WHERE endpoint_id = '{ep}' AND status_code = 500")).await;
    let health: String = one(
        &db,
        &format!(
            "SELECT status || consecutive_failures FROM postbox.endpoint_status WHERE id = '{ep}'"
        ),
    )
    .await;
    assert_eq!(health, "paused0");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_are_scraped() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    endpoint(&db, "t", &rx.url(), ", '{order.paid}'").await;
    // A backlog the worker may not take: three due deliveries of a paused endpoint.
    let (paused, _) = endpoint(&db, "t", &rx.url(), ", '{order.refunded}'").await;
    db.batch_execute(&format!(
        "SELECT postbox.emit('t', 'order.refunded', '{{}}') FROM generate_series(1, 3);
         SELECT postbox.expand_events(1000);
         SELECT postbox.update_endpoint('t', '{paused}', enabled => false);"
    ))
    .await
    .unwrap();
    let addr = metrics_addr();
    let mut cfg = test_config(&pg);
    cfg.metrics_addr = Some(addr);
    let worker = Worker::start(cfg);
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually("the delivery", || rx.count() == 1).await;
    metric_until(
        addr,
        r#"postbox_deliveries_total{outcome="succeeded"}"#,
        |n| n == 1.0,
    )
    .await;
    // The gauges refresh every 5 s: wait for one taken after the delivery.
    let due = metric_until(addr, "postbox_deliveries_due", |n| n == 3.0).await;
    assert_eq!(due, 3.0, "the paused endpoint's three");
    let oldest = metric(addr, "postbox_oldest_due_age_seconds")
        .await
        .unwrap();
    assert!(oldest > 0.0 && oldest < 60.0, "oldest due: {oldest}s");
    assert_eq!(
        metric(addr, "postbox_requests_in_flight").await,
        Some(0.0),
        "nothing in flight"
    );
    assert_eq!(
        metric(addr, "postbox_attempt_duration_seconds_count").await,
        Some(1.0),
        "one attempt timed"
    );
    assert_eq!(metric(addr, "postbox_expand_errors_total").await, Some(0.0));
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_deliveries() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Slow(Duration::from_millis(500)), order()).await;
    endpoint(&db, "t", &rx.url(), "").await;
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 5)")
        .await
        .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually("requests in flight", || rx.count() >= 5).await;
    worker.stop().await.unwrap();
    // Every request that went out was finished and acknowledged.
    let ok: i64 = one(
        &db,
        "SELECT count(*) FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    assert_eq!(ok, 5);
    let waiting: bool = one(&db, "SELECT waiting FROM postbox.wakeup").await;
    assert!(
        !waiting,
        "a stopped worker does not leave the wake-up flag set"
    );
}

#[tokio::test]
async fn per_endpoint_limits_bound_concurrency_and_rate() {
    let (pg, db) = cluster().await;
    let o = order();
    let default_cap = Receiver::start(Behavior::Slow(Duration::from_millis(100)), o.clone()).await;
    let capped = Receiver::start(Behavior::Slow(Duration::from_millis(100)), o.clone()).await;
    let limited = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    endpoint(&db, "t", &default_cap.url(), ", '{order.paid}'").await;
    endpoint(
        &db,
        "t",
        &capped.url(),
        ", '{order.paid}', options => '{\"max_in_flight\": 2}'",
    )
    .await;
    let (rate_id, _) = endpoint(
        &db,
        "t",
        &limited.url(),
        ", '{order.refunded}', options => '{\"rate_limit_per_s\": 5}'",
    )
    .await;
    db.batch_execute(
        "SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 40);
         SELECT postbox.emit('t', 'order.refunded', '{}') FROM generate_series(1, 10);",
    )
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually("every delivery", || {
        default_cap.count() == 40 && capped.count() == 40 && limited.count() == 10
    })
    .await;
    assert!(
        default_cap.max_concurrent()
            <= postbox_worker::config::DEFAULT_ENDPOINT_MAX_IN_FLIGHT as usize,
        "default per-endpoint limit: {}",
        default_cap.max_concurrent()
    );
    assert!(
        default_cap.max_concurrent() >= 2,
        "requests do run in parallel"
    );
    assert!(
        capped.max_concurrent() <= 2,
        "max_in_flight option: {}",
        capped.max_concurrent()
    );
    // 10 requests at 5/s with a one-second burst cannot span less than one second.
    eventually_sql(
        &db,
        "acknowledged",
        &format!("SELECT count(*) = 10 FROM postbox.attempts WHERE endpoint_id = '{rate_id}'"),
    )
    .await;
    let span: f64 = one(&db, &format!("SELECT extract(epoch FROM max(started_at) - min(started_at))::float8 FROM postbox.attempts WHERE endpoint_id = '{rate_id}'")).await;
    assert!(
        span >= 0.9,
        "rate_limit_per_s = 5 sent 10 requests within {span}s"
    );
    worker.stop().await.unwrap();
}

/// Endpoints that answer fast share POSTBOX_FAST_IN_FLIGHT, below their
/// own limit; a slow endpoint keeps its own limit beside them. The share is
/// work-conserving (a fast endpoint with nothing in flight at a moment
/// leaves its part to the others), so what holds at every moment is the
/// lane's total, and over the run both endpoints progress together.
#[tokio::test]
async fn fast_endpoints_share_the_fast_lane() {
    let (pg, db) = cluster().await;
    let o = order();
    // Both fast endpoints on one receiver (paths /hook/a and /hook/b), so
    // its concurrency is the lane's. 20 ms: fast (under 50 ms), yet long
    // enough for concurrency to show.
    let fast = Receiver::start(Behavior::Slow(Duration::from_millis(20)), o.clone()).await;
    let slow = Receiver::start(Behavior::Slow(Duration::from_millis(300)), o).await;
    for path in ["a", "b"] {
        endpoint(
            &db,
            "t",
            &format!("{}/{path}", fast.url()),
            ", '{order.paid}'",
        )
        .await;
    }
    endpoint(&db, "t", &slow.url(), ", '{order.refunded}'").await;
    db.batch_execute(
        "SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 300);
         SELECT postbox.emit('t', 'order.refunded', '{}') FROM generate_series(1, 30);",
    )
    .await
    .unwrap();
    let mut cfg = test_config(&pg);
    cfg.fast_in_flight = 4; // two fast endpoints: 2 each, below the default 16
    let worker = Worker::start(cfg);
    let per_path = |path: &str| {
        fast.received()
            .iter()
            .filter(|r| r.path.ends_with(path))
            .count()
    };
    // Until an endpoint's first answers, nothing is known to be fast.
    eventually("a warm-up", || per_path("/a") >= 40 && per_path("/b") >= 40).await;
    fast.reset_max_concurrent();
    eventually("half the fast deliveries", || fast.count() >= 300).await;
    let (a, b) = (per_path("/a"), per_path("/b"));
    assert!(
        a.min(b) * 2 >= a.max(b),
        "both fast endpoints progress together: {a} and {b} of {}",
        a + b
    );
    eventually("every delivery", || {
        fast.count() == 600 && slow.count() == 30
    })
    .await;
    assert!(
        fast.max_concurrent() <= 4,
        "the fast lane (4) in flight at most: {}",
        fast.max_concurrent()
    );
    assert!(
        slow.max_concurrent() > 2,
        "a slow endpoint is not held to the fast share: {}",
        slow.max_concurrent()
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn lost_database_connections_are_reestablished() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    endpoint(&db, "t", &rx.url(), "").await;
    let worker = Worker::start(test_config(&pg));
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually("the first delivery", || rx.count() == 1).await;
    let killed: i64 = one(&db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'postbox-worker'").await;
    assert!(killed >= 2, "the pool and the LISTEN connection: {killed}");
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 5)")
        .await
        .unwrap();
    eventually("deliveries after the reconnect", || rx.count() == 6).await;
    eventually_sql(
        &db,
        "all acknowledged",
        "SELECT count(*) = 6 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    worker.stop().await.unwrap();
}

/// A noisy tenant whose 16 endpoints accept connections and never answer
/// fills at most what a tenant alone may have (half the slow slots); a quiet
/// tenant's burst, emitted once the noisy requests hang, all arrives before
/// the first of them times out.
#[tokio::test]
async fn a_noisy_tenant_does_not_hold_up_a_quiet_one() {
    noisy_and_quiet(postbox_worker::config::DEFAULT_TENANT_MAX_IN_FLIGHT).await;
}

/// Noisy tenants (1, 2 and 4 of them) whose receivers accept connections
/// and never answer, each with 8 endpoints, a 60 s timeout and work for
/// more than the worker's slots: a quiet tenant's events, emitted one at a
/// time, each arrive within 2 s, while every noisy request still hangs.
#[tokio::test]
async fn several_noisy_tenants_do_not_hold_up_a_quiet_one() {
    for noisy in [1, 2, 4] {
        noisy_tenants_and_a_quiet_one(noisy).await;
    }
}

async fn noisy_tenants_and_a_quiet_one(noisy: usize) {
    let (pg, db) = cluster().await;
    let o = order();
    let hang = Receiver::start(Behavior::Hang, o.clone()).await;
    let ok = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    for t in 0..noisy {
        for i in 0..8 {
            endpoint(
                &db,
                &format!("noisy-{t}"),
                &format!("{}/{t}/{i}", hang.url()),
                ", '{order.refunded}', options => '{\"timeout_ms\": 60000, \"retry_schedule\": [\"1h\"]}'",
            )
            .await;
        }
        // 16 deliveries for each of its endpoints: 128 per tenant.
        db.batch_execute(&format!(
            "SELECT postbox.emit('noisy-{t}', 'order.refunded', '{{}}') FROM generate_series(1, 16)"
        ))
        .await
        .unwrap();
    }
    endpoint(&db, "quiet", &ok.url(), ", '{order.paid}'").await;
    let mut cfg = test_config(&pg);
    cfg.lease = Duration::from_secs(90);
    cfg.request_timeout = Duration::from_secs(60);
    // Hundreds of connects at once on the test's one thread.
    cfg.connect_timeout = Duration::from_secs(3);
    cfg.shutdown_timeout = Duration::from_secs(1);
    let alone = cfg.limits().tenant_alone() as usize;
    let worker = Worker::start(cfg);
    eventually("the noisy requests hang", || hang.count() >= alone).await;
    for n in 1..=5 {
        db.batch_execute("SELECT postbox.emit('quiet', 'order.paid', '{}')")
            .await
            .unwrap();
        postbox_tests::wait_until(
            Duration::from_secs(2),
            &format!("quiet event {n} with {noisy} noisy tenants"),
            || std::future::ready((ok.count() == n).then_some(())),
        )
        .await;
    }
    let timed_out: i64 = one(
        &db,
        "SELECT count(*) FROM postbox.attempts WHERE tenant <> 'quiet'",
    )
    .await;
    assert_eq!(timed_out, 0, "no noisy request had ended");
    worker.stop().await.unwrap();
}

async fn noisy_and_quiet(tenant_max_in_flight: u32) {
    let (pg, db) = cluster().await;
    let o = order();
    let hang = Receiver::start(Behavior::Hang, o.clone()).await;
    let ok = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    for i in 0..16 {
        endpoint(
            &db,
            "noisy",
            &format!("{}/{i}", hang.url()),
            ", '{order.refunded}', options => '{\"timeout_ms\": 3000, \"retry_schedule\": [\"1h\"]}'",
        )
        .await;
    }
    let (quiet_id, _) = endpoint(&db, "quiet", &ok.url(), ", '{order.paid}'").await;
    // 16 deliveries for each noisy endpoint: 256, the worker's default limit.
    db.batch_execute(
        "SELECT postbox.emit('noisy', 'order.refunded', '{}') FROM generate_series(1, 16)",
    )
    .await
    .unwrap();
    let mut cfg = test_config(&pg);
    cfg.tenant_max_in_flight = tenant_max_in_flight;
    // Hundreds of connects at once on the test's one thread may take over
    // the test config's 1 s: only the endpoints' 3 s request timeout may end
    // a noisy request here.
    cfg.request_timeout = Duration::from_secs(3);
    cfg.connect_timeout = Duration::from_secs(3);
    let alone = cfg.limits().tenant_alone() as usize;
    let worker = Worker::start(cfg);
    eventually("the noisy requests hang", || hang.count() >= alone).await;
    db.batch_execute(
        "SELECT postbox.emit('quiet', 'order.paid', '{}') FROM generate_series(1, 50)",
    )
    .await
    .unwrap();
    eventually_sql(
        &db,
        "the first noisy request times out",
        "SELECT count(*) > 0 FROM postbox.attempts WHERE tenant = 'noisy'",
    )
    .await;
    eventually_sql(
        &db,
        "the quiet deliveries",
        &format!("SELECT count(*) = 50 FROM postbox.attempts WHERE endpoint_id = '{quiet_id}'"),
    )
    .await;
    let before = succeeded_before_first(&db, &quiet_id, "h.tenant = 'noisy'").await;
    assert_eq!(
        before, 50,
        "every quiet delivery finished before the first noisy request timed out"
    );
    assert!(
        hang.max_concurrent() <= alone,
        "the noisy tenant had {} requests in flight",
        hang.max_concurrent()
    );
    let err: String = one(
        &db,
        "SELECT error FROM postbox.attempts WHERE tenant = 'noisy' LIMIT 1",
    )
    .await;
    assert!(err.contains("timed out"), "{err}");
    worker.stop().await.unwrap();
}

/// Within one tenant too: its endpoints that hang fill at most what a tenant
/// alone may have with requests that are not fast, and its fast endpoint,
/// which does not count against that, goes on at once.
#[tokio::test]
async fn a_tenants_hanging_endpoints_do_not_hold_up_its_fast_one() {
    let (pg, db) = cluster().await;
    let o = order();
    let hang = Receiver::start(Behavior::Hang, o.clone()).await;
    let ok = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    let (fast_id, _) = endpoint(&db, "t", &ok.url(), ", '{order.paid}'").await;
    let mut cfg = test_config(&pg);
    cfg.request_timeout = Duration::from_secs(3);
    cfg.connect_timeout = Duration::from_secs(3);
    let alone = cfg.limits().tenant_alone() as usize;
    let worker = Worker::start(cfg);
    // The worker learns that this endpoint answers fast.
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 20)")
        .await
        .unwrap();
    eventually("the first deliveries", || ok.count() == 20).await;
    for i in 0..9 {
        endpoint(
            &db,
            "t",
            &format!("{}/{i}", hang.url()),
            ", '{order.refunded}', options => '{\"timeout_ms\": 3000, \"retry_schedule\": [\"1h\"]}'",
        )
        .await;
    }
    // 9 x 16 = 144 hanging requests wanted, more than a tenant alone may have (96).
    db.batch_execute(
        "SELECT postbox.emit('t', 'order.refunded', '{}') FROM generate_series(1, 16)",
    )
    .await
    .unwrap();
    eventually("the tenant's share full of hanging requests", || {
        hang.count() >= alone
    })
    .await;
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 50)")
        .await
        .unwrap();
    eventually_sql(
        &db,
        "the first hanging request times out",
        &format!("SELECT count(*) > 0 FROM postbox.attempts WHERE endpoint_id <> '{fast_id}'"),
    )
    .await;
    eventually("the fast deliveries", || ok.count() == 70).await;
    let before =
        succeeded_before_first(&db, &fast_id, &format!("h.endpoint_id <> '{fast_id}'")).await;
    assert_eq!(
        before, 70,
        "every fast delivery finished before the first hanging request timed out"
    );
    assert!(hang.max_concurrent() <= alone);
    worker.stop().await.unwrap();
}

/// While every slot is taken, new events are still expanded (routed, and so
/// counted as pending) rather than waiting for a slot to free up.
#[tokio::test]
async fn expansion_goes_on_while_the_worker_is_full() {
    let (pg, db) = cluster().await;
    let o = order();
    let hang = Receiver::start(Behavior::Hang, o.clone()).await;
    let ok = Receiver::start(Behavior::Statuses(vec![200]), o).await;
    let (hang_id, _) = endpoint(
        &db,
        "t",
        &hang.url(),
        ", '{order.refunded}', options => '{\"timeout_ms\": 5000}'",
    )
    .await;
    let (ok_id, _) = endpoint(&db, "u", &ok.url(), ", '{order.paid}'").await;
    db.batch_execute(
        "SELECT postbox.emit('t', 'order.refunded', '{}') FROM generate_series(1, 20)",
    )
    .await
    .unwrap();
    let mut cfg = test_config(&pg);
    // One slot: a hanging request takes it (more keep a share for others).
    cfg.max_in_flight = 1;
    cfg.lease = Duration::from_secs(10);
    let worker = Worker::start(cfg);
    eventually("every slot taken", || hang.count() == 1).await;
    db.batch_execute("SELECT postbox.emit('u', 'order.paid', '{}') FROM generate_series(1, 5)")
        .await
        .unwrap();
    eventually_sql(
        &db,
        "the new events expanded",
        &format!(
            "SELECT (SELECT count(*) FROM postbox.emitted) = 0
                AND (SELECT count(*) FROM postbox.outbox WHERE endpoint_id = '{ok_id}') = 5"
        ),
    )
    .await;
    let timed_out: i64 = one(
        &db,
        &format!("SELECT count(*) FROM postbox.attempts WHERE endpoint_id = '{hang_id}'"),
    )
    .await;
    assert_eq!(
        (timed_out, ok.count()),
        (0, 0),
        "expanded while the slot was still held"
    );
    worker.stop().await.unwrap();
}

/// A failing expansion (here: the worker's role may not run it) stops
/// neither claiming nor delivering what is already queued; it is counted,
/// and once it works again the rest follows.
#[tokio::test]
async fn deliveries_go_out_while_expansion_fails() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    endpoint(&db, "t", &rx.url(), "").await;
    db.batch_execute(
        "SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 5);
         SELECT postbox.expand_events(1000);
         CREATE ROLE worker_login LOGIN IN ROLE postbox_worker;
         REVOKE EXECUTE ON FUNCTION postbox.expand_events(integer) FROM postbox_worker;
         SELECT postbox.emit('t', 'order.refunded', '{}') FROM generate_series(1, 3);",
    )
    .await
    .unwrap();
    let addr = metrics_addr();
    let mut cfg = test_config(&pg);
    cfg.database_url = pg.url("worker_login").into();
    cfg.metrics_addr = Some(addr);
    let worker = Worker::start(cfg);
    eventually("the queued deliveries", || rx.count() == 5).await;
    // Acknowledged by the worker's role with its own grants only.
    eventually_sql(
        &db,
        "the five acknowledged",
        "SELECT count(*) = 5 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    metric_until(addr, "postbox_expand_errors_total", |n| n > 0.0).await;
    assert_eq!(rx.count(), 5, "the emitted rows wait for expansion");
    db.batch_execute("GRANT EXECUTE ON FUNCTION postbox.expand_events(integer) TO postbox_worker")
        .await
        .unwrap();
    eventually("the rest once expansion works again", || rx.count() == 8).await;
    worker.stop().await.unwrap();
}

/// Asserts that the generic plans of the statements `sql` runs (the
/// worker's statement, and each statement of the extension's function it
/// calls, through auto_explain's nested statements in the server's log)
/// read no table that grows with endpoints or deliveries whole.
async fn assert_no_table_scans(
    pg: &postbox_tests::Cluster,
    db: &tokio_postgres::Client,
    name: &str,
    types: &str,
    sql: &str,
    args: &str,
) {
    db.batch_execute(&format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE {name}({types}) AS {sql};
         LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;
         SET auto_explain.log_nested_statements = on"
    ))
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let log = pg.dir().join("server.log");
    let before = std::fs::metadata(&log).unwrap().len() as usize;
    db.batch_execute(&format!("EXECUTE {name}({args})"))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // A marker after the plans: the log is written in order.
    db.batch_execute(&format!(
        "SET auto_explain.log_min_duration = -1;
         DO $$ BEGIN RAISE LOG 'plans of {name} end here'; END $$"
    ))
    .await
    .unwrap();
    let plan = postbox_tests::wait_until(Duration::from_secs(10), "the plans in the log", || {
        let log = log.clone();
        async move {
            let text = std::fs::read(&log).unwrap();
            let text = String::from_utf8_lossy(&text[before..]).into_owned();
            text.contains(&format!("plans of {name} end here"))
                .then_some(text)
        }
    })
    .await;
    if std::env::var_os("POSTBOX_PRINT_PLANS").is_some() {
        println!("{name}:\n{plan}");
    }
    assert!(
        plan.matches("Query Text:").count() >= 2,
        "{name}: the function's own statements are logged:\n{plan}"
    );
    for table in ["outbox", "endpoints", "events", "endpoint_secrets"] {
        assert!(
            !plan.contains(&format!("Seq Scan on {table}")),
            "{name}'s generic plan scans {table}:\n{plan}"
        );
    }
}

/// 20,000 idle enabled endpoints: deliveries to a busy one still flow, and
/// the generic plans of the claim, the next-due look-up and the metrics
/// scan neither endpoints nor the outbox.
#[tokio::test]
async fn claims_are_driven_by_endpoints_with_work() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    let (busy, _) = endpoint(&db, "busy", &rx.url(), ", '{order.paid}'").await;
    db.batch_execute(
        "INSERT INTO postbox.endpoints (id, tenant, url, event_types, signature_style)
         SELECT gen_random_uuid(), 'idle' || (i % 1000), 'https://idle' || i || '.example.com/hook',
                '{single.item}', 'standard'
           FROM generate_series(1, 20000) i;
         INSERT INTO postbox.endpoint_secrets (endpoint_id, secret)
         SELECT id, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' FROM postbox.endpoints WHERE tenant LIKE 'idle%';
         ANALYZE postbox.endpoints; ANALYZE postbox.endpoint_secrets;",
    )
    .await
    .unwrap();
    db.batch_execute(
        "SELECT postbox.emit('busy', 'order.paid', '{}') FROM generate_series(1, 300)",
    )
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "300 deliveries",
        &format!(
            "SELECT count(*) = 300 FROM postbox.attempts WHERE endpoint_id = '{busy}' AND outcome = 'succeeded'"
        ),
    )
    .await;
    assert_eq!(rx.count(), 300);
    worker.stop().await.unwrap();
    // An outbox of realistic size: due rows, and 20,000 retries waiting an
    // hour (on a table of a few pages any plan may scan it, and should).
    db.batch_execute(&format!(
        "SELECT postbox.emit('busy', 'order.paid', '{{}}') FROM generate_series(1, 50);
         SELECT postbox.expand_events(1000);
         INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, next_attempt_at, attempts)
         SELECT 'busy', '{busy}', (SELECT id FROM postbox.events WHERE tenant = 'busy' LIMIT 1), now() + interval '1 hour', 1
           FROM generate_series(1, 20000);
         ANALYZE postbox.outbox; ANALYZE postbox.events;"
    ))
    .await
    .unwrap();
    assert_no_table_scans(
        &pg,
        &db,
        "claim",
        "text, int8, uuid[], int4[], int4, text[], int4[], int4, float8, int8",
        postbox_worker::claim::CLAIM,
        &format!("'w', 500, ARRAY['{busy}']::uuid[], '{{3}}', 16, '{{busy}}', '{{10}}', 64, 180, 16777216"),
    )
    .await;
    assert_no_table_scans(
        &pg,
        &db,
        "next_due",
        "uuid[], text[]",
        postbox_worker::claim::NEXT_DUE,
        "'{}', '{}'",
    )
    .await;
    assert_no_table_scans(
        &pg,
        &db,
        "refresh",
        "int8",
        postbox_worker::metrics::REFRESH,
        "100000",
    )
    .await;
}

/// Ten 200 kB payloads with POSTBOX_CLAIM_MAX_BYTES at 450 kB: no claim
/// returns more than the bound (one large payload still goes alone), and
/// the worker delivers them all.
#[tokio::test]
async fn a_claim_holds_at_most_claim_max_bytes() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    endpoint(&db, "t", &rx.url(), "").await;
    db.batch_execute(
        "SELECT postbox.emit('t', 'order.paid', jsonb_build_object('pad', repeat('x', 200000), 'n', i))
           FROM generate_series(1, 10) i;
         SELECT postbox.expand_events(1000);",
    )
    .await
    .unwrap();
    let manager =
        deadpool_postgres::Manager::new(pg.url("postgres").parse().unwrap(), tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .unwrap();
    let client = pool.get().await.unwrap();
    let rooms = postbox_worker::schedule::Rooms {
        default_endpoint: 100,
        default_tenant: 100,
        ..Default::default()
    };
    let claim = |max_bytes: u64| {
        postbox_worker::claim::claim(
            &client,
            "probe",
            500,
            &rooms,
            max_bytes,
            Duration::from_secs(60),
        )
    };
    // A bound below one payload: one row, never none.
    let one_row = claim(100_000).await.unwrap().jobs;
    assert_eq!(one_row.len(), 1);
    let mut ids: Vec<i64> = one_row.iter().map(|j| j.id).collect();
    let mut claims = 1;
    while ids.len() < 10 {
        let got = claim(450_000).await.unwrap().jobs;
        assert!(!got.is_empty(), "claims stopped at {} of 10", ids.len());
        let bytes: usize = got.iter().map(|j| j.data.len()).sum();
        assert!(
            bytes <= 450_000,
            "a claim returned {} rows, {bytes} bytes",
            got.len()
        );
        assert_eq!(
            got.len(),
            2.min(10 - ids.len()),
            "as many as fit: {bytes} bytes"
        );
        ids.extend(got.iter().map(|j| j.id));
        claims += 1;
        assert!(claims <= 10, "too many claims");
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each row claimed once");
    let leased: i64 = one(
        &db,
        "SELECT count(*) FROM postbox.outbox WHERE leased_by = 'probe'",
    )
    .await;
    assert_eq!(leased, 10, "rows cut by the bound were never leased");
    postbox_worker::claim::release(&client, &ids, "probe")
        .await
        .unwrap();
    drop(client);
    // The worker itself, with the same bound, delivers them all.
    let mut cfg = test_config(&pg);
    cfg.claim_max_bytes = 450_000;
    let worker = Worker::start(cfg);
    eventually("ten large deliveries", || rx.count() == 10).await;
    let ns: HashSet<i64> = rx
        .received()
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns.len(), 10);
    worker.stop().await.unwrap();
}

// Receivers written as other products document them, each run over the raw
// body and headers of a real delivery.

/// Standard Webhooks' Python library, as its README shows it; it returns
/// the parsed payload, which must be the `standard` envelope.
const STANDARD_RECEIVER: &str = r#"
import json, sys
from standardwebhooks import Webhook
case = json.load(sys.stdin)
wh = Webhook(case["secret"])
payload = wh.verify(case["body"], case["headers"])
assert set(payload) == {"type", "timestamp", "data"}, payload
print("verified")
"#;

/// GitHub's documented check of `X-Hub-Signature-256` ("Validating webhook
/// deliveries", Python example), over the raw body.
const GITHUB_RECEIVER: &str = r#"
import hashlib, hmac, json, sys
case = json.load(sys.stdin)
payload_body = case["body"].encode("utf-8")
secret_token = case["secret"]
signature_header = case["headers"]["x-hub-signature-256"]
hash_object = hmac.new(secret_token.encode("utf-8"), msg=payload_body, digestmod=hashlib.sha256)
expected_signature = "sha256=" + hash_object.hexdigest()
if not hmac.compare_digest(expected_signature, signature_header):
    sys.exit("Request signatures didn't match!")
print("verified")
"#;

/// A product's Node sample: the bare hex HMAC of `JSON.stringify(req.body)`
/// (the body as Express's JSON parser hands it over), compared with the
/// header. It verifies only because bodies are compact JSON.
const JSON_STRINGIFY_RECEIVER: &str = r#"
const crypto = require('crypto');
let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const c = JSON.parse(input);
  const req = { body: JSON.parse(c.body), headers: c.headers };
  const signature = crypto.createHmac('sha256', c.secret).update(JSON.stringify(req.body)).digest('hex');
  if (signature !== req.headers['x-supademo-signature']) {
    console.error('invalid signature');
    process.exit(1);
  }
  if (!req.body.event || !req.body.id || req.body.workspaceId !== 'ws_1') {
    console.error('not the flat envelope');
    process.exit(1);
  }
  console.log('verified');
});
"#;

#[tokio::test]
async fn receivers_written_to_other_products_docs_verify() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![204]), order()).await;
    let (_, std_secret) = endpoint(
        &db,
        "acme",
        &rx.url(),
        ", '{order.*}', envelope => 'standard'",
    )
    .await;
    let github_secret = "It's a Secret to Everybody";
    endpoint(
        &db,
        "acme",
        &rx.url().replace("/hook", "/github"),
        &format!(", '{{order.*}}', signature_style => 'sha256-hex', signature_header => 'X-Hub-Signature-256', own_secret => '{}'", github_secret.replace('\'', "''")),
    )
    .await;
    let supa_secret = "supademo-shared-secret-0001";
    let (supa_id, _) = endpoint(
        &db,
        "acme",
        &rx.url().replace("/hook", "/supa"),
        &format!(", '{{order.*}}', signature_style => 'hex', signature_header => 'x-supademo-signature', own_secret => '{supa_secret}', envelope => 'flat', headers => '{{\"X-Team\": \"blue\"}}'"),
    )
    .await;
    let worker = Worker::start(test_config(&pg));
    db.batch_execute(
        r#"SELECT postbox.emit('acme', 'order.paid', '{"workspaceId": "ws_1", "email": "ann@example.com", "note": "café, ünïcode: \"quoted\"", "items": [{"sku": "a-1", "qty": 2}], "total": 12.5, "ok": true, "gone": null}')"#,
    )
    .await
    .unwrap();
    eventually("three deliveries", || rx.count() == 3).await;
    let got = rx.received();
    let at = |path: &str| {
        got.iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("{path}"))
    };
    let (std, github, supa) = (at("/hook"), at("/github"), at("/supa"));
    let py = python();
    receiver_verify(&py, &["-c", STANDARD_RECEIVER], &std_secret, std).expect("standardwebhooks");
    receiver_verify(&py, &["-c", GITHUB_RECEIVER], github_secret, github).expect("GitHub's check");
    receiver_verify("node", &["-e", JSON_STRINGIFY_RECEIVER], supa_secret, supa)
        .expect("JSON.stringify check");
    assert!(
        receiver_verify(
            "node",
            &["-e", JSON_STRINGIFY_RECEIVER],
            "wrong-secret-0000000",
            supa
        )
        .is_err(),
        "a wrong secret must not verify"
    );
    // Compact: no whitespace outside the one string that holds some.
    let note = r#""café, ünïcode: \"quoted\"""#;
    for r in [std, github, supa] {
        assert!(r.body.contains(note), "{}", r.body);
        assert!(
            !r.body.replace(note, "").contains(' '),
            "compact: {}",
            r.body
        );
    }
    let flat = supa.json();
    assert_eq!(flat["event"], "order.paid");
    assert_eq!(flat["email"], "ann@example.com");
    assert!(flat.get("data").is_none());
    assert_eq!(std.json()["type"], "order.paid");
    worker.stop().await.unwrap();

    // The delivery log shows what went out: the event and the headers but
    // the signature, and the custom headers' names but never their values
    // (the receiver got the real one).
    let logged: serde_json::Value = one(
        &db,
        &format!("SELECT jsonb_build_object('data', data, 'headers', request_headers) FROM postbox.attempts WHERE endpoint_id = '{supa_id}'"),
    )
    .await;
    assert_eq!(logged["data"]["workspaceId"], "ws_1");
    assert_eq!(supa.header("x-team"), "blue");
    assert_eq!(
        logged["headers"]["X-Team"],
        postbox_rules::headers::MASKED_VALUE
    );
    assert!(!logged["headers"].to_string().contains("blue"));
    assert_eq!(logged["headers"]["user-agent"], supa.header("user-agent"));
    assert!(logged["headers"].get("x-supademo-signature").is_none());
    let std_log: serde_json::Value = one(
        &db,
        "SELECT request_headers FROM postbox.attempts a JOIN postbox.endpoints e ON e.id = a.endpoint_id WHERE e.envelope = 'standard'",
    )
    .await;
    assert_eq!(std_log["webhook-id"], std.header("webhook-id"));
    assert_eq!(
        std_log["webhook-timestamp"],
        std.header("webhook-timestamp")
    );
}

/// A tenant at limit 0: its queued deliveries wait and what it emits
/// meanwhile is never sent; raising the limit resumes it. Shown by order:
/// another tenant's deliveries arrive meanwhile.
#[tokio::test]
async fn a_suspended_tenant_gets_nothing_until_its_limit_is_raised() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![204]), order()).await;
    let (plan_ep, _) = endpoint(&db, "plan", &rx.url(), ", '{order.*}'").await;
    endpoint(
        &db,
        "other",
        &rx.url().replace("/hook", "/other"),
        ", '{order.*}'",
    )
    .await;
    db.batch_execute(
        r#"SELECT postbox.emit('plan', 'order.paid', '{"n": 1}');
           SELECT postbox.expand_events();
           SELECT postbox.set_tenant_limit('plan', 0);"#,
    )
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    db.batch_execute(
        r#"SELECT postbox.emit('plan', 'order.paid', '{"n": 2}');
           SELECT postbox.emit('other', 'order.paid', '{"n": 3}');"#,
    )
    .await
    .unwrap();
    let others = |rx: &Receiver| rx.received().iter().filter(|r| r.path == "/other").count();
    eventually("the other tenant's delivery", || others(&rx) == 1).await;
    // A second claim round after it, so a held row had its chance.
    db.batch_execute(r#"SELECT postbox.emit('other', 'order.paid', '{"n": 4}')"#)
        .await
        .unwrap();
    eventually("the other tenant's second delivery", || others(&rx) == 2).await;
    assert!(
        rx.received().iter().all(|r| r.path == "/other"),
        "the suspended tenant received something"
    );
    assert_eq!(
        one::<String>(
            &db,
            &format!("SELECT status FROM postbox.deliveries WHERE endpoint_id = '{plan_ep}'")
        )
        .await,
        "held"
    );
    db.batch_execute("SELECT postbox.set_tenant_limit('plan', 10)")
        .await
        .unwrap();
    db.batch_execute(r#"SELECT postbox.emit('plan', 'order.paid', '{"n": 5}')"#)
        .await
        .unwrap();
    eventually("n=1 and n=5", || {
        rx.received().iter().filter(|r| r.path == "/hook").count() == 2
    })
    .await;
    let mut ns: Vec<i64> = rx
        .received()
        .iter()
        .filter(|r| r.path == "/hook")
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(
        ns,
        vec![1, 5],
        "n=2, emitted while suspended, is never sent"
    );
    worker.stop().await.unwrap();
}

/// Retention: the worker purges what outlived its window on its schedule,
/// and counts it.
#[tokio::test]
async fn the_worker_purges_what_outlived_its_retention() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![204]), order()).await;
    endpoint(&db, "t", &rx.url(), ", '{order.*}'").await;
    db.batch_execute(
        "SELECT postbox.set_retention(succeeded_attempts => '1 second', events => '1 second')",
    )
    .await
    .unwrap();
    let addr = metrics_addr();
    let mut config = test_config(&pg);
    config.purge_interval = Duration::from_secs(1);
    config.metrics_addr = Some(addr);
    let worker = Worker::start(config);
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 5)")
        .await
        .unwrap();
    eventually("five deliveries", || rx.count() == 5).await;
    eventually_sql(
        &db,
        "the log and the events purged",
        "SELECT (SELECT count(*) FROM postbox.attempt_log) + (SELECT count(*) FROM postbox.events) = 0",
    )
    .await;
    let purged = |kind: &'static str| async move {
        metric(
            addr,
            &format!("postbox_purged_rows_total{{kind=\"{kind}\"}}"),
        )
        .await
        .unwrap_or(0.0)
    };
    postbox_tests::wait_until(Duration::from_secs(30), "the purge counters", || async {
        // Five events, and the operator's notice of the endpoint.
        (purged("attempts").await == 5.0 && purged("events").await == 6.0).then_some(())
    })
    .await;
    worker.stop().await.unwrap();
}
