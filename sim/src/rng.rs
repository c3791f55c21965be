//! Seeded random streams.
//!
//! A run has one `u64` seed. Each purpose (faults, the network, each disk,
//! each node, each workload) draws from its own ChaCha8 stream derived from
//! the seed and the purpose's name, so adding a workload does not move fault
//! timings and vice versa. Nothing in `sim/` or `engine/` may use any other
//! source of randomness (clippy's `disallowed-methods` enforces it).

pub use rand::{RngExt, SeedableRng};
pub use rand_chacha::ChaCha8Rng;

use crate::log::StableHasher;

/// The random stream for one purpose, e.g. `stream(seed, "net")`,
/// `stream(seed, "disk/az1-table-0")`, `stream(seed, "workload/kv")`.
pub fn stream(seed: u64, purpose: &str) -> ChaCha8Rng {
    let mut h = StableHasher::new();
    h.write_bytes(purpose.as_bytes());
    ChaCha8Rng::seed_from_u64(seed ^ h.finish().rotate_left(17))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_reproducible() {
        let a1: Vec<u64> = (0..4).map({ let mut r = stream(7, "net"); move |_| r.random() }).collect();
        let a2: Vec<u64> = (0..4).map({ let mut r = stream(7, "net"); move |_| r.random() }).collect();
        let b: Vec<u64> = (0..4).map({ let mut r = stream(7, "faults"); move |_| r.random() }).collect();
        let c: Vec<u64> = (0..4).map({ let mut r = stream(8, "net"); move |_| r.random() }).collect();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(a1, c);
    }
}
