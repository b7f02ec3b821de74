//! Liveness, readiness and Prometheus metrics.

use std::{sync::OnceLock, time::Instant};

use alloy::providers::Provider;
use axum::{
    Json,
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use crate::system::SystemState;

/// The liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Whether the database answers.
    pub database: bool,
    /// The read replica (`DATABASE_READ_URL`): `current` (public reads go there), `behind` or
    /// `down` (they go to the primary meanwhile; readiness does not depend on it); null without
    /// one.
    pub read_replica: Option<crate::reads::ReplicaState>,
    /// The chain's head block, when the RPC answers.
    pub chain_head: Option<u64>,
    /// The indexer's checkpoint.
    pub indexed_block: Option<i64>,
    /// Blocks the indexer is behind the head.
    pub indexer_lag: Option<u64>,
    /// The largest lag still ready.
    pub max_lag: u64,
    /// Required background jobs that are down (failed, waiting to start again); empty when all
    /// run.
    pub jobs_down: Vec<String>,
}

/// Readiness: database, RPC and indexer lag within bounds, and every required background job
/// running (503 otherwise, with the same body).
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<SystemState>) -> (StatusCode, Json<Readiness>) {
    let indexed = sqlx::query_scalar!(
        "select block_number from indexer_checkpoints where chain_id = $1",
        state.chain_id() as i64
    )
    .fetch_optional(&state.db)
    .await;
    let database = indexed.is_ok();
    let indexed_block = indexed.ok().flatten();
    let chain_head = state.chain.get_block_number().await.ok();
    let indexer_lag = match (chain_head, indexed_block) {
        (Some(head), Some(indexed)) => Some(head.saturating_sub(indexed as u64)),
        _ => None,
    };
    let max_lag = state.config.ready_max_lag_blocks;
    let jobs_down = state.jobs.down();
    let ok = database
        && chain_head.is_some()
        && indexer_lag.is_some_and(|lag| lag <= max_lag)
        && jobs_down.is_empty();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if ok { "ready" } else { "not_ready" },
        database,
        read_replica: state.reads.replica_state().await,
        chain_head,
        indexed_block,
        indexer_lag,
        max_lag,
        jobs_down,
    };
    (status, Json(body))
}

/// Seconds buckets of every timing histogram (request durations, job passes).
const SECONDS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process-wide Prometheus recorder (installed once, shared by every router in the process).
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Histograms with buckets (not summaries): they add up across replicas.
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets(&SECONDS) {
            Ok(bucketed) => bucketed,
            Err(err) => {
                tracing::error!(%err, "histogram buckets refused; timings render as summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding process): then ours only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], recorder().render())
}

/// Middleware: counts requests and times them by route and status.
pub async fn track(request: Request, next: Next) -> Response {
    recorder();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
