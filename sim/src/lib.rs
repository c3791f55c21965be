//! The deterministic simulated world of tablesim.
//!
//! Everything the storage stack may observe of the outside world comes from
//! here: model time ([`time`]), per-node clocks ([`clock`]), seeded random
//! streams ([`rng`]), the zone topology ([`topology`]), typed messages on a
//! latency-modeled network ([`net`]), simulated disks ([`disk`]) and CPUs
//! ([`cpu`]), fault verbs
//! ([`fault`]) and the hashed event log that gives every run its digest
//! ([`log`]). The [`world::World`] ties them together inside one madsim
//! runtime.

#[cfg(not(madsim))]
compile_error!(
    "tablesim's crates only run inside madsim's simulation: build with `--cfg madsim` \
     (the workspace's .cargo/config.toml sets it; an exported RUSTFLAGS variable, even an \
     empty one, overrides it: run `unset RUSTFLAGS` and build again)"
);

pub mod clock;
pub mod cpu;
pub mod disk;
pub mod fault;
pub mod log;
pub mod net;
pub mod rng;
pub mod time;
pub mod topology;
pub mod world;

pub use clock::Clock;
pub use cpu::{Cpu, CpuBusy, CpuConfig, CpuStats};
pub use disk::{Disk, DiskConfig, DiskError, DiskFaults};
pub use fault::{Direction, Fault, FaultError, Target};
pub use log::{Digest, Event};
pub use net::{Message, Net, NetError};
pub use time::SimTime;
pub use topology::{NodeId, Topology, ZoneId};
pub use world::{NodeCtx, World};
