//! The `postbox-worker` binary: exit codes, signals, and what it takes from
//! its environment (each test's variables are its own process's).

use postbox_tests::fixtures::{cluster, endpoint};
use postbox_tests::receivers::{Behavior, Receiver};
use postbox_tests::verify::python_verify;
use postbox_tests::worker::{worker_process, Running};
use postbox_tests::{eventually, eventually_sql, Cluster};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// (flags, environment, expected text in stderr)
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

fn worker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postbox-worker"));
    c.env_remove("DATABASE_URL")
        .env_remove("POSTBOX_DATABASE_URL");
    c
}

#[test]
fn bad_configuration_exits_2_with_a_clear_message() {
    let cases: [Case; 5] = [
        (&[], &[], "no database"),
        (
            &["--max-in-flight", "0"],
            &[("POSTBOX_DATABASE_URL", "postgres://localhost/x")],
            "POSTBOX_MAX_IN_FLIGHT: must be from 1 to 10000: 0",
        ),
        (
            &[],
            &[
                ("POSTBOX_DATABASE_URL", "postgres://localhost/x"),
                ("POSTBOX_POLL_INTERVAL", "often"),
            ],
            "often",
        ),
        (
            &[],
            &[
                ("POSTBOX_DATABASE_URL", "postgres://localhost/x"),
                ("POSTBOX_LEASE", "3s"),
            ],
            "POSTBOX_LEASE: must exceed POSTBOX_REQUEST_TIMEOUT",
        ),
        (
            &["--config", "/nonexistent/worker.toml"],
            &[],
            "cannot read config file /nonexistent/worker.toml",
        ),
    ];
    for (args, env, want) in cases {
        let out = worker()
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{args:?} {env:?}: expected {want:?} in {stderr}"
        );
    }
}

#[tokio::test]
async fn unsupported_extension_version_exits_2() {
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    db.batch_execute("UPDATE pg_extension SET extversion = '9.9.9' WHERE extname = 'postbox'")
        .await
        .unwrap();
    let out = worker()
        .env("POSTBOX_DATABASE_URL", pg.url("postgres"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("version 9.9.9")
            && stderr.contains(concat!("supported: ", env!("CARGO_PKG_VERSION"))),
        "{stderr}"
    );
    db.batch_execute("DROP EXTENSION postbox").await.unwrap();
    let out = worker()
        .env("POSTBOX_DATABASE_URL", pg.url("postgres"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not installed"));
}

/// SIGTERM after real work: exit 0, the last log line written, and
/// neither the signing secret that signed the delivery nor a header value
/// anywhere in the log, at debug level.
#[tokio::test]
async fn sigterm_stops_the_worker_with_exit_0() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    let (_, secret) = endpoint(
        &db,
        "t",
        &rx.url(),
        ", headers => '{\"Authorization\": \"Bearer s3cr3t-t0k3n\"}'",
    )
    .await;
    let mut child = worker()
        .env("POSTBOX_DATABASE_URL", pg.url("postgres"))
        .env("POSTBOX_ALLOW_PRIVATE_TARGETS", "true")
        .env("POSTBOX_LOG_JSON", "true")
        .env("POSTBOX_LOG", "info,postbox_worker=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually("the signed delivery", || rx.count() == 1).await;
    let got = rx.received();
    assert!(
        python_verify("standard", &secret, &got[0], "").is_ok(),
        "signed with the secret"
    );
    assert_eq!(got[0].header("authorization"), "Bearer s3cr3t-t0k3n");
    eventually_sql(
        &db,
        "the worker to start waiting",
        "SELECT waiting FROM postbox.wakeup",
    )
    .await;
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("\"postbox-worker stopped\""),
        "JSON logs: {log}"
    );
    assert!(
        log.contains("\"attempt\"") && log.contains("\"succeeded\""),
        "the delivery was logged at debug level: {log}"
    );
    for (what, text) in [
        ("the secret", secret.as_str()),
        ("the secret's key", secret.trim_start_matches("whsec_")),
        ("whsec_", "whsec_"),
        ("the header value", "s3cr3t-t0k3n"),
    ] {
        assert!(!log.contains(text), "{what} in the log: {log}");
    }
}

/// Through a proxy, the proxy would resolve the target's name, past the
/// worker's address check: the environment's proxy variables are ignored.
#[tokio::test]
async fn proxy_variables_are_ignored() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    endpoint(&db, "t", &rx.url(), "").await;
    // A "proxy" that counts connections and drops them.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = proxy.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    let mut cmd = worker();
    for var in ["NO_PROXY", "no_proxy"] {
        cmd.env_remove(var);
    }
    for var in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ] {
        cmd.env(var, &proxy_url);
    }
    let mut child = cmd
        .env("POSTBOX_DATABASE_URL", pg.url("postgres"))
        .env("POSTBOX_ALLOW_PRIVATE_TARGETS", "true")
        .env("POSTBOX_REQUEST_TIMEOUT", "2s")
        .env("POSTBOX_CONNECT_TIMEOUT", "1s")
        .env("POSTBOX_LEASE", "5s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually_sql(
        &db,
        "the delivery's first attempt",
        "SELECT count(*) = 1 FROM postbox.attempts",
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (status, error): (String, Option<String>) = {
        let r = db
            .query_one("SELECT outcome, error FROM postbox.attempts", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "succeeded", "{error:?}");
    eventually("the receiver's count", || rx.count() == 1).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing went to the proxy");
}

/// `postbox-worker check`: exit 0 with each finding "ok" for a role that has
/// postbox_worker; exit 2 naming each problem otherwise.
#[tokio::test]
async fn check_reports_readiness_and_exits_2_on_problems() {
    let pg = Cluster::start().await;
    let su = pg.connect("postgres").await;
    su.batch_execute(
        "CREATE ROLE courier LOGIN; GRANT postbox_worker TO courier;
         CREATE ROLE stranger LOGIN;",
    )
    .await
    .unwrap();
    let check = |url: String| {
        let out = worker()
            .arg("check")
            .env("POSTBOX_DATABASE_URL", url)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check(pg.url("courier"));
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "ok: connected as role courier",
        &format!(
            "ok: postbox {}: {}",
            env!("CARGO_PKG_VERSION"),
            match postbox_tests::Flavour::from_env() {
                postbox_tests::Flavour::Extension => "the compiled extension",
                postbox_tests::Flavour::Sql => "postbox-sql (SQL only), installed with psql",
            }
        ),
        "ok: privileges",
        "ok: name resolution works",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    assert!(!out.contains("problem"), "{out}");

    let (code, out) = check(pg.url("stranger"));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("problem: missing privilege: EXECUTE on postbox.expand_events(integer) (GRANT postbox_worker TO stranger)"),
        "{out}"
    );
    assert!(
        out.contains("problem: missing privilege: INSERT on postbox.attempt_log"),
        "{out}"
    );

    let (code, out) = check(pg.url("postgres"));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is a superuser"), "{out}");

    let (code, out) = check("postgres://courier@127.0.0.1:1/postgres?connect_timeout=2".into());
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("problem: cannot connect"), "{out}");
    assert!(!out.contains("warning"), "loopback is local: {out}");
}

/// A database that is not local, reached with sslmode below verify-full
/// (here libpq's default, prefer, which falls back to plain text): `check`
/// warns, and so does the worker as it starts; neither shows the password.
#[test]
fn a_remote_database_without_verify_full_is_warned_about() {
    let url = "postgres://courier:hunter2@db.invalid:1/postgres?connect_timeout=2";
    let out = worker()
        .arg("check")
        .env("POSTBOX_DATABASE_URL", url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "it cannot connect: {text}");
    assert!(
        text.contains(
            "warning: the database connection to db.invalid is not local and uses sslmode=prefer"
        ),
        "{text}"
    );
    let out = worker()
        .env("POSTBOX_DATABASE_URL", url)
        .env("POSTBOX_LOG", "warn")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        log.contains("db.invalid is not local") && log.contains("verify-full"),
        "{log}"
    );
    for text in [&text, &log] {
        assert!(!text.contains("hunter2"), "{text}");
    }
}

/// Waits (up to 30 s) for the worker to exit; its exit code and stderr.
fn exited(mut running: Running) -> (Option<i32>, String) {
    let child = running.0.as_mut().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = running.0.take().unwrap().wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two live processes with one worker id would release each other's claims
/// on every heartbeat and send them again. The second one is refused: it
/// waits a little over STALE_AFTER (a crashed predecessor would go stale
/// meanwhile), then exits 2 naming the id; the first delivers every event
/// once. A process whose id another one took over (its row had gone stale)
/// stops and exits 2 too.
#[tokio::test]
async fn a_second_live_worker_with_the_same_id_is_refused() {
    let (pg, db) = cluster().await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    endpoint(&db, "t", &rx.url(), "").await;
    let twin = || {
        let mut c = worker_process(env!("CARGO_BIN_EXE_postbox-worker"), &pg);
        c.env("POSTBOX_WORKER_ID", "twin")
            .env("POSTBOX_POLL_INTERVAL", "200ms")
            .stderr(Stdio::piped());
        Running(Some(c.spawn().unwrap()))
    };
    let first = twin();
    eventually_sql(
        &db,
        "the first registered",
        "SELECT count(*) = 1 FROM postbox.workers WHERE worker_id = 'twin'",
    )
    .await;
    let second = twin();
    let started = Instant::now();
    // Meanwhile the first one works on, one event at a time.
    for n in 1..=6 {
        db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
            .await
            .unwrap();
        eventually("the delivery", || rx.count() >= n).await;
    }
    let (code, stderr) = tokio::task::spawn_blocking(move || exited(second))
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("worker_id twin is in use by another running worker")
            && stderr.contains("give each worker its own id"),
        "{stderr}"
    );
    assert!(
        started.elapsed() >= postbox_worker::liveness::STALE_AFTER,
        "it gave up before a crashed predecessor would have gone stale"
    );
    eventually_sql(
        &db,
        "all acknowledged",
        "SELECT count(*) = 6 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    assert_eq!(rx.count(), 6, "each event delivered once");

    // Another process takes the id over (the first one's row went stale).
    db.batch_execute(
        "UPDATE postbox.workers SET seen_at = now() - interval '1 minute' WHERE worker_id = 'twin';
         SELECT postbox.worker_heartbeat('twin', gen_random_uuid(), interval '5 seconds');",
    )
    .await
    .unwrap();
    let (code, stderr) = tokio::task::spawn_blocking(move || exited(first))
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("worker_id twin is in use"), "{stderr}");
}
