//! Buying and renewing names end to end: anvil, Postgres, the indexer and the API against a local
//! server speaking Gandi's API. A purchase is charged in credits on-chain, registered, and
//! recorded with its expiry; too little credit charges and records nothing; a registrar failure
//! after the charge refunds it and records nothing; only the owner renews.

use alloy::primitives::{U256, keccak256};
use decentraspace_abi::{CreditLedger, DomainRegistry};
use decentraspace_tests::{
    ApiProcess, FakeGandi, GANDI_TOKEN, Hold, HoldingRpc, IndexerTask, Role, TestChain, TestDb,
    TestIpfs, api_config, eventually, indexer_config, problem_type, relay_signed, role_key,
};
use serde_json::json;

#[tokio::test]
async fn names_are_bought_and_renewed_with_credits_and_refunded_on_failure() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let gandi = FakeGandi::start().await?;
    let mut config = api_config(&chain, &db);
    config.registrar_api_url = gandi.url.clone();
    config.registrar_token = Some(GANDI_TOKEN.to_owned().into());
    config.registrar_contact = r#"{"type":"company","orgname":"DecentraSpace","email":"domains@decentraspace.io","country":"NG","given":"Ops","family":"Team","streetaddr":"1 Marina","city":"Lagos","zip":"101001","phone":"+234.1000000"}"#.into();
    config.registrar_key = Some(role_key(&chain, Role::Registrar).into());
    config.billing_key = Some(role_key(&chain, Role::Billing).into());
    config.payment_oracle_key = Some(role_key(&chain, Role::PaymentOracle).into());
    // A purchase the registrar did not answer is settled by the recovery pass.
    config.domain_recovery_secs = 1;
    config.domain_recovery_after_secs = 2;
    let api = decentraspace_tests::TestApi::start_with(config).await?;
    // 1 EUR cent = 0.01 credit: 10.00 EUR a year is 10 credits.
    let mut conn = db.connect().await?;
    sqlx::query("insert into fiat_rates (currency, credits_per_subunit, updated_by) values ('EUR', 10000, '\\x00')")
        .execute(&mut conn)
        .await?;
    let (wallet, other_wallet) = (chain.user(0), chain.user(1));
    let user = api.login_registered(&wallet).await?;
    let other = api.login_registered(&other_wallet).await?;
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    let registry = DomainRegistry::new(chain.deployment.contracts.domain_registry, chain.reader());
    let balance = || async { anyhow::Ok(ledger.balanceOf(wallet.address()).call().await?) };

    // The price, then a purchase without the credit: 402, nothing charged or recorded.
    let (status, price) =
        api.get("/domain/purchase?domain=mine.test&years=2", Some(&user.access)).await?;
    assert_eq!(status, 200, "{price}");
    assert_eq!(
        (price["available"].as_bool(), price["credits"].as_str()),
        (Some(true), Some("20000000"))
    );
    let buy = json!({ "domain": "mine.test", "years": 1 });
    let (status, problem) = api.post("/domain/purchase", Some(&user.access), &buy).await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (402, "insufficient-credit"),
        "{problem}"
    );
    assert_eq!(
        registry.ownerOf(keccak256("mine.test")).call().await?,
        alloy::primitives::Address::ZERO
    );
    assert_eq!(gandi.years("mine.test"), None, "the registrar was not asked");

    // 25 credits. A registrar failure after the charge: refunded, nothing recorded.
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle)
        .creditFiat(wallet.address(), U256::from(25_000_000u64), keccak256("purchase-funds"))
        .send()
        .await?
        .get_receipt()
        .await?;
    let (status, problem) = api
        .post("/domain/purchase", Some(&user.access), &json!({ "domain": "fail-me.test" }))
        .await?;
    assert_eq!(status, 503, "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("refunded")), "{problem}");
    // The registrar gave no answer, so the name may be registered: recovery asks it (it is
    // not), then refunds.
    eventually("the charge to be refunded", || async {
        Ok(balance().await? == U256::from(25_000_000u64))
    })
    .await?;
    assert_eq!(
        registry.ownerOf(keccak256("fail-me.test")).call().await?,
        alloy::primitives::Address::ZERO
    );

    // A name that is taken: 409 before anything is charged.
    let (status, _) = api
        .post("/domain/purchase", Some(&user.access), &json!({ "domain": "taken.test" }))
        .await?;
    assert_eq!(status, 409);

    // The purchase: charged 10 credits, registered, recorded with a year's expiry.
    let (status, bought) = api.post("/domain/purchase", Some(&user.access), &buy).await?;
    assert_eq!(status, 201, "{bought}");
    assert_eq!(
        (bought["state"].as_str(), bought["credits"].as_str()),
        (Some("recorded"), Some("10000000"))
    );
    assert_eq!(balance().await?, U256::from(15_000_000u64));
    assert_eq!(gandi.years("mine.test"), Some(1));
    let record = registry.domainOf(keccak256("mine.test")).call().await?;
    assert_eq!(record.owner, wallet.address());
    let year_later = chrono::Utc::now().timestamp() as u64 + 365 * 86_400;
    assert!(record.expiresAt.abs_diff(year_later) < 600, "expires in a year: {}", record.expiresAt);
    let (status, _) = api.post("/domain/purchase", Some(&other.access), &buy).await?;
    assert_eq!(status, 409, "held already");

    // Only the owner renews; a renewal extends the expiry by the term.
    let (status, problem) = api.post("/domain/purchase/renew", Some(&other.access), &buy).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "forbidden"), "{problem}");
    let (status, renewed) = api.post("/domain/purchase/renew", Some(&user.access), &buy).await?;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(gandi.years("mine.test"), Some(2));
    let renewed_record = registry.domainOf(keccak256("mine.test")).call().await?;
    assert_eq!(renewed_record.expiresAt, record.expiresAt + 365 * 86_400);
    assert_eq!(balance().await?, U256::from(5_000_000u64));
    eventually("the purchases to be listed as recorded", || async {
        let recorded: i64 =
            sqlx::query_scalar("select count(*) from domain_purchases where state = 'recorded'")
                .fetch_one(&mut db.connect().await?)
                .await?;
        Ok(recorded == 2)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn platform_names_are_bought_directly_and_owners_are_reminded_before_they_end()
-> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;
    let mut config = api_config(&chain, &db);
    config.platform_namespace = Some("dspace.test".into());
    config.platform_name_credits_per_year = 2_000_000;
    config.registrar_key = Some(role_key(&chain, Role::Registrar).into());
    config.billing_key = Some(role_key(&chain, Role::Billing).into());
    config.domain_reminder_secs = 1;
    config.ipfs_api_url = Some(ipfs.api_url.clone());
    config.ipfs_gateway_url = ipfs.gateway_url.clone();
    config.sites_domain = "sites.test".into();
    config.uptime_interval_secs = 0;
    // A name's first and renewed expiries (one and two years out) are both within the window.
    config.domain_remind_before_days = 800;
    let api = decentraspace_tests::TestApi::start_with(config).await?;
    let wallet = chain.user(0);
    let user = api.login_registered(&wallet).await?;
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle)
        .creditFiat(wallet.address(), U256::from(5_000_000u64), keccak256("namespace-funds"))
        .send()
        .await?
        .get_receipt()
        .await?;
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    let registry = DomainRegistry::new(chain.deployment.contracts.domain_registry, chain.reader());

    // The platform's own names need no registrar; other names do (none is configured here).
    let (status, price) =
        api.get("/domain/purchase?domain=alice.dspace.test", Some(&user.access)).await?;
    assert_eq!((status, price["credits"].as_str()), (200, Some("2000000")), "{price}");
    let (status, _) = api
        .post("/domain/purchase", Some(&user.access), &json!({ "domain": "a.b.dspace.test" }))
        .await?;
    assert_eq!(status, 400, "one label under the namespace");
    let (status, _) = api
        .post("/domain/purchase", Some(&user.access), &json!({ "domain": "elsewhere.test" }))
        .await?;
    assert_eq!(status, 503, "no registrar");
    let buy = json!({ "domain": "alice.dspace.test" });
    let (status, bought) = api.post("/domain/purchase", Some(&user.access), &buy).await?;
    assert_eq!(status, 201, "{bought}");
    assert_eq!(ledger.balanceOf(wallet.address()).call().await?, U256::from(3_000_000u64));
    assert_eq!(registry.ownerOf(keccak256("alice.dspace.test")).call().await?, wallet.address());

    // A bought name links to the owner's site without a proof, and the gateway serves it there.
    api.deploy_site(&user.access, "alice", "<h1>alice</h1>").await?;
    let (status, verified) = api
        .post(
            "/domain/link",
            Some(&user.access),
            &json!({ "domain": "alice.dspace.test", "site": "alice" }),
        )
        .await?;
    assert_eq!((status, verified["method"].as_str()), (200, Some("purchase")), "{verified}");
    assert_eq!(verified["records"].as_array().map(Vec::len), Some(1), "only the CNAME: {verified}");
    let link: alloy::primitives::Bytes =
        verified["call"]["data"].as_str().unwrap_or_default().parse()?;
    let sent = relay_signed(
        &api,
        &chain,
        &wallet,
        &user.access,
        chain.deployment.contracts.domain_registry,
        link,
    )
    .await?;
    assert_eq!(sent["status"], "mined", "{sent}");
    eventually("the bought name to be served", || async {
        let response = api
            .http
            .get(format!("{}/", api.gateway))
            .header("host", "alice.dspace.test")
            .send()
            .await?;
        Ok(response.status() == 200 && response.text().await? == "<h1>alice</h1>")
    })
    .await?;

    // The owner is reminded once per expiry: listed, and again after a renewal moves it.
    let expiring = || async {
        let (_, page) = api.get("/notices", Some(&user.access)).await?;
        anyhow::Ok(
            page["items"]
                .as_array()
                .map(|items| items.iter().filter(|n| n["kind"] == "domain_expiring").count())
                .unwrap_or(0),
        )
    };
    eventually("the reminder", || async { Ok(expiring().await? == 1) }).await?;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(expiring().await?, 1, "not repeated for the same expiry");
    let (_, page) = api.get("/notices", Some(&user.access)).await?;
    assert_eq!(page["items"][0]["data"]["domain"], "alice.dspace.test", "{page}");
    let (status, _) = api.post("/domain/purchase/renew", Some(&user.access), &buy).await?;
    assert_eq!(status, 200);
    assert_eq!(ledger.balanceOf(wallet.address()).call().await?, U256::from(1_000_000u64));
    eventually("a reminder for the new expiry", || async { Ok(expiring().await? == 2) }).await?;
    Ok(())
}

#[tokio::test]
async fn purchases_interrupted_between_the_charge_and_the_record_are_settled() -> anyhow::Result<()>
{
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let gandi = FakeGandi::start().await?;
    let mut config = api_config(&chain, &db);
    config.registrar_api_url = gandi.url.clone();
    config.registrar_token = Some(GANDI_TOKEN.to_owned().into());
    config.registrar_key = Some(role_key(&chain, Role::Registrar).into());
    config.payment_oracle_key = Some(role_key(&chain, Role::PaymentOracle).into());
    config.domain_recovery_secs = 1;
    config.domain_recovery_after_secs = 0;
    let wallet = chain.user(0);
    let c = chain.deployment.contracts;
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(c.credit_ledger, &oracle)
        .creditFiat(wallet.address(), U256::from(30_000_000u64), keccak256("recovery-funds"))
        .send()
        .await?
        .get_receipt()
        .await?;

    // Three purchases as a crash left them: charged and taken by the registrar; charged and not
    // taken; never charged.
    let mut conn = db.connect().await?;
    let billing = chain.provider_as(chain.role(Role::Billing));
    let ledger = CreditLedger::new(c.credit_ledger, &billing);
    let mut ids = Vec::new();
    for (name, state, charge) in [
        ("held.test", "registering", true),
        ("lost.test", "charging", true),
        ("never.test", "charging", false),
    ] {
        let id: i64 = sqlx::query_scalar(
            "insert into domain_purchases (chain_id, account, name, kind, years, credits, price_subunits, currency, state, expires_at)
             values ($1, $2, $3, 'purchase', 1, 10000000, 1000, 'EUR', $4, now() + interval '365 days') returning id",
        )
        .bind(chain.chain_id() as i64)
        .bind(wallet.address().as_slice())
        .bind(name)
        .bind(state)
        .fetch_one(&mut conn)
        .await?;
        if charge {
            let reference = keccak256(format!("domain-purchase:{}:{id}", chain.chain_id()));
            ledger
                .deduct(wallet.address(), U256::ZERO, U256::from(10_000_000u64), reference)
                .send()
                .await?
                .get_receipt()
                .await?;
        }
        ids.push(id);
    }
    gandi.hold("held.test");
    assert_eq!(ledger.balanceOf(wallet.address()).call().await?, U256::from(10_000_000u64));

    let _api = decentraspace_tests::TestApi::start_with(config).await?;
    eventually("the purchases to be settled", || async {
        let states: Vec<String> =
            sqlx::query_scalar("select state from domain_purchases order by id")
                .fetch_all(&mut db.connect().await?)
                .await?;
        Ok(states == ["recorded", "refunded", "failed"])
    })
    .await?;
    let registry = DomainRegistry::new(c.domain_registry, chain.reader());
    assert_eq!(registry.ownerOf(keccak256("held.test")).call().await?, wallet.address());
    assert_eq!(
        registry.ownerOf(keccak256("lost.test")).call().await?,
        alloy::primitives::Address::ZERO
    );
    assert_eq!(
        ledger.balanceOf(wallet.address()).call().await?,
        U256::from(20_000_000u64),
        "the charge the registrar never used is refunded, once"
    );
    Ok(())
}

#[tokio::test]
async fn a_bought_name_points_at_its_site_while_linked_and_keeps_its_owners_records()
-> anyhow::Result<()> {
    let ipfs = TestIpfs::start().await?;
    let (ipfs_api, ipfs_gateway) = (ipfs.api_url.clone(), ipfs.gateway_url.clone());
    let (chain, _db, _indexer, gandi, config) = registrar_stack(move |config| {
        config.ipfs_api_url = Some(ipfs_api);
        config.ipfs_gateway_url = ipfs_gateway;
        config.sites_domain = "sites.test".into();
        config.uptime_interval_secs = 0;
        // Zones are read again every 2 s (drift repaired that soon).
        config.domain_recheck_secs = 2;
    })
    .await?;
    let api = decentraspace_tests::TestApi::start_with(config).await?;
    let (wallet, other_wallet) = (chain.user(0), chain.user(1));
    let user = api.login_registered(&wallet).await?;
    let other = api.login_registered(&other_wallet).await?;
    fund(&chain, wallet.address(), 25_000_000).await?;
    let (status, bought) =
        api.post("/domain/purchase", Some(&user.access), &json!({ "domain": "shop.test" })).await?;
    assert_eq!(status, 201, "{bought}");
    // Fresh from the registrar: its parking page.
    assert_eq!(gandi.record("shop.test", "@", "A"), Some(vec!["217.70.184.38".to_owned()]));

    // The owner's mail records, through the API; the platform's sets are refused.
    let mx = json!({ "values": ["10 mx1.mail.example.", "20 mx2.mail.example."] });
    let (status, set) = api
        .send(reqwest::Method::PUT, "/domain/dns/shop.test/@/MX", Some(&user.access), Some(&mx))
        .await?;
    assert_eq!(status, 200, "{set}");
    let (status, problem) = api
        .send(
            reqwest::Method::PUT,
            "/domain/dns/shop.test/www/CNAME",
            Some(&user.access),
            Some(&json!({ "values": ["evil.example."] })),
        )
        .await?;
    assert_eq!((status, problem_type(&problem).as_str()), (409, "conflict"), "{problem}");
    let (status, _) = api
        .send(reqwest::Method::PUT, "/domain/dns/shop.test/@/MX", Some(&other.access), Some(&mx))
        .await?;
    assert_eq!(status, 404, "another wallet's name");

    // Linked to a site: the link answer asks for no records, and the zone points at the site.
    api.deploy_site(&user.access, "shop", "<h1>shop</h1>").await?;
    let (status, verified) = api
        .post("/domain/link", Some(&user.access), &json!({ "domain": "shop.test", "site": "shop" }))
        .await?;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(
        (verified["dns_managed"].as_bool(), verified["records"].as_array().map(Vec::len)),
        (Some(true), Some(0)),
        "{verified}"
    );
    let send = |data: &str| {
        let data: alloy::primitives::Bytes = data.parse().expect("call data");
        relay_signed(
            &api,
            &chain,
            &wallet,
            &user.access,
            chain.deployment.contracts.domain_registry,
            data,
        )
    };
    let sent = send(verified["call"]["data"].as_str().unwrap_or_default()).await?;
    assert_eq!(sent["status"], "mined", "{sent}");
    let site = vec!["shop.sites.test.".to_owned()];
    let pointed = || {
        gandi.record("shop.test", "@", "ALIAS").as_ref() == Some(&site)
            && gandi.record("shop.test", "www", "CNAME").as_ref() == Some(&site)
            && gandi.record("shop.test", "@", "A").is_none()
    };
    eventually("the zone to point at the site", || async { Ok(pointed()) }).await?;
    let (_, records) = api.get("/domain/dns/shop.test", Some(&user.access)).await?;
    let platform: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["platform"] == true)
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(platform, ["ALIAS", "CNAME"], "{records}");

    // Changed behind the platform's back: repaired; the owner's MX untouched.
    gandi.set_record("shop.test", "www", "CNAME", &["elsewhere.example."]);
    gandi.set_record("shop.test", "@", "ALIAS", &[]);
    eventually("the drift to be repaired", || async { Ok(pointed()) }).await?;
    let mail = Some(vec!["10 mx1.mail.example.".to_owned(), "20 mx2.mail.example.".to_owned()]);
    assert_eq!(gandi.record("shop.test", "@", "MX"), mail);

    // Unlinked: the platform's records go, the owner's stay; relinked: back.
    let (_, unlink) =
        api.post("/domain/unlink", Some(&user.access), &json!({ "domain": "shop.test" })).await?;
    let sent = send(unlink["data"].as_str().unwrap_or_default()).await?;
    assert_eq!(sent["status"], "mined", "{sent}");
    eventually("the platform's records to be removed", || async {
        Ok(gandi.record("shop.test", "@", "ALIAS").is_none()
            && gandi.record("shop.test", "www", "CNAME").is_none())
    })
    .await?;
    assert_eq!(gandi.record("shop.test", "@", "MX"), mail);
    let (_, verified) = api
        .post("/domain/link", Some(&user.access), &json!({ "domain": "shop.test", "site": "shop" }))
        .await?;
    let sent = send(verified["call"]["data"].as_str().unwrap_or_default()).await?;
    assert_eq!(sent["status"], "mined", "{sent}");
    eventually("the zone to point at the site again", || async { Ok(pointed()) }).await?;

    // The owner removes their MX; the platform's sets cannot be removed.
    let (status, _) = api
        .send(reqwest::Method::DELETE, "/domain/dns/shop.test/@/MX", Some(&user.access), None)
        .await?;
    assert_eq!(status, 204);
    assert_eq!(gandi.record("shop.test", "@", "MX"), None);
    let (status, _) = api
        .send(reqwest::Method::DELETE, "/domain/dns/shop.test/@/ALIAS", Some(&user.access), None)
        .await?;
    assert_eq!(status, 409);
    assert!(pointed());
    Ok(())
}

/// A stack with the fake registrar and every key purchases use, and 10.00 EUR a year = 10
/// credits; `change` adjusts the configuration.
async fn registrar_stack(
    change: impl FnOnce(&mut decentraspace_api::Config),
) -> anyhow::Result<(TestChain, TestDb, IndexerTask, FakeGandi, decentraspace_api::Config)> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let gandi = FakeGandi::start().await?;
    let mut config = api_config(&chain, &db);
    config.registrar_api_url = gandi.url.clone();
    config.registrar_token = Some(GANDI_TOKEN.to_owned().into());
    config.registrar_contact = r#"{"type":"company","orgname":"DecentraSpace","email":"domains@decentraspace.io","country":"NG"}"#.into();
    config.registrar_key = Some(role_key(&chain, Role::Registrar).into());
    config.billing_key = Some(role_key(&chain, Role::Billing).into());
    config.payment_oracle_key = Some(role_key(&chain, Role::PaymentOracle).into());
    change(&mut config);
    sqlx::query("insert into fiat_rates (currency, credits_per_subunit, updated_by) values ('EUR', 10000, '\\x00')")
        .execute(&mut db.connect().await?)
        .await?;
    Ok((chain, db, indexer, gandi, config))
}

/// Gives `account` `units` credit units as a card payment would.
async fn fund(
    chain: &TestChain,
    account: alloy::primitives::Address,
    units: u64,
) -> anyhow::Result<()> {
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle)
        .creditFiat(account, U256::from(units), keccak256(format!("funds:{account}:{units}")))
        .send()
        .await?
        .get_receipt()
        .await?;
    Ok(())
}

#[tokio::test]
async fn bought_names_renew_themselves_once_unless_turned_off_and_an_unpaid_one_charges_nothing()
-> anyhow::Result<()> {
    let (chain, db, _indexer, gandi, config) = registrar_stack(|config| {
        config.domain_auto_renew_secs = 1;
    })
    .await?;
    let api = decentraspace_tests::TestApi::start_with(config).await?;
    let (alice_wallet, bob_wallet) = (chain.user(0), chain.user(1));
    let alice = api.login_registered(&alice_wallet).await?;
    let bob = api.login_registered(&bob_wallet).await?;
    // Alice can pay for two names and one renewal; Bob for one name and nothing more.
    fund(&chain, alice_wallet.address(), 30_000_000).await?;
    fund(&chain, bob_wallet.address(), 10_000_000).await?;
    for (session, name) in [(&alice, "kept.test"), (&alice, "dropped.test"), (&bob, "broke.test")] {
        let (status, bought) =
            api.post("/domain/purchase", Some(&session.access), &json!({ "domain": name })).await?;
        assert_eq!(status, 201, "{name}: {bought}");
    }
    let off = json!({ "domain": "dropped.test", "enabled": false });
    let (status, problem) = api
        .send(reqwest::Method::PUT, "/domain/purchase/auto-renew", Some(&bob.access), Some(&off))
        .await?;
    assert_eq!(status, 403, "another wallet's name: {problem}");
    let (status, set) = api
        .send(reqwest::Method::PUT, "/domain/purchase/auto-renew", Some(&alice.access), Some(&off))
        .await?;
    assert_eq!((status, set["enabled"].as_bool()), (200, Some(false)), "{set}");
    let registry = DomainRegistry::new(chain.deployment.contracts.domain_registry, chain.reader());
    let kept_until = registry.domainOf(keccak256("kept.test")).call().await?.expiresAt;

    // Almost a year on (ten days left), the names are due.
    let now = chain.time().await?;
    chain.mine_at(now + 355 * 86_400).await?;
    eventually("kept.test to be renewed and Bob told he cannot pay", || async {
        let (_, notices) = api.get("/notices", Some(&bob.access)).await?;
        let unpaid = notices["items"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["kind"] == "domain_renewal_unpaid"));
        Ok(gandi.years("kept.test") == Some(2) && unpaid)
    })
    .await?;
    // Passes go on: nothing more is renewed or charged.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        (gandi.years("kept.test"), gandi.years("dropped.test"), gandi.years("broke.test")),
        (Some(2), Some(1), Some(1))
    );
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    assert_eq!(
        ledger.balanceOf(alice_wallet.address()).call().await?,
        U256::ZERO,
        "one renewal charged"
    );
    assert_eq!(ledger.balanceOf(bob_wallet.address()).call().await?, U256::ZERO);
    let renewals: Vec<(String, String)> = sqlx::query_as(
        "select name, state from domain_purchases where kind = 'renewal' order by id",
    )
    .fetch_all(&mut db.connect().await?)
    .await?;
    assert_eq!(renewals, [("kept.test".to_owned(), "recorded".to_owned())]);
    assert_eq!(
        registry.domainOf(keccak256("kept.test")).call().await?.expiresAt,
        kept_until + 365 * 86_400
    );
    // The unpaid name is still Bob's until it ends; Alice was told of her renewal.
    assert_eq!(registry.ownerOf(keccak256("broke.test")).call().await?, bob_wallet.address());
    let (_, notices) = api.get("/notices", Some(&alice.access)).await?;
    assert_eq!(notices["items"][0]["kind"], "domain_renewed", "{notices}");
    assert_eq!(notices["items"][0]["data"]["domain"], "kept.test", "{notices}");
    Ok(())
}

#[tokio::test]
async fn a_renewal_cut_off_is_settled_by_what_the_registrar_did() -> anyhow::Result<()> {
    let (chain, db, _indexer, gandi, config) = registrar_stack(|_| {}).await?;
    let api = decentraspace_tests::TestApi::start_with(config.clone()).await?;
    let wallet = chain.user(0);
    let user = api.login_registered(&wallet).await?;
    fund(&chain, wallet.address(), 40_000_000).await?;
    for name in ["renewed.test", "unrenewed.test"] {
        let (status, bought) =
            api.post("/domain/purchase", Some(&user.access), &json!({ "domain": name })).await?;
        assert_eq!(status, 201, "{bought}");
    }
    let registry = DomainRegistry::new(chain.deployment.contracts.domain_registry, chain.reader());
    let until = |name: &'static str| {
        let registry = &registry;
        async move { anyhow::Ok(registry.domainOf(keccak256(name)).call().await?.expiresAt) }
    };
    let (renewed_until, unrenewed_until) =
        (until("renewed.test").await?, until("unrenewed.test").await?);

    // Two renewals a crash left charged and asking the registrar: it renewed one, not the other.
    let mut conn = db.connect().await?;
    let billing = chain.provider_as(chain.role(Role::Billing));
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, &billing);
    for (name, from) in [("renewed.test", renewed_until), ("unrenewed.test", unrenewed_until)] {
        let id: i64 = sqlx::query_scalar(
            "insert into domain_purchases (chain_id, account, name, kind, years, credits, price_subunits, currency, state, expires_at)
             values ($1, $2, $3, 'renewal', 1, 10000000, 1000, 'EUR', 'registering', to_timestamp($4) + interval '365 days') returning id",
        )
        .bind(chain.chain_id() as i64)
        .bind(wallet.address().as_slice())
        .bind(name)
        .bind(from as f64)
        .fetch_one(&mut conn)
        .await?;
        let reference = keccak256(format!("domain-renewal:{}:{id}", chain.chain_id()));
        ledger
            .deduct(wallet.address(), U256::ZERO, U256::from(10_000_000u64), reference)
            .send()
            .await?
            .get_receipt()
            .await?;
    }
    gandi.renew("renewed.test", 1);
    assert_eq!(ledger.balanceOf(wallet.address()).call().await?, U256::ZERO);

    // A replica that settles cut-off purchases at once.
    let mut recovering = config;
    recovering.domain_recovery_secs = 1;
    recovering.domain_recovery_after_secs = 0;
    let _recovery = decentraspace_tests::TestApi::start_with(recovering).await?;
    eventually("the renewals to be settled", || async {
        let states: Vec<String> = sqlx::query_scalar(
            "select state from domain_purchases where kind = 'renewal' order by id",
        )
        .fetch_all(&mut db.connect().await?)
        .await?;
        Ok(states == ["recorded", "refunded"])
    })
    .await?;
    assert_eq!(
        until("renewed.test").await?,
        renewed_until + 365 * 86_400,
        "the renewal carried out is recorded"
    );
    assert_eq!(until("unrenewed.test").await?, unrenewed_until, "the one never carried out is not");
    assert_eq!(
        ledger.balanceOf(wallet.address()).call().await?,
        U256::from(10_000_000u64),
        "only the renewal the registrar never carried out is refunded, once"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_renewal_killed_at_each_step_renews_once_and_charges_once() -> anyhow::Result<()> {
    let (chain, db, _indexer, gandi, config) = registrar_stack(|_| {}).await?;
    let wallet = chain.user(0);
    // Two names (10 credits each) and a renewal of each.
    fund(&chain, wallet.address(), 40_000_000).await?;
    {
        let api = decentraspace_tests::TestApi::start_with(config.clone()).await?;
        let user = api.login_registered(&wallet).await?;
        for name in ["early.test", "late.test"] {
            let (status, bought) = api
                .post("/domain/purchase", Some(&user.access), &json!({ "domain": name }))
                .await?;
            assert_eq!(status, 201, "{bought}");
        }
    }
    let registry = DomainRegistry::new(chain.deployment.contracts.domain_registry, chain.reader());
    let until = |name: &'static str| {
        let registry = &registry;
        async move { anyhow::Ok(registry.domainOf(keccak256(name)).call().await?.expiresAt) }
    };
    let (early_until, late_until) = (until("early.test").await?, until("late.test").await?);
    // Ten days before they end: both due.
    let now = chain.time().await?;
    chain.mine_at(now + 355 * 86_400).await?;
    let keys = |rpc: &str, recovery: &str| {
        vec![
            ("RPC_URL", rpc.to_owned()),
            ("REGISTRAR_API_URL", gandi.url.clone()),
            ("REGISTRAR_TOKEN", GANDI_TOKEN.to_owned()),
            ("REGISTRAR_PRIVATE_KEY", role_key(&chain, Role::Registrar)),
            ("BILLING_PRIVATE_KEY", role_key(&chain, Role::Billing)),
            ("PAYMENT_ORACLE_PRIVATE_KEY", role_key(&chain, Role::PaymentOracle)),
            ("DOMAIN_AUTO_RENEW_SECS", "1".to_owned()),
            ("DOMAIN_RECOVERY_SECS", recovery.to_owned()),
            ("DOMAIN_RECOVERY_AFTER_SECS", "0".to_owned()),
        ]
    };
    let renewals = || async {
        anyhow::Ok(
            sqlx::query_as::<_, (String, String)>(
                "select name, state from domain_purchases where kind = 'renewal' order by id",
            )
            .fetch_all(&mut db.connect().await?)
            .await?,
        )
    };

    // Killed while its charge is being sent: the first renewal's transaction is held before the
    // node has it.
    let rpc = HoldingRpc::start(
        chain.endpoint(),
        "eth_sendRawTransaction",
        std::time::Duration::from_secs(60),
    )
    .await?;
    rpc.set(Hold::Request);
    let mut charging = ApiProcess::spawn(&chain, &db, &keys(&rpc.url, "0"))?;
    eventually("the first renewal's charge to be sent", || async { Ok(rpc.holding() >= 1) })
        .await?;
    charging.kill9();
    assert_eq!(renewals().await?, [("early.test".to_owned(), "charging".to_owned())]);

    // Killed after the registrar renewed the second name, before it answered.
    gandi.stall_renewals(true);
    let mut asking = ApiProcess::spawn(&chain, &db, &keys(&chain.endpoint(), "0"))?;
    eventually("the second renewal to reach the registrar", || async { Ok(gandi.stalled() == 1) })
        .await?;
    asking.kill9();
    assert_eq!(gandi.years("late.test"), Some(2));
    gandi.stall_renewals(false);

    // A replica that settles what was cut off and goes on renewing.
    let _settling = ApiProcess::spawn(&chain, &db, &keys(&chain.endpoint(), "1"))?;
    eventually("both names renewed and recorded", || async {
        Ok(until("early.test").await? == early_until + 365 * 86_400
            && until("late.test").await? == late_until + 365 * 86_400)
    })
    .await?;
    eventually("every renewal settled", || async {
        let rows = renewals().await?;
        Ok(rows.iter().all(|(_, state)| state == "recorded" || state == "refunded"))
    })
    .await?;
    // Passes go on: nothing more is renewed or charged.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!((gandi.years("early.test"), gandi.years("late.test")), (Some(2), Some(2)));
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    assert_eq!(
        ledger.balanceOf(wallet.address()).call().await?,
        U256::ZERO,
        "each name's renewal charged once, net of any refund"
    );
    let recorded: Vec<String> = renewals()
        .await?
        .into_iter()
        .filter(|(_, state)| state == "recorded")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(recorded.len(), 2, "one recorded renewal per name: {recorded:?}");
    Ok(())
}
