//! Stories about the replicated metadata service: three replicas (one per
//! zone az1..az3) run `meta::service::serve`; a driver in a fourth zone
//! (`ctl`, never faulted) runs a `MetaClient`, applies faults and keeps a
//! client-side history. Every story checks the history: each acknowledged
//! write is readable afterwards with its value, and a read that starts after
//! a write was acknowledged sees it (keys are written once, so a read of a
//! written key is never stale).
#![allow(clippy::disallowed_methods)] // one OS thread per madsim runtime, outside the simulation

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::meta::service::{serve, ClientError, MetaClient, Response, ServiceConfig};
use engine::meta::state::{Command, Outcome};
use sim::disk::DiskConfig;
use sim::fault::{Direction, Fault, ZoneMode};
use sim::time::{self, SimTime};
use sim::topology::{LinkParams, NodeId, Topology, ZoneId};
use sim::world::{NodeCtx, World};

fn lp(us: u64) -> LinkParams {
    LinkParams { latency: Duration::from_micros(us), jitter: Duration::from_micros(us / 10), loss: 0.0 }
}

/// az1..az3 each hold a `meta` replica and a `probe` client; `ctl` holds
/// the driver.
fn topo() -> Topology {
    let zones: Vec<String> = ["az1", "az2", "az3", "ctl"].iter().map(|s| s.to_string()).collect();
    let mut t = Topology::new(&zones, lp(100), lp(1000));
    for z in 0..3 {
        t.add_node(ZoneId(z), "meta");
        t.add_node(ZoneId(z), "probe");
    }
    t.add_node(ZoneId(3), "driver");
    t
}

fn run<F: std::future::Future<Output = ()> + 'static>(seed: u64, f: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(f()))
        .join()
        .expect("simulation thread");
}

/// What a probe does: send writes straight to its zone's replica from
/// `start` on, and record every answer with its send time.
#[derive(Default)]
struct ProbePlan {
    zone: Option<ZoneId>,
    stop: bool,
    answers: Vec<(SimTime, String, Result<Response, ClientError>)>,
}

type Plan = Arc<Mutex<ProbePlan>>;

async fn probe(ctx: NodeCtx, cfg: ServiceConfig, plan: Plan) {
    let client = MetaClient::bind(&ctx, cfg).await;
    let zone = ctx.world.topology().zone_of(ctx.id);
    let replica = ctx.world.topology().nodes_in_zone(zone).into_iter().find(|n| ctx.world.topology().node(*n).role == "meta").expect("replica in zone");
    let mut n = 0u64;
    loop {
        let (mine, stop) = {
            let p = plan.lock().unwrap();
            (p.zone == Some(zone), p.stop)
        };
        if stop {
            return;
        }
        if mine {
            n += 1;
            let key = format!("probe-{}-{n}", zone.0);
            let sent = time::now();
            let r = client.write_once(replica, Command::Put { key: key.clone(), value: vec![1] }).await;
            plan.lock().unwrap().answers.push((sent, key, r));
        }
        time::sleep(Duration::from_millis(15)).await;
    }
}

/// Starts the cluster and the probes, runs `story` on the driver, and
/// returns the run's digest when it is done.
async fn cluster<S, Fut>(seed: u64, plan: Plan, story: S) -> sim::Digest
where
    S: Fn(World, MetaClient, ServiceConfig) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    cluster_on(seed, DiskConfig::default(), plan, story).await
}

/// [`cluster`] on disks of configuration `disk`.
async fn cluster_on<S, Fut>(seed: u64, disk: DiskConfig, plan: Plan, story: S) -> sim::Digest
where
    S: Fn(World, MetaClient, ServiceConfig) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let world = World::new(seed, topo(), disk, false);
    let replicas = world.topology().nodes_with_role("meta");
    let cfg = ServiceConfig::new(replicas.clone());
    for r in replicas {
        let cfg = cfg.clone();
        world.start_node(r, move |ctx| serve(ctx, cfg.clone()));
    }
    for p in world.topology().nodes_with_role("probe") {
        let (cfg, plan) = (cfg.clone(), plan.clone());
        world.start_node(p, move |ctx| probe(ctx, cfg.clone(), plan.clone()));
    }
    let done = Arc::new(Mutex::new(false));
    let d2 = done.clone();
    let story = Arc::new(story);
    let driver = world.topology().nodes_with_role("driver")[0];
    world.start_node(driver, move |ctx| {
        let (story, done, cfg) = (story.clone(), d2.clone(), cfg.clone());
        async move {
            let client = MetaClient::bind(&ctx, cfg.clone()).await;
            story(ctx.world.clone(), client, cfg).await;
            *done.lock().unwrap() = true;
        }
    });
    while !*done.lock().unwrap() {
        time::sleep(Duration::from_millis(5)).await;
    }
    plan.lock().unwrap().stop = true;
    world.digest()
}

/// The driver's record of what it was told.
#[derive(Default)]
struct History {
    acked: BTreeMap<String, Vec<u8>>,
    unknown: BTreeMap<String, Vec<u8>>,
    failed_reads: u64,
    /// Compare-and-set increments of the key `ctr` (only the driver writes
    /// it): acknowledged, and of unknown outcome.
    increments: u64,
    increments_unknown: u64,
}

impl History {
    /// Writes key `{prefix}{i}` once, then reads it back and one earlier
    /// acknowledged key.
    async fn step(&mut self, c: &mut MetaClient, prefix: &str, i: u64) {
        let key = format!("{prefix}{i}");
        let value = i.to_be_bytes().to_vec();
        match c.put(&key, &value).await {
            Ok(()) => {
                self.acked.insert(key.clone(), value);
                self.check(c, &key).await;
            }
            Err(ClientError::Unknown | ClientError::Unavailable) => {
                self.unknown.insert(key, value);
            }
            Err(e) => panic!("put {key}: {e}"),
        }
        let earlier = self.acked.keys().nth((i as usize * 7) % self.acked.len().max(1)).cloned();
        if let Some(k) = earlier {
            self.check(c, &k).await;
        }
        self.increment(c).await;
    }

    /// Reads `ctr` and compare-and-sets it one higher. A write retried
    /// after a timeout that applied twice would make the second apply fail
    /// its compare, the client would increment again, and `ctr` would end
    /// above the increments it was told of.
    async fn increment(&mut self, c: &mut MetaClient) {
        for _ in 0..3 {
            let Ok(cur) = c.get("ctr").await else { return };
            let n = cur.map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8-byte counter")));
            let (old, new) = (n.to_be_bytes(), (n + 1).to_be_bytes());
            let expected: Option<&[u8]> = if n > 0 { Some(&old) } else { None };
            match c.cas("ctr", expected, Some(&new)).await {
                Ok(Outcome::Done) => {
                    self.increments += 1;
                    return;
                }
                Ok(Outcome::CasFailed { .. }) => {
                    assert!(self.increments_unknown > 0, "a compare failed with no other writer and no unknown outcome");
                }
                Err(ClientError::Unknown | ClientError::Unavailable) => {
                    self.increments_unknown += 1;
                    return;
                }
                Ok(o @ Outcome::TxnFailed { .. }) => panic!("cas ctr answered as a txn: {o:?}"),
                Err(e) => panic!("cas ctr: {e}"),
            }
        }
    }

    /// A read of an acknowledged key returns its value (or fails).
    async fn check(&mut self, c: &mut MetaClient, key: &str) {
        match c.get(key).await {
            Ok(v) => assert_eq!(v.as_ref(), self.acked.get(key), "read of acknowledged {key} is stale or wrong"),
            Err(ClientError::Unavailable) => self.failed_reads += 1,
            Err(e) => panic!("get {key}: {e}"),
        }
    }

    /// At the end, with the cluster healthy: every acknowledged write is
    /// there, every write of unknown outcome is either there or absent.
    async fn verify_all(&self, c: &mut MetaClient) {
        let ctr = c.get("ctr").await.expect("final read").map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8-byte counter")));
        assert!(
            (self.increments..=self.increments + self.increments_unknown).contains(&ctr),
            "counter {ctr}: {} acknowledged increments, {} unknown",
            self.increments,
            self.increments_unknown
        );
        for (k, v) in &self.acked {
            assert_eq!(c.get(k).await.expect("final read").as_ref(), Some(v), "acknowledged {k} lost");
        }
        for (k, v) in &self.unknown {
            let got = c.get(k).await.expect("final read");
            assert!(got.is_none() || got.as_ref() == Some(v), "{k} holds a value never written: {got:?}");
        }
    }
}

/// The replica that says it leads in the highest term, once one does.
async fn leader(c: &MetaClient, cfg: &ServiceConfig) -> NodeId {
    for _ in 0..200 {
        let mut best: Option<(u64, NodeId)> = None;
        for &r in &cfg.replicas {
            if let Some((true, term, _)) = c.status(r).await {
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, r));
                }
            }
        }
        if let Some((_, r)) = best {
            return r;
        }
        time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader within 4 s");
}

fn zone_name(w: &World, n: NodeId) -> String {
    w.topology().zone_name(w.topology().zone_of(n)).to_string()
}

fn node_name(w: &World, n: NodeId) -> String {
    w.topology().node(n).name.clone()
}

const SEEDS: [u64; 3] = [1, 2, 3];

#[test]
fn three_zones_elect_a_leader_and_commit_writes() {
    for seed in SEEDS {
        run(seed, move || async move {
            cluster(seed, Plan::default(), |_w, mut c, cfg| async move {
                leader(&c, &cfg).await;
                let mut h = History::default();
                for i in 0..30 {
                    h.step(&mut c, "k", i).await;
                }
                assert!(h.unknown.is_empty() && h.failed_reads == 0, "a healthy cluster answers everything");
                assert_eq!(c.cas("x", None, Some(b"1")).await, Ok(Outcome::Done));
                assert_eq!(c.cas("x", None, Some(b"2")).await, Ok(Outcome::CasFailed { current: Some(b"1".to_vec()) }));
                assert_eq!(c.cas("x", Some(b"1"), Some(b"3")).await, Ok(Outcome::Done));
                assert_eq!(c.get("x").await, Ok(Some(b"3".to_vec())));
                c.delete("x").await.unwrap();
                assert_eq!(c.get("x").await, Ok(None));
                h.verify_all(&mut c).await;
            })
            .await;
        });
    }
}

#[test]
fn txn_and_scan_go_through_the_service() {
    run(4, move || async move {
        cluster(4, Plan::default(), |_w, mut c, cfg| async move {
            leader(&c, &cfg).await;
            let some = |v: &[u8]| Some(v.to_vec());
            let w = |k: &str, v: &[u8]| (k.to_string(), some(v));
            assert_eq!(c.txn(vec![("ns/a".into(), None)], vec![w("ns/a", b"1"), w("st/a/x", b"m"), w("st/a/y", b"n")]).await, Ok(Outcome::Done));
            assert_eq!(
                c.txn(vec![w("ns/a", b"0")], vec![w("st/a/z", b"o")]).await,
                Ok(Outcome::TxnFailed { key: "ns/a".into(), current: some(b"1") })
            );
            c.put("st/b/x", b"p").await.unwrap();
            let e = c.scan("st/a/", 10).await.unwrap();
            assert_eq!(e, vec![("st/a/x".to_string(), b"m".to_vec()), ("st/a/y".to_string(), b"n".to_vec())]);
            assert_eq!(c.scan("st/", 1).await.unwrap().len(), 1);
        })
        .await;
    });
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let digest = |seed: u64| {
        let out = Arc::new(Mutex::new(None));
        let o2 = out.clone();
        run(seed, move || async move {
            let d = cluster(seed, Plan::default(), |w, mut c, cfg| async move {
                let l = leader(&c, &cfg).await;
                let mut h = History::default();
                for i in 0..10 {
                    h.step(&mut c, "a", i).await;
                }
                w.apply(&Fault::NodeCrash { node: node_name(&w, l) }).unwrap();
                for i in 0..10 {
                    h.step(&mut c, "b", i).await;
                }
            })
            .await;
            *o2.lock().unwrap() = Some(d);
        });
        let d = out.lock().unwrap().expect("digest");
        d
    };
    assert_eq!(digest(7), digest(7), "one seed, one run");
    assert_ne!(digest(7), digest(8), "the seed matters");
}

#[test]
fn the_leaders_zone_crashes_and_the_others_keep_every_acknowledged_write() {
    for seed in SEEDS {
        run(seed, move || async move {
            cluster(seed, Plan::default(), |w, mut c, cfg| async move {
                let old = leader(&c, &cfg).await;
                let mut h = History::default();
                for i in 0..20 {
                    h.step(&mut c, "a", i).await;
                }
                w.apply(&Fault::ZoneDown { zone: zone_name(&w, old), mode: ZoneMode::Crash }).unwrap();
                for i in 0..30 {
                    h.step(&mut c, "b", i).await;
                }
                let new = leader(&c, &cfg).await;
                assert_ne!(new, old, "a surviving replica leads");
                assert!(h.acked.keys().filter(|k| k.starts_with('b')).count() >= 25, "two zones keep serving writes");
                h.verify_all(&mut c).await;
                // The crashed zone comes back, catches up, and nothing is lost.
                w.apply(&Fault::ZoneUp { zone: zone_name(&w, old) }).unwrap();
                time::sleep(Duration::from_millis(500)).await;
                h.verify_all(&mut c).await;
            })
            .await;
        });
    }
}

#[test]
fn a_crashed_replica_restarts_from_its_disk_and_catches_up() {
    for seed in SEEDS {
        run(seed, move || async move {
            cluster(seed, Plan::default(), |w, mut c, cfg| async move {
                let l = leader(&c, &cfg).await;
                let follower = *cfg.replicas.iter().find(|&&r| r != l).unwrap();
                let mut h = History::default();
                for i in 0..15 {
                    h.step(&mut c, "a", i).await;
                }
                w.apply(&Fault::NodeCrash { node: node_name(&w, follower) }).unwrap();
                for i in 0..15 {
                    h.step(&mut c, "b", i).await;
                }
                w.apply(&Fault::NodeRestart { node: node_name(&w, follower) }).unwrap();
                time::sleep(Duration::from_millis(300)).await;
                let (_, _, leader_commit) = c.status(l).await.expect("leader answers");
                // Then the other two crash, one after the other, and come
                // back: the restarted replica's log must have caught up for
                // the writes to survive with it as one of a majority.
                let other = *cfg.replicas.iter().find(|&&r| r != l && r != follower).unwrap();
                let (_, _, f_commit) = c.status(follower).await.expect("follower answers");
                assert!(f_commit >= leader_commit, "the restarted replica caught up: commit {f_commit} < {leader_commit}");
                w.apply(&Fault::NodeCrash { node: node_name(&w, other) }).unwrap();
                w.apply(&Fault::NodeCrash { node: node_name(&w, l) }).unwrap();
                w.apply(&Fault::NodeRestart { node: node_name(&w, l) }).unwrap();
                for i in 0..10 {
                    h.step(&mut c, "c", i).await;
                }
                w.apply(&Fault::NodeRestart { node: node_name(&w, other) }).unwrap();
                assert!(h.acked.len() >= 30, "writes succeed with a restarted majority: {}", h.acked.len());
                h.verify_all(&mut c).await;
            })
            .await;
        });
    }
}

#[test]
fn an_isolated_leader_never_acknowledges_and_the_majority_moves_on() {
    for seed in SEEDS {
        let plan = Plan::default();
        let p2 = plan.clone();
        run(seed, move || async move {
            let p3 = p2.clone();
            cluster(seed, p2, move |w, mut c, cfg| {
                let plan = p3.clone();
                async move {
                    let old = leader(&c, &cfg).await;
                    let mut h = History::default();
                    for i in 0..10 {
                        h.step(&mut c, "a", i).await;
                    }
                    let zone = w.topology().zone_of(old);
                    w.apply(&Fault::ZoneDown { zone: zone_name(&w, old), mode: ZoneMode::Isolate }).unwrap();
                    let isolated_at = time::now();
                    // The probe in the isolated zone keeps writing to the old leader.
                    plan.lock().unwrap().zone = Some(zone);
                    for i in 0..30 {
                        h.step(&mut c, "b", i).await;
                    }
                    let new = leader(&c, &cfg).await;
                    assert_ne!(new, old, "the majority side elected a new leader");
                    assert!(h.acked.keys().filter(|k| k.starts_with('b')).count() >= 25, "the majority side serves writes");
                    plan.lock().unwrap().zone = None;
                    w.apply(&Fault::ZoneUp { zone: zone_name(&w, old) }).unwrap();
                    time::sleep(Duration::from_millis(500)).await;
                    let answers = std::mem::take(&mut plan.lock().unwrap().answers);
                    assert!(answers.len() >= 10, "the probe ran: {}", answers.len());
                    for (sent, key, r) in &answers {
                        assert!(*sent >= isolated_at);
                        assert!(!matches!(r, Ok(Response::Applied)), "old leader acknowledged {key} after losing its majority");
                        assert_eq!(c.get(key).await, Ok(None), "{key} from the isolated side never applies");
                    }
                    h.verify_all(&mut c).await;
                }
            })
            .await;
        });
        assert!(plan.lock().unwrap().stop);
    }
}

#[test]
fn an_asymmetric_partition_does_not_lose_acknowledged_writes() {
    for seed in SEEDS {
        run(seed, move || async move {
            cluster(seed, Plan::default(), |w, mut c, cfg| async move {
                let old = leader(&c, &cfg).await;
                let mut h = History::default();
                for i in 0..10 {
                    h.step(&mut c, "a", i).await;
                }
                // The leader can hear the other replicas but not reach them.
                let others: Vec<String> = cfg.replicas.iter().filter(|&&r| r != old).map(|&r| zone_name(&w, r)).collect();
                let cut = Fault::Partition { a: vec![zone_name(&w, old)], b: others.clone(), direction: Direction::OneWay };
                w.apply(&cut).unwrap();
                for i in 0..30 {
                    h.step(&mut c, "b", i).await;
                }
                assert!(h.acked.keys().filter(|k| k.starts_with('b')).count() >= 20, "the reachable pair keeps serving");
                w.apply(&Fault::Heal { a: vec![zone_name(&w, old)], b: others, direction: Direction::OneWay }).unwrap();
                for i in 0..10 {
                    h.step(&mut c, "c", i).await;
                }
                h.verify_all(&mut c).await;
            })
            .await;
        });
    }
}

#[test]
fn clock_skew_within_the_bound_keeps_reads_fresh_across_failover() {
    for seed in SEEDS {
        run(seed, move || async move {
            cluster(seed, Plan::default(), |w, mut c, cfg| async move {
                // max_skew is 20 ms: steps of up to 8 ms and drifts of up
                // to 1000 ppm (0.3 ms over an election timeout) stay inside.
                let skews = [(8_000_000i64, 1000i64), (-3_000_000, -1000), (0, 500)];
                for (r, (offset, ppm)) in cfg.replicas.iter().zip(skews) {
                    w.apply(&Fault::ClockDrift { node: node_name(&w, *r), ppm }).unwrap();
                    w.apply(&Fault::ClockOffset { node: node_name(&w, *r), offset_ns: offset }).unwrap();
                }
                let mut h = History::default();
                for round in 0..3 {
                    let l = leader(&c, &cfg).await;
                    for i in 0..10 {
                        h.step(&mut c, &format!("r{round}-"), i).await;
                    }
                    // Fail the leader over: a new leader's reads must see
                    // everything the old one acknowledged.
                    w.apply(&Fault::NodeCrash { node: node_name(&w, l) }).unwrap();
                    for i in 10..20 {
                        h.step(&mut c, &format!("r{round}-"), i).await;
                    }
                    w.apply(&Fault::NodeRestart { node: node_name(&w, l) }).unwrap();
                }
                assert!(h.acked.len() >= 45, "writes go on under skew: {}", h.acked.len());
                h.verify_all(&mut c).await;
            })
            .await;
        });
    }
}

#[test]
fn writes_retried_over_a_lossy_client_link_apply_once() {
    for seed in SEEDS {
        run(seed, move || async move {
            cluster(seed, Plan::default(), |w, mut c, cfg| async move {
                leader(&c, &cfg).await;
                let zones: Vec<String> = cfg.replicas.iter().map(|&r| zone_name(&w, r)).collect();
                // Requests and answers between the driver and the replicas
                // are lost at random: a write that applied but whose answer
                // vanished is retried with the same request id.
                w.apply(&Fault::Loss { a: vec!["ctl".into()], b: zones.clone(), rate: 0.3 }).unwrap();
                let mut h = History::default();
                for i in 0..40 {
                    h.step(&mut c, "k", i).await;
                }
                w.apply(&Fault::LossOff { a: vec!["ctl".into()], b: zones }).unwrap();
                assert!(h.increments >= 30, "increments go through despite the loss: {}", h.increments);
                h.verify_all(&mut c).await;
            })
            .await;
        });
    }
}

#[test]
fn a_torn_log_tail_is_dropped_and_a_corrupt_log_keeps_its_replica_down() {
    use engine::meta::storage::LOG_FILE;
    for seed in SEEDS {
        run(seed, move || async move {
            cluster(seed, Plan::default(), |w, mut c, cfg| async move {
                let l = leader(&c, &cfg).await;
                let followers: Vec<NodeId> = cfg.replicas.iter().copied().filter(|&r| r != l).collect();
                let (torn, corrupt) = (followers[0], followers[1]);
                let mut h = History::default();
                for i in 0..10 {
                    h.step(&mut c, "a", i).await;
                }
                // A record cut short at the end of the file: a torn tail.
                w.apply(&Fault::NodeCrash { node: node_name(&w, torn) }).unwrap();
                let disk = w.disk(torn);
                disk.append(LOG_FILE, &[40, 0, 0, 0, 1, 2, 3, 4, 5, 6]).await.unwrap();
                disk.sync(LOG_FILE).await.unwrap();
                w.apply(&Fault::NodeRestart { node: node_name(&w, torn) }).unwrap();
                for i in 0..10 {
                    h.step(&mut c, "b", i).await;
                }
                time::sleep(Duration::from_millis(300)).await;
                let (_, _, leader_commit) = c.status(l).await.expect("leader answers");
                let (_, _, torn_commit) = c.status(torn).await.expect("the replica with the torn tail is back");
                assert!(torn_commit >= leader_commit, "it caught up: {torn_commit} < {leader_commit}");
                // A flipped byte in the first record, with records after it.
                w.apply(&Fault::NodeCrash { node: node_name(&w, corrupt) }).unwrap();
                let disk = w.disk(corrupt);
                let mut b = disk.read_at(LOG_FILE, 12, 1).await.unwrap();
                b[0] ^= 0x20;
                disk.write_at(LOG_FILE, 12, &b).await.unwrap();
                disk.sync(LOG_FILE).await.unwrap();
                w.apply(&Fault::NodeRestart { node: node_name(&w, corrupt) }).unwrap();
                time::sleep(Duration::from_millis(500)).await;
                assert_eq!(c.status(corrupt).await, None, "a replica with a corrupt log stays down");
                for i in 0..10 {
                    h.step(&mut c, "c", i).await;
                }
                assert!(h.acked.len() >= 28, "the other two serve: {}", h.acked.len());
                h.verify_all(&mut c).await;
            })
            .await;
        });
    }
}

/// One replica's disk fails a third of its writes and syncs while another
/// replica is down: the failing replica retries its log records instead of
/// stopping, so the two that are up keep a quorum and writes go on. (A
/// replica that stopped at its first failed write left one replica of
/// three, and the metadata store, down for good.)
#[test]
fn a_replica_whose_disk_fails_some_writes_keeps_the_quorum() {
    for seed in SEEDS {
        run(seed, move || async move {
            cluster(seed, Plan::default(), |w, mut c, cfg| async move {
                let l = leader(&c, &cfg).await;
                let others: Vec<NodeId> = cfg.replicas.iter().copied().filter(|&r| r != l).collect();
                // The leader's disk fails writes; one follower is down.
                let faults = sim::disk::DiskFaults { write_error_rate: 0.33, ..Default::default() };
                w.apply(&Fault::DiskFaultsOn { node: node_name(&w, l), faults }).unwrap();
                w.apply(&Fault::NodeCrash { node: node_name(&w, others[0]) }).unwrap();
                let mut h = History::default();
                for i in 0..30 {
                    h.step(&mut c, "f", i).await;
                }
                assert!(h.acked.len() >= 25, "writes go on with a failing disk and a replica down: {} acknowledged", h.acked.len());
                w.apply(&Fault::DiskFaultsOff { node: node_name(&w, l) }).unwrap();
                w.apply(&Fault::NodeRestart { node: node_name(&w, others[0]) }).unwrap();
                h.verify_all(&mut c).await;
            })
            .await;
        });
    }
}

/// A replica acknowledges (a vote, an append) only what it has synced, and
/// a leader counts itself only for what it synced: on disks whose syncs
/// are slow and whose unsynced data a crash loses, every replica crashes
/// the moment a write is acknowledged, and the write must survive their
/// restart. A replica that acknowledged before its sync would lose it.
#[test]
fn every_replica_crashing_right_after_an_acknowledgement_keeps_the_write() {
    for seed in SEEDS {
        run(seed, move || async move {
            let disk = DiskConfig { sync_latency: Duration::from_millis(5), crash_writeback: 0.0, ..DiskConfig::default() };
            cluster_on(seed, disk, Plan::default(), |w, mut c, cfg| async move {
                leader(&c, &cfg).await;
                let mut acked = Vec::new();
                for i in 0..6u64 {
                    let key = format!("k{i}");
                    // A leader elected after the last restart may not be
                    // ready yet: retry until one write is acknowledged.
                    for _ in 0..50 {
                        if c.put(&key, &i.to_be_bytes()).await.is_ok() {
                            acked.push(key.clone());
                            break;
                        }
                    }
                    for &r in &cfg.replicas {
                        w.apply(&Fault::NodeCrash { node: node_name(&w, r) }).unwrap();
                    }
                    for &r in &cfg.replicas {
                        w.apply(&Fault::NodeRestart { node: node_name(&w, r) }).unwrap();
                    }
                }
                assert!(acked.len() >= 5, "writes were acknowledged between the crashes: {}", acked.len());
                for k in &acked {
                    let mut got = None;
                    for _ in 0..50 {
                        if let Ok(v) = c.get(k).await {
                            got = Some(v);
                            break;
                        }
                    }
                    let got = got.unwrap_or_else(|| panic!("{k} could not be read back"));
                    assert!(got.is_some(), "acknowledged {k} lost when every replica crashed right after the acknowledgement");
                }
            })
            .await;
        });
    }
}
