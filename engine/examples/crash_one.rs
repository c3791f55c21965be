//! Runs one crash-test seed and prints its summary: `cargo run -p engine --example crash_one -- SEED`.
fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    match engine::lsm::crashtest::run_seed(seed, &engine::lsm::crashtest::CrashConfig::default()) {
        Ok(s) => println!("{s:?}"),
        Err(f) => {
            println!("{f}");
            std::process::exit(1);
        }
    }
}
