//! Runs a scenario: one seed, one fresh thread, one madsim runtime.
//!
//! Phases: the main phase runs the workloads while the fault timeline plays;
//! at the scenario's end every fault still in place is healed, and the final
//! phase reads back every key the run wrote (retrying until each answers or
//! [`FINAL_PHASE_MAX`] passes). The run returns what it observed; checking
//! and reporting happen outside the simulation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::minikv::{self, KvClient, KvMsg, ServerConfig};
use engine::stream::client::StreamClient;
use engine::stream::{StreamConfig, StreamObserver};
use sim::disk::DiskStats;
use sim::log::{Digest, Event};
use sim::net::Net;
use sim::time::{self, SimTime};
use sim::world::{NetStats, NodeCtx, World};

use crate::badreq::{BadLog, BadLogData};
use crate::scenario::{heal_all, is_dynamic_zone, Scenario, ServiceKind, WorkloadKind, DEFAULT_PARTITIONS, MASTER_ROLE as TABLE_MASTER_ROLE, MASTER_ZONE, META_LEADER, PROXY_ROLE, STORAGE_ROLE};
use crate::tableload::{self, TableKv};
use crate::workload::KvService;
use engine::table::client::TableClient;
use engine::table::{TableConfig, TableObserver};
use sim::fault::Fault;
use crate::streamload::{self, SharedEnds, StreamProcessSpec};
use crate::history::{History, Kind, Op};
use crate::workload::{self, KeyChooser, ProcessSpec, SharedHistory};

/// Longest the final phase may take (model time) before the run ends anyway.
pub const FINAL_PHASE_MAX: Duration = Duration::from_secs(120);
/// Workloads start this long after the world: servers recover their disks
/// and bind their transports first (a request before that vanishes).
pub const SERVICE_STARTUP: Duration = Duration::from_millis(10);
/// Slack after the longest operation timeout before the final phase.
const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(1);
/// Stream scenarios: after the final phase, the longest the run waits for
/// every extent to have three replicas in three zones again.
pub const SETTLE_MAX: Duration = Duration::from_secs(30);
/// The error of an operation whose client process crashed while it was open.
pub const CLIENT_CRASHED: &str = "client process crashed with the operation open";
/// Process ids of a restarted client node start at `incarnation * this`.
const PROCESS_ID_STRIDE: u64 = 1_000_000;

#[derive(Clone, Default)]
pub struct RunOptions {
    /// Keep the event log in memory (for divergence reports).
    pub keep_events: bool,
    /// Called on the simulation thread when the main phase ends (the bench
    /// reads the thread's CPU time there); it must not touch the world.
    pub on_main_end: Option<MainEndHook>,
}

/// See [`RunOptions::on_main_end`]; gets the model time.
pub type MainEndHook = Arc<dyn Fn(SimTime) + Send + Sync>;

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("keep_events", &self.keep_events).field("on_main_end", &self.on_main_end.is_some()).finish()
    }
}

#[derive(Clone, Debug)]
pub struct AppliedFault {
    pub at: SimTime,
    pub text: String,
    /// Why the world refused it, if it did.
    pub error: Option<String>,
}

pub struct RunOutput {
    pub seed: u64,
    pub digest: Digest,
    /// Every client operation; processes that died leave theirs open.
    pub history: History,
    pub faults: Vec<AppliedFault>,
    /// When the last fault was healed (zero when there were none).
    pub heal_at: SimTime,
    /// When the main phase ended and the final phase began.
    pub main_end: SimTime,
    pub end: SimTime,
    pub final_phase_complete: bool,
    pub net: NetStats,
    pub disk: DiskStats,
    pub events: Vec<Event>,
    /// What the stream layer observed (stream and table scenarios).
    pub streams: Option<StreamObserver>,
    /// What the table service observed (table scenarios only).
    pub table: Option<TableObserver>,
    /// What the bad requests met (scenarios whose workloads send them).
    pub bad_requests: Option<BadLogData>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the simulation panicked: {0}")]
    Panicked(String),
}

/// Stack of a simulation thread (the engine's futures nest deeply).
pub const SIM_THREAD_STACK: usize = 64 << 20;

/// Runs `scn` with `seed` on a fresh thread (std's `HashMap` order and
/// madsim's state are only deterministic on a fresh thread).
pub fn run(scn: &Scenario, seed: u64, opts: &RunOptions) -> Result<RunOutput, RunError> {
    let scn = scn.clone();
    let opts = opts.clone();
    #[allow(clippy::disallowed_methods)] // one OS thread per runtime, outside the simulation
    let handle = std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .stack_size(SIM_THREAD_STACK)
        .spawn(move || run_on_this_thread(scn, seed, opts))
        .expect("spawn simulation thread");
    handle.join().map_err(|p| {
        let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "unknown panic".into());
        RunError::Panicked(msg)
    })
}

/// The body of [`run`]: one madsim runtime on the calling thread, which
/// must be a fresh thread with a [`SIM_THREAD_STACK`] stack (the bench
/// calls it to measure the thread's CPU time); panics propagate.
pub fn run_on_this_thread(scn: Scenario, seed: u64, opts: RunOptions) -> RunOutput {
    let mut cfg = madsim::Config::default();
    // madsim's own link delay is folded into the modeled latency by the
    // receiver; keep it tiny so it never exceeds a modeled hop.
    cfg.net.send_latency = Duration::from_micros(1)..Duration::from_micros(2);
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, cfg);
    rt.block_on(simulate(scn, seed, opts))
}

struct Control {
    final_keys: Mutex<Option<Vec<String>>>,
    final_done: AtomicBool,
    /// Every process started: its client node and that node's incarnation.
    processes: Mutex<BTreeMap<u64, (sim::NodeId, u64)>>,
    /// Streams: when each stream last had an append acknowledged, over all
    /// processes (the workload's view, not the system's).
    stream_progress: streamload::SharedProgress,
    /// Table service: the instance and the table exist.
    table_ready: AtomicBool,
}

impl Control {
    /// The processes of a plan this incarnation of the node still runs:
    /// each gets its id (from the node's incarnation), starts no earlier
    /// than now, and is registered; those whose window has passed are left
    /// out. `window` gives a spec's start (to move) and stop.
    fn starting<T>(&self, ctx: &NodeCtx, plan: &[(u64, Make<T>)], window: impl Fn(&mut T) -> (&mut Duration, Duration)) -> Vec<(u64, T)> {
        let incarnation = ctx.world.incarnation(ctx.id);
        let now = time::now().as_duration();
        let mut out = Vec::new();
        for (index, make) in plan {
            let process = incarnation * PROCESS_ID_STRIDE + index;
            let mut spec = make(process);
            let (start, stop) = window(&mut spec);
            *start = (*start).max(now);
            if *start >= stop {
                continue;
            }
            self.processes.lock().expect("control").insert(process, (ctx.id, incarnation));
            out.push((process, spec));
        }
        out
    }

    /// The final reader's process id on this node, once the main phase has
    /// ended and the keys (or streams) to read back are known.
    async fn final_reader(&self, node: sim::NodeId, incarnation: u64) -> (u64, Vec<String>) {
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

/// The role of the stream managers' nodes (one per zone; the one whose
/// zone's metadata replica leads acts).
pub const MANAGER_ROLE: &str = "manager";

/// Starts the stream service: a metadata replica on every `meta` node, a
/// stream manager on every `manager` node, the extent service on every
/// `storage` node.
fn start_stream_service(world: &World, scn: &Scenario) -> StreamConfig {
    let topo = world.topology();
    let metas = topo.nodes_with_role(scn.service.meta_role());
    let storage = topo.nodes_with_role(scn.service.server_role());
    let mut cfg = StreamConfig::new(metas.clone(), storage.clone());
    if let Some(d) = scn.service.dead_after {
        cfg.dead_after = d.0;
    }
    if let Some(d) = scn.service.rereplicate_after {
        cfg.rereplicate_after = d.0;
    }
    if let Some(b) = scn.service.extent_bytes {
        cfg.extent_bytes_max = b;
    }
    for &m in &metas {
        let meta = cfg.meta.clone();
        world.start_node(m, move |ctx| engine::meta::service::serve(ctx, meta.clone()));
    }
    for &m in &topo.nodes_with_role(MANAGER_ROLE) {
        let cfg = cfg.clone();
        world.start_node(m, move |ctx| engine::stream::manager::serve_manager(ctx, cfg.clone()));
    }
    for &s in &storage {
        let cfg = cfg.clone();
        world.start_node(s, move |ctx| engine::stream::replica::serve_storage(ctx, cfg.clone()));
    }
    cfg
}

/// Starts the table service: the stream layer (metadata replicas, stream
/// managers, storage nodes), then a master on every `master` node, a table
/// server on every `table` node and a proxy on every `proxy` node.
fn start_table_service(world: &World, scn: &Scenario) -> TableConfig {
    let topo = world.topology();
    let role = |r: &str| topo.nodes_with_role(r);
    let metas = role(scn.service.meta_role());
    let meta_cfg = engine::meta::service::ServiceConfig::new(metas.clone());
    let mut cfg = TableConfig::new(meta_cfg, role(STORAGE_ROLE), role(TABLE_MASTER_ROLE), role(scn.service.server_role()), role(PROXY_ROLE));
    if let Some(d) = scn.service.dead_after {
        cfg.stream.dead_after = d.0;
    }
    if let Some(d) = scn.service.rereplicate_after {
        cfg.stream.rereplicate_after = d.0;
    }
    if let Some(b) = scn.service.extent_bytes {
        cfg.stream.extent_bytes_max = b;
    }
    // A client operation gives up (with an unknown outcome for a write)
    // after the workload's timeout.
    if let Some(t) = scn.workloads.iter().map(|w| w.timeout.0).max() {
        cfg.op_deadline = t;
    }
    for &m in &metas {
        let meta = cfg.meta();
        world.start_node(m, move |ctx| engine::meta::service::serve(ctx, meta.clone()));
    }
    for &m in &role(MANAGER_ROLE) {
        let c = cfg.stream.clone();
        world.start_node(m, move |ctx| engine::stream::manager::serve_manager(ctx, c.clone()));
    }
    for &s in &role(STORAGE_ROLE) {
        let c = cfg.stream.clone();
        world.start_node(s, move |ctx| engine::stream::replica::serve_storage(ctx, c.clone()));
    }
    for &m in &cfg.masters {
        let c = cfg.clone();
        world.start_node(m, move |ctx| engine::table::master::serve(ctx, c.clone()));
    }
    for &s in &cfg.servers {
        let c = cfg.clone();
        world.start_node(s, move |ctx| engine::table::server::serve(ctx, c.clone()));
    }
    for &p in &cfg.proxies {
        let c = cfg.clone();
        world.start_node(p, move |ctx| engine::table::proxy::serve(ctx, c.clone()));
    }
    cfg
}

async fn simulate(scn: Scenario, seed: u64, opts: RunOptions) -> RunOutput {
    let _time = sim::time::TimeScope::enter();
    let world = World::new(seed, scn.topology.clone(), scn.disk.clone(), opts.keep_events);
    let topo = world.topology().clone();
    let servers = topo.nodes_with_role(scn.service.server_role());
    let stream_cfg = match scn.service.kind {
        ServiceKind::Minikv => {
            let server_cfg = ServerConfig { group_commit_max: scn.service.group_commit_max };
            for &s in &servers {
                let cfg = server_cfg.clone();
                world.start_node(s, move |ctx| minikv::serve(ctx, cfg.clone()));
            }
            None
        }
        ServiceKind::Stream => Some(start_stream_service(&world, &scn)),
        ServiceKind::Table => None,
    };
    let table_cfg = (scn.service.kind == ServiceKind::Table).then(|| start_table_service(&world, &scn));
    let stream_cfg = stream_cfg.or_else(|| table_cfg.as_ref().map(|c| c.stream.clone()));

    // Spread the processes of every workload and hotspot over the client nodes.
    let clients = topo.nodes_with_role("client");
    let mut plans: Vec<ClientPlan> = clients.iter().enumerate().map(|(i, _)| ClientPlan { processes: Vec::new(), streams: Vec::new(), final_reader: i == 0 }).collect();
    let mut next_process = 0u64;
    let op_timeout = scn.workloads.first().map(|w| w.timeout.0).unwrap_or(Duration::from_millis(500));
    for w in scn.workloads.iter().filter(|w| w.kind == WorkloadKind::Stream) {
        let def = Arc::new(w.clone());
        for i in 0..u64::from(w.clients) {
            let def = def.clone();
            let duration = scn.duration;
            let stream = streamload::stream_name(&w.name, i % w.keys);
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
            let node = ((i % w.keys) + i / w.keys) as usize % clients.len();
            plans[node].streams.push((next_process, make));
            next_process += 1;
        }
    }
    for w in scn.workloads.iter().filter(|w| w.kind == WorkloadKind::Kv) {
        let def = Arc::new(w.clone());
        let chooser = Arc::new(KeyChooser::new(w.keys, w.distribution, w.zipf_theta));
        for _ in 0..w.clients {
            let (def, chooser) = (def.clone(), chooser.clone());
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
            });
            plans[(next_process as usize) % clients.len()].processes.push((next_process, make));
            next_process += 1;
        }
    }
    for (i, h) in scn.hotspots.iter().enumerate() {
        let Some(base) = scn.workloads.first() else { break };
        let def = Arc::new(base.clone());
        let chooser = Arc::new(KeyChooser::new(base.keys, base.distribution, base.zipf_theta));
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
            });
            plans[(next_process as usize) % clients.len()].processes.push((next_process, make));
            next_process += 1;
        }
    }

    let rec: SharedHistory = Arc::new(Mutex::new(History::new()));
    let bad_log = scn.workloads.iter().any(|w| w.bad_requests > 0.0).then(BadLog::default);
    let control = Arc::new(Control { final_keys: Mutex::new(None), final_done: AtomicBool::new(false), processes: Mutex::new(BTreeMap::new()), stream_progress: Arc::new(Mutex::new(BTreeMap::new())), table_ready: AtomicBool::new(false) });
    for (&c, plan) in clients.iter().zip(plans) {
        let (rec, control, servers) = (rec.clone(), control.clone(), servers.clone());
        match (&table_cfg, &stream_cfg) {
            (Some(cfg), _) => {
                let cfg = cfg.clone();
                let table = TableSetup {
                    keys: scn.workloads.first().map(|w| w.keys).unwrap_or(1),
                    partitions: scn.service.partitions.unwrap_or(DEFAULT_PARTITIONS),
                    bad: bad_log.clone(),
                    columns: scn.workloads.iter().map(|w| w.columns).max().unwrap_or(0),
                };
                world.start_node(c, move |ctx| table_client_main(ctx, plan.clone(), rec.clone(), control.clone(), cfg.clone(), table.clone()))
            }
            (None, None) => world.start_node(c, move |ctx| client_main(ctx, plan.clone(), rec.clone(), control.clone(), servers.clone(), op_timeout)),
            (None, Some(cfg)) => {
                let cfg = cfg.clone();
                world.start_node(c, move |ctx| stream_client_main(ctx, plan.clone(), rec.clone(), control.clone(), cfg.clone(), op_timeout))
            }
        }
    }

    // The fault timeline.
    let mut faults = Vec::new();
    let mut heal_at = SimTime::ZERO;
    let observer = stream_cfg.as_ref().map(|c| c.observer.clone());
    let table_observer = table_cfg.as_ref().map(|c| c.observer.clone());
    let mut dynamic_zones = DynamicZones { stream: observer.clone(), table: table_observer, resolved: BTreeMap::new() };
    for tf in &scn.faults {
        time::sleep_until(SimTime::from_duration(tf.at)).await;
        let (fault, text) = dynamic_zones.resolve(&tf.fault, &world);
        let r = world.apply(&fault);
        faults.push(AppliedFault { at: time::now(), text, error: r.err().map(|e| e.to_string()) });
        heal_at = time::now();
    }
    time::sleep_until(SimTime::from_duration(scn.duration)).await;
    let main_end = time::now();
    if let Some(hook) = &opts.on_main_end {
        hook(main_end);
    }
    // No operation starts after the main phase ends, and each finishes
    // within its timeout: wait them out, so that the final reads start after
    // every main-phase operation has completed (the durability checker
    // relies on it).
    let longest_timeout = scn.workloads.iter().map(|w| w.timeout.0).max().unwrap_or(Duration::ZERO);
    time::sleep(longest_timeout + IN_FLIGHT_MARGIN).await;
    for f in heal_all(&scn.faults) {
        let (f, text) = dynamic_zones.resolve(&f, &world);
        let r = world.apply(&f);
        faults.push(AppliedFault { at: time::now(), text, error: r.err().map(|e| e.to_string()) });
        heal_at = time::now();
    }

    // The final phase: read back every key a write touched.
    let keys: Vec<String> = {
        let r = rec.lock().expect("history");
        let set: std::collections::BTreeSet<String> = r
            .entries()
            .iter()
            .filter_map(|e| match &e.op {
                Op::Write { key, .. } | Op::Cas { key, .. } | Op::Delete { key } => Some(key.clone()),
                Op::StreamOpen { stream, .. } | Op::StreamAppend { stream, .. } => Some(stream.clone()),
                _ => None,
            })
            .collect();
        set.into_iter().collect()
    };
    *control.final_keys.lock().expect("control") = Some(keys);
    let deadline = main_end + FINAL_PHASE_MAX;
    while !control.final_done.load(Ordering::SeqCst) && time::now() < deadline {
        time::sleep(Duration::from_millis(10)).await;
    }
    // Streams: give re-replication time to bring every extent back to three
    // zones (the report measures how long it took).
    if let Some(obs) = &observer {
        let settle_end = time::now() + SETTLE_MAX;
        while time::now() < settle_end && obs.snapshot().under_replicated.last().map(|s| s.1) != Some(0) {
            time::sleep(Duration::from_millis(100)).await;
        }
    }
    let end = time::now();
    let mut history = std::mem::take(&mut *rec.lock().expect("history"));
    // As in Jepsen, the open operation of a process that crashed (its node
    // died or restarted since) completes as unknown. A live process's open
    // operation stays open: the liveness checker then reports it.
    let crashed: Vec<u64> = control
        .processes
        .lock()
        .expect("control")
        .iter()
        .filter(|(_, (node, inc))| !world.is_alive(*node) || world.incarnation(*node) != *inc)
        .map(|(p, _)| *p)
        .collect();
    for p in crashed {
        if let Some(op) = history.open_op(p).cloned() {
            history.complete(p, end.0, Kind::Info, op, Some(CLIENT_CRASHED.into()));
        }
    }
    let mut disk = DiskStats::default();
    for n in topo.nodes() {
        let s = world.disk(n.id).stats();
        disk.reads += s.reads;
        disk.writes += s.writes;
        disk.syncs += s.syncs;
        disk.bytes_read += s.bytes_read;
        disk.bytes_written += s.bytes_written;
        disk.injected_errors += s.injected_errors;
        disk.injected_bitflips += s.injected_bitflips;
        disk.misdirected_writes += s.misdirected_writes;
        disk.crashes += s.crashes;
        disk.sectors_lost_at_crash += s.sectors_lost_at_crash;
        disk.sectors_torn_kept_at_crash += s.sectors_torn_kept_at_crash;
    }
    let out = RunOutput {
        seed,
        digest: world.digest(),
        history,
        faults,
        heal_at,
        main_end,
        end,
        final_phase_complete: control.final_done.load(Ordering::SeqCst),
        net: world.net_stats(),
        disk,
        events: world.take_events(),
        streams: stream_cfg.map(|c| c.observer.clone()),
        table: table_cfg.map(|c| c.observer.clone()),
        bad_requests: bad_log.map(|l| l.snapshot()),
    };
    // Free the nodes' tasks with the run, not with the process.
    world.shutdown();
    out
}

/// Zone faults whose zone is decided when they fire: [`META_LEADER`] (the
/// zone of the metadata leader) and [`MASTER_ZONE`] (the zone of the latest
/// table master takeover). The inverse goes to the zone the fault went to.
struct DynamicZones {
    stream: Option<StreamObserver>,
    table: Option<TableObserver>,
    /// Dynamic name -> the zone it was resolved to, while down.
    resolved: BTreeMap<String, String>,
}

impl DynamicZones {
    /// The fault to apply and its text for the fault log (a resolved
    /// master zone names what it was resolved from; the metadata leader's
    /// zone keeps its established wording).
    fn resolve(&mut self, f: &Fault, world: &World) -> (Fault, String) {
        let topo = world.topology();
        match f {
            Fault::ZoneDown { zone, mode } if is_dynamic_zone(zone) => {
                let node = if zone == META_LEADER {
                    self.stream.as_ref().and_then(|o| o.snapshot().meta_leader)
                } else {
                    self.table.as_ref().and_then(|o| o.snapshot().master_takeovers.last().map(|t| t.1))
                };
                let z = node.map(|n| topo.zone_of(n)).or_else(|| topo.zones().next()).map(|z| topo.zone_name(z).to_string()).unwrap_or_default();
                self.resolved.insert(zone.clone(), z.clone());
                let resolved = Fault::ZoneDown { zone: z, mode: *mode };
                let text = if zone == MASTER_ZONE { format!("{resolved} [{MASTER_ZONE}]") } else { resolved.to_string() };
                (resolved, text)
            }
            Fault::ZoneUp { zone } if is_dynamic_zone(zone) => {
                let resolved = Fault::ZoneUp { zone: self.resolved.remove(zone).unwrap_or_else(|| zone.clone()) };
                let text = if zone == MASTER_ZONE { format!("{resolved} [{MASTER_ZONE}]") } else { resolved.to_string() };
                (resolved, text)
            }
            other => (other.clone(), other.to_string()),
        }
    }
}

async fn stream_client_main(ctx: NodeCtx, plan: ClientPlan, rec: SharedHistory, control: Arc<Control>, cfg: StreamConfig, timeout: Duration) {
    let client = StreamClient::bind(&ctx, cfg).await;
    let incarnation = ctx.world.incarnation(ctx.id);
    let ends: SharedEnds = Arc::new(Mutex::new(BTreeMap::new()));
    for (process, spec) in control.starting(&ctx, &plan.streams, |s| (&mut s.start, s.stop)) {
        let rng = ctx.world.rng(&format!("workload/{}/{process}", spec.def.name));
        madsim::task::spawn(streamload::run_process(ctx.world.clone(), client.clone(), rec.clone(), spec, ends.clone(), control.stream_progress.clone(), rng));
    }
    if plan.final_reader {
        let (process, streams) = control.final_reader(ctx.id, incarnation).await;
        streamload::final_reads(&ctx.world, &client, &rec, process, streams, timeout).await;
        control.final_done.store(true, Ordering::SeqCst);
    }
    std::future::pending::<()>().await;
}

async fn client_main(ctx: NodeCtx, plan: ClientPlan, rec: SharedHistory, control: Arc<Control>, servers: Vec<sim::NodeId>, timeout: Duration) {
    let (net, _inbox) = Net::<KvMsg>::bind(&ctx).await;
    let client = KvClient::new(net, servers, timeout);
    kv_processes(ctx, plan, rec, control, client).await
}

/// What the table's set-up needs: its keys and partitions, and with bad
/// requests their log (set-up then creates the second instance too).
#[derive(Clone)]
struct TableSetup {
    keys: u64,
    partitions: u32,
    bad: Option<BadLog>,
    /// Columns per row beside the value (the workloads agree: validated).
    columns: u32,
}

/// A client node of the table service: the first one creates the instance
/// and the table; every one waits for that, then runs its processes.
async fn table_client_main(ctx: NodeCtx, plan: ClientPlan, rec: SharedHistory, control: Arc<Control>, cfg: TableConfig, table: TableSetup) {
    let client = TableClient::bind(&ctx, &cfg, tableload::INSTANCE, tableload::ACCESS_KEY).await;
    if plan.final_reader && !control.table_ready.load(Ordering::SeqCst) {
        match tableload::setup(&client, table.keys, table.partitions, table.bad.is_some()).await {
            Ok(n) => ctx.note(format!("table {} created with {n} partitions", tableload::TABLE)),
            Err(e) => ctx.note(e),
        }
        control.table_ready.store(true, Ordering::SeqCst);
    }
    while !control.table_ready.load(Ordering::SeqCst) {
        time::sleep(Duration::from_millis(5)).await;
    }
    kv_processes(ctx, plan, rec, control, TableKv::new(client, table.bad, table.columns)).await
}

/// Runs this node's key-value processes (and the final reader, on the
/// first client node) against `client`.
async fn kv_processes<S: KvService + 'static>(ctx: NodeCtx, plan: ClientPlan, rec: SharedHistory, control: Arc<Control>, client: S) {
    let incarnation = ctx.world.incarnation(ctx.id);
    for (process, spec) in control.starting(&ctx, &plan.processes, |s| (&mut s.start, s.stop)) {
        let rng = ctx.world.rng(&format!("workload/{}/{process}", spec.workload));
        madsim::task::spawn_local(workload::run_process(ctx.world.clone(), client.clone(), rec.clone(), spec, rng));
    }
    if plan.final_reader {
        let (process, keys) = control.final_reader(ctx.id, incarnation).await;
        workload::final_reads(&ctx.world, &client, &rec, process, keys).await;
        control.final_done.store(true, Ordering::SeqCst);
    }
    // Keep the node's transport alive while its processes run.
    std::future::pending::<()>().await;
}
