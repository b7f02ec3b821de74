//! What every handler shares.

use std::sync::Arc;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use anyhow::Context;
use axum::extract::FromRef;
use decentraspace_abi::Deployment;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::sync::broadcast;

use crate::{
    Config,
    accounts::tokens::TokenKeys,
    chain::{Operator, Relayer},
    http::limits::RateLimits,
    public::stream::Notice,
};

/// The API's shared state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database (indexed tables and the API's own).
    pub db: PgPool,
    /// The configuration.
    pub config: Arc<Config>,
    /// The platform contracts.
    pub deployment: Arc<Deployment>,
    /// A read-only chain client (EIP-1271 checks, readiness).
    pub chain: DynProvider,
    /// Sends the operator's transactions (first-login registration); unset without a key.
    pub operator: Option<Operator>,
    /// Sends the payment oracle's transactions (card credits); unset without a key.
    pub oracle: Option<Operator>,
    /// The card-payment provider (Paystack); unset without a secret key.
    pub payments: Option<Arc<dyn decentraspace_clients::paystack::CardPayments>>,
    /// Wakes the payment worker when a webhook queues a payment.
    pub payment_wake: Arc<tokio::sync::Notify>,
    /// Wakes the job that rebuilds folders' IPFS directories.
    pub directory_wake: Arc<tokio::sync::Notify>,
    /// Submits forward requests, paying the gas; unset without a key.
    pub relayer: Option<Arc<Relayer>>,
    /// The IPFS node files are stored on; unset without `IPFS_API_URL`.
    pub ipfs: Option<decentraspace_clients::ipfs::Ipfs>,
    /// The Arweave node and the wallet that pays for uploads, when configured.
    pub arweave: Option<decentraspace_clients::arweave::Arweave>,
    /// Records proven domain ownership on-chain, when a verifier key is configured.
    pub verifier: Option<Operator>,
    /// Looks up DNS proofs of domain ownership.
    pub dns: Option<crate::domains::proof::TxtResolver>,
    /// The registrar names are bought through, when configured.
    pub registrar: Option<Arc<dyn decentraspace_clients::registrar::Registrar>>,
    /// Records purchases on-chain, when a registrar key is configured.
    pub registrar_key: Option<Operator>,
    /// Reads ENS ownership, when an ENS RPC is configured.
    pub ens: Option<decentraspace_clients::ens::Ens>,
    /// Looks up Handshake proofs, when a Handshake-aware resolver is configured.
    pub hns: Option<crate::domains::proof::TxtResolver>,
    /// The machine runtime dynamic sites run on, when configured.
    pub runtime: Option<Arc<dyn crate::hosting::runtime::Runtime>>,
    /// GitHub (OAuth and REST); unset without a client id and secret.
    pub github: Option<Arc<dyn decentraspace_clients::github::GitHub>>,
    /// Seals GitHub tokens at rest and signs link states.
    pub sealer: crate::github::seal::Sealer,
    /// Sends the billing meter's `deductBatch` transactions; unset without a billing key.
    pub billing: Option<Arc<Relayer>>,
    /// Access and refresh token keys.
    pub tokens: TokenKeys,
    /// Per-IP and per-account request budgets.
    pub limits: Arc<RateLimits>,
    /// Hot reads cached until the indexer's next commit.
    pub reads: Arc<crate::ReadCaches>,
    /// Indexed-block and platform notices for `/v1/stream`, fed by NOTIFY.
    pub notices: broadcast::Sender<Notice>,
    /// Which required background jobs are down (readiness reads it).
    pub jobs: crate::jobs::JobHealth,
}

impl AppState {
    /// Connects to the database and the chain and loads the deployment record.
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let db = PgPoolOptions::new()
            .max_connections(config.database_pool_size)
            .acquire_timeout(std::time::Duration::from_secs(5))
            // No ping before each checkout: it doubled the round trips of every read. A dead
            // connection fails its query instead, which answers 503 and is dropped from the pool.
            .test_before_acquire(false)
            .connect(&config.database_url)
            .await
            .context("connect to the database")?;
        Self::with_db(config, db).await
    }

    /// The state over an open database pool (`config.database_url` is not used), connecting to
    /// the chain and loading the deployment record. Nothing is sent to the chain until a route
    /// or job needs it.
    pub async fn with_db(config: Config, db: PgPool) -> anyhow::Result<Self> {
        let deployment =
            Deployment::load(&config.deployments_file).context("load the deployment record")?;
        let chain = ProviderBuilder::new()
            .connect(&config.rpc_url)
            .await
            .with_context(|| format!("connect to the chain at {}", config.rpc_url))?
            .erased();
        let operator = match &config.operator_key {
            Some(key) => Some(
                Operator::connect(key, &config.rpc_url, deployment.contracts.account_registry)
                    .await?,
            ),
            None => None,
        };
        let verifier = match &config.verifier_key {
            Some(key) => Some(
                Operator::connect(key, &config.rpc_url, deployment.contracts.account_registry)
                    .await?,
            ),
            None => None,
        };
        let dns = Some(
            crate::domains::proof::TxtResolver::new(config.dns_resolver)
                .context("the DNS resolver")?,
        );
        let hns = config
            .hns_resolver
            .map(crate::domains::proof::TxtResolver::new)
            .transpose()
            .context("the Handshake resolver")?;
        let registrar: Option<Arc<dyn decentraspace_clients::registrar::Registrar>> =
            match &config.registrar_token {
                Some(token) => {
                    let contact = serde_json::from_str(&config.registrar_contact)
                        .context("REGISTRAR_CONTACT is JSON")?;
                    Some(Arc::new(decentraspace_clients::registrar::gandi::Gandi::new(
                        &config.registrar_api_url,
                        token.clone(),
                        contact,
                    )?))
                }
                None => None,
            };
        let registrar_key = match &config.registrar_key {
            Some(key) => Some(
                Operator::connect(key, &config.rpc_url, deployment.contracts.account_registry)
                    .await?,
            ),
            None => None,
        };
        let ens = config
            .ens_rpc_url
            .as_deref()
            .map(|url| {
                decentraspace_clients::ens::Ens::new(
                    url,
                    config.ens_registry,
                    config.ens_name_wrapper,
                )
            })
            .transpose()
            .context("the ENS reader")?;
        let oracle = match &config.payment_oracle_key {
            Some(key) => Some(
                Operator::connect(key, &config.rpc_url, deployment.contracts.account_registry)
                    .await?,
            ),
            None => None,
        };
        let payments: Option<Arc<dyn decentraspace_clients::paystack::CardPayments>> =
            match &config.paystack_secret_key {
                Some(key) => Some(Arc::new(decentraspace_clients::paystack::Paystack::new(
                    &config.paystack_base_url,
                    key.clone(),
                )?)),
                None => None,
            };
        let relayer = match &config.relayer_key {
            Some(key) => Some(Arc::new(Relayer::new(
                key,
                "RELAYER_PRIVATE_KEY",
                chain.clone(),
                deployment.chain_id,
            )?)),
            None => None,
        };
        let billing = match &config.billing_key {
            Some(key) => Some(Arc::new(Relayer::new(
                key,
                "BILLING_PRIVATE_KEY",
                chain.clone(),
                deployment.chain_id,
            )?)),
            None => None,
        };
        let ipfs = config
            .ipfs_api_url
            .as_deref()
            .map(decentraspace_clients::ipfs::Ipfs::new)
            .transpose()
            .context("the IPFS client")?;
        let arweave = match (&config.arweave_url, &config.arweave_wallet_file) {
            (Some(url), Some(file)) => {
                let jwk = std::fs::read_to_string(file)
                    .with_context(|| format!("read the Arweave wallet {}", file.display()))?;
                Some(
                    decentraspace_clients::arweave::Arweave::new(url, &jwk)
                        .context("the Arweave client")?,
                )
            }
            (Some(_), None) => anyhow::bail!("ARWEAVE_URL needs ARWEAVE_WALLET_FILE"),
            (None, _) => None,
        };
        let runtime: Option<Arc<dyn crate::hosting::runtime::Runtime>> =
            match (&config.fly_app, &config.fly_api_token) {
                (Some(app), Some(token)) => Some(Arc::new(
                    crate::hosting::runtime::fly::FlyMachines::new(
                        &config.fly_api_url,
                        app,
                        token.clone(),
                    )
                    .context("the Fly Machines client")?,
                )),
                (Some(_), None) => anyhow::bail!("FLY_APP needs FLY_API_TOKEN"),
                (None, _) => None,
            };
        if let Some(token) = &config.service_token {
            anyhow::ensure!(
                secrecy::ExposeSecret::expose_secret(token).len() >= 32,
                "SERVICE_TOKEN must be at least 32 characters"
            );
        }
        let github: Option<Arc<dyn decentraspace_clients::github::GitHub>> =
            match (&config.github_client_id, &config.github_client_secret) {
                (Some(id), Some(secret)) => {
                    Some(Arc::new(decentraspace_clients::github::GitHubClient::new(
                        &config.github_oauth_url,
                        &config.github_api_url,
                        id,
                        secret.clone(),
                        &config.github_redirect_url,
                    )?))
                }
                _ => None,
            };
        let token_key = match &config.github_token_key {
            Some(hex_key) => {
                let bytes = hex::decode(secrecy::ExposeSecret::expose_secret(hex_key).trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                Some(bytes.context("GITHUB_TOKEN_KEY must be 64 hex characters (32 bytes)")?)
            }
            None => None,
        };
        let sealer = crate::github::seal::Sealer::new(token_key, &config.jwt_secret);
        let tokens =
            TokenKeys::new(&config.jwt_secret, config.access_ttl_secs, config.refresh_ttl_secs)?;
        let limits =
            Arc::new(RateLimits::new(config.rate_limit_per_ip, config.rate_limit_per_account));
        let (notices, _) = broadcast::channel(1024);
        Ok(Self {
            db,
            config: Arc::new(config),
            deployment: Arc::new(deployment),
            chain,
            operator,
            relayer,
            billing,
            ipfs,
            arweave,
            verifier,
            registrar,
            registrar_key,
            dns,
            ens,
            hns,
            runtime,
            github,
            sealer,
            oracle,
            payments,
            payment_wake: Arc::default(),
            directory_wake: Arc::default(),
            tokens,
            limits,
            notices,
            reads: Arc::default(),
            jobs: crate::jobs::JobHealth::default(),
        })
    }

    /// The operator, or 503 when no operator key is configured.
    pub fn operator(&self) -> Result<&Operator, crate::http::error::ApiError> {
        self.operator.as_ref().ok_or_else(|| {
            crate::http::error::ApiError::NotConfigured("no operator key is configured")
        })
    }

    /// The chain id of the deployment.
    pub fn chain_id(&self) -> u64 {
        self.deployment.chain_id
    }
}

impl FromRef<AppState> for PgPool {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}

/// The cached hot reads, all invalidated together when the indexer commits.
#[derive(Debug, Default)]
pub struct ReadCaches {
    /// `/billing/balance` by account.
    pub balances:
        crate::http::cache::ReadCache<alloy::primitives::Address, crate::billing::ledger::Balance>,
    /// `/v1/accounts/{address}` by account.
    pub accounts:
        crate::http::cache::ReadCache<alloy::primitives::Address, crate::public::v1::AccountView>,
}

impl ReadCaches {
    /// Forgets every cached read.
    pub fn invalidate(&self) {
        self.balances.invalidate();
        self.accounts.invalidate();
    }

    /// Turns caching on or off (off while indexer notices are not received).
    pub fn set_live(&self, live: bool) {
        self.balances.set_live(live);
        self.accounts.set_live(live);
    }
}
