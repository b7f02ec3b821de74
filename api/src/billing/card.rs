//! Buying credits by card through Paystack: `POST /billing/recharge` initializes a payment,
//! Paystack's signed `charge.success` webhook queues it, and a worker confirms it with
//! `/transaction/verify`, checks amount and currency against the initialization, and credits the
//! wallet on-chain (`creditFiat`, at most once per reference on-chain too). A payment is
//! `credited` once the indexer has the credit.

use alloy::primitives::{U256, keccak256};
use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::{
    billing::BillingState,
    http::{
        auth::{AdminUser, AuthUser},
        error::{ApiError, ApiResult},
        format::{show_address, show_hex},
    },
    wakes::Wake,
};

/// A recharge: by card (Paystack) or with a token the ledger accepts.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RechargeRequest {
    /// `card` or `crypto`.
    pub method: String,
    /// Card: NGN, GHS, KES, ZAR or USD.
    pub currency: Option<String>,
    /// Card: the currency's subunit (kobo, pesewas, cents). Crypto: token base units. A number
    /// or a decimal string.
    #[serde(deserialize_with = "amount")]
    #[schema(value_type = String)]
    pub amount: U256,
    /// Card: the payer's email for Paystack's receipt (optional).
    pub email: Option<String>,
    /// Crypto: the token to pay with.
    #[schema(value_type = Option<String>)]
    pub token: Option<alloy::primitives::Address>,
}

/// An amount given as a JSON number or a decimal string.
fn amount<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<U256, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(U256::from)
            .ok_or_else(|| serde::de::Error::custom("amount must be a non-negative integer")),
        serde_json::Value::String(s) => U256::from_str_radix(&s, 10)
            .map_err(|_| serde::de::Error::custom("amount must be a decimal integer")),
        _ => Err(serde::de::Error::custom("amount must be a number or a decimal string")),
    }
}

/// What a recharge answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RechargeAnswer {
    /// A card payment to complete at its `authorization_url`.
    Card(Payment),
    /// What the wallet signs to pay with a token.
    Crypto(super::token::CryptoRecharge),
}

/// A card payment and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Payment {
    /// The platform's reference.
    pub reference: String,
    /// `initialized`, `paid`, `crediting`, `credited`, `failed` or `flagged`.
    pub status: String,
    /// Why it failed or was flagged.
    pub reason: Option<String>,
    /// The currency.
    pub currency: String,
    /// The amount in the currency's subunit.
    pub amount: i64,
    /// Credit units it buys (decimal string).
    pub credits: String,
    /// Where to pay.
    pub authorization_url: String,
    /// The on-chain credit, once sent.
    pub tx_hash: Option<String>,
    /// The wallet credited.
    pub account: String,
    /// When it was initialized.
    pub created_at: DateTime<Utc>,
}

/// Smallest and largest card payments, in subunits.
const MIN_AMOUNT: u64 = 100;
const MAX_AMOUNT: u64 = 10_000_000_000;

/// Buys credits. `card`: starts a payment with Paystack (amount in the currency's subunit) and
/// answers where to pay; the credits it buys are fixed now, at the admin-set rate. `crypto`:
/// answers what the wallet signs (approve + recharge, or a permit for a gasless recharge).
#[utoipa::path(post, path = "/billing/recharge", tag = "billing", security(("bearer" = [])),
    request_body = RechargeRequest,
    responses((status = 201, description = "A card payment", body = Payment),
        (status = 200, description = "What to sign for a token recharge", body = super::token::CryptoRecharge),
        (status = 422, description = "No rate for the currency"),
        (status = 503, description = "Card payments are not configured or Paystack is down")))]
pub async fn recharge(
    State(state): State<BillingState>,
    user: AuthUser,
    Json(request): Json<RechargeRequest>,
) -> ApiResult<(StatusCode, Json<RechargeAnswer>)> {
    match request.method.as_str() {
        "card" => {}
        "crypto" => {
            let token = request
                .token
                .ok_or_else(|| ApiError::BadRequest("crypto recharges name a token".into()))?;
            let answer = super::token::prepare(&state, user.address, token, request.amount).await?;
            return Ok((StatusCode::OK, Json(RechargeAnswer::Crypto(answer))));
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "method must be card or crypto, got {other:?}"
            )));
        }
    }
    let currency = request
        .currency
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("card recharges name a currency".into()))?
        .to_ascii_uppercase();
    let amount: u64 = request.amount.try_into().map_err(|_| {
        ApiError::BadRequest(format!(
            "amount must be between {MIN_AMOUNT} and {MAX_AMOUNT} subunits"
        ))
    })?;
    if !state.config.card_currencies.iter().any(|c| c.eq_ignore_ascii_case(&currency)) {
        return Err(ApiError::BadRequest(format!(
            "currency must be one of {}, got {:?}",
            state.config.card_currencies.join(", "),
            currency
        )));
    }
    if !(MIN_AMOUNT..=MAX_AMOUNT).contains(&amount) {
        return Err(ApiError::BadRequest(format!(
            "amount must be between {MIN_AMOUNT} and {MAX_AMOUNT} subunits"
        )));
    }
    let provider = state
        .payments
        .as_ref()
        .ok_or_else(|| ApiError::NotConfigured("card payments are not configured"))?;
    let rate = sqlx::query_scalar!(
        "select credits_per_subunit::text from fiat_rates where currency = $1",
        currency
    )
    .fetch_optional(&state.db)
    .await?
    .flatten()
    .ok_or_else(|| ApiError::Unprocessable {
        slug: "no-fiat-rate",
        detail: format!("no credit rate is set for {currency}"),
    })?;
    let rate: U256 =
        rate.parse().map_err(|_| ApiError::Internal(anyhow::anyhow!("corrupt rate {rate}")))?;
    let credits = rate.saturating_mul(U256::from(amount));
    let reference = format!("ds_{}", alloy::hex::encode(crate::random::reference()));
    let email = request.email.filter(|e| e.contains('@') && e.len() <= 254).unwrap_or_else(|| {
        format!("{}@wallet.decentraspace.io", user.address.to_string().to_lowercase())
    });
    let initialized = provider
        .initialize(&decentraspace_clients::paystack::Initialize {
            email,
            amount,
            currency: currency.clone(),
            reference: reference.clone(),
            metadata: serde_json::json!({ "wallet": user.address.to_checksum(None), "credits": credits.to_string() }),
        })
        .await
        .map_err(|err| match err {
            decentraspace_clients::paystack::PaystackError::Unavailable(cause) => {
                tracing::warn!(target: "api::payments", %cause, "paystack unavailable at initialization");
                ApiError::Unavailable("Paystack is unavailable; retry shortly".into())
            }
            decentraspace_clients::paystack::PaystackError::Refused(message) | decentraspace_clients::paystack::PaystackError::Unknown(message) => {
                // Paystack's message describes our setup (a key, a currency not enabled): logged.
                tracing::error!(target: "api::payments", %message, "paystack refused an initialization");
                ApiError::Unavailable("card payments are unavailable right now; retry later".into())
            }
        })?;
    sqlx::query!(
        r#"insert into card_payments
               (reference, chain_id, account, currency, amount, credits, status, authorization_url, next_attempt_at)
           values ($1, $2, $3, $4, $5, $6::text::numeric, 'initialized', $7, now() + interval '5 minutes')"#,
        reference,
        state.chain_id() as i64,
        user.address.as_slice(),
        currency,
        amount as i64,
        credits.to_string(),
        initialized.authorization_url
    )
    .execute(&state.db)
    .await?;
    let payment = load(&state, Some(user.address), &reference).await?;
    Ok((StatusCode::CREATED, Json(RechargeAnswer::Card(payment))))
}

async fn load(
    state: &BillingState,
    account: Option<alloy::primitives::Address>,
    reference: &str,
) -> ApiResult<Payment> {
    let row = sqlx::query!(
        r#"select reference, status, reason, currency, amount, credits::text as "credits!", authorization_url,
                  tx_hash, account, created_at
           from card_payments where reference = $1 and ($2::bytea is null or account = $2)"#,
        reference,
        account.as_ref().map(|a| a.as_slice())
    )
    .fetch_optional(&state.db)
    .await?
    // Another wallet's payment is as absent as a missing one.
    .ok_or_else(|| ApiError::NotFound(format!("no payment {reference}")))?;
    Ok(Payment {
        reference: row.reference,
        status: row.status,
        reason: row.reason,
        currency: row.currency,
        amount: row.amount,
        credits: row.credits,
        authorization_url: row.authorization_url,
        tx_hash: row.tx_hash.as_deref().map(show_hex),
        account: show_address(&row.account),
        created_at: row.created_at,
    })
}

/// A card payment of the signed-in wallet, end to end.
#[utoipa::path(get, path = "/billing/recharge/{reference}", tag = "billing", security(("bearer" = [])),
    params(("reference" = String, Path, description = "The reference the recharge answered")),
    responses((status = 200, body = Payment), crate::http::openapi::NotFound))]
pub async fn recharge_status(
    State(state): State<BillingState>,
    user: AuthUser,
    Path(reference): Path<String>,
) -> ApiResult<Json<Payment>> {
    load(&state, Some(user.address), &reference).await.map(Json)
}

#[derive(Debug, Deserialize)]
struct WebhookEvent {
    event: String,
    data: WebhookData,
}

#[derive(Debug, Deserialize)]
struct WebhookData {
    reference: Option<String>,
}

/// What the webhook did.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    /// Whether this delivery was seen before (then nothing is done again).
    pub duplicate: bool,
    /// Whether it queued a payment for confirmation.
    pub queued: bool,
}

/// Paystack's webhook. The `x-paystack-signature` header must be the hex HMAC-SHA512 of the raw
/// body with the secret key. Answered at once: a `charge.success` only queues the payment, which
/// a worker confirms with Paystack before anything is credited.
#[utoipa::path(post, path = "/billing/paystack/webhook", tag = "billing",
    request_body(content = String, content_type = "application/json", description = "Paystack's event, as Paystack sends it"),
    params(("x-paystack-signature" = String, Header, description = "hex HMAC-SHA512 of the body with the secret key")),
    responses((status = 200, body = WebhookAck),
        (status = 401, description = "The signature does not match the body"),
        crate::http::openapi::Unavailable))]
pub async fn webhook(
    State(state): State<BillingState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAck>> {
    let provider = state
        .payments
        .as_ref()
        .ok_or_else(|| ApiError::NotConfigured("card payments are not configured"))?;
    let signature =
        headers.get("x-paystack-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !provider.signature_valid(&body, signature) {
        return Err(ApiError::InvalidSignature(
            "the x-paystack-signature does not match the body".into(),
        ));
    }
    // A signed event this code does not read is acknowledged (Paystack would retry it forever).
    let Ok(event) = serde_json::from_slice::<WebhookEvent>(&body) else {
        tracing::warn!(target: "api::payments", "signed Paystack event not understood; acknowledged");
        return Ok(Json(WebhookAck { duplicate: false, queued: false }));
    };
    let body_hash: [u8; 32] = Sha256::digest(&body).into();
    let mut tx = state.db.begin().await?;
    let first = sqlx::query!(
        r#"insert into paystack_deliveries (body_hash, event, reference) values ($1, $2, $3)
           on conflict (body_hash) do nothing"#,
        body_hash.as_slice(),
        event.event,
        event.data.reference
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let mut queued = false;
    if first
        && event.event == "charge.success"
        && let Some(reference) = &event.data.reference
    {
        // Nothing in the payload is trusted: the worker asks Paystack itself.
        queued = sqlx::query!(
            r#"update card_payments set status = 'paid', next_attempt_at = now(), updated_at = now()
               where reference = $1 and status = 'initialized'"#,
            reference
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
    }
    if queued {
        // Every replica's worker: the payment is credited at once, whichever replica runs it.
        state.wakes.after_commit(&mut tx, Wake::CardPayments).await?;
    }
    tx.commit().await?;
    Ok(Json(WebhookAck { duplicate: !first, queued }))
}

/// An admin's rate.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FiatRate {
    /// The currency.
    pub currency: String,
    /// Credit units per subunit (decimal string; credits have 6 decimals).
    pub credits_per_subunit: String,
}

/// Sets how many credit units one subunit of a currency buys (audited).
#[utoipa::path(put, path = "/billing/fiat-rates", tag = "admin", security(("bearer" = [])),
    request_body = FiatRate,
    responses((status = 204),
        crate::http::openapi::Forbidden))]
pub async fn set_fiat_rate(
    State(state): State<BillingState>,
    admin: AdminUser,
    Json(rate): Json<FiatRate>,
) -> ApiResult<StatusCode> {
    let currency = rate.currency.to_ascii_uppercase();
    if !state.config.card_currencies.iter().any(|c| c.eq_ignore_ascii_case(&currency)) {
        return Err(ApiError::BadRequest(format!(
            "currency must be one of {}",
            state.config.card_currencies.join(", ")
        )));
    }
    let value: U256 =
        rate.credits_per_subunit.parse().ok().filter(|v: &U256| !v.is_zero()).ok_or_else(|| {
            ApiError::BadRequest("credits_per_subunit must be a positive integer".into())
        })?;
    let mut tx = state.db.begin().await?;
    sqlx::query!(
        r#"insert into fiat_rates (currency, credits_per_subunit, updated_by) values ($1, $2::text::numeric, $3)
           on conflict (currency) do update
           set credits_per_subunit = excluded.credits_per_subunit, updated_by = excluded.updated_by, updated_at = now()"#,
        currency,
        value.to_string(),
        admin.address.as_slice()
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into fiat_rate_changes (currency, credits_per_subunit, changed_by) values ($1, $2::text::numeric, $3)",
        currency,
        value.to_string(),
        admin.address.as_slice()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(target: "api::admin", admin = %admin.address, currency, rate = %value, "fiat rate set");
    Ok(StatusCode::NO_CONTENT)
}

/// The on-chain payment reference of a Paystack reference.
pub fn payment_ref(reference: &str) -> alloy::primitives::B256 {
    keccak256(reference.as_bytes())
}
