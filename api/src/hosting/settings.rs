//! A site's build settings: the folder the build runs in, its install and build commands, the
//! folder it serves, and whether branches get previews. Each unset one is detected from the source at every deployment
//! (`build::Plan`).

use std::path::Path as FsPath;

use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{HostingState, build, sites, unpack};
use crate::http::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
};

/// The longest folder setting.
const MAX_FOLDER: usize = 255;

/// A site's build settings; `null` means "detect from the source".
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSettings {
    /// The folder of the source the build runs in (monorepos), relative to the top.
    #[schema(max_length = 255, example = "apps/web")]
    pub root_dir: Option<String>,
    /// Installs the dependencies (detected: `npm ci`, `pnpm install --frozen-lockfile` or
    /// `yarn install --frozen-lockfile` from the lockfile). An empty string installs nothing.
    #[schema(max_length = 1000, example = "npm ci")]
    pub install_command: Option<String>,
    /// Builds the site (detected: the package manager's `run build` when `package.json` has a
    /// `build` script; none without one). An empty string builds nothing.
    #[schema(max_length = 1000, example = "npm run build")]
    pub build_command: Option<String>,
    /// The folder to serve, relative to `root_dir` after a build (detected: the first of the
    /// top, `dist`, `build`, `public`, `out`, `_site`, `site`, `docs` holding an `index.html`).
    #[schema(max_length = 255, example = "dist")]
    pub output_dir: Option<String>,
    /// Whether pushes to branches other than the production branch build branch previews, at
    /// `<branch>--<site>` (null: no). Pull requests always get previews.
    pub branch_previews: Option<bool>,
    /// Whether pull requests from forks get previews (null: no). Their code is not yours: it
    /// builds in the sandbox without your variables, secrets or build cache, but on your build
    /// minutes, so leave it off unless you review who opens them.
    pub fork_previews: Option<bool>,
}

/// The caller's site's build settings.
#[utoipa::path(get, path = "/hosting/settings/{site}", tag = "hosting", security(("bearer" = [])),
    params(("site" = String, Path, description = "The site's name")),
    responses((status = 200, body = BuildSettings),
        crate::http::openapi::NotFound))]
pub(super) async fn site_settings(
    State(state): State<HostingState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<BuildSettings>> {
    let site = sites::owned(&state, user.address, &name).await?;
    let row = sqlx::query_as!(
        BuildSettings,
        "select root_dir, install_command, build_command, output_dir, branch_previews, fork_previews
         from sites where id = $1",
        site.id
    )
    .fetch_one(&state.db)
    .await?;
    Ok(Json(row))
}

/// Replaces the caller's site's build settings (a field left out or `null` is detected); they
/// apply from the next deployment on.
#[utoipa::path(put, path = "/hosting/settings/{site}", tag = "hosting", security(("bearer" = [])),
    params(("site" = String, Path, description = "The site's name")),
    request_body = BuildSettings,
    responses((status = 200, body = BuildSettings),
        crate::http::openapi::NotFound))]
pub(super) async fn set_site_settings(
    State(state): State<HostingState>,
    user: AuthUser,
    Path(name): Path<String>,
    Json(body): Json<BuildSettings>,
) -> ApiResult<Json<BuildSettings>> {
    let site = sites::owned(&state, user.address, &name).await?;
    let settings = BuildSettings {
        root_dir: folder("root_dir", body.root_dir)?,
        install_command: command("install_command", body.install_command)?,
        build_command: command("build_command", body.build_command)?,
        output_dir: folder("output_dir", body.output_dir)?,
        branch_previews: body.branch_previews,
        fork_previews: body.fork_previews,
    };
    sqlx::query!(
        "update sites set root_dir = $2, install_command = $3, build_command = $4, output_dir = $5,
                          branch_previews = $6, fork_previews = $7
         where id = $1",
        site.id,
        settings.root_dir,
        settings.install_command,
        settings.build_command,
        settings.output_dir,
        settings.branch_previews,
        settings.fork_previews
    )
    .execute(&state.db)
    .await?;
    Ok(Json(settings))
}

/// A folder setting as stored: a relative path inside the source without `..`, its slashes
/// tidied (`./dist/` is `dist`); empty means the top.
fn folder(name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let bad = || {
        ApiError::BadRequest(format!(
            "{name} must be a folder inside the source (a relative path without `..`, at most \
             {MAX_FOLDER} characters)"
        ))
    };
    if value.len() > MAX_FOLDER || value.chars().any(char::is_control) {
        return Err(bad());
    }
    let clean = unpack::inside_path(FsPath::new(&value)).map_err(|_| bad())?;
    Ok(Some(clean.to_string_lossy().into_owned()))
}

fn command(name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim().to_owned();
    build::valid_command(name, &value).map_err(ApiError::BadRequest)?;
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_kept_inside_the_source() {
        assert_eq!(
            folder("root_dir", Some("./apps/web/".into())).expect("ok"),
            Some("apps/web".into())
        );
        assert_eq!(folder("root_dir", None).expect("ok"), None);
        for bad in ["../x", "/etc", "a/../../b", "a\\b"] {
            assert!(folder("root_dir", Some(bad.into())).is_err(), "{bad}");
        }
        assert!(folder("output_dir", Some("d".repeat(MAX_FOLDER + 1))).is_err());
        assert_eq!(
            command("build_command", Some("  npm run build ".into())).expect("ok"),
            Some("npm run build".into())
        );
        assert!(command("build_command", Some("a\u{7}b".into())).is_err());
    }
}
