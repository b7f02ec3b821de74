//! A private PostgreSQL cluster the tests start themselves (the machine's own server is shared
//! and configured for development): a primary and, on request, a streaming replica made from it
//! with `pg_basebackup`, each on a free port, both removed when dropped; or a single server that
//! checks passwords (`scram-sha-256` for every TCP connection), as a managed database host. Run as the `postgres`
//! user when the tests run as root (PostgreSQL refuses root).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::served::free_port;

/// A PostgreSQL server binary (`initdb`, `pg_ctl`, …) from Debian's versioned folder or `PATH`.
fn pg_bin(tool: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.filter_map(Result::ok).map(|d| d.path().join("bin").join(tool)).collect())
        .unwrap_or_default();
    found.sort();
    if let Some(path) = found.into_iter().rev().find(|p| p.exists()) {
        return Ok(path);
    }
    which(tool).with_context(|| format!("{tool} is not installed (apt-get install postgresql)"))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.exists())
}

/// Runs `tool` with `args` as the cluster's owner; fails with its output. The output goes to a
/// file, not a pipe: `pg_ctl start` leaves a server running, and a pipe it inherited would keep
/// the caller waiting for the end of the output.
fn run(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let binary = pg_bin(tool)?;
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&binary);
        command
    } else {
        Command::new(&binary)
    };
    let output = tempfile::NamedTempFile::new()?;
    let status = command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(output.reopen()?)
        .stderr(output.reopen()?)
        .status()
        .with_context(|| format!("run {tool}"))?;
    if !status.success() {
        bail!(
            "{tool} {}: {}",
            args.join(" "),
            std::fs::read_to_string(output.path()).unwrap_or_default()
        );
    }
    Ok(())
}

/// A server of the cluster.
#[derive(Debug)]
struct Server {
    data: PathBuf,
    port: u16,
}

impl Server {
    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn start(&self) -> anyhow::Result<()> {
        let log = self.data.with_extension("log");
        run("pg_ctl", &["-D", path(&self.data)?, "-l", path(&log)?, "-w", "-t", "60", "start"])
    }
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("a path that is not UTF-8")
}

/// A primary and its streaming replica; stopped and removed when dropped.
#[derive(Debug)]
pub struct TestCluster {
    dir: tempfile::TempDir,
    primary: Server,
    replica: Option<Server>,
    admin_password: Option<String>,
}

impl TestCluster {
    /// Starts one server whose TCP connections all authenticate with `scram-sha-256` (the
    /// `postgres` superuser's password is `admin_password`); only its own Unix socket trusts
    /// local connections, and nothing here uses it.
    pub async fn with_passwords(admin_password: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ds-dbhost-").tempdir()?;
        chown_to_postgres(dir.path())?;
        let primary = Server { data: dir.path().join("primary"), port: free_port()? };
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, admin_password)?;
        chown_to_postgres(&password_file)?;
        run(
            "initdb",
            &[
                "-D",
                path(&primary.data)?,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                path(&password_file)?,
                "-E",
                "UTF8",
            ],
        )?;
        std::fs::remove_file(&password_file)?;
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\n",
            primary.port,
            path(dir.path())?
        );
        append(&primary.data.join("postgresql.conf"), &settings)?;
        primary.start()?;
        Ok(Self { dir, primary, replica: None, admin_password: Some(admin_password.to_owned()) })
    }

    /// The superuser's URL for `database` over TCP, with its password (a cluster started
    /// [`with_passwords`](Self::with_passwords)).
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.admin_password.as_deref().unwrap_or_default(),
            self.primary.port
        )
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.primary.port
    }

    /// Stops the primary (fast shutdown: sessions are ended), as an outage would.
    pub fn stop(&self) -> anyhow::Result<()> {
        run("pg_ctl", &["-D", path(&self.primary.data)?, "-m", "fast", "-w", "stop"])
    }

    /// Starts the primary again on its port.
    pub fn start(&self) -> anyhow::Result<()> {
        self.primary.start()
    }

    /// Starts a primary and a streaming replica of it (hot standby), with database `database`
    /// created on the primary and replayed on the replica.
    pub async fn with_replica(database: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ds-cluster-").tempdir()?;
        chown_to_postgres(dir.path())?;
        let primary = Server { data: dir.path().join("primary"), port: free_port()? };
        run(
            "initdb",
            &["-D", path(&primary.data)?, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )?;
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\n",
            primary.port,
            path(dir.path())?
        );
        append(&primary.data.join("postgresql.conf"), &settings)?;
        primary.start()?;
        let mut cluster = Self { dir, primary, replica: None, admin_password: None };
        let admin = cluster.primary.url("postgres");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{database}\"")))
            .execute(&mut conn)
            .await?;

        let replica = Server { data: cluster.dir.path().join("replica"), port: free_port()? };
        // A connection string with GSSAPI and TLS off: nothing to negotiate on loopback.
        let source = format!(
            "host=127.0.0.1 port={} user=postgres gssencmode=disable sslmode=disable",
            cluster.primary.port
        );
        run(
            "pg_basebackup",
            &[
                "-d",
                &source,
                "-D",
                path(&replica.data)?,
                "-R",
                "-X",
                "stream",
                // An immediate checkpoint: the default spreads it over minutes.
                "-c",
                "fast",
            ],
        )?;
        append(&replica.data.join("postgresql.conf"), &format!("\nport = {}\n", replica.port))?;
        replica.start()?;
        cluster.replica = Some(replica);
        Ok(cluster)
    }

    /// The primary's URL for `database`.
    pub fn primary_url(&self, database: &str) -> String {
        self.primary.url(database)
    }

    /// The replica's URL for `database`.
    pub fn replica_url(&self, database: &str) -> Option<String> {
        self.replica.as_ref().map(|r| r.url(database))
    }

    /// Pauses (`true`) or resumes the replica's replay: while paused it keeps receiving WAL but
    /// shows the state of the moment it paused, as a lagging replica does.
    pub async fn pause_replay(&self, paused: bool) -> anyhow::Result<()> {
        let url = self.replica_url("postgres").context("no replica")?;
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
        let call =
            if paused { "select pg_wal_replay_pause()" } else { "select pg_wal_replay_resume()" };
        sqlx::query(call).execute(&mut conn).await?;
        Ok(())
    }

    /// Waits until the replica has replayed everything the primary inserted so far (the insert
    /// position: this cluster commits without waiting for its WAL to be written).
    pub async fn caught_up(&self) -> anyhow::Result<()> {
        let mut primary =
            <sqlx::PgConnection as sqlx::Connection>::connect(&self.primary_url("postgres"))
                .await?;
        let lsn: String = sqlx::query_scalar("select pg_current_wal_insert_lsn()::text")
            .fetch_one(&mut primary)
            .await?;
        let url = self.replica_url("postgres").context("no replica")?;
        let mut replica = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let replayed: bool =
                sqlx::query_scalar("select pg_last_wal_replay_lsn() >= $1::pg_lsn")
                    .bind(&lsn)
                    .fetch_one(&mut replica)
                    .await?;
            if replayed {
                return Ok(());
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "the replica never caught up");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for server in self.replica.iter().chain(std::iter::once(&self.primary)) {
            if let Ok(data) = path(&server.data) {
                let _ = run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
            }
        }
    }
}

fn append(file: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Whether the tests run as root (uid 0).
fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Makes `dir` the postgres user's when the tests run as root.
fn chown_to_postgres(dir: &Path) -> anyhow::Result<()> {
    if is_root() {
        let status = Command::new("chown").arg("postgres").arg(dir).status()?;
        anyhow::ensure!(status.success(), "chown the cluster's folder to postgres");
    }
    Ok(())
}
