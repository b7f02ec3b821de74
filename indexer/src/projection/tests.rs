use alloy::primitives::{Address, B256, U256, address, b256};
use decentraspace_abi::{
    CreditLedger, DomainRegistry, OwnershipMethod, PlatformEvent, ServiceKind, ServiceRegistry,
    ServiceState, Tier,
};

use super::*;

const LEDGER: Address = address!("0x00000000000000000000000000000000000000c1");
const SERVICES: Address = address!("0x00000000000000000000000000000000000000c2");
const DOMAINS: Address = address!("0x00000000000000000000000000000000000000c3");
const ALICE: Address = address!("0x00000000000000000000000000000000000000a1");
const BOB: Address = address!("0x00000000000000000000000000000000000000b0");
const NODE: B256 = b256!("0x00000000000000000000000000000000000000000000000000000000000000d1");

fn fold(events: &[(Address, PlatformEvent)]) -> ProjectionState {
    let mut state = ProjectionState::new();
    for (contract, event) in events {
        apply(&mut state, *contract, event, 1_000).expect("folds");
    }
    state
}

fn service_event(e: ServiceRegistry::ServiceRegistryEvents) -> PlatformEvent {
    PlatformEvent::ServiceRegistry(e)
}

#[test]
fn balances_follow_balance_after() {
    use CreditLedger::CreditLedgerEvents as L;
    let state = fold(&[
        (
            LEDGER,
            PlatformEvent::CreditLedger(L::FiatCredited(CreditLedger::FiatCredited {
                account: ALICE,
                paymentRef: B256::repeat_byte(1),
                credits: U256::from(500),
                balanceAfter: U256::from(500),
            })),
        ),
        (
            LEDGER,
            PlatformEvent::CreditLedger(L::CreditsDeducted(CreditLedger::CreditsDeducted {
                account: ALICE,
                serviceId: U256::from(1),
                credits: U256::from(200),
                balanceAfter: U256::from(300),
                usageRef: B256::repeat_byte(2),
            })),
        ),
    ]);
    assert_eq!(state[&EntityKey::Balance(ALICE)], Some(EntityValue::Balance(U256::from(300))));
}

#[test]
fn a_service_goes_through_its_states() {
    use ServiceRegistry::ServiceRegistryEvents as S;
    let id = U256::from(7);
    let state = fold(&[
        (
            SERVICES,
            service_event(S::ServiceCreated(ServiceRegistry::ServiceCreated {
                serviceId: id,
                owner: ALICE,
                kind: ServiceKind::Storage.into(),
                r#ref: B256::repeat_byte(9),
                expiresAt: 5_000,
            })),
        ),
        (
            SERVICES,
            service_event(S::ServicePaused(ServiceRegistry::ServicePaused {
                serviceId: id,
                by: ALICE,
            })),
        ),
        (
            SERVICES,
            service_event(S::ServiceExpirySet(ServiceRegistry::ServiceExpirySet {
                serviceId: id,
                expiresAt: 0,
            })),
        ),
    ]);
    let Some(EntityValue::Service(row)) = &state[&EntityKey::Service(7)] else {
        panic!("no service")
    };
    assert_eq!(
        (row.owner, row.kind, row.state),
        (ALICE, ServiceKind::Storage, ServiceState::Paused)
    );
    assert_eq!((row.created_at, row.expires_at), (1_000, 0));
}

#[test]
fn a_change_to_an_unknown_service_is_an_error_not_a_row() {
    use ServiceRegistry::ServiceRegistryEvents as S;
    let mut state = ProjectionState::new();
    let event = service_event(S::ServiceResumed(ServiceRegistry::ServiceResumed {
        serviceId: U256::from(3),
        by: ALICE,
    }));
    let err = apply(&mut state, SERVICES, &event, 0).expect_err("unknown service");
    assert_eq!(err, FoldError::Missing("ServiceResumed", "service:3".into()));
    assert_eq!(state[&EntityKey::Service(3)], None);
}

#[test]
fn a_domain_is_bought_linked_transferred_and_released() {
    use DomainRegistry::DomainRegistryEvents as D;
    let domain = |e| (DOMAINS, PlatformEvent::DomainRegistry(e));
    let mut events = vec![
        domain(D::DomainRegistered(DomainRegistry::DomainRegistered {
            node: NODE,
            owner: ALICE,
            name: "alice.dspace".into(),
            expiresAt: 9_999,
        })),
        domain(D::DomainLinked(DomainRegistry::DomainLinked {
            node: NODE,
            serviceId: U256::from(4),
        })),
        domain(D::DomainUnlinked(DomainRegistry::DomainUnlinked {
            node: NODE,
            serviceId: U256::from(4),
        })),
        domain(D::DomainTransferred(DomainRegistry::DomainTransferred {
            node: NODE,
            from: ALICE,
            to: BOB,
        })),
    ];
    let state = fold(&events);
    assert_eq!(
        state[&EntityKey::Domain(NODE)],
        Some(EntityValue::Domain(DomainRow {
            name: "alice.dspace".into(),
            owner: BOB,
            method: OwnershipMethod::Purchase,
            expires_at: 9_999,
            service_id: 0,
        }))
    );
    events
        .push(domain(D::DomainReleased(DomainRegistry::DomainReleased { node: NODE, owner: BOB })));
    assert_eq!(fold(&events)[&EntityKey::Domain(NODE)], None, "a released domain has no row");
}

#[test]
fn entity_keys_round_trip_through_text() {
    let keys = [
        EntityKey::Account(ALICE),
        EntityKey::Balance(BOB),
        EntityKey::Service(42),
        EntityKey::Domain(NODE),
        EntityKey::Role { contract: LEDGER, role: B256::repeat_byte(0xab), account: ALICE },
        EntityKey::TokenRate(BOB),
        EntityKey::Price(ServiceKind::DynamicHosting, Tier::Paid),
        EntityKey::TierLimit(ServiceKind::Database, Tier::Free),
        EntityKey::Setting { contract: SERVICES, name: "role_admin:0x00ff".into() },
    ];
    for key in keys {
        assert_eq!(key.to_string().parse::<EntityKey>(), Ok(key.clone()), "{key}");
    }
    assert!("nonsense".parse::<EntityKey>().is_err());
    assert!("service:x".parse::<EntityKey>().is_err());
}
