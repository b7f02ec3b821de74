//! The chain outbox end to end (real anvil, Postgres, API binaries killed with SIGKILL): two
//! replicas share the operator key without a nonce clash, also when its sender dies mid-stream;
//! a sender killed between signing and broadcasting, between broadcasting and recording, or after
//! mining before the receipt is stored sends each transaction once; a nonce taken by a
//! transaction the platform did not sign is given to the waiting row again; a relayed forward
//! request recorded by a replica that dies is sent once; and a pool of relayer keys shares the
//! relayed load, each account on one key; a transaction the node dropped from its pool is sent
//! again at its nonce.

use std::time::Duration;

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, U256},
    providers::Provider,
    rpc::types::{Filter, TransactionRequest},
    signers::local::PrivateKeySigner,
    sol_types::{SolCall, SolEvent},
};
use decentraspace_abi::AccountRegistry;
use decentraspace_db::locks::Lock;
use decentraspace_tests::{
    ApiProcess, Hold, HoldingRpc, Role, TestApi, TestChain, TestDb, eventually, forward, role_key,
};

/// An outbox row as the tests read it.
#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    state: String,
    nonce: Option<i64>,
    tx_hash: Option<Vec<u8>>,
    requeued: i32,
    sends: i64,
    first_send: Option<Vec<u8>>,
}

async fn registration_row(db: &TestDb, account: Address) -> anyhow::Result<Option<OutboxRow>> {
    let mut conn = db.connect().await?;
    Ok(sqlx::query_as(
        "select state, nonce, tx_hash, requeued,
                (select count(*) from chain_outbox_sends s where s.outbox_id = o.id) as sends,
                (select s.tx_hash from chain_outbox_sends s where s.outbox_id = o.id
                 order by s.id limit 1) as first_send
         from chain_outbox o where purpose = 'operator' and reference = $1",
    )
    .bind(format!("register:{account}"))
    .fetch_optional(&mut conn)
    .await?)
}

/// Waits until `account`'s registration row is mined (and, with no confirmations asked for,
/// confirmed at once); the row.
async fn mined_registration(db: &TestDb, account: Address) -> anyhow::Result<OutboxRow> {
    eventually("the registration to be mined", || async {
        Ok(registration_row(db, account).await?.is_some_and(|r| r.state == "confirmed"))
    })
    .await?;
    registration_row(db, account).await?.ok_or_else(|| anyhow::anyhow!("no row"))
}

/// How many `AccountRegistered` events name `account` on the chain.
async fn registrations_on_chain(chain: &TestChain, account: Address) -> anyhow::Result<usize> {
    let filter = Filter::new()
        .address(chain.deployment.contracts.account_registry)
        .event_signature(AccountRegistry::AccountRegistered::SIGNATURE_HASH)
        .topic1(account.into_word())
        .from_block(0);
    Ok(chain.reader().get_logs(&filter).await?.len())
}

/// The operator key's transaction count on the chain.
async fn operator_nonce(chain: &TestChain) -> anyhow::Result<u64> {
    Ok(chain.reader().get_transaction_count(chain.role(Role::Operator).address()).await?)
}

/// An API process with the operator key, on the chain at `rpc_url`.
fn settings(chain: &TestChain, rpc_url: String) -> Vec<(&'static str, String)> {
    vec![
        ("OPERATOR_PRIVATE_KEY", role_key(chain, Role::Operator)),
        ("RPC_URL", rpc_url),
        ("CHAIN_CONFIRMATIONS", "0".to_owned()),
    ]
}

/// A fresh chain and database, and a relay in front of the chain that holds broadcasts when set.
async fn with_held_broadcasts() -> anyhow::Result<(TestChain, TestDb, HoldingRpc)> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let broadcasts =
        HoldingRpc::start(chain.endpoint(), "eth_sendRawTransaction", Duration::from_secs(60))
            .await?;
    Ok((chain, db, broadcasts))
}

/// Whether some connection holds the operator key's sender lock.
async fn sender_leads(db: &TestDb, chain: &TestChain) -> anyhow::Result<bool> {
    let operator = chain.role(Role::Operator).address();
    let key = Lock::ChainSender { chain_id: chain.chain_id(), signer: operator.as_slice() }.key();
    let mut conn = db.connect().await?;
    let held: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks where locktype = 'advisory' and granted
           and ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(key)
    .fetch_one(&mut conn)
    .await?;
    Ok(held > 0)
}

#[tokio::test]
async fn two_replicas_share_the_operator_key_without_a_nonce_clash() -> anyhow::Result<()> {
    const USERS: usize = 16;
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let first_nonce = operator_nonce(&chain).await?;
    let (mut leader, leader_api) =
        ApiProcess::serving(&chain, &db, &settings(&chain, chain.endpoint())).await?;
    eventually("the first replica to lead the key", || sender_leads(&db, &chain)).await?;
    let (_standby, standby_api) =
        ApiProcess::serving(&chain, &db, &settings(&chain, chain.endpoint())).await?;

    // First logins on both replicas at once: each writes a registration for the operator key.
    let users: Vec<_> = (0..USERS).map(|n| chain.user(n)).collect();
    let apis = [&leader_api, &standby_api];
    let first_half = futures::future::try_join_all(
        users[..USERS / 2].iter().enumerate().map(|(n, user)| apis[n % 2].login(user)),
    );
    first_half.await?;
    // The leading replica dies with rows in flight; the other takes the key over.
    leader.kill9();
    drop(leader_api);
    futures::future::try_join_all(users[USERS / 2..].iter().map(|user| standby_api.login(user)))
        .await?;

    let mut nonces = Vec::new();
    for user in &users {
        let row = mined_registration(&db, user.address()).await?;
        assert_eq!(registrations_on_chain(&chain, user.address()).await?, 1, "{row:?}");
        assert_eq!(row.requeued, 0, "{row:?}");
        nonces.push(row.nonce.unwrap_or(-1));
    }
    nonces.sort_unstable();
    let expected: Vec<i64> = (0..USERS as i64).map(|n| first_nonce as i64 + n).collect();
    assert_eq!(nonces, expected, "one nonce each, none skipped or shared");
    assert_eq!(operator_nonce(&chain).await?, first_nonce + USERS as u64, "no other transaction");
    Ok(())
}

/// Where a sender is killed: before the step named.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// Signed and stored; the broadcast held before the node has it.
    Broadcast,
    /// The node took the broadcast; its answer held.
    Record,
    /// Mined; the receipt's answer held.
    Receipt,
}

#[tokio::test]
async fn a_sender_killed_at_each_step_sends_each_transaction_once() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    // API → receipt relay → broadcast relay → anvil; each holds its one method when set.
    let broadcasts =
        HoldingRpc::start(chain.endpoint(), "eth_sendRawTransaction", Duration::from_secs(60))
            .await?;
    let receipts = HoldingRpc::start(
        broadcasts.url.clone(),
        "eth_getTransactionReceipt",
        Duration::from_secs(60),
    )
    .await?;
    let points = [KillPoint::Broadcast, KillPoint::Record, KillPoint::Receipt];
    for (n, point) in points.into_iter().enumerate() {
        let user = chain.user(n);
        let (relay, hold, state_at_kill) = match point {
            KillPoint::Broadcast => (&broadcasts, Hold::Request, "signed"),
            KillPoint::Record => (&broadcasts, Hold::Response, "signed"),
            KillPoint::Receipt => (&receipts, Hold::Response, "pending"),
        };
        relay.set(hold);
        let holding = relay.holding();
        let (mut api, client) =
            ApiProcess::serving(&chain, &db, &settings(&chain, receipts.url.clone())).await?;
        client.login(&user).await?;
        eventually("the sender to reach the held call", || async { Ok(relay.holding() > holding) })
            .await?;
        if let KillPoint::Receipt = point {
            // The node mined it; only the sender's knowledge of it is held.
            eventually("the transaction to be mined", || async {
                Ok(registrations_on_chain(&chain, user.address()).await? == 1)
            })
            .await?;
        }
        api.kill9();
        relay.set(Hold::Off);
        let at_kill = registration_row(&db, user.address())
            .await?
            .ok_or_else(|| anyhow::anyhow!("{point:?}: no row"))?;
        assert_eq!(at_kill.state, state_at_kill, "{point:?}: {at_kill:?}");
        assert_eq!(at_kill.sends, 1, "{point:?}: {at_kill:?}");

        // Another process takes the key over and finishes the row with the bytes it stored.
        let (_api, _client) =
            ApiProcess::serving(&chain, &db, &settings(&chain, receipts.url.clone())).await?;
        let row = mined_registration(&db, user.address()).await?;
        assert_eq!(row.sends, 1, "{point:?}: signed once: {row:?}");
        assert_eq!(row.tx_hash, at_kill.first_send, "{point:?}: the stored send was mined");
        assert_eq!(registrations_on_chain(&chain, user.address()).await?, 1, "{point:?}");
    }
    let mined: i64 =
        sqlx::query_scalar("select count(*) from chain_outbox where state = 'confirmed'")
            .fetch_one(&mut db.connect().await?)
            .await?;
    assert_eq!(operator_nonce(&chain).await?, mined as u64, "one transaction per row");
    Ok(())
}

#[tokio::test]
async fn a_nonce_taken_outside_the_platform_is_given_to_the_row_again() -> anyhow::Result<()> {
    let (chain, db, broadcasts) = with_held_broadcasts().await?;
    broadcasts.set(Hold::Request);
    let (mut api, client) =
        ApiProcess::serving(&chain, &db, &settings(&chain, broadcasts.url.clone())).await?;
    let user = chain.user(0);
    client.login(&user).await?;
    eventually("the broadcast to be held", || async { Ok(broadcasts.holding() > 0) }).await?;
    api.kill9();
    broadcasts.set(Hold::Off);
    let signed = registration_row(&db, user.address()).await?.expect("a row");
    assert_eq!(signed.state, "signed");

    // Someone uses the operator key by hand, at the nonce the row was signed with; a block
    // follows it.
    let operator = chain.role(Role::Operator);
    let by_hand = TransactionRequest::default()
        .with_to(operator.address())
        .with_value(U256::ZERO)
        .with_nonce(signed.nonce.expect("a nonce") as u64);
    chain.provider_as(operator).send_transaction(by_hand).await?.get_receipt().await?;
    chain.reader().raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await?;

    let (_api, _client) =
        ApiProcess::serving(&chain, &db, &settings(&chain, chain.endpoint())).await?;
    let row = mined_registration(&db, user.address()).await?;
    assert_eq!(row.requeued, 1, "{row:?}");
    assert_eq!(row.nonce, signed.nonce.map(|n| n + 1), "{row:?}");
    assert_ne!(row.tx_hash, signed.first_send, "signed again at the new nonce");
    assert_eq!(registrations_on_chain(&chain, user.address()).await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_transaction_the_node_dropped_is_sent_again_at_its_nonce() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let mut with_head_deadline = settings(&chain, chain.endpoint());
    with_head_deadline.push(("CHAIN_HEAD_STUCK_AFTER_SECS", "2".to_owned()));
    let (_api, client) = ApiProcess::serving(&chain, &db, &with_head_deadline).await?;
    let rpc = chain.reader();

    // The node stops mining on arrival, takes the registration into its pool, then drops it (as a
    // node evicts a transaction from a full pool): the row is pending, its hash known to no one.
    rpc.raw_request::<_, serde_json::Value>("evm_setAutomine".into(), (false,)).await?;
    let user = chain.user(0);
    client.login(&user).await?;
    eventually("the registration to be broadcast", || async {
        Ok(registration_row(&db, user.address()).await?.is_some_and(|r| r.state == "pending"))
    })
    .await?;
    let dropped = registration_row(&db, user.address()).await?.expect("a row");
    let hash = alloy::primitives::B256::from_slice(dropped.first_send.as_deref().expect("a send"));
    rpc.raw_request::<_, serde_json::Value>("anvil_dropTransaction".into(), (hash,)).await?;
    rpc.raw_request::<_, serde_json::Value>("evm_setAutomine".into(), (true,)).await?;
    assert!(rpc.get_transaction_by_hash(hash).await?.is_none(), "the node forgot it");

    // Nothing else of the key will be mined before it: it is sent again at its nonce, with
    // higher fees, long before the general 60 s deadline.
    let row = mined_registration(&db, user.address()).await?;
    assert_eq!(row.nonce, dropped.nonce, "the same nonce: {row:?}");
    assert_eq!(row.sends, 2, "{row:?}");
    assert_ne!(row.tx_hash, dropped.first_send, "the raised send was mined");
    assert_eq!(row.requeued, 0);
    assert_eq!(registrations_on_chain(&chain, user.address()).await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_transaction_status_is_for_its_account_and_admins() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let (_api, client) =
        ApiProcess::serving(&chain, &db, &settings(&chain, chain.endpoint())).await?;
    let (owner, other) = (chain.user(0), chain.user(1));
    let session = client.login(&owner).await?;
    mined_registration(&db, owner.address()).await?;
    let id: i64 = sqlx::query_scalar("select id from chain_outbox where account = $1")
        .bind(owner.address().as_slice())
        .fetch_one(&mut db.connect().await?)
        .await?;
    let (status, body) =
        client.get(&format!("/blockchain/transactions/{id}"), Some(&session.access)).await?;
    assert_eq!((status, body["status"].as_str()), (200, Some("mined")), "{body}");
    assert!(body["tx_hash"].as_str().is_some_and(|h| h.len() == 66), "{body}");
    let other = client.login(&other).await?;
    let (status, body) =
        client.get(&format!("/blockchain/transactions/{id}"), Some(&other.access)).await?;
    assert_eq!(status, 404, "another account does not see it: {body}");
    let (status, _) = client.get(&format!("/blockchain/transactions/{id}"), None).await?;
    assert_eq!(status, 401);
    Ok(())
}

/// An API process relaying forward requests with the relayer key (and `pool` more keys), on the
/// chain at `rpc_url`.
fn relay_settings(
    chain: &TestChain,
    rpc_url: String,
    pool: &[PrivateKeySigner],
) -> Vec<(&'static str, String)> {
    let pool: Vec<String> =
        pool.iter().map(|k| format!("0x{}", alloy::hex::encode(k.to_bytes()))).collect();
    let mut settings = vec![
        ("RELAYER_PRIVATE_KEY", role_key(chain, Role::Relayer)),
        ("RPC_URL", rpc_url),
        ("CHAIN_CONFIRMATIONS", "0".to_owned()),
    ];
    if !pool.is_empty() {
        settings.push(("RELAYER_POOL_PRIVATE_KEYS", pool.join(",")));
    }
    settings
}

/// A gasless `register()` forward request from `user`.
async fn register_request(
    chain: &TestChain,
    user: &PrivateKeySigner,
) -> anyhow::Result<serde_json::Value> {
    let register = AccountRegistry::registerCall {}.abi_encode();
    forward(
        chain,
        user,
        user.address(),
        chain.deployment.contracts.account_registry,
        register.into(),
    )
    .await
}

/// The relayed record `id`, once it is final.
async fn relayed_final(db: &TestDb, id: i64) -> anyhow::Result<(String, Vec<u8>)> {
    let read = || async {
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(
            "select r.status, o.signer from relayed_transactions r
             join chain_outbox o on o.id = r.outbox_id
             where r.id = $1 and r.status not in ('received', 'pending')",
        )
        .bind(id)
        .fetch_optional(&mut db.connect().await?)
        .await?;
        anyhow::Ok(row)
    };
    eventually("the relayed request to end", || async { Ok(read().await?.is_some()) }).await?;
    read().await?.ok_or_else(|| anyhow::anyhow!("no final record"))
}

#[tokio::test]
async fn a_relay_replica_killed_before_the_broadcast_sends_the_request_once() -> anyhow::Result<()>
{
    let (chain, db, broadcasts) = with_held_broadcasts().await?;
    broadcasts.set(Hold::Request);
    let (mut api, client) =
        ApiProcess::serving(&chain, &db, &relay_settings(&chain, broadcasts.url.clone(), &[]))
            .await?;
    // A wallet without ether: only the relayer pays.
    let user = PrivateKeySigner::random();
    let session = client.login(&user).await?;
    let body = register_request(&chain, &user).await?;
    // The same relay request, with the same idempotency key, to `client`.
    let relay = |client: &TestApi| {
        client
            .http
            .post(client.url("/blockchain/credit"))
            .bearer_auth(&session.access)
            .header("idempotency-key", "register-1")
            .json(&body)
    };
    let answered = tokio::spawn(relay(&client).send());
    eventually("the broadcast to be held", || async { Ok(broadcasts.holding() > 0) }).await?;
    // The record and its outbox row are committed; the replica dies before the node has it.
    api.kill9();
    assert!(answered.await?.is_err(), "the dead replica answered");
    broadcasts.set(Hold::Off);

    let (_api, client) =
        ApiProcess::serving(&chain, &db, &relay_settings(&chain, chain.endpoint(), &[])).await?;
    // The client's retry finds the record instead of relaying again.
    let retried = relay(&client).send().await?;
    assert_eq!(retried.status().as_u16(), 200, "the first record answers");
    let id: i64 = sqlx::query_scalar("select id from relayed_transactions")
        .fetch_one(&mut db.connect().await?)
        .await?;
    let (status, _) = relayed_final(&db, id).await?;
    assert_eq!(status, "mined");
    assert_eq!(registrations_on_chain(&chain, user.address()).await?, 1);
    let relayer = chain.role(Role::Relayer).address();
    assert_eq!(chain.reader().get_transaction_count(relayer).await?, 1, "one transaction");
    Ok(())
}

#[tokio::test]
async fn relayed_requests_spread_over_the_relayer_pool_one_key_per_account() -> anyhow::Result<()> {
    const USERS: usize = 12;
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let pool = [chain.user(20), chain.user(21)];
    let (_api, client) =
        ApiProcess::serving(&chain, &db, &relay_settings(&chain, chain.endpoint(), &pool)).await?;
    let users: Vec<PrivateKeySigner> = (0..USERS).map(|_| PrivateKeySigner::random()).collect();
    let relayed = futures::future::try_join_all(users.iter().map(|user| {
        let (client, chain) = (&client, &chain);
        async move {
            let session = client.login(user).await?;
            let body = register_request(chain, user).await?;
            let (status, record) =
                client.post("/blockchain/credit", Some(&session.access), &body).await?;
            anyhow::ensure!(status == 202, "{status}: {record}");
            record["id"].as_i64().ok_or_else(|| anyhow::anyhow!("no id: {record}"))
        }
    }))
    .await?;
    let mut per_key = std::collections::BTreeMap::<Vec<u8>, u64>::new();
    for (user, id) in users.iter().zip(relayed) {
        let (status, signer) = relayed_final(&db, id).await?;
        assert_eq!(status, "mined");
        assert_eq!(registrations_on_chain(&chain, user.address()).await?, 1);
        *per_key.entry(signer).or_default() += 1;
    }
    assert!(per_key.len() >= 2, "one key sent everything: {per_key:?}");
    for (signer, sent) in per_key {
        let key = Address::try_from(signer.as_slice())?;
        assert_eq!(chain.reader().get_transaction_count(key).await?, sent, "{key}");
    }
    Ok(())
}
