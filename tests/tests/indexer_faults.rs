//! The indexer rides out faults by itself:
//! - an RPC proxy between it and anvil drops connections, answers JSON-RPC errors, refuses
//!   `eth_getLogs` ranges over 50 blocks with the errors real providers send, and answers slowly;
//!   the indexer still mirrors every platform log exactly once and `verify` finds no difference;
//! - its Postgres server is killed (`pg_ctl stop -m immediate`) mid-run and started again; the same
//!   indexer, never restarted, reconnects and finishes with every event exactly once.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::{DynProvider, Provider, ext::AnvilApi},
    rpc::types::{Filter, TransactionReceipt},
    sol_types::SolEvent,
    transports::http::reqwest,
};
use anyhow::{Context, bail, ensure};
use decentraspace_abi::{
    AccountRegistry, CreditLedger, PlatformContracts, ServiceKind, ServiceRegistry,
};
use decentraspace_indexer::{Config, Finality, Indexer, store, verify};
use decentraspace_tests::{Role, TestChain, TestDb, indexer_config};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};

// ---------------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a fixed, seedable mix, so every run plans the same faults and the same workload.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Workload: accounts with services and credits, then many deductions and empty blocks
// ---------------------------------------------------------------------------------------------

/// Waits for a transaction anvil mined at once, and checks that it succeeded.
async fn receipt_of(
    provider: &DynProvider,
    hash: B256,
    what: &str,
) -> anyhow::Result<TransactionReceipt> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(receipt) = provider.get_transaction_receipt(hash).await? {
            ensure!(receipt.status(), "reverted: {what}");
            return Ok(receipt);
        }
        ensure!(Instant::now() < deadline, "{what} not mined within 20 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends a contract call and waits for its successful receipt.
macro_rules! mined {
    ($reader:expr, $call:expr) => {{
        let hash = *$call.send().await?.tx_hash();
        receipt_of(&$reader, hash, stringify!($call)).await?
    }};
}

/// Drives the platform the way billing does: registered accounts with one service each, credited
/// by card, then batches of usage deductions (some skipped, some depleting a balance) between
/// runs of empty blocks.
struct Workload {
    contracts: PlatformContracts,
    reader: DynProvider,
    billing: DynProvider,
    accounts: Vec<Address>,
    services: Vec<U256>,
    usage: u64,
    rng: u64,
}

impl Workload {
    /// Registers `accounts` accounts, opens a static site for each and credits them by card;
    /// every fourth gets so little that its deductions soon deplete it.
    async fn setup(chain: &TestChain, accounts: usize, seed: u64) -> anyhow::Result<Self> {
        let c = chain.deployment.contracts;
        let reader = chain.reader();
        let operator = chain.provider_as(chain.role(Role::Operator));
        let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
        let registry = AccountRegistry::new(c.account_registry, &operator);
        let services = ServiceRegistry::new(c.service_registry, &operator);
        let ledger = CreditLedger::new(c.credit_ledger, &oracle);
        let mut workload = Self {
            contracts: c,
            reader: reader.clone(),
            billing: chain.provider_as(chain.role(Role::Billing)),
            accounts: Vec::new(),
            services: Vec::new(),
            usage: 0,
            rng: seed,
        };
        for i in 0..accounts {
            let account = Address::from_slice(&keccak256(format!("{seed}-account-{i}"))[12..]);
            mined!(reader, registry.registerFor(account));
            let receipt = mined!(
                reader,
                services.createServiceFor(
                    account,
                    ServiceKind::StaticHosting.into(),
                    keccak256(format!("{seed}-site-{i}"))
                )
            );
            let created = receipt
                .decoded_log::<ServiceRegistry::ServiceCreated>()
                .context("ServiceCreated")?;
            let credits = if i % 4 == 0 { 20_000 } else { 1_000_000_000 };
            mined!(
                reader,
                ledger.creditFiat(
                    account,
                    U256::from(credits),
                    keccak256(format!("{seed}-payment-{i}"))
                )
            );
            workload.accounts.push(account);
            workload.services.push(created.data.serviceId);
        }
        Ok(workload)
    }

    fn next(&mut self) -> u64 {
        self.rng = splitmix64(self.rng);
        self.rng
    }

    /// One `deductBatch` of `items` usages in one block; about one in eight names a service the
    /// account does not own, which the ledger skips.
    async fn deduct_round(&mut self, items: usize) -> anyhow::Result<()> {
        let n = self.accounts.len();
        let (mut accounts, mut services, mut credits, mut refs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..items {
            let draw = self.next();
            let k = (draw % n as u64) as usize;
            let service = if (draw >> 16).is_multiple_of(8) { (k + 1) % n } else { k };
            accounts.push(self.accounts[k]);
            services.push(self.services[service]);
            credits.push(U256::from(1 + (draw >> 32) % 5_000));
            self.usage += 1;
            refs.push(keccak256(format!("usage-{}-{}", self.rng, self.usage)));
        }
        let ledger = CreditLedger::new(self.contracts.credit_ledger, &self.billing);
        mined!(self.reader, ledger.deductBatch(accounts, services, credits, refs));
        Ok(())
    }

    /// Mines 1 to `max` empty blocks; returns how many.
    async fn mine_empty(&mut self, max: u64) -> anyhow::Result<u64> {
        let blocks = 1 + self.next() % max;
        self.reader.anvil_mine(Some(blocks), None).await?;
        Ok(blocks)
    }
}

// ---------------------------------------------------------------------------------------------
// The fault-injecting JSON-RPC proxy
// ---------------------------------------------------------------------------------------------

/// Requests spared the scheduled faults, so that the indexer starts (`eth_chainId`); too-wide
/// `eth_getLogs` ranges are refused from the first request on.
const PROXY_WARMUP: u64 = 3;
/// The widest `eth_getLogs` range the proxy lets through.
const LOGS_SPAN_LIMIT: u64 = 50;
/// Seeds the fault schedule ([`fault_of`]).
const FAULT_SEED: u64 = 0xdec0_5ace_fa17;
/// How real providers refuse an `eth_getLogs` range or result that is too large: Infura (and geth
/// style nodes), Alchemy, QuickNode.
const RANGE_REFUSALS: [(i64, &str); 3] = [
    (-32005, "query returned more than 10000 results"),
    (
        -32602,
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block \
         range and no limit on the response size, or you can request any block range with a cap \
         of 10K logs in the response.",
    ),
    (-32614, "eth_getLogs is limited to a 10,000 range"),
];

/// What the proxy did, for the test to check that every fault really happened.
#[derive(Debug, Default)]
struct ProxyStats {
    requests: AtomicU64,
    dropped: AtomicU64,
    error_replies: AtomicU64,
    delayed: AtomicU64,
    /// Refusals of a too-wide `eth_getLogs`, by wording of [`RANGE_REFUSALS`].
    refused: [AtomicU64; 3],
    /// `eth_getLogs` answered with logs.
    logs_served: AtomicU64,
    /// ... over a range inside one refused before (the indexer split it), by wording of the
    /// refusal.
    split_served: [AtomicU64; 3],
    /// Every refused range: the wording it met, and how often it was asked for.
    refused_ranges: Mutex<HashMap<(u64, u64), (usize, u64)>>,
    /// How often each refused request (JSON-RPC id and range) was sent: more than once means the
    /// client resent it unchanged. The indexer may ask for a range again in a later request
    /// (a new id), once its span has grown back, but must not resend a refused request.
    refused_requests: Mutex<HashMap<String, u64>>,
}

/// What the proxy does with one request.
enum Action {
    /// Close the connection without answering.
    Drop,
    /// Answer this instead of the node.
    Reply(Value),
    /// Ask the node, and answer after `delay`.
    Forward { delay: Option<Duration>, logs_range: Option<(u64, u64)> },
}

/// A fault the schedule plans for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Drop,
    Error,
    Delay,
    None,
}

/// The fault of request `n` (counted after the warm-up): every run of twenty requests meets one
/// dropped connection, one error reply and three slow replies, in an order the seed shuffles.
fn fault_of(n: u64) -> Fault {
    let mut slots = [Fault::None; 20];
    slots[..5].copy_from_slice(&[
        Fault::Drop,
        Fault::Error,
        Fault::Delay,
        Fault::Delay,
        Fault::Delay,
    ]);
    let mut draw = FAULT_SEED ^ (n / 20);
    for i in (1..slots.len()).rev() {
        draw = splitmix64(draw);
        slots.swap(i, (draw % (i as u64 + 1)) as usize);
    }
    slots[(n % 20) as usize]
}

/// The block range of an `eth_getLogs` request, when given by numbers.
fn logs_range(request: &Value) -> Option<(u64, u64)> {
    if request.get("method")?.as_str()? != "eth_getLogs" {
        return None;
    }
    let filter = request.get("params")?.get(0)?;
    let block = |key: &str| -> Option<u64> {
        let hex = filter.get(key)?.as_str()?.strip_prefix("0x")?;
        u64::from_str_radix(hex, 16).ok()
    };
    Some((block("fromBlock")?, block("toBlock")?))
}

impl ProxyStats {
    fn decide(&self, request: &Value) -> Action {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let logs_range = logs_range(request);
        if let Some((from, to)) = logs_range
            && to >= from
            && to - from + 1 > LOGS_SPAN_LIMIT
        {
            // Each newly refused range takes the next wording; a range asked for again meets the
            // same one, as it would at the same provider.
            let mut refused = self.refused_ranges.lock().expect("not poisoned");
            let next = refused.len() % RANGE_REFUSALS.len();
            let entry = refused.entry((from, to)).or_insert((next, 0));
            entry.1 += 1;
            let which = entry.0;
            self.refused[which].fetch_add(1, Ordering::SeqCst);
            let mut requests = self.refused_requests.lock().expect("not poisoned");
            *requests.entry(format!("{id} {from}..={to}")).or_default() += 1;
            let (code, message) = RANGE_REFUSALS[which];
            return Action::Reply(json!({
                "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message }
            }));
        }
        if n < PROXY_WARMUP {
            return Action::Forward { delay: None, logs_range };
        }
        match fault_of(n - PROXY_WARMUP) {
            Fault::Drop => {
                self.dropped.fetch_add(1, Ordering::SeqCst);
                Action::Drop
            }
            Fault::Error => {
                self.error_replies.fetch_add(1, Ordering::SeqCst);
                Action::Reply(json!({
                    "jsonrpc": "2.0", "id": id,
                    "error": { "code": -32000, "message": "internal error" }
                }))
            }
            Fault::Delay => {
                self.delayed.fetch_add(1, Ordering::SeqCst);
                let delay = Duration::from_millis(200 + splitmix64(FAULT_SEED ^ n) % 601);
                Action::Forward { delay: Some(delay), logs_range }
            }
            Fault::None => Action::Forward { delay: None, logs_range },
        }
    }

    /// Counts an `eth_getLogs` the node answered.
    fn served_logs(&self, (from, to): (u64, u64), reply: &[u8]) {
        let answered = serde_json::from_slice::<Value>(reply)
            .is_ok_and(|v| v.get("result").is_some_and(Value::is_array));
        if !answered {
            return;
        }
        self.logs_served.fetch_add(1, Ordering::SeqCst);
        if to - from >= LOGS_SPAN_LIMIT {
            return;
        }
        let refused = self.refused_ranges.lock().expect("not poisoned");
        for which in 0..RANGE_REFUSALS.len() {
            let inside =
                refused.iter().any(|(&(a, b), &(w, _))| w == which && a <= from && to <= b);
            if inside {
                self.split_served[which].fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Fails when a request refused as too large is sent again unchanged (retried as if the
    /// refusal were transient) instead of being split.
    fn check_refused_ranges_are_split(&self) -> anyhow::Result<()> {
        let requests = self.refused_requests.lock().expect("not poisoned");
        if let Some((request, &times)) = requests.iter().max_by_key(|(_, times)| **times) {
            ensure!(
                times == 1,
                "the eth_getLogs request (id and range) {request} was sent {times} times although \
                 refused as too large each time: it is retried instead of split; {}",
                self.summary()
            );
        }
        Ok(())
    }

    /// The refused range asked for most often, and how often.
    fn most_refused(&self) -> Option<((u64, u64), usize, u64)> {
        let refused = self.refused_ranges.lock().expect("not poisoned");
        refused.iter().map(|(&range, &(which, times))| (range, which, times)).max_by_key(|r| r.2)
    }

    fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        format!(
            "proxy: {} requests, {} dropped, {} error replies, {} delayed; refusals of a range \
             (infura/alchemy/quicknode wording) {}/{}/{}; {} eth_getLogs served, inside a range \
             refused with each wording {}/{}/{}; most refused range (range, wording, times) {:?}",
            get(&self.requests),
            get(&self.dropped),
            get(&self.error_replies),
            get(&self.delayed),
            get(&self.refused[0]),
            get(&self.refused[1]),
            get(&self.refused[2]),
            get(&self.logs_served),
            get(&self.split_served[0]),
            get(&self.split_served[1]),
            get(&self.split_served[2]),
            self.most_refused(),
        )
    }
}

/// A JSON-RPC proxy on 127.0.0.1 in front of `upstream`, injecting faults on a fixed schedule.
struct FaultProxy {
    url: String,
    stats: Arc<ProxyStats>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    async fn start(upstream: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stats = Arc::new(ProxyStats::default());
        let client = reqwest::Client::new();
        let upstream: Arc<str> = upstream.into();
        let accept = tokio::spawn({
            let stats = stats.clone();
            async move {
                // Dropped with the accept task, which aborts every connection still open.
                let mut connections = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    connections.spawn(serve_connection(
                        stream,
                        upstream.clone(),
                        client.clone(),
                        stats.clone(),
                    ));
                    while connections.try_join_next().is_some() {}
                }
            }
        });
        Ok(Self { url, stats, accept })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves one keep-alive HTTP/1.1 connection of JSON-RPC POSTs.
async fn serve_connection(
    stream: TcpStream,
    upstream: Arc<str>,
    client: reqwest::Client,
    stats: Arc<ProxyStats>,
) -> anyhow::Result<()> {
    let mut stream = BufReader::new(stream);
    while let Some(body) = read_request(&mut stream).await? {
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let reply = match stats.decide(&request) {
            // Dropping the stream closes the socket with the request unanswered.
            Action::Drop => return Ok(()),
            Action::Reply(reply) => reply.to_string().into_bytes(),
            Action::Forward { delay, logs_range } => {
                let reply = client
                    .post(&*upstream)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?
                    .bytes()
                    .await?;
                if let Some(range) = logs_range {
                    stats.served_logs(range, &reply);
                }
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                reply.to_vec()
            }
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        let socket = stream.get_mut();
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(&reply).await?;
        socket.flush().await?;
    }
    Ok(())
}

/// Reads one request's body; `None` when the client closed the connection.
async fn read_request(stream: &mut BufReader<TcpStream>) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    ensure!(line.starts_with("POST "), "unexpected request line {line:?}");
    let mut length = None;
    loop {
        line.clear();
        ensure!(stream.read_line(&mut line).await? > 0, "connection closed inside the headers");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse::<usize>()?);
        }
    }
    let mut body = vec![0; length.context("a request without content-length")?];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

// ---------------------------------------------------------------------------------------------
// The indexer in-process, with a handle that tells whether it stopped by itself
// ---------------------------------------------------------------------------------------------

struct RunningIndexer {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningIndexer {
    async fn start(config: Config) -> anyhow::Result<Self> {
        let indexer = Indexer::new(config).await.context("start the indexer")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            indexer
                .run(async {
                    stopped.await.ok();
                })
                .await
        });
        Ok(Self { stop: Some(stop), handle: Some(handle) })
    }

    fn has_ended(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// How it ended, once it has.
    async fn outcome(&mut self) -> String {
        match self.handle.take() {
            Some(handle) => match handle.await {
                Ok(Ok(())) => "it returned Ok".to_owned(),
                Ok(Err(err)) => format!("it failed: {err:#}"),
                Err(err) => format!("it panicked: {err}"),
            },
            None => "it was stopped already".to_owned(),
        }
    }

    /// Asks it to stop; fails when it does not stop cleanly.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        let handle = self.handle.take().context("stopped already")?;
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .context("the indexer did not stop within 10 s")?
            .context("the indexer task panicked")?
    }
}

impl Drop for RunningIndexer {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

async fn checkpoint_of(conn: &mut PgConnection, chain_id: u64) -> sqlx::Result<Option<u64>> {
    let block: Option<i64> =
        sqlx::query_scalar("select block_number from indexer_checkpoints where chain_id = $1")
            .bind(chain_id as i64)
            .fetch_optional(conn)
            .await?;
    Ok(block.map(|b| b as u64))
}

/// Waits until the checkpoint reaches `block`, reconnecting when the server goes away; fails at
/// once when the indexer stops by itself or `check()` fails, and after `timeout` with
/// `context()` in the message.
async fn wait_for_checkpoint(
    database_url: &str,
    chain_id: u64,
    block: u64,
    timeout: Duration,
    indexer: &mut RunningIndexer,
    context: impl Fn() -> String,
    check: impl Fn() -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    let mut conn: Option<PgConnection> = None;
    let mut reached = None;
    loop {
        check()?;
        if indexer.has_ended() {
            let outcome = indexer.outcome().await;
            bail!(
                "the indexer stopped by itself before block {block} (checkpoint {reached:?}): \
                 {outcome}; {}",
                context()
            );
        }
        if conn.is_none() {
            conn = PgConnection::connect(database_url).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            match checkpoint_of(c, chain_id).await {
                Ok(at) => reached = at,
                Err(_) => conn = None,
            }
        }
        if let Some(at) = reached.filter(|&at| at >= block) {
            return Ok(at);
        }
        if Instant::now() > deadline {
            bail!(
                "the indexer did not reach block {block} within {timeout:?} (checkpoint \
                 {reached:?}); {}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// What a correct mirror looks like
// ---------------------------------------------------------------------------------------------

/// A log as both the node and the `events` table give it.
type LogRow = (i64, i32, Vec<u8>, Vec<u8>, i32, Vec<u8>, Vec<u8>, Vec<u8>);

/// Checks that `events` holds every platform log up to `through` exactly once, as the node serves
/// them (read directly from anvil, not through any proxy), that the ledger's movements each have
/// their `credit_entries` row, and that `verify` finds no difference with the chain.
async fn assert_mirror_is_exact(
    conn: &mut PgConnection,
    chain: &TestChain,
    through: u64,
) -> anyhow::Result<usize> {
    let c = chain.deployment.contracts;
    let chain_id = chain.deployment.chain_id as i64;
    let logs = chain
        .reader()
        .get_logs(
            &Filter::new()
                .address(c.registries().to_vec())
                .from_block(chain.deployment.deploy_block)
                .to_block(through),
        )
        .await?;
    let expected: Vec<LogRow> = logs
        .iter()
        .map(|l| {
            (
                l.block_number.expect("mined") as i64,
                l.log_index.expect("mined") as i32,
                l.block_hash.expect("mined").to_vec(),
                l.transaction_hash.expect("mined").to_vec(),
                l.transaction_index.expect("mined") as i32,
                l.address().to_vec(),
                // stored as the topics' 32-byte words, concatenated
                l.topics().iter().flat_map(|t| t.0).collect(),
                l.data().data.to_vec(),
            )
        })
        .collect();
    // Known events are stored by their arguments alone: read back through the indexer, each must
    // give back the node's exact topics and data.
    let mut stored: Vec<LogRow> = Vec::with_capacity(expected.len());
    let mut after = None;
    loop {
        let page = store::events::page(&mut *conn, &c, chain_id as u64, after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        stored.extend(page.iter().map(|e| {
            (
                e.position.block_number as i64,
                e.position.log_index as i32,
                e.block_hash.to_vec(),
                e.tx_hash.to_vec(),
                e.tx_index as i32,
                e.address.to_vec(),
                e.raw.topics().iter().flat_map(|t| t.0).collect(),
                e.raw.data.to_vec(),
            )
        }));
    }
    let known_with_raw: i64 = sqlx::query_scalar(
        "select count(*) from events where chain_id = $1 and event_name is not null \
         and (topics is not null or data is not null)",
    )
    .bind(chain_id)
    .fetch_one(&mut *conn)
    .await?;
    ensure!(known_with_raw == 0, "{known_with_raw} known events stored with their raw log too");

    let position = |r: &LogRow| (r.0, r.1);
    let mut positions: Vec<_> = stored.iter().map(position).collect();
    positions.dedup();
    ensure!(positions.len() == stored.len(), "a log is stored twice");
    let missing: Vec<_> =
        expected.iter().filter(|e| !stored.contains(e)).map(position).take(10).collect();
    let extra: Vec<_> =
        stored.iter().filter(|s| !expected.contains(s)).map(position).take(10).collect();
    ensure!(
        stored == expected,
        "events differ from the node's logs: {} stored, {} on-chain; missing or different \
         (block, log index) {missing:?}; extra or different {extra:?}",
        stored.len(),
        expected.len()
    );

    let movements = [
        CreditLedger::CreditsRecharged::SIGNATURE_HASH,
        CreditLedger::FiatCredited::SIGNATURE_HASH,
        CreditLedger::CreditsDeducted::SIGNATURE_HASH,
        CreditLedger::DeductionSkipped::SIGNATURE_HASH,
    ];
    let expected_entries = logs
        .iter()
        .filter(|l| {
            l.address() == c.credit_ledger
                && l.topics().first().is_some_and(|t| movements.contains(t))
        })
        .count();
    let entries: i64 =
        sqlx::query_scalar("select count(*) from credit_entries where chain_id = $1")
            .bind(chain_id)
            .fetch_one(&mut *conn)
            .await?;
    ensure!(
        entries as usize == expected_entries,
        "{entries} credit entries for {expected_entries} ledger movements"
    );

    let report = verify::verify(conn, &chain.endpoint(), &chain.deployment).await?;
    ensure!(report.block == through, "verified at {} instead of {through}", report.block);
    ensure!(
        report.differences.is_empty(),
        "verify found {} differences: {:#?}",
        report.differences.len(),
        report.differences
    );
    ensure!(report.checked > 0, "verify checked nothing");
    Ok(expected.len())
}

// ---------------------------------------------------------------------------------------------
// 1. RPC faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_indexer_finishes_correct_through_a_faulty_rpc() -> anyhow::Result<()> {
    let started = Instant::now();
    let chain = TestChain::start().await?;
    let chain_id = chain.deployment.chain_id;

    // About 3,000 events over about 400 blocks, most of them empty.
    let mut workload = Workload::setup(&chain, 12, 1).await?;
    let mut empty_blocks = 0;
    for _ in 0..60 {
        workload.deduct_round(50).await?;
        empty_blocks += workload.mine_empty(8).await?;
    }
    let head = chain.reader().get_block_number().await?;
    let generated = started.elapsed();

    let db = TestDb::create().await?;
    let proxy = FaultProxy::start(chain.endpoint()).await?;
    let mut config = indexer_config(&chain, &db, 8);
    config.rpc_url = proxy.url.clone();
    config.max_block_range = 2_000;
    let mut indexer = RunningIndexer::start(config).await?;
    let indexing = Instant::now();
    wait_for_checkpoint(
        &db.url,
        chain_id,
        head,
        Duration::from_secs(120),
        &mut indexer,
        || proxy.stats.summary(),
        || proxy.stats.check_refused_ranges_are_split(),
    )
    .await?;
    let indexed = indexing.elapsed();
    indexer.stop().await?;

    let mut conn = db.connect().await?;
    let events = assert_mirror_is_exact(&mut conn, &chain, head).await?;
    ensure!(events > 3_000, "only {events} events generated");

    // Every kind of fault really happened, and the refused ranges were split until they passed.
    let stats = &proxy.stats;
    let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
    let summary = stats.summary();
    ensure!(get(&stats.dropped) > 0, "no connection was dropped; {summary}");
    ensure!(get(&stats.error_replies) > 0, "no error was answered; {summary}");
    ensure!(get(&stats.delayed) > 0, "no reply was delayed; {summary}");
    for (i, (code, message)) in RANGE_REFUSALS.iter().enumerate() {
        ensure!(get(&stats.refused[i]) > 0, "no range was refused with code {code}; {summary}");
        ensure!(
            get(&stats.split_served[i]) > 0,
            "no eth_getLogs inside a range refused with {code} {message:?} was served: the \
             indexer never split such a range; {summary}"
        );
    }
    stats.check_refused_ranges_are_split()?;
    println!(
        "faulty rpc: {events} events over {} blocks ({empty_blocks} mined empty) generated in \
         {generated:?}, indexed in {indexed:?}, total {:?}; {summary}",
        head - chain.deployment.deploy_block,
        started.elapsed()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Postgres restarted mid-run
// ---------------------------------------------------------------------------------------------

/// A Postgres cluster of this test's own on a free 127.0.0.1 port, in a temporary directory;
/// stopped and removed when dropped (also when the test fails).
struct PrivatePostgres {
    dir: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Postgres refuses to run as root: as root, its tools run as the `postgres` user.
    as_postgres: bool,
}

/// The directory holding `initdb` and `pg_ctl` (Debian keeps them in a versioned folder).
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let has_tools = |dir: &PathBuf| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(has_tools)
        .collect();
    versioned.sort();
    if let Some(dir) = versioned.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(has_tools))
        .context("no initdb and pg_ctl: install PostgreSQL (Debian: apt-get install postgresql)")
}

impl PrivatePostgres {
    async fn start() -> anyhow::Result<Self> {
        let uid = std::process::Command::new("id").arg("-u").output().context("run id -u")?;
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        // The postgres user must reach the directory: /tmp rather than a root-only TMPDIR.
        let parent = if as_postgres { PathBuf::from("/tmp") } else { std::env::temp_dir() };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let dir = parent.join(format!("ds-pg-{}-{}", std::process::id(), nanos % 1_000_000_000));
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let pg = Self {
            data: dir.join("data"),
            socket: dir.join("socket"),
            log: dir.join("server.log"),
            dir,
            port,
            bin: postgres_bin_dir()?,
            as_postgres,
        };
        std::fs::create_dir_all(&pg.socket)?;
        if as_postgres {
            let chown = tokio::process::Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&pg.dir)
                .status()
                .await?;
            ensure!(chown.success(), "chown {} to postgres failed", pg.dir.display());
        }
        let data = pg.data.to_string_lossy().into_owned();
        pg.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"]).await?;
        pg.start_server().await?;
        Ok(pg)
    }

    async fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut command = if self.as_postgres {
            let mut command = tokio::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            command
        } else {
            tokio::process::Command::new(self.bin.join(tool))
        };
        let out = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("run {tool}"))?;
        ensure!(
            out.status.success(),
            "{tool} {args:?} failed ({}): {}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        Ok(())
    }

    /// Starts the server and waits until it accepts connections.
    async fn start_server(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.socket.display()
        );
        let (data, log) = (self.data.to_string_lossy(), self.log.to_string_lossy());
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "30", "-o", &options, "start"])
            .await
    }

    /// Kills the server the hard way: no checkpoint, clients cut off, crash recovery at restart.
    async fn stop_immediately(&self) -> anyhow::Result<()> {
        let data = self.data.to_string_lossy();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]).await
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and applies the migrations; returns its URL.
    async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let mut admin = PgConnection::connect(&self.url("postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await?;
        let url = self.url(name);
        store::migrate(&url).await.context("migrate")?;
        Ok(url)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl);
            command
        } else {
            std::process::Command::new(pg_ctl)
        };
        let _ = command
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_recovers_by_itself_when_postgres_restarts_mid_run() -> anyhow::Result<()> {
    let started = Instant::now();
    let chain = TestChain::start().await?;
    let chain_id = chain.deployment.chain_id;
    let reader = chain.reader();
    let pg = PrivatePostgres::start().await?;
    let url = pg.create_database("ds_restart").await?;
    let mut workload = Workload::setup(&chain, 8, 2).await?;

    // Small batches and a shallow finality: many transactions for the kill to land in.
    let config = Config {
        rpc_url: chain.endpoint(),
        ws_url: None,
        chain_id: None,
        deployments_file: chain.deployment_file.clone(),
        start_block: None,
        finality: Finality::Depth(4),
        max_block_range: 2_000,
        fetch_concurrency: 4,
        batch_events: 200,
        defer_indexes_at: 20_000,
        poll_interval_ms: 50,
        metrics_addr: None,
        ready_max_lag_blocks: 50,
        database_url: url.clone(),
    };
    let mut indexer = RunningIndexer::start(config).await?;
    let set_up = reader.get_block_number().await?;
    let (no_context, no_check) = (String::new, || Ok(()));
    let timeout = Duration::from_secs(30);
    wait_for_checkpoint(&url, chain_id, set_up, timeout, &mut indexer, no_context, no_check)
        .await?;

    // Events keep coming, before, during and after the outage.
    let generating = Arc::new(AtomicBool::new(true));
    let generator = tokio::spawn({
        let generating = generating.clone();
        async move {
            let mut rounds = 0;
            while generating.load(Ordering::SeqCst) {
                workload.deduct_round(40).await?;
                workload.mine_empty(3).await?;
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(rounds)
        }
    });

    // Once the indexer is following the generated blocks, kill its server under it.
    let following = wait_for_checkpoint(
        &url,
        chain_id,
        set_up + 20,
        timeout,
        &mut indexer,
        no_context,
        no_check,
    )
    .await?;
    let head_at_stop = reader.get_block_number().await?;
    pg.stop_immediately().await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let head_at_restart = reader.get_block_number().await?;
    pg.start_server().await?;
    ensure!(head_at_restart > head_at_stop, "no block was mined while Postgres was down");
    let mut conn = PgConnection::connect(&url).await?;
    let after_crash = checkpoint_of(&mut conn, chain_id).await?.context("a checkpoint")?;

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    generating.store(false, Ordering::SeqCst);
    let rounds = generator.await??;
    let head = reader.get_block_number().await?;
    wait_for_checkpoint(&url, chain_id, head, timeout * 2, &mut indexer, no_context, no_check)
        .await?;
    ensure!(!indexer.has_ended(), "the indexer stopped: {}", indexer.outcome().await);

    // The same indexer leads again on the restarted server: its advisory lock is held there.
    let locks: i64 =
        sqlx::query_scalar("select count(*) from pg_locks where locktype = 'advisory' and granted")
            .fetch_one(&mut conn)
            .await?;
    ensure!(locks == 1, "{locks} advisory locks held after the restart, expected the leader's");
    indexer.stop().await?;

    let events = assert_mirror_is_exact(&mut conn, &chain, head).await?;
    println!(
        "postgres restart: {events} events, {rounds} generated rounds; killed at checkpoint \
         {following} (head {head_at_stop}), {after_crash} after the crash, restarted at head \
         {head_at_restart}, finished at {head}; total {:?}",
        started.elapsed()
    );
    Ok(())
}
