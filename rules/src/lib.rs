//! The rules that postbox's extension and worker must apply identically.
//!
//! The extension validates what users register; the worker checks the same
//! rules again at delivery time (an address a name resolves to, the options it
//! obeys). Keeping both in one plain-Rust crate means the two can never
//! disagree. Nothing here knows about PostgreSQL.
//!
//! # Layout
//! - [`codes`]: the code of every postbox error, and the DETAIL that carries it.
//! - [`error`]: [`RuleError`], which names the broken rule and the value.
//! - [`ip`]: address ranges a webhook must never reach.
//! - [`url`]: webhook URL policy (WHATWG parsing, https only, no private hosts).
//! - [`headers`]: custom header policy and the reserved names.
//! - [`event`]: event names, endpoint filters and how they match.
//! - [`options`]: per-endpoint delivery options.
//! - [`secret`]: `whsec_` signing secrets.
//! - [`sign`]: the two signature formats (Standard Webhooks, `sha256=` hex).
//! - [`api_key`]: the HTTP API's `pbk_` keys: their form and their hash.

pub mod api_key;
pub mod codes;
pub mod error;
pub mod event;
pub mod headers;
pub mod ip;
pub mod options;
pub mod secret;
pub mod sign;
pub mod url;

pub use codes::Code;
pub use error::RuleError;
