//! Compaction: which tables to merge ([`pick`], a pure function of the
//! current version) and what a merge keeps ([`gc_row`]).
//!
//! **Leveled**, not tiered. A partition serves point reads of rows and
//! range scans far more than it absorbs writes; leveled compaction bounds a
//! read to the level-0 tables plus one table per deeper level and keeps
//! space amplification near 1.1×, at the price of a higher write
//! amplification (measured by the benchmark). It also lets garbage go
//! where ~90% of the data lives: versions beyond `max_versions`, expired
//! cells and tombstones disappear as data reaches the bottom level.
//!
//! Invariants that make dropping safe:
//! - a table never splits a row: flush and compaction cut tables only at row
//!   boundaries, and overlap between tables is decided per row, so a row
//!   lives in at most one table per sorted level;
//! - for every row, entries in a higher level are newer than entries in a
//!   deeper one (level 0 is always compacted as a whole);
//! - a row or column tombstone is dropped only when the output is the
//!   bottom for its key range (no deeper table overlaps), so nothing it
//!   hides can exist below it.

use crate::lsm::keys::{self, Suffix};
use crate::lsm::manifest::{FileMeta, Version, LEVELS};
use crate::lsm::Entry;
use crate::lsm::error::Result;

/// Knobs of the leveled shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Level 0 is merged into level 1 once it holds this many tables.
    pub l0_trigger: usize,
    /// Target bytes of level 1; each deeper level is `multiplier` times larger.
    pub l1_bytes: u64,
    pub multiplier: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Nothing,
    /// Move one table a level down unchanged (nothing overlaps it).
    Move { level: usize, file: FileMeta },
    /// Merge `inputs` of `level` with the overlapping `overlaps` of `level + 1`.
    Merge { level: usize, inputs: Vec<FileMeta>, overlaps: Vec<FileMeta>, bottom: bool },
}

fn row(key: &[u8]) -> &[u8] {
    &key[..keys::row_len(key)]
}

/// The rows a set of tables spans, first and last (inclusive).
fn range_of(files: &[FileMeta]) -> (Vec<u8>, Vec<u8>) {
    let lo = files.iter().map(|f| row(&f.smallest).to_vec()).min().expect("non-empty");
    let hi = files.iter().map(|f| row(&f.largest).to_vec()).max().expect("non-empty");
    (lo, hi)
}

/// Tables sharing a row with `[lo, hi]`. Overlap is decided per row, not
/// per key: two tables holding different cells of one row overlap, so a
/// merge always takes every part of a row the level holds.
fn overlapping(files: &[FileMeta], lo: &[u8], hi: &[u8]) -> Vec<FileMeta> {
    files.iter().filter(|f| row(&f.largest) >= lo && row(&f.smallest) <= hi).cloned().collect()
}

pub fn level_target(shape: &Shape, level: usize) -> u64 {
    assert!(level >= 1);
    shape.l1_bytes.saturating_mul(shape.multiplier.saturating_pow(level as u32 - 1))
}

/// The next compaction for `v`, or [`Choice::Nothing`].
pub fn pick(v: &Version, shape: &Shape) -> Choice {
    let choose = |level: usize, inputs: Vec<FileMeta>| {
        let (lo, hi) = range_of(&inputs);
        let overlaps = overlapping(&v.levels[level + 1], &lo, &hi);
        let (all_lo, all_hi) = if overlaps.is_empty() { (lo.clone(), hi.clone()) } else {
            let mut both = inputs.clone();
            both.extend(overlaps.iter().cloned());
            range_of(&both)
        };
        let bottom = v.levels[level + 2..].iter().all(|l| overlapping(l, &all_lo, &all_hi).is_empty());
        if level > 0 && overlaps.is_empty() && inputs.len() == 1 {
            return Choice::Move { level, file: inputs[0].clone() };
        }
        Choice::Merge { level, inputs, overlaps, bottom }
    };
    if v.levels[0].len() >= shape.l0_trigger {
        return choose(0, v.levels[0].clone());
    }
    for level in 1..LEVELS - 1 {
        let size: u64 = v.levels[level].iter().map(|f| f.size).sum();
        if size > level_target(shape, level) {
            // The table that overlaps the fewest next-level bytes per byte
            // of its own goes first (RocksDB's kMinOverlappingRatio): it
            // rewrites the least; ties go to the oldest data.
            let next = &v.levels[level + 1];
            let f = v.levels[level]
                .iter()
                .min_by_key(|f| {
                    let over: u64 = overlapping(next, row(&f.smallest), row(&f.largest)).iter().map(|o| o.size).sum();
                    (over.saturating_mul(1024) / f.size.max(1), f.max_seq, f.number)
                })
                .expect("non-empty level");
            return choose(level, vec![f.clone()]);
        }
    }
    Choice::Nothing
}

/// What a merge must know to drop garbage.
#[derive(Clone, Copy, Debug)]
pub struct Gc {
    pub bottom: bool,
    pub now_ms: u64,
    pub ttl_ms: Option<u64>,
    pub max_versions: u32,
}

impl Gc {
    pub fn expired(&self, ts: u64) -> bool {
        self.ttl_ms.is_some_and(|ttl| ts.saturating_add(ttl) <= self.now_ms)
    }
}

/// Filters one row's entries (ascending key, newest per key) for the output
/// of a merge. Versions are kept while they are among the newest
/// `max_versions` unhidden, unexpired versions (tombstoned versions hold
/// their slot so an older version cannot reappear).
pub fn gc_row(file: &str, row: Vec<Entry>, gc: &Gc) -> Result<Vec<Entry>> {
    let mut out = Vec::with_capacity(row.len());
    let mut row_del = 0u64;
    let mut col: Option<(String, u64, u32)> = None; // name, hiding seq, slots used
    for e in row {
        let rl = keys::row_len(&e.key);
        if e.key.first() == Some(&keys::META) {
            out.push(e);
            continue;
        }
        match keys::parse_suffix(file, &e.key, rl)? {
            Suffix::RowTombstone => {
                row_del = e.seq;
                if !gc.bottom {
                    out.push(e);
                }
            }
            Suffix::ColumnTombstone(c) => {
                let hide = row_del.max(e.seq);
                let hidden = e.seq < row_del;
                col = Some((c, hide, 0));
                if !hidden && !gc.bottom {
                    out.push(e);
                }
            }
            Suffix::Version(c, ts) => {
                if col.as_ref().is_none_or(|(name, _, _)| *name != c) {
                    col = Some((c, row_del, 0));
                }
                let (_, hide, used) = col.as_mut().expect("set above");
                if e.seq < *hide || gc.expired(ts) || *used >= gc.max_versions {
                    continue;
                }
                *used += 1;
                out.push(e);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Vec<u8> {
        let mut r = Vec::new();
        keys::put_int(&mut r, 1);
        r
    }
    fn put(k: Vec<u8>, seq: u64) -> Entry {
        Entry { key: k, seq, value: Some(b"v".to_vec()) }
    }

    #[test]
    fn gc_keeps_newest_versions_and_drops_tombstones_only_at_the_bottom() {
        let r = row();
        let entries = vec![
            put(keys::row_tombstone_key(&r), 5),
            put(keys::column_tombstone_key(&r, "a"), 8),
            put(keys::version_key(&r, "a", 30), 9),
            put(keys::version_key(&r, "a", 20), 7),
            put(keys::version_key(&r, "b", 40), 12),
            Entry { key: keys::version_key(&r, "b", 35), seq: 13, value: None },
            put(keys::version_key(&r, "b", 33), 11),
            put(keys::version_key(&r, "b", 31), 10),
            put(keys::version_key(&r, "c", 10), 4),
        ];
        let mid = Gc { bottom: false, now_ms: 100, ttl_ms: None, max_versions: 3 };
        let kept = gc_row("t", entries.clone(), &mid).unwrap();
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![5, 8, 9, 12, 13, 11], "hidden and beyond-max versions dropped, tombstones kept");
        let bottom = Gc { bottom: true, ..mid };
        let seqs: Vec<u64> = gc_row("t", entries.clone(), &bottom).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![9, 12, 13, 11], "row and column tombstones go at the bottom; a version tombstone keeps its slot");
        let ttl = Gc { bottom: true, now_ms: 100, ttl_ms: Some(66), max_versions: 3 };
        let seqs: Vec<u64> = gc_row("t", entries, &ttl).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![12, 13], "cells older than the ttl are dropped");
    }

    #[test]
    fn pick_merges_level0_then_oversized_levels() {
        let k = |s: &[u8]| {
            let mut v = Vec::new();
            keys::put_bytes(&mut v, keys::TAG_STR, s);
            v
        };
        let m = |n: u64, a: &[u8], b: &[u8], size| FileMeta { number: n, size, entries: 1, smallest: k(a), largest: k(b), min_seq: n, max_seq: n };
        let shape = Shape { l0_trigger: 2, l1_bytes: 100, multiplier: 10 };
        let mut v = Version::default();
        assert_eq!(pick(&v, &shape), Choice::Nothing);
        v.levels[0] = vec![m(3, b"a", b"c", 10), m(2, b"b", b"d", 10)];
        v.levels[1] = vec![m(1, b"c", b"e", 10)];
        match pick(&v, &shape) {
            Choice::Merge { level: 0, inputs, overlaps, bottom: true } => {
                assert_eq!(inputs.len(), 2);
                assert_eq!(overlaps.len(), 1);
            }
            c => panic!("unexpected {c:?}"),
        }
        v.levels[0].clear();
        v.levels[1] = vec![m(1, b"c", b"e", 200)];
        assert!(matches!(pick(&v, &shape), Choice::Move { level: 1, .. }));
        v.levels[2] = vec![m(4, b"d", b"f", 10)];
        v.levels[3] = vec![m(5, b"a", b"b", 10)];
        assert!(matches!(pick(&v, &shape), Choice::Merge { level: 1, bottom: true, .. }), "level 3 does not overlap");
        v.levels[3] = vec![m(5, b"a", b"e", 10)];
        assert!(matches!(pick(&v, &shape), Choice::Merge { level: 1, bottom: false, .. }));
    }
}

#[cfg(test)]
mod row_overlap_tests {
    use super::*;

    #[test]
    fn tables_holding_different_cells_of_one_row_overlap() {
        let mut r = Vec::new();
        keys::put_int(&mut r, 5);
        let m = |n: u64, a: Vec<u8>, b: Vec<u8>| FileMeta { number: n, size: 1, entries: 1, smallest: a, largest: b, min_seq: n, max_seq: n };
        let shape = Shape { l0_trigger: 1, l1_bytes: 1 << 20, multiplier: 10 };
        let mut v = Version::default();
        // The row's tombstone and one column in level 0, an older column deeper.
        v.levels[0] = vec![m(3, keys::row_tombstone_key(&r), keys::version_key(&r, "a", 1))];
        v.levels[2] = vec![m(1, keys::version_key(&r, "b", 1), keys::version_key(&r, "b", 1))];
        match pick(&v, &shape) {
            Choice::Merge { bottom, .. } => assert!(!bottom, "the deeper table holds the same row"),
            c => panic!("unexpected {c:?}"),
        }
        v.levels[1] = vec![m(2, keys::version_key(&r, "c", 1), keys::version_key(&r, "c", 1))];
        match pick(&v, &shape) {
            Choice::Merge { overlaps, .. } => assert_eq!(overlaps.len(), 1, "level 1's part of the row joins the merge"),
            c => panic!("unexpected {c:?}"),
        }
    }
}
