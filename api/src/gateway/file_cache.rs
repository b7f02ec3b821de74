//! Small site files kept in memory by CID. Content addressed by its bytes never changes, so an
//! entry is never stale: the cache only bounds its size. When it is full it starts over, which
//! keeps it simple and its memory bounded; a hot page is back after one read.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;

/// Files larger than this stream from the node instead.
pub(super) const MAX_FILE: usize = 1024 * 1024;
/// The bytes kept at most.
const MAX_TOTAL: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub(super) struct FileCache {
    entries: Mutex<HashMap<String, Bytes>>,
    total: AtomicUsize,
}

impl FileCache {
    pub(super) fn get(&self, cid: &str) -> Option<Bytes> {
        self.entries.lock().expect("file cache lock").get(cid).cloned()
    }

    pub(super) fn insert(&self, cid: &str, bytes: Bytes) {
        if bytes.len() > MAX_FILE {
            return;
        }
        let mut entries = self.entries.lock().expect("file cache lock");
        if self.total.load(Ordering::Relaxed) + bytes.len() > MAX_TOTAL {
            entries.clear();
            self.total.store(0, Ordering::Relaxed);
        }
        if entries.insert(cid.to_owned(), bytes.clone()).is_none() {
            self.total.fetch_add(bytes.len(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_kept_by_cid_within_the_bound() {
        let cache = FileCache::default();
        cache.insert("a", Bytes::from_static(b"hello"));
        assert_eq!(cache.get("a").as_deref(), Some(b"hello".as_slice()));
        cache.insert("big", Bytes::from(vec![0u8; MAX_FILE + 1]));
        assert!(cache.get("big").is_none(), "large files stream instead");
        for i in 0..(MAX_TOTAL / MAX_FILE) + 1 {
            cache.insert(&i.to_string(), Bytes::from(vec![0u8; MAX_FILE]));
        }
        assert!(cache.total.load(Ordering::Relaxed) <= MAX_TOTAL);
        assert!(cache.get("a").is_none(), "a full cache started over");
    }
}
