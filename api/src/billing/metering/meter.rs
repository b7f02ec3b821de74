//! The billing meter. Each cycle:
//! 1. plans: every service's active time since its last charge, up to the indexed head's block
//!    time (a pause the indexer has not seen yet can never be charged), priced per hour at the
//!    owner's effective tier plus, for storage, the bytes it holds per GiB-hour, and capped at a
//!    Free service's expiry. The charges and each
//!    service's new start are written in one transaction, each charge under a usage reference
//!    derived from the service and the span's start;
//! 2. sends the pending charges (time and recorded usage) in `deductBatch` transactions
//!    ([`super::charges`]);
//! 3. reconciles them with the indexed `CreditsDeducted` / `DeductionSkipped` events.
//!
//! Charging twice is impossible by construction: the ledger takes a usage reference once, a batch
//! holding a used reference reverts whole, and two plans of the same time share references.
//! What the meter's tables add is progress: after a crash, charges handed to the node are looked
//! up (receipt, then each reference on-chain) before anything is sent again. One replica meters at
//! a time (a session advisory lock), and planning also holds a transaction-level lock, so that a
//! lost lock connection cannot let two replicas plan the same time.

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, U256},
    providers::DynProvider,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use decentraspace_db::locks::{Lock, lock_in, try_lead};
use sqlx::{Connection, PgPool};
use tokio::time::Instant;

use super::{
    due::{self, Due},
    plan,
};
use crate::{
    billing::BillingState,
    chain::outbox::Outbox,
    jobs::{Job, Pass, Schedule},
};

/// The meter's turns: a full cycle when one is due, else following the open charges.
struct Cycles {
    meter: Meter,
    interval: Duration,
    next_cycle: Instant,
}

impl Pass for Cycles {
    async fn run(&mut self) -> anyhow::Result<()> {
        let planning = Instant::now() >= self.next_cycle;
        if planning {
            self.next_cycle += self.interval;
        }
        let report = self.meter.pass(planning).await?;
        if planning {
            tracing::info!(target: "api::meter", ?report, "meter cycle done");
        }
        Ok(())
    }
}

/// How often charges still open are followed between cycles.
const SETTLE_EVERY: Duration = Duration::from_secs(3);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Charges planned.
    pub planned: usize,
    /// `deductBatch` transactions mined.
    pub batches: usize,
    /// Charges in those transactions.
    pub sent: usize,
    /// Charges the ledger skipped while their service was paused, suspended or expired: sent
    /// again once it is chargeable.
    pub deferred: usize,
    /// Their gas.
    pub gas_used: u64,
    /// Charges found charged in the indexed ledger.
    pub charged: usize,
    /// Charges of cancelled services, which the ledger never charges.
    pub skipped: usize,
    /// Whether another replica held the meter (nothing was done).
    pub busy: bool,
}

/// Charges services for their active time through the billing key.
#[derive(Debug, Clone)]
pub struct Meter {
    pub(super) db: PgPool,
    pub(super) chain_id: u64,
    pub(super) ledger: Address,
    pub(super) chain: DynProvider,
    /// The billing key's address (its sender sends the batches).
    pub(super) signer: Address,
    pub(super) outbox: Outbox,
    pub(super) batch_size: usize,
    pub(super) storage_per_gib_hour: u64,
}

impl Meter {
    /// The meter of `state`, or `None` when no billing key is configured.
    pub fn new(state: &BillingState) -> Option<Self> {
        Some(Self {
            db: state.db.clone(),
            chain_id: state.chain_id(),
            ledger: state.deployment.contracts.credit_ledger,
            chain: state.chain.clone(),
            signer: state.billing.as_ref()?.address(),
            outbox: state.outbox.clone(),
            batch_size: state.config.meter_batch_size as usize,
            storage_per_gib_hour: state.config.storage_credits_per_gib_hour,
        })
    }

    /// The meter's job: a cycle every `interval` (the first one interval after start), and the
    /// open charges followed in between.
    pub fn job(self, interval: Duration) -> Job {
        let period = interval.min(SETTLE_EVERY);
        Job::repeating(
            "meter",
            move || Schedule::every(period).first_after(period),
            move || Cycles { meter: self.clone(), interval, next_cycle: Instant::now() + interval },
        )
    }

    /// One full cycle: follow what is open, plan the active time up to the indexed head, send.
    pub async fn cycle(&self) -> anyhow::Result<Report> {
        self.pass(true).await
    }

    /// Follows open charges and sends pending ones, planning nothing new.
    pub async fn settle(&self) -> anyhow::Result<Report> {
        self.pass(false).await
    }

    async fn pass(&self, planning: bool) -> anyhow::Result<Report> {
        // Between cycles there is usually nothing in flight: no lock, no connection of its own.
        // (Deferred charges of resumed services go out with the next cycle.)
        if !planning && !self.in_flight().await? {
            return Ok(Report::default());
        }
        let Some(lock) = try_lead(&self.db, Lock::Meter).await? else {
            return Ok(Report { busy: true, ..Report::default() });
        };
        let mut report = Report::default();
        let done = self.pass_locked(planning, &mut report).await;
        lock.close().await.ok();
        done.map(|()| report)
    }

    /// Whether any charge is waiting to be sent or followed.
    async fn in_flight(&self) -> anyhow::Result<bool> {
        Ok(sqlx::query_scalar!(
            r#"select exists(select 1 from meter_charges
                             where chain_id = $1 and status in ('pending', 'sending', 'sent')) as "open!""#,
            self.chain_id as i64
        )
        .fetch_one(&self.db)
        .await?)
    }

    async fn pass_locked(&self, planning: bool, report: &mut Report) -> anyhow::Result<()> {
        self.reconcile(report).await?;
        self.recover().await?;
        if planning {
            report.planned = self.plan().await?;
        }
        self.send(report).await?;
        self.reconcile(report).await
    }

    /// Plans every due service's active time up to the indexed head. Returns how many charges.
    async fn plan(&self) -> anyhow::Result<usize> {
        plan(&self.db, self.chain_id, self.storage_per_gib_hour, None).await
    }
}

/// The indexed head: its block number and time.
async fn indexed_head(db: &PgPool, chain_id: u64) -> anyhow::Result<(i64, DateTime<Utc>)> {
    let head = sqlx::query!(
        "select block_number, block_time from indexer_checkpoints where chain_id = $1",
        chain_id as i64
    )
    .fetch_optional(db)
    .await?
    .context("nothing is indexed yet")?;
    let time = head.block_time.context("the indexer has not recorded its head's time yet")?;
    Ok((head.block_number, time))
}

/// Plans the due services' active time (of `owner`, or every account's) up to the indexed head,
/// storage priced at `per_gib_hour`: the charges and each service's new start, in one
/// transaction under the plan lock. Any replica may plan (depletion plans an account before it
/// suspends it); the meter sends what is planned. Returns how many charges.
pub(crate) async fn plan(
    db: &PgPool,
    chain_id: u64,
    per_gib_hour: u64,
    owner: Option<&[u8]>,
) -> anyhow::Result<usize> {
    let (head_block, until) = indexed_head(db, chain_id).await?;
    let chain = chain_id as i64;
    // Read and write under one lock, in one transaction: the starts read are the starts moved.
    let mut tx = db.begin().await?;
    lock_in(&mut tx, Lock::MeterPlan).await?;
    let due = due::services(&mut tx, chain, until, owner).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = due.iter().map(|d| d.service_id).collect();
    let changes = due::histories(&mut tx, chain, &ids, until).await?;

    let until_secs = until.timestamp();
    let mut starts = Vec::with_capacity(due.len());
    let mut carries = Vec::with_capacity(due.len());
    let mut charges = Charges::default();
    for d in &due {
        let history = changes.get(&d.service_id).map_or(&[][..], Vec::as_slice);
        let priced = due::price(d, history, until_secs, per_gib_hour)?;
        starts.push(d.service_id);
        carries.push(priced.carry.to_string());
        if !priced.credits.is_zero() {
            charges.push(
                d,
                priced.credits,
                priced.seconds,
                plan::time_usage_ref(chain_id, d.service_id, d.since.timestamp()),
            );
        }
    }
    sqlx::query!(
        r#"insert into meter_charges
               (chain_id, usage_ref, account, service_id, credits, source, period_start, period_end,
                active_seconds, planned_block)
           select $1, r, a, s, c::numeric, 'time', ps, $6, secs, $7
           from unnest($2::bytea[], $3::bytea[], $4::bigint[], $5::text[], $8::timestamptz[], $9::bigint[])
               as t(r, a, s, c, ps, secs)
           on conflict (chain_id, usage_ref) do nothing"#,
        chain,
        &charges.refs,
        &charges.accounts,
        &charges.services,
        &charges.credits,
        until,
        head_block,
        &charges.starts,
        &charges.seconds,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"insert into meter_services (chain_id, service_id, metered_until, carry)
           select $1, s, $2, c::numeric from unnest($3::bigint[], $4::text[]) as t(s, c)
           on conflict (chain_id, service_id)
           do update set metered_until = excluded.metered_until, carry = excluded.carry"#,
        chain,
        until,
        &starts,
        &carries
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(charges.refs.len())
}

/// Planned time charges, as the columns of one insert.
#[derive(Default)]
struct Charges {
    refs: Vec<Vec<u8>>,
    accounts: Vec<Vec<u8>>,
    services: Vec<i64>,
    credits: Vec<String>,
    starts: Vec<DateTime<Utc>>,
    seconds: Vec<i64>,
}

impl Charges {
    fn push(&mut self, due: &Due, credits: U256, seconds: u64, usage_ref: B256) {
        self.refs.push(usage_ref.to_vec());
        self.accounts.push(due.owner.clone());
        self.services.push(due.service_id);
        self.credits.push(credits.to_string());
        self.starts.push(due.since);
        self.seconds.push(seconds as i64);
    }
}
