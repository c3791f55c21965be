//! Stories about the simulated world: each test builds a small three-zone
//! world in a fresh madsim runtime and checks one promise of `sim`.
#![allow(clippy::disallowed_methods)] // one OS thread per madsim runtime, outside the simulation

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sim::disk::DiskConfig;
use sim::fault::{Direction, Fault, ZoneMode};
use sim::net::{Inbox, Message, Net, NetError};
use sim::time::{self, SimTime};
use sim::topology::{LinkParams, NodeId, Topology, ZoneId};
use sim::world::{NodeCtx, World};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ping {
    Ping(u64),
    Pong(u64),
}

impl Message for Ping {
    const TAG: u16 = 1;
    fn kind(&self) -> &'static str {
        match self {
            Ping::Ping(_) => "ping",
            Ping::Pong(_) => "pong",
        }
    }
}

fn lp(us: u64) -> LinkParams {
    LinkParams { latency: Duration::from_micros(us), jitter: Duration::ZERO, loss: 0.0 }
}

/// Three zones, two nodes each: az1-n-0, az1-n-1, az2-n-0, ...
fn topo() -> Topology {
    let zones: Vec<String> = ["az1", "az2", "az3"].iter().map(|s| s.to_string()).collect();
    let mut t = Topology::new(&zones, lp(100), lp(1000));
    for z in 0..3 {
        t.add_node(ZoneId(z), "n");
        t.add_node(ZoneId(z), "n");
    }
    t
}

fn run<F: std::future::Future<Output = ()> + 'static>(seed: u64, f: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(f()))
        .join()
        .expect("simulation thread");
}

async fn echo_server(ctx: NodeCtx) {
    let (net, mut inbox): (Net<Ping>, Inbox<Ping>) = Net::bind(&ctx).await;
    while let Some(m) = inbox.recv().await {
        if let (Ping::Ping(x), Some(req)) = (m.msg, m.request) {
            net.reply(m.from, req, Ping::Pong(x)).await;
        }
    }
}

/// Starts an echo server on every node but `client`, and runs `body` on
/// `client` with its transport; returns when `body` does.
async fn with_client<B, Fut>(world: &World, client: NodeId, body: B)
where
    B: Fn(NodeCtx, Net<Ping>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for n in world.topology().nodes().iter().map(|n| n.id).filter(|&n| n != client) {
        world.start_node(n, echo_server);
    }
    with_client_only(world, client, body).await;
}

/// Runs `body` on `client` with its transport (the other nodes as the
/// caller started them); returns when `body` does.
async fn with_client_only<B, Fut>(world: &World, client: NodeId, body: B)
where
    B: Fn(NodeCtx, Net<Ping>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let done = Arc::new(Mutex::new(false));
    let d2 = done.clone();
    let body = Arc::new(body);
    world.start_node(client, move |ctx| {
        let body = body.clone();
        let done = d2.clone();
        async move {
            let (net, _inbox) = Net::<Ping>::bind(&ctx).await;
            body(ctx, net).await;
            *done.lock().unwrap() = true;
        }
    });
    while !*done.lock().unwrap() {
        time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn time_fidelity_intra_and_inter_zone_round_trips() {
    // A 100 µs intra-zone hop and a 1 ms inter-zone hop show up as such in
    // measured round trips, to 10 µs, although madsim itself cannot sleep
    // less than 1 ms.
    let rtts = Arc::new(Mutex::new(Vec::new()));
    let r2 = rtts.clone();
    run(1, move || async move {
        let world = World::new(1, topo(), DiskConfig::default(), false);
        with_client(&world, NodeId(0), move |_ctx, net| {
            let rtts = r2.clone();
            async move {
                for (target, _) in [(NodeId(1), "intra"), (NodeId(2), "inter")] {
                    for i in 0..20 {
                        let t0 = time::now();
                        let r = net.call(target, Ping::Ping(i), Duration::from_millis(50)).await;
                        assert!(matches!(r, Ok(Ping::Pong(x)) if x == i));
                        rtts.lock().unwrap().push((target, time::now().saturating_sub(t0)));
                    }
                }
            }
        })
        .await;
    });
    let rtts = rtts.lock().unwrap();
    for (target, rtt) in rtts.iter() {
        let want = if *target == NodeId(1) { Duration::from_micros(200) } else { Duration::from_micros(2000) };
        let err = rtt.abs_diff(want);
        assert!(err <= Duration::from_micros(10), "round trip to {target:?}: {rtt:?}, modeled {want:?}");
    }
    assert_eq!(rtts.len(), 40);
}

#[test]
fn calls_to_dead_or_cut_off_nodes_time_out_without_leaking() {
    run(2, || async {
        let world = World::new(2, topo(), DiskConfig::default(), false);
        let w = world.clone();
        let client_world = world.clone();
        let wait = async move {
            with_client(&client_world, NodeId(0), move |_ctx, net| {
                let w = w.clone();
                async move {
                    assert!(net.call(NodeId(2), Ping::Ping(1), Duration::from_millis(10)).await.is_ok());
                    w.apply(&Fault::NodeCrash { node: "az2-n-0".into() }).unwrap();
                    for i in 0..100 {
                        let t0 = time::now();
                        assert!(matches!(net.call(NodeId(2), Ping::Ping(i), Duration::from_millis(5)).await, Err(NetError::Timeout)));
                        let took = time::now().saturating_sub(t0);
                        assert!(took.abs_diff(Duration::from_millis(5)) <= Duration::from_micros(5), "a timeout fires at its deadline: {took:?}");
                    }
                    assert_eq!(net.pending_calls(), 0, "timed-out calls leave nothing behind");
                    w.apply(&Fault::Partition { a: vec!["az1".into()], b: vec!["az3".into()], direction: Direction::OneWay }).unwrap();
                    assert!(net.call(NodeId(4), Ping::Ping(7), Duration::from_millis(10)).await.is_err(), "az1 -> az3 is cut");
                    assert!(net.call(NodeId(3), Ping::Ping(7), Duration::from_millis(10)).await.is_ok(), "az1 -> az2 is not");
                    w.apply(&Fault::Heal { a: vec!["az1".into()], b: vec!["az3".into()], direction: Direction::OneWay }).unwrap();
                    assert!(net.call(NodeId(4), Ping::Ping(8), Duration::from_millis(10)).await.is_ok(), "healed");
                    w.apply(&Fault::NodeRestart { node: "az2-n-0".into() }).unwrap();
                    time::sleep(Duration::from_micros(50)).await;
                    assert!(net.call(NodeId(2), Ping::Ping(9), Duration::from_millis(10)).await.is_ok(), "restarted node answers");
                }
            })
            .await
        };
        wait.await;
        let stats = world.net_stats();
        assert!(stats.dropped.get("dead").copied().unwrap_or(0) >= 100, "{stats:?}");
        assert!(stats.dropped.get("cut").copied().unwrap_or(0) >= 1, "{stats:?}");
    });
}

#[test]
fn a_message_in_flight_dies_with_its_receiver_and_reaches_its_next_incarnation() {
    // The receiver is looked up when a message lands, as a socket would be:
    // one that crashed meanwhile drops it, one that restarted meanwhile
    // answers it.
    run(6, || async {
        let world = World::new(6, topo(), DiskConfig::default(), false);
        let w = world.clone();
        with_client(&world, NodeId(0), move |_ctx, net| {
            let w = w.clone();
            async move {
                let dead = || w.net_stats().dropped.get("dead").copied().unwrap_or(0);
                // A 1 ms hop; the receiver crashes half-way.
                net.send(NodeId(2), Ping::Ping(1)).await;
                time::sleep(Duration::from_micros(500)).await;
                w.apply(&Fault::NodeCrash { node: "az2-n-0".into() }).unwrap();
                assert_eq!(dead(), 0, "sent while the receiver lived");
                time::sleep(Duration::from_micros(600)).await;
                assert_eq!(dead(), 1, "dropped on arrival at a dead node");
                w.apply(&Fault::NodeRestart { node: "az2-n-0".into() }).unwrap();
                time::sleep(Duration::from_micros(50)).await;
                // A request flies while its receiver crashes and restarts:
                // the new incarnation answers it.
                let w2 = w.clone();
                madsim::task::spawn(async move {
                    time::sleep(Duration::from_micros(500)).await;
                    w2.apply(&Fault::NodeCrash { node: "az2-n-0".into() }).unwrap();
                    w2.apply(&Fault::NodeRestart { node: "az2-n-0".into() }).unwrap();
                });
                let t0 = time::now();
                assert!(matches!(net.call(NodeId(2), Ping::Ping(2), Duration::from_millis(10)).await, Ok(Ping::Pong(2))));
                assert_eq!(time::now().saturating_sub(t0), Duration::from_millis(2), "one round trip, no retry");
                assert_eq!(w.incarnation(NodeId(2)), 2);
                assert_eq!(dead(), 1);
            }
        })
        .await;
        let stats = world.net_stats();
        assert_eq!(stats.sent, stats.delivered + stats.dropped.values().sum::<u64>(), "every message sent is delivered or dropped: {stats:?}");
    });
}

#[test]
fn one_way_partition_cuts_only_one_direction() {
    run(3, || async {
        let world = World::new(3, topo(), DiskConfig::default(), false);
        let w = world.clone();
        with_client(&world, NodeId(0), move |_ctx, net| {
            let w = w.clone();
            async move {
                // Responses az2 -> az1 are cut: requests arrive, answers vanish.
                w.apply(&Fault::Clog { a: vec!["az2".into()], b: vec!["az1".into()] }).unwrap();
                assert!(net.call(NodeId(2), Ping::Ping(1), Duration::from_millis(10)).await.is_err());
                w.apply(&Fault::Unclog { a: vec!["az2".into()], b: vec!["az1".into()] }).unwrap();
                assert!(net.call(NodeId(2), Ping::Ping(2), Duration::from_millis(10)).await.is_ok());
            }
        })
        .await;
        assert!(world.net_stats().dropped.get("cut").copied().unwrap_or(0) >= 1);
    });
}

#[test]
fn zone_crash_kills_its_nodes_and_loses_unsynced_writes() {
    run(4, || async {
        let world = World::new(4, topo(), DiskConfig { crash_writeback: 0.0, ..DiskConfig::default() }, false);
        let beats = Arc::new(Mutex::new(Vec::<(NodeId, SimTime)>::new()));
        // Every node writes a synced and an unsynced record, then beats.
        for n in world.topology().nodes().iter().map(|n| n.id) {
            let beats = beats.clone();
            world.start_node(n, move |ctx| {
                let beats = beats.clone();
                async move {
                    let disk = ctx.disk();
                    if !disk.exists("log") {
                        disk.create("log").await.unwrap();
                        disk.sync_dir().await.unwrap();
                        disk.append("log", b"synced").await.unwrap();
                        disk.sync("log").await.unwrap();
                        disk.append("log", b"+unsynced").await.unwrap();
                    }
                    loop {
                        beats.lock().unwrap().push((ctx.id, time::now()));
                        time::sleep(Duration::from_millis(1)).await;
                    }
                }
            });
        }
        time::sleep(Duration::from_millis(10)).await;
        world.apply(&Fault::ZoneDown { zone: "az2".into(), mode: ZoneMode::Crash }).unwrap();
        let down_at = time::now();
        time::sleep(Duration::from_millis(20)).await;
        {
            let beats = beats.lock().unwrap();
            for n in [NodeId(2), NodeId(3)] {
                let last = beats.iter().filter(|(m, _)| *m == n).map(|(_, t)| *t).max().unwrap();
                assert!(last <= down_at, "{n:?} still ran after the zone went down");
            }
            let alive_last = beats.iter().filter(|(m, _)| *m == NodeId(0)).map(|(_, t)| *t).max().unwrap();
            assert!(alive_last > down_at + Duration::from_millis(15), "az1 keeps running");
        }
        for n in [2, 3] {
            let disk = world.disk(NodeId(n));
            assert_eq!(disk.read_at("log", 0, 100).await.unwrap(), b"synced", "unsynced append lost in the crash");
        }
        assert_eq!(world.disk(NodeId(0)).read_at("log", 0, 100).await.unwrap(), b"synced+unsynced", "az1's page cache is intact");
        assert!(matches!(world.apply(&Fault::ZoneDown { zone: "az2".into(), mode: ZoneMode::Crash }), Err(sim::FaultError::BadState { .. })));
        world.apply(&Fault::ZoneUp { zone: "az2".into() }).unwrap();
        let up_at = time::now();
        time::sleep(Duration::from_millis(5)).await;
        let beats = beats.lock().unwrap();
        assert!(beats.iter().any(|(m, t)| *m == NodeId(2) && *t >= up_at), "restarted from its disk");
        assert_eq!(world.incarnation(NodeId(2)), 1);
    });
}

#[test]
fn skewed_node_sees_skewed_time() {
    run(5, || async {
        let world = World::new(5, topo(), DiskConfig::default(), false);
        time::sleep(Duration::from_millis(10)).await;
        world.apply(&Fault::ClockOffset { node: "az1-n-0".into(), offset_ns: 500_000_000 }).unwrap();
        world.apply(&Fault::ClockDrift { node: "az2-n-0".into(), ppm: 100_000 }).unwrap();
        let skewed = world.clock(NodeId(0));
        let fast = world.clock(NodeId(2));
        let normal = world.clock(NodeId(1));
        let t0 = time::now();
        assert_eq!(skewed.now().0, t0.0 + 500_000_000);
        assert_eq!(normal.now(), t0);
        let f0 = fast.now();
        time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fast.now().0 - f0.0, 110_000_000, "10 % fast");
        // A lease-style local sleep of 110 ms on the fast clock takes 100 ms of true time.
        let t1 = time::now();
        fast.sleep(Duration::from_millis(110)).await;
        let took = time::now().saturating_sub(t1);
        assert!(took.abs_diff(Duration::from_millis(100)) <= Duration::from_micros(2), "{took:?}");
        world.apply(&Fault::ClockReset { node: "az1-n-0".into() }).unwrap();
        assert_eq!(skewed.now(), time::now());
    });
}

#[test]
fn latency_spike_and_loss() {
    run(6, || async {
        let world = World::new(6, topo(), DiskConfig::default(), false);
        let w = world.clone();
        with_client(&world, NodeId(0), move |_ctx, net| {
            let w = w.clone();
            async move {
                w.apply(&Fault::LatencySpike { a: vec!["az1".into()], b: vec!["az2".into()], extra: Duration::from_millis(3) }).unwrap();
                let t0 = time::now();
                net.call(NodeId(2), Ping::Ping(1), Duration::from_millis(50)).await.unwrap();
                let rtt = time::now().saturating_sub(t0);
                assert!(rtt.abs_diff(Duration::from_micros(8000)) <= Duration::from_micros(10), "{rtt:?}");
                w.apply(&Fault::LatencyClear { a: vec!["az1".into()], b: vec!["az2".into()] }).unwrap();
                w.apply(&Fault::Loss { a: vec!["az1".into()], b: vec!["az3".into()], rate: 0.5 }).unwrap();
                let mut ok = 0;
                for i in 0..200 {
                    if net.call(NodeId(4), Ping::Ping(i), Duration::from_millis(5)).await.is_ok() {
                        ok += 1;
                    }
                }
                // Each round trip survives with probability 0.25.
                assert!((25..=75).contains(&ok), "{ok} of 200 round trips survived");
            }
        })
        .await;
    });
}

fn digest_of(seed: u64) -> sim::Digest {
    let out = Arc::new(Mutex::new(None));
    let o2 = out.clone();
    run(seed, move || async move {
        let world = World::new(seed, topo(), DiskConfig::default(), false);
        let w = world.clone();
        with_client(&world, NodeId(0), move |_ctx, net| {
            let w = w.clone();
            async move {
                w.apply(&Fault::Loss { a: vec![], b: vec![], rate: 0.2 }).unwrap();
                for i in 0..50 {
                    let _ = net.call(NodeId((i % 5 + 1) as u32), Ping::Ping(i), Duration::from_millis(5)).await;
                }
            }
        })
        .await;
        *o2.lock().unwrap() = Some(world.digest());
    });
    let d = out.lock().unwrap().expect("digest");
    d
}

#[test]
fn same_seed_same_digest_other_seed_other_digest() {
    let a = digest_of(11);
    assert_eq!(a, digest_of(11));
    assert_ne!(a, digest_of(12));
    assert!(a.events > 60, "{a:?}");
}

#[test]
fn shutdown_frees_what_the_nodes_tasks_hold() {
    // A sweep runs thousands of worlds in one process: what a node's
    // processes hold must go with the run.
    let held = Arc::new(());
    let probe = held.clone();
    run(9, move || async move {
        let world = World::new(9, topo(), DiskConfig::default(), false);
        let h = probe.clone();
        world.start_node(NodeId(0), move |_ctx: NodeCtx| {
            let h = h.clone();
            async move {
                loop {
                    let _keep = &h;
                    time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        time::sleep(Duration::from_millis(50)).await;
        // This block's, the main's and the running task's, and the test's.
        assert_eq!(Arc::strong_count(&probe), 4);
        drop(probe);
        world.shutdown();
        time::sleep(Duration::from_millis(1)).await;
    });
    assert_eq!(Arc::strong_count(&held), 1, "the node's task and main were freed");
}

/// Every fault verb counts what it did while in force, for the fault that
/// did it: a fault with no traffic, no reader or no work shows none.
#[test]
fn each_fault_counts_its_own_effect_and_an_idle_one_counts_none() {
    run(7, || async {
        let world = World::new(7, topo(), DiskConfig::default(), false);
        let w = world.clone();
        // Node 0 calls nodes 2 (az2) and 4 (az3); nobody calls az1-n-1.
        with_client(&world, NodeId(0), move |_ctx, net| {
            let w = w.clone();
            async move {
                let both = |a: &str, b: &str| (vec![a.to_string()], vec![b.to_string()]);
                let (a2, b2) = both("az1-n-0", "az2");
                w.apply(&Fault::Partition { a: a2.clone(), b: b2.clone(), direction: Direction::Both }).unwrap(); // 0
                let (a1, b1) = both("az1-n-1", "az3");
                w.apply(&Fault::Partition { a: a1, b: b1, direction: Direction::Both }).unwrap(); // 1: nobody talks there
                for i in 0..5 {
                    assert!(net.call(NodeId(2), Ping::Ping(i), Duration::from_millis(5)).await.is_err());
                }
                w.apply(&Fault::Heal { a: a2, b: b2, direction: Direction::Both }).unwrap(); // 2
                net.call(NodeId(2), Ping::Ping(9), Duration::from_millis(50)).await.unwrap();
                let (a3, b3) = both("az1", "az3");
                w.apply(&Fault::LatencySpike { a: a3.clone(), b: b3.clone(), extra: Duration::from_millis(1) }).unwrap(); // 3
                for i in 0..3 {
                    net.call(NodeId(4), Ping::Ping(i), Duration::from_millis(50)).await.unwrap();
                }
                w.apply(&Fault::LatencyClear { a: a3.clone(), b: b3.clone() }).unwrap(); // 4
                net.call(NodeId(4), Ping::Ping(7), Duration::from_millis(50)).await.unwrap();
                w.apply(&Fault::Loss { a: a3, b: b3, rate: 1.0 }).unwrap(); // 5
                for i in 0..4 {
                    assert!(net.call(NodeId(4), Ping::Ping(i), Duration::from_millis(5)).await.is_err());
                }
                w.apply(&Fault::ClockOffset { node: "az2-n-0".into(), offset_ns: 1_000_000 }).unwrap(); // 6
                let c = w.clock(NodeId(2));
                for _ in 0..3 {
                    c.now();
                }
                w.apply(&Fault::ClockReset { node: "az2-n-0".into() }).unwrap(); // 7
                c.now();
                w.apply(&Fault::ClockOffset { node: "az3-n-1".into(), offset_ns: 1_000_000 }).unwrap(); // 8: never read
                w.apply(&Fault::NodeCrash { node: "az2-n-1".into() }).unwrap(); // 9
                w.apply(&Fault::NodeCrash { node: "az2-n-1".into() }).unwrap_err(); // 10: refused
                w.apply(&Fault::NodeRestart { node: "az2-n-1".into() }).unwrap(); // 11
                w.apply(&Fault::CpuSlow { target: vec!["az3-n-0".into()], speed_permille: 500 }).unwrap(); // 12
                let cpu = w.cpu(NodeId(4));
                for _ in 0..2 {
                    let _ = cpu.run(Duration::from_micros(10)).await;
                }
                w.apply(&Fault::CpuRestore { target: vec!["az3-n-0".into()] }).unwrap(); // 13
                let _ = cpu.run(Duration::from_micros(10)).await;
                let disk = w.disk(NodeId(1));
                disk.create("f").await.unwrap();
                let faults = sim::disk::DiskFaults { write_error_rate: 1.0, ..Default::default() };
                w.apply(&Fault::DiskFaultsOn { node: "az1-n-1".into(), faults }).unwrap(); // 14: still on at the end
                for _ in 0..3 {
                    assert!(disk.append("f", b"x").await.is_err());
                }
            }
        })
        .await;
        let e = world.fault_effects();
        assert_eq!(e.len(), 15);
        // A partition both ways: 5 calls cut on the way out.
        assert_eq!((e[0].messages_cut, e[0].to_string().as_str()), (5, "5 messages cut"));
        assert!(e[1].is_none(), "a partition no message met: {}", e[1]);
        assert_eq!(e[1].to_string(), "none");
        assert!(e[2].is_none() && e[4].is_none(), "the inverses count nothing themselves");
        // Three round trips through the spike, both ways: six messages.
        assert_eq!(e[3].messages_delayed, 6);
        assert_eq!(e[5].messages_lost, 4);
        assert_eq!(e[6].clock_reads_moved, 3, "the reading after the reset is true time");
        assert!(e[8].is_none(), "a clock nobody reads");
        assert_eq!((e[9].nodes_stopped, e[11].nodes_started), (1, 1));
        assert!(e[10].is_none());
        assert_eq!(e[12].cpu_jobs_slowed, 2);
        assert_eq!(e[14].disk_faults, 3, "counted up to now while the rates are on");
    });
}

/// Answers a ping with its number, plus 1000 once the node is marked for
/// removal.
async fn drain_echo(ctx: NodeCtx) {
    let (net, mut inbox): (Net<Ping>, Inbox<Ping>) = Net::bind(&ctx).await;
    while let Some(m) = inbox.recv().await {
        if let (Ping::Ping(x), Some(req)) = (m.msg, m.request) {
            net.reply(m.from, req, Ping::Pong(x + if ctx.draining() { 1000 } else { 0 })).await;
        }
    }
}

#[test]
fn a_spare_starts_only_when_added_and_a_drain_mark_reaches_the_nodes_processes() {
    run(7, || async {
        let mut t = topo();
        let spare = t.add_spare_node(ZoneId(2), "n");
        assert_eq!(t.node(spare).name, "az3-n-2");
        let world = World::new(7, t, DiskConfig::default(), false);
        for n in world.topology().nodes().iter().map(|n| n.id).filter(|&n| n != NodeId(0)) {
            world.start_node(n, drain_echo);
        }
        let w = world.clone();
        with_client_only(&world, NodeId(0), move |_ctx, net| {
            let w = w.clone();
            async move {
                let call = |to: NodeId, x: u64| net.call(to, Ping::Ping(x), Duration::from_millis(10));
                assert!(!w.is_alive(spare) && w.is_waiting(spare));
                assert!(matches!(call(spare, 1).await, Err(NetError::Timeout)), "a spare not yet added is down");
                assert!(w.apply(&Fault::NodeRestart { node: "az3-n-2".into() }).is_err(), "restart cannot start a spare");
                assert!(w.apply(&Fault::NodeDrain { node: "az3-n-2".into() }).is_err());
                // A zone that comes back leaves the spare out.
                w.apply(&Fault::ZoneDown { zone: "az3".into(), mode: ZoneMode::Crash }).unwrap();
                assert!(w.apply(&Fault::NodeAdd { node: "az3-n-2".into() }).is_err(), "not into a zone that is down");
                w.apply(&Fault::ZoneUp { zone: "az3".into() }).unwrap();
                time::sleep(Duration::from_micros(50)).await;
                assert!(matches!(call(NodeId(4), 2).await, Ok(Ping::Pong(2))));
                assert!(matches!(call(spare, 3).await, Err(NetError::Timeout)));
                // Added: it runs and answers.
                w.apply(&Fault::NodeAdd { node: "az3-n-2".into() }).unwrap();
                assert!(w.apply(&Fault::NodeAdd { node: "az3-n-2".into() }).is_err(), "added once");
                time::sleep(Duration::from_micros(50)).await;
                assert!(matches!(call(spare, 4).await, Ok(Ping::Pong(4))));
                // A drain mark: the node's process reads it, across a restart.
                assert!(w.apply(&Fault::NodeAdd { node: "az2-n-0".into() }).is_err(), "not a spare");
                w.apply(&Fault::NodeDrain { node: "az2-n-0".into() }).unwrap();
                assert!(matches!(call(NodeId(2), 5).await, Ok(Ping::Pong(1005))));
                assert!(matches!(call(NodeId(3), 5).await, Ok(Ping::Pong(5))), "only the marked node");
                w.apply(&Fault::NodeCrash { node: "az2-n-0".into() }).unwrap();
                w.apply(&Fault::NodeRestart { node: "az2-n-0".into() }).unwrap();
                time::sleep(Duration::from_micros(50)).await;
                assert!(matches!(call(NodeId(2), 6).await, Ok(Ping::Pong(1006))));
                assert!(w.apply(&Fault::NodeDrain { node: "az2-n-0".into() }).is_err(), "marked once");
            }
        })
        .await;
        let effects = world.fault_effects();
        assert!(effects.iter().any(|e| e.nodes_drained == 1), "{effects:?}");
    });
}
