//! The API in-process on a free port, against a test chain and database, with helpers that sign
//! in as a wallet would.

use std::net::SocketAddr;

use alloy::{
    primitives::Address,
    signers::{SignerSync, local::PrivateKeySigner},
};
use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use clap::Parser;
use decentraspace_api::{AppState, Config};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{Role, TestChain, TestDb};

/// The SIWE domain and URI the test API expects.
pub const SIWE_DOMAIN: &str = "app.decentraspace.test";
/// The SIWE URI the test API expects.
pub const SIWE_URI: &str = "https://app.decentraspace.test";

/// A running API; stopped when dropped.
#[derive(Debug)]
pub struct TestApi {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The gateway, `http://127.0.0.1:<port>` (empty for an API served elsewhere).
    pub gateway: String,
    /// The gateway's HTTPS address, when the configuration asked for one.
    pub gateway_tls: Option<SocketAddr>,
    /// The in-process gateway's route cache and database, for [`TestApi::gateway_current`].
    routes: Option<(std::sync::Arc<decentraspace_api::gateway::sites::Sites>, sqlx::PgPool)>,
    /// An HTTP client.
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The test configuration: the chain's operator and relayer keys, generous rate limits.
pub fn api_config(chain: &TestChain, db: &TestDb) -> Config {
    let (operator, relayer) = (role_key(chain, Role::Operator), role_key(chain, Role::Relayer));
    // Build caches are keyed by site id, and every test database numbers its sites from 1: each
    // gets a cache folder of its own, emptied first.
    let database = db.url.rsplit('/').next().unwrap_or("db");
    let build_cache = std::env::temp_dir().join(format!("ds-build-cache-{database}"));
    std::fs::remove_dir_all(&build_cache).ok();
    Config::parse_from([
        "api",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--rpc-url",
        &chain.endpoint(),
        "--deployments-file",
        chain.deployment_file.to_str().unwrap_or_default(),
        "--siwe-domain",
        SIWE_DOMAIN,
        "--siwe-uri",
        SIWE_URI,
        "--jwt-secret",
        "test-secret-test-secret-test-secret-0123",
        "--operator-key",
        &operator,
        "--relayer-key",
        &relayer,
        "--rate-limit-per-ip",
        "10000",
        "--rate-limit-per-account",
        "10000",
        "--build-cache-dir",
        build_cache.to_str().unwrap_or_default(),
        "--build-tools-dir",
        crate::repo_root().join("tools/package-managers/node_modules").to_str().unwrap_or_default(),
    ])
}

/// Where the HTTPS listener of `state` binds: the configured address (a test asks for port 0).
fn tls_addr_of(state: &AppState) -> SocketAddr {
    state
        .platform
        .config
        .gateway_tls_listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl TestApi {
    /// Starts the API with [`api_config`].
    pub async fn start(chain: &TestChain, db: &TestDb) -> anyhow::Result<Self> {
        Self::start_with(api_config(chain, db)).await
    }

    /// Starts the API with `config` (its listen address is ignored: a free port is used, and
    /// becomes its public address).
    pub async fn start_with(mut config: Config) -> anyhow::Result<Self> {
        // TEST_LOG=api=debug (any tracing filter) shows the API's logs.
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base = format!("http://{}", listener.local_addr()?);
        config.public_api_url = base.clone();
        let state = AppState::new(config).await.context("start the API")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let gateway = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let gateway_base = format!("http://{}", gateway.local_addr()?);
        let (gateway_tls, tls_addr) = match state.platform.config.gateway_tls_listen {
            Some(_) => {
                let listener = tokio::net::TcpListener::bind(tls_addr_of(&state)).await?;
                let addr = listener.local_addr()?;
                (Some(listener), Some(addr))
            }
            None => (None, None),
        };
        let routes = Some((state.gateway.sites.clone(), state.platform.db.clone()));
        let handle = tokio::spawn(decentraspace_api::serve(
            state,
            listener,
            Some(gateway),
            gateway_tls,
            async {
                stopped.await.ok();
            },
        ));
        Ok(Self {
            base,
            gateway: gateway_base,
            gateway_tls: tls_addr,
            routes,
            http: reqwest::Client::new(),
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// A client of an API served elsewhere (e.g. an [`ApiProcess`]) at `base`.
    pub fn at(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            gateway: String::new(),
            gateway_tls: None,
            routes: None,
            http: reqwest::Client::new(),
            stop: None,
            handle: None,
        }
    }

    /// Waits until the in-process gateway has heard every change committed so far (its routes
    /// are kept in memory and follow the database's notifications), so the next request to it
    /// sees them. Nothing to wait for with an API served elsewhere.
    pub async fn gateway_current(&self) -> anyhow::Result<()> {
        match &self.routes {
            Some((sites, db)) => sites.sync(db).await,
            None => Ok(()),
        }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method` `path` with an optional bearer token and JSON body: status and JSON body (null
    /// when not JSON).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request.send().await?).await
    }

    /// GET `path` with an optional bearer token: status and JSON body (null when not JSON).
    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    /// POST JSON to `path` with an optional bearer token.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::POST, path, token, Some(body)).await
    }

    /// Sets the credits one subunit of `currency` buys, as `admin`; the answer's status (204
    /// once the admin role is indexed).
    pub async fn set_fiat_rate(
        &self,
        admin: &Session,
        currency: &str,
        credits_per_subunit: u64,
    ) -> anyhow::Result<u16> {
        let response = self
            .http
            .put(self.url("/billing/fiat-rates"))
            .bearer_auth(&admin.access)
            .json(&serde_json::json!({
                "currency": currency, "credits_per_subunit": credits_per_subunit.to_string()
            }))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// A fresh nonce.
    pub async fn nonce(&self) -> anyhow::Result<String> {
        let (status, body) = self.get("/auth/nonce", None).await?;
        anyhow::ensure!(status == 200, "nonce: {status} {body}");
        body["nonce"].as_str().map(str::to_owned).context("nonce in the answer")
    }

    /// Signs in as `signer` and waits until its on-chain registration (which a first login
    /// sends) is indexed: what storage and hosting need.
    pub async fn login_registered(&self, signer: &PrivateKeySigner) -> anyhow::Result<Session> {
        let session = self.login(signer).await?;
        eventually("the registration to be indexed", || async {
            Ok(self.get("/auth/tier", Some(&session.access)).await?.1["registered"] == true)
        })
        .await?;
        Ok(session)
    }

    /// Waits (up to 30 s) for deployment `id` to go live or fail; its final state.
    pub async fn deployment_finished(&self, token: &str, id: i64) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, body) = self.get(&format!("/hosting/deploy/{id}"), Some(token)).await?;
            anyhow::ensure!(status == 200, "{status}: {body}");
            if body["state"] == "live" || body["state"] == "failed" {
                return Ok(body);
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "deployment {id} stuck: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Deploys a static site `name` holding one `index.html` for `token`, and waits until it
    /// is live.
    pub async fn deploy_site(&self, token: &str, name: &str, page: &str) -> anyhow::Result<()> {
        let archive = crate::site_tar_gz(name, &[("index.html", page.as_bytes())])?;
        let form = reqwest::multipart::Form::new()
            .text("site", name.to_owned())
            .part("archive", reqwest::multipart::Part::bytes(archive).file_name("site.tar.gz"));
        let response = self
            .http
            .post(self.url("/hosting/deploy"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await?;
        let queued: Value = response.json().await?;
        let id = queued["id"].as_i64().unwrap_or_default();
        let done = self.deployment_finished(token, id).await?;
        anyhow::ensure!(done["state"] == "live", "site {name} not live: {done}");
        Ok(())
    }

    /// Signs in as `signer` (an EOA): nonce, SIWE message, signature, login.
    pub async fn login(&self, signer: &PrivateKeySigner) -> anyhow::Result<Session> {
        let message = siwe_message(signer.address(), &self.nonce().await?);
        let signature = signer.sign_message_sync(message.as_bytes())?;
        let (status, body) = self
            .post(
                "/auth/login/",
                None,
                &serde_json::json!({ "message": message, "signature": signature.to_string() }),
            )
            .await?;
        anyhow::ensure!(status == 200, "login: {status} {body}");
        Session::from_answer(&body)
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Tokens of a signed-in wallet.
#[derive(Debug, Clone)]
pub struct Session {
    /// The access token.
    pub access: String,
    /// The refresh token.
    pub refresh: String,
}

impl Session {
    /// Reads a token answer.
    pub fn from_answer(body: &Value) -> anyhow::Result<Self> {
        Ok(Self {
            access: body["access_token"].as_str().context("access_token")?.to_owned(),
            refresh: body["refresh_token"].as_str().context("refresh_token")?.to_owned(),
        })
    }
}

/// A valid EIP-4361 sign-in message for `address` with `nonce`, as the test API expects it (its
/// domain and URI, anvil's chain), issued now.
pub fn siwe_message(address: Address, nonce: &str) -> String {
    format!(
        "{SIWE_DOMAIN} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DecentraSpace\n\nURI: {SIWE_URI}\nVersion: 1\nChain ID: 31337\nNonce: {nonce}\nIssued At: {}",
        address.to_checksum(None),
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// Where the API's problem types live.
pub const PROBLEMS: &str = "https://decentraspace.io/problems/";

/// The slug of a problem+json body's `type` (`siwe-expired`, `not-found`, …).
pub fn problem_type(body: &Value) -> String {
    body["type"].as_str().unwrap_or_default().trim_start_matches(PROBLEMS).to_owned()
}

/// Polls `check` until it holds, for up to 20 s (indexing is asynchronous).
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await? {
        anyhow::ensure!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The API binary as a child process (for crash tests); killed when dropped.
#[derive(Debug)]
pub struct ApiProcess {
    child: std::process::Child,
}

impl ApiProcess {
    /// Starts the `api` binary on a free port against `chain` and `db`, with `extra` settings
    /// (environment variables) on top of the test configuration's essentials.
    pub fn spawn(chain: &TestChain, db: &TestDb, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut command =
            std::process::Command::new(crate::workspace_binary("api", "decentraspace-api")?);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("API_LISTEN", "127.0.0.1:0")
            .env("DATABASE_URL", &db.url)
            .env("RPC_URL", chain.endpoint())
            .env("DEPLOYMENTS_FILE", &chain.deployment_file)
            .env("JWT_SECRET", "test-secret-test-secret-test-secret-0123")
            .env("RUST_LOG", std::env::var("API_LOG").unwrap_or_else(|_| "warn".into()))
            // The API's logs show with API_LOG set (e.g. API_LOG=api=info).
            .stdout(if std::env::var_os("API_LOG").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            });
        for (name, value) in extra {
            command.env(name, value);
        }
        Ok(Self { child: command.spawn().context("spawn the API")? })
    }

    /// Starts the `api` binary as [`ApiProcess::spawn`] does, listening on a free port, with the
    /// test sign-in settings; returns once it answers `/health`, with a client of it.
    pub async fn serving(
        chain: &TestChain,
        db: &TestDb,
        extra: &[(&str, String)],
    ) -> anyhow::Result<(Self, TestApi)> {
        Self::serving_on(chain, db, extra, false).await
    }

    /// [`ApiProcess::serving`], with the site gateway on a free port of its own too (the
    /// client's `gateway`).
    pub async fn serving_with_gateway(
        chain: &TestChain,
        db: &TestDb,
        extra: &[(&str, String)],
    ) -> anyhow::Result<(Self, TestApi)> {
        Self::serving_on(chain, db, extra, true).await
    }

    async fn serving_on(
        chain: &TestChain,
        db: &TestDb,
        extra: &[(&str, String)],
        gateway: bool,
    ) -> anyhow::Result<(Self, TestApi)> {
        crate::served::on_free_ports("the API binary", || async {
            let port = crate::served::free_port()?;
            let mut settings = vec![
                ("API_LISTEN", format!("127.0.0.1:{port}")),
                ("SIWE_DOMAIN", SIWE_DOMAIN.to_owned()),
                ("SIWE_URI", SIWE_URI.to_owned()),
            ];
            let mut client = TestApi::at(&format!("http://127.0.0.1:{port}"));
            if gateway {
                let gateway_port = crate::served::free_port()?;
                settings.push(("GATEWAY_LISTEN", format!("127.0.0.1:{gateway_port}")));
                client.gateway = format!("http://127.0.0.1:{gateway_port}");
            }
            settings.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
            let mut process = Self::spawn(chain, db, &settings)?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if let Ok((200, _)) = client.get("/health", None).await {
                    return Ok((process, client));
                }
                if let Some(status) = process.child.try_wait()? {
                    anyhow::bail!("the API exited ({status}) before answering");
                }
                if std::time::Instant::now() > deadline {
                    process.kill9();
                    anyhow::bail!("the API did not answer /health within 30 s");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// Stops it with SIGTERM, as an orchestrator does, and waits (up to 30 s) for it to exit: its
    /// exit status.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("run kill")?;
        anyhow::ensure!(sent.success(), "kill -TERM failed: {sent}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "the API did not exit in 30 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `role`'s private key as `0x…` hex (for the API's key settings).
pub fn role_key(chain: &TestChain, role: Role) -> String {
    format!("0x{}", alloy::hex::encode(chain.role(role).to_bytes()))
}
