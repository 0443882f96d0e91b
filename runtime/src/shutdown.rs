//! Shutdown: SIGTERM or SIGINT for a binary; any future for tests; and the
//! stop flag a process's parts watch.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Turns a shutdown future into a flag every part of a process can watch.
pub fn watch_for(shutdown: impl Future<Output = ()> + Send + 'static) -> watch::Receiver<bool> {
    stop_flag(shutdown).1
}

/// Sets the stop flag from inside: a part of a process that failed stops
/// the rest as a shutdown would.
pub type Stopper = Arc<watch::Sender<bool>>;

/// The stop flag, set by `shutdown` or through the [`Stopper`].
pub fn stop_flag(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (Stopper, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let on_signal = tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => { let _ = on_signal.send(true); }
            // Everyone stopped listening: the process's work already returned.
            _ = on_signal.closed() => {}
        }
    });
    (tx, rx)
}
