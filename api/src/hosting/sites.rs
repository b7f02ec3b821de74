//! A site's record and its hosting service: a name is claimed by the first account to deploy it,
//! and the service is opened on-chain (by the operator) at its first deployment. The service's
//! reference is derived from the name, so a service opened just before a crash is found again
//! in the index instead of being opened twice.

use alloy::primitives::{Address, B256, U256, keccak256};
use decentraspace_abi::{
    PlatformRevert, ServiceKind,
    ServiceRegistry::{self, ServiceRegistryErrors},
};
use decentraspace_db::locks::{Lock, lock_in};

use crate::{
    billing::available,
    chain::ChainError,
    http::error::{ApiError, ApiResult},
    platform::Platform,
};

/// Names no account may take (they would read as the platform's own hosts).
const RESERVED: &[&str] =
    &["www", "api", "app", "admin", "docs", "status", "gateway", "ipfs", "mail"];

/// A site as the deploy path needs it.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub id: i64,
    pub name: String,
    pub account: Address,
    pub output_dir: Option<String>,
    /// `static` or `dynamic`.
    pub kind: String,
}

/// The on-chain reference of the site named `name`'s hosting service.
pub(super) fn service_ref(name: &str) -> B256 {
    keccak256(format!("site:{name}"))
}

/// Checks a site name: a DNS label of 3 to 63 lowercase letters, digits and inner hyphens.
pub(super) fn valid_name(name: &str) -> ApiResult<()> {
    let ok = (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        return Err(ApiError::BadRequest(format!(
            "site name {name:?}: use 3 to 63 lowercase letters, digits and single inner hyphens"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(ApiError::Conflict(format!("the site name {name:?} is reserved")));
    }
    Ok(())
}

/// The caller's site named `name`: 404 when there is none, or it is another account's.
pub(crate) async fn owned(state: &Platform, account: Address, name: &str) -> ApiResult<Site> {
    let site = find(state, name).await?;
    match site {
        Some(site) if site.account == account => Ok(site),
        _ => Err(ApiError::NotFound(format!("you have no site named {name:?}"))),
    }
}

async fn find(state: &Platform, name: &str) -> ApiResult<Option<Site>> {
    let row = sqlx::query!(
        "select id, name, account, output_dir, kind from sites
         where chain_id = $1 and name = $2",
        state.chain_id() as i64,
        name
    )
    .fetch_optional(&state.db)
    .await?;
    Ok(row.map(|r| Site {
        id: r.id,
        name: r.name,
        account: Address::from_slice(&r.account),
        output_dir: r.output_dir,
        kind: r.kind,
    }))
}

/// The caller's site named `name` of `kind` (`static` or `dynamic`), claimed for it when the
/// name is free.
pub(crate) async fn claim(
    state: &Platform,
    account: Address,
    name: &str,
    kind: &str,
    spa_fallback: Option<bool>,
    output_dir: Option<&str>,
) -> ApiResult<Site> {
    valid_name(name)?;
    let inserted = sqlx::query!(
        "insert into sites (chain_id, account, name, kind, spa_fallback, output_dir)
         values ($1, $2, $3, $4, coalesce($5, true), $6)
         on conflict (chain_id, name) do nothing",
        state.chain_id() as i64,
        account.as_slice(),
        name,
        kind,
        spa_fallback,
        output_dir
    )
    .execute(&state.db)
    .await?;
    let site = find(state, name).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("site {name} vanished right after its claim"))
    })?;
    if site.account != account {
        return Err(ApiError::Conflict(format!("the site name {name:?} is taken")));
    }
    if site.kind != kind {
        return Err(ApiError::Conflict(format!(
            "site {name} is a {} site; deploy it as one, or use another name",
            site.kind
        )));
    }
    if inserted.rows_affected() == 0 && (spa_fallback.is_some() || output_dir.is_some()) {
        sqlx::query!(
            "update sites set spa_fallback = coalesce($2, spa_fallback),
                              output_dir = coalesce($3, output_dir)
             where id = $1",
            site.id,
            spa_fallback,
            output_dir
        )
        .execute(&state.db)
        .await?;
        return Ok(Site { output_dir: output_dir.map(str::to_owned).or(site.output_dir), ..site });
    }
    Ok(site)
}

/// The site's hosting service, opened on-chain when it has none yet. A service that is not
/// active (paused, suspended, cancelled) or has expired takes no deployment.
pub(crate) async fn hosting_service(state: &Platform, site: &Site) -> ApiResult<i64> {
    // A deployment extends the site's hosting: its available credit pays an hour of it first.
    let hourly = available::hourly_price(state, site.account, service_kind(site)).await?;
    available::require(
        state,
        site.account,
        U256::ZERO,
        hourly,
        &format!("deploying {}", site.name),
    )
    .await?;
    // One request at a time per site finds or opens its service: two first deployments at once
    // would otherwise open two.
    let mut lock = state.db.begin().await?;
    lock_in(&mut lock, Lock::Site { site_id: site.id }).await?;
    let known = sqlx::query_scalar!("select service_id from sites where id = $1", site.id)
        .fetch_optional(&state.db)
        .await?
        .flatten();
    let id = match known {
        Some(id) => id,
        None => match indexed_service(state, site).await? {
            Some(id) => id,
            None => open_service(state, site).await?,
        },
    };
    sqlx::query!(
        "update sites set service_id = $2 where id = $1 and service_id is null",
        site.id,
        id
    )
    .execute(&state.db)
    .await?;
    lock.commit().await?;
    let service = sqlx::query!(
        r#"select state, expires_at is not null and expires_at <= chain_now($1)
                  and effective_tier(a.tier, a.tier_expires_at, chain_now($1)) = 'free' as "expired!"
           from services s
           left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
           where s.chain_id = $1 and s.service_id = $2"#,
        state.chain_id() as i64,
        id
    )
    .fetch_one(&state.db)
    .await?;
    if service.expired {
        return Err(ApiError::Conflict(format!(
            "site {} expired: upgrade to the Paid tier to deploy it again",
            site.name
        )));
    }
    if service.state != "active" {
        return Err(ApiError::Conflict(format!(
            "site {}'s hosting service {id} is {}: resume it before deploying",
            site.name, service.state
        )));
    }
    Ok(id)
}

/// Gives the name back when the site never got a service or a deployment (its first deployment
/// was refused), so a refused request holds no name.
pub(crate) async fn release_unused(state: &Platform, site: &Site) -> ApiResult<()> {
    sqlx::query!(
        "delete from sites where id = $1 and service_id is null
         and not exists (select 1 from deployments where site_id = $1)",
        site.id
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// The service opened for the site, as indexed (found by its reference).
async fn indexed_service(state: &Platform, site: &Site) -> ApiResult<Option<i64>> {
    let reference = service_ref(&site.name);
    Ok(sqlx::query_scalar!(
        "select service_id from services
         where chain_id = $1 and owner = $2 and ref = $3 and kind = $4
         order by service_id desc limit 1",
        state.chain_id() as i64,
        site.account.as_slice(),
        reference.as_slice(),
        service_kind(site).to_string()
    )
    .fetch_optional(&state.db)
    .await?)
}

/// The on-chain kind of the site's hosting service.
fn service_kind(site: &Site) -> ServiceKind {
    if site.kind == "dynamic" { ServiceKind::DynamicHosting } else { ServiceKind::StaticHosting }
}

async fn open_service(state: &Platform, site: &Site) -> ApiResult<i64> {
    let operator = state.operator()?;
    let registry = ServiceRegistry::new(
        state.deployment.contracts.service_registry,
        operator.provider().clone(),
    );
    // One write per attempt at the site's service: a first deployment cut off while its
    // service was being opened, then sent again, waits for the same transaction.
    let reference = operator
        .attempt_reference(&format!("hosting-service:{}:{}", site.account, site.name))
        .await?;
    let receipt = operator
        .send_once_for_receipt(
            reference,
            registry.createServiceFor(
                site.account,
                service_kind(site).into(),
                service_ref(&site.name),
            ),
        )
        .await
        .map_err(|err| match err {
            ChainError::Refused(PlatformRevert::ServiceRegistry(
                ServiceRegistryErrors::ServiceRegistryTierLimitExceeded(_),
            )) => ApiError::Forbidden(
                "your tier hosts no more sites: upgrade, or cancel a site first".into(),
            ),
            other => other.into(),
        })?;
    let id = crate::services::opened(&receipt, "hosting")?;
    // Reads (status, the gateway) come from the index: wait until it has the service.
    if crate::services::indexed(state, id).await? {
        return Ok(id);
    }
    Err(ApiError::Unavailable(format!(
        "hosting service {id} was opened but is not indexed yet; deploy again in a moment"
    )))
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn site_names_are_dns_labels() {
        for ok in ["abc", "my-site", "a1b2", &"x".repeat(63)] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in
            ["ab", "-abc", "abc-", "a--b", "ABC", "a_b", "a.b", "ünï", &"x".repeat(64), "www"]
        {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }
}
