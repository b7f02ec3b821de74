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
    }
}

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
