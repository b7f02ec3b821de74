//! `/domain`: custom domains for hosted sites. A name is bought through the registrar (paid in
//! credits, recorded on-chain with its expiry), or an external name's ownership is proven (a DNS
//! TXT record, the same through a Handshake-aware resolver, or the wallet owning the ENS name)
//! and recorded on-chain by the verifier (`DomainRegistry.recordVerification`). The link itself
//! is the owner's own transaction (`link(node, serviceId)`), signed by the wallet and sent
//! through the relay; the gateway then serves the site on that host. Proofs are re-checked
//! periodically. See `docs/adr/0008-domains.md`.

pub mod contenthash;
pub mod eth;
pub mod link;
pub mod proof;
pub mod purchase;
pub mod recovery;
pub mod reminders;
pub mod renewals;
pub mod reverify;
pub mod zones;

use std::sync::Arc;

use axum::extract::FromRef;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::{
    auth::Auth,
    error::{ApiError, ApiResult},
};

/// The domain routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    DomainsState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(link::challenge, link::link))
        .routes(routes!(link::unlink))
        .routes(routes!(purchase::price, purchase::buy))
        .routes(routes!(purchase::renew))
        .routes(routes!(purchase::show))
        .routes(routes!(renewals::set))
        .routes(routes!(zones::list))
        .routes(routes!(zones::set, zones::remove))
        .routes(routes!(contenthash::show))
}

/// What domains use: the platform with the keys that charge and refund purchases, the proof
/// resolvers and ENS, the registrar and its key, and the verifier key.
#[derive(Debug, Clone)]
pub struct DomainsState {
    /// The platform, with the billing and payment-oracle keys.
    pub charges: crate::billing::charges::Charges,
    /// Looks up DNS proofs.
    pub dns: Option<proof::TxtResolver>,
    /// Looks up Handshake proofs, when a Handshake-aware resolver is configured.
    pub hns: Option<proof::TxtResolver>,
    /// Reads ENS ownership, when an ENS RPC is configured.
    pub ens: Option<decentraspace_clients::ens::Ens>,
    /// The registrar names are bought through, when configured.
    pub registrar: Option<Arc<dyn decentraspace_clients::registrar::Registrar>>,
    /// The registrar's DNS, which serves the zones of names bought through it.
    pub zones: Option<Arc<dyn decentraspace_clients::registrar::Zones>>,
    /// Ticks after each indexed batch: bought names' zones follow their links at once.
    pub indexed: tokio::sync::broadcast::Sender<()>,
    /// Records purchases on-chain, when a registrar key is configured.
    pub registrar_key: Option<crate::chain::Operator>,
    /// Records proven domain ownership on-chain, when a verifier key is configured.
    pub verifier: Option<crate::chain::Operator>,
    /// Registers and renews `.eth` names at ENS, when a controller and key are configured.
    pub eth: Option<eth::EthNames>,
}

impl std::ops::Deref for DomainsState {
    type Target = crate::billing::charges::Charges;

    fn deref(&self) -> &Self::Target {
        &self.charges
    }
}

/// The domain jobs, each every its configured interval unless 0: settling interrupted purchases,
/// expiry reminders, automatic renewals, and re-verifying linked domains' proofs; and, with a
/// registrar, pointing bought names' zones at their sites.
pub fn jobs(state: &DomainsState) -> Vec<crate::jobs::Job> {
    let config = &state.config;
    let every = |secs: u64| (secs > 0).then(|| std::time::Duration::from_secs(secs));
    let mut jobs = Vec::new();
    jobs.extend(every(config.domain_recovery_secs).map(|d| recovery::job(state, d)));
    jobs.extend(every(config.domain_reminder_secs).map(|d| reminders::job(state, d)));
    jobs.extend(every(config.domain_auto_renew_secs).map(|d| renewals::job(state, d)));
    jobs.extend(every(config.domain_recheck_secs).map(|d| reverify::job(state, d)));
    jobs.extend(zones::job(state));
    jobs.extend(recovery::eth_job(state));
    jobs
}

/// The longest domain name (RFC 1035).
const MAX_NAME: usize = 253;

/// ENSIP-15's normaliser, its tables loaded once.
static ENS_NORMALIZER: std::sync::LazyLock<ens_normalize_rs::EnsNameNormalizer> =
    std::sync::LazyLock::new(ens_normalize_rs::EnsNameNormalizer::default);

/// An ENS name as ENSIP-15 normalises it (`Café.ETH` → `café.eth`; emoji kept, invisible and
/// confusable characters refused): the form ENS hashes, so the one the registry keys.
pub fn normalise_ens(name: &str) -> ApiResult<String> {
    let name = name.trim().trim_end_matches('.');
    let normalised = ENS_NORMALIZER.normalize(name).map_err(|err| {
        ApiError::BadRequest(format!("{name:?} is not a valid ENS name (ENSIP-15): {err}"))
    })?;
    if normalised.len() > MAX_NAME || !normalised.ends_with(".eth") || normalised == "eth" {
        return Err(ApiError::BadRequest(format!("{name:?} is not a name under .eth")));
    }
    Ok(normalised)
}

/// A domain name as the registry keys it: an ENS name (`.eth`) as ENSIP-15 normalises it;
/// otherwise lowercase ASCII (IDNs in their `xn--` form), no trailing dot, at least two labels
/// of letters, digits and inner hyphens. Names under the platform's own sites domain are the
/// platform's.
pub fn normalise(state: &DomainsState, name: &str) -> ApiResult<String> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.to_lowercase().ends_with(".eth") {
        return normalise_ens(trimmed);
    }
    let name = trimmed.to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !valid {
        return Err(ApiError::BadRequest(format!(
            "{name:?} is not a domain name: use labels of letters, digits and hyphens, such as \
             www.example.com (internationalised names in their xn-- form)"
        )));
    }
    let platform = state.config.sites_domain.trim_end_matches('.');
    if name == platform || name.ends_with(&format!(".{platform}")) {
        return Err(ApiError::Conflict(format!(
            "{name} is under the platform's own domain; every site already has <name>.{platform}"
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::normalise_ens;

    #[test]
    fn ens_names_normalise_as_ensip_15_says() {
        // ENSIP-15's own examples and the upstream validation corpus's kinds of cases.
        for (input, normalised) in [
            ("RaFFY🚴‍♂️.eTh", "raffy🚴‍♂.eth"),
            ("Levvv.eth", "levvv.eth"),
            ("Café.eth", "café.eth"),
            ("🅰️🅱.eth", "🅰🅱.eth"),
            ("nick.eth.", "nick.eth"),
        ] {
            assert_eq!(normalise_ens(input).unwrap(), normalised, "{input}");
        }
        for refused in ["Nick\u{200d}.eth", "levvv..eth", "a_b c.eth", "eth", "\u{0430}pple.eth"] {
            assert!(normalise_ens(refused).is_err(), "{refused:?}");
        }
    }
}
