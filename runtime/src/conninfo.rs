//! Connection strings: what they say about TLS, taken out of them.
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
//!
//! [`crate::tls`] turns the [`TlsSettings`] into a connector;
//! [`transport_warning`] says when a connection is open to a network
//! attacker.

use std::path::PathBuf;
use tokio_postgres::config::SslMode as PgSslMode;

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

    /// As libpq spells it.
    pub fn as_str(self) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
    }
}
