//! Accounts: signing in with a wallet (SIWE, access and refresh tokens), API tokens for CI and the
//! CLI, one's tier, and the admins' management of accounts and of the free tier's duration.

pub mod api_tokens;
mod login;
pub mod manage;
pub mod registration;
pub mod siwe;
pub mod tier;
pub mod tokens;

use axum::extract::FromRef;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::auth::Auth,
    platform::{Platform, feature_state},
};

/// What the accounts' routes use: the platform, and the sessions they issue.
#[derive(Debug, Clone)]
pub struct AccountsState {
    /// The shared state.
    pub platform: Platform,
    /// Issues, rotates and revokes sessions.
    pub sessions: tokens::Sessions,
}
feature_state!(AccountsState);

/// The accounts' jobs: writing the on-chain registrations logins left unwritten (with an
/// operator key), and forgetting nonces and refresh tokens a day past their expiry, hourly (best
/// effort: readiness does not depend on it).
pub fn jobs(state: &AccountsState) -> Vec<crate::jobs::Job> {
    let db = state.db.clone();
    let hourly = std::time::Duration::from_secs(3600);
    let registrations = registration::job(state);
    registrations
        .into_iter()
        .chain([crate::jobs::Job::periodic(
            "expired-sessions",
            move || {
                crate::jobs::Schedule::every(hourly).first_after(std::time::Duration::from_secs(60))
            },
            move || {
                let db = db.clone();
                async move { tokens::forget_expired(&db).await }
            },
        )
        .optional()])
        .collect()
}

/// The `/auth` routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    AccountsState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(login::nonce))
        .routes(routes!(api_tokens::create, api_tokens::list))
        .routes(routes!(api_tokens::revoke))
        .routes(routes!(login::login))
        .routes(routes!(login::refresh))
        .routes(routes!(login::logout))
        .routes(routes!(tier::read_tier, tier::set_tier))
        .routes(routes!(manage::list_accounts))
        .routes(routes!(manage::account_detail))
        .routes(routes!(manage::set_status))
        .routes(routes!(manage::set_free_tier_duration))
}
