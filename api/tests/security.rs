//! Security round two (issue 23), each attack from outside, over real HTTP
//! on loopback against a real cluster: what one tenant can do to the
//! others, what a portal session can reach, where secrets could leak, and
//! the API's edges. Each test names the attack it stops.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::Api;
use tokio::io::AsyncWriteExt;

/// A tenant that opens many sockets which send a POST's headers and never
/// finish the body, and that keeps many replays of a long range going,
/// stops neither another tenant's reads nor `/healthz`: no connection is
/// held while a body is read, and a tenant holds at most its share.
#[tokio::test]
async fn a_tenant_with_slow_bodies_and_replays_cannot_stop_the_others() {
    let api = Api::start_with(|c| {
        c.db_pool_size = 8;
        c.db_per_tenant = 2;
        c.body_timeout = Duration::from_secs(120);
    })
    .await;
    let (_, noisy) = api.key(Some("noisy"), "admin").await;
    let (_, quiet) = api.key(Some("quiet"), "member").await;
    let endpoint: uuid::Uuid = api
        .db
        .query_one(
            "SELECT id FROM postbox.create_endpoint('noisy', 'https://hooks.example.com/n', '{*}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    api.db
        .batch_execute(
            "SELECT postbox.create_endpoint('quiet', 'https://hooks.example.com/q', '{*}');
             INSERT INTO postbox.events (id, tenant, event_type, data, created_at)
             VALUES (gen_random_uuid(), 'noisy', 'order.paid', '{}', now());",
        )
        .await
        .unwrap();
    let event: uuid::Uuid = api
        .db
        .query_one("SELECT id FROM postbox.events WHERE tenant = 'noisy'", &[])
        .await
        .unwrap()
        .get(0);
    api.db
        .execute(
            "INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, status, next_attempt_at, created_at)
             SELECT 'noisy', $1, $2, 'failed', now(), now() - interval '1 day' + i * interval '1 ms'
               FROM generate_series(1, 30000) i",
            &[&endpoint, &event],
        )
        .await
        .unwrap();

    // 24 sockets that send the headers of a create and part of its body.
    let addr = api.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..24 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!(
                "POST /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {noisy}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"url\": \"https://"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        slow.push(s);
    }
    // Replays of the whole range, 8 at a time, until the reads are done;
    // each loop finishes the call it has in flight, then stops.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut replays = Vec::new();
    for _ in 0..8 {
        let (base, key, stop) = (api.base.clone(), noisy.clone(), stop.clone());
        replays.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut answered = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http
                    .post(format!("{base}/v1/endpoints/{endpoint}/replay"))
                    .bearer_auth(&key)
                    .json(&json!({"since": "2000-01-01T00:00:00Z", "limit": 10000}))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 202) {
                    answered += 1;
                }
            }
            answered
        }));
    }
    let db = api.pg.connect("postgres").await;
    let reset = tokio::spawn(async move {
        for _ in 0..200 {
            let _ = db
                .batch_execute("UPDATE postbox.outbox SET status = 'failed' WHERE tenant = 'noisy'")
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // Meanwhile the quiet tenant reads, and /healthz answers, every time.
    let http = reqwest::Client::new();
    for i in 0..60 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("{}/v1/endpoints", api.base))
                .bearer_auth(&quiet)
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("read {i} of the quiet tenant got no answer within 5 s"))
        .unwrap();
        assert_eq!(r.status(), 200, "read {i}");
        let h = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("{}/healthz", api.base)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("/healthz got no answer within 5 s (read {i})"))
        .unwrap();
        assert_eq!(h.status(), 200);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reset.abort();
    let mut answered = 0;
    for r in replays {
        answered += tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("a replay call returns")
            .unwrap();
    }
    assert!(answered > 0, "the noisy tenant's replays ran meanwhile");
    // The slow bodies are still open: nothing closed them early.
    for mut s in slow {
        s.shutdown().await.ok();
    }
    api.stop().await;
}

/// Replay of a long range works in batches: each call queues at most its
/// limit and says whether more remain.
#[tokio::test]
async fn replay_works_in_batches() {
    let api = Api::start().await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let id: uuid::Uuid = api
        .db
        .query_one(
            "SELECT id FROM postbox.create_endpoint('acme', 'https://hooks.example.com/r', '{*}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    api.db
        .execute(
            "WITH e AS (INSERT INTO postbox.events (id, tenant, event_type, data, created_at)
                        VALUES (gen_random_uuid(), 'acme', 'order.paid', '{}', now()) RETURNING id)
             INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, status, next_attempt_at, created_at)
             SELECT 'acme', $1, e.id, 'failed', now(), now() - i * interval '1 second'
               FROM e, generate_series(1, 5) i",
            &[&id],
        )
        .await
        .unwrap();
    let path = format!("/v1/endpoints/{id}/replay");
    let body = json!({"since": "2000-01-01T00:00:00Z", "limit": 2});
    let mut seen = Vec::new();
    for _ in 0..4 {
        let a = api
            .call(Method::POST, &path, Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(a.status, 202, "{:?}", a.body);
        seen.push((
            a.body["queued"].as_i64().unwrap(),
            a.body["more"].as_bool().unwrap(),
        ));
    }
    assert_eq!(seen, [(2, true), (2, true), (1, false), (0, false)]);
    let too_many = api
        .call(
            Method::POST,
            &path,
            Some(&admin),
            Some(json!({"since": "2000-01-01T00:00:00Z", "limit": 10001})),
        )
        .await;
    assert_eq!((too_many.status, too_many.code()), (422, "rule_violation"));
    api.stop().await;
}

/// Tokens are taken before any work: of 32 emits at once, every one that
/// was refused emitted nothing, and the burst holds from a key's very
/// first request.
#[tokio::test]
async fn a_429_is_never_answered_for_an_emitted_event() {
    let api = Api::start_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 4;
    })
    .await;
    let (_, op) = api.key(None, "operator").await;
    let mut calls = Vec::new();
    for i in 0..32 {
        let (base, op) = (api.base.clone(), op.clone());
        calls.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/tenants/acme/events"))
                .bearer_auth(op)
                .json(&json!({"event_type": "order.paid", "data": {"n": i}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count() as i64;
    let refused = statuses.iter().filter(|s| **s == 429).count() as i64;
    assert_eq!(accepted + refused, 32, "{statuses:?}");
    assert!(
        accepted <= 4,
        "the burst holds from the first request: {statuses:?}"
    );
    assert_eq!(
        api.count(
            "SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator'"
        )
        .await,
        accepted,
        "exactly the accepted events were emitted"
    );
    api.stop().await;
}

/// Made-up keys from one address are refused before the database once the
/// address has failed too often; a known key from the same address, and
/// other addresses, are not.
#[tokio::test]
async fn made_up_keys_are_limited_before_the_database() {
    let api = Api::start_with(|c| {
        c.auth_failure_rate = 1;
        c.auth_failure_burst = 10;
    })
    .await;
    let (_, good) = api.key(Some("acme"), "member").await;
    // Used before the flood: this process knows it.
    let seen = api
        .call(Method::GET, "/v1/endpoints", Some(&good), None)
        .await;
    assert_eq!(seen.status, 200);
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..200 {
        let made_up = format!("pbk_{}", format!("{i:0>43}").replace('0', "A"));
        let a = api
            .call(Method::GET, "/v1/endpoints", Some(&made_up), None)
            .await;
        *counts.entry(a.status).or_insert(0) += 1;
    }
    let unauthorized = counts.get(&401).copied().unwrap_or(0);
    let limited = counts.get(&429).copied().unwrap_or(0);
    assert_eq!(unauthorized + limited, 200, "{counts:?}");
    // The burst, plus what refilled (1/s) while the loop ran.
    assert!(
        (10..=20).contains(&unauthorized),
        "only the burst reached the database: {counts:?}"
    );
    let ok = api
        .call(Method::GET, "/v1/endpoints", Some(&good), None)
        .await;
    assert_eq!(
        ok.status, 200,
        "a known key is not limited by others' failures"
    );
    api.stop().await;

    // Made-up portal link tokens are failed authentications too.
    let fresh = Api::start_with(|c| {
        c.auth_failure_rate = 1;
        c.auth_failure_burst = 10;
    })
    .await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut links = std::collections::BTreeMap::new();
    for i in 0..100 {
        let token = format!("pbp_{}", format!("{i:0>43}").replace('0', "B"));
        let r = browser
            .get(format!("{}/portal/enter?token={token}", fresh.base))
            .send()
            .await
            .unwrap();
        *links.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    let expired = links.get(&401).copied().unwrap_or(0);
    assert!(
        (10..=20).contains(&expired) && links.get(&429).copied().unwrap_or(0) == 100 - expired,
        "only the burst of made-up links reached the database: {links:?}"
    );
    fresh.stop().await;
}

/// Portal sessions are for the page: no key route without the operator's
/// grant; with it, only the keys the session made or its user's; the
/// product revokes sessions; the page signs out. An Idempotency-Key answer
/// goes back only to the credential that sent the request.
#[tokio::test]
async fn portal_sessions_reach_keys_only_with_the_grant_and_only_their_own() {
    let api = Api::start().await;
    let (op_made_id, _) = api.key(Some("acme"), "admin").await;
    let (_, op) = api.key(None, "operator").await;
    use Method as M;

    // Without the grant: every key route is refused.
    let plain = api.session("acme", "admin", false, None).await;
    let csrf = Some(plain.csrf.as_str());
    for (m, path, body) in [
        (M::GET, "/v1/api-keys".to_string(), None),
        (
            M::POST,
            "/v1/api-keys".to_string(),
            Some(json!({"role": "admin", "label": "mine"})),
        ),
        (M::POST, format!("/v1/api-keys/{op_made_id}/rotate"), None),
        (M::DELETE, format!("/v1/api-keys/{op_made_id}"), None),
    ] {
        let a = api
            .as_session(m.clone(), &path, &plain.cookie, csrf, body, &[])
            .await;
        assert_eq!((a.status, a.code()), (403, "forbidden"), "{m} {path}");
    }
    assert_eq!(
        api.count("SELECT count(*) FROM postbox.api_keys WHERE tenant = 'acme'")
            .await,
        1
    );

    // With the grant, for user u1: its own keys only.
    let u1 = api.session("acme", "admin", true, Some("u1")).await;
    let made = api
        .as_session(
            M::POST,
            "/v1/api-keys",
            &u1.cookie,
            Some(&u1.csrf),
            Some(json!({"role": "member", "label": "ci"})),
            &[],
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["for_user"], "u1");
    assert!(made.body["made_by_session"].is_string());
    let mine = made.body["id"].as_str().unwrap().to_string();
    let listed = api
        .as_session(M::GET, "/v1/api-keys", &u1.cookie, None, None, &[])
        .await;
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()], "not the operator's key");
    for (m, path) in [
        (M::POST, format!("/v1/api-keys/{op_made_id}/rotate")),
        (M::DELETE, format!("/v1/api-keys/{op_made_id}")),
    ] {
        let a = api
            .as_session(m.clone(), &path, &u1.cookie, Some(&u1.csrf), None, &[])
            .await;
        assert_eq!((a.status, a.code()), (404, "not_found"), "{m} {path}");
    }
    // Another session of u1 manages u1's keys; u2's does not see them.
    let u1_again = api.session("acme", "admin", true, Some("u1")).await;
    let rotated = api
        .as_session(
            M::POST,
            &format!("/v1/api-keys/{mine}/rotate"),
            &u1_again.cookie,
            Some(&u1_again.csrf),
            None,
            &[],
        )
        .await;
    assert_eq!(rotated.status, 200);
    let u2 = api.session("acme", "admin", true, Some("u2")).await;
    let theirs = api
        .as_session(M::GET, "/v1/api-keys", &u2.cookie, None, None, &[])
        .await;
    assert_eq!(theirs.body["data"], json!([]));

    // The operator rotates its key with an Idempotency-Key; the session
    // repeating the same request with the same key does not get that answer.
    let idem = [("Idempotency-Key", "rotate-1")];
    let by_op = api
        .call_with(
            M::POST,
            &format!("/v1/tenants/acme/api-keys/{op_made_id}/rotate"),
            Some(&op),
            None,
            &idem,
        )
        .await;
    assert_eq!(by_op.status, 200);
    let by_session = api
        .as_session(
            M::POST,
            &format!("/v1/api-keys/{op_made_id}/rotate"),
            &u1.cookie,
            Some(&u1.csrf),
            None,
            &idem,
        )
        .await;
    assert_eq!(by_session.status, 404, "{:?}", by_session.body);
    assert!(!by_session
        .body
        .to_string()
        .contains(by_op.body["key"].as_str().unwrap()));

    // A session made without the grant cannot be given keys in SQL either.
    let sql = api
        .db
        .execute(
            "SELECT postbox.create_api_key('acme', 'admin', 'x', (SELECT id FROM postbox.portal_sessions WHERE NOT manage_keys LIMIT 1))",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sql.code().unwrap().code(), "42501");

    // The product revokes u1's sessions, then all.
    let revoked = api
        .call(
            M::DELETE,
            "/v1/tenants/acme/portal-sessions?user_id=u1",
            Some(&op),
            None,
        )
        .await;
    assert_eq!(
        (revoked.status, revoked.body["revoked"].as_i64()),
        (200, Some(2))
    );
    for s in [&u1, &u1_again] {
        let a = api
            .as_session(M::GET, "/v1/endpoints", &s.cookie, None, None, &[])
            .await;
        assert_eq!(a.status, 401);
    }
    let still = api
        .as_session(M::GET, "/v1/endpoints", &u2.cookie, None, None, &[])
        .await;
    assert_eq!(still.status, 200);
    // Tenant keys cannot revoke sessions; operators can, for the whole tenant.
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let refused = api
        .call(
            M::DELETE,
            "/v1/tenants/acme/portal-sessions",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(refused.status, 403);

    // Sign-out: a change (CSRF), ends the session, clears the cookie.
    let no_csrf = api
        .as_session(M::POST, "/v1/portal/sign-out", &u2.cookie, None, None, &[])
        .await;
    assert_eq!(no_csrf.status, 403);
    let out = api
        .as_session(
            M::POST,
            "/v1/portal/sign-out",
            &u2.cookie,
            Some(&u2.csrf),
            None,
            &[],
        )
        .await;
    assert_eq!(out.status, 204);
    let cleared = out.headers["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("postbox_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let after = api
        .as_session(M::GET, "/v1/endpoints", &u2.cookie, None, None, &[])
        .await;
    assert_eq!(after.status, 401);
    let all = api
        .call(
            M::DELETE,
            "/v1/tenants/acme/portal-sessions",
            Some(&op),
            None,
        )
        .await;
    assert_eq!(all.status, 200);
    let gone = api
        .as_session(M::GET, "/v1/endpoints", &plain.cookie, None, None, &[])
        .await;
    assert_eq!(gone.status, 401);
    api.stop().await;
}

/// Members (keys and portal sessions) never see custom header values, and
/// the attempt log keeps none.
#[tokio::test]
async fn members_see_header_names_not_values() {
    let api = Api::start().await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let (_, member) = api.key(Some("acme"), "member").await;
    let created = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "https://hooks.example.com/h", "headers": {"Authorization": "Bearer hdr-s3cret"}})),
        )
        .await;
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap().to_string();
    let masked = json!({"Authorization": postbox_rules::headers::MASKED_VALUE});
    let session = api.session("acme", "member", false, None).await;
    for (who, a) in [
        (
            "member key, one",
            api.call(
                Method::GET,
                &format!("/v1/endpoints/{id}"),
                Some(&member),
                None,
            )
            .await
            .body,
        ),
        (
            "member key, list",
            api.call(Method::GET, "/v1/endpoints", Some(&member), None)
                .await
                .body["data"][0]
                .clone(),
        ),
        (
            "member session",
            api.as_session(
                Method::GET,
                &format!("/v1/endpoints/{id}"),
                &session.cookie,
                None,
                None,
                &[],
            )
            .await
            .body,
        ),
    ] {
        assert_eq!(a["headers"], masked, "{who}");
        assert!(!a.to_string().contains("hdr-s3cret"), "{who}");
    }
    let by_admin = api
        .call(
            Method::GET,
            &format!("/v1/endpoints/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        by_admin.body["headers"]["Authorization"],
        "Bearer hdr-s3cret"
    );
    api.stop().await;
}

/// What the API's edges refuse: a body with anything after its JSON value,
/// a tenant path that does not decode, forged request ids, made-up methods
/// in the metrics, a URL's password in an error.
#[tokio::test]
async fn the_edges_refuse_what_could_mislead() {
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], postbox_tests::free_port()));
    let api = Api::start_with(|c| c.metrics_addr = Some(metrics_addr)).await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let http = reqwest::Client::new();

    for body in [
        r#"{"url": "https://hooks.example.com/a"}}"#,
        r#"{"url": "https://hooks.example.com/a"} and more"#,
        r#"{"url": "https://hooks.example.com/a"}{"url": "https://hooks.example.com/b"}"#,
    ] {
        let r = http
            .post(format!("{}/v1/endpoints", api.base))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_json", "{body}");
    }
    assert_eq!(api.count("SELECT count(*) FROM postbox.endpoints").await, 0);

    for path in ["/v1/tenants/%FF/endpoints", "/v1/tenants/%C0%AF/endpoints"] {
        for m in [Method::GET, Method::POST] {
            let a = api
                .call(
                    m.clone(),
                    path,
                    Some(&admin),
                    Some(json!({"url": "https://hooks.example.com/x"})),
                )
                .await;
            assert_eq!(
                (a.status, a.code()),
                (400, "invalid_request"),
                "{m} {path}: {:?}",
                a.body
            );
        }
    }
    assert_eq!(api.count("SELECT count(*) FROM postbox.endpoints").await, 0);

    let id_of = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_string();
    let kept = http
        .get(format!("{}/healthz", api.base))
        .header("x-request-id", "trace-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&kept), "trace-0123456789abcdef");
    for forged in [
        "a".repeat(129),
        "x status=200 user=admin".into(),
        "tab\there".into(),
    ] {
        let r = http
            .get(format!("{}/healthz", api.base))
            .header("x-request-id", forged.as_str())
            .send()
            .await
            .unwrap();
        let id = id_of(&r);
        assert_ne!(id, forged);
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "replaced by a fresh id: {id}"
        );
    }

    for m in ["FOO", "BREW", "X-MADE-UP"] {
        let _ = http
            .request(
                Method::from_bytes(m.as_bytes()).unwrap(),
                format!("{}/v1/endpoints", api.base),
            )
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
    }
    let text = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("method=\"other\""), "{text}");
    for m in ["FOO", "BREW", "X-MADE-UP"] {
        assert!(!text.contains(m), "{m} made a series");
    }

    let a = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&admin),
            Some(json!({"url": "https://user:pa55w0rd-x@hooks.example.com/"})),
        )
        .await;
    assert_eq!(a.status, 422);
    assert!(
        a.message().contains("user name or password"),
        "{}",
        a.message()
    );
    assert!(!a.body.to_string().contains("pa55w0rd"), "{:?}", a.body);
    api.stop().await;
}

/// Revoked keys do not pile up: a tenant keeps at most 1,000 keys in all,
/// revoked ones go after their retention window, and the list is paged.
#[tokio::test]
async fn revoked_keys_are_bounded_purged_and_paged() {
    let api = Api::start().await;
    api.db
        .batch_execute(
            "SELECT postbox.revoke_api_key('acme', k.id)
               FROM generate_series(1, 1000) i, LATERAL postbox.create_api_key('acme', 'member', 'loop ' || i) k",
        )
        .await
        .unwrap();
    let full = api
        .db
        .execute(
            "SELECT postbox.create_api_key('acme', 'member', 'one more')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        full.as_db_error()
            .unwrap()
            .message()
            .contains("at most 1000 api keys"),
        "{full:?}"
    );
    api.db
        .batch_execute(
            "SELECT postbox.set_retention(revoked_api_keys => '1 hour');
             UPDATE postbox.api_keys SET revoked_at = now() - interval '2 hours'
              WHERE id IN (SELECT id FROM postbox.api_keys ORDER BY id LIMIT 600);",
        )
        .await
        .unwrap();
    let purged = api
        .count("SELECT deleted FROM postbox.purge() WHERE kind = 'api_keys'")
        .await;
    assert_eq!(purged, 600);
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let mut after = String::new();
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let a = api
            .call(
                Method::GET,
                &format!("/v1/api-keys?limit=500{after}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(a.status, 200);
        seen += a.body["data"].as_array().unwrap().len();
        pages += 1;
        match a.body["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!((seen, pages), (401, 1), "400 revoked and the admin key");
    let a = api
        .call(Method::GET, "/v1/api-keys?limit=100", Some(&admin), None)
        .await;
    assert_eq!(a.body["data"].as_array().unwrap().len(), 100);
    assert!(a.body["next"].is_string());
    api.stop().await;
}

/// Keys follow the plan: the keys of a tenant whose endpoint limit is 0
/// are refused on every route with a 403 that names the rule, not taken
/// for unknown (no failed-authentication count), until the limit is
/// raised; the operator's key goes on, but cannot make the tenant a key.
#[tokio::test]
async fn a_tenant_without_webhooks_has_its_keys_refused() {
    let api = Api::start().await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let (_, operator) = api.key(None, "operator").await;
    let (_, other) = api.key(Some("other"), "admin").await;
    let a = api
        .call(Method::GET, "/v1/endpoints", Some(&admin), None)
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    api.db
        .batch_execute("SELECT postbox.set_tenant_limit('acme', 0)")
        .await
        .unwrap();
    let new_key = json!({"role": "member", "label": "more"});
    for (method, path, body) in [
        (Method::GET, "/v1/endpoints", None),
        (Method::GET, "/v1/api-keys", None),
        (Method::POST, "/v1/api-keys", Some(new_key.clone())),
    ] {
        let a = api.call(method.clone(), path, Some(&admin), body).await;
        assert_eq!(a.status, 403, "{method} {path}: {:?}", a.body);
        assert_eq!(a.body["error"]["rule"], "tenant_suspended", "{:?}", a.body);
        assert!(a.message().contains("not available"), "{:?}", a.body);
    }
    let a = api
        .call(
            Method::POST,
            "/v1/tenants/acme/api-keys",
            Some(&operator),
            Some(new_key),
        )
        .await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert_eq!(a.body["error"]["rule"], "tenant_suspended");
    let a = api
        .call(
            Method::GET,
            "/v1/tenants/acme/endpoints",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "the operator still reads: {:?}", a.body);
    let a = api
        .call(Method::GET, "/v1/endpoints", Some(&other), None)
        .await;
    assert_eq!(a.status, 200, "another tenant is untouched");
    assert_eq!(
        api.count("SELECT count(*) FROM postbox.api_keys WHERE tenant = 'acme'")
            .await,
        1
    );
    api.db
        .batch_execute("SELECT postbox.set_tenant_limit('acme', 5)")
        .await
        .unwrap();
    let a = api
        .call(Method::GET, "/v1/endpoints", Some(&admin), None)
        .await;
    assert_eq!(
        a.status, 200,
        "the same key once the plan allows: {:?}",
        a.body
    );
    api.stop().await;
}

/// With every statement logged (`log_statement = all`,
/// `log_min_duration_statement = 0`, parameters in full by default, on
/// errors too), the server log holds no key, secret, link token, session
/// cookie, header value or URL password after every route that makes or
/// takes one, Idempotency-Key repeats included: the API's role logs no
/// parameters, which the API checks at start.
#[tokio::test]
async fn no_secret_reaches_the_server_log() {
    let loud = [
        ("log_statement", "'all'"),
        ("log_min_duration_statement", "0"),
        ("log_parameter_max_length", "-1"),
        ("log_parameter_max_length_on_error", "-1"),
        ("log_min_error_statement", "'error'"),
    ];
    let api = Api::start_on(&loud, |_| {}).await;
    let (_, op) = api.key(None, "operator").await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    use Method as M;
    let mut secrets: Vec<String> = Vec::new();
    let own = "whsec_b3duLXNlY3JldC1pbi1sb2ctdGVzdC0zMi1ieXRlcyE=";
    secrets.push(own.into());
    secrets.push("hdr-in-log-test".into());
    secrets.push("pa55w0rd-in-log".into());
    // Each twice: the second gets the stored answer.
    for round in 0..2 {
        let k = |name: &str| format!("{name}-{round}");
        let key = |name: &str| [("Idempotency-Key", k(name))];
        let with = |name: &str| key(name);
        let h = with("key");
        let hs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let made = api
            .call_with(
                M::POST,
                "/v1/api-keys",
                Some(&admin),
                Some(json!({"role": "member", "label": "ci"})),
                &hs,
            )
            .await;
        assert_eq!(made.status, 201);
        let id = made.body["id"].as_str().unwrap().to_string();
        secrets.push(made.body["key"].as_str().unwrap().into());
        let h = with("rotate");
        let hs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        for _ in 0..2 {
            let r = api
                .call_with(
                    M::POST,
                    &format!("/v1/api-keys/{id}/rotate"),
                    Some(&admin),
                    None,
                    &hs,
                )
                .await;
            assert_eq!(r.status, 200);
            secrets.push(r.body["key"].as_str().unwrap().into());
        }
        let h = with("own");
        let hs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let e = api
            .call_with(
                M::POST,
                "/v1/endpoints",
                Some(&admin),
                Some(
                    json!({"url": format!("https://hooks.example.com/own{round}"), "secret": own,
                            "headers": {"Authorization": "Bearer hdr-in-log-test"}}),
                ),
                &hs,
            )
            .await;
        assert_eq!(e.status, 201, "{:?}", e.body);
        let eid = e.body["id"].as_str().unwrap().to_string();
        let h = with("gen");
        let hs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let g = api
            .call_with(
                M::POST,
                "/v1/endpoints",
                Some(&admin),
                Some(json!({"url": format!("https://hooks.example.com/gen{round}")})),
                &hs,
            )
            .await;
        secrets.push(g.body["secret"].as_str().unwrap().into());
        let h = with("rot");
        let hs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let r = api
            .call_with(
                M::POST,
                &format!("/v1/endpoints/{eid}/rotate-secret"),
                Some(&admin),
                None,
                &hs,
            )
            .await;
        secrets.push(r.body["secret"].as_str().unwrap().into());
        let r = api
            .call(
                M::POST,
                &format!("/v1/endpoints/{eid}/rotate-secret"),
                Some(&admin),
                Some(json!({"secret": own, "grace_seconds": 60})),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let reg = api
            .call(
                M::PUT,
                "/v1/endpoints/by-url",
                Some(&admin),
                Some(
                    json!({"url": format!("https://hooks.example.com/reg{round}"), "secret": own}),
                ),
            )
            .await;
        assert_eq!(reg.status, 201, "{:?}", reg.body);
        let h = with("link");
        let hs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let link = api
            .call_with(
                M::POST,
                "/v1/tenants/acme/portal-sessions",
                Some(&op),
                Some(json!({"role": "admin"})),
                &hs,
            )
            .await;
        assert_eq!(link.status, 201);
        let url = link.body["url"].as_str().unwrap();
        secrets.push(url.split("token=").nth(1).unwrap().into());
        // Refused, with secrets in the request: nothing of them in the log either.
        let bad = api
            .call(M::POST, "/v1/endpoints", Some(&admin),
                  Some(json!({"url": "https://user:pa55w0rd-in-log@hooks.example.com/", "secret": own})))
            .await;
        assert_eq!(bad.status, 422);
        let bad = api
            .call(M::POST, "/v1/endpoints", Some(&admin),
                  Some(json!({"url": "not a url", "secret": own, "headers": {"X-A": "hdr-in-log-test"}})))
            .await;
        assert_eq!(bad.status, 422);
    }
    let session = api.session("acme", "admin", true, None).await;
    secrets.push(session.cookie.trim_start_matches("postbox_session=").into());
    let made = api
        .as_session(
            M::POST,
            "/v1/api-keys",
            &session.cookie,
            Some(&session.csrf),
            Some(json!({"role": "admin", "label": "from the page"})),
            &[],
        )
        .await;
    secrets.push(made.body["key"].as_str().unwrap().into());

    let log = std::fs::read_to_string(api.pg.dir().join("server.log")).unwrap();
    assert!(
        log.contains("postbox.create_api_key") && log.contains("postbox.api_request_end"),
        "the statements were logged"
    );
    for s in &secrets {
        assert!(s.len() >= 15, "{s}");
        assert!(
            !log.contains(s.as_str()),
            "the server log shows a secret: {s}"
        );
    }
    api.stop().await;

    // A role whose parameters would be logged: the API refuses to start,
    // and says what to run; with the flag it starts.
    let pg = postbox_tests::Cluster::start_with(&loud).await;
    let db = pg.connect("postgres").await;
    db.batch_execute("CREATE ROLE loud LOGIN IN ROLE postbox_admin;")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = postbox_api::serve(listener, postbox_api::Config::new(pg.url("loud")), async {})
        .await
        .unwrap_err();
    assert!(e.is_config(), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("ALTER ROLE loud SET log_parameter_max_length = 0")
            && e.contains("ALTER ROLE loud SET log_parameter_max_length_on_error = 0"),
        "{e}"
    );
    let served = support::Served::start(|_| {
        let mut c = postbox_api::Config::new(pg.url("loud"));
        c.allow_parameter_logging = true;
        c
    })
    .await;
    served.stop().await;
}

/// Slow clients are cut off at their deadlines: headers that never end
/// close the connection, a body that never ends is a 408; and a tenant at
/// its share of connections waits, then gets 503 `busy`, while another
/// tenant's request is answered at once.
#[tokio::test]
async fn slow_clients_and_busy_tenants_meet_their_deadlines() {
    use tokio::io::AsyncReadExt;
    let api = Api::start_with(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(1);
        c.db_per_tenant = 1;
        c.db_wait_timeout = Duration::from_secs(1);
    })
    .await;
    let (_, admin) = api.key(Some("acme"), "admin").await;
    let (_, other) = api.key(Some("globex"), "member").await;
    let addr = api.base.trim_start_matches("http://").to_string();

    // Headers that never end: the server closes the connection.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /v1/endpoints HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection was not closed at the header deadline"
    );

    // A body that never ends: 408, as JSON.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"url\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer at the body deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");

    // acme's one connection waits on a row lock; acme's next request is
    // busy, globex's is answered.
    let id: uuid::Uuid = api
        .db
        .query_one(
            "SELECT id FROM postbox.create_endpoint('acme', 'https://hooks.example.com/b', '{*}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let locker = api.pg.connect("postgres").await;
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT FROM postbox.endpoints WHERE id = '{id}' FOR UPDATE"
        ))
        .await
        .unwrap();
    let (base, key) = (api.base.clone(), admin.clone());
    let held = tokio::spawn(async move {
        reqwest::Client::new()
            .patch(format!("{base}/v1/endpoints/{id}"))
            .bearer_auth(key)
            .json(&json!({"description": "waits"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    postbox_tests::wait_until(Duration::from_secs(10), "the PATCH to wait on the lock", || async {
        let n: i64 = api
            .db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND usename = 'postbox_api'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n > 0).then_some(())
    })
    .await;
    let busy = api
        .call(Method::GET, "/v1/endpoints", Some(&admin), None)
        .await;
    assert_eq!((busy.status, busy.code()), (503, "busy"), "{:?}", busy.body);
    assert_eq!(busy.headers["retry-after"], "1");
    let answered = api
        .call(Method::GET, "/v1/endpoints", Some(&other), None)
        .await;
    assert_eq!(answered.status, 200, "another tenant is not held up");
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(held.await.unwrap(), 200);
    api.stop().await;
}
