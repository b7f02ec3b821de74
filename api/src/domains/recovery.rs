//! Purchases a crash (or a lost connection) left between the charge and the on-chain record: one
//! replica at a time, every `DOMAIN_RECOVERY_SECS`, takes purchases stuck for more than
//! `DOMAIN_RECOVERY_AFTER_SECS` and settles each from what is true elsewhere. Not charged (the
//! ledger never saw its reference): failed. Charged, and the name is the platform's at the
//! registrar (or the registrar took it already, or it is a platform name): recorded. Charged, and
//! the registrar does not hold it: refunded (once: the refund has its own reference). A renewal
//! is settled the same way from the registrar's own expiry for the name: reaching the term the
//! renewal bought, it was carried out (recorded); short of it, it was not (refunded). Never a
//! blind refund: a registrar that cannot be read now is asked again at the next pass.

use std::time::Duration;

use alloy::primitives::Address;
use anyhow::Context;
use chrono::Utc;
use decentraspace_abi::CreditLedger;
use decentraspace_clients::registrar::RegistrarError;
use decentraspace_db::locks::{Lock, try_lead};

use super::purchase::{RecordError, advance, charge_ref, platform_price, record, refund_ref};
use crate::{
    billing::charges,
    domains::DomainsState,
    jobs::{Job, Schedule},
};

/// How far the registrar's expiry may fall short of the term a renewal bought and still show it
/// was carried out (the registrar counts from its own registration time).
const RENEWAL_SLACK: chrono::Duration = chrono::Duration::days(2);

/// The job: a pass every `interval`.
pub fn job(state: &DomainsState, interval: Duration) -> Job {
    let state = state.clone();
    Job::periodic(
        "domain-recovery",
        move || Schedule::every(interval).first_after(interval),
        move || {
            let state = state.clone();
            async move { pass(&state).await.map(drop) }
        },
    )
}

/// How often the `.eth` registrations pass without being woken.
const ETH_EVERY: Duration = Duration::from_secs(5);
/// How long a `.eth` renewal is left to the request that sent it (it waits for its receipt).
const ETH_RENEWAL_AFTER_SECS: f64 = 60.0;

/// The `.eth` registrations (with ENS configured): paid `.eth` purchases are committed, aged and
/// registered here, not in the request, since ENS's minimum commitment age (60 s on Ethereum)
/// outlasts any request; renewals the request could not finish are carried out too.
pub fn eth_job(state: &DomainsState) -> Option<Job> {
    state.eth.as_ref()?;
    let woken = state.wakes.of(crate::wakes::Wake::EthNames);
    let state = state.clone();
    Some(Job::periodic(
        "eth-registrations",
        move || Schedule::every(ETH_EVERY).woken_by_notify(woken.clone()),
        move || {
            let state = state.clone();
            async move { eth_pass(&state).await.map(drop) }
        },
    ))
}

/// One pass of the `.eth` registrations; answers how many it settled.
pub async fn eth_pass(state: &DomainsState) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, Lock::EthNames).await? else { return Ok(0) };
    let chain = state.chain_id() as i64;
    let due = sqlx::query_as!(
        Stuck,
        r#"select id, account, name, kind, years, credits::text as "credits!", state,
                  expires_at as "expires_at!"
           from domain_purchases
           where chain_id = $1 and name like '%.eth' and state in ('registering', 'registered')
             and (kind = 'purchase' or updated_at < now() - make_interval(secs => $2::float8))
           order by id"#,
        chain,
        ETH_RENEWAL_AFTER_SECS
    )
    .fetch_all(&state.db)
    .await?;
    let settled = settle_all(state, chain, due).await;
    drop(lock);
    Ok(settled)
}

/// One pass; answers how many purchases it settled.
pub async fn pass(state: &DomainsState) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, Lock::DomainRecovery).await? else { return Ok(0) };
    let chain = state.chain_id() as i64;
    // Paid `.eth` purchases are the `.eth` registrations' (with ENS configured).
    let stuck = sqlx::query_as!(
        Stuck,
        r#"select id, account, name, kind, years, credits::text as "credits!", state,
                  expires_at as "expires_at!"
           from domain_purchases
           where chain_id = $1 and state in ('charging', 'registering', 'registered')
             and updated_at < now() - make_interval(secs => $2::float8)
             and not ($3 and name like '%.eth' and state in ('registering', 'registered'))
           order by id"#,
        chain,
        state.config.domain_recovery_after_secs as f64,
        state.eth.is_some()
    )
    .fetch_all(&state.db)
    .await?;
    let settled = settle_all(state, chain, stuck).await;
    drop(lock);
    Ok(settled)
}

/// Settles `stuck` one by one; answers how many it settled.
async fn settle_all(state: &DomainsState, chain: i64, stuck: Vec<Stuck>) -> usize {
    let ledger = CreditLedger::new(state.deployment.contracts.credit_ledger, &state.chain);
    let mut settled = 0;
    for purchase in stuck {
        // One purchase that cannot be settled now never holds up the others.
        match settle(state, &ledger, chain, &purchase).await {
            Ok(true) => settled += 1,
            Ok(false) => {}
            Err(err) => tracing::warn!(target: "api::domains", purchase = purchase.id,
                err = format!("{err:#}"), "cannot settle a purchase now"),
        }
    }
    settled
}

/// A purchase as recovery reads it.
struct Stuck {
    id: i64,
    account: Vec<u8>,
    name: String,
    kind: String,
    years: i32,
    credits: String,
    state: String,
    expires_at: chrono::DateTime<Utc>,
}

/// Settles one stuck purchase; answers whether it did (`false`: not decidable now).
async fn settle(
    state: &DomainsState,
    ledger: &CreditLedger::CreditLedgerInstance<&alloy::providers::DynProvider>,
    chain: i64,
    purchase: &Stuck,
) -> anyhow::Result<bool> {
    let account = Address::from_slice(&purchase.account);
    let units: u64 = purchase.credits.parse().unwrap_or(0);
    let charged =
        ledger.isUsageRefUsed(charge_ref(chain, &purchase.kind, purchase.id)).call().await?;
    if !charged {
        let why = "interrupted before the charge".to_owned();
        return Ok(advance(state, purchase.id, &purchase.state, "failed", Some(why)).await?);
    }
    let platform_name = platform_price(state, &purchase.name, 1).ok().flatten().is_some();
    let eth_label = super::eth::label(&purchase.name);
    let took = match (purchase.state.as_str(), purchase.kind.as_str()) {
        ("registered", _) => true,
        _ if platform_name => true,
        // A `.eth` name: the same steps again, each found done or taken once (ENS says whether
        // the name is the buyer's, or why it cannot be).
        (_, kind) if let Some(label) = eth_label => {
            let Some(eth) = &state.eth else { return Ok(false) };
            let years = u32::try_from(purchase.years).unwrap_or(1);
            let done = if kind == "purchase" {
                eth.register(chain, purchase.id, label, account, years).await
            } else {
                eth.renew(chain, purchase.id, label, years).await
            };
            match done {
                Ok(()) => true,
                Err(RegistrarError::Refused(why) | RegistrarError::NotFound(why)) => {
                    tracing::info!(target: "api::domains", purchase = purchase.id, why, "ENS refused");
                    false
                }
                Err(err @ RegistrarError::Unavailable(_)) => {
                    tracing::info!(target: "api::domains", %err, "ENS not reachable now");
                    return Ok(false);
                }
            }
        }
        (_, "purchase") => {
            let Some(registrar) = &state.registrar else { return Ok(false) };
            match registrar.holds(&purchase.name).await {
                Ok(held) => held,
                // Unknown now: the next pass asks again.
                Err(err) => {
                    tracing::info!(target: "api::domains", %err, "registrar not readable now");
                    return Ok(false);
                }
            }
        }
        (_, _renewal) => {
            let Some(registrar) = &state.registrar else { return Ok(false) };
            match registrar.expiry(&purchase.name).await {
                Ok(Some(ends)) => ends + RENEWAL_SLACK >= purchase.expires_at,
                Ok(None) => false,
                Err(err) => {
                    tracing::info!(target: "api::domains", %err, "registrar not readable now");
                    return Ok(false);
                }
            }
        }
    };
    if took {
        if purchase.state != "registered"
            && !advance(state, purchase.id, &purchase.state, "registered", None).await?
        {
            return Ok(false);
        }
        // The expiry the purchase was bought for, and for a renewal the record it extends.
        let renewing = if purchase.kind == "renewal" { Some(purchase.expires_at) } else { None };
        let expires_at = purchase.expires_at;
        match record(state, purchase.id, &purchase.name, account, expires_at, renewing).await {
            Ok(_) => return Ok(true),
            // Another wallet holds the name now: this buyer gets the charge back.
            Err(taken @ RecordError::TakenMeanwhile(_)) => {
                refund_once(state, account, units, chain, purchase.id).await?;
                let why = taken.to_string();
                return Ok(advance(state, purchase.id, "registered", "refunded", Some(why)).await?);
            }
            Err(err) => anyhow::bail!("record {}: {err}", purchase.name),
        }
    }
    refund_once(state, account, units, chain, purchase.id).await?;
    let why = if purchase.kind == "renewal" {
        "interrupted: the registrar did not renew the name".to_owned()
    } else {
        "interrupted: the registrar does not hold the name".to_owned()
    };
    Ok(advance(state, purchase.id, &purchase.state, "refunded", Some(why)).await?)
}

async fn refund_once(
    state: &DomainsState,
    account: Address,
    units: u64,
    chain: i64,
    id: i64,
) -> anyhow::Result<()> {
    charges::refund(state, account, units, refund_ref(chain, id))
        .await
        .with_context(|| format!("refund purchase {id}"))
}
