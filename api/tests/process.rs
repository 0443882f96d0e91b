//! The binary: SIGTERM lets a request in flight finish, then exits 0.

use postbox_tests::Cluster;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn sigterm_drains_requests_in_flight_and_exits_0() {
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    db.batch_execute("CREATE ROLE postbox_api LOGIN IN ROLE postbox_admin; ALTER ROLE postbox_api SET log_parameter_max_length = 0")
        .await
        .unwrap();
    let key: String = db
        .query_one(
            "SELECT key FROM postbox.create_api_key('acme', 'admin', 'ci')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let id: uuid::Uuid = db
        .query_one(
            "SELECT id FROM postbox.create_endpoint('acme', 'https://hooks.example.com/')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let port = postbox_tests::free_port();
    let mut api = Command::new(env!("CARGO_BIN_EXE_postbox-api"))
        .env("POSTBOX_API_DATABASE_URL", pg.url("postbox_api"))
        .env("POSTBOX_API_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    postbox_tests::wait_until(Duration::from_secs(30), "the API to answer", || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;

    // Hold the endpoint's row, so the PATCH waits inside the API.
    let holder = pg.connect("postgres").await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT FROM postbox.endpoints WHERE id = '{id}' FOR UPDATE"
        ))
        .await
        .unwrap();
    let patch = tokio::spawn({
        let (http, url, key) = (
            http.clone(),
            format!("{base}/v1/endpoints/{id}"),
            key.clone(),
        );
        async move {
            http.patch(url)
                .bearer_auth(key)
                .json(&serde_json::json!({"description": "drained"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    postbox_tests::wait_until(Duration::from_secs(30), "the PATCH to wait for the lock", || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'postbox-api' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    })
    .await;
    let term = Command::new("kill")
        .args(["-TERM", &api.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // The signal is taken once the API stops listening: a new connection is
    // refused. It is still running then, the request in flight unanswered.
    postbox_tests::wait_until(
        Duration::from_secs(30),
        "the API to stop listening",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        api.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    assert!(
        !patch.is_finished(),
        "the PATCH was answered before the lock was released"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        patch.await.unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    let status = postbox_tests::wait_until(Duration::from_secs(30), "the API to exit", || {
        std::future::ready(api.try_wait().unwrap())
    })
    .await;
    assert_eq!(status.code(), Some(0));
    let description: String = db
        .query_one("SELECT description FROM postbox.endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(description, "drained");
}
