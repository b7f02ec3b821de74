//! ENS names that follow deploys: an ENS name linked to a site points its resolver's content
//! hash (ENSIP-7) at the site's IPNS name once, with a transaction its owner signs; every later
//! deploy or rollback moves what the IPNS name resolves to, so the name needs nothing more.

use axum::{
    Json,
    extract::{Path, State},
};
use decentraspace_clients::ens::{ipns_contenthash, set_contenthash_call};
use serde::Serialize;
use utoipa::ToSchema;

use super::{DomainsState, normalise_ens};
use crate::http::{
    auth::AuthUser,
    error::{ApiError, ApiResult, chain_unavailable},
};

/// The call that points an ENS name at its site.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContenthashCall {
    /// The resolver to send it to.
    pub to: String,
    /// `setContenthash(bytes32,bytes)`.
    pub function: String,
    /// The calldata, hex.
    pub data: String,
}

/// Where an ENS name's content hash stands against its site's IPNS name.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnsContent {
    /// The name, normalised (ENSIP-15).
    pub name: String,
    /// The site it is linked to.
    pub site: String,
    /// The site's IPNS name (a CIDv1 in base36), which every deploy moves.
    pub ipns_name: String,
    /// The content hash that points at it (ENSIP-7, `ipns-ns`), hex.
    pub contenthash: String,
    /// What the name's resolver holds now, hex (`0x` when nothing).
    pub current_contenthash: String,
    /// Whether the resolver already points at the site.
    pub points_at_site: bool,
    /// The transaction for the name's owner to sign once (none once it points at the site).
    pub call: Option<ContenthashCall>,
}

/// The content hash that makes an ENS name the caller linked follow its site's deploys.
#[utoipa::path(get, path = "/domain/ens/{name}/contenthash", tag = "domains",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "An ENS name linked to one of the caller's sites")),
    responses((status = 200, body = EnsContent), crate::http::openapi::NotFound,
        crate::http::openapi::Conflict, crate::http::openapi::Unavailable))]
pub async fn show(
    State(state): State<DomainsState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<EnsContent>> {
    let name = normalise_ens(&name)?;
    let ens =
        state.ens.as_ref().ok_or_else(|| ApiError::NotConfigured("no ENS RPC is configured"))?;
    let linked = sqlx::query!(
        r#"select s.name as site, s.kind, n.ipns_name as "ipns_name?"
           from domains d
           join sites s on s.chain_id = d.chain_id and s.service_id = d.service_id
           left join site_names n on n.site_id = s.id
           where d.chain_id = $1 and d.name = $2 and d.method in ('ens', 'purchase')
             and d.owner = $3"#,
        state.chain_id() as i64,
        name,
        user.address.as_slice()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| {
        ApiError::NotFound(format!("{name} is not an ENS name you linked to one of your sites"))
    })?;
    if linked.kind != "static" {
        return Err(ApiError::Conflict(format!(
            "{} is a dynamic site: only static sites have an IPNS name",
            linked.site
        )));
    }
    let ipns_name = linked.ipns_name.ok_or_else(|| {
        ApiError::Conflict(format!(
            "{}'s IPNS name is not published yet: it is once a deployment is live; try again \
             in a moment",
            linked.site
        ))
    })?;
    let wanted = ipns_contenthash(&ipns_name).map_err(|err| {
        tracing::error!(target: "api::domains", %err, "a stored IPNS name does not encode");
        ApiError::Internal(anyhow::anyhow!("the site's IPNS name does not encode"))
    })?;
    let resolver = ens
        .resolver(&name)
        .await
        .map_err(|err| chain_unavailable("read the ENS registry", err))?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "{name} has no resolver: set one (such as ENS's public resolver) first"
            ))
        })?;
    let current = ens
        .contenthash(resolver, &name)
        .await
        .map_err(|err| chain_unavailable("read the name's resolver", err))?;
    let points_at_site = current == wanted;
    Ok(Json(EnsContent {
        call: (!points_at_site).then(|| ContenthashCall {
            to: resolver.to_string(),
            function: "setContenthash".into(),
            data: format!("0x{}", hex::encode(set_contenthash_call(&name, &wanted))),
        }),
        contenthash: format!("0x{}", hex::encode(&wanted)),
        current_contenthash: format!("0x{}", hex::encode(&current)),
        points_at_site,
        ipns_name,
        site: linked.site,
        name,
    }))
}
