//! Renewals that do not lapse: one replica at a time, every `DOMAIN_AUTO_RENEW_SECS`, renews for a
//! year each name bought through the platform that ends within `DOMAIN_AUTO_RENEW_BEFORE_DAYS`
//! (or ended less than 30 days ago, inside the registrars' grace), unless its owner turned it
//! off. A renewal is the owner's own renewal (`purchase::renew_name`): one purchase row, charged
//! under its own reference, settled by recovery if cut off, so a crash anywhere charges once. A
//! balance that cannot pay charges nothing and tells the owner (once per expiry); the name is
//! theirs until it ends and is tried again each pass, so a recharge in time renews it.

use std::time::Duration;

use alloy::primitives::Address;
use axum::{Json, extract::State};
use decentraspace_db::locks::{Lock, try_lead};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DomainsState, normalise, purchase::renew_name};
use crate::{
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
    jobs::{Job, Schedule},
};

/// How long after its end a name is still renewed (the registrars' usual grace period).
const GRACE_DAYS: i64 = 30;

/// The job: a pass every `interval`.
pub fn job(state: &DomainsState, interval: Duration) -> Job {
    let state = state.clone();
    Job::periodic(
        "domain-auto-renew",
        move || Schedule::every(interval).first_after(interval),
        move || {
            let state = state.clone();
            async move { pass(&state).await.map(drop) }
        },
    )
}

/// One pass; answers how many names it renewed.
pub async fn pass(state: &DomainsState) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, Lock::DomainAutoRenew).await? else { return Ok(0) };
    let chain_id = state.chain_id() as i64;
    let due = sqlx::query!(
        r#"select d.name, d.owner, d.expires_at as "expires_at!"
           from domains d
           left join domain_auto_renew r
             on r.chain_id = d.chain_id and r.name = d.name and r.owner = d.owner
           where d.chain_id = $1 and d.method = 'purchase' and d.expires_at is not null
             and d.expires_at < chain_now($1) + make_interval(days => $2)
             and d.expires_at > chain_now($1) - make_interval(days => $3)
             and coalesce(r.enabled, true)
             and not exists (select 1 from domain_purchases p
                             where p.chain_id = d.chain_id and p.name = d.name
                               and p.state in ('charging', 'registering', 'registered'))
           order by d.expires_at
           limit 100"#,
        chain_id,
        state.config.domain_auto_renew_before_days as i32,
        GRACE_DAYS as i32
    )
    .fetch_all(&state.db)
    .await?;
    let mut renewed = 0;
    for name in due {
        let owner = Address::from_slice(&name.owner);
        let expiry = name.expires_at.timestamp();
        match renew_name(state, owner, &name.name, 1).await {
            Ok(Json(purchase)) => {
                renewed += 1;
                tracing::info!(target: "api::domains", domain = name.name, "renewed automatically");
                let data = serde_json::json!({
                    "domain": name.name, "expires_at": purchase.expires_at,
                    "credits": purchase.credits,
                });
                let dedupe = format!("{}:{expiry}", name.name);
                if let Err(err) =
                    crate::notices::post(state, owner, "domain_renewed", &dedupe, data).await
                {
                    tracing::warn!(target: "api::domains", %err, "renewal notice not written");
                }
            }
            Err(err @ (ApiError::CreditShort { .. } | ApiError::InsufficientCredit(_))) => {
                let shortfall = match &err {
                    ApiError::CreditShort { shortfall, .. } => Some(shortfall.to_string()),
                    _ => None,
                };
                let data = serde_json::json!({
                    "domain": name.name, "expires_at": name.expires_at, "shortfall": shortfall,
                    "detail": format!("{err}; recharge before it ends and it is renewed at the next try"),
                });
                let dedupe = format!("{}:{expiry}", name.name);
                if let Err(err) =
                    crate::notices::post(state, owner, "domain_renewal_unpaid", &dedupe, data).await
                {
                    tracing::warn!(target: "api::domains", %err, "renewal notice not written");
                }
            }
            // Anything else (the registrar or the chain unavailable, a renewal under way): the
            // next pass tries again; recovery settles what a cut-off renewal left.
            Err(err) => {
                tracing::warn!(target: "api::domains", domain = name.name, %err, "automatic renewal not done now");
            }
        }
    }
    drop(lock);
    Ok(renewed)
}

/// Whether a bought name renews itself.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRenew {
    /// The domain (bought through the platform, the caller's).
    pub domain: String,
    /// Whether it is renewed for a year before it ends.
    pub enabled: bool,
}

/// Turns automatic renewal of a name the caller bought on or off (it is on by default).
#[utoipa::path(put, path = "/domain/purchase/auto-renew", tag = "domains", security(("bearer" = [])),
    request_body = AutoRenew,
    responses((status = 200, body = AutoRenew),
        (status = 403, description = "Another wallet's name"),
        crate::http::openapi::NotFound,
        (status = 409, description = "Not a name bought through the platform")))]
pub async fn set(
    State(state): State<DomainsState>,
    user: AuthUser,
    Json(request): Json<AutoRenew>,
) -> ApiResult<Json<AutoRenew>> {
    let domain = normalise(&state, &request.domain)?;
    let chain_id = state.chain_id() as i64;
    let record = sqlx::query!(
        "select owner, method from domains where chain_id = $1 and name = $2",
        chain_id,
        domain
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no record of {domain}")))?;
    if record.owner != user.address.as_slice() {
        return Err(ApiError::Forbidden(format!("{domain} belongs to another wallet")));
    }
    if record.method != "purchase" {
        return Err(ApiError::Conflict(format!("{domain} was not bought through the platform")));
    }
    sqlx::query!(
        "insert into domain_auto_renew (chain_id, name, owner, enabled) values ($1, $2, $3, $4)
         on conflict (chain_id, name) do update
         set owner = excluded.owner, enabled = excluded.enabled, updated_at = now()",
        chain_id,
        domain,
        user.address.as_slice(),
        request.enabled
    )
    .execute(&state.db)
    .await?;
    Ok(Json(AutoRenew { domain, enabled: request.enabled }))
}
