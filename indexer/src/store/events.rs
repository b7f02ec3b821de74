//! The events table and the history rows derived from it.

use alloy::primitives::{Address, B256, Bytes, Log, LogData};
use decentraspace_abi::PlatformContracts;
use sqlx::PgConnection;

use super::{StoreError, copy::CopyText};
use crate::{
    event::{EventPosition, IndexedEvent},
    projection::EntityKey,
};

/// Appends events and their history rows (`credit_entries`, `service_state_changes`) with `COPY`.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    chain_id: u64,
    events: &[IndexedEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = CopyText::with_capacity(events.len() * 700);
    let mut credits = CopyText::with_capacity(events.len() * 300);
    let mut states = CopyText::default();
    for e in events {
        rows.int(chain_id);
        rows.int(e.position.block_number);
        rows.int(e.position.log_index);
        rows.bytes(e.block_hash.as_slice());
        rows.opt_time(e.block_time);
        rows.bytes(e.tx_hash.as_slice());
        rows.int(e.tx_index);
        rows.bytes(e.address.as_slice());
        rows.text(e.contract.name());
        rows.opt_text(e.name());
        match &e.decoded {
            Some(d) => rows.text(&d.event.args_json().to_string()),
            None => rows.null(),
        }
        rows.opt_bytes(e.account().as_ref().map(|a| a.as_slice()));
        rows.bytes_array(e.raw.topics().iter().map(|t| t.as_slice()));
        rows.bytes(e.data());
        rows.opt_text(e.entity().map(|k| k.to_string()).as_deref());
        rows.end_row();

        if let Some(c) = e.credit_entry() {
            credits.int(chain_id);
            credits.int(e.position.block_number);
            credits.int(e.position.log_index);
            credits.bytes(c.account.as_slice());
            credits.text(c.kind);
            match c.service_id {
                Some(id) => credits.int(id),
                None => credits.null(),
            }
            credits.text(&c.credits);
            credits.opt_text(c.balance_after.as_deref());
            credits.opt_bytes(c.token.as_ref().map(|t| t.as_slice()));
            credits.opt_text(c.token_amount.as_deref());
            credits.opt_bytes(c.reference.as_ref().map(|r| r.as_slice()));
            credits.opt_time(e.block_time);
            credits.bytes(e.tx_hash.as_slice());
            credits.end_row();
        }
        if let Some(s) = e.service_state_change() {
            states.int(chain_id);
            states.int(e.position.block_number);
            states.int(e.position.log_index);
            states.int(s.service_id);
            states.text(s.state);
            states.opt_bytes(s.actor.as_ref().map(|a| a.as_slice()));
            states.opt_time(e.block_time);
            states.end_row();
        }
    }
    copy_in(
        conn,
        "copy events (chain_id, block_number, log_index, block_hash, block_time, tx_hash, tx_index, \
         address, contract, event_name, args, account, topics, data, entity) from stdin",
        rows,
    )
    .await?;
    copy_in(
        conn,
        "copy credit_entries (chain_id, block_number, log_index, account, kind, service_id, credits, \
         balance_after, token, token_amount, reference, block_time, tx_hash) from stdin",
        credits,
    )
    .await?;
    copy_in(
        conn,
        "copy service_state_changes (chain_id, block_number, log_index, service_id, state, actor, \
         block_time) from stdin",
        states,
    )
    .await
}

async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    rows: CopyText,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(rows.into_bytes()).await?;
    copy.finish().await?;
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
