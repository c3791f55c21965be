//! Runs `bench_linearizability`. By default a small shape (keeps the function
//! tested and the suite fast); the headline figures come from:
//! `TABLESIM_BENCH=1 CARGO_TARGET_DIR=/work/target-check cargo test --release --test bench_linearizability -- --nocapture`

use tablesim::check::bench::BENCH_OPS;
use tablesim::check::linearizable::Budget;
use tablesim::check::{bench_linearizability, Verdict};

/// Operations of the small default run.
const SMALL_OPS: u64 = 20_000;

#[test]
fn bench_linearizability_figures() {
    let full = std::env::var_os("TABLESIM_BENCH").is_some();
    let ops = if full { BENCH_OPS } else { SMALL_OPS };
    let budget = if full { Budget::default() } else { Budget { steps_max: 20_000, configurations_max: 20_000 } };
    let figures = bench_linearizability(42, ops, budget);
    println!("{}", serde_json::to_string_pretty(&figures).expect("serializes"));
    assert_eq!(figures.verdict, Verdict::Pass);
    assert_eq!(figures.ops, ops);
    assert!(!figures.worst_case.is_empty());
    assert!(figures.worst_case.iter().all(|w| w.verdict != Verdict::Fail), "generated histories are valid");
}
