//! postbox-api pointed at a Citus coordinator (docs/design.md, "Past one
//! database: Citus"): endpoints, their secrets and settings made through the
//! API and the portal reach the worker nodes, whose workers deliver the
//! events of the distributed table signed with them. Does not run where
//! Citus is not installed (scripts/setup.sh builds it from CITUS_SRC).

mod support;

use postbox_tests::citus::{Citus, APP, ATTACH, DISTRIBUTE};
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
    let base = served.base.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let key: String = db
        .query_one(
            "SELECT key FROM postbox.create_api_key('ws1', 'admin', 'test')",
            &[],
        )
        .await
        .unwrap()
        .get(0);

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
