//! The billing meter. Each cycle:
//! 1. plans: every service's active time since its last charge, up to the indexed head's block
//!    time (a pause the indexer has not seen yet can never be charged), priced per hour at the
//!    owner's effective tier, and capped at a Free service's expiry. The charges and each
//!    service's new start are written in one transaction, each charge under a usage reference
//!    derived from the service and the span's end;
//! 2. sends the pending charges (time and recorded usage) in `deductBatch` transactions;
//! 3. reconciles them with the indexed `CreditsDeducted` / `DeductionSkipped` events.
//!
//! Charging twice is impossible by construction: the ledger takes a usage reference once, and a
//! batch holding a used reference reverts whole. What the meter's tables add is progress: after a
//! crash, charges handed to the node are looked up (receipt, then each reference on-chain) before
//! anything is sent again. One replica meters at a time (a session advisory lock).

use std::{collections::HashMap, sync::Arc, time::Duration};

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider},
    rpc::types::TransactionRequest,
    sol_types::SolCall,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use decentraspace_abi::CreditLedger;
use sqlx::{Connection, PgPool};

use super::plan::{self, Change};
use crate::{relay::Relayer, state::AppState};

/// Advisory lock key of the meter.
const METER_LOCK: i64 = 0x6473_7061_6365_0200;
/// How often charges still open are followed between cycles.
const SETTLE_EVERY: Duration = Duration::from_secs(3);
/// How long a receipt is waited for before the charge is left to the next pass.
const RECEIPT_WAIT: Duration = Duration::from_secs(60);
/// A mined charge not indexed after this is looked up on-chain again (its block may be gone).
const STALE_SENT_SECS: f64 = 600.0;
/// Gas headroom over the estimate: balances move between estimation and inclusion.
const GAS_HEADROOM_PERCENT: u64 = 25;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Charges planned.
    pub planned: usize,
    /// `deductBatch` transactions mined.
    pub batches: usize,
    /// Charges in those transactions.
    pub sent: usize,
    /// Their gas.
    pub gas_used: u64,
    /// Charges found charged in the indexed ledger.
    pub charged: usize,
    /// Charges the ledger skipped (the service was not chargeable when the batch ran).
    pub skipped: usize,
    /// Whether another replica held the meter (nothing was done).
    pub busy: bool,
}

/// Charges services for their active time through the billing key.
#[derive(Debug, Clone)]
pub struct Meter {
    db: PgPool,
    chain_id: u64,
    ledger: Address,
    chain: DynProvider,
    sender: Arc<Relayer>,
    batch_size: usize,
}

struct Due {
    service_id: i64,
    owner: Vec<u8>,
    since: DateTime<Utc>,
    carry: String,
    cap: Option<DateTime<Utc>>,
    price: Option<String>,
}

struct Open {
    id: i64,
    usage_ref: Vec<u8>,
    status: String,
    tx_hash: Option<Vec<u8>>,
    age_secs: f64,
}

struct Pending {
    id: i64,
    usage_ref: Vec<u8>,
    account: Vec<u8>,
    service_id: i64,
    credits: String,
}

impl Meter {
    /// The meter of `state`, or `None` when no billing key is configured.
    pub fn new(state: &AppState) -> Option<Self> {
        Some(Self {
            db: state.db.clone(),
            chain_id: state.chain_id(),
            ledger: state.deployment.contracts.credit_ledger,
            chain: state.chain.clone(),
            sender: state.billing.clone()?,
            batch_size: state.config.meter_batch_size as usize,
        })
    }

    /// Runs a cycle every `interval` (the first one interval after start) and follows open
    /// charges in between, until the process ends.
    pub async fn run(self, interval: Duration) {
        let mut next_cycle = tokio::time::Instant::now() + interval;
        loop {
            tokio::time::sleep_until(next_cycle.min(tokio::time::Instant::now() + SETTLE_EVERY))
                .await;
            let planning = tokio::time::Instant::now() >= next_cycle;
            if planning {
                next_cycle += interval;
            }
            match self.pass(planning).await {
                Ok(report) if planning => {
                    tracing::info!(target: "api::meter", ?report, "meter cycle done");
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(target: "api::meter", err = format!("{err:#}"), "meter pass failed");
                }
            }
        }
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
        // A connection of its own, closed afterwards: a pass cut short (shutdown) must not leave
        // the lock on a pooled connection.
        let mut lock = self.db.acquire().await?.detach();
        let leader: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(METER_LOCK)
            .fetch_one(&mut lock)
            .await?;
        if !leader {
            return Ok(Report { busy: true, ..Report::default() });
        }
        let mut report = Report::default();
        let done = self.pass_locked(planning, &mut report).await;
        lock.close().await.ok();
        done.map(|()| report)
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

    /// The indexed head: its block number and time.
    async fn indexed_head(&self) -> anyhow::Result<(i64, DateTime<Utc>)> {
        let head = sqlx::query!(
            "select block_number, block_time from indexer_checkpoints where chain_id = $1",
            self.chain_id as i64
        )
        .fetch_optional(&self.db)
        .await?
        .context("nothing is indexed yet")?;
        let time = head.block_time.context("the indexer has not recorded its head's time yet")?;
        Ok((head.block_number, time))
    }

    /// Plans every due service's active time up to the indexed head. Returns how many charges.
    async fn plan(&self) -> anyhow::Result<usize> {
        let (head_block, until) = self.indexed_head().await?;
        let chain_id = self.chain_id as i64;
        let due = sqlx::query_as!(
            Due,
            r#"with due as (
                   select s.service_id, s.owner, s.kind, s.state, s.expires_at,
                          coalesce(m.metered_until, s.created_at) as since,
                          coalesce(m.carry, 0)::text as carry,
                          effective_tier(a.tier, a.tier_expires_at, $2) as tier
                   from services s
                   left join meter_services m on m.chain_id = s.chain_id and m.service_id = s.service_id
                   left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
                   where s.chain_id = $1 and coalesce(m.metered_until, s.created_at) < $2
               )
               select d.service_id as "service_id!", d.owner as "owner!", d.since as "since!",
                      d.carry as "carry!",
                      case when d.tier = 'free' then d.expires_at end as cap,
                      p.credits_per_hour::text as price
               from due d
               left join service_prices p on p.chain_id = $1 and p.kind = d.kind and p.tier = d.tier
               where d.state = 'active'
                  or exists (select 1 from service_state_changes c
                             where c.chain_id = $1 and c.service_id = d.service_id and c.block_time > d.since)
               order by d.service_id"#,
            chain_id,
            until
        )
        .fetch_all(&self.db)
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = due.iter().map(|d| d.service_id).collect();
        let rows = sqlx::query!(
            r#"select service_id, state = 'active' as "active!", extract(epoch from block_time)::bigint as "at!"
               from service_state_changes
               where chain_id = $1 and service_id = any($2) and block_time <= $3
               order by service_id, block_number, log_index"#,
            chain_id,
            &ids,
            until
        )
        .fetch_all(&self.db)
        .await?;
        let mut changes: HashMap<i64, Vec<Change>> = HashMap::new();
        for row in rows {
            changes
                .entry(row.service_id)
                .or_default()
                .push(Change { at: row.at, active: row.active });
        }

        let until_secs = until.timestamp();
        let mut starts = Vec::with_capacity(due.len());
        let mut carries = Vec::with_capacity(due.len());
        let mut charges = Charges::default();
        for d in &due {
            let end = d.cap.map_or(until_secs, |cap| cap.timestamp().min(until_secs));
            let history = changes.get(&d.service_id).map_or(&[][..], Vec::as_slice);
            let seconds = plan::active_seconds(history, d.since.timestamp(), end);
            let price: U256 = d.price.as_deref().unwrap_or("0").parse().context("price")?;
            let carry: U256 = d.carry.parse().context("carry")?;
            let (credits, carry) = plan::charge(price, seconds, carry);
            starts.push(d.service_id);
            carries.push(carry.to_string());
            if !credits.is_zero() {
                charges.push(
                    d,
                    credits,
                    seconds,
                    plan::time_usage_ref(self.chain_id, d.service_id, until_secs),
                );
            }
        }

        let mut tx = self.db.begin().await?;
        sqlx::query!(
            r#"insert into meter_charges
                   (chain_id, usage_ref, account, service_id, credits, source, period_start, period_end,
                    active_seconds, planned_block)
               select $1, r, a, s, c::numeric, 'time', ps, $6, secs, $7
               from unnest($2::bytea[], $3::bytea[], $4::bigint[], $5::text[], $8::timestamptz[], $9::bigint[])
                   as t(r, a, s, c, ps, secs)
               on conflict (chain_id, usage_ref) do nothing"#,
            chain_id,
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
            chain_id,
            until,
            &starts,
            &carries
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(charges.refs.len())
    }

    /// Sends pending charges in batches and waits for their receipts.
    async fn send(&self, report: &mut Report) -> anyhow::Result<()> {
        let chain_id = self.chain_id as i64;
        let mut in_flight: Vec<(B256, Vec<i64>)> = Vec::new();
        loop {
            let batch = sqlx::query_as!(
                Pending,
                r#"select id, usage_ref, account, service_id, credits::text as "credits!"
                   from meter_charges
                   where chain_id = $1 and status = 'pending'
                   order by id limit $2"#,
                chain_id,
                self.batch_size as i64
            )
            .fetch_all(&self.db)
            .await?;
            if batch.is_empty() {
                break;
            }
            let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
            let call = CreditLedger::deductBatchCall {
                accounts: batch.iter().map(|c| Address::from_slice(&c.account)).collect(),
                serviceIds: batch.iter().map(|c| U256::from(c.service_id as u64)).collect(),
                credits: batch.iter().map(|c| c.credits.parse().unwrap_or_default()).collect(),
                usageRefs: batch.iter().map(|c| B256::from_slice(&c.usage_ref)).collect(),
            };
            let input = call.abi_encode();
            let request = TransactionRequest::default()
                .with_from(self.sender.address())
                .with_to(self.ledger)
                .with_input(input.clone());
            let gas = match self.chain.estimate_gas(request).await {
                Ok(gas) => gas,
                Err(err) => {
                    let Some(data) = err.as_error_resp().and_then(|e| e.as_revert_data()) else {
                        return Err(err).context("estimate a deductBatch");
                    };
                    let reason = crate::relay::policy::revert_reason(&data);
                    if reason.contains("UsageRefUsed") {
                        // An earlier send landed after all (a crash hid it): mark what the chain
                        // already took, and send the rest.
                        self.settle_used_refs(&batch).await?;
                        continue;
                    }
                    anyhow::bail!("the ledger refuses the batch: {reason}");
                }
            };
            // Handed to the node from here on: after a crash these are looked up, not re-sent.
            sqlx::query!(
                "update meter_charges set status = 'sending', attempts = attempts + 1, tx_hash = null, updated_at = now()
                 where id = any($1)",
                &ids
            )
            .execute(&self.db)
            .await?;
            let gas = gas + gas * GAS_HEADROOM_PERCENT / 100;
            let sent = self
                .sender
                .send(self.ledger, input.into(), gas, None)
                .await
                .context("send a deductBatch")?;
            sqlx::query!(
                "update meter_charges set tx_hash = $2, updated_at = now() where id = any($1)",
                &ids,
                sent.tx_hash.as_slice()
            )
            .execute(&self.db)
            .await?;
            in_flight.push((sent.tx_hash, ids));
        }
        for (tx_hash, ids) in in_flight {
            let receipt = self.wait_for_receipt(tx_hash).await?;
            let Some(receipt) = receipt else { continue };
            if receipt.status() {
                report.batches += 1;
                report.sent += ids.len();
                report.gas_used += receipt.gas_used;
                self.mark_sent(&ids, receipt.block_number).await?;
            } else {
                tracing::warn!(target: "api::meter", %tx_hash, "a deductBatch reverted; its charges are sent again");
                self.mark_pending(&ids).await?;
            }
        }
        Ok(())
    }

    async fn wait_for_receipt(
        &self,
        tx_hash: B256,
    ) -> anyhow::Result<Option<alloy::rpc::types::TransactionReceipt>> {
        let deadline = tokio::time::Instant::now() + RECEIPT_WAIT;
        loop {
            if let Some(receipt) = self.chain.get_transaction_receipt(tx_hash).await? {
                return Ok(Some(receipt));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn mark_sent(&self, ids: &[i64], block: Option<u64>) -> anyhow::Result<()> {
        sqlx::query!(
            "update meter_charges set status = 'sent', charged_block = $2, updated_at = now()
             where id = any($1) and status = 'sending'",
            ids,
            block.map(|b| b as i64)
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    async fn mark_pending(&self, ids: &[i64]) -> anyhow::Result<()> {
        sqlx::query!(
            "update meter_charges set status = 'pending', tx_hash = null, updated_at = now()
             where id = any($1) and status in ('sending', 'sent')",
            ids
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Asks the ledger, reference by reference, which of `batch` it has taken: those wait for the
    /// indexer, the others go back to pending.
    async fn settle_used_refs(&self, batch: &[Pending]) -> anyhow::Result<()> {
        let (mut used, mut unused) = (Vec::new(), Vec::new());
        for charge in batch {
            if self.ref_used(&charge.usage_ref).await? {
                used.push(charge.id);
            } else {
                unused.push(charge.id);
            }
        }
        sqlx::query!(
            "update meter_charges set status = 'sent', updated_at = now() where id = any($1)",
            &used
        )
        .execute(&self.db)
        .await?;
        self.mark_pending(&unused).await
    }

    async fn ref_used(&self, usage_ref: &[u8]) -> anyhow::Result<bool> {
        Ok(CreditLedger::new(self.ledger, &self.chain)
            .isUsageRefUsed(B256::from_slice(usage_ref))
            .call()
            .await?)
    }

    /// Charges handed to the node by a pass that did not finish (a crash, a node that did not
    /// answer), and mined charges the indexer never showed: the receipt says what happened; without
    /// one, the ledger's used references do.
    async fn recover(&self) -> anyhow::Result<()> {
        let open = sqlx::query_as!(
            Open,
            r#"select id, usage_ref, status, tx_hash,
                      extract(epoch from now() - updated_at)::float8 as "age_secs!"
               from meter_charges
               where chain_id = $1 and status in ('sending', 'sent')
               order by id"#,
            self.chain_id as i64
        )
        .fetch_all(&self.db)
        .await?;
        let mut by_tx: HashMap<Option<Vec<u8>>, Vec<&Open>> = HashMap::new();
        for charge in &open {
            if charge.status == "sending" || charge.age_secs > STALE_SENT_SECS {
                by_tx.entry(charge.tx_hash.clone()).or_default().push(charge);
            }
        }
        for (tx_hash, charges) in by_tx {
            let ids: Vec<i64> = charges.iter().map(|c| c.id).collect();
            if let Some(hash) = tx_hash.as_deref().map(B256::from_slice) {
                if let Some(receipt) = self.chain.get_transaction_receipt(hash).await? {
                    if receipt.status() {
                        self.mark_sent(&ids, receipt.block_number).await?;
                    } else {
                        self.mark_pending(&ids).await?;
                    }
                    continue;
                }
                if self.chain.get_transaction_by_hash(hash).await?.is_some() {
                    // Still waiting to be mined.
                    continue;
                }
            }
            // Never mined, or its hash was not recorded: the ledger's references decide.
            let mut used = Vec::new();
            let mut unused = Vec::new();
            for charge in charges {
                if self.ref_used(&charge.usage_ref).await? {
                    used.push(charge.id);
                } else {
                    unused.push(charge.id);
                }
            }
            sqlx::query!(
                "update meter_charges set status = 'sent', updated_at = now() where id = any($1)",
                &used
            )
            .execute(&self.db)
            .await?;
            self.mark_pending(&unused).await?;
        }
        Ok(())
    }

    /// Closes every handed-over charge whose ledger event is indexed: `charged` with what the
    /// ledger took, or `skipped`.
    async fn reconcile(&self, report: &mut Report) -> anyhow::Result<()> {
        let closed = sqlx::query!(
            r#"with found as (
                   select m.id, e.credit_kind, e.credits, e.block_number, e.tx_hash
                   from meter_charges m
                   cross join lateral (
                       select e.credit_kind, e.credits, e.block_number, e.tx_hash
                       from events e
                       where e.chain_id = m.chain_id and e.service_id = m.service_id
                         and e.block_number > m.planned_block
                         and e.credit_kind in ('deduction', 'skipped') and e.reference = m.usage_ref
                       order by e.credit_kind = 'deduction' desc, e.block_number
                       limit 1
                   ) e
                   where m.chain_id = $1 and m.status in ('sending', 'sent')
               )
               update meter_charges m
               set status = case when f.credit_kind = 'deduction' then 'charged' else 'skipped' end,
                   charged_credits = case when f.credit_kind = 'deduction' then f.credits end,
                   charged_block = f.block_number,
                   tx_hash = f.tx_hash,
                   updated_at = now()
               from found f
               where m.id = f.id
               returning m.status"#,
            self.chain_id as i64
        )
        .fetch_all(&self.db)
        .await?;
        for row in closed {
            if row.status == "charged" {
                report.charged += 1;
            } else {
                report.skipped += 1;
            }
        }
        Ok(())
    }
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
