//! Merged reads: a cursor over every source of a snapshot (memtables,
//! level-0 tables, one lazily concatenated cursor per sorted level) that
//! yields the newest entry of each key at the snapshot's sequence, in
//! either direction within `[lo, hi)`.

use std::sync::Arc;

use crate::fs::Files;
use crate::lsm::block_cache::BlockCache;
use crate::lsm::error::Result;
use crate::lsm::memtable::Memtable;
use crate::lsm::sstable::iterator::TableCursor;
use crate::lsm::sstable::TableReader;
use crate::lsm::{Dir, Entry};

/// Keys a memtable cursor copies out per refill.
pub const MEM_CHUNK_KEYS: usize = 128;

pub struct MemCursor {
    mem: Arc<Memtable>,
    buf: std::collections::VecDeque<Entry>,
    last: Option<Vec<u8>>,
    done: bool,
}

/// Tables of one sorted level in key order (reversed when walking backward).
pub struct LevelCursor {
    tables: Vec<Arc<TableReader>>,
    next: usize,
    cur: Option<TableCursor>,
}

pub enum Source {
    Mem(MemCursor),
    Table(TableCursor),
    Level(LevelCursor),
}

pub struct Range {
    pub lo: Vec<u8>,
    pub hi: Option<Vec<u8>>,
    pub dir: Dir,
    pub read_seq: u64,
}

impl Source {
    pub fn mem(mem: Arc<Memtable>) -> Source {
        Source::Mem(MemCursor { mem, buf: Default::default(), last: None, done: false })
    }

    pub fn level(mut tables: Vec<Arc<TableReader>>, dir: Dir) -> Source {
        if dir == Dir::Backward {
            tables.reverse();
        }
        Source::Level(LevelCursor { tables, next: 0, cur: None })
    }

    async fn next<F: Files>(&mut self, r: &Range, fs: &F, cache: &BlockCache) -> Result<Option<Entry>> {
        match self {
            Source::Mem(m) => {
                if m.buf.is_empty() && !m.done {
                    let chunk = m.mem.chunk(&r.lo, r.hi.as_deref(), m.last.as_deref(), r.dir, r.read_seq, MEM_CHUNK_KEYS);
                    m.done = chunk.len() < MEM_CHUNK_KEYS;
                    m.last = chunk.last().map(|e| e.key.clone());
                    m.buf.extend(chunk);
                }
                Ok(m.buf.pop_front())
            }
            Source::Table(t) => t.next(fs, cache).await,
            Source::Level(l) => loop {
                if let Some(c) = &mut l.cur {
                    if let Some(e) = c.next(fs, cache).await? {
                        return Ok(Some(e));
                    }
                    l.cur = None;
                }
                let Some(t) = l.tables.get(l.next) else { return Ok(None) };
                l.cur = Some(TableCursor::new(t.clone(), &r.lo, r.hi.as_deref(), r.dir));
                l.next += 1;
            },
        }
    }
}

/// Merges sources; ties on a key go to the highest sequence number.
pub struct Merge {
    range: Range,
    sources: Vec<Source>,
    heads: Vec<Option<Entry>>,
    primed: bool,
}

impl Merge {
    pub fn new(range: Range, sources: Vec<Source>) -> Merge {
        let heads = sources.iter().map(|_| None).collect();
        Merge { range, sources, heads, primed: false }
    }

    pub async fn next<F: Files>(&mut self, fs: &F, cache: &BlockCache) -> Result<Option<Entry>> {
        if !self.primed {
            for i in 0..self.sources.len() {
                self.heads[i] = self.sources[i].next(&self.range, fs, cache).await?;
            }
            self.primed = true;
        }
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            let Some(h) = h else { continue };
            best = match best {
                None => Some(i),
                Some(b) => {
                    let bh = self.heads[b].as_ref().expect("best has a head");
                    let better = match self.range.dir {
                        Dir::Forward => h.key < bh.key,
                        Dir::Backward => h.key > bh.key,
                    };
                    if better || (h.key == bh.key && h.seq > bh.seq) { Some(i) } else { Some(b) }
                }
            };
        }
        let Some(b) = best else { return Ok(None) };
        let out = self.heads[b].take().expect("best has a head");
        for i in 0..self.sources.len() {
            if i == b || self.heads[i].as_ref().is_some_and(|h| h.key == out.key) {
                self.heads[i] = self.sources[i].next(&self.range, fs, cache).await?;
            }
        }
        Ok(Some(out))
    }
}
