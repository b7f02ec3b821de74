//! Reverts of the platform contracts as values: revert data decoded by selector into the bindings'
//! error enums, so callers match the variant (`ServiceRegistryNotOwner`), never a text.

use std::fmt;

use alloy::sol_types::SolInterface;

use crate::bindings::{
    AccountRegistry::AccountRegistryErrors, CreditLedger::CreditLedgerErrors,
    DomainRegistry::DomainRegistryErrors, Forwarder::ForwarderErrors,
    ServiceRegistry::ServiceRegistryErrors,
};

/// A platform contract's revert, decoded. The contracts' own errors carry the contract's name
/// (`CreditLedgerUsageRefUsed`), so a variant means one thing wherever it was raised; errors the
/// contracts share through OpenZeppelin (`AccessControlUnauthorizedAccount`, …) decode as the
/// first contract's that declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformRevert {
    /// An `AccountRegistry` error.
    AccountRegistry(AccountRegistryErrors),
    /// A `CreditLedger` error.
    CreditLedger(CreditLedgerErrors),
    /// A `ServiceRegistry` error.
    ServiceRegistry(ServiceRegistryErrors),
    /// A `DomainRegistry` error.
    DomainRegistry(DomainRegistryErrors),
    /// The forwarder's error (a forward request's signature, deadline or nonce).
    Forwarder(ForwarderErrors),
}

impl PlatformRevert {
    /// Decodes revert data; `None` for data no platform contract defines (a bare `revert()`, a
    /// panic, a foreign contract's error).
    pub fn decode(data: &[u8]) -> Option<Self> {
        if let Ok(e) = ServiceRegistryErrors::abi_decode(data) {
            return Some(Self::ServiceRegistry(e));
        }
        if let Ok(e) = CreditLedgerErrors::abi_decode(data) {
            return Some(Self::CreditLedger(e));
        }
        if let Ok(e) = DomainRegistryErrors::abi_decode(data) {
            return Some(Self::DomainRegistry(e));
        }
        if let Ok(e) = AccountRegistryErrors::abi_decode(data) {
            return Some(Self::AccountRegistry(e));
        }
        ForwarderErrors::abi_decode(data).ok().map(Self::Forwarder)
    }

    /// Whether the call acted on what another wallet owns (a service or a domain record): a
    /// permission refusal rather than a bad request.
    pub fn is_not_owner(&self) -> bool {
        matches!(
            self,
            Self::ServiceRegistry(ServiceRegistryErrors::ServiceRegistryNotOwner(_))
                | Self::DomainRegistry(DomainRegistryErrors::DomainRegistryNotOwner(_))
        )
    }

    /// Whether the caller lacks the role the function needs (an operator key without its role).
    pub fn is_unauthorized_role(&self) -> bool {
        matches!(
            self,
            Self::AccountRegistry(AccountRegistryErrors::AccessControlUnauthorizedAccount(_))
                | Self::CreditLedger(CreditLedgerErrors::AccessControlUnauthorizedAccount(_))
                | Self::ServiceRegistry(ServiceRegistryErrors::AccessControlUnauthorizedAccount(_))
                | Self::DomainRegistry(DomainRegistryErrors::AccessControlUnauthorizedAccount(_))
        )
    }
}

impl fmt::Display for PlatformRevert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The variant with its arguments, e.g. `ServiceRegistryNotOwner(ServiceRegistryNotOwner
        // { serviceId: 3, caller: 0x… })`: what a person needs to see which check failed.
        match self {
            Self::AccountRegistry(e) => write!(f, "{e:?}"),
            Self::CreditLedger(e) => write!(f, "{e:?}"),
            Self::ServiceRegistry(e) => write!(f, "{e:?}"),
            Self::DomainRegistry(e) => write!(f, "{e:?}"),
            Self::Forwarder(e) => write!(f, "{e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy::{
        primitives::{Address, B256, U256},
        sol_types::SolError,
    };

    use super::*;
    use crate::bindings::{CreditLedger, DomainRegistry, ServiceRegistry};

    #[test]
    fn each_contract_error_decodes_to_its_variant() {
        let not_owner = ServiceRegistry::ServiceRegistryNotOwner {
            serviceId: U256::from(3),
            caller: Address::repeat_byte(1),
        }
        .abi_encode();
        let decoded = PlatformRevert::decode(&not_owner).expect("decodes");
        assert!(decoded.is_not_owner());
        assert!(decoded.to_string().starts_with("ServiceRegistryNotOwner"), "{decoded}");

        let used =
            CreditLedger::CreditLedgerUsageRefUsed { usageRef: B256::repeat_byte(2) }.abi_encode();
        assert!(matches!(
            PlatformRevert::decode(&used),
            Some(PlatformRevert::CreditLedger(CreditLedgerErrors::CreditLedgerUsageRefUsed(_)))
        ));

        let domain = DomainRegistry::DomainRegistryNotOwner {
            node: B256::repeat_byte(3),
            caller: Address::repeat_byte(4),
        }
        .abi_encode();
        assert!(PlatformRevert::decode(&domain).expect("decodes").is_not_owner());

        let role = ServiceRegistry::AccessControlUnauthorizedAccount {
            account: Address::repeat_byte(5),
            neededRole: B256::ZERO,
        }
        .abi_encode();
        let decoded = PlatformRevert::decode(&role).expect("decodes");
        assert!(decoded.is_unauthorized_role() && !decoded.is_not_owner());

        assert_eq!(PlatformRevert::decode(&[0xde, 0xad, 0xbe, 0xef]), None);
        assert_eq!(PlatformRevert::decode(&[]), None);
    }
}
