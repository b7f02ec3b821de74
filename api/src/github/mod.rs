//! GitHub: linked accounts (OAuth web flow; tokens sealed at rest), deployments from a linked
//! repository, and the push webhook that deploys a site's production branch again. The deploy job
//! itself is hosting's (`crate::hosting`): GitHub only supplies the source tarball.

mod charge;
pub mod deploy;
mod hooks;
pub mod link;
pub mod webhook;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use decentraspace_clients::github::{GitHub, GitHubError};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::{auth::Auth, error::ApiError};

/// The largest webhook delivery GitHub sends (its documented cap).
const MAX_DELIVERY_BYTES: usize = 25 * 1024 * 1024;

/// What GitHub linking and deploys use: the platform with the keys that charge extra links,
/// GitHub itself, and the sealer of linked accounts' tokens.
#[derive(Debug, Clone)]
pub struct GitHubState {
    /// The platform, with the billing and payment-oracle keys.
    pub charges: crate::billing::charges::Charges,
    /// GitHub; unset without a client id and secret.
    pub github: Option<Arc<dyn GitHub>>,
    /// Seals tokens at rest and signs link states.
    pub sealer: crate::seal::Sealer,
}

impl std::ops::Deref for GitHubState {
    type Target = crate::billing::charges::Charges;

    fn deref(&self) -> &Self::Target {
        &self.charges
    }
}

/// The GitHub routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    GitHubState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(link::list, link::start))
        .routes(routes!(link::callback))
        .routes(routes!(link::repositories))
        .routes(routes!(link::unlink))
        .routes(routes!(deploy::deploy))
}

/// The webhook, outside the API's 1 MiB body limit (push payloads can be larger).
pub fn webhook_router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    GitHubState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(webhook::webhook))
        .layer(DefaultBodyLimit::max(MAX_DELIVERY_BYTES))
}

/// The configured GitHub client, or 503.
fn github(state: &GitHubState) -> Result<&dyn GitHub, ApiError> {
    state
        .github
        .as_deref()
        .ok_or_else(|| ApiError::NotConfigured("GitHub is not configured on this server"))
}

/// What a client is told when GitHub fails.
fn github_error(err: GitHubError) -> ApiError {
    match err {
        GitHubError::Unavailable(reason) => {
            tracing::warn!(target: "api::github", %reason, "GitHub unavailable");
            ApiError::Unavailable("GitHub did not answer; try again".into())
        }
        GitHubError::Unauthorized(_) => ApiError::Conflict(
            "GitHub no longer accepts this account's token: link the account again".into(),
        ),
        GitHubError::Refused(reason) => ApiError::Unprocessable {
            slug: "github-refused",
            detail: format!("GitHub refused: {reason}"),
        },
    }
}
