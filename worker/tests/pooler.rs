//! The worker's LISTEN behind a pooler that does not keep sessions: a real
//! PgBouncer in transaction mode in front of a real cluster. The LISTEN
//! connection finds that its statements reach another backend than the one
//! that listens, says so, sets `listen_polling` and stops (the worker goes
//! on by polling); connected directly, it keeps listening.

use postbox_tests::{wait_until, Cluster};
use postbox_worker::wakeup;
use prometheus_client::metrics::gauge::Gauge;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// PgBouncer (Debian's) in transaction mode with two server connections in
/// front of `pg`; stopped on drop.
struct Bouncer {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Bouncer {
    fn start(pg: &Cluster) -> Bouncer {
        let port = postbox_tests::free_port();
        let dir = pg.dir().join("pgbouncer");
        std::fs::create_dir_all(&dir).unwrap();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\npostgres = host=127.0.0.1 port={} dbname=postgres\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
                 default_pool_size = 2\nlogfile = {}\n",
                pg.port,
                dir.join("users.txt").display(),
                dir.join("pgbouncer.log").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        // PgBouncer will not run as root.
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "pgbouncer"])
            .arg(&ini)
            .spawn()
            .expect("pgbouncer (scripts/setup.sh installs it)");
        Bouncer {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // runuser passes the signal on to pgbouncer.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_listen(url: &str) -> (tokio::task::JoinHandle<()>, Gauge, watch::Sender<bool>) {
    let (pg, tls) = postbox_runtime::conninfo::parse(url).unwrap();
    let tls = postbox_runtime::tls::connector(&tls).unwrap();
    let polling = Gauge::default();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(wakeup::listen(
        pg,
        tls,
        Arc::new(Notify::new()),
        polling.clone(),
        prometheus_client::metrics::counter::Counter::default(),
        stop,
    ));
    (task, polling, stop_tx)
}

#[tokio::test]
async fn a_listen_behind_a_transaction_pooler_falls_back_to_polling() {
    let pg = Cluster::start().await;
    let bouncer = Bouncer::start(&pg);
    // The pooler is up once it answers.
    let url = bouncer.url();
    let (other, conn) = wait_until(Duration::from_secs(20), "pgbouncer to answer", || {
        let url = url.clone();
        async move {
            tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .ok()
        }
    })
    .await;
    tokio::spawn(conn);

    let (task, polling, _stop) = start_listen(&bouncer.url());
    // Another client keeps taking a server connection in transactions, so
    // the listener's next statement lands on the other one.
    let busy = tokio::spawn(async move {
        for _ in 0..200 {
            if other
                .simple_query("BEGIN; SELECT pg_sleep(0.05); COMMIT")
                .await
                .is_err()
            {
                break;
            }
        }
    });
    wait_until(
        wakeup::LISTEN_CHECK * 4,
        "the listener to notice the pooler",
        || {
            let done = polling.get() == 1 && task.is_finished();
            async move { done.then_some(()) }
        },
    )
    .await;
    busy.abort();
}

#[tokio::test]
async fn a_direct_listen_keeps_listening() {
    let pg = Cluster::start().await;
    let (task, polling, stop) = start_listen(&pg.url("postgres"));
    // That nothing happens can only be seen by waiting: two checks' worth.
    tokio::time::sleep(wakeup::LISTEN_CHECK * 2 + Duration::from_secs(1)).await;
    assert_eq!(polling.get(), 0);
    assert!(
        !task.is_finished(),
        "the listener stopped on a direct connection"
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the listener stops when told")
        .unwrap();
}
