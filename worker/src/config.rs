//! Configuration: flags, then `POSTBOX_*` environment variables, then an
//! optional TOML file, then defaults. Everything is validated before the
//! worker starts; a bad value is a [`ConfigError`] and exit code 2.

use crate::deliver::{Resolve, SystemResolver};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {rule}: {value}")]
    Invalid {
        name: &'static str,
        rule: String,
        value: String,
    },
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("no database: set POSTBOX_DATABASE_URL (or DATABASE_URL, --database-url, or database_url in the config file)")]
    NoDatabase,
}

fn invalid(
    name: &'static str,
    rule: impl Into<String>,
    value: impl std::fmt::Display,
) -> ConfigError {
    ConfigError::Invalid {
        name,
        rule: rule.into(),
        value: value.to_string(),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (use e.g. 500ms, 2s, 5m, 24h)"))
}

/// Bytes: a number with an optional unit (B, kB, KiB, MB, MiB, GB, GiB).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| "expected bytes, e.g. 16MiB, 500kB or 1048576".to_string())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        u => {
            return Err(format!(
                "unknown unit {u:?} (use B, kB, KiB, MB, MiB, GB or GiB)"
            ))
        }
    };
    n.checked_mul(mult).ok_or_else(|| "too large".to_string())
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Command-line flags; each falls back to its environment variable.
#[derive(Parser, Debug, Default)]
#[command(
    name = "postbox-worker",
    version,
    about = "Delivers postbox webhooks from the PostgreSQL outbox."
)]
pub struct Cli {
    /// TOML file with any of the settings below (lowest precedence).
    #[arg(long, env = "POSTBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL connection string; falls back to DATABASE_URL.
    #[arg(long, env = "POSTBOX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Development only: deliver to private, loopback and link-local addresses, and over http.
    #[arg(long, env = "POSTBOX_ALLOW_PRIVATE_TARGETS", value_parser = parse_bool)]
    pub allow_private_targets: Option<bool>,
    /// Address for /metrics and /healthz, e.g. 127.0.0.1:9187.
    #[arg(long, env = "POSTBOX_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Requests in flight at once, all endpoints together.
    #[arg(long, env = "POSTBOX_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Requests in flight per endpoint and worker process, unless the endpoint's max_in_flight option says otherwise.
    #[arg(long, env = "POSTBOX_ENDPOINT_MAX_IN_FLIGHT")]
    pub endpoint_max_in_flight: Option<u32>,
    /// Requests in flight at once to endpoints that answer fast (the ones that cost CPU).
    #[arg(long, env = "POSTBOX_FAST_IN_FLIGHT")]
    pub fast_in_flight: Option<usize>,
    /// Requests in flight per tenant (all its endpoints) in this process.
    #[arg(long, env = "POSTBOX_TENANT_MAX_IN_FLIGHT")]
    pub tenant_max_in_flight: Option<u32>,
    /// Most payload bytes claimed at once (one delivery always goes out), e.g. 16MiB.
    #[arg(long, env = "POSTBOX_CLAIM_MAX_BYTES", value_parser = parse_bytes)]
    pub claim_max_bytes: Option<u64>,
    /// Longest wait between looks at the outbox when no NOTIFY arrives.
    #[arg(long, env = "POSTBOX_POLL_INTERVAL", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// How long SIGTERM waits for in-flight requests before releasing them.
    #[arg(long, env = "POSTBOX_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Consecutive failed attempts before an endpoint is disabled (with POSTBOX_DISABLE_AFTER).
    #[arg(long, env = "POSTBOX_DISABLE_AFTER_FAILURES")]
    pub disable_after_failures: Option<u32>,
    /// How long an endpoint must have been failing before it is disabled.
    #[arg(long, env = "POSTBOX_DISABLE_AFTER", value_parser = parse_duration)]
    pub disable_after: Option<Duration>,
    /// Most deliveries claimed in one statement.
    #[arg(long, env = "POSTBOX_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// How long a claim is held; a crashed worker's claims are retaken after it.
    #[arg(long, env = "POSTBOX_LEASE", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// Default total request timeout (an endpoint's timeout_ms overrides it).
    #[arg(long, env = "POSTBOX_REQUEST_TIMEOUT", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
    /// Default connect timeout (an endpoint's connect_timeout_ms overrides it).
    #[arg(long, env = "POSTBOX_CONNECT_TIMEOUT", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Database connections for claims and acknowledgements.
    #[arg(long, env = "POSTBOX_DB_POOL_SIZE")]
    pub db_pool_size: Option<usize>,
    /// Name recorded on claims; defaults to host name and process id.
    #[arg(long, env = "POSTBOX_WORKER_ID")]
    pub worker_id: Option<String>,
    /// PEM files with extra root certificates to trust, comma-separated.
    #[arg(long, env = "POSTBOX_EXTRA_ROOT_CERTS", value_delimiter = ',')]
    pub extra_root_certs: Option<Vec<PathBuf>>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "POSTBOX_LOG_JSON", value_parser = parse_bool)]
    pub log_json: Option<bool>,
    /// Log filter, e.g. info or postbox_worker=debug.
    #[arg(long, env = "POSTBOX_LOG")]
    pub log: Option<String>,
}

/// The TOML file: the same settings, with durations as strings ("2s").
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    allow_private_targets: Option<bool>,
    metrics_addr: Option<SocketAddr>,
    max_in_flight: Option<usize>,
    endpoint_max_in_flight: Option<u32>,
    fast_in_flight: Option<usize>,
    tenant_max_in_flight: Option<u32>,
    claim_max_bytes: Option<String>,
    poll_interval: Option<String>,
    shutdown_timeout: Option<String>,
    disable_after_failures: Option<u32>,
    disable_after: Option<String>,
    batch_size: Option<usize>,
    lease: Option<String>,
    request_timeout: Option<String>,
    connect_timeout: Option<String>,
    db_pool_size: Option<usize>,
    worker_id: Option<String>,
    extra_root_certs: Option<Vec<PathBuf>>,
    log_json: Option<bool>,
    log: Option<String>,
}

/// The worker's resolved settings. Tests build it with [`Config::new`] and
/// adjust fields; the binary uses [`Config::from_env_and_args`].
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub allow_private_targets: bool,
    pub metrics_addr: Option<SocketAddr>,
    pub max_in_flight: usize,
    pub endpoint_max_in_flight: u32,
    pub fast_in_flight: usize,
    pub tenant_max_in_flight: u32,
    pub claim_max_bytes: u64,
    pub poll_interval: Duration,
    pub shutdown_timeout: Duration,
    pub disable_after_failures: u32,
    pub disable_after: Duration,
    pub batch_size: usize,
    pub lease: Duration,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub db_pool_size: usize,
    pub worker_id: String,
    pub extra_root_certs: Vec<PathBuf>,
    pub log_json: bool,
    pub log: String,
    /// Name resolution; tests substitute their own.
    pub resolver: Arc<dyn Resolve>,
    /// Extra trusted roots given in code (tests' CAs), beside `extra_root_certs`.
    pub root_certificates: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may hold a password: show only where it points.
        let db = crate::db::parse(&self.database_url)
            .map(|(c, tls)| format!("{:?}/{:?} {:?}", c.get_hosts(), c.get_dbname(), tls.mode))
            .unwrap_or_else(|_| "(unparsable)".into());
        f.debug_struct("Config")
            .field("database", &db)
            .field("allow_private_targets", &self.allow_private_targets)
            .field("metrics_addr", &self.metrics_addr)
            .field("max_in_flight", &self.max_in_flight)
            .field("endpoint_max_in_flight", &self.endpoint_max_in_flight)
            .field("fast_in_flight", &self.fast_in_flight)
            .field("tenant_max_in_flight", &self.tenant_max_in_flight)
            .field("claim_max_bytes", &self.claim_max_bytes)
            .field("poll_interval", &self.poll_interval)
            .field("lease", &self.lease)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

/// High enough that endpoints which hang (each holding at most its own
/// limit) leave room for the healthy ones; the per-endpoint limit keeps the
/// active concurrency per receiver low.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
pub const DEFAULT_ENDPOINT_MAX_IN_FLIGHT: u32 = 16;
/// Measured on a 2-core machine: past ~64 requests in flight, each one
/// costs more CPU (worker and receiver alike) without raising throughput.
pub const DEFAULT_FAST_IN_FLIGHT: usize = 64;
/// A quarter of the default worker-wide limit: a tenant whose endpoints all
/// hang holds at most this many slots, so three more such tenants still
/// leave the rest, and one tenant alone keeps four endpoints at their full
/// default limit (16) busy at once.
pub const DEFAULT_TENANT_MAX_IN_FLIGHT: u32 = 64;
/// Payload bytes one claim brings into memory: 500 rows of typical payloads
/// (a few kB) fit many times over, while 500 rows at the 256 kB payload limit
/// (128 MB) do not.
pub const DEFAULT_CLAIM_MAX_BYTES: u64 = 16 << 20;

impl Config {
    /// Defaults for everything but the database.
    pub fn new(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            allow_private_targets: false,
            metrics_addr: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            endpoint_max_in_flight: DEFAULT_ENDPOINT_MAX_IN_FLIGHT,
            fast_in_flight: DEFAULT_FAST_IN_FLIGHT,
            tenant_max_in_flight: DEFAULT_TENANT_MAX_IN_FLIGHT,
            claim_max_bytes: DEFAULT_CLAIM_MAX_BYTES,
            poll_interval: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(30),
            disable_after_failures: 20,
            disable_after: Duration::from_secs(24 * 3600),
            batch_size: 500,
            lease: Duration::from_secs(180),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            db_pool_size: 4,
            worker_id: default_worker_id(),
            extra_root_certs: Vec::new(),
            log_json: false,
            log: "info".into(),
            resolver: Arc::new(SystemResolver),
            root_certificates: Vec::new(),
        }
    }

    /// Flags (already parsed), then the environment, then the TOML file.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Toml {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let file_duration =
            |name: &'static str, v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
                v.as_deref()
                    .map(|s| parse_duration(s).map_err(|e| invalid(name, e, s)))
                    .transpose()
            };
        let database_url = cli
            .database_url
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty()))
            .or(file.database_url)
            .ok_or(ConfigError::NoDatabase)?;
        let mut c = Config::new(database_url);
        macro_rules! pick {
            ($field:ident) => {
                if let Some(v) = cli.$field.or(file.$field) {
                    c.$field = v;
                }
            };
        }
        pick!(allow_private_targets);
        pick!(max_in_flight);
        pick!(endpoint_max_in_flight);
        pick!(fast_in_flight);
        pick!(tenant_max_in_flight);
        pick!(disable_after_failures);
        pick!(batch_size);
        pick!(db_pool_size);
        pick!(worker_id);
        pick!(extra_root_certs);
        pick!(log_json);
        pick!(log);
        c.metrics_addr = cli.metrics_addr.or(file.metrics_addr);
        let file_bytes = file
            .claim_max_bytes
            .as_deref()
            .map(|s| parse_bytes(s).map_err(|e| invalid("claim_max_bytes", e, s)))
            .transpose()?;
        if let Some(v) = cli.claim_max_bytes.or(file_bytes) {
            c.claim_max_bytes = v;
        }
        macro_rules! pick_duration {
            ($field:ident, $name:literal) => {
                if let Some(v) = cli.$field.or(file_duration($name, &file.$field)?) {
                    c.$field = v;
                }
            };
        }
        pick_duration!(poll_interval, "poll_interval");
        pick_duration!(shutdown_timeout, "shutdown_timeout");
        pick_duration!(disable_after, "disable_after");
        pick_duration!(lease, "lease");
        pick_duration!(request_timeout, "request_timeout");
        pick_duration!(connect_timeout, "connect_timeout");
        c.validate()?;
        Ok(c)
    }

    /// Checks every setting; `run` calls it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| format!("{}", humantime::format_duration(d));
        // The TLS settings too (sslrootcert is read here): a bad one is a
        // configuration error at start-up, not a failing reconnect later.
        crate::db::parse(&self.database_url)
            .and_then(|(_, tls)| crate::db::connector(&tls).map(drop))
            .map_err(|e| invalid("POSTBOX_DATABASE_URL", e.to_string(), "(hidden)"))?;
        if !(1..=10_000).contains(&self.max_in_flight) {
            return Err(invalid(
                "POSTBOX_MAX_IN_FLIGHT",
                "must be from 1 to 10000",
                self.max_in_flight,
            ));
        }
        if !(1..=10_000).contains(&self.fast_in_flight) {
            return Err(invalid(
                "POSTBOX_FAST_IN_FLIGHT",
                "must be from 1 to 10000",
                self.fast_in_flight,
            ));
        }
        if !(1..=10_000).contains(&self.tenant_max_in_flight) {
            return Err(invalid(
                "POSTBOX_TENANT_MAX_IN_FLIGHT",
                "must be from 1 to 10000",
                self.tenant_max_in_flight,
            ));
        }
        if !((1 << 10)..=(1 << 30)).contains(&self.claim_max_bytes) {
            return Err(invalid(
                "POSTBOX_CLAIM_MAX_BYTES",
                "must be from 1KiB to 1GiB",
                self.claim_max_bytes,
            ));
        }
        if !(1..=1_000).contains(&self.endpoint_max_in_flight) {
            return Err(invalid(
                "POSTBOX_ENDPOINT_MAX_IN_FLIGHT",
                "must be from 1 to 1000",
                self.endpoint_max_in_flight,
            ));
        }
        if self.poll_interval < Duration::from_millis(10)
            || self.poll_interval > Duration::from_secs(3600)
        {
            return Err(invalid(
                "POSTBOX_POLL_INTERVAL",
                "must be from 10ms to 1h",
                ms(self.poll_interval),
            ));
        }
        if self.shutdown_timeout > Duration::from_secs(3600) {
            return Err(invalid(
                "POSTBOX_SHUTDOWN_TIMEOUT",
                "must be at most 1h",
                ms(self.shutdown_timeout),
            ));
        }
        if self.disable_after_failures == 0 {
            return Err(invalid(
                "POSTBOX_DISABLE_AFTER_FAILURES",
                "must be at least 1",
                0,
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(invalid(
                "POSTBOX_BATCH_SIZE",
                "must be from 1 to 10000",
                self.batch_size,
            ));
        }
        if !(1..=64).contains(&self.db_pool_size) {
            return Err(invalid(
                "POSTBOX_DB_POOL_SIZE",
                "must be from 1 to 64",
                self.db_pool_size,
            ));
        }
        if self.request_timeout < Duration::from_millis(100)
            || self.request_timeout > Duration::from_secs(120)
        {
            return Err(invalid(
                "POSTBOX_REQUEST_TIMEOUT",
                "must be from 100ms to 120s",
                ms(self.request_timeout),
            ));
        }
        if self.connect_timeout < Duration::from_millis(100)
            || self.connect_timeout > self.request_timeout
        {
            return Err(invalid(
                "POSTBOX_CONNECT_TIMEOUT",
                "must be at least 100ms and at most POSTBOX_REQUEST_TIMEOUT",
                ms(self.connect_timeout),
            ));
        }
        // The lease must outlast every request, so a live worker's claim never
        // runs out mid-request (endpoint timeouts are capped below it too).
        if self.lease < self.request_timeout + Duration::from_secs(1) {
            return Err(invalid(
                "POSTBOX_LEASE",
                format!(
                    "must exceed POSTBOX_REQUEST_TIMEOUT ({}) by at least 1s",
                    ms(self.request_timeout)
                ),
                ms(self.lease),
            ));
        }
        if self.worker_id.is_empty() || self.worker_id.len() > 200 {
            return Err(invalid(
                "POSTBOX_WORKER_ID",
                "must be 1 to 200 characters",
                &self.worker_id,
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| {
            invalid(
                "POSTBOX_LOG",
                format!("not a valid log filter ({e})"),
                &self.log,
            )
        })?;
        for path in &self.extra_root_certs {
            let pem = std::fs::read(path).map_err(|e| {
                invalid(
                    "POSTBOX_EXTRA_ROOT_CERTS",
                    format!("cannot read ({e})"),
                    path.display(),
                )
            })?;
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                invalid(
                    "POSTBOX_EXTRA_ROOT_CERTS",
                    format!("not PEM certificates ({e})"),
                    path.display(),
                )
            })?;
        }
        Ok(())
    }

    /// The tenant limit in force: never above the worker-wide limit.
    pub fn tenant_cap(&self) -> u32 {
        self.tenant_max_in_flight
            .min(self.max_in_flight.min(u32::MAX as usize) as u32)
    }

    /// The longest a request may take: the lease minus a margin for the acknowledgement.
    pub fn max_request_time(&self) -> Duration {
        self.lease - Duration::from_secs(1)
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("postbox-worker").chain(args.iter().copied()))
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("postbox-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("worker.toml");
        std::fs::write(
            &file,
            "database_url = 'postgres://db/x'\npoll_interval = '5s'\nmax_in_flight = 10\n",
        )
        .unwrap();
        let c = Config::from_cli(
            cli(&["--config", file.to_str().unwrap(), "--max-in-flight", "20"]).unwrap(),
        )
        .unwrap();
        assert_eq!(c.max_in_flight, 20);
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        assert_eq!(c.database_url, "postgres://db/x");
        assert_eq!(c.disable_after_failures, 20);
        assert_eq!(c.disable_after, Duration::from_secs(86400));
        std::fs::write(
            &file,
            "database_url = 'postgres://db/x'\npoll_intervall = '5s'\n",
        )
        .unwrap();
        let e = Config::from_cli(cli(&["--config", file.to_str().unwrap()]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    /// Every setting the example file shows, uncommented, is valid.
    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../postbox-worker.example.toml");
        let settings: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ")
                    .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            })
            .collect();
        assert!(settings.len() >= 20, "{settings:?}");
        let file: FileConfig = toml::from_str(&settings.join("\n")).unwrap();
        assert_eq!(
            file.tenant_max_in_flight,
            Some(DEFAULT_TENANT_MAX_IN_FLIGHT)
        );
        assert_eq!(
            file.claim_max_bytes.as_deref().map(parse_bytes),
            Some(Ok(DEFAULT_CLAIM_MAX_BYTES))
        );
        let (_, tls) = crate::db::parse(file.database_url.as_deref().unwrap()).unwrap();
        assert_eq!(tls.mode, crate::db::SslMode::VerifyFull);
    }

    #[test]
    fn tenant_limit_and_claim_bytes() {
        let c = Config::from_cli(
            cli(&[
                "--database-url",
                "postgres://db/x",
                "--tenant-max-in-flight",
                "8",
                "--claim-max-bytes",
                "450kB",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!((c.tenant_max_in_flight, c.claim_max_bytes), (8, 450_000));
        assert_eq!(c.tenant_cap(), 8);
        let c = Config::new("postgres://db/x");
        assert_eq!(c.tenant_cap(), 64);
        assert_eq!(c.claim_max_bytes, 16 << 20);
        let mut c = Config::new("postgres://db/x");
        c.max_in_flight = 10;
        assert_eq!(c.tenant_cap(), 10, "never above the worker-wide limit");
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert!(parse_bytes("12 parsecs").is_err());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let base = Config::new("postgres://localhost/x");
        let mut c = base.clone();
        c.max_in_flight = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("POSTBOX_MAX_IN_FLIGHT"));
        let mut c = base.clone();
        c.fast_in_flight = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("POSTBOX_FAST_IN_FLIGHT"));
        let mut c = base.clone();
        c.tenant_max_in_flight = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("POSTBOX_TENANT_MAX_IN_FLIGHT"));
        let mut c = base.clone();
        c.claim_max_bytes = 10;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("POSTBOX_CLAIM_MAX_BYTES"));
        let mut c = base.clone();
        c.database_url = "postgres://u:hunter2@db/x?sslmode=verify-full".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("POSTBOX_DATABASE_URL: sslmode=verify-full needs sslrootcert")
                && !e.contains("hunter2"),
            "{e}"
        );
        let mut c = base.clone();
        c.lease = Duration::from_secs(10);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("must exceed POSTBOX_REQUEST_TIMEOUT"));
        let mut c = base.clone();
        c.connect_timeout = Duration::from_secs(60);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("POSTBOX_CONNECT_TIMEOUT"));
        assert!(cli(&["--poll-interval", "soon"]).is_err());
        assert!(cli(&["--claim-max-bytes", "lots"]).is_err());
        assert!(cli(&["--allow-private-targets", "maybe"]).is_err());
        assert_eq!(
            cli(&["--allow-private-targets", "on"])
                .unwrap()
                .allow_private_targets,
            Some(true)
        );
    }
}
