//! The runner's promises: faults left in place are healed before the final
//! phase, and a failed expectation exits 1 with the exact replay command.
#![allow(clippy::disallowed_methods)] // host-side test: writes a scratch scenario file

use std::path::Path;
use std::process::Command;

use tablesim::execute::execute;
use tablesim::runner::RunOptions;
use tablesim::scenario::parse;

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
