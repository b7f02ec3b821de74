//! What every feature's state holds: the database (the indexed mirror and the API's own tables),
//! the configuration, the platform contracts, a read-only chain client, and the operator key that
//! sends the platform's role-holder calls. Each feature's state is this plus the clients and keys
//! that feature uses, and dereferences to it.

use std::sync::Arc;

use alloy::{
    primitives::{Address, U256},
    providers::DynProvider,
};
use chrono::{DateTime, Utc};
use decentraspace_abi::Deployment;
use sqlx::PgPool;

use crate::{
    Config,
    chain::{Operator, outbox::Outbox},
    http::error::{ApiError, ApiResult},
};

/// The state every feature shares.
#[derive(Debug, Clone)]
pub struct Platform {
    /// The database.
    pub db: PgPool,
    /// The configuration.
    pub config: Arc<Config>,
    /// The platform contracts.
    pub deployment: Arc<Deployment>,
    /// A read-only chain client (EIP-1271 checks, simulations, readiness).
    pub chain: DynProvider,
    /// Sends the operator's transactions; unset without a key.
    pub operator: Option<Operator>,
    /// The outbox every signed transaction goes through.
    pub outbox: Outbox,
    /// Wake-ups of jobs across replicas.
    pub wakes: crate::wakes::Wakes,
    /// Where indexed reads go (a current replica, else the primary).
    pub reads: crate::reads::Reads,
}

impl Platform {
    /// The chain id of the deployment.
    pub fn chain_id(&self) -> u64 {
        self.deployment.chain_id
    }

    /// The operator, or 503 when no operator key is configured.
    pub fn operator(&self) -> ApiResult<&Operator> {
        self.operator.as_ref().ok_or(ApiError::NotConfigured("no operator key is configured"))
    }
}

/// Implements `Deref<Target = Platform>` for a feature state with a `platform` field.
macro_rules! feature_state {
    ($state:ty) => {
        impl std::ops::Deref for $state {
            type Target = $crate::platform::Platform;

            fn deref(&self) -> &Self::Target {
                &self.platform
            }
        }
    };
}
pub(crate) use feature_state;

/// An account's balance as it stands this second (credit units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// The indexed on-chain balance.
    pub on_chain: U256,
    /// Used and not in that balance yet: charges not indexed, and active time not charged.
    pub accrued: U256,
    /// `on_chain − accrued`, never below zero.
    pub available: U256,
    /// The time the accrual runs to: the indexed chain time, or the clock when it is later
    /// (blocks come only with transactions on a quiet chain).
    pub as_of: DateTime<Utc>,
}

/// Balances as billing computes them, for a feature that shows them without depending on
/// billing (the public stream); the composition root hands billing's in.
pub trait Balances: Send + Sync + std::fmt::Debug {
    /// `account`'s balance now.
    fn of(&self, account: Address) -> futures::future::BoxFuture<'_, anyhow::Result<Balance>>;
}
