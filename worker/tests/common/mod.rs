//! Shared pieces of the worker's integration tests: HTTP(S) receivers on
//! 127.0.0.1, a resolver the test controls, a worker started through `run()`,
//! and Standard Webhooks verification with the official Python library.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use postbox_tests::Cluster;
use postbox_worker::resolve::BoxFuture;
use postbox_worker::{Config, Resolve};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// What a receiver answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// These statuses in turn; the last one repeats.
    Statuses(Vec<u16>),
    /// Accept, read the request, never answer.
    Hang,
    /// Answer 200 after a delay.
    Slow(Duration),
}

#[derive(Clone, Debug)]
pub struct Received {
    /// Arrival order across every receiver sharing the counter.
    pub seq: u64,
    /// The request's path, which tells endpoints on one receiver apart.
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

struct State {
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
    behavior: Mutex<Behavior>,
    received: Mutex<Vec<Received>>,
    order: Arc<AtomicU64>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Receiver {
    pub async fn start(behavior: Behavior, order: Arc<AtomicU64>) -> Receiver {
        Self::start_tls(behavior, order, None).await
    }

    pub async fn start_tls(
        behavior: Behavior,
        order: Arc<AtomicU64>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            in_flight: Default::default(),
            max_in_flight: Default::default(),
            behavior: Mutex::new(behavior),
            received: Mutex::new(Vec::new()),
            order,
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(sock).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(sock), svc).await;
                        }
                    }
                });
            }
        });
        Receiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.addr.port())
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// The most requests this receiver had open at once.
    pub fn max_concurrent(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Starts measuring max_concurrent afresh, from what is in flight now.
    pub fn reset_max_concurrent(&self) {
        let now = self.state.in_flight.load(Ordering::SeqCst);
        self.state.max_in_flight.store(now, Ordering::SeqCst);
    }

    pub fn set_behavior(&self, b: Behavior) {
        *self.state.behavior.lock().unwrap() = b;
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let path = req.uri().path().to_string();
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave(&state.in_flight);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let seq = state.order.fetch_add(1, Ordering::SeqCst);
    let n = {
        let mut r = state.received.lock().unwrap();
        r.push(Received {
            seq,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        r.len()
    };
    let behavior = state.behavior.lock().unwrap().clone();
    let status = match behavior {
        Behavior::Statuses(s) => s[(n - 1).min(s.len() - 1)],
        Behavior::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behavior::Slow(d) => {
            tokio::time::sleep(d).await;
            200
        }
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"received")))
        .unwrap())
}

/// Name → answers; each lookup takes the next answer, the last one repeats.
#[derive(Default)]
pub struct TestResolver {
    map: Mutex<HashMap<String, Vec<Vec<IpAddr>>>>,
    pub lookups: AtomicU64,
}

impl TestResolver {
    pub fn set(&self, name: &str, answers: Vec<Vec<IpAddr>>) {
        self.map.lock().unwrap().insert(name.to_string(), answers);
    }
}

impl Resolve for TestResolver {
    fn lookup(&self, host: String) -> BoxFuture<std::io::Result<Vec<IpAddr>>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock().unwrap();
        let answer = match map.get_mut(&host) {
            Some(answers) if answers.len() > 1 => Ok(answers.remove(0)),
            Some(answers) => Ok(answers[0].clone()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("test resolver: no such host {host}"),
            )),
        };
        Box::pin(async move { answer })
    }
}

/// A worker running in-process through `run()`.
pub struct Worker {
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<(), postbox_worker::RunError>>,
}

impl Worker {
    pub fn start(config: Config) -> Worker {
        postbox_tests::init_log();
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(postbox_worker::run(config, async move {
            let _ = rx.await;
        }));
        Worker {
            stop: Some(tx),
            join,
        }
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), postbox_worker::RunError> {
        let _ = self.stop.take().unwrap().send(());
        self.join.await.unwrap()
    }

    /// Waits (up to 30 s) for `run` to return on its own; returns what it returned.
    pub async fn ended(self) -> Result<(), postbox_worker::RunError> {
        tokio::time::timeout(Duration::from_secs(30), self.join)
            .await
            .expect("the worker did not stop on its own within 30 s")
            .unwrap()
    }
}

/// The worker binary, for tests that kill it: against `pg`, private targets
/// allowed, the request and connect timeouts of [`test_config`], output
/// discarded. The caller adds its own settings and spawns it.
pub fn worker_process(pg: &Cluster) -> std::process::Command {
    let mut c = std::process::Command::new(
        // Shared with other crates' tests (api/tests), which never call this.
        option_env!("CARGO_BIN_EXE_postbox-worker").unwrap_or("the worker's own tests only"),
    );
    c.env("POSTBOX_DATABASE_URL", pg.url("postgres"))
        .env("POSTBOX_ALLOW_PRIVATE_TARGETS", "true")
        .env("POSTBOX_REQUEST_TIMEOUT", "2s")
        .env("POSTBOX_CONNECT_TIMEOUT", "1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// Fast settings for tests: short poll, lease and timeouts, private targets on.
pub fn test_config(pg: &Cluster) -> Config {
    let mut c = Config::new(pg.url("postgres"));
    c.allow_private_targets = true;
    c.poll_interval = Duration::from_millis(200);
    c.request_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c.lease = Duration::from_secs(5);
    c.shutdown_timeout = Duration::from_secs(5);
    c
}

/// A cluster with a few event types, and a superuser session that may
/// register http://127.0.0.1 endpoints.
pub async fn cluster() -> (Cluster, Client) {
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    db.batch_execute(
        "SET postbox.allow_insecure_urls = on;
         SELECT postbox.create_event_type(n) FROM unnest(ARRAY['order.paid', 'order.refunded', 'burst.item', 'single.item']) n;",
    )
    .await
    .unwrap();
    (pg, db)
}

/// Creates an endpoint; returns (id, secret).
pub async fn endpoint(db: &Client, tenant: &str, url: &str, extra: &str) -> (String, String) {
    let row = db
        .query_one(
            &format!(
                "SELECT id::text, secret FROM postbox.create_endpoint('{tenant}', '{url}'{extra})"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

pub async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(db: &Client, sql: &str) -> T {
    db.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Polls until `f` holds or 30 s pass.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut f: F) {
    postbox_tests::wait_until(Duration::from_secs(30), what, || {
        std::future::ready(f().then_some(()))
    })
    .await
}

pub async fn eventually_sql(db: &Client, what: &str, sql: &str) {
    let sql = sql.to_string();
    postbox_tests::wait_until(Duration::from_secs(30), what, || {
        let sql = sql.clone();
        async move {
            db.query_one(&sql, &[])
                .await
                .ok()
                .and_then(|r| r.get::<_, bool>(0).then_some(()))
        }
    })
    .await
}

/// Verifies a delivery with the official `standardwebhooks` Python package
/// (standard style) or Python's own hmac (sha256-hex). Returns its verdict.
pub fn python_verify(
    style: &str,
    secret: &str,
    r: &Received,
    signature_header: &str,
) -> Result<(), String> {
    let script = r#"
import hashlib, hmac, json, sys
case = json.load(sys.stdin)
if case["style"] == "standard":
    from standardwebhooks import Webhook
    Webhook(case["secret"]).verify(case["body"], case["headers"])
else:
    want = "sha256=" + hmac.new(case["secret"].encode(), case["body"].encode(), hashlib.sha256).hexdigest()
    got = case["headers"][case["signature_header"].lower()]
    if not hmac.compare_digest(want, got):
        sys.exit("sha256-hex mismatch: " + got)
print("verified")
"#;
    let case = serde_json::json!({
        "style": style, "secret": secret, "body": r.body, "headers": r.headers, "signature_header": signature_header,
    });
    run_verifier(&python(), &["-c", script], case)
}

/// Runs a receiver's verification code, written as the product that
/// documents it shows it, over a real delivery: `program` and its
/// arguments, with `{"secret", "body", "headers"}` on stdin. Ok if it
/// printed "verified".
pub fn receiver_verify(
    program: &str,
    args: &[&str],
    secret: &str,
    r: &Received,
) -> Result<(), String> {
    let case = serde_json::json!({"secret": secret, "body": r.body, "headers": r.headers});
    run_verifier(program, args, case)
}

/// Runs `program` with `case` as JSON on stdin; Ok if it printed "verified".
fn run_verifier(program: &str, args: &[&str], case: serde_json::Value) -> Result<(), String> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (run scripts/setup.sh)"));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The venv's Python (scripts/setup.sh makes it, with standardwebhooks).
pub fn python() -> String {
    std::env::var("POSTBOX_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pyvenv/bin/python").to_string()
    })
}

/// A free port on 127.0.0.1 for a worker's metrics.
pub fn metrics_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The value of the sample `series` (name and labels, as exposed) in the
/// worker's /metrics at `addr`, if it is there.
pub async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))?
        .trim()
        .parse()
        .ok()
}

/// Waits until the sample `series` at `addr` satisfies `ok`; returns it.
pub async fn metric_until(addr: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    postbox_tests::wait_until(Duration::from_secs(30), series, || async {
        metric(addr, series).await.filter(|v| ok(*v))
    })
    .await
}

/// A CA made for the test, which the worker is told to trust.
pub fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    test_ca_named("postbox test CA")
}

/// A CA named `name`: CAs with one name would be told apart only by their
/// signatures.
pub fn test_ca_named(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap()
}

/// What the worker is given to trust `ca`.
pub fn trust(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) -> reqwest::Certificate {
    reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()
}

/// A TLS server configuration whose certificate holds `names`, signed by `ca`.
pub fn tls_receiver_config(
    names: &[&str],
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> tokio_rustls::TlsAcceptor {
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    tls_acceptor(params, ca)
}

/// A TLS server configuration for a certificate made from `params` (names,
/// validity, ...), signed by `ca`.
pub fn tls_acceptor(
    params: rcgen::CertificateParams,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
