//! The capacity curve: each step offers its multiple of the rate, the runs
//! with faults measure recovery, and the goals see a collapse.

use std::path::Path;

use tablesim::cli::curve::{goals, run, Step};
use tablesim::parse_scenario as parse;

/// A small table store under a light open-loop load; one table server
/// crashes for a second early on.
const SMALL: &str = r#"name = "curve-small"
description = "a small table store for the capacity curve"
duration = "13s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { meta = 1, manager = 1, storage = 3, master = 1, table = 1, proxy = 1, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[service]
kind = "table"
partitions = 4

[[workload]]
name = "rows"
clients = 3
rate = 60
keys = 200
mix = { read = 1.0, write = 1.0 }
timeout = "3s"

[[fault]]
at = "1s"
until = "2s"
verb = "node-crash"
target = "az2-table-0"
"#;

#[test]
fn each_step_offers_its_multiple_and_the_runs_with_faults_measure_recovery() {
    let scn = parse(Path::new("curve-small.toml"), SMALL.as_bytes()).unwrap();
    let steps = run(&scn, &[1.0, 3.0], true, true, 1, 2).unwrap();
    assert_eq!(steps.iter().map(|s| (s.multiplier, s.faults)).collect::<Vec<_>>(), [(1.0, false), (1.0, true), (3.0, false), (3.0, true)]);
    let (one, three) = (&steps[0], &steps[2]);
    assert!(one.offered_per_s > 40.0 && one.offered_per_s < 80.0, "about 60 offered at 1x: {one:?}");
    let ratio = three.offered_per_s / one.offered_per_s;
    assert!((2.5..3.5).contains(&ratio), "3x offers three times as much: {ratio}");
    assert!(three.ok_per_s > 2.0 * one.ok_per_s, "a light load is served whole: {one:?} {three:?}");
    for s in &steps {
        assert_eq!(s.ok_per_s_recovered.is_some(), s.faults, "recovery is measured on the runs with faults only: {s:?}");
    }
    let g = goals(&steps);
    assert_eq!(g.peak_at, 3.0);
    assert_eq!(g.past_peak_worst_ratio, 1.0, "nothing lies past the peak");
    assert!(g.recovered_worst_ratio.is_some_and(|r| r > 0.8), "{g:?}");
}

fn quiet(m: f64, ok: f64) -> Step {
    Step {
        multiplier: m,
        faults: false,
        offered_per_s: m * 100.0,
        ok_per_s: ok,
        p50: String::new(),
        p99: String::new(),
        busy_refused: 0,
        store_refusals: 0,
        shed_at_client: 0,
        availability: 1.0,
        ok_per_s_before: ok,
        ok_per_s_recovered: None,
    }
}

#[test]
fn the_goals_see_a_collapse_past_the_peak_and_a_slow_recovery() {
    let healthy = [quiet(1.0, 100.0), quiet(2.0, 190.0), quiet(4.0, 185.0)];
    let g = goals(&healthy);
    assert_eq!((g.peak_ok_per_s, g.peak_at), (190.0, 2.0));
    assert_eq!(g.past_peak_worst_ratio, 0.974);
    assert_eq!(g.recovered_worst_ratio, None);
    let mut collapsed = healthy.to_vec();
    collapsed.push(quiet(8.0, 40.0));
    let mut faulted = quiet(8.0, 90.0);
    faulted.faults = true;
    faulted.ok_per_s_recovered = Some(30.0);
    collapsed.push(faulted);
    let g = goals(&collapsed);
    assert_eq!(g.past_peak_worst_ratio, 0.211, "40 of a 190 peak");
    assert_eq!(g.recovered_worst_ratio, Some(0.333), "30 after against 90 before");
}
