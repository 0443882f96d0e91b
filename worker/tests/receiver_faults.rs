//! The receiver fault matrix: for each way a receiver can misbehave, what
//! the worker records in the attempt log, and that a healthy endpoint (its
//! own tenant, on common's `Receiver`) is delivered to meanwhile.
//!
//! Faults: connection refused; connection reset mid-request; slow-loris
//! headers; a 100 MB body; an endless chunked body; invalid HTTP; TLS
//! failures (untrusted CA, no TLS at all, an expired certificate);
//! redirects; Retry-After in both forms on 429, 503 and others.
//!
//! The faulty receivers are raw TCP servers on 127.0.0.1 ([`Raw`]), which can
//! misbehave as hyper would not; every loop they run is bounded in bytes and
//! in time. Outcomes are read from `postbox.attempts` and
//! `postbox.deliveries` and judged by order, never by a stopwatch: times
//! compared are the ones the worker recorded.

use bytes::Bytes;
use postbox_tests::fixtures::{cluster, endpoint, one};
use postbox_tests::receivers::{order, Behavior, Receiver};
use postbox_tests::resolver::TestResolver;
use postbox_tests::tls::{test_ca, test_ca_named, tls_acceptor, tls_receiver_config, trust};
use postbox_tests::worker::{test_config, Worker};
use postbox_tests::{eventually, eventually_sql, Cluster};
use postbox_worker::deliver::EXCERPT_BYTES;
use postbox_worker::retry::{JITTER, RETRY_AFTER_MAX};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::Client;

// ---------------------------------------------------------------------------
// Raw servers
// ---------------------------------------------------------------------------

/// No connection of a raw server is served for longer than this.
const HANDLER_CAP: Duration = Duration::from_secs(60);

/// A TCP server on 127.0.0.1 handing each connection to its `serve`.
struct Raw {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Raw {
    async fn start<F, Fut>(serve: F) -> Raw
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, SeqCst);
                let conn = serve(sock);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HANDLER_CAP, conn).await;
                });
            }
        });
        Raw { addr, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    fn connections(&self) -> usize {
        self.connections.load(SeqCst)
    }
}

/// Reads one request, head and body (by Content-Length); returns its path,
/// or None if the peer went away first.
async fn read_request(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < length {
        have += sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
    }
    head.split_whitespace().nth(1).map(str::to_string)
}

/// Reads the request, writes what `respond` makes of its path, byte for
/// byte, and closes.
async fn answer<R: AsRef<[u8]>>(mut sock: TcpStream, respond: impl FnOnce(&str) -> R) {
    if let Some(path) = read_request(&mut sock).await {
        let _ = sock.write_all(respond(&path).as_ref()).await;
        let _ = sock.shutdown().await;
    }
}

/// A status line and headers, no body, connection closed after.
fn head(status: &str, headers: &[(&str, &str)]) -> String {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out + "\r\n"
}

// ---------------------------------------------------------------------------
// The healthy endpoint, faulty endpoints, the attempt log
// ---------------------------------------------------------------------------

/// Deliveries the healthy endpoint gets in each test.
const HEALTHY: usize = 20;

/// Faulty endpoints get one attempt: the log's outcome is then final.
const ONE_ATTEMPT: &str = r#"{"retry_schedule": []}"#;

/// A receiver answering 200 and its endpoint: tenant "healthy", order.paid.
struct Healthy {
    rx: Receiver,
    id: String,
}

impl Healthy {
    async fn start(db: &Client) -> Healthy {
        let rx = Receiver::start(Behavior::Statuses(vec![200]), order()).await;
        let (id, _) = endpoint(db, "healthy", &rx.url(), ", '{order.paid}'").await;
        Healthy { rx, id }
    }

    async fn emit(&self, db: &Client) {
        db.batch_execute(&format!(
            "SELECT postbox.emit('healthy', 'order.paid', jsonb_build_object('n', i)) FROM generate_series(1, {HEALTHY}) i"
        ))
        .await
        .unwrap();
    }

    /// Every healthy delivery arrived, once, and is logged as succeeded.
    async fn all_delivered(&self, db: &Client) {
        eventually("every healthy delivery", || self.rx.count() >= HEALTHY).await;
        eventually_sql(
            db,
            "every healthy delivery logged as succeeded",
            &format!(
                "SELECT count(*) = {HEALTHY} FROM postbox.deliveries WHERE endpoint_id = '{}' AND status = 'succeeded'",
                self.id
            ),
        )
        .await;
        let ids: std::collections::HashSet<String> = self
            .rx
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect();
        assert_eq!(
            (self.rx.count(), ids.len()),
            (HEALTHY, HEALTHY),
            "each once"
        );
    }
}

/// A faulty endpoint: tenant "t", single.item, with `options`.
async fn faulty(db: &Client, url: &str, options: &str) -> String {
    endpoint(
        db,
        "t",
        url,
        &format!(", '{{single.item}}', options => '{options}'"),
    )
    .await
    .0
}

/// One event for every faulty endpoint.
async fn emit_faulty(db: &Client) {
    db.batch_execute("SELECT postbox.emit('t', 'single.item', '{}')")
        .await
        .unwrap();
}

/// An endpoint's one logged attempt, with its delivery's status.
#[derive(Debug)]
struct Logged {
    outcome: String,
    status_code: Option<i32>,
    error: Option<String>,
    excerpt: Option<String>,
    delivery: String,
}

impl Logged {
    fn error(&self) -> &str {
        self.error.as_deref().unwrap_or("")
    }
}

/// Waits for `ep`'s attempt in the log; returns it.
async fn logged(db: &Client, ep: &str) -> Logged {
    eventually_sql(
        db,
        &format!("the attempt to {ep} logged"),
        &format!("SELECT count(*) > 0 FROM postbox.attempts WHERE endpoint_id = '{ep}'"),
    )
    .await;
    let rows = db
        .query(
            "SELECT a.outcome, a.status_code, a.error, a.response_excerpt, d.status
               FROM postbox.attempts a JOIN postbox.deliveries d ON d.id = a.delivery_id
              WHERE a.endpoint_id = $1::text::uuid",
            &[&ep],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one attempt to {ep}");
    let r = &rows[0];
    Logged {
        outcome: r.get(0),
        status_code: r.get(1),
        error: r.get(2),
        excerpt: r.get(3),
        delivery: r.get(4),
    }
}

/// A failed attempt without a response: no status, an error saying why.
fn assert_no_response(a: &Logged) {
    assert_eq!(
        (a.outcome.as_str(), a.status_code, a.delivery.as_str()),
        ("failed", None, "failed"),
        "{a:?}"
    );
    assert!(!a.error().is_empty(), "{a:?}");
}

/// The test's config with a resolver answering 127.0.0.1 for `names`.
fn config_resolving(pg: &Cluster, names: &[&str]) -> postbox_worker::Config {
    let resolver = Arc::new(TestResolver::default());
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    for name in names {
        resolver.set(name, vec![vec![lo]]);
    }
    let mut cfg = test_config(pg);
    cfg.resolver = resolver;
    cfg
}

// ---------------------------------------------------------------------------
// Resource use of this process (the worker runs in it)
// ---------------------------------------------------------------------------

/// A /proc/self/status field in bytes: VmRSS (resident now), VmHWM (peak).
fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    kb * 1024
}

/// Sets the peak (VmHWM) back to what is resident now (Linux 4.0+), so a
/// peak read later is one reached since: freed memory would not show in
/// VmRSS afterwards.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

const MB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// The faults
// ---------------------------------------------------------------------------

#[tokio::test]
async fn connection_refused() {
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    // Handed to nobody else, and nobody listens there.
    let port = postbox_tests::free_port();
    let ep = faulty(&db, &format!("http://127.0.0.1:{port}/hook"), ONE_ATTEMPT).await;
    let worker = Worker::start(test_config(&pg));
    emit_faulty(&db).await;
    healthy.emit(&db).await;

    let a = logged(&db, &ep).await;
    assert_no_response(&a);
    assert!(a.error().contains("Connection refused"), "{a:?}");
    healthy.all_delivered(&db).await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn connection_reset_mid_request() {
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    // Reads the first bytes of the request line, then resets (SO_LINGER 0:
    // an RST, not a FIN).
    let raw = Raw::start(|mut sock| async move {
        let mut part = [0u8; 16];
        if sock.read_exact(&mut part).await.is_ok() {
            sock.set_zero_linger().unwrap();
        }
    })
    .await;
    let ep = faulty(&db, &raw.url("/hook"), ONE_ATTEMPT).await;
    let worker = Worker::start(test_config(&pg));
    emit_faulty(&db).await;
    healthy.emit(&db).await;

    let a = logged(&db, &ep).await;
    assert_no_response(&a);
    let error = a.error().to_lowercase();
    assert!(
        error.contains("connection reset") || error.contains("broken pipe"),
        "{a:?}"
    );
    assert_eq!(raw.connections(), 1, "the request was not sent again");
    healthy.all_delivered(&db).await;
    worker.stop().await.unwrap();
}

/// A server that reads the request, writes `head` at once, then `body` in
/// pieces of `piece` bytes, `gap` apart, `times` times over, until it is
/// done or the peer hangs up.
struct Streamer {
    raw: Raw,
    /// Pieces written.
    pieces: Arc<AtomicUsize>,
    /// The peer hung up before the end.
    hung_up: Arc<AtomicBool>,
}

impl Streamer {
    async fn start(
        head: Bytes,
        body: Bytes,
        piece: usize,
        times: usize,
        gap: Duration,
    ) -> Streamer {
        let pieces = Arc::new(AtomicUsize::new(0));
        let hung_up = Arc::new(AtomicBool::new(false));
        let (p, h) = (pieces.clone(), hung_up.clone());
        let raw = Raw::start(move |mut sock| {
            let (pieces, hung_up) = (p.clone(), h.clone());
            let (head, body) = (head.clone(), body.clone());
            async move {
                if read_request(&mut sock).await.is_none() || sock.write_all(&head).await.is_err() {
                    return;
                }
                for _ in 0..times {
                    for chunk in body.chunks(piece) {
                        if sock.write_all(chunk).await.is_err() {
                            hung_up.store(true, SeqCst);
                            return;
                        }
                        pieces.fetch_add(1, SeqCst);
                        if !gap.is_zero() {
                            tokio::time::sleep(gap).await;
                        }
                    }
                }
            }
        })
        .await;
        Streamer {
            raw,
            pieces,
            hung_up,
        }
    }

    /// `at_once`, then `trickled` a byte a second.
    async fn trickler(at_once: &'static [u8], trickled: &'static [u8]) -> Streamer {
        Self::start(
            Bytes::from_static(at_once),
            Bytes::from_static(trickled),
            1,
            1,
            Duration::from_secs(1),
        )
        .await
    }
}

#[tokio::test]
async fn slow_loris_responses_end_at_the_request_timeout() {
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    // 38 s of head, past test_config's 2 s request timeout.
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let slow_head = Streamer::trickler(b"", HEAD).await;
    let head_sent = &slow_head.pieces;
    // The head at once, then 40 s of body.
    const BODY: &[u8] = b"0123456789012345678901234567890123456789";
    let slow_body =
        Streamer::trickler(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", BODY).await;
    let body_sent = &slow_body.pieces;
    let head_ep = faulty(&db, &slow_head.raw.url("/hook"), ONE_ATTEMPT).await;
    let body_ep = faulty(&db, &slow_body.raw.url("/hook"), ONE_ATTEMPT).await;
    let worker = Worker::start(test_config(&pg));
    emit_faulty(&db).await;
    eventually("the slow head under way", || head_sent.load(SeqCst) > 0).await;
    healthy.emit(&db).await;

    // No status line in time: a timeout, not a success.
    let a = logged(&db, &head_ep).await;
    assert_no_response(&a);
    assert_eq!(a.error(), "timed out after 2s");
    assert!(
        head_sent.load(SeqCst) < HEAD.len(),
        "given up before the head was whole"
    );
    // The status came at once and decides; the body is only an excerpt, cut
    // where the timeout found it.
    let a = logged(&db, &body_ep).await;
    assert_eq!(
        (a.outcome.as_str(), a.status_code, a.error.as_deref()),
        ("succeeded", Some(200), None)
    );
    let excerpt = a.excerpt.clone().unwrap_or_default();
    assert!(
        !excerpt.is_empty() && BODY.starts_with(excerpt.as_bytes()),
        "{a:?}"
    );
    assert!(
        body_sent.load(SeqCst) < BODY.len(),
        "given up before the body was whole"
    );

    healthy.all_delivered(&db).await;
    // Meanwhile: every healthy delivery, emitted after the slow head began,
    // finished before its attempt gave up.
    let before: i64 = one(
        &db,
        &format!(
            "SELECT count(*) FROM postbox.attempts h, postbox.attempts s
              WHERE h.endpoint_id = '{}' AND h.outcome = 'succeeded' AND s.endpoint_id = '{head_ep}'
                AND h.started_at + h.duration_ms * interval '1 ms' <= s.started_at + s.duration_ms * interval '1 ms'",
            healthy.id
        ),
    )
    .await;
    assert_eq!(before as usize, HEALTHY);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_100_mb_body_is_read_only_as_far_as_the_excerpt() {
    const BODY: u64 = 100 * MB;
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    assert_eq!(EXCERPT_BYTES, 4096, "docs/design.md: the first 4 KiB");
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    // 100 MB announced and written lazily from one 64 KiB chunk, until the
    // worker hangs up: never held in memory on either side.
    let big = Streamer::start(
        format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into(),
        Bytes::from_static(&CHUNK),
        CHUNK.len(),
        (BODY / CHUNK.len() as u64) as usize,
        Duration::ZERO,
    )
    .await;
    let written = || big.pieces.load(SeqCst) as u64 * CHUNK.len() as u64;
    let ep = faulty(&db, &big.raw.url("/hook"), ONE_ATTEMPT).await;
    let worker = Worker::start(test_config(&pg));
    // The peak from here on is this delivery's (and the healthy ones', and
    // whatever a test running alongside adds: a few MiB).
    reset_peak_rss();
    let rss_before = proc_status("VmRSS");
    emit_faulty(&db).await;
    healthy.emit(&db).await;

    let a = logged(&db, &ep).await;
    assert_eq!(
        (a.outcome.as_str(), a.status_code, a.error.as_deref()),
        ("succeeded", Some(200), None)
    );
    assert_eq!(
        a.excerpt.as_deref(),
        Some("x".repeat(EXCERPT_BYTES).as_str())
    );
    let (peak, rss_after) = (proc_status("VmHWM"), proc_status("VmRSS"));
    println!(
        "100 MB body: RSS {} MiB before, {} MiB after, peak {} MiB; {} KiB sent",
        rss_before / MB,
        rss_after / MB,
        peak / MB,
        written() / 1024
    );
    assert!(
        peak.saturating_sub(rss_before) < 32 * MB,
        "resident memory peaked {} MiB above where it was",
        (peak - rss_before) / MB
    );
    eventually("the worker hangs up on the body", || {
        big.hung_up.load(SeqCst)
    })
    .await;
    let sent = written();
    assert!(sent < BODY, "{sent} bytes sent: the rest was never read");
    healthy.all_delivered(&db).await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_at_the_excerpt() {
    // At most this many 1 KiB chunks, 10 ms apart (a minute).
    const CHUNKS: usize = 6000;
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    let endless = Streamer::start(
        Bytes::from_static(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        format!("400\r\n{}\r\n", "y".repeat(1024)).into(),
        usize::MAX, // each chunk in one write
        CHUNKS,
        Duration::from_millis(10),
    )
    .await;
    // A request timeout (60 s) past the server's minute and the wait for
    // the log (30 s): the attempt is logged only if the worker itself stops
    // reading at the excerpt.
    let ep = faulty(
        &db,
        &endless.raw.url("/hook"),
        r#"{"retry_schedule": [], "timeout_ms": 60000}"#,
    )
    .await;
    let mut cfg = test_config(&pg);
    cfg.lease = Duration::from_secs(90);
    let worker = Worker::start(cfg);
    emit_faulty(&db).await;
    healthy.emit(&db).await;

    let a = logged(&db, &ep).await;
    assert_eq!(
        (a.outcome.as_str(), a.status_code, a.error.as_deref()),
        ("succeeded", Some(200), None),
        "the receiver said 200; its body does not matter"
    );
    assert_eq!(
        a.excerpt.as_deref(),
        Some("y".repeat(EXCERPT_BYTES).as_str())
    );
    eventually("the worker hangs up on the body", || {
        endless.hung_up.load(SeqCst)
    })
    .await;
    assert!(
        endless.pieces.load(SeqCst) < CHUNKS,
        "hung up before the server's cap"
    );
    healthy.all_delivered(&db).await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_http_is_an_error_not_a_status() {
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    let raw = Raw::start(|sock| {
        answer(sock, |path| -> &[u8] {
            match path {
                "/garbage" => b"HELLO\r\n\r\n",
                "/bad-status" => b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
                "/bad-length" => b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\nok",
                // The head cut off by the close.
                _ => b"HTTP/1.1 200 OK\r\nContent-Le",
            }
        })
    })
    .await;
    let mut eps = Vec::new();
    for (path, says) in [
        ("/garbage", "invalid HTTP version"),
        ("/bad-status", "invalid HTTP status-code"),
        ("/bad-length", "invalid content-length"),
        ("/truncated", "connection closed before message completed"),
    ] {
        eps.push((path, says, faulty(&db, &raw.url(path), ONE_ATTEMPT).await));
    }
    let worker = Worker::start(test_config(&pg));
    emit_faulty(&db).await;
    healthy.emit(&db).await;

    for (path, says, ep) in &eps {
        let a = logged(&db, ep).await;
        assert_no_response(&a);
        assert!(a.error().contains(says), "{path}: {a:?}");
    }
    healthy.all_delivered(&db).await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn tls_failures_untrusted_ca_no_tls_and_an_expired_certificate() {
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    let ca = test_ca();
    let stranger = test_ca_named("a stranger's CA"); // not told to the worker
    let o = order();
    let valid = Receiver::start_tls(
        Behavior::Statuses(vec![200]),
        o.clone(),
        Some(tls_receiver_config(&["valid.example.test"], &ca)),
    )
    .await;
    let untrusted = Receiver::start_tls(
        Behavior::Statuses(vec![200]),
        o.clone(),
        Some(tls_receiver_config(&["untrusted.example.test"], &stranger)),
    )
    .await;
    let mut params = rcgen::CertificateParams::new(vec!["expired.example.test".into()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = Receiver::start_tls(
        Behavior::Statuses(vec![200]),
        o,
        Some(tls_acceptor(params, &ca)),
    )
    .await;
    // Plain TCP answering the ClientHello with text.
    let plain = Raw::start(|mut sock| async move {
        let mut hello = [0u8; 64];
        if sock.read(&mut hello).await.is_ok() {
            let _ = sock.write_all(b"HELLO\r\n\r\n").await;
            let _ = sock.shutdown().await;
        }
    })
    .await;

    let https = |name: &str, port: u16| format!("https://{name}.example.test:{port}/hook");
    let valid_id = faulty(&db, &https("valid", valid.addr.port()), ONE_ATTEMPT).await;
    let untrusted_id = faulty(&db, &https("untrusted", untrusted.addr.port()), ONE_ATTEMPT).await;
    let expired_id = faulty(&db, &https("expired", expired.addr.port()), ONE_ATTEMPT).await;
    let plain_id = faulty(&db, &https("plain", plain.addr.port()), ONE_ATTEMPT).await;
    let mut cfg = config_resolving(
        &pg,
        &[
            "valid.example.test",
            "untrusted.example.test",
            "expired.example.test",
            "plain.example.test",
        ],
    );
    cfg.root_certificates = vec![trust(&ca)];
    let worker = Worker::start(cfg);
    emit_faulty(&db).await;
    healthy.emit(&db).await;

    // The control: the same CA and resolver work for a valid certificate.
    let a = logged(&db, &valid_id).await;
    assert_eq!(
        (a.outcome.as_str(), a.status_code),
        ("succeeded", Some(200))
    );
    for (ep, says) in [
        (&untrusted_id, "UnknownIssuer"),
        (&expired_id, "certificate expired"),
        (&plain_id, "InvalidContentType"),
    ] {
        let a = logged(&db, ep).await;
        assert_no_response(&a);
        assert!(a.error().contains(says), "{says}: {a:?}");
    }
    assert_eq!(
        (untrusted.count(), expired.count()),
        (0, 0),
        "no request past a failed handshake"
    );
    assert_eq!(valid.count(), 1);
    healthy.all_delivered(&db).await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    // Each redirect points at the healthy receiver, under a path of its own.
    let target = healthy.rx.addr;
    let raw = Raw::start(move |sock| {
        answer(sock, move |path| {
            let status = match path {
                "/301" => "301 Moved Permanently",
                "/302" => "302 Found",
                "/307" => "307 Temporary Redirect",
                _ => "308 Permanent Redirect",
            };
            let location = format!("http://{target}/redirected{path}");
            head(status, &[("Location", location.as_str())])
        })
    })
    .await;
    let mut eps = Vec::new();
    for code in [301, 302, 307, 308] {
        eps.push((
            code,
            faulty(&db, &raw.url(&format!("/{code}")), ONE_ATTEMPT).await,
        ));
    }
    let worker = Worker::start(test_config(&pg));
    emit_faulty(&db).await;
    healthy.emit(&db).await;

    for (code, ep) in &eps {
        let a = logged(&db, ep).await;
        assert_eq!(
            (
                a.outcome.as_str(),
                a.status_code,
                a.error(),
                a.delivery.as_str()
            ),
            (
                "failed",
                Some(*code),
                format!("HTTP {code}").as_str(),
                "failed"
            )
        );
    }
    healthy.all_delivered(&db).await;
    // A followed redirect would have arrived before its attempt was logged.
    let redirected: Vec<String> = healthy
        .rx
        .received()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p != "/hook")
        .collect();
    assert_eq!(
        redirected,
        Vec::<String>::new(),
        "the Location targets got nothing"
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn retry_after_is_honoured_on_429_and_503_only() {
    let (pg, db) = cluster().await;
    let healthy = Healthy::start(&db).await;
    /// The endpoints' schedule: one retry, 60 s ±JITTER later.
    const GAP: f64 = 60.0;
    // Path: /<status>/<Retry-After>: seconds, or "+N" for an HTTP date N s
    // from when the response is written.
    let raw = Raw::start(|sock| {
        answer(sock, |path| {
            let (status, value) = path[1..].split_once('/').unwrap();
            let retry_after = match value.strip_prefix('+') {
                Some(secs) => httpdate::fmt_http_date(
                    SystemTime::now() + Duration::from_secs(secs.parse().unwrap()),
                ),
                None => value.to_string(),
            };
            head(
                &format!("{status} Nope"),
                &[("Retry-After", retry_after.as_str())],
            )
        })
    })
    .await;
    let max = RETRY_AFTER_MAX.as_secs_f64();
    let (least, most) = (GAP * (1.0 - JITTER), GAP * (1.0 + JITTER));
    // Path, and the least and most the next attempt may be after the
    // attempt started. An HTTP date has whole seconds: up to 1 s early.
    let cases = [
        ("/429/120", 120.0, 120.0),
        ("/429/+300", 299.0, 300.0),
        ("/503/600", 600.0, 600.0),
        ("/503/+900", 899.0, 900.0),
        ("/503/86400", max, max),  // clamped to 6 h
        ("/500/120", least, most), // not honoured: the schedule
        ("/500/+300", least, most),
        ("/404/120", least, most),
    ];
    let mut eps = Vec::new();
    for (path, least, most) in cases {
        let ep = faulty(&db, &raw.url(path), r#"{"retry_schedule": ["60s"]}"#).await;
        eps.push((path, least, most, ep));
    }
    let worker = Worker::start(test_config(&pg));
    emit_faulty(&db).await;
    healthy.emit(&db).await;

    for (path, least, most, ep) in &eps {
        let a = logged(&db, ep).await;
        assert_eq!(
            (a.outcome.as_str(), a.delivery.as_str()),
            ("retrying", "pending"),
            "{path}"
        );
        // The wait as the worker recorded it: from the attempt's start to the
        // next attempt. Above `most` by at most the attempt's own length
        // (the decision is made when it ends), a few seconds at most.
        let wait: f64 = one(
            &db,
            &format!(
                "SELECT extract(epoch FROM d.next_attempt_at - a.started_at)::float8
                   FROM postbox.deliveries d JOIN postbox.attempts a ON a.delivery_id = d.id
                  WHERE d.endpoint_id = '{ep}'"
            ),
        )
        .await;
        assert!(
            (*least..=most + 5.0).contains(&wait),
            "{path}: the next attempt is {wait} s after the first, want {least}..{most} s"
        );
    }
    healthy.all_delivered(&db).await;
    worker.stop().await.unwrap();
}
