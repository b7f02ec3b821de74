//! `/blockchain/ownership` (who owns a domain, from the indexed registry or fresh from the chain),
//! `/blockchain/transactions/{id}` (where a transaction the platform sent stands) and
//! `/blockchain/listener` (chain-event webhooks: recorded, never trusted, they only wake the
//! indexer to fetch the named block now).

use alloy::primitives::{Address, keccak256};
use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::HeaderMap,
};
use chrono::{DateTime, Utc};
use decentraspace_abi::{DomainRegistry, OwnershipMethod};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::{
    chain::TxOutcome,
    http::{
        auth::{Auth, AuthUser},
        error::{ApiError, ApiResult},
        format::{parse_address, show_address, show_hex},
    },
    system::SystemState,
};

/// How far a delivery's timestamp may be from now.
const MAX_DELIVERY_AGE_SECS: i64 = 300;

/// Which domain, and optionally whose ownership to check.
#[derive(Debug, Deserialize, IntoParams)]
pub struct OwnershipQuery {
    /// The domain name.
    pub domain: String,
    /// The wallet to check (optional: the answer names the owner either way).
    pub address: Option<String>,
    /// Read the registry on-chain now instead of the indexed copy.
    #[serde(default)]
    pub fresh: bool,
}

/// Who owns a domain.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ownership {
    /// The domain name.
    pub domain: String,
    /// Its registry key (keccak256 of the name).
    pub node: String,
    /// Its owner, or null when the registry holds no record.
    pub owner: Option<String>,
    /// Whether `address` owns it (null when no address was asked about).
    pub owns: Option<bool>,
    /// How ownership was established: `purchase`, `dns`, `ens` or `handshake`.
    pub method: Option<String>,
    /// When the record lapses (null: no expiry).
    pub expires_at: Option<DateTime<Utc>>,
    /// The hosting service the domain is linked to.
    pub service_id: Option<i64>,
    /// `indexed` (the mirror) or `chain` (read now).
    pub source: &'static str,
}

/// Where a transaction the platform sent stands (a request that wrote it answers with this id
/// when it was not mined in its wait). Readable by the account it is for and by platform admins.
#[utoipa::path(get, path = "/blockchain/transactions/{id}", tag = "blockchain",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The outbox row")),
    responses((status = 200, body = TxOutcome), crate::http::openapi::NotFound))]
pub async fn transaction(
    State(state): State<SystemState>,
    State(auth): State<Auth>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<TxOutcome>> {
    let not_found = || ApiError::NotFound(format!("no transaction {id}"));
    let row = state.outbox.row(id).await?.ok_or_else(not_found)?;
    if row.account != Some(user.address) && !auth.acts_as_admin(&user).await? {
        return Err(not_found());
    }
    Ok(Json(TxOutcome::of(&row)))
}

/// Whether an address owns a domain, from the on-chain registry (indexed, or read now with
/// `fresh=true`).
#[utoipa::path(get, path = "/blockchain/ownership", tag = "blockchain", params(OwnershipQuery),
    responses((status = 200, body = Ownership),
        crate::http::openapi::Unavailable))]
pub async fn ownership(
    State(state): State<SystemState>,
    Query(q): Query<OwnershipQuery>,
) -> ApiResult<Json<Ownership>> {
    let domain = q.domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || domain.len() > 253 || !domain.contains('.') {
        return Err(ApiError::BadRequest(format!("{:?} is not a domain name", q.domain)));
    }
    let address = q.address.as_deref().map(parse_address).transpose()?;
    let node = keccak256(domain.as_bytes());
    let mut answer = if q.fresh {
        let registry =
            DomainRegistry::new(state.deployment.contracts.domain_registry, &state.chain);
        let record = registry
            .domainOf(node)
            .call()
            .await
            .map_err(|err| crate::http::error::chain_unavailable("read the registry", err))?;
        let held = !record.owner.is_zero();
        Ownership {
            domain,
            node: node.to_string(),
            owner: held.then(|| record.owner.to_checksum(None)),
            owns: None,
            method: held
                .then(|| {
                    OwnershipMethod::try_from(record.method).ok().map(|m| m.as_str().to_owned())
                })
                .flatten(),
            expires_at: (held && record.expiresAt > 0)
                .then(|| DateTime::from_timestamp(record.expiresAt as i64, 0))
                .flatten(),
            service_id: (held && !record.serviceId.is_zero())
                .then(|| i64::try_from(record.serviceId).ok())
                .flatten(),
            source: "chain",
        }
    } else {
        let row = sqlx::query!(
            "select owner, method, expires_at, service_id from domains where chain_id = $1 and node = $2",
            state.chain_id() as i64,
            node.as_slice()
        )
        .fetch_optional(&state.db)
        .await?;
        Ownership {
            domain,
            node: show_hex(node.as_slice()),
            owner: row.as_ref().map(|r| show_address(&r.owner)),
            owns: None,
            method: row.as_ref().map(|r| r.method.clone()),
            expires_at: row.as_ref().and_then(|r| r.expires_at),
            service_id: row.as_ref().and_then(|r| r.service_id),
            source: "indexed",
        }
    };
    if let Some(address) = address {
        let owner: Option<Address> = answer.owner.as_deref().and_then(|o| o.parse().ok());
        answer.owns = Some(owner == Some(address));
    }
    Ok(Json(answer))
}

/// A chain-event webhook delivery. Only the block number is used; nothing in it is trusted.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ListenerDelivery {
    /// The block the provider saw platform events in.
    pub block_number: u64,
    /// The chain (must be the platform's when given).
    pub chain_id: Option<u64>,
}

/// What the listener did with a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListenerAck {
    /// The delivery id (the `X-Delivery-Id` header, or the body's SHA-256).
    pub delivery_id: String,
    /// Whether this delivery was seen before (then nothing is done again).
    pub duplicate: bool,
    /// The block the indexer was asked to fetch.
    pub block_number: u64,
}

/// Receives a chain-event webhook: `X-Timestamp: <unix seconds>` and `X-Signature: sha256=<hex
/// HMAC-SHA256 of "<timestamp>.<raw body>" with the listener secret>`; deliveries more than five
/// minutes off are refused. The delivery is recorded once (by `X-Delivery-Id`, else the body's
/// hash) and the indexer is woken to fetch the named block now; the payload is never indexed.
#[utoipa::path(post, path = "/blockchain/listener", tag = "blockchain", request_body = ListenerDelivery,
    params(("X-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of \"<X-Timestamp>.<body>\">"),
        ("X-Timestamp" = u64, Header, description = "Unix seconds when the delivery was signed"),
        ("X-Delivery-Id" = Option<String>, Header, description = "The provider's delivery id, for de-duplication")),
    responses((status = 200, body = ListenerAck),
        (status = 401, description = "Missing or wrong signature"),
        (status = 503, description = "No listener secret configured")))]
pub async fn listener(
    State(state): State<SystemState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ListenerAck>> {
    let secret = state.config.listener_secret.as_ref().ok_or_else(|| {
        ApiError::NotConfigured("the chain-event listener is not configured (LISTENER_SECRET)")
    })?;
    let signature = headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex| alloy::hex::decode(hex).ok())
        .ok_or_else(|| {
            ApiError::InvalidSignature(
                "send X-Signature: sha256=<hex HMAC-SHA256 of the body>".into(),
            )
        })?;
    let timestamp: i64 = headers
        .get("x-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::InvalidSignature("send X-Timestamp: <unix seconds>".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("listener key: {err}")))?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(&body);
    // Constant-time comparison.
    mac.verify_slice(&signature)
        .map_err(|_| ApiError::InvalidSignature("the signature does not match the body".into()))?;
    // A captured delivery cannot be replayed later, even under another delivery id.
    if (Utc::now().timestamp() - timestamp).abs() > MAX_DELIVERY_AGE_SECS {
        return Err(ApiError::InvalidSignature(format!(
            "the delivery is more than {MAX_DELIVERY_AGE_SECS} s from now; sign it when sending"
        )));
    }

    let delivery: ListenerDelivery = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadRequest(format!("the delivery must be JSON with a block_number: {err}"))
    })?;
    if delivery.chain_id.is_some_and(|id| id != state.chain_id()) {
        return Err(ApiError::BadRequest(format!(
            "this listener serves chain {}",
            state.chain_id()
        )));
    }
    let delivery_id = match headers.get("x-delivery-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() && id.len() <= 200 => id.to_owned(),
        Some(_) => {
            return Err(ApiError::BadRequest("X-Delivery-Id must be 1 to 200 characters".into()));
        }
        None => alloy::hex::encode(Sha256::digest(&body)),
    };
    let mut tx = state.db.begin().await?;
    let recorded = sqlx::query!(
        r#"insert into listener_deliveries (delivery_id, chain_id, block_number) values ($1, $2, $3)
           on conflict (delivery_id) do nothing"#,
        delivery_id,
        state.chain_id() as i64,
        delivery.block_number as i64
    )
    .execute(&mut *tx)
    .await?;
    let duplicate = recorded.rows_affected() == 0;
    if !duplicate {
        let payload = serde_json::json!({ "chain_id": state.chain_id(), "block_number": delivery.block_number });
        sqlx::query!(
            "select pg_notify($1, $2)",
            decentraspace_db::channels::WAKE_INDEXER,
            payload.to_string()
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Json(ListenerAck { delivery_id, duplicate, block_number: delivery.block_number }))
}
