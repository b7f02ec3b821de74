//! Billing: credits and what spends them. The ledger's mirror (balance, history, payment methods),
//! recharges by card (Paystack) and with tokens, usage recorded by internal services, credit
//! analytics, the meter that charges active services, depletion (suspending the services of an
//! account whose credit ran out), and one-off charges and refunds.

pub mod analytics;
pub mod available;
pub mod card;
pub mod card_worker;
pub mod charges;
pub mod depletion;
pub mod ledger;
pub mod metering;
pub mod token;
pub mod usage;

use std::sync::Arc;

use alloy::primitives::Address;
use axum::extract::FromRef;
use decentraspace_clients::paystack::CardPayments;
use tokio::sync::broadcast;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::{auth::Auth, cache::ReadCache};

pub use metering::{Meter, Report};

/// What billing uses: the platform and the keys that charge and credit ([`charges::Charges`]),
/// the card provider, the notice bus depletion wakes on, and the balance cache.
#[derive(Debug, Clone)]
pub struct BillingState {
    /// The platform, with the billing and payment-oracle keys.
    pub charges: charges::Charges,
    /// The card-payment provider (Paystack); unset without a secret key.
    pub payments: Option<Arc<dyn CardPayments>>,
    /// A tick for every batch the indexer commits (depletion runs after each).
    pub indexed: broadcast::Sender<()>,
    /// What `/billing/balance` is computed from, by account, until the indexer's next commit.
    pub balances: Arc<ReadCache<Address, Arc<available::Snapshot>>>,
}

impl std::ops::Deref for BillingState {
    type Target = charges::Charges;

    fn deref(&self) -> &Self::Target {
        &self.charges
    }
}

/// The billing jobs: confirming card payments, suspending depleted accounts' services (with an
/// operator key) and the meter (with a billing key).
pub fn jobs(state: &BillingState) -> Vec<crate::jobs::Job> {
    let mut jobs = vec![card_worker::job(state)];
    jobs.extend(depletion::job(state));
    jobs.extend(Meter::new(state).map(|meter| meter.job(state.config.meter_interval())));
    jobs
}

/// The `/billing` and `/analytics/credit` routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    BillingState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(ledger::balance))
        .routes(routes!(ledger::history))
        .routes(routes!(ledger::payment_methods))
        .routes(routes!(card::recharge))
        .routes(routes!(card::recharge_status))
        .routes(routes!(card::webhook))
        .routes(routes!(card::set_fiat_rate))
        .routes(routes!(usage::record))
        .routes(routes!(usage::show))
        .routes(routes!(analytics::credit_analytics))
}
