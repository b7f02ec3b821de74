//! The indexer binary: `indexer [run|verify|reindex|migrate]`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use decentraspace_abi::Deployment;
use decentraspace_indexer::{Cli, Command, Indexer, metrics, store, verify};
use tracing::{error, info};

// A backfill allocates and frees large numbers of short-lived buffers (fetched logs, decoded
// arguments, COPY rows); mimalloc keeps that off the system allocator's slow paths.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // One JSON object a line, as the API writes: what log pipelines parse.
        .json()
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config;
    store::migrate(&config.database_url).await.context("apply migrations")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Migrate => info!("migrations applied"),
        Command::Run => {
            if let Some(addr) = config.metrics_addr {
                let poll = std::time::Duration::from_millis(config.poll_interval_ms);
                metrics::serve(addr, config.ready_max_lag_blocks, poll)
                    .await
                    .context("serve metrics, health and readiness")?;
            }
            let indexer = Indexer::new(config).await?;
            indexer.run(shutdown_signal()).await?;
        }
        Command::Reindex => {
            let deployment = Deployment::load(&config.deployments_file)?;
            let mut conn = store::connect(&config.database_url).await?;
            let events =
                store::reindex(&mut conn, &deployment.contracts, deployment.chain_id).await?;
            info!(events, "projections rebuilt from the events table");
        }
        Command::Verify => {
            let deployment = Deployment::load(&config.deployments_file)?;
            let mut conn = store::connect(&config.database_url).await?;
            let report = verify::verify(&mut conn, &config.rpc_url, &deployment).await?;
            for difference in &report.differences {
                error!(target: "indexer::verify", "{difference}");
            }
            info!(
                block = report.block,
                checked = report.checked,
                differences = report.differences.len(),
                "verified"
            );
            if !report.differences.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}
