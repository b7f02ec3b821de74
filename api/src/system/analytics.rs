//! `/analytics/system` (admins): the health of the platform's moving parts in one answer.

use std::{sync::OnceLock, time::Instant};

use alloy::providers::Provider;
use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    http::{auth::AdminUser, error::ApiResult},
    system::SystemState,
};

/// When this process started (for uptime).
pub fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// The API process.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiHealth {
    /// The API's version.
    pub version: &'static str,
    /// Seconds since it started.
    pub uptime_secs: u64,
}

/// The database.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseHealth {
    /// Whether it answered.
    pub ok: bool,
    /// How long a trivial query took, in milliseconds.
    pub latency_ms: f64,
    /// The database's size on disk.
    pub size_bytes: Option<i64>,
    /// Connections the API's pool holds (idle included).
    pub pool_connections: u32,
}

/// The chain and the indexer's mirror of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct IndexerHealth {
    /// The chain's head block (null when the RPC does not answer).
    pub chain_head: Option<u64>,
    /// The indexer's checkpoint.
    pub indexed_block: Option<i64>,
    /// Blocks behind the head.
    pub lag: Option<u64>,
    /// When the checkpoint last moved.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Secondary indexes set aside by a running backfill.
    pub deferred_indexes: i64,
}

/// The relayer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelayerHealth {
    /// Its address (null when no relayer key is configured).
    pub address: Option<String>,
    /// Its balance in wei (decimal string).
    pub balance_wei: Option<String>,
    /// Relayed transactions not mined yet.
    pub pending: i64,
    /// Relayed transactions that failed in the last 24 hours.
    pub failed_24h: i64,
}

/// A key the platform signs with, and its outbox queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKey {
    /// Its role: `operator`, `verifier`, `registrar` or `payment-oracle`.
    pub role: &'static str,
    /// Its queue: address, next nonce, depth, oldest unsent row.
    #[serde(flatten)]
    pub queue: crate::chain::outbox::KeyQueue,
    /// Its balance in wei (decimal string; null when the node did not answer).
    pub balance_wei: Option<String>,
    /// Whether the balance is below `CHAIN_LOW_BALANCE_WEI` (fund it before it stops sending).
    pub low: bool,
}

/// Background work waiting.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobsHealth {
    /// Every background job of the replica that answered: up, last good pass, failures.
    pub running: Vec<crate::jobs::JobStatus>,
    /// Card payments paid but not credited yet (being confirmed or credited).
    pub card_payments_due: i64,
    /// The oldest of them, in seconds (null when none).
    pub oldest_card_payment_secs: Option<f64>,
    /// Card payments flagged for review (paid, but not as initialized).
    pub card_payments_flagged: i64,
}

/// The platform's health.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemHealth {
    /// The API.
    pub api: ApiHealth,
    /// The database.
    pub database: DatabaseHealth,
    /// The indexer.
    pub indexer: IndexerHealth,
    /// The relayer.
    pub relayer: RelayerHealth,
    /// The keys that send through the outbox.
    pub signing_keys: Vec<SigningKey>,
    /// Background work (the queue depth).
    pub jobs: JobsHealth,
}

/// API, database, indexer, relayer and background-work health.
#[utoipa::path(get, path = "/analytics/system", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = SystemHealth),
        crate::http::openapi::Forbidden))]
pub async fn system(
    State(state): State<SystemState>,
    _admin: AdminUser,
) -> ApiResult<Json<SystemHealth>> {
    let chain = state.chain_id() as i64;
    let timed = Instant::now();
    let size = sqlx::query_scalar!("select pg_database_size(current_database())")
        .fetch_one(&state.db)
        .await;
    let latency_ms = timed.elapsed().as_secs_f64() * 1_000.0;
    let checkpoint = sqlx::query!(
        "select block_number, updated_at from indexer_checkpoints where chain_id = $1",
        chain
    )
    .fetch_optional(&state.db)
    .await?;
    let deferred = sqlx::query_scalar!(r#"select count(*) as "n!" from indexer_deferred_indexes"#)
        .fetch_one(&state.db)
        .await?;
    let relayed = sqlx::query!(
        r#"select count(*) filter (where status in ('received', 'pending')) as "pending!",
                  count(*) filter (where status = 'failed' and updated_at > now() - interval '1 day') as "failed!"
           from relayed_transactions where chain_id = $1"#,
        chain
    )
    .fetch_one(&state.db)
    .await?;
    let jobs = sqlx::query!(
        r#"select count(*) filter (where status in ('paid', 'crediting')) as "due!",
                  extract(epoch from now() - min(updated_at) filter (where status in ('paid', 'crediting')))::float8 as oldest,
                  count(*) filter (where status = 'flagged') as "flagged!"
           from card_payments where chain_id = $1"#,
        chain
    )
    .fetch_one(&state.db)
    .await?;
    let chain_head = state.chain.get_block_number().await.ok();
    let indexed_block = checkpoint.as_ref().map(|c| c.block_number);
    let (address, balance) = match state.relayer {
        Some(relayer) => (
            Some(relayer.to_checksum(None)),
            state.chain.get_balance(relayer).await.ok().map(|b| b.to_string()),
        ),
        None => (None, None),
    };
    let mut signing_keys = Vec::new();
    for (role, address) in state.signing_keys.iter() {
        let queue = state.outbox.key_queue(*address).await?;
        let balance = state.chain.get_balance(*address).await.ok();
        signing_keys.push(SigningKey {
            role,
            queue,
            balance_wei: balance.map(|b| b.to_string()),
            low: balance.is_some_and(|b| b < state.config.chain_low_balance_wei),
        });
    }
    Ok(Json(SystemHealth {
        api: ApiHealth {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: started().elapsed().as_secs(),
        },
        database: DatabaseHealth {
            ok: size.is_ok(),
            latency_ms,
            size_bytes: size.ok().flatten(),
            pool_connections: state.db.size(),
        },
        indexer: IndexerHealth {
            chain_head,
            indexed_block,
            lag: chain_head.zip(indexed_block).map(|(h, i)| h.saturating_sub(i as u64)),
            updated_at: checkpoint.map(|c| c.updated_at),
            deferred_indexes: deferred,
        },
        relayer: RelayerHealth {
            address,
            balance_wei: balance,
            pending: relayed.pending,
            failed_24h: relayed.failed,
        },
        signing_keys,
        jobs: JobsHealth {
            running: state.jobs.jobs(),
            card_payments_due: jobs.due,
            oldest_card_payment_secs: jobs.oldest,
            card_payments_flagged: jobs.flagged,
        },
    }))
}
