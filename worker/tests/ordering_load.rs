//! Ordered delivery under load (the issue's test): 100,000 events over
//! 1,000 keys and 10 endpoints, a receiver that fails about 10% of requests,
//! and a worker process killed with -9 twice beside an in-process worker.
//! The receiver checks each key's order as requests arrive. (Apart from
//! worker/tests/ordering.rs, which the SQL flavour runs too.)

use postbox_tests::fixtures::{cluster, endpoint};
use postbox_tests::receivers::{flaky_fails, order, Behavior, Received, Receiver};
use postbox_tests::worker::{test_config, worker_process, Running, Worker};
use postbox_tests::{eventually, eventually_sql, wait_until};
use std::collections::HashMap;
use std::time::Duration;

/// Checks that each key's events arrived at each endpoint in emit order:
/// event n only once every earlier one was accepted, and a repeat only of
/// the event that arrived last (one in flight when a worker died). Returns
/// how many events were accepted.
fn check_order(requests: &[Received], per_mille: u64) -> usize {
    // (endpoint path, key) -> (highest n arrived, every n up to this accepted)
    let mut keys: HashMap<(String, String), (u64, u64)> = HashMap::new();
    let mut sorted: Vec<&Received> = requests.iter().collect();
    sorted.sort_by_key(|r| r.seq);
    for r in sorted {
        let body = r.json();
        let key = body["data"]["k"].as_str().unwrap().to_string();
        let n = body["data"]["n"].as_u64().unwrap();
        let (last, upto) = keys.entry((r.path.clone(), key.clone())).or_default();
        assert!(n >= *last, "{} {key}: {n} arrived after {last}", r.path);
        assert!(
            n <= *upto + 1,
            "{} {key}: {n} arrived before {} was accepted",
            r.path,
            *upto + 1
        );
        *last = n;
        if !flaky_fails(r.seq, per_mille) {
            *upto = (*upto).max(n);
        }
    }
    keys.values().map(|(_, upto)| *upto as usize).sum()
}

/// The issue's test: 100,000 events over 1,000 keys and 10 endpoints, a
/// receiver failing about 10% of requests, a worker process killed with
/// -9 twice while an in-process worker runs beside it.
#[tokio::test]
async fn a_hundred_thousand_events_keep_their_order_through_failures_and_kills() {
    const TENANTS: u64 = 10;
    const KEYS: u64 = 100; // per endpoint: 1,000 in all
    const PER_KEY: u64 = 100;
    const FAIL_PER_MILLE: u64 = 100;
    let (pg, db) = cluster().await;
    let rx = Receiver::start(
        Behavior::Flaky {
            per_mille: FAIL_PER_MILLE,
        },
        order(),
    )
    .await;
    let port = rx.addr.port();
    // 30 quick retries: giving up after 30 failures in a row at 10% never
    // happens (1e-30), so every event must arrive.
    let schedule = format!("[{}]", vec!["\"50ms\""; 30].join(", "));
    for t in 0..TENANTS {
        endpoint(
            &db,
            &format!("t{t}"),
            &format!("http://127.0.0.1:{port}/t{t}"),
            &format!(
                r#", '{{*}}', options => '{{"ordering": "key", "retry_schedule": {schedule}}}'"#
            ),
        )
        .await;
    }
    let bin = env!("CARGO_BIN_EXE_postbox-worker");
    let spawn = || {
        Running::new(
            worker_process(bin, &pg)
                .env("POSTBOX_LEASE", "4s")
                .spawn()
                .unwrap(),
        )
    };
    let mut killed = spawn();
    let beside = Worker::start(test_config(&pg));
    // Emitted while the workers deliver: ten transactions, each with the
    // next tenth of every key's events.
    let step = PER_KEY / 10;
    for round in 0..10 {
        db.batch_execute(&format!(
            "SELECT count(postbox.emit('t' || t, 'order.paid', jsonb_build_object('k', 'k' || k, 'n', n),
                                       NULL, 'k' || k))
               FROM (SELECT t, k, n FROM generate_series(0, {tl}) t, generate_series(1, {KEYS}) k,
                            generate_series({lo}, {hi}) n
                      ORDER BY n, t, k) s",
            tl = TENANTS - 1,
            lo = round * step + 1,
            hi = (round + 1) * step,
        ))
        .await
        .unwrap();
        // Two kills with -9, each once a share of the work has arrived.
        if round == 3 || round == 7 {
            let at = rx.count();
            eventually("deliveries under way", || rx.count() > at + 2000).await;
            killed.kill();
            killed = spawn();
        }
    }
    let total = (TENANTS * KEYS * PER_KEY) as usize;
    // Checked as they arrive, once a second (a check reads every request).
    wait_until(Duration::from_secs(600), "every event accepted", || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        (check_order(&rx.received(), FAIL_PER_MILLE) == total).then_some(())
    })
    .await;
    eventually_sql(
        &db,
        "nothing left",
        "SELECT NOT EXISTS (SELECT FROM postbox.outbox WHERE NOT is_test)",
    )
    .await;
    let requests = rx.received();
    check_order(&requests, FAIL_PER_MILLE);
    let failed = requests
        .iter()
        .filter(|r| flaky_fails(r.seq, FAIL_PER_MILLE))
        .count();
    assert!(failed > total / 20, "about 10% failed: {failed}");
    killed.kill();
    beside.stop().await.unwrap();
}
