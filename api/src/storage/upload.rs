//! `POST /storage/upload`: the file streams from the client through a small channel into the
//! node, counted against the account's allowance as it goes. The node's request ends cleanly
//! only after the last chunk: a client that breaks off, a refused upload or a dropped handler
//! breaks the node's request too, so no cut-off file is ever pinned.
//!
//! An Arweave upload is spooled to a temporary file first (an Arweave transaction signs the
//! root of a tree over all its chunks, so every byte is needed before anything is posted), then
//! posted as one transaction from disk; the file is removed once the request ends.

use alloy::primitives::U256;
use axum::{
    Json,
    extract::{Multipart, State, multipart::Field},
    http::StatusCode,
};
use bytes::Bytes;
use decentraspace_abi::{ServiceKind, Tier};
use decentraspace_clients::{
    arweave::ArweaveError,
    ipfs::{Added, Ipfs},
};
use futures::Stream;
use tokio::sync::mpsc;

use super::{
    StoredFile,
    account::{NewFile, allowance, indexed_storage_service, record, release, storage_service},
};
use crate::{
    billing::available,
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
    storage::StorageState,
};

/// Where a file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Ipfs,
    Arweave,
}

/// Chunks buffered between the client and the node: the memory an upload holds.
const IN_FLIGHT_CHUNKS: usize = 8;
/// The longest file name kept.
const MAX_NAME: usize = 255;
/// The longest a client may pause mid-upload.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The content the node reads: chunks, then `None` for a clean end. A channel closed without that
/// end (the handler dropped or gave up) is an error, which breaks the node's request off.
fn node_body(
    received: mpsc::Receiver<Option<Bytes>>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(Some(received), |state| async move {
        let mut received = state?;
        match received.recv().await {
            Some(Some(chunk)) => Some((Ok(chunk), Some(received))),
            Some(None) => None,
            // Once: the stream ends after the error.
            None => Some((Err(std::io::Error::other("the upload was cut off")), None)),
        }
    })
}

/// Aborts the node's request when dropped (the handler ended without finishing it).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A file name safe to keep: its last path segment, without control characters.
pub(crate) fn file_name(field: &Field<'_>) -> ApiResult<String> {
    let raw = field.file_name().unwrap_or_default();
    let name: String = raw
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." || name.len() > MAX_NAME {
        return Err(ApiError::BadRequest(format!(
            "the file part needs a file name of 1 to {MAX_NAME} bytes"
        )));
    }
    Ok(name.to_owned())
}

/// Bidirectional and zero-width format characters, which make a name read as another.
pub(super) fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// The declared type when it says something, else the one the name's extension implies.
fn content_type(field: &Field<'_>, name: &str) -> String {
    match field.content_type() {
        Some(declared)
            if declared != "application/octet-stream"
                && declared.parse::<mime_guess::Mime>().is_ok() =>
        {
            declared.to_owned()
        }
        _ => mime_guess::from_path(name).first_or_octet_stream().essence_str().to_owned(),
    }
}

/// The part's next chunk, or `None` at its end; a client idle for [`IDLE_TIMEOUT`] is dropped.
async fn next_chunk(field: &mut Field<'_>) -> ApiResult<Option<Bytes>> {
    tokio::time::timeout(IDLE_TIMEOUT, field.chunk())
        .await
        .map_err(|_| ApiError::BadRequest(format!("the upload stalled for {IDLE_TIMEOUT:?}")))?
        .map_err(multipart_error)
}

pub(crate) fn multipart_error(err: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::BadRequest(format!("the upload is not a valid multipart body: {}", err.body_text()))
}

/// Stores a file on IPFS (CIDv1, pinned), streamed through, or permanently on Arweave (one
/// transaction signed and paid by the platform). Send `multipart/form-data` with a `file` part
/// and optionally, before it, a `backend` part: `ipfs` (the default) or `arweave`.
#[utoipa::path(post, path = "/storage/upload", tag = "storage", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "A `file` part, optionally preceded by `backend`"),
    responses(
        (status = 201, description = "Stored", body = StoredFile),
        (status = 402, description = "The available credit cannot pay an hour of storage"),
        (status = 403, description = "Arweave for a Free account"),
        (status = 409, description = "The storage service is paused or suspended"),
        (status = 413, description = "Over the tier's file size or storage quota"),
        (status = 422, description = "An unknown or unconfigured backend"),
        crate::http::openapi::Unavailable))]
pub(super) async fn upload(
    State(state): State<StorageState>,
    user: AuthUser,
    mut multipart: Multipart,
) -> ApiResult<(StatusCode, Json<StoredFile>)> {
    let allowance = allowance(&state, user.address).await?;
    if allowance.bytes == 0 {
        return Err(ApiError::TooLarge { slug: allowance.slug, detail: allowance.detail });
    }
    // Paused or suspended storage is refused before anything is sent to the node, and so is an
    // account whose available credit cannot pay an hour of storage.
    let existing_service = indexed_storage_service(&state, user.address).await?;
    let hourly = available::hourly_price(&state, user.address, ServiceKind::Storage).await?;
    available::require(&state, user.address, U256::ZERO, hourly, "storing a file").await?;
    let mut backend = Backend::Ipfs;
    let field = loop {
        let field = multipart
            .next_field()
            .await
            .map_err(multipart_error)?
            .ok_or_else(|| ApiError::BadRequest("the upload has no `file` part".into()))?;
        match field.name() {
            Some("file") => break field,
            Some("backend") => {
                let name = field.text().await.map_err(multipart_error)?;
                crate::http::input::refuse_nul_in_text("backend", &name)?;
                backend = match name.as_str() {
                    "ipfs" => Backend::Ipfs,
                    "arweave" if state.arweave.is_some() => Backend::Arweave,
                    "arweave" => {
                        return Err(ApiError::Unprocessable {
                            slug: "storage-backend-unavailable",
                            detail: "Arweave storage is not configured on this platform; use ipfs"
                                .into(),
                        });
                    }
                    _ => {
                        return Err(ApiError::Unprocessable {
                            slug: "storage-backend-unavailable",
                            detail: format!("backend {name:?} is unknown; use ipfs or arweave"),
                        });
                    }
                };
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unexpected part {other:?}: send `backend` (optional), then one `file`"
                )));
            }
        }
    };
    // Arweave storage is permanent and paid for by the platform: Paid accounts only.
    if backend == Backend::Arweave
        && crate::accounts::tier::effective_tier(&state, user.address).await? != Tier::Paid
    {
        return Err(ApiError::PaidTierRequired(
            "Arweave storage is for Paid accounts; upgrade, or store the file on IPFS".into(),
        ));
    }
    let name = file_name(&field)?;
    let content_type = content_type(&field, &name);
    let over = || ApiError::TooLarge { slug: allowance.slug, detail: allowance.detail.clone() };
    if backend == Backend::Arweave {
        let spooled = spool(&state, field, allowance.bytes, over).await?;
        if multipart.next_field().await.map_err(multipart_error)?.is_some() {
            return Err(ApiError::BadRequest("send one `file` part per upload".into()));
        }
        let (file, size) = spooled;
        let service_id = match existing_service {
            Some(id) => id,
            None => storage_service(&state, user.address).await?,
        };
        let arweave = state.arweave.as_ref().expect("checked with the backend part");
        let uploaded =
            arweave.upload(file.path(), size, &content_type).await.map_err(arweave_error)?;
        drop(file);
        let url =
            format!("{}/{}", state.config.arweave_gateway_url.trim_end_matches('/'), uploaded.id);
        let stored = Stored { backend, content_id: uploaded.id, size, url };
        return respond(&state, &user, service_id, name, content_type, stored).await;
    }

    let ipfs =
        state.ipfs.clone().ok_or_else(|| ApiError::NotConfigured("no IPFS node is configured"))?;
    let (added, size) =
        stream_to_ipfs(&ipfs, field, &name, &content_type, allowance.bytes, over).await?;
    if multipart.next_field().await.map_err(multipart_error)?.is_some() {
        release(&state, std::slice::from_ref(&added.cid)).await?;
        return Err(ApiError::BadRequest("send one `file` part per upload".into()));
    }

    let service_id = match existing_service {
        Some(id) => id,
        None => match storage_service(&state, user.address).await {
            Ok(id) => id,
            Err(err) => {
                release(&state, std::slice::from_ref(&added.cid)).await?;
                return Err(err);
            }
        },
    };
    let url = format!("{}/ipfs/{}", state.config.ipfs_gateway_url.trim_end_matches('/'), added.cid);
    let stored = Stored { backend, content_id: added.cid, size, url };
    respond(&state, &user, service_id, name, content_type, stored).await
}

/// Content a backend holds.
struct Stored {
    backend: Backend,
    /// The CID or the Arweave transaction id.
    content_id: String,
    size: u64,
    /// Where anyone can fetch it.
    url: String,
}

/// Records the stored file and answers it. When uploads that ran alongside took the rest of the
/// quota, IPFS content is unpinned; Arweave content is permanent and stays, unrecorded.
async fn respond(
    state: &StorageState,
    user: &AuthUser,
    service_id: i64,
    name: String,
    content_type: String,
    stored: Stored,
) -> ApiResult<(StatusCode, Json<StoredFile>)> {
    let backend = match stored.backend {
        Backend::Ipfs => "ipfs",
        Backend::Arweave => "arweave",
    };
    let file = NewFile {
        service_id,
        name: &name,
        content_type: &content_type,
        size: stored.size,
        backend,
        content_id: &stored.content_id,
    };
    let recorded = record(state, user.address, file).await?;
    let Some(recorded) = recorded else {
        if stored.backend == Backend::Ipfs {
            release(state, std::slice::from_ref(&stored.content_id)).await?;
        } else {
            tracing::warn!(target: "api::storage", id = stored.content_id,
                "an Arweave upload past the quota stays on Arweave unrecorded");
        }
        return Err(ApiError::TooLarge {
            slug: "storage-quota-exceeded",
            detail:
                "uploads that ran alongside took the rest of your quota; delete files or upgrade"
                    .into(),
        });
    };
    Ok((
        StatusCode::CREATED,
        Json(StoredFile {
            id: recorded.id,
            name,
            content_type,
            size: stored.size,
            backend: backend.into(),
            cid: stored.content_id,
            service_id,
            url: stored.url,
            share_link: super::share_link(&recorded.access_token),
            created_at: recorded.created_at,
        }),
    ))
}

fn arweave_error(err: ArweaveError) -> ApiError {
    match &err {
        ArweaveError::Unfunded(_) => {
            tracing::error!(target: "api::storage", err = %err, "the Arweave wallet needs funds")
        }
        _ => tracing::warn!(target: "api::storage", err = %err, "Arweave upload failed"),
    }
    ApiError::Unavailable("Arweave did not take the file; try again later".into())
}

/// Writes a multipart part to a temporary file (removed when dropped) of at most `max_bytes`;
/// answers it with the bytes received.
async fn spool(
    state: &StorageState,
    mut field: Field<'_>,
    max_bytes: u64,
    over: impl Fn() -> ApiError,
) -> ApiResult<(tempfile::NamedTempFile, u64)> {
    use tokio::io::AsyncWriteExt;
    let spool_error =
        |e: std::io::Error| ApiError::Internal(anyhow::anyhow!("spool the upload: {e}"));
    let file = tempfile::Builder::new()
        .prefix("ds-upload-")
        .tempfile_in(&state.config.deploy_work_dir)
        .map_err(spool_error)?;
    let mut writer =
        tokio::io::BufWriter::new(tokio::fs::File::from_std(file.reopen().map_err(spool_error)?));
    let mut size: u64 = 0;
    loop {
        let Some(chunk) = next_chunk(&mut field).await? else { break };
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(over());
        }
        writer.write_all(&chunk).await.map_err(spool_error)?;
    }
    writer.flush().await.map_err(spool_error)?;
    writer.into_inner().sync_data().await.map_err(spool_error)?;
    Ok((file, size))
}

/// Streams a multipart part into the node as one pinned file of at most `max_bytes` (past it,
/// `over()` is the answer and the node's request is broken off, so nothing is pinned). Answers
/// what the node stored and the bytes received.
pub(crate) async fn stream_to_ipfs(
    ipfs: &Ipfs,
    mut field: Field<'_>,
    name: &str,
    content_type: &str,
    max_bytes: u64,
    over: impl Fn() -> ApiError,
) -> ApiResult<(Added, u64)> {
    // The node reads from a small channel this handler fills from the client: at most
    // IN_FLIGHT_CHUNKS chunks are held at once, whatever the file's size.
    let (chunks, received) = mpsc::channel::<Option<Bytes>>(IN_FLIGHT_CHUNKS);
    let mut adding = AbortOnDrop(tokio::spawn({
        let (ipfs, name, content_type) = (ipfs.clone(), name.to_owned(), content_type.to_owned());
        async move { ipfs.add(&name, &content_type, node_body(received)).await }
    }));
    let mut size: u64 = 0;
    loop {
        let Some(chunk) = next_chunk(&mut field).await? else { break };
        size += chunk.len() as u64;
        if size > max_bytes {
            // Returning drops `adding`, which breaks the node's request off.
            return Err(over());
        }
        if chunks.send(Some(chunk)).await.is_err() {
            // The node stopped reading: its answer says why.
            break;
        }
    }
    // The clean end: only now may the node finish and pin the file.
    let _ = chunks.send(None).await;
    let added = (&mut adding.0)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("the IPFS upload task failed: {e}")))?
        .map_err(|e| {
            tracing::warn!(target: "api::storage", err = %e, "IPFS add failed");
            ApiError::Unavailable("the IPFS node did not store the file; try again".into())
        })?;
    Ok((added, size))
}
