//! The settings framework both binaries use: each setting declared once in
//! a [`settings!`](crate::settings!) table (flag, environment variable, TOML
//! key, type, default), layered as flags, then environment, then an
//! optional TOML file ([`read_file`]), then defaults; errors name the
//! setting ([`ConfigError`], [`invalid`]).
//!
//! Values written as text ("2s", "16MiB") are [`Text`]: a flag's is parsed
//! by clap at once, a file's when it is resolved, so either error names its
//! setting. Each binary's own table and bounds live in its `config` module.

use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
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

pub fn invalid(
    name: &'static str,
    rule: impl Into<String>,
    value: impl fmt::Display,
) -> ConfigError {
    ConfigError::Invalid {
        name,
        rule: rule.into(),
        value: value.to_string(),
    }
}

/// Durations: "500ms", "2s", "5m", "24h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (use e.g. 500ms, 2s, 5m, 24h)"))
}

/// Bytes: a number with an optional unit (B, kB, KiB, MB, MiB, GB, GiB).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
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

/// Booleans in flags and the environment: 1/0, true/false, yes/no, on/off.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// How a [`Text`] setting is read.
pub trait Parse: Send + Sync + 'static {
    type Out: Clone + Send + Sync + 'static;
    fn parse(s: &str) -> Result<Self::Out, String>;
}

/// [`parse_duration`].
#[derive(Debug)]
pub enum Humantime {}
impl Parse for Humantime {
    type Out = Duration;
    fn parse(s: &str) -> Result<Duration, String> {
        parse_duration(s)
    }
}

/// [`parse_bytes`].
#[derive(Debug)]
pub enum ByteSize {}
impl Parse for ByteSize {
    type Out = u64;
    fn parse(s: &str) -> Result<u64, String> {
        parse_bytes(s)
    }
}

/// A setting written as text, with what it parsed to. From a flag or the
/// environment it is always valid (clap refuses it otherwise); from the
/// file it keeps its error until resolved, which names the setting.
pub struct Text<P: Parse> {
    text: String,
    parsed: Result<P::Out, String>,
    _parse: PhantomData<P>,
}

impl<P: Parse> Text<P> {
    fn new(text: String) -> Text<P> {
        Text {
            parsed: P::parse(&text),
            text,
            _parse: PhantomData,
        }
    }

    /// What it parsed to, if it did.
    pub fn value(&self) -> Result<&P::Out, &str> {
        self.parsed.as_ref().map_err(String::as_str)
    }
}

impl<P: Parse> Clone for Text<P> {
    fn clone(&self) -> Self {
        Text {
            text: self.text.clone(),
            parsed: self.parsed.clone(),
            _parse: PhantomData,
        }
    }
}

impl<P: Parse> fmt::Debug for Text<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl<P: Parse> clap::builder::ValueParserFactory for Text<P> {
    type Parser = fn(&str) -> Result<Text<P>, String>;
    fn value_parser() -> Self::Parser {
        |s| {
            let t = Text::<P>::new(s.to_string());
            t.parsed.clone().map(|_| t)
        }
    }
}

impl<'de, P: Parse> Deserialize<'de> for Text<P> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Text::new)
    }
}

/// The database URL. Its `Debug` shows only where it points: it may hold a
/// password.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(s: String) -> Self {
        DatabaseUrl(s)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(s: &str) -> Self {
        DatabaseUrl(s.to_string())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::conninfo::parse(&self.0) {
            Ok((c, tls)) => write!(f, "{:?}/{:?} {:?}", c.get_hosts(), c.get_dbname(), tls.mode),
            Err(_) => f.write_str("(unparsable)"),
        }
    }
}

/// How a setting's given value becomes its `Config` value (used by
/// [`settings!`](crate::settings)).
pub trait Setting<T> {
    fn resolve(self, name: &'static str) -> Result<T, ConfigError>;
}

macro_rules! as_is {
    ($($t:ty),*) => {$(
        impl Setting<$t> for $t {
            fn resolve(self, _: &'static str) -> Result<$t, ConfigError> {
                Ok(self)
            }
        }
    )*};
}
as_is!(
    usize,
    u32,
    bool,
    String,
    Vec<PathBuf>,
    DatabaseUrl,
    SocketAddr
);

/// Off unless given.
impl Setting<Option<SocketAddr>> for SocketAddr {
    fn resolve(self, _: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
        Ok(Some(self))
    }
}

impl<P: Parse> Setting<P::Out> for Text<P> {
    fn resolve(self, name: &'static str) -> Result<P::Out, ConfigError> {
        self.parsed.map_err(|why| invalid(name, why, self.text))
    }
}

/// The type a setting has in `Config`: the given type, or the one after `=>`.
#[doc(hidden)]
#[macro_export]
macro_rules! config_type {
    ($given:ty) => {
        $given
    };
    ($given:ty, $resolved:ty) => {
        $resolved
    };
}

/// Makes `Settings`, `Config` and the merge from one table, for the worker
/// and the API alike: first `extra { name: Type = default; ... }`, fields of
/// `Config` that are no setting (set in code); then per setting, its docs
/// and clap attributes, `name: GivenType [=> ConfigType] = default;`. The
/// calling crate needs `clap` and `serde` (the derives name them).
#[macro_export]
macro_rules! settings {
    (
        extra { $( $(#[$xattr:meta])* $xname:ident : $xty:ty = $xdefault:expr; )* }
        $(
            $(#[$attr:meta])*
            $name:ident : $given:ty $(=> $resolved:ty)? = $default:expr;
        )*
    ) => {
        /// Every setting, each optional: what the flags and environment say
        /// (clap), or what the file says (serde, the same names).
        #[derive(clap::Args, serde::Deserialize, Debug, Default, Clone)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $( $(#[$attr])* pub $name: Option<$given>, )*
        }

        impl Settings {
            /// These settings, and `lower`'s where these have none.
            pub fn or(self, lower: Settings) -> Settings {
                Settings { $( $name: self.$name.or(lower.$name), )* }
            }
        }

        /// The resolved settings (see [`Settings`] for each). Tests build it
        /// with `Config::new` and adjust fields; the binary uses
        /// `Config::from_cli`.
        #[derive(Clone)]
        pub struct Config {
            $( pub $name: $crate::config_type!($given $(, $resolved)?), )*
            $( $(#[$xattr])* pub $xname: $xty, )*
        }

        impl Config {
            fn defaults() -> Config {
                Config {
                    $( $name: $default, )*
                    $( $xname: $xdefault, )*
                }
            }

            /// Takes every setting `s` gives.
            fn apply(&mut self, s: Settings) -> Result<(), $crate::settings::ConfigError> {
                $( if let Some(v) = s.$name {
                    self.$name = $crate::settings::Setting::resolve(v, stringify!($name))?;
                } )*
                Ok(())
            }
        }

        /// Every setting; the database only as where it points.
        impl ::std::fmt::Debug for Config {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("Config")
                    $( .field(stringify!($name), &self.$name) )*
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Reads a TOML file of settings (lowest precedence).
pub fn read_file<S: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<S, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str::<S>(&text).map_err(|e| ConfigError::Toml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_parse_with_their_units() {
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("450kB"), Ok(450_000));
        assert!(parse_bytes("12 parsecs").is_err());
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_bool("on"), Ok(true));
        assert_eq!(parse_bool(""), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn a_bad_text_value_names_its_setting_when_resolved() {
        let t: Text<Humantime> = Text::new("3 fortnights".into());
        assert!(t.value().is_err());
        let e = Setting::<Duration>::resolve(t, "lease").unwrap_err();
        assert!(e.to_string().starts_with("lease: "), "{e}");
        let t: Text<ByteSize> = Text::new("1KiB".into());
        assert_eq!(t.value(), Ok(&1024));
    }

    #[test]
    fn a_database_url_shows_where_it_points_never_the_password() {
        let url = DatabaseUrl::from("postgres://u:hunter2@db.internal/app?sslmode=require");
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("db.internal") && shown.contains("Require"),
            "{shown}"
        );
        assert_eq!(format!("{:?}", DatabaseUrl::from("host='")), "(unparsable)");
    }
}
