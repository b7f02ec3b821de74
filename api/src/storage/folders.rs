//! `/storage/folder`: folders for Paid accounts (a Free account gets 403 `paid-tier-required`):
//! create, list a folder's folders and files page by page, rename and move (never into itself),
//! delete (a non-empty folder only with `recursive=true`), and move files between folders.
//! Every query is scoped to the caller: another account's folder or file is as absent as a
//! missing one.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use decentraspace_abi::Tier;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};

use crate::{
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
        pagination::PageQuery,
    },
    storage::StorageState,
};

/// The longest folder name.
const MAX_NAME: usize = 255;

/// A folder.
#[derive(Debug, Serialize, ToSchema)]
pub struct Folder {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The folder it is in (null: the root).
    pub parent_id: Option<i64>,
    /// Its shareable link (`/storage/shared/<secret>`): a listing of what it holds.
    pub share_link: String,
    /// Its IPFS directory (its IPFS files and folders by name), rebuilt shortly after what it
    /// holds changes; null until first built.
    pub cid: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A file as listed in a folder.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileEntry {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its content type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: i64,
    /// Its CID.
    pub cid: String,
    /// Its shareable link (`/storage/shared/<secret>`).
    pub share_link: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// A folder's contents, one page at a time: folders first, then files, each by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct FolderPage {
    /// The folder listed (null: the root).
    pub folder_id: Option<i64>,
    /// Its folders (on the first page only).
    pub folders: Vec<Folder>,
    /// Its files, by id.
    pub files: Vec<FileEntry>,
    /// Pass as `cursor` for the next page of files; null at the end.
    pub next_cursor: Option<String>,
}

/// A new folder.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFolder {
    /// Its name (1–255 characters, no `/`).
    pub name: String,
    /// The folder to make it in (absent: the root).
    pub parent_id: Option<i64>,
}

/// A rename and/or move.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FolderChange {
    /// A new name.
    pub name: Option<String>,
    /// A new parent folder.
    pub parent_id: Option<i64>,
    /// Move to the root (instead of `parent_id`).
    #[serde(default)]
    pub to_root: bool,
}

/// Where a file goes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileMove {
    /// The folder (null: the root). Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub folder_id: Option<Option<i64>>,
}

/// A field that must be sent, possibly as null: `Some(None)` for null, `None` when absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// Which folder to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// The folder (absent: the root).
    pub folder_id: Option<i64>,
}

/// Deleting a folder.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeleteQuery {
    /// Delete what the folder holds too (a non-empty folder needs it).
    #[serde(default)]
    pub recursive: bool,
}

fn folder_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME
        || name.contains(['/', '\\'])
        || name == "."
        || name == ".."
        || name.chars().any(|c| c.is_control() || super::upload::is_invisible_format(c))
    {
        return Err(ApiError::BadRequest(format!(
            "a folder name is 1 to {MAX_NAME} characters, without `/`, `\\` or control characters"
        )));
    }
    Ok(name.to_owned())
}

/// Folders are for Paid accounts.
async fn require_paid(state: &StorageState, user: &AuthUser) -> ApiResult<()> {
    let tier = crate::accounts::tier::effective_tier(state, user.address).await?;
    if tier != Tier::Paid {
        return Err(ApiError::PaidTierRequired(
            "folders are for Paid accounts; upgrade to organise files in folders".into(),
        ));
    }
    Ok(())
}

/// Checks `folder` is a live folder of the caller's.
async fn owned_folder(
    conn: &mut PgConnection,
    state: &StorageState,
    user: &AuthUser,
    folder: i64,
) -> ApiResult<()> {
    let found = sqlx::query_scalar!(
        "select exists(select 1 from storage_folders
                       where id = $1 and chain_id = $2 and account = $3 and deleted_at is null)",
        folder,
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .fetch_one(&mut *conn)
    .await?;
    if found != Some(true) {
        return Err(ApiError::NotFound(format!("no folder {folder} of yours")));
    }
    Ok(())
}

fn conflict_on_duplicate(err: sqlx::Error) -> ApiError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::Conflict("a folder of that name is already there; choose another name".into())
        }
        _ => err.into(),
    }
}

/// Makes a folder.
#[utoipa::path(post, path = "/storage/folder", tag = "storage", security(("bearer" = [])),
    request_body = NewFolder,
    responses((status = 201, body = Folder),
        (status = 403, description = "A Free account"),
        (status = 404, description = "No such parent of yours"),
        (status = 409, description = "The name is taken there")))]
pub async fn create(
    State(state): State<StorageState>,
    user: AuthUser,
    Json(request): Json<NewFolder>,
) -> ApiResult<(StatusCode, Json<Folder>)> {
    let name = folder_name(&request.name)?;
    require_paid(&state, &user).await?;
    let mut tx = super::account::locked(&state, user.address).await?;
    if let Some(parent) = request.parent_id {
        owned_folder(&mut tx, &state, &user, parent).await?;
    }
    let folder = sqlx::query_as!(
        Folder,
        r#"insert into storage_folders (chain_id, account, parent_id, name, access_token)
           values ($1, $2, $3, $4, $5)
           returning id, name, parent_id, '/storage/shared/' || access_token as "share_link!", cid, created_at"#,
        state.chain_id() as i64,
        user.address.as_slice(),
        request.parent_id,
        name,
        super::account::access_token()
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(conflict_on_duplicate)?;
    super::directories::changed(&mut tx, &[request.parent_id]).await?;
    tx.commit().await?;
    super::directories::wake(&state).await;
    Ok((StatusCode::CREATED, Json(folder)))
}

/// Lists a folder (or the root): its folders, then its files page by page.
#[utoipa::path(get, path = "/storage/folder", tag = "storage", security(("bearer" = [])),
    params(ListQuery, PageQuery),
    responses((status = 200, body = FolderPage),
        (status = 403, description = "A Free account"),
        crate::http::openapi::NotFound))]
pub async fn list(
    State(state): State<StorageState>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<FolderPage>> {
    let limit = page.limit()?;
    let after =
        match page.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<i64>().map_err(|_| {
                ApiError::BadRequest("cursor: use the next_cursor of a page".into())
            })?),
        };
    require_paid(&state, &user).await?;
    if let Some(folder) = q.folder_id {
        owned_folder(&mut *state.db.acquire().await?, &state, &user, folder).await?;
    }
    let chain = state.chain_id() as i64;
    let folders = if after.is_none() {
        sqlx::query_as!(
            Folder,
            r#"select id, name, parent_id, '/storage/shared/' || access_token as "share_link!", cid, created_at
               from storage_folders
               where chain_id = $1 and account = $2 and parent_id is not distinct from $3
                 and deleted_at is null
               order by id"#,
            chain,
            user.address.as_slice(),
            q.folder_id
        )
        .fetch_all(&state.db)
        .await?
    } else {
        Vec::new()
    };
    let mut files = sqlx::query_as!(
        FileEntry,
        r#"select id, name, content_type, size_bytes as size, content_id as cid,
                  '/storage/shared/' || access_token as "share_link!", created_at
           from storage_files
           where chain_id = $1 and account = $2 and folder_id is not distinct from $3
             and deleted_at is null and id > $4
           order by id
           limit $5"#,
        chain,
        user.address.as_slice(),
        q.folder_id,
        after.unwrap_or(0),
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
    Ok(Json(FolderPage { folder_id: q.folder_id, folders, files, next_cursor }))
}

/// Renames and/or moves a folder (never into itself or one of its own folders).
#[utoipa::path(patch, path = "/storage/folder/{id}", tag = "storage", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The folder")), request_body = FolderChange,
    responses((status = 200, body = Folder),
        crate::http::openapi::Forbidden,
        crate::http::openapi::NotFound,
        (status = 409, description = "The name is taken there"),
        (status = 422, description = "A move into itself")))]
pub async fn update(
    State(state): State<StorageState>,
    user: AuthUser,
    Path(id): Path<i64>,
    Json(change): Json<FolderChange>,
) -> ApiResult<Json<Folder>> {
    let name = change.name.as_deref().map(folder_name).transpose()?;
    if change.to_root && change.parent_id.is_some() {
        return Err(ApiError::BadRequest("send either parent_id or to_root, not both".into()));
    }
    require_paid(&state, &user).await?;
    let mut tx = super::account::locked(&state, user.address).await?;
    owned_folder(&mut tx, &state, &user, id).await?;
    let old_parent = sqlx::query_scalar!("select parent_id from storage_folders where id = $1", id)
        .fetch_one(&mut *tx)
        .await?;
    if let Some(parent) = change.parent_id {
        owned_folder(&mut tx, &state, &user, parent).await?;
        // `union` (not `union all`): a walk over any cycle ends.
        let into_itself = sqlx::query_scalar!(
            r#"with recursive up as (
                   select id, parent_id from storage_folders where id = $1
                   union
                   select f.id, f.parent_id from storage_folders f join up on f.id = up.parent_id
               )
               select exists(select 1 from up where id = $2) as "into_itself!""#,
            parent,
            id
        )
        .fetch_one(&mut *tx)
        .await?;
        if into_itself {
            return Err(ApiError::Unprocessable {
                slug: "folder-move-into-itself",
                detail: format!("folder {id} cannot move into itself or one of its folders"),
            });
        }
    }
    let folder = sqlx::query_as!(
        Folder,
        r#"update storage_folders
           set name = coalesce($3, name),
               parent_id = case when $4 then null else coalesce($5, parent_id) end
           where id = $1 and account = $2 and chain_id = $6 and deleted_at is null
           returning id, name, parent_id, '/storage/shared/' || access_token as "share_link!", cid, created_at"#,
        id,
        user.address.as_slice(),
        name,
        change.to_root,
        change.parent_id,
        state.chain_id() as i64
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(conflict_on_duplicate)?;
    super::directories::changed(&mut tx, &[old_parent, folder.parent_id]).await?;
    tx.commit().await?;
    super::directories::wake(&state).await;
    Ok(Json(folder))
}

/// Deletes a folder; a non-empty one only with `recursive=true`, which deletes (and unpins) all
/// it holds.
#[utoipa::path(delete, path = "/storage/folder/{id}", tag = "storage", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The folder"), DeleteQuery),
    responses((status = 204, description = "Deleted"),
        crate::http::openapi::Forbidden,
        crate::http::openapi::NotFound,
        (status = 409, description = "Not empty (ask recursively)")))]
pub async fn delete(
    State(state): State<StorageState>,
    user: AuthUser,
    Path(id): Path<i64>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    require_paid(&state, &user).await?;
    let mut tx = super::account::locked(&state, user.address).await?;
    owned_folder(&mut tx, &state, &user, id).await?;
    let subtree = sqlx::query_scalar!(
        r#"with recursive down as (
               select id from storage_folders where id = $1 and deleted_at is null
               union
               select f.id from storage_folders f join down on f.parent_id = down.id
               where f.deleted_at is null
           )
           select id as "id!" from down"#,
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    let held = sqlx::query_scalar!(
        r#"select count(*) as "n!" from storage_files where folder_id = any($1) and deleted_at is null"#,
        &subtree
    )
    .fetch_one(&mut *tx)
    .await?;
    if (subtree.len() > 1 || held > 0) && !q.recursive {
        return Err(ApiError::Conflict(format!(
            "folder {id} is not empty; delete it with recursive=true to delete what it holds"
        )));
    }
    let cids = sqlx::query_scalar!(
        "update storage_files set deleted_at = now() where folder_id = any($1) and deleted_at is null
         returning content_id",
        &subtree
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!("update storage_folders set deleted_at = now() where id = any($1)", &subtree)
        .execute(&mut *tx)
        .await?;
    let parent = sqlx::query_scalar!("select parent_id from storage_folders where id = $1", id)
        .fetch_one(&mut *tx)
        .await?;
    super::directories::changed(&mut tx, &[parent]).await?;
    tx.commit().await?;
    super::directories::wake(&state).await;
    super::account::release(&state, &cids).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves one of the caller's files into a folder (or the root).
#[utoipa::path(patch, path = "/storage/folder/files/{id}", tag = "storage", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The file")), request_body = FileMove,
    responses((status = 204, description = "Moved"),
        crate::http::openapi::Forbidden,
        crate::http::openapi::NotFound))]
pub async fn move_file(
    State(state): State<StorageState>,
    user: AuthUser,
    Path(id): Path<i64>,
    Json(request): Json<FileMove>,
) -> ApiResult<StatusCode> {
    require_paid(&state, &user).await?;
    let folder_id = request.folder_id.ok_or_else(|| {
        ApiError::BadRequest("send folder_id: a folder, or null for the root".into())
    })?;
    let mut tx = super::account::locked(&state, user.address).await?;
    if let Some(folder) = folder_id {
        owned_folder(&mut tx, &state, &user, folder).await?;
    }
    // The folder it leaves, read in the same statement that moves it.
    let left = sqlx::query_scalar!(
        "update storage_files f set folder_id = $4
         from storage_files old
         where f.id = $1 and f.chain_id = $2 and f.account = $3 and f.deleted_at is null
           and old.id = f.id
         returning old.folder_id",
        id,
        state.chain_id() as i64,
        user.address.as_slice(),
        folder_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no file {id} of yours")))?;
    super::directories::changed(&mut tx, &[left, folder_id]).await?;
    tx.commit().await?;
    super::directories::wake(&state).await;
    Ok(StatusCode::NO_CONTENT)
}
