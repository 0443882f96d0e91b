//! Events: the catalog, and emitting over HTTP for producers that do not
//! use SQL (operator keys only). Emitting is the hot path: one statement,
//! no transaction of its own, and `Idempotency-Key` is emit's own
//! idempotency key (a repeat gets the first event's id, within the
//! idempotency_keys window, whether it came over HTTP or SQL).

use crate::auth::{role, Admission, Caller, Role};
use crate::body::{ApiJson, ApiPath};
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct EventType {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema of the data, if the catalog has one.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// A sample of the data; what a test send sends.
    #[schema(value_type = Option<Object>)]
    pub example: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    pub data: Vec<EventType>,
}

/// The event catalog: what endpoints may subscribe to. postbox's own
/// events (`postbox.*`, which go only to the operator tenant) are listed
/// for operator keys only.
#[utoipa::path(get, path = "/v1/event-types", tag = "events", responses((status = 200, body = EventTypeList)))]
pub async fn event_types(
    caller: Caller,
    axum::extract::State(app): axum::extract::State<crate::App>,
) -> Result<Json<EventTypeList>, ApiError> {
    let db = app.db.get().await?;
    let st = db
        .prepare_cached(
            "SELECT name, description, schema, example FROM postbox.event_types
              WHERE $1 OR NOT postbox._reserved_type(name) ORDER BY name",
        )
        .await?;
    let operator = caller.tenant.is_none();
    let data = db
        .query(&st, &[&operator])
        .await?
        .iter()
        .map(|r| EventType {
            name: r.get(0),
            description: r.get(1),
            schema: r.get(2),
            example: r.get(3),
        })
        .collect();
    Ok(Json(EventTypeList { data }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// A type from the catalog.
    pub event_type: String,
    /// The event's data: a JSON object.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Endpoints with `"ordering": "key"` receive the events of one
    /// ordering key one at a time, in emit order (for example the id of
    /// the resource the event is about). Without one, such an endpoint
    /// orders all its events as one key.
    #[serde(default)]
    pub ordering_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Emitted {
    /// The event's id (the first one's, for a repeated Idempotency-Key).
    pub id: Uuid,
}

/// Emits an event for the tenant: each of its endpoints subscribed to the
/// type gets a signed delivery.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/events", tag = "events", request_body = NewEvent,
    params(("tenant" = String, Path, description = "The tenant."),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h gets the first event's id.")),
    responses((status = 202, body = Emitted)))]
pub async fn emit(
    State(app): State<App>,
    admission: Admission,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    body: ApiJson<NewEvent>,
) -> Result<(StatusCode, Json<Emitted>), ApiError> {
    let key = crate::idempotency::key(&headers)?;
    // The hot path: authentication and the emit in one statement, one
    // round trip (two cost a quarter more of PostgreSQL's CPU per event,
    // measured). emit runs only for an operator key.
    let db = app.db.get().await?;
    let st = db
        .prepare_cached(
            "SELECT a.role, CASE WHEN a.role = 'operator' THEN postbox.emit($2, $3, $4, $5, $6) END
               FROM postbox.authenticate_api_key($1) a",
        )
        .await?;
    let row = db
        .query_opt(
            &st,
            &[
                &admission.hash.as_slice(),
                &tenant,
                &body.value.event_type,
                &body.value.data,
                &key,
                &body.value.ordering_key,
            ],
        )
        .await?;
    // The token was taken before the statement (Admission): an event that
    // was emitted is never answered 429.
    let Some(row) = row else {
        return Err(admission.failed(&app));
    };
    admission.known(&app);
    if role(row.get(0))? != Role::Operator {
        return Err(ApiError::Forbidden("only operator keys may do this"));
    }
    Ok((StatusCode::ACCEPTED, Json(Emitted { id: row.get(1) })))
}
