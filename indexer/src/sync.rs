//! The sync loop: backfill up to the finalized block in large concurrent ranges, then follow the
//! head block by block, detecting reorgs by parent hash.

use std::{
    collections::HashMap,
    future::Future,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use alloy::{
    primitives::B256,
    providers::{Provider, ProviderBuilder, WsConnect},
};
use anyhow::Context;
use decentraspace_abi::Deployment;
use decentraspace_db::{channels, locks::Lock};
use futures::{StreamExt, TryStreamExt, stream};
use sqlx::PgConnection;
use tracing::{debug, error, info, warn};

use crate::{
    config::{Config, Finality},
    event::IndexedEvent,
    metrics,
    rpc::{ChainReader, Header, RpcError, RpcLog, backoff},
    store::{self, BlockRef, Checkpoint, StoreError},
};

/// Blocks below the head that count as final where the node has no `finalized` tag.
const DEFAULT_FINALITY_DEPTH: u64 = 200;
/// The most unfinalized blocks one head-following step takes.
const HEAD_STEP: u64 = 100;
/// The most blocks one backfill pass plans before looking at the head again.
const BACKFILL_PASS: u64 = 1_000_000;

/// Why a sync step stopped.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The indexer of one chain.
#[derive(Debug)]
pub struct Indexer {
    config: Config,
    deployment: Deployment,
    chain: ChainReader,
    start_block: u64,
    /// Whether the history tables' secondary indexes are set aside for a backfill.
    indexes_deferred: AtomicBool,
}

impl Indexer {
    /// Loads the deployment record and checks that the RPC serves its chain.
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let deployment =
            Deployment::load(&config.deployments_file).context("load the deployment record")?;
        if let Some(expected) = config.chain_id {
            anyhow::ensure!(
                expected == deployment.chain_id,
                "CHAIN_ID is {expected} but the deployment record {} is for chain {}",
                config.deployments_file.display(),
                deployment.chain_id
            );
        }
        let chain = ChainReader::connect(
            &config.rpc_url,
            deployment.contracts.registries().to_vec(),
            config.max_block_range,
        )?;
        let served = chain
            .chain_id()
            .await
            .with_context(|| format!("ask {} for its chain id", config.rpc_url))?;
        anyhow::ensure!(
            served == deployment.chain_id,
            "the RPC at {} serves chain {served}, but the deployment record {} is for chain {}: refusing to index",
            config.rpc_url,
            config.deployments_file.display(),
            deployment.chain_id
        );
        let start_block = config.start_block.unwrap_or(deployment.deploy_block);
        Ok(Self {
            config,
            deployment,
            chain,
            start_block,
            indexes_deferred: AtomicBool::new(false),
        })
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.deployment.chain_id
    }

    /// Indexes until `shutdown` resolves: waits to be the chain's writer (a standby waits here),
    /// then syncs; reconnects to Postgres and takes the lock again after a database failure.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut attempt = 0;
        loop {
            let session = async {
                let mut conn = store::connect(&self.config.database_url).await?;
                self.acquire_leadership(&mut conn).await?;
                attempt = 0;
                self.sync(&mut conn).await
            };
            tokio::select! {
                () = &mut shutdown => {
                    info!(target: "indexer::sync", "shutting down");
                    return Ok(());
                }
                result = session => match result {
                    Err(err) if err.is_retryable() => {
                        // The lock went with the connection.
                        metrics::role(metrics::Role::Connecting);
                        attempt += 1;
                        warn!(target: "indexer::sync", %err, attempt, "database unavailable, reconnecting");
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    Err(err) => return Err(err).context("indexing stopped"),
                    Ok(()) => return Ok(()),
                },
            }
        }
    }

    async fn acquire_leadership(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let key = Lock::IndexerWriter { chain_id: self.chain_id() }.key();
        let acquired: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !acquired {
            metrics::role(metrics::Role::Standby);
            info!(target: "indexer::leader", chain_id = self.chain_id(), "another indexer writes this chain; standing by");
            sqlx::query("select pg_advisory_lock($1)").bind(key).execute(&mut *conn).await?;
        }
        metrics::role(metrics::Role::Writer);
        info!(target: "indexer::leader", chain_id = self.chain_id(), "leading: this indexer writes the chain");
        Ok(())
    }

    /// Syncs forever as the writer; returns only on a database error.
    async fn sync(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        self.indexes_deferred.store(store::indexes::deferred(conn).await? > 0, Ordering::Relaxed);
        let mut heads = self.head_subscription().await;
        let mut wake = self.wake_listener().await;
        let mut rpc_attempt = 0;
        loop {
            match self.step(conn).await {
                Ok(true) => rpc_attempt = 0,
                Ok(false) => {
                    rpc_attempt = 0;
                    self.wait_for_block(&mut heads, &mut wake).await;
                }
                Err(SyncError::Rpc(err)) => {
                    rpc_attempt += 1;
                    metrics::rpc_error();
                    warn!(target: "indexer::sync", %err, attempt = rpc_attempt, "rpc failed, retrying");
                    tokio::time::sleep(backoff(rpc_attempt)).await;
                }
                Err(SyncError::Store(err)) => return Err(err),
            }
        }
    }

    /// One step: a backfill pass or a head step. `Ok(false)` when there is nothing new.
    async fn step(&self, conn: &mut PgConnection) -> Result<bool, SyncError> {
        let checkpoint = store::checkpoint(conn, self.chain_id()).await?;
        let next = checkpoint.map_or(self.start_block, |c| c.block_number + 1);
        let head = self.chain.head().await?;
        let safe = self.safe_block(head).await?;
        metrics::heads(head, checkpoint.map_or(0, |c| c.block_number));
        // Caught up with the final blocks: the indexes a backfill set aside come back first, so
        // that a reorg's re-fold below reads through them.
        if next > safe && self.indexes_deferred.load(Ordering::Relaxed) {
            self.restore_indexes().await?;
        }
        if let Some(c) = checkpoint
            && c.block_number >= head
            && c.block_number > safe
        {
            // Nothing new to index, but the unfinalized tip may have been replaced by a branch of
            // the same height (or a shorter one): compare it with the chain.
            let tip = c.block_number.min(head);
            let canonical = self.chain.header(tip).await?;
            let stored = if tip == c.block_number {
                Some(c.block_hash)
            } else {
                store::block_hash(conn, self.chain_id(), tip).await?
            };
            if stored != Some(canonical.hash) || c.block_number > head {
                self.handle_reorg(conn, tip).await?;
                return Ok(true);
            }
        }
        if next > head {
            return Ok(false);
        }
        if next <= safe {
            self.backfill(conn, next, safe.min(next + BACKFILL_PASS)).await?;
        } else {
            self.follow(conn, checkpoint, next, head.min(next + HEAD_STEP - 1), safe).await?;
        }
        Ok(true)
    }

    async fn safe_block(&self, head: u64) -> Result<u64, RpcError> {
        match self.config.finality {
            Finality::Depth(depth) => Ok(head.saturating_sub(depth)),
            Finality::Tag => match self.chain.finalized().await? {
                Some(finalized) => Ok(finalized),
                None => Ok(head.saturating_sub(DEFAULT_FINALITY_DEPTH)),
            },
        }
    }

    /// Indexes the final blocks `from..=to`: ranges fetched concurrently, written in order, one
    /// transaction per batch of events. Fetching runs ahead of writing by one batch, so the
    /// database is kept busy while the next batch arrives.
    async fn backfill(&self, conn: &mut PgConnection, from: u64, to: u64) -> Result<(), SyncError> {
        let (batches, mut queue) = tokio::sync::mpsc::channel::<(Vec<IndexedEvent>, u64)>(1);
        let write = async move {
            while let Some((events, last_block)) = queue.recv().await {
                self.defer_indexes_for(conn, events.len()).await?;
                self.commit(conn, events, &[], None, last_block, None).await?;
            }
            // A failed write drops `queue`, which stops the fetching.
            Ok::<(), SyncError>(())
        };
        let (fetched, written) = tokio::join!(self.fetch_batches(from, to, batches), write);
        written?;
        fetched.map_err(SyncError::from)
    }

    /// Fetches `from..=to` in concurrent ranges and sends the events in order, in batches of about
    /// `batch_events`, each with the last block it covers. After a failed range, what arrived
    /// before it is still sent; the failed range and all after it are left for a retry.
    async fn fetch_batches(
        &self,
        from: u64,
        to: u64,
        batches: tokio::sync::mpsc::Sender<(Vec<IndexedEvent>, u64)>,
    ) -> Result<(), RpcError> {
        let concurrency = self.config.fetch_concurrency.max(1);
        let mut in_flight = std::collections::VecDeque::new();
        let mut next_from = from;
        let mut pending: Vec<IndexedEvent> = Vec::new();
        let mut last_block = None;
        loop {
            // Ranges are planned as slots free up, each with the span the node accepts now.
            while in_flight.len() < concurrency && next_from <= to {
                let (a, b) =
                    (next_from, next_from.saturating_add(self.chain.span().max(1) - 1).min(to));
                next_from = b + 1;
                let chain = self.chain.clone();
                let contracts = self.deployment.contracts;
                in_flight.push_back(tokio::spawn(async move {
                    let logs = chain.logs(a, b).await?;
                    Ok::<_, RpcError>((b, decode(&contracts, logs)))
                }));
            }
            let Some(task) = in_flight.pop_front() else { return Ok(()) };
            let fetched = task.await.unwrap_or_else(|join| Err(RpcError::Task(join.to_string())));
            let (failure, done) = match fetched {
                Ok((b, events)) => {
                    debug!(target: "indexer::sync", to = b, events = events.len(), "fetched range");
                    pending.extend(events);
                    last_block = Some(b);
                    (None, next_from > to && in_flight.is_empty())
                }
                Err(err) => (Some(err), true),
            };
            if let Some(b) = last_block
                && (done || pending.len() >= self.config.batch_events)
            {
                last_block = None;
                if batches.send((std::mem::take(&mut pending), b)).await.is_err() {
                    // The writer stopped (its error is reported): stop fetching.
                    for task in &in_flight {
                        task.abort();
                    }
                    return Ok(());
                }
            }
            if let Some(err) = failure {
                for task in &in_flight {
                    task.abort();
                }
                return Err(err);
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Sets the secondary indexes aside when a backfill batch is large enough that maintaining them
    /// row by row would cost more than rebuilding them once it ends.
    async fn defer_indexes_for(
        &self,
        conn: &mut PgConnection,
        batch: usize,
    ) -> Result<(), StoreError> {
        let threshold = self.config.defer_indexes_at;
        if threshold == 0 || batch < threshold || self.indexes_deferred.load(Ordering::Relaxed) {
            return Ok(());
        }
        let dropped = store::indexes::defer(conn).await?;
        self.indexes_deferred.store(true, Ordering::Relaxed);
        info!(target: "indexer::sync", dropped, batch, "long backfill: secondary indexes deferred until it ends");
        Ok(())
    }

    /// Rebuilds the indexes a backfill set aside, once it has caught up with the final blocks.
    async fn restore_indexes(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let built = store::indexes::restore(&self.config.database_url).await?;
        self.indexes_deferred.store(false, Ordering::Relaxed);
        info!(target: "indexer::sync", built, ms = started.elapsed().as_millis() as u64, "backfill done: secondary indexes rebuilt");
        Ok(())
    }

    /// Indexes the unfinalized blocks `from..=to`, checking that they extend what is indexed.
    async fn follow(
        &self,
        conn: &mut PgConnection,
        checkpoint: Option<Checkpoint>,
        from: u64,
        to: u64,
        safe: u64,
    ) -> Result<(), SyncError> {
        let headers: Vec<Header> =
            stream::iter(from..=to).map(|n| self.chain.header(n)).buffered(8).try_collect().await?;
        if headers.windows(2).any(|w| w[1].parent_hash != w[0].hash) {
            debug!(target: "indexer::sync", from, to, "chain moved while reading headers; retrying");
            return Ok(());
        }
        let expected_parent = match checkpoint {
            Some(c) if c.block_number + 1 == from => Some(c.block_hash),
            _ => None,
        };
        if let Some(parent) = expected_parent
            && headers[0].parent_hash != parent
        {
            return self.handle_reorg(conn, checkpoint.map_or(0, |c| c.block_number)).await;
        }

        let logs = self.chain.logs(from, to).await?;
        let hashes: HashMap<u64, &Header> = headers.iter().map(|h| (h.number, h)).collect();
        if logs
            .iter()
            .any(|l| l.block_number.and_then(|n| hashes.get(&n)).map(|h| h.hash) != l.block_hash)
        {
            debug!(target: "indexer::sync", from, to, "logs from another branch; retrying");
            return Ok(());
        }
        let mut events = decode(&self.deployment.contracts, logs);
        for e in &mut events {
            e.block_time =
                e.block_time.or_else(|| hashes.get(&e.position.block_number).map(|h| h.timestamp));
        }
        let blocks: Vec<BlockRef> = headers
            .iter()
            .map(|h| BlockRef { number: h.number, hash: h.hash, parent_hash: h.parent_hash })
            .collect();
        let last = headers.last().map(|h| (h.hash, h.timestamp));
        self.commit(conn, events, &blocks, Some(safe), to, last).await?;
        Ok(())
    }

    /// Finds where the indexed blocks and the chain agree again, and rolls back to there.
    async fn handle_reorg(
        &self,
        conn: &mut PgConnection,
        mut number: u64,
    ) -> Result<(), SyncError> {
        let checkpoint = store::checkpoint(conn, self.chain_id()).await?;
        let fork = loop {
            let stored = match store::block_hash(conn, self.chain_id(), number).await? {
                Some(hash) => Some(hash),
                None => checkpoint.filter(|c| c.block_number == number).map(|c| c.block_hash),
            };
            let Some(stored) = stored else {
                error!(target: "indexer::reorg", number, "reorg reaches below the stored blocks; rolling back to here");
                let header = self.chain.header(number).await?;
                break Checkpoint {
                    block_number: number,
                    block_hash: header.hash,
                    block_time: Some(header.timestamp),
                };
            };
            let canonical = self.chain.header(number).await?;
            if canonical.hash == stored || number == 0 {
                break Checkpoint {
                    block_number: number,
                    block_hash: canonical.hash,
                    block_time: Some(canonical.timestamp),
                };
            }
            number -= 1;
        };
        let depth = checkpoint.map_or(0, |c| c.block_number.saturating_sub(fork.block_number));
        let refolded =
            store::rollback_to(conn, &self.deployment.contracts, self.chain_id(), fork).await?;
        metrics::reorg(depth);
        warn!(target: "indexer::reorg", fork = fork.block_number, depth, refolded, "reorg: rolled back");
        Ok(())
    }

    /// Fills missing block timestamps, then writes a batch and its checkpoint.
    async fn commit(
        &self,
        conn: &mut PgConnection,
        mut events: Vec<IndexedEvent>,
        blocks: &[BlockRef],
        prune_below: Option<u64>,
        last_block: u64,
        last: Option<(B256, u64)>,
    ) -> Result<(), SyncError> {
        let started = Instant::now();
        let mut missing: Vec<u64> = events
            .iter()
            .filter(|e| e.block_time.is_none())
            .map(|e| e.position.block_number)
            .collect();
        if last.is_none() {
            missing.push(last_block);
        }
        missing.sort_unstable();
        missing.dedup();
        let headers: HashMap<u64, Header> = stream::iter(missing)
            .map(|n| async move { self.chain.header(n).await.map(|h| (n, h)) })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        for e in &mut events {
            e.block_time =
                e.block_time.or_else(|| headers.get(&e.position.block_number).map(|h| h.timestamp));
        }
        let (block_hash, block_time) = match last {
            Some(last) => last,
            None => headers
                .get(&last_block)
                .map(|h| (h.hash, h.timestamp))
                .ok_or(RpcError::MissingBlock(last_block))?,
        };
        let checkpoint =
            Checkpoint { block_number: last_block, block_hash, block_time: Some(block_time) };
        let outcome =
            store::write_batch(conn, self.chain_id(), &events, blocks, prune_below, checkpoint)
                .await?;
        metrics::batch(outcome.events, started.elapsed());
        info!(
            target: "indexer::sync",
            to = last_block,
            events = outcome.events,
            fold_errors = outcome.fold_errors,
            ms = started.elapsed().as_millis() as u64,
            "batch committed"
        );
        Ok(())
    }

    async fn head_subscription(&self) -> Option<futures::stream::BoxStream<'static, u64>> {
        let url = self.config.ws_url.as_ref()?;
        let connect = async {
            let provider = ProviderBuilder::new().connect_ws(WsConnect::new(url.clone())).await?;
            let sub = provider.subscribe_blocks().await?;
            anyhow::Ok(sub.into_stream().map(move |header| {
                let _keep_alive = &provider;
                header.number
            }))
        };
        match connect.await {
            Ok(stream) => Some(stream.boxed()),
            Err(err) => {
                warn!(target: "indexer::sync", %err, url, "cannot subscribe to new heads; polling");
                None
            }
        }
    }

    /// Listens for wake-ups (the API's chain-event webhook); without one, the indexer polls.
    async fn wake_listener(&self) -> Option<sqlx::postgres::PgListener> {
        let listen = async {
            let mut listener =
                sqlx::postgres::PgListener::connect(&self.config.database_url).await?;
            listener.listen(channels::WAKE_INDEXER).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listen.await {
            Ok(listener) => Some(listener),
            Err(err) => {
                warn!(target: "indexer::sync", %err, "cannot listen for wake-ups; polling only");
                None
            }
        }
    }

    /// Waits for a new head, a wake-up or the poll interval, whichever comes first.
    async fn wait_for_block(
        &self,
        heads: &mut Option<futures::stream::BoxStream<'static, u64>>,
        wake: &mut Option<sqlx::postgres::PgListener>,
    ) {
        let interval = self.config.poll_interval();
        let next_head = async {
            match heads.as_mut() {
                Some(stream) => {
                    if let Ok(None) = tokio::time::timeout(interval, stream.next()).await {
                        warn!(target: "indexer::sync", "head subscription ended; polling");
                        *heads = None;
                    }
                }
                None => tokio::time::sleep(interval).await,
            }
        };
        let woken = async {
            match wake.as_mut() {
                Some(listener) => match listener.recv().await {
                    Ok(note) => {
                        debug!(target: "indexer::sync", payload = note.payload(), "woken by the listener")
                    }
                    Err(err) => {
                        warn!(target: "indexer::sync", %err, "wake-up listener failed; polling only");
                        *wake = None;
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = next_head => {}
            () = woken => {}
        }
    }
}

/// Decodes fetched logs; a log that is not a platform event is logged and skipped.
fn decode(
    contracts: &decentraspace_abi::PlatformContracts,
    logs: Vec<RpcLog>,
) -> Vec<IndexedEvent> {
    logs.into_iter()
        .filter_map(|log| match IndexedEvent::from_rpc(contracts, log) {
            Ok(event) => Some(event.with_args()),
            Err(err) => {
                warn!(target: "indexer::decode", %err, "log skipped");
                None
            }
        })
        .collect()
}
