//! HTTPS on linked domains, end to end: anvil, Postgres, the indexer, IPFS, the API with its
//! gateway (plain and TLS listeners), an authoritative DNS server, and pebble (Let's Encrypt's
//! ACME test server) validating HTTP-01 by connecting to the gateway at the address the DNS
//! server gives. A linked domain gets a certificate and is served over HTTPS to a client that
//! trusts pebble's root, plain HTTP is redirected, an unknown host causes no order, a second
//! gateway process serves the stored certificate, a failing order backs off and retries, and a
//! certificate is renewed once it is past its renewal point.

use std::{net::Ipv4Addr, time::Duration};

use alloy::primitives::Bytes;
use decentraspace_tests::{
    ApiProcess, IndexerTask, Role, TestApi, TestChain, TestDb, TestDns, TestIpfs, TestPebble,
    api_config, free_port, indexer_config, relay_signed, role_key,
};
use serde_json::{Value, json};

const SITES: &str = "sites.test";
const ZONE: &str = "example.test";
const PAGE: &str = "<h1>shop</h1>";

/// Everything one test runs.
struct Setup {
    chain: TestChain,
    db: TestDb,
    dns: TestDns,
    pebble: TestPebble,
    api: TestApi,
    tls_port: u16,
    _indexer: IndexerTask,
    _ipfs: TestIpfs,
}

/// The stack with an ACME directory (pebble, started once the gateway's port is known and
/// refusing `nonce_reject_percent` of nonces), certificate passes every second and failures
/// retried after a second; `configure` changes the rest.
async fn setup(
    nonce_reject_percent: u8,
    configure: impl FnOnce(&mut decentraspace_api::Config),
) -> anyhow::Result<Setup> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;
    let dns = TestDns::start(ZONE).await?;
    let mut pebble = TestPebble::prepare()?;
    let tls_port = free_port()?;
    let mut config = api_config(&chain, &db);
    config.ipfs_api_url = Some(ipfs.api_url.clone());
    config.ipfs_gateway_url = ipfs.gateway_url.clone();
    config.sites_domain = SITES.into();
    config.uptime_interval_secs = 0;
    config.verifier_key = Some(role_key(&chain, Role::Verifier).into());
    config.dns_resolver = dns.addr;
    config.acme_directory_url = Some(pebble.directory_url.clone());
    config.acme_ca_roots = Some(pebble.roots_path.clone());
    config.gateway_tls_listen = Some(([127, 0, 0, 1], tls_port).into());
    config.gateway_public_https_port = tls_port;
    config.tls_check_secs = 1;
    config.tls_retry_secs = 1;
    configure(&mut config);
    let api = TestApi::start_with(config).await?;
    let gateway_port: u16 = api.gateway.rsplit(':').next().unwrap_or_default().parse()?;
    pebble.start(gateway_port, dns.addr, nonce_reject_percent).await?;
    Ok(Setup { chain, db, dns, pebble, api, tls_port, _indexer: indexer, _ipfs: ipfs })
}

impl Setup {
    /// Deploys site `shop` for user 0 and links `domain` to it (proof, then the owner's signed
    /// link through the relay): the owner's access token.
    async fn link(&self, domain: &str) -> anyhow::Result<String> {
        let wallet = self.chain.user(0);
        let owner = self.api.login_registered(&wallet).await?;
        self.api.deploy_site(&owner.access, "shop", PAGE).await?;
        let (_, challenge) =
            self.api.get(&format!("/domain/link?domain={domain}"), Some(&owner.access)).await?;
        self.dns
            .add_txt(
                challenge["proof"]["name"].as_str().unwrap_or_default(),
                challenge["proof"]["value"].as_str().unwrap_or_default(),
            )
            .await?;
        let request = json!({ "domain": domain, "site": "shop" });
        let (status, verified) =
            self.api.post("/domain/link", Some(&owner.access), &request).await?;
        anyhow::ensure!(status == 200, "link: {status} {verified}");
        let call: Bytes = verified["call"]["data"].as_str().unwrap_or_default().parse()?;
        let registry = self.chain.deployment.contracts.domain_registry;
        let sent =
            relay_signed(&self.api, &self.chain, &wallet, &owner.access, registry, call).await?;
        anyhow::ensure!(sent["status"] == "mined", "{sent}");
        Ok(owner.access)
    }

    /// `domain`'s certificate status, once `done` holds for it (within `secs`).
    async fn certificate_when(
        &self,
        access: &str,
        domain: &str,
        secs: u64,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, body) =
                self.api.get(&format!("/domain/certificate/{domain}"), Some(access)).await?;
            if status == 200 && done(&body) {
                return Ok(body);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the certificate of {domain} never got there: {status} {body}\npebble:\n{}",
                self.pebble.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The certificate the gateway serves `domain` with (a new connection), after checking that
    /// it serves the page with it.
    async fn served_certificate(&self, domain: &str) -> anyhow::Result<Vec<u8>> {
        let client = self.https_client(domain, self.tls_port).await?;
        let response = client.get(format!("https://{domain}:{}/", self.tls_port)).send().await?;
        let certificate = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .map(<[u8]>::to_vec)
            .ok_or_else(|| anyhow::anyhow!("no peer certificate"))?;
        anyhow::ensure!(response.status() == 200, "status {}", response.status());
        anyhow::ensure!(response.text().await? == PAGE, "another page");
        Ok(certificate)
    }

    /// A client that trusts only pebble's issuing root and reaches `domain` at `port` here.
    async fn https_client(&self, domain: &str, port: u16) -> anyhow::Result<reqwest::Client> {
        self.api.gateway_current().await?;
        let root = reqwest::Certificate::from_pem(self.pebble.issuing_root().await?.as_bytes())?;
        Ok(reqwest::Client::builder()
            .tls_certs_only([root])
            .resolve(domain, ([127, 0, 0, 1], port).into())
            .redirect(reqwest::redirect::Policy::none())
            .tls_info(true)
            .build()?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_domain_is_served_over_https_with_a_certificate_every_replica_serves()
-> anyhow::Result<()> {
    // One nonce in five refused as bad: pebble's fault injection, retried by the client and by
    // the orderer's back-off.
    let setup = setup(20, |_| {}).await?;
    let domain = format!("shop.{ZONE}");
    setup.dns.add_a(&domain, Ipv4Addr::LOCALHOST).await?;

    // A host that is not linked: no certificate in the handshake, and no order for it.
    let stranger = format!("stranger.{ZONE}");
    setup.dns.add_a(&stranger, Ipv4Addr::LOCALHOST).await?;
    let client = setup.https_client(&stranger, setup.tls_port).await?;
    let refused = client.get(format!("https://{stranger}:{}/", setup.tls_port)).send().await;
    assert!(refused.is_err(), "an unknown host got a TLS answer: {refused:?}");
    setup.api.gateway_current().await?;
    let plain = setup
        .api
        .http
        .get(format!("{}/", setup.api.gateway))
        .header("host", &stranger)
        .send()
        .await?;
    assert_eq!(plain.status(), 404);

    let access = setup.link(&domain).await?;
    let issued = setup.certificate_when(&access, &domain, 90, |c| c["state"] == "issued").await?;
    assert!(issued["not_after"].is_string(), "{issued}");

    // Over HTTPS, by name, trusted through pebble's root; HSTS on the answer.
    let client = setup.https_client(&domain, setup.tls_port).await?;
    let response = client.get(format!("https://{domain}:{}/", setup.tls_port)).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("strict-transport-security").and_then(|v| v.to_str().ok()),
        Some("max-age=31536000")
    );
    assert_eq!(response.text().await?, PAGE);

    // Plain HTTP to the name goes to HTTPS, path and query kept; the sites domain (no wildcard
    // configured) is still served in plain HTTP.
    let redirect =
        client.get(format!("{}/a/b?c=d", setup.api.gateway)).header("host", &domain).send().await?;
    assert_eq!(redirect.status(), 308);
    assert_eq!(
        redirect.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("https://{domain}:{}/a/b?c=d", setup.tls_port).as_str())
    );
    let sites = setup
        .api
        .http
        .get(format!("{}/", setup.api.gateway))
        .header("host", format!("shop.{SITES}"))
        .send()
        .await?;
    assert_eq!(sites.status(), 200);

    // Nothing was ever ordered or stored for the stranger.
    let (ordered, stored): (i64, i64) = sqlx::query_as(
        "select (select count(*) from tls_orders where domain <> $1),
                (select count(*) from tls_certificates where domain <> $1)",
    )
    .bind(&domain)
    .fetch_one(&mut setup.db.connect().await?)
    .await?;
    assert_eq!((ordered, stored), (0, 0));
    // The key is sealed at rest: no PEM private key in the table.
    let sealed: Vec<u8> = sqlx::query_scalar("select key_sealed from tls_certificates")
        .fetch_one(&mut setup.db.connect().await?)
        .await?;
    assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"));

    // A second gateway (another process, the same database) serves the stored certificate.
    let second_tls = free_port()?;
    let (_process, _second) = ApiProcess::serving_with_gateway(
        &setup.chain,
        &setup.db,
        &[
            ("GATEWAY_TLS_LISTEN", format!("127.0.0.1:{second_tls}")),
            ("SITES_DOMAIN", SITES.to_owned()),
            ("IPFS_API_URL", setup._ipfs.api_url.clone()),
            ("IPFS_GATEWAY_URL", setup._ipfs.gateway_url.clone()),
            ("UPTIME_INTERVAL_SECS", "0".to_owned()),
            // The budgets of the in-process API: both replicas lease from the same shared ones.
            ("RATE_LIMIT_PER_IP", "10000".to_owned()),
            ("RATE_LIMIT_PER_ACCOUNT", "10000".to_owned()),
        ],
    )
    .await?;
    let client = setup.https_client(&domain, second_tls).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.get(format!("https://{domain}:{second_tls}/")).send().await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                assert_eq!(response.text().await?, PAGE);
                break;
            }
            Err(err) => anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the second gateway never served the certificate: {err:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_order_backs_off_and_retries_and_a_certificate_is_renewed_before_it_ends()
-> anyhow::Result<()> {
    // Renewed once a ten-millionth of its lifetime has passed: pebble's certificates last five
    // years, so about sixteen seconds after issue.
    let setup = setup(0, |config| config.tls_renew_after_fraction = 1e-7).await?;
    let domain = format!("shop.{ZONE}");
    // Linked, but the name does not resolve yet: pebble cannot validate it.
    let access = setup.link(&domain).await?;
    let failed = setup
        .certificate_when(&access, &domain, 60, |c| {
            c["state"] == "retrying" && c["attempts"].as_i64() >= Some(2)
        })
        .await?;
    let reason = failed["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains(&domain), "the reason names the domain: {failed}");
    assert!(failed["next_attempt_at"].is_string(), "{failed}");

    // Once it resolves, the next attempt succeeds and the failures are forgotten.
    setup.dns.add_a(&domain, Ipv4Addr::LOCALHOST).await?;
    let issued = setup.certificate_when(&access, &domain, 60, |c| c["state"] == "issued").await?;
    assert_eq!(issued["attempts"], 0, "{issued}");
    assert_eq!(issued["last_error"], Value::Null, "{issued}");
    let first = setup.served_certificate(&domain).await?;

    // Past its renewal point it is ordered again and the new one is served.
    let first_issue = issued["issued_at"].as_str().unwrap_or_default().to_owned();
    let renewed = setup
        .certificate_when(&access, &domain, 60, |c| {
            c["issued_at"].as_str().is_some_and(|at| at != first_issue)
        })
        .await?;
    assert_eq!(renewed["state"], "issued", "{renewed}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while setup.served_certificate(&domain).await? == first {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
