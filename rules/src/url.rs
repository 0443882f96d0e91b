//! Webhook URL policy.
//!
//! URLs are parsed the way a browser parses them (WHATWG, via the `url` crate),
//! so `https://2130706433/` and `https://0x7f.1/` are seen as the 127.0.0.1
//! they really are before the host is checked.

use crate::codes::Code;
use crate::error::RuleError;
use crate::ip;
use url::{Host, Url};

/// The longest URL accepted, in bytes, before and after normalization.
pub const MAX_URL_LEN: usize = 2048;

/// Ports below this are system services (SMTP, SSH, DNS, ...): a webhook may
/// use only 443 among them, and 80 when insecure URLs are allowed, so an
/// endpoint cannot be pointed at a mail or admin service of a public host.
pub const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// Checks a webhook URL and returns it normalized.
///
/// `allow_insecure` is the development switch (`postbox.allow_insecure_urls`):
/// it admits `http` and private, loopback and dot-less hosts. Credentials,
/// fragments and over-long URLs are refused either way.
pub fn validate(input: &str, allow_insecure: bool) -> Result<Url, RuleError> {
    check(input, allow_insecure).map_err(|e| e.in_field("url"))
}

fn check(input: &str, allow_insecure: bool) -> Result<Url, RuleError> {
    // Every message shows the URL without its user info: a password in a
    // refused URL must reach neither the caller's error nor any log.
    let shown = without_userinfo(input);
    let fail = |code: Code, rule: &str| RuleError::new(code, rule, &shown);
    if input.len() > MAX_URL_LEN {
        return Err(RuleError::new(
            Code::UrlTooLong,
            format!("webhook URL must be at most {MAX_URL_LEN} bytes"),
            format!("{}... ({} bytes)", truncate(&shown, 64), input.len()),
        ));
    }
    let url = Url::parse(input).map_err(|e| {
        fail(
            Code::UrlInvalid,
            &format!("webhook URL must be a valid absolute URL ({e})"),
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure => {}
        _ if allow_insecure => {
            return Err(fail(
                Code::UrlNotHttps,
                "webhook URL must use http or https",
            ))
        }
        _ => return Err(fail(Code::UrlNotHttps, "webhook URL must use https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail(
            Code::UrlHasCredentials,
            "webhook URL must not contain a user name or password",
        ));
    }
    if url.fragment().is_some() {
        return Err(fail(
            Code::UrlHasFragment,
            "webhook URL must not contain a fragment",
        ));
    }
    // `port()` is None for the scheme's default (443, or 80 for http).
    match url.port() {
        Some(0) => {
            return Err(fail(
                Code::UrlPortNotAllowed,
                "webhook URL port must be between 1 and 65535",
            ))
        }
        Some(p) if p < FIRST_UNPRIVILEGED_PORT && p != 443 && !(allow_insecure && p == 80) => {
            return Err(fail(
                Code::UrlPortNotAllowed,
                if allow_insecure {
                    "webhook URL port must be 80, 443 or 1024 and above"
                } else {
                    "webhook URL port must be 443 or 1024 and above"
                },
            ))
        }
        _ => {}
    }
    if url.as_str().len() > MAX_URL_LEN {
        return Err(RuleError::new(
            Code::UrlTooLong,
            format!("webhook URL must be at most {MAX_URL_LEN} bytes once normalized"),
            truncate(&shown, 64),
        ));
    }
    match url.host() {
        None => return Err(fail(Code::UrlInvalid, "webhook URL must have a host")),
        Some(Host::Domain(name)) => {
            if !allow_insecure {
                check_name(name).map_err(|rule| fail(Code::UrlHostNotPublic, rule))?;
            }
        }
        Some(Host::Ipv4(addr)) => {
            if !allow_insecure {
                check_ip(addr.into()).map_err(|rule| fail(Code::UrlHostNotPublic, &rule))?;
            }
        }
        Some(Host::Ipv6(addr)) => {
            if !allow_insecure {
                check_ip(addr.into()).map_err(|rule| fail(Code::UrlHostNotPublic, &rule))?;
            }
        }
    }
    Ok(url)
}

/// What messages show of a URL: `input` with whatever stands before an `@`
/// in its authority replaced by [`HIDDEN_USERINFO`]. Worked on the text, not
/// a parse, since the URLs that fail to parse are shown too. Conservative:
/// everything from the scheme's end (or the start) up to the last `@` is
/// hidden, so no form of user info (`https:u:p@h`, `//u:p@h`, `u:p@h`)
/// survives it.
pub fn without_userinfo(input: &str) -> std::borrow::Cow<'_, str> {
    let Some(at) = input.rfind('@') else {
        return input.into();
    };
    let start = match input[..at].find("://") {
        Some(i) => i + 3,
        None => match input[..at].find(':') {
            // A scheme is letters, digits, +, - and . before the first colon.
            Some(i)
                if i > 0
                    && input[..i]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                i + 1
            }
            _ => 0,
        },
    };
    format!("{}{HIDDEN_USERINFO}{}", &input[..start], &input[at..]).into()
}

/// What stands for a URL's user info in messages.
pub const HIDDEN_USERINFO: &str = "(hidden)";

fn check_name(name: &str) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name == "localhost" || name.ends_with(".localhost") {
        return Err("webhook URL host must not be localhost");
    }
    if !name.contains('.') {
        return Err("webhook URL host must be a fully qualified domain name (it has no dot)");
    }
    Ok(())
}

fn check_ip(addr: std::net::IpAddr) -> Result<(), String> {
    ip::check(addr).map_err(|why| {
        format!(
            "webhook URL host must be a public address, not a {} one",
            why.describe()
        )
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        validate(s, false)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    fn err(s: &str) -> String {
        match validate(s, false) {
            Ok(u) => panic!("{s} was accepted as {u}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_and_normalizes_public_https() {
        assert_eq!(ok("https://example.com/hook"), "https://example.com/hook");
        assert_eq!(
            ok("HTTPS://Example.COM:8443/a?b=c"),
            "https://example.com:8443/a?b=c"
        );
        assert_eq!(ok("https://example.com"), "https://example.com/");
        assert_eq!(ok("https://93.184.216.34/x"), "https://93.184.216.34/x");
        assert_eq!(
            ok("https://[2606:4700:4700::1111]/"),
            "https://[2606:4700:4700::1111]/"
        );
        assert_eq!(
            ok("  https://example.com/hook  "),
            "https://example.com/hook"
        );
    }

    #[test]
    fn refuses_non_https() {
        assert_eq!(
            err("http://example.com/hook"),
            "postbox: webhook URL must use https: http://example.com/hook"
        );
        assert!(err("ftp://example.com/").contains("must use https"));
        assert!(err("javascript:alert(1)").contains("must use https"));
    }

    #[test]
    fn refuses_encoded_loopback_forms() {
        for s in [
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::1]/",
        ] {
            let e = err(s);
            assert!(e.contains("loopback"), "{s}: {e}");
            assert!(e.ends_with(s), "{s}: {e}");
        }
    }

    #[test]
    fn refuses_private_and_metadata_hosts() {
        assert!(err("https://169.254.169.254/latest/meta-data").contains("link-local"));
        assert!(err("https://10.0.0.1/").contains("private"));
        assert!(err("https://192.168.0.10/").contains("private"));
        assert!(err("https://100.64.1.1/").contains("carrier-grade NAT"));
        assert!(err("https://[fd00::1]/").contains("unique local"));
        assert!(err("https://[fe80::1]/").contains("link-local"));
        assert!(err("https://0.0.0.0/").contains("unspecified"));
        assert!(err("https://[64:ff9b::7f00:1]/").contains("loopback"));
    }

    #[test]
    fn refuses_local_names() {
        assert!(err("https://localhost/").contains("localhost"));
        assert!(err("https://LOCALHOST./").contains("localhost"));
        assert!(err("https://api.localhost/").contains("localhost"));
        assert!(err("https://intranet/").contains("no dot"));
    }

    #[test]
    fn refuses_credentials_fragments_and_bad_ports() {
        assert_eq!(
            err("https://user:pw@example.com/"),
            "postbox: webhook URL must not contain a user name or password: https://(hidden)@example.com/"
        );
        assert!(err("https://user@example.com/").contains("user name"));
        assert!(err("https://example.com/#frag").contains("fragment"));
        assert!(err("https://example.com/#").contains("fragment"));
        assert!(err("https://example.com:0/").contains("port"));
        assert!(err("https://example.com:70000/").contains("valid absolute URL"));
        assert!(err("not a url").contains("valid absolute URL"));
    }

    #[test]
    fn no_message_shows_user_info() {
        // Each fails a different rule first; none may show the password.
        for s in [
            "https://user:s3cr3t-pw@example.com/",
            "http://user:s3cr3t-pw@example.com/",
            "ftp://user:s3cr3t-pw@example.com/",
            "https://user:s3cr3t-pw@example.com:70000/",
            "https://user:s3cr3t-pw@127.0.0.1/",
            "https:user:s3cr3t-pw@example.com/",
            "https:/user:s3cr3t-pw@example.com/",
            "//user:s3cr3t-pw@example.com/",
            "user:s3cr3t-pw@example.com",
            "https://a@b:s3cr3t-pw@example.com/",
            "https://s3cr3t-pw@example.com/#x",
        ] {
            for insecure in [false, true] {
                let e = validate(s, insecure).unwrap_err().to_string();
                assert!(!e.contains("s3cr3t"), "{s}: {e}");
            }
        }
        let long = format!(
            "https://u:s3cr3t-pw@example.com/{}",
            "a".repeat(MAX_URL_LEN)
        );
        assert!(!err(&long).contains("s3cr3t"));
        assert_eq!(
            without_userinfo("https://example.com/a@b"),
            "https://(hidden)@b"
        );
        assert_eq!(
            without_userinfo("https://example.com/"),
            "https://example.com/"
        );
    }

    #[test]
    fn refuses_system_ports_but_443() {
        for p in [1, 22, 25, 53, 80, 110, 389, 587, 636, 993, 1023] {
            let s = format!("https://example.com:{p}/hook");
            assert_eq!(
                err(&s),
                format!("postbox: webhook URL port must be 443 or 1024 and above: {s}")
            );
        }
        assert_eq!(ok("https://example.com:443/x"), "https://example.com/x");
        assert_eq!(
            ok("https://example.com:1024/x"),
            "https://example.com:1024/x"
        );
        assert_eq!(
            ok("https://example.com:65535/x"),
            "https://example.com:65535/x"
        );
        // Insecure mode adds 80 (for http and https alike), nothing else.
        for s in [
            "http://127.0.0.1:80/",
            "https://127.0.0.1:80/",
            "http://127.0.0.1:443/",
            "http://localhost/",
        ] {
            validate(s, true).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        for s in [
            "http://127.0.0.1:22/",
            "http://127.0.0.1:25/",
            "http://127.0.0.1:1/",
        ] {
            assert!(validate(s, true).is_err(), "{s}");
        }
        assert!(validate("http://127.0.0.1:8/", true)
            .unwrap_err()
            .to_string()
            .contains("must be 80, 443 or 1024 and above"));
    }

    #[test]
    fn refuses_overlong_urls() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(err(&long).contains("at most 2048 bytes"));
        let max = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN - 20));
        assert_eq!(max.len(), MAX_URL_LEN);
        ok(&max);
    }

    #[test]
    fn insecure_mode_admits_http_and_private_hosts_only() {
        for s in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/x",
            "https://10.0.0.1/",
            "http://receiver/",
        ] {
            validate(s, true).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        assert!(validate("https://u:p@localhost/", true).is_err());
        assert!(validate("http://localhost/#x", true).is_err());
        assert!(validate("ftp://localhost/", true)
            .unwrap_err()
            .to_string()
            .contains("http or https"));
    }
}
