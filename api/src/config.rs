//! The API's configuration, from flags or the environment.

use std::net::SocketAddr;

use clap::Parser;

/// Serves the DecentraSpace REST API.
#[derive(Debug, Clone, Parser)]
#[command(name = "api", version, about)]
pub struct Config {
    /// The address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}
