//! The HTTP load generator of figure 9: clients on persistent HTTP/1.1
//! connections to 127.0.0.1 (hyper, one connection each), either as fast
//! as answers come (closed loop) or at a fixed rate, where a request's time
//! counts from when it was due, so a slow answer is not hidden by the
//! requests it delays.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds request `k`.
pub type MakeRequest = Arc<dyn Fn(usize) -> Request<Full<Bytes>> + Send + Sync>;

pub struct Load {
    /// Each request's time, sorted, in ms.
    pub latencies_ms: Vec<f64>,
    pub elapsed: Duration,
    /// Answers other than 2xx.
    pub failed: usize,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `total` requests from `clients` connections; with `rate` (requests a
/// second, all clients together) request k is due at start + k / rate,
/// else each client sends its next one when its last is answered.
pub async fn run(
    addr: SocketAddr,
    clients: usize,
    total: usize,
    rate: Option<f64>,
    make: MakeRequest,
) -> Load {
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the API");
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
            tokio::spawn(conn);
            let mut times = Vec::new();
            let mut failed = 0;
            tokio::time::sleep_until(start.into()).await;
            for k in (c..total).step_by(clients) {
                let due = match rate {
                    Some(r) => {
                        let due = start + Duration::from_secs_f64(k as f64 / r);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                sender.ready().await.expect("connection ready");
                let resp = sender.send_request(make(k)).await.expect("request");
                let ok = resp.status().is_success();
                resp.into_body().collect().await.expect("body");
                times.push(due.elapsed().as_secs_f64() * 1000.0);
                failed += usize::from(!ok);
            }
            (times, failed)
        }));
    }
    let mut latencies_ms = Vec::with_capacity(total);
    let mut failed = 0;
    for t in tasks {
        let (times, f) = t.await.unwrap();
        latencies_ms.extend(times);
        failed += f;
    }
    let elapsed = start.elapsed();
    latencies_ms.sort_by(f64::total_cmp);
    Load {
        latencies_ms,
        elapsed,
        failed,
    }
}
