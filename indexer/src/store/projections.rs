//! Reading and writing projection rows by entity.

use alloy::primitives::{Address, B256, U256};
use sqlx::PgConnection;

use super::StoreError;
use crate::projection::{
    AccountRow, DomainRow, EntityKey, EntityValue, ProjectionState, ServiceRow,
};

/// Loads the current rows of `keys` (`None` for an entity without a row).
pub(crate) async fn load(
    conn: &mut PgConnection,
    chain_id: u64,
    keys: impl IntoIterator<Item = EntityKey>,
) -> Result<ProjectionState, StoreError> {
    let chain = chain_id as i64;
    let mut state = ProjectionState::new();
    let (mut accounts, mut balances, mut services, mut domains) = (vec![], vec![], vec![], vec![]);
    for key in keys {
        match &key {
            EntityKey::Account(a) => accounts.push(a.to_vec()),
            EntityKey::Balance(a) => balances.push(a.to_vec()),
            EntityKey::Service(id) => services.push(*id as i64),
            EntityKey::Domain(node) => domains.push(node.to_vec()),
            _ => {}
        }
        state.insert(key, None);
    }

    if !accounts.is_empty() {
        for r in sqlx::query!(
            r#"select address, status, tier,
                      coalesce(extract(epoch from tier_expires_at)::bigint, 0) as "tier_expires_at!",
                      extract(epoch from registered_at)::bigint as "registered_at!"
               from accounts where chain_id = $1 and address = any($2)"#,
            chain,
            &accounts
        )
        .fetch_all(&mut *conn)
        .await?
        {
            state.insert(
                EntityKey::Account(address(&r.address)?),
                Some(EntityValue::Account(AccountRow {
                    status: named(&r.status)?,
                    tier: named(&r.tier)?,
                    tier_expires_at: r.tier_expires_at as u64,
                    registered_at: r.registered_at as u64,
                })),
            );
        }
    }
    if !balances.is_empty() {
        for r in sqlx::query!(
            r#"select account, balance::text as "balance!" from credit_balances
               where chain_id = $1 and account = any($2)"#,
            chain,
            &balances
        )
        .fetch_all(&mut *conn)
        .await?
        {
            state.insert(
                EntityKey::Balance(address(&r.account)?),
                Some(EntityValue::Balance(amount(&r.balance)?)),
            );
        }
    }
    if !services.is_empty() {
        for r in sqlx::query!(
            r#"select service_id, owner, kind, state, ref,
                      extract(epoch from created_at)::bigint as "created_at!",
                      coalesce(extract(epoch from expires_at)::bigint, 0) as "expires_at!"
               from services where chain_id = $1 and service_id = any($2)"#,
            chain,
            &services
        )
        .fetch_all(&mut *conn)
        .await?
        {
            state.insert(
                EntityKey::Service(r.service_id as u64),
                Some(EntityValue::Service(ServiceRow {
                    owner: address(&r.owner)?,
                    kind: named(&r.kind)?,
                    state: named(&r.state)?,
                    service_ref: hash(&r.r#ref)?,
                    created_at: r.created_at as u64,
                    expires_at: r.expires_at as u64,
                })),
            );
        }
    }
    if !domains.is_empty() {
        for r in sqlx::query!(
            r#"select node, name, owner, method,
                      coalesce(extract(epoch from expires_at)::bigint, 0) as "expires_at!",
                      coalesce(service_id, 0) as "service_id!"
               from domains where chain_id = $1 and node = any($2)"#,
            chain,
            &domains
        )
        .fetch_all(&mut *conn)
        .await?
        {
            state.insert(
                EntityKey::Domain(hash(&r.node)?),
                Some(EntityValue::Domain(DomainRow {
                    name: r.name,
                    owner: address(&r.owner)?,
                    method: named(&r.method)?,
                    expires_at: r.expires_at as u64,
                    service_id: r.service_id as u64,
                })),
            );
        }
    }
    // Memberships, rates, prices, limits and settings are written whole by each event, so a batch
    // never needs their previous value: they stay `None` until an event sets them.
    Ok(state)
}

/// Every account, balance, service and domain row of a chain.
pub(crate) async fn load_all(
    conn: &mut PgConnection,
    chain_id: u64,
) -> Result<ProjectionState, StoreError> {
    let chain = chain_id as i64;
    let mut keys: Vec<EntityKey> = Vec::new();
    for a in sqlx::query_scalar!("select address from accounts where chain_id = $1", chain)
        .fetch_all(&mut *conn)
        .await?
    {
        keys.push(EntityKey::Account(address(&a)?));
    }
    for a in sqlx::query_scalar!("select account from credit_balances where chain_id = $1", chain)
        .fetch_all(&mut *conn)
        .await?
    {
        keys.push(EntityKey::Balance(address(&a)?));
    }
    for id in sqlx::query_scalar!("select service_id from services where chain_id = $1", chain)
        .fetch_all(&mut *conn)
        .await?
    {
        keys.push(EntityKey::Service(id as u64));
    }
    for node in sqlx::query_scalar!("select node from domains where chain_id = $1", chain)
        .fetch_all(&mut *conn)
        .await?
    {
        keys.push(EntityKey::Domain(hash(&node)?));
    }
    load(conn, chain_id, keys).await
}

/// Writes the rows of `state`: an upsert for every entity with a value, a delete for every entity
/// without one.
pub(crate) async fn write(
    conn: &mut PgConnection,
    chain_id: u64,
    state: &ProjectionState,
) -> Result<(), StoreError> {
    let chain = chain_id as i64;
    for (key, value) in state {
        match (key, value) {
            (EntityKey::Account(a), Some(EntityValue::Account(r))) => {
                sqlx::query!(
                    r#"insert into accounts (chain_id, address, status, tier, tier_expires_at, registered_at)
                       values ($1, $2, $3, $4, to_timestamp(nullif($5, 0)), to_timestamp($6))
                       on conflict (chain_id, address) do update set status = excluded.status,
                           tier = excluded.tier, tier_expires_at = excluded.tier_expires_at,
                           registered_at = excluded.registered_at"#,
                    chain,
                    a.as_slice(),
                    r.status.as_str(),
                    r.tier.as_str(),
                    r.tier_expires_at as f64,
                    r.registered_at as f64
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Account(a), _) => {
                sqlx::query!(
                    "delete from accounts where chain_id = $1 and address = $2",
                    chain,
                    a.as_slice()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Balance(a), Some(EntityValue::Balance(b))) => {
                sqlx::query!(
                    r#"insert into credit_balances (chain_id, account, balance) values ($1, $2, $3::text::numeric)
                       on conflict (chain_id, account) do update set balance = excluded.balance"#,
                    chain,
                    a.as_slice(),
                    b.to_string()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Balance(a), _) => {
                sqlx::query!(
                    "delete from credit_balances where chain_id = $1 and account = $2",
                    chain,
                    a.as_slice()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Service(id), Some(EntityValue::Service(r))) => {
                sqlx::query!(
                    r#"insert into services (chain_id, service_id, owner, kind, state, ref, created_at, expires_at)
                       values ($1, $2, $3, $4, $5, $6, to_timestamp($7), to_timestamp(nullif($8, 0)))
                       on conflict (chain_id, service_id) do update set owner = excluded.owner,
                           kind = excluded.kind, state = excluded.state, ref = excluded.ref,
                           created_at = excluded.created_at, expires_at = excluded.expires_at"#,
                    chain,
                    *id as i64,
                    r.owner.as_slice(),
                    r.kind.as_str(),
                    r.state.as_str(),
                    r.service_ref.as_slice(),
                    r.created_at as f64,
                    r.expires_at as f64
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Service(id), _) => {
                sqlx::query!(
                    "delete from services where chain_id = $1 and service_id = $2",
                    chain,
                    *id as i64
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Domain(node), Some(EntityValue::Domain(r))) => {
                sqlx::query!(
                    r#"insert into domains (chain_id, node, name, owner, method, expires_at, service_id)
                       values ($1, $2, $3, $4, $5, to_timestamp(nullif($6, 0)), nullif($7, 0))
                       on conflict (chain_id, node) do update set name = excluded.name,
                           owner = excluded.owner, method = excluded.method,
                           expires_at = excluded.expires_at, service_id = excluded.service_id"#,
                    chain,
                    node.as_slice(),
                    r.name,
                    r.owner.as_slice(),
                    r.method.as_str(),
                    r.expires_at as f64,
                    r.service_id as i64
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Domain(node), _) => {
                sqlx::query!(
                    "delete from domains where chain_id = $1 and node = $2",
                    chain,
                    node.as_slice()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Role { contract, role, account }, Some(_)) => {
                sqlx::query!(
                    r#"insert into role_members (chain_id, contract, role, account) values ($1, $2, $3, $4)
                       on conflict do nothing"#,
                    chain,
                    contract.as_slice(),
                    role.as_slice(),
                    account.as_slice()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Role { contract, role, account }, None) => {
                sqlx::query!(
                    r#"delete from role_members
                       where chain_id = $1 and contract = $2 and role = $3 and account = $4"#,
                    chain,
                    contract.as_slice(),
                    role.as_slice(),
                    account.as_slice()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::TokenRate(token), Some(EntityValue::Amount(rate))) => {
                sqlx::query!(
                    r#"insert into token_rates (chain_id, token, rate) values ($1, $2, $3::text::numeric)
                       on conflict (chain_id, token) do update set rate = excluded.rate"#,
                    chain,
                    token.as_slice(),
                    rate.to_string()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::TokenRate(token), _) => {
                sqlx::query!(
                    "delete from token_rates where chain_id = $1 and token = $2",
                    chain,
                    token.as_slice()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Price(kind, tier), Some(EntityValue::Amount(price))) => {
                sqlx::query!(
                    r#"insert into service_prices (chain_id, kind, tier, credits_per_hour)
                       values ($1, $2, $3, $4::text::numeric)
                       on conflict (chain_id, kind, tier) do update set credits_per_hour = excluded.credits_per_hour"#,
                    chain,
                    kind.as_str(),
                    tier.as_str(),
                    price.to_string()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Price(kind, tier), _) => {
                sqlx::query!(
                    "delete from service_prices where chain_id = $1 and kind = $2 and tier = $3",
                    chain,
                    kind.as_str(),
                    tier.as_str()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::TierLimit(kind, tier), Some(EntityValue::Limit(limit))) => {
                sqlx::query!(
                    r#"insert into tier_limits (chain_id, kind, tier, max_open) values ($1, $2, $3, $4)
                       on conflict (chain_id, kind, tier) do update set max_open = excluded.max_open"#,
                    chain,
                    kind.as_str(),
                    tier.as_str(),
                    *limit as i32
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::TierLimit(kind, tier), _) => {
                sqlx::query!(
                    "delete from tier_limits where chain_id = $1 and kind = $2 and tier = $3",
                    chain,
                    kind.as_str(),
                    tier.as_str()
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Setting { contract, name }, Some(EntityValue::Setting(value))) => {
                sqlx::query!(
                    r#"insert into contract_settings (chain_id, contract, name, value) values ($1, $2, $3, $4)
                       on conflict (chain_id, contract, name) do update set value = excluded.value"#,
                    chain,
                    contract.as_slice(),
                    name,
                    value
                )
                .execute(&mut *conn)
                .await?;
            }
            (EntityKey::Setting { contract, name }, _) => {
                sqlx::query!(
                    "delete from contract_settings where chain_id = $1 and contract = $2 and name = $3",
                    chain,
                    contract.as_slice(),
                    name
                )
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

/// Deletes every projection row of a chain (before a full re-fold).
pub(crate) async fn clear(conn: &mut PgConnection, chain_id: u64) -> Result<(), StoreError> {
    let chain = chain_id as i64;
    for statement in [
        "delete from accounts where chain_id = $1",
        "delete from credit_balances where chain_id = $1",
        "delete from services where chain_id = $1",
        "delete from domains where chain_id = $1",
        "delete from role_members where chain_id = $1",
        "delete from token_rates where chain_id = $1",
        "delete from service_prices where chain_id = $1",
        "delete from tier_limits where chain_id = $1",
        "delete from contract_settings where chain_id = $1",
    ] {
        sqlx::query(statement).bind(chain).execute(&mut *conn).await?;
    }
    Ok(())
}

fn address(bytes: &[u8]) -> Result<Address, StoreError> {
    Address::try_from(bytes).map_err(|_| StoreError::Corrupt("address column".into()))
}

fn hash(bytes: &[u8]) -> Result<B256, StoreError> {
    B256::try_from(bytes).map_err(|_| StoreError::Corrupt("hash column".into()))
}

fn amount(text: &str) -> Result<U256, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("numeric column {text:?}")))
}

fn named<E: std::str::FromStr>(text: &str) -> Result<E, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("enum value {text:?}")))
}
