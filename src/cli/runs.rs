//! The commands that run scenarios (`run`, `check-determinism`), the
//! engine's crash sweep (`crashtest`), with the replay command a failure
//! prints, and the parallel runner `sweep` shares.
#![allow(clippy::disallowed_methods)] // outside the simulation: real files, threads

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::execute;
use crate::run::{self, RunOptions};
use crate::scenario::Scenario;

fn replay_command(path: &Path, seed: u64) -> String {
    format!("cargo run --release -- run {} --seed {seed}", path.display())
}

/// `run`: one run at a seed, its summary, its report written.
pub(super) fn run(path: &Path, scn: Scenario, seed: Option<u64>, out: Option<PathBuf>, trace: bool, swarm: bool) -> ExitCode {
    if trace {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // No timestamp: inside the simulation the clock is madsim's scaled
        // fake time; every event carries model time in its `at` field.
        use std::io::IsTerminal;
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().with_ansi(std::io::stderr().is_terminal()).init();
    }
    let seed = seed.unwrap_or(scn.seed);
    // The report's folder is made before the run, so that a bad `--out`
    // (a file, a folder that cannot be made) is refused without running.
    let dir = out.unwrap_or_else(|| PathBuf::from(format!("target/tablesim/{}-{seed}", scn.name)));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: --out {}: cannot make the report's folder there: {e}", dir.display());
        return ExitCode::from(2);
    }
    // A swarm run draws its scenario and replays from the drawn file.
    let mut drawn_path = None;
    let scn = if swarm {
        match super::swarm::draw_file(path, &scn, seed, &dir.join("swarm.toml")) {
            Ok((drawn, p)) => {
                println!("swarm: the drawn scenario is {}", p.display());
                drawn_path = Some(p);
                drawn
            }
            Err(e) => {
                eprintln!("error: --swarm: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        scn
    };
    let path = drawn_path.as_deref().unwrap_or(path);
    let done = match execute::execute(&scn, seed, &RunOptions::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: seed {seed}: {e}");
            eprintln!("replay: {}", replay_command(path, seed));
            return ExitCode::from(1);
        }
    };
    println!("{}", done.report.summary());
    if let Err(e) = write_outputs(&dir, &scn, &done, &replay_command(path, seed)) {
        eprintln!("error: writing the report to {}: {e:#}", dir.display());
        return ExitCode::from(2);
    }
    println!("  report: {}/report.yaml (and report.html)", dir.display());
    if done.report.pass {
        ExitCode::SUCCESS
    } else {
        eprintln!("expectations failed; replay: {}", replay_command(path, seed));
        ExitCode::from(1)
    }
}

fn write_outputs(dir: &Path, scn: &Scenario, done: &execute::Executed, replay: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("report.yaml"), serde_yaml_ng::to_string(&done.report)?)?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&done.report)? + "\n")?;
    std::fs::write(dir.join("report.html"), done.html(scn, replay))?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    done.write_history(&mut f)?;
    Ok(())
}

/// Runs `run(j)` for every `j` of `0..count` on `jobs` threads (default:
/// the cores) with a progress bar drawn outside the simulations; returns
/// the failures (`run` gave a reason) sorted by `j`. The workers take work
/// from one counter that stops at `count` (it never wraps).
pub(super) fn run_in_parallel(count: u64, jobs: Option<usize>, run: impl Fn(u64) -> Option<String> + Send + Sync + 'static) -> Vec<(u64, String)> {
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let next = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<(u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let run = Arc::new(run);
    let bar = indicatif::ProgressBar::new(count);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} runs  {msg}  [{elapsed_precise}, eta {eta}]").expect("template"));
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, failures, bar, run) = (next.clone(), failures.clone(), bar.clone(), run.clone());
            std::thread::spawn(move || loop {
                let Ok(j) = next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| (s < count).then(|| s + 1)) else {
                    return;
                };
                if let Some(why) = run(j) {
                    let mut f = failures.lock().expect("failures");
                    f.push((j, why));
                    bar.set_message(format!("{} failed", f.len()));
                }
                bar.inc(1);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("run worker");
    }
    bar.finish();
    let mut failures = failures.lock().expect("failures").clone();
    failures.sort();
    failures
}

/// `check-determinism`: two runs of one seed, their event logs compared.
pub(super) fn determinism(path: &Path, scn: Scenario, seed: Option<u64>) -> ExitCode {
    let seed = seed.unwrap_or(scn.seed);
    let opts = RunOptions { keep_events: true, ..RunOptions::default() };
    let (a, b) = match (run::run(&scn, seed, &opts), run::run(&scn, seed, &opts)) {
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

/// `crashtest`: the LSM engine's crash sweep over a range of seeds.
pub(super) fn crashtest((a, b): (u64, u64), jobs: Option<usize>) -> ExitCode {
    use engine::lsm::crashtest::{run_seed, CrashConfig, CrashTotals};
    let totals = Arc::new(Mutex::new(CrashTotals::default()));
    let t = totals.clone();
    let failures = run_in_parallel(b - a, jobs, move |j| match run_seed(a + j, &CrashConfig::default()) {
        Ok(s) => {
            t.lock().expect("totals").add(&s);
            None
        }
        Err(f) => Some(f.to_string()),
    });
    let totals = totals.lock().expect("totals").clone();
    println!("{}", serde_yaml_ng::to_string(&totals).expect("totals serialise"));
    println!("{} seeds: {} passed, {} failed", b - a, (b - a) - failures.len() as u64, failures.len());
    for (j, why) in &failures {
        let seed = a + j;
        println!("  {why}\n           replay: cargo run --release -- crashtest --seeds {seed}..{}", seed + 1);
    }
    ExitCode::from(if failures.is_empty() { 0 } else { 1 })
}
