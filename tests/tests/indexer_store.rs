//! The events table against a real Postgres: known events are stored by their arguments and come
//! back as the exact log; an event the bindings do not know is stored raw and comes back as it
//! was; a balance re-folded after a rollback is its latest remaining movement's.

use alloy::{
    primitives::{Address, B256, Bytes, Log, LogData, U256, keccak256},
    sol_types::SolEvent,
};
use decentraspace_abi::{CreditLedger, PlatformContracts};
use decentraspace_indexer::{
    event::{EventPosition, IndexedEvent},
    projection::{EntityKey, EntityValue},
    store::{self, Checkpoint},
};
use decentraspace_tests::TestDb;
use sqlx::PgConnection;

const CHAIN: u64 = 31_337;

fn contracts() -> PlatformContracts {
    PlatformContracts {
        forwarder: Address::repeat_byte(0xf0),
        account_registry: Address::repeat_byte(0xa0),
        credit_ledger: Address::repeat_byte(0xc0),
        service_registry: Address::repeat_byte(0x50),
        domain_registry: Address::repeat_byte(0xd0),
        test_token: Address::ZERO,
    }
}

fn event(block: u64, log_index: u64, data: LogData) -> IndexedEvent {
    IndexedEvent::from_parts(
        &contracts(),
        EventPosition { block_number: block, log_index },
        B256::from(U256::from(block)),
        Some(1_700_000_000 + block),
        B256::repeat_byte(0x77),
        0,
        Log { address: contracts().credit_ledger, data },
    )
    .expect("a ledger log")
    .with_args()
}

fn deduction(account: Address, balance_after: u64, usage: u8) -> LogData {
    CreditLedger::CreditsDeducted {
        account,
        serviceId: U256::from(3),
        credits: U256::from(10),
        balanceAfter: U256::from(balance_after),
        usageRef: B256::repeat_byte(usage),
    }
    .encode_log_data()
}

fn checkpoint(block: u64) -> Checkpoint {
    Checkpoint {
        block_number: block,
        block_hash: B256::from(U256::from(block)),
        block_time: Some(1_700_000_000 + block),
    }
}

async fn balance(conn: &mut PgConnection, account: Address) -> anyhow::Result<Option<U256>> {
    let entities = store::indexed_entities(conn, CHAIN).await?;
    Ok(match entities.get(&EntityKey::Balance(account)) {
        Some(EntityValue::Balance(b)) => Some(*b),
        Some(other) => anyhow::bail!("a balance key holds {other:?}"),
        None => None,
    })
}

#[tokio::test]
async fn known_events_come_back_from_their_arguments_and_unknown_ones_as_stored()
-> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let mut conn = db.connect().await?;
    let account = Address::repeat_byte(0x11);
    // A signature the bindings do not know (a later contract version's event, say).
    let unknown = LogData::new_unchecked(
        vec![
            keccak256("SomethingNew(address,uint256)"),
            B256::left_padding_from(account.as_slice()),
        ],
        Bytes::from(U256::from(42).to_be_bytes::<32>().to_vec()),
    );
    let written = vec![event(10, 0, deduction(account, 90, 1)), event(10, 1, unknown.clone())];
    assert!(written[1].decoded.is_none(), "the test's event must be unknown to the bindings");
    store::write_batch(&mut conn, CHAIN, &written, &[], None, checkpoint(10)).await?;

    let rows: Vec<(i32, Option<String>, bool, bool, bool)> = sqlx::query_as(
        "select log_index, event_name, args is not null, topics is not null, data is not null
         from events where chain_id = $1 order by log_index",
    )
    .bind(CHAIN as i64)
    .fetch_all(&mut conn)
    .await?;
    assert_eq!(
        rows,
        [(0, Some("CreditsDeducted".to_owned()), true, false, false), (1, None, false, true, true)],
        "the known event keeps its arguments only, the unknown one its raw log"
    );

    let read = store::events::page(&mut conn, &contracts(), CHAIN, None, 10).await?;
    assert_eq!(read.len(), 2);
    for (back, original) in read.iter().zip(&written) {
        assert_eq!(back.position, original.position);
        assert_eq!(
            back.raw, original.raw,
            "log {} comes back exactly",
            original.position.log_index
        );
        assert_eq!(back.decoded, original.decoded);
        assert_eq!((back.block_hash, back.tx_hash), (original.block_hash, original.tx_hash));
    }
    assert_eq!(read[1].raw, unknown);
    Ok(())
}

#[tokio::test]
async fn a_rolled_back_balance_is_its_latest_remaining_movement() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let mut conn = db.connect().await?;
    let (a, b) = (Address::repeat_byte(0x21), Address::repeat_byte(0x22));
    // Many movements of `a`, so the one that counts is not simply the only one.
    let mut batch: Vec<IndexedEvent> =
        (0..50).map(|i| event(10, i, deduction(a, 1_000 - i * 10, i as u8))).collect();
    batch.push(event(10, 50, deduction(b, 700, 200)));
    store::write_batch(&mut conn, CHAIN, &batch, &[], None, checkpoint(10)).await?;
    let later = [event(11, 0, deduction(a, 400, 201)), event(12, 0, deduction(b, 300, 202))];
    store::write_batch(&mut conn, CHAIN, &later[..1], &[], None, checkpoint(11)).await?;
    store::write_batch(&mut conn, CHAIN, &later[1..], &[], None, checkpoint(12)).await?;
    assert_eq!(balance(&mut conn, a).await?, Some(U256::from(400)));
    assert_eq!(balance(&mut conn, b).await?, Some(U256::from(300)));

    let refolded = store::rollback_to(&mut conn, &contracts(), CHAIN, checkpoint(10)).await?;
    assert_eq!(refolded, 2, "both accounts' balances are folded again");
    assert_eq!(balance(&mut conn, a).await?, Some(U256::from(1_000 - 49 * 10)));
    assert_eq!(balance(&mut conn, b).await?, Some(U256::from(700)));

    store::rollback_to(&mut conn, &contracts(), CHAIN, checkpoint(9)).await?;
    assert_eq!(balance(&mut conn, a).await?, None, "no movement left, no balance row");
    assert_eq!(balance(&mut conn, b).await?, None);
    assert_eq!(store::events::count(&mut conn, CHAIN).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_known_event_logged_in_a_non_canonical_form_keeps_its_raw_log() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let mut conn = db.connect().await?;
    let account = Address::repeat_byte(0x31);
    let canonical = deduction(account, 90, 1);
    // The same event with dirty padding in the account's topic: it decodes to the same arguments,
    // which encode back to clean padding.
    let mut topics = canonical.topics().to_vec();
    topics[1].0[..12].fill(0xff);
    let dirty = LogData::new_unchecked(topics, canonical.data.clone());
    let written = [event(10, 0, dirty.clone())];
    assert!(written[0].decoded.is_some(), "the dirty log must still decode");
    store::write_batch(&mut conn, CHAIN, &written, &[], None, checkpoint(10)).await?;

    let raw_kept: bool = sqlx::query_scalar(
        "select topics is not null and data is not null and args is not null from events",
    )
    .fetch_one(&mut conn)
    .await?;
    assert!(raw_kept, "a log its arguments do not give back is stored raw too");
    let read = store::events::page(&mut conn, &contracts(), CHAIN, None, 10).await?;
    assert_eq!(read[0].raw, dirty, "the log comes back as the node gave it");
    assert_eq!(balance(&mut conn, account).await?, Some(U256::from(90)));
    Ok(())
}
