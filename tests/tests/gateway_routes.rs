//! The gateway's routes from memory, end to end (anvil, Postgres, the indexer, IPFS, the API
//! with its gateway): once a site was served, later requests do not read its row again, and
//! what changes it (a new deployment, a pause on-chain) shows on the next request after the
//! gateway heard the database's notification.

use alloy::primitives::U256;
use decentraspace_abi::ServiceRegistry;
use decentraspace_tests::{Role, Stack, TestApi, wait_for_checkpoint};
use std::time::Duration;

/// `GET /` of `site` on the gateway, once it heard every committed change: status and body.
async fn visit(api: &TestApi, site: &str) -> anyhow::Result<(u16, String)> {
    api.gateway_current().await?;
    let response = api
        .http
        .get(format!("{}/", api.gateway))
        .header("host", format!("{site}.{}", "sites.test"))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_site_is_answered_from_memory_until_a_change_is_heard() -> anyhow::Result<()> {
    let stack = Stack::builder()
        .ipfs()
        .configure(|config, _| {
            config.sites_domain = "sites.test".into();
            config.uptime_interval_secs = 0;
        })
        .start()
        .await?;
    let (api, db) = (&stack.api, &stack.db);
    let owner = api.login_registered(&stack.chain.user(0)).await?;
    api.deploy_site(&owner.access, "shop", "<h1>v1</h1>").await?;
    // Every block so far indexed (a batch empties the routes), then the site read once.
    let head = alloy::providers::Provider::get_block_number(&stack.chain.reader()).await?;
    wait_for_checkpoint(db, stack.chain.chain_id(), head, Duration::from_secs(30)).await?;
    assert_eq!(visit(api, "shop").await?, (200, "<h1>v1</h1>".to_owned()));

    // A change the gateway is not told of (its trigger off): it keeps answering from memory.
    let mut conn = db.connect().await?;
    sqlx::raw_sql(
        "alter table sites disable trigger sites_changed;
         update sites set current_deployment_id = null where name = 'shop';
         alter table sites enable trigger sites_changed;",
    )
    .execute(&mut conn)
    .await?;
    assert_eq!(visit(api, "shop").await?, (200, "<h1>v1</h1>".to_owned()), "read from memory");
    // The same change, told: the next request reads it.
    sqlx::query("update sites set current_deployment_id = null where name = 'shop'")
        .execute(&mut conn)
        .await?;
    let (status, body) = visit(api, "shop").await?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("Nothing deployed yet"), "{body}");

    // A new deployment shows on the next request.
    api.deploy_site(&owner.access, "shop", "<h1>v2</h1>").await?;
    assert_eq!(visit(api, "shop").await?, (200, "<h1>v2</h1>".to_owned()));

    // Suspended on-chain: the indexer's batch empties the routes; the next request is a 503.
    let (_, site) = api.get("/hosting/status/shop", Some(&owner.access)).await?;
    let service = site["service_id"].as_i64().unwrap_or_default();
    let operator = stack.chain.provider_as(stack.chain.role(Role::Operator));
    let receipt =
        ServiceRegistry::new(stack.chain.deployment.contracts.service_registry, &operator)
            .suspend(U256::from(service as u64))
            .send()
            .await?
            .get_receipt()
            .await?;
    let block = receipt.block_number.unwrap_or_default();
    wait_for_checkpoint(db, stack.chain.chain_id(), block, Duration::from_secs(30)).await?;
    let (status, body) = visit(api, "shop").await?;
    assert_eq!(status, 503, "{body}");
    Ok(())
}
