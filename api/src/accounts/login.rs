//! Signing in and out: a nonce, a SIWE login that issues an access and a refresh token, their
//! rotation, and logout.

use axum::{Json, extract::State, http::StatusCode};
use chrono::Utc;
use rand::{Rng, distr::Alphanumeric};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AccountsState;
use crate::http::error::{ApiError, ApiResult, LoginFailure};

/// A nonce to put in the next SIWE message.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NonceResponse {
    /// Alphanumeric, single-use, expires after the configured time (10 minutes by default).
    #[schema(example = "p4Fq9ZtW2mXbR7sLkC3vN8Ya")]
    pub nonce: String,
}

/// A signed SIWE message.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct LoginRequest {
    /// The EIP-4361 message text, exactly as signed.
    pub message: String,
    /// The EIP-191 signature (65 bytes for an account; a contract wallet's own format otherwise).
    #[schema(example = "0x…")]
    pub signature: String,
}

/// Tokens for an authenticated wallet.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Exchange it at `/auth/refresh` for a new pair; single use.
    pub refresh_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// A refresh token.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// Issues a single-use nonce for a SIWE message.
#[utoipa::path(get, path = "/auth/nonce", tag = "auth",
    responses((status = 200, body = NonceResponse)))]
pub(super) async fn nonce(State(state): State<AccountsState>) -> ApiResult<Json<NonceResponse>> {
    let nonce: String = rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect();
    let expires = Utc::now() + state.config.nonce_ttl();
    sqlx::query!("insert into auth_nonces (nonce, expires_at) values ($1, $2)", nonce, expires)
        .execute(&state.db)
        .await?;
    Ok(Json(NonceResponse { nonce }))
}

/// Signs in with a wallet: checks the SIWE message (domain, URI, chain, nonce, time bounds) and its
/// signature (recovered, or EIP-1271 for contract wallets), then issues tokens. A first login
/// registers the account on-chain.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "The login was refused; `type` says which check failed"),
    ))]
pub(super) async fn login(
    State(state): State<AccountsState>,
    Json(request): Json<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let expected = super::siwe::Expected {
        domain: &state.config.siwe_domain,
        uri: &state.config.siwe_uri,
        chain_id: state.chain_id(),
        max_age_secs: state.config.siwe_max_age_secs as i64,
    };
    let message =
        super::siwe::check_message(&request.message, &request.signature, &expected, Utc::now())?;
    let usable = sqlx::query_scalar!(
        "select exists(select 1 from auth_nonces where nonce = $1 and used_at is null and expires_at > now())",
        message.nonce
    )
    .fetch_one(&state.db)
    .await?;
    if usable != Some(true) {
        return Err(invalid_nonce());
    }
    super::siwe::check_signature(&state.chain, &message).await?;
    // Consume the nonce last and atomically: of two concurrent logins with it, one wins.
    let consumed = sqlx::query!(
        "update auth_nonces set used_at = now() where nonce = $1 and used_at is null and expires_at > now()",
        message.nonce
    )
    .execute(&state.db)
    .await?;
    if consumed.rows_affected() != 1 {
        return Err(invalid_nonce());
    }
    // The session and, at a first login, the request to register the wallet on-chain commit
    // together: a signed-in wallet is never left without its registration.
    let mut tx = state.db.begin().await?;
    let tokens = state.sessions.issue(&mut tx, message.address).await?;
    let register = state.operator.is_some()
        && super::registration::request(
            &mut tx,
            state.chain_id(),
            message.address,
            state.config.registrations_per_hour,
        )
        .await?;
    tx.commit().await?;
    if register && let Some(operator) = &state.operator {
        // Written now so the first deploy finds the account soon; what fails here, the sweep
        // writes within seconds.
        if let Err(err) = super::registration::write(&state, operator, message.address).await {
            tracing::warn!(target: "api::auth", %err, account = %message.address, "cannot write the on-chain registration yet; the sweep will");
        }
    }
    tracing::info!(target: "api::auth", account = %message.address, "signed in");
    Ok(Json(token_response(tokens)))
}

fn invalid_nonce() -> ApiError {
    ApiError::Login {
        failure: LoginFailure::InvalidNonce,
        detail: "the nonce was not issued here, was already used, or expired; get a new one at /auth/nonce".into(),
    }
}

fn token_response(tokens: super::tokens::IssuedTokens) -> TokenResponse {
    TokenResponse {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        token_type: "Bearer",
        expires_in: tokens.expires_in,
    }
}

/// Exchanges a refresh token for a new pair (the old one stops working; reusing it revokes the
/// whole login).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse),
        (status = 401, description = "The refresh token is unknown, expired, revoked or reused")))]
pub(super) async fn refresh(
    State(state): State<AccountsState>,
    Json(request): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let mut conn = state.db.acquire().await?;
    let (_, tokens) = state.sessions.rotate(&mut conn, &request.refresh_token).await?;
    Ok(Json(token_response(tokens)))
}

/// Ends a login: its refresh tokens stop working (access tokens expire on their own).
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204),
        (status = 401, description = "The refresh token is unknown, expired, revoked or reused")))]
pub(super) async fn logout(
    State(state): State<AccountsState>,
    Json(request): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let mut conn = state.db.acquire().await?;
    super::tokens::revoke(&mut conn, &request.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}
