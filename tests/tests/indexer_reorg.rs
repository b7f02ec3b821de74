//! The indexer survives chain reorganisations that remove and replace credit and service events.
//!
//! Each scenario builds a common prefix (accounts, a Paid user with a static site and credits),
//! lets the indexer follow it with a finality depth far above the reorg (so every block is
//! unfinalized and its hash kept), snapshots the chain, mines branch A (fiat credits, deductions,
//! new services, pauses, a new account, a tier change), lets the indexer index A, reverts to the
//! snapshot and mines a longer branch B whose transactions differ (other fiat amounts, another
//! service kind, a suspension instead of a pause). Every block of B has another timestamp than the
//! block of A at its height, so no replaced block can hash the same.
//!
//! Before and after the reorg the whole mirror is compared with the chain: the events table holds
//! exactly the canonical platform logs, the history tables exactly the rows those logs make, the
//! projections exactly the on-chain state, `verify` finds nothing; after it, no row of branch A
//! remains anywhere.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy::{
    eips::{BlockId, BlockNumberOrTag},
    network::TransactionBuilder,
    primitives::{Address, B256, Bytes, TxHash, U256, keccak256},
    providers::{DynProvider, Provider, ext::AnvilApi},
    rpc::types::{Filter, Log, TransactionRequest, anvil::MineOptions},
};
use anyhow::{Context, bail, ensure};
use decentraspace_abi::{
    AccountRegistry, AccountStatus, CreditLedger, DecodedLog, PlatformEvent, ServiceKind,
    ServiceRegistry, ServiceState, Tier,
};
use decentraspace_indexer::Config;
use decentraspace_tests::{IndexerProcess, IndexerTask, Role, TestChain, TestDb, indexer_config};
use sqlx::{PgConnection, postgres::PgListener};
use tokio::task::JoinHandle;

/// One US dollar in credit units (6 decimals).
const USD: u64 = 1_000_000;
/// Gas limit of every transaction: set explicitly, since a transaction that depends on another in
/// the same (not yet mined) block cannot be estimated.
const GAS: u64 = 600_000;
/// Far above every reorg here: every block stays unfinalized, with its hash stored.
const FINALITY_DEPTH: u64 = 1_000;
/// The longest any wait for the indexer may take.
const WAIT: Duration = Duration::from_secs(45);
/// Seconds between the timestamps of consecutive blocks this test mines.
const BLOCK_SECONDS: u64 = 10;
/// Branch B's blocks are this many seconds later than branch A's at the same height.
const B_SHIFT: u64 = 3;

/// The users (by index of [`TestChain::user`]).
const U: usize = 0;
const V: usize = 1;
const W: usize = 2;
/// Users that may ever act or be referenced (anvil is started with enough accounts).
const USERS: usize = 4;

/// A transaction, sent by whoever may send it.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// The user registers.
    Register(usize),
    /// The operator makes the user Paid (no expiry).
    SetPaid(usize),
    /// The user opens a service of a kind with a reference label.
    Create(usize, ServiceKind, &'static str),
    /// The user pauses their service.
    Pause(usize, u64),
    /// The user resumes their service.
    Resume(usize, u64),
    /// The operator suspends a service.
    Suspend(u64),
    /// The payment oracle credits the user fiat credits with a payment reference label.
    CreditFiat(usize, u64, &'static str),
    /// Billing charges the user credits for a service with a usage reference label.
    Deduct(usize, u64, u64, &'static str),
}

/// Before the snapshot: U Paid with static site 1 and 99 USD; V registered (Free), no credits.
const PREFIX: &[&[Action]] = &[
    &[Action::Register(U), Action::Register(V)],
    &[Action::SetPaid(U)],
    // The credit first: a Paid site opens only with its first hour in the balance.
    &[
        Action::CreditFiat(U, 100 * USD, "prefix-pay-u"),
        Action::Create(U, ServiceKind::StaticHosting, "site-1"),
    ],
    &[Action::Deduct(U, 1, USD, "prefix-use-1")],
];

/// Branch A, to be orphaned: U 134 USD, site 1 paused, static site 2 paused; V Paid with 25 USD;
/// W registered with storage service 3.
const BRANCH_A: &[&[Action]] = &[
    &[Action::CreditFiat(U, 40 * USD, "a-pay-u")],
    &[Action::Create(U, ServiceKind::StaticHosting, "a-site-2"), Action::Register(W)],
    &[Action::Deduct(U, 1, 3 * USD, "a-use-1"), Action::CreditFiat(V, 25 * USD, "a-pay-v")],
    &[
        Action::Pause(U, 1),
        Action::Create(W, ServiceKind::Storage, "a-w-files"),
        Action::SetPaid(V),
    ],
    &[Action::Deduct(U, 2, 2 * USD, "a-use-2"), Action::Pause(U, 2)],
];

/// Branch B, canonical: U 103 USD, site 1 paused and resumed (active), storage service 2
/// suspended; V Free without credits; W never registered, no service 3.
const BRANCH_B: &[&[Action]] = &[
    &[Action::CreditFiat(U, 7 * USD, "b-pay-u")],
    &[Action::Create(U, ServiceKind::Storage, "b-files")],
    &[Action::Deduct(U, 1, 5 * USD, "b-use-1"), Action::Pause(U, 1)],
    &[Action::Resume(U, 1), Action::Suspend(2)],
    &[Action::Deduct(U, 1, USD, "b-use-2"), Action::CreditFiat(U, 3 * USD, "b-pay-u2")],
];

/// A mined block and the transactions this test put in it.
#[derive(Debug, Clone)]
struct Mined {
    number: u64,
    hash: B256,
    txs: Vec<TxHash>,
}

/// A test chain driven block by block (automine off): each block holds exactly the transactions
/// given for it, in the order given (anvil orders its pool first-in first-out).
struct Driver {
    chain: TestChain,
    reader: DynProvider,
    senders: HashMap<Address, DynProvider>,
}

impl Driver {
    async fn start() -> anyhow::Result<Self> {
        let chain = TestChain::start_with(&["--order", "fifo", "--accounts", "12"]).await?;
        let reader = chain.reader();
        let mut senders = HashMap::new();
        let signers = [Role::Operator, Role::PaymentOracle, Role::Billing]
            .into_iter()
            .map(|r| chain.role(r))
            .chain((0..USERS).map(|u| chain.user(u)));
        for signer in signers {
            senders.insert(signer.address(), chain.provider_as(signer));
        }
        reader.anvil_set_auto_mine(false).await?;
        Ok(Self { chain, reader, senders })
    }

    fn user(&self, n: usize) -> Address {
        self.chain.user(n).address()
    }

    fn sender(&self, action: Action) -> Address {
        match action {
            Action::Register(u)
            | Action::Create(u, ..)
            | Action::Pause(u, _)
            | Action::Resume(u, _) => self.user(u),
            Action::SetPaid(_) | Action::Suspend(_) => self.chain.role(Role::Operator).address(),
            Action::CreditFiat(..) => self.chain.role(Role::PaymentOracle).address(),
            Action::Deduct(..) => self.chain.role(Role::Billing).address(),
        }
    }

    fn calldata(&self, action: Action) -> (Address, Bytes) {
        let c = self.chain.deployment.contracts;
        let accounts = AccountRegistry::new(c.account_registry, &self.reader);
        let ledger = CreditLedger::new(c.credit_ledger, &self.reader);
        let services = ServiceRegistry::new(c.service_registry, &self.reader);
        let label = |l: &str| keccak256(l.as_bytes());
        match action {
            Action::Register(_) => (c.account_registry, accounts.register().calldata().clone()),
            Action::SetPaid(u) => (
                c.account_registry,
                accounts.setTier(self.user(u), Tier::Paid.into(), 0).calldata().clone(),
            ),
            Action::Create(_, kind, l) => (
                c.service_registry,
                services.createService(kind.into(), label(l)).calldata().clone(),
            ),
            Action::Pause(_, id) => {
                (c.service_registry, services.pause(U256::from(id)).calldata().clone())
            }
            Action::Resume(_, id) => {
                (c.service_registry, services.resume(U256::from(id)).calldata().clone())
            }
            Action::Suspend(id) => {
                (c.service_registry, services.suspend(U256::from(id)).calldata().clone())
            }
            Action::CreditFiat(u, credits, l) => (
                c.credit_ledger,
                ledger.creditFiat(self.user(u), U256::from(credits), label(l)).calldata().clone(),
            ),
            Action::Deduct(u, id, credits, l) => (
                c.credit_ledger,
                ledger
                    .deduct(self.user(u), U256::from(id), U256::from(credits), label(l))
                    .calldata()
                    .clone(),
            ),
        }
    }

    /// Mines one block at `timestamp` holding exactly `actions`, each of which must succeed, sent
    /// with gas limit `gas`.
    async fn mine(&self, actions: &[Action], timestamp: u64, gas: u64) -> anyhow::Result<Mined> {
        let number = self.reader.get_block_number().await? + 1;
        let mut nonces: HashMap<Address, u64> = HashMap::new();
        let mut sent = Vec::with_capacity(actions.len());
        for &action in actions {
            let from = self.sender(action);
            let nonce = match nonces.get_mut(&from) {
                Some(n) => {
                    *n += 1;
                    *n
                }
                None => {
                    let n = self.reader.get_transaction_count(from).latest().await?;
                    nonces.insert(from, n);
                    n
                }
            };
            let (to, input) = self.calldata(action);
            let tx = TransactionRequest::default()
                .with_to(to)
                .with_input(input)
                .with_nonce(nonce)
                .with_gas_limit(gas);
            let pending = self.senders[&from]
                .send_transaction(tx)
                .await
                .with_context(|| format!("send {action:?}"))?;
            sent.push((action, *pending.tx_hash()));
        }
        self.reader.evm_mine(Some(MineOptions::Timestamp(Some(timestamp)))).await?;
        let block = self.block(number).await?;
        ensure!(block.timestamp == timestamp, "block {number} mined at {}", block.timestamp);
        for (action, hash) in &sent {
            let receipt = self
                .reader
                .get_transaction_receipt(*hash)
                .await?
                .with_context(|| format!("{action:?} was not mined"))?;
            ensure!(receipt.status(), "{action:?} reverted");
            ensure!(
                receipt.block_number == Some(number),
                "{action:?} landed in block {:?}, not {number}",
                receipt.block_number
            );
        }
        Ok(Mined { number, hash: block.hash, txs: sent.into_iter().map(|(_, h)| h).collect() })
    }

    /// Mines `blocks` blocks, the first at `first_timestamp`, holding `steps` spread over them
    /// (the first step in the first block, the last in the last; merged when there are more steps
    /// than blocks). Blocks without a step are empty. Transactions get gas limit `gas`.
    async fn branch(
        &self,
        steps: &[&[Action]],
        blocks: usize,
        first_timestamp: u64,
        gas: u64,
    ) -> anyhow::Result<Vec<Mined>> {
        let positions = spread(steps.len(), blocks);
        let mut mined = Vec::with_capacity(blocks);
        for b in 0..blocks {
            let actions: Vec<Action> = steps
                .iter()
                .zip(&positions)
                .filter(|(_, p)| **p == b)
                .flat_map(|(s, _)| s.iter().copied())
                .collect();
            mined.push(self.mine(&actions, first_timestamp + b as u64 * BLOCK_SECONDS, gas).await?);
        }
        Ok(mined)
    }

    async fn block(&self, number: u64) -> anyhow::Result<alloy::rpc::types::Header> {
        Ok(self
            .reader
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await?
            .with_context(|| format!("no block {number}"))?
            .header)
    }

    async fn head(&self) -> anyhow::Result<alloy::rpc::types::Header> {
        let number = self.reader.get_block_number().await?;
        self.block(number).await
    }
}

/// Which block (of `blocks`) each of `steps` steps goes in: spread from the first block to the
/// last, in order.
fn spread(steps: usize, blocks: usize) -> Vec<usize> {
    (0..steps)
        .map(|i| {
            if blocks >= steps && steps > 1 {
                i * (blocks - 1) / (steps - 1)
            } else {
                i * blocks / steps
            }
        })
        .collect()
}

/// The indexer, in-process or as its binary.
enum Runner {
    Task(IndexerTask),
    Process(IndexerProcess),
}

impl Runner {
    async fn start(config: Config, as_process: bool) -> anyhow::Result<Self> {
        Ok(if as_process {
            Self::Process(IndexerProcess::spawn(&config, "run")?)
        } else {
            Self::Task(IndexerTask::start(config).await?)
        })
    }

    /// Stops it (the process with SIGKILL), failing if it had failed.
    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Task(task) => task.stop().await.context("the indexer task failed"),
            Self::Process(mut process) => {
                if let Some(status) = process.child.try_wait()? {
                    bail!("the indexer process had exited: {status}");
                }
                process.kill9();
                Ok(())
            }
        }
    }

    /// Waits for the checkpoint to be the block `number` with `hash` (reaching the number is not
    /// enough: after a reorg that keeps the height, the orphaned block has the same number); on a
    /// timeout, stops the indexer and reports how it had ended as well.
    async fn wait(
        self,
        db: &TestDb,
        chain_id: u64,
        number: u64,
        hash: B256,
    ) -> anyhow::Result<Self> {
        match wait_for_block(db, chain_id, number, hash).await {
            Ok(()) => Ok(self),
            Err(err) => {
                let ended = self.stop().await;
                Err(err.context(format!(
                    "the indexer, stopped after the wait failed, ended with {ended:?}"
                )))
            }
        }
    }
}

/// Waits until the checkpoint is block `number` with `hash`.
async fn wait_for_block(db: &TestDb, chain_id: u64, number: u64, hash: B256) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut conn = db.connect().await?;
    loop {
        let at: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "select block_number, block_hash from indexer_checkpoints where chain_id = $1",
        )
        .bind(chain_id as i64)
        .fetch_optional(&mut conn)
        .await?;
        let at = at.map(|(n, h)| (n as u64, b256(&h)));
        if at == Some((number, hash)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the checkpoint did not become block {number} {hash} within {WAIT:?} (at {at:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The rollbacks the indexer announces on its NOTIFY channel: the block each rolled back to.
struct Rollbacks {
    seen: Arc<Mutex<Vec<u64>>>,
    task: JoinHandle<()>,
}

impl Rollbacks {
    async fn listen(db: &TestDb, chain_id: u64) -> anyhow::Result<Self> {
        let mut listener = PgListener::connect(&db.url).await?;
        listener.listen(decentraspace_db::channels::INDEXED).await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok(notification) = listener.recv().await {
                let Ok(payload) = serde_json::from_str::<serde_json::Value>(notification.payload())
                else {
                    continue;
                };
                if payload["chain_id"] == chain_id && payload["reorg"] == true {
                    let to = payload["to_block"].as_u64().expect("to_block is a number");
                    sink.lock().expect("not poisoned").push(to);
                }
            }
        });
        Ok(Self { seen, task })
    }

    /// The rollbacks so far, once there are at least `count` (or the wait is over).
    async fn at_least(&self, count: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.seen.lock().expect("not poisoned").clone();
            if seen.len() >= count || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Rollbacks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Indexed rows, as comparable values.
type EventRow = (u64, u64, TxHash, B256);
type CreditRow = (u64, u64, TxHash, Address, String, String, Option<String>, Option<B256>);
type StateRow = (u64, u64, u64, String);
type AccountRow = (String, String, u64, u64);
type ServiceRow = (Address, String, String, B256, u64, u64);

fn b256(bytes: &[u8]) -> B256 {
    B256::try_from(bytes).expect("a 32-byte column")
}

fn address(bytes: &[u8]) -> Address {
    Address::try_from(bytes).expect("a 20-byte column")
}

/// The platform logs of the canonical chain from the deploy block to `head`, decoded.
async fn canonical_logs(d: &Driver, head: u64) -> anyhow::Result<Vec<(Log, DecodedLog)>> {
    let c = d.chain.deployment.contracts;
    let filter = Filter::new()
        .address(c.registries().to_vec())
        .from_block(d.chain.deployment.deploy_block)
        .to_block(head);
    d.reader
        .get_logs(&filter)
        .await?
        .into_iter()
        .map(|log| {
            let decoded = DecodedLog::decode(&c, &log.inner)?;
            Ok((log, decoded))
        })
        .collect()
}

fn position(log: &Log) -> (u64, u64, TxHash, B256) {
    (
        log.block_number.expect("mined"),
        log.log_index.expect("mined"),
        log.transaction_hash.expect("mined"),
        log.block_hash.expect("mined"),
    )
}

/// Asserts that the mirror equals the chain at its head: checkpoint, stored block hashes, events,
/// history rows, projections, and `verify`.
async fn assert_mirrors_chain(d: &Driver, db: &TestDb, label: &str) -> anyhow::Result<()> {
    let chain_id = d.chain.chain_id() as i64;
    let head = d.head().await?;
    let at = BlockId::number(head.number);
    let mut conn = db.connect().await?;

    // The checkpoint is the canonical head, and every stored block hash is canonical.
    let (cp_number, cp_hash): (i64, Vec<u8>) = sqlx::query_as(
        "select block_number, block_hash from indexer_checkpoints where chain_id = $1",
    )
    .bind(chain_id)
    .fetch_one(&mut conn)
    .await?;
    assert_eq!((cp_number as u64, b256(&cp_hash)), (head.number, head.hash), "{label}: checkpoint");
    let blocks: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "select block_number, block_hash from indexer_blocks where chain_id = $1 order by 1",
    )
    .bind(chain_id)
    .fetch_all(&mut conn)
    .await?;
    ensure!(
        blocks.last().map(|b| b.0 as u64) == Some(head.number),
        "{label}: the stored block hashes end at {:?}, not at the head {}",
        blocks.last().map(|b| b.0),
        head.number
    );
    for (number, hash) in &blocks {
        let canonical = d.block(*number as u64).await?.hash;
        assert_eq!(b256(hash), canonical, "{label}: stored hash of block {number}");
    }

    // The events table holds exactly the canonical platform logs.
    let logs = canonical_logs(d, head.number).await?;
    let expected_events: Vec<EventRow> = logs.iter().map(|(l, _)| position(l)).collect();
    let indexed_events: Vec<EventRow> = sqlx::query_as::<_, (i64, i32, Vec<u8>, Vec<u8>)>(
        "select block_number, log_index, tx_hash, block_hash from events where chain_id = $1
         order by block_number, log_index",
    )
    .bind(chain_id)
    .fetch_all(&mut conn)
    .await?
    .into_iter()
    .map(|(b, i, t, h)| (b as u64, i as u64, b256(&t), b256(&h)))
    .collect();
    assert_eq!(indexed_events, expected_events, "{label}: events vs eth_getLogs");

    // The history rows are exactly those of the canonical logs.
    use CreditLedger::CreditLedgerEvents as L;
    use ServiceRegistry::ServiceRegistryEvents as S;
    let mut expected_credits: Vec<CreditRow> = Vec::new();
    let mut expected_states: Vec<StateRow> = Vec::new();
    let mut balance_holders: Vec<Address> = Vec::new();
    for (log, decoded) in &logs {
        let (block, index, tx, _) = position(log);
        let mut credit = |account: Address, kind: &str, credits: U256, after, reference| {
            expected_credits.push((
                block,
                index,
                tx,
                account,
                kind.to_owned(),
                credits.to_string(),
                after,
                reference,
            ));
        };
        match &decoded.event {
            PlatformEvent::CreditLedger(L::FiatCredited(e)) => {
                balance_holders.push(e.account);
                let after = Some(e.balanceAfter.to_string());
                credit(e.account, "fiat", e.credits, after, Some(e.paymentRef));
            }
            PlatformEvent::CreditLedger(L::CreditsDeducted(e)) => {
                balance_holders.push(e.account);
                let after = Some(e.balanceAfter.to_string());
                credit(e.account, "deduction", e.credits, after, Some(e.usageRef));
            }
            PlatformEvent::CreditLedger(L::CreditsRecharged(e)) => {
                balance_holders.push(e.account);
                credit(e.account, "recharge", e.credits, Some(e.balanceAfter.to_string()), None);
            }
            PlatformEvent::CreditLedger(L::DeductionSkipped(e)) => {
                credit(e.account, "skipped", U256::ZERO, None, Some(e.usageRef));
            }
            PlatformEvent::ServiceRegistry(event) => {
                let change = match event {
                    S::ServiceCreated(e) => Some((e.serviceId, "active")),
                    S::ServicePaused(e) => Some((e.serviceId, "paused")),
                    S::ServiceResumed(e) => Some((e.serviceId, "active")),
                    S::ServiceSuspended(e) => Some((e.serviceId, "suspended")),
                    S::ServiceCancelled(e) => Some((e.serviceId, "cancelled")),
                    _ => None,
                };
                if let Some((id, state)) = change {
                    expected_states.push((block, index, id.to(), state.to_owned()));
                }
            }
            _ => {}
        }
    }
    let indexed_credits: Vec<CreditRow> = sqlx::query_as::<
        _,
        (i64, i32, Vec<u8>, Vec<u8>, String, String, Option<String>, Option<Vec<u8>>),
    >(
        "select block_number, log_index, tx_hash, account, kind, credits::text,
                balance_after::text, reference
         from credit_entries where chain_id = $1 order by block_number, log_index",
    )
    .bind(chain_id)
    .fetch_all(&mut conn)
    .await?
    .into_iter()
    .map(|(b, i, t, a, k, c, after, r)| {
        (b as u64, i as u64, b256(&t), address(&a), k, c, after, r.map(|r| b256(&r)))
    })
    .collect();
    assert_eq!(indexed_credits, expected_credits, "{label}: credit_entries");
    let indexed_states: Vec<StateRow> = sqlx::query_as::<_, (i64, i32, i64, String)>(
        "select block_number, log_index, service_id, state from service_state_changes
         where chain_id = $1 order by block_number, log_index",
    )
    .bind(chain_id)
    .fetch_all(&mut conn)
    .await?
    .into_iter()
    .map(|(b, i, s, st)| (b as u64, i as u64, s as u64, st))
    .collect();
    assert_eq!(indexed_states, expected_states, "{label}: service_state_changes");

    // Projections: accounts, balances and services equal the on-chain state at the head.
    let c = d.chain.deployment.contracts;
    let accounts = AccountRegistry::new(c.account_registry, &d.reader);
    let ledger = CreditLedger::new(c.credit_ledger, &d.reader);
    let services = ServiceRegistry::new(c.service_registry, &d.reader);

    let indexed_accounts: BTreeMap<Address, AccountRow> = sqlx::query_as::<
        _,
        (Vec<u8>, String, String, i64, i64),
    >(
        "select address, status, tier, coalesce(extract(epoch from tier_expires_at)::bigint, 0),
                    extract(epoch from registered_at)::bigint
             from accounts where chain_id = $1",
    )
    .bind(chain_id)
    .fetch_all(&mut conn)
    .await?
    .into_iter()
    .map(|(a, s, t, e, r)| (address(&a), (s, t, e as u64, r as u64)))
    .collect();
    let mut candidates: Vec<Address> = [
        Role::Deployer,
        Role::Admin,
        Role::Operator,
        Role::PaymentOracle,
        Role::Billing,
        Role::Registrar,
        Role::Verifier,
        Role::Relayer,
    ]
    .into_iter()
    .map(|r| d.chain.role(r).address())
    .chain((0..USERS).map(|u| d.user(u)))
    .chain(indexed_accounts.keys().copied())
    .collect();
    candidates.sort();
    candidates.dedup();
    let mut expected_accounts = BTreeMap::new();
    for account in candidates {
        let a = accounts.accountOf(account).block(at).call().await?;
        if a.status != 0 {
            let row = (
                AccountStatus::try_from(a.status)?.as_str().to_owned(),
                Tier::try_from(a.tier)?.as_str().to_owned(),
                a.tierExpiresAt,
                a.registeredAt,
            );
            expected_accounts.insert(account, row);
        }
    }
    assert_eq!(indexed_accounts, expected_accounts, "{label}: accounts");

    let indexed_balances: BTreeMap<Address, String> = sqlx::query_as::<_, (Vec<u8>, String)>(
        "select account, balance::text from credit_balances where chain_id = $1",
    )
    .bind(chain_id)
    .fetch_all(&mut conn)
    .await?
    .into_iter()
    .map(|(a, b)| (address(&a), b))
    .collect();
    let mut expected_balances = BTreeMap::new();
    for account in balance_holders {
        let balance = ledger.balanceOf(account).block(at).call().await?;
        expected_balances.insert(account, balance.to_string());
    }
    assert_eq!(indexed_balances, expected_balances, "{label}: credit_balances");

    let indexed_services: BTreeMap<u64, ServiceRow> = sqlx::query_as::<
        _,
        (i64, Vec<u8>, String, String, Vec<u8>, i64, i64),
    >(
        "select service_id, owner, kind, state, ref, extract(epoch from created_at)::bigint,
                    coalesce(extract(epoch from expires_at)::bigint, 0)
             from services where chain_id = $1",
    )
    .bind(chain_id)
    .fetch_all(&mut conn)
    .await?
    .into_iter()
    .map(|(id, o, k, s, r, c, e)| (id as u64, (address(&o), k, s, b256(&r), c as u64, e as u64)))
    .collect();
    let count: u64 = services.serviceCount().block(at).call().await?.to();
    let mut expected_services = BTreeMap::new();
    for id in 1..=count {
        let s = services.serviceOf(U256::from(id)).block(at).call().await?;
        let row = (
            s.owner,
            ServiceKind::try_from(s.kind)?.as_str().to_owned(),
            ServiceState::try_from(s.state)?.as_str().to_owned(),
            s.r#ref,
            s.createdAt,
            s.expiresAt,
        );
        expected_services.insert(id, row);
    }
    assert_eq!(indexed_services, expected_services, "{label}: services");

    // And the indexer's own verification agrees.
    let report =
        decentraspace_indexer::verify::verify(&mut conn, &d.chain.endpoint(), &d.chain.deployment)
            .await?;
    assert_eq!(report.block, head.number, "{label}: verify compared at the head");
    assert!(report.checked > 0, "{label}: verify checked nothing");
    assert!(report.differences.is_empty(), "{label}: verify found {:#?}", report.differences);
    Ok(())
}

/// How many rows of each table come from `txs` or `blocks` (of one branch).
async fn rows_of_branch(
    conn: &mut PgConnection,
    chain_id: u64,
    txs: &[TxHash],
    blocks: &[B256],
) -> anyhow::Result<[(&'static str, i64); 5]> {
    let txs: Vec<Vec<u8>> = txs.iter().map(|t| t.to_vec()).collect();
    let blocks: Vec<Vec<u8>> = blocks.iter().map(|b| b.to_vec()).collect();
    let count = async |conn: &mut PgConnection, sql: &'static str| -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sql)
            .bind(chain_id as i64)
            .bind(&txs)
            .bind(&blocks)
            .fetch_one(conn)
            .await?)
    };
    Ok([
        (
            "events",
            count(
                conn,
                "select count(*) from events
                 where chain_id = $1 and (tx_hash = any($2) or block_hash = any($3))",
            )
            .await?,
        ),
        (
            "credit_entries",
            count(
                conn,
                "select count(*) from credit_entries c
                 where c.chain_id = $1 and (c.tx_hash = any($2) or exists (
                     select 1 from events e where (e.chain_id, e.block_number, e.log_index)
                         = (c.chain_id, c.block_number, c.log_index) and e.block_hash = any($3)))",
            )
            .await?,
        ),
        (
            "service_state_changes",
            count(
                conn,
                "select count(*) from service_state_changes s
                 join events e using (chain_id, block_number, log_index)
                 where s.chain_id = $1 and (e.tx_hash = any($2) or e.block_hash = any($3))",
            )
            .await?,
        ),
        (
            "indexer_blocks",
            count(
                conn,
                "select count(*) from indexer_blocks
                 where chain_id = $1 and block_hash = any($3)",
            )
            .await?,
        ),
        (
            "indexer_checkpoints",
            count(
                conn,
                "select count(*) from indexer_checkpoints
                 where chain_id = $1 and block_hash = any($3)",
            )
            .await?,
        ),
    ])
}

/// One service's indexed (kind, state), if it has a row.
async fn service(
    conn: &mut PgConnection,
    chain_id: u64,
    id: u64,
) -> anyhow::Result<Option<(String, String)>> {
    Ok(sqlx::query_as("select kind, state from services where chain_id = $1 and service_id = $2")
        .bind(chain_id as i64)
        .bind(id as i64)
        .fetch_optional(conn)
        .await?)
}

/// One account's indexed tier, if it has a row.
async fn tier(
    conn: &mut PgConnection,
    chain_id: u64,
    account: Address,
) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar("select tier from accounts where chain_id = $1 and address = $2")
        .bind(chain_id as i64)
        .bind(account.as_slice())
        .fetch_optional(conn)
        .await?)
}

/// One account's indexed balance, if it has a row.
async fn balance(
    conn: &mut PgConnection,
    chain_id: u64,
    account: Address,
) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "select balance::text from credit_balances where chain_id = $1 and account = $2",
    )
    .bind(chain_id as i64)
    .bind(account.as_slice())
    .fetch_optional(conn)
    .await?)
}

fn usd(n: u64) -> Option<String> {
    Some((n * USD).to_string())
}

/// A reorg replacing the last `depth` blocks: branch A (`depth` blocks) indexed, then reverted and
/// replaced by branch B (`b_len` blocks, at least `depth`). With `stopped`, the indexer (as its
/// binary) is killed once A is indexed and started again after B is mined: it must find the fork
/// from the block hashes it stored.
async fn reorg_scenario(depth: usize, b_len: usize, stopped: bool) -> anyhow::Result<()> {
    assert!(depth >= 1 && b_len >= depth, "B replaces every block of A");
    let started = Instant::now();
    let d = Driver::start().await?;
    let db = TestDb::create().await?;
    let chain_id = d.chain.chain_id();
    let (u, v, w) = (d.user(U), d.user(V), d.user(W));

    // The common prefix, indexed.
    let first = d.head().await?.timestamp + BLOCK_SECONDS;
    d.branch(PREFIX, PREFIX.len(), first, GAS).await?;
    let fork = d.head().await?;
    assert!(
        fork.number + (b_len as u64) < FINALITY_DEPTH,
        "every block must stay unfinalized for this test"
    );
    let config = indexer_config(&d.chain, &db, FINALITY_DEPTH);
    let rollbacks = Rollbacks::listen(&db, chain_id).await?;
    let indexer = Runner::start(config.clone(), stopped).await?;
    let indexer = indexer.wait(&db, chain_id, fork.number, fork.hash).await?;
    assert_mirrors_chain(&d, &db, "prefix").await?;

    // Branch A, indexed.
    let snapshot = d.reader.anvil_snapshot().await?;
    let a = d.branch(BRANCH_A, depth, fork.timestamp + BLOCK_SECONDS, GAS).await?;
    let a_tip = a.last().expect("depth >= 1").clone();
    assert_eq!(a_tip.number, fork.number + depth as u64);
    let indexer = indexer.wait(&db, chain_id, a_tip.number, a_tip.hash).await?;
    assert_mirrors_chain(&d, &db, "branch A").await?;
    let a_txs: Vec<TxHash> = a.iter().flat_map(|m| m.txs.iter().copied()).collect();
    let a_blocks: Vec<B256> = a.iter().map(|m| m.hash).collect();
    let mut conn = db.connect().await?;
    for (table, rows) in rows_of_branch(&mut conn, chain_id, &a_txs, &a_blocks).await? {
        assert!(rows > 0, "branch A left no rows in {table} to orphan");
    }
    assert_eq!(
        service(&mut conn, chain_id, 2).await?,
        Some(("static_hosting".into(), "paused".into()))
    );
    assert_eq!(service(&mut conn, chain_id, 3).await?, Some(("storage".into(), "active".into())));
    assert_eq!(tier(&mut conn, chain_id, v).await?.as_deref(), Some("paid"));
    assert_eq!(tier(&mut conn, chain_id, w).await?.as_deref(), Some("free"));
    assert_eq!(balance(&mut conn, chain_id, u).await?, usd(134));
    assert_eq!(balance(&mut conn, chain_id, v).await?, usd(25));

    let early = rollbacks.at_least(0).await;
    assert!(early.is_empty(), "rollbacks to {early:?} before any reorg");

    let running = if stopped {
        indexer.stop().await?;
        None
    } else {
        Some(indexer)
    };

    // The reorg: back to the fork, then branch B.
    ensure!(d.reader.anvil_revert(snapshot).await?, "evm_revert refused the snapshot");
    assert_eq!(d.head().await?.hash, fork.hash, "the revert lands on the fork block");
    // B's transactions carry another gas limit: a call B repeats with the nonce it had on A (a
    // pause, say) must not be the very same transaction.
    let b_start = fork.timestamp + BLOCK_SECONDS + B_SHIFT;
    let b = d.branch(BRANCH_B, b_len, b_start, GAS + 1).await?;
    for (ma, mb) in a.iter().zip(&b) {
        assert_eq!(ma.number, mb.number);
        assert_ne!(ma.hash, mb.hash, "block {} was not replaced", ma.number);
    }
    let b_txs: Vec<TxHash> = b.iter().flat_map(|m| m.txs.iter().copied()).collect();
    assert!(a_txs.iter().all(|t| !b_txs.contains(t)), "branch B repeats a transaction of A");
    let b_tip = b.last().expect("b_len >= 1").clone();

    // A stopped indexer starts again on a chain that moved under its checkpoint.
    let indexer = match running {
        Some(indexer) => indexer,
        None => Runner::start(config, true).await?,
    };
    let indexer = indexer.wait(&db, chain_id, b_tip.number, b_tip.hash).await?;
    assert_mirrors_chain(&d, &db, "branch B").await?;
    assert_eq!(
        rollbacks.at_least(1).await,
        [fork.number],
        "one rollback, to the fork block, found from the stored block hashes"
    );
    for (table, rows) in rows_of_branch(&mut conn, chain_id, &a_txs, &a_blocks).await? {
        assert_eq!(rows, 0, "{rows} rows of the orphaned branch A remain in {table}");
    }
    assert_eq!(
        service(&mut conn, chain_id, 1).await?,
        Some(("static_hosting".into(), "active".into()))
    );
    assert_eq!(
        service(&mut conn, chain_id, 2).await?,
        Some(("storage".into(), "suspended".into()))
    );
    assert_eq!(service(&mut conn, chain_id, 3).await?, None, "service 3 exists only on branch A");
    assert_eq!(tier(&mut conn, chain_id, v).await?.as_deref(), Some("free"));
    assert_eq!(tier(&mut conn, chain_id, w).await?, None, "W registered only on branch A");
    assert_eq!(balance(&mut conn, chain_id, u).await?, usd(103));
    assert_eq!(balance(&mut conn, chain_id, v).await?, None, "V had credits only on branch A");

    indexer.stop().await?;
    println!(
        "reorg depth {depth}, branch B {b_len} blocks (indexer stopped: {stopped}): {:.1?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_of_depth_1_replaces_credit_and_service_events() -> anyhow::Result<()> {
    reorg_scenario(1, 2, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_of_depth_5_replaces_credit_and_service_events() -> anyhow::Result<()> {
    reorg_scenario(5, 6, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_of_depth_64_replaces_credit_and_service_events() -> anyhow::Result<()> {
    reorg_scenario(64, 65, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_while_the_indexer_is_stopped_is_found_from_stored_hashes() -> anyhow::Result<()> {
    reorg_scenario(12, 13, true).await
}

/// A reorg onto a branch of the same height, with no block after it: the head's number does not
/// move, only its hash. The indexer compares its unfinalized tip with the chain when there is
/// nothing new, so it rolls back without waiting for a higher block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_to_a_branch_of_equal_height_is_found_without_a_new_block() -> anyhow::Result<()> {
    reorg_scenario(5, 5, false).await
}
