//! A platform log as the indexer stores it.

use alloy::primitives::{Address, B256, Log as PrimitiveLog, LogData};
use decentraspace_abi::{
    CreditLedger, DecodedLog, PlatformContract, PlatformContracts, ServiceRegistry,
};
use tracing::warn;

use crate::{
    projection::{EntityKey, account_of, entity_of},
    rpc::RpcLog,
};

/// Where an event sits in the chain: its order is the fold's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPosition {
    /// The block number.
    pub block_number: u64,
    /// The log index within the block.
    pub log_index: u64,
}

/// One log of a platform contract, decoded where the bindings know it.
#[derive(Debug, Clone)]
pub struct IndexedEvent {
    /// Where it sits.
    pub position: EventPosition,
    /// The hash of its block.
    pub block_hash: B256,
    /// Its block's timestamp (unix seconds), when the node gave it.
    pub block_time: Option<u64>,
    /// The transaction that emitted it.
    pub tx_hash: B256,
    /// The transaction's index in the block.
    pub tx_index: u64,
    /// The emitting contract.
    pub contract: PlatformContract,
    /// Its address.
    pub address: Address,
    /// The decoded event; `None` when the bindings do not know it (kept raw, never dropped).
    pub decoded: Option<DecodedLog>,
    /// The raw topics and data.
    pub raw: LogData,
    /// What the writer needs besides the log, worked out once where the log is decoded (in the
    /// fetch tasks, off the writer's path).
    derived: Derived,
}

/// Values derived from a decoded event.
#[derive(Debug, Clone, Default)]
struct Derived {
    entity: Option<EntityKey>,
    entity_hash: Option<i64>,
    account: Option<Address>,
    args: Option<String>,
    /// Whether the log is not the one its arguments encode back to (worked out with the args).
    non_canonical: Option<bool>,
}

/// A log the indexer cannot store: not from a platform contract, or not mined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The log comes from another address (the node answered more than was asked).
    #[error("log from {0}, which is not a platform contract")]
    ForeignContract(Address),
    /// The log lacks its block or transaction (a pending log).
    #[error("log without block or transaction data")]
    Pending,
}

impl IndexedEvent {
    /// Takes a log from `eth_getLogs`.
    pub fn from_rpc(contracts: &PlatformContracts, log: RpcLog) -> Result<Self, EventError> {
        let (Some(block_number), Some(log_index), Some(block_hash), Some(tx_hash), Some(tx_index)) = (
            log.block_number,
            log.log_index,
            log.block_hash,
            log.transaction_hash,
            log.transaction_index,
        ) else {
            return Err(EventError::Pending);
        };
        Self::from_parts(
            contracts,
            EventPosition { block_number, log_index },
            block_hash,
            log.block_timestamp,
            tx_hash,
            tx_index,
            PrimitiveLog {
                address: log.address,
                data: LogData::new_unchecked(log.topics, log.data),
            },
        )
    }

    /// Builds an event from its stored parts (the events table) or a log.
    pub fn from_parts(
        contracts: &PlatformContracts,
        position: EventPosition,
        block_hash: B256,
        block_time: Option<u64>,
        tx_hash: B256,
        tx_index: u64,
        log: PrimitiveLog,
    ) -> Result<Self, EventError> {
        let contract = PlatformContract::at(contracts, log.address)
            .ok_or(EventError::ForeignContract(log.address))?;
        let decoded = match DecodedLog::decode(contracts, &log) {
            Ok(decoded) => Some(decoded),
            Err(err) => {
                warn!(
                    target: "indexer::decode",
                    block = position.block_number,
                    log_index = position.log_index,
                    %err,
                    "unknown event stored raw"
                );
                None
            }
        };
        let entity = decoded.as_ref().and_then(|d| entity_of(log.address, &d.event));
        let derived = Derived {
            entity_hash: entity.as_ref().filter(|k| k.is_found_by_hash()).map(EntityKey::hash64),
            entity,
            account: decoded.as_ref().and_then(|d| account_of(&d.event)),
            args: None,
            non_canonical: None,
        };
        Ok(Self {
            position,
            block_hash,
            block_time,
            tx_hash,
            tx_index,
            contract,
            address: log.address,
            decoded,
            raw: log.data,
            derived,
        })
    }

    /// Works out the decoded arguments' JSON now (fetched events are stored; stored ones need not).
    pub fn with_args(mut self) -> Self {
        self.derived.args = self.decoded.as_ref().map(|d| d.event.args_json_string());
        self.derived.non_canonical = Some(self.non_canonical());
        self
    }

    /// Whether the log decodes but is not what its arguments encode back to (dirty padding,
    /// trailing bytes, invalid UTF-8 in a string): its raw form must then be kept.
    fn non_canonical(&self) -> bool {
        self.derived.non_canonical.unwrap_or_else(|| {
            self.decoded.as_ref().is_some_and(|d| d.event.log_data() != self.raw)
        })
    }

    /// The decoded arguments as JSON text, when the bindings know the event (borrowed when
    /// [`with_args`](Self::with_args) worked them out already, as for every fetched event).
    pub fn args_json(&self) -> Option<std::borrow::Cow<'_, str>> {
        match &self.derived.args {
            Some(args) => Some(std::borrow::Cow::Borrowed(args)),
            None => self.decoded.as_ref().map(|d| d.event.args_json_string().into()),
        }
    }

    /// The compact key of [`entity`](Self::entity) (see `events.entity_hash`), for the entities
    /// found by it ([`EntityKey::is_found_by_hash`]).
    pub fn entity_hash(&self) -> Option<i64> {
        self.derived.entity_hash
    }

    /// The event's name, when known.
    pub fn name(&self) -> Option<&'static str> {
        self.decoded.as_ref().map(|d| d.name)
    }

    /// The projection entity the event changes.
    pub fn entity(&self) -> Option<EntityKey> {
        self.derived.entity.clone()
    }

    /// The account the event is about.
    pub fn account(&self) -> Option<Address> {
        self.derived.account
    }

    /// The raw topics and data to store: only for an event the bindings do not know, or one whose
    /// log is not exactly what its arguments encode (a known one is stored by its arguments, from
    /// which [`DecodedLog::from_args_json`] gives the log back).
    pub fn raw_to_store(&self) -> Option<&LogData> {
        (self.decoded.is_none() || self.non_canonical()).then_some(&self.raw)
    }

    /// The ledger columns this event fills (read through the `credit_entries` view), if it is a
    /// ledger movement.
    pub fn credit_entry(&self) -> Option<CreditEntry> {
        use CreditLedger::CreditLedgerEvents as L;
        let decentraspace_abi::PlatformEvent::CreditLedger(event) = &self.decoded.as_ref()?.event
        else {
            return None;
        };
        Some(match event {
            L::CreditsRecharged(e) => CreditEntry {
                account: e.account,
                kind: "recharge",
                service_id: None,
                credits: e.credits.to_string(),
                balance_after: Some(e.balanceAfter.to_string()),
                token: Some(e.token),
                token_amount: Some(e.amount.to_string()),
                reference: None,
            },
            L::FiatCredited(e) => CreditEntry {
                account: e.account,
                kind: "fiat",
                service_id: None,
                credits: e.credits.to_string(),
                balance_after: Some(e.balanceAfter.to_string()),
                token: None,
                token_amount: None,
                reference: Some(e.paymentRef),
            },
            L::CreditsDeducted(e) => CreditEntry {
                account: e.account,
                kind: "deduction",
                service_id: service_id(e.serviceId),
                credits: e.credits.to_string(),
                balance_after: Some(e.balanceAfter.to_string()),
                token: None,
                token_amount: None,
                reference: Some(e.usageRef),
            },
            L::DeductionSkipped(e) => CreditEntry {
                account: e.account,
                kind: "skipped",
                service_id: service_id(e.serviceId),
                credits: "0".to_owned(),
                balance_after: None,
                token: None,
                token_amount: None,
                reference: Some(e.usageRef),
            },
            _ => return None,
        })
    }

    /// The row this event adds to `service_state_changes`, if it changes a service's state.
    pub fn service_state_change(&self) -> Option<ServiceStateChange> {
        use ServiceRegistry::ServiceRegistryEvents as S;
        let decentraspace_abi::PlatformEvent::ServiceRegistry(event) =
            &self.decoded.as_ref()?.event
        else {
            return None;
        };
        let (id, state, actor) = match event {
            S::ServiceCreated(e) => (e.serviceId, "active", Some(e.owner)),
            S::ServicePaused(e) => (e.serviceId, "paused", Some(e.by)),
            S::ServiceResumed(e) => (e.serviceId, "active", Some(e.by)),
            S::ServiceSuspended(e) => (e.serviceId, "suspended", Some(e.by)),
            S::ServiceCancelled(e) => (e.serviceId, "cancelled", Some(e.by)),
            _ => return None,
        };
        Some(ServiceStateChange { service_id: service_id(id)?, state, actor })
    }
}

fn service_id(id: alloy::primitives::U256) -> Option<i64> {
    (!id.is_zero()).then(|| i64::try_from(id).ok()).flatten()
}

/// A ledger movement's typed values (a row of the `credit_entries` view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditEntry {
    /// The account.
    pub account: Address,
    /// `recharge`, `fiat`, `deduction` or `skipped`.
    pub kind: &'static str,
    /// The service charged, if any.
    pub service_id: Option<i64>,
    /// The credits moved, in decimal.
    pub credits: String,
    /// The balance after, in decimal.
    pub balance_after: Option<String>,
    /// The token paid, for a recharge.
    pub token: Option<Address>,
    /// The token amount, in decimal.
    pub token_amount: Option<String>,
    /// The payment or usage reference.
    pub reference: Option<B256>,
}

/// A row of `service_state_changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStateChange {
    /// The service.
    pub service_id: i64,
    /// The new state.
    pub state: &'static str,
    /// Who changed it.
    pub actor: Option<Address>,
}
