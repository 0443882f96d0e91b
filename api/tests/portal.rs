//! The settings portal, server side and in a real browser: headless
//! Chromium driven by selenium (api/tests/portal_browser.py) against this
//! API, a real cluster, a worker and loopback receivers. Screenshots go to
//! target/portal-screenshots/. A second API, whose public URL carries a
//! path prefix, is reached through a small reverse proxy that adds it
//! ([`Proxy`]), as a product may serve the page under its own path.

mod support;

use postbox_tests::receivers::{Behavior, Receiver};
use postbox_tests::verify::python;
use postbox_tests::worker::{test_config, Worker};
use postbox_tests::Cluster;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A reverse proxy on a free port that serves the API under `/pfx`: it
/// strips the prefix and forwards; a request outside it (a path the page
/// built without the prefix) is answered 404 and counted in `stray`.
struct Proxy {
    /// `http://127.0.0.1:<port>/pfx`.
    url: String,
    stray: Arc<AtomicU64>,
    listener: Option<tokio::net::TcpListener>,
}

impl Proxy {
    const PREFIX: &'static str = "/pfx";

    async fn bind() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Proxy {
            url: format!("http://{}{}", listener.local_addr().unwrap(), Self::PREFIX),
            stray: Arc::new(AtomicU64::new(0)),
            listener: Some(listener),
        }
    }

    /// Forwards to `upstream` (the API's own address) from now on.
    fn start(&mut self, upstream: String) {
        use axum::body::Body;
        use axum::extract::Request;
        use axum::response::{IntoResponse, Response};
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let stray = self.stray.clone();
        let forward = move |req: Request| {
            let (http, upstream, stray) = (http.clone(), upstream.clone(), stray.clone());
            async move {
                let path = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                let Some(rest) = path
                    .strip_prefix(Proxy::PREFIX)
                    .filter(|r| r.starts_with('/'))
                else {
                    // The browser's own guess, not the page's.
                    if path != "/favicon.ico" {
                        stray.fetch_add(1, Ordering::Relaxed);
                    }
                    return (
                        axum::http::StatusCode::NOT_FOUND,
                        format!("outside {}: {path}", Proxy::PREFIX),
                    )
                        .into_response();
                };
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let mut headers = parts.headers.clone();
                headers.remove(axum::http::header::HOST);
                let answer = http
                    .request(parts.method, format!("{upstream}{rest}"))
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let mut resp = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    resp = resp.header(name, value);
                }
                resp.body(Body::from(answer.bytes().await.unwrap()))
                    .unwrap()
            }
        };
        let listener = self.listener.take().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().fallback(forward))
                .await
                .unwrap();
        });
    }
}

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
    let failing = Receiver::start(Behavior::Statuses(vec![500]), order.clone()).await;
    let hanging = Receiver::start(Behavior::Hang, order).await;
    // Another tenant with 600 endpoints: the page lists them a page at a
    // time, each page's charts from one request, within the rate limit.
    db.batch_execute(
        "SELECT postbox.create_endpoint('many', format('https://hooks.example.com/many/%s', i))
           FROM generate_series(1, 600) i",
    )
    .await
    .unwrap();
    let worker = Worker::start(test_config(&pg));

    let url = pg.url("postbox_api");
    // The default rate limit: the page keeps within it.
    let served = support::Served::start(|base| {
        let mut config = postbox_api::Config::new(url.clone());
        config.public_url = base.to_string();
        config
    })
    .await;
    let mut proxy = Proxy::bind().await;
    let prefixed = support::Served::start(|_| {
        let mut config = postbox_api::Config::new(url);
        config.public_url = proxy.url.clone();
        config
    })
    .await;
    proxy.start(prefixed.base.clone());
    let base = served.base.clone();
    let http = reqwest::Client::new();
    let link_at = |base: String, tenant: &'static str, body: serde_json::Value| {
        let (http, operator) = (http.clone(), operator.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/tenants/{tenant}/portal-sessions"))
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
    let link_with = |body: serde_json::Value| link_at(base.clone(), "acme", body);
    let link = |role: &'static str| link_with(serde_json::json!({"role": role}));
    // First: the expired link below is the one made last.
    let many = link_at(base.clone(), "many", serde_json::json!({"role": "member"})).await;
    let behind_proxy = link_at(
        prefixed.base.clone(),
        "acme",
        serde_json::json!({"role": "admin"}),
    )
    .await;
    assert!(
        behind_proxy.starts_with(&format!("{}/portal/enter?token=pbp_", proxy.url)),
        "{behind_proxy}"
    );
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
    // Relative, so a proxy's prefix is kept: /portal/enter -> /portal/.
    assert_eq!(r.headers()["location"], "./");
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
    // Behind the proxy: the same relative redirect, and the cookie's path is
    // the prefix (the public URL's path).
    let probe = link_at(
        prefixed.base.clone(),
        "acme",
        serde_json::json!({"role": "member"}),
    )
    .await;
    let r = no_redirect.get(&probe).send().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "./")
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Path=/pfx; "), "{cookie}");
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
        (308, "portal/")
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
    let python = python();
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
        ("HANGING_URL", format!("{}/hang", hanging.url())),
        ("MANY_LINK", many),
        ("PREFIX_LINK", behind_proxy),
        ("PREFIX", Proxy::PREFIX.to_string()),
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
    assert_eq!(
        proxy.stray.load(Ordering::Relaxed),
        0,
        "behind the proxy, the page asked for a path without its prefix"
    );
    served.stop().await;
    prefixed.stop().await;
    worker.stop().await.unwrap();
}
