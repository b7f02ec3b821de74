//! [`Operator`]: a role-holder key's calls (operator, payment oracle, registrar, verifier), each
//! checked by estimating it, then written to the outbox and sent by the key's one sender across
//! all replicas; the caller waits a little for the receipt.

use std::time::Duration;

use alloy::{
    contract::{CallBuilder, CallDecoder},
    network::Ethereum,
    primitives::{Address, U256},
    providers::{DynProvider, Provider},
};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::chain::{
    ChainError,
    outbox::{Outbox, Purpose, State, Until, Write},
};

/// How long a request waits for its transaction's receipt before answering `pending`.
const RECEIPT_WAIT: Duration = Duration::from_secs(15);
/// Gas headroom over the estimate, in percent: state moves between estimation and inclusion.
const GAS_HEADROOM_PERCENT: u64 = 25;

/// A transaction the platform sent, and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TxOutcome {
    /// The outbox row that carries it (`GET /blockchain/transactions/{id}` follows it).
    pub id: i64,
    /// The transaction hash, once it is signed.
    pub tx_hash: Option<String>,
    /// `mined` (succeeded), `failed` (reverted), `pending` (sent, not mined yet) or `queued`
    /// (waiting for the key's sender: it will be sent).
    pub status: &'static str,
    /// The block it was mined in.
    pub block_number: Option<u64>,
}

impl std::ops::Deref for Operator {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// 200 once a receipt ended it; 202 with `Location` (its status route) while it is not mined.
impl axum::response::IntoResponse for TxOutcome {
    fn into_response(self) -> axum::response::Response {
        let done = matches!(self.status, "mined" | "failed");
        let status =
            if done { axum::http::StatusCode::OK } else { axum::http::StatusCode::ACCEPTED };
        let location = format!("/blockchain/transactions/{}", self.id);
        let mut response = (status, axum::Json(self)).into_response();
        if !done && let Ok(value) = axum::http::HeaderValue::from_str(&location) {
            response.headers_mut().insert(axum::http::header::LOCATION, value);
        }
        response
    }
}

impl TxOutcome {
    /// `Ok` when it was mined; otherwise why not yet ([`ChainError::Timeout`] on the network,
    /// [`ChainError::Queued`] not signed yet) or not at all ([`ChainError::Reverted`]).
    pub fn mined(&self) -> Result<(), ChainError> {
        let hash = self.tx_hash.as_deref().and_then(|h| h.parse::<alloy::primitives::B256>().ok());
        match (self.status, hash) {
            ("mined", _) => Ok(()),
            ("failed", Some(hash)) => Err(ChainError::Reverted(hash)),
            ("pending", Some(hash)) => Err(ChainError::Timeout(hash)),
            _ => Err(ChainError::Queued(self.id)),
        }
    }

    /// How `row` reads to a caller.
    pub fn of(row: &crate::chain::outbox::Row) -> Self {
        Self {
            id: row.id,
            tx_hash: row.tx_hash.map(|h| h.to_string()),
            status: match row.state {
                State::Mined | State::Confirmed => "mined",
                State::Reverted => "failed",
                State::Signed | State::Pending => "pending",
                State::Queued => "queued",
            },
            block_number: row.block_number,
        }
    }
}

/// Calls made with one role-holder key, through the outbox (one `Arc`: it is cloned with every
/// request's state).
#[derive(Debug, Clone)]
pub struct Operator(std::sync::Arc<Shared>);

/// What an [`Operator`] shares.
#[derive(Debug)]
pub struct Shared {
    db: PgPool,
    outbox: Outbox,
    provider: DynProvider,
    address: Address,
    purpose: Purpose,
}

impl Operator {
    /// Calls signed by `address` (its [`Sender`](crate::chain::outbox::Sender) runs as a job)
    /// for `purpose`; `provider` reads the chain and estimates.
    pub fn new(
        db: PgPool,
        outbox: Outbox,
        provider: DynProvider,
        address: Address,
        purpose: Purpose,
    ) -> Self {
        Self(std::sync::Arc::new(Shared { db, outbox, provider, address, purpose }))
    }

    /// The key's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The chain it sends to.
    pub fn chain_id(&self) -> u64 {
        self.outbox.chain_id()
    }

    /// A chain client to build this key's calls with (it reads and estimates; it signs nothing).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Sends a call as this key and waits a little for its receipt: `pending` or `queued` when it
    /// is not mined in that time. A call the chain refuses (it reverts in estimation) is not sent.
    pub async fn send<D: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, D, Ethereum>,
    ) -> Result<TxOutcome, ChainError> {
        let id = self.submit(call, None, None).await?;
        let row = self.wait(id).await?;
        Ok(TxOutcome::of(&row))
    }

    /// [`Operator::send`] for a call about `account`: its owner may follow the transaction
    /// (`GET /blockchain/transactions/{id}`).
    pub async fn send_for<D: CallDecoder>(
        &self,
        account: Address,
        call: CallBuilder<&DynProvider, D, Ethereum>,
    ) -> Result<TxOutcome, ChainError> {
        let id = self.submit(call, None, Some(account)).await?;
        let row = self.wait(id).await?;
        Ok(TxOutcome::of(&row))
    }

    /// [`Operator::send_for`] under the caller's `reference` (unique for this key's purpose): a
    /// retry with the same reference waits for the row the first attempt wrote instead of
    /// sending again.
    pub async fn send_once<D: CallDecoder>(
        &self,
        reference: String,
        account: Option<Address>,
        call: CallBuilder<&DynProvider, D, Ethereum>,
    ) -> Result<TxOutcome, ChainError> {
        let id = self.submit(call, Some(reference), account).await?;
        let row = self.wait(id).await?;
        Ok(TxOutcome::of(&row))
    }

    /// Estimates the call as this key (a refusal is returned, nothing is written) and writes it
    /// to the outbox under `reference` (a fresh one when `None`); the row's id (the earlier row's,
    /// when the reference was written before).
    async fn submit<D: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, D, Ethereum>,
        reference: Option<String>,
        account: Option<Address>,
    ) -> Result<i64, ChainError> {
        // A retry under the caller's reference finds the first attempt's row, without estimating
        // again: what was sent may make the same call revert now (a name renewed already).
        if let Some(reference) = &reference
            && let Some(id) = self.row_of(reference).await?
        {
            return Ok(id);
        }
        let reference = reference.unwrap_or_else(|| hex::encode(crate::random::reference()));
        let write = self.prepare(call, reference, account).await?;
        let mut conn = self.db.acquire().await?;
        Ok(self.outbox.enqueue(&mut conn, self.address, &write).await?)
    }

    /// The call as an outbox write, its gas estimated as this key (which surfaces refusals).
    async fn prepare<D: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, D, Ethereum>,
        reference: String,
        account: Option<Address>,
    ) -> Result<Write, ChainError> {
        let call = call.from(self.address);
        let gas = call.estimate_gas().await.map_err(ChainError::from_send)?;
        let request = call.into_transaction_request();
        let to = request.to.and_then(|kind| kind.to().copied()).ok_or_else(|| {
            ChainError::Rejected("a contract creation is not sent this way".into())
        })?;
        Ok(Write {
            purpose: self.purpose,
            reference,
            account,
            to,
            input: request.input.input().cloned().unwrap_or_default(),
            value: request.value.unwrap_or(U256::ZERO),
            gas_limit: gas.saturating_mul(100 + GAS_HEADROOM_PERCENT) / 100,
        })
    }

    async fn wait(&self, id: i64) -> Result<crate::chain::outbox::Row, ChainError> {
        self.outbox
            .wait(id, Until::Mined, RECEIPT_WAIT)
            .await?
            .ok_or_else(|| ChainError::Rejected(format!("outbox row {id} is gone")))
    }

    /// Sends a call as this key and waits for its receipt (for callers that need its logs): a
    /// transaction not mined in time is [`ChainError::Timeout`] (or [`ChainError::Queued`] when
    /// it was not even signed yet), one that reverted [`ChainError::Reverted`].
    pub async fn send_for_receipt<D: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, D, Ethereum>,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let id = self.submit(call, None, None).await?;
        self.receipt_of(id).await
    }

    /// [`Operator::send_for_receipt`] under the caller's `reference` (unique for this key's
    /// purpose), as [`Operator::send_once`]: a retry waits for the first attempt's row.
    pub async fn send_once_for_receipt<D: CallDecoder>(
        &self,
        reference: String,
        call: CallBuilder<&DynProvider, D, Ethereum>,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let id = self.submit(call, Some(reference), None).await?;
        self.receipt_of(id).await
    }

    /// The outbox row written under `reference` for this key's purpose, if any.
    async fn row_of(&self, reference: &str) -> Result<Option<i64>, ChainError> {
        Ok(sqlx::query_scalar!(
            "select id from chain_outbox where chain_id = $1 and purpose = $2 and reference = $3",
            self.outbox.chain_id() as i64,
            self.purpose.as_str(),
            reference
        )
        .fetch_optional(&self.db)
        .await?)
    }

    /// Whether the write under `reference` was mined (and did not revert).
    pub async fn mined_under(&self, reference: &str) -> Result<bool, ChainError> {
        Ok(match self.row_of(reference).await? {
            Some(id) => self
                .outbox
                .row(id)
                .await?
                .is_some_and(|row| matches!(row.state, State::Mined | State::Confirmed)),
            None => false,
        })
    }

    /// The reference of the next attempt at the write `prefix` names: `<prefix>:<n>`, the first
    /// whose row did not revert. A retry while an attempt is in flight (its request cut off
    /// before the answer) gets that attempt's reference, and so its row; only a reverted
    /// attempt makes way for another.
    pub async fn attempt_reference(&self, prefix: &str) -> Result<String, ChainError> {
        let mut n = 0u32;
        loop {
            let reference = format!("{prefix}:{n}");
            let state = sqlx::query_scalar!(
                "select state from chain_outbox where chain_id = $1 and purpose = $2 and reference = $3",
                self.outbox.chain_id() as i64,
                self.purpose.as_str(),
                reference
            )
            .fetch_optional(&self.db)
            .await?;
            if state.as_deref() != Some("reverted") {
                return Ok(reference);
            }
            n += 1;
        }
    }

    /// Waits for row `id` and reads its receipt.
    async fn receipt_of(
        &self,
        id: i64,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let row = self.wait(id).await?;
        let Some(hash) = row.tx_hash else { return Err(ChainError::Queued(id)) };
        match row.state {
            State::Reverted => Err(ChainError::Reverted(hash)),
            State::Mined | State::Confirmed => self
                .provider
                .get_transaction_receipt(hash)
                .await
                .map_err(ChainError::from_rpc)?
                // Its block left the chain since: it will be sent again.
                .ok_or(ChainError::Timeout(hash)),
            _ => Err(ChainError::Timeout(hash)),
        }
    }

    /// Writes the call to the outbox under `reference` (unique for this key's purpose: a second
    /// write with it finds the first row) without waiting for it to be sent; the row's id. The
    /// call is estimated first, so a refusal is returned and nothing is written.
    pub async fn enqueue<D: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, D, Ethereum>,
        reference: String,
        account: Option<Address>,
    ) -> Result<i64, ChainError> {
        self.submit(call, Some(reference), account).await
    }
}
