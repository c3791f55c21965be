//! Replays the regression corpus (`tests/regressions.toml`): every pair
//! that once failed must pass, with the report values it pins.
#![allow(clippy::disallowed_methods)] // host-side test: reads the corpus and the scenario files, runs seeds on threads

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tablesim::execute::execute;
use tablesim::run::RunOptions;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    regression: Vec<Regression>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Regression {
    scenario: String,
    seed: u64,
    found: String,
    #[serde(default)]
    report: BTreeMap<String, serde_json::Value>,
}

fn corpus() -> Corpus {
    toml::from_str(&std::fs::read_to_string("tests/regressions.toml").expect("the corpus")).expect("the corpus parses")
}

/// What is wrong with one pair's run today, if anything.
fn replay(r: &Regression) -> Option<String> {
    let scn = match tablesim::load_scenario(Path::new(&r.scenario)) {
        Ok(s) => s,
        Err(e) => return Some(format!("the scenario no longer loads: {e}")),
    };
    let done = match execute(&scn, r.seed, &RunOptions::default()) {
        Ok(d) => d,
        Err(e) => return Some(format!("the run failed: {e}")),
    };
    let mut wrong: Vec<String> = done.report.expectations.iter().filter(|e| !e.pass).map(|e| format!("{} {} (expected {})", e.name, e.measured, e.expected)).collect();
    let json = serde_json::to_value(&done.report).expect("the report serialises");
    for (pointer, want) in &r.report {
        match json.pointer(pointer) {
            Some(v) if v == want => {}
            v => wrong.push(format!("report {pointer} is {}, pinned at {want}", v.map_or("absent".to_string(), |v| v.to_string()))),
        }
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

#[test]
fn every_fixed_failure_in_the_corpus_stays_fixed() {
    let corpus = corpus();
    assert!(!corpus.regression.is_empty());
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(r) = corpus.regression.get(i) else { return };
                if let Some(why) = replay(r) {
                    failures.lock().unwrap().push(format!(
                        "{} seed {}: {why}\n    it once failed so: {}\n    replay: cargo run --release -- run {} --seed {}",
                        r.scenario, r.seed, r.found, r.scenario, r.seed
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "fixed failures came back:\n{}", failures.join("\n"));
}

#[test]
fn the_corpus_names_each_pair_once_and_pins_values_the_report_has() {
    let corpus = corpus();
    let mut seen = std::collections::BTreeSet::new();
    for r in &corpus.regression {
        assert!(seen.insert((r.scenario.clone(), r.seed)), "{} seed {} is listed twice", r.scenario, r.seed);
        assert!(!r.found.trim().is_empty(), "{} seed {}: say what it found", r.scenario, r.seed);
        for p in r.report.keys() {
            assert!(p.starts_with('/'), "{p}: a JSON pointer starts with /");
        }
    }
}

/// A pinned value the run does not have fails the replay: the corpus cannot
/// pass by pinning nothing.
#[test]
fn a_pinned_value_that_differs_fails_the_replay() {
    let r = Regression {
        scenario: "scenarios/smoke.toml".into(),
        seed: 1,
        found: "nothing: a check of the check".into(),
        report: BTreeMap::from([("/seed".to_string(), serde_json::json!(2)), ("/no/such/field".to_string(), serde_json::json!(0))]),
    };
    let why = replay(&r).expect("the pins differ");
    assert!(why.contains("report /seed is 1, pinned at 2") && why.contains("/no/such/field is absent"), "{why}");
    let ok = Regression { report: BTreeMap::from([("/seed".to_string(), serde_json::json!(1))]), ..r };
    assert_eq!(replay(&ok), None);
}
