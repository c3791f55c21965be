//! The command line refuses bad arguments before it runs anything: exit 2
//! with one message. A seed range may end at the largest seed.
#![allow(clippy::disallowed_methods)] // host-side test: runs the binary, writes scratch files, waits on the wall clock

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tablesim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(args).output().expect("run tablesim");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tablesim-cli-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn zero_jobs_are_refused_not_taken_for_one() {
    for cmd in [&["sweep", "scenarios/smoke.toml", "--seeds", "0..2", "--jobs", "0"][..], &["crashtest", "--seeds", "0..2", "--jobs", "0"]] {
        let (code, out) = tablesim(cmd);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("from 1 to 64"), "{out}");
    }
    let (code, out) = tablesim(&["sweep", "scenarios/smoke.toml", "--seeds", "0..2", "--jobs", "100000"]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn an_out_that_is_a_file_is_refused_before_the_run() {
    let file = scratch("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let started = Instant::now();
    // double11 runs for a while: a refusal after the run would take it.
    let (code, out) = tablesim(&["run", "scenarios/double11.toml", "--out", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--out") && !out.contains("verdict"), "refused before running: {out}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[test]
fn an_empty_history_is_reported_as_empty_not_as_a_pass() {
    let empty = scratch("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let (code, out) = tablesim(&["check", empty.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("empty") && !out.contains("pass"), "{out}");
}

#[test]
fn a_history_from_an_endless_device_is_refused_at_the_cap() {
    if !std::path::Path::new("/dev/zero").exists() {
        return;
    }
    let (code, out) = tablesim(&["run", "/dev/zero"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("over 1048576 bytes"), "{out}");
}

#[test]
fn a_seed_range_ending_at_the_largest_seed_ends() {
    let max = u64::MAX;
    let range = format!("{}..{max}", max - 3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tablesim"))
        .args(["sweep", "scenarios/smoke.toml", "--seeds", &range, "--jobs", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the sweep did not end: the seed counter wrapped");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("3 seeds of smoke"), "{out}");
    assert!(status.code().is_some(), "{out}");
}

#[test]
fn a_baseline_comparison_runs_both_sides_and_names_a_bad_baseline() {
    // The binary against itself: two rounds, one reference run per side
    // and round (the figures are speed, so only their shape is checked).
    let me = env!("CARGO_BIN_EXE_tablesim");
    let (code, out) = tablesim(&["bench", "--baseline", me, "--baseline-rounds", "2", "--scenario-runs", "1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("round 2/2") && out.contains("rounds: 2"), "{out}");
    let ratio: f64 = out.lines().find_map(|l| l.strip_prefix("ratio_whole: ")).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no ratio_whole: {out}"));
    assert!(ratio.is_finite() && ratio > 0.0, "{out}");
    let (code, out) = tablesim(&["bench", "--baseline", "/nonexistent/tablesim-old", "--baseline-rounds", "1"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("/nonexistent/tablesim-old: cannot run it"), "{out}");
}
