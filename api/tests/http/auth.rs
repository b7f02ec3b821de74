//! Sign-in bounds and the refusals every client meets before a handler runs.

use alloy::signers::{SignerSync, local::PrivateKeySigner};
use axum::http::Method;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{call, get, login, post_raw, request, siwe_message, state};

#[sqlx::test(migrations = "../migrations")]
async fn a_megabyte_statement_does_not_log_in_and_leaves_the_nonce_usable(db: PgPool) {
    let state = state(db).await;
    let signer = PrivateKeySigner::random();
    let nonce =
        get(&state, "/auth/nonce", None).await.body["nonce"].as_str().expect("nonce").to_owned();
    let message = siwe_message(signer.address(), &nonce, &"a".repeat(1_000_000));
    let signature = signer.sign_message_sync(message.as_bytes()).expect("sign");
    let body = json!({ "message": message, "signature": signature.to_string() });
    let answer = call(&state, request(Method::POST, "/auth/login", None, Some(&body))).await;
    answer.assert_problem(401, "siwe-malformed");
    assert!(
        answer.body["detail"].as_str().unwrap_or_default().contains("at most 8192"),
        "{}",
        answer.text
    );

    // A statement over its own bound, in a message under the message bound.
    let message = siwe_message(signer.address(), &nonce, &"b".repeat(2_000));
    let signature = signer.sign_message_sync(message.as_bytes()).expect("sign");
    let body = json!({ "message": message, "signature": signature.to_string() });
    let answer = call(&state, request(Method::POST, "/auth/login", None, Some(&body))).await;
    answer.assert_problem(401, "siwe-malformed");
    assert!(
        answer.body["detail"].as_str().unwrap_or_default().contains("statement"),
        "{}",
        answer.text
    );

    // Neither refusal spent the nonce.
    let message = siwe_message(signer.address(), &nonce, "Sign in to DecentraSpace");
    let signature = signer.sign_message_sync(message.as_bytes()).expect("sign");
    let body = json!({ "message": message, "signature": signature.to_string() });
    let answer = call(&state, request(Method::POST, "/auth/login", None, Some(&body))).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[sqlx::test(migrations = "../migrations")]
async fn login_and_refresh_bodies_are_refused_as_documented(db: PgPool) {
    let state = state(db).await;
    for uri in ["/auth/login", "/auth/refresh"] {
        post_raw(&state, uri, None, "text/plain", "{}")
            .await
            .assert_problem(415, "unsupported-media-type");
        post_raw(&state, uri, None, "application/json", "{not json")
            .await
            .assert_problem(400, "bad-request");
        post_raw(&state, uri, None, "application/json", "{}")
            .await
            .assert_problem(422, "invalid-body");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn protected_routes_want_a_bearer_token(db: PgPool) {
    let state = state(db).await;
    for uri in
        ["/billing/balance", "/auth/tier", "/analytics/credit", "/hosting/status", "/notices"]
    {
        let answer = get(&state, uri, None).await;
        answer.assert_problem(401, "unauthorized");
        let answer = get(&state, uri, Some("not-a-token")).await;
        answer.assert_problem(401, "unauthorized");
    }
    let token = login(&state, &PrivateKeySigner::random()).await;
    assert_eq!(get(&state, "/auth/tier", Some(&token)).await.status, 200);
}

#[sqlx::test(migrations = "../migrations")]
async fn out_of_range_ids_are_bad_requests(db: PgPool) {
    let state = state(db).await;
    let token = login(&state, &PrivateKeySigner::random()).await;
    for uri in ["/blockchain/credit/99999999999999999999", "/hosting/deploy/abc", "/v1/services/-"]
    {
        get(&state, uri, Some(&token)).await.assert_problem(400, "bad-request");
    }
}
