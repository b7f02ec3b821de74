//! Backups: `pg_dump --format=custom` of a managed database, encrypted with its own key
//! (AES-256-GCM in 64 KiB chunks, the STREAM construction, so a dump is never held whole),
//! added to the platform's IPFS node and pinned. Requested on demand, daily by the provisioner,
//! and a final one on cancel; restored with `pg_restore --clean` in one transaction into the same
//! database or another of the same owner. The worker takes requests with `FOR UPDATE SKIP
//! LOCKED`, so replicas share them and one that dies leaves its request to the next.

use std::{
    io::{Read, Write},
    path::{Path as FsPath, PathBuf},
    time::Duration,
};

use aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, KeyInit};
use anyhow::Context;
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::{DatabasesState, hosts::Host, manage::one, secrets};
use crate::{
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
    jobs::{Job, Schedule},
};

/// Plaintext bytes per encrypted chunk.
const CHUNK: usize = 64 * 1024;
/// AES-GCM's tag, after each chunk.
const TAG: usize = 16;
/// What a sealed backup starts with: its format, then the 7-byte nonce prefix.
const MAGIC: &[u8; 5] = b"DSBK1";
/// The longest between two worker passes (a request wakes it sooner).
const PERIOD: Duration = Duration::from_secs(15);
/// How long a failed final backup waits before it is tried again.
const FINAL_RETRY_SECS: f64 = 60.0;

/// A backup of a database.
#[derive(Debug, Serialize, ToSchema)]
pub struct Backup {
    /// Its id.
    pub id: i64,
    /// `manual`, `daily` or `final` (taken when the database was cancelled).
    pub reason: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    /// Its encrypted dump's CID on the platform's IPFS node (only the platform holds the key).
    pub cid: Option<String>,
    /// The encrypted dump's size, in bytes.
    pub size_bytes: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When it was taken (or failed).
    pub finished_at: Option<DateTime<Utc>>,
}

/// A restore of a backup into a database.
#[derive(Debug, Serialize, ToSchema)]
pub struct Restore {
    /// Its id.
    pub id: i64,
    /// The backup restored.
    pub backup_id: i64,
    /// The database restored into.
    pub database_id: i64,
    /// `pending`, `done` or `failed` (a failed restore changed nothing: it runs in one
    /// transaction).
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What to restore into.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Another of the caller's databases to restore into (its content is replaced); the backup's
    /// own database when absent.
    pub into: Option<i64>,
}

/// The backups of one of the caller's databases, newest first.
#[utoipa::path(get, path = "/database/{id}/backups", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database (its service id)")),
    responses((status = 200, body = Vec<Backup>), crate::http::openapi::NotFound))]
pub async fn list(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Backup>>> {
    one(&state, &user, id).await?;
    let backups = sqlx::query_as!(
        Backup,
        "select id, reason, state, cid, size_bytes, error, requested_at, finished_at
         from database_backups where chain_id = $1 and service_id = $2
         order by id desc limit 500",
        state.chain_id() as i64,
        id
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(backups))
}

/// Requests a backup of one of the caller's databases now (a pending manual one is answered
/// instead of a second); `GET /database/{id}/backups` shows when it is done.
#[utoipa::path(post, path = "/database/{id}/backups", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database (its service id)")),
    responses((status = 202, body = Backup, description = "Requested"),
        crate::http::openapi::NotFound, crate::http::openapi::Conflict))]
pub async fn request(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    let database = one(&state, &user, id).await?;
    if matches!(database.status.as_str(), "dropped" | "provisioning") || database.ready_at.is_none()
    {
        return Err(ApiError::Conflict(format!(
            "database {id} is {}: there is nothing to back up",
            database.status
        )));
    }
    let chain_id = state.chain_id() as i64;
    let pending = sqlx::query_as!(
        Backup,
        "select id, reason, state, cid, size_bytes, error, requested_at, finished_at
         from database_backups
         where chain_id = $1 and service_id = $2 and reason = 'manual' and state = 'pending'",
        chain_id,
        id
    )
    .fetch_optional(&state.db)
    .await?;
    let backup = match pending {
        Some(backup) => backup,
        None => {
            sqlx::query_as!(
                Backup,
                "insert into database_backups (chain_id, service_id, reason)
                 values ($1, $2, 'manual')
                 returning id, reason, state, cid, size_bytes, error, requested_at, finished_at",
                chain_id,
                id
            )
            .fetch_one(&state.db)
            .await?
        }
    };
    state.work.notify_one();
    Ok((StatusCode::ACCEPTED, Json(backup)))
}

/// Restores one of the database's backups into it, or into another of the caller's databases
/// (`into`): the target's content is replaced in one transaction, and its open sessions are
/// ended first. A cancelled database's final backup restores into a new database this way.
#[utoipa::path(post, path = "/database/{id}/backups/{backup_id}/restore", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database the backup is of"),
        ("backup_id" = i64, Path, description = "The backup")),
    request_body(content = RestoreRequest, description = "Where to restore (the same database by default)"),
    responses((status = 202, body = Restore, description = "Requested: `GET /database/{id}/restores/{restore_id}` follows it"),
        crate::http::openapi::NotFound, crate::http::openapi::Conflict))]
pub async fn restore(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path((id, backup_id)): Path<(i64, i64)>,
    body: Option<Json<RestoreRequest>>,
) -> ApiResult<(StatusCode, Json<Restore>)> {
    let into = body.and_then(|Json(b)| b.into).unwrap_or(id);
    one(&state, &user, id).await?;
    let chain_id = state.chain_id() as i64;
    let backup_state = sqlx::query_scalar!(
        "select state from database_backups where id = $1 and chain_id = $2 and service_id = $3",
        backup_id,
        chain_id,
        id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no backup {backup_id} of database {id}")))?;
    if backup_state != "done" {
        return Err(ApiError::Conflict(format!(
            "backup {backup_id} is {backup_state}: only a finished backup restores"
        )));
    }
    let target = one(&state, &user, into).await?;
    if target.ready_at.is_none() || matches!(target.status.as_str(), "dropped" | "cancelled") {
        return Err(ApiError::Conflict(format!(
            "database {into} is {}: restore into a live database",
            target.status
        )));
    }
    let restore = sqlx::query_as!(
        Restore,
        r#"insert into database_restores (backup_id, chain_id, service_id) values ($1, $2, $3)
           returning id, backup_id, service_id as database_id, state, error, requested_at, finished_at"#,
        backup_id,
        chain_id,
        into
    )
    .fetch_one(&state.db)
    .await?;
    state.work.notify_one();
    Ok((StatusCode::ACCEPTED, Json(restore)))
}

/// A restore into one of the caller's databases.
#[utoipa::path(get, path = "/database/{id}/restores/{restore_id}", tag = "database", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The database restored into"),
        ("restore_id" = i64, Path, description = "The restore")),
    responses((status = 200, body = Restore), crate::http::openapi::NotFound))]
pub async fn restore_status(
    State(state): State<DatabasesState>,
    user: AuthUser,
    Path((id, restore_id)): Path<(i64, i64)>,
) -> ApiResult<Json<Restore>> {
    one(&state, &user, id).await?;
    let restore = sqlx::query_as!(
        Restore,
        r#"select id, backup_id, service_id as database_id, state, error, requested_at, finished_at
           from database_restores where id = $1 and chain_id = $2 and service_id = $3"#,
        restore_id,
        state.chain_id() as i64,
        id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no restore {restore_id} into database {id}")))?;
    Ok(Json(restore))
}

/// The backup worker: takes pending backups and restores until none is left, woken by each
/// request and at least every [`PERIOD`].
pub fn job(state: &DatabasesState) -> Job {
    let work = state.work.clone();
    let state = state.clone();
    Job::periodic(
        "database-backups",
        move || Schedule::every(PERIOD).woken_by_notify(work.clone()),
        move || {
            let state = state.clone();
            async move {
                while backup_one(&state).await? || restore_one(&state).await? {}
                Ok(())
            }
        },
    )
}

/// Takes one pending backup, if any (and an IPFS node to store it on): whether one was taken.
async fn backup_one(state: &DatabasesState) -> anyhow::Result<bool> {
    let Some(ipfs) = &state.ipfs else { return Ok(false) };
    let chain_id = state.chain_id() as i64;
    let mut tx = state.db.begin().await?;
    let Some(job) = sqlx::query!(
        "select b.id, b.service_id, b.reason, m.host, m.name, m.applied, m.backup_key_sealed
         from database_backups b
         join managed_databases m on m.chain_id = b.chain_id and m.service_id = b.service_id
         where b.chain_id = $1 and b.state = 'pending' and b.requested_at <= now()
         order by b.id
         for update of b skip locked
         limit 1",
        chain_id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(false);
    };
    let taken = async {
        anyhow::ensure!(
            matches!(job.applied.as_str(), "open" | "closed"),
            "the database is {}: nothing to back up",
            if job.applied == "new" { "not made yet" } else { "dropped" }
        );
        let host = state.hosts.get(&job.host).context("its host is not configured")?;
        let key = secrets::backup_key_bytes(
            &state.sealer,
            chain_id,
            job.service_id,
            &job.backup_key_sealed,
        )?;
        let dir = tempfile::Builder::new().prefix("ds-backup-").tempdir()?;
        let dump = dir.path().join("dump");
        pg_tool(
            state,
            host,
            &job.name,
            "pg_dump",
            &["--format=custom", "--no-owner", "--no-privileges", "--file", path_str(&dump)?],
        )
        .await?;
        let sealed = dir.path().join("sealed");
        let (from, to) = (dump.clone(), sealed.clone());
        tokio::task::spawn_blocking(move || encrypt_file(&from, &to, &key)).await??;
        let file = tokio::fs::File::open(&sealed).await?;
        let size = file.metadata().await?.len();
        let added = ipfs
            .add(
                &format!("{}-backup-{}.dump.sealed", job.name, job.id),
                "application/octet-stream",
                tokio_util::io::ReaderStream::new(file),
            )
            .await
            .context("store the backup on IPFS")?;
        Ok::<_, anyhow::Error>((added.cid, size as i64))
    }
    .await;
    match taken {
        Ok((cid, size)) => {
            sqlx::query!(
                "update database_backups
                 set state = 'done', cid = $2, size_bytes = $3, error = null, finished_at = now()
                 where id = $1",
                job.id,
                cid,
                size
            )
            .execute(&mut *tx)
            .await?;
            tracing::info!(target: "api::databases", service_id = job.service_id, backup = job.id, size, "database backed up");
        }
        Err(err) if job.reason == "final" && job.applied != "dropped" => {
            // The database is dropped only after its final backup: keep trying.
            tracing::warn!(target: "api::databases", service_id = job.service_id, error = format!("{err:#}"), "final backup failed; retried in a minute");
            sqlx::query!(
                "update database_backups
                 set error = $2, requested_at = now() + make_interval(secs => $3)
                 where id = $1",
                job.id,
                format!("{err:#}"),
                FINAL_RETRY_SECS
            )
            .execute(&mut *tx)
            .await?;
        }
        Err(err) => {
            tracing::warn!(target: "api::databases", service_id = job.service_id, error = format!("{err:#}"), "backup failed");
            sqlx::query!(
                "update database_backups set state = 'failed', error = $2, finished_at = now()
                 where id = $1",
                job.id,
                format!("{err:#}")
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Takes one pending restore, if any: whether one was taken.
async fn restore_one(state: &DatabasesState) -> anyhow::Result<bool> {
    let Some(ipfs) = &state.ipfs else { return Ok(false) };
    let chain_id = state.chain_id() as i64;
    let mut tx = state.db.begin().await?;
    let Some(job) = sqlx::query!(
        r#"select r.id, r.service_id, b.cid as "cid!", b.service_id as source_id,
                  source.backup_key_sealed, target.host, target.name, target.applied
           from database_restores r
           join database_backups b on b.id = r.backup_id and b.cid is not null
           join managed_databases source on source.chain_id = b.chain_id and source.service_id = b.service_id
           join managed_databases target on target.chain_id = r.chain_id and target.service_id = r.service_id
           where r.chain_id = $1 and r.state = 'pending'
           order by r.id
           for update of r skip locked
           limit 1"#,
        chain_id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(false);
    };
    let restored = async {
        anyhow::ensure!(
            matches!(job.applied.as_str(), "open" | "closed"),
            "the database restored into is not live"
        );
        let host = state.hosts.get(&job.host).context("its host is not configured")?;
        let key = secrets::backup_key_bytes(
            &state.sealer,
            chain_id,
            job.source_id,
            &job.backup_key_sealed,
        )?;
        let dir = tempfile::Builder::new().prefix("ds-restore-").tempdir()?;
        let sealed = dir.path().join("sealed");
        let mut file = tokio::fs::File::create(&sealed).await?;
        let mut stream = ipfs.cat_stream(&job.cid).await.context("fetch the backup from IPFS")?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.context("fetch the backup from IPFS")?).await?;
        }
        file.flush().await?;
        let dump = dir.path().join("dump");
        let (from, to) = (sealed.clone(), dump.clone());
        tokio::task::spawn_blocking(move || decrypt_file(&from, &to, &key)).await??;
        host.end_sessions(&job.name).await?;
        // The dump as SQL, run by psql in one transaction after a prelude that empties the
        // database: what the role made since the backup goes too, and a failure changes nothing.
        let script = dir.path().join("restore.sql");
        pg_tool(
            state,
            host,
            &job.name,
            "pg_restore",
            &["--no-owner", "--no-privileges", "--file", path_str(&script)?, path_str(&dump)?],
        )
        .await?;
        let prelude = dir.path().join("prelude.sql");
        tokio::fs::write(&prelude, restore_prelude(&job.name, job.applied == "open")).await?;
        pg_tool(
            state,
            host,
            &job.name,
            "psql",
            &[
                "--no-psqlrc",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                "--single-transaction",
                "--file",
                path_str(&prelude)?,
                "--file",
                path_str(&script)?,
            ],
        )
        .await
    }
    .await;
    let error = restored.as_ref().err().map(|err| format!("{err:#}"));
    if let Some(error) = &error {
        tracing::warn!(target: "api::databases", service_id = job.service_id, error, "restore failed");
    } else {
        tracing::info!(target: "api::databases", service_id = job.service_id, restore = job.id, "database restored");
    }
    sqlx::query!(
        "update database_restores
         set state = case when $2::text is null then 'done' else 'failed' end, error = $2,
             finished_at = now()
         where id = $1",
        job.id,
        error
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// What a restore runs first, as the admin, in the restore's transaction: everything the role
/// owns in the database dropped (its grants on the database with it, given back), a fresh
/// `public` schema of its own, then the role itself for the rest, so what is restored is its.
fn restore_prelude(role: &str, open: bool) -> String {
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    let connect =
        if open { format!("grant connect on database {role} to {role};\n") } else { String::new() };
    format!(
        "drop owned by {role};\n\
         create schema public authorization {role};\n\
         revoke all on schema public from public;\n\
         grant temporary on database {role} to {role};\n\
         {connect}\
         set role {role};\n"
    )
}

fn path_str(path: &FsPath) -> anyhow::Result<&str> {
    path.to_str().context("a temporary path that is not UTF-8")
}

/// Runs `pg_dump`, `pg_restore` or `psql` against database `name` on `host` as its admin; fails with the
/// end of what it wrote.
async fn pg_tool(
    state: &DatabasesState,
    host: &Host,
    name: &str,
    tool: &str,
    args: &[&str],
) -> anyhow::Result<()> {
    let binary: PathBuf =
        state.pg_bin.as_ref().map_or_else(|| PathBuf::from(tool), |d| d.join(tool));
    let output = tokio::process::Command::new(&binary)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(host.client_env(name))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {} (PG_BIN_DIR)", binary.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String =
            stderr.chars().rev().take(1000).collect::<Vec<_>>().into_iter().rev().collect();
        anyhow::bail!("{tool} failed ({}): {}", output.status, tail.trim());
    }
    Ok(())
}

/// Encrypts `from` into `to` with `key`: [`MAGIC`], a random 7-byte nonce prefix, then each
/// [`CHUNK`] sealed in turn, the last one marked as last (a cut-off file does not open).
fn encrypt_file(from: &FsPath, to: &FsPath, key: &[u8; 32]) -> anyhow::Result<()> {
    let prefix: [u8; 7] = crate::random::bytes();
    let cipher = Aes256Gcm::new(&(*key).into());
    let mut encryptor = EncryptorBE32::from_aead(cipher, &prefix.into());
    let mut input = std::io::BufReader::new(std::fs::File::open(from)?);
    let mut output = std::io::BufWriter::new(std::fs::File::create(to)?);
    output.write_all(MAGIC)?;
    output.write_all(&prefix)?;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let read = read_full(&mut input, &mut chunk)?;
        if read < CHUNK {
            let last = encryptor
                .encrypt_last(&chunk[..read])
                .map_err(|_| anyhow::anyhow!("encrypt the backup"))?;
            output.write_all(&last)?;
            break;
        }
        // A full chunk: the next may be empty, and then this one was not the last. A chunk is
        // marked last only once the end is seen, so a full last chunk is followed by an empty
        // sealed one.
        let sealed = encryptor
            .encrypt_next(&chunk[..])
            .map_err(|_| anyhow::anyhow!("encrypt the backup"))?;
        output.write_all(&sealed)?;
    }
    output.flush()?;
    Ok(())
}

/// Decrypts what [`encrypt_file`] wrote.
fn decrypt_file(from: &FsPath, to: &FsPath, key: &[u8; 32]) -> anyhow::Result<()> {
    let mut input = std::io::BufReader::new(std::fs::File::open(from)?);
    let mut header = [0u8; MAGIC.len() + 7];
    input.read_exact(&mut header).context("a backup shorter than its header")?;
    anyhow::ensure!(&header[..MAGIC.len()] == MAGIC, "not a sealed backup");
    let prefix: [u8; 7] = header[MAGIC.len()..].try_into()?;
    let cipher = Aes256Gcm::new(&(*key).into());
    let mut decryptor = DecryptorBE32::from_aead(cipher, &prefix.into());
    let mut output = std::io::BufWriter::new(std::fs::File::create(to)?);
    let mut chunk = vec![0u8; CHUNK + TAG];
    loop {
        let read = read_full(&mut input, &mut chunk)?;
        if read < CHUNK + TAG {
            let last = decryptor.decrypt_last(&chunk[..read]).map_err(|_| {
                anyhow::anyhow!("the backup does not open: wrong key, or altered or cut off")
            })?;
            output.write_all(&last)?;
            break;
        }
        let clear = decryptor
            .decrypt_next(&chunk[..])
            .map_err(|_| anyhow::anyhow!("the backup does not open: wrong key, or altered"))?;
        output.write_all(&clear)?;
    }
    output.flush()?;
    Ok(())
}

/// Reads until `buf` is full or the input ends: how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(len: usize) {
        let dir = tempfile::tempdir().unwrap();
        let (clear, sealed, opened) =
            (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&clear, &data).unwrap();
        let key = [7u8; 32];
        encrypt_file(&clear, &sealed, &key).unwrap();
        let bytes = std::fs::read(&sealed).unwrap();
        assert!(!bytes.windows(16).any(|w| data.len() >= 16 && w == &data[..16]));
        decrypt_file(&sealed, &opened, &key).unwrap();
        assert_eq!(std::fs::read(&opened).unwrap(), data, "length {len}");
        // Another key, a flipped bit or a cut-off end do not open.
        assert!(decrypt_file(&sealed, &opened, &[8u8; 32]).is_err());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&sealed, &flipped).unwrap();
        assert!(decrypt_file(&sealed, &opened, &key).is_err());
        if bytes.len() > MAGIC.len() + 7 + CHUNK + TAG {
            std::fs::write(&sealed, &bytes[..MAGIC.len() + 7 + CHUNK + TAG]).unwrap();
            assert!(decrypt_file(&sealed, &opened, &key).is_err(), "cut off at a chunk");
        }
    }

    #[test]
    fn backups_round_trip_at_every_chunk_boundary() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            round_trip(len);
        }
    }
}
