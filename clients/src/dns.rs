//! TXT lookups against one configured resolver, without a cache: a proof of control of a name is
//! checked against what the name says now (`_decentraspace.<domain>`, through a DNS resolver, or a
//! Handshake-aware one for Handshake names).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};

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
