//! The privilege tests every installation passes: on one node
//! (tests/tests/extension.rs) and on each node of a Citus cluster
//! (tests/tests/citus.rs), where a node is reached directly as well as
//! through the coordinator. Each takes the node; the login roles are made
//! once beforehand by [`make_roles`] (on Citus, on the coordinator, which
//! makes them on every node).

use crate::Cluster;
use tokio_postgres::Client;

/// The login roles the tests connect as: an application writer (emitter),
/// an operator (admin), a worker, and mallory (emitter only, the attacker).
pub const ROLES: &str = "CREATE ROLE app_writer LOGIN IN ROLE postbox_emitter;
     CREATE ROLE ops LOGIN IN ROLE postbox_admin;
     CREATE ROLE deliverer LOGIN IN ROLE postbox_worker;
     CREATE ROLE mallory LOGIN IN ROLE postbox_emitter;";

/// Makes [`ROLES`] through `su`.
pub async fn make_roles(su: &Client) {
    su.batch_execute(ROLES).await.unwrap();
}

/// A session of `role` on `pg`. On a Citus node, with Citus's DDL
/// propagation off, as a node's own objects are made: otherwise Citus
/// refuses DDL on a worker node ("operation is not allowed on this node").
/// The setting is the session's own, open to any role.
async fn session(pg: &Cluster, role: &str) -> Client {
    let db = pg.connect(role).await;
    db.batch_execute(
        "DO $$ BEGIN
             IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
                 SET citus.enable_ddl_propagation = off;
             END IF;
         END $$",
    )
    .await
    .unwrap();
    db
}

/// The application's table `app.recordings`, attached, and an endpoint of
/// tenant w1 for its events; returns the endpoint's id.
pub async fn app_with_endpoint(db: &Client) -> String {
    db.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS app;  -- on Citus, the coordinator's is made on every node
         CREATE TABLE app.recordings (id serial PRIMARY KEY, workspace_id text NOT NULL, title text);
         SELECT postbox.attach('app.recordings', 'recording', 'workspace_id');",
    )
    .await
    .unwrap();
    let row = db
        .query_one("SELECT id::text FROM postbox.create_endpoint('w1', 'https://hooks.example.com/in', '{recording.*}')", &[])
        .await
        .unwrap();
    row.get(0)
}

/// Deliveries pending for `endpoint`, as `db` sees them.
pub async fn pending(db: &Client, endpoint: &str) -> i64 {
    db.query_one(
        "SELECT pending FROM postbox.endpoint_status WHERE id::text = $1",
        &[&endpoint],
    )
    .await
    .unwrap()
    .get(0)
}

/// Each login role gets what its postbox role grants and no more, on
/// `pg`: an emitter writes and emits but reads no secret and makes no
/// endpoint, an admin manages endpoints but reads no secret, a worker reads
/// secrets but cannot emit. The roles are [`ROLES`]' (made by [`make_roles`]).
pub async fn login_roles_get_only_their_grants(pg: &Cluster) {
    let su = session(pg, "postgres").await;
    let ep = app_with_endpoint(&su).await;
    su.batch_execute(
        "GRANT USAGE ON SCHEMA app TO app_writer;
         GRANT INSERT ON app.recordings TO app_writer;
         GRANT USAGE ON SEQUENCE app.recordings_id_seq TO app_writer;",
    )
    .await
    .unwrap();

    let app = session(pg, "app_writer").await;
    app.batch_execute("INSERT INTO app.recordings (workspace_id, title) VALUES ('w1', 'x')")
        .await
        .unwrap();
    app.batch_execute("SELECT postbox.emit('w1', 'recording.updated', '{}')")
        .await
        .unwrap();
    for sql in [
        "SELECT secret FROM postbox.endpoint_secrets",
        "SELECT postbox.create_endpoint('w1', 'https://example.com/')",
    ] {
        let e = app.batch_execute(sql).await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), "42501", "{sql}");
    }

    let admin = session(pg, "ops").await;
    admin
        .batch_execute(&format!(
            "SELECT postbox.update_endpoint('w1', '{ep}', description => 'ops was here')"
        ))
        .await
        .unwrap();
    let e = admin
        .batch_execute("SELECT secret FROM postbox.endpoint_secrets")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42501");
    assert_eq!(pending(&admin, &ep).await, 2);

    let worker = session(pg, "deliverer").await;
    let secrets = worker
        .query(
            "SELECT secret FROM postbox.endpoint_secrets WHERE endpoint_id::text = $1",
            &[&ep],
        )
        .await
        .unwrap();
    assert_eq!(secrets.len(), 1);
    let e = worker
        .batch_execute("SELECT postbox.emit('w1', 'recording.updated', '{}')")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42501");
}

/// A LOGIN role holding only postbox_emitter (and PUBLIC's TEMP) tries
/// every way to make the triggers run its code as the extension's owner:
/// casts to json on an enum, inside an array, a composite and a domain, a
/// cast to text on the tenant column, on INSERT, UPDATE and DELETE, and a
/// temp view shadowing a transition table. Its function records who ran it
/// and tries to make the role superuser.
/// The role `mallory` (made by [`make_roles`]) on `pg`.
pub async fn an_emitter_cannot_run_its_code_as_the_owner(pg: &Cluster) {
    let su = session(pg, "postgres").await;
    // What others emitted before, not yet expanded (the other test's rows,
    // when both run on one node).
    let before: i64 = su
        .query_one(
            "SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let m = session(pg, "mallory").await;
    m.batch_execute(
        r#"
        CREATE TEMP TABLE seen (who text, what text);
        CREATE TYPE pg_temp.mood AS ENUM ('happy', 'sad');
        CREATE TYPE pg_temp.pair AS (a int, m pg_temp.mood);
        CREATE DOMAIN pg_temp.dmood AS pg_temp.mood;
        CREATE TYPE pg_temp.org AS ENUM ('t1', 't2');
        CREATE FUNCTION pg_temp.escalate(what text) RETURNS void LANGUAGE plpgsql AS $f$
        BEGIN
            INSERT INTO pg_temp.seen VALUES (current_user::text, what);
            BEGIN
                EXECUTE 'ALTER ROLE mallory SUPERUSER';
            EXCEPTION WHEN insufficient_privilege THEN NULL;
            END;
        END $f$;
        CREATE FUNCTION pg_temp.mood_json(x pg_temp.mood) RETURNS json LANGUAGE plpgsql AS $f$
        BEGIN
            PERFORM pg_temp.escalate('json');
            RETURN to_json(x::text);
        END $f$;
        CREATE FUNCTION pg_temp.org_text(x pg_temp.org) RETURNS text LANGUAGE plpgsql AS $f$
        BEGIN
            PERFORM pg_temp.escalate('text');
            RETURN 't1';
        END $f$;
        CREATE CAST (pg_temp.mood AS json) WITH FUNCTION pg_temp.mood_json(pg_temp.mood);
        CREATE CAST (pg_temp.org AS text) WITH FUNCTION pg_temp.org_text(pg_temp.org);
        CREATE TEMP TABLE t (id int, tenant text, m pg_temp.mood, ms pg_temp.mood[],
                             p pg_temp.pair, d pg_temp.dmood);
        CREATE TEMP TABLE o (id int, tenant pg_temp.org, m pg_temp.mood);
        SELECT postbox.attach('pg_temp.t', 'mal', 'tenant');
        SELECT postbox.attach('pg_temp.o', 'org', 'tenant');
        "#,
    )
    .await
    .unwrap();
    for sql in [
        "INSERT INTO t VALUES (1, 't1', 'happy', '{happy,sad}', ROW(1, 'sad'), 'happy')",
        "UPDATE t SET m = 'sad', ms = '{sad}', p = ROW(2, 'happy'), d = 'sad'",
        "DELETE FROM t",
        "INSERT INTO o VALUES (1, 't1', 'happy')",
        "UPDATE o SET m = 'sad', tenant = 't2'",
        "DELETE FROM o",
    ] {
        m.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // A statement trigger on emit_row_change with no transition tables once
    // read pg_temp.postbox_new: a view the caller owns. Now refused.
    m.batch_execute(
        "CREATE TEMP VIEW postbox_new AS SELECT 1 AS id, 't1' AS tenant, 'happy'::pg_temp.mood AS m;
         CREATE TRIGGER shadow AFTER INSERT ON t FOR EACH STATEMENT
             EXECUTE FUNCTION postbox.emit_row_change('mal', 'tenant');",
    )
    .await
    .unwrap();
    let e = m
        .batch_execute("INSERT INTO t (id, tenant) VALUES (2, 't1')")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023", "{e:?}");

    let su_now: bool = su
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!su_now, "mallory became superuser");
    let seen: Vec<(String, String)> = m
        .query(
            "SELECT DISTINCT who, what FROM pg_temp.seen ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // The json casts did run (row_to_json calls them), as the caller.
    assert_eq!(seen, vec![("mallory".to_string(), "json".to_string())]);
    // What was emitted is what the caller's casts returned; expansion (as the
    // worker would) runs none of the caller's code.
    let emitted: i64 = su
        .query_one(
            "SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(emitted, before + 6);
    // The operator's notices of the endpoints made are expanded too.
    let all: i64 = su
        .query_one("SELECT count(*) FROM postbox.emitted", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(crate::fixtures::expand_all(&su).await, all);
    let data: String = su
        .query_one(
            "SELECT data::text FROM postbox.events WHERE event_type = 'mal.created'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(data.contains(r#""ms": ["happy", "sad"]"#), "{data}");
}
