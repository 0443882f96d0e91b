//! The API's database: the pool, and what the API requires of the database
//! before it serves: the extension at a version it drives, a role with
//! `postbox_admin`'s rights and no more, and statement parameters that are
//! not logged (they carry new keys and secrets).

use crate::nodes::Nodes;
use crate::{Config, RunError};
use deadpool_postgres::Pool;
use postbox_runtime::conninfo;
use postbox_runtime::error::{pg_message, pool_message};

/// Connects (a warning when the connection is open to a network attacker),
/// then checks the database; an error says what to change. On a Citus
/// coordinator, also the worker nodes ([`Nodes`]).
pub async fn connect(config: &Config) -> Result<(Pool, Nodes), RunError> {
    if let Some(warning) = conninfo::transport_warning(config.database_url.as_str()) {
        tracing::warn!("{warning}");
    }
    let (mut pg, tls) =
        conninfo::parse(config.database_url.as_str()).map_err(|e| RunError::Db(e.to_string()))?;
    let tls = postbox_runtime::tls::connector(&tls).map_err(|e| RunError::Db(e.to_string()))?;
    pg.application_name("postbox-api");
    let pool = postbox_runtime::pool::pool(pg.clone(), tls.clone(), config.db_pool_size)
        .map_err(|e| RunError::Db(e.to_string()))?;
    let nodes;
    {
        // The API calls the extension's functions: only the version it was built with.
        let db = pool
            .get()
            .await
            .map_err(|e| RunError::Db(pool_message(&e)))?;
        postbox_runtime::extension_version(&db).await?;
        // The API acts with postbox_admin's rights and no more: never as a
        // superuser, which could read every secret.
        let row = db
            .query_one(
                "SELECT rolsuper, pg_has_role(current_user, 'postbox_admin', 'USAGE') FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| RunError::Db(pg_message(&e)))?;
        if row.get::<_, bool>(0) {
            return Err(RunError::Role(
                "the database role is a superuser: connect as a LOGIN role granted postbox_admin",
            ));
        }
        if !row.get::<_, bool>(1) {
            return Err(RunError::Role(
                "the database role is not granted postbox_admin",
            ));
        }
        parameters_unlogged(&db, config.allow_parameter_logging).await?;
        nodes =
            Nodes::discover(&db, &pg, &tls, config.db_pool_size, config.db_wait_timeout).await?;
    }
    Ok((pool, nodes))
}

/// Refuses to start when the database would log the API's statement
/// parameters: new keys, new signing secrets, customers' own secrets and
/// stored Idempotency-Key answers travel as parameters, and PostgreSQL logs
/// them in full with `log_statement = all` or `log_min_duration_statement`
/// unless `log_parameter_max_length` is 0 (and, on errors,
/// `log_parameter_max_length_on_error`). Both are superuser settings, so
/// the message gives the command for a superuser to run.
async fn parameters_unlogged(db: &deadpool_postgres::Object, allow: bool) -> Result<(), RunError> {
    let row = db
        .query_one(
            "SELECT current_setting('log_parameter_max_length')::int,
                    current_setting('log_parameter_max_length_on_error')::int,
                    quote_ident(current_user)",
            &[],
        )
        .await
        .map_err(|e| RunError::Db(pg_message(&e)))?;
    let (normal, on_error, role): (i32, i32, String) = (row.get(0), row.get(1), row.get(2));
    if normal == 0 && on_error == 0 {
        return Ok(());
    }
    if allow {
        tracing::warn!(
            log_parameter_max_length = normal,
            log_parameter_max_length_on_error = on_error,
            "the database may log this API's statement parameters, which carry new keys and secrets (allowed by POSTBOX_API_ALLOW_PARAMETER_LOGGING)"
        );
        return Ok(());
    }
    Err(RunError::Logging(format!(
        "the database may log this API's statement parameters (log_parameter_max_length = {normal}, \
         log_parameter_max_length_on_error = {on_error}), and new keys and secrets travel as parameters: \
         as a superuser, run ALTER ROLE {role} SET log_parameter_max_length = 0; \
         ALTER ROLE {role} SET log_parameter_max_length_on_error = 0; \
         (or start with POSTBOX_API_ALLOW_PARAMETER_LOGGING=true to accept the risk)"
    )))
}
