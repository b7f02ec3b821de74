//! Names of projection entities, and their text form in `events.entity`.

use std::{fmt, str::FromStr};

use alloy::primitives::{Address, B256};
use decentraspace_abi::{ServiceKind, Tier};

/// One entity of the projections: the unit a reorg re-folds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKey {
    /// An account's registration, tier and status (`accounts`).
    Account(Address),
    /// An account's credit balance (`credit_balances`).
    Balance(Address),
    /// A service (`services`).
    Service(u64),
    /// A domain by node (`domains`).
    Domain(B256),
    /// Whether `account` holds `role` on `contract` (`role_members`).
    Role {
        /// The contract.
        contract: Address,
        /// The role id.
        role: B256,
        /// The member.
        account: Address,
    },
    /// A token's rate (`token_rates`).
    TokenRate(Address),
    /// An hourly price (`service_prices`).
    Price(ServiceKind, Tier),
    /// A tier limit (`tier_limits`).
    TierLimit(ServiceKind, Tier),
    /// A single-valued setting of a contract (`contract_settings`).
    Setting {
        /// The contract.
        contract: Address,
        /// The setting's name.
        name: String,
    },
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Account(a) => write!(f, "account:{a:#x}"),
            Self::Balance(a) => write!(f, "balance:{a:#x}"),
            Self::Service(id) => write!(f, "service:{id}"),
            Self::Domain(node) => write!(f, "domain:{node:#x}"),
            Self::Role { contract, role, account } => {
                write!(f, "role:{contract:#x}:{role:#x}:{account:#x}")
            }
            Self::TokenRate(t) => write!(f, "token_rate:{t:#x}"),
            Self::Price(kind, tier) => write!(f, "price:{kind}:{tier}"),
            Self::TierLimit(kind, tier) => write!(f, "tier_limit:{kind}:{tier}"),
            Self::Setting { contract, name } => write!(f, "setting:{contract:#x}:{name}"),
        }
    }
}

impl EntityKey {
    /// Whether the events that change this entity are found by `events.entity_hash`. A balance's
    /// are not: every ledger movement states the balance after it, so a re-fold needs only the
    /// account's latest movement, and the high-volume ledger events stay out of the entity index.
    pub fn is_found_by_hash(&self) -> bool {
        !matches!(self, Self::Balance(_))
    }

    /// The key's compact form in `events.entity_hash`: the first 8 bytes of keccak256 of its text.
    pub fn hash64(&self) -> i64 {
        let digest = alloy::primitives::keccak256(self.to_string());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

/// A text that is not an entity key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an entity key: {0:?}")]
pub struct InvalidEntityKey(String);

impl FromStr for EntityKey {
    type Err = InvalidEntityKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidEntityKey(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let address = |v: &str| v.parse::<Address>().map_err(|_| bad());
        let hash = |v: &str| v.parse::<B256>().map_err(|_| bad());
        let pair = |v: &str| -> Result<(ServiceKind, Tier), InvalidEntityKey> {
            let (k, t) = v.split_once(':').ok_or_else(bad)?;
            let kind =
                ServiceKind::ALL.iter().copied().find(|x| x.as_str() == k).ok_or_else(bad)?;
            let tier = Tier::ALL.iter().copied().find(|x| x.as_str() == t).ok_or_else(bad)?;
            Ok((kind, tier))
        };
        Ok(match kind {
            "account" => Self::Account(address(rest)?),
            "balance" => Self::Balance(address(rest)?),
            "service" => Self::Service(rest.parse().map_err(|_| bad())?),
            "domain" => Self::Domain(hash(rest)?),
            "role" => {
                let mut parts = rest.splitn(3, ':');
                let (Some(c), Some(r), Some(a)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(bad());
                };
                Self::Role { contract: address(c)?, role: hash(r)?, account: address(a)? }
            }
            "token_rate" => Self::TokenRate(address(rest)?),
            "price" => {
                let (k, t) = pair(rest)?;
                Self::Price(k, t)
            }
            "tier_limit" => {
                let (k, t) = pair(rest)?;
                Self::TierLimit(k, t)
            }
            "setting" => {
                let (c, name) = rest.split_once(':').ok_or_else(bad)?;
                Self::Setting { contract: address(c)?, name: name.to_owned() }
            }
            _ => return Err(bad()),
        })
    }
}
