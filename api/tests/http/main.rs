//! The fast tier: the whole router over a fresh database per test (`#[sqlx::test]`), called
//! in-process through `oneshot`, with no chain, indexer or IPFS node behind it. Validation,
//! authentication and problem+json are checked here; what needs the chain is in `tests/`.

mod support;

mod analytics;
mod auth;
mod input;
mod layout;
mod limits;
mod metrics;
mod openapi;
mod reads;
