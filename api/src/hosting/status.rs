//! `/hosting/status`: the caller's sites with their service, current deployment, addresses and
//! uptime; `/hosting/expire` (admin): read or set a site's expiry, which lives on-chain.

use alloy::primitives::Address;
use axum::{
    Json,
    extract::{Path, Query, State},
};
use chrono::{DateTime, Utc};
use decentraspace_abi::ServiceRegistry;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Deployment, deploy::load, site_url};
use crate::{
    chain::TxOutcome,
    hosting::HostingState,
    http::{
        auth::{AdminUser, Auth, AuthUser},
        error::{ApiError, ApiResult},
    },
};

/// The last uptime check of a site.
#[derive(Debug, Serialize, ToSchema)]
pub struct UptimeCheck {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// Whether the site answered with a success.
    pub up: bool,
    /// The status it answered, if it answered.
    pub status: Option<i16>,
    /// How long it took, in milliseconds.
    pub latency_ms: Option<i32>,
}

/// A dynamic site's machine and its recent history.
#[derive(Debug, Serialize, ToSchema)]
pub struct Instance {
    /// The runtime's machine id.
    pub machine_id: String,
    /// `starting`, `running`, `stopping`, `stopped`, `crashed` or `destroyed`.
    pub state: String,
    /// The deployment it runs.
    pub deployment_id: i64,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its last state changes, newest first.
    pub events: Vec<InstanceEvent>,
}

/// A state change of a dynamic site's machine.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceEvent {
    /// The machine.
    pub machine_id: String,
    /// The state it left (none for a new machine).
    pub from: Option<String>,
    /// The state it entered.
    pub to: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A site's hosting status.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteStatus {
    /// The site's name.
    pub name: String,
    /// `static` or `dynamic`.
    pub kind: String,
    /// Its hosting service on-chain, once opened.
    pub service_id: Option<i64>,
    /// The service's state: `active`, `paused`, `suspended`, `cancelled` (or `opening`).
    pub state: String,
    /// Whether it has expired (a Free site six months after its creation, unless upgraded).
    pub expired: bool,
    /// When it expires while its owner is on the Free tier.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the gateway serves it now.
    pub serving: bool,
    /// Its address.
    pub url: String,
    /// Its current deployment on any IPFS gateway.
    pub ipfs_url: Option<String>,
    /// The deployment served.
    pub current_deployment: Option<Deployment>,
    /// The newest deployment, when it is not the one served (queued, in progress, failed, or
    /// rolled back from).
    pub latest_deployment: Option<Deployment>,
    /// The share of uptime checks over the last 24 hours that found it up (0–1).
    pub uptime_24h: Option<f64>,
    /// The last uptime check.
    pub last_check: Option<UptimeCheck>,
    /// A dynamic site's machine.
    pub instance: Option<Instance>,
}

/// A dynamic site's machine, with its last 20 state changes.
async fn instance(state: &HostingState, site_id: i64) -> ApiResult<Option<Instance>> {
    let Some(row) = sqlx::query!(
        "select machine_id, state, deployment_id, updated_at from site_instances where site_id = $1",
        site_id
    )
    .fetch_optional(&state.db)
    .await?
    else {
        return Ok(None);
    };
    let events = sqlx::query_as!(
        InstanceEvent,
        r#"select machine_id, from_state as "from", to_state as "to", reason, at
           from site_instance_events where site_id = $1 order by id desc limit 20"#,
        site_id
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Some(Instance {
        machine_id: row.machine_id,
        state: row.state,
        deployment_id: row.deployment_id,
        updated_at: row.updated_at,
        events,
    }))
}

async fn status(state: &HostingState, site_id: i64) -> ApiResult<SiteStatus> {
    let s = sqlx::query!(
        r#"select s.name, s.kind, s.service_id, s.current_deployment_id,
                  coalesce(v.state, 'opening') as "state!",
                  v.expires_at,
                  coalesce(v.expires_at <= chain_now(s.chain_id)
                           and effective_tier(a.tier, a.tier_expires_at, chain_now(s.chain_id)) = 'free',
                           false) as "expired!",
                  (select max(id) from deployments where site_id = s.id and preview is null) as latest
           from sites s
           left join services v on v.chain_id = s.chain_id and v.service_id = s.service_id
           left join accounts a on a.chain_id = s.chain_id and a.address = s.account
           where s.id = $1"#,
        site_id
    )
    .fetch_one(&state.db)
    .await?;
    let current = match s.current_deployment_id {
        Some(id) => Some(load(state, id).await?),
        None => None,
    };
    let latest = match s.latest {
        Some(id) if Some(id) != s.current_deployment_id => Some(load(state, id).await?),
        _ => None,
    };
    let uptime = sqlx::query!(
        r#"select avg(case when up then 1.0 else 0.0 end)::float8 as share
           from uptime_checks where site_id = $1 and at > now() - interval '24 hours'"#,
        site_id
    )
    .fetch_one(&state.db)
    .await?;
    let last_check = sqlx::query_as!(
        UptimeCheck,
        "select at, up, status, latency_ms from uptime_checks where site_id = $1
         order by at desc limit 1",
        site_id
    )
    .fetch_optional(&state.db)
    .await?;
    let gateway = state.config.ipfs_gateway_url.trim_end_matches('/');
    let instance = instance(state, site_id).await?;
    let running = instance.as_ref().is_some_and(|i| i.state == "running");
    Ok(SiteStatus {
        url: site_url(state, &s.name),
        ipfs_url: current
            .as_ref()
            .and_then(|d| d.cid.as_ref())
            .map(|c| format!("{gateway}/ipfs/{c}")),
        serving: current.is_some()
            && s.state == "active"
            && !s.expired
            && (s.kind == "static" || running),
        name: s.name,
        kind: s.kind,
        service_id: s.service_id,
        state: s.state,
        expired: s.expired,
        expires_at: s.expires_at,
        current_deployment: current,
        latest_deployment: latest,
        uptime_24h: uptime.share,
        last_check,
        instance,
    })
}

/// The caller's sites with their status.
#[utoipa::path(get, path = "/hosting/status", tag = "hosting", security(("bearer" = [])),
    responses((status = 200, body = Vec<SiteStatus>)))]
pub(super) async fn sites(
    State(state): State<HostingState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<SiteStatus>>> {
    let ids = sqlx::query_scalar!(
        "select id from sites where chain_id = $1 and account = $2 order by id",
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .fetch_all(&state.db)
    .await?;
    let mut sites = Vec::with_capacity(ids.len());
    for id in ids {
        sites.push(status(&state, id).await?);
    }
    Ok(Json(sites))
}

/// The site's id when the caller owns it (or is an admin), else 404.
pub(super) async fn visible_site(
    state: &HostingState,
    auth: &Auth,
    user: &AuthUser,
    name: &str,
) -> ApiResult<(i64, Address)> {
    let site = sqlx::query!(
        "select id, account from sites where chain_id = $1 and name = $2",
        state.chain_id() as i64,
        name
    )
    .fetch_optional(&state.db)
    .await?;
    match site {
        Some(s) if s.account == user.address.as_slice() || auth.acts_as_admin(user).await? => {
            Ok((s.id, Address::from_slice(&s.account)))
        }
        _ => Err(ApiError::NotFound(format!("you have no site named {name:?}"))),
    }
}

/// One of the caller's sites (any site, for an admin).
#[utoipa::path(get, path = "/hosting/status/{site}", tag = "hosting", security(("bearer" = [])),
    params(("site" = String, Path, description = "The site's name")),
    responses((status = 200, body = SiteStatus),
        crate::http::openapi::NotFound))]
pub(super) async fn site(
    State(state): State<HostingState>,
    State(auth): State<Auth>,
    user: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<SiteStatus>> {
    let (id, _) = visible_site(&state, &auth, &user, &name).await?;
    Ok(Json(status(&state, id).await?))
}

/// A site's expiry.
#[derive(Debug, Serialize, ToSchema)]
pub struct Expiry {
    /// The site's name.
    pub site: String,
    /// Its hosting service.
    pub service_id: i64,
    /// When it expires while its owner is on the Free tier (none: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it has expired now.
    pub expired: bool,
}

/// A new expiry.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetExpiry {
    /// The site's name.
    pub site: String,
    /// The new expiry (RFC 3339); `null` removes it.
    pub expires_at: Option<DateTime<Utc>>,
}

async fn site_service(state: &HostingState, name: &str) -> ApiResult<i64> {
    sqlx::query_scalar!(
        "select service_id from sites where chain_id = $1 and name = $2",
        state.chain_id() as i64,
        name
    )
    .fetch_optional(&state.db)
    .await?
    .flatten()
    .ok_or_else(|| ApiError::NotFound(format!("no site named {name:?} with a hosting service")))
}

/// Which site.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ExpiryQuery {
    /// The site's name.
    pub site: String,
}

/// A site's expiry as indexed from the chain (admin).
#[utoipa::path(get, path = "/hosting/expire", tag = "hosting", security(("bearer" = [])),
    params(ExpiryQuery),
    responses((status = 200, body = Expiry),
        crate::http::openapi::Forbidden,
        crate::http::openapi::NotFound))]
pub(super) async fn expiry(
    State(state): State<HostingState>,
    _admin: AdminUser,
    Query(query): Query<ExpiryQuery>,
) -> ApiResult<Json<Expiry>> {
    let name = query.site;
    let service_id = site_service(&state, &name).await?;
    let row = sqlx::query!(
        r#"select v.expires_at,
                  coalesce(v.expires_at <= chain_now(v.chain_id)
                           and effective_tier(a.tier, a.tier_expires_at, chain_now(v.chain_id)) = 'free',
                           false) as "expired!"
           from services v
           left join accounts a on a.chain_id = v.chain_id and a.address = v.owner
           where v.chain_id = $1 and v.service_id = $2"#,
        state.chain_id() as i64,
        service_id
    )
    .fetch_one(&state.db)
    .await?;
    Ok(Json(Expiry { site: name, service_id, expires_at: row.expires_at, expired: row.expired }))
}

/// Sets a site's expiry on-chain (admin). The index, and so `GET`, shows it once mined.
#[utoipa::path(post, path = "/hosting/expire", tag = "hosting", security(("bearer" = [])),
    request_body = SetExpiry,
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::Forbidden,
        crate::http::openapi::NotFound))]
pub(super) async fn set_expiry(
    State(state): State<HostingState>,
    _admin: AdminUser,
    Json(body): Json<SetExpiry>,
) -> ApiResult<TxOutcome> {
    let service_id = site_service(&state, &body.site).await?;
    let at = match body.expires_at {
        None => 0,
        Some(t) => u64::try_from(t.timestamp())
            .map_err(|_| ApiError::BadRequest("expires_at is before 1970".into()))?,
    };
    let operator = state.operator()?;
    let registry = ServiceRegistry::new(
        state.deployment.contracts.service_registry,
        operator.provider().clone(),
    );
    let outcome = operator
        .send(registry.setExpiry(alloy::primitives::U256::from(service_id as u64), at))
        .await?;
    Ok(outcome)
}
