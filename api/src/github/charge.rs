//! The one-off charge for a GitHub link past the tier's included ones, through
//! [`crate::charges`]. Its reference is derived from the link's OAuth state, so a retried callback
//! cannot charge twice: the ledger refuses a reference it has seen, which reads as "already
//! charged".

use alloy::primitives::{Address, keccak256};

use crate::{charges, error::ApiResult, state::AppState};

pub(super) use charges::{balance, credits};

/// Deducts `units` from `account` for the link started with `link_state`; 402 when short.
pub(super) async fn charge(
    state: &AppState,
    account: Address,
    units: u64,
    link_state: &str,
) -> ApiResult<bool> {
    let usage_ref = keccak256(format!("github-link:{}:{account}:{link_state}", state.chain_id()));
    let short = format!("linking another GitHub account costs {}; recharge first", credits(units));
    charges::deduct(state, account, units, usage_ref, &short).await
}
