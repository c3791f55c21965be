//! The proxy's routing decisions as pure cores, which the proxy's shell
//! ([`super::proxy`]) drives with the time and what it read:
//!
//! - [`MapCache`]: the cached partition map, and when to read it again
//!   (whole, or one entry), and which partition holds a key;
//! - [`TtlCache`]: metadata values behind authentication (access keys,
//!   table entries), fresh for a time-to-live, trusted a while longer when
//!   the metadata store cannot be reached;
//! - [`scan_next`]: where a scan that crosses partitions goes on;
//! - [`after_answer`]: what one server's answer means for the request.
//!
//! None of them does I/O or reads a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use sim::net::NetError;
use sim::time::SimTime;
use sim::topology::NodeId;

use super::*;

/// Instances (or tables) whose metadata one [`TtlCache`] holds.
pub const AUTH_CACHE_MAX: usize = 1024;
/// Oldest cached access key or table entry a proxy uses while the
/// metadata store cannot be reached.
pub const AUTH_STALE_MAX: Duration = Duration::from_secs(30);
/// Least time between two reads of the whole map (when asked for, before
/// its time-to-live ran out) or of one entry.
pub const MAP_REFRESH_MIN: Duration = Duration::from_millis(20);

/// What to read from the metadata store before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reread {
    /// Nothing beyond what the map's age asks for.
    Nothing,
    /// This partition's entry, on its own.
    Entry(PartitionId),
    /// The whole map (if it was not read within [`MAP_REFRESH_MIN`]).
    Whole,
}

/// The proxy's cached partition map.
#[derive(Debug)]
pub struct MapCache {
    /// Sorted by (instance, table, start).
    parts: Vec<PartitionInfo>,
    fetched: Option<SimTime>,
    /// When each partition's entry was last read on its own.
    entry_fetched: BTreeMap<PartitionId, SimTime>,
    ttl: Duration,
    /// A map of fewer entries than this is read whole (one read) rather
    /// than entry by entry.
    page: usize,
}

impl MapCache {
    /// An empty map, read again after `ttl`; `page` is the metadata store's
    /// scan page.
    pub fn new(ttl: Duration, page: usize) -> Self {
        Self { parts: Vec::new(), fetched: None, entry_fetched: BTreeMap::new(), ttl, page }
    }

    /// What to read after partition `stale` was found out of date (a server
    /// refused it, did not answer, or it had no owner). A map of one page
    /// is read whole; in a larger one only the stale entry, at most once
    /// per [`MAP_REFRESH_MIN`], so that requests that found it stale
    /// together share one read.
    pub fn reread(&self, stale: Option<PartitionId>, now: SimTime) -> Reread {
        match stale {
            None => Reread::Nothing,
            Some(_) if self.parts.len() < self.page => Reread::Whole,
            Some(pid) if self.entry_due(pid, now) => Reread::Entry(pid),
            Some(_) => Reread::Nothing,
        }
    }

    /// Whether partition `pid`'s entry was not read within
    /// [`MAP_REFRESH_MIN`] of `now`.
    pub fn entry_due(&self, pid: PartitionId, now: SimTime) -> bool {
        self.entry_fetched.get(&pid).is_none_or(|&t| now.saturating_sub(t) >= MAP_REFRESH_MIN)
    }

    /// Takes the answer to a read of `pid`'s entry at `now`: `None` when
    /// the read failed, `Some(None)` when the entry is gone. Returns true
    /// when the whole map must be read (the partition was split or merged
    /// away).
    pub fn entry_read(&mut self, pid: PartitionId, got: Option<Option<PartitionInfo>>, now: SimTime) -> bool {
        if self.entry_fetched.len() >= PARTITIONS_MAX {
            self.entry_fetched.clear();
        }
        self.entry_fetched.insert(pid, now);
        match got {
            Some(Some(info)) => {
                if let Some(e) = self.parts.iter_mut().find(|p| p.pid == pid) {
                    *e = info;
                }
                false
            }
            Some(None) => true,
            None => false,
        }
    }

    /// Whether the whole map is to be read at `now`: never read, older than
    /// its time-to-live, or `force`d and not read within
    /// [`MAP_REFRESH_MIN`]. Asked again once the proxy holds its metadata
    /// session, it is false if another request read the map meanwhile.
    pub fn whole_due(&self, force: bool, now: SimTime) -> bool {
        match self.fetched {
            None => true,
            Some(t) => {
                let age = now.saturating_sub(t);
                age >= self.ttl || (force && age >= MAP_REFRESH_MIN)
            }
        }
    }

    /// Takes a whole map read at `now`.
    pub fn install(&mut self, mut parts: Vec<PartitionInfo>, now: SimTime) {
        // Sorted for the search in `find`; one table's ranges never overlap
        // in one map (a map read is one snapshot).
        parts.sort_by(|a, b| (&a.instance, &a.table, &a.start).cmp(&(&b.instance, &b.table, &b.start)));
        self.parts = parts;
        self.fetched = Some(now);
    }

    /// The partition of `instance`'s `table` holding `key`: the last one of
    /// the table starting at or before it, if it reaches that far.
    pub fn find(&self, instance: &str, table: &str, key: &str) -> Option<&PartitionInfo> {
        let after = self.parts.partition_point(|p| (p.instance.as_str(), p.table.as_str(), p.start.as_str()) <= (instance, table, key));
        after.checked_sub(1).map(|i| &self.parts[i]).filter(|p| p.instance == instance && p.table == table && p.contains(key))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the map holds no entry.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// A cached metadata value: `None` when the key was absent.
pub type Cached = Option<Vec<u8>>;

/// What a [`TtlCache`] holds for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A value read within the time-to-live: use it.
    Fresh(Cached),
    /// Read the metadata store; if that fails, use `fallback` (a value
    /// read within [`AUTH_STALE_MAX`]), or fail if there is none.
    Read { fallback: Option<Cached> },
}

/// Metadata values, each with the time it was read; at most
/// [`AUTH_CACHE_MAX`] (full, it is emptied and refilled).
#[derive(Debug, Default)]
pub struct TtlCache {
    entries: BTreeMap<String, (Cached, SimTime)>,
}

impl TtlCache {
    pub fn lookup(&self, key: &str, now: SimTime, ttl: Duration) -> Lookup {
        match self.entries.get(key) {
            Some((v, t)) if now.saturating_sub(*t) < ttl => Lookup::Fresh(v.clone()),
            Some((v, t)) if now.saturating_sub(*t) < AUTH_STALE_MAX => Lookup::Read { fallback: Some(v.clone()) },
            _ => Lookup::Read { fallback: None },
        }
    }

    pub fn insert(&mut self, key: String, value: Cached, now: SimTime) {
        if self.entries.len() >= AUTH_CACHE_MAX {
            self.entries.clear();
        }
        self.entries.insert(key, (value, now));
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Where a scan goes on after one partition answered `got` rows in all so
/// far and named `partial_end` (the partition's end, when the scan reaches
/// past it): there, while the scan has fewer than `limit` rows.
pub fn scan_next(got: usize, limit: u32, partial_end: Option<String>) -> Option<String> {
    partial_end.filter(|_| got < limit as usize)
}

/// What the proxy does after one attempt at a partition's owner.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Answer the client with this.
    Done(Result<OpResult, TableError>),
    /// Find the partition again (its entry is out of date) and try again,
    /// after the retry back-off if `backoff`; `error` is answered if no
    /// attempt is left.
    Retry { error: TableError, backoff: bool },
}

/// What the answer `r` of server `owner` to an operation (a write if
/// `write`) means. A read is retried after any answer that is not
/// definite. A write is retried only after `NotServingHere` (it was not
/// applied); a write whose outcome is unknown (the server said so, or did
/// not answer in time) is answered `Unknown`, and the client retries it
/// under the same request id.
pub fn after_answer(write: bool, owner: NodeId, r: Result<DataMsg, NetError>) -> Step {
    match r {
        Ok(DataMsg::Response(Ok(v))) => Step::Done(Ok(v)),
        Ok(DataMsg::Response(Err(TableError::NotServingHere(pid)))) => {
            Step::Retry { error: TableError::Unavailable(format!("partition {pid} not served by {}", owner.0)), backoff: true }
        }
        Ok(DataMsg::Response(Err(TableError::Unknown(e)))) if !write => Step::Retry { error: TableError::Unavailable(e), backoff: false },
        Ok(DataMsg::Response(Err(e))) => Step::Done(Err(e)),
        Ok(_) => Step::Done(Err(TableError::Failed("unexpected message from a server".into()))),
        Err(NetError::Timeout) if write => Step::Done(Err(TableError::Unknown(format!("server {} did not answer", owner.0)))),
        Err(_) => Step::Retry { error: TableError::Unavailable(format!("server {} did not answer", owner.0)), backoff: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(1);
    const NS: Duration = Duration::from_nanos(1);

    fn t(ms: u64) -> SimTime {
        SimTime::from_duration(Duration::from_millis(ms))
    }

    fn part(pid: PartitionId, instance: &str, table: &str, start: &str, end: Option<&str>, owner: u32) -> PartitionInfo {
        PartitionInfo { pid, instance: instance.into(), table: table.into(), start: start.into(), end: end.map(Into::into), owner: Some(NodeId(owner)), epoch: 1 }
    }

    /// Table `t` of `i1` in three partitions (pids 1 to 3), split at "g"
    /// and "p", owned by servers 11 to 13.
    fn three() -> Vec<PartitionInfo> {
        vec![part(3, "i1", "t", "p", None, 13), part(1, "i1", "t", "", Some("g"), 11), part(2, "i1", "t", "g", Some("p"), 12)]
    }

    fn owner(m: &MapCache, key: &str) -> Option<u32> {
        m.find("i1", "t", key).map(|p| p.owner.expect("owned").0)
    }

    #[test]
    fn the_whole_map_is_read_first_then_after_its_ttl_or_when_forced_after_the_refresh_floor() {
        let mut m = MapCache::new(TTL, 2);
        assert!(m.is_empty());
        assert_eq!(m.len(), 0);
        assert!(m.whole_due(false, t(0)), "never read");
        assert!(m.find("i1", "t", "a").is_none());
        m.install(three(), t(100));
        assert!(!m.whole_due(false, t(100) + (TTL - NS)));
        assert!(m.whole_due(false, t(100) + TTL), "at its ttl");
        assert!(!m.whole_due(true, t(100) + (MAP_REFRESH_MIN - NS)), "forced, but read within the floor");
        assert!(m.whole_due(true, t(100) + MAP_REFRESH_MIN));
        // Asked again after another request read it (at or after the time
        // this one started), it is not due.
        m.install(three(), t(200));
        assert!(!m.whole_due(true, t(200)));
        assert!(!m.whole_due(true, t(150)), "read after this request began");
    }

    #[test]
    fn install_sorts_the_map_and_find_picks_the_range_holding_the_key() {
        let mut m = MapCache::new(TTL, 2);
        m.install(three(), t(0));
        assert_eq!(m.len(), 3);
        assert!(!m.is_empty());
        for (key, srv) in [("!", 11), ("a", 11), ("f~", 11), ("g", 12), ("o", 12), ("p", 13), ("zz", 13)] {
            assert_eq!(owner(&m, key), Some(srv), "key {key:?}");
        }
        assert_eq!(m.find("i1", "t", "g").map(|p| p.pid), Some(2), "a range's start belongs to it");
    }

    #[test]
    fn find_answers_only_with_a_partition_of_the_table_that_holds_the_key() {
        let mut m = MapCache::new(TTL, 2);
        // i1/a ends at "m" with nothing after (a partition missing from this
        // map); i1/c lacks its first partition; i2/z has one.
        m.install(
            vec![part(1, "i1", "a", "", Some("m"), 11), part(2, "i1", "c", "k", None, 12), part(3, "i2", "z", "", None, 13), part(4, "i1", "e", "", None, 14)],
            t(0),
        );
        assert_eq!(m.find("i1", "a", "b").map(|p| p.pid), Some(1));
        assert!(m.find("i1", "a", "x").is_none(), "past the end of the table's only range");
        assert!(m.find("i1", "b", "x").is_none(), "another table of the instance comes before it");
        assert!(m.find("i1", "c", "a").is_none(), "before the table's first range");
        assert_eq!(m.find("i1", "c", "k").map(|p| p.pid), Some(2));
        assert!(m.find("i1", "d", "x").is_none(), "i1/c's last range holds the key");
        assert!(m.find("i1", "f", "a").is_none(), "i1/e's range holds every key");
        assert!(m.find("i2", "y", "a").is_none());
        assert!(m.find("i3", "a", "a").is_none(), "i2/z holds every key");
        assert!(m.find("i0", "a", "a").is_none(), "before every entry");
    }

    #[test]
    fn a_stale_entry_of_a_map_under_one_page_asks_for_the_whole_map() {
        let mut m = MapCache::new(TTL, 4);
        m.install(three(), t(0));
        assert_eq!(m.reread(None, t(50)), Reread::Nothing);
        assert_eq!(m.reread(Some(2), t(50)), Reread::Whole, "3 entries, a page of 4");
        let mut m = MapCache::new(TTL, 3);
        m.install(three(), t(0));
        assert_eq!(m.reread(Some(2), t(50)), Reread::Entry(2), "exactly a page: entry by entry");
    }

    #[test]
    fn a_stale_entry_of_a_larger_map_is_read_alone_at_most_once_per_refresh_floor() {
        let mut m = MapCache::new(TTL, 2);
        m.install(three(), t(0));
        assert_eq!(m.reread(Some(2), t(50)), Reread::Entry(2));
        let moved = part(2, "i1", "t", "g", Some("p"), 21);
        assert!(!m.entry_read(2, Some(Some(moved)), t(50)), "updated in place");
        assert_eq!((owner(&m, "a"), owner(&m, "h"), owner(&m, "q")), (Some(11), Some(21), Some(13)), "only its own entry changes");
        assert!(!m.entry_due(2, t(50) + (MAP_REFRESH_MIN - NS)));
        assert_eq!(m.reread(Some(2), t(50) + (MAP_REFRESH_MIN - NS)), Reread::Nothing, "another request found it stale meanwhile");
        assert_eq!(m.reread(Some(2), t(50) + MAP_REFRESH_MIN), Reread::Entry(2));
        assert!(m.entry_due(1, t(50)), "each entry has its own time");
        // A failed read changes nothing but still counts as a read.
        assert!(!m.entry_read(3, None, t(60)));
        assert_eq!(owner(&m, "q"), Some(13));
        assert!(!m.entry_due(3, t(61)));
        // An entry gone (split or merged away) asks for the whole map.
        assert!(m.entry_read(1, Some(None), t(70)));
        assert_eq!(owner(&m, "a"), Some(11));
        // An entry read for a partition the cached map does not have yet
        // adds nothing (the whole map brings new partitions).
        assert!(!m.entry_read(9, Some(Some(part(9, "i1", "t", "x", None, 19))), t(80)));
        assert_eq!(m.len(), 3);
        assert_eq!(owner(&m, "y"), Some(13));
    }

    #[test]
    fn entry_read_times_are_bounded_by_the_partition_limit() {
        let mut m = MapCache::new(TTL, 2);
        m.install(three(), t(0));
        assert!(!m.entry_read(1, None, t(1)));
        assert!(!m.entry_read(2, None, t(1)));
        assert!(!m.entry_due(1, t(1)) && !m.entry_due(2, t(1)), "below the limit nothing is forgotten");
        for pid in 2..PARTITIONS_MAX as PartitionId {
            m.entry_read(pid + 100, None, t(1));
        }
        assert_eq!(m.entry_fetched.len(), PARTITIONS_MAX);
        assert!(!m.entry_due(1, t(1)));
        m.entry_read(7, None, t(1));
        assert_eq!(m.entry_fetched.len(), 1, "full: emptied, then the new one kept");
        assert!(m.entry_due(1, t(1)) && !m.entry_due(7, t(1)));
    }

    #[test]
    fn a_cached_value_is_fresh_for_its_ttl_and_a_fallback_up_to_the_stale_limit() {
        let mut c = TtlCache::default();
        assert!(c.is_empty());
        assert_eq!(c.lookup("k", t(0), TTL), Lookup::Read { fallback: None });
        c.insert("k".into(), Some(b"v".to_vec()), t(100));
        c.insert("gone".into(), None, t(100));
        assert_eq!(c.len(), 2);
        assert!(!c.is_empty());
        assert_eq!(c.lookup("k", t(100) + (TTL - NS), TTL), Lookup::Fresh(Some(b"v".to_vec())));
        assert_eq!(c.lookup("gone", t(100), TTL), Lookup::Fresh(None), "an absent key is cached too");
        assert_eq!(c.lookup("k", t(100) + TTL, TTL), Lookup::Read { fallback: Some(Some(b"v".to_vec())) });
        assert_eq!(c.lookup("k", t(100) + (AUTH_STALE_MAX - NS), TTL), Lookup::Read { fallback: Some(Some(b"v".to_vec())) });
        assert_eq!(c.lookup("k", t(100) + AUTH_STALE_MAX, TTL), Lookup::Read { fallback: None });
        assert_eq!(c.lookup("other", t(100), TTL), Lookup::Read { fallback: None });
    }

    #[test]
    fn a_full_ttl_cache_is_emptied_before_the_next_insert() {
        let mut c = TtlCache::default();
        for i in 0..AUTH_CACHE_MAX {
            c.insert(format!("k{i}"), None, t(0));
        }
        assert_eq!(c.len(), AUTH_CACHE_MAX, "nothing forgotten below the limit");
        assert_eq!(c.lookup("k0", t(0), TTL), Lookup::Fresh(None));
        c.insert("new".into(), None, t(0));
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup("k0", t(0), TTL), Lookup::Read { fallback: None });
    }

    #[test]
    fn a_scan_goes_on_from_a_partitions_end_only_while_short_of_its_limit() {
        assert_eq!(scan_next(3, 5, Some("m".into())), Some("m".into()));
        assert_eq!(scan_next(0, 1, Some("m".into())), Some("m".into()));
        assert_eq!(scan_next(5, 5, Some("m".into())), None, "the limit is reached");
        assert_eq!(scan_next(6, 5, Some("m".into())), None);
        assert_eq!(scan_next(3, 5, None), None, "the scan's end lies in this partition");
    }

    #[test]
    fn reads_retry_every_answer_that_is_not_definite_and_writes_only_a_refusal() {
        let srv = NodeId(7);
        let resp = |r: Result<OpResult, TableError>| Ok(DataMsg::Response(r));
        for write in [false, true] {
            assert_eq!(after_answer(write, srv, resp(Ok(OpResult::Done))), Step::Done(Ok(OpResult::Done)));
            assert_eq!(
                after_answer(write, srv, resp(Err(TableError::NotServingHere(4)))),
                Step::Retry { error: TableError::Unavailable("partition 4 not served by 7".into()), backoff: true },
                "a refusal is retried after the back-off (write: {write})"
            );
            let cond = TableError::ConditionFailed(Some("x".into()));
            assert_eq!(after_answer(write, srv, resp(Err(cond.clone()))), Step::Done(Err(cond)), "a definite error is answered");
            assert_eq!(
                after_answer(write, srv, Ok(DataMsg::Partition { pid: 1, op: Op::Get { table: "t".into(), key: "k".into() }, rid: None, expires_ms: u64::MAX, hits: 0 })),
                Step::Done(Err(TableError::Failed("unexpected message from a server".into())))
            );
            assert_eq!(
                after_answer(write, srv, Err(NetError::TooManyPending)),
                Step::Retry { error: TableError::Unavailable("server 7 did not answer".into()), backoff: false },
                "not sent: retried (write: {write})"
            );
        }
        // Unknown outcomes: a read tries again, a write tells the client.
        let unknown = || resp(Err(TableError::Unknown("log append timed out".into())));
        assert_eq!(after_answer(false, srv, unknown()), Step::Retry { error: TableError::Unavailable("log append timed out".into()), backoff: false });
        assert_eq!(after_answer(true, srv, unknown()), Step::Done(Err(TableError::Unknown("log append timed out".into()))));
        assert_eq!(after_answer(false, srv, Err(NetError::Timeout)), Step::Retry { error: TableError::Unavailable("server 7 did not answer".into()), backoff: false });
        assert_eq!(after_answer(true, srv, Err(NetError::Timeout)), Step::Done(Err(TableError::Unknown("server 7 did not answer".into()))));
    }
}
