//! A read-through cache of hot indexed reads (balances, public account views), invalidated by the
//! indexer's NOTIFY: the indexed tables only change when the indexer commits a batch, and every
//! batch is announced. A reader records the generation before it queries and keeps its result
//! only if no batch was announced meanwhile, so a value read before a commit is never cached after
//! it. While the notice listener is down nothing is cached.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

/// The most entries kept per map before it starts over.
const MAX_ENTRIES: usize = 100_000;

/// A generation-checked map.
#[derive(Debug)]
pub struct ReadCache<K, V> {
    generation: AtomicU64,
    live: AtomicBool,
    entries: Mutex<HashMap<K, V>>,
}

impl<K: Eq + Hash, V: Clone> Default for ReadCache<K, V> {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            entries: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    /// The cached value, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.entries.lock().ok()?.get(key).cloned()
    }

    /// The generation to pass to [`put`](Self::put) after reading the database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `value`, read after [`generation`](Self::generation) returned `generation`, unless
    /// the indexed data changed since.
    pub fn put(&self, key: K, value: V, generation: u64) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        // Checked under the lock that `invalidate` clears under: no stale value slips in.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, value);
    }

    /// The indexed data changed: forget everything.
    pub fn invalidate(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }

    /// Whether invalidations are being received; off, the cache neither serves nor keeps.
    pub fn set_live(&self, live: bool) {
        self.invalidate();
        self.live.store(live, Ordering::Release);
    }
}

/// What the notice listener needs of a cache, whatever it holds.
pub trait Invalidate: Send + Sync + std::fmt::Debug {
    /// The indexed data changed: forget everything.
    fn invalidate(&self);
    /// Whether invalidations are being received; off, the cache neither serves nor keeps.
    fn set_live(&self, live: bool);
}

impl<K, V> Invalidate for ReadCache<K, V>
where
    K: Eq + Hash + Send + std::fmt::Debug,
    V: Clone + Send + std::fmt::Debug,
{
    fn invalidate(&self) {
        ReadCache::invalidate(self);
    }

    fn set_live(&self, live: bool) {
        ReadCache::set_live(self, live);
    }
}

/// Every read cache of the API, invalidated together when the indexer commits. Features own their
/// caches; the notice listener only knows them through this.
#[derive(Debug, Clone, Default)]
pub struct Caches(std::sync::Arc<Vec<std::sync::Arc<dyn Invalidate>>>);

impl Caches {
    /// The registry of `caches`.
    pub fn new(caches: Vec<std::sync::Arc<dyn Invalidate>>) -> Self {
        Self(std::sync::Arc::new(caches))
    }

    /// Forgets every cached read.
    pub fn invalidate(&self) {
        self.0.iter().for_each(|cache| cache.invalidate());
    }

    /// Turns caching on or off (off while indexer notices are not received).
    pub fn set_live(&self, live: bool) {
        self.0.iter().for_each(|cache| cache.set_live(live));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_values_read_in_the_current_generation() {
        let cache = ReadCache::<u8, u32>::default();
        let g = cache.generation();
        cache.put(1, 10, g);
        assert_eq!(cache.get(&1), None, "not live yet");
        cache.set_live(true);
        let g = cache.generation();
        cache.put(1, 10, g);
        assert_eq!(cache.get(&1), Some(10));
        // A read that started before a change is not kept after it.
        let before = cache.generation();
        cache.invalidate();
        assert_eq!(cache.get(&1), None);
        cache.put(1, 11, before);
        assert_eq!(cache.get(&1), None);
        cache.set_live(false);
        cache.put(2, 20, cache.generation());
        assert_eq!(cache.get(&2), None);
    }
}
