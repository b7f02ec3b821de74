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

#[sqlx::test(migrations = "../migrations")]
async fn each_siwe_failure_is_refused_with_its_own_problem_type(db: PgPool) {
    use crate::support::{Siwe, login_with, nonce};
    let state = state(db.clone()).await;
    let user = PrivateKeySigner::random();
    let now = chrono::Utc::now();
    let fresh = |nonce: String| Siwe::new(user.address(), &nonce);
    let cases = [
        ("siwe-wrong-domain", Siwe { domain: "evil.example".into(), ..fresh(nonce(&state).await) }),
        (
            "siwe-wrong-uri",
            Siwe { uri: "https://evil.example".into(), ..fresh(nonce(&state).await) },
        ),
        ("siwe-wrong-chain", Siwe { chain_id: 137, ..fresh(nonce(&state).await) }),
        (
            "siwe-expired",
            Siwe {
                expiration_time: Some(now - chrono::Duration::seconds(10)),
                ..fresh(nonce(&state).await)
            },
        ),
        (
            "siwe-not-yet-valid",
            Siwe {
                not_before: Some(now + chrono::Duration::hours(1)),
                ..fresh(nonce(&state).await)
            },
        ),
        (
            "siwe-stale-issued-at",
            Siwe { issued_at: now - chrono::Duration::hours(2), ..fresh(nonce(&state).await) },
        ),
        ("siwe-invalid-nonce", fresh("neverIssued12345".into())),
    ];
    for (want, message) in &cases {
        let text = message.text();
        let signature = user.sign_message_sync(text.as_bytes()).expect("sign");
        let answer = login_with(&state, &text, &signature.to_string()).await;
        answer.assert_problem(401, want);
        assert!(
            answer.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{want} explains itself: {}",
            answer.text
        );
    }

    // Malformed message and malformed signature.
    let signature = user.sign_message_sync(b"hello").expect("sign");
    login_with(&state, "hello", &signature.to_string()).await.assert_problem(401, "siwe-malformed");
    let text = fresh(nonce(&state).await).text();
    login_with(&state, &text, "0xzz").await.assert_problem(401, "siwe-malformed");

    // A replayed message: the first use signs in, the second is refused.
    let text = fresh(nonce(&state).await).text();
    let signature = user.sign_message_sync(text.as_bytes()).expect("sign").to_string();
    assert_eq!(login_with(&state, &text, &signature).await.status, 200);
    login_with(&state, &text, &signature).await.assert_problem(401, "siwe-invalid-nonce");

    // Only the one good login issued tokens for this wallet; the failures issued none.
    let issued: i64 = sqlx::query_scalar("select count(*) from refresh_tokens where account = $1")
        .bind(user.address().as_slice())
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(issued, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn private_routes_refuse_missing_tampered_and_expired_tokens(db: PgPool) {
    let state = state(db).await;
    let wallet = PrivateKeySigner::random();
    let token = login(&state, &wallet).await;
    assert_eq!(get(&state, "/billing/balance/", Some(&token)).await.status, 200);
    get(&state, "/billing/balance/", None).await.assert_problem(401, "unauthorized");

    // Flip one character of the signature.
    let mut tampered = token.clone();
    let last = tampered.pop().expect("token");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    get(&state, "/billing/balance", Some(&tampered)).await.assert_problem(401, "unauthorized");

    // A token signed with the right key but expired an hour ago.
    let keys = decentraspace_api::http::auth::AccessTokens::new(
        &"test-secret-test-secret-test-secret-0123".to_owned().into(),
        900,
    )
    .expect("keys");
    let expired = keys
        .sign(wallet.address(), chrono::Utc::now() - chrono::Duration::hours(1))
        .expect("signed");
    let answer = get(&state, "/billing/balance", Some(&expired)).await;
    answer.assert_problem(401, "unauthorized");
    assert!(
        answer.body["detail"].as_str().is_some_and(|d| d.contains("expired")),
        "{}",
        answer.text
    );

    // Another scheme: 401 asking for a bearer token.
    let request = axum::http::Request::builder()
        .uri("/billing/balance")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(axum::body::Body::empty())
        .expect("request");
    let response =
        tower::ServiceExt::oneshot(decentraspace_api::app(state), request).await.expect("answer");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}
