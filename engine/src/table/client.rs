//! [`TableClient`]: the client library, bound on a client node.
//!
//! It talks to proxies, nearest first (own zone, then by link latency),
//! moving to the next proxy when one does not answer. Every write carries
//! a request id (client id, counter) that stays the same over all retries
//! of that write, so the partition applies it at most once; a write whose
//! outcome could not be learned within `op_deadline` is `Unknown`; every
//! attempt carries that deadline as the request's expiry, after which no
//! proxy or server starts it (so a late attempt cannot apply a write whose
//! de-duplication record is gone). Retries
//! are bounded by [`ATTEMPTS_MAX`] and the deadline, and spaced by
//! exponential back-off with jitter (`retry_backoff` doubling up to
//! [`BACKOFF_GROWTH_MAX`] times, each pause drawn between half and all of
//! it from the client's seeded stream, and never shorter than a `Busy`
//! answer's hint), so that clients retrying together spread out and
//! retries cannot multiply the load of an overloaded store. A request a
//! quota throttled is retried after one to two times its hint, at most
//! [`THROTTLE_RETRIES_MAX`] times and never past its deadline; the next
//! throttle is the answer.
//!
//! **Hot keys.** A read ([`TableClient::read`]) whose answer says the key is
//! hot makes the client read that key from its HotZone for a while: one
//! proxy, the client's own (drawn at random for a node's client, dealt in
//! turn from there to each process's clone made with
//! [`TableClient::for_process`], kept while that proxy answers), which
//! answers from its copy when young enough. Each client draws its own
//! expiry of that word (between half of `hot_feedback` and all of it), so
//! clients return to the owner at different times. A HotZone answer older
//! than `hot_staleness` on arrival is not used: the client reads the owner.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use sim::net::{Inbox, Net};
use sim::time;
use sim::topology::NodeId;
use sim::world::NodeCtx;

use super::*;

/// Attempts one operation makes before giving up.
pub const ATTEMPTS_MAX: u32 = 64;
/// Times the back-off between two attempts doubles at most.
pub const BACKOFF_GROWTH_MAX: u32 = 3;
/// Times one operation is retried after a quota throttled it; the next
/// throttle is its answer (a tenant over its quota at most triples its
/// offered load by retrying).
pub const THROTTLE_RETRIES_MAX: u32 = 2;
/// Hot keys one client remembers it was told of; one more forgets the
/// word that expires first.
pub const HOT_KEYS_KNOWN_MAX: usize = 64;

/// A point read's answer, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAnswer {
    pub value: Option<String>,
    /// Served from a HotZone copy this old on arrival (at most
    /// `hot_staleness`); `None`: read at the key's owner.
    pub hotzone_age: Option<Duration>,
}

/// One client's side of hot-key reads: its HotZone, and which keys it was
/// told are hot until when.
struct HotSide {
    /// Index of the client's HotZone proxy.
    pick: AtomicUsize,
    /// (table, key) -> end of the word that it is hot (model time).
    known: std::sync::Mutex<BTreeMap<(String, String), sim::time::SimTime>>,
    /// Draws the word's expiry.
    rng: std::sync::Mutex<rand_chacha::ChaCha8Rng>,
}

impl HotSide {
    fn new(seed: u64, pick: usize) -> HotSide {
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        HotSide { pick: AtomicUsize::new(pick), known: std::sync::Mutex::default(), rng: std::sync::Mutex::new(rng) }
    }
}

/// A 64-bit mix (splitmix64's finaliser): a process's seed from its
/// client's id.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A client of one instance. Cheap to clone; clones share the request-id
/// counter.
#[derive(Clone)]
pub struct TableClient {
    inner: Arc<Inner>,
    instance: Arc<str>,
    access_key: Arc<str>,
    hot: Arc<HotSide>,
}

struct Inner {
    net: Net<DataMsg>,
    _inbox: Inbox<DataMsg>,
    ctl: Net<ControlMsg>,
    _ctl_inbox: Inbox<ControlMsg>,
    cfg: TableConfig,
    proxies: Vec<NodeId>,
    client_id: u64,
    seq: AtomicU64,
    /// Index of the proxy in use.
    current: AtomicUsize,
    /// The HotZone the next [`TableClient::for_process`] gets (from a
    /// random one on, each the next).
    dealt: AtomicUsize,
    /// Draws the back-off jitter.
    rng: std::sync::Mutex<rand_chacha::ChaCha8Rng>,
}

impl TableClient {
    /// Binds the client on its node (one client per node).
    pub async fn bind(ctx: &NodeCtx, cfg: &TableConfig, instance: &str, access_key: &str) -> TableClient {
        let (net, inbox) = Net::bind(ctx).await;
        let (ctl, ctl_inbox) = Net::bind(ctx).await;
        let topo = ctx.world.topology();
        let mine = topo.zone_of(ctx.id);
        let mut proxies = cfg.proxies.clone();
        proxies.sort_by_key(|&p| (topo.zone_of(p) != mine, topo.link(ctx.id, p).latency, p));
        let client_id = ctx.rng("table-client").random_range(1..u64::MAX);
        let rng = std::sync::Mutex::new(ctx.rng("table-client-backoff"));
        let first = (mix(client_id) % proxies.len().max(1) as u64) as usize;
        let hot = Arc::new(HotSide::new(mix(client_id), first));
        TableClient {
            inner: Arc::new(Inner {
                net,
                _inbox: inbox,
                ctl,
                _ctl_inbox: ctl_inbox,
                cfg: cfg.clone(),
                proxies,
                client_id,
                seq: AtomicU64::new(0),
                current: AtomicUsize::new(0),
                dealt: AtomicUsize::new(first + 1),
                rng,
            }),
            instance: instance.into(),
            access_key: access_key.into(),
            hot,
        }
    }

    /// The same client (node, id, request counter) with other credentials.
    pub fn with_credentials(&self, instance: &str, access_key: &str) -> TableClient {
        TableClient { inner: self.inner.clone(), instance: instance.into(), access_key: access_key.into(), hot: self.hot.clone() }
    }

    /// The same client for one of its node's processes (an application
    /// client of its own): its own hot-key words, with their expiries drawn
    /// from the client's id and `process`, and its own HotZone, dealt: the
    /// node's first process gets a HotZone after the one the client drew at
    /// random, each next process the next, so that a node's processes
    /// spread evenly over the HotZones (a draw per process leaves the
    /// busiest with 1.3 to 1.5 times the mean when tens of processes share
    /// six HotZones).
    pub fn for_process(&self, process: u64) -> TableClient {
        let pick = self.inner.dealt.fetch_add(1, Ordering::Relaxed) % self.inner.proxies.len().max(1);
        let hot = Arc::new(HotSide::new(mix(self.inner.client_id ^ mix(process)), pick));
        TableClient { hot, ..self.clone() }
    }

    /// How stale a HotZone answer this client accepts may be.
    pub fn hot_staleness(&self) -> Duration {
        self.inner.cfg.hot_staleness
    }

    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    pub async fn get(&self, table: &str, key: &str) -> Result<Option<String>, TableError> {
        match self.op(Op::Get { table: table.into(), key: key.into() }).await? {
            OpResult::Value(v) | OpResult::Hot { value: v, filled_ns: None } => Ok(v),
            other => Err(TableError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// A point read that may be served from the client's HotZone when the
    /// key is hot (see the module's doc): at most `hot_staleness` old then.
    pub async fn read(&self, table: &str, key: &str) -> Result<ReadAnswer, TableError> {
        let i = &self.inner;
        let op = Op::Get { table: table.into(), key: key.into() };
        let id = (table.to_string(), key.to_string());
        let now = time::now();
        let hot = self.hot.known.lock().expect("hot lock").get(&id).is_some_and(|&until| now < until);
        let via = hot.then(|| self.hot.pick.load(Ordering::Relaxed) % i.proxies.len().max(1));
        let answer = match self.attempts(op.clone(), None, via).await? {
            OpResult::Hot { value, filled_ns: Some(filled) } => {
                let age = time::now().saturating_sub(sim::time::SimTime(filled));
                if age <= i.cfg.hotzone_age_max() {
                    i.cfg.observer.with(|o| {
                        if o.hotzone_ages.len() < OBSERVER_SAMPLES_MAX {
                            o.hotzone_ages.push(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
                        }
                    });
                    return Ok(ReadAnswer { value, hotzone_age: Some(age) });
                }
                // Too old by the time it arrived: the owner's value.
                i.cfg.observer.with(|o| o.hotzone_too_old += 1);
                self.attempts(op, None, None).await?
            }
            other => other,
        };
        match answer {
            OpResult::Value(value) => Ok(ReadAnswer { value, hotzone_age: None }),
            OpResult::Hot { value, filled_ns: None } => {
                self.told_hot(id);
                Ok(ReadAnswer { value, hotzone_age: None })
            }
            other => Err(TableError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// The owner said the key is hot: read it from the HotZone until an
    /// expiry of this client's own.
    fn told_hot(&self, id: (String, String)) {
        let top = u64::try_from(self.inner.cfg.hot_feedback.as_nanos()).unwrap_or(u64::MAX).max(2);
        let ns = self.hot.rng.lock().expect("hot rng lock").random_range(top / 2..=top);
        let until = time::now() + Duration::from_nanos(ns);
        let mut known = self.hot.known.lock().expect("hot lock");
        if known.len() >= HOT_KEYS_KNOWN_MAX && !known.contains_key(&id) {
            let first = known.iter().min_by_key(|(k, t)| (**t, (*k).clone())).map(|(k, _)| k.clone());
            if let Some(k) = first {
                known.remove(&k);
            }
        }
        known.insert(id, until);
    }

    /// The whole row: its value and its columns.
    pub async fn get_row(&self, table: &str, key: &str) -> Result<Option<super::part::RowVal>, TableError> {
        match self.op(Op::GetRow { table: table.into(), key: key.into() }).await? {
            OpResult::Row(r) => Ok(r),
            other => Err(TableError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    pub async fn put(&self, table: &str, key: &str, value: &str) -> Result<(), TableError> {
        self.put_row(table, key, value, BTreeMap::new()).await
    }

    /// A put with extra columns.
    pub async fn put_row(&self, table: &str, key: &str, value: &str, columns: BTreeMap<String, String>) -> Result<(), TableError> {
        self.done(Op::Put { table: table.into(), key: key.into(), value: value.into(), columns }).await
    }

    /// Conditional put: `expected` `None` = the row must not exist. A value
    /// that does not match is [`TableError::ConditionFailed`].
    pub async fn cas(&self, table: &str, key: &str, expected: Option<&str>, value: &str) -> Result<(), TableError> {
        self.done(Op::Cas { table: table.into(), key: key.into(), expected: expected.map(String::from), value: value.into() }).await
    }

    pub async fn delete(&self, table: &str, key: &str) -> Result<(), TableError> {
        self.done(Op::Delete { table: table.into(), key: key.into() }).await
    }

    /// The next auto-increment value of `pkey` (+1 over the last one).
    pub async fn append(&self, table: &str, pkey: &str) -> Result<u64, TableError> {
        match self.op(Op::Append { table: table.into(), pkey: pkey.into() }).await? {
            OpResult::Seq(s) => Ok(s),
            other => Err(TableError::Unknown(format!("unexpected answer {other:?}"))),
        }
    }

    /// Rows with `start <= key < end`, at most `limit`, in key order.
    pub async fn scan(&self, table: &str, start: &str, end: &str, limit: u32) -> Result<Vec<(String, String)>, TableError> {
        match self.op(Op::Scan { table: table.into(), start: start.into(), end: end.into(), limit }).await? {
            OpResult::Rows { rows, .. } => Ok(rows),
            other => Err(TableError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    async fn done(&self, op: Op) -> Result<(), TableError> {
        match self.op(op).await? {
            OpResult::Done => Ok(()),
            other => Err(TableError::Unknown(format!("unexpected answer {other:?}"))),
        }
    }

    /// Runs one operation with retries; a write keeps one request id.
    pub async fn op(&self, op: Op) -> Result<OpResult, TableError> {
        let rid = op.is_write().then(|| ReqId { client: self.inner.client_id, seq: self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1 });
        self.op_with(op, rid).await
    }

    /// The pause before attempt `retry` + 1 (`retry` >= 1): `retry_backoff`
    /// doubled `retry - 1` times (at most [`BACKOFF_GROWTH_MAX`]), drawn
    /// between half and all of it, and at least `hint`.
    fn backoff(&self, retry: u32, hint: Duration) -> Duration {
        let top = self.inner.cfg.retry_backoff * (1u32 << retry.saturating_sub(1).min(BACKOFF_GROWTH_MAX));
        let ns = u64::try_from(top.as_nanos()).unwrap_or(u64::MAX);
        let drawn = self.inner.rng.lock().expect("rng lock").random_range(ns / 2..=ns.max(1));
        Duration::from_nanos(drawn).max(hint)
    }

    /// The pause after a throttle whose hint is `hint`: between one and two
    /// hints, drawn from the client's seeded stream, so that the clients a
    /// quota refused together do not all come back at the same instant.
    fn throttle_pause(&self, hint: Duration) -> Duration {
        let ns = u64::try_from(hint.as_nanos()).unwrap_or(u64::MAX / 2).max(1);
        Duration::from_nanos(self.inner.rng.lock().expect("rng lock").random_range(ns..=ns * 2))
    }

    /// Runs one operation under a given request id (for tests).
    pub async fn op_with(&self, op: Op, rid: Option<ReqId>) -> Result<OpResult, TableError> {
        self.attempts(op, rid, None).await
    }

    /// Runs one operation: through the proxy in use, or (`via`, a hot
    /// key's read) through the client's HotZone proxy while it answers.
    async fn attempts(&self, op: Op, rid: Option<ReqId>, via: Option<usize>) -> Result<OpResult, TableError> {
        let i = &self.inner;
        let mut via = via;
        if i.proxies.is_empty() {
            return Err(TableError::Unavailable("no proxies".into()));
        }
        let deadline = time::now() + i.cfg.op_deadline;
        let expires_ms = ms_ceil(deadline);
        let timeout = i.cfg.proxy_budget + i.cfg.call_timeout * 2;
        let mut maybe_applied = false;
        let mut last = TableError::Unavailable("no attempt".into());
        let mut retries = 0u32;
        let mut throttled = 0u32;
        for _ in 0..ATTEMPTS_MAX {
            if time::now() >= deadline {
                break;
            }
            let at = via.unwrap_or_else(|| i.current.load(Ordering::Relaxed) % i.proxies.len());
            let proxy = i.proxies[at];
            let msg = DataMsg::Request { instance: self.instance.to_string(), access_key: self.access_key.to_string(), op: op.clone(), rid, expires_ms, hot: via.is_some() };
            match i.net.call(proxy, msg, timeout).await {
                Ok(DataMsg::Response(Ok(v))) => return Ok(v),
                Ok(DataMsg::Response(Err(e))) => match e {
                    TableError::Unknown(_) => {
                        maybe_applied = true;
                        last = e;
                        retries += 1;
                        time::sleep(self.backoff(retries, Duration::ZERO)).await;
                    }
                    TableError::Unavailable(_) | TableError::NotServingHere(_) => {
                        last = e;
                        retries += 1;
                        time::sleep(self.backoff(retries, Duration::ZERO)).await;
                    }
                    TableError::Busy { retry_after_us, .. } => {
                        last = e;
                        retries += 1;
                        time::sleep(self.backoff(retries, Duration::from_micros(retry_after_us))).await;
                    }
                    TableError::Throttled { retry_after_us, .. } => {
                        throttled += 1;
                        let pause = self.throttle_pause(Duration::from_micros(retry_after_us));
                        // Nor is it retried when the pause would end past
                        // the operation's deadline.
                        if throttled > THROTTLE_RETRIES_MAX || time::now() + pause >= deadline {
                            // After an unknown attempt the outcome stays unknown;
                            // the last answer was a refusal for lack of quota.
                            return Err(if maybe_applied { TableError::Unknown(format!("no definite answer (last: {e})")) } else { e });
                        }
                        last = e;
                        time::sleep(pause).await;
                    }
                    // The attempt reached the proxy or server after the
                    // deadline: no new answer, the deadline has passed.
                    TableError::Expired { .. } => {
                        if retries + throttled == 0 {
                            last = e;
                        }
                        break;
                    }
                    TableError::ConditionFailed(_) | TableError::Refused(_) | TableError::Auth(_) | TableError::Failed(_) => {
                        // A definite answer; after an unknown attempt, a
                        // failure may be the retry's, not the write's.
                        return Err(if maybe_applied && matches!(e, TableError::Failed(_)) { TableError::Unknown(format!("after an unknown attempt: {e}")) } else { e });
                    }
                },
                Ok(_) => return Err(TableError::Failed("unexpected message from a proxy".into())),
                Err(_) => {
                    maybe_applied |= op.is_write();
                    last = TableError::Unavailable(format!("proxy {} did not answer", proxy.0));
                    if via.take().is_some() {
                        // The HotZone did not answer: the next proxy becomes
                        // this client's HotZone, and this read goes the
                        // usual way.
                        let _ = self.hot.pick.compare_exchange(at, (at + 1) % i.proxies.len(), Ordering::Relaxed, Ordering::Relaxed);
                    } else {
                        let _ = i.current.compare_exchange(at, at + 1, Ordering::Relaxed, Ordering::Relaxed);
                    }
                }
            }
        }
        if maybe_applied {
            return Err(TableError::Unknown(format!("no definite answer before the deadline (last: {last})")));
        }
        Err(last)
    }

    // ---- admin -----------------------------------------------------------

    async fn admin(&self, op: AdminOp) -> Result<Vec<PartitionId>, TableError> {
        let i = &self.inner;
        let deadline = time::now() + master::ADMIN_WAIT_MAX + i.cfg.op_deadline;
        let mut last = TableError::Unavailable("no master answered".into());
        for attempt in 0..ATTEMPTS_MAX {
            if time::now() >= deadline {
                break;
            }
            let m = i.cfg.masters[attempt as usize % i.cfg.masters.len().max(1)];
            match i.ctl.call(m, ControlMsg::Admin(op.clone()), master::ADMIN_WAIT_MAX + i.cfg.call_timeout).await {
                Ok(ControlMsg::AdminDone(Ok(p))) => return Ok(p),
                Ok(ControlMsg::AdminDone(Err(e @ (TableError::Refused(_) | TableError::Auth(_))))) => return Err(e),
                Ok(ControlMsg::AdminDone(Err(e))) => last = e,
                _ => {}
            }
            time::sleep(i.cfg.retry_backoff).await;
        }
        Err(last)
    }

    /// Creates an instance with its access key (idempotent).
    pub async fn create_instance(&self, name: &str, access_key: &str) -> Result<(), TableError> {
        self.admin(AdminOp::CreateInstance { name: name.into(), access_key: access_key.into() }).await.map(|_| ())
    }

    /// Creates a table of `partitions` range partitions split at `splits`
    /// (`partitions - 1` increasing keys); returns the partition ids.
    pub async fn create_table(&self, instance: &str, table: &str, partitions: u32, splits: Vec<String>) -> Result<Vec<PartitionId>, TableError> {
        self.admin(AdminOp::CreateTable { instance: instance.into(), table: table.into(), partitions, splits }).await
    }

    pub async fn move_partition(&self, pid: PartitionId, to: NodeId) -> Result<(), TableError> {
        self.admin(AdminOp::Move { pid, to }).await.map(|_| ())
    }

    /// Splits a partition at `at`; returns the two new partition ids.
    pub async fn split(&self, pid: PartitionId, at: &str) -> Result<Vec<PartitionId>, TableError> {
        self.admin(AdminOp::Split { pid, at: at.into() }).await
    }

    /// Replaces an instance's quotas (through the master, which divides
    /// them over the proxies).
    pub async fn set_quota(&self, instance: &str, entries: Vec<super::quota::QuotaEntry>) -> Result<(), TableError> {
        self.admin(AdminOp::SetQuota { instance: instance.into(), entries }).await.map(|_| ())
    }

    /// Merges two neighbours; returns the new partition id.
    pub async fn merge(&self, left: PartitionId, right: PartitionId) -> Result<Vec<PartitionId>, TableError> {
        self.admin(AdminOp::Merge { left, right }).await
    }
}
