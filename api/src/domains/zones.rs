//! DNS for names bought through the registrar. The platform holds their zones (the registrar's
//! DNS service), so it points them at the site each is linked to: the apex (`@ ALIAS`) and `www`
//! (`CNAME`) at `<site>.<SITES_DOMAIN>.`. A job follows the index: linked, the records are set
//! (the registrar's parking `A` at the apex goes); unlinked, the platform's are removed; relinked,
//! set again; and every zone is read again after `DOMAIN_RECHECK_SECS` to repair what was changed
//! behind the platform's back. Owners keep their own records (MX, TXT, …) through
//! `/domain/dns/{domain}`, which refuses the platform's.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use decentraspace_clients::registrar::{RecordSet, RegistrarError, Zones};
use decentraspace_db::locks::{Lock, try_lead};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DomainsState, normalise};
use crate::{
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
    jobs::{Job, Schedule},
};

/// The time to live of the platform's records.
const TTL: u32 = 300;
/// The longest between two passes (each indexed batch wakes one sooner; a shorter recheck
/// interval, sooner still).
const PERIOD: Duration = Duration::from_secs(30);
/// Record types owners may set.
const OWNER_TYPES: &[&str] = &["A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA"];
/// Values one record set may have.
const MAX_VALUES: usize = 20;

/// The record sets the platform keeps: the apex and `www`.
const PLATFORM_SETS: [(&str, &str); 2] = [("@", "ALIAS"), ("www", "CNAME")];

/// The job that points bought names' zones at their sites (with a registrar configured).
pub fn job(state: &DomainsState) -> Option<Job> {
    let zones = state.zones.clone()?;
    let indexed = state.indexed.clone();
    // At least as often as zones are due to be read again.
    let period = PERIOD.min(Duration::from_secs(state.config.domain_recheck_secs.max(1)));
    let state = state.clone();
    Some(Job::periodic(
        "domain-zones",
        move || {
            Schedule::every(period).woken_by(
                tokio_stream::wrappers::BroadcastStream::new(indexed.subscribe()).map(|_| ()),
            )
        },
        move || {
            let (state, zones) = (state.clone(), zones.clone());
            async move { pass(&state, zones.as_ref()).await }
        },
    ))
}

/// What a bought name's apex and `www` point at for `site`.
fn target(state: &DomainsState, site: &str) -> String {
    format!("{site}.{}.", state.config.sites_domain.trim_end_matches('.'))
}

/// One pass: every bought name whose link changed since its zone was written, or whose zone was
/// not read for the recheck interval.
async fn pass(state: &DomainsState, zones: &dyn Zones) -> anyhow::Result<()> {
    let Some(lock) = try_lead(&state.db, Lock::DomainZones).await? else { return Ok(()) };
    let chain_id = state.chain_id() as i64;
    let due = sqlx::query!(
        r#"select d.name, s.name as "site?"
           from domains d
           left join sites s on s.chain_id = d.chain_id and s.service_id = d.service_id
           left join domain_zones z on z.chain_id = d.chain_id and z.name = d.name
           where d.chain_id = $1 and d.method = 'purchase'
             and (d.expires_at is null or d.expires_at > chain_now($1))
             and ($2::text is null or not d.name like '%.' || $2)
             and not d.name like '%.eth'
             and (z.name is null or z.target is distinct from s.name
                  or z.synced_at < now() - make_interval(secs => $3))
           order by d.name
           limit 200"#,
        chain_id,
        state.config.platform_namespace.as_deref().map(|n| n.trim_end_matches('.')),
        state.config.domain_recheck_secs as f64
    )
    .fetch_all(&state.db)
    .await?;
    let mut failed = 0usize;
    for name in due {
        let target = name.site.as_deref().map(|site| target(state, site));
        match point(zones, &name.name, target.as_deref(), state).await {
            Ok(()) => {
                sqlx::query!(
                    "insert into domain_zones (chain_id, name, target, synced_at)
                     values ($1, $2, $3, now())
                     on conflict (chain_id, name) do update
                     set target = excluded.target, synced_at = excluded.synced_at",
                    chain_id,
                    name.name,
                    name.site
                )
                .execute(&state.db)
                .await?;
            }
            Err(err) => {
                failed += 1;
                tracing::warn!(target: "api::domains", domain = name.name, %err, "zone not pointed; retried next pass");
            }
        }
    }
    drop(lock);
    anyhow::ensure!(failed == 0, "{failed} zones not pointed");
    Ok(())
}

/// Brings `domain`'s platform records in line: pointed at `target`, or (none) removed where they
/// point at a site. Reads the zone first and writes only what differs.
async fn point(
    zones: &dyn Zones,
    domain: &str,
    target: Option<&str>,
    state: &DomainsState,
) -> Result<(), RegistrarError> {
    let current = zones.records(domain).await?;
    let find = |name: &str, kind: &str| current.iter().find(|r| r.name == name && r.r#type == kind);
    match target {
        Some(target) => {
            // An apex address beside the ALIAS (the registrar's parking page) would win.
            for kind in ["A", "AAAA"] {
                if find("@", kind).is_some() {
                    zones.delete_records(domain, "@", kind).await?;
                }
            }
            for (name, kind) in PLATFORM_SETS {
                let wanted = vec![target.to_owned()];
                if find(name, kind).map(|r| &r.values) != Some(&wanted) {
                    let set = RecordSet {
                        name: name.into(),
                        r#type: kind.into(),
                        ttl: TTL,
                        values: wanted,
                    };
                    zones.put_records(domain, &set).await?;
                }
            }
        }
        None => {
            let sites = format!(".{}.", state.config.sites_domain.trim_end_matches('.'));
            for (name, kind) in PLATFORM_SETS {
                if find(name, kind).is_some_and(|r| r.values.iter().all(|v| v.ends_with(&sites))) {
                    zones.delete_records(domain, name, kind).await?;
                }
            }
        }
    }
    Ok(())
}

/// A record set of a bought name's zone.
#[derive(Debug, Serialize, ToSchema)]
pub struct Record {
    /// The name in the zone: `@` for the apex, `www`, `mail`, …
    pub name: String,
    /// Its type.
    pub r#type: String,
    /// Its time to live, in seconds.
    pub ttl: u32,
    /// Its values.
    pub values: Vec<String>,
    /// Whether the platform keeps it (it points the name at its site): not the owner's to change.
    pub platform: bool,
}

/// A record set to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordValues {
    /// Its values, as a zone file writes them (`10 mail.example.com.` for an MX).
    pub values: Vec<String>,
    /// Its time to live, in seconds (300 to 2592000; 3600 when absent).
    pub ttl: Option<u32>,
}

/// Whether `name`/`kind` is one of the platform's sets (or one that would clash with them).
fn reserved(name: &str, kind: &str) -> bool {
    PLATFORM_SETS.contains(&(name, kind))
        || (name == "@" && matches!(kind, "A" | "AAAA" | "CNAME" | "NS"))
        || (name == "www" && kind != "CNAME" && matches!(kind, "A" | "AAAA"))
}

/// The zones client and `domain`, checked to be a name the caller bought through the registrar.
async fn owned_zone(
    state: &DomainsState,
    user: &AuthUser,
    domain: &str,
) -> ApiResult<(Arc<dyn Zones>, String)> {
    let zones = state.zones.clone().ok_or(ApiError::NotConfigured("no registrar is configured"))?;
    let domain = normalise(state, domain)?;
    let owner = sqlx::query_scalar!(
        "select owner from domains
         where chain_id = $1 and name = $2 and method = 'purchase'
           and (expires_at is null or expires_at > chain_now(chain_id))",
        state.chain_id() as i64,
        domain
    )
    .fetch_optional(&state.db)
    .await?;
    let in_namespace = state
        .config
        .platform_namespace
        .as_deref()
        .is_some_and(|n| domain.ends_with(&format!(".{}", n.trim_end_matches('.'))));
    match owner {
        // A `.eth` name has no DNS zone: its resolver says where it points.
        Some(owner)
            if owner == user.address.as_slice() && !in_namespace && !domain.ends_with(".eth") =>
        {
            Ok((zones, domain))
        }
        _ => Err(ApiError::NotFound(format!(
            "{domain} is not a name of yours bought through the platform's registrar"
        ))),
    }
}

fn zone_error(err: RegistrarError) -> ApiError {
    match err {
        RegistrarError::Refused(reason) | RegistrarError::NotFound(reason) => {
            ApiError::Unprocessable { slug: "registrar-refused", detail: reason }
        }
        RegistrarError::Unavailable(cause) => {
            tracing::warn!(target: "api::domains", cause, "registrar DNS unavailable");
            ApiError::Unavailable("the registrar's DNS is unavailable; try again later".into())
        }
    }
}

/// The records of a name the caller bought, the platform's marked.
#[utoipa::path(get, path = "/domain/dns/{domain}", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path, description = "A name bought through the platform")),
    responses((status = 200, body = Vec<Record>), crate::http::openapi::NotFound,
        crate::http::openapi::Unavailable))]
pub async fn list(
    State(state): State<DomainsState>,
    user: AuthUser,
    Path(domain): Path<String>,
) -> ApiResult<Json<Vec<Record>>> {
    let (zones, domain) = owned_zone(&state, &user, &domain).await?;
    let mut records: Vec<Record> = zones
        .records(&domain)
        .await
        .map_err(zone_error)?
        .into_iter()
        .map(|r| Record {
            platform: PLATFORM_SETS.contains(&(r.name.as_str(), r.r#type.as_str())),
            name: r.name,
            r#type: r.r#type,
            ttl: r.ttl,
            values: r.values,
        })
        .collect();
    records.sort_by(|a, b| (&a.name, &a.r#type).cmp(&(&b.name, &b.r#type)));
    Ok(Json(records))
}

/// Checks a record set the owner sets: its name, type, values and time to live.
fn valid(name: &str, kind: &str, values: &RecordValues) -> ApiResult<()> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    if name != "@" && !(name.len() <= 200 && name.split('.').all(label_ok)) {
        return Err(ApiError::BadRequest(format!(
            "{name:?} is not a record name: `@` for the apex, or lowercase labels (`mail`, `_dmarc`)"
        )));
    }
    if reserved(name, kind) {
        return Err(ApiError::Conflict(format!(
            "{name} {kind} is the platform's: it points the name at its site"
        )));
    }
    if !OWNER_TYPES.contains(&kind) {
        return Err(ApiError::BadRequest(format!(
            "records of type {kind:?} are not set here: use one of {}",
            OWNER_TYPES.join(", ")
        )));
    }
    if values.values.is_empty() || values.values.len() > MAX_VALUES {
        return Err(ApiError::BadRequest(format!("give 1 to {MAX_VALUES} values")));
    }
    if let Some(bad) = values
        .values
        .iter()
        .find(|v| v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control))
    {
        return Err(ApiError::BadRequest(format!(
            "{bad:?} is not a record value: 1 to 1024 characters, no control characters"
        )));
    }
    if let Some(ttl) = values.ttl
        && !(300..=2_592_000).contains(&ttl)
    {
        return Err(ApiError::BadRequest(format!("ttl {ttl} is not between 300 and 2592000")));
    }
    Ok(())
}

/// Sets one of the owner's record sets of a name they bought (the platform's are refused).
#[utoipa::path(put, path = "/domain/dns/{domain}/{name}/{type}", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path, description = "A name bought through the platform"),
        ("name" = String, Path, description = "`@` or a name in the zone"),
        ("type" = String, Path, description = "A, AAAA, CNAME, MX, TXT, SRV or CAA")),
    request_body = RecordValues,
    responses((status = 200, body = Record), crate::http::openapi::NotFound,
        crate::http::openapi::Conflict, (status = 422, description = "The registrar refused it"),
        crate::http::openapi::Unavailable))]
pub async fn set(
    State(state): State<DomainsState>,
    user: AuthUser,
    Path((domain, name, kind)): Path<(String, String, String)>,
    Json(values): Json<RecordValues>,
) -> ApiResult<Json<Record>> {
    let (name, kind) = (name.to_ascii_lowercase(), kind.to_ascii_uppercase());
    valid(&name, &kind, &values)?;
    let (zones, domain) = owned_zone(&state, &user, &domain).await?;
    let set = RecordSet {
        name: name.clone(),
        r#type: kind.clone(),
        ttl: values.ttl.unwrap_or(3600),
        values: values.values,
    };
    zones.put_records(&domain, &set).await.map_err(zone_error)?;
    Ok(Json(Record { name, r#type: kind, ttl: set.ttl, values: set.values, platform: false }))
}

/// Removes one of the owner's record sets of a name they bought (the platform's are refused).
#[utoipa::path(delete, path = "/domain/dns/{domain}/{name}/{type}", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path, description = "A name bought through the platform"),
        ("name" = String, Path, description = "`@` or a name in the zone"),
        ("type" = String, Path, description = "The record type")),
    responses((status = 204, description = "Removed (or there was none)"),
        crate::http::openapi::NotFound, crate::http::openapi::Conflict,
        crate::http::openapi::Unavailable))]
pub async fn remove(
    State(state): State<DomainsState>,
    user: AuthUser,
    Path((domain, name, kind)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let (name, kind) = (name.to_ascii_lowercase(), kind.to_ascii_uppercase());
    if reserved(&name, &kind) {
        return Err(ApiError::Conflict(format!(
            "{name} {kind} is the platform's: it points the name at its site"
        )));
    }
    let (zones, domain) = owned_zone(&state, &user, &domain).await?;
    zones.delete_records(&domain, &name, &kind).await.map_err(zone_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(values: &[&str], ttl: Option<u32>) -> RecordValues {
        RecordValues { values: values.iter().map(|v| (*v).to_owned()).collect(), ttl }
    }

    #[test]
    fn owners_set_their_records_and_never_the_platforms() {
        assert!(valid("@", "MX", &values(&["10 mail.example.com."], None)).is_ok());
        assert!(valid("_dmarc", "TXT", &values(&["v=DMARC1; p=none"], Some(300))).is_ok());
        assert!(valid("shop", "CNAME", &values(&["shops.example."], None)).is_ok());
        for (name, kind) in
            [("@", "ALIAS"), ("www", "CNAME"), ("@", "A"), ("@", "CNAME"), ("www", "A")]
        {
            assert!(
                matches!(valid(name, kind, &values(&["x"], None)), Err(ApiError::Conflict(_))),
                "{name} {kind}"
            );
        }
        for (name, kind, v, ttl) in [
            ("Bad Name", "TXT", vec!["x"], None),
            ("mail", "NS", vec!["ns1.example."], None),
            ("mail", "TXT", vec![], None),
            ("mail", "TXT", vec!["a\nb"], None),
            ("mail", "TXT", vec!["x"], Some(10)),
        ] {
            assert!(
                matches!(valid(name, kind, &values(&v, ttl)), Err(ApiError::BadRequest(_))),
                "{name} {kind}"
            );
        }
    }
}
