//! The composition root: every feature's state, built once from the configuration, and the
//! `FromRef` impls that give each handler the part it uses. Nothing but the application (`app.rs`)
//! depends on this module; features know only their own state and [`Platform`].

use std::sync::Arc;

use alloy::providers::{Provider, ProviderBuilder};
use anyhow::Context;
use axum::extract::FromRef;
use decentraspace_abi::Deployment;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::sync::broadcast;

use crate::{
    Config,
    accounts::{AccountsState, tokens::Sessions},
    billing::{BillingState, charges::Charges},
    certificates::CertificatesState,
    chain::{
        Operator,
        outbox::{Outbox, Purpose, Sender, SenderSettings},
    },
    databases::DatabasesState,
    domains::DomainsState,
    gateway::GatewayState,
    github::GitHubState,
    hosting::HostingState,
    http::{
        auth::{AccessTokens, Auth},
        cache::{Caches, ReadCache},
        limits::RateLimits,
    },
    jobs::JobHealth,
    platform::Platform,
    public::PublicState,
    relay::RelayState,
    storage::StorageState,
    system::SystemState,
};

/// The API's state: the shared platform, the extractors' [`Auth`], and each feature's state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// What every feature shares.
    pub platform: Platform,
    /// What the extractors that guard routes need.
    pub auth: Auth,
    /// Per-IP and per-account request budgets.
    pub limits: Arc<RateLimits>,
    /// Which required background jobs are down (readiness reads it).
    pub jobs: JobHealth,
    /// The senders of the configured signing keys (one job each).
    pub senders: Vec<Arc<Sender>>,
    /// The outboxes of chains other than the platform's (ENS on Ethereum), each with a listener.
    pub side_outboxes: Vec<Outbox>,
    /// Accounts: sign-in, tiers, management.
    pub accounts: AccountsState,
    /// Billing: the ledger's mirror, recharges, usage, the meter, depletion.
    pub billing: BillingState,
    /// Storage on IPFS and Arweave.
    pub storage: StorageState,
    /// Sites and their deployments.
    pub hosting: HostingState,
    /// The site gateway.
    pub gateway: GatewayState,
    /// GitHub links and deploys.
    pub github: GitHubState,
    /// Domains: proofs, links, purchases.
    pub domains: DomainsState,
    /// Managed databases.
    pub databases: DatabasesState,
    /// HTTPS certificates.
    pub certificates: CertificatesState,
    /// The transaction relay.
    pub relay: RelayState,
    /// The public API and its stream.
    pub public: PublicState,
    /// Health, readiness, metrics, system analytics.
    pub system: SystemState,
}

/// `FromRef<AppState>` for a field of [`AppState`].
macro_rules! from_app {
    ($($ty:ty => $field:ident),+ $(,)?) => {
        $(impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        })+
    };
}

from_app! {
    Platform => platform,
    Auth => auth,
    AccountsState => accounts,
    BillingState => billing,
    StorageState => storage,
    HostingState => hosting,
    GatewayState => gateway,
    GitHubState => github,
    DomainsState => domains,
    DatabasesState => databases,
    CertificatesState => certificates,
    RelayState => relay,
    PublicState => public,
    SystemState => system,
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
        let read_pool = config
            .database_read_url
            .as_deref()
            .map(|url| {
                PgPoolOptions::new()
                    .max_connections(config.database_pool_size)
                    .acquire_timeout(std::time::Duration::from_secs(2))
                    .test_before_acquire(false)
                    .connect_lazy(url)
            })
            .transpose()
            .context("DATABASE_READ_URL")?;
        let chain = ProviderBuilder::new()
            .connect(&config.rpc_url)
            .await
            .with_context(|| format!("connect to the chain at {}", config.rpc_url))?
            .erased();
        let outbox = Outbox::new(db.clone(), deployment.chain_id);
        let mut senders = Vec::new();
        let settings = SenderSettings {
            confirmations: config.chain_confirmations,
            stuck_after: std::time::Duration::from_secs(config.chain_stuck_after_secs),
            head_stuck_after: std::time::Duration::from_secs(config.chain_head_stuck_after_secs),
            low_balance: config.chain_low_balance_wei,
            ..SenderSettings::default()
        };
        // A role-holder key's calls, and the sender that signs them.
        let mut keyed = |key: &Option<secrecy::SecretString>,
                         setting: &str,
                         role: &'static str,
                         purpose: Purpose|
         -> anyhow::Result<Option<Operator>> {
            let Some(key) = key else { return Ok(None) };
            let sender = Sender::new(key, setting, role, outbox.clone(), chain.clone(), settings)?;
            let operator =
                Operator::new(db.clone(), outbox.clone(), chain.clone(), sender.address(), purpose);
            senders.push(Arc::new(sender));
            Ok(Some(operator))
        };
        let operator =
            keyed(&config.operator_key, "OPERATOR_PRIVATE_KEY", "operator", Purpose::Operator)?;
        let verifier =
            keyed(&config.verifier_key, "VERIFIER_PRIVATE_KEY", "verifier", Purpose::Verifier)?;
        let dns = Some(
            crate::domains::proof::TxtResolver::new(config.dns_resolver)
                .context("the DNS resolver")?,
        );
        let hns = config
            .hns_resolver
            .map(crate::domains::proof::TxtResolver::new)
            .transpose()
            .context("the Handshake resolver")?;
        let gandi = match &config.registrar_token {
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
        let registrar: Option<Arc<dyn decentraspace_clients::registrar::Registrar>> =
            gandi.clone().map(|g| g as _);
        let zones: Option<Arc<dyn decentraspace_clients::registrar::Zones>> = gandi.map(|g| g as _);
        let registrar_key =
            keyed(&config.registrar_key, "REGISTRAR_PRIVATE_KEY", "registrar", Purpose::Registrar)?;
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
        let oracle = keyed(
            &config.payment_oracle_key,
            "PAYMENT_ORACLE_PRIVATE_KEY",
            "payment-oracle",
            Purpose::Payment,
        )?;
        let payments: Option<Arc<dyn decentraspace_clients::paystack::CardPayments>> =
            match &config.paystack_secret_key {
                Some(key) => Some(Arc::new(decentraspace_clients::paystack::Paystack::new(
                    &config.paystack_base_url,
                    key.clone(),
                )?)),
                None => None,
            };
        let billing =
            keyed(&config.billing_key, "BILLING_PRIVATE_KEY", "billing", Purpose::Billing)?;
        // `.eth` purchases: the ENS key's transactions go through the platform's outbox when
        // ENS is on the platform's chain, else through an outbox of the ENS chain's own.
        let mut side_outboxes = Vec::new();
        let eth_names = match (&config.ens_controller, &config.ens_key) {
            (Some(controller), Some(key)) => {
                let url = config
                    .ens_rpc_url
                    .as_deref()
                    .context("ENS_CONTROLLER and ENS_PRIVATE_KEY need ENS_RPC_URL")?;
                let (ens_outbox, ens_chain) = if config.ens_chain_id == deployment.chain_id {
                    (outbox.clone(), chain.clone())
                } else {
                    let provider = ProviderBuilder::new()
                        .connect_http(url.parse().context("ENS_RPC_URL")?)
                        .erased();
                    let side = Outbox::side(db.clone(), config.ens_chain_id);
                    side_outboxes.push(side.clone());
                    (side, provider)
                };
                let sender = Sender::new(
                    key,
                    "ENS_PRIVATE_KEY",
                    "ens",
                    ens_outbox.clone(),
                    ens_chain.clone(),
                    settings,
                )?;
                let key = Operator::new(
                    db.clone(),
                    ens_outbox,
                    ens_chain,
                    sender.address(),
                    Purpose::Ens,
                );
                senders.push(Arc::new(sender));
                Some(crate::domains::eth::EthNames::new(
                    key,
                    *controller,
                    config.ens_registry,
                    config.ens_resolver,
                    secrecy::ExposeSecret::expose_secret(&config.jwt_secret).as_bytes(),
                ))
            }
            (None, None) => None,
            _ => anyhow::bail!("ENS_CONTROLLER and ENS_PRIVATE_KEY go together"),
        };
        // The relayer pool: the relayer key, then the pool's keys; a sender each.
        let pool: Vec<secrecy::SecretString> = config
            .relayer_pool_keys
            .as_ref()
            .map(|keys| {
                secrecy::ExposeSecret::expose_secret(keys)
                    .split(',')
                    .map(str::trim)
                    .filter(|key| !key.is_empty())
                    .map(|key| secrecy::SecretString::from(key.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut relayers = Vec::new();
        for (n, key) in config.relayer_key.iter().chain(&pool).enumerate() {
            let (setting, role): (&str, &'static str) = match n {
                0 if config.relayer_key.is_some() => ("RELAYER_PRIVATE_KEY", "relayer"),
                // Made once per configured key, at start.
                _ => (
                    "RELAYER_POOL_PRIVATE_KEYS",
                    Box::leak(format!("relayer-{n}").into_boxed_str()),
                ),
            };
            let sender = Sender::new(key, setting, role, outbox.clone(), chain.clone(), settings)?;
            relayers.push(sender.address());
            senders.push(Arc::new(sender));
        }
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
        let sealer = crate::seal::Sealer::new(token_key, &config.jwt_secret);
        let database_hosts = Arc::new(
            crate::databases::hosts::Hosts::parse(config.database_hosts.as_ref())
                .context("DATABASE_HOSTS")?,
        );
        let pg_bin = crate::databases::pg_bin_dir(config.pg_bin_dir.as_deref());
        let certificates = crate::certificates::CertStore::new(
            &config.sites_domain,
            match (&config.sites_tls_cert_file, &config.sites_tls_key_file) {
                (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
                (None, None) => None,
                _ => anyhow::bail!("SITES_TLS_CERT_FILE and SITES_TLS_KEY_FILE go together"),
            },
        )?;
        anyhow::ensure!(
            config.tls_renew_after_fraction > 0.0 && config.tls_renew_after_fraction < 1.0,
            "TLS_RENEW_AFTER_FRACTION must be between 0 and 1"
        );
        let builder = crate::hosting::Builder::new(&config).await;
        let access = AccessTokens::new(&config.jwt_secret, config.access_ttl_secs)?;
        let limits = Arc::new(
            RateLimits::new(config.rate_limit_per_ip, config.rate_limit_per_account)
                .behind(config.trusted_proxies.clone())
                .shared(
                    db.clone(),
                    config
                        .rate_limit_per_ip_per_minute
                        .unwrap_or(config.rate_limit_per_ip.saturating_mul(60)),
                    config
                        .rate_limit_per_account_per_minute
                        .unwrap_or(config.rate_limit_per_account.saturating_mul(60)),
                ),
        );
        let (notices, _) = broadcast::channel(1024);
        let (indexed, _) = broadcast::channel(64);
        let config = Arc::new(config);
        let platform = Platform {
            db: db.clone(),
            config: config.clone(),
            deployment: Arc::new(deployment),
            chain,
            operator,
            outbox,
            wakes: crate::wakes::Wakes::default(),
            reads: crate::reads::Reads::new(db.clone(), read_pool),
        };
        let auth = Auth::new(
            access.clone(),
            limits.clone(),
            db,
            platform.chain_id(),
            platform.deployment.contracts.account_registry,
            config.service_token.clone(),
        );
        let charges = Charges { platform: platform.clone(), billing, oracle };
        let (balances, accounts_cache) =
            (Arc::new(ReadCache::default()), Arc::new(ReadCache::default()));
        let caches = Caches::new(vec![balances.clone(), accounts_cache.clone()]);
        let jobs = JobHealth::default();
        Ok(Self {
            accounts: AccountsState {
                platform: platform.clone(),
                sessions: Sessions::new(access, config.refresh_ttl_secs),
            },
            billing: BillingState {
                charges: charges.clone(),
                payments,
                indexed: indexed.clone(),
                balances,
            },
            storage: StorageState { platform: platform.clone(), ipfs: ipfs.clone(), arweave },
            hosting: HostingState {
                platform: platform.clone(),
                ipfs: ipfs.clone(),
                runtime,
                github: github.clone(),
                sealer: sealer.clone(),
                builder,
                log_notices: broadcast::channel(1024).0,
                deploy_wake: Arc::default(),
                working: Arc::default(),
            },
            databases: DatabasesState {
                platform: platform.clone(),
                hosts: database_hosts,
                sealer: sealer.clone(),
                ipfs: ipfs.clone(),
                indexed: indexed.clone(),
                work: Arc::default(),
                pg_bin,
            },
            gateway: GatewayState {
                platform: platform.clone(),
                ipfs,
                certificates: config.gateway_tls_listen.map(|_| certificates.clone()),
                sites: Arc::default(),
            },
            certificates: CertificatesState {
                platform: platform.clone(),
                sealer: sealer.clone(),
                store: certificates,
                indexed: indexed.clone(),
            },
            github: GitHubState { charges: charges.clone(), github, sealer },
            domains: DomainsState {
                charges,
                dns,
                hns,
                ens,
                registrar,
                zones,
                indexed: indexed.clone(),
                registrar_key,
                verifier,
                eth: eth_names,
            },
            relay: RelayState { platform: platform.clone(), relayers: Arc::new(relayers.clone()) },
            public: PublicState {
                platform: platform.clone(),
                notices,
                indexed,
                accounts: accounts_cache,
                caches,
                balances: Arc::new(crate::billing::available::AvailableBalances(platform.clone())),
            },
            system: SystemState {
                platform: platform.clone(),
                relayer: relayers.first().copied(),
                jobs: jobs.clone(),
                signing_keys: Arc::new(senders.iter().map(|s| (s.role(), s.address())).collect()),
            },
            platform,
            auth,
            limits,
            jobs,
            senders,
            side_outboxes,
        })
    }

    /// The chain id of the deployment.
    pub fn chain_id(&self) -> u64 {
        self.platform.chain_id()
    }
}
