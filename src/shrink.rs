//! Shrinking a failing run: a search for a smaller scenario that fails the
//! same way (the same expectation fails), as delta debugging does for
//! inputs. The search works on the scenario's TOML document, so whatever
//! it finds is an ordinary scenario file.
//!
//! Each round lists the candidate reductions of the current scenario,
//! biggest first: without its faults (all, half, one at a time), without a
//! hotspot or a workload, a shorter run, fewer client processes, a lower
//! rate, fewer keys, fewer kinds of operation, shorter and later fault
//! windows, fewer nodes of a role. The judge runs them (in batches, so the
//! caller may run a batch in parallel); the first in list order that still
//! fails the target is taken, and the next round goes on from the same
//! place in its list. When no candidate fails at the current seed, each of
//! the next `nearby` seeds is tried in turn (a changed scenario moves the
//! random streams, so a failure may need another seed to show). The search
//! stops at a fixed point or after `max_runs` runs.
//!
//! Every candidate lowers some knob that cannot fall below its floor, so
//! the search ends; and since a batch is read in list order, the result
//! does not depend on the batch size (only the number of runs spent does).

use std::time::Duration;

use toml::{Table, Value};

/// Runs the search may spend by default.
pub const SHRINK_RUNS_DEFAULT: u64 = 400;
/// The most runs a search may be given.
pub const SHRINK_RUNS_MAX: u64 = 100_000;
/// Nearby seeds tried by default when no candidate fails at the current one.
pub const SHRINK_NEARBY_DEFAULT: u64 = 2;
/// The most nearby seeds a search may try.
pub const SHRINK_NEARBY_MAX: u64 = 100;
/// The shortest run a search proposes.
pub const DURATION_FLOOR: Duration = Duration::from_millis(500);
/// The shortest fault window a search proposes.
pub const WINDOW_FLOOR: Duration = Duration::from_millis(10);
/// The name a run that panicked fails (it judged no expectation).
pub const PANICKED: &str = "panicked";

/// How big a run was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size {
    pub faults: u64,
    /// Operations in the history (every phase).
    pub operations: u64,
    pub simulated_ns: u64,
    pub events: u64,
    /// Client processes over every workload.
    pub clients: u64,
}

/// What one run of a candidate gave: the expectations it failed (in
/// report order; [`PANICKED`] if it panicked) and its size.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub failed: Vec<String>,
    pub size: Size,
}

/// One reduction the search kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub change: String,
    pub seed: u64,
    pub size: Size,
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_runs: u64,
    pub nearby: u64,
    /// Candidates handed to the judge at once (at least 1).
    pub batch: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_runs: SHRINK_RUNS_DEFAULT, nearby: SHRINK_NEARBY_DEFAULT, batch: 1 }
    }
}

#[derive(Clone, Debug)]
pub struct Shrunk {
    pub doc: Table,
    pub seed: u64,
    pub before: Size,
    pub after: Size,
    pub steps: Vec<Step>,
    /// Runs spent (the original run not counted).
    pub runs: u64,
    /// The run budget ran out before a fixed point.
    pub exhausted: bool,
}

/// The expectation a shrink keeps failing: `wanted` if given (it must be
/// among `failed`), else the first failed checker verdict, else the first
/// failed expectation.
pub fn target(failed: &[String], wanted: Option<&str>) -> Result<String, String> {
    if failed.is_empty() {
        return Err("the run passes: there is no failure to shrink".into());
    }
    match wanted {
        Some(w) if failed.iter().any(|f| f == w) => Ok(w.to_string()),
        Some(w) => Err(format!("the run does not fail `{w}` (it fails {})", failed.join(", "))),
        None => {
            const VERDICTS: &[&str] = &[PANICKED, "lost_acked_writes", "linearizable", "sequence_ok", "streams_ok", "live"];
            Ok(failed.iter().find(|f| VERDICTS.contains(&f.as_str())).unwrap_or(&failed[0]).clone())
        }
    }
}

/// Runs a batch of (scenario, seed) pairs: one outcome per pair, `None`
/// for a candidate that is refused (not a valid scenario).
pub type Judge<'a> = dyn FnMut(&[(Table, u64)]) -> Vec<Option<Outcome>> + 'a;

/// Searches for a smaller scenario than `doc` (failing `target` at `seed`
/// with size `start`) that still fails `target`, running candidates with
/// `judge`.
pub fn shrink(doc: Table, seed: u64, target: &str, start: Size, limits: &Limits, judge: &mut Judge<'_>) -> Shrunk {
    let batch = limits.batch.max(1);
    let mut cur = doc;
    let mut cur_seed = seed;
    let mut size = start;
    let mut steps = Vec::new();
    let mut runs = 0u64;
    let mut resume = 0usize;
    let seeds_of = |s: u64| -> Vec<u64> { std::iter::once(s).chain((1..=limits.nearby).filter_map(|d| s.checked_add(d))).collect() };
    'search: loop {
        let mut cands = candidates(&cur);
        let at = resume.min(cands.len());
        cands.rotate_left(at);
        for s in seeds_of(cur_seed) {
            for (c, chunk) in cands.chunks(batch).enumerate() {
                let room = limits.max_runs.saturating_sub(runs);
                if room == 0 {
                    return Shrunk { doc: cur, seed: cur_seed, before: start, after: size, steps, runs, exhausted: true };
                }
                let chunk = &chunk[..chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
                let pairs: Vec<(Table, u64)> = chunk.iter().map(|(_, d)| (d.clone(), s)).collect();
                let outs = judge(&pairs);
                assert_eq!(outs.len(), pairs.len(), "the judge answers every candidate of a batch");
                runs += pairs.len() as u64;
                let hit = outs.into_iter().enumerate().find_map(|(i, o)| o.filter(|o| o.failed.iter().any(|f| f == target)).map(|o| (i, o)));
                if let Some((i, o)) = hit {
                    let (change, doc) = chunk[i].clone();
                    steps.push(Step { change, seed: s, size: o.size });
                    cur = doc;
                    cur_seed = s;
                    size = o.size;
                    resume = (at + c * batch + i) % cands.len().max(1);
                    continue 'search;
                }
            }
        }
        return Shrunk { doc: cur, seed: cur_seed, before: start, after: size, steps, runs, exhausted: false };
    }
}

/// The `[[fault]]` entries of a scenario document.
pub fn fault_count(doc: &Table) -> u64 {
    array(doc, "fault").len() as u64
}

fn dur_of(v: Option<&Value>) -> Option<Duration> {
    sim::time::parse_duration(v?.as_str()?).ok()
}

/// A duration as scenario text, to the microsecond.
fn dur_text(d: Duration) -> Value {
    let us = d.as_micros();
    Value::String(if us % 1000 == 0 { format!("{}ms", us / 1000) } else { format!("{us}us") })
}

fn array<'a>(doc: &'a Table, key: &str) -> &'a [Value] {
    doc.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// How a fault reads in a change's description: `zone-down az2`.
fn fault_name(f: &Value) -> String {
    let s = |k: &str| f.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
    let mut out = s("verb").unwrap_or_else(|| "?".into());
    if let Some(t) = s("target") {
        out += &format!(" {t}");
    }
    if let (Some(a), Some(b)) = (s("from"), s("to")) {
        out += &format!(" {a} -> {b}");
    }
    if let Some(at) = s("at") {
        out += &format!(" at {at}");
    }
    out
}

fn with_array(doc: &Table, key: &str, items: Vec<Value>) -> Table {
    let mut d = doc.clone();
    if items.is_empty() {
        d.remove(key);
    } else {
        d.insert(key.into(), Value::Array(items));
    }
    d
}

fn without(doc: &Table, key: &str, drop: impl Fn(usize) -> bool) -> Table {
    let kept = array(doc, key).iter().enumerate().filter(|(i, _)| !drop(*i)).map(|(_, v)| v.clone()).collect();
    with_array(doc, key, kept)
}

fn edit_item(doc: &Table, key: &str, i: usize, edit: impl FnOnce(&mut Table)) -> Table {
    let mut items = array(doc, key).to_vec();
    if let Some(t) = items.get_mut(i).and_then(Value::as_table_mut) {
        edit(t);
    }
    with_array(doc, key, items)
}

/// The doc with its run `to` long: faults and hotspots that would start
/// after the end are dropped, windows that would end after it end with it.
fn shortened(doc: &Table, to: Duration) -> Table {
    let mut d = doc.clone();
    d.insert("duration".into(), dur_text(to));
    for key in ["fault", "hotspot"] {
        let kept: Vec<Value> = array(&d, key)
            .iter()
            .filter(|f| dur_of(f.get("at")).is_none_or(|at| at < to))
            .map(|f| {
                let mut f = f.clone();
                if let Some(t) = f.as_table_mut() {
                    if dur_of(t.get("until")).is_some_and(|u| u > to) {
                        t.insert("until".into(), dur_text(to));
                    }
                }
                f
            })
            .collect();
        d = with_array(&d, key, kept);
    }
    d
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
}

/// The candidate reductions of `doc`, biggest first, each with what it
/// changes.
pub fn candidates(doc: &Table) -> Vec<(String, Table)> {
    let mut out: Vec<(String, Table)> = Vec::new();
    let faults = array(doc, "fault");
    let n = faults.len();
    if n > 0 {
        out.push((format!("without its {n} fault{}", if n == 1 { "" } else { "s" }), without(doc, "fault", |_| true)));
    }
    if n >= 4 {
        out.push((format!("without faults 1 to {}", n / 2), without(doc, "fault", |i| i < n / 2)));
        out.push((format!("without faults {} to {n}", n / 2 + 1), without(doc, "fault", |i| i >= n / 2)));
    }
    if n >= 2 {
        for (i, f) in faults.iter().enumerate() {
            out.push((format!("without fault {} ({})", i + 1, fault_name(f)), without(doc, "fault", |j| j == i)));
        }
    }
    for (i, h) in array(doc, "hotspot").iter().enumerate() {
        let what = h.get("key").or_else(|| h.get("keys")).map_or_else(String::new, |k| format!(" ({k})"));
        out.push((format!("without hotspot {}{what}", i + 1), without(doc, "hotspot", |j| j == i)));
    }
    let workloads = array(doc, "workload");
    if workloads.len() >= 2 {
        for (i, w) in workloads.iter().enumerate() {
            let name = w.get("name").and_then(Value::as_str).unwrap_or("?");
            out.push((format!("without workload `{name}`"), without(doc, "workload", |j| j == i)));
        }
    }
    if let Some(d) = dur_of(doc.get("duration")) {
        for (num, den, said) in [(1, 2, "half as long"), (3, 4, "a quarter shorter")] {
            let to = Duration::from_micros((d.as_micros() * num / den) as u64);
            if to >= DURATION_FLOOR && to < d {
                out.push((format!("a run {said} ({})", sim::time::fmt_duration(to)), shortened(doc, to)));
            }
        }
    }
    for (i, w) in workloads.iter().enumerate() {
        let name = w.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        if let Some(c) = w.get("clients").and_then(Value::as_integer).filter(|&c| c > 1) {
            out.push((format!("workload `{name}`: {} clients, not {c}", c / 2), edit_item(doc, "workload", i, |t| {
                t.insert("clients".into(), Value::Integer(c / 2));
            })));
        }
        if let Some(r) = number(w.get("rate")).filter(|&r| r >= 2.0) {
            let half = (r / 2.0).round();
            out.push((format!("workload `{name}`: rate {half}, not {r}"), edit_item(doc, "workload", i, |t| {
                t.insert("rate".into(), Value::Float(half));
            })));
        }
        if let Some(k) = w.get("keys").and_then(Value::as_integer).filter(|&k| k > 1) {
            out.push((format!("workload `{name}`: {} keys, not {k}", k / 2), edit_item(doc, "workload", i, |t| {
                t.insert("keys".into(), Value::Integer(k / 2));
            })));
        }
        if let Some(mix) = w.get("mix").and_then(Value::as_table) {
            let used: Vec<&String> = mix.iter().filter(|(_, v)| number(Some(v)).is_some_and(|x| x > 0.0)).map(|(k, _)| k).collect();
            if used.len() >= 2 {
                for kind in used {
                    out.push((format!("workload `{name}`: no {kind}"), edit_item(doc, "workload", i, |t| {
                        if let Some(m) = t.get_mut("mix").and_then(Value::as_table_mut) {
                            m.remove(kind.as_str());
                        }
                    })));
                }
            }
        }
    }
    let end = dur_of(doc.get("duration"));
    for (i, f) in faults.iter().enumerate() {
        let (Some(at), until) = (dur_of(f.get("at")), dur_of(f.get("until"))) else { continue };
        let until = until.or(end.filter(|e| *e > at));
        let Some(until) = until else { continue };
        let len = until - at;
        if len / 2 >= WINDOW_FLOOR {
            // Whole milliseconds: the window still shrinks (by 10 ms at least).
            let mid = Duration::from_millis((at + len / 2).as_millis() as u64);
            let name = fault_name(f);
            out.push((format!("fault {} ({name}) half as long", i + 1), edit_item(doc, "fault", i, |t| {
                t.insert("until".into(), dur_text(mid));
            })));
            out.push((format!("fault {} ({name}) starts half its window later", i + 1), edit_item(doc, "fault", i, |t| {
                t.insert("at".into(), dur_text(mid));
                t.insert("until".into(), dur_text(until));
            })));
        }
    }
    if let Some(nodes) = doc.get("topology").and_then(|t| t.get("nodes")).and_then(Value::as_table) {
        for (role, count) in nodes {
            if let Some(c) = count.as_integer().filter(|&c| c > 1) {
                let mut d = doc.clone();
                if let Some(ns) = d.get_mut("topology").and_then(|t| t.get_mut("nodes")).and_then(Value::as_table_mut) {
                    ns.insert(role.clone(), Value::Integer(c - 1));
                }
                out.push((format!("{} {role} node{} per zone, not {c}", c - 1, if c - 1 == 1 { "" } else { "s" }), d));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
name = "x"
description = "d"
duration = "8s"
[topology]
zones = ["a", "b", "c"]
nodes = { kv = 2, client = 2 }
[[workload]]
name = "kv"
clients = 16
rate = 1000
keys = 64
mix = { read = 0.5, write = 0.4, delete = 0.1 }
[[fault]]
at = "1s"
until = "3s"
verb = "zone-down"
target = "b"
[[fault]]
at = "2s"
until = "4s"
verb = "loss"
from = "a"
to = "c"
[[fault]]
at = "5s"
until = "7s"
verb = "node-pause"
target = "a-kv-0"
[[fault]]
at = "6s"
verb = "latency-spike"
from = "a"
to = "b"
"#;

    fn doc() -> Table {
        DOC.parse().unwrap()
    }

    fn fault_verbs(d: &Table) -> Vec<String> {
        array(d, "fault").iter().map(|f| f["verb"].as_str().unwrap().to_string()).collect()
    }

    /// A model of a bug: the run fails `lost_acked_writes` when a zone is
    /// down for at least `need` while at least `clients` run and the run
    /// lasts at least 2 s; its size follows the knobs.
    fn model(need: Duration, clients: i64) -> impl FnMut(&[(Table, u64)]) -> Vec<Option<Outcome>> {
        move |batch: &[(Table, u64)]| {
            batch
                .iter()
                .map(|(d, _)| {
                    let dur = dur_of(d.get("duration")).unwrap();
                    let c = array(d, "workload")[0]["clients"].as_integer().unwrap();
                    let rate = number(array(d, "workload")[0].get("rate")).unwrap();
                    let down = array(d, "fault").iter().any(|f| f["verb"].as_str() == Some("zone-down") && dur_of(f.get("until")).unwrap() - dur_of(f.get("at")).unwrap() >= need);
                    let fails = down && c >= clients && dur >= Duration::from_secs(2);
                    let size = Size { faults: array(d, "fault").len() as u64, operations: (rate * dur.as_secs_f64()) as u64, simulated_ns: dur.as_nanos() as u64, events: 0, clients: c as u64 };
                    Some(Outcome { failed: if fails { vec!["lost_acked_writes".into()] } else { Vec::new() }, size })
                })
                .collect()
        }
    }

    #[test]
    fn the_search_keeps_only_what_the_failure_needs_whatever_the_batch() {
        let start = Size { faults: 4, operations: 8000, simulated_ns: 8_000_000_000, events: 0, clients: 16 };
        let mut results = Vec::new();
        for batch in [1, 3, 8] {
            let mut judge = model(Duration::from_millis(400), 3);
            let s = shrink(doc(), 7, "lost_acked_writes", start, &Limits { max_runs: 10_000, nearby: 0, batch }, &mut judge);
            assert!(!s.exhausted);
            assert_eq!(fault_verbs(&s.doc), ["zone-down"], "only the fault the failure needs stays");
            let w = &array(&s.doc, "workload")[0];
            assert_eq!(w["clients"].as_integer(), Some(4), "16 halves to 4 (2 would pass)");
            assert_eq!(w["rate"].as_float(), Some(1.0));
            assert_eq!(w["keys"].as_integer(), Some(1));
            assert_eq!(w["mix"].as_table().unwrap().len(), 1, "one kind of operation is enough");
            let f = &array(&s.doc, "fault")[0];
            let len = dur_of(f.get("until")).unwrap() - dur_of(f.get("at")).unwrap();
            assert!(len >= Duration::from_millis(400) && len < Duration::from_millis(800), "the window shrank to near what the bug needs: {len:?}");
            let d = dur_of(s.doc.get("duration")).unwrap();
            assert!(d >= Duration::from_secs(2) && d < Duration::from_secs(4), "{d:?}");
            assert_eq!(s.doc["topology"]["nodes"]["client"].as_integer(), Some(1));
            assert!(s.after.operations * 4 <= s.before.operations);
            assert_eq!(s.steps.last().unwrap().size, s.after);
            results.push((toml::to_string(&s.doc).unwrap(), s.seed));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "the batch size changes the runs spent, never the result");
    }

    #[test]
    fn the_budget_stops_the_search_and_a_stuck_search_tries_nearby_seeds() {
        let start = Size::default();
        let mut judge = model(Duration::from_millis(400), 3);
        let s = shrink(doc(), 7, "lost_acked_writes", start, &Limits { max_runs: 5, nearby: 0, batch: 2 }, &mut judge);
        assert!(s.exhausted);
        assert_eq!(s.runs, 5);
        // A failure that shows only at odd seeds once a fault is gone.
        let mut calls: Vec<u64> = Vec::new();
        let mut judge = |batch: &[(Table, u64)]| -> Vec<Option<Outcome>> {
            batch
                .iter()
                .map(|(d, seed)| {
                    calls.push(*seed);
                    let n = array(d, "fault").len();
                    let fails = n == 4 || (n == 3 && seed % 2 == 1);
                    Some(Outcome { failed: if fails { vec!["linearizable".into()] } else { Vec::new() }, size: Size { faults: n as u64, ..Size::default() } })
                })
                .collect()
        };
        let only_faults = {
            let mut d = doc();
            d.remove("workload");
            d.remove("topology");
            d.insert("duration".into(), Value::String("1s".into()));
            for f in d.get_mut("fault").unwrap().as_array_mut().unwrap() {
                f.as_table_mut().unwrap().insert("until".into(), Value::String("1s".into()));
                f.as_table_mut().unwrap().insert("at".into(), Value::String("995ms".into()));
            }
            d
        };
        let s = shrink(only_faults, 10, "linearizable", start, &Limits { max_runs: 1000, nearby: 2, batch: 1 }, &mut judge);
        assert_eq!(array(&s.doc, "fault").len(), 3);
        assert_eq!(s.seed, 11, "the next seed shows the failure without one fault");
        assert!(calls.contains(&12), "and a stuck search tries the seed after it too");
    }

    #[test]
    fn a_target_is_the_named_expectation_or_the_first_failed_verdict() {
        let failed: Vec<String> = ["min_availability", "linearizable", "lost_acked_writes"].map(String::from).into();
        assert_eq!(target(&failed, None).unwrap(), "linearizable", "the first failed verdict in report order");
        assert_eq!(target(&failed, Some("min_availability")).unwrap(), "min_availability");
        assert!(target(&failed, Some("live")).unwrap_err().contains("does not fail `live`"));
        assert!(target(&[], None).is_err());
        assert_eq!(target(&["set_up".to_string()], None).unwrap(), "set_up");
    }

    #[test]
    fn a_shorter_run_drops_the_faults_after_its_end_and_ends_the_others_with_it() {
        let d = shortened(&doc(), Duration::from_millis(4500));
        assert_eq!(fault_verbs(&d), ["zone-down", "loss"]);
        let d = shortened(&doc(), Duration::from_millis(2500));
        assert_eq!(fault_verbs(&d), ["zone-down", "loss"]);
        assert_eq!(array(&d, "fault")[0]["until"].as_str(), Some("2500ms"));
        assert_eq!(array(&d, "fault")[1]["until"].as_str(), Some("2500ms"));
        assert_eq!(d["duration"].as_str(), Some("2500ms"));
    }
}
