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
use sim::disk::DiskStats;
use sim::log::{Digest, Event};
use sim::net::Net;
use sim::time::{self, SimTime};
use sim::world::{NetStats, NodeCtx, World};

use crate::scenario::{heal_all, Scenario};
use crate::history::{History, Kind, Op};
use crate::workload::{self, KeyChooser, ProcessSpec, SharedHistory};

/// Longest the final phase may take (model time) before the run ends anyway.
pub const FINAL_PHASE_MAX: Duration = Duration::from_secs(120);
/// Workloads start this long after the world: servers recover their disks
/// and bind their transports first (a request before that vanishes).
pub const SERVICE_STARTUP: Duration = Duration::from_millis(10);
/// Slack after the longest operation timeout before the final phase.
const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(1);
/// The error of an operation whose client process crashed while it was open.
pub const CLIENT_CRASHED: &str = "client process crashed with the operation open";
/// Process ids of a restarted client node start at `incarnation * this`.
const PROCESS_ID_STRIDE: u64 = 1_000_000;

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Keep the event log in memory (for divergence reports).
    pub keep_events: bool,
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
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the simulation panicked: {0}")]
    Panicked(String),
}

/// Runs `scn` with `seed` on a fresh thread (std's `HashMap` order and
/// madsim's state are only deterministic on a fresh thread).
pub fn run(scn: &Scenario, seed: u64, opts: &RunOptions) -> Result<RunOutput, RunError> {
    let scn = scn.clone();
    let opts = opts.clone();
    #[allow(clippy::disallowed_methods)] // one OS thread per runtime, outside the simulation
    let handle = std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .stack_size(64 << 20)
        .spawn(move || {
            let mut cfg = madsim::Config::default();
            // madsim's own link delay is folded into the modeled latency by
            // the receiver; keep it tiny so it never exceeds a modeled hop.
            cfg.net.send_latency = Duration::from_micros(1)..Duration::from_micros(2);
            let rt = madsim::runtime::Runtime::with_seed_and_config(seed, cfg);
            rt.block_on(simulate(scn, seed, opts))
        })
        .expect("spawn simulation thread");
    handle.join().map_err(|p| {
        let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "unknown panic".into());
        RunError::Panicked(msg)
    })
}

struct Control {
    final_keys: Mutex<Option<Vec<String>>>,
    final_done: AtomicBool,
    /// Every process started: its client node and that node's incarnation.
    processes: Mutex<BTreeMap<u64, (sim::NodeId, u64)>>,
}

/// Builds a process's spec from its process id (which depends on the
/// client node's incarnation).
type MakeSpec = Arc<dyn Fn(u64) -> ProcessSpec + Send + Sync>;

#[derive(Clone)]
struct ClientPlan {
    /// (global process index, spec without the process id).
    processes: Vec<(u64, MakeSpec)>,
    final_reader: bool,
}

async fn simulate(scn: Scenario, seed: u64, opts: RunOptions) -> RunOutput {
    let world = World::new(seed, scn.topology.clone(), scn.disk.clone(), opts.keep_events);
    let topo = world.topology().clone();
    let servers = topo.nodes_with_role(scn.service.server_role());
    let server_cfg = ServerConfig { group_commit_max: scn.service.group_commit_max };
    for &s in &servers {
        let cfg = server_cfg.clone();
        world.start_node(s, move |ctx| minikv::serve(ctx, cfg.clone()));
    }

    // Spread the processes of every workload and hotspot over the client nodes.
    let clients = topo.nodes_with_role("client");
    let mut plans: Vec<ClientPlan> = clients.iter().enumerate().map(|(i, _)| ClientPlan { processes: Vec::new(), final_reader: i == 0 }).collect();
    let mut next_process = 0u64;
    let op_timeout = scn.workloads.first().map(|w| w.timeout.0).unwrap_or(Duration::from_millis(500));
    for w in &scn.workloads {
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
    let control = Arc::new(Control { final_keys: Mutex::new(None), final_done: AtomicBool::new(false), processes: Mutex::new(BTreeMap::new()) });
    for (&c, plan) in clients.iter().zip(plans) {
        let (rec, control, servers) = (rec.clone(), control.clone(), servers.clone());
        world.start_node(c, move |ctx| client_main(ctx, plan.clone(), rec.clone(), control.clone(), servers.clone(), op_timeout));
    }

    // The fault timeline.
    let mut faults = Vec::new();
    let mut heal_at = SimTime::ZERO;
    for tf in &scn.faults {
        time::sleep_until(SimTime::from_duration(tf.at)).await;
        let r = world.apply(&tf.fault);
        faults.push(AppliedFault { at: time::now(), text: tf.fault.to_string(), error: r.err().map(|e| e.to_string()) });
        heal_at = time::now();
    }
    time::sleep_until(SimTime::from_duration(scn.duration)).await;
    let main_end = time::now();
    // No operation starts after the main phase ends, and each finishes
    // within its timeout: wait them out, so that the final reads start after
    // every main-phase operation has completed (the durability checker
    // relies on it).
    let longest_timeout = scn.workloads.iter().map(|w| w.timeout.0).max().unwrap_or(Duration::ZERO);
    time::sleep(longest_timeout + IN_FLIGHT_MARGIN).await;
    for f in heal_all(&scn.faults) {
        let r = world.apply(&f);
        faults.push(AppliedFault { at: time::now(), text: f.to_string(), error: r.err().map(|e| e.to_string()) });
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
    RunOutput {
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
    }
}

async fn client_main(ctx: NodeCtx, plan: ClientPlan, rec: SharedHistory, control: Arc<Control>, servers: Vec<sim::NodeId>, timeout: Duration) {
    let (net, _inbox) = Net::<KvMsg>::bind(&ctx).await;
    let client = KvClient::new(net, servers, timeout);
    let incarnation = ctx.world.incarnation(ctx.id);
    let now = time::now().as_duration();
    for (index, make) in &plan.processes {
        let process = incarnation * PROCESS_ID_STRIDE + index;
        let mut spec = make(process);
        spec.start = spec.start.max(now);
        if spec.start >= spec.stop {
            continue;
        }
        control.processes.lock().expect("control").insert(process, (ctx.id, incarnation));
        let rng = ctx.world.rng(&format!("workload/{}/{process}", spec.workload));
        madsim::task::spawn(workload::run_process(ctx.world.clone(), client.clone(), rec.clone(), spec, rng));
    }
    if plan.final_reader {
        let keys = loop {
            if let Some(k) = control.final_keys.lock().expect("control").clone() {
                break k;
            }
            time::sleep(Duration::from_millis(5)).await;
        };
        let process = incarnation * PROCESS_ID_STRIDE + (PROCESS_ID_STRIDE - 1);
        control.processes.lock().expect("control").insert(process, (ctx.id, incarnation));
        workload::final_reads(&ctx.world, &client, &rec, process, keys).await;
        control.final_done.store(true, Ordering::SeqCst);
    }
    // Keep the node's transport alive while its processes run.
    std::future::pending::<()>().await;
}
