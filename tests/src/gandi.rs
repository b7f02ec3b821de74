//! A local server speaking Gandi's API v5 for domains (`GET /v5/domain/check`,
//! `POST /v5/domain/domains`, `POST /v5/domain/domains/{fqdn}/renew`; bearer tokens; errors as
//! `{"code", "message", "cause", "object"}`) and LiveDNS (`/v5/livedns/domains/{fqdn}/records`,
//! record sets by `{rrset_name}/{rrset_type}`: list, read, `PUT` to create or replace, `DELETE`).
//! Every name costs 10.00 EUR a year; `taken.*` names are unavailable, and registering a name that
//! starts with `fail` answers a server error. A registered name's zone starts as Gandi's default
//! one: a parking `A` at the apex and a `www` `CNAME` to its web redirection.

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

/// A record set's key in a zone: (name, type).
type RecordKey = (String, String);
/// A zone: each record set's TTL and values by its key.
type Zone = HashMap<RecordKey, (u64, Vec<String>)>;

#[derive(Debug, Default)]
struct Registered {
    /// fqdn → years bought in all.
    names: Mutex<HashMap<String, u32>>,
    /// fqdn → when it was first registered (its registry expiry is that plus the years).
    since: Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>,
    /// fqdn → its zone: (name, type) → (ttl, values).
    zones: Mutex<HashMap<String, Zone>>,
    /// Whether a renewal, once carried out, never answers (the caller's crash before it heard).
    stall_renewals: std::sync::atomic::AtomicBool,
    /// Renewals carried out and left unanswered so far.
    stalled: std::sync::atomic::AtomicUsize,
}

/// Gandi's default zone for a new name.
fn default_zone() -> Zone {
    HashMap::from([
        (("@".into(), "A".into()), (10800, vec!["217.70.184.38".into()])),
        (("www".into(), "CNAME".into()), (10800, vec!["webredir.vip.gandi.net.".into()])),
    ])
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
    registered.zones.lock().expect("lock").entry(fqdn.clone()).or_insert_with(default_zone);
    registered.since.lock().expect("lock").insert(fqdn.clone(), chrono::Utc::now());
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
    {
        let mut names = registered.names.lock().expect("lock");
        let Some(years) = names.get_mut(&fqdn) else {
            return error(StatusCode::NOT_FOUND, "domain not found");
        };
        *years += body["duration"].as_u64().unwrap_or(1) as u32;
    }
    if registered.stall_renewals.load(std::sync::atomic::Ordering::SeqCst) {
        registered.stalled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
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
        Some(years) => {
            let since = registered.since.lock().expect("lock").get(&fqdn).copied();
            let ends = since.unwrap_or_else(chrono::Utc::now)
                + chrono::Duration::days(365 * i64::from(*years));
            Json(json!({
                "fqdn": fqdn, "status": ["clientTransferProhibited"],
                "dates": { "registry_ends_at": ends.to_rfc3339() },
            }))
            .into_response()
        }
        None => error(StatusCode::NOT_FOUND, "domain not found"),
    }
}

fn rrset(fqdn: &str, (name, kind): &RecordKey, (ttl, values): &(u64, Vec<String>)) -> Value {
    json!({
        "rrset_name": name, "rrset_type": kind, "rrset_ttl": ttl, "rrset_values": values,
        "rrset_href": format!("https://api.gandi.net/v5/livedns/domains/{fqdn}/records/{name}/{kind}"),
    })
}

async fn records(
    State(registered): State<Arc<Registered>>,
    Path(fqdn): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let zones = registered.zones.lock().expect("lock");
    let Some(zone) = zones.get(&fqdn) else {
        return error(StatusCode::NOT_FOUND, "The resource could not be found.");
    };
    let mut sets: Vec<_> = zone.iter().collect();
    sets.sort();
    Json(sets.into_iter().map(|(key, set)| rrset(&fqdn, key, set)).collect::<Vec<_>>())
        .into_response()
}

async fn record_set(
    State(registered): State<Arc<Registered>>,
    Path((fqdn, name, kind)): Path<(String, String, String)>,
    headers: HeaderMap,
    method: axum::http::Method,
    body: Option<Json<Value>>,
) -> Response {
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut zones = registered.zones.lock().expect("lock");
    let Some(zone) = zones.get_mut(&fqdn) else {
        return error(StatusCode::NOT_FOUND, "The resource could not be found.");
    };
    let key = (name, kind);
    match method {
        axum::http::Method::GET => match zone.get(&key) {
            Some(set) => Json(rrset(&fqdn, &key, set)).into_response(),
            None => error(StatusCode::NOT_FOUND, "The resource could not be found."),
        },
        axum::http::Method::PUT => {
            let Some(Json(body)) = body else {
                return error(StatusCode::BAD_REQUEST, "a JSON body is required");
            };
            let values: Vec<String> = body["rrset_values"]
                .as_array()
                .map(|v| v.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            if values.is_empty() {
                return error(StatusCode::BAD_REQUEST, "rrset_values: at least one value");
            }
            // LiveDNS refuses a CNAME beside other records of its name, and an ALIAS beside
            // an apex A/AAAA.
            let (name, kind) = (&key.0, key.1.as_str());
            let clash = zone.keys().any(|(n, t)| {
                n == name
                    && t != kind
                    && (kind == "CNAME"
                        || t == "CNAME"
                        || (kind == "ALIAS" && matches!(t.as_str(), "A" | "AAAA"))
                        || (t == "ALIAS" && matches!(kind, "A" | "AAAA")))
            });
            if clash {
                return error(StatusCode::CONFLICT, "conflicting record set");
            }
            let ttl = body["rrset_ttl"].as_u64().unwrap_or(10800);
            zone.insert(key, (ttl, values));
            (StatusCode::CREATED, Json(json!({ "message": "DNS Record Created" }))).into_response()
        }
        axum::http::Method::DELETE => match zone.remove(&key) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => error(StatusCode::NOT_FOUND, "The resource could not be found."),
        },
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
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
            .route("/v5/livedns/domains/{fqdn}/records", get(records))
            .route(
                "/v5/livedns/domains/{fqdn}/records/{name}/{kind}",
                get(record_set).put(record_set).delete(record_set),
            )
            .with_state(registered.clone());
        let server = Served::start(app).await?;
        Ok(Self { url: format!("{}/v5", server.url()), registered, _server: server })
    }

    /// Registers `fqdn` at the fake directly (as if a request had reached it before a crash).
    pub fn hold(&self, fqdn: &str) {
        self.registered.since.lock().expect("lock").insert(fqdn.to_owned(), chrono::Utc::now());
        self.registered
            .zones
            .lock()
            .expect("lock")
            .entry(fqdn.to_owned())
            .or_insert_with(default_zone);
        self.registered.names.lock().expect("lock").insert(fqdn.to_owned(), 1);
    }

    /// `fqdn`'s record set `name`/`kind` in its zone: its values, if it has one.
    pub fn record(&self, fqdn: &str, name: &str, kind: &str) -> Option<Vec<String>> {
        let zones = self.registered.zones.lock().expect("lock");
        zones.get(fqdn)?.get(&(name.to_owned(), kind.to_owned())).map(|(_, values)| values.clone())
    }

    /// Sets `fqdn`'s record set `name`/`kind` to `values` (none: removes it), as someone with
    /// access to the registrar account would, behind the platform's back.
    pub fn set_record(&self, fqdn: &str, name: &str, kind: &str, values: &[&str]) {
        let mut zones = self.registered.zones.lock().expect("lock");
        let zone = zones.entry(fqdn.to_owned()).or_default();
        let key = (name.to_owned(), kind.to_owned());
        if values.is_empty() {
            zone.remove(&key);
        } else {
            zone.insert(key, (300, values.iter().map(|v| (*v).to_owned()).collect()));
        }
    }

    /// From now on (`true`), a renewal is carried out and then never answered, as if its caller
    /// crashed before hearing it.
    pub fn stall_renewals(&self, stall: bool) {
        self.registered.stall_renewals.store(stall, std::sync::atomic::Ordering::SeqCst);
    }

    /// Renewals carried out and left unanswered so far.
    pub fn stalled(&self) -> usize {
        self.registered.stalled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Renews `fqdn` for `years` at the fake directly (a renewal that reached it before a crash).
    pub fn renew(&self, fqdn: &str, years: u32) {
        if let Some(held) = self.registered.names.lock().expect("lock").get_mut(fqdn) {
            *held += years;
        }
    }

    /// Years registered for `fqdn` at the fake, if it is registered.
    pub fn years(&self, fqdn: &str) -> Option<u32> {
        self.registered.names.lock().expect("lock").get(fqdn).copied()
    }
}
