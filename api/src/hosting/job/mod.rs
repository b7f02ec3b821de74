//! The deploy job: takes a queued deployment, fetches its source archive, unpacks it safely, picks
//! the site's output folder, adds that folder to IPFS as a directory (pinned), and makes it the
//! site's current deployment, all in one commit at the end. A dynamic site's deployment (an
//! image) is started on a machine instead (`runtime::launch`).
//!
//! Jobs live in the `deployments` table and every API replica runs this loop: a worker claims a
//! job with `FOR UPDATE SKIP LOCKED` and holds it by a lease it renews while it works, and by a
//! liveness lock (`Lock::Deployment`) on a connection of its own. A worker whose process dies
//! (kill -9, an out-of-memory kill) loses its connection, and with it the lock: another worker
//! starts the job over at once. One that stops without its connection dropping (a lost node, a
//! hung process) stops renewing; once the lease runs out another worker starts the job over. Every step can run twice: IPFS content is addressed by its bytes, and the files
//! and the switch to live are written in the commit that ends the job.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

mod compress;
mod github;

use super::{
    build,
    unpack::{self, Limits, UnpackError},
};
use decentraspace_db::locks::Lock;
use sqlx::{Connection, PgConnection};

use crate::{hosting::HostingState, wakes::Wake};

/// How long a claimed job stays a worker's without a renewal.
const LEASE: Duration = Duration::from_secs(60);
/// How often a working worker renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// How often an idle worker looks for work it was not woken for (a lease that ran out, a
/// notice missed while the listener reconnected); a queued deployment wakes it at once.
const POLL: Duration = Duration::from_secs(1);
/// The longest one deployment may take, end to end.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Attempts before a job that keeps dying is marked failed. A rolling restart of every replica
/// moves a deployment in flight from one to the next, one attempt per replica stopped (a crash
/// cannot hand it back as a clean stop does), so the budget is well above any replica count: only
/// a deployment whose worker dies every time (one that takes its replica down) runs out of it.
const MAX_ATTEMPTS: i32 = 8;
/// Folders a build usually writes its output to, tried in order when none is configured.
const OUTPUT_DIRS: &[&str] = &["dist", "build", "public", "out", "_site", "site", "docs"];

/// A claimed job.
#[derive(Debug)]
struct Job {
    id: i64,
    site_id: i64,
    source: String,
    archive_cid: Option<String>,
    repository: Option<String>,
    git_ref: Option<String>,
    commit_sha: Option<String>,
    github_account_id: Option<i64>,
    /// Queued by a push or a preview: exactly `commit_sha` (a push's is made current only if
    /// not older than the live commit).
    pushed: bool,
    /// The preview it builds; production when `None`.
    preview: Option<String>,
    /// A fork's pull request: built with no variables or secrets.
    from_fork: bool,
    image: Option<String>,
    port: Option<i32>,
    attempts: i32,
    /// Whether the claiming statement took the job's liveness lock (a worker that lost its lease
    /// but still runs may hold it: then only the lease tells this attempt's life).
    alive: bool,
}

/// Why a job failed: what its owner reads.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl From<UnpackError> for Failure {
    fn from(err: UnpackError) -> Self {
        Self(err.to_string())
    }
}

/// The deploy worker's job: claims and works queued deployments one after another, looking again
/// when one is queued (NOTIFY) or every [`POLL`].
pub(super) fn worker(state: &HostingState) -> crate::jobs::Job {
    let state = state.clone();
    crate::jobs::Job::periodic(
        "deploy-worker",
        {
            let wake = state.deploy_wake.clone();
            move || crate::jobs::Schedule::every(POLL).woken_by_notify(wake.clone())
        },
        move || {
            let state = state.clone();
            async move {
                while let Some((job, alive)) = claim(&state).await.context("claim a deploy job")? {
                    let held = (job.id, job.attempts);
                    if let Ok(mut working) = state.working.lock() {
                        working.insert(held);
                    }
                    work(&state, job).await;
                    if let Ok(mut working) = state.working.lock() {
                        working.remove(&held);
                    }
                    // Ends the job's liveness lock with the connection that held it.
                    alive.close().await.ok();
                }
                Ok(())
            }
        },
    )
}

/// Claims the next job: a queued one, one whose lease ran out, or one whose worker died (its
/// liveness lock is free while its lease still runs: a killed replica's connections close at
/// once). The connection returned holds the claimed job's liveness lock, taken in the claiming
/// statement itself, so no other worker can see the job claimed but unheld; closing it (or the
/// process dying) frees the job.
async fn claim(state: &HostingState) -> sqlx::Result<Option<(Job, PgConnection)>> {
    let lease = LEASE.as_secs_f64();
    let liveness = Lock::Deployment { deployment_id: 0 }.key();
    let mut conn = state.db.acquire().await?;
    let job = sqlx::query_as!(
        Job,
        r#"update deployments d
           set state = case when source = 'image' then 'starting' else 'fetching' end,
               lease_until = now() + make_interval(secs => $1),
               attempts = attempts + 1, updated_at = now()
           where id = (select c.id from deployments c
                       where c.state in ('queued', 'fetching', 'building', 'uploading', 'starting')
                         and (c.lease_until is null or c.lease_until < now()
                              or not exists (
                                  select 1 from pg_locks l
                                  where l.locktype = 'advisory' and l.granted and l.objsubid = 1
                                    and (l.classid::bigint << 32 | l.objid::bigint)
                                        = ($2::bigint | ((c.id # (c.id >> 32)) & 4294967295))))
                       order by c.id
                       for update skip locked
                       limit 1)
           returning id, site_id, source, archive_cid, repository, git_ref, commit_sha, github_account_id,
                     pushed, preview, from_fork, image, port, attempts,
                     pg_try_advisory_lock($2::bigint | ((id # (id >> 32)) & 4294967295)) as "alive!""#,
        lease,
        liveness
    )
    .fetch_optional(&mut *conn)
    .await?;
    // The lock lives as long as the session: the connection leaves the pool with it.
    Ok(job.map(|job| (job, conn.detach())))
}

async fn work(state: &HostingState, job: Job) {
    let id = job.id;
    // Dropped with this function, whatever ends it: a stopped worker stops renewing.
    let _renewing = AbortOnDrop(tokio::spawn(renew(state.clone(), id, job.attempts)));
    let result = if job.attempts > MAX_ATTEMPTS {
        Err(Failure(format!("gave up after {MAX_ATTEMPTS} attempts that did not finish")))
    } else {
        if job.attempts > 1 {
            log(state, id, &format!("attempt {}: starting over", job.attempts)).await;
        }
        if !job.alive {
            tracing::warn!(target: "api::deploy", deployment = id, attempt = job.attempts,
                "an earlier attempt's worker still holds the job; this attempt keeps it by its lease");
        }
        // A node that stalls must not hold the job (and this worker) for ever.
        tokio::time::timeout(DEPLOY_TIMEOUT, deploy(state, &job)).await.unwrap_or_else(|_| {
            Err(Failure(format!("the deployment took longer than {DEPLOY_TIMEOUT:?}")))
        })
    };
    if result.is_ok() && job.source == "github" {
        github::report(state, &job, github::Report::Live).await;
    }
    if let Err(Failure(reason)) = result {
        tracing::info!(target: "api::deploy", deployment = id, %reason, "deployment failed");
        // Only while the job is still this attempt's: a worker that lost its lease writes nothing.
        let failed = sqlx::query!(
            "update deployments set state = 'failed', error = $3, log = log || $4,
                                    lease_until = null, finished_at = now(), updated_at = now()
             where id = $1 and attempts = $2
               and state in ('fetching', 'building', 'uploading', 'starting')",
            id,
            job.attempts,
            reason,
            super::log::stamped(&format!("failed: {reason}"))
        )
        .execute(&state.db)
        .await;
        match failed {
            // The failure is this attempt's to tell (not one that lost its lease).
            Ok(done) if done.rows_affected() == 1 && job.source == "github" => {
                github::report(state, &job, github::Report::Failed).await;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(target: "api::deploy", deployment = id, %err, "cannot record the failure");
                return;
            }
        }
    }
    release_archive(state, &job).await;
}

/// Hands back the deployments this replica's worker was working on when it stopped (a graceful
/// shutdown cancels the worker mid-job): their leases end now, so another replica starts them
/// over at once instead of when the lease would have run out. An attempt another worker took
/// since is left alone. How many were handed back.
pub async fn hand_back(state: &HostingState) -> usize {
    let mut handed = 0;
    let held: Vec<(i64, i32)> =
        state.working.lock().map(|mut w| w.drain().collect()).unwrap_or_default();
    for (id, attempt) in held {
        let released = sqlx::query!(
            "update deployments set lease_until = now(), updated_at = now()
             where id = $1 and attempts = $2
               and state in ('fetching', 'building', 'uploading', 'starting')",
            id,
            attempt
        )
        .execute(&state.db)
        .await;
        match released {
            Ok(done) if done.rows_affected() == 1 => {
                handed += 1;
                super::note(
                    &state.db,
                    id,
                    "the worker stopped (a replica shut down); another takes over",
                )
                .await;
                tracing::info!(target: "api::deploy", deployment = id, "handed back");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(target: "api::deploy", deployment = id, %err, "cannot hand back; its lease runs out instead")
            }
        }
    }
    handed
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps the job's lease while the worker runs (as long as the job is still this attempt's).
async fn renew(state: HostingState, id: i64, attempt: i32) {
    let lease = LEASE.as_secs_f64();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let renewed = sqlx::query!(
            "update deployments set lease_until = now() + make_interval(secs => $3)
             where id = $1 and attempts = $2",
            id,
            attempt,
            lease
        )
        .execute(&state.db)
        .await;
        if let Err(err) = renewed {
            tracing::warn!(target: "api::deploy", deployment = id, %err, "cannot renew the lease");
        }
    }
}

/// Appends a line to the deployment's log.
async fn log(state: &HostingState, id: i64, line: &str) {
    super::note(&state.db, id, line).await;
}

/// Moves the job to `to`, if it is still this attempt's.
async fn set_state(state: &HostingState, job: &Job, to: &str) -> Result<(), Failure> {
    let moved = sqlx::query!(
        "update deployments set state = $3, updated_at = now() where id = $1 and attempts = $2",
        job.id,
        job.attempts,
        to
    )
    .execute(&state.db)
    .await
    .map_err(internal)?;
    if moved.rows_affected() == 0 {
        return Err(lost(job));
    }
    Ok(())
}

/// The job went to another worker (this one stalled past its lease).
fn lost(job: &Job) -> Failure {
    Failure(format!("attempt {} lost its lease to another worker", job.attempts))
}

fn internal(err: impl std::fmt::Display) -> Failure {
    tracing::warn!(target: "api::deploy", %err, "deploy step failed");
    Failure("an internal error stopped the deployment; deploy again".into())
}

async fn deploy(state: &HostingState, job: &Job) -> Result<(), Failure> {
    if job.source == "image" {
        return deploy_image(state, job).await;
    }
    let ipfs = state.ipfs.clone().ok_or_else(|| Failure("no IPFS node is configured".into()))?;
    let work = tempfile::Builder::new()
        .prefix("decentraspace-deploy-")
        .tempdir_in(&state.config.deploy_work_dir)
        .map_err(internal)?;
    let archive = work.path().join("archive");
    match job.source.as_str() {
        "upload" => {
            let cid = job.archive_cid.as_deref().ok_or_else(|| Failure("no archive".into()))?;
            log(state, job.id, &format!("fetching the uploaded archive {cid}")).await;
            fetch_from_ipfs(state, cid, &archive).await?;
        }
        "github" => github::fetch(state, job, &archive).await?,
        other => return Err(Failure(format!("deployments from {other} are not supported"))),
    }

    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).map_err(internal)?;
    let limits = Limits {
        max_files: state.config.deploy_max_files,
        max_bytes: state.config.deploy_max_bytes,
    };
    let unpacked = tokio::task::spawn_blocking({
        let (archive, tree) = (archive.clone(), tree.clone());
        move || unpack::unpack(&archive, &tree, limits)
    })
    .await
    .map_err(internal)??;
    log(
        state,
        job.id,
        &format!("unpacked {} files, {} bytes", unpacked.files.len(), unpacked.bytes),
    )
    .await;
    for skipped in &unpacked.skipped {
        log(state, job.id, &format!("skipped {skipped}")).await;
    }

    let settings = sqlx::query!(
        "select output_dir, root_dir, install_command, build_command from sites where id = $1",
        job.site_id
    )
    .fetch_one(&state.db)
    .await
    .map_err(internal)?;
    let configured = settings.output_dir;
    let files: Vec<PathBuf> = unpacked.files;
    let top = top_folder(&files);
    let build_settings = build::Settings {
        root_dir: settings.root_dir,
        install_command: settings.install_command,
        build_command: settings.build_command,
    };
    let plan = build::Plan::of(&build_settings, &tree.join(&top)).map_err(Failure)?;
    let (output, site_files) = if plan.runs() {
        set_state(state, job, "building").await?;
        let env = match (&job.preview, job.from_fork) {
            (_, true) => {
                log(
                    state,
                    job.id,
                    "a pull request from a fork: built without variables or secrets",
                )
                .await;
                Vec::new()
            }
            (Some(_), false) => {
                super::env::for_build(state, job.site_id, super::env::EnvScope::Preview)
                    .await
                    .map_err(Failure)?
            }
            (None, false) => {
                super::env::for_build(state, job.site_id, super::env::EnvScope::Production)
                    .await
                    .map_err(Failure)?
            }
        };
        let account = sqlx::query_scalar!("select account from sites where id = $1", job.site_id)
            .fetch_one(&state.db)
            .await
            .map_err(internal)?;
        let account = alloy::primitives::Address::try_from(account.as_slice()).map_err(internal)?;
        match build::minutes::check(state, account).await {
            Ok(()) => {}
            Err(build::minutes::MinutesError::InsufficientCredit { detail, .. }) => {
                return Err(Failure(detail));
            }
            Err(err) => return Err(internal(err)),
        }
        run_build(state, job, &plan, &tree.join(&top), &env).await?;
        let output = built_output(&tree, &top.join(&plan.root), configured.as_deref())?;
        let (max_files, max_bytes) = (state.config.deploy_max_files, state.config.deploy_max_bytes);
        let collected = tokio::task::spawn_blocking({
            let dir = tree.join(&output);
            move || build::output::collect(&dir, max_files, max_bytes)
        })
        .await
        .map_err(internal)?
        .map_err(Failure)?;
        let site_files = collected
            .into_iter()
            .map(|(path, size)| (path.to_string_lossy().into_owned(), size))
            .collect();
        (output, site_files)
    } else {
        let output = output_dir(&tree, &files, configured.as_deref())?;
        let site_files: Vec<(String, u64)> = files
            .iter()
            .filter_map(|f| f.strip_prefix(&output).ok())
            .map(|rel| {
                // Unpacked names are checked UTF-8 without backslashes.
                let path = rel.to_string_lossy().into_owned();
                let size =
                    std::fs::metadata(tree.join(&output).join(rel)).map(|m| m.len()).unwrap_or(0);
                (path, size)
            })
            .collect();
        (output, site_files)
    };
    let shown =
        if output.as_os_str().is_empty() { "/".into() } else { output.display().to_string() };
    log(state, job.id, &format!("serving {shown} ({} files)", site_files.len())).await;
    let routing = read_routing(&tree.join(&output))?;
    if let Some(routing) = &routing {
        let said = format!(
            "_redirects: {} rules, _headers: {} path blocks",
            routing.redirects.len(),
            routing.headers.len()
        );
        log(state, job.id, &said).await;
    }
    let routing = routing.map(|r| serde_json::to_value(r).map_err(internal)).transpose()?;
    sqlx::query!("update deployments set routing = $2 where id = $1", job.id, routing)
        .execute(&state.db)
        .await
        .map_err(internal)?;

    set_state(state, job, "uploading").await?;
    let added = ipfs.add_directory(&tree.join(&output), &site_files).await.map_err(|err| {
        tracing::warn!(target: "api::deploy", deployment = job.id, %err, "IPFS add failed");
        Failure("the IPFS node did not take the site; deploy again".into())
    })?;
    log(state, job.id, &format!("added to IPFS as {}", added.cid)).await;
    match compress::store(state, job.id, &tree.join(&output), &site_files).await {
        Ok(line) => log(state, job.id, &line).await,
        Err(err) => {
            tracing::warn!(target: "api::deploy", deployment = job.id, error = format!("{err:#}"), "no compressed copies");
            log(state, job.id, "served uncompressed: the compressed copies could not be made")
                .await;
        }
    }
    let mut published =
        Err(Failure("the site's live deployment kept changing; deploy again".into()));
    // Another deployment may become current between the decision and the commit: decide again.
    for _ in 0..3 {
        let switch = github::switch(state, job).await?;
        match publish(state, job, &site_files, &added, &switch).await {
            Ok(Published::Done) => {
                published = Ok(());
                break;
            }
            Ok(Published::CurrentMoved) => continue,
            Err(failure) => {
                published = Err(failure);
                break;
            }
        }
    }
    if published.is_err() {
        release_directory(state, &added.cid).await;
    }
    published
}

/// Whether a deployment that goes live becomes the one the site serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Switch {
    /// Yes, if the site still serves this deployment (or none) when the switch is written.
    IfCurrentIs(Option<i64>),
    /// Not production: the preview with this label serves it, if it still previews this
    /// deployment's commit.
    Preview(String),
    /// No: the reason goes to the deployment's log.
    Never(String),
}

/// How a publication ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    /// Live (and current, or not, as the switch said).
    Done,
    /// The site's current deployment changed after the switch was decided: nothing written.
    CurrentMoved,
}

/// Starts a dynamic site's image on a machine and switches the site to it.
async fn deploy_image(state: &HostingState, job: &Job) -> Result<(), Failure> {
    use super::runtime::launch::{ImageJob, Outcome, launch};
    let (Some(image), Some(port)) = (job.image.as_deref(), job.port) else {
        return Err(Failure("the deployment names no image".into()));
    };
    let port = u16::try_from(port).map_err(internal)?;
    log(state, job.id, &format!("starting {image} (port {port})")).await;
    let image_job =
        ImageJob { id: job.id, attempts: job.attempts, site_id: job.site_id, image, port };
    match launch(state, image_job).await {
        Outcome::Live(lines) => {
            for line in lines {
                log(state, job.id, &line).await;
            }
            Ok(())
        }
        Outcome::Failed(reason) => Err(Failure(reason)),
        Outcome::Lost => Err(lost(job)),
    }
}

/// Records the files and makes the deployment live, and current as `switch` says, in one
/// commit, if the job is still this attempt's.
async fn publish(
    state: &HostingState,
    job: &Job,
    site_files: &[(String, u64)],
    added: &decentraspace_clients::ipfs::AddedDirectory,
    switch: &Switch,
) -> Result<Published, Failure> {
    let mut paths = Vec::with_capacity(site_files.len());
    let (mut cids, mut sizes, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for (path, size) in site_files {
        let cid = added
            .files
            .get(path)
            .ok_or_else(|| internal(format!("the node's reply lacks {path}")))?;
        paths.push(path.clone());
        cids.push(cid.clone());
        sizes.push(*size as i64);
        types.push(content_type(path));
    }
    let total: i64 = sizes.iter().sum();
    let mut tx = state.db.begin().await.map_err(internal)?;
    sqlx::query!("delete from deployment_files where deployment_id = $1", job.id)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    sqlx::query!(
        "insert into deployment_files (deployment_id, path, cid, size_bytes, content_type)
         select $1, * from unnest($2::text[], $3::text[], $4::bigint[], $5::text[])",
        job.id,
        &paths,
        &cids,
        &sizes,
        &types
    )
    .execute(&mut *tx)
    .await
    .map_err(internal)?;
    let live = sqlx::query!(
        "update deployments set state = 'live', content_id = $3, files = $4, size_bytes = $5,
                                log = log || $6, lease_until = null, finished_at = now(),
                                updated_at = now()
         where id = $1 and attempts = $2 and state = 'uploading'",
        job.id,
        job.attempts,
        added.cid,
        paths.len() as i32,
        total,
        super::log::stamped("live")
    )
    .execute(&mut *tx)
    .await
    .map_err(internal)?;
    if live.rows_affected() == 0 {
        // Dropping the transaction rolls the files back.
        return Err(lost(job));
    }
    match switch {
        Switch::IfCurrentIs(expected) => {
            let switched = sqlx::query!(
                "update sites set current_deployment_id = $2
                 where id = $1 and current_deployment_id is not distinct from $3",
                job.site_id,
                job.id,
                *expected
            )
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
            if switched.rows_affected() == 0 {
                // Dropping the transaction rolls the files and the state back.
                return Ok(Published::CurrentMoved);
            }
        }
        Switch::Preview(label) => {
            let served = sqlx::query!(
                "update site_previews set deployment_id = $3, updated_at = now()
                 where site_id = $1 and label = $2 and head_sha = $4 and closed_at is null",
                job.site_id,
                label,
                job.id,
                job.commit_sha
            )
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
            let said = if served.rows_affected() == 0 {
                format!("not served: the preview {label} moved to a newer commit or was closed")
            } else {
                format!("served as the preview {label}")
            };
            sqlx::query!(
                "update deployments set log = log || $2 where id = $1",
                job.id,
                super::log::stamped(&said)
            )
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        }
        Switch::Never(reason) => {
            sqlx::query!(
                "update deployments set log = log || $2 where id = $1",
                job.id,
                super::log::stamped(reason)
            )
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        }
    }
    // The site's IPNS name follows its current deployment.
    state.wakes.after_commit(&mut tx, Wake::SiteNames).await.map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    tracing::info!(target: "api::deploy", deployment = job.id, cid = %added.cid, "deployment live");
    Ok(Published::Done)
}

/// Streams the archive `cid` from the node into `to`, within the archive size limit.
async fn fetch_from_ipfs(state: &HostingState, cid: &str, to: &Path) -> Result<(), Failure> {
    let ipfs = state.ipfs.as_ref().ok_or_else(|| Failure("no IPFS node is configured".into()))?;
    let stream = ipfs.cat_stream(cid).await.map_err(internal)?;
    write_bounded(state, stream.map_err(internal), to).await
}

/// Writes an archive's bytes into `to`, refusing past the archive size limit.
async fn write_bounded(
    state: &HostingState,
    stream: impl futures::Stream<Item = Result<bytes::Bytes, Failure>>,
    to: &Path,
) -> Result<(), Failure> {
    let mut stream = std::pin::pin!(stream);
    let limit = state.config.deploy_max_archive_bytes;
    let mut file = tokio::fs::File::create(to).await.map_err(internal)?;
    let mut size = 0u64;
    while let Some(chunk) = stream.try_next().await? {
        size += chunk.len() as u64;
        if size > limit {
            return Err(Failure(format!("the archive is over {limit} bytes")));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok(())
}

/// The source's top: a single top folder holding everything (as in GitHub's tarballs,
/// `<owner>-<repo>-<sha>/`), else the tree itself.
fn top_folder(files: &[PathBuf]) -> PathBuf {
    let mut top = PathBuf::new();
    let first: Vec<_> = files.iter().filter_map(|f| f.components().next()).collect();
    if let Some(only) = first.first()
        && first.iter().all(|c| c == only)
        && files.iter().all(|f| f.components().count() > 1)
    {
        top.push(only);
    }
    top
}

/// Runs the build in the sandbox, its output going to the deployment's log as it comes.
async fn run_build(
    state: &HostingState,
    job: &Job,
    plan: &build::Plan,
    top: &Path,
    env: &[(String, secrecy::SecretString)],
) -> Result<(), Failure> {
    use secrecy::ExposeSecret;
    let (lines, mut received) = tokio::sync::mpsc::channel::<String>(256);
    // Every value of the build's environment is masked wherever it appears in the log; the log
    // is read line by line, so each line of a value of several lines is masked too.
    let mut secrets: Vec<String> = Vec::new();
    for (_, value) in env {
        let value = value.expose_secret();
        secrets.extend(value.lines().filter(|line| line.trim().len() >= 4).map(str::to_owned));
        if !value.is_empty() {
            secrets.push(value.to_owned());
        }
    }
    // The longest first, so a value that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mask = move |line: String| {
        secrets.iter().fold(line, |line, secret| line.replace(secret.as_str(), "***"))
    };
    let writer = {
        let (state, id) = (state.clone(), job.id);
        tokio::spawn(async move {
            let mut batch = String::new();
            while let Some(line) = received.recv().await {
                // Each line is stamped as it arrives, before it waits for a write.
                batch.push_str(&super::log::stamped(&mask(line)));
                // Whatever else is waiting goes in the same write.
                while let Ok(line) = received.try_recv() {
                    batch.push_str(&super::log::stamped(&mask(line)));
                    if batch.len() > 64 * 1024 {
                        break;
                    }
                }
                super::log::append(&state.db, id, &batch).await;
                batch.clear();
            }
        })
    };
    let env: Vec<(String, String)> =
        env.iter().map(|(name, value)| (name.clone(), value.expose_secret().to_owned())).collect();
    let started = std::time::Instant::now();
    let built = state.builder.run(job.site_id, plan, top, &env, !job.from_fork, &lines).await;
    let wall = started.elapsed();
    drop(lines);
    let _ = writer.await;
    // What ran is counted whether it succeeded or not; a host that cannot build ran nothing.
    if !matches!(built, Err(build::BuildError::Unavailable(_))) {
        match build::minutes::record(state, job.id, job.site_id, wall).await {
            Ok(recorded) if recorded.billed > 0 => {
                let credits = crate::billing::charges::credits(recorded.credits);
                let line = format!(
                    "build minutes: {} ({} past this month's allowance: {credits})",
                    recorded.minutes, recorded.billed
                );
                log(state, job.id, &line).await;
            }
            Ok(recorded) => {
                let line =
                    format!("build minutes: {} (within this month's allowance)", recorded.minutes);
                log(state, job.id, &line).await;
            }
            Err(err) => return Err(internal(err)),
        }
    }
    built.map_err(|err| Failure(err.to_string()))
}

/// The output's `_redirects` and `_headers`, parsed; `None` when it has neither. A malformed one
/// fails the deployment, naming its line.
fn read_routing(output: &Path) -> Result<Option<super::routing::Routing>, Failure> {
    use super::routing::{MAX_FILE, Routing, parse_headers, parse_redirects};
    let read = |name: &str| -> Result<Option<String>, Failure> {
        let path = output.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else { return Ok(None) };
        if !meta.is_file() {
            return Err(Failure(format!("{name} must be a file")));
        }
        if meta.len() > MAX_FILE {
            return Err(Failure(format!("{name} is over {MAX_FILE} bytes")));
        }
        let bytes = std::fs::read(&path).map_err(internal)?;
        String::from_utf8(bytes).map(Some).map_err(|_| Failure(format!("{name} is not UTF-8 text")))
    };
    let (redirects, headers) = (read("_redirects")?, read("_headers")?);
    if redirects.is_none() && headers.is_none() {
        return Ok(None);
    }
    let fail = |err: super::routing::RoutingError| Failure(err.to_string());
    Ok(Some(Routing {
        redirects: redirects
            .as_deref()
            .map(parse_redirects)
            .transpose()
            .map_err(fail)?
            .unwrap_or_default(),
        headers: headers
            .as_deref()
            .map(parse_headers)
            .transpose()
            .map_err(fail)?
            .unwrap_or_default(),
    }))
}

/// The folder a build wrote the site to, inside `root` (where the build ran): the configured
/// one, else `root` or the first of the usual build folders holding an `index.html`.
fn built_output(tree: &Path, root: &Path, configured: Option<&str>) -> Result<PathBuf, Failure> {
    if let Some(dir) = configured {
        let dir = unpack::inside_path(Path::new(dir)).map_err(|_| {
            Failure(format!("output_dir {dir:?} must be a folder inside the source"))
        })?;
        let output = root.join(&dir);
        if !tree.join(&output).is_dir() {
            return Err(Failure(format!(
                "the build wrote no folder {dir:?} (output_dir)",
                dir = dir.display()
            )));
        }
        return Ok(output);
    }
    let has_index = |dir: &Path| tree.join(dir).join("index.html").is_file();
    std::iter::once(root.to_owned())
        .chain(OUTPUT_DIRS.iter().map(|dir| root.join(dir)))
        .find(|dir| has_index(dir))
        .ok_or_else(|| {
            Failure(format!(
                "the build wrote no index.html at the top or in {}; set output_dir",
                OUTPUT_DIRS.iter().map(|d| format!("{d}/")).collect::<Vec<_>>().join(", ")
            ))
        })
}

/// The folder of the tree to serve: the configured one, else the first of the usual build
/// folders holding an `index.html`, else the top. A single top folder holding everything (as in
/// GitHub's tarballs, `<owner>-<repo>-<sha>/`) is looked into first.
fn output_dir(
    tree: &Path,
    files: &[PathBuf],
    configured: Option<&str>,
) -> Result<PathBuf, Failure> {
    let top = top_folder(files);
    if let Some(dir) = configured {
        let dir = unpack::inside_path(Path::new(dir)).map_err(|_| {
            Failure(format!("output_dir {dir:?} must be a folder inside the source"))
        })?;
        let root = top.join(&dir);
        if !files.iter().any(|f| f.starts_with(&root)) {
            return Err(Failure(format!(
                "the source has no files in output_dir {dir:?}",
                dir = dir.display()
            )));
        }
        return Ok(root);
    }
    let has_index = |dir: &Path| tree.join(dir).join("index.html").is_file();
    if has_index(&top) {
        return Ok(top);
    }
    for dir in OUTPUT_DIRS {
        let candidate = top.join(dir);
        if has_index(&candidate) {
            return Ok(candidate);
        }
    }
    Err(Failure(format!(
        "no index.html at the top of the source or in {}; set output_dir",
        OUTPUT_DIRS.iter().map(|d| format!("{d}/")).collect::<Vec<_>>().join(", ")
    )))
}

/// The content type a site's file is served with (text with its charset).
pub(super) fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    if essence.starts_with("text/")
        || essence == "application/javascript"
        || essence == "application/json"
    {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_owned()
    }
}

/// Unpins a site directory that did not go live, unless a live deployment serves the same
/// content (a deployment of unchanged files has the same CID).
async fn release_directory(state: &HostingState, cid: &str) {
    let Some(ipfs) = &state.ipfs else { return };
    let served = sqlx::query_scalar!(
        r#"select exists(select 1 from deployments where content_id = $1 and state = 'live') as "e!""#,
        cid
    )
    .fetch_one(&state.db)
    .await;
    if let Ok(false) = served
        && let Err(err) = ipfs.unpin(cid).await
    {
        tracing::warn!(target: "api::deploy", %cid, %err, "cannot unpin the directory");
    }
}

/// Unpins an uploaded archive once its deployment has ended (live or failed): the site's files
/// are pinned on their own.
async fn release_archive(state: &HostingState, job: &Job) {
    let (Some(cid), Some(ipfs)) = (&job.archive_cid, &state.ipfs) else { return };
    let ended = sqlx::query_scalar!(
        r#"select state in ('live', 'failed') as "ended!" from deployments where id = $1"#,
        job.id
    )
    .fetch_one(&state.db)
    .await
    .unwrap_or(false);
    if ended && let Err(err) = ipfs.unpin(cid).await {
        tracing::warn!(target: "api::deploy", %cid, %err, "cannot unpin the archive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, b"x").expect("write");
        }
        (dir, files.iter().map(PathBuf::from).collect())
    }

    #[test]
    fn the_output_folder_is_found_or_asked_for() {
        let (dir, files) = tree(&["index.html", "app.js"]);
        assert_eq!(output_dir(dir.path(), &files, None).expect("top"), PathBuf::new());

        let (dir, files) = tree(&["me-site-abc/README.md", "me-site-abc/dist/index.html"]);
        assert_eq!(
            output_dir(dir.path(), &files, None).expect("dist"),
            PathBuf::from("me-site-abc/dist")
        );
        assert_eq!(
            output_dir(dir.path(), &files, Some("dist")).expect("configured"),
            PathBuf::from("me-site-abc/dist")
        );
        assert!(output_dir(dir.path(), &files, Some("../etc")).is_err());
        assert!(output_dir(dir.path(), &files, Some("missing")).is_err());

        let (dir, files) = tree(&["src/main.rs", "README.md"]);
        let err = output_dir(dir.path(), &files, None).expect_err("no index");
        assert!(err.0.contains("set output_dir"), "{err}");
    }

    #[test]
    fn text_is_served_with_its_charset() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/app.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("logo.png"), "image/png");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }
}
