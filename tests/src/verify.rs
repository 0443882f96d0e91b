//! Deliveries verified by other code than postbox's: the official
//! `standardwebhooks` Python package, Python's hmac, or a receiver's own
//! verification code as a product documents it.

use crate::receivers::Received;

/// Verifies a delivery with the official `standardwebhooks` Python package
/// (standard style) or Python's own hmac (sha256-hex). Returns its verdict.
pub fn python_verify(
    style: &str,
    secret: &str,
    r: &Received,
    signature_header: &str,
) -> Result<(), String> {
    let script = r#"
import hashlib, hmac, json, sys
case = json.load(sys.stdin)
if case["style"] == "standard":
    from standardwebhooks import Webhook
    Webhook(case["secret"]).verify(case["body"], case["headers"])
else:
    want = "sha256=" + hmac.new(case["secret"].encode(), case["body"].encode(), hashlib.sha256).hexdigest()
    got = case["headers"][case["signature_header"].lower()]
    if not hmac.compare_digest(want, got):
        sys.exit("sha256-hex mismatch: " + got)
print("verified")
"#;
    let case = serde_json::json!({
        "style": style, "secret": secret, "body": r.body, "headers": r.headers, "signature_header": signature_header,
    });
    run_verifier(&python(), &["-c", script], case)
}

/// Runs a receiver's verification code, written as the product that
/// documents it shows it, over a real delivery: `program` and its
/// arguments, with `{"secret", "body", "headers"}` on stdin. Ok if it
/// printed "verified".
pub fn receiver_verify(
    program: &str,
    args: &[&str],
    secret: &str,
    r: &Received,
) -> Result<(), String> {
    let case = serde_json::json!({"secret": secret, "body": r.body, "headers": r.headers});
    run_verifier(program, args, case)
}

/// Runs `program` with `case` as JSON on stdin; Ok if it printed "verified".
fn run_verifier(program: &str, args: &[&str], case: serde_json::Value) -> Result<(), String> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (run scripts/setup.sh)"));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The venv's Python (scripts/setup.sh makes it, with standardwebhooks).
pub fn python() -> String {
    std::env::var("POSTBOX_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pyvenv/bin/python").to_string()
    })
}
