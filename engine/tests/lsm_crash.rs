//! The crash harness over many seeds: every acknowledged write survives,
//! pending writes are all-or-nothing, auto-increment stays +1 consecutive,
//! injected faults surface as errors.

use engine::lsm::crashtest::{run_seed, CrashConfig};

#[test]
fn crash_harness_holds_over_many_seeds() {
    let cfg = CrashConfig::default();
    let mut total = engine::lsm::crashtest::CrashSummary::default();
    for seed in 0..300 {
        let s = run_seed(seed, &cfg).unwrap_or_else(|f| panic!("{f}"));
        total.crashes += s.crashes;
        total.writes_acked += s.writes_acked;
        total.writes_pending_present += s.writes_pending_present;
        total.writes_pending_absent += s.writes_pending_absent;
        total.compactions += s.compactions;
        total.torn_tails += s.torn_tails;
        total.corruption_detected += s.corruption_detected;
        total.read_errors_detected += s.read_errors_detected;
        total.auto_increment_values += s.auto_increment_values;
    }
    eprintln!("{total:?}");
    assert!(total.crashes > 200, "crashes happen");
    assert!(total.writes_pending_present > 0 && total.writes_pending_absent > 0, "crashes cut writes both ways");
    assert!(total.compactions > 100, "compaction runs");
    assert!(total.torn_tails > 0, "torn tails are met");
    assert!(total.corruption_detected > 0 && total.read_errors_detected > 0, "faults are detected");
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = CrashConfig::default();
    for seed in [5, 77] {
        assert_eq!(run_seed(seed, &cfg), run_seed(seed, &cfg), "seed {seed} is deterministic");
    }
}
