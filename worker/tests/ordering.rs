//! Ordered delivery per key and coalescing, end to end: a real cluster with
//! the extension (or postbox-sql: scripts/test.sh runs these for the SQL
//! flavour too), the worker through `run()`, and receivers on 127.0.0.1
//! that record each request in arrival order. The load test with kills is
//! worker/tests/ordering_load.rs.

use postbox_tests::fixtures::{cluster, endpoint, one};
use postbox_tests::receivers::{order, Behavior, Received, Receiver};
use postbox_tests::worker::{test_config, Worker};
use postbox_tests::{eventually, eventually_sql, wait_until};
use std::time::Duration;

/// `data.label` of each request, in arrival order.
fn labels(rx: &Receiver) -> Vec<String> {
    rx.received()
        .iter()
        .map(|r| r.json()["data"]["label"].as_str().unwrap().to_string())
        .collect()
}

/// The labels of `key`'s events, in arrival order.
fn of_key(rx: &Receiver, key: &str) -> Vec<String> {
    labels(rx)
        .into_iter()
        .filter(|l| l.starts_with(key))
        .collect()
}

async fn emit(db: &tokio_postgres::Client, tenant: &str, key: &str, label: &str, extra: &str) {
    db.execute(
        "SELECT postbox.emit($1, 'order.paid', jsonb_build_object('label', $3::text) || $4::text::jsonb, NULL, $2)",
        &[&tenant, &key, &label, &extra],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_key_goes_one_at_a_time_in_emit_order_and_a_failure_holds_only_its_key() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(
        Behavior::Refuse {
            needle: "\"fail\":true".into(),
            status: 503,
        },
        order(),
    )
    .await;
    endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{*}', options => '{"ordering": "key", "retry_schedule": ["100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]}'"#,
    )
    .await;
    emit(&db, "acme", "a", "a1", "{}").await;
    emit(&db, "acme", "a", "a2", r#"{"fail": true}"#).await;
    emit(&db, "acme", "a", "a3", "{}").await;
    for n in 1..=3 {
        emit(&db, "acme", "b", &format!("b{n}"), "{}").await;
    }
    // No key: the endpoint's empty key, one at a time as well.
    emit(&db, "acme", "", "n1", "{}").await;
    let worker = Worker::start(test_config(&pg));
    eventually("a2 failing three times, b and n delivered", || {
        let l = labels(&rx);
        l.iter().filter(|x| *x == "a2").count() >= 3 && l.contains(&"b3".into())
    })
    .await;
    assert_eq!(of_key(&rx, "b"), ["b1", "b2", "b3"], "b in emit order");
    assert_eq!(of_key(&rx, "n"), ["n1"]);
    let a = of_key(&rx, "a");
    assert_eq!(a[0], "a1");
    assert!(
        a[1..].iter().all(|x| x == "a2"),
        "a3 waits while a2 fails: {a:?}"
    );
    // The failing event holds back its key's next one in the delivery log
    // too: still pending, never attempted.
    let waiting: i64 = one(
        &db,
        "SELECT count(*) FROM postbox.deliveries d JOIN postbox.events v ON v.id = d.event_id
          WHERE v.data->>'label' = 'a3' AND d.status = 'pending' AND d.attempts = 0",
    )
    .await;
    assert_eq!(waiting, 1);
    rx.set_behavior(Behavior::Statuses(vec![200]));
    eventually("a3 after a2", || of_key(&rx, "a").last().unwrap() == "a3").await;
    let a = of_key(&rx, "a");
    assert_eq!(a[a.len() - 2..], ["a2", "a3"], "{a:?}");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_given_up_delivery_is_skipped_or_holds_its_key_as_the_endpoint_says() {
    let (pg, db) = cluster().await;
    let refuse = Behavior::Refuse {
        needle: "\"poison\":true".into(),
        status: 400,
    };
    let skip_rx = Receiver::start(refuse.clone(), order()).await;
    let hold_rx = Receiver::start(refuse, order()).await;
    // No retries: the poisoned event is given up at its first failure.
    endpoint(
        &db,
        "acme",
        &skip_rx.url(),
        r#", '{*}', options => '{"ordering": "key", "retry_schedule": []}'"#,
    )
    .await;
    let (hold_id, _) = endpoint(
        &db,
        "acme",
        &hold_rx.url(),
        r#", '{*}', options => '{"ordering": "key", "ordering_given_up": "hold", "retry_schedule": []}'"#,
    )
    .await;
    emit(&db, "acme", "k", "k1", r#"{"poison": true}"#).await;
    emit(&db, "acme", "k", "k2", "{}").await;
    emit(&db, "acme", "other", "o1", "{}").await;
    let worker = Worker::start(test_config(&pg));
    eventually("skip: k2 after the given-up k1", || {
        of_key(&skip_rx, "k") == ["k1", "k2"]
    })
    .await;
    eventually("hold: other keys go", || {
        of_key(&hold_rx, "o") == ["o1"] && of_key(&hold_rx, "k") == ["k1"]
    })
    .await;
    eventually_sql(
        &db,
        "k1 given up at the holding endpoint",
        &format!(
            "SELECT count(*) = 1 FROM postbox.deliveries WHERE endpoint_id = '{hold_id}' AND status = 'failed'"
        ),
    )
    .await;
    // Held: k2 stays while k1 is given up (a few claims' worth of time).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(of_key(&hold_rx, "k"), ["k1"], "k2 is held");
    // A retry of k1 (now accepted) releases the key, in order.
    hold_rx.set_behavior(Behavior::Statuses(vec![200]));
    db.batch_execute(&format!(
        "SELECT postbox.retry_delivery('acme', id) FROM postbox.deliveries
          WHERE endpoint_id = '{hold_id}' AND status = 'failed'"
    ))
    .await
    .unwrap();
    eventually("hold: k1 then k2 after the retry", || {
        of_key(&hold_rx, "k") == ["k1", "k1", "k2"]
    })
    .await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn changes_to_one_row_arrive_in_commit_order() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    db.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, tenant text, label text);
         SELECT postbox.attach('items', 'item', 'tenant');",
    )
    .await
    .unwrap();
    endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{item.*}', options => '{"ordering": "key"}'"#,
    )
    .await;
    db.batch_execute("INSERT INTO items VALUES (1, 'acme', 'created'), (2, 'acme', 'other')")
        .await
        .unwrap();
    // Two transactions update row 1: the second waits for the first's row
    // lock, so it commits second, and its event goes second, whatever the
    // order in which expansion finds them.
    let t1 = pg.connect("postgres").await;
    let t2 = pg.connect("postgres").await;
    t1.batch_execute("BEGIN; UPDATE items SET label = 'first' WHERE id = 1")
        .await
        .unwrap();
    let second = tokio::spawn(async move {
        t2.batch_execute("BEGIN; UPDATE items SET label = 'second' WHERE id = 1; COMMIT")
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    t1.batch_execute("COMMIT").await.unwrap();
    second.await.unwrap();
    db.batch_execute("DELETE FROM items WHERE id = 1")
        .await
        .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually("row 1's four events", || {
        rx.received()
            .iter()
            .filter(|r| r.json()["data"]["item"]["id"] == 1)
            .count()
            == 4
    })
    .await;
    let row1: Vec<String> = rx
        .received()
        .iter()
        .map(Received::json)
        .filter(|b| b["data"]["item"]["id"] == 1)
        .map(|b| {
            format!(
                "{}:{}",
                b["event"].as_str().unwrap(),
                b["data"]["item"]["label"]
            )
        })
        .collect();
    assert_eq!(
        row1,
        [
            "item.created:\"created\"",
            "item.updated:\"first\"",
            "item.updated:\"second\"",
            "item.deleted:\"second\""
        ]
    );
    // Each row is a key of its own: the resource and its primary key.
    let keys: Vec<String> = db
        .query(
            "SELECT DISTINCT ordering_key FROM postbox.events WHERE tenant IS DISTINCT FROM 'postbox:operator' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["item:1", "item:2"]);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_emits_of_one_key_go_in_the_order_postbox_saw_them_committed() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{*}', options => '{"ordering": "key"}'"#,
    )
    .await;
    let t1 = pg.connect("postgres").await;
    let t2 = pg.connect("postgres").await;
    // Emitted first, committed last, with an expansion between the commits:
    // the other event was already queued, and goes first.
    t1.batch_execute("BEGIN").await.unwrap();
    emit(&t1, "acme", "k", "emitted-first", "{}").await;
    emit(&t2, "acme", "k", "emitted-second", "{}").await;
    one::<i32>(&db, "SELECT postbox.expand_events(1000)").await;
    t1.batch_execute("COMMIT").await.unwrap();
    // Both committed before an expansion: emit order.
    t1.batch_execute("BEGIN").await.unwrap();
    emit(&t1, "acme", "k", "third", "{}").await;
    emit(&t2, "acme", "k", "fourth", "{}").await;
    t1.batch_execute("COMMIT").await.unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually("four events", || rx.count() == 4).await;
    assert_eq!(
        labels(&rx),
        ["emitted-second", "emitted-first", "third", "fourth"]
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn turning_ordering_on_orders_what_is_already_queued() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Slow(Duration::from_millis(20)), order()).await;
    let (id, _) = endpoint(&db, "acme", &rx.url(), ", '{*}'").await;
    // Queued (no worker yet) while the endpoint is not ordered.
    db.batch_execute(&format!(
        "SELECT postbox.emit('acme', 'order.paid', jsonb_build_object('label', k || lpad(n::text, 3, '0')), NULL, k)
           FROM generate_series(1, 30) n, unnest(ARRAY['a', 'b']) k ORDER BY n, k;
         SELECT postbox.expand_events(1000);
         SELECT postbox.update_endpoint('acme', '{id}', options => '{{\"ordering\": \"key\"}}');"
    ))
    .await
    .unwrap();
    let keyed: i64 = one(
        &db,
        &format!("SELECT count(*) FROM postbox.outbox WHERE endpoint_id = '{id}' AND ordering_key IS NOT NULL"),
    )
    .await;
    assert_eq!(keyed, 60, "the queued deliveries took their keys");
    let worker = Worker::start(test_config(&pg));
    eventually("60 events", || rx.count() == 60).await;
    for k in ["a", "b"] {
        let got = of_key(&rx, k);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(got, sorted, "{k} in order");
    }
    // One at a time per key: never more than the two keys at once.
    assert!(rx.max_concurrent() <= 2, "{}", rx.max_concurrent());
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_burst_of_updates_to_one_row_coalesces_and_the_last_delivery_has_the_final_state() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Slow(Duration::from_millis(200)), order()).await;
    db.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, tenant text, label text);
         SELECT postbox.attach('items', 'item', 'tenant');
         INSERT INTO items VALUES (1, 'acme', 'v0');",
    )
    .await
    .unwrap();
    let (id, _) = endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{item.*}', options => '{"ordering": "key", "coalesce": true}'"#,
    )
    .await;
    let worker = Worker::start(test_config(&pg));
    // 1,000 updates, each its own transaction, over a few seconds while
    // the worker delivers: many expansions, each finding the newest
    // update waiting behind the one in flight.
    let update = db
        .prepare("UPDATE items SET label = 'v' || $1::int WHERE id = 1")
        .await
        .unwrap();
    for n in 1..=1000i32 {
        db.execute(&update, &[&n]).await.unwrap();
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The row was inserted before the endpoint existed: its deliveries are
    // the 1,000 updates.
    wait_until(Duration::from_secs(60), "every update settled", || async {
        let settled: bool = one(
            &db,
            &format!(
                "SELECT count(*) = 1000 AND count(*) FILTER (WHERE status IN ('pending', 'in_flight')) = 0
                   FROM postbox.deliveries WHERE endpoint_id = '{id}'"
            ),
        )
        .await;
        settled.then_some(())
    })
    .await;
    let updates: Vec<String> = rx
        .received()
        .iter()
        .map(Received::json)
        .filter(|b| b["event"] == "item.updated")
        .map(|b| b["data"]["item"]["label"].as_str().unwrap().to_string())
        .collect();
    // About one per 200 ms request over the burst; without coalescing
    // across expansions, one per expansion.
    eprintln!("{} deliveries of 1,000 updates", updates.len());
    assert!(
        !updates.is_empty() && updates.len() <= 30,
        "a handful of deliveries: {}",
        updates.len()
    );
    assert_eq!(updates.last().unwrap(), "v1000", "the final state last");
    let mut numbers: Vec<i32> = updates.iter().map(|l| l[1..].parse().unwrap()).collect();
    let sent = numbers.clone();
    numbers.sort();
    assert_eq!(numbers, sent, "in order");
    // The others are in the delivery log as coalesced, never dropped.
    let coalesced: i64 = one(
        &db,
        &format!(
            "SELECT count(*) FROM postbox.deliveries
              WHERE endpoint_id = '{id}' AND status = 'coalesced' AND last_error LIKE 'coalesced: a newer item.updated%'"
        ),
    )
    .await;
    assert_eq!(coalesced as usize, 1000 - updates.len());
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn test_sends_to_an_ordered_endpoint_go_and_turning_ordering_off_lets_a_key_go_at_once() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Slow(Duration::from_millis(300)), order()).await;
    let (id, _) = endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{*}', options => '{"ordering": "key"}'"#,
    )
    .await;
    for n in 1..=12 {
        emit(&db, "acme", "k", &format!("k{n:02}"), "{}").await;
    }
    let worker = Worker::start(test_config(&pg));
    eventually("the key's first event", || rx.count() >= 1).await;
    // A test send has no key: it goes while the key's events wait.
    let test: String = one(
        &db,
        &format!("SELECT postbox.send_test('acme', '{id}', 'order.paid', '{{\"label\": \"test\"}}')::text"),
    )
    .await;
    eventually("the test send", || {
        rx.received().iter().any(|r| r.header("webhook-id") == test)
    })
    .await;
    assert!(
        rx.max_concurrent() <= 2,
        "the key's head and the test send: {}",
        rx.max_concurrent()
    );
    // Ordering off: what waits behind the head goes at once, side by side.
    db.batch_execute(&format!(
        "SELECT postbox.update_endpoint('acme', '{id}', options => '{{}}')"
    ))
    .await
    .unwrap();
    rx.reset_max_concurrent();
    eventually("every event", || rx.count() == 13).await;
    assert!(rx.max_concurrent() > 2, "{}", rx.max_concurrent());
    worker.stop().await.unwrap();
}
