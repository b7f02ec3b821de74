//! `.eth` names bought end to end: anvil (mining a block every second, as a chain does, and each
//! transaction at once) with the platform and ENS deployed from its own npm artifacts (the
//! registry, the `.eth` base registrar, a USD price oracle, `ETHRegistrarController` and the
//! `PublicResolver`), Postgres, the indexer and the API. The purchase is charged and answered at
//! once; the `.eth` registrations job then has the platform's ENS key commit, wait and register
//! the name to the buyer's wallet; the buyer pays fee and gas in credits, once, even when the API
//! is killed between the steps.

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    signers::local::PrivateKeySigner,
};
use decentraspace_abi::{CreditLedger, DomainRegistry, OwnershipMethod};
use decentraspace_clients::ens::{EthBaseRegistrar, EthRegistrarController};
use decentraspace_tests::{
    ApiProcess, IndexerTask, Role, TestApi, TestChain, TestDb, TestEns, TestEthRegistrar, TestIpfs,
    api_config, eventually, indexer_config, problem_type, relay_signed, role_key,
};
use serde_json::json;

/// Credits per micro-ether: 1 credit is 1 USD and ether is 2,000 USD.
const CREDITS_PER_MICRO_ETH: u64 = 2_000;
/// A year, as ENS counts it.
const YEAR: u64 = 365 * 86_400;

/// The chain with the platform, ENS and its `.eth` controller (commitments usable after
/// `min_age` s), the indexer, and the ether rate.
struct EthStack {
    chain: TestChain,
    db: TestDb,
    ens: TestEns,
    eth: TestEthRegistrar,
    resolver: Address,
    _indexer: IndexerTask,
}

impl EthStack {
    async fn start(min_age: u64) -> anyhow::Result<Self> {
        let chain = TestChain::start_with(&["--block-time", "1", "--mixed-mining"]).await?;
        let db = TestDb::create().await?;
        let indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
        let ens = TestEns::deploy(&chain, chain.user(9)).await?;
        let eth = ens.eth_registrar(min_age, 86_400).await?;
        let resolver = ens.public_resolver().await?;
        sqlx::query(
            "insert into fiat_rates (currency, credits_per_subunit, updated_by) values ('ETH', $1, '\\x00')",
        )
        .bind(CREDITS_PER_MICRO_ETH as i64)
        .execute(&mut db.connect().await?)
        .await?;
        Ok(Self { chain, db, ens, eth, resolver, _indexer: indexer })
    }

    /// The platform's ENS key: a funded account of its own.
    fn ens_key(&self) -> String {
        format!("0x{}", alloy::hex::encode(self.chain.user(20).to_bytes()))
    }

    /// The settings purchases of `.eth` names use, as environment variables.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let chain = &self.chain;
        vec![
            ("ENS_RPC_URL", chain.endpoint()),
            ("ENS_CHAIN_ID", chain.chain_id().to_string()),
            ("ENS_REGISTRY", self.ens.registry.to_string()),
            ("ENS_NAME_WRAPPER", self.ens.wrapper.to_string()),
            ("ENS_CONTROLLER", self.eth.controller.to_string()),
            ("ENS_RESOLVER", self.resolver.to_string()),
            ("ENS_PRIVATE_KEY", self.ens_key()),
            ("REGISTRAR_PRIVATE_KEY", role_key(chain, Role::Registrar)),
            ("BILLING_PRIVATE_KEY", role_key(chain, Role::Billing)),
            ("PAYMENT_ORACLE_PRIVATE_KEY", role_key(chain, Role::PaymentOracle)),
            ("OPERATOR_PRIVATE_KEY", role_key(chain, Role::Operator)),
            ("RATE_LIMIT_PER_IP", "10000".into()),
            ("RATE_LIMIT_PER_ACCOUNT", "10000".into()),
        ]
    }

    fn config(&self, ipfs: &TestIpfs) -> decentraspace_api::Config {
        let chain = &self.chain;
        let mut config = api_config(chain, &self.db);
        config.ipfs_api_url = Some(ipfs.api_url.clone());
        config.ipfs_gateway_url = ipfs.gateway_url.clone();
        config.sites_domain = "sites.test".into();
        config.uptime_interval_secs = 0;
        config.ens_rpc_url = Some(chain.endpoint());
        config.ens_chain_id = chain.chain_id();
        config.ens_registry = self.ens.registry;
        config.ens_name_wrapper = self.ens.wrapper;
        config.ens_controller = Some(self.eth.controller);
        config.ens_resolver = Some(self.resolver);
        config.ens_key = Some(self.ens_key().into());
        config.registrar_key = Some(role_key(chain, Role::Registrar).into());
        config.billing_key = Some(role_key(chain, Role::Billing).into());
        config.payment_oracle_key = Some(role_key(chain, Role::PaymentOracle).into());
        config
    }

    async fn fund(&self, account: Address, units: u64) -> anyhow::Result<()> {
        let oracle = self.chain.provider_as(self.chain.role(Role::PaymentOracle));
        CreditLedger::new(self.chain.deployment.contracts.credit_ledger, &oracle)
            .creditFiat(account, U256::from(units), keccak256(format!("eth-funds:{account}")))
            .send()
            .await?
            .get_receipt()
            .await?;
        Ok(())
    }

    async fn balance(&self, account: Address) -> anyhow::Result<U256> {
        let ledger =
            CreditLedger::new(self.chain.deployment.contracts.credit_ledger, self.chain.reader());
        Ok(ledger.balanceOf(account).call().await?)
    }

    /// Who holds `label`.eth at the base registrar, and until when.
    async fn holder(&self, label: &str) -> anyhow::Result<(Address, u64)> {
        let base = EthBaseRegistrar::new(self.eth.base, self.chain.reader());
        let id = U256::from_be_bytes(keccak256(label.as_bytes()).0);
        let until: u64 = base.nameExpires(id).call().await?.saturating_to();
        Ok((base.ownerOf(id).call().await?, until))
    }

    /// Registers `label`.eth to `wallet` through the controller directly, as any wallet can.
    async fn register_directly(&self, wallet: PrivateKeySigner, label: &str) -> anyhow::Result<()> {
        let owner = wallet.address();
        let provider = self.chain.provider_as(wallet);
        let controller = EthRegistrarController::new(self.eth.controller, &provider);
        let secret = B256::repeat_byte(7);
        let commitment = controller
            .makeCommitmentWithConfig(label.into(), owner, secret, Address::ZERO, Address::ZERO)
            .call()
            .await?;
        controller.commit(commitment).send().await?.get_receipt().await?;
        let min_age: u64 = controller.minCommitmentAge().call().await?.saturating_to();
        let committed: u64 = controller.commitments(commitment).call().await?.saturating_to();
        eventually("the commitment to age", || async {
            Ok(self.chain.time().await? >= committed + min_age)
        })
        .await?;
        let price = controller.rentPrice(label.into(), U256::from(YEAR)).call().await?;
        let receipt = controller
            .registerWithConfig(
                label.into(),
                owner,
                U256::from(YEAR),
                secret,
                Address::ZERO,
                Address::ZERO,
            )
            .value(price)
            .send()
            .await?
            .get_receipt()
            .await?;
        anyhow::ensure!(receipt.status(), "the direct registration reverted");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_names_are_bought_through_ens_for_the_buyers_wallet_and_renewed() -> anyhow::Result<()>
{
    let stack = EthStack::start(2).await?;
    let chain = &stack.chain;
    let ipfs = TestIpfs::start().await?;
    let api = TestApi::start_with(stack.config(&ipfs)).await?;
    let (wallet, other_wallet) = (chain.user(0), chain.user(1));
    let user = api.login_registered(&wallet).await?;
    let other = api.login_registered(&other_wallet).await?;

    // The price: ENS's rent (5 USD, 2,500 micro-ether) and the gas, in micro-ether, in credits.
    let (status, price) =
        api.get("/domain/purchase?domain=Caf%C3%A9.eth&years=1", Some(&user.access)).await?;
    assert_eq!(status, 200, "{price}");
    assert_eq!(
        (price["domain"].as_str(), price["currency"].as_str()),
        (Some("café.eth"), Some("ETH"))
    );
    let subunits = price["price_subunits"].as_u64().unwrap_or_default();
    // Gas at anvil's price (about 2 gwei at first) is well under 2,500 micro-ether.
    assert!((2_500..5_000).contains(&subunits), "rent and gas: {price}");
    assert_eq!(price["credits"], json!((subunits * CREDITS_PER_MICRO_ETH).to_string()));

    // Without the credit: 402, and ENS was not asked to commit anything.
    let buy = json!({ "domain": "café.eth" });
    let (status, problem) = api.post("/domain/purchase", Some(&user.access), &buy).await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (402, "insufficient-credit"),
        "{problem}"
    );
    let ens_rows: i64 =
        sqlx::query_scalar("select count(*) from chain_outbox where purpose = 'ens'")
            .fetch_one(&mut stack.db.connect().await?)
            .await?;
    assert_eq!(ens_rows, 0);

    // Bought: charged and answered at once (202), then committed, aged and registered to the
    // buyer's wallet with the resolver, and recorded.
    stack.fund(wallet.address(), 20_000_000).await?;
    let (status, paid) = api.post("/domain/purchase", Some(&user.access), &buy).await?;
    assert_eq!(status, 202, "{paid}");
    assert_eq!(
        (paid["domain"].as_str(), paid["state"].as_str()),
        (Some("café.eth"), Some("registering"))
    );
    let charged: u64 = paid["credits"].as_str().unwrap_or_default().parse()?;
    assert_eq!(
        stack.balance(wallet.address()).await?,
        U256::from(20_000_000 - charged),
        "charged before ENS is asked"
    );
    let path = format!("/domain/purchase/{}", paid["id"]);
    let (status, _) = api.get(&path, Some(&other.access)).await?;
    assert_eq!(status, 404, "another wallet's purchase");
    eventually("the name to be registered and recorded", || async {
        let (_, purchase) = api.get(&path, Some(&user.access)).await?;
        Ok(purchase["state"] == "recorded")
    })
    .await?;
    assert_eq!(
        stack.balance(wallet.address()).await?,
        U256::from(20_000_000 - charged),
        "charged once"
    );
    let (holder, until) = stack.holder("café").await?;
    assert_eq!(holder, wallet.address(), "the buyer's wallet holds the token");
    let now = chain.time().await?;
    assert!(until.abs_diff(now + YEAR) < 120, "a year: {until}");
    assert_eq!(
        TestEns::registry_owner(chain, stack.ens.registry, "café.eth").await?,
        wallet.address()
    );
    let reader = decentraspace_clients::ens::Ens::new(
        &chain.endpoint(),
        stack.ens.registry,
        stack.ens.wrapper,
    )?;
    assert_eq!(reader.resolver("café.eth").await?, Some(stack.resolver));
    assert_eq!(TestEns::addr(chain, stack.resolver, "café.eth").await?, wallet.address());
    let registry = DomainRegistry::new(chain.deployment.contracts.domain_registry, chain.reader());
    let record = registry.domainOf(keccak256("café.eth")).call().await?;
    assert_eq!(
        (record.owner, record.method),
        (wallet.address(), u8::from(OwnershipMethod::Purchase))
    );

    // Held now: another wallet is told so, before anything is charged.
    let (_, price) = api.get("/domain/purchase?domain=caf%C3%A9.eth", Some(&other.access)).await?;
    assert_eq!(price["available"], json!(false), "{price}");
    let (status, _) = api.post("/domain/purchase", Some(&other.access), &buy).await?;
    assert_eq!(status, 409);
    // Only names directly under .eth are sold.
    let (status, problem) = api
        .post("/domain/purchase", Some(&user.access), &json!({ "domain": "blog.café.eth" }))
        .await?;
    assert_eq!((status, problem_type(&problem).as_str()), (400, "bad-request"), "{problem}");

    // Linked to a site with no proof to make: it points by its content hash, not DNS.
    api.deploy_site(&user.access, "blog", "<h1>eth blog</h1>").await?;
    let (status, linked) = api
        .post("/domain/link", Some(&user.access), &json!({ "domain": "café.eth", "site": "blog" }))
        .await?;
    assert_eq!((status, linked["method"].as_str()), (200, Some("purchase")), "{linked}");
    assert_eq!(linked["records"][0]["type"], "contenthash", "{linked}");
    let call = linked["call"]["data"].as_str().unwrap_or_default().parse()?;
    let sent = relay_signed(
        &api,
        chain,
        &wallet,
        &user.access,
        chain.deployment.contracts.domain_registry,
        call,
    )
    .await?;
    assert_eq!(sent["status"], "mined", "{sent}");
    eventually("the content hash call for the site's IPNS name", || async {
        let (status, content) =
            api.get("/domain/ens/caf%C3%A9.eth/contenthash", Some(&user.access)).await?;
        Ok(status == 200
            && content["call"]["to"]
                .as_str()
                .is_some_and(|to| to.eq_ignore_ascii_case(&stack.resolver.to_string())))
    })
    .await?;

    // Renewed through the controller: a year more at ENS and on-chain, charged once.
    let before = stack.balance(wallet.address()).await?;
    let (status, renewed) = api.post("/domain/purchase/renew", Some(&user.access), &buy).await?;
    assert_eq!((status, renewed["state"].as_str()), (200, Some("recorded")), "{renewed}");
    let renewal: u64 = renewed["credits"].as_str().unwrap_or_default().parse()?;
    assert_eq!(stack.balance(wallet.address()).await?, before - U256::from(renewal));
    assert_eq!(stack.holder("café").await?, (wallet.address(), until + YEAR));
    let renewed_record = registry.domainOf(keccak256("café.eth")).call().await?;
    assert_eq!(renewed_record.expiresAt, record.expiresAt + YEAR);
    Ok(())
}

/// Has user 0 buy `name` from an API process, and kills the process once `reached` holds for
/// the purchase's id (its steps are followed by their outbox references). Every process also
/// goes on with the purchases cut off before, so they are cut off at other points too.
async fn buy_until_killed<F, Fut>(
    stack: &EthStack,
    settings: &[(&'static str, String)],
    name: &'static str,
    what: &str,
    mut reached: F,
) -> anyhow::Result<()>
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let wallet = stack.chain.user(0);
    let (mut process, api) = ApiProcess::serving(&stack.chain, &stack.db, settings).await?;
    let user = api.login_registered(&wallet).await?;
    let (status, paid) =
        api.post("/domain/purchase", Some(&user.access), &json!({ "domain": name })).await?;
    assert_eq!(status, 202, "{name}: {paid}");
    let id = paid["id"].as_i64().unwrap_or_default();
    eventually(what, || reached(id)).await?;
    process.kill9();
    let state: String = sqlx::query_scalar("select state from domain_purchases where id = $1")
        .bind(id)
        .fetch_one(&mut stack.db.connect().await?)
        .await?;
    assert_eq!(state, "registering", "{name}: cut off before it was registered");
    Ok(())
}

/// The platform's ENS transactions of `step` (`commit` or `register`) for purchase `id` (`%`:
/// any) in one of `states` (comma-separated).
async fn ens_calls(db: &TestDb, step: &str, id: &str, states: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from chain_outbox
         where purpose = 'ens' and reference like $1 and state = any(string_to_array($2, ','))",
    )
    .bind(format!("ens-{step}:%:{id}:%"))
    .bind(states)
    .fetch_one(&mut db.connect().await?)
    .await?)
}

const MINED: &str = "mined,confirmed";
const ANY: &str = "queued,signed,pending,mined,confirmed,reverted";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eth_purchase_killed_between_its_steps_ends_with_the_buyer_once_or_is_refunded()
-> anyhow::Result<()> {
    // Commitments usable after 6 s: the window a kill aims at.
    let stack = EthStack::start(6).await?;
    let (chain, db) = (&stack.chain, &stack.db);
    let wallet = chain.user(0);
    stack.fund(wallet.address(), 40_000_000).await?;
    let mut settings = stack.settings();
    settings.push(("DOMAIN_RECOVERY_SECS", "0".into()));

    // Killed once its commitment is mined, before the registration.
    buy_until_killed(
        &stack,
        &settings,
        "first.eth",
        "the commitment to be mined",
        |id| async move { Ok(ens_calls(db, "commit", &id.to_string(), MINED).await? == 1) },
    )
    .await?;
    // Killed once its registration is written to the outbox, before its answer.
    buy_until_killed(
        &stack,
        &settings,
        "second.eth",
        "the registration to be written",
        |id| async move { Ok(ens_calls(db, "register", &id.to_string(), ANY).await? == 1) },
    )
    .await?;
    // Charged for a name another wallet registers before the platform could.
    buy_until_killed(
        &stack,
        &settings,
        "sniped.eth",
        "its commitment to be mined",
        |id| async move { Ok(ens_calls(db, "commit", &id.to_string(), MINED).await? == 1) },
    )
    .await?;
    stack.register_directly(chain.user(1), "sniped").await?;
    let prices: Vec<String> = sqlx::query_scalar("select credits::text from domain_purchases")
        .fetch_all(&mut db.connect().await?)
        .await?;
    let all: u64 = prices.iter().map(|p| p.parse::<u64>().unwrap_or_default()).sum();
    assert_eq!(
        stack.balance(wallet.address()).await?,
        U256::from(40_000_000 - all),
        "the three purchases were charged"
    );

    // A replica that settles cut-off purchases: each finished from where it stopped, or refunded.
    settings.retain(|(name, _)| *name != "DOMAIN_RECOVERY_SECS");
    settings.push(("DOMAIN_RECOVERY_SECS", "1".into()));
    settings.push(("DOMAIN_RECOVERY_AFTER_SECS", "0".into()));
    let (_recovery, _api) = ApiProcess::serving(chain, db, &settings).await?;
    eventually("the purchases to be settled", || async {
        let states: Vec<(String, String)> =
            sqlx::query_as("select name, state from domain_purchases order by id")
                .fetch_all(&mut db.connect().await?)
                .await?;
        Ok(states
            == [
                ("first.eth".to_owned(), "recorded".to_owned()),
                ("second.eth".to_owned(), "recorded".to_owned()),
                ("sniped.eth".to_owned(), "refunded".to_owned()),
            ])
    })
    .await?;
    assert_eq!(stack.holder("first").await?.0, wallet.address());
    assert_eq!(stack.holder("second").await?.0, wallet.address());
    assert_eq!(stack.holder("sniped").await?.0, chain.user(1).address());
    let registry = DomainRegistry::new(chain.deployment.contracts.domain_registry, chain.reader());
    for name in ["first.eth", "second.eth"] {
        assert_eq!(registry.ownerOf(keccak256(name)).call().await?, wallet.address(), "{name}");
    }
    assert_eq!(registry.ownerOf(keccak256("sniped.eth")).call().await?, Address::ZERO);
    // Each name committed once and registered once; only the one never registered is refunded.
    assert_eq!(ens_calls(db, "commit", "%", ANY).await?, 3, "one commitment per purchase");
    assert_eq!(ens_calls(db, "register", "%", MINED).await?, 2, "one registration per name bought");
    let prices: Vec<String> =
        sqlx::query_scalar("select credits::text from domain_purchases where state = 'recorded'")
            .fetch_all(&mut db.connect().await?)
            .await?;
    let paid: u64 = prices.iter().map(|p| p.parse::<u64>().unwrap_or_default()).sum();
    let balance = stack.balance(wallet.address()).await?;
    assert_eq!(balance, U256::from(40_000_000 - paid));

    // A renewal a crash left charged, its request gone: carried out once through the controller.
    let (_, ens_until) = stack.holder("first").await?;
    let recorded_until = registry.domainOf(keccak256("first.eth")).call().await?.expiresAt;
    let id: i64 = sqlx::query_scalar(
        "insert into domain_purchases (chain_id, account, name, kind, years, credits, price_subunits, currency, state, expires_at, updated_at)
         values ($1, $2, 'first.eth', 'renewal', 1, 1000000, 500, 'ETH', 'registering', to_timestamp($3), now() - interval '10 minutes')
         returning id",
    )
    .bind(chain.chain_id() as i64)
    .bind(wallet.address().as_slice())
    .bind((recorded_until + YEAR) as f64)
    .fetch_one(&mut db.connect().await?)
    .await?;
    let billing = chain.provider_as(chain.role(Role::Billing));
    CreditLedger::new(chain.deployment.contracts.credit_ledger, &billing)
        .deduct(
            wallet.address(),
            U256::ZERO,
            U256::from(1_000_000u64),
            keccak256(format!("domain-renewal:{}:{id}", chain.chain_id())),
        )
        .send()
        .await?
        .get_receipt()
        .await?;
    eventually("the cut-off renewal to be carried out and recorded", || async {
        let state: String = sqlx::query_scalar("select state from domain_purchases where id = $1")
            .bind(id)
            .fetch_one(&mut db.connect().await?)
            .await?;
        Ok(state == "recorded")
    })
    .await?;
    assert_eq!(stack.holder("first").await?, (wallet.address(), ens_until + YEAR), "renewed once");
    assert_eq!(
        registry.domainOf(keccak256("first.eth")).call().await?.expiresAt,
        recorded_until + YEAR
    );
    assert_eq!(
        stack.balance(wallet.address()).await?,
        balance - U256::from(1_000_000u64),
        "charged once, not refunded"
    );
    Ok(())
}
