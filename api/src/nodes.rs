//! The Citus worker nodes, when the API's database is a Citus coordinator
//! (docs/design.md, "Past one database: Citus"). Each node keeps the
//! deliveries, the delivery log and the endpoints' health of the tenants
//! whose shards it holds, so the routes that show or act on them ask every
//! node (lists, merged in their order) or the one a delivery's id names: a
//! node draws its deliveries' ids from its own range (its group id shifted
//! left by `postbox._delivery_node_bits()`). Off Citus there are none, and
//! every route reads the one database as before.

use crate::error::ApiError;
use crate::RunError;
use deadpool_postgres::{Object, Pool};
use postbox_runtime::error::pg_message;
use postbox_runtime::tls::MakeRustls;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// A worker node: its Citus group and a pool of its own.
pub struct Node {
    pub group: i32,
    pool: Pool,
}

/// Every worker node (none off Citus), and how to tell a delivery's node.
pub struct Nodes {
    nodes: Vec<Node>,
    /// A delivery id shifted right by this many bits is its node's group.
    bits: u32,
    wait: Duration,
}

impl Nodes {
    /// No nodes: one database.
    pub fn none() -> Nodes {
        Nodes {
            nodes: Vec::new(),
            bits: 63,
            wait: Duration::ZERO,
        }
    }

    /// The coordinator's active primary worker nodes, read through `db`,
    /// each with a pool of `size` connections made as `base` (the API's
    /// own user, database, password and TLS), to the node's host and port.
    /// None where Citus is not installed or this is not its coordinator.
    pub async fn discover(
        db: &Object,
        base: &tokio_postgres::Config,
        tls: &MakeRustls,
        size: usize,
        wait: Duration,
    ) -> Result<Nodes, RunError> {
        let citus: bool = db
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus')",
                &[],
            )
            .await
            .map_err(|e| RunError::Db(pg_message(&e)))?
            .get(0);
        if !citus {
            return Ok(Nodes::none());
        }
        let rows = db
            .query(
                "SELECT n.groupid, n.nodename, n.nodeport, postbox._delivery_node_bits()
                   FROM pg_catalog.pg_dist_node n
                  WHERE pg_catalog.citus_is_coordinator() AND n.groupid <> 0
                    AND n.noderole = 'primary' AND n.isactive
                  ORDER BY n.groupid",
                &[],
            )
            .await
            .map_err(|e| RunError::Db(pg_message(&e)))?;
        let mut nodes = Nodes {
            wait,
            ..Nodes::none()
        };
        for r in &rows {
            let (group, host, port, bits): (i32, String, i32, i32) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            nodes.bits = bits as u32;
            let pool = postbox_runtime::pool::pool(
                node_config(base, &host, port as u16),
                tls.clone(),
                size,
            )
            .map_err(|e| RunError::Db(e.to_string()))?;
            nodes.nodes.push(Node { group, pool });
        }
        if !nodes.nodes.is_empty() {
            tracing::info!(
                nodes = nodes.nodes.len(),
                "a Citus coordinator: deliveries, their log and health are read from its worker nodes too"
            );
        }
        Ok(nodes)
    }

    /// Whether there are none (not a Citus coordinator).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Runs `sql` on every node, one after another: their rows, node by
    /// node (none off Citus).
    pub async fn query_all(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ApiError> {
        let mut rows = Vec::new();
        for node in &self.nodes {
            let n = self.connect(node).await?;
            let st = n.prepare_cached(sql).await?;
            rows.extend(n.query(&st, params).await?);
        }
        Ok(rows)
    }

    /// The node that holds delivery `id`; None: the coordinator (or the
    /// one database).
    pub fn of_delivery(&self, id: i64) -> Option<&Node> {
        let group = id.checked_shr(self.bits).unwrap_or(0);
        self.nodes.iter().find(|n| i64::from(n.group) == group)
    }

    /// A connection to `node`, within the API's wait for connections.
    pub async fn connect(&self, node: &Node) -> Result<Object, ApiError> {
        tokio::time::timeout(self.wait, node.pool.get())
            .await
            .map_err(|_| {
                tracing::warn!(
                    group = node.group,
                    "no connection to a Citus node within the wait"
                );
                ApiError::Unavailable
            })?
            .map_err(ApiError::from)
    }
}

/// `base`'s user, password, database and settings, to `host`:`port`.
fn node_config(base: &tokio_postgres::Config, host: &str, port: u16) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    if let Some(user) = base.get_user() {
        c.user(user);
    }
    if let Some(password) = base.get_password() {
        c.password(password);
    }
    if let Some(db) = base.get_dbname() {
        c.dbname(db);
    }
    if let Some(options) = base.get_options() {
        c.options(options);
    }
    if let Some(t) = base.get_connect_timeout() {
        c.connect_timeout(*t);
    }
    c.ssl_mode(base.get_ssl_mode());
    c.channel_binding(base.get_channel_binding());
    c.application_name("postbox-api");
    c.host(host);
    c.port(port);
    c
}

/// The status an endpoint shows when the coordinator and each node keep
/// their own health for it: paused and suspended come from its
/// configuration, the same everywhere, so the coordinator's stands; else
/// the worst health any node keeps (disabled, then failing), else the
/// coordinator's. `copies`: each node's (status, disabled_at, reason).
pub fn merged_status<T: Clone>(
    coordinator: (String, Option<T>, Option<String>),
    copies: impl IntoIterator<Item = (String, Option<T>, Option<String>)>,
) -> (String, Option<T>, Option<String>) {
    let rank = |s: &str| match s {
        "disabled" => 2,
        "failing" => 1,
        _ => 0,
    };
    if !matches!(coordinator.0.as_str(), "healthy" | "failing" | "disabled") {
        return coordinator;
    }
    let mut best = coordinator;
    for c in copies {
        if rank(&c.0) > rank(&best.0) {
            best = c;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::merged_status;

    fn s(status: &str) -> (String, Option<i32>, Option<String>) {
        (status.to_string(), None, None)
    }

    #[test]
    fn the_worst_health_of_any_node_shows_and_configuration_states_stand() {
        assert_eq!(
            merged_status(s("healthy"), [s("healthy"), s("failing")]).0,
            "failing"
        );
        let disabled = ("disabled".to_string(), Some(7), Some("410".to_string()));
        assert_eq!(
            merged_status(s("healthy"), [s("failing"), disabled.clone()]),
            disabled
        );
        assert_eq!(merged_status(s("failing"), [s("healthy")]).0, "failing");
        assert_eq!(merged_status(s("paused"), [disabled.clone()]).0, "paused");
        assert_eq!(merged_status(s("suspended"), [disabled]).0, "suspended");
        assert_eq!(merged_status(s("healthy"), []).0, "healthy");
    }
}
