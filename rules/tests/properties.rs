//! Property tests of the shared rules. Each rule's answer is compared with an
//! oracle: the same rule stated again here, plainly and independently of the
//! rules' code (its own tables of ranges, reserved names and limits), over
//! generated input that lands on both sides of every limit. A generated
//! corpus of encodings of private and reserved addresses is always refused
//! as a webhook target; generated public forms are always accepted.

use postbox_rules::{event, headers, ip, options, url};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Oracles: each rule, stated plainly.

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
    ([192, 88, 99, 0], 24),
    ([192, 168, 0, 0], 16),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([224, 0, 0, 0], 4),
    ([240, 0, 0, 0], 4),
    ([255, 255, 255, 255], 32),
];

/// An IPv4 address is public iff it is in none of [`BLOCKED_V4`].
fn public_v4_oracle(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    !BLOCKED_V4.iter().any(|(base, len)| {
        let mask = u32::MAX.checked_shl(32 - *len as u32).unwrap_or(0);
        n & mask == u32::from_be_bytes(*base)
    })
}

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

/// RFC 9110's `tchar`, listed.
const TOKEN_CHARS: &str =
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A header name is 1 to 256 characters, each a `tchar`.
fn header_name_oracle(name: &str) -> bool {
    (1..=256).contains(&name.len()) && name.chars().all(|c| TOKEN_CHARS.contains(c))
}

/// What the HTTP stack or postbox itself sets.
const SET_BY_POSTBOX: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
];

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
/// at most 30 gaps. The answer holds what was given.
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
    })
}

// ---------------------------------------------------------------------------
// Generators: input on both sides of each rule.

fn blocked_v4() -> impl Strategy<Value = Ipv4Addr> {
    (0..BLOCKED_V4.len(), any::<u32>()).prop_map(|(i, r)| {
        let (base, len) = BLOCKED_V4[i];
        let host_bits = u32::MAX.checked_shr(len as u32).unwrap_or(0);
        Ipv4Addr::from(u32::from_be_bytes(base) | (r & host_bits))
    })
}

fn public_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("public", |ip| public_v4_oracle(*ip))
}

/// Prefixes of IPv6 addresses that one of the rules is about, on either side.
const V6_PREFIXES: &[&[u16]] = &[
    &[],
    &[0x2001],
    &[0x2001, 0],
    &[0x2001, 1],
    &[0x2001, 2, 0],
    &[0x2001, 0x1ff],
    &[0x2001, 0x200],
    &[0x2001, 0xdb8],
    &[0x2002],
    &[0x3fff],
    &[0x3fff, 0x0fff],
    &[0x2a00],
    &[0x64, 0xff9b, 0, 0, 0, 0],
    &[0x64, 0xff9b, 1],
    &[0, 0, 0, 0, 0, 0xffff],
    &[0, 0, 0, 0, 0xffff, 0],
    &[0, 0, 0, 0, 0, 0, 0],
    &[0xfe80],
    &[0xfc00],
    &[0xff02],
];

/// IPv6 addresses, most under one of [`V6_PREFIXES`].
fn v6() -> impl Strategy<Value = Ipv6Addr> {
    (prop::sample::select(V6_PREFIXES), any::<[u16; 8]>()).prop_map(|(p, mut segs)| {
        segs[..p.len()].copy_from_slice(p);
        Ipv6Addr::from(segs)
    })
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(n.into())),
        blocked_v4().prop_map(IpAddr::V4),
        v6().prop_map(IpAddr::V6),
    ]
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

/// URL hosts: names with and without dots, localhost in its forms, every
/// spelling of blocked and public IPv4 addresses, IPv6 literals.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,12}){0,3}\\.?",
        1 => "(localhost|LocalHost|[a-z]{1,8}\\.localhost|localhost\\.[a-z]{1,4})\\.?",
        2 => (blocked_v4(), 0..14usize).prop_map(|(ip, i)| spellings(ip)[i].clone()),
        2 => (public_v4(), 0..14usize).prop_map(|(ip, i)| spellings(ip)[i].clone()),
        2 => v6().prop_map(|ip| format!("[{ip}]")),
    ]
}

/// URL-shaped strings that vary every part the URL rule looks at, some
/// padded to about 2048 bytes with characters that normalization
/// percent-encodes (so a URL can be short enough as given and too long once
/// normalized).
fn url_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            6 => Just("https"),
            2 => Just("http"),
            1 => Just("HTTPS"),
            1 => Just("ftp"),
            1 => Just("wss")
        ],
        prop_oneof![12 => Just(""), 1 => Just("u@"), 1 => Just("u:p@"), 1 => Just(":p@")],
        host(),
        prop::option::weighted(
            0.3,
            prop_oneof![
                prop::sample::select(
                    &[0u32, 1, 79, 80, 81, 442, 443, 444, 1023, 1024, 65535, 65536][..]
                ),
                1u32..1024,
                1024u32..=65535,
                65536u32..100_000,
            ],
        ),
        "(/[a-z0-9%@.~ \"<-]{0,12}){0,3}",
        prop::option::of("[a-z0-9=&]{0,10}"),
        prop::option::weighted(0.15, "[a-z0-9]{0,6}"),
        prop_oneof![8 => Just((0usize, 0usize)), 2 => (1_980usize..2_060, 0usize..40)],
        prop_oneof![9 => Just(""), 1 => Just("  ")],
    )
        .prop_map(
            |(scheme, user, host, port, path, query, fragment, (pad, wide), blank)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let pad = if pad > 0 {
                    format!(
                        "/{}{}",
                        "a".repeat(pad.saturating_sub(wide)),
                        "<".repeat(wide)
                    )
                } else {
                    String::new()
                };
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
                format!("{blank}{scheme}://{user}{host}{port}{path}{pad}{query}{fragment}")
            },
        )
}

/// `s` with the letters at the set bits of `bits` in upper case.
fn mixed_case(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// `s` with `c` put in at `at` (modulo its length, on a char boundary).
fn with_char(s: &str, at: usize, c: char) -> String {
    let chars: Vec<char> = s.chars().collect();
    let at = at % (chars.len() + 1);
    chars[..at]
        .iter()
        .chain([c].iter())
        .chain(&chars[at..])
        .collect()
}

/// Characters outside the token set, each alone enough to spoil a name.
fn not_token_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(
            &[
                ' ', '\t', '"', '(', ')', ',', '/', ':', ';', '<', '=', '>', '?', '@', '[', '\\',
                ']', '{', '}', '\u{7f}', '\0', 'é', 'ß'
            ][..]
        ),
        any::<char>().prop_filter("not a token char", |c| !TOKEN_CHARS.contains(*c)),
    ]
}

/// A header name that may break one rule: a token, a token with one
/// character outside the set, a name postbox sets or a reserved prefix in
/// any case, a case variant of the fixed names [`headers_json`] uses, empty
/// or around the length limit.
fn odd_header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}",
        3 => ("[A-Za-z0-9-]{0,12}", any::<usize>(), not_token_char())
            .prop_map(|(t, at, c)| with_char(&t, at, c)),
        3 => (prop::sample::select(SET_BY_POSTBOX), any::<u64>())
            .prop_map(|(n, bits)| mixed_case(n, bits)),
        1 => ("(proxy|webhook)-[a-z]{0,8}", any::<u64>()).prop_map(|(n, bits)| mixed_case(&n, bits)),
        1 => "(proxy|webhook|proxy_|webhook\\.)[a-z]{0,8}",
        2 => (0usize..3, any::<u64>()).prop_map(|(i, bits)| mixed_case(&format!("x-h{i}"), bits)),
        1 => (Just("x-webhook-signature"), any::<u64>()).prop_map(|(n, bits)| mixed_case(n, bits)),
        1 => Just(String::new()),
        1 => (254usize..259).prop_map(|n| "h".repeat(n)),
    ]
}

/// A header value that may break one rule: visible ASCII with blanks, blank
/// only, one character that is not visible ASCII, around the length limit,
/// JSON that is not a string.
fn odd_header_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[!-~][ -~\t]{0,20}".prop_map(Value::String),
        2 => "[ \t]{0,3}".prop_map(Value::String),
        3 => ("[!-~]{1,12}", any::<usize>(), prop_oneof![
            prop::sample::select(&['\0', '\r', '\n', '\u{7f}', '\u{80}', 'é', '\u{a0}', '\u{2028}'][..]),
            any::<char>(),
        ])
            .prop_map(|(v, at, c)| Value::String(with_char(&v, at, c))),
        2 => (4_094usize..4_099).prop_map(|n| Value::String("v".repeat(n))),
        1 => prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            Just(Value::Null),
            Just(json!(true)),
            Just(json!(["a"])),
            Just(json!({"a": "b"})),
        ],
    ]
}

/// Custom headers: a few or about twenty good ones (`X-H0`, `X-H1`, ...),
/// and at most two that may break a rule; now and then not an object.
fn headers_json() -> impl Strategy<Value = Value> {
    let good = prop_oneof![0usize..4, 19usize..22];
    // An odd name with a good value, or a good name with an odd value: one
    // rule at stake at a time.
    let odd_entry = prop_oneof![
        (odd_header_name(), "[!-~]{1,8}".prop_map(Value::String)),
        ("X-[A-Za-z]{1,8}", odd_header_value()),
    ];
    let odd = prop::collection::vec(odd_entry, 0..3);
    prop_oneof![
        12 => (good, odd).prop_map(|(good, odd)| {
            let mut map: Map<String, Value> = (0..good)
                .map(|i| (format!("X-H{i}"), json!(format!("value {i}"))))
                .collect();
            map.extend(odd);
            Value::Object(map)
        }),
        1 => Just(json!([["a", "b"]])),
        1 => Just(json!("Authorization: x")),
        1 => Just(Value::Null),
    ]
}

/// Event names and near misses: valid names, one segment, empty segments,
/// capitals and dashes, names around the 200-byte limit, anything.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_]{1,6}(\\.[a-z0-9_]{1,6}){0,3}",
        2 => "[a-z0-9_.A-Z*-]{0,12}",
        2 => ("[a-z0-9_]{1,6}(\\.[a-z0-9_]{1,6}){1,2}", any::<usize>(), prop::sample::select(&['-', 'A', '.', ' ', '*', 'é'][..]))
            .prop_map(|(n, at, c)| with_char(&n, at, c)),
        1 => (1usize..60, 136usize..142).prop_map(|(a, b)| format!("{}.{}", "a".repeat(a), "b".repeat(b))),
        1 => ".{0,16}",
    ]
}

/// Filters: `*`, names, patterns (valid and not), `*` in odd places.
fn filter_like() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_string()),
        3 => name_like(),
        3 => name_like().prop_map(|n| format!("{n}.*")),
        1 => (1usize..60, 134usize..140).prop_map(|(a, b)| format!("{}.{}.*", "a".repeat(a), "b".repeat(b))),
        1 => "(\\.\\*|\\*\\.\\*|\\*\\*|[a-z]\\*|[a-z]\\.\\*\\.[a-z]|[a-z]\\.\\.\\*)",
    ]
}

/// A whole number in or around `lo..=hi`, or something that is not one.
fn whole_around(lo: u64, hi: u64) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![lo.saturating_sub(1), lo, lo + 1, hi - 1, hi, hi + 1]).prop_map(|n| json!(n)),
        4 => (lo..=hi).prop_map(|n| json!(n)),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => prop_oneof![
            (lo as f64..hi as f64).prop_map(|f| json!(f + 0.5)),
            Just(json!(format!("{lo}"))),
            Just(Value::Null),
        ],
    ]
}

fn rate() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(&[0.0, 0.0099, 0.01, 0.0101, 1.0, 99_999.99, 100_000.0, 100_000.01][..]).prop_map(|f| json!(f)),
        2 => prop::sample::select(&[0u64, 1, 100_000, 100_001][..]).prop_map(|n| json!(n)),
        4 => (0.0f64..200_000.0).prop_map(|f| json!(f)),
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => prop_oneof![Just(json!("1")), Just(Value::Null), Just(json!(-1))],
    ]
}

/// Retry gaps: `<n><unit>` strings (some with a unit that is not one, some
/// with blanks), whole and fractional seconds around 1 ms and 7 days, and
/// other JSON.
fn gap() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(&["1ms", "0ms", "0s", "30s", "5m", "2h", "7d", "8d", "168h", "169h", "10080m", "10081m", "604800s", "604801s", "604800000ms", "604800001ms", " 5m "][..])
            .prop_map(|s| json!(s)),
        4 => (
            prop_oneof![0u64..2_000, 0u64..1_000_000_000],
            prop::sample::select(&["ms", "s", "m", "h", "d", "", "x", "q"][..]),
            prop::sample::select(&["", " "][..]),
        )
            .prop_map(|(n, unit, blank)| Value::String(format!("{blank}{n}{unit}{blank}"))),
        2 => prop::sample::select(&[0u64, 1, 604_799, 604_800, 604_801][..]).prop_map(|n| json!(n)),
        2 => prop::sample::select(&[0.0, 0.0009, 0.001, 0.0011, 604_799.9, 604_800.0, 604_800.1][..]).prop_map(|f| json!(f)),
        2 => (0u64..1_000_000).prop_map(|n| json!(n)),
        1 => any::<i64>().prop_map(|n| json!(n)),
        2 => (0.0f64..1_000_000.0).prop_map(|f| json!(f)),
        // Past u64::MAX seconds too (about 1.8e19), where Duration cannot
        // hold the gap: refused, never a panic.
        1 => (0.0f64..1e300).prop_map(|f| json!(f)),
        1 => "[a-z ]{0,8}".prop_map(Value::String),
        1 => prop_oneof![Just(Value::Null), Just(json!([5])), Just(json!(true))],
    ]
}

fn schedule() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::collection::vec(gap(), 0..5).prop_map(Value::Array),
        // Near the limit of 30, valid gaps but for one now and then.
        2 => (29usize..32, prop::option::of((0usize..32, gap()))).prop_map(|(n, odd)| {
            let mut gaps = vec![json!("5s"); n];
            if let Some((at, g)) = odd {
                gaps[at % n] = g;
            }
            Value::Array(gaps)
        }),
        1 => prop_oneof![Just(json!("5s")), Just(json!({"a": 1})), Just(Value::Null)],
    ]
}

/// Options: each known key now and then, with values in and around its
/// range (`connect_timeout_ms` sometimes a step from `timeout_ms`), an
/// unknown key now and then; now and then not an object.
fn options_json() -> impl Strategy<Value = Value> {
    (
        prop::option::of(whole_around(100, 120_000)),
        prop::option::of(prop_oneof![
            whole_around(100, 60_000).prop_map(Ok),
            (-2i64..=2).prop_map(Err),
        ]),
        prop::option::of(whole_around(1, 1_000)),
        prop::option::of(rate()),
        prop::option::of(schedule()),
        prop::option::of(("[a-z_]{0,16}", whole_around(1, 10))),
        prop_oneof![12 => Just(None), 1 => Just(Some(json!([1]))), 1 => Just(Some(json!(5)))],
    )
        .prop_map(
            |(timeout, connect, in_flight, rate, schedule, other, not_object)| {
                if let Some(v) = not_object {
                    return v;
                }
                let mut map = Map::new();
                let connect = match (connect, &timeout) {
                    // A step from the timeout, to land on either side of it.
                    (Some(Err(step)), Some(t)) => t.as_i64().map(|t| json!(t + step)),
                    (Some(Err(_)), None) => None,
                    (Some(Ok(v)), _) => Some(v),
                    (None, _) => None,
                };
                for (key, v) in [
                    ("timeout_ms", timeout),
                    ("connect_timeout_ms", connect),
                    ("max_in_flight", in_flight),
                    ("rate_limit_per_s", rate),
                    ("retry_schedule", schedule),
                ] {
                    if let Some(v) = v {
                        map.insert(key.to_string(), v);
                    }
                }
                if let Some((k, v)) = other {
                    map.insert(k, v);
                }
                Value::Object(map)
            },
        )
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
