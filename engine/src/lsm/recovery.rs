//! Opening an engine from its files: manifest, then tables, then WAL replay.
//!
//! 1. The newest manifest with an intact snapshot gives the version (a torn
//!    tail of it is point-in-time truncated; other damage is corruption).
//! 2. Every live table is opened: footer, index and bloom filter verified.
//! 3. WAL files at or after the version's log number are replayed in order
//!    into a memtable; a torn last frame is dropped; sequence numbers must
//!    continue without a gap. Replayed WALs are synced so that nothing a
//!    reader may now see can be lost by a later crash.
//! 4. Orphans (tables no version references, flushed WALs, older
//!    manifests) are removed, and a fresh manifest is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::fs::Files;
use crate::lsm::db::{ClockFn, Db, GcPolicy, Options};
use crate::lsm::error::{Error, Result};
use crate::lsm::manifest::{self, ManifestLog};
use crate::lsm::memtable::Memtable;
use crate::lsm::sstable::TableReader;
use crate::lsm::wal;
use crate::lsm::Entry;

/// What recovery found, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    pub tables: usize,
    pub wal_files: usize,
    pub wal_batches: u64,
    pub wal_bytes: u64,
    pub torn_tails: usize,
    pub last_seq: u64,
}

fn file_number(name: &str) -> Option<u64> {
    name.rsplit('-').next()?.parse().ok()
}

pub async fn open<F: Files>(fs: F, opts: Options, gc: GcPolicy, clock: ClockFn) -> Result<(Db<F>, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    let manifests: Vec<u64> = fs.list("MANIFEST-").iter().filter_map(|n| file_number(n)).collect();
    let mut version = None;
    for &m in manifests.iter().rev() {
        if let Some(v) = manifest::replay(&fs, m).await? {
            version = Some(v);
            break;
        }
    }
    let mut version = version.unwrap_or_default();
    let mut tables = BTreeMap::new();
    for (_, f) in version.all_files() {
        let t = TableReader::open(&fs, f.number).await?;
        if t.entries != f.entries {
            return Err(Error::corrupt(&t.name, 0, "entry count differs from the manifest"));
        }
        tables.insert(f.number, Arc::new(t));
    }
    report.tables = tables.len();
    let mut wals: Vec<u64> = fs.list("wal-").iter().filter_map(|n| wal::wal_number(n)).collect();
    wals.sort_unstable();
    let mem = Arc::new(Memtable::new());
    let mut last_seq = version.last_seq;
    let mut first_wal = None;
    for &w in wals.iter().filter(|&&w| w >= version.log_number) {
        let name = wal::wal_name(w);
        let (batches, torn) = wal::read_wal(&fs, w).await?;
        report.wal_files += 1;
        report.wal_bytes += fs.len(&name)?;
        report.torn_tails += usize::from(torn);
        for b in batches {
            if b.first_seq != last_seq + 1 {
                return Err(Error::corrupt(&name, 0, format!("sequence gap: expected {} found {}", last_seq + 1, b.first_seq)));
            }
            for (i, (k, v)) in b.entries.iter().enumerate() {
                mem.insert(Entry { key: k.clone(), seq: b.first_seq + i as u64, value: v.clone() });
            }
            last_seq = b.last_seq();
            report.wal_batches += 1;
        }
        fs.sync(&name).await?;
        first_wal.get_or_insert(w);
    }
    report.last_seq = last_seq;
    let mut max_number = 0;
    for name in fs.list("") {
        max_number = max_number.max(file_number(&name).unwrap_or(0));
    }
    let next_file = version.next_file.max(max_number + 1);
    version.next_file = next_file + 1;
    for name in fs.list("sst-") {
        if file_number(&name).is_some_and(|n| !tables.contains_key(&n)) {
            fs.remove(&name).await?;
        }
    }
    for name in fs.list("wal-") {
        if wal::wal_number(&name).is_some_and(|n| n < version.log_number) {
            fs.remove(&name).await?;
        }
    }
    let mnum = manifests.last().map_or(1, |m| m + 1);
    let log = ManifestLog::create(&fs, mnum, &version).await?;
    let recovered = if mem.is_empty() { None } else { Some((mem, first_wal.expect("replayed a wal"))) };
    // `next_file` itself becomes the new memtable's WAL.
    Ok((Db::start(fs, opts, gc, clock, version, tables, recovered, last_seq, next_file, log), report))
}

/// Opens an engine with no history check beyond [`open`]: a convenience
/// for callers that do not need the report.
pub async fn open_db<F: Files>(fs: F, opts: Options, gc: GcPolicy, clock: ClockFn) -> Result<Db<F>> {
    Ok(open(fs, opts, gc, clock).await?.0)
}
