//! Builds an SSTable image from entries in ascending key order.
//!
//! Layout: data blocks (entries, then a crc32 of the block), the index block
//! and the bloom block (each with a crc32), then a fixed footer with their
//! offsets, the entry count, a magic number and the footer's crc32.

use crate::lsm::format::{crc, Enc};
use crate::lsm::keys::row_len;
use crate::lsm::sstable::bloom::Bloom;
use crate::lsm::sstable::index::{BlockHandle, Index};
use crate::lsm::sstable::{FOOTER_BYTES, TABLE_MAGIC};
use crate::lsm::Entry;

/// A data block is closed once it holds this many bytes.
pub const BLOCK_BYTES: usize = 4096;

pub struct Builder {
    out: Vec<u8>,
    block: Enc,
    index: Index,
    rows: Vec<Vec<u8>>,
    last_key: Option<Vec<u8>>,
    pub entries: u64,
    pub smallest: Option<Vec<u8>>,
    pub min_seq: u64,
    pub max_seq: u64,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder { out: Vec::new(), block: Enc::default(), index: Index::default(), rows: Vec::new(), last_key: None, entries: 0, smallest: None, min_seq: u64::MAX, max_seq: 0 }
    }

    pub fn add(&mut self, e: &Entry) {
        if let Some(l) = &self.last_key {
            assert!(l < &e.key, "sstable keys must be strictly ascending");
        }
        let row = &e.key[..row_len(&e.key)];
        if self.rows.last().is_none_or(|r| r.as_slice() != row) {
            self.rows.push(row.to_vec());
        }
        self.block.bytes(&e.key).u64(e.seq);
        match &e.value {
            Some(v) => self.block.u8(1).bytes(v),
            None => self.block.u8(0),
        };
        if self.smallest.is_none() {
            self.smallest = Some(e.key.clone());
        }
        self.last_key = Some(e.key.clone());
        self.entries += 1;
        self.min_seq = self.min_seq.min(e.seq);
        self.max_seq = self.max_seq.max(e.seq);
        if self.block.0.len() >= BLOCK_BYTES {
            self.close_block();
        }
    }

    /// Bytes so far (a flush or compaction cuts tables near a target size).
    pub fn size(&self) -> usize {
        self.out.len() + self.block.0.len()
    }

    pub fn largest(&self) -> Option<&[u8]> {
        self.last_key.as_deref()
    }

    fn close_block(&mut self) {
        if self.block.0.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.block.0);
        let offset = self.out.len() as u64;
        self.out.extend_from_slice(&data);
        self.out.extend_from_slice(&crc(&data).to_le_bytes());
        let last_key = self.last_key.clone().expect("a block has a last key");
        self.index.blocks.push(BlockHandle { last_key, offset, len: data.len() as u32 });
    }

    /// The finished table image.
    pub fn finish(mut self) -> Vec<u8> {
        assert!(self.entries > 0, "an sstable holds at least one entry");
        self.close_block();
        let mut e = Enc::default();
        self.index.encode(&mut e);
        let (index_off, index_len) = (self.out.len() as u64, e.0.len() as u32);
        self.out.extend_from_slice(&e.0);
        self.out.extend_from_slice(&crc(&e.0).to_le_bytes());
        let mut b = Enc::default();
        Bloom::build(&self.rows).encode(&mut b);
        let (bloom_off, bloom_len) = (self.out.len() as u64, b.0.len() as u32);
        self.out.extend_from_slice(&b.0);
        self.out.extend_from_slice(&crc(&b.0).to_le_bytes());
        let mut f = Enc::default();
        f.u64(index_off).u32(index_len).u64(bloom_off).u32(bloom_len).u64(self.entries).u64(TABLE_MAGIC);
        let fcrc = crc(&f.0);
        f.u32(fcrc);
        assert_eq!(f.0.len(), FOOTER_BYTES);
        self.out.extend_from_slice(&f.0);
        self.out
    }
}
