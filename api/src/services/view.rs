//! A service as indexed, as every feature that shows one answers it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::format::{show_address, show_hex};

/// A service as indexed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    /// The on-chain service id.
    pub id: i64,
    /// The owner's wallet.
    pub owner: String,
    /// `static_hosting`, `dynamic_hosting`, `storage`, `domain` or `database`.
    pub kind: String,
    /// `active`, `paused`, `suspended` or `cancelled`.
    pub state: String,
    /// The off-chain reference the owner registered (32 bytes, hex).
    pub reference: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it expires while its owner is on the Free tier (null: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A `services` row, as read for a [`ServiceView`].
pub(crate) struct ServiceRow {
    pub(crate) service_id: i64,
    pub(crate) owner: Vec<u8>,
    pub(crate) kind: String,
    pub(crate) state: String,
    pub(crate) reference: Vec<u8>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

impl From<ServiceRow> for ServiceView {
    fn from(r: ServiceRow) -> Self {
        Self {
            id: r.service_id,
            owner: show_address(&r.owner),
            kind: r.kind,
            state: r.state,
            reference: show_hex(&r.reference),
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}
