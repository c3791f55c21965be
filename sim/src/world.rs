//! The world: one simulated data-centre deployment inside one madsim runtime.
//!
//! It owns the topology, the nodes' disks (which outlive node crashes), their
//! clocks, the network's fault rules and random stream, and the event log.
//! Nodes are madsim nodes whose init closure receives a [`NodeCtx`]: the only
//! door through which engine code reaches time, randomness, disk and network.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::clock::{Clock, ClockState};
use crate::cpu::{Cpu, CpuConfig, CpuState};
use crate::disk::{Disk, DiskConfig, DiskState};
use crate::fault::{FaultBook, FaultEffect};
use crate::log::{Digest, Event, EventLog};
use crate::rng;
use crate::time::{self, SimTime};
use crate::topology::{NodeId, Topology};

pub type NodeFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
pub type NodeMain = Arc<dyn Fn(NodeCtx) -> NodeFuture + Send + Sync>;

/// A directed network rule installed by a fault verb.
#[derive(Clone, Debug, PartialEq)]
pub enum NetRule {
    /// Messages from `from` to `to` vanish.
    Block { from: Vec<NodeId>, to: Vec<NodeId> },
    /// Messages from `from` to `to` are lost with probability `rate`.
    Loss { from: Vec<NodeId>, to: Vec<NodeId>, rate: f64 },
    /// Messages from `from` to `to` take `extra` longer.
    Delay { from: Vec<NodeId>, to: Vec<NodeId>, extra: Duration },
}

/// Network counters for reports and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: BTreeMap<&'static str, u64>,
}

struct NetState {
    rng: ChaCha8Rng,
    rules: BTreeMap<String, NetRule>,
    /// Derived from `rules`, `n * n`, indexed `from * n + to`.
    blocked: Vec<bool>,
    loss: Vec<f64>,
    extra_ns: Vec<u64>,
    stats: NetStats,
    /// Messages routed and not yet landed, bounded by [`IN_FLIGHT_MAX`].
    in_flight: usize,
    /// Rule key -> the fault (its index in the fault book) that set it.
    rule_owner: BTreeMap<String, usize>,
    /// Fault -> messages its rules cut, lost and delayed.
    effects: BTreeMap<usize, [u64; 3]>,
}

/// Which of a rule's effects a message met.
#[derive(Clone, Copy)]
enum Met {
    Cut = 0,
    Lost = 1,
    Delayed = 2,
}

impl NetState {
    /// Credits the faults whose rules of `kind` cover `a -> b` (only the
    /// faults' own rules; a few are in force at a time).
    fn credit(&mut self, a: NodeId, b: NodeId, kind: Met) {
        for (key, rule) in &self.rules {
            let (from, to, matches) = match rule {
                NetRule::Block { from, to } => (from, to, matches!(kind, Met::Cut)),
                NetRule::Loss { from, to, .. } => (from, to, matches!(kind, Met::Lost)),
                NetRule::Delay { from, to, .. } => (from, to, matches!(kind, Met::Delayed)),
            };
            if matches && from.contains(&a) && to.contains(&b) {
                if let Some(&i) = self.rule_owner.get(key) {
                    self.effects.entry(i).or_default()[kind as usize] += 1;
                }
            }
        }
    }
}

/// Messages the whole network may carry at once (routed, not yet arrived).
/// A send beyond it is dropped as `in-flight-full`.
pub const IN_FLIGHT_MAX: usize = 1 << 20;

/// A node's transport for one protocol: the incarnation that bound it and
/// its shared state (type-erased; [`crate::net`] knows the type by the tag).
pub(crate) type Mailbox = (u64, Weak<dyn Any + Send + Sync>);

#[derive(Default)]
struct NodeState {
    alive: bool,
    paused: bool,
    started: bool,
    /// An operator marked it for removal (`node-drain`): its processes
    /// read it ([`NodeCtx::draining`]) and it lasts across restarts.
    draining: bool,
    incarnation: u64,
    madsim_id: Option<madsim::task::NodeId>,
    main: Option<NodeMain>,
}

struct Inner {
    seed: u64,
    topo: Topology,
    net: Mutex<NetState>,
    nodes: Mutex<Vec<NodeState>>,
    clocks: Mutex<Vec<ClockState>>,
    disks: Vec<Arc<Mutex<DiskState>>>,
    cpus: Vec<Arc<Mutex<CpuState>>>,
    log: Mutex<EventLog>,
    book: Mutex<FaultBook>,
    /// (node, protocol tag) -> the transport that receives there.
    mailboxes: Mutex<BTreeMap<(u32, u16), Mailbox>>,
}

/// Cheap to clone; all clones are the same world.
#[derive(Clone)]
pub struct World(Arc<Inner>);

impl World {
    /// A world for one run. `keep_events` keeps the event log in memory for
    /// divergence reports (check-determinism).
    pub fn new(seed: u64, topo: Topology, disk: DiskConfig, keep_events: bool) -> World {
        let n = topo.nodes().len();
        let disks = topo
            .nodes()
            .iter()
            .map(|info| Arc::new(Mutex::new(DiskState::new(disk.clone(), rng::stream(seed, &format!("disk/{}", info.name))))))
            .collect();
        let cpus = (0..n).map(|_| Arc::new(Mutex::new(CpuState::new(CpuConfig::default())))).collect();
        let w = World(Arc::new(Inner {
            seed,
            net: Mutex::new(NetState {
                rng: rng::stream(seed, "net"),
                rules: BTreeMap::new(),
                blocked: vec![false; n * n],
                loss: vec![0.0; n * n],
                extra_ns: vec![0; n * n],
                stats: NetStats::default(),
                in_flight: 0,
                rule_owner: BTreeMap::new(),
                effects: BTreeMap::new(),
            }),
            nodes: Mutex::new((0..n).map(|_| NodeState::default()).collect()),
            clocks: Mutex::new(vec![ClockState::default(); n]),
            disks,
            cpus,
            log: Mutex::new(EventLog::new(keep_events)),
            book: Mutex::new(FaultBook::default()),
            mailboxes: Mutex::new(BTreeMap::new()),
            topo,
        }));
        w.derive_net();
        w
    }

    pub fn seed(&self) -> u64 {
        self.0.seed
    }
    pub fn topology(&self) -> &Topology {
        &self.0.topo
    }

    /// A random stream for `purpose`, derived from the run's seed.
    pub fn rng(&self, purpose: &str) -> ChaCha8Rng {
        rng::stream(self.0.seed, purpose)
    }

    pub fn record(&self, e: Event) {
        self.0.log.lock().expect("log lock").record(e);
    }
    pub fn digest(&self) -> Digest {
        self.0.log.lock().expect("log lock").digest()
    }
    pub fn take_events(&self) -> Vec<Event> {
        self.0.log.lock().expect("log lock").take_kept()
    }

    /// Adds a note to the event log (engine decisions worth hashing).
    pub fn note(&self, node: NodeId, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(target: "sim::note", at = %time::now(), node = %self.0.topo.node(node).name, "{text}");
        self.record(Event::Note { at: time::now(), node: node.0, text });
    }

    pub fn disk(&self, node: NodeId) -> Disk {
        Disk::new(self.0.disks[node.index()].clone(), self.clone(), node.0)
    }
    pub fn cpu(&self, node: NodeId) -> Cpu {
        Cpu::new(self.0.cpus[node.index()].clone())
    }
    /// Gives `node` a CPU of this shape (before the run; its statistics
    /// start over).
    pub fn configure_cpu(&self, node: NodeId, cfg: CpuConfig) {
        *self.0.cpus[node.index()].lock().expect("cpu lock") = CpuState::new(cfg);
    }
    /// Runs `node`'s CPU at `permille` of its speed (1000 = healthy).
    pub fn set_cpu_speed(&self, node: NodeId, permille: u32) {
        self.0.cpus[node.index()].lock().expect("cpu lock").set_speed(permille);
    }
    pub fn clock(&self, node: NodeId) -> Clock {
        Clock::new(self.clone(), node)
    }
    pub(crate) fn clock_state(&self, node: NodeId) -> ClockState {
        self.0.clocks.lock().expect("clock lock")[node.index()]
    }
    /// A reading of `node`'s clock that was off true time (for the fault
    /// that moved it).
    pub(crate) fn clock_read_moved(&self, node: NodeId) {
        self.book().clock_read_moved(node);
    }
    pub(crate) fn update_clock(&self, node: NodeId, f: impl FnOnce(&mut ClockState)) {
        f(&mut self.0.clocks.lock().expect("clock lock")[node.index()])
    }

    pub fn ip(node: NodeId) -> IpAddr {
        let i = node.0 + 1;
        IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8))
    }

    fn nodes(&self) -> MutexGuard<'_, Vec<NodeState>> {
        self.0.nodes.lock().expect("nodes lock")
    }

    pub fn is_alive(&self, node: NodeId) -> bool {
        self.nodes()[node.index()].alive
    }
    pub fn is_paused(&self, node: NodeId) -> bool {
        self.nodes()[node.index()].paused
    }
    /// Whether its process runs or ran (a spare has not, until added).
    pub fn is_launched(&self, node: NodeId) -> bool {
        self.nodes()[node.index()].madsim_id.is_some()
    }
    pub fn is_draining(&self, node: NodeId) -> bool {
        self.nodes()[node.index()].draining
    }
    /// Marks a node for removal (see [`NodeCtx::draining`]).
    pub fn drain_node(&self, node: NodeId) {
        self.nodes()[node.index()].draining = true;
        self.note(node, "drain");
    }
    pub fn incarnation(&self, node: NodeId) -> u64 {
        self.nodes()[node.index()].incarnation
    }

    /// Creates the madsim node for `node` and runs `main` on it; `main` runs
    /// again on every restart, with the disk as the crash left it. A spare
    /// node's `main` waits for [`World::add_node`].
    pub fn start_node<F, Fut>(&self, node: NodeId, main: F)
    where
        F: Fn(NodeCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let main: NodeMain = Arc::new(move |ctx| Box::pin(main(ctx)));
        {
            let mut nodes = self.nodes();
            let st = &mut nodes[node.index()];
            assert!(!st.started, "node {} started twice", self.0.topo.node(node).name);
            st.started = true;
            st.main = Some(main);
        }
        if !self.0.topo.node(node).spare {
            self.launch(node);
        }
    }

    /// Whether a spare node waits for [`World::add_node`].
    pub fn is_waiting(&self, node: NodeId) -> bool {
        let nodes = self.nodes();
        let st = &nodes[node.index()];
        st.main.is_some() && st.madsim_id.is_none()
    }

    /// Starts a spare node's process (`node-add`).
    pub fn add_node(&self, node: NodeId) {
        assert!(self.is_waiting(node), "node {} is not a waiting spare", self.0.topo.node(node).name);
        self.launch(node);
    }

    fn launch(&self, node: NodeId) {
        let main = {
            let mut nodes = self.nodes();
            let st = &mut nodes[node.index()];
            st.alive = true;
            st.main.clone().expect("registered")
        };
        let world = self.clone();
        let handle = madsim::runtime::Handle::current();
        let h = handle
            .create_node()
            .name(self.0.topo.node(node).name.clone())
            .ip(Self::ip(node))
            .init(move || {
                let ctx = NodeCtx { world: world.clone(), id: node };
                let main = main.clone();
                async move { main(ctx).await }
            })
            .build();
        self.nodes()[node.index()].madsim_id = Some(h.id());
        self.note(node, "start");
    }

    /// Ends the run: kills every node's processes and forgets their mains,
    /// with no event and no effect on the disks, so that their tasks and
    /// what those hold are freed with the run (a sweep runs thousands in
    /// one process). Nothing may be observed of the world after it.
    pub fn shutdown(&self) {
        let ids: Vec<madsim::task::NodeId> = {
            let mut nodes = self.nodes();
            for n in nodes.iter_mut() {
                n.main = None;
                n.alive = false;
            }
            nodes.iter().filter_map(|n| n.madsim_id).collect()
        };
        let handle = madsim::runtime::Handle::current();
        for id in ids {
            handle.kill(id);
        }
    }

    fn madsim_id(&self, node: NodeId) -> Option<madsim::task::NodeId> {
        self.nodes()[node.index()].madsim_id
    }

    /// Kills the node's processes and applies a crash to its disk.
    pub fn crash_node(&self, node: NodeId) {
        let id = self.madsim_id(node).expect("crash of a node that was never started");
        {
            let mut nodes = self.nodes();
            nodes[node.index()].alive = false;
            nodes[node.index()].paused = false;
        }
        madsim::runtime::Handle::current().kill(id);
        self.disk(node).crash();
        self.0.cpus[node.index()].lock().expect("cpu lock").crash(time::now());
    }

    /// Restarts a crashed node from its disk.
    pub fn restart_node(&self, node: NodeId) {
        let id = self.madsim_id(node).expect("restart of a node that was never started");
        {
            let mut nodes = self.nodes();
            let st = &mut nodes[node.index()];
            st.alive = true;
            st.paused = false;
            st.incarnation += 1;
        }
        madsim::runtime::Handle::current().restart(id);
    }

    pub fn pause_node(&self, node: NodeId) {
        let id = self.madsim_id(node).expect("pause of a node that was never started");
        self.nodes()[node.index()].paused = true;
        madsim::runtime::Handle::current().pause(id);
    }

    pub fn resume_node(&self, node: NodeId) {
        let id = self.madsim_id(node).expect("resume of a node that was never started");
        self.nodes()[node.index()].paused = false;
        madsim::runtime::Handle::current().resume(id);
    }

    // ---- network ---------------------------------------------------------

    fn net(&self) -> MutexGuard<'_, NetState> {
        self.0.net.lock().expect("net lock")
    }

    /// Installs (or replaces) the network rule named `key`; its effects
    /// count for the fault being applied, if any.
    pub fn set_rule(&self, key: &str, rule: NetRule) {
        let owner = self.book().current();
        {
            let mut net = self.net();
            net.rules.insert(key.to_string(), rule);
            match owner {
                Some(i) => net.rule_owner.insert(key.to_string(), i),
                None => net.rule_owner.remove(key),
            };
        }
        self.derive_net();
    }

    /// Removes the rule named `key`; false if there was none.
    pub fn clear_rule(&self, key: &str) -> bool {
        let had = {
            let mut net = self.net();
            net.rule_owner.remove(key);
            net.rules.remove(key).is_some()
        };
        self.derive_net();
        had
    }

    pub(crate) fn book(&self) -> MutexGuard<'_, FaultBook> {
        self.0.book.lock().expect("fault book lock")
    }

    /// What each fault applied so far did ([`World::apply`]'s calls in order,
    /// refused ones included, with no effect).
    pub fn fault_effects(&self) -> Vec<FaultEffect> {
        let net = self.net().effects.clone();
        self.book().effects(&net, |n| self.disk(n).stats().faults(), |n| self.cpu_slowed_jobs(n))
    }

    pub(crate) fn cpu_slowed_jobs(&self, node: NodeId) -> u64 {
        self.0.cpus[node.index()].lock().expect("cpu lock").slowed_jobs()
    }

    pub fn has_rule(&self, key: &str) -> bool {
        self.net().rules.contains_key(key)
    }

    fn derive_net(&self) {
        let n = self.0.topo.nodes().len();
        let mut net = self.net();
        let mut blocked = vec![false; n * n];
        let mut keep = vec![1.0f64; n * n];
        let mut extra = vec![0u64; n * n];
        for rule in net.rules.values() {
            let (from, to) = match rule {
                NetRule::Block { from, to } | NetRule::Loss { from, to, .. } | NetRule::Delay { from, to, .. } => (from, to),
            };
            for &a in from {
                for &b in to {
                    let i = a.index() * n + b.index();
                    match rule {
                        NetRule::Block { .. } => blocked[i] = true,
                        NetRule::Loss { rate, .. } => keep[i] *= 1.0 - rate.clamp(0.0, 1.0),
                        NetRule::Delay { extra: d, .. } => extra[i] += d.as_nanos() as u64,
                    }
                }
            }
        }
        net.blocked = blocked;
        net.loss = keep.into_iter().map(|k| 1.0 - k).collect();
        net.extra_ns = extra;
    }

    /// Decides a message's fate at send time: its model delivery time, or
    /// why it vanished.
    pub(crate) fn route(&self, from: NodeId, to: NodeId) -> Result<SimTime, &'static str> {
        let alive = self.is_alive(to);
        let n = self.0.topo.nodes().len();
        let link = self.0.topo.link(from, to);
        let mut net = self.net();
        net.stats.sent += 1;
        let i = from.index() * n + to.index();
        let verdict = if !alive {
            Err("dead")
        } else if net.blocked[i] {
            net.credit(from, to, Met::Cut);
            Err("cut")
        } else if net.in_flight >= IN_FLIGHT_MAX {
            Err("in-flight-full")
        } else {
            let p = 1.0 - (1.0 - link.loss) * (1.0 - net.loss[i]);
            if p > 0.0 && net.rng.random_bool(p.min(1.0)) {
                // Lost to the link's own loss or a rule's: counted for the
                // rule (exact where links lose nothing by themselves).
                if net.loss[i] > 0.0 {
                    net.credit(from, to, Met::Lost);
                }
                Err("lost")
            } else {
                let jitter = if link.jitter.is_zero() { 0 } else { net.rng.random_range(0..=link.jitter.as_nanos() as u64) };
                net.in_flight += 1;
                if net.extra_ns[i] > 0 {
                    net.credit(from, to, Met::Delayed);
                }
                Ok(time::now() + link.latency + Duration::from_nanos(jitter + net.extra_ns[i]))
            }
        };
        if let Err(reason) = verdict {
            *net.stats.dropped.entry(reason).or_default() += 1;
        }
        verdict
    }

    /// A routed message arrives on `from -> to`: whether it is still let
    /// through (the link may have been cut, the receiver may have died while
    /// it flew); counts it as delivered or dropped.
    pub(crate) fn land(&self, from: NodeId, to: NodeId) -> Result<(), &'static str> {
        let alive = self.is_alive(to);
        let n = self.0.topo.nodes().len();
        let mut net = self.net();
        net.in_flight -= 1;
        let verdict = if net.blocked[from.index() * n + to.index()] {
            net.credit(from, to, Met::Cut);
            Err("cut")
        } else if !alive {
            Err("dead")
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) => net.stats.delivered += 1,
            Err(reason) => *net.stats.dropped.entry(reason).or_default() += 1,
        }
        verdict
    }

    /// Registers the transport of protocol `tag` on `node` for the node's
    /// current incarnation; false if that incarnation already bound it.
    pub(crate) fn bind_mailbox(&self, node: NodeId, tag: u16, shared: Weak<dyn Any + Send + Sync>) -> bool {
        let incarnation = self.incarnation(node);
        let mut boxes = self.0.mailboxes.lock().expect("mailboxes lock");
        if let Some((inc, old)) = boxes.get(&(node.0, tag)) {
            if *inc == incarnation && old.strong_count() > 0 {
                return false;
            }
        }
        boxes.insert((node.0, tag), (incarnation, shared));
        true
    }

    /// The live transport of protocol `tag` on `node`, if one is bound.
    pub(crate) fn mailbox(&self, node: NodeId, tag: u16) -> Option<Arc<dyn Any + Send + Sync>> {
        self.0.mailboxes.lock().expect("mailboxes lock").get(&(node.0, tag)).and_then(|(_, w)| w.upgrade())
    }

    /// An admitted message that nobody could take after all.
    pub(crate) fn reclassify_as_dropped(&self, reason: &'static str) {
        let mut net = self.net();
        net.stats.delivered -= 1;
        *net.stats.dropped.entry(reason).or_default() += 1;
    }

    pub fn net_stats(&self) -> NetStats {
        self.net().stats.clone()
    }
}

/// What a node's code receives: its identity and its doors to the world.
#[derive(Clone)]
pub struct NodeCtx {
    pub world: World,
    pub id: NodeId,
}

impl NodeCtx {
    pub fn name(&self) -> &str {
        &self.world.topology().node(self.id).name
    }
    pub fn clock(&self) -> Clock {
        self.world.clock(self.id)
    }
    pub fn disk(&self) -> Disk {
        self.world.disk(self.id)
    }
    pub fn cpu(&self) -> Cpu {
        self.world.cpu(self.id)
    }
    /// A random stream for `purpose` on this node, new for each incarnation.
    pub fn rng(&self, purpose: &str) -> ChaCha8Rng {
        self.world.rng(&format!("node/{}/{}/{}", self.name(), self.world.incarnation(self.id), purpose))
    }
    pub fn note(&self, text: impl Into<String>) {
        self.world.note(self.id, text)
    }
    /// Whether an operator marked this node for removal (`node-drain`):
    /// its services give their work to others.
    pub fn draining(&self) -> bool {
        self.world.is_draining(self.id)
    }
}
