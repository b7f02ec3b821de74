//! Each folder's IPFS directory CID, rebuilt when what it holds changes. Changes mark the folder
//! and every folder above it stale (in the transaction that makes the change); one replica at a
//! time rebuilds stale folders deepest first, from its files' and sub-folders' CIDs, pins the new
//! directory and unpins the one it replaces. Deleted folders' directories are unpinned. A crash
//! at any point leaves folders stale, and the next pass builds them again.

use std::{collections::HashSet, time::Duration};

use decentraspace_clients::ipfs::Ipfs;
use decentraspace_db::locks::{Lock, try_lead};
use sqlx::PgConnection;

use crate::{
    jobs::{Job, Schedule},
    storage::StorageState,
    wakes::Wake,
};

/// How often the job looks for stale folders when nothing wakes it.
const IDLE: Duration = Duration::from_secs(5);
/// Folders built per query.
const BATCH: i64 = 50;

/// Marks `folders` (`None`: the root, which has no directory) and every folder above them stale.
pub(super) async fn changed(conn: &mut PgConnection, folders: &[Option<i64>]) -> sqlx::Result<()> {
    let ids: Vec<i64> = folders.iter().flatten().copied().collect();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "with recursive up as (
             select id, parent_id from storage_folders where id = any($1)
             union
             select f.id, f.parent_id from storage_folders f join up on f.id = up.parent_id
         )
         update storage_folders set cid_version = cid_version + 1 where id in (select id from up)",
        &ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Wakes the rebuild job on every replica (after the change committed).
pub(super) async fn wake(state: &StorageState) {
    state.wakes.now(&state.db, Wake::FolderDirectories).await;
}

/// The rebuild job: a pass when woken, or every few seconds.
pub fn job(state: &StorageState) -> Option<Job> {
    let ipfs = state.ipfs.clone()?;
    let wake = state.wakes.of(Wake::FolderDirectories);
    let state = state.clone();
    Some(Job::periodic(
        "folder-directories",
        move || Schedule::every(IDLE).woken_by_notify(wake.clone()),
        move || {
            let (state, ipfs) = (state.clone(), ipfs.clone());
            async move { pass(&state, &ipfs).await.map(drop) }
        },
    ))
}

/// Builds every stale folder whose sub-folders are built, deepest first, until none is left
/// (or one fails: it is tried again on the next pass). Answers the folders built.
pub async fn pass(state: &StorageState, ipfs: &Ipfs) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, Lock::StorageDirectories).await? else { return Ok(0) };
    let mut built = 0;
    let mut failed = HashSet::new();
    loop {
        let ready = sqlx::query!(
            r#"select f.id, f.cid_version, f.cid from storage_folders f
               where f.cid_version > f.cid_built and f.deleted_at is null and not (f.id = any($1))
                 and not exists (select 1 from storage_folders c
                                 where c.parent_id = f.id and c.deleted_at is null
                                   and c.cid_version > c.cid_built)
               order by f.id limit $2"#,
            &failed.iter().copied().collect::<Vec<i64>>(),
            BATCH
        )
        .fetch_all(&state.db)
        .await?;
        if ready.is_empty() {
            break;
        }
        for folder in ready {
            match build(state, ipfs, folder.id).await {
                Ok(cid) => {
                    // The version read before the build: a change made meanwhile bumped it
                    // past, so the folder stays stale for the next round.
                    sqlx::query!(
                        "update storage_folders set cid = $2, cid_built = greatest(cid_built, $3)
                         where id = $1",
                        folder.id,
                        cid,
                        folder.cid_version
                    )
                    .execute(&state.db)
                    .await?;
                    if let Some(old) = folder.cid.filter(|old| *old != cid) {
                        unpin_unless_used(state, ipfs, &old).await?;
                    }
                    built += 1;
                }
                Err(err) => {
                    tracing::warn!(target: "api::storage", folder = folder.id, %err,
                        "cannot build a folder's directory; it is tried again later");
                    failed.insert(folder.id);
                }
            }
        }
    }
    // Deleted folders' directories.
    let released = sqlx::query!(
        r#"update storage_folders f set cid = null
           from storage_folders old
           where old.id = f.id and f.deleted_at is not null and f.cid is not null
           returning old.cid as "cid!""#
    )
    .fetch_all(&state.db)
    .await?;
    for folder in released {
        unpin_unless_used(state, ipfs, &folder.cid).await?;
    }
    drop(lock);
    Ok(built)
}

/// The folder's directory: its IPFS files and built sub-folders by name. Folder names are unique
/// among siblings; a file whose name is taken gets its id before the extension.
async fn build(state: &StorageState, ipfs: &Ipfs, folder: i64) -> anyhow::Result<String> {
    let folders = sqlx::query!(
        r#"select name, cid as "cid!" from storage_folders
           where parent_id = $1 and deleted_at is null and cid is not null order by id"#,
        folder
    )
    .fetch_all(&state.db)
    .await?;
    let files = sqlx::query!(
        "select id, name, content_id from storage_files
         where folder_id = $1 and deleted_at is null and backend = 'ipfs' order by id",
        folder
    )
    .fetch_all(&state.db)
    .await?;
    let mut taken = HashSet::new();
    let mut entries = Vec::with_capacity(folders.len() + files.len());
    for f in folders {
        taken.insert(f.name.clone());
        entries.push((f.name, f.cid));
    }
    for f in files {
        let name = if taken.contains(&f.name) { numbered(&f.name, f.id) } else { f.name };
        taken.insert(name.clone());
        entries.push((name, f.content_id));
    }
    Ok(ipfs.directory_of(&entries).await?)
}

/// `report.pdf` → `report (12).pdf`.
fn numbered(name: &str, id: i64) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({id}).{ext}"),
        _ => format!("{name} ({id})"),
    }
}

/// Unpins a directory no live folder has (two folders with the same content share one CID).
async fn unpin_unless_used(state: &StorageState, ipfs: &Ipfs, cid: &str) -> anyhow::Result<()> {
    let used = sqlx::query_scalar!(
        r#"select exists(select 1 from storage_folders where cid = $1 and deleted_at is null) as "used!""#,
        cid
    )
    .fetch_one(&state.db)
    .await?;
    if !used && let Err(err) = ipfs.unpin(cid).await {
        tracing::warn!(target: "api::storage", %cid, %err, "cannot unpin a folder's directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_taken_name_gets_the_file_id_before_its_extension() {
        assert_eq!(super::numbered("report.pdf", 12), "report (12).pdf");
        assert_eq!(super::numbered("README", 3), "README (3)");
        assert_eq!(super::numbered(".env", 4), ".env (4)");
        assert_eq!(super::numbered("a.tar.gz", 5), "a.tar (5).gz");
    }
}
