//! The platform relayer: submits users' signed forward requests through the forwarder and pays
//! the gas. Nonces are counted here (one lock around sign-and-send), so hundreds of requests per
//! second go out without asking the node each time; any nonce complaint from the node resets the
//! count from the chain.

use std::time::{Duration, Instant};

use alloy::{
    consensus::TxEnvelope,
    eips::Encodable2718,
    network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
    primitives::{Address, B256, Bytes},
    providers::{DynProvider, Provider},
    rpc::types::TransactionRequest,
    signers::local::PrivateKeySigner,
};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::ChainError;

/// How long a fee estimate is reused.
const FEES_TTL: Duration = Duration::from_secs(5);
/// The longest one node call may take while the relayer's lock is held: a hung node must not
/// stall every relay behind it.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// `call` bounded by [`NODE_TIMEOUT`].
async fn bounded<T, E: std::fmt::Display>(
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ChainError> {
    match tokio::time::timeout(NODE_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(ChainError::Unreachable(err.to_string())),
        Err(_) => Err(ChainError::Unreachable(format!("no answer within {NODE_TIMEOUT:?}"))),
    }
}

/// A transaction the relayer sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Its hash.
    pub tx_hash: B256,
    /// The relayer nonce it used.
    pub nonce: u64,
}

#[derive(Debug, Default)]
struct State {
    next_nonce: Option<u64>,
    fees: Option<(Instant, u128, u128)>,
}

/// Sends the relayer's transactions. The billing meter sends its batches through one of these
/// too, with the billing key: the same nonce counting, for a key only the meter uses.
#[derive(Debug)]
pub struct Relayer {
    provider: DynProvider,
    wallet: EthereumWallet,
    address: Address,
    chain_id: u64,
    state: Mutex<State>,
}

impl Relayer {
    /// A relayer signing with `key`; `name` is the setting the key came from (for errors).
    pub fn new(
        key: &SecretString,
        name: &str,
        provider: DynProvider,
        chain_id: u64,
    ) -> anyhow::Result<Self> {
        let signer: PrivateKeySigner =
            key.expose_secret().parse().with_context(|| format!("{name} is not a private key"))?;
        let address = signer.address();
        Ok(Self {
            provider,
            wallet: EthereumWallet::from(signer),
            address,
            chain_id,
            state: Mutex::default(),
        })
    }

    /// The relayer's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Sends `input` to `to` with `gas_limit`; `replace` re-sends at that nonce with `bump` times
    /// the current fees (to unstick a transaction).
    pub async fn send(
        &self,
        to: Address,
        input: Bytes,
        gas_limit: u64,
        replace: Option<(u64, f64)>,
    ) -> Result<Sent, ChainError> {
        let mut state = self.state.lock().await;
        let (max_fee, priority) = self.fees(&mut state).await?;
        let nonce = match replace {
            Some((nonce, _)) => nonce,
            None => match state.next_nonce {
                Some(n) => n,
                None => {
                    bounded(std::future::IntoFuture::into_future(
                        self.provider.get_transaction_count(self.address).pending(),
                    ))
                    .await?
                }
            },
        };
        let bump = replace.map_or(1.0, |(_, bump)| bump);
        let tx = TransactionRequest::default()
            .with_from(self.address)
            .with_to(to)
            .with_input(input)
            .with_nonce(nonce)
            .with_chain_id(self.chain_id)
            .with_gas_limit(gas_limit)
            .with_max_fee_per_gas((max_fee as f64 * bump) as u128)
            .with_max_priority_fee_per_gas((priority as f64 * bump) as u128);
        let envelope: TxEnvelope = tx
            .build(&self.wallet)
            .await
            .map_err(|e| ChainError::Rejected(format!("cannot sign: {e}")))?;
        let tx_hash = *envelope.tx_hash();
        let sent = tokio::time::timeout(
            NODE_TIMEOUT,
            self.provider.send_raw_transaction(&envelope.encoded_2718()),
        )
        .await;
        let Ok(sent) = sent else {
            // It may have arrived: count from the chain next time, and let the tracker find it.
            state.next_nonce = None;
            return Err(ChainError::Unreachable(format!("no answer within {NODE_TIMEOUT:?}")));
        };
        match sent {
            Ok(_) => {
                if replace.is_none() {
                    state.next_nonce = Some(nonce + 1);
                }
                Ok(Sent { tx_hash, nonce })
            }
            Err(err) => {
                // Whatever the node said, count from the chain next time.
                state.next_nonce = None;
                match ChainError::from_rpc(err) {
                    ChainError::Rejected(message) => {
                        // Told apart by what the chain says, not by the node's words: a nonce the
                        // chain's count of this key's transactions has passed, or not reached.
                        let counted = bounded(std::future::IntoFuture::into_future(
                            self.provider.get_transaction_count(self.address).pending(),
                        ))
                        .await;
                        match counted {
                            Ok(count) if count != nonce && replace.is_none() => {
                                Err(ChainError::Nonce(format!(
                                    "{message} (nonce {nonce}, chain at {count})"
                                )))
                            }
                            _ => Err(ChainError::Rejected(message)),
                        }
                    }
                    other => Err(other),
                }
            }
        }
    }

    async fn fees(&self, state: &mut State) -> Result<(u128, u128), ChainError> {
        if let Some((at, max_fee, priority)) = state.fees
            && at.elapsed() < FEES_TTL
        {
            return Ok((max_fee, priority));
        }
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|e| ChainError::Unreachable(e.to_string()))?;
        state.fees = Some((Instant::now(), fees.max_fee_per_gas, fees.max_priority_fee_per_gas));
        Ok((fees.max_fee_per_gas, fees.max_priority_fee_per_gas))
    }

    /// The relayer's balance in wei.
    pub async fn balance(&self) -> Option<alloy::primitives::U256> {
        self.provider.get_balance(self.address).await.ok()
    }
}
