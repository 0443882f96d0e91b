//! The connection pool both binaries use, over the TLS connector, making
//! each connection as [`crate::tls::connect`] does (libpq's `prefer`).

use crate::tls::MakeRustls;
use deadpool_postgres::Connect;
use std::future::Future;
use std::pin::Pin;

/// What [`Connect::connect`] returns.
type Connecting<'a> = Pin<
    Box<
        dyn Future<
                Output = Result<
                    (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                    tokio_postgres::Error,
                >,
            > + Send
            + 'a,
    >,
>;

/// A pool of `size` connections; a connection is checked only by whether
/// it is closed before reuse (a broken one fails its statement, and the
/// next checkout replaces it).
pub fn pool(
    pg: tokio_postgres::Config,
    tls: MakeRustls,
    size: usize,
) -> Result<deadpool_postgres::Pool, deadpool_postgres::BuildError> {
    let manager = deadpool_postgres::Manager::from_connect(
        pg,
        Connector { tls },
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()
}

struct Connector {
    tls: MakeRustls,
}

impl Connect for Connector {
    fn connect(&self, pg: &tokio_postgres::Config) -> Connecting<'_> {
        let pg = pg.clone();
        Box::pin(async move {
            let (client, connection) = crate::tls::connect(&pg, &self.tls).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(target: "deadpool.postgres", "Connection error: {}", e);
                }
            });
            Ok((client, task))
        })
    }
}
