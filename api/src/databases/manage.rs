//! `/database`: the caller's databases, made (a Database service opened on-chain, then provisioned
//! at once), read, paused, resumed, cancelled, and their password rotated. Another wallet's
//! database is as absent as a missing one.

use alloy::primitives::{U256, keccak256};
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use decentraspace_abi::{
    PlatformRevert, ServiceKind,
    ServiceRegistry::{self, ServiceRegistryErrors},
};
use decentraspace_db::locks::{Lock, lock_in};
use secrecy::ExposeSecret;

use super::{
    Credentials, Database, DatabasesState, provision,
    secrets::{self, Secret},
};
use crate::{
    billing::available,
    chain::{ChainError, TxOutcome},
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
    services::change,
};

/// Reads the caller's databases (all, or `id`'s).
async fn read(
    state: &DatabasesState,
    user: &AuthUser,
    id: Option<i64>,
) -> ApiResult<Vec<Database>> {
    let rows = sqlx::query!(
        r#"select s.service_id, s.state,
                  (s.expires_at is not null and s.expires_at <= chain_now($1)
                   and effective_tier(a.tier, a.tier_expires_at, chain_now($1)) = 'free') as "expired!",
                  m.host as "host?", m.applied as "applied?", m.password_applied as "password_applied?",
                  m.read_only as "read_only?", m.size_bytes as "size_bytes?", m.ready_at,
                  m.cancelled_at
           from services s
           left join managed_databases m on m.chain_id = s.chain_id and m.service_id = s.service_id
           left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
           where s.chain_id = $1 and s.owner = $2 and s.kind = 'database'
             and ($3::bigint is null or s.service_id = $3)
           order by s.service_id
           limit 1000"#,
        state.chain_id() as i64,
        user.address.as_slice(),
        id
    )
    .fetch_all(&state.db)
    .await?;
    let mut databases = Vec::with_capacity(rows.len());
    for row in rows {
        let host = row.host.as_deref().and_then(|key| state.hosts.get(key));
        let name = provision::name_of(row.service_id);
        let size = row.size_bytes.unwrap_or(0);
        let applied = row.applied.as_deref().unwrap_or("new");
        let status = if applied == "dropped" {
            "dropped"
        } else if row.state == "cancelled" && row.cancelled_at.is_some() {
            // Cancelled on the host (connections closed, the drop scheduled): until the
            // provisioner has done it, what the host does now is shown below.
            "cancelled"
        } else if applied == "new" || row.password_applied == Some(false) {
            "provisioning"
        } else if applied == "closed" {
            // What the host does, not what it is about to: the service's `state` says where it
            // is heading.
            if row.state == "active" && !row.expired && size > state.hard_limit() {
                "locked"
            } else {
                "paused"
            }
        } else if row.read_only == Some(true) {
            "read_only"
        } else {
            "ready"
        };
        let connection_url = match host {
            Some(host) if applied != "dropped" => {
                Some(host.url(&name, None, host.tls().await.unwrap_or(false)))
            }
            _ => None,
        };
        databases.push(Database {
            id: row.service_id,
            state: row.state,
            status: status.to_owned(),
            host: host.map(|h| h.host.clone()),
            port: host.map(|h| h.port),
            database: name,
            connection_url,
            size_bytes: size,
            quota_bytes: state.quota(),
            ready_at: row.ready_at,
            drops_at: row
                .cancelled_at
                .filter(|_| applied != "dropped")
                .map(|at| provision::drops_at(state, at)),
        });
    }
    Ok(databases)
}

/// The caller's database `id`.
pub(super) async fn one(state: &DatabasesState, user: &AuthUser, id: i64) -> ApiResult<Database> {
    read(state, user, Some(id))
        .await?
        .pop()
        .ok_or_else(|| ApiError::NotFound(format!("no database {id} of yours")))
}

/// The caller's databases.
#[utoipa::path(get, path = "/database", tag = "database", security(("bearer" = [])),
    responses((status = 200, body = Vec<Database>)))]
pub async fn list(
    State(state): State<DatabasesState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<Database>>> {
    Ok(Json(read(&state, &user, None).await?))
}

/// Opens a Database service on-chain and makes its database: the answer carries the password,
/// this once. Needs the Paid tier's database limit not reached and an hour of credit.
#[utoipa::path(post, path = "/database", tag = "database", security(("bearer" = [])),
    responses((status = 201, body = Credentials, description = "Made (or `provisioning`: usable in a moment with these credentials)"),
        (status = 402, description = "Not enough credit for one hour of the database"),
        crate::http::openapi::Forbidden,
        crate::http::openapi::Unavailable))]
pub async fn create(
    State(state): State<DatabasesState>,
    user: AuthUser,
) -> ApiResult<(StatusCode, Json<Credentials>)> {
    if state.hosts.is_empty() {
        return Err(ApiError::NotConfigured("managed databases (DATABASE_HOSTS)"));
    }
    let hourly = available::hourly_price(&state, user.address, ServiceKind::Database).await?;
    available::require(&state, user.address, U256::ZERO, hourly, "opening a database").await?;
    let operator = state.operator()?;
    let registry = ServiceRegistry::new(
        state.deployment.contracts.service_registry,
        operator.provider().clone(),
    );
    let reference =
        keccak256(format!("database:{}:{}", user.address, hex::encode(crate::random::reference())));
    let receipt = operator
        .send_for_receipt(registry.createServiceFor(
            user.address,
            ServiceKind::Database.into(),
            reference,
        ))
        .await
        .map_err(|err| match err {
            ChainError::Refused(PlatformRevert::ServiceRegistry(
                ServiceRegistryErrors::ServiceRegistryTierLimitExceeded(_),
            )) => ApiError::Forbidden(
                "your tier holds no more databases: upgrade to Paid, or delete one first".into(),
            ),
            other => other.into(),
        })?;
    let id = crate::services::opened(&receipt, "database")?;
    if !crate::services::indexed(&state, id).await? {
        return Err(ApiError::Unavailable(format!(
            "database service {id} was opened but is not indexed yet; \
             POST /database/{id}/credentials in a moment gives its password"
        )));
    }
    provision::ensure_row(&state, id, user.address.as_slice(), false).await?;
    let credentials = rotate_password(&state, &user, id).await?;
    Ok((StatusCode::CREATED, Json(credentials)))
}

/// Gives database `id` a new password and applies it at once (the provisioner applies it when
/// the host cannot be reached now): the credentials to show, this once.
async fn rotate_password(
    state: &DatabasesState,
    user: &AuthUser,
    id: i64,
) -> ApiResult<Credentials> {
    let chain_id = state.chain_id() as i64;
    let password = secrets::password();
    let sealed = secrets::seal(&state.sealer, chain_id, id, Secret::Password, &password);
    let mut tx = state.db.begin().await?;
    lock_in(&mut tx, Lock::Database { service_id: id }).await?;
    let updated = sqlx::query!(
        "update managed_databases set password_sealed = $3, password_applied = false
         where chain_id = $1 and service_id = $2 and owner = $4 and dropped_at is null",
        chain_id,
        id,
        sealed,
        user.address.as_slice()
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("no live database {id} of yours")));
    }
    tx.commit().await?;
    if let Err(err) = provision::converge(state, id).await {
        tracing::warn!(target: "api::databases", service_id = id, error = format!("{err:#}"), "database not converged at once; the provisioner retries");
    }
    let database = one(state, user, id).await?;
    // The row's own host key (`host:port` of a DATABASE_HOSTS entry), not a match on the address
    // shown, which two entries may share.
    let key = sqlx::query_scalar!(
        "select host from managed_databases where chain_id = $1 and service_id = $2",
        chain_id,
        id
    )
    .fetch_one(&state.db)
    .await?;
    let host = state
        .hosts
        .get(&key)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("database {id}'s host is gone")))?;
    let connection_url =
        host.url(&database.database, Some(&password), host.tls().await.unwrap_or(false));
    Ok(Credentials { database, password: password.expose_secret().to_owned(), connection_url })
}

/// One of the caller's databases.
#[utoipa::path(get, path = "/database/{id}", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database (its service id)")),
    responses((status = 200, body = Database), crate::http::openapi::NotFound))]
pub async fn show(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Database>> {
    Ok(Json(one(&state, &user, id).await?))
}

/// Cancels the database's service on-chain: its connections end at once, a final backup is
/// taken, and it is dropped after the grace period (`drops_at`); the final backup stays
/// listed and restorable into another database.
#[utoipa::path(delete, path = "/database/{id}", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database (its service id)")),
    responses((status = 200, body = TxOutcome, description = "Cancelled on-chain (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::NotFound,
        crate::http::openapi::Conflict))]
pub async fn delete(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<TxOutcome> {
    let database = one(&state, &user, id).await?;
    if database.state == "cancelled" {
        return Err(ApiError::Conflict(format!("database {id} is cancelled already")));
    }
    let operator = state.operator()?;
    let registry = ServiceRegistry::new(
        state.deployment.contracts.service_registry,
        operator.provider().clone(),
    );
    let outcome = operator.send_for(user.address, registry.cancel(U256::from(id as u64))).await?;
    state.work.notify_one();
    Ok(outcome)
}

/// Pauses the database's service: connections are refused and open ones ended; paused time is
/// not charged.
#[utoipa::path(post, path = "/database/{id}/pause", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database (its service id)")),
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        crate::http::openapi::NotFound,
        (status = 409, description = "Not active")))]
pub async fn pause(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<TxOutcome> {
    change(&state, &user, id, Some("database"), false).await
}

/// Resumes the database's service (needs an hour of credit): connections are taken again.
#[utoipa::path(post, path = "/database/{id}/resume", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database (its service id)")),
    responses((status = 200, body = TxOutcome, description = "Mined (or reverted: `failed`)"),
        (status = 202, body = TxOutcome, description = "Sent or queued, not mined yet: `Location` follows it"),
        (status = 402, description = "Not enough credit for one hour"),
        crate::http::openapi::NotFound,
        crate::http::openapi::Conflict))]
pub async fn resume(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<TxOutcome> {
    change(&state, &user, id, Some("database"), true).await
}

/// Gives the database's role a new password (the old one stops working): the answer carries it,
/// this once.
#[utoipa::path(post, path = "/database/{id}/credentials", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database (its service id)")),
    responses((status = 200, body = Credentials), crate::http::openapi::NotFound))]
pub async fn rotate(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Credentials>> {
    let database = one(&state, &user, id).await?;
    if database.status == "dropped" {
        return Err(ApiError::NotFound(format!("database {id} was dropped")));
    }
    if database.status == "provisioning" && database.ready_at.is_none() {
        // A relayed service the provisioner has not adopted yet: adopt it here.
        provision::ensure_row(&state, id, user.address.as_slice(), database.state == "cancelled")
            .await?;
    }
    Ok(Json(rotate_password(&state, &user, id).await?))
}
