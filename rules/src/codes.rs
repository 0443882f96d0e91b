//! The codes of postbox's errors: one stable, machine-readable name per
//! rule, the same from SQL, Rust and the HTTP API. This list is the only
//! one; docs/errors.md shows it and a test keeps the two, the SQL files and
//! the portal's words in step (rules/tests/codes.rs).
//!
//! Every postbox error carries its code in its DETAIL, as one line of JSON
//! written by [`detail`] (through `postbox._raise` from PL/pgSQL and
//! `raise` in the extension):
//!
//! ```text
//! {"code":"header_name_reserved","field":"headers","item":"Content-Type"}
//! ```
//!
//! - `code`: always; one of [`Code`].
//! - `field`: the argument the rule is about (as the SQL function names it),
//!   when it is about one.
//! - `item`: for a rule about one element of that argument, the element: a
//!   header's name, an event type, an option's or a column's name. Shown as
//!   messages show values ([`crate::error::shown`]), never a secret.
//!
//! The SQLSTATE stays what it was ([`Code::sqlstate`]: 22023 for nearly all),
//! and the message stays for people; clients decide on the code.
//!
//! The JSON is the DETAIL's first line: pgrx appends a Rust backtrace to an
//! error that passes through Rust on its way up (a trigger's SPI call) when
//! the server runs with `RUST_BACKTRACE` set, on the lines after it.

use serde_json::{Map, Value};

macro_rules! codes {
    ($( #[doc = $about:literal] $variant:ident = $name:literal $(@ $state:literal)?, )*) => {
        /// A postbox error code. Each has one line of documentation: what
        /// broke. See the module's documentation for how codes are carried.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( #[doc = $about] $variant, )*
        }

        impl Code {
            /// Every code, in the documented order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code as it is written in DETAIL, SQL and the API's `rule`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The one line that documents it.
            pub fn about(self) -> &'static str {
                match self { $(Code::$variant => $about.trim(),)* }
            }

            /// The SQLSTATE an error with this code is raised with.
            pub fn sqlstate(self) -> &'static str {
                match self { $(Code::$variant => codes!(@state $($state)?),)* }
            }
        }
    };
    (@state) => { "22023" };
    (@state $state:literal) => { $state };
}

codes! {
    // Arguments in general; `field` names the argument.
    /// An argument that must be given is NULL.
    Required = "required",
    /// A text is NULL, empty, or longer than its limit.
    LengthOutOfRange = "length_out_of_range",
    /// A number or an interval is NULL or outside its range.
    OutOfRange = "out_of_range",
    /// A JSON value nests 32 levels deep or deeper.
    JsonTooDeep = "json_too_deep",
    /// A text or JSON value holds the NUL character, which PostgreSQL cannot store (from the API).
    TextHasNul = "text_has_nul",
    /// PostgreSQL refused a value for its type or range; the value is not shown (from the API).
    ValueRefused = "value_refused",

    // Tenants.
    /// The tenant's endpoint limit is 0: webhooks are not available to it.
    TenantSuspended = "tenant_suspended",
    /// The tenant already has as many endpoints as its limit allows.
    TenantEndpointLimit = "tenant_endpoint_limit",
    /// The tenant is the operator tenant (postbox.operator_tenant()), which receives only postbox's own events.
    TenantReserved = "tenant_reserved",

    // Webhook URLs; field `url`.
    /// The webhook URL is not a valid absolute URL with a host.
    UrlInvalid = "url_invalid",
    /// The webhook URL is longer than 2048 bytes, as given or once normalized.
    UrlTooLong = "url_too_long",
    /// The webhook URL does not use https (or http, where insecure URLs are allowed).
    UrlNotHttps = "url_not_https",
    /// The webhook URL holds a user name or a password.
    UrlHasCredentials = "url_has_credentials",
    /// The webhook URL holds a fragment (#...).
    UrlHasFragment = "url_has_fragment",
    /// The webhook URL's port is 0, or a system port other than 443 (and 80 where insecure URLs are allowed).
    UrlPortNotAllowed = "url_port_not_allowed",
    /// The webhook URL's host is localhost, has no dot, or is a private, loopback or other non-public address.
    UrlHostNotPublic = "url_host_not_public",

    // Custom headers; field `headers` (or `signature_header`), item the header's name.
    /// The headers are not a JSON object of name to value.
    HeadersNotObject = "headers_not_object",
    /// The headers are JSON that jsonb cannot hold (such as a \u0000 escape).
    HeadersInvalidJson = "headers_invalid_json",
    /// An endpoint would have more than 20 custom headers.
    HeadersTooMany = "headers_too_many",
    /// A header name is empty.
    HeaderNameEmpty = "header_name_empty",
    /// A header name is longer than 256 bytes.
    HeaderNameTooLong = "header_name_too_long",
    /// A header name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~).
    HeaderNameInvalid = "header_name_invalid",
    /// A header name is one postbox or HTTP sets (or the endpoint's signature header).
    HeaderNameReserved = "header_name_reserved",
    /// A header name is given twice, ignoring case.
    HeaderNameDuplicate = "header_name_duplicate",
    /// A header value is not a JSON string.
    HeaderValueNotString = "header_value_not_string",
    /// A header value is empty or only spaces and tabs.
    HeaderValueEmpty = "header_value_empty",
    /// A header value is longer than 4096 bytes.
    HeaderValueTooLong = "header_value_too_long",
    /// A header value holds a character other than visible ASCII, space and tab.
    HeaderValueInvalid = "header_value_invalid",

    // Signatures and secrets.
    /// The signature style is not standard, sha256-hex or hex.
    SignatureStyleUnknown = "signature_style_unknown",
    /// A signature header was given for the standard style, whose headers are fixed.
    SignatureHeaderNotApplicable = "signature_header_not_applicable",
    /// A caller's own secret is not of the form its signature style needs.
    SecretInvalid = "secret_invalid",
    /// An endpoint has no valid signing secret to sign a delivery with (from the worker).
    SecretMissing = "secret_missing",

    // Event types, filters and data.
    /// An event type is not two or more dot-separated segments of a-z, 0-9 and _.
    EventTypeInvalid = "event_type_invalid",
    /// An event type is longer than 200 bytes.
    EventTypeTooLong = "event_type_too_long",
    /// An event type is not in the catalog (create it with postbox.create_event_type first).
    EventTypeUnknown = "event_type_unknown",
    /// An event type is one of postbox's own (postbox.*): only postbox sends them.
    EventTypeReserved = "event_type_reserved",
    /// An event type's schema is not a JSON Schema (an object or a boolean).
    EventTypeSchemaInvalid = "event_type_schema_invalid",
    /// An event_types pattern is not '*' or name segments followed by '.*'.
    EventFilterInvalid = "event_filter_invalid",
    /// event_types is empty.
    EventTypesEmpty = "event_types_empty",
    /// event_types holds more than 100 entries.
    EventTypesTooMany = "event_types_too_many",
    /// An event's data is not a JSON object, or a row cannot be sent as event data.
    EventDataInvalid = "event_data_invalid",
    /// An event's data (or an attached row) is larger than postbox.max_payload_bytes.
    EventDataTooLarge = "event_data_too_large",

    // Endpoint settings.
    /// The options are not a JSON object.
    OptionsNotObject = "options_not_object",
    /// The options hold a key postbox does not know; item the key.
    OptionsUnknownKey = "options_unknown_key",
    /// An option's value is out of its range or of the wrong type; item the key.
    OptionsValueInvalid = "options_value_invalid",
    /// The envelope is not postbox, standard or flat.
    EnvelopeUnknown = "envelope_unknown",
    /// create_endpoint's config has an unknown key or a value of the wrong JSON type; item the key.
    ConfigInvalid = "config_invalid",

    // Unknown ids (another tenant's id is unknown too).
    /// No endpoint of this tenant has this id.
    EndpointNotFound = "endpoint_not_found",
    /// No delivery of this tenant has this id (for a retry: no failed or cancelled one).
    DeliveryNotFound = "delivery_not_found",
    /// No api key of this tenant has this id.
    ApiKeyNotFound = "api_key_not_found",

    // Deliveries.
    /// A delivery that is still pending cannot be retried.
    DeliveryNotRetryable = "delivery_not_retryable",
    /// The delivery's endpoint was deleted.
    DeliveryEndpointDeleted = "delivery_endpoint_deleted",
    /// A replay's since is after its until, or either is NULL.
    ReplayRangeInvalid = "replay_range_invalid",

    // Attaching tables.
    /// A resource name is not a valid event type prefix, or ends in .created, .updated or .deleted.
    ResourceInvalid = "resource_invalid",
    /// attach's table, tenant column or columns do not name what they must; item the column.
    AttachInvalid = "attach_invalid",
    /// An emit trigger was made by hand in a form postbox.attach does not make.
    TriggerMisused = "trigger_misused",

    // API keys and portal sessions.
    /// A role is not one of those the call takes.
    RoleUnknown = "role_unknown",
    /// An operator key was given a tenant or a session.
    OperatorKeyScoped = "operator_key_scoped",
    /// The tenant has as many active api keys as it may (revoke one first).
    ApiKeyLimit = "api_key_limit",
    /// The tenant has as many api keys as it may keep, revoked ones included.
    ApiKeysKeptLimit = "api_keys_kept_limit",
    /// A revoked api key cannot be rotated.
    ApiKeyRevoked = "api_key_revoked",
    /// This portal session may not manage api keys.
    SessionMayNotManageKeys = "session_may_not_manage_keys" @ "42501",
    /// manage_keys is true for a session that is not an admin's.
    ManageKeysInvalid = "manage_keys_invalid",
    /// A hash is not a SHA-256 (32 bytes).
    HashInvalid = "hash_invalid",

    // Idempotency.
    /// An Idempotency-Key is not 1 to 255 visible ASCII characters.
    IdempotencyKeyInvalid = "idempotency_key_invalid",
    /// An Idempotency-Key was used for another request within the idempotency_keys window.
    IdempotencyKeyReused = "idempotency_key_reused",
    /// Only a successful response (status 200 to 299, with a body) is stored.
    IdempotencyResponseInvalid = "idempotency_response_invalid",
    /// No request with this Idempotency-Key is under way.
    IdempotencyRequestUnknown = "idempotency_request_unknown",

    // Workers.
    /// Another running worker uses this worker_id.
    WorkerIdInUse = "worker_id_in_use" @ "55006",

    // Citus (postbox.citus_replicate_config).
    /// Citus is not installed here, or this is not its registered coordinator (citus_set_coordinator_host).
    CitusNotCoordinator = "citus_not_coordinator" @ "55000",
    /// conninfo holds a password, which a failed CREATE SUBSCRIPTION would write to a node's log (use a .pgpass file on each worker node).
    CitusConninfoHasPassword = "citus_conninfo_has_password",
    /// A worker node already holds postbox configuration of its own; item the node.
    CitusNodeHasConfiguration = "citus_node_has_configuration" @ "55000",
    /// A worker node could not be asked, could not subscribe to the configuration, or did not copy it within 60 seconds; item the node.
    CitusNodeFailed = "citus_node_failed" @ "55000",

    // postbox itself.
    /// postbox failed where it should not have (a bug, or an unknown code given to postbox._raise).
    Internal = "internal" @ "XX000",
}

impl Code {
    /// The code named `s`, if there is one.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The DETAIL of a postbox error: one line of JSON, `code` first, then
/// `field` and `item` where given. The only writer of the format.
pub fn detail(code: Code, field: Option<&str>, item: Option<&str>) -> String {
    let mut m = Map::new();
    m.insert("code".into(), code.as_str().into());
    if let Some(f) = field {
        m.insert("field".into(), f.into());
    }
    if let Some(i) = item {
        m.insert("item".into(), crate::error::shown(i).into_owned().into());
    }
    Value::Object(m).to_string()
}

/// A DETAIL read back: what [`detail`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub code: Code,
    pub field: Option<String>,
    pub item: Option<String>,
}

impl Detail {
    /// Reads a DETAIL's first line; `None` unless [`detail`] wrote it (an
    /// error that is not postbox's, or a code this build does not know).
    pub fn parse(detail: &str) -> Option<Detail> {
        let line = detail.lines().next()?;
        let Value::Object(m) = serde_json::from_str(line).ok()? else {
            return None;
        };
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(String::from);
        Some(Detail {
            code: Code::parse(m.get("code")?.as_str()?)?,
            field: text("field"),
            item: text("item"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_documented_in_one_line() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert_eq!(Code::parse(s), Some(*c));
            let about = c.about();
            assert!(!about.is_empty() && !about.contains('\n'), "{s}: {about:?}");
            assert_eq!(c.sqlstate().len(), 5, "{s}");
        }
        assert_eq!(Code::parse("no_such_code"), None);
    }

    #[test]
    fn detail_is_one_line_of_json_and_reads_back() {
        let d = detail(
            Code::HeaderNameReserved,
            Some("headers"),
            Some("Content-Type"),
        );
        assert_eq!(
            d,
            r#"{"code":"header_name_reserved","field":"headers","item":"Content-Type"}"#
        );
        assert_eq!(
            Detail::parse(&d),
            Some(Detail {
                code: Code::HeaderNameReserved,
                field: Some("headers".into()),
                item: Some("Content-Type".into()),
            })
        );
        assert_eq!(detail(Code::Required, None, None), r#"{"code":"required"}"#);
        let odd = detail(Code::HeaderNameInvalid, Some("headers"), Some("a\"b\nc"));
        assert!(!odd.contains('\n'), "{odd}");
        assert_eq!(
            Detail::parse(&odd).unwrap().item.as_deref(),
            Some("a\"b\nc")
        );
        let long = detail(Code::EventTypeTooLong, None, Some(&"a".repeat(1000)));
        assert!(long.len() < 200, "items are shown as messages show values");
        let with_backtrace = format!("{d}\n   0: std::backtrace::Backtrace::create");
        assert_eq!(Detail::parse(&with_backtrace), Detail::parse(&d));
        for other in [
            "",
            "Key (id)=(1) already exists.",
            "{}",
            r#"{"code":"nope"}"#,
            "[1]",
        ] {
            assert_eq!(Detail::parse(other), None, "{other}");
        }
    }
}
