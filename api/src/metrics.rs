//! Prometheus metrics (requests by route, method and status; latency by
//! route) and the request log, on their own address with `/healthz`.

use crate::App;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::time::Instant;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("postbox_api");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        // 0.25 ms to 4 s: loopback reads take about a millisecond.
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00025, 2.0, 15))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by route",
            duration.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Counts and times each request, and logs it with its request id (the
/// route's template, never its values).
pub async fn track(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    // Set (or replaced, when unfit) by request_id::fit before this runs.
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let took = start.elapsed();
    let status = resp.status().as_u16();
    app.metrics
        .requests
        .get_or_create(&vec![
            ("route", route.clone()),
            ("method", method.to_string()),
            ("status", status.to_string()),
        ])
        .inc();
    app.metrics
        .duration
        .get_or_create(&vec![("route", route.clone())])
        .observe(took.as_secs_f64());
    if status >= 500 {
        tracing::warn!(%method, %route, status, ms = took.as_millis() as u64, ?request_id, "request failed");
    } else {
        tracing::debug!(%method, %route, status, ms = took.as_millis() as u64, ?request_id, "request");
    }
    resp
}

/// A method as metrics label it: the standard ones by name, anything else
/// as `other`, so made-up methods cannot grow the series without bound.
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", |m| m.as_str())
}

/// Whether the database answers.
pub async fn healthz(State(app): State<App>) -> Response {
    let ok = match app.db.get().await {
        Ok(db) => db.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    if ok {
        (axum::http::StatusCode::OK, "ok\n").into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable\n",
        )
            .into_response()
    }
}

/// Serves /metrics and /healthz on `addr` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    app: App,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route(
            "/metrics",
            get(|State(app): State<App>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    app.metrics.render(),
                )
            }),
        )
        .route("/healthz", get(healthz))
        .with_state(app);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for m in ["FOO", "BREW", "X1", "get"] {
            assert_eq!(
                method_label(&Method::from_bytes(m.as_bytes()).unwrap()),
                "other",
                "{m}"
            );
        }
    }
}
