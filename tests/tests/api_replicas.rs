//! Several API processes on one database: per-minute budgets hold across three replicas (a
//! forged `X-Forwarded-For` from a peer that is not a trusted proxy changes nothing); and three
//! replicas and two indexers behind a balancer, one replica killed with SIGKILL every 1.2 s
//! twenty times under relays, card payments and meter cycles, lose and duplicate nothing; and a
//! streaming read replica that lags never serves what the primary announced as changed.

use std::time::{Duration, Instant};

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::Provider,
    rpc::types::Filter,
    signers::local::PrivateKeySigner,
    sol_types::{SolCall, SolEvent},
};
use decentraspace_abi::{
    AccountRegistry, CreditLedger, Forwarder, ServiceKind, ServiceRegistry, Tier,
};
use decentraspace_indexer::Config;
use decentraspace_tests::{
    ApiProcess, FakePaystack, IndexerProcess, IndexerTask, PAYSTACK_SECRET, Role, RoundRobin,
    Session, TestApi, TestChain, TestCluster, TestDb, api_config, eventually, forward,
    indexer_config, paystack_signature, problem_type, role_key,
};
use futures::StreamExt;
use serde_json::json;

/// Waits until at least `room` seconds are left in the current minute, so a burst of requests
/// falls in one budget window.
async fn with_room_in_the_minute(room: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if 60 - now % 60 < room {
        tokio::time::sleep(Duration::from_secs(60 - now % 60)).await;
    }
}

/// Sends `count` GETs of `path` round-robin over `apis` (with `headers` on each); the answers'
/// statuses.
async fn burst(
    apis: &[TestApi],
    path: &str,
    token: Option<&str>,
    count: usize,
    forge: bool,
) -> anyhow::Result<Vec<u16>> {
    let mut statuses = Vec::with_capacity(count);
    for n in 0..count {
        let api = &apis[n % apis.len()];
        let mut request = api.http.get(api.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if forge {
            request = request.header("x-forwarded-for", format!("10.{}.{}.7", n / 250, n % 250));
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status == 429 {
            anyhow::ensure!(
                response.headers().contains_key("retry-after"),
                "429 without Retry-After"
            );
            let body: serde_json::Value = response.json().await?;
            anyhow::ensure!(problem_type(&body) == "rate-limited", "{body}");
        }
        statuses.push(status);
    }
    Ok(statuses)
}

#[tokio::test]
async fn a_per_minute_budget_holds_across_three_replicas() -> anyhow::Result<()> {
    const ACCOUNT_BUDGET: usize = 60;
    const IP_BUDGET: usize = 1_000;
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let settings = [
        // The per-second buckets of each replica are wide open: only the shared budgets bind.
        ("RATE_LIMIT_PER_IP", "100000".to_owned()),
        ("RATE_LIMIT_PER_ACCOUNT", "100000".to_owned()),
        ("RATE_LIMIT_PER_IP_PER_MINUTE", IP_BUDGET.to_string()),
        ("RATE_LIMIT_PER_ACCOUNT_PER_MINUTE", ACCOUNT_BUDGET.to_string()),
    ];
    let mut replicas = Vec::new();
    let mut apis = Vec::new();
    for _ in 0..3 {
        let (process, api) = ApiProcess::serving(&chain, &db, &settings).await?;
        replicas.push(process);
        apis.push(api);
    }
    with_room_in_the_minute(30).await;
    let session = apis[0].login(&chain.user(0)).await?;

    // An account's requests, spread over the replicas: the shared budget admits at most its
    // size, and falls short only by what the other replicas leased and did not spend (a
    // twentieth of the budget each).
    let statuses =
        burst(&apis, "/auth/tier", Some(&session.access), 2 * ACCOUNT_BUDGET, false).await?;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + refused, statuses.len(), "{statuses:?}");
    let lease = (ACCOUNT_BUDGET / 20).max(1);
    assert!(
        admitted <= ACCOUNT_BUDGET && admitted >= ACCOUNT_BUDGET - 2 * (lease - 1),
        "{admitted} of {} admitted for a budget of {ACCOUNT_BUDGET}",
        statuses.len()
    );

    // The client's own address is the key: each request claims another one in
    // `X-Forwarded-For`, but no trusted proxy sent it, so all of them spend one budget.
    let sent_before = statuses.len() + 2; // the tier reads, and the login (a nonce, then the login)
    let forged = burst(&apis, "/health", None, IP_BUDGET + 100, true).await?;
    let admitted = forged.iter().filter(|s| **s == 200).count();
    assert!(forged.contains(&429), "forged addresses escaped the budget");
    assert!(
        admitted + sent_before <= IP_BUDGET,
        "{admitted} admitted after {sent_before} for a budget of {IP_BUDGET}"
    );
    drop(replicas);
    Ok(())
}

/// What the load accomplished: the requests the platform accepted (answered 2xx).
#[derive(Debug, Default)]
struct Accepted {
    /// Wallets whose gasless `register()` relay was accepted.
    relayed: Vec<Address>,
    /// Card payments whose webhook was accepted: (reference, kobo).
    paid: Vec<(String, u64)>,
}

/// Signs in as `wallet` through the balancer, again when a killed replica cut the answer off.
async fn login_retrying(api: &TestApi, wallet: &PrivateKeySigner) -> anyhow::Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match api.login(wallet).await {
            Ok(session) => return Ok(session),
            // A replica killed mid-answer: sign in again (with a fresh nonce).
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.context("never signed in")),
        }
    }
}

/// `request` until it answers one of `ok` (a killed replica answers 502 through the balancer, or
/// not at all); the answer.
async fn until_accepted(
    what: &str,
    ok: &[u16],
    mut request: impl FnMut() -> reqwest::RequestBuilder,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = request().send().await {
            let status = response.status().as_u16();
            if ok.contains(&status) {
                return Ok(response.json().await.unwrap_or_default());
            }
            anyhow::ensure!(
                status == 502 || status == 503,
                "{what}: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn three_replicas_killed_under_load_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    const WALLETS: usize = 120;
    const PAYMENTS: usize = 12;
    const KILLS: usize = 20;
    const RATE: u64 = 10;
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let c = chain.deployment.contracts;
    let paystack = FakePaystack::start().await?;

    // Before any replica runs (the test uses the role keys itself only now): three Paid
    // services for the meter, on an account with credit.
    let metered = chain.user(5).address();
    let operator = chain.provider_as(chain.role(Role::Operator));
    let accounts = AccountRegistry::new(c.account_registry, &operator);
    accounts.registerFor(metered).send().await?.get_receipt().await?;
    accounts.setTier(metered, Tier::Paid.into(), 0).send().await?.get_receipt().await?;
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(c.credit_ledger, &oracle)
        .creditFiat(metered, U256::from(1_000_000_000u64), keccak256("meter-funds"))
        .send()
        .await?
        .get_receipt()
        .await?;
    let services = ServiceRegistry::new(c.service_registry, &operator);
    let mut sites = Vec::new();
    for n in 0..3 {
        let receipt = services
            .createServiceFor(
                metered,
                ServiceKind::StaticHosting.into(),
                keccak256(format!("s{n}")),
            )
            .send()
            .await?
            .get_receipt()
            .await?;
        let created = receipt
            .decoded_log::<ServiceRegistry::ServiceCreated>()
            .ok_or_else(|| anyhow::anyhow!("no ServiceCreated"))?;
        sites.push(i64::try_from(created.serviceId)?);
    }

    // Two indexers (one leads, one stands by) and three API replicas behind a balancer.
    let indexer_config = indexer_config(&chain, &db, 0);
    let _indexers = [
        IndexerProcess::spawn(&indexer_config, "run")?,
        IndexerProcess::spawn(&indexer_config, "run")?,
    ];
    let pool: Vec<String> = [chain.user(20), chain.user(21)]
        .iter()
        .map(|k| format!("0x{}", hex::encode(k.to_bytes())))
        .collect();
    // No operator key: a first login registers nobody, so each fresh wallet registers itself by
    // a relayed `register()`.
    let settings = vec![
        ("RELAYER_PRIVATE_KEY", role_key(&chain, Role::Relayer)),
        ("RELAYER_POOL_PRIVATE_KEYS", pool.join(",")),
        ("BILLING_PRIVATE_KEY", role_key(&chain, Role::Billing)),
        ("PAYMENT_ORACLE_PRIVATE_KEY", role_key(&chain, Role::PaymentOracle)),
        ("PAYSTACK_SECRET_KEY", PAYSTACK_SECRET.to_owned()),
        ("PAYSTACK_BASE_URL", paystack.url.clone()),
        ("METER_INTERVAL_SECS", "2".to_owned()),
        ("CHAIN_CONFIRMATIONS", "0".to_owned()),
        ("RATE_LIMIT_PER_IP", "100000".to_owned()),
        ("RATE_LIMIT_PER_ACCOUNT", "100000".to_owned()),
        ("RELAY_QUOTA_PER_HOUR", "100000".to_owned()),
    ];
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (process, api) = ApiProcess::serving(&chain, &db, &settings).await?;
        urls.push(api.base.clone());
        replicas.push(process);
    }
    let balancer = RoundRobin::start(urls).await?;
    let api = TestApi::at(&balancer.url);
    let admin = api.login(&chain.role(Role::Admin)).await?;
    eventually("the admin role to be indexed", || async {
        Ok(api.set_fiat_rate(&admin, "NGN", RATE).await? == 204)
    })
    .await?;
    let payer_wallet = chain.user(6);
    let payer = api.login(&payer_wallet).await?;

    // The load: relays from many wallets and card payments, through the balancer, while a
    // replica is killed with SIGKILL and started again every 1.2 s, twenty times.
    let (api, chain, paystack, payer) = (&api, &chain, &paystack, &payer);
    let relays = {
        futures::stream::iter((0..WALLETS).map(move |n| async move {
            let wallet = PrivateKeySigner::random();
            let session = login_retrying(api, &wallet).await?;
            let register = AccountRegistry::registerCall {}.abi_encode();
            let body =
                forward(chain, &wallet, wallet.address(), c.account_registry, register.into())
                    .await?;
            let key = format!("register-{n}");
            until_accepted("relay", &[200, 202], || {
                api.http
                    .post(api.url("/blockchain/credit"))
                    .bearer_auth(&session.access)
                    .header("idempotency-key", &key)
                    .json(&body)
            })
            .await?;
            anyhow::Ok(wallet.address())
        }))
        .buffer_unordered(6)
        .collect::<Vec<_>>()
    };
    let payments = {
        futures::stream::iter((0..PAYMENTS).map(move |n| async move {
            let amount = 1_000 + n as u64;
            let payment = until_accepted("recharge", &[201], || {
                api.http
                    .post(api.url("/billing/recharge/"))
                    .bearer_auth(&payer.access)
                    .json(&json!({ "method": "card", "currency": "NGN", "amount": amount }))
            })
            .await?;
            let reference = payment["reference"].as_str().unwrap_or_default().to_owned();
            paystack.settle(&reference, "success", None, None);
            let event = paystack.charge_success(&reference);
            let signature = paystack_signature(&event, PAYSTACK_SECRET);
            until_accepted("webhook", &[200], || {
                api.http
                    .post(api.url("/billing/paystack/webhook"))
                    .header("content-type", "application/json")
                    .header("x-paystack-signature", &signature)
                    .body(event.clone())
            })
            .await?;
            anyhow::Ok((reference, amount))
        }))
        .buffer_unordered(2)
        .collect::<Vec<_>>()
    };
    let killer = async {
        let mut seed = 0x5eed_u64;
        for _ in 0..KILLS {
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let victim = (seed >> 33) as usize % replicas.len();
            replicas[victim].kill9();
            let (process, started) = ApiProcess::serving(chain, &db, &settings).await?;
            balancer.set(victim, started.base.clone());
            replicas[victim] = process;
        }
        anyhow::Ok(())
    };
    let (relayed, paid, killed) = tokio::join!(relays, payments, killer);
    killed?;
    let accepted = Accepted {
        relayed: relayed.into_iter().collect::<anyhow::Result<_>>()?,
        paid: paid.into_iter().collect::<anyhow::Result<_>>()?,
    };

    // Everything accepted ends, once.
    let mut conn = db.connect().await?;
    let settled = || async {
        let open: i64 = sqlx::query_scalar(
            "select (select count(*) from chain_outbox where state in ('queued', 'signed', 'pending', 'mined'))
                  + (select count(*) from relayed_transactions where status in ('received', 'pending'))
                  + (select count(*) from card_payments where status in ('paid', 'crediting'))
                  + (select count(*) from meter_charges where status in ('pending', 'sending', 'sent'))",
        )
        .fetch_one(&mut db.connect().await?)
        .await?;
        anyhow::Ok(open == 0)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !settled().await? {
        anyhow::ensure!(Instant::now() < deadline, "work left open after the kills");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let forwarder = Forwarder::new(c.forwarder, chain.reader());
    for wallet in &accepted.relayed {
        assert_eq!(forwarder.nonces(*wallet).call().await?, U256::from(1), "{wallet} relayed once");
        let mined: i64 = sqlx::query_scalar(
            "select count(*) from relayed_transactions where account = $1 and status = 'mined'",
        )
        .bind(wallet.as_slice())
        .fetch_one(&mut conn)
        .await?;
        assert_eq!(mined, 1, "{wallet}: one record mined");
    }
    let ledger = CreditLedger::new(c.credit_ledger, chain.reader());
    let expected: u64 = accepted.paid.iter().map(|(_, kobo)| kobo * RATE).sum();
    assert_eq!(
        ledger.balanceOf(payer_wallet.address()).call().await?,
        U256::from(expected),
        "every accepted payment credited once"
    );
    for (reference, _) in &accepted.paid {
        let status: String =
            sqlx::query_scalar("select status from card_payments where reference = $1")
                .bind(reference)
                .fetch_one(&mut conn)
                .await?;
        assert_eq!(status, "credited", "{reference}");
    }
    // The meter's charges: each on-chain deduction is one closed charge, and no span of a
    // service was planned twice.
    for site in &sites {
        let charged: String = sqlx::query_scalar(
            "select coalesce(sum(charged_credits), 0)::text from meter_charges
             where service_id = $1 and status = 'charged'",
        )
        .bind(site)
        .fetch_one(&mut conn)
        .await?;
        let filter = Filter::new()
            .address(c.credit_ledger)
            .event_signature(CreditLedger::CreditsDeducted::SIGNATURE_HASH)
            .topic2(B256::from(U256::from(*site as u64)))
            .from_block(0);
        let mut on_chain = U256::ZERO;
        for log in chain.reader().get_logs(&filter).await? {
            on_chain += CreditLedger::CreditsDeducted::decode_log(&log.inner)?.data.credits;
        }
        assert_eq!(on_chain.to_string(), charged, "service {site}");
        assert!(on_chain > U256::ZERO, "service {site} was charged");
    }
    let overlaps: i64 = sqlx::query_scalar(
        "select count(*) from meter_charges a join meter_charges b
           on a.service_id = b.service_id and a.id < b.id
          and tstzrange(a.period_start, a.period_end) && tstzrange(b.period_start, b.period_end)",
    )
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(overlaps, 0, "a span was planned twice");
    // No nonce error, and each key's transactions are its rows, no more.
    let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(
        "select signer, count(*), sum(requeued)::bigint from chain_outbox group by signer",
    )
    .fetch_all(&mut conn)
    .await?;
    for (signer, count, requeued) in rows {
        let signer = Address::try_from(signer.as_slice())?;
        assert_eq!(requeued, 0, "{signer}: a nonce was taken");
        let first = if signer == chain.role(Role::PaymentOracle).address() {
            1 // the meter's funds
        } else {
            0
        };
        assert_eq!(
            chain.reader().get_transaction_count(signer).await?,
            first + count as u64,
            "{signer}: one transaction per row"
        );
    }
    let report =
        decentraspace_indexer::verify::verify(&mut conn, &chain.endpoint(), &chain.deployment)
            .await?;
    assert!(report.differences.is_empty(), "verify: {:#?}", report.differences);
    println!(
        "{} relays and {} card payments accepted across {KILLS} kills",
        accepted.relayed.len(),
        accepted.paid.len()
    );
    Ok(())
}

/// `account`'s indexed balance in the database at `url`, read directly.
async fn balance_on(url: &str, account: Address) -> anyhow::Result<Option<String>> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
    Ok(sqlx::query_scalar("select balance::text from credit_balances where account = $1")
        .bind(account.as_slice())
        .fetch_optional(&mut conn)
        .await?)
}

#[tokio::test]
async fn a_lagging_read_replica_never_serves_what_the_primary_announced_as_changed()
-> anyhow::Result<()> {
    let cluster = TestCluster::with_replica("decentraspace").await?;
    let (primary, replica) = (
        cluster.primary_url("decentraspace"),
        cluster.replica_url("decentraspace").ok_or_else(|| anyhow::anyhow!("no replica"))?,
    );
    decentraspace_indexer::store::migrate(&primary).await?;
    let chain = TestChain::start().await?;
    // The helpers' configurations name a database of the machine's server: this test's is the
    // cluster's primary, read through its replica.
    let scratch = TestDb::create().await?;
    let _indexer = IndexerTask::start(Config {
        database_url: primary.clone(),
        ..indexer_config(&chain, &scratch, 0)
    })
    .await?;
    let mut config = api_config(&chain, &scratch);
    config.database_url = primary.clone();
    config.database_read_url = Some(replica.clone());
    let api = TestApi::start_with(config).await?;
    let user = chain.user(0);
    api.login_registered(&user).await?;
    cluster.caught_up().await?;
    let path = format!("/v1/accounts/{}", user.address());
    let (status, before) = api.get(&path, None).await?;
    assert_eq!((status, before["balance"].as_str()), (200, Some("0")), "{before}");
    let (_, ready) = api.get("/ready", None).await?;
    assert_eq!(ready["read_replica"], "current", "{ready}");

    // The replica stops replaying; the account is credited and the primary's indexer announces
    // the batch. The replica still shows the old balance, the API answers the new one.
    cluster.pause_replay(true).await?;
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle)
        .creditFiat(user.address(), U256::from(7_000_000u64), keccak256("replica-lag"))
        .send()
        .await?
        .get_receipt()
        .await?;
    eventually("the primary to index the credit", || async {
        Ok(balance_on(&primary, user.address()).await?.as_deref() == Some("7000000"))
    })
    .await?;
    assert_eq!(balance_on(&replica, user.address()).await?, None, "the replica lags");
    eventually("the API to answer the announced balance", || async {
        Ok(api.get(&path, None).await?.1["balance"] == "7000000")
    })
    .await?;
    for _ in 0..20 {
        let (status, now) = api.get(&path, None).await?;
        assert_eq!((status, now["balance"].as_str()), (200, Some("7000000")), "{now}");
    }
    let (_, ready) = api.get("/ready", None).await?;
    assert_eq!(ready["read_replica"], "behind", "{ready}");

    // Replay resumes: the replica is current again and serves the same answer.
    cluster.pause_replay(false).await?;
    cluster.caught_up().await?;
    assert_eq!(balance_on(&replica, user.address()).await?.as_deref(), Some("7000000"));
    let (_, ready) = api.get("/ready", None).await?;
    assert_eq!(ready["read_replica"], "current", "{ready}");
    assert_eq!(api.get(&path, None).await?.1["balance"], "7000000");
    Ok(())
}
