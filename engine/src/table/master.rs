//! The master: one per zone, one active, chosen through the metadata store
//! (see the module doc of [`super`]). The active master runs the [`Core`]:
//! it answers heartbeats with grants, ticks the failure detector every
//! heartbeat, commits the core's assignments (one Txn each, checking its
//! master epoch and the partition's stored entry) and runs admin calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sim::net::{Incoming, Net};
use sim::time::{self, SimTime};
use sim::world::NodeCtx;
use sim::Clock;

use super::core::{Cmd, Core, Input};
use super::quota::{quota_key, QuotaEntry, ShareDivider, QUOTAS_MAX, QUOTAS_PER_INSTANCE_MAX, SHARE_LEASE, SHARE_SKEW};
use super::part::{routing_key, PartStore};
use super::*;
use crate::lsm::db::ClockFn;
use crate::meta::service::ClientError;
use crate::meta::state::Outcome;
use crate::stream::client::StreamClient;

/// Partitions one `create_table` may create.
pub const CREATE_PARTITIONS_MAX: usize = 4096;
/// Partition entries one metadata Txn of a table's creation writes (beside
/// the master epoch check and the map version).
pub const CREATE_CHUNK_MAX: usize = crate::meta::state::TXN_KEYS_MAX - 4;
/// Admin calls one master runs at once.
pub const ADMIN_INFLIGHT_MAX: usize = 16;
/// How long an admin call waits for a drain or a commit.
pub const ADMIN_WAIT_MAX: Duration = Duration::from_secs(20);
/// Attempts at one metadata transaction after unknown outcomes.
pub const TXN_ATTEMPTS_MAX: u32 = 8;
/// Partition assignments one metadata Txn commits (each is a check and a
/// write, beside the master epoch and the map version).
pub const ASSIGN_BATCH_MAX: usize = (crate::meta::state::TXN_KEYS_MAX - 4) / 2;

/// The master role's lease record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRec {
    holder: NodeId,
    epoch: u64,
    beat: u64,
}

struct Active {
    epoch: u64,
    core: Core,
    /// Divides every quota over the proxies.
    quotas: ShareDivider,
    /// Local send time of the last successful renewal.
    renewed: SimTime,
}

struct Master {
    ctx: NodeCtx,
    cfg: TableConfig,
    clock: Clock,
    cpu: sim::Cpu,
    client: StreamClient,
    net: Net<ControlMsg>,
    active: Mutex<Option<Active>>,
    admin: std::sync::atomic::AtomicUsize,
    /// Map changes this master made (for the map version's value).
    map_changes: std::sync::atomic::AtomicU64,
}

/// The master's main loop (run again after every restart).
pub async fn serve(ctx: NodeCtx, cfg: TableConfig) {
    let h = madsim::task::spawn_local(run(ctx, cfg));
    let _ = h.await;
}

async fn run(ctx: NodeCtx, cfg: TableConfig) {
    let client = StreamClient::bind(&ctx, cfg.stream.clone()).await;
    let (net, mut inbox) = Net::<ControlMsg>::bind(&ctx).await;
    let m = Arc::new(Master { clock: ctx.clock(), cpu: ctx.cpu(), ctx, cfg, client, net, active: Mutex::new(None), admin: Default::default(), map_changes: Default::default() });
    let r = m.clone();
    madsim::task::spawn_local(async move { r.role_loop().await });
    while let Some(msg) = inbox.recv().await {
        match msg.msg {
            ControlMsg::Admin(_) => {
                if m.admin.load(std::sync::atomic::Ordering::Relaxed) >= ADMIN_INFLIGHT_MAX {
                    if let Some(req) = msg.request {
                        m.net.reply(msg.from, req, ControlMsg::AdminDone(Err(TableError::Failed("master busy".into())))).await;
                    }
                    continue;
                }
                m.admin.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let m2 = m.clone();
                madsim::task::spawn_local(async move {
                    m2.clone().admin_call(msg).await;
                    m2.admin.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
            _ => {
                m.cpu.run_control(m.cfg.stream.costs.control).await;
                m.control(msg).await
            }
        }
    }
}

impl Master {
    /// The active term's epoch, if this master may act now.
    fn acting(&self) -> Option<u64> {
        let a = self.active.lock().expect("active lock");
        let a = a.as_ref()?;
        (self.clock.now() < a.renewed + self.cfg.lease.saturating_sub(self.cfg.max_skew)).then_some(a.epoch)
    }

    fn step(self: &Arc<Self>, input: Input) -> Vec<Cmd> {
        let now = self.clock.now();
        let mut a = self.active.lock().expect("active lock");
        match a.as_mut() {
            Some(a) => a.core.step(now, input),
            None => Vec::new(),
        }
    }

    async fn control(self: &Arc<Self>, m: Incoming<ControlMsg>) {
        let Some(req) = m.request else { return };
        let answer = match (m.msg, self.acting()) {
            (ControlMsg::Heartbeat { echo, lost, load, draining }, Some(epoch)) => {
                let echo = echo.filter(|(e, _)| *e == epoch).map(|(_, t)| t);
                let zone = self.ctx.world.topology().zone_of(m.from);
                let sent = self.clock.now();
                let known = self.cfg.servers.contains(&m.from);
                let cmds = if known { self.step(Input::Heartbeat { server: m.from, zone, echo, lost, load }) } else { Vec::new() };
                if known && draining {
                    self.step(Input::Draining { server: m.from });
                }
                let parts = cmds.into_iter().find_map(|c| if let Cmd::Grant { parts, .. } = c { Some(parts) } else { None }).unwrap_or_default();
                ControlMsg::Grant { master_epoch: epoch, sent, parts }
            }
            (ControlMsg::Quota(report), Some(_)) if self.cfg.proxies.contains(&m.from) => {
                let now = self.clock.now();
                let grant = self.active.lock().expect("active lock").as_mut().and_then(|a| a.quotas.report(now, m.from, report));
                match grant {
                    Some(g) => ControlMsg::QuotaGrant(g),
                    None => ControlMsg::NotMaster,
                }
            }
            _ => ControlMsg::NotMaster,
        };
        self.net.reply(m.from, req, answer).await;
    }

    async fn role_loop(self: Arc<Self>) {
        // (value seen, local time first seen) of the lease key.
        let mut seen: Option<(Option<Vec<u8>>, SimTime)> = None;
        loop {
            let started = self.clock.now();
            let cur = self.client.meta_get(MASTER_LEASE_KEY).await;
            let holding = self.active.lock().expect("active lock").as_ref().map(|a| a.epoch);
            match cur {
                Err(_) => {}
                Ok(cur) => {
                    let rec: Option<LeaseRec> = cur.as_deref().and_then(decode);
                    match (holding, &rec) {
                        (Some(epoch), Some(r)) if r.holder == self.ctx.id && r.epoch == epoch => {
                            let next = LeaseRec { beat: r.beat + 1, ..r.clone() };
                            match self.client.meta_txn(vec![(MASTER_LEASE_KEY.into(), cur.clone())], vec![(MASTER_LEASE_KEY.into(), Some(encode(&next)))]).await {
                                Ok(Outcome::Done) => {
                                    if let Some(a) = self.active.lock().expect("active lock").as_mut() {
                                        a.renewed = started;
                                    }
                                }
                                Ok(_) => self.step_down("lease changed"),
                                Err(_) => {}
                            }
                        }
                        (Some(_), _) => self.step_down("lease taken"),
                        (None, _) => {
                            let now = self.clock.now();
                            let stable_since = match &seen {
                                Some((v, t)) if *v == cur => *t,
                                _ => {
                                    seen = Some((cur.clone(), now));
                                    now
                                }
                            };
                            let expired = rec.is_none() || now >= stable_since + self.cfg.lease + self.cfg.max_skew;
                            if expired {
                                self.take_over(started, cur.clone(), rec.as_ref().map_or(0, |r| r.epoch)).await;
                                seen = None;
                            }
                        }
                    }
                }
            }
            if holding.is_some() && self.acting().is_none() && self.active.lock().expect("active lock").is_some() {
                let renewed = self.active.lock().expect("active lock").as_ref().map(|a| a.renewed);
                if renewed.is_some_and(|r| self.clock.now() >= r + self.cfg.lease) {
                    self.step_down("lease not renewed in time");
                }
            }
            if self.acting().is_some() {
                let cmds = self.step(Input::Tick);
                self.execute(cmds);
            }
            self.clock.sleep(self.cfg.heartbeat).await;
        }
    }

    fn step_down(&self, why: &str) {
        if self.active.lock().expect("active lock").take().is_some() {
            self.ctx.note(format!("master steps down: {why}"));
        }
    }

    async fn take_over(self: &Arc<Self>, started: SimTime, cur: Option<Vec<u8>>, old_epoch: u64) {
        let epoch = old_epoch + 1;
        let rec = LeaseRec { holder: self.ctx.id, epoch, beat: 0 };
        let r = self
            .client
            .meta_txn(vec![(MASTER_LEASE_KEY.into(), cur)], vec![(MASTER_LEASE_KEY.into(), Some(encode(&rec))), (MASTER_EPOCH_KEY.into(), Some(encode(&epoch)))])
            .await;
        if r != Ok(Outcome::Done) {
            return;
        }
        let Ok(map) = self.load_map().await else { return };
        let Ok(stored) = self.client.meta_scan_all(QUOTA_PREFIX, QUOTAS_MAX).await else { return };
        let now = self.clock.now();
        let mut core = Core::new(self.cfg.core(), now);
        core.step(now, Input::Map(map));
        let mut quotas = ShareDivider::new(epoch, self.cfg.proxies.clone(), SHARE_LEASE, SHARE_SKEW, now);
        for (k, v) in stored {
            if let (Some(instance), Some(entries)) = (k.strip_prefix(QUOTA_PREFIX), decode::<Vec<QuotaEntry>>(&v)) {
                quotas.set_instance(instance, &entries);
            }
        }
        *self.active.lock().expect("active lock") = Some(Active { epoch, core, quotas, renewed: started });
        self.ctx.note(format!("master takes over at epoch {epoch}"));
        let me = self.ctx.id;
        self.cfg.observer.with(|o| o.master_takeovers.push((time::now(), me, epoch)));
    }

    async fn load_map(&self) -> Result<Vec<PartitionInfo>, TableError> {
        read_map(&mut *self.client.meta().await).await.map_err(|e| TableError::Unknown(format!("map: {e}")))
    }

    async fn reload(self: &Arc<Self>) {
        if let Ok(map) = self.load_map().await {
            self.step(Input::Map(map));
        }
    }

    fn execute(self: &Arc<Self>, cmds: Vec<Cmd>) {
        // The assignments of one step are committed together, in Txns of
        // at most ASSIGN_BATCH_MAX (a new table's thousands of partitions
        // are placed in a few dozen Txns, not thousands).
        let mut assigns = Vec::new();
        for c in cmds {
            match c {
                Cmd::Grant { .. } => {}
                Cmd::Dead { server } => self.ctx.note(format!("server {} declared dead", server.0)),
                Cmd::Drained { server } => {
                    self.ctx.note(format!("server {} drained", server.0));
                    let at = time::now();
                    self.cfg.observer.with(|o| {
                        if !o.drained.iter().any(|d| d.0 == server) {
                            o.drained.push((server, at));
                        }
                    });
                }
                Cmd::Release { server, pid, epoch } => {
                    let m = self.clone();
                    madsim::task::spawn_local(async move {
                        if let Ok(ControlMsg::Released) = m.net.call(server, ControlMsg::Release { pid, epoch }, m.cfg.call_timeout).await {
                            let cmds = m.step(Input::Released { pid, epoch });
                            m.execute(cmds);
                        }
                    });
                }
                Cmd::Assign { info, to, cause, last_heard } => assigns.push((info, to, cause, last_heard)),
            }
        }
        while !assigns.is_empty() {
            let rest = assigns.split_off(assigns.len().min(ASSIGN_BATCH_MAX));
            let batch = std::mem::replace(&mut assigns, rest);
            let m = self.clone();
            madsim::task::spawn_local(async move { m.assign(batch).await });
        }
    }

    async fn txn(&self, epoch: u64, mut checks: Vec<(String, Option<Vec<u8>>)>, mut writes: Vec<(String, Option<Vec<u8>>)>) -> Result<Outcome, TableError> {
        checks.insert(0, (MASTER_EPOCH_KEY.into(), Some(encode(&epoch))));
        // A change of the map changes its version, for readers that page.
        if writes.iter().any(|(k, _)| k.starts_with(PART_PREFIX)) {
            let v = self.map_changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            writes.push((MAP_VERSION_KEY.into(), Some(encode(&(epoch, self.ctx.id.0, v)))));
        }
        for _ in 0..TXN_ATTEMPTS_MAX {
            match self.client.meta_txn(checks.clone(), writes.clone()).await {
                Ok(Outcome::TxnFailed { key, current }) => {
                    // An earlier attempt of ours may have applied: every write in place.
                    let mine = writes.iter().all(|(k, v)| *k != key || *v == current);
                    if key != MASTER_EPOCH_KEY && mine && !writes.is_empty() {
                        let mut all = true;
                        for (k, v) in &writes {
                            if self.client.meta_get(k).await.ok() != Some(v.clone()) {
                                all = false;
                            }
                        }
                        if all {
                            return Ok(Outcome::Done);
                        }
                    }
                    return Ok(Outcome::TxnFailed { key, current });
                }
                Ok(o) => return Ok(o),
                Err(ClientError::Unknown) => continue,
                Err(e) => return Err(TableError::Failed(format!("metadata: {e}"))),
            }
        }
        Err(TableError::Unknown("metadata transaction outcome unknown".into()))
    }

    /// Commits a batch of assignments in one Txn (each checking its
    /// partition's entry is still as the core saw it). The core then learns
    /// the entries as stored; when the Txn failed (one entry changed under
    /// it, or an unknown outcome), it reads the map again.
    async fn assign(self: Arc<Self>, batch: Vec<(PartitionInfo, NodeId, FailoverCause, Option<SimTime>)>) {
        let Some(epoch) = self.acting() else {
            for (info, ..) in &batch {
                self.step(Input::AssignDone { pid: info.pid });
            }
            return;
        };
        let mut checks = Vec::with_capacity(batch.len());
        let mut writes = Vec::with_capacity(batch.len());
        let mut news = Vec::with_capacity(batch.len());
        for (info, to, ..) in &batch {
            let new = PartitionInfo { owner: Some(*to), epoch: info.epoch + 1, ..info.clone() };
            let k = part_key(info.pid);
            checks.push((k.clone(), Some(encode(info))));
            writes.push((k, Some(encode(&new))));
            news.push(new);
        }
        let done = self.txn(epoch, checks, writes).await == Ok(Outcome::Done);
        if done {
            let at = time::now();
            for ((info, to, cause, last_heard), new) in batch.iter().zip(&news) {
                self.ctx.note(format!("partition {} to server {} epoch {} ({cause:?})", info.pid, to.0, new.epoch));
                self.cfg.observer.with(|o| o.failovers.push(Failover { at, partition: info.pid, from: info.owner, to: Some(*to), cause: *cause, last_heard: *last_heard }));
            }
        }
        for (info, ..) in &batch {
            self.step(Input::AssignDone { pid: info.pid });
        }
        if done {
            for new in news {
                self.step(Input::Entry(new));
            }
        } else {
            self.reload().await;
        }
    }

    async fn admin_call(self: Arc<Self>, m: Incoming<ControlMsg>) {
        let Some(req) = m.request else { return };
        let ControlMsg::Admin(op) = m.msg else { return };
        let r = match self.acting() {
            None => Err(TableError::Failed("not the active master".into())),
            Some(epoch) => self.admin(epoch, op).await,
        };
        self.net.reply(m.from, req, ControlMsg::AdminDone(r)).await;
    }

    async fn admin(self: &Arc<Self>, epoch: u64, op: AdminOp) -> Result<Vec<PartitionId>, TableError> {
        match op {
            AdminOp::CreateInstance { name, access_key } => {
                if !valid_name(&name) || access_key.is_empty() || access_key.len() > NAME_BYTES_MAX {
                    return Err(TableError::Refused("bad instance name or access key".into()));
                }
                let k = instance_key(&name);
                let v = encode(&access_key);
                match self.txn(epoch, vec![(k.clone(), None)], vec![(k, Some(v.clone()))]).await? {
                    Outcome::Done => Ok(vec![]),
                    Outcome::TxnFailed { current, .. } if current == Some(v) => Ok(vec![]),
                    _ => Err(TableError::Failed(format!("instance {name} exists"))),
                }
            }
            AdminOp::CreateTable { instance, table, partitions, splits } => {
                if !valid_name(&instance) || !valid_name(&table) {
                    return Err(TableError::Refused("bad name".into()));
                }
                let n = partitions as usize;
                if n == 0 || n > CREATE_PARTITIONS_MAX || splits.len() + 1 != n || !splits.iter().all(|s| valid_key(s)) || !splits.windows(2).all(|w| w[0] < w[1]) {
                    return Err(TableError::Refused(format!("partitions must be 1..={CREATE_PARTITIONS_MAX} with partitions - 1 increasing split keys")));
                }
                if self.client.meta_get(&instance_key(&instance)).await.map_err(|e| TableError::Unknown(e.to_string()))?.is_none() {
                    return Err(TableError::Failed(format!("no instance {instance}")));
                }
                let tk = table_key(&instance, &table);
                if let Some(b) = self.client.meta_get(&tk).await.map_err(|e| TableError::Unknown(e.to_string()))? {
                    return decode::<Vec<PartitionId>>(&b).ok_or(TableError::Failed("malformed table entry".into()));
                }
                // Created in bounded transactions: the partition ids are
                // reserved under a `creating` record first, the entries are
                // written in chunks, and the table entry comes last (until it
                // exists, proxies refuse the table). A retry after a crash
                // finds the record and finishes with the same ids.
                let ck = creating_key(&instance, &table);
                let pids: Vec<PartitionId> = match self.client.meta_get(&ck).await.map_err(|e| TableError::Unknown(e.to_string()))? {
                    Some(b) => decode(&b).ok_or(TableError::Failed("malformed creation record".into()))?,
                    None => {
                        let cur = self.client.meta_get(NEXT_PID_KEY).await.map_err(|e| TableError::Unknown(e.to_string()))?;
                        let first: u64 = cur.as_deref().and_then(decode).unwrap_or(1);
                        let pids: Vec<PartitionId> = (first..first + n as u64).collect();
                        let writes = vec![(NEXT_PID_KEY.to_string(), Some(encode(&(first + n as u64)))), (ck.clone(), Some(encode(&pids)))];
                        match self.txn(epoch, vec![(NEXT_PID_KEY.into(), cur), (tk.clone(), None), (ck.clone(), None)], writes).await? {
                            Outcome::Done => pids,
                            _ => return Err(TableError::Failed("concurrent change, retry".into())),
                        }
                    }
                };
                if pids.len() != n {
                    return Err(TableError::Failed(format!("table {table} is being created with {} partitions", pids.len())));
                }
                let infos: Vec<PartitionInfo> = pids
                    .iter()
                    .enumerate()
                    .map(|(i, &pid)| {
                        let start = if i == 0 { String::new() } else { splits[i - 1].clone() };
                        PartitionInfo { pid, instance: instance.clone(), table: table.clone(), start, end: splits.get(i).cloned(), owner: None, epoch: 0 }
                    })
                    .collect();
                for chunk in infos.chunks(CREATE_CHUNK_MAX) {
                    // A chunk an interrupted attempt wrote (one Txn: whole or
                    // not at all) may be placed already: left as it is.
                    if self.client.meta_get(&part_key(chunk[0].pid)).await.map_err(|e| TableError::Unknown(e.to_string()))?.is_some() {
                        continue;
                    }
                    let writes = chunk.iter().map(|info| (part_key(info.pid), Some(encode(info)))).collect();
                    if self.txn(epoch, vec![(ck.clone(), Some(encode(&pids)))], writes).await? != Outcome::Done {
                        return Err(TableError::Failed("concurrent change, retry".into()));
                    }
                }
                match self.txn(epoch, vec![(ck.clone(), Some(encode(&pids))), (tk.clone(), None)], vec![(tk, Some(encode(&pids))), (ck, None)]).await? {
                    Outcome::Done => {
                        self.reload().await;
                        Ok(pids)
                    }
                    _ => Err(TableError::Failed("concurrent change, retry".into())),
                }
            }
            AdminOp::Move { pid, to } => {
                if !self.cfg.servers.contains(&to) {
                    return Err(TableError::Refused(format!("{} is not a table server", to.0)));
                }
                let cmds = self.step(Input::Move { pid, to });
                self.execute(cmds);
                self.wait_until(|m| m.owner_of(pid) == Some(Some(to))).await?;
                Ok(vec![pid])
            }
            AdminOp::Split { pid, at } => {
                let info = self.info(pid)?;
                if !valid_key(&at) || !info.contains(&at) || at == info.start {
                    return Err(TableError::Refused(format!("split key {at:?} not inside partition {pid}")));
                }
                let left = PartitionInfo { end: Some(at.clone()), owner: None, epoch: 0, ..info.clone() };
                let right = PartitionInfo { start: at, owner: None, epoch: 0, ..info.clone() };
                self.rewrite(epoch, vec![info], vec![left, right], FailoverCause::Split).await
            }
            AdminOp::Merge { left, right } => {
                let (l, r) = (self.info(left)?, self.info(right)?);
                if l.instance != r.instance || l.table != r.table || l.end.as_deref() != Some(r.start.as_str()) {
                    return Err(TableError::Refused(format!("partitions {left} and {right} are not neighbours")));
                }
                let merged = PartitionInfo { end: r.end.clone(), owner: None, epoch: 0, ..l.clone() };
                self.rewrite(epoch, vec![l, r], vec![merged], FailoverCause::Merged).await
            }
            AdminOp::SetQuota { instance, entries } => {
                if !valid_name(&instance) {
                    return Err(TableError::Refused("bad instance name".into()));
                }
                if entries.len() > QUOTAS_PER_INSTANCE_MAX {
                    return Err(TableError::Refused(format!("{} quotas over {QUOTAS_PER_INSTANCE_MAX}", entries.len())));
                }
                if let Some(e) = entries.iter().find(|e| e.table.as_deref().is_some_and(|t| !valid_name(t)) || e.limit.burst == 0) {
                    return Err(TableError::Refused(format!("bad quota {e:?}: a table name, and a burst of at least 1")));
                }
                if self.client.meta_get(&instance_key(&instance)).await.map_err(|e| TableError::Unknown(e.to_string()))?.is_none() {
                    return Err(TableError::Failed(format!("no instance {instance}")));
                }
                let k = quota_key(&instance);
                let cur = self.client.meta_get(&k).await.map_err(|e| TableError::Unknown(e.to_string()))?;
                match self.txn(epoch, vec![(k.clone(), cur)], vec![(k, Some(encode(&entries)))]).await? {
                    Outcome::Done => {
                        let mut a = self.active.lock().expect("active lock");
                        if let Some(a) = a.as_mut().filter(|a| a.epoch == epoch) {
                            a.quotas.set_instance(&instance, &entries);
                        }
                        let at = time::now();
                        self.cfg.observer.with(|o| o.quota_changes.push((at, instance.clone())));
                        Ok(vec![])
                    }
                    _ => Err(TableError::Failed("concurrent change, retry".into())),
                }
            }
        }
    }

    fn info(&self, pid: PartitionId) -> Result<PartitionInfo, TableError> {
        let a = self.active.lock().expect("active lock");
        a.as_ref().and_then(|a| a.core.partition(pid).cloned()).ok_or(TableError::Failed(format!("no partition {pid}")))
    }

    fn owner_of(&self, pid: PartitionId) -> Option<Option<NodeId>> {
        let a = self.active.lock().expect("active lock");
        a.as_ref().and_then(|a| a.core.partition(pid).map(|p| p.owner))
    }

    async fn wait_until(self: &Arc<Self>, f: impl Fn(&Self) -> bool) -> Result<(), TableError> {
        let deadline = time::now() + ADMIN_WAIT_MAX;
        while time::now() < deadline {
            if self.acting().is_none() {
                return Err(TableError::Unknown("master stepped down".into()));
            }
            if f(self) {
                return Ok(());
            }
            time::sleep(self.cfg.heartbeat / 2).await;
        }
        Err(TableError::Unknown("timed out".into()))
    }

    /// Split or merge: drains `olds`, copies their entries into `news`
    /// (fresh pids), and swaps the map entries in one Txn.
    async fn rewrite(self: &Arc<Self>, epoch: u64, olds: Vec<PartitionInfo>, mut news: Vec<PartitionInfo>, cause: FailoverCause) -> Result<Vec<PartitionId>, TableError> {
        for o in &olds {
            let cmds = self.step(Input::Drain { pid: o.pid, cause });
            self.execute(cmds);
        }
        let r = self.rewrite_drained(epoch, &olds, &mut news, cause).await;
        if r.is_err() {
            for o in &olds {
                self.step(Input::Undrain { pid: o.pid });
            }
        }
        self.reload().await;
        r
    }

    async fn rewrite_drained(self: &Arc<Self>, epoch: u64, olds: &[PartitionInfo], news: &mut [PartitionInfo], cause: FailoverCause) -> Result<Vec<PartitionId>, TableError> {
        let pids: Vec<PartitionId> = olds.iter().map(|o| o.pid).collect();
        let now = self.clock.now();
        let _ = now;
        self.wait_until(|m| {
            let a = m.active.lock().expect("active lock");
            let now = m.clock.now();
            a.as_ref().is_some_and(|a| pids.iter().all(|&p| a.core.drained(p, now)))
        })
        .await?;
        // Fence every older owner and read the parents' entries.
        let clock = self.clock.clone();
        let clock: ClockFn = Arc::new(move || clock.now().as_nanos() / 1_000_000);
        let mut entries = Vec::new();
        for o in olds {
            let store = PartStore::open(&self.client, o.pid, self.cfg.part_memory, clock.clone(), None).await.map_err(TableError::Failed)?;
            let e = store.entries().await;
            store.kill();
            entries.extend(e?);
        }
        entries.sort();
        entries.dedup_by(|a, b| a.0 == b.0);
        let cur = self.client.meta_get(NEXT_PID_KEY).await.map_err(|e| TableError::Unknown(e.to_string()))?;
        let first: u64 = cur.as_deref().and_then(decode).unwrap_or(1);
        for (i, n) in news.iter_mut().enumerate() {
            n.pid = first + i as u64;
            let mine: Vec<(Vec<u8>, Vec<u8>)> = entries.iter().filter(|(k, _)| routing_key(k).is_none_or(|rk| n.contains(&rk))).cloned().collect();
            PartStore::create(&self.client, n.pid, self.cfg.part_memory, clock.clone(), mine).await.map_err(TableError::Failed)?;
        }
        let mut checks = vec![(NEXT_PID_KEY.to_string(), cur)];
        let mut writes = vec![(NEXT_PID_KEY.to_string(), Some(encode(&(first + news.len() as u64))))];
        for o in olds {
            checks.push((part_key(o.pid), Some(encode(o))));
            writes.push((part_key(o.pid), None));
        }
        for n in news.iter() {
            writes.push((part_key(n.pid), Some(encode(n))));
        }
        let tk = table_key(&olds[0].instance, &olds[0].table);
        let table_pids: Option<Vec<PartitionId>> = self.client.meta_get(&tk).await.ok().flatten().and_then(|b| decode(&b));
        if let Some(mut tp) = table_pids {
            let old = encode(&tp);
            tp.retain(|p| !pids.contains(p));
            tp.extend(news.iter().map(|n| n.pid));
            tp.sort();
            checks.push((tk.clone(), Some(old)));
            writes.push((tk, Some(encode(&tp))));
        }
        match self.txn(epoch, checks, writes).await? {
            Outcome::Done => {
                let at = time::now();
                self.cfg.observer.with(|o| {
                    for old in olds {
                        o.failovers.push(Failover { at, partition: old.pid, from: old.owner, to: None, cause, last_heard: None });
                    }
                });
                self.ctx.note(format!("{cause:?} {:?} into {:?}", pids, news.iter().map(|n| n.pid).collect::<Vec<_>>()));
                Ok(news.iter().map(|n| n.pid).collect())
            }
            _ => Err(TableError::Failed("the map changed during the copy".into())),
        }
    }
}
