//! `/auth/tier`: read one's tier; admins change any account's tier on-chain.

use alloy::primitives::Address;
use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use decentraspace_abi::{AccountRegistry, Tier};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    accounts::AccountsState,
    chain::TxOutcome,
    http::{
        auth::{AdminUser, AuthUser},
        error::{ApiError, ApiResult},
        format::parse_address,
    },
    platform::Platform,
};

/// An account's tier as indexed.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierView {
    /// The wallet.
    pub address: String,
    /// Whether the account is registered on-chain (a first login registers it).
    pub registered: bool,
    /// `free` or `paid` (an unregistered wallet is `free`).
    pub tier: String,
    /// `active` or `suspended` (null when unregistered).
    pub status: Option<String>,
    /// When a Paid tier lapses to Free (null: never).
    pub tier_expires_at: Option<DateTime<Utc>>,
}

/// The caller's tier.
#[utoipa::path(get, path = "/auth/tier", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TierView)))]
pub async fn read_tier(
    State(state): State<AccountsState>,
    user: AuthUser,
) -> ApiResult<Json<TierView>> {
    let row = sqlx::query!(
        "select tier, status, tier_expires_at from accounts where chain_id = $1 and address = $2",
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .fetch_optional(&state.db)
    .await?;
    Ok(Json(match row {
        Some(r) => TierView {
            address: user.address.to_checksum(None),
            registered: true,
            tier: r.tier,
            status: Some(r.status),
            tier_expires_at: r.tier_expires_at,
        },
        None => TierView {
            address: user.address.to_checksum(None),
            registered: false,
            tier: Tier::Free.as_str().into(),
            status: None,
            tier_expires_at: None,
        },
    }))
}

/// An admin's tier change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetTier {
    /// The account to change.
    pub address: String,
    /// `free` or `paid` (any case).
    pub tier: String,
    /// When a Paid tier lapses (RFC 3339; omit for no lapse).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Changes an account's tier on-chain (`setTier`, sent by the operator). Answers with the
/// transaction; reads reflect it once indexed.
#[utoipa::path(post, path = "/auth/tier", tag = "auth", security(("bearer" = [])), request_body = SetTier,
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::Forbidden,
        (status = 409, description = "The chain refused (e.g. the account is not registered)")))]
pub async fn set_tier(
    State(state): State<AccountsState>,
    admin: AdminUser,
    Json(request): Json<SetTier>,
) -> ApiResult<TxOutcome> {
    let account = parse_address(&request.address)?;
    let tier: Tier = request.tier.to_ascii_lowercase().parse().map_err(|_| {
        ApiError::BadRequest(format!("tier must be free or paid, got {:?}", request.tier))
    })?;
    let expires_at = match request.expires_at {
        None => 0,
        Some(t) if t > Utc::now() => t.timestamp() as u64,
        Some(t) => return Err(ApiError::BadRequest(format!("expires_at {t} is in the past"))),
    };
    let operator = state.operator()?;
    let registry = AccountRegistry::new(
        state.deployment.contracts.account_registry,
        operator.provider().clone(),
    );
    let outcome =
        operator.send_for(account, registry.setTier(account, tier.into(), expires_at)).await?;
    tracing::info!(target: "api::admin", admin = %admin.address, %account, tier = tier.as_str(), tx = outcome.tx_hash, "tier change sent");
    Ok(outcome)
}

/// The account's effective tier at chain time (a lapsed Paid tier is Free; an unregistered
/// wallet is Free).
pub async fn effective_tier(state: &Platform, account: Address) -> ApiResult<Tier> {
    let tier = sqlx::query_scalar!(
        r#"select effective_tier(a.tier, a.tier_expires_at, chain_now($1)) as "tier!"
           from (select 1) one
           left join accounts a on a.chain_id = $1 and a.address = $2"#,
        state.chain_id() as i64,
        account.as_slice()
    )
    .fetch_one(&state.db)
    .await?;
    tier.parse().map_err(|err| ApiError::Internal(anyhow::anyhow!("indexed tier: {err}")))
}
