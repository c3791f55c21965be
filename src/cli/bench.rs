//! `tablesim bench`: the cost of the simulated world, measured in one run.
//!
//! Time is measured outside the simulation (around `block_on`), the only
//! place the real clock is allowed, as the simulation thread's CPU time:
//! on an idle machine it equals wall time, and on a shared one it is not
//! inflated by other processes. Rates are per CPU second of one core.
//!
//! The reference scenario (`scenarios/double11.toml`) runs whole at a few
//! seeds: simulated seconds per CPU second (time compression) and messages
//! the simulated network delivered per CPU second, beside the raw madsim
//! message rate measured just before each run.
#![allow(clippy::disallowed_methods)] // wall-clock measurement and a thread per runtime, outside the simulation

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sim::disk::DiskConfig;
use sim::net::{Message, Net};
use sim::time;
use sim::topology::{LinkParams, NodeId, Topology, ZoneId};
use sim::world::World;

use crate::report::measure::round2;
use crate::run::{self, RunOptions, RunOutput};
use crate::scenario::Scenario;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ping {
    Ping(u64),
    Pong(u64),
}

impl Message for Ping {
    const TAG: u16 = 900;
    fn kind(&self) -> &'static str {
        match self {
            Ping::Ping(_) => "ping",
            Ping::Pong(_) => "pong",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchFigures {
    /// Medians over this many rounds.
    pub rounds: usize,
    pub round_trips: u64,
    /// Messages per CPU second: raw madsim `Endpoint` ping-pong.
    pub raw_madsim_msgs_per_s: f64,
    /// The same through sim's transport (latency model, faults, event log).
    pub sim_transport_msgs_per_s: f64,
    /// Median of the per-round ratios sim / raw.
    pub transport_ratio: f64,
    pub disk_ops: u64,
    pub disk_write_ops_per_s: f64,
    pub disk_read_ops_per_s: f64,
    pub disk_sync_ops_per_s: f64,
    /// Metadata-store writes (each a Raft commit across three zones and a
    /// synced log append on each replica) and linearizable reads.
    pub meta_ops: u64,
    pub meta_ops_per_s: f64,
    /// Model time one metadata operation took on average (one client).
    pub meta_op_model_latency: String,
    /// Stream appends (128 bytes, 64 writers on one stream), each
    /// acknowledged after three replicas in three zones synced it.
    pub stream_appends: u64,
    pub stream_appends_per_s: f64,
    /// Appends per second over the raw madsim message rate of the same round.
    pub stream_appends_vs_raw_msgs: f64,
    /// Messages the stream layer sent per append (batching brings it below
    /// the six of an unbatched three-replica round trip).
    pub stream_msgs_per_append: f64,
    /// The reference scenario run whole (absent when skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceFigures>,
}

/// The reference scenario (`scenarios/double11.toml` unless told
/// otherwise), run whole at several seeds; figures are medians over them.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceFigures {
    pub scenario: String,
    pub runs: Vec<ReferenceRun>,
    /// Simulated seconds per CPU second (the model time of a whole run:
    /// main phase, final reads and re-replication settling).
    pub time_compression: f64,
    /// The same over the main phase only.
    pub main_time_compression: f64,
    /// Messages the simulated network delivered per CPU second.
    pub msgs_delivered_per_s: f64,
    /// Median of the per-run ratios: delivered messages per CPU second over
    /// the raw madsim ping-pong rate measured just before the run.
    pub msgs_vs_raw_msgs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReferenceRun {
    pub seed: u64,
    /// Model time of the whole run.
    pub simulated: String,
    /// CPU time of the simulation thread (checkers and report excluded).
    pub cpu: String,
    pub time_compression: f64,
    /// The same up to the end of the main phase (the workload under the
    /// fault timeline; after it come the final reads and the wait for
    /// re-replication, which is mostly idle).
    pub main_simulated: String,
    pub main_cpu: String,
    pub main_time_compression: f64,
    /// `NetStats::delivered` at the end of the run.
    pub msgs_delivered: u64,
    pub msgs_delivered_per_s: f64,
    pub raw_madsim_msgs_per_s: f64,
}

/// Nanoseconds this thread has spent on a CPU (Linux), so that figures
/// hold on a shared machine; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Runs `f` in a fresh runtime on a fresh thread; returns its output and the
/// thread's CPU time (wall time where CPU time cannot be read).
fn in_runtime<T: Send + 'static>(seed: u64, f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static) -> (T, Duration) {
    std::thread::spawn(move || {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        let (c0, t0) = (thread_cpu_ns(), Instant::now());
        let out = rt.block_on(f());
        (out, cpu_since(c0, t0))
    })
    .join()
    .expect("bench thread")
}

/// Raw madsim `Endpoint` ping-pong: `n` round trips.
fn raw_ping_pong(n: u64) -> Duration {
    in_runtime(1, move || {
        Box::pin(async move {
            let h = madsim::runtime::Handle::current();
            let server = h.create_node().name("server").ip("10.9.0.1".parse().unwrap()).build();
            let client = h.create_node().name("client").ip("10.9.0.2".parse().unwrap()).build();
            server.spawn(async move {
                let ep = madsim::net::Endpoint::bind("10.9.0.1:1").await.unwrap();
                loop {
                    let (p, from) = ep.recv_from_raw(1).await.unwrap();
                    ep.send_to_raw(from, 2, p).await.unwrap();
                }
            });
            let done = client.spawn(async move {
                let ep = madsim::net::Endpoint::bind("10.9.0.2:1").await.unwrap();
                for i in 0..n {
                    ep.send_to_raw("10.9.0.1:1".parse().unwrap(), 1, Box::new(i)).await.unwrap();
                    ep.recv_from_raw(2).await.unwrap();
                }
            });
            done.await.unwrap();
        })
    })
    .1
}

fn two_node_world(seed: u64) -> World {
    let lp = LinkParams { latency: Duration::from_micros(100), jitter: Duration::ZERO, loss: 0.0 };
    let mut t = Topology::new(&["az1".to_string()], lp, lp);
    t.add_node(ZoneId(0), "server");
    t.add_node(ZoneId(0), "client");
    World::new(seed, t, DiskConfig::default(), false)
}

/// The same ping-pong through sim's transport with its latency model.
fn sim_ping_pong(n: u64) -> Duration {
    in_runtime(1, move || {
        Box::pin(async move {
            let world = two_node_world(1);
            world.start_node(NodeId(0), |ctx| async move {
                let (net, mut inbox) = Net::<Ping>::bind(&ctx).await;
                while let Some(m) = inbox.recv().await {
                    if let (Ping::Ping(x), Some(r)) = (m.msg, m.request) {
                        net.reply(m.from, r, Ping::Pong(x)).await;
                    }
                }
            });
            let done = Arc::new(Mutex::new(false));
            let d = done.clone();
            world.start_node(NodeId(1), move |ctx| {
                let d = d.clone();
                async move {
                    let (net, _inbox) = Net::<Ping>::bind(&ctx).await;
                    for i in 0..n {
                        net.call(NodeId(0), Ping::Ping(i), Duration::from_secs(1)).await.expect("no faults in the bench");
                    }
                    *d.lock().unwrap() = true;
                }
            });
            while !*done.lock().unwrap() {
                time::sleep(Duration::from_millis(10)).await;
            }
        })
    })
    .1
}

#[derive(Clone, Copy)]
enum DiskPhase {
    Write,
    Read,
    WriteSync,
}

/// Simulated-disk operations of one kind on 4 KiB blocks, timed from
/// outside the runtime (inside it, madsim simulates `Instant` too).
fn disk_phase(n: u64, phase: DiskPhase) -> Duration {
    let (_setup_ops, total) = in_runtime(1, move || {
        Box::pin(async move {
            let world = two_node_world(1);
            let disk = world.disk(NodeId(0));
            disk.create("bench").await.unwrap();
            let block = vec![7u8; 4096];
            for i in 0..4096u64 {
                disk.write_at("bench", i * 4096, &block).await.unwrap();
            }
            let setup_ops = 4096u64;
            for i in 0..n {
                let off = (i % 4096) * 4096;
                match phase {
                    DiskPhase::Write => disk.write_at("bench", off, &block).await.unwrap(),
                    DiskPhase::Read => {
                        disk.read_at("bench", off, 4096).await.unwrap();
                    }
                    DiskPhase::WriteSync => {
                        disk.write_at("bench", off, &block).await.unwrap();
                        disk.sync("bench").await.unwrap();
                    }
                }
            }
            setup_ops
        })
    });
    total
}

/// Three zones (100 µs inside a zone, 1 ms between zones) with one `meta`
/// replica each and one `client` node in az1.
fn three_zone_world(seed: u64, per_zone: &[&str]) -> World {
    let zones: Vec<String> = ["az1", "az2", "az3"].iter().map(|s| s.to_string()).collect();
    let intra = LinkParams { latency: Duration::from_micros(100), jitter: Duration::from_micros(10), loss: 0.0 };
    let inter = LinkParams { latency: Duration::from_millis(1), jitter: Duration::from_micros(100), loss: 0.0 };
    let mut t = Topology::new(&zones, intra, inter);
    for z in 0..3 {
        for role in per_zone {
            t.add_node(ZoneId(z), role);
        }
    }
    World::new(seed, t, DiskConfig::default(), false)
}

/// `n` metadata operations (alternating put and get) from one client in
/// az1 against three replicas; returns the CPU time and the model time the
/// operations took.
fn meta_ops(n: u64) -> (Duration, Duration) {
    use engine::meta::service::{serve, MetaClient, ServiceConfig};
    let (model, cpu) = in_runtime(1, move || {
        Box::pin(async move {
            let world = three_zone_world(1, &["meta", "client"]);
            let replicas = world.topology().nodes_with_role("meta");
            let cfg = ServiceConfig::new(replicas.clone());
            for &r in &replicas {
                let cfg = cfg.clone();
                world.start_node(r, move |ctx| serve(ctx, cfg.clone()));
            }
            let out: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
            let o = out.clone();
            world.start_node(world.topology().nodes_with_role("client")[0], move |ctx| {
                let (cfg, o) = (cfg.clone(), o.clone());
                async move {
                    let mut c = MetaClient::bind(&ctx, cfg).await;
                    // The first write waits for a leader.
                    while c.put("warmup", b"x").await.is_err() {}
                    let t0 = time::now();
                    for i in 0..n {
                        let key = format!("k{}", i % 1024);
                        if i % 2 == 0 {
                            c.put(&key, &i.to_le_bytes()).await.expect("no faults in the bench");
                        } else {
                            c.get(&key).await.expect("no faults in the bench");
                        }
                    }
                    *o.lock().unwrap() = Some(time::now().as_duration() - t0.as_duration());
                }
            });
            loop {
                if let Some(d) = *out.lock().unwrap() {
                    break d;
                }
                time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    (cpu, model)
}

/// Concurrent writers in the stream bench (their appends are pipelined and
/// group-committed into batches).
const STREAM_BENCH_WRITERS: u64 = 64;

/// `n` appends of 128 bytes to one stream from [`STREAM_BENCH_WRITERS`]
/// concurrent tasks; returns the CPU time and the messages sent.
fn stream_appends(n: u64) -> (Duration, u64) {
    use engine::stream::client::StreamClient;
    use engine::stream::StreamConfig;
    let (msgs, cpu) = in_runtime(1, move || {
        Box::pin(async move {
            let world = three_zone_world(1, &["meta", "storage", "client"]);
            let topo = world.topology().clone();
            let cfg = StreamConfig::new(topo.nodes_with_role("meta"), topo.nodes_with_role("storage"));
            for &m in &topo.nodes_with_role("meta") {
                let meta = cfg.meta.clone();
                world.start_node(m, move |ctx| engine::meta::service::serve(ctx, meta.clone()));
            }
            for &s in &topo.nodes_with_role("storage") {
                let cfg = cfg.clone();
                world.start_node(s, move |ctx| engine::stream::replica::serve_storage(ctx, cfg.clone()));
            }
            let done = Arc::new(Mutex::new(None));
            let d = done.clone();
            let w = world.clone();
            world.start_node(topo.nodes_with_role("client")[0], move |ctx| {
                let (cfg, d, w) = (cfg.clone(), d.clone(), w.clone());
                async move {
                    let client = StreamClient::bind(&ctx, cfg).await;
                    let ns = loop {
                        if let Ok(ns) = client.open_namespace("bench").await {
                            break ns;
                        }
                    };
                    ns.create("log").await.expect("no faults in the bench");
                    let before = w.net_stats().delivered;
                    let mut tasks = Vec::new();
                    for t in 0..STREAM_BENCH_WRITERS {
                        let ns = ns.clone();
                        tasks.push(madsim::task::spawn(async move {
                            let data = vec![b'x'; 128];
                            for _ in (t..n).step_by(STREAM_BENCH_WRITERS as usize) {
                                ns.append("log", &data).await.expect("no faults in the bench");
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.expect("bench writer");
                    }
                    *d.lock().unwrap() = Some(w.net_stats().delivered - before);
                }
            });
            loop {
                if let Some(m) = *done.lock().unwrap() {
                    break m;
                }
                time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    (cpu, msgs)
}

/// CPU time of this thread since `c0` (wall time since `t0` where CPU
/// time cannot be read).
fn cpu_since(c0: Option<u64>, t0: Instant) -> Duration {
    match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) => Duration::from_nanos(b - a),
        _ => t0.elapsed(),
    }
}

/// One whole run of `scn` at `seed` on a fresh thread, as `run::run`
/// does it; returns what it observed, the thread's CPU time and its CPU
/// time when the main phase ended.
fn scenario_run(scn: &Scenario, seed: u64) -> (RunOutput, Duration, Duration) {
    let scn = scn.clone();
    std::thread::Builder::new()
        .name(format!("bench-sim-{seed}"))
        .stack_size(run::SIM_THREAD_STACK)
        .spawn(move || {
            let (c0, t0) = (thread_cpu_ns(), Instant::now());
            let at_main_end = Arc::new(Mutex::new(Duration::ZERO));
            let m = at_main_end.clone();
            let opts = RunOptions { on_main_end: Some(Arc::new(move |_| *m.lock().unwrap() = cpu_since(c0, t0))), ..RunOptions::default() };
            let out = run::run_on_this_thread(scn, seed, opts);
            let main = *at_main_end.lock().unwrap();
            (out, cpu_since(c0, t0), main)
        })
        .expect("spawn bench simulation thread")
        .join()
        .expect("the reference scenario panicked; replay it with `tablesim run`")
}

/// The reference scenario of the README.
pub const REFERENCE_SCENARIO: &str = include_str!("../../scenarios/double11.toml");

/// Runs `scn` at `seeds`, each after a raw madsim ping-pong of
/// `round_trips` (so that the ratio compares the same machine state).
pub fn reference(scn: &Scenario, seeds: &[u64], round_trips: u64) -> ReferenceFigures {
    let mut runs = Vec::new();
    for &seed in seeds {
        let raw = 2.0 * round_trips as f64 / raw_ping_pong(round_trips).as_secs_f64();
        let (out, cpu, cpu_main) = scenario_run(scn, seed);
        let cpu_s = cpu.as_secs_f64();
        runs.push(ReferenceRun {
            seed,
            simulated: sim::time::fmt_duration(out.end.as_duration()),
            cpu: sim::time::fmt_duration(cpu),
            time_compression: round2(out.end.as_duration().as_secs_f64() / cpu_s),
            main_simulated: sim::time::fmt_duration(out.main_end.as_duration()),
            main_cpu: sim::time::fmt_duration(cpu_main),
            main_time_compression: round2(out.main_end.as_duration().as_secs_f64() / cpu_main.as_secs_f64()),
            msgs_delivered: out.net.delivered,
            msgs_delivered_per_s: (out.net.delivered as f64 / cpu_s).round(),
            raw_madsim_msgs_per_s: raw.round(),
        });
    }
    let med = |f: fn(&ReferenceRun) -> f64| median(runs.iter().map(f).collect());
    ReferenceFigures {
        scenario: scn.name.clone(),
        time_compression: round2(med(|r| r.time_compression)),
        main_time_compression: round2(med(|r| r.main_time_compression)),
        msgs_delivered_per_s: med(|r| r.msgs_delivered_per_s).round(),
        msgs_vs_raw_msgs: (med(|r| r.msgs_delivered_per_s / r.raw_madsim_msgs_per_s) * 10_000.0).round() / 10_000.0,
        runs,
    }
}

/// Rounds of each measurement; figures are medians over them.
pub const BENCH_ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The whole bench; `reference` is the scenario and seeds of the
/// reference measurement (`None` skips it).
pub fn run(round_trips: u64, disk_n: u64, reference_runs: Option<(&Scenario, &[u64])>) -> BenchFigures {
    let msgs = 2.0 * round_trips as f64;
    // Raw and sim rounds alternate so that both see the same machine.
    let (mut raw, mut simt, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..BENCH_ROUNDS {
        let r = msgs / raw_ping_pong(round_trips).as_secs_f64();
        let s = msgs / sim_ping_pong(round_trips).as_secs_f64();
        raw.push(r);
        simt.push(s);
        ratios.push(s / r);
    }
    // Each disk phase pays the same 4096-write setup; subtracting the
    // setup-only run leaves the phase itself.
    let rate = |phase| {
        let v: Vec<f64> = (0..BENCH_ROUNDS)
            .map(|_| {
                let base = disk_phase(0, DiskPhase::Write);
                disk_n as f64 / disk_phase(disk_n, phase).saturating_sub(base).as_secs_f64()
            })
            .collect();
        median(v).round()
    };
    let meta_n = (round_trips / 10).max(100);
    let mut meta_rates = Vec::new();
    let mut meta_model = Vec::new();
    for _ in 0..BENCH_ROUNDS {
        let (cpu, model) = meta_ops(meta_n);
        meta_rates.push(meta_n as f64 / cpu.as_secs_f64());
        meta_model.push(model.as_secs_f64() / meta_n as f64);
    }
    let stream_n = (round_trips / 2).max(1000);
    let (mut st_rates, mut st_ratio, mut st_msgs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..BENCH_ROUNDS {
        let raw_rate = msgs / raw_ping_pong(round_trips).as_secs_f64();
        let (cpu, sent) = stream_appends(stream_n);
        let rate = stream_n as f64 / cpu.as_secs_f64();
        st_rates.push(rate);
        st_ratio.push(rate / raw_rate);
        st_msgs.push(sent as f64 / stream_n as f64);
    }
    let reference = reference_runs.map(|(scn, seeds)| reference(scn, seeds, round_trips));
    BenchFigures {
        reference,
        stream_appends: stream_n,
        stream_appends_per_s: median(st_rates).round(),
        stream_appends_vs_raw_msgs: (median(st_ratio) * 10_000.0).round() / 10_000.0,
        stream_msgs_per_append: (median(st_msgs) * 100.0).round() / 100.0,
        meta_ops: meta_n,
        meta_ops_per_s: median(meta_rates).round(),
        meta_op_model_latency: sim::time::fmt_duration(Duration::from_secs_f64(median(meta_model))),
        rounds: BENCH_ROUNDS,
        round_trips,
        raw_madsim_msgs_per_s: median(raw).round(),
        sim_transport_msgs_per_s: median(simt).round(),
        transport_ratio: (median(ratios) * 1000.0).round() / 1000.0,
        disk_ops: disk_n,
        disk_write_ops_per_s: rate(DiskPhase::Write),
        disk_read_ops_per_s: rate(DiskPhase::Read),
        disk_sync_ops_per_s: rate(DiskPhase::WriteSync),
    }
}

/// `tablesim bench`: the whole bench (the reference scenario `scn` run
/// `scenario_runs` times from its default seed), then the linearizability
/// checker's (unless `checker_ops` is 0), printed as YAML.
pub fn command(round_trips: u64, disk_ops: u64, checker_ops: u64, scn: &Scenario, scenario_runs: u64, curve_rates: &[f64], jobs: usize) -> ExitCode {
    let seeds: Vec<u64> = (0..scenario_runs).map(|i| scn.seed + i).collect();
    let f = run(round_trips, disk_ops, (!seeds.is_empty()).then_some((scn, seeds.as_slice())));
    println!("# simulated world\n{}", serde_yaml_ng::to_string(&f).expect("figures serialise"));
    if let Some(r) = &f.reference {
        println!(
            "# {} (medians of {} runs): {}x simulated per CPU second over the whole run, {}x over the main phase; {} delivered messages per CPU second, {} of raw madsim's\n",
            r.scenario,
            r.runs.len(),
            r.time_compression,
            r.main_time_compression,
            r.msgs_delivered_per_s,
            r.msgs_vs_raw_msgs
        );
    }
    if !curve_rates.is_empty() {
        // The capacity curve: model figures (goodput, latency, refusals),
        // not speed, so its runs may share the cores.
        match super::curve::run(scn, curve_rates, true, true, scn.seed, jobs) {
            Ok(steps) => {
                println!("# capacity curve of {} (open loop, seed {}), without and with its faults\n{}", scn.name, scn.seed, super::curve::table(&steps));
                println!("{}", serde_yaml_ng::to_string(&super::curve::goals(&steps)).expect("figures serialise"));
            }
            Err(e) => {
                eprintln!("error: capacity curve: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if checker_ops > 0 {
        let c = crate::check::bench::bench_linearizability(1, checker_ops, crate::check::linearizable::Budget::default());
        println!("# linearizability checker\n{}", serde_yaml_ng::to_string(&c).expect("figures serialise"));
    }
    ExitCode::SUCCESS
}
