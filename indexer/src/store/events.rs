//! The events table and the history rows derived from it.

use alloy::primitives::{Address, B256, Bytes, Log, LogData};
use decentraspace_abi::{DecodedLog, PlatformContract, PlatformContracts};
use sqlx::PgConnection;

use super::{StoreError, copy::CopyRows};
use crate::{
    event::{EventPosition, IndexedEvent},
    projection::EntityKey,
};

/// From this many events on, a batch is written with a binary `COPY` instead of `unnest` arrays.
///
/// `COPY` saves the server most of its per-row parsing, but sqlx sends its end as a separate small
/// packet that Nagle's algorithm holds for the server's delayed ACK (about 40 ms over TCP): worth
/// it for a backfill's large batches, not for a head-following indexer's few events per block.
const COPY_MIN_EVENTS: usize = 2_000;

/// Appends events (ledger movements with their typed columns) and their service history rows.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    chain_id: u64,
    events: &[IndexedEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    if events.len() >= COPY_MIN_EVENTS {
        copy_events(conn, chain_id, events).await?;
    } else {
        insert_events(conn, chain_id, events).await?;
    }
    insert_state_changes(conn, chain_id, events).await
}

/// The events table's columns, in the order [`copy_events`] sends them.
const EVENT_COLUMNS: &str = "chain_id, block_number, log_index, block_hash, block_time, tx_hash, tx_index, \
     address, contract, event_name, args, account, topics, data, entity_hash, \
     credit_kind, service_id, credits, balance_after, token, token_amount, reference";

/// Writes events with one binary `COPY` (see [`COPY_MIN_EVENTS`]).
async fn copy_events(
    conn: &mut PgConnection,
    chain_id: u64,
    events: &[IndexedEvent],
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    // About 500 bytes a ledger event: 5 hashes and addresses, its JSON arguments, ledger columns.
    let mut rows = CopyRows::with_capacity(events.len() * 512);
    for e in events {
        let entry = e.credit_entry();
        let args = e.args_json();
        rows.row(22)
            .int8(chain_id as i64)
            .int8(e.position.block_number as i64)
            .int4(e.position.log_index as i32)
            .bytes(e.block_hash.as_slice())
            .opt_unix_time(e.block_time)
            .bytes(e.tx_hash.as_slice())
            .int4(e.tx_index as i32)
            .bytes(e.address.as_slice())
            .bytes(e.contract.name().as_bytes())
            .opt_bytes(e.name().map(str::as_bytes))
            .opt_bytes(args.as_deref().map(str::as_bytes))
            .opt_bytes(e.account().as_ref().map(|a| a.as_slice()))
            .opt_bytes_concat(e.raw_to_store().map(|raw| raw.topics().iter().map(|t| t.as_slice())))
            .opt_bytes(e.raw_to_store().map(|raw| raw.data.as_ref()))
            .opt_int8(e.entity_hash())
            .opt_bytes(entry.as_ref().map(|c| c.kind.as_bytes()))
            .opt_int8(entry.as_ref().and_then(|c| c.service_id))
            .opt_numeric(entry.as_ref().map(|c| c.credits.as_str()))
            .opt_numeric(entry.as_ref().and_then(|c| c.balance_after.as_deref()))
            .opt_bytes(entry.as_ref().and_then(|c| c.token.as_ref().map(|t| t.as_slice())))
            .opt_numeric(entry.as_ref().and_then(|c| c.token_amount.as_deref()))
            .opt_bytes(entry.as_ref().and_then(|c| c.reference.as_ref().map(|r| r.as_slice())));
    }
    let rows = rows.finish();
    let built = started.elapsed();
    let mut copy = conn
        .copy_in_raw(&format!("copy events ({EVENT_COLUMNS}) from stdin (format binary)"))
        .await?;
    copy.send(rows.as_slice()).await?;
    copy.finish().await?;
    tracing::debug!(
        target: "indexer::store",
        rows = events.len(),
        bytes = rows.len(),
        build_ms = built.as_millis() as u64,
        copy_ms = (started.elapsed() - built).as_millis() as u64,
        "events copied"
    );
    Ok(())
}

/// Writes events with one `INSERT … SELECT FROM unnest(…)`: one array per column keeps the
/// statement and its plan the same whatever the batch size.
async fn insert_events(
    conn: &mut PgConnection,
    chain_id: u64,
    events: &[IndexedEvent],
) -> Result<(), StoreError> {
    let chain = chain_id as i64;
    let n = events.len();
    let time = |t: Option<u64>| {
        t.and_then(|s| chrono::DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
    };
    let (mut blocks, mut logs, mut block_hashes, mut times) = (cap(n), cap(n), cap(n), cap(n));
    let (mut tx_hashes, mut tx_indexes, mut addresses, mut contracts) =
        (cap(n), cap(n), cap(n), cap(n));
    let (mut names, mut args, mut accounts, mut topics) = (cap(n), cap(n), cap(n), cap(n));
    let (mut data, mut entities) = (cap(n), cap(n));
    // The ledger columns (null for events that are not ledger movements).
    let (mut kinds, mut services, mut credits, mut after) = (cap(n), cap(n), cap(n), cap(n));
    let (mut tokens, mut token_amounts, mut refs) = (cap(n), cap(n), cap(n));
    let started = std::time::Instant::now();
    for e in events {
        blocks.push(e.position.block_number as i64);
        logs.push(e.position.log_index as i32);
        block_hashes.push(e.block_hash.to_vec());
        times.push(time(e.block_time));
        tx_hashes.push(e.tx_hash.to_vec());
        tx_indexes.push(e.tx_index as i32);
        addresses.push(e.address.to_vec());
        contracts.push(e.contract.name());
        names.push(e.name());
        args.push(e.args_json().map(std::borrow::Cow::into_owned));
        accounts.push(e.account().map(|a| a.to_vec()));
        let raw = e.raw_to_store();
        topics.push(raw.map(|raw| raw.topics().iter().flat_map(|t| t.0).collect::<Vec<u8>>()));
        data.push(raw.map(|raw| raw.data.to_vec()));
        entities.push(e.entity_hash());
        let entry = e.credit_entry();
        kinds.push(entry.as_ref().map(|c| c.kind));
        services.push(entry.as_ref().and_then(|c| c.service_id));
        credits.push(entry.as_ref().map(|c| c.credits.clone()));
        after.push(entry.as_ref().and_then(|c| c.balance_after.clone()));
        tokens.push(entry.as_ref().and_then(|c| c.token.map(|t| t.to_vec())));
        token_amounts.push(entry.as_ref().and_then(|c| c.token_amount.clone()));
        refs.push(entry.and_then(|c| c.reference.map(|r| r.to_vec())));
    }
    let built = started.elapsed();
    sqlx::query!(
        r#"insert into events (chain_id, block_number, log_index, block_hash, block_time, tx_hash, tx_index,
                               address, contract, event_name, args, account, topics, data, entity_hash,
                               credit_kind, service_id, credits, balance_after, token, token_amount, reference)
           select $1, * from unnest($2::bigint[], $3::int[], $4::bytea[], $5::timestamptz[], $6::bytea[],
                                    $7::int[], $8::bytea[], $9::text[], $10::text[], $11::text[]::json[], $12::bytea[],
                                    $13::bytea[], $14::bytea[], $15::bigint[],
                                    $16::text[], $17::bigint[], $18::text[]::numeric[], $19::text[]::numeric[],
                                    $20::bytea[], $21::text[]::numeric[], $22::bytea[])"#,
        chain,
        &blocks,
        &logs,
        &block_hashes,
        &times as &[Option<chrono::DateTime<chrono::Utc>>],
        &tx_hashes,
        &tx_indexes,
        &addresses,
        &contracts as &[&str],
        &names as &[Option<&str>],
        &args as &[Option<String>],
        &accounts as &[Option<Vec<u8>>],
        &topics as &[Option<Vec<u8>>],
        &data as &[Option<Vec<u8>>],
        &entities as &[Option<i64>],
        &kinds as &[Option<&str>],
        &services as &[Option<i64>],
        &credits as &[Option<String>],
        &after as &[Option<String>],
        &tokens as &[Option<Vec<u8>>],
        &token_amounts as &[Option<String>],
        &refs as &[Option<Vec<u8>>]
    )
    .execute(&mut *conn)
    .await?;
    tracing::debug!(
        target: "indexer::store",
        rows = n,
        build_ms = built.as_millis() as u64,
        insert_ms = (started.elapsed() - built).as_millis() as u64,
        "events inserted"
    );

    Ok(())
}

/// Appends the service history rows of the events that change a service's state.
async fn insert_state_changes(
    conn: &mut PgConnection,
    chain_id: u64,
    events: &[IndexedEvent],
) -> Result<(), StoreError> {
    let chain = chain_id as i64;
    let time = |t: Option<u64>| {
        t.and_then(|s| chrono::DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
    };
    let states: Vec<_> =
        events.iter().filter_map(|e| e.service_state_change().map(|s| (e, s))).collect();
    if !states.is_empty() {
        let m = states.len();
        let (mut blocks, mut logs, mut services, mut values) = (cap(m), cap(m), cap(m), cap(m));
        let (mut actors, mut times) = (cap(m), cap(m));
        for (e, s) in states {
            blocks.push(e.position.block_number as i64);
            logs.push(e.position.log_index as i32);
            services.push(s.service_id);
            values.push(s.state);
            actors.push(s.actor.map(|a| a.to_vec()));
            times.push(time(e.block_time));
        }
        sqlx::query!(
            r#"insert into service_state_changes (chain_id, block_number, log_index, service_id, state, actor, block_time)
               select $1, * from unnest($2::bigint[], $3::int[], $4::bigint[], $5::text[], $6::bytea[],
                                        $7::timestamptz[])"#,
            chain,
            &blocks,
            &logs,
            &services,
            &values as &[&str],
            &actors as &[Option<Vec<u8>>],
            &times as &[Option<chrono::DateTime<chrono::Utc>>]
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn cap<T>(n: usize) -> Vec<T> {
    Vec::with_capacity(n)
}

/// Deletes the events after `block` with their history rows, and returns the entities they had
/// changed, which must be folded again.
pub(crate) async fn delete_after(
    conn: &mut PgConnection,
    contracts: &PlatformContracts,
    chain_id: u64,
    block: u64,
) -> Result<Vec<EntityKey>, StoreError> {
    let (chain, block) = (chain_id as i64, block as i64);
    sqlx::query!(
        "delete from service_state_changes where chain_id = $1 and block_number > $2",
        chain,
        block
    )
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query_as!(
        StoredEvent,
        r#"delete from events where chain_id = $1 and block_number > $2
           returning block_number, log_index, block_hash, extract(epoch from block_time)::bigint as block_time,
                     tx_hash, tx_index, address, event_name, args::text, topics, data"#,
        chain,
        block
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut keys = Vec::new();
    for row in rows {
        if let Some(key) = row.into_event(contracts)?.entity() {
            keys.push(key);
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The stored events a fold of `keys` needs, in chain order: every event that changed an entity
/// found by hash, and a balance's latest ledger movement (which states the balance).
pub(crate) async fn for_entities(
    conn: &mut PgConnection,
    contracts: &PlatformContracts,
    chain_id: u64,
    keys: &[EntityKey],
) -> Result<Vec<IndexedEvent>, StoreError> {
    let (by_hash, balances): (Vec<&EntityKey>, Vec<&EntityKey>) =
        keys.iter().partition(|k| k.is_found_by_hash());
    let hashes: Vec<i64> = by_hash.into_iter().map(EntityKey::hash64).collect();
    let accounts: Vec<Vec<u8>> = balances
        .into_iter()
        .filter_map(|k| match k {
            EntityKey::Balance(account) => Some(account.to_vec()),
            _ => None,
        })
        .collect();
    let mut rows = sqlx::query_as!(
        StoredEvent,
        r#"select block_number, log_index, block_hash, extract(epoch from block_time)::bigint as block_time,
                  tx_hash, tx_index, address, event_name, args::text, topics, data
           from events
           where chain_id = $1 and entity_hash = any($2)"#,
        chain_id as i64,
        &hashes
    )
    .fetch_all(&mut *conn)
    .await?;
    // Each account's newest movement with a balance after it, walking events_by_account back.
    rows.extend(
        sqlx::query_as!(
            StoredEvent,
            r#"select e.block_number as "block_number!", e.log_index as "log_index!",
                      e.block_hash as "block_hash!", e.block_time, e.tx_hash as "tx_hash!",
                      e.tx_index as "tx_index!", e.address as "address!", e.event_name, e.args,
                      e.topics, e.data
               from unnest($2::bytea[]) as a(account)
               cross join lateral (
                   select block_number, log_index, block_hash,
                          extract(epoch from block_time)::bigint as block_time, tx_hash, tx_index,
                          address, event_name, args::text, topics, data
                   from events
                   where chain_id = $1 and account = a.account and balance_after is not null
                   order by block_number desc, log_index desc
                   limit 1
               ) as e"#,
            chain_id as i64,
            &accounts
        )
        .fetch_all(&mut *conn)
        .await?,
    );
    rows.sort_by_key(|r| (r.block_number, r.log_index));
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let event = row.into_event(contracts)?;
        // A hash collision reads another entity's event: keep only the asked ones.
        if event.entity().is_some_and(|k| keys.contains(&k)) {
            events.push(event);
        }
    }
    Ok(events)
}

/// Every stored event from `after` on (exclusive), in chain order, at most `limit`: the source of
/// a full re-fold.
pub async fn page(
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
                  tx_hash, tx_index, address, event_name, args::text, topics, data
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
    event_name: Option<String>,
    args: Option<String>,
    topics: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
}

impl StoredEvent {
    fn into_event(self, contracts: &PlatformContracts) -> Result<IndexedEvent, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("events row {}: {what}", self.block_number));
        let address = Address::try_from(self.address.as_slice()).map_err(|_| corrupt("address"))?;
        let data = match (&self.topics, &self.data, &self.event_name, &self.args) {
            // Stored raw: an unknown event, or a row written before arguments sufficed.
            (Some(topics), Some(data), _, _) => {
                if !topics.len().is_multiple_of(32) {
                    return Err(corrupt("topics"));
                }
                let topics: Vec<B256> = topics.chunks_exact(32).map(B256::from_slice).collect();
                LogData::new(topics, Bytes::from(data.clone())).ok_or_else(|| corrupt("topics"))?
            }
            // Stored by its arguments: the log is rebuilt from them.
            (_, _, Some(name), Some(args)) => {
                let contract = PlatformContract::at(contracts, address)
                    .ok_or_else(|| corrupt("not a platform contract"))?;
                DecodedLog::from_args_json(contract, name, args)
                    .map_err(|e| corrupt(&e.to_string()))?
                    .event
                    .log_data()
            }
            _ => return Err(corrupt("neither raw log nor arguments")),
        };
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
            Log { address, data },
        )
        .map_err(|e| corrupt(&e.to_string()))
    }
}
