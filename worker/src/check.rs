//! `postbox-worker check`: is this worker ready to run here? It validates
//! the configuration (before it gets here), connects, and checks the
//! extension's version, the role's privileges and name resolution. Each
//! finding is a line; any problem makes the binary exit 2.

use crate::config::Config;
use crate::resolve::checked_lookup;
use postbox_runtime::error::{pg_message, pool_message};
use std::time::Duration;

/// One finding: fine, a risk to look at (the worker runs anyway), or a
/// problem to fix before running.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    Warning(String),
    Problem(String),
}

/// How long connecting may take before it counts as a problem.
const CONNECT_WAIT: Duration = Duration::from_secs(15);

/// What the worker's statements need (the extension grants all of it to
/// `postbox_worker`): (what, the check in SQL). Several privileges are
/// checked one by one: `has_table_privilege` with a list is true when any
/// one of them is held.
const PRIVILEGES: &[(&str, &str)] = &[
    ("EXECUTE on postbox.expand_events(integer)", "has_function_privilege('postbox.expand_events(integer)', 'EXECUTE')"),
    ("EXECUTE on postbox.purge(integer)", "has_function_privilege('postbox.purge(integer)', 'EXECUTE')"),
    ("EXECUTE on postbox.worker_heartbeat(text, uuid, interval)", "has_function_privilege('postbox.worker_heartbeat(text, uuid, interval)', 'EXECUTE')"),
    ("EXECUTE on postbox.worker_stopped(text, uuid)", "has_function_privilege('postbox.worker_stopped(text, uuid)', 'EXECUTE')"),
    ("SELECT, UPDATE, DELETE on postbox.outbox", "has_table_privilege('postbox.outbox', 'SELECT') AND has_table_privilege('postbox.outbox', 'UPDATE') AND has_table_privilege('postbox.outbox', 'DELETE')"),
    ("SELECT on postbox.events", "has_table_privilege('postbox.events', 'SELECT')"),
    ("SELECT on postbox.emitted", "has_table_privilege('postbox.emitted', 'SELECT')"),
    ("SELECT on postbox.endpoints", "has_table_privilege('postbox.endpoints', 'SELECT')"),
    ("SELECT on postbox.endpoint_secrets", "has_table_privilege('postbox.endpoint_secrets', 'SELECT')"),
    ("INSERT on postbox.attempt_log", "has_table_privilege('postbox.attempt_log', 'INSERT')"),
    ("UPDATE of postbox.endpoints' health columns", "has_column_privilege('postbox.endpoints', 'consecutive_failures', 'UPDATE') AND has_column_privilege('postbox.endpoints', 'disabled_at', 'UPDATE')"),
    ("SELECT, INSERT, UPDATE on postbox.wakeup", "has_table_privilege('postbox.wakeup', 'SELECT') AND has_table_privilege('postbox.wakeup', 'INSERT') AND has_table_privilege('postbox.wakeup', 'UPDATE')"),
    ("SELECT, INSERT, UPDATE, DELETE on postbox.workers", "has_table_privilege('postbox.workers', 'SELECT') AND has_table_privilege('postbox.workers', 'INSERT') AND has_table_privilege('postbox.workers', 'UPDATE') AND has_table_privilege('postbox.workers', 'DELETE')"),
];

/// Runs every check it can; later ones are skipped when an earlier one they
/// need failed (no connection, no extension).
pub async fn check(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let prepared = match config.prepare() {
        Ok(p) => p,
        Err(e) => return vec![Finding::Problem(e.to_string())],
    };
    if let Some(w) = postbox_runtime::conninfo::transport_warning(config.database_url.as_str()) {
        out.push(Finding::Warning(w));
    }
    let mut pg = prepared.pg;
    crate::db::session_options(&mut pg);
    let pool = match crate::db::pool(config, pg, prepared.tls) {
        Ok(p) => p,
        Err(e) => return push(out, Finding::Problem(e.to_string())),
    };
    let db = match tokio::time::timeout(CONNECT_WAIT, pool.get()).await {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            return push(
                out,
                Finding::Problem(format!("cannot connect: {}", pool_message(&e))),
            )
        }
        Err(_) => {
            return push(
                out,
                Finding::Problem(format!("cannot connect within {}s", CONNECT_WAIT.as_secs())),
            )
        }
    };
    let who = match db
        .query_one(
            "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
    {
        Ok(r) => (r.get::<_, String>(0), r.get::<_, bool>(1)),
        Err(e) => {
            return push(
                out,
                Finding::Problem(format!("database: {}", pg_message(&e))),
            )
        }
    };
    out.push(Finding::Ok(format!("connected as role {}", who.0)));
    if who.1 {
        out.push(Finding::Problem(format!(
            "role {} is a superuser: run the worker as a role that has only postbox_worker",
            who.0
        )));
    }
    match postbox_runtime::extension_version(&db).await {
        Ok(v) => out.push(Finding::Ok(format!("extension postbox {v}"))),
        Err(e @ postbox_runtime::ExtensionError::Unsupported(_)) => {
            out.push(Finding::Problem(e.to_string()))
        }
        // Not installed, or no answer: the privileges below cannot be checked.
        Err(e) => return push(out, Finding::Problem(e.to_string())),
    }
    let mut missing = Vec::new();
    for (what, sql) in PRIVILEGES {
        match db.query_one(&format!("SELECT {sql}"), &[]).await {
            Ok(r) if r.get::<_, bool>(0) => {}
            Ok(_) => missing.push(*what),
            Err(e) => {
                tracing::debug!(error = %pg_message(&e), "privilege check");
                missing.push(*what);
            }
        }
    }
    if missing.is_empty() {
        out.push(Finding::Ok(
            "privileges: everything the worker's statements need".into(),
        ));
    } else {
        for what in missing {
            out.push(Finding::Problem(format!(
                "missing privilege: {what} (GRANT postbox_worker TO {})",
                who.0
            )));
        }
    }
    match checked_lookup(config.resolver.as_ref(), "localhost".into(), true).await {
        Ok(_) => out.push(Finding::Ok("name resolution works".into())),
        Err(e) => out.push(Finding::Problem(format!("name resolution fails: {e}"))),
    }
    out
}

fn push(mut out: Vec<Finding>, f: Finding) -> Vec<Finding> {
    out.push(f);
    out
}
