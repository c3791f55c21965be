//! A long crash-test sweep: `cargo run --release -p engine --example crash_sweep -- A B`
//! runs seeds A..B and prints the totals; exits 1 on the first failure.
fn main() {
    let mut args = std::env::args().skip(1).map(|s| s.parse::<u64>().expect("seed numbers"));
    let (a, b) = (args.next().unwrap_or(0), args.next().unwrap_or(1000));
    let cfg = engine::lsm::crashtest::CrashConfig::default();
    let mut t = engine::lsm::crashtest::CrashSummary::default();
    let mut ended_on_corruption = 0u64;
    for seed in a..b {
        match engine::lsm::crashtest::run_seed(seed, &cfg) {
            Ok(s) => {
                t.waves += s.waves;
                t.writes_acked += s.writes_acked;
                t.writes_pending_present += s.writes_pending_present;
                t.writes_pending_absent += s.writes_pending_absent;
                t.writes_rejected += s.writes_rejected;
                t.auto_increment_values += s.auto_increment_values;
                t.crashes += s.crashes;
                t.restarts += s.restarts;
                t.rows_checked += s.rows_checked;
                t.read_errors_detected += s.read_errors_detected;
                t.corruption_detected += s.corruption_detected;
                t.torn_tails += s.torn_tails;
                t.flushes += s.flushes;
                t.compactions += s.compactions;
                ended_on_corruption += u64::from(s.ended_on_corruption);
            }
            Err(f) => {
                println!("{f}");
                std::process::exit(1);
            }
        }
    }
    println!("seeds {a}..{b}: all passed ({ended_on_corruption} ended on detected at-rest corruption)");
    println!("{}", serde_json::to_string_pretty(&t).expect("summary serializes"));
}
