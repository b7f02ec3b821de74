//! `POST /github/webhook`: GitHub's deliveries (`push`, `pull_request`, `ping`). A delivery names
//! its webhook (`X-GitHub-Hook-ID`): a site's own webhook (created when its repository was linked,
//! `hooks`) is checked against that site's secret and acts on that site only; any other against
//! the platform-wide secret, if one is configured, acting on every site of the repository. The
//! `X-Hub-Signature-256` HMAC of the raw body is checked in constant time; each webhook's
//! `X-GitHub-Delivery` is acted on once (a redelivery is answered, not acted on).
//!
//! A push to a site's production branch queues a deployment of exactly the pushed commit
//! (`after`, covered by the signature), which the deploy job makes current only if it is not
//! older than the commit the site serves; a push to another branch builds that branch's preview
//! when the site enables branch previews, and deleting the branch closes it. A pull request
//! opened, reopened or pushed to builds its head into the preview `pr-<n>`; closing it closes
//! the preview. The delivery and what it queued are recorded in one transaction, so a crash
//! either loses both (GitHub redelivers) or keeps both.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::{
    github::GitHubState,
    hosting::{GitHubTrigger, previews, queue_github_deployment},
    http::error::{ApiError, ApiResult},
};

/// What the webhook did with a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOutcome {
    /// GitHub's delivery id.
    pub delivery: String,
    /// Whether it was seen before (and so not acted on again).
    pub duplicate: bool,
    /// Deployments queued.
    pub deployments: i32,
    /// Previews closed.
    pub previews_closed: i32,
}

#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: NamedRepository,
}

#[derive(Debug, Deserialize)]
struct NamedRepository {
    full_name: String,
}

#[derive(Debug, Deserialize)]
struct PullRequestEvent {
    action: String,
    number: i32,
    pull_request: PullRequest,
    repository: NamedRepository,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    head: PullRequestHead,
    /// When the pull request last changed (orders its deliveries).
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct PullRequestHead {
    sha: String,
    /// Null when the fork was deleted.
    repo: Option<NamedRepository>,
}

/// Whose delivery it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// A site's own webhook: it acts on that site only.
    Site { hook_id: i64, site_id: i64 },
    /// The platform-wide webhook set up by hand: every site of the repository.
    Platform,
}

impl Hook {
    fn id(self) -> i64 {
        match self {
            Self::Site { hook_id, .. } => hook_id,
            Self::Platform => 0,
        }
    }

    fn site(self) -> Option<i64> {
        match self {
            Self::Site { site_id, .. } => Some(site_id),
            Self::Platform => None,
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
fn signed(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_tag) = signature.strip_prefix("sha256=") else { return false };
    let Ok(tag) = hex::decode(hex_tag) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// The webhook that signed the delivery: the site's whose webhook it names, else the
/// platform-wide one; 401 when the signature is not that webhook's.
async fn verify(state: &GitHubState, headers: &HeaderMap, body: &[u8]) -> ApiResult<Hook> {
    let signature = header(headers, "x-hub-signature-256")
        .ok_or_else(|| ApiError::InvalidSignature("X-Hub-Signature-256 is missing".into()))?;
    let mismatch =
        || ApiError::InvalidSignature("X-Hub-Signature-256 does not match the body".into());
    let named = header(headers, "x-github-hook-id").and_then(|v| v.parse::<i64>().ok());
    if let Some(hook_id) = named {
        let site = sqlx::query!(
            r#"select id, hook_secret_sealed as "sealed!" from sites
               where chain_id = $1 and hook_id = $2 and hook_secret_sealed is not null"#,
            state.chain_id() as i64,
            hook_id
        )
        .fetch_optional(&state.db)
        .await?;
        if let Some(site) = site {
            let secret =
                state.sealer.open_for(&site.sealed, &super::hooks::seal_context(site.id)).map_err(
                    |e| ApiError::Internal(anyhow::anyhow!("site {} webhook: {e}", site.id)),
                )?;
            return if signed(secret.expose_secret().as_bytes(), body, signature) {
                Ok(Hook::Site { hook_id, site_id: site.id })
            } else {
                Err(mismatch())
            };
        }
    }
    match &state.config.github_webhook_secret {
        Some(secret) if signed(secret.expose_secret().as_bytes(), body, signature) => {
            Ok(Hook::Platform)
        }
        Some(_) => Err(mismatch()),
        None => Err(ApiError::InvalidSignature(
            "no webhook of this platform has this X-GitHub-Hook-ID".into(),
        )),
    }
}

/// A commit SHA, or 400.
fn commit_sha(sha: &str, what: &str) -> ApiResult<()> {
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest(format!("the {what} {sha:?} is not a commit SHA")));
    }
    Ok(())
}

/// A site a delivery acts on.
struct Target {
    id: i64,
    name: String,
    branch: Option<String>,
    branch_previews: bool,
    fork_previews: bool,
    github_account_id: i64,
}

/// The active sites linked to `repository` that the delivery may act on: its own webhook's
/// site, or, for the platform-wide webhook, the sites that have no webhook of their own (those
/// hear of the same event through theirs).
async fn targets(
    tx: &mut PgConnection,
    state: &GitHubState,
    hook: Hook,
    repository: &str,
) -> sqlx::Result<Vec<Target>> {
    let rows = sqlx::query!(
        r#"select s.id, s.name, s.branch, coalesce(s.branch_previews, false) as "branch_previews!",
                  coalesce(s.fork_previews, false) as "fork_previews!",
                  s.github_account_id as "github_account_id!"
           from sites s
           join services v on v.chain_id = s.chain_id and v.service_id = s.service_id
           where s.chain_id = $2 and s.repository = $1
             and (case when $3::bigint is null then s.hook_id is null else s.id = $3 end)
             and s.github_account_id is not null and v.state = 'active'"#,
        repository.to_ascii_lowercase(),
        state.chain_id() as i64,
        hook.site()
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Target {
            id: r.id,
            name: r.name,
            branch: r.branch,
            branch_previews: r.branch_previews,
            fork_previews: r.fork_previews,
            github_account_id: r.github_account_id,
        })
        .collect())
}

/// Receives GitHub's webhook deliveries (`push`, `pull_request`, `ping`).
#[utoipa::path(post, path = "/github/webhook", tag = "github",
    request_body(content = String, content_type = "application/json", description = "GitHub's delivery"),
    responses((status = 200, body = DeliveryOutcome),
        (status = 401, description = "Missing or wrong X-Hub-Signature-256, or a webhook this platform does not know")))]
pub(super) async fn webhook(
    State(state): State<GitHubState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<DeliveryOutcome>)> {
    let hook = verify(&state, &headers, &body).await?;
    let delivery = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 100)
        .ok_or_else(|| ApiError::BadRequest("X-GitHub-Delivery is missing".into()))?
        .to_owned();
    let event = header(&headers, "x-github-event").unwrap_or_default().to_owned();

    let mut tx = state.db.begin().await?;
    let fresh = sqlx::query!(
        "insert into github_deliveries (chain_id, delivery_id, event, hook_id) values ($3, $1, $2, $4)
         on conflict do nothing",
        delivery,
        event,
        state.chain_id() as i64,
        hook.id()
    )
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 0 {
        return Ok((
            StatusCode::OK,
            Json(DeliveryOutcome { delivery, duplicate: true, deployments: 0, previews_closed: 0 }),
        ));
    }
    let acted = match event.as_str() {
        "push" => {
            let push: Push = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("not a push payload: {e}")))?;
            on_push(&mut tx, &state, hook, &push).await?
        }
        "pull_request" => {
            let event: PullRequestEvent = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("not a pull_request payload: {e}")))?;
            on_pull_request(&mut tx, &state, hook, &event).await?
        }
        _ => Acted::default(),
    };
    sqlx::query!(
        "update github_deliveries set deployments = $2
         where chain_id = $3 and delivery_id = $1 and hook_id = $4",
        delivery,
        acted.queued,
        state.chain_id() as i64,
        hook.id()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::OK,
        Json(DeliveryOutcome {
            delivery,
            duplicate: false,
            deployments: acted.queued,
            previews_closed: acted.closed,
        }),
    ))
}

/// What a delivery did.
#[derive(Debug, Default)]
struct Acted {
    queued: i32,
    closed: i32,
}

async fn on_push(
    tx: &mut PgConnection,
    state: &GitHubState,
    hook: Hook,
    push: &Push,
) -> ApiResult<Acted> {
    let mut acted = Acted::default();
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else { return Ok(acted) };
    if !push.deleted {
        commit_sha(&push.after, "push's after")?;
    }
    let repository = &push.repository.full_name;
    for site in targets(tx, state, hook, repository).await? {
        let production = site.branch.as_deref() == Some(branch);
        if production && !push.deleted {
            queue_github_deployment(
                &mut *tx,
                site.id,
                repository,
                branch,
                &push.after,
                site.github_account_id,
                GitHubTrigger::Push,
            )
            .await?;
            acted.queued += 1;
            continue;
        }
        let Some(label) = previews::branch_label(branch, &site.name).filter(|_| !production) else {
            continue;
        };
        // A push carries no time that orders pushes (a commit's time is its author's say):
        // branch previews follow deliveries in the order they are handled.
        let event_at = Utc::now();
        if push.deleted {
            acted.closed += i32::from(previews::close(tx, site.id, &label, event_at).await?);
        } else if site.branch_previews {
            let opened = previews::Opened {
                site_id: site.id,
                label: &label,
                pull_request: None,
                branch: Some(branch),
                repository,
                head: &push.after,
                from_fork: false,
                github_account_id: site.github_account_id,
                event_at,
            };
            acted.queued += i32::from(previews::open(tx, &opened).await?.is_some());
        }
    }
    Ok(acted)
}

async fn on_pull_request(
    tx: &mut PgConnection,
    state: &GitHubState,
    hook: Hook,
    event: &PullRequestEvent,
) -> ApiResult<Acted> {
    let mut acted = Acted::default();
    let opens = matches!(event.action.as_str(), "opened" | "reopened" | "synchronize");
    if !opens && event.action != "closed" {
        return Ok(acted);
    }
    let head = &event.pull_request.head;
    commit_sha(&head.sha, "pull request's head")?;
    let repository = &event.repository.full_name;
    // A head in another repository (or in a deleted one) is a fork's: its code is not the
    // owner's, so its build gets none of the site's variables or secrets.
    let from_fork =
        head.repo.as_ref().is_none_or(|r| !r.full_name.eq_ignore_ascii_case(repository));
    let label = previews::pull_request_label(event.number);
    let event_at = event.pull_request.updated_at.unwrap_or_else(Utc::now);
    for site in targets(tx, state, hook, repository).await? {
        if opens && from_fork && !site.fork_previews {
            continue;
        }
        if opens {
            let opened = previews::Opened {
                site_id: site.id,
                label: &label,
                pull_request: Some(event.number),
                branch: None,
                repository,
                head: &head.sha,
                from_fork,
                github_account_id: site.github_account_id,
                event_at,
            };
            acted.queued += i32::from(previews::open(tx, &opened).await?.is_some());
        } else {
            acted.closed += i32::from(previews::close(tx, site.id, &label, event_at).await?);
        }
    }
    Ok(acted)
}

#[cfg(test)]
mod tests {
    use super::signed;

    #[test]
    fn signatures_are_github_s_hmac_sha256() {
        // GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signed(b"It's a Secret to Everybody", b"Hello, World!", sig));
        assert!(!signed(b"It's a Secret to Everybody", b"Hello, World?", sig));
        assert!(!signed(b"another secret", b"Hello, World!", sig));
        assert!(!signed(b"It's a Secret to Everybody", b"Hello, World!", &sig[7..]));
        assert!(!signed(b"It's a Secret to Everybody", b"Hello, World!", "sha256=zz"));
    }
}
