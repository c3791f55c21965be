//! `tablesim bench --baseline OTHER`: this binary's reference-scenario speed
//! against another build's, measured in one command.
//!
//! Each side runs as a child process, `bench` with only its reference
//! scenario (`--scenario-runs` runs, their medians), in rounds that
//! alternate which side goes first: on a shared machine, position in a
//! round, code layout and the state of memory move one binary's figure by
//! several percent (two copies of one binary, measured this way, differ by
//! up to 7% in one round), so a single pair of runs says little. The
//! answer is the ratio of the two sides' medians over all rounds, with the
//! spread of the per-round ratios so that a reader sees how far to trust
//! it. Each side measures its own reference scenario (the file built into
//! it), which is the comparison "against the build before a change" means.
#![allow(clippy::disallowed_methods)] // child processes of the CLI, outside the simulation

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde::Serialize;

use crate::report::measure::round2;

/// The most rounds one comparison may ask for.
pub const ROUNDS_MAX: usize = 1000;
/// The most reference-scenario runs per side and round.
pub const RUNS_MAX: u64 = 100;

/// One side's figures from one `bench` run: medians over its runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SideRun {
    /// Simulated seconds per CPU second over the whole run.
    pub whole: f64,
    /// Over the main phase.
    pub main: f64,
}

/// What a comparison measured.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub rounds: usize,
    pub runs_per_round: u64,
    /// Medians over every round of each side.
    pub this_whole: f64,
    pub this_main: f64,
    pub baseline_whole: f64,
    pub baseline_main: f64,
    /// This binary's median over the baseline's (1.0 = as fast).
    pub ratio_whole: f64,
    pub ratio_main: f64,
    /// The per-round ratios (this over baseline): lowest, quartiles,
    /// highest. Wide quartiles mean a noisy machine: add rounds.
    pub round_ratio_whole: Spread,
    pub round_ratio_main: Spread,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if v.is_empty() {
                return f64::NAN;
            }
            let x = p * (v.len() - 1) as f64;
            let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
        };
        Spread { min: round2(q(0.0)), p25: round2(q(0.25)), median: round2(q(0.5)), p75: round2(q(0.75)), max: round2(q(1.0)) }
    }
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BaselineError {
    #[error("--baseline-rounds must be 1..={ROUNDS_MAX}, not {0}")]
    Rounds(usize),
    #[error("--scenario-runs must be 1..={RUNS_MAX} with --baseline, not {0}")]
    Runs(u64),
    #[error("{path}: cannot run it: {reason}")]
    Spawn { path: String, reason: String },
    #[error("{path} bench failed ({status}): {last_line}")]
    Failed { path: String, status: String, last_line: String },
    #[error("{path} bench printed no reference-scenario summary line (\"# NAME (medians of N runs): Wx simulated per CPU second over the whole run, Mx over the main phase; ...\")")]
    NoSummary { path: String },
}

/// The two figures of a `bench` output's reference-scenario summary line:
/// `# NAME (medians of N runs): Wx simulated per CPU second over the whole
/// run, Mx over the main phase; ...`.
pub fn parse_summary(out: &str) -> Option<SideRun> {
    out.lines().find_map(|l| {
        let rest = l.strip_prefix("# ")?;
        let (_, figures) = rest.split_once("): ")?;
        let (whole, rest) = figures.split_once("x simulated per CPU second over the whole run, ")?;
        let (main, _) = rest.split_once("x over the main phase")?;
        let (whole, main) = (whole.trim().parse::<f64>().ok()?, main.trim().parse::<f64>().ok()?);
        (whole.is_finite() && main.is_finite() && whole > 0.0 && main > 0.0).then_some(SideRun { whole, main })
    })
}

/// One side of the comparison: a binary and the flags that make its
/// `bench` run only the reference scenario.
struct Side {
    exe: PathBuf,
    args: Vec<String>,
}

impl Side {
    fn new(exe: PathBuf, runs: u64) -> Result<Side, BaselineError> {
        let mut args: Vec<String> = ["bench", "--round-trips", "1", "--disk-ops", "1", "--checker-ops", "0", "--scenario-runs"].iter().map(|s| s.to_string()).collect();
        args.push(runs.to_string());
        // Builds before the capacity curve have no --curve-rates (and no
        // curve to skip).
        let help = Command::new(&exe).args(["bench", "--help"]).output().map_err(|e| spawn_err(&exe, &e))?;
        if String::from_utf8_lossy(&help.stdout).contains("--curve-rates") {
            args.push("--curve-rates=".into());
        }
        Ok(Side { exe, args })
    }

    fn measure(&self) -> Result<SideRun, BaselineError> {
        let path = self.exe.display().to_string();
        let out = Command::new(&self.exe).args(&self.args).output().map_err(|e| spawn_err(&self.exe, &e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = |t: &str| t.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string);
            let last_line = last(&stderr).or_else(|| last(&stdout)).unwrap_or_else(|| "no output".into());
            return Err(BaselineError::Failed { path, status: out.status.to_string(), last_line });
        }
        parse_summary(&stdout).ok_or(BaselineError::NoSummary { path })
    }
}

fn spawn_err(exe: &Path, e: &std::io::Error) -> BaselineError {
    BaselineError::Spawn { path: exe.display().to_string(), reason: e.to_string() }
}

fn median(v: &[f64]) -> f64 {
    Spread::of(v.to_vec()).median
}

/// Compares this binary with `baseline` over `rounds` rounds of `runs`
/// reference-scenario runs per side, alternating which side runs first.
/// `progress` hears each round's figures (this, baseline).
pub fn compare(baseline: &Path, rounds: usize, runs: u64, mut progress: impl FnMut(usize, SideRun, SideRun)) -> Result<Comparison, BaselineError> {
    if rounds == 0 || rounds > ROUNDS_MAX {
        return Err(BaselineError::Rounds(rounds));
    }
    if runs == 0 || runs > RUNS_MAX {
        return Err(BaselineError::Runs(runs));
    }
    let base = Side::new(baseline.to_path_buf(), runs)?;
    let this_exe = std::env::current_exe().map_err(|e| BaselineError::Spawn { path: "this binary".into(), reason: e.to_string() })?;
    let this = Side::new(this_exe, runs)?;
    let (mut mine, mut theirs) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for r in 0..rounds {
        let (a, b) = if r % 2 == 0 {
            let a = this.measure()?;
            (a, base.measure()?)
        } else {
            let b = base.measure()?;
            (this.measure()?, b)
        };
        progress(r, a, b);
        mine.push(a);
        theirs.push(b);
    }
    let col = |v: &[SideRun], f: fn(&SideRun) -> f64| v.iter().map(f).collect::<Vec<f64>>();
    let (tw, tm) = (median(&col(&mine, |s| s.whole)), median(&col(&mine, |s| s.main)));
    let (bw, bm) = (median(&col(&theirs, |s| s.whole)), median(&col(&theirs, |s| s.main)));
    let per_round = |f: fn(&SideRun) -> f64| mine.iter().zip(&theirs).map(|(a, b)| f(a) / f(b)).collect::<Vec<f64>>();
    Ok(Comparison {
        baseline: baseline.display().to_string(),
        rounds,
        runs_per_round: runs,
        this_whole: tw,
        this_main: tm,
        baseline_whole: bw,
        baseline_main: bm,
        ratio_whole: round2(tw / bw),
        ratio_main: round2(tm / bm),
        round_ratio_whole: Spread::of(per_round(|s| s.whole)),
        round_ratio_main: Spread::of(per_round(|s| s.main)),
    })
}

/// The `bench --baseline` command: progress on stderr, figures on stdout.
pub fn command(baseline: &Path, rounds: usize, runs: u64) -> ExitCode {
    let r = compare(baseline, rounds, runs, |i, a, b| {
        eprintln!("round {}/{rounds}: this {:.2}x whole {:.2}x main, baseline {:.2}x whole {:.2}x main", i + 1, a.whole, a.main, b.whole, b.main);
    });
    match r {
        Ok(c) => {
            println!("# reference scenario against {}\n{}", c.baseline, serde_yaml_ng::to_string(&c).expect("figures serialise"));
            println!(
                "# this binary runs the reference scenario at {} of the baseline's speed over the whole run and {} over the main phase (medians of {} rounds of {} runs each; per-round ratios {}..{} and {}..{} between their quartiles)",
                c.ratio_whole, c.ratio_main, c.rounds, c.runs_per_round, c.round_ratio_whole.p25, c.round_ratio_whole.p75, c.round_ratio_main.p25, c.round_ratio_main.p75
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_of_this_and_of_older_builds_parses() {
        let now = "# simulated world\nfoo: 1\n# double11 (medians of 5 runs): 51.58x simulated per CPU second over the whole run, 41.22x over the main phase; 313502 delivered messages per CPU second, 0.5 of raw madsim's\n";
        assert_eq!(parse_summary(now), Some(SideRun { whole: 51.58, main: 41.22 }));
        let old = "# double11 (medians of 7 runs): 58.84x simulated per CPU second over the whole run, 49.31x over the main phase; 366896 delivered messages per CPU second, 0 of raw madsim's";
        assert_eq!(parse_summary(old), Some(SideRun { whole: 58.84, main: 49.31 }));
    }

    #[test]
    fn output_without_a_usable_summary_is_none() {
        assert_eq!(parse_summary(""), None);
        assert_eq!(parse_summary("# simulated world\ntime_compression: 3\n"), None);
        assert_eq!(parse_summary("# d (medians of 1 runs): NaNx simulated per CPU second over the whole run, 3x over the main phase"), None);
        assert_eq!(parse_summary("# d (medians of 1 runs): 0x simulated per CPU second over the whole run, 3x over the main phase"), None);
    }

    #[test]
    fn the_spread_is_of_the_sorted_ratios() {
        let s = Spread::of(vec![1.0, 0.8, 0.9, 1.1, 0.7]);
        assert_eq!(s, Spread { min: 0.7, p25: 0.8, median: 0.9, p75: 1.0, max: 1.1 });
        assert_eq!(Spread::of(vec![0.5, 1.0]).median, 0.75);
    }

    #[test]
    fn bad_arguments_and_a_missing_baseline_are_errors() {
        let none = Path::new("/nonexistent/tablesim");
        assert_eq!(compare(none, 0, 3, |_, _, _| {}).unwrap_err(), BaselineError::Rounds(0));
        assert_eq!(compare(none, 2, 0, |_, _, _| {}).unwrap_err(), BaselineError::Runs(0));
        assert!(matches!(compare(none, 2, 3, |_, _, _| {}).unwrap_err(), BaselineError::Spawn { .. }));
    }
}
