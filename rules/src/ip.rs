//! Address ranges that a webhook must never reach.
//!
//! Applied to IP literals in URLs by the extension, and to every address a
//! name resolves to by the worker, right before it connects.
//!
//! IPv4 is a deny-list (the IANA special-purpose registry). IPv6 is an
//! allow-list: only global unicast `2000::/3` passes, minus its special
//! ranges; forms that embed an IPv4 address (mapped, NAT64, 6to4) are judged
//! by the IPv4 address they carry. Anything else in the IPv6 space is new or
//! special, and failing closed there costs nothing real.

use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public unicast one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    Unspecified,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
    UniqueLocal,
    /// IPv6 outside global unicast `2000::/3` (and not an embedded IPv4 form).
    NotGlobalUnicast,
    /// Teredo `2001::/32`: a tunnel to an address the policy cannot see.
    Teredo,
}

impl Blocked {
    pub fn describe(self) -> &'static str {
        match self {
            Blocked::Unspecified => "unspecified",
            Blocked::Loopback => "loopback",
            Blocked::Private => "private (RFC 1918)",
            Blocked::SharedCgnat => "carrier-grade NAT (RFC 6598)",
            Blocked::LinkLocal => "link-local",
            Blocked::Multicast => "multicast",
            Blocked::Broadcast => "broadcast",
            Blocked::Documentation => "documentation",
            Blocked::Benchmarking => "benchmarking",
            Blocked::Reserved => "reserved",
            Blocked::UniqueLocal => "unique local (fc00::/7)",
            Blocked::NotGlobalUnicast => "non-global IPv6 (outside 2000::/3)",
            Blocked::Teredo => "Teredo tunnel (2001::/32)",
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(a, b, c, d), len)
}

// IANA IPv4 Special-Purpose Address Registry, minus the globally reachable entries.
const V4_RANGES: &[((Ipv4Addr, u8), Blocked)] = &[
    (v4(0, 0, 0, 0, 8), Blocked::Unspecified),
    (v4(10, 0, 0, 0, 8), Blocked::Private),
    (v4(100, 64, 0, 0, 10), Blocked::SharedCgnat),
    (v4(127, 0, 0, 0, 8), Blocked::Loopback),
    (v4(169, 254, 0, 0, 16), Blocked::LinkLocal),
    (v4(172, 16, 0, 0, 12), Blocked::Private),
    (v4(192, 0, 0, 0, 24), Blocked::Reserved),
    (v4(192, 0, 2, 0, 24), Blocked::Documentation),
    (v4(192, 88, 99, 0, 24), Blocked::Reserved),
    (v4(192, 168, 0, 0, 16), Blocked::Private),
    (v4(198, 18, 0, 0, 15), Blocked::Benchmarking),
    (v4(198, 51, 100, 0, 24), Blocked::Documentation),
    (v4(203, 0, 113, 0, 24), Blocked::Documentation),
    (v4(224, 0, 0, 0, 4), Blocked::Multicast),
    (v4(255, 255, 255, 255, 32), Blocked::Broadcast),
    (v4(240, 0, 0, 0, 4), Blocked::Reserved),
];

const fn v6(segs: [u16; 8], len: u8) -> (Ipv6Addr, u8) {
    let [a, b, c, d, e, f, g, h] = segs;
    (Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// IPv6 ranges that embed an IPv4 address: the embedded one decides.
enum Embedded {
    /// `::ffff:a.b.c.d` (IPv4-mapped) and `64:ff9b::a.b.c.d` (NAT64): low 32 bits.
    Low32,
    /// `2002:AABB:CCDD::/48` (6to4): bits 16..48.
    SixToFour,
}

const V6_EMBEDDING: &[((Ipv6Addr, u8), Embedded)] = &[
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), Embedded::Low32),
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), Embedded::Low32),
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), Embedded::SixToFour),
];

/// Global unicast: the only IPv6 space a webhook may reach (RFC 4291; IANA
/// has allocated nothing for unicast outside it).
const V6_GLOBAL_UNICAST: (Ipv6Addr, u8) = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

// Outside 2000::/3, named where a better reason than "non-global" exists.
const V6_OUTSIDE: &[((Ipv6Addr, u8), Blocked)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Blocked::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Blocked::Loopback),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Blocked::UniqueLocal),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Blocked::LinkLocal),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Blocked::Multicast),
];

// IANA IPv6 Special-Purpose Address Registry entries inside 2000::/3 that are
// not globally reachable, or not meant as a destination. 6to4 (2002::/16) is
// judged by its embedded IPv4 address above.
const V6_RANGES: &[((Ipv6Addr, u8), Blocked)] = &[
    // Teredo; tunnels to an IPv4 address of its own (RFC 4380).
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), Blocked::Teredo),
    (
        v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48),
        Blocked::Benchmarking,
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Blocked::Documentation,
    ),
    // The rest of the IETF protocol assignments: ORCHID (2001:10::/28) and
    // ORCHIDv2 (2001:20::/28, identifiers, not locators), AMT, AS112 and the
    // anycast services (2001:1::/32): none of them is a webhook receiver.
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Blocked::Reserved),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        Blocked::Documentation,
    ),
];

fn in_v4(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    Ipv4Net::new(net, len).is_ok_and(|n| n.contains(&ip))
}

fn in_v6(ip: Ipv6Addr, (net, len): (Ipv6Addr, u8)) -> bool {
    Ipv6Net::new(net, len).is_ok_and(|n| n.contains(&ip))
}

/// `Ok(())` for a public unicast address, else why it is blocked.
pub fn check(ip: IpAddr) -> Result<(), Blocked> {
    match ip {
        IpAddr::V4(ip) => check_v4(ip),
        IpAddr::V6(ip) => check_v6(ip),
    }
}

fn check_v4(ip: Ipv4Addr) -> Result<(), Blocked> {
    match V4_RANGES.iter().find(|(net, _)| in_v4(ip, *net)) {
        Some((_, why)) => Err(*why),
        None => Ok(()),
    }
}

fn check_v6(ip: Ipv6Addr) -> Result<(), Blocked> {
    if let Some((_, how)) = V6_EMBEDDING.iter().find(|(net, _)| in_v6(ip, *net)) {
        let bits = u128::from(ip);
        let inner = match how {
            Embedded::Low32 => bits as u32,
            Embedded::SixToFour => (bits >> 80) as u32,
        };
        return check_v4(Ipv4Addr::from(inner));
    }
    if !in_v6(ip, V6_GLOBAL_UNICAST) {
        return Err(V6_OUTSIDE
            .iter()
            .find(|(net, _)| in_v6(ip, *net))
            .map_or(Blocked::NotGlobalUnicast, |(_, why)| *why));
    }
    match V6_RANGES.iter().find(|(net, _)| in_v6(ip, *net)) {
        Some((_, why)) => Err(*why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> Option<Blocked> {
        check(s.parse().unwrap()).err()
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2a00:1450:4001:81c::200e",
            "3ffe::1",
            "2001:200::1",
            "2620:4f:8000::1",
        ] {
            assert_eq!(blocked(s), None, "{s}");
        }
    }

    #[test]
    fn special_ranges_are_blocked() {
        let cases = [
            ("127.0.0.1", Blocked::Loopback),
            ("127.255.0.9", Blocked::Loopback),
            ("10.1.2.3", Blocked::Private),
            ("172.16.0.1", Blocked::Private),
            ("172.31.255.255", Blocked::Private),
            ("192.168.1.1", Blocked::Private),
            ("100.64.0.1", Blocked::SharedCgnat),
            ("169.254.169.254", Blocked::LinkLocal),
            ("0.0.0.0", Blocked::Unspecified),
            ("224.0.0.1", Blocked::Multicast),
            ("255.255.255.255", Blocked::Broadcast),
            ("192.0.2.10", Blocked::Documentation),
            ("198.51.100.1", Blocked::Documentation),
            ("203.0.113.7", Blocked::Documentation),
            ("198.18.0.1", Blocked::Benchmarking),
            ("240.0.0.1", Blocked::Reserved),
            ("::", Blocked::Unspecified),
            ("::1", Blocked::Loopback),
            ("fc00::1", Blocked::UniqueLocal),
            ("fd12:3456::1", Blocked::UniqueLocal),
            ("fe80::1", Blocked::LinkLocal),
            ("ff02::1", Blocked::Multicast),
            ("2001:db8::1", Blocked::Documentation),
            ("::ffff:127.0.0.1", Blocked::Loopback),
            ("::ffff:10.0.0.1", Blocked::Private),
            ("::ffff:169.254.169.254", Blocked::LinkLocal),
            ("64:ff9b::7f00:1", Blocked::Loopback),
            ("64:ff9b::a9fe:a9fe", Blocked::LinkLocal),
            ("64:ff9b:1::1", Blocked::NotGlobalUnicast),
            ("2002:7f00:1::", Blocked::Loopback),
            ("2002:c0a8:101::1", Blocked::Private),
            ("::127.0.0.1", Blocked::NotGlobalUnicast),
            ("::8.8.8.8", Blocked::NotGlobalUnicast),
            // IPv4-translated (::ffff:0:0:0/96), not IPv4-mapped.
            ("::ffff:0:7f00:1", Blocked::NotGlobalUnicast),
            ("::ffff:0:808:808", Blocked::NotGlobalUnicast),
            ("64:ff9b:1::808:808", Blocked::NotGlobalUnicast),
            ("100::1", Blocked::NotGlobalUnicast),
            ("100:0:0:1::1", Blocked::NotGlobalUnicast),
            ("5f00::1", Blocked::NotGlobalUnicast),
            ("4000::1", Blocked::NotGlobalUnicast),
            ("1::1", Blocked::NotGlobalUnicast),
            ("fec0::1", Blocked::NotGlobalUnicast),
            ("2001::1", Blocked::Teredo),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Blocked::Teredo),
            ("2001:2::1", Blocked::Benchmarking),
            ("2001:10::1", Blocked::Reserved),
            ("2001:20::1", Blocked::Reserved),
            ("2001:1::1", Blocked::Reserved),
            ("2001:3::1", Blocked::Reserved),
            ("3fff::1", Blocked::Documentation),
            ("2002:a00:1::1", Blocked::Private),
            ("2002:0:0::1", Blocked::Unspecified),
        ];
        for (s, want) in cases {
            assert_eq!(blocked(s), Some(want), "{s}");
        }
    }
}
