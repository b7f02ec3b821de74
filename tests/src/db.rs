//! A fresh Postgres database for one test, migrated, dropped afterwards.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Context;

use crate::repo_root;

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL.
    pub url: String,
    server_url: String,
    name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The server's URL: `DATABASE_URL` (as `make test` sets it), else what `scripts/postgres.sh`
/// finds or starts.
pub fn server_url() -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(url);
    }
    let out = Command::new(repo_root().join("scripts/postgres.sh"))
        .output()
        .context("run scripts/postgres.sh")?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/postgres.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl TestDb {
    /// Creates and migrates a new database.
    pub async fn create() -> anyhow::Result<Self> {
        let server_url = server_url()?;
        let name =
            format!("ds_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin =
            sqlx::PgConnection::connect(&server_url).await.context("connect to Postgres")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("drop database if exists {name} with (force)")))
            .execute(&mut admin)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await?;
        let url = with_database(&server_url, &name);
        decentraspace_indexer::store::migrate(&url).await.context("migrate the test database")?;
        Ok(Self { url, server_url, name })
    }

    /// A connection to it.
    pub async fn connect(&self) -> anyhow::Result<sqlx::PgConnection> {
        Ok(sqlx::PgConnection::connect(&self.url).await?)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort, without an async runtime: a leftover database is dropped by the next run
        // that picks the same name.
        let _ = Command::new("psql")
            .arg(&self.server_url)
            .args(["-qc", &format!("drop database if exists {} with (force)", self.name)])
            .output();
    }
}

use sqlx::Connection as _;

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/main?sslmode=disable", "t1"),
            "postgres://u@h:5432/t1?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://u@h/main", "t2"), "postgres://u@h/t2");
    }
}
