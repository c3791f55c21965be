//! The stream layer: append-only **streams** made of **extents**, each
//! extent with three replicas on storage nodes in three zones, acknowledged
//! only when all three replicas hold the bytes on disk (RPO 0). Stream and
//! extent metadata live in the metadata store ([`crate::meta`]).
//!
//! - [`format`]: the replica file format (framed, checksummed records and
//!   fence records) and its recovery scan; pure, no I/O.
//! - [`replica`]: the storage node ([`replica::serve_storage`]): one file
//!   per extent replica, group commit, fencing, reorder buffer, repair.
//! - [`client`]: [`client::StreamClient`] (reads from any node, opening
//!   namespaces) and [`client::Namespace`] (the owner: appends, pipelined,
//!   sealing and switching extents on failures).
//! - [`files`]: [`files::StreamFiles`], [`crate::fs::Files`] on a namespace.
//! - [`manager`]: heartbeats, the live set, re-replication of sealed extents.
//!
//! **Namespaces and epochs.** A namespace has one owner epoch at a time
//! (`ns/{ns}`). [`client::StreamClient::open_namespace`] bumps it, then
//! fences and seals the last open extent of every stream: each replica
//! durably records the fence and from then on rejects appends of older
//! epochs, and answers its durable length and whether it is intact; the
//! extent is sealed at the minimum length over the intact replicas that
//! answered. Every acknowledged byte is on all three replicas, so it is
//! below that length; bytes above the acknowledged length and below the
//! seal had an unknown outcome. A replica whose recovery cut a bad tail,
//! found a damaged record or could not read its file is not intact: it may
//! have lost bytes it acknowledged (a bit flip at rest looks like a torn
//! write), so its length bounds nothing
//! ([`client::seal_length`]). Such replicas are listed in their node's
//! `Pong`, and the manager has them copied back once the extent is sealed. Every
//! metadata change an owner makes is one [`crate::meta::state::Command::Txn`]
//! checking that `ns/{ns}` still holds its epoch and that the stream's
//! metadata is what it last saw, so a deposed owner can change nothing.
//!
//! **Reads** return only committed bytes: below `sealed_len` of a sealed
//! extent; below the replica's known commit length (piggybacked on appends
//! by the writer) or the owner's own acknowledged length for the open
//! extent. So two readers never see different bytes at one offset.
//!
//! Deviation from the design brief: extent ids are strings
//! `"{ns}/{name}/{epoch}/{n}"` with `n` counted by the owner in memory:
//! within one epoch there is one owner, and a restarted owner opens a new
//! epoch, so the ids are unique without a counter key in every Txn.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sim::time::SimTime;
use sim::topology::NodeId;

use crate::meta::service::{ClientError, ServiceConfig};

pub mod client;
pub mod files;
pub mod format;
pub mod manager;
pub mod replica;

/// The message tag of the stream protocol (1, 2, 50 and 900 are taken).
pub const STREAM_TAG: u16 = 60;
/// Appends one namespace's stream may have queued or in flight.
pub const APPEND_QUEUE_MAX: usize = 1024;
/// Most bytes grouped into one append batch.
pub const BATCH_BYTES_MAX: usize = 128 * 1024;
/// Batches one stream keeps in flight at once.
pub const PIPELINE_MAX: usize = 8;
/// Appends ahead of its length one replica holds per extent, waiting for
/// the gap to fill (the network may reorder).
pub const REORDER_MAX: usize = 64;
/// Attempts at sending one batch to one replica before the writer gives up
/// on that replica and seals the extent.
pub const APPEND_ATTEMPTS_MAX: u32 = 3;
/// Messages one storage node handles in one group (one sync per file).
pub const GROUP_MAX: usize = 256;
/// Clients' appends and reads one storage node queues for its worker; one
/// more is refused `ReplicaError::Busy` at once. Work owners and the
/// manager owe (seals, commits, repairs, removals), bounded by its senders,
/// is refused only when the queue holds twice this; pings never queue. One group
/// waiting behind the one being written keeps an admitted message's wait
/// within a call timeout at the default disk (a group of distinct extents
/// syncs each once).
pub const DATA_QUEUE_MAX: usize = GROUP_MAX;
/// Most bytes one read message returns.
pub const READ_BYTES_MAX: u64 = 256 * 1024;
/// The smallest chunk a reader shrinks its reads to when every replica
/// timed out.
pub const READ_BYTES_MIN: u64 = 4 * 1024;
/// Rounds of seal messages before opening a namespace gives up on an extent.
pub const SEAL_ROUNDS_MAX: u32 = 20;
/// Times a new owner tells a replica that missed the seal the sealed
/// length (`StreamMsg::Settled`), a call timeout apart.
pub const SETTLE_ATTEMPTS_MAX: u32 = 20;
/// Attempts at one metadata transaction (after unknown outcomes or
/// concurrent replica changes by the manager).
pub const META_ATTEMPTS_MAX: u32 = 8;
/// How often a writer whose open extent spans fewer zones than the
/// storage nodes do asks whether a missing zone answers again.
pub const DEGRADED_RECHECK: Duration = Duration::from_secs(1);
/// Checks one such writer makes before it stops asking (an hour's worth).
pub const DEGRADED_CHECKS_MAX: u32 = 3600;
/// Metadata sessions one stream client keeps, so that this many of its
/// metadata requests (say, of partitions loading at once) are out together.
pub const META_SESSIONS: usize = 16;
/// Opens and reads one stream client lets wait for or use its metadata
/// sessions at once ([`Admission`]).
pub const META_ADMITTED_MAX: usize = 64;
/// Appends one stream client lets queue at its writers or be in flight at
/// once ([`Admission`]).
pub const APPENDS_ADMITTED_MAX: usize = 512;
/// Busy answers one batch takes from one replica, each followed by a
/// jittered wait of about a quarter of the call timeout, before the writer
/// counts that replica failing (a busy replica is alive: sealing its
/// extent would only add work).
pub const APPEND_BUSY_MAX: u32 = 16;
/// Streams one namespace may hold (one `Scan`).
pub const STREAMS_MAX: usize = crate::meta::service::SCAN_LIMIT_MAX;
/// Streams the manager looks after (all namespaces; read in pages).
pub const MANAGED_STREAMS_MAX: usize = 1 << 20;
/// Extents one stream's metadata may list.
pub const EXTENTS_MAX: usize = 1024;
/// Sealed extents one manager round re-replicates at most.
pub const REREPLICATE_PARALLEL_MAX: usize = 32;
/// Suspect (damaged or short) extents a storage node lists in one `Pong`.
pub const SUSPECT_REPORT_MAX: usize = 64;
/// Samples kept per observer series.
pub const OBSERVER_SAMPLES_MAX: usize = 100_000;

/// An extent's unique id (see the module doc).
pub type ExtentId = String;

/// One extent in a stream's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentMeta {
    pub id: ExtentId,
    pub replicas: Vec<NodeId>,
    /// Set once the extent is sealed: its final length.
    pub sealed_len: Option<u64>,
}

/// A stream's metadata, stored at `st/{ns}/{name}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub extents: Vec<ExtentMeta>,
}

impl StreamMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.extents.len() as u32).to_le_bytes());
        for e in &self.extents {
            out.extend_from_slice(&(e.id.len() as u32).to_le_bytes());
            out.extend_from_slice(e.id.as_bytes());
            out.push(e.replicas.len() as u8);
            for r in &e.replicas {
                out.extend_from_slice(&r.0.to_le_bytes());
            }
            match e.sealed_len {
                None => out.push(0),
                Some(l) => {
                    out.push(1);
                    out.extend_from_slice(&l.to_le_bytes());
                }
            }
        }
        out
    }

    /// `None` for bytes that are not an encoded `StreamMeta`.
    pub fn decode(b: &[u8]) -> Option<StreamMeta> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(at..at.checked_add(n)?)?;
            at += n;
            Some(s)
        };
        let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        if n > EXTENTS_MAX {
            return None;
        }
        let mut extents = Vec::with_capacity(n);
        for _ in 0..n {
            let l = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let id = String::from_utf8(take(l)?.to_vec()).ok()?;
            let r = take(1)?[0] as usize;
            let mut replicas = Vec::with_capacity(r);
            for _ in 0..r {
                replicas.push(NodeId(u32::from_le_bytes(take(4)?.try_into().ok()?)));
            }
            let sealed_len = match take(1)?[0] {
                0 => None,
                1 => Some(u64::from_le_bytes(take(8)?.try_into().ok()?)),
                _ => return None,
            };
            extents.push(ExtentMeta { id, replicas, sealed_len });
        }
        if at != b.len() {
            return None;
        }
        Some(StreamMeta { extents })
    }

    /// Sum of the sealed lengths of the extents before `i`.
    pub fn base_of(&self, i: usize) -> u64 {
        self.extents[..i].iter().map(|e| e.sealed_len.unwrap_or(0)).sum()
    }
}

/// The metadata key of a namespace's owner epoch.
pub fn ns_key(ns: &str) -> String {
    format!("ns/{ns}")
}

/// The metadata key of a stream.
pub fn stream_key(ns: &str, name: &str) -> String {
    format!("st/{ns}/{name}")
}

/// Errors a replica answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    #[error("fenced by epoch {fence}")]
    Fenced { fence: u64 },
    #[error("extent sealed at {len}")]
    Sealed { len: u64 },
    #[error("different bytes at this offset")]
    Conflict,
    #[error("replica data corrupt")]
    Corrupt,
    #[error("no such extent")]
    NotFound,
    #[error("replica busy")]
    Busy,
    #[error("disk error")]
    Io,
    #[error("bad request")]
    BadRequest,
}

/// The stream protocol: requests, and the responses to them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StreamMsg {
    /// Append `data` at `offset` of the extent's replica. `commit_len` is
    /// the writer's acknowledged length of the extent.
    Append { extent: ExtentId, epoch: u64, offset: u64, data: Vec<u8>, crc: u32, commit_len: u64 },
    /// The writer's acknowledged length, sent when it goes idle (a request,
    /// retried, answered `Done`).
    Commit { extent: ExtentId, commit_len: u64 },
    /// Fence older epochs and stop appends; answered with the durable length.
    Seal { extent: ExtentId, epoch: u64 },
    /// Bytes `[offset, offset + len)`, at most up to `limit` (the committed
    /// length the reader knows) or else the replica's commit length.
    Read { extent: ExtentId, offset: u64, len: u64, limit: Option<u64> },
    /// Copy the sealed extent (`len` bytes) from one of `sources` and swap
    /// it in; creates the replica when it is missing.
    Repair { extent: ExtentId, len: u64, sources: Vec<NodeId> },
    /// The extent is sealed at `len` in the metadata; sent by the new owner
    /// that sealed it to the replicas whose answer it did not wait for. A
    /// replica that holds fewer bytes (or no copy) lists itself suspect,
    /// so the manager copies the extent to it.
    Settled { extent: ExtentId, len: u64 },
    /// Drop the replica (no longer referenced by metadata).
    Remove { extent: ExtentId },
    /// Liveness probe.
    Ping,
    Appended { len: u64 },
    /// The replica's durable length once sealed; `intact` is false when
    /// the replica may have lost bytes it acknowledged (its recovery cut a
    /// bad tail, found a damaged record or could not read the file), so
    /// that length is no bound on what was acknowledged.
    SealedAt { len: u64, intact: bool },
    Data { data: Vec<u8>, crc: u32 },
    /// The answer to `Ping`: the extents this node holds damaged, or
    /// short of what they may have acknowledged (at most
    /// [`SUSPECT_REPORT_MAX`]), for the manager to repair once sealed.
    Pong { suspect: Vec<ExtentId> },
    Done,
    Err(ReplicaError),
}

impl sim::net::Message for StreamMsg {
    const TAG: u16 = STREAM_TAG;
    fn kind(&self) -> &'static str {
        match self {
            StreamMsg::Append { .. } => "st-append",
            StreamMsg::Commit { .. } => "st-commit",
            StreamMsg::Seal { .. } => "st-seal",
            StreamMsg::Read { .. } => "st-read",
            StreamMsg::Repair { .. } => "st-repair",
            StreamMsg::Settled { .. } => "st-settled",
            StreamMsg::Remove { .. } => "st-remove",
            StreamMsg::Ping => "st-ping",
            StreamMsg::Appended { .. } => "st-appended",
            StreamMsg::SealedAt { .. } => "st-sealed",
            StreamMsg::Data { .. } => "st-data",
            StreamMsg::Pong { .. } => "st-pong",
            StreamMsg::Done => "st-done",
            StreamMsg::Err(_) => "st-err",
        }
    }
}

/// Errors of the stream layer's API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Another owner opened the namespace with a newer epoch: stop.
    #[error("namespace owner fenced by a newer epoch")]
    Fenced,
    #[error("stream not found: {0}")]
    NotFound(String),
    #[error("stream already exists: {0}")]
    AlreadyExists(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Every replica that answered was corrupt or short.
    #[error("no good replica for extent {0}")]
    NoGoodReplica(ExtentId),
    #[error("metadata: {0}")]
    Meta(#[from] ClientError),
    #[error("bad stream metadata at {0}")]
    BadMeta(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("the stream's writer stopped")]
    WriterGone,
    /// Refused at once for lack of capacity, having had no effect
    /// ([`Admission`]): retry later.
    #[error("busy: {0}")]
    Busy(String),
}

/// Why an extent was sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SealCause {
    /// A replica kept failing.
    ReplicaFailed,
    /// The extent reached its size limit.
    Full,
    /// A new owner opened the namespace.
    OwnerChange,
    /// The extent's replicas span fewer zones than the storage nodes do,
    /// and a storage node of a missing zone answers again: the writer
    /// moves on to an extent placed over every zone (the manager then
    /// moves the sealed one's replicas).
    ZoneBack,
}

/// What the layer observed, as plain data for reports.
#[derive(Clone, Debug, Default)]
pub struct ObserverData {
    /// (ack time, latency) of each append batch.
    pub batch_latencies: Vec<(SimTime, Duration)>,
    /// Bytes per acknowledged batch.
    pub batch_bytes: Vec<u64>,
    pub seals: Vec<(SimTime, SealCause)>,
    /// (time, extents with fewer than three good replicas in three zones).
    pub under_replicated: Vec<(SimTime, u64)>,
    pub bytes_rereplicated: u64,
    /// Replicas a node replaced by a checked copy of their sealed extent.
    pub repairs: u64,
    /// Repairs per replica (extent, node), for at most
    /// [`OBSERVER_SAMPLES_MAX`] replicas (`repairs` counts them all).
    pub repairs_by_replica: BTreeMap<(ExtentId, NodeId), u64>,
    pub corrupt_replicas_detected: u64,
    pub fenced_appends_rejected: u64,
    pub read_fallbacks: u64,
    /// Opens, reads and appends a client refused at once, busy
    /// ([`Admission`]).
    pub refused_busy: u64,
    /// When reads fell back (the newest [`OBSERVER_SAMPLES_MAX`] or more).
    pub read_fallback_times: Vec<SimTime>,
    /// The metadata replica the acting manager last found leading.
    pub meta_leader: Option<NodeId>,
    /// The end-of-run audit was asked for ([`StreamObserver::request_audit`]).
    pub audit_requested: bool,
    /// The audit's verdict, once the acting manager ran its last round.
    pub audit: Option<manager::Audit>,
    /// Audit rounds run, and the bad replicas the ones before the verdict
    /// found.
    pub audit_rounds: u32,
    pub audit_found: u64,
}

/// Shared sink of observations (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct StreamObserver(Arc<Mutex<ObserverData>>);

impl StreamObserver {
    pub fn new() -> StreamObserver {
        StreamObserver::default()
    }
    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> ObserverData {
        self.0.lock().expect("observer lock").clone()
    }
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut ObserverData) -> R) -> R {
        let mut d = self.0.lock().expect("observer lock");
        let r = f(&mut d);
        // Keep every series bounded.
        if d.batch_latencies.len() > OBSERVER_SAMPLES_MAX {
            d.batch_latencies.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        if d.batch_bytes.len() > OBSERVER_SAMPLES_MAX {
            d.batch_bytes.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        if d.under_replicated.len() > OBSERVER_SAMPLES_MAX {
            d.under_replicated.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        if d.seals.len() > OBSERVER_SAMPLES_MAX {
            d.seals.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        if d.read_fallback_times.len() > OBSERVER_SAMPLES_MAX {
            d.read_fallback_times.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        r
    }

    /// Asks the acting manager to audit every sealed extent's replicas
    /// once the layer has settled (nothing under-replicated, no replica
    /// suspect): the run is over and nothing should change any more.
    pub fn request_audit(&self) {
        self.with(|o| o.audit_requested = true);
    }

    /// A read fell back to another replica at `at`.
    pub(crate) fn read_fell_back(&self, at: SimTime) {
        self.with(|o| {
            o.read_fallbacks += 1;
            o.read_fallback_times.push(at);
        });
    }

    /// Node `node` swapped a repaired copy of `extent` in.
    pub(crate) fn repaired(&self, extent: &str, node: NodeId) {
        self.with(|o| {
            o.repairs += 1;
            let key = (extent.to_string(), node);
            if o.repairs_by_replica.len() < OBSERVER_SAMPLES_MAX || o.repairs_by_replica.contains_key(&key) {
                *o.repairs_by_replica.entry(key).or_default() += 1;
            }
        });
    }
}

/// Configuration of storage nodes, clients and managers.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub meta: ServiceConfig,
    /// Every storage node.
    pub storage: Vec<NodeId>,
    /// Timeout of one call to a storage node.
    pub call_timeout: Duration,
    /// Timeout of the pings placement sends to every storage node (it
    /// waits for the slowest, so a dead node costs this much per new extent).
    pub ping_timeout: Duration,
    /// A node that failed a call is avoided by placement for this long.
    pub avoid_for: Duration,
    /// Manager: how often it pings storage nodes.
    pub heartbeat: Duration,
    /// Manager: a node silent this long is dead.
    pub dead_after: Duration,
    /// Manager: grace period before re-replicating a dead node's replicas.
    pub rereplicate_after: Duration,
    pub extent_bytes_max: u64,
    /// Opening a namespace gives up sealing an extent after this long.
    pub seal_deadline: Duration,
    /// Whether a writer that goes idle tells the open extent's replicas its
    /// committed length (one `Commit` call per replica), so that readers
    /// other than the owner see the acknowledged tail of the open extent.
    /// Off where only the owner reads its streams (the table service: an
    /// owner reads up to its own acknowledged length, and a new owner seals
    /// before it reads): the calls would cost two messages per replica per
    /// write and be read by nobody.
    pub commit_when_idle: bool,
    /// What one client admits before it refuses more, busy; `None`
    /// admits everything.
    pub admission: Option<Admission>,
    /// What work costs on the nodes' CPUs (storage nodes and, through the
    /// table service's configuration, the table roles).
    pub costs: crate::cost::Costs,
    pub observer: StreamObserver,
}

/// How much work one stream client admits at once. One more open or
/// read, or one more append, is refused at once with
/// [`StreamError::Busy`], before anything of it left the node, so a
/// saturated client answers instead of queueing without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Opens and reads waiting for or using the metadata sessions.
    pub meta: usize,
    /// Appends queued at the client's writers or in flight.
    pub appends: usize,
}

impl Default for Admission {
    fn default() -> Admission {
        Admission { meta: META_ADMITTED_MAX, appends: APPENDS_ADMITTED_MAX }
    }
}

impl StreamConfig {
    pub fn new(meta_nodes: Vec<NodeId>, storage_nodes: Vec<NodeId>) -> StreamConfig {
        StreamConfig {
            meta: ServiceConfig::new(meta_nodes),
            storage: storage_nodes,
            call_timeout: Duration::from_millis(100),
            ping_timeout: Duration::from_millis(20),
            avoid_for: Duration::from_secs(2),
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_secs(1),
            rereplicate_after: Duration::from_secs(5),
            extent_bytes_max: 4 << 20,
            seal_deadline: Duration::from_secs(5),
            commit_when_idle: true,
            admission: Some(Admission::default()),
            costs: crate::cost::Costs::default(),
            observer: StreamObserver::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_meta_round_trips_and_rejects_garbage() {
        let m = StreamMeta {
            extents: vec![
                ExtentMeta { id: "a/b/1/0".into(), replicas: vec![NodeId(1), NodeId(4), NodeId(7)], sealed_len: Some(99) },
                ExtentMeta { id: "a/b/1/1".into(), replicas: vec![NodeId(2), NodeId(5), NodeId(8)], sealed_len: None },
            ],
        };
        let b = m.encode();
        assert_eq!(StreamMeta::decode(&b), Some(m.clone()));
        assert_eq!(m.base_of(1), 99);
        for cut in 0..b.len() {
            assert_eq!(StreamMeta::decode(&b[..cut]), None, "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(StreamMeta::decode(&extra), None);
    }
}
