//! The OpenAPI 3.1 document: generated from the handlers' annotations
//! (routes/), then finished here with what every operation shares, so the
//! annotations stay short: the tenant path parameter of the operator
//! copies, unique operation ids, the bearer key, the error answers and the
//! request id header. Served at /openapi.json; `api/openapi.json` is the
//! committed copy, which a test keeps identical.
//!
//! Knows no route: [`ApiDoc`] is what `routes::all` starts from, and
//! [`finish`] is told where the operator copies are.

use crate::error::ErrorBody;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder, Type};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "postbox",
        description = "Signed webhooks straight out of PostgreSQL: the management API. \
Tenant keys (admin, member) act on their own tenant under /v1/...; operator keys act for any tenant under \
/v1/tenants/{tenant}/... and emit events. Authenticate with `Authorization: Bearer pbk_...`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "endpoints", description = "A tenant's webhook endpoints."),
        (name = "deliveries", description = "Deliveries and their attempts."),
        (name = "api keys", description = "A tenant's API keys."),
        (name = "events", description = "The event catalog, and emitting events (operator keys)."),
        (name = "portal", description = "Links to a tenant's settings portal (operator keys).")
    )
)]
pub struct ApiDoc;

/// Answers every operation may give besides its own: the status and why.
const COMMON: &[(&str, &str)] = &[
    (
        "400",
        "The request is malformed: bad JSON, an unknown field, a bad parameter.",
    ),
    (
        "401",
        "No valid API key (missing, malformed, unknown or revoked).",
    ),
    ("403", "The key's role or kind may not do this, or its tenant's plan has no webhooks (rule tenant_suspended)."),
    (
        "404",
        "No such route, or nothing with this id for this tenant.",
    ),
    ("405", "The route does not take this method."),
    ("408", "The body did not arrive within the body timeout."),
    ("413", "The body is larger than the API accepts."),
    ("415", "The body is not JSON."),
    (
        "422",
        "One of postbox's rules refuses a value; the message names it.",
    ),
    (
        "429",
        "The key's rate limit, or too many failed authentications from this address: retry after Retry-After seconds.",
    ),
    ("500", "An internal error (logged with the request id)."),
    (
        "503",
        "The database is unavailable, or no connection came within the wait, or the tenant uses its whole share of connections (busy: retry after Retry-After seconds).",
    ),
];

fn operations(item: &mut utoipa::openapi::PathItem) -> Vec<(HttpMethod, &mut Operation)> {
    [
        (HttpMethod::Get, item.get.as_mut()),
        (HttpMethod::Put, item.put.as_mut()),
        (HttpMethod::Post, item.post.as_mut()),
        (HttpMethod::Delete, item.delete.as_mut()),
        (HttpMethod::Patch, item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "get",
        HttpMethod::Put => "put",
        HttpMethod::Post => "post",
        HttpMethod::Delete => "delete",
        HttpMethod::Patch => "patch",
        _ => "other",
    }
}

fn error_response(status: &str) -> String {
    format!("Error{status}")
}

/// Adds what every operation shares (see the module's header). Paths
/// under `operator_prefix` (but the event routes) are the operator copies
/// of tenant routes: they get the tenant path parameter.
pub fn finish(doc: &mut utoipa::openapi::OpenApi, operator_prefix: &str) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    doc.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    let request_id = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "The request's id: the client's X-Request-Id, or a new UUID.",
        ))
        .build();
    let retry_after = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some("Seconds until the key may call again."))
        .build();
    // The error answers, once each, referred to by every operation.
    for (status, why) in COMMON {
        let mut r = ResponseBuilder::new()
            .description(*why)
            .header("X-Request-Id", request_id.clone())
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
        if *status == "429" {
            r = r.header("Retry-After", retry_after.clone());
        }
        components
            .responses
            .insert(error_response(status), RefOr::T(r.build()));
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let operator_copy = path.starts_with(operator_prefix) && !path.ends_with("/events");
        for (method, op) in operations(item) {
            let id: String = format!("{}{}", method_name(&method), path)
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
                .split('_')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("_");
            op.operation_id = Some(id);
            if operator_copy {
                let tenant = ParameterBuilder::new()
                    .name("tenant")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some("The tenant (operator keys only)."))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build();
                op.parameters.get_or_insert_with(Vec::new).insert(0, tenant);
                op.summary = op
                    .summary
                    .take()
                    .map(|s| format!("{s} (operator keys, for a tenant)"));
            }
            for (status, _) in COMMON {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| {
                        RefOr::Ref(Ref::new(format!(
                            "#/components/responses/{}",
                            error_response(status)
                        )))
                    });
            }
            for r in op.responses.responses.values_mut() {
                if let RefOr::T(r) = r {
                    r.headers.insert("X-Request-Id".into(), request_id.clone());
                }
            }
        }
    }
}
