//! Running the indexer against a test chain and database: in-process (as a task) or as the real
//! binary (for kill -9 and standby tests).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use decentraspace_indexer::{Config, Finality, Indexer};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{TestChain, TestDb};

/// The indexer configuration for `chain` and `db`: every block final beyond `finality_depth`,
/// polling every 50 ms.
pub fn indexer_config(chain: &TestChain, db: &TestDb, finality_depth: u64) -> Config {
    Config {
        rpc_url: chain.endpoint(),
        ws_url: None,
        chain_id: None,
        deployments_file: chain.deployment_file.clone(),
        start_block: None,
        finality: Finality::Depth(finality_depth),
        max_block_range: 2_000,
        fetch_concurrency: 4,
        batch_events: 50_000,
        defer_indexes_at: 20_000,
        poll_interval_ms: 50,
        metrics_addr: None,
        ready_max_lag_blocks: 50,
        database_url: db.url.clone(),
    }
}

/// An indexer running as a task of the test's runtime; stopped when dropped.
#[derive(Debug)]
pub struct IndexerTask {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl IndexerTask {
    /// Starts indexing with `config`.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let indexer = Indexer::new(config).await?;
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(async move {
            indexer
                .run(async {
                    stopped.await.ok();
                })
                .await
        });
        Ok(Self { stop: Some(stop), handle: Some(handle) })
    }

    /// Stops it and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        match self.handle.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }
}

impl Drop for IndexerTask {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// The indexer binary built next to the test binaries (`cargo build --workspace --bins`).
pub fn indexer_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("indexer", "decentraspace-indexer")
}

/// The binary `name` of the workspace's `package`, built next to the test binaries.
pub fn workspace_binary(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).context("test binary location")?;
    let bin = dir.join(name);
    if !bin.exists() {
        bail!("{} is missing: run `cargo build -p {package}` (make test does)", bin.display());
    }
    Ok(bin)
}

/// The indexer binary as a child process with `config` in its environment; killed when dropped.
#[derive(Debug)]
pub struct IndexerProcess {
    /// The process.
    pub child: Child,
    /// Where its output goes (unless `INDEXER_LOG` sends it to the test's own output).
    log: Option<PathBuf>,
}

impl IndexerProcess {
    /// Starts `indexer run` (or another subcommand) with `config`.
    ///
    /// Its warnings and errors (or everything at `INDEXER_LOG`'s level, shown live) are kept so a
    /// failing test can tell what the process went through: see [`IndexerProcess::log`].
    pub fn spawn(config: &Config, command: &str) -> anyhow::Result<Self> {
        let finality = match config.finality {
            Finality::Tag => "finalized".to_owned(),
            Finality::Depth(d) => d.to_string(),
        };
        let shown = std::env::var_os("INDEXER_LOG").is_some();
        let log = (!shown).then(|| {
            static SPAWNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::env::temp_dir()
                .join(format!("decentraspace-indexer-{}-{n}.log", std::process::id()))
        });
        let output = |log: &Option<PathBuf>| -> anyhow::Result<Stdio> {
            Ok(match log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .context("open the indexer's log")?
                    .into(),
                None => Stdio::inherit(),
            })
        };
        let mut child = Command::new(indexer_binary()?);
        if let Some(addr) = config.metrics_addr {
            child.env("METRICS_ADDR", addr.to_string());
        }
        let child = child
            .arg(command)
            .env("RPC_URL", &config.rpc_url)
            .env("DEPLOYMENTS_FILE", &config.deployments_file)
            .env("FINALITY", finality)
            .env("MAX_BLOCK_RANGE", config.max_block_range.to_string())
            .env("FETCH_CONCURRENCY", config.fetch_concurrency.to_string())
            .env("BATCH_EVENTS", config.batch_events.to_string())
            .env("DEFER_INDEXES_AT", config.defer_indexes_at.to_string())
            .env("POLL_INTERVAL_MS", config.poll_interval_ms.to_string())
            .env("DATABASE_URL", &config.database_url)
            .env("RUST_LOG", std::env::var("INDEXER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(output(&log)?)
            .stderr(output(&log)?)
            .spawn()
            .context("spawn the indexer")?;
        Ok(Self { child, log })
    }

    /// What the process logged so far (empty when `INDEXER_LOG` showed it live).
    pub fn log(&self) -> String {
        self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for IndexerProcess {
    fn drop(&mut self) {
        self.kill9();
        if let Some(log) = &self.log {
            std::fs::remove_file(log).ok();
        }
    }
}

/// Waits until the indexer's checkpoint reaches `block` and no secondary index is set aside.
pub async fn wait_for_checkpoint(
    db: &TestDb,
    chain_id: u64,
    block: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut conn = db.connect().await?;
    loop {
        let reached: Option<i64> =
            sqlx::query_scalar("select block_number from indexer_checkpoints where chain_id = $1")
                .bind(chain_id as i64)
                .fetch_optional(&mut conn)
                .await?;
        // Caught up means the secondary indexes a backfill set aside are back too.
        let deferred: i64 = sqlx::query_scalar("select count(*) from indexer_deferred_indexes")
            .fetch_one(&mut conn)
            .await?;
        if reached.is_some_and(|b| b as u64 >= block) && deferred == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the indexer did not reach block {block} within {timeout:?} (at {reached:?}, {deferred} indexes deferred)"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
