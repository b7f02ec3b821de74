//! Dynamic sites end to end: anvil, Postgres, the indexer and the API with its gateway, against a
//! local server speaking the Fly Machines API whose "machines" are small HTTP servers on loopback.
//! A Paid account deploys an image; the deploy job starts its machine and the gateway proxies to
//! it; a new deployment replaces the machine (blue/green); a machine that dies is started again;
//! pausing the service stops it and resuming starts it; a broken image fails without touching
//! what is served; Free accounts and bad requests are refused.

use alloy::primitives::{U256, keccak256};
use decentraspace_abi::{AccountRegistry, CreditLedger, ServiceRegistry, Tier};
use decentraspace_tests::{
    FLY_APP, FLY_TOKEN, FakeContainer, FakeFly, IndexerTask, Role, TestApi, TestChain, TestDb,
    api_config, eventually, indexer_config, problem_type,
};
use serde_json::Value;

const DOMAIN: &str = "sites.test";

async fn deploy_image(
    api: &TestApi,
    token: &str,
    parts: &[(&str, String)],
) -> anyhow::Result<(u16, Value)> {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in parts {
        form = form.text(name.to_string(), value.clone());
    }
    let response =
        api.http.post(api.url("/hosting/deploy")).bearer_auth(token).multipart(form).send().await?;
    let status = response.status().as_u16();
    Ok((status, serde_json::from_str(&response.text().await?).unwrap_or(Value::Null)))
}

fn image_parts(site: &str, image: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("site", site.to_owned()),
        ("runtime", "dynamic".to_owned()),
        ("image", image.to_owned()),
        ("port", port.to_string()),
    ]
}

/// A request to the gateway for `site`: status and body.
async fn visit(api: &TestApi, site: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    api.gateway_current().await?;
    let request = match body {
        Some(body) => api.http.post(format!("{}/echo", api.gateway)).body(body.to_owned()),
        None => api.http.get(format!("{}/", api.gateway)),
    };
    let response = request.header("host", format!("{site}.{DOMAIN}")).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

async fn instance_state(api: &TestApi, token: &str, site: &str) -> anyhow::Result<Value> {
    Ok(api.get(&format!("/hosting/status/{site}"), Some(token)).await?.1["instance"].clone())
}

#[tokio::test]
async fn dynamic_sites_run_their_image_behind_the_gateway() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let fly = FakeFly::start().await?;
    let mut config = api_config(&chain, &db);
    config.sites_domain = DOMAIN.into();
    config.site_url_template = format!("http://{{site}}.{DOMAIN}");
    config.uptime_interval_secs = 0;
    config.fly_api_url = fly.url.clone();
    config.fly_app = Some(FLY_APP.into());
    config.fly_api_token = Some(FLY_TOKEN.to_owned().into());
    config.dynamic_reconcile_secs = 1;
    let api = TestApi::start_with(config).await?;
    let (paid_user, free_user, other_user) = (chain.user(0), chain.user(1), chain.user(2));
    let operator = chain.provider_as(chain.role(Role::Operator));
    let c = chain.deployment.contracts;
    let paid = api.login_registered(&paid_user).await?;
    let free = api.login_registered(&free_user).await?;
    let other = api.login_registered(&other_user).await?;
    for upgraded in [&paid_user, &other_user] {
        AccountRegistry::new(c.account_registry, &operator)
            .setTier(upgraded.address(), Tier::Paid.into(), 0)
            .send()
            .await?
            .get_receipt()
            .await?;
    }
    // Credit for the hours it runs (resuming checks there is some).
    let oracle = chain.provider_as(chain.role(Role::PaymentOracle));
    CreditLedger::new(c.credit_ledger, &oracle)
        .creditFiat(paid_user.address(), U256::from(1_000_000_000u64), keccak256("dynamic-funds"))
        .send()
        .await?
        .get_receipt()
        .await?;
    eventually("the upgrades to be indexed", || async {
        Ok(api.get("/auth/tier", Some(&paid.access)).await?.1["tier"] == "paid"
            && api.get("/auth/tier", Some(&other.access)).await?.1["tier"] == "paid")
    })
    .await?;
    let v1 = FakeContainer::start("hello v1").await?;
    let v2 = FakeContainer::start("hello v2").await?;

    // Free accounts have no dynamic sites; bad requests say what is wrong.
    let (status, problem) = deploy_image(
        &api,
        &free.access,
        &image_parts("free-app", "registry.example/app:1", v1.port),
    )
    .await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "paid-tier-required"), "{problem}");
    for (parts, why) in [
        (image_parts("my-app", "Registry/App", v1.port), "an image with capitals"),
        (image_parts("my-app", "-rm", v1.port), "an image like an option"),
        (
            vec![("site", "my-app".into()), ("runtime", "dynamic".into()), ("image", "a:1".into())],
            "no port",
        ),
        (
            vec![
                ("site", "my-app".into()),
                ("runtime", "dynamic".into()),
                ("image", "a:1".into()),
                ("port", "0".into()),
            ],
            "port 0",
        ),
        (vec![("site", "my-app".into()), ("runtime", "wasm".into())], "an unknown runtime"),
        (
            vec![("site", "my-app".into()), ("image", "a:1".into()), ("port", "80".into())],
            "an image without runtime=dynamic",
        ),
    ] {
        let (status, problem) = deploy_image(&api, &paid.access, &parts).await?;
        assert_eq!(
            (status, problem_type(&problem).as_str()),
            (400, "bad-request"),
            "{why}: {problem}"
        );
    }

    // The first deployment opens a DynamicHosting service and starts a machine the gateway
    // proxies to, body and all.
    let (status, first) =
        deploy_image(&api, &paid.access, &image_parts("my-app", "registry.example/app:1", v1.port))
            .await?;
    assert_eq!(status, 202, "{first}");
    let first_id = first["id"].as_i64().unwrap_or_default();
    let done = api.deployment_finished(&paid.access, first_id).await?;
    assert_eq!(done["state"], "live", "{done}");
    assert_eq!(
        (done["source"].as_str(), done["port"].as_u64()),
        (Some("image"), Some(u64::from(v1.port)))
    );
    assert_eq!(visit(&api, "my-app", None).await?, (200, format!("hello v1 for my-app.{DOMAIN}")));
    assert_eq!(
        visit(&api, "my-app", Some(" and a body")).await?,
        (200, format!("hello v1 for my-app.{DOMAIN} and a body"))
    );
    let (_, status_body) = api.get("/hosting/status/my-app", Some(&paid.access)).await?;
    assert_eq!(
        (status_body["kind"].as_str(), status_body["serving"].as_bool()),
        (Some("dynamic"), Some(true)),
        "{status_body}"
    );
    let first_machine =
        status_body["instance"]["machine_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(status_body["instance"]["state"], "running");
    let service_id = status_body["service_id"].as_i64().unwrap_or_default();
    let (_, services) = api.get("/services", Some(&paid.access)).await?;
    assert!(
        services.as_array().is_some_and(|l| l
            .iter()
            .any(|s| s["id"] == service_id && s["kind"] == "dynamic_hosting")),
        "{services}"
    );
    // The site is the account's: another sees nothing and takes nothing.
    assert_eq!(api.get(&format!("/hosting/deploy/{first_id}"), Some(&other.access)).await?.0, 404);
    let (status, _) = deploy_image(
        &api,
        &other.access,
        &image_parts("my-app", "registry.example/evil:1", v1.port),
    )
    .await?;
    assert_eq!(status, 409, "another account's site name");

    // A new deployment starts its machine before the old one is destroyed.
    let (_, second) =
        deploy_image(&api, &paid.access, &image_parts("my-app", "registry.example/app:2", v2.port))
            .await?;
    let second_id = second["id"].as_i64().unwrap_or_default();
    assert_eq!(api.deployment_finished(&paid.access, second_id).await?["state"], "live");
    assert_eq!(visit(&api, "my-app", None).await?.1, format!("hello v2 for my-app.{DOMAIN}"));
    let machines = fly.machines();
    assert_eq!(machines.len(), 2, "{machines:?}");
    assert_eq!(
        (machines[0].0.as_str(), machines[0].2.as_str()),
        (first_machine.as_str(), "destroyed")
    );
    let second_machine = machines[1].0.clone();

    // A machine that dies is noticed and started again.
    fly.set_state(&second_machine, "stopped");
    eventually("the crashed machine to run again", || async {
        let instance = instance_state(&api, &paid.access, "my-app").await?;
        let crashed =
            instance["events"].as_array().is_some_and(|e| e.iter().any(|e| e["to"] == "crashed"));
        Ok(crashed && instance["state"] == "running")
    })
    .await?;
    assert_eq!(fly.machines()[1].2, "started");

    // Pausing the service stops the machine; resuming starts it.
    // As the owner (the operator's key is the API's, whose nonces the test must not race).
    let owner = chain.provider_as(paid_user.clone());
    let registry = ServiceRegistry::new(c.service_registry, &owner);
    registry.pause(U256::from(service_id)).send().await?.get_receipt().await?;
    eventually("the machine to stop", || async {
        Ok(instance_state(&api, &paid.access, "my-app").await?["state"] == "stopped")
    })
    .await?;
    assert_eq!(fly.machines()[1].2, "stopped");
    assert_eq!(visit(&api, "my-app", None).await?.0, 503);
    registry.resume(U256::from(service_id)).send().await?.get_receipt().await?;
    eventually("the machine to run again", || async {
        Ok(instance_state(&api, &paid.access, "my-app").await?["state"] == "running")
    })
    .await?;
    eventually("the site to answer again", || async {
        Ok(visit(&api, "my-app", None).await?.0 == 200)
    })
    .await?;

    // An image that never starts fails; the running one keeps serving.
    let (_, broken) = deploy_image(
        &api,
        &paid.access,
        &image_parts("my-app", "registry.example/broken:3", v1.port),
    )
    .await?;
    let failed =
        api.deployment_finished(&paid.access, broken["id"].as_i64().unwrap_or_default()).await?;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("did not start")), "{failed}");
    assert_eq!(visit(&api, "my-app", None).await?.1, format!("hello v2 for my-app.{DOMAIN}"));
    assert_eq!(fly.machines()[2].2, "destroyed", "the machine that did not start is destroyed");

    // Rolling back deploys the earlier image again: a new deployment, queued.
    let (status, again) = api
        .post(
            &format!("/hosting/deploy/{first_id}/rollback"),
            Some(&paid.access),
            &serde_json::json!({}),
        )
        .await?;
    assert_eq!(status, 202, "{again}");
    let again_id = again["id"].as_i64().unwrap_or_default();
    assert_ne!(again_id, first_id);
    assert_eq!(api.deployment_finished(&paid.access, again_id).await?["state"], "live");
    assert_eq!(visit(&api, "my-app", None).await?.1, format!("hello v1 for my-app.{DOMAIN}"));

    // The replaced machine, as if a crash had stopped its removal, is found and destroyed. A
    // machine tagged with the same deployment but not recorded for it (another environment's, or a
    // clone made by hand) is left alone.
    fly.set_state(&second_machine, "started");
    let foreign = fly.add_machine("my-app", second_id, "registry.example/app:2");
    eventually("the orphaned machine to be destroyed", || async {
        Ok(fly.state(&second_machine) == "destroyed")
    })
    .await?;
    assert_eq!(fly.state(&foreign), "started");
    assert_eq!(visit(&api, "my-app", None).await?.1, format!("hello v1 for my-app.{DOMAIN}"));

    // Cancelling the service destroys the machine.
    registry.cancel(U256::from(service_id)).send().await?.get_receipt().await?;
    eventually("the machine to be destroyed", || async {
        Ok(instance_state(&api, &paid.access, "my-app").await?["state"] == "destroyed")
    })
    .await?;
    assert!(
        fly.machines().iter().filter(|m| m.0 != foreign).all(|m| m.2 == "destroyed"),
        "{:?}",
        fly.machines()
    );
    assert_eq!(fly.state(&foreign), "started", "another environment's machine is left alone");
    assert_eq!(visit(&api, "my-app", None).await?.0, 410);
    Ok(())
}
