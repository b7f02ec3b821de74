//! The deploy job's GitHub side: fetching a deployment's commit with the linked account's token,
//! deciding whether a pushed commit may replace the one the site serves, and reporting each
//! build on its commit as a commit status.

use std::path::Path;

use decentraspace_clients::github::{CommitStatus, Comparison, StatusState};
use futures::TryStreamExt;
use secrecy::SecretString;

use super::{Failure, Job, Switch, internal, log, write_bounded};
use crate::hosting::HostingState;

/// The linked account's login and token for the deployment.
async fn linked_token(state: &HostingState, job: &Job) -> Result<(String, SecretString), Failure> {
    let link = job
        .github_account_id
        .ok_or_else(|| Failure("the deployment names no linked GitHub account".into()))?;
    let row = sqlx::query!(
        "select account, github_id, login, token_sealed, unlinked_at is not null as \"unlinked!\"
         from github_accounts where id = $1 and chain_id = $2",
        link,
        state.chain_id() as i64
    )
    .fetch_one(&state.db)
    .await
    .map_err(internal)?;
    if row.unlinked {
        return Err(Failure(format!("the GitHub account {} was unlinked", row.login)));
    }
    let account = alloy::primitives::Address::try_from(row.account.as_slice()).map_err(internal)?;
    let token = state.sealer.open(&row.token_sealed, account, row.github_id).map_err(internal)?;
    Ok((row.login, token))
}

/// Streams the repository's tarball at the deployment's commit from GitHub into `to`, with the
/// linked account's token, within the archive size limit. A push deploys exactly its commit;
/// the owner's deployment, the branch's head as it is when the job runs.
pub(super) async fn fetch(state: &HostingState, job: &Job, to: &Path) -> Result<(), Failure> {
    let github = state.github.as_ref().ok_or_else(|| Failure("GitHub is not configured".into()))?;
    let named = if job.pushed {
        job.commit_sha.as_ref()
    } else {
        job.git_ref.as_ref().or(job.commit_sha.as_ref())
    };
    let (Some(repo), Some(named)) = (&job.repository, named) else {
        return Err(Failure("the deployment names no repository and commit".into()));
    };
    let (login, token) = linked_token(state, job).await?;
    let sha = github.commit(&token, repo, named).await.map_err(|e| Failure(e.to_string()))?;
    if job.pushed && !sha.eq_ignore_ascii_case(named) {
        return Err(Failure(format!("GitHub has no commit {named} in {repo}")));
    }
    if job.commit_sha.as_deref() != Some(sha.as_str()) {
        sqlx::query!("update deployments set commit_sha = $2 where id = $1", job.id, sha)
            .execute(&state.db)
            .await
            .map_err(internal)?;
    }
    // Reported once the commit is known: an owner's deployment of a branch takes its head now.
    report(state, job, Report::Started).await;
    log(state, job.id, &format!("fetching {repo} {named} at {sha} as {login}")).await;
    let stream = github.tarball(&token, repo, &sha).await.map_err(|e| Failure(e.to_string()))?;
    write_bounded(state, stream.map_err(|e| Failure(e.to_string())), to).await
}

/// Whether the deployment, once live, becomes the site's current one. A preview's never does
/// (its preview serves it); anything else but a push does. A push does unless the site serves a commit of the same repository that GitHub says
/// the pushed one is behind (an older push delivered late, or replayed): then the deployment
/// stays in the history, live but not served.
pub(super) async fn switch(state: &HostingState, job: &Job) -> Result<Switch, Failure> {
    if let Some(label) = &job.preview {
        return Ok(Switch::Preview(label.clone()));
    }
    let current = sqlx::query!(
        r#"select s.current_deployment_id, d.source as "source?", d.repository, d.commit_sha
           from sites s left join deployments d on d.id = s.current_deployment_id
           where s.id = $1"#,
        job.site_id
    )
    .fetch_one(&state.db)
    .await
    .map_err(internal)?;
    let keep_if_unchanged = Switch::IfCurrentIs(current.current_deployment_id);
    let (Some(pushed), Some(repo)) = (job.commit_sha.as_deref(), job.repository.as_deref()) else {
        return Ok(keep_if_unchanged);
    };
    let same_repository = current.source.as_deref() == Some("github")
        && current.repository.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(repo));
    let live = match current.commit_sha.as_deref() {
        Some(live) if job.pushed && same_repository && !live.eq_ignore_ascii_case(pushed) => live,
        _ => return Ok(keep_if_unchanged),
    };
    let github = state.github.as_ref().ok_or_else(|| Failure("GitHub is not configured".into()))?;
    let (_, token) = linked_token(state, job).await?;
    let comparison =
        github.compare(&token, repo, live, pushed).await.map_err(|e| Failure(e.to_string()))?;
    Ok(match comparison {
        Comparison::Behind => Switch::Never(format!(
            "not made current: {pushed} is older than the live commit {live}"
        )),
        Comparison::Ahead | Comparison::Diverged | Comparison::Identical => keep_if_unchanged,
    })
}

/// What a commit status reports.
#[derive(Debug, Clone, Copy)]
pub(super) enum Report {
    /// The build started.
    Started,
    /// The deployment is live.
    Live,
    /// It failed.
    Failed,
}

/// Reports a GitHub deployment on its commit as a commit status (context `decentraspace/<site>`,
/// or `decentraspace/<site>/<preview>`): pending with the deployment's address, success with
/// the site's (or the preview's), failure with the deployment's address. A
/// status GitHub does not take is logged, never fatal.
pub(super) async fn report(state: &HostingState, job: &Job, report: Report) {
    let (Some(github), Some(repo)) = (state.github.as_ref(), job.repository.as_deref()) else {
        return;
    };
    let row = sqlx::query!(
        "select s.name, d.commit_sha from deployments d join sites s on s.id = d.site_id
         where d.id = $1",
        job.id
    )
    .fetch_one(&state.db)
    .await;
    let (site, sha) = match row {
        Ok(row) => match row.commit_sha {
            Some(sha) => (row.name, sha),
            None => return,
        },
        Err(err) => {
            tracing::warn!(target: "api::deploy", deployment = job.id, %err, "cannot read the deployment to report");
            return;
        }
    };
    let Ok((_, token)) = linked_token(state, job).await else { return };
    let (context, host) = match &job.preview {
        Some(label) => (format!("decentraspace/{site}/{label}"), format!("{label}--{site}")),
        None => (format!("decentraspace/{site}"), site.clone()),
    };
    let deployment_url =
        format!("{}/hosting/deploy/{}", state.config.public_api_url.trim_end_matches('/'), job.id);
    let status = match report {
        Report::Started => CommitStatus {
            state: StatusState::Pending,
            target_url: Some(deployment_url),
            description: "Building and deploying".into(),
            context,
        },
        Report::Live => CommitStatus {
            state: StatusState::Success,
            target_url: Some(crate::hosting::site_url(state, &host)),
            description: if job.preview.is_some() { "Preview live" } else { "Deployed" }.into(),
            context,
        },
        // The reason stays in the deployment's log, for its owner: a commit status is public
        // on a public repository, and the reason may speak of the owner's credit.
        Report::Failed => CommitStatus {
            state: StatusState::Failure,
            target_url: Some(deployment_url),
            description: "The deployment failed: its log says why".into(),
            context,
        },
    };
    if let Err(err) = github.set_status(&token, repo, &sha, &status).await {
        tracing::warn!(target: "api::deploy", deployment = job.id, %err, "GitHub did not take the commit status");
    }
}
