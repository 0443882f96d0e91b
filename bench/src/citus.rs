//! Figures 13 and 14, postbox on Citus.
//!
//! Figure 13: the emit overhead on Citus. A coordinator and two worker
//! nodes ([`postbox_tests::citus::Citus`], Debian's PostgreSQL 15 with the
//! harness's settings: fsync off, commits durable), three tables distributed
//! by tenant: one plain, one with the bare one-row outbox trigger of figure
//! 1 (writing a local table on the worker node), one attached; 8 pgbench
//! clients insert single rows through the coordinator into each, in
//! mirrored rounds (plain, bare, postbox, postbox, bare, plain), compared by
//! sums as figure 1 is. The writes' cost on Citus is
//! mostly the coordinator's planning and the round trip to a worker node,
//! which postbox's trigger (run on the worker node, writing its own table)
//! adds to only there.

use crate::{pgbench_on, postmaster_of, procstat, Bench, Started};
use postbox_tests::citus::Citus;
use postbox_tests::Cluster;
use std::time::Duration;

/// One statement at a time: Citus propagates a CREATE FUNCTION sent among
/// others in one query string as a prepared statement, which refuses
/// several commands.
const SETUP: &[&str] = &[
    "SET citus.shard_count = 8",
    "CREATE SCHEMA app",
    "CREATE TABLE app.plain (tenant text NOT NULL, id bigserial, title text, n int, PRIMARY KEY (tenant, id))",
    "CREATE TABLE app.items (LIKE app.plain INCLUDING ALL)",
    "SELECT create_distributed_table('app.plain', 'tenant')",
    "SELECT create_distributed_table('app.items', 'tenant')",
    "CREATE TABLE app.bare (LIKE app.plain INCLUDING ALL)",
    "SELECT create_distributed_table('app.bare', 'tenant')",
    "SELECT run_command_on_workers($$CREATE TABLE app.bare_outbox (id bigserial PRIMARY KEY, tenant text, data jsonb,
                                                                created_at timestamptz DEFAULT now())$$)",
    "CREATE FUNCTION app.bare_trigger() RETURNS trigger LANGUAGE plpgsql AS
       $$ BEGIN INSERT INTO app.bare_outbox (tenant, data) VALUES (NEW.tenant, to_jsonb(NEW)); RETURN NULL; END $$",
    "SET citus.enable_unsafe_triggers = on",
    "CREATE TRIGGER bare AFTER INSERT ON app.bare FOR EACH ROW EXECUTE FUNCTION app.bare_trigger()",
    "SELECT postbox.attach('app.items', 'item', 'tenant')",
];

impl Bench {
    pub(crate) async fn citus_emit(&mut self) {
        println!(
            "\n13. Emit overhead on Citus (a coordinator and two worker nodes; worker stopped)"
        );
        let Some(citus) = Citus::start(2, "figure 13").await else {
            self.notes
                .push("figure 13 not run: Citus is not installed (scripts/setup.sh builds it from CITUS_SRC)".into());
            return;
        };
        let db = citus.coordinator().await;
        for q in SETUP {
            db.batch_execute(q).await.unwrap_or_else(|e| {
                panic!("figure 13 set-up: {q}: {}", postbox_tests::pg_error(&e))
            });
        }
        let script = |t: &str| {
            format!("\\set t random(1, 100)\nINSERT INTO app.{t} (tenant, title, n) VALUES ('tenant-' || :t, 'a recording title', :t);\n")
        };
        let (rounds, secs) = if self.quick { (1, 3) } else { (2, 20) };
        let (mut plain, mut bare, mut items) = (0.0, 0.0, 0.0);
        for round in 1..=rounds {
            for t in ["plain", "bare", "items", "items", "bare", "plain"] {
                let tps = pgbench_on(&citus.coordinator, "postgres", &script(t), 8, secs);
                println!("     round {round}: {t} {tps:.0} TPS");
                match t {
                    "plain" => plain += tps,
                    "bare" => bare += tps,
                    _ => items += tps,
                }
            }
        }
        // The events are real: on the worker nodes, one per row.
        let mut emitted_rows = 0i64;
        for node in &citus.workers {
            let n = node.connect("postgres").await;
            postbox_tests::fixtures::expand_all(&n).await;
            emitted_rows += n
                .query_one("SELECT count(*) FROM postbox.events WHERE tenant IS DISTINCT FROM 'postbox:operator'", &[])
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
        let rows: i64 = db
            .query_one("SELECT count(*) FROM app.items", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            emitted_rows, rows,
            "figure 13: one event per row, on the worker nodes"
        );
        self.add(
            "citus emit: TPS ratio to the same table without attach (8 clients)",
            items / plain,
            "ratio",
            Some((">=", 0.85)),
        );
        self.add(
            "citus emit: TPS ratio to a bare one-row outbox trigger (8 clients)",
            items / bare,
            "ratio",
            None,
        );
        self.add(
            "citus emit: inserts per second, attached",
            items / (2 * rounds) as f64,
            "TPS",
            None,
        );
    }

    /// Figure 14: figure 2's shape through an application table, end to
    /// end, on one node and on Citus with 1 and 2 worker nodes, in one run.
    /// Two tenants (one per worker node of the 2-node cluster) with 5
    /// endpoints each; rows of ~600 bytes inserted 1,000 per transaction
    /// (half per tenant), each an event for its tenant's 5 endpoints. The
    /// single node runs with the Citus nodes' settings (the harness's, plus
    /// `synchronous_commit` on and `wal_level` logical), so the comparison
    /// is of the topology, not of the configuration. Reported: deliveries/s,
    /// and the CPU per delivery of every process involved, from /proc.
    pub(crate) async fn citus_throughput(&mut self) {
        let events: u64 = if self.quick { 1_000 } else { 40_000 };
        println!(
            "\n14. Deliveries on Citus: {events} rows x 5 endpoints per tenant, 2 tenants, one node vs Citus with 1 and 2 worker nodes"
        );
        let Some(two) = Citus::start(2, "figure 14").await else {
            self.notes
                .push("figure 14 not run: Citus is not installed (scripts/setup.sh builds it from CITUS_SRC)".into());
            return;
        };
        let coordinator = two.coordinator().await;
        for q in THROUGHPUT_SETUP.iter().chain(CITUS_ATTACH) {
            sql(&coordinator, q).await;
        }
        // A tenant on each worker node, found by Citus's own placement.
        let mut tenants: Vec<String> = Vec::new();
        for node in &two.workers {
            for i in 0.. {
                let t = format!("tenant-{i}");
                if two.placement("app.items", &t).await.1 == node.port {
                    tenants.push(t);
                    break;
                }
            }
        }
        let single = {
            let pg = Cluster::start_with(SINGLE_SETTINGS).await;
            let db = pg.connect("postgres").await;
            for q in THROUGHPUT_SETUP.iter().chain(SINGLE_ATTACH) {
                sql(&db, q).await;
            }
            self.deliver_through(&pg, &[&pg], None, &tenants, events)
                .await
        };
        let one = {
            let Some(one) = Citus::start(1, "figure 14").await else {
                unreachable!("Citus started above")
            };
            let db = one.coordinator().await;
            for q in THROUGHPUT_SETUP.iter().chain(CITUS_ATTACH) {
                sql(&db, q).await;
            }
            let nodes: Vec<&Cluster> = one.workers.iter().collect();
            self.deliver_through(&one.coordinator, &nodes, Some(&one), &tenants, events)
                .await
        };
        let nodes: Vec<&Cluster> = two.workers.iter().collect();
        let both = self
            .deliver_through(&two.coordinator, &nodes, Some(&two), &tenants, events)
            .await;

        let base = single.cpu_per_delivery();
        for (label, run) in [
            ("one node", &single),
            ("Citus, 1 worker node", &one),
            ("Citus, 2 worker nodes", &both),
        ] {
            self.add(
                format!("citus deliveries: {label}, deliveries per second"),
                run.rate,
                "deliveries/s",
                None,
            );
            for (process, cpu) in &run.cpu {
                self.add(
                    format!("citus deliveries: {label}, CPU per delivery, {process}"),
                    1e6 * cpu.as_secs_f64() / run.deliveries as f64,
                    "us",
                    None,
                );
            }
            self.add(
                format!("citus deliveries: {label}, CPU per delivery, all processes"),
                1e6 * run.cpu_per_delivery(),
                "us",
                None,
            );
        }
        for (label, run) in [("1 worker node", &one), ("2 worker nodes", &both)] {
            self.add(
                format!("citus deliveries: CPU per delivery, {label} / one node"),
                run.cpu_per_delivery() / base,
                "ratio",
                Some(("<=", 1.5)),
            );
        }
    }

    /// One run of figure 14: endpoints made on `front` (the single node, or
    /// the coordinator), a worker per node of `nodes`, the rows inserted on
    /// `front`, until every delivery is received. `citus`: the cluster
    /// `front` coordinates, whose worker nodes are `nodes`.
    async fn deliver_through(
        &mut self,
        front: &Cluster,
        nodes: &[&Cluster],
        citus: Option<&Citus>,
        tenants: &[String],
        events: u64,
    ) -> Delivered {
        let db = front.connect("postgres").await;
        let mut q = String::from("SET postbox.allow_insecure_urls = on;\n");
        for (t, tenant) in tenants.iter().enumerate() {
            for e in 0..ENDPOINTS_PER_TENANT {
                q.push_str(&format!(
                    "SELECT postbox.create_endpoint('{tenant}', '{}/e{}', '{{item.*}}');\n",
                    self.target,
                    t * ENDPOINTS_PER_TENANT + e
                ));
            }
        }
        sql(&db, &q).await;
        sql(&db, "CHECKPOINT").await;
        if let Some(c) = citus {
            // The endpoints reach the worker nodes before the first row.
            c.config_replicated().await;
        }
        let citus = citus.is_some();
        let workers: Vec<Started> = nodes
            .iter()
            .map(|n| {
                // No NOTIFY on Citus: the worker polls (docs/design.md).
                self.start_worker_on(&n.url("postgres"), &[("POSTBOX_POLL_INTERVAL", "50ms")])
            })
            .collect();
        for n in nodes {
            crate::worker_sessions(&n.connect("postgres").await, 1).await;
        }
        self.stats.reset();
        let mut clusters: Vec<(String, &Cluster)> = Vec::new();
        if citus {
            clusters.push(("coordinator".into(), front));
            for (i, n) in nodes.iter().enumerate() {
                clusters.push((format!("worker node {}", i + 1), n));
            }
        } else {
            clusters.push(("PostgreSQL".into(), front));
        }
        let snapshot = |clusters: &[(String, &Cluster)], workers: &[Started]| -> Vec<Duration> {
            let mut v: Vec<Duration> = clusters
                .iter()
                .map(|(_, c)| procstat::cluster_cpu(postmaster_of(c)))
                .collect();
            v.extend(workers.iter().map(|w| procstat::process_cpu(w.id())));
            v.push(procstat::process_cpu(std::process::id()));
            v
        };
        let before = snapshot(&clusters, &workers);
        let mut first = None;
        let mut i = 0;
        while i < events {
            let n = 1000.min(events - i);
            sql(
                &db,
                &format!(
                    "INSERT INTO app.items (tenant, pad)
                     SELECT (ARRAY['{}', '{}'])[1 + g % 2], repeat('x', 560) FROM generate_series(1, {n}) g",
                    tenants[0], tenants[1]
                ),
            )
            .await;
            first.get_or_insert_with(std::time::Instant::now);
            i += n;
        }
        let deliveries = events * ENDPOINTS_PER_TENANT as u64;
        let last = self
            .wait_delivered(
                deliveries,
                Duration::from_secs(if self.quick { 120 } else { 900 }),
            )
            .await;
        let after = snapshot(&clusters, &workers);
        let wall = last.duration_since(first.unwrap());
        for w in workers {
            w.stop();
        }
        let mut names: Vec<String> = clusters.into_iter().map(|(n, _)| n).collect();
        for i in 0..nodes.len() {
            names.push(if nodes.len() == 1 {
                "postbox-worker".into()
            } else {
                format!("postbox-worker {}", i + 1)
            });
        }
        names.push("receiver and emitter".into());
        let cpu = names
            .into_iter()
            .zip(after.iter().zip(&before).map(|(a, b)| *a - *b))
            .collect();
        let run = Delivered {
            rate: deliveries as f64 / wall.as_secs_f64(),
            deliveries,
            cpu,
        };
        println!(
            "     {} deliveries in {:.2} s: {:.0}/s, {:.0} us of CPU each",
            deliveries,
            wall.as_secs_f64(),
            run.rate,
            1e6 * run.cpu_per_delivery()
        );
        run
    }
}

/// Figure 14's endpoints per tenant (two tenants: 10 endpoints, as figure 2).
const ENDPOINTS_PER_TENANT: usize = 5;

/// The single node of figure 14: the harness's settings with what the
/// Citus nodes change that costs (durable commits, logical WAL).
const SINGLE_SETTINGS: &[(&str, &str)] = &[("synchronous_commit", "on"), ("wal_level", "logical")];

/// Figure 14's application table, on every topology.
const THROUGHPUT_SETUP: &[&str] = &[
    "CREATE SCHEMA app",
    "CREATE TABLE app.items (tenant text NOT NULL, id bigserial, pad text, PRIMARY KEY (tenant, id))",
];

const CITUS_ATTACH: &[&str] = &[
    "SET citus.shard_count = 8",
    "SELECT create_distributed_table('app.items', 'tenant')",
    "SET citus.enable_unsafe_triggers = on",
    "SELECT postbox.attach('app.items', 'item', 'tenant')",
];

const SINGLE_ATTACH: &[&str] = &["SELECT postbox.attach('app.items', 'item', 'tenant')"];

/// What one run of figure 14 measured.
struct Delivered {
    rate: f64,
    deliveries: u64,
    /// CPU by process (or cluster) over the run.
    cpu: Vec<(String, Duration)>,
}

impl Delivered {
    /// Seconds of CPU per delivery, every process together.
    fn cpu_per_delivery(&self) -> f64 {
        self.cpu.iter().map(|(_, d)| d.as_secs_f64()).sum::<f64>() / self.deliveries as f64
    }
}

async fn sql(db: &tokio_postgres::Client, q: &str) {
    db.batch_execute(q)
        .await
        .unwrap_or_else(|e| panic!("{q}: {}", postbox_tests::pg_error(&e)));
}
