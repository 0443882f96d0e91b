//! schemathesis (from PyPI, not written here) fuzzes the running API from
//! its OpenAPI document, once with each kind of key: no 5xx, no answer that
//! contradicts the document, bad input refused, no route the key's kind
//! should not reach (schemathesis_hooks.py), missing and bad keys refused.

mod support;

use postbox_tests::Cluster;
use std::process::Command;

/// Test cases per operation and phase: enough to cover each parameter's
/// shapes; the three runs, at once, take about two minutes on two cores.
const MAX_EXAMPLES: &str = "50";

fn schemathesis() -> String {
    std::env::var("POSTBOX_PYTHON")
        .map(|p| p.replace("/python", "/schemathesis"))
        .unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/pyvenv/bin/schemathesis"
            )
            .to_string()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_any_kind_of_key() {
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    db.batch_execute(
        "SELECT postbox.create_event_type(n) FROM unnest(ARRAY['order.paid', 'order.refunded']) n;
         CREATE ROLE postbox_api LOGIN IN ROLE postbox_admin, postbox_emitter;
         ALTER ROLE postbox_api SET log_parameter_max_length = 0;
         SELECT postbox.create_endpoint('acme', 'https://hooks.example.com/' || i) FROM generate_series(1, 3) i;",
    )
    .await
    .unwrap();
    let mut keys = Vec::new();
    for (tenant, role) in [
        (Some("acme"), "admin"),
        (Some("acme"), "member"),
        (None, "operator"),
    ] {
        let key: String = db
            .query_one(
                "SELECT key FROM postbox.create_api_key($1, $2, 'schemathesis')",
                &[&tenant, &role],
            )
            .await
            .unwrap()
            .get(0);
        keys.push((role, key));
    }
    let url = pg.url("postbox_api");
    let served = support::Served::start(|_| {
        let mut config = postbox_api::Config::new(url);
        // 429s would hide what the fuzzer finds: its made-up keys would
        // spend the address's failed authentications.
        config.rate_limit = 0;
        config.auth_failure_rate = 0;
        config
    })
    .await;
    let base = served.base.clone();

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/schemathesis");
    std::fs::create_dir_all(dir).unwrap();
    // The three runs at once: each is one Python process (--workers 1),
    // mostly waiting on the API and each other's CPU, so together they take
    // about half the time of one after another on two cores.
    let runs: Vec<_> = keys
        .into_iter()
        .map(|(role, key)| {
            let base = base.clone();
            let run = tokio::task::spawn_blocking(move || {
                Command::new(schemathesis())
                    .env(
                        "SCHEMATHESIS_HOOKS",
                        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis_hooks.py"),
                    )
                    .env("POSTBOX_ST_ROLE", role)
                    .env("NO_COLOR", "1")
                    .args([
                        "run",
                        concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"),
                        "--url",
                        &base,
                    ])
                    .args(["--header", &format!("Authorization: Bearer {key}")])
                    // Every check but positive_data_acceptance: input the
                    // document allows can still break one of postbox's rules
                    // (https only, a public host, a known event type): 422.
                    // The stateful checks need links the document does not have.
                    .args([
                        "--checks",
                        "all",
                        "--exclude-checks",
                        "positive_data_acceptance,use_after_free,ensure_resource_availability",
                    ])
                    .args([
                        "--phases",
                        "examples,coverage,fuzzing",
                        "--max-examples",
                        MAX_EXAMPLES,
                        "--seed",
                        "16",
                    ])
                    .args([
                        "--workers",
                        "1",
                        "--request-timeout",
                        "10",
                        "--generation-database",
                        "none",
                    ])
                    .output()
                    .expect("schemathesis: run scripts/setup.sh")
            });
            (role, run)
        })
        .collect();
    for (role, run) in runs {
        let out = run.await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        std::fs::write(format!("{dir}/{role}.log"), &text).unwrap();
        let tail: String = text
            .lines()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            out.status.success(),
            "schemathesis with the {role} key: {}\n{tail}",
            out.status
        );
        eprintln!(
            "schemathesis with the {role} key: {}",
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        );
    }
    served.stop().await;
}
