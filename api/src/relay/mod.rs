//! `/blockchain/credit`: relays transactions users signed. Either a raw transaction the wallet
//! signed (broadcast as is, its hash recorded first), or an EIP-712 forward request a platform
//! relayer key submits through the forwarder, paying the gas: written to the chain outbox with
//! its record, and sent by that key's one sender across replicas. Both are checked before they reach the chain (chain, target,
//! function, signer), recorded with their status, idempotent per `Idempotency-Key`, and limited
//! per account.

pub mod policy;
pub mod tracker;

use std::sync::Arc;

use alloy::{
    consensus::{Transaction, TxEnvelope, transaction::SignerRecoverable},
    eips::{BlockId, Decodable2718},
    network::TransactionBuilder,
    primitives::{Address, B256, Bytes, U256, aliases::U48},
    providers::Provider,
    rpc::types::TransactionRequest,
};
use axum::{
    Json,
    extract::{FromRef, Path, State},
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use decentraspace_abi::{ERC2771Forwarder, Forwarder};
use decentraspace_db::locks::{Lock, lock_in};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    chain::outbox::{Purpose, Until, Write},
    http::{
        auth::{Auth, AuthUser},
        error::{ApiError, ApiResult},
        format::{show_address, show_hex},
    },
};

/// Gas the forwarder itself needs on top of the request's (signature check, nonce, call).
const FORWARDER_OVERHEAD_GAS: u64 = 80_000;
/// How far ahead a forward request's deadline must be when it is relayed.
const MIN_DEADLINE_MARGIN_SECS: u64 = 60;
/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// What the relay uses: the platform and the relayer keys that pay relayed requests' gas.
#[derive(Debug, Clone)]
pub struct RelayState {
    /// The shared state.
    pub platform: crate::platform::Platform,
    /// The relayer keys' addresses: each account's forward requests go through one of them
    /// (always the same, so they are mined in the order they were relayed); empty without a key.
    pub relayers: Arc<Vec<Address>>,
}

/// How long a relay request waits for its forward request to be on the network before it
/// answers with the record as it stands (`received`, followed at `/blockchain/credit/{id}`).
const SENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl RelayState {
    /// The relayer key that sends `account`'s forward requests.
    fn relayer_of(&self, account: Address) -> Option<Address> {
        let pool = self.relayers.as_slice();
        if pool.is_empty() {
            return None;
        }
        // FNV-1a over the address: stable across replicas and restarts.
        let hash = account.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        Some(pool[(hash % pool.len() as u64) as usize])
    }
}
crate::platform::feature_state!(RelayState);

/// The relay's job: the tracker that follows relayed transactions to their end.
pub fn jobs(state: &RelayState) -> Vec<crate::jobs::Job> {
    vec![tracker::job(state)]
}

/// The relay routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    RelayState: FromRef<S>,
    Auth: FromRef<S>,
{
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
        (status = 402, description = "Opening or resuming a priced service without an hour of its price in the balance: `shortfall` says how much"),
        (status = 403, description = "Signed by another wallet, or acting on what another wallet owns"),
        (status = 422, description = "Not relayable: wrong chain, foreign contract, function not allowed, invalid or reverting request"),
    ))]
pub async fn relay(
    State(state): State<RelayState>,
    user: AuthUser,
    headers: HeaderMap,
    Json(request): Json<RelayRequest>,
) -> ApiResult<(StatusCode, Json<RelayedTx>)> {
    let key = idempotency_key(&headers)?;
    match (request.raw_transaction, request.forward_request) {
        (Some(raw), None) => relay_raw(&state, user.address, raw, key).await,
        (None, Some(forward)) => relay_forward(&state, user.address, forward, key).await,
        _ => Err(ApiError::BadRequest(
            "send exactly one of raw_transaction and forward_request".into(),
        )),
    }
    .map(|(status, tx)| (status, Json(tx)))
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
    state: &RelayState,
    account: Address,
    raw: Bytes,
    key: Option<String>,
) -> ApiResult<(StatusCode, RelayedTx)> {
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
    let request_hash = alloy::primitives::keccak256(&raw);
    let mut conn = state.db.acquire().await?;
    if let Some(existing) =
        already_relayed(&mut conn, state, account, key.as_deref(), request_hash).await?
    {
        return Ok((StatusCode::OK, existing));
    }
    drop(conn);
    let tokens = accepted_tokens(state).await?;
    let call =
        policy::check_raw_call(&state.deployment.contracts, &tokens, target, envelope.input())?;
    policy::check_credit(state, account, &call, envelope.input()).await?;
    // The call is run as the wallet would send it before anything is broadcast: a call that
    // would revert costs the wallet gas for nothing, and is refused as a forward request is.
    if let Err(refusal) = simulate_raw(state, signer, target, &envelope).await {
        // A copy of this transaction sent meanwhile may be why it no longer runs: answer its
        // record.
        let mut conn = state.db.acquire().await?;
        if let Some(existing) =
            already_relayed(&mut conn, state, account, key.as_deref(), request_hash).await?
        {
            return Ok((StatusCode::OK, existing));
        }
        return Err(refusal);
    }
    let tx_hash = *envelope.tx_hash();
    let send = Sends::Raw { tx_hash, nonce: envelope.nonce(), raw: raw.clone() };
    let id = match reserve(state, account, "raw", &call, key, request_hash, send).await? {
        Reserved::New(id) => id,
        Reserved::Existing(tx) => return Ok((StatusCode::OK, tx)),
    };
    // Sent and recorded in a task of its own: a client that hangs up (or a request timeout)
    // must not leave a transaction sent but unrecorded. Its hash and bytes are recorded already,
    // so the tracker finishes the job if this replica stops here.
    let task_state = state.clone();
    let sent = tokio::spawn(async move {
        match task_state.chain.send_raw_transaction(&raw).await {
            Ok(_) => {
                sqlx::query!(
                    r#"update relayed_transactions set status = 'pending', updated_at = now()
                       where id = $1 and status = 'received'"#,
                    id,
                )
                .execute(&task_state.db)
                .await?;
                Ok(())
            }
            Err(err) => {
                let message =
                    err.as_error_resp().map_or_else(|| err.to_string(), |e| e.message.to_string());
                Err(refused(&task_state, id, &message, err.is_transport_error()).await)
            }
        }
    })
    .await
    .map_err(|err| ApiError::Internal(anyhow::anyhow!("relay task: {err}")))?;
    sent?;
    Ok((StatusCode::ACCEPTED, load(state, account, id).await?))
}

async fn relay_forward(
    state: &RelayState,
    account: Address,
    request: ForwardRequestBody,
    key: Option<String>,
) -> ApiResult<(StatusCode, RelayedTx)> {
    let relayer = state.relayer_of(account).ok_or_else(|| {
        ApiError::NotConfigured("no relayer is configured; send a raw transaction instead")
    })?;
    if request.from != account {
        return Err(ApiError::Forbidden(format!(
            "the forward request is from {}, not from the signed-in wallet",
            request.from
        )));
    }
    // What was signed, as sent: the same signed request is relayed once.
    let request_hash = alloy::primitives::keccak256(alloy::sol_types::SolValue::abi_encode(&(
        request.from,
        request.to,
        request.value,
        U256::from(request.gas),
        U256::from(request.deadline),
        request.data.clone(),
        request.signature.clone(),
    )));
    let mut conn = state.db.acquire().await?;
    if let Some(existing) =
        already_relayed(&mut conn, state, account, key.as_deref(), request_hash).await?
    {
        return Ok((StatusCode::OK, existing));
    }
    drop(conn);
    let contracts = &state.deployment.contracts;
    let call = policy::check_platform_call(contracts, request.to, &request.data)?;
    policy::check_credit(state, request.from, &call, &request.data).await?;
    let invalid =
        |detail: String| ApiError::Unprocessable { slug: "relay-invalid-request", detail };
    if !request.value.is_zero() {
        return Err(invalid("value must be 0: the relayer sends no ether".into()));
    }
    if request.gas == 0 || request.gas > state.config.relay_max_gas {
        return Err(invalid(format!("gas must be between 1 and {}", state.config.relay_max_gas)));
    }
    // A request that may expire before it is mined would cost the relayer a reverted transaction.
    let earliest = Utc::now().timestamp() as u64 + MIN_DEADLINE_MARGIN_SECS;
    if request.deadline < earliest || request.deadline >= 1 << 48 {
        return Err(invalid(format!(
            "the deadline must be at least {MIN_DEADLINE_MARGIN_SECS} s ahead (and below 2^48)"
        )));
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
    // One simulation of the whole execution as the relayer would send it checks the signature,
    // the nonce, the deadline and the call. Only when it fails do two more calls say why.
    let execution = forwarder.execute(data.clone()).from(relayer).call().await;
    if let Err(err) = execution {
        if err.as_revert_data().is_none() {
            return Err(crate::http::error::chain_unavailable("simulate the request", err));
        }
        // A copy of this request sent meanwhile has used its nonce: answer that copy's record.
        let mut conn = state.db.acquire().await?;
        if let Some(existing) =
            already_relayed(&mut conn, state, account, key.as_deref(), request_hash).await?
        {
            return Ok((StatusCode::OK, existing));
        }
        return Err(why_refused(state, &forwarder, &data, &request).await);
    }
    let calldata = forwarder.execute(data).calldata().clone();
    let gas_limit = request.gas + request.gas / 63 + FORWARDER_OVERHEAD_GAS;
    let write = Write {
        purpose: Purpose::Relay,
        // Set to `relay:<record id>` when the record is written.
        reference: String::new(),
        account: Some(account),
        to: contracts.forwarder,
        input: calldata,
        value: U256::ZERO,
        gas_limit,
    };
    let send = Sends::Outbox { signer: relayer, write };
    let id = match reserve(state, account, "forward", &call, key, request_hash, send).await? {
        Reserved::New(id) => id,
        Reserved::Existing(tx) => return Ok((StatusCode::OK, tx)),
    };
    // The record and its outbox row are committed: whatever happens to this replica now, the
    // relayer key's sender sends it. The answer waits a little for its hash.
    let outbox_id = sqlx::query_scalar!(
        r#"select outbox_id as "outbox_id!" from relayed_transactions where id = $1"#,
        id
    )
    .fetch_one(&state.db)
    .await?;
    state.outbox.wait(outbox_id, Until::Sent, SENT_WAIT).await?;
    Ok((StatusCode::ACCEPTED, load(state, account, id).await?))
}

/// Why a forward request the forwarder refused would fail: its signature, nonce or deadline, or
/// the call itself (run as the forwarder runs it, ERC-2771 sender appended, to get its error).
async fn why_refused(
    state: &RelayState,
    forwarder: &Forwarder::ForwarderInstance<&alloy::providers::DynProvider>,
    data: &ERC2771Forwarder::ForwardRequestData,
    request: &ForwardRequestBody,
) -> ApiError {
    match forwarder.verify(data.clone()).call().await {
        Ok(false) => {
            return ApiError::Unprocessable {
                slug: "relay-invalid-request",
                detail: "the signature does not match the request, or its nonce was used".into(),
            };
        }
        Ok(true) => {}
        Err(err) => return crate::http::error::chain_unavailable("verify the request", err),
    }
    let mut input = request.data.to_vec();
    input.extend_from_slice(request.from.as_slice());
    let simulated = TransactionRequest::default()
        .with_from(state.deployment.contracts.forwarder)
        .with_to(request.to)
        .with_input(input)
        .with_gas_limit(request.gas);
    match state.chain.call(simulated).await {
        Err(err) => match err.as_error_resp().and_then(|e| e.as_revert_data()) {
            Some(data) => policy::refusal(&data),
            None => crate::http::error::chain_unavailable("simulate the call", err),
        },
        Ok(_) => ApiError::Unprocessable {
            slug: "relay-would-revert",
            detail: "the forwarder would refuse the request (out of gas for the call?)".into(),
        },
    }
}

/// Runs a raw transaction's call from its signer against the pending state (so a transaction
/// that depends on one relayed just before it, an approval then a recharge, sees it).
async fn simulate_raw(
    state: &RelayState,
    signer: Address,
    target: Address,
    envelope: &TxEnvelope,
) -> ApiResult<()> {
    let simulated = TransactionRequest::default()
        .with_from(signer)
        .with_to(target)
        .with_input(envelope.input().clone())
        .with_gas_limit(envelope.gas_limit());
    match state.chain.call(simulated).block(BlockId::pending()).await {
        Ok(_) => Ok(()),
        Err(err) => match err.as_error_resp() {
            Some(resp) => match resp.as_revert_data() {
                Some(data) => Err(policy::refusal(&data)),
                // A node error without revert data (out of gas, an invalid opcode): still a call
                // that cannot succeed as signed.
                None => Err(ApiError::Unprocessable {
                    slug: "relay-would-revert",
                    detail: format!("the call would fail: {}", resp.message),
                }),
            },
            None => Err(crate::http::error::chain_unavailable("simulate the transaction", err)),
        },
    }
}

/// Records a send the node refused, and the error to answer.
async fn refused(state: &RelayState, id: i64, message: &str, unreachable: bool) -> ApiError {
    // A transport error may name the node's URL (and its key): it is logged, never stored.
    let stored = if unreachable { "the chain node was unavailable" } else { message };
    let recorded = sqlx::query!(
        "update relayed_transactions set status = 'failed', error = $2, updated_at = now() where id = $1",
        id,
        stored
    )
    .execute(&state.db)
    .await;
    if let Err(err) = recorded {
        return err.into();
    }
    if unreachable {
        crate::http::error::chain_unavailable("send the transaction", message)
    } else {
        ApiError::Unprocessable {
            slug: "relay-rejected",
            detail: format!("the node refused the transaction: {message}"),
        }
    }
}

async fn accepted_tokens(state: &RelayState) -> ApiResult<Vec<Address>> {
    let rows = sqlx::query_scalar!(
        "select token from token_rates where chain_id = $1 and rate > 0",
        state.chain_id() as i64
    )
    .fetch_all(&state.db)
    .await?;
    Ok(rows.iter().filter_map(|t| Address::try_from(t.as_slice()).ok()).collect())
}

enum Reserved {
    New(i64),
    Existing(RelayedTx),
}

/// What a reserved record sends, written with it.
enum Sends {
    /// A raw transaction the wallet signed: its hash, nonce and bytes, recorded before it is
    /// broadcast.
    Raw { tx_hash: B256, nonce: u64, raw: Bytes },
    /// A forward request, as an outbox row of the relayer key `signer`.
    Outbox { signer: Address, write: Write },
}

/// The record of this request if it was relayed already: by its idempotency key (refused when
/// the key was used for another request) or by its content (the same signed request).
async fn already_relayed(
    conn: &mut sqlx::PgConnection,
    state: &RelayState,
    account: Address,
    key: Option<&str>,
    request_hash: B256,
) -> ApiResult<Option<RelayedTx>> {
    let found = sqlx::query!(
        r#"select id, request_hash, idempotency_key from relayed_transactions
           where chain_id = $1 and ((account = $2 and idempotency_key = $3) or (request_hash = $4 and status not in ('failed', 'replaced')))
           order by (idempotency_key = $3) desc nulls last
           limit 1"#,
        state.chain_id() as i64,
        account.as_slice(),
        key,
        request_hash.as_slice()
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(found) = found else { return Ok(None) };
    if key.is_some()
        && found.idempotency_key.as_deref() == key
        && found.request_hash != request_hash.as_slice()
    {
        return Err(ApiError::Unprocessable {
            slug: "idempotency-key-reused",
            detail: "this Idempotency-Key was used for another request; use a new key".into(),
        });
    }
    load(state, account, found.id).await.map(Some)
}

/// Records the request before sending it, atomically per account: a replayed idempotency key
/// answers its first record (or 422 when the request differs), the same signed request already
/// relayed answers its record, and the hourly quota is counted and spent together. What it
/// sends is written in the same transaction.
async fn reserve(
    state: &RelayState,
    account: Address,
    mode: &str,
    call: &policy::AllowedCall,
    key: Option<String>,
    request_hash: B256,
    send: Sends,
) -> ApiResult<Reserved> {
    let mut tx = state.db.begin().await?;
    // Serializes one account's reservations (quota and keys); other accounts are not held up.
    lock_in(&mut tx, Lock::RelayAccount { account: account.as_slice() }).await?;
    if let Some(existing) =
        already_relayed(&mut tx, state, account, key.as_deref(), request_hash).await?
    {
        tx.commit().await?;
        return Ok(Reserved::Existing(existing));
    }
    let quota = sqlx::query!(
        r#"select count(*) as "count!", extract(epoch from min(created_at) + interval '1 hour' - now())::bigint as wait
           from relayed_transactions where account = $1 and created_at > now() - interval '1 hour'"#,
        account.as_slice()
    )
    .fetch_one(&mut *tx)
    .await?;
    if quota.count >= i64::from(state.config.relay_quota_per_hour) {
        return Err(ApiError::RateLimited {
            retry_after_secs: quota.wait.unwrap_or(60).max(1) as u64,
        });
    }
    let id = sqlx::query_scalar!(
        r#"insert into relayed_transactions
               (chain_id, account, mode, target, selector, function, status, idempotency_key, request_hash)
           values ($1, $2, $3, $4, $5, $6, 'received', $7, $8)
           returning id"#,
        state.chain_id() as i64,
        account.as_slice(),
        mode,
        call.target.as_slice(),
        call.selector.as_slice(),
        call.function,
        key,
        request_hash.as_slice()
    )
    .fetch_one(&mut *tx)
    .await?;
    match send {
        Sends::Raw { tx_hash, nonce, raw } => {
            sqlx::query!(
                "update relayed_transactions set tx_hash = $2, nonce = $3, calldata = $4 where id = $1",
                id,
                tx_hash.as_slice(),
                nonce as i64,
                raw.as_ref()
            )
            .execute(&mut *tx)
            .await?;
        }
        Sends::Outbox { signer, mut write } => {
            write.reference = format!("relay:{id}");
            let outbox_id = state.outbox.enqueue(&mut tx, signer, &write).await?;
            sqlx::query!(
                "update relayed_transactions set outbox_id = $2, gas_limit = $3 where id = $1",
                id,
                outbox_id,
                write.gas_limit as i64
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Reserved::New(id))
}

async fn load(state: &RelayState, account: Address, id: i64) -> ApiResult<RelayedTx> {
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
        crate::http::openapi::NotFound))]
pub async fn status(
    State(state): State<RelayState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<RelayedTx>> {
    load(&state, user.address, id).await.map(Json)
}
