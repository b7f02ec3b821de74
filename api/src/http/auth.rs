//! Who is calling: access tokens (short-lived HS256 JWTs naming a wallet), API tokens (long-lived,
//! scoped, for CI and the CLI: `accounts/api_tokens.rs` issues them) and the extractors that guard
//! routes. A signed-in wallet ([`AuthUser`]) spends one request of its account's budget, whichever
//! token it came with; an API token is taken only for the routes its scopes cover
//! ([`scope_for`]), never for admin routes nor to manage tokens; a platform admin ([`AdminUser`])
//! holds the admin role on-chain, as indexed, so a revoked role takes effect at the next indexed
//! block; an internal service ([`ServiceOrAdmin`]) presents the configured service token. Every
//! extractor works for any state that gives an [`Auth`].

use std::sync::Arc;

use alloy::primitives::Address;
use axum::{
    extract::{FromRef, FromRequestParts, MatchedPath},
    http::{Method, header, request::Parts},
};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::{error::ApiError, limits::RateLimits};

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
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AccessTokens").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// Keys from the configured secret (at least 32 bytes); tokens live `ttl_secs`.
    pub fn new(secret: &SecretString, ttl_secs: u64) -> anyhow::Result<Self> {
        let secret = secret.expose_secret().as_bytes();
        anyhow::ensure!(secret.len() >= 32, "JWT_SECRET must be at least 32 bytes");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: Duration::seconds(ttl_secs as i64),
        })
    }

    /// How long a token lives, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl.num_seconds() as u64
    }

    /// Signs an access token for `account`, issued at `now`.
    pub fn sign(&self, account: Address, now: DateTime<Utc>) -> Result<String, ApiError> {
        let claims = Claims {
            sub: account.to_string(),
            iat: now.timestamp(),
            exp: (now + self.ttl).timestamp(),
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
}

/// What the extractors need: the token keys, the per-account budgets, the indexed admin role, and
/// the internal services' token.
#[derive(Debug, Clone)]
pub struct Auth(Arc<AuthInner>);

#[derive(Debug)]
struct AuthInner {
    tokens: AccessTokens,
    limits: Arc<RateLimits>,
    db: PgPool,
    chain_id: u64,
    admin_registry: Address,
    service_token: Option<SecretString>,
}

impl Auth {
    /// Checks tokens with `tokens`, spends `limits`, and reads admins of `admin_registry` on
    /// `chain_id` from `db`; `service_token` authenticates internal services.
    pub fn new(
        tokens: AccessTokens,
        limits: Arc<RateLimits>,
        db: PgPool,
        chain_id: u64,
        admin_registry: Address,
        service_token: Option<SecretString>,
    ) -> Self {
        Self(Arc::new(AuthInner { tokens, limits, db, chain_id, admin_registry, service_token }))
    }

    /// The access-token keys.
    pub fn tokens(&self) -> &AccessTokens {
        &self.0.tokens
    }

    /// Records a use of API token `id` (at most once a minute).
    async fn touch_api_token(&self, id: i64) -> Result<(), ApiError> {
        sqlx::query!(
            "update api_tokens set last_used_at = now()
             where id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
            id
        )
        .execute(&self.0.db)
        .await?;
        Ok(())
    }

    /// Whether `user` acts as a platform admin: an admin's wallet, signed in (an API token never
    /// carries the admin's powers, even where a route lets admins see others' things).
    pub async fn acts_as_admin(&self, user: &AuthUser) -> Result<bool, ApiError> {
        Ok(user.via == Via::Session && self.is_admin(user.address).await?)
    }

    /// The wallet and scopes of a live API token (`presented`, the whole token). Looked up by its SHA-256 digest: the secret itself is
    /// never stored nor compared.
    async fn api_token(&self, presented: &str) -> Result<(Address, i64, Vec<Scope>), ApiError> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let row = sqlx::query!(
            r#"select id, account, scopes, expires_at, revoked_at is not null as "revoked!"
               from api_tokens where chain_id = $1 and token_hash = $2"#,
            self.0.chain_id as i64,
            &digest[..]
        )
        .fetch_optional(&self.0.db)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the API token is not one of ours".into()))?;
        if row.revoked {
            return Err(ApiError::Unauthorized("the API token was revoked".into()));
        }
        if row.expires_at <= Utc::now() {
            return Err(ApiError::Unauthorized("the API token has expired; create another".into()));
        }
        let account = Address::try_from(row.account.as_slice()).map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("API token {} has no account", row.id))
        })?;
        Ok((account, row.id, row.scopes.iter().filter_map(|s| Scope::parse(s)).collect()))
    }

    /// Whether `address` holds the platform's admin role on-chain (as indexed).
    pub async fn is_admin(&self, address: Address) -> Result<bool, ApiError> {
        // DEFAULT_ADMIN_ROLE (bytes32 zero) on the account registry.
        let admin = sqlx::query_scalar!(
            r#"select exists(select 1 from role_members
                where chain_id = $1 and contract = $2 and role = $3 and account = $4)"#,
            self.0.chain_id as i64,
            self.0.admin_registry.as_slice(),
            [0u8; 32].as_slice(),
            address.as_slice()
        )
        .fetch_one(&self.0.db)
        .await?;
        Ok(admin == Some(true))
    }
}

/// How an API token starts (an access token is a JWT: three dot-separated parts).
pub const API_TOKEN_PREFIX: &str = "dsk_";

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Read one's sites, deployments and their logs, domains, databases, storage, notices.
    Read,
    /// Deploy and roll back sites, change their settings and environment.
    Deploy,
    /// Upload and manage files and folders.
    Storage,
    /// Read one's balance, credit history and spending.
    BillingRead,
}

impl Scope {
    /// Its name, as tokens store it and callers write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Deploy => "deploy",
            Self::Storage => "storage",
            Self::BillingRead => "billing-read",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Read, Self::Deploy, Self::Storage, Self::BillingRead]
            .into_iter()
            .find(|scope| scope.as_str() == name)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scope an API token needs for `method` on the route `path` (its template, such as
/// `/hosting/deploy/{id}`); `None`: no API token is taken there. Routes are let in one by one:
/// a route not named here (signing in, sessions and tokens, admin routes, whatever spends
/// credits, pauses services, signs for the wallet or reaches a linked account) refuses tokens,
/// and so does any route added later until it is named.
pub fn scope_for(method: &Method, path: &str) -> Option<Scope> {
    let read = *method == Method::GET || *method == Method::HEAD;
    if read {
        return match path {
            "/auth/tier"
            | "/hosting/status"
            | "/hosting/status/{site}"
            | "/hosting/deploy"
            | "/hosting/deploy/{id}"
            | "/hosting/deploy/{id}/log"
            | "/hosting/previews/{site}"
            | "/hosting/settings/{site}"
            | "/storage/folder"
            | "/storage/manage"
            | "/storage/manage/files"
            | "/domain/link"
            | "/domain/certificate/{domain}"
            | "/domain/dns/{domain}"
            | "/domain/ens/{name}/contenthash"
            | "/domain/purchase"
            | "/domain/purchase/{id}"
            | "/database"
            | "/database/{id}"
            | "/database/{id}/backups"
            | "/database/{id}/restores/{restore_id}"
            | "/notices"
            | "/services"
            | "/analytics/site"
            | "/blockchain/transactions/{id}"
            | "/blockchain/credit/{id}" => Some(Scope::Read),
            "/billing/balance"
            | "/billing/history"
            | "/billing/payment-methods"
            | "/billing/recharge/{reference}"
            | "/analytics/credit" => Some(Scope::BillingRead),
            // A site's environment holds its secrets: for deploying, not for reading.
            "/hosting/settings/{site}/env" => Some(Scope::Deploy),
            _ => None,
        };
    }
    match (method.as_str(), path) {
        ("POST", "/hosting/deploy" | "/hosting/deploy/{id}/rollback" | "/github/deploy")
        | ("PUT", "/hosting/settings/{site}" | "/hosting/settings/{site}/env/{name}")
        | ("DELETE", "/hosting/settings/{site}/env/{name}") => Some(Scope::Deploy),
        ("POST", "/storage/upload" | "/storage/folder")
        | ("PATCH", "/storage/folder/{id}" | "/storage/folder/files/{id}")
        | ("DELETE", "/storage/folder/{id}" | "/storage/manage/files/{id}") => Some(Scope::Storage),
        _ => None,
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An access token from signing in with the wallet.
    Session,
    /// The API token with this id.
    ApiToken(i64),
}

/// The bearer token of a request, if it sends one in the expected form.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("send `Authorization: Bearer <access token>`".into())
    })?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "the Authorization header must be `Bearer <access token>`".into(),
            )
        })
}

/// The authenticated wallet of a request (`Authorization: Bearer <access token or API token>`).
/// Spends one request of the account's rate budget.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// The wallet.
    pub address: Address,
    /// How it was authenticated.
    pub via: Via,
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_ref(state);
        let presented = bearer(parts)?;
        let (address, via) = if presented.starts_with(API_TOKEN_PREFIX) {
            let (address, id, scopes) = auth.api_token(presented).await?;
            // Scopes are by route: a request no route matched is not one a token may make.
            let path =
                parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_owned()).ok_or_else(
                    || ApiError::Forbidden("API tokens are taken on routes only".into()),
                )?;
            match scope_for(&parts.method, &path) {
                None => {
                    return Err(ApiError::Forbidden(format!(
                        "API tokens are not taken for {} {path}: sign in with the wallet",
                        parts.method
                    )));
                }
                Some(needed) if !scopes.contains(&needed) => {
                    return Err(ApiError::Forbidden(format!(
                        "this API token lacks the `{needed}` scope that {} {path} needs",
                        parts.method
                    )));
                }
                Some(_) => {
                    auth.touch_api_token(id).await?;
                    (address, Via::ApiToken(id))
                }
            }
        } else {
            (auth.0.tokens.verify(presented)?, Via::Session)
        };
        auth.0.limits.check_account(address).await?;
        Ok(Self { address, via })
    }
}

/// An authenticated wallet that holds the platform's admin role on-chain (as indexed).
#[derive(Debug, Clone, Copy)]
pub struct AdminUser {
    /// The wallet.
    pub address: Address,
}

impl<S> FromRequestParts<S> for AdminUser
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.via != Via::Session {
            return Err(ApiError::Forbidden(
                "admin routes take no API token: sign in with the wallet".into(),
            ));
        }
        if !Auth::from_ref(state).is_admin(user.address).await? {
            return Err(ApiError::Forbidden("this route is for platform admins".into()));
        }
        Ok(Self { address: user.address })
    }
}

/// A caller allowed to record usage: an internal service (the storage and hosting workers, a
/// metering sidecar, with the configured service token) or a platform admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceOrAdmin {
    /// The bearer token is the service token.
    Service,
    /// An admin's access token.
    Admin(Address),
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

impl<S> FromRequestParts<S> for ServiceOrAdmin
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(expected) = &Auth::from_ref(state).0.service_token
            && let Ok(presented) = bearer(parts)
            // Digests first, so the comparison takes the same time whatever the lengths.
            && bool::from(
                Sha256::digest(presented.as_bytes())
                    .ct_eq(&Sha256::digest(expected.expose_secret().as_bytes())),
            )
        {
            return Ok(Self::Service);
        }
        // Not the service token: it must be an admin's access token.
        let admin = AdminUser::from_request_parts(parts, state).await?;
        Ok(Self::Admin(admin.address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AccessTokens {
        AccessTokens::new(&SecretString::from("k".repeat(32)), 900).expect("keys")
    }

    #[test]
    fn an_access_token_verifies_to_its_account() {
        let account = Address::repeat_byte(7);
        let token = keys().sign(account, Utc::now()).expect("token");
        assert_eq!(keys().verify(&token).expect("valid"), account);
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_are_refused() {
        let account = Address::repeat_byte(7);
        let token = keys().sign(account, Utc::now()).expect("token");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        // Claim another account with the original signature.
        let other = keys().sign(Address::repeat_byte(8), Utc::now()).expect("token");
        parts[1] = other.split('.').nth(1).expect("payload").to_owned();
        assert!(keys().verify(&parts.join(".")).is_err());

        let old = keys().sign(account, Utc::now() - Duration::hours(1)).expect("token");
        assert!(
            matches!(keys().verify(&old), Err(ApiError::Unauthorized(m)) if m.contains("expired"))
        );

        let foreign = AccessTokens::new(&SecretString::from("x".repeat(32)), 900)
            .expect("keys")
            .sign(account, Utc::now())
            .expect("token");
        assert!(keys().verify(&foreign).is_err());
    }

    #[test]
    fn api_tokens_reach_only_what_their_scopes_cover() {
        let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
        for (method, path, scope) in [
            (&get, "/hosting/status", Some(Scope::Read)),
            (&get, "/hosting/deploy/{id}/log", Some(Scope::Read)),
            (&post, "/hosting/deploy", Some(Scope::Deploy)),
            (&post, "/hosting/deploy/{id}/rollback", Some(Scope::Deploy)),
            (&get, "/hosting/settings/{site}/env", Some(Scope::Deploy)),
            (&put, "/hosting/settings/{site}/env/{name}", Some(Scope::Deploy)),
            (&post, "/storage/upload", Some(Scope::Storage)),
            (&get, "/storage/folder", Some(Scope::Read)),
            (&get, "/billing/balance", Some(Scope::BillingRead)),
            (&get, "/analytics/credit", Some(Scope::BillingRead)),
            (&get, "/auth/tier", Some(Scope::Read)),
            (&post, "/billing/recharge", None),
            (&post, "/auth/tokens", None),
            (&get, "/auth/tokens", None),
            (&get, "/auth/manage", None),
            (&get, "/analytics/system", None),
            (&post, "/blockchain/credit", None),
            (&post, "/domain/purchase", None),
            (&post, "/database", None),
            (&post, "/storage/manage/{id}/pause", None),
            (&post, "/storage/manage/{id}/resume", None),
            (&post, "/services/{id}/pause", None),
            (&get, "/github/link/{id}/repositories", None),
            (&post, "/database/{id}/credentials", None),
            (&Method::DELETE, "/storage/manage/files/{id}", Some(Scope::Storage)),
            (&get, "/some/route/added/later", None),
        ] {
            assert_eq!(scope_for(method, path), scope, "{method} {path}");
        }
    }

    #[test]
    fn refuses_short_secrets() {
        assert!(AccessTokens::new(&SecretString::from("short"), 900).is_err());
    }
}
