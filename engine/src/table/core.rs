//! The master's protocol core: failure detection, partition leases and
//! zone-aware placement as a pure state machine. It takes `now` (the
//! master's clock) with every input and returns commands; the shell
//! ([`super::master`]) does the I/O (heartbeat answers, metadata
//! transactions, releases) and feeds the results back.
//!
//! Rules it keeps:
//! - A partition is granted only to its owner in the map, and never while
//!   it drains (a move, split or merge in progress).
//! - A partition moves away from its owner only once its last grant is
//!   older than `lease + max_skew` (`granted_until`), or the owner confirmed
//!   it released it; a new core (a new master) treats every partition as
//!   granted until `lease + max_skew` after it started.
//! - A server is alive while heartbeats echo grants sent within
//!   `dead_after`; one that hears nothing (one-way partition) or is not
//!   heard dies alike. Dead owners' partitions go to live servers: the
//!   zone with the fewest partitions first, then the server with the
//!   fewest, then the lowest id.
//! - Once every partition has a live owner, the partition counts are
//!   evened out (a zone or a server that returned gets its share back):
//!   while the most loaded live server holds at least two more partitions
//!   than the server placement would choose, one of its partitions moves
//!   there, as an admin move does (drained, released, assigned), with at
//!   most [`REBALANCE_MOVES_MAX`] such moves in flight, never to a server
//!   alive for less than [`REBALANCE_SETTLE`], and never while a new
//!   master waits out the old grants. A move makes the difference at most
//!   one smaller and never reverses (the source holds at least two more),
//!   so counts converge and nothing moves back and forth.
//! - A server marked for removal (it says so in its heartbeats) is
//!   drained: placement and rebalancing give it nothing, and before any
//!   other rebalancing its partitions move to the other servers (the zone
//!   with the fewest partitions first), at most [`REBALANCE_MOVES_MAX`] at
//!   once, pins and cool-downs notwithstanding; once it holds none, the
//!   core says so once ([`Cmd::Drained`]).

use std::collections::BTreeMap;
use std::time::Duration;

use sim::time::SimTime;
use sim::topology::{NodeId, ZoneId};

use super::{FailoverCause, PartitionId, PartitionInfo};

/// Assignments waiting for their commit at once (placement issues no more
/// until some are done).
pub const ASSIGN_PENDING_MAX: usize = 1024;
/// How long rebalancing leaves a partition where an admin move put it.
pub const ADMIN_PIN: Duration = Duration::from_secs(60);
/// Weight of a new load report in a partition's moving average (heartbeats
/// come every 100 ms: about a second of memory).
pub const LOAD_AVERAGING: f64 = 0.1;
/// Least time between two moves for load.
pub const LOAD_MOVE_GAP: Duration = Duration::from_secs(2);
/// A partition moved for load stays put this long (no back and forth).
pub const LOAD_MOVE_COOLDOWN: Duration = Duration::from_secs(60);
/// Servers whose loads differ by less than this fraction of the mean
/// server load are balanced.
pub const LOAD_IMBALANCE_MIN: f64 = 0.25;
/// A move for load must lower the busier server's load by at least this
/// fraction of it, unless the two are far apart (`LOAD_GAP_WIDE`).
pub const LOAD_GAIN_MIN: f64 = 0.1;
/// When the gap between the busier server and the less busy one is at
/// least this fraction of the busier one's load, the move that best evens
/// them is made whatever it gains: a saturated server whose load is spread
/// over more than ten even partitions has no single partition worth
/// `LOAD_GAIN_MIN` of it, and would otherwise never shed one.
pub const LOAD_GAP_WIDE: f64 = 0.5;
/// Below this load (µs of CPU per second: 2% of a core) a server is idle
/// enough that nothing moves for load.
pub const LOAD_FLOOR: f64 = 20_000.0;
/// Rebalancing moves in flight at once.
pub const REBALANCE_MOVES_MAX: usize = 2;
/// A server takes partitions from rebalancing only after it has been alive
/// this long (a returning zone settles first).
pub const REBALANCE_SETTLE: Duration = Duration::from_secs(1);

/// The tunables the core needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    pub lease: Duration,
    pub max_skew: Duration,
    pub dead_after: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Server {
    zone: ZoneId,
    /// Master send time of the newest grant the server echoed (or when it
    /// was first heard).
    heard: SimTime,
    dead: bool,
    /// When it was last found alive after being unknown or dead.
    alive_since: SimTime,
    /// When its last load report came (the interval of the next one).
    load_at: Option<SimTime>,
    /// Marked for removal: it gets nothing and gives all it has.
    draining: bool,
    /// [`Cmd::Drained`] was given for it.
    drained: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Part {
    info: PartitionInfo,
    /// The owner may serve the partition until then (master clock).
    granted_until: SimTime,
    /// No grants: a move (to the target) or a split/merge is waiting.
    draining: Option<Drain>,
    /// The owner confirmed it released the partition at this epoch.
    released: bool,
    /// The owner reported it lost the partition at this epoch.
    lost: bool,
    /// An `Assign` is out, waiting for its commit.
    pending: bool,
    /// An operator placed it (an admin move): rebalancing leaves it where
    /// it is until then.
    pinned_until: SimTime,
    /// The CPU its requests cost its owner, µs per second (a moving
    /// average of the owner's reports).
    rate: f64,
    /// When rebalancing last moved it.
    moved_at: Option<SimTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Drain {
    to: Option<NodeId>,
    cause: FailoverCause,
}

/// Inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A server's heartbeat: `echo` is the send time of the newest grant it
    /// received from this master; `lost` the (pid, epoch) it gave up.
    /// `load`: the CPU time (µs) each of its partitions' requests cost it
    /// since its last heartbeat.
    Heartbeat { server: NodeId, zone: ZoneId, echo: Option<SimTime>, lost: Vec<(PartitionId, u64)>, load: Vec<(PartitionId, u64)> },
    Tick,
    /// The map as stored (after a commit, an abort or a reload).
    Map(Vec<PartitionInfo>),
    /// One partition's entry as stored (after a commit of it).
    Entry(PartitionInfo),
    /// An admin move: drain the partition, then assign it to `to`.
    Move { pid: PartitionId, to: NodeId },
    /// Drain a partition for a split or merge (the shell then copies).
    Drain { pid: PartitionId, cause: FailoverCause },
    /// Give up a drain (the split or merge failed).
    Undrain { pid: PartitionId },
    /// The owner confirmed it released (pid, epoch).
    Released { pid: PartitionId, epoch: u64 },
    /// A heartbeat said its server is marked for removal.
    Draining { server: NodeId },
    /// An `Assign` was committed (Map follows) or failed.
    AssignDone { pid: PartitionId },
}

/// Commands for the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Answer the heartbeat with this grant (pid, epoch).
    Grant { server: NodeId, parts: Vec<(PartitionId, u64)> },
    /// Commit `pid`'s new owner (one Txn checking the map still holds `info`).
    Assign { info: PartitionInfo, to: NodeId, cause: FailoverCause, last_heard: Option<SimTime> },
    /// Ask the owner to release the partition now (speeds up a move).
    Release { server: NodeId, pid: PartitionId, epoch: u64 },
    /// A server was declared dead (for the event log).
    Dead { server: NodeId },
    /// A server marked for removal holds no partition any more.
    Drained { server: NodeId },
}

/// The core of one master term.
#[derive(Clone, Debug)]
pub struct Core {
    cfg: CoreConfig,
    since: SimTime,
    /// When rebalancing last moved a partition for load.
    last_load_move: Option<SimTime>,
    servers: BTreeMap<NodeId, Server>,
    parts: BTreeMap<PartitionId, Part>,
}

impl Core {
    /// A core for a master that became active at `now`.
    pub fn new(cfg: CoreConfig, now: SimTime) -> Core {
        Core { cfg, since: now, last_load_move: None, servers: BTreeMap::new(), parts: BTreeMap::new() }
    }

    fn hold(&self) -> Duration {
        self.cfg.lease + self.cfg.max_skew
    }

    fn alive(&self, s: NodeId) -> bool {
        self.servers.get(&s).is_some_and(|v| !v.dead)
    }

    /// Whether `s` counts as dead at `now`: declared dead, or never heard
    /// since this master started `lease + max_skew` ago (many heartbeats).
    fn dead(&self, s: NodeId, now: SimTime) -> bool {
        match self.servers.get(&s) {
            Some(v) => v.dead,
            None => now >= self.since + self.hold().min(self.cfg.dead_after),
        }
    }

    /// Whether the partition is drained: nobody may serve it any more.
    pub fn drained(&self, pid: PartitionId, now: SimTime) -> bool {
        self.parts.get(&pid).is_some_and(|p| p.draining.is_some() && (p.released || p.info.owner.is_none() || now >= p.granted_until))
    }

    pub fn partition(&self, pid: PartitionId) -> Option<&PartitionInfo> {
        self.parts.get(&pid).map(|p| &p.info)
    }

    pub fn partitions(&self) -> Vec<PartitionInfo> {
        self.parts.values().map(|p| p.info.clone()).collect()
    }

    pub fn live_servers(&self) -> Vec<NodeId> {
        self.servers.iter().filter(|(_, v)| !v.dead).map(|(&n, _)| n).collect()
    }

    pub fn step(&mut self, now: SimTime, input: Input) -> Vec<Cmd> {
        let mut out = Vec::new();
        match input {
            Input::Heartbeat { server, zone, echo, lost, load } => {
                let s = self.servers.entry(server).or_insert(Server { zone, heard: now, dead: false, alive_since: now, load_at: None, draining: false, drained: false });
                // The load its partitions cost it since its last report, as
                // a rate, into each partition's moving average.
                if let Some(since) = s.load_at.filter(|&t| t < now) {
                    let secs = now.saturating_sub(since).as_secs_f64();
                    let reported: BTreeMap<PartitionId, u64> = load.into_iter().collect();
                    for p in self.parts.values_mut().filter(|p| p.info.owner == Some(server)) {
                        let sample = reported.get(&p.info.pid).copied().unwrap_or(0) as f64 / secs;
                        p.rate += LOAD_AVERAGING * (sample - p.rate);
                    }
                }
                let s = self.servers.get_mut(&server).expect("inserted");
                s.load_at = Some(now);
                if let Some(e) = echo.filter(|&e| e <= now) {
                    if e > s.heard {
                        s.heard = e;
                    }
                }
                if s.dead && now.saturating_sub(s.heard) < self.cfg.dead_after {
                    s.dead = false;
                    s.alive_since = now;
                }
                for (pid, epoch) in lost {
                    if let Some(p) = self.parts.get_mut(&pid) {
                        if p.info.owner == Some(server) && p.info.epoch == epoch {
                            p.lost = true;
                            p.released = true;
                        }
                    }
                }
                let mut parts = Vec::new();
                if self.alive(server) {
                    let until = now + self.hold();
                    for p in self.parts.values_mut() {
                        if p.info.owner == Some(server) && p.draining.is_none() && !p.lost {
                            parts.push((p.info.pid, p.info.epoch));
                            p.granted_until = p.granted_until.max(until);
                        }
                    }
                }
                out.push(Cmd::Grant { server, parts });
            }
            Input::Tick => {
                let dead_after = self.cfg.dead_after;
                for (&n, s) in self.servers.iter_mut() {
                    if !s.dead && now.saturating_sub(s.heard) >= dead_after {
                        s.dead = true;
                        out.push(Cmd::Dead { server: n });
                    }
                }
                self.place(now, &mut out);
                self.rebalance(now, &mut out);
            }
            Input::Map(infos) => {
                let mut next = BTreeMap::new();
                for info in infos {
                    let p = self.merged(info);
                    next.insert(p.info.pid, p);
                }
                self.parts = next;
            }
            Input::Entry(info) => {
                let p = self.merged(info);
                self.parts.insert(p.info.pid, p);
            }
            Input::Move { pid, to } => {
                if let Some(p) = self.parts.get_mut(&pid) {
                    if p.draining.is_none() && p.info.owner != Some(to) {
                        p.draining = Some(Drain { to: Some(to), cause: FailoverCause::Moved });
                        if let Some(owner) = p.info.owner {
                            out.push(Cmd::Release { server: owner, pid, epoch: p.info.epoch });
                        }
                    }
                }
                self.place(now, &mut out);
            }
            Input::Drain { pid, cause } => {
                if let Some(p) = self.parts.get_mut(&pid) {
                    if p.draining.is_none() {
                        p.draining = Some(Drain { to: None, cause });
                        if let Some(owner) = p.info.owner {
                            out.push(Cmd::Release { server: owner, pid, epoch: p.info.epoch });
                        }
                    }
                }
            }
            Input::Undrain { pid } => {
                if let Some(p) = self.parts.get_mut(&pid) {
                    p.draining = None;
                }
            }
            Input::Released { pid, epoch } => {
                if let Some(p) = self.parts.get_mut(&pid) {
                    if p.info.epoch == epoch {
                        p.released = true;
                    }
                }
                self.place(now, &mut out);
            }
            Input::Draining { server } => {
                if let Some(s) = self.servers.get_mut(&server) {
                    s.draining = true;
                }
            }
            Input::AssignDone { pid } => {
                if let Some(p) = self.parts.get_mut(&pid) {
                    p.pending = false;
                }
            }
        }
        out
    }

    /// The state of `info`'s partition once the map holds `info`.
    fn merged(&mut self, info: PartitionInfo) -> Part {
        let floor = self.since + self.hold();
        match self.parts.remove(&info.pid) {
            Some(mut p) if p.info.owner == info.owner && p.info.epoch == info.epoch => {
                p.info = info;
                p
            }
            Some(mut p) => {
                // A new owner or epoch (committed by this master, after the
                // old grants ran out): no grant of it is out yet.
                p.info = info;
                p.granted_until = SimTime::ZERO;
                p.released = false;
                p.lost = false;
                p.pending = false;
                p.draining = None;
                p
            }
            None => Part { info, granted_until: floor, draining: None, released: false, lost: false, pending: false, pinned_until: SimTime::ZERO, rate: 0.0, moved_at: None },
        }
    }

    /// Assigns partitions that need an owner.
    fn place(&mut self, now: SimTime, out: &mut Vec<Cmd>) {
        let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
        for n in self.live_servers() {
            load.insert(n, 0);
        }
        for p in self.parts.values() {
            if let Some(o) = p.info.owner {
                if let Some(l) = load.get_mut(&o) {
                    *l += 1;
                }
            }
        }
        let pids: Vec<PartitionId> = self.parts.keys().copied().collect();
        let mut pending = self.parts.values().filter(|p| p.pending).count();
        for pid in pids {
            if pending >= ASSIGN_PENDING_MAX {
                break;
            }
            let p = &self.parts[&pid];
            if p.pending {
                continue;
            }
            let owner = p.info.owner;
            let (cause, target) = match (&p.draining, owner) {
                (Some(Drain { to: Some(to), cause }), _) => (*cause, Some(*to)),
                (Some(_), _) => continue,
                (None, None) => (FailoverCause::Initial, None),
                (None, Some(o)) if self.dead(o, now) => (FailoverCause::ServerDead, None),
                (None, Some(_)) if p.lost => (FailoverCause::LeaseLost, None),
                (None, Some(_)) => continue,
            };
            let safe = owner.is_none() || p.released || now >= p.granted_until;
            if !safe {
                continue;
            }
            let to = match target {
                Some(t) if self.alive(t) => t,
                // A rebalancing move whose target died goes wherever
                // placement chooses (its owner may have released it).
                Some(_) if matches!(cause, FailoverCause::Rebalanced | FailoverCause::Drained) => match self.choose(&load) {
                    Some(t) => t,
                    None => continue,
                },
                Some(_) => continue,
                None => match self.choose(&load) {
                    Some(t) => t,
                    None => continue,
                },
            };
            *load.entry(to).or_default() += 1;
            if let Some(o) = owner {
                if let Some(l) = load.get_mut(&o) {
                    *l = l.saturating_sub(1);
                }
            }
            let last_heard = owner.and_then(|o| self.servers.get(&o)).map(|s| s.heard);
            let p = self.parts.get_mut(&pid).expect("listed");
            p.pending = true;
            pending += 1;
            if cause == FailoverCause::Moved {
                p.pinned_until = now + ADMIN_PIN;
            }
            out.push(Cmd::Assign { info: p.info.clone(), to, cause, last_heard: if cause == FailoverCause::ServerDead { last_heard } else { None } });
        }
    }

    /// Starts at most one rebalancing move (see the module doc).
    fn rebalance(&mut self, now: SimTime, out: &mut Vec<Cmd>) {
        if now < self.since + self.hold() {
            return;
        }
        let mut count: BTreeMap<NodeId, usize> = self.live_servers().into_iter().map(|n| (n, 0)).collect();
        let mut load: BTreeMap<NodeId, f64> = count.keys().map(|&n| (n, 0.0)).collect();
        let mut moving = 0;
        for p in self.parts.values() {
            // Failover first: nothing moves while a partition has no live
            // owner or waits for one.
            let owner_live = p.info.owner.is_some_and(|o| self.alive(o));
            if !owner_live || p.pending || p.lost {
                return;
            }
            let at = match &p.draining {
                Some(Drain { to: Some(to), cause: FailoverCause::Rebalanced | FailoverCause::Drained }) => {
                    moving += 1;
                    *to
                }
                Some(_) => return,
                None => p.info.owner.expect("live owner"),
            };
            *count.entry(at).or_default() += 1;
            *load.entry(at).or_default() += p.rate;
        }
        if self.drain(now, &count, moving, out) {
            return;
        }
        if moving >= REBALANCE_MOVES_MAX {
            return;
        }
        let settled = |n: &NodeId| self.servers[n].alive_since + REBALANCE_SETTLE <= now && !self.servers[n].draining;
        let movable = |p: &Part, from: NodeId| p.info.owner == Some(from) && p.draining.is_none() && p.pinned_until <= now && p.moved_at.is_none_or(|t| t + LOAD_MOVE_COOLDOWN <= now);
        // Counts: a server with two partitions fewer (a zone that came
        // back) gets the coldest partition of the fullest server, unless
        // it is busier than that server already.
        let settled_counts: BTreeMap<NodeId, usize> = count.iter().filter(|(n, _)| settled(n)).map(|(&n, &c)| (n, c)).collect();
        if let (Some(to), Some((&from, &most))) = (self.choose_in(&settled_counts, &count), count.iter().max_by_key(|(&n, &c)| (c, n))) {
            if most >= count[&to] + 2 && load[&to] <= load[&from] {
                let coldest = self.parts.values().filter(|p| movable(p, from)).min_by(|a, b| a.rate.total_cmp(&b.rate).then(a.info.pid.cmp(&b.info.pid))).map(|p| p.info.pid);
                if let Some(pid) = coldest {
                    self.start_move(pid, from, to, now, out);
                    return;
                }
            }
        }
        // Load: the busiest server gives the partition that best evens it
        // with the least busy one, at most one move per LOAD_MOVE_GAP.
        if moving > 0 || self.last_load_move.is_some_and(|t| t + LOAD_MOVE_GAP > now) {
            return;
        }
        let mean = load.values().sum::<f64>() / load.len().max(1) as f64;
        let Some((&from, &high)) = load.iter().max_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(b.0))) else { return };
        let Some((&to, &low)) = load.iter().filter(|(n, _)| settled(n)).min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(b.0))) else { return };
        let gap = high - low;
        if high < LOAD_FLOOR || gap < LOAD_IMBALANCE_MIN * mean || from == to {
            return;
        }
        // Moving rate r leaves the two at high - r and low + r: the gain is
        // min(r, gap - r), best for r near gap / 2, none for r >= gap.
        let best = self
            .parts
            .values()
            .filter(|p| movable(p, from) && p.rate < gap)
            .map(|p| (p.rate.min(gap - p.rate), p.info.pid))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        if let Some((gain, pid)) = best {
            if gain >= LOAD_GAIN_MIN * high || gap >= LOAD_GAP_WIDE * high {
                self.last_load_move = Some(now);
                self.start_move(pid, from, to, now, out);
            }
        }
    }

    /// Moves partitions off live servers marked for removal (see the
    /// module doc), given each live server's partition `count` (moves in
    /// flight counted at their targets). Returns whether any such server
    /// still holds partitions (no other rebalancing until it is empty).
    fn drain(&mut self, now: SimTime, count: &BTreeMap<NodeId, usize>, mut moving: usize, out: &mut Vec<Cmd>) -> bool {
        let leaving: Vec<NodeId> = count.keys().copied().filter(|n| self.servers[n].draining).collect();
        if leaving.is_empty() {
            return false;
        }
        let mut count = count.clone();
        let mut busy = false;
        for from in leaving {
            let held: Vec<PartitionId> = self.parts.values().filter(|p| p.info.owner == Some(from)).map(|p| p.info.pid).collect();
            if held.is_empty() {
                let s = self.servers.get_mut(&from).expect("live");
                if !s.drained {
                    s.drained = true;
                    out.push(Cmd::Drained { server: from });
                }
                continue;
            }
            busy = true;
            for pid in held {
                if moving >= REBALANCE_MOVES_MAX {
                    return true;
                }
                if self.parts[&pid].draining.is_some() {
                    continue;
                }
                let Some(to) = self.choose(&count) else { return true };
                *count.entry(to).or_default() += 1;
                moving += 1;
                self.start_move_for(pid, from, to, FailoverCause::Drained, now, out);
            }
        }
        busy
    }

    /// Drains `pid` from `from` for a rebalancing move to `to`.
    fn start_move(&mut self, pid: PartitionId, from: NodeId, to: NodeId, now: SimTime, out: &mut Vec<Cmd>) {
        self.start_move_for(pid, from, to, FailoverCause::Rebalanced, now, out);
    }

    fn start_move_for(&mut self, pid: PartitionId, from: NodeId, to: NodeId, cause: FailoverCause, now: SimTime, out: &mut Vec<Cmd>) {
        let p = self.parts.get_mut(&pid).expect("found");
        p.draining = Some(Drain { to: Some(to), cause });
        p.moved_at = Some(now);
        out.push(Cmd::Release { server: from, pid, epoch: p.info.epoch });
    }

    /// Of `candidates`, the server in the least loaded zone (zone loads
    /// from `all`) with the least load, then the lowest id.
    fn choose_in(&self, candidates: &BTreeMap<NodeId, usize>, all: &BTreeMap<NodeId, usize>) -> Option<NodeId> {
        let mut zones: BTreeMap<ZoneId, usize> = BTreeMap::new();
        for (n, l) in all {
            *zones.entry(self.servers[n].zone).or_default() += l;
        }
        candidates.iter().map(|(&n, &l)| (zones[&self.servers[&n].zone], l, n)).min().map(|(_, _, n)| n)
    }

    /// Of the live servers in `load`, the one not marked for removal in
    /// the least loaded zone with the least load.
    fn choose(&self, load: &BTreeMap<NodeId, usize>) -> Option<NodeId> {
        let targets: BTreeMap<NodeId, usize> = load.iter().filter(|(n, _)| !self.servers[*n].draining).map(|(&n, &l)| (n, l)).collect();
        self.choose_in(&targets, load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfg() -> CoreConfig {
        CoreConfig { lease: Duration::from_millis(1000), max_skew: Duration::from_millis(250), dead_after: Duration::from_millis(1500) }
    }

    fn t(ms: u64) -> SimTime {
        SimTime(ms * MS)
    }

    fn part(pid: u64, owner: Option<u32>, epoch: u64) -> PartitionInfo {
        PartitionInfo { pid, instance: "i".into(), table: "t".into(), start: String::new(), end: None, owner: owner.map(NodeId), epoch }
    }

    fn hb(c: &mut Core, now: u64, server: u32, zone: u16, echo: Option<u64>) -> Vec<(PartitionId, u64)> {
        let out = c.step(t(now), Input::Heartbeat { server: NodeId(server), zone: ZoneId(zone), echo: echo.map(t), lost: vec![], load: vec![] });
        match &out[..] {
            [Cmd::Grant { parts, .. }] => parts.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn assigns(out: &[Cmd]) -> Vec<(PartitionId, NodeId, FailoverCause)> {
        out.iter().filter_map(|c| if let Cmd::Assign { info, to, cause, .. } = c { Some((info.pid, *to, *cause)) } else { None }).collect()
    }

    /// Applies assigns as the shell would after a successful commit.
    fn commit(c: &mut Core, out: &[Cmd]) {
        let mut map = c.partitions();
        for (pid, to, _) in assigns(out) {
            let p = map.iter_mut().find(|p| p.pid == pid).unwrap();
            p.owner = Some(to);
            p.epoch += 1;
            c.step(SimTime::ZERO, Input::AssignDone { pid });
        }
        c.step(SimTime::ZERO, Input::Map(map));
    }

    #[test]
    fn placement_spreads_over_zones_then_servers() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=6).map(|i| part(i, None, 0)).collect()));
        // Two servers in zone 0, one each in zones 1 and 2.
        for (s, z) in [(1, 0), (2, 0), (3, 1), (4, 2)] {
            hb(&mut c, 10, s, z, None);
        }
        let out = c.step(t(20), Input::Tick);
        let a = assigns(&out);
        assert_eq!(a.len(), 6);
        let mut per_zone = [0; 3];
        for (_, to, cause) in &a {
            assert_eq!(*cause, FailoverCause::Initial);
            per_zone[match to.0 { 1 | 2 => 0, 3 => 1, _ => 2 }] += 1;
        }
        assert_eq!(per_zone, [2, 2, 2], "two partitions per zone");
        // Pending assigns are not issued twice.
        assert!(assigns(&c.step(t(30), Input::Tick)).is_empty());
    }

    #[test]
    fn a_silent_server_loses_its_partitions_only_after_its_grants_ran_out() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(2), 1)]));
        // Both servers heartbeat and get their partition (a new master
        // grants the stored map at once).
        assert_eq!(hb(&mut c, 100, 1, 0, None), vec![(1, 1)]);
        assert_eq!(hb(&mut c, 100, 2, 1, None), vec![(2, 1)]);
        // Server 2 keeps echoing grants; server 1 falls silent at 100 ms.
        let mut now = 100;
        let mut moved = None;
        while now < 5000 {
            now += 100;
            hb(&mut c, now, 2, 1, Some(now - 100));
            let out = c.step(t(now), Input::Tick);
            if let Some(&(pid, to, cause)) = assigns(&out).first() {
                moved = Some((now, pid, to, cause));
                break;
            }
        }
        let (at, pid, to, cause) = moved.expect("partition 1 reassigned");
        assert_eq!((pid, to, cause), (1, NodeId(2), FailoverCause::ServerDead));
        // Dead after 1.5 s of silence, and not before its last grant (at
        // 100 ms) plus lease and skew.
        assert!(at >= 100 + 1500, "moved at {at} ms");
        assert!(at <= 100 + 1500 + 200, "moved at {at} ms, late");
    }

    #[test]
    fn a_server_that_hears_nothing_is_dead_even_though_its_heartbeats_arrive() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1)]));
        hb(&mut c, 0, 2, 1, None);
        hb(&mut c, 0, 1, 0, None);
        let mut dead_at = None;
        for now in (100..4000).step_by(100) {
            // Server 1 never receives a grant: it echoes nothing new.
            hb(&mut c, now, 1, 0, None);
            hb(&mut c, now, 2, 1, Some(now - 100));
            let out = c.step(t(now), Input::Tick);
            if out.contains(&Cmd::Dead { server: NodeId(1) }) {
                dead_at = Some(now);
            }
            if !assigns(&out).is_empty() {
                assert_eq!(assigns(&out)[0].1, NodeId(2));
                break;
            }
        }
        assert_eq!(dead_at, Some(1500));
        // A dead server is granted nothing.
        assert!(hb(&mut c, 4000, 1, 0, None).is_empty());
    }

    #[test]
    fn a_new_master_waits_out_the_old_grants_before_moving_anything() {
        let mut c = Core::new(cfg(), t(10_000));
        c.step(t(10_000), Input::Map(vec![part(1, Some(1), 3)]));
        hb(&mut c, 10_000, 2, 1, None);
        // Server 1 never heard by this master: dead once lease + max_skew
        // have passed, when the old master's grants have run out too.
        for now in (10_000..11_250).step_by(50) {
            hb(&mut c, now, 2, 1, Some(now));
            assert!(assigns(&c.step(t(now), Input::Tick)).is_empty(), "moved at {now}");
        }
        hb(&mut c, 11_250, 2, 1, Some(11_200));
        let a = assigns(&c.step(t(11_250), Input::Tick));
        assert_eq!(a, vec![(1, NodeId(2), FailoverCause::ServerDead)]);
    }

    #[test]
    fn a_move_stops_grants_and_waits_for_the_release_or_the_lease() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1)]));
        hb(&mut c, 2000, 1, 0, None);
        hb(&mut c, 2000, 2, 1, None);
        let out = c.step(t(2000), Input::Move { pid: 1, to: NodeId(2) });
        assert!(out.contains(&Cmd::Release { server: NodeId(1), pid: 1, epoch: 1 }));
        assert!(assigns(&out).is_empty(), "not before the release");
        assert!(hb(&mut c, 2100, 1, 0, Some(2000)).is_empty(), "no grant while draining");
        // Without a release: after the last grant (2000) + 1.25 s.
        let mut c2 = c.clone();
        hb(&mut c2, 3000, 1, 0, Some(2100));
        hb(&mut c2, 3000, 2, 1, Some(2100));
        assert!(assigns(&c2.step(t(3000), Input::Tick)).is_empty());
        hb(&mut c2, 3300, 1, 0, Some(3000));
        hb(&mut c2, 3300, 2, 1, Some(3000));
        assert_eq!(assigns(&c2.step(t(3300), Input::Tick)), vec![(1, NodeId(2), FailoverCause::Moved)]);
        // With a release: at once.
        let out = c.step(t(2200), Input::Released { pid: 1, epoch: 1 });
        assert_eq!(assigns(&out), vec![(1, NodeId(2), FailoverCause::Moved)]);
        commit(&mut c, &out);
        assert_eq!(hb(&mut c, 2300, 2, 1, Some(2200)), vec![(1, 2)]);
        assert!(hb(&mut c, 2300, 1, 0, Some(2200)).is_empty());
    }

    #[test]
    fn a_lost_partition_is_placed_again_and_stale_reports_are_ignored() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 4)]));
        hb(&mut c, 2000, 2, 1, None);
        // A report for an old epoch changes nothing.
        c.step(t(2000), Input::Heartbeat { server: NodeId(1), zone: ZoneId(0), echo: None, lost: vec![(1, 3)], load: vec![] });
        assert!(assigns(&c.step(t(2000), Input::Tick)).is_empty());
        let out = c.step(t(2100), Input::Heartbeat { server: NodeId(1), zone: ZoneId(0), echo: Some(t(2000)), lost: vec![(1, 4)], load: vec![] });
        assert_eq!(out, vec![Cmd::Grant { server: NodeId(1), parts: vec![] }]);
        let a = assigns(&c.step(t(2100), Input::Tick));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].2, FailoverCause::LeaseLost);
    }

    fn releases(out: &[Cmd]) -> Vec<(NodeId, PartitionId)> {
        out.iter().filter_map(|c| if let Cmd::Release { server, pid, .. } = c { Some((*server, *pid)) } else { None }).collect()
    }

    /// Heartbeats every server in `live` (server, zone) at `now`, echoing
    /// the previous beat, then ticks.
    fn beat(c: &mut Core, now: u64, live: &[(u32, u16)]) -> Vec<Cmd> {
        for &(s, z) in live {
            hb(c, now, s, z, Some(now.saturating_sub(100)));
        }
        c.step(t(now), Input::Tick)
    }

    #[test]
    fn a_returning_server_gets_its_share_back_a_few_moves_at_a_time() {
        let mut c = Core::new(cfg(), t(0));
        // Servers 1 and 2 hold six partitions each; server 3 (zone 2) is
        // back from an outage and holds none.
        let map: Vec<PartitionInfo> = (1..=12).map(|i| part(i, Some(if i <= 6 { 1 } else { 2 }), 1)).collect();
        c.step(t(0), Input::Map(map));
        let live = [(1, 0), (2, 1), (3, 2)];
        // Nothing moves while the new master waits out the old grants, nor
        // before the returning server has been alive REBALANCE_SETTLE.
        for now in (0..1250).step_by(100) {
            assert!(releases(&beat(&mut c, now, &live)).is_empty(), "moved at {now}");
        }
        let mut now = 1300;
        let mut moves = Vec::new();
        while now < 20_000 {
            let out = beat(&mut c, now, &live);
            for (from, pid) in releases(&out) {
                assert!(now >= 1000, "a server alive since 0 settles at 1 s");
                moves.push((from, pid));
                // The owner releases at once.
                let out = c.step(t(now), Input::Released { pid, epoch: c.partition(pid).unwrap().epoch });
                let a = assigns(&out);
                assert_eq!(a, vec![(pid, NodeId(3), FailoverCause::Rebalanced)]);
                commit(&mut c, &out);
            }
            let in_flight = c.parts.values().filter(|p| p.draining.is_some()).count();
            assert!(in_flight <= REBALANCE_MOVES_MAX);
            now += 100;
        }
        let count = |s: u32| c.partitions().iter().filter(|p| p.owner == Some(NodeId(s))).count();
        assert_eq!((count(1), count(2), count(3)), (4, 4, 4), "moves: {moves:?}");
        assert_eq!(moves.len(), 4, "no move beyond what evens the counts: {moves:?}");
    }

    /// A server marked for removal gives all its partitions away, a few at
    /// a time and pins notwithstanding, gets none back, and is reported
    /// drained once.
    #[test]
    fn a_draining_server_gives_everything_away_and_gets_nothing() {
        let mut c = Core::new(cfg(), t(0));
        // Servers 1 (zone 0) and 2 (zone 1) hold three partitions each,
        // server 3 (zone 2) none; partition 1 was pinned by an admin move.
        let map: Vec<PartitionInfo> = (1..=6).map(|i| part(i, Some(if i <= 3 { 1 } else { 2 }), 1)).collect();
        c.step(t(0), Input::Map(map));
        c.parts.get_mut(&1).unwrap().pinned_until = t(60_000);
        let live = [(1, 0), (2, 1), (3, 2)];
        for now in (0..1300).step_by(100) {
            beat(&mut c, now, &live);
        }
        // Let the counts even out first: 2, 2, 2.
        let mut now = 1300;
        let settle = |c: &mut Core, now: u64| -> (Vec<(NodeId, PartitionId, NodeId)>, Vec<NodeId>) {
            let out = beat(c, now, &live);
            let drained: Vec<NodeId> = out.iter().filter_map(|c| if let Cmd::Drained { server } = c { Some(*server) } else { None }).collect();
            let mut moved = Vec::new();
            assert!(releases(&out).len() <= REBALANCE_MOVES_MAX);
            for (from, pid) in releases(&out) {
                let out = c.step(t(now), Input::Released { pid, epoch: c.partition(pid).unwrap().epoch });
                for (p, to, cause) in assigns(&out) {
                    moved.push((from, p, to));
                    assert!(matches!(cause, FailoverCause::Rebalanced | FailoverCause::Drained), "{cause:?}");
                }
                commit(c, &out);
            }
            (moved, drained)
        };
        while now < 5000 {
            settle(&mut c, now);
            now += 100;
        }
        let count = |c: &Core, s: u32| c.partitions().iter().filter(|p| p.owner == Some(NodeId(s))).count();
        assert_eq!((count(&c, 1), count(&c, 2), count(&c, 3)), (2, 2, 2));
        assert_eq!(c.partition(1).unwrap().owner, Some(NodeId(1)), "pinned");
        // Server 1 is marked for removal.
        c.step(t(now), Input::Draining { server: NodeId(1) });
        let mut moved = Vec::new();
        let mut drained = Vec::new();
        while now < 20_000 {
            let (m, d) = settle(&mut c, now);
            moved.extend(m);
            drained.extend(d.into_iter().map(|s| (s, now)));
            now += 100;
        }
        assert_eq!(count(&c, 1), 0);
        assert!(moved.iter().all(|&(from, _, to)| from == NodeId(1) && to != NodeId(1)), "{moved:?}");
        assert!(moved.iter().any(|&(_, pid, _)| pid == 1), "the pin does not hold a drain");
        assert_eq!(moved.len(), 2, "only what it held moved: {moved:?}");
        assert_eq!((count(&c, 2), count(&c, 3)), (3, 3), "to the zones with the fewest");
        assert_eq!(drained.len(), 1, "reported drained once: {drained:?}");
        assert_eq!(drained[0].0, NodeId(1));
        // A server that dies gives its partitions to others, never to the
        // draining one.
        let live = [(1, 0), (3, 2)];
        let mut given = Vec::new();
        while now < 30_000 {
            for &(s, z) in &live {
                hb(&mut c, now, s, z, Some(now.saturating_sub(100)));
            }
            let out = c.step(t(now), Input::Tick);
            given.extend(assigns(&out));
            commit(&mut c, &out);
            now += 100;
        }
        assert_eq!(given.len(), 3, "{given:?}");
        assert!(given.iter().all(|&(_, to, cause)| to == NodeId(3) && cause == FailoverCause::ServerDead), "{given:?}");
    }

    #[test]
    fn rebalancing_leaves_a_partition_where_an_admin_moved_it() {
        let mut c = Core::new(cfg(), t(0));
        // Server 1 holds partition 1, server 2 partitions 2 and 3.
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(2), 1), part(3, Some(2), 1)]));
        let live = [(1, 0), (2, 1)];
        beat(&mut c, 2000, &live);
        // An operator moves partition 1 to server 2 (now 0 against 3).
        let out = c.step(t(2000), Input::Move { pid: 1, to: NodeId(2) });
        assert_eq!(releases(&out), vec![(NodeId(1), 1)]);
        let out = c.step(t(2000), Input::Released { pid: 1, epoch: 1 });
        commit(&mut c, &out);
        // Rebalancing evens the counts with partitions 2 and 3, never 1.
        for now in (2100..(2000 + ADMIN_PIN.as_millis() as u64)).step_by(100) {
            for (_, pid) in releases(&beat(&mut c, now, &live)) {
                assert_ne!(pid, 1, "the admin's placement was undone at {now} ms");
                let out = c.step(t(now), Input::Released { pid, epoch: c.partition(pid).unwrap().epoch });
                commit(&mut c, &out);
            }
        }
        assert_eq!(c.partition(1).unwrap().owner, Some(NodeId(2)));
        let count = |s: u32| c.partitions().iter().filter(|p| p.owner == Some(NodeId(s))).count();
        assert_eq!((count(1), count(2)), (1, 2));
    }

    /// Heartbeats every live server every 100 ms from `from` to `to` (ms)
    /// with each partition's load at `rate(pid)` µs of CPU per second,
    /// releasing and committing every move at once; the moves made.
    fn run_loaded(c: &mut Core, from: u64, to: u64, live: &[(u32, u16)], rate: &dyn Fn(PartitionId) -> u64) -> Vec<(u64, PartitionId, NodeId, NodeId)> {
        let mut moves = Vec::new();
        for now in (from..to).step_by(100) {
            for &(s, z) in live {
                let load: Vec<(PartitionId, u64)> = c.partitions().iter().filter(|p| p.owner == Some(NodeId(s))).map(|p| (p.pid, rate(p.pid) / 10)).collect();
                c.step(t(now), Input::Heartbeat { server: NodeId(s), zone: ZoneId(z), echo: Some(t(now.saturating_sub(100))), lost: vec![], load });
            }
            let out = c.step(t(now), Input::Tick);
            for (from_server, pid) in releases(&out) {
                let out = c.step(t(now), Input::Released { pid, epoch: c.partition(pid).unwrap().epoch });
                let a = assigns(&out);
                assert_eq!(a.len(), 1);
                moves.push((now, pid, from_server, a[0].1));
                commit(c, &out);
            }
        }
        moves
    }

    #[test]
    fn the_busiest_server_gives_the_partitions_that_even_the_load() {
        let mut c = Core::new(cfg(), t(0));
        // Three partitions each on three servers; partition 1 alone costs
        // as much as six others.
        c.step(t(0), Input::Map((1..=9).map(|i| part(i, Some(1 + ((i - 1) / 3) as u32), 1)).collect()));
        let rate = |pid: PartitionId| if pid == 1 { 600_000 } else { 100_000 };
        let moves = run_loaded(&mut c, 0, 30_000, &[(1, 0), (2, 1), (3, 2)], &rate);
        // Server 1 keeps the hot partition alone; partitions 2 and 3 go to
        // the other two, at least LOAD_MOVE_GAP apart; the hot one never moves.
        let moved: Vec<(PartitionId, NodeId, NodeId)> = moves.iter().map(|m| (m.1, m.2, m.3)).collect();
        assert_eq!(moved.len(), 2, "{moves:?}");
        assert!(moved.iter().all(|&(pid, from, _)| from == NodeId(1) && pid != 1), "{moves:?}");
        assert!(moves[1].0 - moves[0].0 >= LOAD_MOVE_GAP.as_millis() as u64);
        let owners: Vec<NodeId> = c.partitions().iter().filter(|p| p.owner == Some(NodeId(1))).map(|p| NodeId(p.pid as u32)).collect();
        assert_eq!(owners, vec![NodeId(1)], "server 1 holds partition 1 only");
    }

    #[test]
    fn a_steady_load_settles_and_nothing_moves_back_and_forth() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=24).map(|i| part(i, Some(1 + (i % 4) as u32), 1)).collect()));
        // Skewed and lumpy: partition costs from 10 to 400 ms per second.
        let rate = |pid: PartitionId| 10_000 + (pid * pid * 7919 % 390) * 1000;
        let moves = run_loaded(&mut c, 0, 600_000, &[(1, 0), (2, 1), (3, 2), (4, 0)], &rate);
        assert!(!moves.is_empty(), "the initial placement is uneven: something must move");
        let mut seen: BTreeMap<PartitionId, Vec<(NodeId, NodeId)>> = BTreeMap::new();
        for &(_, pid, from, to) in &moves {
            let hops = seen.entry(pid).or_default();
            assert!(!hops.iter().any(|&(f, t2)| f == to && t2 == from), "partition {pid} moved back: {moves:?}");
            hops.push((from, to));
        }
        assert!(moves.iter().all(|m| m.0 < 120_000), "still moving after two minutes: {moves:?}");
        let load = |s: u32| c.partitions().iter().filter(|p| p.owner == Some(NodeId(s))).map(|p| rate(p.pid)).sum::<u64>() as f64;
        let loads: Vec<f64> = (1..=4).map(load).collect();
        let mean = loads.iter().sum::<f64>() / 4.0;
        let max = loads.iter().copied().fold(0.0, f64::max);
        assert!(max <= mean * 1.3, "loads {loads:?} after {} moves", moves.len());
    }

    #[test]
    fn counts_within_one_of_each_other_never_move() {
        let mut c = Core::new(cfg(), t(0));
        let map: Vec<PartitionInfo> = (1..=8).map(|i| part(i, Some(1 + (i % 3) as u32), 1)).collect();
        c.step(t(0), Input::Map(map));
        for now in (0..30_000).step_by(100) {
            assert!(releases(&beat(&mut c, now, &[(1, 0), (2, 1), (3, 2)])).is_empty(), "moved at {now}");
        }
    }

    #[test]
    fn nothing_rebalances_while_a_partition_waits_for_a_failover() {
        let mut c = Core::new(cfg(), t(0));
        let map: Vec<PartitionInfo> = (1..=7).map(|i| part(i, Some(if i <= 4 { 1 } else { 2 }), 1)).collect();
        c.step(t(0), Input::Map(map));
        // Server 2 falls silent after 100 ms; server 3 joins at 1.4 s. Once
        // server 2 is dead, the counts seen are 4 against 0 until its
        // partitions' failover commits: no move may start meanwhile.
        let mut pending = Vec::new();
        let mut now = 0;
        while now < 3000 {
            hb(&mut c, now, 1, 0, Some(now.saturating_sub(100)));
            if now <= 100 {
                hb(&mut c, now, 2, 1, Some(now.saturating_sub(100)));
            }
            if now >= 1400 {
                hb(&mut c, now, 3, 2, Some(now.saturating_sub(100)));
            }
            let out = c.step(t(now), Input::Tick);
            assert!(releases(&out).is_empty(), "a move started at {now} with failovers pending: {pending:?}");
            if !assigns(&out).is_empty() {
                assert!(pending.is_empty());
                pending = out;
            }
            now += 100;
        }
        let a = assigns(&pending);
        assert_eq!(a.iter().map(|x| (x.0, x.1, x.2)).collect::<Vec<_>>(), (5..=7).map(|p| (p, NodeId(3), FailoverCause::ServerDead)).collect::<Vec<_>>());
        // The failover commits: counts 4 and 3, nothing to even out.
        commit(&mut c, &pending);
        let mut moved = 0;
        while now < 6000 {
            hb(&mut c, now, 1, 0, Some(now - 100));
            hb(&mut c, now, 3, 2, Some(now - 100));
            let out = c.step(t(now), Input::Tick);
            for (from, pid) in releases(&out) {
                assert_eq!(from, NodeId(1));
                moved += 1;
                let out = c.step(t(now), Input::Released { pid, epoch: c.partition(pid).unwrap().epoch });
                commit(&mut c, &out);
            }
            now += 100;
        }
        let count = |s: u32| c.partitions().iter().filter(|p| p.owner == Some(NodeId(s))).count();
        assert_eq!((moved, count(1), count(3)), (0, 4, 3));
    }

    #[test]
    fn a_drained_partition_is_granted_to_nobody_until_undrained() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1)]));
        assert_eq!(hb(&mut c, 2000, 1, 0, None), vec![(1, 1)]);
        c.step(t(2000), Input::Drain { pid: 1, cause: FailoverCause::Split });
        assert!(!c.drained(1, t(2100)));
        assert!(hb(&mut c, 2100, 1, 0, Some(2000)).is_empty());
        assert!(c.drained(1, t(3250)), "after the last grant plus lease and skew");
        c.step(t(3300), Input::Undrain { pid: 1 });
        assert_eq!(hb(&mut c, 3300, 1, 0, Some(2100)), vec![(1, 1)]);
    }

    /// Heartbeats every server in `live` (server, zone) at `now`, echoing
    /// the previous beat and reporting `cost(pid)` µs of CPU for each of
    /// its partitions since its last beat, then ticks.
    fn beat_loaded(c: &mut Core, now: u64, live: &[(u32, u16)], cost: &dyn Fn(PartitionId) -> u64) -> Vec<Cmd> {
        for &(s, z) in live {
            let load: Vec<(PartitionId, u64)> = c.partitions().iter().filter(|p| p.owner == Some(NodeId(s))).map(|p| (p.pid, cost(p.pid))).collect();
            c.step(t(now), Input::Heartbeat { server: NodeId(s), zone: ZoneId(z), echo: Some(t(now.saturating_sub(100))), lost: vec![], load });
        }
        c.step(t(now), Input::Tick)
    }

    /// A drain is done once the owner released the partition (at its
    /// epoch), however long its last grant has to run; an unowned
    /// partition is drained at once.
    #[test]
    fn a_drain_is_done_as_soon_as_the_owner_releases_or_if_there_is_no_owner() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, None, 0)]));
        c.step(t(100), Input::Drain { pid: 2, cause: FailoverCause::Split });
        assert!(c.drained(2, t(100)), "nobody holds it, whatever grants a former master gave");
        assert_eq!(hb(&mut c, 2000, 1, 0, None), vec![(1, 1)]);
        c.step(t(2000), Input::Drain { pid: 1, cause: FailoverCause::Split });
        c.step(t(2100), Input::Released { pid: 1, epoch: 0 });
        assert!(!c.drained(1, t(2100)), "a release of another epoch");
        c.step(t(2100), Input::Released { pid: 1, epoch: 1 });
        assert!(c.drained(1, t(2100)), "released, long before the grant of 2000 runs out");
    }

    /// A server's second heartbeat at the same instant adds no load sample
    /// (no time passed to average over): rebalancing goes on as usual.
    #[test]
    fn a_heartbeat_repeated_at_the_same_instant_adds_no_load_sample() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=4).map(|i| part(i, Some(1), 1)).collect()));
        let live = [(1, 0), (2, 1)];
        let mut started = Vec::new();
        for now in (0..2000).step_by(100) {
            if now == 1000 {
                hb(&mut c, now, 1, 0, Some(now - 100));
            }
            started.extend(releases(&beat(&mut c, now, &live)).into_iter().map(|r| (now, r)));
        }
        assert_eq!(started.first(), Some(&(1300, (NodeId(1), 1))), "{started:?}");
    }

    /// Load reports feed a moving average: one beat's burst moves nothing,
    /// and fades; the same cost sustained does move a partition.
    #[test]
    fn a_burst_of_load_is_averaged_away_and_moves_nothing() {
        let map = vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(2), 1)];
        let live = [(1, 0), (2, 1)];
        // Partitions 1 and 2 cost 50 ms of CPU per second for one beat: on
        // average, server 1 stays below LOAD_FLOOR.
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(map.clone()));
        for now in (0..10_000).step_by(100) {
            let cost = |pid: PartitionId| if now == 2000 && pid != 3 { 5000 } else { 0 };
            assert!(releases(&beat_loaded(&mut c, now, &live, &cost)).is_empty(), "moved at {now}");
        }
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(map));
        let cost = |pid: PartitionId| if pid != 3 { 5000 } else { 0 };
        assert!((0..10_000).step_by(100).any(|now| !releases(&beat_loaded(&mut c, now, &live, &cost)).is_empty()));
    }

    /// A dead server lives again only once it echoes a grant sent less than
    /// `dead_after` ago.
    #[test]
    fn a_dead_server_lives_again_only_by_echoing_a_grant_younger_than_dead_after() {
        let mut c = Core::new(cfg(), t(0));
        hb(&mut c, 0, 1, 0, None);
        assert_eq!(c.step(t(1500), Input::Tick), vec![Cmd::Dead { server: NodeId(1) }]);
        hb(&mut c, 1600, 1, 0, Some(100));
        assert!(c.live_servers().is_empty(), "an echo exactly dead_after old");
        hb(&mut c, 1700, 1, 0, Some(201));
        assert_eq!(c.live_servers(), vec![NodeId(1)]);
    }

    /// An admin move to the partition's owner, or of a partition already
    /// draining, changes nothing.
    #[test]
    fn a_move_to_the_owner_or_of_a_draining_partition_is_ignored() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1)]));
        for s in 1..=3 {
            hb(&mut c, 2000, s, s as u16, None);
        }
        assert!(c.step(t(2000), Input::Move { pid: 1, to: NodeId(1) }).is_empty());
        assert_eq!(hb(&mut c, 2100, 1, 1, Some(2000)), vec![(1, 1)], "still granted");
        let out = c.step(t(2100), Input::Move { pid: 1, to: NodeId(2) });
        assert_eq!(releases(&out), vec![(NodeId(1), 1)]);
        assert!(c.step(t(2100), Input::Move { pid: 1, to: NodeId(3) }).is_empty());
        let out = c.step(t(2200), Input::Released { pid: 1, epoch: 1 });
        assert_eq!(assigns(&out), vec![(1, NodeId(2), FailoverCause::Moved)]);
    }

    /// The map read again with a partition's owner and epoch unchanged
    /// keeps what the core knows of it: a drain goes on.
    #[test]
    fn a_reload_of_an_unchanged_entry_keeps_its_drain() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1)]));
        assert_eq!(hb(&mut c, 2000, 1, 0, None), vec![(1, 1)]);
        c.step(t(2000), Input::Drain { pid: 1, cause: FailoverCause::Merged });
        c.step(t(2100), Input::Map(vec![part(1, Some(1), 1)]));
        c.step(t(2100), Input::Entry(part(1, Some(1), 1)));
        assert!(hb(&mut c, 2200, 1, 0, Some(2000)).is_empty(), "granted while draining");
        assert!(!c.drained(1, t(2200)), "the grant of 2000 is still out");
    }

    /// A partition its owner lost and that is placed on the same owner
    /// again (a new epoch) is granted again.
    #[test]
    fn a_lost_partition_placed_again_on_its_owner_is_granted_at_the_new_epoch() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1)]));
        hb(&mut c, 2000, 1, 0, None);
        c.step(t(2100), Input::Heartbeat { server: NodeId(1), zone: ZoneId(0), echo: Some(t(2000)), lost: vec![(1, 1)], load: vec![] });
        // Server 1 is the only one.
        let out = c.step(t(2100), Input::Tick);
        assert_eq!(assigns(&out), vec![(1, NodeId(1), FailoverCause::LeaseLost)]);
        commit(&mut c, &out);
        assert_eq!(hb(&mut c, 2200, 1, 0, Some(2100)), vec![(1, 2)]);
    }

    /// An admin move to a server that is not alive waits for it: no other
    /// server takes the partition, even once released.
    #[test]
    fn an_admin_move_to_a_server_that_is_not_alive_waits_for_it() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1)]));
        hb(&mut c, 2000, 1, 0, None);
        hb(&mut c, 2000, 2, 1, None);
        let out = c.step(t(2000), Input::Move { pid: 1, to: NodeId(9) });
        assert_eq!(releases(&out), vec![(NodeId(1), 1)]);
        assert!(assigns(&c.step(t(2100), Input::Released { pid: 1, epoch: 1 })).is_empty());
        assert!(assigns(&c.step(t(2100), Input::Tick)).is_empty());
        hb(&mut c, 2200, 9, 2, None);
        assert_eq!(assigns(&c.step(t(2200), Input::Tick)), vec![(1, NodeId(9), FailoverCause::Moved)]);
    }

    /// A rebalancing move whose target died before the partition was
    /// released goes where placement chooses.
    #[test]
    fn a_rebalancing_move_whose_target_died_goes_where_placement_chooses() {
        let mut c = Core::new(cfg(), t(0));
        // Server 1 holds three partitions, server 3 one, server 2 none.
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(1), 1), part(4, Some(3), 1)]));
        let mut started = Vec::new();
        for now in (0..=1500).step_by(100) {
            hb(&mut c, now, 1, 0, Some(now.saturating_sub(100)));
            hb(&mut c, now, 3, 2, Some(now.saturating_sub(100)));
            // Server 2 hears nothing: dead at 1.5 s.
            hb(&mut c, now, 2, 1, None);
            started.extend(releases(&c.step(t(now), Input::Tick)).into_iter().map(|r| (now, r)));
        }
        assert_eq!(started, vec![(1300, (NodeId(1), 1))]);
        assert_eq!(c.live_servers(), vec![NodeId(1), NodeId(3)]);
        let out = c.step(t(1600), Input::Released { pid: 1, epoch: 1 });
        assert_eq!(assigns(&out), vec![(1, NodeId(3), FailoverCause::Rebalanced)]);
    }

    /// Placement keeps at most ASSIGN_PENDING_MAX assigns waiting for their
    /// commit; the rest follow once those are done.
    #[test]
    fn placement_keeps_at_most_assign_pending_max_assigns_out() {
        let mut c = Core::new(cfg(), t(0));
        let n = ASSIGN_PENDING_MAX as u64 + 10;
        c.step(t(0), Input::Map((1..=n).map(|i| part(i, None, 0)).collect()));
        hb(&mut c, 10, 1, 0, None);
        let out = c.step(t(20), Input::Tick);
        assert_eq!(assigns(&out).len(), ASSIGN_PENDING_MAX);
        assert!(assigns(&c.step(t(30), Input::Tick)).is_empty());
        commit(&mut c, &out);
        let rest: Vec<PartitionId> = assigns(&c.step(t(40), Input::Tick)).iter().map(|a| a.0).collect();
        assert_eq!(rest, (ASSIGN_PENDING_MAX as u64 + 1..=n).collect::<Vec<_>>());
    }

    /// A failover from a dead server carries when the server was last
    /// heard (the newest grant it echoed).
    #[test]
    fn a_failover_from_a_dead_server_says_when_it_was_last_heard() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(2), 1)]));
        let mut failover = Vec::new();
        for now in (0..3000).step_by(100) {
            // Server 1 falls silent after echoing the grant of 200.
            if now <= 300 {
                hb(&mut c, now, 1, 0, Some(now.saturating_sub(100)));
            }
            hb(&mut c, now, 2, 1, Some(now.saturating_sub(100)));
            failover = c.step(t(now), Input::Tick);
            if !assigns(&failover).is_empty() {
                break;
            }
        }
        let a: Vec<_> = failover.iter().filter_map(|c| if let Cmd::Assign { info, to, cause, last_heard } = c { Some((info.pid, *to, *cause, *last_heard)) } else { None }).collect();
        assert_eq!(a, vec![(1, NodeId(2), FailoverCause::ServerDead, Some(t(200)))]);
    }

    /// Rebalancing starts the moment a new master's wait for the old grants
    /// (`lease + max_skew`) is over.
    #[test]
    fn rebalancing_starts_the_moment_the_old_grants_have_run_out() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=4).map(|i| part(i, Some(1), 1)).collect()));
        let live = [(1, 0), (2, 1)];
        for now in (0..1250).step_by(50) {
            assert!(releases(&beat(&mut c, now, &live)).is_empty(), "moved at {now}");
        }
        assert_eq!(releases(&beat(&mut c, 1250, &live)), vec![(NodeId(1), 1)]);
    }

    /// Nothing rebalances while a dead server's partitions wait for their
    /// grants to run out (they have no live owner and no failover yet).
    #[test]
    fn nothing_rebalances_while_a_dead_servers_grants_run_out() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(2), 1), part(4, Some(2), 1)]));
        let mut failover_at = None;
        for now in (0..5000).step_by(100) {
            // Server 1 hears nothing: dead at 1.5 s, granted until then.
            hb(&mut c, now, 1, 0, None);
            hb(&mut c, now, 2, 1, Some(now.saturating_sub(100)));
            // Server 3 joins at 600 ms, settled at 1.6 s.
            if now >= 600 {
                hb(&mut c, now, 3, 2, Some(now - 100));
            }
            let out = c.step(t(now), Input::Tick);
            assert!(releases(&out).is_empty(), "a move started at {now}");
            if !assigns(&out).is_empty() {
                assert_eq!(assigns(&out), vec![(1, NodeId(3), FailoverCause::ServerDead), (2, NodeId(3), FailoverCause::ServerDead)]);
                failover_at = Some(now);
                commit(&mut c, &out);
            }
        }
        assert_eq!(failover_at, Some(2800), "after the grant of 1500 ran out");
    }

    /// No move starts while a rebalancing assign waits for its commit.
    #[test]
    fn no_move_starts_while_a_rebalancing_assign_waits_for_its_commit() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=6).map(|i| part(i, Some(1), 1)).collect()));
        let live = [(1, 0), (2, 1)];
        for now in (0..1300).step_by(100) {
            beat(&mut c, now, &live);
        }
        assert_eq!(releases(&beat(&mut c, 1300, &live)), vec![(NodeId(1), 1)]);
        let assign = c.step(t(1300), Input::Released { pid: 1, epoch: 1 });
        assert_eq!(assigns(&assign), vec![(1, NodeId(2), FailoverCause::Rebalanced)]);
        for now in (1400..3000).step_by(100) {
            assert!(releases(&beat(&mut c, now, &live)).is_empty(), "moved at {now}");
        }
        commit(&mut c, &assign);
        assert_eq!(releases(&beat(&mut c, 3000, &live)), vec![(NodeId(1), 2)]);
    }

    /// At most REBALANCE_MOVES_MAX moves wait for their release at once.
    #[test]
    fn at_most_rebalance_moves_max_moves_wait_for_their_release() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=12).map(|i| part(i, Some(if i <= 6 { 1 } else { 2 }), 1)).collect()));
        let live = [(1, 0), (2, 1), (3, 2)];
        let mut started = Vec::new();
        // Nobody releases; the drains run out at 1.3 s + lease + skew.
        for now in (0..2500).step_by(100) {
            started.extend(releases(&beat(&mut c, now, &live)).into_iter().map(|r| (now, r)));
        }
        assert_eq!(started, vec![(1300, (NodeId(2), 7)), (1400, (NodeId(1), 1))]);
        assert_eq!(started.len(), REBALANCE_MOVES_MAX);
    }

    /// A partition rebalancing moved stays where it went for
    /// LOAD_MOVE_COOLDOWN, even when its new server is the fullest.
    #[test]
    fn a_partition_moved_by_rebalancing_stays_put_for_the_cooldown() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=4).map(|i| part(i, Some(1), 1)).collect()));
        let idle = |_: PartitionId| 0;
        let mut moves = run_loaded(&mut c, 0, 5000, &[(1, 0), (2, 1)], &idle);
        // Server 3 joins: server 2 (two partitions, as server 1, and the
        // higher id) holds only partitions that just moved.
        moves.extend(run_loaded(&mut c, 5000, 70_000, &[(1, 0), (2, 1), (3, 2)], &idle));
        let cooled = 1300 + LOAD_MOVE_COOLDOWN.as_millis() as u64;
        assert_eq!(moves, vec![(1300, 1, NodeId(1), NodeId(2)), (1400, 2, NodeId(1), NodeId(2)), (cooled, 1, NodeId(2), NodeId(3))]);
    }

    /// No move for load starts while another move waits for its release.
    #[test]
    fn no_move_for_load_starts_while_a_move_waits_for_its_release() {
        let mut c = Core::new(cfg(), t(0));
        // Server 1 holds three partitions, two of them busy; server 2 none.
        c.step(t(0), Input::Map((1..=3).map(|i| part(i, Some(1), 1)).collect()));
        let cost = |pid: PartitionId| if pid == 1 { 0 } else { 10_000 };
        let mut started = Vec::new();
        // Nobody releases; the drain runs out at 1.3 s + lease + skew.
        for now in (0..2500).step_by(100) {
            started.extend(releases(&beat_loaded(&mut c, now, &[(1, 0), (2, 1)], &cost)).into_iter().map(|r| (now, r)));
        }
        // The idle partition goes first, to even the counts.
        assert_eq!(started, vec![(1300, (NodeId(1), 1))]);
    }

    /// The next move for load may start as soon as LOAD_MOVE_GAP has passed.
    #[test]
    fn the_next_move_for_load_may_start_as_soon_as_load_move_gap_has_passed() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=9).map(|i| part(i, Some(1 + ((i - 1) / 3) as u32), 1)).collect()));
        let rate = |pid: PartitionId| if pid == 1 { 600_000 } else { 100_000 };
        let moves = run_loaded(&mut c, 0, 10_000, &[(1, 0), (2, 1), (3, 2)], &rate);
        let gap = LOAD_MOVE_GAP.as_millis() as u64;
        assert_eq!(moves, vec![(1300, 2, NodeId(1), NodeId(2)), (1300 + gap, 3, NodeId(1), NodeId(3))]);
    }

    /// Servers whose loads differ by less than LOAD_IMBALANCE_MIN of the
    /// mean are balanced: nothing moves, even though a move would lower the
    /// busier one's load by more than LOAD_GAIN_MIN.
    #[test]
    fn loads_within_the_imbalance_margin_never_move() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(2), 1)]));
        // Server 1 at 100 ms of CPU per second, server 2 at 79: a gap of 21,
        // under a quarter of the mean (89.5). Moving partition 1 (10.5)
        // would gain 10.5.
        let rate = |pid: PartitionId| match pid {
            1 => 10_500,
            2 => 89_500,
            _ => 79_000,
        };
        assert_eq!(run_loaded(&mut c, 0, 30_000, &[(1, 0), (2, 1)], &rate), vec![]);
    }

    /// Below LOAD_FLOOR nothing moves for load, however uneven; just above
    /// it the same spread moves a partition.
    #[test]
    fn servers_below_the_load_floor_move_nothing_for_load() {
        let map = vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(2), 1)];
        let live = [(1, 0), (2, 1)];
        // Partitions 1 and 2 at 8 ms of CPU per second, partition 3 idle.
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(map.clone()));
        assert_eq!(run_loaded(&mut c, 0, 30_000, &live, &|pid| if pid == 3 { 0 } else { 8_000 }), vec![]);
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(map));
        assert_eq!(run_loaded(&mut c, 0, 30_000, &live, &|pid| if pid == 3 { 0 } else { 12_000 }).len(), 1);
    }

    /// Ticks with heartbeats from `live` every 100 ms up to `at` (ms), all
    /// partitions idle, then once more at `at` with one beat's report of
    /// `cost(pid)` µs each (from idle, an average of `cost(pid)` µs per
    /// second); the releases of that last tick.
    fn one_loaded_beat(c: &mut Core, at: u64, live: &[(u32, u16)], cost: &dyn Fn(PartitionId) -> u64) -> Vec<(NodeId, PartitionId)> {
        for now in (0..at).step_by(100) {
            assert!(releases(&beat_loaded(c, now, live, &|_| 0)).is_empty(), "moved at {now}");
        }
        releases(&beat_loaded(c, at, live, cost))
    }

    /// A server whose load is exactly LOAD_FLOOR is busy enough to move
    /// partitions for.
    #[test]
    fn a_server_at_the_load_floor_is_busy_enough_to_move_for() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(2), 1)]));
        // Partitions 1 and 2 average 10 ms of CPU per second each.
        let cost = |pid: PartitionId| if pid == 3 { 0 } else { 10_000 };
        assert_eq!(one_loaded_beat(&mut c, 1400, &[(1, 0), (2, 1)], &cost), vec![(NodeId(1), 1)]);
    }

    /// Servers whose loads differ by exactly LOAD_IMBALANCE_MIN of the mean
    /// are uneven enough to move for.
    #[test]
    fn loads_exactly_at_the_imbalance_margin_move() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(2), 1)]));
        // Server 1 at 90 ms of CPU per second, server 2 at 70: a gap of 20,
        // a quarter of the mean (80). Moving partition 1 (10) gains 10.
        let cost = |pid: PartitionId| match pid {
            1 => 10_000,
            2 => 80_000,
            _ => 70_000,
        };
        assert_eq!(one_loaded_beat(&mut c, 1400, &[(1, 0), (2, 1)], &cost), vec![(NodeId(1), 1)]);
    }

    /// Of the busiest server's partitions, the one that leaves the two
    /// servers nearest each other moves, not the biggest that fits.
    #[test]
    fn the_busiest_server_gives_the_partition_that_leaves_the_two_nearest() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(2), 1), part(4, Some(2), 1)]));
        // Server 1 at 160 ms of CPU per second (100 + 60), server 2 at 20:
        // moving partition 1 leaves 60 and 120, partition 2 100 and 80.
        let rate = |pid: PartitionId| match pid {
            1 => 100_000,
            2 => 60_000,
            _ => 10_000,
        };
        assert_eq!(run_loaded(&mut c, 0, 30_000, &[(1, 0), (2, 1)], &rate), vec![(1300, 2, NodeId(1), NodeId(2))]);
    }

    /// A move for load that would lower the busier server's load by less
    /// than LOAD_GAIN_MIN of it is not made (the two are not far apart).
    #[test]
    fn a_move_that_gains_less_than_load_gain_min_is_not_made() {
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map(vec![part(1, Some(1), 1), part(2, Some(1), 1), part(3, Some(2), 1)]));
        // Server 1 at 100 ms of CPU per second (5 + 95), server 2 at 70:
        // only partition 1 fits in the gap, and gains 5.
        let rate = |pid: PartitionId| match pid {
            1 => 5_000,
            2 => 95_000,
            _ => 70_000,
        };
        assert_eq!(run_loaded(&mut c, 0, 30_000, &[(1, 0), (2, 1)], &rate), vec![]);
    }

    /// A saturated server whose load is spread over many even partitions,
    /// far busier than another, sheds one at a time although no single
    /// partition is worth LOAD_GAIN_MIN of it; a server as many partitions
    /// only a little busier keeps them.
    #[test]
    fn a_server_of_many_even_partitions_far_busier_than_another_sheds_them() {
        // Twelve partitions on each server (the counts are even): twelve of
        // 80 ms on server 1 (960), twelve of 20 on server 2 (240). A move
        // gains 80, a twelfth of server 1, but the gap is 75% of it.
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=24).map(|i| part(i, Some(if i <= 12 { 1 } else { 2 }), 1)).collect()));
        let moves = run_loaded(&mut c, 0, 6_000, &[(1, 0), (2, 1)], &|pid| if pid <= 12 { 80_000 } else { 20_000 });
        assert!(!moves.is_empty() && moves.iter().all(|m| m.1 <= 12 && m.2 == NodeId(1) && m.3 == NodeId(2)), "{moves:?}");
        // Twelve of 45 on server 2 (540): the gap is 44% of server 1, and
        // the same move gains under LOAD_GAIN_MIN of it: nothing moves.
        let mut c = Core::new(cfg(), t(0));
        c.step(t(0), Input::Map((1..=24).map(|i| part(i, Some(if i <= 12 { 1 } else { 2 }), 1)).collect()));
        assert_eq!(run_loaded(&mut c, 0, 6_000, &[(1, 0), (2, 1)], &|pid| if pid <= 12 { 80_000 } else { 45_000 }), vec![]);
    }

    /// Rebalancing gives to the zone with the fewest partitions first,
    /// then to its server with the fewest.
    #[test]
    fn rebalancing_gives_to_the_emptiest_zone_first() {
        let mut c = Core::new(cfg(), t(0));
        // Zone 0: server 1 with four partitions, server 2 with none; zone 1:
        // server 3 with one.
        c.step(t(0), Input::Map((1..=5).map(|i| part(i, Some(if i <= 4 { 1 } else { 3 }), 1)).collect()));
        let live = [(1, 0), (2, 0), (3, 1)];
        for now in (0..1300).step_by(100) {
            beat(&mut c, now, &live);
        }
        assert_eq!(releases(&beat(&mut c, 1300, &live)), vec![(NodeId(1), 1)]);
        let out = c.step(t(1300), Input::Released { pid: 1, epoch: 1 });
        assert_eq!(assigns(&out), vec![(1, NodeId(3), FailoverCause::Rebalanced)]);
    }
}
