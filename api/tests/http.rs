//! The API over real HTTP on loopback, against a real cluster: every route
//! with each kind of key, cross-tenant access, key rotation and revocation,
//! the rate limit, idempotency, errors, and a delivery created through the
//! API, received and verified with the official standardwebhooks library.

mod support;

use postbox_tests::receivers::{Behavior, Receiver};
use postbox_tests::verify::python_verify;
use postbox_tests::worker::{test_config, Worker};
use postbox_tests::{eventually, Cluster};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use support::Api;

/// Every tenant route with an admin key, a member key (reads only) and an
/// operator key (through /v1/tenants/{tenant}); another tenant's ids answer
/// exactly as unknown ones; keys reach only what their kind may.
#[tokio::test]
async fn every_route_with_every_kind_of_key() {
    let api = Api::start().await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let (_, member) = api.key(Some("acme"), "member").await;
    let (_, other) = api.key(Some("globex"), "admin").await;
    let (_, op) = api.key(None, "operator").await;
    use Method as M;

    // The catalog: every kind of key; postbox's own events (which go only
    // to the operator tenant) for operator keys only.
    for k in [&admin, &member, &op] {
        let a = api.call(M::GET, "/v1/event-types", Some(k), None).await;
        assert_eq!(a.status, 200);
        let names: Vec<&str> = a.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .filter(|n| !n.starts_with("postbox."))
            .collect();
        assert_eq!(names, ["order.paid", "order.refunded", "webhook.test"]);
        let own = a.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"].as_str().unwrap().starts_with("postbox."))
            .count();
        assert_eq!(own, if k == &op { 7 } else { 0 });
    }

    // Create with every field, as an admin.
    let a = api
        .call(
            M::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({
                "url": "https://hooks.example.com/a", "event_types": ["order.*"],
                "headers": {"X-Team": "billing"}, "description": "billing hooks",
                "options": {"timeout_ms": 5000}, "envelope": "standard"
            })),
        )
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["id"].as_str().unwrap().to_string();
    assert!(a.body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(a.body["headers"], json!({"X-Team": "billing"}));
    assert_eq!(a.body["status"], "healthy");
    assert_eq!(a.body["envelope"], "standard");
    let ep = format!("/v1/endpoints/{id}");

    // Read: admin, member, and the operator for the tenant.
    let for_acme = |path: &str| path.replacen("/v1", "/v1/tenants/acme", 1);
    for (k, path) in [
        (&admin, ep.clone()),
        (&member, ep.clone()),
        (&op, for_acme(&ep)),
    ] {
        let a = api.call(M::GET, &path, Some(k), None).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.body["description"], "billing hooks");
        assert!(a.body.get("secret").is_none(), "never the secret");
        let list = api
            .call(M::GET, &path.replace(&format!("/{id}"), ""), Some(k), None)
            .await;
        assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    }
    // Another tenant's id is unknown to them, as a missing one.
    let missing = "00000000-0000-7000-8000-000000000000";
    for path in [
        ep.clone(),
        format!("{ep}/stats"),
        format!("{ep}/deliveries"),
    ] {
        let theirs = api.call(M::GET, &path, Some(&other), None).await;
        let none = api
            .call(M::GET, &path.replace(&id, missing), Some(&other), None)
            .await;
        assert_eq!((theirs.status, none.status), (404, 404), "{path}");
        assert_eq!(theirs.message().replace(&id, missing), none.message());
        let op_other = api
            .call(
                M::GET,
                &path.replacen("/v1", "/v1/tenants/globex", 1),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(op_other.status, 404, "{path}");
    }
    for (m, path, body) in [
        (
            M::PATCH,
            ep.clone(),
            Some(json!({"description": "mine now"})),
        ),
        (M::DELETE, ep.clone(), None),
        (M::POST, format!("{ep}/test"), None),
        (M::POST, format!("{ep}/rotate-secret"), None),
        (
            M::POST,
            format!("{ep}/replay"),
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        ),
    ] {
        let a = api.call(m.clone(), &path, Some(&other), body).await;
        assert_eq!((a.status, a.code()), (404, "not_found"), "{m} {path}");
    }

    // Members only read; tenant keys never reach /v1/tenants; operator
    // keys only through it.
    for (m, path, body) in [
        (
            M::POST,
            "/v1/endpoints".to_string(),
            Some(json!({"url": "https://hooks.example.com/m"})),
        ),
        (M::PATCH, ep.clone(), Some(json!({"description": "x"}))),
        (M::DELETE, ep.clone(), None),
        (M::POST, format!("{ep}/test"), None),
        (M::POST, format!("{ep}/rotate-secret"), None),
        (
            M::PUT,
            "/v1/endpoints/by-url".to_string(),
            Some(json!({"url": "https://hooks.example.com/m"})),
        ),
        (M::GET, "/v1/api-keys".to_string(), None),
    ] {
        let a = api.call(m.clone(), &path, Some(&member), body).await;
        assert_eq!(
            (a.status, a.code()),
            (403, "forbidden"),
            "member {m} {path}"
        );
    }
    let a = api
        .call(M::GET, "/v1/tenants/acme/endpoints", Some(&admin), None)
        .await;
    assert_eq!(a.status, 403);
    let a = api.call(M::GET, "/v1/endpoints", Some(&op), None).await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let a = api
        .call(
            M::POST,
            "/v1/tenants/acme/events",
            Some(&admin),
            Some(json!({"event_type": "order.paid", "data": {}})),
        )
        .await;
    assert_eq!(a.status, 403, "only operator keys emit");
    assert_eq!(
        api.count(
            "SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator'"
        )
        .await,
        0,
        "and nothing was emitted"
    );
    assert_eq!(
        api.count("SELECT count(*) FROM postbox.endpoints").await,
        1,
        "nothing written"
    );

    // Change, as the operator for the tenant.
    let a = api
        .call(
            M::PATCH,
            &for_acme(&ep),
            Some(&op),
            Some(json!({"enabled": false, "event_types": ["order.paid"]})),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        (a.body["status"].as_str(), a.body["event_types"].clone()),
        (Some("paused"), json!(["order.paid"]))
    );
    let a = api
        .call(M::PATCH, &ep, Some(&admin), Some(json!({"enabled": true})))
        .await;
    assert_eq!(a.body["status"], "healthy");

    // Batching is an option like the others: set, refused out of range
    // with the rule's code and nothing written, and off again.
    let batching = json!({"timeout_ms": 5000, "batch_max_events": 100, "batch_max_wait_ms": 250});
    let a = api
        .call(
            M::PATCH,
            &ep,
            Some(&admin),
            Some(json!({"options": batching})),
        )
        .await;
    assert_eq!(
        (a.status, &a.body["options"]),
        (200, &batching),
        "{:?}",
        a.body
    );
    let a = api
        .call(
            M::PATCH,
            &ep,
            Some(&admin),
            Some(json!({"options": {"batch_max_events": 1001}})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (422, "rule_violation"),
        "{:?}",
        a.body
    );
    assert_eq!(a.body["error"]["rule"], "options_value_invalid");
    assert_eq!(a.body["error"]["item"], "batch_max_events");
    assert!(
        a.message()
            .contains("batch_max_events must be a whole number from 1 to 1000"),
        "{}",
        a.message()
    );
    let a = api.call(M::GET, &ep, Some(&member), None).await;
    assert_eq!(a.body["options"], batching, "nothing written");
    let a = api
        .call(
            M::PATCH,
            &ep,
            Some(&admin),
            Some(json!({"options": {"timeout_ms": 5000}})),
        )
        .await;
    assert_eq!(a.body["options"], json!({"timeout_ms": 5000}));
    // So is ordering, with the rule named for a value it does not know.
    let ordering = json!({"ordering": "key", "ordering_given_up": "hold"});
    let a = api
        .call(
            M::PATCH,
            &ep,
            Some(&admin),
            Some(json!({"options": ordering})),
        )
        .await;
    assert_eq!(
        (a.status, &a.body["options"]),
        (200, &ordering),
        "{:?}",
        a.body
    );
    let a = api
        .call(
            M::PATCH,
            &ep,
            Some(&admin),
            Some(json!({"options": {"ordering": "fifo"}})),
        )
        .await;
    assert_eq!(
        (
            a.status,
            a.body["error"]["rule"].as_str(),
            a.body["error"]["item"].as_str()
        ),
        (422, Some("options_value_invalid"), Some("ordering"))
    );
    let a = api
        .call(
            M::PATCH,
            &ep,
            Some(&admin),
            Some(json!({"options": {"timeout_ms": 5000}})),
        )
        .await;
    assert_eq!(a.body["options"], json!({"timeout_ms": 5000}));

    // Register by URL: created, then found with the same secret.
    let reg = json!({"url": "https://agent.example.com/hook", "event_types": ["order.paid"]});
    let first = api
        .call(
            M::PUT,
            "/v1/endpoints/by-url",
            Some(&admin),
            Some(reg.clone()),
        )
        .await;
    let again = api
        .call(M::PUT, "/v1/endpoints/by-url", Some(&admin), Some(reg))
        .await;
    assert_eq!((first.status, again.status), (201, 200));
    assert_eq!(
        (first.body["created"].clone(), again.body["created"].clone()),
        (json!(true), json!(false))
    );
    assert!(first.body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        again.body["secret"],
        Value::Null,
        "a stored secret is never read back"
    );
    assert_eq!(first.body["id"], again.body["id"]);

    // Test, rotate, stats, deliveries, one delivery, retry, replay.
    let a = api
        .call(M::POST, &format!("{ep}/test"), Some(&admin), None)
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let a = api
        .call(
            M::POST,
            &format!("{ep}/rotate-secret"),
            Some(&admin),
            Some(json!({"grace_seconds": 60})),
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(a.body["secret"].as_str().unwrap().starts_with("whsec_"));
    let a = api.call(M::GET, &ep, Some(&admin), None).await;
    assert_eq!(
        a.body["secrets"].as_array().unwrap().len(),
        2,
        "the old one signs during the grace period"
    );
    let a = api
        .call(M::GET, &format!("{ep}/stats"), Some(&member), None)
        .await;
    assert_eq!(
        (
            a.status,
            a.body["succeeded_24h"].as_i64(),
            a.body["success_rate_7d"].clone()
        ),
        (200, Some(0), Value::Null)
    );
    let a = api
        .call(M::GET, &format!("{ep}/deliveries"), Some(&member), None)
        .await;
    assert_eq!(a.status, 200);
    let d = a.body["data"][0].clone();
    assert_eq!(
        (d["status"].as_str(), d["event_type"].as_str()),
        (Some("pending"), Some("webhook.test"))
    );
    let did = d["id"].as_i64().unwrap();
    let a = api
        .call(
            M::GET,
            &format!("/v1/deliveries/{did}"),
            Some(&member),
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.body["attempts"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let a = api
        .call(M::GET, &format!("/v1/deliveries/{did}"), Some(&other), None)
        .await;
    assert_eq!(a.status, 404);
    let a = api
        .call(
            M::POST,
            &format!("/v1/deliveries/{did}/retry"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (422, "rule_violation"),
        "still pending: {:?}",
        a.body
    );
    assert!(a
        .message()
        .contains("only a failed or cancelled delivery can be retried"));
    api.db
        .batch_execute(&format!(
            "UPDATE postbox.outbox SET status = 'failed' WHERE id = {did}"
        ))
        .await
        .unwrap();
    let a = api
        .call(
            M::GET,
            &format!("{ep}/deliveries?status=failed"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.body["data"].as_array().unwrap().len(), 1);
    let a = api
        .call(
            M::GET,
            &format!("{ep}/deliveries?status=pending"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.body["data"].as_array().unwrap().len(), 0);
    let a = api
        .call(
            M::POST,
            &format!("/v1/deliveries/{did}/retry"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(a.status, 404, "another tenant's delivery");
    let a = api
        .call(
            M::POST,
            &format!("/v1/tenants/acme/deliveries/{did}/retry"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    api.db
        .batch_execute(&format!(
            "UPDATE postbox.outbox SET status = 'cancelled' WHERE id = {did}"
        ))
        .await
        .unwrap();
    let a = api
        .call(
            M::POST,
            &format!("{ep}/replay"),
            Some(&admin),
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!((a.status, a.body["queued"].as_i64()), (202, Some(1)));

    // Keys over HTTP: an admin lists and makes its tenant's; the operator too.
    let a = api
        .call(
            M::POST,
            "/v1/api-keys",
            Some(&admin),
            Some(json!({"role": "member", "label": "dashboard"})),
        )
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let new_member = a.body["key"].as_str().unwrap().to_string();
    assert_eq!(
        api.call(M::GET, "/v1/endpoints", Some(&new_member), None)
            .await
            .status,
        200
    );
    let a = api.call(M::GET, "/v1/api-keys", Some(&admin), None).await;
    let labels: Vec<&str> = a.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["test", "test", "dashboard"]);
    assert!(
        a.body.to_string().find("pbk_").map(|_| true) == Some(true),
        "prefixes are shown"
    );
    assert!(!a.body.to_string().contains(&new_member), "never a key");
    let a = api
        .call(M::GET, "/v1/tenants/globex/api-keys", Some(&op), None)
        .await;
    assert_eq!(a.body["data"].as_array().unwrap().len(), 1);
    let a = api
        .call(
            M::POST,
            "/v1/api-keys",
            Some(&admin),
            Some(json!({"role": "operator", "label": "x"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (400, "invalid_json"),
        "tenants make no operator keys"
    );

    // Emit over HTTP, as the operator.
    let a = api
        .call(
            M::POST,
            "/v1/tenants/acme/events",
            Some(&op),
            Some(json!({"event_type": "order.paid", "data": {"id": 1}})),
        )
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let a = api
        .call(
            M::POST,
            "/v1/tenants/acme/events",
            Some(&op),
            Some(json!({"event_type": "order.shipped", "data": {}})),
        )
        .await;
    assert_eq!((a.status, a.code()), (422, "rule_violation"));
    assert!(
        a.message().starts_with("postbox: unknown event type"),
        "{}",
        a.message()
    );

    // Unregister by URL, delete by id.
    let a = api
        .call(
            M::DELETE,
            "/v1/endpoints/by-url?url=https://agent.example.com/hook",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((a.status, a.body["deleted"].as_i64()), (200, Some(1)));
    let a = api.call(M::DELETE, &ep, Some(&admin), None).await;
    assert_eq!(a.status, 204);
    assert_eq!(api.call(M::GET, &ep, Some(&admin), None).await.status, 404);
    api.stop().await;
}

/// A missing, malformed, unknown or revoked key: the same 401. Rotation
/// and revocation take effect on the very next request.
#[tokio::test]
async fn rotation_and_revocation_take_effect_on_the_next_request() {
    let api = Api::start().await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let (id, member) = api.key(Some("acme"), "member").await;
    let unknown = format!("pbk_{}", "A".repeat(43));
    let mut bodies = Vec::new();
    for key in [
        None,
        Some("nope"),
        Some("pbk_short"),
        Some(unknown.as_str()),
        Some("Basic abc"),
    ] {
        let a = api.call(Method::GET, "/v1/endpoints", key, None).await;
        assert_eq!(a.status, 401, "{key:?}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
        bodies.push(a.body.to_string());
    }
    assert_eq!(
        api.call(Method::GET, "/v1/endpoints", Some(&member), None)
            .await
            .status,
        200
    );
    let a = api
        .call(
            Method::POST,
            &format!("/v1/api-keys/{id}/rotate"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let rotated = a.body["key"].as_str().unwrap().to_string();
    let a = api
        .call(Method::GET, "/v1/endpoints", Some(&member), None)
        .await;
    assert_eq!(a.status, 401, "the old key, right after the rotation");
    bodies.push(a.body.to_string());
    assert_eq!(
        api.call(Method::GET, "/v1/endpoints", Some(&rotated), None)
            .await
            .status,
        200
    );
    let a = api
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, 204);
    let a = api
        .call(Method::GET, "/v1/endpoints", Some(&rotated), None)
        .await;
    assert_eq!(a.status, 401, "right after the revocation");
    bodies.push(a.body.to_string());
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "one 401 for all: {bodies:?}");
    // Revoked in SQL, directly: the same.
    api.db
        .batch_execute(
            "SELECT postbox.revoke_api_key('acme', id) FROM postbox.api_keys WHERE role = 'admin'",
        )
        .await
        .unwrap();
    assert_eq!(
        api.call(Method::GET, "/v1/endpoints", Some(&admin), None)
            .await
            .status,
        401
    );
    api.stop().await;
}

/// Each key gets its burst, then 429 with Retry-After; other keys are not
/// affected; the bucket refills.
#[tokio::test]
async fn the_rate_limit_holds_per_key() {
    let api = Api::start_with(|c| {
        c.rate_limit = 2;
        c.rate_burst = 5;
    })
    .await;
    let (_, a) = api.key(Some("acme"), "member").await;
    let (_, b) = api.key(Some("acme"), "member").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            api.call(Method::GET, "/v1/endpoints", Some(&a), None)
                .await
                .status,
        );
    }
    // Eight calls take far less than the half second a token takes, so the
    // burst of 5 passes and the rest do not.
    assert_eq!(&statuses[..5], [200; 5]);
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    let limited = api.call(Method::GET, "/v1/endpoints", Some(&a), None).await;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1).contains(&wait), "{wait}");
    assert_eq!(
        api.call(Method::GET, "/v1/endpoints", Some(&b), None)
            .await
            .status,
        200,
        "another key"
    );
    postbox_tests::wait_until(Duration::from_secs(10), "a token back", || async {
        (api.call(Method::GET, "/v1/endpoints", Some(&a), None)
            .await
            .status
            == 200)
            .then_some(())
    })
    .await;
    api.stop().await;
}

/// POST with an Idempotency-Key: the first answer again (with
/// Idempotent-Replayed), nothing done twice; another request under the key
/// is refused; events reuse emit's own keys.
#[tokio::test]
async fn an_idempotency_key_gets_the_first_answer() {
    let api = Api::start().await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let (_, op) = api.key(None, "operator").await;
    let body = json!({"url": "https://hooks.example.com/i"});
    let key = [("Idempotency-Key", "create-1")];
    let first = api
        .call_with(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(body.clone()),
            &key,
        )
        .await;
    let again = api
        .call_with(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(first.body, again.body, "the same id and secret");
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // The operator's request with the same key is its own request: a
    // stored answer (here a secret) goes back only to its own credential.
    let op_again = api
        .call_with(
            Method::POST,
            "/v1/tenants/acme/endpoints",
            Some(&op),
            Some(body),
            &key,
        )
        .await;
    assert_eq!(op_again.status, 201);
    assert!(op_again.headers.get("idempotent-replayed").is_none());
    assert_ne!(op_again.body["secret"], first.body["secret"]);
    assert_eq!(api.count("SELECT count(*) FROM postbox.endpoints").await, 2);
    let other = api
        .call_with(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "https://hooks.example.com/j"})),
            &key,
        )
        .await;
    assert_eq!(
        (other.status, other.code()),
        (422, "idempotency_key_reused")
    );
    assert_eq!(
        (&other.body["error"]["rule"], &other.body["error"]["field"]),
        (&json!("idempotency_key_reused"), &json!("Idempotency-Key"))
    );
    // A refused request stores nothing: the key is free for a good one.
    let bad_key = [("Idempotency-Key", "create-2")];
    let bad = api
        .call_with(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "notaurl"})),
            &bad_key,
        )
        .await;
    assert_eq!(bad.status, 422);
    let good = api
        .call_with(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "https://hooks.example.com/k"})),
            &bad_key,
        )
        .await;
    assert_eq!(good.status, 201);
    // Events: one event per key.
    let ev = json!({"event_type": "order.paid", "data": {"n": 1}});
    let e1 = api
        .call_with(
            Method::POST,
            "/v1/tenants/acme/events",
            Some(&op),
            Some(ev.clone()),
            &[("Idempotency-Key", "ev-1")],
        )
        .await;
    let e2 = api
        .call_with(
            Method::POST,
            "/v1/tenants/acme/events",
            Some(&op),
            Some(ev),
            &[("Idempotency-Key", "ev-1")],
        )
        .await;
    assert_eq!((e1.status, e1.body.clone()), (202, e2.body));
    assert_eq!(
        api.count(
            "SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator'"
        )
        .await,
        1
    );
    // An ordering key is emit's own, kept with the event.
    let keyed = api
        .call(
            Method::POST,
            "/v1/tenants/acme/events",
            Some(&op),
            Some(json!({"event_type": "order.paid", "data": {"n": 2}, "ordering_key": "order-42"})),
        )
        .await;
    assert_eq!(keyed.status, 202, "{:?}", keyed.body);
    assert_eq!(
        api.count("SELECT count(*) FROM postbox.emitted WHERE ordering_key = 'order-42'")
            .await,
        1
    );
    api.stop().await;
}

/// Errors are JSON with stable codes and the field; every answer has a
/// request id (the client's, if it sent one); bodies are bounded.
#[tokio::test]
async fn errors_are_json_with_stable_codes() {
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], postbox_tests::free_port()));
    let api = Api::start_with(|c| {
        c.max_body = 4096;
        c.metrics_addr = Some(metrics);
    })
    .await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let a = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "https://h.example.com/", "colour": "red"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code(), a.body["error"]["field"].as_str()),
        (400, "unknown_field", Some("colour"))
    );
    let a = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": 7})),
        )
        .await;
    assert_eq!(
        (a.status, a.code(), a.body["error"]["field"].as_str()),
        (400, "invalid_json", Some("url"))
    );
    let a = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "notaurl"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (422, "rule_violation"));
    assert!(
        a.message().starts_with("postbox: "),
        "the rule's own message: {}",
        a.message()
    );
    // Every rule's answer names it by its code (postbox_rules::codes, from
    // the error's DETAIL, not its message), with the request field it is
    // about and, for one header or event type, that item.
    let rule = |a: &support::Answer| {
        let e = &a.body["error"];
        (
            a.status,
            a.code().to_string(),
            e["rule"].clone(),
            e["field"].clone(),
            e["item"].clone(),
        )
    };
    assert_eq!(
        rule(&a),
        (
            422,
            "rule_violation".into(),
            json!("url_invalid"),
            json!("url"),
            Value::Null
        )
    );
    let missing = "00000000-0000-7000-8000-000000000000";
    for (m, path, body, want) in [
        (
            Method::POST,
            "/v1/endpoints".to_string(),
            Some(json!({"url": "https://h.example.com/", "headers": {"X-Ok": "1", "Host": "h"}})),
            (
                422,
                "rule_violation",
                json!("header_name_reserved"),
                json!("headers"),
                json!("Host"),
            ),
        ),
        (
            Method::POST,
            "/v1/endpoints".to_string(),
            Some(
                json!({"url": "https://h.example.com/", "event_types": ["order.paid", "order.payd"]}),
            ),
            (
                422,
                "rule_violation",
                json!("event_type_unknown"),
                json!("event_types"),
                json!("order.payd"),
            ),
        ),
        (
            Method::POST,
            "/v1/endpoints".to_string(),
            Some(
                json!({"url": "https://h.example.com/", "signature_style": "hex", "signature_header": "Host"}),
            ),
            (
                422,
                "rule_violation",
                json!("header_name_reserved"),
                json!("signature_header"),
                Value::Null,
            ),
        ),
        // Unknown ids: found missing by the API's own read, and by SQL.
        (
            Method::GET,
            format!("/v1/endpoints/{missing}"),
            None,
            (
                404,
                "not_found",
                json!("endpoint_not_found"),
                json!("id"),
                Value::Null,
            ),
        ),
        (
            Method::DELETE,
            format!("/v1/endpoints/{missing}"),
            None,
            (
                404,
                "not_found",
                json!("endpoint_not_found"),
                json!("id"),
                Value::Null,
            ),
        ),
        (
            Method::POST,
            format!("/v1/endpoints/{missing}/rotate-secret"),
            None,
            (
                404,
                "not_found",
                json!("endpoint_not_found"),
                json!("id"),
                Value::Null,
            ),
        ),
    ] {
        let a = api.call(m.clone(), &path, Some(&admin), body).await;
        let (status, code, r, field, item) = want;
        assert_eq!(
            rule(&a),
            (status, code.into(), r, field, item),
            "{m} {path}: {:?}",
            a.body
        );
    }
    let a = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "https://h.example.com/", "description": "x".repeat(5000)})),
        )
        .await;
    assert_eq!((a.status, a.code()), (413, "payload_too_large"));
    let resp = api
        .http
        .post(format!("{}/v1/endpoints", api.base))
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body("url=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let a = api
        .call(Method::GET, "/v1/nothing", Some(&admin), None)
        .await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    let a = api
        .call(Method::PUT, "/v1/endpoints", Some(&admin), None)
        .await;
    assert_eq!((a.status, a.code()), (405, "method_not_allowed"));
    let a = api
        .call(Method::GET, "/v1/endpoints/not-a-uuid", Some(&admin), None)
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    let a = api
        .call(Method::GET, "/v1/endpoints?limit=0", Some(&admin), None)
        .await;
    assert_eq!(
        (a.status, a.body["error"]["field"].as_str()),
        (400, Some("limit"))
    );
    // NUL, which PostgreSQL cannot store: a rule, not a server error.
    let a = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "https://h.example.com/", "description": "a\u{0}b"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (422, "rule_violation"),
        "{:?}",
        a.body
    );
    // Request ids: made, or the client's kept.
    assert_eq!(a.headers["x-request-id"].len(), 36);
    let a = api
        .call_with(
            Method::GET,
            "/v1/endpoints",
            None,
            None,
            &[("x-request-id", "trace-42")],
        )
        .await;
    assert_eq!(
        (a.status, a.headers["x-request-id"].to_str().unwrap()),
        (401, "trace-42")
    );
    // A header value never comes back in an error.
    let a = api
        .call(Method::POST, "/v1/endpoints", Some(&admin), Some(json!({"url": "https://h.example.com/", "headers": {"X-Token": "sk_live_secret\n"}})))
        .await;
    assert_eq!(a.status, 422);
    assert!(!a.body.to_string().contains("sk_live_secret"), "{}", a.body);
    // Counted on the metrics address, by route template.
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"postbox_api_requests_total{route="/v1/endpoints",method="POST",status="413"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"postbox_api_requests_total{route="unmatched",method="GET",status="404"} 1"#
        ),
        "{text}"
    );
    assert_eq!(
        reqwest::get(format!("http://{metrics}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    api.stop().await;
}

/// The API refuses to run as a superuser (which could read every secret)
/// or as a role without postbox_admin: a configuration error, exit 2.
#[tokio::test]
async fn it_runs_only_as_a_role_granted_postbox_admin() {
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    db.batch_execute("CREATE ROLE nobody LOGIN").await.unwrap();
    for (user, why) in [
        ("postgres", "the database role is a superuser"),
        ("nobody", "the database role is not granted postbox_admin"),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = postbox_api::serve(
            listener,
            postbox_api::Config::new(pg.url(user)),
            std::future::pending(),
        );
        let e = tokio::time::timeout(Duration::from_secs(30), serving)
            .await
            .unwrap_or_else(|_| panic!("{user}: it started"))
            .unwrap_err();
        assert!(
            e.is_config() && e.to_string().starts_with(why),
            "{user}: {e}"
        );
    }
}

/// The document the API serves is the committed one.
#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let api = Api::start().await;
    let served = api
        .http
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert!(
        served == committed,
        "api/openapi.json differs from what the API serves"
    );
    api.stop().await;
}

/// An endpoint made through the API, with custom headers, gets a test send
/// and an event emitted through the API; both arrive, and verify with the
/// official standardwebhooks library against the secret the API returned.
#[tokio::test]
async fn deliveries_made_through_the_api_arrive_and_verify() {
    let api = Api::start().await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let (_, op) = api.key(None, "operator").await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    let a = api
        .call(Method::POST, "/v1/endpoints", Some(&admin), Some(json!({
            "url": format!("{}/hook", rx.url()), "event_types": ["order.paid"], "headers": {"X-Team": "billing"}
        })))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let (id, secret) = (
        a.body["id"].as_str().unwrap().to_string(),
        a.body["secret"].as_str().unwrap().to_string(),
    );
    let worker = Worker::start(test_config(&api.pg));
    let t = api
        .call(
            Method::POST,
            &format!("/v1/endpoints/{id}/test"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(t.status, 202);
    let e = api
        .call(
            Method::POST,
            "/v1/tenants/acme/events",
            Some(&op),
            Some(json!({"event_type": "order.paid", "data": {"order": 42}})),
        )
        .await;
    assert_eq!(e.status, 202);
    eventually("both deliveries", || rx.count() >= 2).await;
    let got = rx.received();
    for r in &got {
        python_verify("standard", &secret, r, "").expect("standardwebhooks verifies it");
        assert_eq!(r.header("x-team"), "billing");
    }
    let ids: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert!(ids.contains(&t.body["event_id"].as_str().unwrap().to_string()));
    assert!(ids.contains(&e.body["id"].as_str().unwrap().to_string()));
    // The log shows what was sent and what came back.
    let did = postbox_tests::wait_until(Duration::from_secs(30), "the attempt logged", || async {
        let d = api
            .call(
                Method::GET,
                &format!("/v1/endpoints/{id}/deliveries?event_type=order.paid&status=succeeded"),
                Some(&admin),
                None,
            )
            .await;
        d.body["data"][0]["id"].as_i64()
    })
    .await;
    let one = api
        .call(
            Method::GET,
            &format!("/v1/deliveries/{did}"),
            Some(&admin),
            None,
        )
        .await;
    let at = &one.body["attempts"][0];
    assert_eq!(
        (
            at["outcome"].as_str(),
            at["response"]["status_code"].as_i64()
        ),
        (Some("succeeded"), Some(200))
    );
    assert_eq!(at["request"]["data"], json!({"order": 42}));
    assert!(at["batch"].is_null(), "not a batch: {at}");
    // Sent as configured (the receiver saw "billing" above); logged masked.
    assert_eq!(
        at["request"]["headers"]["X-Team"],
        postbox_rules::headers::MASKED_VALUE
    );
    // The stats, hour by hour: the event's success in the latest hour (the test send left out).
    let s = api
        .call(
            Method::GET,
            &format!("/v1/endpoints/{id}/stats"),
            Some(&admin),
            None,
        )
        .await;
    let (hourly, daily) = (
        s.body["hourly"].as_array().unwrap(),
        s.body["daily"].as_array().unwrap(),
    );
    assert_eq!((hourly.len(), daily.len()), (24, 7));
    assert_eq!(
        (hourly[23]["ago"].as_i64(), hourly[23]["succeeded"].as_i64()),
        (Some(0), Some(1)),
        "{}",
        s.body
    );
    assert_eq!(daily[6]["succeeded"], 1);
    // Several endpoints' stats in one call (a page of the list): the same
    // answer, with the id; an id of no endpoint of the tenant left out.
    let other = uuid::Uuid::now_v7();
    let many = api
        .call(
            Method::GET,
            &format!("/v1/endpoints/stats?ids={other},{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(many.status, 200, "{}", many.body);
    let mut one = s.body.clone();
    one["id"] = json!(id);
    assert_eq!(many.body["data"], json!([one]));
    for bad in ["", "x", "1,2"] {
        let a = api
            .call(
                Method::GET,
                &format!("/v1/endpoints/stats?ids={bad}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(
            (a.status, a.body["error"]["field"].as_str()),
            (400, Some("ids")),
            "{bad}: {}",
            a.body
        );
    }
    // The values the settings take, for a client's forms.
    let c = api
        .call(Method::GET, "/v1/choices", Some(&admin), None)
        .await;
    assert_eq!(
        c.body["signature_styles"],
        json!(["standard", "sha256-hex", "hex"])
    );
    assert_eq!(
        c.body["delivery_statuses"],
        json!([
            "pending",
            "in_flight",
            "held",
            "succeeded",
            "failed",
            "cancelled",
            "coalesced"
        ])
    );
    assert!(c.body["grace_seconds"]
        .as_array()
        .unwrap()
        .contains(&json!(0)));
    // The defaults, from SQL's postbox.defaults(), so a client names them
    // without restating them.
    assert_eq!(
        c.body["defaults"],
        json!({"signature_style": "standard", "grace_seconds": 86400,
               "portal_link_seconds": 900, "test_event_type": "webhook.test"})
    );

    // A batching endpoint's delivery shows the batch its attempt went in:
    // the request's webhook-id and how many events it held; the stats count
    // the request once.
    let brx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    let b = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({
                "url": format!("{}/batch", brx.url()), "event_types": ["order.refunded"],
                "options": {"batch_max_events": 10, "batch_max_wait_ms": 500}
            })),
        )
        .await;
    assert_eq!(b.status, 201, "{:?}", b.body);
    let bid = b.body["id"].as_str().unwrap().to_string();
    for n in 0..3 {
        let e = api
            .call(
                Method::POST,
                "/v1/tenants/acme/events",
                Some(&op),
                Some(json!({"event_type": "order.refunded", "data": {"n": n}})),
            )
            .await;
        assert_eq!(e.status, 202);
    }
    let did = postbox_tests::wait_until(Duration::from_secs(30), "the batch logged", || async {
        let d = api
            .call(
                Method::GET,
                &format!("/v1/endpoints/{bid}/deliveries?status=succeeded"),
                Some(&admin),
                None,
            )
            .await;
        (d.body["data"].as_array().map_or(0, Vec::len) == 3)
            .then(|| d.body["data"][0]["id"].as_i64())?
    })
    .await;
    let sent: Vec<String> = brx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert_eq!(sent.len(), 1, "one request for the three events");
    let one = api
        .call(
            Method::GET,
            &format!("/v1/deliveries/{did}"),
            Some(&admin),
            None,
        )
        .await;
    let at = &one.body["attempts"][0];
    assert_eq!(
        one.body["attempts"].as_array().unwrap().len(),
        1,
        "{}",
        one.body
    );
    assert_eq!(
        (
            at["outcome"].as_str(),
            at["batch"]["id"].as_str(),
            at["batch"]["events"].as_i64()
        ),
        (Some("succeeded"), Some(sent[0].as_str()), Some(3)),
        "{at}"
    );
    let s = api
        .call(
            Method::GET,
            &format!("/v1/endpoints/{bid}/stats"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s.body["hourly"][23]["succeeded"], 1, "{}", s.body);
    assert_eq!(s.body["succeeded_1h"], 1, "{}", s.body);
    worker.stop().await.unwrap();
    api.stop().await;
}

/// Operator notifications over HTTP: an operator key registers the product's
/// own endpoint under the operator tenant (`postbox:operator`, for
/// `postbox.*`); a tenant admin's new endpoint is then announced to it,
/// signed with the secret the API returned; emitting to the operator tenant
/// is refused with the rule's name.
#[tokio::test]
async fn the_operator_registers_for_postbox_events_over_http() {
    let api = Api::start().await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let (_, op) = api.key(None, "operator").await;
    let ops = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    let a = api
        .call(
            Method::POST,
            "/v1/tenants/postbox:operator/endpoints",
            Some(&op),
            Some(
                json!({"url": format!("{}/ops", ops.url()), "event_types": ["postbox.endpoint.*"]}),
            ),
        )
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let secret = a.body["secret"].as_str().unwrap().to_string();
    let b = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "https://hooks.example.com/acme", "event_types": ["order.paid"]})),
        )
        .await;
    assert_eq!(b.status, 201, "{:?}", b.body);
    let worker = Worker::start(test_config(&api.pg));
    eventually("the operator hears of it", || ops.count() >= 1).await;
    worker.stop().await.unwrap();
    let got = ops.received();
    assert_eq!(got.len(), 1);
    python_verify("standard", &secret, &got[0], "").expect("standardwebhooks verifies it");
    let body = got[0].json();
    assert_eq!(body["event"], "postbox.endpoint.created");
    assert_eq!(body["data"]["tenant"], "acme");
    assert_eq!(body["data"]["endpoint_id"], b.body["id"]);
    let e = api
        .call(
            Method::POST,
            "/v1/tenants/postbox:operator/events",
            Some(&op),
            Some(json!({"event_type": "order.paid", "data": {}})),
        )
        .await;
    assert_eq!(
        (e.status, e.body["error"]["rule"].as_str()),
        (422, Some("tenant_reserved")),
        "{:?}",
        e.body
    );
}
