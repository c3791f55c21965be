//! Corruption injected into any WAL record, SSTable block or manifest
//! record is reported as a typed error, never returned as data.

use std::sync::Arc;

use engine::fs::Files;
use engine::lsm::compaction::Shape;
use engine::lsm::crashtest::with_disk;
use engine::lsm::table::{PkType, PkValue, ReadOptions, RowChange, RowWrite, ScanRequest, Value, Condition};
use engine::lsm::{Dir, Error, Options, Table, TableSchema};
use sim::{Disk, DiskConfig};

fn schema() -> TableSchema {
    TableSchema { name: "t".into(), pk: vec![("p".into(), PkType::Int), ("id".into(), PkType::Int)], auto_increment: Some(1), max_versions: 2, ttl_ms: None }
}

fn opts(memtable_bytes: usize) -> Options {
    Options { memtable_bytes, table_bytes: 8 << 10, shape: Shape { l0_trigger: 3, l1_bytes: 1 << 20, multiplier: 10 }, ..Options::default() }
}

fn clock() -> engine::lsm::ClockFn {
    Arc::new(|| 5_000)
}

async fn fill(disk: &Disk, memtable_bytes: usize, rows: i64, settle: bool) {
    let (t, _) = Table::open(disk.clone(), schema(), opts(memtable_bytes), clock()).await.unwrap();
    for i in 0..rows {
        let w = RowWrite { pk: vec![PkValue::Int(i % 3), PkValue::AutoInc], change: RowChange::Put(vec![("v".into(), Value::Int(i)), ("s".into(), Value::Str(format!("row {i}")))]), cond: Condition::Ignore };
        t.write(vec![w]).await.unwrap();
    }
    if settle {
        t.db().settle().await.unwrap();
    }
    t.kill();
}

/// Opens and reads everything; `Err` if any step reported an error.
async fn read_all(disk: &Disk, memtable_bytes: usize) -> Result<Vec<engine::lsm::table::Row>, Error> {
    let (t, _) = Table::open(disk.clone(), schema(), opts(memtable_bytes), clock()).await?;
    let res = async {
        let page = t.scan(&ScanRequest { start: None, end: None, dir: Dir::Forward, limit: 1000, resume: None, read: ReadOptions::default() }).await?;
        for r in &page.rows {
            t.get_row(&r.pk, &ReadOptions::default()).await?;
        }
        Ok(page.rows)
    }
    .await;
    t.kill();
    res
}

async fn flip(disk: &Disk, name: &str, bit: u64) {
    let b = disk.read_at(name, bit / 8, 1).await.unwrap();
    disk.write_at(name, bit / 8, &[b[0] ^ (1 << (bit % 8))]).await.unwrap();
    Files::sync(disk, name).await.unwrap();
}

/// Flips bits spread over every file with `prefix`, checking each flip is
/// reported; returns how many flips were made.
async fn flips_are_reported(disk: &Disk, prefix: &str, memtable_bytes: usize, step: u64, baseline: &[engine::lsm::table::Row]) -> u64 {
    let mut n = 0;
    let files = disk.list(prefix).len();
    for i in 0..files {
        let mut bit = 3;
        loop {
            // Reopening may rename files (a new manifest each open): look again.
            let name = disk.list(prefix)[i].clone();
            if bit >= disk.len(&name).unwrap() * 8 {
                break;
            }
            flip(disk, &name, bit).await;
            match read_all(disk, memtable_bytes).await {
                Err(e) => assert!(e.is_corruption(), "{name} bit {bit}: {e}"),
                Ok(rows) => panic!("{name} bit {bit} flipped but reads returned {} rows", rows.len()),
            }
            flip(disk, &name, bit).await;
            assert_eq!(read_all(disk, memtable_bytes).await.unwrap(), baseline, "{name} restored");
            n += 1;
            bit += step;
        }
    }
    n
}

#[test]
fn a_flipped_bit_in_any_wal_record_is_corruption() {
    with_disk(11, DiskConfig::default(), |disk| async move {
        fill(&disk, 1 << 20, 40, false).await;
        let baseline = read_all(&disk, 1 << 20).await.unwrap();
        assert_eq!(baseline.len(), 40);
        let n = flips_are_reported(&disk, "wal-", 1 << 20, 61, &baseline).await;
        assert!(n > 50, "{n} flips");
    });
}

#[test]
fn a_flipped_bit_in_any_sstable_block_is_corruption() {
    with_disk(12, DiskConfig::default(), |disk| async move {
        fill(&disk, 4 << 10, 300, true).await;
        assert!(disk.list("wal-").iter().all(|w| disk.len(w).unwrap() == 0), "all data is in tables");
        let baseline = read_all(&disk, 4 << 10).await.unwrap();
        assert_eq!(baseline.len(), 300);
        let n = flips_are_reported(&disk, "sst-", 4 << 10, 797, &baseline).await;
        assert!(n > 100, "{n} flips");
    });
}

#[test]
fn a_flipped_bit_in_the_manifest_is_corruption() {
    with_disk(13, DiskConfig::default(), |disk| async move {
        fill(&disk, 4 << 10, 100, true).await;
        let baseline = read_all(&disk, 4 << 10).await.unwrap();
        let n = flips_are_reported(&disk, "MANIFEST-", 4 << 10, 37, &baseline).await;
        assert!(n > 20, "{n} flips");
    });
}
