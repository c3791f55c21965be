//! The engine core: the write path (sequence assignment, memtable insert,
//! group commit), the background flush and compaction task, and snapshots
//! for reads.
//!
//! Write path: a writer takes the write lock, checks what it must against
//! the latest state (conditions, counters), [`Db::submit`]s its batch
//! (consecutive sequence numbers, inserted into the memtable but invisible
//! to readers) and releases the lock; it then awaits its [`Ticket`]. The
//! committer task appends the waiting batches as one WAL frame, syncs once,
//! advances the visible sequence and acknowledges them all.
//!
//! Invariants:
//! - a write is acknowledged only after the sync covering it returned `Ok`;
//! - readers see exactly the entries at or below the visible sequence, a
//!   prefix of the durable WAL order;
//! - after any failed WAL, table or manifest write the engine is stopped
//!   (fail-stop): queued and later writes fail with [`Error::Stopped`] and
//!   nothing more is acknowledged; reopen to recover;
//! - a memtable is flushed only once all its entries are durable.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use madsim::task::JoinHandle;
use tokio::sync::{oneshot, Notify};

use crate::fs::Files;
use crate::lsm::block_cache::BlockCache;
use crate::lsm::compaction::{self, Choice, Gc, Shape};
use crate::lsm::error::{Error, Result};
use crate::lsm::format::frame;
use crate::lsm::keys;
use crate::lsm::manifest::{Edit, FileMeta, ManifestLog, Version, MANIFEST_BYTES_MAX};
use crate::lsm::memtable::{Memtable, MEMTABLE_BYTES_MAX};
use crate::lsm::read::{Merge, Range, Source};
use crate::lsm::sstable::builder::Builder;
use crate::lsm::sstable::{table_name, write_table, TableReader};
use crate::lsm::wal::{self, WalBatch, BATCH_ENTRIES_MAX, GROUP_COMMIT_MAX};
use crate::lsm::{Dir, Entry};

/// Most immutable memtables waiting for flush before writers stall.
pub const IMM_MAX: usize = 4;
/// Most batches waiting for group commit before writers stall.
pub const QUEUE_MAX: usize = 4 * GROUP_COMMIT_MAX;

/// Tunables; [`Options::default`] suits a partition of a few GB.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Memtable switch threshold (at most [`MEMTABLE_BYTES_MAX`]).
    pub memtable_bytes: usize,
    /// Tables are cut near this size, at a row boundary.
    pub table_bytes: usize,
    pub shape: Shape,
    pub block_cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memtable_bytes: MEMTABLE_BYTES_MAX,
            table_bytes: 2 << 20,
            shape: Shape { l0_trigger: 4, l1_bytes: 8 << 20, multiplier: 10 },
            block_cache_bytes: crate::lsm::block_cache::BLOCK_CACHE_BYTES_MAX,
        }
    }
}

/// Garbage rules of the table the engine stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    pub ttl_ms: Option<u64>,
    pub max_versions: u32,
}

/// The clock the engine reads cell timestamps and TTL expiry from (ms).
pub type ClockFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Counters for reports and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DbStats {
    pub user_bytes: u64,
    pub wal_bytes: u64,
    pub flush_bytes: u64,
    pub compaction_bytes: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub moves: u64,
    pub group_commits: u64,
    pub batches_committed: u64,
}

struct Pending {
    wal: u64,
    batch: WalBatch,
    done: oneshot::Sender<Result<()>>,
}

pub(crate) struct State {
    pub(crate) mem: Arc<Memtable>,
    pub(crate) mem_wal: u64,
    /// Oldest first, with the WAL each was written to.
    pub(crate) imm: VecDeque<(Arc<Memtable>, u64)>,
    pub(crate) version: Arc<Version>,
    /// Open tables, shared copy-on-write with snapshots.
    pub(crate) tables: Arc<BTreeMap<u64, Arc<TableReader>>>,
    obsolete: Vec<Arc<TableReader>>,
    pub(crate) next_seq: u64,
    pub(crate) visible_seq: u64,
    pub(crate) next_file: u64,
    queue: VecDeque<Pending>,
    open_wal: Option<u64>,
    stopped: Option<String>,
    pub(crate) stats: DbStats,
}

impl State {
    /// Freezes the memtable (with the WAL it was written to) for flushing
    /// and starts a new one on a new WAL number.
    fn rotate_memtable(&mut self) {
        let old = std::mem::replace(&mut self.mem, Arc::new(Memtable::new()));
        self.imm.push_back((old, self.mem_wal));
        self.mem_wal = self.next_file;
        self.next_file += 1;
    }
}

pub(crate) struct Shared<F: Files> {
    pub(crate) fs: F,
    pub(crate) opts: Options,
    pub(crate) gc: GcPolicy,
    pub(crate) clock: ClockFn,
    pub(crate) cache: BlockCache,
    st: Mutex<State>,
    wlock: tokio::sync::Mutex<()>,
    manifest: tokio::sync::Mutex<ManifestLog>,
    commit_wake: Notify,
    maint_wake: Notify,
    progress: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A handle on an open engine; clones share it. Call [`Db::kill`] to stop
/// its background tasks (a crash in the harness; the end of a test).
pub struct Db<F: Files> {
    pub(crate) s: Arc<Shared<F>>,
}

impl<F: Files> Clone for Db<F> {
    fn clone(&self) -> Self {
        Db { s: self.s.clone() }
    }
}

/// Proof of holding the write lock.
pub struct WriteGuard<'a>(#[allow(dead_code)] tokio::sync::MutexGuard<'a, ()>);

/// A submitted batch: its sequence numbers, and its acknowledgement.
#[derive(Debug)]
pub struct Ticket {
    pub first_seq: u64,
    pub last_seq: u64,
    rx: oneshot::Receiver<Result<()>>,
}

impl Ticket {
    /// Resolves once the batch is durable (`Ok`) or can no longer be
    /// acknowledged (`Err`: its durability is unknown).
    pub async fn wait(self) -> Result<()> {
        self.rx.await.unwrap_or_else(|_| Err(Error::Stopped("engine closed".into())))
    }
}

/// A consistent view for reads.
pub struct Snapshot {
    mems: Vec<Arc<Memtable>>,
    version: Arc<Version>,
    tables: Arc<BTreeMap<u64, Arc<TableReader>>>,
    pub read_seq: u64,
}

fn overlaps(f: &FileMeta, lo: &[u8], hi: Option<&[u8]>) -> bool {
    f.largest.as_slice() >= lo && hi.is_none_or(|h| f.smallest.as_slice() < h)
}

impl<F: Files> Db<F> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(fs: F, opts: Options, gc: GcPolicy, clock: ClockFn, version: Version, tables: BTreeMap<u64, Arc<TableReader>>, recovered: Option<(Arc<Memtable>, u64)>, last_seq: u64, next_file: u64, manifest: ManifestLog) -> Db<F> {
        assert!(opts.memtable_bytes <= MEMTABLE_BYTES_MAX, "memtable_bytes over MEMTABLE_BYTES_MAX");
        let mem_wal = next_file;
        let st = State {
            mem: Arc::new(Memtable::new()),
            mem_wal,
            imm: recovered.into_iter().collect(),
            version: Arc::new(version),
            tables: Arc::new(tables),
            obsolete: Vec::new(),
            next_seq: last_seq + 1,
            visible_seq: last_seq,
            next_file: next_file + 1,
            queue: VecDeque::new(),
            open_wal: None,
            stopped: None,
            stats: DbStats::default(),
        };
        let s = Arc::new(Shared {
            cache: BlockCache::new(opts.block_cache_bytes),
            fs,
            opts,
            gc,
            clock,
            st: Mutex::new(st),
            wlock: tokio::sync::Mutex::new(()),
            manifest: tokio::sync::Mutex::new(manifest),
            commit_wake: Notify::new(),
            maint_wake: Notify::new(),
            progress: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let db = Db { s };
        let c = db.clone();
        let committer = madsim::task::spawn_local(async move { c.commit_loop().await });
        let m = db.clone();
        let maint = madsim::task::spawn_local(async move { m.maintenance_loop().await });
        db.s.tasks.lock().expect("tasks lock").extend([committer, maint]);
        db.s.maint_wake.notify_one();
        db
    }

    pub(crate) fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.s.st.lock().expect("engine state lock poisoned")
    }

    /// Stops the background tasks and fails every queued write: what a
    /// crash does to the process (the disk's state is untouched).
    pub fn kill(&self) {
        for t in self.s.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
        self.stop("engine killed".into());
    }

    fn stop(&self, why: String) {
        let mut st = self.st();
        if st.stopped.is_none() {
            tracing::debug!(why, "engine stopped");
            st.stopped = Some(why.clone());
        }
        for p in st.queue.drain(..) {
            let _ = p.done.send(Err(Error::Stopped(why.clone())));
        }
        drop(st);
        self.s.progress.notify_waiters();
    }

    /// Why the engine stopped accepting writes, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.st().stopped.clone()
    }

    pub fn stats(&self) -> DbStats {
        self.st().stats.clone()
    }

    pub fn now_ms(&self) -> u64 {
        (self.s.clock)()
    }

    pub fn gc_policy(&self) -> GcPolicy {
        self.s.gc
    }

    /// The highest sequence number readers can see (all durable).
    pub fn visible_seq(&self) -> u64 {
        self.st().visible_seq
    }

    pub async fn lock_writes(&self) -> WriteGuard<'_> {
        WriteGuard(self.s.wlock.lock().await)
    }

    /// Assigns sequence numbers to `entries`, inserts them into the memtable
    /// (invisible until durable) and queues them for group commit.
    pub async fn submit(&self, _g: &WriteGuard<'_>, entries: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<Ticket> {
        if entries.is_empty() || entries.len() > BATCH_ENTRIES_MAX {
            return Err(Error::LimitExceeded { what: "batch entries", limit: BATCH_ENTRIES_MAX as u64 });
        }
        loop {
            let n = self.s.progress.notified();
            {
                let st = self.st();
                if let Some(why) = &st.stopped {
                    return Err(Error::Stopped(why.clone()));
                }
                if st.imm.len() < IMM_MAX && st.queue.len() < QUEUE_MAX {
                    break;
                }
            }
            n.await;
        }
        let (tx, rx) = oneshot::channel();
        let mut st = self.st();
        if st.mem.bytes() >= self.s.opts.memtable_bytes {
            st.rotate_memtable();
            self.s.maint_wake.notify_one();
        }
        let first_seq = st.next_seq;
        st.next_seq += entries.len() as u64;
        for (i, (k, v)) in entries.iter().enumerate() {
            st.stats.user_bytes += (k.len() + v.as_ref().map_or(0, Vec::len)) as u64;
            st.mem.insert(Entry { key: k.clone(), seq: first_seq + i as u64, value: v.clone() });
        }
        let batch = WalBatch { first_seq, entries };
        let last_seq = batch.last_seq();
        let wal = st.mem_wal;
        st.queue.push_back(Pending { wal, batch, done: tx });
        drop(st);
        self.s.commit_wake.notify_one();
        Ok(Ticket { first_seq, last_seq, rx })
    }

    async fn commit_loop(self) {
        loop {
            let wake = self.s.commit_wake.notified();
            let work = {
                let mut st = self.st();
                match st.queue.front().map(|p| p.wal) {
                    None => None,
                    Some(wal) => {
                        let mut items = Vec::new();
                        while items.len() < GROUP_COMMIT_MAX && st.queue.front().is_some_and(|p| p.wal == wal) {
                            items.push(st.queue.pop_front().expect("front exists"));
                        }
                        Some((wal, items, st.open_wal))
                    }
                }
            };
            let Some((wal, items, open_wal)) = work else {
                wake.await;
                continue;
            };
            let name = wal::wal_name(wal);
            let payload = wal::encode_frame_payload(&items.iter().map(|p| &p.batch).collect::<Vec<_>>());
            let f = frame(&payload);
            let res = async {
                if open_wal != Some(wal) {
                    self.s.fs.create(&name).await?;
                    self.s.fs.sync_dir().await?;
                    self.st().open_wal = Some(wal);
                }
                wal::append_synced(&self.s.fs, &name, &f).await
            }
            .await;
            match res {
                Ok(()) => {
                    let mut st = self.st();
                    if st.stopped.is_some() {
                        // Killed while syncing: durable, but nobody is told.
                        drop(st);
                        for p in items {
                            let _ = p.done.send(Err(Error::Stopped("engine killed".into())));
                        }
                        continue;
                    }
                    st.visible_seq = items.last().expect("non-empty").batch.last_seq();
                    st.stats.wal_bytes += f.len() as u64;
                    st.stats.group_commits += 1;
                    st.stats.batches_committed += items.len() as u64;
                    drop(st);
                    for p in items {
                        let _ = p.done.send(Ok(()));
                    }
                    self.s.progress.notify_waiters();
                }
                Err(e) => {
                    let why = format!("wal write failed: {e}");
                    for p in items {
                        let _ = p.done.send(Err(Error::Stopped(why.clone())));
                    }
                    self.stop(why);
                }
            }
        }
    }

    async fn maintenance_loop(self) {
        loop {
            let wake = self.s.maint_wake.notified();
            if self.stopped().is_some() {
                return;
            }
            let res = self.maintain_once().await;
            match res {
                Ok(true) => continue,
                Ok(false) => wake.await,
                Err(e) => {
                    self.stop(format!("background work failed: {e}"));
                    return;
                }
            }
        }
    }

    /// One flush or compaction; `false` if there was nothing to do.
    pub(crate) async fn maintain_once(&self) -> Result<bool> {
        self.purge_obsolete().await;
        let has_imm = !self.st().imm.is_empty();
        if has_imm {
            self.flush_oldest().await?;
            return Ok(true);
        }
        let v = self.st().version.clone();
        match compaction::pick(&v, &self.s.opts.shape) {
            Choice::Nothing => Ok(false),
            c => {
                self.compact(c).await?;
                Ok(true)
            }
        }
    }

    async fn purge_obsolete(&self) {
        let dead: Vec<Arc<TableReader>> = {
            let mut st = self.st();
            let (dead, keep) = std::mem::take(&mut st.obsolete).into_iter().partition(|t| Arc::strong_count(t) == 1);
            st.obsolete = keep;
            dead
        };
        for t in dead {
            self.s.cache.evict_table(t.number);
            // A failed remove leaves an orphan that the next open deletes.
            let _ = self.s.fs.remove(&t.name).await;
        }
    }

    fn alloc_file(&self) -> u64 {
        let mut st = self.st();
        st.next_file += 1;
        st.next_file - 1
    }

    /// Writes entries (ascending, newest per key) as tables cut at row
    /// boundaries; syncs them and the directory; returns their metadata.
    async fn write_tables(&self, entries: Vec<Entry>) -> Result<Vec<(FileMeta, Arc<TableReader>)>> {
        let mut out = Vec::new();
        let mut b = Builder::new();
        let mut last_row: Vec<u8> = Vec::new();
        let mut images = Vec::new();
        for e in entries {
            let row = &e.key[..keys::row_len(&e.key)];
            if b.size() >= self.s.opts.table_bytes && row != last_row.as_slice() {
                images.push(std::mem::take(&mut b));
            }
            last_row.clear();
            last_row.extend_from_slice(row);
            b.add(&e);
        }
        if b.entries > 0 {
            images.push(b);
        }
        for b in images {
            let number = self.alloc_file();
            let (smallest, largest) = (b.smallest.clone().expect("non-empty"), b.largest().expect("non-empty").to_vec());
            let (entries, min_seq, max_seq) = (b.entries, b.min_seq, b.max_seq);
            let image = b.finish();
            write_table(&self.s.fs, number, &image).await?;
            let meta = FileMeta { number, size: image.len() as u64, entries, smallest, largest, min_seq, max_seq };
            let reader = Arc::new(TableReader::open(&self.s.fs, number).await?);
            out.push((meta, reader));
        }
        self.s.fs.sync_dir().await?;
        Ok(out)
    }

    /// Applies edits to the current version and logs them durably.
    async fn log_edits(&self, mut edits: Vec<Edit>) -> Result<Arc<Version>> {
        let mut m = self.s.manifest.lock().await;
        let mut v = (*self.st().version).clone();
        edits.push(Edit::SetNextFile(self.st().next_file));
        for e in &edits {
            v.apply(e, "in-memory version").expect("edits made by the engine apply");
        }
        if m.size > MANIFEST_BYTES_MAX {
            *m = ManifestLog::create(&self.s.fs, m.number + 1, &v).await?;
        } else {
            m.append(&self.s.fs, &edits).await?;
        }
        let v = Arc::new(v);
        self.st().version = v.clone();
        Ok(v)
    }

    async fn flush_oldest(&self) -> Result<()> {
        let (imm, next_log) = {
            let st = self.st();
            let (imm, _) = st.imm.front().expect("caller checked").clone();
            let next_log = st.imm.get(1).map_or(st.mem_wal, |(_, w)| *w);
            (imm, next_log)
        };
        let max_seq = imm.max_seq();
        loop {
            let n = self.s.progress.notified();
            {
                let st = self.st();
                if let Some(why) = &st.stopped {
                    return Err(Error::Stopped(why.clone()));
                }
                if st.visible_seq >= max_seq {
                    break;
                }
            }
            n.await;
        }
        let entries = imm.newest(u64::MAX);
        let outputs = if entries.is_empty() { Vec::new() } else { self.write_tables(entries).await? };
        let mut edits: Vec<Edit> = outputs.iter().map(|(m, _)| Edit::AddFile { level: 0, meta: m.clone() }).collect();
        let old_last = self.st().version.last_seq;
        edits.push(Edit::SetLogNumber(next_log));
        edits.push(Edit::SetLastSeq(old_last.max(max_seq)));
        self.log_edits(edits).await?;
        {
            let mut st = self.st();
            st.imm.pop_front();
            st.stats.flushes += 1;
            for (m, r) in outputs {
                st.stats.flush_bytes += m.size;
                Arc::make_mut(&mut st.tables).insert(m.number, r);
            }
        }
        self.s.progress.notify_waiters();
        for name in self.s.fs.list("wal-") {
            if wal::wal_number(&name).is_some_and(|n| n < next_log) {
                let _ = self.s.fs.remove(&name).await;
            }
        }
        Ok(())
    }

    async fn compact(&self, choice: Choice) -> Result<()> {
        let (level, inputs, overlaps, bottom) = match choice {
            Choice::Nothing => return Ok(()),
            Choice::Move { level, file } => {
                let edits = vec![Edit::RemoveFile { level: level as u32, number: file.number }, Edit::AddFile { level: level as u32 + 1, meta: file }];
                self.log_edits(edits).await?;
                self.st().stats.moves += 1;
                return Ok(());
            }
            Choice::Merge { level, inputs, overlaps, bottom } => (level, inputs, overlaps, bottom),
        };
        let readers: Vec<Arc<TableReader>> = {
            let st = self.st();
            inputs.iter().chain(&overlaps).map(|f| st.tables.get(&f.number).expect("live table is open").clone()).collect()
        };
        let range = Range { lo: Vec::new(), hi: None, dir: Dir::Forward, read_seq: u64::MAX };
        let sources = readers.iter().map(|r| Source::Table(crate::lsm::sstable::iterator::TableCursor::new(r.clone(), &[], None, Dir::Forward))).collect();
        let mut merge = Merge::new(range, sources);
        let gc = Gc { bottom, now_ms: self.now_ms(), ttl_ms: self.s.gc.ttl_ms, max_versions: self.s.gc.max_versions };
        let mut kept = Vec::new();
        let mut row: Vec<Entry> = Vec::new();
        let name = readers.first().map_or(String::new(), |r| r.name.clone());
        while let Some(e) = merge.next(&self.s.fs, &self.s.cache).await? {
            let same = row.last().is_some_and(|l| l.key[..keys::row_len(&l.key)] == e.key[..keys::row_len(&e.key)]);
            if !same && !row.is_empty() {
                kept.extend(compaction::gc_row(&name, std::mem::take(&mut row), &gc)?);
            }
            row.push(e);
        }
        if !row.is_empty() {
            kept.extend(compaction::gc_row(&name, row, &gc)?);
        }
        let outputs = if kept.is_empty() { Vec::new() } else { self.write_tables(kept).await? };
        let mut edits = Vec::new();
        for f in &inputs {
            edits.push(Edit::RemoveFile { level: level as u32, number: f.number });
        }
        for f in &overlaps {
            edits.push(Edit::RemoveFile { level: level as u32 + 1, number: f.number });
        }
        for (m, _) in &outputs {
            edits.push(Edit::AddFile { level: level as u32 + 1, meta: m.clone() });
        }
        self.log_edits(edits).await?;
        let mut st = self.st();
        st.stats.compactions += 1;
        for f in inputs.iter().chain(&overlaps) {
            if let Some(r) = Arc::make_mut(&mut st.tables).remove(&f.number) {
                st.obsolete.push(r);
            }
        }
        for (m, r) in outputs {
            st.stats.compaction_bytes += m.size;
            Arc::make_mut(&mut st.tables).insert(m.number, r);
        }
        Ok(())
    }

    /// Runs flushes and compactions until there is nothing left to do
    /// (tests and the benchmark use it to reach a quiet state).
    pub async fn settle(&self) -> Result<()> {
        {
            let mut st = self.st();
            if !st.mem.is_empty() && st.imm.len() < IMM_MAX {
                st.rotate_memtable();
            }
        }
        self.s.maint_wake.notify_one();
        let mut waited = 0u32;
        loop {
            let idle = {
                let st = self.st();
                if let Some(why) = &st.stopped {
                    return Err(Error::Stopped(why.clone()));
                }
                st.imm.is_empty() && compaction::pick(&st.version, &self.s.opts.shape) == Choice::Nothing
            };
            if idle {
                return Ok(());
            }
            waited += 1;
            assert!(waited < 1_000_000, "settle never converged");
            sim::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// A consistent view: `latest` includes writes not yet durable (only
    /// for checks under the write lock).
    pub fn snapshot(&self, latest: bool) -> Snapshot {
        let st = self.st();
        let mut mems = vec![st.mem.clone()];
        mems.extend(st.imm.iter().rev().map(|(m, _)| m.clone()));
        Snapshot { mems, version: st.version.clone(), tables: st.tables.clone(), read_seq: if latest { u64::MAX } else { st.visible_seq } }
    }

    /// A merged cursor over `[lo, hi)`; `row` enables bloom filters for a
    /// point read of one row.
    pub fn cursor(&self, snap: &Snapshot, lo: &[u8], hi: Option<&[u8]>, dir: Dir, row: Option<&[u8]>) -> Merge {
        let mut sources: Vec<Source> = snap.mems.iter().map(|m| Source::mem(m.clone())).collect();
        let pass = |f: &FileMeta| {
            let t = &snap.tables[&f.number];
            overlaps(f, lo, hi) && row.is_none_or(|r| t.bloom.may_contain(r))
        };
        for f in &snap.version.levels[0] {
            if pass(f) {
                sources.push(Source::Table(crate::lsm::sstable::iterator::TableCursor::new(snap.tables[&f.number].clone(), lo, hi, dir)));
            }
        }
        for level in &snap.version.levels[1..] {
            let ts: Vec<Arc<TableReader>> = level.iter().filter(|f| pass(f)).map(|f| snap.tables[&f.number].clone()).collect();
            if !ts.is_empty() {
                sources.push(Source::level(ts, dir));
            }
        }
        Merge::new(Range { lo: lo.to_vec(), hi: hi.map(<[u8]>::to_vec), dir, read_seq: snap.read_seq }, sources)
    }

    pub async fn next(&self, m: &mut Merge) -> Result<Option<Entry>> {
        m.next(&self.s.fs, &self.s.cache).await
    }

    /// Memory the engine holds now: memtables, open tables' index and
    /// filter, and cached blocks.
    pub fn mem_bytes(&self) -> usize {
        let (a, b, c) = self.mem_breakdown();
        a + b + c
    }

    /// Memory by part: memtables, open tables' index and filter, block cache.
    pub fn mem_breakdown(&self) -> (usize, usize, usize) {
        let st = self.st();
        let mems = st.mem.bytes() + st.imm.iter().map(|(m, _)| m.bytes()).sum::<usize>();
        (mems, st.tables.values().map(|t| t.mem_bytes()).sum::<usize>(), self.s.cache.bytes())
    }

    /// Files per level, for tests and reports.
    pub fn level_files(&self) -> Vec<usize> {
        self.st().version.levels.iter().map(Vec::len).collect()
    }

    pub fn fs(&self) -> &F {
        &self.s.fs
    }

    #[doc(hidden)]
    pub fn table_names(&self) -> Vec<String> {
        self.st().tables.keys().map(|n| table_name(*n)).collect()
    }
}

impl<F: Files> Db<F> {
    /// Diagnostics: every source's raw entries of one row (key length,
    /// sequence, put or tombstone). The crash harness prints it on failure.
    pub async fn debug_row(&self, row: &[u8]) -> String {
        let snap = self.snapshot(false);
        let hi = keys::prefix_end(row);
        let mut out = format!("read_seq {}\n", snap.read_seq);
        for (i, m) in snap.mems.iter().enumerate() {
            out += &format!("mem{i}: {:?}\n", m.chunk(row, hi.as_deref(), None, Dir::Forward, u64::MAX, 1000).iter().map(|e| (e.key.len(), e.seq, e.value.is_some())).collect::<Vec<_>>());
        }
        for (l, files) in snap.version.levels.iter().enumerate() {
            for f in files {
                let t = &snap.tables[&f.number];
                let mut c = crate::lsm::sstable::iterator::TableCursor::new(t.clone(), row, hi.as_deref(), Dir::Forward);
                let mut v = Vec::new();
                while let Ok(Some(e)) = c.next(&self.s.fs, &self.s.cache).await {
                    v.push((e.key.len(), e.seq, e.value.is_some()));
                }
                out += &format!("L{l} #{} seq {}..{} bloom {}: {:?}\n", f.number, f.min_seq, f.max_seq, t.bloom.may_contain(row), v);
            }
        }
        out
    }
}
