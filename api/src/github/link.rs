//! `/github/link`: link GitHub accounts through GitHub's OAuth web flow, list them and their
//! repositories; `/github/unlink`: unlink one.
//!
//! The flow: `POST /github/link` answers the authorize URL with a signed state bound to the
//! caller; GitHub sends the browser back to the frontend with `code` and `state`, which the
//! frontend posts to `POST /github/link/callback` with the caller's token. Requiring both the
//! caller's token and a state made for the caller means nobody can link their GitHub account
//! into someone else's platform account. A GitHub identity linked elsewhere moves to the caller
//! (they proved control of it just now); the other account's sites stop deploying from it.
//!
//! A tier includes some links (Free 1, Paid 3); each further one costs
//! `GITHUB_EXTRA_LINK_CREDITS`, deducted on-chain when the link completes (`charge`).

use alloy::primitives::Address;
use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use decentraspace_abi::Tier;
use decentraspace_db::locks::{Lock, lock_in};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{github, github_error};
use crate::{
    accounts::tier::effective_tier,
    github::GitHubState,
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
};

/// Linked accounts a tier includes.
fn link_limit(tier: Tier) -> i64 {
    match tier {
        Tier::Paid => 3,
        Tier::Free => 1,
    }
}

/// A linked GitHub account.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkedAccount {
    /// The link's id.
    pub id: i64,
    /// GitHub's user id.
    pub github_id: i64,
    /// The GitHub login.
    pub login: String,
    /// When it was linked.
    pub linked_at: DateTime<Utc>,
    /// Sites deploying from it.
    pub sites: Vec<String>,
    /// What it was charged in credit units, when it was past the tier's included links.
    pub charged_credits: Option<i64>,
}

/// Where to send the user to authorize the platform.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkStart {
    /// GitHub's authorize page, carrying `state`.
    pub authorize_url: String,
    /// The state GitHub sends back; post it with the code to `/github/link/callback`.
    pub state: String,
    /// When the state stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// What completing this link costs, in credit units, when it is past the tier's included
    /// links (charged on-chain by the callback).
    pub cost_credits: Option<u64>,
}

/// What GitHub sent the browser back with.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LinkCallback {
    /// The authorization code.
    pub code: String,
    /// The state from `POST /github/link`.
    pub state: String,
}

/// Which link to remove.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Unlink {
    /// The link's id.
    pub id: i64,
}

async fn linked_count(
    conn: &mut sqlx::PgConnection,
    state: &GitHubState,
    account: Address,
) -> ApiResult<i64> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "n!" from github_accounts
           where chain_id = $1 and account = $2 and unlinked_at is null"#,
        state.chain_id() as i64,
        account.as_slice()
    )
    .fetch_one(conn)
    .await?)
}

fn over_limit(tier: Tier) -> ApiError {
    ApiError::Forbidden(format!(
        "the {tier} tier links up to {} GitHub accounts: unlink one{}",
        link_limit(tier),
        match tier {
            Tier::Paid => "",
            Tier::Free => ", or upgrade to link up to 3",
        }
    ))
}

/// What one more link costs the caller, who has `count` links: `None` while the tier includes
/// it; 403 when further links are not offered.
fn extra_cost(state: &GitHubState, tier: Tier, count: i64) -> ApiResult<Option<u64>> {
    if count < link_limit(tier) {
        return Ok(None);
    }
    match state.config.github_extra_link_credits {
        0 => Err(over_limit(tier)),
        units => Ok(Some(units)),
    }
}

/// The caller's linked GitHub accounts.
#[utoipa::path(get, path = "/github/link", tag = "github", security(("bearer" = [])),
    responses((status = 200, body = Vec<LinkedAccount>)))]
pub(super) async fn list(
    State(state): State<GitHubState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<LinkedAccount>>> {
    let rows = sqlx::query!(
        r#"select g.id, g.github_id, g.login, g.linked_at, g.charged_credits,
                  coalesce(array_agg(s.name order by s.name) filter (where s.name is not null), '{}') as "sites!"
           from github_accounts g
           left join sites s on s.github_account_id = g.id
           where g.chain_id = $1 and g.account = $2 and g.unlinked_at is null
           group by g.id order by g.id"#,
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| LinkedAccount {
                id: r.id,
                github_id: r.github_id,
                login: r.login,
                linked_at: r.linked_at,
                sites: r.sites,
                charged_credits: r.charged_credits,
            })
            .collect(),
    ))
}

/// Starts linking a GitHub account: the authorize URL to send the user to.
#[utoipa::path(post, path = "/github/link", tag = "github", security(("bearer" = [])),
    responses((status = 200, body = LinkStart),
        (status = 402, description = "Too little credit for a link past the tier's included ones"),
        (status = 403, description = "The tier links no more accounts"),
        (status = 503, description = "GitHub is not configured")))]
pub(super) async fn start(
    State(state): State<GitHubState>,
    user: AuthUser,
) -> ApiResult<Json<LinkStart>> {
    let github = github(&state)?;
    let tier = effective_tier(&state, user.address).await?;
    let count = linked_count(&mut *state.db.acquire().await?, &state, user.address).await?;
    let cost = extra_cost(&state, tier, count)?;
    if let Some(units) = cost {
        crate::billing::available::require(
            &state,
            user.address,
            alloy::primitives::U256::from(units),
            alloy::primitives::U256::ZERO,
            &format!("another GitHub link (your tier includes {})", link_limit(tier)),
        )
        .await?;
    }
    let now = Utc::now();
    let link_state = state.sealer.state(user.address, now.timestamp());
    Ok(Json(LinkStart {
        authorize_url: github.authorize_url(&link_state),
        state: link_state,
        expires_at: now + chrono::Duration::seconds(crate::seal::STATE_TTL_SECS),
        cost_credits: cost,
    }))
}

/// Finishes linking: exchanges GitHub's code and records the identity with its token, sealed.
#[utoipa::path(post, path = "/github/link/callback", tag = "github", security(("bearer" = [])),
    request_body = LinkCallback,
    responses((status = 201, body = LinkedAccount),
        (status = 400, description = "A state not made for the caller, or expired"),
        (status = 402, description = "Too little credit for a link past the tier's included ones"),
        crate::http::openapi::Forbidden,
        (status = 422, description = "GitHub refused the code"),
        crate::http::openapi::Unavailable))]
pub(super) async fn callback(
    State(state): State<GitHubState>,
    user: AuthUser,
    Json(body): Json<LinkCallback>,
) -> ApiResult<(axum::http::StatusCode, Json<LinkedAccount>)> {
    let github = github(&state)?;
    if !state.sealer.check_state(&body.state, user.address, Utc::now().timestamp()) {
        return Err(ApiError::BadRequest(
            "the state is not one this account started, or it expired: start again".into(),
        ));
    }
    if body.code.is_empty() || body.code.len() > 256 {
        return Err(ApiError::BadRequest("`code` is GitHub's authorization code".into()));
    }
    let token = github.exchange_code(&body.code).await.map_err(github_error)?;
    let identity = github.user(&token).await.map_err(github_error)?;
    let tier = effective_tier(&state, user.address).await?;
    let chain = state.chain_id() as i64;

    let mut tx = state.db.begin().await?;
    // One link at a time per account (its limit is checked inside)…
    lock_in(&mut tx, Lock::GitHubAccount { account: user.address.as_slice() }).await?;
    // …and per GitHub identity, taken second: two accounts linking it at once go one after the
    // other instead of racing to the unique index.
    lock_in(&mut tx, Lock::GitHubIdentity { chain_id: chain as u64, github_id: identity.id })
        .await?;
    let current = sqlx::query!(
        "select id, account from github_accounts
         where chain_id = $1 and github_id = $2 and unlinked_at is null for update",
        chain,
        identity.id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let relink_here = current.as_ref().is_some_and(|c| c.account == user.address.as_slice());
    let mut charged = None;
    if !relink_here {
        let count = linked_count(&mut tx, &state, user.address).await?;
        if let Some(units) = extra_cost(&state, tier, count)? {
            // Charged inside the link's locks: two callbacks cannot both pass the count.
            super::charge::charge(&state, user.address, units, identity.id, count).await?;
            charged = Some(units as i64);
        }
    }
    if let Some(previous) = &current {
        // Linked here already (a fresh token) or elsewhere (it moves): the old link ends.
        sqlx::query!(
            "update github_accounts set unlinked_at = now(), token_sealed = ''::bytea where id = $1",
            previous.id
        )
            .execute(&mut *tx)
            .await?;
        if !relink_here {
            sqlx::query!(
                "update sites set github_account_id = null where github_account_id = $1",
                previous.id
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    let sealed = state.sealer.seal(&token, user.address, identity.id);
    let id = sqlx::query_scalar!(
        "insert into github_accounts (chain_id, account, github_id, login, token_sealed, charged_credits)
         values ($1, $2, $3, $4, $5, $6) returning id",
        chain,
        user.address.as_slice(),
        identity.id,
        identity.login,
        sealed,
        charged
    )
    .fetch_one(&mut *tx)
    .await?;
    if let Some(previous) = current.filter(|_| relink_here) {
        // The account's sites keep deploying, now with the fresh token.
        sqlx::query!(
            "update sites set github_account_id = $2 where github_account_id = $1",
            previous.id,
            id
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let linked = list(State(state), user).await?.0.into_iter().find(|l| l.id == id);
    let linked = linked.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("link {id} vanished")))?;
    Ok((axum::http::StatusCode::CREATED, Json(linked)))
}

/// The caller's link `id` with its token, or 404.
pub(super) async fn token_of(
    state: &GitHubState,
    account: Address,
    id: i64,
) -> ApiResult<(i64, secrecy::SecretString)> {
    let row = sqlx::query!(
        "select github_id, token_sealed from github_accounts
         where id = $1 and chain_id = $2 and account = $3 and unlinked_at is null",
        id,
        state.chain_id() as i64,
        account.as_slice()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("you have no linked GitHub account {id}")))?;
    let token = state
        .sealer
        .open(&row.token_sealed, account, row.github_id)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("link {id}: {e}")))?;
    Ok((row.github_id, token))
}

/// A repository the user can read.
#[derive(Debug, Serialize, ToSchema)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
    /// The default branch.
    pub default_branch: String,
    /// Whether it is private.
    pub private: bool,
}

/// The repositories a linked account can read.
#[utoipa::path(get, path = "/github/link/{id}/repositories", tag = "github", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The link")),
    responses((status = 200, body = Vec<Repository>),
        crate::http::openapi::NotFound,
        (status = 409, description = "GitHub no longer accepts the token: link again"),
        crate::http::openapi::Unavailable))]
pub(super) async fn repositories(
    State(state): State<GitHubState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Repository>>> {
    let github = github(&state)?;
    let (_, token) = token_of(&state, user.address, id).await?;
    let repositories = github.repositories(&token).await.map_err(github_error)?;
    Ok(Json(
        repositories
            .into_iter()
            .map(|r| Repository {
                full_name: r.full_name,
                default_branch: r.default_branch,
                private: r.private,
            })
            .collect(),
    ))
}

/// Unlinks a GitHub account: its token is forgotten and its sites stop deploying from it.
#[utoipa::path(post, path = "/github/unlink", tag = "github", security(("bearer" = [])),
    request_body = Unlink,
    responses((status = 204, description = "Unlinked"),
        crate::http::openapi::NotFound))]
pub(super) async fn unlink(
    State(state): State<GitHubState>,
    user: AuthUser,
    Json(body): Json<Unlink>,
) -> ApiResult<axum::http::StatusCode> {
    // The webhooks its sites deploy through go first, while the token still opens.
    if let Some(github) = state.github.as_deref()
        && let Ok((_, token)) = token_of(&state, user.address, body.id).await
    {
        super::hooks::remove_for_link(&state, github, &token, body.id)
            .await
            .map_err(ApiError::Internal)?;
    }
    let mut tx = state.db.begin().await?;
    // The sealed token goes too: an unlinked account's token is never used again.
    let unlinked = sqlx::query!(
        "update github_accounts set unlinked_at = now(), token_sealed = ''::bytea
         where id = $1 and chain_id = $2 and account = $3 and unlinked_at is null",
        body.id,
        state.chain_id() as i64,
        user.address.as_slice()
    )
    .execute(&mut *tx)
    .await?;
    if unlinked.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("you have no linked GitHub account {}", body.id)));
    }
    sqlx::query!("update sites set github_account_id = null where github_account_id = $1", body.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
