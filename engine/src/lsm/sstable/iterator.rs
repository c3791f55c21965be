//! A cursor over one table within a key range `[lo, hi)`, forward or
//! backward, loading one verified block at a time through the block cache.

use std::sync::Arc;

use crate::fs::Files;
use crate::lsm::block_cache::BlockCache;
use crate::lsm::error::Result;
use crate::lsm::sstable::TableReader;
use crate::lsm::{Dir, Entry};

pub struct TableCursor {
    table: Arc<TableReader>,
    lo: Vec<u8>,
    hi: Option<Vec<u8>>,
    dir: Dir,
    block: usize,
    buf: Option<Arc<Vec<Entry>>>,
    pos: usize,
    done: bool,
}

impl TableCursor {
    pub fn new(table: Arc<TableReader>, lo: &[u8], hi: Option<&[u8]>, dir: Dir) -> TableCursor {
        let n = table.index.blocks.len();
        let (block, done) = match dir {
            Dir::Forward => {
                let b = table.index.seek(lo);
                (b, b >= n)
            }
            Dir::Backward => (hi.map_or(n, |h| table.index.seek(h)).min(n.saturating_sub(1)), n == 0),
        };
        TableCursor { table, lo: lo.to_vec(), hi: hi.map(<[u8]>::to_vec), dir, block, buf: None, pos: 0, done }
    }

    fn in_range(&self, k: &[u8]) -> bool {
        k >= self.lo.as_slice() && self.hi.as_deref().is_none_or(|h| k < h)
    }

    pub async fn next<F: Files>(&mut self, fs: &F, cache: &BlockCache) -> Result<Option<Entry>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(buf) = self.buf.clone() else {
                let b = self.table.block(fs, cache, self.block).await?;
                self.pos = match self.dir {
                    Dir::Forward => b.partition_point(|e| e.key < self.lo),
                    Dir::Backward => match &self.hi {
                        Some(h) => b.partition_point(|e| e.key < *h),
                        None => b.len(),
                    },
                };
                self.buf = Some(b);
                continue;
            };
            let e = match self.dir {
                Dir::Forward if self.pos < buf.len() => {
                    self.pos += 1;
                    &buf[self.pos - 1]
                }
                Dir::Backward if self.pos > 0 => {
                    self.pos -= 1;
                    &buf[self.pos]
                }
                _ => {
                    self.buf = None;
                    match self.dir {
                        Dir::Forward if self.block + 1 < self.table.index.blocks.len() => self.block += 1,
                        Dir::Backward if self.block > 0 => self.block -= 1,
                        _ => self.done = true,
                    }
                    continue;
                }
            };
            if !self.in_range(&e.key) {
                self.done = true;
                return Ok(None);
            }
            return Ok(Some(e.clone()));
        }
    }
}
