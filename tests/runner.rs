//! The runner's promises: faults left in place are healed before the final
//! phase, and a failed expectation exits 1 with the exact replay command.
#![allow(clippy::disallowed_methods)] // host-side test: writes a scratch scenario file

use std::path::Path;
use std::process::Command;

use tablesim::execute::execute;
use tablesim::parse_scenario as parse;
use tablesim::run::RunOptions;

const OPEN_FAULT: &str = r#"name = "open-fault"
description = "a zone goes down and the scenario never brings it back"
duration = "2s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { kv = 1, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[[workload]]
name = "kv"
clients = 6
rate = 600
keys = 50
mix = { read = 1.0, write = 1.0 }
timeout = "50ms"

[[fault]]
at = "1s"
verb = "zone-down"
target = "az2"

[expect]
lost_acked_writes = 0
live = true
liveness_bound = "1s"
min_availability = 0.999
"#;

#[test]
fn a_fault_left_in_place_is_healed_before_the_final_reads() {
    let scn = parse(Path::new("open-fault.toml"), OPEN_FAULT.as_bytes()).unwrap();
    let done = execute(&scn, 3, &RunOptions::default()).unwrap();
    let r = &done.report;
    let faults: Vec<&str> = r.faults.iter().map(|f| f.fault.as_str()).collect();
    assert_eq!(faults, ["zone-down az2 (crash)", "zone-up az2"], "healed after the main phase");
    // After the main phase (2s) and its operations in flight (50ms timeout + 1ms).
    assert_eq!(r.faults[1].at, "2.051s");
    assert!(r.final_phase_complete);
    assert!(r.final_reads.ok > 0 && r.final_reads.fail + r.final_reads.info < 50, "{:?}", r.final_reads);
    let names: Vec<(&str, bool)> = r.expectations.iter().map(|e| (e.name.as_str(), e.pass)).collect();
    assert!(names.contains(&("lost_acked_writes", true)) && names.contains(&("live", true)), "{names:?}");
    assert!(names.contains(&("min_availability", false)), "a third of the keys were down for a second: {names:?}");
    assert!(!r.pass);
}

#[test]
fn a_fault_never_undone_runs_to_the_end_of_the_main_phase_in_the_phases() {
    let scn = parse(Path::new("open-fault.toml"), OPEN_FAULT.as_bytes()).unwrap();
    let done = execute(&scn, 3, &RunOptions::default()).unwrap();
    let p: Vec<(&str, &str, &str)> = done.report.phases.iter().map(|p| (p.phase.as_str(), p.from.as_str(), p.to.as_str())).collect();
    // The heal after the main phase cuts nothing: no `after` phase.
    assert_eq!(p, [("before", "10ms", "1s"), ("during zone-down az2 (crash)", "1s", "2s")]);
    let (before, during) = (&done.report.phases[0], &done.report.phases[1]);
    assert!(before.availability > 0.99, "{}", before.availability);
    assert!(during.availability < 0.8, "a third of the keys are down: {}", during.availability);
    assert!(during.ok_per_s < before.ok_per_s, "{} vs {}", during.ok_per_s, before.ok_per_s);
    let total: u64 = done.report.phases.iter().map(|p| p.operations.ok + p.operations.fail + p.operations.info).sum();
    let main: u64 = done.report.operations.values().map(|c| c.ok + c.fail + c.info).sum();
    assert_eq!(total, main, "every main-phase operation is in one phase");
}

#[test]
fn fault_windows_pair_each_fault_with_what_undid_it() {
    // The open fault, plus a crash undone by a separate restart entry and a
    // clock offset undone by its `until`.
    let text = format!(
        "{OPEN_FAULT}\n[[fault]]\nat = \"200ms\"\nverb = \"node-crash\"\ntarget = \"az1-kv-0\"\n\
         [[fault]]\nat = \"500ms\"\nverb = \"node-restart\"\ntarget = \"az1-kv-0\"\n\
         [[fault]]\nat = \"800ms\"\nuntil = \"1.5s\"\nverb = \"clock-offset\"\ntarget = \"az3-kv-0\"\noffset = \"10ms\"\n"
    );
    let scn = parse(Path::new("windows.toml"), text.as_bytes()).unwrap();
    let at = |i: usize| sim::time::fmt_duration(scn.faults[i].at);
    let got: Vec<(String, Option<String>)> = tablesim::scenario::fault_windows(&scn.faults).into_iter().map(|(on, off)| (at(on), off.map(at))).collect();
    let want = [("200ms", Some("500ms")), ("800ms", Some("1.5s")), ("1s", None)];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.map(str::to_string))));
    let heal: Vec<String> = tablesim::scenario::heal_all(&scn.faults).iter().map(|f| f.to_string()).collect();
    assert_eq!(heal, ["zone-up az2"], "only the fault never undone is healed");
}

#[test]
fn the_main_end_hook_sees_the_end_of_the_main_phase_and_changes_nothing() {
    use std::sync::{Arc, Mutex};
    let scn = parse(Path::new("open-fault.toml"), OPEN_FAULT.as_bytes()).unwrap();
    let plain = tablesim::run::run(&scn, 3, &RunOptions::default()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let opts = RunOptions { on_main_end: Some(Arc::new(move |t| s.lock().unwrap().push(t))), ..RunOptions::default() };
    let hooked = tablesim::run::run(&scn, 3, &opts).unwrap();
    assert_eq!(*seen.lock().unwrap(), [plain.main_end], "called once, at the end of the main phase");
    assert_eq!(plain.main_end.to_string(), "2s");
    assert_eq!(hooked.digest, plain.digest);
}

#[test]
fn a_failed_expectation_exits_1_and_prints_the_replay_command() {
    let dir = std::env::temp_dir().join(format!("tablesim-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("open-fault.toml");
    std::fs::write(&path, OPEN_FAULT).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tablesim"))
        .args(["run", path.to_str().unwrap(), "--seed", "3", "--out", dir.join("out").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("replay: cargo run --release -- run {} --seed 3", path.display())), "{stderr}");
    for f in ["report.yaml", "report.json", "history.jsonl"] {
        assert!(dir.join("out").join(f).exists(), "{f} written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small table store whose table server in az2 crashes for two seconds.
const TABLE_CRASH: &str = r#"name = "table-crash"
description = "a table server crashes and its partitions move"
duration = "4s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { meta = 1, manager = 1, storage = 3, master = 1, table = 1, proxy = 1, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[service]
kind = "table"
partitions = 6

[[workload]]
name = "rows"
clients = 3
rate = 150
keys = 60
mix = { read = 1.0, write = 1.0 }
timeout = "3s"

[[fault]]
at = "1s"
until = "3s"
verb = "node-crash"
target = "az2-table-0"

[expect]
lost_acked_writes = 0
max_time_to_recover = "1ms"
"#;

#[test]
fn a_failover_slower_than_max_time_to_recover_fails_the_run_and_names_the_partition() {
    let scn = parse(Path::new("table-crash.toml"), TABLE_CRASH.as_bytes()).unwrap();
    let done = execute(&scn, 1, &RunOptions::default()).unwrap();
    let r = &done.report;
    let table = r.table.as_ref().expect("a table scenario reports its failovers");
    assert!(table.failovers.get("ServerDead").is_some_and(|&n| n > 0), "{:?}", table.failovers);
    let e = r.expectations.iter().find(|e| e.name == "max_time_to_recover").expect("expectation judged");
    assert!(!e.pass, "no failover recovers within 1ms: {e:?}");
    assert!(e.measured.contains("for partition"), "{}", e.measured);
    assert_eq!(Some(e.measured.clone()), table.longest_unserved, "the measured one is the longest unserved span");
    assert!(!r.pass);
}

/// An open-loop workload beside a closed-loop one on minikv.
const MIXED_LOOPS: &str = r#"name = "mixed-loops"
description = "an open-loop workload beside a closed-loop one"
duration = "2s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { kv = 1, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[[workload]]
name = "open"
clients = 3
rate = 300
keys = 50
mix = { read = 1.0, write = 1.0 }
timeout = "200ms"
open_loop = true

[[workload]]
name = "closed"
clients = 6
rate = 3000
keys = 50
mix = { read = 1.0, write = 1.0 }
timeout = "200ms"
"#;

/// The load section's goodput is the open-loop workloads' alone, the
/// workloads whose arrivals and sheds it gives beside it: it never
/// exceeds what they sent.
#[test]
fn the_load_sections_goodput_counts_the_open_loop_workloads_only() {
    let scn = parse(Path::new("mixed-loops.toml"), MIXED_LOOPS.as_bytes()).unwrap();
    let done = execute(&scn, 1, &RunOptions::default()).unwrap();
    let load = done.report.load.clone().expect("an open-loop workload has load figures");
    // "open N, closed M": each workload's successes in the main phase.
    let measured = &done.report.expectations.iter().find(|e| e.name == "min_workload_ops").expect("judged by default").measured;
    let workload_ok: std::collections::BTreeMap<String, u64> = measured
        .split(", ")
        .map(|w| {
            let (name, n) = w.split_once(' ').unwrap();
            (name.to_string(), n.parse().unwrap())
        })
        .collect();
    assert!(workload_ok["closed"] > workload_ok["open"], "the closed loop does more: {workload_ok:?}");
    assert!(load.ok_per_s <= load.sent_per_s, "{load:?}");
    let ok: u64 = load.ok.split(' ').map(|x| x.parse::<u64>().unwrap()).sum();
    assert_eq!(ok, workload_ok["open"], "{load:?}");
}

/// A small table store with a spare server per zone: az1's joins at 1 s,
/// and az3's first server is drained at 2 s (`{drain}`: its target).
const ELASTIC: &str = r#"name = "elastic"
description = "a server joins and one is drained"
duration = "4s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { meta = 1, manager = 1, storage = 3, master = 1, table = 1, proxy = 1, client = 1 }
spare = { table = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[service]
kind = "table"
partitions = 12

[[workload]]
name = "rows"
clients = 3
rate = 150
keys = 60
mix = { read = 1.0, write = 1.0 }
timeout = "3s"

[[fault]]
at = "1s"
verb = "node-add"
target = "az1-table-1"

[[fault]]
at = "2s"
verb = "node-drain"
target = "{drain}"

[expect]
lost_acked_writes = 0
linearizable = true
max_drain_time = "{max_drain}"
min_added_share = 0.5
"#;

fn elastic(drain: &str, max_drain: &str) -> tablesim::report::Report {
    let text = ELASTIC.replace("{drain}", drain).replace("{max_drain}", max_drain);
    let scn = parse(Path::new("elastic.toml"), text.as_bytes()).unwrap();
    execute(&scn, 1, &RunOptions::default()).unwrap().report
}

#[test]
fn an_added_server_takes_its_share_and_a_drained_one_gives_all_away() {
    let r = elastic("az3-table-0", "3s");
    let table = r.table.as_ref().expect("table section");
    let names: Vec<(&str, bool, bool)> = table.elastic.iter().map(|e| (e.server.as_str(), e.added.is_some(), e.drain_from.is_some())).collect();
    assert_eq!(names, vec![("az1-table-1", true, false), ("az3-table-0", false, true)]);
    let drained = &table.elastic[1];
    assert_eq!(drained.partitions_at_end, 0);
    assert!(drained.drained_after_time.is_some_and(|d| d < std::time::Duration::from_secs(3)), "{drained:?}");
    assert!(table.failovers.get("Drained").is_some_and(|&n| n > 0), "{:?}", table.failovers);
    assert!(table.elastic[0].partitions_at_end > 0, "{:?}", table.elastic[0]);
    for name in ["max_drain_time", "min_added_share", "lost_acked_writes", "linearizable"] {
        let e = r.expectations.iter().find(|e| e.name == name).expect("judged");
        assert!(e.pass, "{e:?}");
    }
    // A drain slower than the bound fails, and names the server.
    let r = elastic("az3-table-0", "1ns");
    let e = r.expectations.iter().find(|e| e.name == "max_drain_time").expect("judged");
    assert!(!e.pass && e.measured.starts_with("az3-table-0 empty"), "{e:?}");
    // Draining the added server leaves it nothing: min_added_share fails.
    let r = elastic("az1-table-1", "3s");
    let e = r.expectations.iter().find(|e| e.name == "min_added_share").expect("judged");
    assert!(!e.pass && e.measured.starts_with("az1-table-1: 0 partitions"), "{e:?}");
}
