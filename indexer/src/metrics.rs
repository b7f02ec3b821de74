//! The indexer's operations listener (`METRICS_ADDR`, never a public address): Prometheus
//! metrics (histograms with explicit buckets, which add up across replicas, unlike summaries),
//! `/health` (the process answers) and `/ready` (a standby waiting to take over, or the writer
//! keeping up with the chain), with whether this process leads.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use anyhow::Context;
use axum::{Json, Router, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// Seconds buckets of the indexer's timings.
const SECONDS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Block buckets of reorg depths.
const DEPTHS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
/// How long the writer may go without reading the chain's head and still be ready.
const STALE_AFTER_SECS: i64 = 30;

/// Where this process stands, for `/ready`.
static LEADING: AtomicBool = AtomicBool::new(false);
static HEAD: AtomicU64 = AtomicU64::new(0);
static INDEXED: AtomicU64 = AtomicU64::new(0);
/// When the writer last read the chain's head (Unix seconds; 0: never).
static LAST_HEAD_AT: AtomicI64 = AtomicI64::new(0);

/// Installs the recorder and serves `/metrics`, `/health` and `/ready` on `addr`; the writer is
/// ready while it is at most `max_lag` blocks behind the head.
pub async fn serve(addr: SocketAddr, max_lag: u64) -> anyhow::Result<()> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&SECONDS)?
        .set_buckets_for_metric(Matcher::Full("indexer_reorg_depth".into()), &DEPTHS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("install the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on METRICS_ADDR {addr}"))?;
    let app = Router::new()
        .route("/metrics", get(move || render(handle.clone())))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(move || ready(max_lag)));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(target: "indexer::ops", %err, "the operations listener stopped");
        }
    });
    Ok(())
}

async fn render(handle: PrometheusHandle) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

/// 200 for a standby (it takes over when the writer goes) and for a writer that read the head in
/// the last 30 s and is at most `max_lag` blocks behind it; 503 otherwise, saying why.
async fn ready(max_lag: u64) -> impl IntoResponse {
    let leading = LEADING.load(Ordering::Relaxed);
    let (head, indexed) = (HEAD.load(Ordering::Relaxed), INDEXED.load(Ordering::Relaxed));
    let lag = head.saturating_sub(indexed);
    let last = LAST_HEAD_AT.load(Ordering::Relaxed);
    let since = (last > 0).then(|| chrono::Utc::now().timestamp() - last);
    let problem = if !leading {
        None
    } else if since.is_none_or(|s| s > STALE_AFTER_SECS) {
        Some("the chain's head was not read in the last 30 s")
    } else if lag > max_lag {
        Some("indexing is too far behind the chain")
    } else {
        None
    };
    let status = if problem.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({
        "role": if leading { "writer" } else { "standby" },
        "head_block": head,
        "indexed_block": indexed,
        "lag_blocks": lag,
        "max_lag_blocks": max_lag,
        "head_read_secs_ago": since,
        "problem": problem,
    });
    (status, Json(body))
}

/// Whether this process writes the chain (1) or stands by (0).
pub(crate) fn leading(leads: bool) {
    LEADING.store(leads, Ordering::Relaxed);
    metrics::gauge!("indexer_leader").set(if leads { 1.0 } else { 0.0 });
}

pub(crate) fn heads(head: u64, indexed: u64) {
    HEAD.store(head, Ordering::Relaxed);
    INDEXED.store(indexed, Ordering::Relaxed);
    LAST_HEAD_AT.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    metrics::gauge!("indexer_head_block").set(head as f64);
    metrics::gauge!("indexer_indexed_block").set(indexed as f64);
    metrics::gauge!("indexer_lag_blocks").set(head.saturating_sub(indexed) as f64);
}

pub(crate) fn batch(events: usize, took: Duration) {
    metrics::counter!("indexer_events_total").increment(events as u64);
    metrics::histogram!("indexer_batch_seconds").record(took.as_secs_f64());
}

pub(crate) fn reorg(depth: u64) {
    metrics::counter!("indexer_reorgs_total").increment(1);
    metrics::histogram!("indexer_reorg_depth").record(depth as f64);
}

pub(crate) fn rpc_error() {
    metrics::counter!("indexer_rpc_errors_total").increment(1);
}
