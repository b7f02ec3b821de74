//! Purchases a crash (or a lost connection) left between the charge and the on-chain record: one
//! replica at a time, every `DOMAIN_RECOVERY_SECS`, takes purchases stuck for more than
//! `DOMAIN_RECOVERY_AFTER_SECS` and settles each from what is true elsewhere. Not charged (the
//! ledger never saw its reference): failed. Charged, and the name is the platform's at the
//! registrar (or the registrar took it already, or it is a platform name): recorded. Charged, and
//! the registrar does not hold it: refunded (once: the refund has its own reference). A renewal
//! interrupted before the registrar answered is refunded: its owner renews again.

use std::time::Duration;

use alloy::primitives::Address;
use chrono::Utc;
use decentraspace_abi::CreditLedger;

use super::purchase::{charge_ref, platform_price, record, refund_ref};
use crate::{charges, leader::try_lead, state::AppState};

/// Advisory lock key of the job.
const LEADER_KEY: i64 = 0x7265_636f; // "reco"

/// Runs a pass every `interval` until the task is dropped.
pub async fn run(state: AppState, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(err) = pass(&state).await {
            tracing::warn!(target: "api::domains", err = format!("{err:#}"), "purchase recovery failed");
        }
    }
}

/// One pass; answers how many purchases it settled.
pub async fn pass(state: &AppState) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, LEADER_KEY).await? else { return Ok(0) };
    let chain = state.chain_id() as i64;
    let stuck = sqlx::query!(
        r#"select id, account, name, kind, years, credits::text as "credits!", state, created_at
           from domain_purchases
           where chain_id = $1 and state in ('charging', 'registering', 'registered')
             and updated_at < now() - make_interval(secs => $2::float8)
           order by id"#,
        chain,
        state.config.domain_recovery_after_secs as f64
    )
    .fetch_all(&state.db)
    .await?;
    let ledger = CreditLedger::new(state.deployment.contracts.credit_ledger, &state.chain);
    let mut settled = 0;
    for purchase in stuck {
        let account = Address::from_slice(&purchase.account);
        let units: u64 = purchase.credits.parse().unwrap_or(0);
        let charged =
            ledger.isUsageRefUsed(charge_ref(chain, &purchase.kind, purchase.id)).call().await?;
        let settle = |to: &'static str, why: &'static str| {
            sqlx::query!(
                "update domain_purchases set state = $2, error = $3, updated_at = now() where id = $1",
                purchase.id,
                to,
                why
            )
            .execute(&state.db)
        };
        if !charged {
            settle("failed", "interrupted before the charge").await?;
            settled += 1;
            continue;
        }
        let platform_name = platform_price(state, &purchase.name, 1).ok().flatten().is_some();
        let took = match (purchase.state.as_str(), purchase.kind.as_str()) {
            ("registered", _) => true,
            _ if platform_name => true,
            (_, "purchase") => match &state.registrar {
                Some(registrar) => match registrar.holds(&purchase.name).await {
                    Ok(held) => held,
                    // Unknown now: the next pass asks again.
                    Err(err) => {
                        tracing::info!(target: "api::domains", %err, "registrar not readable now");
                        continue;
                    }
                },
                None => continue,
            },
            _ => false,
        };
        if took {
            let years = chrono::Duration::days(365 * i64::from(purchase.years));
            let current = sqlx::query_scalar!(
                "select expires_at from domains where chain_id = $1 and name = $2 and owner = $3",
                chain,
                purchase.name,
                purchase.account
            )
            .fetch_optional(&state.db)
            .await?
            .flatten();
            let (expires_at, renewing) = if purchase.kind == "renewal" {
                (current.unwrap_or_else(Utc::now).max(purchase.created_at) + years, current)
            } else {
                (purchase.created_at + years, None)
            };
            let _recorded =
                record(state, purchase.id, &purchase.name, account, expires_at, renewing)
                    .await
                    .map_err(|e| anyhow::anyhow!("record {}: {e}", purchase.name))?;
        } else {
            charges::refund(state, account, units, refund_ref(chain, purchase.id))
                .await
                .map_err(|e| anyhow::anyhow!("refund {}: {e}", purchase.name))?;
            settle("refunded", "interrupted: the registrar does not hold the name").await?;
        }
        settled += 1;
    }
    drop(lock);
    Ok(settled)
}
