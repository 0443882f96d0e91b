//! Custom header policy, and the signature header an endpoint may choose.
//!
//! Values are limited to what the worker's HTTP stack sends unchanged:
//! visible ASCII, space and tab. Errors name the header and the rule, never
//! the value: values are often credentials (`Authorization`), and errors
//! reach clients, the server log and the worker's log.

use crate::codes::Code;
use crate::error::RuleError;
use serde_json::{Map, Value};

pub const MAX_HEADERS: usize = 20;
pub const MAX_NAME_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 4096;
/// The header `sha256-hex` and `hex` endpoints get their signature in, unless they pick one.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Webhook-Signature";

/// What a custom header's value reads as wherever it is not needed to send:
/// the attempt log, and every answer to a member. The same for every value,
/// so not even a value's length is told.
pub const MASKED_VALUE: &str = "********";

/// `headers` with every value replaced by [`MASKED_VALUE`]: the names stay,
/// so a reader can still see which headers an endpoint sends.
pub fn masked(headers: &Map<String, Value>) -> Map<String, Value> {
    headers
        .keys()
        .map(|k| (k.clone(), Value::String(MASKED_VALUE.into())))
        .collect()
}

/// Names postbox or the HTTP stack sets itself, compared ignoring case.
pub const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "user-agent",
];

/// How a delivery is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStyle {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// `sha256=<hex HMAC of the body>` in one header of the endpoint's choice.
    Sha256Hex,
    /// The bare lowercase hex HMAC of the body in one header of the endpoint's choice.
    Hex,
}

impl SignatureStyle {
    /// Every style, the API's list of choices (`GET /v1/choices`).
    pub const ALL: [SignatureStyle; 3] = [Self::Standard, Self::Sha256Hex, Self::Hex];

    pub fn parse(s: &str) -> Result<Self, RuleError> {
        match s {
            "standard" => Ok(Self::Standard),
            "sha256-hex" => Ok(Self::Sha256Hex),
            "hex" => Ok(Self::Hex),
            _ => Err(RuleError::new(
                Code::SignatureStyleUnknown,
                "signature_style must be 'standard', 'sha256-hex' or 'hex'",
                s,
            )
            .in_field("signature_style")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Sha256Hex => "sha256-hex",
            Self::Hex => "hex",
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_name(name: &str, what: &str) -> Result<(), RuleError> {
    if name.is_empty() {
        return Err(RuleError::new(
            Code::HeaderNameEmpty,
            format!("{what} name must not be empty"),
            "\"\"",
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(RuleError::new(
            Code::HeaderNameTooLong,
            format!("{what} name must be at most {MAX_NAME_BYTES} bytes"),
            name,
        ));
    }
    if !name.bytes().all(is_tchar) {
        return Err(RuleError::new(
            Code::HeaderNameInvalid,
            format!("{what} name must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)"),
            name,
        ));
    }
    Ok(())
}

fn reserved_reason(lower: &str) -> Option<&'static str> {
    if RESERVED.contains(&lower) {
        Some("is set by postbox")
    } else if lower.starts_with("proxy-") {
        Some("Proxy-* headers are reserved")
    } else if lower.starts_with("webhook-") {
        Some("webhook-* headers are reserved for the signature")
    } else {
        None
    }
}

/// Validates the signature settings of an endpoint and returns the header the
/// signature goes in: `None` for `standard`, whose headers are fixed.
pub fn validate_signature(
    style: SignatureStyle,
    header: Option<&str>,
) -> Result<Option<String>, RuleError> {
    check_signature(style, header).map_err(|e| e.in_field("signature_header"))
}

fn check_signature(
    style: SignatureStyle,
    header: Option<&str>,
) -> Result<Option<String>, RuleError> {
    match (style, header) {
        (SignatureStyle::Standard, None) => Ok(None),
        (SignatureStyle::Standard, Some(h)) => Err(RuleError::new(
            Code::SignatureHeaderNotApplicable,
            "signature_header applies only to signature_style 'sha256-hex' or 'hex'",
            h,
        )),
        (SignatureStyle::Sha256Hex | SignatureStyle::Hex, h) => {
            let h = h.unwrap_or(DEFAULT_SIGNATURE_HEADER);
            check_name(h, "signature header")?;
            let lower = h.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                return Err(RuleError::new(
                    Code::HeaderNameReserved,
                    "signature header must not be a reserved header",
                    h,
                ));
            }
            Ok(Some(h.to_string()))
        }
    }
}

/// Validates an endpoint's custom headers, a JSON object of name → value.
/// `signature_header` is the endpoint's own signature header, reserved too.
pub fn validate(
    headers: &Value,
    signature_header: Option<&str>,
) -> Result<Map<String, Value>, RuleError> {
    check(headers, signature_header).map_err(|e| e.in_field("headers"))
}

fn check(headers: &Value, signature_header: Option<&str>) -> Result<Map<String, Value>, RuleError> {
    let Value::Object(map) = headers else {
        // Only the JSON type: an array or string here may still hold a credential.
        return Err(RuleError::new(
            Code::HeadersNotObject,
            "headers must be a JSON object of name to value",
            format!("a JSON {}", json_type(headers)),
        ));
    };
    if map.len() > MAX_HEADERS {
        return Err(RuleError::new(
            Code::HeadersTooMany,
            format!("an endpoint may have at most {MAX_HEADERS} custom headers"),
            format!("{} headers", map.len()),
        ));
    }
    let sig = signature_header.map(str::to_ascii_lowercase);
    let mut seen: Vec<String> = Vec::with_capacity(map.len());
    for (name, value) in map {
        check_one(name, value, sig.as_deref(), &mut seen).map_err(|e| e.with_item(name))?;
    }
    Ok(map.clone())
}

/// One header; errors name the header, and never show its value.
fn check_one(
    name: &str,
    value: &Value,
    sig: Option<&str>,
    seen: &mut Vec<String>,
) -> Result<(), RuleError> {
    check_name(name, "header")?;
    let lower = name.to_ascii_lowercase();
    if let Some(why) = reserved_reason(&lower) {
        return Err(RuleError::new(
            Code::HeaderNameReserved,
            format!("header name is reserved ({why})"),
            name,
        ));
    }
    if sig == Some(lower.as_str()) {
        return Err(RuleError::new(
            Code::HeaderNameReserved,
            "header name is reserved (it is this endpoint's signature header)",
            name,
        ));
    }
    if seen.contains(&lower) {
        return Err(RuleError::new(
            Code::HeaderNameDuplicate,
            "header names must be unique ignoring case",
            name,
        ));
    }
    seen.push(lower);
    let Value::String(v) = value else {
        return Err(RuleError::new(
            Code::HeaderValueNotString,
            format!(
                "header value must be a string, not a JSON {}",
                json_type(value)
            ),
            name,
        ));
    };
    check_value(name, v)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks a value; the error's value is the header's name, never its value.
fn check_value(name: &str, v: &str) -> Result<(), RuleError> {
    if v.trim_matches([' ', '\t']).is_empty() {
        return Err(RuleError::new(
            Code::HeaderValueEmpty,
            "header value must not be empty",
            name,
        ));
    }
    if v.len() > MAX_VALUE_BYTES {
        return Err(RuleError::new(
            Code::HeaderValueTooLong,
            format!(
                "header value must be at most {MAX_VALUE_BYTES} bytes (this one has {})",
                v.len()
            ),
            name,
        ));
    }
    if let Some(bad) = v
        .chars()
        .find(|c| !(matches!(c, ' ' | '\t') || c.is_ascii_graphic()))
    {
        // The code point of the offending character only: it is never a
        // visible ASCII character, so no part of a token is shown.
        return Err(RuleError::new(
            Code::HeaderValueInvalid,
            format!(
                "header value may hold only visible ASCII, space and tab (found U+{:04X})",
                bad as u32
            ),
            name,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value, sig: Option<&str>) -> String {
        validate(&v, sig).unwrap_err().to_string()
    }

    #[test]
    fn every_style_is_listed_and_parses_back() {
        for style in SignatureStyle::ALL {
            assert_eq!(SignatureStyle::parse(style.as_str()).unwrap(), style);
        }
        // A style added to the enum but not to ALL fails to compile here.
        let listed = |s: SignatureStyle| match s {
            SignatureStyle::Standard | SignatureStyle::Sha256Hex | SignatureStyle::Hex => {
                SignatureStyle::ALL.contains(&s)
            }
        };
        assert!(SignatureStyle::ALL.into_iter().all(listed));
    }

    #[test]
    fn masked_keeps_names_and_no_value() {
        let h = json!({"Authorization": "Bearer abc.def", "X-Tenant": "42"});
        let m = masked(h.as_object().unwrap());
        assert_eq!(
            Value::Object(m),
            json!({"Authorization": MASKED_VALUE, "X-Tenant": MASKED_VALUE})
        );
    }

    #[test]
    fn accepts_ordinary_headers() {
        let h = json!({"Authorization": "Bearer abc.def", "X-Tenant": "42", "x-trace": "a\tb c"});
        assert_eq!(validate(&h, None).unwrap().len(), 3);
        assert!(validate(&json!({}), None).unwrap().is_empty());
    }

    #[test]
    fn refuses_reserved_names_ignoring_case() {
        for n in [
            "Content-Type",
            "HOST",
            "user-agent",
            "TE",
            "Proxy-Authorization",
            "Webhook-Signature",
            "webhook-id",
        ] {
            let e = err(json!({ n: "x" }), None);
            assert!(e.contains("reserved") && e.ends_with(n), "{n}: {e}");
        }
        let e = err(
            json!({"x-webhook-signature": "x"}),
            Some("X-Webhook-Signature"),
        );
        assert!(e.contains("signature header"), "{e}");
    }

    #[test]
    fn refuses_bad_names_and_values() {
        assert!(err(json!({"": "x"}), None).contains("must not be empty"));
        assert!(err(json!({"X Bad": "x"}), None).contains("HTTP token"));
        assert!(err(json!({"X-A": ""}), None).contains("must not be empty: X-A"));
        assert!(err(json!({"X-A": "  "}), None).contains("must not be empty: X-A"));
        let e = err(json!({"X-A": "line\r\nInjected: 1"}), None);
        assert!(e.contains("visible ASCII") && e.contains("U+000D"), "{e}");
        assert!(err(json!({"X-A": "nul\u{0}"}), None).contains("U+0000"));
        assert!(err(json!({"X-A": "caf\u{e9}"}), None).contains("U+00E9"));
        assert!(err(json!({"X-A": 5}), None).contains("must be a string, not a JSON number"));
        assert!(err(json!({"X-A": "a", "x-a": "b"}), None).contains("unique"));
        assert!(err(json!(["X-A"]), None).contains("JSON object"));
    }

    /// Whatever is wrong with a value, the error names the header and the
    /// rule and shows no part of the value.
    #[test]
    fn errors_never_show_a_value() {
        let secret = "s3cr3tT0k3n";
        let values = [
            json!(format!("Bearer {secret}\r\nX-Injected: 1")),
            json!(format!("Bearer {secret} caf\u{e9}")),
            json!(format!("Bearer {secret}\u{0}")),
            json!(format!("Bearer {secret}{}", "x".repeat(MAX_VALUE_BYTES))),
            json!(12345678),
            json!([format!("Bearer {secret}")]),
            json!({"token": secret}),
            json!(true),
        ];
        for v in values {
            let e = err(json!({ "Authorization": v.clone() }), None);
            assert!(
                !e.contains(secret) && !e.contains("Bearer") && !e.contains("12345678"),
                "{v}: {e}"
            );
            assert!(e.ends_with(": Authorization"), "names the header: {e}");
        }
        // Not an object at all: only its JSON type is shown.
        for v in [
            json!([format!("Authorization: Bearer {secret}")]),
            json!(format!("Authorization: Bearer {secret}")),
        ] {
            let e = err(v.clone(), None);
            assert!(!e.contains(secret) && e.contains("JSON object"), "{v}: {e}");
        }
        // The other rules name the header only, too.
        for h in [
            json!({"Authorization": format!("Bearer {secret}"), "authorization": format!("Bearer {secret}")}),
            json!({"Proxy-Authorization": format!("Basic {secret}")}),
            json!({"X-Sig": format!("{secret}")}),
        ] {
            let e = err(h.clone(), Some("X-Sig"));
            assert!(!e.contains(secret), "{h}: {e}");
        }
    }

    #[test]
    fn enforces_sizes() {
        let long_name = "X".repeat(MAX_NAME_BYTES + 1);
        assert!(err(json!({ long_name: "x" }), None).contains("at most 256 bytes"));
        assert!(validate(&json!({ "X".repeat(MAX_NAME_BYTES): "x" }), None).is_ok());
        assert!(err(json!({"X-A": "v".repeat(MAX_VALUE_BYTES + 1)}), None)
            .contains("at most 4096 bytes"));
        assert!(validate(&json!({"X-A": "v".repeat(MAX_VALUE_BYTES)}), None).is_ok());
        let many: Map<String, Value> = (0..=MAX_HEADERS)
            .map(|i| (format!("X-{i}"), json!("v")))
            .collect();
        assert!(err(Value::Object(many), None).contains("at most 20"));
    }

    #[test]
    fn signature_settings() {
        assert_eq!(
            validate_signature(SignatureStyle::Standard, None).unwrap(),
            None
        );
        assert!(validate_signature(SignatureStyle::Standard, Some("X-Sig")).is_err());
        assert_eq!(
            validate_signature(SignatureStyle::Sha256Hex, None)
                .unwrap()
                .as_deref(),
            Some(DEFAULT_SIGNATURE_HEADER)
        );
        assert_eq!(
            validate_signature(SignatureStyle::Sha256Hex, Some("X-Hub-Signature-256"))
                .unwrap()
                .as_deref(),
            Some("X-Hub-Signature-256")
        );
        assert!(validate_signature(SignatureStyle::Sha256Hex, Some("Content-Type")).is_err());
        assert!(validate_signature(SignatureStyle::Sha256Hex, Some("bad header")).is_err());
        assert!(SignatureStyle::parse("md5")
            .unwrap_err()
            .to_string()
            .contains("'standard', 'sha256-hex' or 'hex'"));
        // hex: the same header rules, and it round-trips.
        assert_eq!(
            validate_signature(SignatureStyle::Hex, Some("x-supademo-signature"))
                .unwrap()
                .as_deref(),
            Some("x-supademo-signature")
        );
        assert!(validate_signature(SignatureStyle::Hex, Some("User-Agent")).is_err());
        assert_eq!(SignatureStyle::parse("hex").unwrap().as_str(), "hex");
    }
}
