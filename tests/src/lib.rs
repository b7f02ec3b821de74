//! The end-to-end test harness: real anvil chains with the real contracts, deployed by the real
//! deploy script (`contracts/script/Deploy.s.sol`), and helpers that act as wallets and as the
//! platform's role holders. Later components (indexer, API, side services) join here.

mod chain;

pub use chain::{Role, TestChain, repo_root};
