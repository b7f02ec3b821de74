//! A local IPFS node (js-ipfs, speaking the Kubo RPC API) for one test: `scripts/ipfs.sh` on free
//! loopback ports with a repository of its own, stopped and removed when dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    repo_root,
    served::{free_port, on_free_ports},
};

/// A running IPFS node.
#[derive(Debug)]
pub struct TestIpfs {
    /// Its RPC API, `http://127.0.0.1:<port>`.
    pub api_url: String,
    /// Its read-only gateway, `http://127.0.0.1:<port>`.
    pub gateway_url: String,
    child: Child,
    repo: PathBuf,
}

impl TestIpfs {
    /// Starts a node and waits until its API answers (a fresh repository takes a few seconds).
    /// Free ports are found by binding and releasing them, so another process can take one
    /// before the node does: the answering node must be this one (its peer id is the one in
    /// its repository), and so must its gateway (js-ipfs keeps running when the gateway's port
    /// is taken: it serves a file only this node holds), else it starts over on other ports.
    pub async fn start() -> anyhow::Result<Self> {
        on_free_ports("the IPFS node (IPFS_LOG=1 shows its output)", Self::try_start).await
    }

    async fn try_start() -> anyhow::Result<Self> {
        let (api, gateway, rpc) = (free_port()?, free_port()?, free_port()?);
        let repo = std::env::temp_dir().join(format!("ds-ipfs-{}-{api}", std::process::id()));
        std::fs::remove_dir_all(&repo).ok();
        let quiet = std::env::var_os("IPFS_LOG").is_none();
        let child = Command::new(repo_root().join("scripts/ipfs.sh"))
            .arg(&repo)
            .args([api.to_string(), gateway.to_string(), rpc.to_string()])
            .stdout(if quiet { Stdio::null() } else { Stdio::inherit() })
            .stderr(if quiet { Stdio::null() } else { Stdio::inherit() })
            .spawn()
            .context("start the IPFS node (run `npm ci` first)")?;
        let mut node = Self {
            api_url: format!("http://127.0.0.1:{api}"),
            gateway_url: format!("http://127.0.0.1:{gateway}"),
            child,
            repo,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = node.child.try_wait()? {
                bail!("the node exited ({status})");
            }
            let id = http.post(format!("{}/api/v0/id", node.api_url)).send().await;
            if let Ok(answer) = id
                && answer.status().is_success()
            {
                let answered: serde_json::Value = answer.json().await?;
                let config: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(node.repo.join("config"))?)?;
                anyhow::ensure!(
                    answered["ID"] == config["Identity"]["PeerID"],
                    "another node answers on port {api}"
                );
                node.check_gateway(&config["Identity"]["PeerID"].to_string()).await?;
                return Ok(node);
            }
            anyhow::ensure!(Instant::now() < deadline, "no answer within 90 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Adds `unique` through the API and reads it back through the gateway: a gateway port that
    /// another process holds answers something else.
    async fn check_gateway(&self, unique: &str) -> anyhow::Result<()> {
        let ipfs = decentraspace_clients::ipfs::Ipfs::new(&self.api_url)?;
        let bytes = bytes::Bytes::from(unique.to_owned());
        let added = ipfs
            .add("probe", "text/plain", futures::stream::iter([Ok(bytes.clone())]))
            .await
            .context("add the gateway probe")?;
        let served = reqwest::get(format!("{}/ipfs/{}", self.gateway_url, added.cid)).await;
        let ours = match served {
            Ok(answer) if answer.status().is_success() => answer.bytes().await.ok() == Some(bytes),
            _ => false,
        };
        anyhow::ensure!(ours, "another process answers on the gateway's port {}", self.gateway_url);
        ipfs.unpin(&added.cid).await.context("unpin the gateway probe")?;
        Ok(())
    }

    /// The bytes at `path` (`<cid>` or `<cid>/<name>`), through the node's RPC API.
    pub async fn cat(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v0/cat", self.api_url))
            .query(&[("arg", path), ("timeout", "5s")])
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "cat {path}: {}", response.status());
        Ok(response.bytes().await?.to_vec())
    }

    /// What the IPNS name `name` resolves to on this node (`/ipfs/<cid>`). js-ipfs takes the
    /// peer id form only (`12D3Koo…`), not the base36 CID.
    pub async fn resolve_name(&self, name: &str) -> anyhow::Result<String> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v0/name/resolve", self.api_url))
            .query(&[("arg", format!("/ipns/{name}").as_str())])
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "name/resolve {name}: {}",
            response.status()
        );
        let resolved: serde_json::Value = response.json().await?;
        Ok(resolved["Path"].as_str().unwrap_or_default().to_owned())
    }

    /// How many files and directories the node pins (recursive pins).
    pub async fn pins(&self) -> anyhow::Result<usize> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v0/pin/ls", self.api_url))
            .query(&[("type", "recursive"), ("timeout", "5s")])
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "pin/ls: {}", response.status());
        let pins: serde_json::Value = response.json().await?;
        Ok(pins["Keys"].as_object().map_or(0, serde_json::Map::len))
    }

    /// Whether the node pins `cid`.
    pub async fn pinned(&self, cid: &str) -> anyhow::Result<bool> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v0/pin/ls", self.api_url))
            .query(&[("arg", cid), ("cid-base", "base32"), ("timeout", "5s")])
            .send()
            .await?;
        Ok(response.status().is_success()
            && response.json::<serde_json::Value>().await?["Keys"][cid].is_object())
    }
}

impl Drop for TestIpfs {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.repo).ok();
    }
}
