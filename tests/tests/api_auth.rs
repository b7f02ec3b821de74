//! Sign-in end to end: SIWE login (accounts and EIP-1271 contract wallets), a signature another
//! wallet made, refresh rotation with reuse detection, logout, first-login registration on-chain,
//! and admin-only tier changes (real anvil, Postgres, indexer, API). The refusals that need no
//! chain (each SIWE check, tokens missing, tampered or expired) are in the fast tier.

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, Bytes},
    providers::Provider,
    rpc::types::TransactionRequest,
    signers::SignerSync,
    sol_types::SolValue,
};
use anyhow::Context;
use decentraspace_tests::{
    IndexerTask, Role, Stack, TestApi, TestChain, TestDb, eventually, indexer_config, problem_type,
    repo_root, siwe_message,
};
use serde_json::{Value, json};

async fn stack() -> anyhow::Result<Stack> {
    Stack::start().await
}

async fn login_with(api: &TestApi, message: &str, signature: &str) -> anyhow::Result<(u16, Value)> {
    api.post("/auth/login/", None, &json!({ "message": message, "signature": signature })).await
}

#[tokio::test]
async fn a_wallet_signs_in_is_registered_refreshes_and_logs_out() -> anyhow::Result<()> {
    let stack = stack().await?;
    let Stack { chain, api, .. } = &stack;
    let user = chain.user(0);

    let session = api.login(&user).await?;
    let (status, tier) = api.get("/auth/tier/", Some(&session.access)).await?;
    assert_eq!(status, 200, "{tier}");
    assert_eq!(tier["address"], user.address().to_checksum(None));
    assert_eq!(tier["tier"], "free");

    // The first login registered the account on-chain; reads show it once indexed.
    eventually("the registration to be indexed", || async {
        let (_, tier) = api.get("/auth/tier", Some(&session.access)).await?;
        Ok(tier["registered"] == true)
    })
    .await?;
    let (_, tier) = api.get("/auth/tier", Some(&session.access)).await?;
    assert_eq!(tier["status"], "active");

    // Rotation: the new pair works, the old refresh token is spent.
    let (status, body) =
        api.post("/auth/refresh", None, &json!({ "refresh_token": session.refresh })).await?;
    assert_eq!(status, 200, "{body}");
    let rotated = decentraspace_tests::Session::from_answer(&body)?;
    assert_ne!(rotated.refresh, session.refresh);
    assert_eq!(api.get("/billing/balance", Some(&rotated.access)).await?.0, 200);

    // Reuse of the spent token: refused, and the whole family is revoked with it.
    let (status, body) =
        api.post("/auth/refresh/", None, &json!({ "refresh_token": session.refresh })).await?;
    assert_eq!((status, problem_type(&body).as_str()), (401, "invalid-refresh-token"), "{body}");
    let (status, body) =
        api.post("/auth/refresh", None, &json!({ "refresh_token": rotated.refresh })).await?;
    assert_eq!(status, 401, "the rotated token must die with its family: {body}");

    // Logout ends a fresh login's refresh tokens.
    let again = api.login(&user).await?;
    let (status, _) =
        api.post("/auth/logout", None, &json!({ "refresh_token": again.refresh })).await?;
    assert_eq!(status, 204);
    let (status, body) =
        api.post("/auth/refresh", None, &json!({ "refresh_token": again.refresh })).await?;
    assert_eq!((status, problem_type(&body).as_str()), (401, "invalid-refresh-token"), "{body}");
    let (status, _) = api.post("/auth/refresh", None, &json!({ "refresh_token": "00" })).await?;
    assert_eq!(status, 401);
    Ok(())
}

/// The SIWE checks that need no chain are tested in the fast tier (`api/tests/http/auth.rs`);
/// telling a wrong signature apart needs the chain, which says the address holds no contract
/// wallet that could accept it.
#[tokio::test]
async fn a_signature_by_another_wallet_is_refused() -> anyhow::Result<()> {
    let stack = stack().await?;
    let Stack { chain, api, db, .. } = &stack;
    let (user, other) = (chain.user(1), chain.user(2));
    let text = siwe_message(user.address(), &api.nonce().await?);
    let signature = other.sign_message_sync(text.as_bytes())?;
    let (status, body) = login_with(api, &text, &signature.to_string()).await?;
    assert_eq!((status, problem_type(&body).as_str()), (401, "siwe-bad-signature"), "{body}");
    let mut conn = db.connect().await?;
    let issued: i64 = sqlx::query_scalar("select count(*) from refresh_tokens where account = $1")
        .bind(user.address().as_slice())
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(issued, 0);
    Ok(())
}

/// Deploys the test contract wallet owned by `owner` (from the Foundry artifact).
async fn deploy_wallet(chain: &TestChain, owner: Address) -> anyhow::Result<Address> {
    let artifact = repo_root().join("out/ERC1271Wallet.sol/ERC1271Wallet.json");
    let artifact: Value =
        serde_json::from_str(&std::fs::read_to_string(&artifact).with_context(|| {
            format!("read {} (built by `make contracts`)", artifact.display())
        })?)?;
    let code: Bytes = artifact["bytecode"]["object"].as_str().context("bytecode")?.parse()?;
    let mut init = code.to_vec();
    init.extend(owner.abi_encode());
    let deployer = chain.provider_as(chain.role(Role::Deployer));
    let receipt = deployer
        .send_transaction(TransactionRequest::default().with_deploy_code(init))
        .await?
        .get_receipt()
        .await?;
    receipt.contract_address.context("wallet deployed")
}

#[tokio::test]
async fn a_contract_wallet_signs_in_through_eip_1271() -> anyhow::Result<()> {
    let stack = stack().await?;
    let Stack { chain, api, .. } = &stack;
    let owner = chain.user(3);
    let wallet = deploy_wallet(chain, owner.address()).await?;

    let text = siwe_message(wallet, &api.nonce().await?);
    let signature = owner.sign_message_sync(text.as_bytes())?;
    let (status, body) = login_with(api, &text, &signature.to_string()).await?;
    assert_eq!(status, 200, "{body}");
    let session = decentraspace_tests::Session::from_answer(&body)?;
    let (_, tier) = api.get("/auth/tier", Some(&session.access)).await?;
    assert_eq!(tier["address"], wallet.to_checksum(None), "the session is the wallet's");

    // Someone else's signature for the wallet: the wallet refuses it.
    let text = siwe_message(wallet, &api.nonce().await?);
    let signature = chain.user(4).sign_message_sync(text.as_bytes())?;
    let (status, body) = login_with(api, &text, &signature.to_string()).await?;
    assert_eq!((status, problem_type(&body).as_str()), (401, "siwe-bad-signature"), "{body}");
    Ok(())
}

#[tokio::test]
async fn only_the_on_chain_admin_changes_tiers() -> anyhow::Result<()> {
    let stack = stack().await?;
    let Stack { chain, api, .. } = &stack;
    let user = chain.user(6);
    let session = api.login(&user).await?;
    eventually("the registration to be indexed", || async {
        Ok(api.get("/auth/tier", Some(&session.access)).await?.1["registered"] == true)
    })
    .await?;

    let change = json!({ "address": user.address().to_string(), "tier": "Paid" });
    let (status, body) = api.post("/auth/tier/", Some(&session.access), &change).await?;
    assert_eq!((status, problem_type(&body).as_str()), (403, "forbidden"), "{body}");

    let admin = api.login(&chain.role(Role::Admin)).await?;
    let (status, body) = api
        .post("/auth/tier", Some(&admin.access), &json!({ "address": "0x12", "tier": "Paid" }))
        .await?;
    assert_eq!((status, problem_type(&body).as_str()), (400, "bad-request"), "{body}");
    let (status, body) = api
        .post(
            "/auth/tier",
            Some(&admin.access),
            &json!({ "address": user.address().to_string(), "tier": "Gold" }),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    // An account that never registered: the chain refuses, and the answer names why.
    let stranger = chain.user(7).address().to_string();
    let (status, body) = api
        .post("/auth/tier", Some(&admin.access), &json!({ "address": stranger, "tier": "Paid" }))
        .await?;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("NotRegistered")), "{body}");

    let (status, body) = api.post("/auth/tier", Some(&admin.access), &change).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "mined", "{body}");
    eventually("the tier change to be indexed", || async {
        Ok(api.get("/auth/tier", Some(&session.access)).await?.1["tier"] == "paid")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn first_login_registrations_are_capped_per_hour() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let mut config = decentraspace_tests::api_config(&chain, &db);
    config.registrations_per_hour = 1;
    let api = TestApi::start_with(config).await?;
    let (first, second) = (chain.user(20), chain.user(21));
    let a = api.login(&first).await?;
    eventually("the first registration to be indexed", || async {
        Ok(api.get("/auth/tier", Some(&a.access)).await?.1["registered"] == true)
    })
    .await?;
    // The second wallet signs in all the same; its registration waits for the next hour.
    let b = api.login(&second).await?;
    assert_eq!(api.get("/auth/tier", Some(&b.access)).await?.0, 200);
    let mut conn = db.connect().await?;
    let requested: Vec<Vec<u8>> = sqlx::query_scalar("select account from account_registrations")
        .fetch_all(&mut conn)
        .await?;
    assert_eq!(requested, vec![first.address().to_vec()]);
    Ok(())
}

#[tokio::test]
async fn a_registration_the_chain_refused_at_login_is_written_once_it_takes_it()
-> anyhow::Result<()> {
    use decentraspace_abi::AccountRegistry;
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let api = TestApi::start_with(decentraspace_tests::api_config(&chain, &db)).await?;
    let registry = AccountRegistry::new(
        chain.deployment.contracts.account_registry,
        chain.provider_as(chain.role(Role::Admin)),
    );
    let operator_role = registry.OPERATOR_ROLE().call().await?;
    let operator = chain.role(Role::Operator).address();

    // The operator key loses its role: the registration cannot even be estimated at login.
    let receipt = registry.revokeRole(operator_role, operator).send().await?.get_receipt().await?;
    anyhow::ensure!(receipt.status(), "revoke reverted");
    let user = chain.user(5);
    let session = api.login(&user).await?;
    assert_eq!(
        api.get("/auth/tier", Some(&session.access)).await?.0,
        200,
        "signed in all the same"
    );
    let mut conn = db.connect().await?;
    let unwritten: Option<Option<i64>> =
        sqlx::query_scalar("select outbox_id from account_registrations where account = $1")
            .bind(user.address().as_slice())
            .fetch_optional(&mut conn)
            .await?;
    assert_eq!(unwritten, Some(None), "the request is recorded, its transaction not written");

    // The role comes back; the sweep writes the request without another login.
    let receipt = registry.grantRole(operator_role, operator).send().await?.get_receipt().await?;
    anyhow::ensure!(receipt.status(), "grant reverted");
    eventually("the sweep's registration to be indexed", || async {
        Ok(api.get("/auth/tier", Some(&session.access)).await?.1["registered"] == true)
    })
    .await?;
    let rows: i64 = sqlx::query_scalar(
        "select count(*) from chain_outbox where purpose = 'operator' and reference = $1",
    )
    .bind(format!("register:{}", user.address()))
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(rows, 1, "one transaction for the registration");
    Ok(())
}
