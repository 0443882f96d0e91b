//! Event names, endpoint filters, and how a filter matches a name.
//!
//! A name is two or more dot-separated segments of `[a-z0-9_]`. A filter is
//! `*`, a prefix pattern `a.*` / `a.b.*` (everything starting with `a.`), or an
//! exact name. Matching is reduced to set overlap: an event's *match keys* are
//! every filter that would match it, so the database can match with a plain
//! array overlap (`&&`) at expansion instead of calling a function.

use crate::codes::Code;
use crate::error::RuleError;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_FILTERS: usize = 100;

/// `postbox.max_payload_bytes`, the largest event data in bytes of JSON
/// text: its default and its range. The compiled extension's setting and
/// the SQL flavour's settings table (filled in by scripts/sql-flavour.py)
/// both take them from here.
pub const PAYLOAD_BYTES_DEFAULT: i32 = 262_144;
pub const PAYLOAD_BYTES_MIN: i32 = 1024;
pub const PAYLOAD_BYTES_MAX: i32 = 67_108_864;

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

const NAME_RULE: &str =
    "event type must be two or more dot-separated segments of lowercase letters, digits and underscores";

/// Checks an event type name such as `recording.processing.completed`.
/// Its errors are about the field `event_type`.
pub fn validate_name(name: &str) -> Result<(), RuleError> {
    check_name(name).map_err(|e| e.in_field("event_type"))
}

fn check_name(name: &str) -> Result<(), RuleError> {
    if name.len() > MAX_NAME_LEN {
        return Err(RuleError::new(
            Code::EventTypeTooLong,
            format!("event type must be at most {MAX_NAME_LEN} bytes"),
            name,
        ));
    }
    let mut n = 0;
    for seg in name.split('.') {
        if !valid_segment(seg) {
            return Err(RuleError::new(Code::EventTypeInvalid, NAME_RULE, name));
        }
        n += 1;
    }
    if n < 2 {
        return Err(RuleError::new(Code::EventTypeInvalid, NAME_RULE, name));
    }
    Ok(())
}

/// One entry of an endpoint's `event_types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    /// `recording.*`: holds `recording.` (with the dot).
    Prefix(String),
    Exact(String),
}

impl Filter {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        if s == "*" {
            return Ok(Filter::All);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            if s.len() <= MAX_NAME_LEN && !prefix.is_empty() && prefix.split('.').all(valid_segment)
            {
                return Ok(Filter::Prefix(format!("{prefix}.")));
            }
            return Err(RuleError::new(
                Code::EventFilterInvalid,
                "event filter pattern must be '*' or valid name segments followed by '.*'",
                s,
            ));
        }
        check_name(s).map(|()| Filter::Exact(s.to_string()))
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Prefix(p) => name.starts_with(p.as_str()),
            Filter::Exact(e) => e == name,
        }
    }
}

/// Every filter string that matches `name`: `*`, each proper prefix with `.*`,
/// and the name itself. `a.b.c` gives `["*", "a.*", "a.b.*", "a.b.c"]`.
pub fn match_keys(name: &str) -> Vec<String> {
    let mut keys = vec!["*".to_string()];
    for (i, _) in name.match_indices('.') {
        keys.push(format!("{}.*", &name[..i]));
    }
    keys.push(name.to_string());
    keys
}

/// Validates an endpoint's filter list against the catalog. Exact names must
/// exist; an unknown one is refused with the closest catalog names. Patterns
/// need not match anything yet. Returns the list without duplicates. Its
/// errors are about the field `event_types`, and name the entry (`item`).
pub fn validate_filters<'a>(
    filters: &[&str],
    catalog: impl Fn(&str) -> bool,
    all_names: impl Fn() -> Vec<&'a str>,
) -> Result<Vec<String>, RuleError> {
    check_filters(filters, catalog, all_names).map_err(|e| e.in_field("event_types"))
}

fn check_filters<'a>(
    filters: &[&str],
    catalog: impl Fn(&str) -> bool,
    all_names: impl Fn() -> Vec<&'a str>,
) -> Result<Vec<String>, RuleError> {
    if filters.is_empty() {
        return Err(RuleError::new(
            Code::EventTypesEmpty,
            "event_types must list at least one event type or pattern ('*' for all)",
            "{}",
        ));
    }
    if filters.len() > MAX_FILTERS {
        return Err(RuleError::new(
            Code::EventTypesTooMany,
            format!("event_types may hold at most {MAX_FILTERS} entries"),
            filters.len(),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(filters.len());
    for f in filters {
        let filter = Filter::parse(f).map_err(|e| e.with_item(*f))?;
        if let Filter::Exact(name) = filter {
            if !catalog(&name) {
                let names = all_names();
                let close = close_names(&name, &names);
                let hint = if close.is_empty() {
                    "create it with postbox.create_event_type first".to_string()
                } else {
                    format!("did you mean {}?", close.join(", "))
                };
                return Err(RuleError::new(
                    Code::EventTypeUnknown,
                    format!("unknown event type ({hint})"),
                    &name,
                )
                .with_item(name));
            }
        }
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    Ok(out)
}

/// Up to three catalog names close to `name`, closest first.
pub fn close_names<'a>(name: &str, catalog: &[&'a str]) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = catalog
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), *c))
        .filter(|(score, c)| *score >= 0.8 || strsim::levenshtein(name, c) <= 3)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_real_catalogs_are_valid() {
        for n in [
            "demo.viewed",
            "demo.event_response_updated",
            "recording.transcription_postprocessed",
            "recording.processing.completed",
            "webhook.test",
            "v2.item_1.created",
        ] {
            validate_name(n).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for n in [
            "demo",
            "",
            ".demo",
            "demo.",
            "demo..viewed",
            "Demo.viewed",
            "demo.viewed-now",
            "demo.*",
            "demo viewed.x",
        ] {
            let e = validate_name(n).unwrap_err().to_string();
            assert!(e.contains("dot-separated segments"), "{n}: {e}");
        }
        assert!(validate_name(&format!("a.{}", "b".repeat(MAX_NAME_LEN))).is_err());
    }

    #[test]
    fn filters_parse_and_match() {
        let all = Filter::parse("*").unwrap();
        let rec = Filter::parse("recording.*").unwrap();
        let rec_proc = Filter::parse("recording.processing.*").unwrap();
        let exact = Filter::parse("recording.processing.completed").unwrap();
        let name = "recording.processing.completed";
        assert!(
            all.matches(name) && rec.matches(name) && rec_proc.matches(name) && exact.matches(name)
        );
        assert!(!rec.matches("recordings.created"));
        assert!(!rec_proc.matches("recording.created"));
        assert!(!Filter::parse("recording.processing.completed.*")
            .unwrap()
            .matches(name));
        for bad in [
            "**",
            "recording*",
            ".*",
            "Recording.*",
            "recording..*",
            "a.*.b",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn match_keys_agree_with_filters() {
        let name = "recording.processing.completed";
        let keys = match_keys(name);
        assert_eq!(keys, ["*", "recording.*", "recording.processing.*", name]);
        // Every key matches, and a filter matches exactly when it is a key.
        for f in [
            "*",
            "recording.*",
            "recording.processing.*",
            name,
            "demo.*",
            "recording.created",
            "recording.processing.completed.*",
        ] {
            assert_eq!(
                Filter::parse(f).unwrap().matches(name),
                keys.iter().any(|k| k == f),
                "{f}"
            );
        }
    }

    #[test]
    fn unknown_exact_names_list_close_ones() {
        let catalog = [
            "recording.created",
            "recording.updated",
            "recording.deleted",
            "demo.viewed",
        ];
        let known = |n: &str| catalog.contains(&n);
        let e = validate_filters(&["recording.creatd"], known, || catalog.to_vec()).unwrap_err();
        assert!(
            e.to_string().contains("did you mean recording.created"),
            "{e}"
        );
        assert!(e.to_string().ends_with(": recording.creatd"));
        let e = validate_filters(&["zzz.qqq"], known, || catalog.to_vec()).unwrap_err();
        assert!(e.to_string().contains("create_event_type"), "{e}");
        assert_eq!(
            validate_filters(
                &["recording.*", "demo.viewed", "demo.viewed", "new.*"],
                known,
                || catalog.to_vec()
            )
            .unwrap(),
            ["recording.*", "demo.viewed", "new.*"]
        );
        assert!(validate_filters(&[], known, || catalog.to_vec()).is_err());
    }
}
