//! The site gateway: serves each site's current deployment by `Host` (files from IPFS through a
//! small cache, or a dynamic site's machine through the proxy), records traffic and load times,
//! and the uptime prober that checks every served site through it. See `docs/adr/0007-hosting.md`.

mod disk_cache;
mod file_cache;
mod proxy;
mod ranges;
pub mod serve;
pub mod sites;
mod tls;
mod traffic;
pub mod uptime;

pub use serve::serve_gateway;

/// What the gateway uses: the platform and the IPFS node it reads sites from.
#[derive(Debug, Clone)]
pub struct GatewayState {
    /// The shared state.
    pub platform: crate::platform::Platform,
    /// The IPFS node; unset without `IPFS_API_URL`.
    pub ipfs: Option<decentraspace_clients::ipfs::Ipfs>,
    /// The certificates served over HTTPS; unset without `GATEWAY_TLS_LISTEN`.
    pub certificates: Option<crate::certificates::CertStore>,
    /// Routes (hosts, sites, deployments' files) kept in memory.
    pub sites: std::sync::Arc<sites::Sites>,
}
crate::platform::feature_state!(GatewayState);

/// The gateway's jobs: the listener that keeps its routes in memory current, and the uptime
/// prober of the gateway at `gateway`, every `UPTIME_INTERVAL_SECS` unless 0.
pub fn jobs(
    state: &GatewayState,
    gateway: std::net::SocketAddr,
) -> anyhow::Result<Vec<crate::jobs::Job>> {
    let mut jobs = vec![sites::listener(state)];
    let every = state.config.uptime_interval_secs;
    if every > 0 {
        jobs.push(uptime::job(state, gateway, std::time::Duration::from_secs(every))?);
    }
    Ok(jobs)
}
