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
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let gateway = match config.gateway_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("gateway: listen on {addr}"))?,
        ),
        None => None,
    };
    let state = AppState::new(config).await?;
    decentraspace_db::migrate(&state.platform.db).await.context("apply migrations")?;
    tracing::info!(addr = %listener.local_addr()?, chain_id = state.chain_id(), "api listening");
    serve(state, listener, gateway, shutdown_signal()).await
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
