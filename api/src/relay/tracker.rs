//! Follows relayed raw transactions (the wallet's own, broadcast as signed) to their end:
//! receipts make them `mined` or `failed`; one recorded but not known to the node (the replica
//! stopped between recording and broadcasting) is broadcast again from its stored bytes; one whose
//! wallet has moved past its nonce without it being mined was `replaced`. Forward requests are
//! sent by the chain outbox and their records follow their outbox rows (a trigger); the tracker
//! only reads receipts for those relayed before the outbox. One API replica tracks at a time (a
//! session advisory lock held for the pass); each row's update commits on its own, so a failure
//! on one row never undoes what was done for another.

use std::time::Duration;

use alloy::{
    primitives::{Address, B256},
    providers::Provider,
};
use decentraspace_db::locks::{Lock, try_lead};
use sqlx::Connection;

use crate::{
    jobs::{Job, Schedule},
    relay::RelayState,
};

/// How often open transactions are checked.
const INTERVAL: Duration = Duration::from_millis(500);
/// A recorded raw transaction the node does not have is broadcast again after this (the request
/// that recorded it broadcasts it within a node timeout, unless its replica stopped).
const RESEND_AFTER_SECS: f64 = 15.0;
/// A record never sent (no stored bytes, or refused every time) fails after this.
const UNSENT_AFTER_SECS: f64 = 300.0;

struct Open {
    id: i64,
    account: Vec<u8>,
    mode: String,
    status: String,
    tx_hash: Option<Vec<u8>>,
    replaced_tx_hashes: Vec<Vec<u8>>,
    nonce: Option<i64>,
    calldata: Option<Vec<u8>>,
    age_secs: f64,
}

/// The tracker's job: a pass every [`INTERVAL`].
pub fn job(state: &RelayState) -> Job {
    let state = state.clone();
    Job::periodic(
        "relay-tracker",
        || Schedule::every(INTERVAL),
        move || {
            let state = state.clone();
            async move { pass(&state).await.map(drop) }
        },
    )
}

/// One pass over the open transactions. Returns how many changed.
pub async fn pass(state: &RelayState) -> anyhow::Result<usize> {
    let Some(mut lock) = try_lead(&state.db, Lock::RelayTracker).await? else { return Ok(0) };
    let tracked = track_open(state, &mut lock).await;
    lock.close().await.ok();
    tracked
}

async fn track_open(state: &RelayState, conn: &mut sqlx::PgConnection) -> anyhow::Result<usize> {
    let open = sqlx::query_as!(
        Open,
        r#"select id, account, mode, status, tx_hash, replaced_tx_hashes as "replaced_tx_hashes!", nonce, calldata,
                  extract(epoch from now() - updated_at)::float8 as "age_secs!"
           from relayed_transactions
           where chain_id = $1 and status in ('received', 'pending') and outbox_id is null
           order by id limit 500"#,
        state.chain_id() as i64
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut changed = 0;
    for row in open {
        let id = row.id;
        match track(state, conn, row).await {
            Ok(done) => changed += usize::from(done),
            // One row's failure (an RPC timeout, say) does not stop the others.
            Err(err) => {
                tracing::warn!(target: "api::relay", id, err = format!("{err:#}"), "tracking failed")
            }
        }
    }
    Ok(changed)
}

async fn track(
    state: &RelayState,
    conn: &mut sqlx::PgConnection,
    row: Open,
) -> anyhow::Result<bool> {
    let current = row.tx_hash.as_deref().and_then(|h| B256::try_from(h).ok());
    if row.status == "received" {
        return match current {
            Some(hash) => recover_unsent(state, conn, &row, hash).await,
            None => never_sent(conn, &row).await,
        };
    }
    let Some(current) = current else { return Ok(false) };
    let hashes = std::iter::once(current)
        .chain(row.replaced_tx_hashes.iter().filter_map(|h| B256::try_from(h.as_slice()).ok()));
    for hash in hashes {
        if let Some(receipt) = state.chain.get_transaction_receipt(hash).await? {
            let status = if receipt.status() { "mined" } else { "failed" };
            let error = (!receipt.status()).then_some("reverted on-chain");
            sqlx::query!(
                r#"update relayed_transactions
                   set status = $2, tx_hash = $3, block_number = $4, error = $5, updated_at = now() where id = $1"#,
                row.id,
                status,
                hash.as_slice(),
                receipt.block_number.map(|b| b as i64),
                error
            )
            .execute(&mut *conn)
            .await?;
            return Ok(true);
        }
    }
    let stuck = row.age_secs > state.config.relay_stuck_after_secs as f64;
    if stuck && row.mode == "raw" {
        // A nonce used without our hash mined: the wallet replaced it.
        return replaced_by_sender(state, conn, &row, current).await;
    }
    Ok(false)
}

/// A recorded raw transaction still `received`: the node has it (the answer to its broadcast was
/// lost), or it is broadcast again from its stored bytes once the request that recorded it had
/// its time; a wallet that moved past its nonce replaced it.
async fn recover_unsent(
    state: &RelayState,
    conn: &mut sqlx::PgConnection,
    row: &Open,
    hash: B256,
) -> anyhow::Result<bool> {
    if state.chain.get_transaction_by_hash(hash).await?.is_some() {
        return pending(conn, row.id).await;
    }
    if row.age_secs < RESEND_AFTER_SECS {
        return Ok(false);
    }
    if replaced_by_sender(state, conn, row, hash).await? {
        return Ok(true);
    }
    if let Some(raw) = &row.calldata
        && state.chain.send_raw_transaction(raw).await.is_ok()
    {
        tracing::info!(target: "api::relay", id = row.id, tx = %hash, "broadcast a recorded transaction again");
        return pending(conn, row.id).await;
    }
    never_sent(conn, row).await
}

async fn pending(conn: &mut sqlx::PgConnection, id: i64) -> anyhow::Result<bool> {
    sqlx::query!(
        "update relayed_transactions set status = 'pending', updated_at = now() where id = $1 and status = 'received'",
        id
    )
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// A record that could not be sent in [`UNSENT_AFTER_SECS`] fails.
async fn never_sent(conn: &mut sqlx::PgConnection, row: &Open) -> anyhow::Result<bool> {
    if row.age_secs <= UNSENT_AFTER_SECS {
        return Ok(false);
    }
    sqlx::query!(
        "update relayed_transactions set status = 'failed', error = 'never sent', updated_at = now() where id = $1",
        row.id
    )
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// A raw transaction the node no longer has, whose wallet has used its nonce for another
/// transaction.
async fn replaced_by_sender(
    state: &RelayState,
    conn: &mut sqlx::PgConnection,
    row: &Open,
    current: B256,
) -> anyhow::Result<bool> {
    let Ok(sender) = Address::try_from(row.account.as_slice()) else { return Ok(false) };
    let Some(nonce) = row.nonce else { return Ok(false) };
    if state.chain.get_transaction_by_hash(current).await?.is_some() {
        return Ok(false);
    }
    let used = state.chain.get_transaction_count(sender).await?;
    if used > nonce as u64 {
        sqlx::query!(
            "update relayed_transactions set status = 'replaced', error = 'its nonce was used by another transaction', updated_at = now() where id = $1",
            row.id
        )
        .execute(&mut *conn)
        .await?;
        return Ok(true);
    }
    Ok(false)
}
