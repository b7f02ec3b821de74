//! Every event of every platform contract lands in its projection with the right values; the
//! projections survive a full re-fold unchanged, match the chain (`verify`), and listeners are
//! notified of each batch.

use std::time::Duration;

use alloy::{
    primitives::{Address, U256, keccak256},
    providers::Provider,
    rpc::types::Filter,
    signers::local::PrivateKeySigner,
};
use decentraspace_abi::{
    AccountRegistry, CreditLedger, DomainRegistry, OwnershipMethod, ServiceKind, ServiceRegistry,
    TestToken, Tier,
};
use decentraspace_indexer::{store, verify};
use decentraspace_tests::{
    IndexerTask, Role, TestChain, TestDb, indexer_config, wait_for_checkpoint,
};
use sqlx::{PgConnection, Row};

/// Sends a contract call and waits until it is mined successfully.
macro_rules! mined {
    ($call:expr) => {{
        let receipt = $call.send().await?.get_receipt().await?;
        anyhow::ensure!(receipt.status(), "reverted: {}", stringify!($call));
        receipt
    }};
}

/// Drives every event of every contract; returns the accounts it used.
async fn drive_every_event(chain: &TestChain) -> anyhow::Result<(Address, Address)> {
    let c = chain.deployment.contracts;
    let token_address = c.test_token().expect("test token");
    let (alice, bob): (PrivateKeySigner, PrivateKeySigner) = (chain.user(0), chain.user(1));
    let p_alice = chain.provider_as(alice.clone());
    let p_bob = chain.provider_as(bob.clone());
    let p_admin = chain.provider_as(chain.role(Role::Admin));
    let p_operator = chain.provider_as(chain.role(Role::Operator));
    let p_oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    let p_billing = chain.provider_as(chain.role(Role::Billing));
    let p_registrar = chain.provider_as(chain.role(Role::Registrar));
    let p_verifier = chain.provider_as(chain.role(Role::Verifier));

    // Accounts: register, fund, upgrade, status and tier changes, policy.
    mined!(AccountRegistry::new(c.account_registry, &p_alice).register());
    mined!(AccountRegistry::new(c.account_registry, &p_bob).register());
    mined!(CreditLedger::new(c.credit_ledger, &p_oracle).creditFiat(
        alice.address(),
        U256::from(50_000_000),
        keccak256("paystack-ref-1")
    ));
    mined!(AccountRegistry::new(c.account_registry, &p_alice).upgrade(2));
    mined!(AccountRegistry::new(c.account_registry, &p_operator).setStatus(bob.address(), 2));
    mined!(AccountRegistry::new(c.account_registry, &p_operator).setStatus(bob.address(), 1));
    mined!(AccountRegistry::new(c.account_registry, &p_operator).setTier(
        bob.address(),
        Tier::Paid.into(),
        0
    ));
    mined!(AccountRegistry::new(c.account_registry, &p_operator).setFreeTierDuration(90 * 86_400));
    mined!(
        AccountRegistry::new(c.account_registry, &p_admin).setPaidTierPrice(U256::from(4_000_000))
    );

    // Roles: grant and revoke.
    let ledger_admin = CreditLedger::new(c.credit_ledger, &p_admin);
    let billing_role = ledger_admin.BILLING_ROLE().call().await?;
    mined!(ledger_admin.grantRole(billing_role, bob.address()));
    mined!(ledger_admin.revokeRole(billing_role, bob.address()));

    // Credits: token recharge, rates, withdrawal.
    let token = TestToken::new(token_address, &p_alice);
    mined!(token.mint(alice.address(), U256::from(10_000_000)));
    mined!(token.approve(c.credit_ledger, U256::from(10_000_000)));
    mined!(
        CreditLedger::new(c.credit_ledger, &p_alice)
            .recharge(token_address, U256::from(10_000_000))
    );
    mined!(
        ledger_admin
            .setTokenRate(token_address, U256::from(2) * U256::from(10).pow(U256::from(18)))
    );
    mined!(ledger_admin.withdraw(
        token_address,
        chain.role(Role::Admin).address(),
        U256::from(1_000)
    ));

    // Services: every state, expiry, prices and limits.
    let services = ServiceRegistry::new(c.service_registry, &p_alice);
    let site = mined!(services.createService(ServiceKind::StaticHosting.into(), keccak256("site")))
        .decoded_log::<ServiceRegistry::ServiceCreated>()
        .expect("ServiceCreated")
        .serviceId;
    let files = mined!(services.createService(ServiceKind::Storage.into(), keccak256("files")))
        .decoded_log::<ServiceRegistry::ServiceCreated>()
        .expect("ServiceCreated")
        .serviceId;
    mined!(services.pause(files));
    // A batch with one paused (skipped) and one active service.
    mined!(CreditLedger::new(c.credit_ledger, &p_billing).deductBatch(
        vec![alice.address(), alice.address()],
        vec![site, files],
        vec![U256::from(1_000), U256::from(500)],
        vec![keccak256("usage-1"), keccak256("usage-2")]
    ));
    mined!(services.resume(files));
    let ops = ServiceRegistry::new(c.service_registry, &p_operator);
    mined!(ops.suspend(files));
    mined!(ops.setExpiry(site, 4_102_444_800));
    mined!(services.cancel(files));
    let services_admin = ServiceRegistry::new(c.service_registry, &p_admin);
    mined!(services_admin.setPrice(
        ServiceKind::Database.into(),
        Tier::Paid.into(),
        U256::from(7_777)
    ));
    mined!(services_admin.setTierLimit(ServiceKind::Database.into(), Tier::Paid.into(), 9));

    // Bob's credits run out: a deduction to exactly zero.
    mined!(CreditLedger::new(c.credit_ledger, &p_oracle).creditFiat(
        bob.address(),
        U256::from(300),
        keccak256("paystack-ref-2")
    ));
    mined!(CreditLedger::new(c.credit_ledger, &p_billing).deduct(
        bob.address(),
        U256::ZERO,
        U256::from(300),
        keccak256("usage-3")
    ));

    // Domains: purchase, renew, link, unlink, transfer, release; a DNS proof.
    let registrar = DomainRegistry::new(c.domain_registry, &p_registrar);
    let far = 4_102_444_800u64;
    let bought = mined!(registrar.recordPurchase("alice.dspace".into(), alice.address(), far))
        .decoded_log::<DomainRegistry::DomainRegistered>()
        .expect("DomainRegistered")
        .node;
    mined!(registrar.renew(bought, far + 86_400));
    let domains = DomainRegistry::new(c.domain_registry, &p_alice);
    mined!(domains.link(bought, site));
    mined!(domains.unlink(bought));
    mined!(domains.link(bought, site));
    mined!(domains.transfer(bought, bob.address()));
    let verifier = DomainRegistry::new(c.domain_registry, &p_verifier);
    let proven = mined!(verifier.recordVerification("example.org".into(), alice.address(), 2))
        .decoded_log::<DomainRegistry::DomainVerified>()
        .expect("DomainVerified")
        .node;
    mined!(domains.link(proven, site));
    let released = mined!(verifier.recordVerification("gone.example".into(), bob.address(), 3))
        .decoded_log::<DomainRegistry::DomainVerified>()
        .expect("DomainVerified")
        .node;
    mined!(DomainRegistry::new(c.domain_registry, &p_bob).release(released));
    Ok((alice.address(), bob.address()))
}

/// Every projection table as text, in a fixed order, for equality checks.
async fn snapshot(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let mut rows = Vec::new();
    for table in [
        "accounts",
        "credit_balances",
        "services",
        "domains",
        "role_members",
        "token_rates",
        "service_prices",
        "tier_limits",
        "contract_settings",
    ] {
        let query = format!("select t::text from {table} t order by t::text");
        for row in sqlx::query(sqlx::AssertSqlSafe(query)).fetch_all(&mut *conn).await? {
            rows.push(format!("{table}: {}", row.get::<String, _>(0)));
        }
    }
    Ok(rows)
}

#[tokio::test]
async fn every_event_lands_in_its_projection() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let chain_id = chain.chain_id();
    let (alice, bob) = drive_every_event(&chain).await?;
    let head = chain.reader().get_block_number().await?;

    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await?;
    listener.listen(decentraspace_db::channels::INDEXED).await?;
    let indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    wait_for_checkpoint(&db, chain_id, head, Duration::from_secs(30)).await?;
    indexer.stop().await?;
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await??;
    let payload: serde_json::Value = serde_json::from_str(note.payload())?;
    assert_eq!(payload["chain_id"], chain_id);

    let mut conn = db.connect().await?;
    // Every platform log is stored once.
    let logs = chain
        .reader()
        .get_logs(
            &Filter::new()
                .address(chain.deployment.contracts.registries().to_vec())
                .from_block(chain.deployment.deploy_block),
        )
        .await?;
    assert_eq!(store::events::count(&mut conn, chain_id).await?, logs.len() as i64);
    let names: Vec<String> =
        sqlx::query_scalar("select distinct event_name from events where event_name is not null")
            .fetch_all(&mut conn)
            .await?;
    for expected in [
        "AccountRegistered",
        "TierChanged",
        "AccountStatusChanged",
        "AccountUpgraded",
        "FreeTierDurationChanged",
        "PaidTierPriceChanged",
        "CreditLedgerChanged",
        "RoleGranted",
        "RoleRevoked",
        "Upgraded",
        "Initialized",
        "CreditsRecharged",
        "FiatCredited",
        "CreditsDeducted",
        "DeductionSkipped",
        "CreditDepleted",
        "TokenRateSet",
        "TreasuryWithdrawn",
        "ServiceRegistryChanged",
        "ServiceCreated",
        "ServicePaused",
        "ServiceResumed",
        "ServiceSuspended",
        "ServiceCancelled",
        "ServiceExpirySet",
        "PriceSet",
        "TierLimitSet",
        "DomainRegistered",
        "DomainRenewed",
        "DomainVerified",
        "DomainLinked",
        "DomainUnlinked",
        "DomainTransferred",
        "DomainReleased",
    ] {
        assert!(names.iter().any(|n| n == expected), "no {expected} indexed; have {names:?}");
    }

    // Projections hold the chain's values.
    let c = chain.deployment.contracts;
    let reader = chain.reader();
    let ledger = CreditLedger::new(c.credit_ledger, &reader);
    let balance: String = sqlx::query_scalar(
        "select balance::text from credit_balances where chain_id = $1 and account = $2",
    )
    .bind(chain_id as i64)
    .bind(alice.as_slice())
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(balance, ledger.balanceOf(alice).call().await?.to_string());
    let bob_balance: String = sqlx::query_scalar(
        "select balance::text from credit_balances where chain_id = $1 and account = $2",
    )
    .bind(chain_id as i64)
    .bind(bob.as_slice())
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(bob_balance, "0", "bob's credits were deducted to zero");

    let alice_row = sqlx::query("select tier, status, tier_expires_at is not null as expires from accounts where address = $1")
        .bind(alice.as_slice())
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(alice_row.get::<String, _>("tier"), "paid");
    assert_eq!(alice_row.get::<String, _>("status"), "active");
    assert!(alice_row.get::<bool, _>("expires"), "a bought Paid term ends");

    let states: Vec<(i64, String, String)> =
        sqlx::query_as("select service_id, kind, state from services order by service_id")
            .fetch_all(&mut conn)
            .await?;
    assert_eq!(
        states,
        [
            (1, "static_hosting".to_owned(), "active".to_owned()),
            (2, "storage".to_owned(), "cancelled".to_owned())
        ]
    );
    let history: Vec<String> =
        sqlx::query_scalar("select state from service_state_changes where service_id = 2 order by block_number, log_index")
            .fetch_all(&mut conn)
            .await?;
    assert_eq!(history, ["active", "paused", "active", "suspended", "cancelled"]);
    let entries: Vec<(String, String)> = sqlx::query_as(
        "select kind, credits::text from credit_entries where account = $1 order by block_number, log_index",
    )
    .bind(alice.as_slice())
    .fetch_all(&mut conn)
    .await?;
    assert_eq!(
        entries,
        [
            ("fiat".to_owned(), "50000000".to_owned()),
            ("deduction".to_owned(), "10000000".to_owned()), // two months at 5 USD
            ("recharge".to_owned(), "10000000".to_owned()),
            ("deduction".to_owned(), "1000".to_owned()),
            ("skipped".to_owned(), "0".to_owned()),
        ]
    );

    let domains: Vec<(String, Vec<u8>, String, Option<i64>)> =
        sqlx::query_as("select name, owner, method, service_id from domains order by name")
            .fetch_all(&mut conn)
            .await?;
    assert_eq!(
        domains,
        [
            (
                "alice.dspace".to_owned(),
                bob.to_vec(),
                OwnershipMethod::Purchase.as_str().to_owned(),
                None
            ),
            (
                "example.org".to_owned(),
                alice.to_vec(),
                OwnershipMethod::Dns.as_str().to_owned(),
                Some(1)
            ),
        ],
        "the transfer dropped the link, the released domain is gone"
    );
    let price: String = sqlx::query_scalar(
        "select credits_per_hour::text from service_prices where kind = 'database' and tier = 'paid'",
    )
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(price, "7777");
    let limit: i32 = sqlx::query_scalar(
        "select max_open from tier_limits where kind = 'database' and tier = 'paid'",
    )
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(limit, 9);
    let rate: String =
        sqlx::query_scalar("select rate::text from token_rates").fetch_one(&mut conn).await?;
    assert_eq!(rate, "2000000000000000000");
    let billing_members: i64 =
        sqlx::query_scalar("select count(*) from role_members where contract = $1 and role = $2")
            .bind(c.credit_ledger.as_slice())
            .bind(ledger.BILLING_ROLE().call().await?.as_slice())
            .fetch_one(&mut conn)
            .await?;
    assert_eq!(
        billing_members, 2,
        "the billing key and the account registry; bob's grant was revoked"
    );
    let duration: String = sqlx::query_scalar(
        "select value from contract_settings where contract = $1 and name = 'free_tier_duration'",
    )
    .bind(c.account_registry.as_slice())
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(duration, (90 * 86_400).to_string());

    // The chain agrees, and a full re-fold gives the same rows.
    let report = verify::verify(&mut conn, &chain.endpoint(), &chain.deployment).await?;
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    assert!(report.checked >= 6, "checked {}", report.checked);
    let before = snapshot(&mut conn).await?;
    let folded = store::reindex(&mut conn, &c, chain_id).await?;
    assert_eq!(folded, logs.len());
    assert_eq!(snapshot(&mut conn).await?, before);
    Ok(())
}

#[tokio::test]
async fn verify_reports_a_projection_that_differs_from_the_chain() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let user = chain.user(0);
    let c = chain.deployment.contracts;
    mined!(
        CreditLedger::new(c.credit_ledger, &chain.provider_as(chain.role(Role::PaymentOracle)))
            .creditFiat(user.address(), U256::from(42), keccak256("ref"))
    );
    let head = chain.reader().get_block_number().await?;
    let indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(30)).await?;
    indexer.stop().await?;

    let mut conn = db.connect().await?;
    sqlx::query("update credit_balances set balance = 41 where account = $1")
        .bind(user.address().as_slice())
        .execute(&mut conn)
        .await?;
    let report = verify::verify(&mut conn, &chain.endpoint(), &chain.deployment).await?;
    assert_eq!(report.differences.len(), 1, "{:#?}", report.differences);
    assert!(report.differences[0].starts_with("balance:"), "{}", report.differences[0]);

    // reindex repairs it from the events.
    store::reindex(&mut conn, &c, chain.chain_id()).await?;
    let report = verify::verify(&mut conn, &chain.endpoint(), &chain.deployment).await?;
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    Ok(())
}

#[tokio::test]
async fn refuses_an_rpc_of_another_chain() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let mut config = indexer_config(&chain, &db, 0);
    config.chain_id = Some(137);
    let err = decentraspace_indexer::Indexer::new(config).await.expect_err("chain id mismatch");
    assert!(err.to_string().contains("CHAIN_ID is 137"), "{err}");

    // A deployment record for another chain than the RPC serves.
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&chain.deployment_file)?)?;
    record["chainId"] = 80_002.into();
    let other = chain.deployment_file.with_extension("amoy.json");
    std::fs::write(&other, record.to_string())?;
    let mut config = indexer_config(&chain, &db, 0);
    config.deployments_file = other.clone();
    let err = decentraspace_indexer::Indexer::new(config).await.expect_err("chain mismatch");
    std::fs::remove_file(other).ok();
    assert!(err.to_string().contains("serves chain 31337"), "{err}");
    Ok(())
}
