//! The ENS registry on the test chain, deployed from the compiled artifact the npm package
//! `@ensdomains/ens` ships, and a NameWrapper stand-in (`TestNameWrapper`) with the production
//! `ownerOf(uint256)`.

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, Bytes, U256, keccak256},
    providers::{DynProvider, Provider},
    rpc::types::TransactionRequest,
    signers::local::PrivateKeySigner,
};
use anyhow::Context;
use decentraspace_abi::TestNameWrapper;

use crate::{TestChain, repo_root};

alloy::sol! {
    /// The registry calls a test makes.
    #[sol(rpc)]
    interface TestEnsRegistry {
        function owner(bytes32 node) external view returns (address);
        function setSubnodeOwner(bytes32 node, bytes32 label, address owner) external returns (bytes32);
        function setResolver(bytes32 node, address resolver) external;
    }

    /// The resolver reads a test makes.
    #[sol(rpc)]
    interface TestResolver {
        function contenthash(bytes32 node) external view returns (bytes);
        function addr(bytes32 node) external view returns (address);
    }

    /// The base registrar's owner call that lets a controller register.
    #[sol(rpc)]
    interface TestBaseRegistrarAdmin {
        function addController(address controller) external;
    }
}

/// The `.eth` registrar as ENS deploys it, from the `@ensdomains/ethregistrar` 2.0.5 artifacts:
/// the base registrar (owner of `eth` in the registry), a USD price oracle with a fixed ether
/// price, and the commit-and-reveal controller.
#[derive(Debug, Clone, Copy)]
pub struct TestEthRegistrar {
    /// `ETHRegistrarController`.
    pub controller: Address,
    /// `BaseRegistrarImplementation`.
    pub base: Address,
}

/// The ether price the test oracle gives, in USD with 8 decimals: 2,000 USD.
const ETH_USD_8: u64 = 2_000 * 100_000_000;
/// The rent of any name: 5 USD a year, in attoUSD a second.
const RENT_ATTO_USD_PER_SEC: u64 = 5_000_000_000_000_000_000 / (365 * 86_400);

pub use decentraspace_clients::ens::namehash as ens_namehash;

/// ENS on the test chain, administered by one wallet (the root's owner).
pub struct TestEns {
    /// The registry.
    pub registry: Address,
    /// The NameWrapper stand-in.
    pub wrapper: Address,
    admin: Address,
    provider: DynProvider,
}

impl TestEns {
    /// Deploys the registry (its deployer owns the root) and the wrapper, as `admin`.
    pub async fn deploy(chain: &TestChain, admin: PrivateKeySigner) -> anyhow::Result<Self> {
        let admin_address = admin.address();
        let provider = chain.provider_as(admin);
        let artifact: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                repo_root().join("node_modules/@ensdomains/ens/build/contracts/ENSRegistry.json"),
            )
            .context("the ENS registry artifact (run `npm ci` first)")?,
        )?;
        let code: Bytes = artifact["bytecode"].as_str().context("bytecode")?.parse()?;
        let receipt = provider
            .send_transaction(TransactionRequest::default().with_deploy_code(code))
            .await?
            .get_receipt()
            .await?;
        let registry = receipt.contract_address.context("the registry's address")?;
        let wrapper = *TestNameWrapper::deploy(&provider).await?.address();
        Ok(Self { registry, wrapper, admin: admin_address, provider })
    }

    /// Gives `name` (each label from the root down) to `owner`.
    pub async fn register(&self, name: &str, owner: Address) -> anyhow::Result<()> {
        let registry = TestEnsRegistry::new(self.registry, &self.provider);
        let admin = self.admin;
        let labels: Vec<&str> = name.split('.').collect();
        let mut parent = B256::ZERO;
        for (i, label) in labels.iter().enumerate().rev() {
            let to = if i == 0 { owner } else { admin };
            registry
                .setSubnodeOwner(parent, keccak256(label.as_bytes()), to)
                .send()
                .await?
                .get_receipt()
                .await?;
            parent =
                keccak256([parent.as_slice(), keccak256(label.as_bytes()).as_slice()].concat());
        }
        Ok(())
    }

    /// Wraps `name`: the registry's owner becomes the wrapper, which names `owner` as holder.
    pub async fn wrap(&self, name: &str, owner: Address) -> anyhow::Result<()> {
        self.register(name, self.wrapper).await?;
        TestNameWrapper::new(self.wrapper, &self.provider)
            .setOwner(U256::from_be_bytes(ens_namehash(name).0), owner)
            .send()
            .await?
            .get_receipt()
            .await?;
        Ok(())
    }

    /// Deploys `.eth`'s registrar and controller on this registry (commitments usable after
    /// `min_age` seconds, for `max_age`), as ENS's own deployment does: the base registrar owns
    /// `eth` and lets the controller register.
    pub async fn eth_registrar(
        &self,
        min_age: u64,
        max_age: u64,
    ) -> anyhow::Result<TestEthRegistrar> {
        use alloy::sol_types::SolValue;
        let eth_node = ens_namehash("eth");
        let base = self
            .deploy_artifact(
                "BaseRegistrarImplementation",
                &(self.registry, eth_node).abi_encode_params(),
            )
            .await?;
        TestEnsRegistry::new(self.registry, &self.provider)
            .setSubnodeOwner(B256::ZERO, keccak256("eth"), base)
            .send()
            .await?
            .get_receipt()
            .await?;
        let usd = self
            .deploy_artifact(
                "DummyOracle",
                &alloy::primitives::I256::try_from(ETH_USD_8)?.abi_encode(),
            )
            .await?;
        let prices = self
            .deploy_artifact(
                "StablePriceOracle",
                &(usd, vec![U256::from(RENT_ATTO_USD_PER_SEC)]).abi_encode_params(),
            )
            .await?;
        let controller = self
            .deploy_artifact(
                "ETHRegistrarController",
                &(base, prices, U256::from(min_age), U256::from(max_age)).abi_encode_params(),
            )
            .await?;
        TestBaseRegistrarAdmin::new(base, &self.provider)
            .addController(controller)
            .send()
            .await?
            .get_receipt()
            .await?;
        Ok(TestEthRegistrar { controller, base })
    }

    /// Deploys the `@ensdomains/ethregistrar` artifact `name` with constructor arguments `args`.
    async fn deploy_artifact(&self, name: &str, args: &[u8]) -> anyhow::Result<Address> {
        let path = repo_root()
            .join(format!("node_modules/@ensdomains/ethregistrar/build/contracts/{name}.json"));
        let artifact: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path)
                .with_context(|| format!("{} (run `npm ci` first)", path.display()))?,
        )?;
        let code: Bytes = artifact["bytecode"].as_str().context("bytecode")?.parse()?;
        let receipt = self
            .provider
            .send_transaction(
                TransactionRequest::default()
                    .with_deploy_code(Bytes::from([code.as_ref(), args].concat())),
            )
            .await?
            .get_receipt()
            .await?;
        anyhow::ensure!(receipt.status(), "deploying {name} reverted");
        receipt.contract_address.with_context(|| format!("{name}'s address"))
    }

    /// What `resolver` holds as `name`'s address record.
    pub async fn addr(chain: &TestChain, resolver: Address, name: &str) -> anyhow::Result<Address> {
        Ok(TestResolver::new(resolver, chain.reader()).addr(ens_namehash(name)).call().await?)
    }

    /// Deploys ENS's `PublicResolver` (from the `@ensdomains/resolver` artifact) on this
    /// registry: its address.
    pub async fn public_resolver(&self) -> anyhow::Result<Address> {
        let artifact: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                repo_root()
                    .join("node_modules/@ensdomains/resolver/build/contracts/PublicResolver.json"),
            )
            .context("the PublicResolver artifact (run `npm ci` first)")?,
        )?;
        let code: Bytes = artifact["bytecode"].as_str().context("bytecode")?.parse()?;
        let init =
            [code.as_ref(), &alloy::sol_types::SolValue::abi_encode(&self.registry)].concat();
        let receipt = self
            .provider
            .send_transaction(TransactionRequest::default().with_deploy_code(Bytes::from(init)))
            .await?
            .get_receipt()
            .await?;
        receipt.contract_address.context("the resolver's address")
    }

    /// Sets `name`'s resolver, as its owner `owner`.
    pub async fn set_resolver(
        &self,
        chain: &TestChain,
        owner: PrivateKeySigner,
        name: &str,
        resolver: Address,
    ) -> anyhow::Result<()> {
        TestEnsRegistry::new(self.registry, chain.provider_as(owner))
            .setResolver(ens_namehash(name), resolver)
            .send()
            .await?
            .get_receipt()
            .await?;
        Ok(())
    }

    /// What `resolver` holds as `name`'s content hash.
    pub async fn contenthash(
        chain: &TestChain,
        resolver: Address,
        name: &str,
    ) -> anyhow::Result<Vec<u8>> {
        Ok(TestResolver::new(resolver, chain.reader())
            .contenthash(ens_namehash(name))
            .call()
            .await?
            .to_vec())
    }

    /// The registry's owner of `name` (the wrapper, for a wrapped name).
    pub async fn registry_owner(
        chain: &TestChain,
        registry: Address,
        name: &str,
    ) -> anyhow::Result<Address> {
        Ok(TestEnsRegistry::new(registry, chain.reader()).owner(ens_namehash(name)).call().await?)
    }
}
