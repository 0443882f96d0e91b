//! Which versions of the postbox extension these binaries drive: the one
//! home of that rule. The worker and the API refuse to start on another;
//! `postbox-worker check` reports it.

use crate::error::pg_message;

/// Extension versions the worker and the API can drive.
pub const SUPPORTED_EXTENSION_VERSIONS: &[&str] = &["0.7.0"];

/// Why the database's extension cannot be driven.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error("the postbox extension is not installed in this database (CREATE EXTENSION postbox)")]
    NotInstalled,
    #[error("the postbox extension is version {0}, which this worker does not support (supported: {supported})", supported = SUPPORTED_EXTENSION_VERSIONS.join(", "))]
    Unsupported(String),
    /// The question could not be asked.
    #[error("database: {0}")]
    Db(String),
}

impl ExtensionError {
    /// Errors a change of installation or configuration fixes (exit 2).
    pub fn is_config(&self) -> bool {
        !matches!(self, ExtensionError::Db(_))
    }
}

/// The installed extension's version if it is one these binaries drive,
/// else the error saying why not (not installed, or another version).
pub async fn extension_version(db: &tokio_postgres::Client) -> Result<String, ExtensionError> {
    let version: Option<String> = db
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'postbox'",
            &[],
        )
        .await
        .map_err(|e| ExtensionError::Db(pg_message(&e)))?
        .map(|r| r.get(0));
    match version {
        None => Err(ExtensionError::NotInstalled),
        Some(v) if !SUPPORTED_EXTENSION_VERSIONS.contains(&v.as_str()) => {
            Err(ExtensionError::Unsupported(v))
        }
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_version_is_supported() {
        assert!(SUPPORTED_EXTENSION_VERSIONS.contains(&env!("CARGO_PKG_VERSION")));
        let e = ExtensionError::Unsupported("9.9.9".into()).to_string();
        assert!(
            e.contains("version 9.9.9") && e.contains("supported: 0.7.0"),
            "{e}"
        );
        assert!(ExtensionError::NotInstalled.is_config());
        assert!(!ExtensionError::Db("gone".into()).is_config());
    }
}
