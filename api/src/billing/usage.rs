//! `/billing/deduct`: internal services (service token) and admins record usage against a
//! service; the meter charges it on-chain with its next batch. A record is idempotent per
//! service and caller reference: sending the same one again answers the first.

use alloy::primitives::U256;
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::metering::plan::recorded_usage_ref;
use crate::{
    billing::BillingState,
    http::{
        auth::ServiceOrAdmin,
        error::{ApiError, ApiResult},
        format::{show_address, show_hex},
    },
};

/// The most credit units one record may ask for (one million credits).
const MAX_CREDITS: u64 = 1_000_000_000_000;
/// The longest caller reference.
const MAX_REFERENCE: usize = 128;
/// The longest description.
const MAX_DESCRIPTION: usize = 280;

/// Usage to charge against a service.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    /// The service used.
    pub service_id: i64,
    /// Credit units to charge (decimal string, 6 decimals: "1500000" is 1.5 credits).
    #[schema(example = "1500000")]
    pub credits: String,
    /// The caller's reference for this usage (1–128 of `A-Z a-z 0-9 . _ : -`): recording the
    /// same reference again for the service answers the first record and charges nothing more.
    #[schema(example = "bandwidth:2026-11-25T10")]
    pub reference: String,
    /// What was used (at most 280 characters).
    pub description: Option<String>,
}

/// Recorded usage and where its charge stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// The usage id.
    pub id: i64,
    /// The service.
    pub service_id: i64,
    /// The service's owner, who pays.
    pub account: String,
    /// Credit units asked for.
    pub credits: String,
    /// The caller's reference.
    pub reference: String,
    /// What was used.
    pub description: Option<String>,
    /// `service`, `platform` (build minutes) or the recording admin's address.
    pub recorded_by: String,
    /// The ledger's usage reference (bytes32): the on-chain key that charges it at most once.
    pub usage_ref: String,
    /// `pending` (waits for the meter), `sending`, `sent` (mined, not indexed yet), `charged`,
    /// `deferred` (the service was paused, suspended or expired when the batch ran: charged once
    /// it runs again) or `skipped` (the service was cancelled).
    pub status: String,
    /// What the ledger took (less than asked when the balance ran out).
    pub charged_credits: Option<String>,
    /// The charging transaction.
    pub tx_hash: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

struct Row {
    id: i64,
    service_id: i64,
    account: Vec<u8>,
    credits: String,
    reference: Option<String>,
    description: Option<String>,
    recorded_by: Option<String>,
    usage_ref: Vec<u8>,
    status: String,
    charged_credits: Option<String>,
    tx_hash: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
}

impl From<Row> for Usage {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            service_id: r.service_id,
            account: show_address(&r.account),
            credits: r.credits,
            reference: r.reference.unwrap_or_default(),
            description: r.description,
            recorded_by: r.recorded_by.unwrap_or_default(),
            usage_ref: show_hex(&r.usage_ref),
            status: r.status,
            charged_credits: r.charged_credits,
            tx_hash: r.tx_hash.as_deref().map(show_hex),
            created_at: r.created_at,
        }
    }
}

fn validate(request: &UsageRequest) -> ApiResult<U256> {
    if request.service_id <= 0 {
        return Err(ApiError::BadRequest("service_id must be a positive service id".into()));
    }
    let credits = (!request.credits.is_empty()
        && request.credits.len() <= 20
        && request.credits.bytes().all(|b| b.is_ascii_digit()))
    .then(|| request.credits.parse::<U256>().ok())
    .flatten()
    .ok_or_else(|| {
        ApiError::BadRequest("credits must be a decimal string of credit units".into())
    })?;
    if credits.is_zero() || credits > U256::from(MAX_CREDITS) {
        return Err(ApiError::BadRequest(format!(
            "credits must be between 1 and {MAX_CREDITS} credit units"
        )));
    }
    let reference = &request.reference;
    if reference.is_empty()
        || reference.len() > MAX_REFERENCE
        || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(ApiError::BadRequest(format!(
            "reference must be 1 to {MAX_REFERENCE} of A-Z a-z 0-9 . _ : -"
        )));
    }
    if request.description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        return Err(ApiError::BadRequest(format!(
            "description must be at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(credits)
}

/// Records usage against a service, to be charged to its owner by the meter's next batch.
#[utoipa::path(post, path = "/billing/deduct", tag = "billing", request_body = UsageRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Recorded", body = Usage),
        (status = 200, description = "Recorded before under this reference", body = Usage),
        (status = 403, description = "Neither the service token nor an admin"),
        (status = 404, description = "No such service"),
        (status = 409, description = "The service is cancelled"),
        (status = 422, description = "The reference was used with other values")))]
pub async fn record(
    State(state): State<BillingState>,
    caller: ServiceOrAdmin,
    Json(request): Json<UsageRequest>,
) -> ApiResult<(StatusCode, Json<Usage>)> {
    let credits = validate(&request)?;
    let chain_id = state.chain_id() as i64;
    let service = sqlx::query!(
        "select owner, state from services where chain_id = $1 and service_id = $2",
        chain_id,
        request.service_id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no service {}", request.service_id)))?;
    if service.state == "cancelled" {
        return Err(ApiError::Conflict(format!(
            "service {} is cancelled and is no longer charged",
            request.service_id
        )));
    }
    let planned_block = sqlx::query_scalar!(
        "select block_number from indexer_checkpoints where chain_id = $1",
        chain_id
    )
    .fetch_optional(&state.db)
    .await?
    .unwrap_or(0);
    let usage_ref = recorded_usage_ref(state.chain_id(), request.service_id, &request.reference);
    let inserted = sqlx::query_as!(
        Row,
        r#"insert into meter_charges
               (chain_id, usage_ref, account, service_id, credits, source, recorded_by, reference,
                description, planned_block)
           values ($1, $2, $3, $4, $5::text::numeric, 'usage', $6, $7, $8, $9)
           on conflict do nothing
           returning id, service_id, account, credits::text as "credits!", reference, description,
                     recorded_by, usage_ref, status, charged_credits::text, tx_hash, created_at"#,
        chain_id,
        usage_ref.as_slice(),
        service.owner,
        request.service_id,
        credits.to_string(),
        caller.recorded_by(),
        request.reference,
        request.description,
        planned_block
    )
    .fetch_optional(&state.db)
    .await?;
    if let Some(row) = inserted {
        return Ok((StatusCode::CREATED, Json(row.into())));
    }
    let first = load(&state, usage_ref.as_slice()).await?;
    if first.credits != credits.to_string() || first.description != request.description {
        return Err(ApiError::Unprocessable {
            slug: "usage-reference-reused",
            detail: format!(
                "reference {} was recorded for service {} with other values; use a new reference",
                request.reference, request.service_id
            ),
        });
    }
    Ok((StatusCode::OK, Json(first)))
}

/// Usage the platform records itself (build minutes past the allowance), in the caller's
/// transaction: charged to `owner` by the meter's next batch like any usage of the service,
/// at most once per `reference` (recording it again changes nothing).
pub(crate) async fn record_platform_usage(
    tx: &mut sqlx::PgConnection,
    chain_id: u64,
    service_id: i64,
    owner: &[u8],
    credits: u64,
    reference: &str,
    description: &str,
) -> sqlx::Result<()> {
    let usage_ref = recorded_usage_ref(chain_id, service_id, reference);
    sqlx::query!(
        "insert into meter_charges
             (chain_id, usage_ref, account, service_id, credits, source, recorded_by, reference,
              description, planned_block)
         values ($1, $2, $3, $4, $5::text::numeric, 'usage', 'platform', $6, $7,
                 coalesce((select block_number from indexer_checkpoints where chain_id = $1), 0))
         on conflict do nothing",
        chain_id as i64,
        usage_ref.as_slice(),
        owner,
        service_id,
        credits.to_string(),
        reference,
        description
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Recorded usage and its charge's status.
#[utoipa::path(get, path = "/billing/deduct/{id}", tag = "billing", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The usage id")),
    responses(
        (status = 200, body = Usage),
        crate::http::openapi::Forbidden,
        crate::http::openapi::NotFound))]
pub async fn show(
    State(state): State<BillingState>,
    _caller: ServiceOrAdmin,
    Path(id): Path<i64>,
) -> ApiResult<Json<Usage>> {
    let row = sqlx::query_as!(
        Row,
        r#"select id, service_id, account, credits::text as "credits!", reference, description,
                  recorded_by, usage_ref, status, charged_credits::text, tx_hash, created_at
           from meter_charges where chain_id = $1 and id = $2 and source = 'usage'"#,
        state.chain_id() as i64,
        id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no usage {id}")))?;
    Ok(Json(row.into()))
}

async fn load(state: &BillingState, usage_ref: &[u8]) -> ApiResult<Usage> {
    let row = sqlx::query_as!(
        Row,
        r#"select id, service_id, account, credits::text as "credits!", reference, description,
                  recorded_by, usage_ref, status, charged_credits::text, tx_hash, created_at
           from meter_charges where chain_id = $1 and usage_ref = $2"#,
        state.chain_id() as i64,
        usage_ref
    )
    .fetch_one(&state.db)
    .await?;
    Ok(row.into())
}
