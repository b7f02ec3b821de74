//! The OpenAPI document's frame; paths and schemas are added by the routers that serve them.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

/// The API's OpenAPI 3.1 document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "DecentraSpace API",
        description = "Decentralized web hosting: wallet sign-in, credits on Polygon, storage, hosting and domains.\n\nEvery path is also served with a trailing slash (`/auth/login/` as in the product spec). Errors are RFC 9457 `application/problem+json`; match on `type`.",
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem)),
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
