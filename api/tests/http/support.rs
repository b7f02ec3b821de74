//! The fast tier's harness: the API's real router and layers over a `#[sqlx::test]` database.

use alloy::{
    primitives::Address,
    signers::{SignerSync, local::PrivateKeySigner},
};
use axum::{
    body::Body,
    http::{Method, Request, header},
};
use clap::Parser;
use decentraspace_api::{AppState, Config};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

/// The SIWE domain and URI the fast tier's API expects.
pub(crate) const SIWE_DOMAIN: &str = "app.decentraspace.test";
const SIWE_URI: &str = "https://app.decentraspace.test";

/// The configuration: no chain behind it (a closed port), the fixture deployment record.
pub(crate) fn config() -> Config {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/deployment.json");
    Config::parse_from([
        "api",
        "--database-url",
        "postgres://unused",
        "--rpc-url",
        "http://127.0.0.1:9",
        "--deployments-file",
        fixture,
        "--siwe-domain",
        SIWE_DOMAIN,
        "--siwe-uri",
        SIWE_URI,
        "--jwt-secret",
        "test-secret-test-secret-test-secret-0123",
    ])
}

/// The API's state over the test's database.
pub(crate) async fn state(db: PgPool) -> AppState {
    AppState::with_db(config(), db).await.expect("state")
}

/// An answer: status, content type and body (JSON when it parses, else null).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Answer {
    /// The problem type's slug (`bad-request`, …).
    pub(crate) fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("https://decentraspace.io/problems/")
    }

    /// Asserts a problem+json answer with `status` and `slug`.
    #[track_caller]
    pub(crate) fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!((self.status, self.problem()), (status, slug), "{}", self.text);
        assert_eq!(self.content_type, "application/problem+json", "{}", self.text);
        assert_eq!(self.body["status"], status, "{}", self.text);
    }
}

/// Sends one request through the whole application.
pub(crate) async fn call(state: &AppState, request: Request<Body>) -> Answer {
    let response =
        decentraspace_api::app(state.clone()).oneshot(request).await.expect("infallible");
    answer(response).await
}

/// Reads a response.
pub(crate) async fn answer(response: axum::response::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer { status, content_type, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
}

/// A request with an optional bearer token and JSON body.
pub(crate) fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    json: Option<&Value>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match json {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .expect("request")
}

/// GET `uri`.
pub(crate) async fn get(state: &AppState, uri: &str, token: Option<&str>) -> Answer {
    call(state, request(Method::GET, uri, token, None)).await
}

/// POST raw `body` with `content_type` to `uri`.
pub(crate) async fn post_raw(
    state: &AppState,
    uri: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<Body>,
) -> Answer {
    let mut builder =
        Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, content_type);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    call(state, builder.body(body.into()).expect("request")).await
}

/// An EIP-4361 message for the fast tier's API, with `statement` as its statement line.
pub(crate) fn siwe_message(address: Address, nonce: &str, statement: &str) -> String {
    Siwe { statement: statement.into(), ..Siwe::new(address, nonce) }.text()
}

/// An EIP-4361 message with the fast tier's expectations, each field overridable.
#[derive(Debug, Clone)]
pub(crate) struct Siwe {
    pub(crate) domain: String,
    pub(crate) address: Address,
    pub(crate) statement: String,
    pub(crate) uri: String,
    pub(crate) chain_id: u64,
    pub(crate) nonce: String,
    pub(crate) issued_at: chrono::DateTime<chrono::Utc>,
    pub(crate) expiration_time: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) not_before: Option<chrono::DateTime<chrono::Utc>>,
}

impl Siwe {
    /// A valid message for `address` with `nonce`, issued now.
    pub(crate) fn new(address: Address, nonce: &str) -> Self {
        Self {
            domain: SIWE_DOMAIN.into(),
            address,
            statement: "Sign in to DecentraSpace".into(),
            uri: SIWE_URI.into(),
            chain_id: 31337,
            nonce: nonce.into(),
            issued_at: chrono::Utc::now(),
            expiration_time: None,
            not_before: None,
        }
    }

    /// The message text.
    pub(crate) fn text(&self) -> String {
        let ts =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut text = format!(
            "{} wants you to sign in with your Ethereum account:\n{}\n\n{}\n\nURI: {}\nVersion: 1\nChain ID: {}\nNonce: {}\nIssued At: {}",
            self.domain,
            self.address.to_checksum(None),
            self.statement,
            self.uri,
            self.chain_id,
            self.nonce,
            ts(self.issued_at)
        );
        if let Some(t) = self.expiration_time {
            text.push_str(&format!("\nExpiration Time: {}", ts(t)));
        }
        if let Some(t) = self.not_before {
            text.push_str(&format!("\nNot Before: {}", ts(t)));
        }
        text
    }
}

/// A fresh nonce.
pub(crate) async fn nonce(state: &AppState) -> String {
    get(state, "/auth/nonce", None).await.body["nonce"].as_str().expect("nonce").to_owned()
}

/// POSTs a login with `message` and `signature`.
pub(crate) async fn login_with(state: &AppState, message: &str, signature: &str) -> Answer {
    let body = serde_json::json!({ "message": message, "signature": signature });
    call(state, request(Method::POST, "/auth/login", None, Some(&body))).await
}

/// Signs in as `signer` through `/auth/nonce` and `/auth/login` (an EOA needs no chain): the
/// access token.
pub(crate) async fn login(state: &AppState, signer: &PrivateKeySigner) -> String {
    let nonce =
        get(state, "/auth/nonce", None).await.body["nonce"].as_str().expect("nonce").to_owned();
    let message = siwe_message(signer.address(), &nonce, "Sign in to DecentraSpace");
    let signature = signer.sign_message_sync(message.as_bytes()).expect("sign");
    let body = serde_json::json!({ "message": message, "signature": signature.to_string() });
    let answer = call(state, request(Method::POST, "/auth/login", None, Some(&body))).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body["access_token"].as_str().expect("access token").to_owned()
}
