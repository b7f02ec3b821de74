//! Site hosting: sites (each a hosting service on-chain), their deployments from an uploaded
//! archive (or GitHub), the deploy job that unpacks a source and adds it to IPFS as a directory,
//! dynamic sites run from a container image on the runtime (`runtime`), and the site analytics
//! the gateway feeds. The gateway itself is its own feature (`gateway`). See
//! `docs/adr/0007-hosting.md`.

pub mod analytics;
mod build;
mod deploy;
pub mod env;
mod job;
mod log;
mod names;
pub mod previews;
pub mod routing;
pub mod runtime;
pub mod settings;
pub(crate) mod sites;
pub mod status;
pub mod traffic;
pub mod unpack;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use chrono::{DateTime, Utc};
use decentraspace_clients::{github::GitHub, ipfs::Ipfs};
use runtime::Runtime;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::auth::Auth,
    platform::{Platform, feature_state},
    seal::Sealer,
};

pub use build::Builder;
pub use deploy::{load as load_deployment, load_in as load_deployment_in};

/// What hosting uses: the platform, the IPFS node sites are published to, the runtime dynamic sites
/// run on, and GitHub (with the sealer of linked accounts' tokens) to fetch sources.
#[derive(Debug, Clone)]
pub struct HostingState {
    /// The shared state.
    pub platform: Platform,
    /// The IPFS node; unset without `IPFS_API_URL`.
    pub ipfs: Option<Ipfs>,
    /// The machine runtime dynamic sites run on, when configured.
    pub runtime: Option<Arc<dyn Runtime>>,
    /// GitHub; unset without a client id and secret.
    pub github: Option<Arc<dyn GitHub>>,
    /// Opens linked accounts' tokens.
    pub sealer: Sealer,
    /// Builds sources that need it, in the sandbox.
    pub builder: Builder,
    /// Ids of deployments whose log or state changed, for this replica's log streams.
    pub log_notices: tokio::sync::broadcast::Sender<i64>,
    /// Wakes this replica's deploy worker when a deployment is queued (by NOTIFY).
    pub deploy_wake: Arc<tokio::sync::Notify>,
    /// The deployments this replica's worker holds (handed back when it stops: [`hand_back`]).
    pub working: Arc<std::sync::Mutex<std::collections::HashSet<(i64, i32)>>>,
}

pub use job::hand_back;
feature_state!(HostingState);

/// The hosting jobs: the deploy worker, and the reconciler of dynamic sites' machines (with a
/// runtime, every `DYNAMIC_RECONCILE_SECS` unless 0).
pub fn jobs(state: &HostingState) -> Vec<crate::jobs::Job> {
    let every = state.config.dynamic_reconcile_secs;
    let mut jobs = vec![job::worker(state), log::listener(state)];
    jobs.extend(names::job(state));
    jobs.extend(
        (every > 0)
            .then(|| runtime::reconcile::job(state, std::time::Duration::from_secs(every)))
            .flatten(),
    );
    jobs
}

/// The hosting routes that take JSON.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    HostingState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(deploy::history))
        .routes(routes!(deploy::deployment))
        .routes(routes!(deploy::rollback))
        .routes(routes!(log::stream))
        .routes(routes!(status::sites))
        .routes(routes!(status::site))
        .routes(routes!(status::expiry, status::set_expiry))
        .routes(routes!(settings::site_settings, settings::set_site_settings))
        .routes(routes!(env::list))
        .routes(routes!(env::set, env::remove))
        .routes(routes!(previews::list))
        .routes(routes!(analytics::site_analytics))
}

/// The upload route, outside the API's body limit and request timeout (the archive limits bound it).
pub fn streaming_router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    HostingState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(deploy::deploy)).layer(DefaultBodyLimit::disable())
}

/// A deployment of a site.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deployment {
    /// The deployment id.
    pub id: i64,
    /// The site's name.
    pub site: String,
    /// The preview it builds (`pr-<n>` or a branch's label); null for production.
    pub preview: Option<String>,
    /// `upload`, `github` or `image` (a dynamic site).
    pub source: String,
    /// `queued`, `fetching`, `building` (a source that needs a build), `uploading` (static) or
    /// `starting` (dynamic), then `live` or `failed`.
    pub state: String,
    /// Whether the site serves this deployment now.
    pub current: bool,
    /// The repository (GitHub deployments).
    pub repository: Option<String>,
    /// The branch or ref asked for (GitHub deployments).
    pub git_ref: Option<String>,
    /// The commit deployed (GitHub deployments).
    pub commit: Option<String>,
    /// The site's directory on IPFS (CIDv1), once uploaded.
    pub cid: Option<String>,
    /// Files deployed.
    pub files: Option<i32>,
    /// Their bytes.
    pub size: Option<i64>,
    /// The container image (dynamic sites).
    pub image: Option<String>,
    /// The port it serves HTTP on (dynamic sites).
    pub port: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
    /// What the deploy did, line by line, each line starting with its time (RFC 3339, UTC);
    /// `GET /hosting/deploy/{id}/log` streams it as it is written.
    pub log: String,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it went live or failed.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A page of deployments, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentPage {
    /// The deployments.
    pub items: Vec<Deployment>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// What asked for a GitHub deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GitHubTrigger<'a> {
    /// Its owner, through the API: the branch's head when the job runs, made current.
    Owner,
    /// A push delivery: exactly the pushed commit, made current unless it is older than the
    /// commit the site serves.
    Push,
    /// A preview's new head (`previews`): exactly that commit, served by the preview `label`
    /// only; a fork's pull request gets no variables or secrets.
    Preview { label: &'a str, from_fork: bool },
}

/// Queues a deployment of `repository` at `commit` (asked for as `git_ref`) for the deploy job.
pub(crate) async fn queue_github_deployment(
    db: impl sqlx::PgExecutor<'_>,
    site_id: i64,
    repository: &str,
    git_ref: &str,
    commit: &str,
    github_account_id: i64,
    trigger: GitHubTrigger<'_>,
) -> sqlx::Result<i64> {
    let (preview, from_fork) = match trigger {
        GitHubTrigger::Preview { label, from_fork } => (Some(label), from_fork),
        GitHubTrigger::Owner | GitHubTrigger::Push => (None, false),
    };
    sqlx::query_scalar!(
        "insert into deployments (site_id, source, repository, git_ref, commit_sha, github_account_id,
                                  pushed, preview, from_fork)
         values ($1, 'github', $2, $3, $4, $5, $6, $7, $8) returning id",
        site_id,
        repository,
        git_ref,
        commit,
        github_account_id,
        trigger != GitHubTrigger::Owner,
        preview,
        from_fork
    )
    .fetch_one(db)
    .await
}

/// 402 when `account` could not pay for a build now (its month's included build minutes are used
/// up and its balance is short of a build that runs to the time limit).
pub(crate) async fn check_build_minutes(
    state: &Platform,
    account: alloy::primitives::Address,
) -> crate::http::error::ApiResult<()> {
    Ok(build::minutes::check(state, account).await?)
}

/// Adds a line to a deployment's log.
pub(crate) async fn note(db: &sqlx::PgPool, deployment: i64, line: &str) {
    log::append(db, deployment, &log::stamped(line)).await;
}

/// The public address of a site.
pub fn site_url(state: &HostingState, name: &str) -> String {
    state.config.site_url_template.replace("{site}", name)
}
