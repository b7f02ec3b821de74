//! Operating the platform: liveness, readiness and metrics, admins' system health
//! (`/analytics/system`), domain ownership reads (`/blockchain/ownership`) and chain-event
//! deliveries (`/blockchain/listener`).

pub mod analytics;
pub mod blockchain;
pub mod health;

use std::sync::Arc;

use axum::extract::FromRef;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::auth::Auth,
    platform::{Platform, feature_state},
};

/// What the operational routes use: the platform, the relayer (its balance), and which jobs are
/// down.
#[derive(Debug, Clone)]
pub struct SystemState {
    /// The shared state.
    pub platform: Platform,
    /// The (first) relayer key, whose balance health reports.
    pub relayer: Option<alloy::primitives::Address>,
    /// Which required background jobs are down.
    pub jobs: crate::jobs::JobHealth,
    /// The keys that send through the outbox: role and address.
    pub signing_keys: Arc<Vec<(&'static str, alloy::primitives::Address)>>,
}
feature_state!(SystemState);

/// The operational and `/blockchain` read routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    SystemState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(blockchain::ownership))
        .routes(routes!(blockchain::transaction))
        .routes(routes!(blockchain::listener))
        .routes(routes!(analytics::system))
}
