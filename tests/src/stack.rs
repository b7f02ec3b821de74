//! The end-to-end tier's one harness (in the way of zero-to-production's `spawn_app()`): anvil with
//! the platform deployed by the real deploy script, a fresh database, the indexer following the
//! chain, optionally an IPFS node, and the API in-process on free ports, configured as each test
//! asks.

use std::time::Duration;

use alloy::providers::Provider;
use decentraspace_abi::{AccountRegistry, Tier};
use decentraspace_api::Config;

use crate::{
    IndexerTask, Role, Session, TestApi, TestChain, TestDb, TestIpfs, api_config, eventually,
    indexer_config, wait_for_checkpoint,
};

/// A running stack; every part stops when it is dropped.
#[derive(Debug)]
pub struct Stack {
    /// The chain, with the platform deployed.
    pub chain: TestChain,
    /// The database the indexer mirrors into and the API serves from.
    pub db: TestDb,
    /// The API.
    pub api: TestApi,
    /// The IPFS node, when asked for.
    pub ipfs: Option<TestIpfs>,
    /// The configuration the API runs with.
    pub config: Config,
    /// The indexer (no finality depth: it follows the head).
    pub indexer: IndexerTask,
}

type Configure = Box<dyn FnOnce(&mut Config, &TestChain) + Send>;

/// What a test asks of its stack.
#[derive(Default)]
pub struct StackBuilder {
    ipfs: bool,
    frozen_time: bool,
    caught_up: bool,
    configure: Vec<Configure>,
}

impl std::fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder")
            .field("ipfs", &self.ipfs)
            .field("frozen_time", &self.frozen_time)
            .field("caught_up", &self.caught_up)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// A stack to configure.
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// The plain stack: the chain, the database, the indexer and the API with the test
    /// configuration ([`api_config`]).
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    /// User `n` signed in, set to the Paid tier by the operator and given `credits` units (none
    /// when 0), once the index shows both.
    pub async fn paid_user(&self, n: usize, credits: u64) -> anyhow::Result<Session> {
        let (chain, api) = (&self.chain, &self.api);
        let user = chain.user(n);
        let session = api.login_registered(&user).await?;
        let operator = chain.provider_as(chain.role(Role::Operator));
        let receipt = AccountRegistry::new(chain.deployment.contracts.account_registry, &operator)
            .setTier(user.address(), Tier::Paid.into(), 0)
            .send()
            .await?
            .get_receipt()
            .await?;
        anyhow::ensure!(receipt.status(), "setTier reverted");
        if credits > 0 {
            chain.credit(user.address(), credits).await?;
        }
        eventually("the tier and the credit to be indexed", || async {
            let (_, tier) = api.get("/auth/tier", Some(&session.access)).await?;
            let (_, balance) = api.get("/billing/balance", Some(&session.access)).await?;
            Ok(tier["tier"] == "paid" && balance["balance"].as_str() == Some(&credits.to_string()))
        })
        .await?;
        Ok(session)
    }

    /// The IPFS node of a stack built with [`StackBuilder::ipfs`].
    pub fn ipfs(&self) -> &TestIpfs {
        self.ipfs.as_ref().expect("a stack built with .ipfs()")
    }
}

impl StackBuilder {
    /// With an IPFS node, which the API stores files and sites on.
    pub fn ipfs(mut self) -> Self {
        self.ipfs = true;
        self
    }

    /// With the chain's clock frozen (blocks mined only when the test says, at the time it says).
    pub fn frozen_time(mut self) -> Self {
        self.frozen_time = true;
        self
    }

    /// Started once the indexer has the whole deployment (what reads of indexed settings need).
    pub fn caught_up(mut self) -> Self {
        self.caught_up = true;
        self
    }

    /// Changes the API's configuration (after the test defaults and the IPFS settings).
    pub fn configure(
        mut self,
        change: impl FnOnce(&mut Config, &TestChain) + Send + 'static,
    ) -> Self {
        self.configure.push(Box::new(change));
        self
    }

    /// Starts the stack.
    pub async fn start(self) -> anyhow::Result<Stack> {
        let chain = TestChain::start().await?;
        if self.frozen_time {
            chain.freeze_time().await?;
        }
        let db = TestDb::create().await?;
        let indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
        let ipfs = if self.ipfs { Some(TestIpfs::start().await?) } else { None };
        let mut config = api_config(&chain, &db);
        if let Some(ipfs) = &ipfs {
            config.ipfs_api_url = Some(ipfs.api_url.clone());
            config.ipfs_gateway_url = ipfs.gateway_url.clone();
        }
        for change in self.configure {
            change(&mut config, &chain);
        }
        let api = TestApi::start_with(config.clone()).await?;
        if self.caught_up {
            let head = chain.reader().get_block_number().await?;
            wait_for_checkpoint(&db, chain.chain_id(), head, Duration::from_secs(30)).await?;
        }
        Ok(Stack { chain, db, api, ipfs, config, indexer })
    }
}
