//! Running a scenario: one seed, one fresh thread, one madsim runtime, a
//! world with the scenario's service deployed in it.
//!
//! - [`runner`]: the world, the client nodes, the fault timeline, the
//!   phases; it knows the deployments only through their interface.
//! - [`deploy`]: one module per service kind, and the catalog of them.
//! - [`output`]: what a run takes besides the scenario, and what it
//!   returns.

pub mod deploy;
pub mod output;
pub mod runner;

pub use output::{AppliedFault, MainEndHook, Observers, RunError, RunOptions, RunOutput, CLIENT_CRASHED, FINAL_PHASE_MAX, SETTLE_MAX, SETUP_MAX, SIM_THREAD_STACK};
pub use runner::{run, run_on_this_thread};
