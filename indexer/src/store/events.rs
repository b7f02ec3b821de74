//! The events table and the history rows derived from it.

use alloy::primitives::{Address, B256, Bytes, Log, LogData};
use decentraspace_abi::PlatformContracts;
use sqlx::{PgConnection, QueryBuilder};

use super::StoreError;
use crate::{
    event::{EventPosition, IndexedEvent},
    projection::EntityKey,
};

/// Events per `INSERT`: 15 parameters a row stays well under Postgres's 65,535 per statement.
const ROWS_PER_STATEMENT: usize = 2_000;

/// Appends events and their history rows (`credit_entries`, `service_state_changes`) with
/// multi-row `INSERT`s. Each statement is one message; `COPY` was no faster here, held more memory,
/// and sqlx sends its end as a separate small packet that Nagle's algorithm delays by about 40 ms
/// over TCP (the server's delayed ACK), which a head-following indexer pays on every block.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    chain_id: u64,
    events: &[IndexedEvent],
) -> Result<(), StoreError> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        insert_rows(conn, chain_id, chunk).await?;
    }
    Ok(())
}

/// One multi-row `INSERT` per table.
async fn insert_rows(
    conn: &mut PgConnection,
    chain_id: u64,
    events: &[IndexedEvent],
) -> Result<(), StoreError> {
    let chain = chain_id as i64;
    let time = |t: Option<u64>| {
        t.and_then(|s| chrono::DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
    };
    let mut q = QueryBuilder::new(
        "insert into events (chain_id, block_number, log_index, block_hash, block_time, tx_hash, tx_index, \
         address, contract, event_name, args, account, topics, data, entity) ",
    );
    q.push_values(events, |mut row, e| {
        row.push_bind(chain)
            .push_bind(e.position.block_number as i64)
            .push_bind(e.position.log_index as i32)
            .push_bind(e.block_hash.to_vec())
            .push_bind(time(e.block_time))
            .push_bind(e.tx_hash.to_vec())
            .push_bind(e.tx_index as i32)
            .push_bind(e.address.to_vec())
            .push_bind(e.contract.name())
            .push_bind(e.name())
            .push_bind(e.decoded.as_ref().map(|d| d.event.args_json()))
            .push_bind(e.account().map(|a| a.to_vec()))
            .push_bind(e.raw.topics().iter().map(|t| t.to_vec()).collect::<Vec<_>>())
            .push_bind(e.data().to_vec())
            .push_bind(e.entity().map(|k| k.to_string()));
    });
    q.build().execute(&mut *conn).await?;

    let credits: Vec<_> = events.iter().filter_map(|e| e.credit_entry().map(|c| (e, c))).collect();
    if !credits.is_empty() {
        let mut q = QueryBuilder::new(
            "insert into credit_entries (chain_id, block_number, log_index, account, kind, service_id, credits, \
             balance_after, token, token_amount, reference, block_time, tx_hash) ",
        );
        q.push_values(credits, |mut row, (e, c)| {
            row.push_bind(chain)
                .push_bind(e.position.block_number as i64)
                .push_bind(e.position.log_index as i32)
                .push_bind(c.account.to_vec())
                .push_bind(c.kind)
                .push_bind(c.service_id)
                .push_bind(c.credits)
                .push_unseparated("::numeric")
                .push_bind(c.balance_after)
                .push_unseparated("::numeric")
                .push_bind(c.token.map(|t| t.to_vec()))
                .push_bind(c.token_amount)
                .push_unseparated("::numeric")
                .push_bind(c.reference.map(|r| r.to_vec()))
                .push_bind(time(e.block_time))
                .push_bind(e.tx_hash.to_vec());
        });
        q.build().execute(&mut *conn).await?;
    }

    let states: Vec<_> =
        events.iter().filter_map(|e| e.service_state_change().map(|s| (e, s))).collect();
    if !states.is_empty() {
        let mut q = QueryBuilder::new(
            "insert into service_state_changes (chain_id, block_number, log_index, service_id, state, actor, \
             block_time) ",
        );
        q.push_values(states, |mut row, (e, s)| {
            row.push_bind(chain)
                .push_bind(e.position.block_number as i64)
                .push_bind(e.position.log_index as i32)
                .push_bind(s.service_id)
                .push_bind(s.state)
                .push_bind(s.actor.map(|a| a.to_vec()))
                .push_bind(time(e.block_time));
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes the events after `block` (their history rows go with them) and returns the entities
/// they had changed, which must be folded again.
pub(crate) async fn delete_after(
    conn: &mut PgConnection,
    chain_id: u64,
    block: u64,
) -> Result<Vec<EntityKey>, StoreError> {
    let entities = sqlx::query_scalar!(
        r#"delete from events where chain_id = $1 and block_number > $2 returning entity"#,
        chain_id as i64,
        block as i64
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut keys: Vec<EntityKey> =
        entities.into_iter().flatten().filter_map(|k| k.parse().ok()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The stored events that changed `keys`, in chain order.
pub(crate) async fn for_entities(
    conn: &mut PgConnection,
    contracts: &PlatformContracts,
    chain_id: u64,
    keys: &[EntityKey],
) -> Result<Vec<IndexedEvent>, StoreError> {
    let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
    let rows = sqlx::query_as!(
        StoredEvent,
        r#"select block_number, log_index, block_hash, extract(epoch from block_time)::bigint as block_time,
                  tx_hash, tx_index, address, topics, data
           from events
           where chain_id = $1 and entity = any($2)
           order by block_number, log_index"#,
        chain_id as i64,
        &keys
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(|r| r.into_event(contracts)).collect()
}

/// Every stored event from `after` on (exclusive), in chain order, at most `limit`: the source of
/// a full re-fold.
pub(crate) async fn page(
    conn: &mut PgConnection,
    contracts: &PlatformContracts,
    chain_id: u64,
    after: Option<EventPosition>,
    limit: i64,
) -> Result<Vec<IndexedEvent>, StoreError> {
    let (block, log) = after.map_or((-1, -1), |p| (p.block_number as i64, p.log_index as i64));
    let rows = sqlx::query_as!(
        StoredEvent,
        r#"select block_number, log_index, block_hash, extract(epoch from block_time)::bigint as block_time,
                  tx_hash, tx_index, address, topics, data
           from events
           where chain_id = $1 and (block_number, log_index) > ($2, $3::int)
           order by block_number, log_index
           limit $4"#,
        chain_id as i64,
        block,
        log as i32,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(|r| r.into_event(contracts)).collect()
}

/// Counts the events stored for a chain.
pub async fn count(conn: &mut PgConnection, chain_id: u64) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "count!" from events where chain_id = $1"#,
        chain_id as i64
    )
    .fetch_one(conn)
    .await?)
}

struct StoredEvent {
    block_number: i64,
    log_index: i32,
    block_hash: Vec<u8>,
    block_time: Option<i64>,
    tx_hash: Vec<u8>,
    tx_index: i32,
    address: Vec<u8>,
    topics: Vec<Vec<u8>>,
    data: Vec<u8>,
}

impl StoredEvent {
    fn into_event(self, contracts: &PlatformContracts) -> Result<IndexedEvent, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("events row {}: {what}", self.block_number));
        let address = Address::try_from(self.address.as_slice()).map_err(|_| corrupt("address"))?;
        let topics = self
            .topics
            .iter()
            .map(|t| B256::try_from(t.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt("topics"))?;
        let data = LogData::new(topics, Bytes::from(self.data.clone()))
            .ok_or_else(|| corrupt("topics"))?;
        IndexedEvent::from_parts(
            contracts,
            EventPosition {
                block_number: self.block_number as u64,
                log_index: self.log_index as u64,
            },
            B256::try_from(self.block_hash.as_slice()).map_err(|_| corrupt("block hash"))?,
            self.block_time.map(|t| t as u64),
            B256::try_from(self.tx_hash.as_slice()).map_err(|_| corrupt("tx hash"))?,
            self.tx_index as u64,
            &Log { address, data },
        )
        .map_err(|e| corrupt(&e.to_string()))
    }
}
