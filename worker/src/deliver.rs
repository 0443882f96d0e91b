//! One HTTP attempt: SSRF-checked name resolution, the request, and what came back.
//!
//! Names are resolved by the worker itself ([`Resolve`]). Every address of
//! the answer is checked against the shared IP policy, and the connection is
//! made only to the addresses that were checked, so a DNS answer that changes
//! between a check and a connect (rebinding) has nothing to slip through. An
//! answer holding any blocked address is refused whole (fail closed). The
//! error names the host and the kind of range, never the address: that would
//! map the internal network for whoever reads the attempt log.
//!
//! The environment's proxy variables (`HTTPS_PROXY`, `ALL_PROXY`, ...) are
//! ignored: through a proxy, the proxy resolves the name, past the check.

use crate::claim::Claimed;
use crate::sign;
use postbox_rules::{ip, options::EndpointOptions, url as url_rules};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Most bytes of a response body kept in the attempt log.
pub const EXCERPT_BYTES: usize = 4096;
pub const USER_AGENT: &str = concat!("postbox/", env!("CARGO_PKG_VERSION"));

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Name resolution. The default is the system resolver; tests supply their own.
pub trait Resolve: Send + Sync + 'static {
    fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<IpAddr>>>;
}

pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("blocked: {host} resolves to a {kind} address; webhooks go only to public addresses")]
    Blocked { host: String, kind: &'static str },
    #[error("DNS: {host} has no addresses")]
    NoAddresses { host: String },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// reqwest's resolver hook: look up, check every address, hand over only checked ones.
struct CheckedResolver {
    inner: Arc<dyn Resolve>,
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let inner = self.inner.clone();
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = inner.lookup(host.clone()).await?;
            if addrs.is_empty() {
                return Err(Box::new(DeliverError::NoAddresses { host }) as _);
            }
            if !allow_private {
                for addr in &addrs {
                    if let Err(why) = ip::check(*addr) {
                        return Err(Box::new(DeliverError::Blocked {
                            host,
                            kind: why.describe(),
                        }) as _);
                    }
                }
            }
            let out: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(out)
        })
    }
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
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }
}

/// Sends attempts. One reqwest client per connect timeout in use, each with
/// its own keep-alive pool.
pub struct Sender {
    clients: Mutex<HashMap<Duration, reqwest::Client>>,
    resolver: Arc<dyn Resolve>,
    roots: Vec<reqwest::Certificate>,
    allow_private: bool,
    default_timeout: Duration,
    default_connect_timeout: Duration,
    max_request_time: Duration,
}

impl Sender {
    pub fn new(
        resolver: Arc<dyn Resolve>,
        roots: Vec<reqwest::Certificate>,
        allow_private: bool,
        default_timeout: Duration,
        default_connect_timeout: Duration,
        max_request_time: Duration,
    ) -> Result<Sender, DeliverError> {
        let sender = Sender {
            clients: Mutex::new(HashMap::new()),
            resolver,
            roots,
            allow_private,
            default_timeout,
            default_connect_timeout,
            max_request_time,
        };
        sender.client(default_connect_timeout)?; // fail at start-up, not on the first delivery
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
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .dns_resolver(Arc::new(CheckedResolver {
                inner: self.resolver.clone(),
                allow_private: self.allow_private,
            }));
        for cert in &self.roots {
            b = b.add_root_certificate(cert.clone());
        }
        let client = b.build().map_err(|e| DeliverError::Client(e.to_string()))?;
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }

    /// Makes one attempt. Never fails: every problem becomes the attempt's error.
    pub async fn send(&self, job: &Claimed, opts: &EndpointOptions) -> Attempt {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let done = |status: Option<u16>, retry_after, excerpt, error: Option<String>| Attempt {
            started_at,
            duration: start.elapsed(),
            status,
            retry_after,
            excerpt,
            error,
        };
        // The same URL rules as the extension; IP literals never reach the resolver.
        let url = match url_rules::validate(&job.endpoint.url, self.allow_private) {
            Ok(u) => u,
            Err(e) => return done(None, None, None, Some(e.to_string())),
        };
        let timeout = opts
            .timeout
            .unwrap_or(self.default_timeout)
            .min(self.max_request_time);
        let client = match self.client(opts.connect_timeout.unwrap_or(self.default_connect_timeout))
        {
            Ok(c) => c,
            Err(e) => return done(None, None, None, Some(e.to_string())),
        };
        let body = job.body();
        let unix = started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut req = client
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in &job.endpoint.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        match sign::headers(job, unix, body.as_bytes()) {
            Ok(sig) => {
                for (name, value) in sig {
                    req = req.header(name, value);
                }
            }
            Err(e) => return done(None, None, None, Some(e.to_string())),
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return done(None, None, None, Some(describe(&e, timeout))),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::retry::parse_retry_after);
        let excerpt = read_excerpt(resp).await;
        let error = (!(200..300).contains(&status)).then(|| format!("HTTP {status}"));
        done(Some(status), retry_after, excerpt, error)
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

/// An error with its causes, e.g. `error sending request: client error (Connect): blocked: ...`.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
