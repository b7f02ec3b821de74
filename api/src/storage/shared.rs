//! `/storage/shared/{token}`: the shareable link of a file (its bytes, streamed from IPFS with
//! its name and content type) or of a folder (a listing of what it holds, each with its own
//! link; the first 1,000 of each). Anyone holding the link may read; it stops working when the
//! item is deleted or the owner's storage is cancelled (404), and while it is paused or suspended
//! (403). Files are served sandboxed (`Content-Security-Policy: sandbox`), so uploaded HTML cannot
//! run script on the API's origin.

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::share_link;
use crate::{
    http::error::{ApiError, ApiResult},
    storage::StorageState,
};

/// A shared folder's listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct SharedFolder {
    /// The folder's name.
    pub name: String,
    /// Its folders.
    pub folders: Vec<SharedItem>,
    /// Its files.
    pub files: Vec<SharedItem>,
}

/// An item of a shared folder.
#[derive(Debug, Serialize, ToSchema)]
pub struct SharedItem {
    /// Its name.
    pub name: String,
    /// Its size in bytes (files).
    pub size: Option<i64>,
    /// Its content type (files).
    pub content_type: Option<String>,
    /// Its own shareable link.
    pub share_link: String,
}

fn not_found() -> ApiError {
    ApiError::NotFound("no shared file or folder at this link (deleted, or never shared)".into())
}

/// Links work while the owner's storage runs; a cancelled storage service's links are gone.
fn check_storage(state: Option<&str>) -> ApiResult<()> {
    match state {
        None | Some("active") => Ok(()),
        Some("cancelled") => Err(not_found()),
        Some(state) => Err(ApiError::Forbidden(format!(
            "the owner's storage is {state}; the link works again when it runs"
        ))),
    }
}

/// A shared file's bytes, or a shared folder's listing.
#[utoipa::path(get, path = "/storage/shared/{token}", tag = "storage",
    params(("token" = String, Path, description = "The link's secret")),
    responses(
        (status = 200, description = "The file's bytes (its content type), or a folder listing (JSON)", body = SharedFolder),
        (status = 403, description = "The owner's storage is paused or suspended"),
        crate::http::openapi::NotFound))]
pub async fn shared(
    State(state): State<StorageState>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let chain = state.chain_id() as i64;
    let file = sqlx::query!(
        r#"select f.name, f.content_type, f.size_bytes, f.backend, f.content_id, s.state as "service_state?"
           from storage_files f
           left join services s on s.chain_id = f.chain_id and s.service_id = f.service_id
           where f.chain_id = $1 and f.access_token = $2 and f.deleted_at is null"#,
        chain,
        token
    )
    .fetch_optional(&state.db)
    .await?;
    if let Some(file) = file {
        check_storage(file.service_state.as_deref())?;
        let unreadable = |err: String| {
            tracing::warn!(target: "api::storage", %err, id = file.content_id, "cannot read a shared file");
            ApiError::Unavailable("the file cannot be read right now; try again".into())
        };
        let bytes: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>> = if file
            .backend
            == "arweave"
        {
            let arweave = state
                .arweave
                .as_ref()
                .ok_or_else(|| ApiError::NotConfigured("no Arweave node is configured"))?;
            Box::pin(arweave.data(&file.content_id).await.map_err(|e| unreadable(e.to_string()))?)
        } else {
            let ipfs = state
                .ipfs
                .as_ref()
                .ok_or_else(|| ApiError::NotConfigured("no IPFS node is configured"))?;
            Box::pin(
                ipfs.cat_stream(&file.content_id).await.map_err(|e| unreadable(e.to_string()))?,
            )
        };
        let disposition = format!(
            "inline; filename*=UTF-8''{}",
            file.name
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        );
        return Ok((
            [
                (header::CONTENT_TYPE, file.content_type),
                (header::CONTENT_LENGTH, file.size_bytes.to_string()),
                (header::CONTENT_DISPOSITION, disposition),
                (header::CACHE_CONTROL, "private, max-age=300".to_owned()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                // Uploaded HTML or SVG must not run script on the API's origin.
                (header::CONTENT_SECURITY_POLICY, "sandbox".to_owned()),
            ],
            Body::from_stream(bytes),
        )
            .into_response());
    }

    let folder = sqlx::query!(
        "select id, name, account from storage_folders
         where chain_id = $1 and access_token = $2 and deleted_at is null",
        chain,
        token
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(not_found)?;
    // The open storage service if there is one, else the last cancelled one (none: nothing
    // stored yet).
    let storage = sqlx::query_scalar!(
        "select state from services
         where chain_id = $1 and owner = $2 and kind = 'storage'
         order by state = 'cancelled', service_id desc limit 1",
        chain,
        folder.account
    )
    .fetch_optional(&state.db)
    .await?;
    check_storage(storage.as_deref())?;
    let folders = sqlx::query!(
        "select name, access_token from storage_folders
         where parent_id = $1 and deleted_at is null order by name limit 1000",
        folder.id
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|f| SharedItem {
        name: f.name,
        size: None,
        content_type: None,
        share_link: share_link(&f.access_token),
    })
    .collect();
    let files = sqlx::query!(
        "select name, size_bytes, content_type, access_token from storage_files
         where folder_id = $1 and deleted_at is null order by name limit 1000",
        folder.id
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|f| SharedItem {
        name: f.name,
        size: Some(f.size_bytes),
        content_type: Some(f.content_type),
        share_link: share_link(&f.access_token),
    })
    .collect();
    Ok(Json(SharedFolder { name: folder.name, folders, files }).into_response())
}
