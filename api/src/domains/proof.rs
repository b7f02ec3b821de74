//! Proofs of control of a name: a TXT record `_decentraspace.<domain>` holding a token bound to
//! the account and the domain, looked up through a configurable resolver (DNS names) or a
//! Handshake-aware one (Handshake names). The token is an HMAC, so nothing is stored to check it
//! and nobody can make one for another account.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use alloy::primitives::Address;
use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::state::AppState;

/// The record's prefix.
pub const PREFIX: &str = "_decentraspace";

/// A TXT resolver pointed at one server.
#[derive(Clone)]
pub struct TxtResolver {
    resolver: Arc<TokioResolver>,
    server: SocketAddr,
}

impl std::fmt::Debug for TxtResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxtResolver").field("server", &self.server).finish()
    }
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
#[error("the resolver at {server} did not answer: {reason}")]
pub struct LookupError {
    server: SocketAddr,
    reason: String,
}

impl TxtResolver {
    /// A resolver asking `server` (UDP, then TCP for long answers), without a cache: a proof is
    /// checked against what the name says now.
    pub fn new(server: SocketAddr) -> anyhow::Result<Self> {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.port();
        let name_server = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
        let config = ResolverConfig::from_parts(None, vec![], vec![name_server]);
        let mut builder = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        );
        let options = builder.options_mut();
        options.cache_size = 0;
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        Ok(Self { resolver: Arc::new(builder.build()?), server })
    }

    /// The TXT strings at `name` (none when it has no TXT record or does not exist).
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.txt_lookup(fqdn.as_str()).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(err) if err.is_no_records_found() || err.is_nx_domain() => Ok(Vec::new()),
            Err(err) => Err(LookupError { server: self.server, reason: err.to_string() }),
        }
    }
}

/// The record a domain's owner sets, and the value it must hold for `account`.
pub fn challenge(state: &AppState, account: Address, domain: &str) -> (String, String) {
    let key = state.config.domain_proof_key.as_ref().unwrap_or(&state.config.jwt_secret);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes any key");
    mac.update(format!("domain-proof\0{}\0{account}\0{domain}", state.chain_id()).as_bytes());
    let token = alloy::hex::encode(&mac.finalize().into_bytes()[..16]);
    (format!("{PREFIX}.{domain}"), format!("decentraspace-verify={token}"))
}
