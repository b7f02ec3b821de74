//! [`Runtime`] on Fly Machines (`https://api.machines.dev`, the Machines REST API): one machine
//! per deployment of a dynamic site, in one Fly app, tagged with the site and deployment in its
//! metadata (so a launch cut short is found again instead of launched twice). The gateway
//! reaches machines at their private (6PN) address.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::{Machine, MachineSpec, Runtime, RuntimeError};
use crate::http::{Failure, send_bearer};

/// The longest one call may take (a `wait` adds its own timeout to this).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The metadata key naming the deployment a machine serves.
const DEPLOYMENT_KEY: &str = "decentraspace_deployment";

/// A Fly app whose machines run dynamic sites.
pub struct FlyMachines {
    http: reqwest::Client,
    api: String,
    app: String,
    token: SecretString,
}

impl std::fmt::Debug for FlyMachines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("FlyMachines").field("api", &self.api).field("app", &self.app).finish()
    }
}

#[derive(Deserialize)]
struct MachineReply {
    id: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    private_ip: String,
    #[serde(default)]
    config: MachineConfig,
}

#[derive(Deserialize, Default)]
struct MachineConfig {
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

impl From<MachineReply> for Machine {
    fn from(m: MachineReply) -> Self {
        let deployment = m.config.metadata.get(DEPLOYMENT_KEY).and_then(|d| d.parse().ok());
        Machine { id: m.id, state: m.state, private_ip: m.private_ip, deployment }
    }
}

impl FlyMachines {
    /// A client of the Machines API at `api` for `app`, authorised by `token`.
    pub fn new(api: &str, app: &str, token: SecretString) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !app.is_empty() && app.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "FLY_APP is a Fly app name (letters, digits, hyphens)"
        );
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self { http, api: api.trim_end_matches('/').to_owned(), app: app.to_owned(), token })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/apps/{}/machines{path}", self.api, self.app)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<String, RuntimeError> {
        // The API answers `{"error": "..."}`.
        let message = |body: &serde_json::Value| body["error"].as_str().map(str::to_owned);
        send_bearer(request, &self.token, message).await.map_err(|failure| match failure {
            Failure::Unreachable(cause) => RuntimeError::Unreachable(cause),
            Failure::Status { status, message } => match status.as_u16() {
                404 => RuntimeError::Gone(message),
                408 | 429 | 500.. => RuntimeError::Unreachable(format!("{status}: {message}")),
                _ => RuntimeError::Refused(format!("{status}: {message}")),
            },
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, RuntimeError> {
        serde_json::from_str(body)
            .map_err(|e| RuntimeError::Unreachable(format!("an unreadable answer: {e}")))
    }

    /// The machine launched for `deployment`, if one was.
    pub async fn find(&self, deployment: i64) -> Result<Option<Machine>, RuntimeError> {
        let body = self
            .send(
                self.http
                    .get(self.url(""))
                    .query(&[(format!("metadata.{DEPLOYMENT_KEY}"), deployment.to_string())])
                    .timeout(CALL_TIMEOUT),
            )
            .await?;
        let machines: Vec<MachineReply> = Self::parse(&body)?;
        Ok(machines.into_iter().next().map(Machine::from))
    }
}

#[async_trait]
impl Runtime for FlyMachines {
    async fn launch(&self, spec: &MachineSpec<'_>) -> Result<Machine, RuntimeError> {
        if let Some(existing) = self.find(spec.deployment).await? {
            return Ok(existing);
        }
        let body = json!({
            "name": format!("{}-{}", spec.site, spec.deployment),
            "config": {
                "image": spec.image,
                "env": { "PORT": spec.port.to_string() },
                "guest": { "cpu_kind": "shared", "cpus": 1, "memory_mb": 256 },
                "restart": { "policy": "on-failure", "max_retries": 3 },
                "metadata": {
                    "decentraspace_site": spec.site,
                    DEPLOYMENT_KEY: spec.deployment.to_string(),
                },
            },
        });
        let answer =
            self.send(self.http.post(self.url("")).json(&body).timeout(CALL_TIMEOUT)).await?;
        Ok(Self::parse::<MachineReply>(&answer)?.into())
    }

    async fn machine(&self, id: &str) -> Result<Machine, RuntimeError> {
        let answer =
            self.send(self.http.get(self.url(&format!("/{id}"))).timeout(CALL_TIMEOUT)).await?;
        Ok(Self::parse::<MachineReply>(&answer)?.into())
    }

    async fn wait_started(&self, id: &str, timeout_secs: u64) -> Result<bool, RuntimeError> {
        let waited = self
            .send(
                self.http
                    .get(self.url(&format!("/{id}/wait")))
                    .query(&[("state", "started"), ("timeout", &timeout_secs.to_string())])
                    .timeout(CALL_TIMEOUT + Duration::from_secs(timeout_secs)),
            )
            .await;
        match waited {
            Ok(_) => Ok(true),
            // 408: not started within the timeout.
            Err(RuntimeError::Unreachable(message)) if message.starts_with("408") => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.send(self.http.post(self.url(&format!("/{id}/start"))).timeout(CALL_TIMEOUT))
            .await
            .map(drop)
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.send(self.http.post(self.url(&format!("/{id}/stop"))).timeout(CALL_TIMEOUT))
            .await
            .map(drop)
    }

    async fn machines(&self) -> Result<Vec<Machine>, RuntimeError> {
        // The list leaves destroyed machines out unless asked for them.
        let body = self.send(self.http.get(self.url("")).timeout(CALL_TIMEOUT)).await?;
        let machines: Vec<MachineReply> = Self::parse(&body)?;
        Ok(machines.into_iter().map(Machine::from).collect())
    }

    async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        let destroyed = self
            .send(
                self.http
                    .delete(self.url(&format!("/{id}")))
                    .query(&[("force", "true")])
                    .timeout(CALL_TIMEOUT),
            )
            .await;
        match destroyed {
            Ok(_) | Err(RuntimeError::Gone(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }
}
