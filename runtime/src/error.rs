//! Error text: an error with its causes, and PostgreSQL's own message.
//!
//! tokio-postgres, deadpool and reqwest each show only their own layer
//! ("db error", "error sending request"); the reason is further down.

use std::error::Error;

/// `e` and each of its causes not already in its text, joined with ": ",
/// e.g. `error sending request: client error (Connect): blocked: ...`.
pub fn with_causes(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A database error with PostgreSQL's own message (tokio-postgres shows
/// only "db error"), or the causes of a connection error (a TLS failure
/// says why only further down).
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => with_causes(e),
    }
}

/// A pool error with its causes (deadpool shows only its own layer).
pub fn pool_message(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_message(e),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn causes_are_joined_once_each() {
        let e = Layer(
            "error sending request",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer(
                    "client error (Connect)",
                    Some(Box::new(Layer("blocked", None))),
                ))),
            ))),
        );
        assert_eq!(
            with_causes(&e),
            "error sending request: client error (Connect): blocked"
        );
        assert_eq!(with_causes(&Layer("alone", None)), "alone");
    }
}
