//! One partition's store: an LSM [`Db`] on [`StreamFiles`] in the
//! partition's namespace, with the table service's key layout.
//!
//! Every LSM key starts with `0x00` (the LSM's metadata prefix, which
//! compaction keeps verbatim, newest version per key) and a kind byte:
//! - `r` + row key: the row (JSON of [`RowVal`]);
//! - `c` + partition key: the auto-increment counter (8 bytes, LE);
//! - `a` + partition key + `0x00` + value (8 bytes, BE): the row the
//!   auto-increment appended;
//! - `d` + client (BE) + seq (BE): a de-duplication record (order, result).
//!
//! A record is kept until its request expired (the client's deadline,
//! carried by every attempt) [`DEDUPE_RETAIN_MS`] ago on the owner's clock,
//! and an attempt that arrives once its request expired is refused without
//! effect: so every attempt that is applied finds the record of any earlier
//! one, however long it was held up on its way (in a proxy's queue, or
//! behind a failover). Records are removed oldest first, only once
//! expired, a few per write; a write that would need one more record than
//! [`DEDUPE_MAX`] while none has expired is refused busy.
//!
//! Writes proceed together, as the seed's implicit transactions do: plain
//! writes (put, delete) hold the partition's write lock shared only while
//! they hand their batch to the engine, and then wait for its group commit
//! together (many writes in one log sync); conditional writes and
//! auto-increment appends hold it exclusively from their check of the
//! current state until their batch is handed over, so no write slips
//! between a check and the write it decided. The engine's log is one
//! order, acknowledged as a prefix: a write decided on another that is not
//! yet durable is acknowledged only after it. Each write batch holds the
//! row change, the counter, and the request id's record with its outcome
//! (and the deletion of expired records). A
//! retry of a write whose record exists gets the recorded outcome without
//! being applied again, also on a new owner after a failover, since the
//! record is in the same batch as the write; a retry that arrives while
//! the first attempt is still on its way to the log waits for it.
//!
//! Writes to a hot key may be combined ([`PartStore::apply_combined`],
//! when the table server's recognizer calls the key hot): the first plain
//! put of the key opens a batch that waits a combining period, the puts of
//! that key that arrive meanwhile join it (up to a cap), and the batch goes
//! to the engine as one write: the row as the last of them left it, and
//! every member's request record. Every member is answered only once that
//! write is durable, with its outcome; none is cached anywhere else. The
//! members are ordered by arrival, each overwriting the one before, so a
//! reader sees the row before the batch or after it, never between.
//!
//! A conditional write whose condition fails is recorded too (a batch with
//! only its record), before the failure is answered: an earlier attempt of
//! the same request that is still on its way (queued behind the partition's
//! write lock, or in a proxy) must get that failure, not find the condition
//! true later and apply a write its client was told had failed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sim::time;

use crate::lsm::db::{ClockFn, Db, GcPolicy, Options};
use crate::lsm::{keys, recovery, Dir};
use crate::stream::client::StreamClient;
use crate::stream::files::StreamFiles;

use super::*;

pub const KIND_ROW: u8 = b'r';
pub const KIND_COUNTER: u8 = b'c';
pub const KIND_APPENDED: u8 = b'a';
pub const KIND_DEDUPE: u8 = b'd';
/// Entries one copy batch (split, merge) writes at once.
pub const COPY_BATCH_MAX: usize = 128;
/// Entries one partition may hold for a split or merge copy.
pub const COPY_ENTRIES_MAX: usize = 1_000_000;

/// A stored row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowVal {
    pub value: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, String>,
}

fn key(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(body.len() + 2);
    k.push(keys::META);
    k.push(kind);
    k.extend_from_slice(body);
    k
}

fn dedupe_key(r: ReqId) -> Vec<u8> {
    let mut b = r.client.to_be_bytes().to_vec();
    b.extend_from_slice(&r.seq.to_be_bytes());
    key(KIND_DEDUPE, &b)
}

fn appended_key(pkey: &str, seq: u64) -> Vec<u8> {
    let mut b = pkey.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&seq.to_be_bytes());
    key(KIND_APPENDED, &b)
}

/// The key an LSM entry belongs to for range splits (`None`: it goes to
/// every child, like de-duplication records).
pub fn routing_key(k: &[u8]) -> Option<String> {
    if k.len() < 2 || k[0] != keys::META {
        return None;
    }
    let body = &k[2..];
    let user = match k[1] {
        KIND_ROW | KIND_COUNTER => body,
        KIND_APPENDED => &body[..body.iter().position(|&b| b == 0).unwrap_or(body.len())],
        _ => return None,
    };
    String::from_utf8(user.to_vec()).ok()
}

/// Most bytes of a partition's memtable ([`PartMemory::memtable_bytes`]).
pub const PART_MEMTABLE_BYTES_MAX: usize = crate::lsm::memtable::MEMTABLE_BYTES_MAX;
/// Fewest bytes of a partition's memtable: a few rows.
pub const PART_MEMTABLE_BYTES_MIN: usize = 4 << 10;
/// Most bytes of a partition's block cache.
pub const PART_BLOCK_CACHE_BYTES_MAX: usize = crate::lsm::block_cache::BLOCK_CACHE_BYTES_MAX;

/// The memory a table server gives each partition it loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartMemory {
    /// The memtable is flushed to a table at this size (within
    /// [`PART_MEMTABLE_BYTES_MIN`]..=[`PART_MEMTABLE_BYTES_MAX`]).
    pub memtable_bytes: usize,
    /// Table blocks kept in memory (at most [`PART_BLOCK_CACHE_BYTES_MAX`];
    /// 0: every block read goes to the stream layer).
    pub block_cache_bytes: usize,
}

impl Default for PartMemory {
    /// Small memtables, so that data reaches tables and a load replays
    /// little WAL.
    fn default() -> PartMemory {
        PartMemory { memtable_bytes: 256 << 10, block_cache_bytes: 1 << 20 }
    }
}

/// The LSM options of a partition with memory `m`.
pub fn options(m: PartMemory) -> Options {
    assert!((PART_MEMTABLE_BYTES_MIN..=PART_MEMTABLE_BYTES_MAX).contains(&m.memtable_bytes), "memtable of {} bytes", m.memtable_bytes);
    assert!(m.block_cache_bytes <= PART_BLOCK_CACHE_BYTES_MAX, "block cache of {} bytes", m.block_cache_bytes);
    Options { memtable_bytes: m.memtable_bytes, table_bytes: 256 << 10, block_cache_bytes: m.block_cache_bytes, ..Options::default() }
}

fn gc() -> GcPolicy {
    GcPolicy { ttl_ms: None, max_versions: 1 }
}

/// What a request id's record holds: the write's result, or the failure
/// of its condition.
type Outcome = Result<OpResult, TableError>;

/// A de-duplication record as stored: (order, outcome, the request's
/// expiry in milliseconds).
type Record = (u64, Outcome, u64);

struct Dedupe {
    /// rid -> (order, outcome)
    by_rid: BTreeMap<ReqId, (u64, Outcome)>,
    /// order -> (rid, the request's expiry)
    by_order: BTreeMap<u64, (ReqId, u64)>,
    next_order: u64,
    /// Most records kept ([`DEDUPE_MAX`]; lower in tests).
    limit: usize,
    /// Request ids being written now: a second attempt waits on this.
    inflight: BTreeMap<ReqId, Arc<tokio::sync::Notify>>,
}

impl Default for Dedupe {
    fn default() -> Dedupe {
        Dedupe { by_rid: BTreeMap::new(), by_order: BTreeMap::new(), next_order: 0, limit: DEDUPE_MAX, inflight: BTreeMap::new() }
    }
}

/// Records a partition loads at most: two merged parents' records, each
/// up to [`DEDUPE_MAX`] and those of the writes in flight beyond it.
pub const DEDUPE_LOAD_MAX: usize = DEDUPE_MAX * 4;

/// How a hot key's writes are combined (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Combine {
    /// How long the first put of a batch waits for others.
    pub period: std::time::Duration,
    /// Most puts in one batch.
    pub max: usize,
    /// A planted bug: a put that joins a batch is answered at once.
    pub early_ack: bool,
}

/// One put waiting in a combined batch.
struct Member {
    value: String,
    columns: BTreeMap<String, String>,
    rid: Option<ReqId>,
    expires_ms: u64,
}

/// A combined batch of one key: its members, and its outcome once written.
struct Group {
    members: std::sync::Mutex<Vec<Member>>,
    outcome: std::sync::Mutex<Option<Outcome>>,
    /// Wakes the members once `outcome` is set, in the order they began
    /// waiting.
    done: tokio::sync::Notify,
}

/// Open batches per row key.
type Combining = Arc<std::sync::Mutex<BTreeMap<String, Arc<Group>>>>;

/// A loaded partition. Cheap to clone.
#[derive(Clone)]
pub struct PartStore {
    /// Open combined batches (see the module doc).
    combining: Combining,
    db: Db<StreamFiles>,
    files: StreamFiles,
    dedupe: Arc<std::sync::Mutex<Dedupe>>,
    /// Shared by plain writes, exclusive for conditional writes and
    /// appends (see the module doc).
    writes: Arc<tokio::sync::RwLock<()>>,
    observer: Option<TableObserver>,
    /// The owner's clock in milliseconds (requests' expiry).
    clock: ClockFn,
}

/// What a write the engine refused to take (nothing written) answers. An
/// engine that stopped (the partition was unloaded while the write waited
/// for its locks, or its log failed) serves the partition no more: the
/// proxy retries at the owner. Any other refusal is final.
fn not_written(pid: PartitionId, e: crate::lsm::Error) -> TableError {
    match e {
        crate::lsm::Error::Stopped(_) => TableError::NotServingHere(pid),
        e => TableError::Failed(format!("not written: {e}")),
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> TableError {
    TableError::Failed(format!("{what}: {e}"))
}

impl PartStore {
    /// Takes ownership of the partition's namespace (fencing the previous
    /// owner) and recovers its LSM.
    pub async fn open(client: &StreamClient, pid: PartitionId, memory: PartMemory, clock: ClockFn, observer: Option<TableObserver>) -> Result<PartStore, String> {
        let files = StreamFiles::open(client, &namespace_of(pid)).await.map_err(|e| format!("open namespace: {e}"))?;
        let (db, _) = recovery::open(files.clone(), options(memory), gc(), clock.clone()).await.map_err(|e| format!("recover: {e}"))?;
        let store = PartStore { combining: Arc::default(), db, files, dedupe: Arc::default(), writes: Arc::default(), observer, clock };
        // Load the de-duplication table.
        let recs = store.range(&key(KIND_DEDUPE, &[]), Some(&key(KIND_DEDUPE + 1, &[])), DEDUPE_LOAD_MAX).await.map_err(|e| format!("load dedupe: {e}"))?;
        {
            let mut d = store.dedupe.lock().expect("dedupe lock");
            for (k, v) in recs {
                let body = &k[2..];
                let (Ok(c), Ok(s)) = (<[u8; 8]>::try_from(&body[..8.min(body.len())]), <[u8; 8]>::try_from(&body[8.min(body.len())..])) else {
                    return Err("malformed de-duplication key".into());
                };
                let rid = ReqId { client: u64::from_be_bytes(c), seq: u64::from_be_bytes(s) };
                let (order, result, expires): Record = decode(&v).ok_or("malformed de-duplication record")?;
                d.by_rid.insert(rid, (order, result));
                d.by_order.insert(order, (rid, expires));
                d.next_order = d.next_order.max(order + 1);
            }
        }
        Ok(store)
    }

    /// Creates partition `pid` from `entries` (a split or merge child):
    /// writes them in batches and flushes them to tables.
    /// The de-duplication records are kept in their parents' order, but for
    /// those whose retention (see the module doc) is over.
    pub async fn create(client: &StreamClient, pid: PartitionId, memory: PartMemory, clock: ClockFn, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        let (mut dedupe, mut entries): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| k.starts_with(&key(KIND_DEDUPE, &[])));
        let now = clock();
        let mut recs = Vec::with_capacity(dedupe.len());
        for (k, v) in dedupe.drain(..) {
            let (order, result, expires): Record = decode(&v).ok_or("malformed de-duplication record")?;
            if expires.saturating_add(DEDUPE_RETAIN_MS) > now {
                recs.push((order, k, result, expires));
            }
        }
        if recs.len() > DEDUPE_LOAD_MAX {
            return Err(format!("{} de-duplication records over {DEDUPE_LOAD_MAX}", recs.len()));
        }
        recs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        for (i, (_, k, result, expires)) in recs.into_iter().enumerate() {
            // Renumbered oldest first, so the child evicts in the same order.
            entries.push((k, encode(&(i as u64, result, expires))));
        }
        entries.sort();
        let files = StreamFiles::open(client, &namespace_of(pid)).await.map_err(|e| format!("open namespace: {e}"))?;
        let (db, _) = recovery::open(files.clone(), options(memory), gc(), clock.clone()).await.map_err(|e| format!("recover: {e}"))?;
        let r = async {
            // An interrupted earlier attempt may have left entries behind:
            // whatever the new set does not hold is deleted, so nothing the
            // parent deleted in between comes back.
            let old = PartStore { combining: Arc::default(), db: db.clone(), files, dedupe: Arc::default(), writes: Arc::default(), observer: None, clock: clock.clone() };
            let stale: Vec<Vec<u8>> = old.entries().await.map_err(|e| e.to_string())?.into_iter().map(|(k, _)| k).filter(|k| entries.binary_search_by(|(e, _)| e.cmp(k)).is_err()).collect();
            let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = stale.into_iter().map(|k| (k, None)).collect();
            batch.extend(entries.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
            for chunk in batch.chunks(COPY_BATCH_MAX) {
                let g = db.lock_writes().await;
                let t = db.submit(&g, chunk.to_vec()).await.map_err(|e| e.to_string())?;
                drop(g);
                t.wait().await.map_err(|e| e.to_string())?;
            }
            db.settle().await.map_err(|e| e.to_string())
        }
        .await;
        db.kill();
        r
    }

    pub fn epoch(&self) -> u64 {
        self.files.namespace().epoch()
    }

    /// Whether a newer owner fenced this one, or the engine stopped.
    pub fn broken(&self) -> bool {
        self.files.namespace().is_deposed() || self.db.stopped().is_some()
    }

    pub fn kill(&self) {
        self.db.kill();
    }

    /// Every live entry (for a split or merge copy).
    pub async fn entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TableError> {
        self.range(&[keys::META], Some(&[keys::META + 1]), COPY_ENTRIES_MAX).await
    }

    async fn range(&self, lo: &[u8], hi: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TableError> {
        let snap = self.db.snapshot(false);
        let mut c = self.db.cursor(&snap, lo, hi, Dir::Forward, None);
        let mut out = Vec::new();
        while let Some(e) = self.db.next(&mut c).await.map_err(|e| internal("read", e))? {
            if let Some(v) = e.value {
                if out.len() >= limit {
                    return Err(TableError::Failed(format!("more than {limit} entries")));
                }
                out.push((e.key, v));
            }
        }
        Ok(out)
    }

    async fn point(&self, k: &[u8], latest: bool) -> Result<Option<Vec<u8>>, TableError> {
        let snap = self.db.snapshot(latest);
        let hi = keys::prefix_end(k);
        let mut c = self.db.cursor(&snap, k, hi.as_deref(), Dir::Forward, Some(k));
        while let Some(e) = self.db.next(&mut c).await.map_err(|e| internal("read", e))? {
            if e.key == k {
                return Ok(e.value);
            }
            if e.key.as_slice() > k {
                break;
            }
        }
        Ok(None)
    }

    async fn row(&self, k: &str, latest: bool) -> Result<Option<RowVal>, TableError> {
        match self.point(&key(KIND_ROW, k.as_bytes()), latest).await? {
            None => Ok(None),
            Some(b) => decode(&b).map(Some).ok_or_else(|| TableError::Failed(format!("malformed row {k}"))),
        }
    }

    /// Runs one operation on this partition (`info` is its range), unless
    /// its request expired (`expires_ms`, on this owner's clock): a write
    /// attempt that finds its request's record gets the recorded outcome
    /// even then.
    pub async fn apply(&self, info: &PartitionInfo, op: &Op, rid: Option<ReqId>, expires_ms: u64) -> Result<OpResult, TableError> {
        if !op.is_write() {
            if let Some(e) = expired((self.clock)(), expires_ms) {
                return Err(e);
            }
        }
        match op {
            Op::Get { key, .. } => Ok(OpResult::Value(self.row(key, false).await?.map(|r| r.value))),
            Op::GetRow { key, .. } => Ok(OpResult::Row(self.row(key, false).await?)),
            Op::Scan { start, end, limit, .. } => {
                let lo = start.as_str().max(info.start.as_str());
                let (hi, partial_end) = match &info.end {
                    Some(pe) if pe.as_str() < end.as_str() => (pe.as_str(), Some(pe.clone())),
                    _ => (end.as_str(), None),
                };
                let mut rows = Vec::new();
                if lo < hi {
                    let got = self.range(&key(KIND_ROW, lo.as_bytes()), Some(&key(KIND_ROW, hi.as_bytes())), usize::MAX).await?;
                    for (k, v) in got.into_iter().take(*limit as usize) {
                        let r: RowVal = decode(&v).ok_or_else(|| TableError::Failed("malformed row".into()))?;
                        rows.push((String::from_utf8_lossy(&k[2..]).into_owned(), r.value));
                    }
                }
                let partial_end = if rows.len() < *limit as usize { partial_end } else { None };
                Ok(OpResult::Rows { rows, partial_end })
            }
            _ => self.write(info.pid, op, rid, expires_ms, None).await,
        }
    }

    /// [`PartStore::apply`], but a put joins its key's combined batch (see
    /// the module doc).
    pub async fn apply_combined(&self, info: &PartitionInfo, op: &Op, rid: Option<ReqId>, expires_ms: u64, combine: Combine) -> Result<OpResult, TableError> {
        match op {
            Op::Put { .. } => self.write(info.pid, op, rid, expires_ms, Some(combine)).await,
            _ => self.apply(info, op, rid, expires_ms).await,
        }
    }

    async fn write(&self, pid: PartitionId, op: &Op, rid: Option<ReqId>, expires_ms: u64, combine: Option<Combine>) -> Result<OpResult, TableError> {
        if let Some(r) = rid {
            // The recorded outcome, or wait for an attempt in flight.
            loop {
                let wait = {
                    let mut d = self.dedupe.lock().expect("dedupe lock");
                    if let Some((_, res)) = d.by_rid.get(&r) {
                        let res = res.clone();
                        drop(d);
                        if let Some(o) = &self.observer {
                            o.with(|o| o.dedupe_hits += 1);
                        }
                        return res;
                    }
                    match d.inflight.get(&r) {
                        Some(n) => n.clone(),
                        None => {
                            // No record, none in flight: an expired request
                            // may have had its record removed.
                            if let Some(e) = expired((self.clock)(), expires_ms) {
                                return Err(e);
                            }
                            d.inflight.insert(r, Arc::new(tokio::sync::Notify::new()));
                            break;
                        }
                    }
                };
                let notified = wait.notified();
                // The attempt may have finished between the lookup and now.
                if self.dedupe.lock().expect("dedupe lock").inflight.get(&r).is_some_and(|n| Arc::ptr_eq(n, &wait)) {
                    notified.await;
                }
            }
        } else if let Some(e) = expired((self.clock)(), expires_ms) {
            return Err(e);
        }
        let r = match (op, combine) {
            (Op::Put { key, value, columns, .. }, Some(c)) => {
                let m = Member { value: value.clone(), columns: columns.clone(), rid, expires_ms };
                self.write_combined(pid, key, m, c).await
            }
            _ => self.write_once(pid, op, rid, expires_ms).await,
        };
        if let Some(rid) = rid {
            let mut d = self.dedupe.lock().expect("dedupe lock");
            if let Some(n) = d.inflight.remove(&rid) {
                n.notify_waiters();
            }
        }
        r
    }

    async fn write_once(&self, pid: PartitionId, op: &Op, rid: Option<ReqId>, expires_ms: u64) -> Result<OpResult, TableError> {
        let exclusive = matches!(op, Op::Cas { .. } | Op::Append { .. });
        let (_shared, _exclusive) = if exclusive { (None, Some(self.writes.write().await)) } else { (Some(self.writes.read().await), None) };
        // A write handed over before may have stopped the engine with an
        // unknown outcome (its log write failed): its entries may sit in
        // the memtable without their request's de-duplication record, so a
        // retry of it judged here would fail on its own value. The next owner
        // recovers the truth from the log.
        if self.broken() {
            return Err(TableError::NotServingHere(pid));
        }
        let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let result: Outcome = match op {
            Op::Put { key: k, value, columns, .. } => {
                batch.push((key(KIND_ROW, k.as_bytes()), Some(encode(&RowVal { value: value.clone(), columns: columns.clone() }))));
                Ok(OpResult::Done)
            }
            Op::Cas { key: k, expected, value, .. } => {
                let cur = self.row(k, true).await?.map(|r| r.value);
                if cur != *expected {
                    Err(TableError::ConditionFailed(cur))
                } else {
                    batch.push((key(KIND_ROW, k.as_bytes()), Some(encode(&RowVal { value: value.clone(), columns: BTreeMap::new() }))));
                    Ok(OpResult::Done)
                }
            }
            Op::Delete { key: k, .. } => {
                batch.push((key(KIND_ROW, k.as_bytes()), None));
                Ok(OpResult::Done)
            }
            Op::Append { pkey, .. } => {
                let ck = key(KIND_COUNTER, pkey.as_bytes());
                let cur = match self.point(&ck, true).await? {
                    None => 0,
                    Some(b) => u64::from_le_bytes(b.as_slice().try_into().map_err(|_| TableError::Failed("malformed counter".into()))?),
                };
                let next = cur + 1;
                batch.push((ck, Some(next.to_le_bytes().to_vec())));
                batch.push((appended_key(pkey, next), Some(encode(&RowVal { value: next.to_string(), columns: BTreeMap::new() }))));
                Ok(OpResult::Seq(next))
            }
            Op::Get { .. } | Op::Scan { .. } | Op::GetRow { .. } => unreachable!("reads are not writes"),
        };
        if batch.is_empty() && rid.is_none() {
            return result;
        }
        // The record's order and the removal of expired records are taken
        // now, so that writes in flight together never share them.
        let mut order = 0;
        if let Some(r) = rid {
            order = self.take_record(pid, r, &result, expires_ms, &mut batch)?;
        }
        let g = self.db.lock_writes().await;
        let ticket = self.db.submit(&g, batch).await.map_err(|e| not_written(pid, e))?;
        drop(g);
        // Handed over: the next write may decide on this one (it is
        // acknowledged only after it, the log being one order).
        drop((_shared, _exclusive));
        // From here the batch may be durable: a failure is an unknown outcome.
        ticket.wait().await.map_err(|e| TableError::Unknown(format!("write: {e}")))?;
        if let Some(r) = rid {
            let mut d = self.dedupe.lock().expect("dedupe lock");
            d.by_rid.insert(r, (order, result.clone()));
            d.by_order.insert(order, (r, expires_ms));
        }
        result
    }

    /// Takes request `r`'s record (its order, with `result`) into `batch`,
    /// with the removal of a few expired records; refuses busy when the
    /// table is full of records still retained.
    fn take_record(&self, pid: PartitionId, r: ReqId, result: &Outcome, expires_ms: u64, batch: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<u64, TableError> {
        let now = (self.clock)();
        let mut d = self.dedupe.lock().expect("dedupe lock");
        let retained_until = |d: &Dedupe| d.by_order.first_key_value().map(|(_, (_, exp))| exp.saturating_add(DEDUPE_RETAIN_MS));
        if d.by_rid.len() >= d.limit {
            if let Some(until) = retained_until(&d).filter(|u| *u > now) {
                return Err(TableError::Busy { resource: format!("partition {pid} request-id records"), retry_after_us: (until - now).saturating_mul(1000) });
            }
        }
        for _ in 0..DEDUPE_EVICT_PER_WRITE {
            if retained_until(&d).is_none_or(|u| u > now) {
                break;
            }
            let (_, (old, _)) = d.by_order.pop_first().expect("a first record");
            d.by_rid.remove(&old);
            batch.push((dedupe_key(old), None));
        }
        let order = d.next_order;
        d.next_order += 1;
        let rec: Record = (order, result.clone(), expires_ms);
        batch.push((dedupe_key(r), Some(encode(&rec))));
        Ok(order)
    }

    /// A put of hot key `k` in its key's combined batch: the first opens
    /// the batch, waits `c.period` and writes it; the others wait for its
    /// outcome, which is theirs.
    async fn write_combined(&self, pid: PartitionId, k: &str, m: Member, c: Combine) -> Outcome {
        let (group, leader) = {
            let mut open = self.combining.lock().expect("combining lock");
            match open.get(k) {
                Some(g) if g.members.lock().expect("members lock").len() < c.max => {
                    g.members.lock().expect("members lock").push(m);
                    (g.clone(), false)
                }
                _ => {
                    let g = Arc::new(Group { members: std::sync::Mutex::new(vec![m]), outcome: std::sync::Mutex::new(None), done: tokio::sync::Notify::new() });
                    open.insert(k.to_string(), g.clone());
                    (g, true)
                }
            }
        };
        if !leader {
            if c.early_ack {
                return Ok(OpResult::Done);
            }
            loop {
                // Registered before the look, so the leader's wake-up is not
                // missed between the two.
                let woken = group.done.notified();
                if let Some(r) = group.outcome.lock().expect("outcome lock").clone() {
                    return r;
                }
                woken.await;
            }
        }
        time::sleep(c.period).await;
        {
            // No member joins once the batch is out of the map.
            let mut open = self.combining.lock().expect("combining lock");
            if open.get(k).is_some_and(|g| Arc::ptr_eq(g, &group)) {
                open.remove(k);
            }
        }
        let members = std::mem::take(&mut *group.members.lock().expect("members lock"));
        let r = self.write_batch(pid, k, &members).await;
        *group.outcome.lock().expect("outcome lock") = Some(r.clone());
        group.done.notify_waiters();
        r
    }

    /// A combined batch to the engine as one write.
    async fn write_batch(&self, pid: PartitionId, k: &str, members: &[Member]) -> Outcome {
        let _shared = self.writes.read().await;
        if self.broken() {
            return Err(TableError::NotServingHere(pid));
        }
        let last = members.last().expect("a batch holds its first put");
        let mut batch = vec![(key(KIND_ROW, k.as_bytes()), Some(encode(&RowVal { value: last.value.clone(), columns: last.columns.clone() })))];
        let result: Outcome = Ok(OpResult::Done);
        let mut records = Vec::new();
        for m in members {
            if let Some(r) = m.rid {
                records.push((r, self.take_record(pid, r, &result, m.expires_ms, &mut batch)?, m.expires_ms));
            }
        }
        let g = self.db.lock_writes().await;
        let ticket = self.db.submit(&g, batch).await.map_err(|e| not_written(pid, e))?;
        drop(g);
        drop(_shared);
        ticket.wait().await.map_err(|e| TableError::Unknown(format!("write: {e}")))?;
        {
            let mut d = self.dedupe.lock().expect("dedupe lock");
            for (r, order, expires_ms) in records {
                d.by_rid.insert(r, (order, result.clone()));
                d.by_order.insert(order, (r, expires_ms));
            }
        }
        if let Some(o) = &self.observer {
            o.with(|o| {
                if o.combined_batches.len() < OBSERVER_SAMPLES_MAX {
                    o.combined_batches.push(members.len() as u32);
                }
                TableObserverData::count_per_second(&mut o.hot_key_writes, k.to_string(), time::now(), 1);
            });
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Duration;

    use sim::disk::DiskConfig;
    use sim::topology::{LinkParams, Topology, ZoneId};
    use sim::world::World;

    use crate::stream::StreamConfig;

    const PID: PartitionId = 1;

    /// Runs `story` with a stream client, in a world of three zones with a
    /// meta replica and three storage nodes each.
    fn with_streams<F: Future<Output = ()> + Send + 'static>(story: impl FnOnce(StreamClient) -> F + Send + 'static) {
        #[allow(clippy::disallowed_methods)] // the harness's runtime thread, outside the simulation
        let h = std::thread::spawn(move || {
            madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default()).block_on(async move {
                let link = LinkParams { latency: Duration::from_micros(100), jitter: Duration::ZERO, loss: 0.0 };
                let mut topo = Topology::new(&["az1".into(), "az2".into(), "az3".into()], link, link);
                let (mut metas, mut storage) = (Vec::new(), Vec::new());
                for z in 0..3 {
                    metas.push(topo.add_node(ZoneId(z), "meta"));
                    for _ in 0..3 {
                        storage.push(topo.add_node(ZoneId(z), "storage"));
                    }
                }
                let driver = topo.add_node(ZoneId(0), "driver");
                let world = World::new(1, topo, DiskConfig::default(), false);
                let cfg = StreamConfig::new(metas.clone(), storage.clone());
                for r in metas {
                    let c = cfg.meta.clone();
                    world.start_node(r, move |ctx| crate::meta::service::serve(ctx, c.clone()));
                }
                for s in storage {
                    let c = cfg.clone();
                    world.start_node(s, move |ctx| crate::stream::replica::serve_storage(ctx, c.clone()));
                }
                let (tx, rx) = tokio::sync::oneshot::channel();
                let job = std::sync::Mutex::new(Some((story, tx)));
                world.start_node(driver, move |ctx| {
                    let (job, cfg) = (job.lock().expect("job lock").take(), cfg.clone());
                    async move {
                        let Some((story, tx)) = job else { return };
                        // Let the metadata store elect a leader.
                        sim::time::sleep(Duration::from_millis(500)).await;
                        let client = StreamClient::bind(&ctx, cfg).await;
                        sim::time::timeout(Duration::from_secs(600), story(client)).await.expect("the story finishes within 600 s of model time");
                        let _ = tx.send(());
                    }
                });
                rx.await.expect("the story finished");
            })
        });
        if let Err(p) = h.join() {
            std::panic::resume_unwind(p);
        }
    }

    /// An expiry no test reaches.
    const FAR: u64 = u64::MAX;

    fn clock() -> ClockFn {
        Arc::new(|| 0)
    }

    /// A clock the test sets (milliseconds).
    fn set_clock(ms: &Arc<std::sync::atomic::AtomicU64>) -> ClockFn {
        let ms = ms.clone();
        Arc::new(move || ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn open(client: &StreamClient, pid: PartitionId) -> PartStore {
        PartStore::open(client, pid, PartMemory::default(), clock(), None).await.expect("open")
    }

    async fn open_at(client: &StreamClient, pid: PartitionId, clock: ClockFn) -> PartStore {
        PartStore::open(client, pid, PartMemory::default(), clock, None).await.expect("open")
    }

    fn value_put(k: &str, v: &str) -> Op {
        Op::Put { table: "t".into(), key: k.into(), value: v.into(), columns: BTreeMap::new() }
    }

    fn get(k: &str) -> Op {
        Op::Get { table: "t".into(), key: k.into() }
    }

    fn info(pid: PartitionId) -> PartitionInfo {
        PartitionInfo { pid, instance: "i".into(), table: "t".into(), start: String::new(), end: None, owner: None, epoch: 1 }
    }

    fn put(k: &str) -> Op {
        Op::Put { table: "t".into(), key: k.into(), value: "v".into(), columns: BTreeMap::new() }
    }

    fn append(pkey: &str) -> Op {
        Op::Append { table: "t".into(), pkey: pkey.into() }
    }

    fn rid(client: u64, seq: u64) -> ReqId {
        ReqId { client, seq }
    }

    /// A parent's de-duplication record of `r`, with its `order` and its
    /// request's expiry.
    fn record(r: ReqId, order: u64, outcome: Outcome, expires: u64) -> (Vec<u8>, Vec<u8>) {
        let rec: Record = (order, outcome, expires);
        (dedupe_key(r), encode(&rec))
    }

    /// Puts with request ids `client`/0..`n`, all in flight together.
    async fn puts(store: &PartStore, client: u64, n: u64) -> Vec<Result<OpResult, TableError>> {
        let writes: Vec<_> = (0..n).map(|i| async move { store.apply(&info(PID), &put("k"), Some(rid(client, i)), FAR).await }).collect();
        crate::join::join_all(writes).await
    }

    fn records(store: &PartStore) -> usize {
        store.dedupe.lock().expect("dedupe lock").by_rid.len()
    }

    /// Puts of one key in flight together are combined: at most `max` to a
    /// batch, each batch one engine write holding the row as its last put
    /// left it and every put's record; every put is answered after its
    /// batch is durable, and a retry (on a new owner too) gets its record.
    #[test]
    fn combined_puts_are_written_in_capped_batches_and_each_is_recorded() {
        with_streams(|client| async move {
            let obs = TableObserver::new();
            let s1 = PartStore::open(&client, PID, PartMemory::default(), clock(), Some(obs.clone())).await.expect("open");
            let c = Combine { period: std::time::Duration::from_micros(500), max: 100, early_ack: false };
            let writes: Vec<_> = (0..250u64).map(|i| {
                let s1 = s1.clone();
                async move { s1.apply_combined(&info(PID), &value_put("k", &format!("v{i}")), Some(rid(1, i)), FAR, c).await }
            }).collect();
            let answers = crate::join::join_all(writes).await;
            assert!(answers.iter().all(|a| *a == Ok(OpResult::Done)), "{answers:?}");
            assert_eq!(obs.snapshot().combined_batches, vec![100, 100, 50]);
            assert_eq!(s1.apply(&info(PID), &get("k"), None, FAR).await, Ok(OpResult::Value(Some("v249".into()))));
            assert_eq!(records(&s1), 250);
            // A new owner finds the last value and every record.
            let s2 = open(&client, PID).await;
            assert_eq!(s2.apply(&info(PID), &get("k"), None, FAR).await, Ok(OpResult::Value(Some("v249".into()))));
            assert_eq!(records(&s2), 250);
            assert_eq!(s2.apply_combined(&info(PID), &value_put("k", "v7"), Some(rid(1, 7)), FAR, c).await, Ok(OpResult::Done), "recorded");
            assert_eq!(s2.apply(&info(PID), &get("k"), None, FAR).await, Ok(OpResult::Value(Some("v249".into()))), "a retry is not applied again");
            // Other operations are not combined.
            assert_eq!(s2.apply_combined(&info(PID), &append("p"), Some(rid(2, 1)), FAR, c).await, Ok(OpResult::Seq(1)));
        });
    }

    /// A retry after the partition was opened again (by a new owner) gets
    /// the outcome its first attempt recorded, not a second application.
    #[test]
    fn a_retry_after_a_reopen_gets_the_recorded_outcome() {
        with_streams(|client| async move {
            let s1 = open(&client, PID).await;
            assert_eq!(s1.apply(&info(PID), &append("p"), Some(rid(1, 1)), FAR).await, Ok(OpResult::Seq(1)));
            let s2 = open(&client, PID).await;
            assert_eq!(s2.apply(&info(PID), &append("p"), Some(rid(1, 1)), FAR).await, Ok(OpResult::Seq(1)), "recorded");
            assert_eq!(s2.apply(&info(PID), &append("p"), Some(rid(1, 2)), FAR).await, Ok(OpResult::Seq(2)), "a new request");
        });
    }

    /// Every open of a partition takes a newer epoch than the one before,
    /// and fences the store of the one before: it is broken once it notices.
    #[test]
    fn each_open_takes_a_newer_epoch_and_breaks_the_older_store() {
        with_streams(|client| async move {
            let s1 = open(&client, PID).await;
            let s2 = open(&client, PID).await;
            assert!(s2.epoch() > s1.epoch(), "epochs {} then {}", s1.epoch(), s2.epoch());
            assert!(s1.apply(&info(PID), &put("k"), None, FAR).await.is_err(), "the fenced store cannot write");
            assert!(s1.broken());
            assert!(!s2.broken());
            assert_eq!(s2.apply(&info(PID), &put("k"), None, FAR).await, Ok(OpResult::Done));
        });
    }

    /// A killed store is broken and refuses writes as not serving here.
    #[test]
    fn a_killed_store_is_broken_and_refuses_writes() {
        with_streams(|client| async move {
            let s = open(&client, PID).await;
            assert!(!s.broken());
            assert_eq!(s.apply(&info(PID), &put("k"), None, FAR).await, Ok(OpResult::Done));
            s.kill();
            assert!(s.broken());
            assert_eq!(s.apply(&info(PID), &put("k"), None, FAR).await, Err(TableError::NotServingHere(PID)));
        });
    }

    /// A write the engine refused before taking it was not written: an
    /// engine that stopped (killed as the partition was unloaded while the
    /// write waited for its locks, or fail-stopped) sends it to the owner
    /// as not served here; any other refusal is final.
    #[test]
    fn a_write_refused_by_a_stopped_engine_is_not_served_here() {
        assert_eq!(not_written(7, crate::lsm::Error::Stopped("engine killed".into())), TableError::NotServingHere(7));
        let e = not_written(7, crate::lsm::Error::InvalidArgument("too big".into()));
        assert!(matches!(e, TableError::Failed(m) if m.contains("not written") && m.contains("too big")));
    }

    /// A split or merge child keeps its parents' records in their order,
    /// but for those whose retention is over: a retry of a kept one gets
    /// its recorded outcome, and the oldest kept is the first removed.
    #[test]
    fn a_created_child_keeps_its_parents_live_records_in_their_order() {
        with_streams(|client| async move {
            let ms = Arc::new(std::sync::atomic::AtomicU64::new(10_000));
            // Records 0..4 expired at 1,000 (retention over at 6,000); 4..8
            // expire at 9,000 + s (retained until 14,000 + s).
            let entries: Vec<_> = (0..8).map(|s| record(rid(7, s), 10 * (8 - s), Ok(OpResult::Seq(100 + s)), if s < 4 { 1_000 } else { 9_000 + s })).collect();
            PartStore::create(&client, PID, PartMemory::default(), set_clock(&ms), entries).await.expect("create");
            let s = open_at(&client, PID, set_clock(&ms)).await;
            assert_eq!(records(&s), 4, "the four whose retention is over are gone");
            assert_eq!(s.dedupe.lock().expect("dedupe lock").by_order.first_key_value().map(|(_, (r, _))| *r), Some(rid(7, 7)), "the parent's oldest first");
            assert_eq!(s.apply(&info(PID), &append("p"), Some(rid(7, 5)), 9_005).await, Ok(OpResult::Seq(105)), "recorded, though expired");
            assert!(matches!(s.apply(&info(PID), &append("p"), Some(rid(7, 1)), 1_000).await, Err(TableError::Expired { .. })));
            // 7 is the oldest, retained until 14,007: nothing newer goes
            // before it, though 4 to 6 are over at 14,006.
            ms.store(14_006, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(s.apply(&info(PID), &put("k"), Some(rid(8, 0)), FAR).await, Ok(OpResult::Done));
            assert_eq!(records(&s), 5);
            ms.store(14_007, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(s.apply(&info(PID), &put("k"), Some(rid(8, 1)), FAR).await, Ok(OpResult::Done));
            assert_eq!(records(&s), 2, "all four removed, oldest first");
        });
    }

    /// An attempt that arrives once its request expired is refused without
    /// effect; a read too.
    #[test]
    fn an_attempt_after_its_requests_expiry_is_refused_without_effect() {
        with_streams(|client| async move {
            let ms = Arc::new(std::sync::atomic::AtomicU64::new(100));
            let s = open_at(&client, PID, set_clock(&ms)).await;
            let r = s.apply(&info(PID), &value_put("k", "late"), Some(rid(1, 1)), 100).await;
            assert_eq!(r, Err(TableError::Expired { ago_ms: 0 }));
            assert_eq!(r.unwrap_err().to_string(), "failed: expired 0 ms ago", "worded as a failure in histories");
            assert_eq!(s.apply(&info(PID), &get("k"), None, 99).await, Err(TableError::Expired { ago_ms: 1 }));
            assert_eq!(s.apply(&info(PID), &get("k"), None, 101).await, Ok(OpResult::Value(None)), "nothing written");
            assert_eq!(records(&s), 0, "nor recorded");
        });
    }

    /// The failure this rule exists for: an attempt held up on its way
    /// until long after another attempt of the same write was applied and
    /// newer writes followed. Its record is kept while it could still be
    /// accepted, and once the record is removed the attempt is refused: it
    /// never overwrites the newer value.
    #[test]
    fn a_late_attempt_never_applies_its_write_a_second_time() {
        with_streams(|client| async move {
            let ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let s = open_at(&client, PID, set_clock(&ms)).await;
            let at = |t: u64| ms.store(t, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(s.apply(&info(PID), &value_put("k", "old"), Some(rid(1, 1)), 3_000).await, Ok(OpResult::Done));
            at(1_000);
            assert_eq!(s.apply(&info(PID), &value_put("k", "new"), Some(rid(2, 1)), 4_000).await, Ok(OpResult::Done));
            // Within its expiry: the record answers.
            at(2_999);
            assert_eq!(s.apply(&info(PID), &value_put("k", "old"), Some(rid(1, 1)), 3_000).await, Ok(OpResult::Done));
            // Past it, but retained: still the record.
            at(3_000 + DEDUPE_RETAIN_MS - 1);
            assert_eq!(s.apply(&info(PID), &value_put("k", "x"), Some(rid(3, 1)), FAR).await, Ok(OpResult::Done));
            assert!(s.dedupe.lock().expect("dedupe lock").by_rid.contains_key(&rid(1, 1)));
            assert_eq!(s.apply(&info(PID), &value_put("k", "y"), Some(rid(3, 2)), FAR).await, Ok(OpResult::Done));
            // Retention over: the next write removes it, and the late
            // attempt is refused.
            at(3_000 + DEDUPE_RETAIN_MS);
            assert_eq!(s.apply(&info(PID), &value_put("k", "newest"), Some(rid(3, 3)), FAR).await, Ok(OpResult::Done));
            assert!(!s.dedupe.lock().expect("dedupe lock").by_rid.contains_key(&rid(1, 1)));
            assert!(matches!(s.apply(&info(PID), &value_put("k", "old"), Some(rid(1, 1)), 3_000).await, Err(TableError::Expired { .. })));
            assert_eq!(s.apply(&info(PID), &get("k"), None, FAR).await, Ok(OpResult::Value(Some("newest".into()))));
            // A new owner that loaded the records refuses it the same way.
            let s2 = open_at(&client, PID, set_clock(&ms)).await;
            assert!(matches!(s2.apply(&info(PID), &value_put("k", "old"), Some(rid(1, 1)), 3_000).await, Err(TableError::Expired { .. })));
            assert_eq!(s2.apply(&info(PID), &get("k"), None, FAR).await, Ok(OpResult::Value(Some("newest".into()))));
        });
    }

    /// Records are removed oldest first and only once their retention is
    /// over, at most a few per write; while the records are full and none
    /// is over, a write is refused busy (nothing written) with a hint of
    /// when the oldest will be.
    #[test]
    fn full_records_refuse_writes_busy_until_the_oldest_retention_is_over() {
        with_streams(|client| async move {
            let ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let s = open_at(&client, PID, set_clock(&ms)).await;
            s.dedupe.lock().expect("dedupe lock").limit = 4;
            for i in 0..4 {
                assert_eq!(s.apply(&info(PID), &value_put("k", &format!("v{i}")), Some(rid(1, i)), 1_000 + i).await, Ok(OpResult::Done));
            }
            ms.store(2_000, std::sync::atomic::Ordering::Relaxed);
            let r = s.apply(&info(PID), &value_put("k", "refused"), Some(rid(2, 0)), FAR).await;
            assert_eq!(r, Err(TableError::Busy { resource: format!("partition {PID} request-id records"), retry_after_us: (1_000 + DEDUPE_RETAIN_MS - 2_000) * 1000 }));
            assert_eq!(s.apply(&info(PID), &get("k"), None, FAR).await, Ok(OpResult::Value(Some("v3".into()))), "nothing written");
            // Two records' retention over: the write removes both.
            ms.store(1_001 + DEDUPE_RETAIN_MS, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(s.apply(&info(PID), &value_put("k", "in"), Some(rid(2, 0)), 6_002).await, Ok(OpResult::Done));
            assert_eq!(records(&s), 3);
            let left: Vec<ReqId> = s.dedupe.lock().expect("dedupe lock").by_order.values().map(|(r, _)| *r).collect();
            assert_eq!(left, vec![rid(1, 2), rid(1, 3), rid(2, 0)]);
            // At most DEDUPE_EVICT_PER_WRITE per write.
            s.dedupe.lock().expect("dedupe lock").limit = DEDUPE_MAX;
            for i in 0..20 {
                assert_eq!(s.apply(&info(PID), &put("k"), Some(rid(3, i)), 7_000).await, Ok(OpResult::Done));
            }
            assert_eq!(records(&s), 23);
            ms.store(7_000 + DEDUPE_RETAIN_MS, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(s.apply(&info(PID), &put("k"), Some(rid(4, 0)), FAR).await, Ok(OpResult::Done));
            assert_eq!(records(&s), 23 + 1 - DEDUPE_EVICT_PER_WRITE);
        });
    }

    /// Writes in flight together may leave more records than the limit
    /// (each checks it when it is handed over); a reopen still loads every
    /// one of them.
    #[test]
    fn records_beyond_the_limit_from_concurrent_writes_load_on_reopen() {
        with_streams(|client| async move {
            let entries: Vec<_> = (0..7).map(|s| record(rid(7, s), s, Ok(OpResult::Seq(100 + s)), FAR)).collect();
            PartStore::create(&client, PID, PartMemory::default(), clock(), entries).await.expect("create");
            let s1 = open(&client, PID).await;
            s1.dedupe.lock().expect("dedupe lock").limit = 8;
            assert!(puts(&s1, 8, 16).await.into_iter().all(|r| r == Ok(OpResult::Done)));
            assert_eq!(records(&s1), 7 + 16);
            let s2 = open(&client, PID).await;
            assert_eq!(records(&s2), 7 + 16);
            assert_eq!(s2.apply(&info(PID), &append("p"), Some(rid(7, 0)), FAR).await, Ok(OpResult::Seq(100)), "the oldest is recorded");
        });
    }

    /// A whole-row read gets the row's value and columns, or none.
    #[test]
    fn a_row_read_gets_the_value_and_the_columns() {
        with_streams(|client| async move {
            let s = open(&client, PID).await;
            let columns: BTreeMap<String, String> = [("c".to_string(), "x".to_string())].into();
            let op = Op::Put { table: "t".into(), key: "k".into(), value: "v".into(), columns: columns.clone() };
            assert_eq!(s.apply(&info(PID), &op, None, FAR).await, Ok(OpResult::Done));
            let get_row = |k: &str| Op::GetRow { table: "t".into(), key: k.into() };
            assert_eq!(s.apply(&info(PID), &get_row("k"), None, FAR).await, Ok(OpResult::Row(Some(RowVal { value: "v".into(), columns }))));
            assert_eq!(s.apply(&info(PID), &get_row("j"), None, FAR).await, Ok(OpResult::Row(None)));
        });
    }

    /// A scan reads up to its partition's end, and names that end (where
    /// the caller goes on) only if the scan reaches past it and the page is
    /// not full.
    #[test]
    fn a_scan_names_its_partitions_end_only_if_it_reaches_past_it_with_room_left() {
        with_streams(|client| async move {
            let s = open(&client, PID).await;
            let part = PartitionInfo { end: Some("m".into()), ..info(PID) };
            for k in ["a", "b", "c"] {
                assert_eq!(s.apply(&part, &put(k), None, FAR).await, Ok(OpResult::Done));
            }
            let scan = |start: &str, end: &str, limit: u32| Op::Scan { table: "t".into(), start: start.into(), end: end.into(), limit };
            let rows = |ks: &[&str]| ks.iter().map(|k| (k.to_string(), "v".to_string())).collect::<Vec<_>>();
            assert_eq!(s.apply(&part, &scan("a", "z", 10), None, FAR).await, Ok(OpResult::Rows { rows: rows(&["a", "b", "c"]), partial_end: Some("m".into()) }), "past the end");
            assert_eq!(s.apply(&part, &scan("a", "c", 10), None, FAR).await, Ok(OpResult::Rows { rows: rows(&["a", "b"]), partial_end: None }), "within");
            assert_eq!(s.apply(&part, &scan("a", "m", 10), None, FAR).await, Ok(OpResult::Rows { rows: rows(&["a", "b", "c"]), partial_end: None }), "up to the end");
            assert_eq!(s.apply(&part, &scan("a", "z", 3), None, FAR).await, Ok(OpResult::Rows { rows: rows(&["a", "b", "c"]), partial_end: None }), "a full page");
            assert_eq!(s.apply(&part, &scan("b", "z", 1), None, FAR).await, Ok(OpResult::Rows { rows: rows(&["b"]), partial_end: None }), "a full page");
        });
    }

    /// A partition's memory sets its memtable and block cache; its tables
    /// are cut at 256 KiB.
    #[test]
    fn a_partitions_options_follow_its_memory() {
        let m = PartMemory { memtable_bytes: 64 << 10, block_cache_bytes: 3 << 10 };
        let o = options(m);
        assert_eq!((o.memtable_bytes, o.table_bytes, o.block_cache_bytes), (64 << 10, 256 << 10, 3 << 10));
        assert_eq!(o.shape, Options::default().shape);
        let o = options(PartMemory { memtable_bytes: PART_MEMTABLE_BYTES_MIN, block_cache_bytes: 0 });
        assert_eq!((o.memtable_bytes, o.block_cache_bytes), (4 << 10, 0));
    }

    /// A memtable below a few rows' worth (4 KiB) is refused.
    #[test]
    #[should_panic(expected = "memtable of 4095 bytes")]
    fn a_memtable_below_4_kib_is_refused() {
        options(PartMemory { memtable_bytes: (4 << 10) - 1, block_cache_bytes: 0 });
    }

    #[test]
    fn routing_keys_follow_the_user_key_and_dedupe_goes_everywhere() {
        assert_eq!(routing_key(&key(KIND_ROW, b"k12")), Some("k12".into()));
        assert_eq!(routing_key(&key(KIND_COUNTER, b"p1")), Some("p1".into()));
        assert_eq!(routing_key(&appended_key("p1", 7)), Some("p1".into()));
        assert_eq!(routing_key(&dedupe_key(ReqId { client: 1, seq: 2 })), None);
        assert_eq!(routing_key(b"x"), None);
        assert_eq!(routing_key(&[keys::META]), None);
        assert_eq!(routing_key(&[keys::META, KIND_ROW]), Some(String::new()), "the empty row key");
        assert_eq!(routing_key(b"xrk"), None, "not a table key");
        // Appended rows of one partition key sort by value.
        assert!(appended_key("p", 2) < appended_key("p", 10));
    }
}
