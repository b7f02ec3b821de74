//! Pay-as-you-go metering end to end (real anvil with a frozen clock moved by the test, Postgres,
//! the indexer, the API): active time is charged exactly and paused time never; usage recorded
//! through `/billing/deduct` is charged once; expired Free services are not charged until an
//! upgrade lifts the expiry; depletion suspends priced services on-chain and says so on the
//! stream; and a meter killed with SIGKILL at any point never charges twice.

use std::time::{Duration, Instant};

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::Provider,
    rpc::types::Filter,
    sol_types::SolEvent,
};
use anyhow::Context;
use decentraspace_abi::{AccountRegistry, CreditLedger, ServiceKind, ServiceRegistry, Tier};
use decentraspace_api::{
    AppState,
    billing::Meter,
    chain_jobs,
    jobs::{JobHealth, Supervisor},
};
use decentraspace_tests::{
    ApiProcess, Hold, HoldingRpc, IndexerTask, Role, Session, Stack, TestChain, TestDb, eventually,
    indexer_config, problem_type, role_key, wait_for_checkpoint,
};
use futures::StreamExt;
use serde_json::{Value, json};

const HOUR: u64 = 3600;
/// The Paid price of a static site per hour (deploy script default).
const STATIC_PAID: u64 = 1_000;
const SERVICE_TOKEN: &str = "service-token-for-tests-0123456789abcdef";

macro_rules! mined {
    ($call:expr) => {{
        let receipt = $call.send().await?.get_receipt().await?;
        anyhow::ensure!(receipt.status(), "transaction reverted");
        receipt
    }};
}

/// The stack and a meter the test drives cycle by cycle.
struct Metered {
    stack: Stack,
    meter: Meter,
    /// Stops the billing key's sender when the test ends.
    _senders: tokio_util::sync::DropGuard,
}

impl std::ops::Deref for Metered {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        &self.stack
    }
}

/// A chain with its clock frozen, the indexer, the API (operator key: depletion runs; no billing
/// key: no meter in the background), and a meter the test drives cycle by cycle, its batches sent
/// by the billing key's sender.
async fn stack() -> anyhow::Result<Metered> {
    let stack = Stack::builder()
        .frozen_time()
        .configure(|config, _| config.service_token = Some(SERVICE_TOKEN.to_owned().into()))
        .start()
        .await?;
    let mut config = stack.config.clone();
    config.billing_key = Some(role_key(&stack.chain, Role::Billing).into());
    let state = AppState::new(config).await?;
    let meter = Meter::new(&state.billing).context("a billing key")?;
    let stop = tokio_util::sync::CancellationToken::new();
    Supervisor::new(chain_jobs(&state), JobHealth::default()).start(stop.clone());
    Ok(Metered { stack, meter, _senders: stop.drop_guard() })
}

/// Registers user `n`, on `tier`, with `credits` credit units.
async fn user(chain: &TestChain, n: usize, tier: Tier, credits: u64) -> anyhow::Result<Address> {
    let c = chain.deployment.contracts;
    let address = chain.user(n).address();
    let operator = chain.provider_as(chain.role(Role::Operator));
    let accounts = AccountRegistry::new(c.account_registry, &operator);
    mined!(accounts.registerFor(address));
    if tier == Tier::Paid {
        mined!(accounts.setTier(address, Tier::Paid.into(), 0));
    }
    if credits > 0 {
        fund(chain, address, credits, &format!("fund-{n}")).await?;
    }
    Ok(address)
}

async fn fund(chain: &TestChain, to: Address, credits: u64, reference: &str) -> anyhow::Result<()> {
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    mined!(CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle).creditFiat(
        to,
        U256::from(credits),
        keccak256(reference)
    ));
    Ok(())
}

/// Opens a service for `owner` (through the operator); its id.
async fn service(
    chain: &TestChain,
    owner: Address,
    kind: ServiceKind,
    name: &str,
) -> anyhow::Result<i64> {
    let operator = chain.provider_as(chain.role(Role::Operator));
    let receipt = mined!(
        ServiceRegistry::new(chain.deployment.contracts.service_registry, &operator)
            .createServiceFor(owner, kind.into(), keccak256(name))
    );
    let created = receipt.decoded_log::<ServiceRegistry::ServiceCreated>().context("created")?;
    Ok(i64::try_from(created.serviceId)?)
}

async fn balance(chain: &TestChain, account: Address) -> anyhow::Result<u64> {
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    Ok(ledger.balanceOf(account).call().await?.try_into()?)
}

async fn indexed(stack: &Metered) -> anyhow::Result<()> {
    let head = stack.chain.reader().get_block_number().await?;
    wait_for_checkpoint(&stack.db, stack.chain.chain_id(), head, Duration::from_secs(30)).await
}

/// Signs in as user `n` once the index has the wallet: the API registers wallets it does not
/// know with the operator key, which the tests send with too.
async fn login(stack: &Metered, n: usize) -> anyhow::Result<Session> {
    indexed(stack).await?;
    stack.api.login(&stack.chain.user(n)).await
}

async fn open_charges(db: &TestDb) -> anyhow::Result<i64> {
    let mut conn = db.connect().await?;
    Ok(sqlx::query_scalar(
        "select count(*) from meter_charges where status in ('pending', 'sending', 'sent')",
    )
    .fetch_one(&mut conn)
    .await?)
}

/// Moves the clock to `at`, runs a meter cycle once the indexer has the new block, and follows
/// the charges until the indexed ledger has them all.
async fn cycle_at(stack: &Metered, at: u64) -> anyhow::Result<()> {
    stack.chain.mine_at(at).await?;
    indexed(stack).await?;
    let report = stack.meter.cycle().await?;
    anyhow::ensure!(!report.busy, "the meter is held elsewhere");
    settle(stack).await
}

async fn settle(stack: &Metered) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_charges(&stack.db).await? > 0 {
        anyhow::ensure!(Instant::now() < deadline, "charges still open after 30 s");
        indexed(stack).await?;
        stack.meter.settle().await?;
    }
    Ok(())
}

/// The service's charges as the meter recorded them: (status, credits, active seconds).
async fn charges_of(db: &TestDb, service: i64) -> anyhow::Result<Vec<(String, String, i64)>> {
    let mut conn = db.connect().await?;
    Ok(sqlx::query_as(
        "select status, coalesce(charged_credits::text, ''), coalesce(active_seconds, 0)
         from meter_charges where service_id = $1 order by id",
    )
    .bind(service)
    .fetch_all(&mut conn)
    .await?)
}

/// Every `CreditsDeducted` on the chain (not the index) for `service`.
async fn deductions_on_chain(
    chain: &TestChain,
    service: i64,
) -> anyhow::Result<Vec<CreditLedger::CreditsDeducted>> {
    let filter = Filter::new()
        .address(chain.deployment.contracts.credit_ledger)
        .event_signature(CreditLedger::CreditsDeducted::SIGNATURE_HASH)
        .topic2(B256::from(U256::from(service as u64)))
        .from_block(0);
    let logs = chain.reader().get_logs(&filter).await?;
    logs.iter().map(|log| Ok(CreditLedger::CreditsDeducted::decode_log(&log.inner)?.data)).collect()
}

#[tokio::test]
async fn active_three_intervals_paused_two_resumed_one_is_charged_four() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (chain, api) = (&stack.chain, &stack.api);
    let owner = user(chain, 0, Tier::Paid, 1_000_000).await?;
    let id = service(chain, owner, ServiceKind::StaticHosting, "site").await?;
    let t0 = chain.time().await?;
    let session = login(&stack, 0).await?;

    for interval in 1..=3 {
        cycle_at(&stack, t0 + interval * HOUR).await?;
        assert_eq!(balance(chain, owner).await?, 1_000_000 - interval * STATIC_PAID);
    }
    let (status, tx) =
        api.post(&format!("/services/{id}/pause"), Some(&session.access), &json!({})).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    for interval in 4..=5 {
        cycle_at(&stack, t0 + interval * HOUR).await?;
        assert_eq!(balance(chain, owner).await?, 1_000_000 - 3 * STATIC_PAID, "paused time");
    }
    let (status, tx) =
        api.post(&format!("/services/{id}/resume"), Some(&session.access), &json!({})).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    cycle_at(&stack, t0 + 6 * HOUR).await?;

    assert_eq!(balance(chain, owner).await?, 1_000_000 - 4 * STATIC_PAID);
    let hour = ("charged".to_owned(), STATIC_PAID.to_string(), HOUR as i64);
    assert_eq!(
        charges_of(&stack.db, id).await?,
        vec![hour.clone(), hour.clone(), hour.clone(), hour]
    );
    let on_chain = deductions_on_chain(chain, id).await?;
    assert_eq!(on_chain.len(), 4);
    assert!(on_chain.iter().all(|d| d.credits == U256::from(STATIC_PAID)));

    // The history shows the four charges with their usage references.
    let (_, history) = api.get("/billing/history?kind=deduction", Some(&session.access)).await?;
    let entries = history["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 4, "{history}");
    Ok(())
}

#[tokio::test]
async fn pausing_just_before_a_cycle_defers_the_charge_to_the_resume() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (chain, api) = (&stack.chain, &stack.api);
    let owner = user(chain, 4, Tier::Paid, 1_000_000).await?;
    let id = service(chain, owner, ServiceKind::StaticHosting, "pauser").await?;
    let t0 = chain.time().await?;
    let session = login(&stack, 4).await?;

    // An hour active, paused at its end, and the cycle after: the ledger skips the hour.
    chain.mine_at(t0 + HOUR).await?;
    let (status, tx) =
        api.post(&format!("/services/{id}/pause"), Some(&session.access), &json!({})).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    cycle_at(&stack, t0 + 2 * HOUR).await?;
    assert_eq!(balance(chain, owner).await?, 1_000_000, "not charged while paused");
    let deferred = ("deferred".to_owned(), String::new(), HOUR as i64);
    assert_eq!(charges_of(&stack.db, id).await?, vec![deferred]);

    // Resumed: the next cycle charges the deferred hour with the new one.
    let (status, tx) =
        api.post(&format!("/services/{id}/resume"), Some(&session.access), &json!({})).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    cycle_at(&stack, t0 + 3 * HOUR).await?;
    assert_eq!(balance(chain, owner).await?, 1_000_000 - 2 * STATIC_PAID);
    let charged = ("charged".to_owned(), STATIC_PAID.to_string(), HOUR as i64);
    assert_eq!(charges_of(&stack.db, id).await?, vec![charged.clone(), charged]);
    Ok(())
}

#[tokio::test]
async fn storage_is_charged_for_its_hours_and_the_bytes_it_holds() -> anyhow::Result<()> {
    let stack = stack().await?;
    let chain = &stack.chain;
    let owner = user(chain, 5, Tier::Paid, 1_000_000).await?;
    let id = service(chain, owner, ServiceKind::Storage, "storage").await?;
    let t0 = chain.time().await?;
    // 2 GiB stored in the service (as an upload records it; the bytes themselves live on IPFS).
    let mut conn = stack.db.connect().await?;
    sqlx::query(
        "insert into storage_files (chain_id, account, service_id, name, content_type, size_bytes,
                                    backend, content_id, access_token)
         values ($1, $2, $3, 'big.bin', 'application/octet-stream', $4, 'ipfs', 'bafy-test', 'token-1')",
    )
    .bind(chain.chain_id() as i64)
    .bind(owner.as_slice())
    .bind(id)
    .bind(2i64 << 30)
    .execute(&mut conn)
    .await?;

    cycle_at(&stack, t0 + HOUR).await?;
    // The Paid storage price (500 an hour) and 2 GiB at 30 a GiB-hour.
    assert_eq!(balance(chain, owner).await?, 1_000_000 - 500 - 2 * 30);
    Ok(())
}

#[tokio::test]
async fn a_database_is_charged_for_its_hours_and_the_size_it_was_last_measured_at()
-> anyhow::Result<()> {
    let stack = stack().await?;
    let chain = &stack.chain;
    let owner = user(chain, 6, Tier::Paid, 1_000_000).await?;
    let id = service(chain, owner, ServiceKind::Database, "database").await?;
    let t0 = chain.time().await?;
    // Its database measured at 3 GiB (as the provisioner records it), and a dropped one of
    // another service that no longer counts.
    let mut conn = stack.db.connect().await?;
    sqlx::query(
        "insert into managed_databases (chain_id, service_id, owner, host, name, password_sealed,
                                        backup_key_sealed, applied, size_bytes)
         values ($1, $2, $3, 'db1:5432', 'ds_' || $2, '\\x00', '\\x00', 'open', $4)",
    )
    .bind(chain.chain_id() as i64)
    .bind(id)
    .bind(owner.as_slice())
    .bind(3i64 << 30)
    .execute(&mut conn)
    .await?;

    cycle_at(&stack, t0 + HOUR).await?;
    // The Paid database price (5,000 an hour) and 3 GiB at 30 a GiB-hour.
    assert_eq!(balance(chain, owner).await?, 1_000_000 - 5_000 - 3 * 30);
    Ok(())
}

#[tokio::test]
async fn usage_recorded_through_deduct_is_charged_once() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (chain, api) = (&stack.chain, &stack.api);
    let owner = user(chain, 1, Tier::Paid, 10_000_000).await?;
    let id = service(chain, owner, ServiceKind::StaticHosting, "metered").await?;
    indexed(&stack).await?;
    let body = json!({ "service_id": id, "credits": "2500000", "reference": "bandwidth:2026-11-25T10",
                       "description": "12 GB served" });

    // Nobody but the service token or an admin records usage.
    assert_eq!(api.post("/billing/deduct", None, &body).await?.0, 401);
    let session = login(&stack, 1).await?;
    let (status, problem) = api.post("/billing/deduct", Some(&session.access), &body).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "forbidden"), "{problem}");
    let (status, _) = api.post("/billing/deduct", Some("not-the-service-token"), &body).await?;
    assert_eq!(status, 401);

    // Bad input is refused and records nothing.
    for (bad, why) in [
        (json!({ "service_id": id, "credits": "0", "reference": "r" }), "zero credits"),
        (json!({ "service_id": id, "credits": "-5", "reference": "r" }), "negative credits"),
        (json!({ "service_id": id, "credits": "1e6", "reference": "r" }), "not decimal"),
        (json!({ "service_id": id, "credits": "5", "reference": "" }), "empty reference"),
        (json!({ "service_id": id, "credits": "5", "reference": "a b" }), "bad reference"),
        (json!({ "service_id": 0, "credits": "5", "reference": "r" }), "service 0"),
    ] {
        let (status, problem) = api.post("/billing/deduct", Some(SERVICE_TOKEN), &bad).await?;
        assert_eq!(status, 400, "{why}: {problem}");
    }
    let (status, problem) = api
        .post(
            "/billing/deduct",
            Some(SERVICE_TOKEN),
            &json!({ "service_id": 999_999, "credits": "5", "reference": "r" }),
        )
        .await?;
    assert_eq!((status, problem_type(&problem).as_str()), (404, "not-found"), "{problem}");

    let (status, usage) = api.post("/billing/deduct/", Some(SERVICE_TOKEN), &body).await?;
    assert_eq!(status, 201, "{usage}");
    assert_eq!(
        (usage["status"].as_str(), usage["recorded_by"].as_str()),
        (Some("pending"), Some("service"))
    );
    // The same record again answers the first; the same reference with other values is refused.
    let (status, again) = api.post("/billing/deduct", Some(SERVICE_TOKEN), &body).await?;
    assert_eq!((status, &again["id"]), (200, &usage["id"]), "{again}");
    let mut changed = body.clone();
    changed["credits"] = json!("9");
    let (status, problem) = api.post("/billing/deduct", Some(SERVICE_TOKEN), &changed).await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (422, "usage-reference-reused"),
        "{problem}"
    );
    // An admin records too.
    let admin = api.login(&chain.role(Role::Admin)).await?;
    let (status, by_admin) = api
        .post(
            "/billing/deduct",
            Some(&admin.access),
            &json!({ "service_id": id, "credits": "500000", "reference": "support-fee" }),
        )
        .await?;
    assert_eq!(status, 201, "{by_admin}");
    assert_eq!(by_admin["recorded_by"], json!(chain.role(Role::Admin).address().to_checksum(None)));

    // One cycle charges both (no time passed: nothing else), a second charges nothing more.
    cycle_at(&stack, chain.time().await?).await?;
    cycle_at(&stack, chain.time().await?).await?;
    assert_eq!(balance(chain, owner).await?, 10_000_000 - 2_500_000 - 500_000);
    let path = format!("/billing/deduct/{}", usage["id"]);
    let (status, charged) = api.get(&path, Some(SERVICE_TOKEN)).await?;
    assert_eq!(status, 200, "{charged}");
    assert_eq!(
        (charged["status"].as_str(), charged["charged_credits"].as_str()),
        (Some("charged"), Some("2500000"))
    );
    assert!(charged["tx_hash"].as_str().is_some_and(|h| h.len() == 66), "{charged}");
    assert_eq!(api.get(&path, Some(&session.access)).await?.0, 403);
    assert_eq!(api.get("/billing/deduct/999999", Some(SERVICE_TOKEN)).await?.0, 404);
    assert_eq!(deductions_on_chain(chain, id).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn expired_free_services_are_not_charged_until_an_upgrade_lifts_the_expiry()
-> anyhow::Result<()> {
    let stack = stack().await?;
    let (chain, api) = (&stack.chain, &stack.api);
    let c = chain.deployment.contracts;
    let admin = chain.provider_as(chain.role(Role::Admin));
    // Free sites for two hours, at 600 units an hour.
    let operator = chain.provider_as(chain.role(Role::Operator));
    mined!(AccountRegistry::new(c.account_registry, &operator).setFreeTierDuration(2 * HOUR));
    mined!(ServiceRegistry::new(c.service_registry, &admin).setPrice(
        ServiceKind::StaticHosting.into(),
        Tier::Free.into(),
        U256::from(600)
    ));
    let owner = user(chain, 2, Tier::Free, 1_000_000).await?;
    let id = service(chain, owner, ServiceKind::StaticHosting, "free-site").await?;
    let t0 = chain.time().await?;
    let session = login(&stack, 2).await?;

    cycle_at(&stack, t0 + HOUR).await?;
    assert_eq!(balance(chain, owner).await?, 1_000_000 - 600, "the first hour");
    // Past the expiry: the time after it is not even planned, and the hour before it reaches the
    // ledger when the service is no longer chargeable: deferred, not lost.
    cycle_at(&stack, t0 + 3 * HOUR).await?;
    assert_eq!(balance(chain, owner).await?, 1_000_000 - 600, "nothing charged while expired");
    let hour = |status: &str, credits: &str| (status.to_owned(), credits.to_owned(), HOUR as i64);
    assert_eq!(
        charges_of(&stack.db, id).await?,
        vec![hour("charged", "600"), hour("deferred", "")]
    );
    let (_, list) = api.get("/services", Some(&session.access)).await?;
    assert_eq!(
        (list[0]["id"].as_i64(), list[0]["expired"].as_bool()),
        (Some(id), Some(true)),
        "{list}"
    );

    // A provider of its own: providers count their nonces, and the helpers sent with others.
    let operator = chain.provider_as(chain.role(Role::Operator));
    mined!(AccountRegistry::new(c.account_registry, &operator).setTier(
        owner,
        Tier::Paid.into(),
        0
    ));
    eventually("the upgrade to be indexed", || async {
        Ok(api.get("/services", Some(&session.access)).await?.1[0]["expired"] == false)
    })
    .await?;
    cycle_at(&stack, t0 + 4 * HOUR).await?;
    // The deferred hour at the Free price, and the hour since the upgrade at the Paid one; the
    // hour spent expired is never charged.
    assert_eq!(balance(chain, owner).await?, 1_000_000 - 2 * 600 - STATIC_PAID);
    assert_eq!(
        charges_of(&stack.db, id).await?,
        vec![hour("charged", "600"), hour("charged", "600"), hour("charged", "1000")]
    );
    Ok(())
}

#[tokio::test]
async fn depletion_suspends_priced_services_and_the_stream_says_so() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (chain, api) = (&stack.chain, &stack.api);
    let owner = user(chain, 3, Tier::Paid, 2_500).await?;
    let sites = [
        service(chain, owner, ServiceKind::StaticHosting, "a").await?,
        service(chain, owner, ServiceKind::StaticHosting, "b").await?,
    ];
    // Domains cost nothing on Paid: it keeps running.
    let domain = service(chain, owner, ServiceKind::Domain, "example.com").await?;
    let t0 = chain.time().await?;
    let session = login(&stack, 3).await?;
    let stream = api
        .http
        .get(api.url(&format!("/v1/stream?account={owner}&event=services_suspended")))
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();

    // Two hours of two sites cost 4,000; the ledger takes the 2,500 there is and depletes.
    cycle_at(&stack, t0 + 2 * HOUR).await?;
    assert_eq!(balance(chain, owner).await?, 0);
    let state_of = |id: i64, want: &'static str| {
        let (api, token) = (api, session.access.clone());
        async move {
            let (_, list) = api.get("/services", Some(&token)).await?;
            Ok::<_, anyhow::Error>(
                list.as_array()
                    .is_some_and(|l| l.iter().any(|s| s["id"] == id && s["state"] == want)),
            )
        }
    };
    for site in sites {
        eventually("the site to be suspended", || state_of(site, "suspended")).await?;
    }
    assert!(state_of(domain, "active").await?, "the free domain keeps running");

    // Other notices (empty blocks) pass by; the suspension's comes as its own event.
    let mut received = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let data = loop {
        if let Some(at) = received.find("event: services_suspended\n")
            && let Some(end) = received[at..].find("\n\n")
        {
            let event = &received[at..at + end];
            break event.lines().find_map(|l| l.strip_prefix("data:")).context("data")?.to_owned();
        }
        let chunk = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .context("no services_suspended event")?
            .context("stream ended")??;
        received.push_str(&String::from_utf8_lossy(&chunk));
    };
    let notice: Value = serde_json::from_str(data.trim())?;
    assert_eq!(notice["data"]["reason"], "credit_depleted");
    assert_eq!(notice["data"]["services"], json!(sites), "{notice}");

    // Resuming needs an hour of credit: refused with a clear problem, then allowed after a recharge.
    let (status, problem) = api
        .post(&format!("/services/{}/resume", sites[0]), Some(&session.access), &json!({}))
        .await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (402, "insufficient-credit"),
        "{problem}"
    );
    fund(chain, owner, 5_000, "recharge").await?;
    let (status, tx) = api
        .post(&format!("/services/{}/resume", sites[0]), Some(&session.access), &json!({}))
        .await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    eventually("the site to be active again", || state_of(sites[0], "active")).await?;
    Ok(())
}

#[tokio::test]
async fn a_meter_killed_mid_batch_never_charges_twice() -> anyhow::Result<()> {
    const USERS: usize = 4;
    const SITES: usize = 10;
    const FUNDS: u64 = 1_000_000_000;
    let chain = TestChain::start().await?;
    chain.freeze_time().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let mut owners = Vec::new();
    let mut sites = Vec::new();
    for n in 0..USERS {
        let owner = user(&chain, 10 + n, Tier::Paid, FUNDS).await?;
        for s in 0..SITES {
            sites.push(
                service(&chain, owner, ServiceKind::StaticHosting, &format!("{n}-{s}")).await?,
            );
        }
        owners.push(owner);
    }
    let t0 = chain.time().await?;
    let head = chain.mine_at(t0 + 2 * HOUR).await?;
    wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(30)).await?;

    // The API binary meters every second, two charges a transaction (twenty transactions for
    // the forty sites, sent by the billing key's outbox sender), through a relay that holds each
    // broadcast for 200 ms: in even rounds before the node gets it, in odd rounds after the node
    // took it and before the API hears back. Each round moves the clock an hour (new charges to
    // send), then kills the API with SIGKILL while its (r mod 3 + 1)-th broadcast of the round is
    // held (after a seeded random delay of 0–3 ms), and starts it again.
    const ROUNDS: u64 = 10;
    let rpc =
        HoldingRpc::start(chain.endpoint(), "eth_sendRawTransaction", Duration::from_millis(200))
            .await?;
    let settings = [
        ("BILLING_PRIVATE_KEY", role_key(&chain, Role::Billing)),
        ("METER_INTERVAL_SECS", "1".to_owned()),
        ("METER_BATCH_SIZE", "2".to_owned()),
        ("RPC_URL", rpc.url.clone()),
    ];
    let mut conn = db.connect().await?;
    let mut seed = 0x5eed_u64;
    let mut kills_mid_batch = 0;
    // Kills with the broadcast held before the node, and after it.
    let mut kills_by_hold = [0; 2];
    for round in 0..ROUNDS as usize {
        let head = chain.mine_at(t0 + (3 + round as u64) * HOUR).await?;
        wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(30)).await?;
        rpc.set(if round % 2 == 0 { Hold::Request } else { Hold::Response });
        let kill_at = rpc.held() + 1 + round % 3;
        let planned_before: i64 =
            sqlx::query_scalar("select count(*) from meter_charges").fetch_one(&mut conn).await?;
        let mut api = ApiProcess::spawn(&chain, &db, &settings)?;
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let jitter = Duration::from_micros((seed >> 33) % 3_000);
        let started = Instant::now();
        loop {
            let (sending, planned, open): (i64, i64, i64) = sqlx::query_as(
                "select count(*) filter (where status = 'sending'), count(*),
                        count(*) filter (where status in ('pending', 'sending', 'sent'))
                 from meter_charges",
            )
            .fetch_one(&mut conn)
            .await?;
            if sending > 0 && rpc.holding() > 0 && rpc.held() >= kill_at {
                tokio::time::sleep(jitter).await;
                kills_mid_batch += 1;
                kills_by_hold[round % 2] += 1;
                break;
            }
            // This round's hour planned and all sent without a kill landing.
            if planned > planned_before && open == 0 {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "the meter never sent");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        api.kill9();
    }
    println!("{kills_mid_batch} kills mid-batch; held before / after the node: {kills_by_hold:?}");
    assert!(
        kills_mid_batch >= 5,
        "only {kills_mid_batch} kills landed while a batch was in flight"
    );
    assert!(
        kills_by_hold.iter().all(|k| *k > 0),
        "kills with the broadcast held before / after the node: {kills_by_hold:?}"
    );

    // A last run finishes the work: every site metered up to the last round's clock (a round's
    // kill may land on the previous round's batch, sent again, before its own hour is planned),
    // and every charge settled.
    rpc.set(Hold::Off);
    let _api = ApiProcess::spawn(&chain, &db, &settings)?;
    let (last_clock, site_count) = ((t0 + (2 + ROUNDS) * HOUR) as f64, sites.len() as i64);
    eventually("every site metered to the last clock and every charge settled", || {
        let db = &db;
        async move {
            let mut conn = db.connect().await?;
            let metered: i64 = sqlx::query_scalar(
                "select count(*) from meter_services where metered_until >= to_timestamp($1)",
            )
            .bind(last_clock)
            .fetch_one(&mut conn)
            .await?;
            Ok(metered == site_count && open_charges(db).await? == 0)
        }
    })
    .await?;

    // Every hour of every site, from t0 to the last round's clock, charged once.
    let hours = 2 + ROUNDS;
    for owner in &owners {
        assert_eq!(
            balance(&chain, *owner).await?,
            FUNDS - SITES as u64 * hours * STATIC_PAID,
            "every hour of each site, charged once"
        );
    }
    for site in &sites {
        let on_chain = deductions_on_chain(&chain, *site).await?;
        let total: U256 = on_chain.iter().map(|d| d.credits).sum();
        assert_eq!(total, U256::from(hours * STATIC_PAID), "site {site}: {on_chain:?}");
        let charges = charges_of(&db, *site).await?;
        assert!(
            charges.iter().all(|(status, _, _)| status == "charged"),
            "site {site}: {charges:?}"
        );
    }
    // However the kills fell, the planned spans of a site tile its time: none overlaps another.
    let (overlaps, seconds): (i64, i64) = sqlx::query_as(
        "select (select count(*) from meter_charges a join meter_charges b
                   on a.service_id = b.service_id and a.id < b.id
                  and tstzrange(a.period_start, a.period_end) && tstzrange(b.period_start, b.period_end)),
                (select coalesce(sum(active_seconds), 0)::bigint from meter_charges)",
    )
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(overlaps, 0, "a span planned twice");
    assert_eq!(seconds, (sites.len() as u64 * hours * HOUR) as i64, "each hour planned once");
    Ok(())
}
