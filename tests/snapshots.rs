//! Every shipped scenario at its default seed: its report is a snapshot in
//! `snapshots/`. A report changes only when behaviour changes; review with
//! `cargo insta review` or `INSTA_UPDATE=always cargo test --test snapshots`.
//! `TABLESIM_SNAPSHOTS=word` runs only the scenarios whose file name
//! contains `word` (to update a few after a change that touches them).
#![allow(clippy::disallowed_methods)] // host-side test: writes scratch scenario files, reads the scenarios folder

use std::path::PathBuf;

use tablesim::execute::execute;
use tablesim::run::RunOptions;

mod common;

fn scenarios() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "the shipped scenarios are there");
    match std::env::var("TABLESIM_SNAPSHOTS") {
        Ok(word) => {
            v.retain(|p| p.file_stem().is_some_and(|s| s.to_string_lossy().contains(&word)));
            assert!(!v.is_empty(), "no scenario file name contains {word:?}");
            v
        }
        Err(_) => v,
    }
}

#[test]
fn every_scenario_report_matches_its_snapshot() {
    // The runs side by side, then their reports against the snapshots in
    // file order.
    let paths = scenarios();
    let reports = common::par_map(&paths, |path| {
        let scn = tablesim::load_scenario(path).unwrap_or_else(|e| panic!("{e}"));
        let done = execute(&scn, scn.seed, &RunOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (scn.name.clone(), done.report)
    });
    for (path, (name, report)) in paths.iter().zip(reports) {
        assert!(report.pass, "{} fails its expectations at its default seed:\n{}", path.display(), report.summary());
        insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_yaml_snapshot!(name, report);
        });
    }
}
