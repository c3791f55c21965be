//! Determinism is the product: one seed gives one digest, run after run;
//! another seed gives another.

use std::path::Path;
use std::process::Command;

use tablesim::run::{run, RunOptions};

#[test]
fn same_seed_same_digest_and_other_seed_other_digest_for_every_scenario() {
    let mut dir: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap().map(|e| e.unwrap().path()).collect();
    dir.sort();
    for path in dir.iter().filter(|p| p.extension().is_some_and(|x| x == "toml")) {
        let scn = tablesim::load_scenario(path).unwrap();
        let a = run(&scn, 7, &RunOptions::default()).unwrap();
        let b = run(&scn, 7, &RunOptions::default()).unwrap();
        let c = run(&scn, 8, &RunOptions::default()).unwrap();
        assert_eq!(a.digest, b.digest, "{}: seed 7 twice", path.display());
        assert_eq!(a.history.len(), b.history.len());
        assert_ne!(a.digest, c.digest, "{}: seeds 7 and 8", path.display());
    }
}

#[test]
fn check_determinism_command_passes_and_names_the_digest() {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(["check-determinism", "scenarios/zone-crash.toml", "--seed", "3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deterministic: seed 3"), "{stdout}");
}
