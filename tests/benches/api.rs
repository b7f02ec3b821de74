//! `make bench-api`: API read throughput against the database's own ceiling, and relay throughput.
//!
//! - Reads: `wrk` against the authenticated `GET /billing/balance/` and the public
//!   `GET /v1/accounts/{address}` of an API (release build, in this process) over anvil, Postgres
//!   and the indexer (both are served from a cache the indexer's NOTIFY invalidates, so a repeated
//!   read is a hit), and the uncached `GET /billing/history/?limit=1` (a query every time); then
//!   `pgbench -S` on the same Postgres as the ceiling. One line per endpoint:
//!   `api_read endpoint=… rps=… p50_ms=… p99_ms=… errors=… pgbench_select_tps=… ratio=…`.
//! - Relay: `BENCH_RELAY` (default 1,000) gasless forward requests (`register()` for as many fresh
//!   wallets), `BENCH_RELAY_CONCURRENCY` (32) at a time, round-robin over 1 or 3 API replicas
//!   (each with its own pool, state and senders, on one database, warmed by reads before the
//!   clock starts; `BENCH_RELAY_TO_FIRST=1` sends every request to the first, the others idle),
//!   with one relayer key or a pool of four, from the first request to the last receipt, each
//!   setting on a fresh chain, database and indexer:
//!   `relay_throughput replicas=… keys=… tx=… seconds=… tx_per_sec=… nonce_errors=… cpu_ms_per_tx=…`
//!   (`cpu_ms_per_tx`: the whole machine's busy CPU time during the run, per relay).
//!   Then the node's own floor for the same transactions (`execute` calls signed in the bench and
//!   sent straight to a fresh anvil, 32 at a time): `relay_floor keys=… tx=… seconds=… tx_per_sec=…`.
//!   (`nonce_errors`: outbox rows that had to be signed again because their nonce was taken, plus
//!   relayed requests that failed). Then the operator path's latency, from an admin's request to
//!   its transaction on the network and to its receipt (`operator_latency …`).
//!
//! `BENCH_SECONDS` (default 10) sets each wrk and pgbench run; `BENCH_CONNECTIONS` (32) wrk's
//! connections; `BENCH_BLOCK_TIME` (default 0.2) the seconds between anvil's blocks. The machine
//! runs everything: wrk, the API, Postgres, anvil and the indexer.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use alloy::{
    consensus::TxEnvelope,
    eips::Encodable2718,
    network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
    primitives::{Bytes, U256, aliases::U48, keccak256},
    providers::Provider,
    rpc::types::TransactionRequest,
    signers::{Signer, local::PrivateKeySigner},
    sol_types::{SolCall, SolStruct},
};
use anyhow::{Context, bail};
use decentraspace_abi::{
    AccountRegistry, CreditLedger, ERC2771Forwarder, Forwarder,
    eip712::{ForwardRequest, forwarder_domain},
};
use decentraspace_tests::{
    IndexerTask, Role, TestApi, TestChain, TestDb, api_config, indexer_config, wait_for_checkpoint,
    wrk,
};
use futures::{StreamExt, stream};
use serde_json::json;

const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 32);
    let chain = start_chain().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let mut config = api_config(&chain, &db);
    config.rate_limit_per_ip = 1_000_000;
    config.rate_limit_per_account = 1_000_000;
    config.relay_quota_per_hour = 1_000_000;
    config.database_pool_size = 32;
    let api = TestApi::start_with(config).await?;

    // One account with a balance, indexed.
    let user = chain.user(0);
    let session = api.login(&user).await?;
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle)
        .creditFiat(user.address(), U256::from(25_000_000), keccak256("bench"))
        .send()
        .await?
        .get_receipt()
        .await?;
    let head = chain.reader().get_block_number().await?;
    wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(30)).await?;
    let (status, account) = api.get(&format!("/v1/accounts/{}", user.address()), None).await?;
    anyhow::ensure!(status == 200, "the account is not served: {status} {account}");

    let ceiling = pgbench(&db.url, seconds)?;
    eprintln!("pgbench -S: {ceiling:.0} tps");
    let auth = format!("Authorization: Bearer {}", session.access);
    // The HTTP stack alone (no database), for reference.
    let health = wrk(&api.url("/health"), None, seconds, connections)?;
    println!(
        "api_read endpoint=/health rps={:.0} p50_ms={:.2} p99_ms={:.2} errors={} (no database)",
        health.rps, health.p50_ms, health.p99_ms, health.errors
    );
    for (endpoint, url, header) in [
        ("/billing/balance/", api.url("/billing/balance/"), Some(auth.as_str())),
        ("/v1/accounts/{address}", api.url(&format!("/v1/accounts/{}", user.address())), None),
        // Not cached: every request queries the database (the path of a cache miss).
        ("/billing/history/?limit=1", api.url("/billing/history/?limit=1"), Some(auth.as_str())),
    ] {
        let run = wrk(&url, header, seconds, connections)?;
        println!(
            "api_read endpoint={endpoint} rps={:.0} p50_ms={:.2} p99_ms={:.2} errors={} pgbench_select_tps={ceiling:.0} ratio={:.2}",
            run.rps,
            run.p50_ms,
            run.p99_ms,
            run.errors,
            run.rps / ceiling
        );
    }

    drop(api);
    let n = env_or("BENCH_RELAY", 1_000) as usize;
    let pool: Vec<String> =
        (17..20).map(|u| format!("0x{}", alloy::hex::encode(chain.user(u).to_bytes()))).collect();
    // `BENCH_RELAY_RUNS` (e.g. `3x1,1x4`): which replicas × keys settings run, in that order.
    let runs: Vec<(usize, usize)> = std::env::var("BENCH_RELAY_RUNS")
        .unwrap_or_else(|_| "1x1,3x1,1x4,3x4".into())
        .split(',')
        .map(|run| {
            let (replicas, keys) =
                run.split_once('x').context("BENCH_RELAY_RUNS: <replicas>x<keys>")?;
            anyhow::Ok((replicas.trim().parse()?, keys.trim().parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        runs.iter().all(|(r, k)| *r >= 1 && (1..=4).contains(k)),
        "1+ replicas, 1 to 4 keys"
    );
    for (replicas, keys) in runs {
        // Each setting on a chain, a database and an indexer of its own: a node and a database
        // grown by the settings before would slow it (the same setting repeated on one chain fell
        // from 118 to 51 tx/s), and the settings would not compare.
        let chain = start_chain().await?;
        let db = TestDb::create().await?;
        let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
        let mut apis = Vec::new();
        for _ in 0..replicas {
            let mut config = api_config(&chain, &db);
            config.rate_limit_per_ip = 1_000_000;
            config.rate_limit_per_account = 1_000_000;
            config.relay_quota_per_hour = 1_000_000;
            config.database_pool_size = 32;
            config.chain_confirmations = 0;
            if keys > 1 {
                config.relayer_pool_keys = Some(pool[..keys - 1].join(",").into());
            }
            apis.push(TestApi::start_with(config).await?);
        }
        let (tx, seconds, nonce_errors, cpu) = relay(&chain, &db, &apis, n).await?;
        println!(
            "relay_throughput replicas={replicas} keys={keys} tx={tx} seconds={seconds:.2} tx_per_sec={:.0} nonce_errors={nonce_errors} cpu_ms_per_tx={:.2}",
            tx as f64 / seconds,
            cpu * 1_000.0 / tx as f64
        );
    }
    // The node's own floor for the same transactions, without the API or the database, each on a
    // fresh chain like the settings above.
    for keys in [1, 4] {
        let (tx, seconds) = chain_floor(&start_chain().await?, n, keys).await?;
        println!(
            "relay_floor keys={keys} tx={tx} seconds={seconds:.2} tx_per_sec={:.0} (signed here, sent straight to the node)",
            tx as f64 / seconds
        );
    }
    operator_latency(&chain, &db).await
}

/// A fresh chain with the platform deployed, mining a block every `BENCH_BLOCK_TIME` seconds
/// (default 0.2), as a live chain does, rather than one per transaction as it arrives: in that
/// mode anvil's pool can hold a key's next transaction back as if a nonce were missing until
/// another of the key's transactions replaces it (seen here: the chain at nonce 231, the pool's
/// 769 transactions from 231 on all "queued"; foundry-rs/foundry#10122), and a run waited for
/// the sender's 60 s stuck-row bump.
async fn start_chain() -> anyhow::Result<TestChain> {
    let seconds = std::env::var("BENCH_BLOCK_TIME").unwrap_or_else(|_| "0.2".into());
    TestChain::start_with(&["--block-time", &seconds]).await
}

/// A fresh wallet's gasless `register()`, signed as a forward request: the wallet, and the
/// request's signature.
async fn signed_register(
    chain: &TestChain,
    deadline: u64,
) -> anyhow::Result<(PrivateKeySigner, alloy::primitives::Signature)> {
    let c = chain.deployment.contracts;
    let wallet = PrivateKeySigner::random();
    let request = ForwardRequest {
        from: wallet.address(),
        to: c.account_registry,
        value: U256::ZERO,
        gas: U256::from(200_000),
        nonce: U256::ZERO,
        deadline: U48::from(deadline),
        data: AccountRegistry::registerCall {}.abi_encode().into(),
    };
    let domain = forwarder_domain(chain.chain_id(), c.forwarder);
    let signature = wallet.sign_hash(&request.eip712_signing_hash(&domain)).await?;
    Ok((wallet, signature))
}

/// The node's own rate for the relayed work: `n` forward requests of fresh wallets (`register()`),
/// each wrapped in the forwarder's `execute` and signed here by one of `keys` keys with nonces
/// counted locally (before the clock starts), then sent straight to the node 32 at a time; from
/// the first send to the last receipt. What is left is anvil's own cost per transaction.
async fn chain_floor(chain: &TestChain, n: usize, keys: usize) -> anyhow::Result<(usize, f64)> {
    let c = chain.deployment.contracts;
    let reader = chain.reader();
    let data: Bytes = AccountRegistry::registerCall {}.abi_encode().into();
    let deadline = chrono::Utc::now().timestamp() as u64 + 3_600;
    // Users the rest of the bench never signs with (the relayer pool is 17 to 19).
    let signers: Vec<PrivateKeySigner> = (10..10 + keys).map(|u| chain.user(u)).collect();
    let mut nonces = Vec::with_capacity(keys);
    for signer in &signers {
        nonces.push(reader.get_transaction_count(signer.address()).await?);
    }
    let fees = reader.estimate_eip1559_fees().await?;
    let mut raws = Vec::with_capacity(n);
    for i in 0..n {
        let (wallet, signature) = signed_register(chain, deadline).await?;
        let execute = Forwarder::executeCall {
            request: ERC2771Forwarder::ForwardRequestData {
                from: wallet.address(),
                to: c.account_registry,
                value: U256::ZERO,
                gas: U256::from(200_000),
                deadline: U48::from(deadline),
                data: data.clone(),
                signature: Bytes::from(signature.as_bytes()),
            },
        };
        let k = i % keys;
        let tx = TransactionRequest::default()
            .with_from(signers[k].address())
            .with_to(c.forwarder)
            .with_input(execute.abi_encode())
            .with_nonce(nonces[k])
            .with_chain_id(chain.chain_id())
            .with_gas_limit(300_000)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        nonces[k] += 1;
        let wallet = EthereumWallet::from(signers[k].clone());
        let envelope: TxEnvelope = NetworkTransactionBuilder::build(tx, &wallet).await?;
        raws.push((envelope.encoded_2718(), *envelope.tx_hash()));
    }
    let started = Instant::now();
    let sent: Vec<_> = stream::iter(raws.iter())
        .map(|(raw, _)| {
            let reader = reader.clone();
            async move { reader.send_raw_transaction(raw).await.map(|_| ()) }
        })
        .buffered(32)
        .collect()
        .await;
    for answer in sent {
        answer.context("the node refused a transaction")?;
    }
    // Each key's transactions are mined in nonce order: its last one ends its run.
    for (_, hash) in raws.iter().rev().take(keys) {
        loop {
            if reader.get_transaction_receipt(*hash).await?.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

/// An admin's tier change, `BENCH_OPERATOR` (default 200) times one after another, through one
/// API: from the request to its transaction's hash (the row `pending`) and to its answer (mined).
async fn operator_latency(chain: &TestChain, db: &TestDb) -> anyhow::Result<()> {
    let mut config = api_config(chain, db);
    config.rate_limit_per_ip = 1_000_000;
    config.rate_limit_per_account = 1_000_000;
    config.chain_confirmations = 0;
    let api = TestApi::start_with(config).await?;
    let admin = api.login(&chain.role(Role::Admin)).await?;
    for k in 0..4 {
        api.login_registered(&chain.user(12 + k)).await?;
    }
    let n = env_or("BENCH_OPERATOR", 200) as usize;
    let mut to_sent = Vec::with_capacity(n);
    let mut to_mined = Vec::with_capacity(n);
    let mut conn = db.connect().await?;
    for i in 0..n {
        let account = chain.user(12 + i % 4).address();
        let tier = if i % 2 == 0 { "paid" } else { "free" };
        let started = Instant::now();
        let (status, body) = api
            .post(
                "/auth/tier",
                Some(&admin.access),
                &json!({ "address": account.to_string(), "tier": tier }),
            )
            .await?;
        let answered = started.elapsed();
        anyhow::ensure!(status == 200, "tier change: {status} {body}");
        let id = body["id"].as_i64().context("an outbox id")?;
        // When the sender put it on the network, from the row's own clock.
        let (created, sent): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
            sqlx::query_as(
                "select o.created_at, min(s.broadcast_at) from chain_outbox o
                 join chain_outbox_sends s on s.outbox_id = o.id where o.id = $1 group by o.id",
            )
            .bind(id)
            .fetch_one(&mut conn)
            .await?;
        to_sent.push((sent - created).to_std().unwrap_or_default());
        to_mined.push(answered);
    }
    let percentile = |times: &mut Vec<Duration>, p: f64| {
        times.sort_unstable();
        times[((times.len() as f64 * p) as usize).min(times.len() - 1)].as_secs_f64() * 1_000.0
    };
    println!(
        "operator_latency calls={n} to_broadcast_p50_ms={:.1} to_broadcast_p99_ms={:.1} to_mined_p50_ms={:.1} to_mined_p99_ms={:.1}",
        percentile(&mut to_sent, 0.5),
        percentile(&mut to_sent, 0.99),
        percentile(&mut to_mined, 0.5),
        percentile(&mut to_mined, 0.99),
    );
    Ok(())
}

/// `pgbench -S` (select-only) on the same server, in a scratch database of its own.
fn pgbench(test_url: &str, seconds: u64) -> anyhow::Result<f64> {
    let url =
        format!("{}/ds_pgbench", test_url.rsplit_once('/').map_or(test_url, |(server, _)| server));
    let server =
        format!("{}/postgres", test_url.rsplit_once('/').map_or(test_url, |(server, _)| server));
    let run = |program: &str, args: &[&str]| -> anyhow::Result<String> {
        let output =
            Command::new(program).args(args).output().with_context(|| format!("run {program}"))?;
        if !output.status.success() {
            bail!("{program} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    run("psql", &[&server, "-qc", "drop database if exists ds_pgbench with (force)"])?;
    run("psql", &[&server, "-qc", "create database ds_pgbench"])?;
    run("pgbench", &["-i", "-q", "-s", "10", &url])?;
    let text = run("pgbench", &["-S", "-c", "32", "-j", "2", "-T", &seconds.to_string(), &url])?;
    run("psql", &[&server, "-qc", "drop database ds_pgbench with (force)"])?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .context("tps in pgbench's output")
}

/// The machine's busy CPU time so far (every process: the API, Postgres, anvil, the bench), in
/// seconds, from `/proc/stat`.
fn busy_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("a cpu line in /proc/stat")?;
    // user nice system idle iowait irq softirq steal: all but idle and iowait were busy.
    let ticks: Vec<u64> =
        line.split_whitespace().skip(1).take(8).map(str::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(ticks.len() == 8, "an unexpected /proc/stat: {line}");
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
    // USER_HZ: 100 on Linux.
    Ok(busy as f64 / 100.0)
}

/// Relays `n` gasless `register()` calls, one per fresh wallet, round-robin over `apis`; returns
/// how many were accepted, the seconds from the first request to the last receipt, the nonce
/// errors (rows signed again because their nonce was taken, and relayed requests that failed),
/// and the machine's busy CPU seconds meanwhile.
async fn relay(
    chain: &TestChain,
    db: &TestDb,
    apis: &[TestApi],
    n: usize,
) -> anyhow::Result<(usize, f64, usize, f64)> {
    let c = chain.deployment.contracts;
    let keys =
        decentraspace_api::http::auth::AccessTokens::new(&JWT_SECRET.to_owned().into(), 3_600)?;
    let data: Bytes = AccountRegistry::registerCall {}.abi_encode().into();
    let deadline = chrono::Utc::now().timestamp() as u64 + 3_600;
    let mut requests = Vec::with_capacity(n);
    for _ in 0..n {
        let (wallet, signature) = signed_register(chain, deadline).await?;
        let token = keys.sign(wallet.address(), chrono::Utc::now())?;
        let body = json!({ "forward_request": {
            "from": wallet.address().to_string(), "to": c.account_registry.to_string(), "gas": 200_000,
            "deadline": deadline, "data": data.to_string(), "signature": Bytes::from(signature.as_bytes()).to_string(),
        }});
        requests.push((wallet.address(), token, body));
    }
    let concurrency = env_or("BENCH_RELAY_CONCURRENCY", 32) as usize;
    // Warm replicas, as they are in service: each opens its pool's connections on database reads
    // (a history read each) before the clock starts, rather than during a run of a few seconds.
    let (_, warm_token, _) = &requests[0];
    stream::iter(apis.iter().flat_map(|api| std::iter::repeat_n(api, concurrency * 2)))
        .map(|api| async move {
            let url = api.url("/billing/history/?limit=1");
            let status = api.http.get(url).bearer_auth(warm_token).send().await?.status();
            anyhow::ensure!(status.is_success(), "warm-up read: {status}");
            anyhow::Ok(())
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let busy_before = busy_cpu_seconds()?;
    let answers: Vec<(u16, serde_json::Value)> = stream::iter(requests.iter().enumerate())
        .map(|(i, (_, token, body))| async move {
            let api = if std::env::var_os("BENCH_RELAY_TO_FIRST").is_some() {
                &apis[0]
            } else {
                &apis[i % apis.len()]
            };
            let response = api
                .http
                .post(api.url("/blockchain/credit"))
                .bearer_auth(token)
                .json(body)
                .send()
                .await?;
            let status = response.status().as_u16();
            anyhow::Ok((status, serde_json::from_str(&response.text().await?).unwrap_or_default()))
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let accepted: Vec<i64> =
        answers.iter().filter(|(s, _)| *s == 202).filter_map(|(_, b)| b["id"].as_i64()).collect();
    if accepted.len() != n {
        let refused: Vec<_> = answers.iter().filter(|(s, _)| *s != 202).take(3).collect();
        eprintln!("{} of {n} refused, e.g. {refused:?}", n - accepted.len());
    }
    // Until every accepted one has ended.
    let mut conn = db.connect().await?;
    let wait_until = Instant::now() + Duration::from_secs(300);
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from relayed_transactions where id = any($1) and status in ('received', 'pending')",
        )
        .bind(&accepted)
        .fetch_one(&mut conn)
        .await?;
        if open == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < wait_until, "{open} relayed requests never landed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = busy_cpu_seconds()? - busy_before;
    let (failed, requeued): (i64, i64) = sqlx::query_as(
        "select (select count(*) from relayed_transactions where id = any($1) and status <> 'mined'),
                (select coalesce(sum(o.requeued), 0)::bigint from relayed_transactions r
                 join chain_outbox o on o.id = r.outbox_id where r.id = any($1))",
    )
    .bind(&accepted)
    .fetch_one(&mut conn)
    .await?;
    Ok((accepted.len(), seconds, (failed + requeued) as usize, cpu))
}
