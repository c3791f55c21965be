//! The storage node: holds extent replicas, one file per replica
//! ([`super::format`]), answers the stream protocol.
//!
//! One loop takes messages in groups (up to [`GROUP_MAX`]): appends are
//! written as records, every file written in the group is synced once, and
//! only then are the appends and seals of the group answered (group
//! commit). An append at the replica's length is written; a duplicate of
//! bytes it already holds (same offset, same checksum) is acknowledged
//! again; one beyond its length waits in a reorder buffer
//! ([`REORDER_MAX`]); one from an epoch below the fence is refused. A
//! seal records the fence in a synced fence record. Repairs (copying a
//! sealed extent from another replica) run beside the loop and swap the
//! new file in with `rename` + `sync_dir`.
//!
//! Disk errors never stop the node: the affected replica is marked damaged
//! (no more appends, reads below its good length), the request gets an
//! error, and the writer falls back to another extent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sim::net::{Inbox, Net, RequestId};
use sim::topology::NodeId;
use sim::world::NodeCtx;
use sim::Disk;
use tokio::sync::Mutex;

use super::format::{self, RecordLoc, HEADER_LEN, RECORD_DATA_MAX};
use super::{ExtentId, ReplicaError, StreamConfig, StreamMsg, DATA_QUEUE_MAX, GROUP_MAX, SUSPECT_REPORT_MAX, READ_BYTES_MAX, REORDER_MAX};

/// Attempts at reading a replica file back at startup.
pub const RECOVERY_READ_ATTEMPTS_MAX: u32 = 3;

const FILE_PREFIX: &str = "x-";

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// The file name of an extent's replica.
pub fn file_name(extent: &str) -> String {
    format!("{FILE_PREFIX}{}", hex(extent))
}

struct Held {
    epoch: u64,
    data: Vec<u8>,
    commit_len: u64,
    from: NodeId,
    request: RequestId,
}

/// One extent replica in memory.
#[derive(Default)]
struct Ext {
    file: String,
    file_exists: bool,
    /// Data records by extent offset.
    records: BTreeMap<u64, RecordLoc>,
    /// Durable (synced) length.
    len: u64,
    /// Length including records written in the current group.
    written: u64,
    fence: u64,
    sealed: bool,
    /// A disk error or corruption: no appends until repaired.
    damaged: bool,
    /// The durable length may be below what this replica acknowledged:
    /// recovery cut a bad tail (a torn write and a bit flip in the last
    /// synced record look alike), found a damaged record, or could not
    /// read the file. Seals answer it (`SealedAt::intact`), so that a new
    /// owner does not seal the extent at this length.
    short: bool,
    commit_len: u64,
    held: BTreeMap<u64, Held>,
    repairing: bool,
}

impl Ext {
    fn from_scan(file: String, s: &format::Scanned) -> Ext {
        Ext {
            file,
            file_exists: true,
            records: s.records.iter().map(|r| (r.offset, *r)).collect(),
            len: s.len,
            written: s.len,
            fence: s.fence,
            sealed: s.sealed,
            damaged: s.corrupt_at.is_some(),
            short: s.torn || s.corrupt_at.is_some(),
            ..Ext::default()
        }
    }
}

/// An answer waiting for the group's syncs.
enum Deferred {
    Append { end: u64 },
    Seal,
}

/// A storage node's extents by id. Looked up on every message and never
/// iterated: a hash index (with a fixed hasher, so its layout is the same in
/// every run) instead of a B-tree, whose search compares the long ids byte
/// by byte about twenty times per lookup (3.8% of double11's instructions).
/// Insertion-ordered, should anything ever iterate it.
type Extents = indexmap::IndexMap<ExtentId, Ext, std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>>;

struct Store {
    disk: Disk,
    extents: Extents,
    /// The extents held damaged or short, listed in `Pong` for the
    /// manager's repair.
    suspect: BTreeSet<ExtentId>,
    /// Answers to held appends that were refused after all (sent with the
    /// group's answers).
    late: Vec<(NodeId, RequestId, StreamMsg)>,
}

/// What one startup recovery found (for notes and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub extents: usize,
    pub torn_tails: usize,
    pub damaged: usize,
    pub unreadable: usize,
}

impl Recovered {
    /// The replicas found corrupt: damaged or unreadable.
    pub fn corrupt(&self) -> u64 {
        (self.damaged + self.unreadable) as u64
    }
}

impl Store {
    async fn recover(disk: Disk) -> (Store, Recovered) {
        let mut st = Store { disk: disk.clone(), extents: Extents::default(), suspect: BTreeSet::new(), late: Vec::new() };
        let mut rec = Recovered::default();
        for name in disk.list(FILE_PREFIX) {
            if name.ends_with(".tmp") {
                let _ = disk.remove(&name).await;
                continue;
            }
            let Some(id) = unhex(&name[FILE_PREFIX.len()..]) else { continue };
            let mut content = None;
            for _ in 0..RECOVERY_READ_ATTEMPTS_MAX {
                let Ok(len) = disk.len(&name) else { break };
                if let Ok(b) = disk.read_at(&name, 0, len).await {
                    content = Some(b);
                    break;
                }
            }
            let Some(content) = content else {
                // Unreadable: the replica holds nothing it can vouch for.
                // Kept as damaged and short, so that reads fall back, a
                // seal does not trust its length, and the manager repairs.
                rec.unreadable += 1;
                st.suspect.insert(id.clone());
                st.extents.insert(id, Ext { file: name.clone(), file_exists: true, damaged: true, short: true, ..Ext::default() });
                continue;
            };
            let s = format::scan(&content);
            let mut ext = Ext::from_scan(name.clone(), &s);
            if s.torn && s.corrupt_at.is_none() {
                rec.torn_tails += 1;
                if rewrite(&disk, &name, &content[..s.good_bytes as usize]).await.is_err() {
                    ext.damaged = true;
                }
            }
            if ext.damaged {
                rec.damaged += 1;
            }
            if ext.damaged || ext.short {
                st.suspect.insert(id.clone());
            }
            rec.extents += 1;
            st.extents.insert(id, ext);
        }
        (st, rec)
    }
}

/// Replaces `name` by `content` atomically: a temporary file, synced, then
/// renamed over it and the directory synced.
async fn rewrite(disk: &Disk, name: &str, content: &[u8]) -> Result<(), sim::DiskError> {
    let tmp = format!("{name}.tmp");
    if disk.exists(&tmp) {
        disk.remove(&tmp).await?;
    }
    disk.create(&tmp).await?;
    if !content.is_empty() {
        disk.append(&tmp, content).await?;
    }
    disk.sync(&tmp).await?;
    disk.rename(&tmp, name).await?;
    disk.sync_dir().await
}

struct Node {
    id: NodeId,
    net: Net<StreamMsg>,
    store: Arc<Mutex<Store>>,
    cfg: StreamConfig,
    cpu: sim::Cpu,
    /// The suspect extents as the store listed them when it was last free:
    /// what a ping reports while the worker holds the store through a
    /// group's syncs.
    suspect_seen: std::sync::Mutex<Vec<ExtentId>>,
}

/// Runs one storage node until it crashes; restarts run it again.
pub async fn serve_storage(ctx: NodeCtx, cfg: StreamConfig) {
    let (store, rec) = Store::recover(ctx.disk()).await;
    ctx.note(format!(
        "storage recovered {} extents, {} torn tails cut, {} damaged, {} unreadable",
        rec.extents, rec.torn_tails, rec.damaged, rec.unreadable
    ));
    let found = rec.corrupt();
    if found > 0 {
        cfg.observer.with(|o| o.corrupt_replicas_detected += found);
    }
    let (net, mut inbox): (Net<StreamMsg>, Inbox<StreamMsg>) = Net::bind(&ctx).await;
    let node = Arc::new(Node { id: ctx.id, net, store: Arc::new(Mutex::new(store)), cfg, cpu: ctx.cpu(), suspect_seen: std::sync::Mutex::new(Vec::new()) });
    // Two lanes: this loop answers pings at once on the control lane, so a
    // node whose disk is saturated still shows it is alive; data messages
    // queue for the worker, which handles them in groups: what arrived
    // while it wrote and synced the last group forms the next one.
    // Clients' appends and reads count against `DATA_QUEUE_MAX`; the work
    // owners and the manager owe (seals, commits, repairs, removals) is
    // bounded by its senders and refused only when the whole queue, twice
    // that, is full: a new owner's seal must not starve behind appends.
    let (queue, mut data) = tokio::sync::mpsc::channel::<sim::net::Incoming<StreamMsg>>(2 * DATA_QUEUE_MAX);
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client_work = |m: &StreamMsg| matches!(m, StreamMsg::Append { .. } | StreamMsg::Read { .. });
    let (worker, taken) = (node.clone(), queued.clone());
    madsim::task::spawn(async move {
        while let Some(first) = data.recv().await {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match data.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            let n = group.iter().filter(|m| client_work(&m.msg)).count();
            taken.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            worker.clone().handle_group(group).await;
        }
    });
    while let Some(m) = inbox.recv().await {
        if matches!(m.msg, StreamMsg::Ping) {
            node.answer_ping(m).await;
            continue;
        }
        let counted = client_work(&m.msg);
        if counted && queued.load(std::sync::atomic::Ordering::Relaxed) >= DATA_QUEUE_MAX {
            if let Some(request) = m.request {
                node.net.reply(m.from, request, StreamMsg::Err(ReplicaError::Busy)).await;
            }
            continue;
        }
        match queue.try_send(m) {
            Ok(()) => {
                if counted {
                    queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => {
                if let Some(request) = m.request {
                    node.net.reply(m.from, request, StreamMsg::Err(ReplicaError::Busy)).await;
                }
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

impl Node {
    /// Answers a ping on the control lane with the suspect extents: the
    /// store's own list when it is free, else the list as last seen.
    async fn answer_ping(&self, m: sim::net::Incoming<StreamMsg>) {
        self.cpu.run_control(self.cfg.costs.control).await;
        let Some(request) = m.request else { return };
        let suspect = match self.store.try_lock() {
            Ok(st) => self.see_suspects(&st),
            Err(_) => self.suspect_seen.lock().expect("suspect lock").clone(),
        };
        self.net.reply(m.from, request, StreamMsg::Pong { suspect }).await;
    }

    /// The store's suspect extents (at most [`SUSPECT_REPORT_MAX`]), kept
    /// as the last seen.
    fn see_suspects(&self, st: &Store) -> Vec<ExtentId> {
        let suspect: Vec<ExtentId> = st.suspect.iter().take(SUSPECT_REPORT_MAX).cloned().collect();
        suspect.clone_into(&mut self.suspect_seen.lock().expect("suspect lock"));
        suspect
    }

    /// The CPU time the data messages of a group cost (pings never join a
    /// group: the receive loop answers them on the control lane).
    fn group_cost(&self, group: &[sim::net::Incoming<StreamMsg>]) -> std::time::Duration {
        let c = &self.cfg.costs;
        group
            .iter()
            .map(|m| match &m.msg {
                StreamMsg::Append { data, .. } => c.storage_append + crate::cost::Costs::per_kib(c.storage_kib, data.len()),
                StreamMsg::Read { len, .. } => c.storage_read + crate::cost::Costs::per_kib(c.storage_kib, (*len).min(READ_BYTES_MAX) as usize),
                _ => c.control,
            })
            .sum()
    }

    async fn handle_group(self: Arc<Self>, group: Vec<sim::net::Incoming<StreamMsg>>) {
        // The group's data work waits for the node's CPU (the loop handles
        // one group at a time, so this never queues more than one job).
        self.cpu.run_always(self.group_cost(&group)).await;
        let mut deferred: Vec<(NodeId, RequestId, ExtentId, Deferred)> = Vec::with_capacity(group.len());
        let mut immediate: Vec<(NodeId, RequestId, StreamMsg)> = Vec::with_capacity(group.len());
        let mut dirty: BTreeSet<ExtentId> = BTreeSet::new();
        let mut created = false;
        let mut st = self.store.lock().await;
        for m in group {
            let from = m.from;
            let request = m.request;
            let reply = match m.msg {
                StreamMsg::Append { extent, epoch, offset, data, crc, commit_len } => {
                    let Some(request) = request else { continue };
                    if crc32fast::hash(&data) != crc || data.len() > RECORD_DATA_MAX as usize || data.is_empty() {
                        Some(StreamMsg::Err(ReplicaError::BadRequest))
                    } else {
                        let held = Held { epoch, data, commit_len, from, request };
                        st.append(&extent, offset, held, &mut deferred, &mut dirty, &mut created).await
                    }
                }
                StreamMsg::Commit { extent, commit_len } => {
                    if let Some(e) = st.extents.get_mut(&extent) {
                        e.commit_len = e.commit_len.max(commit_len.min(e.len));
                    }
                    Some(StreamMsg::Done)
                }
                StreamMsg::Seal { extent, epoch } => {
                    let Some(request) = request else { continue };
                    st.seal(&extent, epoch, from, request, &mut deferred, &mut dirty, &mut created).await
                }
                StreamMsg::Read { extent, offset, len, limit } => Some(st.read(&extent, offset, len, limit).await),
                StreamMsg::Repair { extent, len, sources } => {
                    let Some(request) = request else { continue };
                    let busy = st.extents.get(&extent).is_some_and(|e| e.repairing);
                    // A short replica whose good records reach the sealed
                    // length already holds the whole extent (every record
                    // it kept passed its checksums): nothing to copy.
                    let whole = st.extents.get_mut(&extent).filter(|e| !e.damaged && e.len >= len);
                    if let Some(e) = whole {
                        e.short = false;
                        st.suspect.remove(&extent);
                        Some(StreamMsg::Done)
                    } else if busy {
                        Some(StreamMsg::Err(ReplicaError::Busy))
                    } else {
                        // Replacing a copy this node held counts as a repair;
                        // a first copy (re-replication) does not.
                        let held = st.extents.contains_key(&extent);
                        st.extents.entry(extent.clone()).or_insert_with(|| Ext { file: file_name(&extent), ..Ext::default() }).repairing = true;
                        madsim::task::spawn(self.clone().repair(extent, len, sources, from, request, held));
                        None
                    }
                }
                StreamMsg::Settled { extent, len } => {
                    // A copy shorter than the sealed length, or none at all
                    // (the extent's first appends never arrived), is
                    // short: the manager copies the extent here.
                    let e = st.extents.entry(extent.clone()).or_insert_with(|| Ext { file: file_name(&extent), sealed: true, ..Ext::default() });
                    if e.len < len && !e.repairing {
                        e.short = true;
                        st.suspect.insert(extent);
                    }
                    Some(StreamMsg::Done)
                }
                StreamMsg::Remove { extent } => {
                    st.suspect.remove(&extent);
                    if let Some(e) = st.extents.swap_remove(&extent) {
                        if e.file_exists {
                            let _ = st.disk.remove(&e.file).await;
                            created = true; // the namespace changed: sync it
                        }
                    }
                    Some(StreamMsg::Done)
                }
                // Pings are answered on the control lane; responses are
                // never requests; anything else is dropped.
                _ => None,
            };
            if let (Some(msg), Some(request)) = (reply, request) {
                immediate.push((from, request, msg));
            }
        }
        // Answers that claim nothing about durability (reads of committed
        // bytes, refusals) go out before the group's syncs, so a node busy
        // syncing many extents still answers reads within the callers'
        // timeouts.
        immediate.append(&mut st.late);
        for (to, request, msg) in immediate.drain(..) {
            self.net.reply(to, request, msg).await;
        }
        let mut failed: BTreeSet<ExtentId> = BTreeSet::new();
        for id in &dirty {
            let disk = st.disk.clone();
            let Some(e) = st.extents.get_mut(id) else { continue };
            match disk.sync(&e.file).await {
                Ok(()) => e.len = e.written,
                Err(_) => {
                    e.damaged = true;
                    failed.insert(id.clone());
                }
            }
        }
        for id in &failed {
            st.suspect.insert(id.clone());
        }
        if created && st.disk.sync_dir().await.is_err() {
            failed.extend(dirty.iter().cloned());
        }
        for (from, request, id, d) in deferred {
            let msg = match st.extents.get(&id) {
                _ if failed.contains(&id) => StreamMsg::Err(ReplicaError::Io),
                None => StreamMsg::Err(ReplicaError::NotFound),
                Some(e) => match d {
                    Deferred::Append { end } if e.len >= end => StreamMsg::Appended { len: e.len },
                    Deferred::Append { .. } => StreamMsg::Err(ReplicaError::Io),
                    Deferred::Seal => StreamMsg::SealedAt { len: e.len, intact: !e.short },
                },
            };
            immediate.push((from, request, msg));
        }
        immediate.append(&mut st.late);
        self.see_suspects(&st);
        drop(st);
        for (to, request, msg) in immediate {
            self.net.reply(to, request, msg).await;
        }
    }

    /// Copies a sealed extent from a source replica and swaps it in.
    async fn repair(self: Arc<Self>, extent: ExtentId, len: u64, sources: Vec<NodeId>, to: NodeId, request: RequestId, held: bool) {
        let result = self.fetch(&extent, len, &sources).await;
        let reply = match result {
            None => StreamMsg::Err(ReplicaError::Busy),
            Some(data) => {
                let mut st = self.store.lock().await;
                let file = file_name(&extent);
                let fence = st.extents.get(&extent).map_or(0, |e| e.fence);
                let mut content = Vec::with_capacity(data.len() + 64);
                for (i, chunk) in data.chunks(READ_BYTES_MAX as usize).enumerate() {
                    content.extend_from_slice(&format::encode_record(i as u64 * READ_BYTES_MAX, chunk));
                }
                content.extend_from_slice(&format::encode_fence(fence, true));
                match rewrite(&st.disk, &file, &content).await {
                    Ok(()) => {
                        let s = format::scan(&content);
                        let mut e = Ext::from_scan(file, &s);
                        e.commit_len = len;
                        st.extents.insert(extent.clone(), e);
                        st.suspect.remove(&extent);
                        if held {
                            self.cfg.observer.repaired(&extent, self.id);
                        }
                        StreamMsg::Done
                    }
                    Err(_) => StreamMsg::Err(ReplicaError::Io),
                }
            }
        };
        if let Some(e) = self.store.lock().await.extents.get_mut(&extent) {
            e.repairing = false;
        }
        self.net.reply(to, request, reply).await;
    }

    /// The extent's first `len` bytes from one of `sources`, checked.
    async fn fetch(&self, extent: &ExtentId, len: u64, sources: &[NodeId]) -> Option<Vec<u8>> {
        'source: for &src in sources {
            let mut out = Vec::with_capacity(len as usize);
            while (out.len() as u64) < len {
                let at = out.len() as u64;
                let want = (len - at).min(READ_BYTES_MAX);
                let read = StreamMsg::Read { extent: extent.clone(), offset: at, len: want, limit: Some(len) };
                match self.net.call(src, read, self.cfg.call_timeout).await {
                    Ok(StreamMsg::Data { data, crc }) if crc32fast::hash(&data) == crc && data.len() as u64 == want => out.extend_from_slice(&data),
                    _ => continue 'source,
                }
            }
            return Some(out);
        }
        None
    }
}

impl Store {
    fn ext(&mut self, extent: &ExtentId) -> &mut Ext {
        // Looked up before inserting: `entry` would clone the id every time.
        let i = match self.extents.get_index_of(extent) {
            Some(i) => i,
            None => self.extents.insert_full(extent.clone(), Ext { file: file_name(extent), ..Ext::default() }).0,
        };
        &mut self.extents[i]
    }

    /// Writes a record at the replica's end (creating its file first).
    async fn write(&mut self, extent: &ExtentId, rec: &[u8], created: &mut bool) -> Result<u64, ()> {
        let disk = self.disk.clone();
        let e = self.ext(extent);
        if !e.file_exists {
            match disk.create(&e.file).await {
                Ok(()) | Err(sim::DiskError::AlreadyExists(_)) => {
                    e.file_exists = true;
                    *created = true;
                }
                Err(_) => {
                    e.damaged = true;
                    self.suspect.insert(extent.clone());
                    return Err(());
                }
            }
        }
        match disk.append(&e.file, rec).await {
            Ok(pos) => Ok(pos),
            Err(_) => {
                e.damaged = true;
                self.suspect.insert(extent.clone());
                Err(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn append(
        &mut self,
        extent: &ExtentId,
        offset: u64,
        held: Held,
        deferred: &mut Vec<(NodeId, RequestId, ExtentId, Deferred)>,
        dirty: &mut BTreeSet<ExtentId>,
        created: &mut bool,
    ) -> Option<StreamMsg> {
        let mut next = Some((offset, held));
        let mut first_reply = None;
        let mut first = true;
        while let Some((offset, h)) = next.take() {
            let reply = self.append_one(extent, offset, &h, deferred, dirty, created).await;
            match reply {
                AppendStep::Reply(msg) if first => first_reply = Some(msg),
                AppendStep::Reply(msg) => {
                    // A held append answered late (refused now).
                    self.late.push((h.from, h.request, msg));
                }
                AppendStep::Hold => {
                    let e = self.ext(extent);
                    if e.held.len() >= REORDER_MAX && !e.held.contains_key(&offset) {
                        if first {
                            first_reply = Some(StreamMsg::Err(ReplicaError::Busy));
                        }
                    } else {
                        e.held.insert(offset, h);
                    }
                }
                AppendStep::Written => {}
            }
            first = false;
            let e = self.ext(extent);
            let w = e.written;
            next = e.held.remove(&w).map(|h| (w, h));
        }
        first_reply
    }

    async fn append_one(
        &mut self,
        extent: &ExtentId,
        offset: u64,
        h: &Held,
        deferred: &mut Vec<(NodeId, RequestId, ExtentId, Deferred)>,
        dirty: &mut BTreeSet<ExtentId>,
        created: &mut bool,
    ) -> AppendStep {
        let end = offset + h.data.len() as u64;
        let crc = crc32fast::hash(&h.data);
        let e = self.ext(extent);
        if h.epoch < e.fence {
            return AppendStep::Reply(StreamMsg::Err(ReplicaError::Fenced { fence: e.fence }));
        }
        e.commit_len = e.commit_len.max(h.commit_len.min(e.written));
        if end <= e.written {
            let dup = e.records.get(&offset).is_some_and(|r| r.len as usize == h.data.len() && r.crc == crc);
            if dup {
                deferred.push((h.from, h.request, extent.clone(), Deferred::Append { end }));
                return AppendStep::Written;
            }
            return AppendStep::Reply(StreamMsg::Err(ReplicaError::Conflict));
        }
        if e.sealed || e.damaged {
            return AppendStep::Reply(StreamMsg::Err(ReplicaError::Sealed { len: e.len }));
        }
        if offset > e.written {
            return AppendStep::Hold;
        }
        if offset < e.written {
            return AppendStep::Reply(StreamMsg::Err(ReplicaError::Conflict));
        }
        let rec = format::encode_record(offset, &h.data);
        match self.write(extent, &rec, created).await {
            Ok(pos) => {
                let e = self.ext(extent);
                e.records.insert(offset, RecordLoc { offset, pos, len: h.data.len() as u32, crc });
                e.written = end;
                dirty.insert(extent.clone());
                deferred.push((h.from, h.request, extent.clone(), Deferred::Append { end }));
                AppendStep::Written
            }
            Err(()) => AppendStep::Reply(StreamMsg::Err(ReplicaError::Io)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn seal(
        &mut self,
        extent: &ExtentId,
        epoch: u64,
        from: NodeId,
        request: RequestId,
        deferred: &mut Vec<(NodeId, RequestId, ExtentId, Deferred)>,
        dirty: &mut BTreeSet<ExtentId>,
        created: &mut bool,
    ) -> Option<StreamMsg> {
        let e = self.ext(extent);
        if epoch < e.fence {
            return Some(StreamMsg::Err(ReplicaError::Fenced { fence: e.fence }));
        }
        e.fence = epoch;
        e.sealed = true;
        let held = std::mem::take(&mut e.held);
        let len = e.len;
        for (_, h) in held {
            self.late.push((h.from, h.request, StreamMsg::Err(ReplicaError::Sealed { len })));
        }
        match self.write(extent, &format::encode_fence(epoch, true), created).await {
            Ok(_) => {
                dirty.insert(extent.clone());
                deferred.push((from, request, extent.clone(), Deferred::Seal));
                None
            }
            Err(()) => Some(StreamMsg::Err(ReplicaError::Io)),
        }
    }

    async fn read(&mut self, extent: &ExtentId, offset: u64, len: u64, limit: Option<u64>) -> StreamMsg {
        let Some(e) = self.extents.get(extent) else { return StreamMsg::Err(ReplicaError::NotFound) };
        if e.repairing && !e.file_exists {
            return StreamMsg::Err(ReplicaError::NotFound);
        }
        // A reader that names the extent's length (sealed, or acknowledged
        // by all three replicas) beyond what this replica holds found it
        // short: a replica that missed the seal's answer never learnt it.
        // It lists itself suspect, so the manager copies the extent back.
        if limit.is_some_and(|l| l > e.len) && !e.repairing && !e.short {
            if let Some(e) = self.extents.get_mut(extent) {
                e.short = true;
            }
            self.suspect.insert(extent.clone());
        }
        let Some(e) = self.extents.get(extent) else { return StreamMsg::Err(ReplicaError::NotFound) };
        let lim = limit.unwrap_or(e.commit_len).min(e.len);
        let end = offset.saturating_add(len.min(READ_BYTES_MAX)).min(lim);
        let mut out = Vec::new();
        if offset < end {
            let first = e.records.range(..=offset).next_back().map_or(offset, |(&o, _)| o);
            let locs: Vec<RecordLoc> = e.records.range(first..end).map(|(_, r)| *r).collect();
            let file = e.file.clone();
            // One device read for the whole span: the records lie in file
            // order, and a read per record (each paying the device's
            // latency) made a range of many small records (a busy
            // partition's log) slower than any caller's timeout.
            let span_lo = locs.iter().map(|l| l.pos).min().unwrap_or(0);
            let span_hi = locs.iter().map(|l| l.pos + HEADER_LEN as u64 + u64::from(l.len)).max().unwrap_or(0);
            let span = match self.disk.read_at(&file, span_lo, span_hi - span_lo).await {
                Ok(b) => b,
                Err(_) => return StreamMsg::Err(ReplicaError::Io),
            };
            for loc in locs {
                let at = (loc.pos - span_lo) as usize;
                let bytes = span.get(at..at + HEADER_LEN + loc.len as usize).unwrap_or(&[]);
                let Some(data) = format::check_record(&loc, bytes) else {
                    if let Some(e) = self.extents.get_mut(extent) {
                        e.damaged = true;
                        self.suspect.insert(extent.clone());
                    }
                    return StreamMsg::Err(ReplicaError::Corrupt);
                };
                let lo = offset.max(loc.offset) - loc.offset;
                let hi = end.min(loc.offset + u64::from(loc.len)) - loc.offset;
                out.extend_from_slice(&data[lo as usize..hi as usize]);
            }
        }
        let crc = crc32fast::hash(&out);
        StreamMsg::Data { data: out, crc }
    }
}

enum AppendStep {
    Reply(StreamMsg),
    Hold,
    Written,
}

#[cfg(test)]
mod tests {
    use super::*;

    use sim::topology::LinkParams;
    use sim::{DiskConfig, DiskFaults, Topology, World, ZoneId};
    use std::future::Future;
    use std::time::Duration;

    /// Runs `story` in a simulated runtime, on a one-zone world whose nodes
    /// `nodes` adds to the topology.
    fn in_world<N: Send + 'static, F: Future<Output = ()> + 'static>(nodes: impl FnOnce(&mut Topology) -> N + Send + 'static, story: impl FnOnce(World, N) -> F + Send + 'static) {
        #[allow(clippy::disallowed_methods)] // the harness's runtime thread, outside the simulation
        let h = std::thread::spawn(move || {
            madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default()).block_on(async move {
                let link = LinkParams { latency: Duration::from_micros(100), jitter: Duration::ZERO, loss: 0.0 };
                let mut topo = Topology::new(&["az1".into()], link, link);
                let added = nodes(&mut topo);
                let world = World::new(1, topo, DiskConfig::default(), false);
                story(world, added).await;
            })
        });
        if let Err(p) = h.join() {
            std::panic::resume_unwind(p);
        }
    }

    /// Runs `story` on the disk of a one-node world, in a simulated runtime.
    fn on_disk<F: Future<Output = ()> + Send + 'static>(story: impl FnOnce(Disk) -> F + Send + 'static) {
        in_world(|topo| topo.add_node(ZoneId(0), "storage"), move |world, node| story(world.disk(node)));
    }

    async fn put(disk: &Disk, extent: &str, records: &[Vec<u8>]) -> String {
        let name = file_name(extent);
        disk.create(&name).await.expect("create");
        for r in records {
            disk.append(&name, r).await.expect("append");
        }
        disk.sync(&name).await.expect("sync");
        disk.sync_dir().await.expect("sync dir");
        name
    }

    #[test]
    fn a_restart_keeps_each_replicas_fence_seal_records_and_file() {
        on_disk(|disk| async move {
            let sealed = [format::encode_fence(4, false), format::encode_record(0, b"abc"), format::encode_record(3, b"defg"), format::encode_fence(7, true)];
            let a = put(&disk, "ns/s/0/1", &sealed).await;
            let b = put(&disk, "ns/s/0/2", &[format::encode_fence(2, false), format::encode_record(0, b"xy")]).await;
            let (st, rec) = Store::recover(disk.clone()).await;
            assert_eq!(rec, Recovered { extents: 2, torn_tails: 0, damaged: 0, unreadable: 0 });
            assert_eq!(rec.corrupt(), 0);
            assert!(st.suspect.is_empty());
            let e = &st.extents["ns/s/0/1"];
            assert_eq!((e.file.as_str(), e.file_exists, e.len, e.written), (a.as_str(), true, 7, 7));
            assert_eq!((e.fence, e.sealed, e.damaged, e.short), (7, true, false, false));
            assert_eq!(e.records.keys().copied().collect::<Vec<_>>(), vec![0, 3]);
            let e = &st.extents["ns/s/0/2"];
            assert_eq!((e.file.as_str(), e.len, e.fence, e.sealed), (b.as_str(), 2, 2, false));
            // A clean file is left as it was.
            assert_eq!(disk.len(&a).expect("len"), sealed.iter().map(|r| r.len() as u64).sum::<u64>());
        });
    }

    #[test]
    fn a_restart_cuts_a_torn_tail_and_lists_the_replica_short() {
        on_disk(|disk| async move {
            let good = [format::encode_fence(1, false), format::encode_record(0, b"abc")];
            let mut torn = format::encode_record(3, b"defghij");
            torn.truncate(torn.len() - 3);
            let all: Vec<Vec<u8>> = good.iter().cloned().chain([torn]).collect();
            let name = put(&disk, "ns/s/0/1", &all).await;
            put(&disk, "ns/s/0/2", &[format::encode_fence(1, false)]).await;
            let (st, rec) = Store::recover(disk.clone()).await;
            assert_eq!(rec, Recovered { extents: 2, torn_tails: 1, damaged: 0, unreadable: 0 });
            let e = &st.extents["ns/s/0/1"];
            assert_eq!((e.len, e.short, e.damaged), (3, true, false));
            assert_eq!(st.suspect.iter().map(String::as_str).collect::<Vec<_>>(), vec!["ns/s/0/1"]);
            assert_eq!(disk.len(&name).expect("len"), good.iter().map(|r| r.len() as u64).sum::<u64>(), "the tail is cut on disk");
        });
    }

    #[test]
    fn a_restart_marks_a_corrupt_replica_damaged_and_keeps_its_good_prefix() {
        on_disk(|disk| async move {
            let mut bad = format::encode_record(3, b"defg");
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let name = put(&disk, "ns/s/0/1", &[format::encode_fence(1, false), format::encode_record(0, b"abc"), bad, format::encode_record(7, b"hi")]).await;
            let before = disk.len(&name).expect("len");
            let (st, rec) = Store::recover(disk.clone()).await;
            assert_eq!(rec, Recovered { extents: 1, torn_tails: 0, damaged: 1, unreadable: 0 });
            assert_eq!(rec.corrupt(), 1);
            let e = &st.extents["ns/s/0/1"];
            assert_eq!((e.len, e.short, e.damaged), (3, true, true));
            assert!(st.suspect.contains("ns/s/0/1"));
            assert_eq!(disk.len(&name).expect("len"), before, "a damaged file waits for repair as it is");
        });
    }

    #[test]
    fn a_restart_keeps_an_unreadable_replica_as_damaged_and_short() {
        on_disk(|disk| async move {
            let name = put(&disk, "ns/s/0/1", &[format::encode_fence(1, false), format::encode_record(0, b"abc")]).await;
            disk.set_faults(DiskFaults { read_error_rate: 1.0, ..DiskFaults::default() });
            let (st, rec) = Store::recover(disk.clone()).await;
            assert_eq!(rec, Recovered { extents: 0, torn_tails: 0, damaged: 0, unreadable: 1 });
            assert_eq!(Recovered { damaged: 2, ..rec.clone() }.corrupt(), 3);
            let e = &st.extents["ns/s/0/1"];
            assert_eq!((e.file.as_str(), e.file_exists, e.damaged, e.short, e.len), (name.as_str(), true, true, true, 0));
            assert!(st.suspect.contains("ns/s/0/1"));
        });
    }

    #[test]
    fn file_names_round_trip() {
        let id = "ns/stream name/3/17";
        let f = file_name(id);
        assert!(f.starts_with(FILE_PREFIX) && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_eq!(unhex(&f[FILE_PREFIX.len()..]).as_deref(), Some(id));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn pings_are_answered_while_a_group_is_written_each_at_its_control_cost() {
        const MS: Duration = Duration::from_millis(1);
        let tune = |c: &mut StreamConfig| {
            c.costs.storage_append = 40 * MS;
            c.costs.control = 10 * MS;
        };
        with_nodes(tune, |n| async move {
            let busy = n.spawn(0, append_msg("x", 0, b"abc"));
            sim::time::sleep(MS).await;
            let sent = sim::time::now();
            let pings: Vec<_> = (0..3).map(|_| n.spawn(0, StreamMsg::Ping)).collect();
            let mut after = Vec::new();
            for p in pings {
                let (pong, at) = p.await.expect("ping");
                assert!(matches!(pong, Some(StreamMsg::Pong { .. })));
                after.push(at.saturating_sub(sent));
            }
            let (_, a_at) = busy.await.expect("append");
            after.sort();
            // One after another on the control lane, 10 ms each, while the
            // append's 40 ms of data work runs.
            for (k, d) in after.iter().enumerate() {
                let k = k as u32 + 1;
                assert!(*d >= k * 10 * MS && *d < k * 10 * MS + MS, "ping {k} answered {d:?} after it was sent");
            }
            assert!(sent + after[2] < a_at, "the pings did not wait for the group: answered by {:?}, the append at {a_at:?}", sent + after[2]);
        });
    }

    #[test]
    fn a_full_data_queue_refuses_reads_busy_at_once_but_not_a_seal_and_the_queue_is_one_group() {
        const MS: Duration = Duration::from_millis(1);
        let tune = |c: &mut StreamConfig| {
            c.costs.storage_append = 40 * MS;
            c.costs.storage_read = MS;
            c.costs.storage_kib = Duration::ZERO;
            c.costs.control = MS;
        };
        with_nodes(tune, |n| async move {
            let busy = n.spawn(0, append_msg("x", 0, b"abc"));
            sim::time::sleep(MS).await;
            let sent = sim::time::now();
            // The worker holds the append; the queue takes DATA_QUEUE_MAX
            // clients' reads and refuses the next one.
            let read = || StreamMsg::Read { extent: "y".into(), offset: 0, len: 1, limit: None };
            let reads: Vec<_> = (0..DATA_QUEUE_MAX + 1).map(|_| n.spawn(0, read())).collect();
            sim::time::sleep(MS).await;
            // Work an owner owes still gets in.
            let seal = n.spawn(0, StreamMsg::Seal { extent: "x".into(), epoch: 2 });
            let (_, a_at) = busy.await.expect("append");
            let mut done = Vec::new();
            let mut refused = Vec::new();
            for r in reads {
                match r.await.expect("read") {
                    (Some(StreamMsg::Err(ReplicaError::Busy)), at) => refused.push(at),
                    (Some(_), at) => done.push(at),
                    other => panic!("a read answered {other:?}"),
                }
            }
            assert_eq!(refused.len(), 1, "one read over the queue's limit is refused");
            assert!(refused[0] < sent + 2 * MS, "refused at once, not after the group: {:?}", refused[0].saturating_sub(sent));
            assert_eq!(done.len(), DATA_QUEUE_MAX);
            // The queued reads form one group (GROUP_MAX of them), answered
            // after the append once their work (1 ms each) is done: a
            // second group would answer later.
            assert_eq!(DATA_QUEUE_MAX, GROUP_MAX);
            for at in done {
                let after = at.saturating_sub(a_at);
                assert!(after >= GROUP_MAX as u32 * MS && after < (GROUP_MAX as u32 + 1) * MS, "answered {after:?} after the append");
            }
            let (sealed, _) = seal.await.expect("seal");
            assert!(matches!(sealed, Some(StreamMsg::SealedAt { len: 3, .. })), "the seal is served, not refused: {sealed:?}");
        });
    }

    fn append_msg(extent: &str, offset: u64, data: &[u8]) -> StreamMsg {
        StreamMsg::Append { extent: extent.into(), epoch: 1, offset, data: data.to_vec(), crc: crc32fast::hash(data), commit_len: 0 }
    }

    #[test]
    fn appends_beyond_the_end_wait_for_the_gap_up_to_the_reorder_limit() {
        with_nodes(|_| {}, |n| async move {
            let later = n.spawn(0, append_msg("x", 6, b"ghi"));
            let next = n.spawn(0, append_msg("x", 3, b"def"));
            sim::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(appended(&n.append(0, "x", 1, 0, b"abc").await), Some(9), "the gap filled, the waiting appends are written in its group");
            assert_eq!(appended(&next.await.expect("task").0.expect("answered")), Some(9));
            assert_eq!(appended(&later.await.expect("task").0.expect("answered")), Some(9));
            assert_eq!(data(&n.read(0, "x", 0, 9, Some(9)).await), b"abcdefghi");
            // REORDER_MAX appends wait; one more is refused at once.
            let held: Vec<_> = (0..REORDER_MAX as u64).map(|i| n.spawn(0, append_msg("y", 10 + i, b"h"))).collect();
            sim::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(err(&n.append(0, "y", 1, 500, b"z").await), Some(ReplicaError::Busy), "the reorder buffer is full");
            let end = 10 + REORDER_MAX as u64;
            assert_eq!(appended(&n.append(0, "y", 1, 0, b"0123456789").await), Some(end));
            for h in held {
                assert_eq!(appended(&h.await.expect("task").0.expect("answered")), Some(end));
            }
            let mut want = b"0123456789".to_vec();
            want.extend(std::iter::repeat_n(b'h', REORDER_MAX));
            assert_eq!(data(&n.read(0, "y", 0, end, Some(end)).await), want, "records of one byte read back");
            assert_eq!(data(&n.read(0, "y", end - 1, 1, Some(end)).await), b"h");
        });
    }

    #[test]
    fn a_short_replica_is_copied_whole_a_whole_one_is_not_copied_and_a_short_source_is_refused() {
        with_nodes(|_| {}, |n| async move {
            let rec = |i: u8| vec![i; 1000];
            let mut all = Vec::new();
            for i in 0..4u8 {
                assert!(appended(&n.append(1, "x", 1, all.len() as u64, &rec(i)).await).is_some());
                all.extend_from_slice(&rec(i));
            }
            assert!(matches!(n.call(1, StreamMsg::Seal { extent: "x".into(), epoch: 2 }).await, StreamMsg::SealedAt { len: 4000, .. }));
            // Node 0 holds the first record only.
            assert_eq!(appended(&n.append(0, "x", 1, 0, &rec(0)).await), Some(1000));
            let repair = || StreamMsg::Repair { extent: "x".into(), len: 4000, sources: vec![n.storage[1]] };
            assert!(matches!(n.call(0, repair()).await, StreamMsg::Done));
            assert_eq!(n.observer.snapshot().repairs, 1, "replacing a held copy counts as a repair");
            assert!(data(&n.read(0, "x", 0, 4000, Some(4000)).await) == all);
            assert!(matches!(n.call(0, repair()).await, StreamMsg::Done));
            assert_eq!(n.observer.snapshot().repairs, 1, "a whole replica is not copied again");
            // A source holding fewer bytes than the sealed length is no source.
            assert_eq!(appended(&n.append(1, "s", 1, 0, b"abc").await), Some(3));
            assert!(matches!(n.call(1, StreamMsg::Seal { extent: "s".into(), epoch: 2 }).await, StreamMsg::SealedAt { len: 3, .. }));
            assert_eq!(err(&n.call(0, StreamMsg::Repair { extent: "s".into(), len: 10, sources: vec![n.storage[1]] }).await), Some(ReplicaError::Busy));
        });
    }

    #[test]
    fn a_replica_under_its_first_repair_has_nothing_to_read() {
        let tune = |c: &mut StreamConfig| c.costs.storage_read = Duration::from_millis(30);
        with_nodes(tune, |n| async move {
            let chunk = vec![5u8; READ_BYTES_MAX as usize];
            for i in 0..3u64 {
                assert!(appended(&n.append(1, "x", 1, i * READ_BYTES_MAX, &chunk).await).is_some());
            }
            let len = 3 * READ_BYTES_MAX;
            assert!(matches!(n.call(1, StreamMsg::Seal { extent: "x".into(), epoch: 2 }).await, StreamMsg::SealedAt { .. }));
            let repair = n.spawn(0, StreamMsg::Repair { extent: "x".into(), len, sources: vec![n.storage[1]] });
            sim::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(err(&n.read(0, "x", 0, 10, None).await), Some(ReplicaError::NotFound), "three 30 ms reads of the source are under way");
            assert!(matches!(repair.await.expect("task").0, Some(StreamMsg::Done)));
            assert_eq!(data(&n.read(0, "x", len - 4, 10, None).await), vec![5u8; 4]);
        });
    }

    /// Two storage nodes (each running [`serve_storage`]) and a driver node
    /// in one zone: `story` runs on the driver with its own endpoint and
    /// talks to the nodes in the stream protocol's own messages.
    struct Nodes {
        net: Net<StreamMsg>,
        _inbox: Inbox<StreamMsg>,
        storage: Vec<NodeId>,
        disks: Vec<Disk>,
        observer: super::super::StreamObserver,
    }

    impl Nodes {
        async fn call(&self, node: usize, msg: StreamMsg) -> StreamMsg {
            self.net.call(self.storage[node], msg, Duration::from_secs(5)).await.expect("the storage node answers")
        }
        async fn append(&self, node: usize, extent: &str, epoch: u64, offset: u64, data: &[u8]) -> StreamMsg {
            let msg = StreamMsg::Append { extent: extent.into(), epoch, offset, data: data.to_vec(), crc: crc32fast::hash(data), commit_len: 0 };
            self.call(node, msg).await
        }
        async fn read(&self, node: usize, extent: &str, offset: u64, len: u64, limit: Option<u64>) -> StreamMsg {
            self.call(node, StreamMsg::Read { extent: extent.into(), offset, len, limit }).await
        }
        /// Sends `msg` to node `node` from a task of its own; the handle
        /// gives the answer (`None` if none came within 5 s) and its time.
        fn spawn(&self, node: usize, msg: StreamMsg) -> madsim::task::JoinHandle<(Option<StreamMsg>, sim::SimTime)> {
            let (net, to) = (self.net.clone(), self.storage[node]);
            madsim::task::spawn(async move {
                let r = net.call(to, msg, Duration::from_secs(5)).await.ok();
                (r, sim::time::now())
            })
        }
        async fn suspect(&self, node: usize) -> Vec<ExtentId> {
            match self.call(node, StreamMsg::Ping).await {
                StreamMsg::Pong { suspect } => suspect,
                other => panic!("a ping answered {other:?}"),
            }
        }
    }

    fn appended(m: &StreamMsg) -> Option<u64> {
        match m {
            StreamMsg::Appended { len } => Some(*len),
            _ => None,
        }
    }

    fn err(m: &StreamMsg) -> Option<ReplicaError> {
        match m {
            StreamMsg::Err(e) => Some(e.clone()),
            _ => None,
        }
    }

    fn data(m: &StreamMsg) -> Vec<u8> {
        match m {
            StreamMsg::Data { data, crc } => {
                assert_eq!(crc32fast::hash(data), *crc);
                data.clone()
            }
            other => panic!("a read answered {other:?}"),
        }
    }

    fn with_nodes<F: Future<Output = ()> + Send + 'static>(tune: impl FnOnce(&mut StreamConfig) + Send + 'static, story: impl FnOnce(Nodes) -> F + Send + 'static) {
        let nodes = |topo: &mut Topology| (vec![topo.add_node(ZoneId(0), "storage"), topo.add_node(ZoneId(0), "storage")], topo.add_node(ZoneId(0), "driver"));
        in_world(nodes, move |world, (storage, driver)| async move {
            let mut cfg = StreamConfig::new(Vec::new(), storage.clone());
            tune(&mut cfg);
            for &s in &storage {
                let c = cfg.clone();
                world.start_node(s, move |ctx| serve_storage(ctx, c.clone()));
            }
            let disks = storage.iter().map(|&s| world.disk(s)).collect();
            let story = std::sync::Mutex::new(Some((story, storage, disks, cfg.observer.clone())));
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let d2 = done.clone();
            world.start_node(driver, move |ctx| {
                let taken = story.lock().expect("story lock").take();
                let done = d2.clone();
                async move {
                    let Some((story, storage, disks, observer)) = taken else { return };
                    let (net, inbox) = Net::bind(&ctx).await;
                    story(Nodes { net, _inbox: inbox, storage, disks, observer }).await;
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                sim::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }

    #[test]
    fn a_retried_append_is_acknowledged_again_and_other_bytes_at_a_written_offset_conflict() {
        with_nodes(|_| {}, |n| async move {
            assert_eq!(appended(&n.append(0, "x", 1, 0, b"abc").await), Some(3));
            assert_eq!(appended(&n.append(0, "x", 1, 0, b"abc").await), Some(3), "the same bytes again: acknowledged again");
            assert_eq!(err(&n.append(0, "x", 1, 0, b"xyz").await), Some(ReplicaError::Conflict), "other bytes, same length");
            assert_eq!(err(&n.append(0, "x", 1, 0, b"ab").await), Some(ReplicaError::Conflict), "a shorter record at the same offset");
            assert_eq!(err(&n.append(0, "x", 1, 1, b"bcde").await), Some(ReplicaError::Conflict), "overlapping the written end");
            assert_eq!(appended(&n.append(0, "x", 1, 3, b"def").await), Some(6));
            assert_eq!(data(&n.read(0, "x", 0, 100, Some(6)).await), b"abcdef");
            // Malformed appends are refused and write nothing.
            let bad = |data: Vec<u8>, crc: u32| StreamMsg::Append { extent: "x".into(), epoch: 1, offset: 6, data, crc, commit_len: 0 };
            assert_eq!(err(&n.call(0, bad(b"ghi".to_vec(), 7)).await), Some(ReplicaError::BadRequest), "a wrong checksum");
            assert_eq!(err(&n.call(0, bad(Vec::new(), crc32fast::hash(b""))).await), Some(ReplicaError::BadRequest), "no bytes");
            let big = vec![7u8; RECORD_DATA_MAX as usize + 1];
            let crc = crc32fast::hash(&big);
            assert_eq!(err(&n.call(0, bad(big, crc)).await), Some(ReplicaError::BadRequest), "a record over RECORD_DATA_MAX");
            assert_eq!(appended(&n.append(0, "x", 1, 6, b"g").await), Some(7), "nothing was written at 6");
            let most = vec![8u8; RECORD_DATA_MAX as usize];
            assert_eq!(appended(&n.append(0, "x", 1, 7, &most).await), Some(7 + u64::from(RECORD_DATA_MAX)), "a record of RECORD_DATA_MAX is allowed");
        });
    }

    #[test]
    fn a_seal_fences_older_epochs_and_answers_the_durable_length() {
        with_nodes(|_| {}, |n| async move {
            assert_eq!(appended(&n.append(0, "x", 2, 0, b"abc").await), Some(3));
            assert!(matches!(n.call(0, StreamMsg::Seal { extent: "x".into(), epoch: 5 }).await, StreamMsg::SealedAt { len: 3, intact: true }));
            assert_eq!(err(&n.call(0, StreamMsg::Seal { extent: "x".into(), epoch: 3 }).await), Some(ReplicaError::Fenced { fence: 5 }), "an older epoch's seal");
            assert!(matches!(n.call(0, StreamMsg::Seal { extent: "x".into(), epoch: 5 }).await, StreamMsg::SealedAt { len: 3, .. }), "the same epoch's seal, retried");
            assert_eq!(err(&n.append(0, "x", 4, 3, b"d").await), Some(ReplicaError::Fenced { fence: 5 }));
            assert_eq!(err(&n.append(0, "x", 5, 3, b"d").await), Some(ReplicaError::Sealed { len: 3 }));
        });
    }

    #[test]
    fn a_removed_replica_leaves_no_file_and_no_data() {
        with_nodes(|_| {}, |n| async move {
            assert_eq!(appended(&n.append(0, "x", 1, 0, b"abc").await), Some(3));
            assert!(n.disks[0].exists(&file_name("x")));
            assert!(matches!(n.call(0, StreamMsg::Remove { extent: "x".into() }).await, StreamMsg::Done));
            assert!(!n.disks[0].exists(&file_name("x")), "the file is removed");
            assert_eq!(err(&n.read(0, "x", 0, 3, Some(3)).await), Some(ReplicaError::NotFound));
            assert!(matches!(n.call(0, StreamMsg::Remove { extent: "x".into() }).await, StreamMsg::Done), "removing it again is no error");
        });
    }

    #[test]
    fn a_read_or_a_settled_length_beyond_a_replica_lists_it_short() {
        with_nodes(|_| {}, |n| async move {
            assert_eq!(appended(&n.append(0, "x", 1, 0, b"abc").await), Some(3));
            assert_eq!(appended(&n.append(0, "y", 1, 0, b"abc").await), Some(3));
            // Without a limit a read stops at what the writer said was
            // acknowledged; with one, at the limit or the replica's end.
            assert_eq!(data(&n.read(0, "x", 0, 10, None).await), b"", "nothing committed yet");
            assert!(matches!(n.call(0, StreamMsg::Commit { extent: "x".into(), commit_len: 2 }).await, StreamMsg::Done));
            assert_eq!(data(&n.read(0, "x", 0, 10, None).await), b"ab");
            assert_eq!(data(&n.read(0, "x", 1, 10, Some(3)).await), b"bc");
            assert_eq!(data(&n.read(0, "x", 0, 2, Some(3)).await), b"ab", "no more than asked");
            assert!(n.suspect(0).await.is_empty());
            assert_eq!(data(&n.read(0, "x", 0, 10, Some(5)).await), b"abc", "a reader that knows 5 bytes");
            assert_eq!(n.suspect(0).await, vec!["x".to_string()], "the replica lists itself short");
            assert!(matches!(n.call(0, StreamMsg::Settled { extent: "y".into(), len: 3 }).await, StreamMsg::Done));
            assert_eq!(n.suspect(0).await, vec!["x".to_string()], "y holds its settled length");
            assert!(matches!(n.call(0, StreamMsg::Settled { extent: "y".into(), len: 4 }).await, StreamMsg::Done));
            assert_eq!(n.suspect(0).await, vec!["x".to_string(), "y".to_string()]);
        });
    }

    #[test]
    fn a_replica_told_of_an_extent_it_never_held_is_a_sealed_short_placeholder() {
        with_nodes(|_| {}, |n| async move {
            assert!(matches!(n.call(0, StreamMsg::Settled { extent: "z".into(), len: 5 }).await, StreamMsg::Done));
            assert_eq!(n.suspect(0).await, vec!["z".to_string()]);
            assert_eq!(data(&n.read(0, "z", 0, 10, None).await), b"", "it holds nothing yet");
            assert_eq!(err(&n.append(0, "z", 1, 0, b"late").await), Some(ReplicaError::Sealed { len: 0 }), "the placeholder is sealed");
            assert!(matches!(n.call(0, StreamMsg::Seal { extent: "z".into(), epoch: 2 }).await, StreamMsg::SealedAt { len: 0, .. }));
            assert!(n.disks[0].exists(&file_name("z")), "its fence is written to the extent's own file");
        });
    }

    #[test]
    fn a_repair_copies_an_extent_of_many_read_chunks_and_a_failed_one_leaves_a_placeholder() {
        with_nodes(|_| {}, |n| async move {
            // Node 1 holds 6 records of 100 KiB (past two READ_BYTES_MAX).
            let rec = |i: u8| (0..100 * 1024).map(|j| i.wrapping_mul(31).wrapping_add((j % 251) as u8)).collect::<Vec<u8>>();
            let mut all = Vec::new();
            for i in 0..6u8 {
                let r = rec(i);
                assert_eq!(appended(&n.append(1, "x", 1, all.len() as u64, &r).await), Some(all.len() as u64 + r.len() as u64));
                all.extend_from_slice(&r);
            }
            let len = all.len() as u64;
            assert!(len > 2 * READ_BYTES_MAX);
            assert!(matches!(n.call(1, StreamMsg::Seal { extent: "x".into(), epoch: 2 }).await, StreamMsg::SealedAt { .. }));
            assert!(matches!(n.call(0, StreamMsg::Repair { extent: "x".into(), len, sources: vec![n.storage[1]] }).await, StreamMsg::Done));
            let mut got = Vec::new();
            while (got.len() as u64) < len {
                let d = data(&n.read(0, "x", got.len() as u64, READ_BYTES_MAX, Some(len)).await);
                assert!(!d.is_empty(), "the copy ends at {} of {len}", got.len());
                got.extend_from_slice(&d);
            }
            assert!(got == all, "the copy holds the source's bytes at their offsets");
            assert_eq!(data(&n.read(0, "x", 300_000, 5, Some(len)).await), all[300_000..300_005].to_vec());
            // A replica already whole answers at once.
            assert!(matches!(n.call(0, StreamMsg::Repair { extent: "x".into(), len, sources: vec![n.storage[1]] }).await, StreamMsg::Done));
            // A copy from a source without the extent fails; the placeholder
            // left behind seals into the extent's own file.
            assert_eq!(err(&n.call(0, StreamMsg::Repair { extent: "w".into(), len: 10, sources: vec![n.storage[1]] }).await), Some(ReplicaError::Busy));
            assert!(matches!(n.call(0, StreamMsg::Seal { extent: "w".into(), epoch: 1 }).await, StreamMsg::SealedAt { len: 0, .. }));
            assert!(n.disks[0].exists(&file_name("w")));
        });
    }

    #[test]
    fn a_groups_cpu_time_is_what_its_appends_and_reads_cost_and_pings_go_first() {
        const MS: Duration = Duration::from_millis(1);
        let tune = |c: &mut StreamConfig| {
            c.costs.storage_append = 40 * MS;
            c.costs.storage_read = 60 * MS;
            c.costs.storage_kib = 10 * MS;
        };
        with_nodes(tune, |n| async move {
            let t0 = sim::time::now();
            assert_eq!(appended(&n.append(0, "x", 1, 0, &[1u8; 2048]).await), Some(2048));
            let took = sim::time::now().saturating_sub(t0);
            assert!(took >= 60 * MS, "an append of 2 KiB costs 40 ms + 2 x 10 ms: {took:?}");
            assert!(matches!(n.call(0, StreamMsg::Commit { extent: "x".into(), commit_len: 2048 }).await, StreamMsg::Done));
            let t0 = sim::time::now();
            assert_eq!(data(&n.read(0, "x", 0, 4096, None).await).len(), 2048);
            let took = sim::time::now().saturating_sub(t0);
            assert!(took >= 100 * MS, "a read asking for 4 KiB costs 60 ms + 4 x 10 ms: {took:?}");
            // While node 0 works on an append, a second append and a ping
            // arrive: they form the next group, whose ping is answered
            // before its append's CPU time.
            let one = |offset: u64| append_msg("x", offset, &[2u8; 1024]);
            let first = n.spawn(0, one(2048));
            sim::time::sleep(MS).await;
            let second = n.spawn(0, one(3072));
            let ping = n.spawn(0, StreamMsg::Ping);
            let (a, a_at) = first.await.expect("first");
            let (b, b_at) = second.await.expect("second");
            let (p, p_at) = ping.await.expect("ping");
            assert_eq!((a.as_ref().and_then(appended), b.as_ref().and_then(appended)), (Some(3072), Some(4096)), "both appends of the group are written");
            assert!(matches!(p, Some(StreamMsg::Pong { .. })));
            assert!(p_at.saturating_sub(a_at) < 20 * MS, "the ping waits for the first group only: {:?} after it", p_at.saturating_sub(a_at));
            assert!(b_at.saturating_sub(a_at) >= 50 * MS, "the second append pays its own CPU time");
        });
    }
}
