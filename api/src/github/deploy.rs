//! `/github/deploy`: deploy a site from a linked repository at a branch or commit. The branch
//! becomes the site's production branch: pushes to it deploy again, through the webhook the
//! site gets on the repository (`hooks`).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
};
use decentraspace_clients::github::{valid_ref, valid_repository};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{github, github_error, link::token_of};
use crate::{
    github::GitHubState,
    hosting::{Deployment, GitHubTrigger, queue_github_deployment, sites},
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
};

/// What to deploy.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GitHubDeploy {
    /// The site's name (claimed on its first deployment).
    pub site: String,
    /// The linked GitHub account to fetch with (its id in `GET /github/link`).
    pub github_account_id: i64,
    /// The repository, `owner/name`.
    pub repository: String,
    /// The production branch (default: the repository's default branch).
    pub branch: Option<String>,
    /// A commit to deploy instead of the branch's head.
    pub commit: Option<String>,
    /// The folder to serve (detected when absent).
    pub output_dir: Option<String>,
    /// Whether unknown page paths answer `index.html` (default true).
    pub spa_fallback: Option<bool>,
}

/// Deploys a site from a linked repository; the branch becomes its production branch.
#[utoipa::path(post, path = "/github/deploy", tag = "github", security(("bearer" = [])),
    request_body = GitHubDeploy,
    responses((status = 202, description = "Queued", body = Deployment),
        (status = 402, description = "This month's included build minutes are used up and the balance cannot pay for a build"),
        (status = 403, description = "The tier hosts no more sites"),
        (status = 404, description = "No such link"),
        (status = 409, description = "The name is taken, the site's service is not active, or the token was revoked"),
        (status = 422, description = "GitHub has no such repository or ref for this account"),
        crate::http::openapi::Unavailable))]
pub(super) async fn deploy(
    State(state): State<GitHubState>,
    user: AuthUser,
    Json(body): Json<GitHubDeploy>,
) -> ApiResult<(StatusCode, HeaderMap, Json<Deployment>)> {
    let github = github(&state)?;
    if !valid_repository(&body.repository) {
        return Err(ApiError::BadRequest(format!("{:?} is not `owner/name`", body.repository)));
    }
    for r in [&body.branch, &body.commit].into_iter().flatten() {
        if !valid_ref(r) {
            return Err(ApiError::BadRequest(format!("{r:?} is not a branch or commit")));
        }
    }
    let (_, token) = token_of(&state, user.address, body.github_account_id).await?;
    // The repository may need a build: refused now if the account could not pay for one.
    crate::hosting::check_build_minutes(&state, user.address).await?;
    let branch = match &body.branch {
        Some(branch) => branch.clone(),
        None => {
            let repos = github.repositories(&token).await.map_err(github_error)?;
            repos
                .into_iter()
                .find(|r| r.full_name.eq_ignore_ascii_case(&body.repository))
                .map(|r| r.default_branch)
                .ok_or_else(|| ApiError::Unprocessable {
                    slug: "github-repository-unknown",
                    detail: format!("the linked account cannot read {}", body.repository),
                })?
        }
    };
    let wanted = body.commit.as_deref().unwrap_or(&branch);
    let commit = github.commit(&token, &body.repository, wanted).await.map_err(github_error)?;

    let output_dir =
        body.output_dir.as_deref().map(|d| d.trim().trim_matches('/')).filter(|d| !d.is_empty());
    let site =
        sites::claim(&state, user.address, &body.site, "static", body.spa_fallback, output_dir)
            .await?;
    if let Err(err) = sites::hosting_service(&state, &site).await {
        sites::release_unused(&state, &site).await?;
        return Err(err);
    }
    sqlx::query!(
        "update sites set repository = $2, branch = $3, github_account_id = $4 where id = $1",
        site.id,
        body.repository.to_ascii_lowercase(),
        branch,
        body.github_account_id
    )
    .execute(&state.db)
    .await?;
    // Pushes and pull requests reach the site through a webhook of its own (made before the
    // deployment is queued: a failure here leaves nothing queued to retry twice).
    let hooked = super::hooks::ensure(&state, github, &token, site.id, &body.repository)
        .await
        .map_err(ApiError::Internal)?;
    // Queued and read back in one transaction: the answer says `queued`, not whatever a worker
    // woken by the commit has made of it meanwhile.
    let mut tx = state.db.begin().await?;
    let id = queue_github_deployment(
        &mut *tx,
        site.id,
        &body.repository,
        wanted,
        &commit,
        body.github_account_id,
        GitHubTrigger::Owner,
    )
    .await?;
    let deployment = crate::hosting::load_deployment_in(&mut tx, id).await?;
    tx.commit().await?;
    if let Err(reason) = hooked {
        crate::hosting::note(&state.db, id, &reason).await;
    }
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/hosting/deploy/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, headers, Json(deployment)))
}
