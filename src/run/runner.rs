//! Runs a scenario: one seed, one fresh thread, one madsim runtime.
//!
//! The runner knows the world, the fault timeline, the workloads and the
//! deployment interface; the service comes from the catalog by the
//! scenario's kind. Phases: set-up (the deployment's, e.g. creating the
//! table; at most [`SETUP_MAX`], a service that needs none is set up at
//! once) ends before the main phase begins, on the next whole second (so
//! the report's per-second figures count seconds of the main phase); the
//! main phase runs the workloads while the fault timeline plays, both
//! timed from its start; at the scenario's end every fault still in place
//! is healed, and the final phase reads back every key the run wrote
//! (retrying until each answers or [`FINAL_PHASE_MAX`] passes); then the
//! service may settle (for [`SETTLE_MAX`] at most). A set-up that fails or
//! runs out of time ends the run there, with no main phase. The run
//! returns what it observed; checking and reporting happen outside the
//! simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sim::disk::DiskStats;
use sim::fault::Fault;
use sim::time::{self, SimTime};
use sim::world::World;

use super::deploy::{catalog, Deployment, SetUp};
use super::output::{AppliedFault, RunError, RunOptions, RunOutput, CLIENT_CRASHED, FINAL_PHASE_MAX, SETTLE_MAX, SETUP_MAX, SIM_THREAD_STACK};
use crate::history::{History, Kind, Op};
use crate::scenario::{heal_all, DynamicTarget, Scenario, CLIENT_ROLE};
use crate::workload::badreq::BadLog;
use crate::workload::clients;
use crate::workload::SharedHistory;

/// Slack after the longest operation timeout before the final phase.
const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(1);
/// How often the runner looks whether the deployment is set up.
const SETUP_POLL: Duration = Duration::from_millis(10);

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

async fn simulate(scn: Scenario, seed: u64, opts: RunOptions) -> RunOutput {
    let _time = sim::time::TimeScope::enter();
    let world = World::new(seed, scn.topology.clone(), scn.disk.clone(), opts.keep_events);
    let topo = world.topology().clone();
    for n in topo.nodes() {
        world.configure_cpu(n.id, scn.resources.cpu(&n.role));
    }
    let service = catalog::service(scn.service.kind());
    let deployment = service.deploy(&world, &scn);

    // Spread the processes of every workload and hotspot over the client
    // nodes; the deployment binds its client on each and hands it over.
    let client_nodes = topo.nodes_with_role(CLIENT_ROLE);
    let rec: SharedHistory = Arc::new(Mutex::new(History::new()));
    let bad_log = scn.workloads.iter().any(|w| w.bad_requests > 0.0).then(BadLog::default);
    let (control, shares) = clients::spread(&scn, client_nodes.len(), &rec, bad_log.clone());
    for (&c, share) in client_nodes.iter().zip(shares) {
        deployment.start_client(&world, c, share);
    }

    // Set-up, before the main phase and its faults.
    let setup_error = loop {
        match deployment.set_up() {
            SetUp::Ready => break None,
            SetUp::Failed(why) => break Some(why),
            SetUp::Pending if time::now().as_duration() >= SETUP_MAX => {
                break Some(format!("not set up within {} (the limit of set-up)", sim::time::fmt_duration(SETUP_MAX)));
            }
            SetUp::Pending => time::sleep(SETUP_POLL).await,
        }
    };
    let main_start = SimTime::from_duration(Duration::from_secs(time::now().as_duration().as_nanos().div_ceil(1_000_000_000) as u64));
    let mut faults = Vec::new();
    let mut heal_at = SimTime::ZERO;
    if let Some(why) = setup_error {
        return finish(&world, &scn, seed, Partial { main_start: time::now(), main_end: time::now(), setup_error: Some(why), faults, heal_at, final_phase_complete: false }, &control, &rec, &*deployment, bad_log);
    }
    control.begin_main(main_start);

    // The fault timeline, timed from the main phase's start.
    let mut targets = DynamicTargets { offered: service.rules().dynamic_targets(), deployment: &*deployment, resolved: BTreeMap::new() };
    for tf in &scn.faults {
        time::sleep_until(main_start + tf.at).await;
        let (fault, text) = targets.resolve(&tf.fault, &world);
        let r = world.apply(&fault);
        faults.push(AppliedFault { at: time::now(), text, error: r.err().map(|e| e.to_string()), opens: fault.opens(), effect: None });
        heal_at = time::now();
    }
    time::sleep_until(main_start + scn.duration).await;
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
        let (f, text) = targets.resolve(&f, &world);
        let r = world.apply(&f);
        faults.push(AppliedFault { at: time::now(), text, error: r.err().map(|e| e.to_string()), opens: f.opens(), effect: None });
        heal_at = time::now();
    }

    // The final phase: read back every key a write touched.
    let keys: Vec<String> = {
        let r = rec.lock().expect("history");
        let set: BTreeSet<String> = r
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
    control.read_back(keys);
    let deadline = main_end + FINAL_PHASE_MAX;
    while !control.final_done() && time::now() < deadline {
        time::sleep(Duration::from_millis(10)).await;
    }
    // Give the service time to repair itself (the report measures how long
    // it took).
    let settle_end = time::now() + SETTLE_MAX;
    deployment.begin_settling();
    while time::now() < settle_end && deployment.settling() {
        time::sleep(Duration::from_millis(100)).await;
    }
    let final_phase_complete = control.final_done();
    finish(&world, &scn, seed, Partial { main_start, main_end, setup_error: None, faults, heal_at, final_phase_complete }, &control, &rec, &*deployment, bad_log)
}

/// What the phases of a run left for its output.
struct Partial {
    main_start: SimTime,
    main_end: SimTime,
    setup_error: Option<String>,
    faults: Vec<AppliedFault>,
    heal_at: SimTime,
    final_phase_complete: bool,
}

/// The run's output, gathered at its end; the world is shut down.
#[allow(clippy::too_many_arguments)]
fn finish(world: &World, scn: &Scenario, seed: u64, p: Partial, control: &clients::Clients, rec: &SharedHistory, deployment: &dyn Deployment, bad_log: Option<BadLog>) -> RunOutput {
    let topo = world.topology();
    let end = time::now();
    let mut history = std::mem::take(&mut *rec.lock().expect("history"));
    // As in Jepsen, the open operation of a process that crashed (its node
    // died or restarted since) completes as unknown. A live process's open
    // operation stays open: the liveness checker then reports it.
    let crashed: Vec<u64> = control.processes().into_iter().filter(|(_, (node, inc))| !world.is_alive(*node) || world.incarnation(*node) != *inc).map(|(p, _)| p).collect();
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
    let usage = role_usage(world, p.main_start, crate::report::main_seconds(scn));
    // The runner is the only caller of `World::apply` in a run: the world's
    // effects are its faults', in order.
    let mut faults = p.faults;
    let effects = world.fault_effects();
    assert_eq!(effects.len(), faults.len(), "every fault the world applied is in the run's fault log");
    for (f, e) in faults.iter_mut().zip(effects) {
        if f.opens && f.error.is_none() {
            f.effect = Some(e);
        }
    }
    let out = RunOutput {
        seed,
        digest: world.digest(),
        history,
        process_workloads: control.workloads(),
        faults,
        heal_at: p.heal_at,
        main_start: p.main_start,
        setup_error: p.setup_error,
        main_end: p.main_end,
        end,
        final_phase_complete: p.final_phase_complete,
        offered: control.offered(),
        net: world.net_stats(),
        disk,
        usage,
        events: world.take_events(),
        observers: deployment.observers(),
        bad_requests: bad_log.map(|l| l.snapshot()),
    };
    // Free the nodes' tasks with the run, not with the process.
    world.shutdown();
    out
}

/// Zone faults whose zone is decided when they fire: the targets the
/// service offers, which its deployment resolves (the zone of the
/// metadata leader, of the active master, ...). The inverse goes to the
/// zone the fault went to.
struct DynamicTargets<'a> {
    offered: &'static [DynamicTarget],
    deployment: &'a dyn Deployment,
    /// Dynamic name -> the zone it was resolved to, while down.
    resolved: BTreeMap<String, String>,
}

impl DynamicTargets<'_> {
    /// The fault to apply and its text for the fault log (a target that is
    /// `shown` is named beside the zone it was resolved to).
    fn resolve(&mut self, f: &Fault, world: &World) -> (Fault, String) {
        let topo = world.topology();
        let offered = |zone: &str| self.offered.iter().find(|t| t.name == zone).copied();
        let label = |target: DynamicTarget, resolved: &Fault| if target.shown { format!("{resolved} [{}]", target.name) } else { resolved.to_string() };
        match f {
            Fault::ZoneDown { zone, mode } => match offered(zone) {
                Some(target) => {
                    let z = self.deployment.resolve_target(topo, zone).or_else(|| topo.zones().next()).map(|z| topo.zone_name(z).to_string()).unwrap_or_default();
                    self.resolved.insert(zone.clone(), z.clone());
                    let resolved = Fault::ZoneDown { zone: z, mode: *mode };
                    let text = label(target, &resolved);
                    (resolved, text)
                }
                None => (f.clone(), f.to_string()),
            },
            Fault::ZoneUp { zone } => match offered(zone) {
                Some(target) => {
                    let resolved = Fault::ZoneUp { zone: self.resolved.remove(zone).unwrap_or_else(|| zone.clone()) };
                    let text = label(target, &resolved);
                    (resolved, text)
                }
                None => (f.clone(), f.to_string()),
            },
            other => (other.clone(), other.to_string()),
        }
    }
}

/// CPU and disk use of each role's nodes over the `secs` seconds from
/// `from` (a whole second).
fn role_usage(world: &World, from: SimTime, secs: usize) -> Vec<crate::run::output::RoleUsage> {
    let first = from.as_duration().as_secs();
    let topo = world.topology();
    let mut roles: Vec<String> = topo.nodes().iter().map(|n| n.role.clone()).collect();
    roles.sort();
    roles.dedup();
    let r4 = |x: f64| (x * 10_000.0).round() / 10_000.0;
    roles
        .into_iter()
        .map(|role| {
            let nodes = topo.nodes_with_role(&role);
            let stats: Vec<sim::cpu::CpuStats> = nodes.iter().map(|&n| world.cpu(n).stats()).collect();
            let disks: Vec<sim::disk::Disk> = nodes.iter().map(|&n| world.disk(n)).collect();
            let mut u = crate::run::output::RoleUsage { role, nodes: nodes.len(), cores: stats.first().map_or(0, |s| s.cores), ..Default::default() };
            u.per_node = nodes.iter().map(|&n| crate::run::output::NodeUsage { name: topo.node(n).name.clone(), ..Default::default() }).collect();
            for s in first..first + secs as u64 {
                let per: Vec<f64> = stats.iter().map(|c| c.utilisation(s)).collect();
                for (i, nu) in u.per_node.iter_mut().enumerate() {
                    nu.cpu.push(r4(per[i]));
                    nu.disk.push(r4(disks[i].busy_in_second(s) as f64 / 1e9));
                }
                u.cpu_mean.push(r4(per.iter().sum::<f64>() / per.len().max(1) as f64));
                u.cpu_max.push(r4(per.iter().copied().fold(0.0, f64::max)));
                u.disk_max.push(r4(disks.iter().map(|d| d.busy_in_second(s) as f64 / 1e9).fold(0.0, f64::max)));
            }
            for c in &stats {
                u.run_queue_max = u.run_queue_max.max(c.seconds.values().map(|x| x.queue_max).max().unwrap_or(0));
                u.refused += c.refused;
                u.control_max = u.control_max.max(c.seconds.values().map(|x| x.control_ns as f64 / 1e9).fold(0.0, f64::max));
            }
            u.control_max = r4(u.control_max);
            u
        })
        .collect()
}
