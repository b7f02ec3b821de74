//! Values of projection entities.

use alloy::primitives::{Address, B256, U256};
use decentraspace_abi::{AccountStatus, OwnershipMethod, ServiceKind, ServiceState, Tier};

/// The value of one entity (see [`EntityKey`](super::EntityKey) for which goes with which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityValue {
    /// An account.
    Account(AccountRow),
    /// A credit balance.
    Balance(U256),
    /// A service.
    Service(ServiceRow),
    /// A domain.
    Domain(DomainRow),
    /// A role membership (the key says whose).
    RoleMember,
    /// A token rate or an hourly price.
    Amount(U256),
    /// A tier limit.
    Limit(u32),
    /// A setting, as text.
    Setting(String),
}

/// An account's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Active or Suspended.
    pub status: AccountStatus,
    /// The tier as last set.
    pub tier: Tier,
    /// When a Paid tier ends (unix seconds; 0: never).
    pub tier_expires_at: u64,
    /// When the account registered (unix seconds).
    pub registered_at: u64,
}

/// A service's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    /// The owner.
    pub owner: Address,
    /// The kind.
    pub kind: ServiceKind,
    /// The state.
    pub state: ServiceState,
    /// The reference chosen at creation.
    pub service_ref: B256,
    /// When it was created (unix seconds).
    pub created_at: u64,
    /// When it expires for a Free owner (unix seconds; 0: never).
    pub expires_at: u64,
}

/// A domain's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    /// The normalised name.
    pub name: String,
    /// The owner.
    pub owner: Address,
    /// How ownership was established.
    pub method: OwnershipMethod,
    /// When a purchase ends (unix seconds; 0 for proven names).
    pub expires_at: u64,
    /// The linked hosting service (0: none).
    pub service_id: u64,
}
