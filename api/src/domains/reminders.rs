//! Expiry reminders for names bought through the platform: one replica at a time, every
//! `DOMAIN_REMINDER_SECS`, tells the owner of every purchased name ending within
//! `DOMAIN_REMIND_BEFORE_DAYS` (a listed notice and an SSE event), once per expiry: a renewal
//! moves the expiry, and the next reminder is about the new one.

use std::time::Duration;

use alloy::primitives::Address;
use decentraspace_db::locks::{Lock, try_lead};

use crate::{
    domains::DomainsState,
    jobs::{Job, Schedule},
};

/// The job: a pass every `interval`.
pub fn job(state: &DomainsState, interval: Duration) -> Job {
    let state = state.clone();
    Job::periodic(
        "domain-reminders",
        move || Schedule::every(interval),
        move || {
            let state = state.clone();
            async move { pass(&state).await.map(drop) }
        },
    )
}

/// One pass; answers how many reminders were new.
pub async fn pass(state: &DomainsState) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, Lock::DomainReminders).await? else { return Ok(0) };
    let days = state.config.domain_remind_before_days as f64;
    let ending = sqlx::query!(
        r#"select name, owner, expires_at as "expires_at!" from domains
           where chain_id = $1 and method = 'purchase' and expires_at is not null
             and expires_at > chain_now(chain_id)
             and expires_at <= chain_now(chain_id) + make_interval(days => $2::float8::int)"#,
        state.chain_id() as i64,
        days
    )
    .fetch_all(&state.db)
    .await?;
    let mut sent = 0;
    for domain in ending {
        let data = serde_json::json!({
            "domain": domain.name,
            "expires_at": domain.expires_at,
            "renew": "POST /domain/purchase/renew",
        });
        let dedupe = format!("{}@{}", domain.name, domain.expires_at.timestamp());
        let owner = Address::from_slice(&domain.owner);
        if crate::notices::post(state, owner, "domain_expiring", &dedupe, data).await? {
            sent += 1;
        }
    }
    drop(lock);
    Ok(sent)
}
