//! Billing: credits and what spends them. The ledger's mirror (balance, history, payment methods),
//! recharges by card (Paystack) and with tokens, usage recorded by internal services, credit
//! analytics, the meter that charges active services, depletion (suspending the services of an
//! account whose credit ran out), and one-off charges and refunds.

pub mod analytics;
pub mod card;
pub mod card_worker;
pub mod charges;
pub mod depletion;
pub mod ledger;
pub mod metering;
pub mod token;
pub mod usage;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub use metering::{Meter, Report};

/// The billing jobs: confirming card payments, suspending depleted accounts' services (with an
/// operator key) and the meter (with a billing key).
pub fn jobs(state: &AppState) -> Vec<crate::jobs::Job> {
    let mut jobs = vec![card_worker::job(state)];
    jobs.extend(depletion::job(state));
    jobs.extend(Meter::new(state).map(|meter| meter.job(state.config.meter_interval())));
    jobs
}

/// The `/billing` and `/analytics/credit` routes.
pub fn router() -> OpenApiRouter<AppState> {
    ledger::router().merge(card::router()).merge(usage::router()).merge(analytics::router())
}
