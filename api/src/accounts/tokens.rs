//! Sessions: an access token (a short-lived JWT, `http::auth`) and a refresh token (random, stored
//! hashed, rotated on every use; presenting one that was already used revokes its whole family,
//! since only a thief or a replay would do that).

use alloy::primitives::Address;
use chrono::{Duration, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::http::{auth::AccessTokens, error::ApiError};

/// Issues, rotates and revokes sessions: an access token and a refresh token per login.
#[derive(Debug, Clone)]
pub struct Sessions {
    access: AccessTokens,
    refresh_ttl: Duration,
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

impl Sessions {
    /// Sessions whose access tokens `access` signs, with refresh tokens living
    /// `refresh_ttl_secs`.
    pub fn new(access: AccessTokens, refresh_ttl_secs: u64) -> Self {
        Self { access, refresh_ttl: Duration::seconds(refresh_ttl_secs as i64) }
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
            access_token: self.access.sign(account, now)?,
            refresh_token,
            expires_in: self.access.ttl_secs(),
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
