//! One-off charges on an account's credits (a GitHub link past the included ones, a domain
//! purchase), deducted on-chain (`CreditLedger.deduct`, account-level: service 0) by the billing
//! key under a reference the caller derives from what is paid for, so a retry cannot charge
//! twice; and refunds, credited back by the payment oracle under a reference of their own.

use std::{sync::Arc, time::Duration};

use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
    sol_types::SolCall,
};
use decentraspace_abi::{
    CreditLedger::{self, CreditLedgerErrors},
    PlatformRevert,
};

use crate::{
    chain::{ChainError, Operator, Relayer},
    http::error::ApiError,
    platform::{Platform, feature_state},
};

/// The platform with the keys that charge and credit accounts: the billing key (`BILLING_ROLE`:
/// deductions) and the payment oracle (`PAYMENT_ORACLE_ROLE`: credits and refunds).
#[derive(Debug, Clone)]
pub struct Charges {
    /// The shared state.
    pub platform: Platform,
    /// Sends deductions (and the meter's batches); unset without a billing key.
    pub billing: Option<Arc<Relayer>>,
    /// Sends credits; unset without a payment oracle key.
    pub oracle: Option<Operator>,
}
feature_state!(Charges);

/// Gas for one deduction (it costs about 60k).
const DEDUCT_GAS: u64 = 150_000;
/// The longest a charge waits to be mined.
const RECEIPT_WAIT: Duration = Duration::from_secs(30);

/// "N credits" for `units` credit units (6 decimals).
pub fn credits(units: u64) -> String {
    let (whole, fraction) = (units / 1_000_000, units % 1_000_000);
    if fraction == 0 {
        format!("{whole} credits")
    } else {
        format!("{whole}.{} credits", format!("{fraction:06}").trim_end_matches('0'))
    }
}

/// The account's indexed credit balance, in credit units.
pub async fn balance(state: &Platform, account: Address) -> Result<u128, sqlx::Error> {
    let balance = sqlx::query_scalar!(
        r#"select coalesce((select balance::text from credit_balances
                            where chain_id = $1 and account = $2), '0') as "balance!""#,
        state.chain_id() as i64,
        account.as_slice()
    )
    .fetch_one(&state.db)
    .await?;
    Ok(balance.parse().unwrap_or(0))
}

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
    let ledger = state.deployment.contracts.credit_ledger;
    let contract = CreditLedger::new(ledger, &state.chain);
    let deduct = contract.deduct(account, U256::ZERO, U256::from(units), usage_ref);
    // Simulated first: a refusal is answered without spending gas.
    if let Err(err) = deduct.from(billing.address()).call().await {
        return match ChainError::from_send(err) {
            ChainError::Refused(PlatformRevert::CreditLedger(
                CreditLedgerErrors::CreditLedgerUsageRefUsed(_),
            )) => Ok(true),
            ChainError::Refused(PlatformRevert::CreditLedger(
                CreditLedgerErrors::CreditLedgerInsufficientBalance(_),
            )) => Err(ChargeError::InsufficientCredit(short.to_owned())),
            other => Err(other.into()),
        };
    }
    let call = CreditLedger::deductCall {
        account,
        serviceId: U256::ZERO,
        credits: U256::from(units),
        usageRef: usage_ref,
    };
    let sent = billing.send(ledger, call.abi_encode().into(), DEDUCT_GAS, None).await?;
    let deadline = tokio::time::Instant::now() + RECEIPT_WAIT;
    loop {
        match state.chain.get_transaction_receipt(sent.tx_hash).await {
            Ok(Some(receipt)) if receipt.status() => return Ok(true),
            Ok(Some(receipt)) => {
                return Err(ChainError::Reverted(receipt.transaction_hash).into());
            }
            Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ => return Err(ChainError::Timeout(sent.tx_hash).into()),
        }
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

#[cfg(test)]
mod tests {
    #[test]
    fn amounts_read_as_credits() {
        assert_eq!(super::credits(5_000_000), "5 credits");
        assert_eq!(super::credits(1_500_000), "1.5 credits");
        assert_eq!(super::credits(250), "0.00025 credits");
    }
}
