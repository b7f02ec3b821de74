//! The chain as the indexer reads it: heads, headers and logs, with retries and range splitting.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use alloy::{
    eips::BlockNumberOrTag,
    primitives::{Address, B256, Bytes},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::{client::RpcClient, types::Filter},
    transports::{
        TransportError,
        layers::{RateLimitRetryPolicy, RetryBackoffLayer, RetryPolicy},
    },
};
use serde::Deserialize;
use tracing::{debug, warn};

/// A failed RPC call, classified.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The node refuses the range as too large or its answer as too big: split it.
    #[error("range {from}..={to} too large: {message}")]
    RangeTooLarge {
        /// First block.
        from: u64,
        /// Last block.
        to: u64,
        /// The node's words.
        message: String,
    },
    /// Anything else (connection, timeout, server error): retry later.
    #[error("rpc: {0}")]
    Transport(#[from] TransportError),
    /// The node lacks a block it announced (it moved under us): retry later.
    #[error("block {0} not found")]
    MissingBlock(u64),
    /// A fetch task failed (panicked or was cancelled): retry later.
    #[error("fetch task: {0}")]
    Task(String),
}

/// A block header's fields the indexer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Number.
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Parent's hash.
    pub parent_hash: B256,
    /// Timestamp (unix seconds).
    pub timestamp: u64,
}

/// A log as `eth_getLogs` answers it, read straight from the reply.
///
/// alloy's `rpc::types::Log` flattens its inner log, which makes serde buffer every field of every
/// log before reading it: most of a backfill's decoding time. This type reads the same fields
/// directly (fields the node adds beyond these are skipped).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcLog {
    /// The emitting contract.
    pub address: Address,
    /// The topics.
    pub topics: Vec<B256>,
    /// The data.
    pub data: Bytes,
    /// The block's hash (absent for a pending log).
    #[serde(default)]
    pub block_hash: Option<B256>,
    /// The block's number.
    #[serde(default, with = "alloy::serde::quantity::opt")]
    pub block_number: Option<u64>,
    /// The block's timestamp, where the node gives it.
    #[serde(default, with = "alloy::serde::quantity::opt")]
    pub block_timestamp: Option<u64>,
    /// The emitting transaction.
    #[serde(default)]
    pub transaction_hash: Option<B256>,
    /// The transaction's index in its block.
    #[serde(default, with = "alloy::serde::quantity::opt")]
    pub transaction_index: Option<u64>,
    /// The log's index in its block.
    #[serde(default, with = "alloy::serde::quantity::opt")]
    pub log_index: Option<u64>,
}

/// Reads the chain; clones share the connection and the adaptive span.
#[derive(Debug, Clone)]
pub struct ChainReader {
    provider: DynProvider,
    addresses: Vec<Address>,
    span: Arc<AtomicU64>,
    max_span: u64,
}

impl ChainReader {
    /// Connects over HTTP to `url`, reading the logs of `addresses`; `max_span` caps the blocks of
    /// one `eth_getLogs`.
    pub fn connect(url: &str, addresses: Vec<Address>, max_span: u64) -> Result<Self, RpcError> {
        let url = url
            .parse()
            .map_err(|e| TransportError::local_usage_str(&format!("bad RPC URL: {e}")))?;
        // Rate limits are retried by the layer, but never a range error: some providers word theirs
        // as a limit (Infura's -32005), and resending the same range cannot succeed.
        let layer = RetryBackoffLayer::new_with_policy(10, 200, 10_000, RateLimitsNotRanges);
        let client = RpcClient::builder().layer(layer).http(url);
        let provider = ProviderBuilder::new().connect_client(client).erased();
        Ok(Self {
            provider,
            addresses,
            span: Arc::new(AtomicU64::new(max_span)),
            max_span: max_span.max(1),
        })
    }

    /// The chain id the node serves.
    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        Ok(retry(|| self.provider.get_chain_id()).await?)
    }

    /// The latest block number.
    pub async fn head(&self) -> Result<u64, RpcError> {
        Ok(retry(|| self.provider.get_block_number()).await?)
    }

    /// The `finalized` block, where the node serves the tag.
    pub async fn finalized(&self) -> Result<Option<u64>, RpcError> {
        let block =
            retry(|| self.provider.get_block_by_number(BlockNumberOrTag::Finalized)).await?;
        Ok(block.map(|b| b.header.number))
    }

    /// One block's header.
    pub async fn header(&self, number: u64) -> Result<Header, RpcError> {
        let block = retry(|| self.provider.get_block_by_number(BlockNumberOrTag::Number(number)))
            .await?
            .ok_or(RpcError::MissingBlock(number))?;
        Ok(Header {
            number,
            hash: block.header.hash,
            parent_hash: block.header.parent_hash,
            timestamp: block.header.timestamp,
        })
    }

    /// The logs of the platform contracts in `from..=to`, splitting the range as long as the node
    /// says it is too large; the span of later calls shrinks and grows with the node's answers.
    pub async fn logs(&self, from: u64, to: u64) -> Result<Vec<RpcLog>, RpcError> {
        let mut pending = vec![(from, to)];
        let mut out = Vec::new();
        while let Some((a, b)) = pending.pop() {
            match self.logs_once(a, b).await {
                Ok(mut logs) => {
                    out.append(&mut logs);
                    let grown = (self.span.load(Ordering::Relaxed) * 2).min(self.max_span);
                    self.span.store(grown, Ordering::Relaxed);
                }
                Err(RpcError::RangeTooLarge { message, .. }) if b > a => {
                    let mid = a + (b - a) / 2;
                    self.span.store((b - a).div_ceil(2).max(1), Ordering::Relaxed);
                    debug!(target: "indexer::rpc", from = a, to = b, %message, "range too large, splitting");
                    // Popped last-in first-out: the lower half first, so logs stay in order.
                    pending.push((mid + 1, b));
                    pending.push((a, mid));
                }
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// How many blocks the next `eth_getLogs` should span.
    pub fn span(&self) -> u64 {
        self.span.load(Ordering::Relaxed)
    }

    async fn logs_once(&self, from: u64, to: u64) -> Result<Vec<RpcLog>, RpcError> {
        let filter = Filter::new().address(self.addresses.clone()).from_block(from).to_block(to);
        retry(|| self.provider.raw_request::<_, Vec<RpcLog>>("eth_getLogs".into(), (&filter,)))
            .await
            .map_err(|err| {
                if is_range_error(&err) {
                    RpcError::RangeTooLarge { from, to, message: err.to_string() }
                } else {
                    warn!(target: "indexer::rpc", from, to, %err, "eth_getLogs failed");
                    RpcError::Transport(err)
                }
            })
    }
}

/// Calls `call` again (up to 3 times, 50 to 200 ms apart) after a transient failure (a dropped
/// connection, a server error), so one bad reply does not fail a whole sync step. Range errors and
/// other answers the node means are returned at once.
async fn retry<T, F, Fut>(mut call: F) -> Result<T, TransportError>
where
    F: FnMut() -> Fut,
    Fut: std::future::IntoFuture<Output = Result<T, TransportError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(err) if attempt < 3 && is_transient(&err) => {
                attempt += 1;
                debug!(target: "indexer::rpc", %err, attempt, "transient rpc failure, retrying");
                tokio::time::sleep(Duration::from_millis(50 << (attempt - 1))).await;
            }
            other => return other,
        }
    }
}

/// A failure a second try may not see: the transport broke, or the node answered with a server-side
/// error that is not about the request (range errors are the request's and are split instead).
fn is_transient(err: &TransportError) -> bool {
    match err.as_error_resp() {
        Some(payload) => !is_range_error(err) && matches!(payload.code, -32000 | -32603),
        None => matches!(err, TransportError::Transport(_)),
    }
}

/// Retries what alloy treats as rate limits, except range errors.
#[derive(Debug, Clone, Copy)]
struct RateLimitsNotRanges;

impl RetryPolicy for RateLimitsNotRanges {
    fn should_retry(&self, error: &TransportError) -> bool {
        !is_range_error(error) && RateLimitRetryPolicy::default().should_retry(error)
    }

    fn backoff_hint(&self, error: &TransportError) -> Option<Duration> {
        RateLimitRetryPolicy::default().backoff_hint(error)
    }
}

/// Whether a node's error says the range or the result is too large (wordings of geth, erigon,
/// Alchemy, Infura, QuickNode, Polygon's bor and others).
fn is_range_error(err: &TransportError) -> bool {
    let Some(payload) = err.as_error_resp() else { return false };
    let message = payload.message.to_lowercase();
    [
        "too many",
        "range",
        "limit exceeded",
        "response size",
        "query returned more than",
        "exceed",
        "too large",
        "block range",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// The delay before retry `attempt` (exponential, capped).
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}
