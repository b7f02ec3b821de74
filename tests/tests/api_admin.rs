//! Admin and chain routes end to end: account management (non-admins refused on every admin
//! route), system health, domain ownership (indexed and fresh), and the chain-event listener
//! (signatures checked, replays ignored, the indexer woken) against real anvil, Postgres, the
//! indexer and the API.

use std::time::Duration;

use alloy::{
    primitives::{U256, keccak256},
    providers::Provider,
};
use decentraspace_abi::{CreditLedger, DomainRegistry};
use decentraspace_tests::{
    IndexerTask, Role, Stack, TestApi, TestChain, TestDb, api_config, eventually, indexer_config,
    problem_type,
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const LISTENER_SECRET: &str = "listener-secret-for-tests";

async fn put(api: &TestApi, path: &str, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    api.send(reqwest::Method::PUT, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn admins_manage_accounts_and_nobody_else_does() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let Stack { chain, api, .. } = &stack;
    let user = chain.user(15);
    let session = api.login(&user).await?;
    let admin = api.login(&chain.role(Role::Admin)).await?;
    let address = user.address().to_checksum(None);
    // Both logins register their wallet in the background; the list below counts on both.
    let admin_address = chain.role(Role::Admin).address().to_checksum(None);
    eventually("both registrations to be indexed", || async {
        for registered in [&address, &admin_address] {
            let path = format!("/auth/manage/{registered}");
            if api.get(&path, Some(&admin.access)).await?.0 != 200 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;

    // Every admin route refuses a signed-in non-admin.
    let status_body = json!({ "status": "suspended" });
    let reads = ["/auth/manage/", "/analytics/system/"];
    for path in reads.iter().map(|p| p.to_string()).chain([format!("/auth/manage/{address}")]) {
        let (status, body) = api.get(&path, Some(&session.access)).await?;
        assert_eq!((status, problem_type(&body).as_str()), (403, "forbidden"), "{path}: {body}");
    }
    let (status, _) =
        put(api, &format!("/auth/manage/{address}/status"), &session.access, &status_body).await?;
    assert_eq!(status, 403);
    let (status, _) =
        put(api, "/auth/manage/free-tier-duration", &session.access, &json!({ "days": 30 }))
            .await?;
    assert_eq!(status, 403);
    let (status, _) = api
        .post("/auth/tier", Some(&session.access), &json!({ "address": address, "tier": "paid" }))
        .await?;
    assert_eq!(status, 403);

    // Search and detail.
    let prefix = &address[..8];
    let (status, page) =
        api.get(&format!("/auth/manage?search={prefix}"), Some(&admin.access)).await?;
    assert_eq!(status, 200, "{page}");
    assert!(
        page["items"].as_array().is_some_and(|a| a.iter().any(|i| i["address"] == address)),
        "{page}"
    );
    let (_, all) = api.get("/auth/manage?limit=1", Some(&admin.access)).await?;
    assert!(
        all["next_cursor"].is_string(),
        "the admin and the user: more than one page of one: {all}"
    );
    assert_eq!(api.get("/auth/manage?search=xyz", Some(&admin.access)).await?.0, 400);
    let (_, detail) = api.get(&format!("/auth/manage/{address}"), Some(&admin.access)).await?;
    assert_eq!(
        (detail["tier"].as_str(), detail["status"].as_str()),
        (Some("free"), Some("active")),
        "{detail}"
    );
    assert_eq!(detail["services"], json!([]));
    assert_eq!(
        api.get(&format!("/auth/manage/{}", chain.user(16).address()), Some(&admin.access))
            .await?
            .0,
        404
    );

    // Suspend, see it indexed, reactivate.
    let (status, tx) =
        put(api, &format!("/auth/manage/{address}/status/"), &admin.access, &status_body).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    eventually("the suspension to be indexed", || async {
        Ok(api.get(&format!("/auth/manage/{address}"), Some(&admin.access)).await?.1["status"]
            == "suspended")
    })
    .await?;
    let (status, _) = put(
        api,
        &format!("/auth/manage/{address}/status"),
        &admin.access,
        &json!({ "status": "active" }),
    )
    .await?;
    assert_eq!(status, 200);
    let (status, _) = put(
        api,
        &format!("/auth/manage/{address}/status"),
        &admin.access,
        &json!({ "status": "gone" }),
    )
    .await?;
    assert_eq!(status, 400);

    // The free-tier duration, on-chain.
    let (status, tx) =
        put(api, "/auth/manage/free-tier-duration", &admin.access, &json!({ "days": 30 })).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    let registry = decentraspace_abi::AccountRegistry::new(
        chain.deployment.contracts.account_registry,
        chain.reader(),
    );
    assert_eq!(registry.freeTierDuration().call().await?, 30 * 86_400);
    assert_eq!(
        put(api, "/auth/manage/free-tier-duration", &admin.access, &json!({ "days": 0 })).await?.0,
        400
    );

    // System health.
    let (status, system) = api.get("/analytics/system", Some(&admin.access)).await?;
    assert_eq!(status, 200, "{system}");
    assert_eq!(system["database"]["ok"], true);
    assert!(system["indexer"]["lag"].as_u64().is_some(), "{system}");
    assert_eq!(system["relayer"]["address"], chain.role(Role::Relayer).address().to_checksum(None));
    assert_eq!(system["jobs"]["card_payments_due"], 0, "{system}");
    // Every background job of the replica, with whether it runs.
    let running = system["jobs"]["running"].as_array().cloned().unwrap_or_default();
    assert!(
        running.iter().any(|j| j["name"] == "chain-outbox-listener" && j["up"] == true),
        "{system}"
    );
    assert!(running.iter().all(|j| j["failures"].is_u64() && j["up"].is_boolean()), "{system}");
    Ok(())
}

#[tokio::test]
async fn ownership_answers_from_the_registry() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let Stack { chain, api, .. } = &stack;
    let (alice, bob) = (chain.user(17), chain.user(18));
    let registrar = chain.provider_as(chain.role(Role::Registrar));
    DomainRegistry::new(chain.deployment.contracts.domain_registry, &registrar)
        .recordPurchase("alice.dspace".into(), alice.address(), 4_102_444_800)
        .send()
        .await?
        .get_receipt()
        .await?;
    let path = |who: &str, fresh: bool| {
        format!("/blockchain/ownership/?domain=Alice.dspace&address={who}&fresh={fresh}")
    };

    // Fresh reads answer at once; indexed ones once the indexer has the block.
    let (status, fresh) = api.get(&path(&alice.address().to_string(), true), None).await?;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(
        (fresh["owns"].as_bool(), fresh["source"].as_str()),
        (Some(true), Some("chain")),
        "{fresh}"
    );
    assert_eq!(fresh["node"], keccak256("alice.dspace").to_string());
    eventually("the purchase to be indexed", || async {
        Ok(api.get(&path(&alice.address().to_string(), false), None).await?.1["owns"] == true)
    })
    .await?;
    let (_, indexed) = api.get(&path(&bob.address().to_string(), false), None).await?;
    assert_eq!(
        (indexed["owns"].as_bool(), indexed["method"].as_str()),
        (Some(false), Some("purchase")),
        "{indexed}"
    );
    let (_, nobody) = api.get("/blockchain/ownership?domain=nobody.example", None).await?;
    assert_eq!(
        (nobody["owner"].clone(), nobody["owns"].clone()),
        (Value::Null, Value::Null),
        "{nobody}"
    );
    assert_eq!(api.get("/blockchain/ownership?domain=nodot", None).await?.0, 400);
    assert_eq!(api.get("/blockchain/ownership?domain=a.b&address=0x12", None).await?.0, 400);
    Ok(())
}

fn sign(timestamp: i64, body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("sha256={}", alloy::hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn the_listener_checks_signatures_ignores_replays_and_wakes_the_indexer() -> anyhow::Result<()>
{
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    // An indexer that would otherwise look at the chain only once a minute.
    let mut config = indexer_config(&chain, &db, 0);
    config.poll_interval_ms = 60_000;
    let _indexer = IndexerTask::start(config).await?;
    let mut api_config = api_config(&chain, &db);
    api_config.listener_secret = Some(LISTENER_SECRET.to_owned().into());
    let api = TestApi::start_with(api_config).await?;
    let head = chain.reader().get_block_number().await?;
    decentraspace_tests::wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(30))
        .await?;

    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    let receipt = CreditLedger::new(chain.deployment.contracts.credit_ledger, &oracle)
        .creditFiat(chain.user(19).address(), U256::from(5), keccak256("listener"))
        .send()
        .await?
        .get_receipt()
        .await?;
    let block = receipt.block_number.expect("mined");
    let body = serde_json::to_vec(&json!({ "block_number": block, "chain_id": chain.chain_id() }))?;
    let now = chrono::Utc::now().timestamp();
    let send = |signature: Option<String>, delivery: &'static str, timestamp: i64| {
        let mut request = api
            .http
            .post(api.url("/blockchain/listener/"))
            .header("content-type", "application/json")
            .header("x-delivery-id", delivery)
            .header("x-timestamp", timestamp.to_string())
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header("x-signature", signature);
        }
        request.send()
    };

    let old = now - 3_600;
    for (signature, timestamp, what) in [
        (None, now, "missing"),
        (Some(sign(now, &body, "wrong-secret")), now, "wrong key"),
        (Some("sha256=zz".into()), now, "garbage"),
        (Some(sign(now, &body, LISTENER_SECRET)), now + 1, "signed for another time"),
        (Some(sign(old, &body, LISTENER_SECRET)), old, "a captured delivery an hour later"),
    ] {
        let response = send(signature, "d-0", timestamp).await?;
        assert_eq!(response.status(), 401, "{what}");
        let answer: Value = serde_json::from_str(&response.text().await?)?;
        assert_eq!(problem_type(&answer), "invalid-signature", "{what}");
    }

    let response = send(Some(sign(now, &body, LISTENER_SECRET)), "d-1", now).await?;
    assert_eq!(response.status(), 200);
    let ack: Value = serde_json::from_str(&response.text().await?)?;
    assert_eq!(
        (ack["duplicate"].as_bool(), ack["block_number"].as_u64()),
        (Some(false), Some(block))
    );
    // Within 20 s although the indexer polls once a minute: the delivery woke it.
    decentraspace_tests::wait_for_checkpoint(&db, chain.chain_id(), block, Duration::from_secs(20))
        .await?;

    let replay: Value = serde_json::from_str(
        &send(Some(sign(now, &body, LISTENER_SECRET)), "d-1", now).await?.text().await?,
    )?;
    assert_eq!(replay["duplicate"], true);
    let mut conn = db.connect().await?;
    let deliveries: i64 =
        sqlx::query_scalar("select count(*) from listener_deliveries").fetch_one(&mut conn).await?;
    assert_eq!(deliveries, 1);
    Ok(())
}

#[tokio::test]
async fn owners_pause_and_resume_their_services_and_nobody_else_does() -> anyhow::Result<()> {
    use decentraspace_abi::{ServiceKind, ServiceRegistry, Tier};
    let stack = Stack::start().await?;
    let Stack { chain, api, .. } = &stack;
    let c = chain.deployment.contracts;
    let (owner, stranger) = (chain.user(2), chain.user(3));
    let session = api.login(&owner).await?;
    let other = api.login(&stranger).await?;
    eventually("the registration to be indexed", || async {
        Ok(api.get("/auth/tier", Some(&session.access)).await?.1["registered"] == true)
    })
    .await?;
    // A price for Free static sites, credit for its first hours, and a site for the owner.
    let admin = chain.provider_as(chain.role(Role::Admin));
    let set_price = |per_hour: u64| {
        let admin = admin.clone();
        async move {
            ServiceRegistry::new(c.service_registry, &admin)
                .setPrice(
                    ServiceKind::StaticHosting.into(),
                    Tier::Free.into(),
                    U256::from(per_hour),
                )
                .send()
                .await?
                .get_receipt()
                .await?;
            anyhow::Ok(())
        }
    };
    set_price(1_000).await?;
    chain.credit(owner.address(), 10_000).await?;
    let operator = chain.provider_as(chain.role(Role::Operator));
    let created = ServiceRegistry::new(c.service_registry, &operator)
        .createServiceFor(owner.address(), ServiceKind::StaticHosting.into(), keccak256("site"))
        .send()
        .await?
        .get_receipt()
        .await?;
    let id = created.decoded_log::<ServiceRegistry::ServiceCreated>().expect("created").serviceId;
    let state = |want: &'static str| {
        let (api, token) = (&api, session.access.clone());
        async move {
            let (_, list) = api.get("/services/", Some(&token)).await?;
            Ok::<_, anyhow::Error>(
                list.as_array().is_some_and(|l| l.iter().any(|s| s["state"] == want)),
            )
        }
    };
    eventually("the service to be indexed", || state("active")).await?;
    let (_, list) = api.get("/services", Some(&session.access)).await?;
    assert_eq!(list[0]["credits_per_hour"], "1000", "{list}");
    assert_eq!(
        api.get("/services", Some(&other.access)).await?.1,
        json!([]),
        "another's list is empty"
    );

    // Another wallet cannot touch it.
    let (status, body) =
        api.post(&format!("/services/{id}/pause"), Some(&other.access), &json!({})).await?;
    assert_eq!((status, problem_type(&body).as_str()), (404, "not-found"), "{body}");

    let (status, tx) =
        api.post(&format!("/services/{id}/pause/"), Some(&session.access), &json!({})).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    eventually("the pause to be indexed", || state("paused")).await?;

    // The price rises past the balance: no credit for an hour, refused with a clear problem;
    // with credit, resumed.
    set_price(1_000_000_000_000).await?;
    eventually("the new price to be indexed", || async {
        let (_, list) = api.get("/services", Some(&session.access)).await?;
        Ok(list[0]["credits_per_hour"] == "1000000000000")
    })
    .await?;
    let (status, body) =
        api.post(&format!("/services/{id}/resume"), Some(&session.access), &json!({})).await?;
    assert_eq!((status, problem_type(&body).as_str()), (402, "insufficient-credit"), "{body}");
    assert!(body["shortfall"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(c.credit_ledger, &oracle)
        .creditFiat(owner.address(), U256::from(2_000_000_000_000u64), keccak256("for-resume"))
        .send()
        .await?
        .get_receipt()
        .await?;
    eventually("the recharge to be indexed", || async {
        let (_, balance) = api.get("/billing/balance", Some(&session.access)).await?;
        Ok(balance["balance"].as_str().is_some_and(|b| b.len() >= 13))
    })
    .await?;
    let (status, tx) =
        api.post(&format!("/services/{id}/resume"), Some(&session.access), &json!({})).await?;
    assert_eq!((status, tx["status"].as_str()), (200, Some("mined")), "{tx}");
    eventually("the resume to be indexed", || state("active")).await?;
    Ok(())
}
