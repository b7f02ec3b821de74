//! The indexer's configuration, from flags or the environment.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand};

/// Mirrors DecentraSpace contract events into Postgres.
#[derive(Debug, Clone, Parser)]
#[command(name = "indexer", version, about)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub config: Config,
}

/// The indexer's commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Index continuously: backfill, then follow the head (the default).
    Run,
    /// Compare every indexed balance, account, service and domain with the chain at the checkpoint;
    /// exits non-zero on any difference.
    Verify,
    /// Rebuild every projection from the stored events.
    Reindex,
    /// Apply the database migrations and exit.
    Migrate,
}

/// Settings shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// The chain's JSON-RPC HTTP endpoint.
    #[arg(long, env = "RPC_URL", default_value = "http://127.0.0.1:8545")]
    pub rpc_url: String,

    /// A websocket endpoint to follow new heads; polling when unset.
    #[arg(long, env = "WS_URL")]
    pub ws_url: Option<String>,

    /// The chain id expected; the indexer refuses to start when the RPC or the deployment record
    /// serves another. Defaults to the deployment record's.
    #[arg(long, env = "CHAIN_ID")]
    pub chain_id: Option<u64>,

    /// The deployment record written by the deploy script.
    #[arg(long, env = "DEPLOYMENTS_FILE", default_value = "deployments/31337.json")]
    pub deployments_file: PathBuf,

    /// The first block to index; defaults to the deployment's block.
    #[arg(long, env = "START_BLOCK")]
    pub start_block: Option<u64>,

    /// When a block is final: `finalized` (the node's tag) or a depth in blocks.
    #[arg(long, env = "FINALITY", default_value = "200")]
    pub finality: Finality,

    /// The most blocks one `eth_getLogs` may span (it shrinks when the node refuses).
    #[arg(long, env = "MAX_BLOCK_RANGE", default_value_t = 2_000)]
    pub max_block_range: u64,

    /// How many `eth_getLogs` requests may be in flight during backfill.
    #[arg(long, env = "FETCH_CONCURRENCY", default_value_t = 4)]
    pub fetch_concurrency: usize,

    /// How many events one database transaction may hold.
    #[arg(long, env = "BATCH_EVENTS", default_value_t = 25_000)]
    pub batch_events: usize,

    /// A backfill batch of at least this many events sets the history tables' secondary indexes
    /// aside until the backfill ends (0: never).
    #[arg(long, env = "DEFER_INDEXES_AT", default_value_t = 20_000)]
    pub defer_indexes_at: usize,

    /// How often to poll for new blocks without a websocket, in milliseconds.
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 1_000)]
    pub poll_interval_ms: u64,

    /// Where to serve Prometheus metrics, `/health` and `/ready` (an operations address, not a
    /// public one; unset: not served).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// How many blocks behind the head the writer may be and still answer `/ready` with 200.
    #[arg(long, env = "READY_MAX_LAG_BLOCKS", default_value_t = 50)]
    pub ready_max_lag_blocks: u64,

    /// The Postgres database the events are mirrored into.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
}

impl Config {
    /// The polling interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// When a block counts as final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finality {
    /// The node's `finalized` tag (falls back to 200 blocks where the node lacks it).
    Tag,
    /// This many blocks below the head.
    Depth(u64),
}

impl FromStr for Finality {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "finalized" {
            return Ok(Self::Tag);
        }
        s.parse()
            .map(Self::Depth)
            .map_err(|_| format!("expected `finalized` or a depth in blocks, got {s:?}"))
    }
}
