//! Immutable sorted tables: [`builder`] writes them, [`TableReader`] opens
//! them (footer, index and bloom filter verified by checksum), and
//! [`iterator`] walks their blocks in either direction.
//!
//! Every byte returned from a table passed a crc32 check: a mismatch, a
//! short read or a malformed structure is [`Error::Corruption`].

pub mod bloom;
pub mod builder;
pub mod index;
pub mod iterator;

use std::sync::Arc;

use crate::fs::Files;
use crate::lsm::block_cache::BlockCache;
use crate::lsm::error::{Error, Result};
use crate::lsm::format::{crc, Dec};
use crate::lsm::Entry;
use bloom::Bloom;
use index::Index;

pub const FOOTER_BYTES: usize = 44;
pub const TABLE_MAGIC: u64 = 0x7AB1_E557_AB1E_5500;
/// Largest table file in bytes that a reader accepts.
pub const TABLE_BYTES_MAX: u64 = 1 << 30;
/// Most entries one data block may decode to.
pub const BLOCK_ENTRIES_MAX: usize = 1 << 16;

pub fn table_name(number: u64) -> String {
    format!("sst-{number:012}")
}

/// An open table: its index and bloom filter in memory.
#[derive(Debug)]
pub struct TableReader {
    pub number: u64,
    pub name: String,
    pub index: Index,
    pub bloom: Bloom,
    pub entries: u64,
    pub size: u64,
}

async fn read_exact<F: Files>(fs: &F, name: &str, off: u64, len: u64) -> Result<Vec<u8>> {
    let b = fs.read_at(name, off, len).await?;
    if b.len() as u64 != len {
        return Err(Error::corrupt(name, off, format!("short read: {} of {len} bytes", b.len())));
    }
    Ok(b)
}

/// Reads `len` bytes plus their crc32 trailer and verifies them.
async fn read_checked<F: Files>(fs: &F, name: &str, off: u64, len: u32, what: &str) -> Result<Vec<u8>> {
    let mut b = read_exact(fs, name, off, u64::from(len) + 4).await?;
    let want = u32::from_le_bytes(b[len as usize..].try_into().expect("4 bytes"));
    b.truncate(len as usize);
    if crc(&b) != want {
        return Err(Error::corrupt(name, off, format!("{what} checksum mismatch")));
    }
    Ok(b)
}

impl TableReader {
    pub async fn open<F: Files>(fs: &F, number: u64) -> Result<TableReader> {
        let name = table_name(number);
        let size = fs.len(&name)?;
        if size < FOOTER_BYTES as u64 || size > TABLE_BYTES_MAX {
            return Err(Error::corrupt(&name, 0, format!("table size {size} out of range")));
        }
        let foot_off = size - FOOTER_BYTES as u64;
        let f = read_exact(fs, &name, foot_off, FOOTER_BYTES as u64).await?;
        let want = u32::from_le_bytes(f[40..44].try_into().expect("4 bytes"));
        if crc(&f[..40]) != want {
            return Err(Error::corrupt(&name, foot_off, "footer checksum mismatch"));
        }
        let mut d = Dec::new(&name, foot_off, &f[..40]);
        let (index_off, index_len, bloom_off, bloom_len, entries, magic) = (d.u64()?, d.u32()?, d.u64()?, d.u32()?, d.u64()?, d.u64()?);
        if magic != TABLE_MAGIC || index_off + u64::from(index_len) + 4 > foot_off || bloom_off + u64::from(bloom_len) + 4 > foot_off {
            return Err(Error::corrupt(&name, foot_off, "footer fields out of range"));
        }
        let ib = read_checked(fs, &name, index_off, index_len, "index block").await?;
        let index = Index::decode(&mut Dec::new(&name, index_off, &ib))?;
        let bb = read_checked(fs, &name, bloom_off, bloom_len, "bloom block").await?;
        let bloom = Bloom::decode(&mut Dec::new(&name, bloom_off, &bb))?;
        if index.blocks.iter().any(|b| b.offset + u64::from(b.len) + 4 > index_off) {
            return Err(Error::corrupt(&name, index_off, "block handle out of range"));
        }
        Ok(TableReader { number, name, index, bloom, entries, size })
    }

    /// Data block `i`, decoded and verified, through the cache.
    pub async fn block<F: Files>(&self, fs: &F, cache: &BlockCache, i: usize) -> Result<Arc<Vec<Entry>>> {
        let h = &self.index.blocks[i];
        if let Some(b) = cache.get((self.number, h.offset)) {
            return Ok(b);
        }
        let raw = read_checked(fs, &self.name, h.offset, h.len, "data block").await?;
        let entries = decode_block(&self.name, h.offset, &raw)?;
        if entries.last().map(|e| &e.key) != Some(&h.last_key) {
            return Err(Error::corrupt(&self.name, h.offset, "block does not end at its indexed key"));
        }
        let block = Arc::new(entries);
        cache.insert((self.number, h.offset), block.clone(), raw.len());
        Ok(block)
    }

    /// Memory held by the open table (index and filter).
    pub fn mem_bytes(&self) -> usize {
        self.bloom.bytes() + self.index.blocks.iter().map(|b| b.last_key.len() + 36).sum::<usize>()
    }
}

pub fn decode_block(name: &str, off: u64, raw: &[u8]) -> Result<Vec<Entry>> {
    let mut d = Dec::new(name, off, raw);
    let mut out: Vec<Entry> = Vec::new();
    while !d.done() {
        if out.len() == BLOCK_ENTRIES_MAX {
            return Err(d.err("block entry count over its limit"));
        }
        let key = d.bytes()?;
        let seq = d.u64()?;
        let value = match d.u8()? {
            0 => None,
            1 => Some(d.bytes()?),
            _ => return Err(d.err("unknown entry kind")),
        };
        if out.last().is_some_and(|p| p.key >= key) {
            return Err(d.err("block keys out of order"));
        }
        out.push(Entry { key, seq, value });
    }
    Ok(out)
}

/// Writes a finished table image durably (the caller syncs the directory).
pub async fn write_table<F: Files>(fs: &F, number: u64, image: &[u8]) -> Result<()> {
    let name = table_name(number);
    fs.create(&name).await?;
    fs.append(&name, image).await?;
    fs.sync(&name).await?;
    Ok(())
}
