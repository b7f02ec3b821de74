//! A local server speaking Gandi's API v5 for domains (`GET /v5/domain/check`,
//! `POST /v5/domain/domains`, `POST /v5/domain/domains/{fqdn}/renew`; bearer tokens; errors as
//! `{"code", "message", "cause", "object"}`). Every name costs 10.00 EUR a year; `taken.*` names
//! are unavailable, and registering a name that starts with `fail` answers a server error.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use crate::served::{Served, bearer};

/// The token the fake takes.
pub const GANDI_TOKEN: &str = "gandi-test-pat";

#[derive(Debug, Default)]
struct Registered {
    /// fqdn → years bought in all.
    names: Mutex<HashMap<String, u32>>,
}

/// The fake Gandi; stops when dropped.
pub struct FakeGandi {
    /// Its base URL (`…/v5`).
    pub url: String,
    registered: Arc<Registered>,
    _server: Served,
}

fn error(status: StatusCode, message: &str) -> Response {
    let object =
        if status.is_client_error() { "HTTPBadRequest" } else { "HTTPInternalServerError" };
    (
        status,
        Json(json!({ "code": status.as_u16(), "message": message, "object": object, "cause": "" })),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    bearer(headers) == Some(GANDI_TOKEN)
}

async fn check(headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if !authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "The server could not verify that you authorized to access the document you requested.",
        );
    }
    let name = q.get("name").cloned().unwrap_or_default();
    let process = q.get("processes").cloned().unwrap_or_else(|| "create".into());
    let status =
        if name.starts_with("taken.") && process == "create" { "unavailable" } else { "available" };
    Json(json!({
        "currency": "EUR",
        "grid": "A",
        "products": [{
            "name": name,
            "process": process,
            "status": status,
            "prices": [{ "duration_unit": "y", "min_duration": 1, "max_duration": 10,
                         "price_after_taxes": 10.0, "price_before_taxes": 8.33, "discount": false }],
            "taxes": [{ "type": "service", "rate": 20, "name": "vat" }],
        }],
    }))
    .into_response()
}

async fn register(
    State(registered): State<Arc<Registered>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let fqdn = body["fqdn"].as_str().unwrap_or_default().to_owned();
    if fqdn.starts_with("fail") {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    if !body["owner"].is_object() {
        return error(StatusCode::BAD_REQUEST, "owner is required");
    }
    let years = body["duration"].as_u64().unwrap_or(1) as u32;
    registered.names.lock().expect("lock").insert(fqdn, years);
    (StatusCode::ACCEPTED, Json(json!({ "message": "The domain is being created." })))
        .into_response()
}

async fn renew(
    State(registered): State<Arc<Registered>>,
    Path(fqdn): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut names = registered.names.lock().expect("lock");
    let Some(years) = names.get_mut(&fqdn) else {
        return error(StatusCode::NOT_FOUND, "domain not found");
    };
    *years += body["duration"].as_u64().unwrap_or(1) as u32;
    (StatusCode::ACCEPTED, Json(json!({ "message": "The domain is being renewed." })))
        .into_response()
}

async fn domain(
    State(registered): State<Arc<Registered>>,
    Path(fqdn): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    match registered.names.lock().expect("lock").get(&fqdn) {
        Some(_) => {
            Json(json!({ "fqdn": fqdn, "status": ["clientTransferProhibited"] })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "domain not found"),
    }
}

impl FakeGandi {
    /// Starts it on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let registered: Arc<Registered> = Arc::default();
        let app = Router::new()
            .route("/v5/domain/check", get(check))
            .route("/v5/domain/domains", post(register))
            .route("/v5/domain/domains/{fqdn}", get(domain))
            .route("/v5/domain/domains/{fqdn}/renew", post(renew))
            .with_state(registered.clone());
        let server = Served::start(app).await?;
        Ok(Self { url: format!("{}/v5", server.url()), registered, _server: server })
    }

    /// Registers `fqdn` at the fake directly (as if a request had reached it before a crash).
    pub fn hold(&self, fqdn: &str) {
        self.registered.names.lock().expect("lock").insert(fqdn.to_owned(), 1);
    }

    /// Years registered for `fqdn` at the fake, if it is registered.
    pub fn years(&self, fqdn: &str) -> Option<u32> {
        self.registered.names.lock().expect("lock").get(fqdn).copied()
    }
}
