//! What the indexer and the API share in Postgres, and nothing else: the migrations both apply,
//! the NOTIFY channels one sends and the other listens on (with their payloads), and the one
//! registry of advisory-lock keys, so that no two locks of the platform can ever share a key.

pub mod channels;
pub mod locks;

use sqlx::{PgPool, migrate::Migrator};

/// The migrations in `migrations/`, shared by the indexer and the API.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Applies the migrations (each at most once; concurrent callers wait for one another).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
