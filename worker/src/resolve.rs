//! Name resolution with the SSRF check: the worker resolves names itself,
//! checks every address of the answer against the shared IP policy, and
//! hands the HTTP client only addresses it checked.
//!
//! The connection is made only to checked addresses, so a DNS answer that
//! changes between a check and a connect (rebinding) has nothing to slip
//! through. An answer holding any blocked address is refused whole (fail
//! closed). The error names the host and the kind of range, never the
//! address: that would map the internal network for whoever reads the
//! attempt log. IP literals in URLs never get here; the URL rules check them.

use postbox_rules::ip;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Name resolution. The default is the system resolver; tests supply their own.
pub trait Resolve: Send + Sync + 'static {
    fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (getaddrinfo).
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
pub enum ResolveError {
    #[error("blocked: {host} resolves to a {kind} address; webhooks go only to public addresses")]
    Blocked { host: String, kind: &'static str },
    #[error("DNS: {host} has no addresses")]
    NoAddresses { host: String },
    #[error(transparent)]
    Lookup(#[from] io::Error),
}

/// Looks `host` up and checks every address; unless `allow_private`, any
/// blocked address refuses the whole answer.
pub async fn checked_lookup(
    resolver: &dyn Resolve,
    host: String,
    allow_private: bool,
) -> Result<Vec<IpAddr>, ResolveError> {
    let addrs = resolver.lookup(host.clone()).await?;
    if addrs.is_empty() {
        return Err(ResolveError::NoAddresses { host });
    }
    if !allow_private {
        for addr in &addrs {
            if let Err(why) = ip::check(*addr) {
                return Err(ResolveError::Blocked {
                    host,
                    kind: why.describe(),
                });
            }
        }
    }
    Ok(addrs)
}

/// reqwest's resolver hook: [`checked_lookup`], then only checked addresses.
pub struct CheckedResolver {
    pub inner: Arc<dyn Resolve>,
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let inner = self.inner.clone();
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            match checked_lookup(&*inner, host, allow_private).await {
                Ok(addrs) => {
                    let out: reqwest::dns::Addrs =
                        Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(out)
                }
                Err(ResolveError::Lookup(e)) => Err(Box::new(e) as _),
                Err(e) => Err(Box::new(e) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fixed(HashMap<&'static str, Vec<IpAddr>>);

    impl Resolve for Fixed {
        fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<IpAddr>>> {
            let answer = self
                .0
                .get(host.as_str())
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"));
            Box::pin(async move { answer })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn every_address_of_an_answer_is_checked() {
        let r = Fixed(HashMap::from([
            (
                "public.test",
                vec![ip("93.184.216.34"), ip("2606:2800:220:1::1")],
            ),
            ("internal.test", vec![ip("10.1.2.3")]),
            ("rebind.test", vec![ip("93.184.216.34"), ip("127.0.0.1")]),
            ("metadata.test", vec![ip("169.254.169.254")]),
            ("empty.test", vec![]),
        ]));
        let ok = checked_lookup(&r, "public.test".into(), false)
            .await
            .unwrap();
        assert_eq!(ok.len(), 2);
        for (host, kind) in [
            ("internal.test", "private"),
            ("rebind.test", "loopback"),
            ("metadata.test", "link-local"),
        ] {
            let e = checked_lookup(&r, host.into(), false).await.unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, ResolveError::Blocked { .. })
                    && text.starts_with(&format!("blocked: {host} resolves to a {kind}")),
                "{text}"
            );
            assert!(
                !text.contains("10.1.2.3")
                    && !text.contains("127.0.0.1")
                    && !text.contains("169.254"),
                "{text}"
            );
        }
        // Development: private addresses are allowed, an empty answer is not.
        assert_eq!(
            checked_lookup(&r, "rebind.test".into(), true)
                .await
                .unwrap(),
            [ip("93.184.216.34"), ip("127.0.0.1")]
        );
        let e = checked_lookup(&r, "empty.test".into(), true)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "DNS: empty.test has no addresses");
        let e = checked_lookup(&r, "nowhere.test".into(), false)
            .await
            .unwrap_err();
        assert!(matches!(e, ResolveError::Lookup(_)), "{e}");
    }
}
