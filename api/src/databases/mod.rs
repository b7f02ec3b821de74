//! Managed PostgreSQL databases (ADR 0014): a Database service opened on-chain (through
//! `POST /database` or relayed from the owner's wallet) gets a database and a login role of its
//! own on one of the platform's database hosts, made by the provisioner from the indexed
//! services; pausing, suspending, resuming and cancelling the service open and close it; backups
//! go to IPFS encrypted with the database's own key.

pub mod backups;
pub mod hosts;
pub mod manage;
pub mod provision;
mod secrets;

use std::{path::PathBuf, sync::Arc};

use axum::extract::FromRef;
use chrono::{DateTime, Utc};
use decentraspace_clients::ipfs::Ipfs;
use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::auth::Auth,
    platform::{Platform, feature_state},
    seal::Sealer,
};

use self::hosts::{Hosts, Limits};

/// What managed databases use.
#[derive(Debug, Clone)]
pub struct DatabasesState {
    /// The shared state.
    pub platform: Platform,
    /// The configured database hosts.
    pub hosts: Arc<Hosts>,
    /// Seals passwords and backup keys at rest.
    pub sealer: Sealer,
    /// Where backups are stored; unset without `IPFS_API_URL` (backups then wait).
    pub ipfs: Option<Ipfs>,
    /// Ticks after each indexed batch: the provisioner follows the chain at once.
    pub indexed: broadcast::Sender<()>,
    /// Wakes the backup worker when a backup or restore is requested.
    pub work: Arc<Notify>,
    /// The folder of `pg_dump` and `pg_restore`.
    pub pg_bin: Option<PathBuf>,
}
feature_state!(DatabasesState);

impl DatabasesState {
    /// The limits every managed database's role gets.
    pub fn limits(&self) -> Limits {
        Limits {
            connections: self.config.database_connection_limit,
            statement_timeout_ms: self.config.database_statement_timeout_ms,
        }
    }

    /// The size past which a database turns read-only.
    pub fn quota(&self) -> i64 {
        i64::try_from(self.config.database_quota_bytes).unwrap_or(i64::MAX)
    }

    /// The size past which its connections are refused: 125% of the quota.
    pub fn hard_limit(&self) -> i64 {
        self.quota().saturating_add(self.quota() / 4)
    }
}

/// The database routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    DatabasesState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(manage::list, manage::create))
        .routes(routes!(manage::show, manage::delete))
        .routes(routes!(manage::pause))
        .routes(routes!(manage::resume))
        .routes(routes!(manage::rotate))
        .routes(routes!(backups::list, backups::request))
        .routes(routes!(backups::restore))
        .routes(routes!(backups::restore_status))
}

/// The database jobs: the provisioner and the backup worker (with database hosts configured).
pub fn jobs(state: &DatabasesState) -> Vec<crate::jobs::Job> {
    if state.hosts.is_empty() {
        return Vec::new();
    }
    vec![provision::job(state), backups::job(state)]
}

/// Where `pg_dump` and `pg_restore` are: `PG_BIN_DIR`, else the newest Debian PostgreSQL's, else
/// `PATH` (`None`).
pub fn pg_bin_dir(configured: Option<&std::path::Path>) -> Option<PathBuf> {
    if let Some(dir) = configured {
        return Some(dir.to_owned());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.filter_map(Result::ok).map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    // Versions sort as numbers: 9.6 < 15 < 17.
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.split('.').next())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.into_iter().rev().find(|p| p.join("pg_dump").exists())
}

/// A managed database as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Database {
    /// The service id (on-chain).
    pub id: i64,
    /// The service's state: `active`, `paused`, `suspended` or `cancelled`.
    pub state: String,
    /// Where the database stands on its host, which follows `state` within seconds:
    /// `provisioning`, `ready`, `read_only` (past its quota: writes are refused), `locked` (far
    /// past it: connections are refused), `paused` (paused, suspended or not yet reopened:
    /// connections are refused), `cancelled` (kept until `drops_at`, then dropped) or `dropped`.
    pub status: String,
    /// The host to connect to.
    pub host: Option<String>,
    /// Its port.
    pub port: Option<u16>,
    /// The database's name, which is also its user's.
    pub database: String,
    /// The connection URL without the password (`sslmode` says whether the host takes TLS).
    pub connection_url: Option<String>,
    /// Its size at the last measure, in bytes.
    pub size_bytes: i64,
    /// The size past which it turns read-only.
    pub quota_bytes: i64,
    /// When it was made on its host.
    pub ready_at: Option<DateTime<Utc>>,
    /// When a cancelled database is dropped (its final backup is kept).
    pub drops_at: Option<DateTime<Utc>>,
}

/// A database just made or given a new password: the only answers that carry the password.
#[derive(Debug, Serialize, ToSchema)]
pub struct Credentials {
    /// The database.
    pub database: Database,
    /// The role's password: shown this once (`POST /database/{id}/credentials` makes another).
    pub password: String,
    /// The connection URL with the password.
    pub connection_url: String,
}
