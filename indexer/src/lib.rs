//! The DecentraSpace indexer: mirrors the platform contracts' events from the chain into
//! Postgres, so that the API answers reads without touching the RPC.
//!
//! Invariants it keeps:
//! - Every log of every platform contract up to the checkpoint is in `events` exactly once
//!   (unique on chain, block and log index), decoded where the bindings know it, raw always.
//! - Events, the projections they change and the checkpoint are written in one transaction, so a
//!   crash at any point loses nothing and duplicates nothing.
//! - Projections are folds of `events` ([`projection`]): re-folding from the events table gives the
//!   same rows (`indexer reindex`), and a reorg re-folds only the entities it touched.
//! - Final blocks are backfilled in large concurrent ranges; unfinalized ones are followed block by
//!   block with their hashes kept, so a reorg is seen by parent hash and rolled back to the fork.
//! - One writer per chain, elected by a Postgres advisory lock; a second instance stands by.

mod config;
pub mod event;
pub mod metrics;
pub mod projection;
pub mod rpc;
pub mod store;
mod sync;
pub mod verify;

pub use config::{Cli, Command, Config, Finality};
pub use sync::Indexer;
