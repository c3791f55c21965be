//! tablesim: the scenario runner, workloads, histories, checkers and reports.

#[cfg(not(madsim))]
compile_error!("tablesim only runs inside madsim's simulation: build with `--cfg madsim` (see .cargo/config.toml; unset RUSTFLAGS)");

pub mod badreq;
pub mod bench;
pub mod check;
pub mod execute;
pub mod history;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod streamload;
pub mod tableload;
pub mod workload;
