//! The worker under test: in-process through `run()` ([`Worker`]), or its
//! binary as a process ([`worker_process`]); fast settings; its metrics.

use crate::Cluster;
use postbox_worker::Config;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A worker running in-process through `run()`.
pub struct Worker {
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<(), postbox_worker::RunError>>,
}

impl Worker {
    pub fn start(config: Config) -> Worker {
        crate::init_log();
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

/// The worker binary `bin` (the caller's `env!("CARGO_BIN_EXE_postbox-worker")`),
/// for tests that kill it: against `pg`, private targets allowed, the
/// request and connect timeouts of [`test_config`], output discarded. The
/// caller adds its own settings and spawns it.
pub fn worker_process(bin: &str, pg: &Cluster) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.env("POSTBOX_DATABASE_URL", pg.url(pg.worker_role))
        .env("POSTBOX_ALLOW_PRIVATE_TARGETS", "true")
        .env("POSTBOX_REQUEST_TIMEOUT", "2s")
        .env("POSTBOX_CONNECT_TIMEOUT", "1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// A worker process that is killed if the test ends (or fails) first, so
/// a failed test leaves no worker behind.
pub struct Running(pub Option<std::process::Child>);

impl Running {
    pub fn new(child: std::process::Child) -> Running {
        Running(Some(child))
    }

    /// Kills it with SIGKILL (-9) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fast settings for tests: short poll, lease and timeouts, private targets
/// on; logged in as the cluster's worker role (postbox_worker's grants).
pub fn test_config(pg: &Cluster) -> Config {
    let mut c = Config::new(pg.url(pg.worker_role));
    c.allow_private_targets = true;
    c.poll_interval = Duration::from_millis(200);
    c.request_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c.lease = Duration::from_secs(5);
    c.shutdown_timeout = Duration::from_secs(5);
    c
}

/// A free port on 127.0.0.1 for a worker's metrics.
pub fn metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::free_port()))
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
    crate::wait_until(Duration::from_secs(30), series, || async {
        metric(addr, series).await.filter(|v| ok(*v))
    })
    .await
}
