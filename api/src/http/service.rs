//! Internal services (the storage and hosting workers, a metering sidecar) authenticate with the
//! configured service token instead of a wallet.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::AdminUser;
use crate::{http::error::ApiError, state::AppState};

/// A caller allowed to record usage: an internal service (service token) or a platform admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceOrAdmin {
    /// The bearer token is the service token.
    Service,
    /// An admin's access token.
    Admin(alloy::primitives::Address),
}

impl ServiceOrAdmin {
    /// Who recorded something, as stored: `service` or the admin's checksummed address.
    pub fn recorded_by(&self) -> String {
        match self {
            Self::Service => "service".into(),
            Self::Admin(address) => address.to_checksum(None),
        }
    }
}

impl FromRequestParts<AppState> for ServiceOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(expected) = &state.config.service_token {
            let presented = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
                .map(str::trim);
            // Digests first, so the comparison takes the same time whatever the lengths.
            if let Some(presented) = presented
                && bool::from(
                    Sha256::digest(presented.as_bytes())
                        .ct_eq(&Sha256::digest(expected.expose_secret().as_bytes())),
                )
            {
                return Ok(Self::Service);
            }
        }
        // Not the service token: it must be an admin's access token.
        let admin = AdminUser::from_request_parts(parts, state).await?;
        Ok(Self::Admin(admin.address))
    }
}
