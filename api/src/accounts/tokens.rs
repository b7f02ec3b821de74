//! Access tokens (short-lived HS256 JWTs) and refresh tokens (random, stored hashed, rotated on
//! every use; presenting one that was already used revokes its whole family, since only a thief
//! or a replay would do that).

use alloy::primitives::Address;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::http::error::ApiError;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The wallet, as 0x-hex.
    pub sub: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// Token type; always `access`.
    pub typ: String,
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("access_ttl", &self.access_ttl).finish_non_exhaustive()
    }
}

/// A refresh token's secret is this many random bytes.
const REFRESH_BYTES: usize = 32;

/// A fresh pair of tokens.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    /// The JWT.
    pub access_token: String,
    /// The opaque refresh token.
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

impl TokenKeys {
    /// Keys from the configured secret (at least 32 bytes).
    pub fn new(
        secret: &SecretString,
        access_ttl_secs: u64,
        refresh_ttl_secs: u64,
    ) -> anyhow::Result<Self> {
        let secret = secret.expose_secret().as_bytes();
        anyhow::ensure!(secret.len() >= 32, "JWT_SECRET must be at least 32 bytes");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl: Duration::seconds(access_ttl_secs as i64),
            refresh_ttl: Duration::seconds(refresh_ttl_secs as i64),
        })
    }

    /// Signs an access token for `account`.
    pub fn access_token(&self, account: Address, now: DateTime<Utc>) -> Result<String, ApiError> {
        let claims = Claims {
            sub: account.to_string(),
            iat: now.timestamp(),
            exp: (now + self.access_ttl).timestamp(),
            typ: "access".into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(
            |err| ApiError::Internal(anyhow::Error::new(err).context("sign an access token")),
        )
    }

    /// The account an access token was issued to, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<Address, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                ApiError::Unauthorized(match err.kind() {
                    ErrorKind::ExpiredSignature => {
                        "the access token has expired; refresh it".into()
                    }
                    ErrorKind::InvalidSignature => "the access token's signature is invalid".into(),
                    _ => "the access token is malformed".into(),
                })
            })?;
        if data.claims.typ != "access" {
            return Err(ApiError::Unauthorized("not an access token".into()));
        }
        data.claims
            .sub
            .parse()
            .map_err(|_| ApiError::Unauthorized("the access token is malformed".into()))
    }

    /// Issues an access token and a refresh token in a new family (a login).
    pub async fn issue(
        &self,
        conn: &mut PgConnection,
        account: Address,
    ) -> Result<IssuedTokens, ApiError> {
        let family = crate::random::bytes::<16>();
        self.issue_in(conn, account, &family).await
    }

    async fn issue_in(
        &self,
        conn: &mut PgConnection,
        account: Address,
        family: &[u8],
    ) -> Result<IssuedTokens, ApiError> {
        let now = Utc::now();
        let secret = crate::random::bytes::<REFRESH_BYTES>();
        let refresh_token = hex::encode(secret);
        let token_hash = hash(&refresh_token);
        sqlx::query!(
            r#"insert into refresh_tokens (token_hash, family_id, account, expires_at)
               values ($1, $2, $3, $4)"#,
            token_hash.as_slice(),
            family,
            account.as_slice(),
            now + self.refresh_ttl
        )
        .execute(&mut *conn)
        .await?;
        Ok(IssuedTokens {
            access_token: self.access_token(account, now)?,
            refresh_token,
            expires_in: self.access_ttl.num_seconds() as u64,
        })
    }

    /// Exchanges a refresh token for a new pair. A token used twice revokes its family.
    pub async fn rotate(
        &self,
        conn: &mut PgConnection,
        refresh_token: &str,
    ) -> Result<(Address, IssuedTokens), ApiError> {
        let token_hash = hash(refresh_token);
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let row = sqlx::query!(
            r#"select family_id, account, expires_at, used_at, revoked_at
               from refresh_tokens where token_hash = $1 for update"#,
            token_hash.as_slice()
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(ApiError::InvalidRefreshToken("unknown refresh token".into()));
        };
        if row.revoked_at.is_some() {
            return Err(ApiError::InvalidRefreshToken(
                "the refresh token was revoked; log in again".into(),
            ));
        }
        if row.used_at.is_some() {
            // Reuse: someone holds a copy. End every session of this family.
            revoke_family(&mut tx, &row.family_id).await?;
            tx.commit().await?;
            tracing::warn!(target: "api::auth", "refresh token reused; its family is revoked");
            return Err(ApiError::InvalidRefreshToken(
                "the refresh token was already used; every session of this login is revoked".into(),
            ));
        }
        if row.expires_at <= Utc::now() {
            return Err(ApiError::InvalidRefreshToken(
                "the refresh token has expired; log in again".into(),
            ));
        }
        sqlx::query!(
            "update refresh_tokens set used_at = now() where token_hash = $1",
            token_hash.as_slice()
        )
        .execute(&mut *tx)
        .await?;
        let account = Address::try_from(row.account.as_slice())
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("corrupt refresh token account")))?;
        let issued = self.issue_in(&mut tx, account, &row.family_id).await?;
        tx.commit().await?;
        Ok((account, issued))
    }
}

/// Revokes the family of a refresh token (logout). Unknown tokens are refused.
pub(super) async fn revoke(conn: &mut PgConnection, refresh_token: &str) -> Result<(), ApiError> {
    let token_hash = hash(refresh_token);
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // Locking the row waits for a rotation of it in flight; the update then sees the token that
    // rotation issued, so it is revoked too.
    let family = sqlx::query_scalar!(
        "select family_id from refresh_tokens where token_hash = $1 for update",
        token_hash.as_slice()
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::InvalidRefreshToken("unknown refresh token".into()))?;
    revoke_family(&mut tx, &family).await?;
    tx.commit().await?;
    Ok(())
}

async fn revoke_family(conn: &mut PgConnection, family: &[u8]) -> Result<(), ApiError> {
    sqlx::query!(
        "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
        family
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets nonces and refresh tokens a day past their expiry.
pub(super) async fn forget_expired(db: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query!("delete from auth_nonces where expires_at < now() - interval '1 day'")
        .execute(db)
        .await?;
    sqlx::query!("delete from refresh_tokens where expires_at < now() - interval '1 day'")
        .execute(db)
        .await?;
    Ok(())
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&SecretString::from("k".repeat(32)), 900, 3600).expect("keys")
    }

    #[test]
    fn an_access_token_verifies_to_its_account() {
        let account = Address::repeat_byte(7);
        let token = keys().access_token(account, Utc::now()).expect("token");
        assert_eq!(keys().verify(&token).expect("valid"), account);
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_are_refused() {
        let account = Address::repeat_byte(7);
        let token = keys().access_token(account, Utc::now()).expect("token");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        // Claim another account with the original signature.
        let other = keys().access_token(Address::repeat_byte(8), Utc::now()).expect("token");
        parts[1] = other.split('.').nth(1).expect("payload").to_owned();
        assert!(keys().verify(&parts.join(".")).is_err());

        let old = keys().access_token(account, Utc::now() - Duration::hours(1)).expect("token");
        assert!(
            matches!(keys().verify(&old), Err(ApiError::Unauthorized(m)) if m.contains("expired"))
        );

        let foreign = TokenKeys::new(&SecretString::from("x".repeat(32)), 900, 3600)
            .expect("keys")
            .access_token(account, Utc::now())
            .expect("token");
        assert!(keys().verify(&foreign).is_err());
    }

    #[test]
    fn refuses_short_secrets() {
        assert!(TokenKeys::new(&SecretString::from("short"), 900, 3600).is_err());
    }
}
