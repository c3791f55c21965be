//! minikv is the testbed's self-check: its bugs are known, so the checkers
//! must find them. With a bug planted, a run that passes without it must
//! fail, and for the reason the bug gives.
#![allow(clippy::disallowed_methods)] // host-side test: reads a shipped scenario

use std::path::Path;

use tablesim::check::Verdict;
use tablesim::execute::execute;
use tablesim::parse_scenario;
use tablesim::run::RunOptions;
use tablesim::scenario::Scenario;

/// A zone of minikv servers crashes while writes are in flight, on disks
/// whose syncs take 5 ms and that keep no unsynced sector through a crash,
/// and stays down to the end of the main phase: its keys are read back
/// only after it restarts from its disks.
const SLOW_DISKS_ZONE_CRASH: &str = r#"name = "slow-disks-zone-crash"
description = "az2 crashes with writes in flight on slow disks that keep nothing unsynced"
duration = "4s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { kv = 2, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[disk]
sync_latency = "5ms"
crash_writeback = 0.0

[[workload]]
name = "kv"
clients = 24
rate = 4000
keys = 300
mix = { read = 0.5, write = 0.5 }
timeout = "50ms"

[[fault]]
at = "2s"
verb = "zone-down"
target = "az2"
mode = "crash"

[expect]
lost_acked_writes = 0
linearizable = true
"#;

/// The scenario with `line` in a `[service]` table.
fn scenario(service_line: Option<&str>) -> Scenario {
    let text = match service_line {
        Some(line) => SLOW_DISKS_ZONE_CRASH.replacen("[[workload]]", &format!("[service]\n{line}\n\n[[workload]]"), 1),
        None => SLOW_DISKS_ZONE_CRASH.to_string(),
    };
    parse_scenario(Path::new("slow-disks-zone-crash.toml"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn acknowledging_writes_before_the_wal_sync_loses_some_and_the_checkers_find_them() {
    // minikv as it is: a write is acknowledged after the sync that covers
    // it, so the crash loses nothing acknowledged.
    let scn = scenario(None);
    let done = execute(&scn, scn.seed, &RunOptions::default()).unwrap();
    assert!(done.report.pass, "{}", done.report.summary());

    // With the bug: az2's servers crash holding acknowledged writes that no
    // sync covered yet; the crash loses them, the final reads miss them.
    let scn = scenario(Some("planted_bug = \"ack-before-sync\""));
    let done = execute(&scn, scn.seed, &RunOptions::default()).unwrap();
    let r = &done.report;
    let checks = r.checks.as_ref().expect("checked");
    assert_eq!(checks.durability.verdict, Verdict::Fail, "{}", r.summary());
    assert!(checks.durability.counts.get("lost_acked_writes").is_some_and(|&n| n > 0), "{:?}", checks.durability.counts);
    assert_eq!(checks.linearizable.verdict, Verdict::Fail, "a read saw a value older than an acknowledged write: {}", r.summary());
    let failed: Vec<&str> = r.expectations.iter().filter(|e| !e.pass).map(|e| e.name.as_str()).collect();
    assert_eq!(failed, ["lost_acked_writes", "linearizable"]);
    assert!(!r.pass);
}

#[test]
fn a_planted_bug_must_be_one_its_service_knows() {
    let refused = |text: String| parse_scenario(Path::new("bad.toml"), text.as_bytes()).expect_err("refused");
    let e = refused(SLOW_DISKS_ZONE_CRASH.replacen("[[workload]]", "[service]\nplanted_bug = \"lose-everything\"\n\n[[workload]]", 1));
    assert_eq!(e.field, "service.planted_bug", "{e}");
    assert!(e.message.contains("unknown bug `lose-everything`") && e.message.contains("ack-before-sync"), "{e}");
    let stream = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/stream-zone-crash.toml")).expect("shipped scenario");
    let e = refused(stream.replacen("[service]\n", "[service]\nplanted_bug = \"ack-before-sync\"\n", 1));
    assert_eq!(e.field, "service.planted_bug", "{e}");
    assert_eq!(e.message, "applies to the minikv and table services only", "{e}");
    let table = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/table-hot-key-read.toml")).expect("shipped scenario");
    let e = refused(table.replacen("[service]\n", "[service]\nplanted_bug = \"ack-before-sync\"\n", 1));
    assert_eq!(e.field, "service.planted_bug", "{e}");
    assert!(e.message.contains("unknown bug `ack-before-sync`") && e.message.contains("hotzone-stale") && e.message.contains("combine-early-ack"), "{e}");
}
