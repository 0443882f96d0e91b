//! postbox-bench: measures postbox on this machine and writes
//! `target/bench/results.json` (`figures`: one object per figure with name,
//! value, unit, target, op, met; `bench_ran_vacuum`, `notes`, `quick`) and a
//! table on stdout. A full run exits 1 when a target is missed.
//!
//! Whatever way it ends (every figure done, a target missed, a panic, SIGINT
//! or SIGTERM), it first stops what it started: the worker and API processes
//! ([`Started`]) and its cluster ([`Cluster`]'s drop).
//!
//! It starts its own PostgreSQL cluster with the settings of
//! `docs/measurements.md`, runs the release-built worker as a separate
//! process, and receives on a tokio + hyper receiver in this process. Every
//! ratio is measured in the same run as its baseline. `--quick` shrinks every
//! figure so CI can check that each one is produced (under 2 minutes); it
//! judges no target.
//!
//! # Layout
//! - `main.rs`: the figures, in order 1 (emit overhead), 0 (the ceiling C),
//!   2 (throughput, as a ratio of C too, and 6, worker memory), 10 (figure 2
//!   over HTTPS, HTTP/1.1 and HTTP/2), 4 (isolation), 7 (many idle
//!   endpoints), 3 (latency), 5 (backlog), 8 (soak: size under retention),
//!   9 (the HTTP API), 13 and 14 (Citus).
//! - `ceiling.rs`: figure 0's bare loops, and the sender it runs as a child
//!   process (`--ceiling-sender`).
//! - `citus.rs`: figures 13 (emit overhead) and 14 (deliveries and CPU
//!   per delivery with 1 and 2 worker nodes) on a Citus cluster.
//! - `receiver.rs`: the counting receiver, plain or HTTPS.
//! - `load.rs`: the HTTP load generator of figure 9.
//! - `noise.rs`: figure 9's noisy tenant (slow bodies, replays in a loop).
//! - `procstat.rs`: CPU and peak memory from /proc.

mod ceiling;
mod citus;
mod load;
mod noise;
mod procstat;
mod receiver;

use postbox_tests::Cluster;
use receiver::Stats;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The settings of docs/measurements.md, plus a shorter autovacuum naptime
/// so figure 5 sees an autovacuum cycle within a minute.
const SETTINGS: &[(&str, &str)] = &[
    ("shared_buffers", "'2GB'"),
    ("synchronous_commit", "on"),
    ("fsync", "on"),
    ("full_page_writes", "on"),
    ("wal_compression", "on"),
    ("max_wal_size", "'4GB'"),
    ("min_wal_size", "'1GB'"),
    ("checkpoint_timeout", "'15min'"),
    ("wal_buffers", "'64MB'"),
    ("effective_cache_size", "'16GB'"),
    ("work_mem", "'16MB'"),
    ("maintenance_work_mem", "'512MB'"),
    ("random_page_cost", "1.1"),
    ("autovacuum", "on"),
    ("autovacuum_naptime", "'10s'"),
];

/// Whether POSTBOX_BENCH_STATEMENTS asks for figure 2's statements.
fn statements() -> bool {
    std::env::var("POSTBOX_BENCH_STATEMENTS").is_ok_and(|v| v == "1")
}

/// The second isolation figure: tenants whose endpoints all hang, each
/// with NOISY_ENDPOINTS of them (at the default 16 in flight each, 128 per
/// tenant: together twice the worker's slots) and NOISY_EVENTS events.
const NOISY: usize = 4;
const NOISY_ENDPOINTS: usize = 8;
const NOISY_EVENTS: usize = 64;

/// The worker's allocator, for the ceiling's sender (ceiling.rs) and
/// the receiver alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    target: Option<(&'static str, f64)>,
}

impl Figure {
    fn met(&self) -> Option<bool> {
        self.target.map(|(op, t)| {
            if op == ">=" {
                self.value >= t
            } else {
                self.value <= t
            }
        })
    }
}

/// A process the benchmark started (a worker, the API). [`Started::stop`]
/// stops it gracefully; if it is still running when dropped (a panic, a
/// signal), it is killed and reaped, so no exit path leaves one behind.
struct Started(Child);

impl Started {
    fn spawn(cmd: &mut Command) -> Started {
        let program = cmd.get_program().to_string_lossy().into_owned();
        Started(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("{program}: {e} (run scripts/bench.sh)")),
        )
    }

    fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM (a graceful stop), then waits for it to exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct Bench {
    quick: bool,
    pg: Cluster,
    db: Client,
    stats: Arc<Stats>,
    rx: SocketAddr,
    /// Where endpoints point (`endpoints`): the plain receiver, or for
    /// figure 10 an HTTPS one.
    target: String,
    /// Environment for every worker started (figure 10: the CA to trust).
    worker_env: Vec<(String, String)>,
    /// The `options` of every endpoint made (figure 11: batching); empty:
    /// none.
    endpoint_options: String,
    /// Figure 12: events carry one of this many ordering keys (event i has
    /// key i mod n); 0: no key.
    ordering_keys: u64,
    worker_bin: PathBuf,
    figures: Vec<Figure>,
    notes: Vec<String>,
    /// Whether figure 5 had to run VACUUM itself (recorded in results.json).
    ran_vacuum: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

impl Bench {
    fn add(
        &mut self,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: Option<(&'static str, f64)>,
    ) {
        let f = Figure {
            name: name.into(),
            value,
            unit,
            target,
        };
        let status = match f.met() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        let t = f
            .target
            .map(|(op, t)| format!("{op} {t}"))
            .unwrap_or_default();
        println!(
            "  {:<58} {:>12.3} {:<14} {:<10} {}",
            f.name, f.value, f.unit, t, status
        );
        self.figures.push(f);
    }

    async fn sql(&self, q: &str) {
        self.db.batch_execute(q).await.unwrap_or_else(|e| {
            panic!(
                "{q}: {}",
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or(e.to_string())
            )
        });
    }

    async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, q: &str) -> T {
        self.db
            .query_one(q, &[])
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .get(0)
    }

    fn postmaster(&self) -> u32 {
        postmaster_of(&self.pg)
    }

    async fn reset(&self) {
        // create_event_type is create-or-update: every figure may run alone.
        self.sql(
            "TRUNCATE postbox.emitted, postbox.events, postbox.outbox, postbox.attempt_log, postbox.idempotency_keys;
             DELETE FROM postbox.endpoints;
             SELECT postbox.create_event_type('bench.event');",
        )
        .await;
        // Each figure starts from a vacuumed catalog of endpoints: figure 7
        // deletes 100,000 of them, whose cleanup would otherwise land in the
        // next figure's timing.
        self.sql(
            "VACUUM (ANALYZE) postbox.endpoints, postbox.endpoint_secrets, postbox.endpoint_pauses",
        )
        .await;
        self.stats.reset();
    }

    /// Endpoints on the receiver: `paths` like "/e0" or "/hang/1", for one tenant each or a shared one.
    async fn endpoints(&self, tenants_and_paths: &[(String, String)]) {
        let mut q = String::from("SET postbox.allow_insecure_urls = on;\n");
        let options = if self.endpoint_options.is_empty() {
            String::new()
        } else {
            format!(", options => '{}'", self.endpoint_options)
        };
        for (tenant, path) in tenants_and_paths {
            q.push_str(&format!(
                "SELECT postbox.create_endpoint('{tenant}', '{}{path}', '{{bench.*}}'{options});\n",
                self.target
            ));
        }
        q.push_str("RESET postbox.allow_insecure_urls;");
        self.sql(&q).await;
    }

    /// With POSTBOX_BENCH_STATEMENTS=1: the statements of the last
    /// throughput run (`throughput` resets the counts), by time.
    async fn print_statements(&self) {
        if !statements() {
            return;
        }
        let rows = self
            .db
            .query(
                "SELECT round(total_exec_time::numeric, 0)::text, calls::text, rows::text,
                        left(regexp_replace(query, '\\s+', ' ', 'g'), 150)
                   FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 30",
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            println!(
                "  statement: {:>8} ms {:>9} calls {:>9} rows  {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(3)
            );
        }
    }

    fn start_worker(&self) -> Started {
        self.start_worker_with(&[])
    }

    /// The worker with extra environment variables.
    fn start_worker_with(&self, env: &[(&str, &str)]) -> Started {
        self.start_worker_on(&self.pg.url("postgres"), env)
    }

    /// A worker against the database at `url` (figure 14: a Citus node).
    fn start_worker_on(&self, url: &str, env: &[(&str, &str)]) -> Started {
        Started::spawn(
            Command::new(&self.worker_bin)
                .envs(env.iter().copied())
                .envs(self.worker_env.iter().map(|(k, v)| (k, v)))
                .env("POSTBOX_DATABASE_URL", url)
                .env("POSTBOX_ALLOW_PRIVATE_TARGETS", "true")
                .env("POSTBOX_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
    }

    async fn wait_worker_idle(&self) {
        let db = &self.db;
        postbox_tests::wait_until(
            Duration::from_secs(60),
            "the worker to start",
            || async move {
                db.query_one("SELECT waiting FROM postbox.wakeup", &[])
                    .await
                    .ok()
                    .and_then(|r| r.get::<_, bool>(0).then_some(()))
            },
        )
        .await;
    }

    /// Waits until the worker's pool and LISTEN sessions are open (its
    /// loop starts right after), and returns when that was seen.
    async fn wait_worker_connected(&self) -> Instant {
        worker_sessions(&self.db, 2).await
    }

    async fn wait_delivered(&self, n: u64, limit: Duration) -> Instant {
        let stats = self.stats.clone();
        postbox_tests::wait_until(limit, "all deliveries", || {
            let stats = stats.clone();
            async move { (stats.ok.load(Ordering::SeqCst) >= n).then_some(()) }
        })
        .await;
        self.stats.last_ok.lock().unwrap().unwrap()
    }

    /// `events` events of ~600 bytes for tenant `bench`, 1,000 per transaction.
    /// Returns the instant the first transaction committed.
    async fn emit_events(&self, events: u64) -> Instant {
        let mut first = None;
        let mut i = 0;
        while i < events {
            let n = 1000.min(events - i);
            let key = match self.ordering_keys {
                0 => "NULL".to_string(),
                k => format!("(i % {k})::text"),
            };
            self.sql(&format!(
                "SELECT count(postbox.emit('bench', 'bench.event', jsonb_build_object('i', i, 'pad', repeat('x', 560)),
                                           NULL, {key}))
                   FROM generate_series({}, {}) i",
                i + 1,
                i + n
            ))
            .await;
            first.get_or_insert_with(Instant::now);
            i += n;
        }
        first.unwrap()
    }

    fn pgbench(&self, script: &str, clients: u32, secs: u32) -> f64 {
        self.pgbench_in("postgres", script, clients, secs)
    }

    /// pgbench's TPS for `script` in database `db`.
    fn pgbench_in(&self, db: &str, script: &str, clients: u32, secs: u32) -> f64 {
        pgbench_on(&self.pg, db, script, clients, secs)
    }

    // ---------------------------------------------------------------- 1
    async fn emit_overhead(&mut self) {
        println!("\n1. Emit overhead (worker stopped); the SQL flavour (postbox-sql) beside the extension");
        // The SQL flavour in a database of its own in the same cluster,
        // installed as a role that is not a superuser; its table is the
        // fourth variant of the same rounds.
        let flavour_db = "sqlflavour";
        self.sql(&format!("CREATE DATABASE {flavour_db}")).await;
        self.pg.install_sql_flavour(flavour_db).await;
        let flavour = self.pg.connect_to("postgres", flavour_db).await;
        let setup = "CREATE SCHEMA app;
             CREATE TABLE app.plain (id bigserial PRIMARY KEY, tenant text NOT NULL, title text, n int);
             CREATE TABLE app.bare (LIKE app.plain INCLUDING ALL);
             CREATE TABLE app.items (LIKE app.plain INCLUDING ALL);
             CREATE TABLE app.bare_outbox (id bigserial PRIMARY KEY, tenant text, data jsonb, created_at timestamptz DEFAULT now());
             CREATE FUNCTION app.bare_trigger() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO app.bare_outbox (tenant, data) VALUES (NEW.tenant, to_jsonb(NEW)); RETURN NULL; END $$;
             CREATE TRIGGER bare AFTER INSERT ON app.bare FOR EACH ROW EXECUTE FUNCTION app.bare_trigger();
             SELECT postbox.attach('app.items', 'item', 'tenant');
             SELECT postbox.create_event_type('other.thing');
             SELECT count(*) FROM (SELECT postbox.create_endpoint('tenant-' || i, 'https://hooks-' || i || '.example.com/in', '{item.*}') FROM generate_series(1, 100) i) x;
             SELECT count(*) FROM (SELECT postbox.create_endpoint('tenant-' || i, 'https://hooks-' || i || '.example.com/other', '{other.thing}') FROM generate_series(1, 100) i) x;";
        self.sql(setup).await;
        flavour.batch_execute(setup).await.unwrap();
        // The floor under any PL/pgSQL emit, beside postbox-sql: the leanest
        // statement trigger that writes the same postbox.emitted row (one
        // INSERT ... SELECT from the transition table: no check, no second
        // function, a random id). Measured, not targeted: it shows how much
        // of postbox-sql's distance to the bare outbox any PL/pgSQL trigger
        // of this shape would keep (docs/measurements.md).
        flavour
            .batch_execute(
                "CREATE TABLE app.floor (LIKE app.plain INCLUDING ALL);
                 CREATE FUNCTION app.floor_trigger() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN
                        INSERT INTO postbox.emitted (id, event_type, created_at, rows, trigger_args)
                        SELECT gen_random_uuid(), TG_ARGV[0] || '.created', clock_timestamp(), json_agg(t), TG_ARGV[0:1]
                          FROM postbox_new t;
                        RETURN NULL;
                      END $$;
                 CREATE TRIGGER floor AFTER INSERT ON app.floor REFERENCING NEW TABLE AS postbox_new
                   FOR EACH STATEMENT EXECUTE FUNCTION app.floor_trigger('item', 'tenant');",
            )
            .await
            .unwrap();
        let script = |t: &str| {
            format!("\\set t random(1, 100)\nINSERT INTO app.{t} (tenant, title, n) VALUES ('tenant-' || :t, 'a recording title', :t);\n")
        };
        // "sql" is app.items in the SQL flavour's database, "floor" app.floor there.
        let run = |variant: &str, clients: u32, secs: u32| match variant {
            "sql" => self.pgbench_in(flavour_db, &script("items"), clients, secs),
            "floor" => self.pgbench_in(flavour_db, &script("floor"), clients, secs),
            t => self.pgbench(&script(t), clients, secs),
        };
        // Four rounds in mirrored orders (no trigger, bare, postbox; then
        // postbox, bare, no trigger; ...), compared by sums: TPS drifts over a
        // run here, and a fixed order would charge the drift to whichever
        // variant always runs last.
        let (rounds, secs) = if self.quick { (1, 3) } else { (4, 30) };
        let mut tps: HashMap<&str, f64> = HashMap::new();
        for round in 1..=rounds {
            self.sql("TRUNCATE postbox.emitted, postbox.events, app.bare_outbox, app.plain, app.bare, app.items")
                .await;
            flavour
                .batch_execute("TRUNCATE postbox.emitted, postbox.events, app.items, app.floor")
                .await
                .unwrap();
            self.sql("CHECKPOINT").await;
            let order = if round % 2 == 1 {
                ["plain", "bare", "items", "sql", "floor"]
            } else {
                ["floor", "sql", "items", "bare", "plain"]
            };
            let mut this = HashMap::new();
            for t in order {
                this.insert(t, run(t, 8, secs));
            }
            println!(
                "     round {round} ({}): no trigger {:.0} TPS, bare outbox {:.0}, postbox {:.0}, postbox-sql {:.0}, PL/pgSQL floor {:.0}",
                order.join(", "),
                this["plain"],
                this["bare"],
                this["items"],
                this["sql"],
                this["floor"]
            );
            for (t, v) in this {
                *tps.entry(t).or_default() += v;
            }
        }
        let (plain, bare, items, sql) = (tps["plain"], tps["bare"], tps["items"], tps["sql"]);
        // The events are real: a sample expands to one delivery each (the
        // matching endpoint of its tenant, not the other one).
        let sample: i32 = self.one("SELECT postbox.expand_events(1000)").await;
        let routed: i64 = self.one("SELECT count(*) FROM postbox.outbox").await;
        assert!(
            sample == 1000 && routed == 1000,
            "the postbox run's events route to one endpoint each: {sample} events, {routed} deliveries"
        );
        // The target is against the bare outbox, interleaved in the same
        // rounds: the least any table-based transactional emit writes. Against
        // no trigger at all the ratio moves with the machine (a bare outbox
        // alone kept 0.67 to 0.85 of it across runs here), so it has no target.
        self.add(
            "emit: TPS ratio to a bare one-row outbox trigger (8 clients)",
            items / bare,
            "ratio",
            Some((">=", 0.90)),
        );
        self.add(
            "emit: TPS ratio to no trigger (8 clients)",
            items / plain,
            "ratio",
            None,
        );
        // The SQL flavour's events are as real: the same check in its database.
        let sample: i32 = flavour
            .query_one("SELECT postbox.expand_events(1000)", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(sample, 1000, "the SQL flavour's run emitted real events");
        // postbox-sql's own target (docs/managed.md): PL/pgSQL triggers.
        self.add(
            "emit (postbox-sql): TPS ratio to a bare one-row outbox trigger (8 clients)",
            sql / bare,
            "ratio",
            Some((">=", 0.85)),
        );
        self.add(
            "floor: the leanest PL/pgSQL statement trigger writing postbox.emitted, TPS ratio to the bare outbox",
            tps["floor"] / bare,
            "ratio",
            None,
        );
        self.add(
            "baseline: bare one-row outbox trigger, TPS ratio to no trigger",
            bare / plain,
            "ratio",
            None,
        );

        let secs1 = if self.quick { 2 } else { 10 };
        let (mut added, mut bulk) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let plain = self.pgbench(&script("plain"), 1, secs1);
            let items = self.pgbench(&script("items"), 1, secs1);
            added.push((1e6 / items - 1e6 / plain).max(0.0));
        }
        self.add(
            "emit: added time per row, 1 client",
            median(added),
            "us",
            None,
        );
        let mut bulk_sql = Vec::new();
        for _ in 0..rounds {
            let mut t = [0.0; 3];
            for (k, table) in ["plain", "items", "sql"].iter().enumerate() {
                let (db, table) = match *table {
                    "sql" => (&flavour, "items"),
                    t => (&self.db, t),
                };
                db.batch_execute(&format!(
                    "TRUNCATE app.{table}, postbox.emitted; CHECKPOINT;"
                ))
                .await
                .unwrap();
                let start = Instant::now();
                db.batch_execute(&format!(
                    "INSERT INTO app.{table} (tenant, title, n) SELECT 'tenant-' || (i % 100 + 1), 'bulk row', i FROM generate_series(1, 10000) i"
                ))
                .await
                .unwrap();
                t[k] = start.elapsed().as_secs_f64();
            }
            bulk.push(t[1] / t[0]);
            bulk_sql.push(t[2] / t[0]);
        }
        let emitted: i64 = self
            .one("SELECT coalesce(sum(json_array_length(rows)), 0)::int8 FROM postbox.emitted")
            .await;
        assert_eq!(emitted, 10_000);
        self.add(
            "emit: time ratio of one 10,000-row INSERT ... SELECT",
            median(bulk),
            "ratio",
            Some(("<=", 2.0)),
        );
        let emitted: i64 = flavour
            .query_one(
                "SELECT coalesce(sum(json_array_length(rows)), 0)::int8 FROM postbox.emitted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(emitted, 10_000);
        self.add(
            "emit (postbox-sql): time ratio of one 10,000-row INSERT ... SELECT",
            median(bulk_sql),
            "ratio",
            Some(("<=", 2.5)),
        );
        drop(flavour);
        self.sql("DROP SCHEMA app CASCADE;").await;
        // A statement of its own: DROP DATABASE cannot run in a transaction block.
        self.sql(&format!("DROP DATABASE {flavour_db} WITH (FORCE)"))
            .await;
        self.reset().await;
    }

    /// Runs `events` x 10 endpoints with the worker; `hanging` of the 10 never answer.
    /// With `noisy` tenants, the hanging ones are not tenant bench's: each
    /// noisy tenant has [`NOISY_ENDPOINTS`] endpoints that never answer and
    /// [`NOISY_EVENTS`] events, emitted (and hanging) before bench's.
    /// Returns (healthy deliveries/s, worker pid stats).
    async fn throughput(
        &mut self,
        events: u64,
        hanging: usize,
        idle: u64,
        noisy: usize,
    ) -> (f64, Duration, Duration, Duration, Duration, u64) {
        self.reset().await;
        if idle > 0 {
            // Idle endpoints of other tenants, 10 each, as a SaaS with many
            // customers has: enabled, subscribed, never sent anything.
            self.sql(&format!(
                "SELECT count(*) FROM (SELECT postbox.create_endpoint('idle-' || (i / 10), 'https://idle-' || i || '.example.com/in', '{{bench.*}}')
                   FROM generate_series(1, {idle}) i) x;"
            ))
            .await;
            // A steady state, as in production where they were made long
            // ago: vacuumed and analysed, so autovacuum's first pass over
            // 100,000 new rows is not timed as part of the deliveries.
            self.sql("VACUUM ANALYZE postbox.endpoints, postbox.endpoint_secrets;")
                .await;
        }
        let mut eps: Vec<(String, String)> = (0..10)
            .filter(|i| noisy == 0 || *i >= hanging)
            .map(|i| {
                (
                    "bench".to_string(),
                    if i < hanging {
                        format!("/hang/{i}")
                    } else {
                        format!("/e{i}")
                    },
                )
            })
            .collect();
        for n in 0..noisy {
            eps.extend(
                (0..NOISY_ENDPOINTS).map(|i| (format!("noisy-{n}"), format!("/hang/n{n}-{i}"))),
            );
        }
        self.endpoints(&eps).await;
        // Every run starts from a checkpoint, as figures 1 and 5 do: a run
        // writes gigabytes of WAL, and a checkpoint (max_wal_size 4GB) would
        // otherwise land in whichever run crosses it, charging its I/O and
        // full-page writes to that run alone.
        self.sql("CHECKPOINT").await;
        if statements() {
            self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()").await;
            if std::env::var("POSTBOX_BENCH_EXPLAIN").is_ok() {
                // Plans of statements over 3 ms, with their row counts and
                // times (which auto_explain's timing inflates), in the
                // server log; batched() copies it out.
                for q in [
                    "LOAD 'auto_explain'",
                    "ALTER SYSTEM SET session_preload_libraries = 'auto_explain'",
                    "ALTER SYSTEM SET auto_explain.log_min_duration = '3ms'",
                    "ALTER SYSTEM SET auto_explain.log_analyze = on",
                    "ALTER SYSTEM SET auto_explain.log_nested_statements = on",
                    "SELECT pg_reload_conf()",
                ] {
                    self.sql(q).await;
                }
            }
        }
        let worker = self.start_worker();
        self.wait_worker_idle().await;
        if noisy > 0 {
            for n in 0..noisy {
                self.sql(&format!(
                    "SELECT count(postbox.emit('noisy-{n}', 'bench.event', '{{}}')) FROM generate_series(1, {NOISY_EVENTS})"
                ))
                .await;
            }
            // Bench's events come once the noisy tenants hold what they may
            // (at least what one tenant alone may: 96 of the slow slots).
            let stats = self.stats.clone();
            postbox_tests::wait_until(
                Duration::from_secs(60),
                "the noisy requests to hang",
                || {
                    let stats = stats.clone();
                    async move { (stats.hanging.load(Ordering::SeqCst) >= 96).then_some(()) }
                },
            )
            .await;
        }
        let pid = worker.id();
        let (w0, p0, b0) = (
            procstat::process_cpu(pid),
            procstat::cluster_cpu(self.postmaster()),
            procstat::process_cpu(std::process::id()),
        );
        let healthy = events * (10 - hanging as u64);
        let first = self.emit_events(events).await;
        let last = self
            .wait_delivered(
                healthy,
                Duration::from_secs(if self.quick { 120 } else { 900 }),
            )
            .await;
        let wall = last.duration_since(first);
        let (w1, p1, b1) = (
            procstat::process_cpu(pid),
            procstat::cluster_cpu(self.postmaster()),
            procstat::process_cpu(std::process::id()),
        );
        let rss = procstat::peak_rss(pid);
        worker.stop();
        (
            healthy as f64 / wall.as_secs_f64(),
            wall,
            w1 - w0,
            p1 - p0,
            b1 - b0,
            rss,
        )
    }

    // ---------------------------------------------------------------- 0
    /// Figure 0, the ceiling C (ceiling.rs); returns C.
    async fn ceiling(&mut self) -> f64 {
        let (warmup, window) = if self.quick { (1, 3) } else { (5, 20) };
        println!("\n0. The ceiling C: bare loops (write, claim, sign and POST, delete) together for {window} s");
        self.stats.reset();
        let c = ceiling::measure(
            self,
            Duration::from_secs(warmup),
            Duration::from_secs(window),
        )
        .await;
        self.stats.reset();
        self.add(
            "ceiling C: deliveries per second",
            c.rate,
            "deliveries/s",
            None,
        );
        for (name, cpu) in [
            ("PostgreSQL", c.postgres),
            ("sender", c.sender),
            ("receiver and writer", c.rest),
        ] {
            self.add(
                format!("ceiling C: CPU per delivery, {name}"),
                1e6 * cpu.as_secs_f64() / c.deliveries as f64,
                "us",
                None,
            );
        }
        c.rate
    }

    // ---------------------------------------------------------------- 2, 6, 4
    /// Figures 0, 2 and 6, then 10 (`https`), 11 (`batched`), 12 (`ordered`), 4
    /// (`isolation`) and 7 (`many`) when asked.
    async fn throughput_and_isolation(
        &mut self,
        isolation: bool,
        many: bool,
        https: bool,
        batched: bool,
        ordered: bool,
    ) {
        let events = std::env::var("POSTBOX_BENCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if self.quick { 2_000 } else { 100_000 });
        let c = self.ceiling().await;
        println!("\n2. End-to-end throughput: {events} events x 10 endpoints, emitted in transactions of 1,000 while the worker runs");
        let (rate, wall, worker, pg, recv, rss) = self.throughput(events, 0, 0, 0).await;
        let total = (worker + pg + recv).as_secs_f64();
        self.print_statements().await;
        println!(
            "     {} deliveries in {:.2} s",
            events * 10,
            wall.as_secs_f64()
        );
        self.add(
            "throughput: deliveries per second (first commit to last 2xx)",
            rate,
            "deliveries/s",
            Some((">=", 10_000.0)),
        );
        self.add(
            "throughput: as a ratio of the ceiling C",
            rate / c,
            "x C",
            Some((">=", 0.5)),
        );
        for (name, cpu) in [
            ("PostgreSQL", pg),
            ("worker", worker),
            ("receiver and emitter", recv),
        ] {
            self.add(
                format!("throughput: CPU share, {name}"),
                100.0 * cpu.as_secs_f64() / total,
                "%",
                None,
            );
            self.add(
                format!("throughput: CPU per delivery, {name}"),
                1e6 * cpu.as_secs_f64() / (events * 10) as f64,
                "us",
                None,
            );
        }
        println!("\n6. Worker memory");
        self.add(
            "worker: peak RSS during figure 2",
            rss as f64 / 1048576.0,
            "MiB",
            Some(("<=", 64.0)),
        );

        if https {
            self.https(events, rate, c).await;
        }
        if batched {
            self.batched(events, c).await;
        }
        if ordered {
            self.ordered(events, rate, c).await;
        }
        // Figure 7's first round compares with the run of figure 2 right before it.
        let last = if isolation {
            self.isolation(events, rate).await
        } else {
            rate
        };
        if many {
            self.many_endpoints(events, last).await;
        }
    }

    /// Figure 10: figure 2 to HTTPS receivers (rustls, a certificate from a
    /// CA made for the run, which the worker is told to trust): over
    /// HTTP/1.1, and over HTTP/2 (the receiver offers it by ALPN, the
    /// worker runs with POSTBOX_HTTP2=true). A full run measures each twice,
    /// mirrored (1.1, 2, 2, 1.1), as figure 4 does. `plain` is figure 2's
    /// rate, right before, and `c` the ceiling C of this run.
    async fn https(&mut self, events: u64, plain: f64, c: f64) {
        let ca = postbox_tests::tls::test_ca();
        let ca_file =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/bench-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let variants: [(&str, &[&[u8]], &str); 2] = [
            ("HTTP/1.1", &[b"http/1.1"], "false"),
            ("HTTP/2", &[b"h2", b"http/1.1"], "true"),
        ];
        let order: &[usize] = if self.quick { &[0, 1] } else { &[0, 1, 1, 0] };
        let mut sums = [(0.0, Duration::ZERO, 0u64); 2];
        for &v in order {
            let (name, alpn, http2) = variants[v];
            println!("\n10. Figure 2 over HTTPS, {name}");
            let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            let acceptor = postbox_tests::tls::tls_acceptor_alpn(params, &ca, alpn);
            let rx = receiver::start_tls(self.stats.clone(), acceptor).await;
            let plain_target =
                std::mem::replace(&mut self.target, format!("https://localhost:{}", rx.port()));
            self.worker_env = vec![
                (
                    "POSTBOX_EXTRA_ROOT_CERTS".to_string(),
                    ca_file.display().to_string(),
                ),
                ("POSTBOX_HTTP2".to_string(), http2.to_string()),
            ];
            let h2_before = self.stats.http2.load(Ordering::SeqCst);
            let (rate, _, worker, _, _, _) = self.throughput(events, 0, 0, 0).await;
            let h2 = self.stats.http2.load(Ordering::SeqCst) - h2_before;
            self.target = plain_target;
            self.worker_env.clear();
            println!("     {rate:.0} deliveries/s, {h2} requests over HTTP/2");
            sums[v].0 += rate;
            sums[v].1 += worker;
            sums[v].2 += h2;
        }
        let rounds = order.len() as f64 / 2.0;
        for (v, (name, _, _)) in variants.iter().enumerate() {
            let (rate_sum, cpu, h2) = sums[v];
            let rate = rate_sum / rounds;
            self.add(
                format!("HTTPS {name}: deliveries per second"),
                rate,
                "deliveries/s",
                None,
            );
            self.add(
                format!("HTTPS {name}: as a ratio of plain HTTP (figure 2)"),
                rate / plain,
                "x",
                None,
            );
            self.add(
                format!("HTTPS {name}: as a ratio of the ceiling C"),
                rate / c,
                "x C",
                None,
            );
            self.add(
                format!("HTTPS {name}: worker CPU per delivery"),
                1e6 * cpu.as_secs_f64() / (rounds * (events * 10) as f64),
                "us",
                None,
            );
            self.add(
                format!("HTTPS {name}: requests that went over HTTP/2"),
                100.0 * h2 as f64 / (rounds * (events * 10) as f64),
                "%",
                None,
            );
        }
    }

    /// Figure 11: figure 2 to endpoints that batch (`batch_max_events` 100),
    /// whose receiver parses each batch and counts its events; events
    /// delivered per second (each event to each endpoint counts once, as a
    /// delivery does in figure 2), as a ratio of C, and the CPU per event.
    async fn batched(&mut self, events: u64, c: f64) {
        println!("\n11. Batched: figure 2 to 10 endpoints with batch_max_events 100");
        self.endpoint_options = r#"{"batch_max_events": 100}"#.to_string();
        let plain_target = self.target.clone();
        self.target = format!("{plain_target}/batch");
        let (rate, wall, worker, pg, recv, _) = self.throughput(events, 0, 0, 0).await;
        self.target = plain_target;
        self.endpoint_options.clear();
        if std::env::var("POSTBOX_BENCH_EXPLAIN").is_ok() {
            let to = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/server.log");
            std::fs::copy(self.pg.dir().join("server.log"), &to).unwrap();
            println!("     server log with plans: {}", to.display());
        }
        self.print_statements().await;
        println!("     {} events in {:.2} s", events * 10, wall.as_secs_f64());
        self.add(
            "batched: events per second (batch_max_events 100, 10 endpoints)",
            rate,
            "events/s",
            Some((">=", 50_000.0)),
        );
        self.add(
            "batched: as a ratio of the ceiling C",
            rate / c,
            "x C",
            Some((">=", 1.2)),
        );
        for (name, cpu) in [
            ("PostgreSQL", pg),
            ("worker", worker),
            ("receiver and emitter", recv),
        ] {
            self.add(
                format!("batched: CPU per event, {name}"),
                1e6 * cpu.as_secs_f64() / (events * 10) as f64,
                "us",
                None,
            );
        }
    }

    /// Figure 12: figure 2 to endpoints ordered per key (`"ordering": "key"`),
    /// the events spread over 100 keys, so 1,000 keys over the 10 endpoints,
    /// as a ratio of unordered delivery in the same run. A full run measures
    /// ordered, figure 2 again, ordered, and compares the means (`plain` is
    /// the figure 2 right before), as figure 4 mirrors its runs.
    async fn ordered(&mut self, events: u64, plain: f64, c: f64) {
        const KEYS: u64 = 100;
        let rounds = if self.quick { 1 } else { 2 };
        let (mut ordered_sum, mut plain_sum) = (0.0, plain);
        let mut pg_cpu = Duration::ZERO;
        for round in 0..rounds {
            if round > 0 {
                println!("\n12. Figure 2 again, between the ordered runs");
                let (rate, ..) = self.throughput(events, 0, 0, 0).await;
                println!("     {rate:.0} deliveries/s");
                plain_sum += rate;
            }
            println!("\n12. Ordered: figure 2 to 10 endpoints ordered per key, {KEYS} keys each");
            self.endpoint_options = r#"{"ordering": "key"}"#.to_string();
            self.ordering_keys = KEYS;
            let (rate, wall, _, pg, _, _) = self.throughput(events, 0, 0, 0).await;
            self.endpoint_options.clear();
            self.ordering_keys = 0;
            self.print_statements().await;
            println!(
                "     {} deliveries in {:.2} s: {rate:.0}/s",
                events * 10,
                wall.as_secs_f64()
            );
            ordered_sum += rate;
            pg_cpu += pg;
        }
        let rate = ordered_sum / rounds as f64;
        let plain = plain_sum / rounds as f64;
        self.add(
            "ordered: deliveries per second (1,000 keys over 10 endpoints)",
            rate,
            "deliveries/s",
            None,
        );
        self.add(
            "ordered: as a ratio of unordered (figure 2, same run)",
            rate / plain,
            "x",
            Some((">=", 0.8)),
        );
        self.add(
            "ordered: as a ratio of the ceiling C",
            rate / c,
            "x C",
            None,
        );
        self.add(
            "ordered: CPU per delivery, PostgreSQL",
            1e6 * pg_cpu.as_secs_f64() / (rounds * events * 10) as f64,
            "us",
            None,
        );
    }

    /// Figure 4: figure 2 with 5 of its 10 endpoints hanging, and the same
    /// with the hanging endpoints in 4 noisy tenants instead; `rate` is
    /// figure 2's. Returns the rate of the last run of figure 2 it made.
    ///
    /// A full run measures each twice, in the order figure 2, 4, 4n, 4n, 4, 2
    /// (the first 2 being figure 2 itself), and compares the sums: single
    /// runs a minute apart differ by ±5% here, and the mirrored order cancels
    /// a drift over the runs instead of charging it to one variant.
    async fn isolation(&mut self, events: u64, rate: f64) -> f64 {
        // Blocks of (hanging, noisy, noisy, hanging), each followed by a run
        // of figure 2: A HNNH A HNNH A. Runs a minute apart moved by up to a
        // fifth here (docs/measurements.md), so the ratios compare means over
        // runs that mirror each other in time; one block read anywhere from
        // 0.895 to 1.125 for the same build.
        let blocks = if self.quick { 1 } else { 2 };
        let rounds = 2 * blocks;
        println!(
            "\n4. Isolation: the same, with 5 of the 10 endpoints accepting and never answering; then bench's 5 healthy endpoints beside {NOISY} noisy tenants with {NOISY_ENDPOINTS} such endpoints each ({blocks} block{}, each followed by a run of figure 2)",
            if blocks == 1 { "" } else { "s" }
        );
        let (mut hanging, mut worker, mut pg, mut recv) =
            (0.0, Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut noisy_sum = 0.0;
        let (mut healthy, mut last) = (rate, rate);
        for _ in 0..blocks {
            for noisy in [0, NOISY, NOISY, 0] {
                let (r, w, wk, p, rc, _) = self.throughput(events, 5, 0, noisy).await;
                println!(
                    "     {} healthy deliveries in {:.2} s: {r:.0}/s{}",
                    events * 5,
                    w.as_secs_f64(),
                    if noisy > 0 {
                        format!(" ({noisy} noisy tenants)")
                    } else {
                        String::new()
                    }
                );
                if noisy > 0 {
                    noisy_sum += r;
                } else {
                    hanging += r;
                    (worker, pg, recv) = (worker + wk, pg + p, recv + rc);
                }
            }
            last = self.throughput(events, 0, 0, 0).await.0;
            println!("     figure 2 again: {last:.0}/s (first {rate:.0}/s)");
            healthy += last;
        }
        // The mean of figure 2's blocks + 1 runs, scaled to `rounds` runs.
        let healthy = healthy / (blocks + 1) as f64 * rounds as f64;
        let n = (events * 5 * rounds as u64) as f64;
        self.add(
            "isolation: healthy deliveries/s",
            hanging / rounds as f64,
            "deliveries/s",
            None,
        );
        for (name, cpu) in [
            ("PostgreSQL", pg),
            ("worker", worker),
            ("receiver and emitter", recv),
        ] {
            self.add(
                format!("isolation: CPU per healthy delivery, {name}"),
                1e6 * cpu.as_secs_f64() / n,
                "us",
                None,
            );
        }
        self.add(
            "isolation: healthy rate as a ratio to the all-healthy run",
            hanging / healthy,
            "ratio",
            Some((">=", 0.90)),
        );
        self.add(
            format!("isolation with {NOISY} noisy tenants: healthy deliveries/s"),
            noisy_sum / rounds as f64,
            "deliveries/s",
            None,
        );
        self.add(
            format!("isolation with {NOISY} noisy tenants: ratio to the all-healthy run"),
            noisy_sum / healthy,
            "ratio",
            Some((">=", 0.85)),
        );
        last
    }

    /// Figure 7: figure 2 with 100,000 idle endpoints; `rate` is figure 2's.
    async fn many_endpoints(&mut self, events: u64, rate: f64) {
        let idle = if self.quick { 5_000 } else { 100_000 };
        // Two single runs a minute apart differ by up to ±5% here: a full run
        // measures figure 7 twice, each time right after a run of figure 2,
        // and compares the sums.
        let rounds = if self.quick { 1 } else { 2 };
        println!(
            "\n7. Many endpoints: figure 2 again, with {idle} other enabled endpoints idle ({rounds}x, each after a run of figure 2)"
        );
        let (mut plain, mut many, mut many_pg) = (0.0, 0.0, Duration::ZERO);
        for round in 0..rounds {
            let base = if round == 0 {
                rate
            } else {
                self.throughput(events, 0, 0, 0).await.0
            };
            let (many_rate, wall, _, pg, _, _) = self.throughput(events, 0, idle, 0).await;
            println!(
                "     {} deliveries in {:.2} s: {many_rate:.0}/s, figure 2 {base:.0}/s",
                events * 10,
                wall.as_secs_f64()
            );
            plain += base;
            many += many_rate;
            many_pg += pg;
        }
        self.add(
            format!("many endpoints: deliveries per second with {idle} idle endpoints"),
            many / rounds as f64,
            "deliveries/s",
            None,
        );
        self.add(
            "many endpoints: CPU per delivery, PostgreSQL",
            1e6 * many_pg.as_secs_f64() / (rounds * events * 10) as f64,
            "us",
            None,
        );
        self.add(
            "many endpoints: rate as a ratio to figure 2",
            many / plain,
            "ratio",
            Some((">=", 0.90)),
        );
    }

    // ---------------------------------------------------------------- 3
    async fn latency(&mut self) {
        let secs = if self.quick { 3 } else { 30 };
        println!(
            "\n3. Latency: a steady 1,000 events/s for {secs} s, round-robin over 10 endpoints"
        );
        self.reset().await;
        let eps: Vec<(String, String)> = (0..10)
            .map(|i| (format!("lat-{i}"), format!("/l{i}")))
            .collect();
        self.endpoints(&eps).await;
        let worker = self.start_worker();
        self.wait_worker_idle().await;
        self.stats.record_arrivals.store(true, Ordering::SeqCst);
        let total = secs * 1000;
        let start = Instant::now() + Duration::from_millis(50);
        let tasks = self
            .steady_emit(
                total,
                start,
                "lat",
                "jsonb_build_object('k', $2::int8)",
                true,
            )
            .await;
        let mut commits = Vec::new();
        for t in tasks {
            commits.extend(t.await.unwrap());
        }
        let achieved = total as f64 / start.elapsed().as_secs_f64();
        self.wait_delivered(total, Duration::from_secs(120)).await;
        self.stats.record_arrivals.store(false, Ordering::SeqCst);
        worker.stop();
        let arrivals = std::mem::take(&mut *self.stats.arrivals.lock().unwrap());
        // Arrival can precede the client seeing its COMMIT acknowledged; that counts as 0.
        let mut lat: Vec<f64> = commits
            .iter()
            .map(|(id, c)| {
                arrivals
                    .get(id)
                    .map(|a| a.saturating_duration_since(*c).as_secs_f64() * 1000.0)
                    .unwrap()
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        self.add("latency: emit rate achieved", achieved, "events/s", None);
        self.add(
            "latency: commit to arrival, p50",
            percentile(&lat, 0.50),
            "ms",
            Some(("<=", 5.0)),
        );
        self.add(
            "latency: commit to arrival, p99",
            percentile(&lat, 0.99),
            "ms",
            Some(("<=", 20.0)),
        );
    }

    /// Figure 9: postbox-api (release build, its own process, rate limit
    /// off) under 32 clients on loopback: `GET /v1/endpoints` (10 endpoints)
    /// at a steady 1,000 requests/s, then as fast as it answers, then
    /// `POST /v1/tenants/{t}/events` as fast as it answers (each closed loop
    /// in three windows, the median window's rate); requests/s, p50, p99,
    /// and the API's and PostgreSQL's CPU per request.
    async fn http_api(&mut self) {
        const CLIENTS: usize = 32;
        // Closed loops: three windows, the median's rate.
        const WINDOWS: usize = 3;
        let (paced, reads, events) = if self.quick {
            (2_000, 3_000, 3_000)
        } else {
            (30_000, 45_000, 90_000)
        };
        println!("\n9. HTTP API: {CLIENTS} clients on loopback, the API in its own process");
        self.reset().await;
        let eps: Vec<(String, String)> = (0..10)
            .map(|i| ("api-bench".to_string(), format!("/a{i}")))
            .collect();
        self.endpoints(&eps).await;
        self.sql(
            "DO $r$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'postbox_api_bench') THEN
                 CREATE ROLE postbox_api_bench LOGIN IN ROLE postbox_admin, postbox_emitter;
                 ALTER ROLE postbox_api_bench SET log_parameter_max_length = 0;
               END IF;
             END $r$;",
        )
        .await;
        let admin: String = self
            .one("SELECT key FROM postbox.create_api_key('api-bench', 'admin', 'bench')")
            .await;
        let operator: String = self
            .one("SELECT key FROM postbox.create_api_key(NULL, 'operator', 'bench')")
            .await;
        let port = postbox_tests::free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let api_bin = self.worker_bin.with_file_name("postbox-api");
        let api = Started::spawn(
            Command::new(&api_bin)
                .env("POSTBOX_API_DATABASE_URL", self.pg.url("postbox_api_bench"))
                .env("POSTBOX_API_LISTEN", addr.to_string())
                .env("POSTBOX_API_RATE_LIMIT", "0")
                .env("POSTBOX_API_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        postbox_tests::wait_until(Duration::from_secs(30), "the API to listen", || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        let get: load::MakeRequest = Arc::new(move |_| {
            hyper::Request::get("/v1/endpoints")
                .header("host", "127.0.0.1")
                .header("authorization", format!("Bearer {admin}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap()
        });
        let post: load::MakeRequest = Arc::new(move |k| {
            hyper::Request::post("/v1/tenants/api-bench/events")
                .header("host", "127.0.0.1")
                .header("authorization", format!("Bearer {operator}"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                    r#"{{"event_type":"bench.event","data":{{"order":{k},"total":1999,"currency":"EUR"}}}}"#
                ))))
                .unwrap()
        });
        // The last measurement is the first one again, while another tenant
        // holds 32 sockets that never finish a body and replays 10,000
        // failed deliveries in a loop from 8 clients: the same p99 target.
        self.sql(
            "SELECT postbox.create_endpoint('api-noisy', 'https://hooks.example.com/noisy', '{*}');
             INSERT INTO postbox.events (id, tenant, event_type, data, created_at)
             VALUES (gen_random_uuid(), 'api-noisy', 'bench.event', '{}', now());
             INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, status, next_attempt_at, created_at)
             SELECT 'api-noisy', e.id, v.id, 'failed', now(), now() - interval '1 day' + i * interval '1 ms'
               FROM postbox.endpoints e, postbox.events v, generate_series(1, 10000) i
              WHERE e.tenant = 'api-noisy' AND v.tenant = 'api-noisy';",
        )
        .await;
        let noisy_key: String = self
            .one("SELECT key FROM postbox.create_api_key('api-noisy', 'admin', 'bench')")
            .await;
        let noisy_endpoint: uuid::Uuid = self
            .one("SELECT id FROM postbox.endpoints WHERE tenant = 'api-noisy'")
            .await;
        let noisy_db = self.pg.connect("postgres").await;
        // Warm up: connections, prepared statements.
        load::run(addr, CLIENTS, 500, None, get.clone()).await;
        let pm = self.postmaster();
        let mut measure =
            async |name: &str,
                   n: usize,
                   rate: Option<f64>,
                   make: load::MakeRequest,
                   target: Option<(&'static str, f64)>,
                   rate_target: Option<(&'static str, f64)>| {
                // A closed loop runs in WINDOWS windows of n / WINDOWS
                // requests and reports the median window's rate: a single
                // window of a few seconds here moved by up to a quarter
                // when the machine slowed (the API's own CPU per request
                // rose with PostgreSQL's), for 0.6.0 and 0.7.0 alike.
                let windows = if rate.is_none() { WINDOWS } else { 1 };
                let (api0, pg0) = (procstat::process_cpu(api.id()), procstat::cluster_cpu(pm));
                let (mut rates, mut latencies) = (Vec::new(), Vec::new());
                for _ in 0..windows {
                    let l = load::run(addr, CLIENTS, n / windows, rate, make.clone()).await;
                    assert_eq!(l.failed, 0, "{name}: answers other than 2xx");
                    rates.push(l.rate());
                    latencies.extend(l.latencies_ms);
                }
                latencies.sort_by(f64::total_cmp);
                let (api_cpu, pg_cpu) = (
                    procstat::process_cpu(api.id()) - api0,
                    procstat::cluster_cpu(pm) - pg0,
                );
                let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
                if windows > 1 {
                    let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
                    println!(
                        "     {name}: windows of {} requests: {}/s",
                        n / windows,
                        shown.join(", ")
                    );
                }
                self.add(
                    format!("http api: {name}, requests/s"),
                    median(rates),
                    "requests/s",
                    rate_target,
                );
                self.add(
                    format!("http api: {name}, p50"),
                    percentile(&latencies, 0.50),
                    "ms",
                    None,
                );
                self.add(
                    format!("http api: {name}, p99"),
                    percentile(&latencies, 0.99),
                    "ms",
                    target,
                );
                self.add(
                    format!("http api: {name}, CPU per request, API"),
                    per(api_cpu),
                    "µs",
                    None,
                );
                self.add(
                    format!("http api: {name}, CPU per request, PostgreSQL"),
                    per(pg_cpu),
                    "µs",
                    None,
                );
            };
        measure(
            "GET /v1/endpoints at 1,000/s",
            paced,
            Some(1000.0),
            get.clone(),
            Some(("<=", 20.0)),
            None,
        )
        .await;
        let get_again = get.clone();
        measure(
            "GET /v1/endpoints, closed loop",
            reads,
            None,
            get,
            None,
            None,
        )
        .await;
        measure(
            "POST events, closed loop",
            events,
            None,
            post,
            None,
            Some((">=", 5000.0)),
        )
        .await;
        let noise = noise::start(addr, &noisy_key, noisy_endpoint, 32, 8, noisy_db).await;
        measure(
            "GET /v1/endpoints at 1,000/s, beside a noisy tenant",
            paced,
            Some(1000.0),
            get_again,
            Some(("<=", 20.0)),
            None,
        )
        .await;
        let replays = noise.stop().await;
        println!("     the noisy tenant's replays answered meanwhile: {replays}");
        assert!(replays > 0, "the noisy tenant's replays ran");
        api.stop();
    }

    /// A steady emit of one event per millisecond from `start`, on two
    /// connections taking turns: event k goes to tenant `{prefix}-{k % 10}`
    /// with the data `data` makes of it ($2). With `record`, each task
    /// returns its events' ids and when each commit was seen.
    async fn steady_emit(
        &self,
        total: u64,
        start: Instant,
        prefix: &'static str,
        data: &'static str,
        record: bool,
    ) -> Vec<tokio::task::JoinHandle<Vec<(String, Instant)>>> {
        let mut tasks = Vec::new();
        for lane in 0..2u64 {
            let client = self.pg.connect("postgres").await;
            tasks.push(tokio::spawn(async move {
                let stmt = client
                    .prepare(&format!("SELECT postbox.emit($1, 'bench.event', {data})"))
                    .await
                    .unwrap();
                let mut commits = Vec::new();
                for k in (lane..total).step_by(2) {
                    tokio::time::sleep_until((start + Duration::from_millis(k)).into()).await;
                    let tenant = format!("{prefix}-{}", k % 10);
                    let id: uuid::Uuid = client
                        .query_one(&stmt, &[&tenant, &(k as i64)])
                        .await
                        .unwrap()
                        .get(0);
                    if record {
                        commits.push((id.to_string(), Instant::now()));
                    }
                }
                commits
            }));
        }
        tasks
    }

    // ---------------------------------------------------------------- 8
    /// Figure 8, the soak: a steady 1,000 events/s, round-robin over 10
    /// endpoints as in figure 3, for 20 minutes with every retention window
    /// at 2 minutes. postbox's total size (tables, indexes, TOAST) each
    /// minute must stay within ±10% of minute 10's until the end; and the
    /// purge's share of PostgreSQL's CPU.
    async fn soak(&mut self) {
        let (ticks, tick, window) = if self.quick {
            (4, Duration::from_secs(10), "10 seconds")
        } else {
            (20, Duration::from_secs(60), "2 minutes")
        };
        let reference = ticks / 2;
        let purge_every = if self.quick { "2s" } else { "10s" };
        println!(
            "\n8. Soak: 1,000 events/s round-robin over 10 endpoints for {ticks} x {}s, retention {window}, purge every {purge_every}",
            tick.as_secs()
        );
        self.reset().await;
        let eps: Vec<(String, String)> = (0..10)
            .map(|i| (format!("soak-{i}"), format!("/s{i}")))
            .collect();
        self.endpoints(&eps).await;
        self.sql(&format!(
            "SELECT postbox.set_retention('{window}', '{window}', '{window}', '{window}');
             ALTER DATABASE postgres SET track_functions = 'pl';
             SELECT pg_stat_reset();"
        ))
        .await;
        let worker = self.start_worker_with(&[("POSTBOX_PURGE_INTERVAL", purge_every)]);
        self.wait_worker_idle().await;
        let cpu0 = procstat::cluster_cpu(self.postmaster());
        let total = ticks as u64 * tick.as_millis() as u64; // one event per ms
        let start = Instant::now() + Duration::from_millis(50);
        let tasks = self
            .steady_emit(
                total,
                start,
                "soak",
                "jsonb_build_object('k', $2::int8, 'note', 'a soak event of ordinary size')",
                false,
            )
            .await;
        let mut sizes = Vec::new();
        for t in 1..=ticks {
            tokio::time::sleep_until((start + tick * t as u32).into()).await;
            let bytes: i64 = self
                .one(
                    "SELECT sum(pg_total_relation_size(c.oid))::int8 FROM pg_class c
                      WHERE c.relnamespace = 'postbox'::regnamespace AND c.relkind = 'r'",
                )
                .await;
            let mib = bytes as f64 / 1048576.0;
            println!("     after {t} x {}s: {mib:.1} MiB", tick.as_secs());
            sizes.push(mib);
        }
        for t in tasks {
            t.await.unwrap();
        }
        let achieved = total as f64 / start.elapsed().as_secs_f64();
        self.wait_delivered(total, Duration::from_secs(300)).await;
        let cpu = procstat::cluster_cpu(self.postmaster()) - cpu0;
        // The purge's own time, from PostgreSQL's function statistics.
        tokio::time::sleep(Duration::from_secs(1)).await; // statistics reach the view within a second
        let purge_ms: f64 = self
            .one("SELECT coalesce(sum(total_time), 0)::float8 FROM pg_stat_user_functions WHERE schemaname = 'postbox' AND funcname = 'purge'")
            .await;
        worker.stop();
        // Back to the defaults: without a row, the next purge writes them.
        self.sql("ALTER DATABASE postgres RESET track_functions; DELETE FROM postbox.retention;")
            .await;
        self.add("soak: emit rate achieved", achieved, "events/s", None);
        for (t, mib) in sizes.iter().enumerate() {
            self.add(
                format!("soak: postbox's size after {} x {}s", t + 1, tick.as_secs()),
                *mib,
                "MiB",
                None,
            );
        }
        let base = sizes[reference - 1];
        let drift = sizes[reference..]
            .iter()
            .map(|m| (100.0 * (m - base) / base).abs())
            .fold(0.0, f64::max);
        self.add(
            format!(
                "soak: largest size change after {reference} x {}s, from then",
                tick.as_secs()
            ),
            drift,
            "%",
            Some(("<=", 10.0)),
        );
        self.add(
            "soak: purge's share of PostgreSQL's CPU",
            100.0 * purge_ms / 1000.0 / cpu.as_secs_f64(),
            "%",
            None,
        );
    }

    // ---------------------------------------------------------------- 5
    async fn backlog(&mut self) {
        let (small, large, runs) = if self.quick {
            (2_000u64, 20_000u64, 1)
        } else {
            // Five pairs: single 100,000 drains (6 s each) vary by ±10% here.
            (100_000, 1_000_000, 5)
        };
        println!("\n5. Backlog: {large} vs {small} due deliveries created through emit with the worker stopped, drained {runs}x each");
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (k, n) in [small, large].into_iter().enumerate() {
                self.reset().await;
                let eps: Vec<(String, String)> = (0..10)
                    .map(|i| ("bench".to_string(), format!("/e{i}")))
                    .collect();
                self.endpoints(&eps).await;
                self.emit_events(n / 10).await;
                self.sql("VACUUM ANALYZE postbox.emitted").await;
                self.sql("CHECKPOINT").await;
                let worker = self.start_worker();
                // From the moment the worker is connected, not from the spawn
                // (its start-up is the same for both sizes and would favour
                // the large one), nor from the first 2xx (the worker expands
                // the emitted events before its first claim, so that would
                // leave the small backlog's expansion out).
                let start = self.wait_worker_connected().await;
                let last = self
                    .wait_delivered(n, Duration::from_secs(if self.quick { 120 } else { 1800 }))
                    .await;
                worker.stop();
                let rate = n as f64 / last.duration_since(start).as_secs_f64();
                println!("     {n}: {rate:.0} deliveries/s");
                rates[k].push(rate);
            }
        }
        let (r_small, r_large) = (median(rates[0].clone()), median(rates[1].clone()));
        self.add(
            format!("backlog: drain rate, {small}"),
            r_small,
            "deliveries/s",
            None,
        );
        self.add(
            format!("backlog: drain rate, {large}"),
            r_large,
            "deliveries/s",
            None,
        );
        self.add(
            "backlog: drain rate ratio, large to small",
            r_large / r_small,
            "ratio",
            Some((">=", 0.90)),
        );
        for rel in ["emitted", "outbox", "events", "attempt_log"] {
            let r = self
                .db
                .query_one(
                    &format!(
                        "SELECT pg_table_size('postbox.{rel}'), pg_indexes_size('postbox.{rel}')"
                    ),
                    &[],
                )
                .await
                .unwrap();
            let (t, i) = (
                r.get::<_, i64>(0) as f64 / 1048576.0,
                r.get::<_, i64>(1) as f64 / 1048576.0,
            );
            self.add(
                format!("backlog: after {large}: {rel} table size"),
                t,
                "MiB",
                None,
            );
            self.add(
                format!("backlog: after {large}: {rel} index size"),
                i,
                "MiB",
                None,
            );
        }
        let dead = |rel: &'static str| {
            format!("SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'postbox' AND relname = '{rel}'")
        };
        let counts = |rel: &'static str| {
            format!("SELECT autovacuum_count + vacuum_count FROM pg_stat_user_tables WHERE schemaname = 'postbox' AND relname = '{rel}'")
        };
        self.sql("SELECT pg_stat_force_next_flush()").await;
        let before: i64 = self.one(&counts("outbox")).await;
        for rel in ["emitted", "outbox", "events"] {
            let d: i64 = self.one(&dead(rel)).await;
            self.add(
                format!("backlog: dead tuples in {rel} right after the drain"),
                d as f64,
                "tuples",
                None,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(if self.quick { 25 } else { 90 });
        let mut vacuumed = false;
        while Instant::now() < deadline {
            let now: i64 = self.one(&counts("outbox")).await;
            if now > before {
                vacuumed = true;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.ran_vacuum = !vacuumed;
        if !vacuumed {
            self.notes.push(
                "figure 5: no autovacuum of postbox.outbox within the wait; ran VACUUM instead"
                    .into(),
            );
            self.sql("VACUUM postbox.outbox").await;
            self.sql("VACUUM postbox.emitted").await;
            self.sql("VACUUM postbox.events").await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        for rel in ["emitted", "outbox", "events"] {
            let d: i64 = self.one(&dead(rel)).await;
            self.add(
                format!("backlog: dead tuples in {rel} after one vacuum cycle"),
                d as f64,
                "tuples",
                None,
            );
        }
    }
}

/// Waits until `db`'s database has at least `n` sessions of postbox-worker
/// (its pool and LISTEN sessions; on Citus, no LISTEN), and returns when
/// that was seen.
async fn worker_sessions(db: &Client, n: i64) -> Instant {
    postbox_tests::wait_until(
        Duration::from_secs(60),
        "the worker to connect",
        || async move {
            let seen: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'postbox-worker'",
                &[],
            )
            .await
            .ok()?
            .get(0);
            (seen >= n).then(Instant::now)
        },
    )
    .await
}

/// The postmaster's pid of `pg`, for its CPU ([`procstat::cluster_cpu`]).
fn postmaster_of(pg: &Cluster) -> u32 {
    let pid = std::fs::read_to_string(pg.dir().join("data/postmaster.pid")).unwrap();
    pid.lines().next().unwrap().trim().parse().unwrap()
}

/// pgbench's TPS for `script` in database `db` of `pg`, with `clients`
/// clients for `secs` seconds.
fn pgbench_on(pg: &Cluster, db: &str, script: &str, clients: u32, secs: u32) -> f64 {
    let path = pg.dir().join("bench.sql");
    std::fs::write(&path, script).unwrap();
    let out = Command::new(pg.bindir().join("pgbench"))
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &secs.to_string(),
            "-f",
        ])
        .arg(&path)
        .arg(pg.url_db("postgres", db))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in: {text}"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--ceiling-sender") {
        ceiling::sender().await;
        return;
    }
    if let Some(bad) = args.iter().skip(1).find(|a| *a != "--quick") {
        eprintln!(
            "usage: postbox-bench [--quick]   (unknown argument {bad:?})\n\
             Writes target/bench/results.json. POSTBOX_BENCH_ONLY=1,2,3,5 runs only those figures (0: the ceiling alone)."
        );
        std::process::exit(2);
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `run` owns all it starts: when it returns or panics, or is dropped here
    // on a signal, its processes and cluster are stopped, and only then does
    // the process exit, with the run's code.
    let code = tokio::select! {
        code = run(quick) => code,
        (name, code) = stop_signal() => {
            eprintln!("postbox-bench: {name}: stopping the processes and the cluster it started");
            code
        }
    };
    std::process::exit(code);
}

/// SIGINT or SIGTERM: its name and the exit code it calls for (128 + its number).
async fn stop_signal() -> (&'static str, i32) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = int.recv() => ("SIGINT", 130),
        _ = term.recv() => ("SIGTERM", 143),
    }
}

/// Runs the figures asked for and writes the results. Returns the exit code:
/// 1 when a figure has no value or a full run misses a target, else 0. What
/// it started is stopped by the time it returns.
async fn run(quick: bool) -> i32 {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let worker_bin = std::env::var("POSTBOX_WORKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/release/postbox-worker"));
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    println!(
        "postbox-bench{}: PostgreSQL 15 with {}",
        if quick { " --quick" } else { "" },
        SETTINGS
            .iter()
            .map(|(k, v)| format!("{k}={}", v.trim_matches('\'')))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(|l| l
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")))
            .unwrap_or_default()
    );
    // POSTBOX_BENCH_STATEMENTS=1: PostgreSQL's time by statement in
    // figure 2 (pg_stat_statements, nested statements included), printed
    // after it; for finding where PostgreSQL's time goes.
    let mut settings = SETTINGS.to_vec();
    if statements() {
        settings.push(("shared_preload_libraries", "'pg_stat_statements'"));
        settings.push(("pg_stat_statements.track", "all"));
    }
    let pg = Cluster::start_with(&settings).await;
    let db = pg.connect("postgres").await;
    let stats = Arc::new(Stats::default());
    let rx = receiver::start(stats.clone()).await;
    let mut b = Bench {
        quick,
        pg,
        db,
        stats,
        rx,
        target: format!("http://127.0.0.1:{}", rx.port()),
        worker_env: Vec::new(),
        endpoint_options: String::new(),
        ordering_keys: 0,
        worker_bin,
        figures: Vec::new(),
        notes: Vec::new(),
        ran_vacuum: false,
    };
    let started = Instant::now();
    // For development: POSTBOX_BENCH_ONLY=0 measures the ceiling C only;
    // =2 runs C, figure 2 (and 6) only; =10 runs C, 2, 6 and 10; =11 runs
    // C, 2, 6 and 11 (with POSTBOX_BENCH_STATEMENTS=1 and
    // POSTBOX_BENCH_EXPLAIN=1, figure 11's plans are in target/bench/server.log);
    // =12 runs C, 2, 6 and 12 (ordered);
    // =4 runs 2, 6 and 4; =7 runs 2, 6 and 7. With POSTBOX_WORKER_BIN and
    // POSTBOX_EXTENSION_VERSION, figure 2 of an older release (docs/
    // measurements.md: mirrored rounds).
    let only = std::env::var("POSTBOX_BENCH_ONLY").unwrap_or_default();
    let run = |n: &str| only.is_empty() || only.split(',').any(|o| o.trim() == n);
    // Where a run's time goes (CI runs the quick mode on every change).
    let lap = |what: &str| {
        println!(
            "   [{what}: done at {:.0} s]",
            started.elapsed().as_secs_f64()
        )
    };
    if run("1") {
        b.emit_overhead().await;
        lap("emit_overhead");
    }
    if only == "0" {
        b.ceiling().await;
        lap("ceiling");
    }
    if run("2") || run("4") || run("7") || run("10") || run("11") || run("12") {
        b.throughput_and_isolation(run("4"), run("7"), run("10"), run("11"), run("12"))
            .await;
        lap("throughput_and_isolation");
    }
    if run("3") {
        b.latency().await;
        lap("latency");
    }
    if run("5") {
        b.backlog().await;
        lap("backlog");
    }
    if run("9") {
        b.http_api().await;
        lap("http_api");
    }
    if run("13") {
        b.citus_emit().await;
        lap("citus_emit");
    }
    if run("14") {
        b.citus_throughput().await;
        lap("citus_throughput");
    }
    if run("8") {
        b.soak().await;
        lap("soak");
    }

    let figures: Vec<serde_json::Value> = b
        .figures
        .iter()
        .map(|f| json!({"name": f.name, "value": f.value, "unit": f.unit, "target": f.target.map(|t| t.1), "op": f.target.map(|t| t.0), "met": f.met()}))
        .collect();
    let results = json!({
        "quick": quick,
        // Figure 5's dead tuples after "one vacuum cycle" came from a VACUUM
        // the benchmark ran itself (autovacuum did not run within the wait).
        "bench_ran_vacuum": b.ran_vacuum,
        "notes": b.notes,
        "figures": figures,
    });
    let path = out_dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    for n in &b.notes {
        println!("note: {n}");
    }
    let missed: Vec<&str> = b
        .figures
        .iter()
        .filter(|f| f.met() == Some(false))
        .map(|f| f.name.as_str())
        .collect();
    println!(
        "\n{} figures in {:.0} s, written to {}",
        b.figures.len(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    let unmeasured: Vec<&str> = b
        .figures
        .iter()
        .filter(|f| !f.value.is_finite())
        .map(|f| f.name.as_str())
        .collect();
    if !unmeasured.is_empty() {
        println!("figures without a value: {}", unmeasured.join("; "));
        return 1;
    }
    if quick {
        // Quick mode is too small to judge targets: it checks that every
        // figure is produced.
        println!("quick run: every figure produced; targets are judged by full runs only");
    } else if !missed.is_empty() {
        println!("targets missed: {}", missed.join("; "));
        return 1;
    }
    0
}
