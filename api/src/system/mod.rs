//! Operating the platform: liveness, readiness and metrics, admins' system health
//! (`/analytics/system`), domain ownership reads (`/blockchain/ownership`) and chain-event
//! deliveries (`/blockchain/listener`).

pub mod analytics;
pub mod blockchain;
pub mod health;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// The operational and `/blockchain` read routes.
pub fn router() -> OpenApiRouter<AppState> {
    health::router().merge(analytics::router()).merge(blockchain::router())
}
