//! The indexer's operations listener (`METRICS_ADDR`, never a public address): Prometheus
//! metrics (histograms with explicit buckets, which add up across replicas, unlike summaries),
//! `/health` (the process answers) and `/ready` (a standby waiting to take over, or the writer
//! keeping up with the chain), with whether this process leads.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering},
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
/// How long the writer may go without reading the chain's head (or finishing a batch) and
/// still be ready, at least: three poll intervals when they are longer.
const STALE_AFTER_SECS: i64 = 30;

/// Where this process stands, for `/ready`: not connected to the database yet (or again),
/// standing by for the writer's lock, or writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Connecting = 0,
    Standby = 1,
    Writer = 2,
}

static ROLE: AtomicU8 = AtomicU8::new(Role::Connecting as u8);
static STALE_AFTER: AtomicI64 = AtomicI64::new(STALE_AFTER_SECS);
static HEAD: AtomicU64 = AtomicU64::new(0);
static INDEXED: AtomicU64 = AtomicU64::new(0);
/// When the writer last read the chain's head (Unix seconds; 0: never).
static LAST_HEAD_AT: AtomicI64 = AtomicI64::new(0);

/// Installs the recorder and serves `/metrics`, `/health` and `/ready` on `addr`; the writer is
/// ready while it is at most `max_lag` blocks behind the head.
pub async fn serve(addr: SocketAddr, max_lag: u64, poll: Duration) -> anyhow::Result<()> {
    let polls = i64::try_from(poll.as_secs().saturating_mul(3)).unwrap_or(i64::MAX);
    STALE_AFTER.store(STALE_AFTER_SECS.max(polls), Ordering::Relaxed);
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

/// 200 for a standby connected to the database (it takes over when the writer goes) and for a
/// writer that read the head (or finished a batch) recently and is at most `max_lag` blocks
/// behind it; 503 otherwise, saying why.
async fn ready(max_lag: u64) -> impl IntoResponse {
    let role = match ROLE.load(Ordering::Relaxed) {
        2 => Role::Writer,
        1 => Role::Standby,
        _ => Role::Connecting,
    };
    let (head, indexed) = (HEAD.load(Ordering::Relaxed), INDEXED.load(Ordering::Relaxed));
    let lag = head.saturating_sub(indexed);
    let last = LAST_HEAD_AT.load(Ordering::Relaxed);
    let since = (last > 0).then(|| chrono::Utc::now().timestamp() - last);
    let stale_after = STALE_AFTER.load(Ordering::Relaxed);
    let problem = match role {
        Role::Connecting => Some("not connected to the database".to_owned()),
        Role::Standby => None,
        Role::Writer if since.is_none_or(|s| s > stale_after) => {
            Some(format!("the chain's head was not read in the last {stale_after} s"))
        }
        Role::Writer if lag > max_lag => Some("indexing is too far behind the chain".to_owned()),
        Role::Writer => None,
    };
    let status = if problem.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({
        "role": match role {
            Role::Connecting => "connecting",
            Role::Standby => "standby",
            Role::Writer => "writer",
        },
        "head_block": head,
        "indexed_block": indexed,
        "lag_blocks": lag,
        "max_lag_blocks": max_lag,
        "head_read_secs_ago": since,
        "problem": problem,
    });
    (status, Json(body))
}

/// Where this process stands: `indexer_leader` is 1 while it writes, 0 otherwise.
pub(crate) fn role(role: Role) {
    ROLE.store(role as u8, Ordering::Relaxed);
    metrics::gauge!("indexer_leader").set(if role == Role::Writer { 1.0 } else { 0.0 });
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
    // A long batch is progress too: readiness counts from its end.
    LAST_HEAD_AT.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
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
