//! Depletion: an account whose credit ran out has its priced, active services suspended on-chain
//! by the operator, and its clients hear of it on `/v1/stream` (`services_suspended`). After a
//! recharge, the owner resumes them (`/services/{id}/resume`, which needs an hour of credit).
//!
//! The work is found from indexed state, not by following events: a balance row at zero means a
//! deduction found the account empty or emptied it (a row exists only once the ledger moved
//! credit for the account, and such a deduction emits `CreditDepleted`), so "balance 0 and a
//! priced service still active" is the whole condition; an account the ledger never touched is
//! left alone until its first charge finds it empty. A pass is therefore idempotent, survives restarts and reorgs, and runs after
//! every indexed batch. Services that cost nothing at the owner's tier keep running.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use alloy::primitives::{Address, U256};
use decentraspace_abi::ServiceRegistry;
use decentraspace_db::locks::{Lock, try_lead};
use futures::StreamExt;
use sqlx::Connection;

use crate::{
    billing::BillingState,
    chain::Operator,
    jobs::{Job, Pass, Schedule},
    notices::PlatformNotice,
    public::stream::Notice,
};

/// Passes run after every indexer notice, and at least this often.
const POLL: Duration = Duration::from_secs(5);
/// A suspension sent but not indexed yet is not sent again before this.
const RESEND_AFTER: Duration = Duration::from_secs(60);
/// Suspensions per pass.
const PER_PASS: i64 = 500;

/// The job that suspends depleted accounts' services: after every indexed batch, and at least
/// every [`POLL`] (none without an operator key).
pub fn job(state: &BillingState) -> Option<Job> {
    let operator = state.operator.clone()?;
    let notices = state.notices.clone();
    let state = state.clone();
    Some(Job::repeating(
        "depletion",
        move || Schedule::every(POLL).first_after(POLL).woken_by(chain_notices(&notices)),
        move || Suspensions {
            state: state.clone(),
            operator: operator.clone(),
            sent: HashMap::new(),
        },
    ))
}

/// A turn for every batch the indexer commits (platform notices wake nothing).
fn chain_notices(
    notices: &tokio::sync::broadcast::Sender<Notice>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    tokio_stream::wrappers::BroadcastStream::new(notices.subscribe()).filter_map(|notice| {
        std::future::ready(match notice {
            Ok(Notice::Platform(_)) => None,
            _ => Some(()),
        })
    })
}

/// The job's turns, and the suspensions it sent (not sent again before [`RESEND_AFTER`]).
struct Suspensions {
    state: BillingState,
    operator: Operator,
    sent: HashMap<i64, Instant>,
}

impl Pass for Suspensions {
    async fn run(&mut self) -> anyhow::Result<()> {
        pass(&self.state, &self.operator, &mut self.sent).await.map(drop)
    }
}

/// One pass: suspends what is due. Returns how many suspensions were sent.
pub async fn pass(
    state: &BillingState,
    operator: &Operator,
    sent: &mut HashMap<i64, Instant>,
) -> anyhow::Result<usize> {
    let chain_id = state.chain_id() as i64;
    sent.retain(|_, at| at.elapsed() < RESEND_AFTER);
    // Suspensions sent but not indexed yet are left out before the limit, so they cannot crowd
    // out the rest.
    let recent: Vec<i64> = sent.keys().copied().collect();
    let due = sqlx::query!(
        r#"select s.service_id, s.owner
           from services s
           join credit_balances b on b.chain_id = s.chain_id and b.account = s.owner and b.balance = 0
           left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
           join service_prices p on p.chain_id = s.chain_id and p.kind = s.kind
               and p.tier = effective_tier(a.tier, a.tier_expires_at, chain_now($1))
           where s.chain_id = $1 and s.state = 'active' and p.credits_per_hour > 0
             and s.service_id <> all($3)
           order by s.owner, s.service_id
           limit $2"#,
        chain_id,
        PER_PASS,
        &recent
    )
    .fetch_all(&state.db)
    .await?;
    // This runs after every indexed block: usually nothing is due, and nothing more is done.
    if due.is_empty() {
        return Ok(0);
    }
    let Some(lock) = try_lead(&state.db, Lock::Depletion).await? else {
        return Ok(0);
    };
    let registry = ServiceRegistry::new(
        state.deployment.contracts.service_registry,
        operator.provider().clone(),
    );
    let mut suspended: HashMap<Address, Vec<i64>> = HashMap::new();
    for service in due {
        let outcome = operator.send(registry.suspend(U256::from(service.service_id as u64))).await;
        match outcome {
            Ok(outcome) => {
                tracing::info!(target: "api::depletion", service = service.service_id, tx = outcome.tx_hash, status = outcome.status, "suspending: credit depleted");
                sent.insert(service.service_id, Instant::now());
                // Clients hear of suspensions that took effect; a pending one is looked at again
                // by a later pass (and announced then, if it is still due).
                if outcome.status == "mined" {
                    suspended
                        .entry(Address::from_slice(&service.owner))
                        .or_default()
                        .push(service.service_id);
                }
            }
            // Paused or suspended meanwhile (the index is behind): nothing to do.
            Err(err) => {
                tracing::warn!(target: "api::depletion", service = service.service_id, %err, "cannot suspend");
                sent.insert(service.service_id, Instant::now());
            }
        }
    }
    lock.close().await.ok();
    let count = suspended.values().map(Vec::len).sum();
    for (account, services) in suspended {
        let notice = PlatformNotice {
            chain_id: state.chain_id(),
            event: "services_suspended".into(),
            account: account.to_checksum(None),
            data: serde_json::json!({
                "reason": "credit_depleted",
                "services": services,
                "detail": "the account's credit ran out; recharge, then resume the services",
            }),
        };
        if let Err(err) = notice.publish(&state.db).await {
            tracing::warn!(target: "api::depletion", %err, "cannot publish a suspension notice");
        }
    }
    Ok(count)
}
