//! The DecentraSpace REST API: the door to the indexed chain state and to the platform's
//! off-chain work.
//!
//! Invariants it keeps:
//! - reads (balances, history, services, domains) come from the tables the indexer fills, never
//!   from the RPC on the request path;
//! - every non-public route needs a valid access token, and admin routes the on-chain admin role
//!   as indexed;
//! - every error is RFC 9457 problem+json with a stable `type`; internal causes are logged, never
//!   sent;
//! - every documented path answers with and without a trailing slash, and the OpenAPI document is
//!   built from the same registrations as the router, so it cannot miss a route.

pub mod arweave;
pub mod auth;
mod cache;
pub mod charges;
mod config;
pub mod domains;
pub mod error;
pub mod github;
pub mod hosting;
pub mod ipfs;
mod leader;
mod limits;
pub mod metering;
pub mod notices;
mod openapi;
pub mod payments;
pub mod relay;
pub mod routes;
mod state;
pub mod storage;
pub mod stream;

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::Request,
    http::{HeaderName, HeaderValue, StatusCode},
    middleware,
    response::IntoResponse,
};
use tower::{Layer, util::MapRequestLayer};
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use config::Config;

/// The cached hot reads, all invalidated together when the indexer commits.
#[derive(Debug, Default)]
pub struct ReadCaches {
    /// `/billing/balance` by account.
    pub balances: cache::ReadCache<alloy::primitives::Address, routes::billing::Balance>,
    /// `/v1/accounts/{address}` by account.
    pub accounts: cache::ReadCache<alloy::primitives::Address, routes::public::AccountView>,
}

impl ReadCaches {
    /// Forgets every cached read.
    pub fn invalidate(&self) {
        self.balances.invalidate();
        self.accounts.invalidate();
    }

    /// Turns caching on or off (off while indexer notices are not received).
    pub fn set_live(&self, live: bool) {
        self.balances.set_live(live);
        self.accounts.set_live(live);
    }
}
pub use limits::RateLimits;
pub use openapi::ApiDoc;
pub use state::AppState;

use crate::error::{ApiError, Problem, problem_response};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The router with every route and the OpenAPI document built from the same registrations.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(auth::router())
        .merge(routes::tier::router())
        .merge(routes::billing::router())
        .merge(routes::public::router())
        .merge(relay::router())
        .merge(routes::blockchain::router())
        .merge(routes::manage::router())
        .merge(routes::system::router())
        .merge(payments::router())
        .merge(routes::services::router())
        .merge(routes::credit_analytics::router())
        .merge(metering::router())
        .merge(storage::folders::router())
        .merge(storage::manage::router())
        .merge(storage::files::router())
        .merge(domains::router())
        .merge(notices::router())
        .merge(hosting::router())
        .merge(github::router())
        .split_for_parts()
}

/// The streaming routes (uploads, shared downloads), which sit outside the body limit and
/// request timeout of [`routes`] (tier limits bound uploads instead), and their OpenAPI document.
pub fn streaming_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    storage::streaming_router()
        .merge(hosting::streaming_router())
        .merge(github::webhook_router())
        .split_for_parts()
}

/// The application as served: [`app`] behind the trailing-slash normalisation.
pub type App = tower::util::MapRequest<Router, fn(Request) -> Request>;

/// The whole application: routes, the OpenAPI document and UI, and the HTTP layers.
pub fn app(state: AppState) -> App {
    let (router, mut openapi) = routes();
    let (streaming, streaming_doc) = streaming_routes();
    openapi.merge(streaming_doc);
    let config = state.config.clone();
    let router = router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, config.request_timeout()))
        .merge(streaming)
        .layer(middleware::from_fn_with_state(state.clone(), limits::per_ip))
        .layer(middleware::from_fn(routes::health::track))
        .layer(middleware::from_fn(error::as_problem))
        .layer(CompressionLayer::new())
        .layer(cors(&config.cors_origins))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state);
    MapRequestLayer::new(trim_trailing_slash as fn(Request) -> Request).layer(router)
}

/// Serves `/auth/login/` (as the product spec writes paths) and `/auth/login` alike, by routing on
/// the path without its trailing slash. The docs UI keeps its own (it redirects `/docs` there).
fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') && !path.starts_with("/docs") {
        let trimmed = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        let rewritten = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rewritten.parse() {
            *request.uri_mut() = uri;
        }
    }
    request
}

async fn not_found(request: Request) -> axum::response::Response {
    problem_response(
        StatusCode::NOT_FOUND,
        Problem {
            kind: format!("{}not-found", error::PROBLEM_BASE),
            title: "Not found".into(),
            status: 404,
            detail: Some(format!(
                "no route {} {}; see /docs",
                request.method(),
                request.uri().path()
            )),
        },
    )
}

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(tower_http::cors::Any)
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .max_age(Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        return layer.allow_origin(tower_http::cors::Any);
    }
    let allowed: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    layer.allow_origin(AllowOrigin::list(allowed))
}

/// Serves the API on `listener` until `shutdown` resolves, with the background tasks it needs
/// (live notices, housekeeping).
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    gateway: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let notices = tokio::spawn(stream::run(
        state.db.clone(),
        state.chain_id(),
        state.notices.clone(),
        state.reads.clone(),
    ));
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let tracker = tokio::spawn(relay::tracker::run(state.clone()));
    let payments = tokio::spawn(payments::worker::run(state.clone()));
    let depletion = tokio::spawn(metering::depletion::run(state.clone()));
    let deploys = tokio::spawn(hosting::run_deploy_jobs(state.clone()));
    let directories = tokio::spawn(storage::directories::run(state.clone()));
    let recovery = (state.config.domain_recovery_secs > 0).then(|| {
        let every = Duration::from_secs(state.config.domain_recovery_secs);
        tokio::spawn(domains::recovery::run(state.clone(), every))
    });
    let reminders = (state.config.domain_reminder_secs > 0).then(|| {
        let every = Duration::from_secs(state.config.domain_reminder_secs);
        tokio::spawn(domains::reminders::run(state.clone(), every))
    });
    let reverify = (state.config.domain_recheck_secs > 0).then(|| {
        let every = Duration::from_secs(state.config.domain_recheck_secs);
        tokio::spawn(domains::reverify::run(state.clone(), every))
    });
    let reconcile = (state.config.dynamic_reconcile_secs > 0).then(|| {
        let every = Duration::from_secs(state.config.dynamic_reconcile_secs);
        tokio::spawn(hosting::runtime::reconcile::run(state.clone(), every))
    });
    let meter = metering::Meter::new(&state)
        .map(|meter| tokio::spawn(meter.run(state.config.meter_interval())));
    // The gateway and the prober that checks sites through it.
    let stopping = tokio_util::sync::CancellationToken::new();
    let (gateway, uptime) = match gateway {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let interval = state.config.uptime_interval_secs;
            let uptime = (interval > 0).then(|| {
                tokio::spawn(hosting::uptime::run(
                    state.clone(),
                    addr,
                    Duration::from_secs(interval),
                ))
            });
            let served = hosting::gateway::serve_gateway(
                state.clone(),
                listener,
                stopping.clone().cancelled_owned(),
            );
            tracing::info!(%addr, "gateway listening");
            (Some(tokio::spawn(served)), uptime)
        }
        None => (None, None),
    };
    let app = app(state);
    let served = axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serve");
    stopping.cancel();
    if let Some(gateway) = gateway {
        gateway.await.ok();
    }
    for task in [notices, housekeeping, tracker, payments, depletion, deploys, directories] {
        task.abort();
    }
    for task in [meter, uptime, reconcile, reverify, reminders, recovery].into_iter().flatten() {
        task.abort();
    }
    served
}

/// Forgets expired nonces and refresh tokens and idle rate-limit keys, once a minute.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        state.limits.prune();
        let pruned =
            sqlx::query!("delete from auth_nonces where expires_at < now() - interval '1 day'")
                .execute(&state.db)
                .await
                .and(
                    sqlx::query!(
                        "delete from refresh_tokens where expires_at < now() - interval '1 day'"
                    )
                    .execute(&state.db)
                    .await,
                );
        if let Err(err) = pruned {
            tracing::warn!(target: "api::housekeeping", %err, "pruning failed");
        }
    }
}
