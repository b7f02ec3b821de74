//! The build cache: per site and lockfile, the package manager's own download cache, kept
//! between builds so a second install of an unchanged lockfile fetches nothing. It is bound into
//! the sandbox at `/cache` for the install step only, holds nothing but what the site's own
//! installs put there, and is safe to drop at any time (the next install fetches again). Its size
//! is kept within a budget by removing the least recently used folders.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use decentraspace_sandbox::tree_size;
use sha2::{Digest, Sha256};

/// Files that pin a source's dependencies, in the order they are looked for; without one,
/// `package.json` stands for them.
const LOCKFILES: &[&str] =
    &["package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml", "yarn.lock", "package.json"];
/// A folder used this recently may be in use by a running build: never removed by trimming.
const IN_USE: Duration = Duration::from_secs(15 * 60);

/// Where build caches live and how much they may hold.
#[derive(Debug, Clone)]
pub(crate) struct BuildCache {
    root: PathBuf,
    budget: u64,
}

/// The cache folder of one build.
#[derive(Debug)]
pub(crate) struct CacheFolder {
    /// The folder, to bind into the sandbox.
    pub path: PathBuf,
    /// The lockfile's hash it is kept under (shortened).
    pub key: String,
    /// Whether an earlier build left it.
    pub reused: bool,
}

impl BuildCache {
    /// Caches under `root`, together at most `budget` bytes.
    pub(crate) fn new(root: PathBuf, budget: u64) -> Self {
        Self { root, budget }
    }

    /// The folder for `site`'s source at `source` (where its lockfile is), made if new and
    /// marked as just used. Blocking.
    pub(crate) fn folder(&self, site: i64, source: &Path) -> std::io::Result<CacheFolder> {
        let mut hash = Sha256::new();
        for name in LOCKFILES {
            if let Ok(bytes) = std::fs::read(source.join(name)) {
                hash.update(name.as_bytes());
                hash.update(bytes);
                break;
            }
        }
        let key = hex::encode(&hash.finalize()[..8]);
        let path = self.root.join(format!("site-{site}")).join(&key);
        let reused = path.is_dir();
        std::fs::create_dir_all(&path)?;
        // The folder's time says when it was last used; trimming goes by it.
        std::fs::File::open(&path)?.set_modified(SystemTime::now())?;
        Ok(CacheFolder { path, key, reused })
    }

    /// Removes the least recently used folders until the caches hold at most the budget (never
    /// one used in the last 15 minutes). Gives the bytes removed. Blocking.
    pub(crate) fn trim(&self) -> std::io::Result<u64> {
        let mut folders = Vec::new();
        let Ok(sites) = std::fs::read_dir(&self.root) else { return Ok(0) };
        for site in sites.flatten() {
            for folder in std::fs::read_dir(site.path())?.flatten() {
                let used = folder.metadata()?.modified()?;
                folders.push((used, tree_size(&folder.path(), u64::MAX), folder.path()));
            }
        }
        let mut total: u64 = folders.iter().map(|(_, size, _)| size).sum();
        folders.sort();
        let mut removed = 0;
        let now = SystemTime::now();
        for (used, size, path) in folders {
            if total <= self.budget {
                break;
            }
            if now.duration_since(used).unwrap_or_default() < IN_USE {
                continue;
            }
            std::fs::remove_dir_all(&path)?;
            total -= size;
            removed += size;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_kept_per_site_and_lockfile() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = BuildCache::new(root.path().to_owned(), 1 << 30);
        let source = tempfile::tempdir().expect("tempdir");
        std::fs::write(source.path().join("package.json"), "{}").expect("write");
        std::fs::write(source.path().join("package-lock.json"), "{\"v\": 1}").expect("write");
        let first = cache.folder(7, source.path()).expect("folder");
        assert!(!first.reused);
        let again = cache.folder(7, source.path()).expect("folder");
        assert!(again.reused && again.path == first.path);
        let other_site = cache.folder(8, source.path()).expect("folder");
        assert!(!other_site.reused && other_site.key == first.key);
        std::fs::write(source.path().join("package-lock.json"), "{\"v\": 2}").expect("write");
        let changed = cache.folder(7, source.path()).expect("folder");
        assert!(!changed.reused && changed.key != first.key);
    }

    #[test]
    fn trimming_removes_the_least_recently_used_past_the_budget() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = BuildCache::new(root.path().to_owned(), 1500);
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let day_ago = SystemTime::now() - Duration::from_secs(86_400);
        for (site, when) in
            [("site-1/aa", day_ago), ("site-2/bb", hour_ago), ("site-3/cc", SystemTime::now())]
        {
            let dir = root.path().join(site);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("blob"), vec![0u8; 1000]).expect("write");
            std::fs::File::open(&dir).expect("open").set_modified(when).expect("touch");
        }
        assert_eq!(cache.trim().expect("trim"), 2000, "the two oldest go; the one in use stays");
        assert!(root.path().join("site-3/cc/blob").exists());
        assert!(!root.path().join("site-1/aa").exists() && !root.path().join("site-2/bb").exists());
        assert_eq!(cache.trim().expect("trim"), 0);
    }
}
