//! The one-off charge for a GitHub link past the tier's included ones, through
//! [`crate::billing::charges`]. Its reference names the account, the GitHub identity and the slot it takes
//! (the links held before it), so linking the same identity into the same slot again (a retry
//! after a charge whose link was not recorded) charges nothing more: the ledger refuses a
//! reference it has seen, which reads as "already charged".

use alloy::primitives::{Address, keccak256};

use crate::{billing::charges, github::GitHubState, http::error::ApiResult};

pub(super) use charges::credits;

/// Deducts `units` from `account` for linking GitHub identity `github_id` as its link number
/// `held + 1`; 402 when short.
pub(super) async fn charge(
    state: &GitHubState,
    account: Address,
    units: u64,
    github_id: i64,
    held: i64,
) -> ApiResult<bool> {
    let usage_ref =
        keccak256(format!("github-link:{}:{account}:{github_id}:{held}", state.chain_id()));
    let short = format!("linking another GitHub account costs {}; recharge first", credits(units));
    Ok(charges::deduct(state, account, units, usage_ref, &short).await?)
}
