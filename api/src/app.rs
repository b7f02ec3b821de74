//! The application: every feature's routes merged behind the shared HTTP layers, and every
//! feature's jobs supervised beside the server. The one place that knows every feature.

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
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    accounts, billing, certificates, databases, domains, gateway, github, hosting,
    http::{
        self,
        error::{ApiError, Problem, problem_response},
        openapi::{self, ApiDoc},
    },
    jobs, notices, public, relay, services,
    state::AppState,
    storage, system,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The router with every route and the OpenAPI document built from the same registrations.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(system::router())
        .merge(accounts::router())
        .merge(billing::router())
        .merge(services::router())
        .merge(public::router())
        .merge(relay::router())
        .merge(storage::router())
        .merge(hosting::router())
        .merge(github::router())
        .merge(domains::router())
        .merge(databases::router())
        .merge(certificates::router())
        .merge(notices::router())
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

/// Every route, streaming or not, and the whole OpenAPI document as `/openapi.json` serves it.
fn all_routes() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = routes();
    let (streaming, streaming_doc) = streaming_routes();
    openapi.merge(streaming_doc);
    openapi::complete(&mut openapi);
    (router, streaming, openapi)
}

/// The OpenAPI document `/openapi.json` serves.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    all_routes().2
}

/// The whole application: routes, the OpenAPI document and UI, and the HTTP layers.
pub fn app(state: AppState) -> App {
    let (router, streaming, openapi) = all_routes();
    let config = state.platform.config.clone();
    let router = router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(not_found)
        .layer(middleware::from_fn(http::input::refuse_nul_in_json))
        .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            config.request_timeout(),
        ))
        .merge(streaming);
    layered(router, state)
}

/// `router` behind the layers every route of the API sits behind: a panic answered as a 500
/// problem (and counted), a NUL in the path or query refused, the per-IP budget, metrics, every
/// error as problem+json, compression, CORS, request ids and traces, and the trailing-slash
/// normalisation.
pub fn layered(router: Router<AppState>, state: AppState) -> App {
    let config = state.platform.config.clone();
    let router = router
        // Innermost, so a panic becomes a response that the layers outside it count and trace.
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(middleware::from_fn(http::input::refuse_nul_in_uri))
        .layer(middleware::from_fn_with_state(state.limits.clone(), http::limits::per_ip))
        .layer(middleware::from_fn(system::health::track))
        .layer(middleware::from_fn(http::error::as_problem))
        .layer(CompressionLayer::new())
        .layer(cors(&config.cors_origins))
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
            kind: format!("{}not-found", http::error::PROBLEM_BASE),
            title: "Not found".into(),
            status: 404,
            detail: Some(format!(
                "no route {} {}; see /docs",
                request.method(),
                request.uri().path()
            )),
            shortfall: None,
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

/// Every background job of the API, as configured: what [`serve`] supervises.
pub fn background_jobs(
    state: &AppState,
    gateway: Option<SocketAddr>,
) -> anyhow::Result<Vec<jobs::Job>> {
    let mut jobs = vec![housekeeping(state), state.platform.wakes.listener(&state.platform.db)];
    jobs.extend(chain_jobs(state));
    jobs.extend(public::jobs(&state.public));
    jobs.extend(accounts::jobs(&state.accounts));
    jobs.extend(billing::jobs(&state.billing));
    jobs.extend(relay::jobs(&state.relay));
    jobs.extend(storage::jobs(&state.storage));
    jobs.extend(hosting::jobs(&state.hosting));
    jobs.extend(domains::jobs(&state.domains));
    jobs.extend(databases::jobs(&state.databases));
    jobs.extend(certificates::jobs(&state.certificates));
    if let Some(gateway) = gateway {
        jobs.extend(gateway::jobs(&state.gateway, gateway)?);
    }
    Ok(jobs)
}

/// The jobs that send the platform's transactions: a sender per configured key and the outbox's
/// listener.
pub fn chain_jobs(state: &AppState) -> Vec<jobs::Job> {
    let mut jobs = vec![state.platform.outbox.listener()];
    jobs.extend(state.side_outboxes.iter().map(|outbox| outbox.listener()));
    jobs.extend(crate::chain::outbox::senders(state.senders.clone()));
    jobs
}

/// Serves the API on `listener` (and the site gateway on `gateway`) until `shutdown` resolves,
/// with every background job supervised beside it.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    gateway: Option<tokio::net::TcpListener>,
    gateway_tls: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let gateway_addr = gateway.as_ref().map(|g| g.local_addr()).transpose()?;
    let stopping = tokio_util::sync::CancellationToken::new();
    // Should this future be dropped before it ends (its task aborted), the jobs stop with it, as
    // they would with the process, instead of running on unserved.
    let _jobs_end_with_serve = stopping.clone().drop_guard();
    let supervisor =
        jobs::Supervisor::new(background_jobs(&state, gateway_addr)?, state.jobs.clone())
            .start(stopping.clone());
    if gateway.is_none() && gateway_tls.is_some() {
        anyhow::bail!("GATEWAY_TLS_LISTEN needs GATEWAY_LISTEN (HTTP-01 challenges and redirects)");
    }
    let gateway = gateway.map(|listener| {
        tracing::info!(addr = ?gateway_addr, tls = ?gateway_tls.as_ref().map(|l| l.local_addr().ok()), "gateway listening");
        tokio::spawn(gateway::serve_gateway(
            state.gateway.clone(),
            listener,
            gateway_tls,
            stopping.clone(),
        ))
    });
    let hosting_state = state.hosting.clone();
    let app = app(state);
    let served = axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serve");
    // Draining: no request is in flight any more. The jobs stop; what they held is handed back
    // (every chain write is already durable in the outbox, and its key's lock passes to another
    // replica with this one's connection).
    stopping.cancel();
    if let Some(gateway) = gateway {
        gateway.await.ok();
    }
    supervisor.await.ok();
    let handed = hosting::hand_back(&hosting_state).await;
    if handed > 0 {
        tracing::info!(handed, "handed back the deployments in progress");
    }
    served
}

/// Forgets idle rate-limit keys, once a minute.
fn housekeeping(state: &AppState) -> jobs::Job {
    let limits = state.limits.clone();
    jobs::Job::periodic(
        "rate-limit-pruning",
        || jobs::Schedule::every(Duration::from_secs(60)).first_after(Duration::from_secs(60)),
        move || {
            let limits = limits.clone();
            async move {
                limits.prune().await;
                Ok(())
            }
        },
    )
    .optional()
}
