//! Decoding of platform contract logs into typed events.

use std::{collections::HashMap, fmt, sync::LazyLock};

use alloy::{
    json_abi::JsonAbi,
    primitives::{Address, B256, IntoLogData, Log, LogData},
    sol_types::SolEventInterface,
};

use crate::{AccountRegistry, CreditLedger, DomainRegistry, PlatformContracts, ServiceRegistry};

/// The platform contracts whose events carry state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlatformContract {
    /// Accounts, tiers and statuses.
    AccountRegistry,
    /// Credit balances.
    CreditLedger,
    /// Service subscriptions.
    ServiceRegistry,
    /// Domain ownership and links.
    DomainRegistry,
}

impl PlatformContract {
    /// Every platform contract, in a fixed order.
    pub const ALL: [Self; 4] =
        [Self::AccountRegistry, Self::CreditLedger, Self::ServiceRegistry, Self::DomainRegistry];

    /// The contract's name, as in Solidity.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AccountRegistry => "AccountRegistry",
            Self::CreditLedger => "CreditLedger",
            Self::ServiceRegistry => "ServiceRegistry",
            Self::DomainRegistry => "DomainRegistry",
        }
    }

    /// The contract deployed at `address`, if any.
    pub fn at(contracts: &PlatformContracts, address: Address) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.address(contracts) == address)
    }

    /// The contract's address in a deployment.
    pub const fn address(self, contracts: &PlatformContracts) -> Address {
        match self {
            Self::AccountRegistry => contracts.account_registry,
            Self::CreditLedger => contracts.credit_ledger,
            Self::ServiceRegistry => contracts.service_registry,
            Self::DomainRegistry => contracts.domain_registry,
        }
    }

    fn abi(self) -> JsonAbi {
        match self {
            Self::AccountRegistry => AccountRegistry::abi::contract(),
            Self::CreditLedger => CreditLedger::abi::contract(),
            Self::ServiceRegistry => ServiceRegistry::abi::contract(),
            Self::DomainRegistry => DomainRegistry::abi::contract(),
        }
    }
}

impl fmt::Display for PlatformContract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded event of a platform contract, typed by the contract that emitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformEvent {
    /// An `AccountRegistry` event (including OpenZeppelin's role and upgrade events).
    AccountRegistry(AccountRegistry::AccountRegistryEvents),
    /// A `CreditLedger` event.
    CreditLedger(CreditLedger::CreditLedgerEvents),
    /// A `ServiceRegistry` event.
    ServiceRegistry(ServiceRegistry::ServiceRegistryEvents),
    /// A `DomainRegistry` event.
    DomainRegistry(DomainRegistry::DomainRegistryEvents),
}

/// A platform log, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedLog {
    /// The contract that emitted it.
    pub contract: PlatformContract,
    /// The event's name, as in Solidity (e.g. `CreditsDeducted`).
    pub name: &'static str,
    /// The decoded event.
    pub event: PlatformEvent,
}

/// Why a log could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The log does not come from a platform contract.
    #[error("log from {0}, which is not a platform contract")]
    UnknownContract(Address),
    /// The contract's ABI has no event with this signature (e.g. from a newer implementation).
    #[error("{contract} emitted an event the bindings do not know (topic0 {topic0:?})")]
    UnknownEvent {
        /// The emitting contract.
        contract: PlatformContract,
        /// The first topic, if any.
        topic0: Option<B256>,
    },
    /// The log matches a known signature but its topics or data do not decode.
    #[error("{contract} log does not decode: {source}")]
    Malformed {
        /// The emitting contract.
        contract: PlatformContract,
        /// The cause.
        source: alloy::sol_types::Error,
    },
}

impl DecodeError {
    /// Whether the log is a platform log the bindings cannot read (to be kept raw, never dropped),
    /// as opposed to a log from elsewhere.
    pub const fn is_unknown_platform_event(&self) -> bool {
        !matches!(self, Self::UnknownContract(_))
    }
}

/// The names of every event of every platform contract, by signature hash (topic0).
static EVENT_NAMES: LazyLock<HashMap<(PlatformContract, B256), String>> = LazyLock::new(|| {
    PlatformContract::ALL
        .into_iter()
        .flat_map(|contract| {
            contract
                .abi()
                .events()
                .map(move |e| ((contract, e.selector()), e.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
});

/// The name of the event `contract` emits under signature hash `topic0`.
pub fn event_name(contract: PlatformContract, topic0: B256) -> Option<&'static str> {
    EVENT_NAMES.get(&(contract, topic0)).map(String::as_str)
}

impl PlatformEvent {
    /// The event's fields as a JSON object (field names as in Solidity; integers above 64 bits and
    /// byte strings as `0x` hex strings).
    pub fn args_json(&self) -> serde_json::Value {
        let tagged = match self {
            Self::AccountRegistry(e) => serde_json::to_value(e),
            Self::CreditLedger(e) => serde_json::to_value(e),
            Self::ServiceRegistry(e) => serde_json::to_value(e),
            Self::DomainRegistry(e) => serde_json::to_value(e),
        };
        // Serialised as `{"EventName": {fields}}`: keep the fields.
        match tagged {
            Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
                map.into_iter().next().map(|(_, fields)| fields).unwrap_or_default()
            }
            Ok(other) => other,
            Err(_) => serde_json::Value::Null,
        }
    }
}

impl PlatformEvent {
    /// [`args_json`](Self::args_json) as text, serialised straight to a string (the indexer's hot
    /// path: no intermediate `Value`).
    pub fn args_json_string(&self) -> String {
        let tagged = match self {
            Self::AccountRegistry(e) => serde_json::to_string(e),
            Self::CreditLedger(e) => serde_json::to_string(e),
            Self::ServiceRegistry(e) => serde_json::to_string(e),
            Self::DomainRegistry(e) => serde_json::to_string(e),
        }
        .unwrap_or_default();
        // `{"EventName":{fields}}` (or `{"EventName":null}` for an event without fields).
        match (tagged.find(':'), tagged.len()) {
            (Some(colon), len) if len > colon + 1 && tagged.ends_with('}') => {
                tagged[colon + 1..len - 1].to_owned()
            }
            _ => "null".to_owned(),
        }
    }
}

impl DecodedLog {
    /// Decodes a log of a platform contract.
    pub fn decode(contracts: &PlatformContracts, log: &Log) -> Result<Self, DecodeError> {
        let contract = PlatformContract::at(contracts, log.address)
            .ok_or(DecodeError::UnknownContract(log.address))?;
        let topic0 = log.topics().first().copied();
        let name = topic0
            .and_then(|t| event_name(contract, t))
            .ok_or(DecodeError::UnknownEvent { contract, topic0 })?;
        let malformed = |source| DecodeError::Malformed { contract, source };
        let event = match contract {
            PlatformContract::AccountRegistry => PlatformEvent::AccountRegistry(
                AccountRegistry::AccountRegistryEvents::decode_log(log).map_err(malformed)?.data,
            ),
            PlatformContract::CreditLedger => PlatformEvent::CreditLedger(
                CreditLedger::CreditLedgerEvents::decode_log(log).map_err(malformed)?.data,
            ),
            PlatformContract::ServiceRegistry => PlatformEvent::ServiceRegistry(
                ServiceRegistry::ServiceRegistryEvents::decode_log(log).map_err(malformed)?.data,
            ),
            PlatformContract::DomainRegistry => PlatformEvent::DomainRegistry(
                DomainRegistry::DomainRegistryEvents::decode_log(log).map_err(malformed)?.data,
            ),
        };
        Ok(Self { contract, name, event })
    }
}

impl PlatformEvent {
    /// The event's topics and data, as the contract emitted them.
    pub fn log_data(&self) -> LogData {
        match self {
            Self::AccountRegistry(e) => e.to_log_data(),
            Self::CreditLedger(e) => e.to_log_data(),
            Self::ServiceRegistry(e) => e.to_log_data(),
            Self::DomainRegistry(e) => e.to_log_data(),
        }
    }
}

/// Why stored arguments do not make an event of the bindings.
#[derive(Debug, thiserror::Error)]
#[error("{contract} has no event {name} with these arguments: {reason}")]
pub struct ArgsJsonError {
    /// The contract.
    pub contract: PlatformContract,
    /// The event's name.
    pub name: String,
    /// What did not fit.
    pub reason: String,
}

impl DecodedLog {
    /// Rebuilds a decoded event from its name and its arguments as
    /// [`PlatformEvent::args_json_string`] wrote them: the inverse of that function, so a store
    /// can keep the arguments alone and still give back the exact log
    /// ([`PlatformEvent::log_data`]).
    pub fn from_args_json(
        contract: PlatformContract,
        name: &str,
        args: &str,
    ) -> Result<Self, ArgsJsonError> {
        let fail = |reason: String| ArgsJsonError { contract, name: name.to_owned(), reason };
        // The bindings' events serialise as `{"EventName": {fields}}`.
        let tagged = format!("{{{}:{args}}}", serde_json::Value::from(name));
        let parsed = match contract {
            PlatformContract::AccountRegistry => {
                serde_json::from_str(&tagged).map(PlatformEvent::AccountRegistry)
            }
            PlatformContract::CreditLedger => {
                serde_json::from_str(&tagged).map(PlatformEvent::CreditLedger)
            }
            PlatformContract::ServiceRegistry => {
                serde_json::from_str(&tagged).map(PlatformEvent::ServiceRegistry)
            }
            PlatformContract::DomainRegistry => {
                serde_json::from_str(&tagged).map(PlatformEvent::DomainRegistry)
            }
        };
        let event = parsed.map_err(|e| fail(e.to_string()))?;
        // The name as the bindings know it (and a check that the variant is the one named).
        let topic0 = event.log_data().topics().first().copied();
        let known = topic0
            .and_then(|t| event_name(contract, t))
            .filter(|known| *known == name)
            .ok_or_else(|| fail("the arguments name another event".into()))?;
        Ok(Self { contract, name: known, event })
    }
}

#[cfg(test)]
mod tests {
    use alloy::{
        primitives::{U256, address, b256},
        sol_types::SolEvent,
    };

    use super::*;

    fn contracts() -> PlatformContracts {
        PlatformContracts {
            forwarder: address!("0x0000000000000000000000000000000000000001"),
            account_registry: address!("0x0000000000000000000000000000000000000002"),
            credit_ledger: address!("0x0000000000000000000000000000000000000003"),
            service_registry: address!("0x0000000000000000000000000000000000000004"),
            domain_registry: address!("0x0000000000000000000000000000000000000005"),
            test_token: Address::ZERO,
        }
    }

    #[test]
    fn decodes_a_ledger_event_by_signature() {
        let c = contracts();
        let event = CreditLedger::CreditsDeducted {
            account: address!("0x00000000000000000000000000000000000000aa"),
            serviceId: U256::from(7),
            credits: U256::from(1_000),
            balanceAfter: U256::from(5),
            usageRef: b256!("0x1111111111111111111111111111111111111111111111111111111111111111"),
        };
        let log = Log { address: c.credit_ledger, data: event.encode_log_data() };
        let decoded = DecodedLog::decode(&c, &log).expect("decodes");
        assert_eq!(decoded.contract, PlatformContract::CreditLedger);
        assert_eq!(decoded.name, "CreditsDeducted");
        assert_eq!(
            decoded.event.args_json(),
            serde_json::json!({
                "account": "0x00000000000000000000000000000000000000aa",
                "serviceId": "0x7",
                "credits": "0x3e8",
                "balanceAfter": "0x5",
                "usageRef": "0x1111111111111111111111111111111111111111111111111111111111111111",
            })
        );
        let text: serde_json::Value =
            serde_json::from_str(&decoded.event.args_json_string()).expect("valid JSON");
        assert_eq!(text, decoded.event.args_json());
        assert_eq!(
            decoded.event,
            PlatformEvent::CreditLedger(CreditLedger::CreditLedgerEvents::CreditsDeducted(event))
        );
    }

    #[test]
    fn refuses_logs_of_other_contracts_and_unknown_events() {
        let c = contracts();
        let event = CreditLedger::CreditDepleted { account: Address::ZERO };
        let foreign = Log { address: c.forwarder, data: event.encode_log_data() };
        assert!(matches!(DecodedLog::decode(&c, &foreign), Err(DecodeError::UnknownContract(_))));

        // The ledger's event hash means nothing to the service registry.
        let misplaced = Log { address: c.service_registry, data: event.encode_log_data() };
        let err = DecodedLog::decode(&c, &misplaced).expect_err("unknown event");
        assert!(err.is_unknown_platform_event());
        assert!(matches!(
            err,
            DecodeError::UnknownEvent { contract: PlatformContract::ServiceRegistry, .. }
        ));
    }

    #[test]
    fn knows_every_event_name_of_every_contract() {
        for (contract, expected) in [
            (PlatformContract::AccountRegistry, "AccountRegistered"),
            (PlatformContract::CreditLedger, "FiatCredited"),
            (PlatformContract::ServiceRegistry, "ServicePaused"),
            (PlatformContract::DomainRegistry, "DomainLinked"),
        ] {
            let abi = contract.abi();
            let event = &abi.events[expected][0];
            assert_eq!(event_name(contract, event.selector()), Some(expected));
            // OpenZeppelin's events are part of every registry's ABI.
            assert!(abi.events.contains_key("RoleGranted"), "{contract} lacks RoleGranted");
            assert!(abi.events.contains_key("Upgraded"), "{contract} lacks Upgraded");
        }
    }

    /// A value of `ty` made from `seed` (enums are `uint8`s: the seed stays a valid variant).
    fn sample(ty: &alloy::dyn_abi::DynSolType, seed: u8) -> alloy::dyn_abi::DynSolValue {
        use alloy::dyn_abi::{DynSolType as T, DynSolValue as V};
        match ty {
            T::Address => V::Address(Address::repeat_byte(seed)),
            T::Bool => V::Bool(seed % 2 == 1),
            T::Uint(bits) => V::Uint(U256::from(seed), *bits),
            T::Int(bits) => V::Int(alloy::primitives::I256::try_from(seed).unwrap(), *bits),
            T::FixedBytes(n) => V::FixedBytes(B256::repeat_byte(seed), *n),
            T::Bytes => V::Bytes(vec![seed; 40]),
            T::String => V::String(format!("name-{seed}.eth")),
            T::Array(inner) => V::Array(vec![sample(inner, seed), sample(inner, seed + 1)]),
            T::FixedArray(inner, n) => {
                V::FixedArray((0..*n).map(|_| sample(inner, seed)).collect())
            }
            T::Tuple(types) => {
                V::Tuple(types.iter().enumerate().map(|(i, t)| sample(t, seed + i as u8)).collect())
            }
            other => panic!("no sample for {other}"),
        }
    }

    #[test]
    fn every_event_comes_back_exactly_from_its_json_arguments() {
        use alloy::dyn_abi::{DynSolType, DynSolValue};
        let c = contracts();
        let mut checked = 0;
        for contract in PlatformContract::ALL {
            for event in contract.abi().events() {
                let mut topics = vec![event.selector()];
                let mut data = Vec::new();
                for (i, input) in event.inputs.iter().enumerate() {
                    let ty: DynSolType = input.selector_type().parse().unwrap();
                    let value = sample(&ty, 1 + i as u8);
                    if !input.indexed {
                        data.push(value);
                    } else if let Some(word) = value.as_word() {
                        topics.push(word);
                    } else {
                        // An indexed dynamic value is logged as its hash.
                        topics.push(alloy::primitives::keccak256(value.abi_encode_packed()));
                    }
                }
                let data = DynSolValue::Tuple(data).abi_encode_params();
                let log = Log::new(contract.address(&c), topics, data.into()).unwrap();

                let decoded = DecodedLog::decode(&c, &log).unwrap();
                let args = decoded.event.args_json_string();
                let rebuilt = DecodedLog::from_args_json(contract, &event.name, &args)
                    .unwrap_or_else(|e| panic!("{}: {e}", event.name));
                assert_eq!(rebuilt, decoded, "{} from {args}", event.name);
                assert_eq!(rebuilt.event.log_data(), log.data, "{} from {args}", event.name);
                checked += 1;
            }
        }
        assert!(checked >= 40, "only {checked} events checked");
    }

    #[test]
    fn arguments_of_another_event_or_malformed_ones_are_refused() {
        let deducted = PlatformEvent::CreditLedger(
            CreditLedger::CreditLedgerEvents::CreditsDeducted(CreditLedger::CreditsDeducted {
                account: Address::repeat_byte(1),
                serviceId: U256::from(7),
                credits: U256::from(3),
                balanceAfter: U256::from(4),
                usageRef: B256::repeat_byte(9),
            }),
        );
        let args = deducted.args_json_string();
        let ledger = PlatformContract::CreditLedger;
        assert!(DecodedLog::from_args_json(ledger, "CreditsDeducted", &args).is_ok());
        assert!(DecodedLog::from_args_json(ledger, "FiatCredited", &args).is_err());
        assert!(
            DecodedLog::from_args_json(PlatformContract::ServiceRegistry, "CreditsDeducted", &args)
                .is_err()
        );
        assert!(DecodedLog::from_args_json(ledger, "CreditsDeducted", "{\"account\":1}").is_err());
        assert!(DecodedLog::from_args_json(ledger, "CreditsDeducted", "not json").is_err());
    }
}
