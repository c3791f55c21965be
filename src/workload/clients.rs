//! The workloads on the client nodes: every workload's processes (and the
//! hotspots') spread over the client nodes, and what one client node runs
//! once its deployment has bound the service's client there
//! ([`ClientNode::run_kv`], [`ClientNode::run_streams`]).
//!
//! A process gets its id from its client node's incarnation, so a
//! restarted client node starts fresh processes (those whose time has not
//! passed); the first client node also reads everything back in the final
//! phase, once the runner has said what to read. A process's start and
//! stop are relative to the main phase, which begins once the service is
//! set up: a client node starts its processes when the runner has said
//! when that is ([`Clients::begin_main`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::stream::client::StreamClient;
use sim::time::{self, SimTime};
use sim::topology::NodeId;
use sim::world::NodeCtx;

use super::badreq::BadLog;
use super::kv::{self, KeyChooser, KvService, ProcessSpec};
use super::stream::{self, SharedEnds, SharedProgress, StreamProcessSpec};
use super::{SharedHistory, SERVICE_STARTUP};
use crate::scenario::{Scenario, WorkloadKind};

/// Process ids of a restarted client node start at `incarnation * this`.
const PROCESS_ID_STRIDE: u64 = 1_000_000;
/// An open-loop process's lanes are history processes `process + l * this`
/// (l = 1, 2, ...), far above every process id.
const LANE_ID_STRIDE: u64 = 1 << 32;
/// The operation timeout of a run without workloads.
const OP_TIMEOUT_DEFAULT: Duration = Duration::from_millis(500);
/// How often a client node bound before the main phase looks whether it
/// has begun.
const MAIN_START_POLL: Duration = Duration::from_millis(5);

/// The client side of a run, shared by every client node: which processes
/// ran where, and the final read-back's turn.
pub struct Clients {
    /// When the main phase began (the service set up), once it has.
    main_start: Mutex<Option<SimTime>>,
    final_keys: Mutex<Option<Vec<String>>>,
    final_done: AtomicBool,
    /// Every process started: its client node and that node's incarnation.
    processes: Mutex<BTreeMap<u64, (NodeId, u64)>>,
    /// The workload (or `hotspot<i>`) of every process started.
    workloads: Mutex<BTreeMap<u64, String>>,
    /// Streams: when each stream last had an append acknowledged, over all
    /// processes (the workload's view, not the system's).
    stream_progress: SharedProgress,
    /// Open-loop arrivals and sheds.
    offered: kv::OfferedLog,
}

impl Clients {
    /// Every process started so far: its client node and that node's
    /// incarnation then.
    pub fn processes(&self) -> Vec<(u64, (NodeId, u64))> {
        self.processes.lock().expect("control").iter().map(|(&p, &n)| (p, n)).collect()
    }

    /// The workload (or `hotspot<i>`) of every process started so far.
    pub fn workloads(&self) -> BTreeMap<u64, String> {
        self.workloads.lock().expect("control").clone()
    }

    /// Starts the main phase at `at`: the client nodes start their
    /// processes, their windows counted from it.
    pub fn begin_main(&self, at: SimTime) {
        *self.main_start.lock().expect("control") = Some(at);
    }

    /// When the main phase began, once the runner has said (a client node
    /// bound before waits for it).
    async fn main_start(&self) -> SimTime {
        loop {
            if let Some(at) = *self.main_start.lock().expect("control") {
                return at;
            }
            time::sleep(MAIN_START_POLL).await;
        }
    }

    /// Starts the final phase: the first client node reads these keys (or
    /// streams) back.
    pub fn read_back(&self, keys: Vec<String>) {
        *self.final_keys.lock().expect("control") = Some(keys);
    }

    /// Whether the final read-back is done.
    pub fn final_done(&self) -> bool {
        self.final_done.load(Ordering::SeqCst)
    }

    /// Open-loop arrivals and arrivals shed at the client, per second.
    pub fn offered(&self) -> std::collections::BTreeMap<u64, (u64, u64)> {
        self.offered.snapshot()
    }

    /// The processes of a plan this incarnation of the node still runs,
    /// once the main phase has begun: each gets its id (from the node's
    /// incarnation), its window moved from the main phase's time to the
    /// world's and starting no earlier than now, and is registered; those
    /// whose window has passed are left out. `window` gives a spec's
    /// start and stop (to move) and its workload's name.
    async fn starting<T>(&self, ctx: &NodeCtx, plan: &[(u64, Make<T>)], window: impl Fn(&mut T) -> (&mut Duration, &mut Duration, String)) -> Vec<(u64, T)> {
        let main_start = self.main_start().await.as_duration();
        let incarnation = ctx.world.incarnation(ctx.id);
        let now = time::now().as_duration();
        let mut out = Vec::new();
        for (index, make) in plan {
            let process = incarnation * PROCESS_ID_STRIDE + index;
            let mut spec = make(process);
            let (start, stop, workload) = window(&mut spec);
            *start = (main_start + *start).max(now);
            *stop += main_start;
            if *start >= *stop {
                continue;
            }
            self.processes.lock().expect("control").insert(process, (ctx.id, incarnation));
            self.workloads.lock().expect("control").insert(process, workload);
            out.push((process, spec));
        }
        out
    }

    /// The final reader's process id on this node, once the main phase has
    /// ended and the keys (or streams) to read back are known.
    async fn final_reader(&self, node: NodeId, incarnation: u64) -> (u64, Vec<String>) {
        let keys = loop {
            if let Some(k) = self.final_keys.lock().expect("control").clone() {
                break k;
            }
            time::sleep(Duration::from_millis(5)).await;
        };
        let process = incarnation * PROCESS_ID_STRIDE + (PROCESS_ID_STRIDE - 1);
        self.processes.lock().expect("control").insert(process, (node, incarnation));
        (process, keys)
    }

    /// The final reader's processes, `lanes` of them (the stream read-back
    /// reads that many streams at once, one process each), and the streams.
    async fn final_readers(&self, node: NodeId, incarnation: u64, lanes: u64) -> (Vec<u64>, Vec<String>) {
        let (first, keys) = self.final_reader(node, incarnation).await;
        let processes: Vec<u64> = (0..lanes).map(|k| first - k).collect();
        let mut known = self.processes.lock().expect("control");
        for &p in &processes {
            known.insert(p, (node, incarnation));
        }
        (processes, keys)
    }
}

/// Builds a process's spec from its process id (which depends on the
/// client node's incarnation).
type Make<T> = Arc<dyn Fn(u64) -> T + Send + Sync>;
type MakeSpec = Make<ProcessSpec>;
type MakeStreamSpec = Make<StreamProcessSpec>;

#[derive(Clone)]
struct ClientPlan {
    /// (global process index, spec without the process id).
    processes: Vec<(u64, MakeSpec)>,
    streams: Vec<(u64, MakeStreamSpec)>,
    final_reader: bool,
}

/// What one client node runs: its share of the processes and, on the
/// first client node, the final read-back. Its deployment binds the
/// service's client on the node and hands it over.
#[derive(Clone)]
pub struct ClientNode {
    plan: ClientPlan,
    history: SharedHistory,
    clients: Arc<Clients>,
    /// The first workload's operation timeout (500 ms without workloads).
    pub op_timeout: Duration,
    /// Where bad requests are logged (when a workload sends them).
    pub bad_requests: Option<BadLog>,
}

/// Spreads the processes of every workload and hotspot of `scn` over
/// `nodes` client nodes, in process order; each records into `history`.
pub fn spread(scn: &Scenario, nodes: usize, history: &SharedHistory, bad_requests: Option<BadLog>) -> (Arc<Clients>, Vec<ClientNode>) {
    let mut plans: Vec<ClientPlan> = (0..nodes).map(|i| ClientPlan { processes: Vec::new(), streams: Vec::new(), final_reader: i == 0 }).collect();
    let mut next_process = 0u64;
    let offered = kv::OfferedLog::default();
    let op_timeout = scn.workloads.first().map(|w| w.timeout.0).unwrap_or(OP_TIMEOUT_DEFAULT);
    for w in scn.workloads.iter().filter(|w| w.kind == WorkloadKind::Stream) {
        let def = Arc::new(w.clone());
        for i in 0..u64::from(w.clients) {
            let def = def.clone();
            let duration = scn.duration;
            let stream = stream::stream_name(&w.name, i % w.keys);
            let make: MakeStreamSpec = Arc::new(move |process| StreamProcessSpec {
                process,
                def: def.clone(),
                stream: stream.clone(),
                rate: def.rate / f64::from(def.clients),
                start: SERVICE_STARTUP,
                stop: duration,
            });
            // The j-th process of stream k runs on client node (k + j) mod n,
            // so the processes sharing a stream sit in different zones and a
            // zone fault never takes every candidate writer of a stream.
            let node = ((i % w.keys) + i / w.keys) as usize % nodes;
            plans[node].streams.push((next_process, make));
            next_process += 1;
        }
    }
    for w in scn.workloads.iter().filter(|w| w.kind == WorkloadKind::Kv) {
        let def = Arc::new(w.clone());
        let chooser = Arc::new(KeyChooser::new(w.keys, w.distribution, w.zipf_theta));
        for _ in 0..w.clients {
            let (def, chooser, offered) = (def.clone(), chooser.clone(), offered.clone());
            let duration = scn.duration;
            let make: MakeSpec = Arc::new(move |process| ProcessSpec {
                process,
                workload: def.name.clone(),
                rate: def.rate / f64::from(def.clients),
                def: def.clone(),
                chooser: chooser.clone(),
                hot: None,
                start: SERVICE_STARTUP,
                stop: duration,
                lanes: if def.open_loop { (1..=u64::from(def.outstanding_max)).map(|l| process + l * LANE_ID_STRIDE).collect() } else { Vec::new() },
                offered: def.open_loop.then(|| offered.clone()),
            });
            plans[(next_process as usize) % nodes].processes.push((next_process, make));
            next_process += 1;
        }
    }
    // The hotspots add load to the keys of their instance's first
    // workload: those of one instance share one key chooser (a Zipf table
    // can be large).
    let mut hot_choosers: BTreeMap<Option<String>, Arc<KeyChooser>> = BTreeMap::new();
    for (i, h) in scn.hotspots.iter().enumerate() {
        let Some(base) = scn.workloads.iter().find(|w| w.instance == h.instance) else { break };
        let chooser = hot_choosers.entry(h.instance.clone()).or_insert_with(|| Arc::new(KeyChooser::new(base.keys, base.distribution, base.zipf_theta))).clone();
        let def = Arc::new(base.clone());
        for _ in 0..h.clients {
            let (def, chooser, h) = (def.clone(), chooser.clone(), h.clone());
            let make: MakeSpec = Arc::new(move |process| ProcessSpec {
                process,
                workload: format!("hotspot{i}"),
                rate: h.rate / f64::from(h.clients),
                def: def.clone(),
                chooser: chooser.clone(),
                hot: Some((h.op, h.lo, h.hi)),
                start: h.at.max(SERVICE_STARTUP),
                stop: h.until,
                lanes: Vec::new(),
                offered: None,
            });
            plans[(next_process as usize) % nodes].processes.push((next_process, make));
            next_process += 1;
        }
    }
    let clients = Arc::new(Clients {
        main_start: Mutex::new(None),
        final_keys: Mutex::new(None),
        final_done: AtomicBool::new(false),
        processes: Mutex::new(BTreeMap::new()),
        workloads: Mutex::new(BTreeMap::new()),
        stream_progress: Arc::new(Mutex::new(BTreeMap::new())),
        offered,
    });
    let nodes = plans.into_iter().map(|plan| ClientNode { plan, history: history.clone(), clients: clients.clone(), op_timeout, bad_requests: bad_requests.clone() }).collect();
    (clients, nodes)
}

impl ClientNode {
    /// Whether this is the first client node (the one that reads back and,
    /// for a service that needs it, sets the service up).
    pub fn is_first(&self) -> bool {
        self.plan.final_reader
    }

    /// Runs this node's key-value processes (and the final reader, on the
    /// first client node) against `client`.
    pub async fn run_kv<S: KvService + 'static>(self, ctx: NodeCtx, client: S) {
        let incarnation = ctx.world.incarnation(ctx.id);
        for (process, spec) in self.clients.starting(&ctx, &self.plan.processes, |s| (&mut s.start, &mut s.stop, s.workload.clone())).await {
            // An open-loop process's lanes are processes of the node too.
            for &lane in &spec.lanes {
                self.clients.processes.lock().expect("control").insert(lane, (ctx.id, incarnation));
                self.clients.workloads.lock().expect("control").insert(lane, spec.workload.clone());
            }
            let rng = ctx.world.rng(&format!("workload/{}/{process}", spec.workload));
            madsim::task::spawn_local(kv::run_process(ctx.world.clone(), client.for_process(process), self.history.clone(), spec, rng));
        }
        if self.plan.final_reader {
            let (process, keys) = self.clients.final_reader(ctx.id, incarnation).await;
            kv::final_reads(&ctx.world, &client, &self.history, process, keys).await;
            self.clients.final_done.store(true, Ordering::SeqCst);
        }
        // Keep the node's transport alive while its processes run.
        std::future::pending::<()>().await;
    }

    /// Runs this node's stream processes (and the final reader, on the
    /// first client node) through `client`.
    pub async fn run_streams(self, ctx: NodeCtx, client: StreamClient) {
        let incarnation = ctx.world.incarnation(ctx.id);
        let ends: SharedEnds = Arc::new(Mutex::new(BTreeMap::new()));
        for (process, spec) in self.clients.starting(&ctx, &self.plan.streams, |s| (&mut s.start, &mut s.stop, s.def.name.clone())).await {
            let rng = ctx.world.rng(&format!("workload/{}/{process}", spec.def.name));
            madsim::task::spawn(stream::run_process(ctx.world.clone(), client.clone(), self.history.clone(), spec, ends.clone(), self.clients.stream_progress.clone(), rng));
        }
        if self.plan.final_reader {
            let (processes, streams) = self.clients.final_readers(ctx.id, incarnation, stream::FINAL_LANES).await;
            stream::final_reads(&ctx.world, &client, &self.history, &processes, streams, self.op_timeout).await;
            self.clients.final_done.store(true, Ordering::SeqCst);
        }
        std::future::pending::<()>().await;
    }
}
