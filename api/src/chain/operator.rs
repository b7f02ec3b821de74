//! The operator key's one sign-in duty: registering a wallet on-chain at its first login.

use std::time::Duration;

use alloy::{
    contract::{CallBuilder, CallDecoder},
    network::{Ethereum, EthereumWallet},
    primitives::Address,
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use anyhow::Context;
use decentraspace_abi::AccountRegistry;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::chain::ChainError;

/// How long a request waits for its transaction's receipt before answering `pending`.
const RECEIPT_WAIT: Duration = Duration::from_secs(15);

/// A transaction the platform sent, and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TxOutcome {
    /// The transaction hash.
    pub tx_hash: String,
    /// `mined` (succeeded), `failed` (reverted) or `pending` (not mined yet).
    pub status: &'static str,
    /// The block it was mined in.
    pub block_number: Option<u64>,
}

/// Sends operator transactions one at a time: each takes the account's pending nonce from the
/// node, so a send the chain refuses leaves no gap behind (a locally cached nonce would).
#[derive(Debug, Clone)]
pub struct Operator {
    provider: DynProvider,
    registry: Address,
    sending: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Operator {
    /// An operator signing with `key` on the chain at `rpc_url`.
    pub async fn connect(
        key: &SecretString,
        rpc_url: &str,
        registry: Address,
    ) -> anyhow::Result<Self> {
        let signer: PrivateKeySigner =
            key.expose_secret().parse().context("OPERATOR_PRIVATE_KEY is not a private key")?;
        let provider = ProviderBuilder::new()
            .with_simple_nonce_management()
            .wallet(EthereumWallet::from(signer))
            .connect(rpc_url)
            .await
            .with_context(|| format!("connect the operator to {rpc_url}"))?
            .erased();
        Ok(Self { provider, registry, sending: Default::default() })
    }

    /// The provider that signs as the operator.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Sends a call as the operator and waits a little for its receipt: `pending` when it is not
    /// mined in that time. A call the chain refuses (it reverts in estimation) is not sent.
    pub async fn send<D: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, D, Ethereum>,
    ) -> Result<TxOutcome, ChainError> {
        let pending = self.submit(call).await?;
        let tx_hash = pending.tx_hash().to_string();
        match pending.with_timeout(Some(RECEIPT_WAIT)).get_receipt().await {
            Ok(receipt) => Ok(TxOutcome {
                tx_hash,
                status: if receipt.status() { "mined" } else { "failed" },
                block_number: receipt.block_number,
            }),
            Err(_) => Ok(TxOutcome { tx_hash, status: "pending", block_number: None }),
        }
    }

    /// Sends a call, one at a time.
    async fn submit<D: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, D, Ethereum>,
    ) -> Result<alloy::providers::PendingTransactionBuilder<Ethereum>, ChainError> {
        let _sending = self.sending.lock().await;
        call.send().await.map_err(ChainError::from_send)
    }

    /// Sends a call as the operator and waits for its receipt (for callers that need its logs):
    /// a transaction not mined in time is [`ChainError::Timeout`], one that reverted
    /// [`ChainError::Reverted`].
    pub async fn send_for_receipt<D: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, D, Ethereum>,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let pending = self.submit(call).await?;
        let hash = *pending.tx_hash();
        let receipt = pending
            .with_timeout(Some(RECEIPT_WAIT))
            .get_receipt()
            .await
            .map_err(|_| ChainError::Timeout(hash))?;
        if !receipt.status() {
            return Err(ChainError::Reverted(receipt.transaction_hash));
        }
        Ok(receipt)
    }

    /// Registers `account` unless it is indexed already or a registration was requested before;
    /// the transaction is sent in the background (a login never waits for it).
    /// At most `per_hour` registrations are sent per hour (each costs the operator gas, and a new
    /// wallet costs nothing to make); past it, registration waits for a later login.
    pub async fn register_if_new(
        &self,
        db: &PgPool,
        chain_id: u64,
        account: Address,
        per_hour: u32,
    ) {
        let claimed = sqlx::query!(
            r#"insert into account_registrations (chain_id, account)
               select $1, $2
               where not exists (select 1 from accounts where chain_id = $1 and address = $2)
                 and (select count(*) from account_registrations
                      where chain_id = $1 and requested_at > now() - interval '1 hour') < $3
               on conflict do nothing"#,
            chain_id as i64,
            account.as_slice(),
            i64::from(per_hour)
        )
        .execute(db)
        .await;
        match claimed {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) => return,
            Err(err) => {
                tracing::error!(target: "api::auth", %err, %account, "cannot record a registration");
                return;
            }
        }
        let (operator, db) = (self.clone(), db.clone());
        tokio::spawn(async move {
            let registry = AccountRegistry::new(operator.registry, &operator.provider);
            let sending = operator.sending.lock().await;
            let sent = registry.registerFor(account).send().await;
            drop(sending);
            let (tx_hash, error) = match sent {
                Ok(pending) => (Some(pending.tx_hash().to_vec()), None),
                Err(err) => {
                    tracing::warn!(target: "api::auth", %err, %account, "on-chain registration failed");
                    (None, Some(err.to_string()))
                }
            };
            let recorded = sqlx::query!(
                "update account_registrations set tx_hash = $3, error = $4 where chain_id = $1 and account = $2",
                chain_id as i64,
                account.as_slice(),
                tx_hash,
                error
            )
            .execute(&db)
            .await;
            if let Err(err) = recorded {
                tracing::error!(target: "api::auth", %err, %account, "cannot record a registration's transaction");
            }
        });
    }
}
