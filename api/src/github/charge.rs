//! The one-off charge for a GitHub link past the tier's included ones: deducted on-chain from the
//! account's credits (`CreditLedger.deduct`, account-level: service 0) by the billing key. Its
//! reference is derived from the link's OAuth state, so a retried callback cannot charge twice:
//! the ledger refuses a reference it has seen, which reads as "already charged".

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::Provider,
    sol_types::SolCall,
};
use decentraspace_abi::CreditLedger;

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// Gas for one deduction (it costs about 60k).
const DEDUCT_GAS: u64 = 150_000;
/// The longest the charge waits to be mined.
const RECEIPT_WAIT: Duration = Duration::from_secs(30);

/// The account's indexed credit balance, in credit units.
pub(super) async fn balance(state: &AppState, account: Address) -> ApiResult<u128> {
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

/// "N credits" for `units` credit units (6 decimals).
pub(super) fn credits(units: u64) -> String {
    let (whole, fraction) = (units / 1_000_000, units % 1_000_000);
    if fraction == 0 {
        format!("{whole} credits")
    } else {
        format!("{whole}.{} credits", format!("{fraction:06}").trim_end_matches('0'))
    }
}

/// The charge's on-chain reference for the link started with `link_state`.
fn reference(state: &AppState, account: Address, link_state: &str) -> B256 {
    keccak256(format!("github-link:{}:{account}:{link_state}", state.chain_id()))
}

/// Deducts `units` from `account` for a link; `Ok(true)` once charged (now or by an earlier try
/// of the same link), 402 when the balance is short.
pub(super) async fn charge(
    state: &AppState,
    account: Address,
    units: u64,
    link_state: &str,
) -> ApiResult<bool> {
    let billing = state.billing.as_ref().ok_or_else(|| {
        ApiError::Unavailable("no billing key is configured to charge extra links".into())
    })?;
    let ledger = state.deployment.contracts.credit_ledger;
    let usage_ref = reference(state, account, link_state);
    let contract = CreditLedger::new(ledger, &state.chain);
    let deduct = contract.deduct(account, U256::ZERO, U256::from(units), usage_ref);
    // Simulated first: a refusal is answered without spending gas.
    if let Err(err) = deduct.clone().from(billing.address()).call().await {
        return match err.as_decoded_interface_error::<CreditLedger::CreditLedgerErrors>() {
            Some(CreditLedger::CreditLedgerErrors::CreditLedgerUsageRefUsed(_)) => Ok(true),
            Some(CreditLedger::CreditLedgerErrors::CreditLedgerInsufficientBalance(_)) => {
                Err(ApiError::InsufficientCredit(format!(
                    "linking another GitHub account costs {}; recharge first",
                    credits(units)
                )))
            }
            Some(other) => {
                Err(ApiError::Conflict(format!("the ledger refused the charge: {other:?}")))
            }
            None => Err(crate::error::chain_unavailable("check the charge", err)),
        };
    }
    let call = CreditLedger::deductCall {
        account,
        serviceId: U256::ZERO,
        credits: U256::from(units),
        usageRef: usage_ref,
    };
    let sent = billing
        .send(ledger, call.abi_encode().into(), DEDUCT_GAS, None)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the charge was not sent: {err}")))?;
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
                    "the charge was not mined in time; link again in a moment".into(),
                ));
            }
        }
    }
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
