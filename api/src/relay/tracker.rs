//! Follows relayed transactions to their end: receipts make them `mined` or `failed`; a forward
//! request stuck unmined is sent again at its nonce with a higher fee (its old hash kept); a raw
//! transaction whose sender has moved past its nonce without it being mined was `replaced`. One
//! API replica tracks at a time (a session advisory lock held for the pass); each row's update
//! commits on its own, so a failure on one row never undoes what was done (and sent) for another.

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, Bytes},
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
/// The most fee bumps a stuck transaction gets.
const MAX_BUMPS: i32 = 5;
/// Each bump multiplies the fees by this (nodes require at least +10% to replace).
const BUMP: f64 = 1.25;
/// A record never sent (the API stopped between recording and sending) fails after this.
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
    gas_limit: Option<i64>,
    bumps: i32,
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
                  gas_limit, bumps, extract(epoch from now() - updated_at)::float8 as "age_secs!"
           from relayed_transactions
           where chain_id = $1 and status in ('received', 'pending')
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
    if row.status == "received" {
        if row.age_secs > UNSENT_AFTER_SECS {
            sqlx::query!(
                "update relayed_transactions set status = 'failed', error = 'never sent', updated_at = now() where id = $1",
                row.id
            )
            .execute(&mut *conn)
            .await?;
            return Ok(true);
        }
        return Ok(false);
    }
    let Some(current) = row.tx_hash.as_deref().and_then(|h| B256::try_from(h).ok()) else {
        return Ok(false);
    };
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
    if !stuck {
        return Ok(false);
    }
    // A nonce used without any of our hashes mined: something else took it.
    if replaced_by_sender(state, conn, &row, current).await? {
        return Ok(true);
    }
    match row.mode.as_str() {
        "forward" if row.bumps < MAX_BUMPS => bump(state, conn, &row, current).await,
        _ => Ok(false),
    }
}

/// Sends a stuck forward request again at its nonce with higher fees.
async fn bump(
    state: &RelayState,
    conn: &mut sqlx::PgConnection,
    row: &Open,
    current: B256,
) -> anyhow::Result<bool> {
    let (Some(relayer), Some(nonce), Some(calldata), Some(gas)) =
        (state.relayer.as_ref(), row.nonce, row.calldata.clone(), row.gas_limit)
    else {
        return Ok(false);
    };
    // After a nonce resync, a later request may have been sent at this nonce: re-sending would
    // replace that one. This request's nonce belongs to the other now.
    let taken = sqlx::query_scalar!(
        r#"select exists(select 1 from relayed_transactions
            where chain_id = $1 and mode = 'forward' and nonce = $2 and id <> $3
              and status in ('pending', 'mined')) as "taken!""#,
        state.chain_id() as i64,
        nonce,
        row.id
    )
    .fetch_one(&mut *conn)
    .await?;
    if taken {
        sqlx::query!(
            "update relayed_transactions set status = 'replaced', error = 'its nonce was used by another relayed transaction', updated_at = now() where id = $1",
            row.id
        )
        .execute(&mut *conn)
        .await?;
        return Ok(true);
    }
    let factor = BUMP.powi(row.bumps + 1);
    let forwarder = state.deployment.contracts.forwarder;
    match relayer
        .send(forwarder, Bytes::from(calldata), gas as u64, Some((nonce as u64, factor)))
        .await
    {
        Ok(sent) => {
            sqlx::query!(
                r#"update relayed_transactions
                   set tx_hash = $2, replaced_tx_hashes = array_append(replaced_tx_hashes, $3), bumps = bumps + 1,
                       updated_at = now()
                   where id = $1"#,
                row.id,
                sent.tx_hash.as_slice(),
                current.as_slice()
            )
            .execute(&mut *conn)
            .await?;
            tracing::info!(target: "api::relay", id = row.id, bumps = row.bumps + 1, tx = %sent.tx_hash, "stuck transaction re-sent with higher fees");
            Ok(true)
        }
        Err(err) => {
            // A nonce already used means one of its hashes got mined: the next pass finds it.
            tracing::warn!(target: "api::relay", id = row.id, %err, "fee bump refused");
            Ok(false)
        }
    }
}

/// A transaction the node no longer has, whose sender (the wallet for a raw transaction, the
/// relayer for a forward request) has used its nonce for another transaction.
async fn replaced_by_sender(
    state: &RelayState,
    conn: &mut sqlx::PgConnection,
    row: &Open,
    current: B256,
) -> anyhow::Result<bool> {
    let sender = match (row.mode.as_str(), &state.relayer) {
        ("forward", Some(relayer)) => relayer.address(),
        ("forward", None) => return Ok(false),
        _ => match Address::try_from(row.account.as_slice()) {
            Ok(account) => account,
            Err(_) => return Ok(false),
        },
    };
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
