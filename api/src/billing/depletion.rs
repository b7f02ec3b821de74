//! Depletion: an account whose available credit reached zero has its priced, active services
//! suspended on-chain by the operator, and its clients hear of it on `/v1/stream`
//! (`services_suspended`). After a recharge, the owner resumes them (`/services/{id}/resume`,
//! which needs an hour of credit).
//!
//! The available balance (`billing::available`) is the indexed balance less what is used and not
//! charged yet, to the second: depletion acts when it reaches zero, not when the meter's next
//! charge finds the ledger empty an interval later. The work is found from indexed state, so a
//! pass is idempotent and survives restarts and reorgs: the accounts whose balance cannot cover
//! even a bound on what their priced services used (all of them active all the time since their
//! last charge) are the candidates, and each candidate's available balance is computed exactly.
//! An account at zero has its used time planned as charges first (the ledger charges only
//! chargeable services: a charge sent after the suspension would wait for a resume), and its
//! priced services are suspended once those charges are settled, or after [`CHARGE_WAIT`] without
//! a meter to send them. A pass runs after every indexed batch and at least every few seconds.
//! Services that cost nothing at the owner's tier keep running.

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
    billing::{BillingState, available, metering},
    chain::Operator,
    jobs::{Job, Pass, Schedule},
    notices::PlatformNotice,
};

/// Passes run after every indexer notice, and at least this often.
const POLL: Duration = Duration::from_secs(5);
/// A suspension sent but not indexed yet is not sent again before this.
const RESEND_AFTER: Duration = Duration::from_secs(60);
/// Suspensions per pass.
const PER_PASS: i64 = 500;
/// How long a depleted account's planned charges may stay unsent (no meter sends them) before its
/// services are suspended regardless.
const CHARGE_WAIT: Duration = Duration::from_secs(30);

/// The job that suspends depleted accounts' services: after every indexed batch, and at least
/// every [`POLL`] (none without an operator key).
pub fn job(state: &BillingState) -> Option<Job> {
    let operator = state.operator.clone()?;
    let indexed = state.indexed.clone();
    let state = state.clone();
    Some(Job::repeating(
        "depletion",
        move || Schedule::every(POLL).first_after(POLL).woken_by(chain_notices(&indexed)),
        move || Suspensions {
            state: state.clone(),
            operator: operator.clone(),
            sent: HashMap::new(),
        },
    ))
}

/// A turn for every batch the indexer commits (and one when ticks were missed).
fn chain_notices(
    indexed: &tokio::sync::broadcast::Sender<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    tokio_stream::wrappers::BroadcastStream::new(indexed.subscribe()).map(|_| ())
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
    let candidates = sqlx::query_scalar!(
        r#"with priced as (
               select s.owner, s.service_id,
                      p.credits_per_hour
                        + (select coalesce(sum(f.size_bytes), 0) from storage_files f
                           where f.chain_id = $1 and f.service_id = s.service_id
                             and f.deleted_at is null) * $2::bigint / 1073741824.0 as per_hour,
                      coalesce(m.metered_until, s.created_at) as since,
                      s.state = 'active' and s.service_id <> all($3) as suspendable
               from services s
               left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
               join service_prices p on p.chain_id = s.chain_id and p.kind = s.kind
                   and p.tier = effective_tier(a.tier, a.tier_expires_at, chain_now($1))
               left join meter_services m on m.chain_id = s.chain_id and m.service_id = s.service_id
               where s.chain_id = $1 and s.state <> 'cancelled' and p.credits_per_hour > 0
           )
           select owner as "owner!" from priced
           group by owner
           having bool_or(suspendable)
              and coalesce((select b.balance from credit_balances b
                            where b.chain_id = $1 and b.account = priced.owner), 0)
                  - (select coalesce(sum(c.credits), 0) from meter_charges c
                     where c.chain_id = $1 and c.account = priced.owner
                       and c.status in ('pending', 'sending', 'sent', 'deferred'))
                  - sum(per_hour * greatest(extract(epoch from greatest(chain_now($1), now()) - since), 0) / 3600)
                  - count(*) <= 0
           order by owner
           limit $4"#,
        chain_id,
        state.config.storage_credits_per_gib_hour as i64,
        &recent,
        PER_PASS
    )
    .fetch_all(&state.db)
    .await?;
    let mut depleted = Vec::new();
    for owner in candidates {
        let account = Address::try_from(owner.as_slice())?;
        let balance = available::of(state, account).await?;
        if !balance.available.is_zero() {
            continue;
        }
        // The time used so far is charged before the services stop: the ledger charges only
        // chargeable services, so a charge sent after the suspension would wait for a resume.
        // While the ledger holds credit, the account's used time is planned (the same charges
        // the meter would plan; the meter sends them) and the suspension waits for those
        // charges, though not past CHARGE_WAIT (a platform without a meter). Once the ledger is
        // empty, or nothing more is due, the services stop.
        // Open charges are waited for while something sends them: a charge handed to the node
        // settles by itself; one still pending past the wait has no meter to send it.
        let open = sqlx::query!(
            r#"select count(*) > 0 as "open!",
                      coalesce(bool_or(status = 'pending'
                                       and created_at <= now() - make_interval(secs => $3)), false) as "stale!"
               from meter_charges
               where chain_id = $1 and account = $2 and status in ('pending', 'sending', 'sent')"#,
            chain_id,
            owner.as_slice(),
            CHARGE_WAIT.as_secs_f64()
        )
        .fetch_one(&state.db)
        .await?;
        if open.open && !open.stale {
            continue;
        }
        // Charges open past the wait: nothing sends them; planning more would not help.
        if !open.stale
            && !balance.on_chain.is_zero()
            && metering::meter::plan(
                &state.db,
                state.chain_id(),
                state.config.storage_credits_per_gib_hour,
                Some(owner.as_slice()),
            )
            .await?
                > 0
        {
            continue;
        }
        depleted.push(owner);
    }
    let due = if depleted.is_empty() {
        Vec::new()
    } else {
        sqlx::query!(
            r#"select s.service_id, s.owner
               from services s
               left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
               join service_prices p on p.chain_id = s.chain_id and p.kind = s.kind
                   and p.tier = effective_tier(a.tier, a.tier_expires_at, chain_now($1))
               where s.chain_id = $1 and s.state = 'active' and p.credits_per_hour > 0
                 and s.owner = any($2) and s.service_id <> all($3)
               order by s.owner, s.service_id
               limit $4"#,
            chain_id,
            &depleted,
            &recent,
            PER_PASS
        )
        .fetch_all(&state.db)
        .await?
    };
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
                "detail": "the account's available credit ran out; recharge, then resume the services",
            }),
        };
        if let Err(err) = notice.publish(&state.db).await {
            tracing::warn!(target: "api::depletion", %err, "cannot publish a suspension notice");
        }
    }
    Ok(count)
}
