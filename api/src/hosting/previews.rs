//! Previews: builds of a pull request's head commit (`pr-<n>`) or of a branch (its name as a
//! label), apart from production, each served at `<label>--<site>.<sites domain>`. The GitHub
//! webhook opens a preview (or moves it to a new head) and queues its build, and closes it when
//! the pull request closes or the branch is deleted. A preview serves the newest live build of
//! its head commit: a build of an older head that ends late is never served. A pull request from
//! a fork is built with no variables or secrets at all. Production never changes through a
//! preview.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{GitHubTrigger, HostingState, queue_github_deployment, sites};
use crate::http::{auth::AuthUser, error::ApiResult};

/// The longest DNS label (`<label>--<site>` is one).
const MAX_DNS_LABEL: usize = 63;

/// The label of a pull request's preview.
pub(crate) fn pull_request_label(number: i32) -> String {
    format!("pr-{number}")
}

/// The label of a branch's preview on `site`: the branch's name in lowercase letters, digits and
/// single inner hyphens, cut so that `<label>--<site>` stays one DNS label; a name that would
/// read as a pull request's label (`pr-7`) starts with `branch-`. `None` when nothing is left.
pub(crate) fn branch_label(branch: &str, site: &str) -> Option<String> {
    let mut slug = String::new();
    for c in branch.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let room = MAX_DNS_LABEL.checked_sub(site.len() + 2)?;
    let cut = |mut slug: String| {
        slug.truncate(room);
        slug.trim_end_matches('-').to_owned()
    };
    let looks_like_pr = |s: &str| {
        s.strip_prefix("pr-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    // Checked once cut too: cutting must not make a pull request's label.
    let mut slug = cut(slug);
    if looks_like_pr(&slug) {
        slug = cut(format!("branch-{slug}"));
    }
    (!slug.is_empty() && !looks_like_pr(&slug)).then_some(slug)
}

/// A preview to open or move to a new head.
#[derive(Debug)]
pub(crate) struct Opened<'a> {
    pub site_id: i64,
    pub label: &'a str,
    pub pull_request: Option<i32>,
    pub branch: Option<&'a str>,
    pub repository: &'a str,
    pub head: &'a str,
    pub from_fork: bool,
    pub github_account_id: i64,
    /// When the event that opens or moves it happened (GitHub's time).
    pub event_at: DateTime<Utc>,
}

/// Opens the preview (or moves it to `head`, or opens it again after it was closed) and queues
/// the build of `head`, in the caller's transaction: the deployment's id, or `None` when an
/// event newer than this one already moved or closed it (a delivery that arrived late).
pub(crate) async fn open(tx: &mut PgConnection, preview: &Opened<'_>) -> sqlx::Result<Option<i64>> {
    let moved = sqlx::query!(
        "insert into site_previews (site_id, label, pull_request, branch, head_sha, from_fork,
                                    event_at)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (site_id, label) do update
           set head_sha = excluded.head_sha, from_fork = excluded.from_fork,
               event_at = excluded.event_at, closed_at = null, updated_at = now()
           where site_previews.event_at <= excluded.event_at",
        preview.site_id,
        preview.label,
        preview.pull_request,
        preview.branch,
        preview.head,
        preview.from_fork,
        preview.event_at
    )
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(None);
    }
    let git_ref = match (preview.pull_request, preview.branch) {
        (Some(number), _) => format!("pull/{number}/head"),
        (None, Some(branch)) => branch.to_owned(),
        (None, None) => preview.head.to_owned(),
    };
    queue_github_deployment(
        &mut *tx,
        preview.site_id,
        preview.repository,
        &git_ref,
        preview.head,
        preview.github_account_id,
        GitHubTrigger::Preview { label: preview.label, from_fork: preview.from_fork },
    )
    .await
    .map(Some)
}

/// Closes the preview as of `event_at`: it is served no more (its builds stay in the site's
/// history), unless an event newer than that moved it. Whether one was closed.
pub(crate) async fn close(
    tx: &mut PgConnection,
    site_id: i64,
    label: &str,
    event_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let closed = sqlx::query!(
        "update site_previews set closed_at = now(), event_at = $3, deployment_id = null,
                                  updated_at = now()
         where site_id = $1 and label = $2 and closed_at is null and event_at <= $3",
        site_id,
        label,
        event_at
    )
    .execute(&mut *tx)
    .await?;
    Ok(closed.rows_affected() > 0)
}

/// A preview of a site.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// `pr-<n>` or the branch's label.
    pub label: String,
    /// Where it is served.
    pub url: String,
    /// The pull request it previews.
    pub pull_request: Option<i32>,
    /// The branch it previews.
    pub branch: Option<String>,
    /// The commit it previews.
    pub commit: String,
    /// Whether the pull request comes from a fork (built without variables or secrets).
    pub from_fork: bool,
    /// The deployment it serves; null until a build of its commit is live.
    pub deployment_id: Option<i64>,
    /// The state of its newest build.
    pub latest_state: Option<String>,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

/// The caller's site's open previews, newest first.
#[utoipa::path(get, path = "/hosting/previews/{site}", tag = "hosting", security(("bearer" = [])),
    params(("site" = String, Path, description = "The site's name")),
    responses((status = 200, body = Vec<Preview>),
        crate::http::openapi::NotFound))]
pub(super) async fn list(
    State(state): State<HostingState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Preview>>> {
    let site = sites::owned(&state, user.address, &name).await?;
    let rows = sqlx::query!(
        r#"select p.label, p.pull_request, p.branch, p.head_sha, p.from_fork, p.deployment_id,
                  p.created_at, p.updated_at,
                  (select d.state from deployments d
                   where d.site_id = p.site_id and d.preview = p.label
                   order by d.id desc limit 1) as latest_state
           from site_previews p where p.site_id = $1 and p.closed_at is null
           order by p.updated_at desc, p.label"#,
        site.id
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|p| Preview {
                url: super::site_url(&state, &format!("{}--{}", p.label, site.name)),
                label: p.label,
                pull_request: p.pull_request,
                branch: p.branch,
                commit: p.head_sha,
                from_fork: p.from_fork,
                deployment_id: p.deployment_id,
                latest_state: p.latest_state,
                created_at: p.created_at,
                updated_at: p.updated_at,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_labels_are_dns_labels_apart_from_pull_requests() {
        assert_eq!(branch_label("feature/New_Login", "blog").as_deref(), Some("feature-new-login"));
        assert_eq!(branch_label("--x--y--", "blog").as_deref(), Some("x-y"));
        assert_eq!(branch_label("pr-7", "blog").as_deref(), Some("branch-pr-7"));
        assert_eq!(branch_label("pr-next", "blog").as_deref(), Some("pr-next"));
        assert_eq!(branch_label("///", "blog"), None);
        let long = branch_label(&"a".repeat(100), "blog").expect("cut");
        assert_eq!(long.len() + "--blog".len(), MAX_DNS_LABEL);
        assert_eq!(branch_label("main", &"s".repeat(61)), None);
        // Cut to fit, a branch name still never reads as a pull request's label.
        let site = "s".repeat(55);
        assert_eq!(branch_label("pr-123x", &site).as_deref(), Some("branch"), "not `pr-123`");
        assert_eq!(branch_label("pr-12-more", "blog").as_deref(), Some("pr-12-more"));
    }
}
