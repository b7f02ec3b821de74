//! Every error the API answers, as RFC 9457 `application/problem+json`.
//!
//! Each variant has a stable `type` URI (`https://decentraspace.io/problems/<slug>`) that clients
//! can match on, a status and a human title; `detail` says what to fix. Internal failures are
//! logged with their cause and answered without it.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use decentraspace_abi::{PlatformRevert, ServiceRegistry::ServiceRegistryErrors};

use crate::chain::ChainError;

/// Where the problem types live; `type` is this followed by the slug.
pub const PROBLEM_BASE: &str = "https://decentraspace.io/problems/";

/// Why a SIWE login was refused; each has its own problem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// The message is not EIP-4361 text, or the signature is not 65 hex bytes.
    Malformed,
    /// The message names another domain.
    WrongDomain,
    /// The message names another URI.
    WrongUri,
    /// The message is for another chain.
    WrongChain,
    /// The nonce was never issued here, already used, or expired.
    InvalidNonce,
    /// The message's expiration time has passed.
    Expired,
    /// The message's not-before time is still ahead.
    NotYetValid,
    /// The message was issued too long ago, or in the future.
    StaleIssuedAt,
    /// The signature is not the address's (neither recovered nor accepted by EIP-1271).
    BadSignature,
}

impl LoginFailure {
    fn slug(self) -> &'static str {
        match self {
            Self::Malformed => "siwe-malformed",
            Self::WrongDomain => "siwe-wrong-domain",
            Self::WrongUri => "siwe-wrong-uri",
            Self::WrongChain => "siwe-wrong-chain",
            Self::InvalidNonce => "siwe-invalid-nonce",
            Self::Expired => "siwe-expired",
            Self::NotYetValid => "siwe-not-yet-valid",
            Self::StaleIssuedAt => "siwe-stale-issued-at",
            Self::BadSignature => "siwe-bad-signature",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Malformed => "The sign-in message or signature is malformed",
            Self::WrongDomain => "The sign-in message is for another domain",
            Self::WrongUri => "The sign-in message is for another URI",
            Self::WrongChain => "The sign-in message is for another chain",
            Self::InvalidNonce => "The nonce is unknown, used or expired",
            Self::Expired => "The sign-in message has expired",
            Self::NotYetValid => "The sign-in message is not valid yet",
            Self::StaleIssuedAt => "The sign-in message was issued too long ago or in the future",
            Self::BadSignature => "The signature does not belong to the message's address",
        }
    }
}

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or fails validation.
    #[error("{0}")]
    BadRequest(String),
    /// A SIWE login was refused.
    #[error("login refused: {detail}")]
    Login {
        /// Which check failed.
        failure: LoginFailure,
        /// What exactly.
        detail: String,
    },
    /// No valid access token.
    #[error("{0}")]
    Unauthorized(String),
    /// A webhook's signature is missing or wrong.
    #[error("{0}")]
    InvalidSignature(String),
    /// A refresh token was refused (unknown, expired, revoked or reused).
    #[error("{0}")]
    InvalidRefreshToken(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// The feature is for Paid accounts.
    #[error("{0}")]
    PaidTierRequired(String),
    /// The resource does not exist (or is not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is well formed but cannot be carried out; `slug` names why.
    #[error("{detail}")]
    Unprocessable {
        /// The problem type's slug.
        slug: &'static str,
        /// What exactly.
        detail: String,
    },
    /// Not enough credit for what was asked.
    #[error("{0}")]
    InsufficientCredit(String),
    /// Not enough credit for what was asked, short by `shortfall` credit units.
    #[error("{detail}")]
    CreditShort {
        /// What the request needs and what is available.
        detail: String,
        /// The credit units missing.
        shortfall: alloy::primitives::U256,
    },
    /// An upload is larger than the account may store; `slug` names which limit.
    #[error("{detail}")]
    TooLarge {
        /// The problem type's slug.
        slug: &'static str,
        /// What exactly.
        detail: String,
    },
    /// Too many requests.
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request will be accepted again.
        retry_after_secs: u64,
    },
    /// A dependency (database, chain) is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// What the request needs is not configured on this platform (a provider, a key): not a
    /// passing outage, so retrying does not help.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// A bug or an unexpected failure; the cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::error!(target: "api::error", %err, "database unavailable");
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            _ => Self::Internal(anyhow::Error::new(err).context("database query")),
        }
    }
}

/// The edge's answer to a chain write that did not go through: a refusal of what another wallet
/// owns is 403, other refusals and reverts 409 naming the contract's error, a node that refused or
/// did not answer (or a transaction not mined in time) 503.
impl From<ChainError> for ApiError {
    fn from(err: ChainError) -> Self {
        match err {
            // The registry's own credit check (the backstop behind the API's): the shortfall.
            ChainError::Refused(PlatformRevert::ServiceRegistry(
                ServiceRegistryErrors::ServiceRegistryInsufficientCreditToOpen(e),
            )) => ApiError::CreditShort {
                detail: format!(
                    "opening this service needs a balance of one hour of its price, {}; the balance is {}: recharge first",
                    super::format::credits_of(e.required),
                    super::format::credits_of(e.balance),
                ),
                shortfall: e.required.saturating_sub(e.balance),
            },
            ChainError::Refused(revert) if revert.is_not_owner() => {
                ApiError::Forbidden(format!("the call acts on what another wallet owns: {revert}"))
            }
            ChainError::Refused(_) | ChainError::RefusedUnknown(_) | ChainError::Reverted(_) => {
                ApiError::Conflict(err.to_string())
            }
            ChainError::Rejected(_) => {
                tracing::warn!(target: "api::chain", %err, "the node refused a transaction");
                ApiError::Unavailable(
                    "the chain node refused the transaction; retry shortly".into(),
                )
            }
            ChainError::Timeout(hash) => ApiError::Unavailable(format!(
                "the transaction {hash} was not mined in time; try again"
            )),
            ChainError::Queued(id) => ApiError::Unavailable(format!(
                "the transaction is queued (GET /blockchain/transactions/{id} follows it); try again"
            )),
            ChainError::Database(err) => err.into(),
            ChainError::Unreachable(cause) => chain_unavailable("send the transaction", cause),
        }
    }
}

/// The problem+json body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type; stable, match on it.
    #[serde(rename = "type")]
    #[schema(example = "https://decentraspace.io/problems/unauthorized")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this request, and how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For `insufficient-credit`, when known: the credit units (6 decimals) to add before the
    /// request can go through.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "1500000")]
    pub shortfall: Option<String>,
}

impl ApiError {
    /// The status, problem slug and title.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "bad-request", "The request is invalid")
            }
            Self::Login { failure, .. } => {
                (StatusCode::UNAUTHORIZED, failure.slug(), failure.title())
            }
            Self::Unauthorized(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "A valid access token is required")
            }
            Self::InvalidRefreshToken(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid-refresh-token",
                "The refresh token is not valid",
            ),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            Self::PaidTierRequired(_) => {
                (StatusCode::FORBIDDEN, "paid-tier-required", "This is for Paid accounts")
            }
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::Conflict(_) => {
                (StatusCode::CONFLICT, "conflict", "The request conflicts with the current state")
            }
            Self::InvalidSignature(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid-signature",
                "The request's signature is not valid",
            ),
            Self::InsufficientCredit(_) | Self::CreditShort { .. } => {
                (StatusCode::PAYMENT_REQUIRED, "insufficient-credit", "Not enough credit")
            }
            Self::Unprocessable { slug, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, slug, "The request cannot be carried out")
            }
            Self::TooLarge { slug, .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, slug, "The upload is too large")
            }
            Self::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
            }
            Self::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "A dependency is unavailable")
            }
            Self::NotConfigured(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not-configured",
                "This feature is not configured on this platform",
            ),
            Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "An unexpected error occurred")
            }
        }
    }

    /// The problem body for this error.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let detail = match self {
            Self::Internal(_) => None,
            Self::Login { detail, .. } => Some(detail.clone()),
            other => Some(other.to_string()),
        };
        let shortfall = match self {
            Self::CreditShort { shortfall, .. } => Some(shortfall.to_string()),
            _ => None,
        };
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            shortfall,
        }
    }
}

/// Answers a problem with its status and the problem+json content type.
pub fn problem_response(status: StatusCode, problem: Problem) -> Response {
    let mut response = (status, Json(problem)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(err) = &self {
            tracing::error!(target: "api::error", err = format!("{err:#}"), "internal error");
        }
        let status = self.parts().0;
        let mut response = problem_response(status, self.problem());
        if let Self::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The chain node failed to answer while doing `what`: logged with its cause (which may name the
/// provider's URL and key), answered without it.
pub fn chain_unavailable(what: &str, err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(target: "api::chain", what, %err, "chain node unavailable");
    ApiError::Unavailable(format!("{what}: the chain node is unavailable; retry shortly"))
}

/// Middleware: answers every error as problem+json, including the ones axum and tower-http make
/// themselves (a body that is not JSON, a missing query parameter, a timeout, a body too large).
pub async fn as_problem(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if status.as_u16() < 400 || is_problem {
        return response;
    }
    let (slug, title) = match status.as_u16() {
        400 => ("bad-request", "The request is invalid"),
        401 => ("unauthorized", "A valid access token is required"),
        404 => ("not-found", "Not found"),
        405 => ("method-not-allowed", "Method not allowed"),
        408 | 504 => ("timeout", "The request took too long"),
        413 => ("payload-too-large", "The request body is too large"),
        415 => ("unsupported-media-type", "Send the body as application/json"),
        422 => ("invalid-body", "The request body does not have the expected fields"),
        _ => ("error", "The request failed"),
    };
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&text).trim().to_owned();
    let mut converted = problem_response(
        status,
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: (!detail.is_empty() && status.as_u16() < 500).then_some(detail),
            shortfall: None,
        },
    );
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}

/// A shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_leak_their_cause() {
        let problem = ApiError::Internal(anyhow::anyhow!("password=hunter2")).problem();
        assert_eq!(problem.status, 500);
        assert_eq!(problem.kind, format!("{PROBLEM_BASE}internal"));
        assert!(problem.detail.is_none());
    }

    #[test]
    fn chain_refusals_are_answered_by_what_they_mean() {
        use alloy::{
            primitives::{Address, U256},
            sol_types::SolError,
        };
        use decentraspace_abi::{CreditLedger, ServiceRegistry};

        let not_owner = ServiceRegistry::ServiceRegistryNotOwner {
            serviceId: U256::from(1),
            caller: Address::repeat_byte(1),
        }
        .abi_encode();
        let err = ApiError::from(ChainError::from_revert_data(not_owner.into()));
        assert!(matches!(err, ApiError::Forbidden(_)), "{err:?}");
        let short = CreditLedger::CreditLedgerInsufficientBalance {
            account: Address::ZERO,
            balance: U256::ZERO,
            required: U256::from(1),
        }
        .abi_encode();
        let err = ApiError::from(ChainError::from_revert_data(short.into()));
        assert!(matches!(err, ApiError::Conflict(_)), "{err:?}");
        let err = ApiError::from(ChainError::Unreachable("http://key@node".into()));
        assert!(matches!(&err, ApiError::Unavailable(m) if !m.contains("key@node")), "{err:?}");
    }

    #[test]
    fn login_failures_have_distinct_types() {
        use LoginFailure::*;
        let all = [
            Malformed,
            WrongDomain,
            WrongUri,
            WrongChain,
            InvalidNonce,
            Expired,
            NotYetValid,
            StaleIssuedAt,
            BadSignature,
        ];
        let slugs: std::collections::HashSet<_> = all.iter().map(|f| f.slug()).collect();
        assert_eq!(slugs.len(), all.len());
    }
}
