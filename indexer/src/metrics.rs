//! Prometheus metrics of the indexer.

use std::{net::SocketAddr, time::Duration};

use metrics_exporter_prometheus::PrometheusBuilder;

/// Serves `/metrics` on `addr`.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new().with_http_listener(addr).install()?;
    Ok(())
}

pub(crate) fn heads(head: u64, indexed: u64) {
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
