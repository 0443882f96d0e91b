//! The API served in the test process, for the API's integration tests,
//! and [`Api`]: a cluster, the API on it, and a client.
#![allow(dead_code)]

use postbox_tests::Cluster;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// `postbox_api::serve` on a free port of 127.0.0.1, answering `/healthz`.
pub struct Served {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<Result<(), postbox_api::RunError>>>,
}

impl Served {
    /// Binds a free port, makes the configuration with the address it will
    /// be reached at (`config(base)`), serves, and waits until `/healthz`
    /// answers 200.
    pub async fn start(config: impl FnOnce(&str) -> postbox_api::Config) -> Served {
        postbox_tests::init_log();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(postbox_api::serve(listener, config(&base), async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::new();
        postbox_tests::wait_until(Duration::from_secs(30), "the API to answer", || async {
            http.get(format!("{base}/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        })
        .await;
        Served {
            base,
            stop: Some(tx),
            join: Some(join),
        }
    }

    /// Graceful shutdown; panics unless `serve` returned Ok.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.join.take().unwrap().await.unwrap().unwrap();
    }
}

/// The API on a real cluster, and a client for it.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub served: Served,
    pub db: Client,
    pub pg: Cluster,
}

/// An answer: status, headers and the body as JSON (or a string).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl Api {
    pub async fn start() -> Api {
        Self::start_with(|_| {}).await
    }

    /// A cluster with the catalog and an API role (LOGIN, granted
    /// postbox_admin and, for emitting, postbox_emitter; not a superuser), and the API serving on a free port.
    pub async fn start_with(adjust: impl FnOnce(&mut postbox_api::Config)) -> Api {
        Self::start_on(&[], adjust).await
    }

    /// Like [`Api::start_with`], on a cluster with these `postgresql.conf` settings.
    pub async fn start_on(
        settings: &[(&str, &str)],
        adjust: impl FnOnce(&mut postbox_api::Config),
    ) -> Api {
        let pg = Cluster::start_with(settings).await;
        let db = pg.connect("postgres").await;
        db.batch_execute(
            "SELECT postbox.create_event_type(n) FROM unnest(ARRAY['order.paid', 'order.refunded']) n;
             CREATE ROLE postbox_api LOGIN IN ROLE postbox_admin, postbox_emitter;
             ALTER ROLE postbox_api SET log_parameter_max_length = 0;
             ALTER ROLE postbox_api SET log_parameter_max_length_on_error = 0;
             ALTER ROLE postbox_api SET postbox.allow_insecure_urls = on;",
        )
        .await
        .unwrap();
        let url = pg.url("postbox_api");
        let served = Served::start(|_| {
            let mut config = postbox_api::Config::new(url);
            config.shutdown_timeout = Duration::from_secs(5);
            adjust(&mut config);
            config
        })
        .await;
        Api {
            base: served.base.clone(),
            http: reqwest::Client::new(),
            served,
            db,
            pg,
        }
    }

    /// A key made in SQL, as an operator would make the first ones.
    pub async fn key(&self, tenant: Option<&str>, role: &str) -> (String, String) {
        let row = self
            .db
            .query_one(
                "SELECT id::text, key FROM postbox.create_api_key($1, $2, 'test')",
                &[&tenant, &role],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_with(method, path, key, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn stop(self) {
        self.served.stop().await;
    }
}

/// A portal session, as a browser holds it.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Api {
    /// A portal link made in SQL, used once as a browser would: the session
    /// cookie from `/portal/enter` and the CSRF token from `/v1/portal/session`.
    pub async fn session(
        &self,
        tenant: &str,
        role: &str,
        manage_keys: bool,
        user_id: Option<&str>,
    ) -> Session {
        let token: String = self
            .db
            .query_one(
                "SELECT token FROM postbox.create_portal_session($1, $2, '10 minutes', $3, $4)",
                &[&tenant, &role, &manage_keys, &user_id],
            )
            .await
            .unwrap()
            .get(0);
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let entered = browser
            .get(format!("{}/portal/enter?token={token}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(entered.status(), 303);
        let set = entered.headers()["set-cookie"].to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_string();
        let info = self
            .as_session(Method::GET, "/v1/portal/session", &cookie, None, None, &[])
            .await;
        assert_eq!(info.status, 200, "{:?}", info.body);
        Session {
            cookie,
            csrf: info.body["csrf_token"].as_str().unwrap().to_string(),
        }
    }

    /// A request with a portal session's cookie (and its CSRF token, if given).
    pub async fn as_session(
        &self,
        method: Method,
        path: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut all: Vec<(&str, &str)> = vec![("cookie", cookie)];
        if let Some(t) = csrf {
            all.push(("x-csrf-token", t));
        }
        all.extend_from_slice(headers);
        self.call_with(method, path, None, body, &all).await
    }

    /// One number from SQL, as the superuser.
    pub async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.unwrap().get(0)
    }
}
