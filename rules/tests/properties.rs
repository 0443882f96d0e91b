//! Property tests of the shared rules: generated input never panics any
//! rule; a generated corpus of encodings of private and reserved addresses
//! is always refused as a webhook target; generated public forms are
//! always accepted.

use postbox_rules::{event, headers, options, url};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// Blocked IPv4 ranges (IANA special-purpose, not globally reachable), as
/// (first address, prefix length): the corpus draws addresses from them.
const BLOCKED_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 0, 0, 0], 24),
    ([192, 0, 2, 0], 24),
    ([192, 168, 0, 0], 16),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([224, 0, 0, 0], 4),
    ([240, 0, 0, 0], 4),
];

fn blocked_v4() -> impl Strategy<Value = Ipv4Addr> {
    (0..BLOCKED_V4.len(), any::<u32>()).prop_map(|(i, r)| {
        let (base, len) = BLOCKED_V4[i];
        let host_bits = if len == 0 { u32::MAX } else { u32::MAX >> len };
        Ipv4Addr::from(u32::from_be_bytes(base) | (r & host_bits))
    })
}

fn public_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("public", |ip| {
            let n = u32::from(*ip);
            !BLOCKED_V4.iter().any(|(base, len)| {
                let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
                n & mask == u32::from_be_bytes(*base) & mask
            }) && n != u32::MAX
                && n >> 8 != u32::from_be_bytes([192, 88, 99, 0]) >> 8
        })
}

/// The ways a URL can spell an IPv4 address that a browser-style parser
/// (WHATWG, as the rules use) turns back into it.
fn spellings(ip: Ipv4Addr) -> Vec<String> {
    let [a, b, c, d] = ip.octets();
    let n = u32::from(ip);
    let [h0, h1] = [(n >> 16) as u16, n as u16];
    vec![
        format!("{a}.{b}.{c}.{d}"),
        format!("{n}"),
        format!("0x{n:x}"),
        format!("0x{n:X}"),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
        format!("{a}.{}", (b as u32) << 16 | (c as u32) << 8 | d as u32),
        format!("{a}.{b}.{}", (c as u32) << 8 | d as u32),
        format!("{a}.{b}.{c}.{d}."),
        format!("[::ffff:{a}.{b}.{c}.{d}]"),
        format!("[::ffff:{h0:x}:{h1:x}]"),
        format!("[0:0:0:0:0:ffff:{h0:x}:{h1:x}]"),
        format!("[64:ff9b::{a}.{b}.{c}.{d}]"),
        format!("[2002:{h0:x}:{h1:x}::1]"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn url_rules_never_panic(s in ".{0,300}", insecure in any::<bool>()) {
        let _ = url::validate(&s, insecure);
        let _ = url::validate(&format!("https://{s}"), insecure);
        let _ = url::validate(&format!("https://{s}.example.com/{s}"), insecure);
    }

    #[test]
    fn every_spelling_of_a_blocked_ipv4_address_is_refused(
        ip in blocked_v4(),
        port in prop::option::of(1024u16..),
        path in "[a-z0-9/]{0,20}",
    ) {
        for host in spellings(ip) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let u = format!("https://{host}{port}/{path}");
            prop_assert!(url::validate(&u, false).is_err(), "accepted {u} ({ip})");
        }
    }

    #[test]
    fn non_global_ipv6_is_refused(segs in any::<[u16; 8]>()) {
        let ip = std::net::Ipv6Addr::from(segs);
        // Outside 2000::/3, and not a form that carries an IPv4 address
        // (IPv4-mapped, NAT64), which is judged by that address instead.
        prop_assume!(segs[0] & 0xe000 != 0x2000);
        prop_assume!(segs[..5] != [0, 0, 0, 0, 0] && segs[..6] != [0x64, 0xff9b, 0, 0, 0, 0]);
        let u = format!("https://[{ip}]/");
        prop_assert!(url::validate(&u, false).is_err(), "accepted {u}");
    }

    #[test]
    fn public_forms_are_accepted(
        ip in public_v4(),
        label in "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        path in "[a-z0-9_/-]{0,30}",
        port in prop::option::of(prop_oneof![Just(443u16), 1024u16..]),
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        for u in [
            format!("https://{label}.example.com{port}/{path}"),
            format!("https://{ip}{port}/{path}"),
            format!("https://[::ffff:{ip}]{port}/{path}"),
        ] {
            prop_assert!(url::validate(&u, false).is_ok(), "refused {u}: {:?}", url::validate(&u, false).err());
        }
    }

    #[test]
    fn header_rules_never_panic(
        pairs in prop::collection::vec((".{0,40}", prop_oneof![
            ".{0,60}".prop_map(Value::String),
            any::<i64>().prop_map(|n| json!(n)),
            Just(Value::Null),
            Just(json!([1, 2])),
        ]), 0..30),
        sig in prop::option::of(".{0,20}"),
        style in prop_oneof![Just("standard".to_string()), Just("sha256-hex".to_string()), Just("hex".to_string()), ".{0,10}"],
    ) {
        let map: serde_json::Map<String, Value> = pairs.into_iter().collect();
        let _ = headers::validate(&Value::Object(map), sig.as_deref());
        if let Ok(style) = headers::SignatureStyle::parse(&style) {
            let _ = headers::validate_signature(style, sig.as_deref());
        }
    }

    #[test]
    fn event_name_rules_never_panic(name in ".{0,120}", filters in prop::collection::vec(".{0,40}", 0..40)) {
        if event::validate_name(&name).is_ok() {
            let keys = event::match_keys(&name);
            prop_assert!(keys.contains(&name) && keys.contains(&"*".to_string()));
        }
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        let _ = event::validate_filters(&refs, |n| n == name, || vec![name.as_str()]);
        let _ = event::close_names(&name, &refs);
    }

    #[test]
    fn option_rules_never_panic(
        timeout in prop_oneof![any::<i64>().prop_map(|n| json!(n)), any::<f64>().prop_map(|f| json!(f)), ".{0,10}".prop_map(Value::String)],
        schedule in prop::collection::vec(prop_oneof![".{0,8}".prop_map(Value::String), any::<i64>().prop_map(|n| json!(n))], 0..40),
        key in ".{0,20}",
    ) {
        for v in [
            json!({"timeout_ms": timeout.clone()}),
            json!({"connect_timeout_ms": timeout.clone(), "timeout_ms": 1000}),
            json!({"max_in_flight": timeout.clone()}),
            json!({"rate_limit_per_s": timeout.clone()}),
            json!({"retry_schedule": schedule}),
            json!({ key: 1 }),
            timeout,
        ] {
            let _ = options::parse(&v);
        }
    }
}
