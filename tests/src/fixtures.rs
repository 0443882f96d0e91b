//! What delivery tests start from: a cluster with a few event types, its
//! endpoints, one-value queries.

use crate::Cluster;
use tokio_postgres::Client;

/// A cluster with a few event types, and a superuser session that may
/// register http://127.0.0.1 endpoints.
pub async fn cluster() -> (Cluster, Client) {
    let pg = Cluster::start().await;
    let db = pg.connect("postgres").await;
    db.batch_execute(&format!(
        "{}
         SELECT postbox.create_event_type(n) FROM unnest(ARRAY['order.paid', 'order.refunded', 'burst.item', 'single.item']) n;",
        pg.insecure_urls_sql(true)
    ))
    .await
    .unwrap();
    (pg, db)
}

/// Creates an endpoint; returns (id, secret).
pub async fn endpoint(db: &Client, tenant: &str, url: &str, extra: &str) -> (String, String) {
    let row = db
        .query_one(
            &format!(
                "SELECT id::text, secret FROM postbox.create_endpoint('{tenant}', '{url}'{extra})"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The one value `sql` returns.
pub async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(db: &Client, sql: &str) -> T {
    db.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Expands everything emitted on `db`'s node, as its worker would, and
/// returns how many events. A Citus worker node expands only rows its copy
/// of the configuration is current for (sql/citus.sql, config_fence), which
/// may take more than one call: this calls until nothing is left.
pub async fn expand_all(db: &Client) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut total = 0i64;
    loop {
        total += i64::from(one::<i32>(db, "SELECT postbox.expand_events(1000)").await);
        if one::<i64>(db, "SELECT count(*) FROM postbox.emitted").await == 0 {
            return total;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "emitted rows left unexpanded after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
