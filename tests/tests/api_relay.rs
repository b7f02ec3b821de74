//! The relay end to end: a gasless forward request and raw transactions change balances once
//! indexed; foreign contracts, other chains, other signers, role-gated and reverting calls are
//! refused; an `Idempotency-Key` replays the first answer; the per-account quota holds; records
//! are private (real anvil, Postgres, indexer, API).

use std::time::{Duration, Instant};

use alloy::{
    eips::Encodable2718,
    network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
    primitives::{Address, B256, Bytes, U256, keccak256},
    providers::Provider,
    rpc::types::TransactionRequest,
    signers::{Signer, local::PrivateKeySigner},
    sol,
    sol_types::{SolCall, SolStruct, eip712_domain},
};
use decentraspace_abi::{CreditLedger, Forwarder, ServiceKind, ServiceRegistry, TestToken};
use decentraspace_tests::{Role, Stack, TestApi, TestChain, forward, problem_type};
use serde_json::{Value, json};

/// 10 test dollars (6 decimals).
const AMOUNT: u64 = 10_000_000;

sol! {
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }
}

async fn stack(quota: Option<u32>) -> anyhow::Result<Stack> {
    // The accepted tokens come from the indexed rates: start once the deployment is indexed.
    let mut stack = Stack::builder().caught_up();
    if let Some(quota) = quota {
        stack = stack.configure(move |config, _| config.relay_quota_per_hour = quota);
    }
    stack.start().await
}

/// `call` signed by `signer` as a raw EIP-1559 transaction for `chain_id`, 0x hex.
async fn raw_tx(
    chain: &TestChain,
    signer: &PrivateKeySigner,
    to: Address,
    call: Bytes,
    chain_id: u64,
) -> anyhow::Result<String> {
    let reader = chain.reader();
    let nonce = reader.get_transaction_count(signer.address()).pending().await?;
    let fees = reader.estimate_eip1559_fees().await?;
    let tx = TransactionRequest::default()
        .with_to(to)
        .with_input(call)
        .with_nonce(nonce)
        .with_chain_id(chain_id)
        .with_gas_limit(300_000)
        .with_max_fee_per_gas(fees.max_fee_per_gas)
        .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
        .build(&EthereumWallet::from(signer.clone()))
        .await?;
    Ok(format!("0x{}", alloy::hex::encode(tx.encoded_2718())))
}

async fn post_relay(
    api: &TestApi,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = api.http.post(api.url("/blockchain/credit/")).bearer_auth(token).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, serde_json::from_str(&response.text().await?).unwrap_or(Value::Null)))
}

/// Polls the record until it leaves `pending`.
async fn settled(api: &TestApi, token: &str, id: i64) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, tx) = api.get(&format!("/blockchain/credit/{id}"), Some(token)).await?;
        anyhow::ensure!(status == 200, "status {status}: {tx}");
        if tx["status"] != "pending" && tx["status"] != "received" {
            return Ok(tx);
        }
        anyhow::ensure!(Instant::now() < deadline, "transaction {id} still pending: {tx}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn indexed_balance(
    api: &TestApi,
    token: &str,
    chain: &TestChain,
    account: Address,
) -> anyhow::Result<String> {
    let onchain = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader())
        .balanceOf(account)
        .call()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = api.get("/billing/balance", Some(token)).await?;
        if body["balance"] == onchain.to_string() {
            return Ok(onchain.to_string());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "indexed balance {body} never reached {onchain}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_gasless_forward_request_recharges_once_whatever_the_retries() -> anyhow::Result<()> {
    let stack = stack(None).await?;
    let Stack { chain, api, .. } = &stack;
    let c = chain.deployment.contracts;
    let token_address = c.test_token().expect("a test token");
    // A wallet without ether: only the relayer pays.
    let user = PrivateKeySigner::random();
    let session = api.login(&user).await?;
    let minter = chain.provider_as(chain.role(Role::Deployer));
    TestToken::new(token_address, &minter)
        .mint(user.address(), U256::from(AMOUNT))
        .send()
        .await?
        .get_receipt()
        .await?;

    let token = TestToken::new(token_address, chain.reader());
    let deadline = U256::from(u64::MAX);
    let permit = Permit {
        owner: user.address(),
        spender: c.credit_ledger,
        value: U256::from(AMOUNT),
        nonce: token.nonces(user.address()).call().await?,
        deadline,
    };
    let domain = eip712_domain! {
        name: "DecentraSpace Test USD", version: "1", chain_id: chain.chain_id(), verifying_contract: token_address,
    };
    let sig = user.sign_hash(&permit.eip712_signing_hash(&domain)).await?;
    let call = CreditLedger::new(c.credit_ledger, chain.reader())
        .rechargeWithPermit(
            token_address,
            U256::from(AMOUNT),
            deadline,
            27 + u8::from(sig.v()),
            B256::from(sig.r()),
            B256::from(sig.s()),
        )
        .calldata()
        .clone();
    let body = forward(chain, &user, user.address(), c.credit_ledger, call).await?;

    let (status, first) = post_relay(api, &session.access, &body, Some("recharge-1")).await?;
    assert_eq!(status, 202, "{first}");
    assert_eq!(
        (first["mode"].as_str(), first["function"].as_str()),
        (Some("forward"), Some("rechargeWithPermit"))
    );
    // The client retries (a timeout, say): the first answer, nothing sent again.
    let (status, again) = post_relay(api, &session.access, &body, Some("recharge-1")).await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["tx_hash"], first["tx_hash"]);

    let id = first["id"].as_i64().expect("id");
    let done = settled(api, &session.access, id).await?;
    assert_eq!(done["status"], "mined", "{done}");
    let balance = indexed_balance(api, &session.access, chain, user.address()).await?;
    assert_ne!(balance, "0");
    let forwarder = Forwarder::new(c.forwarder, chain.reader());
    assert_eq!(
        forwarder.nonces(user.address()).call().await?,
        U256::from(1),
        "executed exactly once"
    );
    assert_eq!(
        chain.reader().get_balance(user.address()).await?,
        U256::ZERO,
        "the user paid no gas"
    );

    // The record is private.
    let other = api.login(&chain.user(11)).await?;
    let (status, body) = api.get(&format!("/blockchain/credit/{id}"), Some(&other.access)).await?;
    assert_eq!((status, problem_type(&body).as_str()), (404, "not-found"), "{body}");
    Ok(())
}

#[tokio::test]
async fn raw_transactions_the_wallet_signed_are_broadcast() -> anyhow::Result<()> {
    let stack = stack(None).await?;
    let Stack { chain, api, .. } = &stack;
    let c = chain.deployment.contracts;
    let token_address = c.test_token().expect("a test token");
    let user = chain.user(10);
    let session = api.login(&user).await?;
    let p_user = chain.provider_as(user.clone());
    TestToken::new(token_address, &p_user)
        .mint(user.address(), U256::from(AMOUNT))
        .send()
        .await?
        .get_receipt()
        .await?;

    let approve = TestToken::new(token_address, chain.reader())
        .approve(c.credit_ledger, U256::from(AMOUNT))
        .calldata()
        .clone();
    let raw = raw_tx(chain, &user, token_address, approve, chain.chain_id()).await?;
    let (status, approved) =
        post_relay(api, &session.access, &json!({ "raw_transaction": raw }), None).await?;
    assert_eq!(status, 202, "{approved}");
    assert_eq!(
        settled(api, &session.access, approved["id"].as_i64().expect("id")).await?["status"],
        "mined"
    );

    let recharge = CreditLedger::new(c.credit_ledger, chain.reader())
        .recharge(token_address, U256::from(AMOUNT))
        .calldata()
        .clone();
    let raw = raw_tx(chain, &user, c.credit_ledger, recharge, chain.chain_id()).await?;
    let (status, recharged) =
        post_relay(api, &session.access, &json!({ "raw_transaction": raw }), None).await?;
    assert_eq!(status, 202, "{recharged}");
    let done = settled(api, &session.access, recharged["id"].as_i64().expect("id")).await?;
    assert_eq!(
        (done["status"].as_str(), done["function"].as_str()),
        (Some("mined"), Some("recharge")),
        "{done}"
    );
    assert_ne!(indexed_balance(api, &session.access, chain, user.address()).await?, "0");
    Ok(())
}

#[tokio::test]
async fn the_relay_refuses_what_it_must_not_send() -> anyhow::Result<()> {
    let stack = stack(None).await?;
    let Stack { chain, api, db, .. } = &stack;
    let c = chain.deployment.contracts;
    let (alice, bob) = (chain.user(12), chain.user(13));
    let session = api.login(&alice).await?;
    let register = Bytes::from(decentraspace_abi::AccountRegistry::registerCall {}.abi_encode());
    // Bob's service, which Alice's wallet has no say over.
    let as_bob = chain.provider_as(bob.clone());
    decentraspace_abi::AccountRegistry::new(c.account_registry, &as_bob)
        .register()
        .send()
        .await?
        .get_receipt()
        .await?;
    let bobs = ServiceRegistry::new(c.service_registry, &as_bob);
    let create = bobs.createService(ServiceKind::StaticHosting.into(), keccak256("bob"));
    let bobs_service = create.call().await?;
    create.send().await?.get_receipt().await?;
    let pause_bobs =
        Bytes::from(ServiceRegistry::pauseCall { serviceId: bobs_service }.abi_encode());
    let alice_nonce = chain.reader().get_transaction_count(alice.address()).await?;

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "a foreign contract",
            json!({ "raw_transaction": raw_tx(chain, &alice, Address::repeat_byte(0x42), register.clone(), chain.chain_id()).await? }),
            422,
            "relay-call-not-allowed",
        ),
        (
            "another chain",
            json!({ "raw_transaction": raw_tx(chain, &alice, c.account_registry, register.clone(), 137).await? }),
            422,
            "relay-wrong-chain",
        ),
        (
            "another wallet's raw transaction",
            json!({ "raw_transaction": raw_tx(chain, &bob, c.account_registry, register.clone(), chain.chain_id()).await? }),
            403,
            "forbidden",
        ),
        (
            "another wallet's forward request",
            forward(chain, &bob, bob.address(), c.account_registry, register.clone()).await?,
            403,
            "forbidden",
        ),
        (
            "a forward request signed by someone else",
            forward(chain, &bob, alice.address(), c.account_registry, register.clone()).await?,
            422,
            "relay-invalid-request",
        ),
        (
            "a role-gated function",
            forward(
                chain,
                &alice,
                alice.address(),
                c.credit_ledger,
                CreditLedger::creditFiatCall {
                    account: alice.address(),
                    credits: U256::from(1),
                    paymentRef: keccak256("x"),
                }
                .abi_encode()
                .into(),
            )
            .await?,
            422,
            "relay-call-not-allowed",
        ),
        (
            "a call that would revert",
            forward(
                chain,
                &alice,
                alice.address(),
                c.service_registry,
                ServiceRegistry::pauseCall { serviceId: U256::from(999) }.abi_encode().into(),
            )
            .await?,
            422,
            "relay-would-revert",
        ),
        (
            "a raw transaction that would revert",
            json!({ "raw_transaction": raw_tx(chain, &alice, c.service_registry, ServiceRegistry::pauseCall { serviceId: U256::from(999) }.abi_encode().into(), chain.chain_id()).await? }),
            422,
            "relay-would-revert",
        ),
        (
            "a raw transaction acting on another wallet's service",
            json!({ "raw_transaction": raw_tx(chain, &alice, c.service_registry, pause_bobs.clone(), chain.chain_id()).await? }),
            403,
            "forbidden",
        ),
        (
            "a forward request acting on another wallet's service",
            forward(chain, &alice, alice.address(), c.service_registry, pause_bobs.clone()).await?,
            403,
            "forbidden",
        ),
        (
            "both modes at once",
            json!({ "raw_transaction": "0x00", "forward_request": null }),
            400,
            "bad-request",
        ),
        ("neither mode", json!({}), 400, "bad-request"),
        ("garbage", json!({ "raw_transaction": "0x1234" }), 400, "bad-request"),
    ];
    for (what, body, want_status, want_type) in cases {
        let (status, answer) = post_relay(api, &session.access, &body, None).await?;
        assert_eq!(
            (status, problem_type(&answer)),
            (want_status, want_type.to_owned()),
            "{what}: {answer}"
        );
    }
    let (status, _) = api.post("/blockchain/credit", None, &json!({})).await?;
    assert_eq!(status, 401);

    // Every refusal came before anything was recorded or sent.
    let mut conn = db.connect().await?;
    let recorded: i64 = sqlx::query_scalar("select count(*) from relayed_transactions")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(recorded, 0);
    // Nor did any of Alice's signed transactions reach the chain: she spent no gas.
    assert_eq!(chain.reader().get_transaction_count(alice.address()).await?, alice_nonce);
    Ok(())
}

#[tokio::test]
async fn the_per_account_quota_holds() -> anyhow::Result<()> {
    let stack = stack(Some(2)).await?;
    let Stack { chain, api, .. } = &stack;
    let c = chain.deployment.contracts;
    let token_address = c.test_token().expect("a test token");
    let user = chain.user(14);
    let session = api.login(&user).await?;
    let approve = TestToken::new(token_address, chain.reader())
        .approve(c.credit_ledger, U256::from(1))
        .calldata()
        .clone();
    for n in 0..3 {
        let raw = raw_tx(chain, &user, token_address, approve.clone(), chain.chain_id()).await?;
        let (status, body) =
            post_relay(api, &session.access, &json!({ "raw_transaction": raw }), None).await?;
        if n < 2 {
            assert_eq!(status, 202, "{body}");
            settled(api, &session.access, body["id"].as_i64().expect("id")).await?;
        } else {
            assert_eq!((status, problem_type(&body).as_str()), (429, "rate-limited"), "{body}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_copies_of_one_signed_request_are_relayed_once() -> anyhow::Result<()> {
    let stack = stack(None).await?;
    let Stack { chain, api, db, .. } = &stack;
    let c = chain.deployment.contracts;
    let user = PrivateKeySigner::random();
    let session = api.login(&user).await?;
    // The first login registers the wallet; then it opens a site through the relay.
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.get("/auth/tier", Some(&session.access)).await?.1["registered"] != true {
        anyhow::ensure!(Instant::now() < deadline, "registration never indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let create = |reference: &str| -> Bytes {
        ServiceRegistry::createServiceCall {
            kind: ServiceKind::StaticHosting.into(),
            r#ref: keccak256(reference),
        }
        .abi_encode()
        .into()
    };
    let body = forward(chain, &user, user.address(), c.service_registry, create("site-1")).await?;

    // Ten copies at once, no idempotency key: one is sent, the others get its record.
    let answers = futures::future::try_join_all(
        (0..10).map(|_| post_relay(api, &session.access, &body, None)),
    )
    .await?;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(accepted, 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 202 || *s == 200), "{answers:?}");
    let id = &answers[0].1["id"];
    assert!(answers.iter().all(|(_, b)| &b["id"] == id), "one record: {answers:?}");
    let mut conn = db.connect().await?;
    let recorded: i64 = sqlx::query_scalar("select count(*) from relayed_transactions")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(recorded, 1);

    // A key used for another request is refused, not answered with the first record.
    let storage = |reference: &str| -> Bytes {
        ServiceRegistry::createServiceCall {
            kind: ServiceKind::Storage.into(),
            r#ref: keccak256(reference),
        }
        .abi_encode()
        .into()
    };
    let files = forward(chain, &user, user.address(), c.service_registry, storage("files")).await?;
    let (status, first) = post_relay(api, &session.access, &files, Some("k")).await?;
    assert_eq!(status, 202, "{first}");
    let other = forward(chain, &user, user.address(), c.service_registry, storage("other")).await?;
    let (status, reused) = post_relay(api, &session.access, &other, Some("k")).await?;
    assert_eq!(
        (status, problem_type(&reused).as_str()),
        (422, "idempotency-key-reused"),
        "{reused}"
    );
    Ok(())
}

/// `POST /billing/recharge` with method `crypto`, as `token`'s holder `user`.
async fn crypto_recharge(
    api: &TestApi,
    token: &str,
    token_address: Address,
    amount: u64,
) -> anyhow::Result<Value> {
    let (status, answer) = api
        .post(
            "/billing/recharge/",
            Some(token),
            &json!({ "method": "crypto", "token": token_address.to_string(), "amount": amount.to_string() }),
        )
        .await?;
    anyhow::ensure!(status == 200, "crypto recharge: {status} {answer}");
    Ok(answer)
}

#[tokio::test]
async fn token_recharges_follow_what_the_api_answers_to_sign() -> anyhow::Result<()> {
    let stack = stack(None).await?;
    let Stack { chain, api, .. } = &stack;
    let c = chain.deployment.contracts;
    let token_address = c.test_token().expect("a test token");
    let minter = chain.provider_as(chain.role(Role::Deployer));
    let token = TestToken::new(token_address, &minter);

    // Approve, then recharge: two raw transactions the wallet signs.
    let user = chain.user(3);
    let session = api.login(&user).await?;
    token.mint(user.address(), U256::from(AMOUNT)).send().await?.get_receipt().await?;
    let answer = crypto_recharge(api, &session.access, token_address, AMOUNT).await?;
    let credits = answer["credits"].as_str().expect("credits").to_owned();
    let calls = answer["approve_then_recharge"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        calls.iter().map(|c| c["function"].clone()).collect::<Vec<_>>(),
        ["approve", "recharge"]
    );
    for call in &calls {
        let to: Address = call["to"].as_str().expect("to").parse()?;
        let data: Bytes = call["data"].as_str().expect("data").parse()?;
        let raw = raw_tx(chain, &user, to, data, chain.chain_id()).await?;
        let (status, sent) =
            post_relay(api, &session.access, &json!({ "raw_transaction": raw }), None).await?;
        assert_eq!(status, 202, "{sent}");
        assert_eq!(
            settled(api, &session.access, sent["id"].as_i64().expect("id")).await?["status"],
            "mined"
        );
    }
    assert_eq!(indexed_balance(api, &session.access, chain, user.address()).await?, credits);

    // A permit and a gasless recharge, for a wallet without ether.
    let wallet = PrivateKeySigner::random();
    let session = api.login(&wallet).await?;
    token.mint(wallet.address(), U256::from(AMOUNT)).send().await?.get_receipt().await?;
    let answer = crypto_recharge(api, &session.access, token_address, AMOUNT).await?;
    let typed = &answer["permit"]["typed_data"];
    let domain = alloy::sol_types::Eip712Domain {
        name: Some(typed["domain"]["name"].as_str().expect("name").to_owned().into()),
        version: Some(typed["domain"]["version"].as_str().expect("version").to_owned().into()),
        chain_id: Some(U256::from(typed["domain"]["chainId"].as_u64().expect("chain"))),
        verifying_contract: Some(
            typed["domain"]["verifyingContract"].as_str().expect("contract").parse()?,
        ),
        salt: None,
    };
    let message = &typed["message"];
    let number = |field: &str| -> anyhow::Result<U256> {
        Ok(message[field].as_str().expect("field").parse()?)
    };
    let permit = Permit {
        owner: message["owner"].as_str().expect("owner").parse()?,
        spender: message["spender"].as_str().expect("spender").parse()?,
        value: number("value")?,
        nonce: number("nonce")?,
        deadline: number("deadline")?,
    };
    assert_eq!((permit.owner, permit.spender), (wallet.address(), c.credit_ledger));
    let sig = wallet.sign_hash(&permit.eip712_signing_hash(&domain)).await?;
    let call = CreditLedger::new(c.credit_ledger, chain.reader())
        .rechargeWithPermit(
            token_address,
            permit.value,
            permit.deadline,
            27 + u8::from(sig.v()),
            B256::from(sig.r()),
            B256::from(sig.s()),
        )
        .calldata()
        .clone();
    let body = forward(chain, &wallet, wallet.address(), c.credit_ledger, call).await?;
    let (status, sent) = post_relay(api, &session.access, &body, None).await?;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(
        settled(api, &session.access, sent["id"].as_i64().expect("id")).await?["status"],
        "mined"
    );
    assert_eq!(
        indexed_balance(api, &session.access, chain, wallet.address()).await?,
        answer["credits"].as_str().expect("credits")
    );

    // Tokens the ledger does not take, and amounts outside the bounds, are refused.
    let (status, body) = api
        .post("/billing/recharge", Some(&session.access), &json!({ "method": "crypto", "token": Address::repeat_byte(9).to_string(), "amount": 10 }))
        .await?;
    assert_eq!((status, problem_type(&body).as_str()), (422, "token-not-accepted"), "{body}");
    let (status, body) = api
        .post(
            "/billing/recharge",
            Some(&session.access),
            &json!({ "method": "crypto", "token": token_address.to_string(), "amount": 1 }),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    Ok(())
}
