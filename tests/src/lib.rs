//! The end-to-end test harness: real anvil chains with the real contracts, deployed by the real
//! deploy script (`contracts/script/Deploy.s.sol`), a fresh Postgres database per test, the
//! indexer in-process or as its binary, and helpers that act as wallets and as the platform's
//! role holders, and the API in-process with a client that signs in as a wallet does.

mod api;
mod archive;
mod arweave;
mod balancer;
mod chain;
mod cluster;
mod db;
mod dns;
mod ens;
mod fly;
mod gandi;
mod github;
mod indexer;
mod ipfs;
mod paystack;
mod pebble;
mod registry;
mod relay;
mod rpc_hold;
mod served;
mod sse;
mod stack;
mod wrk;

pub use api::{
    ApiProcess, PROBLEMS, SIWE_DOMAIN, SIWE_URI, Session, TestApi, api_config, eventually,
    problem_type, role_key, siwe_message,
};
pub use archive::site_tar_gz;
pub use arweave::TestArweave;
pub use balancer::RoundRobin;
pub use chain::{Role, TestChain, repo_root};
pub use cluster::TestCluster;
pub use db::{TestDb, server_url};
pub use dns::TestDns;
pub use ens::{TestEns, TestEthRegistrar, ens_namehash};
pub use fly::{FLY_APP, FLY_TOKEN, FakeContainer, FakeFly};
pub use gandi::{FakeGandi, GANDI_TOKEN};
pub use github::{
    Delivered, FakeGitHub, FakeHook, GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET, GITHUB_WEBHOOK_SECRET,
    github_signature, pull_request_payload, push_payload,
};
pub use indexer::{
    IndexerProcess, IndexerTask, indexer_binary, indexer_config, wait_for_checkpoint,
    workspace_binary,
};
pub use ipfs::TestIpfs;
pub use paystack::{FakePaystack, FakeTransaction, PAYSTACK_SECRET, paystack_signature};
pub use pebble::TestPebble;
pub use registry::TestRegistry;
pub use relay::{forward, relay_signed};
pub use rpc_hold::{Hold, HoldingRpc};
pub use served::free_port;
pub use sse::{SseEvent, SseReader};
pub use stack::{Stack, StackBuilder};
pub use wrk::{WrkRun, wrk};
