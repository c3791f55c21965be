//! The `tablesim` command line.
//!
//! Exit codes: 0 every expectation held; 1 an expectation failed, a run
//! diverged or panicked (the replay command is printed); 2 bad input.
#![allow(clippy::disallowed_methods)] // the CLI lives outside the simulation: real files, threads, wall clock

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tablesim::runner::{self, RunOptions};
use tablesim::scenario::{self, Scenario};
use tablesim::{bench, execute};

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
    },
    /// Run a scenario twice with one seed and compare the event logs.
    CheckDeterminism {
        scenario: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run a scenario over a range of seeds in parallel.
    Sweep {
        scenario: PathBuf,
        /// Seeds as A..B (B excluded).
        #[arg(long, value_parser = parse_range)]
        seeds: (u64, u64),
        /// Parallel runs (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Crash-test the LSM engine: random operations, crashes, torn writes and
    /// disk faults against an expected-state oracle, one seed after another.
    Crashtest {
        /// Seeds as A..B (B excluded).
        #[arg(long, value_parser = parse_range)]
        seeds: (u64, u64),
        /// Parallel runs (default: available cores).
        #[arg(long)]
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
    },
}

fn parse_dur(s: &str) -> Result<std::time::Duration, String> {
    sim::time::parse_duration(s)
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("`{s}` is not a range A..B"))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("`{a}` is not a seed"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("`{b}` is not a seed"))?;
    if b <= a {
        return Err(format!("the range {a}..{b} is empty"));
    }
    Ok((a, b))
}

fn replay_command(path: &Path, seed: u64) -> String {
    format!("cargo run --release -- run {} --seed {seed}", path.display())
}

fn load(path: &Path) -> Result<Scenario, ExitCode> {
    scenario::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// mimalloc instead of glibc malloc: a run allocates and frees small
/// objects (messages, tasks, timers) at a high rate; glibc's consolidation
/// and free-list work was about 15% of double11's CPU time. Allocation
/// addresses never reach the simulation's decisions, so digests are unchanged.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's option setter, from the library the `mimalloc` crate links in
// (its Rust binding sits behind a feature that pulls in another crate).
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (its 16th option):
/// how long freed pages stay committed before they are returned to the OS.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Keeps freed memory committed. With mimalloc's default (purge after
/// 1 s) a run keeps returning pages and faulting them back in: the kernel's
/// page clearing and mimalloc's page set-up were about 7% of double11's CPU
/// time, and double11 ran 6-13% faster without purging (paired bench runs).
/// A run peaks near 70 MiB, so holding it costs little.
fn keep_freed_memory() {
    // SAFETY: a plain C call that sets one integer option.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    debug_assert_eq!(purge_delay(), -1);
}

fn purge_delay() -> std::ffi::c_long {
    // SAFETY: a plain C call that reads one integer option.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { scenario, seed, out, trace } => cmd_run(&scenario, seed, out, trace),
        Cmd::CheckDeterminism { scenario, seed } => cmd_determinism(&scenario, seed),
        Cmd::Sweep { scenario, seeds, jobs } => cmd_sweep(&scenario, seeds, jobs),
        Cmd::Crashtest { seeds, jobs } => cmd_crashtest(seeds, jobs),
        Cmd::Validate { scenarios } => {
            let mut bad = false;
            for p in scenarios {
                match scenario::load(&p) {
                    Ok(s) => println!("ok    {}  ({}: {} nodes, {} faults, {})", p.display(), s.name, s.topology.nodes().len(), s.faults.len(), sim::time::fmt_duration(s.duration)),
                    Err(e) => {
                        bad = true;
                        eprintln!("error: {e}");
                    }
                }
            }
            ExitCode::from(if bad { 2 } else { 0 })
        }
        Cmd::List { dir } => cmd_list(&dir),
        Cmd::Check { history, checker, heal_at, liveness_bound } => cmd_check(&history, checker.as_deref(), heal_at, liveness_bound),
        Cmd::Bench { round_trips, disk_ops, checker_ops, scenario, scenario_runs } => {
            let scn = match &scenario {
                Some(p) => load(p),
                None => scenario::parse(Path::new("scenarios/double11.toml"), bench::REFERENCE_SCENARIO.as_bytes()).map_err(|e| {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }),
            };
            let scn = match scn {
                Ok(s) => s,
                Err(c) => return c,
            };
            let seeds: Vec<u64> = (0..scenario_runs).map(|i| scn.seed + i).collect();
            let f = bench::run(round_trips, disk_ops, (!seeds.is_empty()).then_some((&scn, seeds.as_slice())));
            println!("# simulated world\n{}", serde_yaml_ng::to_string(&f).expect("figures serialise"));
            if let Some(r) = &f.reference {
                println!(
                    "# {} (medians of {} runs): {}x simulated per CPU second over the whole run, {}x over the main phase; {} delivered messages per CPU second, {} of raw madsim's\n",
                    r.scenario,
                    r.runs.len(),
                    r.time_compression,
                    r.main_time_compression,
                    r.msgs_delivered_per_s,
                    r.msgs_vs_raw_msgs
                );
            }
            if checker_ops > 0 {
                let c = tablesim::check::bench::bench_linearizability(1, checker_ops, tablesim::check::linearizable::Budget::default());
                println!("# linearizability checker\n{}", serde_yaml_ng::to_string(&c).expect("figures serialise"));
            }
            ExitCode::SUCCESS
        }
    }
}

fn cmd_run(path: &Path, seed: Option<u64>, out: Option<PathBuf>, trace: bool) -> ExitCode {
    let scn = match load(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if trace {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // No timestamp: inside the simulation the clock is madsim's scaled
        // fake time; every event carries model time in its `at` field.
        use std::io::IsTerminal;
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().with_ansi(std::io::stderr().is_terminal()).init();
    }
    let seed = seed.unwrap_or(scn.seed);
    let done = match execute::execute(&scn, seed, &RunOptions::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: seed {seed}: {e}");
            eprintln!("replay: {}", replay_command(path, seed));
            return ExitCode::from(1);
        }
    };
    println!("{}", done.report.summary());
    let dir = out.unwrap_or_else(|| PathBuf::from(format!("target/tablesim/{}-{seed}", scn.name)));
    if let Err(e) = write_outputs(&dir, &done) {
        eprintln!("error: writing the report to {}: {e:#}", dir.display());
        return ExitCode::from(2);
    }
    println!("  report: {}/report.yaml", dir.display());
    if done.report.pass {
        ExitCode::SUCCESS
    } else {
        eprintln!("expectations failed; replay: {}", replay_command(path, seed));
        ExitCode::from(1)
    }
}

fn write_outputs(dir: &Path, done: &execute::Executed) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("report.yaml"), serde_yaml_ng::to_string(&done.report)?)?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&done.report)? + "\n")?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    done.write_history(&mut f)?;
    Ok(())
}

/// Runs `run(seed)` for every seed of `a..b` on `jobs` threads (default:
/// the cores) with a progress bar drawn outside the simulations; returns
/// the failures (`run` gave a reason) sorted by seed.
fn run_seeds_in_parallel(
    (a, b): (u64, u64),
    jobs: Option<usize>,
    run: impl Fn(u64) -> Option<String> + Send + Sync + 'static,
) -> Vec<(u64, String)> {
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let next = Arc::new(AtomicU64::new(a));
    let failures: Arc<Mutex<Vec<(u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let run = Arc::new(run);
    let bar = indicatif::ProgressBar::new(b - a);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds  {msg}  [{elapsed_precise}, eta {eta}]").expect("template"));
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, failures, bar, run) = (next.clone(), failures.clone(), bar.clone(), run.clone());
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= b {
                    return;
                }
                if let Some(why) = run(seed) {
                    let mut f = failures.lock().expect("failures");
                    f.push((seed, why));
                    bar.set_message(format!("{} failed", f.len()));
                }
                bar.inc(1);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("seed worker");
    }
    bar.finish();
    let mut failures = failures.lock().expect("failures").clone();
    failures.sort();
    failures
}

fn cmd_determinism(path: &Path, seed: Option<u64>) -> ExitCode {
    let scn = match load(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let seed = seed.unwrap_or(scn.seed);
    let opts = RunOptions { keep_events: true, ..RunOptions::default() };
    let (a, b) = match (runner::run(&scn, seed, &opts), runner::run(&scn, seed, &opts)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: seed {seed}: {e}\nreplay: {}", replay_command(path, seed));
            return ExitCode::from(1);
        }
    };
    if a.digest == b.digest {
        println!("deterministic: seed {seed}, digest {} over {} events, twice", a.digest, a.digest.events);
        return ExitCode::SUCCESS;
    }
    eprintln!("NOT deterministic: seed {seed}: digests {} ({} events) and {} ({} events)", a.digest, a.digest.events, b.digest, b.digest.events);
    match sim::log::first_divergence(&a.events, &b.events) {
        Some(i) => {
            eprintln!("first divergence at event #{i}:");
            for j in i.saturating_sub(3)..i {
                if let Some(e) = a.events.get(j) {
                    eprintln!("    both: {e}");
                }
            }
            eprintln!("  run 1: {}", a.events.get(i).map(|e| e.to_string()).unwrap_or_else(|| "(log ended)".into()));
            eprintln!("  run 2: {}", b.events.get(i).map(|e| e.to_string()).unwrap_or_else(|| "(log ended)".into()));
        }
        None => eprintln!("the kept events agree; the divergence lies past the first {} events", sim::log::KEPT_EVENTS_MAX),
    }
    eprintln!("replay: cargo run --release -- check-determinism {} --seed {seed}", path.display());
    ExitCode::from(1)
}

fn cmd_sweep(path: &Path, (a, b): (u64, u64), jobs: Option<usize>) -> ExitCode {
    let scn = match load(path) {
        Ok(s) => Arc::new(s),
        Err(c) => return c,
    };
    let scn_w = scn.clone();
    let failures = run_seeds_in_parallel((a, b), jobs, move |seed| match execute::execute(&scn_w, seed, &RunOptions::default()) {
        Ok(d) if d.report.pass => None,
        Ok(d) => Some(d.report.expectations.iter().filter(|e| !e.pass).map(|e| format!("{} {} (expected {})", e.name, e.measured, e.expected)).collect::<Vec<_>>().join("; ")),
        Err(e) => Some(e.to_string()),
    });
    println!("{} seeds of {}: {} passed, {} failed", b - a, scn.name, (b - a) - failures.len() as u64, failures.len());
    for (seed, why) in &failures {
        println!("  seed {seed:<8} {why}\n           replay: {}", replay_command(path, *seed));
    }
    ExitCode::from(if failures.is_empty() { 0 } else { 1 })
}

fn cmd_check(path: &Path, checker: Option<&str>, heal_at: Option<std::time::Duration>, bound: Option<std::time::Duration>) -> ExitCode {
    use tablesim::check::{self, CheckConfig, Verdict};
    let mut config = match CheckConfig::only(checker) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    config.heal_at_ns = heal_at.map(|d| d.as_nanos() as u64);
    if let Some(b) = bound {
        config.liveness_bound_ns = b.as_nanos() as u64;
    }
    let verdicts = match check::check_file_with(path, &config) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    for l in verdicts.summary_lines() {
        println!("{l}");
    }
    let undecided = verdicts.reports().iter().any(|(_, r)| r.verdict == Verdict::Unknown);
    if !verdicts.no_failures() {
        println!("verdict: FAIL");
        ExitCode::from(1)
    } else if undecided {
        println!("verdict: unknown (a checker spent its search budget)");
        ExitCode::from(1)
    } else {
        println!("verdict: pass");
        ExitCode::SUCCESS
    }
}

fn cmd_crashtest((a, b): (u64, u64), jobs: Option<usize>) -> ExitCode {
    use engine::lsm::crashtest::{run_seed, CrashConfig, CrashTotals};
    let totals = Arc::new(Mutex::new(CrashTotals::default()));
    let t = totals.clone();
    let failures = run_seeds_in_parallel((a, b), jobs, move |seed| match run_seed(seed, &CrashConfig::default()) {
        Ok(s) => {
            t.lock().expect("totals").add(&s);
            None
        }
        Err(f) => Some(f.to_string()),
    });
    let totals = totals.lock().expect("totals").clone();
    println!("{}", serde_yaml_ng::to_string(&totals).expect("totals serialise"));
    println!("{} seeds: {} passed, {} failed", b - a, (b - a) - failures.len() as u64, failures.len());
    for (seed, why) in &failures {
        println!("  {why}\n           replay: cargo run --release -- crashtest --seeds {seed}..{}", seed + 1);
    }
    ExitCode::from(if failures.is_empty() { 0 } else { 1 })
}

fn cmd_list(dir: &Path) -> ExitCode {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect(),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    entries.sort();
    let mut bad = false;
    for p in entries {
        match scenario::load(&p) {
            Ok(s) => println!("{:<36} {}", p.display(), s.description.lines().next().unwrap_or("")),
            Err(e) => {
                bad = true;
                println!("{:<36} INVALID: {e}", p.display());
            }
        }
    }
    ExitCode::from(if bad { 2 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the option's number: option 15 has purge_delay's default
    /// (1000 ms) until `keep_freed_memory` turns purging off. A mimalloc
    /// upgrade that renumbers its options fails here.
    #[test]
    fn option_15_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), 1000);
        }
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
