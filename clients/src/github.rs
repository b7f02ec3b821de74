//! A small client of GitHub's documented OAuth web flow and REST API (`/user`, `/user/repos`
//! followed page by page, `/repos/{owner}/{repo}/commits/{ref}`,
//! `/repos/{owner}/{repo}/compare/{base}...{head}`, `/repos/{owner}/{repo}/tarball/{ref}`,
//! repository webhooks `/repos/{owner}/{repo}/hooks` and commit statuses
//! `/repos/{owner}/{repo}/statuses/{sha}`), behind a trait
//! so the base URLs (and in tests, the server) can change while the code path stays the same.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The REST API version every call asks for.
const API_VERSION: &str = "2022-11-28";
/// The longest a JSON call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The most pages of repositories read (100 each).
const MAX_REPOSITORY_PAGES: usize = 50;
/// The longest commit status description GitHub takes.
const MAX_STATUS_DESCRIPTION: usize = 140;

/// Why a GitHub call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// GitHub could not be reached or answered 5xx: try again later.
    #[error("GitHub is unavailable: {0}")]
    Unavailable(String),
    /// The token is no longer valid (revoked, expired): the account must be linked again.
    #[error("GitHub refused the token: {0}")]
    Unauthorized(String),
    /// GitHub refused the call (not found, no access, a bad code).
    #[error("GitHub refused: {0}")]
    Refused(String),
}

/// A GitHub user.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    /// The user id (stable across renames).
    pub id: i64,
    /// The login.
    pub login: String,
}

/// A repository the user can read.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
    /// The default branch.
    pub default_branch: String,
    /// Whether it is private.
    pub private: bool,
}

#[derive(Debug, Deserialize)]
struct TokenReply {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Commit {
    sha: String,
}

/// Where a head commit stands against a base commit, as GitHub's compare API says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    /// The head has commits the base lacks, and none the other way (a descendant).
    Ahead,
    /// The base has commits the head lacks, and none the other way (an ancestor: older).
    Behind,
    /// The same commit.
    Identical,
    /// Each has commits the other lacks (a force-push, another line of history).
    Diverged,
}

#[derive(Debug, Deserialize)]
struct CompareReply {
    status: Comparison,
}

#[derive(Debug, Deserialize)]
struct HookReply {
    id: i64,
}

/// A commit status's state, as GitHub names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    /// Running.
    Pending,
    /// Done, and good.
    Success,
    /// Done, and it failed.
    Failure,
    /// It could not run.
    Error,
}

/// A commit status: what a check says about a commit, under its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitStatus {
    /// Its state.
    pub state: StatusState,
    /// Where to read more (the site, or the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// One short line (cut to GitHub's 140 characters).
    pub description: String,
    /// Which check it is; a later status of the same context replaces an earlier one.
    pub context: String,
}

/// GitHub, as the platform uses it.
#[async_trait]
pub trait GitHub: Send + Sync + std::fmt::Debug {
    /// The URL a user authorizes the platform at, carrying `state`.
    fn authorize_url(&self, state: &str) -> String;
    /// Exchanges an authorization code for a user token.
    async fn exchange_code(&self, code: &str) -> Result<SecretString, GitHubError>;
    /// The token's user.
    async fn user(&self, token: &SecretString) -> Result<User, GitHubError>;
    /// Repositories the token can read, most recently pushed first (every page, up to 5,000).
    async fn repositories(&self, token: &SecretString) -> Result<Vec<Repository>, GitHubError>;
    /// The commit a branch, tag or SHA names.
    async fn commit(
        &self,
        token: &SecretString,
        repo: &str,
        git_ref: &str,
    ) -> Result<String, GitHubError>;
    /// Where commit `head` stands against commit `base` in `repo`.
    async fn compare(
        &self,
        token: &SecretString,
        repo: &str,
        base: &str,
        head: &str,
    ) -> Result<Comparison, GitHubError>;
    /// The repository's tarball at `sha`, as a byte stream.
    async fn tarball(
        &self,
        token: &SecretString,
        repo: &str,
        sha: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, GitHubError>>, GitHubError>;
    /// Creates a webhook on `repo` delivering `events` as JSON to `url`, signed with `secret`
    /// (`X-Hub-Signature-256`); its id, which every delivery carries as `X-GitHub-Hook-ID`.
    async fn create_hook(
        &self,
        token: &SecretString,
        repo: &str,
        url: &str,
        secret: &SecretString,
        events: &[&str],
    ) -> Result<i64, GitHubError>;
    /// Deletes the webhook `id` of `repo` (one already gone counts as deleted).
    async fn delete_hook(
        &self,
        token: &SecretString,
        repo: &str,
        id: i64,
    ) -> Result<(), GitHubError>;
    /// Sets a status on commit `sha` of `repo`.
    async fn set_status(
        &self,
        token: &SecretString,
        repo: &str,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), GitHubError>;
}

/// The reqwest implementation.
#[derive(Debug)]
pub struct GitHubClient {
    http: reqwest::Client,
    oauth_url: String,
    api_url: String,
    client_id: String,
    client_secret: SecretString,
    redirect_url: String,
}

impl GitHubClient {
    /// A client of the OAuth app `client_id` at `oauth_url` (`https://github.com`) and the API at
    /// `api_url` (`https://api.github.com`), sending users back to `redirect_url`.
    pub fn new(
        oauth_url: &str,
        api_url: &str,
        client_id: &str,
        client_secret: SecretString,
        redirect_url: &str,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A download that stops sending must not hold a deploy worker.
            .read_timeout(Duration::from_secs(30))
            .user_agent("DecentraSpace")
            .build()?;
        Ok(Self {
            http,
            oauth_url: oauth_url.trim_end_matches('/').to_owned(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            redirect_url: redirect_url.to_owned(),
        })
    }

    fn api(&self, token: &SecretString, path: &str) -> reqwest::RequestBuilder {
        self.call(reqwest::Method::GET, token, &format!("{}{path}", self.api_url))
    }

    fn call(
        &self,
        method: reqwest::Method,
        token: &SecretString,
        url: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, GitHubError> {
        let response = checked(send(request).await?).await?;
        response
            .json()
            .await
            .map_err(|e| GitHubError::Unavailable(format!("unreadable reply: {e}")))
    }
}

/// Sends a JSON call within [`CALL_TIMEOUT`].
async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, GitHubError> {
    request.timeout(CALL_TIMEOUT).send().await.map_err(unreachable)
}

fn unreachable(err: reqwest::Error) -> GitHubError {
    GitHubError::Unavailable(err.without_url().to_string())
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response, GitHubError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: String = response.text().await.unwrap_or_default().chars().take(200).collect();
    Err(match status.as_u16() {
        401 => GitHubError::Unauthorized(body),
        s if s >= 500 => GitHubError::Unavailable(format!("{status}: {body}")),
        _ => GitHubError::Refused(format!("{status}: {body}")),
    })
}

/// The `rel="next"` address of a `Link` header (RFC 8288), as GitHub paginates.
fn next_page(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let next = params.split(';').any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        next.then(|| target.trim().strip_prefix('<')?.strip_suffix('>')).flatten()
    })
}

/// `owner/name` with GitHub's allowed characters, so it can go into a URL path as is.
pub fn valid_repository(repo: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    repo.split_once('/').is_some_and(|(owner, name)| ok(owner) && ok(name))
}

/// A branch, tag or SHA safe to put into a URL path.
pub fn valid_ref(git_ref: &str) -> bool {
    !git_ref.is_empty()
        && git_ref.len() <= 255
        && !git_ref.contains("..")
        && !git_ref.starts_with('/')
        && git_ref
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

#[async_trait]
impl GitHub for GitHubClient {
    fn authorize_url(&self, state: &str) -> String {
        let mut url = reqwest::Url::parse(&format!("{}/login/oauth/authorize", self.oauth_url))
            .expect("a valid OAuth URL");
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("scope", "repo read:user")
            .append_pair("state", state)
            .append_pair("allow_signup", "false");
        url.into()
    }

    async fn exchange_code(&self, code: &str) -> Result<SecretString, GitHubError> {
        let request = self
            .http
            .post(format!("{}/login/oauth/access_token", self.oauth_url))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose_secret()),
                ("code", code),
                ("redirect_uri", self.redirect_url.as_str()),
            ]);
        // GitHub answers 200 with `error` for a bad or used code.
        let reply: TokenReply = self.json(request).await?;
        match (reply.access_token, reply.error) {
            (Some(token), None) => Ok(SecretString::from(token)),
            (_, error) => Err(GitHubError::Refused(format!(
                "{}: {}",
                error.unwrap_or_else(|| "no token".into()),
                reply.error_description.unwrap_or_default()
            ))),
        }
    }

    async fn user(&self, token: &SecretString) -> Result<User, GitHubError> {
        self.json(self.api(token, "/user")).await
    }

    async fn repositories(&self, token: &SecretString) -> Result<Vec<Repository>, GitHubError> {
        let mut all = Vec::new();
        let mut request =
            self.api(token, "/user/repos").query(&[("per_page", "100"), ("sort", "pushed")]);
        for _ in 0..MAX_REPOSITORY_PAGES {
            let response = checked(send(request).await?).await?;
            let next = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_page)
                .map(str::to_owned);
            let page: Vec<Repository> = response
                .json()
                .await
                .map_err(|e| GitHubError::Unavailable(format!("unreadable reply: {e}")))?;
            all.extend(page);
            // The token goes only to the API's own host.
            match next {
                Some(url) if url.starts_with(&format!("{}/", self.api_url)) => {
                    request = self.call(reqwest::Method::GET, token, &url);
                }
                Some(url) => {
                    return Err(GitHubError::Unavailable(format!(
                        "the next page is off the API's host: {url}"
                    )));
                }
                None => return Ok(all),
            }
        }
        Ok(all)
    }

    async fn commit(
        &self,
        token: &SecretString,
        repo: &str,
        git_ref: &str,
    ) -> Result<String, GitHubError> {
        if !valid_repository(repo) || !valid_ref(git_ref) {
            return Err(GitHubError::Refused(format!(
                "{repo}@{git_ref} is not a repository and ref"
            )));
        }
        let commit: Commit =
            self.json(self.api(token, &format!("/repos/{repo}/commits/{git_ref}"))).await?;
        Ok(commit.sha)
    }

    async fn compare(
        &self,
        token: &SecretString,
        repo: &str,
        base: &str,
        head: &str,
    ) -> Result<Comparison, GitHubError> {
        if !valid_repository(repo) || !valid_ref(base) || !valid_ref(head) {
            return Err(GitHubError::Refused(format!(
                "{repo}@{base}...{head} is not a repository and two commits"
            )));
        }
        let reply: CompareReply =
            self.json(self.api(token, &format!("/repos/{repo}/compare/{base}...{head}"))).await?;
        Ok(reply.status)
    }

    async fn tarball(
        &self,
        token: &SecretString,
        repo: &str,
        sha: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, GitHubError>>, GitHubError> {
        if !valid_repository(repo) || !valid_ref(sha) {
            return Err(GitHubError::Refused(format!(
                "{repo}@{sha} is not a repository and commit"
            )));
        }
        // GitHub redirects to a signed download URL on another host (reqwest drops the token on
        // the cross-origin hop, as it should); the transfer lasts as long as the archive takes.
        let response = tokio::time::timeout(
            CALL_TIMEOUT,
            self.api(token, &format!("/repos/{repo}/tarball/{sha}")).send(),
        )
        .await
        .map_err(|_| GitHubError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}")))?
        .map_err(unreachable)?;
        let response = checked(response).await?;
        use futures::StreamExt;
        Ok(response.bytes_stream().map(|r| r.map_err(unreachable)).boxed())
    }

    async fn create_hook(
        &self,
        token: &SecretString,
        repo: &str,
        url: &str,
        secret: &SecretString,
        events: &[&str],
    ) -> Result<i64, GitHubError> {
        if !valid_repository(repo) {
            return Err(GitHubError::Refused(format!("{repo} is not a repository")));
        }
        let body = serde_json::json!({
            "name": "web",
            "active": true,
            "events": events,
            "config": {
                "url": url,
                "content_type": "json",
                "insecure_ssl": "0",
                "secret": secret.expose_secret(),
            },
        });
        let endpoint = format!("{}/repos/{repo}/hooks", self.api_url);
        let reply: HookReply =
            self.json(self.call(reqwest::Method::POST, token, &endpoint).json(&body)).await?;
        Ok(reply.id)
    }

    async fn delete_hook(
        &self,
        token: &SecretString,
        repo: &str,
        id: i64,
    ) -> Result<(), GitHubError> {
        if !valid_repository(repo) {
            return Err(GitHubError::Refused(format!("{repo} is not a repository")));
        }
        let endpoint = format!("{}/repos/{repo}/hooks/{id}", self.api_url);
        let response = send(self.call(reqwest::Method::DELETE, token, &endpoint)).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        checked(response).await.map(drop)
    }

    async fn set_status(
        &self,
        token: &SecretString,
        repo: &str,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), GitHubError> {
        if !valid_repository(repo) || !valid_ref(sha) {
            return Err(GitHubError::Refused(format!(
                "{repo}@{sha} is not a repository and commit"
            )));
        }
        let mut status = status.clone();
        if status.description.chars().count() > MAX_STATUS_DESCRIPTION {
            status.description =
                status.description.chars().take(MAX_STATUS_DESCRIPTION - 1).collect::<String>()
                    + "…";
        }
        let endpoint = format!("{}/repos/{repo}/statuses/{sha}", self.api_url);
        let response =
            send(self.call(reqwest::Method::POST, token, &endpoint).json(&status)).await?;
        checked(response).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_refs_are_checked_before_they_reach_a_url() {
        assert!(valid_repository("octo-org/my.site_1"));
        for bad in ["octo", "a/b/c", "../x", "a/..", "a/b?x", "a b/c", "/b", "a/"] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(valid_ref("main") && valid_ref("feature/x-1") && valid_ref("v1.2.3"));
        assert!(valid_ref("3f786850e387550fdab836ed7e6dc881de23001b"));
        for bad in ["", "../main", "a..b", "/main", "a?b", "a b", "a#b"] {
            assert!(!valid_ref(bad), "{bad}");
        }
    }

    #[test]
    fn the_next_page_is_read_off_the_link_header() {
        let link = "<https://api.github.com/user/repos?page=2&per_page=100>; rel=\"next\", \
                    <https://api.github.com/user/repos?page=5&per_page=100>; rel=\"last\"";
        assert_eq!(next_page(link), Some("https://api.github.com/user/repos?page=2&per_page=100"));
        let last = "<https://api.github.com/user/repos?page=1>; rel=\"prev\", \
                    <https://api.github.com/user/repos?page=1>; rel=\"first\"";
        assert_eq!(next_page(last), None);
        assert_eq!(next_page(""), None);
    }

    #[test]
    fn the_authorize_url_carries_the_state() {
        let client = GitHubClient::new(
            "https://github.com",
            "https://api.github.com",
            "Iv1.abc",
            SecretString::from("s"),
            "https://api.example/github/link/callback",
        )
        .expect("client");
        let url = client.authorize_url("st&ate");
        assert!(url.starts_with("https://github.com/login/oauth/authorize?client_id=Iv1.abc"));
        assert!(url.contains("state=st%26ate"), "{url}");
        assert!(url.contains("redirect_uri=https%3A%2F%2Fapi.example%2Fgithub%2Flink%2Fcallback"));
    }
}
