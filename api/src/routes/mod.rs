//! The routes, each declared once with its OpenAPI operation (utoipa), so
//! the router and the document cannot drift apart.

pub mod deliveries;
pub mod endpoints;
pub mod events;
pub mod keys;
pub mod portal;

use crate::App;
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
        .routes(routes!(events::emit))
        .routes(routes!(portal::create, portal::revoke))
}
