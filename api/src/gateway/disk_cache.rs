//! Site files too large for memory, kept on local disk by CID (`GATEWAY_CACHE_DIR`, up to
//! `GATEWAY_CACHE_MAX_MB`). Content named by its hash never changes, so an entry is never stale.
//! The first request for a file streams it from the IPFS node while a background fill copies it
//! to disk (once per CID, into a temporary name renamed when complete, so a cut-off fill leaves
//! nothing usable behind); later requests read the disk. When the total passes the bound, the
//! least recently used files go, and copies in progress count against the bound (at most
//! [`MAX_FILLING`] at once). The files are in a folder of this process's own, removed with it.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// How much of a file is read from disk at a time.
const CHUNK: usize = 256 * 1024;
/// Copies in progress at most (more requests stream from the node without one).
const MAX_FILLING: usize = 4;

/// Files on disk by CID.
#[derive(Debug)]
pub(super) struct DiskCache {
    dir: PathBuf,
    /// The folder, removed when dropped.
    _temporary: tempfile::TempDir,
    max_bytes: u64,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Size and last use of each complete file.
    files: HashMap<String, (u64, Instant)>,
    total: u64,
    /// CIDs being copied now.
    filling: HashSet<String>,
    /// Their sizes together.
    reserved: u64,
}

/// A CID as a file name: what IPFS CIDs are made of, nothing that climbs.
fn safe(cid: &str) -> bool {
    !cid.is_empty() && cid.len() <= 128 && cid.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl DiskCache {
    /// A cache of at most `max_bytes` in a folder of this process's own, made inside `dir` (else
    /// inside the system's temporary folder) and removed with the cache: processes sharing
    /// `dir` never touch each other's files.
    pub(super) fn new(dir: Option<PathBuf>, max_bytes: u64) -> std::io::Result<Self> {
        let builder = {
            let mut builder = tempfile::Builder::new();
            builder.prefix("decentraspace-gateway-cache-");
            builder
        };
        let temporary = match dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)?;
                builder.tempdir_in(dir)?
            }
            None => builder.tempdir()?,
        };
        Ok(Self {
            dir: temporary.path().to_owned(),
            _temporary: temporary,
            max_bytes,
            held: Mutex::default(),
        })
    }

    /// `length` bytes of `cid` from `offset` (the whole file without a range), when it is here.
    pub(super) async fn read(
        &self,
        cid: &str,
        range: Option<(u64, u64)>,
    ) -> Option<impl Stream<Item = std::io::Result<Bytes>> + use<>> {
        let size = {
            let mut held = self.held.lock().ok()?;
            let entry = held.files.get_mut(cid)?;
            entry.1 = Instant::now();
            entry.0
        };
        let mut file = match tokio::fs::File::open(self.dir.join(cid)).await {
            Ok(file) => file,
            Err(err) => {
                // Removed behind its back: forgotten, so the next request copies it again.
                tracing::warn!(target: "api::gateway", %cid, %err, "a cached file is gone");
                if let Ok(mut held) = self.held.lock()
                    && let Some((size, _)) = held.files.remove(cid)
                {
                    held.total = held.total.saturating_sub(size);
                }
                return None;
            }
        };
        let (offset, length) = range.unwrap_or((0, size));
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).await.ok()?;
        }
        let reader = file.take(length);
        Some(tokio_util::io::ReaderStream::with_capacity(reader, CHUNK))
    }

    /// Copies `cid` (`size` bytes) from `source` to disk in the background, unless it is here,
    /// being copied, larger than the whole cache, or not a plain CID.
    pub(super) fn fill<S, E>(self: &Arc<Self>, cid: &str, size: u64, source: S)
    where
        S: std::future::Future<Output = Result<E, String>> + Send + 'static,
        E: Stream<Item = reqwest::Result<Bytes>> + Send + Unpin + 'static,
    {
        if !safe(cid) || size > self.max_bytes {
            return;
        }
        {
            let Ok(mut held) = self.held.lock() else { return };
            if held.files.contains_key(cid)
                || held.filling.contains(cid)
                || held.filling.len() >= MAX_FILLING
            {
                return;
            }
            // Room for it before it is written: the oldest go; failing that, no copy.
            held.reserved += size;
            self.evict(&mut held);
            if held.total + held.reserved > self.max_bytes {
                held.reserved -= size;
                return;
            }
            held.filling.insert(cid.to_owned());
        }
        let (cache, cid) = (self.clone(), cid.to_owned());
        tokio::spawn(async move {
            let copied = cache.copy(&cid, size, source).await;
            let Ok(mut held) = cache.held.lock() else { return };
            held.filling.remove(&cid);
            held.reserved = held.reserved.saturating_sub(size);
            match copied {
                Ok(()) => {
                    held.files.insert(cid, (size, Instant::now()));
                    held.total += size;
                    cache.evict(&mut held);
                }
                Err(err) => {
                    tracing::warn!(target: "api::gateway", %cid, %err, "file not cached on disk");
                }
            }
        });
    }

    async fn copy<S, E>(&self, cid: &str, size: u64, source: S) -> Result<(), String>
    where
        S: std::future::Future<Output = Result<E, String>>,
        E: Stream<Item = reqwest::Result<Bytes>> + Unpin,
    {
        let partial = self.dir.join(format!("{cid}.partial"));
        let result = async {
            let mut stream = source.await?;
            let mut file = tokio::fs::File::create(&partial).await.map_err(|e| e.to_string())?;
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                written += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
            file.flush().await.map_err(|e| e.to_string())?;
            if written != size {
                return Err(format!("read {written} bytes of {size}"));
            }
            tokio::fs::rename(&partial, self.dir.join(cid)).await.map_err(|e| e.to_string())
        }
        .await;
        if result.is_err() {
            tokio::fs::remove_file(&partial).await.ok();
        }
        result
    }

    /// Removes the least recently used files until they and the copies in progress are within
    /// the bound (or none is left).
    fn evict(&self, held: &mut Held) {
        while held.total + held.reserved > self.max_bytes {
            let Some(oldest) =
                held.files.iter().min_by_key(|(_, (_, used))| *used).map(|(cid, _)| cid.clone())
            else {
                break;
            };
            if let Some((size, _)) = held.files.remove(&oldest) {
                held.total = held.total.saturating_sub(size);
                // A reader that opened it keeps reading: unlinking does not cut open files.
                std::fs::remove_file(self.dir.join(&oldest)).ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(cache: &DiskCache, cid: &str, range: Option<(u64, u64)>) -> Option<Vec<u8>> {
        let mut stream = Box::pin(cache.read(cid, range).await?);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.ok()?);
        }
        Some(out)
    }

    async fn filled(cache: &Arc<DiskCache>, cid: &str, bytes: &'static [u8]) {
        let source = async move {
            Ok::<_, String>(futures::stream::iter(vec![Ok(Bytes::from_static(bytes))]))
        };
        cache.fill(cid, bytes.len() as u64, source);
        for _ in 0..200 {
            if cache.held.lock().expect("lock").files.contains_key(cid) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("{cid} was never filled");
    }

    #[tokio::test]
    async fn files_are_read_back_whole_or_in_ranges_and_the_oldest_go_past_the_bound() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Arc::new(DiskCache::new(Some(dir.path().to_owned()), 10).expect("cache"));
        assert!(cache.read("bafyA", None).await.is_none(), "nothing before a fill");
        filled(&cache, "bafyA", b"abcdef").await;
        assert_eq!(read_all(&cache, "bafyA", None).await.as_deref(), Some(b"abcdef".as_slice()));
        assert_eq!(
            read_all(&cache, "bafyA", Some((2, 3))).await.as_deref(),
            Some(b"cde".as_slice())
        );
        filled(&cache, "bafyB", b"ghijk").await;
        assert!(read_all(&cache, "bafyA", None).await.is_none(), "the oldest went past 10 bytes");
        assert!(!cache.dir.join("bafyA").exists());
        // Gone from disk behind its back: forgotten, and copied again on the next fill.
        std::fs::remove_file(cache.dir.join("bafyB")).expect("remove");
        assert!(read_all(&cache, "bafyB", None).await.is_none());
        filled(&cache, "bafyB", b"ghijk").await;
        assert!(read_all(&cache, "bafyB", None).await.is_some());
        let folder = cache.dir.clone();
        drop(cache);
        assert!(!folder.exists(), "the folder goes with the cache");
    }

    #[tokio::test]
    async fn a_short_read_or_an_odd_name_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Arc::new(DiskCache::new(Some(dir.path().to_owned()), 1_000).expect("cache"));
        let short =
            async { Ok::<_, String>(futures::stream::iter(vec![Ok(Bytes::from_static(b"abc"))])) };
        cache.fill("bafyC", 10, short);
        // Wait for the copy to end, however loaded the machine is.
        while !cache.held.lock().expect("lock").filling.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(cache.read("bafyC", None).await.is_none());
        assert!(std::fs::read_dir(&cache.dir).expect("dir").next().is_none());
        assert_eq!(cache.held.lock().expect("lock").reserved, 0);
        let odd =
            async { Ok::<_, String>(futures::stream::iter(vec![Ok(Bytes::from_static(b"x"))])) };
        cache.fill("../x", 1, odd);
        assert!(cache.held.lock().expect("lock").filling.is_empty());
    }
}
