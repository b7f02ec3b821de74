//! Reads end to end: balances and history scoped to the caller, payment methods from the indexed
//! rates, the public `/v1` API, validation errors and the live stream (real anvil, Postgres,
//! indexer, API). The OpenAPI document's coverage of the routes and of the spec's paths is checked
//! in the fast tier (`api/tests/http/openapi.rs`).

use std::time::{Duration, Instant};

use alloy::{
    primitives::{U256, keccak256},
    providers::Provider,
};
use decentraspace_abi::{
    AccountRegistry, CreditLedger, DomainRegistry, ServiceKind, ServiceRegistry,
};
use decentraspace_tests::{Role, Stack, TestChain, TestDb, problem_type};
use futures::StreamExt;
use serde_json::{Value, json};

async fn wait_indexed(db: &TestDb, chain: &TestChain) -> anyhow::Result<()> {
    let head = chain.reader().get_block_number().await?;
    decentraspace_tests::wait_for_checkpoint(db, chain.chain_id(), head, Duration::from_secs(30))
        .await
}

macro_rules! mined {
    ($call:expr) => {
        $call.send().await?.get_receipt().await?
    };
}

#[tokio::test]
async fn balances_and_history_belong_to_the_caller() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let Stack { chain, db, api, .. } = &stack;
    let (alice, bob) = (chain.user(0), chain.user(1));
    let c = chain.deployment.contracts;

    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    let ledger = CreditLedger::new(c.credit_ledger, &oracle);
    for (who, credits, reference) in [
        (&alice, 1_000u64, "a-1"),
        (&alice, 2_000, "a-2"),
        (&alice, 3_000, "a-3"),
        (&bob, 7_000, "b-1"),
    ] {
        mined!(ledger.creditFiat(who.address(), U256::from(credits), keccak256(reference)));
    }
    wait_indexed(db, chain).await?;

    let a = api.login(&alice).await?;
    let b = api.login(&bob).await?;
    let (status, balance) = api.get("/billing/balance/", Some(&a.access)).await?;
    assert_eq!(status, 200, "{balance}");
    assert_eq!(balance["balance"], "6000");
    assert_eq!(balance["decimals"], 6);
    assert_eq!(api.get("/billing/balance", Some(&b.access)).await?.1["balance"], "7000");

    // Balances are cached until the indexer's next commit: a new credit shows once indexed.
    let account_path = format!("/v1/accounts/{}", alice.address());
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.get(&account_path, None).await?.1["balance"] != "6000" {
        assert!(Instant::now() < deadline, "alice's first-login registration was never indexed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mined!(ledger.creditFiat(alice.address(), U256::from(500u64), keccak256("a-4")));
    wait_indexed(db, chain).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.get("/billing/balance", Some(&a.access)).await?.1["balance"] != "6500" {
        assert!(Instant::now() < deadline, "the cached balance was never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, public) = api.get(&account_path, None).await?;
    assert_eq!(public["balance"], "6500", "{public}");

    // Alice's history: only her four entries, newest first, paged by cursor.
    let (status, page) = api.get("/billing/history/?limit=2", Some(&a.access)).await?;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.iter().map(|e| e["credits"].clone()).collect::<Vec<_>>(), ["500", "3000"]);
    assert!(items.iter().all(|e| e["kind"] == "fiat"));
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (_, rest) =
        api.get(&format!("/billing/history?limit=2&cursor={cursor}"), Some(&a.access)).await?;
    let rest = rest["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(rest.iter().map(|e| e["credits"].clone()).collect::<Vec<_>>(), ["2000", "1000"]);

    // Bob sees his one entry and none of Alice's, whatever he asks.
    let (_, bobs) = api.get("/billing/history?limit=500", Some(&b.access)).await?;
    let bobs = bobs["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["credits"], "7000");
    let (_, none) = api.get("/billing/history?kind=deduction", Some(&a.access)).await?;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));

    // Payment methods: the deployed test token at its indexed rate; no card, since this stack
    // has no card provider configured (api_payments shows the card offered where one is).
    let (status, methods) = api.get("/billing/payment-methods/", Some(&a.access)).await?;
    assert_eq!(status, 200, "{methods}");
    let methods = methods["methods"].as_array().cloned().unwrap_or_default();
    let token = c.test_token().map(|t| t.to_checksum(None));
    assert!(
        methods.iter().any(|m| m["method"] == "crypto" && m["token"].as_str() == token.as_deref()),
        "{methods:?}"
    );
    assert!(!methods.iter().any(|m| m["method"] == "card"), "{methods:?}");
    Ok(())
}

#[tokio::test]
async fn the_public_api_serves_indexed_data_to_anyone() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let Stack { chain, db, api, .. } = &stack;
    let alice = chain.user(0);
    let c = chain.deployment.contracts;

    let operator = chain.provider_as(chain.role(Role::Operator));
    mined!(AccountRegistry::new(c.account_registry, &operator).registerFor(alice.address()));
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    mined!(CreditLedger::new(c.credit_ledger, &oracle).creditFiat(
        alice.address(),
        U256::from(5_000_000),
        keccak256("p-1")
    ));
    let p_alice = chain.provider_as(alice.clone());
    let created = mined!(
        ServiceRegistry::new(c.service_registry, &p_alice)
            .createService(ServiceKind::StaticHosting.into(), keccak256("site"))
    );
    let service =
        created.decoded_log::<ServiceRegistry::ServiceCreated>().expect("ServiceCreated").serviceId;
    let registrar = chain.provider_as(chain.role(Role::Registrar));
    mined!(DomainRegistry::new(c.domain_registry, &registrar).recordPurchase(
        "alice.dspace".into(),
        alice.address(),
        4_102_444_800
    ));
    wait_indexed(db, chain).await?;

    let address = alice.address().to_checksum(None);
    let (status, account) = api.get(&format!("/v1/accounts/{address}"), None).await?;
    assert_eq!(status, 200, "{account}");
    assert_eq!(
        (account["tier"].as_str(), account["status"].as_str()),
        (Some("free"), Some("active"))
    );
    assert_eq!(account["balance"], "5000000");
    assert_eq!(account["open_services"], 1);
    let (status, lower) =
        api.get(&format!("/v1/accounts/{}/", address.to_lowercase()), None).await?;
    assert_eq!(status, 200, "lowercase addresses and a trailing slash work: {lower}");

    let (status, body) = api.get("/v1/accounts/0x1234", None).await?;
    assert_eq!((status, problem_type(&body).as_str()), (400, "bad-request"), "{body}");
    let (status, body) =
        api.get(&format!("/v1/accounts/{}", chain.user(9).address()), None).await?;
    assert_eq!((status, problem_type(&body).as_str()), (404, "not-found"), "{body}");

    let (status, svc) = api.get(&format!("/v1/services/{service}"), None).await?;
    assert_eq!(status, 200, "{svc}");
    assert_eq!(
        (svc["kind"].as_str(), svc["state"].as_str()),
        (Some("static_hosting"), Some("active"))
    );
    assert_eq!(svc["owner"], address);
    assert!(svc["expires_at"].is_string(), "a Free owner's service expires: {svc}");
    assert_eq!(api.get("/v1/services/999999", None).await?.0, 404);
    assert_eq!(api.get("/v1/services/abc", None).await?.0, 400);

    let (status, domain) = api.get("/v1/domains/Alice.dspace", None).await?;
    assert_eq!(status, 200, "{domain}");
    assert_eq!(
        (domain["owner"].as_str(), domain["method"].as_str()),
        (Some(address.as_str()), Some("purchase"))
    );
    assert_eq!(api.get("/v1/domains/nobody.example", None).await?.0, 404);

    // Events about Alice, paged forward by cursor: every page continues where the last ended.
    let (_, all) = api.get(&format!("/v1/events?account={address}&limit=500"), None).await?;
    let all = all["items"].as_array().cloned().unwrap_or_default();
    assert!(all.len() >= 4, "registration, credit, service, domain: {all:?}");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?account={address}&limit=1&cursor={c}"),
            None => format!("/v1/events?account={address}&limit=1"),
        };
        let (status, page) = api.get(&path, None).await?;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert!(all.iter().all(|e| e["account"] == address));
    let (_, fiat) = api.get("/v1/events?contract=CreditLedger&event=FiatCredited", None).await?;
    let fiat = fiat["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(fiat.len(), 1);
    assert_eq!(
        fiat[0]["args"]["account"].as_str().map(str::to_lowercase),
        Some(address.to_lowercase())
    );
    let (_, none) = api.get("/v1/events?from_block=100000000", None).await?;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
    assert_eq!(api.get("/v1/events?account=nope", None).await?.0, 400);
    assert_eq!(api.get("/v1/events?limit=501", None).await?.0, 400);

    // Unknown paths are problem+json 404s too.
    let (status, body) = api.get("/v2/everything", None).await?;
    assert_eq!((status, problem_type(&body).as_str()), (404, "not-found"), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_stream_client_receives_its_events_and_no_one_elses() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let Stack { chain, db, api, .. } = &stack;
    let (alice, bob) = (chain.user(0), chain.user(1));
    wait_indexed(db, chain).await?;

    let stream =
        api.http.get(api.url(&format!("/v1/stream?account={}", alice.address()))).send().await?;
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut body = stream.bytes_stream();

    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle);
    // Bob's credit is filtered out; Alice's arrives.
    mined!(ledger.creditFiat(bob.address(), U256::from(1), keccak256("s-bob")));
    let receipt = mined!(ledger.creditFiat(alice.address(), U256::from(2), keccak256("s-alice")));

    // How soon it arrives is measured by `make bench-indexer` (head latency); here it must
    // arrive at all, and only Alice's. The deadline only keeps a broken stream from hanging.
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text.contains("event: FiatCredited") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, body.next())
            .await
            .map_err(|_| anyhow::anyhow!("no event arrived; got {text:?}"))?;
        let chunk = chunk.ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .skip_while(|l| *l != "event: FiatCredited")
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let event: Value = serde_json::from_str(data)?;
    assert_eq!(event["tx_hash"], receipt.transaction_hash.to_string());
    assert_eq!(event["account"], alice.address().to_checksum(None));
    assert!(
        !text.contains(&bob.address().to_checksum(None)),
        "bob's event was filtered out: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn credit_analytics_show_where_the_credits_went() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let Stack { chain, db, api, .. } = &stack;
    let (alice, bob) = (chain.user(0), chain.user(1));
    let c = chain.deployment.contracts;
    let operator = chain.provider_as(chain.role(Role::Operator));
    mined!(AccountRegistry::new(c.account_registry, &operator).registerFor(alice.address()));
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    mined!(CreditLedger::new(c.credit_ledger, &oracle).creditFiat(
        alice.address(),
        U256::from(10_000_000),
        keccak256("buy")
    ));
    let services = ServiceRegistry::new(c.service_registry, &operator);
    let mut ids = Vec::new();
    for (kind, name) in [(ServiceKind::StaticHosting, "site"), (ServiceKind::Storage, "files")] {
        let receipt =
            mined!(services.createServiceFor(alice.address(), kind.into(), keccak256(name)));
        ids.push(
            receipt.decoded_log::<ServiceRegistry::ServiceCreated>().expect("created").serviceId,
        );
    }
    let billing = chain.provider_as(chain.role(Role::Billing));
    let ledger = CreditLedger::new(c.credit_ledger, &billing);
    for (service, credits, reference) in
        [(ids[0], 3_000u64, "u1"), (ids[0], 2_000, "u2"), (ids[1], 1_000, "u3")]
    {
        mined!(ledger.deduct(alice.address(), service, U256::from(credits), keccak256(reference)));
    }
    wait_indexed(db, chain).await?;

    let a = api.login(&alice).await?;
    let (status, report) = api.get("/analytics/credit/?bucket=day", Some(&a.access)).await?;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["spent"].as_str(), report["recharged"].as_str()),
        (Some("6000"), Some("10000000")),
        "{report}"
    );
    let top = report["top_services"].as_array().cloned().unwrap_or_default();
    assert_eq!(top[0]["service_id"], ids[0].to::<u64>(), "{report}");
    assert_eq!(
        (top[0]["spent"].as_str(), top[0]["kind"].as_str()),
        (Some("5000"), Some("static_hosting"))
    );
    assert_eq!(
        report["by_kind"],
        json!([{ "kind": "static_hosting", "spent": "5000" }, { "kind": "storage", "spent": "1000" }])
    );
    // Everything happened within seconds: one day's bucket (two if midnight fell in between).
    let buckets = report["buckets"].as_array().cloned().unwrap_or_default();
    assert!((1..=2).contains(&buckets.len()), "{report}");
    let total = |field: &str| {
        buckets
            .iter()
            .map(|b| b[field].as_str().unwrap_or("0").parse::<u64>().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!((total("spent"), total("recharged")), (6_000, 10_000_000), "{report}");
    assert_eq!(report["burn_rate_per_day"], "857", "6000 over 7 days: {report}");
    assert_eq!(report["balance"], "9994000");
    assert!(report["projected_depletion"].is_string(), "{report}");

    // Bob spent nothing; his report is his own.
    let b = api.login(&bob).await?;
    let (_, bobs) = api.get("/analytics/credit", Some(&b.access)).await?;
    assert_eq!(
        (bobs["spent"].as_str(), bobs["projected_depletion"].clone()),
        (Some("0"), Value::Null),
        "{bobs}"
    );
    assert_eq!(api.get("/analytics/credit?bucket=hour", Some(&a.access)).await?.0, 400);
    assert_eq!(api.get("/analytics/credit", None).await?.0, 401);
    Ok(())
}
