//! A local npm registry (verdaccio from package.json) for one test, on a free loopback port, with
//! no uplink: it serves only what the test publishes to it, so no test reaches the internet.
//! Stopped and removed when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{
    repo_root,
    served::{free_port, on_free_ports},
};

/// A running verdaccio and the token packages are published with.
#[derive(Debug)]
pub struct TestRegistry {
    /// Its URL, `http://127.0.0.1:<port>`.
    pub url: String,
    token: String,
    child: Child,
    dir: PathBuf,
}

impl TestRegistry {
    /// Starts verdaccio with a fresh storage and a publishing user. A port another process took
    /// meanwhile shows as an early exit; then it starts over on another port.
    pub async fn start() -> anyhow::Result<Self> {
        on_free_ports("verdaccio (REGISTRY_LOG=1 shows its output)", Self::try_start).await
    }

    async fn try_start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("ds-registry-{}-{port}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "storage: {storage}\n\
                 auth:\n  htpasswd:\n    file: {htpasswd}\n    max_users: 10\n\
                 uplinks: {{}}\n\
                 packages:\n  '**':\n    access: $all\n    publish: $authenticated\n\
                 log: {{ type: stdout, format: pretty, level: warn }}\n",
                storage = dir.join("storage").display(),
                htpasswd = dir.join("htpasswd").display(),
            ),
        )?;
        let quiet = std::env::var_os("REGISTRY_LOG").is_none();
        let child = Command::new(repo_root().join("node_modules/.bin/verdaccio"))
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(if quiet { Stdio::null() } else { Stdio::inherit() })
            .stderr(if quiet { Stdio::null() } else { Stdio::inherit() })
            .spawn()
            .context("start verdaccio (run `npm ci` first)")?;
        let mut registry =
            Self { url: format!("http://127.0.0.1:{port}"), token: String::new(), child, dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = registry.child.try_wait()? {
                bail!("verdaccio exited ({status})");
            }
            if let Ok(answer) = http.get(format!("{}/-/ping", registry.url)).send().await
                && answer.status().is_success()
            {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no answer within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A user made through the registry's CouchDB-style API; its token publishes.
        let made: Value = http
            .put(format!("{}/-/user/org.couchdb.user:fixtures", registry.url))
            .json(&json!({ "name": "fixtures", "password": "fixtures-password" }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        registry.token = made["token"].as_str().context("a publishing token")?.to_owned();
        Ok(registry)
    }

    /// Publishes the package whose `package.json` and files are `files` with `npm publish`.
    pub fn publish(&self, files: &[(&str, &str)]) -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        for (name, text) in files {
            let path = folder.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            std::fs::write(path, text)?;
        }
        let authority = self.url.trim_start_matches("http:");
        let published = Command::new("npm")
            .current_dir(folder.path())
            .args(["publish", "--no-audit", "--no-fund", "--registry"])
            .arg(format!("{}/", self.url))
            .arg(format!("--{authority}/:_authToken={}", self.token))
            .env("npm_config_cache", folder.path().join(".npm-cache"))
            .output()
            .context("npm publish")?;
        anyhow::ensure!(
            published.status.success(),
            "npm publish: {}",
            String::from_utf8_lossy(&published.stderr)
        );
        Ok(())
    }

    /// Its address, as `BUILD_REGISTRY_URL` names it.
    pub fn address(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.url.trim_start_matches("http://").parse()?)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
