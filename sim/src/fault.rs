//! Faults as verbs in symmetric pairs.
//!
//! | verb | inverse | what it does |
//! |---|---|---|
//! | `zone-down` (mode `crash`) | `zone-up` | kills every node of the zone and crashes its disks; `zone-up` restarts them from their disks |
//! | `zone-down` (mode `isolate`) | `zone-up` | cuts the zone off both ways; its processes keep running |
//! | `node-crash` | `node-restart` | kills a node and crashes its disk / restarts it from its disk |
//! | `node-pause` | `node-resume` | freezes a node's processes; messages to it wait |
//! | `partition` | `heal` | cuts the links from set A to set B (and back, unless one-way) |
//! | `clog` | `unclog` | cuts one link direction from A to B (a one-way partition) |
//! | `loss` | `loss-off` | loses messages between A and B with a probability |
//! | `latency-spike` | `latency-clear` | adds latency between A and B |
//! | `disk-faults` | `disk-faults-off` | sets a node's [`DiskFaults`] / clears them |
//! | `clock-offset` | `clock-reset` | steps a node's clock by an offset / back to true time |
//! | `clock-drift` | `clock-reset` | makes a node's clock run fast or slow |
//!
//! A set names zones (all their nodes) or nodes; an empty set is every node.
//! Both Rust tests and scenario files drive faults through [`World::apply`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::disk::DiskFaults;
use crate::log::Event;
use crate::time::{self, fmt_duration};
use crate::topology::{NodeId, ZoneId};
use crate::world::{NetRule, World};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From A to B only.
    OneWay,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneMode {
    Crash,
    Isolate,
}

/// Names of zones or nodes.
pub type Target = Vec<String>;

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    ZoneDown { zone: String, mode: ZoneMode },
    ZoneUp { zone: String },
    NodeCrash { node: String },
    NodeRestart { node: String },
    NodePause { node: String },
    NodeResume { node: String },
    Partition { a: Target, b: Target, direction: Direction },
    Heal { a: Target, b: Target, direction: Direction },
    Clog { a: Target, b: Target },
    Unclog { a: Target, b: Target },
    Loss { a: Target, b: Target, rate: f64 },
    LossOff { a: Target, b: Target },
    LatencySpike { a: Target, b: Target, extra: Duration },
    LatencyClear { a: Target, b: Target },
    DiskFaultsOn { node: String, faults: DiskFaults },
    DiskFaultsOff { node: String },
    ClockOffset { node: String, offset_ns: i64 },
    ClockDrift { node: String, ppm: i64 },
    ClockReset { node: String },
    /// Gray failure: the nodes of `target` (zones or nodes) run their CPUs
    /// at `speed_permille` per mille of their speed.
    CpuSlow { target: Target, speed_permille: u32 },
    CpuRestore { target: Target },
    /// Operations, not faults: start a spare node (the cluster grows), and
    /// mark a node for removal (its services move their work off it).
    NodeAdd { node: String },
    NodeDrain { node: String },
}

impl Fault {
    /// Whether the verb begins a fault (its inverse ends one).
    pub fn opens(&self) -> bool {
        matches!(
            self,
            Fault::ZoneDown { .. }
                | Fault::NodeCrash { .. }
                | Fault::NodePause { .. }
                | Fault::Partition { .. }
                | Fault::Clog { .. }
                | Fault::Loss { .. }
                | Fault::LatencySpike { .. }
                | Fault::DiskFaultsOn { .. }
                | Fault::ClockOffset { .. }
                | Fault::ClockDrift { .. }
                | Fault::CpuSlow { .. }
        )
    }
}

/// What one applied fault verb did while it was in force: the proof that
/// it fired. The world counts it as the fault acts ([`World::fault_effects`]):
/// a net rule's messages from the moment it is set until its inverse clears
/// it, a node fault's nodes, disk rates' failed operations and clock or CPU
/// changes' readings and jobs until the inverse (or the end of the run).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultEffect {
    /// Messages its rules cut (a partition, a clog, an isolated zone).
    pub messages_cut: u64,
    /// Messages lost on links under its loss rate.
    pub messages_lost: u64,
    /// Messages that took its extra latency.
    pub messages_delayed: u64,
    /// Nodes it crashed or paused.
    pub nodes_stopped: u64,
    /// Nodes it restarted or resumed.
    pub nodes_started: u64,
    /// Disk operations that failed, were bit-flipped or went astray under
    /// its rates.
    pub disk_faults: u64,
    /// Readings of a clock it had moved off true time (or set drifting).
    pub clock_reads_moved: u64,
    /// CPU jobs run on nodes it slowed.
    pub cpu_jobs_slowed: u64,
    /// Running nodes it marked for removal.
    pub nodes_drained: u64,
}

impl FaultEffect {
    pub fn is_none(&self) -> bool {
        *self == FaultEffect::default()
    }
}

impl fmt::Display for FaultEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.messages_cut, "message", "cut"),
            (self.messages_lost, "message", "lost"),
            (self.messages_delayed, "message", "delayed"),
            (self.nodes_stopped, "node", "stopped"),
            (self.nodes_started, "node", "started"),
            (self.disk_faults, "disk operation", "failed"),
            (self.clock_reads_moved, "clock reading", "moved"),
            (self.cpu_jobs_slowed, "CPU job", "slowed"),
            (self.nodes_drained, "node", "marked for removal"),
        ];
        let said: Vec<String> = parts.iter().filter(|p| p.0 > 0).map(|&(n, what, how)| format!("{n} {what}{} {how}", if n == 1 { "" } else { "s" })).collect();
        if said.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", said.join(", "))
        }
    }
}

/// Which fault each effect belongs to while faults are in force.
#[derive(Default)]
pub(crate) struct FaultBook {
    /// By application order, refused faults included.
    effects: Vec<FaultEffect>,
    /// The fault being applied.
    current: Option<usize>,
    /// Node -> (fault, the disk's fault count when it began).
    disk: BTreeMap<NodeId, (usize, u64)>,
    /// Node -> the fault that moved its clock.
    clock: BTreeMap<NodeId, usize>,
    /// Node -> (fault, the CPU's slowed jobs when it began).
    cpu: BTreeMap<NodeId, (usize, u64)>,
}

impl FaultBook {
    pub(crate) fn current(&self) -> Option<usize> {
        self.current
    }

    fn credit(&mut self, f: impl FnOnce(&mut FaultEffect)) {
        if let Some(i) = self.current {
            f(&mut self.effects[i]);
        }
    }

    fn close_disk(&mut self, node: NodeId, count: u64) {
        if let Some((i, base)) = self.disk.remove(&node) {
            self.effects[i].disk_faults += count.saturating_sub(base);
        }
    }

    fn close_cpu(&mut self, node: NodeId, count: u64) {
        if let Some((i, base)) = self.cpu.remove(&node) {
            self.effects[i].cpu_jobs_slowed += count.saturating_sub(base);
        }
    }

    fn move_clock(&mut self, node: NodeId) {
        if let Some(i) = self.current {
            self.clock.insert(node, i);
        }
    }

    /// The effects so far, by application order; `net` adds what the
    /// network counted, `disk` and `cpu` give a node's counts now (for the
    /// faults still in force).
    pub(crate) fn effects(&self, net: &BTreeMap<usize, [u64; 3]>, disk: impl Fn(NodeId) -> u64, cpu: impl Fn(NodeId) -> u64) -> Vec<FaultEffect> {
        let mut out = self.effects.clone();
        for (&i, c) in net {
            out[i].messages_cut += c[0];
            out[i].messages_lost += c[1];
            out[i].messages_delayed += c[2];
        }
        for (&n, &(i, base)) in &self.disk {
            out[i].disk_faults += disk(n).saturating_sub(base);
        }
        for (&n, &(i, base)) in &self.cpu {
            out[i].cpu_jobs_slowed += cpu(n).saturating_sub(base);
        }
        out
    }

    /// A reading of `node`'s clock that its fault moved.
    pub(crate) fn clock_read_moved(&mut self, node: NodeId) {
        if let Some(&i) = self.clock.get(&node) {
            self.effects[i].clock_reads_moved += 1;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("unknown zone or node `{0}`")]
    UnknownName(String),
    #[error("unknown zone `{0}`")]
    UnknownZone(String),
    #[error("unknown node `{0}`")]
    UnknownNode(String),
    #[error("{verb} of `{target}`: {why}")]
    BadState { verb: &'static str, target: String, why: &'static str },
}

fn set(t: &Target) -> String {
    if t.is_empty() {
        "*".to_string()
    } else {
        t.join(",")
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::ZoneDown { zone, mode } => write!(f, "zone-down {zone} ({})", if *mode == ZoneMode::Crash { "crash" } else { "isolate" }),
            Fault::ZoneUp { zone } => write!(f, "zone-up {zone}"),
            Fault::NodeCrash { node } => write!(f, "node-crash {node}"),
            Fault::NodeRestart { node } => write!(f, "node-restart {node}"),
            Fault::NodePause { node } => write!(f, "node-pause {node}"),
            Fault::NodeResume { node } => write!(f, "node-resume {node}"),
            Fault::NodeAdd { node } => write!(f, "node-add {node}"),
            Fault::NodeDrain { node } => write!(f, "node-drain {node}"),
            Fault::Partition { a, b, direction } => write!(f, "partition {} {} {}", set(a), if *direction == Direction::Both { "<->" } else { "->" }, set(b)),
            Fault::Heal { a, b, direction } => write!(f, "heal {} {} {}", set(a), if *direction == Direction::Both { "<->" } else { "->" }, set(b)),
            Fault::Clog { a, b } => write!(f, "clog {} -> {}", set(a), set(b)),
            Fault::Unclog { a, b } => write!(f, "unclog {} -> {}", set(a), set(b)),
            Fault::Loss { a, b, rate } => write!(f, "loss {} <-> {} {rate}", set(a), set(b)),
            Fault::LossOff { a, b } => write!(f, "loss-off {} <-> {}", set(a), set(b)),
            Fault::LatencySpike { a, b, extra } => write!(f, "latency-spike {} <-> {} +{}", set(a), set(b), fmt_duration(*extra)),
            Fault::LatencyClear { a, b } => write!(f, "latency-clear {} <-> {}", set(a), set(b)),
            Fault::DiskFaultsOn { node, faults } => {
                write!(f, "disk-faults {node}")?;
                let rates = [
                    ("read-errors", faults.read_error_rate),
                    ("write-errors", faults.write_error_rate),
                    ("bitflip-reads", faults.bitflip_read_rate),
                    ("bitflip-writes", faults.bitflip_write_rate),
                    ("misdirected", faults.misdirect_rate),
                ];
                for (name, r) in rates.iter().filter(|(_, r)| *r > 0.0) {
                    write!(f, " {name}={r}")?;
                }
                if faults.full {
                    write!(f, " full")?;
                }
                if faults.slow_factor > 1 {
                    write!(f, " slow×{}", faults.slow_factor)?;
                }
                Ok(())
            }
            Fault::DiskFaultsOff { node } => write!(f, "disk-faults-off {node}"),
            Fault::ClockOffset { node, offset_ns } => {
                let sign = if *offset_ns < 0 { "-" } else { "+" };
                write!(f, "clock-offset {node} {sign}{}", fmt_duration(Duration::from_nanos(offset_ns.unsigned_abs())))
            }
            Fault::ClockDrift { node, ppm } => write!(f, "clock-drift {node} {ppm}ppm"),
            Fault::ClockReset { node } => write!(f, "clock-reset {node}"),
            Fault::CpuSlow { target, speed_permille } => write!(f, "cpu-slow {} {}.{}%", set(target), speed_permille / 10, speed_permille % 10),
            Fault::CpuRestore { target } => write!(f, "cpu-restore {}", set(target)),
        }
    }
}

impl World {
    pub fn zone(&self, name: &str) -> Result<ZoneId, FaultError> {
        self.topology().zone_by_name(name).ok_or_else(|| FaultError::UnknownZone(name.to_string()))
    }
    pub fn node_named(&self, name: &str) -> Result<NodeId, FaultError> {
        self.topology().node_by_name(name).ok_or_else(|| FaultError::UnknownNode(name.to_string()))
    }

    /// The nodes a set names; an empty set is every node.
    pub fn resolve(&self, t: &Target) -> Result<Vec<NodeId>, FaultError> {
        let topo = self.topology();
        if t.is_empty() {
            return Ok(topo.nodes().iter().map(|n| n.id).collect());
        }
        let mut out = Vec::new();
        for name in t {
            if let Some(z) = topo.zone_by_name(name) {
                out.extend(topo.nodes_in_zone(z));
            } else if let Some(n) = topo.node_by_name(name) {
                out.push(n);
            } else {
                return Err(FaultError::UnknownName(name.clone()));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn others(&self, nodes: &[NodeId]) -> Vec<NodeId> {
        self.topology().nodes().iter().map(|n| n.id).filter(|id| !nodes.contains(id)).collect()
    }

    /// Applies a fault verb now and records it in the event log.
    pub fn apply(&self, fault: &Fault) -> Result<(), FaultError> {
        {
            let mut b = self.book();
            b.current = Some(b.effects.len());
            b.effects.push(FaultEffect::default());
        }
        let r = self.apply_inner(fault);
        self.book().current = None;
        r?;
        self.record(Event::Fault { at: time::now(), text: fault.to_string() });
        tracing::info!(target: "sim::fault", at = %time::now(), "{fault}");
        Ok(())
    }

    fn apply_inner(&self, fault: &Fault) -> Result<(), FaultError> {
        let bad = |verb, target: &str, why| Err(FaultError::BadState { verb, target: target.to_string(), why });
        match fault {
            Fault::ZoneDown { zone, mode } => {
                let z = self.zone(zone)?;
                let key = format!("zone-down:{zone}");
                if self.has_rule(&key) || self.has_rule(&format!("{key}:crash")) {
                    return bad("zone-down", zone, "the zone is already down");
                }
                let nodes = self.topology().nodes_in_zone(z);
                match mode {
                    ZoneMode::Isolate => {
                        let others = self.others(&nodes);
                        self.set_rule(&key, NetRule::Block { from: nodes.clone(), to: others.clone() });
                        self.set_rule(&format!("{key}:in"), NetRule::Block { from: others, to: nodes });
                    }
                    ZoneMode::Crash => {
                        // A marker rule that blocks nothing records the state.
                        self.set_rule(&format!("{key}:crash"), NetRule::Block { from: vec![], to: vec![] });
                        for n in nodes {
                            if self.is_alive(n) {
                                self.crash_node(n);
                                self.book().credit(|e| e.nodes_stopped += 1);
                            }
                        }
                    }
                }
                Ok(())
            }
            Fault::ZoneUp { zone } => {
                let z = self.zone(zone)?;
                let key = format!("zone-down:{zone}");
                if self.clear_rule(&key) {
                    self.clear_rule(&format!("{key}:in"));
                } else if self.clear_rule(&format!("{key}:crash")) {
                    for n in self.topology().nodes_in_zone(z) {
                        // A spare not yet added stays out.
                        if !self.is_alive(n) && self.is_launched(n) {
                            self.restart_node(n);
                            self.book().credit(|e| e.nodes_started += 1);
                        }
                    }
                } else {
                    return bad("zone-up", zone, "the zone is not down");
                }
                Ok(())
            }
            Fault::NodeCrash { node } => {
                let n = self.node_named(node)?;
                if !self.is_alive(n) {
                    return bad("node-crash", node, "the node is already down");
                }
                self.crash_node(n);
                self.book().credit(|e| e.nodes_stopped += 1);
                Ok(())
            }
            Fault::NodeRestart { node } => {
                let n = self.node_named(node)?;
                if self.is_alive(n) {
                    return bad("node-restart", node, "the node is running");
                }
                if !self.is_launched(n) {
                    return bad("node-restart", node, "the node is a spare not yet added (node-add starts it)");
                }
                self.restart_node(n);
                self.book().credit(|e| e.nodes_started += 1);
                Ok(())
            }
            Fault::NodePause { node } => {
                let n = self.node_named(node)?;
                if !self.is_alive(n) || self.is_paused(n) {
                    return bad("node-pause", node, "the node is down or already paused");
                }
                self.pause_node(n);
                self.book().credit(|e| e.nodes_stopped += 1);
                Ok(())
            }
            Fault::NodeResume { node } => {
                let n = self.node_named(node)?;
                if !self.is_paused(n) {
                    return bad("node-resume", node, "the node is not paused");
                }
                self.resume_node(n);
                self.book().credit(|e| e.nodes_started += 1);
                Ok(())
            }
            Fault::NodeAdd { node } => {
                let n = self.node_named(node)?;
                if !self.is_waiting(n) {
                    return bad("node-add", node, "the node is not a spare waiting to be added (spares are declared in [topology.spare])");
                }
                let zone = self.topology().zone_name(self.topology().zone_of(n)).to_string();
                if self.has_rule(&format!("zone-down:{zone}:crash")) {
                    return bad("node-add", node, "its zone is down");
                }
                self.add_node(n);
                self.book().credit(|e| e.nodes_started += 1);
                Ok(())
            }
            Fault::NodeDrain { node } => {
                let n = self.node_named(node)?;
                if self.is_draining(n) {
                    return bad("node-drain", node, "the node is already marked for removal");
                }
                if !self.is_launched(n) {
                    return bad("node-drain", node, "the node is a spare not yet added");
                }
                self.drain_node(n);
                if self.is_alive(n) {
                    self.book().credit(|e| e.nodes_drained += 1);
                }
                Ok(())
            }
            Fault::Partition { a, b, direction } => {
                let (na, nb) = (self.resolve(a)?, self.resolve(b)?);
                let key = format!("partition:{}|{}", set(a), set(b));
                if self.has_rule(&key) {
                    return bad("partition", &key, "already partitioned");
                }
                self.set_rule(&key, NetRule::Block { from: na.clone(), to: nb.clone() });
                if *direction == Direction::Both {
                    self.set_rule(&format!("{key}:back"), NetRule::Block { from: nb, to: na });
                }
                Ok(())
            }
            Fault::Heal { a, b, .. } => {
                let key = format!("partition:{}|{}", set(a), set(b));
                if !self.clear_rule(&key) {
                    return bad("heal", &key, "no such partition");
                }
                self.clear_rule(&format!("{key}:back"));
                Ok(())
            }
            Fault::Clog { a, b } => {
                let (na, nb) = (self.resolve(a)?, self.resolve(b)?);
                let key = format!("clog:{}|{}", set(a), set(b));
                self.set_rule(&key, NetRule::Block { from: na, to: nb });
                Ok(())
            }
            Fault::Unclog { a, b } => {
                let key = format!("clog:{}|{}", set(a), set(b));
                if !self.clear_rule(&key) {
                    return bad("unclog", &key, "the link is not clogged");
                }
                Ok(())
            }
            Fault::Loss { a, b, rate } => {
                let (na, nb) = (self.resolve(a)?, self.resolve(b)?);
                let key = format!("loss:{}|{}", set(a), set(b));
                self.set_rule(&key, NetRule::Loss { from: na.clone(), to: nb.clone(), rate: *rate });
                self.set_rule(&format!("{key}:back"), NetRule::Loss { from: nb, to: na, rate: *rate });
                Ok(())
            }
            Fault::LossOff { a, b } => {
                let key = format!("loss:{}|{}", set(a), set(b));
                if !self.clear_rule(&key) {
                    return bad("loss-off", &key, "no loss rule there");
                }
                self.clear_rule(&format!("{key}:back"));
                Ok(())
            }
            Fault::LatencySpike { a, b, extra } => {
                let (na, nb) = (self.resolve(a)?, self.resolve(b)?);
                let key = format!("spike:{}|{}", set(a), set(b));
                self.set_rule(&key, NetRule::Delay { from: na.clone(), to: nb.clone(), extra: *extra });
                self.set_rule(&format!("{key}:back"), NetRule::Delay { from: nb, to: na, extra: *extra });
                Ok(())
            }
            Fault::LatencyClear { a, b } => {
                let key = format!("spike:{}|{}", set(a), set(b));
                if !self.clear_rule(&key) {
                    return bad("latency-clear", &key, "no latency spike there");
                }
                self.clear_rule(&format!("{key}:back"));
                Ok(())
            }
            Fault::DiskFaultsOn { node, faults } => {
                let n = self.node_named(node)?;
                self.disk(n).set_faults(faults.clone());
                let count = self.disk(n).stats().faults();
                let mut b = self.book();
                b.close_disk(n, count);
                if let Some(i) = b.current {
                    b.disk.insert(n, (i, count));
                }
                Ok(())
            }
            Fault::DiskFaultsOff { node } => {
                let n = self.node_named(node)?;
                self.disk(n).set_faults(DiskFaults::default());
                let count = self.disk(n).stats().faults();
                self.book().close_disk(n, count);
                Ok(())
            }
            Fault::ClockOffset { node, offset_ns } => {
                let n = self.node_named(node)?;
                let now = time::now();
                self.update_clock(n, |c| c.set_offset(now, *offset_ns));
                self.book().move_clock(n);
                Ok(())
            }
            Fault::ClockDrift { node, ppm } => {
                let n = self.node_named(node)?;
                if *ppm <= -1_000_000 {
                    return bad("clock-drift", node, "a clock cannot stop or run backwards (ppm must exceed -1000000)");
                }
                let now = time::now();
                self.update_clock(n, |c| c.set_drift(now, *ppm));
                self.book().move_clock(n);
                Ok(())
            }
            Fault::ClockReset { node } => {
                let n = self.node_named(node)?;
                let now = time::now();
                self.update_clock(n, |c| {
                    c.set_drift(now, 0);
                    c.set_offset(now, 0);
                });
                self.book().clock.remove(&n);
                Ok(())
            }
            Fault::CpuSlow { target, speed_permille } => {
                if !(1..1000).contains(speed_permille) {
                    return bad("cpu-slow", &set(target), "the speed must be above 0 and below 100%");
                }
                for n in self.resolve(target)? {
                    self.set_cpu_speed(n, *speed_permille);
                    let count = self.cpu_slowed_jobs(n);
                    let mut b = self.book();
                    b.close_cpu(n, count);
                    if let Some(i) = b.current {
                        b.cpu.insert(n, (i, count));
                    }
                }
                Ok(())
            }
            Fault::CpuRestore { target } => {
                for n in self.resolve(target)? {
                    self.set_cpu_speed(n, 1000);
                    let count = self.cpu_slowed_jobs(n);
                    self.book().close_cpu(n, count);
                }
                Ok(())
            }
        }
    }
}
