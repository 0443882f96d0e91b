//! api/openapi.json is the document the code generates. Regenerate it with
//! `POSTBOX_BLESS=1 cargo test -p postbox-api --test openapi`.

#[test]
fn the_committed_openapi_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let now = postbox_api::openapi_json();
    if std::env::var_os("POSTBOX_BLESS").is_some() {
        std::fs::write(path, &now).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == now,
        "api/openapi.json is stale: run POSTBOX_BLESS=1 cargo test -p postbox-api --test openapi, and commit it"
    );
}

/// What schemathesis and clients rely on: OpenAPI 3.1, unique operation
/// ids, every path parameter declared, every operation with the common
/// error answers and the bearer key.
#[test]
fn the_document_is_complete() {
    let doc: serde_json::Value = serde_json::from_str(&postbox_api::openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut ids = std::collections::BTreeSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_string()),
                "duplicate id at {method} {path}"
            );
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    declared.contains(&name),
                    "{method} {path}: {name} not declared"
                );
            }
            for status in ["400", "401", "403", "404", "422", "429", "500"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path}: no {status}"
                );
            }
        }
    }
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    // 19 tenant operations twice (tenant and operator keys), the catalog,
    // the choices, emitting, portal links and revoking portal sessions.
    assert_eq!(operations, 2 * 19 + 5, "{ids:#?}");
}
