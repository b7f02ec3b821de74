//! A local Arweave gateway (arlocal from package.json) for one test, on a free loopback port,
//! with a funded wallet of its own; stopped and removed when dropped.

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

/// Winston minted to the test wallet: enough for many gigabytes at arlocal's price.
const FUNDS: &str = "100000000000000000";

/// A running arlocal and the wallet the API pays with.
#[derive(Debug)]
pub struct TestArweave {
    /// Its HTTP API and gateway, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The funded wallet (an RSA JWK file).
    pub wallet_file: PathBuf,
    /// The wallet's address.
    pub address: String,
    child: Child,
    dir: PathBuf,
}

impl TestArweave {
    /// Starts arlocal, makes a wallet and funds it. A port another process took meanwhile
    /// shows as an early exit; then it starts over on another port.
    pub async fn start() -> anyhow::Result<Self> {
        on_free_ports("arlocal (ARLOCAL_LOG=1 shows its output)", Self::try_start).await
    }

    async fn try_start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("ds-arlocal-{}-{port}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir)?;
        let wallet_file = dir.join("wallet.json");
        let made = Command::new("node")
            .arg(repo_root().join("tools/arlocal/wallet.cjs"))
            .arg(&wallet_file)
            .output()
            .context("make an Arweave wallet (node)")?;
        anyhow::ensure!(
            made.status.success(),
            "wallet.cjs: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let address = String::from_utf8(made.stdout)?.trim().to_owned();
        let quiet = std::env::var_os("ARLOCAL_LOG").is_none();
        let child = Command::new("node")
            .arg(repo_root().join("tools/arlocal/serve.cjs"))
            .arg(port.to_string())
            .arg(dir.join("db"))
            .stdout(if quiet { Stdio::null() } else { Stdio::inherit() })
            .stderr(if quiet { Stdio::null() } else { Stdio::inherit() })
            .spawn()
            .context("start arlocal (run `npm ci` first)")?;
        let mut node =
            Self { url: format!("http://127.0.0.1:{port}"), wallet_file, address, child, dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = node.child.try_wait()? {
                bail!("arlocal exited ({status})");
            }
            if let Ok(answer) = http.get(format!("{}/info", node.url)).send().await
                && answer.status().is_success()
            {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no answer within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let minted = http.get(format!("{}/mint/{}/{FUNDS}", node.url, node.address)).send().await?;
        anyhow::ensure!(minted.status().is_success(), "mint: {}", minted.status());
        Ok(node)
    }

    /// Mines the pending transactions into a block.
    pub async fn mine(&self) -> anyhow::Result<()> {
        let answer = reqwest::get(format!("{}/mine", self.url)).await?;
        anyhow::ensure!(answer.status().is_success(), "mine: {}", answer.status());
        Ok(())
    }

    /// A transaction's data, read back through the gateway.
    pub async fn data(&self, id: &str) -> anyhow::Result<Vec<u8>> {
        let answer = reqwest::get(format!("{}/{id}", self.url)).await?;
        anyhow::ensure!(answer.status().is_success(), "data of {id}: {}", answer.status());
        Ok(answer.bytes().await?.to_vec())
    }

    /// A transaction's tags, decoded (from `/tx/<id>`).
    pub async fn tags(&self, id: &str) -> anyhow::Result<Vec<(String, String)>> {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        let answer = reqwest::get(format!("{}/tx/{id}", self.url)).await?;
        anyhow::ensure!(answer.status().is_success(), "tx {id}: {}", answer.status());
        let tx: serde_json::Value = answer.json().await?;
        let decode = |v: &serde_json::Value| -> anyhow::Result<String> {
            Ok(String::from_utf8(B64.decode(v.as_str().unwrap_or_default())?)?)
        };
        tx["tags"]
            .as_array()
            .context("tags")?
            .iter()
            .map(|t| Ok((decode(&t["name"])?, decode(&t["value"])?)))
            .collect()
    }
}

impl Drop for TestArweave {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
