//! Postgres: the events table, the projections, the checkpoint and the unfinalized block hashes.
//! Every write that changes indexed state happens in one transaction with the checkpoint.

mod copy;
pub mod events;
pub mod indexes;
mod projections;

use alloy::primitives::B256;
use decentraspace_abi::PlatformContracts;
use decentraspace_db::channels::{self, IndexedBatch};
use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};
use tracing::warn;

use crate::{
    event::{EventPosition, IndexedEvent},
    projection::{self, EntityKey, ProjectionState},
};

/// A Postgres failure, or stored data the indexer cannot read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or the connection dropped.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying after reconnecting may succeed (connection loss, server restart, conflicts).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(db)) => {
                // Class 08 (connection), 40 (rollback: serialization, deadlock), 57 (shutdown).
                db.code().is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("40") || c.starts_with("57")
                })
            }
            Self::Db(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_),
            ) => true,
            _ => false,
        }
    }
}

/// Applies the migrations shared by the indexer and the API.
pub async fn migrate(database_url: &str) -> Result<(), StoreError> {
    let pool = PgPoolOptions::new().max_connections(1).connect(database_url).await?;
    decentraspace_db::migrate(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Opens one connection (the writer's: it also holds the leader lock).
pub async fn connect(database_url: &str) -> Result<PgConnection, StoreError> {
    Ok(PgConnection::connect(database_url).await?)
}

/// The last indexed block of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its number.
    pub block_number: u64,
    /// Its hash.
    pub block_hash: B256,
    /// Its time (unix seconds): the chain's clock as far as the index goes (null in a checkpoint
    /// written before it was recorded).
    pub block_time: Option<u64>,
}

/// A block that is not final yet, kept to detect reorgs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Its number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its parent's hash.
    pub parent_hash: B256,
}

/// Reads the checkpoint.
pub async fn checkpoint(
    conn: &mut PgConnection,
    chain_id: u64,
) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query!(
        r#"select block_number, block_hash, extract(epoch from block_time)::bigint as block_time
           from indexer_checkpoints where chain_id = $1"#,
        chain_id as i64
    )
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(Checkpoint {
            block_number: r.block_number as u64,
            block_hash: B256::try_from(r.block_hash.as_slice())
                .map_err(|_| StoreError::Corrupt("checkpoint hash".into()))?,
            block_time: r.block_time.map(|t| t as u64),
        })
    })
    .transpose()
}

/// The stored hash of an unfinalized block.
pub async fn block_hash(
    conn: &mut PgConnection,
    chain_id: u64,
    number: u64,
) -> Result<Option<B256>, StoreError> {
    let row = sqlx::query_scalar!(
        "select block_hash from indexer_blocks where chain_id = $1 and block_number = $2",
        chain_id as i64,
        number as i64
    )
    .fetch_optional(conn)
    .await?;
    row.map(|h| B256::try_from(h.as_slice()).map_err(|_| StoreError::Corrupt("block hash".into())))
        .transpose()
}

/// Every indexed account, balance, service and domain, with its value.
pub async fn indexed_entities(
    conn: &mut PgConnection,
    chain_id: u64,
) -> Result<std::collections::HashMap<EntityKey, crate::projection::EntityValue>, StoreError> {
    let state = projections::load_all(conn, chain_id).await?;
    Ok(state.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
}

/// What one committed batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events stored.
    pub events: usize,
    /// Events whose fold failed (kept raw; logged).
    pub fold_errors: usize,
}

/// Writes a batch in one transaction: the events (and their history rows), the projections they
/// change, the unfinalized block hashes, and the checkpoint; then notifies listeners.
pub async fn write_batch(
    conn: &mut PgConnection,
    chain_id: u64,
    events: &[IndexedEvent],
    blocks: &[BlockRef],
    prune_below: Option<u64>,
    checkpoint: Checkpoint,
) -> Result<BatchOutcome, StoreError> {
    let started = std::time::Instant::now();
    let mut tx = conn.begin().await?;
    events::insert(&mut tx, chain_id, events).await?;
    let inserted = started.elapsed();

    let keys = events.iter().filter_map(IndexedEvent::entity);
    let mut state = projections::load(&mut tx, chain_id, keys).await?;
    let fold_errors = fold_into(&mut state, events);
    projections::write(&mut tx, chain_id, &state).await?;
    let projected = started.elapsed();

    for block in blocks {
        sqlx::query!(
            r#"insert into indexer_blocks (chain_id, block_number, block_hash, parent_hash) values ($1, $2, $3, $4)
               on conflict (chain_id, block_number) do update
               set block_hash = excluded.block_hash, parent_hash = excluded.parent_hash"#,
            chain_id as i64,
            block.number as i64,
            block.hash.as_slice(),
            block.parent_hash.as_slice()
        )
        .execute(&mut *tx)
        .await?;
    }
    if let Some(below) = prune_below {
        sqlx::query!(
            "delete from indexer_blocks where chain_id = $1 and block_number < $2",
            chain_id as i64,
            below as i64
        )
        .execute(&mut *tx)
        .await?;
    }
    set_checkpoint(&mut tx, chain_id, checkpoint).await?;
    let from = events.first().map_or(checkpoint.block_number, |e| e.position.block_number);
    notify(&mut tx, chain_id, from, checkpoint.block_number, events.len(), false).await?;
    tx.commit().await?;
    tracing::debug!(
        target: "indexer::store",
        events = events.len(),
        insert_ms = inserted.as_millis() as u64,
        projections_ms = (projected - inserted).as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "batch written"
    );
    Ok(BatchOutcome { events: events.len(), fold_errors })
}

/// Undoes everything after `fork` (a reorg): deletes the orphaned events and block hashes, folds
/// the entities they touched again from their remaining events, and moves the checkpoint back.
/// Returns how many entities were re-folded.
pub async fn rollback_to(
    conn: &mut PgConnection,
    contracts: &PlatformContracts,
    chain_id: u64,
    fork: Checkpoint,
) -> Result<usize, StoreError> {
    let mut tx = conn.begin().await?;
    let touched = events::delete_after(&mut tx, contracts, chain_id, fork.block_number).await?;
    sqlx::query!(
        "delete from indexer_blocks where chain_id = $1 and block_number > $2",
        chain_id as i64,
        fork.block_number as i64
    )
    .execute(&mut *tx)
    .await?;
    refold(&mut tx, contracts, chain_id, &touched).await?;
    set_checkpoint(&mut tx, chain_id, fork).await?;
    notify(&mut tx, chain_id, fork.block_number, fork.block_number, 0, true).await?;
    tx.commit().await?;
    Ok(touched.len())
}

/// Folds `keys` again from scratch out of their stored events, and writes the result.
async fn refold(
    conn: &mut PgConnection,
    contracts: &PlatformContracts,
    chain_id: u64,
    keys: &[EntityKey],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let history = events::for_entities(conn, contracts, chain_id, keys).await?;
    let mut state: ProjectionState = keys.iter().cloned().map(|k| (k, None)).collect();
    fold_into(&mut state, &history);
    projections::write(conn, chain_id, &state).await
}

/// Rebuilds every projection of a chain from the events table, in one transaction.
pub async fn reindex(
    conn: &mut PgConnection,
    contracts: &PlatformContracts,
    chain_id: u64,
) -> Result<usize, StoreError> {
    const PAGE: i64 = 50_000;
    let mut tx = conn.begin().await?;
    projections::clear(&mut tx, chain_id).await?;
    let mut state = ProjectionState::new();
    let mut after: Option<EventPosition> = None;
    let mut total = 0;
    loop {
        let page = events::page(&mut tx, contracts, chain_id, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        total += page.len();
        fold_into(&mut state, &page);
    }
    projections::write(&mut tx, chain_id, &state).await?;
    tx.commit().await?;
    Ok(total)
}

fn fold_into(state: &mut ProjectionState, events: &[IndexedEvent]) -> usize {
    let mut errors = 0;
    for event in events {
        let Some(decoded) = &event.decoded else { continue };
        if let Err(err) =
            projection::apply(state, event.address, &decoded.event, event.block_time.unwrap_or(0))
        {
            errors += 1;
            warn!(
                target: "indexer::fold",
                block = event.position.block_number,
                log_index = event.position.log_index,
                %err,
                "event not folded"
            );
        }
    }
    errors
}

async fn set_checkpoint(
    conn: &mut PgConnection,
    chain_id: u64,
    checkpoint: Checkpoint,
) -> Result<(), StoreError> {
    sqlx::query!(
        r#"insert into indexer_checkpoints (chain_id, block_number, block_hash, block_time)
           values ($1, $2, $3, to_timestamp($4))
           on conflict (chain_id) do update
           set block_number = excluded.block_number, block_hash = excluded.block_hash,
               block_time = excluded.block_time, updated_at = now()"#,
        chain_id as i64,
        checkpoint.block_number as i64,
        checkpoint.block_hash.as_slice(),
        checkpoint.block_time.map(|t| t as f64)
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn notify(
    conn: &mut PgConnection,
    chain_id: u64,
    from: u64,
    to: u64,
    events: usize,
    reorg: bool,
) -> Result<(), StoreError> {
    let payload =
        IndexedBatch { chain_id, from_block: from, to_block: to, events: events as u64, reorg };
    let payload = serde_json::to_string(&payload).expect("a batch serialises");
    sqlx::query!("select pg_notify($1, $2)", channels::INDEXED, payload).execute(conn).await?;
    Ok(())
}
