//! The benchmark's receiver: tokio + hyper on 127.0.0.1, answering 204 and
//! counting, over plain HTTP/1.1 or (figure 10) HTTPS with HTTP/2 on
//! offer. Paths under `/hang/` accept the request and never answer; under
//! `/batch/` (figure 11) the body is a batch, parsed as a receiver that
//! deduplicates by event id would (each event's id read, its data kept as
//! raw JSON), and counted per event.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Stats {
    pub ok: AtomicU64,
    /// Requests to `/hang/` paths received (and never answered).
    pub hanging: AtomicU64,
    /// Requests that came over HTTP/2 (figure 10), never reset.
    pub http2: AtomicU64,
    pub last_ok: Mutex<Option<Instant>>,
    /// webhook-id -> arrival, only while `record_arrivals` is on.
    pub arrivals: Mutex<HashMap<String, Instant>>,
    pub record_arrivals: std::sync::atomic::AtomicBool,
}

impl Stats {
    pub fn reset(&self) {
        self.ok.store(0, Ordering::SeqCst);
        self.hanging.store(0, Ordering::SeqCst);
        *self.last_ok.lock().unwrap() = None;
        self.arrivals.lock().unwrap().clear();
    }
}

/// The receiver over plain HTTP/1.1.
pub async fn start(stats: Arc<Stats>) -> SocketAddr {
    listen(stats, None).await
}

/// The receiver over TLS with `acceptor`, answering HTTP/1.1, or HTTP/2
/// when the acceptor offers it (ALPN) and the client takes it.
pub async fn start_tls(stats: Arc<Stats>, acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    listen(stats, Some(acceptor)).await
}

async fn listen(stats: Arc<Stats>, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            let (stats, tls) = (stats.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(stats.clone(), req));
                match tls {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(sock).await else {
                            return;
                        };
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                    }
                    None => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(sock), svc)
                            .await;
                    }
                }
            });
        }
    });
    addr
}

async fn handle(
    stats: Arc<Stats>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    if req.uri().path().starts_with("/hang/") {
        stats.hanging.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    if req.version() == hyper::Version::HTTP_2 {
        stats.http2.fetch_add(1, Ordering::Relaxed);
    }
    let id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let batch = req.uri().path().starts_with("/batch/");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let delivered = match (batch, body) {
        (true, Ok(body)) => match serde_json::from_slice::<BatchBody>(&body) {
            Ok(b) => b.events.len() as u64,
            Err(_) => {
                return Ok(Response::builder().status(400).body(Empty::new()).unwrap());
            }
        },
        _ => 1,
    };
    let now = Instant::now();
    if stats.record_arrivals.load(Ordering::Relaxed) {
        if let Some(id) = id {
            stats.arrivals.lock().unwrap().insert(id, now);
        }
    }
    *stats.last_ok.lock().unwrap() = Some(now);
    stats.ok.fetch_add(delivered, Ordering::SeqCst);
    Ok(Response::builder().status(204).body(Empty::new()).unwrap())
}

/// A batch's body as a receiver reads it (README: "Batched deliveries").
#[derive(serde::Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    events: Vec<BatchEvent<'a>>,
}

#[derive(serde::Deserialize)]
struct BatchEvent<'a> {
    #[allow(dead_code)]
    id: &'a str,
    #[allow(dead_code)]
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}
