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

use crate::{pgbench_on, Bench};
use postbox_tests::citus::Citus;

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
            while n
                .query_one("SELECT postbox.expand_events(10000)", &[])
                .await
                .unwrap()
                .get::<_, i32>(0)
                > 0
            {}
            emitted_rows += n
                .query_one("SELECT count(*) FROM postbox.events", &[])
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
}
