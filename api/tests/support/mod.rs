//! The API served in the test process, for the API's integration tests.
#![allow(dead_code)]

use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
