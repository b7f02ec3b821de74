//! Re-verification: one replica at a time re-reads the proof of every linked external domain
//! (DNS and Handshake TXT records, ENS ownership) every `DOMAIN_RECHECK_SECS`. A proof found
//! missing starts a grace period (`DOMAIN_PROOF_GRACE_SECS`) and tells the owner; found again, it
//! is forgiven; still missing after the grace, the verifier unlinks the domain on-chain (the
//! registry lets it for external names) and tells the owner. A resolver or RPC that cannot be
//! read counts as nothing: only an answer that lacks the proof does.

use std::time::Duration;

use alloy::primitives::{Address, keccak256};
use chrono::Utc;
use decentraspace_abi::DomainRegistry;
use decentraspace_db::locks::{Lock, try_lead};

use super::proof;
use crate::{
    domains::DomainsState,
    jobs::{Job, Schedule},
};

/// What one check found.
enum Found {
    /// The proof is there.
    Proven,
    /// The name answered without it (why).
    Missing(String),
    /// The name could not be read (why): nothing changes.
    Unknown(String),
}

/// The job: a pass every `interval`.
pub fn job(state: &DomainsState, interval: Duration) -> Job {
    let state = state.clone();
    Job::periodic(
        "domain-reverify",
        move || Schedule::every(interval).first_after(interval),
        move || {
            let state = state.clone();
            async move { pass(&state).await.map(drop) }
        },
    )
}

/// One pass over the linked external domains; answers how many were unlinked.
pub async fn pass(state: &DomainsState) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, Lock::DomainReverify).await? else { return Ok(0) };
    let chain = state.chain_id() as i64;
    let linked = sqlx::query!(
        r#"select d.node, d.name, d.owner, d.method, c.failing_since
           from domains d
           left join domain_checks c on c.chain_id = d.chain_id and c.node = d.node
           where d.chain_id = $1 and d.service_id is not null
             and d.method in ('dns', 'handshake', 'ens')"#,
        chain
    )
    .fetch_all(&state.db)
    .await?;
    let grace = chrono::Duration::seconds(state.config.domain_proof_grace_secs as i64);
    let mut unlinked = 0;
    for domain in linked {
        let owner = Address::from_slice(&domain.owner);
        let found = check(state, &domain.method, &domain.name, owner).await;
        match found {
            Found::Unknown(why) => {
                tracing::info!(target: "api::domains", name = domain.name, %why, "proof not readable now");
                continue;
            }
            Found::Proven => {
                sqlx::query!(
                    "insert into domain_checks (chain_id, node, name, failing_since, last_error)
                     values ($1, $2, $3, null, null)
                     on conflict (chain_id, node) do update
                     set name = excluded.name, failing_since = null, last_error = null,
                         last_checked_at = now()",
                    chain,
                    domain.node,
                    domain.name
                )
                .execute(&state.db)
                .await?;
            }
            Found::Missing(why) => {
                let since = domain.failing_since.unwrap_or_else(Utc::now);
                sqlx::query!(
                    "insert into domain_checks (chain_id, node, name, failing_since, last_error)
                     values ($1, $2, $3, $4, $5)
                     on conflict (chain_id, node) do update
                     set name = excluded.name, failing_since = $4, last_error = $5,
                         last_checked_at = now()",
                    chain,
                    domain.node,
                    domain.name,
                    since,
                    why
                )
                .execute(&state.db)
                .await?;
                let deadline = since + grace;
                let dedupe = format!("{}@{}", domain.name, since.timestamp());
                if domain.failing_since.is_none() {
                    let (name, at) = (&domain.name, Some(deadline));
                    notify(state, owner, "domain_proof_missing", name, &why, at, &dedupe).await;
                }
                if Utc::now() >= deadline {
                    // One unlink that fails now (a lagging index, the chain) holds up no other.
                    if let Err(err) = unlink(state, &domain.name).await {
                        tracing::warn!(target: "api::domains", name = domain.name, err = format!("{err:#}"),
                            "cannot unlink now");
                        continue;
                    }
                    notify(state, owner, "domain_unlinked", &domain.name, &why, None, &dedupe)
                        .await;
                    unlinked += 1;
                }
            }
        }
    }
    drop(lock);
    Ok(unlinked)
}

async fn check(state: &DomainsState, method: &str, name: &str, owner: Address) -> Found {
    if method == "ens" {
        let Some(ens) = &state.ens else { return Found::Unknown("no ENS RPC".into()) };
        return match ens.owner(name).await {
            Ok(Some(now)) if now == owner => Found::Proven,
            Ok(Some(now)) => Found::Missing(format!("the ENS name now belongs to {now}")),
            Ok(None) => Found::Missing("the ENS name has no owner".into()),
            Err(err) => Found::Unknown(err.to_string()),
        };
    }
    let resolver = if method == "handshake" { state.hns.as_ref() } else { state.dns.as_ref() };
    let Some(resolver) = resolver else { return Found::Unknown("no resolver".into()) };
    let (record, expected) = proof::challenge(state, owner, name);
    match resolver.txt(&record).await {
        Ok(values) if values.iter().any(|v| v == &expected) => Found::Proven,
        Ok(_) => Found::Missing(format!("the TXT record {record} no longer holds the proof")),
        Err(err) => Found::Unknown(err.to_string()),
    }
}

/// Unlinks the domain on-chain with the verifier key.
async fn unlink(state: &DomainsState, name: &str) -> anyhow::Result<()> {
    let verifier = state.verifier.as_ref().ok_or_else(|| anyhow::anyhow!("no verifier key"))?;
    let registry = DomainRegistry::new(
        state.deployment.contracts.domain_registry,
        verifier.provider().clone(),
    );
    verifier
        .send_for_receipt(registry.unlink(keccak256(name.as_bytes())))
        .await
        .map_err(|e| anyhow::anyhow!("unlink {name}: {e}"))?;
    tracing::info!(target: "api::domains", name, "unlinked: its proof is gone");
    Ok(())
}

/// A listed notice and an SSE event for the owner, once per `dedupe`.
async fn notify(
    state: &DomainsState,
    owner: Address,
    event: &str,
    name: &str,
    why: &str,
    unlinks_at: Option<chrono::DateTime<Utc>>,
    dedupe: &str,
) {
    let data = serde_json::json!({ "domain": name, "reason": why, "unlinks_at": unlinks_at });
    if let Err(err) = crate::notices::post(state, owner, event, dedupe, data).await {
        tracing::warn!(target: "api::domains", %err, "cannot post a domain notice");
    }
}
