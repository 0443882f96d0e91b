//! Rules that have one home, checked across SQL, Rust and the page: a test
//! here fails when a copy of one appears elsewhere. They read the sources as
//! text (comments left out); no database is needed.

use regex::Regex;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The current sources: sql/*.sql (not the frozen install scripts or the
/// upgrade scripts, which keep what older versions said), every .rs under
/// the worker's, the API's and the runtime's src/. (The page shows the
/// API's `status` and flips the `enabled` switch; it decides nothing.)
fn sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let root = root();
    for entry in std::fs::read_dir(root.join("sql")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".sql") && !name.starts_with("postbox--") {
            out.push(p);
        }
    }
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    for dir in ["worker/src", "api/src", "runtime/src"] {
        walk(&root.join(dir), &mut out);
    }
    out.into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, without_comments(&text))
        })
        .collect()
}

/// Each line without its `--` (SQL) or `//` (Rust, JS) comment, so that
/// prose may name the rule.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("--") || t.starts_with("//") || t.starts_with("* ") {
                ""
            } else {
                l.split(" -- ").next().unwrap()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether an endpoint sends, is held (paused, suspended) or is disabled is
/// decided by `postbox._endpoint_state` (sql/endpoints.sql) alone. Any other
/// place that tests `enabled` or `suspended` as a condition (with NOT, AND,
/// OR, WHEN, IF, or Rust's !, &&, ||) is a second copy of the rule.
#[test]
fn endpoint_state_is_decided_once() {
    let home = Regex::new(r"(?s)CREATE FUNCTION postbox\._endpoint_state\(.*?\nEND;").unwrap();
    // A table's column (aliases are a letter or two), or a piece of SQL in
    // a Rust literal that starts with one (`".enabled AND NOT "`). A
    // function's parameter (`update_endpoint.enabled`) is the admin's
    // switch, not the state.
    let col = r#"(?:\b[a-z]{1,2}|")\.(?:enabled|suspended)\b"#;
    let condition = Regex::new(&format!(
        r"(?i)(?:\b(?:NOT|AND|OR|WHEN|IF)\s+(?:NOT\s+)?{col}(?:\s*[^\s<>=!]|\s*$)|{col}\s+(?:AND|OR|THEN)\b|[!]\s*{col}|{col}\s*(?:&&|\|\||\?)|(?:&&|\|\|)\s*{col})"
    ))
    .unwrap();
    let mut copies = Vec::new();
    let mut homes = 0;
    for (path, text) in sources() {
        homes += home.find_iter(&text).count();
        let text = home.replace_all(&text, "");
        for (n, line) in text.lines().enumerate() {
            // Rust builds SQL from literal pieces: join a line's pieces.
            let line = line.replace("\", \"", "");
            if let Some(m) = condition.find(&line) {
                // A comparison of the column (set_tenant_limit's update) is
                // not a condition on the state.
                if !m.as_str().trim_end().ends_with(['<', '>', '=']) {
                    copies.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert_eq!(homes, 1, "postbox._endpoint_state is defined once");
    assert!(
        copies.is_empty(),
        "the endpoint's state is decided outside postbox._endpoint_state:\n{}",
        copies.join("\n")
    );
}
