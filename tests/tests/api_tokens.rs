//! API tokens end to end: anvil, Postgres, the indexer, an IPFS node and the API with its
//! gateway. A signed-in wallet makes a token, shown once and kept as a digest; the token deploys
//! a site and reads within its scopes, is refused (403, naming the scope) outside them, for
//! admin routes even of an admin's wallet, and to manage tokens; a revoked, expired or unknown
//! token is a 401.

use decentraspace_tests::{
    IndexerTask, Role, TestApi, TestChain, TestDb, TestIpfs, api_config, indexer_config,
    problem_type,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Makes a token as `session`: its id and secret.
async fn make(api: &TestApi, session: &str, body: Value) -> anyhow::Result<(i64, String)> {
    let (status, made) = api.post("/auth/tokens", Some(session), &body).await?;
    anyhow::ensure!(status == 201, "{status}: {made}");
    Ok((made["id"].as_i64().unwrap_or_default(), made["token"].as_str().unwrap_or_default().into()))
}

#[tokio::test]
async fn api_tokens_act_for_their_wallet_within_their_scopes_until_revoked() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;
    let mut config = api_config(&chain, &db);
    config.ipfs_api_url = Some(ipfs.api_url.clone());
    config.ipfs_gateway_url = ipfs.gateway_url.clone();
    config.sites_domain = "sites.test".into();
    config.uptime_interval_secs = 0;
    let api = TestApi::start_with(config).await?;
    let wallet = chain.user(0);
    let session = api.login_registered(&wallet).await?.access;
    let other = api.login_registered(&chain.user(1)).await?.access;

    // Made from a session, shown once, kept as its digest only.
    let (status, made) = api
        .post(
            "/auth/tokens",
            Some(&session),
            &json!({ "name": "github-actions", "scopes": ["deploy", "read"], "expires_in_days": 30 }),
        )
        .await?;
    assert_eq!(status, 201, "{made}");
    let ci_token = made["token"].as_str().unwrap_or_default().to_owned();
    let ci_id = made["id"].as_i64().unwrap_or_default();
    assert!(ci_token.starts_with("dsk_") && ci_token.len() == 68, "{made}");
    assert_eq!(made["prefix"].as_str(), Some(&ci_token[..12]));
    assert_eq!(made["scopes"], json!(["deploy", "read"]));
    let stored: Vec<u8> = sqlx::query_scalar("select token_hash from api_tokens where id = $1")
        .bind(ci_id)
        .fetch_one(&mut db.connect().await?)
        .await?;
    assert_eq!(stored, Sha256::digest(ci_token.as_bytes()).to_vec());

    // It deploys and reads as its wallet.
    api.deploy_site(&ci_token, "from-ci", "<h1>deployed by CI</h1>").await?;
    let (status, sites) = api.get("/hosting/status", Some(&ci_token)).await?;
    assert_eq!(status, 200, "{sites}");
    assert!(sites.to_string().contains("from-ci"), "{sites}");
    let (_, owners) = api.get("/hosting/status", Some(&session)).await?;
    assert!(owners.to_string().contains("from-ci"), "the wallet's own site: {owners}");

    // Outside its scopes: 403 saying which scope the route needs.
    let (status, problem) = api.get("/billing/balance", Some(&ci_token)).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "forbidden"), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("billing-read")), "{problem}");
    let (_, reader) =
        make(&api, &session, json!({ "name": "dashboard", "scopes": ["read"] })).await?;
    let (status, problem) = api.post("/hosting/deploy", Some(&reader), &json!({})).await?;
    assert_eq!(status, 403, "a read token cannot deploy: {problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("`deploy`")), "{problem}");
    // Never to manage tokens, spend credits, or for admin routes, whatever its scopes.
    for (method, path) in [
        (reqwest::Method::GET, "/auth/tokens"),
        (reqwest::Method::POST, "/auth/tokens"),
        (reqwest::Method::POST, "/domain/purchase"),
        (reqwest::Method::POST, "/storage/manage/1/pause"),
        (reqwest::Method::POST, "/services/1/resume"),
        (reqwest::Method::GET, "/github/link/1/repositories"),
    ] {
        let body = json!({ "name": "more", "scopes": ["read"], "domain": "x.test" });
        let (status, problem) =
            api.send(method.clone(), path, Some(&ci_token), Some(&body)).await?;
        assert_eq!(status, 403, "{method} {path}: {problem}");
    }
    let admin_session = api.login(&chain.role(Role::Admin)).await?.access;
    let (_, admins) =
        make(&api, &admin_session, json!({ "name": "ops", "scopes": ["read", "billing-read"] }))
            .await?;
    let (status, _) = api.get("/analytics/system", Some(&admin_session)).await?;
    assert_eq!(status, 200, "the admin's session");
    for path in ["/analytics/system", "/auth/manage"] {
        let (status, problem) = api.get(path, Some(&admins)).await?;
        assert_eq!(status, 403, "{path} with an admin's API token: {problem}");
    }
    // Nor what admins may see of other wallets: the admin's token sees only its own wallet's.
    let (status, _) = api.get("/hosting/status/from-ci", Some(&admin_session)).await?;
    assert_eq!(status, 200, "an admin's session sees any site");
    let (status, _) = api.get("/hosting/status/from-ci", Some(&admins)).await?;
    assert_eq!(status, 404, "an admin's token does not");

    // Listed without secrets; another wallet sees none of them.
    let (status, listed) = api.get("/auth/tokens", Some(&session)).await?;
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> =
        listed.as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["dashboard", "github-actions"]);
    assert!(!listed.to_string().contains(&ci_token[12..]), "no secret in the list");
    assert!(listed[1]["last_used_at"].is_string(), "its use is seen: {listed}");
    let (_, theirs) = api.get("/auth/tokens", Some(&other)).await?;
    assert_eq!(theirs, json!([]));

    // Bad requests say what is wrong, and make nothing.
    for (body, what) in [
        (json!({ "name": "x", "scopes": [] }), "no scope"),
        (json!({ "name": "", "scopes": ["read"] }), "no name"),
        (json!({ "name": "x", "scopes": ["read"], "expires_in_days": 400 }), "too long"),
        (json!({ "name": "x", "scopes": ["root"] }), "an unknown scope"),
    ] {
        let (status, problem) = api.post("/auth/tokens", Some(&session), &body).await?;
        assert!(matches!(status, 400 | 422), "{what}: {status} {problem}");
    }
    let (_, listed) = api.get("/auth/tokens", Some(&session)).await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));

    // Revoked: refused at once; another wallet cannot revoke it.
    let (status, _) = api
        .send(reqwest::Method::DELETE, &format!("/auth/tokens/{ci_id}"), Some(&other), None)
        .await?;
    assert_eq!(status, 404);
    let (status, _) = api
        .send(reqwest::Method::DELETE, &format!("/auth/tokens/{ci_id}"), Some(&session), None)
        .await?;
    assert_eq!(status, 204);
    let (status, problem) = api.get("/hosting/status", Some(&ci_token)).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (401, "unauthorized"), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("revoked")), "{problem}");

    // Expired, and unknown: 401 too.
    sqlx::query(
        "update api_tokens set expires_at = now() - interval '1 second' where name = 'dashboard'",
    )
    .execute(&mut db.connect().await?)
    .await?;
    let (status, problem) = api.get("/hosting/status", Some(&reader)).await?;
    assert_eq!(status, 401, "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("expired")), "{problem}");
    let (status, _) = api.get("/hosting/status", Some(&format!("dsk_{}", "0".repeat(64)))).await?;
    assert_eq!(status, 401);
    Ok(())
}
