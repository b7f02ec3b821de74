//! `/domain/purchase`: the price of a name (`GET`), buying it (`POST`) and renewing one the caller
//! bought (`POST /domain/purchase/renew`), paid in credits. The credits are charged first
//! (on-chain, under a reference derived from the purchase), then the registrar registers or
//! renews the name; if it fails, the credits are refunded (on-chain, under a reference of their
//! own) and nothing is recorded. Only a name the registrar took is recorded on-chain
//! (`recordPurchase`, or `renew`) with its expiry, by the registrar key.

use std::time::Duration;

use alloy::primitives::{Address, U256, keccak256};
use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
};
use chrono::{DateTime, Utc};
use decentraspace_abi::{DomainRegistry, ServiceKind};
use decentraspace_clients::registrar::{Quote, RegistrarError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    eth::{self, EthNames},
    normalise,
};
use crate::{
    billing::{available, charges},
    chain::ChainError,
    domains::DomainsState,
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
};

/// A registration term's bounds, in years.
const YEARS: std::ops::RangeInclusive<u32> = 1..=10;
/// Steps of 100 ms a request waits for the record to be indexed.
const INDEX_WAIT_STEPS: usize = 100;

/// A name and a term.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The domain name.
    pub domain: String,
    /// Years (1–10, default 1).
    pub years: Option<u32>,
}

/// What a name costs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Price {
    /// The domain.
    pub domain: String,
    /// Whether it can be bought now.
    pub available: bool,
    /// The term, in years.
    pub years: u32,
    /// The price in credit units (6 decimals), when it can be bought.
    pub credits: Option<String>,
    /// The registrar's price, in the currency's smallest unit (for a `.eth` name, ENS's rent
    /// and the gas in micro-ether: 10^12 wei).
    pub price_subunits: u64,
    /// Its currency (`ETH` for a `.eth` name).
    pub currency: String,
}

/// A purchase or renewal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purchase {
    /// Its id.
    pub id: i64,
    /// The domain.
    pub domain: String,
    /// `purchase` or `renewal`.
    pub kind: String,
    /// The term bought, in years.
    pub years: i32,
    /// What it cost, in credit units.
    pub credits: String,
    /// `charging`, `registering`, `registered`, then `recorded` once done (or `refunded`,
    /// `failed`).
    pub state: String,
    /// When the name's registration now ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why it was refunded or failed, or what held it up.
    pub error: Option<String>,
}

/// The on-chain reference of purchase `id`'s charge.
pub(super) fn charge_ref(chain: i64, kind: &str, id: i64) -> alloy::primitives::B256 {
    keccak256(format!("domain-{kind}:{chain}:{id}"))
}

/// The on-chain reference of purchase `id`'s refund.
pub(super) fn refund_ref(chain: i64, id: i64) -> alloy::primitives::B256 {
    keccak256(format!("domain-refund:{chain}:{id}"))
}

fn years(requested: Option<u32>) -> ApiResult<u32> {
    let years = requested.unwrap_or(1);
    if !YEARS.contains(&years) {
        return Err(ApiError::BadRequest(format!("years is 1 to 10, not {years}")));
    }
    Ok(years)
}

fn registrar(
    state: &DomainsState,
) -> ApiResult<std::sync::Arc<dyn decentraspace_clients::registrar::Registrar>> {
    state.registrar.clone().ok_or_else(|| ApiError::NotConfigured("no registrar is configured"))
}

/// The price of a name under the platform's own namespace (registered directly, no registrar):
/// `None` for other names; 400 for a name more than one label under it.
pub(super) fn platform_price(
    state: &DomainsState,
    domain: &str,
    years: u32,
) -> ApiResult<Option<(Quote, u64)>> {
    let Some(namespace) = state.config.platform_namespace.as_deref() else { return Ok(None) };
    let Some(label) = domain.strip_suffix(&format!(".{}", namespace.trim_end_matches('.'))) else {
        return Ok(None);
    };
    if label.contains('.') {
        return Err(ApiError::BadRequest(format!(
            "names under {namespace} are one label: <name>.{namespace}"
        )));
    }
    let units = state.config.platform_name_credits_per_year.saturating_mul(u64::from(years));
    let quote = Quote { available: true, price_subunits: 0, currency: "credits".into() };
    Ok(Some((quote, units)))
}

fn registrar_error(err: RegistrarError) -> ApiError {
    tracing::warn!(target: "api::domains", %err, "registrar call failed");
    match err {
        RegistrarError::Refused(reason) | RegistrarError::NotFound(reason) => {
            ApiError::Unprocessable { slug: "registrar-refused", detail: reason }
        }
        RegistrarError::Unavailable(_) => {
            ApiError::Unavailable("the registrar is unavailable; try again later".into())
        }
    }
}

/// Credit units for a registrar price, at the admin-set rate for its currency.
async fn credits_for(state: &DomainsState, quote: &Quote) -> ApiResult<u64> {
    let rate = sqlx::query_scalar!(
        "select credits_per_subunit::text from fiat_rates where currency = $1",
        quote.currency
    )
    .fetch_optional(&state.db)
    .await?
    .flatten()
    .and_then(|r| r.parse::<u64>().ok())
    .ok_or_else(|| ApiError::Unprocessable {
        slug: "no-fiat-rate",
        detail: format!("no credit rate is set for {}", quote.currency),
    })?;
    rate.checked_mul(quote.price_subunits).ok_or_else(|| ApiError::Unprocessable {
        slug: "no-fiat-rate",
        detail: "price out of range".into(),
    })
}

/// Buying a name, or renewing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    Purchase,
    Renewal,
}

/// Who takes a name: nobody (the platform's own names, recorded directly), the registrar, or
/// ENS's `.eth` controller.
#[derive(Clone)]
enum Seller {
    Platform,
    Registrar(std::sync::Arc<dyn decentraspace_clients::registrar::Registrar>),
    Ens(EthNames),
}

/// What `years` of `domain` cost, and who sells it (any availability); credit units for the
/// platform's own names, whose price is set in credits.
async fn quote(
    state: &DomainsState,
    domain: &str,
    years: u32,
    term: Term,
) -> ApiResult<(Quote, Option<u64>, Seller)> {
    if let Some((quote, units)) = platform_price(state, domain, years)? {
        return Ok((quote, Some(units), Seller::Platform));
    }
    if domain.ends_with(".eth") {
        let eth = state.eth.clone().ok_or(ApiError::NotConfigured(
            "no ENS controller is configured: .eth names can be linked, not bought",
        ))?;
        let label = eth::label(domain).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{domain} cannot be bought: only names directly under .eth are (<name>.eth)"
            ))
        })?;
        let quote =
            eth.quote(label, years, term == Term::Renewal).await.map_err(registrar_error)?;
        return Ok((quote, None, Seller::Ens(eth)));
    }
    let registrar = registrar(state)?;
    let quote = match term {
        Term::Purchase => registrar.quote(domain, years).await,
        Term::Renewal => registrar.renewal_quote(domain, years).await,
    }
    .map_err(registrar_error)?;
    Ok((quote, None, Seller::Registrar(registrar)))
}

/// What `years` of `domain` cost in credits, with who sells it; 409 when it is not offered.
async fn priced(
    state: &DomainsState,
    domain: &str,
    years: u32,
    term: Term,
) -> ApiResult<(Quote, u64, Seller)> {
    let (quote, units, seller) = quote(state, domain, years, term).await?;
    if !quote.available {
        return Err(ApiError::Conflict(match term {
            Term::Purchase => format!("{domain} is not available for registration"),
            Term::Renewal => format!("{domain} cannot be renewed for {years} years"),
        }));
    }
    let units = match units {
        Some(units) => units,
        None => credits_for(state, &quote).await?,
    };
    Ok((quote, units, seller))
}

/// The price of buying a name.
#[utoipa::path(get, path = "/domain/purchase", tag = "domains", security(("bearer" = [])),
    params(PurchaseRequest),
    responses((status = 200, body = Price),
        crate::http::openapi::Unavailable))]
pub async fn price(
    State(state): State<DomainsState>,
    _user: AuthUser,
    Query(q): Query<PurchaseRequest>,
) -> ApiResult<Json<Price>> {
    let domain = normalise(&state, &q.domain)?;
    let years = years(q.years)?;
    let (quote, units, _) = quote(&state, &domain, years, Term::Purchase).await?;
    let credits = match units {
        Some(units) => Some(units.to_string()),
        None if quote.available => Some(credits_for(&state, &quote).await?.to_string()),
        None => None,
    };
    Ok(Json(Price {
        domain,
        available: quote.available,
        years,
        credits,
        price_subunits: quote.price_subunits,
        currency: quote.currency,
    }))
}

/// Buys a name for the caller: charged in credits, registered, then recorded on-chain with its
/// expiry. A registrar failure after the charge refunds it; nothing is recorded.
#[utoipa::path(post, path = "/domain/purchase", tag = "domains", security(("bearer" = [])),
    request_body = PurchaseRequest,
    responses((status = 201, body = Purchase),
        (status = 202, body = Purchase, description = "A `.eth` name, paid for: ENS registers it \
            within minutes (`Location` follows it; refunded if ENS cannot)"),
        (status = 402, description = "Too little credit: nothing was charged or recorded"),
        (status = 409, description = "Not available, or held already"),
        (status = 422, description = "The registrar refused (credits refunded)"),
        (status = 503, description = "The registrar is unavailable (credits refunded)")))]
pub async fn buy(
    State(state): State<DomainsState>,
    user: AuthUser,
    Json(request): Json<PurchaseRequest>,
) -> ApiResult<(StatusCode, HeaderMap, Json<Purchase>)> {
    let domain = normalise(&state, &request.domain)?;
    let years = years(request.years)?;
    let held = sqlx::query_scalar!(
        r#"select exists(select 1 from domains where chain_id = $1 and name = $2
                         and (expires_at is null or expires_at > chain_now(chain_id))) as "held!""#,
        state.chain_id() as i64,
        domain
    )
    .fetch_one(&state.db)
    .await?;
    if held {
        return Err(ApiError::Conflict(format!("{domain} is held already")));
    }
    let expires_at = Utc::now() + chrono::Duration::days(365 * i64::from(years));
    let (quote, units, seller) = priced(&state, &domain, years, Term::Purchase).await?;
    let order = Order { domain: &domain, term: Term::Purchase, years, units, expires_at };
    match pay_then(&state, user.address, &order, &quote, seller).await? {
        Paid::Registered(id) => {
            let (status, Json(purchase)) =
                record(&state, id, &domain, user.address, expires_at, None).await?;
            Ok((status, HeaderMap::new(), Json(purchase)))
        }
        Paid::Registering(id) => {
            let purchase = find(&state, user.address, id).await?;
            let mut headers = HeaderMap::new();
            if let Ok(location) = HeaderValue::from_str(&format!("/domain/purchase/{id}")) {
                headers.insert(header::LOCATION, location);
            }
            Ok((StatusCode::ACCEPTED, headers, Json(purchase)))
        }
    }
}

/// The caller's purchase `id`, as it stands.
async fn find(state: &DomainsState, account: Address, id: i64) -> ApiResult<Purchase> {
    let row = sqlx::query!(
        r#"select id, name, kind, years, credits::text as "credits!", state, expires_at, error
           from domain_purchases where id = $1 and chain_id = $2 and account = $3"#,
        id,
        state.chain_id() as i64,
        account.as_slice()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no purchase {id} of yours")))?;
    Ok(Purchase {
        id: row.id,
        domain: row.name,
        kind: row.kind,
        years: row.years,
        credits: row.credits,
        // A purchase moves on to `recorded` (or `refunded`, with the reason in `error`).
        state: row.state,
        expires_at: row.expires_at,
        error: row.error,
    })
}

/// One of the caller's purchases or renewals: where it stands (a `.eth` name's registration
/// takes a minute or more after the purchase answered).
#[utoipa::path(get, path = "/domain/purchase/{id}", tag = "domains", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The purchase's id")),
    responses((status = 200, body = Purchase), crate::http::openapi::NotFound))]
pub async fn show(
    State(state): State<DomainsState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Purchase>> {
    Ok(Json(find(&state, user.address, id).await?))
}

/// Renews a name the caller bought: charged, renewed at the registrar, the new expiry recorded.
#[utoipa::path(post, path = "/domain/purchase/renew", tag = "domains", security(("bearer" = [])),
    request_body = PurchaseRequest,
    responses((status = 200, body = Purchase),
        (status = 402),
        (status = 403, description = "Another wallet's name"),
        crate::http::openapi::NotFound,
        (status = 409, description = "Not a name bought through the platform"),
        crate::http::openapi::Unavailable))]
pub async fn renew(
    State(state): State<DomainsState>,
    user: AuthUser,
    Json(request): Json<PurchaseRequest>,
) -> ApiResult<(StatusCode, Json<Purchase>)> {
    let domain = normalise(&state, &request.domain)?;
    let years = years(request.years)?;
    let purchase = renew_name(&state, user.address, &domain, years).await?;
    Ok((StatusCode::OK, purchase))
}

/// Renews `domain` for its owner `account` by `years`: charged, renewed at the registrar, the new
/// expiry recorded (the owner's request, or auto-renewal).
pub(super) async fn renew_name(
    state: &DomainsState,
    account: Address,
    domain: &str,
    years: u32,
) -> ApiResult<Json<Purchase>> {
    let record_row = sqlx::query!(
        "select owner, method, expires_at from domains where chain_id = $1 and name = $2",
        state.chain_id() as i64,
        domain
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no record of {domain}")))?;
    if record_row.owner != account.as_slice() {
        return Err(ApiError::Forbidden(format!("{domain} belongs to another wallet")));
    }
    if record_row.method != "purchase" {
        return Err(ApiError::Conflict(format!("{domain} was not bought through the platform")));
    }
    let (quote, units, seller) = priced(state, domain, years, Term::Renewal).await?;
    let from = record_row.expires_at.unwrap_or_else(Utc::now).max(Utc::now());
    let expires_at = from + chrono::Duration::days(365 * i64::from(years));
    let order = Order { domain, term: Term::Renewal, years, units, expires_at };
    let Paid::Registered(purchase) = pay_then(state, account, &order, &quote, seller).await? else {
        return Err(ApiError::Unavailable(format!("the renewal of {domain} is under way")));
    };
    let (_, answer) =
        record(state, purchase, domain, account, expires_at, record_row.expires_at).await?;
    Ok(answer)
}

/// What is bought: a term of a name, its price in credit units, and the expiry it gives.
#[derive(Clone, Copy)]
struct Order<'a> {
    domain: &'a str,
    term: Term,
    years: u32,
    units: u64,
    expires_at: DateTime<Utc>,
}

/// Records the order, charges it, and has the seller register or renew the name (the
/// registrar, or ENS for a `.eth` name; nobody for the platform's own names); refunds when the
/// seller refuses. Answers the purchase's id.
async fn pay_then(
    state: &DomainsState,
    account: Address,
    order: &Order<'_>,
    quote: &Quote,
    seller: Seller,
) -> ApiResult<Paid> {
    let Order { domain, term, years, units, expires_at } = *order;
    let kind = match term {
        Term::Purchase => "purchase",
        Term::Renewal => "renewal",
    };
    // Refused before anything is recorded when the available credit cannot pay the term and an
    // hour of the name's service.
    let hourly = available::hourly_price(state, account, ServiceKind::Domain).await?;
    available::require(
        state,
        account,
        U256::from(units),
        hourly,
        &format!("{kind} of {domain} for {years} years"),
    )
    .await?;
    let chain = state.chain_id() as i64;
    let id = sqlx::query_scalar!(
        "insert into domain_purchases
             (chain_id, account, name, kind, years, credits, price_subunits, currency, state,
              expires_at)
         values ($1, $2, $3, $4, $5, $6::text::numeric, $7, $8, 'charging', $9)
         returning id",
        chain,
        account.as_slice(),
        domain,
        kind,
        years as i32,
        units.to_string(),
        quote.price_subunits as i64,
        quote.currency,
        expires_at
    )
    .fetch_one(&state.db)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::Conflict(format!("a purchase of {domain} is under way"))
        }
        _ => err.into(),
    })?;
    let usage_ref = charge_ref(chain, kind, id);
    let short =
        format!("{domain} costs {} for {years} years; recharge first", charges::credits(units));
    let settling = || {
        ApiError::Unavailable(format!(
            "purchase {id} of {domain} did not finish; it is settled shortly: recorded if the \
             name was registered, else any charge is refunded"
        ))
    };
    match charges::deduct(state, account, units, usage_ref, &short).await {
        Ok(_) => {}
        // Refused for sure: nothing was charged.
        Err(err) if err.surely_not_charged() => {
            advance(state, id, "charging", "failed", Some(err.to_string())).await?;
            return Err(err.into());
        }
        // The charge may still be mined: recovery settles the purchase from the ledger.
        Err(err) => {
            tracing::warn!(target: "api::domains", purchase = id, %err, "charge outcome unknown");
            return Err(settling());
        }
    }
    if !advance(state, id, "charging", "registering", None).await? {
        return Err(settling());
    }
    // A `.eth` name is committed, aged and registered by the `.eth` registrations job: ENS's
    // minimum commitment age outlasts a request.
    if let (Seller::Ens(_), Term::Purchase) = (&seller, term) {
        state.wakes.now(&state.db, crate::wakes::Wake::EthNames).await;
        return Ok(Paid::Registering(id));
    }
    let registered = match (&seller, term) {
        (Seller::Platform, _) => Ok(()),
        (Seller::Registrar(registrar), Term::Purchase) => registrar.register(domain, years).await,
        (Seller::Registrar(registrar), Term::Renewal) => registrar.renew(domain, years).await,
        (Seller::Ens(eth), term) => match eth::label(domain) {
            Some(label) if term == Term::Purchase => {
                eth.register(chain, id, label, account, years).await
            }
            Some(label) => eth.renew(chain, id, label, years).await,
            None => Err(RegistrarError::Refused(format!("{domain} is not a .eth name"))),
        },
    };
    match registered {
        Ok(()) => {}
        // The registrar said no: nothing was registered; the charge goes back now.
        Err(RegistrarError::Refused(reason) | RegistrarError::NotFound(reason)) => {
            charges::refund(state, account, units, refund_ref(chain, id)).await?;
            advance(state, id, "registering", "refunded", Some(reason.clone())).await?;
            return Err(ApiError::Unprocessable {
                slug: "registrar-refused",
                detail: format!("{reason}; your {} were refunded", charges::credits(units)),
            });
        }
        // No answer: the name may be registered. Recovery asks the registrar, then records it or
        // refunds.
        Err(err @ RegistrarError::Unavailable(_)) => {
            tracing::warn!(target: "api::domains", purchase = id, %err, "registrar unavailable");
            return Err(settling());
        }
    }
    if !advance(state, id, "registering", "registered", None).await? {
        return Err(settling());
    }
    Ok(Paid::Registered(id))
}

/// A paid purchase: registered (to be recorded now), or handed to the `.eth` registrations.
enum Paid {
    Registered(i64),
    Registering(i64),
}

/// Moves purchase `id` from `from` to `to`, if it is still in `from` (a live request and the
/// recovery pass never both act on one); answers whether it moved.
pub(super) async fn advance(
    state: &DomainsState,
    id: i64,
    from: &str,
    to: &str,
    error: Option<String>,
) -> sqlx::Result<bool> {
    let moved = sqlx::query!(
        "update domain_purchases set state = $3, error = coalesce($4, error), updated_at = now()
         where id = $1 and state = $2",
        id,
        from,
        to,
        error
    )
    .execute(&state.db)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Why a purchase was not recorded on-chain.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecordError {
    /// Another wallet bought the name meanwhile (it holds a live purchase record).
    #[error("{0} was bought by another wallet meanwhile")]
    TakenMeanwhile(String),
    /// The purchase was settled by another path (recovery, or a retry) meanwhile.
    #[error("purchase {0} was settled meanwhile")]
    SettledMeanwhile(i64),
    /// No registrar key is configured.
    #[error("no registrar key is configured")]
    NotConfigured,
    /// The chain refused, reverted or did not answer.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<RecordError> for ApiError {
    fn from(err: RecordError) -> Self {
        match err {
            RecordError::TakenMeanwhile(_) | RecordError::SettledMeanwhile(_) => {
                ApiError::Conflict(err.to_string())
            }
            RecordError::NotConfigured => ApiError::NotConfigured("no registrar key is configured"),
            RecordError::Chain(err) => err.into(),
            RecordError::Database(err) => err.into(),
        }
    }
}

/// Records the purchase (or renewal) on-chain with the registrar key and waits for the index.
pub(super) async fn record(
    state: &DomainsState,
    id: i64,
    domain: &str,
    owner: Address,
    expires_at: DateTime<Utc>,
    renewing_from: Option<DateTime<Utc>>,
) -> Result<(StatusCode, Json<Purchase>), RecordError> {
    let registrar_key = state.registrar_key.as_ref().ok_or(RecordError::NotConfigured)?;
    let registry = DomainRegistry::new(
        state.deployment.contracts.domain_registry,
        registrar_key.provider().clone(),
    );
    let expiry = expires_at.timestamp() as u64;
    let node = keccak256(domain.as_bytes());
    // Recorded already (a record whose answer was lost)? Then only the row is behind.
    let on_chain = registry.domainOf(node).call().await.map_err(ChainError::from_send)?;
    let purchased = on_chain.method == u8::from(decentraspace_abi::OwnershipMethod::Purchase);
    let held_until = on_chain.expiresAt;
    let done = on_chain.owner == owner && purchased && held_until >= expiry;
    let taken = renewing_from.is_none()
        && !on_chain.owner.is_zero()
        && on_chain.owner != owner
        && purchased
        && held_until > Utc::now().timestamp() as u64;
    if taken {
        return Err(RecordError::TakenMeanwhile(domain.to_owned()));
    }
    let sent = if done {
        Ok(())
    } else if renewing_from.is_some() {
        registrar_key.send_for_receipt(registry.renew(node, expiry)).await.map(|_| ())
    } else {
        registrar_key
            .send_for_receipt(registry.recordPurchase(domain.to_owned(), owner, expiry))
            .await
            .map(|_| ())
    };
    if let Err(err) = sent {
        sqlx::query!(
            "update domain_purchases set error = $2, updated_at = now() where id = $1",
            id,
            err.to_string()
        )
        .execute(&state.db)
        .await?;
        return Err(err.into());
    }
    for _ in 0..INDEX_WAIT_STEPS {
        let indexed = sqlx::query_scalar!(
            "select expires_at from domains where chain_id = $1 and name = $2 and owner = $3",
            state.chain_id() as i64,
            domain,
            owner.as_slice()
        )
        .fetch_optional(&state.db)
        .await?
        .flatten();
        if indexed.is_some_and(|at| at.timestamp() == expires_at.timestamp()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = sqlx::query!(
        r#"update domain_purchases set state = 'recorded', expires_at = $2, updated_at = now()
           where id = $1 and state in ('registered', 'recorded')
           returning id, name, kind, years, credits::text as "credits!", state"#,
        id,
        expires_at
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or(RecordError::SettledMeanwhile(id))?;
    Ok((
        StatusCode::CREATED,
        Json(Purchase {
            id: row.id,
            domain: row.name,
            kind: row.kind,
            years: row.years,
            credits: row.credits,
            state: row.state,
            expires_at: Some(expires_at),
            error: None,
        }),
    ))
}
