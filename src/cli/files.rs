//! The commands that read files and run nothing: `validate`, `list` and
//! `check` (a saved history, re-checked offline).
#![allow(clippy::disallowed_methods)] // outside the simulation: real files

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `validate`: every file parsed and validated, one line each.
pub(super) fn validate(scenarios: Vec<PathBuf>) -> ExitCode {
    let mut bad = false;
    for p in scenarios {
        match crate::load_scenario(&p) {
            Ok(s) => println!("ok    {}  ({}: {} nodes, {} faults, {})", p.display(), s.name, s.topology.nodes().len(), s.faults.len(), sim::time::fmt_duration(s.duration)),
            Err(e) => {
                bad = true;
                eprintln!("error: {e}");
            }
        }
    }
    ExitCode::from(if bad { 2 } else { 0 })
}

/// `check`: a saved history re-checked by the run's checkers.
pub(super) fn check(path: &Path, checker: Option<&str>, heal_at: Option<std::time::Duration>, bound: Option<std::time::Duration>) -> ExitCode {
    use crate::check::{self, CheckConfig, Verdict};
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

/// `list`: the scenarios of a folder with their descriptions.
pub(super) fn list(dir: &Path) -> ExitCode {
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
        match crate::load_scenario(&p) {
            Ok(s) => println!("{:<36} {}", p.display(), s.description.lines().next().unwrap_or("")),
            Err(e) => {
                bad = true;
                println!("{:<36} INVALID: {e}", p.display());
            }
        }
    }
    ExitCode::from(if bad { 2 } else { 0 })
}
