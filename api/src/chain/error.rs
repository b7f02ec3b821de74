//! [`ChainError`]: why a transaction the platform signs did not go through, or may not have.

use alloy::{
    contract::Error as ContractError,
    primitives::{B256, Bytes},
    transports::{RpcError, TransportErrorKind},
};
use decentraspace_abi::PlatformRevert;

/// Why a chain write failed. Each variant says where the transaction stands: refused before
/// anything was sent, sent and reverted, or unknown (the node did not answer in time).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A platform contract refuses the call (found by estimating or simulating it: nothing was
    /// sent and no gas was spent). Match the decoded error's variant.
    #[error("the chain refused the transaction: {0}")]
    Refused(PlatformRevert),
    /// The call reverts with data no platform contract defines (a bare `revert()`, a panic).
    #[error("the chain refused the transaction: {}", show_revert(.0))]
    RefusedUnknown(Bytes),
    /// The transaction was mined and reverted.
    #[error("the transaction {0} reverted on-chain")]
    Reverted(B256),
    /// The node refused the transaction itself (under-priced, malformed): nothing was sent.
    #[error("the node refused the transaction: {0}")]
    Rejected(String),
    /// Sent, but not mined within the wait: it may still be, under this hash.
    #[error("the transaction {0} was not mined in time")]
    Timeout(B256),
    /// Written to the outbox, not signed within the wait: the key's sender will send it (the
    /// outbox row's id).
    #[error("the transaction is queued as outbox row {0}")]
    Queued(i64),
    /// The outbox could not be written or read.
    #[error("the outbox is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// The node did not answer (the cause, which may name the node's URL and key, is logged,
    /// never shown).
    #[error("the chain node is unavailable")]
    Unreachable(String),
}

fn show_revert(data: &Bytes) -> String {
    if data.is_empty() { "a revert without a reason".into() } else { data.to_string() }
}

impl ChainError {
    /// Whether trying again later may succeed: the node was unreachable, the transaction was not
    /// mined (or signed) yet, or the outbox could not be reached. A refusal or a revert stays one.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Timeout(_) | Self::Queued(_) | Self::Database(_)
        )
    }

    /// The platform contract's error, when a contract refused the call.
    pub fn revert(&self) -> Option<&PlatformRevert> {
        match self {
            Self::Refused(revert) => Some(revert),
            _ => None,
        }
    }

    /// Classifies an error from sending (or estimating) a contract call.
    pub fn from_send(err: ContractError) -> Self {
        match err.as_revert_data() {
            Some(data) => Self::from_revert_data(data),
            None => match err {
                ContractError::TransportError(rpc) => Self::from_rpc(rpc),
                other => Self::Rejected(other.to_string()),
            },
        }
    }

    /// Classifies revert data.
    pub fn from_revert_data(data: Bytes) -> Self {
        match PlatformRevert::decode(&data) {
            Some(revert) => Self::Refused(revert),
            None => Self::RefusedUnknown(data),
        }
    }

    /// Classifies an RPC error: the node's own refusals (with or without revert data) apart from
    /// transport failures.
    pub fn from_rpc(err: RpcError<TransportErrorKind>) -> Self {
        if let Some(data) = err.as_error_resp().and_then(|resp| resp.as_revert_data()) {
            return Self::from_revert_data(data);
        }
        match err.as_error_resp() {
            Some(resp) => Self::Rejected(resp.message.to_string()),
            None => Self::Unreachable(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy::{
        primitives::{Address, U256},
        sol_types::SolError,
    };
    use decentraspace_abi::{CreditLedger, ServiceRegistry};

    use super::*;

    #[test]
    fn refusals_are_classified_by_variant() {
        let not_owner = ServiceRegistry::ServiceRegistryNotOwner {
            serviceId: U256::from(1),
            caller: Address::repeat_byte(1),
        }
        .abi_encode();
        let err = ChainError::from_revert_data(not_owner.into());
        assert!(!err.is_retryable());
        assert!(err.revert().is_some_and(PlatformRevert::is_not_owner));

        let short = CreditLedger::CreditLedgerInsufficientBalance {
            account: Address::ZERO,
            balance: U256::ZERO,
            required: U256::from(1),
        }
        .abi_encode();
        let err = ChainError::from_revert_data(short.into());
        assert!(matches!(
            err.revert(),
            Some(PlatformRevert::CreditLedger(
                CreditLedger::CreditLedgerErrors::CreditLedgerInsufficientBalance(_)
            ))
        ));

        let unknown = ChainError::from_revert_data(Bytes::from_static(&[1, 2, 3, 4]));
        assert!(matches!(unknown, ChainError::RefusedUnknown(_)));
        assert!(ChainError::Unreachable("down".into()).is_retryable());
        assert!(ChainError::Timeout(B256::ZERO).is_retryable());
        assert!(ChainError::Queued(1).is_retryable());
        assert!(!ChainError::Reverted(B256::ZERO).is_retryable());
    }
}
