//! Custom domains end to end: anvil, Postgres, the indexer, an IPFS node and the API with its
//! gateway, and an authoritative DNS server holding the test's TXT records. A domain proven by
//! its TXT record is recorded on-chain, linked by its owner's own signed transaction through the
//! relay, and served by the gateway on that host; a missing or wrong proof is a 422 that says
//! what to set; other accounts can neither use the owner's site nor unlink the domain; unlinking
//! stops the serving.

use alloy::primitives::{Bytes, keccak256};
use decentraspace_abi::DomainRegistry;
use decentraspace_tests::{
    IndexerTask, Role, TestApi, TestChain, TestDb, TestDns, TestEns, TestIpfs, api_config,
    eventually, forward, indexer_config, problem_type, relay_signed, role_key,
};
use serde_json::{Value, json};

const SITES: &str = "sites.test";
const ZONE: &str = "example.test";

/// The API's settings here: IPFS for the sites, the sites domain, no prober, the verifier key.
fn domain_config(chain: &TestChain, db: &TestDb, ipfs: &TestIpfs) -> decentraspace_api::Config {
    let mut config = api_config(chain, db);
    config.ipfs_api_url = Some(ipfs.api_url.clone());
    config.ipfs_gateway_url = ipfs.gateway_url.clone();
    config.sites_domain = SITES.into();
    config.uptime_interval_secs = 0;
    config.verifier_key = Some(role_key(chain, Role::Verifier).into());
    config
}

/// A request to the gateway for `host`: status and body.
async fn visit(api: &TestApi, host: &str) -> anyhow::Result<(u16, String)> {
    api.gateway_current().await?;
    let response = api.http.get(format!("{}/", api.gateway)).header("host", host).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

fn call_data(call: &Value) -> anyhow::Result<Bytes> {
    Ok(call["data"].as_str().unwrap_or_default().parse()?)
}

#[tokio::test]
async fn a_proven_domain_is_linked_by_its_owner_and_served() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;
    let dns = TestDns::start(ZONE).await?;
    // A Handshake name's zone, answered by an HNS-aware resolver of its own.
    let hns = TestDns::start("blog.hnsname").await?;
    let mut config = domain_config(&chain, &db, &ipfs);
    config.dns_resolver = dns.addr;
    config.hns_resolver = Some(hns.addr);
    let api = TestApi::start_with(config).await?;
    let (owner_wallet, other_wallet) = (chain.user(0), chain.user(1));
    let owner = api.login_registered(&owner_wallet).await?;
    let other = api.login_registered(&other_wallet).await?;
    let registry = chain.deployment.contracts.domain_registry;

    // A site to serve.
    api.deploy_site(&owner.access, "blog", "<h1>blog</h1>").await?;
    assert_eq!(visit(&api, &format!("blog.{SITES}")).await?, (200, "<h1>blog</h1>".into()));

    // The proof to set, bound to the account.
    let domain = format!("www.{ZONE}");
    let (status, challenge) =
        api.get(&format!("/domain/link?domain=WWW.{ZONE}."), Some(&owner.access)).await?;
    assert_eq!(status, 200, "{challenge}");
    assert_eq!(challenge["domain"], json!(domain), "names are normalised");
    let record = challenge["proof"]["name"].as_str().unwrap_or_default().to_owned();
    let value = challenge["proof"]["value"].as_str().unwrap_or_default().to_owned();
    assert_eq!(record, format!("_decentraspace.{domain}"));
    let (_, theirs) =
        api.get(&format!("/domain/link?domain={domain}"), Some(&other.access)).await?;
    assert_ne!(theirs["proof"]["value"], json!(value), "each account has its own proof");

    // No record yet, then a wrong one: 422 with what to set.
    let request = json!({ "domain": domain, "site": "blog" });
    let (status, problem) = api.post("/domain/link", Some(&owner.access), &request).await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (422, "domain-proof-missing"),
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&record) && detail.contains(&value), "{detail}");
    dns.add_txt(&record, theirs["proof"]["value"].as_str().unwrap_or_default()).await?;
    let (status, problem) = api.post("/domain/link", Some(&owner.access), &request).await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (422, "domain-proof-missing"),
        "{problem}"
    );
    assert!(problem["detail"].as_str().unwrap_or_default().contains("found"), "{problem}");
    for (bad, why) in [
        (json!({ "domain": "not a domain", "site": "blog" }), "a bad name"),
        (json!({ "domain": format!("x.{SITES}"), "site": "blog" }), "the platform's own domain"),
        (json!({ "domain": domain, "site": "blog", "method": "carrier-pigeon" }), "a bad method"),
    ] {
        let (status, _) = api.post("/domain/link", Some(&owner.access), &bad).await?;
        assert!(status == 400 || status == 409, "{why}: {status}");
    }
    // Another account cannot link the domain to the owner's site.
    let (status, _) = api.post("/domain/link", Some(&other.access), &request).await?;
    assert_eq!(status, 404, "someone else's site");

    // The right record: the proof is recorded on-chain for the owner; the link is theirs to sign.
    dns.add_txt(&record, &value).await?;
    let (status, verified) = api.post("/domain/link", Some(&owner.access), &request).await?;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(
        (verified["method"].as_str(), verified["linked"].as_bool()),
        (Some("dns"), Some(false))
    );
    assert_eq!(
        verified["records"][0],
        json!({ "type": "CNAME", "name": domain, "value": format!("blog.{SITES}") })
    );
    let node = keccak256(domain.as_bytes());
    let on_chain = DomainRegistry::new(registry, chain.reader());
    assert_eq!(on_chain.ownerOf(node).call().await?, owner_wallet.address());
    let link = call_data(&verified["call"])?;
    // Another wallet relaying the owner's link is refused.
    let forged =
        forward(&chain, &other_wallet, other_wallet.address(), registry, link.clone()).await?;
    let (status, problem) = api.post("/blockchain/credit/", Some(&other.access), &forged).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "forbidden"), "{problem}");
    let sent = relay_signed(&api, &chain, &owner_wallet, &owner.access, registry, link).await?;
    assert_eq!(sent["status"], "mined", "{sent}");

    // The gateway serves the site on the linked host.
    eventually("the linked domain to be served", || async {
        Ok(visit(&api, &domain).await? == (200, "<h1>blog</h1>".to_owned()))
    })
    .await?;
    assert_eq!(visit(&api, &format!("{domain}:8080")).await?.0, 200, "with a port too");
    let (_, again) = api.post("/domain/link", Some(&owner.access), &request).await?;
    assert_eq!((again["linked"].as_bool(), &again["call"]), (Some(true), &Value::Null), "{again}");

    // Only the owner unlinks; then the host is no longer served.
    let unlink = json!({ "domain": domain });
    let (status, problem) = api.post("/domain/unlink", Some(&other.access), &unlink).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "forbidden"), "{problem}");
    let (status, _) = api
        .post("/domain/unlink", Some(&owner.access), &json!({ "domain": format!("nope.{ZONE}") }))
        .await?;
    assert_eq!(status, 404);
    let (status, call) = api.post("/domain/unlink", Some(&owner.access), &unlink).await?;
    assert_eq!((status, call["function"].as_str()), (200, Some("unlink")), "{call}");
    let sent =
        relay_signed(&api, &chain, &owner_wallet, &owner.access, registry, call_data(&call)?)
            .await?;
    assert_eq!(sent["status"], "mined", "{sent}");
    eventually("the unlinked domain to stop being served", || async {
        Ok(visit(&api, &domain).await?.0 == 404)
    })
    .await?;
    assert_eq!(visit(&api, &format!("blog.{SITES}")).await?.0, 200, "the site itself still is");
    let (status, _) = api.post("/domain/unlink", Some(&owner.access), &unlink).await?;
    assert_eq!(status, 409, "not linked any more");

    // A Handshake name is proven the same way, through the HNS-aware resolver: the DNS
    // resolver's answer does not count for it.
    let hns_link = json!({ "domain": "blog.hnsname", "site": "blog", "method": "handshake" });
    let (_, hns_proof) = api.get("/domain/link?domain=blog.hnsname", Some(&owner.access)).await?;
    let (hns_record, hns_value) = (
        hns_proof["proof"]["name"].as_str().unwrap_or_default().to_owned(),
        hns_proof["proof"]["value"].as_str().unwrap_or_default().to_owned(),
    );
    let (status, _) = api.post("/domain/link", Some(&owner.access), &hns_link).await?;
    assert_eq!(status, 422, "no proof yet");
    hns.add_txt(&hns_record, &hns_value).await?;
    let (status, verified) = api.post("/domain/link", Some(&owner.access), &hns_link).await?;
    assert_eq!((status, verified["method"].as_str()), (200, Some("handshake")), "{verified}");
    let on_chain = DomainRegistry::new(registry, chain.reader())
        .domainOf(keccak256("blog.hnsname"))
        .call()
        .await?;
    assert_eq!((on_chain.owner, on_chain.method), (owner_wallet.address(), 4), "Handshake");
    Ok(())
}

/// The chain with ENS (its registry and NameWrapper stand-in, administered by user 9),
/// Postgres, the indexer and IPFS; then [`EnsSetup::api`] with ENS configured.
struct EnsSetup {
    chain: TestChain,
    db: TestDb,
    ipfs: TestIpfs,
    ens: TestEns,
    _indexer: IndexerTask,
}

impl EnsSetup {
    async fn start() -> anyhow::Result<Self> {
        let chain = TestChain::start().await?;
        let db = TestDb::create().await?;
        let indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
        let ipfs = TestIpfs::start().await?;
        let ens = TestEns::deploy(&chain, chain.user(9)).await?;
        Ok(Self { chain, db, ipfs, ens, _indexer: indexer })
    }

    /// The API, reading this ENS.
    async fn api(&self) -> anyhow::Result<TestApi> {
        let mut config = domain_config(&self.chain, &self.db, &self.ipfs);
        config.ens_rpc_url = Some(self.chain.endpoint());
        config.ens_registry = self.ens.registry;
        config.ens_name_wrapper = self.ens.wrapper;
        TestApi::start_with(config).await
    }
}

#[tokio::test]
async fn ens_names_link_when_the_wallet_owns_them_directly_or_wrapped() -> anyhow::Result<()> {
    let setup = EnsSetup::start().await?;
    let (chain, ens) = (&setup.chain, &setup.ens);
    let (owner_wallet, other_wallet) = (chain.user(0), chain.user(1));
    ens.register("alice.eth", owner_wallet.address()).await?;
    ens.register("bob.eth", other_wallet.address()).await?;
    ens.wrap("wrapped.eth", owner_wallet.address()).await?;
    ens.register("café.eth", owner_wallet.address()).await?;
    let api = setup.api().await?;
    let owner = api.login_registered(&owner_wallet).await?;
    api.deploy_site(&owner.access, "blog", "<h1>ens blog</h1>").await?;
    let registry = DomainRegistry::new(chain.deployment.contracts.domain_registry, chain.reader());
    let link = |domain: &str| json!({ "domain": domain, "site": "blog", "method": "ens" });

    // Another wallet's name: 403; a name nobody holds: 422.
    let (status, problem) = api.post("/domain/link", Some(&owner.access), &link("bob.eth")).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "forbidden"), "{problem}");
    let (status, problem) =
        api.post("/domain/link", Some(&owner.access), &link("nobody.eth")).await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (422, "domain-proof-missing"),
        "{problem}"
    );
    assert_eq!(
        registry.ownerOf(keccak256("bob.eth")).call().await?,
        alloy::primitives::Address::ZERO
    );

    // The wallet's own name: recorded, and pointed at the site's content.
    let (status, verified) =
        api.post("/domain/link", Some(&owner.access), &link("alice.eth")).await?;
    assert_eq!((status, verified["method"].as_str()), (200, Some("ens")), "{verified}");
    assert_eq!(verified["records"][0]["type"], "contenthash");
    assert!(verified["records"][0]["value"].as_str().is_some_and(|v| v.starts_with("ipfs://b")));
    assert_eq!(registry.ownerOf(keccak256("alice.eth")).call().await?, owner_wallet.address());
    let sent = relay_signed(
        &api,
        chain,
        &owner_wallet,
        &owner.access,
        chain.deployment.contracts.domain_registry,
        call_data(&verified["call"])?,
    )
    .await?;
    assert_eq!(sent["status"], "mined", "{sent}");
    eventually("the ENS name to be served", || async {
        Ok(visit(&api, "alice.eth").await? == (200, "<h1>ens blog</h1>".to_owned()))
    })
    .await?;

    // A wrapped name is the wallet's through the NameWrapper.
    assert_eq!(
        TestEns::registry_owner(chain, ens.registry, "wrapped.eth").await?,
        ens.wrapper,
        "the registry names the wrapper"
    );
    let (status, wrapped) =
        api.post("/domain/link", Some(&owner.access), &link("wrapped.eth")).await?;
    assert_eq!(status, 200, "{wrapped}");
    assert_eq!(registry.ownerOf(keccak256("wrapped.eth")).call().await?, owner_wallet.address());

    // A name in any script links in its ENSIP-15 form, however it is typed; a name ENSIP-15
    // refuses (an invisible joiner) is a 400 before anything is read.
    let (status, accented) =
        api.post("/domain/link", Some(&owner.access), &link("Café.ETH")).await?;
    assert_eq!((status, accented["domain"].as_str()), (200, Some("café.eth")), "{accented}");
    assert_eq!(registry.ownerOf(keccak256("café.eth")).call().await?, owner_wallet.address());
    let (status, problem) =
        api.post("/domain/link", Some(&owner.access), &link("ca\u{200d}fe.eth")).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (400, "bad-request"), "{problem}");
    Ok(())
}

#[tokio::test]
async fn a_domain_whose_proof_is_gone_is_unlinked_after_the_grace_period() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;
    let dns = TestDns::start(ZONE).await?;
    let mut config = domain_config(&chain, &db, &ipfs);
    config.dns_resolver = dns.addr;
    config.domain_recheck_secs = 1;
    config.domain_proof_grace_secs = 3;
    let api = TestApi::start_with(config).await?;
    let wallet = chain.user(0);
    let owner = api.login_registered(&wallet).await?;
    api.deploy_site(&owner.access, "shop", "<h1>shop</h1>").await?;
    let domain = format!("shop.{ZONE}");
    let (_, challenge) =
        api.get(&format!("/domain/link?domain={domain}"), Some(&owner.access)).await?;
    let record = challenge["proof"]["name"].as_str().unwrap_or_default().to_owned();
    dns.add_txt(&record, challenge["proof"]["value"].as_str().unwrap_or_default()).await?;
    let (status, verified) = api
        .post("/domain/link", Some(&owner.access), &json!({ "domain": domain, "site": "shop" }))
        .await?;
    assert_eq!(status, 200, "{verified}");
    let registry = chain.deployment.contracts.domain_registry;
    let sent =
        relay_signed(&api, &chain, &wallet, &owner.access, registry, call_data(&verified["call"])?)
            .await?;
    assert_eq!(sent["status"], "mined", "{sent}");
    eventually("the domain to be served", || async { Ok(visit(&api, &domain).await?.0 == 200) })
        .await?;

    // While the proof stands, re-checks change nothing.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(visit(&api, &domain).await?.0, 200);

    // The record goes: after the grace period the verifier unlinks the domain on-chain.
    dns.remove_txt(&record).await?;
    let mut conn = db.connect().await?;
    eventually("the missing proof to be noticed", || async {
        let failing: Option<Option<chrono::DateTime<chrono::Utc>>> =
            sqlx::query_scalar("select failing_since from domain_checks where name = $1")
                .bind(&domain)
                .fetch_optional(&mut db.connect().await?)
                .await?;
        Ok(failing.flatten().is_some())
    })
    .await?;
    assert_eq!(visit(&api, &domain).await?.0, 200, "still served within the grace period");
    eventually("the domain to be unlinked", || async { Ok(visit(&api, &domain).await?.0 == 404) })
        .await?;
    let on_chain = DomainRegistry::new(registry, chain.reader())
        .domainOf(keccak256(domain.as_bytes()))
        .call()
        .await?;
    assert_eq!(on_chain.serviceId, alloy::primitives::U256::ZERO, "unlinked on-chain");
    assert_eq!(on_chain.owner, wallet.address(), "the name stays its owner's");
    let last_error: Option<String> =
        sqlx::query_scalar("select last_error from domain_checks where name = $1")
            .bind(&domain)
            .fetch_one(&mut conn)
            .await?;
    assert!(last_error.is_some_and(|e| e.contains("no longer holds")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ens_name_follows_its_sites_deploys_through_the_sites_ipns_name() -> anyhow::Result<()> {
    let setup = EnsSetup::start().await?;
    let (chain, ens, ipfs) = (&setup.chain, &setup.ens, &setup.ipfs);
    let owner_wallet = chain.user(0);
    ens.register("shop.eth", owner_wallet.address()).await?;
    let resolver = ens.public_resolver().await?;
    ens.set_resolver(chain, owner_wallet.clone(), "shop.eth", resolver).await?;
    let api = setup.api().await?;
    let owner = api.login_registered(&owner_wallet).await?;
    let other = api.login_registered(&chain.user(1)).await?;
    api.deploy_site(&owner.access, "shop", "<h1>v1</h1>").await?;
    let (status, verified) = api
        .post(
            "/domain/link",
            Some(&owner.access),
            &json!({ "domain": "shop.eth", "site": "shop", "method": "ens" }),
        )
        .await?;
    assert_eq!(status, 200, "{verified}");
    let registry = chain.deployment.contracts.domain_registry;
    let sent = relay_signed(
        &api,
        chain,
        &owner_wallet,
        &owner.access,
        registry,
        call_data(&verified["call"])?,
    )
    .await?;
    assert_eq!(sent["status"], "mined", "{sent}");

    // Once the link is indexed and the site's IPNS name published: the call to sign, once.
    let path = "/domain/ens/Shop.ETH/contenthash";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let content = loop {
        let (status, body) = api.get(path, Some(&owner.access)).await?;
        if status == 200 {
            break body;
        }
        // Until then: the link not indexed (404) or the name not published (409).
        assert!(status == 404 || status == 409, "{status} {body}");
        anyhow::ensure!(std::time::Instant::now() < deadline, "no contenthash call: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (content["name"].as_str(), content["site"].as_str()),
        (Some("shop.eth"), Some("shop"))
    );
    assert_eq!(content["points_at_site"], false, "{content}");
    assert_eq!(content["current_contenthash"], "0x", "{content}");
    let ipns = content["ipns_name"].as_str().unwrap_or_default().to_owned();
    assert!(ipns.starts_with("k51"), "{content}");
    // The node here (js-ipfs) resolves the peer id form of the same name.
    let peer_id = decentraspace_clients::ens::ipns_peer_id(&ipns)?;
    // ENSIP-7: ipns-ns, then the name's CID (the node resolves the same name in base36).
    let wanted = content["contenthash"].as_str().unwrap_or_default().to_owned();
    assert!(wanted.starts_with("0xe50101720024080112"), "{content}");
    let (_, site) = api.get("/hosting/status/shop", Some(&owner.access)).await?;
    let first = site["current_deployment"]["cid"].as_str().unwrap_or_default().to_owned();
    assert_eq!(ipfs.resolve_name(&peer_id).await?, format!("/ipfs/{first}"));
    // Another wallet's view of it: not theirs.
    let (status, _) = api.get(path, Some(&other.access)).await?;
    assert_eq!(status, 404);

    // The owner signs it; the resolver then points at the site.
    let call = &content["call"];
    assert_eq!(
        call["to"].as_str().map(str::to_lowercase),
        Some(resolver.to_string().to_lowercase())
    );
    let data: Bytes = call["data"].as_str().unwrap_or_default().parse()?;
    alloy::providers::Provider::send_transaction(
        &chain.provider_as(owner_wallet.clone()),
        alloy::rpc::types::TransactionRequest::default().to(resolver).input(data.into()),
    )
    .await?
    .get_receipt()
    .await?;
    assert_eq!(
        format!("0x{}", hex::encode(TestEns::contenthash(chain, resolver, "shop.eth").await?)),
        wanted
    );
    let (_, content) = api.get(path, Some(&owner.access)).await?;
    assert_eq!(
        (content["points_at_site"].as_bool(), &content["call"]),
        (Some(true), &Value::Null),
        "{content}"
    );

    // A redeploy moves the IPNS name; the content hash stays as it is and still points at it.
    api.deploy_site(&owner.access, "shop", "<h1>v2</h1>").await?;
    let (_, site) = api.get("/hosting/status/shop", Some(&owner.access)).await?;
    let second = site["current_deployment"]["cid"].as_str().unwrap_or_default().to_owned();
    assert_ne!(second, first);
    eventually("the IPNS name to follow the deploy", || async {
        Ok(ipfs.resolve_name(&peer_id).await? == format!("/ipfs/{second}"))
    })
    .await?;
    let (_, content) = api.get(path, Some(&owner.access)).await?;
    assert_eq!(
        (content["ipns_name"].as_str(), content["points_at_site"].as_bool()),
        (Some(ipns.as_str()), Some(true))
    );
    Ok(())
}
