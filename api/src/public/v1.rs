//! The public indexed-data API for third parties (`/v1`): no login, rate-limited per IP. Every
//! answer comes from the indexed tables.

use std::{convert::Infallible, time::Duration};

use alloy::primitives::Address;

use axum::{
    Json,
    extract::{FromRef, Path, Query, State},
    response::sse::{Event, KeepAlive, Sse},
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, stream};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::{
        auth::Auth,
        error::{ApiError, ApiResult},
        format::{parse_address, show_address, show_hex},
        pagination::{Cursor, PageQuery},
    },
    public::{PublicState, stream::Notice},
    services::view::{ServiceRow, ServiceView},
};

/// The `/v1` routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PublicState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(events))
        .routes(routes!(account))
        .routes(routes!(service))
        .routes(routes!(domain))
        .routes(routes!(live))
}

/// One indexed event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Block number.
    pub block_number: i64,
    /// Block hash.
    pub block_hash: String,
    /// Block time (RFC 3339), when known.
    pub block_time: Option<DateTime<Utc>>,
    /// Transaction hash.
    pub tx_hash: String,
    /// Position of the transaction in its block.
    pub tx_index: i32,
    /// Position of the log in its block.
    pub log_index: i32,
    /// The platform contract's name (`CreditLedger`, …).
    pub contract: String,
    /// The contract's address.
    pub address: String,
    /// The event's name; null for an event the indexer's bindings do not know (kept raw).
    pub event: Option<String>,
    /// The decoded arguments, named as in Solidity (integers above 64 bits and byte strings as
    /// `0x` hex).
    #[schema(value_type = Object)]
    pub args: Option<serde_json::Value>,
    /// The account the event is about, when it has one.
    pub account: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// Events in chain order.
    pub items: Vec<EventView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Filters for `/v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct EventQuery {
    /// Contract name: `AccountRegistry`, `CreditLedger`, `ServiceRegistry`, `DomainRegistry`.
    pub contract: Option<String>,
    /// Event name, e.g. `CreditsDeducted`.
    pub event: Option<String>,
    /// Only events about this account.
    pub account: Option<String>,
    /// From this block (inclusive).
    pub from_block: Option<i64>,
    /// To this block (inclusive).
    pub to_block: Option<i64>,
}

struct EventRow {
    block_number: i64,
    block_hash: Vec<u8>,
    block_time: Option<DateTime<Utc>>,
    tx_hash: Vec<u8>,
    tx_index: i32,
    log_index: i32,
    contract: String,
    address: Vec<u8>,
    event_name: Option<String>,
    args: Option<serde_json::Value>,
    account: Option<Vec<u8>>,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> Self {
        Self {
            block_number: r.block_number,
            block_hash: show_hex(&r.block_hash),
            block_time: r.block_time,
            tx_hash: show_hex(&r.tx_hash),
            tx_index: r.tx_index,
            log_index: r.log_index,
            contract: r.contract,
            address: show_address(&r.address),
            event: r.event_name,
            args: r.args,
            account: r.account.as_deref().map(show_address),
        }
    }
}

/// Platform events, filtered, in chain order.
#[utoipa::path(get, path = "/v1/events", tag = "public", params(EventQuery, PageQuery),
    responses((status = 200, body = EventPage)))]
pub async fn events(
    State(state): State<PublicState>,
    Query(q): Query<EventQuery>,
    Query(which): Query<PageQuery>,
) -> ApiResult<Json<EventPage>> {
    let limit = which.limit()?;
    let account = q.account.as_deref().map(parse_address).transpose()?;
    let after = which.cursor.as_deref().map(Cursor::parse).transpose()?;
    let rows = sqlx::query_as!(
        EventRow,
        r#"select block_number, block_hash, block_time, tx_hash, tx_index, log_index, contract, address,
                  event_name, args as "args: serde_json::Value", account
           from events
           where chain_id = $1
             and ($2::text is null or contract = $2)
             and ($3::text is null or event_name = $3)
             and ($4::bytea is null or account = $4)
             and block_number >= coalesce($5::bigint, 0) and block_number <= coalesce($6::bigint, 9223372036854775807)
             and (block_number, log_index) > (coalesce($7::bigint, -1), coalesce($8::int, -1))
           order by block_number, log_index
           limit $9"#,
        state.chain_id() as i64,
        q.contract,
        q.event,
        account.as_ref().map(|a| a.as_slice()),
        q.from_block,
        q.to_block,
        after.map(|c| c.block),
        after.map(|c| c.log),
        limit + 1
    )
    .fetch_all(&mut *state.reads.conn().await?)
    .await?;
    Ok(Json(page(rows.into_iter().map(EventView::from).collect(), limit)))
}

fn page(mut items: Vec<EventView>, limit: i64) -> EventPage {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|e| Cursor { block: e.block_number, log: e.log_index }.encode())
    } else {
        None
    };
    EventPage { items, next_cursor }
}

/// The events of blocks `from..=to`, at most `limit`, in chain order (for the live stream).
pub async fn load_events_in_blocks(
    db: &PgPool,
    chain_id: u64,
    from: u64,
    to: u64,
    limit: i64,
) -> Result<Vec<EventView>, sqlx::Error> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"select block_number, block_hash, block_time, tx_hash, tx_index, log_index, contract, address,
                  event_name, args as "args: serde_json::Value", account
           from events
           where chain_id = $1 and block_number between $2 and $3
           order by block_number, log_index
           limit $4"#,
        chain_id as i64,
        from as i64,
        to as i64,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(EventView::from).collect())
}

/// An account as indexed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    /// The wallet.
    pub address: String,
    /// `free` or `paid`.
    pub tier: String,
    /// `active` or `suspended`.
    pub status: String,
    /// When a Paid tier lapses back to Free (null: never).
    pub tier_expires_at: Option<DateTime<Utc>>,
    /// When the account registered.
    pub registered_at: DateTime<Utc>,
    /// Credit balance in credit units (6 decimals), as a decimal string.
    pub balance: String,
    /// How many services it has that are not cancelled.
    pub open_services: i64,
}

/// One account: tier, status, balance.
#[utoipa::path(get, path = "/v1/accounts/{address}", tag = "public",
    params(("address" = String, Path, description = "0x-prefixed wallet address")),
    responses((status = 200, body = AccountView),
        crate::http::openapi::NotFound))]
pub async fn account(
    State(state): State<PublicState>,
    Path(address): Path<String>,
) -> ApiResult<Json<AccountView>> {
    let address = parse_address(&address)?;
    let cache = &state.accounts;
    if let Some(cached) = cache.get(&address) {
        return Ok(Json(cached));
    }
    let generation = cache.generation();
    let row = sqlx::query!(
        r#"select a.tier, a.status, a.tier_expires_at, a.registered_at,
                  coalesce(b.balance, 0)::text as "balance!",
                  (select count(*) from services s
                    where s.chain_id = a.chain_id and s.owner = a.address and s.state <> 'cancelled') as "open_services!"
           from accounts a
           left join credit_balances b on b.chain_id = a.chain_id and b.account = a.address
           where a.chain_id = $1 and a.address = $2"#,
        state.chain_id() as i64,
        address.as_slice()
    )
    .fetch_optional(&mut *state.reads.conn().await?)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no registered account {address}")))?;
    let view = AccountView {
        address: address.to_checksum(None),
        tier: row.tier,
        status: row.status,
        tier_expires_at: row.tier_expires_at,
        registered_at: row.registered_at,
        balance: row.balance,
        open_services: row.open_services,
    };
    cache.put(address, view.clone(), generation);
    Ok(Json(view))
}

/// One service.
#[utoipa::path(get, path = "/v1/services/{id}", tag = "public",
    params(("id" = i64, Path, description = "On-chain service id")),
    responses((status = 200, body = ServiceView),
        crate::http::openapi::NotFound))]
pub async fn service(
    State(state): State<PublicState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<ServiceView>> {
    let row = sqlx::query_as!(
        ServiceRow,
        r#"select service_id, owner, kind, state, ref as reference, created_at, expires_at
           from services where chain_id = $1 and service_id = $2"#,
        state.chain_id() as i64,
        id
    )
    .fetch_optional(&mut *state.reads.conn().await?)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no service {id}")))?;
    Ok(Json(row.into()))
}

/// A domain as recorded in the domain registry.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    /// The name.
    pub name: String,
    /// keccak256 of the name (the registry's key).
    pub node: String,
    /// The owner's wallet.
    pub owner: String,
    /// How ownership was established: `purchase`, `dns`, `ens` or `handshake`.
    pub method: String,
    /// When the registration lapses (null: not applicable).
    pub expires_at: Option<DateTime<Utc>>,
    /// The hosting service it is linked to, if any.
    pub service_id: Option<i64>,
}

/// One domain.
#[utoipa::path(get, path = "/v1/domains/{name}", tag = "public",
    params(("name" = String, Path, description = "Domain name, e.g. example.com")),
    responses((status = 200, body = DomainView),
        crate::http::openapi::NotFound))]
pub async fn domain(
    State(state): State<PublicState>,
    Path(name): Path<String>,
) -> ApiResult<Json<DomainView>> {
    let name = name.trim().to_ascii_lowercase();
    let row = sqlx::query!(
        r#"select name, node, owner, method, expires_at, service_id
           from domains where chain_id = $1 and name = $2"#,
        state.chain_id() as i64,
        name
    )
    .fetch_optional(&mut *state.reads.conn().await?)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no recorded domain {name}")))?;
    Ok(Json(DomainView {
        name: row.name,
        node: show_hex(&row.node),
        owner: show_address(&row.owner),
        method: row.method,
        expires_at: row.expires_at,
        service_id: row.service_id,
    }))
}

/// Filters for `/v1/stream`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Only events about this account.
    pub account: Option<String>,
    /// Only events with this name.
    pub event: Option<String>,
}

/// Server-sent events as blocks are indexed: one `event` per platform event (named after it, data
/// an event object as in `/v1/events`), `indexed` for a batch too large to list (a backfill), and
/// `reorg` when indexed blocks were rolled back (data: the block the chain continues from). The
/// platform's own notices about an account come too, e.g. `services_suspended` when its credit
/// ran out (data: a platform notice). A stream of one `account` also gets `balance` after each
/// batch that may have moved its balance (its credit, its services, its tier, a price; data: a
/// [`BalanceNotice`], the figures `/billing/balance` shows).
#[utoipa::path(get, path = "/v1/stream", tag = "public", params(StreamQuery),
    responses((status = 200, description = "A `text/event-stream`", content_type = "text/event-stream")))]
pub async fn live(
    State(state): State<PublicState>,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let address = q.account.as_deref().map(parse_address).transpose()?;
    let account = address.map(|a| a.to_checksum(None));
    let event = q.event;
    let balances = state.balances.clone();
    let notices = BroadcastStream::new(state.notices.subscribe());
    let events = notices
        .then(move |notice| {
            let (balances, account, event) = (balances.clone(), account.clone(), event.clone());
            async move {
                let moved = match (&notice, address) {
                    (Ok(Notice::Chain(n)), Some(_)) => balance_moved(n, account.as_deref()),
                    _ => false,
                };
                let mut out = sse_events(notice, account.as_deref(), event.as_deref());
                if let Some(address) = address
                    && moved
                    && event.as_deref().is_none_or(|n| n == "balance")
                {
                    out.extend(balance_event(&*balances, address).await);
                }
                out
            }
        })
        .flat_map(stream::iter);
    Ok(Sse::new(events.map(Ok)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// An account's balance, sent on its stream when a batch moved it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceNotice {
    /// The wallet.
    pub account: String,
    /// The on-chain balance as indexed (credit units).
    pub balance: String,
    /// Used and not charged yet (credit units).
    pub accrued: String,
    /// What can be spent now (credit units).
    pub available: String,
    /// The time `accrued` runs to.
    pub as_of: DateTime<Utc>,
}

/// Whether `notice` may have moved `account`'s balance: an event about the account (its credit,
/// its services' states, its tier), a price change, a batch too large to list, or a rollback.
fn balance_moved(notice: &super::stream::ChainNotice, account: Option<&str>) -> bool {
    if notice.reorg {
        return true;
    }
    if notice.count == 0 {
        return false;
    }
    notice.events.as_ref().is_none_or(|events| {
        events
            .iter()
            .any(|e| e.account.as_deref() == account || e.event.as_deref() == Some("PriceSet"))
    })
}

/// The `balance` event of `account`, or none when it cannot be read now (the next batch brings
/// one).
async fn balance_event(
    balances: &dyn crate::platform::Balances,
    account: Address,
) -> Option<Event> {
    match balances.of(account).await {
        Ok(now) => Event::default()
            .event("balance")
            .json_data(BalanceNotice {
                account: account.to_checksum(None),
                balance: now.on_chain.to_string(),
                accrued: now.accrued.to_string(),
                available: now.available.to_string(),
                as_of: now.as_of,
            })
            .ok(),
        Err(err) => {
            tracing::warn!(target: "api::stream", %err, %account, "cannot read the balance for the stream");
            None
        }
    }
}

fn sse_events(
    notice: Result<Notice, BroadcastStreamRecvError>,
    account: Option<&str>,
    event: Option<&str>,
) -> Vec<Event> {
    let notice = match notice {
        Ok(Notice::Chain(n)) => n,
        Ok(Notice::Platform(p)) => {
            let wanted =
                account.is_none_or(|a| p.account == a) && event.is_none_or(|n| p.event == n);
            return match Event::default().event(p.event.clone()).json_data(&*p) {
                Ok(e) if wanted => vec![e],
                _ => vec![],
            };
        }
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            // A slow client missed notices: say so, so it can catch up through /v1/events.
            return vec![Event::default().event("lagged").data(missed.to_string())];
        }
    };
    if notice.reorg {
        return vec![Event::default().event("reorg").data(notice.to_block.to_string())];
    }
    let Some(events) = notice.events else {
        return vec![Event::default().event("indexed").data(format!(
            "{{\"from_block\":{},\"to_block\":{}}}",
            notice.from_block, notice.to_block
        ))];
    };
    events
        .iter()
        .filter(|e| account.is_none_or(|a| e.account.as_deref() == Some(a)))
        .filter(|e| event.is_none_or(|n| e.event.as_deref() == Some(n)))
        .filter_map(|e| {
            let name = e.event.clone().unwrap_or_else(|| "unknown".into());
            Event::default().event(name).json_data(e).ok()
        })
        .collect()
}
