//! The API's configuration, from flags or the environment. Every field can be overridden in tests
//! (port 0, database name, chain endpoint).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use secrecy::SecretString;

/// Serves the DecentraSpace REST API.
#[derive(Debug, Clone, Parser)]
#[command(name = "api", version, about)]
pub struct Config {
    /// The address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The Postgres database the indexer mirrors into (the API's own tables live there too).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// A streaming replica of `DATABASE_URL` for the public `/v1` reads: used while it has
    /// replayed every indexed batch announced so far, the primary otherwise (unset: the primary).
    #[arg(long, env = "DATABASE_READ_URL")]
    pub database_read_url: Option<String>,

    /// How many database connections the API may hold.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: u32,

    /// The chain's JSON-RPC endpoint (readiness, EIP-1271 checks, relayed transactions).
    #[arg(long, env = "RPC_URL", default_value = "http://127.0.0.1:8545")]
    pub rpc_url: String,

    /// The deployment record of the platform contracts.
    #[arg(long, env = "DEPLOYMENTS_FILE", default_value = "deployments/31337.json")]
    pub deployments_file: PathBuf,

    /// The domain SIWE messages must name (the frontend's host, e.g. `app.decentraspace.io`).
    #[arg(long, env = "SIWE_DOMAIN", default_value = "localhost:8080")]
    pub siwe_domain: String,

    /// The URI SIWE messages must name.
    #[arg(long, env = "SIWE_URI", default_value = "http://localhost:8080")]
    pub siwe_uri: String,

    /// How long an issued nonce stays usable, in seconds.
    #[arg(long, env = "SIWE_NONCE_TTL_SECS", default_value_t = 600)]
    pub nonce_ttl_secs: u64,

    /// How old a SIWE message's `Issued At` may be, in seconds.
    #[arg(long, env = "SIWE_MAX_AGE_SECS", default_value_t = 600)]
    pub siwe_max_age_secs: u64,

    /// The key that signs access tokens (HS256; at least 32 bytes).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: SecretString,

    /// How long an access token lives, in seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_ttl_secs: u64,

    /// How long a refresh token lives, in seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_ttl_secs: u64,

    /// The operator's private key: registers first-time accounts on-chain (unset: not registered).
    #[arg(long, env = "OPERATOR_PRIVATE_KEY", hide_env_values = true)]
    pub operator_key: Option<SecretString>,

    /// The domain verifier's private key (`VERIFIER_ROLE` on DomainRegistry): records proven
    /// domain ownership on-chain (unset: `/domain/link` answers 503).
    #[arg(long, env = "VERIFIER_PRIVATE_KEY", hide_env_values = true)]
    pub verifier_key: Option<SecretString>,

    /// The key domain proofs (TXT values) are derived with (unset: derived from `JWT_SECRET`,
    /// which then must not rotate while domains are linked).
    #[arg(long, env = "DOMAIN_PROOF_KEY", hide_env_values = true)]
    pub domain_proof_key: Option<SecretString>,

    /// The DNS resolver domain proofs are looked up through (`ip:port`).
    #[arg(long, env = "DNS_RESOLVER", default_value = "1.1.1.1:53")]
    pub dns_resolver: std::net::SocketAddr,

    /// A Handshake-aware resolver (`ip:port`, e.g. hnsd) for Handshake names (unset: Handshake
    /// proofs answer 503).
    #[arg(long, env = "HNS_RESOLVER")]
    pub hns_resolver: Option<std::net::SocketAddr>,

    /// The registrar's API (Gandi v5) names are bought through.
    #[arg(long, env = "REGISTRAR_API_URL", default_value = "https://api.gandi.net/v5")]
    pub registrar_api_url: String,

    /// The registrar's personal access token (unset: purchases answer 503).
    #[arg(long, env = "REGISTRAR_TOKEN", hide_env_values = true)]
    pub registrar_token: Option<SecretString>,

    /// The registrant contact names are registered with (the platform's; Gandi's `owner` JSON).
    #[arg(long, env = "REGISTRAR_CONTACT", default_value = "{}")]
    pub registrar_contact: String,

    /// The platform's own namespace (e.g. `dspace.id`): `<name>.<namespace>` is bought directly,
    /// without a registrar (unset: not offered). Not the sites domain.
    #[arg(long, env = "PLATFORM_NAMESPACE")]
    pub platform_namespace: Option<String>,

    /// What a name under the platform's namespace costs a year, in credit units.
    #[arg(long, env = "PLATFORM_NAME_CREDITS_PER_YEAR", default_value_t = 2_000_000)]
    pub platform_name_credits_per_year: u64,

    /// The key holding `REGISTRAR_ROLE` on DomainRegistry: records purchases and renewals.
    #[arg(long, env = "REGISTRAR_PRIVATE_KEY", hide_env_values = true)]
    pub registrar_key: Option<SecretString>,

    /// How often interrupted purchases are settled, in seconds (0: never).
    #[arg(long, env = "DOMAIN_RECOVERY_SECS", default_value_t = 60)]
    pub domain_recovery_secs: u64,

    /// How long a purchase may sit between the charge and the record before recovery settles it.
    #[arg(long, env = "DOMAIN_RECOVERY_AFTER_SECS", default_value_t = 600)]
    pub domain_recovery_after_secs: u64,

    /// How often owners of purchased names ending soon are reminded, in seconds (0: never).
    #[arg(long, env = "DOMAIN_REMINDER_SECS", default_value_t = 3_600)]
    pub domain_reminder_secs: u64,

    /// How many days before a purchased name ends its owner is reminded.
    #[arg(long, env = "DOMAIN_REMIND_BEFORE_DAYS", default_value_t = 30)]
    pub domain_remind_before_days: u32,

    /// How often names bought through the platform are renewed when they near their end, in
    /// seconds (0: never; owners turn it off per name with `PUT /domain/purchase/auto-renew`).
    #[arg(long, env = "DOMAIN_AUTO_RENEW_SECS", default_value_t = 3_600)]
    pub domain_auto_renew_secs: u64,

    /// How many days before a bought name ends it is renewed for a year (it is tried again each
    /// pass until it is, up to 30 days after the end, the registrars' usual grace period).
    #[arg(long, env = "DOMAIN_AUTO_RENEW_BEFORE_DAYS", default_value_t = 14)]
    pub domain_auto_renew_before_days: u32,

    /// How often linked external domains' proofs are re-checked, in seconds (0: never).
    #[arg(long, env = "DOMAIN_RECHECK_SECS", default_value_t = 3_600)]
    pub domain_recheck_secs: u64,

    /// How long a linked domain's proof may stay missing before it is unlinked, in seconds.
    #[arg(long, env = "DOMAIN_PROOF_GRACE_SECS", default_value_t = 259_200)]
    pub domain_proof_grace_secs: u64,

    /// An Ethereum RPC ENS names are read from (unset: ENS proofs answer 503).
    #[arg(long, env = "ENS_RPC_URL")]
    pub ens_rpc_url: Option<String>,

    /// The ENS registry on that chain.
    #[arg(
        long,
        env = "ENS_REGISTRY",
        default_value = "0x00000000000C2E074eC69A0dFb2997BA6C7d2e1e"
    )]
    pub ens_registry: alloy::primitives::Address,

    /// ENS's `.eth` registrar controller on that chain (`ETHRegistrarController`, commit and
    /// reveal; unset: `.eth` names cannot be bought, only linked).
    #[arg(long, env = "ENS_CONTROLLER")]
    pub ens_controller: Option<alloy::primitives::Address>,

    /// The key that commits, registers and renews `.eth` names, paying their fees and gas in the
    /// ENS chain's ether (unset: `.eth` names cannot be bought).
    #[arg(long, env = "ENS_PRIVATE_KEY", hide_env_values = true)]
    pub ens_key: Option<SecretString>,

    /// The chain id of `ENS_RPC_URL` (1: Ethereum). When it is the platform's own chain, the
    /// ENS key's transactions share the platform's outbox.
    #[arg(long, env = "ENS_CHAIN_ID", default_value_t = 1)]
    pub ens_chain_id: u64,

    /// The resolver a bought `.eth` name is registered with, its address record set to the
    /// buyer (unset: none; the owner sets one before a content hash).
    #[arg(long, env = "ENS_RESOLVER")]
    pub ens_resolver: Option<alloy::primitives::Address>,

    /// The ENS NameWrapper on that chain.
    #[arg(
        long,
        env = "ENS_NAME_WRAPPER",
        default_value = "0xD4416b13d2b3a9aBae7AcD5D6C2BbDBE25686401"
    )]
    pub ens_name_wrapper: alloy::primitives::Address,

    /// Blocks on top of a transaction the platform sent before it is final: until then its
    /// sender follows it through reorgs (sending it again if its block leaves the chain).
    #[arg(long, env = "CHAIN_CONFIRMATIONS", default_value_t = 64)]
    pub chain_confirmations: u64,

    /// Seconds a transaction the platform sent may stay unmined before it is sent again at its
    /// nonce with higher fees.
    #[arg(long, env = "CHAIN_STUCK_AFTER_SECS", default_value_t = 60)]
    pub chain_stuck_after_secs: u64,

    /// Seconds the next transaction a key's sequence waits on (its nonce is the chain's count) may
    /// stay unmined before it is sent again with higher fees: a node that dropped it, or never
    /// promoted it, mines nothing more of the key until then.
    #[arg(long, env = "CHAIN_HEAD_STUCK_AFTER_SECS", default_value_t = 15)]
    pub chain_head_stuck_after_secs: u64,

    /// A signing key whose balance falls below this many wei is reported low (in
    /// `/analytics/system` and the `chain_signer_low` metric).
    #[arg(long, env = "CHAIN_LOW_BALANCE_WEI", default_value = "100000000000000000")]
    pub chain_low_balance_wei: alloy::primitives::U256,

    /// How many first-login registrations the operator sends per hour (each costs it gas).
    #[arg(long, env = "REGISTRATIONS_PER_HOUR", default_value_t = 1_000)]
    pub registrations_per_hour: u32,

    /// The payment oracle's private key: credits confirmed card payments on-chain (`creditFiat`).
    #[arg(long, env = "PAYMENT_ORACLE_PRIVATE_KEY", hide_env_values = true)]
    pub payment_oracle_key: Option<SecretString>,

    /// Paystack's secret key (unset: card payments are off).
    #[arg(long, env = "PAYSTACK_SECRET_KEY", hide_env_values = true)]
    pub paystack_secret_key: Option<SecretString>,

    /// Paystack's API.
    #[arg(long, env = "PAYSTACK_BASE_URL", default_value = "https://api.paystack.co")]
    pub paystack_base_url: String,

    /// The billing key (the ledger's `BILLING_ROLE`): the meter charges active services with it
    /// (unset: nothing is metered on this replica).
    #[arg(long, env = "BILLING_PRIVATE_KEY", hide_env_values = true)]
    pub billing_key: Option<SecretString>,

    /// Seconds between two meter cycles (each charges every active service for its active time
    /// since its last charge).
    #[arg(long, env = "METER_INTERVAL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub meter_interval_secs: u64,

    /// Charges per `deductBatch` transaction.
    #[arg(long, env = "METER_BATCH_SIZE", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=2000))]
    pub meter_batch_size: u64,

    /// The bearer token internal services present to record usage at `/billing/deduct` (at
    /// least 32 characters; unset: only admins record usage).
    #[arg(long, env = "SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<SecretString>,

    /// The relayer's private key: submits users' signed forward requests, paying the gas (unset:
    /// only raw transactions are relayed).
    #[arg(long, env = "RELAYER_PRIVATE_KEY", hide_env_values = true)]
    pub relayer_key: Option<SecretString>,

    /// More relayer keys, comma-separated: each account's forward requests go through one key of
    /// the pool (the same one each time), and each key has its own sender, so relayed throughput
    /// grows past one sender's pace.
    #[arg(long, env = "RELAYER_POOL_PRIVATE_KEYS", hide_env_values = true)]
    pub relayer_pool_keys: Option<SecretString>,

    /// How many transactions one account may have relayed per hour.
    #[arg(long, env = "RELAY_QUOTA_PER_HOUR", default_value_t = 120)]
    pub relay_quota_per_hour: u32,

    /// The most gas a forward request may ask for.
    #[arg(long, env = "RELAY_MAX_GAS", default_value_t = 2_000_000)]
    pub relay_max_gas: u64,

    /// Seconds after which a relayed transaction still not mined is sent again with a higher fee.
    #[arg(long, env = "RELAY_STUCK_AFTER_SECS", default_value_t = 60)]
    pub relay_stuck_after_secs: u64,

    /// The shared secret chain-event webhooks are signed with (HMAC-SHA256; unset: the listener
    /// answers 503).
    #[arg(long, env = "LISTENER_SECRET", hide_env_values = true)]
    pub listener_secret: Option<SecretString>,

    /// The IPFS node's RPC API (Kubo; unset: storage answers 503).
    #[arg(long, env = "IPFS_API_URL")]
    pub ipfs_api_url: Option<String>,

    /// The public IPFS gateway access links point at.
    #[arg(long, env = "IPFS_GATEWAY_URL", default_value = "https://ipfs.io")]
    pub ipfs_gateway_url: String,

    /// The Arweave node or gateway uploads are posted to (unset: the `arweave` backend answers
    /// 422).
    #[arg(long, env = "ARWEAVE_URL")]
    pub arweave_url: Option<String>,

    /// The operator's Arweave wallet (an RSA JWK file), which signs and pays for uploads.
    #[arg(long, env = "ARWEAVE_WALLET_FILE")]
    pub arweave_wallet_file: Option<std::path::PathBuf>,

    /// The public Arweave gateway access links point at.
    #[arg(long, env = "ARWEAVE_GATEWAY_URL", default_value = "https://arweave.net")]
    pub arweave_gateway_url: String,

    /// The Fly Machines API dynamic sites run on.
    #[arg(long, env = "FLY_API_URL", default_value = "https://api.machines.dev")]
    pub fly_api_url: String,

    /// The Fly app whose machines run dynamic sites (unset: dynamic deploys answer 503).
    #[arg(long, env = "FLY_APP")]
    pub fly_app: Option<String>,

    /// The Fly API token (a deploy token scoped to `FLY_APP`).
    #[arg(long, env = "FLY_API_TOKEN", hide_env_values = true)]
    pub fly_api_token: Option<SecretString>,

    /// How often dynamic sites' machines are reconciled with their services, in seconds (0: never).
    #[arg(long, env = "DYNAMIC_RECONCILE_SECS", default_value_t = 15)]
    pub dynamic_reconcile_secs: u64,

    /// What each GitHub link past the tier's included ones (Free 1, Paid 3) costs, in credit
    /// units (6 decimals; 0: no further links).
    #[arg(long, env = "GITHUB_EXTRA_LINK_CREDITS", default_value_t = 5_000_000)]
    pub github_extra_link_credits: u64,

    /// The GitHub OAuth app's client id (unset: GitHub features answer 503).
    #[arg(long, env = "GITHUB_CLIENT_ID")]
    pub github_client_id: Option<String>,

    /// The GitHub OAuth app's client secret.
    #[arg(long, env = "GITHUB_CLIENT_SECRET", hide_env_values = true)]
    pub github_client_secret: Option<SecretString>,

    /// Where GitHub sends users back after they authorize (the frontend page that posts the code
    /// to `/github/link/callback`).
    #[arg(
        long,
        env = "GITHUB_REDIRECT_URL",
        default_value = "http://localhost:3000/github/callback"
    )]
    pub github_redirect_url: String,

    /// GitHub's OAuth host.
    #[arg(long, env = "GITHUB_OAUTH_URL", default_value = "https://github.com")]
    pub github_oauth_url: String,

    /// GitHub's REST API.
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,

    /// The API's public address: GitHub delivers to `<this>/github/webhook`, and commit statuses
    /// link to deployments under it.
    #[arg(long, env = "PUBLIC_API_URL", default_value = "http://localhost:8080")]
    pub public_api_url: String,

    /// A platform-wide secret for webhooks configured by hand (each site linked through the API
    /// gets a webhook with a secret of its own; unset: only those are accepted).
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: Option<SecretString>,

    /// The AES-256 key GitHub tokens are sealed with, 64 hex characters (unset: derived from
    /// `JWT_SECRET`, so rotating that secret means linking accounts again).
    #[arg(long, env = "GITHUB_TOKEN_KEY", hide_env_values = true)]
    pub github_token_key: Option<SecretString>,

    /// The domain sites are served under: the gateway serves `<site>.<domain>`.
    #[arg(long, env = "SITES_DOMAIN", default_value = "decentraspace.site")]
    pub sites_domain: String,

    /// A site's public address, `{site}` standing for its name.
    #[arg(long, env = "SITE_URL_TEMPLATE", default_value = "https://{site}.decentraspace.site")]
    pub site_url_template: String,

    /// Where the gateway listens (unset: no gateway in this process).
    #[arg(long, env = "GATEWAY_LISTEN")]
    pub gateway_listen: Option<std::net::SocketAddr>,

    /// Where the gateway keeps site files too large for memory (a folder of this process's own
    /// is made inside it and removed when it stops; unset: the system's temporary folder).
    #[arg(long, env = "GATEWAY_CACHE_DIR")]
    pub gateway_cache_dir: Option<std::path::PathBuf>,

    /// The most the gateway's disk cache holds, in MiB.
    #[arg(long, env = "GATEWAY_CACHE_MAX_MB", default_value_t = 4096)]
    pub gateway_cache_max_mb: u64,

    /// Where the gateway takes HTTPS (unset: no TLS in this process). It serves the certificates
    /// ordered for linked domains and, for `<site>.<SITES_DOMAIN>`, the one in
    /// `SITES_TLS_CERT_FILE`.
    #[arg(long, env = "GATEWAY_TLS_LISTEN")]
    pub gateway_tls_listen: Option<std::net::SocketAddr>,

    /// The HTTPS port visitors reach the gateway on, for the redirects from plain HTTP (443: none
    /// in the URL).
    #[arg(long, env = "GATEWAY_PUBLIC_HTTPS_PORT", default_value_t = 443)]
    pub gateway_public_https_port: u16,

    /// Whether plain HTTP to a host served over HTTPS is redirected there (off: both are
    /// served, e.g. behind a proxy that redirects itself).
    #[arg(long, env = "GATEWAY_REDIRECT_HTTPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub gateway_redirect_https: bool,

    /// `Strict-Transport-Security` max-age for HTTPS answers, in seconds (0: no header).
    #[arg(long, env = "HSTS_MAX_AGE_SECS", default_value_t = 31_536_000)]
    pub hsts_max_age_secs: u64,

    /// The wildcard certificate chain (PEM) for `*.<SITES_DOMAIN>` (ordered with DNS-01 by the
    /// operator: HTTP-01 cannot prove a wildcard).
    #[arg(long, env = "SITES_TLS_CERT_FILE")]
    pub sites_tls_cert_file: Option<std::path::PathBuf>,

    /// The private key (PEM) of `SITES_TLS_CERT_FILE`.
    #[arg(long, env = "SITES_TLS_KEY_FILE")]
    pub sites_tls_key_file: Option<std::path::PathBuf>,

    /// The ACME directory linked domains' certificates are ordered from (e.g.
    /// `https://acme-v02.api.letsencrypt.org/directory`; unset: none are ordered).
    #[arg(long, env = "ACME_DIRECTORY_URL")]
    pub acme_directory_url: Option<String>,

    /// Roots (PEM) to trust for the ACME directory's own HTTPS instead of the system's (a test
    /// CA such as pebble's).
    #[arg(long, env = "ACME_CA_ROOTS")]
    pub acme_ca_roots: Option<std::path::PathBuf>,

    /// The contact address given to the ACME server (`mailto:` added), for its expiry notices.
    #[arg(long, env = "ACME_CONTACT")]
    pub acme_contact: Option<String>,

    /// The share of a certificate's lifetime after which it is renewed (Let's Encrypt's advice:
    /// two thirds, so 30 days ahead for 90-day certificates).
    #[arg(long, env = "TLS_RENEW_AFTER_FRACTION", default_value_t = 2.0 / 3.0)]
    pub tls_renew_after_fraction: f64,

    /// The longest between two passes of the certificate orderer, in seconds (a new link wakes
    /// it sooner).
    #[arg(long, env = "TLS_CHECK_SECS", default_value_t = 30)]
    pub tls_check_secs: u64,

    /// The first wait after a failed order, in seconds; it doubles with each failure, up to a
    /// day.
    #[arg(long, env = "TLS_RETRY_SECS", default_value_t = 60)]
    pub tls_retry_secs: u64,

    /// The largest site archive (tar.gz or zip) a deployment takes, in bytes.
    #[arg(long, env = "DEPLOY_MAX_ARCHIVE_BYTES", default_value_t = 200 * 1024 * 1024)]
    pub deploy_max_archive_bytes: u64,

    /// The most files a deployment unpacks.
    #[arg(long, env = "DEPLOY_MAX_FILES", default_value_t = 20_000)]
    pub deploy_max_files: usize,

    /// The most bytes a deployment unpacks.
    #[arg(long, env = "DEPLOY_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub deploy_max_bytes: u64,

    /// Where deploy jobs unpack sources (a fresh folder per job, removed after it).
    #[arg(long, env = "DEPLOY_WORK_DIR", default_value_os_t = std::env::temp_dir())]
    pub deploy_work_dir: std::path::PathBuf,

    /// bubblewrap, the sandbox builds from source run in (missing: such deployments fail saying
    /// builds are not available, and sources that need no build still deploy).
    #[arg(long, env = "BUILD_BWRAP", default_value = "/usr/bin/bwrap")]
    pub build_bwrap: std::path::PathBuf,

    /// The package registry install steps may reach (an `http://host:port` npm registry, such as
    /// a verdaccio mirror the platform runs); unset, installs have no network and only sources
    /// without dependencies to fetch build. Build steps never have a network.
    #[arg(long, env = "BUILD_REGISTRY_URL")]
    pub build_registry_url: Option<String>,

    /// Where build caches are kept (per site and lockfile; safe to delete). Unset: a folder in
    /// `DEPLOY_WORK_DIR`.
    #[arg(long, env = "BUILD_CACHE_DIR")]
    pub build_cache_dir: Option<std::path::PathBuf>,

    /// The size build caches may reach together, in MiB (the least recently used go first).
    #[arg(long, env = "BUILD_CACHE_MAX_MB", default_value_t = 4096)]
    pub build_cache_max_mb: u64,

    /// The longest one build step (install or build) may run, in seconds.
    #[arg(long, env = "BUILD_TIME_LIMIT_SECS", default_value_t = 600)]
    pub build_time_limit_secs: u64,

    /// The CPU time one build step may use, all its processes together, in seconds.
    #[arg(long, env = "BUILD_CPU_LIMIT_SECS", default_value_t = 1200)]
    pub build_cpu_limit_secs: u64,

    /// The memory a build may use, all its processes together, in MiB.
    #[arg(long, env = "BUILD_MEMORY_LIMIT_MB", default_value_t = 2048)]
    pub build_memory_limit_mb: u64,

    /// The processes and threads a build may run at once.
    #[arg(long, env = "BUILD_PROCESS_LIMIT", default_value_t = 256)]
    pub build_process_limit: u32,

    /// The size a build's source folder may grow to (dependencies and output included), in MiB.
    #[arg(long, env = "BUILD_DISK_LIMIT_MB", default_value_t = 4096)]
    pub build_disk_limit_mb: u64,

    /// The size of a build's `/tmp`, in MiB.
    #[arg(long, env = "BUILD_TMP_LIMIT_MB", default_value_t = 512)]
    pub build_tmp_limit_mb: u64,

    /// A `node_modules` folder holding the package managers builds may use beside the machine's
    /// npm (pnpm, yarn: `tools/package-managers` after `make install`), read-only in the sandbox
    /// with its `.bin` on `PATH` (unset: sources with their lockfiles fail at the install step).
    #[arg(long, env = "BUILD_TOOLS_DIR")]
    pub build_tools_dir: Option<std::path::PathBuf>,

    /// Build minutes a Free account's builds may run each month (UTC) without charge.
    #[arg(long, env = "BUILD_MINUTES_FREE", default_value_t = 100)]
    pub build_minutes_free: u64,

    /// Build minutes a Paid account's builds may run each month (UTC) without charge.
    #[arg(long, env = "BUILD_MINUTES_PAID", default_value_t = 1000)]
    pub build_minutes_paid: u64,

    /// Credit units a build minute past the month's allowance costs (10000: 0.01 credits).
    #[arg(long, env = "BUILD_MINUTE_CREDITS", default_value_t = 10_000)]
    pub build_minute_credits: u64,

    /// Seconds between two uptime checks of each live site (0: no prober).
    #[arg(long, env = "UPTIME_INTERVAL_SECS", default_value_t = 60)]
    pub uptime_interval_secs: u64,

    /// The largest file a Free account may upload, in bytes.
    #[arg(long, env = "STORAGE_MAX_FILE_BYTES_FREE", default_value_t = 100 * 1024 * 1024)]
    pub storage_max_file_free: u64,

    /// The largest file a Paid account may upload, in bytes.
    #[arg(long, env = "STORAGE_MAX_FILE_BYTES_PAID", default_value_t = 5 * 1024 * 1024 * 1024)]
    pub storage_max_file_paid: u64,

    /// What storing a GiB for an active hour costs, in credit units (on top of the storage
    /// service's hourly price; 30 is about $0.02 per GiB-month).
    #[arg(long, env = "STORAGE_CREDITS_PER_GIB_HOUR", default_value_t = 30)]
    pub storage_credits_per_gib_hour: u64,

    /// How many bytes a Free account may store in all.
    #[arg(long, env = "STORAGE_QUOTA_BYTES_FREE", default_value_t = 1024 * 1024 * 1024)]
    pub storage_quota_free: u64,

    /// How many bytes a Paid account may store in all.
    #[arg(long, env = "STORAGE_QUOTA_BYTES_PAID", default_value_t = 100 * 1024 * 1024 * 1024)]
    pub storage_quota_paid: u64,

    /// The PostgreSQL servers managed databases are made on, comma-separated admin URLs
    /// (`postgres://admin:password@host:5432/postgres`; the role must create roles and databases
    /// and end other sessions). Owners connect to the same host and port. Unset: `/database`
    /// answers 503 and no database is made.
    #[arg(long, env = "DATABASE_HOSTS", hide_env_values = true)]
    pub database_hosts: Option<SecretString>,

    /// The folder of `pg_dump` and `pg_restore` (unset: the newest `/usr/lib/postgresql/*/bin`,
    /// then `PATH`). They must be at least as new as the database hosts.
    #[arg(long, env = "PG_BIN_DIR")]
    pub pg_bin_dir: Option<std::path::PathBuf>,

    /// How many bytes a managed database may hold before it turns read-only (at 125% of it,
    /// connections are refused until it is restored smaller, grown or cancelled).
    #[arg(long, env = "DATABASE_QUOTA_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub database_quota_bytes: u64,

    /// How many connections a managed database takes at once.
    #[arg(long, env = "DATABASE_CONNECTION_LIMIT", default_value_t = 20)]
    pub database_connection_limit: u32,

    /// The longest one statement may run in a managed database, in milliseconds.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub database_statement_timeout_ms: u64,

    /// How long a cancelled database is kept (after its final backup) before it is dropped, in
    /// seconds (3 days by default: a cancel by mistake loses nothing in that time).
    #[arg(long, env = "DATABASE_DROP_GRACE_SECS", default_value_t = 3 * 24 * 3600)]
    pub database_drop_grace_secs: u64,

    /// How often every live database is backed up, in seconds (daily by default).
    #[arg(long, env = "DATABASE_BACKUP_INTERVAL_SECS", default_value_t = 24 * 3600)]
    pub database_backup_interval_secs: u64,

    /// Origins allowed by CORS, comma-separated (unset: none; `*`: any).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// The longest a request may take, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// The largest request body accepted, in bytes (uploads have their own limits).
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Requests per second one client IP may make (bursts of twice that).
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value_t = 100)]
    pub rate_limit_per_ip: u32,

    /// The proxies (load balancers) in front of the API and the gateway, comma-separated
    /// addresses or networks (`10.0.0.0/8`): their `X-Forwarded-For` names the client that
    /// budgets and analytics key on; anyone else's is ignored. Empty: the peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::http::client::parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Requests per second one account may make (bursts of twice that).
    #[arg(long, env = "RATE_LIMIT_PER_ACCOUNT", default_value_t = 50)]
    pub rate_limit_per_account: u32,

    /// Requests per minute one client IP may make across every replica together (unset: 60
    /// times `RATE_LIMIT_PER_IP`).
    #[arg(long, env = "RATE_LIMIT_PER_IP_PER_MINUTE")]
    pub rate_limit_per_ip_per_minute: Option<u32>,

    /// Requests per minute one account may make across every replica together (unset: 60 times
    /// `RATE_LIMIT_PER_ACCOUNT`).
    #[arg(long, env = "RATE_LIMIT_PER_ACCOUNT_PER_MINUTE")]
    pub rate_limit_per_account_per_minute: Option<u32>,

    /// The indexer lag, in blocks, above which `/ready` answers 503.
    #[arg(long, env = "READY_MAX_LAG_BLOCKS", default_value_t = 300)]
    pub ready_max_lag_blocks: u64,

    /// The currencies card payments accept (Paystack), comma-separated.
    #[arg(
        long,
        env = "CARD_CURRENCIES",
        value_delimiter = ',',
        default_value = "NGN,GHS,KES,ZAR,USD"
    )]
    pub card_currencies: Vec<String>,
}

impl Config {
    /// How long an issued nonce stays usable.
    pub fn nonce_ttl(&self) -> Duration {
        Duration::from_secs(self.nonce_ttl_secs)
    }

    /// The time between two meter cycles.
    pub fn meter_interval(&self) -> Duration {
        Duration::from_secs(self.meter_interval_secs)
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}
