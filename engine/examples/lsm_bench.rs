//! The LSM benchmark: `cargo run --release -p engine --example lsm_bench [-- KEYS]` (default 1M keys).
fn main() {
    let keys: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let figures = engine::lsm::bench::bench(keys);
    print!("{figures}");
    println!("{}", serde_json::to_string(&figures).expect("figures serialize"));
}
