//! A local chain for one test: anvil on a free port with the platform deployed.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use alloy::{
    network::EthereumWallet,
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, U256, keccak256},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use anyhow::{Context, bail};
use decentraspace_abi::{CreditLedger, Deployment};

/// The anvil accounts given each role at deployment (by index of anvil's dev accounts), so that
/// tests prove each role went to the configured address, not merely to the deployer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Pays for the deployment and renounces admin at its end; holds no role afterwards.
    Deployer = 0,
    /// `DEFAULT_ADMIN_ROLE` everywhere.
    Admin = 1,
    /// `OPERATOR_ROLE`.
    Operator = 2,
    /// `PAYMENT_ORACLE_ROLE`.
    PaymentOracle = 3,
    /// `BILLING_ROLE`.
    Billing = 4,
    /// `REGISTRAR_ROLE`.
    Registrar = 5,
    /// `VERIFIER_ROLE`.
    Verifier = 6,
    /// Submits users' forward requests and pays their gas; holds no role.
    Relayer = 7,
}

/// Anvil accounts from this index on act as users (the harness starts anvil with 30).
const FIRST_USER: usize = 8;

/// The repository's root (where `foundry.toml` and `node_modules/` are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// A Foundry binary from the npm platform package. Not `node_modules/.bin`'s wrapper: it loses the
/// exit code, and killing it would not kill the tool.
fn foundry_tool(name: &str) -> PathBuf {
    repo_root()
        .join("node_modules/@foundry-rs")
        .join(format!("{name}-{}-{}", npm_os(), npm_arch()))
        .join("bin")
        .join(name)
}

const fn npm_os() -> &'static str {
    if cfg!(target_os = "macos") { "darwin" } else { "linux" }
}

const fn npm_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }
}

/// Anvil with the platform deployed; anvil stops when this is dropped.
#[derive(Debug)]
pub struct TestChain {
    anvil: AnvilInstance,
    /// The deployment record the deploy script wrote.
    pub deployment: Deployment,
    /// Where the record is (removed when the chain is dropped).
    pub deployment_file: PathBuf,
}

impl Drop for TestChain {
    fn drop(&mut self) {
        fs::remove_file(&self.deployment_file).ok();
    }
}

impl TestChain {
    /// Starts anvil on a free port and deploys the platform with the deploy script.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts anvil with extra arguments (e.g. `--gas-limit`), and deploys.
    pub async fn start_with(args: &[&str]) -> anyhow::Result<Self> {
        // Role holders take the first eight; tests use up to twenty-two users unless they ask
        // for another number.
        let accounts: &[&str] =
            if args.contains(&"--accounts") { &[] } else { &["--accounts", "30"] };
        let mut failures = Vec::new();
        // forge has been seen to hang mid-broadcast on rare runs of a loaded machine: each attempt
        // is bounded and starts over on a fresh chain (a half-broadcast deployment would leave
        // the next attempt's nonces behind).
        for attempt in 1..=DEPLOY_ATTEMPTS {
            let anvil = Anvil::new()
                .path(foundry_tool("anvil"))
                .args(accounts.iter().copied())
                .args(args.iter().copied())
                .try_spawn()
                .context("start anvil (run `npm ci` first)")?;
            match deploy(&anvil) {
                Ok((deployment, deployment_file)) => {
                    return Ok(Self { anvil, deployment, deployment_file });
                }
                Err(err) => failures.push(format!("attempt {attempt}: {err:#}")),
            }
        }
        bail!("deploy script failed:\n{}", failures.join("\n"))
    }

    /// The chain's HTTP endpoint.
    pub fn endpoint(&self) -> String {
        self.anvil.endpoint()
    }

    /// The anvil process's id (benchmarks read its CPU time).
    pub fn anvil_pid(&self) -> u32 {
        self.anvil.child().id()
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.anvil.chain_id()
    }

    /// The signer holding `role`.
    pub fn role(&self, role: Role) -> PrivateKeySigner {
        self.signer(role as usize)
    }

    /// The `n`-th user wallet (distinct from every role holder).
    pub fn user(&self, n: usize) -> PrivateKeySigner {
        self.signer(FIRST_USER + n)
    }

    fn signer(&self, index: usize) -> PrivateKeySigner {
        PrivateKeySigner::from(self.anvil.keys()[index].clone())
    }

    /// A provider that signs and sends transactions as `signer`.
    pub fn provider_as(&self, signer: PrivateKeySigner) -> DynProvider {
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.anvil.endpoint_url())
            .erased()
    }

    /// A read-only provider.
    pub fn reader(&self) -> DynProvider {
        ProviderBuilder::new().connect_http(self.anvil.endpoint_url()).erased()
    }

    /// Gives `account` `credits` (credit units) as a card payment the payment oracle credits,
    /// under a payment reference of its own; waits for the receipt. A priced service opens only
    /// for an owner whose balance covers its first hour.
    pub async fn credit(&self, account: Address, credits: u64) -> anyhow::Result<()> {
        let oracle = self.provider_as(self.role(Role::PaymentOracle));
        let reference = keccak256(format!("test-credit:{account}:{}", rand::random::<u64>()));
        let receipt = CreditLedger::new(self.deployment.contracts.credit_ledger, &oracle)
            .creditFiat(account, U256::from(credits), reference)
            .send()
            .await?
            .get_receipt()
            .await?;
        anyhow::ensure!(receipt.status(), "crediting {account} reverted");
        Ok(())
    }

    /// Stops the clock: every block from now on has the latest block's time until
    /// [`TestChain::mine_at`] moves it (time-based charges become exact).
    pub async fn freeze_time(&self) -> anyhow::Result<()> {
        let _: serde_json::Value =
            self.reader().raw_request("anvil_setBlockTimestampInterval".into(), (0,)).await?;
        Ok(())
    }

    /// Mines an empty block at `timestamp` (unix seconds); later blocks keep that time while the
    /// clock is frozen.
    pub async fn mine_at(&self, timestamp: u64) -> anyhow::Result<u64> {
        let _: serde_json::Value =
            self.reader().raw_request("evm_mine".into(), (timestamp,)).await?;
        Ok(self.reader().get_block_number().await?)
    }

    /// The latest block's time (unix seconds).
    pub async fn time(&self) -> anyhow::Result<u64> {
        let block = self
            .reader()
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .context("latest block")?;
        Ok(block.header.timestamp)
    }
}

/// Runs the deploy script against `anvil`, giving each role to its own account, and reads back
/// the record it wrote.
fn deploy(anvil: &AnvilInstance) -> anyhow::Result<(Deployment, PathBuf)> {
    let root = repo_root();
    let dir = root.join("deployments/test");
    fs::create_dir_all(&dir).context("create deployments/test")?;
    let record = dir.join(format!("anvil-{}.json", anvil.port()));
    let key = |i: usize| format!("0x{}", alloy::hex::encode(anvil.keys()[i].to_bytes()));
    let address = |role: Role| anvil.addresses()[role as usize].to_string();

    // One forge at a time over the shared build cache, across test threads and processes.
    let lock = File::create(dir.join(".forge.lock")).context("create forge lock")?;
    lock.lock().context("take forge lock")?;
    run_deploy_script(&root, anvil, &record, &key, &address)?;
    drop(lock);
    let deployment = Deployment::load(&record)?;
    Ok((deployment, record))
}

/// How long one run of the deploy script may take (it takes a few seconds).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many fresh chains a deployment is tried on.
const DEPLOY_ATTEMPTS: usize = 3;

fn run_deploy_script(
    root: &Path,
    anvil: &AnvilInstance,
    record: &Path,
    key: &dyn Fn(usize) -> String,
    address: &dyn Fn(Role) -> String,
) -> anyhow::Result<()> {
    let logs = tempfile_pair(record)?;
    let mut child = Command::new(foundry_tool("forge"))
        .current_dir(root)
        // `--slow`: one transaction at a time, each after the previous one's receipt.
        .args(["script", "contracts/script/Deploy.s.sol", "--broadcast", "--slow", "--rpc-url"])
        .arg(anvil.endpoint())
        .env("FOUNDRY_SOLC", root.join("tools/solc/solc"))
        .env("FOUNDRY_OFFLINE", "true")
        .env("DEPLOYER_PRIVATE_KEY", key(Role::Deployer as usize))
        .env("ADMIN", address(Role::Admin))
        .env("OPERATOR", address(Role::Operator))
        .env("PAYMENT_ORACLE", address(Role::PaymentOracle))
        .env("BILLING", address(Role::Billing))
        .env("REGISTRAR", address(Role::Registrar))
        .env("VERIFIER", address(Role::Verifier))
        .env("DEPLOYMENTS_FILE", record)
        // Never wait on a prompt.
        .stdin(Stdio::null())
        .stdout(File::create(&logs.0)?)
        .stderr(File::create(&logs.1)?)
        .spawn()
        .context("run forge script (run `npm ci` first)")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > DEPLOY_TIMEOUT {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}\n{}",
        fs::read_to_string(&logs.0).unwrap_or_default(),
        fs::read_to_string(&logs.1).unwrap_or_default()
    );
    fs::remove_file(&logs.0).ok();
    fs::remove_file(&logs.1).ok();
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("forge script exited with {status}:\n{output}"),
        None => bail!("forge script did not finish within {DEPLOY_TIMEOUT:?}:\n{output}"),
    }
}

/// Files next to `record` for the script's stdout and stderr (files, not pipes: a full pipe would
/// block the script while the harness waits for it).
fn tempfile_pair(record: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    Ok((record.with_extension("stdout.log"), record.with_extension("stderr.log")))
}
