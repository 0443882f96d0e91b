//! Property tests of the shared rules. Each rule's answer is compared with an
//! oracle: the same rule stated again here, plainly and independently of the
//! rules' code (its own tables of ranges, reserved names and limits), over
//! generated input that lands on both sides of every limit. A generated
//! corpus of encodings of private and reserved addresses is always refused
//! as a webhook target; generated public forms are always accepted.

mod corpus;

use corpus::*;
use postbox_rules::{event, headers, ip, options, url};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Oracles: each rule, stated plainly.

/// An IPv6 address is public iff it carries a public IPv4 address
/// (`::ffff:0:0/96` and `64:ff9b::/96` in the low 32 bits, `2002::/16` in
/// bits 16..48), or, carrying none, is global unicast (`2000::/3`) outside
/// the IETF protocol assignments (`2001::/23`) and the documentation ranges
/// (`2001:db8::/32`, `3fff::/20`).
fn public_v6_oracle(ip: Ipv6Addr) -> bool {
    let n = u128::from(ip);
    let within = |net: u128, len: u32| n >> (128 - len) == net >> (128 - len);
    if within(0xffff << 32, 96) || within(0x64_ff9b << 96, 96) {
        return public_v4_oracle(Ipv4Addr::from(n as u32));
    }
    if within(0x2002 << 112, 16) {
        return public_v4_oracle(Ipv4Addr::from((n >> 80) as u32));
    }
    within(0x2000 << 112, 3)
        && !within(0x2001 << 112, 23)
        && !within(0x2001_0db8 << 96, 32)
        && !within(0x3fff << 112, 20)
}

fn public_ip_oracle(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => public_v4_oracle(ip),
        IpAddr::V6(ip) => public_v6_oracle(ip),
    }
}

/// A webhook URL is accepted iff: at most 2048 bytes as given and once
/// normalized; it parses (WHATWG); https, or http when insecure; no user
/// name, password or fragment; the default port, 443, 1024 and above, or 80
/// when insecure; and a host that, unless insecure, is public: a name with a
/// dot that is not localhost or under it (a trailing dot ignored), or a
/// public address.
fn url_oracle(input: &str, insecure: bool) -> bool {
    if input.len() > 2048 {
        return false;
    }
    let Ok(u) = ::url::Url::parse(input) else {
        return false;
    };
    let scheme = u.scheme() == "https" || (insecure && u.scheme() == "http");
    let port = match u.port() {
        None => true,
        Some(p) => p == 443 || p >= 1024 || (insecure && p == 80),
    };
    let host = match u.host() {
        None => false,
        Some(_) if insecure => true,
        Some(::url::Host::Domain(name)) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            name.contains('.') && name != "localhost" && !name.ends_with(".localhost")
        }
        Some(::url::Host::Ipv4(ip)) => public_v4_oracle(ip),
        Some(::url::Host::Ipv6(ip)) => public_v6_oracle(ip),
    };
    scheme
        && u.username().is_empty()
        && u.password().is_none()
        && u.fragment().is_none()
        && port
        && u.as_str().len() <= 2048
        && host
}

/// A header name is 1 to 256 characters, each a `tchar`.
fn header_name_oracle(name: &str) -> bool {
    (1..=256).contains(&name.len()) && name.chars().all(|c| TOKEN_CHARS.contains(c))
}

/// Custom headers are accepted iff: a JSON object of at most 20 entries;
/// names unique ignoring case; each name a token that, ignoring case, is not
/// set by postbox, not `proxy-*`, not `webhook-*` and not the endpoint's
/// signature header; each value a string of at most 4096 bytes of visible
/// ASCII, space and tab, with something besides space and tab.
fn headers_oracle(headers: &Value, signature_header: Option<&str>) -> bool {
    let Some(map) = headers.as_object() else {
        return false;
    };
    let lower: Vec<String> = map.keys().map(|k| k.to_ascii_lowercase()).collect();
    let unique = lower.iter().collect::<HashSet<_>>().len() == lower.len();
    let sig = signature_header.map(str::to_ascii_lowercase);
    map.len() <= 20
        && unique
        && map.iter().zip(&lower).all(|((name, value), l)| {
            header_name_oracle(name)
                && !SET_BY_POSTBOX.contains(&l.as_str())
                && !l.starts_with("proxy-")
                && !l.starts_with("webhook-")
                && sig.as_ref() != Some(l)
                && value.as_str().is_some_and(|v| {
                    v.len() <= 4096
                        && v.chars().any(|c| c != ' ' && c != '\t')
                        && v.chars()
                            .all(|c| c == ' ' || c == '\t' || ('!'..='~').contains(&c))
                })
        })
}

/// The header a signature goes in: none for `standard` (which takes none);
/// for the other styles the one given, or `X-Webhook-Signature`, if it is a
/// token that is not set by postbox and not `proxy-*`.
fn signature_oracle(style: &str, header: Option<&str>) -> Option<Option<String>> {
    match style {
        "standard" => header.is_none().then_some(None),
        "sha256-hex" | "hex" => {
            let h = header.unwrap_or("X-Webhook-Signature");
            let l = h.to_ascii_lowercase();
            (header_name_oracle(h)
                && !SET_BY_POSTBOX.contains(&l.as_str())
                && !l.starts_with("proxy-"))
            .then(|| Some(h.to_string()))
        }
        _ => None,
    }
}

/// A name segment: one or more of `a-z`, `0-9`, `_`.
fn segment_oracle(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An event name: at most 200 bytes, two or more segments joined by dots.
fn event_name_oracle(name: &str) -> bool {
    name.len() <= 200 && name.contains('.') && name.split('.').all(segment_oracle)
}

/// A filter matches a name iff it is `*`, the name, or `<p>.*` with the name
/// starting with `<p>.`.
fn filter_matches_oracle(filter: &str, name: &str) -> bool {
    filter == "*"
        || filter == name
        || filter
            .strip_suffix('*')
            .is_some_and(|p| p.ends_with('.') && name.starts_with(p))
}

/// An endpoint's filter list is accepted iff it holds 1 to 100 entries, each
/// `*`, a pattern (at most 200 bytes: segments, then `.*`) or a known event
/// name; the answer is the list without repeats, first occurrences kept.
fn filters_oracle(filters: &[&str], known: impl Fn(&str) -> bool) -> Option<Vec<String>> {
    let ok = |f: &str| {
        f == "*"
            || f.strip_suffix(".*")
                .is_some_and(|p| f.len() <= 200 && p.split('.').all(segment_oracle))
            || (event_name_oracle(f) && known(f))
    };
    if !(1..=100).contains(&filters.len()) || !filters.iter().all(|f| ok(f)) {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for f in filters {
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    Some(out)
}

/// A retry gap: a JSON number of seconds, or a string `<digits><unit>`
/// (`ms`, `s`, `m`, `h`, `d`; blanks around it), from 1 ms to 7 days.
fn gap_oracle(v: &Value) -> Option<Duration> {
    let d = match v {
        Value::Number(n) => {
            let s = n.as_f64()?;
            if !(0.0..=8.0 * 86400.0).contains(&s) {
                return None;
            }
            Duration::from_secs_f64(s)
        }
        Value::String(s) => {
            let s = s.trim();
            let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let n: u64 = s[..digits].parse().ok()?;
            let unit_ms: u64 = match &s[digits..] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return None,
            };
            Duration::from_millis(n.checked_mul(unit_ms)?)
        }
        _ => return None,
    };
    (Duration::from_millis(1)..=Duration::from_secs(7 * 86400))
        .contains(&d)
        .then_some(d)
}

/// Endpoint options are accepted iff they are a JSON object of known keys:
/// `timeout_ms` a whole number 100..=120000, `connect_timeout_ms`
/// 100..=60000 and not above `timeout_ms`, `max_in_flight` 1..=1000,
/// `rate_limit_per_s` a number 0.01..=100000, `retry_schedule` an array of
/// at most 30 gaps, `batch_max_events` 1..=1000, `batch_max_wait_ms`
/// 0..=60000, `batch_max_bytes` 1024..=16 MiB, `ordering` "none" or "key",
/// `ordering_given_up` "skip" or "hold", `coalesce` a boolean. The answer
/// holds what was given.
fn options_oracle(v: &Value) -> Option<options::EndpointOptions> {
    let map = v.as_object()?;
    let whole = |key: &str, lo: u64, hi: u64| -> Option<Option<u64>> {
        match map.get(key) {
            None => Some(None),
            Some(v) => v.as_u64().filter(|n| (lo..=hi).contains(n)).map(Some),
        }
    };
    if map.keys().any(|k| {
        ![
            "timeout_ms",
            "connect_timeout_ms",
            "max_in_flight",
            "rate_limit_per_s",
            "retry_schedule",
            "batch_max_events",
            "batch_max_wait_ms",
            "batch_max_bytes",
            "ordering",
            "ordering_given_up",
            "coalesce",
        ]
        .contains(&k.as_str())
    }) {
        return None;
    }
    let timeout = whole("timeout_ms", 100, 120_000)?;
    let connect = whole("connect_timeout_ms", 100, 60_000)?;
    if let (Some(c), Some(t)) = (connect, timeout) {
        if c > t {
            return None;
        }
    }
    let rate = match map.get("rate_limit_per_s") {
        None => None,
        Some(v) => Some(v.as_f64().filter(|r| (0.01..=100_000.0).contains(r))?),
    };
    let schedule = match map.get("retry_schedule") {
        None => None,
        Some(v) => {
            let items = v.as_array().filter(|a| a.len() <= 30)?;
            Some(items.iter().map(gap_oracle).collect::<Option<Vec<_>>>()?)
        }
    };
    Some(options::EndpointOptions {
        timeout: timeout.map(Duration::from_millis),
        connect_timeout: connect.map(Duration::from_millis),
        max_in_flight: whole("max_in_flight", 1, 1000)?.map(|n| n as u32),
        rate_limit_per_s: rate,
        retry_schedule: schedule,
        batch_max_events: whole("batch_max_events", 1, 1000)?.map(|n| n as u32),
        batch_max_wait: whole("batch_max_wait_ms", 0, 60_000)?.map(Duration::from_millis),
        batch_max_bytes: whole("batch_max_bytes", 1024, 16 << 20)?.map(|n| n as usize),
        ordering: match map.get("ordering").map(|v| v.as_str()) {
            None => None,
            Some(Some("none")) => Some(options::Ordering::None),
            Some(Some("key")) => Some(options::Ordering::Key),
            Some(_) => return None,
        },
        ordering_given_up: match map.get("ordering_given_up").map(|v| v.as_str()) {
            None => None,
            Some(Some("skip")) => Some(options::GivenUp::Skip),
            Some(Some("hold")) => Some(options::GivenUp::Hold),
            Some(_) => return None,
        },
        coalesce: match map.get("coalesce") {
            None => None,
            Some(v) => Some(v.as_bool()?),
        },
    })
}

// ---------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ip_rule_agrees_with_its_oracle(ip in any_ip()) {
        prop_assert_eq!(ip::check(ip).is_ok(), public_ip_oracle(ip), "{}", ip);
    }

    #[test]
    fn url_rule_agrees_with_its_oracle(
        u in prop_oneof![4 => url_like(), 1 => ".{0,300}"],
        insecure in any::<bool>(),
    ) {
        let got = url::validate(&u, insecure);
        prop_assert_eq!(
            got.is_ok(),
            url_oracle(&u, insecure),
            "{:?} (insecure: {}): {:?}",
            u,
            insecure,
            got.as_ref().err().map(ToString::to_string)
        );
        if let Ok(normalized) = got {
            prop_assert_eq!(normalized, ::url::Url::parse(&u).unwrap());
        }
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
        // Not "xn--": that prefix makes a label punycode, which must then decode.
        label in "[a-z][a-z0-9-]{0,20}[a-z0-9]".prop_filter("not punycode", |l| !l.starts_with("xn--")),
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
    fn header_rule_agrees_with_its_oracle(
        h in headers_json(),
        sig in prop::option::weighted(0.3, odd_header_name()),
    ) {
        let got = headers::validate(&h, sig.as_deref());
        prop_assert_eq!(
            got.is_ok(),
            headers_oracle(&h, sig.as_deref()),
            "{} (signature header {:?}): {:?}",
            h,
            sig,
            got.as_ref().err().map(ToString::to_string)
        );
        if let Ok(map) = got {
            prop_assert_eq!(Value::Object(map), h);
        }
    }

    #[test]
    fn signature_rules_agree_with_their_oracle(
        style in prop_oneof![
            Just("standard".to_string()),
            Just("sha256-hex".to_string()),
            Just("hex".to_string()),
            Just("Standard".to_string()),
            Just("HEX".to_string()),
            ".{0,10}",
        ],
        header in prop::option::of(odd_header_name()),
    ) {
        let want = signature_oracle(&style, header.as_deref());
        let got = headers::SignatureStyle::parse(&style)
            .ok()
            .and_then(|s| headers::validate_signature(s, header.as_deref()).ok());
        prop_assert_eq!(got, want, "{:?} {:?}", style, header);
        prop_assert_eq!(
            headers::SignatureStyle::parse(&style).is_ok(),
            ["standard", "sha256-hex", "hex"].contains(&style.as_str())
        );
    }

    #[test]
    fn event_rules_agree_with_their_oracle(
        name in name_like(),
        filters in prop::collection::vec(filter_like(), 0..6),
        // Valid patterns to bring the list near its limit of 100.
        bulk in prop_oneof![3 => Just(0usize), 1 => 94usize..=101],
        with_name in any::<bool>(),
        with_keys in any::<bool>(),
    ) {
        prop_assert_eq!(event::validate_name(&name).is_ok(), event_name_oracle(&name), "{:?}", name);
        let keys = event::match_keys(&name);
        let mut filters = filters;
        filters.extend((0..bulk).map(|i| format!("bulk{i}.*")));
        if with_name {
            filters.push(name.clone());
        }
        if with_keys && event_name_oracle(&name) {
            filters.extend(keys.iter().cloned());
        }
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();

        // The filter list: accepted as the oracle says, with the name the
        // only one in the catalog.
        let known = |n: &str| n == name;
        let got = event::validate_filters(&refs, known, || vec![name.as_str()]);
        let want = filters_oracle(&refs, known);
        prop_assert_eq!(
            got.as_ref().ok(),
            want.as_ref(),
            "{:?} with {:?} known: {:?}",
            refs,
            name,
            got.as_ref().err().map(ToString::to_string)
        );

        // A valid name's match keys are exactly the filters that match it:
        // each key does, and each filter that does is a key.
        if event_name_oracle(&name) {
            for k in &keys {
                prop_assert!(filter_matches_oracle(k, &name), "key {k:?} of {name:?}");
                let parsed = event::Filter::parse(k);
                prop_assert!(parsed.is_ok_and(|f| f.matches(&name)), "key {k:?} of {name:?}");
            }
            for f in &refs {
                if let Ok(parsed) = event::Filter::parse(f) {
                    let matches = filter_matches_oracle(f, &name);
                    prop_assert_eq!(parsed.matches(&name), matches, "{:?} on {:?}", f, name);
                    prop_assert_eq!(keys.iter().any(|k| k == f), matches, "{:?} in {:?}", f, keys);
                }
            }
        }

        // Close names: at most three, from the catalog, an exact one first.
        let close = event::close_names(&name, &refs);
        prop_assert!(close.len() <= 3 && close.iter().all(|c| refs.contains(c)), "{close:?}");
        if refs.contains(&name.as_str()) {
            prop_assert_eq!(close.first().copied(), Some(name.as_str()), "{:?}", close);
        }
    }

    #[test]
    fn option_rule_agrees_with_its_oracle(v in options_json()) {
        let got = options::parse(&v);
        let want = options_oracle(&v);
        prop_assert_eq!(
            got.as_ref().ok(),
            want.as_ref(),
            "{}: {:?}",
            v,
            got.as_ref().err().map(ToString::to_string)
        );
    }
}
