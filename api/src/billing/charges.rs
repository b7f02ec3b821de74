//! One-off charges on an account's credits (a GitHub link past the included ones, a domain
//! purchase), deducted on-chain (`CreditLedger.deduct`, account-level: service 0) by the billing
//! key under a reference the caller derives from what is paid for, so a retry cannot charge
//! twice; and refunds, credited back by the payment oracle under a reference of their own.

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
    sol_types::SolCall,
};
use decentraspace_abi::CreditLedger;

use crate::http::error::{ApiError, ApiResult};
use crate::{
    chain::{Operator, Relayer},
    platform::{Platform, feature_state},
};
use std::sync::Arc;

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
pub async fn balance(state: &Charges, account: Address) -> ApiResult<u128> {
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

/// Deducts `units` from `account` under `usage_ref`: `Ok(true)` once charged (now, or by an
/// earlier try under the same reference); 402 saying `short` when the balance is too low.
pub async fn deduct(
    state: &Charges,
    account: Address,
    units: u64,
    usage_ref: B256,
    short: &str,
) -> ApiResult<bool> {
    let billing = state
        .billing
        .as_ref()
        .ok_or_else(|| ApiError::NotConfigured("no billing key is configured to charge credits"))?;
    let ledger = state.deployment.contracts.credit_ledger;
    let contract = CreditLedger::new(ledger, &state.chain);
    let deduct = contract.deduct(account, U256::ZERO, U256::from(units), usage_ref);
    // Simulated first: a refusal is answered without spending gas.
    if let Err(err) = deduct.from(billing.address()).call().await {
        return match err.as_decoded_interface_error::<CreditLedger::CreditLedgerErrors>() {
            Some(CreditLedger::CreditLedgerErrors::CreditLedgerUsageRefUsed(_)) => Ok(true),
            Some(CreditLedger::CreditLedgerErrors::CreditLedgerInsufficientBalance(_)) => {
                Err(ApiError::InsufficientCredit(short.to_owned()))
            }
            Some(other) => {
                Err(ApiError::Conflict(format!("the ledger refused the charge: {other:?}")))
            }
            None => Err(crate::http::error::chain_unavailable("check the charge", err)),
        };
    }
    let call = CreditLedger::deductCall {
        account,
        serviceId: U256::ZERO,
        credits: U256::from(units),
        usageRef: usage_ref,
    };
    let sent =
        billing.send(ledger, call.abi_encode().into(), DEDUCT_GAS, None).await.map_err(|err| {
            // A transport error may name the node's URL (and its key): logged, never answered.
            tracing::warn!(target: "api::charges", %err, "the charge was not sent");
            ApiError::Unavailable("the charge could not be sent; try again in a moment".into())
        })?;
    let deadline = tokio::time::Instant::now() + RECEIPT_WAIT;
    loop {
        match state.chain.get_transaction_receipt(sent.tx_hash).await {
            Ok(Some(receipt)) if receipt.status() => return Ok(true),
            Ok(Some(receipt)) => {
                return Err(ApiError::Conflict(format!(
                    "the charge {} reverted on-chain",
                    receipt.transaction_hash
                )));
            }
            Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ => {
                return Err(ApiError::Unavailable(
                    "the charge was not mined in time; try again in a moment".into(),
                ));
            }
        }
    }
}

/// Credits `units` back to `account` under `refund_ref` (once: the ledger takes a reference once).
pub async fn refund(
    state: &Charges,
    account: Address,
    units: u64,
    refund_ref: B256,
) -> ApiResult<()> {
    let oracle = state
        .oracle
        .as_ref()
        .ok_or_else(|| ApiError::NotConfigured("no payment oracle key is configured"))?;
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
