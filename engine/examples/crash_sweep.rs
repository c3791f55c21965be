//! A long crash-test sweep: `cargo run --release -p engine --example crash_sweep -- A B`
//! runs seeds A..B and prints the totals; exits 1 on the first failure.
fn main() {
    let mut args = std::env::args().skip(1).map(|s| s.parse::<u64>().expect("seed numbers"));
    let (a, b) = (args.next().unwrap_or(0), args.next().unwrap_or(1000));
    let cfg = engine::lsm::crashtest::CrashConfig::default();
    let mut t = engine::lsm::crashtest::CrashTotals::default();
    for seed in a..b {
        match engine::lsm::crashtest::run_seed(seed, &cfg) {
            Ok(s) => t.add(&s),
            Err(f) => {
                println!("{f}");
                std::process::exit(1);
            }
        }
    }
    println!("seeds {a}..{b}: all passed ({} ended on detected at-rest corruption)", t.ended_on_corruption);
    println!("{}", serde_json::to_string_pretty(&t).expect("summary serializes"));
}
