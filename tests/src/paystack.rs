//! A local HTTP server speaking Paystack's documented API (`POST /transaction/initialize`,
//! `GET /transaction/verify/{reference}`, bearer secret key) and sending webhooks signed as
//! Paystack signs them (hex HMAC-SHA512 of the body with the secret key), with knobs to make it
//! misbehave.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha512;

use crate::served::{Served, bearer};

/// The fake's secret key.
pub const PAYSTACK_SECRET: &str = "sk_test_decentraspace_fake";

/// One transaction as the fake keeps it.
#[derive(Debug, Clone)]
pub struct FakeTransaction {
    /// Amount in subunits.
    pub amount: u64,
    /// Currency.
    pub currency: String,
    /// `pending`, `success`, `failed`…
    pub status: String,
}

#[derive(Debug, Default)]
struct Inner {
    transactions: Mutex<HashMap<String, FakeTransaction>>,
    /// Verify answers 503 this many more times.
    down_for: AtomicU32,
    verify_calls: AtomicU32,
}

/// The running fake; stopped when dropped.
#[derive(Debug)]
pub struct FakePaystack {
    /// Its base URL.
    pub url: String,
    inner: Arc<Inner>,
    _server: Served,
}

fn authorized(headers: &HeaderMap) -> bool {
    bearer(headers) == Some(PAYSTACK_SECRET)
}

fn refuse(status: StatusCode, message: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "status": false, "message": message })))
}

fn transaction_json(reference: &str, t: &FakeTransaction) -> Value {
    json!({
        "id": 4_099_260_516u64, "domain": "test", "status": t.status, "reference": reference,
        "amount": t.amount, "currency": t.currency, "gateway_response": "Successful", "channel": "card",
        "paid_at": "2026-11-24T12:00:00.000Z", "created_at": "2026-11-24T11:59:00.000Z",
        "customer": { "email": "payer@example.com" }, "metadata": {},
    })
}

async fn initialize(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, "Invalid key");
    }
    let (Some(reference), Some(amount), Some(currency), Some(_email)) = (
        body["reference"].as_str(),
        body["amount"].as_u64(),
        body["currency"].as_str(),
        body["email"].as_str(),
    ) else {
        return refuse(StatusCode::BAD_REQUEST, "Invalid params");
    };
    let mut transactions = inner.transactions.lock().expect("lock");
    if transactions.contains_key(reference) {
        return refuse(StatusCode::BAD_REQUEST, "Duplicate Transaction Reference");
    }
    transactions.insert(
        reference.to_owned(),
        FakeTransaction { amount, currency: currency.to_owned(), status: "pending".into() },
    );
    let code = format!("ac_{reference}");
    (
        StatusCode::OK,
        Json(json!({
            "status": true, "message": "Authorization URL created",
            "data": { "authorization_url": format!("https://checkout.paystack.com/{code}"), "access_code": code, "reference": reference },
        })),
    )
}

async fn verify(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(reference): Path<String>,
) -> (StatusCode, Json<Value>) {
    inner.verify_calls.fetch_add(1, Ordering::SeqCst);
    if !authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, "Invalid key");
    }
    if inner.down_for.load(Ordering::SeqCst) > 0 {
        inner.down_for.fetch_sub(1, Ordering::SeqCst);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
    }
    match inner.transactions.lock().expect("lock").get(&reference) {
        Some(t) => (
            StatusCode::OK,
            Json(
                json!({ "status": true, "message": "Verification successful", "data": transaction_json(&reference, t) }),
            ),
        ),
        None => refuse(StatusCode::BAD_REQUEST, "Transaction reference not found"),
    }
}

impl FakePaystack {
    /// Starts the fake on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/transaction/initialize", post(initialize))
            .route("/transaction/verify/{reference}", get(verify))
            .with_state(inner.clone());
        let server = Served::start(app).await?;
        Ok(Self { url: server.url(), inner, _server: server })
    }

    /// The customer pays: the transaction succeeds with `amount` and `currency` (or as
    /// initialized when `None`), or ends with another `status`.
    pub fn settle(
        &self,
        reference: &str,
        status: &str,
        amount: Option<u64>,
        currency: Option<&str>,
    ) {
        let mut transactions = self.inner.transactions.lock().expect("lock");
        if let Some(t) = transactions.get_mut(reference) {
            t.status = status.to_owned();
            if let Some(amount) = amount {
                t.amount = amount;
            }
            if let Some(currency) = currency {
                t.currency = currency.to_owned();
            }
        }
    }

    /// Verify answers 503 the next `n` times.
    pub fn go_down_for(&self, n: u32) {
        self.inner.down_for.store(n, Ordering::SeqCst);
    }

    /// How many verifications were asked.
    pub fn verify_calls(&self) -> u32 {
        self.inner.verify_calls.load(Ordering::SeqCst)
    }

    /// The `charge.success` event Paystack sends for `reference`, as bytes.
    pub fn charge_success(&self, reference: &str) -> Vec<u8> {
        let t = self.inner.transactions.lock().expect("lock").get(reference).cloned().unwrap_or(
            FakeTransaction { amount: 0, currency: "NGN".into(), status: "success".into() },
        );
        serde_json::to_vec(
            &json!({ "event": "charge.success", "data": transaction_json(reference, &t) }),
        )
        .expect("json")
    }
}

/// The `x-paystack-signature` of `body` under `secret`.
pub fn paystack_signature(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    alloy::hex::encode(mac.finalize().into_bytes())
}
