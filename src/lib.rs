//! tablesim: the scenario runner, workloads, histories, checkers and reports.

#[cfg(not(madsim))]
compile_error!("tablesim only runs inside madsim's simulation: build with `--cfg madsim` (see .cargo/config.toml; unset RUSTFLAGS)");

pub mod check;
pub mod history;
