//! The extractors that guard routes: a signed-in wallet (`Authorization: Bearer <access token>`,
//! spending one request of the account's budget), and a platform admin (the on-chain admin role,
//! as indexed).

use alloy::primitives::Address;
use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};

use super::error::ApiError;
use crate::state::AppState;

/// The authenticated wallet of a request (`Authorization: Bearer <access token>`). Spends one
/// request of the account's rate budget.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// The wallet.
    pub address: Address,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("send `Authorization: Bearer <access token>`".into())
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "the Authorization header must be `Bearer <access token>`".into(),
                )
            })?;
        let address = state.tokens.verify(token.trim())?;
        state.limits.check_account(address)?;
        Ok(Self { address })
    }
}

/// An authenticated wallet that holds the platform's admin role on-chain (as indexed).
#[derive(Debug, Clone, Copy)]
pub struct AdminUser {
    /// The wallet.
    pub address: Address,
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !is_admin(state, user.address).await? {
            return Err(ApiError::Forbidden("this route is for platform admins".into()));
        }
        Ok(Self { address: user.address })
    }
}

/// Whether `address` holds the platform's admin role on-chain (as indexed).
pub async fn is_admin(state: &AppState, address: Address) -> Result<bool, ApiError> {
    // DEFAULT_ADMIN_ROLE (bytes32 zero) on the account registry.
    let admin = sqlx::query_scalar!(
        r#"select exists(select 1 from role_members
            where chain_id = $1 and contract = $2 and role = $3 and account = $4)"#,
        state.chain_id() as i64,
        state.deployment.contracts.account_registry.as_slice(),
        [0u8; 32].as_slice(),
        address.as_slice()
    )
    .fetch_one(&state.db)
    .await?;
    Ok(admin == Some(true))
}
