//! The one error type for every rule in this crate.

use std::fmt;

/// A broken rule. Displays as `postbox: <rule>: <value>`, e.g.
/// `postbox: webhook URL must use https: http://example.com/hook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The rule, phrased as what must hold.
    pub rule: String,
    /// The offending value, shown as given (secrets are never shown).
    pub value: String,
}

impl RuleError {
    pub fn new(rule: impl Into<String>, value: impl fmt::Display) -> Self {
        Self {
            rule: rule.into(),
            value: value.to_string(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postbox: {}: {}", self.rule, self.value)
    }
}

impl std::error::Error for RuleError {}
