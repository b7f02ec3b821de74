//! `/blockchain/credit`: relays transactions users signed. Either a raw transaction the wallet
//! signed (broadcast as is), or an EIP-712 forward request the platform relayer submits through
//! the forwarder, paying the gas. Both are checked before they reach the chain (chain, target,
//! function, signer), recorded with their status, idempotent per `Idempotency-Key`, and limited
//! per account.

pub mod policy;
mod relayer;
pub mod tracker;

use alloy::{
    consensus::{Transaction, TxEnvelope, transaction::SignerRecoverable},
    eips::Decodable2718,
    network::TransactionBuilder,
    primitives::{Address, Bytes, U256, aliases::U48},
    providers::Provider,
    rpc::types::TransactionRequest,
};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use decentraspace_abi::{ERC2771Forwarder, Forwarder};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use relayer::Relayer;

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult, Problem},
    routes::{show_address, show_hex},
    state::AppState,
};

/// Gas the forwarder itself needs on top of the request's (signature check, nonce, call).
const FORWARDER_OVERHEAD_GAS: u64 = 80_000;
/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The relay routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(relay)).routes(routes!(status))
}

/// A forward request as the user signed it (OpenZeppelin `ERC2771Forwarder.ForwardRequestData`;
/// the nonce signed is the forwarder's `nonces(from)`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ForwardRequestBody {
    /// The signer (must be the signed-in wallet).
    #[schema(value_type = String)]
    pub from: Address,
    /// The platform contract to call.
    #[schema(value_type = String)]
    pub to: Address,
    /// Must be 0 (the relayer sends no ether).
    #[serde(default)]
    #[schema(value_type = String)]
    pub value: U256,
    /// Gas for the call.
    pub gas: u64,
    /// Unix time after which the request is void.
    pub deadline: u64,
    /// The calldata.
    #[schema(value_type = String)]
    pub data: Bytes,
    /// The EIP-712 signature.
    #[schema(value_type = String)]
    pub signature: Bytes,
}

/// One of the two relay modes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelayRequest {
    /// A signed EIP-2718 transaction (0x hex) the wallet made, sent as is.
    #[schema(value_type = Option<String>)]
    pub raw_transaction: Option<Bytes>,
    /// A signed forward request the relayer submits, paying the gas.
    pub forward_request: Option<ForwardRequestBody>,
}

/// A relayed transaction and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RelayedTx {
    /// Its id (for `GET /blockchain/credit/{id}`).
    pub id: i64,
    /// `raw` or `forward`.
    pub mode: String,
    /// `received`, `pending`, `mined`, `failed` or `replaced`.
    pub status: String,
    /// The contract called.
    pub target: String,
    /// The function called.
    pub function: String,
    /// The transaction hash, once sent.
    pub tx_hash: Option<String>,
    /// The block it was mined in.
    pub block_number: Option<i64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When it was received.
    pub created_at: DateTime<Utc>,
}

struct Row {
    id: i64,
    mode: String,
    status: String,
    target: Vec<u8>,
    function: String,
    tx_hash: Option<Vec<u8>>,
    block_number: Option<i64>,
    error: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<Row> for RelayedTx {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            mode: r.mode,
            status: r.status,
            target: show_address(&r.target),
            function: r.function,
            tx_hash: r.tx_hash.as_deref().map(show_hex),
            block_number: r.block_number,
            error: r.error,
            created_at: r.created_at,
        }
    }
}

/// Relays a transaction the signed-in wallet signed: a raw transaction, or a forward request the
/// platform pays the gas for. Answers 202 with the record; a repeated `Idempotency-Key` answers
/// 200 with the first record and sends nothing.
#[utoipa::path(post, path = "/blockchain/credit", tag = "blockchain", security(("bearer" = [])),
    request_body = RelayRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key answers the first result")),
    responses(
        (status = 202, body = RelayedTx), (status = 200, description = "Replayed idempotency key", body = RelayedTx),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Signed by another wallet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not relayable: wrong chain, foreign contract, function not allowed, invalid or reverting request",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn relay(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    Json(request): Json<RelayRequest>,
) -> ApiResult<(StatusCode, Json<RelayedTx>)> {
    let key = idempotency_key(&headers)?;
    if let Some(key) = &key
        && let Some(existing) = find_by_key(&state, user.address, key).await?
    {
        return Ok((StatusCode::OK, Json(existing)));
    }
    match (request.raw_transaction, request.forward_request) {
        (Some(raw), None) => relay_raw(&state, user.address, raw, key).await,
        (None, Some(forward)) => relay_forward(&state, user.address, forward, key).await,
        _ => Err(ApiError::BadRequest(
            "send exactly one of raw_transaction and forward_request".into(),
        )),
    }
    .map(|tx| (StatusCode::ACCEPTED, Json(tx)))
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

async fn relay_raw(
    state: &AppState,
    account: Address,
    raw: Bytes,
    key: Option<String>,
) -> ApiResult<RelayedTx> {
    let envelope = TxEnvelope::decode_2718(&mut raw.as_ref()).map_err(|_| {
        ApiError::BadRequest("raw_transaction is not a signed EIP-2718 transaction".into())
    })?;
    let signer = envelope
        .recover_signer()
        .map_err(|_| ApiError::BadRequest("raw_transaction's signature does not recover".into()))?;
    if envelope.chain_id() != Some(state.chain_id()) {
        return Err(ApiError::Unprocessable {
            slug: "relay-wrong-chain",
            detail: format!(
                "the transaction is for chain {:?}; the platform runs on chain {}",
                envelope.chain_id(),
                state.chain_id()
            ),
        });
    }
    if signer != account {
        return Err(ApiError::Forbidden(format!(
            "the transaction is signed by {signer}, not by the signed-in wallet"
        )));
    }
    let target = envelope.to().ok_or_else(|| ApiError::Unprocessable {
        slug: "relay-call-not-allowed",
        detail: "contract creations are not relayed".into(),
    })?;
    if !envelope.value().is_zero() {
        return Err(ApiError::Unprocessable {
            slug: "relay-call-not-allowed",
            detail: "transactions carrying ether are not relayed".into(),
        });
    }
    let tokens = accepted_tokens(state).await?;
    let call =
        policy::check_raw_call(&state.deployment.contracts, &tokens, target, envelope.input())?;
    check_quota(state, account).await?;
    let id = match reserve(state, account, "raw", &call, key).await? {
        Reserved::New(id) => id,
        Reserved::Existing(tx) => return Ok(tx),
    };
    let tx_hash = *envelope.tx_hash();
    match state.chain.send_raw_transaction(&raw).await {
        Ok(_) => {
            sqlx::query!(
                r#"update relayed_transactions set status = 'pending', tx_hash = $2, nonce = $3, updated_at = now()
                   where id = $1"#,
                id,
                tx_hash.as_slice(),
                envelope.nonce() as i64
            )
            .execute(&state.db)
            .await?;
        }
        Err(err) => {
            return Err(refused(state, id, &err.to_string(), err.is_transport_error()).await);
        }
    }
    load(state, account, id).await
}

async fn relay_forward(
    state: &AppState,
    account: Address,
    request: ForwardRequestBody,
    key: Option<String>,
) -> ApiResult<RelayedTx> {
    let relayer = state.relayer.as_ref().ok_or_else(|| {
        ApiError::Unavailable("no relayer is configured; send a raw transaction instead".into())
    })?;
    if request.from != account {
        return Err(ApiError::Forbidden(format!(
            "the forward request is from {}, not from the signed-in wallet",
            request.from
        )));
    }
    let contracts = &state.deployment.contracts;
    let call = policy::check_platform_call(contracts, request.to, &request.data)?;
    let invalid =
        |detail: String| ApiError::Unprocessable { slug: "relay-invalid-request", detail };
    if !request.value.is_zero() {
        return Err(invalid("value must be 0: the relayer sends no ether".into()));
    }
    if request.gas == 0 || request.gas > state.config.relay_max_gas {
        return Err(invalid(format!("gas must be between 1 and {}", state.config.relay_max_gas)));
    }
    if request.deadline <= Utc::now().timestamp() as u64 || request.deadline >= 1 << 48 {
        return Err(invalid("the deadline has passed (or is beyond 2^48)".into()));
    }
    let data = ERC2771Forwarder::ForwardRequestData {
        from: request.from,
        to: request.to,
        value: U256::ZERO,
        gas: U256::from(request.gas),
        deadline: U48::from(request.deadline),
        data: request.data.clone(),
        signature: request.signature.clone(),
    };
    let forwarder = Forwarder::new(contracts.forwarder, &state.chain);
    let valid = forwarder
        .verify(data.clone())
        .call()
        .await
        .map_err(|err| ApiError::Unavailable(format!("cannot reach the chain: {err}")))?;
    if !valid {
        return Err(invalid(
            "the signature does not match the request, or its nonce was used".into(),
        ));
    }
    // Run the call as the forwarder would (ERC-2771: the sender appended), to refuse what would
    // revert before paying gas for it.
    let mut input = request.data.to_vec();
    input.extend_from_slice(request.from.as_slice());
    let simulated = TransactionRequest::default()
        .with_from(contracts.forwarder)
        .with_to(request.to)
        .with_input(input)
        .with_gas_limit(request.gas);
    if let Err(err) = state.chain.call(simulated).await {
        return Err(match err.as_error_resp().and_then(|e| e.as_revert_data()) {
            Some(data) => ApiError::Unprocessable {
                slug: "relay-would-revert",
                detail: format!("the call would revert: {}", policy::revert_reason(&data)),
            },
            None => ApiError::Unavailable(format!("cannot simulate the call: {err}")),
        });
    }
    check_quota(state, account).await?;
    let id = match reserve(state, account, "forward", &call, key).await? {
        Reserved::New(id) => id,
        Reserved::Existing(tx) => return Ok(tx),
    };
    let calldata = forwarder.execute(data).calldata().clone();
    let gas_limit = request.gas + request.gas / 63 + FORWARDER_OVERHEAD_GAS;
    match relayer.send(contracts.forwarder, calldata.clone(), gas_limit, None).await {
        Ok(sent) => {
            sqlx::query!(
                r#"update relayed_transactions
                   set status = 'pending', tx_hash = $2, nonce = $3, calldata = $4, gas_limit = $5, updated_at = now()
                   where id = $1"#,
                id,
                sent.tx_hash.as_slice(),
                sent.nonce as i64,
                calldata.as_ref(),
                gas_limit as i64
            )
            .execute(&state.db)
            .await?;
        }
        Err(err) => {
            let unreachable = matches!(err, relayer::SendError::Unreachable(_));
            return Err(refused(state, id, &err.to_string(), unreachable).await);
        }
    }
    load(state, account, id).await
}

/// Records a send the node refused, and the error to answer.
async fn refused(state: &AppState, id: i64, message: &str, unreachable: bool) -> ApiError {
    let recorded = sqlx::query!(
        "update relayed_transactions set status = 'failed', error = $2, updated_at = now() where id = $1",
        id,
        message
    )
    .execute(&state.db)
    .await;
    if let Err(err) = recorded {
        return err.into();
    }
    if unreachable {
        ApiError::Unavailable(format!("cannot reach the chain: {message}"))
    } else {
        ApiError::Unprocessable {
            slug: "relay-rejected",
            detail: format!("the node refused the transaction: {message}"),
        }
    }
}

async fn accepted_tokens(state: &AppState) -> ApiResult<Vec<Address>> {
    let rows = sqlx::query_scalar!(
        "select token from token_rates where chain_id = $1 and rate > 0",
        state.chain_id() as i64
    )
    .fetch_all(&state.db)
    .await?;
    Ok(rows.iter().filter_map(|t| Address::try_from(t.as_slice()).ok()).collect())
}

async fn check_quota(state: &AppState, account: Address) -> ApiResult<()> {
    let row = sqlx::query!(
        r#"select count(*) as "count!", extract(epoch from min(created_at) + interval '1 hour' - now())::bigint as wait
           from relayed_transactions where account = $1 and created_at > now() - interval '1 hour'"#,
        account.as_slice()
    )
    .fetch_one(&state.db)
    .await?;
    if row.count >= i64::from(state.config.relay_quota_per_hour) {
        return Err(ApiError::RateLimited {
            retry_after_secs: row.wait.unwrap_or(60).max(1) as u64,
        });
    }
    Ok(())
}

enum Reserved {
    New(i64),
    Existing(RelayedTx),
}

/// Records the request before sending it; with an idempotency key, the first of concurrent
/// requests wins and the others get its record.
async fn reserve(
    state: &AppState,
    account: Address,
    mode: &str,
    call: &policy::AllowedCall,
    key: Option<String>,
) -> ApiResult<Reserved> {
    let id = sqlx::query_scalar!(
        r#"insert into relayed_transactions (chain_id, account, mode, target, selector, function, status, idempotency_key)
           values ($1, $2, $3, $4, $5, $6, 'received', $7)
           on conflict (account, idempotency_key) do nothing
           returning id"#,
        state.chain_id() as i64,
        account.as_slice(),
        mode,
        call.target.as_slice(),
        call.selector.as_slice(),
        call.function,
        key
    )
    .fetch_optional(&state.db)
    .await?;
    match (id, key) {
        (Some(id), _) => Ok(Reserved::New(id)),
        (None, Some(key)) => {
            find_by_key(state, account, &key).await?.map(Reserved::Existing).ok_or_else(|| {
                ApiError::Conflict(
                    "the idempotency key is being used by a concurrent request".into(),
                )
            })
        }
        (None, None) => {
            Err(ApiError::Internal(anyhow::anyhow!("insert without a key returned no row")))
        }
    }
}

async fn find_by_key(
    state: &AppState,
    account: Address,
    key: &str,
) -> ApiResult<Option<RelayedTx>> {
    let row = sqlx::query_as!(
        Row,
        r#"select id, mode, status, target, function, tx_hash, block_number, error, created_at
           from relayed_transactions where account = $1 and idempotency_key = $2"#,
        account.as_slice(),
        key
    )
    .fetch_optional(&state.db)
    .await?;
    Ok(row.map(RelayedTx::from))
}

async fn load(state: &AppState, account: Address, id: i64) -> ApiResult<RelayedTx> {
    let row = sqlx::query_as!(
        Row,
        r#"select id, mode, status, target, function, tx_hash, block_number, error, created_at
           from relayed_transactions where id = $1 and account = $2"#,
        id,
        account.as_slice()
    )
    .fetch_optional(&state.db)
    .await?;
    // Another account's transaction is as absent as a missing one.
    row.map(RelayedTx::from)
        .ok_or_else(|| ApiError::NotFound(format!("no relayed transaction {id}")))
}

/// A relayed transaction of the signed-in wallet.
#[utoipa::path(get, path = "/blockchain/credit/{id}", tag = "blockchain", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The id the relay answered")),
    responses((status = 200, body = RelayedTx),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn status(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<RelayedTx>> {
    load(&state, user.address, id).await.map(Json)
}
