//! Card payments end to end against a local server speaking Paystack's API, with webhooks signed
//! as Paystack signs them: a paid card payment is credited on-chain once, whatever is replayed;
//! bad signatures, mismatched amounts or currencies, failed payments and Paystack outages never
//! credit wrongly (real anvil, Postgres, indexer, API).

use std::time::{Duration, Instant};

use alloy::primitives::Address;
use decentraspace_abi::CreditLedger;
use decentraspace_tests::{
    FakePaystack, PAYSTACK_SECRET, Role, Session, Stack, TestApi, TestDb, paystack_signature,
    problem_type, role_key,
};
use serde_json::{Value, json};

/// Credit units per kobo: 1 NGN (100 kobo) buys 0.01 credit (10,000 units).
const RATE: u64 = 100;

/// The stack with card payments on (Paystack served by a local fake), the naira rate set, and a
/// signed-in customer.
struct Payments {
    stack: Stack,
    paystack: FakePaystack,
    user: Session,
    account: Address,
}

async fn stack() -> anyhow::Result<Payments> {
    let paystack = FakePaystack::start().await?;
    let url = paystack.url.clone();
    let stack = Stack::builder()
        .caught_up()
        .configure(move |config, chain| {
            config.paystack_secret_key = Some(PAYSTACK_SECRET.to_owned().into());
            config.paystack_base_url = url;
            config.payment_oracle_key = Some(role_key(chain, Role::PaymentOracle).into());
        })
        .start()
        .await?;
    let (chain, api) = (&stack.chain, &stack.api);

    // The admin sets the naira rate (audited).
    let admin = api.login(&chain.role(Role::Admin)).await?;
    let status = api.set_fiat_rate(&admin, "NGN", RATE).await?;
    anyhow::ensure!(status == 204, "set rate: {status}");
    let wallet = chain.user(0);
    let user = api.login(&wallet).await?;
    Ok(Payments { stack, paystack, user, account: wallet.address() })
}

/// Starts a card payment of `amount` kobo; returns its reference.
async fn initialize(api: &TestApi, user: &Session, amount: u64) -> anyhow::Result<String> {
    let (status, payment) = api
        .post(
            "/billing/recharge/",
            Some(&user.access),
            &json!({ "method": "card", "currency": "NGN", "amount": amount }),
        )
        .await?;
    anyhow::ensure!(status == 201, "recharge: {status} {payment}");
    anyhow::ensure!(payment["status"] == "initialized", "{payment}");
    anyhow::ensure!(
        payment["authorization_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://checkout.paystack.com/")),
        "{payment}"
    );
    Ok(payment["reference"].as_str().unwrap_or_default().to_owned())
}

async fn deliver(api: &TestApi, body: &[u8], signature: &str) -> anyhow::Result<(u16, Value)> {
    let response = api
        .http
        .post(api.url("/billing/paystack/webhook"))
        .header("content-type", "application/json")
        .header("x-paystack-signature", signature)
        .body(body.to_vec())
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, serde_json::from_str(&response.text().await?).unwrap_or(Value::Null)))
}

/// Polls the payment until it reaches one of `ends`.
async fn settled(
    api: &TestApi,
    user: &Session,
    reference: &str,
    ends: &[&str],
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, payment) =
            api.get(&format!("/billing/recharge/{reference}"), Some(&user.access)).await?;
        anyhow::ensure!(status == 200, "{status} {payment}");
        if ends.iter().any(|e| payment["status"] == *e) {
            return Ok(payment);
        }
        anyhow::ensure!(Instant::now() < deadline, "payment stuck: {payment}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fiat_entries(db: &TestDb) -> anyhow::Result<i64> {
    let mut conn = db.connect().await?;
    Ok(sqlx::query_scalar("select count(*) from credit_entries where kind = 'fiat'")
        .fetch_one(&mut conn)
        .await?)
}

#[tokio::test]
async fn a_paid_card_payment_is_credited_once_however_often_paystack_says_so() -> anyhow::Result<()>
{
    let payments = stack().await?;
    let Payments { stack: Stack { chain, db, api, .. }, paystack, user, account } = &payments;
    // With a card provider configured, card payments are offered, in the configured currencies.
    let (status, methods) = api.get("/billing/payment-methods", Some(&user.access)).await?;
    assert_eq!(status, 200, "{methods}");
    let methods = methods["methods"].as_array().cloned().unwrap_or_default();
    let card = methods.iter().find(|m| m["method"] == "card").expect("card offered");
    assert_eq!(card["provider"], "paystack");
    assert!(card["currencies"].as_array().is_some_and(|c| c.iter().any(|c| c == "NGN")));

    let reference = initialize(api, user, 500_000).await?;
    paystack.settle(&reference, "success", None, None);
    let body = paystack.charge_success(&reference);
    let signature = paystack_signature(&body, PAYSTACK_SECRET);

    // Paystack retries deliveries: three of the same event.
    let (status, first) = deliver(api, &body, &signature).await?;
    assert_eq!((status, first["queued"].as_bool()), (200, Some(true)), "{first}");
    for _ in 0..2 {
        let (status, again) = deliver(api, &body, &signature).await?;
        assert_eq!((status, again["duplicate"].as_bool()), (200, Some(true)), "{again}");
    }
    let payment = settled(api, user, &reference, &["credited", "failed", "flagged"]).await?;
    assert_eq!(payment["status"], "credited", "{payment}");
    let expected = (500_000 * RATE).to_string();
    assert_eq!(payment["credits"], expected);
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    assert_eq!(
        ledger.balanceOf(*account).call().await?.to_string(),
        expected,
        "credited exactly once on-chain"
    );
    assert_eq!(
        api.get("/billing/balance", Some(&user.access)).await?.1["balance"],
        expected.as_str()
    );
    assert_eq!(fiat_entries(db).await?, 1);

    // Another wallet cannot read it.
    let other = api.login(&chain.user(1)).await?;
    assert_eq!(
        api.get(&format!("/billing/recharge/{reference}"), Some(&other.access)).await?.0,
        404
    );
    Ok(())
}

#[tokio::test]
async fn nothing_is_credited_on_a_bad_signature_a_mismatch_or_a_failed_payment()
-> anyhow::Result<()> {
    let payments = stack().await?;
    let Payments { stack: Stack { chain, db, api, .. }, paystack, user, account } = &payments;

    // A forged delivery.
    let forged = initialize(api, user, 10_000).await?;
    paystack.settle(&forged, "success", None, None);
    let body = paystack.charge_success(&forged);
    let (status, answer) = deliver(api, &body, &paystack_signature(&body, "sk_test_wrong")).await?;
    assert_eq!((status, problem_type(&answer).as_str()), (401, "invalid-signature"), "{answer}");
    let (status, _) = deliver(api, &body, "").await?;
    assert_eq!(status, 401);

    // Paid less than initialized; paid in another currency; not paid at all.
    let cases = [
        ("flagged", Some(9_000u64), None, "success"),
        ("flagged", None, Some("GHS"), "success"),
        ("failed", None, None, "failed"),
    ];
    for (want, amount, currency, paystack_status) in cases {
        let reference = initialize(api, user, 10_000).await?;
        paystack.settle(&reference, paystack_status, amount, currency);
        let body = paystack.charge_success(&reference);
        let (status, ack) =
            deliver(api, &body, &paystack_signature(&body, PAYSTACK_SECRET)).await?;
        assert_eq!(status, 200, "{ack}");
        let payment = settled(api, user, &reference, &["credited", "failed", "flagged"]).await?;
        assert_eq!(payment["status"], want, "{payment}");
        assert!(payment["reason"].as_str().is_some_and(|r| !r.is_empty()), "{payment}");
    }
    let (_, forged_payment) =
        api.get(&format!("/billing/recharge/{forged}"), Some(&user.access)).await?;
    assert_eq!(forged_payment["status"], "initialized");
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    assert_eq!(ledger.balanceOf(*account).call().await?.to_string(), "0");
    assert_eq!(fiat_entries(db).await?, 0);

    // Bad requests.
    for (body, want) in [
        (json!({ "method": "card", "currency": "EUR", "amount": 10_000 }), 400),
        (json!({ "method": "card", "currency": "NGN", "amount": 1 }), 400),
        (json!({ "method": "crypto", "currency": "NGN", "amount": 10_000 }), 400),
        (json!({ "method": "card", "currency": "KES", "amount": 10_000 }), 422),
    ] {
        let (status, answer) = api.post("/billing/recharge", Some(&user.access), &body).await?;
        assert_eq!(status, want, "{body}: {answer}");
    }
    Ok(())
}

#[tokio::test]
async fn paystack_down_during_verification_is_retried_and_credits_once() -> anyhow::Result<()> {
    let payments = stack().await?;
    let Payments { stack: Stack { chain, db, api, .. }, paystack, user, account } = &payments;
    let reference = initialize(api, user, 20_000).await?;
    paystack.settle(&reference, "success", None, None);
    paystack.go_down_for(3);
    let body = paystack.charge_success(&reference);
    let (status, _) = deliver(api, &body, &paystack_signature(&body, PAYSTACK_SECRET)).await?;
    assert_eq!(status, 200);
    let payment = settled(api, user, &reference, &["credited", "failed", "flagged"]).await?;
    assert_eq!(payment["status"], "credited", "{payment}");
    assert!(
        paystack.verify_calls() >= 4,
        "three failures, then a success: {}",
        paystack.verify_calls()
    );
    let ledger = CreditLedger::new(chain.deployment.contracts.credit_ledger, chain.reader());
    assert_eq!(ledger.balanceOf(*account).call().await?.to_string(), (20_000 * RATE).to_string());
    assert_eq!(fiat_entries(db).await?, 1);
    Ok(())
}
