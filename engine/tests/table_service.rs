//! Stories about the table service: three zones az1..az3, each with one
//! meta replica, three storage nodes, a stream manager, a master, two table
//! servers, a proxy and a client; a `ctl` zone (never faulted) holds the
//! driver, which applies faults, and three clients that run the workload.
//!
//! The workload records every operation: writers own disjoint keys and
//! write increasing versions; appenders own one partition key each. Every
//! story then checks: every acknowledged write is readable after healing
//! (the value read is the last acknowledged version or a later attempted
//! one), auto-increment values are +1 consecutive (a gap only where an
//! outcome was unknown), and no two servers served one partition at
//! overlapping times (from the observer's serving intervals).
#![allow(clippy::disallowed_methods)] // one OS thread per madsim runtime, outside the simulation

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::meta::service::{serve as serve_meta, ServiceConfig};
use engine::stream::manager::serve_manager;
use engine::stream::replica::serve_storage;
use engine::table::client::TableClient;
use engine::table::{master, proxy, routing, server, DataMsg, FailoverCause, Op, OpResult, PartitionId, ReqId, ServingInterval, TableConfig, TableError, TableObserverData};
use sim::disk::DiskConfig;
use sim::fault::{Direction, Fault, ZoneMode};
use sim::time::{self, SimTime};
use sim::topology::{LinkParams, NodeId, Topology, ZoneId};
use sim::net::Net;
use sim::world::{NodeCtx, World};
use tokio::sync::oneshot;

const INSTANCE: &str = "i1";
const KEY: &str = "secret-1";
const TABLE: &str = "t";
/// Keys `k000`..`k099` over four partitions.
const KEYS: usize = 100;

fn lp(us: u64) -> LinkParams {
    LinkParams { latency: Duration::from_micros(us), jitter: Duration::from_micros(us / 10), loss: 0.0 }
}

fn topo() -> Topology {
    let zones: Vec<String> = ["az1", "az2", "az3", "ctl"].iter().map(|s| s.to_string()).collect();
    let mut t = Topology::new(&zones, lp(100), lp(1000));
    for z in 0..3 {
        t.add_node(ZoneId(z), "meta");
        for _ in 0..3 {
            t.add_node(ZoneId(z), "storage");
        }
        t.add_node(ZoneId(z), "manager");
        t.add_node(ZoneId(z), "master");
        t.add_node(ZoneId(z), "server");
        t.add_node(ZoneId(z), "server");
        t.add_node(ZoneId(z), "proxy");
        t.add_node(ZoneId(z), "client");
    }
    t.add_node(ZoneId(3), "driver");
    for _ in 0..3 {
        t.add_node(ZoneId(3), "client");
    }
    t
}


/// The seeds every story runs (`TABLE_SEEDS=a-b` for a sweep).
fn seeds() -> Vec<u64> {
    seeds_of("TABLE_SEEDS")
}

mod common;
use common::seeds as seeds_of;

type Agent = common::Agent<TableClient>;

fn run<F: Future<Output = ()> + 'static>(seed: u64, f: impl FnOnce() -> F + Send + 'static) {
    common::run(seed, "TABLE_SEEDS", f)
}

struct Cluster {
    world: World,
    cfg: TableConfig,
    agents: BTreeMap<String, Agent>,
}

impl Cluster {
    fn agent(&self, name: &str) -> &Agent {
        &self.agents[name]
    }
    fn ctl_agents(&self) -> Vec<Agent> {
        ["ctl-client-0", "ctl-client-1", "ctl-client-2"].iter().map(|n| self.agents[*n].clone()).collect()
    }
    fn zone_of(&self, n: NodeId) -> String {
        self.world.topology().zone_name(self.world.topology().zone_of(n)).to_string()
    }
    fn name(&self, n: NodeId) -> String {
        self.world.topology().node(n).name.clone()
    }
    fn obs(&self) -> TableObserverData {
        self.cfg.observer.snapshot()
    }
    /// The current owner of every partition (from the newest failover).
    fn owners(&self) -> BTreeMap<PartitionId, Option<NodeId>> {
        let mut m = BTreeMap::new();
        for f in self.obs().failovers {
            match f.cause {
                FailoverCause::Split | FailoverCause::Merged => {
                    m.remove(&f.partition);
                }
                _ => {
                    m.insert(f.partition, f.to);
                }
            }
        }
        m
    }
}

async fn cluster<S, Fut>(seed: u64, tune: impl Fn(&mut TableConfig), story: S) -> (World, TableObserverData)
where
    S: FnOnce(Cluster) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    cluster_with(seed, false, tune, story).await
}

/// [`cluster`] whose world keeps its event log (`World::take_events`).
async fn cluster_with<S, Fut>(seed: u64, keep_events: bool, tune: impl Fn(&mut TableConfig), story: S) -> (World, TableObserverData)
where
    S: FnOnce(Cluster) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let world = World::new(seed, topo(), DiskConfig::default(), keep_events);
    let t = world.topology();
    let metas = t.nodes_with_role("meta");
    let mut cfg = TableConfig::new(ServiceConfig::new(metas.clone()), t.nodes_with_role("storage"), t.nodes_with_role("master"), t.nodes_with_role("server"), t.nodes_with_role("proxy"));
    tune(&mut cfg);
    for r in metas {
        let c = cfg.meta();
        world.start_node(r, move |ctx| serve_meta(ctx, c.clone()));
    }
    for s in t.nodes_with_role("storage") {
        let c = cfg.stream.clone();
        world.start_node(s, move |ctx| serve_storage(ctx, c.clone()));
    }
    for m in t.nodes_with_role("manager") {
        let c = cfg.stream.clone();
        world.start_node(m, move |ctx| serve_manager(ctx, c.clone()));
    }
    for m in t.nodes_with_role("master") {
        let c = cfg.clone();
        world.start_node(m, move |ctx| master::serve(ctx, c.clone()));
    }
    for s in t.nodes_with_role("server") {
        let c = cfg.clone();
        world.start_node(s, move |ctx| server::serve(ctx, c.clone()));
    }
    for p in t.nodes_with_role("proxy") {
        let c = cfg.clone();
        world.start_node(p, move |ctx| proxy::serve(ctx, c.clone()));
    }
    let mut agents = BTreeMap::new();
    for a in t.nodes_with_role("client") {
        let c = cfg.clone();
        let agent = Agent::start(&world, a, move |ctx| {
            let c = c.clone();
            async move { TableClient::bind(&ctx, &c, INSTANCE, KEY).await }
        });
        agents.insert(t.node(a).name.clone(), agent);
    }
    let done = Arc::new(Mutex::new(false));
    let d2 = done.clone();
    let story = Arc::new(Mutex::new(Some(story)));
    let driver = t.nodes_with_role("driver")[0];
    let cl = Arc::new(Mutex::new(Some(Cluster { world: world.clone(), cfg: cfg.clone(), agents })));
    world.start_node(driver, move |_ctx| {
        let (story, cl, done) = (story.lock().unwrap().take(), cl.lock().unwrap().take(), d2.clone());
        async move {
            let (Some(story), Some(cl)) = (story, cl) else { return };
            time::sleep(Duration::from_millis(500)).await;
            time::timeout(Duration::from_secs(180), story(cl)).await.expect("the story finishes within 180 s of model time");
            *done.lock().unwrap() = true;
        }
    });
    while !*done.lock().unwrap() {
        time::sleep(Duration::from_millis(5)).await;
    }
    (world.clone(), cfg.observer.snapshot())
}

fn key(i: usize) -> String {
    format!("k{i:03}")
}

/// Creates the instance and the table (four partitions) and waits until
/// every partition answers.
async fn setup(cl: &Cluster) {
    cl.agent("ctl-client-0")
        .run(|c| async move {
            c.create_instance(INSTANCE, KEY).await.expect("create instance");
            let splits = vec![key(25), key(50), key(75)];
            let pids = c.create_table(INSTANCE, TABLE, 4, splits).await.expect("create table");
            assert_eq!(pids.len(), 4);
            for i in [0, 30, 60, 90] {
                let mut ok = false;
                for _ in 0..100 {
                    if c.get(TABLE, &key(i)).await.is_ok() {
                        ok = true;
                        break;
                    }
                    time::sleep(Duration::from_millis(100)).await;
                }
                assert!(ok, "partition of {} serves after start-up", key(i));
            }
        })
        .await;
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AppendOutcome {
    Ok(u64),
    Unknown,
    Failed,
}

/// What the workload did.
#[derive(Default, Debug)]
struct Record {
    /// key -> (highest version acknowledged, highest version attempted)
    writes: BTreeMap<String, (u64, u64)>,
    appends: BTreeMap<String, Vec<AppendOutcome>>,
    /// (completion time, ok) of every operation.
    ops: Vec<(SimTime, bool)>,
    /// key -> (acknowledgement time, version) of every acknowledged write.
    acks: BTreeMap<String, Vec<(SimTime, u64)>>,
    /// (key, version read, invocation time) of every successful read.
    reads: Vec<(String, u64, SimTime)>,
    unknown: u64,
}

type Rec = Arc<Mutex<Record>>;

/// Starts `writers` writer workers and `appenders` appenders on the ctl
/// clients; they run until `stop` is set.
fn start_load(cl: &Cluster, writers: usize, appenders: usize, stop: Arc<AtomicBool>, rec: Rec) -> Vec<oneshot::Receiver<()>> {
    let agents = cl.ctl_agents();
    let mut done = Vec::new();
    for w in 0..writers {
        let (stop, rec) = (stop.clone(), rec.clone());
        done.push(agents[w % agents.len()].start_job(move |c| async move {
            let mine: Vec<String> = (0..KEYS).filter(|i| i % writers == w).map(key).collect();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = &mine[(n as usize) % mine.len()];
                let v = {
                    let mut r = rec.lock().unwrap();
                    let e = r.writes.entry(k.clone()).or_default();
                    e.1 += 1;
                    e.1
                };
                let res = c.put(TABLE, k, &format!("{v}")).await;
                {
                    let mut r = rec.lock().unwrap();
                    match &res {
                        Ok(()) => {
                            let e = r.writes.get_mut(k).unwrap();
                            e.0 = e.0.max(v);
                            r.acks.entry(k.clone()).or_default().push((time::now(), v));
                        }
                        Err(TableError::Unknown(_)) => r.unknown += 1,
                        Err(_) => {}
                    }
                    r.ops.push((time::now(), res.is_ok()));
                }
                n += 1;
                time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for a in 0..appenders {
        let (stop, rec) = (stop.clone(), rec.clone());
        done.push(agents[a % agents.len()].start_job(move |c| async move {
            let pkey = format!("k{:03}q{a}", (a * 25 + 12) % KEYS);
            while !stop.load(Ordering::Relaxed) {
                let res = c.append(TABLE, &pkey).await;
                let o = match res {
                    Ok(v) => AppendOutcome::Ok(v),
                    Err(TableError::Unknown(_)) => AppendOutcome::Unknown,
                    Err(_) => AppendOutcome::Failed,
                };
                {
                    let mut r = rec.lock().unwrap();
                    r.ops.push((time::now(), matches!(o, AppendOutcome::Ok(_))));
                    r.appends.entry(pkey.clone()).or_default().push(o);
                }
                time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    done
}

/// The keys of one of the table's first four partitions (ids 1..=4).
fn keys_of(pid: PartitionId) -> Vec<String> {
    let p = pid as usize - 1;
    (p * 25..(p + 1) * 25).map(key).collect()
}

/// Starts a reader on `agent` that reads `keys` in turn until `stop`.
fn start_reader(agent: &Agent, keys: Vec<String>, stop: Arc<AtomicBool>, rec: Rec) -> oneshot::Receiver<()> {
    agent.start_job(move |c| async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let k = keys[i % keys.len()].clone();
            let at = time::now();
            if let Ok(v) = c.get(TABLE, &k).await {
                let v = v.map_or(0, |s| s.parse().expect("a version"));
                rec.lock().unwrap().reads.push((k, v, at));
            }
            i += 1;
            time::sleep(Duration::from_millis(10)).await;
        }
    })
}

async fn stop_load(stop: &AtomicBool, done: Vec<oneshot::Receiver<()>>) {
    stop.store(true, Ordering::Relaxed);
    for d in done {
        let _ = d.await;
    }
}

/// Every acknowledged write is readable; appends are +1 consecutive.
async fn check_record(cl: &Cluster, rec: &Rec) {
    let writes = rec.lock().unwrap().writes.clone();
    let appends = rec.lock().unwrap().appends.clone();
    assert!(!writes.is_empty(), "the workload wrote");
    let got = cl
        .agent("ctl-client-0")
        .run(move |c| async move {
            let mut got = BTreeMap::new();
            for k in writes.keys() {
                let mut v = None;
                for _ in 0..50 {
                    match c.get(TABLE, k).await {
                        Ok(x) => {
                            v = Some(x);
                            break;
                        }
                        Err(_) => time::sleep(Duration::from_millis(100)).await,
                    }
                }
                got.insert(k.clone(), v.unwrap_or_else(|| panic!("final read of {k} never succeeded")));
            }
            // One more append per key: the counter continues at +1.
            let mut next = BTreeMap::new();
            for pkey in appends.keys() {
                let mut v = None;
                for _ in 0..20 {
                    if let Ok(x) = c.append(TABLE, pkey).await {
                        v = Some(x);
                        break;
                    }
                }
                next.insert(pkey.clone(), v.expect("final append"));
            }
            (got, next)
        })
        .await;
    let (got, next) = got;
    let r = rec.lock().unwrap();
    for (k, (acked, attempted)) in &r.writes {
        let v: u64 = got[k].as_deref().map_or(0, |s| s.parse().expect("a version"));
        assert!(v >= *acked, "{k}: read version {v}, but version {acked} was acknowledged (lost write)");
        assert!(v <= *attempted, "{k}: read version {v} never written");
    }
    // No stale read: a read sees at least the newest version acknowledged
    // before it began.
    for (k, v, at) in &r.reads {
        let newest = r.acks.get(k).and_then(|a| a.iter().filter(|(t, _)| t < at).map(|(_, v)| *v).max()).unwrap_or(0);
        assert!(*v >= newest, "{k}: a read begun at {at} saw version {v}, but version {newest} was acknowledged before");
    }
    for (pkey, outcomes) in &r.appends {
        let mut last = 0u64;
        let mut unknown = 0u64;
        for o in outcomes {
            match o {
                AppendOutcome::Ok(v) => {
                    assert!(*v > last, "{pkey}: append value {v} after {last}");
                    assert!(v - last - 1 <= unknown, "{pkey}: append jumped from {last} to {v} with {unknown} unknown outcomes between (applied twice?)");
                    last = *v;
                    unknown = 0;
                }
                AppendOutcome::Unknown => unknown += 1,
                AppendOutcome::Failed => {}
            }
        }
        let n = next[pkey];
        assert!(n > last && n - last - 1 <= unknown, "{pkey}: final append {n} after {last} with {unknown} unknown");
    }
}

/// No two servers served one partition at overlapping times: for two
/// serving intervals at different (server, epoch), the older epoch's last
/// answer comes before the newer epoch's start.
fn check_no_split_brain(obs: &TableObserverData) {
    let mut by_part: BTreeMap<PartitionId, Vec<_>> = BTreeMap::new();
    for iv in &obs.serving {
        by_part.entry(iv.partition).or_default().push(iv.clone());
    }
    for (pid, ivs) in by_part {
        for a in &ivs {
            for b in &ivs {
                if a.epoch < b.epoch {
                    assert!(a.last_served <= b.start, "partition {pid}: server {} (epoch {}) answered at {} after server {} (epoch {}) began serving at {}", a.server.0, a.epoch, a.last_served, b.server.0, b.epoch, b.start);
                }
            }
        }
    }
    // Partitions with overlapping ranges (a split's parent and children, a
    // merge's halves and result) never serve at once either.
    let overlap = |a: &engine::table::ServingInterval, b: &engine::table::ServingInterval| {
        let a_before_b_end = b.end_key.as_ref().is_none_or(|e| a.start_key < *e);
        let b_before_a_end = a.end_key.as_ref().is_none_or(|e| b.start_key < *e);
        a_before_b_end && b_before_a_end
    };
    for a in &obs.serving {
        for b in &obs.serving {
            if a.partition != b.partition && overlap(a, b) && a.start <= b.start {
                assert!(a.last_served <= b.start, "partitions {} and {} overlap in keys, and {} answered at {} after {} began serving at {}", a.partition, b.partition, a.partition, a.last_served, b.partition, b.start);
            }
        }
    }
}

/// Time from `at` until every partition in `pids` is served again by an
/// owner that began after `at` (seconds, per partition).
fn recovery_times(obs: &TableObserverData, at: SimTime, pids: &[PartitionId]) -> Vec<f64> {
    pids.iter()
        .map(|p| {
            let start = obs.serving.iter().filter(|iv| iv.partition == *p && iv.start > at).map(|iv| iv.start).min().unwrap_or_else(|| panic!("partition {p} never served again after {at}"));
            start.saturating_sub(at).as_secs_f64()
        })
        .collect()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ok_between(rec: &Rec, a: SimTime, b: SimTime) -> usize {
    rec.lock().unwrap().ops.iter().filter(|(t, ok)| *ok && *t >= a && *t < b).count()
}

// ---------------------------------------------------------------------------

fn zone_crash_story(seed: u64) -> Vec<f64> {
    let times = Arc::new(Mutex::new(Vec::new()));
    let t2 = times.clone();
    run(seed, move || async move {
        let (_, obs) = cluster(seed, |_| {}, move |cl| async move {
            setup(&cl).await;
            let rec: Rec = Arc::default();
            let stop = Arc::new(AtomicBool::new(false));
            let done = start_load(&cl, 6, 3, stop.clone(), rec.clone());
            time::sleep(Duration::from_secs(2)).await;
            // Crash the zone that owns the most partitions.
            let owners = cl.owners();
            let mut per_zone: BTreeMap<String, Vec<PartitionId>> = BTreeMap::new();
            for (p, o) in &owners {
                per_zone.entry(cl.zone_of(o.expect("owned"))).or_default().push(*p);
            }
            let (zone, victims) = per_zone.into_iter().max_by_key(|(_, v)| v.len()).unwrap();
            let crash_at = time::now();
            cl.world.apply(&Fault::ZoneDown { zone: zone.clone(), mode: ZoneMode::Crash }).unwrap();
            time::sleep(Duration::from_secs(6)).await;
            let obs = cl.obs();
            for (p, o) in cl.owners() {
                let z = cl.zone_of(o.expect("owned"));
                assert_ne!(z, zone, "partition {p} still owned in the crashed zone");
            }
            for f in obs.failovers.iter().filter(|f| f.at > crash_at) {
                println!("  failover {:?} after {:.3}s", f, f.at.saturating_sub(crash_at).as_secs_f64());
            }
            for l in obs.loads.iter().filter(|l| l.0 > crash_at) {
                println!("  load {:?}", l);
            }
            let mut rt = recovery_times(&obs, crash_at, &victims);
            for f in obs.failovers.iter().filter(|f| f.at > crash_at) {
                assert_eq!(f.cause, FailoverCause::ServerDead, "{f:?}");
            }
            let after = ok_between(&rec, crash_at + Duration::from_secs(4), time::now());
            assert!(after > 50, "writes continue after the crash ({after} acknowledged)");
            cl.world.apply(&Fault::ZoneUp { zone }).unwrap();
            time::sleep(Duration::from_secs(1)).await;
            stop_load(&stop, done).await;
            check_record(&cl, &rec).await;
            println!("seed {seed}: zone crash: {} partitions moved, time to recover p50 {:.3}s p99 {:.3}s", rt.len(), pct(&mut rt, 0.5), pct(&mut rt, 0.99));
            t2.lock().unwrap().extend(rt);
        })
        .await;
        check_no_split_brain(&obs);
    });
    let v = times.lock().unwrap().clone();
    v
}

#[test]
fn a_zone_crash_moves_partitions_to_the_surviving_zones_within_3s() {
    let mut all = Vec::new();
    for seed in seeds() {
        all.extend(zone_crash_story(seed));
    }
    let (p50, p99) = (pct(&mut all, 0.5), pct(&mut all, 0.99));
    println!("zone crash over {} partition failovers: time to recover p50 {p50:.3}s p99 {p99:.3}s", all.len());
    assert!(p99 <= 3.0, "time to recover p99 {p99:.3}s over 3 s");
}

/// A zone is cut off while one of its table servers' clocks runs behind by
/// almost `max_skew` and the master's runs ahead: its partitions move, and
/// the isolated servers stop serving before the new owners start (a
/// client inside the isolated zone keeps trying to read).
#[test]
fn an_isolated_zone_with_a_skewed_server_clock_has_no_split_brain() {
    for seed in seeds() {
        run(seed, move || async move {
            let (_, obs) = cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                let rec: Rec = Arc::default();
                let stop = Arc::new(AtomicBool::new(false));
                let done = start_load(&cl, 6, 3, stop.clone(), rec.clone());
                time::sleep(Duration::from_secs(2)).await;
                let owners = cl.owners();
                let victim = owners.values().flatten().next().copied().unwrap();
                let zone = cl.zone_of(victim);
                // The server's clock steps back by 150 ms (max_skew is 200 ms)
                // and then runs slow.
                cl.world.apply(&Fault::ClockOffset { node: cl.name(victim), offset_ns: -150_000_000 }).unwrap();
                cl.world.apply(&Fault::ClockDrift { node: cl.name(victim), ppm: -20_000 }).unwrap();
                // The active master's clock steps forward by 150 ms: it
                // believes grants ran out early.
                let (_, m, _) = *cl.obs().master_takeovers.last().expect("a master");
                cl.world.apply(&Fault::ClockOffset { node: cl.name(m), offset_ns: 150_000_000 }).unwrap();
                let at = time::now();
                cl.world.apply(&Fault::ZoneDown { zone: zone.clone(), mode: ZoneMode::Isolate }).unwrap();
                // A client inside the isolated zone keeps reading through its
                // own proxy: the isolated servers must stop answering.
                let reader_stop = Arc::new(AtomicBool::new(false));
                // (only the skewed server's keys: a read of another isolated
                // partition would block this reader until its deadline)
                let local: Vec<String> = owners.iter().filter(|(_, o)| **o == Some(victim)).flat_map(|(p, _)| keys_of(*p)).collect();
                let reader = start_reader(cl.agent(&format!("{zone}-client-0")), local, reader_stop.clone(), rec.clone());
                time::sleep(Duration::from_secs(6)).await;
                reader_stop.store(true, Ordering::Relaxed);
                let isolated_reads = rec.lock().unwrap().reads.iter().filter(|r| r.2 > at).count();
                assert!(isolated_reads > 0, "the isolated client read while its servers held their leases");
                for (p, o) in cl.owners() {
                    assert_ne!(cl.zone_of(o.expect("owned")), zone, "partition {p} still owned in the isolated zone");
                }
                assert!(ok_between(&rec, at + Duration::from_secs(4), time::now()) > 50, "writes continue");
                cl.world.apply(&Fault::ZoneUp { zone }).unwrap();
                cl.world.apply(&Fault::ClockReset { node: cl.name(victim) }).unwrap();
                cl.world.apply(&Fault::ClockReset { node: cl.name(m) }).unwrap();
                let _ = reader.await;
                time::sleep(Duration::from_secs(2)).await;
                stop_load(&stop, done).await;
                check_record(&cl, &rec).await;
            })
            .await;
            check_no_split_brain(&obs);
        });
    }
}

/// The master's messages to one server are cut (it still reaches the
/// master): it hears no grants, stops serving, and its partitions move.
#[test]
fn a_one_way_partition_moves_the_deaf_servers_partitions() {
    for seed in seeds() {
        run(seed, move || async move {
            let (_, obs) = cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                let rec: Rec = Arc::default();
                let stop = Arc::new(AtomicBool::new(false));
                let done = start_load(&cl, 6, 3, stop.clone(), rec.clone());
                time::sleep(Duration::from_secs(2)).await;
                let owners = cl.owners();
                let victim = owners.values().flatten().next().copied().unwrap();
                let mine: Vec<PartitionId> = owners.iter().filter(|(_, o)| **o == Some(victim)).map(|(p, _)| *p).collect();
                let masters: Vec<String> = cl.cfg.masters.iter().map(|&m| cl.name(m)).collect();
                let at = time::now();
                cl.world.apply(&Fault::Partition { a: masters.clone(), b: vec![cl.name(victim)], direction: Direction::OneWay }).unwrap();
                time::sleep(Duration::from_secs(5)).await;
                let owners = cl.owners();
                for p in &mine {
                    assert_ne!(owners[p], Some(victim), "partition {p} still on the deaf server");
                }
                let mut rt = recovery_times(&cl.obs(), at, &mine);
                println!("seed {seed}: one-way: time to recover max {:.3}s", pct(&mut rt, 1.0));
                cl.world.apply(&Fault::Heal { a: masters, b: vec![cl.name(victim)], direction: Direction::OneWay }).unwrap();
                time::sleep(Duration::from_secs(1)).await;
                stop_load(&stop, done).await;
                check_record(&cl, &rec).await;
            })
            .await;
            check_no_split_brain(&obs);
        });
    }
}

/// The active master's zone crashes: another master takes over through
/// the metadata store, and partitions of the lost zone move.
#[test]
fn losing_the_masters_zone_fails_the_master_over() {
    for seed in seeds() {
        run(seed, move || async move {
            let (_, obs) = cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                let rec: Rec = Arc::default();
                let stop = Arc::new(AtomicBool::new(false));
                let done = start_load(&cl, 6, 3, stop.clone(), rec.clone());
                time::sleep(Duration::from_secs(2)).await;
                let (_, m, e) = *cl.obs().master_takeovers.last().expect("a master");
                let zone = cl.zone_of(m);
                let at = time::now();
                cl.world.apply(&Fault::ZoneDown { zone: zone.clone(), mode: ZoneMode::Crash }).unwrap();
                time::sleep(Duration::from_secs(7)).await;
                let obs = cl.obs();
                let (t, m2, e2) = *obs.master_takeovers.last().unwrap();
                assert!(e2 > e && cl.zone_of(m2) != zone, "a master in another zone took over");
                println!("seed {seed}: master failover after {:.3}s", t.saturating_sub(at).as_secs_f64());
                for (p, o) in cl.owners() {
                    assert_ne!(cl.zone_of(o.expect("owned")), zone, "partition {p} still owned in the crashed zone");
                }
                assert!(ok_between(&rec, at + Duration::from_secs(5), time::now()) > 50, "writes continue");
                cl.world.apply(&Fault::ZoneUp { zone }).unwrap();
                time::sleep(Duration::from_secs(1)).await;
                stop_load(&stop, done).await;
                check_record(&cl, &rec).await;
            })
            .await;
            check_no_split_brain(&obs);
        });
    }
}

/// A server answers only for the partitions it owns and only for keys in
/// their ranges: a request routed to the wrong server, or naming a key
/// outside the partition, gets `NotServingHere` (the proxy then refreshes
/// its map) and touches no data.
#[test]
fn a_server_refuses_partitions_and_keys_it_does_not_own() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                // The story runs on the driver node: a transport of its own
                // talks to the servers directly, as a misrouting proxy would.
                let driver = cl.world.topology().nodes_with_role("driver")[0];
                let (net, _inbox) = Net::<DataMsg>::bind(&NodeCtx { world: cl.world.clone(), id: driver }).await;
                let mut open: BTreeMap<PartitionId, ServingInterval> = BTreeMap::new();
                for iv in cl.obs().serving.into_iter().filter(|i| i.stopped.is_none()) {
                    open.insert(iv.partition, iv);
                }
                assert_eq!(open.len(), 4, "every partition is served");
                let get = |to: NodeId, pid: PartitionId, key: &str| {
                    let (net, msg) = (net.clone(), DataMsg::Partition { pid, op: Op::Get { table: TABLE.into(), key: key.into() }, rid: None, expires_ms: u64::MAX, hits: 0 });
                    async move {
                        match net.call(to, msg, Duration::from_millis(100)).await {
                            Ok(DataMsg::Response(r)) => r,
                            other => panic!("no answer from node {}: {other:?}", to.0),
                        }
                    }
                };
                let mut refused = 0;
                for p in open.values() {
                    let own = if p.start_key.is_empty() { key(0) } else { p.start_key.clone() };
                    let r = get(p.server, p.partition, &own).await;
                    assert!(r.is_ok(), "partition {} answers for its own key {own}: {r:?}", p.partition);
                    for q in open.values().filter(|q| q.partition != p.partition) {
                        let r = get(p.server, p.partition, &q.start_key).await;
                        assert!(matches!(r, Err(TableError::NotServingHere(x)) if x == p.partition), "partition {} refuses partition {}'s key: {r:?}", p.partition, q.partition);
                        refused += 1;
                        if q.server != p.server {
                            let r = get(p.server, q.partition, &q.start_key).await;
                            assert!(matches!(r, Err(TableError::NotServingHere(x)) if x == q.partition), "node {} refuses partition {} it does not own: {r:?}", p.server.0, q.partition);
                            refused += 1;
                        }
                    }
                }
                assert!(cl.obs().not_serving >= refused);
            })
            .await;
        });
    }
}

/// Heartbeats delivered to each master since the last call.
fn heartbeats_per_master(cl: &Cluster) -> BTreeMap<NodeId, u64> {
    let mut n: BTreeMap<NodeId, u64> = cl.cfg.masters.iter().map(|&m| (m, 0)).collect();
    for e in cl.world.take_events() {
        if let sim::Event::Deliver { to, kind: "tb-heartbeat", .. } = e {
            *n.entry(NodeId(to)).or_default() += 1;
        }
    }
    n
}

/// Servers heartbeat only the acting master; when it dies they heartbeat
/// every master until the new one grants, then only that one.
#[test]
fn servers_heartbeat_the_acting_master_and_find_the_next_one() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster_with(seed, true, |_| {}, move |cl| async move {
                setup(&cl).await;
                time::sleep(Duration::from_secs(1)).await;
                let servers = cl.cfg.servers.len() as u64;
                let beats = Duration::from_secs(2).as_millis() as u64 / cl.cfg.heartbeat.as_millis() as u64;
                let _ = heartbeats_per_master(&cl);
                time::sleep(Duration::from_secs(2)).await;
                let (_, m, _) = *cl.obs().master_takeovers.last().expect("a master");
                let n = heartbeats_per_master(&cl);
                println!("seed {seed}: heartbeats per master {n:?}, acting {m:?}");
                assert!(n[&m].abs_diff(servers * beats) <= 2 * servers, "every server heartbeats the acting master every period: {n:?}");
                assert!(n.iter().all(|(&o, &c)| o == m || c == 0), "nobody heartbeats a standby master: {n:?}");
                let name = cl.world.topology().node(m).name.clone();
                cl.world.apply(&Fault::NodeCrash { node: name }).unwrap();
                time::sleep(Duration::from_secs(8)).await;
                let (_, m2, _) = *cl.obs().master_takeovers.last().unwrap();
                assert_ne!(m2, m, "another master took over");
                let _ = heartbeats_per_master(&cl);
                time::sleep(Duration::from_secs(2)).await;
                let n = heartbeats_per_master(&cl);
                println!("seed {seed}: after the failover {n:?}, acting {m2:?}");
                assert!(n[&m2].abs_diff(servers * beats) <= 2 * servers, "every server found the new master: {n:?}");
                assert!(n.iter().all(|(&o, &c)| o == m2 || c == 0), "and heartbeats only it: {n:?}");
            })
            .await;
        });
    }
}

/// Missing and wrong keys, unknown instances and another instance's table
/// are refused with `Auth`, counted, and never reach a partition.
#[test]
fn bad_credentials_and_cross_instance_access_are_refused_and_never_touch_data() {
    for seed in seeds().into_iter().take(1) {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                cl.agent("ctl-client-1")
                    .run(|c| async move {
                        c.create_instance("i2", "other-key").await.unwrap();
                        c.create_table("i2", "t2", 1, vec![]).await.unwrap();
                        c.with_credentials("i2", "other-key").put("t2", "k001", "theirs").await.expect("i2 writes its own table");
                    })
                    .await;
                let before = cl.obs();
                let cases: Vec<(&str, &str, &str)> = vec![("i1", "", TABLE), ("i1", "wrong", TABLE), ("nope", "x", TABLE), ("i1", KEY, "t2"), ("i2", "other-key", TABLE)];
                for (inst, k, table) in cases {
                    let (inst, k, table) = (inst.to_string(), k.to_string(), table.to_string());
                    let (r1, r2) = cl
                        .agent("az1-client-0")
                        .run(move |c| async move {
                            let c = c.with_credentials(&inst, &k);
                            (c.put(&table, "k001", "evil").await, c.get(&table, "k001").await)
                        })
                        .await;
                    assert!(matches!(r1, Err(TableError::Auth(_))), "{r1:?}");
                    assert!(matches!(r2, Err(TableError::Auth(_))), "{r2:?}");
                }
                let after = cl.obs();
                assert_eq!(after.data_requests, before.data_requests, "refused requests reached a partition");
                let refused: u64 = after.auth_refused.values().sum::<u64>() - before.auth_refused.values().sum::<u64>();
                assert_eq!(refused, 10, "every refusal counted: {:?}", after.auth_refused);
                // Invalid requests are refused too, before any server.
                let r = cl.agent("az2-client-0").run(|c| async move { c.put(TABLE, "bad key", "v").await }).await;
                assert!(matches!(r, Err(TableError::Refused(_))), "{r:?}");
                let (a, b) = cl
                    .agent("az2-client-0")
                    .run(|c| async move { (c.get(TABLE, "k001").await, c.with_credentials("i2", "other-key").get("t2", "k001").await) })
                    .await;
                assert_eq!(a, Ok(None), "the refused writes left i1's row untouched");
                assert_eq!(b, Ok(Some("theirs".into())), "and i2's");
                assert_eq!(cl.obs().invalid_refused, 1);
                println!("auth story done at {}: {:?}", time::now(), cl.obs().auth_refused);
            })
            .await;
        });
    }
}

/// A conditional write's failure is final for its request id: an attempt
/// of the same request that arrives later (a delayed first attempt, after
/// the client was told "condition failed") gets the recorded failure, also
/// once the condition would now hold, and writes nothing. Without the
/// record, that late attempt applies a write its client was told had
/// failed.
#[test]
fn a_failed_condition_is_final_for_its_request_id() {
    for seed in seeds().into_iter().take(1) {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                let (first, late, plain, row) = cl
                    .agent("az1-client-0")
                    .run(|c| async move {
                        let k = key(7);
                        c.put(TABLE, &k, "there").await.expect("put");
                        let cas = |v: &str| Op::Cas { table: TABLE.into(), key: k.clone(), expected: None, value: v.into() };
                        let rid = ReqId { client: c.client_id(), seq: 1 << 40 };
                        let first = c.op_with(cas("late"), Some(rid)).await;
                        c.delete(TABLE, &k).await.expect("delete");
                        let late = c.op_with(cas("late"), Some(rid)).await;
                        // A new request id judges the condition afresh.
                        let plain = c.op_with(cas("fresh"), Some(ReqId { seq: rid.seq + 1, ..rid })).await;
                        (first, late, plain, c.get(TABLE, &k).await)
                    })
                    .await;
                assert_eq!(first, Err(TableError::ConditionFailed(Some("there".into()))));
                assert_eq!(late, first, "the late attempt gets the recorded failure");
                assert_eq!(plain, Ok(OpResult::Done));
                assert_eq!(row, Ok(Some("fresh".into())), "the late attempt wrote nothing");
                assert!(cl.obs().dedupe_hits >= 1);
            })
            .await;
        });
    }
}

/// Lossy links between clients, proxies and servers: retries keep their
/// request ids, so no append is applied twice (the values stay +1
/// consecutive) and no acknowledged write is lost.
#[test]
fn lossy_links_cause_retries_but_no_double_apply() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                let rec: Rec = Arc::default();
                let stop = Arc::new(AtomicBool::new(false));
                let done = start_load(&cl, 3, 6, stop.clone(), rec.clone());
                let front: Vec<String> = vec!["ctl".into()];
                let proxies: Vec<String> = cl.cfg.proxies.iter().map(|&p| cl.name(p)).collect();
                let servers: Vec<String> = cl.cfg.servers.iter().map(|&s| cl.name(s)).collect();
                for (a, b) in [(&front, &proxies), (&proxies, &servers)] {
                    cl.world.apply(&Fault::Loss { a: a.clone(), b: b.clone(), rate: 0.1 }).unwrap();
                }
                time::sleep(Duration::from_secs(8)).await;
                for (a, b) in [(&front, &proxies), (&proxies, &servers)] {
                    cl.world.apply(&Fault::LossOff { a: a.clone(), b: b.clone() }).unwrap();
                }
                stop_load(&stop, done).await;
                let obs = cl.obs();
                assert!(obs.dedupe_hits > 0 || rec.lock().unwrap().unknown == 0, "retried writes were answered from the de-duplication table");
                let appends: usize = rec.lock().unwrap().appends.values().map(|v| v.iter().filter(|o| matches!(o, AppendOutcome::Ok(_))).count()).sum();
                {
                    let r = rec.lock().unwrap();
                    println!("seed {seed}: lossy: {appends} appends acknowledged, {} unknown writes, appends tried per key {:?}", r.unknown, r.appends.values().map(|v| v.len()).collect::<Vec<_>>());
                }
                assert!(appends > 50, "appends went through ({appends})");
                check_record(&cl, &rec).await;
                println!("seed {seed}: lossy: {appends} appends acknowledged, {} de-duplicated retries", obs.dedupe_hits);
            })
            .await;
        });
    }
}

/// Under load: a partition moves to a named server, one splits at a key,
/// and the two halves merge again. Nothing acknowledged is lost, appends
/// stay +1 consecutive, and no two servers serve one partition at once.
#[test]
fn move_split_and_merge_under_load() {
    for seed in seeds() {
        run(seed, move || async move {
            let (_, obs) = cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                let rec: Rec = Arc::default();
                let stop = Arc::new(AtomicBool::new(false));
                let mut done = start_load(&cl, 6, 4, stop.clone(), rec.clone());
                done.push(start_reader(cl.agent("ctl-client-1"), (0..KEYS).map(key).collect(), stop.clone(), rec.clone()));
                time::sleep(Duration::from_secs(1)).await;
                let owners = cl.owners();
                let (&pid, &owner) = owners.iter().next().unwrap();
                let to = *cl.cfg.servers.iter().find(|&&s| Some(s) != owner).unwrap();
                let admin = cl.agent("ctl-client-2").clone();
                admin.run(move |c| async move { c.move_partition(pid, to).await.expect("move") }).await;
                assert_eq!(cl.owners()[&pid], Some(to), "moved");
                time::sleep(Duration::from_secs(1)).await;
                // Split the partition holding k030..k049 at k037.
                let target = *cl.owners().keys().nth(1).unwrap();
                let halves = admin.run(move |c| async move { c.split(target, &key(37)).await.expect("split") }).await;
                assert_eq!(halves.len(), 2);
                time::sleep(Duration::from_secs(2)).await;
                let merged = admin.run(move |c| async move { c.merge(halves[0], halves[1]).await.expect("merge") }).await;
                assert_eq!(merged.len(), 1);
                time::sleep(Duration::from_secs(2)).await;
                let obs = cl.obs();
                assert!(obs.failovers.iter().any(|f| f.cause == FailoverCause::Moved));
                assert!(obs.failovers.iter().any(|f| f.cause == FailoverCause::Split));
                assert!(obs.failovers.iter().any(|f| f.cause == FailoverCause::Merged));
                stop_load(&stop, done).await;
                check_record(&cl, &rec).await;
                // A scan over the merged range sees its rows in order.
                let rows = cl.agent("ctl-client-0").run(|c| async move { c.scan(TABLE, &key(20), &key(60), 1000).await.expect("scan") }).await;
                let keys: Vec<&String> = rows.iter().map(|(k, _)| k).collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "scan in key order");
                assert!(rows.iter().filter(|(k, _)| k.len() == 4).count() == 40, "every written key of k020..k059 in the scan: {}", rows.len());
            })
            .await;
            check_no_split_brain(&obs);
        });
    }
}

/// A table server and the active master crash together and restart from
/// their disks 3 s later: the server's partitions move, another master
/// takes over, and afterwards the restarted server takes a partition again
/// (state comes back from the metadata store and the streams).
#[test]
fn a_server_and_the_master_crash_and_restart() {
    for seed in seeds() {
        run(seed, move || async move {
            let (_, obs) = cluster(seed, |_| {}, move |cl| async move {
                setup(&cl).await;
                let rec: Rec = Arc::default();
                let stop = Arc::new(AtomicBool::new(false));
                let done = start_load(&cl, 6, 3, stop.clone(), rec.clone());
                time::sleep(Duration::from_secs(1)).await;
                let (_, m, e) = *cl.obs().master_takeovers.last().expect("a master");
                let owners = cl.owners();
                let victim = owners.values().flatten().copied().find(|&s| cl.zone_of(s) != cl.zone_of(m)).expect("a server outside the master's zone");
                let mine: Vec<PartitionId> = owners.iter().filter(|(_, o)| **o == Some(victim)).map(|(p, _)| *p).collect();
                let at = time::now();
                for n in [m, victim] {
                    cl.world.apply(&Fault::NodeCrash { node: cl.name(n) }).unwrap();
                }
                time::sleep(Duration::from_secs(3)).await;
                for n in [m, victim] {
                    cl.world.apply(&Fault::NodeRestart { node: cl.name(n) }).unwrap();
                }
                let owners = cl.owners();
                for p in &mine {
                    assert_ne!(owners[p], Some(victim), "partition {p} still on the crashed server");
                }
                let mut rt = recovery_times(&cl.obs(), at, &mine);
                let takeovers = cl.obs().master_takeovers;
                let (_, m2, e2) = *takeovers.last().unwrap();
                assert!(e2 > e && m2 != m, "another master took over");
                assert!(takeovers.windows(2).all(|w| w[0].2 < w[1].2), "master epochs increase");
                println!("seed {seed}: server + master crash: time to recover max {:.3}s", pct(&mut rt, 1.0));
                time::sleep(Duration::from_secs(2)).await;
                // The restarted server takes a partition again.
                let pid = *cl.owners().keys().next().unwrap();
                cl.agent("ctl-client-2").run(move |c| async move { c.move_partition(pid, victim).await.expect("move to the restarted server") }).await;
                assert_eq!(cl.owners()[&pid], Some(victim));
                let k = keys_of(pid)[0].clone();
                let r = cl.agent("ctl-client-2").run(move |c| async move { c.get(TABLE, &k).await }).await;
                assert!(r.is_ok(), "the restarted server serves: {r:?}");
                stop_load(&stop, done).await;
                check_record(&cl, &rec).await;
            })
            .await;
            check_no_split_brain(&obs);
        });
    }
}

/// One seed, run twice, gives one event digest.
#[test]
fn one_seed_replays_the_same_run() {
    let digest = |seed: u64| {
        let out = Arc::new(Mutex::new(None));
        let o2 = out.clone();
        run(seed, move || async move {
            let (world, _) = cluster(seed, |_| {}, |cl| async move {
                setup(&cl).await;
                let rec: Rec = Arc::default();
                let stop = Arc::new(AtomicBool::new(false));
                let done = start_load(&cl, 3, 2, stop.clone(), rec.clone());
                time::sleep(Duration::from_secs(1)).await;
                cl.world.apply(&Fault::ZoneDown { zone: "az3".into(), mode: ZoneMode::Crash }).unwrap();
                time::sleep(Duration::from_secs(3)).await;
                stop_load(&stop, done).await;
            })
            .await;
            *o2.lock().unwrap() = Some(world.digest());
        });
        let d = out.lock().unwrap().take().unwrap();
        d
    };
    let a = digest(7);
    let b = digest(7);
    assert_eq!(a, b, "same seed, same digest");
    assert_ne!(a, digest(8), "another seed, another run");
}

/// A scan that crosses partitions returns exactly its limit, in key order,
/// stopping in the partition where the limit is reached.
#[test]
fn a_scan_across_partitions_returns_its_limit_in_key_order() {
    let seed = seeds()[0];
    run(seed, move || async move {
        cluster(seed, |_| {}, move |cl| async move {
            setup(&cl).await;
            let rows: Vec<(String, String)> = cl
                .agent("ctl-client-0")
                .run(|c| async move {
                    // Five rows in the first partition, the rest beyond it.
                    for i in 20..34 {
                        c.put(TABLE, &key(i), &format!("v{i}")).await.expect("put");
                    }
                    c.scan(TABLE, &key(20), &key(90), 8).await.expect("scan")
                })
                .await;
            let want: Vec<(String, String)> = (20..28).map(|i| (key(i), format!("v{i}"))).collect();
            assert_eq!(rows, want, "eight rows from two partitions");
            // A limit that the first partition meets exactly ends there.
            let rows = cl.agent("ctl-client-0").run(|c| async move { c.scan(TABLE, &key(20), &key(90), 5).await.expect("scan") }).await;
            assert_eq!(rows.len(), 5);
            let rows = cl.agent("ctl-client-0").run(|c| async move { c.scan(TABLE, &key(20), &key(90), 1000).await.expect("scan") }).await;
            assert_eq!(rows.len(), 14, "every row, across three partitions");
        })
        .await;
    });
}

/// A proxy cut off from the metadata store keeps serving the instance it
/// knows, from its cached credentials, for up to `AUTH_STALE_MAX`; after
/// that it refuses rather than trust credentials it cannot check.
#[test]
fn a_proxy_cut_off_from_metadata_serves_known_instances_until_its_cache_is_too_old() {
    let seed = seeds()[0];
    run(seed, move || async move {
        // The partition map stays fresh throughout: only credentials are read.
        let tune = |c: &mut TableConfig| {
            c.auth_ttl = Duration::from_millis(200);
            c.map_ttl = Duration::from_secs(600);
        };
        cluster(seed, tune, move |cl| async move {
            setup(&cl).await;
            let agent = cl.agent("az1-client-0");
            let get = || agent.run(|c| async move { c.get(TABLE, &key(1)).await });
            assert_eq!(get().await, Ok(None), "a healthy read fills the proxy's caches");
            let t = cl.world.topology();
            let names = |role: &str| t.nodes_with_role(role).into_iter().map(|n| t.node(n).name.clone()).collect::<Vec<_>>();
            let (proxies, metas) = (names("proxy"), names("meta"));
            cl.world.apply(&Fault::Partition { a: proxies.clone(), b: metas.clone(), direction: Direction::Both }).unwrap();
            time::sleep(Duration::from_secs(1)).await;
            assert_eq!(get().await, Ok(None), "served from credentials past their ttl, within AUTH_STALE_MAX");
            time::sleep(routing::AUTH_STALE_MAX).await;
            let r = get().await;
            assert!(matches!(&r, Err(TableError::Unavailable(m)) if m.starts_with("metadata")), "credentials older than AUTH_STALE_MAX are not trusted: {r:?}");
            cl.world.apply(&Fault::Heal { a: proxies, b: metas, direction: Direction::Both }).unwrap();
            time::sleep(Duration::from_secs(1)).await;
            assert_eq!(get().await, Ok(None), "healed, the proxy reads the credentials again");
        })
        .await;
    });
}
