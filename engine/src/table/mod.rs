//! The table service: range partitions of tables served by table servers,
//! placed by a master, reached through proxies.
//!
//! - [`core`]: the master's pure core (failure detector, leases, zone-aware
//!   placement): events in, commands out; unit-tested directly.
//! - [`part`]: one partition's store: an LSM [`crate::lsm::Db`] on
//!   [`crate::stream::files::StreamFiles`] in namespace `p.{pid}`, with the
//!   request-id de-duplication table kept in the same write batches.
//! - [`server`]: the table server ([`server::serve`]).
//! - [`master`]: the master ([`master::serve`]), one per zone, one active.
//! - [`proxy`]: the proxy ([`proxy::serve`]): authentication, validation,
//!   routing through a cached partition map, read retries.
//! - [`routing`]: the proxy's pure cores: when to reread the partition
//!   map and metadata caches, where a scan goes on, what a server's answer
//!   means for the request; unit-tested directly.
//! - [`client`]: [`client::TableClient`], bound on a client node.
//! - [`hotkey`]: a table server's hot-key recognizer (pure core).
//! - [`hotzone`]: a proxy's HotZone, copies of hot keys' values served
//!   within a staleness bound (pure core).
//!
//! **Start-up API** (what `src/runner.rs` calls):
//! ```text
//! let mut cfg = TableConfig::new(meta_cfg, storage, masters, servers, proxies);
//! world.start_node(meta,    |ctx| engine::meta::service::serve(ctx, cfg.meta()));
//! world.start_node(storage, |ctx| engine::stream::replica::serve_storage(ctx, cfg.stream.clone()));
//! world.start_node(manager, |ctx| engine::stream::manager::serve_manager(ctx, cfg.stream.clone()));
//! world.start_node(master,  |ctx| engine::table::master::serve(ctx, cfg.clone()));
//! world.start_node(server,  |ctx| engine::table::server::serve(ctx, cfg.clone()));
//! world.start_node(proxy,   |ctx| engine::table::proxy::serve(ctx, cfg.clone()));
//! // on a client node:
//! let admin = TableClient::bind(&ctx, &cfg, "", "").await;
//! admin.create_instance("i1", "key1").await?;
//! admin.create_table("i1", "t", 4, vec!["k3".into(), "k6".into(), "k9".into()]).await?;
//! let c = TableClient::bind(&ctx, &cfg, "i1", "key1").await;
//! c.put("t", "k1", "v").await?;
//! ```
//! Every role survives a crash and restart of its node: its state is in the
//! metadata store and the streams.
//!
//! **Ownership and leases.** The partition map lives in the metadata store
//! (`tbl/part/{pid}`: table, key range, owner, owner epoch). The active
//! master answers every server heartbeat with a grant listing the
//! partitions the server owns; the server holds a lease on them until
//! `send time of the heartbeat + lease - max_skew` on its own clock, and
//! serves a partition only while it holds that lease (and after it loaded
//! the partition: `open_namespace`, which fences the previous owner's
//! writes, then LSM recovery from the streams). The master moves a
//! partition away from a server only once that server's last grant is
//! older than `lease + max_skew` on the master's clock, so the old owner has
//! stopped serving before the new owner loads, with clocks off by up to
//! `max_skew`. Heartbeats echo the master's send time of the last grant the
//! server received, so a server that the master hears but that does not
//! hear the master (one-way partition) is declared dead too. A server
//! heartbeats only the master whose grant it applied last, while that grant
//! is younger than [`server::GRANTER_FRESH_BEATS`] heartbeats, and every
//! master otherwise (at start, or once that master died or was deposed).
//!
//! **Master role.** Taken through the metadata store: `tbl/master/lease`
//! holds (holder, epoch, beat). The holder renews it every heartbeat and
//! acts as master only while its last renewal is younger than
//! `lease - max_skew`; another master takes over (epoch + 1, one Txn) after
//! seeing the value unchanged for `lease + max_skew`. Every map change is a
//! Txn that checks `tbl/master/epoch`, so a deposed master changes nothing.
//! A new master waits `lease + max_skew` before moving any partition (the
//! old master's grants may still be valid), but grants the map as stored at
//! once.
//!
//! **Split and merge copy data through a flush** (copy-on-split): the
//! master takes the parent(s) away from their owner (as for a move), opens
//! the parent namespace(s) itself (fencing every older owner), reads every
//! entry of the LSM (rows, auto-increment counters, de-duplication table)
//! and writes the entries of each child's key range into the child's new
//! namespace as one flushed LSM, then commits the new map in one Txn (the
//! parents' entries removed, the children's added, unowned); placement then
//! assigns the children like any unowned partition. The children therefore
//! own their data outright (no reference counting of shared files), at the
//! cost of one copy of the parent's data and unavailability of the parent's
//! range for the copy. An interrupted split leaves the map unchanged; a
//! retry reuses the child ids and rewrites their namespaces (deleting what
//! the interrupted copy left that the parent no longer holds). The
//! parents' namespaces are not reclaimed (known garbage).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sim::time::SimTime;
use sim::topology::NodeId;

use crate::meta::service::ServiceConfig;
use crate::stream::StreamConfig;

pub mod client;
pub mod core;
pub mod hotzone;
pub mod master;
pub mod part;
pub mod proxy;
pub mod hotkey;
pub mod quota;
pub mod routing;
pub mod server;

/// Tag of the data protocol (client, proxy, server); 1, 2, 50, 60 and 900
/// are taken.
pub const DATA_TAG: u16 = 70;
/// Tag of the control protocol (heartbeats, grants, admin calls).
pub const CONTROL_TAG: u16 = 71;

/// Longest row key or partition key, in bytes.
pub const KEY_BYTES_MAX: usize = 128;
/// Longest cell value, in bytes.
pub const CELL_BYTES_MAX: usize = 16 * 1024;
/// Most bytes of one row (value, column names and values).
pub const ROW_BYTES_MAX: usize = 64 * 1024;
/// Most extra columns of one row.
pub const COLUMNS_MAX: usize = 32;
/// Longest instance or table name.
pub const NAME_BYTES_MAX: usize = 64;
/// Most rows one scan returns.
pub const SCAN_ROWS_MAX: u32 = 1000;
/// Most partitions in the whole map.
pub const PARTITIONS_MAX: usize = 16_384;
/// Attempts at reading the whole map as one snapshot (see [`read_map`]).
pub const MAP_READ_ATTEMPTS_MAX: u32 = 8;
/// Request ids each partition remembers for de-duplication at most. A
/// record is kept until its request expired [`DEDUPE_RETAIN_MS`] ago; a
/// write that would need one more record than this while none has expired
/// is refused busy (before any work, no effect).
pub const DEDUPE_MAX: usize = 65_536;
/// How long after its request's expiry a de-duplication record is kept, on
/// the owner's clock: more than any clock offset between two owners of a
/// partition (the faults offset clocks by up to 2 s), so that no owner
/// accepts an attempt of a request whose record another owner dropped.
pub const DEDUPE_RETAIN_MS: u64 = 5_000;
/// Expired records one write removes at most.
pub const DEDUPE_EVICT_PER_WRITE: usize = 8;
/// Samples kept per observer series.
pub const OBSERVER_SAMPLES_MAX: usize = 100_000;
/// Partitions one heartbeat reports the load of.
pub const LOAD_REPORT_MAX: usize = 8192;

/// A partition's id (unique over all tables, never reused).
pub type PartitionId = u64;

/// One partition in the map, stored at `tbl/part/{pid}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub pid: PartitionId,
    pub instance: String,
    pub table: String,
    /// Inclusive start key ("" = the beginning).
    pub start: String,
    /// Exclusive end key (`None` = the end).
    pub end: Option<String>,
    pub owner: Option<NodeId>,
    /// Bumped by every owner change.
    pub epoch: u64,
}

impl PartitionInfo {
    pub fn contains(&self, key: &str) -> bool {
        key >= self.start.as_str() && self.end.as_deref().is_none_or(|e| key < e)
    }
    /// The stream namespace of the partition's LSM.
    pub fn namespace(&self) -> String {
        namespace_of(self.pid)
    }
}

pub fn namespace_of(pid: PartitionId) -> String {
    format!("p.{pid}")
}

/// Metadata keys.
pub const PART_PREFIX: &str = "tbl/part/";
pub const MASTER_LEASE_KEY: &str = "tbl/master/lease";
pub const MASTER_EPOCH_KEY: &str = "tbl/master/epoch";
pub const NEXT_PID_KEY: &str = "tbl/next-pid";
pub const INSTANCE_PREFIX: &str = "tbl/inst/";
pub const TABLE_PREFIX: &str = "tbl/table/";
/// An instance's quotas (see [`quota`]).
pub const QUOTA_PREFIX: &str = "tbl/quota/";
/// A table being created: its partition ids, until the table entry exists.
pub const CREATING_PREFIX: &str = "tbl/creating/";
/// Changed by every transaction that changes the partition map, so that a
/// map read in several pages can tell it saw one snapshot.
pub const MAP_VERSION_KEY: &str = "tbl/map-version";

pub fn part_key(pid: PartitionId) -> String {
    // Zero-padded so that a prefix scan lists partitions in id order.
    format!("{PART_PREFIX}{pid:012}")
}

pub fn instance_key(instance: &str) -> String {
    format!("{INSTANCE_PREFIX}{instance}")
}

pub fn table_key(instance: &str, table: &str) -> String {
    // Built by hand: the proxy computes it for every request, and `format!`
    // cost ten times as much.
    let mut k = String::with_capacity(TABLE_PREFIX.len() + instance.len() + 1 + table.len());
    k.push_str(TABLE_PREFIX);
    k.push_str(instance);
    k.push('/');
    k.push_str(table);
    k
}

pub fn creating_key(instance: &str, table: &str) -> String {
    format!("{CREATING_PREFIX}{instance}/{table}")
}

/// The partition map as one snapshot. A map of one scan page is one
/// linearizable read; a larger one is read in pages between two reads of
/// [`MAP_VERSION_KEY`], again until they agree (at most
/// [`MAP_READ_ATTEMPTS_MAX`] times), so that no reader mixes the map before
/// and after a split (whose parent and children would overlap).
pub async fn read_map(meta: &mut crate::meta::service::MetaClient) -> Result<Vec<PartitionInfo>, crate::meta::service::ClientError> {
    let page = crate::meta::service::SCAN_LIMIT_MAX;
    let first = meta.scan(PART_PREFIX, page).await?;
    let decode_all = |e: &[(String, Vec<u8>)]| e.iter().filter_map(|(_, v)| decode::<PartitionInfo>(v)).collect();
    if first.len() < page {
        return Ok(decode_all(&first));
    }
    for _ in 0..MAP_READ_ATTEMPTS_MAX {
        let before = meta.get(MAP_VERSION_KEY).await?;
        let all = meta.scan_all(PART_PREFIX, PARTITIONS_MAX).await?;
        if meta.get(MAP_VERSION_KEY).await? == before {
            return Ok(decode_all(&all));
        }
    }
    Err(crate::meta::service::ClientError::Unknown)
}

/// Decodes a JSON value from the metadata store; `None` if malformed.
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Option<T> {
    serde_json::from_slice(b).ok()
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data encodes")
}

/// Whether a name (instance, table) has an accepted shape.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= NAME_BYTES_MAX && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a row key has an accepted shape: 1..=[`KEY_BYTES_MAX`] printable
/// ASCII bytes without spaces.
pub fn valid_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= KEY_BYTES_MAX && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// A write's request id: (client id, counter). Retries reuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReqId {
    pub client: u64,
    pub seq: u64,
}

/// One row operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get { table: String, key: String },
    Put { table: String, key: String, value: String, columns: BTreeMap<String, String> },
    /// Conditional put: `expected` `None` = the row must not exist.
    Cas { table: String, key: String, expected: Option<String>, value: String },
    Delete { table: String, key: String },
    /// Auto-increment: the next value of the partition key's counter.
    Append { table: String, pkey: String },
    Scan { table: String, start: String, end: String, limit: u32 },
    /// A whole row: its value and its columns.
    GetRow { table: String, key: String },
}

impl Op {
    pub fn table(&self) -> &str {
        match self {
            Op::Get { table, .. } | Op::Put { table, .. } | Op::Cas { table, .. } | Op::Delete { table, .. } | Op::Append { table, .. } | Op::Scan { table, .. } | Op::GetRow { table, .. } => table,
        }
    }
    /// The key that routes the operation (a scan's start).
    pub fn route_key(&self) -> &str {
        match self {
            Op::Get { key, .. } | Op::Put { key, .. } | Op::Cas { key, .. } | Op::Delete { key, .. } | Op::GetRow { key, .. } => key,
            Op::Append { pkey, .. } => pkey,
            Op::Scan { start, .. } => start,
        }
    }
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. } | Op::Scan { .. } | Op::GetRow { .. })
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Get { .. } => "get",
            Op::GetRow { .. } => "get_row",
            Op::Put { .. } => "put",
            Op::Cas { .. } => "cas",
            Op::Delete { .. } => "delete",
            Op::Append { .. } => "append",
            Op::Scan { .. } => "scan",
        }
    }
}

/// A successful operation's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Value(Option<String>),
    Done,
    Seq(u64),
    /// Rows in key order, and whether the scan stopped at the partition's
    /// end before `end` and `limit` (the proxy continues in the next one).
    Rows { rows: Vec<(String, String)>, partial_end: Option<String> },
    /// A whole row (`GetRow`).
    Row(Option<part::RowVal>),
    /// A point read's value, and word that the key is hot (its owner's
    /// recognizer says so): the client may read it from a HotZone for a
    /// while. `filled_ns`: the value came from a proxy's HotZone copy whose
    /// source read was sent at this model time (`None`: from the owner).
    Hot { value: Option<String>, filled_ns: Option<u64> },
}

/// Errors on the wire and of the client API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TableError {
    /// Definitely not applied.
    #[error("failed: {0}")]
    Failed(String),
    /// A conditional write found another value (definitely not applied).
    #[error("condition failed, found {0:?}")]
    ConditionFailed(Option<String>),
    /// Refused by validation (definitely not applied).
    #[error("refused: {0}")]
    Refused(String),
    /// Missing or wrong access key, or another instance's table.
    #[error("not authorized: {0}")]
    Auth(String),
    /// The server does not serve this partition (definitely not applied).
    #[error("partition {0} not served here")]
    NotServingHere(PartitionId),
    /// Nobody serves the key now (definitely not applied; retry later).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// May or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// No capacity for the request: refused before any work was done
    /// (definitely not applied); retry after the hint.
    #[error("busy: {resource} (retry after {retry_after_us} us)")]
    Busy { resource: String, retry_after_us: u64 },
    /// Over a quota: refused before any work was done (definitely not
    /// applied); names the quota (instance, table, partition, operation
    /// kind) and why; retry after the hint.
    #[error("busy: throttled by {resource}: {reason} (retry after {retry_after_us} us)")]
    Throttled { resource: String, reason: String, retry_after_us: u64 },
    /// The request's expiry had passed `ago_ms` before a proxy or server
    /// would have started it: refused before any work (definitely not
    /// applied; its client has stopped waiting for it).
    #[error("failed: expired {ago_ms} ms ago")]
    Expired { ago_ms: u64 },
}

/// The answer to a request whose expiry (`expires_ms`, see
/// [`DataMsg::Request`]) is not after `now_ms`: [`TableError::Expired`].
pub fn expired(now_ms: u64, expires_ms: u64) -> Option<TableError> {
    (now_ms >= expires_ms).then(|| TableError::Expired { ago_ms: now_ms - expires_ms })
}

/// `t` in whole milliseconds, rounded up (a request's expiry).
pub fn ms_ceil(t: SimTime) -> u64 {
    t.as_nanos().div_ceil(1_000_000)
}

impl TableError {
    /// The refusal a node answers when its CPU's run queue is full.
    pub fn busy(resource: &str, b: sim::CpuBusy, cost: Duration) -> TableError {
        TableError::busy_for(resource, cost * b.waiting / b.cores.max(1))
    }

    /// The refusal a node answers when `resource` is full, with the client's
    /// pause before it tries again (at least 1 µs).
    pub fn busy_for(resource: &str, retry_after: Duration) -> TableError {
        TableError::Busy { resource: resource.to_string(), retry_after_us: u64::try_from(retry_after.as_micros()).unwrap_or(u64::MAX).max(1) }
    }
}

impl TableError {
    /// Whether the operation definitely did not happen.
    pub fn is_definite(&self) -> bool {
        !matches!(self, TableError::Unknown(_))
    }
}

/// Why a partition changed owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum FailoverCause {
    /// First assignment of a new partition.
    Initial,
    /// The owner was silent for `dead_after`.
    ServerDead,
    /// The owner reported it lost the partition (its lease ran out or its
    /// load failed) and asked for it to be placed again.
    LeaseLost,
    Moved,
    /// The master evened out the servers' partition counts (a zone or
    /// server came back).
    Rebalanced,
    /// Its owner was marked for removal (drained before it is taken away).
    Drained,
    Split,
    Merged,
}

/// One ownership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failover {
    pub at: SimTime,
    pub partition: PartitionId,
    pub from: Option<NodeId>,
    pub to: Option<NodeId>,
    pub cause: FailoverCause,
    /// When the master last heard the old owner (for `ServerDead`).
    pub last_heard: Option<SimTime>,
}

/// One server serving one partition at one epoch (true model time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServingInterval {
    pub partition: PartitionId,
    pub server: NodeId,
    pub epoch: u64,
    /// The partition's key range [start, end) (end `None` = the end).
    pub start_key: String,
    pub end_key: Option<String>,
    /// When the server began serving (loaded, lease held).
    pub start: SimTime,
    /// The last time a request of the partition took effect under its lease
    /// (a write's lease check, a read's value taken with the lease held),
    /// or `start`; the answer may leave later.
    pub last_served: SimTime,
    /// The last time a grant renewed its lease (or `start`): a crashed
    /// server was alive then.
    pub renewed: SimTime,
    /// When it stopped serving, if it noticed (a crash leaves it `None`).
    pub stopped: Option<SimTime>,
}

/// What the table service observed, as plain data for reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableObserverData {
    pub failovers: Vec<Failover>,
    pub serving: Vec<ServingInterval>,
    /// (time, master node, epoch) of every master takeover.
    pub master_takeovers: Vec<(SimTime, NodeId, u64)>,
    /// Requests refused by proxies' authentication, by reason.
    pub auth_refused: BTreeMap<String, u64>,
    /// Requests refused by validation.
    pub invalid_refused: u64,
    /// Writes answered from a partition's de-duplication table.
    pub dedupe_hits: u64,
    /// `NotServingHere` answers given by servers.
    pub not_serving: u64,
    /// Requests that reached a partition's data (for the auth story).
    pub data_requests: u64,
    /// (time, partition, load duration) of every partition load.
    pub loads: Vec<(SimTime, PartitionId, Duration)>,
    /// (time, instance) of every quota change the master committed.
    pub quota_changes: Vec<(SimTime, String)>,
    /// (server, time) a server marked for removal first held no partition
    /// (one entry per server).
    pub drained: Vec<(NodeId, SimTime)>,
    /// Requests offered, admitted and throttled per quota (its display,
    /// e.g. `instance b write`) or throttled partition (`partition 7`), per
    /// [`TRAFFIC_SLOT`] of true time (index from 0), over all proxies or
    /// servers.
    pub traffic: BTreeMap<(String, u64), quota::Counts>,
    /// Every key a table server's recognizer called hot or cooled down.
    pub hot_keys: Vec<HotKeyEvent>,
    /// Reads a proxy answered from its HotZone, per (proxy, second of true
    /// time).
    pub hotzone_hits: BTreeMap<(NodeId, u64), u64>,
    /// Point reads that reached the owner of a key it called hot (source
    /// reads), per (key, second of true time).
    pub hot_source_reads: BTreeMap<(String, u64), u64>,
    /// The age (ns) of every HotZone answer a client accepted, at its
    /// arrival (at most [`OBSERVER_SAMPLES_MAX`]).
    pub hotzone_ages: Vec<u64>,
    /// HotZone answers a client found older than the bound on arrival (it
    /// read the owner instead).
    pub hotzone_too_old: u64,
    /// The size of every combined batch of a hot key's puts (at most
    /// [`OBSERVER_SAMPLES_MAX`]).
    pub combined_batches: Vec<u32>,
    /// Engine writes of each hot key (combined batches and writes of a key
    /// called hot that were not combined), per (key, second of true time).
    pub hot_key_writes: BTreeMap<(String, u64), u64>,
}

/// A table server's recognizer called a key hot, or found it cooled down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HotKeyEvent {
    pub at: SimTime,
    pub server: NodeId,
    pub key: String,
    /// `qps`, `traffic`, or `cooled`.
    pub kind: String,
    pub reads_per_s: u64,
    pub writes_per_s: u64,
    pub bytes_per_s: u64,
}

/// The slot of [`TableObserverData::traffic`]'s counts.
pub const TRAFFIC_SLOT: Duration = Duration::from_millis(100);
/// Most (resource, slot) entries the observer keeps counts of.
pub const TRAFFIC_ENTRIES_MAX: usize = 200_000;

impl TableObserverData {
    /// Counts one request of `resource` at `at`.
    pub(crate) fn count_traffic(&mut self, resource: String, at: SimTime, f: impl FnOnce(&mut quota::Counts)) {
        let slot = at.as_nanos() / (TRAFFIC_SLOT.as_nanos() as u64);
        let len = self.traffic.len();
        match self.traffic.entry((resource, slot)) {
            std::collections::btree_map::Entry::Occupied(mut e) => f(e.get_mut()),
            std::collections::btree_map::Entry::Vacant(e) if len < TRAFFIC_ENTRIES_MAX => f(e.insert(quota::Counts::default())),
            std::collections::btree_map::Entry::Vacant(_) => {}
        }
    }

    /// Adds `n` to a per-(what, second) count, within
    /// [`TRAFFIC_ENTRIES_MAX`] entries.
    pub(crate) fn count_per_second<K: Ord>(map: &mut BTreeMap<(K, u64), u64>, what: K, at: SimTime, n: u64) {
        let second = at.as_nanos() / 1_000_000_000;
        let len = map.len();
        match map.entry((what, second)) {
            std::collections::btree_map::Entry::Occupied(mut e) => *e.get_mut() += n,
            std::collections::btree_map::Entry::Vacant(e) if len < TRAFFIC_ENTRIES_MAX => {
                e.insert(n);
            }
            std::collections::btree_map::Entry::Vacant(_) => {}
        }
    }
}

/// Shared sink of observations (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct TableObserver(Arc<Mutex<TableObserverData>>);

impl TableObserver {
    pub fn new() -> TableObserver {
        TableObserver::default()
    }
    pub fn snapshot(&self) -> TableObserverData {
        self.0.lock().expect("observer lock").clone()
    }
    /// A look at the data without copying it.
    pub fn with_data<R>(&self, f: impl FnOnce(&TableObserverData) -> R) -> R {
        f(&self.0.lock().expect("observer lock"))
    }
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut TableObserverData) -> R) -> R {
        let mut d = self.0.lock().expect("observer lock");
        let r = f(&mut d);
        if d.failovers.len() > OBSERVER_SAMPLES_MAX {
            d.failovers.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        if d.serving.len() > OBSERVER_SAMPLES_MAX {
            d.serving.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        if d.loads.len() > OBSERVER_SAMPLES_MAX {
            d.loads.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        if d.hot_keys.len() > OBSERVER_SAMPLES_MAX {
            d.hot_keys.drain(..OBSERVER_SAMPLES_MAX / 2);
        }
        r
    }
}

/// A bug the table service plants on purpose, to show that the checkers
/// find what it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Proxies serve HotZone copies up to four times the staleness bound
    /// old (refreshed only past twice the bound), and clients take them.
    HotzoneStale,
    /// A put that joins a combined batch is answered at once, before the
    /// batch is written.
    CombineEarlyAck,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 2] = [PlantedBug::HotzoneStale, PlantedBug::CombineEarlyAck];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::HotzoneStale => "hotzone-stale",
            PlantedBug::CombineEarlyAck => "combine-early-ack",
        }
    }

    pub fn from_name(name: &str) -> Option<PlantedBug> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// Configuration of every role of the table service.
#[derive(Clone, Debug)]
pub struct TableConfig {
    /// The servers' (and master's) stream clients; embeds the metadata
    /// store's configuration.
    pub stream: StreamConfig,
    pub masters: Vec<NodeId>,
    pub servers: Vec<NodeId>,
    pub proxies: Vec<NodeId>,
    /// How often servers heartbeat the master and the master renews its role.
    pub heartbeat: Duration,
    /// A server silent this long (no heartbeat echoing a recent grant) is dead.
    pub dead_after: Duration,
    /// Lease on partitions (servers) and on the master role.
    pub lease: Duration,
    /// Clock error the leases tolerate (they end this much early on the
    /// holder's clock, and are waited out this much longer by the grantor).
    pub max_skew: Duration,
    /// Timeout of one call (client to proxy, proxy to server, heartbeats).
    pub call_timeout: Duration,
    /// Client: an operation gives up after this long (model time).
    pub op_deadline: Duration,
    /// Client and proxy: pause before retrying after a definite failure
    /// that may clear (not serving, unavailable).
    pub retry_backoff: Duration,
    /// Proxy: how long it works on one request (retries included).
    pub proxy_budget: Duration,
    /// Proxy: how long a cached partition map is trusted without refresh.
    pub map_ttl: Duration,
    /// Proxy: how long an instance's access key is cached.
    pub auth_ttl: Duration,
    /// Table servers (and the master's split and merge copies): the memory
    /// of each partition they load.
    pub part_memory: part::PartMemory,
    /// Table servers: when a key is hot (see [`hotkey`]).
    pub hotkeys: hotkey::HotKeyConfig,
    /// Proxies and clients: how old a HotZone copy of a hot key may be
    /// when its reader gets it (the staleness the application tolerates).
    pub hot_staleness: Duration,
    /// Clients: how long they read a key from their HotZone after its
    /// owner last called it hot; each draws its own expiry between half of
    /// this and all of it, so that they do not return to the owner at once.
    pub hot_feedback: Duration,
    /// Table servers: how a hot key's puts are combined.
    pub combine: part::Combine,
    /// A bug planted on purpose (none in a real run).
    pub planted: Option<PlantedBug>,
    pub observer: TableObserver,
}

impl TableConfig {
    /// [`TableConfig::hot_staleness`] unless a deployment sets it.
    pub const HOT_STALENESS_DEFAULT: Duration = Duration::from_millis(100);

    pub fn new(meta: ServiceConfig, storage: Vec<NodeId>, masters: Vec<NodeId>, servers: Vec<NodeId>, proxies: Vec<NodeId>) -> TableConfig {
        let mut stream = StreamConfig::new(meta.replicas.clone(), storage);
        stream.meta = meta;
        // A partition load seals the open extent of each of its streams,
        // waiting for every replica's answer or this timeout: with a zone
        // down, it is paid once per stream on the failover path.
        stream.call_timeout = Duration::from_millis(50);
        // Only a partition's owner reads its streams (a new owner or the
        // master splitting it opens the namespace first, sealing the open
        // extents), up to its own acknowledged length: replicas need not
        // learn the committed length of an idle stream.
        stream.commit_when_idle = false;
        // A table server refuses excess work itself, before it takes it
        // on: a WAL append refused here would fail a write it admitted.
        stream.admission = None;
        TableConfig {
            stream,
            masters,
            servers,
            proxies,
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_millis(1000),
            lease: Duration::from_millis(600),
            max_skew: Duration::from_millis(200),
            call_timeout: Duration::from_millis(150),
            op_deadline: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(50),
            proxy_budget: Duration::from_millis(800),
            map_ttl: Duration::from_secs(2),
            auth_ttl: Duration::from_secs(2),
            part_memory: part::PartMemory::default(),
            hotkeys: hotkey::HotKeyConfig::default(),
            hot_staleness: Self::HOT_STALENESS_DEFAULT,
            hot_feedback: Duration::from_secs(1),
            combine: part::Combine { period: Duration::from_micros(100), max: 100, early_ack: false },
            planted: None,
            observer: TableObserver::new(),
        }
    }

    /// The metadata store's configuration.
    pub fn meta(&self) -> ServiceConfig {
        self.stream.meta.clone()
    }

    /// How old a HotZone copy may be when served: the staleness bound, or
    /// four times it with [`PlantedBug::HotzoneStale`].
    pub fn hotzone_age_max(&self) -> Duration {
        if self.planted == Some(PlantedBug::HotzoneStale) {
            self.hot_staleness * 4
        } else {
            self.hot_staleness
        }
    }

    /// The core's view of the tunables.
    pub fn core(&self) -> core::CoreConfig {
        core::CoreConfig { lease: self.lease, max_skew: self.max_skew, dead_after: self.dead_after }
    }
}

/// The data protocol: client to proxy, proxy to server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DataMsg {
    /// Client to proxy. Writes carry a request id. `expires_ms` is the
    /// operation's deadline on the client's clock (milliseconds): no proxy
    /// or server starts work on it later, and no attempt of a write is
    /// applied once it passed on the owner's clock (see [`DEDUPE_RETAIN_MS`]).
    /// `hot`: a point read of a key the client was told is hot, sent to
    /// the proxy it chose as its HotZone for it: served from the proxy's
    /// copy when one is young enough (see [`hotzone`]).
    Request { instance: String, access_key: String, op: Op, rid: Option<ReqId>, expires_ms: u64, hot: bool },
    /// Proxy to server: an operation on one partition at the epoch the
    /// proxy's map names, with the client's expiry. `hits`: reads of the
    /// key the proxy's HotZone answered since its last read of it here (the
    /// owner's hot-key recognizer counts them).
    Partition { pid: PartitionId, op: Op, rid: Option<ReqId>, expires_ms: u64, hits: u64 },
    Response(Result<OpResult, TableError>),
}

impl sim::net::Message for DataMsg {
    const TAG: u16 = DATA_TAG;
    fn kind(&self) -> &'static str {
        match self {
            DataMsg::Request { .. } => "tb-request",
            DataMsg::Partition { .. } => "tb-partition",
            DataMsg::Response(Ok(_)) => "tb-ok",
            DataMsg::Response(Err(_)) => "tb-err",
        }
    }
}

/// Administrative operations, answered by the active master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    CreateInstance { name: String, access_key: String },
    /// `splits` are the keys between partitions (`partitions - 1` of them,
    /// increasing); empty splits with `partitions` > 1 are refused.
    CreateTable { instance: String, table: String, partitions: u32, splits: Vec<String> },
    Move { pid: PartitionId, to: NodeId },
    Split { pid: PartitionId, at: String },
    /// Merges `left` with its right neighbour `right`.
    Merge { left: PartitionId, right: PartitionId },
    /// Replaces an instance's quotas (at most
    /// [`quota::QUOTAS_PER_INSTANCE_MAX`]; empty: no limits).
    SetQuota { instance: String, entries: Vec<quota::QuotaEntry> },
}

/// The control protocol: servers and admin clients to masters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControlMsg {
    /// Server to masters. `echo` is the master send time (master clock) of
    /// the last grant the server received from `master_epoch`; `lost` lists
    /// partitions it was granted but could not load.
    /// `load` is the CPU time (µs) each partition's requests cost the
    /// server since its last heartbeat (at most [`LOAD_REPORT_MAX`]).
    /// `draining`: an operator marked the server for removal.
    Heartbeat { echo: Option<(u64, SimTime)>, lost: Vec<(PartitionId, u64)>, load: Vec<(PartitionId, u64)>, draining: bool },
    /// Master to server: the partitions (pid, owner epoch) the server owns.
    Grant { master_epoch: u64, sent: SimTime, parts: Vec<(PartitionId, u64)> },
    NotMaster,
    /// Server to server's old owner, master to server: give up a partition
    /// now (a planned move), answered `Released`.
    Release { pid: PartitionId, epoch: u64 },
    Released,
    Admin(AdminOp),
    AdminDone(Result<Vec<PartitionId>, TableError>),
    /// Proxy to masters, every heartbeat: its demand and what it holds.
    Quota(quota::QuotaReport),
    /// The active master's answer to `Quota`.
    QuotaGrant(quota::QuotaGrant),
}

impl sim::net::Message for ControlMsg {
    const TAG: u16 = CONTROL_TAG;
    fn kind(&self) -> &'static str {
        match self {
            ControlMsg::Heartbeat { .. } => "tb-heartbeat",
            ControlMsg::Grant { .. } => "tb-grant",
            ControlMsg::NotMaster => "tb-not-master",
            ControlMsg::Release { .. } => "tb-release",
            ControlMsg::Released => "tb-released",
            ControlMsg::Admin(_) => "tb-admin",
            ControlMsg::AdminDone(_) => "tb-admin-done",
            ControlMsg::Quota(_) => "tb-quota",
            ControlMsg::QuotaGrant(_) => "tb-quota-grant",
        }
    }
}
