//! [`Sender`]: the one signer of a key's outbox rows at a time, elected through the key's advisory
//! lock. Every replica runs one per configured key; the lock holder drains the rows and the others
//! stand by, taking over when its connection drops.
//!
//! One pass, in order (ADR 0011 has the crash table):
//! 1. **settle**: rows on the network whose nonce the chain has used get their receipt; a row whose
//!    nonce another transaction of the key took (the key was used outside the platform) is queued
//!    again with a fresh nonce;
//! 2. **confirm**: mined rows past the confirmation depth are checked against the canonical chain,
//!    and re-opened when their block left it;
//! 3. **sign**: when rows are queued, the durable counter is raised to the chain's pending count
//!    (a key used outside the platform moves it on), then the rows take its next nonces and are
//!    signed, the raw transactions stored in the same database transaction;
//! 4. **broadcast**: stored sends go to the node (the same bytes again after a crash);
//! 5. **unstick**: a row pending past its deadline gets a new send at its nonce with higher fees;
//!    the row at the chain's count, which every later row waits on, has a shorter deadline.
//!
//! Every write happens on the connection that holds the lock: a sender that lost it (its
//! connection dropped) cannot sign or record anything more, whatever it still believes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    consensus::TxEnvelope,
    eips::{BlockNumberOrTag, Encodable2718},
    network::{EthereumWallet, TransactionBuilder},
    primitives::{Address, B256, Bytes, U256},
    providers::{DynProvider, Provider},
    rpc::types::TransactionRequest,
    signers::local::PrivateKeySigner,
};
use anyhow::Context;
use decentraspace_db::locks::{Lock, try_lead};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection};
use tokio::sync::{Mutex, broadcast};

use super::Outbox;
use crate::{chain::ChainError, jobs::Job};

/// The longest one node call may take: a hung node must not hold the key.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fee estimate is reused.
const FEES_TTL: Duration = Duration::from_secs(5);
/// Each raise multiplies the fees by at least this (nodes replace at +10%).
const BUMP_PERCENT: u128 = 125;
/// The most sends one row gets (its first and the raises).
const MAX_SENDS: i64 = 8;
/// How often the leading sender publishes its key's balance.
const BALANCE_EVERY: Duration = Duration::from_secs(30);
/// Sends broadcast at once (in nonce order, answers awaited together).
const IN_FLIGHT: usize = 32;

/// How a sender paces itself.
#[derive(Debug, Clone, Copy)]
pub struct SenderSettings {
    /// Blocks on top of a mined row before it is final (reorgs deeper than this are not followed).
    pub confirmations: u64,
    /// A row pending this long gets a new send with higher fees.
    pub stuck_after: Duration,
    /// The row every other one of the key waits on (its nonce is the chain's count) gets a new
    /// send with higher fees after this long already: a node that dropped it or never promoted it
    /// mines nothing of the key until then.
    pub head_stuck_after: Duration,
    /// The longest wait between passes without a notification.
    pub tick: Duration,
    /// Rows signed or broadcast per step.
    pub batch: i64,
    /// Below this balance (wei) the key is reported low (`chain_signer_low{key}` is 1).
    pub low_balance: U256,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            confirmations: 64,
            stuck_after: Duration::from_secs(60),
            head_stuck_after: Duration::from_secs(15),
            tick: Duration::from_millis(500),
            batch: 256,
            low_balance: U256::from(10u64).pow(U256::from(17u64)),
        }
    }
}

/// Rows a pass found mined (or reverted), as the columns of one update.
#[derive(Default)]
struct Mined {
    ids: Vec<i64>,
    states: Vec<String>,
    hashes: Vec<Vec<u8>>,
    blocks: Vec<i64>,
    block_hashes: Vec<Vec<u8>>,
    gas: Vec<i64>,
}

/// Signs and sends one key's rows.
pub struct Sender {
    outbox: Outbox,
    chain: DynProvider,
    wallet: EthereumWallet,
    address: Address,
    /// The job's name (`chain-sender-<role>`).
    name: &'static str,
    /// The key's role (`operator`, …).
    role: &'static str,
    /// Below this balance (wei) the key is reported low.
    low_balance: U256,
    settings: SenderSettings,
    fees: Mutex<Option<(Instant, u128, u128)>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("address", &self.address).field("name", &self.name).finish()
    }
}

/// `call` bounded by [`NODE_TIMEOUT`], its failure a [`ChainError`].
async fn node<T>(
    call: impl std::future::IntoFuture<
        Output = Result<T, alloy::transports::RpcError<alloy::transports::TransportErrorKind>>,
    >,
) -> Result<T, ChainError> {
    match tokio::time::timeout(NODE_TIMEOUT, call.into_future()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(ChainError::from_rpc(err)),
        Err(_) => Err(ChainError::Unreachable(format!("no answer within {NODE_TIMEOUT:?}"))),
    }
}

/// A row's current send, read for broadcasting or raising.
struct Send {
    outbox_id: i64,
    send_id: i64,
    raw: Vec<u8>,
    tx_hash: Vec<u8>,
}

impl Sender {
    /// A sender for `key` (read from the setting `setting`, for errors), as the job
    /// `chain-sender-<role>`.
    pub fn new(
        key: &SecretString,
        setting: &str,
        role: &'static str,
        outbox: Outbox,
        chain: DynProvider,
        settings: SenderSettings,
    ) -> anyhow::Result<Self> {
        let signer: PrivateKeySigner = key
            .expose_secret()
            .parse()
            .with_context(|| format!("{setting} is not a private key"))?;
        let address = signer.address();
        Ok(Self {
            outbox,
            chain,
            wallet: EthereumWallet::from(signer),
            address,
            // One per configured key, made once at start.
            name: Box::leak(format!("chain-sender-{role}").into_boxed_str()),
            role,
            low_balance: settings.low_balance,
            settings,
            fees: Mutex::default(),
        })
    }

    /// The key's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The key's role.
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// The supervised job: stands by until it holds the key's lock, then drains the key's rows
    /// while it holds it.
    pub fn job(self: Arc<Self>) -> Job {
        Job::new(self.name, move || {
            let sender = self.clone();
            async move { sender.run().await }
        })
    }

    async fn run(&self) -> anyhow::Result<()> {
        let mut queued = self.outbox.queued_rows();
        loop {
            let lock = Lock::ChainSender {
                chain_id: self.outbox.chain_id,
                signer: self.address.as_slice(),
            };
            match try_lead(&self.outbox.db, lock).await? {
                // Another replica leads: try again after a tick (not on each queued row, which
                // the leader is already sending; a leader that dies frees the lock with its
                // connection, and this replica takes over within the tick).
                None => tokio::time::sleep(self.settings.tick).await,
                Some(mut conn) => {
                    tracing::info!(target: "api::chain", sender = self.name, address = %self.address, "leading the key's sender");
                    let led = self.lead(&mut conn, &mut queued).await;
                    conn.close().await.ok();
                    led?;
                }
            }
        }
    }

    /// Waits for a row of this key to be queued, or `wait`.
    async fn idle(&self, queued: &mut broadcast::Receiver<Address>, wait: Duration) {
        let _ = tokio::time::timeout(wait, async {
            loop {
                match queued.recv().await {
                    Ok(signer) if signer == self.address => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }

    /// Passes until the lock's connection fails (the error ends the lead; the job starts over).
    async fn lead(
        &self,
        conn: &mut PgConnection,
        queued: &mut broadcast::Receiver<Address>,
    ) -> anyhow::Result<()> {
        let mut gauged = Instant::now() - BALANCE_EVERY;
        loop {
            if gauged.elapsed() >= BALANCE_EVERY {
                gauged = Instant::now();
                self.gauge_balance().await;
            }
            match self.pass(conn).await {
                Ok(Next::Now) => {}
                // Receipts are due soon: look again sooner than the idle tick.
                Ok(Next::InFlight) => self.idle(queued, self.settings.tick / 5).await,
                Ok(Next::Idle) => self.idle(queued, self.settings.tick).await,
                Err(PassError::Node(err)) => {
                    tracing::warn!(target: "api::chain", sender = self.name, %err, "chain node failed; trying again");
                    metrics::counter!("chain_sender_node_failures_total", "sender" => self.name)
                        .increment(1);
                    self.idle(queued, self.settings.tick).await;
                }
                Err(PassError::Database(err)) => return Err(err),
            }
        }
    }

    /// Publishes the key's balance, and whether it is low, as metrics.
    async fn gauge_balance(&self) {
        if let Ok(balance) = node(self.chain.get_balance(self.address)).await {
            let wei = f64::from(balance);
            metrics::gauge!("chain_signer_balance_wei", "key" => self.role).set(wei);
            let low = if balance < self.low_balance { 1.0 } else { 0.0 };
            metrics::gauge!("chain_signer_low", "key" => self.role).set(low);
            if balance < self.low_balance {
                tracing::warn!(target: "api::chain", sender = self.name, address = %self.address, %balance, "the key's balance is low: fund it");
            }
        }
    }

    /// One pass; when to run the next.
    async fn pass(&self, conn: &mut PgConnection) -> Result<Next, PassError> {
        let used = self.settle(conn).await?;
        self.confirm(conn).await?;
        let signed = self.sign(conn).await?;
        let sent = self.broadcast(conn).await?;
        self.unstick(conn, used).await?;
        if signed as i64 == self.settings.batch || sent as i64 == self.settings.batch {
            return Ok(Next::Now);
        }
        let in_flight = sqlx::query_scalar!(
            r#"select exists (select 1 from chain_outbox
                              where chain_id = $1 and signer = $2 and state in ('signed', 'pending'))
                 as "in_flight!""#,
            self.chain_id(),
            self.address.as_slice()
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(if in_flight { Next::InFlight } else { Next::Idle })
    }

    /// Makes the counter no lower than the chain's pending count: a key used outside the
    /// platform moves it on. (It is never lowered: nonces it handed out are held by rows.)
    async fn sync_counter(&self, conn: &mut PgConnection) -> Result<(), PassError> {
        let pending = node(self.chain.get_transaction_count(self.address).pending()).await?;
        sqlx::query!(
            r#"insert into signer_nonces (chain_id, signer, next_nonce) values ($1, $2, $3)
               on conflict (chain_id, signer) do update
                 set next_nonce = greatest(signer_nonces.next_nonce, excluded.next_nonce),
                     synced_at = now()"#,
            self.chain_id(),
            self.address.as_slice(),
            pending as i64
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The chain it signs for.
    pub fn chain_id(&self) -> i64 {
        self.outbox.chain_id as i64
    }

    /// Receipts of rows whose nonce the chain has used, looked up together (each row's sends
    /// newest first) and recorded in one statement. Answers the key's transaction count at the
    /// head (the next nonce the chain will take).
    async fn settle(&self, conn: &mut PgConnection) -> Result<u64, PassError> {
        let used = node(self.chain.get_transaction_count(self.address).latest()).await?;
        let rows = sqlx::query!(
            r#"select o.id, o.nonce as "nonce!",
                      array_agg(s.tx_hash order by s.id desc) as "hashes!: Vec<Vec<u8>>"
               from chain_outbox o
               join chain_outbox_sends s on s.outbox_id = o.id
               where o.chain_id = $1 and o.signer = $2 and o.state in ('signed', 'pending')
                 and o.nonce < $3
               group by o.id
               order by o.nonce"#,
            self.chain_id(),
            self.address.as_slice(),
            used as i64
        )
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Ok(used);
        }
        let lookups: Vec<_> = rows
            .iter()
            .map(|row| async move {
                for hash in &row.hashes {
                    let hash = B256::try_from(hash.as_slice()).map_err(anyhow::Error::from)?;
                    if let Some(receipt) = node(self.chain.get_transaction_receipt(hash)).await? {
                        return Ok(Some(receipt));
                    }
                }
                Ok::<_, PassError>(None)
            })
            .collect();
        let receipts: Vec<_> =
            futures::stream::iter(lookups).buffered(IN_FLIGHT).collect::<Vec<_>>().await;
        let mut mined = Mined::default();
        let mut confirmed_count = None;
        for (row, receipt) in rows.iter().zip(receipts) {
            if let Some(receipt) = receipt? {
                // A receipt served before its block is sealed: settled on a later pass.
                let (Some(block_number), Some(block_hash)) =
                    (receipt.block_number, receipt.block_hash)
                else {
                    continue;
                };
                mined.ids.push(row.id);
                mined.states.push(if receipt.status() { "mined" } else { "reverted" }.to_owned());
                mined.hashes.push(receipt.transaction_hash.to_vec());
                mined.blocks.push(block_number as i64);
                mined.block_hashes.push(block_hash.to_vec());
                mined.gas.push(receipt.gas_used as i64);
                continue;
            }
            // Another transaction of the key used the nonce, if the chain says so past the reorg
            // depth (a receipt not served yet is not proof).
            let count = match confirmed_count {
                Some(count) => count,
                None => {
                    let head = node(self.chain.get_block_number()).await?;
                    let at = head.saturating_sub(self.settings.confirmations.max(1));
                    let count = node(
                        self.chain
                            .get_transaction_count(self.address)
                            .block_id(BlockNumberOrTag::Number(at).into()),
                    )
                    .await?;
                    *confirmed_count.insert(count)
                }
            };
            if (row.nonce as u64) >= count {
                continue;
            }
            // Looked up again, one at a time, now that the count is known: a node may count a
            // transaction before it serves its receipt, and a requeue must never follow that.
            let mut found = false;
            for hash in &row.hashes {
                let hash = B256::try_from(hash.as_slice()).map_err(anyhow::Error::from)?;
                if node(self.chain.get_transaction_receipt(hash)).await?.is_some() {
                    found = true;
                    break;
                }
            }
            if !found {
                self.requeue(conn, row.id, row.nonce).await?;
            }
        }
        if !mined.ids.is_empty() {
            sqlx::query!(
                r#"update chain_outbox o
                   set state = t.state, tx_hash = t.hash, block_number = t.block, block_hash = t.block_hash,
                       gas_used = t.gas, error = null, retry_at = null, updated_at = now()
                   from unnest($1::bigint[], $2::text[], $3::bytea[], $4::bigint[], $5::bytea[], $6::bigint[])
                       as t(id, state, hash, block, block_hash, gas)
                   where o.id = t.id
                     and o.chain_id = $7 and o.signer = $8 and o.state in ('signed', 'pending')"#,
                &mined.ids,
                &mined.states,
                &mined.hashes,
                &mined.blocks,
                &mined.block_hashes,
                &mined.gas,
                self.chain_id(),
                self.address.as_slice()
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok(used)
    }

    /// Queues a row again whose nonce another transaction took: its sends can never be mined.
    async fn requeue(&self, conn: &mut PgConnection, id: i64, nonce: i64) -> Result<(), PassError> {
        tracing::warn!(target: "api::chain", sender = self.name, id, nonce, "a transaction the platform did not sign used the nonce; queued again");
        let mut tx = conn.begin().await?;
        sqlx::query!("delete from chain_outbox_sends where outbox_id = $1", id)
            .execute(&mut *tx)
            .await?;
        sqlx::query!(
            r#"update chain_outbox
               set state = 'queued', nonce = null, requeued = requeued + 1, attempts = 0,
                   retry_at = null, updated_at = now(),
                   error = format('nonce %s was used by a transaction the platform did not sign', $2::bigint)
               where id = $1"#,
            id,
            nonce
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Mined rows past the confirmation depth: final if their block is still canonical (each
    /// block looked up once, the rows closed in one statement), back to be broadcast if it is not.
    async fn confirm(&self, conn: &mut PgConnection) -> Result<(), PassError> {
        let head = node(self.chain.get_block_number()).await?;
        let Some(deep) = head.checked_sub(self.settings.confirmations) else { return Ok(()) };
        let rows = sqlx::query!(
            r#"select id, tx_hash as "tx_hash!", block_number as "block_number!", block_hash
               from chain_outbox
               where chain_id = $1 and signer = $2 and state = 'mined' and block_number <= $3
               order by nonce limit $4"#,
            self.chain_id(),
            self.address.as_slice(),
            deep as i64,
            self.settings.batch
        )
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let numbers: std::collections::BTreeSet<u64> =
            rows.iter().map(|row| row.block_number as u64).collect();
        let lookups: Vec<_> = numbers
            .into_iter()
            .map(|number| async move {
                let block =
                    node(self.chain.get_block_by_number(BlockNumberOrTag::Number(number))).await?;
                Ok::<_, PassError>((number, block.map(|b| b.header.hash.to_vec())))
            })
            .collect();
        let mut canonical = std::collections::HashMap::new();
        for found in futures::stream::iter(lookups).buffered(IN_FLIGHT).collect::<Vec<_>>().await {
            let (number, hash) = found?;
            canonical.insert(number, hash);
        }
        let (mut confirmed, mut moved) = (Vec::new(), Vec::new());
        for row in &rows {
            match canonical.get(&(row.block_number as u64)) {
                Some(Some(hash)) if Some(hash) == row.block_hash.as_ref() => confirmed.push(row.id),
                _ => moved.push(row),
            }
        }
        if !confirmed.is_empty() {
            sqlx::query!(
                "update chain_outbox set state = 'confirmed', updated_at = now()
                 where id = any($1) and chain_id = $2 and signer = $3 and state = 'mined'",
                &confirmed,
                self.chain_id(),
                self.address.as_slice()
            )
            .execute(&mut *conn)
            .await?;
        }
        for row in moved {
            let hash = B256::try_from(row.tx_hash.as_slice()).map_err(anyhow::Error::from)?;
            match node(self.chain.get_transaction_receipt(hash)).await? {
                // Mined again in another block: follow it there.
                Some(receipt) => {
                    sqlx::query!(
                        "update chain_outbox set block_number = $2, block_hash = $3, updated_at = now() where id = $1",
                        row.id,
                        receipt.block_number.map(|b| b as i64),
                        receipt.block_hash.map(|h| h.to_vec())
                    )
                    .execute(&mut *conn)
                    .await?;
                }
                None => {
                    tracing::warn!(target: "api::chain", sender = self.name, id = row.id, "a mined transaction left the chain; broadcasting it again");
                    sqlx::query!(
                        r#"update chain_outbox
                           set state = 'signed', tx_hash = null, block_number = null, block_hash = null,
                               gas_used = null, updated_at = now()
                           where id = $1"#,
                        row.id
                    )
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// The fees to sign with now: `(max fee, priority fee)`.
    async fn fees(&self) -> Result<(u128, u128), PassError> {
        let mut cached = self.fees.lock().await;
        if let Some((at, max_fee, priority)) = *cached
            && at.elapsed() < FEES_TTL
        {
            return Ok((max_fee, priority));
        }
        let fees = tokio::time::timeout(NODE_TIMEOUT, self.chain.estimate_eip1559_fees())
            .await
            .map_err(|_| ChainError::Unreachable("no fee estimate in time".into()))?
            .map_err(|e| ChainError::Unreachable(e.to_string()))?;
        *cached = Some((Instant::now(), fees.max_fee_per_gas, fees.max_priority_fee_per_gas));
        Ok((fees.max_fee_per_gas, fees.max_priority_fee_per_gas))
    }

    /// Signs `request` at `nonce` with `fees`: the raw bytes and the hash.
    async fn sign_one(
        &self,
        to: &[u8],
        input: Vec<u8>,
        value: &str,
        gas_limit: i64,
        nonce: i64,
        (max_fee, priority): (u128, u128),
    ) -> anyhow::Result<(Vec<u8>, B256)> {
        let tx = TransactionRequest::default()
            .with_from(self.address)
            .with_to(Address::try_from(to)?)
            .with_input(Bytes::from(input))
            .with_value(value.parse::<U256>()?)
            .with_nonce(nonce as u64)
            .with_chain_id(self.outbox.chain_id)
            .with_gas_limit(gas_limit as u64)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(priority);
        let envelope: TxEnvelope =
            alloy::network::NetworkTransactionBuilder::build(tx, &self.wallet)
                .await
                .context("sign")?;
        Ok((envelope.encoded_2718(), *envelope.tx_hash()))
    }

    /// Queued rows take the next nonces and are signed; the sends are stored in the transaction
    /// that advances the counter. How many were signed.
    async fn sign(&self, conn: &mut PgConnection) -> Result<usize, PassError> {
        let waiting = sqlx::query_scalar!(
            r#"select exists (select 1 from chain_outbox
                              where chain_id = $1 and signer = $2 and state = 'queued') as "waiting!""#,
            self.chain_id(),
            self.address.as_slice()
        )
        .fetch_one(&mut *conn)
        .await?;
        if !waiting {
            return Ok(0);
        }
        self.sync_counter(conn).await?;
        let fees = self.fees().await?;
        let mut tx = conn.begin().await?;
        let rows = sqlx::query!(
            r#"select id, to_address, input, value::text as "value!", gas_limit from chain_outbox
               where chain_id = $1 and signer = $2 and state = 'queued'
               order by id limit $3 for update"#,
            self.chain_id(),
            self.address.as_slice(),
            self.settings.batch
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut next = sqlx::query_scalar!(
            "select next_nonce from signer_nonces where chain_id = $1 and signer = $2 for update",
            self.chain_id(),
            self.address.as_slice()
        )
        .fetch_one(&mut *tx)
        .await?;
        let (mut ids, mut nonces, mut raws, mut hashes) = (vec![], vec![], vec![], vec![]);
        for row in &rows {
            let (raw, hash) = self
                .sign_one(&row.to_address, row.input.clone(), &row.value, row.gas_limit, next, fees)
                .await?;
            ids.push(row.id);
            nonces.push(next);
            raws.push(raw);
            hashes.push(hash.to_vec());
            next += 1;
        }
        let (max_fee, priority) = (fees.0.to_string(), fees.1.to_string());
        sqlx::query!(
            r#"insert into chain_outbox_sends (outbox_id, raw, tx_hash, max_fee_per_gas, max_priority_fee_per_gas)
               select id, raw, hash, $4::text::numeric, $5::text::numeric
               from unnest($1::bigint[], $2::bytea[], $3::bytea[]) as t(id, raw, hash)"#,
            &ids,
            &raws,
            &hashes,
            max_fee,
            priority
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            r#"update chain_outbox o set state = 'signed', nonce = t.nonce, updated_at = now()
               from unnest($1::bigint[], $2::bigint[]) as t(id, nonce)
               where o.id = t.id and o.chain_id = $3 and o.signer = $4 and o.state = 'queued'"#,
            &ids,
            &nonces,
            self.chain_id(),
            self.address.as_slice()
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "update signer_nonces set next_nonce = $3 where chain_id = $1 and signer = $2",
            self.chain_id(),
            self.address.as_slice(),
            next
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Broadcasts the stored sends of signed rows, lowest nonce first; the node answering that it
    /// has the transaction (or finding it by hash) puts the row `pending`. How many went out.
    async fn broadcast(&self, conn: &mut PgConnection) -> Result<usize, PassError> {
        let rows = sqlx::query_as!(
            Send,
            r#"select o.id as outbox_id, s.id as send_id, s.raw, s.tx_hash
               from chain_outbox o
               join lateral (select id, raw, tx_hash from chain_outbox_sends
                             where outbox_id = o.id order by id desc limit 1) s on true
               where o.chain_id = $1 and o.signer = $2 and o.state = 'signed'
                 and (o.retry_at is null or o.retry_at <= now())
               order by o.nonce limit $3"#,
            self.chain_id(),
            self.address.as_slice(),
            self.settings.batch
        )
        .fetch_all(&mut *conn)
        .await?;
        let calls: Vec<_> =
            rows.iter().map(|send| self.send_raw(send.raw.clone(), send.tx_hash.clone())).collect();
        let answers: Vec<_> = futures::stream::iter(calls).buffered(IN_FLIGHT).collect().await;
        let (mut sent_rows, mut sent_sends) = (vec![], vec![]);
        let mut unreachable = None;
        for (send, answer) in rows.iter().zip(answers) {
            match answer {
                Ok(()) => {
                    sent_rows.push(send.outbox_id);
                    sent_sends.push(send.send_id);
                }
                Err(ChainError::Unreachable(err)) => unreachable = Some(err),
                Err(err) => {
                    metrics::counter!("chain_sender_refusals_total", "sender" => self.name)
                        .increment(1);
                    sqlx::query!(
                        r#"update chain_outbox
                           set attempts = attempts + 1, error = $2, updated_at = now(),
                               retry_at = now() + least(interval '1 second' * power(2, attempts), interval '5 minutes')
                           where id = $1"#,
                        send.outbox_id,
                        err.to_string()
                    )
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        self.mark_sent(conn, &sent_rows, &sent_sends).await?;
        if let Some(err) = unreachable {
            return Err(ChainError::Unreachable(err).into());
        }
        Ok(sent_rows.len())
    }

    /// Rows whose send the node has: `pending`, their callers woken by the trigger.
    async fn mark_sent(
        &self,
        conn: &mut PgConnection,
        rows: &[i64],
        sends: &[i64],
    ) -> Result<(), PassError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = conn.begin().await?;
        sqlx::query!(
            "update chain_outbox_sends set broadcast_at = now() where id = any($1) and broadcast_at is null",
            sends
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            r#"update chain_outbox
               set state = 'pending', attempts = 0, error = null, retry_at = null, updated_at = now()
               where id = any($1) and chain_id = $2 and signer = $3 and state = 'signed'"#,
            rows,
            self.chain_id(),
            self.address.as_slice()
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Hands one stored send to the node. A refusal is checked against the node's view: a
    /// transaction it already has (a broadcast repeated after a crash) or has mined counts as
    /// sent, whatever words the refusal used.
    async fn send_raw(&self, raw: Vec<u8>, tx_hash: Vec<u8>) -> Result<(), ChainError> {
        match node(self.chain.send_raw_transaction(&raw)).await {
            Ok(_) => Ok(()),
            Err(ChainError::Unreachable(err)) => Err(ChainError::Unreachable(err)),
            Err(refused) => {
                let hash = B256::try_from(tx_hash.as_slice())
                    .map_err(|e| ChainError::Rejected(e.to_string()))?;
                match node(self.chain.get_transaction_by_hash(hash)).await? {
                    Some(_) => Ok(()),
                    None => Err(refused),
                }
            }
        }
    }

    /// Rows pending past their deadline: a new send at the same nonce with raised fees, stored,
    /// then broadcast (whichever send is mined ends the row). The row at `head` (the chain's
    /// count: every later row waits on it) has the shorter deadline.
    async fn unstick(&self, conn: &mut PgConnection, head: u64) -> Result<(), PassError> {
        let stuck = sqlx::query!(
            r#"select o.id, o.nonce as "nonce!", o.to_address, o.input, o.value::text as "value!",
                      o.gas_limit, s.max_fee_per_gas::text as "max_fee!",
                      s.max_priority_fee_per_gas::text as "priority!",
                      s.raw as "last_raw", s.tx_hash as "last_hash",
                      (select count(*) from chain_outbox_sends c where c.outbox_id = o.id) as "sends!"
               from chain_outbox o
               join lateral (select max_fee_per_gas, max_priority_fee_per_gas, signed_at, raw, tx_hash
                             from chain_outbox_sends where outbox_id = o.id
                             order by id desc limit 1) s on true
               where o.chain_id = $1 and o.signer = $2 and o.state = 'pending'
                 and (s.signed_at < now() - make_interval(secs => $3)
                      or (o.nonce = $5 and s.signed_at < now() - make_interval(secs => $6)))
               order by o.nonce limit $4"#,
            self.chain_id(),
            self.address.as_slice(),
            self.settings.stuck_after.as_secs_f64(),
            self.settings.batch,
            head as i64,
            self.settings.head_stuck_after.as_secs_f64()
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in stuck {
            if row.sends >= MAX_SENDS {
                // No more raises; the row every later one waits on is still handed to the node
                // again (the same bytes), in case the node dropped it.
                if row.nonce as u64 == head {
                    match self.send_raw(row.last_raw, row.last_hash).await {
                        Ok(()) => {}
                        Err(ChainError::Unreachable(err)) => {
                            return Err(ChainError::Unreachable(err).into());
                        }
                        Err(err) => {
                            tracing::warn!(target: "api::chain", sender = self.name, id = row.id, %err, "the last send of a stuck transaction was refused");
                        }
                    }
                }
                continue;
            }
            let (now_fee, now_priority) = self.fees().await?;
            let raise = |old: &str, now: u128| {
                let old: u128 = old.parse().unwrap_or(0);
                now.max(old * BUMP_PERCENT / 100 + 1)
            };
            let fees = (raise(&row.max_fee, now_fee), raise(&row.priority, now_priority));
            let (raw, hash) = self
                .sign_one(&row.to_address, row.input, &row.value, row.gas_limit, row.nonce, fees)
                .await?;
            let send_id = sqlx::query_scalar!(
                r#"insert into chain_outbox_sends (outbox_id, raw, tx_hash, max_fee_per_gas, max_priority_fee_per_gas)
                   values ($1, $2, $3, $4::text::numeric, $5::text::numeric) returning id"#,
                row.id,
                raw,
                hash.as_slice(),
                fees.0.to_string(),
                fees.1.to_string()
            )
            .fetch_one(&mut *conn)
            .await?;
            tracing::info!(target: "api::chain", sender = self.name, id = row.id, nonce = row.nonce, %hash, "raised the fees of a stuck transaction");
            match self.send_raw(raw, hash.to_vec()).await {
                Ok(()) => {
                    sqlx::query!(
                        "update chain_outbox_sends set broadcast_at = now() where id = $1",
                        send_id
                    )
                    .execute(&mut *conn)
                    .await?;
                }
                Err(ChainError::Unreachable(err)) => {
                    return Err(ChainError::Unreachable(err).into());
                }
                // The earlier send may be mined meanwhile; the next pass looks again.
                Err(err) => {
                    tracing::warn!(target: "api::chain", sender = self.name, id = row.id, %err, "a raised send was refused");
                }
            }
        }
        Ok(())
    }
}

/// When the next pass runs.
enum Next {
    /// Right away: a step filled its batch.
    Now,
    /// Soon: transactions wait for their receipts.
    InFlight,
    /// After the idle tick, or when a row is queued.
    Idle,
}

/// Why a pass stopped: the node (the pass is tried again) or the database (the lock's connection
/// may be gone: the lead ends).
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Node(#[from] ChainError),
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PassError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(err.into())
    }
}
