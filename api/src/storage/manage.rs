//! `/storage/manage`: the account's storage service with what it holds, paused and resumed on its
//! own (paused storage takes no uploads and is not charged).

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    chain::TxOutcome,
    http::{auth::AuthUser, error::ApiResult},
    services::change,
    storage::StorageState,
};

/// One of the caller's storage services.
#[derive(Debug, Serialize, ToSchema)]
pub struct StorageService {
    /// The on-chain id.
    pub id: i64,
    /// `active`, `paused`, `suspended` or `cancelled`.
    pub state: String,
    /// Files it holds.
    pub files: i64,
    /// Bytes it holds.
    pub bytes: i64,
}

/// The caller's storage services with what they hold.
#[utoipa::path(get, path = "/storage/manage", tag = "storage", security(("bearer" = [])),
    responses((status = 200, body = Vec<StorageService>)))]
pub async fn show(
    State(state): State<StorageState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<StorageService>>> {
    let services = sqlx::query_as!(
        StorageService,
        r#"select s.service_id as id, s.state,
                  count(f.id) as "files!", coalesce(sum(f.size_bytes), 0)::bigint as "bytes!"
           from services s
           left join storage_files f on f.chain_id = s.chain_id and f.service_id = s.service_id
                                    and f.deleted_at is null
           where s.chain_id = $1 and s.owner = $2 and s.kind = 'storage'
           group by s.service_id, s.state
           order by s.service_id"#,
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(services))
}

/// Pauses one of the caller's storage services on-chain.
#[utoipa::path(post, path = "/storage/manage/{id}/pause", tag = "storage", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The storage service")),
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::NotFound,
        (status = 409, description = "Not active")))]
pub async fn pause(
    State(state): State<StorageState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<TxOutcome> {
    change(&state, &user, id, Some("storage"), false).await
}

/// Resumes one of the caller's storage services on-chain (needs an hour of credit).
#[utoipa::path(post, path = "/storage/manage/{id}/resume", tag = "storage", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The storage service")),
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        (status = 402, description = "Not enough credit for one hour"),
        crate::http::openapi::NotFound,
        crate::http::openapi::Conflict))]
pub async fn resume(
    State(state): State<StorageState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<TxOutcome> {
    change(&state, &user, id, Some("storage"), true).await
}
