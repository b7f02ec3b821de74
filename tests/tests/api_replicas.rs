//! Several API processes on one database: per-minute budgets hold across three replicas (a
//! forged `X-Forwarded-For` from a peer that is not a trusted proxy changes nothing); and three
//! replicas and two indexers behind a balancer, one replica killed with SIGKILL every 1.2 s
//! twenty times under a steady load (relays, card payments, deploys, uploads, meter cycles on a
//! chain that makes blocks every second), lose and duplicate nothing; and a streaming read replica that lags never serves what the primary announced as changed.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

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
    Session, TestApi, TestChain, TestCluster, TestDb, TestIpfs, api_config, eventually, forward,
    indexer_config, paystack_signature, problem_type, role_key,
};
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

/// What the load accomplished: the requests the platform accepted (answered 2xx), and how many
/// were lost (no answer, or the balancer's 502 for a replica killed mid-request: they may or may
/// not have taken effect, once at most).
#[derive(Debug, Default)]
struct Load {
    /// Wallets whose gasless `createService` relay was accepted (sent again under its
    /// `Idempotency-Key` until it was).
    relayed: Vec<Address>,
    /// Card payments whose webhook was accepted: (reference, kobo).
    paid: Vec<(String, u64)>,
    /// Deployments queued: (site name, deployment id).
    deployed: Vec<(String, i64)>,
    /// Deploy requests lost, per site name.
    deploys_lost: HashMap<String, i64>,
    /// Files stored: (file id, CID).
    uploaded: Vec<(i64, String)>,
    /// Upload requests lost.
    uploads_lost: i64,
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

/// Sends `request` once: its answer when it is `ok`, `None` when it was lost (no answer, or the
/// balancer's 502 for a replica that died under it).
async fn once(
    what: &str,
    ok: u16,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<Option<serde_json::Value>> {
    let Ok(response) = request.send().await else { return Ok(None) };
    let status = response.status().as_u16();
    if status == ok {
        return Ok(Some(response.json().await?));
    }
    anyhow::ensure!(
        status == 502,
        "{what}: {status} {}",
        response.text().await.unwrap_or_default()
    );
    Ok(None)
}

/// Where `account`'s registration stopped, for a failure's message: its request and the state of
/// the outbox row that carries it.
async fn registration_state(db: &TestDb, account: Address) -> anyhow::Result<String> {
    let state: Option<String> = sqlx::query_scalar(
        "select format('outbox row %s is %s at nonce %s after %s sends (error: %s)',
                       r.outbox_id, o.state, o.nonce,
                       (select count(*) from chain_outbox_sends s where s.outbox_id = o.id), o.error)
         from account_registrations r left join chain_outbox o on o.id = r.outbox_id
         where r.account = $1",
    )
    .bind(account.as_slice())
    .fetch_optional(&mut db.connect().await?)
    .await?;
    Ok(state.unwrap_or_else(|| "no registration was requested".to_owned()))
}

/// Whether `session`'s account shows as registered (its first login's registration indexed).
async fn registered(api: &TestApi, session: &Session) -> bool {
    matches!(api.get("/auth/tier", Some(&session.access)).await, Ok((200, tier)) if tier["registered"] == true)
}

#[tokio::test]
async fn three_replicas_killed_under_load_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    const KILLS: usize = 20;
    const RATE: u64 = 10;
    const SITES: [&str; 2] = ["kill-one", "kill-two"];
    // Blocks every second besides each transaction's own, as on a live network: chain time
    // moves while the load pauses, so meter cycles always find time to charge.
    let chain = TestChain::start_with(&["--block-time", "1", "--mixed-mining"]).await?;
    let db = TestDb::create().await?;
    let ipfs = TestIpfs::start().await?;
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
    // Every key's transaction count before the replicas: from here on, each transaction is an
    // outbox row's.
    let pool_keys = [chain.user(20), chain.user(21)];
    let mut sent_before = HashMap::new();
    let signers = [Role::Operator, Role::Relayer, Role::Billing, Role::PaymentOracle]
        .map(|role| chain.role(role).address())
        .into_iter()
        .chain(pool_keys.iter().map(PrivateKeySigner::address));
    for signer in signers {
        sent_before.insert(signer, chain.reader().get_transaction_count(signer).await?);
    }

    // Two indexers (one leads, one stands by) and three API replicas behind a balancer.
    let indexer_config = indexer_config(&chain, &db, 0);
    let _indexers = [
        IndexerProcess::spawn(&indexer_config, "run")?,
        IndexerProcess::spawn(&indexer_config, "run")?,
    ];
    let pool: Vec<String> =
        pool_keys.iter().map(|k| format!("0x{}", hex::encode(k.to_bytes()))).collect();
    let mut settings = vec![
        ("OPERATOR_PRIVATE_KEY", role_key(&chain, Role::Operator)),
        ("RELAYER_PRIVATE_KEY", role_key(&chain, Role::Relayer)),
        ("RELAYER_POOL_PRIVATE_KEYS", pool.join(",")),
        ("BILLING_PRIVATE_KEY", role_key(&chain, Role::Billing)),
        ("PAYMENT_ORACLE_PRIVATE_KEY", role_key(&chain, Role::PaymentOracle)),
        ("PAYSTACK_SECRET_KEY", PAYSTACK_SECRET.to_owned()),
        ("PAYSTACK_BASE_URL", paystack.url.clone()),
        ("IPFS_API_URL", ipfs.api_url.clone()),
        ("IPFS_GATEWAY_URL", ipfs.gateway_url.clone()),
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
    // The sites and the storage service exist before the kills (opening them is not what is
    // tested here); the load deploys new versions and stores more files.
    let owners =
        [api.login_registered(&chain.user(7)).await?, api.login_registered(&chain.user(8)).await?];
    for (owner, site) in owners.iter().zip(SITES) {
        api.deploy_site(&owner.access, site, "<h1>v0</h1>").await?;
    }
    let storer = api.login_registered(&chain.user(9)).await?;
    let upload = |n: usize| {
        let mut bytes = format!("file {n} ").into_bytes();
        bytes.resize(16 * 1024, n as u8);
        let part = reqwest::multipart::Part::bytes(bytes).file_name(format!("f{n}.bin"));
        api.http
            .post(api.url("/storage/upload"))
            .bearer_auth(&storer.access)
            .multipart(reqwest::multipart::Form::new().part("file", part))
    };
    let first = until_accepted("first upload", &[201], || upload(0)).await?;
    let storage_service = first["service_id"].as_i64().unwrap_or_default();

    // The load, through the balancer, until the last kill: relays from ever new wallets (each
    // signed in first, which registers it through the operator key), card payments, deploys
    // and uploads, with the meter charging every 2 s; a replica killed with SIGKILL and started
    // again every 1.2 s, twenty times.
    let killing = AtomicBool::new(true);
    let counter = AtomicU64::new(1);
    let (api, chain, paystack, payer, killing, counter, db) =
        (&api, &chain, &paystack, &payer, &killing, &counter, &db);
    let relays = futures::future::try_join_all((0..4).map(|_| async move {
        let mut relayed = Vec::new();
        while killing.load(Ordering::Relaxed) {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let wallet = PrivateKeySigner::random();
            let session = login_retrying(api, &wallet).await?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !registered(api, &session).await {
                if Instant::now() >= deadline {
                    let request = registration_state(db, wallet.address()).await?;
                    anyhow::bail!("wallet {n} never registered: {request}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let create = ServiceRegistry::createServiceCall {
                kind: ServiceKind::StaticHosting.into(),
                r#ref: keccak256(format!("relayed-{n}")),
            }
            .abi_encode();
            let body = forward(chain, &wallet, wallet.address(), c.service_registry, create.into())
                .await?;
            let key = format!("create-{n}");
            until_accepted("relay", &[200, 202], || {
                api.http
                    .post(api.url("/blockchain/credit"))
                    .bearer_auth(&session.access)
                    .header("idempotency-key", &key)
                    .json(&body)
            })
            .await?;
            relayed.push(wallet.address());
        }
        anyhow::Ok(relayed)
    }));
    let payments = async move {
        let mut paid = Vec::new();
        while killing.load(Ordering::Relaxed) {
            let amount = 1_000 + counter.fetch_add(1, Ordering::Relaxed);
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
            paid.push((reference, amount));
        }
        anyhow::Ok(paid)
    };
    let deploys =
        futures::future::try_join_all(owners.iter().zip(SITES).map(|(owner, site)| async move {
            let (mut deployed, mut lost) = (Vec::new(), 0i64);
            let mut version = 1;
            while killing.load(Ordering::Relaxed) {
                let page = format!("<h1>{site} v{version}</h1>");
                let archive =
                    decentraspace_tests::site_tar_gz(site, &[("index.html", page.as_bytes())])?;
                let form = reqwest::multipart::Form::new().text("site", site).part(
                    "archive",
                    reqwest::multipart::Part::bytes(archive).file_name("site.tar.gz"),
                );
                let request = api
                    .http
                    .post(api.url("/hosting/deploy"))
                    .bearer_auth(&owner.access)
                    .multipart(form);
                match once("deploy", 202, request).await? {
                    Some(queued) => {
                        deployed.push((site.to_owned(), queued["id"].as_i64().unwrap_or_default()))
                    }
                    None => lost += 1,
                }
                version += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            anyhow::Ok((deployed, (site.to_owned(), lost)))
        }));
    let uploads = async move {
        let (mut uploaded, mut lost) = (Vec::new(), 0i64);
        while killing.load(Ordering::Relaxed) {
            let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
            match once("upload", 201, upload(n)).await? {
                Some(file) => uploaded.push((
                    file["id"].as_i64().unwrap_or_default(),
                    file["cid"].as_str().unwrap_or_default().to_owned(),
                )),
                None => lost += 1,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok((uploaded, lost))
    };
    let killer = async {
        let mut seed = 0x5eed_u64;
        let killed = async {
            for _ in 0..KILLS {
                tokio::time::sleep(Duration::from_millis(1_200)).await;
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let victim = (seed >> 33) as usize % replicas.len();
                replicas[victim].kill9();
                let (process, started) = ApiProcess::serving(chain, db, &settings).await?;
                balancer.set(victim, started.base.clone());
                replicas[victim] = process;
            }
            anyhow::Ok(())
        }
        .await;
        killing.store(false, Ordering::Relaxed);
        killed
    };
    let (relayed, paid, deployed, uploaded, killed) =
        tokio::join!(relays, payments, deploys, uploads, killer);
    killed?;
    let (uploaded, uploads_lost) = uploaded?;
    let mut load = Load {
        relayed: relayed?.into_iter().flatten().collect(),
        paid: paid?,
        uploaded,
        uploads_lost,
        ..Load::default()
    };
    for (queued, (site, lost)) in deployed? {
        load.deployed.extend(queued);
        load.deploys_lost.insert(site, lost);
    }
    println!(
        "accepted across {KILLS} kills: {} relays, {} card payments, {} deploys ({:?} lost), {} uploads ({} lost)",
        load.relayed.len(),
        load.paid.len(),
        load.deployed.len(),
        load.deploys_lost,
        load.uploaded.len(),
        load.uploads_lost,
    );

    // The books are closed by replicas whose meter plans nothing new (each started in place of a
    // killed one, one more crash point): what is open still finishes, and nothing new starts.
    settings.retain(|(name, _)| *name != "METER_INTERVAL_SECS");
    settings.push(("METER_INTERVAL_SECS", "86400".to_owned()));
    for (n, replica) in replicas.iter_mut().enumerate() {
        replica.kill9();
        let (process, started) = ApiProcess::serving(chain, db, &settings).await?;
        balancer.set(n, started.base.clone());
        *replica = process;
    }

    // Everything accepted ends, once.
    let mut conn = db.connect().await?;
    let settled = || async {
        let open: i64 = sqlx::query_scalar(
            "select (select count(*) from chain_outbox where state in ('queued', 'signed', 'pending', 'mined'))
                  + (select count(*) from relayed_transactions where status in ('received', 'pending'))
                  + (select count(*) from card_payments where status in ('paid', 'crediting'))
                  + (select count(*) from meter_charges where status in ('pending', 'sending', 'sent'))
                  + (select count(*) from deployments where state not in ('live', 'failed'))",
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

    // Relays: each wallet's request ran once, and made one service.
    let forwarder = Forwarder::new(c.forwarder, chain.reader());
    let registry = ServiceRegistry::new(c.service_registry, chain.reader());
    for wallet in &load.relayed {
        assert_eq!(forwarder.nonces(*wallet).call().await?, U256::from(1), "{wallet} relayed once");
        let mined: i64 = sqlx::query_scalar(
            "select count(*) from relayed_transactions where account = $1 and status = 'mined'",
        )
        .bind(wallet.as_slice())
        .fetch_one(&mut conn)
        .await?;
        assert_eq!(mined, 1, "{wallet}: one record mined");
        assert_eq!(
            registry.openServices(*wallet, ServiceKind::StaticHosting.into()).call().await?,
            1,
            "{wallet}: one service"
        );
    }
    // Card payments: each credited once.
    let ledger = CreditLedger::new(c.credit_ledger, chain.reader());
    let expected: u64 = load.paid.iter().map(|(_, kobo)| kobo * RATE).sum();
    assert_eq!(
        ledger.balanceOf(payer_wallet.address()).call().await?,
        U256::from(expected),
        "every accepted payment credited once"
    );
    for (reference, _) in &load.paid {
        let status: String =
            sqlx::query_scalar("select status from card_payments where reference = $1")
                .bind(reference)
                .fetch_one(&mut conn)
                .await?;
        assert_eq!(status, "credited", "{reference}");
    }
    // Deployments: every queued one went live; a lost request made one at most.
    for (site, id) in &load.deployed {
        let (state, error, log): (String, Option<String>, String) =
            sqlx::query_as("select state, error, log from deployments where id = $1")
                .bind(id)
                .fetch_one(&mut conn)
                .await?;
        assert_eq!(state, "live", "{site}: deployment {id} ({error:?}); its log:\n{log}");
    }
    for site in SITES {
        let made: i64 = sqlx::query_scalar(
            "select count(*) from deployments d join sites s on s.id = d.site_id where s.name = $1",
        )
        .bind(site)
        .fetch_one(&mut conn)
        .await?;
        // The site's first deployment, made before the load, and each one queued since.
        let queued = 1 + load.deployed.iter().filter(|(s, _)| s == site).count() as i64;
        let lost = load.deploys_lost.get(site).copied().unwrap_or(0);
        assert!(
            made >= queued && made <= queued + lost,
            "{site}: {made} deployments for {queued} queued and {lost} lost"
        );
    }
    // Files: every stored one is recorded and pinned; a lost request stored one at most.
    for (id, cid) in &load.uploaded {
        let recorded: String = sqlx::query_scalar(
            "select content_id from storage_files where id = $1 and deleted_at is null",
        )
        .bind(id)
        .fetch_one(&mut conn)
        .await?;
        assert_eq!(&recorded, cid, "file {id}");
        assert!(ipfs.pinned(cid).await?, "file {id} ({cid}) is not pinned");
    }
    let files: i64 = sqlx::query_scalar("select count(*) from storage_files where service_id = $1")
        .bind(storage_service)
        .fetch_one(&mut conn)
        .await?;
    let stored = 1 + load.uploaded.len() as i64;
    assert!(
        files >= stored && files <= stored + load.uploads_lost,
        "{files} files for {stored} stored and {} lost",
        load.uploads_lost
    );
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
        let before = sent_before.get(&signer).copied().unwrap_or(0);
        assert_eq!(
            chain.reader().get_transaction_count(signer).await?,
            before + count as u64,
            "{signer}: one transaction per row"
        );
    }
    let report =
        decentraspace_indexer::verify::verify(&mut conn, &chain.endpoint(), &chain.deployment)
            .await?;
    assert!(report.differences.is_empty(), "verify: {:#?}", report.differences);
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

#[tokio::test]
async fn a_replica_stopped_by_sigterm_records_every_request_its_gateway_answered()
-> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let ipfs = TestIpfs::start().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let settings = [
        ("OPERATOR_PRIVATE_KEY", role_key(&chain, Role::Operator)),
        ("IPFS_API_URL", ipfs.api_url.clone()),
        ("IPFS_GATEWAY_URL", ipfs.gateway_url.clone()),
        ("CHAIN_CONFIRMATIONS", "0".to_owned()),
        ("SITES_DOMAIN", "sites.test".to_owned()),
        ("UPTIME_INTERVAL_SECS", "0".to_owned()),
    ];
    let (mut replica, api) = ApiProcess::serving_with_gateway(&chain, &db, &settings).await?;
    let owner = api.login_registered(&chain.user(7)).await?;
    api.deploy_site(&owner.access, "drained", "<h1>served</h1>").await?;

    // Requests answered well inside one flush interval, then SIGTERM at once: the rows are still
    // in the replica's buffer when the signal comes.
    const VISITS: usize = 200;
    let http = reqwest::Client::new();
    let visits = futures::future::join_all((0..VISITS).map(|_| {
        http.get(format!("{}/", api.gateway)).header("host", "drained.sites.test").send()
    }))
    .await;
    for visit in visits {
        assert_eq!(visit?.status().as_u16(), 200);
    }
    let status = replica.terminate().await?;
    assert!(status.success(), "the replica exited with {status}");

    let recorded: i64 = sqlx::query_scalar(
        "select coalesce(sum(t.requests), 0)::bigint from site_traffic t
         join sites s on s.id = t.site_id where s.name = 'drained'",
    )
    .fetch_one(&mut db.connect().await?)
    .await?;
    assert_eq!(recorded, VISITS as i64, "requests recorded of those the gateway answered");
    Ok(())
}
