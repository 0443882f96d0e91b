//! Operator notifications: postbox's own events (`postbox.endpoint.failing`,
//! `.disabled`, `.recovered`, `postbox.delivery.exhausted`, and the admin
//! changes), delivered by the real worker, signed, to an endpoint of the
//! operator tenant, and verified by the official Standard Webhooks package.
//! The worker logs in with postbox_worker's grants only (`test_config`), as
//! in production: the acknowledgement that reports health runs with them.

use postbox_tests::eventually_sql;
use postbox_tests::fixtures::{cluster, endpoint, one};
use postbox_tests::receivers::{order, Behavior, Received, Receiver};
use postbox_tests::verify::python_verify;
use postbox_tests::worker::{test_config, Worker};
use serde_json::Value;
use std::time::Duration;

/// The `postbox.*` events the operator's receiver got, by type, in arrival
/// order: (type, data).
fn notices(rx: &Receiver) -> Vec<(String, Value)> {
    let mut got: Vec<Received> = rx.received();
    got.sort_by_key(|r| r.seq);
    got.iter()
        .map(|r| {
            let body = r.json();
            (
                body["event"].as_str().unwrap().to_string(),
                body["data"].clone(),
            )
        })
        .collect()
}

fn count(got: &[(String, Value)], event: &str) -> usize {
    got.iter().filter(|(t, _)| t == event).count()
}

/// A failing endpoint: the operator hears `failing` at its first failure,
/// `disabled` when the worker disables it, `exhausted` for each delivery
/// that ran out of attempts, `updated` when the tenant resumes it, and
/// `recovered` at its next success; each once, about the right tenant and
/// endpoint, and each signed with the operator endpoint's secret.
#[tokio::test]
async fn the_operator_hears_failing_disabled_and_recovered_once_each() {
    let (pg, db) = cluster().await;
    let ops = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    let (_, ops_secret) = endpoint(
        &db,
        "postbox:operator",
        &ops.url(),
        r#", ARRAY['postbox.*'], options => '{"ordering": "key"}'"#,
    )
    .await;
    let rx = Receiver::start(Behavior::Statuses(vec![500]), order()).await;
    let (ep, _) = endpoint(
        &db,
        "acme",
        &rx.url(),
        r#", options => '{"retry_schedule": []}'"#,
    )
    .await;
    db.batch_execute("SELECT postbox.emit('acme', 'order.paid', jsonb_build_object('n', i)) FROM generate_series(1, 3) i")
        .await
        .unwrap();
    let mut cfg = test_config(&pg);
    cfg.disable_after_failures = 3;
    cfg.disable_after = Duration::ZERO;
    cfg.endpoint_max_in_flight = 1;
    let worker = Worker::start(cfg);
    eventually_sql(
        &db,
        "disabled after three failures",
        &format!("SELECT status = 'disabled' FROM postbox.endpoint_status WHERE id = '{ep}'"),
    )
    .await;
    postbox_tests::eventually("the operator hears of it", || {
        let got = notices(&ops);
        count(&got, "postbox.endpoint.disabled") == 1
            && count(&got, "postbox.delivery.exhausted") == 3
    })
    .await;

    // The tenant fixes its receiver and resumes the endpoint: one success.
    rx.set_behavior(Behavior::Statuses(vec![200]));
    db.batch_execute(&format!(
        "SELECT postbox.update_endpoint('acme', '{ep}', enabled => true);
         SELECT postbox.emit('acme', 'order.paid', '{{\"n\": 4}}');"
    ))
    .await
    .unwrap();
    postbox_tests::eventually("recovered", || {
        count(&notices(&ops), "postbox.endpoint.recovered") == 1
    })
    .await;
    // Nothing more is on its way to the operator, then count.
    let ops_id: String = one(
        &db,
        "SELECT id::text FROM postbox.endpoints WHERE tenant = 'postbox:operator'",
    )
    .await;
    eventually_sql(
        &db,
        "the operator's deliveries done",
        &format!("SELECT pending = 0 FROM postbox.endpoint_status WHERE id = '{ops_id}'"),
    )
    .await;
    worker.stop().await.unwrap();

    let got = notices(&ops);
    let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    for (event, n) in [
        ("postbox.endpoint.failing", 1),
        ("postbox.endpoint.disabled", 1),
        ("postbox.delivery.exhausted", 3),
        ("postbox.endpoint.updated", 1),
        ("postbox.endpoint.recovered", 1),
    ] {
        assert_eq!(count(&got, event), n, "{event}: {types:?}");
    }
    // The endpoint was created after the operator's: the operator heard that too.
    assert_eq!(count(&got, "postbox.endpoint.created"), 1, "{types:?}");
    assert_eq!(got.len(), 8, "{types:?}");
    // In the order it happened: each event's ordering key is the endpoint
    // it is about, and the operator's endpoint is ordered.
    let at = |event: &str| types.iter().position(|t| *t == event).unwrap();
    assert!(at("postbox.endpoint.created") < at("postbox.endpoint.failing"));
    assert!(at("postbox.endpoint.failing") < at("postbox.endpoint.disabled"));
    assert!(at("postbox.endpoint.disabled") < at("postbox.endpoint.updated"));
    assert!(at("postbox.endpoint.updated") < at("postbox.endpoint.recovered"));
    for (event, data) in &got {
        assert_eq!(data["tenant"], "acme", "{event}: {data}");
        assert_eq!(data["endpoint_id"], ep.as_str(), "{event}: {data}");
        assert_eq!(data["url"], rx.url(), "{event}: {data}");
    }
    let data = |event: &str| got.iter().find(|(t, _)| t == event).unwrap().1.clone();
    assert!(data("postbox.endpoint.failing")["reason"]
        .as_str()
        .unwrap()
        .contains("500"));
    assert!(data("postbox.endpoint.disabled")["reason"]
        .as_str()
        .unwrap()
        .contains("3 consecutive failed attempts"));
    assert_eq!(
        data("postbox.endpoint.updated")["reason"],
        "resumed after being disabled"
    );
    let exhausted = data("postbox.delivery.exhausted");
    assert_eq!(exhausted["event_type"], "order.paid");
    assert_eq!(exhausted["attempts"], 1);
    // Every one signed with the operator endpoint's secret.
    for r in ops.received() {
        python_verify("standard", &ops_secret, &r, "").unwrap();
    }
    // And readable in SQL, for a product that polls instead.
    let polled: i64 = one(
        &db,
        "SELECT count(*) FROM postbox.operator_events WHERE tenant = 'acme'",
    )
    .await;
    assert_eq!(polled, 8);
    // The tenant's own endpoint got none of them.
    assert!(rx
        .received()
        .iter()
        .all(|r| !r.body.contains("postbox.endpoint")));
}

/// The operator's own endpoint failing tells nobody (it would feed itself),
/// and no tenant can reach the operator's endpoints with events of its own.
#[tokio::test]
async fn the_operators_endpoint_hears_only_of_tenants() {
    let (pg, db) = cluster().await;
    let ops = Receiver::start(Behavior::Statuses(vec![500]), order()).await;
    let (ops_id, _) = endpoint(
        &db,
        "postbox:operator",
        &ops.url(),
        r#", options => '{"retry_schedule": []}'"#,
    )
    .await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
    endpoint(&db, "acme", &rx.url(), "").await;
    db.batch_execute("SELECT postbox.emit('acme', 'order.paid', '{}')")
        .await
        .unwrap();
    let worker = Worker::start(test_config(&pg));
    eventually_sql(
        &db,
        "the operator's endpoint failed",
        &format!(
            "SELECT consecutive_failures > 0 FROM postbox.endpoint_status WHERE id = '{ops_id}'"
        ),
    )
    .await;
    postbox_tests::eventually("acme's delivery", || rx.count() == 1).await;
    worker.stop().await.unwrap();
    // Only acme's created: nothing about the operator's own endpoint failing.
    let kinds: Vec<String> = db
        .query(
            "SELECT event_type || ' ' || tenant FROM postbox.operator_events ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["postbox.endpoint.created acme"]);
    let err = db
        .batch_execute("SELECT postbox.emit('postbox:operator', 'order.paid', '{}')")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("operator tenant"),
        "{err:?}"
    );
}
