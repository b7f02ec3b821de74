//! `/hosting/deploy`: deploy a static site from an uploaded archive, or a dynamic site (Paid) from
//! a container image (either queued for the deploy job), read a deployment with its log, list a
//! site's deployments, and roll back to an earlier one.

use axum::{
    Json,
    extract::{Multipart, Path, Query, State, multipart::Field},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use decentraspace_abi::Tier;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    Deployment, DeploymentPage,
    sites::{self, claim, hosting_service},
};
use crate::{
    hosting::HostingState,
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
        pagination::page_limit,
    },
    platform::Platform,
    storage::upload::{multipart_error, stream_to_ipfs},
};

/// The longest text part taken (a site name, an output folder).
const MAX_TEXT_PART: usize = 256;

/// Deploys a site. Send `multipart/form-data` with a `site` part (the site's name: a DNS label,
/// claimed on the first deployment), then either, for a static site, optionally `output_dir`
/// (the folder to serve; detected otherwise) and `spa_fallback` (`true`/`false`), then an
/// `archive` part holding a tar.gz or zip; or, for a dynamic site (Paid accounts), `runtime` =
/// `dynamic`, `image` (a container image reference) and `port` (the port it serves HTTP on). The
/// deploy job publishes the archive, or starts the image on a machine: follow the deployment at
/// the `Location` answered.
#[utoipa::path(post, path = "/hosting/deploy", tag = "hosting", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data",
        description = "`site`, then optional `output_dir` and `spa_fallback` and `archive` (tar.gz or zip); or `runtime=dynamic`, `image` and `port`"),
    responses(
        (status = 202, description = "Queued", body = Deployment),
        (status = 402, description = "The available credit cannot pay an hour of the site, or a build past this month's included minutes: `shortfall` says how much"),
        (status = 403, description = "The tier hosts no more sites, or dynamic sites need the Paid tier"),
        (status = 409, description = "The name is taken, the site is of the other kind, or its service is not active"),
        (status = 413, description = "The archive is over the limit"),
        crate::http::openapi::Unavailable))]
pub(super) async fn deploy(
    State(state): State<HostingState>,
    user: AuthUser,
    mut multipart: Multipart,
) -> ApiResult<(StatusCode, HeaderMap, Json<Deployment>)> {
    let (mut name, mut output_dir, mut spa) = (None, None, None);
    let (mut runtime, mut image, mut port) = (None, None, None);
    let field = loop {
        let Some(field) = multipart.next_field().await.map_err(multipart_error)? else {
            break None;
        };
        let part = field.name().unwrap_or_default().to_owned();
        if part == "archive" {
            break Some(field);
        }
        let text = short_text(field, &part).await?;
        match part.as_str() {
            "site" => name = Some(text.trim().to_owned()),
            "output_dir" => output_dir = Some(text.trim().trim_matches('/').to_owned()),
            "spa_fallback" => {
                spa = Some(text.trim().parse::<bool>().map_err(|_| {
                    ApiError::BadRequest("`spa_fallback` is `true` or `false`".into())
                })?);
            }
            "runtime" => runtime = Some(text.trim().to_owned()),
            "image" => image = Some(text.trim().to_owned()),
            "port" => {
                port =
                    Some(text.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        ApiError::BadRequest("`port` is a TCP port, 1 to 65535".into())
                    })?);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unexpected part {other:?}: send `site`, optionally `output_dir` and \
                     `spa_fallback`, then `archive`; or `site`, `runtime`, `image` and `port`"
                )));
            }
        }
    };
    let name = name.ok_or_else(|| {
        ApiError::BadRequest("send the `site` part (the site's name) first".into())
    })?;
    match runtime.as_deref().unwrap_or("static") {
        "static" => {}
        "dynamic" => {
            if field.is_some() || output_dir.is_some() || spa.is_some() {
                return Err(ApiError::BadRequest(
                    "a dynamic site deploys an `image` and `port`, not an archive".into(),
                ));
            }
            let image = image.ok_or_else(|| {
                ApiError::BadRequest("a dynamic site needs `image` and `port`".into())
            })?;
            let port =
                port.ok_or_else(|| ApiError::BadRequest("a dynamic site needs `port`".into()))?;
            return deploy_image(&state, &user, &name, &image, port).await;
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "`runtime` is `static` (the default) or `dynamic`, not {other:?}"
            )));
        }
    }
    if image.is_some() || port.is_some() {
        return Err(ApiError::BadRequest(
            "`image` and `port` are for dynamic sites: send `runtime=dynamic`".into(),
        ));
    }
    let field =
        field.ok_or_else(|| ApiError::BadRequest("the deploy has no `archive` part".into()))?;
    let ipfs =
        state.ipfs.clone().ok_or_else(|| ApiError::NotConfigured("no IPFS node is configured"))?;
    let output_dir = output_dir.filter(|d| !d.is_empty());
    // The source may need a build: refused now if the account could not pay for one.
    super::check_build_minutes(&state, user.address).await?;
    let site = claim(&state, user.address, &name, "static", spa, output_dir.as_deref()).await?;
    if let Err(err) = hosting_service(&state, &site).await {
        sites::release_unused(&state, &site).await?;
        return Err(err);
    }

    let limit = state.config.deploy_max_archive_bytes;
    let over = || ApiError::TooLarge {
        slug: "archive-too-large",
        detail: format!("a site's archive may have up to {limit} bytes"),
    };
    let (added, _size) =
        stream_to_ipfs(&ipfs, field, "archive", "application/octet-stream", limit, over).await?;
    if multipart.next_field().await.map_err(multipart_error)?.is_some() {
        ipfs.unpin(&added.cid).await.ok();
        return Err(ApiError::BadRequest("send one `archive` part, last".into()));
    }
    let mut tx = state.db.begin().await?;
    let id = sqlx::query_scalar!(
        "insert into deployments (site_id, source, archive_cid) values ($1, 'upload', $2)
         returning id",
        site.id,
        added.cid
    )
    .fetch_one(&mut *tx)
    .await?;
    queued(tx, id).await
}

/// The answer to a deployment queued in `tx`: 202, its `Location`, and the deployment as queued
/// (read before the commit that wakes the workers, so the answer does not race them).
async fn queued(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
) -> ApiResult<(StatusCode, HeaderMap, Json<Deployment>)> {
    let deployment = load_in(&mut tx, id).await?;
    tx.commit().await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/hosting/deploy/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, headers, Json(deployment)))
}

/// Checks a container image reference: `[registry/]name[:tag][@digest]`, 1 to 255 characters of
/// lowercase letters, digits and `. / : _ @ -`.
fn valid_image(image: &str) -> ApiResult<()> {
    let ok = (1..=255).contains(&image.len())
        && image
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".:/_@-".contains(&b))
        && image.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && !image.contains("//");
    if !ok {
        return Err(ApiError::BadRequest(format!(
            "image {image:?}: use a container image reference such as registry.example/app:1.2"
        )));
    }
    Ok(())
}

/// Queues a dynamic site's deployment of `image` serving on `port`.
async fn deploy_image(
    state: &HostingState,
    user: &AuthUser,
    name: &str,
    image: &str,
    port: u16,
) -> ApiResult<(StatusCode, HeaderMap, Json<Deployment>)> {
    valid_image(image)?;
    if state.runtime.is_none() {
        return Err(ApiError::NotConfigured("no runtime for dynamic sites is configured"));
    }
    if crate::accounts::tier::effective_tier(state, user.address).await? != Tier::Paid {
        return Err(ApiError::PaidTierRequired(
            "dynamic sites are for Paid accounts; upgrade, or deploy a static site".into(),
        ));
    }
    let site = claim(state, user.address, name, "dynamic", None, None).await?;
    if let Err(err) = hosting_service(state, &site).await {
        sites::release_unused(state, &site).await?;
        return Err(err);
    }
    let mut tx = state.db.begin().await?;
    let id = sqlx::query_scalar!(
        "insert into deployments (site_id, source, image, port) values ($1, 'image', $2, $3)
         returning id",
        site.id,
        image,
        i32::from(port)
    )
    .fetch_one(&mut *tx)
    .await?;
    queued(tx, id).await
}

/// A text part of at most [`MAX_TEXT_PART`] bytes, read no further than that.
async fn short_text(mut field: Field<'_>, part: &str) -> ApiResult<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_TEXT_PART {
            return Err(ApiError::BadRequest(format!("`{part}` is over {MAX_TEXT_PART} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest(format!("`{part}` is not UTF-8")))?;
    crate::http::input::refuse_nul_in_text(part, &text)?;
    Ok(text)
}

/// A deployment, as its owner sees it.
pub async fn load(state: &Platform, id: i64) -> ApiResult<Deployment> {
    load_in(&mut *state.db.acquire().await?, id).await
}

/// [`load`] on `conn` (inside a transaction, it sees that transaction's writes).
pub async fn load_in(conn: &mut sqlx::PgConnection, id: i64) -> ApiResult<Deployment> {
    let d = sqlx::query!(
        r#"select d.id, s.name as site, d.preview, d.source, d.state, coalesce(s.current_deployment_id = d.id, false) as "current!",
                  d.repository, d.git_ref, d.commit_sha, d.content_id, d.files, d.size_bytes,
                  d.image, d.port, d.error, d.log, d.log_dropped, d.created_at, d.finished_at
           from deployments d join sites s on s.id = d.site_id
           where d.id = $1"#,
        id
    )
    .fetch_one(conn)
    .await?;
    Ok(Deployment {
        id: d.id,
        site: d.site,
        preview: d.preview,
        source: d.source,
        state: d.state,
        current: d.current,
        repository: d.repository,
        git_ref: d.git_ref,
        commit: d.commit_sha,
        cid: d.content_id,
        files: d.files,
        size: d.size_bytes,
        image: d.image,
        port: d.port,
        error: d.error,
        log: super::log::whole(d.log, d.log_dropped),
        created_at: d.created_at,
        finished_at: d.finished_at,
    })
}

/// The deployment `id` when it is one of the caller's sites', else 404.
pub(super) async fn owned_deployment(
    state: &HostingState,
    user: &AuthUser,
    id: i64,
) -> ApiResult<Deployment> {
    let owner = sqlx::query_scalar!(
        "select s.account from deployments d join sites s on s.id = d.site_id
         where d.id = $1 and s.chain_id = $2",
        id,
        state.chain_id() as i64
    )
    .fetch_optional(&state.db)
    .await?;
    match owner {
        Some(owner) if owner == user.address.as_slice() => load(state, id).await,
        _ => Err(ApiError::NotFound(format!("you have no deployment {id}"))),
    }
}

/// One of the caller's deployments, with its state and log.
#[utoipa::path(get, path = "/hosting/deploy/{id}", tag = "hosting", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The deployment")),
    responses((status = 200, body = Deployment),
        crate::http::openapi::NotFound))]
pub(super) async fn deployment(
    State(state): State<HostingState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Deployment>> {
    Ok(Json(owned_deployment(&state, &user, id).await?))
}

/// Which site's deployments, and the page.
#[derive(Debug, Deserialize, IntoParams)]
pub(super) struct HistoryQuery {
    /// The site's name.
    site: String,
    /// Deployments per page (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A site's deployments, newest first.
#[utoipa::path(get, path = "/hosting/deploy", tag = "hosting", security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, body = DeploymentPage),
        crate::http::openapi::NotFound))]
pub(super) async fn history(
    State(state): State<HostingState>,
    user: AuthUser,
    Query(query): Query<HistoryQuery>,
) -> ApiResult<Json<DeploymentPage>> {
    let limit = page_limit(query.limit)?;
    let cursor = match &query.cursor {
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::BadRequest(format!("invalid cursor {c:?}: pass the next_cursor of a page"))
        })?),
        None => None,
    };
    let site = sites::owned(&state, user.address, &query.site).await?;
    let ids = sqlx::query_scalar!(
        "select id from deployments where site_id = $1 and id < coalesce($2, 9223372036854775807)
         order by id desc limit $3",
        site.id,
        cursor,
        limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let more = ids.len() as i64 > limit;
    let mut items = Vec::with_capacity(ids.len());
    for id in ids.iter().take(limit as usize) {
        items.push(load(&state, *id).await?);
    }
    let next_cursor = if more { items.last().map(|d| d.id.to_string()) } else { None };
    Ok(Json(DeploymentPage { items, next_cursor }))
}

/// Serves an earlier live deployment of the site again (or the newest one once more).
#[utoipa::path(post, path = "/hosting/deploy/{id}/rollback", tag = "hosting", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The deployment to serve")),
    responses((status = 200, description = "A static site serves the deployment again", body = Deployment),
        (status = 202, description = "A dynamic site's image is deployed again: the new deployment is queued (its URL in `Location`)",
            body = Deployment),
        crate::http::openapi::NotFound,
        (status = 409, description = "The deployment never went live, or is a preview's")))]
pub(super) async fn rollback(
    State(state): State<HostingState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let deployment = owned_deployment(&state, &user, id).await?;
    if let Some(preview) = &deployment.preview {
        return Err(ApiError::Conflict(format!(
            "deployment {id} is a build of the preview {preview}: merge and push to deploy it"
        )));
    }
    if deployment.state != "live" {
        return Err(ApiError::Conflict(format!(
            "deployment {id} is {}: only a deployment that went live can be served",
            deployment.state
        )));
    }
    // A dynamic site's earlier machine is gone: its image is deployed again.
    if let (Some(image), Some(port)) = (&deployment.image, deployment.port) {
        let mut tx = state.db.begin().await?;
        let again = sqlx::query_scalar!(
            "insert into deployments (site_id, source, image, port, log)
             select site_id, 'image', $2, $3, $4 from deployments where id = $1
             returning id",
            id,
            image,
            port,
            super::log::stamped(&format!("rollback to deployment {id}"))
        )
        .fetch_one(&mut *tx)
        .await?;
        return Ok(queued(tx, again).await?.into_response());
    }
    sqlx::query!(
        "update sites set current_deployment_id = $1
         where id = (select site_id from deployments where id = $1)",
        id
    )
    .execute(&state.db)
    .await?;
    sqlx::query!(
        "update deployments set log = log || $2 where id = $1",
        id,
        super::log::stamped("served again (rollback)")
    )
    .execute(&state.db)
    .await?;
    state.wakes.now(&state.db, crate::wakes::Wake::SiteNames).await;
    Ok(Json(load(&state, id).await?).into_response())
}
