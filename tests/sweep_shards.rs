//! A sweep split into shards and merged equals the whole sweep, seed for
//! seed; JUnit files are well-formed XML that carry each failure with its
//! replay command; merge refuses shard sets with a gap or a repeat.
#![allow(clippy::disallowed_methods)] // host-side test: runs the binary, writes scratch files

use std::path::{Path, PathBuf};
use std::process::Command;

fn tablesim(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tablesim"));
    cmd.args(args);
    for v in ["TABLESIM_SHARD", "JOB_COMPLETION_INDEX", "CI_NODE_INDEX", "CI_NODE_TOTAL", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT"] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run tablesim");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A scratch folder of one test (tests run at once: each has its own).
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tablesim-sweep-shards-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The zone-crash scenario under another name, with an expectation its
/// outage cannot meet: every seed fails.
fn failing_scenario(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string("scenarios/zone-crash.toml").unwrap();
    let text = text.replace("name = \"zone-crash\"", "name = \"zone-crash-strict\"").replace("max_unavailability = \"3.5s\"", "max_unavailability = \"1ms\"");
    assert!(text.contains("zone-crash-strict") && text.contains("\"1ms\""), "the shipped scenario changed: adapt this test");
    let p = dir.join("zone-crash-strict.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// (scenario, seed, outcome, digest) of every case of a results file.
fn cases(path: &Path) -> Vec<(u64, u64, String, String)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"].as_array().unwrap().iter().map(|c| (c["scenario"].as_u64().unwrap(), c["seed"].as_u64().unwrap(), c["outcome"].as_str().unwrap().to_string(), c["digest"].as_str().unwrap_or("").to_string())).collect()
}

/// Parses `xml` whole, with end names checked; returns the names of its
/// elements in document order.
fn well_formed(xml: &str) -> Vec<String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut names = Vec::new();
    let mut depth = 0i32;
    loop {
        match r.read_event().unwrap_or_else(|e| panic!("not well-formed at {}: {e}\n{xml}", r.buffer_position())) {
            quick_xml::events::Event::Start(e) => {
                depth += 1;
                names.push(AsRef::<str>::as_ref(&e.name()).to_string());
            }
            quick_xml::events::Event::Empty(e) => names.push(AsRef::<str>::as_ref(&e.name()).to_string()),
            quick_xml::events::Event::End(_) => depth -= 1,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    names
}

#[test]
fn four_merged_shards_equal_the_whole_sweep_seed_for_seed() {
    let dir = scratch("shards");
    let strict = failing_scenario(&dir);
    let files = ["scenarios/smoke.toml", strict.to_str().unwrap()];
    let (whole, whole_xml) = (dir.join("whole.json"), dir.join("whole.xml"));
    let mut args = vec!["sweep", "--seeds", "3..9", "--jobs", "2"];
    args.extend(files);
    let whole_args: Vec<&str> = args.iter().copied().chain(["--results", whole.to_str().unwrap(), "--junit", whole_xml.to_str().unwrap()]).collect();
    let (code, out) = tablesim(&whole_args, &[]);
    assert_eq!(code, 1, "the strict scenario fails: {out}");
    assert!(out.contains("6 seeds of smoke: 6 passed, 0 failed") && out.contains("6 seeds of zone-crash-strict: 0 passed, 6 failed"), "{out}");
    assert!(out.contains(&format!("replay: cargo run --release -- run {} --seed 8", strict.display())), "{out}");

    // Four shards, each reading its index the way a different runner gives it.
    let envs: [&[(&str, &str)]; 4] = [&[("TABLESIM_SHARD", "1/4")], &[("JOB_COMPLETION_INDEX", "1")], &[("CI_NODE_INDEX", "3"), ("CI_NODE_TOTAL", "4")], &[("CIRCLE_NODE_INDEX", "3"), ("CIRCLE_NODE_TOTAL", "4")]];
    let mut parts = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        let p = dir.join(format!("shard{}.json", i + 1));
        let shard_args: Vec<&str> = args.iter().copied().chain(["--shard", "env/4", "--results", p.to_str().unwrap()]).collect();
        let (code, out) = tablesim(&shard_args, env);
        assert!(code == 0 || code == 1, "{out}");
        assert!(out.contains(&format!("shard {}/4: 3 of 12 (scenario, seed) pairs", i + 1)), "{out}");
        parts.push(p);
    }
    let (merged, merged_xml) = (dir.join("merged.json"), dir.join("merged.xml"));
    let mut margs = vec!["merge"];
    margs.extend(parts.iter().map(|p| p.to_str().unwrap()));
    margs.extend(["--results", merged.to_str().unwrap(), "--junit", merged_xml.to_str().unwrap()]);
    let (code, out) = tablesim(&margs, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("merged 4 shards: 12 (scenario, seed) pairs"), "{out}");
    let (w, m) = (cases(&whole), cases(&merged));
    assert_eq!(w.len(), 12);
    assert_eq!(w, m, "seed for seed: outcome and report digest");
    assert!(w.iter().all(|c| !c.3.is_empty()));

    // The JUnit files parse, with a test case per pair and the failures
    // carrying their replay.
    for x in [&whole_xml, &merged_xml] {
        let text = std::fs::read_to_string(x).unwrap();
        let names = well_formed(&text);
        assert_eq!(names.iter().filter(|n| *n == "testcase").count(), 12);
        assert_eq!(names.iter().filter(|n| *n == "failure").count(), 6);
        assert_eq!(names.iter().filter(|n| *n == "testsuite").count(), 2);
        assert!(text.contains("max_unavailability"), "{text}");
        assert!(text.contains(&format!("replay: cargo run --release -- run {} --seed 3</failure>", strict.display())), "{text}");
    }

    // A gap or a repeat is refused.
    let (code, out) = tablesim(&["merge", parts[0].to_str().unwrap(), parts[1].to_str().unwrap(), parts[3].to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("shards missing of 4: 3"), "{out}");
    let (code, out) = tablesim(&["merge", parts[0].to_str().unwrap(), parts[1].to_str().unwrap(), parts[2].to_str().unwrap(), parts[2].to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("both shard 3/4"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_shard_arguments_are_refused_before_anything_runs() {
    for (args, env, says) in [
        (vec!["--shard", "5/4"], vec![], "counted from 1 to 4"),
        (vec!["--shard", "env"], vec![], "none of"),
        (vec!["--shard", "env"], vec![("JOB_COMPLETION_INDEX", "0")], "env/N"),
        (vec!["--shard", "env/2"], vec![("JOB_COMPLETION_INDEX", "2")], "counted from 1 to 2"),
        (vec!["--junit", "/"], vec![], "--junit"),
    ] {
        let all: Vec<&str> = ["sweep", "scenarios/smoke.toml", "--seeds", "0..4"].into_iter().chain(args.iter().copied()).collect();
        let (code, out) = tablesim(&all, &env);
        assert_eq!(code, 2, "{all:?}: {out}");
        assert!(out.contains(says) && !out.contains("passed"), "{all:?}: {out}");
    }
    let (code, out) = tablesim(&["sweep", "scenarios/smoke.toml", "scenarios/smoke.toml", "--seeds", "0..2"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("both name the scenario `smoke`"), "{out}");
}

/// A swarm run writes the scenario it drew; that file replays the run
/// exactly without `--swarm`, and a swarm sweep tallies what each verb did.
#[test]
fn a_swarm_draw_is_written_and_replays_the_same_run() {
    let dir = scratch("swarm");
    let out = dir.join("run");
    let (code, text) = tablesim(&["run", "scenarios/zone-crash.toml", "--seed", "2", "--swarm", "--out", out.to_str().unwrap()], &[]);
    assert!(code == 0 || code == 1, "{text}");
    let drawn = out.join("swarm.toml");
    assert!(text.contains(&format!("swarm: the drawn scenario is {}", drawn.display())), "{text}");
    let digest = |dir: &Path| -> String {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        v["digest"].as_str().unwrap().to_string()
    };
    let replay = dir.join("replay");
    let (code2, text2) = tablesim(&["run", drawn.to_str().unwrap(), "--seed", "2", "--out", replay.to_str().unwrap()], &[]);
    assert_eq!(code, code2, "{text2}");
    assert_eq!(digest(&out), digest(&replay));
    assert!(std::fs::read_to_string(&drawn).unwrap().contains("name = \"zone-crash-swarm-2\""));

    let (code, text) = tablesim(&["sweep", "scenarios/zone-crash.toml", "--seeds", "0..4", "--swarm", "--jobs", "2"], &[]);
    assert!(code == 0 || code == 1, "{text}");
    assert!(text.contains("swarm: how often each drawn verb had an effect") && text.contains("drawn "), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
