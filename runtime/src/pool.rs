//! The connection pool both binaries use, over the TLS connector.

use crate::tls::MakeRustls;

/// A pool of `size` connections; a connection is checked only by whether
/// it is closed before reuse (a broken one fails its statement, and the
/// next checkout replaces it).
pub fn pool(
    pg: tokio_postgres::Config,
    tls: MakeRustls,
    size: usize,
) -> Result<deadpool_postgres::Pool, deadpool_postgres::BuildError> {
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()
}
