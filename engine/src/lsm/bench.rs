//! The storage benchmark: point writes, point reads and 100-row scans per
//! wall second on the simulated disk, write amplification after a steady
//! write load, recovery time against WAL size, and memory per partition.
//!
//! Wall time is measured around separate `block_on` calls of one madsim
//! runtime (inside the simulation `Instant` is simulated time).

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use sim::topology::LinkParams;
use sim::{Disk, DiskConfig, Topology, World, ZoneId};

use crate::lsm::db::Options;
use crate::lsm::table::{Condition, PkType, PkValue, ReadOptions, RowChange, RowWrite, ScanRequest, Table, TableSchema, Value};
use crate::lsm::Dir;

/// Concurrent writers of the load phase (group commit batches them).
pub const BENCH_WRITERS: u64 = 64;
/// Partition-key values the keys are spread over.
const PARTITIONS: i64 = 16;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RecoveryPoint {
    pub wal_bytes: u64,
    pub wal_batches: u64,
    pub wall_ms: f64,
    pub model_ms: f64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchFigures {
    pub keys: u64,
    pub value_bytes: usize,
    pub writes_per_wall_sec: f64,
    pub point_reads_per_wall_sec: f64,
    pub scans_100_per_wall_sec: f64,
    /// Bytes written to WAL, flushes and compactions per user byte.
    pub write_amplification: f64,
    pub group_commit_mean_batches: f64,
    pub levels: Vec<usize>,
    pub recovery: Vec<RecoveryPoint>,
    /// Memtables + table indexes and filters + block cache after the load.
    pub memory_bytes_per_partition: usize,
    pub memtable_bytes: usize,
    pub index_and_filter_bytes: usize,
    pub block_cache_bytes: usize,
}

impl std::fmt::Display for BenchFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "lsm bench: {} keys, {}-byte values", self.keys, self.value_bytes)?;
        writeln!(f, "  point writes/s (wall)   {:>12.0}", self.writes_per_wall_sec)?;
        writeln!(f, "  point reads/s (wall)    {:>12.0}", self.point_reads_per_wall_sec)?;
        writeln!(f, "  100-row scans/s (wall)  {:>12.0}", self.scans_100_per_wall_sec)?;
        writeln!(f, "  write amplification     {:>12.2}", self.write_amplification)?;
        writeln!(f, "  batches per group commit{:>12.2}", self.group_commit_mean_batches)?;
        writeln!(f, "  files per level         {:?}", self.levels)?;
        writeln!(f, "  memory per partition    {:>12} bytes (memtables {}, index+filter {}, block cache {})", self.memory_bytes_per_partition, self.memtable_bytes, self.index_and_filter_bytes, self.block_cache_bytes)?;
        for r in &self.recovery {
            writeln!(f, "  recovery of {:>9} WAL bytes ({:>6} batches): {:>8.2} ms wall, {:>8.2} ms model", r.wal_bytes, r.wal_batches, r.wall_ms, r.model_ms)?;
        }
        Ok(())
    }
}

fn schema() -> TableSchema {
    TableSchema { name: "bench".into(), pk: vec![("p".into(), PkType::Int), ("id".into(), PkType::Int)], auto_increment: None, max_versions: 1, ttl_ms: None }
}

fn row(i: u64, value_bytes: usize) -> RowWrite {
    RowWrite { pk: vec![PkValue::Int(i as i64 % PARTITIONS), PkValue::Int(i as i64)], change: RowChange::Put(vec![("v".into(), Value::Bin(vec![(i % 251) as u8; value_bytes]))]), cond: Condition::Ignore }
}

fn clock() -> crate::lsm::ClockFn {
    Arc::new(|| sim::time::now().as_nanos() / 1_000_000)
}

/// Runs the benchmark with `keys` rows; creates its own runtime thread.
pub fn bench(keys: u64) -> BenchFigures {
    #[allow(clippy::disallowed_methods)] // the benchmark's runtime thread, outside the simulation
    let h = std::thread::spawn(move || run(keys));
    match h.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Wall seconds of `f`: real time, measured outside the simulation.
#[allow(clippy::disallowed_methods)] // wall-clock benchmark: Instant::now runs outside block_on
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t0 = std::time::Instant::now(); // deliberate: wall-clock benchmark, outside the simulation
    let v = f();
    (v, t0.elapsed().as_secs_f64())
}

fn run(keys: u64) -> BenchFigures {
    let value_bytes = 100;
    let rt = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default());
    let disks: Vec<Disk> = rt.block_on(async {
        let link = LinkParams { latency: Duration::from_micros(100), jitter: Duration::ZERO, loss: 0.0 };
        let mut topo = Topology::new(&["az1".into()], link, link);
        let a = topo.add_node(ZoneId(0), "table");
        let b = topo.add_node(ZoneId(0), "table");
        let world = World::new(1, topo, DiskConfig::default(), false);
        vec![world.disk(a), world.disk(b)]
    });
    let table = rt.block_on(async { Table::open(disks[0].clone(), schema(), Options::default(), clock()).await.expect("open").0 });
    let (_, write_secs) = timed(|| {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..BENCH_WRITERS {
                let t = table.clone();
                tasks.push(madsim::task::spawn_local(async move {
                    let mut i = w;
                    while i < keys {
                        t.write(vec![row(i, value_bytes)]).await.expect("bench write");
                        i += BENCH_WRITERS;
                    }
                }));
            }
            for t in tasks {
                t.await.expect("writer task");
            }
        })
    });
    rt.block_on(async { table.db().settle().await.expect("settle") });
    let stats = table.db().stats();
    let write_amplification = (stats.wal_bytes + stats.flush_bytes + stats.compaction_bytes) as f64 / stats.user_bytes.max(1) as f64;
    let reads = keys.min(100_000);
    let mut rng = sim::rng::stream(1, "bench");
    let picks: Vec<u64> = (0..reads).map(|_| rng.random_range(0..keys)).collect();
    let (_, read_secs) = timed(|| {
        rt.block_on(async {
            for &i in &picks {
                let pk = [PkValue::Int(i as i64 % PARTITIONS), PkValue::Int(i as i64)];
                let r = table.get_row(&pk, &ReadOptions::default()).await.expect("bench read");
                assert!(r.is_some(), "key {i} present");
            }
        })
    });
    let scans = (keys / 100).clamp(1, 5_000);
    let starts: Vec<u64> = (0..scans).map(|_| rng.random_range(0..keys)).collect();
    let (_, scan_secs) = timed(|| {
        rt.block_on(async {
            for &i in &starts {
                let req = ScanRequest { start: Some(vec![PkValue::Int(i as i64 % PARTITIONS), PkValue::Int(i as i64)]), end: None, dir: Dir::Forward, limit: 100, resume: None, read: ReadOptions::default() };
                table.scan(&req).await.expect("bench scan");
            }
        })
    });
    let memory_bytes_per_partition = table.db().mem_bytes();
    let (memtable_bytes, index_and_filter_bytes, block_cache_bytes) = table.db().mem_breakdown();
    let levels = table.db().level_files();
    table.kill();
    // Recovery against WAL size, on the second disk: writes that stay in
    // the memtable (no flush), then a crash and a timed open.
    let mut recovery = Vec::new();
    for (round, rows) in [500u64, 1_500, 3_500].into_iter().enumerate() {
        let disk = disks[1].clone();
        rt.block_on(async {
            for name in disk.list("") {
                disk.remove(&name).await.expect("clean");
            }
            disk.sync_dir().await.expect("sync_dir");
            let t = Table::open(disk.clone(), schema(), Options::default(), clock()).await.expect("open").0;
            for i in 0..rows {
                t.write(vec![row(i + round as u64 * 1_000_000, value_bytes)]).await.expect("write");
            }
            t.kill();
            disk.crash();
        });
        let ((rep, model_ms), secs) = timed(|| {
            rt.block_on(async {
                let t0 = sim::time::now();
                let (t, rep) = Table::open(disk.clone(), schema(), Options::default(), clock()).await.expect("recover");
                let model = sim::time::now().saturating_sub(t0).as_secs_f64() * 1e3;
                t.kill();
                (rep, model)
            })
        });
        recovery.push(RecoveryPoint { wal_bytes: rep.wal_bytes, wal_batches: rep.wal_batches, wall_ms: secs * 1e3, model_ms });
    }
    BenchFigures {
        keys,
        value_bytes,
        writes_per_wall_sec: keys as f64 / write_secs,
        point_reads_per_wall_sec: reads as f64 / read_secs,
        scans_100_per_wall_sec: scans as f64 / scan_secs,
        write_amplification,
        group_commit_mean_batches: stats.batches_committed as f64 / stats.group_commits.max(1) as f64,
        levels,
        recovery,
        memory_bytes_per_partition,
        memtable_bytes,
        index_and_filter_bytes,
        block_cache_bytes,
    }
}
