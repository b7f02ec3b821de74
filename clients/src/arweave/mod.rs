//! A small Arweave client (no maintained Rust crate exists): uploads a file as one format-2
//! transaction signed by the operator's wallet, its data posted as chunks with their proofs
//! (or inline when it fits one chunk), and reads a transaction's data back. The file is read
//! from disk chunk by chunk, never held whole in memory. Production points it at an Arweave
//! node or gateway; tests and `make dev` at arlocal.

pub mod merkle;
pub mod transaction;

use std::{io::Read, path::Path, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};

use crate::arweave::{
    merkle::{Chunk, MAX_CHUNK, Tree, chunk_ranges},
    transaction::{Unsigned, Wallet},
};

/// The longest one call to the node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries per chunk before the upload gives up.
const CHUNK_ATTEMPTS: u32 = 3;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ArweaveError {
    /// The node refused the transaction or a chunk (its answer).
    #[error("the Arweave node refused: {0}")]
    Refused(String),
    /// The wallet cannot pay the fee.
    #[error("the Arweave wallet cannot pay for the upload: {0}")]
    Unfunded(String),
    /// The node could not be reached, answered garbage, or the file could not be read.
    #[error("cannot reach the Arweave node: {0}")]
    Unreachable(String),
}

/// An Arweave node (or gateway) and the wallet that pays for uploads.
#[derive(Debug, Clone)]
pub struct Arweave {
    http: reqwest::Client,
    url: String,
    wallet: Arc<Wallet>,
}

/// An upload the node took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The transaction id (base64url, 43 characters).
    pub id: String,
    /// The fee paid, in winston.
    pub reward: String,
}

impl Arweave {
    /// A client of the node at `url`, paying with the wallet in `wallet_jwk`.
    pub fn new(url: &str, wallet_jwk: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            wallet: Arc::new(Wallet::from_jwk(wallet_jwk)?),
        })
    }

    /// The paying wallet's address.
    pub fn address(&self) -> String {
        self.wallet.address()
    }

    /// Uploads the `size` bytes of the file at `path` as one transaction tagged with its
    /// content type. Chunks are posted after the transaction, as Arweave nodes expect.
    pub async fn upload(
        &self,
        path: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<Uploaded, ArweaveError> {
        let chunks = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || hash_chunks(&path, size))
                .await
                .map_err(|e| ArweaveError::Unreachable(format!("the chunk task failed: {e}")))??
        };
        let tree = Tree::new(&chunks);
        let reward = self.get_text(&format!("/price/{size}")).await?;
        if reward.is_empty() || !reward.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ArweaveError::Unreachable(format!("the node's price is {reward:?}")));
        }
        let anchor = self.get_text("/tx_anchor").await?;
        let inline = if size <= MAX_CHUNK { Some(read_range(path, 0, size).await?) } else { None };
        let tags = [("Content-Type", content_type), ("App-Name", "DecentraSpace")];
        let signed = Unsigned {
            anchor: &anchor,
            reward: &reward,
            tags: &tags,
            data_size: size,
            data_root: tree.root(),
            data: inline.as_deref(),
        }
        .sign(&self.wallet)
        .map_err(|e| ArweaveError::Unreachable(e.to_string()))?;

        let posted = self
            .http
            .post(format!("{}/tx", self.url))
            .json(&signed)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ArweaveError::Unreachable(e.to_string()))?;
        let status = posted.status();
        // 208: the node has it already (a retried post).
        if !(status.is_success() || status.as_u16() == 208) {
            let body = posted.text().await.unwrap_or_default();
            let answer = format!("{status}: {}", body.chars().take(300).collect::<String>());
            return Err(match status.as_u16() {
                402 | 410 => ArweaveError::Unfunded(answer),
                400 | 413 | 422 => ArweaveError::Refused(answer),
                _ => ArweaveError::Unreachable(answer),
            });
        }
        if inline.is_none() {
            self.post_chunks(path, size, &chunks, &tree).await?;
        }
        Ok(Uploaded { id: signed.id, reward })
    }

    async fn post_chunks(
        &self,
        path: &Path,
        size: u64,
        chunks: &[Chunk],
        tree: &Tree,
    ) -> Result<(), ArweaveError> {
        let data_root = B64.encode(tree.root());
        for (chunk, proof) in chunks.iter().zip(tree.proofs()) {
            // The empty last chunk of data that ends on a boundary is in the tree, not uploaded.
            if chunk.start == chunk.end {
                continue;
            }
            let bytes = read_range(path, chunk.start, chunk.end - chunk.start).await?;
            let body = serde_json::json!({
                "data_root": data_root,
                "data_size": size.to_string(),
                "data_path": B64.encode(&proof.data_path),
                "offset": proof.offset.to_string(),
                "chunk": B64.encode(&bytes),
            });
            let mut attempt = 0;
            loop {
                attempt += 1;
                let sent = self
                    .http
                    .post(format!("{}/chunk", self.url))
                    .json(&body)
                    .timeout(CALL_TIMEOUT)
                    .send()
                    .await;
                let failure = match sent {
                    Ok(answer) if answer.status().is_success() => break,
                    Ok(answer) if answer.status().is_client_error() => {
                        return Err(ArweaveError::Refused(format!(
                            "chunk at {}: {}",
                            chunk.start,
                            answer.status()
                        )));
                    }
                    Ok(answer) => answer.status().to_string(),
                    Err(err) => err.to_string(),
                };
                if attempt >= CHUNK_ATTEMPTS {
                    return Err(ArweaveError::Unreachable(format!(
                        "chunk at {} after {attempt} tries: {failure}",
                        chunk.start
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
        Ok(())
    }

    /// A transaction's data, streamed from the node.
    pub async fn data(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = reqwest::Result<Bytes>> + use<>, ArweaveError> {
        let answer =
            tokio::time::timeout(CALL_TIMEOUT, self.http.get(format!("{}/{id}", self.url)).send())
                .await
                .map_err(|_| {
                    ArweaveError::Unreachable(format!("no answer within {CALL_TIMEOUT:?}"))
                })?
                .map_err(|e| ArweaveError::Unreachable(e.to_string()))?;
        if !answer.status().is_success() {
            return Err(ArweaveError::Refused(format!("data of {id}: {}", answer.status())));
        }
        Ok(answer.bytes_stream())
    }

    async fn get_text(&self, path: &str) -> Result<String, ArweaveError> {
        let answer = self
            .http
            .get(format!("{}{path}", self.url))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ArweaveError::Unreachable(e.to_string()))?;
        if !answer.status().is_success() {
            return Err(ArweaveError::Unreachable(format!("{path}: {}", answer.status())));
        }
        Ok(answer.text().await.map_err(|e| ArweaveError::Unreachable(e.to_string()))?.trim().into())
    }
}

/// The chunks of the file's first `size` bytes with their hashes, read one chunk at a time.
fn hash_chunks(path: &Path, size: u64) -> Result<Vec<Chunk>, ArweaveError> {
    let unreadable = |e: std::io::Error| ArweaveError::Unreachable(format!("read the upload: {e}"));
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut buffer = vec![0u8; MAX_CHUNK as usize];
    chunk_ranges(size)
        .into_iter()
        .map(|(start, end)| {
            let part = &mut buffer[..(end - start) as usize];
            file.read_exact(part).map_err(unreadable)?;
            Ok(Chunk { start, end, data_hash: Sha256::digest(&*part).into() })
        })
        .collect()
}

async fn read_range(path: &Path, start: u64, len: u64) -> Result<Vec<u8>, ArweaveError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let unreadable = |e: std::io::Error| ArweaveError::Unreachable(format!("read the upload: {e}"));
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(unreadable)?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact(&mut bytes).await.map_err(unreadable)?;
    Ok(bytes)
}
