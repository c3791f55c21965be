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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use rand::RngExt;
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

/// A client of one instance. Cheap to clone; clones share the request-id
/// counter.
#[derive(Clone)]
pub struct TableClient {
    inner: Arc<Inner>,
    instance: Arc<str>,
    access_key: Arc<str>,
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
                rng,
            }),
            instance: instance.into(),
            access_key: access_key.into(),
        }
    }

    /// The same client (node, id, request counter) with other credentials.
    pub fn with_credentials(&self, instance: &str, access_key: &str) -> TableClient {
        TableClient { inner: self.inner.clone(), instance: instance.into(), access_key: access_key.into() }
    }

    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    pub async fn get(&self, table: &str, key: &str) -> Result<Option<String>, TableError> {
        match self.op(Op::Get { table: table.into(), key: key.into() }).await? {
            OpResult::Value(v) => Ok(v),
            other => Err(TableError::Failed(format!("unexpected answer {other:?}"))),
        }
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
        let i = &self.inner;
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
            let at = i.current.load(Ordering::Relaxed) % i.proxies.len();
            let proxy = i.proxies[at];
            let msg = DataMsg::Request { instance: self.instance.to_string(), access_key: self.access_key.to_string(), op: op.clone(), rid, expires_ms };
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
                    let _ = i.current.compare_exchange(at, at + 1, Ordering::Relaxed, Ordering::Relaxed);
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
