//! A tenant's endpoints: list, create, read, change, delete, register and
//! unregister by URL, test, rotate the secret, replay, statistics. Each
//! calls postbox's tenant-scoped SQL, which holds every rule.

use crate::auth::{Role, Scope};
use crate::body::{ApiJson, ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::idempotency::{Reply, Write};

use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Most items one page lists, and the default.
pub const MAX_PAGE: i64 = 500;
pub const DEFAULT_PAGE: i64 = 100;

/// An endpoint as a settings page shows it: everything but secret material.
#[derive(Serialize, ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    /// Event type filters: names, `prefix.*` or `*`.
    pub event_types: Vec<String>,
    /// Custom headers sent with each delivery; member keys and sessions
    /// see each value as `********`.
    pub headers: BTreeMap<String, String>,
    pub description: Option<String>,
    /// Delivery options (timeouts, rate limit, retry schedule, ...).
    #[schema(value_type = Object)]
    pub options: Value,
    /// standard (Standard Webhooks), sha256-hex or hex.
    pub signature_style: String,
    pub signature_header: Option<String>,
    /// postbox, standard or flat.
    pub envelope: String,
    pub enabled: bool,
    /// healthy, failing, disabled, paused or suspended.
    pub status: String,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The secrets that sign now, newest first: when each was made and until
    /// when a rotated one still signs. Never the secret itself.
    pub secrets: Vec<SecretInfo>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new endpoint and its signing secret, shown only here.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub secret: String,
}

/// An endpoint registered by URL: created, or the existing one.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// The signing secret, only when this call created the endpoint (null
    /// otherwise: stored secrets are never read back; rotate to get a new one).
    pub secret: Option<String>,
    /// Whether this call created it.
    pub created: bool,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointPage {
    pub data: Vec<Endpoint>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<Uuid>,
}

/// An endpoint to create or register. Only `url` is required.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// https, on a public host.
    pub url: String,
    /// Default: every event type (`*`).
    pub event_types: Option<Vec<String>>,
    /// Custom headers, name to value; a name given twice is refused.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<Box<RawValue>>,
    pub description: Option<String>,
    /// standard (default), sha256-hex or hex.
    pub signature_style: Option<String>,
    /// For the hex styles: the header that carries the signature.
    pub signature_header: Option<String>,
    /// The customer's own secret instead of a generated one.
    pub secret: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub options: Option<Value>,
    /// false: created paused.
    pub enabled: Option<bool>,
    /// postbox (default), standard or flat.
    pub envelope: Option<String>,
}

/// Changes; a field left out stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<Box<RawValue>>,
    pub description: Option<String>,
    /// false pauses the endpoint, true resumes it (and clears an automatic disable).
    pub enabled: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub options: Option<Value>,
    pub envelope: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 100).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub after: Option<Uuid>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UrlQuery {
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// How many endpoints had that URL.
    pub deleted: i32,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// Default: webhook.test.
    pub event_type: Option<String>,
    /// Default: the event type's example.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Queued {
    /// The event sent.
    pub event_id: Uuid,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long older secrets keep signing, 0 to 2592000 (30 days); default 86400.
    pub grace_seconds: Option<i32>,
    /// The customer's own new secret instead of a generated one.
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NewSecret {
    /// The new signing secret, shown only here.
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Deliveries queued at or after this.
    pub since: DateTime<Utc>,
    /// Deliveries queued before this (default: now and later).
    pub until: Option<DateTime<Utc>>,
    /// Most deliveries this call queues, 1 to 10000 (default 1000), oldest first.
    pub limit: Option<i32>,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// Failed and cancelled deliveries queued again by this call.
    pub queued: i32,
    /// Whether more in the range remain: send the same request again until false.
    pub more: bool,
}

/// Several endpoints, for [`stats_of_many`].
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// The endpoints' ids, comma-separated, 1 to 100 of them (a page of a
    /// list). Ids that are not the tenant's endpoints are left out of the answer.
    pub ids: String,
}

/// Most endpoints one statistics call covers.
pub const MAX_STATS_IDS: usize = 100;

/// One endpoint's statistics, with its id.
#[derive(Serialize, ToSchema)]
pub struct EndpointStats {
    pub id: Uuid,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Serialize, ToSchema)]
pub struct StatsList {
    /// In the order of `ids`, each endpoint once.
    pub data: Vec<EndpointStats>,
}

#[derive(Serialize, ToSchema)]
pub struct Stats {
    pub succeeded_1h: i64,
    pub failed_1h: i64,
    /// Succeeded over all attempts; null without attempts.
    pub success_rate_1h: Option<f64>,
    pub succeeded_24h: i64,
    pub failed_24h: i64,
    pub success_rate_24h: Option<f64>,
    pub succeeded_7d: i64,
    pub failed_7d: i64,
    pub success_rate_7d: Option<f64>,
    /// The last 24 hours, hour by hour, oldest first (the last is the
    /// current hour).
    pub hourly: Vec<Bucket>,
    /// The last 7 days, day by day (24-hour spans back from now), oldest first.
    pub daily: Vec<Bucket>,
}

/// Attempts in one span of time (test sends left out; a retry that failed
/// counts as a failure).
#[derive(Serialize, ToSchema, Clone, Copy, Default)]
pub struct Bucket {
    /// How many spans (hours or days) before now it starts: 0 is the latest.
    pub ago: i32,
    pub succeeded: i64,
    pub failed: i64,
}

/// Hour counts (hours ago, succeeded, failed) as the last `hours` hourly
/// buckets and the last `days` daily ones, oldest first.
fn buckets(counts: &[(i32, i64, i64)], hours: i32, days: i32) -> (Vec<Bucket>, Vec<Bucket>) {
    let span = |n: i32| {
        (0..n)
            .rev()
            .map(|ago| Bucket {
                ago,
                ..Bucket::default()
            })
            .collect::<Vec<_>>()
    };
    let (mut hourly, mut daily) = (span(hours), span(days));
    for &(h, ok, bad) in counts {
        for (list, ago) in [(&mut hourly, h), (&mut daily, h / 24)] {
            if let Some(b) = list.iter_mut().find(|b| b.ago == ago) {
                b.succeeded += ok;
                b.failed += bad;
            }
        }
    }
    (hourly, daily)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stats_ids_are_a_comma_separated_list_of_ids_each_once() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        assert_eq!(super::parse_ids(&format!("{a},{b}, {a}")).unwrap(), [a, b]);
        for bad in ["", "x", &format!("{a},"), &format!("{a};{b}")] {
            assert!(super::parse_ids(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=super::MAX_STATS_IDS)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        assert!(super::parse_ids(&many.join(",")).is_err());
        assert!(super::parse_ids(&many[1..].join(",")).is_ok());
    }

    #[test]
    fn hour_counts_fill_hourly_and_daily_buckets() {
        let (hourly, daily) = super::buckets(
            &[(0, 2, 1), (23, 1, 0), (24, 5, 5), (167, 0, 3), (200, 9, 9)],
            24,
            7,
        );
        assert_eq!(hourly.len(), 24);
        assert_eq!(
            (hourly[23].ago, hourly[23].succeeded, hourly[23].failed),
            (0, 2, 1),
            "the latest last"
        );
        assert_eq!((hourly[0].ago, hourly[0].succeeded), (23, 1));
        assert_eq!(
            daily
                .iter()
                .map(|b| (b.succeeded, b.failed))
                .collect::<Vec<_>>(),
            [(0, 3), (0, 0), (0, 0), (0, 0), (0, 0), (5, 5), (3, 1)]
        );
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The endpoint's id.
    pub id: Uuid,
}

const COLUMNS: &str =
    "id, url, event_types, headers, description, options, signature_style, signature_header, \
     envelope, enabled, status, disabled_at, disabled_reason, created_at, updated_at, secrets";

fn json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|_| ApiError::Internal)
}

fn endpoint(row: &Row) -> Result<Endpoint, ApiError> {
    Ok(Endpoint {
        id: row.get("id"),
        url: row.get("url"),
        event_types: row.get("event_types"),
        headers: json(row.get("headers"))?,
        description: row.get("description"),
        options: row.get("options"),
        signature_style: row.get("signature_style"),
        signature_header: row.get("signature_header"),
        envelope: row.get("envelope"),
        enabled: row.get("enabled"),
        status: row.get("status"),
        disabled_at: row.get("disabled_at"),
        disabled_reason: row.get("disabled_reason"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        secrets: json(row.get("secrets"))?,
    })
}

impl Endpoint {
    /// The endpoint as `role` may see it: members never see custom header
    /// values (often credentials), only their names.
    pub fn seen_by(mut self, role: Role) -> Endpoint {
        if role == Role::Member {
            for v in self.headers.values_mut() {
                *v = postbox_rules::headers::MASKED_VALUE.to_string();
            }
        }
        self
    }
}

/// The unknown-endpoint answer, in the words of postbox's SQL.
pub fn no_endpoint(id: Uuid) -> ApiError {
    ApiError::rule(
        postbox_rules::Code::EndpointNotFound,
        Some("id"),
        format!("postbox: no endpoint has this id: {id}"),
    )
}

/// One of the tenant's endpoints; another tenant's is unknown.
pub async fn read(db: &impl GenericClient, tenant: &str, id: Uuid) -> Result<Endpoint, ApiError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM postbox.endpoint_settings WHERE tenant = $1 AND id = $2"
        ))
        .await?;
    match db.query_opt(&st, &[&tenant, &id]).await? {
        Some(row) => endpoint(&row),
        None => Err(no_endpoint(id)),
    }
}

/// On Citus, each endpoint's status as the worker nodes keep it too: the
/// node that delivers for the tenant keeps its health and disables it
/// ([`crate::nodes::merged_status`]). Nothing off Citus.
pub async fn node_health(scope: &Scope, endpoints: &mut [Endpoint]) -> Result<(), ApiError> {
    if endpoints.is_empty() || scope.nodes().is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = endpoints.iter().map(|e| e.id).collect();
    type Health = (String, Option<DateTime<Utc>>, Option<String>);
    let mut copies: BTreeMap<Uuid, Vec<Health>> = BTreeMap::new();
    let rows = scope
        .nodes()
        .query_all(
            "SELECT id, status, disabled_at, disabled_reason FROM postbox.endpoint_settings
              WHERE tenant = $1 AND id = ANY($2)",
            &[&scope.tenant, &ids],
        )
        .await?;
    for r in rows {
        copies
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3)));
    }
    for e in endpoints.iter_mut() {
        let here = (e.status.clone(), e.disabled_at, e.disabled_reason.clone());
        let (status, at, reason) =
            crate::nodes::merged_status(here, copies.remove(&e.id).unwrap_or_default());
        (e.status, e.disabled_at, e.disabled_reason) = (status, at, reason);
    }
    Ok(())
}

/// Raises the unknown-endpoint error unless the tenant has this endpoint.
pub async fn exists(db: &impl GenericClient, tenant: &str, id: Uuid) -> Result<(), ApiError> {
    let st = db
        .prepare_cached("SELECT FROM postbox.endpoints WHERE id = $1 AND tenant = $2")
        .await?;
    match db.query_opt(&st, &[&id, &tenant]).await? {
        Some(_) => Ok(()),
        None => Err(no_endpoint(id)),
    }
}

pub fn page_size(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(ApiError::bad_request(
            "invalid_request",
            format!("limit must be from 1 to {MAX_PAGE}"),
            Some("limit".into()),
        )),
    }
}

/// The tenant's endpoints, oldest first.
#[utoipa::path(get, path = "/endpoints", tag = "endpoints", params(PageQuery),
    responses((status = 200, body = EndpointPage)))]
pub async fn list(
    scope: Scope,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<EndpointPage>, ApiError> {
    let limit = page_size(q.limit)?;
    let db = scope.db().await?;
    let st = db
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM postbox.endpoint_settings
              WHERE tenant = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .await?;
    let rows = db
        .query(&st, &[&scope.tenant, &q.after, &(limit + 1)])
        .await?;
    let mut data = rows
        .iter()
        .take(limit as usize)
        .map(|r| endpoint(r).map(|e| e.seen_by(scope.caller.role)))
        .collect::<Result<Vec<_>, _>>()?;
    node_health(&scope, &mut data).await?;
    let next = (rows.len() as i64 > limit)
        .then(|| data.last().map(|e| e.id))
        .flatten();
    data.truncate(limit as usize);
    Ok(Json(EndpointPage { data, next }))
}

/// Creates an endpoint; its secret is in this answer only.
#[utoipa::path(post, path = "/endpoints", tag = "endpoints", request_body = NewEndpoint,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    responses((status = 201, body = EndpointWithSecret)))]
pub async fn create(
    scope: Scope,
    write: Write,
    body: ApiJson<NewEndpoint>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    write
        .run(&scope, &body.raw, async |tx, tenant| {
            let st = tx
                .prepare_cached(
                    "SELECT id, secret FROM postbox.create_endpoint(tenant => $1, url => $2, event_types => $3,
                        headers => $4::text::json, description => $5, signature_style => $6,
                        signature_header => $7, own_secret => $8, options => $9, enabled => $10, envelope => $11)",
                )
                .await?;
            let headers = b.headers.as_ref().map(|h| h.get());
            let row = tx
                .query_one(
                    &st,
                    &[&tenant, &b.url, &b.event_types, &headers, &b.description, &b.signature_style,
                      &b.signature_header, &b.secret, &b.options, &b.enabled, &b.envelope],
                )
                .await?;
            let endpoint = read(tx, tenant, row.get(0)).await?;
            Ok(Reply::new(StatusCode::CREATED, EndpointWithSecret { endpoint, secret: row.get(1) }))
        })
        .await
}

#[utoipa::path(get, path = "/endpoints/{id}", tag = "endpoints", params(IdPath),
    responses((status = 200, body = Endpoint)))]
pub async fn get(scope: Scope, ApiPath(p): ApiPath<IdPath>) -> Result<Json<Endpoint>, ApiError> {
    let db = scope.db().await?;
    let mut e = [read(&*db, &scope.tenant, p.id).await?];
    node_health(&scope, &mut e).await?;
    let [e] = e;
    Ok(Json(e.seen_by(scope.caller.role)))
}

/// Changes an endpoint; fields left out stay as they are.
#[utoipa::path(patch, path = "/endpoints/{id}", tag = "endpoints", params(IdPath), request_body = EndpointChanges,
    responses((status = 200, body = Endpoint)))]
pub async fn update(
    scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<IdPath>,
    body: ApiJson<EndpointChanges>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    write
        .run(&scope, &body.raw, async |tx, tenant| {
            let st = tx
                .prepare_cached(
                    "SELECT postbox.update_endpoint(tenant => $1, id => $2, url => $3, event_types => $4,
                        headers => $5::text::json, description => $6, enabled => $7, options => $8, envelope => $9)",
                )
                .await?;
            let headers = b.headers.as_ref().map(|h| h.get());
            tx.execute(
                &st,
                &[&tenant, &p.id, &b.url, &b.event_types, &headers, &b.description, &b.enabled, &b.options, &b.envelope],
            )
            .await?;
            Ok(Reply::new(StatusCode::OK, read(tx, tenant, p.id).await?))
        })
        .await
}

/// Deletes an endpoint and cancels its pending deliveries; its log stays.
#[utoipa::path(delete, path = "/endpoints/{id}", tag = "endpoints", params(IdPath),
    responses((status = 204, description = "Deleted.")))]
pub async fn delete(
    scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<Response, ApiError> {
    write
        .run(&scope, &[], async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT postbox.delete_endpoint($1, $2)")
                .await?;
            tx.execute(&st, &[&tenant, &p.id]).await?;
            Ok(Reply::no_content())
        })
        .await
}

/// Registers an endpoint by URL: creates it (201, with its secret), or
/// sets the event types of the one the tenant has for that URL (200, no
/// secret: a caller that lost it rotates). The other fields apply only
/// when it creates.
#[utoipa::path(put, path = "/endpoints/by-url", tag = "endpoints", request_body = NewEndpoint,
    responses((status = 200, body = Registered), (status = 201, body = Registered)))]
pub async fn register(
    scope: Scope,
    write: Write,
    body: ApiJson<NewEndpoint>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    write
        .run(&scope, &body.raw, async |tx, tenant| {
            let st = tx
                .prepare_cached(
                    "SELECT id, secret, created FROM postbox.register_endpoint(tenant => $1, url => $2,
                        event_types => $3, headers => $4::text::json, description => $5, signature_style => $6,
                        signature_header => $7, own_secret => $8, options => $9, enabled => $10, envelope => $11)",
                )
                .await?;
            let headers = b.headers.as_ref().map(|h| h.get());
            let row = tx
                .query_one(
                    &st,
                    &[&tenant, &b.url, &b.event_types, &headers, &b.description, &b.signature_style,
                      &b.signature_header, &b.secret, &b.options, &b.enabled, &b.envelope],
                )
                .await?;
            let created: bool = row.get(2);
            let endpoint = read(tx, tenant, row.get(0)).await?;
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok(Reply::new(status, Registered { endpoint, secret: row.get(1), created }))
        })
        .await
}

/// Deletes the tenant's endpoints with this URL; answers how many.
#[utoipa::path(delete, path = "/endpoints/by-url", tag = "endpoints", params(UrlQuery),
    responses((status = 200, body = Deleted)))]
pub async fn unregister(
    scope: Scope,
    write: Write,
    ApiQuery(q): ApiQuery<UrlQuery>,
) -> Result<Response, ApiError> {
    write
        .run(&scope, &[], async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT postbox.unregister_endpoint($1, $2)")
                .await?;
            let n: i32 = tx.query_one(&st, &[&tenant, &q.url]).await?.get(0);
            Ok(Reply::new(StatusCode::OK, Deleted { deleted: n }))
        })
        .await
}

/// Sends one test event to the endpoint, even while paused and whatever its filter.
#[utoipa::path(post, path = "/endpoints/{id}/test", tag = "endpoints", params(IdPath,
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    request_body(content = Option<TestRequest>, description = "Optional."),
    responses((status = 202, body = Queued)))]
pub async fn send_test(
    scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<IdPath>,
    body: ApiJson<TestRequest>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    write
        .run(&scope, &body.raw, async |tx, tenant| {
            let st = tx
                .prepare_cached("SELECT postbox.send_test($1, $2, $3, $4)")
                .await?;
            let id: Uuid = tx
                .query_one(&st, &[&tenant, &p.id, &b.event_type, &b.data])
                .await?
                .get(0);
            Ok(Reply::new(StatusCode::ACCEPTED, Queued { event_id: id }))
        })
        .await
}

/// Gives the endpoint a new signing secret, shown only here; older ones
/// keep signing for the grace period.
#[utoipa::path(post, path = "/endpoints/{id}/rotate-secret", tag = "endpoints", params(IdPath,
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    request_body(content = Option<RotateRequest>, description = "Optional."),
    responses((status = 200, body = NewSecret)))]
pub async fn rotate_secret(
    scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<IdPath>,
    body: ApiJson<RotateRequest>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    write
        .run(&scope, &body.raw, async |tx, tenant| {
            let st = tx
                .prepare_cached(
                    "SELECT postbox.rotate_secret($1, $2, $3::int * interval '1 second', $4)",
                )
                .await?;
            let secret: String = tx
                .query_one(&st, &[&tenant, &p.id, &b.grace_seconds, &b.secret])
                .await?
                .get(0);
            Ok(Reply::new(StatusCode::OK, NewSecret { secret }))
        })
        .await
}

/// Queues again the endpoint's failed and cancelled deliveries queued in
/// [since, until), each with a fresh schedule, oldest first, up to `limit`
/// per call; `more` says whether to call again.
#[utoipa::path(post, path = "/endpoints/{id}/replay", tag = "endpoints", params(IdPath,
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first answer.")),
    request_body = ReplayRequest, responses((status = 202, body = Replayed)))]
pub async fn replay(
    scope: Scope,
    write: Write,
    ApiPath(p): ApiPath<IdPath>,
    body: ApiJson<ReplayRequest>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    write
        .run(&scope, &body.raw, async |tx, tenant| {
            const REPLAY: &str = "SELECT queued, more FROM postbox.replay($1, $2, $3::timestamptz,
                    coalesce($4::timestamptz, 'infinity'), coalesce($5::int, 1000))";
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&tenant, &p.id, &b.since, &b.until, &b.limit];
            let st = tx.prepare_cached(REPLAY).await?;
            let row = tx.query_one(&st, &params).await?;
            let (mut queued, mut more): (i32, bool) = (row.get(0), row.get(1));
            // On Citus, every worker node replays what it delivered (up to
            // the limit each: `more` says whether to call again).
            for row in scope.nodes().query_all(REPLAY, &params).await? {
                queued += row.get::<_, i32>(0);
                more |= row.get::<_, bool>(1);
            }
            Ok(Reply::new(StatusCode::ACCEPTED, Replayed { queued, more }))
        })
        .await
}

/// Succeeded and failed attempts, and the success rate, over the last
/// hour, day and week, and hour by hour and day by day (test sends left out).
#[utoipa::path(get, path = "/endpoints/{id}/stats", tag = "endpoints", params(IdPath),
    responses((status = 200, body = Stats)))]
pub async fn stats(scope: Scope, ApiPath(p): ApiPath<IdPath>) -> Result<Json<Stats>, ApiError> {
    let db = scope.db().await?;
    let found = stats_of(&scope, &*db, &[p.id]).await?;
    match found.into_iter().next() {
        Some(one) => Ok(Json(one.stats)),
        None => Err(no_endpoint(p.id)),
    }
}

/// The statistics of several endpoints at once (a page of the list), in
/// one call: what `/endpoints/{id}/stats` answers for each.
#[utoipa::path(get, path = "/endpoints/stats", tag = "endpoints", params(StatsQuery),
    responses((status = 200, body = StatsList)))]
pub async fn stats_of_many(
    scope: Scope,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<StatsList>, ApiError> {
    let ids = parse_ids(&q.ids)?;
    let db = scope.db().await?;
    Ok(Json(StatsList {
        data: stats_of(&scope, &*db, &ids).await?,
    }))
}

/// A comma-separated list of 1 to [`MAX_STATS_IDS`] endpoint ids, each once.
fn parse_ids(list: &str) -> Result<Vec<Uuid>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_request", m, Some("ids".into()));
    let mut ids = Vec::new();
    for part in list.split(',') {
        let id = Uuid::parse_str(part.trim()).map_err(|_| {
            bad(format!(
                "ids must be endpoint ids separated by commas: {:?}",
                postbox_rules::error::shown(part)
            ))
        })?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() > MAX_STATS_IDS {
        return Err(bad(format!(
            "ids must name at most {MAX_STATS_IDS} endpoints"
        )));
    }
    Ok(ids)
}

/// The tenant's endpoints among `ids`, each with its statistics, in the
/// order of `ids`. On Citus, the attempts are counted on every worker node
/// too (each logs the attempts it made), and the rates made again from the
/// sums by `postbox._success_rate`, as the view makes them.
async fn stats_of(
    scope: &Scope,
    db: &impl GenericClient,
    ids: &[Uuid],
) -> Result<Vec<EndpointStats>, ApiError> {
    const COUNTS: &str = "SELECT id, succeeded_1h, failed_1h, succeeded_24h, failed_24h, succeeded_7d, failed_7d,
                                 success_rate_1h::float8, success_rate_24h::float8, success_rate_7d::float8
                            FROM postbox.endpoint_stats WHERE tenant = $1 AND id = ANY($2)";
    // Hour by hour, through the attempt log's (tenant, endpoint, time) index.
    const HOURLY: &str =
        "SELECT id, hours_ago, succeeded, failed FROM postbox.endpoint_hourly_stats
                           WHERE tenant = $1 AND id = ANY($2)";
    let tenant = &scope.tenant;
    let st = db.prepare_cached(COUNTS).await?;
    let rows = db.query(&st, &[tenant, &ids]).await?;
    let st = db.prepare_cached(HOURLY).await?;
    let mut hours = db.query(&st, &[tenant, &ids]).await?;
    // On Citus, every worker node's hours too (none off Citus).
    hours.extend(scope.nodes().query_all(HOURLY, &[tenant, &ids]).await?);
    let counts: Vec<(Uuid, (i32, i64, i64))> = hours
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    // (id, the six counts, the three rates), the endpoints the tenant has.
    let mut sums: Vec<(Uuid, [i64; 6], [Option<f64>; 3])> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)],
                [r.get(7), r.get(8), r.get(9)],
            )
        })
        .collect();
    if !scope.nodes().is_empty() {
        for r in scope.nodes().query_all(COUNTS, &[tenant, &ids]).await? {
            let id: Uuid = r.get(0);
            if let Some((_, c, _)) = sums.iter_mut().find(|(e, _, _)| *e == id) {
                for (i, v) in c.iter_mut().enumerate() {
                    *v += r.get::<_, i64>(i + 1);
                }
            }
        }
        let succeeded: Vec<i64> = sums
            .iter()
            .flat_map(|(_, c, _)| [c[0], c[2], c[4]])
            .collect();
        let failed: Vec<i64> = sums
            .iter()
            .flat_map(|(_, c, _)| [c[1], c[3], c[5]])
            .collect();
        let st = db
            .prepare_cached(
                "SELECT postbox._success_rate(s, f)::float8
                   FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS x(s, f, n) ORDER BY n",
            )
            .await?;
        let rates: Vec<Option<f64>> = db
            .query(&st, &[&succeeded, &failed])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (i, (_, _, r)) in sums.iter_mut().enumerate() {
            *r = [rates[3 * i], rates[3 * i + 1], rates[3 * i + 2]];
        }
    }
    let mut found: Vec<EndpointStats> = sums
        .into_iter()
        .map(|(id, c, r)| {
            let mine: Vec<_> = counts
                .iter()
                .filter(|(e, _)| *e == id)
                .map(|(_, c)| *c)
                .collect();
            let (hourly, daily) = buckets(&mine, 24, 7);
            EndpointStats {
                id,
                stats: Stats {
                    hourly,
                    daily,
                    succeeded_1h: c[0],
                    failed_1h: c[1],
                    success_rate_1h: r[0],
                    succeeded_24h: c[2],
                    failed_24h: c[3],
                    success_rate_24h: r[1],
                    succeeded_7d: c[4],
                    failed_7d: c[5],
                    success_rate_7d: r[2],
                },
            }
        })
        .collect();
    found.sort_by_key(|s| ids.iter().position(|i| *i == s.id));
    Ok(found)
}
