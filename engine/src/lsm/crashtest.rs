//! Crash-consistency harness in the style of RocksDB's `db_crashtest`.
//!
//! Per seed: a table with random `max_versions` and TTL on a simulated disk,
//! driven by waves of concurrent random writes (puts, updates, column and
//! version deletes, row deletes, conditional writes, auto-increment
//! appends, atomic batches). A wave may end in a crash (tasks aborted mid
//! flight, unsynced sectors dropped or torn) or with injected faults (read
//! errors, write errors, bit flips on read and at rest). After every wave the
//! table is checked against an expected-state oracle by full forward and
//! backward scans with random page sizes and by point reads:
//! - every acknowledged write is present and nothing deleted comes back;
//! - a pending write (submitted, not acknowledged) is wholly present or
//!   wholly absent, and the present ones are a prefix in sequence order;
//! - auto-increment values are +1 consecutive per partition key;
//! - an injected fault surfaces as an error, never as wrong data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sim::topology::LinkParams;
use sim::{Disk, DiskConfig, DiskFaults, Topology, World, ZoneId};

use crate::lsm::compaction::Shape;
use crate::lsm::db::{ClockFn, Options};
use crate::lsm::error::Error;
use crate::lsm::table::{ColumnOp, Condition, PkType, PkValue, ReadOptions, Row, RowChange, RowWrite, ScanRequest, Table, TableSchema, Value};
use crate::lsm::Dir;

/// Knobs of one crash-test run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CrashConfig {
    pub waves: u32,
    pub ops_per_wave_max: u32,
    pub partitions: i64,
    /// Probability that a wave ends in a crash.
    pub crash_probability: f64,
    /// Probability that a wave runs with one kind of injected fault.
    pub fault_probability: f64,
    pub fault_rate: f64,
}

impl Default for CrashConfig {
    fn default() -> Self {
        CrashConfig { waves: 40, ops_per_wave_max: 8, partitions: 3, crash_probability: 0.3, fault_probability: 0.15, fault_rate: 0.05 }
    }
}

/// What one seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CrashSummary {
    pub seed: u64,
    pub waves: u32,
    pub writes_acked: u64,
    pub writes_pending_present: u64,
    pub writes_pending_absent: u64,
    pub writes_rejected: u64,
    pub auto_increment_values: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub rows_checked: u64,
    pub read_errors_detected: u64,
    pub corruption_detected: u64,
    pub torn_tails: u64,
    pub flushes: u64,
    pub compactions: u64,
    /// The run ended early because injected at-rest corruption was detected.
    pub ended_on_corruption: bool,
}

/// Totals over many seeds (`seed` is left as it is).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CrashTotals {
    pub seeds: u64,
    pub ended_on_corruption: u64,
    pub totals: CrashSummary,
}

impl CrashTotals {
    pub fn add(&mut self, s: &CrashSummary) {
        let t = &mut self.totals;
        self.seeds += 1;
        self.ended_on_corruption += u64::from(s.ended_on_corruption);
        t.waves += s.waves;
        t.writes_acked += s.writes_acked;
        t.writes_pending_present += s.writes_pending_present;
        t.writes_pending_absent += s.writes_pending_absent;
        t.writes_rejected += s.writes_rejected;
        t.auto_increment_values += s.auto_increment_values;
        t.crashes += s.crashes;
        t.restarts += s.restarts;
        t.rows_checked += s.rows_checked;
        t.read_errors_detected += s.read_errors_detected;
        t.corruption_detected += s.corruption_detected;
        t.torn_tails += s.torn_tails;
        t.flushes += s.flushes;
        t.compactions += s.compactions;
    }
}

/// A broken guarantee: the seed and what broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashFailure {
    pub seed: u64,
    pub wave: u32,
    pub what: String,
}

impl std::fmt::Display for CrashFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "crash test seed {} failed at wave {}: {}", self.seed, self.wave, self.what)
    }
}

impl std::error::Error for CrashFailure {}

/// Runs `f` with a one-node world's disk inside a fresh madsim runtime on
/// its own thread (the harness's only thread).
pub fn with_disk<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(seed: u64, disk: DiskConfig, f: impl FnOnce(Disk) -> Fut + Send + 'static) -> T {
    #[allow(clippy::disallowed_methods)] // the harness's runtime thread, outside the simulation
    let h = std::thread::spawn(move || {
        madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(async move {
            let link = LinkParams { latency: Duration::from_micros(100), jitter: Duration::ZERO, loss: 0.0 };
            let mut topo = Topology::new(&["az1".into()], link, link);
            let node = topo.add_node(ZoneId(0), "table");
            let world = World::new(seed, topo, disk, false);
            f(world.disk(node)).await
        })
    });
    match h.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Runs one seed; `Err` names the seed and the broken guarantee.
pub fn run_seed(seed: u64, cfg: &CrashConfig) -> Result<CrashSummary, CrashFailure> {
    let cfg = cfg.clone();
    // Small sectors make multi-sector (tearable) WAL frames common.
    let sector = [64, 512, 4096][(seed % 3) as usize];
    with_disk(seed, DiskConfig { sector, ..DiskConfig::default() }, move |disk| async move { Harness::new(seed, cfg, disk).run().await })
}

const COLUMNS: [&str; 4] = ["c0", "c1", "c2", "c3"];

type Cells = BTreeMap<String, BTreeMap<u64, Option<Value>>>;

/// The expected state: every cell version ever written and not deleted.
#[derive(Clone, Debug, Default)]
struct Model {
    rows: BTreeMap<(i64, i64), Cells>,
    counters: BTreeMap<i64, i64>,
}

fn key_of(pk: &[PkValue]) -> (i64, i64) {
    match pk {
        [PkValue::Int(p), PkValue::Int(i)] => (*p, *i),
        _ => panic!("the harness uses (int, int) keys: {pk:?}"),
    }
}

impl Model {
    fn read(&self, k: (i64, i64), schema: &TableSchema, opts: &ReadOptions, now: u64) -> Option<Row> {
        let cells = self.rows.get(&k)?;
        let mut columns = BTreeMap::new();
        for (c, versions) in cells {
            if opts.columns.as_ref().is_some_and(|cs| !cs.contains(c)) {
                continue;
            }
            let slots = versions.iter().rev().filter(|(ts, _)| schema.ttl_ms.is_none_or(|ttl| *ts + ttl > now)).take(schema.max_versions as usize);
            let vs: Vec<(u64, Value)> = slots.filter_map(|(ts, v)| Some((*ts, v.clone()?))).filter(|(ts, _)| opts.as_of.is_none_or(|a| *ts <= a)).take(opts.max_versions as usize).collect();
            if !vs.is_empty() {
                columns.insert(c.clone(), vs);
            }
        }
        (!columns.is_empty()).then(|| Row { pk: vec![PkValue::Int(k.0), PkValue::Int(k.1)], columns })
    }

    fn cond_holds(&self, k: (i64, i64), cond: &Condition, schema: &TableSchema, now: u64) -> bool {
        let cur = self.read(k, schema, &ReadOptions::default(), now);
        match cond {
            Condition::Ignore => true,
            Condition::RowExists => cur.is_some(),
            Condition::RowNotExists => cur.is_none(),
            Condition::ColumnEquals(c, v) => cur.and_then(|r| r.columns.get(c).and_then(|vs| vs.first().map(|x| &x.1 == v))).unwrap_or(false),
        }
    }

    fn apply(&mut self, k: (i64, i64), change: &RowChange, ts: u64) {
        match change {
            RowChange::Put(cols) => {
                let mut cells = Cells::new();
                for (c, v) in cols {
                    cells.entry(c.clone()).or_default().insert(ts, Some(v.clone()));
                }
                self.rows.insert(k, cells);
            }
            RowChange::Update(ops) => {
                let cells = self.rows.entry(k).or_default();
                for op in ops {
                    match op {
                        ColumnOp::Put { column, value, ts: t } => {
                            cells.entry(column.clone()).or_default().insert(t.unwrap_or(ts), Some(value.clone()));
                        }
                        ColumnOp::DeleteColumn(c) => {
                            cells.remove(c);
                        }
                        ColumnOp::DeleteVersion(c, t) => {
                            cells.entry(c.clone()).or_default().insert(*t, None);
                        }
                    }
                }
            }
            RowChange::Delete => {
                self.rows.remove(&k);
            }
        }
    }
}

#[derive(Debug)]
enum Outcome {
    /// Never ordered (blocked, rejected, or aborted before submit).
    NotSubmitted,
    Rejected(Error),
    Submitted { pks: Vec<Vec<PkValue>>, ts: u64, first_seq: u64, last_seq: u64, acked: Option<Result<(), Error>> },
}

struct Harness {
    seed: u64,
    cfg: CrashConfig,
    disk: Disk,
    rng: ChaCha8Rng,
    clock: Arc<AtomicU64>,
    schema: TableSchema,
    opts: Options,
    model: Model,
    sum: CrashSummary,
    corruption_possible: bool,
    wave: u32,
}

impl Harness {
    fn new(seed: u64, cfg: CrashConfig, disk: Disk) -> Harness {
        let mut rng = sim::rng::stream(seed, "crashtest");
        let ttl_ms = if rng.random_bool(0.3) { Some(rng.random_range(30..300)) } else { None };
        let schema = TableSchema { name: "crash".into(), pk: vec![("p".into(), PkType::Int), ("id".into(), PkType::Int)], auto_increment: Some(1), max_versions: rng.random_range(1..=4), ttl_ms };
        let opts = Options {
            memtable_bytes: rng.random_range(1..=8) << 10,
            table_bytes: rng.random_range(1..=4) << 10,
            shape: Shape { l0_trigger: rng.random_range(2..=4), l1_bytes: [2 << 10, 4 << 10, 16 << 10][rng.random_range(0..3)], multiplier: rng.random_range(2..=4) },
            block_cache_bytes: rng.random_range(0..=4) << 12,
        };
        Harness { seed, cfg, disk, rng, clock: Arc::new(AtomicU64::new(1_000)), schema, opts, model: Model::default(), sum: CrashSummary { seed, ..CrashSummary::default() }, corruption_possible: false, wave: 0 }
    }

    fn fail(&self, what: impl Into<String>) -> CrashFailure {
        CrashFailure { seed: self.seed, wave: self.wave, what: what.into() }
    }

    fn clock_fn(&self) -> ClockFn {
        let c = self.clock.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }

    fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Opens the table; `Ok(None)` if injected corruption was detected.
    async fn open(&mut self) -> Result<Option<(Table<Disk>, u64)>, CrashFailure> {
        self.disk.set_faults(DiskFaults::default());
        match Table::open(self.disk.clone(), self.schema.clone(), self.opts.clone(), self.clock_fn()).await {
            Ok((t, rep)) => {
                self.sum.torn_tails += rep.torn_tails as u64;
                Ok(Some((t, rep.last_seq)))
            }
            Err(e) if e.is_corruption() && self.corruption_possible => {
                self.sum.corruption_detected += 1;
                self.sum.ended_on_corruption = true;
                Ok(None)
            }
            Err(e) => Err(self.fail(format!("recovery failed: {e}"))),
        }
    }

    fn value(&mut self) -> Value {
        Value::Int(self.rng.random_range(0..4))
    }

    fn column(&mut self) -> String {
        COLUMNS[self.rng.random_range(0..COLUMNS.len())].to_string()
    }

    fn existing_id(&mut self, p: i64) -> Option<i64> {
        let n = *self.model.counters.get(&p).unwrap_or(&0);
        (n > 0).then(|| self.rng.random_range(1..=n))
    }

    fn condition(&mut self) -> Condition {
        match self.rng.random_range(0..10) {
            0 => Condition::RowExists,
            1 => Condition::RowNotExists,
            2 => Condition::ColumnEquals(self.column(), self.value()),
            _ => Condition::Ignore,
        }
    }

    fn row_write(&mut self, p: i64) -> RowWrite {
        let id = self.existing_id(p);
        let kind = self.rng.random_range(0..10);
        let Some(id) = id.filter(|_| kind >= 3) else {
            let n = self.rng.random_range(1..=3);
            let cols = (0..n).map(|_| (self.column(), self.value())).collect::<BTreeMap<_, _>>().into_iter().collect();
            return RowWrite { pk: vec![PkValue::Int(p), PkValue::AutoInc], change: RowChange::Put(cols), cond: Condition::Ignore };
        };
        let pk = vec![PkValue::Int(p), PkValue::Int(id)];
        let change = match kind {
            3 | 4 => {
                let n = self.rng.random_range(1..=3);
                RowChange::Put((0..n).map(|_| (self.column(), self.value())).collect::<BTreeMap<_, _>>().into_iter().collect())
            }
            5..=8 => {
                let n = self.rng.random_range(1..=3);
                let ops = (0..n)
                    .map(|_| {
                        let c = self.column();
                        match self.rng.random_range(0..6) {
                            0 => ColumnOp::DeleteColumn(c),
                            1 => {
                                let known: Vec<u64> = self.model.rows.get(&(p, id)).and_then(|r| r.get(&c)).map(|v| v.keys().copied().collect()).unwrap_or_default();
                                let ts = if known.is_empty() { self.now() } else { known[self.rng.random_range(0..known.len())] };
                                ColumnOp::DeleteVersion(c, ts)
                            }
                            2 => {
                                let ts = Some(self.now().saturating_sub(self.rng.random_range(0..50)));
                                ColumnOp::Put { column: c, value: self.value(), ts }
                            }
                            _ => ColumnOp::Put { column: c, value: self.value(), ts: None },
                        }
                    })
                    .collect();
                RowChange::Update(ops)
            }
            _ => RowChange::Delete,
        };
        RowWrite { pk, change, cond: self.condition() }
    }

    fn op(&mut self) -> Vec<RowWrite> {
        let p = self.rng.random_range(0..self.cfg.partitions);
        let n = if self.rng.random_bool(0.2) { self.rng.random_range(2..=4) } else { 1 };
        let mut rows: Vec<RowWrite> = Vec::new();
        for _ in 0..n {
            let w = self.row_write(p);
            if w.pk[1] == PkValue::AutoInc || !rows.iter().any(|r| r.pk == w.pk) {
                rows.push(w);
            }
        }
        rows
    }

    fn set_faults(&mut self) {
        let mut f = DiskFaults::default();
        if self.rng.random_bool(self.cfg.fault_probability) {
            let r = self.cfg.fault_rate;
            match self.rng.random_range(0..4) {
                0 => f.read_error_rate = r,
                1 => f.write_error_rate = r,
                2 => f.bitflip_read_rate = r,
                _ => {
                    f.bitflip_write_rate = r / 4.0;
                    self.corruption_possible = true;
                }
            }
        }
        self.disk.set_faults(f);
    }

    async fn run(mut self) -> Result<CrashSummary, CrashFailure> {
        let Some((mut table, _)) = self.open().await? else { return Err(self.fail("a fresh table cannot open")) };
        for wave in 0..self.cfg.waves {
            self.wave = wave;
            self.sum.waves = wave + 1;
            let step = self.rng.random_range(0..15);
            self.clock.fetch_add(step, Ordering::SeqCst);
            self.set_faults();
            let faults = self.disk.faults();
            let n = self.rng.random_range(1..=self.cfg.ops_per_wave_max);
            let ops: Vec<Vec<RowWrite>> = (0..n).map(|_| self.op()).collect();
            let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new((0..n).map(|_| Outcome::NotSubmitted).collect()));
            let mut tasks = Vec::new();
            for (i, rows) in ops.iter().cloned().enumerate() {
                let t = table.clone();
                let out = outcomes.clone();
                tasks.push(madsim::task::spawn_local(async move {
                    match t.submit(rows).await {
                        Err(e) => out.lock().expect("outcomes")[i] = Outcome::Rejected(e),
                        Ok((a, ticket)) => {
                            out.lock().expect("outcomes")[i] = Outcome::Submitted { pks: a.pks, ts: a.ts, first_seq: a.first_seq, last_seq: a.last_seq, acked: None };
                            let r = ticket.wait().await;
                            if let Outcome::Submitted { acked, .. } = &mut out.lock().expect("outcomes")[i] {
                                *acked = Some(r);
                            }
                        }
                    }
                }));
            }
            let crash = self.rng.random_bool(self.cfg.crash_probability);
            if crash {
                let us = self.rng.random_range(0..600);
                sim::time::sleep(Duration::from_micros(us)).await;
                for t in &tasks {
                    t.abort();
                }
            } else {
                for t in tasks {
                    let _ = t.await;
                }
            }
            if std::env::var("CRASHTEST_TRACE").is_ok() {
                eprintln!("wave {wave}: faults {faults:?} crash {crash} stopped {:?} ops {ops:?}", table.db().stopped());
                eprintln!("  outcomes {:?}", outcomes.lock().expect("o"));
            }
            let wave_start = self.model.clone();
            let now = self.now();
            let stopped = table.db().stopped().is_some();
            let mut recovered_seq = None;
            if crash || stopped {
                let st = table.db().stats();
                self.sum.flushes += st.flushes;
                self.sum.compactions += st.compactions;
                table.kill();
                if crash || self.rng.random_bool(0.5) {
                    self.disk.crash();
                    self.sum.crashes += 1;
                }
                self.sum.restarts += 1;
                match self.open().await? {
                    Some((t, last_seq)) => {
                        table = t;
                        recovered_seq = Some(last_seq);
                    }
                    None => return Ok(self.sum),
                }
            }
            let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
            self.resolve(&ops, outcomes, recovered_seq, &wave_start, now)?;
            if !self.check(&table, &faults).await? {
                table.kill();
                return Ok(self.sum);
            }
        }
        let st = table.db().stats();
        self.sum.flushes += st.flushes;
        self.sum.compactions += st.compactions;
        table.kill();
        Ok(self.sum)
    }

    /// Applies the wave's writes to the model in sequence order, keeping the
    /// ones that are durable (acknowledged, or below the recovered sequence).
    fn resolve(&mut self, ops: &[Vec<RowWrite>], outcomes: Vec<Outcome>, recovered: Option<u64>, start: &Model, now: u64) -> Result<(), CrashFailure> {
        let mut present = Vec::new();
        let touched: Vec<(i64, i64)> = outcomes.iter().filter_map(|o| if let Outcome::Submitted { pks, .. } = o { Some(pks.iter().map(|p| key_of(p))) } else { None }).flatten().collect();
        for (i, o) in outcomes.into_iter().enumerate() {
            match o {
                Outcome::NotSubmitted => {}
                Outcome::Rejected(Error::ConditionFailed(_)) => {
                    self.sum.writes_rejected += 1;
                    // Checkable only when nothing else in the wave touched its rows.
                    for w in &ops[i] {
                        if let PkValue::Int(_) = w.pk[1] {
                            let k = key_of(&w.pk);
                            if !touched.contains(&k) && ops[i].len() == 1 && start.cond_holds(k, &w.cond, &self.schema, now) {
                                return Err(self.fail(format!("condition {:?} rejected though it held on {k:?}", w.cond)));
                            }
                        }
                    }
                }
                Outcome::Rejected(Error::Stopped(_)) => {}
                Outcome::Rejected(Error::Fs(_) | Error::Corruption { .. }) => self.sum.read_errors_detected += 1,
                Outcome::Rejected(e) => return Err(self.fail(format!("write rejected: {e}"))),
                Outcome::Submitted { pks, ts, first_seq, last_seq, acked } => {
                    let acked_ok = matches!(acked, Some(Ok(())));
                    let durable = match recovered {
                        Some(r) => {
                            if acked_ok && last_seq > r {
                                return Err(self.fail(format!("acknowledged write {first_seq}..={last_seq} lost: recovered up to {r}")));
                            }
                            last_seq <= r
                        }
                        None if acked_ok => true,
                        None => return Err(self.fail(format!("write {first_seq} neither acknowledged nor recovered: {acked:?}"))),
                    };
                    if acked_ok {
                        self.sum.writes_acked += 1;
                    } else if durable {
                        self.sum.writes_pending_present += 1;
                    } else {
                        self.sum.writes_pending_absent += 1;
                    }
                    if durable {
                        present.push((first_seq, i, pks, ts));
                    }
                }
            }
        }
        present.sort_by_key(|p| p.0);
        for (_, i, pks, ts) in present {
            for (w, pk) in ops[i].iter().zip(&pks) {
                let k = key_of(pk);
                if !self.model.cond_holds(k, &w.cond, &self.schema, now) {
                    return Err(self.fail(format!("condition {:?} accepted though it did not hold on {k:?}", w.cond)));
                }
            }
            for (w, pk) in ops[i].iter().zip(&pks) {
                let k = key_of(pk);
                if w.pk[1] == PkValue::AutoInc {
                    let c = *self.model.counters.get(&k.0).unwrap_or(&0);
                    if k.1 != c + 1 {
                        return Err(self.fail(format!("auto-increment gap in partition {}: {} after {}", k.0, k.1, c)));
                    }
                    self.model.counters.insert(k.0, k.1);
                    self.sum.auto_increment_values += 1;
                }
                self.model.apply(k, &w.change, ts);
            }
        }
        Ok(())
    }

    /// Compares the table with the model; `Ok(false)` ends the run because
    /// injected at-rest corruption was detected.
    async fn check(&mut self, table: &Table<Disk>, faults: &DiskFaults) -> Result<bool, CrashFailure> {
        let now = self.now();
        let maxv = self.schema.max_versions;
        let mut expect: Vec<Row> = Vec::new();
        for k in self.model.rows.keys() {
            if let Some(r) = self.model.read(*k, &self.schema, &ReadOptions { max_versions: maxv, ..Default::default() }, now) {
                expect.push(r);
            }
        }
        let transient = faults.read_error_rate > 0.0 || faults.bitflip_read_rate > 0.0;
        for dir in [Dir::Forward, Dir::Backward] {
            let mut got = Vec::new();
            let mut resume = None;
            let mut pages = 0;
            let mut complete = false;
            loop {
                let limit = self.rng.random_range(1..=40);
                let req = ScanRequest { start: None, end: None, dir, limit, resume: resume.clone(), read: ReadOptions { max_versions: maxv, ..Default::default() } };
                match table.scan(&req).await {
                    Ok(page) => {
                        got.extend(page.rows);
                        resume = page.next;
                        if resume.is_none() {
                            complete = true;
                            break;
                        }
                    }
                    Err(e) => match self.fault_error(&e, transient)? {
                        true => return Ok(false),
                        false => break,
                    },
                }
                pages += 1;
                assert!(pages < 100_000, "scan pages bounded");
            }
            if !complete {
                continue;
            }
            if dir == Dir::Backward {
                got.reverse();
            }
            if got != expect {
                let first = got.iter().zip(&expect).position(|(a, b)| a != b).unwrap_or(got.len().min(expect.len()));
                return Err(self.fail(format!("{dir:?} scan differs at row {first}: got {:?}, expected {:?} ({} vs {} rows)", got.get(first), expect.get(first), got.len(), expect.len())));
            }
            self.sum.rows_checked += got.len() as u64;
        }
        for _ in 0..4 {
            let p = self.rng.random_range(0..self.cfg.partitions);
            let id = self.existing_id(p).unwrap_or(1);
            let opts = ReadOptions {
                max_versions: self.rng.random_range(1..=4),
                as_of: self.rng.random_bool(0.3).then(|| now.saturating_sub(self.rng.random_range(0..40))),
                columns: self.rng.random_bool(0.3).then(|| vec![self.column(), self.column()]),
            };
            let want = self.model.read((p, id), &self.schema, &opts, now);
            match table.get_row(&[PkValue::Int(p), PkValue::Int(id)], &opts).await {
                Ok(got) if got == want => self.sum.rows_checked += 1,
                Ok(got) => {
                    let dbg = table.db().debug_row(&self.schema.encode_pk(&[PkValue::Int(p), PkValue::Int(id)]).unwrap()).await;
                    return Err(self.fail(format!("get ({p}, {id}) {opts:?}: got {got:?}, expected {want:?}\n{dbg}")));
                }
                Err(e) => {
                    if self.fault_error(&e, transient)? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Classifies a read error: allowed only under injected faults. `true`
    /// means at-rest corruption was detected and the run ends.
    fn fault_error(&mut self, e: &Error, transient: bool) -> Result<bool, CrashFailure> {
        match e {
            Error::Fs(_) | Error::Corruption { .. } if transient => {
                self.sum.read_errors_detected += 1;
                Ok(false)
            }
            Error::Corruption { .. } if self.corruption_possible => {
                self.sum.corruption_detected += 1;
                self.sum.ended_on_corruption = true;
                Ok(true)
            }
            e => Err(self.fail(format!("read failed without an injected fault: {e}"))),
        }
    }
}
