//! A green run must have tested something: the service is set up before
//! the main phase whatever the faults, and a run fails by default when a
//! workload got nothing done, when a fault window met no operation, or
//! when the service could not be set up.

mod common;

use common::{expectation, run};
use tablesim::execute::Executed;

/// A small table store (one node of each role per zone, three storage
/// nodes), `duration` long, with `faults` (TOML) and `expect` (TOML).
fn table(duration: &str, faults: &str, expect: &str) -> String {
    format!(
        r#"name = "small-table"
description = "d"
duration = "{duration}"

[topology]
zones = ["az1", "az2", "az3"]
nodes = {{ meta = 1, manager = 1, storage = 1, master = 1, table = 1, proxy = 1, client = 1 }}
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[service]
kind = "table"
partitions = 8
dead_after = "500ms"

[[workload]]
name = "rows"
clients = 6
rate = 300
keys = 200
mix = {{ read = 0.5, write = 0.5 }}
timeout = "1s"
{faults}
[expect]
{expect}
"#
    )
}

/// minikv on three zones, `duration` long.
fn minikv(duration: &str, faults: &str, expect: &str) -> String {
    format!(
        r#"name = "small-kv"
description = "d"
duration = "{duration}"

[topology]
zones = ["az1", "az2", "az3"]
nodes = {{ kv = 1, client = 1 }}
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[[workload]]
name = "kv"
clients = 4
rate = 400
keys = 50
mix = {{ read = 1.0, write = 1.0 }}
timeout = "50ms"
{faults}
[expect]
{expect}
"#
    )
}



fn main_ops(done: &Executed) -> u64 {
    done.report.operations.values().map(|c| c.ok + c.fail + c.info).sum()
}

#[test]
fn a_zone_fault_at_the_start_meets_a_table_that_is_already_set_up() {
    let faults = "\n[[fault]]\nat = \"0s\"\nuntil = \"300ms\"\nverb = \"zone-down\"\ntarget = \"az2\"\nmode = \"crash\"\n";
    let done = run(&table("2s", faults, "live = true\nliveness_bound = \"2s\""));
    let r = &done.report;
    assert_eq!(r.main_start, "1s", "the table is created before the main phase, on a whole second");
    assert_eq!(r.faults[0].at, "1s", "the fault is timed from the main phase's start");
    assert!(main_ops(&done) > 100, "operations ran: {:?}", r.operations);
    let (pass, measured) = expectation(&done, "min_fault_window_ops");
    assert!(pass, "{measured}");
    assert_eq!(expectation(&done, "set_up"), (true, "main phase from 1s".into()));
    assert!(r.pass, "{}", r.summary());
}

#[test]
fn a_table_scenario_of_a_tenth_of_a_second_runs_operations() {
    let done = run(&table("100ms", "", "live = true"));
    assert!(main_ops(&done) > 0, "{}", done.report.summary());
    let (pass, measured) = expectation(&done, "min_workload_ops");
    assert!(pass && measured.starts_with("rows "), "{measured}");
}

#[test]
fn a_service_that_cannot_be_set_up_in_time_fails_the_run_with_set_up() {
    // Every message takes seconds: creating the table takes longer than
    // set-up may.
    let text = table("1s", "", "live = true").replace("intra_zone_latency = \"100us\"", "intra_zone_latency = \"4s\"").replace("inter_zone_latency = \"1ms\"", "inter_zone_latency = \"8s\"");
    let done = run(&text);
    let (pass, measured) = expectation(&done, "set_up");
    assert!(!pass && measured.contains("not set up within 30s"), "{measured}");
    assert!(!done.report.pass);
    assert_eq!(main_ops(&done), 0, "no main phase");
    assert!(done.report.phases.is_empty());
    assert!(!done.report.expectations.iter().any(|e| e.name == "final_reads_complete"), "set_up says why");
}

#[test]
fn a_workload_that_completes_nothing_fails_min_workload_ops() {
    // Every client cut off from every server for the whole main phase.
    let cut = "\n[[fault]]\nat = \"0s\"\nverb = \"partition\"\nfrom = [\"az1-client-0\", \"az2-client-0\", \"az3-client-0\"]\nto = [\"az1-kv-0\", \"az2-kv-0\", \"az3-kv-0\"]\n";
    let done = run(&minikv("1s", cut, "lost_acked_writes = 0"));
    assert!(main_ops(&done) > 0, "operations were tried");
    assert_eq!(expectation(&done, "min_workload_ops"), (false, "kv 0".into()));
    assert!(!done.report.pass, "nothing lost because nothing was written: not a pass");
    // Turned off, the run passes on its other expectations.
    let done = run(&minikv("1s", cut, "lost_acked_writes = 0\nmin_workload_ops = 0"));
    assert!(!done.report.expectations.iter().any(|e| e.name == "min_workload_ops"));
}

#[test]
fn a_fault_window_that_meets_no_operation_fails_min_fault_window_ops() {
    // Over before the workloads start (10 ms into the main phase).
    let early = "\n[[fault]]\nat = \"0s\"\nuntil = \"5ms\"\nverb = \"zone-down\"\ntarget = \"az2\"\n";
    let done = run(&minikv("1s", early, "live = true"));
    let (pass, measured) = expectation(&done, "min_fault_window_ops");
    assert!(!pass && measured.starts_with("0 in zone-down az2 (crash) [0ns, 5ms)"), "{measured}");
    assert!(!done.report.pass);
    // A fault at the very end meets nothing either.
    let late = "\n[[fault]]\nat = \"1s\"\nverb = \"zone-down\"\ntarget = \"az2\"\n";
    let (pass, measured) = expectation(&run(&minikv("1s", late, "live = true")), "min_fault_window_ops");
    assert!(!pass, "{measured}");
    // One that operations met passes.
    let met = "\n[[fault]]\nat = \"200ms\"\nuntil = \"400ms\"\nverb = \"zone-down\"\ntarget = \"az2\"\n";
    let (pass, measured) = expectation(&run(&minikv("1s", met, "live = true")), "min_fault_window_ops");
    assert!(pass && measured.starts_with("fewest "), "{measured}");
}

#[test]
fn a_fault_that_does_nothing_fails_faults_take_effect() {
    // minikv reads no clock: moving one is inert.
    let clock = "\n[[fault]]\nat = \"200ms\"\nuntil = \"600ms\"\nverb = \"clock-offset\"\ntarget = \"az2-kv-0\"\noffset = \"1s\"\n";
    let done = run(&minikv("1s", clock, "live = true"));
    let (pass, measured) = expectation(&done, "faults_take_effect");
    assert!(!pass && measured == "clock-offset az2-kv-0 +1s at 200ms: no effect", "{measured}");
    assert!(!done.report.pass);
    assert_eq!(done.report.faults[0].effect.as_deref(), Some("none"));
    // Turned off, the run passes and the report still says so.
    let done = run(&minikv("1s", clock, "live = true\nfaults_take_effect = false"));
    assert!(done.report.pass && !done.report.expectations.iter().any(|e| e.name == "faults_take_effect"));
    // A zone crash under load stops its node and cuts nothing else.
    let crash = "\n[[fault]]\nat = \"200ms\"\nuntil = \"400ms\"\nverb = \"zone-down\"\ntarget = \"az2\"\n";
    let done = run(&minikv("1s", crash, "live = true"));
    let (pass, measured) = expectation(&done, "faults_take_effect");
    assert!(pass && measured == "all 1", "{measured}");
    assert_eq!(done.report.faults[0].effect.as_deref(), Some("2 nodes stopped"), "the zone's kv and client nodes");
}
