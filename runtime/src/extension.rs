//! Which versions of the postbox extension these binaries drive: the one
//! home of that rule. The worker and the API refuse to start on another;
//! `postbox-worker check` reports it.

use crate::error::pg_message;

/// Extension versions the worker and the API can drive.
pub const SUPPORTED_EXTENSION_VERSIONS: &[&str] = &["0.9.0"];

/// Why the database's extension cannot be driven.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error("postbox is not installed in this database (CREATE EXTENSION postbox, or postbox-sql: docs/managed.md)")]
    NotInstalled,
    #[error("postbox is version {0}, which this build of postbox does not support (supported: {supported})", supported = SUPPORTED_EXTENSION_VERSIONS.join(", "))]
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

/// How postbox is installed in a database. The worker and the API drive
/// both flavours the same way; `postbox-worker check` reports which it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The compiled extension (`CREATE EXTENSION postbox`, Rust inside).
    Extension,
    /// postbox-sql installed as a pg_tle extension (managed services).
    SqlTle,
    /// postbox-sql installed with `psql -f` (no pg_extension row).
    Sql,
}

impl Flavour {
    /// How `check` and the logs name it.
    pub fn describe(self) -> &'static str {
        match self {
            Flavour::Extension => "the compiled extension",
            Flavour::SqlTle => "postbox-sql (SQL only), installed through pg_tle",
            Flavour::Sql => "postbox-sql (SQL only), installed with psql",
        }
    }
}

/// What is installed: its flavour and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub flavour: Flavour,
    pub version: String,
}

/// Reads the flavour from the catalog, which every role may read (a role
/// without postbox's grants gets its answer too, for `check`): the language
/// of `validate_url` (C in the compiled extension), the pg_extension row
/// (an extension, or pg_tle's), and, without one, the version the SQL
/// install's `_sql_flavour_version()` returns, read from its definition.
const INSTALLED: &str = "
SELECT (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'postbox'),
       (SELECT l.lanname::text
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE n.nspname = 'postbox' AND p.proname = 'validate_url' AND p.pronargs = 1),
       (SELECT pg_catalog.substring(p.prosrc, '''([^'']+)''')
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'postbox' AND p.proname = '_sql_flavour_version' AND p.pronargs = 0)";

/// What is installed, if these binaries drive it; else why not (not
/// installed, or a version they do not support).
pub async fn installed(db: &tokio_postgres::Client) -> Result<Installed, ExtensionError> {
    let row = db
        .query_one(INSTALLED, &[])
        .await
        .map_err(|e| ExtensionError::Db(pg_message(&e)))?;
    let (extversion, language, sql_version): (Option<String>, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    let installed = match (extversion, language, sql_version) {
        (Some(version), Some(l), _) if l == "c" => Installed {
            flavour: Flavour::Extension,
            version,
        },
        (Some(version), Some(_), _) => Installed {
            flavour: Flavour::SqlTle,
            version,
        },
        (None, Some(_), Some(version)) => Installed {
            flavour: Flavour::Sql,
            version,
        },
        // An extension row without the function: an older version, which
        // the version check below names.
        (Some(version), None, _) => Installed {
            flavour: Flavour::Extension,
            version,
        },
        _ => return Err(ExtensionError::NotInstalled),
    };
    if !SUPPORTED_EXTENSION_VERSIONS.contains(&installed.version.as_str()) {
        return Err(ExtensionError::Unsupported(installed.version));
    }
    Ok(installed)
}

/// The installed version if it is one these binaries drive ([`installed`]).
pub async fn extension_version(db: &tokio_postgres::Client) -> Result<String, ExtensionError> {
    installed(db).await.map(|i| i.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_version_is_supported() {
        assert!(SUPPORTED_EXTENSION_VERSIONS.contains(&env!("CARGO_PKG_VERSION")));
        let e = ExtensionError::Unsupported("9.9.9".into()).to_string();
        assert!(
            e.contains("version 9.9.9") && e.contains("supported: 0.9.0"),
            "{e}"
        );
        assert!(ExtensionError::NotInstalled.is_config());
        assert!(!ExtensionError::Db("gone".into()).is_config());
    }
}
