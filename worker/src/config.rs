//! The worker's settings: flags, then `POSTBOX_*` environment variables,
//! then an optional TOML file, then defaults. Everything is validated
//! before the worker starts; a bad value is a [`ConfigError`] and exit
//! code 2.
//!
//! Each setting is declared once, in the `settings!` table below (the
//! framework is [`postbox_runtime::settings`], shared with the API): its
//! flag, environment variable and help (clap), its TOML key (serde, the
//! same name), its type in [`Config`] and its default. The table makes
//! [`Settings`] (every setting optional: what flags, the environment or the
//! file say), [`Config`] (every setting resolved), and the merge between
//! them. Bounds are checked in [`Config::validate`]; docs/operating.md
//! documents each setting. Adding a setting: a line in the table, a bound if
//! it has one, a row in docs/operating.md.

use crate::resolve::{Resolve, SystemResolver};
use crate::schedule::Limits;
use postbox_rules::options;
pub use postbox_runtime::settings::ConfigError;
use postbox_runtime::settings::{
    invalid, parse_bool, read_file, ByteSize, DatabaseUrl, Humantime, Text,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// High enough that endpoints which hang (each holding at most its own
/// limit) leave room for the healthy ones; the per-endpoint limit keeps the
/// active concurrency per receiver low.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
pub const DEFAULT_ENDPOINT_MAX_IN_FLIGHT: u32 = 16;
/// Measured on a 2-core machine: past ~64 requests in flight, each one
/// costs more CPU (worker and receiver alike) without raising throughput.
pub const DEFAULT_FAST_IN_FLIGHT: usize = 64;
/// An upper bound on top of the share rule (`schedule::tenant_room`: a
/// tenant takes at most half of the free slow slots, 96 of 192 when alone
/// at the defaults), for operators who want a tenant held lower. A quarter
/// of the slots, 64, let five hanging endpoints block a tenant's endpoints
/// whose speed the worker did not know yet (benchmark figure 4 fell from 1.2
/// to 0.85); at the defaults six hanging endpoints still leave room.
pub const DEFAULT_TENANT_MAX_IN_FLIGHT: u32 = 128;
/// Payload bytes one claim brings into memory: 500 rows of typical payloads
/// (a few kB) fit many times over, while 500 rows at the 256 kB payload limit
/// (128 MB) do not.
pub const DEFAULT_CLAIM_MAX_BYTES: u64 = 16 << 20;

/// Purging once a minute keeps tables within about a minute of their
/// retention windows; when nothing has expired a call is a few empty index
/// probes.
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// 10,000 rows of each kind per call: well under a second of work, so no
/// purge holds locks or a snapshot for long.
pub const DEFAULT_PURGE_BATCH: usize = 10_000;
/// Purge interval bounds; 0 (off) is allowed too.
const PURGE_INTERVAL: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));
/// purge's own bounds on max_rows.
const MAX_PURGE_BATCH: usize = 1_000_000;

/// Worker-wide counts (requests in flight, rows per claim): far beyond what
/// one process needs (a 2-core machine saturates at about 64 fast requests);
/// the bound catches typos, not tuning.
const MAX_COUNT: usize = 10_000;
/// Bytes per claim: at least one small payload's worth, at most a memory
/// budget no worker should need.
const CLAIM_BYTES: (u64, u64) = (1 << 10, 1 << 30);
/// The poll: often enough to matter, and a missed NOTIFY waits at most an hour.
const POLL_INTERVAL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(3600));
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Connections for claims and acknowledgements: a few are plenty (one
/// claims, one acknowledges, the metrics and the flag share the rest).
const MAX_DB_POOL: usize = 64;
/// The lease outlasts the longest request by this much, for its acknowledgement.
pub const LEASE_MARGIN: Duration = Duration::from_secs(1);
const MAX_WORKER_ID: usize = 200;

postbox_runtime::settings! {
    extra {
        /// Name resolution; tests substitute their own.
        resolver: Arc<dyn Resolve> = Arc::new(SystemResolver);
        /// Extra trusted roots given in code (tests' CAs), beside `extra_root_certs`.
        root_certificates: Vec<reqwest::Certificate> = Vec::new();
    }
    /// PostgreSQL connection string; falls back to DATABASE_URL.
    #[arg(long, env = "POSTBOX_DATABASE_URL", hide_env_values = true)]
    database_url: DatabaseUrl = DatabaseUrl::default();
    /// Development only: deliver to private, loopback and link-local addresses, and over http.
    #[arg(long, env = "POSTBOX_ALLOW_PRIVATE_TARGETS", value_parser = parse_bool)]
    allow_private_targets: bool = false;
    /// Address for /metrics and /healthz, e.g. 127.0.0.1:9187.
    #[arg(long, env = "POSTBOX_METRICS_ADDR")]
    metrics_addr: SocketAddr => Option<SocketAddr> = None;
    /// Requests in flight at once, all endpoints together.
    #[arg(long, env = "POSTBOX_MAX_IN_FLIGHT")]
    max_in_flight: usize = DEFAULT_MAX_IN_FLIGHT;
    /// Requests in flight per endpoint and worker process, unless the endpoint's max_in_flight option says otherwise.
    #[arg(long, env = "POSTBOX_ENDPOINT_MAX_IN_FLIGHT")]
    endpoint_max_in_flight: u32 = DEFAULT_ENDPOINT_MAX_IN_FLIGHT;
    /// Requests in flight at once to endpoints that answer fast (the ones that cost CPU).
    #[arg(long, env = "POSTBOX_FAST_IN_FLIGHT")]
    fast_in_flight: usize = DEFAULT_FAST_IN_FLIGHT;
    /// Most requests in flight per tenant (all its endpoints that are not fast) in this process; a tenant also never takes more than half of the free slots.
    #[arg(long, env = "POSTBOX_TENANT_MAX_IN_FLIGHT")]
    tenant_max_in_flight: u32 = DEFAULT_TENANT_MAX_IN_FLIGHT;
    /// Most payload bytes claimed at once (one delivery always goes out), e.g. 16MiB.
    #[arg(long, env = "POSTBOX_CLAIM_MAX_BYTES")]
    claim_max_bytes: Text<ByteSize> => u64 = DEFAULT_CLAIM_MAX_BYTES;
    /// Longest wait between looks at the outbox when no NOTIFY arrives.
    #[arg(long, env = "POSTBOX_POLL_INTERVAL")]
    poll_interval: Text<Humantime> => Duration = Duration::from_secs(2);
    /// How long SIGTERM waits for in-flight requests before releasing them.
    #[arg(long, env = "POSTBOX_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Text<Humantime> => Duration = Duration::from_secs(30);
    /// Consecutive failed attempts before an endpoint is disabled (with POSTBOX_DISABLE_AFTER).
    #[arg(long, env = "POSTBOX_DISABLE_AFTER_FAILURES")]
    disable_after_failures: u32 = 20;
    /// How long an endpoint must have been failing before it is disabled.
    #[arg(long, env = "POSTBOX_DISABLE_AFTER")]
    disable_after: Text<Humantime> => Duration = Duration::from_secs(24 * 3600);
    /// Most deliveries claimed in one statement.
    #[arg(long, env = "POSTBOX_BATCH_SIZE")]
    batch_size: usize = 500;
    /// How long a claim is held; a crashed worker's claims are retaken after it.
    #[arg(long, env = "POSTBOX_LEASE")]
    lease: Text<Humantime> => Duration = Duration::from_secs(180);
    /// Default total request timeout (an endpoint's timeout_ms overrides it).
    #[arg(long, env = "POSTBOX_REQUEST_TIMEOUT")]
    request_timeout: Text<Humantime> => Duration = Duration::from_secs(15);
    /// Default connect timeout (an endpoint's connect_timeout_ms overrides it).
    #[arg(long, env = "POSTBOX_CONNECT_TIMEOUT")]
    connect_timeout: Text<Humantime> => Duration = Duration::from_secs(5);
    /// How often to delete rows past their retention (postbox.purge); 0 turns it off.
    #[arg(long, env = "POSTBOX_PURGE_INTERVAL")]
    purge_interval: Text<Humantime> => Duration = DEFAULT_PURGE_INTERVAL;
    /// Most rows of each kind one purge call deletes (one short transaction).
    #[arg(long, env = "POSTBOX_PURGE_BATCH")]
    purge_batch: usize = DEFAULT_PURGE_BATCH;
    /// Database connections for claims and acknowledgements.
    #[arg(long, env = "POSTBOX_DB_POOL_SIZE")]
    db_pool_size: usize = 4;
    /// Name recorded on claims, unique to each running worker; defaults to host name, process id and a random part.
    #[arg(long, env = "POSTBOX_WORKER_ID")]
    worker_id: String = default_worker_id();
    /// Offer HTTP/2 to HTTPS receivers (ALPN): a receiver that accepts it gets all requests on one connection. Off by default: not faster here (docs/measurements.md), and one connection reaches one backend behind a TCP load balancer.
    #[arg(long, env = "POSTBOX_HTTP2", value_parser = parse_bool)]
    http2: bool = false;
    /// PEM files with extra root certificates to trust, comma-separated.
    #[arg(long, env = "POSTBOX_EXTRA_ROOT_CERTS", value_delimiter = ',')]
    extra_root_certs: Vec<PathBuf> = Vec::new();
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "POSTBOX_LOG_JSON", value_parser = parse_bool)]
    log_json: bool = false;
    /// Log filter, e.g. info or postbox_worker=debug.
    #[arg(long, env = "POSTBOX_LOG")]
    log: String = "info".into();
}

/// Command-line flags; each falls back to its environment variable.
#[derive(clap::Parser, Debug, Default)]
#[command(
    name = "postbox-worker",
    version,
    about = "Delivers postbox webhooks from the PostgreSQL outbox."
)]
pub struct Cli {
    /// TOML file with any of the settings below (lowest precedence).
    #[arg(long, env = "POSTBOX_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of delivering.
#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Validate the configuration, connect, and check the extension's
    /// version, the role's privileges and name resolution; exit 0 when all
    /// is well, else print each problem and exit 2.
    Check,
}

/// What `run` needs from the configuration's files, read once.
pub struct Prepared {
    pub pg: tokio_postgres::Config,
    pub tls: postbox_runtime::tls::MakeRustls,
    /// `root_certificates` and those in `extra_root_certs`.
    pub roots: Vec<reqwest::Certificate>,
}

impl Config {
    /// Defaults for everything but the database.
    pub fn new(database_url: impl Into<DatabaseUrl>) -> Config {
        Config {
            database_url: database_url.into(),
            ..Config::defaults()
        }
    }

    /// Flags (already parsed, with the environment), then the TOML file,
    /// then defaults; validated.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file::<Settings>(path)?,
            None => Settings::default(),
        };
        let mut given = cli.settings;
        if given.database_url.is_none() {
            given.database_url = std::env::var("DATABASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .map(DatabaseUrl::from);
        }
        let given = given.or(file);
        if given.database_url.is_none() {
            return Err(ConfigError::NoDatabase);
        }
        let mut c = Config::defaults();
        c.apply(given)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks every setting (reading no file: [`Config::prepare`] does).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let text = |d: Duration| humantime::format_duration(d).to_string();
        let count = |name, n: usize, hi: usize| {
            if (1..=hi).contains(&n) {
                Ok(())
            } else {
                Err(invalid(name, format!("must be from 1 to {hi}"), n))
            }
        };
        postbox_runtime::conninfo::parse(self.database_url.as_str()).map_err(db_invalid)?;
        count("POSTBOX_MAX_IN_FLIGHT", self.max_in_flight, MAX_COUNT)?;
        count("POSTBOX_FAST_IN_FLIGHT", self.fast_in_flight, MAX_COUNT)?;
        count(
            "POSTBOX_TENANT_MAX_IN_FLIGHT",
            self.tenant_max_in_flight as usize,
            MAX_COUNT,
        )?;
        if !(CLAIM_BYTES.0..=CLAIM_BYTES.1).contains(&self.claim_max_bytes) {
            return Err(invalid(
                "POSTBOX_CLAIM_MAX_BYTES",
                "must be from 1KiB to 1GiB",
                self.claim_max_bytes,
            ));
        }
        // The same bounds as an endpoint's max_in_flight option.
        let (lo, hi) = options::MAX_IN_FLIGHT;
        if !(lo..=hi).contains(&(self.endpoint_max_in_flight as u64)) {
            return Err(invalid(
                "POSTBOX_ENDPOINT_MAX_IN_FLIGHT",
                format!("must be from {lo} to {hi}"),
                self.endpoint_max_in_flight,
            ));
        }
        if !(POLL_INTERVAL.0..=POLL_INTERVAL.1).contains(&self.poll_interval) {
            return Err(invalid(
                "POSTBOX_POLL_INTERVAL",
                format!(
                    "must be from {} to {}",
                    text(POLL_INTERVAL.0),
                    text(POLL_INTERVAL.1)
                ),
                text(self.poll_interval),
            ));
        }
        if self.shutdown_timeout > MAX_SHUTDOWN_TIMEOUT {
            return Err(invalid(
                "POSTBOX_SHUTDOWN_TIMEOUT",
                format!("must be at most {}", text(MAX_SHUTDOWN_TIMEOUT)),
                text(self.shutdown_timeout),
            ));
        }
        if self.disable_after_failures == 0 {
            return Err(invalid(
                "POSTBOX_DISABLE_AFTER_FAILURES",
                "must be at least 1",
                0,
            ));
        }
        count("POSTBOX_BATCH_SIZE", self.batch_size, MAX_COUNT)?;
        count("POSTBOX_PURGE_BATCH", self.purge_batch, MAX_PURGE_BATCH)?;
        if !self.purge_interval.is_zero()
            && !(PURGE_INTERVAL.0..=PURGE_INTERVAL.1).contains(&self.purge_interval)
        {
            return Err(invalid(
                "POSTBOX_PURGE_INTERVAL",
                format!(
                    "must be 0 (off) or from {} to {}",
                    text(PURGE_INTERVAL.0),
                    text(PURGE_INTERVAL.1)
                ),
                text(self.purge_interval),
            ));
        }
        count("POSTBOX_DB_POOL_SIZE", self.db_pool_size, MAX_DB_POOL)?;
        // The same bounds as an endpoint's timeout_ms and connect_timeout_ms.
        let (lo, hi) = options::TIMEOUT_MS;
        let (lo, hi) = (Duration::from_millis(lo), Duration::from_millis(hi));
        if !(lo..=hi).contains(&self.request_timeout) {
            return Err(invalid(
                "POSTBOX_REQUEST_TIMEOUT",
                format!("must be from {}ms to {}s", lo.as_millis(), hi.as_secs()),
                text(self.request_timeout),
            ));
        }
        let lo = Duration::from_millis(options::CONNECT_TIMEOUT_MS.0);
        if self.connect_timeout < lo || self.connect_timeout > self.request_timeout {
            return Err(invalid(
                "POSTBOX_CONNECT_TIMEOUT",
                format!(
                    "must be at least {}ms and at most POSTBOX_REQUEST_TIMEOUT",
                    lo.as_millis()
                ),
                text(self.connect_timeout),
            ));
        }
        // The lease must outlast every request, so a live worker's claim never
        // runs out mid-request (endpoint timeouts are capped below it too).
        if self.lease < self.request_timeout + LEASE_MARGIN {
            return Err(invalid(
                "POSTBOX_LEASE",
                format!(
                    "must exceed POSTBOX_REQUEST_TIMEOUT ({}) by at least {}",
                    text(self.request_timeout),
                    text(LEASE_MARGIN)
                ),
                text(self.lease),
            ));
        }
        if self.worker_id.is_empty() || self.worker_id.len() > MAX_WORKER_ID {
            return Err(invalid(
                "POSTBOX_WORKER_ID",
                format!("must be 1 to {MAX_WORKER_ID} characters"),
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
        Ok(())
    }

    /// Validates, then reads what the settings point at, once: the
    /// database's CA (`sslrootcert`) and `extra_root_certs`. A bad file is a
    /// configuration error at start-up, not a failing reconnect later.
    pub fn prepare(&self) -> Result<Prepared, ConfigError> {
        self.validate()?;
        let (pg, tls) =
            postbox_runtime::conninfo::parse(self.database_url.as_str()).map_err(db_invalid)?;
        let tls = postbox_runtime::tls::connector(&tls).map_err(db_invalid)?;
        let mut roots = self.root_certificates.clone();
        for path in &self.extra_root_certs {
            let pem = std::fs::read(path).map_err(|e| {
                invalid(
                    "POSTBOX_EXTRA_ROOT_CERTS",
                    format!("cannot read ({e})"),
                    path.display(),
                )
            })?;
            roots.extend(reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                invalid(
                    "POSTBOX_EXTRA_ROOT_CERTS",
                    format!("not PEM certificates ({e})"),
                    path.display(),
                )
            })?);
        }
        Ok(Prepared { pg, tls, roots })
    }

    /// The tenant limit in force: never above the worker-wide limit.
    pub fn tenant_cap(&self) -> u32 {
        self.tenant_max_in_flight
            .min(self.max_in_flight.min(u32::MAX as usize) as u32)
    }

    /// The longest a request may take: the lease minus a margin for the acknowledgement.
    pub fn max_request_time(&self) -> Duration {
        self.lease - LEASE_MARGIN
    }

    /// The scheduling policy's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_in_flight: self.max_in_flight,
            endpoint_max_in_flight: self.endpoint_max_in_flight,
            tenant_max_in_flight: self.tenant_cap(),
            fast_in_flight: self.fast_in_flight,
            batch_size: self.batch_size,
            claim_max_bytes: self.claim_max_bytes,
        }
    }
}

/// A bad connection string or TLS file; never shows the string (it may
/// hold a password).
fn db_invalid(e: postbox_runtime::conninfo::DbError) -> ConfigError {
    invalid("POSTBOX_DATABASE_URL", e.to_string(), "(hidden)")
}

/// Host name, process id and a random part: containers that run as pid 1
/// on the host's network share the first two, and two live processes must
/// never share an id (the heartbeat refuses the second).
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("postbox-worker").chain(args.iter().copied()))
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("postbox-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn flags_override_the_file() {
        let file = temp_file(
            "worker.toml",
            "database_url = 'postgres://db/x'\npoll_interval = '5s'\nmax_in_flight = 10\n",
        );
        let c = Config::from_cli(
            cli(&["--config", file.to_str().unwrap(), "--max-in-flight", "20"]).unwrap(),
        )
        .unwrap();
        assert_eq!(c.max_in_flight, 20);
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        assert_eq!(c.database_url.as_str(), "postgres://db/x");
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
        let file: Settings = toml::from_str(&settings.join("\n")).unwrap();
        assert_eq!(
            file.tenant_max_in_flight,
            Some(DEFAULT_TENANT_MAX_IN_FLIGHT)
        );
        assert_eq!(
            file.claim_max_bytes.as_ref().map(|t| t.value().copied()),
            Some(Ok(DEFAULT_CLAIM_MAX_BYTES))
        );
        // Each shows its default (database_url and the optional ones aside).
        let mut c = Config::defaults();
        c.apply(file.clone()).unwrap();
        // Those with no default (or an example instead of it) aside, the
        // example file shows the defaults.
        let d = Config::defaults();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(c.worker_id, "worker-a");
        assert_eq!(
            c.extra_root_certs,
            [PathBuf::from("/etc/postbox/internal-ca.pem")]
        );
        c.database_url = d.database_url.clone();
        c.metrics_addr = d.metrics_addr;
        c.worker_id = d.worker_id.clone();
        c.extra_root_certs = d.extra_root_certs.clone();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        let (_, tls) = postbox_runtime::conninfo::parse(
            file.database_url.as_ref().map(DatabaseUrl::as_str).unwrap(),
        )
        .unwrap();
        assert_eq!(tls.mode, postbox_runtime::conninfo::SslMode::VerifyFull);
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
        assert_eq!(c.tenant_cap(), 128);
        assert_eq!(c.claim_max_bytes, 16 << 20);
        let mut c = Config::new("postgres://db/x");
        c.max_in_flight = 10;
        assert_eq!(c.tenant_cap(), 10, "never above the worker-wide limit");
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
                .settings
                .allow_private_targets,
            Some(true)
        );
    }

    /// The documented defaults, as literals: a changed default must be a
    /// deliberate change here and in docs/operating.md.
    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::new("postgres://db/x");
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.endpoint_max_in_flight, 16);
        assert_eq!(c.fast_in_flight, 64);
        assert_eq!(c.tenant_max_in_flight, 128);
        assert_eq!(c.claim_max_bytes, 16 * 1024 * 1024);
        assert_eq!(c.poll_interval, Duration::from_secs(2));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.disable_after_failures, 20);
        assert_eq!(c.disable_after, Duration::from_secs(24 * 3600));
        assert_eq!(c.batch_size, 500);
        assert!(!c.http2);
        assert_eq!(c.lease, Duration::from_secs(180));
        assert_eq!(c.request_timeout, Duration::from_secs(15));
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.db_pool_size, 4);
        assert_eq!(c.metrics_addr, None);
        assert!(!c.allow_private_targets && !c.log_json);
        assert_eq!(c.log, "info");
        assert!(c.extra_root_certs.is_empty());
        let pid = format!("-{}-", std::process::id());
        let (_, random) = c.worker_id.split_once(&pid).expect("host-pid-random");
        assert!(
            random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            c.worker_id
        );
        assert_ne!(
            c.worker_id,
            Config::new("postgres://db/x").worker_id,
            "two configurations in one process get different ids"
        );
        c.validate().unwrap();
    }

    /// Every setting has its flag (and so its POSTBOX_ variable) and its TOML key.
    #[test]
    fn every_setting_has_a_flag_and_a_key() {
        let file = temp_file(
            "all.toml",
            "database_url = 'postgres://db/file'\nallow_private_targets = true\n\
             metrics_addr = '127.0.0.1:9999'\nmax_in_flight = 100\nendpoint_max_in_flight = 8\n\
             fast_in_flight = 32\ntenant_max_in_flight = 50\nclaim_max_bytes = '1MiB'\n\
             poll_interval = '1s'\nshutdown_timeout = '10s'\ndisable_after_failures = 5\n\
             disable_after = '1h'\nbatch_size = 100\nlease = '1m'\nrequest_timeout = '10s'\n\
             connect_timeout = '2s'\ndb_pool_size = 2\nworker_id = 'w-file'\n\
             extra_root_certs = []\nlog_json = true\nlog = 'debug'\n",
        );
        let from_file =
            Config::from_cli(cli(&["--config", file.to_str().unwrap()]).unwrap()).unwrap();
        let from_flags = Config::from_cli(
            cli(&[
                "--database-url",
                "postgres://db/file",
                "--allow-private-targets",
                "true",
                "--metrics-addr",
                "127.0.0.1:9999",
                "--max-in-flight",
                "100",
                "--endpoint-max-in-flight",
                "8",
                "--fast-in-flight",
                "32",
                "--tenant-max-in-flight",
                "50",
                "--claim-max-bytes",
                "1MiB",
                "--poll-interval",
                "1s",
                "--shutdown-timeout",
                "10s",
                "--disable-after-failures",
                "5",
                "--disable-after",
                "1h",
                "--batch-size",
                "100",
                "--lease",
                "1m",
                "--request-timeout",
                "10s",
                "--connect-timeout",
                "2s",
                "--db-pool-size",
                "2",
                "--worker-id",
                "w-file",
                "--log-json",
                "true",
                "--log",
                "debug",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            cli(&["--extra-root-certs", "/a.pem,/b.pem"])
                .unwrap()
                .settings
                .extra_root_certs,
            Some(vec![PathBuf::from("/a.pem"), PathBuf::from("/b.pem")]),
            "comma-separated"
        );
        let shown = format!("{from_file:?}");
        assert_eq!(shown, format!("{from_flags:?}"));
        for want in [
            "allow_private_targets: true",
            "metrics_addr: Some(127.0.0.1:9999)",
            "max_in_flight: 100",
            "endpoint_max_in_flight: 8",
            "fast_in_flight: 32",
            "tenant_max_in_flight: 50",
            "claim_max_bytes: 1048576",
            "poll_interval: 1s",
            "shutdown_timeout: 10s",
            "disable_after_failures: 5",
            "disable_after: 3600s",
            "batch_size: 100",
            "lease: 60s",
            "request_timeout: 10s",
            "connect_timeout: 2s",
            "db_pool_size: 2",
            "worker_id: \"w-file\"",
            "log_json: true",
            "log: \"debug\"",
        ] {
            assert!(shown.contains(want), "{want} in {shown}");
        }
    }

    #[test]
    fn bad_values_in_the_file_name_their_setting() {
        for (text, want) in [
            ("poll_interval = 'often'", "poll_interval: "),
            ("lease = '3 fortnights'", "lease: "),
            (
                "claim_max_bytes = 'lots'",
                "claim_max_bytes: expected bytes, e.g. 16MiB, 500kB or 1048576: lots",
            ),
        ] {
            let file = temp_file(
                "bad.toml",
                &format!("database_url = 'postgres://db/x'\n{text}\n"),
            );
            let e = Config::from_cli(cli(&["--config", file.to_str().unwrap()]).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{text}: {e}");
            assert!(matches!(
                Config::from_cli(cli(&["--config", file.to_str().unwrap()]).unwrap()),
                Err(ConfigError::Invalid { .. })
            ));
        }
        // A flag's bad value is clap's error, before the file is read.
        assert!(cli(&["--lease", "3 fortnights"]).is_err());
        // A type error in the file is the file's error.
        let file = temp_file("type.toml", "max_in_flight = 'many'\n");
        let e = Config::from_cli(cli(&["--config", file.to_str().unwrap()]).unwrap()).unwrap_err();
        assert!(matches!(e, ConfigError::Toml { .. }), "{e}");
    }

    /// Flags beat the environment, which beats the file. (This test alone
    /// sets POSTBOX_BATCH_SIZE in this process.)
    #[test]
    fn flags_then_environment_then_file() {
        let file = temp_file(
            "order.toml",
            "database_url = 'postgres://db/x'\nbatch_size = 9\n",
        );
        let path = file.to_str().unwrap();
        let batch = |args: &[&str]| Config::from_cli(cli(args).unwrap()).unwrap().batch_size;
        assert_eq!(batch(&["--config", path]), 9);
        std::env::set_var("POSTBOX_BATCH_SIZE", "7");
        assert_eq!(batch(&["--config", path]), 7);
        assert_eq!(batch(&["--config", path, "--batch-size", "5"]), 5);
        std::env::remove_var("POSTBOX_BATCH_SIZE");
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let c = Config::new("postgres://worker:hunter2@db.internal:5432/app?sslmode=require");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("db.internal") && shown.contains("Require"),
            "{shown}"
        );
        let settings = Settings {
            database_url: Some("host=db password=hunter2".into()),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
