//! The service state API shared by storage, hosting and domains: one's services with their state
//! and price, paused and resumed on-chain by the operator at the owner's request (an owner can
//! also sign `pause`/`resume` and send it through `/blockchain/credit`). Paused time is never
//! charged; resuming needs a balance of at least one hour of the service's price.

pub mod view;

use axum::{
    Json,
    extract::{FromRef, Path, State},
};
use chrono::{DateTime, Utc};
use decentraspace_abi::{
    PlatformRevert,
    ServiceRegistry::{self, ServiceRegistryErrors},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    chain::{ChainError, TxOutcome},
    http::{
        auth::{Auth, AuthUser},
        error::{ApiError, ApiResult},
        format::show_hex,
    },
    platform::Platform,
};

/// The service routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(my_services)).routes(routes!(pause)).routes(routes!(resume))
}

/// One of the caller's services.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyService {
    /// The on-chain id.
    pub id: i64,
    /// `static_hosting`, `dynamic_hosting`, `storage`, `domain` or `database`.
    pub kind: String,
    /// `active`, `paused`, `suspended` or `cancelled`.
    pub state: String,
    /// The off-chain reference registered with it.
    pub reference: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it expires while its owner is on the Free tier.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it has expired: its owner is on the Free tier past `expires_at`. An expired service
    /// is neither charged nor served; upgrading to Paid lifts the expiry.
    pub expired: bool,
    /// Its price per active hour at the owner's tier, in credit units (decimal string).
    pub credits_per_hour: Option<String>,
}

/// The caller's services, with state and price.
#[utoipa::path(get, path = "/services", tag = "services", security(("bearer" = [])),
    responses((status = 200, body = Vec<MyService>)))]
pub async fn my_services(
    State(state): State<Platform>,
    user: AuthUser,
) -> ApiResult<Json<Vec<MyService>>> {
    let rows = sqlx::query!(
        r#"with mine as (
               select s.service_id, s.kind, s.state, s.ref, s.created_at, s.expires_at,
                      effective_tier(a.tier, a.tier_expires_at, chain_now($1)) as tier
               from services s
               left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
               where s.chain_id = $1 and s.owner = $2
           )
           select m.service_id as "service_id!", m.kind as "kind!", m.state as "state!", m.ref as "ref!",
                  m.created_at as "created_at!", m.expires_at,
                  (m.tier = 'free' and m.expires_at is not null and m.expires_at <= chain_now($1)) as "expired!",
                  p.credits_per_hour::text as credits_per_hour
           from mine m
           left join service_prices p on p.chain_id = $1 and p.kind = m.kind and p.tier = m.tier
           order by m.service_id
           limit 1000"#,
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| MyService {
                id: r.service_id,
                kind: r.kind,
                state: r.state,
                reference: show_hex(&r.r#ref),
                created_at: r.created_at,
                expires_at: r.expires_at,
                expired: r.expired,
                credits_per_hour: r.credits_per_hour,
            })
            .collect(),
    ))
}

/// Steps of 100 ms [`indexed`] waits for a just-opened service to be indexed.
const INDEX_WAIT_STEPS: usize = 100;

/// The id of the service a mined `createService`/`createServiceFor` (`receipt`) opened; `what`
/// names the service in the error.
pub(crate) fn opened(
    receipt: &alloy::rpc::types::TransactionReceipt,
    what: &str,
) -> ApiResult<i64> {
    let created = receipt
        .decoded_log::<ServiceRegistry::ServiceCreated>()
        .ok_or_else(|| ApiError::Conflict(format!("the {what} service could not be opened")))?;
    i64::try_from(created.serviceId)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("service id out of range")))
}

/// Waits (up to 10 s) until service `id` is indexed (reads and jobs follow the index): whether
/// it is.
pub(crate) async fn indexed(state: &Platform, id: i64) -> ApiResult<bool> {
    for _ in 0..INDEX_WAIT_STEPS {
        let indexed: bool = sqlx::query_scalar!(
            r#"select exists(select 1 from services where chain_id = $1 and service_id = $2) as "e!""#,
            state.chain_id() as i64,
            id
        )
        .fetch_one(&state.db)
        .await?;
        if indexed {
            return Ok(true);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(false)
}

/// Checks (from the indexed registry) that the caller owns `id`, of `kind` when given; another's
/// service is as absent as a missing one. Answers its kind.
async fn owned(
    state: &Platform,
    user: &AuthUser,
    id: i64,
    kind: Option<&str>,
) -> ApiResult<String> {
    let service = sqlx::query!(
        "select owner, kind from services where chain_id = $1 and service_id = $2",
        state.chain_id() as i64,
        id
    )
    .fetch_optional(&state.db)
    .await?;
    match service {
        Some(s) if s.owner == user.address.as_slice() && kind.is_none_or(|k| k == s.kind) => {
            Ok(s.kind)
        }
        _ => Err(ApiError::NotFound(format!(
            "no {}service {id} of yours",
            kind.map_or(String::new(), |k| format!("{k} "))
        ))),
    }
}

/// Pauses or resumes one of the caller's services (of `kind` when given) through the operator.
pub(crate) async fn change(
    state: &Platform,
    user: &AuthUser,
    id: i64,
    kind: Option<&str>,
    resume: bool,
) -> ApiResult<TxOutcome> {
    let service_kind = owned(state, user, id, kind).await?;
    if resume {
        let hourly =
            crate::billing::available::hourly_price_of(state, user.address, &service_kind).await?;
        crate::billing::available::require(
            state,
            user.address,
            alloy::primitives::U256::ZERO,
            hourly,
            &format!("resuming service {id}"),
        )
        .await?;
    }
    let operator = state.operator()?;
    let registry = ServiceRegistry::new(
        state.deployment.contracts.service_registry,
        operator.provider().clone(),
    );
    let service = alloy::primitives::U256::from(id as u64);
    let sent = if resume {
        operator.send_for(user.address, registry.resume(service)).await
    } else {
        operator.send_for(user.address, registry.pause(service)).await
    };
    match sent {
        Err(ChainError::Refused(PlatformRevert::ServiceRegistry(
            ServiceRegistryErrors::ServiceRegistryInsufficientCredit(_),
        ))) => Err(ApiError::InsufficientCredit(
            "resuming needs a balance of at least one hour of the service's price; recharge first"
                .into(),
        )),
        other => Ok(other?),
    }
}

/// Pauses one of the caller's services on-chain (paused time is not charged).
#[utoipa::path(post, path = "/services/{id}/pause", tag = "services", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The service")),
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::NotFound,
        (status = 409, description = "Not active")))]
pub async fn pause(
    State(state): State<Platform>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<TxOutcome> {
    change(&state, &user, id, None, false).await
}

/// Resumes one of the caller's paused or suspended services on-chain.
#[utoipa::path(post, path = "/services/{id}/resume", tag = "services", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The service")),
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::NotFound,
        (status = 409, description = "Not paused, expired or the account suspended"),
        (status = 402, description = "Not enough credit for one hour")))]
pub async fn resume(
    State(state): State<Platform>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<TxOutcome> {
    change(&state, &user, id, None, true).await
}
