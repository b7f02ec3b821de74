//! A NUL anywhere in the path, the query or a JSON body is refused once, at the edge, with 400
//! problem+json, on every route (PostgreSQL cannot store it in text; before, each of these
//! answered 500).

use alloy::signers::local::PrivateKeySigner;
use axum::http::Method;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{call, get, login, post_raw, request, state};

/// Makes `signer` a platform admin as the indexer would record it (`DEFAULT_ADMIN_ROLE` on the
/// account registry).
async fn make_admin(db: &PgPool, signer: &PrivateKeySigner) {
    let registry = crate::support::config();
    let deployment =
        decentraspace_abi::Deployment::load(&registry.deployments_file).expect("fixture");
    sqlx::query(
        "insert into role_members (chain_id, contract, role, account) values (31337, $1, $2, $3)",
    )
    .bind(deployment.contracts.account_registry.as_slice())
    .bind([0u8; 32].as_slice())
    .bind(signer.address().as_slice())
    .execute(db)
    .await
    .expect("admin role");
}

#[sqlx::test(migrations = "../migrations")]
async fn nul_in_public_paths_and_queries_is_refused(db: PgPool) {
    let state = state(db).await;
    for uri in ["/v1/domains/a%00b.com", "/v1/events?event=a%00b", "/v1/events?contract=a%00b"] {
        let answer = get(&state, uri, None).await;
        answer.assert_problem(400, "bad-request");
        assert!(
            answer.body["detail"].as_str().unwrap_or_default().contains("NUL"),
            "{uri}: {}",
            answer.text
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn nul_in_signed_in_paths_and_queries_is_refused(db: PgPool) {
    let state = state(db).await;
    let token = login(&state, &PrivateKeySigner::random()).await;
    for uri in [
        "/hosting/deploy?site=%00",
        "/hosting/status/a%00b",
        "/analytics/site?site=a%00b",
        "/billing/recharge/a%00b",
    ] {
        get(&state, uri, Some(&token)).await.assert_problem(400, "bad-request");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn nul_in_admin_queries_and_json_bodies_is_refused(db: PgPool) {
    let admin = PrivateKeySigner::random();
    make_admin(&db, &admin).await;
    let state = state(db).await;
    let token = login(&state, &admin).await;
    get(&state, "/hosting/expire?site=a%00b", Some(&token))
        .await
        .assert_problem(400, "bad-request");
    let body = json!({ "site": "a\u{0}b", "expires_at": null });
    let answer =
        call(&state, request(Method::POST, "/hosting/expire", Some(&token), Some(&body))).await;
    answer.assert_problem(400, "bad-request");
    assert!(
        answer.body["detail"].as_str().unwrap_or_default().contains("JSON body"),
        "{}",
        answer.text
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn nul_in_any_json_body_is_refused_before_the_handler(db: PgPool) {
    let state = state(db).await;
    // Without a token: refused for the NUL before the login is even looked at.
    let body = r#"{"message":"a\u0000","signature":"0x00"}"#;
    post_raw(&state, "/auth/login", None, "application/json", body)
        .await
        .assert_problem(400, "bad-request");
    // A backslash followed by the text `u0000` is no NUL: the route answers as usual.
    let body = r#"{"refresh_token":"\\u0000"}"#;
    post_raw(&state, "/auth/refresh", None, "application/json", body)
        .await
        .assert_problem(401, "invalid-refresh-token");
}
