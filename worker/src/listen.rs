//! The LISTEN connection. NOTIFY is only a hint: a wake-up for the
//! dispatcher, which also polls. The connection reconnects with backoff;
//! after a reconnect the dispatcher is woken, as notifications may have been
//! missed meanwhile.

use crate::db::MakeRustls;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_postgres::AsyncMessage;

pub const CHANNEL: &str = "postbox_wakeup";

pub async fn run(
    pg: tokio_postgres::Config,
    tls: MakeRustls,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        match pg.connect(tls.clone()).await {
            Ok((client, mut conn)) => {
                let wake2 = wake.clone();
                let mut pump = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    use futures_util::StreamExt;
                    while let Some(msg) = messages.next().await {
                        match msg {
                            Ok(AsyncMessage::Notification(_)) => wake2.notify_one(),
                            Ok(_) => {}
                            Err(e) => return Some(e),
                        }
                    }
                    None
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        tracing::debug!("listening for {CHANNEL}");
                        wake.notify_one();
                        tokio::select! {
                            res = &mut pump => {
                                let err = res.ok().flatten().map(|e| e.to_string()).unwrap_or_else(|| "closed".into());
                                tracing::warn!(error = %err, "LISTEN connection lost; reconnecting");
                            }
                            _ = stop.changed() => { pump.abort(); return; }
                        }
                    }
                    Err(e) => {
                        pump.abort();
                        tracing::warn!(error = %e, "LISTEN failed");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::claim::pg_message(&e), "LISTEN connection failed; retrying in {:?}", backoff)
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
