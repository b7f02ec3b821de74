//! File storage on IPFS or Arweave: uploads stream from the client through the API (never held
//! whole in memory), within the account's tier limits, and belong to the account's storage
//! service, which is opened on-chain on the first upload (and metered like every service). Paid
//! accounts keep files in folders. See `docs/adr/0006-storage.md`.

mod account;
pub mod directories;
pub mod files;
pub mod folders;
pub mod manage;
pub mod shared;
pub(crate) mod upload;

use axum::extract::{DefaultBodyLimit, FromRef};
use chrono::{DateTime, Utc};
use decentraspace_clients::{arweave::Arweave, ipfs::Ipfs};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::auth::Auth,
    platform::{Platform, feature_state},
};

/// What storage uses: the platform and the storage backends.
#[derive(Debug, Clone)]
pub struct StorageState {
    /// The shared state.
    pub platform: Platform,
    /// The IPFS node files are stored on; unset without `IPFS_API_URL`.
    pub ipfs: Option<Ipfs>,
    /// The Arweave node and the wallet that pays for uploads, when configured.
    pub arweave: Option<Arweave>,
}
feature_state!(StorageState);

/// The storage routes that take JSON (folders, files, the storage service).
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    StorageState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(folders::create, folders::list))
        .routes(routes!(folders::update, folders::delete))
        .routes(routes!(folders::move_file))
        .routes(routes!(manage::show))
        .routes(routes!(manage::pause))
        .routes(routes!(manage::resume))
        .routes(routes!(files::list))
        .routes(routes!(files::delete))
}

/// The storage jobs: rebuilding folders' IPFS directories (with an IPFS node).
pub fn jobs(state: &StorageState) -> Vec<crate::jobs::Job> {
    directories::job(state).into_iter().collect()
}

/// The streaming routes (uploads and shared downloads). They sit outside the API's body limit and
/// request timeout (a transfer lasts as long as it takes); the tier limits bound uploads instead.
pub fn streaming_router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    StorageState: FromRef<S>,
    Auth: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(upload::upload))
        .routes(routes!(shared::shared))
        .layer(DefaultBodyLimit::disable())
}

/// The shareable link of the file or folder with `token`.
pub fn share_link(token: &str) -> String {
    format!("/storage/shared/{token}")
}

/// A stored file.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredFile {
    /// The file id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its content type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// `ipfs` or `arweave`.
    pub backend: String,
    /// The CIDv1 (IPFS) or the transaction id (Arweave).
    pub cid: String,
    /// The account's storage service.
    pub service_id: i64,
    /// Where anyone can fetch it: the IPFS or Arweave gateway.
    pub url: String,
    /// Its shareable link on this API (`/storage/shared/<secret>`), served while the storage
    /// service runs.
    pub share_link: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}
