//! postbox on Citus (docs/design.md, "Past one database: Citus"): a
//! coordinator and two worker nodes ([`postbox_tests::citus`]), the
//! application's table distributed by its tenant column and attached.
//! Each test says so and does not run where Citus is not installed
//! (scripts/setup.sh builds it from CITUS_SRC).

use postbox_tests::citus::{Citus, APP, ATTACH, DISTRIBUTE};
use postbox_tests::fixtures::one;
use postbox_tests::receivers::{self, Behavior, Receiver};
use postbox_tests::worker::{test_config, Worker};
use postbox_tests::{eventually, pg_error, privileges, verify, Cluster};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// Writes of every shape: multi-row and multi-shard (Citus sends a
/// multi-row INSERT ... SELECT to the shards as COPY), router (one
/// shard), updates and deletes over several shards and over one, a
/// transaction of several statements, and a rolled-back one.
const WRITES: &[&str] = &[
    "INSERT INTO app.recordings SELECT 'ws' || (i % 8), i, 'title ' || i FROM generate_series(1, 40) i",
    "INSERT INTO app.recordings VALUES ('ws1', 100, 'router')",
    "UPDATE app.recordings SET title = title || '!' WHERE id % 5 = 0",
    "UPDATE app.recordings SET title = 'one' WHERE workspace_id = 'ws2' AND id = 2",
    "BEGIN; INSERT INTO app.recordings VALUES ('ws3', 200, 'kept'), ('ws4', 201, 'kept');
     UPDATE app.recordings SET title = 'both' WHERE id IN (3, 4); COMMIT",
    "BEGIN; INSERT INTO app.recordings VALUES ('ws3', 300, 'gone'), ('ws6', 301, 'gone');
     UPDATE app.recordings SET title = 'gone' WHERE id < 10; DELETE FROM app.recordings WHERE id = 11; ROLLBACK",
    "DELETE FROM app.recordings WHERE id > 35 AND id < 100",
    "DELETE FROM app.recordings WHERE workspace_id = 'ws1' AND id = 100",
];

/// An event as a receiver would compare it: tenant, type, payload and
/// ordering key (ids and times differ from run to run).
type Event = (String, String, String, Option<String>);

/// Expands what `db`'s node emitted and returns its events.
async fn expanded(db: &Client) -> Vec<Event> {
    postbox_tests::fixtures::expand_all(db).await;
    db.query(
        "SELECT tenant, event_type, data::jsonb::text, ordering_key FROM postbox.events WHERE tenant IS DISTINCT FROM 'postbox:operator'",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

async fn run_writes(db: &Client) {
    for w in WRITES {
        db.batch_execute(w)
            .await
            .unwrap_or_else(|e| panic!("{w}: {}", pg_error(&e)));
    }
}

/// The application's table distributed and attached, an endpoint per
/// tenant ws0 to ws7 (all of its events) on one receiver, replicated to the
/// worker nodes, and a worker per worker node.
struct Delivering {
    db: Client,
    rx: Receiver,
    workers: Vec<Worker>,
    /// Each tenant's signing secret.
    secrets: HashMap<String, String>,
}

async fn delivering(citus: &Citus) -> Delivering {
    let db = citus.coordinator().await;
    db.batch_execute(&format!(
        "{APP}{DISTRIBUTE}{ATTACH} SET postbox.allow_insecure_urls = on;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let rx = Receiver::start(Behavior::Statuses(vec![204]), receivers::order()).await;
    let mut secrets = HashMap::new();
    for t in 0..8 {
        let tenant = format!("ws{t}");
        let (_, secret) =
            postbox_tests::fixtures::endpoint(&db, &tenant, &rx.url(), ", ARRAY['recording.*']")
                .await;
        secrets.insert(tenant, secret);
    }
    citus.config_replicated().await;
    let workers = citus
        .workers
        .iter()
        .map(|node| Worker::start(test_config(node)))
        .collect();
    Delivering {
        db,
        rx,
        workers,
        secrets,
    }
}

/// The application writing rows 1 to `n` through the coordinator, one
/// statement each and every tenant in turn (a bounded loop); `written`
/// follows the row being written. Ends with the rows whose INSERT was
/// answered with success.
async fn write_rows(citus: &Citus, n: i64, written: Arc<AtomicI64>) -> JoinHandle<Vec<i64>> {
    let app = citus.coordinator().await;
    tokio::spawn(async move {
        let mut committed = Vec::new();
        for i in 1..=n {
            written.store(i, Ordering::SeqCst);
            let r = app
                .execute(
                    "INSERT INTO app.recordings VALUES ('ws' || ($1::bigint % 8), $1::bigint, 'x')",
                    &[&i],
                )
                .await;
            if r.is_ok() {
                committed.push(i);
            }
        }
        committed
    })
}

/// Writes on the coordinator emit, on the worker node that holds each row's
/// shard and in the writing transaction, exactly the events the same
/// writes emit on one node: the same types, payloads and keys, and nothing
/// for the rolled-back transaction.
#[tokio::test]
async fn writes_on_a_distributed_table_emit_as_on_one_node() {
    let Some(citus) = Citus::start(2, "writes_on_a_distributed_table_emit_as_on_one_node").await
    else {
        return;
    };
    let db = citus.coordinator().await;
    db.batch_execute(&format!("{APP}{DISTRIBUTE}{ATTACH}"))
        .await
        .unwrap_or_else(|e| panic!("attach on Citus: {}", pg_error(&e)));
    citus.config_replicated().await;
    run_writes(&db).await;

    let single = Cluster::start().await;
    let sdb = single.connect("postgres").await;
    sdb.batch_execute(&format!("{APP}{ATTACH}")).await.unwrap();
    run_writes(&sdb).await;
    let mut want = expanded(&sdb).await;
    want.sort();

    let mut got = Vec::new();
    let mut tenants_by_node: Vec<Vec<String>> = Vec::new();
    for node in citus.nodes() {
        let events = expanded(&node.connect("postgres").await).await;
        let mut tenants: Vec<String> = events.iter().map(|e| e.0.clone()).collect();
        tenants.sort();
        tenants.dedup();
        tenants_by_node.push(tenants);
        got.extend(events);
    }
    got.sort();
    assert_eq!(got.len(), want.len(), "as many events as on one node");
    assert_eq!(got, want, "the same events as on one node");
    assert!(
        !got.iter().any(|e| e.2.contains("gone")),
        "nothing from the rolled-back transaction"
    );

    // Each tenant's events are on the node that holds its shard, and the
    // coordinator (which holds none) has none.
    assert!(
        tenants_by_node[0].is_empty(),
        "the coordinator emitted nothing"
    );
    for (i, node) in citus.workers.iter().enumerate() {
        for tenant in &tenants_by_node[i + 1] {
            let (_, port) = citus.placement("app.recordings", tenant).await;
            assert_eq!(port, node.port, "{tenant}'s events are on its shard's node");
        }
    }
    assert!(
        tenants_by_node[1..].iter().all(|t| !t.is_empty()),
        "both worker nodes hold tenants: {tenants_by_node:?}"
    );
}

/// A postbox-worker per node delivers every committed event once, signed
/// with the endpoint's secret that was created on the coordinator and
/// replicated to the node, and verified by the official library.
#[tokio::test]
async fn a_worker_per_node_delivers_every_event_once() {
    let Some(citus) = Citus::start(2, "a_worker_per_node_delivers_every_event_once").await else {
        return;
    };
    let Delivering {
        db,
        rx,
        workers,
        secrets,
    } = delivering(&citus).await;
    // Separate strings: a BEGIN in a string of several statements takes
    // the ones before it into its transaction, and ROLLBACK would undo them.
    for w in [
        "INSERT INTO app.recordings SELECT 'ws' || (i % 8), i, 'title ' || i FROM generate_series(1, 200) i",
        "UPDATE app.recordings SET title = 'changed' WHERE id % 10 = 0",
        "BEGIN; INSERT INTO app.recordings VALUES ('ws5', 1000, 'gone'); ROLLBACK",
    ] {
        db.batch_execute(w).await.unwrap();
    }
    let want = 200 + 20;
    eventually("every committed event delivered", || rx.count() >= want).await;
    for w in workers {
        w.stop().await.unwrap();
    }

    let received = rx.received();
    assert_eq!(received.len(), want, "each event once");
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for r in &received {
        *ids.entry(r.header("webhook-id").to_string()).or_default() += 1;
    }
    assert!(ids.values().all(|&n| n == 1), "no event twice");
    for r in received.iter().step_by(17) {
        let tenant = r.json()["data"]["recording"]["workspace_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        verify::python_verify("standard", &secrets[&tenant], r, "")
            .unwrap_or_else(|e| panic!("{tenant}'s delivery does not verify: {e}"));
    }
    assert!(
        !received.iter().any(|r| r.body.contains("gone")),
        "nothing from the rolled-back transaction"
    );
}

/// Moving a tenant's shard to the other worker node while the application
/// writes and the workers deliver loses nothing and repeats nothing:
/// Citus copies the rows without firing the triggers (they are made on the
/// new placement after the copy, and its catch-up is logical replication),
/// what the old node emitted is delivered from there, and writes after the
/// move emit on the new node.
#[tokio::test]
async fn moving_a_shard_while_events_flow_loses_nothing() {
    let Some(citus) = Citus::start(2, "moving_a_shard_while_events_flow_loses_nothing").await
    else {
        return;
    };
    let Delivering {
        db, rx, workers, ..
    } = delivering(&citus).await;

    // ws1's shard, where it is, and the other worker node.
    let (shard, from) = citus.placement("app.recordings", "ws1").await;
    let to = citus
        .workers
        .iter()
        .map(|w| w.port)
        .find(|p| *p != from)
        .unwrap();

    // The application writes one row at a time, every tenant in turn,
    // before, during and after the move (a bounded loop).
    const WRITES: i64 = 600;
    let written = Arc::new(AtomicI64::new(0));
    let writer = write_rows(&citus, WRITES, written.clone()).await;
    // Once some of ws1's rows are in, move its shard (logical replication,
    // so writes go on meanwhile).
    eventually("the move starts with rows in the shard", || {
        rx.count() >= 40
    })
    .await;
    let before = written.load(Ordering::SeqCst);
    db.execute(
        "SELECT citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3, shard_transfer_mode => 'force_logical')",
        &[&shard, &(from as i32), &(to as i32)],
    )
    .await
    .unwrap_or_else(|e| panic!("citus_move_shard_placement: {}", pg_error(&e)));
    let during = written.load(Ordering::SeqCst) - before;
    assert!(
        during > 0 && before < WRITES,
        "the application wrote while the shard moved ({before} before, {during} during)"
    );
    assert_eq!(
        writer.await.unwrap().len(),
        WRITES as usize,
        "every write committed"
    );
    let (_, moved_to) = citus.placement("app.recordings", "ws1").await;
    assert_eq!(moved_to, to, "ws1's shard moved");
    // A write after the move emits on the new node.
    db.batch_execute("INSERT INTO app.recordings VALUES ('ws1', 100001, 'after')")
        .await
        .unwrap();

    let want = WRITES as usize + 1;
    eventually("every committed event delivered", || rx.count() >= want).await;
    // Nothing more arrives: no event was emitted twice by the move.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for w in workers {
        w.stop().await.unwrap();
    }
    let received = rx.received();
    let mut ids: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &received {
        let id = r.json()["data"]["recording"]["id"].as_i64().unwrap();
        *ids.entry(id).or_default() += 1;
    }
    assert_eq!(received.len(), want, "each write's event once");
    assert_eq!(ids.len(), want, "every write's event");
    let after = received
        .iter()
        .find(|r| r.body.contains("\"after\""))
        .expect("the write after the move was delivered");
    assert!(after.body.contains("100001"));
    let on_new_node: i64 = one(
        &citus
            .workers
            .iter()
            .find(|w| w.port == to)
            .unwrap()
            .connect("postgres")
            .await,
        "SELECT count(*) FROM postbox.events WHERE data::jsonb #>> '{recording,id}' = '100001'",
    )
    .await;
    assert_eq!(
        on_new_node, 1,
        "the write after the move emitted on the new node"
    );
}

/// A worker node killed with -9 while the application writes and the
/// workers deliver, then started again: every write that committed is
/// delivered (the node's emitted rows and outbox are in its WAL), and the
/// only repeats are of deliveries that were in flight when it died.
#[tokio::test]
async fn a_worker_node_killed_with_9_loses_no_committed_event() {
    let Some(citus) = Citus::start(2, "a_worker_node_killed_with_9_loses_no_committed_event").await
    else {
        return;
    };
    let Delivering {
        db, rx, workers, ..
    } = delivering(&citus).await;

    // One row at a time (a bounded loop); a write to the dead node's
    // shards fails, and is not counted as committed.
    const WRITES: i64 = 600;
    let written = Arc::new(AtomicI64::new(0));
    let writer = write_rows(&citus, WRITES, written.clone()).await;
    eventually("deliveries under way", || rx.count() >= 50).await;
    let victim = &citus.workers[0];
    victim.kill_9();
    let at_kill = written.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    victim.start_again();
    let committed = writer.await.unwrap();
    assert!(
        at_kill < WRITES,
        "the node died while the application wrote ({at_kill} of {WRITES})"
    );
    assert!(
        committed.len() < WRITES as usize,
        "some writes met the dead node"
    );

    let delivered = |rx: &Receiver| -> BTreeMap<i64, usize> {
        let mut ids = BTreeMap::new();
        for r in rx.received() {
            let id = r.json()["data"]["recording"]["id"].as_i64().unwrap();
            *ids.entry(id).or_default() += 1;
        }
        ids
    };
    // What committed: every write the application was told of, and any
    // whose answer the kill cut off but which committed all the same.
    let rows: Vec<i64> = db
        .query("SELECT id FROM app.recordings", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        committed.iter().all(|i| rows.contains(i)),
        "every write the application was told of is there after the crash"
    );
    eventually("every committed write delivered", || {
        let ids = delivered(&rx);
        rows.iter().all(|i| ids.contains_key(i))
    })
    .await;
    for w in workers {
        w.stop().await.unwrap();
    }
    let ids = delivered(&rx);
    assert_eq!(
        ids.len(),
        rows.len(),
        "no event of a write that did not commit"
    );
    let repeats = ids.values().filter(|&&n| n > 1).count();
    // In flight at the kill: at most the worker's requests in flight.
    assert!(repeats <= 64, "{repeats} events delivered twice");
}

/// An endpoint that a worker node disabled (its receiver answered 410
/// Gone) is resumed through the coordinator, as a tenant resumes it in the
/// portal: the node, which keeps the endpoint's health, clears it when the
/// resume arrives by replication, and delivers the tenant's next event.
#[tokio::test]
async fn an_endpoint_disabled_on_a_node_is_resumed_through_the_coordinator() {
    let Some(citus) = Citus::start(
        2,
        "an_endpoint_disabled_on_a_node_is_resumed_through_the_coordinator",
    )
    .await
    else {
        return;
    };
    let Delivering {
        db, rx, workers, ..
    } = delivering(&citus).await;
    rx.set_behavior(Behavior::Refuse {
        needle: "refuse me".into(),
        status: 410,
    });
    let (_, port) = citus.placement("app.recordings", "ws1").await;
    let node = citus
        .workers
        .iter()
        .find(|n| n.port == port)
        .unwrap()
        .connect("postgres")
        .await;
    let status = "SELECT status FROM postbox.endpoint_status WHERE tenant = 'ws1'";
    db.batch_execute("INSERT INTO app.recordings VALUES ('ws1', 1, 'refuse me')")
        .await
        .unwrap();
    postbox_tests::wait_until(
        std::time::Duration::from_secs(30),
        "the node to disable ws1's endpoint",
        || async { (one::<String>(&node, status).await == "disabled").then_some(()) },
    )
    .await;

    rx.set_behavior(Behavior::Statuses(vec![204]));
    db.batch_execute(
        "SELECT postbox.update_endpoint('ws1', id, enabled => true) FROM postbox.endpoints WHERE tenant = 'ws1'",
    )
    .await
    .unwrap();
    citus.config_replicated().await;
    assert_eq!(
        one::<String>(&node, status).await,
        "healthy",
        "the resume cleared the node's health"
    );
    db.batch_execute("INSERT INTO app.recordings VALUES ('ws1', 2, 'after the resume')")
        .await
        .unwrap();
    eventually("the next event delivered", || {
        rx.received()
            .iter()
            .any(|r| r.body.contains("after the resume"))
    })
    .await;
    for w in workers {
        w.stop().await.unwrap();
    }
}

/// A worker node routes no event by a configuration older than the event:
/// with the node's subscription stopped, an endpoint made on the
/// coordinator has not reached the node, and the event of a write made
/// after it waits, unexpanded, instead of being routed without it; once
/// replication runs again, the event is delivered to that endpoint.
#[tokio::test]
async fn a_node_routes_no_event_by_a_stale_configuration() {
    let Some(citus) = Citus::start(1, "a_node_routes_no_event_by_a_stale_configuration").await
    else {
        return;
    };
    let db = citus.coordinator().await;
    db.batch_execute(&format!(
        "{APP}{DISTRIBUTE}{ATTACH} SET postbox.allow_insecure_urls = on;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    citus.config_replicated().await;
    let node = citus.workers[0].connect("postgres").await;
    let sub: String = one(&node, "SELECT subname::text FROM pg_subscription").await;
    node.batch_execute(&format!("ALTER SUBSCRIPTION {sub} DISABLE"))
        .await
        .unwrap();
    let worker = Worker::start(test_config(&citus.workers[0]));

    let rx = Receiver::start(Behavior::Statuses(vec![204]), receivers::order()).await;
    postbox_tests::fixtures::endpoint(&db, "ws1", &rx.url(), ", ARRAY['recording.*']").await;
    db.batch_execute("INSERT INTO app.recordings VALUES ('ws1', 1, 'after the endpoint')")
        .await
        .unwrap();
    // The worker has asked the coordinator where its configuration is, and
    // waits for the node to apply it.
    postbox_tests::wait_until(
        std::time::Duration::from_secs(30),
        "the node's worker to ask the coordinator",
        || async {
            (one::<i64>(
                &node,
                "SELECT count(*) FROM postbox.config_fence WHERE pending_lsn IS NOT NULL",
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;
    // Several of its cycles (200 ms apart) later, the event is still waiting.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(
        one::<i64>(&node, "SELECT count(*) FROM postbox.emitted").await,
        1,
        "the event waits for the configuration"
    );
    assert_eq!(
        one::<i64>(&node, "SELECT count(*) FROM postbox.events").await,
        0
    );

    node.batch_execute(&format!("ALTER SUBSCRIPTION {sub} ENABLE"))
        .await
        .unwrap();
    eventually("the event delivered to the new endpoint", || {
        rx.count() == 1
    })
    .await;
    worker.stop().await.unwrap();
    assert!(rx.received()[0].body.contains("after the endpoint"));
}

/// The project's privilege tests (tests/src/privileges.rs) on every node:
/// the coordinator and each worker node, reached directly, each with its
/// own postbox (the roles made once, on the coordinator, which makes them
/// on every node).
#[tokio::test]
async fn the_privilege_tests_pass_on_every_node() {
    let Some(citus) = Citus::start(2, "the_privilege_tests_pass_on_every_node").await else {
        return;
    };
    privileges::make_roles(&citus.coordinator().await).await;
    for node in citus.nodes() {
        privileges::login_roles_get_only_their_grants(node).await;
        privileges::an_emitter_cannot_run_its_code_as_the_owner(node).await;
    }
}

/// An emitter-only role gains nothing on any node: on the coordinator and
/// on each worker node (connecting there directly), it cannot read the
/// replicated secrets, the queue or the subscription's connection string,
/// forge emitted rows, run the worker's or the admin's functions, or set up
/// replication; its writes to the distributed table still emit.
#[tokio::test]
async fn an_emitter_gains_nothing_on_any_node() {
    let Some(citus) = Citus::start(2, "an_emitter_gains_nothing_on_any_node").await else {
        return;
    };
    let db = citus.coordinator().await;
    db.batch_execute(&format!(
        "{APP}{DISTRIBUTE}{ATTACH}
         SET postbox.allow_insecure_urls = on;
         SELECT postbox.create_endpoint('ws1', 'http://127.0.0.1:9999/x', ARRAY['recording.*']);
         CREATE ROLE mallory LOGIN IN ROLE postbox_emitter;
         GRANT USAGE ON SCHEMA app TO mallory;
         GRANT SELECT, INSERT, UPDATE, DELETE ON app.recordings TO mallory;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    citus.config_replicated().await;

    let m = citus.coordinator.connect("mallory").await;
    m.batch_execute(
        "INSERT INTO app.recordings SELECT 'ws' || i, i, 't' FROM generate_series(1, 8) i",
    )
    .await
    .unwrap_or_else(|e| panic!("mallory's write: {}", pg_error(&e)));
    let mut emitted = 0;
    for node in citus.nodes() {
        emitted += one::<i64>(
            &node.connect("postgres").await,
            "SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator'",
        )
        .await;
        let m = node.connect("mallory").await;
        for sql in [
            "SELECT * FROM postbox.endpoint_secrets",
            "SELECT * FROM postbox.endpoints",
            "SELECT * FROM postbox.emitted",
            "SELECT * FROM postbox.outbox",
            "SELECT subconninfo FROM pg_subscription",
            "INSERT INTO postbox.emitted (id, tenant, event_type, created_at, data) VALUES (gen_random_uuid(), 'ws1', 'recording.created', now(), '{}')",
            "SELECT postbox.expand_events()",
            "SELECT postbox.set_waiting(true)",
            "SELECT postbox.create_endpoint('ws1', 'https://example.com/hook')",
            "CALL postbox.citus_replicate_config()",
        ] {
            let e = m
                .batch_execute(sql)
                .await
                .expect_err(&format!("mallory on node {}: {sql}", node.port));
            assert_eq!(
                e.code().map(|c| c.code()),
                Some("42501"),
                "mallory on node {}: {sql}: {}",
                node.port,
                pg_error(&e)
            );
        }
    }
    assert!(emitted > 0, "mallory's writes emitted");
    let su: bool = one(
        &db,
        "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'",
    )
    .await;
    assert!(!su);
}

/// citus_replicate_config refuses a password in its connection string (a
/// failed CREATE SUBSCRIPTION would write it to a node's log), and
/// anywhere but a Citus coordinator, each with its code; it is idempotent.
#[tokio::test]
async fn replicating_the_configuration_refuses_what_it_must() {
    let Some(citus) = Citus::start(1, "replicating_the_configuration_refuses_what_it_must").await
    else {
        return;
    };
    let db = citus.coordinator().await;
    let e = db
        .batch_execute("CALL postbox.citus_replicate_config('sslmode=prefer password=hunter2')")
        .await
        .unwrap_err();
    let text = pg_error(&e);
    assert!(text.contains("citus_conninfo_has_password"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password is not shown: {text}"
    );
    // Again, with every node subscribed: nothing to do, nothing fails.
    db.batch_execute("CALL postbox.citus_replicate_config()")
        .await
        .unwrap_or_else(|e| panic!("a second call: {}", pg_error(&e)));
    let subscriptions: i64 = one(
        &citus.workers[0].connect("postgres").await,
        "SELECT count(*) FROM pg_subscription",
    )
    .await;
    assert_eq!(subscriptions, 1);
    // A worker node is no coordinator.
    let e = citus.workers[0]
        .connect("postgres")
        .await
        .batch_execute("CALL postbox.citus_replicate_config()")
        .await
        .unwrap_err();
    assert!(
        pg_error(&e).contains("citus_not_coordinator"),
        "{}",
        pg_error(&e)
    );
    // Nor is a cluster without Citus.
    let single = Cluster::start().await;
    let e = single
        .connect("postgres")
        .await
        .batch_execute("CALL postbox.citus_replicate_config()")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("55000"));
    assert!(
        pg_error(&e).contains("citus_not_coordinator"),
        "{}",
        pg_error(&e)
    );
}
