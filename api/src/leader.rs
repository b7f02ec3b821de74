//! One API replica at a time for a background job: a session advisory lock on a connection of the
//! job's own, closed when the job's pass ends. (A pooled connection would keep the lock if a pass
//! were cut short, e.g. at shutdown; a closed connection always releases it.)

use sqlx::{Connection, PgConnection, PgPool};

/// The connection holding `key`'s lock, or `None` when another replica holds it.
pub(crate) async fn try_lead(db: &PgPool, key: i64) -> anyhow::Result<Option<PgConnection>> {
    let mut conn = db.acquire().await?.detach();
    let leader: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    if leader {
        Ok(Some(conn))
    } else {
        conn.close().await.ok();
        Ok(None)
    }
}
