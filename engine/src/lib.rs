//! The simulated storage stack of tablesim. Runs only inside the simulated
//! world of `sim`: it reads time through a node's clock, randomness from
//! seeded streams, and keeps its files on simulated disks.

#[cfg(not(madsim))]
compile_error!("engine only runs inside madsim's simulation: build with `--cfg madsim` (see .cargo/config.toml; unset RUSTFLAGS)");

pub mod cost;
pub mod fs;
pub mod join;
pub mod lsm;
pub mod meta;
pub mod minikv;
pub mod stream;
pub mod table;
