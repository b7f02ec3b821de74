//! Managed databases on real components: a PostgreSQL host the test starts with `scram-sha-256`
//! for every TCP connection (so passwords are really checked), anvil with the contracts, the
//! indexer, IPFS and the API. A database is made from the chain, reached with the credentials
//! shown once, isolated from other accounts' databases and from the server, closed while its
//! service is paused, read-only past its quota, backed up encrypted to IPFS and restored, and
//! dropped after its final backup once cancelled.

use std::time::Duration;

use alloy::{
    primitives::{B256, Bytes},
    sol_types::SolCall,
};
use decentraspace_abi::{ServiceKind, ServiceRegistry};
use decentraspace_tests::{Session, Stack, TestCluster, eventually, problem_type, relay_signed};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

/// The database host's superuser password.
const ADMIN_PASSWORD: &str = "host-admin-password-0123456789";
/// Credit units given to each user: a few hours of databases.
const CREDITS: u64 = 100_000_000;

/// A stack whose databases live on `cluster`, changed further by `configure`.
async fn stack_on(
    cluster: &TestCluster,
    configure: impl FnOnce(&mut decentraspace_api::Config) + Send + 'static,
) -> anyhow::Result<Stack> {
    let hosts = cluster.admin_url("postgres");
    Stack::builder()
        .ipfs()
        .configure(move |config, _| {
            config.database_hosts = Some(hosts.into());
            configure(config);
        })
        .start()
        .await
}

/// Makes a database for `session`: its id and connection URL (with the password).
async fn create(stack: &Stack, session: &Session) -> anyhow::Result<(i64, String)> {
    let (status, made) = stack.api.post("/database", Some(&session.access), &json!({})).await?;
    anyhow::ensure!(status == 201, "create: {status} {made}");
    anyhow::ensure!(made["database"]["status"] == "ready", "not ready at once: {made}");
    let id = made["database"]["id"].as_i64().unwrap_or_default();
    Ok((id, made["connection_url"].as_str().unwrap_or_default().to_owned()))
}

async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(url).await
}

/// The error PostgreSQL answered `result` with, as text (panics on success).
fn refused<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> String {
    match result {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(err) => err.to_string(),
    }
}

/// Waits (up to 30 s) until database `id` has `status`; its view.
async fn status_is(
    stack: &Stack,
    session: &Session,
    id: i64,
    status: &str,
) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, database) =
            stack.api.get(&format!("/database/{id}"), Some(&session.access)).await?;
        if database["status"] == status {
            return Ok(database);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "database {id} never became {status}: {database}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until backup or restore `path`'s newest matching entry leaves `pending`; it.
async fn finished(stack: &Stack, session: &Session, path: &str) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = stack.api.get(path, Some(&session.access)).await?;
        let entry = if body.is_array() { body[0].clone() } else { body };
        if entry["state"] != "pending" && !entry.is_null() {
            return Ok(entry);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{path} still pending: {entry}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_database_is_reachable_by_its_role_only_and_the_role_by_nothing_else()
-> anyhow::Result<()> {
    let cluster = TestCluster::with_passwords(ADMIN_PASSWORD).await?;
    let stack = stack_on(&cluster, |_| {}).await?;
    let alice = stack.paid_user(0, CREDITS).await?;
    let bob = stack.paid_user(1, CREDITS).await?;
    let (alice_db, alice_url) = create(&stack, &alice).await?;
    let (bob_db, bob_url) = create(&stack, &bob).await?;
    assert_ne!(alice_db, bob_db);

    // The owner's role works in its own database.
    let mut conn = connect(&alice_url).await?;
    sqlx::raw_sql(
        "create table notes (id int primary key, body text); insert into notes values (1, 'mine')",
    )
    .execute(&mut conn)
    .await?;

    // It cannot reach another account's database, with its password or without one.
    let alice_role = format!("ds_{alice_db}");
    let bob_name = format!("ds_{bob_db}");
    let into = |database: &str| -> anyhow::Result<String> {
        let mut url = reqwest::Url::parse(&alice_url)?;
        url.set_path(database);
        Ok(url.to_string())
    };
    assert!(alice_url.contains(&format!("/{alice_role}?")), "{alice_url}");
    let into_bob = into(&bob_name)?;
    let refusal = refused(connect(&into_bob).await);
    assert!(refusal.contains("permission denied for database"), "{refusal}");
    // Nor the server's own databases.
    let into_postgres = into("postgres")?;
    let refusal = refused(connect(&into_postgres).await);
    assert!(refusal.contains("permission denied for database"), "{refusal}");
    // Another account's role with a wrong password gets nowhere: passwords are checked.
    let mut wrong = reqwest::Url::parse(&bob_url)?;
    wrong.set_password(Some("not-the-password")).ok();
    let wrong = wrong.to_string();
    let refusal = refused(connect(&wrong).await);
    assert!(refusal.contains("password authentication failed"), "{refusal}");

    // Inside its database, the role is no administrator.
    for (what, sql, expected) in [
        ("create a role", "create role intruder", "permission denied to create role"),
        ("create a database", "create database other", "permission denied to create database"),
        (
            "read server files",
            "select pg_read_file('postgresql.conf')",
            "permission denied for function pg_read_file",
        ),
        (
            "read the password hashes",
            "select rolpassword from pg_authid",
            "permission denied for table pg_authid",
        ),
        ("become the superuser", "set role postgres", "permission denied to set role"),
        ("create a schema", "create schema mine", "permission denied for database"),
    ] {
        let refusal = refused(sqlx::raw_sql(sql).execute(&mut conn).await);
        assert!(refusal.contains(expected), "{what}: {refusal}");
    }
    // Its role's attributes say the same.
    let (superuser, create_role, create_db): (bool, bool, bool) = sqlx::query_as(
        "select rolsuper, rolcreaterole, rolcreatedb from pg_roles where rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await?;
    assert!(!superuser && !create_role && !create_db);

    // Bob's rows are his: another wallet's database is absent through the API too.
    let (status, body) = stack.api.get(&format!("/database/{bob_db}"), Some(&alice.access)).await?;
    assert_eq!(status, 404, "{body}");
    assert_eq!(problem_type(&body), "not-found");
    let (status, list) = stack.api.get("/database", Some(&alice.access)).await?;
    assert_eq!(status, 200);
    let ids: Vec<i64> =
        list.as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![alice_db]);
    // The list never carries a password.
    let password = reqwest::Url::parse(&alice_url)?.password().unwrap_or_default().to_owned();
    assert_eq!(password.len(), 32);
    assert!(!list.to_string().contains(&password), "{list}");

    // A new password: the old one stops working, the new one works.
    let (status, rotated) = stack
        .api
        .post(&format!("/database/{alice_db}/credentials"), Some(&alice.access), &json!({}))
        .await?;
    assert_eq!(status, 200, "{rotated}");
    let refusal = refused(connect(&alice_url).await);
    assert!(refusal.contains("password authentication failed"), "{refusal}");
    let mut fresh = connect(rotated["connection_url"].as_str().unwrap()).await?;
    let body: String =
        sqlx::query_scalar("select body from notes where id = 1").fetch_one(&mut fresh).await?;
    assert_eq!(body, "mine");

    // No database without an hour of credit (nothing is opened on-chain), and none on Free.
    let broke = stack.paid_user(2, 0).await?;
    let (status, body) = stack.api.post("/database", Some(&broke.access), &json!({})).await?;
    assert_eq!(status, 402, "{body}");
    assert_eq!(problem_type(&body), "insufficient-credit");
    assert_eq!(body["shortfall"], "5000", "{body}");
    let free = stack.api.login_registered(&stack.chain.user(3)).await?;
    let (status, body) = stack.api.post("/database", Some(&free.access), &json!({})).await?;
    assert_eq!(status, 403, "{body}");
    for session in [&broke, &free] {
        let (_, list) = stack.api.get("/database", Some(&session.access)).await?;
        assert_eq!(list, json!([]));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_closes_a_database_a_backup_restores_it_and_cancel_drops_it_after_its_final_backup()
-> anyhow::Result<()> {
    let cluster = TestCluster::with_passwords(ADMIN_PASSWORD).await?;
    let stack = stack_on(&cluster, |config| config.database_drop_grace_secs = 2).await?;
    let alice = stack.paid_user(0, CREDITS).await?;
    let (id, url) = create(&stack, &alice).await?;
    let mut conn = connect(&url).await?;
    sqlx::raw_sql("create table items (n int); insert into items select generate_series(1, 3)")
        .execute(&mut conn)
        .await?;

    // Paused: the open session is ended and a new one refused.
    let (status, body) =
        stack.api.post(&format!("/database/{id}/pause"), Some(&alice.access), &json!({})).await?;
    assert_eq!(status, 200, "{body}");
    status_is(&stack, &alice, id, "paused").await?;
    let refusal = refused(
        sqlx::query_scalar::<_, i64>("select count(*) from items").fetch_one(&mut conn).await,
    );
    assert!(!refusal.is_empty());
    let refusal = refused(connect(&url).await);
    assert!(refusal.contains("permission denied for database"), "{refusal}");

    // A backup of the paused database (the platform still reaches it).
    let (status, requested) =
        stack.api.post(&format!("/database/{id}/backups"), Some(&alice.access), &json!({})).await?;
    assert_eq!(status, 202, "{requested}");
    let backup = finished(&stack, &alice, &format!("/database/{id}/backups")).await?;
    assert_eq!(backup["state"], "done", "{backup}");
    assert!(backup["size_bytes"].as_i64().unwrap() > 0);
    // What IPFS holds is sealed: no trace of the table's name.
    let stored = stack.ipfs().cat(backup["cid"].as_str().unwrap()).await?;
    assert!(!stored.windows(5).any(|w| w == b"items"), "the backup is stored in the clear");

    // Resumed: connections are taken again; rows written after the backup...
    let (status, body) =
        stack.api.post(&format!("/database/{id}/resume"), Some(&alice.access), &json!({})).await?;
    assert_eq!(status, 200, "{body}");
    status_is(&stack, &alice, id, "ready").await?;
    let mut conn = connect(&url).await?;
    sqlx::raw_sql("insert into items values (4), (5); create table later (x int)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    // ...are gone once the backup is restored into it: it holds exactly what it held then.
    let backup_id = backup["id"].as_i64().unwrap();
    let (status, restore) = stack
        .api
        .post(
            &format!("/database/{id}/backups/{backup_id}/restore"),
            Some(&alice.access),
            &json!({}),
        )
        .await?;
    assert_eq!(status, 202, "{restore}");
    let restore_path = format!("/database/{id}/restores/{}", restore["id"]);
    let restored = finished(&stack, &alice, &restore_path).await?;
    assert_eq!(restored["state"], "done", "{restored}");
    let mut conn = connect(&url).await?;
    let rows: Vec<i32> =
        sqlx::query_scalar("select n from items order by n").fetch_all(&mut conn).await?;
    assert_eq!(rows, vec![1, 2, 3]);
    let later: Option<String> =
        sqlx::query_scalar("select to_regclass('later')::text").fetch_one(&mut conn).await?;
    assert_eq!(later, None, "a table made after the backup survived the restore");
    // The restored tables are still the role's own.
    sqlx::raw_sql("insert into items values (6); drop table items").execute(&mut conn).await?;
    sqlx::raw_sql("create table items (n int); insert into items values (7)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;

    // Cancelled: closed at once, a final backup, dropped after the grace period.
    let (status, body) = stack
        .api
        .send(reqwest::Method::DELETE, &format!("/database/{id}"), Some(&alice.access), None)
        .await?;
    assert_eq!(status, 200, "{body}");
    let cancelled = status_is(&stack, &alice, id, "cancelled").await?;
    assert!(cancelled["drops_at"].is_string(), "{cancelled}");
    let refusal = refused(connect(&url).await);
    assert!(refusal.contains("permission denied for database"), "{refusal}");
    status_is(&stack, &alice, id, "dropped").await?;
    let (_, backups) =
        stack.api.get(&format!("/database/{id}/backups"), Some(&alice.access)).await?;
    let last = backups.as_array().unwrap().iter().find(|b| b["reason"] == "final").cloned();
    let last = last.ok_or_else(|| anyhow::anyhow!("no final backup: {backups}"))?;
    assert_eq!(last["state"], "done", "{last}");
    let mut admin = connect(&cluster.admin_url("postgres")).await?;
    let (databases, roles): (i64, i64) = sqlx::query_as(
        "select (select count(*) from pg_database where datname = $1), (select count(*) from pg_roles where rolname = $1)",
    )
    .bind(format!("ds_{id}"))
    .fetch_one(&mut admin)
    .await?;
    assert_eq!((databases, roles), (0, 0), "the dropped database or its role is still on the host");

    // The final backup restores into a new database of the same owner.
    let (new_id, new_url) = create(&stack, &alice).await?;
    let final_id = last["id"].as_i64().unwrap();
    let (status, restore) = stack
        .api
        .post(
            &format!("/database/{id}/backups/{final_id}/restore"),
            Some(&alice.access),
            &json!({ "into": new_id }),
        )
        .await?;
    assert_eq!(status, 202, "{restore}");
    let restored =
        finished(&stack, &alice, &format!("/database/{new_id}/restores/{}", restore["id"])).await?;
    assert_eq!(restored["state"], "done", "{restored}");
    let mut conn = connect(&new_url).await?;
    let rows: Vec<i32> = sqlx::query_scalar("select n from items").fetch_all(&mut conn).await?;
    assert_eq!(rows, vec![7]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_past_its_quota_refuses_writes_and_far_past_it_connections() -> anyhow::Result<()>
{
    const MIB: u64 = 1024 * 1024;
    let cluster = TestCluster::with_passwords(ADMIN_PASSWORD).await?;
    let stack = stack_on(&cluster, |config| config.database_quota_bytes = 16 * MIB).await?;
    let alice = stack.paid_user(0, CREDITS).await?;
    let (id, url) = create(&stack, &alice).await?;
    let mut conn = connect(&url).await?;
    // About 10 MiB of rows that do not compress: past 16 MiB with the empty database's ~7.5.
    let fill = "insert into blobs select string_agg(md5(random()::text || g::text || i::text), '')
                from generate_series(1, 10000) as i, generate_series(1, 32) as g group by i";
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create table blobs (b text); {fill}")))
        .execute(&mut conn)
        .await?;
    let view = status_is(&stack, &alice, id, "read_only").await?;
    assert!(view["size_bytes"].as_i64().unwrap() > view["quota_bytes"].as_i64().unwrap(), "{view}");
    // The session was ended; the next one reads but does not write.
    let mut conn = connect(&url).await?;
    let rows: i64 = sqlx::query_scalar("select count(*) from blobs").fetch_one(&mut conn).await?;
    assert_eq!(rows, 10_000);
    let refusal =
        refused(sqlx::raw_sql("insert into blobs values ('more')").execute(&mut conn).await);
    assert!(refusal.contains("read-only transaction"), "{refusal}");
    // Writing anyway (a session can lift its own default) past 125% of the quota closes it.
    sqlx::raw_sql("set default_transaction_read_only = off").execute(&mut conn).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{fill}; {fill}"))).execute(&mut conn).await?;
    status_is(&stack, &alice, id, "locked").await?;
    let refusal = refused(connect(&url).await);
    assert!(refusal.contains("permission denied for database"), "{refusal}");
    // The owner was told both times.
    let (_, notices) = stack.api.get("/notices", Some(&alice.access)).await?;
    let kinds: Vec<&str> =
        notices["items"].as_array().unwrap().iter().filter_map(|n| n["kind"].as_str()).collect();
    assert_eq!(kinds, ["database_locked", "database_over_quota"], "{notices}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_service_the_owner_opens_through_the_relay_is_provisioned() -> anyhow::Result<()>
{
    let cluster = TestCluster::with_passwords(ADMIN_PASSWORD).await?;
    let stack = stack_on(&cluster, |_| {}).await?;
    let alice = stack.paid_user(0, CREDITS).await?;
    let address = stack.chain.user(0).address();
    let reference = B256::from(alloy::primitives::keccak256("my own database"));
    let data =
        ServiceRegistry::createServiceCall { kind: ServiceKind::Database.into(), r#ref: reference }
            .abi_encode();
    let tx = relay_signed(
        &stack.api,
        &stack.chain,
        &stack.chain.user(0),
        &alice.access,
        stack.chain.deployment.contracts.service_registry,
        Bytes::from(data),
    )
    .await?;
    assert_eq!(tx["status"], "mined", "{tx}");
    // The provisioner makes it from the indexed service, with no API call.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (_, list) = stack.api.get("/database", Some(&alice.access)).await?;
        if list[0]["status"] == "ready" {
            break list;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the relayed database was never made: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = listed[0]["id"].as_i64().unwrap();
    let registry = ServiceRegistry::new(
        stack.chain.deployment.contracts.service_registry,
        stack.chain.reader(),
    );
    assert_eq!(registry.ownerOf(alloy::primitives::U256::from(id as u64)).call().await?, address);
    // Its password was never shown: the owner asks for one.
    let (status, credentials) = stack
        .api
        .post(&format!("/database/{id}/credentials"), Some(&alice.access), &json!({}))
        .await?;
    assert_eq!(status, 200, "{credentials}");
    let mut conn = connect(credentials["connection_url"].as_str().unwrap()).await?;
    let me: String = sqlx::query_scalar("select current_user::text").fetch_one(&mut conn).await?;
    assert_eq!(me, format!("ds_{id}"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_spread_over_the_hosts_and_one_asked_for_while_they_are_down_is_made_on_their_return()
-> anyhow::Result<()> {
    let one = TestCluster::with_passwords(ADMIN_PASSWORD).await?;
    let two = TestCluster::with_passwords(ADMIN_PASSWORD).await?;
    let hosts = format!("{},{}", one.admin_url("postgres"), two.admin_url("postgres"));
    let stack = Stack::builder()
        .ipfs()
        .configure(move |config, _| {
            config.database_hosts = Some(hosts.into());
            config.database_backup_interval_secs = 2;
        })
        .start()
        .await?;
    let alice = stack.paid_user(0, CREDITS).await?;
    let (first, first_url) = create(&stack, &alice).await?;
    let (_, second_url) = create(&stack, &alice).await?;
    // The second goes to the host without one.
    let port = |url: &str| reqwest::Url::parse(url).map(|u| u.port());
    let mut ports = vec![port(&first_url)?, port(&second_url)?];
    ports.sort();
    let mut expected = vec![Some(one.port()), Some(two.port())];
    expected.sort();
    assert_eq!(ports, expected);

    // Backed up daily (every 2 s here) without being asked.
    let backups = format!("/database/{first}/backups");
    eventually("a daily backup to be taken", || async {
        let (_, list) = stack.api.get(&backups, Some(&alice.access)).await?;
        Ok(list.as_array().is_some_and(|l| {
            l.iter().any(|b| b["reason"] == "daily" && b["state"] == "done" && b["cid"].is_string())
        }))
    })
    .await?;

    // Both hosts down: the service is opened and the credentials shown, the database waits.
    one.stop()?;
    two.stop()?;
    let (status, made) = stack.api.post("/database", Some(&alice.access), &json!({})).await?;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["database"]["status"], "provisioning", "{made}");
    let id = made["database"]["id"].as_i64().unwrap();
    let url = made["connection_url"].as_str().unwrap().to_owned();
    // Back: the provisioner makes it, and the password shown then works.
    one.start()?;
    two.start()?;
    status_is(&stack, &alice, id, "ready").await?;
    let mut conn = connect(&url).await?;
    let me: String = sqlx::query_scalar("select current_user::text").fetch_one(&mut conn).await?;
    assert_eq!(me, format!("ds_{id}"));
    Ok(())
}
