//! Credit before action, and a balance that moves in real time (real anvil, Postgres, indexer,
//! IPFS, API): `/billing/balance` shows the on-chain balance, what the services used since their
//! last charge and what is available, second by second; `/v1/stream` sends the same figures when
//! a batch moves them; depletion acts at an available balance of zero, long before the meter's
//! next cycle, charging what was used and then suspending; and every action that starts or
//! extends a charge is refused with 402 and the shortfall when the available balance cannot pay
//! it, though the ledger alone would have let it through.

use std::time::Duration;

use alloy::primitives::U256;
use decentraspace_abi::{ServiceKind, ServiceRegistry, Tier};
use decentraspace_tests::{
    Role, Session, SseReader, Stack, TestApi, eventually, problem_type, role_key,
};
use serde_json::Value;

/// Credit units (6 decimals) per credit.
const CREDIT: u64 = 1_000_000;

/// A Paid account with `credits` units and one live static site (`site`), on a stack with IPFS
/// (and the billing key, which runs the meter, when `metered`).
async fn paid_with_site(
    credits: u64,
    site: &str,
    metered: bool,
) -> anyhow::Result<(Stack, Session)> {
    let stack = Stack::builder()
        .ipfs()
        .configure(move |config, chain| {
            if metered {
                config.billing_key = Some(role_key(chain, Role::Billing).into());
            }
        })
        .start()
        .await?;
    let session = stack.paid_user(0, credits).await?;
    let api = &stack.api;
    api.deploy_site(&session.access, site, "<h1>paid</h1>").await?;
    Ok((stack, session))
}

/// Sets the Paid hourly price of static sites (the admin's call; existing sites follow it).
async fn set_static_price(stack: &Stack, per_hour: u64) -> anyhow::Result<()> {
    let admin = stack.chain.provider_as(stack.chain.role(Role::Admin));
    let receipt = ServiceRegistry::new(stack.chain.deployment.contracts.service_registry, &admin)
        .setPrice(ServiceKind::StaticHosting.into(), Tier::Paid.into(), U256::from(per_hour))
        .send()
        .await?
        .get_receipt()
        .await?;
    anyhow::ensure!(receipt.status(), "setPrice reverted");
    Ok(())
}

/// Uploads a small file for `session`; the answer.
async fn upload(api: &TestApi, session: &Session) -> anyhow::Result<reqwest::Response> {
    let part = reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt");
    Ok(api
        .http
        .post(api.url("/storage/upload"))
        .bearer_auth(&session.access)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await?)
}

/// The problem `response` answers, which must be 402 `insufficient-credit`.
async fn refused_for_credit(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status().as_u16();
    let problem: Value = response.json().await?;
    anyhow::ensure!(
        (status, problem_type(&problem).as_str()) == (402, "insufficient-credit"),
        "expected 402 insufficient-credit, got {status}: {problem}"
    );
    Ok(problem)
}

fn units(body: &Value, field: &str) -> anyhow::Result<u128> {
    body[field]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in {body}"))
}

/// The state of the caller's only static site's service.
async fn site_state(stack: &Stack, session: &Session) -> anyhow::Result<String> {
    let (_, services) = stack.api.get("/services", Some(&session.access)).await?;
    Ok(services
        .as_array()
        .and_then(|all| all.iter().find(|s| s["kind"] == "static_hosting"))
        .and_then(|s| s["state"].as_str())
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn the_available_balance_moves_every_second_and_depletion_acts_at_zero() -> anyhow::Result<()>
{
    // With the meter (its first cycle an hour away): depletion has it charge what was used.
    let (stack, session) = paid_with_site(100 * CREDIT, "ticking", true).await?;
    let api = &stack.api;
    let account = stack.chain.user(0).address();
    let mut stream = SseReader::new(
        api.http
            .get(api.url(&format!("/v1/stream?account={account}&event=balance")))
            .send()
            .await?,
    )?;

    // 360 credits an hour: a tenth of a credit (100,000 units) a second.
    set_static_price(&stack, 360 * CREDIT).await?;
    let event = stream.next(Duration::from_secs(20)).await?.expect("a balance event");
    let streamed: Value = serde_json::from_str(&event.data)?;
    assert_eq!(streamed["account"], account.to_checksum(None), "{streamed}");
    assert_eq!(streamed["balance"], (100 * CREDIT).to_string(), "{streamed}");

    let (status, first) = api.get("/billing/balance", Some(&session.access)).await?;
    assert_eq!(status, 200, "{first}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, second) = api.get("/billing/balance", Some(&session.access)).await?;
    // Nothing was charged on-chain; the site's time is, to the second.
    assert_eq!(first["balance"], (100 * CREDIT).to_string(), "{first}");
    assert_eq!(second["balance"], first["balance"], "{second}");
    let moved = units(&second, "accrued")? - units(&first, "accrued")?;
    assert!((100_000..=300_000).contains(&moved), "1.5 s at 0.1 credit/s accrued {moved}");
    assert_eq!(
        units(&second, "available")?,
        units(&second, "balance")? - units(&second, "accrued")?,
        "{second}"
    );
    assert!(units(&second, "available")? < units(&first, "available")?);
    let (_, analytics) = api.get("/analytics/credit/", Some(&session.access)).await?;
    assert!(units(&analytics, "available")? <= units(&second, "available")?, "{analytics}");
    assert_eq!(analytics["balance"], second["balance"], "{analytics}");

    // A price that spends the 100 credits within a second of the site's life: the available
    // balance is zero now, an hour before the meter's first cycle would have charged anything.
    // Depletion has the time used charged (the ledger takes the 100 credits there are), then
    // suspends the site.
    set_static_price(&stack, 3_600_000 * CREDIT).await?;
    let charges = || async {
        let mut conn = stack.db.connect().await?;
        let charges: Vec<(String, Option<String>)> = sqlx::query_as(
            "select status, charged_credits::text from meter_charges where account = $1",
        )
        .bind(account.as_slice())
        .fetch_all(&mut conn)
        .await?;
        anyhow::Ok(charges)
    };
    let suspended = eventually("the site to be suspended", || async {
        Ok(site_state(&stack, &session).await? == "suspended")
    })
    .await;
    if let Err(err) = suspended {
        anyhow::bail!("{err}; the account's charges: {:?}", charges().await?);
    }
    let (_, after) = api.get("/billing/balance", Some(&session.access)).await?;
    assert_eq!(after["available"], "0", "{after}");
    assert_eq!(after["balance"], "0", "the ledger was charged before the suspension: {after}");
    assert_eq!(charges().await?, vec![("charged".to_owned(), Some((100 * CREDIT).to_string()))]);
    Ok(())
}

#[tokio::test]
async fn actions_that_start_a_charge_are_refused_with_the_shortfall_the_ledger_alone_would_miss()
-> anyhow::Result<()> {
    // Without a meter: nothing is charged on-chain, so the ledger keeps its 10 credits.
    let (stack, session) = paid_with_site(10 * CREDIT, "short", false).await?;
    let api = &stack.api;
    // The site's time now costs more than the whole balance: nothing is available, though the
    // ledger still holds 10 credits (enough, for the registry, to open an hour of storage).
    set_static_price(&stack, 3_600_000 * CREDIT).await?;
    eventually("the available balance to reach zero", || async {
        let (_, balance) = api.get("/billing/balance", Some(&session.access)).await?;
        Ok(balance["available"] == "0")
    })
    .await?;
    let (_, balance) = api.get("/billing/balance", Some(&session.access)).await?;
    assert_eq!(balance["balance"], (10 * CREDIT).to_string(), "{balance}");

    // An upload would open Paid storage (500 units an hour).
    let response = upload(api, &session).await?;
    let problem = refused_for_credit(response).await?;
    assert_eq!(problem["shortfall"], "500", "{problem}");
    let (_, services) = api.get("/services", Some(&session.access)).await?;
    assert!(
        services.as_array().is_some_and(|all| all.iter().all(|s| s["kind"] != "storage")),
        "no storage service was opened: {services}"
    );

    // A redeploy extends the site: an hour of it at the new price is short in full.
    let archive = decentraspace_tests::site_tar_gz("short", &[("index.html", b"<h1>2</h1>")])?;
    let form = reqwest::multipart::Form::new()
        .text("site", "short")
        .part("archive", reqwest::multipart::Part::bytes(archive).file_name("site.tar.gz"));
    let response = api
        .http
        .post(api.url("/hosting/deploy"))
        .bearer_auth(&session.access)
        .multipart(form)
        .send()
        .await?;
    let problem = refused_for_credit(response).await?;
    assert_eq!(problem["shortfall"], (3_600_000 * CREDIT).to_string(), "{problem}");

    // The site stops: the owner pauses it, unless depletion suspended it first (its available
    // balance is zero, and when the chain's head is in the second the site opened there is no
    // used time to charge before it stops). Either way, resuming needs an hour of it available.
    let (_, services) = api.get("/services", Some(&session.access)).await?;
    let id = services
        .as_array()
        .and_then(|all| all.iter().find(|s| s["kind"] == "static_hosting"))
        .and_then(|s| s["id"].as_i64())
        .ok_or_else(|| anyhow::anyhow!("no site service in {services}"))?;
    let (status, tx) = api
        .post(&format!("/services/{id}/pause"), Some(&session.access), &serde_json::json!({}))
        .await?;
    let stopped = if status == 200 {
        assert_eq!(tx["status"], "mined", "{tx}");
        "paused"
    } else {
        assert_eq!(status, 409, "{tx}");
        "suspended"
    };
    eventually("the stop to be indexed", || async {
        Ok(site_state(&stack, &session).await? == stopped)
    })
    .await?;
    let (status, problem) = api
        .post(&format!("/services/{id}/resume"), Some(&session.access), &serde_json::json!({}))
        .await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (402, "insufficient-credit"),
        "{problem}"
    );
    assert!(units(&problem, "shortfall")? >= u128::from(3_600_000 * CREDIT), "{problem}");
    assert_eq!(site_state(&stack, &session).await?, stopped, "nothing was sent");
    Ok(())
}

/// A Free account's services cost nothing: an empty balance stores files and deploys sites.
#[tokio::test]
async fn free_services_priced_at_zero_need_no_credit() -> anyhow::Result<()> {
    let stack = Stack::builder().ipfs().start().await?;
    let api = &stack.api;
    let session = api.login_registered(&stack.chain.user(1)).await?;
    let (_, balance) = api.get("/billing/balance", Some(&session.access)).await?;
    assert_eq!(
        (balance["balance"].as_str(), balance["available"].as_str()),
        (Some("0"), Some("0"))
    );
    api.deploy_site(&session.access, "free-site", "<h1>free</h1>").await?;
    let response = upload(api, &session).await?;
    assert_eq!(response.status().as_u16(), 201, "{}", response.text().await?);
    Ok(())
}
