//! Batched deliveries end to end: a real cluster with the extension, the
//! worker through `run()` (or as a process, to kill), and receivers on
//! 127.0.0.1 that record each request.

use postbox_tests::fixtures::{cluster, endpoint, one};
use postbox_tests::receivers::{order, Behavior, Received, Receiver};
use postbox_tests::verify::{python, python_verify, receiver_verify};
use postbox_tests::worker::{test_config, worker_process, Running, Worker};
use postbox_tests::{eventually, eventually_sql};
use std::collections::HashMap;

/// The README's batch receiver in `lang`: the code block after its
/// `<!-- receiver: lang -->` marker, as written there.
fn readme_receiver(lang: &str) -> String {
    let readme = include_str!("../../README.md");
    let at = readme
        .find(&format!("<!-- receiver: {lang} -->"))
        .unwrap_or_else(|| panic!("no {lang} receiver in the README"));
    let fence = at + readme[at..].find("```").unwrap();
    let code = fence + readme[fence..].find('\n').unwrap() + 1;
    let end = code + readme[code..].find("```").unwrap();
    readme[code..end].to_string()
}

/// Runs the README's Python receiver on a batch as received: it must
/// verify it and hand over its events, and refuse it once a byte changed.
const PYTHON_HARNESS: &str = r#"
import json, sys
case = json.load(sys.stdin)
got = []
def handle(event_type, data):
    got.append(event_type)
receive_batch(case["body"], case["headers"], case["secret"], set())
assert got and all(t == "order.paid" for t in got), got
try:
    receive_batch(case["body"].replace("order.paid", "order.pain"), case["headers"], case["secret"], set())
    sys.exit("a changed body verified")
except SystemExit:
    raise
except Exception:
    pass
print("verified")
"#;

/// The same for the README's Node receiver.
const NODE_HARNESS: &str = r#"
let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const c = JSON.parse(input);
  const batch = receiveBatch(c.body, c.headers, c.secret);
  if (!batch.events.length || batch.id !== c.headers['webhook-id']) { console.error('not the batch'); process.exit(1); }
  let refused = false;
  try { receiveBatch(c.body.replace('order.paid', 'order.pain'), c.headers, c.secret); } catch (e) { refused = true; }
  if (!refused) { console.error('a changed body verified'); process.exit(1); }
  console.log('verified');
});
"#;

/// The event ids a batch request carried, in the body's order.
fn event_ids(r: &Received) -> Vec<String> {
    r.json()["events"]
        .as_array()
        .unwrap_or_else(|| panic!("not a batch: {}", r.body))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// How often each event arrived, over `requests`.
fn arrivals<'a>(requests: impl IntoIterator<Item = &'a Received>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in requests {
        for id in event_ids(r) {
            *seen.entry(id).or_default() += 1;
        }
    }
    seen
}

#[tokio::test]
async fn batches_carry_events_in_emit_order_signed_as_a_whole() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    let (endpoint_id, secret) = endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{order.*}', options => '{"batch_max_events": 25, "batch_max_wait_ms": 300}'"#,
    )
    .await;
    // A plain endpoint of the same tenant still gets one event per request.
    let plain = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    endpoint(&db, "acme", &plain.url(), ", '{order.*}'").await;
    // 60 events in one transaction, so they are due together.
    let emitted: Vec<String> = db
        .query(
            "SELECT postbox.emit('acme', 'order.paid', jsonb_build_object('n', i))::text
               FROM generate_series(1, 60) i",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let worker = Worker::start(test_config(&pg));
    eventually("60 events in batches", || {
        arrivals(&rx.received()).len() == 60
    })
    .await;
    eventually("60 single deliveries", || plain.count() == 60).await;

    let requests = rx.received();
    assert!(
        requests.len() >= 3 && requests.len() < 60,
        "{} requests",
        requests.len()
    );
    let seen = arrivals(&requests);
    assert!(seen.values().all(|n| *n == 1), "each event once: {seen:?}");
    let py = python();
    let python_receiver = format!("{}\n{PYTHON_HARNESS}", readme_receiver("python"));
    let node_receiver = format!("{}\n{NODE_HARNESS}", readme_receiver("node"));
    for r in &requests {
        // The official library verifies the batch as it came, and so do the
        // README's receivers.
        python_verify("standard", &secret, r, "").expect("standardwebhooks verifies a batch");
        receiver_verify(&py, &["-c", &python_receiver], &secret, r)
            .expect("the README's Python receiver");
        receiver_verify("node", &["-e", &node_receiver], &secret, r)
            .expect("the README's Node receiver");
        let body = r.json();
        assert_eq!(r.header("webhook-id"), body["id"].as_str().unwrap());
        let ids = event_ids(r);
        assert!(!ids.is_empty() && ids.len() <= 25, "{} events", ids.len());
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "emit order (UUIDv7) within a batch");
        for e in body["events"].as_array().unwrap() {
            assert_eq!(e["type"], "order.paid");
            assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
            assert!(e["data"]["n"].is_i64());
        }
    }
    assert!(
        emitted.iter().all(|id| seen.contains_key(id)),
        "every emitted event arrived"
    );
    let single = plain.received();
    assert!(single[0].json()["events"].is_null(), "not a batch");

    // The log: each delivery succeeded in a batch whose id was its webhook-id
    // (once acknowledged: the receiver sees a batch before its answer is back).
    eventually_sql(
        &db,
        "60 deliveries logged in batches",
        &format!(
            "SELECT count(*) = 60 FROM postbox.deliveries
              WHERE endpoint_id = '{endpoint_id}' AND status = 'succeeded' AND cardinality(batch_deliveries) > 1"
        ),
    )
    .await;
    let batch_ids: Vec<String> = db
        .query(
            &format!(
                "SELECT DISTINCT batch_id::text FROM postbox.attempts WHERE endpoint_id = '{endpoint_id}'"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut sent: Vec<String> = requests
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    sent.sort();
    let mut batch_ids = batch_ids;
    batch_ids.sort();
    assert_eq!(batch_ids, sent, "one log row per request, by its id");
    // By id, a delivery that went in a batch is found with its attempt.
    let (id, batch): (i64, String) = {
        let r = db
            .query_one(
                &format!(
                    "SELECT d.id, a.batch_id::text FROM postbox.deliveries d
                       JOIN postbox.attempts a ON a.delivery_id = d.id AND a.batch_deliveries @> ARRAY[d.id]
                      WHERE d.endpoint_id = '{endpoint_id}' ORDER BY d.id DESC LIMIT 1"
                ),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(sent.contains(&batch), "{id} went in {batch}");

    // A test send still goes alone, in the endpoint's envelope.
    let test: String = one(
        &db,
        &format!("SELECT postbox.send_test('acme', '{endpoint_id}', 'order.paid')::text"),
    )
    .await;
    eventually("the test send", || {
        rx.received().iter().any(|r| r.header("webhook-id") == test)
    })
    .await;
    let got = rx.received();
    let single = got.iter().find(|r| r.header("webhook-id") == test).unwrap();
    let body = single.json();
    assert!(body["events"].is_null(), "not a batch: {body}");
    assert_eq!(
        (body["id"].as_str(), body["event"].as_str()),
        (Some(test.as_str()), Some("order.paid"))
    );
    python_verify("standard", &secret, single, "").expect("the test send verifies");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_batch_is_retried_whole_and_each_event_arrives_once() {
    let (pg, db) = cluster().await;
    // Two failures that say nothing about the events, then success.
    let rx = Receiver::start(Behavior::Statuses(vec![503, 500, 200]), order()).await;
    let (endpoint_id, secret) = endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{*}', options => '{"batch_max_events": 50, "batch_max_wait_ms": 200, "retry_schedule": ["100ms", "100ms"]}'"#,
    )
    .await;
    db.batch_execute(
        "SELECT postbox.emit('acme', 'order.paid', jsonb_build_object('n', i)) FROM generate_series(1, 40) i",
    )
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "40 delivered",
        &format!(
            "SELECT count(*) = 40 FROM postbox.deliveries
              WHERE endpoint_id = '{endpoint_id}' AND status = 'succeeded'"
        ),
    )
    .await;
    let requests = rx.received();
    assert_eq!(requests.len(), 3, "one batch of 40, sent three times");
    let ids: Vec<Vec<String>> = requests.iter().map(event_ids).collect();
    assert!(
        ids.iter().all(|b| b.len() == 40 && *b == ids[0]),
        "retried whole"
    );
    let batch_ids: std::collections::HashSet<&str> =
        requests.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(batch_ids.len(), 3, "each attempt is a request of its own");
    for r in &requests {
        python_verify("standard", &secret, r, "").expect("each attempt verifies");
    }
    // Each delivery's log: two retries and a success, each in its batch.
    let log: Vec<String> = db
        .query(
            &format!(
                "SELECT string_agg(outcome || ':' || attempt, ',' ORDER BY started_at)
                   FROM postbox.attempts WHERE endpoint_id = '{endpoint_id}'
                  GROUP BY delivery_id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(log.len(), 40);
    assert!(
        log.iter().all(|l| l == "retrying:1,retrying:2,succeeded:3"),
        "{log:?}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_event_is_found_by_splitting_and_the_rest_is_delivered() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(
        Behavior::Refuse {
            needle: "\"poison\":true".into(),
            status: 400,
        },
        order(),
    )
    .await;
    let (endpoint_id, _) = endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{*}', options => '{"batch_max_events": 16, "batch_max_wait_ms": 200, "retry_schedule": ["1h"]}'"#,
    )
    .await;
    db.batch_execute(
        "SELECT postbox.emit('acme', 'order.paid', jsonb_build_object('n', i, 'poison', i = 11))
           FROM generate_series(1, 16) i",
    )
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "15 delivered, the poisoned one waiting for its retry",
        &format!(
            "SELECT count(*) FILTER (WHERE status = 'succeeded') = 15
                AND count(*) FILTER (WHERE status = 'pending' AND attempts = 1) = 1
               FROM postbox.deliveries WHERE endpoint_id = '{endpoint_id}'"
        ),
    )
    .await;
    // Halving 16 finds it in four splits, then it fails alone on its
    // schedule; the 15 others were accepted exactly once.
    let accepted: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| !r.body.contains("\"poison\":true"))
        .collect();
    let seen = arrivals(&accepted);
    assert_eq!(seen.len(), 15);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let splits: i64 = one(
        &db,
        &format!(
            "SELECT count(DISTINCT batch_id) FROM postbox.attempts
              WHERE endpoint_id = '{endpoint_id}' AND outcome = 'split'"
        ),
    )
    .await;
    assert_eq!(splits, 4, "16, 8, 4 and 2 events with the poisoned one");
    let poisoned: String = one(
        &db,
        &format!(
            "SELECT d.last_error FROM postbox.deliveries d JOIN postbox.events v ON v.id = d.event_id
              WHERE d.endpoint_id = '{endpoint_id}' AND d.status = 'pending' AND v.data->>'poison' = 'true'"
        ),
    )
    .await;
    assert_eq!(poisoned, "HTTP 400");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_out_of_attempts_is_split_so_only_the_failing_event_is_given_up() {
    let (pg, db) = cluster().await;
    // A 500 for the poisoned event: no refusal, so only running out of
    // attempts (none left to retry: an empty schedule) splits the batch.
    let rx = Receiver::start(
        Behavior::Refuse {
            needle: "\"poison\":true".into(),
            status: 500,
        },
        order(),
    )
    .await;
    let (endpoint_id, _) = endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", '{*}', options => '{"batch_max_events": 4, "batch_max_wait_ms": 200, "retry_schedule": []}'"#,
    )
    .await;
    db.batch_execute(
        "SELECT postbox.emit('acme', 'order.paid', jsonb_build_object('n', i, 'poison', i = 3))
           FROM generate_series(1, 4) i",
    )
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "3 delivered, the poisoned one given up alone",
        &format!(
            "SELECT count(*) FILTER (WHERE status = 'succeeded') = 3
                AND count(*) FILTER (WHERE status = 'failed') = 1
               FROM postbox.deliveries WHERE endpoint_id = '{endpoint_id}'"
        ),
    )
    .await;
    let outcomes: String = one(
        &db,
        &format!(
            "SELECT string_agg(outcome || ':' || cardinality(batch_deliveries), ',' ORDER BY started_at, outcome)
               FROM (SELECT DISTINCT batch_id, outcome, started_at, batch_deliveries
                       FROM postbox.attempts WHERE endpoint_id = '{endpoint_id}') a"
        ),
    )
    .await;
    let mut got: Vec<&str> = outcomes.split(',').collect();
    got.sort();
    assert_eq!(
        got,
        [
            "failed:1",
            "split:2",
            "split:4",
            "succeeded:1",
            "succeeded:2"
        ],
        "4 and 2 split when out of attempts; only the poisoned one failed"
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_killed_worker_loses_no_batched_event() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Hang, order()).await;
    endpoint(
        &db,
        "t",
        &rx.url(),
        r#", '{*}', options => '{"batch_max_events": 20, "batch_max_wait_ms": 50}'"#,
    )
    .await;
    db.batch_execute(
        "SELECT postbox.emit('t', 'order.paid', jsonb_build_object('n', i)) FROM generate_series(1, 100) i",
    )
    .await
    .unwrap();
    // A real worker process, killed with SIGKILL while its batches hang.
    let mut child = Running::new(
        worker_process(env!("CARGO_BIN_EXE_postbox-worker"), &pg)
            .env("POSTBOX_LEASE", "4s")
            .spawn()
            .unwrap(),
    );
    eventually("batches in flight", || rx.count() >= 2).await;
    child.kill();
    // In flight when it died: what it had claimed, as its leases say (the
    // database stands still now). Not what the receiver has read so far: a
    // request the worker sent just before it died may be read later still.
    let hung: std::collections::HashSet<String> = db
        .query(
            "SELECT event_id::text FROM postbox.outbox WHERE lease_until IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        arrivals(&rx.received()).keys().all(|id| hung.contains(id)),
        "every batch that arrived was claimed"
    );
    rx.set_behavior(Behavior::Statuses(vec![200]));
    let before = rx.count();
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "all 100 delivered",
        "SELECT count(*) = 100 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    let after = rx.received();
    let seen = arrivals(&after[before..]);
    assert_eq!(seen.len(), 100, "every event arrived after the kill");
    // Repeats only of events in the batches that were in flight.
    for (id, n) in &seen {
        assert!(
            *n == 1 || hung.contains(id),
            "{id} arrived {n} times and was not in flight"
        );
    }
    worker.stop().await.unwrap();
}
