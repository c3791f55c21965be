//! What the integration tests that run scenario text share.

use std::path::Path;

use tablesim::execute::{execute, Executed};
use tablesim::parse_scenario as parse;
use tablesim::run::RunOptions;

/// Parses scenario text (panicking with its error) and runs it at its seed.
pub fn run(text: &str) -> Executed {
    let scn = parse(Path::new("t.toml"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    execute(&scn, scn.seed, &RunOptions::default()).expect("the run ends")
}

/// The verdict and measured value of the expectation `name`.
pub fn expectation(done: &Executed, name: &str) -> (bool, String) {
    let e = done.report.expectations.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no `{name}` in {:?}", done.report.expectations));
    (e.pass, e.measured.clone())
}
