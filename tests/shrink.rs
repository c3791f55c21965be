//! Shrinking on deliberately broken variants of minikv: a run under five
//! faults that fails because of a planted bug shrinks to a scenario with at
//! most a quarter of the faults and operations, which still fails the same
//! expectation when its written file is run again.
#![allow(clippy::disallowed_methods)] // host-side test: runs the CLI, reads what it wrote

use std::path::Path;
use std::process::Command;

use tablesim::cli::shrink::{finish_doc, judge};
use tablesim::parse_scenario;
use tablesim::shrink::{fault_count, shrink, target, Limits};

/// minikv under five faults, of which only the zone crash (and restart)
/// matters to any planted bug; 24 clients on 20 keys.
const FIVE_FAULTS: &str = r#"name = "kv-five-faults"
description = "minikv under five faults: a zone crash and restart among link, pause and clog faults"
seed = 1
duration = "6s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { kv = 2, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"
jitter = "20us"

[disk]
sync_latency = "5ms"
crash_writeback = 0.0

[service]
planted_bug = "BUG"

[[workload]]
name = "kv"
clients = 24
rate = 3000
keys = 20
mix = { read = 0.4, write = 0.3, cas = 0.1, delete = 0.1, append = 0.1 }
timeout = "50ms"

[[fault]]
at = "500ms"
until = "1500ms"
verb = "loss"
from = "az1"
to = "az3"
rate = 0.2

[[fault]]
at = "1500ms"
until = "3s"
verb = "zone-down"
target = "az2"
mode = "crash"

[[fault]]
at = "3500ms"
until = "4500ms"
verb = "latency-spike"
from = "az1"
to = "az2"
extra = "5ms"

[[fault]]
at = "4s"
until = "4500ms"
verb = "node-pause"
target = "az3-kv-0"

[[fault]]
at = "5s"
until = "5500ms"
verb = "clog"
from = "az1"
to = "az3"

[expect]
lost_acked_writes = 0
linearizable = true
sequence_ok = true
live = true
liveness_bound = "1s"
"#;

fn text(bug: Option<&str>) -> String {
    match bug {
        Some(b) => FIVE_FAULTS.replace("\"BUG\"", &format!("\"{b}\"")),
        None => FIVE_FAULTS.replace("[service]\nplanted_bug = \"BUG\"\n", ""),
    }
}

fn scenario(text: &str) -> tablesim::scenario::Scenario {
    parse_scenario(Path::new("kv-five-faults.toml"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn each_planted_bug_shrinks_to_a_quarter_of_its_faults_and_operations_and_still_fails_the_same_way() {
    // Without a bug every seed used below passes: the failures are the bugs'.
    let clean = text(None);
    for seed in [2, 1, 1, 1] {
        let o = judge(&scenario(&clean), seed, 5);
        assert!(o.failed.is_empty(), "seed {seed} fails without a bug: {:?}", o.failed);
    }
    // (bug, a seed at which the five-fault run shows it, what it fails)
    let cases = [
        ("ack-before-sync", 2, "linearizable"),
        ("cas-ignores-batch", 1, "linearizable"),
        ("seq-not-recovered", 1, "sequence_ok"),
        ("delete-not-logged", 1, "linearizable"),
    ];
    for (bug, seed, expected) in cases {
        let t = text(Some(bug));
        let scn = scenario(&t);
        let doc: toml::Table = t.parse().unwrap();
        let first = judge(&scn, seed, fault_count(&doc));
        let goal = target(&first.failed, None).unwrap_or_else(|e| panic!("{bug}: {e}"));
        assert_eq!(goal, expected, "{bug} at seed {seed} fails {:?}", first.failed);
        assert_eq!(first.size.faults, 5);
        let mut runs = |batch: &[(toml::Table, u64)]| -> Vec<Option<tablesim::shrink::Outcome>> {
            batch
                .iter()
                .map(|(d, s)| {
                    let scn = parse_scenario(Path::new("candidate.toml"), toml::to_string(d).unwrap().as_bytes()).ok()?;
                    Some(judge(&scn, *s, fault_count(d)))
                })
                .collect()
        };
        let s = shrink(doc, seed, &goal, first.size, &Limits { max_runs: 600, nearby: 2, batch: 1 }, &mut runs);
        let (b, a) = (s.before, s.after);
        assert!(a.faults * 4 <= b.faults, "{bug}: {} of {} faults left", a.faults, b.faults);
        assert!(a.operations * 4 <= b.operations, "{bug}: {} of {} operations left", a.operations, b.operations);
        assert!(a.events < b.events && a.clients <= b.clients, "{bug}: {a:?} against {b:?}");
        // The file as written fails the same way when read and run again.
        let written = finish_doc(&s, &scn, Path::new("kv-five-faults.toml"), seed, &goal).unwrap();
        let again = scenario(&written);
        assert_eq!(again.seed, s.seed);
        let o = judge(&again, again.seed, fault_count(&written.parse().unwrap()));
        assert!(o.failed.contains(&goal), "{bug}: the shrunk scenario fails {:?}, not {goal}\n{written}", o.failed);
        assert_eq!(o.size, a, "{bug}: the written file runs as the search measured it");
        // The crash-dependent bugs keep their crash; the CAS bug needs none.
        let verbs: Vec<&str> = s.doc.get("fault").and_then(|f| f.as_array()).map_or(Vec::new(), |fs| fs.iter().filter_map(|f| f.get("verb")?.as_str()).collect());
        if bug == "cas-ignores-batch" {
            assert!(verbs.is_empty(), "{bug}: {verbs:?}");
        } else {
            assert_eq!(verbs, ["zone-down"], "{bug}");
        }
    }
}

#[test]
fn the_command_writes_a_failing_scenario_and_refuses_a_passing_run() {
    let dir = std::env::temp_dir().join(format!("tablesim-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bugged = dir.join("bugged.toml");
    std::fs::write(&bugged, text(Some("seq-not-recovered"))).unwrap();
    let out = dir.join("small.toml");
    let run = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(["shrink", bugged.to_str().unwrap(), "--seed", "1", "--jobs", "2", "--out", out.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("fails sequence_ok"), "{stdout}");
    assert!(stdout.contains(&format!("replay: cargo run --release -- run {}", out.display())), "{stdout}");
    assert!(stdout.contains("faults") && stdout.contains("operations") && stdout.contains("simulated time") && stdout.contains("events"), "{stdout}");
    let replay = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(["run", out.to_str().unwrap(), "--out", dir.join("replay").to_str().unwrap()]).output().unwrap();
    assert_eq!(replay.status.code(), Some(1), "the shrunk scenario fails when run: {}", String::from_utf8_lossy(&replay.stdout));

    let clean = dir.join("clean.toml");
    std::fs::write(&clean, text(None)).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(["shrink", clean.to_str().unwrap(), "--seed", "1"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("passes: there is no failure to shrink"));
    let wrong = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(["shrink", bugged.to_str().unwrap(), "--seed", "1", "--expect", "live"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("does not fail `live`"), "{}", String::from_utf8_lossy(&wrong.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}
