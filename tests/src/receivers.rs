//! HTTP(S) receivers on 127.0.0.1 that record what they receive and answer
//! as told: statuses in turn, never, or late.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What a receiver answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// These statuses in turn; the last one repeats.
    Statuses(Vec<u16>),
    /// Accept, read the request, never answer.
    Hang,
    /// Answer 200 after a delay.
    Slow(Duration),
    /// Answer `status` to a body that contains `needle`, 200 to any other.
    Refuse { needle: String, status: u16 },
    /// Answer 503 to about `per_mille` of every 1,000 requests, spread by a
    /// hash of the arrival number (the same run fails the same requests),
    /// 200 to the rest.
    Flaky { per_mille: u64 },
}

#[derive(Clone, Debug)]
pub struct Received {
    /// Arrival order across every receiver sharing the counter.
    pub seq: u64,
    /// The request's path, which tells endpoints on one receiver apart.
    pub path: String,
    /// The HTTP version it came over ("HTTP/1.1", "HTTP/2.0").
    pub version: String,
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
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    behavior: Mutex<Behavior>,
    received: Mutex<Vec<Received>>,
    order: Arc<AtomicU64>,
}

/// A fresh arrival counter, for receivers whose requests are ordered among
/// themselves only (receivers that share one count arrivals across them).
pub fn order() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Receiver {
    pub async fn start(behavior: Behavior, order: Arc<AtomicU64>) -> Receiver {
        Self::start_tls(behavior, order, None).await
    }

    /// With `tls`, an HTTPS receiver (see [`crate::tls`]).
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
                    match tls {
                        // HTTP/1.1, or HTTP/2 when the acceptor offers it
                        // (ALPN) and the client takes it.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(sock).await {
                                let _ = hyper_util::server::conn::auto::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                            }
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

/// Whether a [`Behavior::Flaky`] receiver fails the request that arrived
/// `seq`th: a multiplicative hash (2^64 / the golden ratio, Knuth's) of the
/// arrival number spreads the failures evenly.
pub fn flaky_fails(seq: u64, per_mille: u64) -> bool {
    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 1000 < per_mille
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
    let version = format!("{:?}", req.version());
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    struct Leave<'a>(&'a AtomicUsize);
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
            version,
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
        Behavior::Flaky { per_mille } => {
            if flaky_fails(seq, per_mille) {
                503
            } else {
                200
            }
        }
        Behavior::Refuse { needle, status } => {
            if String::from_utf8_lossy(&body).contains(&needle) {
                status
            } else {
                200
            }
        }
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"received")))
        .unwrap())
}
