//! postbox-api pointed at a Citus coordinator (docs/design.md, "Past one
//! database: Citus"): endpoints, their secrets and settings made through the
//! API and the portal reach the worker nodes, whose workers deliver the
//! events of the distributed table signed with them. Does not run where
//! Citus is not installed (scripts/setup.sh builds it from CITUS_SRC).

mod support;

use postbox_tests::citus::{Citus, APP, ATTACH, DISTRIBUTE};
use postbox_tests::fixtures::one;
use postbox_tests::receivers::{self, Behavior, Receiver};
use postbox_tests::verify::python_verify;
use postbox_tests::worker::{test_config, Worker};
use postbox_tests::{eventually, pg_error};
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use std::time::Duration;
use support::Served;

/// Sends `req`; the status and the body as JSON.
async fn answer(req: RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The coordinator with the application's table distributed and attached,
/// the API serving on it as a role granted postbox_admin, and an admin key
/// of tenant ws1.
struct Coordinator {
    db: tokio_postgres::Client,
    served: Served,
    base: String,
    key: String,
}

async fn api_on_coordinator(citus: &Citus) -> Coordinator {
    let db = citus.coordinator().await;
    db.batch_execute(&format!(
        "{APP}{DISTRIBUTE}{ATTACH}
         CREATE ROLE postbox_api LOGIN IN ROLE postbox_admin, postbox_emitter;
         ALTER ROLE postbox_api SET log_parameter_max_length = 0;
         ALTER ROLE postbox_api SET log_parameter_max_length_on_error = 0;
         ALTER ROLE postbox_api SET postbox.allow_insecure_urls = on;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let url = citus.coordinator.url("postbox_api");
    let served = Served::start(|_| {
        let mut config = postbox_api::Config::new(url);
        config.shutdown_timeout = Duration::from_secs(5);
        config
    })
    .await;
    let key: String = db
        .query_one(
            "SELECT key FROM postbox.create_api_key('ws1', 'admin', 'test')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    Coordinator {
        db,
        base: served.base.clone(),
        served,
        key,
    }
}

#[tokio::test]
async fn the_api_and_the_portal_manage_endpoints_through_the_coordinator() {
    let Some(citus) = Citus::start(
        2,
        "the_api_and_the_portal_manage_endpoints_through_the_coordinator",
    )
    .await
    else {
        return;
    };
    let Coordinator {
        db,
        served,
        base,
        key,
    } = api_on_coordinator(&citus).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // An endpoint made through the API, on the coordinator.
    let rx = Receiver::start(Behavior::Statuses(vec![204]), receivers::order()).await;
    let (status, made) = answer(
        http.post(format!("{base}/v1/endpoints"))
            .bearer_auth(&key)
            .json(&json!({"url": format!("{}/hook", rx.url()), "event_types": ["recording.*"]})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let first_secret = made["secret"].as_str().unwrap().to_string();

    // The tenant's portal session (a one-time link made on the coordinator)
    // gives it a header.
    let token: String = db
        .query_one(
            "SELECT token FROM postbox.create_portal_session('ws1', 'admin', '10 minutes')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let entered = http
        .get(format!("{base}/portal/enter?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(entered.status(), 303);
    let cookie = entered.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (status, session) = answer(
        http.get(format!("{base}/v1/portal/session"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let (status, changed) = answer(
        http.patch(format!("{base}/v1/endpoints/{id}"))
            .header("cookie", &cookie)
            .header("x-csrf-token", session["csrf_token"].as_str().unwrap())
            .json(&json!({"headers": {"X-Team": "media"}})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");

    // A worker per worker node delivers the distributed table's events,
    // signed with the secret the API gave, with the portal's header.
    citus.config_replicated().await;
    let workers: Vec<Worker> = citus
        .workers
        .iter()
        .map(|node| Worker::start(test_config(node)))
        .collect();
    db.batch_execute("INSERT INTO app.recordings VALUES ('ws1', 1, 'one'), ('ws1', 2, 'two')")
        .await
        .unwrap();
    eventually("both events delivered", || rx.count() == 2).await;
    for r in rx.received() {
        python_verify("standard", &first_secret, &r, "")
            .unwrap_or_else(|e| panic!("signed with the API's secret: {e}"));
        assert_eq!(r.header("x-team"), "media");
    }

    // A secret rotated through the API, with no grace, signs the next one.
    let (status, rotated) = answer(
        http.post(format!("{base}/v1/endpoints/{id}/rotate-secret"))
            .bearer_auth(&key)
            .json(&json!({"grace_seconds": 0})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    citus.config_replicated().await;
    db.batch_execute("INSERT INTO app.recordings VALUES ('ws1', 3, 'three')")
        .await
        .unwrap();
    eventually("the third event delivered", || rx.count() == 3).await;
    let third = rx
        .received()
        .into_iter()
        .find(|r| r.body.contains("three"))
        .unwrap();
    python_verify("standard", &new_secret, &third, "")
        .unwrap_or_else(|e| panic!("signed with the rotated secret: {e}"));
    assert!(
        python_verify("standard", &first_secret, &third, "").is_err(),
        "the old secret no longer signs"
    );
    for w in workers {
        w.stop().await.unwrap();
    }
    served.stop().await;
}

/// What the worker nodes keep, through the API on the coordinator: an
/// endpoint a node disabled (its receiver answered 410) shows as disabled
/// with the node's reason; its deliveries are listed and shown with their
/// attempts, under ids of the node's range; once resumed, a retry and a
/// replay, sent to the node, deliver them; its statistics count the node's
/// attempts.
#[tokio::test]
async fn the_api_shows_and_acts_on_what_the_worker_nodes_keep() {
    let Some(citus) = Citus::start(1, "the_api_shows_and_acts_on_what_the_worker_nodes_keep").await
    else {
        return;
    };
    let Coordinator {
        db,
        served,
        base,
        key,
    } = api_on_coordinator(&citus).await;
    let http = reqwest::Client::new();
    let get = |path: String| http.get(format!("{base}{path}")).bearer_auth(&key);
    let post = |path: String| http.post(format!("{base}{path}")).bearer_auth(&key);

    let rx = Receiver::start(Behavior::Statuses(vec![410]), receivers::order()).await;
    let (status, made) = answer(
        post("/v1/endpoints".into())
            .json(&json!({"url": format!("{}/hook", rx.url()), "event_types": ["recording.*"]})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    citus.config_replicated().await;
    let worker = Worker::start(test_config(&citus.workers[0]));
    db.batch_execute("INSERT INTO app.recordings VALUES ('ws1', 1, 'one'), ('ws1', 2, 'two')")
        .await
        .unwrap();

    // The node disabled it; the API says so, with the node's reason.
    let shown = postbox_tests::wait_until(
        Duration::from_secs(30),
        "the API to show the endpoint disabled",
        || async {
            let (_, e) = answer(get(format!("/v1/endpoints/{id}"))).await;
            (e["status"] == "disabled").then_some(e)
        },
    )
    .await;
    assert!(
        shown["disabled_reason"].as_str().unwrap().contains("410"),
        "{shown}"
    );
    let (_, list) = answer(get("/v1/endpoints".into())).await;
    assert_eq!(list["data"][0]["status"], "disabled", "{list}");

    // Its deliveries, from the node, under ids of the node's range.
    let node_group: i64 = one(
        &db,
        "SELECT groupid::bigint FROM pg_dist_node WHERE groupid <> 0",
    )
    .await;
    let deliveries = postbox_tests::wait_until(
        Duration::from_secs(30),
        "both deliveries settled",
        || async {
            let (_, d) = answer(get(format!("/v1/endpoints/{id}/deliveries"))).await;
            let data = d["data"].as_array().cloned().unwrap_or_default();
            (data.len() == 2
                && data
                    .iter()
                    .all(|x| x["status"] != "pending" && x["status"] != "in_flight"))
            .then_some(data)
        },
    )
    .await;
    let ids: Vec<i64> = deliveries
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert!(ids[0] > ids[1], "newest first: {ids:?}");
    assert!(ids.iter().all(|i| i >> 48 == node_group), "{ids:?}");
    let (status, detail) = answer(get(format!("/v1/deliveries/{}", ids[1]))).await;
    assert_eq!(status, 200, "{detail}");
    let tried: Vec<i64> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["response"]["status_code"].as_i64())
        .collect();
    let (status, other) = answer(get(format!("/v1/deliveries/{}", ids[0]))).await;
    assert_eq!(status, 200, "{other}");
    assert!(
        tried.contains(&410)
            || other["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["response"]["status_code"] == 410),
        "the node's log shows the 410: {detail} {other}"
    );

    // Resumed, then one retried and the rest replayed, each on the node.
    rx.set_behavior(Behavior::Statuses(vec![204]));
    let (status, resumed) = answer(
        http.patch(format!("{base}/v1/endpoints/{id}"))
            .bearer_auth(&key)
            .json(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{resumed}");
    citus.config_replicated().await;
    // Each delivery's event id is the webhook-id its requests carry.
    let event_of = |d: &Value| d["event_id"].as_str().unwrap().to_string();
    let sent = |event: &str| {
        rx.received()
            .iter()
            .filter(|r| r.header("webhook-id") == event)
            .count()
    };
    let (retried_event, other_event) = (event_of(&detail), event_of(&other));
    let before = sent(&retried_event);
    let (status, retried) = answer(post(format!("/v1/deliveries/{}/retry", ids[1]))).await;
    assert_eq!(status, 202, "{retried}");
    eventually("the retried delivery sent again", || {
        sent(&retried_event) > before
    })
    .await;
    let before = sent(&other_event);
    let (status, replayed) = answer(
        post(format!("/v1/endpoints/{id}/replay")).json(&json!({"since": "2000-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, 202, "{replayed}");
    assert_eq!(replayed["queued"], 1, "{replayed}");
    eventually("the replayed delivery sent again", || {
        sent(&other_event) > before
    })
    .await;
    let (_, e) = answer(get(format!("/v1/endpoints/{id}"))).await;
    assert_eq!(e["status"], "healthy", "{e}");
    // The statistics count the node's attempts: the 410s and both successes.
    let stats = postbox_tests::wait_until(
        Duration::from_secs(30),
        "both successes counted",
        || async {
            let (_, st) = answer(get(format!("/v1/endpoints/{id}/stats"))).await;
            (st["succeeded_1h"] == 2).then_some(st)
        },
    )
    .await;
    let failed = stats["failed_1h"].as_i64().unwrap();
    assert!(failed >= 1, "{stats}");
    let rate = stats["success_rate_1h"].as_f64().unwrap();
    assert!((rate - 2.0 / (2.0 + failed as f64)).abs() < 1e-4, "{stats}");
    let hourly: i64 = stats["hourly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["succeeded"].as_i64().unwrap())
        .sum();
    assert_eq!(hourly, 2, "{stats}");
    worker.stop().await.unwrap();
    served.stop().await;
}
