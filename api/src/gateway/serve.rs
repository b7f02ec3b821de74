//! The gateway: serves each site's current deployment by `Host` (`<site>.<SITES_DOMAIN>`), and
//! its previews at `<preview>--<site>.<SITES_DOMAIN>` (not indexed, not counted).
//!
//! Hosts, sites and deployments' file lists come from memory ([`super::sites`]), kept current by
//! the database's notifications. A path resolves against the deployment's file list (recorded
//! when it went live), so no request probes IPFS for what is not there: the file itself, then
//! its folder's `index.html`; failing both, the site's own `404.html`, else `index.html` for a
//! page path when the site is a single-page application, else a 404 page. Small files are kept
//! in memory and large ones on disk, by CID; the first read of each streams from the IPFS node.
//! Every file is tagged with its CID (`ETag`), so a client revalidates for free and a changed
//! file is a new tag; files with a hash in their name are cached for good; one byte range is
//! served (`Range`, `If-Range`); text files go out as the brotli or gzip copy made at deploy
//! when the client takes one.
//! Unknown sites answer 404, expired or cancelled ones 410, paused or suspended ones 503, each
//! with a page that says so. Every request is recorded for the site's analytics.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chrono::Utc;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use anyhow::Context;

use super::traffic::{Hit, Traffic};
use super::{
    disk_cache::DiskCache,
    file_cache::{FileCache, MAX_FILE as MAX_CACHED_FILE},
    ranges::{self, Encoding, Wanted},
    sites::{File, Served},
};
use crate::{gateway::GatewayState, hosting::routing::Routing};

/// Deployments whose routing is kept parsed (the cache starts over past it).
const MAX_ROUTING_CACHED: usize = 4_096;

/// The gateway's shared state.
#[derive(Clone)]
struct Gateway {
    state: GatewayState,
    /// The request log, counted in memory and written every second.
    traffic: Arc<Traffic>,
    /// A daily visitor hash is salted with this (derived from the JWT secret), so the stored
    /// hashes name no one and cannot be joined across days.
    salt: [u8; 32],
    /// Small files by CID.
    files: std::sync::Arc<FileCache>,
    /// Large files by CID, on disk.
    disk: Arc<DiskCache>,
    /// Requests to dynamic sites' machines.
    upstream: reqwest::Client,
    /// Deployments' `_redirects` and `_headers`, by deployment.
    routing: Arc<Mutex<HashMap<i64, Arc<Routing>>>>,
}

/// The gateway's router, and its request log (write it alongside: [`Traffic::write_until`]).
fn router(state: GatewayState) -> anyhow::Result<(Router, Arc<Traffic>)> {
    let traffic = Arc::new(Traffic::default());
    let salt: [u8; 32] = Sha256::new()
        .chain_update(b"decentraspace visitor salt\0")
        .chain_update(state.config.jwt_secret.expose_secret().as_bytes())
        .finalize()
        .into();
    let disk = DiskCache::new(
        state.config.gateway_cache_dir.clone(),
        state.config.gateway_cache_max_mb.saturating_mul(1024 * 1024),
    )
    .context("the gateway's disk cache")?;
    let gateway = Gateway {
        state,
        traffic: traffic.clone(),
        salt,
        files: Default::default(),
        disk: Arc::new(disk),
        upstream: super::proxy::client(),
        routing: Default::default(),
    };
    Ok((Router::new().fallback(serve).with_state(gateway), traffic))
}

/// Serves the gateway on `listener` (plain HTTP) and, when given, on `tls` (HTTPS) until
/// `stopping` is cancelled. On plain HTTP, a host served over HTTPS is redirected there, except
/// for ACME's HTTP-01 challenges, which are answered; HTTPS answers carry HSTS when configured.
pub async fn serve_gateway(
    state: GatewayState,
    listener: tokio::net::TcpListener,
    tls: Option<tokio::net::TcpListener>,
    stopping: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let (router, traffic) = router(state.clone())?;
    let finish = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn({
        let (db, finish) = (state.db.clone(), finish.clone());
        async move { traffic.write_until(db, finish).await }
    });
    let secure = match (tls, &state.certificates) {
        (Some(tls), Some(store)) => {
            let listener = super::tls::TlsListener::new(tls, store.server_config()?)?;
            let hsts = state.config.hsts_max_age_secs;
            let router = router.clone().layer(axum::middleware::map_response(
                move |mut response: Response| async move {
                    if hsts > 0
                        && let Ok(value) = HeaderValue::from_str(&format!("max-age={hsts}"))
                    {
                        response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, value);
                    }
                    response
                },
            ));
            let stopping = stopping.clone();
            Some(tokio::spawn(async move {
                axum::serve(
                    axum::serve::ListenerExt::tap_io(listener, |_| {}),
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(stopping.cancelled_owned())
                .await
            }))
        }
        (Some(_), None) => anyhow::bail!("an HTTPS listener without certificates"),
        _ => None,
    };
    let plain = Router::new()
        .route("/.well-known/acme-challenge/{token}", axum::routing::get(acme_challenge))
        .with_state(state.clone())
        .merge(router.layer(axum::middleware::from_fn_with_state(state, to_https)));
    let served = axum::serve(listener, plain.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stopping.cancelled_owned())
        .await;
    let secured = match secure {
        Some(task) => task.await.map_err(anyhow::Error::from).and_then(|r| Ok(r?)),
        None => Ok(()),
    };
    // Every connection is closed: nothing more is counted, and the writer writes what was
    // before it ends (bounded: a database that hangs does not hold the shutdown).
    finish.cancel();
    if tokio::time::timeout(Duration::from_secs(5), writer).await.is_err() {
        tracing::warn!(target: "api::gateway", "the request log's last rows were not written in time");
    }
    served?;
    secured
}

/// ACME's HTTP-01 challenge for a certificate being ordered (any replica answers it).
async fn acme_challenge(
    State(state): State<GatewayState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match crate::certificates::challenge_answer(&state.db, &token).await {
        Ok(Some(answer)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(err) => {
            tracing::warn!(target: "api::gateway", %err, "ACME challenge lookup failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Plain HTTP to a host served over HTTPS goes there (308 keeps the method and body).
async fn to_https(
    State(state): State<GatewayState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(bare_host)
        .unwrap_or_default();
    match &state.certificates {
        Some(store)
            if state.config.gateway_redirect_https && !host.is_empty() && store.has(host) =>
        {
            let port = state.config.gateway_public_https_port;
            let authority = if port == 443 { host.to_owned() } else { format!("{host}:{port}") };
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            match HeaderValue::from_str(&format!("https://{authority}{path}")) {
                Ok(location) => {
                    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response()
                }
                Err(_) => next.run(request).await,
            }
        }
        _ => next.run(request).await,
    }
}

/// The site label of a `Host` under the sites domain (`my-site.decentraspace.site[:port]`).
fn site_label<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    let host = bare_host(host);
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

/// Whether `host` has the shape of a domain name: at most 253 bytes, labels of at most 63 of
/// lower-case letters, digits, hyphens, underscores, or UTF-8 (an ENS name in its own script).
fn dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'-'
                        || b == b'_'
                        || b >= 0x80
                })
        })
}

/// A `Host` without its port and trailing dot.
fn bare_host(host: &str) -> &str {
    let host = host
        .rsplit_once(':')
        .map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    host.strip_suffix('.').unwrap_or(host)
}

/// The path's segments, decoded; `None` for a path that climbs (`..`) or is not UTF-8.
fn segments(path: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for raw in path.split('/') {
        let segment = percent_encoding::percent_decode_str(raw).decode_utf8().ok()?;
        match segment.as_ref() {
            "" | "." => {}
            ".." => return None,
            s if s.contains('/') || s.contains('\0') => return None,
            s => out.push(s.to_owned()),
        }
    }
    Some(out)
}

/// The files that may answer a path, in order.
fn candidates(path: &str) -> Option<Vec<String>> {
    let parts = segments(path)?;
    if parts.is_empty() {
        return Some(vec!["index.html".into()]);
    }
    let joined = parts.join("/");
    Some(if path.ends_with('/') {
        vec![format!("{joined}/index.html")]
    } else {
        vec![joined.clone(), format!("{joined}/index.html")]
    })
}

async fn serve(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (label, preview) = match site_label(&host, &gateway.state.config.sites_domain) {
        // `<preview>--<site>`: site names never hold `--`.
        Some(label) => match label.split_once("--") {
            Some((preview, site)) => (site.to_owned(), Some(preview.to_owned())),
            None => (label.to_owned(), None),
        },
        // A custom domain linked on-chain to a site's hosting service.
        // Only what could be a DNS name is looked up (and remembered).
        None if !dns_name(bare_host(&host)) => {
            return page(
                StatusCode::NOT_FOUND,
                "No site here",
                "This address is not a DecentraSpace site.",
            );
        }
        None => match gateway.state.sites.linked(&gateway.state, bare_host(&host)).await {
            Ok(Some(name)) => (name, None),
            Ok(None) => {
                return page(
                    StatusCode::NOT_FOUND,
                    "No site here",
                    "This address is not a DecentraSpace site.",
                );
            }
            Err(err) => {
                tracing::warn!(target: "api::gateway", %err, "domain lookup failed");
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again",
                    "The site could not be looked up.",
                );
            }
        },
    };
    let site = match gateway.state.sites.site(&gateway.state, &label, preview.as_deref()).await {
        Ok(Some(site))
            if preview.is_some() && (site.kind != "static" || site.deployment.is_none()) =>
        {
            return page(
                StatusCode::NOT_FOUND,
                "Preview not found",
                "This site has no such preview.",
            );
        }
        Ok(Some(site)) => site,
        Ok(None) => {
            return page(StatusCode::NOT_FOUND, "Site not found", "No site has this name.");
        }
        Err(err) => {
            tracing::warn!(target: "api::gateway", %err, "site lookup failed");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The site could not be looked up.",
            );
        }
    };
    // Behind trusted proxies, the client they report; a client's own header counts for nothing.
    let client = crate::http::client::client_ip(
        peer.ip(),
        request.headers(),
        &gateway.state.config.trusted_proxies,
    );
    let visitor = visitor(&gateway.salt, request.headers(), client);
    let response = if let Some(closed) = closed(&site) {
        closed
    } else if site.kind == "dynamic" {
        match &site.upstream {
            Some(upstream) => {
                super::proxy::forward(&gateway.upstream, upstream, &host, peer, request).await
            }
            None => page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Site starting",
                "This site's server is not running right now. Try again in a moment.",
            ),
        }
    } else {
        let uri = request.uri();
        respond(&gateway, &site, request.method(), uri.path(), uri.query(), request.headers()).await
    };
    if preview.is_some() {
        // A preview is for its pull request's reviewers, not for search engines nor for the
        // site's analytics.
        let mut response = response;
        response.headers_mut().insert("x-robots-tag", HeaderValue::from_static("noindex"));
        return response;
    }
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let hit = Hit {
        site_id: site.id,
        at: Utc::now(),
        status: response.status().as_u16(),
        bytes,
        latency_us: started.elapsed().as_micros() as u64,
        visitor,
    };
    gateway.traffic.record(hit);
    response
}

/// The page of a site that is not served (expired, cancelled, paused, suspended), if it is not.
fn closed(site: &Served) -> Option<Response> {
    if site.expired || site.state == "cancelled" {
        return Some(page(
            StatusCode::GONE,
            "Site expired",
            "This site is no longer hosted. Its owner can upgrade to bring it back.",
        ));
    }
    match site.state.as_str() {
        "active" => None,
        "paused" => Some(page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Site paused",
            "Its owner has paused this site.",
        )),
        _ => {
            Some(page(StatusCode::SERVICE_UNAVAILABLE, "Site suspended", "This site is suspended."))
        }
    }
}

async fn respond(
    gateway: &Gateway,
    site: &Served,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let Some(deployment) = site.deployment else {
        return page(
            StatusCode::NOT_FOUND,
            "Nothing deployed yet",
            "This site has no live deployment yet.",
        );
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Sites answer GET and HEAD.",
        );
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(parts) = segments(path) else {
        return page(StatusCode::BAD_REQUEST, "Bad path", "This path cannot name a file.");
    };
    let routing = match routing_of(gateway, deployment).await {
        Ok(routing) => routing,
        Err(err) => {
            tracing::warn!(target: "api::gateway", %err, "routing lookup failed");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The site could not be read.",
            );
        }
    };
    // The routing files configure the site; they are not pages of it.
    if matches!(parts.as_slice(), [only] if only == "_redirects" || only == "_headers") {
        return page(StatusCode::NOT_FOUND, "Page not found", "This site has no such page.");
    }
    let asked = Asked { method, path, query, headers };
    let mut response = match routed(gateway, deployment, &routing, &parts, &asked).await {
        Some(response) => response,
        None => serve_path(gateway, site, deployment, method, path, headers).await,
    };
    // The site's own headers for the asked path (`_headers`), over the gateway's defaults.
    for (name, value) in routing.headers_for(&parts) {
        if let (Ok(name), Ok(value)) =
            (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The request, as routing needs it.
struct Asked<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
}

/// What the deployment's `_redirects` answers for the path, if a rule applies: the first rule
/// that matches, unless it is not forced and a file exists at the path (shadowing).
async fn routed(
    gateway: &Gateway,
    deployment: i64,
    routing: &Routing,
    parts: &[String],
    asked: &Asked<'_>,
) -> Option<Response> {
    let (path, query) = (asked.path, asked.query);
    let mut exists = None;
    for rule in &routing.redirects {
        let Some(captures) = rule.from.matches(parts) else { continue };
        if !rule.force {
            let found = match exists {
                Some(found) => found,
                None => {
                    let wanted = candidates(path).unwrap_or_default();
                    let found = gateway
                        .state
                        .sites
                        .files(&gateway.state, deployment, &wanted)
                        .await
                        .map(|files| !files.is_empty())
                        .unwrap_or(false);
                    exists = Some(found);
                    found
                }
            };
            if found {
                return None;
            }
        }
        let Some(target) = rule.safe_target(&captures) else { continue };
        let status = StatusCode::from_u16(rule.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        if rule.redirects() {
            // The asked query goes along, unless the target names its own.
            let location = match query {
                Some(q) if !target.contains('?') && !q.is_empty() => format!("{target}?{q}"),
                _ => target,
            };
            let Ok(value) = HeaderValue::from_str(&location) else { continue };
            let mut response = page(status, "Moved", "This page has moved.");
            response.headers_mut().insert(header::LOCATION, value);
            return Some(response);
        }
        // A rewrite serves the target's file (or its folder's index) with the rule's status.
        let target_path = target.split(['?', '#']).next().unwrap_or_default();
        let wanted = candidates(target_path).unwrap_or_default();
        let files = match gateway.state.sites.files(&gateway.state, deployment, &wanted).await {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(target: "api::gateway", %err, "file lookup failed");
                return Some(page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again",
                    "The site could not be read.",
                ));
            }
        };
        let Some(file) = wanted.iter().find_map(|w| files.iter().find(|f| &f.path == w)) else {
            return Some(page(
                StatusCode::NOT_FOUND,
                "Page not found",
                "This site has no such page.",
            ));
        };
        return Some(file_response(gateway, file, status, asked.method, asked.headers).await);
    }
    None
}

/// The deployment's routing, parsed once and kept (a deployment's never changes).
async fn routing_of(gateway: &Gateway, deployment: i64) -> sqlx::Result<Arc<Routing>> {
    if let Some(known) = gateway.routing.lock().expect("routing cache").get(&deployment) {
        return Ok(known.clone());
    }
    let stored = sqlx::query_scalar!("select routing from deployments where id = $1", deployment)
        .fetch_optional(&gateway.state.db)
        .await?
        .flatten();
    let routing = Arc::new(
        stored
            .and_then(|value| match serde_json::from_value::<Routing>(value) {
                Ok(routing) => Some(routing),
                Err(err) => {
                    tracing::warn!(target: "api::gateway", deployment, %err, "unreadable routing");
                    None
                }
            })
            .unwrap_or_default(),
    );
    let mut cache = gateway.routing.lock().expect("routing cache");
    if cache.len() >= MAX_ROUTING_CACHED {
        cache.clear();
    }
    cache.insert(deployment, routing.clone());
    Ok(routing)
}

/// Serves the file at `path`, else its 404 page or the SPA fallback.
async fn serve_path(
    gateway: &Gateway,
    site: &Served,
    deployment: i64,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let state = &gateway.state;
    let Some(found) = candidates(path) else {
        return page(StatusCode::BAD_REQUEST, "Bad path", "This path cannot name a file.");
    };
    // What answers, in order: the file, the site's own 404 page, and for a page path (no
    // extension) of a single-page application, its index.html.
    let mut wanted: Vec<(String, StatusCode)> =
        found.into_iter().map(|p| (p, StatusCode::OK)).collect();
    wanted.push(("404.html".into(), StatusCode::NOT_FOUND));
    let page_path = !path.rsplit('/').next().unwrap_or_default().contains('.');
    if site.spa_fallback && page_path {
        wanted.insert(wanted.len() - 1, ("index.html".into(), StatusCode::OK));
    }
    let paths: Vec<String> = wanted.iter().map(|(p, _)| p.clone()).collect();
    let files = match state.sites.files(state, deployment, &paths).await {
        Ok(files) => files,
        Err(err) => {
            tracing::warn!(target: "api::gateway", %err, "file lookup failed");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The site could not be read.",
            );
        }
    };
    let Some((file, status)) = wanted
        .iter()
        .find_map(|(w, status)| files.iter().find(|f| &f.path == w).map(|f| (f, *status)))
    else {
        return page(StatusCode::NOT_FOUND, "Page not found", "This site has no such page.");
    };
    file_response(gateway, file, status, method, headers).await
}

async fn file_response(
    gateway: &Gateway,
    file: &File,
    status: StatusCode,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    // A compressed copy when the client takes one (a range is of the file itself).
    let copy = if headers.contains_key(header::RANGE) {
        None
    } else {
        ranges::encoding(headers, file.br_cid.is_some(), file.gz_cid.is_some())
    };
    let (cid, size_bytes) = match copy {
        Some(Encoding::Brotli) => (file.br_cid.as_deref(), file.br_size),
        Some(Encoding::Gzip) => (file.gz_cid.as_deref(), file.gz_size),
        None => (None, None),
    };
    let (cid, size_bytes) = (cid.unwrap_or(&file.cid), size_bytes.unwrap_or(file.size_bytes));
    let etag = format!("\"{cid}\"");
    let mut response_headers = HeaderMap::new();
    if file.br_cid.is_some() || file.gz_cid.is_some() {
        response_headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some(copy) = copy {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(copy.token()));
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&file.content_type) {
        response_headers.insert(header::CONTENT_TYPE, v);
    }
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(ranges::cache_control(&file.path, &file.content_type)),
    );
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&format!("/ipfs/{cid}")) {
        response_headers.insert("x-ipfs-path", v);
    }
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches && status == StatusCode::OK {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    let size = size_bytes.max(0) as u64;
    // A range of the file itself (not of a 404 page or a fallback).
    let wanted =
        if status == StatusCode::OK { ranges::wanted(headers, &etag, size) } else { Wanted::Whole };
    let (status, range) = match wanted {
        Wanted::Whole => (status, None),
        Wanted::Part { start, end } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                response_headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, Some((start, end - start + 1)))
        }
        Wanted::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response_headers.insert(header::CONTENT_RANGE, v);
            }
            return (StatusCode::RANGE_NOT_SATISFIABLE, response_headers).into_response();
        }
    };
    let length = range.map_or(size, |(_, length)| length);
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if method == Method::HEAD {
        return (status, response_headers).into_response();
    }
    // The bytes of the range of `whole`.
    let part = |whole: Bytes| match range {
        Some((offset, length)) => {
            let start = (offset as usize).min(whole.len());
            whole.slice(start..(start + length as usize).min(whole.len()))
        }
        None => whole,
    };
    if let Some(bytes) = gateway.files.get(cid) {
        return (status, response_headers, part(bytes)).into_response();
    }
    let Some(ipfs) = &gateway.state.ipfs else {
        return page(StatusCode::SERVICE_UNAVAILABLE, "Try again", "No IPFS node is configured.");
    };
    // Small files are read whole and kept; larger ones stream through (a range of them only).
    if (size_bytes as usize) <= MAX_CACHED_FILE {
        return match ipfs.cat(cid).await {
            Ok(bytes) => {
                gateway.files.insert(cid, bytes.clone());
                (status, response_headers, part(bytes)).into_response()
            }
            Err(err) => {
                tracing::warn!(target: "api::gateway", %cid, %err, "cannot read from IPFS");
                page(StatusCode::BAD_GATEWAY, "Try again", "The site's files could not be read.")
            }
        };
    }
    if let Some(stream) = gateway.disk.read(cid, range).await {
        return (status, response_headers, Body::from_stream(stream)).into_response();
    }
    // This request streams from the node; a copy goes to disk for the next ones.
    let source = {
        let (ipfs, cid) = (ipfs.clone(), cid.to_owned());
        async move { ipfs.cat_stream(&cid).await.map(Box::pin).map_err(|e| e.to_string()) }
    };
    gateway.disk.fill(cid, size, source);
    match ipfs.cat_stream_range(cid, range).await {
        Ok(stream) => (status, response_headers, Body::from_stream(stream)).into_response(),
        Err(err) => {
            tracing::warn!(target: "api::gateway", %cid, %err, "cannot read from IPFS");
            page(StatusCode::BAD_GATEWAY, "Try again", "The site's files could not be read.")
        }
    }
}

/// A small HTML page for what the gateway itself answers.
pub(super) fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p><p><small>{} · DecentraSpace</small></p></body></html>\n",
        status.as_u16()
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        body,
    )
        .into_response()
}

/// The visitor's daily hash: the client's address (as trusted proxies report it, else the peer)
/// and user agent, salted and dated.
fn visitor(salt: &[u8; 32], headers: &HeaderMap, ip: IpAddr) -> i64 {
    let agent = headers.get(header::USER_AGENT).map(HeaderValue::as_bytes).unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(Utc::now().date_naive().to_string())
        .chain_update(ip.to_string())
        .chain_update([0])
        .chain_update(agent)
        .finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_told_by_their_host() {
        let domain = "sites.localhost";
        assert_eq!(site_label("blog.sites.localhost", domain), Some("blog"));
        assert_eq!(site_label("blog.sites.localhost:8090", domain), Some("blog"));
        assert_eq!(site_label("blog.sites.localhost.", domain), Some("blog"));
        assert_eq!(site_label("sites.localhost", domain), None);
        assert_eq!(site_label("a.b.sites.localhost", domain), None);
        assert_eq!(site_label("blogsites.localhost", domain), None);
        assert_eq!(site_label("blog.example.com", domain), None);
    }

    #[test]
    fn only_dns_shaped_hosts_are_looked_up() {
        assert!(dns_name("shop.example.com"));
        assert!(dns_name("xn--caf-dma.example"));
        assert!(!dns_name(""));
        assert!(!dns_name("a..b"));
        assert!(!dns_name(&"a".repeat(64)));
        assert!(!dns_name(&["a"; 130].join(".")));
        assert!(!dns_name("shop.example.com/x"));
        assert!(dns_name("café.eth"));
        assert!(!dns_name("shop example.com"));
    }

    #[test]
    fn paths_resolve_to_files_and_never_climb() {
        assert_eq!(candidates("/").expect("root"), ["index.html"]);
        assert_eq!(candidates("/docs/").expect("dir"), ["docs/index.html"]);
        assert_eq!(candidates("/a/b.css").expect("file"), ["a/b.css", "a/b.css/index.html"]);
        assert_eq!(
            candidates("/caf%C3%A9.html").expect("utf-8"),
            ["café.html", "café.html/index.html"]
        );
        assert_eq!(candidates("/./a//b").expect("dots"), ["a/b", "a/b/index.html"]);
        assert!(candidates("/../etc/passwd").is_none());
        assert!(candidates("/a/%2e%2e/b").is_none());
        assert!(candidates("/a%2fb").is_none());
        assert!(candidates("/%ff").is_none());
    }
}
