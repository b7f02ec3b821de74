//! The deployment record the deploy script writes to `deployments/<chainId>.json`.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::Deserialize;

/// Where the platform is deployed on one chain, and who holds which role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The chain id the record belongs to.
    pub chain_id: u64,
    /// The block the deployment started at: indexing from here sees every platform event.
    pub deploy_block: u64,
    /// The contracts' addresses (the registries' proxies, not their implementations).
    pub contracts: PlatformContracts,
    /// The addresses given each role at deployment.
    pub roles: PlatformRoles,
}

/// The addresses of the platform contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PlatformContracts {
    /// The ERC-2771 forwarder.
    pub forwarder: Address,
    /// Accounts, tiers and statuses.
    pub account_registry: Address,
    /// Credit balances.
    pub credit_ledger: Address,
    /// Service subscriptions.
    pub service_registry: Address,
    /// Domain ownership and links.
    pub domain_registry: Address,
    /// The test stablecoin; the zero address where none was deployed.
    pub test_token: Address,
}

impl PlatformContracts {
    /// The contracts whose events make up the platform's state (the forwarder emits none of it).
    pub fn registries(&self) -> [Address; 4] {
        [self.account_registry, self.credit_ledger, self.service_registry, self.domain_registry]
    }

    /// The test stablecoin, when the deployment has one.
    pub fn test_token(&self) -> Option<Address> {
        (!self.test_token.is_zero()).then_some(self.test_token)
    }
}

/// The addresses given each role at deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformRoles {
    /// `DEFAULT_ADMIN_ROLE` on every registry.
    pub admin: Address,
    /// `OPERATOR_ROLE` on the account and service registries.
    pub operator: Address,
    /// `PAYMENT_ORACLE_ROLE` on the ledger.
    pub payment_oracle: Address,
    /// `BILLING_ROLE` on the ledger.
    pub billing: Address,
    /// `REGISTRAR_ROLE` on the domain registry.
    pub registrar: Address,
    /// `VERIFIER_ROLE` on the domain registry.
    pub verifier: Address,
}

/// Why a deployment record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// The file could not be read.
    #[error("cannot read deployment record {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a deployment record.
    #[error("deployment record {path} is malformed: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

impl Deployment {
    /// Reads a deployment record.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DeploymentError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| DeploymentError::Read { path: path.to_owned(), source })?;
        serde_json::from_str(&text)
            .map_err(|source| DeploymentError::Parse { path: path.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{
      "chainId": 31337,
      "contracts": {
        "AccountRegistry": "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0",
        "CreditLedger": "0xDc64a140Aa3E981100a9becA4E685f962f0cF6C9",
        "DomainRegistry": "0x0165878A594ca255338adfa4d48449f69242Eb8F",
        "Forwarder": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "ServiceRegistry": "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707",
        "TestToken": "0x0000000000000000000000000000000000000000"
      },
      "deployBlock": 7,
      "roles": {
        "admin": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "billing": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "operator": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "paymentOracle": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "registrar": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "verifier": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
      }
    }"#;

    #[test]
    fn parses_the_record_the_deploy_script_writes() {
        let d: Deployment = serde_json::from_str(RECORD).expect("record parses");
        assert_eq!(d.chain_id, 31337);
        assert_eq!(d.deploy_block, 7);
        assert_eq!(d.contracts.registries()[1], d.contracts.credit_ledger);
        assert_eq!(d.contracts.test_token(), None, "a zero address means no test token");
        assert_ne!(d.roles.operator, d.roles.admin);
    }

    #[test]
    fn reports_the_path_of_a_missing_record() {
        let err = Deployment::load("/nonexistent/31337.json").expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/31337.json"), "{err}");
    }
}
