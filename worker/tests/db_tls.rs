//! The worker's connections to PostgreSQL over TLS: a cluster with `ssl = on`,
//! a server certificate from a CA made here, and a `pg_hba.conf` that admits
//! TCP clients only over TLS (`hostssl`).

use postbox_tests::fixtures::endpoint;
use postbox_tests::receivers::{Behavior, Receiver};
use postbox_tests::worker::{test_config, Worker};
use postbox_tests::{eventually, eventually_sql, Cluster};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Ca { issuer }
    }

    /// (certificate PEM, key PEM) for `names`, signed by this CA.
    fn server(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&key, &self.issuer)
                .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// TCP only with TLS; the harness itself comes in over the Unix socket.
const HBA: &str = "local all all trust
hostssl all all 127.0.0.1/32 trust
hostssl all all ::1/128 trust
";

async fn ssl_cluster(ca: &Ca) -> (Cluster, tokio_postgres::Client, String) {
    // The certificate names localhost only: not 127.0.0.1.
    let (cert, key) = ca.server(&["localhost"]);
    let pg = Cluster::start_custom(
        &[
            ("ssl", "on"),
            ("ssl_cert_file", "'server.crt'"),
            ("ssl_key_file", "'server.key'"),
        ],
        &[
            ("server.crt", cert.as_bytes()),
            ("server.key", key.as_bytes()),
        ],
        Some(HBA),
    )
    .await;
    let db = pg.connect("postgres").await;
    db.batch_execute(
        "SET postbox.allow_insecure_urls = on;
         SELECT postbox.create_event_type('order.paid');",
    )
    .await
    .unwrap();
    let ca_file = pg.dir().join("ca.pem");
    std::fs::write(&ca_file, ca.issuer.pem()).unwrap();
    (pg, db, ca_file.display().to_string())
}

/// The worker's connections to `db`'s server (pool and LISTEN): how many,
/// and how many of them use TLS.
async fn worker_connections(db: &tokio_postgres::Client) -> (i64, i64) {
    let r = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.application_name = 'postbox-worker'",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// What `run` returns when it cannot get going (it ends at start-up).
async fn start_up_error(pg: &Cluster, url: String) -> String {
    let mut cfg = test_config(pg);
    cfg.database_url = url.into();
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        postbox_worker::run(cfg, std::future::pending()),
    )
    .await
    .expect("run returns at start-up");
    res.expect_err("the connection is refused").to_string()
}

#[tokio::test]
async fn verify_full_connects_over_tls_and_refuses_a_wrong_host_name() {
    let ca = Ca::new("postbox test CA");
    let (pg, db, ca_file) = ssl_cluster(&ca).await;
    let rx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    endpoint(&db, "t", &rx.url(), "").await;
    let port = pg.port;

    // verify-full, to the name the certificate holds: connects and delivers.
    let mut cfg = test_config(&pg);
    cfg.database_url = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca_file}"
    )
    .into();
    let worker = Worker::start(cfg);
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually("the delivery over a verified connection", || {
        rx.count() == 1
    })
    .await;
    eventually_sql(
        &db,
        "its acknowledgement",
        "SELECT count(*) = 1 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    // Every worker connection (pool and LISTEN) is encrypted.
    let (all, tls) = worker_connections(&db).await;
    assert!(
        all >= 2 && tls == all,
        "{tls} of {all} worker connections use TLS"
    );
    worker.stop().await.unwrap();

    // verify-full to 127.0.0.1: the certificate does not hold that name.
    let e = start_up_error(
        &pg,
        format!(
            "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca_file}"
        ),
    )
    .await;
    assert!(
        e.contains("certificate not valid for name \"127.0.0.1\"") && e.contains("localhost"),
        "{e}"
    );

    // verify-ca checks the chain only: 127.0.0.1 is fine...
    let mut cfg = test_config(&pg);
    cfg.database_url = format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-ca sslrootcert='{ca_file}'"
    )
    .into();
    let worker = Worker::start(cfg);
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually("the delivery over verify-ca", || rx.count() == 2).await;
    worker.stop().await.unwrap();

    // ...but a server certificate from another CA is refused.
    let other = pg.dir().join("other-ca.pem");
    std::fs::write(&other, Ca::new("another CA").issuer.pem()).unwrap();
    let e = start_up_error(
        &pg,
        format!(
            "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={}",
            other.display()
        ),
    )
    .await;
    assert!(
        e.contains("invalid peer certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );

    // Without TLS, a hostssl-only server says no.
    let e = start_up_error(
        &pg,
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
    )
    .await;
    assert!(
        e.contains("no pg_hba.conf entry") && e.contains("no encryption"),
        "{e}"
    );
}

#[tokio::test]
async fn verify_modes_without_a_root_certificate_are_configuration_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postbox-worker"))
        .env_remove("DATABASE_URL")
        .env(
            "POSTBOX_DATABASE_URL",
            "postgres://u:hunter2@db.internal/app?sslmode=verify-full",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sslmode=verify-full needs sslrootcert") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

/// A certificate rustls cannot read: X.509 version 1, as Citus makes for its
/// nodes, made here by the `openssl` command (`x509 -req` without
/// extensions writes version 1). (certificate PEM, key PEM).
fn version_1_certificate(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "v1.key",
        "-subj",
        "/CN=localhost",
        "-out",
        "v1.csr",
    ]);
    run(&[
        "x509", "-req", "-in", "v1.csr", "-signkey", "v1.key", "-days", "2", "-out", "v1.crt",
    ]);
    (
        std::fs::read(dir.join("v1.crt")).unwrap(),
        std::fs::read(dir.join("v1.key")).unwrap(),
    )
}

/// Under sslmode=prefer (the default) a server whose TLS handshake fails is
/// reached without TLS, as libpq does: the worker connects and delivers,
/// over plain connections. Under require it does not fall back, and says
/// why.
#[tokio::test]
async fn prefer_falls_back_to_plain_when_the_handshake_fails_and_require_does_not() {
    let dir = std::env::temp_dir().join(format!("postbox-v1-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = version_1_certificate(&dir);
    let pg = Cluster::start_custom(
        &[
            ("ssl", "on"),
            ("ssl_cert_file", "'server.crt'"),
            ("ssl_key_file", "'server.key'"),
        ],
        &[("server.crt", &cert), ("server.key", &key)],
        None,
    )
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
    let db = pg.connect("postgres").await;
    db.batch_execute(
        "SET postbox.allow_insecure_urls = on;
         SELECT postbox.create_event_type('order.paid');",
    )
    .await
    .unwrap();
    let rx = Receiver::start(Behavior::Statuses(vec![200]), Arc::new(AtomicU64::new(0))).await;
    endpoint(&db, "t", &rx.url(), "").await;

    // test_config's URL names no sslmode: prefer.
    let worker = Worker::start(test_config(&pg));
    db.batch_execute("SELECT postbox.emit('t', 'order.paid', '{}')")
        .await
        .unwrap();
    eventually("the delivery", || rx.count() == 1).await;
    let (all, tls) = worker_connections(&db).await;
    assert!(
        all >= 2 && tls == 0,
        "{tls} of {all} worker connections use TLS"
    );
    worker.stop().await.unwrap();

    let e = start_up_error(
        &pg,
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
            pg.port
        ),
    )
    .await;
    assert!(e.contains("TLS handshake failed"), "{e}");
}
