//! Secondary indexes set aside during a long backfill and rebuilt when it ends.
//!
//! Keeping `events`' and the service history's secondary indexes up to date costs about as much as
//! writing the rows themselves; building them once over the loaded rows costs a fraction of that.
//! Primary keys stay: they enforce that no event is stored twice.

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tracing::info;

use super::StoreError;

/// The append-only tables a backfill fills, whose secondary indexes may be deferred.
const TABLES: &[&str] = &["events", "service_state_changes"];

/// Drops the secondary indexes of the backfilled tables, recording how to rebuild them, in one
/// transaction. Returns how many were dropped (none when they already were).
pub async fn defer(conn: &mut PgConnection) -> Result<usize, StoreError> {
    let mut tx = conn.begin().await?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        r#"select i.relname::text, pg_get_indexdef(i.oid)
           from pg_index x
           join pg_class i on i.oid = x.indexrelid
           join pg_class t on t.oid = x.indrelid
           where t.relname = any($1) and t.relnamespace = current_schema()::regnamespace
             and not x.indisunique and not x.indisprimary
           order by i.relname"#,
    )
    .bind(TABLES)
    .fetch_all(&mut *tx)
    .await?;
    for (name, definition) in &indexes {
        sqlx::query(
            "insert into indexer_deferred_indexes (name, definition) values ($1, $2)
             on conflict (name) do nothing",
        )
        .bind(name)
        .bind(definition)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!("drop index {}", quote_ident(name))))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(indexes.len())
}

/// How many indexes are deferred.
pub async fn deferred(conn: &mut PgConnection) -> Result<usize, StoreError> {
    let n: i64 =
        sqlx::query_scalar("select count(*) from indexer_deferred_indexes").fetch_one(conn).await?;
    Ok(n as usize)
}

/// Rebuilds every deferred index, each on a connection of its own so the builds run side by side.
/// Each build and the removal of its record commit together; a build another process already
/// claimed is skipped. Returns how many this call built.
pub async fn restore(database_url: &str) -> Result<usize, StoreError> {
    let mut conn = PgConnection::connect(database_url).await?;
    let names: Vec<String> =
        sqlx::query_scalar("select name from indexer_deferred_indexes order by name")
            .fetch_all(&mut conn)
            .await?;
    conn.close().await?;
    let builds = names.iter().map(|name| async move {
        let mut conn = PgConnection::connect(database_url).await?;
        let built = build(&mut conn, name).await;
        conn.close().await?;
        built
    });
    let built = futures::future::try_join_all(builds).await?;
    Ok(built.into_iter().filter(|b| *b).count())
}

async fn build(conn: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    let started = std::time::Instant::now();
    let mut tx = conn.begin().await?;
    // Sorting in memory makes the build several times faster than the 64 MB default allows.
    sqlx::query("set local maintenance_work_mem = '256MB'").execute(&mut *tx).await?;
    // The delete claims the record: a concurrent restorer waits here, then finds it gone.
    let definition: Option<String> = sqlx::query_scalar(
        "delete from indexer_deferred_indexes where name = $1 returning definition",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(definition) = definition else { return Ok(false) };
    sqlx::query(AssertSqlSafe(definition)).execute(&mut *tx).await?;
    tx.commit().await?;
    info!(target: "indexer::store", index = name, ms = started.elapsed().as_millis() as u64, "index rebuilt");
    Ok(true)
}

/// Quotes an identifier the way Postgres' `quote_ident` does.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("events_by_account"), "\"events_by_account\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
