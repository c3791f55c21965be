//! The proxy: authenticates every request against the instance's access
//! key (from the metadata store, cached `auth_ttl`), checks that the table
//! belongs to the instance, validates sizes and key shapes, and routes by
//! a cached partition map (refreshed after `map_ttl`, and at once when a
//! server answers `NotServingHere` or does not answer). Reads are retried
//! within `proxy_budget`; a write is retried only after a definite
//! `NotServingHere`, and a write that timed out is answered `Unknown` (the
//! client retries it under the same request id). A refused request never
//! reaches a server. The proxy is also a HotZone ([`super::hotzone`]): it
//! keeps copies of hot keys' values and serves a client's read of one
//! that the client marked `hot` from its copy while it is young enough.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sim::net::Net;
use sim::time;
use sim::world::NodeCtx;

use super::*;
use super::routing::*;
use super::hotzone::{HotKeyId, HotLookup, HotZone};
use super::quota::{quota_key, Cost, OpClass, ProxyLimiter, QuotaEntry, QuotaKey, SHARE_LEASE, SHARE_SKEW};
use crate::meta::service::{MetaClient, SCAN_LIMIT_MAX};

/// Requests one proxy handles at once.
pub const INFLIGHT_MAX: usize = 4096;
/// Attempts one request makes at servers.
pub const ATTEMPTS_MAX: u32 = 32;
/// Partitions one scan may cross.
pub const SCAN_PARTS_MAX: usize = 4096;

struct Proxy {
    id: NodeId,
    cfg: TableConfig,
    clock: sim::Clock,
    net: Net<DataMsg>,
    /// Quotas: this proxy's floors and leased shares.
    limiter: Mutex<ProxyLimiter>,
    /// instance key -> stored quotas
    quotas: Mutex<TtlCache>,
    meta: tokio::sync::Mutex<MetaClient>,
    /// When a cached read of the metadata store last failed.
    meta_failed: Mutex<Option<SimTime>>,
    /// instance key -> stored access key
    auth: Mutex<TtlCache>,
    /// table key -> stored table entry
    tables: Mutex<TtlCache>,
    map: Mutex<MapCache>,
    /// Copies of hot keys' values (see [`super::hotzone`]).
    hotzone: Mutex<HotZone>,
    inflight: AtomicUsize,
}

/// The proxy's main loop (run again after every restart).
pub async fn serve(ctx: NodeCtx, cfg: TableConfig) {
    let h = madsim::task::spawn_local(run(ctx, cfg));
    let _ = h.await;
}

async fn run(ctx: NodeCtx, cfg: TableConfig) {
    let (net, mut inbox) = Net::<DataMsg>::bind(&ctx).await;
    // The proxy fails fast when the metadata store cannot be reached (it
    // then routes by its cached map).
    let mut meta_cfg = cfg.meta();
    meta_cfg.op_deadline = meta_cfg.op_deadline.min(cfg.proxy_budget / 2);
    let meta = MetaClient::bind(&ctx, meta_cfg).await;
    let map_ttl = cfg.map_ttl;
    let clock = ctx.clock();
    let limiter = Mutex::new(ProxyLimiter::new(cfg.proxies.len(), SHARE_LEASE, SHARE_SKEW, clock.now()));
    let hotzone = Mutex::new(HotZone::new(cfg.hotzone_age_max()));
    let p = Arc::new(Proxy {
        id: ctx.id,
        cfg,
        clock,
        net,
        limiter,
        quotas: Mutex::default(),
        meta: tokio::sync::Mutex::new(meta),
        meta_failed: Mutex::new(None),
        auth: Mutex::default(),
        tables: Mutex::default(),
        map: Mutex::new(MapCache::new(map_ttl, SCAN_LIMIT_MAX)),
        hotzone,
        inflight: AtomicUsize::new(0),
    });
    let (ctl, _ctl_inbox) = Net::<ControlMsg>::bind(&ctx).await;
    let q = p.clone();
    let qcpu = ctx.cpu();
    madsim::task::spawn_local(async move {
        let _keep = _ctl_inbox;
        q.quota_loop(ctl, qcpu).await
    });
    let cpu = ctx.cpu();
    while let Some(m) = inbox.recv().await {
        let Some(req) = m.request else { continue };
        if p.inflight.load(Ordering::Relaxed) >= INFLIGHT_MAX {
            p.net.reply(m.from, req, DataMsg::Response(Err(TableError::busy_for("proxy requests in flight", p.cfg.retry_backoff)))).await;
            continue;
        }
        // Admission: the request's CPU time, or a refusal at once.
        let cost = p.cfg.stream.costs.proxy_request;
        let end = match cpu.reserve(cost) {
            Ok(end) => end,
            Err(b) => {
                p.net.reply(m.from, req, DataMsg::Response(Err(TableError::busy("proxy cpu", b, cost)))).await;
                continue;
            }
        };
        p.inflight.fetch_add(1, Ordering::Relaxed);
        let p2 = p.clone();
        madsim::task::spawn_local(Box::pin(async move {
            time::sleep_until(end).await;
            let r = match m.msg {
                DataMsg::Request { instance, access_key, op, rid, expires_ms, hot } => p2.request(&instance, &access_key, op, rid, expires_ms, hot).await,
                _ => Err(TableError::Refused("not a client request".into())),
            };
            p2.net.reply(m.from, req, DataMsg::Response(r)).await;
            p2.inflight.fetch_sub(1, Ordering::Relaxed);
        }));
    }
}

/// What a request costs its quotas when admitted: a write's bytes (key,
/// value, columns) and one row; a read's one row; a scan's rows it asks
/// for, at most (a rows quota charges its estimate; a read's or scan's
/// bytes are charged, and a scan's rows settled, once answered).
pub fn cost_before(op: &Op) -> Cost {
    let bytes = match op {
        Op::Put { key, value, columns, .. } => key.len() + value.len() + columns.iter().map(|(c, v)| c.len() + v.len()).sum::<usize>(),
        Op::Cas { key, value, .. } => key.len() + value.len(),
        Op::Delete { key, .. } => key.len(),
        Op::Append { pkey, .. } => pkey.len(),
        Op::Get { .. } | Op::GetRow { .. } | Op::Scan { .. } => 0,
    };
    let rows = match op {
        Op::Scan { limit, .. } => u64::from(*limit),
        _ => 1,
    };
    Cost { bytes: bytes as u64, rows }
}

/// Checks sizes and key shapes of one operation.
pub fn validate(op: &Op) -> Result<(), String> {
    if !valid_name(op.table()) {
        return Err("bad table name".into());
    }
    let key_ok = |k: &str| if valid_key(k) { Ok(()) } else { Err(format!("bad key shape ({} bytes; 1..={KEY_BYTES_MAX} printable ASCII)", k.len())) };
    let cell_ok = |v: &str| if v.len() <= CELL_BYTES_MAX { Ok(()) } else { Err(format!("cell of {} bytes over {CELL_BYTES_MAX}", v.len())) };
    match op {
        Op::Get { key, .. } | Op::Delete { key, .. } | Op::GetRow { key, .. } => key_ok(key),
        Op::Append { pkey, .. } => key_ok(pkey),
        Op::Put { key, value, columns, .. } => {
            key_ok(key)?;
            cell_ok(value)?;
            if columns.len() > COLUMNS_MAX {
                return Err(format!("{} columns over {COLUMNS_MAX}", columns.len()));
            }
            let mut bytes = key.len() + value.len();
            for (c, v) in columns {
                if !valid_name(c) {
                    return Err("bad column name".into());
                }
                cell_ok(v)?;
                bytes += c.len() + v.len();
            }
            if bytes > ROW_BYTES_MAX {
                return Err(format!("row of {bytes} bytes over {ROW_BYTES_MAX}"));
            }
            Ok(())
        }
        Op::Cas { key, expected, value, .. } => {
            key_ok(key)?;
            cell_ok(value)?;
            expected.as_deref().map_or(Ok(()), cell_ok)
        }
        Op::Scan { start, end, limit, .. } => {
            if !start.is_empty() {
                key_ok(start)?;
            }
            key_ok(end)?;
            if start >= end {
                return Err("scan start not before its end".into());
            }
            if *limit == 0 || *limit > SCAN_ROWS_MAX {
                return Err(format!("scan limit 1..={SCAN_ROWS_MAX}"));
            }
            Ok(())
        }
    }
}

impl Proxy {
    fn refuse_auth(&self, why: &str) -> TableError {
        self.cfg.observer.with(|o| *o.auth_refused.entry(why.to_string()).or_default() += 1);
        TableError::Auth(why.to_string())
    }

    /// A metadata value through a cache: fresh for `auth_ttl`; when the
    /// metadata store cannot be reached, a cached value up to
    /// [`AUTH_STALE_MAX`] old is used (a proxy cut off from the metadata
    /// store keeps serving the instances it knows).
    ///
    /// One read per wait for the proxy's metadata session, not one per
    /// waiting request: a request that got the session after another read
    /// the key takes that value, and one that waited while a read failed
    /// takes the fallback without trying again.
    async fn cached_get(&self, cache: &Mutex<TtlCache>, key: String) -> Result<Cached, TableError> {
        let asked = time::now();
        let fallback = match cache.lock().expect("cache lock").lookup(&key, asked, self.cfg.auth_ttl) {
            Lookup::Fresh(v) => return Ok(v),
            Lookup::Read { fallback } => fallback,
        };
        let mut meta = self.meta.lock().await;
        let now = time::now();
        let fallback = match cache.lock().expect("cache lock").lookup(&key, now, self.cfg.auth_ttl) {
            Lookup::Fresh(v) => return Ok(v),
            Lookup::Read { fallback: f } => f.or(fallback),
        };
        if *self.meta_failed.lock().expect("meta_failed lock") >= Some(asked) {
            return fallback.ok_or_else(|| TableError::Unavailable("metadata: unreachable".into()));
        }
        match meta.get(&key).await {
            Ok(v) => {
                cache.lock().expect("cache lock").insert(key, v.clone(), now);
                Ok(v)
            }
            Err(e) => {
                *self.meta_failed.lock().expect("meta_failed lock") = Some(time::now());
                fallback.ok_or_else(|| TableError::Unavailable(format!("metadata: {e}")))
            }
        }
    }

    async fn check_auth(&self, instance: &str, access_key: &str, table: &str) -> Result<(), TableError> {
        if access_key.is_empty() {
            return Err(self.refuse_auth("missing access key"));
        }
        if !valid_name(instance) {
            return Err(self.refuse_auth("unknown instance"));
        }
        let key = self.cached_get(&self.auth, instance_key(instance)).await?.and_then(|b| decode::<String>(&b));
        match key {
            None => return Err(self.refuse_auth("unknown instance")),
            Some(k) if k != access_key => return Err(self.refuse_auth("wrong access key")),
            Some(_) => {}
        }
        if !valid_name(table) || self.cached_get(&self.tables, table_key(instance, table)).await?.is_none() {
            return Err(self.refuse_auth("table not in this instance"));
        }
        Ok(())
    }

    /// Every heartbeat: the demand report to the master that answered
    /// last (every master while none has), its grant applied on arrival.
    async fn quota_loop(self: Arc<Self>, ctl: Net<ControlMsg>, cpu: sim::Cpu) {
        let mut master: Option<NodeId> = None;
        loop {
            let asked = self.clock.now();
            let report = self.limiter.lock().expect("limiter lock").report(asked);
            cpu.run_control(self.cfg.stream.costs.control).await;
            let masters = master.map_or_else(|| self.cfg.masters.clone(), |m| vec![m]);
            master = None;
            for m in masters {
                match ctl.call(m, ControlMsg::Quota(report.clone()), self.cfg.call_timeout).await {
                    Ok(ControlMsg::QuotaGrant(g)) => {
                        self.limiter.lock().expect("limiter lock").grant(asked, self.clock.now(), g);
                        master = Some(m);
                        break;
                    }
                    _ => continue,
                }
            }
            self.clock.sleep(self.cfg.heartbeat).await;
        }
    }

    /// The quotas of an instance as stored, into the limiter, while it
    /// holds no live grant of the master's (a grant carries every quota).
    /// A metadata store out of reach leaves the limiter as it is.
    async fn load_quotas(&self, instance: &str) {
        if self.limiter.lock().expect("limiter lock").leased(self.clock.now()) {
            return;
        }
        if let Ok(stored) = self.cached_get(&self.quotas, quota_key(instance)).await {
            let entries: Vec<QuotaEntry> = stored.and_then(|b| decode(&b)).unwrap_or_default();
            self.limiter.lock().expect("limiter lock").set_instance(self.clock.now(), instance, &entries);
        }
    }

    /// Whether the instance's quotas admit the request; counted per quota.
    /// Returns the quotas it was charged to, with what each was charged.
    fn throttle(&self, instance: &str, op: &Op) -> Result<Vec<(QuotaKey, u64)>, TableError> {
        let class = OpClass::of(op);
        let now = self.clock.now();
        let at = time::now();
        let mut l = self.limiter.lock().expect("limiter lock");
        let cost = cost_before(op);
        let r = l.admit(now, instance, op.table(), class, cost);
        let keys: Vec<(QuotaKey, u64)> = l.covering(instance, op.table(), class).into_iter().map(|k| {
            let n = l.charge_of(&k, cost);
            (k, n)
        }).collect();
        drop(l);
        if !keys.is_empty() {
            let refused = r.as_ref().err().map(|t| t.key.clone());
            let charged = r.as_ref().ok().cloned().unwrap_or_default();
            self.cfg.observer.with(|o| {
                for (k, asked) in keys {
                    let bad = refused.as_ref() == Some(&k);
                    let ok = refused.is_none();
                    let units = charged.iter().find(|(c, _)| *c == k).map_or(0, |c| c.1);
                    o.count_traffic(k.to_string(), at, |c| {
                        c.offered_units += asked;
                        c.offered += 1;
                        c.admitted += u64::from(ok);
                        c.throttled += u64::from(bad);
                        c.units += units;
                    });
                }
            });
        }
        r.map_err(|t| TableError::Throttled {
            resource: t.key.to_string(),
            reason: format!("over its quota of {} {}/s (burst {})", t.limit.rate, t.key.unit.name(), t.limit.burst),
            retry_after_us: u64::try_from(t.retry_after.as_micros()).unwrap_or(u64::MAX).max(1),
        })
    }

    /// An answered request's quotas settled: what it cost beyond what it
    /// was charged when admitted (a read's bytes, a scan's rows over the
    /// estimate), or back what it did not use (a scan's rows it did not
    /// get).
    /// The change is counted in the observer's slot of the admission, so
    /// that a slot shows what the requests admitted in it cost.
    fn settle(&self, charged: &[(QuotaKey, u64)], admitted_at: SimTime, r: &Result<OpResult, TableError>) {
        if charged.is_empty() {
            return;
        }
        let actual = match r {
            Ok(OpResult::Value(v) | OpResult::Hot { value: v, .. }) => Some(Cost { bytes: v.as_ref().map_or(0, |v| v.len() as u64), rows: 1 }),
            Ok(OpResult::Row(row)) => Some(Cost { bytes: row.as_ref().map_or(0, |row| (row.value.len() + row.columns.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()) as u64), rows: 1 }),
            Ok(OpResult::Rows { rows, .. }) => Some(Cost { bytes: rows.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() as u64, rows: rows.len() as u64 }),
            // A failed read or scan used what its first attempt did; a
            // write keeps its charge.
            _ => None,
        };
        let changed = self.limiter.lock().expect("limiter lock").settle(self.clock.now(), charged, actual);
        let at = admitted_at;
        if !changed.is_empty() {
            self.cfg.observer.with(|o| {
                for (k, n) in changed {
                    o.count_traffic(k.to_string(), at, |c| {
                        c.units = c.units.saturating_add_signed(n);
                        if n > 0 {
                            c.offered_units += n as u64;
                        }
                    });
                }
            });
        }
    }

    async fn request(self: &Arc<Self>, instance: &str, access_key: &str, op: Op, rid: Option<ReqId>, expires_ms: u64, hot: bool) -> Result<OpResult, TableError> {
        if let Some(e) = expired(self.now_ms(), expires_ms) {
            return Err(e);
        }
        self.check_auth(instance, access_key, op.table()).await?;
        if let Err(e) = validate(&op) {
            self.cfg.observer.with(|o| o.invalid_refused += 1);
            return Err(TableError::Refused(e));
        }
        if op.is_write() && rid.is_none() {
            return Err(TableError::Refused("a write needs a request id".into()));
        }
        // Quotas, before the request reaches any server.
        self.load_quotas(instance).await;
        let charged = self.throttle(instance, &op)?;
        let admitted_at = time::now();
        let r = match &op {
            Op::Get { table, key } if hot => self.hot_read((instance.to_string(), table.clone(), key.clone()), expires_ms).await,
            _ => self.serve(instance, op, rid, expires_ms).await,
        };
        self.settle(&charged, admitted_at, &r);
        r
    }

    /// The proxy's clock in milliseconds (a request's expiry is compared
    /// with it).
    fn now_ms(&self) -> u64 {
        self.clock.now().as_nanos() / 1_000_000
    }

    /// A read of a key its client was told is hot: from the HotZone when
    /// it holds a copy young enough (refreshed in the background once
    /// older than half the bound), else from the key's owner.
    async fn hot_read(self: &Arc<Self>, id: HotKeyId, expires_ms: u64) -> Result<OpResult, TableError> {
        let now = time::now();
        let found = self.hotzone.lock().expect("hotzone lock").lookup(now, &id);
        match found {
            HotLookup::Hit { value, filled_at, refresh } => {
                self.cfg.observer.with(|o| TableObserverData::count_per_second(&mut o.hotzone_hits, self.id, now, 1));
                if refresh {
                    let (p, id) = (self.clone(), id.clone());
                    madsim::task::spawn_local(async move {
                        let deadline = time::now() + p.cfg.proxy_budget;
                        if p.source_read(&id, expires_ms, deadline).await.is_err() {
                            p.hotzone.lock().expect("hotzone lock").refresh_failed(&id);
                        }
                    });
                }
                Ok(OpResult::Hot { value, filled_ns: Some(filled_at.as_nanos()) })
            }
            HotLookup::Miss => self.source_read(&id, expires_ms, time::now() + self.cfg.proxy_budget).await,
        }
    }

    /// A point read at the key's owner, reporting the HotZone's hits of the
    /// key since the last one; the HotZone keeps the answer while the owner
    /// calls the key hot and drops its copy once it does not.
    async fn source_read(&self, id: &HotKeyId, expires_ms: u64, deadline: SimTime) -> Result<OpResult, TableError> {
        let hits = self.hotzone.lock().expect("hotzone lock").take_hits(id);
        let sent = time::now();
        let op = Op::Get { table: id.1.clone(), key: id.2.clone() };
        let r = self.route(&id.0, op, None, expires_ms, deadline, hits).await;
        match &r {
            Ok(OpResult::Hot { value, filled_ns: None }) => self.hotzone.lock().expect("hotzone lock").fill(sent, id, value.clone()),
            Ok(_) => self.hotzone.lock().expect("hotzone lock").cooled(id),
            Err(_) => {}
        }
        r
    }

    async fn serve(&self, instance: &str, op: Op, rid: Option<ReqId>, expires_ms: u64) -> Result<OpResult, TableError> {
        let deadline = time::now() + self.cfg.proxy_budget;
        match op {
            Op::Scan { table, start, end, limit } => {
                let mut rows = Vec::new();
                let mut from = start;
                for _ in 0..SCAN_PARTS_MAX {
                    let part = Op::Scan { table: table.clone(), start: from.clone(), end: end.clone(), limit: limit - rows.len() as u32 };
                    match self.route(instance, part, None, expires_ms, deadline, 0).await? {
                        OpResult::Rows { rows: got, partial_end } => {
                            rows.extend(got);
                            match scan_next(rows.len(), limit, partial_end) {
                                Some(e) => from = e,
                                None => return Ok(OpResult::Rows { rows, partial_end: None }),
                            }
                        }
                        _ => return Err(TableError::Failed("unexpected answer to a scan".into())),
                    }
                }
                Err(TableError::Failed("scan crossed too many partitions".into()))
            }
            Op::Get { table, key } => self.source_read(&(instance.to_string(), table, key), expires_ms, deadline).await,
            op => self.route(instance, op, rid, expires_ms, deadline, 0).await,
        }
    }

    /// The partition holding `key`, from the cached map. `stale` names the
    /// partition whose entry was found out of date, `force` asks for the
    /// whole map (see [`MapCache`] for what is read when).
    async fn partition_for(&self, instance: &str, table: &str, key: &str, force: bool, stale: Option<PartitionId>) -> Result<PartitionInfo, TableError> {
        let now = time::now();
        let mut force = force;
        let reread = self.map.lock().expect("map lock").reread(stale, now);
        match reread {
            Reread::Nothing => {}
            Reread::Whole => force = true,
            Reread::Entry(pid) => {
                let mut meta = self.meta.lock().await;
                // Another request may have read it while this one waited
                // for the proxy's one metadata session.
                if self.map.lock().expect("map lock").entry_due(pid, now) {
                    let got = meta.get(&part_key(pid)).await.ok().map(|v| v.and_then(|b| decode::<PartitionInfo>(&b)));
                    if self.map.lock().expect("map lock").entry_read(pid, got, time::now()) {
                        force = true;
                    }
                }
            }
        }
        if self.map.lock().expect("map lock").whole_due(force, now) {
            let mut meta = self.meta.lock().await;
            if self.map.lock().expect("map lock").whole_due(force, now) {
                if let Ok(parts) = read_map(&mut meta).await {
                    self.map.lock().expect("map lock").install(parts, time::now());
                }
            }
        }
        self.map
            .lock()
            .expect("map lock")
            .find(instance, table, key)
            .cloned()
            .ok_or_else(|| TableError::Unavailable(format!("no partition holds {key:?}")))
    }

    async fn route(&self, instance: &str, op: Op, rid: Option<ReqId>, expires_ms: u64, deadline: SimTime, hits: u64) -> Result<OpResult, TableError> {
        let mut force = false;
        let mut stale: Option<PartitionId> = None;
        let mut last = TableError::Unavailable("no attempt".into());
        for _ in 0..ATTEMPTS_MAX {
            if time::now() >= deadline {
                break;
            }
            // Every earlier attempt had a definite answer (a write's unknown
            // one ends the loop).
            if let Some(e) = expired(self.now_ms(), expires_ms) {
                return Err(e);
            }
            let p = match self.partition_for(instance, op.table(), op.route_key(), force, stale.take()).await {
                Ok(p) => p,
                Err(e) => {
                    last = e;
                    force = true;
                    time::sleep(self.cfg.retry_backoff).await;
                    continue;
                }
            };
            let Some(owner) = p.owner else {
                last = TableError::Unavailable(format!("partition {} has no owner", p.pid));
                stale = Some(p.pid);
                time::sleep(self.cfg.retry_backoff).await;
                continue;
            };
            force = false;
            let r = self.net.call(owner, DataMsg::Partition { pid: p.pid, op: op.clone(), rid, expires_ms, hits }, self.cfg.call_timeout).await;
            match after_answer(op.is_write(), owner, r) {
                Step::Done(r) => return r,
                Step::Retry { error, backoff } => {
                    last = error;
                    stale = Some(p.pid);
                    if backoff {
                        time::sleep(self.cfg.retry_backoff).await;
                    }
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_bad_shapes_and_sizes() {
        let put = |k: &str, v: usize| Op::Put { table: "t".into(), key: k.into(), value: "x".repeat(v), columns: BTreeMap::new() };
        assert!(validate(&put("k1", 10)).is_ok());
        assert!(validate(&put("", 10)).is_err());
        assert!(validate(&put("a b", 10)).is_err());
        assert!(validate(&put(&"k".repeat(KEY_BYTES_MAX + 1), 1)).is_err());
        assert!(validate(&put("k", CELL_BYTES_MAX + 1)).is_err());
        let many: BTreeMap<String, String> = (0..COLUMNS_MAX + 1).map(|i| (format!("c{i}"), "v".into())).collect();
        assert!(validate(&Op::Put { table: "t".into(), key: "k".into(), value: "v".into(), columns: many }).is_err());
        let big: BTreeMap<String, String> = (0..8).map(|i| (format!("c{i}"), "v".repeat(CELL_BYTES_MAX))).collect();
        assert!(validate(&Op::Put { table: "t".into(), key: "k".into(), value: "v".into(), columns: big }).is_err(), "row over ROW_BYTES_MAX");
        assert!(validate(&Op::Scan { table: "t".into(), start: "b".into(), end: "a".into(), limit: 10 }).is_err());
        assert!(validate(&Op::Scan { table: "t".into(), start: "".into(), end: "z".into(), limit: 0 }).is_err());
        assert!(validate(&Op::Get { table: "bad/table".into(), key: "k".into() }).is_err());
    }

    fn row(key: &str, value: usize, columns: &[(&str, usize)]) -> Op {
        Op::Put { table: "t".into(), key: key.into(), value: "v".repeat(value), columns: columns.iter().map(|&(c, n)| (c.to_string(), "w".repeat(n))).collect() }
    }

    #[test]
    fn validation_limits_hold_exactly_at_their_edges() {
        // Columns: the limit is allowed, one more is not.
        let names: Vec<String> = (0..=COLUMNS_MAX).map(|i| format!("c{i}")).collect();
        let cols = |n: usize| -> Vec<(&str, usize)> { names[..n].iter().map(|c| (c.as_str(), 1)).collect() };
        assert_eq!(validate(&row("k", 1, &cols(COLUMNS_MAX))), Ok(()));
        assert!(validate(&row("k", 1, &cols(COLUMNS_MAX + 1))).unwrap_err().contains("columns over"));
        // A row of exactly ROW_BYTES_MAX (key, value, names and cells) is
        // allowed; a byte more is not.
        let three = [("c0", CELL_BYTES_MAX), ("c1", CELL_BYTES_MAX), ("c2", CELL_BYTES_MAX)];
        let value = ROW_BYTES_MAX - 2 - 3 * (2 + CELL_BYTES_MAX);
        assert_eq!(validate(&row("kk", value, &three)), Ok(()));
        assert!(validate(&row("kk", value + 1, &three)).unwrap_err().contains("row of 65537 bytes"));
        // Column names are checked.
        assert_eq!(validate(&row("k", 1, &[("ok_name-1", 1)])), Ok(()));
        assert_eq!(validate(&row("k", 1, &[("bad name", 1)])), Err("bad column name".into()));
        assert!(validate(&row("k", 1, &[("c", CELL_BYTES_MAX + 1)])).is_err());
        // Scans: an empty start is the table's beginning; the limit is 1 to
        // SCAN_ROWS_MAX.
        let scan = |start: &str, end: &str, limit: u32| validate(&Op::Scan { table: "t".into(), start: start.into(), end: end.into(), limit });
        assert_eq!(scan("", "z", 10), Ok(()));
        assert!(scan("a b", "z", 10).is_err());
        assert!(scan("a", "", 10).is_err());
        assert!(scan("a", "a", 10).is_err());
        assert_eq!(scan("a", "b", 1), Ok(()));
        assert_eq!(scan("a", "b", SCAN_ROWS_MAX), Ok(()));
        assert!(scan("a", "b", 0).is_err());
        assert!(scan("a", "b", SCAN_ROWS_MAX + 1).is_err());
        // Conditional writes check both cells.
        let cas = |e: Option<usize>, v: usize| validate(&Op::Cas { table: "t".into(), key: "k".into(), expected: e.map(|n| "e".repeat(n)), value: "v".repeat(v) });
        assert_eq!(cas(None, CELL_BYTES_MAX), Ok(()));
        assert_eq!(cas(Some(CELL_BYTES_MAX), 1), Ok(()));
        assert!(cas(Some(CELL_BYTES_MAX + 1), 1).is_err());
        assert!(cas(None, CELL_BYTES_MAX + 1).is_err());
    }
}
