//! Test harness: a throwaway PostgreSQL cluster with postbox installed, and
//! what the worker's and the API's tests share around it (receivers, the
//! worker under test, a resolver, certificates, verification).
//!
//! Each [`Cluster`] gets its own data directory under the system temp dir,
//! starts on a free loopback port, and is stopped and removed on drop. The
//! data directory is a copy of a template that `initdb` made once per
//! machine (see `template`), not a fresh `initdb`. PostgreSQL refuses to
//! run as root, so as root the cluster runs as the `postgres` user. The
//! extension must already be installed into the local PostgreSQL (`cargo
//! pgrx install`); `scripts/test.sh` does that.
//!
//! # Layout
//! - [`Cluster`]: start, connect, restart, stop; a streaming standby and
//!   its promotion.
//! - [`wait_until`], [`eventually`], [`eventually_sql`]: poll a condition
//!   with a deadline instead of sleeping.
//! - [`init_log`]: the log of in-process workers and APIs, for any test.
//! - [`citus`]: a Citus cluster (a coordinator and N worker nodes) in one
//!   call.
//! - [`fixtures`]: a cluster set up for delivery tests, endpoints, one-value
//!   queries.
//! - [`receivers`]: HTTP(S) receivers on loopback that record and answer as
//!   told.
//! - [`worker`]: the worker in-process or as a process, fast test settings,
//!   its metrics.
//! - [`resolver`]: a resolver the test controls.
//! - [`tls`]: a test CA and certificates for HTTPS receivers.
//! - [`verify`]: deliveries verified with the official standardwebhooks
//!   library, Python's hmac, or a receiver's own code.

pub mod citus;
pub mod fixtures;
pub mod privileges;
pub mod receivers;
pub mod resolver;
pub mod tls;
pub mod verify;
pub mod worker;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Where a new cluster's data directory comes from.
enum Initdb {
    /// A copy of the [`template`] of its PostgreSQL.
    Template,
    /// Its own `initdb`.
    Own,
}

/// How postbox is installed in a test cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The compiled extension: `CREATE EXTENSION postbox` as a superuser.
    Extension,
    /// postbox-sql (scripts/sql-flavour.py), run as a role that is not a
    /// superuser and has only CREATEROLE and CREATE on the database, as a
    /// managed service's administrator has ([`INSTALLER`]).
    Sql,
}

impl Flavour {
    /// `POSTBOX_FLAVOUR=sql` runs a suite against the SQL flavour.
    pub fn from_env() -> Flavour {
        match std::env::var("POSTBOX_FLAVOUR").as_deref() {
            Ok("sql") => Flavour::Sql,
            _ => Flavour::Extension,
        }
    }
}

/// The role the SQL flavour is installed as: CREATEROLE and CREATE on the
/// database, not a superuser (RDS's master user, Cloud SQL's cloudsqlsuperuser).
pub const INSTALLER: &str = "postbox_installer";

/// The SQL flavour's install script, made once per test process by
/// scripts/sql-flavour.py into target/postbox-sql (or `POSTBOX_SQL_SCRIPT`).
pub fn sql_flavour_script() -> PathBuf {
    static SCRIPT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            if let Ok(p) = std::env::var("POSTBOX_SQL_SCRIPT") {
                return p.into();
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let out = Command::new("python3")
                .arg(root.join("scripts/sql-flavour.py"))
                .arg(root.join("target/postbox-sql"))
                .output()
                .expect("python3 scripts/sql-flavour.py");
            assert!(
                out.status.success(),
                "scripts/sql-flavour.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .expect("scripts/sql-flavour.py names its script")
                .into()
        })
        .clone()
}

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// How postbox was installed in database `postgres`.
    pub flavour: Flavour,
    /// The harness's own connections use the Unix socket (custom pg_hba.conf).
    socket_only: bool,
    /// The role workers log in as ([`crate::worker::test_config`]): a LOGIN
    /// role with postbox_worker's grants only where the harness installed
    /// postbox, so the worker's SQL runs with the rights it has in
    /// production (a missing grant fails the tests); the superuser on
    /// clusters installed otherwise (Citus nodes, bare clusters).
    pub worker_role: &'static str,
}

/// The LOGIN role of [`Cluster::worker_role`].
pub const WORKER_ROLE: &str = "postbox_test_worker";

fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("POSTBOX_PG_BINDIR") {
        return dir.into();
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("pg_config is not installed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn uid() -> String {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn is_root() -> bool {
    uid() == "0"
}

/// What every cluster's `initdb` is run with, besides its directory.
const INITDB_OPTIONS: &[&str] = &["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"];

/// Held while a template is looked for or made, so the tests of one process
/// make it once.
static TEMPLATE: Mutex<()> = Mutex::new(());

/// The data directory that clusters of the PostgreSQL in `bin` copy: made by
/// `initdb` ([`INITDB_OPTIONS`]) the first time it is asked for, then kept in
/// the temp dir as `postbox-template-<key>/data` for every later test run on
/// the machine. The key hashes what the files depend on: the programs' path,
/// `postgres --version`, the options, and the user that owns the files; it
/// is written beside them in `key`. A template is made in a directory of its
/// own and renamed into place, so a half-made one is never seen, and when
/// two test processes make one at once, the first rename wins and the other
/// process uses it. Copies share initdb's system identifier, which only
/// replication checks (a standby is a copy of its primary anyway).
fn template(bin: &Path) -> PathBuf {
    let bin = bin.canonicalize().unwrap_or_else(|_| bin.to_path_buf());
    let version = Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.join("postgres").display()));
    let key = format!(
        "bin: {}\nversion: {}\ninitdb: {}\nuid: {}\n",
        bin.display(),
        String::from_utf8_lossy(&version.stdout).trim(),
        INITDB_OPTIONS.join(" "),
        uid()
    );
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    };
    let dir = std::env::temp_dir().join(format!("postbox-template-{hash:016x}"));
    // Its key is written last; a template that lost files (a temp dir
    // cleaner) is made again.
    let complete = |dir: &Path| {
        ["key", "data/PG_VERSION", "data/global/pg_control"]
            .iter()
            .all(|f| dir.join(f).exists())
    };
    let _made_once = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if complete(&dir) {
        return dir.join("data");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let making = Cluster::in_new_dir(bin, false);
    making.initdb(&making.dir.join("data"));
    std::fs::write(making.dir.join("key"), &key).unwrap();
    // Renaming onto a directory that exists fails: another process won
    // (and dropping `making` removes the copy that lost).
    if std::fs::rename(&making.dir, &dir).is_err() {
        assert!(complete(&dir), "{}: neither made nor found", dir.display());
    }
    dir.join("data")
}

/// A port on 127.0.0.1 that nothing listens on now, for a server the test
/// starts later (a cluster, a pooler, a worker's metrics) or for a port that
/// must refuse connections.
///
/// Not the kernel's `bind(0)`: a port it hands out and we release sits in
/// the ephemeral range, where any outgoing connection (the worker's, the
/// harness's) or another test's `bind(0)` may take it before our server
/// binds it, and the server then fails to start (seen in CI: "could not
/// bind", pg_ctl "stopped waiting"). So the ports come from below that range
/// (`ip_local_port_range`), which the kernel never picks by itself: each
/// process starts at its own place in it (its pid) and hands each port out
/// once, skipping any that something holds.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Below the ephemeral range's low end (Linux's default 32768), above
    // the registered ports most services take.
    const LOW: usize = 20_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<usize>().ok())
        .filter(|&low| low > LOW + 1_000)
        .unwrap_or(32_768);
    let span = high - LOW;
    let start = (std::process::id() as usize * 7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {LOW}..{high}");
}

impl Cluster {
    /// A new cluster (a copy of the template) started, with `CREATE
    /// EXTENSION postbox` in database `postgres`.
    pub async fn start() -> Cluster {
        Self::start_with(&[]).await
    }

    /// Like [`Cluster::start`], with extra `postgresql.conf` settings.
    pub async fn start_with(settings: &[(&str, &str)]) -> Cluster {
        Self::start_custom(settings, &[], None).await
    }

    /// Like [`Cluster::start_with`], plus `files` written into the data
    /// directory before the server starts (owned by its user, mode 0600, as
    /// a server key must be), and, with `hba`, that text as `pg_hba.conf`.
    /// With `hba`, the harness's own connections ([`Cluster::connect`]) use
    /// the Unix socket, so `hba` needs a `local` line for them.
    pub async fn start_custom(
        settings: &[(&str, &str)],
        files: &[(&str, &[u8])],
        hba: Option<&str>,
    ) -> Cluster {
        Self::start_from(pg_bindir(), settings, files, hba, Initdb::Template).await
    }

    /// Like [`Cluster::start`], with the PostgreSQL programs in `bin` (another
    /// installation, e.g. one a release archive was installed into). Its own
    /// `initdb` makes the data directory: that installation is what is
    /// tested, and no template is kept for it.
    pub async fn start_with_bindir(bin: PathBuf) -> Cluster {
        Self::start_from(bin, &[], &[], None, Initdb::Own).await
    }

    /// A cluster of the PostgreSQL in `bin` (its own `initdb`) with
    /// `settings`, and nothing of postbox installed.
    pub async fn start_bare(bin: PathBuf, settings: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster::in_new_dir(bin, false);
        cluster.initdb(&cluster.dir.join("data"));
        cluster.configure(settings);
        cluster.start_server();
        cluster.flavour = Flavour::Sql;
        cluster
    }

    async fn start_from(
        bin: PathBuf,
        settings: &[(&str, &str)],
        files: &[(&str, &[u8])],
        hba: Option<&str>,
        initdb: Initdb,
    ) -> Cluster {
        let cluster = Cluster::in_new_dir(bin, hba.is_some());
        let data = cluster.dir.join("data");
        match initdb {
            Initdb::Own => cluster.initdb(&data),
            Initdb::Template => cluster.copy_template(),
        }
        cluster.configure(settings);
        let mut written: Vec<PathBuf> = Vec::new();
        for (name, bytes) in files {
            let path = data.join(name);
            std::fs::write(&path, bytes).unwrap();
            written.push(path);
        }
        if let Some(hba) = hba {
            let path = data.join("pg_hba.conf");
            std::fs::write(&path, hba).unwrap();
            written.push(path);
        }
        for path in &written {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                let ok = Command::new("chown")
                    .arg("postgres")
                    .arg(path)
                    .status()
                    .unwrap();
                assert!(ok.success(), "chown postgres failed");
            }
        }
        cluster.start_server();
        let mut cluster = cluster;
        if cluster.flavour == Flavour::Sql {
            cluster.install_sql_flavour("postgres").await;
            cluster.add_worker_role().await;
            return cluster;
        }
        let client = cluster.connect("postgres").await;
        // POSTBOX_EXTENSION_VERSION: an older installed version, for
        // measuring a release against its predecessor on the same machine.
        let create = match std::env::var("POSTBOX_EXTENSION_VERSION") {
            Ok(v) if !v.is_empty() => format!("CREATE EXTENSION postbox VERSION '{v}'"),
            _ => "CREATE EXTENSION postbox".to_string(),
        };
        client
            .batch_execute(&create)
            .await
            .expect("CREATE EXTENSION postbox (is it installed? run scripts/test.sh)");
        cluster.add_worker_role().await;
        cluster
    }

    /// Makes [`WORKER_ROLE`] (postbox_worker's grants, nothing else) the
    /// role workers log in as.
    async fn add_worker_role(&mut self) {
        self.connect("postgres")
            .await
            .batch_execute(&format!(
                "CREATE ROLE {WORKER_ROLE} LOGIN IN ROLE postbox_worker"
            ))
            .await
            .unwrap();
        self.worker_role = WORKER_ROLE;
    }

    /// A cluster of the default PostgreSQL (a copy of its template) with
    /// `settings`, started, and nothing of postbox installed: a node of
    /// [`citus::Citus`].
    pub(crate) fn start_plain(settings: &[(&str, &str)]) -> Cluster {
        let cluster = Cluster::in_new_dir(pg_bindir(), false);
        cluster.copy_template();
        cluster.configure(settings);
        cluster.start_server();
        cluster
    }

    /// The data directory as a copy of the template of this PostgreSQL.
    fn copy_template(&self) {
        let template = template(&self.bin);
        let data = self.dir.join("data");
        // -a: the owner (postgres, when we are root) and modes kept.
        let out = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cp -a {} {}: {}",
            template.display(),
            data.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Installs the SQL flavour into database `db` as [`INSTALLER`] (made
    /// here if missing: CREATEROLE, CREATE on `db`, no superuser).
    pub async fn install_sql_flavour(&self, db: &str) {
        self.install_sql_flavour_from(db, &sql_flavour_script())
            .await;
    }

    /// Installs postbox-sql into `db` from `script` (a frozen release's, say)
    /// as [`INSTALLER`], made here if need be.
    pub async fn install_sql_flavour_from(&self, db: &str, script: &Path) {
        let su = self.connect_to("postgres", db).await;
        su.batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{INSTALLER}') THEN
                     CREATE ROLE {INSTALLER} LOGIN CREATEROLE;
                 END IF;
             END $$;
             GRANT CREATE ON DATABASE \"{db}\" TO {INSTALLER};"
        ))
        .await
        .unwrap();
        self.run_as_installer(db, script).await;
    }

    /// Runs a postbox-sql script (an install or an upgrade) in `db` as
    /// [`INSTALLER`].
    pub async fn run_as_installer(&self, db: &str, script: &Path) {
        let sql =
            std::fs::read_to_string(script).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        self.connect_to(INSTALLER, db)
            .await
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "running {} as {INSTALLER}: {}",
                    script.display(),
                    crate::pg_error(&e)
                )
            });
    }

    /// What a superuser session runs to let endpoints use http and loopback
    /// URLs (development only), or to stop: the session's setting in the
    /// compiled extension; in the SQL flavour the owner's settings table,
    /// which holds for the whole database (the worker's sessions too).
    pub fn insecure_urls_sql(&self, on: bool) -> &'static str {
        match (self.flavour, on) {
            (Flavour::Extension, true) => "SET postbox.allow_insecure_urls = on;",
            (Flavour::Extension, false) => "RESET postbox.allow_insecure_urls;",
            (Flavour::Sql, true) => {
                "UPDATE postbox.settings SET value = 'on' WHERE name = 'allow_insecure_urls';"
            }
            (Flavour::Sql, false) => {
                "UPDATE postbox.settings SET value = 'off' WHERE name = 'allow_insecure_urls';"
            }
        }
    }

    /// A cluster not yet made: a new, empty directory (owned by `postgres`
    /// when we are root) and a free port.
    fn in_new_dir(bin: PathBuf, socket_only: bool) -> Cluster {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("postbox-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success(), "chown postgres failed");
        }
        Cluster {
            dir,
            bin,
            port: free_port(),
            socket_only,
            flavour: Flavour::from_env(),
            worker_role: "postgres",
        }
    }

    /// The harness's postgresql.conf lines, then `settings`.
    fn configure(&self, settings: &[(&str, &str)]) {
        let mut conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n",
            self.port,
            self.dir.display()
        );
        for (k, v) in settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        self.append_conf(&conf);
    }

    /// `initdb` into `data`.
    fn initdb(&self, data: &Path) {
        let mut args = vec!["initdb", "-D", data.to_str().unwrap()];
        args.extend_from_slice(INITDB_OPTIONS);
        self.pg(&args);
    }

    /// Appends `text` to the data directory's `postgresql.conf`.
    fn append_conf(&self, text: &str) {
        let path = self.dir.join("data").join("postgresql.conf");
        let mut conf = std::fs::read_to_string(&path).unwrap();
        conf.push_str(text);
        std::fs::write(&path, conf).unwrap();
    }

    /// `pg_ctl start`, logging to `server.log`; waits until it accepts
    /// connections.
    fn start_server(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.pg(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ]);
    }

    /// A PostgreSQL tool, run as `postgres` when we are root.
    fn tool(&self, name: &str) -> Command {
        let tool = self.bin.join(name);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        }
    }

    fn pg(&self, args: &[&str]) {
        let tool = self.bin.join(args[0]);
        let out = self
            .tool(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            args[0],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A libpq-style connection string for `user` in database `postgres`.
    pub fn url(&self, user: &str) -> String {
        self.url_db(user, "postgres")
    }

    /// A connection string for `user` in database `db`.
    pub fn url_db(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// A key=value connection string over the Unix socket.
    pub fn socket_url(&self, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bindir(&self) -> &Path {
        &self.bin
    }

    /// A connection whose notifications are discarded.
    pub async fn connect(&self, user: &str) -> Client {
        self.connect_listening(user).await.0
    }

    /// A connection to database `db`.
    pub async fn connect_to(&self, user: &str, db: &str) -> Client {
        self.connect_url(user, &self.url_db(user, db)).await.0
    }

    /// A connection and the notifications it receives.
    pub async fn connect_listening(
        &self,
        user: &str,
    ) -> (Client, mpsc::UnboundedReceiver<Notification>) {
        let url = if self.socket_only {
            self.socket_url(user)
        } else {
            self.url(user)
        };
        self.connect_url(user, &url).await
    }

    async fn connect_url(
        &self,
        user: &str,
        url: &str,
    ) -> (Client, mpsc::UnboundedReceiver<Notification>) {
        let (client, mut conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            use futures_util::StreamExt;
            while let Some(Ok(msg)) = messages.next().await {
                if let AsyncMessage::Notification(n) = msg {
                    let _ = tx.send(n);
                }
            }
        });
        (client, rx)
    }

    /// Restarts the server with `pg_ctl restart -m <mode>` (`fast`:
    /// sessions are ended cleanly; `immediate`: as a crash, then recovery),
    /// and waits until it accepts connections again.
    pub fn restart(&self, mode: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.pg(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-m",
            mode,
            "-w",
            "restart",
        ]);
    }

    /// A streaming standby of this server, made with `pg_basebackup -R` in
    /// its own directory and started on its own port. The primary's default
    /// `pg_hba.conf` (initdb's) lets loopback replication in.
    pub fn standby(&self) -> Cluster {
        let standby = Cluster::in_new_dir(self.bin.clone(), self.socket_only);
        let data = standby.dir.join("data");
        let port = self.port.to_string();
        standby.pg(&[
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-D",
            data.to_str().unwrap(),
            "-R",
            "-X",
            "stream",
            "--no-sync",
            // An immediate checkpoint, not a spread one (which takes minutes).
            "--checkpoint=fast",
        ]);
        // The copied settings name the primary's port and socket directory;
        // later lines win.
        standby.append_conf(&format!(
            "port = {}\nunix_socket_directories = '{}'\n",
            standby.port,
            standby.dir.display()
        ));
        standby.start_server();
        standby
    }

    /// Promotes a standby to primary and waits until it is one.
    pub fn promote(&self) {
        let data = self.dir.join("data");
        self.pg(&["pg_ctl", "-D", data.to_str().unwrap(), "-w", "promote"]);
    }

    /// Kills the server with SIGKILL (-9), the postmaster and every
    /// process it started, as the kernel's OOM killer or a power cut would
    /// leave it; [`Cluster::start_again`] recovers it.
    pub fn kill_9(&self) {
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Its children first (their parent is still there to name them).
        let children: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
                // pid (comm) state ppid ...: the comm may hold spaces.
                let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                (ppid == pid.to_string()).then_some(name)
            })
            .collect();
        let ok = Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .args(&children)
            .status()
            .unwrap();
        assert!(ok.success(), "kill -9 {pid}");
        // Gone before anyone starts it again: a new postmaster refuses to
        // start while the old shared memory is still attached.
        let deadline = Instant::now() + Duration::from_secs(10);
        // A zombie (state Z) holds nothing; whoever adopted it reaps it.
        let alive = |p: &str| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .is_some_and(|zombie| !zombie)
        };
        while alive(&pid.to_string()) || children.iter().any(|c| alive(c)) {
            assert!(Instant::now() < deadline, "postgres {pid} outlived kill -9");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a server that was killed, and waits until it accepts
    /// connections (after its crash recovery).
    pub fn start_again(&self) {
        // The killed postmaster may stay a zombie (whoever adopted it need
        // not reap it), and PostgreSQL takes a lock file (the data
        // directory's, the socket's) naming a process that exists for a
        // server still running.
        let _ = std::fs::remove_file(self.dir.join("data").join("postmaster.pid"));
        let _ = std::fs::remove_file(self.dir.join(format!(".s.PGSQL.{}.lock", self.port)));
        self.start_server();
    }

    /// Stops the server at once, as a crash would.
    pub fn kill(&self) {
        let data = self.dir.join("data");
        self.pg(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if std::env::var_os("POSTBOX_KEEP_CLUSTER").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit`
/// with `what` in the message.
pub async fn wait_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` until it holds, or panics after 30 s with `what` in the message.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut f: F) {
    wait_until(Duration::from_secs(30), what, || {
        std::future::ready(f().then_some(()))
    })
    .await
}

/// Polls the boolean query `sql` on `db` until it returns true, or panics
/// after 30 s with `what` in the message.
pub async fn eventually_sql(db: &Client, what: &str, sql: &str) {
    wait_until(Duration::from_secs(30), what, || async move {
        db.query_one(sql, &[])
            .await
            .ok()
            .and_then(|r| r.get::<_, bool>(0).then_some(()))
    })
    .await
}

/// Sends the log of code running in the test process (a worker through
/// `run()`, an API through `serve()`) to the test's output, filtered by
/// `POSTBOX_TEST_LOG` (default `warn`). Once per process; later calls do nothing.
pub fn init_log() {
    static LOG: std::sync::Once = std::sync::Once::new();
    LOG.call_once(|| {
        let filter = std::env::var("POSTBOX_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// A database error's message, SQLSTATE and detail, for test failures
/// (tokio-postgres's own text says only "db error").
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{} ({}){}",
            d.message(),
            d.code().code(),
            d.detail().map(|x| format!(": {x}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}
