//! Each linked site's webhook: created on its repository through GitHub's API, with a secret of
//! the site's own, when a repository is linked to the site; replaced when the site moves to
//! another repository; deleted when the site's GitHub account is unlinked. Deliveries name their
//! webhook (`X-GitHub-Hook-ID`), which picks the secret they are checked against.

use decentraspace_clients::github::GitHub;
use decentraspace_db::locks::{Lock, lock_in};
use secrecy::SecretString;

use super::GitHubState;

/// The events a site's webhook delivers.
const EVENTS: &[&str] = &["push", "pull_request"];

/// The associated data a site's webhook secret is sealed with.
pub(super) fn seal_context(site_id: i64) -> Vec<u8> {
    format!("site-webhook:{site_id}").into_bytes()
}

/// Where GitHub delivers.
fn delivery_url(state: &GitHubState) -> String {
    format!("{}/github/webhook", state.config.public_api_url.trim_end_matches('/'))
}

/// Gives the site a webhook on `repo`, created with `token`, unless it has one there: an earlier
/// one on another repository is deleted first. What GitHub refused is kept on the site
/// (`hook_error`) and returned, for the deployment's log: the deployment itself goes on.
pub(super) async fn ensure(
    state: &GitHubState,
    github: &dyn GitHub,
    token: &SecretString,
    site_id: i64,
    repo: &str,
) -> anyhow::Result<Result<(), String>> {
    let repo = repo.to_ascii_lowercase();
    // One site's webhook is made by one request at a time, so two cannot make two; an advisory
    // lock, not the row's, so the deploy job's writes to the site never wait for GitHub.
    let mut tx = state.db.begin().await?;
    lock_in(&mut tx, Lock::SiteWebhook { site_id }).await?;
    let site = sqlx::query!("select hook_id, hook_repository from sites where id = $1", site_id)
        .fetch_one(&mut *tx)
        .await?;
    if site.hook_id.is_some() && site.hook_repository.as_deref() == Some(repo.as_str()) {
        return Ok(Ok(()));
    }
    if let (Some(old), Some(old_repo)) = (site.hook_id, site.hook_repository.as_deref())
        && let Err(err) = github.delete_hook(token, old_repo, old).await
    {
        // Its deliveries fail their signature check from now on: harmless, and said.
        tracing::warn!(target: "api::github", site = site_id, hook = old, %err, "cannot delete the old webhook");
    }
    let secret = SecretString::from(hex::encode(rand::random::<[u8; 32]>()));
    let created = github.create_hook(token, &repo, &delivery_url(state), &secret, EVENTS).await;
    let outcome = match created {
        Ok(hook) => {
            let sealed = state.sealer.seal_for(&secret, &seal_context(site_id));
            sqlx::query!(
                "update sites set hook_id = $2, hook_repository = $3, hook_secret_sealed = $4,
                                  hook_error = null
                 where id = $1",
                site_id,
                hook,
                repo,
                sealed
            )
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        Err(err) => {
            let reason = format!(
                "no webhook on {repo}, so pushes and pull requests will not deploy: {err} \
                 (creating one needs admin rights on the repository)"
            );
            sqlx::query!(
                "update sites set hook_id = null, hook_repository = null, hook_secret_sealed = null,
                                  hook_error = $2
                 where id = $1",
                site_id,
                reason
            )
            .execute(&mut *tx)
            .await?;
            Err(reason)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Deletes the webhooks of the sites that deploy with the linked account `link` (before its
/// token is forgotten). A webhook GitHub would not delete is forgotten anyway: its deliveries
/// then fail their signature check.
pub(super) async fn remove_for_link(
    state: &GitHubState,
    github: &dyn GitHub,
    token: &SecretString,
    link: i64,
) -> anyhow::Result<()> {
    let hooks = sqlx::query!(
        r#"select id, hook_id as "hook_id!", hook_repository as "repo!" from sites
           where github_account_id = $1 and hook_id is not null and hook_repository is not null"#,
        link
    )
    .fetch_all(&state.db)
    .await?;
    for site in hooks {
        if let Err(err) = github.delete_hook(token, &site.repo, site.hook_id).await {
            tracing::warn!(target: "api::github", site = site.id, hook = site.hook_id, %err, "cannot delete the webhook");
        }
        sqlx::query!(
            "update sites set hook_id = null, hook_repository = null, hook_secret_sealed = null
             where id = $1 and hook_id = $2",
            site.id,
            site.hook_id
        )
        .execute(&state.db)
        .await?;
    }
    Ok(())
}
