//! tablesim: a deterministic simulation testbed for a three-zone table
//! store. A scenario file (`scenario`) runs in a simulated world with its
//! service deployed (`run`, `run::deploy`), driven by workloads
//! (`workload`) that record a history (`history`), which the checkers
//! judge (`check`); the report (`report`) measures and judges the run
//! (`execute` does it all for one seed); `shrink` searches for a smaller
//! scenario that fails the same way; `cli` is the command line.

#[cfg(not(madsim))]
compile_error!("tablesim only runs inside madsim's simulation: build with `--cfg madsim` (see .cargo/config.toml; unset RUSTFLAGS)");

pub mod check;
pub mod cli;
pub mod execute;
pub mod history;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod workload;

use std::path::Path;

use scenario::{Scenario, ScenarioError};

/// Reads and validates a scenario file for one of the services this
/// package deploys.
pub fn load_scenario(path: &Path) -> Result<Scenario, ScenarioError> {
    scenario::load(path, &run::deploy::catalog::rules())
}

/// Parses and validates scenario text for one of the services this
/// package deploys; `path` is only used in messages.
pub fn parse_scenario(path: &Path, bytes: &[u8]) -> Result<Scenario, ScenarioError> {
    scenario::parse(path, bytes, &run::deploy::catalog::rules())
}
