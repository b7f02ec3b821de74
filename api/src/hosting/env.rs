//! A site's build environment: variables and secrets its builds get, for production builds or
//! for previews. Values are write-only: sealed at rest (the site, scope and name as associated
//! data, so a sealed value copied to another row does not open), never shown by the API, passed
//! to the build's steps only, and masked in the build's log wherever they appear.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{HostingState, sites};
use crate::http::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
};

/// The longest value.
const MAX_VALUE: usize = 32 * 1024;
/// The most variables a site has per scope.
const MAX_PER_SCOPE: i64 = 100;
/// Names the platform sets for builds itself.
const RESERVED: &[&str] = &["PATH", "HOME", "CI", "PWD", "SHLVL"];
/// Prefixes of names the platform sets for builds itself (registry and cache settings).
const RESERVED_PREFIXES: &[&str] = &["npm_config_", "YARN_"];

/// Which builds a variable is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnvScope {
    /// Builds of the production branch and uploads.
    #[default]
    Production,
    /// Builds of previews (never of pull requests from forks).
    Preview,
}

impl EnvScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Preview => "preview",
        }
    }
}

/// A variable as the API shows it: its name, never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvVar {
    /// The name.
    pub name: String,
    /// Which builds get it.
    pub scope: EnvScope,
    /// When its value was last set.
    pub updated_at: DateTime<Utc>,
}

/// A value to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEnvVar {
    /// The value (at most 32 KiB); stored sealed and never shown again.
    #[schema(max_length = 32768)]
    pub value: String,
    /// Which builds get it (default `production`).
    #[serde(default)]
    pub scope: EnvScope,
}

/// Which variable.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ScopeQuery {
    /// Which builds' variable (default `production`).
    #[serde(default)]
    pub scope: EnvScope,
}

/// What seals a variable's value: the row it belongs to.
fn context(site: i64, scope: EnvScope, name: &str) -> Vec<u8> {
    [
        b"site-env\0".as_slice(),
        &site.to_be_bytes(),
        scope.as_str().as_bytes(),
        b"\0",
        name.as_bytes(),
    ]
    .concat()
}

fn valid_name(name: &str) -> ApiResult<()> {
    let ok = (1..=128).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(ApiError::BadRequest(format!(
            "{name:?} is not a variable name: use letters, digits and _, not starting with a digit, \
             at most 128"
        )));
    }
    if RESERVED.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(ApiError::BadRequest(format!("{name} is set by the platform for every build")));
    }
    Ok(())
}

/// The caller's site's build variables: names and scopes, never values.
#[utoipa::path(get, path = "/hosting/settings/{site}/env", tag = "hosting", security(("bearer" = [])),
    params(("site" = String, Path, description = "The site's name")),
    responses((status = 200, body = Vec<EnvVar>),
        crate::http::openapi::NotFound))]
pub(super) async fn list(
    State(state): State<HostingState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<EnvVar>>> {
    let site = sites::owned(&state, user.address, &name).await?;
    let rows = sqlx::query!(
        "select name, scope, updated_at from site_env where site_id = $1 order by scope, name",
        site.id
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| EnvVar {
                name: r.name,
                scope: if r.scope == "preview" { EnvScope::Preview } else { EnvScope::Production },
                updated_at: r.updated_at,
            })
            .collect(),
    ))
}

/// Sets a build variable of the caller's site (write-only: the value is never shown again).
#[utoipa::path(put, path = "/hosting/settings/{site}/env/{name}", tag = "hosting", security(("bearer" = [])),
    params(("site" = String, Path, description = "The site's name"),
        ("name" = String, Path, description = "The variable's name")),
    request_body = SetEnvVar,
    responses((status = 200, body = EnvVar),
        crate::http::openapi::NotFound,
        (status = 409, description = "The site already has 100 variables in that scope")))]
pub(super) async fn set(
    State(state): State<HostingState>,
    user: AuthUser,
    Path((site_name, name)): Path<(String, String)>,
    Json(body): Json<SetEnvVar>,
) -> ApiResult<Json<EnvVar>> {
    let site = sites::owned(&state, user.address, &site_name).await?;
    valid_name(&name)?;
    if body.value.len() > MAX_VALUE {
        return Err(ApiError::BadRequest(format!("the value is longer than {MAX_VALUE} bytes")));
    }
    let scope = body.scope;
    let sealed =
        state.sealer.seal_for(&SecretString::from(body.value), &context(site.id, scope, &name));
    let updated_at = sqlx::query_scalar!(
        "insert into site_env (site_id, scope, name, value_sealed)
         select $1, $2, $3, $4
         where exists (select 1 from site_env where site_id = $1 and scope = $2 and name = $3)
            or (select count(*) from site_env where site_id = $1 and scope = $2) < $5
         on conflict (site_id, scope, name)
         do update set value_sealed = excluded.value_sealed, updated_at = now()
         returning updated_at",
        site.id,
        scope.as_str(),
        name,
        sealed,
        MAX_PER_SCOPE
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| {
        ApiError::Conflict(format!("the site already has {MAX_PER_SCOPE} variables in that scope"))
    })?;
    Ok(Json(EnvVar { name, scope, updated_at }))
}

/// Removes a build variable of the caller's site.
#[utoipa::path(delete, path = "/hosting/settings/{site}/env/{name}", tag = "hosting", security(("bearer" = [])),
    params(("site" = String, Path, description = "The site's name"),
        ("name" = String, Path, description = "The variable's name"), ScopeQuery),
    responses((status = 204, description = "Removed"),
        crate::http::openapi::NotFound))]
pub(super) async fn remove(
    State(state): State<HostingState>,
    user: AuthUser,
    Path((site_name, name)): Path<(String, String)>,
    Query(query): Query<ScopeQuery>,
) -> ApiResult<StatusCode> {
    let site = sites::owned(&state, user.address, &site_name).await?;
    let removed = sqlx::query!(
        "delete from site_env where site_id = $1 and scope = $2 and name = $3",
        site.id,
        query.scope.as_str(),
        name
    )
    .execute(&state.db)
    .await?;
    if removed.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("the site has no variable {name}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The variables `scope`'s builds of the site get, opened. A value that does not open (another
/// key) fails the build rather than building without it.
pub(super) async fn for_build(
    state: &HostingState,
    site: i64,
    scope: EnvScope,
) -> Result<Vec<(String, SecretString)>, String> {
    let rows = sqlx::query!(
        "select name, value_sealed from site_env where site_id = $1 and scope = $2 order by name",
        site,
        scope.as_str()
    )
    .fetch_all(&state.db)
    .await
    .map_err(|e| e.to_string())?;
    rows.into_iter()
        .map(|r| {
            let value =
                state.sealer.open_for(&r.value_sealed, &context(site, scope, &r.name)).map_err(
                    |_| format!("the build variable {} cannot be opened; set it again", r.name),
                )?;
            Ok((r.name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_platform_s_own_refused() {
        for ok in ["API_KEY", "_x", "NEXT_PUBLIC_URL", "vite_mode"] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "1X", "A-B", "A B", "PATH", "HOME", "npm_config_registry", "YARN_CACHE_FOLDER"]
        {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
        assert!(valid_name(&"A".repeat(129)).is_err());
    }

    #[test]
    fn a_value_opens_only_for_its_own_row() {
        let sealer = crate::seal::Sealer::new(None, &SecretString::from("test-secret-test-secret"));
        let sealed =
            sealer.seal_for(&SecretString::from("v"), &context(1, EnvScope::Production, "A"));
        assert!(sealer.open_for(&sealed, &context(1, EnvScope::Production, "A")).is_ok());
        assert!(sealer.open_for(&sealed, &context(2, EnvScope::Production, "A")).is_err());
        assert!(sealer.open_for(&sealed, &context(1, EnvScope::Preview, "A")).is_err());
        assert!(sealer.open_for(&sealed, &context(1, EnvScope::Production, "B")).is_err());
    }
}
