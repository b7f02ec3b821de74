//! Token recharges are the wallet's own transactions: the API answers what to sign, either an
//! approval and a recharge (two transactions the wallet sends, or relays raw), or an EIP-2612
//! permit to sign and a gasless `rechargeWithPermit` forward request for the relayer.

use alloy::{
    primitives::{Address, U256},
    sol,
    sol_types::SolCall,
};
use decentraspace_abi::CreditLedger;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    billing::BillingState,
    http::{
        error::{ApiError, ApiResult},
        format::show_address,
    },
};

sol! {
    #[sol(rpc)]
    interface IERC20Permit {
        function approve(address spender, uint256 value) external returns (bool);
        function nonces(address owner) external view returns (uint256);
        function eip712Domain() external view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions);
    }
}

/// Smallest and largest token recharges, in credit units (1 to 1,000,000 credits).
const MIN_CREDITS: u64 = 1_000_000;
const MAX_CREDITS: u64 = 1_000_000_000_000;
/// How long a permit answered here stays valid.
const PERMIT_TTL_SECS: u64 = 3_600;

/// A call for the wallet to sign and send.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallToSign {
    /// The contract.
    pub to: String,
    /// The calldata.
    pub data: String,
    /// What it does.
    pub function: &'static str,
}

/// EIP-712 typed data, as `eth_signTypedData_v4` takes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PermitToSign {
    /// The typed data (domain, types, primaryType, message).
    #[schema(value_type = Object)]
    pub typed_data: serde_json::Value,
    /// Then: a forward request to the ledger calling
    /// `rechargeWithPermit(token, amount, deadline, v, r, s)`, sent to `/blockchain/credit`.
    pub then: String,
}

/// What the wallet signs to buy credits with a token.
#[derive(Debug, Serialize, ToSchema)]
pub struct CryptoRecharge {
    /// Always `crypto`.
    pub method: &'static str,
    /// The token.
    pub token: String,
    /// Token base units paid.
    pub amount: String,
    /// Credit units it buys at the indexed rate (decimal string).
    pub credits: String,
    /// Two transactions, in order: approve the ledger, then recharge.
    pub approve_then_recharge: Vec<CallToSign>,
    /// A permit instead of the approval, for a gasless recharge (tokens with EIP-2612).
    pub permit: Option<PermitToSign>,
}

/// Works out the recharge of `amount` of `token` for `account`.
pub async fn prepare(
    state: &BillingState,
    account: Address,
    token: Address,
    amount: U256,
) -> ApiResult<CryptoRecharge> {
    let ledger = state.deployment.contracts.credit_ledger;
    let rate = sqlx::query_scalar!(
        "select rate::text from token_rates where chain_id = $1 and token = $2 and rate > 0",
        state.chain_id() as i64,
        token.as_slice()
    )
    .fetch_optional(&state.db)
    .await?
    .flatten()
    .ok_or_else(|| ApiError::Unprocessable {
        slug: "token-not-accepted",
        detail: format!("the ledger does not accept {token}; see /billing/payment-methods"),
    })?;
    let rate: U256 =
        rate.parse().map_err(|_| ApiError::Internal(anyhow::anyhow!("corrupt rate")))?;
    let credits = amount.saturating_mul(rate) / U256::from(10u64).pow(U256::from(18));
    if credits < U256::from(MIN_CREDITS) || credits > U256::from(MAX_CREDITS) {
        return Err(ApiError::BadRequest(format!(
            "{amount} base units buy {credits} credit units; a recharge buys between {MIN_CREDITS} and {MAX_CREDITS}"
        )));
    }
    let approve = IERC20Permit::approveCall { spender: ledger, value: amount }.abi_encode();
    let recharge = CreditLedger::rechargeCall { token, amount }.abi_encode();
    let calls = vec![
        CallToSign {
            to: show_address(token.as_slice()),
            data: format!("0x{}", alloy::hex::encode(approve)),
            function: "approve",
        },
        CallToSign {
            to: show_address(ledger.as_slice()),
            data: format!("0x{}", alloy::hex::encode(recharge)),
            function: "recharge",
        },
    ];
    Ok(CryptoRecharge {
        method: "crypto",
        token: show_address(token.as_slice()),
        amount: amount.to_string(),
        credits: credits.to_string(),
        approve_then_recharge: calls,
        permit: permit(state, account, token, ledger, amount).await,
    })
}

/// The permit to sign, when the token supports EIP-2612 and EIP-5267 (its domain on-chain).
async fn permit(
    state: &BillingState,
    owner: Address,
    token: Address,
    spender: Address,
    value: U256,
) -> Option<PermitToSign> {
    let contract = IERC20Permit::new(token, &state.chain);
    let domain = contract.eip712Domain().call().await.ok()?;
    // A domain for another chain could not be used here.
    let chain_id: u64 = domain.chainId.try_into().ok().filter(|id| *id == state.chain_id())?;
    let nonce = contract.nonces(owner).call().await.ok()?;
    let deadline = chrono::Utc::now().timestamp() as u64 + PERMIT_TTL_SECS;
    let typed_data = serde_json::json!({
        "domain": {
            "name": domain.name, "version": domain.version, "chainId": chain_id,
            "verifyingContract": domain.verifyingContract.to_checksum(None),
        },
        "types": {
            "EIP712Domain": [
                { "name": "name", "type": "string" }, { "name": "version", "type": "string" },
                { "name": "chainId", "type": "uint256" }, { "name": "verifyingContract", "type": "address" },
            ],
            "Permit": [
                { "name": "owner", "type": "address" }, { "name": "spender", "type": "address" },
                { "name": "value", "type": "uint256" }, { "name": "nonce", "type": "uint256" },
                { "name": "deadline", "type": "uint256" },
            ],
        },
        "primaryType": "Permit",
        "message": {
            "owner": owner.to_checksum(None), "spender": spender.to_checksum(None), "value": value.to_string(),
            "nonce": nonce.to_string(), "deadline": deadline.to_string(),
        },
    });
    Some(PermitToSign {
        typed_data,
        then: format!(
            "sign the permit, then send a forward request to the ledger {} calling rechargeWithPermit(token, amount, deadline, v, r, s) to /blockchain/credit",
            spender.to_checksum(None)
        ),
    })
}
