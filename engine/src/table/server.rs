//! The table server: loads the partitions the master grants it, serves
//! them while it holds their lease, and gives them up when a grant no
//! longer lists them or the master asks for a release.
//!
//! One task heartbeats every master every `heartbeat` (on the node's clock)
//! and applies the active master's grant: a granted (pid, epoch) not loaded
//! starts loading (namespace open, which fences the previous owner, then
//! LSM recovery); a loaded one gets its lease extended to the heartbeat's
//! send time + `lease - max_skew`; a loaded one the grant leaves out is
//! unloaded. Requests are answered by one task each (at most
//! [`INFLIGHT_MAX`]); a partition that is not loaded, whose lease ran out,
//! or whose range does not hold the key is answered `NotServingHere`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sim::net::{Incoming, Net};
use sim::topology::NodeId;
use sim::time::{self, SimTime};
use sim::world::NodeCtx;
use sim::Clock;

use super::hotkey::{HotEvent, Recognizer};
use super::part::PartStore;
use super::quota::PartitionController;
use super::*;
use crate::lsm::db::ClockFn;
use crate::stream::client::StreamClient;

/// Requests one server handles at once.
pub const INFLIGHT_MAX: usize = 1024;
/// (pid, epoch) pairs a server remembers it released.
pub const RELEASED_MAX: usize = 1024;
/// Lost partitions a server reports at once.
pub const LOST_MAX: usize = 256;
/// A server heartbeats only the master whose grant it applied last, as long
/// as that grant is younger than this many heartbeat periods; otherwise
/// (at start, after the master died or was deposed) it heartbeats every
/// master to find the acting one.
pub const GRANTER_FRESH_BEATS: u32 = 2;

enum Slot {
    Loading { epoch: u64 },
    Ready(Box<Ready>),
}

struct Ready {
    epoch: u64,
    info: PartitionInfo,
    store: PartStore,
    /// Index of the open serving interval in the observer, if serving.
    interval: Option<usize>,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<PartitionId, Slot>,
    /// Lease per (pid, epoch), local clock.
    leases: BTreeMap<(PartitionId, u64), SimTime>,
    released: BTreeSet<(PartitionId, u64)>,
    lost: Vec<(PartitionId, u64)>,
    /// (master epoch, master send time) of the newest grant.
    echo: Option<(u64, SimTime)>,
    /// The master whose grant was applied last, and when (local clock).
    granter: Option<(NodeId, SimTime)>,
    /// CPU time (µs) each partition's requests cost since the last
    /// heartbeat (the master balances by it).
    load: BTreeMap<PartitionId, u64>,
    /// Active partition traffic control.
    traffic: PartitionController,
    /// Time admitted requests waited for a core, and the CPU time they
    /// cost, since the last heartbeat: the server is contended when the
    /// first is at least the second (work waits as long as it runs).
    waited: (Duration, Duration),
}

struct Server {
    ctx: NodeCtx,
    cfg: TableConfig,
    clock: Clock,
    cpu: sim::Cpu,
    client: StreamClient,
    net: Net<ControlMsg>,
    st: Mutex<State>,
    /// Which keys of this server's partitions are hot.
    hotkeys: Mutex<Recognizer>,
    inflight: AtomicUsize,
}

/// The table server's main loop (run again after every restart).
pub async fn serve(ctx: NodeCtx, cfg: TableConfig) {
    let h = madsim::task::spawn_local(run(ctx, cfg));
    let _ = h.await;
}

async fn run(ctx: NodeCtx, cfg: TableConfig) {
    let client = StreamClient::bind(&ctx, cfg.stream.clone()).await;
    let (net, mut inbox) = Net::<ControlMsg>::bind(&ctx).await;
    let (data, mut data_inbox) = Net::<DataMsg>::bind(&ctx).await;
    let hotkeys = Mutex::new(Recognizer::new(cfg.hotkeys.clone()));
    let s = Arc::new(Server { clock: ctx.clock(), cpu: ctx.cpu(), ctx, cfg, client, net, st: Mutex::new(State::default()), hotkeys, inflight: AtomicUsize::new(0) });
    s.ctx.note("table server up");
    let hb = s.clone();
    madsim::task::spawn_local(async move { hb.heartbeat_loop().await });
    let ctl = s.clone();
    madsim::task::spawn_local(async move {
        while let Some(m) = inbox.recv().await {
            ctl.control(m).await;
        }
    });
    while let Some(m) = data_inbox.recv().await {
        let Some(req) = m.request else { continue };
        let DataMsg::Partition { pid, op, rid, expires_ms, hits } = m.msg else {
            data.reply(m.from, req, DataMsg::Response(Err(TableError::Refused("not a partition request".into())))).await;
            continue;
        };
        // A request counts towards its key's heat as it arrives, whether or
        // not the server has room for it (what is offered makes a key hot):
        // a point read with the HotZone hits it reports (its bytes once
        // answered), a write with its bytes. Whether the key is hot is read
        // at once.
        let heat = match &op {
            Op::Get { .. } => Some((hits.saturating_add(1), 0, false)),
            Op::Put { key, value, .. } | Op::Cas { key, value, .. } => Some((1, (key.len() + value.len()) as u64, true)),
            Op::Delete { key, .. } => Some((1, key.len() as u64, true)),
            _ => None,
        };
        let hot_key = heat.is_some_and(|(requests, bytes, write)| {
            let mut hk = s.hotkeys.lock().expect("hotkeys lock");
            hk.observe_n(time::now(), op.route_key(), requests, bytes, write);
            hk.hot(op.route_key()).is_some()
        });
        if s.inflight.load(Ordering::Relaxed) >= INFLIGHT_MAX {
            // Refused before any work (no effect): retryable, after a
            // back-off.
            data.reply(m.from, req, DataMsg::Response(Err(TableError::busy_for("table server requests in flight", s.cfg.retry_backoff)))).await;
            continue;
        }
        // Partition traffic control: a hot partition of a contended server
        // is throttled before it reaches the engine. A partition with a hot
        // key is handled by combining and HotZones instead: its limit, cut
        // at the old cost of its requests, goes.
        let now = time::now();
        let (throttled, limited) = {
            let mut st = s.st.lock().expect("state lock");
            if hot_key && st.traffic.release(pid) {
                s.ctx.note(format!("partition {pid} unthrottled: a key of it is hot"));
            }
            (st.traffic.admit(now, pid), st.traffic.is_limited(pid))
        };
        if limited && throttled.is_ok() {
            s.cfg.observer.with(|o| {
                o.count_traffic(format!("partition {pid}"), now, |c| {
                    c.offered += 1;
                    c.admitted += 1;
                    c.units += 1;
                    c.offered_units += 1;
                })
            });
        }
        if let Err(wait) = throttled {
            s.cfg.observer.with(|o| {
                o.count_traffic(format!("partition {pid}"), now, |c| {
                    c.offered += 1;
                    c.throttled += 1;
                    c.offered_units += 1;
                })
            });
            let e = TableError::Throttled {
                resource: format!("partition {pid}"),
                reason: "it takes more than its share of a contended server".into(),
                retry_after_us: u64::try_from(wait.as_micros()).unwrap_or(u64::MAX).max(1),
            };
            data.reply(m.from, req, DataMsg::Response(Err(e))).await;
            continue;
        }
        // Admission: the operation's CPU time, or a refusal at once when
        // the run queue is full (before any work: no effect).
        // A put of a key called hot joins its key's combined batch, and
        // costs its share of that batch's one engine write.
        let combine = hot_key && matches!(op, Op::Put { .. });
        let cost = if combine { s.cfg.stream.costs.server_combined } else { op_cost(&s.cfg.stream.costs, &op) };
        let end = match s.cpu_admit(cost) {
            Ok(end) => {
                let mut st = s.st.lock().expect("state lock");
                if st.load.len() < LOAD_REPORT_MAX || st.load.contains_key(&pid) {
                    *st.load.entry(pid).or_default() += u64::try_from(cost.as_micros()).unwrap_or(u64::MAX);
                }
                let bytes = match &op {
                    Op::Put { key, value, .. } | Op::Cas { key, value, .. } => key.len() + value.len(),
                    _ => 0,
                };
                st.traffic.done(pid, cost, 1, bytes as u64);
                st.waited.0 += end.saturating_sub(now + cost);
                st.waited.1 += cost;
                end
            }
            Err(b) => {
                data.reply(m.from, req, DataMsg::Response(Err(TableError::busy("table server cpu", b, cost)))).await;
                continue;
            }
        };
        s.inflight.fetch_add(1, Ordering::Relaxed);
        let (s2, data2) = (s.clone(), data.clone());
        madsim::task::spawn_local(Box::pin(async move {
            time::sleep_until(end).await;
            let mut r = s2.handle(pid, &op, rid, expires_ms, combine).await;
            // A hot key's write that was not combined is an engine write of
            // its own (a combined batch counts itself).
            if let (Op::Cas { key, .. } | Op::Delete { key, .. } | Op::Put { key, .. }, Ok(_), false) = (&op, &r, combine) {
                if s2.hotkeys.lock().expect("hotkeys lock").hot(key).is_some() {
                    s2.cfg.observer.with(|o| TableObserverData::count_per_second(&mut o.hot_key_writes, key.clone(), time::now(), 1));
                }
            }
            // A read's bytes count once known (as many for each HotZone hit
            // it reported); a read of a hot key says so, and its client may
            // read it from a HotZone for a while.
            if let (Op::Get { key, .. }, Ok(OpResult::Value(v))) = (&op, &mut r) {
                let bytes = (key.len() + v.as_ref().map_or(0, String::len)) as u64;
                let mut hk = s2.hotkeys.lock().expect("hotkeys lock");
                hk.observe_n(now, key, 0, bytes.saturating_mul(hits.saturating_add(1)), false);
                let hot = hk.hot(key).is_some();
                drop(hk);
                if hot {
                    s2.cfg.observer.with(|o| TableObserverData::count_per_second(&mut o.hot_source_reads, key.clone(), time::now(), 1));
                    r = Ok(OpResult::Hot { value: v.take(), filled_ns: None });
                }
            }
            // A scan's rows cost their share once read.
            if let Ok(OpResult::Rows { rows, .. }) = &r {
                let c = &s2.cfg.stream.costs;
                let bytes: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
                s2.cpu.run_always(c.server_scan_row * rows.len() as u32 + crate::cost::Costs::per_kib(c.server_kib, bytes)).await;
            }
            data2.reply(m.from, req, DataMsg::Response(r)).await;
            s2.inflight.fetch_sub(1, Ordering::Relaxed);
        }));
    }
}

/// The CPU time of an operation at a table server (a scan's rows are
/// charged once read).
pub fn op_cost(c: &crate::cost::Costs, op: &Op) -> std::time::Duration {
    use crate::cost::Costs;
    match op {
        Op::Get { .. } | Op::GetRow { .. } => c.server_read,
        Op::Scan { .. } => c.server_scan,
        Op::Put { value, columns, .. } => c.server_write + Costs::per_kib(c.server_kib, value.len() + columns.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()),
        Op::Cas { value, .. } => c.server_read + c.server_write + Costs::per_kib(c.server_kib, value.len()),
        Op::Append { .. } => c.server_read + c.server_write,
        Op::Delete { .. } => c.server_write,
    }
}

impl Server {
    /// Reserves the CPU for a request's work: when it is done.
    fn cpu_admit(&self, cost: std::time::Duration) -> Result<SimTime, sim::CpuBusy> {
        self.cpu.reserve(cost)
    }

    fn lease_valid(&self, st: &State, pid: PartitionId, epoch: u64) -> bool {
        st.leases.get(&(pid, epoch)).is_some_and(|&t| self.clock.now() < t)
    }

    /// Opens or closes serving intervals as leases come and go.
    fn update_intervals(&self, st: &mut State) {
        let now = time::now();
        let pids: Vec<PartitionId> = st.slots.keys().copied().collect();
        for pid in pids {
            let valid = match &st.slots[&pid] {
                Slot::Ready(r) => self.lease_valid(st, pid, r.epoch) && !r.store.broken(),
                Slot::Loading { .. } => continue,
            };
            let Some(Slot::Ready(r)) = st.slots.get_mut(&pid) else { continue };
            match (valid, r.interval) {
                (true, None) => {
                    let (server, epoch, start_key, end_key) = (self.ctx.id, r.epoch, r.info.start.clone(), r.info.end.clone());
                    r.interval = Some(self.cfg.observer.with(|o| {
                        o.serving.push(ServingInterval { partition: pid, server, epoch, start_key, end_key, start: now, last_served: now, renewed: now, stopped: None });
                        o.serving.len() - 1
                    }));
                }
                (false, Some(i)) => {
                    self.close_interval(i, now);
                    r.interval = None;
                }
                _ => {}
            }
        }
    }

    fn close_interval(&self, i: usize, now: SimTime) {
        self.cfg.observer.with(|o| {
            if let Some(iv) = o.serving.get_mut(i) {
                iv.stopped.get_or_insert(now);
            }
        });
    }

    fn unload(&self, st: &mut State, pid: PartitionId) {
        if let Some(Slot::Ready(r)) = st.slots.remove(&pid) {
            if let Some(i) = r.interval {
                self.close_interval(i, time::now());
            }
            r.store.kill();
            self.ctx.note(format!("unload partition {pid} epoch {}", r.epoch));
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut last_tick = time::now();
        loop {
            let sent = self.clock.now();
            let (echo, lost, granter, load) = {
                let mut st = self.st.lock().expect("state lock");
                let now = time::now();
                let (waited, ran) = std::mem::take(&mut st.waited);
                let contended = !ran.is_zero() && waited >= ran;
                for pid in st.traffic.tick(now, now.saturating_sub(last_tick), contended) {
                    self.ctx.note(format!("partition {pid} throttled: more than its share of a contended server"));
                }
                last_tick = now;
                let events = self.hotkeys.lock().expect("hotkeys lock").tick(now);
                if !events.is_empty() {
                    self.cfg.observer.with(|o| {
                        for e in events {
                            o.hot_keys.push(match e {
                                HotEvent::Hot(h) => HotKeyEvent { at: now, server: self.ctx.id, key: h.key, kind: h.kind.name().to_string(), reads_per_s: h.reads_per_s, writes_per_s: h.writes_per_s, bytes_per_s: h.bytes_per_s },
                                HotEvent::Cooled { key } => HotKeyEvent { at: now, server: self.ctx.id, key, kind: "cooled".into(), reads_per_s: 0, writes_per_s: 0, bytes_per_s: 0 },
                            });
                        }
                    });
                }
                let load: Vec<(PartitionId, u64)> = std::mem::take(&mut st.load).into_iter().collect();
                (st.echo, st.lost.clone(), st.granter, load)
            };
            self.cpu.run_control(self.cfg.stream.costs.control).await;
            let fresh = self.cfg.heartbeat * GRANTER_FRESH_BEATS;
            let masters = match granter {
                Some((m, at)) if sent.saturating_sub(at) < fresh => vec![m],
                _ => self.cfg.masters.clone(),
            };
            // One call per master, each applying its grant on arrival: a
            // dead master's timeout does not hold up the active one's grant
            // or the next heartbeat.
            for m in masters {
                let s = self.clone();
                let msg = ControlMsg::Heartbeat { echo, lost: lost.clone(), load: load.clone(), draining: self.ctx.draining() };
                let lost = lost.clone();
                madsim::task::spawn_local(async move {
                    if let Ok(ControlMsg::Grant { master_epoch, sent: msent, parts }) = s.net.call(m, msg, s.cfg.call_timeout).await {
                        s.apply_grant(m, sent, master_epoch, msent, parts, &lost);
                    }
                });
            }
            {
                let mut st = self.st.lock().expect("state lock");
                // Broken partitions (fenced, engine stopped) are given up.
                let broken: Vec<(PartitionId, u64)> = st
                    .slots
                    .iter()
                    .filter_map(|(&p, s)| match s {
                        Slot::Ready(r) if r.store.broken() => Some((p, r.epoch)),
                        _ => None,
                    })
                    .collect();
                for (p, e) in broken {
                    self.unload(&mut st, p);
                    if st.lost.len() < LOST_MAX {
                        st.lost.push((p, e));
                    }
                }
                self.update_intervals(&mut st);
            }
            self.clock.sleep(self.cfg.heartbeat).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_grant(self: &Arc<Self>, master: NodeId, sent_local: SimTime, master_epoch: u64, master_sent: SimTime, parts: Vec<(PartitionId, u64)>, reported: &[(PartitionId, u64)]) {
        let mut st = self.st.lock().expect("state lock");
        // An older master's grant, or one this master sent before the
        // newest applied (answers may arrive out of order), is stale.
        if st.echo.is_some_and(|echo| echo > (master_epoch, master_sent)) {
            return;
        }
        st.echo = Some((master_epoch, master_sent));
        st.granter = Some((master, self.clock.now()));
        // The master has seen the losses this heartbeat reported.
        st.lost.retain(|l| !reported.contains(l));
        let until = sent_local + self.cfg.lease.saturating_sub(self.cfg.max_skew);
        let granted: BTreeMap<PartitionId, u64> = parts.into_iter().filter(|p| !st.released.contains(p)).collect();
        // Leases: only for what this grant lists.
        st.leases.retain(|(p, e), _| granted.get(p) == Some(e));
        let now = time::now();
        for (&p, &e) in &granted {
            let l = st.leases.entry((p, e)).or_insert(until);
            *l = (*l).max(until);
            if let Some(Slot::Ready(r)) = st.slots.get(&p) {
                if let (Some(i), true) = (r.interval, r.epoch == e) {
                    self.cfg.observer.with(|o| {
                        if let Some(iv) = o.serving.get_mut(i) {
                            iv.renewed = iv.renewed.max(now);
                        }
                    });
                }
            }
        }
        // Unload what the grant leaves out or names at another epoch.
        let drop: Vec<PartitionId> = st
            .slots
            .iter()
            .filter(|(p, s)| {
                let e = match s {
                    Slot::Loading { epoch } => *epoch,
                    Slot::Ready(r) => r.epoch,
                };
                granted.get(p) != Some(&e)
            })
            .map(|(&p, _)| p)
            .collect();
        for p in drop {
            if matches!(st.slots.get(&p), Some(Slot::Loading { .. })) {
                // The load task sees the slot changed and drops its result.
                st.slots.remove(&p);
            } else {
                self.unload(&mut st, p);
            }
        }
        for (&p, &e) in &granted {
            if st.slots.contains_key(&p) {
                continue;
            }
            st.slots.insert(p, Slot::Loading { epoch: e });
            let s = self.clone();
            madsim::task::spawn_local(async move { s.load(p, e).await });
        }
        self.update_intervals(&mut st);
    }

    async fn load(self: Arc<Self>, pid: PartitionId, epoch: u64) {
        let started = time::now();
        let r = async {
            let b = self.client.meta_get(&part_key(pid)).await.map_err(|e| format!("read map: {e}"))?.ok_or("partition not in the map")?;
            let info: PartitionInfo = decode(&b).ok_or("malformed partition entry")?;
            if info.epoch != epoch || info.owner != Some(self.ctx.id) {
                return Err(format!("map holds epoch {} owner {:?}", info.epoch, info.owner));
            }
            let clock = self.clock.clone();
            let clock: ClockFn = Arc::new(move || clock.now().as_nanos() / 1_000_000);
            let store = PartStore::open(&self.client, pid, self.cfg.part_memory, clock, Some(self.cfg.observer.clone())).await?;
            Ok::<_, String>((info, store))
        }
        .await;
        let mut st = self.st.lock().expect("state lock");
        let wanted = matches!(st.slots.get(&pid), Some(Slot::Loading { epoch: e }) if *e == epoch);
        match r {
            Ok((info, store)) if wanted => {
                self.cfg.observer.with(|o| o.loads.push((started, pid, time::now().saturating_sub(started))));
                self.ctx.note(format!("loaded partition {pid} epoch {epoch}"));
                st.slots.insert(pid, Slot::Ready(Box::new(Ready { epoch, info, store, interval: None })));
                self.update_intervals(&mut st);
            }
            Ok((_, store)) => store.kill(),
            Err(e) => {
                self.ctx.note(format!("load of partition {pid} epoch {epoch} failed: {e}"));
                if wanted {
                    st.slots.remove(&pid);
                    if st.lost.len() < LOST_MAX {
                        st.lost.push((pid, epoch));
                    }
                }
            }
        }
    }

    async fn control(&self, m: Incoming<ControlMsg>) {
        let Some(req) = m.request else { return };
        let answer = match m.msg {
            ControlMsg::Release { pid, epoch } => {
                let mut st = self.st.lock().expect("state lock");
                if st.released.len() >= RELEASED_MAX {
                    st.released.pop_first();
                }
                st.released.insert((pid, epoch));
                st.leases.remove(&(pid, epoch));
                let held = match st.slots.get(&pid) {
                    Some(Slot::Loading { epoch: e }) => Some(*e),
                    Some(Slot::Ready(r)) => Some(r.epoch),
                    None => None,
                };
                if held == Some(epoch) {
                    if matches!(st.slots.get(&pid), Some(Slot::Loading { .. })) {
                        st.slots.remove(&pid);
                    } else {
                        self.unload(&mut st, pid);
                    }
                }
                ControlMsg::Released
            }
            _ => ControlMsg::NotMaster,
        };
        self.net.reply(m.from, req, answer).await;
    }

    /// Serves one request while the lease holds. The node may freeze at any
    /// wait, so an answer can leave long after its lease lapsed; what must
    /// hold is that the request took effect under the lease. A write passes
    /// its lease check before it is logged, and from there the stream
    /// layer's fencing refuses its append once a newer owner has opened the
    /// partition: it took effect under the lease if it took effect at all.
    /// A read takes its value when the store answers, possibly after a
    /// freeze: it is answered only if the lease still holds then, else the
    /// client is sent elsewhere. The serving interval records those
    /// instants (what `no_split_brain` compares), not when answers leave.
    async fn handle(&self, pid: PartitionId, op: &Op, rid: Option<ReqId>, expires_ms: u64, combine: bool) -> Result<OpResult, TableError> {
        let checked = time::now();
        let (store, info, interval, epoch) = {
            let st = self.st.lock().expect("state lock");
            match st.slots.get(&pid) {
                Some(Slot::Ready(r)) if self.lease_valid(&st, pid, r.epoch) => {
                    let in_range = match op {
                        Op::Scan { start, .. } => r.info.end.as_deref().is_none_or(|e| start.as_str() < e),
                        _ => r.info.contains(op.route_key()),
                    };
                    if !in_range || r.info.table != op.table() {
                        None
                    } else {
                        Some((r.store.clone(), r.info.clone(), r.interval, r.epoch))
                    }
                }
                _ => None,
            }
            .ok_or(TableError::NotServingHere(pid))
            .inspect_err(|_| self.cfg.observer.with(|o| o.not_serving += 1))?
        };
        self.cfg.observer.with(|o| o.data_requests += 1);
        let r = if combine { store.apply_combined(&info, op, rid, expires_ms, self.cfg.combine).await } else { store.apply(&info, op, rid, expires_ms).await };
        let served = if op.is_write() {
            checked
        } else {
            let st = self.st.lock().expect("state lock");
            let held = matches!(st.slots.get(&pid), Some(Slot::Ready(ready)) if ready.epoch == epoch) && self.lease_valid(&st, pid, epoch);
            drop(st);
            if !held {
                self.cfg.observer.with(|o| o.not_serving += 1);
                return Err(TableError::NotServingHere(pid));
            }
            time::now()
        };
        if r.is_ok() {
            if let Some(i) = interval {
                self.cfg.observer.with(|o| {
                    if let Some(iv) = o.serving.get_mut(i) {
                        iv.last_served = iv.last_served.max(served);
                    }
                });
            }
        }
        r
    }
}
