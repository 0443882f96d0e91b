//! The noisy tenant of figure 9's last measurement: what 0.5.0 let one
//! tenant do to all the others. Sockets that send a POST's headers with the
//! tenant's key and never finish its body, and clients that replay a long
//! range of the tenant's failed deliveries in a loop, with the range put
//! back to failed every half second so every replay has a full batch.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// How often the replayed range is put back to failed.
const RESET_EVERY: Duration = Duration::from_millis(500);

pub struct Noise {
    _sockets: Vec<TcpStream>,
    tasks: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Replay calls answered 2xx.
    pub replays: Arc<AtomicU64>,
}

/// Starts the noise against the API at `addr`: `sockets` slow bodies and
/// `replayers` replay loops with `key` on `endpoint`, and the reset on `db`.
pub async fn start(
    addr: SocketAddr,
    key: &str,
    endpoint: uuid::Uuid,
    sockets: usize,
    replayers: usize,
    db: Client,
) -> Noise {
    let mut held = Vec::new();
    for _ in 0..sockets {
        let mut s = TcpStream::connect(addr).await.expect("connect to the API");
        s.write_all(
            format!(
                "POST /v1/endpoints HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"url\": \"https://"
            )
            .as_bytes(),
        )
        .await
        .expect("send the headers");
        held.push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let replays = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..replayers {
        let (stop, replays, key) = (stop.clone(), replays.clone(), key.to_string());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect to the API");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = hyper::Request::post(format!("/v1/endpoints/{endpoint}/replay"))
                    .header("host", "127.0.0.1")
                    .header("authorization", format!("Bearer {key}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"since": "2000-01-01T00:00:00Z"}"#,
                    )))
                    .unwrap();
                if sender.ready().await.is_err() {
                    return;
                }
                let Ok(resp) = sender.send_request(req).await else {
                    return;
                };
                if resp.status().is_success() {
                    replays.fetch_add(1, Ordering::Relaxed);
                }
                let _ = resp.into_body().collect().await;
            }
        }));
    }
    let reset_stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        while !reset_stop.load(Ordering::Relaxed) {
            db.batch_execute(
                "UPDATE postbox.outbox SET status = 'failed' WHERE tenant = 'api-noisy' AND status = 'pending'",
            )
            .await
            .expect("reset the noisy tenant's deliveries");
            tokio::time::sleep(RESET_EVERY).await;
        }
    }));
    Noise {
        _sockets: held,
        tasks,
        stop,
        replays,
    }
}

impl Noise {
    /// Stops the loops, closes the sockets; returns the replays answered.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.replays.load(Ordering::Relaxed)
    }
}
