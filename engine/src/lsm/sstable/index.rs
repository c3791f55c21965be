//! The block index of an SSTable: the last key, offset and length of each
//! data block, ascending. Lookup is a binary search for the first block
//! whose last key is at or past the sought key.

use crate::lsm::error::Result;
use crate::lsm::format::{Dec, Enc};

/// Most blocks one table may index.
pub const INDEX_BLOCKS_MAX: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHandle {
    pub last_key: Vec<u8>,
    pub offset: u64,
    pub len: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    pub blocks: Vec<BlockHandle>,
}

impl Index {
    /// First block that may hold a key `>= key`.
    pub fn seek(&self, key: &[u8]) -> usize {
        self.blocks.partition_point(|b| b.last_key.as_slice() < key)
    }

    pub fn encode(&self, e: &mut Enc) {
        e.u32(self.blocks.len() as u32);
        for b in &self.blocks {
            e.bytes(&b.last_key).u64(b.offset).u32(b.len);
        }
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Index> {
        let n = d.u32()? as usize;
        if n > INDEX_BLOCKS_MAX {
            return Err(d.err("index block count over its limit"));
        }
        let mut blocks = Vec::with_capacity(n);
        for _ in 0..n {
            let last_key = d.bytes()?;
            let offset = d.u64()?;
            let len = d.u32()?;
            if blocks.last().is_some_and(|p: &BlockHandle| p.last_key >= last_key) {
                return Err(d.err("index keys out of order"));
            }
            blocks.push(BlockHandle { last_key, offset, len });
        }
        Ok(Index { blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_finds_the_covering_block() {
        let h = |k: &[u8], o| BlockHandle { last_key: k.to_vec(), offset: o, len: 1 };
        let idx = Index { blocks: vec![h(b"c", 0), h(b"f", 10), h(b"k", 20)] };
        assert_eq!(idx.seek(b"a"), 0);
        assert_eq!(idx.seek(b"c"), 0);
        assert_eq!(idx.seek(b"d"), 1);
        assert_eq!(idx.seek(b"z"), 3);
        let mut e = Enc::default();
        idx.encode(&mut e);
        assert_eq!(Index::decode(&mut Dec::new("t", 0, &e.0)).unwrap(), idx);
    }
}
