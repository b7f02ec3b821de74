//! The available balance: what an account can spend now. The indexed on-chain balance lags usage
//! twice over: the meter charges active time once per interval (an hour by default), and a charge
//! planned or sent shows in the balance only once its block is indexed. The available balance
//! subtracts both: the charges not in the indexed balance yet, and each service's active time
//! since its last charge, priced to the second as the meter will price it ([`due`]).
//!
//! Every endpoint that starts or extends a charge asks [`require`] first, the balance endpoint and
//! the credit analytics show it, and depletion suspends services when it reaches zero.

use alloy::primitives::{Address, U256};
use anyhow::Context;
use chrono::{DateTime, Utc};
use decentraspace_abi::{CreditLedger, ServiceKind};

use super::{
    charges::credits_of,
    metering::{due, plan::Change},
};
pub use crate::platform::Balance as Available;
use crate::{
    http::error::{ApiError, ApiResult},
    platform::{Balances, Platform},
};

/// What an account's available balance is computed from, read in one snapshot of the database:
/// its indexed balance, its charges not indexed yet, and its services with time not charged yet
/// (with their state changes). It changes only when the indexer commits (a charge indexed, a
/// state change, a new service) or the meter plans (which moves time into a charge: the total
/// stays the same), so it may be kept until the next commit; the time is applied when asked.
#[derive(Debug)]
pub struct Snapshot {
    on_chain: U256,
    unindexed: U256,
    chain_time: DateTime<Utc>,
    services: Vec<(due::Due, Vec<Change>)>,
    per_gib_hour: u64,
    /// The last block the indexer had applied.
    pub indexed_block: Option<i64>,
}

impl Snapshot {
    /// Reads `account`'s snapshot (in one repeatable-read transaction: a meter plan committing
    /// meanwhile is seen whole or not at all, never its time counted twice).
    pub async fn read(platform: &Platform, account: Address) -> anyhow::Result<Self> {
        let chain_id = platform.chain_id() as i64;
        let mut tx = platform.db.begin().await?;
        sqlx::query!("set transaction isolation level repeatable read, read only")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query!(
            r#"select coalesce((select balance::text from credit_balances
                                where chain_id = $1 and account = $2), '0') as "balance!",
                      greatest(chain_now($1), now()) as "now!",
                      (select block_number from indexer_checkpoints where chain_id = $1) as indexed_block,
                      (select coalesce(sum(m.credits), 0)::text from meter_charges m
                       where m.chain_id = $1 and m.account = $2
                         and (m.status in ('pending', 'sending', 'sent')
                              -- deferred until its service is chargeable again: never, once
                              -- cancelled
                              or (m.status = 'deferred' and exists (
                                    select 1 from services s where s.chain_id = $1
                                      and s.service_id = m.service_id and s.state <> 'cancelled')))
                         and not exists (select 1 from events e
                                         where e.chain_id = $1 and e.service_id = m.service_id
                                           and e.credit_kind = 'deduction' and e.reference = m.usage_ref))
                        as "unindexed!""#,
            chain_id,
            account.as_slice()
        )
        .fetch_one(&mut *tx)
        .await?;
        let due = due::services(&mut tx, chain_id, row.now, Some(account.as_slice())).await?;
        let ids: Vec<i64> = due.iter().map(|d| d.service_id).collect();
        let mut histories = if ids.is_empty() {
            Default::default()
        } else {
            due::histories(&mut tx, chain_id, &ids, row.now).await?
        };
        tx.commit().await?;
        Ok(Self {
            on_chain: row.balance.parse().context("balance")?,
            unindexed: row.unindexed.parse().context("unindexed charges")?,
            chain_time: row.now,
            services: due
                .into_iter()
                .map(|d| {
                    let history = histories.remove(&d.service_id).unwrap_or_default();
                    (d, history)
                })
                .collect(),
            per_gib_hour: platform.config.storage_credits_per_gib_hour,
            indexed_block: row.indexed_block,
        })
    }

    /// The snapshot with the on-chain balance read from the ledger instead of the index.
    fn with_on_chain(mut self, on_chain: U256) -> Self {
        self.on_chain = on_chain;
        self
    }

    /// The available balance at `now` (or at the snapshot's chain time, when that is later).
    pub fn at(&self, now: DateTime<Utc>) -> anyhow::Result<Available> {
        let as_of = now.max(self.chain_time);
        let mut accrued = self.unindexed;
        for (service, history) in &self.services {
            accrued += due::price(service, history, as_of.timestamp(), self.per_gib_hour)?.credits;
        }
        Ok(Available {
            on_chain: self.on_chain,
            accrued,
            available: self.on_chain.saturating_sub(accrued),
            as_of,
        })
    }
}

/// `account`'s balance on the ledger now (not the index), or `None` when the node does not answer.
async fn ledger_balance(platform: &Platform, account: Address) -> Option<U256> {
    let ledger = CreditLedger::new(platform.deployment.contracts.credit_ledger, &platform.chain);
    match ledger.balanceOf(account).call().await {
        Ok(balance) => Some(balance),
        Err(err) => {
            tracing::warn!(target: "api::billing", %err, %account, "cannot read the ledger's balance");
            None
        }
    }
}

/// `account`'s available balance now.
pub async fn of(platform: &Platform, account: Address) -> anyhow::Result<Available> {
    Snapshot::read(platform, account).await?.at(Utc::now())
}

/// Billing's balances, for the features that show them ([`Balances`]).
#[derive(Debug, Clone)]
pub struct AvailableBalances(pub Platform);

impl Balances for AvailableBalances {
    fn of(&self, account: Address) -> futures::future::BoxFuture<'_, anyhow::Result<Available>> {
        Box::pin(of(&self.0, account))
    }
}

/// Checks that `account` can pay `cost` now and `hourly` for the first hour of the service the
/// action starts or extends (a Free service priced at zero needs nothing): 402 with the shortfall
/// when it cannot. `what` names the action for the message.
pub async fn require(
    platform: &Platform,
    account: Address,
    cost: U256,
    hourly: U256,
    what: &str,
) -> ApiResult<()> {
    let needed = cost + hourly;
    if needed.is_zero() {
        // Nothing to pay: no reads.
        return Ok(());
    }
    let snapshot = Snapshot::read(platform, account).await.map_err(ApiError::Internal)?;
    let mut balance = snapshot.at(Utc::now()).map_err(ApiError::Internal)?;
    if balance.available >= needed {
        return Ok(());
    }
    // Short by the index, which may not have the latest recharge yet: the ledger's own balance
    // decides (a charge it holds and the index does not is then counted twice, for a moment:
    // the check errs on the side of refusing).
    if let Some(live) = ledger_balance(platform, account).await
        && live > balance.on_chain
    {
        balance = snapshot.with_on_chain(live).at(Utc::now()).map_err(ApiError::Internal)?;
        if balance.available >= needed {
            return Ok(());
        }
    }
    let shortfall = needed - balance.available;
    let needs = if hourly.is_zero() {
        credits_of(cost)
    } else if cost.is_zero() {
        format!("one hour of the service, {}", credits_of(hourly))
    } else {
        format!("{} now and one hour of the service, {}", credits_of(cost), credits_of(hourly))
    };
    Err(ApiError::CreditShort {
        detail: format!(
            "{what} needs {needs}; {} are available ({} on-chain less {} used since the last charge): recharge at least {}",
            credits_of(balance.available),
            credits_of(balance.on_chain),
            credits_of(balance.accrued),
            credits_of(shortfall)
        ),
        shortfall,
    })
}

/// The hourly price of a service of `kind` at `account`'s effective tier now.
pub async fn hourly_price(
    platform: &Platform,
    account: Address,
    kind: ServiceKind,
) -> ApiResult<U256> {
    hourly_price_of(platform, account, kind.as_str()).await
}

/// [`hourly_price`] for a kind by its indexed name (`static_hosting`, …).
pub async fn hourly_price_of(platform: &Platform, account: Address, kind: &str) -> ApiResult<U256> {
    let price = sqlx::query_scalar!(
        r#"select coalesce((select p.credits_per_hour::text from service_prices p
                            left join accounts a on a.chain_id = p.chain_id and a.address = $2
                            where p.chain_id = $1 and p.kind = $3
                              and p.tier = effective_tier(a.tier, a.tier_expires_at, chain_now($1))),
                           '0') as "price!""#,
        platform.chain_id() as i64,
        account.as_slice(),
        kind
    )
    .fetch_one(&platform.db)
    .await?;
    price.parse().map_err(|_| ApiError::Internal(anyhow::anyhow!("price {price} is not a number")))
}
