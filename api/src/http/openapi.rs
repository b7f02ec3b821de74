//! The OpenAPI document's frame; paths and schemas are added by the routers that serve them, and
//! [`complete`] adds the problem responses the shared layers answer on every route.

use std::collections::BTreeMap;

use utoipa::{
    IntoResponses, Modify, OpenApi,
    openapi::{
        ContentBuilder, RefOr, Response, ResponseBuilder,
        path::{Operation, ParameterIn},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

/// The API's OpenAPI 3.1 document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "DecentraSpace API",
        description = "Decentralized web hosting: wallet sign-in, credits on Polygon, storage, hosting and domains.\n\nEvery path is also served with a trailing slash (`/auth/login/` as in the product spec). Errors are RFC 9457 `application/problem+json`; match on `type`.",
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::http::error::Problem)),
    tags(
        (name = "auth", description = "Wallet sign-in (SIWE), tokens, tiers"),
        (name = "billing", description = "Credits: balance, history, payment methods"),
        (name = "services", description = "One's services: state, price, pause and resume"),
        (name = "storage", description = "Files on IPFS, streamed uploads within tier limits"),
        (name = "blockchain", description = "Relayed transactions (raw or gasless forward requests)"),
        (name = "public", description = "Indexed chain data for third parties (no login)"),
        (name = "analytics", description = "Credit usage"),
        (name = "admin", description = "Platform administration (on-chain admin role)"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

/// A problem+json response with `description`.
fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// Adds to every operation of `doc` the problem responses that the layers every route sits
/// behind may answer, where the route's own annotation does not describe them already:
/// - 400: a malformed path, query or body (a NUL anywhere is refused on every route);
/// - 401: no valid access token, on routes that need one;
/// - 413, 415, 422: a JSON body too large, not sent as JSON, or without the expected fields;
/// - 413 on multipart uploads too large;
/// - 429: over the per-IP (and, signed in, the per-account) budget.
///
/// An error response that a route's annotation names without a body gets the problem+json one.
pub(crate) fn complete(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            add_standard_responses(operation);
            describe_problems(operation);
        }
    }
}

/// Gives every error response that a route's annotation names without a body (`(status = 409,
/// description = "...")`) the problem+json body all errors are answered with.
fn describe_problems(operation: &mut Operation) {
    for (status, response) in &mut operation.responses.responses {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let RefOr::T(response) = response
            && is_error
            && response.content.is_empty()
        {
            response.content = problem("").content;
        }
    }
}

fn add_standard_responses(operation: &mut Operation) {
    let secured = operation.security.iter().flatten().any(|requirement| {
        serde_json::to_value(requirement)
            .ok()
            .and_then(|v| v.as_object().map(|o| o.contains_key("bearer")))
            .unwrap_or(false)
    });
    let body_types: Vec<String> =
        operation.request_body.iter().flat_map(|body| body.content.keys().cloned()).collect();
    let json_body = body_types.iter().any(|t| t == "application/json");
    let multipart = body_types.iter().any(|t| t.starts_with("multipart/"));
    let has_path_params =
        operation.parameters.iter().flatten().any(|p| matches!(p.parameter_in, ParameterIn::Path));
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(problem(description)));
    };
    add(
        "400",
        if has_path_params {
            "The request is invalid: a malformed or out-of-range path, query or body value"
        } else {
            "The request is invalid: a malformed query or body value"
        },
    );
    if secured {
        add("401", "A valid access token is required");
    }
    if json_body {
        add("413", "The request body is too large");
        add("415", "The body must be sent as application/json");
        add("422", "The body does not have the expected fields");
    }
    if multipart {
        add("413", "The upload is too large");
    }
    add("429", "Too many requests; retry after the Retry-After seconds");
}

/// Reusable problem responses for route annotations: `responses((status = 200, body = T),
/// NotFound, Forbidden)`.
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident = $status:literal, $description:literal;)+) => {
        $(
            $(#[$doc])*
            pub(crate) struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    BTreeMap::from([($status.to_owned(), RefOr::T(problem($description)))])
                }
            }
        )+
    };
}

problem_responses! {
    /// 403: signed in, but not allowed (another wallet's resource, or not an admin).
    Forbidden = "403", "Not allowed";
    /// 404: no such resource (or not the caller's).
    NotFound = "404", "Not found";
    /// 409: the request conflicts with the resource's current state.
    Conflict = "409", "The request conflicts with the current state";
    /// 503: a dependency (database, chain node, storage node, provider) is unavailable or not
    /// configured here.
    Unavailable = "503", "A dependency is unavailable or not configured";
}
