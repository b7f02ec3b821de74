//! The DecentraSpace REST API: the door to the indexed chain state and to the platform's
//! off-chain work.
//!
//! Invariants it keeps:
//! - reads (balances, history, services, domains) come from the tables the indexer fills, never
//!   from the RPC on the request path;
//! - every non-public route needs a valid access token, and admin routes the on-chain admin role
//!   as indexed;
//! - every error is RFC 9457 problem+json with a stable `type`; internal causes are logged, never
//!   sent;
//! - every documented path answers with and without a trailing slash, and the OpenAPI document is
//!   built from the same registrations as the router, so it cannot miss a route.

pub mod accounts;
mod app;
pub mod billing;
pub mod certificates;
pub mod chain;
mod config;
pub mod databases;
pub mod domains;
pub mod gateway;
pub mod github;
pub mod hosting;
pub mod http;
pub mod jobs;
pub mod notices;
pub mod platform;
pub mod public;
mod random;
pub mod reads;
pub mod relay;
pub mod seal;
pub mod services;
mod state;
pub mod storage;
pub mod system;
pub mod wakes;

pub use app::{
    App, app, background_jobs, chain_jobs, layered, openapi_document, routes, serve,
    streaming_routes,
};
pub use config::Config;
pub use http::{limits::RateLimits, openapi::ApiDoc};
pub use state::AppState;
