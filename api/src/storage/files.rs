//! `/storage/manage/files`: every account, whatever its tier, lists the files it stores (in all
//! folders, page by page) and deletes them. IPFS content no other file holds is unpinned;
//! Arweave content is permanent, so deleting it removes the record and its link.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
        pagination::PageQuery,
    },
    storage::StorageState,
};

/// One of the caller's files.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileRecord {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its content type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: i64,
    /// `ipfs` or `arweave`.
    pub backend: String,
    /// The CID (IPFS) or the transaction id (Arweave).
    pub cid: String,
    /// The folder it is in (null: the root).
    pub folder_id: Option<i64>,
    /// Its shareable link (`/storage/shared/<secret>`).
    pub share_link: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// A page of files, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilePage {
    /// The files.
    pub files: Vec<FileRecord>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Lists the caller's files, in every folder, by id.
#[utoipa::path(get, path = "/storage/manage/files", tag = "storage", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = FilePage)))]
pub async fn list(
    State(state): State<StorageState>,
    user: AuthUser,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<FilePage>> {
    let limit = page.limit()?;
    let after = match page.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest("cursor: use the next_cursor of a page".into()))?,
    };
    let mut files = sqlx::query_as!(
        FileRecord,
        r#"select id, name, content_type, size_bytes as size, backend, content_id as cid, folder_id,
                  '/storage/shared/' || access_token as "share_link!", created_at
           from storage_files
           where chain_id = $1 and account = $2 and deleted_at is null and id > $3
           order by id
           limit $4"#,
        state.chain_id() as i64,
        user.address.as_slice(),
        after,
        limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let next_cursor = if files.len() as i64 > limit {
        files.truncate(limit as usize);
        files.last().map(|f| f.id.to_string())
    } else {
        None
    };
    Ok(Json(FilePage { files, next_cursor }))
}

/// Deletes one of the caller's files: its record and link go; IPFS content no other file holds
/// is unpinned.
#[utoipa::path(delete, path = "/storage/manage/files/{id}", tag = "storage", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The file")),
    responses((status = 204, description = "Deleted"),
        crate::http::openapi::NotFound))]
pub async fn delete(
    State(state): State<StorageState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    let mut tx = super::account::locked(&state, user.address).await?;
    let deleted = sqlx::query!(
        "update storage_files set deleted_at = now()
         where id = $1 and chain_id = $2 and account = $3 and deleted_at is null
         returning content_id, folder_id",
        id,
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no file {id} of yours")))?;
    super::directories::changed(&mut tx, &[deleted.folder_id]).await?;
    tx.commit().await?;
    super::directories::wake(&state).await;
    super::account::release(&state, &[deleted.content_id]).await?;
    Ok(StatusCode::NO_CONTENT)
}
