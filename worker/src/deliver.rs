//! One HTTP attempt: the request (body, headers, signature), what came
//! back, and an error's text for the attempt log.
//!
//! Names are resolved through [`crate::resolve`], which checks every address
//! (SSRF). The environment's proxy variables (`HTTPS_PROXY`, `ALL_PROXY`,
//! ...) are ignored: through a proxy, the proxy resolves the name, past the
//! check. Redirects are never followed.

use crate::batch::Request;
use crate::resolve::{CheckedResolver, Resolve};
use postbox_rules::{options::EndpointOptions, url as url_rules};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Most bytes of a response body kept in the attempt log.
pub const EXCERPT_BYTES: usize = 4096;

/// Idle keep-alive connections per receiver host: as many as the fast lane
/// has requests in flight (POSTBOX_FAST_IN_FLIGHT's default), so a busy fast
/// endpoint does not reconnect between bursts.
const IDLE_PER_HOST: usize = 64;
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started_at: SystemTime,
    pub duration: Duration,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub excerpt: Option<String>,
    pub error: Option<String>,
    /// What the attempt log keeps of the headers sent
    /// ([`crate::request::Headers::logged`]); `None`: nothing was sent.
    pub request_headers: Option<String>,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }
}

/// What a [`Sender`] needs.
pub struct SenderSettings {
    /// Name resolution (checked by [`CheckedResolver`]).
    pub resolver: Arc<dyn Resolve>,
    /// Trusted roots besides Mozilla's (webpki-roots).
    pub roots: Vec<reqwest::Certificate>,
    /// Development only: private addresses and http.
    pub allow_private: bool,
    /// Total request timeout unless the endpoint sets `timeout_ms`.
    pub default_timeout: Duration,
    /// Connect timeout unless the endpoint sets `connect_timeout_ms`.
    pub default_connect_timeout: Duration,
    /// No request takes longer, whatever the endpoint says (below the lease).
    pub max_request_time: Duration,
    /// Offer HTTP/2 to HTTPS receivers (ALPN); else HTTP/1.1 only.
    pub http2: bool,
}

/// The connect timeouts the worker has clients for: an endpoint's
/// `connect_timeout_ms` (tenants choose it, 100 ms to 60 s) is rounded up to
/// the next of these, so tenants cannot make a client (and a keep-alive
/// pool) per distinct value. Up, so no connect fails sooner than asked; the
/// request's total timeout still bounds the whole attempt.
pub const CONNECT_TIMEOUTS_MS: [u64; 12] = [
    100, 200, 300, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 20_000, 30_000, 60_000,
];

/// The connect timeout a client is kept for: `asked` rounded up to one of
/// [`CONNECT_TIMEOUTS_MS`] (the largest, above them), or the worker's own
/// default unchanged.
pub fn connect_timeout_step(asked: Duration, default: Duration) -> Duration {
    if asked == default {
        return default;
    }
    let step = CONNECT_TIMEOUTS_MS
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .find(|d| *d >= asked);
    step.unwrap_or(Duration::from_millis(
        CONNECT_TIMEOUTS_MS[CONNECT_TIMEOUTS_MS.len() - 1],
    ))
}

/// Sends attempts. One reqwest client per connect timeout in use, each with
/// its own keep-alive pool: at most one per [`CONNECT_TIMEOUTS_MS`] step and
/// one for the default.
pub struct Sender {
    clients: Mutex<HashMap<Duration, reqwest::Client>>,
    settings: SenderSettings,
}

impl Sender {
    pub fn new(settings: SenderSettings) -> Result<Sender, DeliverError> {
        let sender = Sender {
            clients: Mutex::new(HashMap::new()),
            settings,
        };
        // Fail at start-up, not on the first delivery.
        sender.client(sender.settings.default_connect_timeout)?;
        Ok(sender)
    }

    fn client(&self, connect_timeout: Duration) -> Result<reqwest::Client, DeliverError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&connect_timeout) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .tcp_nodelay(true)
            .user_agent(crate::request::USER_AGENT)
            .dns_resolver(Arc::new(CheckedResolver {
                inner: self.settings.resolver.clone(),
                allow_private: self.settings.allow_private,
            }));
        if !self.settings.http2 {
            b = b.http1_only();
        }
        for cert in &self.settings.roots {
            b = b.add_root_certificate(cert.clone());
        }
        let client = b.build().map_err(|e| DeliverError::Client(e.to_string()))?;
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }

    /// Makes one attempt of `request`. Never fails: every problem becomes
    /// the attempt's error.
    pub async fn send(&self, request: &Request, opts: &EndpointOptions) -> Attempt {
        let job = request.first();
        let started_at = SystemTime::now();
        let start = Instant::now();
        let done = |status: Option<u16>, retry_after, excerpt, error: Option<String>| Attempt {
            started_at,
            duration: start.elapsed(),
            status,
            retry_after,
            excerpt,
            error,
            request_headers: None,
        };
        // The same URL rules as the extension; IP literals never reach the resolver.
        let url = match url_rules::validate(&job.endpoint.url, self.settings.allow_private) {
            Ok(u) => u,
            Err(e) => return done(None, None, None, Some(e.to_string())),
        };
        let timeout = opts
            .timeout
            .unwrap_or(self.settings.default_timeout)
            .min(self.settings.max_request_time);
        let default = self.settings.default_connect_timeout;
        let connect_timeout =
            connect_timeout_step(opts.connect_timeout.unwrap_or(default), default);
        let client = match self.client(connect_timeout) {
            Ok(c) => c,
            Err(e) => return done(None, None, None, Some(e.to_string())),
        };
        let body = request.body();
        let unix = started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let headers =
            match crate::request::headers(job, request.message_id(), unix, body.as_bytes()) {
                Ok(h) => h,
                Err(e) => return done(None, None, None, Some(e.to_string())),
            };
        let mut req = client.post(url).timeout(timeout);
        for (name, value) in &headers.sent {
            req = req.header(name.as_str(), value.as_str());
        }
        // Sent, or tried: the log keeps what went out from here on.
        let sent = |a: Attempt| Attempt {
            request_headers: Some(headers.logged.clone()),
            ..a
        };
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return sent(done(None, None, None, Some(describe(&e, timeout)))),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::retry::parse_retry_after);
        let excerpt = read_excerpt(resp).await;
        let error = (!(200..300).contains(&status)).then(|| format!("HTTP {status}"));
        sent(done(Some(status), retry_after, excerpt, error))
    }
}

/// The first [`EXCERPT_BYTES`] of the body; the rest is never read.
async fn read_excerpt(mut resp: reqwest::Response) -> Option<String> {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < EXCERPT_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - buf.len())])
            }
            _ => break,
        }
    }
    if buf.is_empty() {
        return None;
    }
    // PostgreSQL text cannot hold NUL.
    Some(String::from_utf8_lossy(&buf).replace('\0', ""))
}

/// An error with its causes, e.g. `error sending request: client error
/// (Connect): blocked: ...`; a timeout says which one.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    postbox_runtime::error::with_causes(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: impl Into<reqwest::Body>) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(body.into()))
    }

    #[test]
    fn connect_timeouts_round_up_to_a_few_steps() {
        let default = Duration::from_secs(5);
        let mut steps = std::collections::HashSet::new();
        // Every value an endpoint may set (100 to 60,000 ms).
        for ms in 100..=60_000u64 {
            let asked = Duration::from_millis(ms);
            let got = connect_timeout_step(asked, default);
            assert!(got >= asked, "{ms} ms: never shorter than asked");
            assert!(got <= asked * 2, "{ms} ms: at most twice as long");
            steps.insert(got);
        }
        assert_eq!(steps.len(), CONNECT_TIMEOUTS_MS.len());
        let odd = Duration::from_millis(4_321);
        assert_eq!(connect_timeout_step(odd, odd), odd, "the default is kept");
        assert_eq!(
            connect_timeout_step(Duration::from_secs(600), default),
            Duration::from_secs(60)
        );
    }

    #[tokio::test]
    async fn the_sender_keeps_a_bounded_number_of_clients() {
        let default = Duration::from_millis(4_321);
        let sender = Sender::new(SenderSettings {
            resolver: Arc::new(crate::resolve::SystemResolver),
            roots: Vec::new(),
            allow_private: true,
            default_timeout: Duration::from_millis(200),
            default_connect_timeout: default,
            max_request_time: Duration::from_secs(1),
            http2: true,
        })
        .unwrap();
        // A job per distinct connect timeout, to a port nobody listens on.
        let port = postbox_tests::free_port();
        let mut job = crate::claim::tests::sample_job(
            postbox_rules::headers::SignatureStyle::Standard,
            None,
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        );
        Arc::get_mut(&mut job.endpoint).unwrap().url = format!("http://127.0.0.1:{port}/hook");
        let request = Request::new(vec![job]);
        for ms in (100..=60_000).step_by(97) {
            let opts = EndpointOptions {
                connect_timeout: Some(Duration::from_millis(ms)),
                ..Default::default()
            };
            let a = sender.send(&request, &opts).await;
            assert!(a.error.is_some());
        }
        let clients = sender.clients.lock().unwrap().len();
        assert!(
            clients <= CONNECT_TIMEOUTS_MS.len() + 1,
            "{clients} clients for 619 distinct connect timeouts"
        );
    }

    #[tokio::test]
    async fn only_the_first_4_kib_of_a_body_is_kept() {
        let long = response("a".repeat(10 * EXCERPT_BYTES));
        assert_eq!(read_excerpt(long).await, Some("a".repeat(EXCERPT_BYTES)));
        assert_eq!(
            read_excerpt(response("")).await,
            None,
            "no body, no excerpt"
        );
        assert_eq!(
            read_excerpt(response(&b"a\0b"[..])).await.as_deref(),
            Some("ab"),
            "PostgreSQL text cannot hold NUL"
        );
        assert_eq!(
            read_excerpt(response(&b"\xffok"[..])).await.as_deref(),
            Some("\u{fffd}ok"),
            "not UTF-8: replaced, not refused"
        );
    }

    #[test]
    fn only_2xx_succeeds() {
        let attempt = |status| Attempt {
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            status,
            retry_after: None,
            excerpt: None,
            error: None,
            request_headers: None,
        };
        for (status, ok) in [
            (Some(200), true),
            (Some(204), true),
            (Some(299), true),
            (Some(199), false),
            (Some(301), false),
            (Some(410), false),
            (Some(500), false),
            (None, false),
        ] {
            assert_eq!(attempt(status).succeeded(), ok, "{status:?}");
        }
    }

    #[tokio::test]
    async fn errors_carry_their_causes_and_timeouts_their_length() {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        // A port nobody listens on: the reason is three layers down.
        let port = postbox_tests::free_port();
        let e = client
            .post(format!("http://127.0.0.1:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        let text = describe(&e, Duration::from_secs(15));
        assert!(
            text.starts_with("error sending request") && text.contains("Connection refused"),
            "{text}"
        );
        // A receiver that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = silent.accept().await {
                held.push(sock);
            }
        });
        let timeout = Duration::from_millis(100);
        let e = client
            .post(format!("http://{addr}/hook"))
            .timeout(timeout)
            .send()
            .await
            .unwrap_err();
        assert_eq!(describe(&e, timeout), "timed out after 100ms");
    }
}
