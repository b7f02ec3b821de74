//! The public API for third parties: indexed chain data under `/v1` (events, accounts, services,
//! domains; no login, rate-limited) and the live stream of indexed blocks and platform notices.

pub mod stream;
pub mod v1;

pub use v1::router;

/// The public API's job: the listener that feeds the live stream and keeps the read caches fresh.
pub fn jobs(state: &crate::AppState) -> Vec<crate::jobs::Job> {
    vec![stream::job(state)]
}
