//! A Citus cluster in one call: a coordinator and N worker nodes, each a
//! [`Cluster`] of Debian's PostgreSQL 15 on its own loopback port, with
//! Citus (built and installed by scripts/setup.sh from `CITUS_SRC`), the
//! nodes registered, and postbox created on the coordinator (Citus creates
//! it on every worker node) with its configuration replicated to them
//! (`postbox.citus_replicate_config`).

use crate::Cluster;
use std::path::Path;
use std::process::Command;
use tokio_postgres::Client;

/// The application's table, as a product that moves to Citus has it.
pub const APP: &str = "
CREATE SCHEMA app;
CREATE TABLE app.recordings (workspace_id text NOT NULL, id bigint NOT NULL, title text,
                             PRIMARY KEY (workspace_id, id));";

/// Distributes it by tenant (4 shards over the two worker nodes), then
/// attaches it: Citus creates triggers on a distributed table only with
/// citus.enable_unsafe_triggers (postbox's write only the node's own
/// tables, which is what makes them safe here).
pub const DISTRIBUTE: &str = "
SET citus.shard_count = 4;
SELECT create_distributed_table('app.recordings', 'workspace_id');
SET citus.enable_unsafe_triggers = on;";

pub const ATTACH: &str = "SELECT postbox.attach('app.recordings', 'recording', 'workspace_id');";

/// Every node's settings besides the harness's: Citus preloaded, prepared
/// transactions for its two-phase commit, logical WAL for shard moves and
/// postbox's configuration replication, and durable commits.
const NODE_SETTINGS: &[(&str, &str)] = &[
    ("shared_preload_libraries", "'citus'"),
    ("max_prepared_transactions", "100"),
    ("wal_level", "logical"),
    ("max_replication_slots", "16"),
    ("max_wal_senders", "16"),
    ("max_connections", "200"),
    // A commit the application was told of survives a kill -9 of the node
    // (the harness turns it off for speed; fsync off is still safe from a
    // killed process, whose writes are in the kernel's cache).
    ("synchronous_commit", "on"),
];

pub struct Citus {
    pub coordinator: Cluster,
    pub workers: Vec<Cluster>,
}

/// Whether Citus is installed into the PostgreSQL the tests run (the one
/// [`Cluster::start_plain`] starts).
pub fn installed() -> bool {
    let out = Command::new(crate::pg_bindir().join("pg_config"))
        .arg("--pkglibdir")
        .output();
    out.map(|o| {
        Path::new(String::from_utf8_lossy(&o.stdout).trim())
            .join("citus.so")
            .exists()
    })
    .unwrap_or(false)
}

impl Citus {
    /// A coordinator and `workers` worker nodes, postbox installed and its
    /// configuration replicated. None, said on stderr, where Citus is not
    /// installed (`test` names the caller).
    pub async fn start(workers: usize, test: &str) -> Option<Citus> {
        if !installed() {
            eprintln!(
                "{test}: not run: Citus is not installed (scripts/setup.sh builds it from CITUS_SRC)"
            );
            return None;
        }
        let coordinator = Cluster::start_plain(NODE_SETTINGS);
        let workers: Vec<Cluster> = (0..workers)
            .map(|_| Cluster::start_plain(NODE_SETTINGS))
            .collect();
        for node in std::iter::once(&coordinator).chain(&workers) {
            node.connect("postgres")
                .await
                .batch_execute("CREATE EXTENSION citus")
                .await
                .unwrap_or_else(|e| panic!("CREATE EXTENSION citus: {}", crate::pg_error(&e)));
        }
        let db = coordinator.connect("postgres").await;
        let mut setup = format!(
            "SELECT citus_set_coordinator_host('127.0.0.1', {});",
            coordinator.port
        );
        for w in &workers {
            setup.push_str(&format!("SELECT citus_add_node('127.0.0.1', {});", w.port));
        }
        setup.push_str("CREATE EXTENSION postbox;");
        db.batch_execute(&setup)
            .await
            .unwrap_or_else(|e| panic!("Citus set-up: {}", crate::pg_error(&e)));
        db.batch_execute("CALL postbox.citus_replicate_config()")
            .await
            .unwrap_or_else(|e| panic!("citus_replicate_config: {}", crate::pg_error(&e)));
        Some(Citus {
            coordinator,
            workers,
        })
    }

    /// Every node: the coordinator first, then the worker nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &Cluster> {
        std::iter::once(&self.coordinator).chain(&self.workers)
    }

    /// A superuser session on the coordinator.
    pub async fn coordinator(&self) -> Client {
        self.coordinator.connect("postgres").await
    }

    /// The shard of `table` that holds distribution value `value`, and the
    /// port of the node that holds it.
    pub async fn placement(&self, table: &str, value: &str) -> (i64, u16) {
        let r = self
            .coordinator()
            .await
            .query_one(
                "SELECT pl.shardid, n.nodeport FROM pg_dist_placement pl JOIN pg_dist_node n ON n.groupid = pl.groupid
                  WHERE pl.shardid = get_shard_id_for_distribution_column($1::text::regclass, $2::text)",
                &[&table, &value],
            )
            .await
            .unwrap_or_else(|e| panic!("placement of {value} in {table}: {}", crate::pg_error(&e)));
        (r.get(0), r.get::<_, i32>(1) as u16)
    }

    /// Waits until every worker node has applied what the coordinator has
    /// committed so far to postbox's replicated configuration (up to the
    /// coordinator's WAL position now, not a position that moves on while
    /// it waits).
    pub async fn config_replicated(&self) {
        let db = self.coordinator().await;
        let now: String = db
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        crate::wait_until(
            std::time::Duration::from_secs(30),
            "the configuration replicated to every worker node",
            || async {
                let row = db
                    .query_one(
                        "SELECT postbox.citus_config_replicated($1::text::pg_lsn)",
                        &[&now],
                    )
                    .await
                    .unwrap();
                row.get::<_, bool>(0).then_some(())
            },
        )
        .await;
    }
}
