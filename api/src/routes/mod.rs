//! Every route the API serves. The API's own, each declared once with its
//! OpenAPI operation (utoipa), so the router and the document cannot drift
//! apart ([`all`]); and those outside the document ([`undocumented`]): the
//! document itself, `/healthz`, and the settings portal's page.

pub mod choices;
pub mod deliveries;
pub mod endpoints;
pub mod events;
pub mod keys;
pub mod portal;

use crate::App;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where a tenant key reaches its own tenant's routes.
pub const TENANT_KEYS: &str = "/v1";
/// Where an operator key reaches any tenant's.
pub const OPERATOR_KEYS: &str = "/v1/tenants/{tenant}";

/// The tenant-scoped routes, relative: mounted at [`TENANT_KEYS`] and at
/// [`OPERATOR_KEYS`]. (One `routes!` per path: utoipa-axum mounts a
/// call's methods on each of its paths.)
fn tenant_routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(endpoints::list, endpoints::create))
        .routes(routes!(endpoints::register, endpoints::unregister))
        .routes(routes!(
            endpoints::get,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(endpoints::send_test))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(endpoints::replay))
        .routes(routes!(endpoints::stats))
        .routes(routes!(endpoints::stats_of_many))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::get))
        .routes(routes!(deliveries::retry))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::revoke))
}

/// Every authenticated route, and their document (not yet finished:
/// see [`crate::openapi::finish`]).
pub fn all() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(<crate::openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .nest(TENANT_KEYS, tenant_routes())
        .nest(OPERATOR_KEYS, tenant_routes())
        .routes(routes!(events::event_types))
        .routes(routes!(choices::choices))
        .routes(routes!(events::emit))
        .routes(routes!(portal::create, portal::revoke))
}

/// The routes outside the document: the document itself (`doc`, its text),
/// the liveness answer ([`crate::metrics::healthz`]), and the settings
/// portal's page with its session's routes ([`crate::portal`]; the links
/// to it are [`portal`]'s, in the document).
pub fn undocumented(doc: Arc<str>) -> Router<App> {
    use crate::portal as page;
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc.to_string(),
                )
            }),
        )
        .route("/healthz", get(crate::metrics::healthz))
        .route(
            "/portal",
            // Relative: under whatever prefix a proxy adds.
            get(|| async { axum::response::Redirect::permanent("portal/") }),
        )
        .route("/portal/", get(page::index))
        .route("/portal/enter", get(page::enter))
        .route("/portal/app.js", get(page::script))
        .route("/portal/app.css", get(page::style))
        .route("/portal/theme.css", get(page::theme))
        .route("/portal/logo", get(page::logo))
        .route("/v1/portal/session", get(page::session))
        .route("/v1/portal/sign-out", post(page::sign_out))
}
