//! The values settings and filters take, for a client's forms (the portal
//! loads them once): each from where its rule lives, so no client restates
//! one. Signature styles come from the rules crate, delivery statuses from
//! the deliveries filter, the defaults from SQL (`postbox.defaults()`): a
//! client that leaves a value out gets the default, and may name it.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::deliveries::DeliveryStatus;
use axum::extract::State;
use axum::Json;
use postbox_rules::headers::SignatureStyle;
use serde::Serialize;
use utoipa::ToSchema;

/// Grace periods a form offers when a secret is rotated, in seconds: now,
/// an hour, a day, a week (postbox's SQL holds the range it accepts).
pub const GRACE_SECONDS: [i32; 4] = [0, 3600, 86400, 7 * 86400];

#[derive(Serialize, ToSchema)]
pub struct Choices {
    /// The styles `signature_style` takes.
    pub signature_styles: Vec<String>,
    /// The statuses a delivery has, and the deliveries filter takes.
    pub delivery_statuses: Vec<String>,
    /// Grace periods to offer when rotating a secret, in seconds.
    pub grace_seconds: Vec<i32>,
    /// What postbox applies to a value left out.
    pub defaults: Defaults,
}

/// The defaults of values a client may leave out (SQL's `postbox.defaults()`).
#[derive(Serialize, ToSchema)]
pub struct Defaults {
    pub signature_style: String,
    /// A rotation's grace period, in seconds.
    pub grace_seconds: i32,
    /// How long a portal link works, in seconds.
    pub portal_link_seconds: i32,
    /// The event a test send sends.
    pub test_event_type: String,
}

/// The values endpoint settings and filters take, and the defaults postbox
/// applies to a value left out.
#[utoipa::path(get, path = "/v1/choices", tag = "endpoints", responses((status = 200, body = Choices)))]
pub async fn choices(_: Caller, State(app): State<crate::App>) -> Result<Json<Choices>, ApiError> {
    let db = app.db.get().await?;
    let st = db
        .prepare_cached(
            "SELECT signature_style, extract(epoch FROM rotation_grace)::int4,
                    extract(epoch FROM portal_link_lifetime)::int4, test_event_type
               FROM postbox.defaults()",
        )
        .await?;
    let d = db.query_one(&st, &[]).await?;
    Ok(Json(Choices {
        signature_styles: SignatureStyle::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        delivery_statuses: DeliveryStatus::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        grace_seconds: GRACE_SECONDS.to_vec(),
        defaults: Defaults {
            signature_style: d.get(0),
            grace_seconds: d.get(1),
            portal_link_seconds: d.get(2),
            test_event_type: d.get(3),
        },
    }))
}
