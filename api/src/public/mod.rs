//! The public API for third parties: indexed chain data under `/v1` (events, accounts, services,
//! domains; no login, rate-limited) and the live stream of indexed blocks and platform notices.

pub mod stream;
pub mod v1;

pub use v1::router;

/// What the public API uses: the platform, the notice bus its stream fans out, the account
/// cache, and every read cache (which its listener keeps fresh).
#[derive(Debug, Clone)]
pub struct PublicState {
    /// The shared state.
    pub platform: crate::platform::Platform,
    /// Indexed-block and platform notices for `/v1/stream`, fed by NOTIFY.
    pub notices: tokio::sync::broadcast::Sender<stream::Notice>,
    /// `/v1/accounts/{address}` by account, until the indexer's next commit.
    pub accounts:
        std::sync::Arc<crate::http::cache::ReadCache<alloy::primitives::Address, v1::AccountView>>,
    /// Every read cache of the API.
    pub caches: crate::http::cache::Caches,
    /// A tick for every batch the indexer commits, for jobs that run after each (depletion).
    pub indexed: tokio::sync::broadcast::Sender<()>,
    /// Accounts' balances (billing's), for `/v1/stream`.
    pub balances: std::sync::Arc<dyn crate::platform::Balances>,
}
crate::platform::feature_state!(PublicState);

/// The public API's job: the listener that feeds the live stream and keeps the read caches fresh.
pub fn jobs(state: &PublicState) -> Vec<crate::jobs::Job> {
    vec![stream::job(state)]
}
