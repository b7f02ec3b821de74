//! `/auth/tokens`: API tokens for CI jobs and the CLI, made by a signed-in wallet. A token has a
//! name, scopes (`read`, `deploy`, `storage`, `billing-read`) and an expiry; it is shown once,
//! stored as its SHA-256 digest only, listed without its secret, and revocable. It authenticates
//! as its wallet (`http::auth`), spends the same rate budget as a session, and is taken only for
//! the routes its scopes cover: never for admin routes, and never to manage tokens (only a
//! session made by signing in with the wallet does that).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Duration, Utc};
use decentraspace_db::locks::{Lock, lock_in};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::AccountsState;
use crate::http::{
    auth::{API_TOKEN_PREFIX, AuthUser, Scope, Via},
    error::{ApiError, ApiResult},
};

/// The longest a token may live, in days.
const MAX_DAYS: u32 = 365;
/// How long a token lives unless asked otherwise, in days.
const DEFAULT_DAYS: u32 = 90;
/// Live tokens one wallet may hold.
const MAX_LIVE: i64 = 50;
/// The longest name.
const MAX_NAME: usize = 64;

/// A token to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for (1–64 characters), such as `github-actions`.
    pub name: String,
    /// What it may do: one or more of `read`, `deploy`, `storage`, `billing-read`.
    pub scopes: Vec<Scope>,
    /// Days it lives (1–365, default 90).
    pub expires_in_days: Option<u32>,
}

/// A token, as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Its first characters, to tell it apart (`dsk_1a2b3c4d`).
    pub prefix: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just made: the only time its secret is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token: send it as `Authorization: Bearer <token>`. It is not shown again.
    pub token: String,
    /// What is kept of it.
    #[serde(flatten)]
    pub info: TokenInfo,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("CreatedToken").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Tokens are managed from a session only: a leaked token cannot make more of itself.
fn session_only(user: &AuthUser) -> ApiResult<()> {
    match user.via {
        Via::Session => Ok(()),
        Via::ApiToken(_) => Err(ApiError::Forbidden(
            "API tokens are managed by signing in with the wallet, not with an API token".into(),
        )),
    }
}

/// Makes an API token for the caller's wallet: shown once.
#[utoipa::path(post, path = "/auth/tokens", tag = "auth", security(("bearer" = [])),
    request_body = NewToken,
    responses((status = 201, body = CreatedToken),
        (status = 400, description = "No scope, an unknown one, a bad name or term"),
        (status = 403, description = "Sent with an API token"),
        (status = 409, description = "The wallet holds 50 live tokens already")))]
pub async fn create(
    State(state): State<AccountsState>,
    user: AuthUser,
    Json(request): Json<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    session_only(&user)?;
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("name is 1 to {MAX_NAME} printable characters")));
    }
    let mut scopes = request.scopes;
    scopes.sort_by_key(|s| s.as_str());
    scopes.dedup();
    if scopes.is_empty() {
        return Err(ApiError::BadRequest(
            "scopes names at least one of read, deploy, storage, billing-read".into(),
        ));
    }
    let days = request.expires_in_days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::BadRequest(format!(
            "expires_in_days is 1 to {MAX_DAYS}, not {days}"
        )));
    }
    let token = format!("{API_TOKEN_PREFIX}{}", hex::encode(crate::random::bytes::<32>()));
    let prefix: String = token.chars().take(API_TOKEN_PREFIX.len() + 8).collect();
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let expires_at = Utc::now() + Duration::days(i64::from(days));
    let names: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    let chain_id = state.chain_id() as i64;
    let mut tx = state.db.begin().await?;
    // One wallet's tokens are counted and made one at a time.
    lock_in(&mut tx, Lock::ApiTokens { account: user.address.as_slice() }).await?;
    let live = sqlx::query_scalar!(
        r#"select count(*) as "live!" from api_tokens
           where chain_id = $1 and account = $2 and revoked_at is null and expires_at > now()"#,
        chain_id,
        user.address.as_slice()
    )
    .fetch_one(&mut *tx)
    .await?;
    if live >= MAX_LIVE {
        return Err(ApiError::Conflict(format!(
            "this wallet holds {MAX_LIVE} live API tokens already: revoke one first"
        )));
    }
    let row = sqlx::query!(
        "insert into api_tokens (chain_id, account, name, scopes, token_hash, prefix, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7)
         returning id, created_at",
        chain_id,
        user.address.as_slice(),
        name,
        &names,
        &digest[..],
        prefix,
        expires_at
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(target: "api::accounts", token = row.id, "API token made");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: TokenInfo {
                id: row.id,
                name,
                scopes,
                prefix,
                created_at: row.created_at,
                expires_at,
                last_used_at: None,
                revoked_at: None,
            },
        }),
    ))
}

/// The caller's API tokens, newest first (revoked and expired ones too), without their secrets.
#[utoipa::path(get, path = "/auth/tokens", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenInfo>),
        (status = 403, description = "Sent with an API token")))]
pub async fn list(
    State(state): State<AccountsState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    session_only(&user)?;
    let rows = sqlx::query!(
        "select id, name, scopes, prefix, created_at, expires_at, last_used_at, revoked_at
         from api_tokens where chain_id = $1 and account = $2 order by id desc",
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| TokenInfo {
                id: row.id,
                name: row.name,
                scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
                prefix: row.prefix,
                created_at: row.created_at,
                expires_at: row.expires_at,
                last_used_at: row.last_used_at,
                revoked_at: row.revoked_at,
            })
            .collect(),
    ))
}

/// Revokes one of the caller's API tokens: it stops working at once (revoking it again is fine).
#[utoipa::path(delete, path = "/auth/tokens/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"),
        (status = 403, description = "Sent with an API token"),
        crate::http::openapi::NotFound))]
pub async fn revoke(
    State(state): State<AccountsState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    session_only(&user)?;
    let found = sqlx::query!(
        "update api_tokens set revoked_at = coalesce(revoked_at, now())
         where id = $1 and chain_id = $2 and account = $3",
        id,
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .execute(&state.db)
    .await?;
    if found.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("no API token {id} of yours")));
    }
    tracing::info!(target: "api::accounts", token = id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
