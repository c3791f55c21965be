//! The `tablesim` command line: the subcommands, their arguments, and the
//! scenario each one loads. `main.rs` only sets the allocator up and calls
//! [`main`].
//!
//! Exit codes: 0 every expectation held; 1 an expectation failed, a run
//! diverged or panicked (the replay command is printed); 2 bad input.
#![allow(clippy::disallowed_methods)] // the CLI lives outside the simulation: real files, threads, wall clock

mod baseline;
pub mod bench;
pub mod curve;
mod files;
mod runs;
pub mod shrink;
pub mod swarm;
pub mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::scenario::Scenario;

#[derive(Parser)]
#[command(name = "tablesim", version, about = "Deterministic simulation testbed for a three-zone distributed table store")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario once and write its report.
    Run {
        scenario: PathBuf,
        /// Seed of the run (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Where report.yaml, report.json and history.jsonl go (default target/tablesim/NAME-SEED).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print tracing events (RUST_LOG filters them; default info).
        #[arg(long)]
        trace: bool,
        /// Draw the faults and rates from the seed instead of the file's
        /// (the drawn scenario is written beside the report as swarm.toml).
        #[arg(long)]
        swarm: bool,
    },
    /// Shrink a failing run: search for a smaller scenario (fewer faults,
    /// shorter and later windows, a shorter run, fewer clients, keys and
    /// operations, a lower rate) that fails the same expectation, and write it.
    Shrink {
        scenario: PathBuf,
        /// Seed of the failing run (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// The expectation the smaller scenario must still fail (default: the
        /// first failed checker verdict, else the first failed expectation).
        #[arg(long)]
        expect: Option<String>,
        /// Runs the search may spend.
        #[arg(long, default_value_t = crate::shrink::SHRINK_RUNS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=crate::shrink::SHRINK_RUNS_MAX))]
        max_runs: u64,
        /// Nearby seeds to try when no smaller scenario fails at the current one.
        #[arg(long, default_value_t = crate::shrink::SHRINK_NEARBY_DEFAULT, value_parser = clap::value_parser!(u64).range(0..=crate::shrink::SHRINK_NEARBY_MAX))]
        nearby: u64,
        /// Candidates run at once, 1 to 64 (default: available cores).
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
        /// Where the shrunk scenario goes (default target/tablesim/shrink/NAME-shrunk-SEED.toml).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a scenario twice with one seed and compare the event logs.
    CheckDeterminism {
        scenario: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run scenarios over a range of seeds in parallel, all of the (scenario,
    /// seed) pairs or one shard of them.
    Sweep {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Seeds as A..B (B excluded).
        #[arg(long, value_parser = parse_range)]
        seeds: (u64, u64),
        /// Parallel runs, 1 to 64 (default: available cores).
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
        /// Run shard K of N (K from 1); `env/N` or `env` reads the index (and
        /// the count) from TABLESIM_SHARD=K/N, JOB_COMPLETION_INDEX
        /// (Kubernetes), CI_NODE_INDEX/CI_NODE_TOTAL (GitLab),
        /// CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL or BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT.
        #[arg(long, value_parser = sweep::parse_shard)]
        shard: Option<sweep::ShardArg>,
        /// Write JUnit XML: a test case per (scenario, seed).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write every case as JSON, for `merge`.
        #[arg(long)]
        results: Option<PathBuf>,
        /// Each seed draws its own faults and rates (see `run --swarm`); a
        /// failing draw is written to target/tablesim/swarm/ for replay.
        #[arg(long)]
        swarm: bool,
    },
    /// Join the results files of every shard of one sweep (refusing missing,
    /// repeated or foreign shards) into one summary, JUnit and results file.
    Merge {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write the merged results.
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Crash-test the LSM engine: random operations, crashes, torn writes and
    /// disk faults against an expected-state oracle, one seed after another.
    Crashtest {
        /// Seeds as A..B (B excluded).
        #[arg(long, value_parser = parse_range)]
        seeds: (u64, u64),
        /// Parallel runs, 1 to 64 (default: available cores).
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
    },
    /// Parse and validate scenario files.
    Validate {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// List the shipped scenarios.
    List {
        #[arg(long, default_value = "scenarios")]
        dir: PathBuf,
    },
    /// Re-check a saved history (history.jsonl) offline with the run's checkers.
    Check {
        history: PathBuf,
        /// Only this checker: linearizable, durability, sequence, liveness.
        #[arg(long)]
        checker: Option<String>,
        /// Model time the last fault healed (liveness), e.g. "5s".
        #[arg(long, value_parser = parse_dur)]
        heal_at: Option<std::time::Duration>,
        /// Operations invoked this long after healing must succeed (liveness).
        #[arg(long, value_parser = parse_dur)]
        liveness_bound: Option<std::time::Duration>,
    },
    /// The capacity curve: the scenario at several multiples of its rate
    /// (open loop), with and without its faults: goodput, latency,
    /// refusals and availability per step.
    Curve {
        scenario: PathBuf,
        /// Rate multipliers, e.g. 1,2,4,8,16.
        #[arg(long, default_value = "1,2,4,8,16,32")]
        rates: String,
        /// Which runs: with the scenario's faults, without, or both.
        #[arg(long, value_enum, default_value = "both")]
        faults: FaultsArg,
        #[arg(long)]
        seed: Option<u64>,
        /// Parallel runs (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Measure the simulated world's speed and the checkers'.
    Bench {
        #[arg(long, default_value_t = 100_000)]
        round_trips: u64,
        #[arg(long, default_value_t = 100_000)]
        disk_ops: u64,
        /// Operations of the linearizability benchmark history (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        checker_ops: u64,
        /// The reference scenario run whole (default: scenarios/double11.toml as built in).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Runs of the reference scenario, from its default seed up (0 skips them).
        #[arg(long, default_value_t = 3)]
        scenario_runs: u64,
        /// Rate multipliers of the reference scenario's capacity curve ("" skips it).
        #[arg(long, default_value = "1,2,4,8,16")]
        curve_rates: String,
        /// Parallel runs of the capacity curve (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Instead of the benchmarks: this binary's reference-scenario
        /// speed against another build's (a path to its `tablesim`), in
        /// rounds that alternate which runs first; `--scenario-runs` runs
        /// per side and round.
        #[arg(long, conflicts_with = "scenario")]
        baseline: Option<PathBuf>,
        /// Rounds of the comparison with `--baseline`.
        #[arg(long, default_value_t = 12)]
        baseline_rounds: usize,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FaultsArg {
    With,
    Without,
    Both,
}

fn parse_dur(s: &str) -> Result<std::time::Duration, String> {
    sim::time::parse_duration(s)
}

/// The most parallel runs `--jobs` may ask for.
pub const JOBS_MAX: usize = 64;

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=JOBS_MAX).contains(&n) => Ok(n),
        _ => Err(format!("`{}` is not a number of parallel runs from 1 to {JOBS_MAX}", crate::scenario::limits::shown(s))),
    }
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("`{}` is not a range A..B", crate::scenario::limits::shown(s)))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("`{a}` is not a seed"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("`{b}` is not a seed"))?;
    if b <= a {
        return Err(format!("the range {a}..{b} is empty"));
    }
    Ok((a, b))
}

fn load(path: &Path) -> Result<Scenario, ExitCode> {
    crate::load_scenario(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { scenario, seed, out, trace, swarm } => match load(&scenario) {
            Ok(scn) => runs::run(&scenario, scn, seed, out, trace, swarm),
            Err(c) => c,
        },
        Cmd::Shrink { scenario, seed, expect, max_runs, nearby, jobs, out } => match load(&scenario) {
            Ok(scn) => shrink::command(shrink::ShrinkArgs { scenario, seed, expect, max_runs, nearby, jobs, out }, scn),
            Err(c) => c,
        },
        Cmd::CheckDeterminism { scenario, seed } => match load(&scenario) {
            Ok(scn) => runs::determinism(&scenario, scn, seed),
            Err(c) => c,
        },
        Cmd::Sweep { scenarios, seeds, jobs, shard, junit, results, swarm } => sweep::sweep(sweep::SweepArgs { scenarios, seeds, jobs, shard, junit, results, swarm }),
        Cmd::Merge { files, junit, results } => sweep::merge(files, junit, results),
        Cmd::Crashtest { seeds, jobs } => runs::crashtest(seeds, jobs),
        Cmd::Curve { scenario, rates, faults, seed, jobs } => match (load(&scenario), curve::parse_steps(&rates)) {
            (Err(c), _) => c,
            (_, Err(e)) => {
                eprintln!("error: --rates: {e}");
                ExitCode::from(2)
            }
            (Ok(scn), Ok(rates)) => {
                let (with, without) = match faults {
                    FaultsArg::With => (true, false),
                    FaultsArg::Without => (false, true),
                    FaultsArg::Both => (true, true),
                };
                let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                let seed = seed.unwrap_or(scn.seed);
                curve::command(&scn, &rates, with, without, seed, jobs)
            }
        },
        Cmd::Validate { scenarios } => files::validate(scenarios),
        Cmd::List { dir } => files::list(&dir),
        Cmd::Check { history, checker, heal_at, liveness_bound } => files::check(&history, checker.as_deref(), heal_at, liveness_bound),
        Cmd::Bench { baseline: Some(baseline), baseline_rounds, scenario_runs, .. } => baseline::command(&baseline, baseline_rounds, scenario_runs),
        Cmd::Bench { round_trips, disk_ops, checker_ops, scenario, scenario_runs, curve_rates, jobs, baseline: None, .. } => {
            let rates = if curve_rates.trim().is_empty() { Ok(Vec::new()) } else { curve::parse_steps(&curve_rates) };
            let rates = match rates {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: --curve-rates: {e}");
                    return ExitCode::from(2);
                }
            };
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let scn = match &scenario {
                Some(p) => load(p),
                None => crate::parse_scenario(Path::new("scenarios/double11.toml"), bench::REFERENCE_SCENARIO.as_bytes()).map_err(|e| {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }),
            };
            match scn {
                Ok(scn) => bench::command(round_trips, disk_ops, checker_ops, &scn, scenario_runs, &rates, jobs),
                Err(c) => c,
            }
        }
    }
}
