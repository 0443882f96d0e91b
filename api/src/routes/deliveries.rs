//! Deliveries: an endpoint's, page by page and filtered; one with its
//! attempts (what was sent, what came back); a manual retry.

use super::endpoints::{exists, page_size, IdPath};
use crate::auth::Scope;
use crate::body::{ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::idempotency::{Reply, Write};

use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A delivery's state.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    InFlight,
    Held,
    Succeeded,
    Failed,
    Cancelled,
    Coalesced,
}

impl DeliveryStatus {
    /// Every status, in a delivery's life order (`GET /v1/choices`).
    pub const ALL: [DeliveryStatus; 7] = [
        DeliveryStatus::Pending,
        DeliveryStatus::InFlight,
        DeliveryStatus::Held,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
        DeliveryStatus::Cancelled,
        DeliveryStatus::Coalesced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::InFlight => "in_flight",
            DeliveryStatus::Held => "held",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
            DeliveryStatus::Coalesced => "coalesced",
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: Option<String>,
    /// pending, in_flight, held (its endpoint is paused), succeeded, failed,
    /// cancelled, or coalesced (a newer event of its ordering key and type
    /// was sent instead).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<Delivery>,
    /// Pass as `before` for the next (older) page; null on the last.
    pub next: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    #[param(inline)]
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    /// Items per page, 1 to 500 (default 100).
    pub limit: Option<i64>,
    /// The `next` of the previous page: deliveries older than it.
    pub before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Attempt {
    /// Its number in the delivery's schedule: a manual retry or a replay
    /// starts a fresh schedule at 1, so the same number can appear twice;
    /// the list is in the order the attempts were made.
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// succeeded, retrying, failed, cancelled, or split (a batch the
    /// receiver refused, or that ran out of attempts, sent again at once
    /// in halves; it does not count as an attempt of its deliveries).
    pub outcome: String,
    pub test: bool,
    pub request: SentRequest,
    pub response: Option<Received>,
    /// Why it failed without an HTTP answer (connection, timeout, ...).
    pub error: Option<String>,
    /// The batch this attempt's request carried, for an endpoint that
    /// batches (its `batch_max_events` option); absent otherwise.
    pub batch: Option<BatchInfo>,
}

/// A batch request: its id (the `webhook-id` it was sent with) and how many
/// events it carried.
#[derive(Serialize, ToSchema)]
pub struct BatchInfo {
    pub id: Uuid,
    pub events: i32,
}

/// What an attempt sent: its headers (but the signature) and the event data.
#[derive(Serialize, ToSchema)]
pub struct SentRequest {
    #[schema(value_type = Object)]
    pub headers: Value,
    #[schema(value_type = Object)]
    pub data: Option<Value>,
}

/// What came back: the status and the first 4 KiB of the body.
#[derive(Serialize, ToSchema)]
pub struct Received {
    pub status_code: i32,
    pub body_excerpt: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeliveryPath {
    /// The delivery's id.
    pub id: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Retried {
    /// pending: queued again with a fresh schedule.
    pub status: String,
}

const COLUMNS: &str =
    "id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at, last_status_code, last_error, created_at";

fn delivery(row: &Row) -> Delivery {
    Delivery {
        id: row.get("id"),
        endpoint_id: row.get("endpoint_id"),
        event_id: row.get("event_id"),
        event_type: row.get("event_type"),
        status: row.get("status"),
        attempts: row.get("attempts"),
        next_attempt_at: row.get("next_attempt_at"),
        last_status_code: row.get("last_status_code"),
        last_error: row.get("last_error"),
        created_at: row.get("created_at"),
    }
}

/// The endpoint's deliveries, newest first.
#[utoipa::path(get, path = "/endpoints/{id}/deliveries", tag = "deliveries", params(IdPath, DeliveryQuery),
    responses((status = 200, body = DeliveryPage)))]
pub async fn list(
    scope: Scope,
    ApiPath(p): ApiPath<IdPath>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let limit = page_size(q.limit)?;
    let db = scope.db().await?;
    exists(&*db, &scope.tenant, p.id).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM postbox.deliveries
          WHERE tenant = $1 AND endpoint_id = $2 AND ($3::text IS NULL OR status = $3)
            AND ($4::text IS NULL OR event_type = $4) AND ($5::bigint IS NULL OR id < $5)
          ORDER BY id DESC LIMIT $6"
    );
    let status = q.status.map(DeliveryStatus::as_str);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &scope.tenant,
        &p.id,
        &status,
        &q.event_type,
        &q.before,
        &(limit + 1),
    ];
    let st = db.prepare_cached(&sql).await?;
    let mut rows = db.query(&st, &params).await?;
    // On Citus, each worker node's page too: ids are in disjoint ranges,
    // so newest-first by id is one order over every node.
    rows.extend(scope.nodes().query_all(&sql, &params).await?);
    let mut data: Vec<Delivery> = rows.iter().map(delivery).collect();
    data.sort_by_key(|d| std::cmp::Reverse(d.id));
    let next = (data.len() as i64 > limit).then(|| data[limit as usize - 1].id);
    data.truncate(limit as usize);
    Ok(Json(DeliveryPage { data, next }))
}

fn no_delivery(id: i64) -> ApiError {
    ApiError::rule(
        postbox_rules::Code::DeliveryNotFound,
        Some("id"),
        format!("postbox: no delivery has this id: {id}"),
    )
}

/// One delivery with every attempt: what was sent and what came back.
#[utoipa::path(get, path = "/deliveries/{id}", tag = "deliveries", params(DeliveryPath),
    responses((status = 200, body = DeliveryDetail)))]
pub async fn get(
    scope: Scope,
    ApiPath(p): ApiPath<DeliveryPath>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    // On Citus, the node whose range the id is in holds it.
    let (on_node, here);
    let db: &deadpool_postgres::Object = match scope.nodes().of_delivery(p.id) {
        Some(node) => {
            on_node = scope.nodes().connect(node).await?;
            &on_node
        }
        None => {
            here = scope.db().await?;
            &here
        }
    };
    let st = db
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM postbox.deliveries
              WHERE tenant = $1 AND id = $2 AND batch_deliveries @> ARRAY[$2] LIMIT 1"
        ))
        .await?;
    let row = db
        .query_opt(&st, &[&scope.tenant, &p.id])
        .await?
        .ok_or_else(|| no_delivery(p.id))?;
    let st = db
        .prepare_cached(
            "SELECT attempt, started_at, duration_ms, outcome, is_test, request_headers, data, status_code,
                    response_excerpt, error, batch_id, cardinality(batch_deliveries)
               FROM postbox.attempts
              WHERE tenant = $1 AND delivery_id = $2 AND batch_deliveries @> ARRAY[$2]
              ORDER BY started_at, attempt",
        )
        .await?;
    let attempts = db
        .query(&st, &[&scope.tenant, &p.id])
        .await?
        .iter()
        .map(|a| Attempt {
            attempt: a.get(0),
            started_at: a.get(1),
            duration_ms: a.get(2),
            outcome: a.get(3),
            test: a.get(4),
            request: SentRequest {
                headers: a.get::<_, Option<Value>>(5).unwrap_or_default(),
                data: a.get(6),
            },
            response: a.get::<_, Option<i32>>(7).map(|status_code| Received {
                status_code,
                body_excerpt: a.get(8),
            }),
            error: a.get(9),
            batch: a.get::<_, Option<Uuid>>(10).map(|id| BatchInfo {
                id,
                events: a.get(11),
            }),
        })
        .collect();
    Ok(Json(DeliveryDetail {
        delivery: delivery(&row),
        attempts,
    }))
}

/// Queues a failed or cancelled delivery again, with a fresh schedule.
#[utoipa::path(post, path = "/deliveries/{id}/retry", tag = "deliveries", params(DeliveryPath,
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    responses((status = 202, body = Retried)))]
pub async fn retry(
    scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<DeliveryPath>,
) -> Result<Response, ApiError> {
    write
        .run(&scope, &[], async |tx, tenant| {
            const RETRY: &str = "SELECT postbox.retry_delivery($1, $2)";
            // On Citus, on the node that holds it (the answer is kept on
            // the coordinator, in this transaction).
            match scope.nodes().of_delivery(p.id) {
                Some(node) => {
                    let n = scope.nodes().connect(node).await?;
                    let st = n.prepare_cached(RETRY).await?;
                    n.execute(&st, &[&tenant, &p.id]).await?;
                }
                None => {
                    let st = tx.prepare_cached(RETRY).await?;
                    tx.execute(&st, &[&tenant, &p.id]).await?;
                }
            }
            Ok(Reply::new(
                StatusCode::ACCEPTED,
                Retried {
                    status: "pending".into(),
                },
            ))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::DeliveryStatus;

    #[test]
    fn every_status_is_listed_once_as_the_query_parameter_spells_it() {
        for (i, s) in DeliveryStatus::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(
                DeliveryStatus::ALL
                    .iter()
                    .position(|o| o.as_str() == s.as_str()),
                Some(i)
            );
        }
        // A status added to the enum but not to ALL fails to compile here.
        let _ = |s: DeliveryStatus| match s {
            DeliveryStatus::Pending
            | DeliveryStatus::InFlight
            | DeliveryStatus::Held
            | DeliveryStatus::Succeeded
            | DeliveryStatus::Failed
            | DeliveryStatus::Cancelled
            | DeliveryStatus::Coalesced => (),
        };
    }
}
