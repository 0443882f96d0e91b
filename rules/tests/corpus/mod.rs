//! The generated corpus of the shared rules: input on both sides of every
//! rule, as proptest strategies. Two users: the property tests
//! (rules/tests/properties.rs), which hold each rule to an oracle, and the
//! differential test of the SQL flavour (tests/tests/sql_flavour.rs), which
//! holds the PL/pgSQL forms of the rules to the same verdicts and messages
//! as this crate. Kept in one file, which both include by path.

#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Blocked IPv4 ranges (IANA special-purpose, not globally reachable), as
/// (first address, prefix length): the corpus draws addresses from them.
pub const BLOCKED_V4: &[([u8; 4], u8)] = &[
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
pub fn public_v4_oracle(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    !BLOCKED_V4.iter().any(|(base, len)| {
        let mask = u32::MAX.checked_shl(32 - *len as u32).unwrap_or(0);
        n & mask == u32::from_be_bytes(*base)
    })
}

/// RFC 9110's `tchar`, listed.
pub const TOKEN_CHARS: &str =
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What the HTTP stack or postbox itself sets.
pub const SET_BY_POSTBOX: &[&str] = &[
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

// ---------------------------------------------------------------------------
// Generators: input on both sides of each rule.

pub fn blocked_v4() -> impl Strategy<Value = Ipv4Addr> {
    (0..BLOCKED_V4.len(), any::<u32>()).prop_map(|(i, r)| {
        let (base, len) = BLOCKED_V4[i];
        let host_bits = u32::MAX.checked_shr(len as u32).unwrap_or(0);
        Ipv4Addr::from(u32::from_be_bytes(base) | (r & host_bits))
    })
}

pub fn public_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("public", |ip| public_v4_oracle(*ip))
}

/// Prefixes of IPv6 addresses that one of the rules is about, on either side.
pub const V6_PREFIXES: &[&[u16]] = &[
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
pub fn v6() -> impl Strategy<Value = Ipv6Addr> {
    (prop::sample::select(V6_PREFIXES), any::<[u16; 8]>()).prop_map(|(p, mut segs)| {
        segs[..p.len()].copy_from_slice(p);
        Ipv6Addr::from(segs)
    })
}

pub fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(n.into())),
        blocked_v4().prop_map(IpAddr::V4),
        v6().prop_map(IpAddr::V6),
    ]
}

/// The ways a URL can spell an IPv4 address that a browser-style parser
/// (WHATWG, as the rules use) turns back into it.
pub fn spellings(ip: Ipv4Addr) -> Vec<String> {
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
pub fn host() -> impl Strategy<Value = String> {
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
pub fn url_like() -> impl Strategy<Value = String> {
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
pub fn mixed_case(s: &str, bits: u64) -> String {
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
pub fn with_char(s: &str, at: usize, c: char) -> String {
    let chars: Vec<char> = s.chars().collect();
    let at = at % (chars.len() + 1);
    chars[..at]
        .iter()
        .chain([c].iter())
        .chain(&chars[at..])
        .collect()
}

/// Characters outside the token set, each alone enough to spoil a name.
pub fn not_token_char() -> impl Strategy<Value = char> {
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
pub fn odd_header_name() -> impl Strategy<Value = String> {
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
pub fn odd_header_value() -> impl Strategy<Value = Value> {
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
pub fn headers_json() -> impl Strategy<Value = Value> {
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
pub fn name_like() -> impl Strategy<Value = String> {
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
pub fn filter_like() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_string()),
        3 => name_like(),
        3 => name_like().prop_map(|n| format!("{n}.*")),
        1 => (1usize..60, 134usize..140).prop_map(|(a, b)| format!("{}.{}.*", "a".repeat(a), "b".repeat(b))),
        1 => "(\\.\\*|\\*\\.\\*|\\*\\*|[a-z]\\*|[a-z]\\.\\*\\.[a-z]|[a-z]\\.\\.\\*)",
    ]
}

/// A whole number in or around `lo..=hi`, or something that is not one.
pub fn whole_around(lo: u64, hi: u64) -> impl Strategy<Value = Value> {
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

pub fn rate() -> impl Strategy<Value = Value> {
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
pub fn gap() -> impl Strategy<Value = Value> {
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

/// One of the words, mostly; near misses (case, spaces) and other types
/// now and then.
pub fn word(words: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(words).prop_map(|w| json!(w)),
        1 => prop::sample::select(words).prop_map(|w| json!(w.to_uppercase())),
        1 => prop::sample::select(words).prop_map(|w| json!(format!(" {w}"))),
        1 => prop_oneof![Just(Value::Null), Just(json!(1)), Just(json!(true)), Just(json!([]))],
    ]
}

pub fn schedule() -> impl Strategy<Value = Value> {
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
pub fn options_json() -> impl Strategy<Value = Value> {
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
        (
            prop::option::of(whole_around(1, 1_000)),
            prop::option::of(whole_around(0, 60_000)),
            prop::option::of(whole_around(1024, 16 << 20)),
        ),
        (
            prop::option::of(word(&["none", "key"])),
            prop::option::of(word(&["skip", "hold"])),
            prop::option::of(prop_oneof![
                4 => any::<bool>().prop_map(Value::Bool),
                1 => prop_oneof![Just(json!("true")), Just(json!(1)), Just(Value::Null)],
            ]),
        ),
    )
        .prop_map(
            |(timeout, connect, in_flight, rate, schedule, other, not_object, batch, ordering)| {
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
                    ("batch_max_events", batch.0),
                    ("batch_max_wait_ms", batch.1),
                    ("batch_max_bytes", batch.2),
                    ("ordering", ordering.0),
                    ("ordering_given_up", ordering.1),
                    ("coalesce", ordering.2),
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

/// Signing secrets for `secret::validate_for`: `whsec_` and real base64 of
/// 20 to 70 bytes, padded or not (around the 24 to 64 byte limits);
/// base64-like text of any length and padding (wrong lengths, set trailing
/// bits); other prefixes; printable ASCII around the 16 and 256 character
/// limits of a customer's own secret, now and then with one character that
/// is not.
pub fn secret_like() -> impl Strategy<Value = String> {
    use base64::Engine;
    prop_oneof![
        3 => (prop::collection::vec(any::<u8>(), 20..70), any::<bool>()).prop_map(|(bytes, pad)| {
            let s = base64::engine::general_purpose::STANDARD.encode(&bytes);
            format!("whsec_{}", if pad { s.as_str() } else { s.trim_end_matches('=') })
        }),
        2 => "whsec_[A-Za-z0-9+/]{28,90}={0,3}",
        1 => "(whsec_|whsec|WHSEC_|)[A-Za-z0-9+/=_ -]{0,60}",
        2 => prop_oneof!["[ -~]{12,20}", "[ -~]{250,260}"],
        1 => ("[ -~]{16,40}", any::<usize>(), any::<char>()).prop_map(|(s, at, c)| with_char(&s, at, c)),
    ]
}

/// Signature styles: the three, near misses, anything.
pub fn style_like() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("standard".to_string()),
        2 => Just("sha256-hex".to_string()),
        2 => Just("hex".to_string()),
        1 => Just("Standard".to_string()),
        1 => Just("HEX".to_string()),
        1 => ".{0,10}",
    ]
}

/// Text around the lengths messages and key lists cut at: keys, short and
/// long text with multi-byte characters near the cut.
pub fn text_like() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "pbk_[A-Za-z0-9_-]{0,50}",
        2 => ".{0,130}",
        1 => "[aé€𝄞]{0,16}",
        1 => "[aé€]{95,105}",
    ]
}
