//! `make bench-meter`: one billing-meter cycle over `BENCH_SERVICES` (default 10,000) active
//! services on a local anvil (default block gas limit, 30M, as on Polygon PoS), with the indexer
//! following and the clock frozen so every service owes exactly one hour.
//!
//! Times the cycle as the worker runs it (plan every service's hour, send the `deductBatch`
//! transactions, wait for their receipts), then the reconciliation with the indexed ledger, and
//! reports the gas per charged service. Ends with
//! `meter_cycle services=N seconds=S gas_per_service=G`.

use std::time::{Duration, Instant};

use alloy::{
    primitives::{Address, U256, keccak256},
    providers::Provider,
};
use anyhow::Context;
use decentraspace_abi::{AccountRegistry, CreditLedger, ServiceKind, ServiceRegistry, Tier};
use decentraspace_api::{AppState, billing::Meter};
use decentraspace_tests::{
    IndexerTask, Role, TestChain, TestDb, api_config, indexer_config, role_key, wait_for_checkpoint,
};

/// Owners of the services (each runs `BENCH_SERVICES / OWNERS` sites).
const OWNERS: usize = 20;
/// Services opened per round of transactions.
const ROUND: usize = 250;
/// The Paid price of a static site per hour (deploy script default).
const PRICE: u64 = 1_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let services = env_or("BENCH_SERVICES", 10_000);
    let per_owner = services.div_ceil(OWNERS);
    let chain = TestChain::start().await?;
    chain.freeze_time().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;

    let started = Instant::now();
    open_services(&chain, services, per_owner).await?;
    let head = chain.mine_at(chain.time().await? + 3600).await?;
    wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(300)).await?;
    eprintln!("{services} services open and indexed in {:.1} s", started.elapsed().as_secs_f64());

    let mut config = api_config(&chain, &db);
    config.billing_key = Some(role_key(&chain, Role::Billing).into());
    config.meter_batch_size = env_or("METER_BATCH_SIZE", config.meter_batch_size as usize) as u64;
    let batch_size = config.meter_batch_size;
    let meter = Meter::new(&AppState::new(config).await?.billing).context("a billing key")?;

    let started = Instant::now();
    let cycle = meter.cycle().await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        cycle.planned == services && cycle.sent == services,
        "the cycle planned {} and sent {} of {services}",
        cycle.planned,
        cycle.sent
    );

    let started = Instant::now();
    let mut charged = cycle.charged;
    while charged < services {
        let head = chain.reader().get_block_number().await?;
        wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(60)).await?;
        charged += meter.settle().await?.charged;
    }
    let reconcile_seconds = started.elapsed().as_secs_f64();

    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    let debited: U256 = ledger.totalDebited().call().await?;
    anyhow::ensure!(debited == U256::from(services as u64 * PRICE), "debited {debited}");

    let gas_per_service = cycle.gas_used / cycle.sent as u64;
    eprintln!(
        "batches={} (of up to {batch_size}), gas={}, reconciled in {reconcile_seconds:.2} s",
        cycle.batches, cycle.gas_used
    );
    println!(
        "meter_cycle services={services} seconds={seconds:.2} gas_per_service={gas_per_service} batches={} reconcile_seconds={reconcile_seconds:.2}",
        cycle.batches
    );
    Ok(())
}

/// Makes `OWNERS` Paid accounts with credit and opens `services` static sites among them, sent
/// back to back (receipts awaited at the end).
async fn open_services(chain: &TestChain, services: usize, per_owner: usize) -> anyhow::Result<()> {
    let c = chain.deployment.contracts;
    let admin = chain.provider_as(chain.role(Role::Admin));
    let operator = chain.provider_as(chain.role(Role::Operator));
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    ServiceRegistry::new(c.service_registry, &admin)
        .setTierLimit(ServiceKind::StaticHosting.into(), Tier::Paid.into(), per_owner as u32)
        .send()
        .await?
        .get_receipt()
        .await?;
    let accounts = AccountRegistry::new(c.account_registry, &operator);
    let ledger = CreditLedger::new(c.credit_ledger, &oracle);
    let mut owners: Vec<Address> = Vec::new();
    for i in 0..OWNERS {
        let owner = alloy::signers::local::PrivateKeySigner::random().address();
        accounts.registerFor(owner).send().await?.get_receipt().await?;
        accounts.setTier(owner, Tier::Paid.into(), 0).send().await?.get_receipt().await?;
        ledger
            .creditFiat(owner, U256::from(u64::MAX), keccak256(format!("bench-{i}")))
            .send()
            .await?
            .get_receipt()
            .await?;
        owners.push(owner);
    }
    // In rounds of a few hundred, each awaited: a pool of thousands of pending transactions
    // stalls anvil.
    let registry = ServiceRegistry::new(c.service_registry, &operator);
    for first in (0..services).step_by(ROUND) {
        let mut pending = Vec::with_capacity(ROUND);
        for n in first..services.min(first + ROUND) {
            let call = registry
                .createServiceFor(
                    owners[n % OWNERS],
                    ServiceKind::StaticHosting.into(),
                    keccak256(format!("site-{n}")),
                )
                .gas(400_000);
            pending.push(call.send().await?);
        }
        for tx in pending {
            anyhow::ensure!(tx.get_receipt().await?.status(), "createServiceFor reverted");
        }
    }
    Ok(())
}
