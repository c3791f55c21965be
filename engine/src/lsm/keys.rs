//! The order-preserving byte encoding of table keys inside the LSM.
//!
//! A row key is its primary-key columns, each a type tag followed by an
//! order-preserving body: integers as big-endian with the sign bit flipped,
//! strings and binaries with `0x00` escaped as `0x00 0xFF` and terminated by
//! `0x00 0x01`. Byte order of encoded rows is therefore the order of the
//! primary keys, and no row key of a table is a prefix of another.
//!
//! Each LSM key is a row key followed by a suffix:
//! - `0x00`: the row tombstone (hides every cell of the row written before it);
//! - `0x01 column 0x00 0x00`: the column tombstone (hides all its versions);
//! - `0x01 column 0x00 0x01 !ts`: one version of a cell, newest timestamp first.
//!
//! Keys starting with `0x00` are metadata (auto-increment counters), one per
//! partition-key value; the whole key is its own "row" for bloom filters.

use crate::lsm::error::{Error, Result};

pub const TAG_INT: u8 = 0x10;
pub const TAG_STR: u8 = 0x20;
pub const TAG_BIN: u8 = 0x30;
pub const META: u8 = 0x00;
pub const SUFFIX_ROW_TOMBSTONE: u8 = 0x00;
pub const SUFFIX_CELL: u8 = 0x01;
pub const COL_TOMBSTONE: u8 = 0x00;
pub const COL_VERSION: u8 = 0x01;
/// Longest column name in bytes.
pub const COLUMN_NAME_MAX: usize = 255;

/// One encoded primary-key column.
pub fn put_int(out: &mut Vec<u8>, v: i64) {
    out.push(TAG_INT);
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, tag: u8, v: &[u8]) {
    out.push(tag);
    for &b in v {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Decoded primary-key component: tag and raw body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Comp {
    Int(i64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
}

/// Decodes one component at `key[pos..]`; returns it and the next position.
pub fn decode_comp(key: &[u8], pos: usize) -> Option<(Comp, usize)> {
    let tag = *key.get(pos)?;
    match tag {
        TAG_INT => {
            let b: [u8; 8] = key.get(pos + 1..pos + 9)?.try_into().ok()?;
            Some((Comp::Int((u64::from_be_bytes(b) ^ (1 << 63)) as i64), pos + 9))
        }
        TAG_STR | TAG_BIN => {
            let mut out = Vec::new();
            let mut i = pos + 1;
            loop {
                let b = *key.get(i)?;
                if b != 0 {
                    out.push(b);
                    i += 1;
                    continue;
                }
                match *key.get(i + 1)? {
                    0xFF => out.push(0),
                    0x01 => break,
                    _ => return None,
                }
                i += 2;
            }
            let c = if tag == TAG_STR { Comp::Str(out) } else { Comp::Bin(out) };
            Some((c, i + 2))
        }
        _ => None,
    }
}

/// Length of the row part of an LSM key (the whole key for metadata).
pub fn row_len(key: &[u8]) -> usize {
    if key.first() == Some(&META) {
        return key.len();
    }
    let mut pos = 0;
    while let Some(&t) = key.get(pos) {
        if t != TAG_INT && t != TAG_STR && t != TAG_BIN {
            break;
        }
        match decode_comp(key, pos) {
            Some((_, next)) => pos = next,
            None => return key.len(),
        }
    }
    pos
}

pub fn check_column(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > COLUMN_NAME_MAX || name.as_bytes().contains(&0) {
        return Err(Error::InvalidArgument(format!("column name {name:?} must be 1..={COLUMN_NAME_MAX} bytes without nul")));
    }
    Ok(())
}

pub fn row_tombstone_key(row: &[u8]) -> Vec<u8> {
    let mut k = row.to_vec();
    k.push(SUFFIX_ROW_TOMBSTONE);
    k
}

pub fn column_prefix(row: &[u8], col: &str) -> Vec<u8> {
    let mut k = row.to_vec();
    k.push(SUFFIX_CELL);
    k.extend_from_slice(col.as_bytes());
    k.push(0);
    k
}

pub fn column_tombstone_key(row: &[u8], col: &str) -> Vec<u8> {
    let mut k = column_prefix(row, col);
    k.push(COL_TOMBSTONE);
    k
}

pub fn version_key(row: &[u8], col: &str, ts: u64) -> Vec<u8> {
    let mut k = column_prefix(row, col);
    k.push(COL_VERSION);
    k.extend_from_slice(&(!ts).to_be_bytes());
    k
}

/// What the suffix of a key (after its row part) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Suffix {
    RowTombstone,
    ColumnTombstone(String),
    Version(String, u64),
}

pub fn parse_suffix(file: &str, key: &[u8], row_len: usize) -> Result<Suffix> {
    let bad = || Error::corrupt(file, 0, format!("malformed cell key of {} bytes", key.len()));
    let s = &key[row_len..];
    match s.first() {
        Some(&SUFFIX_ROW_TOMBSTONE) if s.len() == 1 => Ok(Suffix::RowTombstone),
        Some(&SUFFIX_CELL) => {
            let nul = s.iter().skip(1).position(|&b| b == 0).ok_or_else(bad)? + 1;
            let col = std::str::from_utf8(&s[1..nul]).map_err(|_| bad())?.to_string();
            match &s[nul + 1..] {
                [COL_TOMBSTONE] => Ok(Suffix::ColumnTombstone(col)),
                [COL_VERSION, ts @ ..] if ts.len() == 8 => {
                    Ok(Suffix::Version(col, !u64::from_be_bytes(ts.try_into().expect("8 bytes"))))
                }
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_preserves_order_and_parses_back() {
        let enc = |a: i64, s: &[u8]| {
            let mut k = Vec::new();
            put_int(&mut k, a);
            put_bytes(&mut k, TAG_STR, s);
            k
        };
        let keys = [enc(-5, b"z"), enc(-1, b""), enc(0, b"a"), enc(0, b"a\0"), enc(0, b"ab"), enc(7, b"")];
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for k in &keys {
            assert_eq!(row_len(k), k.len());
            let vk = version_key(k, "col", 42);
            assert_eq!(row_len(&vk), k.len());
            assert_eq!(parse_suffix("t", &vk, k.len()).unwrap(), Suffix::Version("col".into(), 42));
        }
        let r = &keys[2];
        assert!(row_tombstone_key(r) < column_tombstone_key(r, "c"));
        assert!(column_tombstone_key(r, "c") < version_key(r, "c", u64::MAX));
        assert!(version_key(r, "c", 9) < version_key(r, "c", 8), "newest first");
        assert!(version_key(r, "c", 0) < column_tombstone_key(r, "d"));
        assert!(check_column("a\0b").is_err());
    }
}
