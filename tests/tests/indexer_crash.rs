//! The indexer binary under crashes and fail-over, against real anvil and real Postgres:
//! - kill -9 at random points of a backfill of more than 100,000 events, restarted each time: every
//!   platform log ends up in `events` exactly once, the projections agree with the chain;
//! - two instances on one chain and database: one leads, the other waits on the advisory lock and
//!   takes over when the leader is killed, missing and duplicating nothing.

use std::time::{Duration, Instant};

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, U256, keccak256},
    providers::{DynProvider, Provider},
    rpc::types::{Filter, Log, TransactionRequest},
    sol_types::{SolCall, SolEvent},
};
use anyhow::{Context, bail, ensure};
use decentraspace_abi::{AccountRegistry, CreditLedger, ServiceKind, ServiceRegistry, Tier};
use decentraspace_indexer::Config;
use decentraspace_tests::{
    IndexerProcess, Role, TestChain, TestDb, free_port, indexer_config, wait_for_checkpoint,
};
use sqlx::PgConnection;

/// Max fee per gas for every transaction the test sends (anvil starts at a 1 gwei base fee).
const MAX_FEE: u128 = 20_000_000_000;

/// A reproducible pseudo-random sequence (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Sends raw calls as one role holder with nonces counted locally and fixed gas, so that many
/// transactions go out without waiting for each other's receipts.
struct Sender {
    provider: DynProvider,
    from: Address,
    nonce: u64,
    sent: Vec<B256>,
}

impl Sender {
    async fn new(chain: &TestChain, role: Role) -> anyhow::Result<Self> {
        let signer = chain.role(role);
        let from = signer.address();
        let provider = chain.provider_as(signer);
        let nonce = provider.get_transaction_count(from).pending().await?;
        Ok(Self { provider, from, nonce, sent: Vec::new() })
    }

    /// Sends `call` to `to` with `gas` and returns at once.
    async fn send(&mut self, to: Address, call: impl SolCall, gas: u64) -> anyhow::Result<B256> {
        let tx = TransactionRequest::default()
            .with_from(self.from)
            .with_to(to)
            .with_input(call.abi_encode())
            .with_nonce(self.nonce)
            .with_gas_limit(gas)
            .with_max_fee_per_gas(MAX_FEE)
            .with_max_priority_fee_per_gas(1);
        let hash = *self.provider.send_transaction(tx).await?.tx_hash();
        self.nonce += 1;
        self.sent.push(hash);
        Ok(hash)
    }

    /// Waits for every transaction sent so far and checks that each succeeded.
    async fn settle(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for hash in std::mem::take(&mut self.sent) {
            loop {
                if let Some(receipt) = self.provider.get_transaction_receipt(hash).await? {
                    ensure!(receipt.status(), "transaction {hash} reverted");
                    break;
                }
                if Instant::now() > deadline {
                    bail!("transaction {hash} not mined within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

/// Accounts the platform bills in these tests: registered, Paid and funded by the platform's
/// role holders (they need no keys of their own), each with one active static site.
struct Customers {
    accounts: Vec<Address>,
    services: Vec<U256>,
}

impl Customers {
    async fn create(chain: &TestChain, n: usize, tag: &str) -> anyhow::Result<Self> {
        let c = chain.deployment.contracts;
        let accounts: Vec<Address> =
            (0..n).map(|i| Address::from_word(keccak256(format!("{tag}-account-{i}")))).collect();
        // The credit first: a Paid site opens only with its first hour in the balance.
        let mut oracle = Sender::new(chain, Role::PaymentOracle).await?;
        for (i, &account) in accounts.iter().enumerate() {
            oracle
                .send(
                    c.credit_ledger,
                    CreditLedger::creditFiatCall {
                        account,
                        credits: U256::from(1_000_000_000_u64),
                        paymentRef: keccak256(format!("{tag}-payment-{i}")),
                    },
                    300_000,
                )
                .await?;
        }
        oracle.settle(Duration::from_secs(30)).await?;
        let mut operator = Sender::new(chain, Role::Operator).await?;
        for (i, &account) in accounts.iter().enumerate() {
            operator
                .send(c.account_registry, AccountRegistry::registerForCall { account }, 300_000)
                .await?;
            operator
                .send(
                    c.account_registry,
                    AccountRegistry::setTierCall { account, tier: Tier::Paid.into(), expiresAt: 0 },
                    300_000,
                )
                .await?;
            operator
                .send(
                    c.service_registry,
                    ServiceRegistry::createServiceForCall {
                        owner: account,
                        kind: ServiceKind::StaticHosting.into(),
                        r#ref: keccak256(format!("{tag}-site-{i}")),
                    },
                    500_000,
                )
                .await?;
        }
        operator.settle(Duration::from_secs(30)).await?;
        // Read each account's service back rather than assuming the ids.
        let registry = ServiceRegistry::new(c.service_registry, chain.reader());
        let count: u64 = registry.serviceCount().call().await?.try_into()?;
        let mut services = vec![U256::ZERO; n];
        for id in 1..=count {
            let s = registry.serviceOf(U256::from(id)).call().await?;
            if let Some(i) = accounts.iter().position(|a| *a == s.owner) {
                services[i] = U256::from(id);
            }
        }
        ensure!(services.iter().all(|s| !s.is_zero()), "every account has a service");
        Ok(Self { accounts, services })
    }
}

/// Sends `txs` `deductBatch` transactions of `items` deductions of 1 credit each, spread over the
/// customers, with usage references unique across calls (numbered from `first_ref`), and waits
/// for them. Returns the next free reference number.
async fn deduct_batches(
    chain: &TestChain,
    customers: &Customers,
    txs: usize,
    items: usize,
    first_ref: u64,
) -> anyhow::Result<u64> {
    let ledger = chain.deployment.contracts.credit_ledger;
    let mut billing = Sender::new(chain, Role::Billing).await?;
    let n = customers.accounts.len();
    let mut next_ref = first_ref;
    let mut gas = None;
    for _ in 0..txs {
        let call = CreditLedger::deductBatchCall {
            accounts: (0..items).map(|i| customers.accounts[i % n]).collect(),
            serviceIds: (0..items).map(|i| customers.services[i % n]).collect(),
            credits: vec![U256::from(1); items],
            usageRefs: (0..items as u64).map(|i| B256::from(U256::from(next_ref + i))).collect(),
        };
        next_ref += items as u64;
        let gas = match gas {
            Some(gas) => gas,
            None => {
                // Every batch of this size costs the same: estimate once, with room to spare.
                let estimate = billing
                    .provider
                    .estimate_gas(
                        TransactionRequest::default()
                            .with_from(billing.from)
                            .with_to(ledger)
                            .with_input(call.abi_encode()),
                    )
                    .await
                    .context("estimate a deduction batch")?;
                *gas.insert(estimate + estimate / 4)
            }
        };
        billing.send(ledger, call, gas).await?;
    }
    billing.settle(Duration::from_secs(60)).await?;
    Ok(next_ref)
}

/// Every log of the platform contracts from the deploy block to `head`, in chain order.
async fn platform_logs(chain: &TestChain, head: u64) -> anyhow::Result<Vec<Log>> {
    let filter = Filter::new()
        .address(chain.deployment.contracts.registries().to_vec())
        .from_block(chain.deployment.deploy_block)
        .to_block(head);
    let mut logs = chain.reader().get_logs(&filter).await?;
    logs.sort_by_key(|l| (l.block_number, l.log_index));
    Ok(logs)
}

/// A log's position and transaction, as the events table keys and records it.
fn position(log: &Log) -> (i64, i32, Vec<u8>) {
    (
        log.block_number.expect("mined log") as i64,
        log.log_index.expect("mined log") as i32,
        log.transaction_hash.expect("mined log").to_vec(),
    )
}

/// Whether a log becomes a `credit_entries` row.
fn is_credit_entry(log: &Log, chain: &TestChain) -> bool {
    log.address() == chain.deployment.contracts.credit_ledger
        && log.topic0().is_some_and(|t| {
            [
                CreditLedger::CreditsRecharged::SIGNATURE_HASH,
                CreditLedger::FiatCredited::SIGNATURE_HASH,
                CreditLedger::CreditsDeducted::SIGNATURE_HASH,
                CreditLedger::DeductionSkipped::SIGNATURE_HASH,
            ]
            .contains(t)
        })
}

/// The checkpoint, if any.
async fn checkpoint(conn: &mut PgConnection, chain_id: u64) -> anyhow::Result<Option<u64>> {
    let block: Option<i64> =
        sqlx::query_scalar("select block_number from indexer_checkpoints where chain_id = $1")
            .bind(chain_id as i64)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(block.map(|b| b as u64))
}

/// How many rows `table` holds for the chain.
async fn rows(conn: &mut PgConnection, table: &str, chain_id: u64) -> anyhow::Result<i64> {
    let sql = format!("select count(*) from {table} where chain_id = $1");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(chain_id as i64)
        .fetch_one(&mut *conn)
        .await?)
}

/// Checks that what is indexed is exactly what the chain holds up to the checkpoint: after any
/// crash, the events and credit entries are those of the blocks up to the checkpoint, no more, no
/// fewer. Returns the checkpoint.
async fn assert_consistent(
    conn: &mut PgConnection,
    chain: &TestChain,
    logs: &[Log],
    when: &str,
) -> anyhow::Result<Option<u64>> {
    let chain_id = chain.chain_id();
    // One snapshot for the checkpoint and the counts: another indexer (a standby taking over)
    // may commit between two statements.
    sqlx::query("begin transaction isolation level repeatable read read only")
        .execute(&mut *conn)
        .await?;
    let at = checkpoint(conn, chain_id).await?;
    let upto = |l: &&Log| at.is_some_and(|c| l.block_number.expect("mined log") <= c);
    let expected_events = logs.iter().filter(upto).count() as i64;
    let expected_entries = logs.iter().filter(upto).filter(|l| is_credit_entry(l, chain)).count();
    let events = rows(conn, "events", chain_id).await?;
    let entries = rows(conn, "credit_entries", chain_id).await?;
    sqlx::query("commit").execute(&mut *conn).await?;
    assert_eq!(
        events, expected_events,
        "{when}: checkpoint {at:?}, events indexed vs platform logs up to it"
    );
    assert_eq!(
        entries, expected_entries as i64,
        "{when}: checkpoint {at:?}, credit entries vs ledger logs up to it"
    );
    Ok(at)
}

/// The final checks once the checkpoint is at `head`: every platform log exactly once (same
/// positions and transactions), credit entries one per ledger movement, deductions summing to the
/// ledger's total, and `verify` finding no difference with the chain.
async fn assert_complete(
    conn: &mut PgConnection,
    chain: &TestChain,
    head: u64,
) -> anyhow::Result<usize> {
    let chain_id = chain.chain_id();
    let logs = platform_logs(chain, head).await?;
    assert_eq!(checkpoint(conn, chain_id).await?, Some(head), "checkpoint at the head");
    assert_consistent(conn, chain, &logs, "at the end").await?;
    let indexed: Vec<(i64, i32, Vec<u8>)> = sqlx::query_as(
        "select block_number, log_index, tx_hash from events where chain_id = $1 \
         order by block_number, log_index",
    )
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    let expected: Vec<(i64, i32, Vec<u8>)> = logs.iter().map(position).collect();
    assert_eq!(indexed.len(), expected.len(), "one events row per platform log");
    if let Some(i) = (0..expected.len()).find(|&i| indexed[i] != expected[i]) {
        panic!(
            "events differ from the chain's logs first at #{i}: {:?} vs {:?}",
            indexed[i], expected[i]
        );
    }
    // Deductions: one entry per CreditsDeducted log, summing to what the ledger says it debited.
    let deducted_logs = logs
        .iter()
        .filter(|l| l.topic0() == Some(&CreditLedger::CreditsDeducted::SIGNATURE_HASH))
        .count() as i64;
    let (deductions, sum): (i64, String) = sqlx::query_as(
        "select count(*), coalesce(sum(credits), 0)::text from credit_entries \
         where chain_id = $1 and kind = 'deduction'",
    )
    .bind(chain_id as i64)
    .fetch_one(&mut *conn)
    .await?;
    assert_eq!(deductions, deducted_logs, "one deduction entry per CreditsDeducted log");
    let debited = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader())
        .totalDebited()
        .block(head.into())
        .call()
        .await?;
    assert_eq!(sum, debited.to_string(), "indexed deductions sum to the ledger's totalDebited");
    // Each account's last movement records the balance the ledger holds for it.
    let last_balances: Vec<(Vec<u8>, String)> = sqlx::query_as(
        "select distinct on (account) account, balance_after::text from credit_entries \
         where chain_id = $1 and balance_after is not null \
         order by account, block_number desc, log_index desc",
    )
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    assert!(!last_balances.is_empty(), "no ledger movement recorded a balance");
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    for (account, indexed) in last_balances {
        let account = alloy::primitives::Address::from_slice(&account);
        let on_chain = ledger.balanceOf(account).block(head.into()).call().await?;
        assert_eq!(indexed, on_chain.to_string(), "balance after {account}'s last movement");
    }
    let report =
        decentraspace_indexer::verify::verify(conn, &chain.endpoint(), &chain.deployment).await?;
    assert_eq!(report.block, head);
    assert!(report.checked > 0, "verify compared nothing");
    assert!(report.differences.is_empty(), "verify found differences: {:#?}", report.differences);
    Ok(logs.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_of_a_100k_event_backfill_loses_and_duplicates_nothing()
-> anyhow::Result<()> {
    const ACCOUNTS: usize = 10;
    const TXS: usize = 52;
    const ITEMS: usize = 2_000;
    const KILLS: usize = 12;
    const APP: &str = "indexer-crash";

    let started = Instant::now();
    let chain = TestChain::start_with(&["--gas-limit", "1000000000"]).await?;
    let db = TestDb::create().await?;
    let customers = Customers::create(&chain, ACCOUNTS, "crash").await?;
    deduct_batches(&chain, &customers, TXS, ITEMS, 1).await?;
    let head = chain.reader().get_block_number().await?;
    let logs = platform_logs(&chain, head).await?;
    assert!(logs.len() >= 100_000, "only {} platform events generated", logs.len());
    println!(
        "generated {} platform events in blocks {}..={head} in {:?}",
        logs.len(),
        chain.deployment.deploy_block,
        started.elapsed()
    );

    // Small batches over single-block ranges: many transactions for the kills to interrupt.
    // Every batch also sets the secondary indexes aside, so kills land while they are deferred.
    let config = Config {
        batch_events: 5_000,
        defer_indexes_at: 5_000,
        max_block_range: 1,
        database_url: named(&db.url, APP),
        ..indexer_config(&chain, &db, 0)
    };
    let mut conn = db.connect().await?;
    let mut mid_write = 0;
    let mut rng = Rng(0x000d_ec0a_5bac_e001);
    let start = chain.deployment.deploy_block;
    let mut mid_backfill = 0;
    let mut indexes_deferred = 0;
    for kill in 1..=KILLS {
        // Each run must move the checkpoint forward by a random part of what is left, so the
        // kills spread over the backfill however fast it runs. Every other kill then waits for a
        // write transaction to be open (rows written, not committed) and lands inside it; the
        // rest land a random few milliseconds later, wherever the indexer is.
        let current = checkpoint(&mut conn, chain.chain_id()).await?.unwrap_or(start);
        let step = ((head - current) / (KILLS - kill + 2) as u64).max(1);
        let target = current + rng.between(1, step);
        let mut indexer = IndexerProcess::spawn(&config, "run")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while checkpoint(&mut conn, chain.chain_id()).await?.is_none_or(|c| c < target) {
            if Instant::now() > deadline {
                bail!("the indexer did not pass block {target} before kill {kill}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let aim_at_write = kill % 2 == 0;
        let delay = if aim_at_write { 0 } else { rng.between(0, 40) };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        // Whether the indexer's session is inside a transaction that has written rows (it has a
        // transaction id) just before the kill: a kill there must roll the whole batch back.
        let mut writing = false;
        while !writing && Instant::now() < deadline {
            writing = sqlx::query_scalar(
                "select exists (select 1 from pg_stat_activity \
                 where application_name = $1 and backend_xid is not null)",
            )
            .bind(APP)
            .fetch_one(&mut conn)
            .await?;
            if !aim_at_write || checkpoint(&mut conn, chain.chain_id()).await? >= Some(head) {
                break;
            }
        }
        if let Some(status) = indexer.child.try_wait()? {
            bail!("the indexer exited by itself ({status}) before kill {kill}");
        }
        indexer.kill9();
        let at = assert_consistent(&mut conn, &chain, &logs, &format!("after kill {kill}")).await?;
        let mid = at.is_some_and(|c| c > start && c < head);
        mid_backfill += usize::from(mid);
        let deferred: i64 = sqlx::query_scalar("select count(*) from indexer_deferred_indexes")
            .fetch_one(&mut conn)
            .await?;
        indexes_deferred += usize::from(deferred > 0);
        mid_write += usize::from(writing);
        println!(
            "kill {kill:>2}: {delay:>2} ms after block {target}, checkpoint {at:?} of {start}..={head}{}{}",
            if mid { ", mid-backfill" } else { "" },
            if writing { ", inside a write transaction" } else { "" },
        );
    }
    println!(
        "{mid_backfill} kills mid-backfill, {mid_write} inside a write transaction, \
         {indexes_deferred} with the secondary indexes set aside"
    );
    assert!(mid_backfill >= 3, "only {mid_backfill} of {KILLS} kills interrupted the backfill");
    assert!(mid_write >= 1, "no kill landed inside a write transaction");
    assert!(indexes_deferred >= 1, "no kill landed while the indexes were set aside");

    let _indexer = IndexerProcess::spawn(&config, "run")?;
    wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(60)).await?;
    let events = assert_complete(&mut conn, &chain, head).await?;
    // Every secondary index is back once the backfill has caught up: the same ones a freshly
    // migrated database has.
    let secondary_indexes = async |conn: &mut sqlx::PgConnection| {
        let mut names: Vec<String> = sqlx::query_scalar(
            "select indexname::text from pg_indexes \
             where tablename in ('events', 'service_state_changes') and indexname not like '%pkey'",
        )
        .fetch_all(conn)
        .await?;
        names.sort();
        anyhow::Ok(names)
    };
    let fresh = TestDb::create().await?;
    let expected = secondary_indexes(&mut fresh.connect().await?).await?;
    assert!(expected.len() >= 4, "the schema's secondary indexes: {expected:?}");
    assert_eq!(secondary_indexes(&mut conn).await?, expected);
    println!("{events} events indexed exactly once; total {:?}", started.elapsed());
    Ok(())
}

/// `url` with `application_name` set, so that each indexer's Postgres session can be told apart.
fn named(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// The advisory locks of this database, as (application name, granted), granted first.
async fn advisory_locks(
    conn: &mut PgConnection,
    chain_id: u64,
) -> anyhow::Result<Vec<(String, bool)>> {
    // The writer's lock only: sqlx takes an advisory lock of its own while migrating, which
    // would read as one indexer holding and the other waiting.
    let key = decentraspace_db::locks::Lock::IndexerWriter { chain_id }.key();
    Ok(sqlx::query_as(
        "select a.application_name, l.granted from pg_locks l \
         join pg_stat_activity a on a.pid = l.pid \
         where l.locktype = 'advisory' \
           and l.database = (select oid from pg_database where datname = current_database()) \
           and l.classid::bigint = $1 and l.objid::bigint = $2 and l.objsubid = 1 \
         order by l.granted desc, a.application_name",
    )
    .bind(key >> 32)
    .bind(key & 0xffff_ffff)
    .fetch_all(&mut *conn)
    .await?)
}

/// Waits until the advisory locks are exactly `want`.
async fn wait_for_locks(
    conn: &mut PgConnection,
    chain_id: u64,
    want: impl Fn(&[(String, bool)]) -> bool,
    what: &str,
) -> anyhow::Result<Vec<(String, bool)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let locks = advisory_locks(conn, chain_id).await?;
        if want(&locks) {
            return Ok(locks);
        }
        if Instant::now() > deadline {
            bail!("{what}: advisory locks are {locks:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_a_killed_leader_missing_and_duplicating_nothing()
-> anyhow::Result<()> {
    let started = Instant::now();
    let chain = TestChain::start_with(&["--gas-limit", "1000000000"]).await?;
    let db = TestDb::create().await?;
    let customers = Customers::create(&chain, 4, "ha").await?;
    let next_ref = deduct_batches(&chain, &customers, 10, 1_000, 1).await?;
    let head = chain.reader().get_block_number().await?;
    // Each with its operations listener: metrics, health and readiness.
    let ops = [free_port()?, free_port()?];
    let ops_of = |name: &str| ops[usize::from(name == "indexer-b")];
    let config = |name: &str| Config {
        batch_events: 1_000,
        max_block_range: 1,
        database_url: named(&db.url, name),
        metrics_addr: Some(([127, 0, 0, 1], ops_of(name)).into()),
        ..indexer_config(&chain, &db, 0)
    };
    let http = reqwest::Client::new();
    // What `name`'s `/ready` says, and its `indexer_leader` gauge.
    let role = |name: &str| {
        let (http, port) = (http.clone(), ops_of(name));
        async move {
            let ready = http.get(format!("http://127.0.0.1:{port}/ready")).send().await?;
            let status = ready.status().as_u16();
            let body: serde_json::Value = ready.json().await?;
            let metrics =
                http.get(format!("http://127.0.0.1:{port}/metrics")).send().await?.text().await?;
            let leader =
                metrics.lines().find_map(|l| l.strip_prefix("indexer_leader ")).map(str::to_owned);
            anyhow::Ok((
                status,
                body["role"].as_str().unwrap_or_default().to_owned(),
                leader,
                metrics,
            ))
        }
    };
    let mut conn = db.connect().await?;

    // Both start together: one takes the lock, the other waits for it.
    let mut a = IndexerProcess::spawn(&config("indexer-a"), "run")?;
    let mut b = IndexerProcess::spawn(&config("indexer-b"), "run")?;
    let locks = wait_for_locks(
        &mut conn,
        chain.chain_id(),
        |l| l.len() == 2 && l[0].1 && !l[1].1 && l[0].0 != l[1].0,
        "one leader and one standby",
    )
    .await?;
    let leader = locks[0].0.clone();
    println!("{leader} leads, {} stands by", locks[1].0);
    // Each says which it is: the writer (ready once it has read the head), the standby (ready to
    // take over); the writer's timings are histograms with buckets, which add up across replicas.
    let mut said = None;
    for _ in 0..100 {
        let (writer, standby) = (role(&leader).await?, role(&locks[1].0).await?);
        if writer.0 == 200 && writer.2.as_deref() == Some("1") {
            said = Some((writer, standby));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (writer, standby) = said.context("the writer's /ready and indexer_leader")?;
    assert_eq!(writer.1, "writer");
    assert_eq!((standby.0, standby.1.as_str(), standby.2.as_deref()), (200, "standby", Some("0")));
    for port in ops {
        let health = http.get(format!("http://127.0.0.1:{port}/health")).send().await?;
        assert_eq!(health.status().as_u16(), 200);
    }
    // Kill the leader as soon as it has committed something, most likely mid-backfill.
    let start = chain.deployment.deploy_block;
    wait_for_checkpoint(&db, chain.chain_id(), start + 1, Duration::from_secs(30)).await?;
    assert_eq!(
        advisory_locks(&mut conn, chain.chain_id()).await?,
        locks,
        "the same leader and standby throughout; indexer-a logged:\n{}\nindexer-b logged:\n{}",
        a.log(),
        b.log()
    );

    // Kill the leader; events keep coming on-chain; the standby must pick them up.
    let (killed, standby, standby_name) = if leader == "indexer-a" {
        (&mut a, &mut b, "indexer-b")
    } else {
        (&mut b, &mut a, "indexer-a")
    };
    killed.kill9();
    let logs = platform_logs(&chain, head).await?;
    let at = assert_consistent(&mut conn, &chain, &logs, "leader killed").await?;
    println!("leader killed at checkpoint {at:?} of {start}..={head}");
    let mut operator = Sender::new(&chain, Role::Operator).await?;
    operator
        .send(
            chain.deployment.contracts.service_registry,
            ServiceRegistry::suspendCall { serviceId: customers.services[0] },
            300_000,
        )
        .await?;
    operator.settle(Duration::from_secs(10)).await?;
    // The suspended service's items are skipped, the others charged.
    deduct_batches(&chain, &customers, 5, 1_000, next_ref).await?;
    let new_head = chain.reader().get_block_number().await?;
    wait_for_checkpoint(&db, chain.chain_id(), new_head, Duration::from_secs(30)).await?;
    let locks = advisory_locks(&mut conn, chain.chain_id()).await?;
    assert_eq!(locks, [(standby_name.to_owned(), true)], "the standby leads alone");
    assert!(standby.child.try_wait()?.is_none(), "the new leader is running");
    let (status, now, gauge, metrics) = role(standby_name).await?;
    assert_eq!((status, now.as_str(), gauge.as_deref()), (200, "writer", Some("1")));
    assert!(metrics.contains("indexer_batch_seconds_bucket{le="), "histograms with buckets");

    // The killed one comes back and now stands by.
    let restarted_name = if standby_name == "indexer-a" { "indexer-b" } else { "indexer-a" };
    let _restarted = IndexerProcess::spawn(&config(restarted_name), "run")?;
    wait_for_locks(
        &mut conn,
        chain.chain_id(),
        |l| l == [(standby_name.to_owned(), true), (restarted_name.to_owned(), false)],
        "the restarted instance stands by",
    )
    .await?;

    let events = assert_complete(&mut conn, &chain, new_head).await?;
    let skipped: i64 = sqlx::query_scalar(
        "select count(*) from credit_entries where chain_id = $1 and kind = 'skipped'",
    )
    .bind(chain.chain_id() as i64)
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(skipped, 5 * 1_000 / 4, "the suspended service's items were skipped");
    println!(
        "{events} events indexed exactly once across the fail-over; total {:?}",
        started.elapsed()
    );
    Ok(())
}
