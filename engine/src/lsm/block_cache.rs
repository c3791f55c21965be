//! A bounded least-recently-used cache of decoded, checksum-verified data
//! blocks, keyed by (table number, block offset).
//!
//! Invariant: the charged bytes never exceed the capacity after an insert
//! returns; a block larger than the capacity is not cached at all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::lsm::Entry;

/// Default capacity in bytes.
pub const BLOCK_CACHE_BYTES_MAX: usize = 8 << 20;

type Key = (u64, u64);

#[derive(Debug, Default)]
struct Lru {
    map: BTreeMap<Key, (Arc<Vec<Entry>>, usize, u64)>,
    by_tick: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
pub struct BlockCache {
    cap: usize,
    lru: Mutex<Lru>,
}

impl BlockCache {
    pub fn new(cap: usize) -> BlockCache {
        BlockCache { cap, lru: Mutex::new(Lru::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().expect("block cache lock poisoned")
    }

    pub fn get(&self, key: Key) -> Option<Arc<Vec<Entry>>> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let Some((block, _, old)) = g.map.get_mut(&key) else {
            g.misses += 1;
            return None;
        };
        let old = std::mem::replace(old, tick);
        let block = block.clone();
        g.by_tick.remove(&old);
        g.by_tick.insert(tick, key);
        g.hits += 1;
        Some(block)
    }

    pub fn insert(&self, key: Key, block: Arc<Vec<Entry>>, charge: usize) {
        if charge > self.cap {
            return;
        }
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some((_, c, t)) = g.map.insert(key, (block, charge, tick)) {
            g.bytes -= c;
            g.by_tick.remove(&t);
        }
        g.by_tick.insert(tick, key);
        g.bytes += charge;
        while g.bytes > self.cap {
            let (_, k) = g.by_tick.pop_first().expect("bytes charged means entries exist");
            let (_, c, _) = g.map.remove(&k).expect("indexed entry exists");
            g.bytes -= c;
        }
        assert!(g.bytes <= self.cap);
    }

    /// Drops every block of a table (after compaction removed it).
    pub fn evict_table(&self, number: u64) {
        let mut g = self.lock();
        let keys: Vec<Key> = g.map.range((number, 0)..=(number, u64::MAX)).map(|(k, _)| *k).collect();
        for k in keys {
            let (_, c, t) = g.map.remove(&k).expect("listed");
            g.bytes -= c;
            g.by_tick.remove(&t);
        }
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn hits_misses(&self) -> (u64, u64) {
        let g = self.lock();
        (g.hits, g.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let c = BlockCache::new(100);
        let b = Arc::new(Vec::new());
        c.insert((1, 0), b.clone(), 40);
        c.insert((1, 1), b.clone(), 40);
        assert!(c.get((1, 0)).is_some());
        c.insert((2, 0), b.clone(), 40);
        assert!(c.get((1, 1)).is_none(), "least recently used is evicted");
        assert!(c.get((1, 0)).is_some() && c.get((2, 0)).is_some());
        assert_eq!(c.bytes(), 80);
        c.insert((3, 0), b, 101);
        assert!(c.get((3, 0)).is_none(), "too large to cache");
        c.evict_table(1);
        assert_eq!(c.bytes(), 40);
    }
}
