//! `shrink`: from a failing run to the smallest scenario found that fails
//! the same way ([`crate::shrink`] searches; this runs the candidates, in
//! parallel batches, and writes the result with its replay command).
#![allow(clippy::disallowed_methods)] // outside the simulation: real files, threads

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::execute::execute;
use crate::run::RunOptions;
use crate::scenario::limits::{DESCRIPTION_CHARS_MAX, NAME_CHARS_MAX};
use crate::scenario::Scenario;
use crate::shrink::{self, Limits, Outcome, Size, Shrunk};

pub struct ShrinkArgs {
    pub scenario: PathBuf,
    pub seed: Option<u64>,
    pub expect: Option<String>,
    pub max_runs: u64,
    pub nearby: u64,
    pub jobs: Option<usize>,
    pub out: Option<PathBuf>,
}

/// One run of a scenario: the expectations it failed and its size
/// (`faults`: the `[[fault]]` entries of its file).
pub fn judge(scn: &Scenario, seed: u64, faults: u64) -> Outcome {
    let clients = scn.workloads.iter().map(|w| u64::from(w.clients)).sum();
    match execute(scn, seed, &RunOptions::default()) {
        Ok(d) => Outcome {
            failed: d.report.expectations.iter().filter(|e| !e.pass).map(|e| e.name.clone()).collect(),
            size: Size { faults, operations: d.output.history.operations().len() as u64, simulated_ns: d.output.end.0, events: d.report.events, clients },
        },
        Err(_) => Outcome { failed: vec![shrink::PANICKED.into()], size: Size { faults, clients, ..Size::default() } },
    }
}

/// Runs each candidate of a batch on a thread of its own (a refused one
/// gives `None`).
fn judge_batch(batch: &[(toml::Table, u64)]) -> Vec<Option<Outcome>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .iter()
            .map(|(doc, seed)| {
                s.spawn(move || {
                    let text = toml::to_string(doc).ok()?;
                    let scn = crate::parse_scenario(Path::new("shrink-candidate.toml"), text.as_bytes()).ok()?;
                    Some(judge(&scn, *seed, shrink::fault_count(doc)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(None)).collect()
    })
}

fn pct(after: u64, before: u64) -> String {
    if before == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * after as f64 / before as f64)
    }
}

/// The before/after table the command prints.
pub fn size_table(s: &Shrunk) -> String {
    let (b, a) = (s.before, s.after);
    let t = |ns: u64| sim::time::fmt_duration(std::time::Duration::from_nanos(ns));
    let rows = [
        ("faults", b.faults.to_string(), a.faults.to_string(), pct(a.faults, b.faults)),
        ("operations", b.operations.to_string(), a.operations.to_string(), pct(a.operations, b.operations)),
        ("simulated time", t(b.simulated_ns), t(a.simulated_ns), pct(a.simulated_ns, b.simulated_ns)),
        ("events", b.events.to_string(), a.events.to_string(), pct(a.events, b.events)),
        ("client processes", b.clients.to_string(), a.clients.to_string(), pct(a.clients, b.clients)),
    ];
    let mut out = format!("  {:<18} {:>12} {:>12}\n", "", "before", "after");
    for (name, before, after, p) in rows {
        out += &format!("  {name:<18} {before:>12} {after:>12}   ({p})\n");
    }
    out
}

/// The shrunk scenario as a file: its own name, seed and description.
pub fn finish_doc(s: &Shrunk, scn: &Scenario, path: &Path, seed: u64, target: &str) -> Result<String, String> {
    let mut doc = s.doc.clone();
    let name: String = format!("{}-shrunk", scn.name).chars().take(NAME_CHARS_MAX).collect();
    doc.insert("name".into(), name.into());
    doc.insert("seed".into(), toml::Value::Integer(i64::try_from(s.seed).map_err(|_| format!("seed {} does not fit a scenario file", s.seed))?));
    let desc = format!("{} (shrunk from {} seed {seed}: still fails {target})", scn.description, path.display());
    doc.insert("description".into(), desc.chars().take(DESCRIPTION_CHARS_MAX).collect::<String>().into());
    toml::to_string(&doc).map_err(|e| format!("the shrunk scenario does not serialise: {e}"))
}

pub(super) fn command(args: ShrinkArgs, scn: Scenario) -> ExitCode {
    let path = &args.scenario;
    let seed = args.seed.unwrap_or(scn.seed);
    let text = match crate::scenario::read_capped(path, crate::scenario::SCENARIO_BYTES_MAX as u64).map_err(|e| e.to_string()).and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8".to_string())) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let doc: toml::Table = match text.parse() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let first = judge(&scn, seed, shrink::fault_count(&doc));
    let target = match shrink::target(&first.failed, args.expect.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {} at seed {seed}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let also: Vec<&str> = first.failed.iter().map(String::as_str).filter(|f| *f != target).collect();
    println!("shrink: {} at seed {seed} fails {target}{}; searching for a smaller scenario that still does", path.display(), if also.is_empty() { String::new() } else { format!(" (and {})", also.join(", ")) });
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let bar = indicatif::ProgressBar::new(args.max_runs);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} runs at most  {msg}  [{elapsed_precise}]").expect("template"));
    let limits = Limits { max_runs: args.max_runs, nearby: args.nearby, batch: jobs };
    let mut judge_all = |batch: &[(toml::Table, u64)]| {
        let out = judge_batch(batch);
        bar.inc(batch.len() as u64);
        out
    };
    let s = shrink::shrink(doc, seed, &target, first.size, &limits, &mut judge_all);
    bar.finish_and_clear();
    let dest = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("target/tablesim/shrink/{}-shrunk-{seed}.toml", scn.name)));
    let written = match finish_doc(&s, &scn, path, seed, &target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = super::swarm::write_draw(&dest, &written) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // The written file is read back and run once more, as a user would.
    let check = crate::load_scenario(&dest).map(|scn| judge(&scn, s.seed, shrink::fault_count(&s.doc)));
    let still = match &check {
        Ok(o) => o.failed.contains(&target),
        Err(_) => false,
    };
    println!("kept {} reduction{} in {} runs{}:", s.steps.len(), if s.steps.len() == 1 { "" } else { "s" }, s.runs, if s.exhausted { " (the run budget ran out first: a larger --max-runs may shrink further)" } else { "" });
    for st in &s.steps {
        let seed_note = if st.seed == seed { String::new() } else { format!("  [at seed {}]", st.seed) };
        println!("  - {}{seed_note}", st.change);
    }
    print!("{}", size_table(&s));
    println!("wrote {} (fails {target} at seed {})", dest.display(), s.seed);
    println!("replay: cargo run --release -- run {} --seed {}", dest.display(), s.seed);
    match check {
        Ok(_) if still => ExitCode::SUCCESS,
        Ok(o) => {
            eprintln!("error: the written scenario, run again, fails {:?}, not {target} (a shrink bug)", o.failed);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: the written scenario is refused (a shrink bug): {e}");
            ExitCode::from(1)
        }
    }
}
