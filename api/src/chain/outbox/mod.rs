//! The outbox every transaction the platform signs goes through (ADR 0011): a caller writes a
//! [`Write`] as a row in the transaction of the business state that wants it
//! ([`Outbox::enqueue`]), and one [`Sender`] per signing key, across all replicas, signs,
//! broadcasts and follows the rows to their receipts. Callers that answer a request wait for their
//! row ([`Outbox::wait`]), woken by the row's NOTIFY from whichever replica moved it.

mod sender;

use std::{sync::Arc, time::Duration};

use alloy::primitives::{Address, B256, Bytes, U256};
use decentraspace_db::channels;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use utoipa::ToSchema;

pub use sender::{Sender, SenderSettings};

use crate::jobs::Job;

/// What wants a transaction (one sender drains every purpose of its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A role-holder call of the operator key (registrations, tiers, pauses).
    Operator,
    /// A user's forward request, submitted through the forwarder by a relayer key.
    Relay,
    /// A batch of the meter's charges (`deductBatch`), by the billing key.
    MeterBatch,
    /// A one-off deduction (`deduct`), by the billing key.
    Billing,
    /// A card payment credited by the payment oracle.
    Payment,
    /// A purchase or renewal recorded by the registrar key.
    Registrar,
    /// A domain proof recorded (or withdrawn) by the verifier key.
    Verifier,
    /// A `.eth` name committed, registered or renewed at ENS by the ENS key.
    Ens,
}

impl Purpose {
    /// The name stored in `chain_outbox.purpose`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Relay => "relay",
            Self::MeterBatch => "meter_batch",
            Self::Billing => "billing",
            Self::Payment => "payment",
            Self::Registrar => "registrar",
            Self::Verifier => "verifier",
            Self::Ens => "ens",
        }
    }
}

/// A transaction to sign: where, what, and the caller's key for it (a retried request that
/// writes the same purpose and reference finds the row it wrote before).
#[derive(Debug, Clone)]
pub struct Write {
    /// What wants it.
    pub purpose: Purpose,
    /// Unique per purpose.
    pub reference: String,
    /// The account it is for, when there is one (its owner may read the row).
    pub account: Option<Address>,
    /// The contract called.
    pub to: Address,
    /// The calldata.
    pub input: Bytes,
    /// Wei sent with it.
    pub value: U256,
    /// The gas limit it is signed with.
    pub gas_limit: u64,
}

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its key's sender.
    Queued,
    /// Signed and stored; being broadcast.
    Signed,
    /// On the network, not mined yet.
    Pending,
    /// Mined and succeeded.
    Mined,
    /// Mined, succeeded and past the confirmation depth.
    Confirmed,
    /// Mined and reverted.
    Reverted,
}

impl State {
    fn parse(text: &str) -> Self {
        match text {
            "signed" => Self::Signed,
            "pending" => Self::Pending,
            "mined" => Self::Mined,
            "confirmed" => Self::Confirmed,
            "reverted" => Self::Reverted,
            _ => Self::Queued,
        }
    }

    /// Whether a receipt ended it (mined, confirmed or reverted).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Mined | Self::Confirmed | Self::Reverted)
    }
}

/// An outbox row as its caller sees it.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its id.
    pub id: i64,
    /// Where it stands.
    pub state: State,
    /// The hash of the send that was mined, or of the latest send while none is.
    pub tx_hash: Option<B256>,
    /// The block it was mined in.
    pub block_number: Option<u64>,
    /// The gas it used, once mined.
    pub gas_used: Option<u64>,
    /// The last reason a broadcast failed (cleared once one succeeds).
    pub error: Option<String>,
    /// The account it is for, when there is one.
    pub account: Option<Address>,
}

/// What a caller waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The row is on the network (it has a hash the caller can show).
    Sent,
    /// A receipt ended the row.
    Mined,
}

/// The outbox of one chain, shared by every feature of a replica (one `Arc`: feature states,
/// and the `Platform` in each, are cloned for every request).
#[derive(Debug, Clone)]
pub struct Outbox(Arc<Shared>);

/// What an [`Outbox`] shares.
#[derive(Debug)]
pub struct Shared {
    db: PgPool,
    chain_id: u64,
    /// Ids of rows that moved, from any replica (the listener job fills it).
    moved: broadcast::Sender<i64>,
    /// Signers with newly queued rows, from any replica.
    queued: broadcast::Sender<Address>,
    /// Its listener job's name.
    listener: &'static str,
}

impl std::ops::Deref for Outbox {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// How often a waiting caller looks at its row without a notification (a lost NOTIFY, a listener
/// reconnecting).
const LOOK_AGAIN: Duration = Duration::from_millis(500);

impl Outbox {
    /// The outbox of `chain_id` in `db`.
    pub fn new(db: PgPool, chain_id: u64) -> Self {
        Self::named(db, chain_id, "chain-outbox-listener")
    }

    /// The outbox of another chain than the platform's (ENS on Ethereum), its listener named by
    /// the chain.
    pub fn side(db: PgPool, chain_id: u64) -> Self {
        // One per configured side chain, made once at start.
        let name = Box::leak(format!("chain-outbox-listener-{chain_id}").into_boxed_str());
        Self::named(db, chain_id, name)
    }

    fn named(db: PgPool, chain_id: u64, listener: &'static str) -> Self {
        Self(Arc::new(Shared {
            db,
            chain_id,
            listener,
            moved: broadcast::channel(1024).0,
            queued: broadcast::channel(64).0,
        }))
    }

    /// The chain it sends to.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Writes `write` for `signer` in the caller's transaction (`conn`), or finds the row an
    /// earlier call wrote with the same purpose and reference; its id either way. The sender
    /// sees the row once the transaction commits.
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        signer: Address,
        write: &Write,
    ) -> Result<i64, sqlx::Error> {
        let inserted = sqlx::query_scalar!(
            r#"insert into chain_outbox
                 (chain_id, signer, purpose, reference, account, to_address, input, value, gas_limit)
               values ($1, $2, $3, $4, $5, $6, $7, $8::text::numeric, $9)
               on conflict (chain_id, purpose, reference) do nothing
               returning id"#,
            self.chain_id as i64,
            signer.as_slice(),
            write.purpose.as_str(),
            write.reference,
            write.account.as_ref().map(|a| a.as_slice()),
            write.to.as_slice(),
            write.input.as_ref(),
            write.value.to_string(),
            i64::try_from(write.gas_limit).unwrap_or(i64::MAX),
        )
        .fetch_optional(&mut *conn)
        .await?;
        match inserted {
            Some(id) => Ok(id),
            None => {
                sqlx::query_scalar!(
                    "select id from chain_outbox where chain_id = $1 and purpose = $2 and reference = $3",
                    self.chain_id as i64,
                    write.purpose.as_str(),
                    write.reference
                )
                .fetch_one(&mut *conn)
                .await
            }
        }
    }

    /// The row `id` as it stands.
    pub async fn row(&self, id: i64) -> Result<Option<Row>, sqlx::Error> {
        let row = sqlx::query!(
            r#"select o.id, o.state, o.block_number, o.gas_used, o.error, o.account,
                      coalesce(o.tx_hash, (select s.tx_hash from chain_outbox_sends s
                                           where s.outbox_id = o.id order by s.id desc limit 1)) as tx_hash
               from chain_outbox o where o.id = $1 and o.chain_id = $2"#,
            id,
            self.chain_id as i64
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(row.map(|r| Row {
            id: r.id,
            state: State::parse(&r.state),
            tx_hash: r.tx_hash.as_deref().and_then(|h| B256::try_from(h).ok()),
            block_number: r.block_number.and_then(|b| u64::try_from(b).ok()),
            gas_used: r.gas_used.and_then(|g| u64::try_from(g).ok()),
            error: r.error,
            account: r.account.as_deref().and_then(|a| Address::try_from(a).ok()),
        }))
    }

    /// Waits up to `timeout` for row `id` to reach `until`; the row as it stands then (reached or
    /// not: the caller compares its state).
    pub async fn wait(
        &self,
        id: i64,
        until: Until,
        timeout: Duration,
    ) -> Result<Option<Row>, sqlx::Error> {
        let mut moved = self.moved.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(row) = self.row(id).await? else { return Ok(None) };
            let reached = match until {
                Until::Sent => row.state >= State::Pending,
                Until::Mined => row.state.is_final(),
            };
            if reached || tokio::time::Instant::now() >= deadline {
                return Ok(Some(row));
            }
            let next = deadline.min(tokio::time::Instant::now() + LOOK_AGAIN);
            // Wakes on this row's notification, or looks again at `next`.
            let _ = tokio::time::timeout_at(next, async {
                loop {
                    match moved.recv().await {
                        Ok(moved_id) if moved_id == id => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            })
            .await;
        }
    }

    /// Senders subscribe here to hear of rows queued for their key.
    fn queued_rows(&self) -> broadcast::Receiver<Address> {
        self.queued.subscribe()
    }

    /// The listener's job: forwards this replica's share of the outbox's notifications (rows that
    /// moved, to waiting callers; rows queued, to the senders), reconnecting after failures.
    pub fn listener(&self) -> Job {
        let outbox = self.clone();
        Job::new(self.listener, move || {
            let outbox = outbox.clone();
            async move {
                let mut attempt = 0u32;
                loop {
                    if let Err(err) = outbox.listen().await {
                        attempt = attempt.saturating_add(1);
                        tracing::warn!(target: "api::chain", %err, attempt, "outbox listener failed; reconnecting");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))))
                            .await;
                    }
                }
            }
        })
    }

    async fn listen(&self) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.db).await?;
        listener.listen_all([channels::OUTBOX_QUEUED, channels::OUTBOX_MOVED]).await?;
        loop {
            // `None`: the connection dropped and was made again; waiters look again on their own.
            let Some(notification) = listener.try_recv().await? else { continue };
            if notification.channel() == channels::OUTBOX_QUEUED {
                if let Ok(bytes) = alloy::hex::decode(notification.payload())
                    && let Ok(signer) = Address::try_from(bytes.as_slice())
                {
                    let _ = self.queued.send(signer);
                }
            } else if let Ok(id) = notification.payload().parse::<i64>() {
                // No receiver is fine: nobody waits.
                let _ = self.moved.send(id);
            }
        }
    }
}

/// A signing key's queue, for operations (`/analytics/system`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyQueue {
    /// The key's address (checksummed).
    pub address: String,
    /// The nonce its next transaction takes (unset before its sender first ran).
    pub next_nonce: Option<u64>,
    /// Rows not mined yet (queued, signed or pending).
    pub depth: u64,
    /// How long the oldest row not on the network yet has waited, in seconds.
    pub oldest_unsent_secs: Option<f64>,
}

impl Outbox {
    /// Where `signer`'s queue stands.
    pub async fn key_queue(&self, signer: Address) -> Result<KeyQueue, sqlx::Error> {
        let row = sqlx::query!(
            r#"select
                 (select next_nonce from signer_nonces where chain_id = $1 and signer = $2) as next_nonce,
                 (select count(*) from chain_outbox
                  where chain_id = $1 and signer = $2 and state in ('queued', 'signed', 'pending')) as "depth!",
                 (select extract(epoch from now() - min(created_at))::float8 from chain_outbox
                  where chain_id = $1 and signer = $2 and state in ('queued', 'signed')) as oldest"#,
            self.chain_id as i64,
            signer.as_slice()
        )
        .fetch_one(&self.db)
        .await?;
        Ok(KeyQueue {
            address: signer.to_checksum(None),
            next_nonce: row.next_nonce.and_then(|n| u64::try_from(n).ok()),
            depth: u64::try_from(row.depth).unwrap_or(0),
            oldest_unsent_secs: row.oldest,
        })
    }
}

/// Keys configured more than once for one chain (one key in two roles) get one sender; the same
/// key on two chains (ENS on Ethereum) gets one for each.
pub fn senders(senders: Vec<Arc<Sender>>) -> Vec<Job> {
    let mut seen = std::collections::HashSet::new();
    senders
        .into_iter()
        .filter(|s| seen.insert((s.chain_id(), s.address())))
        .map(|s| s.job())
        .collect()
}
