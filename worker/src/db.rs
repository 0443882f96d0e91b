//! Connecting to PostgreSQL: the connection string's TLS settings, the
//! rustls connector that applies them to the pool and the LISTEN connection,
//! and what every worker session sets ([`session_options`]).
//!
//! tokio-postgres knows `sslmode` disable, prefer and require only, and no
//! `sslrootcert`, so both are taken out of the connection string here (URL
//! and key=value forms alike) and mean what they mean to libpq:
//!
//! | sslmode | TLS | certificate |
//! | --- | --- | --- |
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it, else plain | not checked |
//! | `require` | always | not checked; with `sslrootcert`, as `verify-ca` |
//! | `verify-ca` | always | chain to `sslrootcert`; host name not checked |
//! | `verify-full` | always | chain to `sslrootcert`, and the host name (or IP) |

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not a valid connection string ({0})")]
    Parse(String),
    #[error("sslmode must be disable, prefer, require, verify-ca or verify-full, not {0:?}")]
    SslMode(String),
    #[error("sslmode={0} needs sslrootcert, the CA certificate(s) to verify the server against")]
    NoRootCert(&'static str),
    #[error("sslrootcert {}: {why}", .path.display())]
    RootCert { path: PathBuf, why: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Result<SslMode, DbError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(DbError::SslMode(s.to_string())),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// What the connection string says about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// What is checked: libpq's `require` with a root certificate is `verify-ca`.
    pub fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        }
    }
}

/// Splits a connection string into tokio-postgres's part and the TLS settings.
/// Errors never show the string: it may hold a password.
pub fn parse(conn: &str) -> Result<(tokio_postgres::Config, TlsSettings), DbError> {
    let (rest, pairs) = if let Some(i) = url_query_start(conn) {
        split_url(conn, i)
    } else if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        (conn.to_string(), Vec::new())
    } else {
        split_key_values(conn)?
    };
    let mut settings = TlsSettings {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "sslmode" => settings.mode = SslMode::parse(&v)?,
            _ => settings.root_cert = Some(PathBuf::from(v)),
        }
    }
    if matches!(settings.mode, SslMode::VerifyCa | SslMode::VerifyFull)
        && settings.root_cert.is_none()
    {
        return Err(DbError::NoRootCert(settings.mode.as_str()));
    }
    let mut pg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Parse(crate::error::pg_message(&e)))?;
    pg.ssl_mode(match settings.mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    Ok((pg, settings))
}

/// A warning when the connection string lets a network attacker read or
/// change the traffic: a host that is not local (loopback or a Unix socket)
/// with `sslmode` below `verify-full` (`prefer`, libpq's default, falls
/// back to plain text; `require` and `verify-ca` accept a server that is
/// not the one named). None when it is fine, or when the string does not
/// parse (that is an error of its own). Names the hosts, never the string.
pub fn transport_warning(url: &str) -> Option<String> {
    let (pg, tls) = parse(url).ok()?;
    let mode = tls.effective_mode();
    if mode == SslMode::VerifyFull {
        return None;
    }
    let addrs = pg.get_hostaddrs();
    let remote: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .filter_map(|(i, host)| match host {
            tokio_postgres::config::Host::Tcp(name) => {
                // libpq connects to hostaddr when it is given, not to the name.
                let local = match addrs.get(i) {
                    Some(ip) => ip.is_loopback(),
                    None => is_local_name(name),
                };
                (!local).then(|| name.clone())
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => None,
        })
        .chain(
            // Addresses without host names.
            addrs
                .iter()
                .skip(pg.get_hosts().len())
                .filter(|ip| !ip.is_loopback())
                .map(|ip| ip.to_string()),
        )
        .collect();
    if remote.is_empty() {
        return None;
    }
    Some(format!(
        "the database connection to {} is not local and uses sslmode={}: {}; \
         use sslmode=verify-full with sslrootcert",
        remote.join(", "),
        tls.mode.as_str(),
        match mode {
            SslMode::Disable => "it is plain text",
            SslMode::Prefer => "it falls back to plain text if TLS is refused, as an attacker can make it",
            _ => "the server's certificate is not checked against its name, so another server can answer",
        }
    ))
}

/// `localhost` and loopback literals (`127.0.0.1`, `::1`, `[::1]`).
fn is_local_name(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

const TAKEN: [&str; 2] = ["sslmode", "sslrootcert"];

fn url_query_start(conn: &str) -> Option<usize> {
    if !(conn.starts_with("postgres://") || conn.starts_with("postgresql://")) {
        return None;
    }
    conn.find('?')
}

/// `postgres://...?a=b&sslmode=x` → the URL without the taken parameters.
fn split_url(conn: &str, q: usize) -> (String, Vec<(String, String)>) {
    let decode = percent_decode;
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for part in conn[q + 1..].split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key = decode(k);
        if TAKEN.contains(&key.as_str()) {
            taken.push((key, decode(v)));
        } else {
            kept.push(part);
        }
    }
    let mut rest = conn[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, taken)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let (b'%', Some(Some(hi)), Some(Some(lo))) = (
            b[i],
            b.get(i + 1).map(|c| hex(*c)),
            b.get(i + 2).map(|c| hex(*c)),
        ) {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `host=a sslmode=x` → the string without the taken keys, re-quoted.
/// Tokenised as tokio-postgres (and libpq) do: `key = value` or `key='v a l'`,
/// backslash escapes in both.
fn split_key_values(conn: &str) -> Result<(String, Vec<(String, String)>), DbError> {
    let mut it = conn.chars().peekable();
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c.is_whitespace() || c == '=' {
                break;
            }
            key.push(c);
            it.next();
        }
        if key.is_empty() {
            if it.peek().is_some() {
                return Err(DbError::Parse("expected a key before `=`".into()));
            }
            break;
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(DbError::Parse(format!("expected `=` after {key}")));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next() {
                    None => {
                        return Err(DbError::Parse(
                            "unterminated quoted connection parameter value".into(),
                        ))
                    }
                    Some('\'') => break,
                    Some('\\') => value.extend(it.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    value.extend(it.next());
                } else {
                    value.push(c);
                }
            }
        }
        if TAKEN.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), taken))
}

/// What every worker session sets: its name, so operators find (and tests
/// terminate) the worker's sessions, and generic plans. The worker runs the
/// same few statements with new arrays each time; custom plans would
/// re-plan every claim and acknowledgement (measured: a fifth of
/// PostgreSQL's CPU), and the generic ones are as good here.
pub fn session_options(pg: &mut tokio_postgres::Config) {
    pg.application_name("postbox-worker");
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c plan_cache_mode=force_generic_plan"),
        _ => "-c plan_cache_mode=force_generic_plan".to_string(),
    };
    pg.options(&options);
}

/// A pool of `size` connections; a connection is checked only by whether
/// it is closed before reuse (a broken one fails its statement, and the
/// next checkout replaces it).
pub fn pool(
    pg: tokio_postgres::Config,
    tls: MakeRustls,
    size: usize,
) -> Result<deadpool_postgres::Pool, deadpool_postgres::BuildError> {
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()
}

/// The TLS connector for `settings`: reads `sslrootcert` now, so a bad file
/// is a configuration error at start-up, not a failing reconnect later.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustls, DbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &settings.root_cert {
        Some(path) => Some(Arc::new(read_roots(path)?)),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (settings.effective_mode(), roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| DbError::Tls(e.to_string()))?
        }
        (SslMode::VerifyCa, Some(roots)) => Arc::new(ChainOnly {
            roots,
            provider: provider.clone(),
        }),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(DbError::NoRootCert(settings.mode.as_str()))
        }
        // disable (never used), prefer, require: encryption without
        // authentication, as libpq does.
        _ => Arc::new(Unchecked {
            provider: provider.clone(),
        }),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustls {
        config: Arc::new(config),
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, DbError> {
    let bad = |why: String| DbError::RootCert {
        path: path.to_path_buf(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificates in it".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    Ok(roots)
}

/// `prefer` and `require`: any certificate; the handshake is still checked.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
}

/// `verify-ca`: the chain must end at a root from `sslrootcert`; any name.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// tokio-postgres's TLS hook over rustls. Cheap to clone (one shared config).
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        // The name is checked when TLS is really used: for a Unix socket
        // tokio-postgres asks with an empty one and never connects with it.
        Ok(RustlsConnect {
            domain: domain.to_string(),
            config: self.config.clone(),
        })
    }
}

pub struct RustlsConnect {
    domain: String,
    config: Arc<ClientConfig>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.domain.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{:?} is not a host name for TLS: {e}", self.domain),
                )
            })?;
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// `tls-server-end-point` (RFC 5929), so SCRAM can bind to this session.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session.peer_certificates().and_then(|c| c.first()) {
            Some(cert) => match end_point_hash(cert.as_ref()) {
                Some(hash) => ChannelBinding::tls_server_end_point(hash),
                None => ChannelBinding::none(),
            },
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The certificate's hash for `tls-server-end-point`: the hash of its
/// signature algorithm, SHA-256 for MD5 and SHA-1 (RFC 5929 4.1). None for
/// other algorithms (RSA-PSS, Ed25519): then SCRAM runs without binding,
/// which a server offering it accepts.
fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let (tag, body, _) = der(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_tbs) = der(body)?;
    let (tag, alg, _) = der(after_tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der(alg)?;
    if tag != 0x06 {
        return None;
    }
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let bits = match oid {
        // md5, sha1, sha256, sha224 with RSA; ecdsa with sha1, sha256, sha224
        [r @ .., 0x04 | 0x05 | 0x0b | 0x0e] if r == RSA => 256,
        [r @ .., 0x01] if r == ECDSA => 256,
        [r @ .., 0x03, 0x01 | 0x02] if r == ECDSA => 256,
        [r @ .., 0x0c] if r == RSA => 384,
        [r @ .., 0x03, 0x03] if r == ECDSA => 384,
        [r @ .., 0x0d] if r == RSA => 512,
        [r @ .., 0x03, 0x04] if r == ECDSA => 512,
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(cert).to_vec(),
        384 => sha2::Sha384::digest(cert).to_vec(),
        _ => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// One DER element: (tag, contents, what follows).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((tag, b.get(head..end)?, b.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(conn: &str) -> Result<TlsSettings, String> {
        parse(conn).map(|(_, s)| s).map_err(|e| e.to_string())
    }

    #[test]
    fn sslmode_is_taken_from_urls_and_key_values() {
        for (conn, mode) in [
            ("postgres://u@db/app", SslMode::Prefer),
            ("host=db user=u", SslMode::Prefer),
            ("postgres://u@db/app?sslmode=disable", SslMode::Disable),
            ("postgres://u@db/app?sslmode=require", SslMode::Require),
            (
                "postgresql://db/app?application_name=x&sslmode=prefer",
                SslMode::Prefer,
            ),
            ("host=db sslmode=disable", SslMode::Disable),
            ("host=db sslmode = 'require' user=u", SslMode::Require),
        ] {
            assert_eq!(settings(conn).unwrap().mode, mode, "{conn}");
        }
        let s = settings("postgres://u@db/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem")
            .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        let s = settings("host=db sslmode=verify-ca sslrootcert='/etc/my ca.pem'").unwrap();
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/my ca.pem")));
    }

    #[test]
    fn a_remote_database_below_verify_full_is_warned_about() {
        for conn in [
            "postgres://u:hunter2@db.internal/app",
            "postgres://u:hunter2@db.internal/app?sslmode=prefer",
            "postgres://u@db.internal/app?sslmode=disable",
            "postgres://u@db.internal/app?sslmode=require",
            "postgres://u@db.internal/app?sslmode=require&sslrootcert=/ca.pem",
            "postgres://u@10.0.0.5/app?sslmode=verify-ca&sslrootcert=/ca.pem",
            "host=db.internal password=hunter2 user=u",
            "host=localhost,db.internal user=u",
            // The address libpq connects to, not the name, decides.
            "host=localhost hostaddr=10.0.0.5 user=u sslmode=require",
            "hostaddr=10.0.0.5 user=u",
        ] {
            let w = transport_warning(conn).unwrap_or_else(|| panic!("{conn}: no warning"));
            assert!(w.contains("verify-full"), "{conn}: {w}");
            assert!(!w.contains("hunter2"), "{conn}: never the password");
        }
        let w = transport_warning("postgres://u@db.internal/app").unwrap();
        assert!(
            w.contains("db.internal") && w.contains("sslmode=prefer"),
            "{w}"
        );
        for conn in [
            "postgres://u@db.internal/app?sslmode=verify-full&sslrootcert=/ca.pem",
            "host=db.internal sslmode=verify-full sslrootcert=/ca.pem",
            "postgres://u@localhost/app",
            "postgres://u@127.0.0.1:5432/app?sslmode=disable",
            "postgres://u@[::1]/app",
            "host=::1 user=u",
            "host=/var/run/postgresql user=u",
            "postgres://%2Fvar%2Frun%2Fpostgresql/app",
            "host=db.internal hostaddr=127.0.0.1 user=u",
            "user=u dbname=app",
            "not a connection string",
        ] {
            assert_eq!(transport_warning(conn), None, "{conn}");
        }
    }

    #[test]
    fn the_rest_reaches_tokio_postgres_intact() {
        let (pg, _) = parse(
            "postgres://u:p%40ss@db.internal:6432/app?sslmode=verify-full&application_name=w&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(pg.get_user(), Some("u"));
        assert_eq!(pg.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(pg.get_dbname(), Some("app"));
        assert_eq!(pg.get_ports(), &[6432]);
        assert_eq!(pg.get_application_name(), Some("w"));
        assert_eq!(pg.get_ssl_mode(), PgSslMode::Require);
        assert!(
            parse(r"host=db password='it''s' sslmode=verify-ca sslrootcert=/ca.pem").is_err(),
            "'' is not an escape"
        );
        let (pg, _) = parse(
            r"host=db password='it\'s a \\ secret' sslmode=verify-ca dbname=app sslrootcert=/ca.pem user=a\ b",
        )
        .unwrap();
        assert_eq!(pg.get_password(), Some(&br"it's a \ secret"[..]));
        assert_eq!(pg.get_dbname(), Some("app"));
        assert_eq!(pg.get_user(), Some("a b"));
        assert_eq!(pg.get_ssl_mode(), PgSslMode::Require);
        let (pg, _) = parse("postgres://db/app?sslmode=disable").unwrap();
        assert_eq!(pg.get_ssl_mode(), PgSslMode::Disable);
        let (pg, _) = parse("postgres://db/app").unwrap();
        assert_eq!(pg.get_ssl_mode(), PgSslMode::Prefer);
    }

    #[test]
    fn bad_tls_settings_are_clear_errors() {
        let e = settings("postgres://db/app?sslmode=verify-full").unwrap_err();
        assert!(e.contains("sslmode=verify-full needs sslrootcert"), "{e}");
        let e = settings("host=db sslmode=verify-ca").unwrap_err();
        assert!(e.contains("sslmode=verify-ca needs sslrootcert"), "{e}");
        let e = settings("postgres://db/app?sslmode=allow").unwrap_err();
        assert!(
            e.contains("sslmode must be disable, prefer, require, verify-ca or verify-full"),
            "{e}"
        );
        let e = settings("postgres://u:hunter2@db/app?sslmod=x").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = settings("host=db password=hunter2 sslmode").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        // require + sslrootcert checks the chain, as libpq does.
        let s = settings("postgres://db/app?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(s.effective_mode(), SslMode::VerifyCa);
        let e = connector(&s).err().unwrap().to_string();
        assert!(e.starts_with("sslrootcert /ca.pem:"), "{e}");
    }

    #[test]
    fn channel_binding_hash_follows_the_signature_algorithm() {
        let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256 with SHA-256
        let cert = rcgen::CertificateParams::new(vec!["db".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let hash = end_point_hash(cert.der()).unwrap();
        use sha2::Digest;
        assert_eq!(hash, sha2::Sha256::digest(cert.der()).to_vec());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(end_point_hash(cert.der()).unwrap().len(), 48);
        assert_eq!(end_point_hash(b"\x30\x03\x02\x01"), None);
    }
}
