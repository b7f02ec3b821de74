//! The indexer's configuration, from flags or the environment.

use std::path::PathBuf;

use clap::Parser;

/// Mirrors DecentraSpace contract events into Postgres.
#[derive(Debug, Clone, Parser)]
#[command(name = "indexer", version, about)]
pub struct Config {
    /// The chain's JSON-RPC HTTP endpoint.
    #[arg(long, env = "RPC_URL", default_value = "http://127.0.0.1:8545")]
    pub rpc_url: String,

    /// The deployment record written by the deploy script.
    #[arg(long, env = "DEPLOYMENTS_FILE", default_value = "deployments/31337.json")]
    pub deployments_file: PathBuf,

    /// The Postgres database the events are mirrored into.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}
