//! The DecentraSpace indexer: mirrors the platform contracts' events from the chain into
//! Postgres, so that the API answers reads without touching the RPC.
//!
//! Invariant it will keep: the indexed tables are a fold of the chain's events up to the
//! checkpoint; dropping them and re-indexing gives the same state. This crate is the skeleton the
//! indexer grows from: its configuration and the check that the RPC serves the chain the
//! deployment record belongs to.

mod config;

pub use config::Config;
