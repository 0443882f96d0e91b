//! The worker's database sessions: what each sets ([`session_options`])
//! and the pool for claims and acknowledgements ([`pool`]). Connection
//! strings and TLS are [`postbox_runtime::conninfo`] and
//! [`postbox_runtime::tls`].

use crate::config::Config;
use postbox_runtime::tls::MakeRustls;

/// What every worker session sets: its name, so operators find (and tests
/// terminate) the worker's sessions, and generic plans. The worker runs the
/// same few statements with new arrays each time; custom plans would
/// re-plan every claim and acknowledgement (measured: a fifth of
/// PostgreSQL's CPU), and the generic ones are as good here.
pub fn session_options(pg: &mut tokio_postgres::Config) {
    pg.application_name("postbox-worker");
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c plan_cache_mode=force_generic_plan"),
        _ => "-c plan_cache_mode=force_generic_plan".to_string(),
    };
    pg.options(&options);
}

/// The connection pool for claims and acknowledgements, of
/// `db_pool_size` connections.
pub fn pool(
    config: &Config,
    pg: tokio_postgres::Config,
    tls: MakeRustls,
) -> Result<deadpool_postgres::Pool, deadpool_postgres::BuildError> {
    postbox_runtime::pool::pool(pg, tls, config.db_pool_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_named_and_use_generic_plans() {
        let mut pg: tokio_postgres::Config = "host=db options='-c work_mem=8MB'".parse().unwrap();
        session_options(&mut pg);
        assert_eq!(pg.get_application_name(), Some("postbox-worker"));
        assert_eq!(
            pg.get_options(),
            Some("-c work_mem=8MB -c plan_cache_mode=force_generic_plan")
        );
    }
}
