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

/// What the worker needs is what the extension grants `postbox_worker`,
/// read from the catalog (one list: the GRANTs beside each object in
/// sql/), and checked for the connecting role: one row per privilege,
/// (what, held).
const PRIVILEGES: &str = "
SELECT x.what, x.held FROM (
    SELECT format('%s on %s', a.privilege_type, c.oid::regclass) AS what,
           has_table_privilege(c.oid, a.privilege_type) AS held
      FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
     WHERE c.relnamespace = 'postbox'::regnamespace AND a.grantee = 'postbox_worker'::regrole
    UNION ALL
    SELECT format('%s of %s.%s', a.privilege_type, c.oid::regclass, t.attname),
           has_column_privilege(c.oid, t.attnum, a.privilege_type)
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_attribute t ON t.attrelid = c.oid AND t.attnum > 0, aclexplode(t.attacl) a
     WHERE c.relnamespace = 'postbox'::regnamespace AND a.grantee = 'postbox_worker'::regrole
    UNION ALL
    SELECT format('EXECUTE on %s', p.oid::regprocedure), has_function_privilege(p.oid, 'EXECUTE')
      FROM pg_catalog.pg_proc p, aclexplode(p.proacl) a
     WHERE p.pronamespace = 'postbox'::regnamespace AND a.grantee = 'postbox_worker'::regrole
) x ORDER BY x.what";

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
    match postbox_runtime::installed(&db).await {
        Ok(i) => out.push(Finding::Ok(format!(
            "postbox {}: {}",
            i.version,
            i.flavour.describe()
        ))),
        Err(e @ postbox_runtime::ExtensionError::Unsupported(_)) => {
            out.push(Finding::Problem(e.to_string()))
        }
        // Not installed, or no answer: the privileges below cannot be checked.
        Err(e) => return push(out, Finding::Problem(e.to_string())),
    }
    let missing: Vec<String> = match db.query(PRIVILEGES, &[]).await {
        Ok(rows) if rows.is_empty() => {
            vec!["every grant to postbox_worker (the extension's install is incomplete)".into()]
        }
        Ok(rows) => rows
            .iter()
            .filter(|r| !r.get::<_, bool>(1))
            .map(|r| r.get::<_, String>(0))
            .collect(),
        Err(e) => vec![format!("the privilege check itself: {}", pg_message(&e))],
    };
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
