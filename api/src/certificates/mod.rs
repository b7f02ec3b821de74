//! HTTPS for every linked domain (ADR 0008 §15): certificates ordered from an ACME server (Let's
//! Encrypt in production) with HTTP-01 for the DNS names linked on-chain to a site, stored in
//! Postgres with their keys sealed so every gateway replica serves them, renewed ahead of expiry
//! and retried with back-off. The sites domain is served with the operator's wildcard.

pub mod acme;
pub mod store;

use axum::{
    Json,
    extract::{FromRef, Path, State},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::{
        auth::{Auth, AuthUser},
        error::{ApiError, ApiResult},
    },
    jobs::Job,
    platform::{Platform, feature_state},
    seal::Sealer,
};

pub use self::store::CertStore;

/// What certificates use.
#[derive(Debug, Clone)]
pub struct CertificatesState {
    /// The shared state.
    pub platform: Platform,
    /// Seals private keys and the ACME account at rest.
    pub sealer: Sealer,
    /// What this replica serves.
    pub store: CertStore,
    /// Ticks after each indexed batch: a new link is ordered at once.
    pub indexed: broadcast::Sender<()>,
}
feature_state!(CertificatesState);

/// The certificates' routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Send + Sync + Clone + 'static,
    CertificatesState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(status))
}

/// The certificates' jobs: loading what is stored (on replicas that serve HTTPS), and ordering
/// (with an ACME directory configured).
pub fn jobs(state: &CertificatesState) -> Vec<Job> {
    let mut jobs = Vec::new();
    if state.config.gateway_tls_listen.is_some() {
        jobs.push(state.store.loader(&state.db, &state.sealer, &state.wakes, state.chain_id()));
    }
    jobs.extend(acme::job(state));
    jobs
}

/// The HTTP-01 answer for `token`, while an order waits for it.
pub async fn challenge_answer(db: &sqlx::PgPool, token: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("select key_authorization from acme_challenges where token = $1", token)
        .fetch_optional(db)
        .await
}

/// Where a linked domain's certificate stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateStatus {
    /// The domain.
    pub domain: String,
    /// `issued` (served over HTTPS), `pending` (ordered on the next pass), `retrying` (the last
    /// order failed; see `last_error` and `next_attempt_at`) or `not_ordered` (no ACME server is
    /// configured, or the name is not a linked DNS name).
    pub state: String,
    /// When the served certificate ends.
    pub not_after: Option<DateTime<Utc>>,
    /// When it was issued.
    pub issued_at: Option<DateTime<Utc>>,
    /// Failed orders in a row.
    pub attempts: i32,
    /// Why the last order failed, as the certificate authority said.
    pub last_error: Option<String>,
    /// When the next order is tried.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The HTTPS certificate of a domain the caller linked.
#[utoipa::path(get, path = "/domain/certificate/{domain}", tag = "domains",
    security(("bearer" = [])),
    params(("domain" = String, Path, description = "A DNS name the caller linked to a site")),
    responses((status = 200, body = CertificateStatus), crate::http::openapi::NotFound))]
pub async fn status(
    State(state): State<CertificatesState>,
    user: AuthUser,
    Path(domain): Path<String>,
) -> ApiResult<Json<CertificateStatus>> {
    let domain = store::normal(&domain).into_owned();
    let row = sqlx::query!(
        r#"select d.method, d.service_id, c.not_after as "not_after?", c.issued_at as "issued_at?",
                  o.attempts as "attempts?", o.last_error as "last_error?",
                  o.next_attempt_at as "next_attempt_at?"
           from domains d
           left join tls_certificates c on c.domain = d.name
           left join tls_orders o on o.domain = d.name
           where d.chain_id = $1 and d.name = $2 and d.owner = $3
             and (d.expires_at is null or d.expires_at > chain_now($1))"#,
        state.chain_id() as i64,
        domain,
        user.address.as_slice()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("{domain} is not a domain of yours")))?;
    let orderable = state.config.acme_directory_url.is_some()
        && matches!(row.method.as_str(), "dns" | "purchase")
        && row.service_id.is_some();
    let live = row.not_after.is_some_and(|end| end > Utc::now());
    let state_name = if live {
        "issued"
    } else if !orderable {
        "not_ordered"
    } else if row.attempts.is_some() {
        "retrying"
    } else {
        "pending"
    };
    Ok(Json(CertificateStatus {
        domain,
        state: state_name.into(),
        not_after: row.not_after,
        issued_at: row.issued_at,
        attempts: row.attempts.unwrap_or(0),
        last_error: row.last_error,
        next_attempt_at: row.next_attempt_at,
    }))
}
