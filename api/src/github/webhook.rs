//! `POST /github/webhook`: GitHub's push deliveries. The `X-Hub-Signature-256` HMAC of the raw
//! body is checked in constant time; each `X-GitHub-Delivery` is acted on once (a redelivery is
//! answered, not acted on); a push to a site's production branch queues a deployment of exactly
//! the pushed commit (`after`, covered by the signature), which the deploy job makes current only
//! if it is not older than the commit the site serves. The delivery and its deployments are
//! recorded in one transaction, so a crash either loses both (GitHub redelivers) or keeps both.

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

use crate::{
    github::GitHubState,
    hosting::{GitHubTrigger, queue_github_deployment},
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
}

#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: PushRepository,
}

#[derive(Debug, Deserialize)]
struct PushRepository {
    full_name: String,
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

/// Receives GitHub's webhook deliveries (`push`, `ping`).
#[utoipa::path(post, path = "/github/webhook", tag = "github",
    request_body(content = String, content_type = "application/json", description = "GitHub's delivery"),
    responses((status = 200, body = DeliveryOutcome),
        (status = 401, description = "Missing or wrong X-Hub-Signature-256"),
        (status = 503, description = "No webhook secret is configured")))]
pub(super) async fn webhook(
    State(state): State<GitHubState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<DeliveryOutcome>)> {
    let secret = state
        .config
        .github_webhook_secret
        .as_ref()
        .ok_or_else(|| ApiError::NotConfigured("GitHub webhooks are not configured"))?;
    let signature = header(&headers, "x-hub-signature-256")
        .ok_or_else(|| ApiError::InvalidSignature("X-Hub-Signature-256 is missing".into()))?;
    if !signed(secret.expose_secret().as_bytes(), &body, signature) {
        return Err(ApiError::InvalidSignature(
            "X-Hub-Signature-256 does not match the body".into(),
        ));
    }
    let delivery = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 100)
        .ok_or_else(|| ApiError::BadRequest("X-GitHub-Delivery is missing".into()))?
        .to_owned();
    let event = header(&headers, "x-github-event").unwrap_or_default().to_owned();

    let mut tx = state.db.begin().await?;
    let fresh = sqlx::query!(
        "insert into github_deliveries (chain_id, delivery_id, event) values ($3, $1, $2)
         on conflict do nothing",
        delivery,
        event,
        state.chain_id() as i64
    )
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 0 {
        return Ok((
            StatusCode::OK,
            Json(DeliveryOutcome { delivery, duplicate: true, deployments: 0 }),
        ));
    }
    let mut queued = 0;
    if event == "push" {
        let push: Push = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("not a push payload: {e}")))?;
        if let Some(branch) = push.git_ref.strip_prefix("refs/heads/").filter(|_| !push.deleted) {
            if push.after.len() != 40 || !push.after.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::BadRequest(format!(
                    "the push's after {:?} is not a commit SHA",
                    push.after
                )));
            }
            let sites = sqlx::query!(
                "select s.id, s.github_account_id as \"github_account_id!\" from sites s
                 join services v on v.chain_id = s.chain_id and v.service_id = s.service_id
                 where s.chain_id = $3 and s.repository = $1 and s.branch = $2
                   and s.github_account_id is not null and v.state = 'active'",
                push.repository.full_name.to_ascii_lowercase(),
                branch,
                state.chain_id() as i64
            )
            .fetch_all(&mut *tx)
            .await?;
            for site in sites {
                queue_github_deployment(
                    &mut *tx,
                    site.id,
                    &push.repository.full_name,
                    branch,
                    &push.after,
                    site.github_account_id,
                    GitHubTrigger::Push,
                )
                .await?;
                queued += 1;
            }
        }
        sqlx::query!(
            "update github_deliveries set deployments = $2 where chain_id = $3 and delivery_id = $1",
            delivery,
            queued,
            state.chain_id() as i64
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((StatusCode::OK, Json(DeliveryOutcome { delivery, duplicate: false, deployments: queued })))
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
