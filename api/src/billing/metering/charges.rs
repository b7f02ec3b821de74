//! A charge's way from planned to closed:
//! `pending` → `sending` (its batch written to the chain outbox in the same transaction; the
//! billing key's sender signs, sends, raises fees and follows reorgs) → `sent` (mined) →
//! `charged`, or `deferred` when the ledger skipped it because the service was paused, suspended
//! or expired when the batch ran (sent again by the next cycle once the index shows the service
//! chargeable, so pausing around a cycle never escapes its charge), or `skipped` for a cancelled
//! service.
//!
//! Every node call is bounded in time; a closed charge whose ledger event a reorg removed is
//! opened again. Charges sent before the outbox (a hash, no outbox row) are settled by their
//! receipt or, without one, by the ledger's used references.

use std::{collections::HashMap, time::Duration};

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, U256},
    providers::Provider,
    rpc::types::{TransactionReceipt, TransactionRequest},
    sol_types::SolCall,
};
use anyhow::Context;
use decentraspace_abi::{
    CreditLedger::{self, CreditLedgerErrors},
    PlatformRevert,
};

use super::meter::{Meter, Report};
use crate::chain::{
    ChainError,
    outbox::{Purpose, Row, State, Until, Write},
};

/// How long a batch is waited for before it is left to the next pass.
const RECEIPT_WAIT: Duration = Duration::from_secs(60);
/// The longest one node call may take (a hung node must not hold the meter).
const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// A mined charge not indexed after this is looked up on-chain again (its block may be gone).
const STALE_SENT_SECS: f64 = 600.0;
/// Gas headroom over the estimate: balances move between estimation and inclusion.
const GAS_HEADROOM_PERCENT: u64 = 25;
/// Closed charges younger than this many blocks are checked against the index (reorgs).
const REORG_WINDOW: i64 = 256;

struct Pending {
    id: i64,
    usage_ref: Vec<u8>,
    account: Vec<u8>,
    service_id: i64,
    credits: String,
}

struct Open {
    id: i64,
    usage_ref: Vec<u8>,
    status: String,
    tx_hash: Option<Vec<u8>>,
    outbox_id: Option<i64>,
    age_secs: f64,
}

/// Which batch a handed-over charge went in: its outbox row, or (sent before the outbox) its
/// transaction hash.
type BatchKey = (Option<i64>, Option<Vec<u8>>);

/// How a batch's transaction ended.
struct Ended {
    succeeded: bool,
    tx_hash: B256,
    block_number: Option<u64>,
    gas_used: u64,
}

impl Ended {
    fn of_receipt(receipt: &TransactionReceipt) -> Self {
        Self {
            succeeded: receipt.status(),
            tx_hash: receipt.transaction_hash,
            block_number: receipt.block_number,
            gas_used: receipt.gas_used,
        }
    }

    /// The end of an outbox row, if a receipt ended it.
    fn of_row(row: &Row) -> Option<Self> {
        match (row.state.is_final(), row.tx_hash) {
            (true, Some(tx_hash)) => Some(Self {
                succeeded: row.state != State::Reverted,
                tx_hash,
                block_number: row.block_number,
                gas_used: row.gas_used.unwrap_or(0),
            }),
            _ => None,
        }
    }
}

/// `call` bounded by [`NODE_TIMEOUT`].
async fn bounded<T, E>(
    call: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(NODE_TIMEOUT, call.into_future())
        .await
        .map_err(|_| anyhow::anyhow!("the node did not answer within {NODE_TIMEOUT:?}"))?
        .map_err(anyhow::Error::from)
}

fn deduct_batch(batch: &[Pending]) -> Vec<u8> {
    CreditLedger::deductBatchCall {
        accounts: batch.iter().map(|c| Address::from_slice(&c.account)).collect(),
        serviceIds: batch.iter().map(|c| U256::from(c.service_id as u64)).collect(),
        credits: batch.iter().map(|c| c.credits.parse().unwrap_or_default()).collect(),
        usageRefs: batch.iter().map(|c| B256::from_slice(&c.usage_ref)).collect(),
    }
    .abi_encode()
}

impl Meter {
    /// Sends due charges (pending ones, and deferred ones whose service is chargeable again) in
    /// batches, and waits for their receipts.
    pub(super) async fn send(&self, report: &mut Report) -> anyhow::Result<()> {
        let chain_id = self.chain_id as i64;
        let mut in_flight: Vec<(i64, Vec<i64>)> = Vec::new();
        loop {
            let batch = sqlx::query_as!(
                Pending,
                r#"select m.id, m.usage_ref, m.account, m.service_id, m.credits::text as "credits!"
                   from meter_charges m
                   where m.chain_id = $1
                     and (m.status = 'pending'
                          or (m.status = 'deferred' and exists (
                                select 1 from services s
                                left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
                                where s.chain_id = m.chain_id and s.service_id = m.service_id
                                  and s.state = 'active'
                                  and not (effective_tier(a.tier, a.tier_expires_at, chain_now($1)) = 'free'
                                           and s.expires_at is not null and s.expires_at <= chain_now($1)))))
                   order by m.id limit $2"#,
                chain_id,
                self.batch_size as i64
            )
            .fetch_all(&self.db)
            .await?;
            if batch.is_empty() {
                break;
            }
            let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
            let input = deduct_batch(&batch);
            let Some(gas) = self.estimate(&batch, &input).await? else { continue };
            let write = Write {
                purpose: Purpose::MeterBatch,
                reference: format!("meter:{}", hex::encode(crate::random::reference())),
                account: None,
                to: self.ledger,
                input: input.into(),
                value: U256::ZERO,
                gas_limit: gas + gas * GAS_HEADROOM_PERCENT / 100,
            };
            // The batch and its charges' hand-over commit together: from here on the billing
            // key's sender sends it, whatever happens to this replica. Their ledger events can
            // only be in blocks after the indexed head of this moment.
            let mut tx = self.db.begin().await?;
            let outbox_id = self.outbox.enqueue(&mut tx, self.signer, &write).await?;
            sqlx::query!(
                "update meter_charges
                 set status = 'sending', attempts = attempts + 1, tx_hash = null, nonce = null, fee_bumps = 0,
                     outbox_id = $3,
                     planned_block = greatest(planned_block,
                         coalesce((select block_number from indexer_checkpoints where chain_id = $2), 0)),
                     updated_at = now()
                 where id = any($1)",
                &ids,
                chain_id,
                outbox_id
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            in_flight.push((outbox_id, ids));
        }
        for (outbox_id, ids) in in_flight {
            let row = self.outbox.wait(outbox_id, Until::Mined, RECEIPT_WAIT).await?;
            let Some(ended) = row.as_ref().and_then(Ended::of_row) else { continue };
            if ended.succeeded {
                report.batches += 1;
                report.sent += ids.len();
                report.gas_used += ended.gas_used;
            }
            self.ended(&ids, &ended).await?;
        }
        Ok(())
    }

    /// The gas of a batch, or `None` when the ledger has taken some of its references already
    /// (an earlier send landed after all): those are marked sent, the rest pending again.
    async fn estimate(&self, batch: &[Pending], input: &[u8]) -> anyhow::Result<Option<u64>> {
        let request = TransactionRequest::default()
            .with_from(self.signer)
            .with_to(self.ledger)
            .with_input(input.to_vec());
        let estimated = tokio::time::timeout(NODE_TIMEOUT, self.chain.estimate_gas(request))
            .await
            .map_err(|_| anyhow::anyhow!("no gas estimate within {NODE_TIMEOUT:?}"))?;
        let err = match estimated {
            Ok(gas) => return Ok(Some(gas)),
            Err(err) => err,
        };
        let Some(data) = err.as_error_resp().and_then(|e| e.as_revert_data()) else {
            return Err(err).context("estimate a deductBatch");
        };
        let refusal = ChainError::from_revert_data(data);
        anyhow::ensure!(
            matches!(
                refusal.revert(),
                Some(PlatformRevert::CreditLedger(CreditLedgerErrors::CreditLedgerUsageRefUsed(_)))
            ),
            "the ledger refuses the batch: {refusal}"
        );
        let used =
            self.settle_by_refs(batch.iter().map(|c| (c.id, c.usage_ref.as_slice()))).await?;
        // The node said a reference was used but none reads as used (a node behind another):
        // stop here rather than estimate the same batch again and again.
        anyhow::ensure!(
            used > 0,
            "the ledger refuses the batch ({refusal}) but no reference reads as used"
        );
        Ok(None)
    }

    /// A mined batch's charges are `sent`; a reverted batch's go back to pending.
    async fn ended(&self, ids: &[i64], ended: &Ended) -> anyhow::Result<()> {
        if ended.succeeded {
            sqlx::query!(
                "update meter_charges set status = 'sent', charged_block = $2, tx_hash = $3, updated_at = now()
                 where id = any($1) and status = 'sending'",
                ids,
                ended.block_number.map(|b| b as i64),
                ended.tx_hash.as_slice()
            )
            .execute(&self.db)
            .await?;
            return Ok(());
        }
        tracing::warn!(target: "api::meter", tx = %ended.tx_hash, "a deductBatch reverted; its charges are sent again");
        self.mark(ids, "pending").await
    }

    /// Moves `ids` to `sent` (the ledger has them: wait for the index) or back to `pending`.
    async fn mark(&self, ids: &[i64], status: &str) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "update meter_charges
             set status = $2, tx_hash = case when $2 = 'pending' then null else tx_hash end,
                 outbox_id = case when $2 = 'pending' then null else outbox_id end, updated_at = now()
             where id = any($1)",
            ids,
            status
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Asks the ledger about each charge's reference: those it has taken are `sent` (the index
    /// will close them), the others `pending` again. Returns how many it has taken.
    async fn settle_by_refs<'a>(
        &self,
        charges: impl Iterator<Item = (i64, &'a [u8])>,
    ) -> anyhow::Result<usize> {
        let (mut used, mut unused) = (Vec::new(), Vec::new());
        for (id, usage_ref) in charges {
            if self.ref_used(usage_ref).await? {
                used.push(id);
            } else {
                unused.push(id);
            }
        }
        self.mark(&used, "sent").await?;
        self.mark(&unused, "pending").await?;
        Ok(used.len())
    }

    async fn ref_used(&self, usage_ref: &[u8]) -> anyhow::Result<bool> {
        let ledger = CreditLedger::new(self.ledger, &self.chain);
        bounded(ledger.isUsageRefUsed(B256::from_slice(usage_ref)).call()).await
    }

    /// Charges handed over by a pass that did not finish (a crash, a batch slower than the
    /// wait), and mined charges the index never showed: the batch's outbox row says what
    /// happened (while it is not final, its sender is at work); for charges sent before the
    /// outbox, the receipt, or without one the ledger's used references.
    pub(super) async fn recover(&self) -> anyhow::Result<()> {
        let open = sqlx::query_as!(
            Open,
            r#"select id, usage_ref, status, tx_hash, outbox_id,
                      extract(epoch from now() - updated_at)::float8 as "age_secs!"
               from meter_charges
               where chain_id = $1 and status in ('sending', 'sent')
               order by id"#,
            self.chain_id as i64
        )
        .fetch_all(&self.db)
        .await?;
        let mut by_batch: HashMap<BatchKey, Vec<&Open>> = HashMap::new();
        for charge in &open {
            if charge.status == "sending" || charge.age_secs > STALE_SENT_SECS {
                by_batch
                    .entry((charge.outbox_id, charge.tx_hash.clone()))
                    .or_default()
                    .push(charge);
            }
        }
        for ((outbox_id, tx_hash), charges) in by_batch {
            let ids: Vec<i64> = charges.iter().map(|c| c.id).collect();
            if let Some(outbox_id) = outbox_id {
                let row = self.outbox.row(outbox_id).await?;
                match row.as_ref().map(|r| (r.state, Ended::of_row(r))) {
                    Some((_, Some(ended))) => self.ended(&ids, &ended).await?,
                    // Queued, signed or on the network: its sender finishes it.
                    Some((_, None)) => {}
                    None => {
                        anyhow::bail!("meter charges name outbox row {outbox_id}, which is gone")
                    }
                }
                continue;
            }
            if let Some(hash) = tx_hash.as_deref().map(B256::from_slice) {
                if let Some(receipt) = bounded(self.chain.get_transaction_receipt(hash)).await? {
                    self.ended(&ids, &Ended::of_receipt(&receipt)).await?;
                    continue;
                }
                if bounded(self.chain.get_transaction_by_hash(hash)).await?.is_some() {
                    continue;
                }
            }
            // Never mined, or its hash was not recorded: the ledger's references decide.
            self.settle_by_refs(charges.iter().map(|c| (c.id, c.usage_ref.as_slice()))).await?;
        }
        Ok(())
    }

    /// Closes every handed-over charge whose ledger event is indexed (`charged`, `deferred` or
    /// `skipped`), after opening again any recently closed one whose event a reorg removed.
    /// Nothing is closed while the indexer has set its secondary indexes aside for a backfill
    /// (the lookups would scan every event).
    pub(super) async fn reconcile(&self, report: &mut Report) -> anyhow::Result<()> {
        let chain_id = self.chain_id as i64;
        let backfilling = sqlx::query_scalar!(
            r#"select exists(select 1 from indexer_deferred_indexes) as "backfilling!""#
        )
        .fetch_one(&self.db)
        .await?;
        if backfilling {
            return Ok(());
        }
        sqlx::query!(
            "update meter_charges m set status = 'sent', updated_at = now()
             where m.chain_id = $1 and m.status in ('charged', 'deferred', 'skipped')
               and m.charged_block > coalesce((select block_number from indexer_checkpoints where chain_id = $1), 0) - $2
               and not exists (select 1 from events e
                               where e.chain_id = $1 and e.service_id = m.service_id
                                 and e.block_number = m.charged_block and e.credit_kind is not null
                                 and e.reference = m.usage_ref)",
            chain_id,
            REORG_WINDOW
        )
        .execute(&self.db)
        .await?;
        let closed = sqlx::query!(
            r#"with found as (
                   select m.id, m.service_id, e.credit_kind, e.credits, e.block_number, e.tx_hash
                   from meter_charges m
                   cross join lateral (
                       select e.credit_kind, e.credits, e.block_number, e.tx_hash
                       from events e
                       where e.chain_id = m.chain_id and e.service_id = m.service_id
                         and e.block_number > m.planned_block
                         and e.credit_kind in ('deduction', 'skipped') and e.reference = m.usage_ref
                       order by e.credit_kind = 'deduction' desc, e.block_number desc
                       limit 1
                   ) e
                   where m.chain_id = $1 and m.status in ('sending', 'sent')
               )
               update meter_charges m
               set status = case when f.credit_kind = 'deduction' then 'charged'
                                 when s.state = 'cancelled' then 'skipped'
                                 else 'deferred' end,
                   charged_credits = case when f.credit_kind = 'deduction' then f.credits end,
                   charged_block = f.block_number,
                   tx_hash = f.tx_hash,
                   updated_at = now()
               from found f
               join services s on s.chain_id = $1 and s.service_id = f.service_id
               where m.id = f.id
               returning m.status"#,
            chain_id
        )
        .fetch_all(&self.db)
        .await?;
        for row in closed {
            match row.status.as_str() {
                "charged" => report.charged += 1,
                "deferred" => report.deferred += 1,
                _ => report.skipped += 1,
            }
        }
        Ok(())
    }
}
