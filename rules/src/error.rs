//! The one error type for every rule in this crate.

use crate::codes::Code;
use std::fmt;

/// A broken rule. Displays as `postbox: <rule>: <value>`, e.g.
/// `postbox: webhook URL must use https: http://example.com/hook`; the
/// [`Code`] says the same for machines, with the field and item it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Which rule, for machines (see [`crate::codes`]).
    pub code: Code,
    /// The argument the rule is about, where it is about one (`url`,
    /// `headers`, `event_types`, ...).
    pub field: Option<&'static str>,
    /// For a rule about one element of that argument, the element: a
    /// header's name, an event type, an option's key.
    pub item: Option<String>,
    /// The rule, phrased as what must hold.
    pub rule: String,
    /// The offending value, shown as given (secrets are never shown).
    pub value: String,
}

impl RuleError {
    pub fn new(code: Code, rule: impl Into<String>, value: impl fmt::Display) -> Self {
        Self {
            code,
            field: None,
            item: None,
            rule: rule.into(),
            value: value.to_string(),
        }
    }

    /// The same error, about the argument `field`.
    pub fn in_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// The same error, about the element `item` of its field.
    pub fn with_item(mut self, item: impl Into<String>) -> Self {
        self.item = Some(item.into());
        self
    }

    /// Its DETAIL line ([`crate::codes::detail`]).
    pub fn detail(&self) -> String {
        crate::codes::detail(self.code, self.field, self.item.as_deref())
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postbox: {}: {}", self.rule, shown(&self.value))
    }
}

/// Values up to this many characters are shown whole in messages.
pub const SHOWN_WHOLE: usize = 100;
/// Longer ones by their first this many characters and their size.
pub const SHOWN_START: usize = 40;

/// A value as a message shows it: whole up to [`SHOWN_WHOLE`] characters,
/// else its start and its size, so that a message (and a log line) stays
/// short whatever was passed. The SQL side uses it too (`postbox._shown`).
pub fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    if value.chars().count() <= SHOWN_WHOLE {
        return value.into();
    }
    let start: String = value.chars().take(SHOWN_START).collect();
    format!("{start}... ({} bytes)", value.len()).into()
}

impl std::error::Error for RuleError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_shown_by_their_start_and_size() {
        assert_eq!(shown("short"), "short");
        let whole = "é".repeat(SHOWN_WHOLE);
        assert_eq!(shown(&whole), whole, "counted in characters, not bytes");
        let long = "a".repeat(1 << 20);
        assert_eq!(
            shown(&long),
            format!("{}... (1048576 bytes)", "a".repeat(SHOWN_START))
        );
        let e = RuleError::new(
            Code::EventTypeTooLong,
            "event type names are at most 255 bytes",
            &long,
        );
        assert!(e.to_string().len() < 200, "{e}");
    }
}
