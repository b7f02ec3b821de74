//! The contracts' enums as Rust enums. JSON ABIs carry enums as `uint8`, so the bindings take and
//! return `u8`; these types give the values names, and refuse values the contracts never emit.

use std::fmt;

/// A `u8` that is not a variant of the enum it was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a valid {enum_name}")]
pub struct InvalidEnumValue {
    /// The enum's name.
    pub enum_name: &'static str,
    /// The value read.
    pub value: u8,
}

/// A name that is not a variant's [`as_str`](Tier::as_str) name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a valid {enum_name}")]
pub struct UnknownEnumName {
    /// The enum's name.
    pub enum_name: &'static str,
    /// The name read.
    pub name: String,
}

macro_rules! contract_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The variant's name in lower snake case, as stored and served.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                value as u8
            }
        }

        impl TryFrom<u8> for $name {
            type Error = InvalidEnumValue;

            fn try_from(value: u8) -> Result<Self, Self::Error> {
                match value {
                    $($value => Ok(Self::$variant),)+
                    _ => Err(InvalidEnumValue { enum_name: stringify!($name), value }),
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownEnumName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownEnumName { enum_name: stringify!($name), name: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

contract_enum! {
    /// `IAccountRegistry.Tier`.
    Tier {
        /// The free tier.
        Free = 0 => "free",
        /// The paid tier.
        Paid = 1 => "paid",
    }
}

contract_enum! {
    /// `IAccountRegistry.AccountStatus`.
    AccountStatus {
        /// Never registered.
        Unregistered = 0 => "unregistered",
        /// Registered and in good standing.
        Active = 1 => "active",
        /// Suspended by the platform.
        Suspended = 2 => "suspended",
    }
}

contract_enum! {
    /// `IServiceRegistry.ServiceKind`.
    ServiceKind {
        /// A static site.
        StaticHosting = 0 => "static_hosting",
        /// A dynamic site.
        DynamicHosting = 1 => "dynamic_hosting",
        /// File storage.
        Storage = 2 => "storage",
        /// A domain.
        Domain = 3 => "domain",
        /// A database.
        Database = 4 => "database",
    }
}

contract_enum! {
    /// `IServiceRegistry.ServiceState`.
    ServiceState {
        /// No such service.
        None = 0 => "none",
        /// Running and charged.
        Active = 1 => "active",
        /// Paused by its owner: not served, not charged.
        Paused = 2 => "paused",
        /// Suspended by the platform (e.g. out of credit).
        Suspended = 3 => "suspended",
        /// Cancelled for good.
        Cancelled = 4 => "cancelled",
    }
}

contract_enum! {
    /// `IDomainRegistry.OwnershipMethod`.
    OwnershipMethod {
        /// Not held.
        None = 0 => "none",
        /// Bought through the platform.
        Purchase = 1 => "purchase",
        /// Proven by a DNS TXT record.
        Dns = 2 => "dns",
        /// Proven by ENS registry or NameWrapper ownership.
        Ens = 3 => "ens",
        /// Proven by a Handshake TXT record.
        Handshake = 4 => "handshake",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_variant_and_refuses_others() {
        for &kind in ServiceKind::ALL {
            assert_eq!(ServiceKind::try_from(u8::from(kind)), Ok(kind));
        }
        assert_eq!(ServiceState::try_from(3), Ok(ServiceState::Suspended));
        assert_eq!(Tier::Paid.to_string(), "paid");
        assert_eq!("dynamic_hosting".parse(), Ok(ServiceKind::DynamicHosting));
        assert!("Paid".parse::<Tier>().is_err());
        let err = OwnershipMethod::try_from(5).expect_err("out of range");
        assert_eq!(err.to_string(), "5 is not a valid OwnershipMethod");
    }
}
