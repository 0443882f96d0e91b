//! The worker's background tasks (acknowledger, purger, heartbeat,
//! LISTEN), watched: the first that panics or fails stops the worker as a
//! shutdown would, and `run` returns its error. In debug builds,
//! [`test_hooks`] make a named task panic, as a bug would.

use crate::RunError;
use futures_util::FutureExt;
use postbox_runtime::shutdown::Stopper;
use std::future::Future;
use std::sync::Arc;

/// The first failure of a background task, and the stop flag it sets: a
/// task that panics or returns an error stops the worker (as a shutdown
/// would: in-flight requests finish, claims are given back), and `run`
/// returns the error, so the binary exits non-zero.
#[derive(Clone)]
pub struct Failure {
    stop: Stopper,
    first: Arc<std::sync::Mutex<Option<RunError>>>,
}

impl Failure {
    pub fn new(stop: Stopper) -> Failure {
        Failure {
            stop,
            first: Arc::default(),
        }
    }

    /// Spawns `task` (named `name` in errors), watched.
    pub fn watch(
        &self,
        name: &'static str,
        worker_id: &str,
        task: impl Future<Output = Result<(), RunError>> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        #[cfg(debug_assertions)]
        let task = test_hooks::armed(worker_id.to_string(), name, task);
        #[cfg(not(debug_assertions))]
        let _ = worker_id;
        let failure = self.clone();
        tokio::spawn(async move {
            let error = match std::panic::AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(panic) => RunError::Panicked {
                    task: name,
                    message: panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".into()),
                },
            };
            tracing::error!("{error}: stopping");
            failure
                .first
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(error);
            let _ = failure.stop.send(true);
        })
    }

    /// The first failure, if a task failed.
    pub fn take(&self) -> Option<RunError> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Test-only fault injection (debug builds only, so never in a release
/// binary): makes a named background task of the worker with a given id
/// panic, as a bug would.
#[cfg(debug_assertions)]
#[doc(hidden)]
pub mod test_hooks {
    use std::future::Future;
    use std::sync::Mutex;
    use std::time::Duration;

    static ARMED: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());

    /// From now on, the task `task` of the worker `worker_id` panics.
    pub fn panic_in(worker_id: &str, task: &'static str) {
        ARMED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((worker_id.to_string(), task));
    }

    fn is_armed(worker_id: &str, task: &str) -> bool {
        ARMED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(w, t)| w == worker_id && *t == task)
    }

    /// `fut`, or a panic once [`panic_in`] names this task.
    pub(crate) async fn armed<T>(
        worker_id: String,
        task: &'static str,
        fut: impl Future<Output = T>,
    ) -> T {
        let trip = async {
            while !is_armed(&worker_id, task) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            out = fut => out,
            _ = trip => panic!("test hook: the {task} task panics"),
        }
    }
}
