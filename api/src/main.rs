//! The API binary: configuration, migrations, then serve until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use decentraspace_api::{AppState, Config, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .json()
        .init();
    let config = Config::parse();
    let listener = bind(Some(config.listen), "the API").await?.context("no API address")?;
    let gateway = bind(config.gateway_listen, "the gateway").await?;
    let gateway_tls = bind(config.gateway_tls_listen, "the gateway's HTTPS").await?;
    let state = AppState::new(config).await?;
    decentraspace_db::migrate(&state.platform.db).await.context("apply migrations")?;
    tracing::info!(addr = %listener.local_addr()?, chain_id = state.chain_id(), "api listening");
    serve(state, listener, gateway, gateway_tls, shutdown_signal()).await
}

/// A listener on `addr`, when one is configured.
async fn bind(
    addr: Option<std::net::SocketAddr>,
    what: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("{what}: listen on {addr}"))?,
        )),
        None => Ok(None),
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
