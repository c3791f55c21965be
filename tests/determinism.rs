//! Determinism is the product: one seed gives one digest, run after run;
//! another seed gives another.

use std::path::Path;
use std::process::Command;

use tablesim::run::{run, RunOptions};

mod common;

#[test]
fn same_seed_same_digest_and_other_seed_other_digest_for_every_scenario() {
    let mut dir: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap().map(|e| e.unwrap().path()).collect();
    dir.sort();
    // Every (scenario, seed) run on its own, side by side: seed 7 twice
    // and seed 8 once.
    let files: Vec<_> = dir.iter().filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    let jobs: Vec<(usize, u64)> = (0..files.len()).flat_map(|i| [(i, 7), (i, 7), (i, 8)]).collect();
    let runs = common::par_map(&jobs, |&(i, seed)| {
        let scn = tablesim::load_scenario(files[i]).unwrap();
        let out = run(&scn, seed, &RunOptions::default()).unwrap();
        (out.digest, out.history.len())
    });
    for (i, path) in files.iter().enumerate() {
        let (a, b, c) = (&runs[3 * i], &runs[3 * i + 1], &runs[3 * i + 2]);
        assert_eq!(a.0, b.0, "{}: seed 7 twice", path.display());
        assert_eq!(a.1, b.1);
        assert_ne!(a.0, c.0, "{}: seeds 7 and 8", path.display());
    }
}

#[test]
fn check_determinism_command_passes_and_names_the_digest() {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(["check-determinism", "scenarios/zone-crash.toml", "--seed", "3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deterministic: seed 3"), "{stdout}");
}
