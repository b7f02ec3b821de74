//! Billing reads: balance, history and payment methods, all from the indexed tables.

use axum::{
    Json,
    extract::{Query, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    billing::BillingState,
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
        format::{show_address, show_hex},
        pagination::{Cursor, PageQuery},
    },
};

/// Credits have 6 decimals.
pub const CREDIT_DECIMALS: u8 = 6;

/// The caller's balance: on-chain, and available now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Balance {
    /// The wallet.
    pub account: String,
    /// The on-chain balance as indexed, in credit units as a decimal string (divide by
    /// 10^decimals for credits).
    #[schema(example = "25000000")]
    pub balance: String,
    /// Used and not in `balance` yet: charges on their way to the chain, and the active services'
    /// time since their last charge, priced to the second (credit units).
    #[schema(example = "1250000")]
    pub accrued: String,
    /// What can be spent now: `balance − accrued`, never below zero (credit units). Services
    /// are suspended when it reaches zero; every action that starts a charge checks it first.
    #[schema(example = "23750000")]
    pub available: String,
    /// The time `accrued` runs to.
    pub as_of: DateTime<Utc>,
    /// Always 6.
    pub decimals: u8,
    /// The last block the indexer has applied (the balance is as of this block).
    pub indexed_block: Option<i64>,
}

/// The caller's credit balance: on-chain as indexed, and available now.
#[utoipa::path(get, path = "/billing/balance", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = Balance)))]
pub async fn balance(
    State(state): State<BillingState>,
    user: AuthUser,
) -> ApiResult<Json<Balance>> {
    let cache = &state.balances;
    let snapshot = match cache.get(&user.address) {
        Some(snapshot) => snapshot,
        None => {
            let generation = cache.generation();
            let snapshot = std::sync::Arc::new(
                super::available::Snapshot::read(&state, user.address)
                    .await
                    .map_err(ApiError::Internal)?,
            );
            cache.put(user.address, snapshot.clone(), generation);
            snapshot
        }
    };
    let now = snapshot.at(Utc::now()).map_err(ApiError::Internal)?;
    Ok(Json(Balance {
        account: user.address.to_checksum(None),
        balance: now.on_chain.to_string(),
        accrued: now.accrued.to_string(),
        available: now.available.to_string(),
        as_of: now.as_of,
        decimals: CREDIT_DECIMALS,
        indexed_block: snapshot.indexed_block,
    }))
}

/// Filters of the history.
#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// `recharge` (tokens), `fiat` (card), `deduction` or `skipped`.
    pub kind: Option<String>,
    /// Only entries of this service.
    pub service_id: Option<i64>,
    /// From this time (RFC 3339, inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Until this time (RFC 3339, exclusive).
    pub to: Option<DateTime<Utc>>,
}

/// One credit movement.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// `recharge`, `fiat`, `deduction` or `skipped`.
    pub kind: String,
    /// Credit units moved (decimal string).
    pub credits: String,
    /// The balance after it, when the event carries it.
    pub balance_after: Option<String>,
    /// The service charged, for deductions.
    pub service_id: Option<i64>,
    /// The token paid with, for token recharges.
    pub token: Option<String>,
    /// The token amount paid (base units).
    pub token_amount: Option<String>,
    /// The usage or payment reference (32 bytes hex).
    pub reference: Option<String>,
    /// When it happened.
    pub time: Option<DateTime<Utc>>,
    /// Block number.
    pub block_number: i64,
    /// Log index in the block.
    pub log_index: i32,
    /// The transaction.
    pub tx_hash: String,
}

/// A page of history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    /// Entries, newest first.
    pub items: Vec<HistoryEntry>,
    /// Pass as `cursor` for older entries; null at the end.
    pub next_cursor: Option<String>,
}

const KINDS: &[&str] = &["recharge", "fiat", "deduction", "skipped"];

/// The caller's credit movements, newest first.
#[utoipa::path(get, path = "/billing/history", tag = "billing", security(("bearer" = [])), params(HistoryQuery, PageQuery),
    responses((status = 200, body = HistoryPage)))]
pub async fn history(
    State(state): State<BillingState>,
    user: AuthUser,
    Query(q): Query<HistoryQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<HistoryPage>> {
    let limit = page.limit()?;
    if let Some(kind) = &q.kind
        && !KINDS.contains(&kind.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "kind must be one of {}, got {kind:?}",
            KINDS.join(", ")
        )));
    }
    let before = page.cursor.as_deref().map(Cursor::parse).transpose()?;
    let rows = sqlx::query!(
        r#"select kind as "kind!", credits::text as "credits!", balance_after::text as balance_after, service_id,
                  token, token_amount::text as token_amount, reference, block_time,
                  block_number as "block_number!", log_index as "log_index!", tx_hash as "tx_hash!"
           from credit_entries
           where chain_id = $1 and account = $2
             and ($3::text is null or kind = $3)
             and ($4::bigint is null or service_id = $4)
             and ($5::timestamptz is null or block_time >= $5)
             and ($6::timestamptz is null or block_time < $6)
             and (block_number, log_index) < (coalesce($7, 9223372036854775807), coalesce($8, 2147483647))
           order by block_number desc, log_index desc
           limit $9"#,
        state.chain_id() as i64,
        user.address.as_slice(),
        q.kind,
        q.service_id,
        q.from,
        q.to,
        before.map(|c| c.block),
        before.map(|c| c.log),
        limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<HistoryEntry> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| HistoryEntry {
            kind: r.kind,
            credits: r.credits,
            balance_after: r.balance_after,
            service_id: r.service_id,
            token: r.token.as_deref().map(show_address),
            token_amount: r.token_amount,
            reference: r.reference.as_deref().map(show_hex),
            time: r.block_time,
            block_number: r.block_number,
            log_index: r.log_index,
            tx_hash: show_hex(&r.tx_hash),
        })
        .collect();
    let next_cursor = if more {
        items.last().map(|e| Cursor { block: e.block_number, log: e.log_index }.encode())
    } else {
        None
    };
    Ok(Json(HistoryPage { items, next_cursor }))
}

/// A way to buy credits.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PaymentMethod {
    /// An ERC-20 token the ledger accepts on-chain.
    Crypto {
        /// The token contract.
        token: String,
        /// Credit units per token base unit, scaled by 1e18 (decimal string).
        credits_per_token_wad: String,
        /// The chain to pay on.
        chain_id: u64,
    },
    /// A card payment through Paystack, credited on-chain once paid.
    Card {
        /// Always `paystack`.
        provider: &'static str,
        /// Currencies accepted.
        currencies: Vec<String>,
    },
}

/// The payment methods.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethods {
    /// Tokens accepted on-chain (with their indexed rates), then card payment.
    pub methods: Vec<PaymentMethod>,
}

/// The ways to buy credits: tokens the ledger accepts (rates from the indexed chain) and card.
#[utoipa::path(get, path = "/billing/payment-methods", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = PaymentMethods)))]
pub async fn payment_methods(
    State(state): State<BillingState>,
    _user: AuthUser,
) -> ApiResult<Json<PaymentMethods>> {
    let tokens = sqlx::query!(
        r#"select token, rate::text as "rate!" from token_rates
           where chain_id = $1 and rate > 0 order by token"#,
        state.chain_id() as i64
    )
    .fetch_all(&state.db)
    .await?;
    let mut methods: Vec<PaymentMethod> = tokens
        .into_iter()
        .map(|t| PaymentMethod::Crypto {
            token: show_address(&t.token),
            credits_per_token_wad: t.rate,
            chain_id: state.chain_id(),
        })
        .collect();
    // Card payments are offered only where they can be taken.
    if state.payments.is_some() {
        methods.push(PaymentMethod::Card {
            provider: "paystack",
            currencies: state.config.card_currencies.clone(),
        });
    }
    Ok(Json(PaymentMethods { methods }))
}
