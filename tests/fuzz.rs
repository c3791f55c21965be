//! Fuzzing the inputs: generated scenario files and histories, and the
//! hand-written tricky ones kept in `tests/fuzz_corpus/`. Every input is
//! either accepted, and then runs (or is checked) within the bounds, or
//! refused with one short message naming the file and the line: never a
//! panic, a hang or an abort.
//!
//! The generator starts from a small scenario of each service and gives
//! some of its fields hostile values (zero, negative, huge, NaN, wrong
//! types, long or multi-line names, unknown roles and verbs), drops or
//! doubles lines, and adds faults of any verb with any fields. Its good
//! values keep accepted runs short (a main phase of at most 300 ms), and
//! the scenario format's limits refuse the rest. The random stream is
//! seeded, so CI sees the same cases every time; a failure shrinks to the
//! fields that cause it. `FUZZ_SHOW=1` prints every refusal.
//!
//! The corpus's file names say what must happen: `accepted-*` runs (and
//! must not be vacuous), `refused-*` is refused; each starts with a
//! `# why` comment.
#![allow(clippy::disallowed_methods)] // host-side test: reads the corpus folder

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tablesim::check::{check_all, CheckConfig};
use tablesim::execute::execute;
use tablesim::history::History;
use tablesim::run::{RunOptions, FINAL_PHASE_MAX, SETTLE_MAX, SETUP_MAX};
use tablesim::scenario::limits;

/// Generated scenario files per run of the test (CI has two cores).
const SCENARIO_CASES: u32 = 2000;
/// Generated histories per run of the test.
const HISTORY_CASES: u32 = 3000;

fn corpus(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("the corpus").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is there: {}", dir.display());
    files
}

/// Parses and validates `bytes`; an accepted scenario is run at its seed.
/// Panics (failing the test) unless the input is refused with one short
/// message naming `name` and a line of the file, or runs within the
/// bounds. Returns whether it was accepted.
fn scenario_holds(name: &str, bytes: &[u8]) -> bool {
    let scn = match tablesim::parse_scenario(Path::new(name), bytes) {
        Ok(scn) => scn,
        Err(e) => {
            let shown = e.to_string();
            if std::env::var_os("FUZZ_SHOW").is_some() {
                eprintln!("refused: {shown}");
            }
            let lines = String::from_utf8_lossy(bytes).lines().count().max(1);
            assert!(e.line >= 1 && e.line <= lines + 1, "a line of the file ({lines} lines): {shown}");
            assert!(shown.starts_with(&format!("{name}:{}:", e.line)), "names the file and line: {shown}");
            assert_eq!(shown.lines().count(), 1, "one line: {shown}");
            assert!(shown.chars().count() <= 600, "short: {} characters", shown.chars().count());
            return false;
        }
    };
    let done = execute(&scn, scn.seed, &RunOptions::default()).unwrap_or_else(|e| panic!("{name} was accepted, then: {e}"));
    let timeout = scn.workloads.iter().map(|w| w.timeout.0).max().unwrap_or(Duration::ZERO);
    let bound = SETUP_MAX + Duration::from_secs(1) + scn.duration + timeout + FINAL_PHASE_MAX + SETTLE_MAX;
    assert!(done.output.end.as_duration() <= bound, "{name}: ran {:?} of simulated time", done.output.end);
    assert!(done.output.history.entries().len() as f64 <= 2.0 * limits::OPERATIONS_MAX + 1e5, "{name}: bounded history");
    true
}

/// Parses `text` as a history and checks it: refused naming a line, or
/// judged (an empty one has nothing to judge).
fn history_holds(name: &str, text: &str) {
    match History::parse_jsonl(text) {
        Ok(h) if h.entries().is_empty() => {}
        Ok(h) => {
            let _ = check_all(&h, &CheckConfig::default());
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(e.line >= 1 && e.line <= text.lines().count().max(1), "{name}: a line of the file: {shown}");
            assert!(shown.contains(&format!("line {}", e.line)), "{name}: names the line: {shown}");
        }
    }
}

#[test]
fn the_corpus_scenarios_are_refused_at_a_line_or_run_with_operations() {
    for path in corpus("scenarios") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let accepted = scenario_holds(&name, &bytes);
        assert_eq!(accepted, name.starts_with("accepted-"), "{name}: the file's name says whether it is accepted");
        if accepted {
            let scn = tablesim::parse_scenario(Path::new(&name), &bytes).unwrap();
            let done = execute(&scn, scn.seed, &RunOptions::default()).unwrap();
            let vacuous: Vec<_> = done.report.expectations.iter().filter(|e| e.name.starts_with("min_") && e.name.ends_with("_ops") && !e.pass).collect();
            assert!(vacuous.is_empty(), "{name}: {vacuous:?}");
        }
    }
}

#[test]
fn the_corpus_histories_are_refused_at_a_line_or_checked() {
    for path in corpus("histories") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Through the command's own reader (the size cap, UTF-8, empty).
        let r = tablesim::check::check_file(&path, None);
        assert_eq!(r.is_ok(), name.starts_with("accepted-"), "{name}: {:?}", r.as_ref().err());
        if let Err(e) = r {
            let shown = format!("{e:#}");
            assert!(shown.contains(&name) && shown.lines().count() == 1 && shown.len() < 600, "{shown}");
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            history_holds(&name, &text);
        }
    }
}

// ----- generated scenario files -----

/// A field's good value, or a hostile one of a pool.
const NUMBERS: &[&str] = &[
    "0", "1", "3", "-1", "0.5", "2.0", "1e308", "-1e308", "nan", "inf", "4294967295", "4294967296", "18446744073709551615", "99999999999999999999", "\"7\"", "true",
    "[]", "{}", "65536", "100000",
];
const DURATIONS: &[&str] = &[
    "\"0s\"", "\"1ns\"", "\"50ms\"", "\"300ms\"", "\"2h\"", "\"277777h\"", "\"-1s\"", "\"1e400s\"", "\"s\"", "\"5 parsecs\"", "\"\"", "5", "\"99999999999999999999999999999999ns\"",
    "\"1.5ms\"",
];
const NAMES: &[&str] = &[
    "\"az1\"", "\"az2\"", "\"az9\"", "\"\"", "\"a\\nb\"", "\"../x\"", "\"client\"", "\"kv\"", "\"meta\"", "\"storage\"", "\"table\"", "\"meta-leader\"", "\"master-zone\"",
    "\"az1-kv-0\"", "\"az2-client-0\"", "\"az3-table-0\"", "\"é\"", "LONG", "[\"az1\", \"az2\"]", "[\"az1\", \"az2\", \"az3\"]",
];
const VERBS: &[&str] = &[
    "zone-down", "zone-up", "node-crash", "node-restart", "node-pause", "node-resume", "partition", "heal", "clog", "unclog", "loss", "loss-off", "latency-spike",
    "latency-clear", "disk-faults", "disk-faults-off", "clock-offset", "clock-drift", "clock-reset", "cpu-slow", "cpu-restore", "node-add", "node-drain", "zone-explode",
];
const FAULT_FIELDS: &[(&str, &[&str])] = &[
    ("target", NAMES),
    ("from", NAMES),
    ("to", NAMES),
    ("mode", &["\"crash\"", "\"isolate\"", "\"melt\""]),
    ("direction", &["\"both\"", "\"one-way\"", "\"sideways\""]),
    ("rate", NUMBERS),
    ("extra", DURATIONS),
    ("offset", &["\"-200ms\"", "\"5ms\"", "\"-2h\"", "\"--1s\""]),
    ("ppm", NUMBERS),
    ("read_error_rate", NUMBERS),
    ("bitflip_write_rate", NUMBERS),
    ("full", &["true", "false", "1"]),
    ("slow_factor", NUMBERS),
    ("speed", NUMBERS),
    ("until", DURATIONS),
];

/// The fields a verb needs, with values every template's topology has.
fn needs(verb: &str) -> &'static [(&'static str, &'static str)] {
    match verb {
        "zone-down" | "zone-up" => &[("target", "\"az2\""), ("until", "\"250ms\"")],
        "node-crash" | "node-restart" | "node-pause" | "node-resume" | "disk-faults-off" | "clock-reset" => &[("target", "\"az1-client-0\""), ("until", "\"250ms\"")],
        "node-add" | "node-drain" => &[("target", "\"az3-table-0\"")],
        "partition" | "heal" | "clog" | "unclog" | "loss-off" | "latency-clear" => &[("from", "\"az1\""), ("to", "\"az2\"")],
        "loss" => &[("from", "\"az1\""), ("rate", "0.2")],
        "latency-spike" => &[("extra", "\"5ms\""), ("until", "\"250ms\"")],
        "disk-faults" => &[("target", "\"az3-client-0\""), ("read_error_rate", "0.1")],
        "clock-offset" => &[("target", "\"az2-client-0\""), ("offset", "\"-200ms\"")],
        "clock-drift" => &[("target", "\"az2-client-0\""), ("ppm", "500")],
        "cpu-slow" | "cpu-restore" => &[("target", "\"az1\""), ("speed", "0.2")],
        _ => &[],
    }
}

/// One of the three services' small scenarios, as lines; `{name}` is the
/// pool a line's value may be replaced from.
fn template(kind: usize) -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    let head = vec![
        ("", "name = \"gen\"", NAMES),
        ("", "description = \"generated\"", NAMES),
        ("", "duration = \"300ms\"", DURATIONS),
        ("", "seed = 1", NUMBERS),
        ("", "[topology]", &[][..]),
        ("", "zones = [\"az1\", \"az2\", \"az3\"]", NAMES),
    ];
    let tail: Vec<(&str, &str, &[&str])> = match kind {
        0 => vec![
            ("", "NODES", &[][..]),
            ("nodes", "kv", NUMBERS),
            ("nodes", "client", NUMBERS),
            ("", "intra_zone_latency = \"100us\"", DURATIONS),
            ("", "inter_zone_latency = \"1ms\"", DURATIONS),
            ("", "[[workload]]", &[][..]),
            ("", "name = \"kv\"", NAMES),
            ("", "clients = 4", NUMBERS),
            ("", "rate = 200", NUMBERS),
            ("", "keys = 20", NUMBERS),
            ("", "mix = { read = 1.0, write = 1.0 }", &[][..]),
            ("", "value_size = 64", NUMBERS),
            ("", "timeout = \"50ms\"", DURATIONS),
            ("", "[service]", &[][..]),
            ("", "group_commit_max = 8", NUMBERS),
            ("", "[disk]", &[][..]),
            ("", "bandwidth_mib_s = 1024", NUMBERS),
            ("", "capacity_mib = 1024", NUMBERS),
            ("", "[expect]", &[][..]),
            ("", "min_availability = 0.5", NUMBERS),
            ("", "liveness_bound = \"300ms\"", DURATIONS),
        ],
        1 => vec![
            ("", "NODES", &[][..]),
            ("nodes", "meta", NUMBERS),
            ("nodes", "manager", NUMBERS),
            ("nodes", "storage", NUMBERS),
            ("nodes", "client", NUMBERS),
            ("", "intra_zone_latency = \"100us\"", DURATIONS),
            ("", "inter_zone_latency = \"1ms\"", DURATIONS),
            ("", "[service]", &[][..]),
            ("", "kind = \"stream\"", NAMES),
            ("", "dead_after = \"200ms\"", DURATIONS),
            ("", "extent_bytes = 4096", NUMBERS),
            ("", "server_role = \"storage\"", NAMES),
            ("", "[[workload]]", &[][..]),
            ("", "name = \"log\"", NAMES),
            ("", "kind = \"stream\"", NAMES),
            ("", "clients = 4", NUMBERS),
            ("", "rate = 200", NUMBERS),
            ("", "keys = 2", NUMBERS),
            ("", "mix = { append = 0.8, read = 0.2 }", &[][..]),
            ("", "value_size = 32", NUMBERS),
            ("", "timeout = \"100ms\"", DURATIONS),
            ("", "[expect]", &[][..]),
            ("", "max_append_stall = \"300ms\"", DURATIONS),
        ],
        _ => vec![
            ("", "NODES", &[][..]),
            ("nodes", "meta", NUMBERS),
            ("nodes", "manager", NUMBERS),
            ("nodes", "storage", NUMBERS),
            ("nodes", "master", NUMBERS),
            ("nodes", "table", NUMBERS),
            ("nodes", "proxy", NUMBERS),
            ("nodes", "client", NUMBERS),
            ("", "intra_zone_latency = \"100us\"", DURATIONS),
            ("", "inter_zone_latency = \"1ms\"", DURATIONS),
            ("", "[service]", &[][..]),
            ("", "kind = \"table\"", NAMES),
            ("", "partitions = 4", NUMBERS),
            ("", "meta_role = \"meta\"", NAMES),
            ("", "[[workload]]", &[][..]),
            ("", "name = \"rows\"", NAMES),
            ("", "clients = 4", NUMBERS),
            ("", "rate = 200", NUMBERS),
            ("", "keys = 50", NUMBERS),
            ("", "mix = { read = 0.5, write = 0.5 }", &[][..]),
            ("", "columns = 2", NUMBERS),
            ("", "timeout = \"100ms\"", DURATIONS),
            ("", "[resources]", &[][..]),
            ("", "cores = { table = 2 }", &[][..]),
            ("", "[expect]", &[][..]),
            ("", "max_time_to_recover = \"300ms\"", DURATIONS),
        ],
    };
    head.into_iter().chain(tail).collect()
}

/// What happens to one line: kept, replaced from its pool (by index),
/// dropped, doubled, or followed by an unknown field.
#[derive(Clone, Debug)]
enum Edit {
    Keep,
    Replace(usize),
    Drop,
    Double,
    Unknown,
}

/// A generated fault: its verb, its `at` (by index), whether it has the
/// fields its verb needs (with good values), and more fields with a value
/// index each.
type GenFault = (usize, usize, bool, Vec<(usize, usize)>);

#[derive(Clone, Debug)]
struct Gen {
    kind: usize,
    edits: Vec<Edit>,
    faults: Vec<GenFault>,
}

fn gen() -> impl Strategy<Value = Gen> {
    let edit = prop_oneof![300 => Just(Edit::Keep), 8 => (0usize..64).prop_map(Edit::Replace), 2 => Just(Edit::Drop), 1 => Just(Edit::Double), 1 => Just(Edit::Unknown)];
    let extras = prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec((0..FAULT_FIELDS.len(), 0usize..64), 1..3)];
    let fault = (0..VERBS.len(), 0usize..4, prop::bool::weighted(0.8), extras);
    (0usize..3, prop::collection::vec(edit, 30), prop::collection::vec(fault, 0..3)).prop_map(|(kind, edits, faults)| Gen { kind, edits, faults })
}

fn pick(pool: &[&str], i: usize) -> String {
    match pool[i % pool.len()] {
        "LONG" => format!("\"{}\"", "x".repeat(100_000)),
        v => v.to_string(),
    }
}

/// The scenario text a generated case stands for: the template's lines
/// with their edits, the `nodes` table made of its roles' edited counts
/// (a role doubled is a TOML error, an unknown one a typo beside it), then
/// the faults.
fn render(g: &Gen) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut nodes: Vec<String> = Vec::new();
    for (i, (group, line, pool)) in template(g.kind).into_iter().enumerate() {
        let edit = g.edits.get(i).cloned().unwrap_or(Edit::Keep);
        if group == "nodes" {
            match edit {
                Edit::Replace(v) => nodes.push(format!("{line} = {}", pick(pool, v))),
                Edit::Drop => {}
                Edit::Double => nodes.extend([format!("{line} = 1"), format!("{line} = 2")]),
                Edit::Unknown => nodes.extend([format!("{line} = 1"), format!("{line}x = 1")]),
                Edit::Keep => nodes.push(format!("{line} = 1")),
            }
            continue;
        }
        let (key, _) = line.split_once(" = ").unwrap_or((line, ""));
        match edit {
            Edit::Replace(v) if !pool.is_empty() => lines.push(format!("{key} = {}", pick(pool, v))),
            Edit::Drop if !line.starts_with('[') && line != "NODES" => {}
            Edit::Double if line != "NODES" => lines.extend([line.to_string(), line.to_string()]),
            Edit::Unknown => lines.extend([line.to_string(), "colour = \"red\"".to_string()]),
            _ => lines.push(line.to_string()),
        }
    }
    let mut out = String::new();
    for l in lines {
        let l = if l == "NODES" { format!("nodes = {{ {} }}", nodes.join(", ")) } else { l };
        out.push_str(&l);
        out.push('\n');
    }
    for (verb, at, needed, extras) in &g.faults {
        let verb = VERBS[*verb];
        out.push_str(&format!("\n[[fault]]\nat = {}\nverb = \"{verb}\"\n", ["\"0s\"", "\"100ms\"", "\"200ms\"", "\"10s\""][*at]));
        let mut fields: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
        if *needed {
            fields.extend(needs(verb).iter().map(|(k, v)| (*k, v.to_string())));
        }
        for (f, v) in extras {
            let (name, pool) = FAULT_FIELDS[*f];
            fields.insert(name, pick(pool, *v));
        }
        for (name, value) in fields {
            out.push_str(&format!("{name} = {value}\n"));
        }
    }
    out
}

#[test]
fn generated_scenarios_are_refused_at_a_line_or_run_within_the_bounds() {
    let config = Config { cases: SCENARIO_CASES, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let accepted = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&gen(), |g| {
            let text = render(&g);
            if scenario_holds("gen.toml", text.as_bytes()) {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // The generator must reach both sides: runs, and refusals.
    let accepted = accepted.into_inner();
    eprintln!("{accepted} of {SCENARIO_CASES} generated scenarios accepted and run");
    assert!((SCENARIO_CASES / 10..SCENARIO_CASES * 9 / 10).contains(&accepted), "{accepted} of {SCENARIO_CASES} accepted");
}

// ----- generated histories -----

/// One entry, to be given its index and time: its type, process, op,
/// phase and a corruption (0: cut in half, 1: a negative process, 2: a
/// comment instead, else none).
fn history_entry() -> impl Strategy<Value = (&'static str, u64, String, &'static str, u8)> {
    let op = prop_oneof![
        (0u8..3, 0u8..4).prop_map(|(k, v)| format!("{{\"f\":\"write\",\"key\":\"k{k}\",\"value\":\"v{v}\"}}")),
        (0u8..3, prop::option::of(0u8..4)).prop_map(|(k, v)| format!("{{\"f\":\"read\",\"key\":\"k{k}\",\"value\":{}}}", v.map_or("null".into(), |v| format!("\"v{v}\"")))),
        (0u8..3, prop::option::of(0u8..4), 0u8..4).prop_map(|(k, e, v)| format!(
            "{{\"f\":\"cas\",\"key\":\"k{k}\",\"expected\":{},\"value\":\"v{v}\"}}",
            e.map_or("null".into(), |e| format!("\"v{e}\""))
        )),
        (0u8..3).prop_map(|k| format!("{{\"f\":\"delete\",\"key\":\"k{k}\"}}")),
        (0u8..2, prop::option::of(0u64..5)).prop_map(|(p, s)| format!("{{\"f\":\"append\",\"pkey\":\"u{p}\",\"seq\":{}}}", s.map_or("null".into(), |s| s.to_string()))),
        Just("{\"f\":\"teleport\"}".to_string()),
    ];
    let kind = prop_oneof![4 => Just("invoke"), 3 => Just("ok"), 1 => Just("fail"), 1 => Just("info"), 1 => Just("maybe")];
    let phase = prop_oneof![6 => Just("main"), 2 => Just("final"), 1 => Just("later")];
    (kind, 0u64..4, op, phase, 0u8..30)
}

#[test]
fn generated_histories_are_refused_at_a_line_or_checked() {
    let config = Config { cases: HISTORY_CASES, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let entries = prop::collection::vec((history_entry(), 0u64..50), 0..24);
    runner
        .run(&(entries, any::<bool>()), |(entries, in_order)| {
            // Indices count the entries; times are in order, or not.
            let mut text = String::new();
            for (index, ((kind, process, op, phase, noise), time)) in entries.iter().enumerate() {
                let time = if in_order { index as u64 * 10 } else { time * 10 };
                let line = format!("{{\"index\":{index},\"type\":\"{kind}\",\"process\":{process},\"time_ns\":{time},\"op\":{op},\"phase\":\"{phase}\"}}");
                let line = match noise {
                    0 => line[..line.len() / 2].to_string(),
                    1 => line.replace("\"process\":", "\"process\":-"),
                    2 => "# a comment".into(),
                    _ => line,
                };
                text.push_str(&line);
                text.push('\n');
            }
            history_holds("gen.jsonl", &text);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
