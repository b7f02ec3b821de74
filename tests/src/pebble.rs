//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble` package, installed by `make
//! pebble`), for one test: its own HTTPS under a CA made here (the API trusts it through
//! `ACME_CA_ROOTS`), HTTP-01 validation sent to the gateway's plain port, names resolved by the
//! test's DNS server. Stopped when dropped.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

/// A pebble for one test, prepared (ports and certificates) before the API starts and started
/// once the gateway's port is known.
pub struct TestPebble {
    /// The ACME directory, for `ACME_DIRECTORY_URL`.
    pub directory_url: String,
    /// The CA pebble's own HTTPS is signed by (PEM file), for `ACME_CA_ROOTS`.
    pub roots_path: PathBuf,
    dir: tempfile::TempDir,
    listen: u16,
    management: u16,
    child: Option<Child>,
}

impl Drop for TestPebble {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl TestPebble {
    /// Its ports and HTTPS certificate (a CA of its own, `127.0.0.1` and `localhost`).
    pub fn prepare() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "pebble test CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
                .signed_by(&key, &issuer)?;
        let roots_path = dir.path().join("ca.pem");
        std::fs::write(&roots_path, ca_cert.pem())?;
        std::fs::write(dir.path().join("cert.pem"), leaf.pem())?;
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem())?;
        let (listen, management) = (crate::served::free_port()?, crate::served::free_port()?);
        Ok(Self {
            directory_url: format!("https://127.0.0.1:{listen}/dir"),
            roots_path,
            dir,
            listen,
            management,
            child: None,
        })
    }

    /// Starts it: HTTP-01 challenges go to `http_port`, names are resolved by `dns`, and
    /// `nonce_reject_percent` of valid nonces are refused as bad (pebble's own fault injection).
    pub async fn start(
        &mut self,
        http_port: u16,
        dns: SocketAddr,
        nonce_reject_percent: u8,
    ) -> anyhow::Result<()> {
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", self.listen),
                "managementListenAddress": format!("127.0.0.1:{}", self.management),
                "certificate": self.dir.path().join("cert.pem"),
                "privateKey": self.dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": crate::served::free_port()?,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = self.dir.path().join("pebble.json");
        std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
        let log = std::fs::File::create(self.dir.path().join("pebble.log"))?;
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns.to_string())
            // Validate at once instead of after a random pause of up to 15 s.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", nonce_reject_percent.to_string())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("run pebble (make pebble installs it)")?;
        self.child = Some(child);
        let client = self.client()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if client.get(&self.directory_url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("pebble exited ({status}): {}", self.log());
            }
            anyhow::ensure!(Instant::now() < deadline, "pebble did not answer: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client that trusts pebble's own HTTPS.
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.roots_path)?)?;
        Ok(reqwest::Client::builder().tls_certs_only([ca]).build()?)
    }

    /// The root that signs the certificates it issues (PEM), from its management interface.
    pub async fn issuing_root(&self) -> anyhow::Result<String> {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        Ok(self.client()?.get(url).send().await?.error_for_status()?.text().await?)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}
