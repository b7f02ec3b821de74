//! `/domain/link`: the proof to set up (`GET`), and linking a proven domain to one of the caller's
//! sites (`POST`); `/domain/unlink`: the owner's unlink (or release). Linking, unlinking and
//! releasing are the owner's own transactions on `DomainRegistry`: the API answers the call for
//! the wallet to sign and send through the relay (`POST /blockchain/credit`), once it has
//! checked the request and, for a link, recorded the proof on-chain.

use std::time::Duration;

use alloy::{
    primitives::{Address, Bytes, U256, keccak256},
    sol_types::SolCall,
};
use axum::{
    Json,
    extract::{Query, State},
};
use decentraspace_abi::{DomainRegistry, OwnershipMethod};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{normalise, proof};
use crate::{
    domains::DomainsState,
    hosting::sites,
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
};

/// Steps of 100 ms a request waits for a recorded proof to be indexed.
const INDEX_WAIT_STEPS: usize = 100;

/// Which domain.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DomainQuery {
    /// The domain name.
    pub domain: String,
}

/// A DNS record the owner sets.
#[derive(Debug, Serialize, ToSchema)]
pub struct DnsRecord {
    /// `TXT`, `CNAME`, `ALIAS` or (ENS) `contenthash`.
    pub r#type: String,
    /// The record's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A domain's proof and state for the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Challenge {
    /// The domain.
    pub domain: String,
    /// The record that proves the caller controls it (DNS, or Handshake through an HNS-aware
    /// resolver).
    pub proof: DnsRecord,
    /// Its owner on-chain, if it has one.
    pub owner: Option<String>,
    /// The hosting service it is linked to.
    pub service_id: Option<i64>,
}

/// A link to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The domain.
    pub domain: String,
    /// The caller's site to serve on it.
    pub site: String,
    /// How ownership is proven: `dns` (default), `handshake` or `ens`.
    pub method: Option<String>,
}

/// A contract call for the owner's wallet to sign (as a forward request, sent through
/// `POST /blockchain/credit`, or as its own transaction).
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerCall {
    /// The contract (`DomainRegistry`).
    pub to: String,
    /// The calldata.
    pub data: String,
    /// The function.
    pub function: String,
}

/// A verified domain, ready to link.
#[derive(Debug, Serialize, ToSchema)]
pub struct Verified {
    /// The domain.
    pub domain: String,
    /// Its registry key (keccak256 of the name).
    pub node: String,
    /// `dns`, `handshake`, `ens`, or `purchase` (a name bought through the platform).
    pub method: String,
    /// The owner the proof was recorded for: the caller.
    pub owner: String,
    /// The site's hosting service.
    pub service_id: i64,
    /// Whether it is linked to that service already.
    pub linked: bool,
    /// The link to sign (absent when linked already).
    pub call: Option<OwnerCall>,
    /// The records to set that point the domain at the platform's gateway (none when the
    /// platform sets them itself: see `dns_managed`).
    pub records: Vec<DnsRecord>,
    /// Whether the platform points the name at the site itself: a name bought through its
    /// registrar, whose zone it holds. Its apex and `www` follow the link a moment after it is
    /// mined (and are removed on unlink); the owner's other records are theirs
    /// (`/domain/dns/{domain}`).
    pub dns_managed: bool,
}

/// What to unlink.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlinkRequest {
    /// The domain.
    pub domain: String,
    /// Give the name up entirely (its record goes), not only its link.
    #[serde(default)]
    pub release: bool,
}

struct Indexed {
    owner: Vec<u8>,
    method: String,
    service_id: Option<i64>,
    held: bool,
}

async fn indexed(state: &DomainsState, domain: &str) -> ApiResult<Option<Indexed>> {
    Ok(sqlx::query_as!(
        Indexed,
        r#"select owner, method, service_id,
                  (expires_at is null or expires_at > chain_now(chain_id)) as "held!"
           from domains where chain_id = $1 and name = $2"#,
        state.chain_id() as i64,
        domain
    )
    .fetch_optional(&state.db)
    .await?)
}

fn call(state: &DomainsState, data: Vec<u8>, function: &str) -> OwnerCall {
    OwnerCall {
        to: state.deployment.contracts.domain_registry.to_string(),
        data: Bytes::from(data).to_string(),
        function: function.into(),
    }
}

/// The proof to set up for a domain, and where it stands on-chain.
#[utoipa::path(get, path = "/domain/link", tag = "domains", security(("bearer" = [])),
    params(DomainQuery),
    responses((status = 200, body = Challenge)))]
pub async fn challenge(
    State(state): State<DomainsState>,
    user: AuthUser,
    Query(q): Query<DomainQuery>,
) -> ApiResult<Json<Challenge>> {
    let domain = normalise(&state, &q.domain)?;
    let (name, value) = proof::challenge(&state, user.address, &domain);
    let record = indexed(&state, &domain).await?.filter(|r| r.held);
    Ok(Json(Challenge {
        proof: DnsRecord { r#type: "TXT".into(), name, value },
        owner: record.as_ref().map(|r| Address::from_slice(&r.owner).to_string()),
        service_id: record.and_then(|r| r.service_id),
        domain,
    }))
}

/// Links a domain to one of the caller's sites: checks the proof (the TXT record from
/// `GET /domain/link`), records it on-chain, and answers the link for the wallet to sign, with
/// the records that point the domain at the gateway.
#[utoipa::path(post, path = "/domain/link", tag = "domains", security(("bearer" = [])),
    request_body = LinkRequest,
    responses((status = 200, body = Verified),
        (status = 404, description = "No such site of the caller's"),
        (status = 409, description = "The name is held by a purchase, or the site has no service yet"),
        (status = 422, description = "The proof is missing or wrong: the answer says what to set"),
        crate::http::openapi::Unavailable))]
pub async fn link(
    State(state): State<DomainsState>,
    user: AuthUser,
    Json(request): Json<LinkRequest>,
) -> ApiResult<Json<Verified>> {
    let domain = normalise(&state, &request.domain)?;
    let method = match request.method.as_deref().unwrap_or("dns") {
        "dns" => OwnershipMethod::Dns,
        "handshake" => OwnershipMethod::Handshake,
        "ens" => OwnershipMethod::Ens,
        other => {
            return Err(ApiError::BadRequest(format!(
                "method is dns, handshake or ens, not {other:?}"
            )));
        }
    };
    let site = sites::owned(&state, user.address, &request.site).await?;
    let service_id = sqlx::query_scalar!("select service_id from sites where id = $1", site.id)
        .fetch_one(&state.db)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "site {} has no hosting service yet: deploy it first",
                site.name
            ))
        })?;
    let current = indexed(&state, &domain).await?;
    if let Some(record) = &current
        && record.held
        && record.method == "purchase"
        && record.owner != user.address.as_slice()
    {
        return Err(ApiError::Conflict(format!(
            "{domain} is registered through the platform to another wallet"
        )));
    }

    // A name the caller bought through the platform is theirs on-chain: no proof to make.
    let bought = current
        .as_ref()
        .is_some_and(|r| r.held && r.method == "purchase" && r.owner == user.address.as_slice());
    let method = if bought { OwnershipMethod::Purchase } else { method };
    // ENS proves ENS names; a DNS name's ENS record may be stale, and must not displace its
    // DNS owner.
    if method == OwnershipMethod::Ens && !domain.ends_with(".eth") {
        return Err(ApiError::BadRequest(format!(
            "{domain} is not an ENS name: prove it with dns (or handshake)"
        )));
    }

    // The proof, as the name says it now.
    let (record_name, expected) = proof::challenge(&state, user.address, &domain);
    match method {
        OwnershipMethod::Purchase => {}
        OwnershipMethod::Ens => ens_owner(&state, &domain, user.address).await?,
        _ => txt_proof(&state, method, &domain, &record_name, &expected).await?,
    }

    // Recorded on-chain, unless the caller's proof by this method is recorded already.
    let recorded = bought
        || current.as_ref().is_some_and(|r| {
            r.held && r.owner == user.address.as_slice() && r.method == method.as_str()
        });
    if !recorded {
        record_proof(&state, &domain, user.address, method).await?;
    }
    let node = keccak256(domain.as_bytes());
    let linked = indexed(&state, &domain).await?.and_then(|r| r.service_id) == Some(service_id);
    let link_call = DomainRegistry::linkCall { node, serviceId: U256::from(service_id as u64) };
    let gateway_host = format!("{}.{}", site.name, state.config.sites_domain.trim_end_matches('.'));
    let in_namespace = state
        .config
        .platform_namespace
        .as_deref()
        .is_some_and(|n| domain.ends_with(&format!(".{}", n.trim_end_matches('.'))));
    let ens_name = domain.ends_with(".eth");
    let dns_managed = bought && !in_namespace && !ens_name && state.zones.is_some();
    let records = if dns_managed {
        Vec::new()
    } else if ens_name {
        // An ENS name points at content by its resolver's contenthash: the site's current
        // directory on IPFS (a static site's). Once linked, `GET /domain/ens/{name}/contenthash`
        // gives the site's IPNS name instead, which follows every deploy.
        let cid = sqlx::query_scalar!(
            "select d.content_id from sites s join deployments d on d.id = s.current_deployment_id
             where s.id = $1",
            site.id
        )
        .fetch_optional(&state.db)
        .await?
        .flatten();
        cid.map(|cid| DnsRecord {
            r#type: "contenthash".into(),
            name: domain.clone(),
            value: format!("ipfs://{cid}"),
        })
        .into_iter()
        .collect()
    } else {
        vec![DnsRecord {
            // A CNAME cannot sit at a zone's apex: there, an ALIAS/ANAME (or flattening).
            r#type: if domain.matches('.').count() == 1 { "ALIAS" } else { "CNAME" }.into(),
            name: domain.clone(),
            value: gateway_host,
        }]
        .into_iter()
        .chain((method != OwnershipMethod::Purchase).then_some(DnsRecord {
            r#type: "TXT".into(),
            name: record_name,
            value: expected,
        }))
        .collect()
    };
    Ok(Json(Verified {
        node: node.to_string(),
        method: method.as_str().into(),
        owner: user.address.to_string(),
        service_id,
        linked,
        call: (!linked).then(|| call(&state, link_call.abi_encode(), "link")),
        records,
        dns_managed,
        domain,
    }))
}

/// Checks the TXT proof through the resolver for `method`: 422 naming what to set when it is
/// missing or wrong.
async fn txt_proof(
    state: &DomainsState,
    method: OwnershipMethod,
    domain: &str,
    record_name: &str,
    expected: &str,
) -> ApiResult<()> {
    let resolver = match method {
        OwnershipMethod::Handshake => state
            .hns
            .as_ref()
            .ok_or_else(|| ApiError::NotConfigured("no Handshake resolver is configured"))?,
        _ => state
            .dns
            .as_ref()
            .ok_or_else(|| ApiError::NotConfigured("no DNS resolver is configured"))?,
    };
    let found = resolver.txt(record_name).await.map_err(|err| {
        tracing::warn!(target: "api::domains", %err, "TXT lookup failed");
        ApiError::Unavailable(format!("the TXT record of {domain} could not be read; try again"))
    })?;
    if !found.iter().any(|v| v == expected) {
        return Err(ApiError::Unprocessable {
            slug: "domain-proof-missing",
            detail: format!(
                "add a TXT record named {record_name} with the value {expected}, wait for it to \
                 be published, then link again (found {})",
                if found.is_empty() { "no TXT record".to_owned() } else { format!("{found:?}") }
            ),
        });
    }
    Ok(())
}

/// Checks the caller's wallet owns the ENS name (directly or wrapped): 403 when another does.
async fn ens_owner(state: &DomainsState, domain: &str, wallet: Address) -> ApiResult<()> {
    let ens =
        state.ens.as_ref().ok_or_else(|| ApiError::NotConfigured("no ENS RPC is configured"))?;
    let owner = ens
        .owner(domain)
        .await
        .map_err(|err| crate::http::error::chain_unavailable("read the ENS registry", err))?;
    match owner {
        Some(owner) if owner == wallet => Ok(()),
        Some(owner) => Err(ApiError::Forbidden(format!(
            "{domain} is owned on ENS by {owner}, not by your wallet"
        ))),
        None => Err(ApiError::Unprocessable {
            slug: "domain-proof-missing",
            detail: format!("{domain} has no owner on ENS: register it to your wallet first"),
        }),
    }
}

/// Records the proof on-chain with the verifier key and waits for the index to have it.
async fn record_proof(
    state: &DomainsState,
    domain: &str,
    owner: Address,
    method: OwnershipMethod,
) -> ApiResult<()> {
    let verifier = state
        .verifier
        .as_ref()
        .ok_or_else(|| ApiError::NotConfigured("no verifier key is configured"))?;
    let registry = DomainRegistry::new(
        state.deployment.contracts.domain_registry,
        verifier.provider().clone(),
    );
    verifier
        .send_for_receipt(registry.recordVerification(domain.to_owned(), owner, method.into()))
        .await?;
    for _ in 0..INDEX_WAIT_STEPS {
        let record = indexed(state, domain).await?;
        if record.is_some_and(|r| r.owner == owner.as_slice() && r.method == method.as_str()) {
            // A fresh proof: any missing-proof history of the name is over.
            sqlx::query!(
                "delete from domain_checks where chain_id = $1 and name = $2",
                state.chain_id() as i64,
                domain
            )
            .execute(&state.db)
            .await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ApiError::Unavailable(format!(
        "the proof of {domain} was recorded but is not indexed yet; link again in a moment"
    )))
}

/// Unlinks one of the caller's domains from its site (or releases the name): answers the call
/// for the owner's wallet to sign. Only the owner may.
#[utoipa::path(post, path = "/domain/unlink", tag = "domains", security(("bearer" = [])),
    request_body = UnlinkRequest,
    responses((status = 200, body = OwnerCall),
        (status = 403, description = "Another wallet owns the domain"),
        crate::http::openapi::NotFound,
        (status = 409, description = "It is not linked")))]
pub async fn unlink(
    State(state): State<DomainsState>,
    user: AuthUser,
    Json(request): Json<UnlinkRequest>,
) -> ApiResult<Json<OwnerCall>> {
    let domain = normalise(&state, &request.domain)?;
    let record = indexed(&state, &domain)
        .await?
        .filter(|r| r.held)
        .ok_or_else(|| ApiError::NotFound(format!("no record of {domain}")))?;
    if record.owner != user.address.as_slice() {
        return Err(ApiError::Forbidden(format!("{domain} belongs to another wallet")));
    }
    let node = keccak256(domain.as_bytes());
    if request.release {
        return Ok(Json(call(
            &state,
            DomainRegistry::releaseCall { node }.abi_encode(),
            "release",
        )));
    }
    if record.service_id.is_none() {
        return Err(ApiError::Conflict(format!("{domain} is not linked to a site")));
    }
    Ok(Json(call(&state, DomainRegistry::unlinkCall { node }.abi_encode(), "unlink")))
}
