//! Stories about the stream layer: three zones az1..az3, each with one meta
//! replica, three storage nodes and one `agent` (a client node the driver
//! hands jobs to); a `ctl` zone (never faulted) holds the driver, which
//! applies faults, and two more agents (`ctl-agent-0`, the first owner, and
//! `ctl-agent-1`, the second). Every story keeps the owner's acknowledged
//! appends and checks them against reads from every zone.
#![allow(clippy::disallowed_methods)] // one OS thread per madsim runtime, outside the simulation

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::meta::service::serve;
use engine::stream::client::{Namespace, StreamClient};
use engine::stream::manager::{serve_manager, STANDBY_PINGS_PER_DEAD_AFTER};
use engine::stream::replica::serve_storage;
use engine::stream::{Admission, StreamConfig, StreamError};
use sim::disk::{DiskConfig, DiskFaults};
use sim::fault::{Direction, Fault, ZoneMode};
use sim::time;
use sim::topology::{LinkParams, NodeId, Topology, ZoneId};
use sim::world::World;
use tokio::sync::{mpsc, oneshot};

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
        t.add_node(ZoneId(z), "agent");
        t.add_node(ZoneId(z), "manager");
    }
    t.add_node(ZoneId(3), "driver");
    t.add_node(ZoneId(3), "agent");
    t.add_node(ZoneId(3), "agent");
    t
}


mod common;
use common::seeds as seeds_of;

type Agent = common::Agent<StreamClient>;

fn run<F: Future<Output = ()> + 'static>(seed: u64, f: impl FnOnce() -> F + Send + 'static) {
    common::run(seed, "STREAM_SEEDS", f)
}

struct Cluster {
    world: World,
    cfg: StreamConfig,
    agents: BTreeMap<String, Agent>,
}

impl Cluster {
    fn agent(&self, name: &str) -> &Agent {
        &self.agents[name]
    }
    fn zone_agents(&self) -> Vec<Agent> {
        ["az1-agent-0", "az2-agent-0", "az3-agent-0"].iter().map(|n| self.agents[*n].clone()).collect()
    }
    fn storage_in(&self, zone: &str) -> Vec<NodeId> {
        let z = self.world.zone(zone).unwrap();
        self.cfg.storage.iter().copied().filter(|&n| self.world.topology().zone_of(n) == z).collect()
    }
    fn name(&self, n: NodeId) -> String {
        self.world.topology().node(n).name.clone()
    }
}

async fn cluster<S, Fut>(seed: u64, tune: impl Fn(&mut StreamConfig), story: S)
where
    S: FnOnce(Cluster) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    cluster_with(seed, false, tune, story).await
}

/// [`cluster`] whose world keeps its event log (`World::take_events`).
async fn cluster_with<S, Fut>(seed: u64, keep_events: bool, tune: impl Fn(&mut StreamConfig), story: S)
where
    S: FnOnce(Cluster) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let world = World::new(seed, topo(), DiskConfig::default(), keep_events);
    let metas = world.topology().nodes_with_role("meta");
    let storage = world.topology().nodes_with_role("storage");
    let mut cfg = StreamConfig::new(metas.clone(), storage.clone());
    tune(&mut cfg);
    for r in metas {
        let c = cfg.meta.clone();
        world.start_node(r, move |ctx| serve(ctx, c.clone()));
    }
    for s in storage {
        let c = cfg.clone();
        world.start_node(s, move |ctx| serve_storage(ctx, c.clone()));
    }
    for m in world.topology().nodes_with_role("manager") {
        let c = cfg.clone();
        world.start_node(m, move |ctx| serve_manager(ctx, c.clone()));
    }
    let mut agents = BTreeMap::new();
    for a in world.topology().nodes_with_role("agent") {
        let c = cfg.clone();
        let agent = Agent::start(&world, a, move |ctx| {
            let c = c.clone();
            async move { StreamClient::bind(&ctx, c).await }
        });
        agents.insert(world.topology().node(a).name.clone(), agent);
    }
    let done = Arc::new(Mutex::new(false));
    let d2 = done.clone();
    let story = Arc::new(Mutex::new(Some(story)));
    let driver = world.topology().nodes_with_role("driver")[0];
    let cl = Arc::new(Mutex::new(Some(Cluster { world: world.clone(), cfg, agents })));
    world.start_node(driver, move |_ctx| {
        let (story, cl, done) = (story.lock().unwrap().take(), cl.lock().unwrap().take(), d2.clone());
        async move {
            let (Some(story), Some(cl)) = (story, cl) else { return };
            // Let the metadata store elect a leader.
            time::sleep(Duration::from_millis(500)).await;
            // A story that hangs fails instead of running forever.
            time::timeout(Duration::from_secs(120), story(cl)).await.expect("the story finishes within 120 s of model time");
            *done.lock().unwrap() = true;
        }
    });
    while !*done.lock().unwrap() {
        time::sleep(Duration::from_millis(5)).await;
    }
}

/// The owner's record: acknowledged appends by stream offset.
#[derive(Default, Clone)]
struct Acked {
    /// offset -> bytes
    appends: BTreeMap<u64, Vec<u8>>,
    failed: u64,
}

impl Acked {
    /// The acknowledged bytes as one contiguous stream prefix (panics on a
    /// gap: an earlier offset was never acknowledged).
    fn prefix_len(&self) -> u64 {
        self.appends.iter().map(|(o, d)| o + d.len() as u64).max().unwrap_or(0)
    }

    /// Checks `got`, read at `offset`: every acknowledged byte in it is the
    /// acknowledged value, and every acknowledged append below `upto` is
    /// covered.
    fn check(&self, offset: u64, got: &[u8], what: &str) {
        for (&o, d) in &self.appends {
            let end = o + d.len() as u64;
            if end <= offset || o >= offset + got.len() as u64 {
                continue;
            }
            for (i, b) in d.iter().enumerate() {
                let at = o + i as u64;
                if at >= offset && at < offset + got.len() as u64 {
                    assert_eq!(got[(at - offset) as usize], *b, "{what}: byte at {at} differs from the acknowledged append at {o}");
                }
            }
        }
    }
}

/// Appends `n` records of a recognisable pattern, `conc` at a time; returns
/// what was acknowledged.
async fn append_many(ns: &Namespace, stream: &str, tag: u8, n: usize, conc: usize) -> Acked {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let next = Arc::new(Mutex::new(0usize));
    for _ in 0..conc {
        let (ns, stream, acked, next, tx) = (ns.clone(), stream.to_string(), acked.clone(), next.clone(), tx.clone());
        madsim::task::spawn(async move {
            loop {
                let i = {
                    let mut g = next.lock().unwrap();
                    if *g >= n {
                        break;
                    }
                    *g += 1;
                    *g - 1
                };
                let data: Vec<u8> = (0..(50 + i % 200)).map(|j| tag ^ (i as u8).wrapping_add(j as u8)).collect();
                match ns.append(&stream, &data).await {
                    Ok(off) => {
                        let mut a = acked.lock().unwrap();
                        assert!(a.appends.insert(off, data).is_none(), "two appends acknowledged at offset {off}");
                    }
                    Err(_) => acked.lock().unwrap().failed += 1,
                }
            }
            let _ = tx.send(());
        });
    }
    drop(tx);
    while rx.recv().await.is_some() {}
    let a = acked.lock().unwrap().clone();
    // Acknowledged appends never overlap.
    let mut end = 0;
    for (&o, d) in &a.appends {
        assert!(o >= end, "acknowledged appends overlap at {o}");
        end = o + d.len() as u64;
    }
    a
}

/// Reads the whole stream on `agent` and checks it against `acked`: the
/// read covers every acknowledged byte and matches it.
async fn read_back(agent: &Agent, ns: &str, stream: &str, acked: &Acked, what: &str) -> Vec<u8> {
    let (ns, stream) = (ns.to_string(), stream.to_string());
    let got = agent.run(move |c| async move { c.read(&ns, &stream, 0, u64::MAX / 2).await }).await;
    let got = got.unwrap_or_else(|e| panic!("{what}: read failed: {e}"));
    assert!(got.len() as u64 >= acked.prefix_len(), "{what}: read {} bytes, acknowledged up to {}", got.len(), acked.prefix_len());
    acked.check(0, &got, what);
    got
}

async fn open(agent: &Agent, ns: &str) -> Result<Namespace, StreamError> {
    let ns = ns.to_string();
    agent.run(move |c| async move { c.open_namespace(&ns).await }).await
}

/// The seeds every story runs (`STREAM_SEEDS=a-b` for a sweep).
fn seeds() -> Vec<u64> {
    seeds_of("STREAM_SEEDS")
}

#[test]
fn appends_are_acked_on_three_zones_and_read_back_from_every_zone() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let owner = cl.agent("ctl-agent-0");
                let ns = open(owner, "t1").await.expect("open");
                ns.create("log").await.expect("create");
                let acked = append_many(&ns, "log", 1, 400, 16).await;
                assert_eq!(acked.failed, 0, "a healthy cluster acknowledges every append");
                assert_eq!(ns.len("log"), Some(acked.prefix_len()));
                // Non-owner reads of the open extent see what the last `Commit` told the replicas.
                time::sleep(Duration::from_millis(50)).await;
                // Extents have three replicas in three zones.
                let meta = cl.agent("az1-agent-0").run(|c| async move { c.stream_meta("t1", "log").await }).await.unwrap().unwrap();
                for e in &meta.extents {
                    let zones: std::collections::BTreeSet<_> = e.replicas.iter().map(|&r| cl.world.topology().zone_of(r)).collect();
                    assert_eq!(zones.len(), 3, "extent {} spans three zones", e.id);
                }
                for (i, a) in cl.zone_agents().iter().enumerate() {
                    let got = read_back(a, "t1", "log", &acked, &format!("reader in az{}", i + 1)).await;
                    assert_eq!(got.len() as u64, acked.prefix_len(), "nothing beyond the acknowledged end is visible");
                }
                let own = ns.read("log", 0, u64::MAX / 2).await.unwrap();
                acked.check(0, &own, "owner read");
                let obs = cl.cfg.observer.snapshot();
                assert!(!obs.batch_latencies.is_empty());
                let appends: usize = acked.appends.len();
                assert!(obs.batch_bytes.len() < appends, "appends are grouped into batches ({} batches for {appends})", obs.batch_bytes.len());
            })
            .await;
        });
    }
}

/// With `commit_when_idle` off (as the table service runs its streams) an
/// idle writer tells the replicas nothing more: the owner still reads every
/// acknowledged byte (it passes its own acknowledged length), other readers
/// see only what the appends carried (not the last batch), and a new owner
/// seals the open extent and reads everything.
#[test]
fn without_idle_commits_the_owner_and_a_new_owner_read_every_acknowledged_byte() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |c| c.commit_when_idle = false, move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "q").await.expect("open");
                ns.create("log").await.expect("create");
                let acked = append_many(&ns, "log", 9, 100, 8).await;
                assert_eq!(acked.failed, 0, "a healthy cluster acknowledges every append");
                time::sleep(Duration::from_millis(50)).await;
                let own = ns.read("log", 0, u64::MAX / 2).await.expect("owner read");
                assert_eq!(own.len() as u64, acked.prefix_len(), "the owner reads every acknowledged byte");
                acked.check(0, &own, "owner read");
                let other = cl.agent("az1-agent-0").run(|c| async move { c.read("q", "log", 0, u64::MAX / 2).await }).await.expect("other read");
                acked.check(0, &other, "other reader");
                assert!(
                    (other.len() as u64) < acked.prefix_len(),
                    "no idle commit was sent, so the last batch is not visible to other readers ({} of {} bytes)",
                    other.len(),
                    acked.prefix_len()
                );
                let ns2 = open(cl.agent("ctl-agent-1"), "q").await.expect("second open");
                assert_eq!(ns2.len("log"), Some(acked.prefix_len()), "the seal keeps exactly the acknowledged bytes");
                let all = ns2.read("log", 0, u64::MAX / 2).await.expect("new owner read");
                assert_eq!(all.len() as u64, acked.prefix_len());
                acked.check(0, &all, "new owner read");
            })
            .await;
        });
    }
}

/// Starts `append_many` in the background; the result arrives on the
/// returned receiver.
fn append_in_background(ns: &Namespace, stream: &str, tag: u8, n: usize, conc: usize) -> oneshot::Receiver<Acked> {
    let (tx, rx) = oneshot::channel();
    let (ns, stream) = (ns.clone(), stream.to_string());
    madsim::task::spawn(async move {
        let _ = tx.send(append_many(&ns, &stream, tag, n, conc).await);
    });
    rx
}

/// Every replica of every sealed extent holds the extent's sealed bytes
/// (true when no owner change sealed an extent at fewer than all replicas
/// and no disk lied): what "acknowledged only on three disks" promises.
async fn check_sealed_replicas(cl: &Cluster, agent: &str, ns: &str, stream: &str) {
    let (ns, stream) = (ns.to_string(), stream.to_string());
    let problems = cl
        .agent(agent)
        .run(move |c| async move {
            let meta = c.stream_meta(&ns, &stream).await.unwrap().unwrap();
            let mut problems = Vec::new();
            for e in meta.extents.iter().filter(|e| e.sealed_len.is_some()) {
                let len = e.sealed_len.unwrap();
                let mut copies = Vec::new();
                for &r in &e.replicas {
                    match c.read_replica(r, &e.id, len).await {
                        Ok(d) => copies.push(d),
                        Err(err) => problems.push(format!("extent {} replica {r:?} ({len} bytes): {err}", e.id)),
                    }
                }
                if copies.windows(2).any(|w| w[0] != w[1]) {
                    problems.push(format!("extent {}: replicas differ", e.id));
                }
            }
            problems
        })
        .await;
    assert!(problems.is_empty(), "sealed replicas: {problems:#?}");
}

fn zones_of(cl: &Cluster, nodes: &[NodeId]) -> std::collections::BTreeSet<ZoneId> {
    nodes.iter().map(|&n| cl.world.topology().zone_of(n)).collect()
}

/// A zone crashes while the owner appends: the writer seals the extent and
/// goes on across the two surviving zones (three distinct nodes); every
/// acknowledged append is readable from both surviving zones.
fn zone_loss_story(seed: u64, mode: ZoneMode) {
    run(seed, move || async move {
        cluster(seed, |_| {}, move |cl| async move {
            let owner = cl.agent("ctl-agent-0");
            let ns = open(owner, "z").await.expect("open");
            ns.create("log").await.expect("create");
            let bg = append_in_background(&ns, "log", 2, 600, 8);
            time::sleep(Duration::from_millis(30)).await;
            cl.world.apply(&Fault::ZoneDown { zone: "az2".into(), mode }).unwrap();
            let acked = bg.await.unwrap();
            assert!(acked.failed <= 8, "the writer goes on after the zone loss ({} failed)", acked.failed);
            let more = append_many(&ns, "log", 3, 100, 4).await;
            assert_eq!(more.failed, 0, "appends after the zone loss succeed");
            let mut all = acked.clone();
            all.appends.extend(more.appends);
            let meta = cl.agent("az1-agent-0").run(|c| async move { c.stream_meta("z", "log").await }).await.unwrap().unwrap();
            assert!(meta.extents.len() >= 2, "the extent on the lost zone was sealed");
            let last = meta.extents.last().unwrap();
            let az2 = cl.world.zone("az2").unwrap();
            assert!(!zones_of(&cl, &last.replicas).contains(&az2), "the new extent avoids the lost zone: {:?}", last.replicas);
            let distinct: std::collections::BTreeSet<_> = last.replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "three distinct nodes");
            let obs = cl.cfg.observer.snapshot();
            eprintln!("seed {seed} {mode:?}: {} acked, {} failed, {} extents, seals {:?}", acked.appends.len(), acked.failed, meta.extents.len(), obs.seals);
            assert!(obs.seals.iter().any(|s| s.1 == engine::stream::SealCause::ReplicaFailed));
            time::sleep(Duration::from_millis(50)).await;
            for a in ["az1-agent-0", "az3-agent-0"] {
                read_back(cl.agent(a), "z", "log", &all, a).await;
            }
            let own = ns.read("log", 0, u64::MAX / 2).await.unwrap();
            assert_eq!(own.len() as u64, all.prefix_len());
            all.check(0, &own, "owner");
            cl.world.apply(&Fault::ZoneUp { zone: "az2".into() }).unwrap();
            time::sleep(Duration::from_millis(300)).await;
            read_back(cl.agent("az2-agent-0"), "z", "log", &all, "reader in az2 after it returns").await;
        })
        .await;
    });
}

#[test]
fn a_zone_crash_mid_stream_loses_no_acknowledged_append() {
    for seed in seeds() {
        zone_loss_story(seed, ZoneMode::Crash);
    }
}

#[test]
fn an_isolated_zone_mid_stream_loses_no_acknowledged_append() {
    for seed in seeds() {
        zone_loss_story(seed, ZoneMode::Isolate);
    }
}

/// Messages from the owner's zone to az3's storage nodes are dropped (one
/// way; the answers would get through): appends to az3 replicas time out,
/// the writer seals and places the new extent away from az3.
#[test]
fn a_one_way_partition_makes_the_writer_move_away() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "o").await.expect("open");
                ns.create("log").await.expect("create");
                let first = append_many(&ns, "log", 4, 50, 4).await;
                assert_eq!(first.failed, 0);
                let z3: Vec<String> = cl.storage_in("az3").iter().map(|&n| cl.name(n)).collect();
                let cut = Fault::Partition { a: vec!["ctl".into()], b: z3.clone(), direction: Direction::OneWay };
                cl.world.apply(&cut).unwrap();
                let during = append_many(&ns, "log", 5, 200, 8).await;
                assert!(during.failed <= 8, "{} failed", during.failed);
                let meta = ns.client().stream_meta("o", "log").await.unwrap().unwrap();
                let az3 = cl.world.zone("az3").unwrap();
                assert!(!zones_of(&cl, &meta.extents.last().unwrap().replicas).contains(&az3));
                let mut all = first.clone();
                all.appends.extend(during.appends);
                time::sleep(Duration::from_millis(50)).await;
                for a in ["az1-agent-0", "az2-agent-0", "az3-agent-0"] {
                    read_back(cl.agent(a), "o", "log", &all, a).await;
                }
                cl.world.apply(&Fault::Heal { a: vec!["ctl".into()], b: z3, direction: Direction::OneWay }).unwrap();
                check_sealed_replicas(&cl, "az1-agent-0", "o", "log").await;
            })
            .await;
        });
    }
}

/// The first owner is cut off from the metadata store (it still reaches
/// every storage node); a second owner opens the namespace. Every append the
/// first owner makes from then on fails, it learns it is fenced, and none of
/// its bytes become visible; the second owner's appends and everything the
/// first had acknowledged before are read back from every zone.
#[test]
fn a_deposed_owner_cut_off_by_a_partition_makes_nothing_visible() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let ns1 = open(cl.agent("ctl-agent-0"), "f").await.expect("open");
                ns1.create("log").await.expect("create");
                let before = append_many(&ns1, "log", 6, 100, 8).await;
                assert_eq!(before.failed, 0);
                let metas: Vec<String> = cl.cfg.meta.replicas.iter().map(|&m| cl.name(m)).collect();
                let cut = Fault::Partition { a: vec!["ctl-agent-0".into()], b: metas.clone(), direction: Direction::Both };
                cl.world.apply(&cut).unwrap();
                let ns2 = open(cl.agent("ctl-agent-1"), "f").await.expect("second open");
                assert!(ns2.epoch() > ns1.epoch());
                assert_eq!(ns2.len("log"), Some(before.prefix_len()), "the seal keeps exactly the acknowledged bytes");
                // The deposed owner keeps trying.
                let late = append_many(&ns1, "log", 7, 60, 4).await;
                eprintln!("seed {seed}: late appends: {} acked, {} failed", late.appends.len(), late.failed);
                assert!(late.appends.is_empty(), "a deposed owner had appends acknowledged: {:?}", late.appends.keys().collect::<Vec<_>>());
                assert!(ns1.is_deposed(), "the deposed owner learns it is fenced");
                assert_eq!(ns1.append("log", b"x").await, Err(StreamError::Fenced));
                cl.world.apply(&Fault::Heal { a: vec!["ctl-agent-0".into()], b: metas, direction: Direction::Both }).unwrap();
                let after = append_many(&ns2, "log", 8, 100, 8).await;
                assert_eq!(after.failed, 0);
                assert_eq!(*after.appends.keys().next().unwrap(), before.prefix_len(), "the new owner continues at the seal");
                let mut all = before.clone();
                all.appends.extend(after.appends);
                time::sleep(Duration::from_millis(50)).await;
                for a in ["az1-agent-0", "az2-agent-0", "az3-agent-0"] {
                    let got = read_back(cl.agent(a), "f", "log", &all, a).await;
                    assert_eq!(got.len() as u64, all.prefix_len(), "{a}: nothing else is visible");
                }
                assert!(cl.cfg.observer.snapshot().fenced_appends_rejected > 0);
            })
            .await;
        });
    }
}

/// A replica cut off from both owners misses appends the other two
/// replicas hold, and misses the new owner's seal, which takes their
/// length. Once the cut heals, the new owner tells it the sealed length,
/// it lists itself short, and the manager copies the extent to it: every
/// replica of the sealed extent then holds its bytes, although no reader
/// ever asked the short one.
#[test]
fn a_replica_that_missed_the_seal_learns_the_sealed_length_and_is_repaired() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let ns1 = open(cl.agent("ctl-agent-0"), "m").await.expect("open");
                ns1.create("log").await.expect("create");
                let before = append_many(&ns1, "log", 31, 40, 4).await;
                assert_eq!(before.failed, 0);
                let extent = ns1.client().stream_meta("m", "log").await.unwrap().unwrap().extents.last().cloned().expect("an open extent");
                let cut_off = cl.name(extent.replicas[2]);
                let owners = vec!["ctl-agent-0".to_string(), "ctl-agent-1".to_string()];
                let cut = Fault::Partition { a: owners.clone(), b: vec![cut_off.clone()], direction: Direction::Both };
                cl.world.apply(&cut).unwrap();
                // Appends reach two replicas and wait for the third; a new
                // owner seals meanwhile.
                let late = append_in_background(&ns1, "log", 32, 40, 8);
                time::sleep(Duration::from_millis(2)).await;
                let ns2 = open(cl.agent("ctl-agent-1"), "m").await.expect("a new owner");
                let sealed = ns2.client().stream_meta("m", "log").await.unwrap().unwrap().extents.iter().find(|e| e.id == extent.id).and_then(|e| e.sealed_len).expect("sealed");
                eprintln!("seed {seed}: sealed at {sealed}, acknowledged {}", before.prefix_len());
                assert!(sealed > before.prefix_len(), "the seal kept bytes the cut-off replica never got: sealed at {sealed}, acknowledged {}", before.prefix_len());
                let _ = late.await;
                time::sleep(Duration::from_millis(300)).await;
                cl.world.apply(&Fault::Heal { a: owners, b: vec![cut_off], direction: Direction::Both }).unwrap();
                time::sleep(Duration::from_secs(4)).await;
                check_sealed_replicas(&cl, "az1-agent-0", "m", "log").await;
            })
            .await;
        });
    }
}

/// Bits flip as az1's storage nodes write: their replicas are corrupt at
/// rest. A reader in az1 (nearest replica: az1) falls back to another zone
/// and asks the corrupt replica to repair itself; after that, reads from az1
/// need no fallback.
#[test]
fn corrupt_replicas_are_detected_by_reads_and_repaired() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |c| c.extent_bytes_max = 4096, move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "b").await.expect("open");
                ns.create("log").await.expect("create");
                let az1 = cl.storage_in("az1");
                for &n in &az1 {
                    let faults = DiskFaults { bitflip_write_rate: 1.0, ..Default::default() };
                    cl.world.apply(&Fault::DiskFaultsOn { node: cl.name(n), faults }).unwrap();
                }
                let acked = append_many(&ns, "log", 9, 200, 4).await;
                assert_eq!(acked.failed, 0);
                for &n in &az1 {
                    cl.world.apply(&Fault::DiskFaultsOff { node: cl.name(n) }).unwrap();
                }
                let meta = ns.client().stream_meta("b", "log").await.unwrap().unwrap();
                let sealed = meta.extents.iter().filter(|e| e.sealed_len.is_some()).count();
                assert!(sealed >= 3, "small extents fill up and are sealed ({sealed})");
                time::sleep(Duration::from_millis(50)).await;
                let reader = cl.agent("az1-agent-0");
                read_back(reader, "b", "log", &acked, "first read in az1").await;
                let o1 = cl.cfg.observer.snapshot();
                eprintln!("seed {seed}: {sealed} sealed, corrupt {} fallbacks {} repairs {}", o1.corrupt_replicas_detected, o1.read_fallbacks, o1.repairs);
                assert!(o1.corrupt_replicas_detected > 0, "the reader finds the corrupt replicas");
                time::sleep(Duration::from_millis(500)).await;
                let o2 = cl.cfg.observer.snapshot();
                assert!(o2.repairs as usize >= sealed, "every sealed extent's corrupt replica is repaired ({} of {sealed})", o2.repairs);
                // Sealed extents now read from az1 without fallback.
                let sealed_len: u64 = meta.extents.iter().filter_map(|e| e.sealed_len).sum();
                let got = reader.run(move |c| async move { c.read("b", "log", 0, sealed_len).await }).await.unwrap();
                acked.check(0, &got, "after repair");
                let o3 = cl.cfg.observer.snapshot();
                assert_eq!(o3.read_fallbacks, o2.read_fallbacks, "repaired replicas serve reads");
            })
            .await;
        });
    }
}

/// A storage node holding replicas of the open extent crashes mid-stream
/// and restarts: the writer seals and moves on; the node recovers its
/// replicas from disk (a torn tail is cut) and serves reads again.
#[test]
fn a_storage_node_crash_and_restart_loses_nothing() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "c").await.expect("open");
                ns.create("log").await.expect("create");
                let first = append_many(&ns, "log", 10, 50, 4).await;
                let meta = ns.client().stream_meta("c", "log").await.unwrap().unwrap();
                let victim = meta.extents[0].replicas[0];
                let bg = append_in_background(&ns, "log", 11, 300, 8);
                time::sleep(Duration::from_millis(20)).await;
                cl.world.apply(&Fault::NodeCrash { node: cl.name(victim) }).unwrap();
                let during = bg.await.unwrap();
                assert!(during.failed <= 8, "{} failed", during.failed);
                cl.world.apply(&Fault::NodeRestart { node: cl.name(victim) }).unwrap();
                time::sleep(Duration::from_millis(100)).await;
                let mut all = first.clone();
                all.appends.extend(during.appends);
                // Read the first extent straight from the restarted node.
                let meta = ns.client().stream_meta("c", "log").await.unwrap().unwrap();
                let e0 = meta.extents[0].clone();
                let len0 = e0.sealed_len.expect("the first extent was sealed");
                assert!(len0 >= first.prefix_len());
                let zone = cl.world.topology().zone_name(cl.world.topology().zone_of(victim)).to_string();
                let reader = cl.agent(&format!("{zone}-agent-0"));
                let before = cl.cfg.observer.snapshot().read_fallbacks;
                let got = reader.run(move |c| async move { c.read("c", "log", 0, len0).await }).await.unwrap();
                all.check(0, &got, "first extent after the restart");
                assert_eq!(got.len() as u64, len0);
                let _ = before;
                for a in ["az1-agent-0", "az2-agent-0", "az3-agent-0"] {
                    read_back(cl.agent(a), "c", "log", &all, a).await;
                }
            })
            .await;
        });
    }
}

/// Links between the owner and the storage nodes lose 10% of messages:
/// appends are retried with the same bytes, so nothing is written twice.
#[test]
fn lossy_links_cause_retries_but_no_duplicate_bytes() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "l").await.expect("open");
                ns.create("log").await.expect("create");
                let loss = Fault::Loss { a: vec!["ctl-agent-0".into()], b: vec!["az1".into(), "az2".into(), "az3".into()], rate: 0.1 };
                cl.world.apply(&loss).unwrap();
                let acked = append_many(&ns, "log", 12, 300, 8).await;
                cl.world.apply(&Fault::LossOff { a: vec!["ctl-agent-0".into()], b: vec!["az1".into(), "az2".into(), "az3".into()] }).unwrap();
                eprintln!("seed {seed}: lossy: {} acked {} failed", acked.appends.len(), acked.failed);
                assert!(acked.appends.len() >= 250, "most appends succeed ({} acked)", acked.appends.len());
                // The last `Commit` may need retries over the lossy links.
                time::sleep(Duration::from_millis(500)).await;
                for a in ["az1-agent-0", "az2-agent-0", "az3-agent-0"] {
                    let got = read_back(cl.agent(a), "l", "log", &acked, a).await;
                    // Every visible byte belongs to exactly one append: the
                    // acknowledged ones tile the stream without gaps unless
                    // an append failed.
                    if acked.failed == 0 {
                        let covered: u64 = acked.appends.values().map(|d| d.len() as u64).sum();
                        assert_eq!(covered, got.len() as u64, "{a}: no duplicate bytes");
                    }
                }
            })
            .await;
        });
    }
}

/// Two readers never see different bytes at one offset. The owner cannot
/// reach az3's replica, so its last appends sit on two replicas
/// unacknowledged; a reader in az1 reads the stream then. A second owner,
/// which reaches only az3's replica, opens the namespace (sealing at what
/// az3 holds) and appends other bytes. A later read must agree with the
/// first one wherever both returned bytes.
#[test]
fn readers_never_see_uncommitted_bytes_that_a_new_owner_overwrites() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let ns1 = open(cl.agent("ctl-agent-0"), "r").await.expect("open");
                ns1.create("log").await.expect("create");
                let first = append_many(&ns1, "log", 13, 40, 4).await;
                assert_eq!(first.failed, 0);
                let meta = ns1.client().stream_meta("r", "log").await.unwrap().unwrap();
                let az3 = cl.world.zone("az3").unwrap();
                let z3: Vec<String> = cl.storage_in("az3").iter().map(|&n| cl.name(n)).collect();
                assert!(zones_of(&cl, &meta.extents[0].replicas).contains(&az3));
                let cut1 = Fault::Partition { a: vec!["ctl-agent-0".into()], b: z3.clone(), direction: Direction::Both };
                cl.world.apply(&cut1).unwrap();
                let _pending = append_in_background(&ns1, "log", 14, 40, 4);
                time::sleep(Duration::from_millis(30)).await;
                let r1 = cl.agent("az1-agent-0").run(|c| async move { c.read("r", "log", 0, 1 << 30).await }).await.unwrap();
                first.check(0, &r1, "first read");
                let mut z12: Vec<String> = cl.storage_in("az1").iter().map(|&n| cl.name(n)).collect();
                z12.extend(cl.storage_in("az2").iter().map(|&n| cl.name(n)));
                let cut2 = Fault::Partition { a: vec!["ctl-agent-1".into()], b: z12.clone(), direction: Direction::Both };
                cl.world.apply(&cut2).unwrap();
                let ns2 = open(cl.agent("ctl-agent-1"), "r").await.expect("second open");
                cl.world.apply(&Fault::Heal { a: vec!["ctl-agent-1".into()], b: z12, direction: Direction::Both }).unwrap();
                let second = append_many(&ns2, "log", 15, 40, 4).await;
                assert_eq!(second.failed, 0);
                time::sleep(Duration::from_millis(50)).await;
                let r2 = cl.agent("az1-agent-0").run(|c| async move { c.read("r", "log", 0, 1 << 30).await }).await.unwrap();
                let common = r1.len().min(r2.len());
                let diff = (0..common).find(|&i| r1[i] != r2[i]);
                assert_eq!(diff, None, "two reads saw different bytes at one offset (first read {} bytes, second {})", r1.len(), r2.len());
                assert!(r1.len() as u64 <= first.prefix_len(), "the first read saw unacknowledged bytes");
                cl.world.apply(&Fault::Heal { a: vec!["ctl-agent-0".into()], b: z3, direction: Direction::Both }).unwrap();
            })
            .await;
        });
    }
}

mod lsm_on_streams {
    use super::*;
    use engine::lsm::compaction::Shape;
    use engine::lsm::table::{Condition, PkType, PkValue, ReadOptions, RowChange, RowWrite, ScanRequest, Value};
    use engine::lsm::{Dir, Options, Table, TableSchema};
    use engine::stream::files::StreamFiles;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn schema() -> TableSchema {
        TableSchema { name: "t".into(), pk: vec![("p".into(), PkType::Int), ("id".into(), PkType::Int)], auto_increment: None, max_versions: 1, ttl_ms: None }
    }

    fn opts() -> Options {
        Options { memtable_bytes: 4 << 10, table_bytes: 4 << 10, shape: Shape { l0_trigger: 2, l1_bytes: 16 << 10, multiplier: 4 }, ..Options::default() }
    }

    fn row(i: i64) -> RowWrite {
        RowWrite { pk: vec![PkValue::Int(1), PkValue::Int(i)], change: RowChange::Put(vec![("v".into(), Value::Int(i * 7))]), cond: Condition::Ignore }
    }

    /// The LSM runs unchanged on `StreamFiles`: it writes rows (flushing and
    /// compacting into streams) while a storage node crashes; a second owner
    /// re-opens the namespace and recovers every acknowledged row, and the
    /// first owner's writes fail from then on.
    #[test]
    fn the_lsm_on_streams_survives_a_storage_crash_and_a_new_owner_recovers_every_row() {
        for seed in seeds().into_iter().take(2) {
            run(seed, move || async move {
                cluster(seed, |c| c.extent_bytes_max = 2 << 10, move |cl| async move {
                    let victim = cl.storage_in("az2")[0];
                    let (world, vname) = (cl.world.clone(), cl.name(victim));
                    let (p1_tx, p1_rx) = oneshot::channel::<Vec<i64>>();
                    let stop = Arc::new(AtomicBool::new(false));
                    let late: Arc<Mutex<Vec<(time::SimTime, bool)>>> = Arc::default();
                    let (stop2, late2) = (stop.clone(), late.clone());
                    let deposed = cl
                        .agent("ctl-agent-0")
                        .start_job(move |c| async move {
                            let files = StreamFiles::open(&c, "part1").await.expect("open namespace");
                            let (t, _) = Table::open(files.clone(), schema(), opts(), Arc::new(|| 5_000)).await.expect("open table");
                            let mut acked = Vec::new();
                            for i in 0..300 {
                                if i == 100 {
                                    world.apply(&Fault::NodeCrash { node: vname.clone() }).unwrap();
                                }
                                let r = t.write(vec![row(i)]).await;
                                if r.is_ok() {
                                    acked.push(i);
                                }
                            }
                            let _ = p1_tx.send(acked);
                            // Keep writing as the deposed owner.
                            let mut i = 10_000;
                            while !stop2.load(Ordering::Relaxed) {
                                let started = time::now();
                                let ok = t.write(vec![row(i)]).await.is_ok();
                                late2.lock().unwrap().push((started, ok));
                                i += 1;
                                time::sleep(Duration::from_millis(10)).await;
                            }
                            t.kill();
                            files.namespace().is_deposed()
                        });
                    let acked = p1_rx.await.unwrap();
                    assert!(acked.len() >= 290, "the first owner's writes mostly succeed ({} of 300)", acked.len());
                    let stats = cl.cfg.observer.snapshot();
                    assert!(!stats.seals.is_empty(), "extents were sealed (full or after the crash)");
                    let acked2 = acked.clone();
                    let opened_at = cl
                        .agent("ctl-agent-1")
                        .run(move |c| async move {
                            let files = StreamFiles::open(&c, "part1").await.expect("second open");
                            let opened_at = time::now();
                            let (t, _) = Table::open(files, schema(), opts(), Arc::new(|| 5_000)).await.expect("recover table");
                            let req = ScanRequest { start: None, end: None, dir: Dir::Forward, limit: 1000, resume: None, read: ReadOptions::default() };
                            let page = t.scan(&req).await.expect("scan");
                            let got: BTreeMap<i64, Value> = page
                                .rows
                                .iter()
                                .map(|r| {
                                    let PkValue::Int(i) = r.pk[1] else { panic!("pk") };
                                    (i, r.columns["v"][0].1.clone())
                                })
                                .collect();
                            for i in &acked2 {
                                assert_eq!(got.get(i), Some(&Value::Int(i * 7)), "acknowledged row {i} recovered by the new owner");
                            }
                            t.kill();
                            opened_at
                        })
                        .await;
                    time::sleep(Duration::from_millis(300)).await;
                    stop.store(true, Ordering::Relaxed);
                    assert!(deposed.await.unwrap(), "the first owner learned it is fenced");
                    let late = late.lock().unwrap().clone();
                    let after: Vec<_> = late.iter().filter(|(t, _)| *t > opened_at).collect();
                    assert!(!after.is_empty());
                    assert!(after.iter().all(|(_, ok)| !ok), "a write of the deposed owner succeeded");
                })
                .await;
            });
        }
    }
}

/// A zone crashes: the writer moves on (extents in two zones); after the
/// grace period the manager replaces the sealed replicas on the dead zone;
/// when the zone returns it moves replicas back so that every sealed extent
/// spans three zones, and every replica holds its extent's bytes.
#[test]
fn the_acting_manager_pings_every_round_and_the_standbys_often_enough_to_take_over() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster_with(seed, true, |_| {}, move |cl| async move {
                let managers = cl.world.topology().nodes_with_role("manager");
                let _ = cl.world.take_events();
                let window = Duration::from_secs(5);
                time::sleep(window).await;
                let mut pings: BTreeMap<u32, u64> = managers.iter().map(|m| (m.0, 0)).collect();
                for e in cl.world.take_events() {
                    if let sim::Event::Deliver { from, kind: "st-ping", .. } = e {
                        *pings.entry(from).or_default() += 1;
                    }
                }
                let storage = cl.cfg.storage.len() as u64;
                let rounds = window.as_millis() as u64 / cl.cfg.heartbeat.as_millis() as u64;
                // A standby pings in the first round at least a quarter of
                // `dead_after` after its last ping.
                let every = cl.cfg.dead_after / STANDBY_PINGS_PER_DEAD_AFTER;
                let (most, least) = (window.as_millis() as u64 / every.as_millis() as u64, window.as_millis() as u64 / (every + cl.cfg.heartbeat).as_millis() as u64);
                let mut counts: Vec<u64> = pings.values().copied().collect();
                counts.sort_unstable();
                eprintln!("seed {seed}: pings per manager {pings:?}");
                let acting = counts.pop().unwrap();
                assert!(acting.abs_diff(storage * rounds) <= 2 * storage, "the acting manager pings every storage node every round: {pings:?}");
                for standby in counts {
                    assert!((storage * least..=storage * most).contains(&standby), "a standby pings about {STANDBY_PINGS_PER_DEAD_AFTER} times per dead_after: {pings:?}");
                }
            })
            .await;
        });
    }
}

#[test]
fn the_manager_rereplicates_after_the_grace_period_and_restores_three_zones() {
    for seed in seeds() {
        run(seed, move || async move {
            let tune = |c: &mut StreamConfig| {
                c.extent_bytes_max = 8 << 10;
                c.rereplicate_after = Duration::from_secs(3);
            };
            cluster(seed, tune, move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "m").await.expect("open");
                ns.create("log").await.expect("create");
                let first = append_many(&ns, "log", 16, 150, 4).await;
                assert_eq!(first.failed, 0);
                cl.world.apply(&Fault::ZoneDown { zone: "az2".into(), mode: ZoneMode::Crash }).unwrap();
                let second = append_many(&ns, "log", 17, 150, 4).await;
                assert!(second.failed <= 8);
                let mut all = first.clone();
                all.appends.extend(second.appends);
                let az2 = cl.world.zone("az2").unwrap();
                let on_az2 = |m: &engine::stream::StreamMeta| m.extents.iter().filter(|e| e.sealed_len.is_some() && zones_of(&cl, &e.replicas).contains(&az2)).count();
                let m0 = ns.client().stream_meta("m", "log").await.unwrap().unwrap();
                assert!(on_az2(&m0) > 0, "sealed extents had replicas in az2");
                // Within the grace period nothing moves.
                time::sleep(Duration::from_secs(1)).await;
                let m1 = ns.client().stream_meta("m", "log").await.unwrap().unwrap();
                assert_eq!(on_az2(&m1), on_az2(&m0), "nothing is re-replicated within the grace period");
                time::sleep(Duration::from_secs(6)).await;
                let m2 = ns.client().stream_meta("m", "log").await.unwrap().unwrap();
                assert_eq!(on_az2(&m2), 0, "after the grace period no sealed extent keeps a replica on the dead zone");
                let o = cl.cfg.observer.snapshot();
                assert!(o.bytes_rereplicated > 0);
                read_back(cl.agent("az1-agent-0"), "m", "log", &all, "az1 after re-replication").await;
                check_sealed_replicas(&cl, "az1-agent-0", "m", "log").await;
                cl.world.apply(&Fault::ZoneUp { zone: "az2".into() }).unwrap();
                time::sleep(Duration::from_secs(8)).await;
                let m3 = ns.client().stream_meta("m", "log").await.unwrap().unwrap();
                for e in m3.extents.iter().filter(|e| e.sealed_len.is_some()) {
                    assert_eq!(zones_of(&cl, &e.replicas).len(), 3, "extent {} spans three zones again: {:?}", e.id, e.replicas);
                }
                check_sealed_replicas(&cl, "az2-agent-0", "m", "log").await;
                read_back(cl.agent("az2-agent-0"), "m", "log", &all, "az2 after the zone returned").await;
                let o = cl.cfg.observer.snapshot();
                let last = o.under_replicated.last().unwrap().1;
                let peak = o.under_replicated.iter().map(|s| s.1).max().unwrap();
                eprintln!("seed {seed}: under-replicated peak {peak} last {last}, {} bytes re-replicated", o.bytes_rereplicated);
                assert!(peak > 0);
                assert!(last <= 1, "only the open extent may be left ({last})");
            })
            .await;
        });
    }
}

/// A busy log is many small records: 2,000 appends one at a time, each its
/// own record in the replica files. After the owner is gone, a new owner
/// reads the whole stream back with the table service's 50 ms call timeout.
/// A replica serves a read chunk with one device read, so a chunk of a
/// thousand records costs one device latency, not a thousand (which took
/// longer than the timeout on every replica, so the stream could never be
/// read again).
#[test]
fn a_log_of_many_small_records_reads_back_within_the_call_timeout() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |c| c.call_timeout = Duration::from_millis(50), move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "w").await.expect("open");
                ns.create("wal").await.expect("create");
                let acked = append_many(&ns, "wal", 12, 2000, 1).await;
                assert_eq!(acked.failed, 0);
                assert!(acked.prefix_len() > engine::stream::READ_BYTES_MAX, "the log spans more than one read chunk");
                let before = cl.cfg.observer.snapshot().read_fallbacks;
                let next = open(cl.agent("ctl-agent-1"), "w").await.expect("a new owner opens the namespace");
                let got = next.read("wal", 0, u64::MAX / 2).await.expect("the new owner reads the log");
                assert_eq!(got.len() as u64, acked.prefix_len());
                acked.check(0, &got, "new owner");
                let after = cl.cfg.observer.snapshot().read_fallbacks;
                assert_eq!(after, before, "the nearest replica answered every chunk in time");
            })
            .await;
        });
    }
}

/// The open extent's replica in az1 flips bits as it writes (silently: its
/// disk says `Ok`), then its zone crashes and comes back. Recovery finds
/// the damaged records and keeps only the good prefix, shorter than what
/// the replica acknowledged. A new owner's seal must not trust that length:
/// sealing there would drop acknowledged appends and hand their offsets out
/// again. The damaged replica is then repaired by the manager.
#[test]
fn a_corrupt_replica_and_then_its_zone_crash_lose_no_acknowledged_append() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "d").await.expect("open");
                ns.create("log").await.expect("create");
                let mut acked = append_many(&ns, "log", 13, 20, 2).await;
                let meta = ns.client().stream_meta("d", "log").await.unwrap().unwrap();
                let az1 = cl.world.zone("az1").unwrap();
                let victim = *meta.extents[0].replicas.iter().find(|&&r| cl.world.topology().zone_of(r) == az1).expect("a replica in az1");
                let faults = DiskFaults { bitflip_write_rate: 0.05, ..Default::default() };
                cl.world.apply(&Fault::DiskFaultsOn { node: cl.name(victim), faults }).unwrap();
                let flipped = append_many(&ns, "log", 14, 300, 4).await;
                cl.world.apply(&Fault::DiskFaultsOff { node: cl.name(victim) }).unwrap();
                let tail = append_many(&ns, "log", 15, 20, 2).await;
                assert_eq!(flipped.failed + tail.failed, 0, "the disk lies silently: nothing fails");
                acked.appends.extend(flipped.appends);
                acked.appends.extend(tail.appends);
                cl.world.apply(&Fault::ZoneDown { zone: "az1".into(), mode: ZoneMode::Crash }).unwrap();
                time::sleep(Duration::from_millis(200)).await;
                cl.world.apply(&Fault::ZoneUp { zone: "az1".into() }).unwrap();
                time::sleep(Duration::from_millis(300)).await;
                let next = open(cl.agent("ctl-agent-1"), "d").await.expect("a new owner opens the namespace");
                let meta = next.client().stream_meta("d", "log").await.unwrap().unwrap();
                let sealed = meta.extents[0].sealed_len.expect("the owner change sealed the extent");
                assert!(sealed >= acked.prefix_len(), "sealed at {sealed}, below the acknowledged {}", acked.prefix_len());
                let at = next.append("log", b"after the owner change").await.expect("the new owner appends");
                assert!(at >= acked.prefix_len(), "offset {at} handed out again (acknowledged up to {})", acked.prefix_len());
                for a in ["az2-agent-0", "az3-agent-0"] {
                    read_back(cl.agent(a), "d", "log", &acked, a).await;
                }
                // The restarted node lists the extent as suspect (damaged,
                // or a bad tail cut) in its pongs; the manager has it
                // copied back from the others once sealed.
                time::sleep(Duration::from_millis(600)).await;
                assert!(cl.cfg.observer.snapshot().repairs > 0, "the damaged replica is repaired");
                check_sealed_replicas(&cl, "az1-agent-0", "d", "log").await;
            })
            .await;
        });
    }
}

/// Forty namespaces written at once, every storage node of az1 flipping
/// bits as it writes, then those nodes crash and restart; new owners take
/// every namespace over and append. No offset is acknowledged twice and
/// every acknowledged append reads back: the stream layer's form of the
/// same rule, with many writers per storage node.
#[test]
fn many_writers_with_corrupt_replicas_and_crashes_hand_no_offset_out_twice() {
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let names: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
                let mut owners = Vec::new();
                for n in &names {
                    let ns = open(cl.agent("ctl-agent-0"), n).await.expect("open");
                    ns.create("log").await.expect("create");
                    owners.push(ns);
                }
                let az1 = cl.storage_in("az1");
                for &n in &az1 {
                    let faults = DiskFaults { bitflip_write_rate: 0.03, ..Default::default() };
                    cl.world.apply(&Fault::DiskFaultsOn { node: cl.name(n), faults }).unwrap();
                }
                let writers: Vec<_> = owners.iter().enumerate().map(|(i, ns)| append_in_background(ns, "log", i as u8, 60, 2)).collect();
                let mut acked = Vec::new();
                for w in writers {
                    acked.push(w.await.unwrap());
                }
                for &n in &az1 {
                    cl.world.apply(&Fault::DiskFaultsOff { node: cl.name(n) }).unwrap();
                    cl.world.apply(&Fault::NodeCrash { node: cl.name(n) }).unwrap();
                }
                time::sleep(Duration::from_millis(100)).await;
                for &n in &az1 {
                    cl.world.apply(&Fault::NodeRestart { node: cl.name(n) }).unwrap();
                }
                time::sleep(Duration::from_millis(300)).await;
                for (n, a) in names.iter().zip(&acked) {
                    let next = open(cl.agent("ctl-agent-1"), n).await.expect("a new owner opens the namespace");
                    let at = next.append("log", b"after the owner change").await.expect("the new owner appends");
                    assert!(at >= a.prefix_len(), "{n}: offset {at} handed out again (acknowledged up to {})", a.prefix_len());
                    read_back(cl.agent("az2-agent-0"), n, "log", a, n).await;
                }
                assert!(cl.cfg.observer.snapshot().corrupt_replicas_detected > 0, "the bit flips damaged replicas");
            })
            .await;
        });
    }
}

/// The end-of-run audit reads every replica of every sealed extent whole.
/// Rot at rest that no read met (bytes overwritten in one replica's file of
/// extent A) is found by its first round and repaired in place; a replica
/// whose node cannot write any more (extent B's rotted replica) stays bad
/// through every round and is the verdict, named.
#[test]
fn the_audit_has_rot_no_read_met_repaired_and_names_a_replica_that_stays_bad() {
    use engine::stream::manager::AUDIT_ROUNDS_MAX;
    use engine::stream::replica::file_name;
    for seed in seeds() {
        run(seed, move || async move {
            cluster(seed, |_| {}, move |cl| async move {
                let ns = open(cl.agent("ctl-agent-0"), "d").await.expect("open");
                for s in ["a", "b"] {
                    ns.create(s).await.expect("create");
                    let acked = append_many(&ns, s, 21, 40, 2).await;
                    assert_eq!(acked.failed, 0);
                }
                // A new owner seals both extents.
                let next = open(cl.agent("ctl-agent-1"), "d").await.expect("a new owner");
                let extent = |s: &'static str| {
                    let c = next.client().clone();
                    async move { c.stream_meta("d", s).await.unwrap().unwrap().extents[0].clone() }
                };
                let (a, b) = (extent("a").await, extent("b").await);
                assert!(a.sealed_len.is_some_and(|l| l > 64) && b.sealed_len.is_some_and(|l| l > 64), "sealed");
                let (va, vb) = (a.replicas[0], *b.replicas.iter().find(|&&r| r != a.replicas[0]).expect("another node"));
                for (v, e) in [(va, &a), (vb, &b)] {
                    cl.world.disk(v).write_at(&file_name(&e.id), 40, &[0xA5; 8]).await.expect("rot the replica at rest");
                }
                let faults = DiskFaults { write_error_rate: 1.0, ..Default::default() };
                cl.world.apply(&Fault::DiskFaultsOn { node: cl.name(vb), faults }).unwrap();
                cl.cfg.observer.request_audit();
                for _ in 0..200 {
                    if cl.cfg.observer.snapshot().audit.is_some() {
                        break;
                    }
                    time::sleep(Duration::from_millis(100)).await;
                }
                let audit = cl.cfg.observer.snapshot().audit.expect("the audit ran");
                assert_eq!(audit.rounds, AUDIT_ROUNDS_MAX, "a bad replica keeps the audit going: {audit:?}");
                assert!(audit.extents >= 2 && audit.replicas >= 6, "{audit:?}");
                assert!(audit.found_earlier >= 2, "the first round found both rotted replicas: {audit:?}");
                assert_eq!(audit.bad_replicas, 1, "A's replica was repaired, B's cannot be: {audit:?}");
                let named = format!("extent {} on node {}", b.id, vb.0);
                assert!(audit.problems[0].starts_with(&named), "{:?} names {named}", audit.problems);
            })
            .await;
        });
    }
}

fn busy<T>(r: &Result<T, StreamError>) -> bool {
    matches!(r, Err(StreamError::Busy(_)))
}

/// Opens namespace `ns` with file `log` holding the byte `x`.
async fn one_byte_log(c: &StreamClient, ns: &str) -> Namespace {
    let ns = c.open_namespace(ns).await.expect("open");
    ns.create("log").await.expect("create");
    ns.append("log", b"x").await.expect("first append");
    ns
}

/// A client admits [`Admission::appends`] appends and [`Admission::meta`]
/// opens and reads at once: one more is refused at once, busy, with no
/// effect, and admitted again once the others were answered.
#[test]
fn a_client_refuses_at_once_what_it_cannot_admit_and_admits_again_when_work_is_done() {
    run(1, move || async move {
        let tune = |c: &mut StreamConfig| c.admission = Some(Admission { meta: 2, appends: 3 });
        cluster(1, tune, move |cl| async move {
            let (appends, again, reads, len) = cl
                .agent("ctl-agent-0")
                .run(|c| async move {
                    let ns = one_byte_log(&c, "adm").await;
                    let appends = engine::join::join_all((0..5).map(|_| ns.append("log", b"y")).collect()).await;
                    let again = ns.append("log", b"z").await;
                    let reads = engine::join::join_all((0..4).map(|_| c.read("adm", "log", 0, 1)).collect()).await;
                    (appends, again, reads, ns.len("log"))
                })
                .await;
            assert_eq!(appends.iter().filter(|r| r.is_ok()).count(), 3, "{appends:?}");
            assert_eq!(appends.iter().filter(|r| busy(r)).count(), 2, "{appends:?}");
            assert!(again.is_ok(), "admitted again once the others were answered: {again:?}");
            assert_eq!(len, Some(5), "the refused appends wrote nothing: x, three y and z");
            assert_eq!(reads.iter().filter(|r| busy(r)).count(), 2, "{reads:?}");
            assert_eq!(reads.iter().filter(|r| r.as_deref().is_ok_and(|d| d == b"x")).count(), 2, "{reads:?}");
            assert_eq!(cl.cfg.observer.snapshot().refused_busy, 4);
        })
        .await;
    });
}

/// Without limits (the table service's own streams: its servers refuse
/// excess work themselves) a client admits everything.
#[test]
fn a_client_without_admission_limits_admits_everything() {
    run(1, move || async move {
        cluster(1, |c| c.admission = None, move |cl| async move {
            let (appends, reads) = cl
                .agent("ctl-agent-0")
                .run(|c| async move {
                    let ns = one_byte_log(&c, "all").await;
                    let appends = engine::join::join_all((0..600).map(|_| ns.append("log", b"y")).collect()).await;
                    let reads = engine::join::join_all((0..100).map(|_| c.read("all", "log", 0, 1)).collect()).await;
                    (appends, reads)
                })
                .await;
            assert!(appends.iter().all(|r| r.is_ok()), "{:?}", appends.iter().find(|r| r.is_err()));
            assert!(reads.iter().all(|r| r.is_ok()), "{:?}", reads.iter().find(|r| r.is_err()));
            assert_eq!(cl.cfg.observer.snapshot().refused_busy, 0);
        })
        .await;
    });
}
