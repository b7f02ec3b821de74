//! Notices for an account: written once per subject (a job that runs again does not repeat
//! one), published as a platform SSE event to its connected clients, and listed by
//! `GET /notices`.

use alloy::primitives::Address;
use axum::{
    Json,
    extract::{FromRef, Query, State},
};
use chrono::{DateTime, Utc};
use decentraspace_db::channels;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::{
        auth::{Auth, AuthUser},
        error::{ApiError, ApiResult},
        pagination::PageQuery,
    },
    platform::Platform,
};

/// A platform notice about one account.
#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlatformNotice {
    /// The chain.
    pub chain_id: u64,
    /// The SSE event name (`services_suspended`).
    pub event: String,
    /// The account it is about (checksummed).
    pub account: String,
    /// The details.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl PlatformNotice {
    /// Sends the notice to every replica's stream (NOTIFY is delivered at commit, so a notice sent
    /// inside a transaction that rolls back is never seen).
    pub async fn publish(&self, db: &PgPool) -> anyhow::Result<()> {
        sqlx::query("select pg_notify($1, $2)")
            .bind(channels::PLATFORM)
            .bind(serde_json::to_string(self)?)
            .execute(db)
            .await?;
        Ok(())
    }
}

/// The notice routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(list))
}

/// A notice.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notice {
    /// Its id.
    pub id: i64,
    /// What it is: `domain_expiring`, `domain_proof_missing`, `domain_unlinked`,
    /// `database_over_quota`, `database_locked`, `domain_renewed`, `domain_renewal_unpaid`.
    pub kind: String,
    /// Its details.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A page of notices, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoticePage {
    /// The notices.
    pub items: Vec<Notice>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Posts a notice about `dedupe` to `account`, unless one of this kind was posted about it
/// already: written, then published to the account's live streams. Answers whether it is new.
pub async fn post(
    state: &Platform,
    account: Address,
    kind: &str,
    dedupe: &str,
    data: serde_json::Value,
) -> anyhow::Result<bool> {
    let inserted = sqlx::query!(
        "insert into notices (chain_id, account, kind, dedupe, data) values ($1, $2, $3, $4, $5)
         on conflict (chain_id, account, kind, dedupe) do nothing",
        state.chain_id() as i64,
        account.as_slice(),
        kind,
        dedupe,
        data
    )
    .execute(&state.db)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    let notice = PlatformNotice {
        chain_id: state.chain_id(),
        event: kind.into(),
        account: account.to_string(),
        data,
    };
    notice.publish(&state.db).await?;
    Ok(true)
}

/// The caller's notices, newest first.
#[utoipa::path(get, path = "/notices", tag = "notices", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = NoticePage)))]
pub async fn list(
    State(state): State<Platform>,
    user: AuthUser,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<NoticePage>> {
    let limit = page.limit()?;
    let before = match page.cursor.as_deref() {
        None => i64::MAX,
        Some(c) => c
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest("cursor: use the next_cursor of a page".into()))?,
    };
    let mut items = sqlx::query_as!(
        Notice,
        "select id, kind, data, created_at from notices
         where chain_id = $1 and account = $2 and id < $3
         order by id desc limit $4",
        state.chain_id() as i64,
        user.address.as_slice(),
        before,
        limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|n| n.id.to_string())
    } else {
        None
    };
    Ok(Json(NoticePage { items, next_cursor }))
}
