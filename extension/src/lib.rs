//! postbox: signed webhooks straight out of PostgreSQL, the extension.
//!
//! The tables, triggers and most functions are plain SQL and PL/pgSQL in the
//! repository's `sql/` folder. Rust holds only what needs Rust: the shared
//! validation rules (so the worker applies exactly the same ones), secrets
//! from the OS CSPRNG, time-ordered event ids, the two settings, and the
//! statement trigger every attached table's writes run.
//!
//! # Layout
//! - `sql/schema.sql`: roles and tables, with their comments and grants (runs first).
//! - this file: settings, validation and generator functions.
//! - `trigger.rs`: the emit triggers `emit_statement` (INSERT and DELETE
//!   statements) and `emit_row_change` (rows; UPDATE), SECURITY INVOKER.
//! - `owner.rs`: the one privileged step, their write as the owner.
//! - `rowjson.rs`: rows as JSON text, as `row_to_json` writes them, but fast;
//!   and the jsonb check of rows holding `json`.
//! - `sql/endpoints.sql`, `emit.sql`, `delivery.sql`, `queue.sql`, `retention.sql`,
//!   `keys.sql`, `portal.sql`, `views.sql`: the SQL API by concept, each
//!   object with its comment and grants, in that order (see below).
//! - `sql/native.sql`: comments and grants of the Rust functions (runs last).
//! - `tests.rs`: `#[pg_test]`s of the SQL behaviour.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, JsonB, PgSqlErrorCode};
use postbox_rules::{self as rules, Code, RuleError};

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
// The SQL API, by concept, in this order. The first file needs the Rust
// functions that SQL-language bodies call (they are parsed at creation);
// PL/pgSQL bodies are not, so a function they call may come later.
extension_sql_file!(
    "../../sql/endpoints.sql",
    name = "endpoints",
    requires = [
        "schema",
        validate_url,
        validate_headers,
        shown,
        _validate_signature,
        _event_match_keys,
        _validate_filters,
        _close_names,
        _validate_options,
        _generate_secret,
        _generate_api_key,
        _generate_portal_token,
        _api_key_prefix,
        _validate_secret_for,
        _uuid7_floor,
        _event_id,
        _uuid7,
        _max_payload_bytes,
    ]
);
extension_sql_file!(
    "../../sql/emit.sql",
    name = "emit",
    requires = ["endpoints"]
);
extension_sql_file!(
    "../../sql/delivery.sql",
    name = "delivery",
    requires = ["emit"]
);
extension_sql_file!(
    "../../sql/queue.sql",
    name = "queue",
    requires = ["delivery"]
);
extension_sql_file!(
    "../../sql/retention.sql",
    name = "retention",
    requires = ["queue"]
);
extension_sql_file!(
    "../../sql/keys.sql",
    name = "keys",
    requires = ["retention"]
);
extension_sql_file!("../../sql/portal.sql", name = "portal", requires = ["keys"]);
extension_sql_file!("../../sql/views.sql", name = "views", requires = ["portal"]);
extension_sql_file!("../../sql/citus.sql", name = "citus", requires = ["views"]);
// Comments and grants of the Rust functions, and the last word on PUBLIC.
extension_sql_file!("../../sql/native.sql", name = "native", finalize);

mod owner;
mod rowjson;
mod trigger;

/// Largest event `data`, in bytes of JSON text.
static MAX_PAYLOAD_BYTES: GucSetting<i32> =
    GucSetting::<i32>::new(rules::event::PAYLOAD_BYTES_DEFAULT);
/// Development only: admit http and private or loopback targets.
static ALLOW_INSECURE_URLS: GucSetting<bool> = GucSetting::<bool>::new(false);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    GucRegistry::define_int_guc(
        c"postbox.max_payload_bytes",
        c"Largest event data postbox.emit accepts, in bytes of JSON text.",
        c"Larger events are refused with SQLSTATE 22023.",
        &MAX_PAYLOAD_BYTES,
        rules::event::PAYLOAD_BYTES_MIN,
        rules::event::PAYLOAD_BYTES_MAX,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_bool_guc(
        c"postbox.allow_insecure_urls",
        c"Development only: accept http and private, loopback or dot-less webhook hosts.",
        c"The worker honours it too. Never enable it in production.",
        &ALLOW_INSECURE_URLS,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// The SQLSTATE an error with `code` is raised with ([`Code::sqlstate`]).
fn sqlstate(code: Code) -> PgSqlErrorCode {
    match code.sqlstate() {
        "22023" => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        "42501" => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        "55000" => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "55006" => PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
        _ => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
    }
}

/// Raises a postbox error, the one way every postbox error is raised (SQL's
/// through `postbox._raise`): the code's SQLSTATE, the message for people,
/// and the code, field and item as the DETAIL (`postbox_rules::codes`).
fn report(code: Code, field: Option<&str>, item: Option<&str>, message: &str) -> ! {
    ereport!(
        ERROR,
        sqlstate(code),
        message,
        rules::codes::detail(code, field, item)
    );
}

/// Raises a broken rule with its code, field and item.
pub(crate) fn raise(e: RuleError) -> ! {
    report(e.code, e.field, e.item.as_deref(), &e.to_string())
}

/// Raises an error that is no rule's: a misused trigger, an internal failure.
pub(crate) fn fail(code: Code, message: impl std::fmt::Display) -> ! {
    report(code, None, None, &message.to_string())
}

fn ok_or_raise<T>(r: Result<T, RuleError>) -> T {
    r.unwrap_or_else(|e| raise(e))
}

/// Raises the error for a NULL where a value is required, naming the argument.
fn required<T>(value: Option<T>, what: &'static str) -> T {
    value.unwrap_or_else(|| {
        raise(
            RuleError::new(Code::Required, format!("{what} must not be NULL"), "NULL")
                .in_field(what),
        )
    })
}

/// Raises a postbox error from SQL: `code` from `postbox_rules::codes`
/// (an unknown one raises `internal`), `field` the argument it is about,
/// the message for people, and `item` the element of the argument. Every
/// error in postbox's SQL goes through it (`PERFORM postbox._raise(...)`),
/// so each carries its code in DETAIL. VOLATILE: the planner must never
/// run it ahead of time.
#[pg_extern(volatile, parallel_safe, name = "_raise")]
fn raise_sql(
    code: Option<&str>,
    field: Option<&str>,
    message: Option<&str>,
    item: default!(Option<&str>, "NULL"),
) {
    let message = message.unwrap_or("postbox: (no message)");
    match code.and_then(Code::parse) {
        Some(code) => report(code, field, item, message),
        None => report(
            Code::Internal,
            field,
            item,
            &format!(
                "postbox: an error with an unknown code ({}): {message}",
                code.unwrap_or("NULL")
            ),
        ),
    }
}

/// Returns the normalized webhook URL, or raises naming the broken rule
/// (not STRICT: a NULL URL is an error, not a NULL answer).
#[pg_extern(stable, parallel_safe)]
fn validate_url(url: Option<&str>) -> String {
    let url = required(url, "url");
    ok_or_raise(rules::url::validate(url, ALLOW_INSECURE_URLS.get())).into()
}

/// Returns the headers if every one is allowed, or raises naming the broken
/// rule. SQL's `validate_headers` (sql/endpoints.sql) calls it after checking the
/// nesting depth: pgrx decodes a jsonb argument with serde_json, which gives
/// up past 128 levels with an internal error. The symbol keeps its name for
/// older install scripts.
#[pg_extern(immutable, parallel_safe, name = "_validate_headers")]
fn validate_headers(
    headers: Option<JsonB>,
    signature_header: default!(Option<&str>, "NULL"),
) -> JsonB {
    let headers = required(headers, "headers");
    JsonB(ok_or_raise(rules::headers::validate(&headers.0, signature_header)).into())
}

/// A value as error messages show it (`postbox_rules::error::shown`), for
/// the messages SQL raises.
#[pg_extern(immutable, parallel_safe, strict, name = "_shown")]
fn shown(value: &str) -> String {
    rules::error::shown(value).into_owned()
}

/// Checks a signature style and returns the header its signature goes in
/// (NULL for `standard`, whose headers are fixed).
#[pg_extern(immutable, parallel_safe)]
fn _validate_signature(style: &str, header: Option<&str>) -> Option<String> {
    let style = ok_or_raise(rules::headers::SignatureStyle::parse(style));
    ok_or_raise(rules::headers::validate_signature(style, header))
}

/// Validates an event type name and returns its match keys (see `rules::event`).
#[pg_extern(immutable, parallel_safe)]
fn _event_match_keys(name: &str) -> Vec<String> {
    ok_or_raise(rules::event::validate_name(name));
    rules::event::match_keys(name)
}

/// Validates an endpoint's filters against the catalog; returns them deduplicated.
#[pg_extern(immutable, parallel_safe)]
fn _validate_filters(
    filters: Option<Vec<Option<String>>>,
    catalog: Vec<Option<String>>,
) -> Vec<String> {
    let filters: Vec<String> = match filters {
        Some(f) => f
            .into_iter()
            .map(|f| {
                f.unwrap_or_else(|| {
                    raise(
                        RuleError::new(Code::Required, "event_types must not contain NULL", "NULL")
                            .in_field("event_types"),
                    )
                })
            })
            .collect(),
        None => raise(
            RuleError::new(Code::Required, "event_types must not be NULL", "NULL")
                .in_field("event_types"),
        ),
    };
    let catalog: Vec<&str> = catalog.iter().flatten().map(String::as_str).collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    ok_or_raise(rules::event::validate_filters(
        &refs,
        |n| catalog.contains(&n),
        || catalog.clone(),
    ))
}

/// Up to three catalog names close to an unknown one, for error messages.
#[pg_extern(immutable, parallel_safe)]
fn _close_names(name: &str, catalog: Vec<Option<String>>) -> Vec<String> {
    let catalog: Vec<&str> = catalog.iter().flatten().map(String::as_str).collect();
    rules::event::close_names(name, &catalog)
        .into_iter()
        .map(String::from)
        .collect()
}

/// Validates per-endpoint delivery options.
#[pg_extern(immutable, parallel_safe)]
fn _validate_options(options: JsonB) -> JsonB {
    ok_or_raise(rules::options::parse(&options.0));
    options
}

/// A new `whsec_` secret: 32 bytes from the operating system's CSPRNG.
/// `N` bytes from the OS CSPRNG, or an error (never a weaker source).
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        fail(Code::Internal, "postbox: the OS random generator failed");
    }
    bytes
}

#[pg_extern(volatile, parallel_safe)]
fn _generate_secret() -> String {
    rules::secret::encode(&random())
}

/// A new `pbk_` API key; SQL stores only its hash.
#[pg_extern(volatile, parallel_safe)]
fn _generate_api_key() -> String {
    rules::api_key::encode(&random())
}

/// A new `pbp_` portal link token; SQL stores only its hash.
#[pg_extern(volatile, parallel_safe)]
fn _generate_portal_token() -> String {
    rules::api_key::encode_with(rules::api_key::PORTAL_PREFIX, &random())
}

/// The start of a key that lists show (`api_keys.key_prefix`).
#[pg_extern(immutable, parallel_safe, strict)]
fn _api_key_prefix(key: &str) -> String {
    rules::api_key::shown(key).to_owned()
}

/// Gone from the SQL API in 0.4.0 (secrets are checked for their endpoint's
/// signature style now); the frozen install scripts create it, so the
/// symbol stays.
#[pg_extern(sql = false)]
fn _validate_secret(secret: &str) {
    ok_or_raise(rules::secret::validate(secret));
}

/// Checks a caller-supplied secret for a signature style, never echoing it.
#[pg_extern(immutable, parallel_safe, name = "_validate_secret")]
fn _validate_secret_for(secret: &str, style: &str) {
    let style = ok_or_raise(rules::headers::SignatureStyle::parse(style));
    ok_or_raise(rules::secret::validate_for(style, secret));
}

/// The smallest version 7 UUID of the millisecond `at` falls in: every id
/// made at or after it sorts at or above it, so "older than `at`" is a
/// primary key range (postbox.purge).
#[pg_extern(immutable, parallel_safe)]
fn _uuid7_floor(at: pgrx::datum::TimestampWithTimeZone) -> pgrx::Uuid {
    // PostgreSQL counts microseconds from 2000-01-01; UUIDs, milliseconds from 1970.
    const PG_EPOCH_MS: i64 = 946_684_800_000;
    let us: i64 = pgrx::pg_sys::TimestampTz::from(at);
    let ms = (us.div_euclid(1000) + PG_EPOCH_MS).clamp(0, (1 << 48) - 1) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70; // version 7
    bytes[8] = 0x80; // RFC 4122 variant
    pgrx::Uuid::from_bytes(bytes)
}

/// The id of the `n`th event of a statement whose emitted row has the id
/// `emitted`: that id with `n` in its last 32 bits. Those bits are random in
/// a version 7 UUID from this process (the `uuid` crate keeps a 42-bit
/// counter above them), so the ids of a statement's events sort by position
/// and after every id this session made before.
#[pg_extern(immutable, parallel_safe)]
fn _event_id(emitted: pgrx::Uuid, n: i64) -> pgrx::Uuid {
    let mut bytes = *emitted.as_bytes();
    bytes[12..].copy_from_slice(&(n as u32).to_be_bytes());
    pgrx::Uuid::from_bytes(bytes)
}

/// A time-ordered (version 7) UUID, so new rows land at the right edge of
/// their primary key index instead of on random pages.
#[pg_extern(volatile, parallel_safe)]
fn _uuid7() -> pgrx::Uuid {
    UUID7.with(|c| pgrx::Uuid::from_bytes(uuid::Uuid::new_v7(uuid::Timestamp::now(c)).into_bytes()))
}

thread_local! {
    // 12 bits of the millisecond's fraction after the milliseconds (RFC
    // 9562, method 3, as PostgreSQL 18's uuidv7() and the SQL flavour do):
    // ids from different sessions then sort by when they were made to
    // about a quarter of a microsecond, so a change that waited for
    // another transaction's commit (a row lock) gets the later id, and
    // ordered endpoints receive the two in commit order.
    static UUID7: uuid::ContextV7 = uuid::ContextV7::new().with_additional_precision();
}

/// `postbox.max_payload_bytes`, for the triggers' per-row check.
pub(crate) fn max_payload_bytes() -> usize {
    MAX_PAYLOAD_BYTES.get().max(0) as usize
}

/// The current `postbox.max_payload_bytes`. Reading it through the library
/// makes sure the setting is registered (and range-checked) in this session.
#[pg_extern(stable, parallel_safe)]
fn _max_payload_bytes() -> i32 {
    MAX_PAYLOAD_BYTES.get()
}

/// Whether `postbox.allow_insecure_urls` is on in this session: what the
/// worker honours (it reads it through here since 0.8.0, so that the SQL
/// flavour can answer from its settings table). The frozen 0.1.0 and 0.2.0
/// install scripts create it too.
#[pg_extern(stable, parallel_safe)]
fn _allow_insecure_urls() -> bool {
    ALLOW_INSECURE_URLS.get()
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
