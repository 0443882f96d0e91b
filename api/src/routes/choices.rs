//! The values settings and filters take, for a client's forms (the portal
//! loads them once): each from where its rule lives, so no client restates
//! one. Signature styles come from the rules crate, delivery statuses from
//! the deliveries filter. Defaults are not among them: a client sends
//! nothing and postbox's SQL applies its own.

use crate::auth::Caller;
use crate::routes::deliveries::DeliveryStatus;
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
}

/// The values endpoint settings and filters take. Defaults are not listed:
/// a client leaves a value out and postbox applies its own.
#[utoipa::path(get, path = "/v1/choices", tag = "endpoints", responses((status = 200, body = Choices)))]
pub async fn choices(_: Caller) -> Json<Choices> {
    Json(Choices {
        signature_styles: SignatureStyle::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        delivery_statuses: DeliveryStatus::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        grace_seconds: GRACE_SECONDS.to_vec(),
    })
}
