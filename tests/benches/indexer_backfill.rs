//! `make bench-indexer`: indexer backfill throughput and head latency against a local anvil.
//!
//! Generates `BENCH_EVENTS` (default 1,000,000) `CreditsDeducted` events through `deductBatch`
//! (`BENCH_BATCH` items per transaction, default 5,000), then times:
//! - the floor: plain `eth_getLogs` over the same blocks, same chunking, no database;
//! - the indexer binary (release) from process start until its checkpoint reaches the last block,
//!   with its peak RSS and the CPU time the indexer, anvil and Postgres used meanwhile
//!   (`BENCH_RUNS=n` repeats it on fresh databases and reports the medians);
//! - `indexer reindex` over what the last backfill stored;
//! - head latency over a websocket (measured first, on a database of its own): each of 200
//!   single-event transactions, from its submission
//!   (anvil mines on submission) to the indexer's NOTIFY covering its block (the rows are committed
//!   when NOTIFY is delivered).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::Provider,
    rpc::types::Filter,
};
use anyhow::Context;
use decentraspace_abi::{AccountRegistry, CreditLedger, ServiceKind, ServiceRegistry, Tier};
use decentraspace_tests::{Role, TestChain, TestDb, wait_for_checkpoint};
use futures::{StreamExt, stream};

const ACCOUNTS: usize = 10;
/// Blocks per `eth_getLogs`: each block holds one batch, so this keeps replies at tens of MB.
const BLOCK_RANGE: u64 = 4;
const FETCH_CONCURRENCY: usize = 2;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // BENCH_LOG=indexer=debug shows the in-process indexer's steps (head-latency phase).
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let events = env_or("BENCH_EVENTS", 1_000_000);
    let batch = env_or("BENCH_BATCH", 5_000);
    let chain =
        TestChain::start_with(&["--gas-limit", "500000000", "--disable-code-size-limit"]).await?;

    // Head latency first, on a database of its own, while the chain is small.
    let latency_db = TestDb::create().await?;
    let (p50, p99) = head_latency(&chain, &latency_db, 200).await?;
    drop(latency_db);

    let (first, last) = generate(&chain, events, batch).await?;
    eprintln!("generated {events} events in blocks {first}..={last}");

    let floor = getlogs_floor(&chain, first, last).await?;
    eprintln!("getLogs floor: {floor:.2} s");

    // BENCH_RUNS repeats the backfill on fresh databases over the same chain; the figures are
    // the runs' medians (peak RSS: the largest).
    let runs = env_or("BENCH_RUNS", 1).max(1);
    let mut results = Vec::with_capacity(runs);
    let mut db = TestDb::create().await?;
    for run in 1..=runs {
        if run > 1 {
            db = TestDb::create().await?;
        }
        let result = backfill(&chain, &db, last).await?;
        eprintln!(
            "run {run}: {:.2} s, peak RSS {} MB, CPU seconds: indexer {:.2}, anvil {:.2}, postgres {:.2}",
            result.seconds,
            result.peak_rss_mb,
            result.cpu.indexer,
            result.cpu.anvil,
            result.cpu.postgres
        );
        results.push(result);
    }
    let median = |f: fn(&Backfill) -> f64| {
        let mut values: Vec<f64> = results.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let seconds = median(|r| r.seconds);
    let peak_rss_mb = results.iter().map(|r| r.peak_rss_mb).max().unwrap_or(0);
    let rate = events as f64 / seconds;
    let reindex_seconds = reindex(&chain, &db)?;
    println!("indexer_reindex events={events} seconds={reindex_seconds:.2}");
    // Where the machine's two cores went during the backfill (user + system time of each process).
    println!(
        "indexer_backfill_cpu runs={runs} indexer_seconds={:.2} anvil_seconds={:.2} postgres_seconds={:.2}",
        median(|r| r.cpu.indexer),
        median(|r| r.cpu.anvil),
        median(|r| r.cpu.postgres)
    );
    println!(
        "indexer_backfill events={events} seconds={seconds:.2} events_per_sec={rate:.0} peak_rss_mb={peak_rss_mb} getlogs_floor_seconds={floor:.2}"
    );

    println!("indexer_head_latency events=200 p50_ms={p50:.1} p99_ms={p99:.1}");
    if std::env::var_os("BENCH_LATENCY_AFTER").is_some() {
        // The same measurement on the database the backfill just filled.
        let (p50, p99) = head_latency(&chain, &db, 200).await?;
        println!("indexer_head_latency_after_backfill events=200 p50_ms={p50:.1} p99_ms={p99:.1}");
    }
    Ok(())
}

/// Makes `ACCOUNTS` Paid accounts with credit and a service each, then `events` deductions.
async fn generate(chain: &TestChain, events: usize, batch: usize) -> anyhow::Result<(u64, u64)> {
    let c = chain.deployment.contracts;
    let operator = chain.provider_as(chain.role(Role::Operator));
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    let billing = chain.provider_as(chain.role(Role::Billing));
    let mut owners: Vec<Address> = Vec::new();
    let mut services: Vec<U256> = Vec::new();
    for i in 0..ACCOUNTS {
        let user = alloy::signers::local::PrivateKeySigner::random();
        // Users act through their own keys: fund them with ether from the relayer.
        let relayer = chain.provider_as(chain.role(Role::Relayer));
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(user.address())
            .value(U256::from(10u128.pow(18)));
        relayer.send_transaction(tx).await?.get_receipt().await?;
        let p_user = chain.provider_as(user.clone());
        AccountRegistry::new(c.account_registry, &p_user)
            .register()
            .send()
            .await?
            .get_receipt()
            .await?;
        AccountRegistry::new(c.account_registry, &operator)
            .setTier(user.address(), Tier::Paid.into(), 0)
            .send()
            .await?
            .get_receipt()
            .await?;
        CreditLedger::new(c.credit_ledger, &oracle)
            .creditFiat(user.address(), U256::from(u64::MAX), keccak256(format!("fund-{i}")))
            .send()
            .await?
            .get_receipt()
            .await?;
        let receipt = ServiceRegistry::new(c.service_registry, &p_user)
            .createService(ServiceKind::StaticHosting.into(), keccak256(format!("site-{i}")))
            .send()
            .await?
            .get_receipt()
            .await?;
        let created =
            receipt.decoded_log::<ServiceRegistry::ServiceCreated>().context("ServiceCreated")?;
        owners.push(user.address());
        services.push(created.serviceId);
    }

    let ledger = CreditLedger::new(c.credit_ledger, &billing);
    let first = chain.reader().get_block_number().await? + 1;
    let mut pending = Vec::new();
    let mut n = 0usize;
    while n < events {
        let size = batch.min(events - n);
        let (mut accounts, mut ids, mut credits, mut refs) = (vec![], vec![], vec![], vec![]);
        for k in n..n + size {
            accounts.push(owners[k % ACCOUNTS]);
            ids.push(services[k % ACCOUNTS]);
            credits.push(U256::from(1));
            refs.push(B256::from(U256::from(k + 1)));
        }
        let call = ledger.deductBatch(accounts, ids, credits, refs).gas(400_000_000);
        pending.push(call.send().await?);
        n += size;
    }
    let mut last = first;
    for tx in pending {
        let receipt = tx.get_receipt().await?;
        anyhow::ensure!(receipt.status(), "deductBatch reverted");
        last = last.max(receipt.block_number.unwrap_or_default());
    }
    Ok((first, last))
}

/// Plain `eth_getLogs` over `first..=last` with the indexer's chunking and concurrency.
async fn getlogs_floor(chain: &TestChain, first: u64, last: u64) -> anyhow::Result<f64> {
    let reader = chain.reader();
    let addresses = chain.deployment.contracts.registries().to_vec();
    let started = Instant::now();
    let ranges: Vec<(u64, u64)> = (first..=last)
        .step_by(BLOCK_RANGE as usize)
        .map(|a| (a, (a + BLOCK_RANGE - 1).min(last)))
        .collect();
    let counts: Vec<usize> = stream::iter(ranges)
        .map(|(a, b)| {
            let filter = Filter::new().address(addresses.clone()).from_block(a).to_block(b);
            let reader = reader.clone();
            async move { reader.get_logs(&filter).await.map(|l| l.len()) }
        })
        .buffered(FETCH_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    eprintln!("floor fetched {} logs", counts.iter().sum::<usize>());
    Ok(started.elapsed().as_secs_f64())
}

/// One backfill run.
struct Backfill {
    seconds: f64,
    peak_rss_mb: u64,
    cpu: CpuSeconds,
}

/// CPU time (user + system) used during a run.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSeconds {
    indexer: f64,
    anvil: f64,
    /// Every Postgres process, including backends that exited during the run.
    postgres: f64,
}

/// Runs the release indexer binary until it reaches `last`.
async fn backfill(chain: &TestChain, db: &TestDb, last: u64) -> anyhow::Result<Backfill> {
    let bin = indexer_bin();
    let ticks = clock_ticks()?;
    let (anvil_before, postgres_before) = (cpu_ticks(chain.anvil_pid(), false), postgres_ticks());
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .env("RPC_URL", chain.endpoint())
        .env("DEPLOYMENTS_FILE", &chain.deployment_file)
        .env("FINALITY", "0")
        .env("MAX_BLOCK_RANGE", BLOCK_RANGE.to_string())
        .env("FETCH_CONCURRENCY", FETCH_CONCURRENCY.to_string())
        .env("BATCH_EVENTS", "25000")
        .env(
            "DEFER_INDEXES_AT",
            std::env::var("DEFER_INDEXES_AT").unwrap_or_else(|_| "20000".into()),
        )
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", std::env::var("INDEXER_LOG").unwrap_or_else(|_| "warn".into()))
        // With INDEXER_LOG=info, each batch's write time shows (`batch committed … ms=`).
        .stdout(match std::env::var("INDEXER_LOG_FILE") {
            Ok(path) => Stdio::from(std::fs::File::create(path)?),
            Err(_) => Stdio::null(),
        })
        .spawn()
        .with_context(|| format!("start {} (INDEXER_BIN)", bin.display()))?;
    let pid = child.id();
    let reached = wait_for_checkpoint(db, chain.chain_id(), last, Duration::from_secs(600)).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuSeconds {
        indexer: cpu_ticks(pid, false) as f64 / ticks,
        anvil: cpu_ticks(chain.anvil_pid(), false).saturating_sub(anvil_before) as f64 / ticks,
        postgres: postgres_ticks().saturating_sub(postgres_before) as f64 / ticks,
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    child.kill().ok();
    child.wait().ok();
    reached?;
    Ok(Backfill { seconds, peak_rss_mb: peak_kb / 1024, cpu })
}

/// The release indexer binary (`INDEXER_BIN`, which `make bench-indexer` sets).
fn indexer_bin() -> std::path::PathBuf {
    std::env::var("INDEXER_BIN")
        .map(Into::into)
        .unwrap_or_else(|_| decentraspace_tests::repo_root().join("target/release/indexer"))
}

/// Times `indexer reindex` over what a backfill stored: every projection folded again from the
/// events table, known events rebuilt from their stored arguments.
fn reindex(chain: &TestChain, db: &TestDb) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new(indexer_bin())
        .arg("reindex")
        .env("RPC_URL", chain.endpoint())
        .env("DEPLOYMENTS_FILE", &chain.deployment_file)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .context("run indexer reindex")?;
    anyhow::ensure!(status.success(), "indexer reindex failed: {status}");
    Ok(started.elapsed().as_secs_f64())
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times.
fn clock_ticks() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output().context("run getconf CLK_TCK")?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// A process's user + system time in clock ticks (0 once it is gone); with `children`, also the
/// time of its children that have exited and been waited for.
fn cpu_ticks(pid: u32, children: bool) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis, where
    // utime, stime, cutime and cstime are the 12th to the 15th.
    let Some((_, fields)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<u64> =
        fields.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    fields.iter().take(if children { 4 } else { 2 }).sum()
}

/// The CPU ticks of every process named `postgres`, with their exited children (backends and
/// parallel workers that ended are counted in the postmaster's children's time).
fn postgres_ticks() -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else { return 0 };
    procs
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .map(|pid| cpu_ticks(pid, true))
        .sum()
}

/// The block a sent transaction was mined in, without polling delays.
trait ReceiptNow {
    async fn get_receipt_now(&self, chain: &TestChain) -> anyhow::Result<Option<u64>>;
}

impl<N: alloy::network::Network> ReceiptNow for alloy::providers::PendingTransactionBuilder<N> {
    async fn get_receipt_now(&self, chain: &TestChain) -> anyhow::Result<Option<u64>> {
        let receipt = chain.reader().get_transaction_receipt(*self.tx_hash()).await?;
        Ok(receipt.and_then(|r| r.block_number))
    }
}

/// Receipt-to-NOTIFY latency of `n` single-event transactions with the indexer on a websocket.
async fn head_latency(chain: &TestChain, db: &TestDb, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut config = decentraspace_tests::indexer_config(chain, db, 0);
    config.ws_url = Some(chain.endpoint().replace("http://", "ws://"));
    config.poll_interval_ms = 1_000;
    let indexer = decentraspace_tests::IndexerTask::start(config).await?;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await?;
    listener.listen(decentraspace_db::channels::INDEXED).await?;
    let head = chain.reader().get_block_number().await?;
    wait_for_checkpoint(db, chain.chain_id(), head, Duration::from_secs(60)).await?;
    while tokio::time::timeout(Duration::from_millis(200), listener.recv()).await.is_ok() {}

    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle);
    let user = chain.user(0).address();
    // Payment references credit once: each measurement uses its own.
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        // anvil mines on submission: the block exists when `send` returns.
        let pending = ledger
            .creditFiat(user, U256::from(1), keccak256(format!("latency-{run}-{i}")))
            .send()
            .await?;
        let mined = Instant::now();
        let mut covered = 0;
        let mut arrived = mined;
        let block = loop {
            let note = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await??;
            arrived = if covered == 0 { Instant::now() } else { arrived };
            let payload: serde_json::Value = serde_json::from_str(note.payload())?;
            covered = covered.max(payload["to_block"].as_u64().unwrap_or(0));
            let receipt = pending.get_receipt_now(chain).await?;
            if let Some(block) = receipt.filter(|b| *b <= covered) {
                break block;
            }
            arrived = Instant::now();
        };
        anyhow::ensure!(block <= covered);
        latencies.push(arrived.duration_since(mined).as_secs_f64() * 1_000.0);
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!("tx {i}: block {block}, {:.1} ms", latencies[i]);
        }
    }
    indexer.stop().await?;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.5), pct(0.99)))
}
