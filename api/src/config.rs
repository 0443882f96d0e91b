//! Configuration: flags, then `POSTBOX_API_*` environment variables, then
//! an optional TOML file, then defaults, exactly as the worker reads its
//! own (the table below is `postbox_runtime`'s `settings!` macro, which the
//! worker's table uses too). Validated before the API starts; a bad value
//! is exit code 2.

use postbox_runtime::settings::{
    invalid, parse_bool, read_file, ByteSize, ConfigError, DatabaseUrl, Humantime, Text,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Requests per second per key, and the burst: a settings page makes a few
/// requests per view, and a backend emitting events makes many; 100/s with
/// bursts of 200 admits both, and stops a runaway loop within a second.
pub const DEFAULT_RATE_LIMIT: u32 = 100;
pub const DEFAULT_RATE_BURST: u32 = 200;
/// Failed authentications per client address: a person mistyping a key or
/// a tool with a revoked one fails a few times; a scan of made-up keys
/// fails as fast as it can. One a second with bursts of 20 admits the
/// first and stops the second within a second, before the database.
pub const DEFAULT_AUTH_FAILURE_RATE: u32 = 1;
pub const DEFAULT_AUTH_FAILURE_BURST: u32 = 20;
/// Bodies: an event's data may be up to postbox.max_payload_bytes (256 KiB
/// by default), and JSON escaping can double it.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
const MAX_BODY: (u64, u64) = (1 << 10, 64 << 20);
const MAX_DB_POOL: usize = 256;
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3600);
/// A portal session: long enough for a visit, short enough that a
/// forgotten tab does not stay signed in for days.
const PORTAL_SESSION: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(24 * 3600));

postbox_runtime::settings! {
    extra {}
    /// PostgreSQL connection string, as a role granted postbox_admin; falls back to POSTBOX_DATABASE_URL, then DATABASE_URL.
    #[arg(long, env = "POSTBOX_API_DATABASE_URL", hide_env_values = true)]
    database_url: DatabaseUrl = DatabaseUrl::default();
    /// Address the API listens on.
    #[arg(long, env = "POSTBOX_API_LISTEN")]
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
    /// Address for /metrics and /healthz, e.g. 127.0.0.1:9188.
    #[arg(long, env = "POSTBOX_API_METRICS_ADDR")]
    metrics_addr: SocketAddr => Option<SocketAddr> = None;
    /// Database connections.
    #[arg(long, env = "POSTBOX_API_DB_POOL_SIZE")]
    db_pool_size: usize = 16;
    /// How long a request waits for a database connection before a 503.
    #[arg(long, env = "POSTBOX_API_DB_WAIT_TIMEOUT")]
    db_wait_timeout: Text<Humantime> => Duration = Duration::from_secs(5);
    /// Most database connections one tenant's requests hold at once (0: a quarter of the pool, at least 1).
    #[arg(long, env = "POSTBOX_API_DB_PER_TENANT")]
    db_per_tenant: usize = 0;
    /// How long a client may take to send a request's headers.
    #[arg(long, env = "POSTBOX_API_HEADER_TIMEOUT")]
    header_timeout: Text<Humantime> => Duration = Duration::from_secs(10);
    /// How long a client may take to send a request's body.
    #[arg(long, env = "POSTBOX_API_BODY_TIMEOUT")]
    body_timeout: Text<Humantime> => Duration = Duration::from_secs(30);
    /// Failed authentications (unknown or revoked keys) per second per client address; past the burst, keys it has not seen authenticate are refused before the database (0: no limit).
    #[arg(long, env = "POSTBOX_API_AUTH_FAILURE_RATE")]
    auth_failure_rate: u32 = DEFAULT_AUTH_FAILURE_RATE;
    /// Failed authentications a client address may make at once above that rate.
    #[arg(long, env = "POSTBOX_API_AUTH_FAILURE_BURST")]
    auth_failure_burst: u32 = DEFAULT_AUTH_FAILURE_BURST;
    /// Start even if the database logs the API's statement parameters (new keys and secrets travel as parameters).
    #[arg(long, env = "POSTBOX_API_ALLOW_PARAMETER_LOGGING", value_parser = parse_bool)]
    allow_parameter_logging: bool = false;
    /// Largest request body, e.g. 1MiB.
    #[arg(long, env = "POSTBOX_API_MAX_BODY")]
    max_body: Text<ByteSize> => u64 = DEFAULT_MAX_BODY;
    /// Requests per second per API key (0: no limit).
    #[arg(long, env = "POSTBOX_API_RATE_LIMIT")]
    rate_limit: u32 = DEFAULT_RATE_LIMIT;
    /// Requests a key may make at once above its rate.
    #[arg(long, env = "POSTBOX_API_RATE_BURST")]
    rate_burst: u32 = DEFAULT_RATE_BURST;
    /// How long SIGTERM waits for requests in flight.
    #[arg(long, env = "POSTBOX_API_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Text<Humantime> => Duration = Duration::from_secs(30);
    /// The API's address as browsers reach it, for portal links, e.g. https://webhooks.example.com (default: http:// and the listen address).
    #[arg(long, env = "POSTBOX_API_PUBLIC_URL")]
    public_url: String = String::new();
    /// How long a portal session lasts once its link is used.
    #[arg(long, env = "POSTBOX_API_PORTAL_SESSION")]
    portal_session: Text<Humantime> => Duration = Duration::from_secs(3600);
    /// Who may frame the portal: the CSP frame-ancestors sources, e.g. https://app.example.com.
    #[arg(long, env = "POSTBOX_API_PORTAL_FRAME_ANCESTORS")]
    portal_frame_ancestors: String = "'none'".into();
    /// The portal's accent color, #rrggbb.
    #[arg(long, env = "POSTBOX_API_PORTAL_ACCENT")]
    portal_accent: String = "#2563eb".into();
    /// A logo for the portal (SVG or PNG file); default: none.
    #[arg(long, env = "POSTBOX_API_PORTAL_LOGO")]
    portal_logo: String = String::new();
    /// The session cookie's SameSite: lax, strict, or none (for iframes on another site; needs https).
    #[arg(long, env = "POSTBOX_API_PORTAL_SAME_SITE")]
    portal_same_site: String = "lax".into();
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "POSTBOX_API_LOG_JSON", value_parser = parse_bool)]
    log_json: bool = false;
    /// Log filter, e.g. info or postbox_api=debug.
    #[arg(long, env = "POSTBOX_API_LOG")]
    log: String = "info".into();
}

/// Command-line flags; each falls back to its environment variable.
#[derive(clap::Parser, Debug, Default)]
#[command(
    name = "postbox-api",
    version,
    about = "postbox's management HTTP API."
)]
pub struct Cli {
    /// TOML file with any of the settings below (lowest precedence).
    #[arg(long, env = "POSTBOX_API_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Print the OpenAPI document and exit.
    Openapi,
}

/// Whether `url`'s host is loopback: localhost, 127.0.0.0/8 or [::1].
/// Plain http is accepted there only, and the portal's cookie is `Secure`
/// everywhere else (browsers drop `Secure` cookies on plain http).
pub fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url).ok().as_ref().and_then(url::Url::host) {
        Some(url::Host::Domain(d)) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

impl Config {
    /// Defaults for everything but the database.
    pub fn new(database_url: impl Into<DatabaseUrl>) -> Config {
        Config {
            database_url: database_url.into(),
            ..Config::defaults()
        }
    }

    /// Most connections one tenant's requests hold at once.
    pub fn per_tenant(&self) -> usize {
        match self.db_per_tenant {
            0 => self.db_pool_size.div_ceil(4),
            n => n,
        }
    }

    /// The API's address as browsers reach it.
    pub fn public_url(&self) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.public_url.clone()
        }
    }

    /// Flags (with the environment), then the file, then defaults; validated.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file::<Settings>(path)?,
            None => Settings::default(),
        };
        let mut given = cli.settings;
        if given.database_url.is_none() {
            given.database_url = ["POSTBOX_DATABASE_URL", "DATABASE_URL"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        postbox_runtime::conninfo::parse(self.database_url.as_str())
            .map_err(|e| invalid("POSTBOX_API_DATABASE_URL", e.to_string(), "(hidden)"))?;
        if !(1..=MAX_DB_POOL).contains(&self.db_pool_size) {
            return Err(invalid(
                "POSTBOX_API_DB_POOL_SIZE",
                format!("must be from 1 to {MAX_DB_POOL}"),
                self.db_pool_size,
            ));
        }
        if !(MAX_BODY.0..=MAX_BODY.1).contains(&self.max_body) {
            return Err(invalid(
                "POSTBOX_API_MAX_BODY",
                "must be from 1KiB to 64MiB",
                self.max_body,
            ));
        }
        if self.rate_limit > 0 && self.rate_burst == 0 {
            return Err(invalid(
                "POSTBOX_API_RATE_BURST",
                "must be at least 1 when POSTBOX_API_RATE_LIMIT is on",
                0,
            ));
        }
        if self.auth_failure_rate > 0 && self.auth_failure_burst == 0 {
            return Err(invalid(
                "POSTBOX_API_AUTH_FAILURE_BURST",
                "must be at least 1 when POSTBOX_API_AUTH_FAILURE_RATE is on",
                0,
            ));
        }
        if self.db_per_tenant > self.db_pool_size {
            return Err(invalid(
                "POSTBOX_API_DB_PER_TENANT",
                "must be at most POSTBOX_API_DB_POOL_SIZE (0: a quarter of it)",
                self.db_per_tenant,
            ));
        }
        for (name, d) in [
            ("POSTBOX_API_DB_WAIT_TIMEOUT", self.db_wait_timeout),
            ("POSTBOX_API_HEADER_TIMEOUT", self.header_timeout),
            ("POSTBOX_API_BODY_TIMEOUT", self.body_timeout),
        ] {
            if d.is_zero() || d > MAX_SHUTDOWN_TIMEOUT {
                return Err(invalid(
                    name,
                    "must be more than 0 and at most 1h",
                    humantime::format_duration(d),
                ));
            }
        }
        if self.shutdown_timeout > MAX_SHUTDOWN_TIMEOUT {
            return Err(invalid(
                "POSTBOX_API_SHUTDOWN_TIMEOUT",
                "must be at most 1h",
                humantime::format_duration(self.shutdown_timeout),
            ));
        }
        let url = self.public_url();
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.ends_with('/')
            || url.contains(char::is_whitespace)
        {
            return Err(invalid(
                "POSTBOX_API_PUBLIC_URL",
                "must be http(s)://host[:port][/path], without a trailing /",
                &self.public_url,
            ));
        }
        if url.starts_with("http://") && !is_loopback_url(&url) {
            return Err(invalid(
                "POSTBOX_API_PUBLIC_URL",
                "plain http is for development on loopback only: give the https URL browsers reach the API at",
                url,
            ));
        }
        if !(PORTAL_SESSION.0..=PORTAL_SESSION.1).contains(&self.portal_session) {
            return Err(invalid(
                "POSTBOX_API_PORTAL_SESSION",
                "must be from 1m to 24h",
                humantime::format_duration(self.portal_session),
            ));
        }
        let accent = self.portal_accent.as_bytes();
        if accent.len() != 7 || accent[0] != b'#' || !accent[1..].iter().all(u8::is_ascii_hexdigit)
        {
            return Err(invalid(
                "POSTBOX_API_PORTAL_ACCENT",
                "must be a color as #rrggbb",
                &self.portal_accent,
            ));
        }
        if self.portal_frame_ancestors.trim().is_empty()
            || self
                .portal_frame_ancestors
                .contains(|c: char| c == ';' || c == ',' || c.is_control())
        {
            return Err(invalid(
                "POSTBOX_API_PORTAL_FRAME_ANCESTORS",
                "must be CSP sources separated by spaces ('none', 'self', https://app.example.com)",
                &self.portal_frame_ancestors,
            ));
        }
        match self.portal_same_site.as_str() {
            "lax" | "strict" => {}
            "none" if url.starts_with("https://") => {}
            "none" => {
                return Err(invalid(
                    "POSTBOX_API_PORTAL_SAME_SITE",
                    "none needs an https POSTBOX_API_PUBLIC_URL (browsers send SameSite=None cookies only when Secure)",
                    &self.portal_same_site,
                ))
            }
            other => return Err(invalid("POSTBOX_API_PORTAL_SAME_SITE", "must be lax, strict or none", other)),
        }
        tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| {
            invalid(
                "POSTBOX_API_LOG",
                format!("not a valid log filter ({e})"),
                &self.log,
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_then_file_then_defaults() {
        let dir = std::env::temp_dir().join(format!("postbox-api-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api.toml");
        std::fs::write(
            &file,
            "database_url = \"postgres://h/db\"\nrate_limit = 7\nmax_body = \"2MiB\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "postbox-api",
            "--config",
            file.to_str().unwrap(),
            "--rate-limit",
            "9",
        ])
        .unwrap();
        let c = Config::from_cli(cli).unwrap();
        assert_eq!(c.rate_limit, 9, "the flag wins");
        assert_eq!(c.max_body, 2 << 20, "the file's");
        assert_eq!(c.rate_burst, DEFAULT_RATE_BURST, "the default");
        std::fs::write(
            &file,
            "database_url = \"postgres://h/db\"\nmax_body = \"1GiB\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from(["postbox-api", "--config", file.to_str().unwrap()]).unwrap();
        let e = Config::from_cli(cli).unwrap_err().to_string();
        assert!(
            e.starts_with("POSTBOX_API_MAX_BODY: must be from 1KiB to 64MiB"),
            "{e}"
        );
        std::fs::write(&file, "database_url = \"postgres://h/db\"\nrate_limt = 1\n").unwrap();
        let cli = Cli::try_parse_from(["postbox-api", "--config", file.to_str().unwrap()]).unwrap();
        let e = Config::from_cli(cli).unwrap_err().to_string();
        assert!(e.contains("unknown field `rate_limt`"), "{e}");
    }
}
