//! End-to-end behaviour of the extension that needs real sessions: top-level
//! commit and rollback, concurrent emitters, login roles, an emitter trying
//! to run its code with postbox's rights, pg_dump, the wake-up NOTIFY, and
//! upgrades.

use postbox_tests::{privileges, Cluster, Flavour};
use std::time::Duration;
use tokio_postgres::Client;

/// Whether a test that needs the compiled extension (its released versions
/// to upgrade from, pg_dump of an extension) runs here: not in the SQL
/// flavour's suite (POSTBOX_FLAVOUR=sql), which says so.
fn compiled_extension(test: &str) -> bool {
    let yes = Flavour::from_env() == Flavour::Extension;
    if !yes {
        eprintln!("{test}: not run against the SQL flavour (it needs the compiled extension)");
    }
    yes
}

async fn setup(db: &Client) -> String {
    privileges::app_with_endpoint(db).await
}

async fn pending(db: &Client, endpoint: &str) -> i64 {
    privileges::pending(db, endpoint).await
}

#[tokio::test]
async fn webhooks_follow_the_transaction() {
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    let ep = setup(&db).await;
    let other = pg.connect("postgres").await;

    db.batch_execute(
        "BEGIN; INSERT INTO app.recordings (workspace_id, title) VALUES ('w1', 'doomed');",
    )
    .await
    .unwrap();
    // Counted at once inside the emitting transaction, invisible outside it.
    assert_eq!(pending(&db, &ep).await, 1);
    assert_eq!(pending(&other, &ep).await, 0);
    db.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(pending(&db, &ep).await, 0);
    let events: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator') + (SELECT count(*) FROM postbox.events WHERE tenant IS DISTINCT FROM 'postbox:operator')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0, "a rolled-back write leaves no event behind");

    db.batch_execute(
        "BEGIN; INSERT INTO app.recordings (workspace_id, title) VALUES ('w1', 'kept'); COMMIT;",
    )
    .await
    .unwrap();
    assert_eq!(pending(&other, &ep).await, 1);
    assert_eq!(
        other
            .query_one("SELECT postbox.expand_events()", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2,
        "the kept row's event, and the operator's notice of the endpoint"
    );
    let status: String = other
        .query_one(
            "SELECT status FROM postbox.deliveries WHERE endpoint_id::text = $1",
            &[&ep],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "pending");
}

#[tokio::test]
async fn concurrent_emits_with_one_idempotency_key_make_one_event() {
    let pg = Cluster::start().await;
    let a = pg.connect("postgres").await;
    let b = pg.connect("postgres").await;
    a.batch_execute("SELECT postbox.create_event_type('order.paid')")
        .await
        .unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    let first: uuid::Uuid = a
        .query_one(
            "SELECT postbox.emit('t', 'order.paid', '{\"n\": 1}', 'k')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // b blocks on the key until a commits, then gets a's event id.
    let b_task = tokio::spawn(async move {
        b.query_one(
            "SELECT postbox.emit('t', 'order.paid', '{\"n\": 2}', 'k')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, uuid::Uuid>(0)
    });
    // Commit only once b waits on a's key (a lock wait, seen from a third session).
    let watch = pg.connect("postgres").await;
    postbox_tests::wait_until(Duration::from_secs(10), "b to wait on the key", || {
        let watch = &watch;
        async move {
            let waiting: i64 = watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE wait_event_type = 'Lock' AND query LIKE '%postbox.emit%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (waiting == 1).then_some(())
        }
    })
    .await;
    a.batch_execute("COMMIT").await.unwrap();
    let second = b_task.await.unwrap();
    assert_eq!(first, second);
    let n: i64 = a
        .query_one(
            "SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// tests/src/privileges.rs, on one node (tests/tests/citus.rs runs them on
/// every node of a Citus cluster).
#[tokio::test]
async fn login_roles_get_only_their_grants() {
    let pg = Cluster::start().await;
    privileges::make_roles(&pg.connect("postgres").await).await;
    privileges::login_roles_get_only_their_grants(&pg).await;
}

#[tokio::test]
async fn an_emitter_cannot_run_its_code_as_the_owner() {
    let pg = Cluster::start().await;
    privileges::make_roles(&pg.connect("postgres").await).await;
    privileges::an_emitter_cannot_run_its_code_as_the_owner(&pg).await;
}

#[tokio::test]
async fn pg_dump_keeps_endpoints_and_secrets() {
    if !compiled_extension("pg_dump_keeps_endpoints_and_secrets") {
        return;
    }
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    let ep = setup(&db).await;
    db.batch_execute("SELECT postbox.create_event_type('custom.thing', 'mine'); SELECT postbox.set_tenant_limit('w1', 5);
                      SELECT postbox.set_retention(events => '3 days');")
        .await
        .unwrap();
    db.batch_execute("CREATE DATABASE restored").await.unwrap();
    let dump = pg.dir().join("dump.sql");
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(pg.bindir().join(&args[0]))
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(vec![
        "pg_dump".into(),
        "-f".into(),
        dump.display().to_string(),
        pg.url("postgres"),
    ]);
    run(vec![
        "psql".into(),
        "-q".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "-f".into(),
        dump.display().to_string(),
        pg.url_db("postgres", "restored"),
    ]);
    let restored =
        tokio_postgres::connect(&pg.url_db("postgres", "restored"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(restored.1);
    let r = restored.0;
    let n: i64 = r
        .query_one("SELECT count(*) FROM postbox.endpoints e JOIN postbox.endpoint_secrets s ON s.endpoint_id = e.id WHERE e.id::text = $1", &[&ep])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let types: i64 = r
        .query_one("SELECT count(*) FROM postbox.event_types WHERE name IN ('custom.thing', 'webhook.test', 'recording.created')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(types, 3);
    let limit: i32 = r
        .query_one(
            "SELECT max_endpoints FROM postbox.tenant_limits WHERE tenant = 'w1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 5);
    let events: String = r
        .query_one("SELECT events::text FROM postbox.retention", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, "3 days", "the retention windows are restored");
}

#[tokio::test]
async fn emit_notifies_only_while_a_worker_waits() {
    let pg = Cluster::start().await;
    let (listener, mut notes) = pg.connect_listening("postgres").await;
    listener
        .batch_execute("LISTEN postbox_wakeup")
        .await
        .unwrap();
    let app = pg.connect("postgres").await;
    let _ep = setup(&app).await;

    // No worker waiting: the emitting commit sends no NOTIFY.
    app.batch_execute("INSERT INTO app.recordings (workspace_id) VALUES ('w1')")
        .await
        .unwrap();
    // A worker says it waits: the next emit wakes it.
    listener
        .batch_execute("UPDATE postbox.wakeup SET waiting = true")
        .await
        .unwrap();
    app.batch_execute("SELECT postbox.emit('w1', 'recording.updated', '{}')")
        .await
        .unwrap();
    // Notifications arrive in commit order, so a sentinel closes the window.
    app.batch_execute("NOTIFY postbox_wakeup, 'sentinel'")
        .await
        .unwrap();

    let mut seen = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), notes.recv())
            .await
            .expect("sentinel")
            .unwrap();
        if n.payload() == "sentinel" {
            break;
        }
        seen.push(n.payload().to_string());
    }
    assert_eq!(
        seen,
        [""],
        "exactly one wake-up, from the emit made while the worker waited"
    );
}

/// Everything that defines the extension's objects, one line each, sorted:
/// an upgraded database must match a fresh install line for line. Grants are
/// compared as sets (their order in an ACL depends on when each was made).
const SHAPE: &str = "
SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT 'fn ' || p.oid::regprocedure || ' ' || md5(pg_get_functiondef(p.oid)) || ' '
         || coalesce(obj_description(p.oid, 'pg_proc'), '-') || ' ' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(p.proacl) x), '-')
    FROM pg_proc p WHERE p.pronamespace = 'postbox'::regnamespace
  UNION ALL
  SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
         || a.attnotnull || ' ' || a.attstorage::text || ' ' || a.attcompression::text || ' '
         || coalesce(pg_get_expr(d.adbin, d.adrelid), '-') || ' '
         || coalesce(col_description(c.oid, a.attnum), '-') || ' ' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x), '-')
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'postbox'::regnamespace
  UNION ALL
  SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' ' || c.relpersistence::text || ' '
         || coalesce(c.reloptions::text, '-') || ' ' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(c.relacl) x), '-') || ' '
         || coalesce(obj_description(c.oid, 'pg_class'), '-')
    FROM pg_class c WHERE c.relnamespace = 'postbox'::regnamespace
  UNION ALL
  SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'postbox'::regnamespace
  UNION ALL
  SELECT 'con ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'postbox'::regnamespace
  UNION ALL
  SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid)
    FROM pg_class c WHERE c.relnamespace = 'postbox'::regnamespace AND c.relkind = 'v'
  UNION ALL
  SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = 'postbox'::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT 'dump ' || t.c::regclass || ' ' || t.w
    FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS t(c, w) WHERE e.extname = 'postbox'
) s(x)";

/// 0.1.0 -> 0.2.0 keeps the data (events emitted under 0.1.0 and not yet
/// expanded are queued, paused endpoints stay paused); on to the current
/// version it ends up exactly like a fresh install. Needs
/// sql/released/postbox--0.1.0.sql installed (scripts/test.sh does it).
#[tokio::test]
async fn upgrade_from_0_1_0_then_to_current_matches_a_fresh_install() {
    if !compiled_extension("upgrade_from_0_1_0_then_to_current_matches_a_fresh_install") {
        return;
    }
    let pg = Cluster::start().await;
    let (su, old) = database_to_upgrade(&pg).await;
    old.batch_execute(
        "CREATE EXTENSION postbox VERSION '0.1.0';
         SELECT postbox.create_event_type('order.paid');
         CREATE TABLE orders (id int, tenant text);
         SELECT postbox.attach('orders', 'order', 'tenant');",
    )
    .await
    .unwrap();
    let ep = |sql: &'static str| {
        let old = &old;
        async move {
            old.query_one(sql, &[])
                .await
                .unwrap()
                .get::<_, uuid::Uuid>(0)
        }
    };
    let live =
        ep("SELECT id FROM postbox.create_endpoint('t', 'https://a.example.com/', '{order.*}')")
            .await;
    let paused =
        ep("SELECT id FROM postbox.create_endpoint('t', 'https://b.example.com/', '{order.*}')")
            .await;
    old.batch_execute(&format!(
        "SELECT postbox.emit('t', 'order.paid', '{{\"n\": 1}}');
         SELECT postbox.expand_events();
         SELECT postbox.emit('t', 'order.paid', '{{\"n\": 2}}');
         SELECT postbox.update_endpoint('{paused}', enabled => false);"
    ))
    .await
    .unwrap();

    old.batch_execute("ALTER EXTENSION postbox UPDATE TO '0.2.0'")
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let old = &old;
        async move { old.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // n=1 was queued for both; n=2 (routed to both at emit under 0.1.0) is queued now.
    assert_eq!(count("SELECT count(*) FROM postbox.outbox").await, 4);
    assert_eq!(
        count("SELECT count(*) FROM postbox.endpoint_pauses WHERE resumed_at IS NULL").await,
        1
    );
    // 0.2.0 behaviour on the upgraded data: the paused endpoint gets nothing new.
    old.batch_execute(
        "SELECT postbox.emit('t', 'order.paid', '{\"n\": 3}');
         SELECT postbox.expand_events();",
    )
    .await
    .unwrap();
    let queued: Vec<(uuid::Uuid, i64)> = old
        .query(
            "SELECT endpoint_id, count(*) FROM postbox.outbox GROUP BY 1 ORDER BY 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(queued, vec![(paused, 2), (live, 3)]);
    // Tables attached under 0.1.0 now use the Rust statement trigger.
    assert_eq!(
        count(
            "SELECT count(*) FROM pg_trigger
              WHERE tgrelid = 'orders'::regclass
                AND tgfoid = 'postbox.emit_statement()'::regprocedure"
        )
        .await,
        2
    );
    old.batch_execute(
        "INSERT INTO orders VALUES (1, 't'), (2, 't'); DELETE FROM orders WHERE id = 1;",
    )
    .await
    .unwrap();
    let emitted: i64 =
        count("SELECT sum(json_array_length(rows))::int8 FROM postbox.emitted").await;
    assert_eq!(emitted, 3);

    // On to the current version.
    old.batch_execute("ALTER EXTENSION postbox UPDATE")
        .await
        .unwrap();
    assert_same_shape(&su, &old).await;
}

/// A session on the fresh install (database `postgres`), and one on a new
/// database `up`, where an upgrade test installs an old version.
async fn database_to_upgrade(pg: &Cluster) -> (Client, Client) {
    let su = pg.connect("postgres").await;
    su.batch_execute("CREATE DATABASE up").await.unwrap();
    let (old, conn) = tokio_postgres::connect(&pg.url_db("postgres", "up"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    (su, old)
}

/// Panics unless `upgraded` defines exactly the objects `fresh` does.
async fn assert_same_shape(fresh: &Client, upgraded: &Client) {
    let fresh: String = fresh.query_one(SHAPE, &[]).await.unwrap().get(0);
    let upgraded: String = upgraded.query_one(SHAPE, &[]).await.unwrap().get(0);
    let (f, u): (Vec<&str>, Vec<&str>) = (fresh.lines().collect(), upgraded.lines().collect());
    let only_fresh: Vec<&&str> = f.iter().filter(|l| !u.contains(l)).collect();
    let only_upgraded: Vec<&&str> = u.iter().filter(|l| !f.contains(l)).collect();
    assert!(
        only_fresh.is_empty() && only_upgraded.is_empty(),
        "upgrade differs from a fresh install:\nonly fresh: {only_fresh:#?}\nonly upgraded: {only_upgraded:#?}"
    );
}

/// 0.2.0 -> 0.3.0 keeps the data and the attached tables' triggers (now
/// SECURITY INVOKER, emit_row_change in Rust); on to the current version it
/// ends up exactly like a fresh install. Needs sql/released/postbox--0.2.0.sql
/// and postbox--0.3.0.sql installed.
#[tokio::test]
async fn upgrade_from_0_2_0_matches_a_fresh_install() {
    if !compiled_extension("upgrade_from_0_2_0_matches_a_fresh_install") {
        return;
    }
    let pg = Cluster::start().await;
    let (su, old) = database_to_upgrade(&pg).await;
    old.batch_execute(
        "CREATE EXTENSION postbox VERSION '0.2.0';
         CREATE TABLE orders (id int, tenant text, total int);
         SELECT postbox.attach('orders', 'order', 'tenant');
         SELECT postbox.create_endpoint('t', 'https://a.example.com/', '{order.*}');
         INSERT INTO orders VALUES (1, 't', 10), (2, 't', 20);
         UPDATE orders SET total = 11 WHERE id = 1;",
    )
    .await
    .unwrap();
    old.batch_execute("ALTER EXTENSION postbox UPDATE TO '0.3.0'")
        .await
        .unwrap();
    // The same triggers, now on the invoker functions.
    let definers: i64 = old
        .query_one(
            "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
              WHERE t.tgrelid = 'orders'::regclass AND p.prosecdef",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(definers, 0);
    old.batch_execute(
        "UPDATE orders SET total = 21 WHERE id = 2;
         DELETE FROM orders WHERE id = 1;",
    )
    .await
    .unwrap();
    let n: i32 = old
        .query_one("SELECT postbox.expand_events()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5, "2 created, 2 updated, 1 deleted");
    let updated: String = old
        .query_one(
            "SELECT string_agg(data::text, ' ' ORDER BY data::text) FROM postbox.events
              WHERE event_type = 'order.updated'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        updated,
        r#"{"order": {"id": 1, "total": 11, "tenant": "t"}, "changed": ["total"]} {"order": {"id": 2, "total": 21, "tenant": "t"}, "changed": ["total"]}"#
    );
    old.batch_execute("ALTER EXTENSION postbox UPDATE")
        .await
        .unwrap();
    assert_same_shape(&su, &old).await;
}

/// 0.3.0 -> 0.4.0 keeps the data; a tenant whose limit was already 0 is
/// suspended now; it ends up exactly like a fresh install. Needs
/// sql/released/postbox--0.3.0.sql installed.
#[tokio::test]
async fn upgrade_from_0_3_0_matches_a_fresh_install() {
    if !compiled_extension("upgrade_from_0_3_0_matches_a_fresh_install") {
        return;
    }
    let pg = Cluster::start().await;
    let (su, old) = database_to_upgrade(&pg).await;
    old.batch_execute(
        "CREATE EXTENSION postbox VERSION '0.3.0';
         CREATE TABLE orders (id int, tenant text, total int);
         SELECT postbox.attach('orders', 'order', 'tenant');
         SELECT postbox.create_endpoint('t', 'https://a.example.com/', '{order.*}');
         SELECT postbox.create_endpoint('gone', 'https://b.example.com/', '{order.*}');
         SELECT postbox.set_tenant_limit('gone', 0);
         INSERT INTO orders VALUES (1, 't', 10), (2, 'gone', 20);
         SELECT postbox.expand_events();
         INSERT INTO orders VALUES (3, 't', 30), (4, 't', 40);",
    )
    .await
    .unwrap();
    old.batch_execute("ALTER EXTENSION postbox UPDATE TO '0.4.0'")
        .await
        .unwrap();
    let one = |sql: &'static str| {
        let old = &old;
        async move { old.query_one(sql, &[]).await.unwrap().get::<_, String>(0) }
    };
    assert_eq!(
        one("SELECT string_agg(tenant || ':' || status, ' ' ORDER BY tenant) FROM postbox.endpoint_status").await,
        "gone:suspended t:healthy"
    );
    assert_eq!(
        one("SELECT string_agg(tenant || ':' || status, ' ' ORDER BY tenant) FROM postbox.deliveries").await,
        "gone:held t:pending"
    );
    // The statement emitted under 0.3.0 expands with ids in row order.
    old.batch_execute("SELECT postbox.expand_events()")
        .await
        .unwrap();
    assert_eq!(
        one("SELECT string_agg(data -> 'order' ->> 'id', ' ' ORDER BY id) FROM postbox.events WHERE data -> 'order' ->> 'id' IN ('3', '4')").await,
        "3 4"
    );
    old.batch_execute("SELECT postbox.set_tenant_limit('gone', NULL)")
        .await
        .unwrap();
    assert_eq!(
        one("SELECT string_agg(tenant || ':' || status, ' ' ORDER BY tenant) FROM postbox.endpoint_status").await,
        "gone:healthy t:healthy"
    );
    old.batch_execute("ALTER EXTENSION postbox UPDATE")
        .await
        .unwrap();
    assert_same_shape(&su, &old).await;
}

/// 0.4.0 -> 0.5.0 adds the HTTP API's keys and stored responses, and keeps
/// everything else; it ends up exactly like a fresh install, and the keys
/// work. Needs sql/released/postbox--0.4.0.sql installed.
#[tokio::test]
async fn upgrade_from_0_4_0_matches_a_fresh_install() {
    if !compiled_extension("upgrade_from_0_4_0_matches_a_fresh_install") {
        return;
    }
    let pg = Cluster::start().await;
    let (su, old) = database_to_upgrade(&pg).await;
    old.batch_execute(
        "CREATE EXTENSION postbox VERSION '0.4.0';
         SELECT postbox.create_endpoint('t', 'https://a.example.com/', '{*}');
         SELECT postbox.emit('t', 'webhook.test', '{}', 'k1');",
    )
    .await
    .unwrap();
    old.batch_execute("ALTER EXTENSION postbox UPDATE TO '0.5.0'")
        .await
        .unwrap();
    let key: String = old
        .query_one(
            "SELECT key FROM postbox.create_api_key('t', 'admin', 'ci')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let who: String = old
        .query_one(
            "SELECT tenant || ':' || role FROM postbox.authenticate_api_key(sha256(convert_to($1, 'UTF8')))",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "t:admin");
    let kinds: String = old
        .query_one(
            "SELECT string_agg(kind, ' ' ORDER BY kind) FROM postbox.purge()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kinds,
        "api_requests attempts deliveries events idempotency_keys pauses portal_sessions rejects"
    );
    old.batch_execute("ALTER EXTENSION postbox UPDATE")
        .await
        .unwrap();
    assert_same_shape(&su, &old).await;
}

/// 0.5.0 -> 0.6.0 (security, round two) masks the header values the
/// attempt log kept, drops the stored Idempotency-Key answers (they hold
/// secrets and name no credential), keeps keys and sessions working, and
/// ends up exactly like a fresh install. Needs sql/released/postbox--0.5.0.sql.
#[tokio::test]
async fn upgrade_from_0_5_0_matches_a_fresh_install() {
    if !compiled_extension("upgrade_from_0_5_0_matches_a_fresh_install") {
        return;
    }
    let pg = Cluster::start().await;
    let (su, old) = database_to_upgrade(&pg).await;
    old.batch_execute(
        "CREATE EXTENSION postbox VERSION '0.5.0';
         SELECT postbox.create_endpoint('t', 'https://a.example.com/', '{*}', headers => '{\"Authorization\": \"Bearer old-s3cret\"}');
         INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at,
                                          duration_ms, outcome, queued_at, request_headers)
         SELECT 1, 't', id, gen_random_uuid(), 1, now(), 1, 'succeeded', now(), headers FROM postbox.endpoints;
         SELECT postbox.api_request_begin('t', 'k1', sha256('a'));
         SELECT postbox.api_request_end('t', 'k1', 201, '{\"secret\": \"whsec_x\"}');",
    )
    .await
    .unwrap();
    let key: String = old
        .query_one(
            "SELECT key FROM postbox.create_api_key('t', 'admin', 'ci')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    old.batch_execute("ALTER EXTENSION postbox UPDATE TO '0.6.0'")
        .await
        .unwrap();
    let one = |sql: &'static str| {
        let old = &old;
        async move { old.query_one(sql, &[]).await.unwrap().get::<_, String>(0) }
    };
    assert_eq!(
        one("SELECT request_headers::text FROM postbox.attempt_log").await,
        r#"{"Authorization": "********"}"#
    );
    assert_eq!(
        one("SELECT count(*)::text FROM postbox.api_idempotency").await,
        "0"
    );
    let who: String = old
        .query_one(
            "SELECT tenant || ':' || role FROM postbox.authenticate_api_key(sha256(convert_to($1, 'UTF8')))",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "t:admin");
    // The new rules hold on the upgraded database.
    assert_eq!(
        one("SELECT coalesce(secret, 'none') FROM postbox.register_endpoint('t', 'https://a.example.com/', NULL)").await,
        "none"
    );
    assert_eq!(
        one("SELECT string_agg(kind, ' ' ORDER BY kind) FROM postbox.purge()").await,
        "api_keys api_requests attempts deliveries events idempotency_keys pauses portal_sessions rejects"
    );
    old.batch_execute("ALTER EXTENSION postbox UPDATE")
        .await
        .unwrap();
    assert_same_shape(&su, &old).await;
}

/// 0.6.0 -> 0.7.0 (the house, round two), then on to the newest, ends up
/// exactly like a fresh install, and what 0.6.0 stored keeps working.
/// Needs sql/released/postbox--0.6.0.sql.
#[tokio::test]
async fn upgrade_from_0_6_0_matches_a_fresh_install() {
    if !compiled_extension("upgrade_from_0_6_0_matches_a_fresh_install") {
        return;
    }
    let pg = Cluster::start().await;
    let (su, old) = database_to_upgrade(&pg).await;
    old.batch_execute(
        "CREATE EXTENSION postbox VERSION '0.6.0';
         SELECT postbox.create_endpoint('t', 'https://a.example.com/', '{*}');",
    )
    .await
    .unwrap();
    let key: String = old
        .query_one(
            "SELECT key FROM postbox.create_api_key('t', 'admin', 'ci')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    old.batch_execute("ALTER EXTENSION postbox UPDATE TO '0.7.0'")
        .await
        .unwrap();
    let who: String = old
        .query_one(
            "SELECT tenant || ':' || role FROM postbox.authenticate_api_key(sha256(convert_to($1, 'UTF8')))",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "t:admin");
    let endpoints: i64 = old
        .query_one("SELECT count(*) FROM postbox.endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(endpoints, 1);
    old.batch_execute("ALTER EXTENSION postbox UPDATE")
        .await
        .unwrap();
    assert_same_shape(&su, &old).await;
}

/// 0.7.0 -> 0.8.0 (the SQL flavour's release: the worker reads
/// allow_insecure_urls through postbox._allow_insecure_urls), then on to the
/// newest, ends up exactly like a fresh install, and what 0.7.0 stored keeps working.
/// Needs sql/released/postbox--0.7.0.sql.
#[tokio::test]
async fn upgrade_from_0_7_0_matches_a_fresh_install() {
    if !compiled_extension("upgrade_from_0_7_0_matches_a_fresh_install") {
        return;
    }
    let pg = Cluster::start().await;
    let (su, old) = database_to_upgrade(&pg).await;
    old.batch_execute(
        "CREATE EXTENSION postbox VERSION '0.7.0';
         SELECT postbox.create_endpoint('t', 'https://a.example.com/', '{*}');
         SELECT postbox.emit('t', 'webhook.test', '{\"n\": 1}');",
    )
    .await
    .unwrap();
    old.batch_execute("ALTER EXTENSION postbox UPDATE TO '0.8.0'")
        .await
        .unwrap();
    let (insecure, emitted): (bool, i64) = old
        .query_one(
            "SELECT postbox._allow_insecure_urls(), (SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator')",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(!insecure);
    assert_eq!(emitted, 1, "the pending event survives the upgrade");
    old.batch_execute("ALTER EXTENSION postbox UPDATE")
        .await
        .unwrap();
    assert_same_shape(&su, &old).await;
}

/// 0.8.0 -> 0.9.0 ends up exactly like a fresh install, and what 0.8.0
/// stored keeps working. Needs sql/released/postbox--0.8.0.sql.
#[tokio::test]
async fn upgrade_from_0_8_0_matches_a_fresh_install() {
    if !compiled_extension("upgrade_from_0_8_0_matches_a_fresh_install") {
        return;
    }
    let pg = Cluster::start().await;
    let (su, old) = database_to_upgrade(&pg).await;
    old.batch_execute(
        "CREATE EXTENSION postbox VERSION '0.8.0';
         SELECT postbox.create_endpoint('t', 'https://a.example.com/', '{*}');
         SELECT postbox.emit('t', 'webhook.test', '{\"n\": 1}');",
    )
    .await
    .unwrap();
    old.batch_execute("ALTER EXTENSION postbox UPDATE TO '0.9.0'")
        .await
        .unwrap();
    let expanded: i32 = old
        .query_one("SELECT postbox.expand_events()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(expanded, 1, "the pending event survives the upgrade");
    assert_same_shape(&su, &old).await;
}

/// Two purges at once delete disjoint rows, and neither waits for the other:
/// the second skips what the first holds (its transaction still open) and
/// would otherwise hit the statement timeout.
#[tokio::test]
async fn concurrent_purges_take_disjoint_rows_without_waiting() {
    let pg = Cluster::start().await;
    let a = pg.connect("postgres").await;
    let b = pg.connect("postgres").await;
    a.batch_execute(
        "SELECT postbox.set_retention(succeeded_attempts => '1 second', failed_attempts => '1 second');
         INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at,
                                          duration_ms, outcome, queued_at)
         SELECT i, 't', gen_random_uuid(), gen_random_uuid(), 1, now() - interval '1 hour', 1, 'succeeded', now()
           FROM generate_series(1, 30) i;",
    )
    .await
    .unwrap();
    async fn attempts(db: &Client, n: i32) -> Result<i64, tokio_postgres::Error> {
        let sql = format!("SELECT deleted FROM postbox.purge({n}) WHERE kind = 'attempts'");
        db.query_one(&sql, &[]).await.map(|r| r.get::<_, i64>(0))
    }
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(attempts(&a, 10).await.unwrap(), 10);
    b.batch_execute("SET statement_timeout = '5s'")
        .await
        .unwrap();
    assert_eq!(
        attempts(&b, 100)
            .await
            .expect("the second purge must not wait"),
        20
    );
    a.batch_execute("COMMIT").await.unwrap();
    let left: i64 = a
        .query_one("SELECT count(*) FROM postbox.attempt_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
