//! Projections: the indexed state as a fold of the platform's events.
//!
//! Every platform event changes at most one *entity* (an account, a balance, a service, a domain,
//! a role membership, a rate, a price, a limit or a setting), named by an [`EntityKey`]. The fold
//! [`apply`] turns an entity's current value and an event into its next value. The same fold serves
//! the three ways projections are written: incrementally (load the touched entities, apply the
//! batch), after a reorg (fold the touched entities again from their remaining events), and in a
//! full `reindex` (fold everything from the events table).

mod key;
mod value;

pub use key::EntityKey;
pub use value::{AccountRow, DomainRow, EntityValue, ServiceRow};

use std::collections::HashMap;

use alloy::primitives::{Address, U256};
use decentraspace_abi::{
    AccountRegistry, AccountStatus, CreditLedger, DomainRegistry, OwnershipMethod, PlatformEvent,
    ServiceKind, ServiceRegistry, ServiceState, Tier,
};

/// The entities a batch or a re-fold works on: `None` means the entity has no row (never created,
/// or deleted, like a released domain).
pub type ProjectionState = HashMap<EntityKey, Option<EntityValue>>;

/// The entity an event changes, if any. `contract` is the emitting contract's address, which keys
/// role memberships and settings.
pub fn entity_of(contract: Address, event: &PlatformEvent) -> Option<EntityKey> {
    use AccountRegistry::AccountRegistryEvents as A;
    use CreditLedger::CreditLedgerEvents as L;
    use DomainRegistry::DomainRegistryEvents as D;
    use ServiceRegistry::ServiceRegistryEvents as S;

    let setting = |name: &str| Some(EntityKey::Setting { contract, name: name.to_owned() });
    let role = |role, account| Some(EntityKey::Role { contract, role, account });
    match event {
        PlatformEvent::AccountRegistry(e) => match e {
            A::AccountRegistered(e) => Some(EntityKey::Account(e.account)),
            A::TierChanged(e) => Some(EntityKey::Account(e.account)),
            A::AccountStatusChanged(e) => Some(EntityKey::Account(e.account)),
            A::FreeTierDurationChanged(_) => setting("free_tier_duration"),
            A::PaidTierPriceChanged(_) => setting("paid_tier_price"),
            A::CreditLedgerChanged(_) => setting("credit_ledger"),
            A::RoleGranted(e) => role(e.role, e.account),
            A::RoleRevoked(e) => role(e.role, e.account),
            A::RoleAdminChanged(e) => setting(&format!("role_admin:{}", e.role)),
            A::Upgraded(_) => setting("implementation"),
            A::Initialized(_) => setting("initialized_version"),
            A::AccountUpgraded(_) => None,
        },
        PlatformEvent::CreditLedger(e) => match e {
            L::CreditsRecharged(e) => Some(EntityKey::Balance(e.account)),
            L::FiatCredited(e) => Some(EntityKey::Balance(e.account)),
            L::CreditsDeducted(e) => Some(EntityKey::Balance(e.account)),
            L::TokenRateSet(e) => Some(EntityKey::TokenRate(e.token)),
            L::ServiceRegistryChanged(_) => setting("service_registry"),
            L::RoleGranted(e) => role(e.role, e.account),
            L::RoleRevoked(e) => role(e.role, e.account),
            L::RoleAdminChanged(e) => setting(&format!("role_admin:{}", e.role)),
            L::Upgraded(_) => setting("implementation"),
            L::Initialized(_) => setting("initialized_version"),
            L::DeductionSkipped(_) | L::CreditDepleted(_) | L::TreasuryWithdrawn(_) => None,
        },
        PlatformEvent::ServiceRegistry(e) => match e {
            S::ServiceCreated(e) => service_key(e.serviceId),
            S::ServicePaused(e) => service_key(e.serviceId),
            S::ServiceResumed(e) => service_key(e.serviceId),
            S::ServiceSuspended(e) => service_key(e.serviceId),
            S::ServiceCancelled(e) => service_key(e.serviceId),
            S::ServiceExpirySet(e) => service_key(e.serviceId),
            S::PriceSet(e) => Some(EntityKey::Price(
                ServiceKind::try_from(e.kind).ok()?,
                Tier::try_from(e.tier).ok()?,
            )),
            S::TierLimitSet(e) => Some(EntityKey::TierLimit(
                ServiceKind::try_from(e.kind).ok()?,
                Tier::try_from(e.tier).ok()?,
            )),
            S::RoleGranted(e) => role(e.role, e.account),
            S::RoleRevoked(e) => role(e.role, e.account),
            S::RoleAdminChanged(e) => setting(&format!("role_admin:{}", e.role)),
            S::Upgraded(_) => setting("implementation"),
            S::Initialized(_) => setting("initialized_version"),
        },
        PlatformEvent::DomainRegistry(e) => match e {
            D::DomainRegistered(e) => Some(EntityKey::Domain(e.node)),
            D::DomainRenewed(e) => Some(EntityKey::Domain(e.node)),
            D::DomainVerified(e) => Some(EntityKey::Domain(e.node)),
            D::DomainLinked(e) => Some(EntityKey::Domain(e.node)),
            D::DomainUnlinked(e) => Some(EntityKey::Domain(e.node)),
            D::DomainReleased(e) => Some(EntityKey::Domain(e.node)),
            D::DomainTransferred(e) => Some(EntityKey::Domain(e.node)),
            D::ServiceRegistryChanged(_) => setting("service_registry"),
            D::RoleGranted(e) => role(e.role, e.account),
            D::RoleRevoked(e) => role(e.role, e.account),
            D::RoleAdminChanged(e) => setting(&format!("role_admin:{}", e.role)),
            D::Upgraded(_) => setting("implementation"),
            D::Initialized(_) => setting("initialized_version"),
        },
    }
}

/// The account an event is about, for per-account reads of the events table.
pub fn account_of(event: &PlatformEvent) -> Option<Address> {
    use AccountRegistry::AccountRegistryEvents as A;
    use CreditLedger::CreditLedgerEvents as L;
    use DomainRegistry::DomainRegistryEvents as D;
    use ServiceRegistry::ServiceRegistryEvents as S;

    match event {
        PlatformEvent::AccountRegistry(e) => match e {
            A::AccountRegistered(e) => Some(e.account),
            A::TierChanged(e) => Some(e.account),
            A::AccountStatusChanged(e) => Some(e.account),
            A::AccountUpgraded(e) => Some(e.account),
            A::RoleGranted(e) => Some(e.account),
            A::RoleRevoked(e) => Some(e.account),
            _ => None,
        },
        PlatformEvent::CreditLedger(e) => match e {
            L::CreditsRecharged(e) => Some(e.account),
            L::FiatCredited(e) => Some(e.account),
            L::CreditsDeducted(e) => Some(e.account),
            L::DeductionSkipped(e) => Some(e.account),
            L::CreditDepleted(e) => Some(e.account),
            L::RoleGranted(e) => Some(e.account),
            L::RoleRevoked(e) => Some(e.account),
            _ => None,
        },
        PlatformEvent::ServiceRegistry(e) => match e {
            S::ServiceCreated(e) => Some(e.owner),
            S::RoleGranted(e) => Some(e.account),
            S::RoleRevoked(e) => Some(e.account),
            _ => None,
        },
        PlatformEvent::DomainRegistry(e) => match e {
            D::DomainRegistered(e) => Some(e.owner),
            D::DomainVerified(e) => Some(e.owner),
            D::DomainReleased(e) => Some(e.owner),
            D::DomainTransferred(e) => Some(e.to),
            D::RoleGranted(e) => Some(e.account),
            D::RoleRevoked(e) => Some(e.account),
            _ => None,
        },
    }
}

fn service_key(id: U256) -> Option<EntityKey> {
    u64::try_from(id).ok().map(EntityKey::Service)
}

/// Why an event could not be folded. The indexer logs it and keeps the raw event: the projection
/// stays as the events before it made it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// The event changes an entity that does not exist (e.g. a pause of an unknown service).
    #[error("{0} changes {1}, which has no row")]
    Missing(&'static str, String),
    /// A value in the event is out of the range the projection stores.
    #[error("{0} carries a value out of range: {1}")]
    OutOfRange(&'static str, String),
}

/// Folds one event into `state` (which must hold the event's entity, loaded or `None`). `time` is
/// the block timestamp (unix seconds).
pub fn apply(
    state: &mut ProjectionState,
    contract: Address,
    event: &PlatformEvent,
    time: u64,
) -> Result<(), FoldError> {
    use AccountRegistry::AccountRegistryEvents as A;
    use CreditLedger::CreditLedgerEvents as L;
    use DomainRegistry::DomainRegistryEvents as D;
    use ServiceRegistry::ServiceRegistryEvents as S;

    let Some(key) = entity_of(contract, event) else { return Ok(()) };
    let slot = state.entry(key.clone()).or_insert(None);
    let missing = |name| FoldError::Missing(name, key.to_string());

    match event {
        PlatformEvent::AccountRegistry(e) => match e {
            A::AccountRegistered(e) => {
                *slot = Some(EntityValue::Account(AccountRow {
                    status: AccountStatus::Active,
                    tier: Tier::Free,
                    tier_expires_at: 0,
                    registered_at: e.registeredAt,
                }));
            }
            A::TierChanged(e) => {
                let Some(EntityValue::Account(row)) = slot else {
                    return Err(missing("TierChanged"));
                };
                row.tier = enum_value(e.tier, "TierChanged")?;
                row.tier_expires_at = e.expiresAt;
            }
            A::AccountStatusChanged(e) => {
                let Some(EntityValue::Account(row)) = slot else {
                    return Err(missing("AccountStatusChanged"));
                };
                row.status = enum_value(e.status, "AccountStatusChanged")?;
            }
            A::FreeTierDurationChanged(e) => *slot = setting(e.duration),
            A::PaidTierPriceChanged(e) => *slot = setting(e.creditsPerMonth),
            A::CreditLedgerChanged(e) => *slot = setting(e.ledger),
            A::RoleGranted(_) => *slot = Some(EntityValue::RoleMember),
            A::RoleRevoked(_) => *slot = None,
            A::RoleAdminChanged(e) => *slot = setting(e.newAdminRole),
            A::Upgraded(e) => *slot = setting(e.implementation),
            A::Initialized(e) => *slot = setting(e.version),
            A::AccountUpgraded(_) => {}
        },
        PlatformEvent::CreditLedger(e) => match e {
            L::CreditsRecharged(e) => *slot = Some(EntityValue::Balance(e.balanceAfter)),
            L::FiatCredited(e) => *slot = Some(EntityValue::Balance(e.balanceAfter)),
            L::CreditsDeducted(e) => *slot = Some(EntityValue::Balance(e.balanceAfter)),
            L::TokenRateSet(e) => *slot = Some(EntityValue::Amount(e.creditsPerTokenWad)),
            L::ServiceRegistryChanged(e) => *slot = setting(e.serviceRegistry),
            L::RoleGranted(_) => *slot = Some(EntityValue::RoleMember),
            L::RoleRevoked(_) => *slot = None,
            L::RoleAdminChanged(e) => *slot = setting(e.newAdminRole),
            L::Upgraded(e) => *slot = setting(e.implementation),
            L::Initialized(e) => *slot = setting(e.version),
            L::DeductionSkipped(_) | L::CreditDepleted(_) | L::TreasuryWithdrawn(_) => {}
        },
        PlatformEvent::ServiceRegistry(e) => match e {
            S::ServiceCreated(e) => {
                *slot = Some(EntityValue::Service(ServiceRow {
                    owner: e.owner,
                    kind: enum_value(e.kind, "ServiceCreated")?,
                    state: ServiceState::Active,
                    service_ref: e.r#ref,
                    created_at: time,
                    expires_at: e.expiresAt,
                }));
            }
            S::ServicePaused(_) => {
                set_state(slot, ServiceState::Paused).ok_or_else(|| missing("ServicePaused"))?
            }
            S::ServiceResumed(_) => {
                set_state(slot, ServiceState::Active).ok_or_else(|| missing("ServiceResumed"))?;
            }
            S::ServiceSuspended(_) => {
                set_state(slot, ServiceState::Suspended)
                    .ok_or_else(|| missing("ServiceSuspended"))?;
            }
            S::ServiceCancelled(_) => {
                set_state(slot, ServiceState::Cancelled)
                    .ok_or_else(|| missing("ServiceCancelled"))?;
            }
            S::ServiceExpirySet(e) => {
                let Some(EntityValue::Service(row)) = slot else {
                    return Err(missing("ServiceExpirySet"));
                };
                row.expires_at = e.expiresAt;
            }
            S::PriceSet(e) => *slot = Some(EntityValue::Amount(e.creditsPerHour)),
            S::TierLimitSet(e) => *slot = Some(EntityValue::Limit(e.limit)),
            S::RoleGranted(_) => *slot = Some(EntityValue::RoleMember),
            S::RoleRevoked(_) => *slot = None,
            S::RoleAdminChanged(e) => *slot = setting(e.newAdminRole),
            S::Upgraded(e) => *slot = setting(e.implementation),
            S::Initialized(e) => *slot = setting(e.version),
        },
        PlatformEvent::DomainRegistry(e) => match e {
            D::DomainRegistered(e) => {
                *slot = Some(EntityValue::Domain(DomainRow {
                    name: e.name.clone(),
                    owner: e.owner,
                    method: OwnershipMethod::Purchase,
                    expires_at: e.expiresAt,
                    service_id: 0,
                }));
            }
            D::DomainVerified(e) => {
                // A proof keeps the link the contract kept (it emits DomainUnlinked first otherwise).
                let service_id = match slot {
                    Some(EntityValue::Domain(row)) => row.service_id,
                    _ => 0,
                };
                *slot = Some(EntityValue::Domain(DomainRow {
                    name: e.name.clone(),
                    owner: e.owner,
                    method: enum_value(e.method, "DomainVerified")?,
                    expires_at: 0,
                    service_id,
                }));
            }
            D::DomainRenewed(e) => {
                let Some(EntityValue::Domain(row)) = slot else {
                    return Err(missing("DomainRenewed"));
                };
                row.expires_at = e.expiresAt;
            }
            D::DomainLinked(e) => {
                let Some(EntityValue::Domain(row)) = slot else {
                    return Err(missing("DomainLinked"));
                };
                row.service_id = u64::try_from(e.serviceId)
                    .map_err(|_| FoldError::OutOfRange("DomainLinked", e.serviceId.to_string()))?;
            }
            D::DomainUnlinked(_) => {
                let Some(EntityValue::Domain(row)) = slot else {
                    return Err(missing("DomainUnlinked"));
                };
                row.service_id = 0;
            }
            D::DomainReleased(_) => *slot = None,
            D::DomainTransferred(e) => {
                let Some(EntityValue::Domain(row)) = slot else {
                    return Err(missing("DomainTransferred"));
                };
                row.owner = e.to;
            }
            D::ServiceRegistryChanged(e) => *slot = setting(e.serviceRegistry),
            D::RoleGranted(_) => *slot = Some(EntityValue::RoleMember),
            D::RoleRevoked(_) => *slot = None,
            D::RoleAdminChanged(e) => *slot = setting(e.newAdminRole),
            D::Upgraded(e) => *slot = setting(e.implementation),
            D::Initialized(e) => *slot = setting(e.version),
        },
    }
    Ok(())
}

fn setting(value: impl ToString) -> Option<EntityValue> {
    Some(EntityValue::Setting(value.to_string()))
}

fn set_state(slot: &mut Option<EntityValue>, state: ServiceState) -> Option<()> {
    let Some(EntityValue::Service(row)) = slot else { return None };
    row.state = state;
    Some(())
}

fn enum_value<E: TryFrom<u8>>(value: u8, event: &'static str) -> Result<E, FoldError> {
    E::try_from(value).map_err(|_| FoldError::OutOfRange(event, value.to_string()))
}

#[cfg(test)]
mod tests;
