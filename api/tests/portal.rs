//! The settings portal, server side and in a real browser: headless
//! Chromium driven by selenium (api/tests/portal_browser.py) against this
//! API, a real cluster, a worker and loopback receivers. Screenshots go to
//! target/portal-screenshots/.

#[path = "../../worker/tests/common/mod.rs"]
mod common;
mod support;

use common::{Behavior, Receiver};
use postbox_tests::Cluster;
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_in_a_real_browser() {
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    db.batch_execute(
        "SELECT postbox.create_event_type('order.paid', 'An order was paid.', NULL, '{\"order\": 1, \"total\": 1999}');
         SELECT postbox.create_event_type('order.refunded', 'An order was refunded.');
         SELECT postbox.create_event_type('customer.created', 'A customer signed up.');
         CREATE ROLE postbox_api LOGIN IN ROLE postbox_admin, postbox_emitter;
         ALTER ROLE postbox_api SET log_parameter_max_length = 0;
         ALTER ROLE postbox_api SET postbox.allow_insecure_urls = on;",
    )
    .await
    .unwrap();
    let operator: String = db
        .query_one(
            "SELECT key FROM postbox.create_api_key(NULL, 'operator', 'backend')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let order = Arc::new(AtomicU64::new(0));
    let ok = Receiver::start(Behavior::Statuses(vec![200]), order.clone()).await;
    let failing = Receiver::start(Behavior::Statuses(vec![500]), order).await;
    let worker = common::Worker::start(common::test_config(&pg));

    let url = pg.url("postbox_api");
    let served = support::Served::start(|base| {
        let mut config = postbox_api::Config::new(url);
        config.public_url = base.to_string();
        config.rate_limit = 0;
        config
    })
    .await;
    let base = served.base.clone();
    let http = reqwest::Client::new();
    let link_with = |body: serde_json::Value| {
        let (http, base, operator) = (http.clone(), base.clone(), operator.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/tenants/acme/portal-sessions"))
                .bearer_auth(&operator)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<serde_json::Value>().await.unwrap()["url"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let link = |role: &'static str| link_with(serde_json::json!({"role": role}));
    // First: the expired link below is the one made last.
    let keys =
        link_with(serde_json::json!({"role": "admin", "manage_keys": true, "user_id": "u-ada"}))
            .await;
    let (admin, member, used, expired) = (
        link("admin").await,
        link("member").await,
        link("admin").await,
        link("admin").await,
    );
    assert!(
        admin.starts_with(&format!("{base}/portal/enter?token=pbp_")),
        "{admin}"
    );

    // Server side: the cookie's attributes, one use per link, the headers.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(&used).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/portal/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("postbox_session=pbs_"), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain http on loopback: {cookie}"
    );
    assert_eq!(
        no_redirect.get(&used).send().await.unwrap().status(),
        401,
        "a link works once"
    );
    db.batch_execute("UPDATE postbox.portal_sessions SET link_expires_at = now() - interval '1 second' WHERE session_hash IS NULL AND link_expires_at = (SELECT max(link_expires_at) FROM postbox.portal_sessions)")
        .await
        .unwrap();
    let r = no_redirect
        .get(format!("{base}/portal"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (308, "/portal/")
    );
    let page = http.get(format!("{base}/portal/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline script or style"
    );
    // A tenant key cannot make links; an operator key cannot open the portal's session.
    let tenant_key: String = db
        .query_one(
            "SELECT key FROM postbox.create_api_key('acme', 'admin', 'x')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let r = http
        .post(format!("{base}/v1/tenants/acme/portal-sessions"))
        .bearer_auth(&tenant_key)
        .json(&serde_json::json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/portal-screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let python = common::python();
    let env = [
        ("BASE", base.clone()),
        ("ADMIN_LINK", admin),
        ("MEMBER_LINK", member),
        ("KEYS_LINK", keys),
        ("USED_LINK", used),
        ("EXPIRED_LINK", expired),
        ("OPERATOR_KEY", operator.clone()),
        ("TENANT", "acme".to_string()),
        ("OK_URL", format!("{}/ok", ok.url())),
        ("FAILING_URL", format!("{}/fail", failing.url())),
        ("SHOTS", shots.to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/portal_browser.py"
            ))
            .envs(env)
            .output()
            .expect("python (run scripts/setup.sh)")
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser flows failed:\n{text}");
    assert!(text.contains("portal: every flow passed"), "{text}");
    assert!(ok.count() >= 1, "the test send arrived");
    served.stop().await;
    worker.stop().await.unwrap();
}
