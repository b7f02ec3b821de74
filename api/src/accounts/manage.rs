//! `/auth/manage` (admins): find accounts, see one in full, suspend and reactivate it, and set the
//! free-tier duration. Reads come from the indexed tables; changes are sent on-chain by the
//! operator and show in reads once indexed.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use chrono::{DateTime, Utc};
use decentraspace_abi::{AccountRegistry, AccountStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    accounts::AccountsState,
    chain::TxOutcome,
    http::{
        auth::AdminUser,
        error::{ApiError, ApiResult},
        format::{parse_address, show_address},
        pagination::PageQuery,
    },
    services::view::{ServiceRow, ServiceView},
};

/// Filters of the account list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AccountQuery {
    /// The start of an address (hex, with or without 0x).
    pub search: Option<String>,
    /// `free` or `paid`.
    pub tier: Option<String>,
    /// `active` or `suspended`.
    pub status: Option<String>,
}

/// An account in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountSummary {
    /// The wallet.
    pub address: String,
    /// `free` or `paid`.
    pub tier: String,
    /// `active` or `suspended`.
    pub status: String,
    /// When it registered.
    pub registered_at: DateTime<Utc>,
    /// Credit units (decimal string).
    pub balance: String,
}

/// A page of accounts, by address.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountPage {
    /// The accounts.
    pub items: Vec<AccountSummary>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Lists and searches accounts.
#[utoipa::path(get, path = "/auth/manage", tag = "admin", security(("bearer" = [])), params(AccountQuery, PageQuery),
    responses((status = 200, body = AccountPage),
        crate::http::openapi::Forbidden))]
pub async fn list_accounts(
    State(state): State<AccountsState>,
    _admin: AdminUser,
    Query(q): Query<AccountQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<AccountPage>> {
    let limit = page.limit()?;
    let search = match q.search.as_deref().map(|s| s.trim_start_matches("0x").to_ascii_lowercase())
    {
        Some(s) if s.len() > 40 || !s.chars().all(|c| c.is_ascii_hexdigit()) => {
            return Err(ApiError::BadRequest(format!(
                "search must be hex address digits, got {s:?}"
            )));
        }
        other => other,
    };
    let after = page.cursor.as_deref().map(parse_address).transpose()?;
    let rows = sqlx::query!(
        r#"select a.address, a.tier, a.status, a.registered_at, coalesce(b.balance, 0)::text as "balance!"
           from accounts a
           left join credit_balances b on b.chain_id = a.chain_id and b.account = a.address
           where a.chain_id = $1
             and ($2::text is null or encode(a.address, 'hex') like $2 || '%')
             and ($3::text is null or a.tier = $3)
             and ($4::text is null or a.status = $4)
             and ($5::bytea is null or a.address > $5)
           order by a.address
           limit $6"#,
        state.chain_id() as i64,
        search,
        q.tier,
        q.status,
        after.as_ref().map(|a| a.as_slice()),
        limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<AccountSummary> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| AccountSummary {
            address: show_address(&r.address),
            tier: r.tier,
            status: r.status,
            registered_at: r.registered_at,
            balance: r.balance,
        })
        .collect();
    let next_cursor = if more { items.last().map(|a| a.address.clone()) } else { None };
    Ok(Json(AccountPage { items, next_cursor }))
}

/// One account in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDetail {
    /// The wallet.
    pub address: String,
    /// `free` or `paid`.
    pub tier: String,
    /// `active` or `suspended`.
    pub status: String,
    /// When a Paid tier lapses.
    pub tier_expires_at: Option<DateTime<Utc>>,
    /// When it registered.
    pub registered_at: DateTime<Utc>,
    /// Credit units (decimal string).
    pub balance: String,
    /// Its services.
    pub services: Vec<ServiceView>,
}

/// One account: tier, status, balance and services.
#[utoipa::path(get, path = "/auth/manage/{address}", tag = "admin", security(("bearer" = [])),
    params(("address" = String, Path, description = "The wallet")),
    responses((status = 200, body = AccountDetail),
        crate::http::openapi::Forbidden,
        crate::http::openapi::NotFound))]
pub async fn account_detail(
    State(state): State<AccountsState>,
    _admin: AdminUser,
    Path(address): Path<String>,
) -> ApiResult<Json<AccountDetail>> {
    let address = parse_address(&address)?;
    let chain = state.chain_id() as i64;
    let account = sqlx::query!(
        r#"select a.tier, a.status, a.tier_expires_at, a.registered_at, coalesce(b.balance, 0)::text as "balance!"
           from accounts a
           left join credit_balances b on b.chain_id = a.chain_id and b.account = a.address
           where a.chain_id = $1 and a.address = $2"#,
        chain,
        address.as_slice()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no registered account {address}")))?;
    let services = sqlx::query_as!(
        ServiceRow,
        r#"select service_id, owner, kind, state, ref as reference, created_at, expires_at
           from services where chain_id = $1 and owner = $2 order by service_id"#,
        chain,
        address.as_slice()
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(ServiceView::from)
    .collect();
    Ok(Json(AccountDetail {
        address: address.to_checksum(None),
        tier: account.tier,
        status: account.status,
        tier_expires_at: account.tier_expires_at,
        registered_at: account.registered_at,
        balance: account.balance,
        services,
    }))
}

/// A status change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetStatus {
    /// `active` (reactivate) or `suspended`.
    pub status: String,
}

/// Suspends or reactivates an account on-chain (`setStatus`, sent by the operator).
#[utoipa::path(put, path = "/auth/manage/{address}/status", tag = "admin", security(("bearer" = [])),
    params(("address" = String, Path, description = "The wallet")), request_body = SetStatus,
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::Forbidden,
        crate::http::openapi::Conflict))]
pub async fn set_status(
    State(state): State<AccountsState>,
    admin: AdminUser,
    Path(address): Path<String>,
    Json(request): Json<SetStatus>,
) -> ApiResult<TxOutcome> {
    let account = parse_address(&address)?;
    let status = match request.status.to_ascii_lowercase().as_str() {
        "active" => AccountStatus::Active,
        "suspended" => AccountStatus::Suspended,
        other => {
            return Err(ApiError::BadRequest(format!(
                "status must be active or suspended, got {other:?}"
            )));
        }
    };
    let operator = state.operator()?;
    let registry = AccountRegistry::new(
        state.deployment.contracts.account_registry,
        operator.provider().clone(),
    );
    let outcome = operator.send_for(account, registry.setStatus(account, status.into())).await?;
    tracing::info!(target: "api::admin", admin = %admin.address, %account, status = status.as_str(), tx = outcome.tx_hash, "status change sent");
    Ok(outcome)
}

/// A free-tier duration.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FreeTierDuration {
    /// Days a Free account's services live (1 to 3650).
    pub days: u32,
}

/// Sets how long Free accounts' services live (`setFreeTierDuration`, on-chain).
#[utoipa::path(put, path = "/auth/manage/free-tier-duration", tag = "admin", security(("bearer" = [])),
    request_body = FreeTierDuration,
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::Forbidden))]
pub async fn set_free_tier_duration(
    State(state): State<AccountsState>,
    admin: AdminUser,
    Json(request): Json<FreeTierDuration>,
) -> ApiResult<TxOutcome> {
    if !(1..=3650).contains(&request.days) {
        return Err(ApiError::BadRequest(format!(
            "days must be between 1 and 3650, got {}",
            request.days
        )));
    }
    let operator = state.operator()?;
    let registry = AccountRegistry::new(
        state.deployment.contracts.account_registry,
        operator.provider().clone(),
    );
    let outcome =
        operator.send(registry.setFreeTierDuration(u64::from(request.days) * 86_400)).await?;
    tracing::info!(target: "api::admin", admin = %admin.address, days = request.days, tx = outcome.tx_hash, "free-tier duration sent");
    Ok(outcome)
}
