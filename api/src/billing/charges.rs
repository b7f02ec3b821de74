//! One-off charges on an account's credits (a GitHub link past the included ones, a domain
//! purchase), deducted on-chain (`CreditLedger.deduct`, account-level: service 0) by the billing
//! key under a reference the caller derives from what is paid for, so a retry cannot charge
//! twice; and refunds, credited back by the payment oracle under a reference of their own.

use alloy::primitives::{Address, B256, U256};
use decentraspace_abi::{
    CreditLedger::{self, CreditLedgerErrors},
    PlatformRevert,
};

use crate::{
    chain::{ChainError, Operator},
    http::error::ApiError,
    platform::{Platform, feature_state},
};

/// The platform with the keys that charge and credit accounts: the billing key (`BILLING_ROLE`:
/// deductions) and the payment oracle (`PAYMENT_ORACLE_ROLE`: credits and refunds).
#[derive(Debug, Clone)]
pub struct Charges {
    /// The shared state.
    pub platform: Platform,
    /// Sends deductions (and the meter's batches, through its outbox rows); unset without a
    /// billing key.
    pub billing: Option<Operator>,
    /// Sends credits; unset without a payment oracle key.
    pub oracle: Option<Operator>,
}
feature_state!(Charges);

pub use crate::http::format::{credits, credits_of};

/// Why a charge or a refund did not happen, or may not have.
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    /// The key it needs is not configured.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// The balance is short of the charge (the message says what it was for): nothing charged.
    #[error("{0}")]
    InsufficientCredit(String),
    /// The chain refused it (nothing happened), reverted it (nothing happened), or did not say
    /// (it may still happen: [`ChainError::is_retryable`]).
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ChargeError {
    /// Whether the charge surely did not happen (as opposed to: it may still be mined).
    pub fn surely_not_charged(&self) -> bool {
        match self {
            Self::NotConfigured(_) | Self::InsufficientCredit(_) => true,
            Self::Chain(err) => !err.is_retryable(),
            Self::Database(_) => false,
        }
    }
}

impl From<ChargeError> for ApiError {
    fn from(err: ChargeError) -> Self {
        match err {
            ChargeError::NotConfigured(what) => ApiError::NotConfigured(what),
            ChargeError::InsufficientCredit(why) => ApiError::InsufficientCredit(why),
            ChargeError::Chain(err) => err.into(),
            ChargeError::Database(err) => err.into(),
        }
    }
}

/// Deducts `units` from `account` under `usage_ref`: `Ok(true)` once charged (now, or by an
/// earlier try under the same reference); [`ChargeError::InsufficientCredit`] saying `short` when
/// the balance is too low.
pub async fn deduct(
    state: &Charges,
    account: Address,
    units: u64,
    usage_ref: B256,
    short: &str,
) -> Result<bool, ChargeError> {
    let billing = state
        .billing
        .as_ref()
        .ok_or(ChargeError::NotConfigured("no billing key is configured to charge credits"))?;
    let ledger =
        CreditLedger::new(state.deployment.contracts.credit_ledger, billing.provider().clone());
    let deduct = ledger.deduct(account, U256::ZERO, U256::from(units), usage_ref);
    // Estimated first (a refusal is answered without spending gas), then one outbox row per
    // reference: a retry waits for the row the first attempt wrote.
    match billing.send_once(format!("deduct:{usage_ref}"), Some(account), deduct).await {
        Ok(outcome) => outcome.mined().map(|()| true).map_err(ChargeError::from),
        Err(ChainError::Refused(PlatformRevert::CreditLedger(
            CreditLedgerErrors::CreditLedgerUsageRefUsed(_),
        ))) => Ok(true),
        Err(ChainError::Refused(PlatformRevert::CreditLedger(
            CreditLedgerErrors::CreditLedgerInsufficientBalance(_),
        ))) => Err(ChargeError::InsufficientCredit(short.to_owned())),
        Err(other) => Err(other.into()),
    }
}

/// Credits `units` back to `account` under `refund_ref` (once: the ledger takes a reference once).
pub async fn refund(
    state: &Charges,
    account: Address,
    units: u64,
    refund_ref: B256,
) -> Result<(), ChargeError> {
    let oracle = state
        .oracle
        .as_ref()
        .ok_or(ChargeError::NotConfigured("no payment oracle key is configured"))?;
    let ledger =
        CreditLedger::new(state.deployment.contracts.credit_ledger, oracle.provider().clone());
    if ledger.isPaymentRefUsed(refund_ref).call().await.unwrap_or(false) {
        return Ok(());
    }
    oracle.send_for_receipt(ledger.creditFiat(account, U256::from(units), refund_ref)).await?;
    Ok(())
}
