//! postbox-runtime: the plumbing the worker and the API share, so that
//! neither binary depends on the other. Nothing here knows what a delivery
//! or a route is.
//!
//! # Layout
//! - [`settings`]: the settings framework: the [`settings!`] table macro,
//!   layering (flags, environment, TOML file, defaults), text values
//!   (durations, byte sizes), errors that name the setting.
//! - [`conninfo`]: connection strings: `sslmode` and `sslrootcert` as libpq
//!   means them, and the warning for a connection open to an attacker.
//! - [`tls`]: TLS to PostgreSQL over rustls: the connector, the certificate
//!   verifiers, channel binding.
//! - [`pool`]: the connection pool.
//! - [`extension`]: the extension versions these binaries drive, and the check.
//! - [`error`]: error text: causes, PostgreSQL's own message.
//! - [`shutdown`]: signals and the stop flag.
//! - [`process`]: logging and the tokio runtime, before a binary's work.

pub mod conninfo;
pub mod error;
pub mod extension;
pub mod pool;
pub mod process;
pub mod settings;
pub mod shutdown;
pub mod tls;

pub use extension::{
    extension_version, installed, ExtensionError, Flavour, Installed, SUPPORTED_EXTENSION_VERSIONS,
};
pub use process::start_process;
