//! A local HTTP server speaking GitHub's documented OAuth web flow and REST API
//! (`POST /login/oauth/access_token`, `GET /user`, `GET /user/repos` in pages with a `Link`
//! header, `GET /repos/{owner}/{repo}/commits/{ref}`,
//! `GET /repos/{owner}/{repo}/compare/{base}...{head}`, `GET /repos/{owner}/{repo}/tarball/{ref}`
//! with its redirect to a download host, `POST`/`DELETE /repos/{owner}/{repo}/hooks[/{id}]`,
//! `POST /repos/{owner}/{repo}/statuses/{sha}`), serving repositories whose commits are tarballs
//! the test makes, on one line of history in push order, and delivering events to the webhooks
//! created on a repository as GitHub does: one `X-GitHub-Delivery` per event, each webhook's
//! `X-GitHub-Hook-ID`, and its secret's `X-Hub-Signature-256` (hex HMAC-SHA256).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Form, Json, Router,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::served::{Served, bearer};

/// The fake OAuth app's client id and secret.
pub const GITHUB_CLIENT_ID: &str = "Iv1.decentraspacefake";
/// See [`GITHUB_CLIENT_ID`].
pub const GITHUB_CLIENT_SECRET: &str = "fake-github-client-secret";
/// The secret webhook deliveries are signed with.
pub const GITHUB_WEBHOOK_SECRET: &str = "fake-github-webhook-secret";

/// A GitHub user of the fake.
#[derive(Debug, Clone)]
struct FakeUser {
    id: i64,
    login: String,
}

#[derive(Debug, Default)]
struct Inner {
    /// Authorization codes not used yet → the user they authorize.
    codes: Mutex<HashMap<String, FakeUser>>,
    /// Tokens → users (removing one revokes it).
    tokens: Mutex<HashMap<String, FakeUser>>,
    /// `owner/name` → (default branch, readers' logins, branch → head SHA, SHA → tarball).
    repos: Mutex<HashMap<String, FakeRepo>>,
    /// Tarball downloads served.
    downloads: Mutex<u32>,
    /// Webhooks created through the API, oldest first.
    hooks: Mutex<Vec<FakeHook>>,
    /// The next webhook id.
    next_hook: Mutex<i64>,
    /// Commit statuses set, in the order they arrived: (repository, SHA, status).
    statuses: Mutex<Vec<(String, String, Value)>>,
}

/// A webhook on a repository of the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeHook {
    /// Its id (`X-GitHub-Hook-ID`).
    pub id: i64,
    /// `owner/name`.
    pub repository: String,
    /// Where it delivers.
    pub url: String,
    /// The secret its deliveries are signed with.
    pub secret: String,
    /// The events it delivers.
    pub events: Vec<String>,
}

/// What one webhook answered to a delivery.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The webhook.
    pub hook_id: i64,
    /// The receiver's status.
    pub status: u16,
    /// Its body (JSON, or null).
    pub body: Value,
}

#[derive(Debug, Clone, Default)]
struct FakeRepo {
    default_branch: String,
    readers: Vec<String>,
    branches: HashMap<String, String>,
    tarballs: HashMap<String, Vec<u8>>,
    /// Every commit pushed, oldest first: each is a descendant of those before it.
    history: Vec<String>,
    /// Webhooks cannot be made on it (its readers are not its admins).
    hooks_refused: bool,
}

/// The fake GitHub; stops when dropped.
pub struct FakeGitHub {
    /// Its base URL (both the OAuth host and the API).
    pub url: String,
    inner: Arc<Inner>,
    _server: Served,
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "message": message, "documentation_url": "https://docs.github.com/rest" })),
    )
        .into_response()
}

fn bearer_user(inner: &Inner, headers: &HeaderMap) -> Option<FakeUser> {
    inner.tokens.lock().expect("lock").get(bearer(headers)?).cloned()
}

#[derive(Deserialize)]
struct TokenRequest {
    client_id: String,
    client_secret: String,
    code: String,
}

async fn access_token(State(inner): State<Arc<Inner>>, Form(form): Form<TokenRequest>) -> Response {
    if form.client_id != GITHUB_CLIENT_ID || form.client_secret != GITHUB_CLIENT_SECRET {
        return Json(json!({ "error": "incorrect_client_credentials", "error_description": "The client_id and/or client_secret passed are incorrect." })).into_response();
    }
    // A code is good once, as on GitHub.
    let Some(user) = inner.codes.lock().expect("lock").remove(&form.code) else {
        return Json(json!({ "error": "bad_verification_code", "error_description": "The code passed is incorrect or expired." })).into_response();
    };
    let token = format!("gho_{}", hex::encode(rand::random::<[u8; 16]>()));
    inner.tokens.lock().expect("lock").insert(token.clone(), user);
    Json(json!({ "access_token": token, "token_type": "bearer", "scope": "repo,read:user" }))
        .into_response()
}

async fn user(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    match bearer_user(&inner, &headers) {
        Some(u) => Json(json!({ "login": u.login, "id": u.id, "type": "User" })).into_response(),
        None => error(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

/// The user's repositories by name, `per_page` (at most 100, default 30) at a time, with a
/// `Link` header naming the next and last pages as GitHub's does.
async fn user_repos(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(u) = bearer_user(&inner, &headers) else {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    };
    let repos = inner.repos.lock().expect("lock");
    let mut list: Vec<Value> = repos
        .iter()
        .filter(|(_, r)| r.readers.contains(&u.login))
        .map(|(name, r)| json!({ "full_name": name, "default_branch": r.default_branch, "private": true }))
        .collect();
    list.sort_by(|a, b| a["full_name"].as_str().cmp(&b["full_name"].as_str()));
    let per_page = query.per_page.unwrap_or(30).clamp(1, 100);
    let page = query.page.unwrap_or(1).max(1);
    let last = list.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = list.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let at = |n: usize| format!("<http://{host}/user/repos?per_page={per_page}&page={n}>");
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", at(page + 1)));
        links.push(format!("{}; rel=\"last\"", at(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", at(page - 1)));
        links.push(format!("{}; rel=\"first\"", at(1)));
    }
    let mut response = Json(items).into_response();
    if let Ok(link) = links.join(", ").parse() {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

#[derive(Deserialize)]
struct HookRequest {
    name: String,
    active: bool,
    events: Vec<String>,
    config: HookConfig,
}

#[derive(Deserialize)]
struct HookConfig {
    url: String,
    content_type: String,
    secret: Option<String>,
}

async fn create_hook(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
    Json(request): Json<HookRequest>,
) -> Response {
    match readable(&inner, &headers, &owner, &repo) {
        // GitHub answers a reader who is not an admin as if there were no such repository.
        Ok(found) if found.hooks_refused => return error(StatusCode::NOT_FOUND, "Not Found"),
        Ok(_) => {}
        Err((status, message)) => return error(status, message),
    }
    if request.name != "web" || request.config.content_type != "json" || request.events.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let id = {
        let mut next = inner.next_hook.lock().expect("lock");
        *next += 1;
        1_000 + *next
    };
    let hook = FakeHook {
        id,
        repository: format!("{owner}/{repo}"),
        url: request.config.url.clone(),
        secret: request.config.secret.unwrap_or_default(),
        events: request.events.clone(),
    };
    if request.active {
        inner.hooks.lock().expect("lock").push(hook);
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "type": "Repository", "id": id, "name": "web", "active": request.active,
            "events": request.events,
            "config": { "url": request.config.url, "content_type": "json", "insecure_ssl": "0" },
        })),
    )
        .into_response()
}

async fn delete_hook(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((owner, repo, id)): Path<(String, String, i64)>,
) -> Response {
    if let Err((status, message)) = readable(&inner, &headers, &owner, &repo) {
        return error(status, message);
    }
    let name = format!("{owner}/{repo}");
    let mut hooks = inner.hooks.lock().expect("lock");
    let before = hooks.len();
    hooks.retain(|h| !(h.id == id && h.repository == name));
    if hooks.len() == before {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn set_status(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    Json(status): Json<Value>,
) -> Response {
    let found = match readable(&inner, &headers, &owner, &repo) {
        Ok(r) => r,
        Err((status, message)) => return error(status, message),
    };
    let state_ok =
        matches!(status["state"].as_str(), Some("pending" | "success" | "failure" | "error"));
    let description_ok = status["description"].as_str().is_none_or(|d| d.chars().count() <= 140);
    if !state_ok || !description_ok || !found.tarballs.contains_key(&sha) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    inner.statuses.lock().expect("lock").push((format!("{owner}/{repo}"), sha, status.clone()));
    (StatusCode::CREATED, Json(status)).into_response()
}

/// The repository if `headers`' user may read it.
fn readable(
    inner: &Inner,
    headers: &HeaderMap,
    owner: &str,
    repo: &str,
) -> Result<FakeRepo, (StatusCode, &'static str)> {
    let u = bearer_user(inner, headers).ok_or((StatusCode::UNAUTHORIZED, "Bad credentials"))?;
    let repos = inner.repos.lock().expect("lock");
    match repos.get(&format!("{owner}/{repo}")) {
        Some(r) if r.readers.contains(&u.login) => Ok(r.clone()),
        _ => Err((StatusCode::NOT_FOUND, "Not Found")),
    }
}

fn resolve(repo: &FakeRepo, git_ref: &str) -> Option<String> {
    repo.branches
        .get(git_ref)
        .cloned()
        .or_else(|| repo.tarballs.contains_key(git_ref).then(|| git_ref.to_owned()))
}

async fn commit(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let found = match readable(&inner, &headers, &owner, &repo) {
        Ok(r) => r,
        Err((status, message)) => return error(status, message),
    };
    match resolve(&found, &git_ref) {
        Some(sha) => {
            Json(json!({ "sha": sha, "commit": { "message": "a commit" } })).into_response()
        }
        None => {
            error(StatusCode::UNPROCESSABLE_ENTITY, &format!("No commit found for SHA: {git_ref}"))
        }
    }
}

async fn compare(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((owner, repo, basehead)): Path<(String, String, String)>,
) -> Response {
    let found = match readable(&inner, &headers, &owner, &repo) {
        Ok(r) => r,
        Err((status, message)) => return error(status, message),
    };
    let place = |git_ref: &str| {
        let sha = resolve(&found, git_ref)?;
        found.history.iter().position(|h| *h == sha)
    };
    let Some((base, head)) = basehead.split_once("...") else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let (Some(base), Some(head)) = (place(base), place(head)) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let status = match head.cmp(&base) {
        std::cmp::Ordering::Greater => "ahead",
        std::cmp::Ordering::Less => "behind",
        std::cmp::Ordering::Equal => "identical",
    };
    Json(json!({
        "status": status,
        "ahead_by": head.saturating_sub(base),
        "behind_by": base.saturating_sub(head),
        "total_commits": head.saturating_sub(base),
    }))
    .into_response()
}

async fn tarball(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let found = match readable(&inner, &headers, &owner, &repo) {
        Ok(r) => r,
        Err((status, message)) => return error(status, message),
    };
    let Some(sha) = resolve(&found, &git_ref) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    // GitHub answers with a redirect to a short-lived download URL.
    let location = format!("/_codeload/{owner}/{repo}/legacy.tar.gz/{sha}?token=short-lived");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

#[derive(Deserialize)]
struct CodeloadQuery {
    token: String,
}

async fn codeload(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    Query(query): Query<CodeloadQuery>,
) -> Response {
    if query.token != "short-lived" {
        return error(StatusCode::FORBIDDEN, "Forbidden");
    }
    let repos = inner.repos.lock().expect("lock");
    match repos.get(&format!("{owner}/{repo}")).and_then(|r| r.tarballs.get(&sha)) {
        Some(bytes) => {
            *inner.downloads.lock().expect("lock") += 1;
            ([(header::CONTENT_TYPE, "application/x-gzip")], Body::from(bytes.clone()))
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

impl FakeGitHub {
    /// Starts the fake on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/login/oauth/access_token", post(access_token))
            .route("/user", get(user))
            .route("/user/repos", get(user_repos))
            .route("/repos/{owner}/{repo}/commits/{git_ref}", get(commit))
            .route("/repos/{owner}/{repo}/compare/{basehead}", get(compare))
            .route("/repos/{owner}/{repo}/tarball/{git_ref}", get(tarball))
            .route("/repos/{owner}/{repo}/hooks", post(create_hook))
            .route("/repos/{owner}/{repo}/hooks/{id}", axum::routing::delete(delete_hook))
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(set_status))
            .route("/_codeload/{owner}/{repo}/legacy.tar.gz/{sha}", get(codeload))
            .with_state(inner.clone());
        let server = Served::start(app).await?;
        Ok(Self { url: server.url(), inner, _server: server })
    }

    /// What points an API's configuration at this fake, as its OAuth app and REST API.
    pub fn configurer(&self) -> impl Fn(&mut decentraspace_api::Config) + Send + 'static {
        let url = self.url.clone();
        move |config| {
            config.github_client_id = Some(GITHUB_CLIENT_ID.into());
            config.github_client_secret = Some(GITHUB_CLIENT_SECRET.into());
            config.github_oauth_url = url.clone();
            config.github_api_url = url.clone();
        }
    }

    /// The user `login` (id `id`) authorizes the app: the code GitHub would send back.
    pub fn authorize(&self, id: i64, login: &str) -> String {
        let code = hex::encode(rand::random::<[u8; 10]>());
        self.inner
            .codes
            .lock()
            .expect("lock")
            .insert(code.clone(), FakeUser { id, login: login.to_owned() });
        code
    }

    /// Revokes every token of `login`.
    pub fn revoke(&self, login: &str) {
        self.inner.tokens.lock().expect("lock").retain(|_, u| u.login != login);
    }

    /// A repository `name` (`owner/repo`) readable by `readers`, with `default_branch`.
    pub fn repository(&self, name: &str, default_branch: &str, readers: &[&str]) {
        self.inner.repos.lock().expect("lock").insert(
            name.to_owned(),
            FakeRepo {
                default_branch: default_branch.to_owned(),
                readers: readers.iter().map(|r| (*r).to_owned()).collect(),
                ..FakeRepo::default()
            },
        );
    }

    /// Makes the readers of `name` readers only: GitHub refuses them webhooks on it.
    pub fn refuse_hooks(&self, name: &str) {
        let mut repos = self.inner.repos.lock().expect("lock");
        repos.get_mut(name).expect("a repository made with `repository`").hooks_refused = true;
    }

    /// Pushes a commit `sha` whose tree is the tarball `tar_gz` to `branch`.
    pub fn push(&self, name: &str, branch: &str, sha: &str, tar_gz: Vec<u8>) {
        let mut repos = self.inner.repos.lock().expect("lock");
        let repo = repos.get_mut(name).expect("a repository made with `repository`");
        repo.branches.insert(branch.to_owned(), sha.to_owned());
        repo.tarballs.insert(sha.to_owned(), tar_gz);
        repo.history.push(sha.to_owned());
    }

    /// Adds a commit `sha` whose tree is `tar_gz` without moving a branch (a pull request's
    /// head, a fork's commit included, as GitHub keeps them under `refs/pull/<n>/head`).
    pub fn commit(&self, name: &str, sha: &str, tar_gz: Vec<u8>) {
        let mut repos = self.inner.repos.lock().expect("lock");
        let repo = repos.get_mut(name).expect("a repository made with `repository`");
        repo.tarballs.insert(sha.to_owned(), tar_gz);
        repo.history.push(sha.to_owned());
    }

    /// Tarballs downloaded so far.
    pub fn downloads(&self) -> u32 {
        *self.inner.downloads.lock().expect("lock")
    }

    /// The webhooks on `repository`.
    pub fn hooks(&self, repository: &str) -> Vec<FakeHook> {
        let hooks = self.inner.hooks.lock().expect("lock");
        hooks.iter().filter(|h| h.repository == repository).cloned().collect()
    }

    /// The statuses set on `sha` of `repository`, in the order they arrived.
    pub fn statuses(&self, repository: &str, sha: &str) -> Vec<Value> {
        let statuses = self.inner.statuses.lock().expect("lock");
        statuses
            .iter()
            .filter(|(r, s, _)| r == repository && s == sha)
            .map(|(_, _, status)| status.clone())
            .collect()
    }

    /// Delivers `event` with `payload` to every webhook on `repository` that takes it, as
    /// GitHub does: one delivery id for the event, each webhook's id and signature.
    pub async fn deliver(
        &self,
        repository: &str,
        event: &str,
        payload: &[u8],
    ) -> anyhow::Result<Vec<Delivered>> {
        let delivery = format!("{:032x}", rand::random::<u128>());
        let hooks = self.hooks(repository);
        let http = reqwest::Client::new();
        let mut answers = Vec::new();
        for hook in hooks.iter().filter(|h| h.events.iter().any(|e| e == event)) {
            let response = http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("user-agent", "GitHub-Hookshot/fake")
                .header("x-github-event", event)
                .header("x-github-delivery", &delivery)
                .header("x-github-hook-id", hook.id.to_string())
                .header("x-hub-signature-256", github_signature(payload, &hook.secret))
                .body(payload.to_vec())
                .send()
                .await?;
            let status = response.status().as_u16();
            let body = serde_json::from_str(&response.text().await?).unwrap_or(Value::Null);
            answers.push(Delivered { hook_id: hook.id, status, body });
        }
        Ok(answers)
    }
}

/// The `pull_request` delivery GitHub sends when pull request `number` of `repository` is
/// `action` (`opened`, `synchronize`, `closed`, ...) with its head at `sha` in `head_repository`
/// (a fork's name for a pull request from a fork), changed now (`updated_at`).
pub fn pull_request_payload(
    repository: &str,
    action: &str,
    number: i32,
    sha: &str,
    head_repository: &str,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": if action == "closed" { "closed" } else { "open" },
            "head": { "sha": sha, "ref": "feature", "repo": { "full_name": head_repository } },
            "base": { "ref": "main", "repo": { "full_name": repository } },
            "updated_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
        "repository": { "full_name": repository, "private": true },
        "sender": { "login": "octocat" },
    }))
    .expect("json")
}

/// The `push` delivery GitHub sends for `sha` on `branch` of `repository`.
pub fn push_payload(repository: &str, branch: &str, sha: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": sha,
        "created": false, "deleted": false, "forced": false,
        "repository": { "full_name": repository, "name": repository.split('/').nth(1), "private": true },
        "pusher": { "name": "octocat" },
        "commits": [{ "id": sha, "message": "update the site" }],
        "head_commit": {
            "id": sha, "message": "update the site",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
    }))
    .expect("json")
}

/// GitHub's `X-Hub-Signature-256` of `body`.
pub fn github_signature(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
