//! The table model end to end on the simulated disk: writes, reads,
//! versions, deletes, conditions, auto-increment, scans, flush, compaction
//! and recovery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::lsm::compaction::Shape;
use engine::lsm::table::{ColumnOp, Condition, PkType, PkValue, ReadOptions, RowChange, RowWrite, ScanRequest, Value};
use engine::lsm::{Dir, Error, Options, Table, TableSchema};
use sim::DiskConfig;

fn in_sim<T: Send + 'static>(seed: u64, f: impl FnOnce(sim::Disk) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static) -> T {
    engine::lsm::crashtest::with_disk(seed, DiskConfig::default(), f)
}

fn schema(ttl: Option<u64>) -> TableSchema {
    TableSchema { name: "t".into(), pk: vec![("p".into(), PkType::Int), ("id".into(), PkType::Int)], auto_increment: Some(1), max_versions: 3, ttl_ms: ttl }
}

fn small() -> Options {
    Options { memtable_bytes: 4 << 10, table_bytes: 4 << 10, shape: Shape { l0_trigger: 2, l1_bytes: 16 << 10, multiplier: 4 }, ..Options::default() }
}

fn pk(p: i64, id: i64) -> Vec<PkValue> {
    vec![PkValue::Int(p), PkValue::Int(id)]
}

fn put(p: i64, id: PkValue, cols: &[(&str, i64)]) -> RowWrite {
    RowWrite { pk: vec![PkValue::Int(p), id], change: RowChange::Put(cols.iter().map(|(c, v)| (c.to_string(), Value::Int(*v))).collect()), cond: Condition::Ignore }
}

#[test]
fn table_model_survives_flush_compaction_and_reopen() {
    in_sim(7, |disk| {
        Box::pin(async move {
            let now = Arc::new(AtomicU64::new(1000));
            let n2 = now.clone();
            let clock: engine::lsm::ClockFn = Arc::new(move || n2.load(Ordering::SeqCst));
            let (t, _) = Table::open(disk.clone(), schema(None), small(), clock.clone()).await.unwrap();
            // auto-increment: +1 per partition key
            for i in 1..=3 {
                let a = t.write(vec![put(1, PkValue::AutoInc, &[("a", i)])]).await.unwrap();
                assert_eq!(a.pks[0], pk(1, i));
            }
            let a = t.write(vec![put(2, PkValue::AutoInc, &[("a", 9)])]).await.unwrap();
            assert_eq!(a.pks[0], pk(2, 1), "another partition has its own counter");
            assert!(matches!(t.write(vec![put(1, PkValue::Int(9), &[("a", 1)])]).await, Err(Error::InvalidArgument(_))));
            // versions
            for v in 10..15 {
                now.fetch_add(1, Ordering::SeqCst);
                t.write(vec![RowWrite { pk: pk(1, 1), change: RowChange::Update(vec![ColumnOp::Put { column: "b".into(), value: Value::Int(v), ts: None }]), cond: Condition::Ignore }]).await.unwrap();
            }
            let r = t.get_row(&pk(1, 1), &ReadOptions { max_versions: 10, ..Default::default() }).await.unwrap().unwrap();
            assert_eq!(r.columns["b"].iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(), vec![Value::Int(14), Value::Int(13), Value::Int(12)], "max_versions 3");
            let as_of = r.columns["b"][1].0;
            let r = t.get_row(&pk(1, 1), &ReadOptions { as_of: Some(as_of), ..Default::default() }).await.unwrap().unwrap();
            assert_eq!(r.columns["b"], vec![(as_of, Value::Int(13))]);
            // delete one version, then a column
            let top = t.get_row(&pk(1, 1), &ReadOptions::default()).await.unwrap().unwrap().columns["b"][0].0;
            t.write(vec![RowWrite { pk: pk(1, 1), change: RowChange::Update(vec![ColumnOp::DeleteVersion("b".into(), top)]), cond: Condition::Ignore }]).await.unwrap();
            let r = t.get_row(&pk(1, 1), &ReadOptions { max_versions: 10, ..Default::default() }).await.unwrap().unwrap();
            assert_eq!(r.columns["b"].len(), 2, "the deleted version keeps its slot");
            t.write(vec![RowWrite { pk: pk(1, 1), change: RowChange::Update(vec![ColumnOp::DeleteColumn("b".into())]), cond: Condition::Ignore }]).await.unwrap();
            assert!(!t.get_row(&pk(1, 1), &ReadOptions::default()).await.unwrap().unwrap().columns.contains_key("b"));
            // conditions
            let cond = |c| RowWrite { pk: pk(1, 2), change: RowChange::Delete, cond: c };
            assert!(matches!(t.write(vec![cond(Condition::RowNotExists)]).await, Err(Error::ConditionFailed(_))));
            assert!(matches!(t.write(vec![cond(Condition::ColumnEquals("a".into(), Value::Int(7)))]).await, Err(Error::ConditionFailed(_))));
            t.write(vec![cond(Condition::ColumnEquals("a".into(), Value::Int(2)))]).await.unwrap();
            assert!(t.get_row(&pk(1, 2), &ReadOptions::default()).await.unwrap().is_none());
            assert!(matches!(t.write(vec![cond(Condition::RowExists)]).await, Err(Error::ConditionFailed(_))));
            // many rows: flushes and compactions
            for i in 0..400 {
                t.write(vec![put(3, PkValue::AutoInc, &[("x", i), ("y", i * 2)])]).await.unwrap();
            }
            t.db().settle().await.unwrap();
            let files = t.db().level_files();
            assert!(files[1..].iter().sum::<usize>() > 0, "compaction reached level 1: {files:?}");
            let page = t.scan(&ScanRequest { start: Some(pk(3, 0)), end: Some(pk(4, 0)), dir: Dir::Forward, limit: 100, resume: None, read: ReadOptions::default() }).await.unwrap();
            assert_eq!(page.rows.len(), 100);
            assert_eq!(page.rows[99].pk, pk(3, 100));
            let page2 = t.scan(&ScanRequest { start: Some(pk(3, 0)), end: Some(pk(4, 0)), dir: Dir::Forward, limit: 1000, resume: page.next.clone(), read: ReadOptions::default() }).await.unwrap();
            assert_eq!(page2.rows.len(), 300);
            assert_eq!(page2.rows[0].pk, pk(3, 101));
            let back = t.scan(&ScanRequest { start: None, end: Some(pk(3, 10)), dir: Dir::Backward, limit: 5, resume: None, read: ReadOptions::default() }).await.unwrap();
            assert_eq!(back.rows.iter().map(|r| r.pk.clone()).collect::<Vec<_>>(), vec![pk(3, 9), pk(3, 8), pk(3, 7), pk(3, 6), pk(3, 5)]);
            let back2 = t.scan(&ScanRequest { start: None, end: Some(pk(3, 10)), dir: Dir::Backward, limit: 10, resume: back.next, read: ReadOptions::default() }).await.unwrap();
            assert_eq!(back2.rows.first().map(|r| r.pk.clone()), Some(pk(3, 4)));
            assert_eq!(back2.rows.last().map(|r| r.pk.clone()), Some(pk(1, 1)));
            // reopen without a crash, then after a crash
            t.kill();
            let (t, rep) = Table::open(disk.clone(), schema(None), small(), clock.clone()).await.unwrap();
            assert!(rep.tables > 0);
            assert_eq!(t.write(vec![put(3, PkValue::AutoInc, &[("x", 0)])]).await.unwrap().pks[0], pk(3, 401));
            t.kill();
            disk.crash();
            let (t, _) = Table::open(disk.clone(), schema(None), small(), clock).await.unwrap();
            assert_eq!(t.write(vec![put(3, PkValue::AutoInc, &[("x", 0)])]).await.unwrap().pks[0], pk(3, 402));
            let r = t.get_row(&pk(3, 200), &ReadOptions::default()).await.unwrap().unwrap();
            assert_eq!(r.columns["y"][0].1, Value::Int(398));
            t.kill();
        })
    });
}

#[test]
fn ttl_hides_and_compaction_drops_expired_cells() {
    in_sim(8, |disk| {
        Box::pin(async move {
            let now = Arc::new(AtomicU64::new(1000));
            let n2 = now.clone();
            let clock: engine::lsm::ClockFn = Arc::new(move || n2.load(Ordering::SeqCst));
            let (t, _) = Table::open(disk, schema(Some(100)), small(), clock).await.unwrap();
            for i in 0..300 {
                t.write(vec![put(1, PkValue::AutoInc, &[("v", i)])]).await.unwrap();
            }
            assert!(t.get_row(&pk(1, 1), &ReadOptions::default()).await.unwrap().is_some());
            now.fetch_add(100, Ordering::SeqCst);
            assert!(t.get_row(&pk(1, 1), &ReadOptions::default()).await.unwrap().is_none(), "expired");
            t.write(vec![put(1, PkValue::AutoInc, &[("v", 0)])]).await.unwrap();
            t.db().settle().await.unwrap();
            let page = t.scan(&ScanRequest { start: None, end: None, dir: Dir::Forward, limit: 1000, resume: None, read: ReadOptions::default() }).await.unwrap();
            assert_eq!(page.rows.len(), 1);
            t.kill();
        })
    });
}

#[test]
fn deleted_rows_never_come_back_as_tombstones_move_down_the_levels() {
    in_sim(9, |disk| {
        Box::pin(async move {
            let clock: engine::lsm::ClockFn = Arc::new(|| 1000);
            let deep = Options { memtable_bytes: 2 << 10, table_bytes: 2 << 10, shape: Shape { l0_trigger: 2, l1_bytes: 4 << 10, multiplier: 2 }, ..Options::default() };
            let (t, _) = Table::open(disk, schema(None), deep, clock).await.unwrap();
            // Old data of partition 0 sinks to the deep levels under newer partition-1 data.
            for i in 0..200 {
                t.write(vec![put(0, PkValue::AutoInc, &[("x", i)])]).await.unwrap();
            }
            for i in 0..1500 {
                t.write(vec![put(1, PkValue::AutoInc, &[("x", i)])]).await.unwrap();
            }
            t.db().settle().await.unwrap();
            let levels = t.db().level_files();
            assert!(levels[4..].iter().sum::<usize>() > 0, "data reached level 4: {levels:?}");
            for id in 1..=60 {
                t.write(vec![RowWrite { pk: pk(0, id), change: RowChange::Delete, cond: Condition::Ignore }]).await.unwrap();
                t.write(vec![RowWrite { pk: pk(0, 100 + id), change: RowChange::Update(vec![ColumnOp::DeleteColumn("x".into())]), cond: Condition::Ignore }]).await.unwrap();
            }
            for round in 0..6 {
                for i in 0..150 {
                    t.write(vec![put(2 + i % 3, PkValue::AutoInc, &[("x", i)])]).await.unwrap();
                }
                t.db().settle().await.unwrap();
                for lo in [1, 101] {
                    let page = t.scan(&ScanRequest { start: Some(pk(0, lo)), end: Some(pk(0, lo + 60)), dir: Dir::Forward, limit: 100, resume: None, read: ReadOptions::default() }).await.unwrap();
                    assert!(page.rows.is_empty(), "round {round}: deleted data came back: {:?} (levels {:?})", page.rows.first(), t.db().level_files());
                }
                assert!(t.get_row(&pk(0, 61), &ReadOptions::default()).await.unwrap().is_some());
            }
            t.kill();
        })
    });
}

#[test]
fn write_errors_stop_the_engine_without_acknowledging_and_reopen_recovers() {
    in_sim(10, |disk| {
        Box::pin(async move {
            let clock: engine::lsm::ClockFn = Arc::new(|| 1000);
            let (t, _) = Table::open(disk.clone(), schema(None), small(), clock.clone()).await.unwrap();
            // Concurrent writers share syncs (group commit).
            let syncs = disk.stats().syncs;
            let mut tasks = Vec::new();
            for i in 0..32 {
                let t = t.clone();
                tasks.push(madsim::task::spawn_local(async move { t.write(vec![put(1, PkValue::AutoInc, &[("a", i)])]).await.unwrap() }));
            }
            for h in tasks {
                h.await.unwrap();
            }
            let used = disk.stats().syncs - syncs;
            assert!(used < 16, "32 writes took {used} syncs");
            disk.set_faults(sim::DiskFaults { write_error_rate: 1.0, ..Default::default() });
            assert!(matches!(t.write(vec![put(1, PkValue::AutoInc, &[("a", 99)])]).await, Err(Error::Stopped(_))));
            assert!(t.db().stopped().is_some(), "fail-stop after a write error");
            disk.set_faults(sim::DiskFaults::default());
            assert!(matches!(t.write(vec![put(1, PkValue::AutoInc, &[("a", 99)])]).await, Err(Error::Stopped(_))), "no write is accepted once stopped");
            assert!(t.get_row(&pk(1, 32), &ReadOptions::default()).await.unwrap().is_some(), "reads still work");
            assert!(t.get_row(&pk(1, 33), &ReadOptions::default()).await.unwrap().is_none(), "the failed write is not visible");
            t.kill();
            disk.crash();
            let (t, _) = Table::open(disk, schema(None), small(), clock).await.unwrap();
            assert_eq!(t.write(vec![put(1, PkValue::AutoInc, &[("a", 1)])]).await.unwrap().pks[0], pk(1, 33), "the failed value is not durable, so it is assigned again");
            t.kill();
        })
    });
}

/// Recovery reports what it replayed: the log files, their bytes and the
/// batches in them (what a partition's reload notes and the benchmark's
/// recovery figures are made of).
#[test]
fn recovery_reports_the_log_it_replayed() {
    in_sim(11, |disk| {
        Box::pin(async move {
            let clock: engine::lsm::ClockFn = Arc::new(|| 1000);
            let big = Options { memtable_bytes: 1 << 20, ..small() };
            let (t, rep) = Table::open(disk.clone(), schema(None), big.clone(), clock.clone()).await.unwrap();
            assert_eq!((rep.wal_files, rep.wal_batches, rep.wal_bytes), (0, 0, 0), "a new table has no log yet");
            for i in 1..=5 {
                t.write(vec![put(1, PkValue::AutoInc, &[("a", i)])]).await.unwrap();
            }
            t.kill();
            let (t, rep) = Table::open(disk.clone(), schema(None), big, clock).await.unwrap();
            assert!(rep.wal_files >= 1, "{rep:?}");
            assert!(rep.wal_batches >= 5, "every write is a batch in the log: {rep:?}");
            assert!(rep.wal_bytes > 5 * 8, "{rep:?}");
            assert_eq!(t.get_row(&pk(1, 5), &ReadOptions::default()).await.unwrap().unwrap().columns["a"][0].1, Value::Int(5));
            t.kill();
        })
    });
}
