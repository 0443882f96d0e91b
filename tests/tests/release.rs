//! The release archive (`scripts/release.sh`) on a fresh PostgreSQL
//! installation: unpacked and installed with its install.sh into a copy of
//! PostgreSQL 15 that has never seen postbox, the extension is created there,
//! and the archive's worker checks and delivers against it; the archive's
//! postbox-sql installs too.
//! `scripts/test.sh` builds the archive and sets POSTBOX_RELEASE_ARCHIVE.

use postbox_tests::Cluster;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL installation under `root`, copied from this machine's, with
/// no postbox files in it.
fn fresh_postgresql(root: &Path) -> PathBuf {
    let pg_config = std::env::var("PG_CONFIG")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into());
    let dir = |flag: &str| {
        let out = Command::new(&pg_config).arg(flag).output().unwrap();
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    let (bin, share) = (dir("--bindir"), dir("--sharedir"));
    let lib = bin.parent().unwrap().to_path_buf(); // /usr/lib/postgresql/15
    for from in [&lib, &share] {
        let to = root.join(from.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        sh(Command::new("cp").arg("-a").arg(from).arg(&to));
    }
    for f in std::fs::read_dir(
        root.join(share.strip_prefix("/").unwrap())
            .join("extension"),
    )
    .unwrap()
    {
        let f = f.unwrap().path();
        if f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("postbox")
        {
            std::fs::remove_file(f).unwrap();
        }
    }
    let _ = std::fs::remove_file(
        root.join(lib.strip_prefix("/").unwrap())
            .join("lib/postbox.so"),
    );
    root.join(bin.strip_prefix("/").unwrap())
}

/// One HTTP request on `listener`, answered 204; returns it.
fn receive_one(listener: std::net::TcpListener) -> String {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= head_end + 4 + len {
                break;
            }
        }
        assert!(n > 0, "connection closed early");
    }
    s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn the_release_archive_installs_into_a_fresh_postgresql_and_delivers() {
    let archive = std::env::var("POSTBOX_RELEASE_ARCHIVE").expect(
        "POSTBOX_RELEASE_ARCHIVE: build the archive with scripts/release.sh (scripts/test.sh does)",
    );
    let root = std::env::temp_dir().join(format!("postbox-release-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let bin = fresh_postgresql(&root.join("pg"));
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&root));
    let unpacked = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("postbox-")
        })
        .expect("the archive's directory");
    sh(Command::new(unpacked.join("install.sh")).arg(root.join("pg")));

    // Cluster::start creates the extension: from the archive's files only.
    let pg = Cluster::start_with_bindir(bin).await;
    let db = pg.connect("postgres").await;
    let version: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'postbox'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));

    // The API binary is installed too, and knows its routes.
    let out = Command::new(root.join("pg/usr/local/bin/postbox-api"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"/v1/endpoints/by-url\""));

    let worker_bin = root.join("pg/usr/local/bin/postbox-worker");
    db.batch_execute("CREATE ROLE courier LOGIN; GRANT postbox_worker TO courier;")
        .await
        .unwrap();
    let out = Command::new(&worker_bin)
        .arg("check")
        .env("POSTBOX_DATABASE_URL", pg.url("courier"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::thread::spawn(move || receive_one(listener));
    db.batch_execute(&format!(
        "SET postbox.allow_insecure_urls = on;
         SELECT postbox.create_event_type('order.paid');
         SELECT postbox.create_endpoint('t', 'http://127.0.0.1:{port}/hook');
         SELECT postbox.emit('t', 'order.paid', '{{\"order_id\": 1}}');"
    ))
    .await
    .unwrap();
    let mut worker = Command::new(&worker_bin)
        .env("POSTBOX_DATABASE_URL", pg.url("courier"))
        .env("POSTBOX_ALLOW_PRIVATE_TARGETS", "true")
        .spawn()
        .unwrap();
    let request = tokio::task::spawn_blocking(move || got.join().unwrap())
        .await
        .unwrap();
    // And acknowledged, by a role with the worker's grants only.
    postbox_tests::eventually_sql(
        &db,
        "the delivery acknowledged",
        "SELECT count(*) = 1 FROM postbox.deliveries WHERE status = 'succeeded'",
    )
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(request.starts_with("POST /hook "), "{request}");
    assert!(request.contains(r#""data":{"order_id":1}"#), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("webhook-signature: v1,"),
        "{request}"
    );

    // postbox-sql rides along: this version's install and pg_tle scripts,
    // and the frozen installs of earlier releases, each with an upgrade
    // path to this version; the archive's install works as the installing
    // role, in a database of its own.
    let flavour = unpacked.join("postbox-sql");
    let current = env!("CARGO_PKG_VERSION");
    for name in [
        format!("postbox-sql--{current}.sql"),
        format!("postbox-sql--{current}.tle.sql"),
        "postbox-sql--0.8.0.sql".into(),
        "postbox-sql--0.8.0.tle.sql".into(),
    ] {
        assert!(
            flavour.join(&name).exists(),
            "the archive has no postbox-sql/{name}"
        );
    }
    let upgrades = std::fs::read_dir(&flavour)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().into_string().unwrap();
            name.ends_with(&format!("--{current}.sql"))
        })
        .count();
    assert!(
        upgrades >= 1,
        "the archive has no postbox-sql upgrade into {current}"
    );
    db.batch_execute("CREATE DATABASE flavour").await.unwrap();
    pg.install_sql_flavour_from(
        "flavour",
        &flavour.join(format!("postbox-sql--{current}.sql")),
    )
    .await;
    let installed: String = pg
        .connect_to("postgres", "flavour")
        .await
        .query_one("SELECT postbox._sql_flavour_version()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(installed, current);
    drop(pg);
    let _ = std::fs::remove_dir_all(&root);
}
