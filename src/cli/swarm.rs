//! Swarm testing: each seed draws its own fault mix for a scenario, so
//! that a sweep explores mixes no file spells out (as FoundationDB's
//! simulator turns fault sites on in some runs and off in others, and
//! TigerBeetle's VOPR draws every knob from the seed).
//!
//! The draw replaces the scenario's `[[fault]]` entries with 1 to
//! [`SWARM_FAULTS_MAX`] faults of the kinds in [`SWARM_VERBS`] (but those
//! the service cannot feel, `ServiceRules::untouched_by`), at random
//! times, targets and strengths, and scales each workload's rate by 0.5 to
//! 1.5. It keeps the scenario's expectations of safety (nothing
//! acknowledged lost, linearizable, sequences, replicas agreeing, liveness
//! after the heal) and drops those that price a particular fault
//! ([`SWARM_DROPPED_EXPECTATIONS`]): a random mix may take two zones at once,
//! where no availability floor written for one fault holds. Every fault
//! must still take effect (`faults_take_effect`). The drawn
//! scenario is ordinary TOML: written beside the report, it replays
//! without `--swarm` and can be kept as a scenario file.

use std::collections::BTreeMap;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::scenario::Scenario;

/// The most faults one draw holds.
pub const SWARM_FAULTS_MAX: usize = 4;
/// The shortest window of a drawn `disk-faults`.
pub const DISK_FAULT_WINDOW_MIN_MS: u64 = 1_000;
/// Attempts to place a fault that does not clash with those drawn before.
pub const SWARM_PLACE_ATTEMPTS_MAX: usize = 32;
/// The verbs a swarm draws from.
pub const SWARM_VERBS: &[&str] = &["zone-crash", "zone-isolate", "node-crash", "node-pause", "partition", "clog", "loss", "latency-spike", "disk-faults", "clock-offset", "clock-drift", "cpu-slow"];
/// Expectations that price one particular fault: a drawn mix drops them.
pub const SWARM_DROPPED_EXPECTATIONS: &[&str] = &[
    "max_unavailability",
    "min_availability",
    "max_append_stall",
    "max_time_to_recover",
    "min_recovered_goodput",
    "recovery_window",
    "min_master_takeovers",
    "min_replicas_repaired",
    "rereplicated",
    "max_read_fallbacks_after_heal",
    "max_repairs_per_replica",
];

/// One drawn fault, for the clash check: its window and what it holds.
struct Placed {
    from_ms: u64,
    until_ms: u64,
    /// Zones whose nodes it stops (zone and node verbs).
    stops: Vec<String>,
    /// Zones whose links or nodes it acts on without stopping them: a
    /// stop there at the same time would hide it (a cut message is never
    /// delayed, a dead node reads no clock).
    touches: Vec<String>,
    /// The world's key for it (a second one with the same key at the same
    /// time would be refused).
    key: String,
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

fn ms(v: u64) -> toml::Value {
    toml::Value::String(format!("{v}ms"))
}

/// Draws a scenario for `seed` from `text`, the scenario file `scn` was
/// read from. Errors name what in the file cannot be swarmed.
pub fn draw(text: &str, scn: &Scenario, seed: u64) -> Result<String, String> {
    let mut doc: toml::Table = text.parse().map_err(|e| format!("the scenario file does not parse again: {e}"))?;
    // The scenario's name picks the stream: scenarios that share a topology
    // and a duration, swept over one seed range, draw different mixes.
    let mut rng = sim::rng::stream(seed, &format!("swarm {}", scn.name));
    let duration_ms = scn.duration.as_millis() as u64;
    if duration_ms < 2_000 {
        return Err(format!("a swarm needs a main phase of at least 2s to place faults in, not {}", sim::time::fmt_duration(scn.duration)));
    }
    let zones: Vec<String> = doc.get("topology").and_then(|t| t.get("zones")).and_then(|z| z.as_array()).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
    if zones.len() < 2 {
        return Err("a swarm needs at least two zones".into());
    }
    let servers: Vec<(String, String)> = scn.topology.nodes().iter().filter(|n| n.role != "client").map(|n| (n.name.clone(), zones.get(n.zone.0 as usize).cloned().unwrap_or_default())).collect();
    if servers.is_empty() {
        return Err("a swarm needs server nodes to fault".into());
    }
    let untouched = crate::run::deploy::catalog::rules().into_iter().find(|r| r.kind() == scn.service.kind()).map_or_else(Vec::new, |r| r.untouched_by());
    let roles: BTreeMap<&str, &str> = scn.topology.nodes().iter().map(|n| (n.name.as_str(), n.role.as_str())).collect();
    // The servers a node verb can touch (the service reads no clock on
    // some roles, writes no disk on others).
    let able = |verb: &str| -> Vec<(String, String)> { servers.iter().filter(|(n, _)| !untouched.iter().any(|&(v, r)| v == verb && (r == "*" || roles.get(n.as_str()) == Some(&r)))).cloned().collect() };
    let verbs: Vec<&str> = SWARM_VERBS.iter().copied().filter(|v| !matches!(*v, "disk-faults" | "clock-offset" | "clock-drift" | "cpu-slow") || !able(v).is_empty()).collect();
    let count = rng.random_range(1..=SWARM_FAULTS_MAX);
    let mut placed: Vec<Placed> = Vec::new();
    let mut faults = Vec::new();
    for _ in 0..count {
        for _ in 0..SWARM_PLACE_ATTEMPTS_MAX {
            let verb = *pick(&mut rng, &verbs);
            let from_ms = rng.random_range(500..=duration_ms * 6 / 10);
            let len = rng.random_range(300..=(duration_ms * 3 / 10).clamp(301, 4_000));
            let mut until_ms = (from_ms + len).min(duration_ms - 100);
            let mut f = toml::Table::new();
            f.insert("at".into(), ms(from_ms));
            f.insert("until".into(), ms(until_ms));
            let (stops, touches, key) = match verb {
                "zone-crash" | "zone-isolate" => {
                    let z = pick(&mut rng, &zones).clone();
                    f.insert("verb".into(), "zone-down".into());
                    f.insert("target".into(), z.clone().into());
                    f.insert("mode".into(), (if verb == "zone-crash" { "crash" } else { "isolate" }).into());
                    (vec![z.clone()], Vec::new(), format!("zone:{z}"))
                }
                "node-crash" | "node-pause" => {
                    let (n, z) = pick(&mut rng, &servers).clone();
                    f.insert("verb".into(), verb.into());
                    f.insert("target".into(), n.clone().into());
                    (vec![z], Vec::new(), format!("node:{n}"))
                }
                "partition" | "clog" | "loss" | "latency-spike" => {
                    let a = pick(&mut rng, &zones).clone();
                    let others: Vec<String> = zones.iter().filter(|z| **z != a).cloned().collect();
                    let b = pick(&mut rng, &others).clone();
                    f.insert("verb".into(), verb.into());
                    f.insert("from".into(), a.clone().into());
                    f.insert("to".into(), b.clone().into());
                    match verb {
                        "loss" => {
                            f.insert("rate".into(), toml::Value::Float((rng.random_range(5..=50) as f64) / 100.0));
                        }
                        "latency-spike" => {
                            f.insert("extra".into(), ms(rng.random_range(1..=50)));
                        }
                        _ => {}
                    }
                    // One link fault on one pair of zones at a time: a cut
                    // link hides a loss or a delay on it.
                    let (lo, hi) = if a < b { (&a, &b) } else { (&b, &a) };
                    let key = format!("link:{lo}|{hi}");
                    (Vec::new(), vec![a, b], key)
                }
                "disk-faults" => {
                    let (n, z) = pick(&mut rng, &able(verb)).clone();
                    f.insert("verb".into(), verb.into());
                    f.insert("target".into(), n.clone().into());
                    // Rates fail operations only as the node does them: a
                    // node that writes a few records a second needs a
                    // window of a second or more and rates of a few percent
                    // for the fault to fail any.
                    until_ms = until_ms.max(from_ms + DISK_FAULT_WINDOW_MIN_MS).min(duration_ms - 100);
                    f.insert("until".into(), ms(until_ms));
                    f.insert("read_error_rate".into(), toml::Value::Float(rng.random_range(5..=25) as f64 / 100.0));
                    f.insert("write_error_rate".into(), toml::Value::Float(rng.random_range(5..=25) as f64 / 100.0));
                    if rng.random_bool(0.5) {
                        f.insert("bitflip_read_rate".into(), toml::Value::Float(rng.random_range(1..=20) as f64 / 1000.0));
                    }
                    (Vec::new(), vec![z], format!("disk:{n}"))
                }
                "clock-offset" | "clock-drift" => {
                    let (n, z) = pick(&mut rng, &able(verb)).clone();
                    f.insert("verb".into(), verb.into());
                    f.insert("target".into(), n.clone().into());
                    let sign = if rng.random_bool(0.5) { "-" } else { "" };
                    if verb == "clock-offset" {
                        f.insert("offset".into(), toml::Value::String(format!("{sign}{}ms", rng.random_range(20..=2_000))));
                    } else {
                        let ppm: i64 = rng.random_range(1_000..=100_000);
                        f.insert("ppm".into(), toml::Value::Integer(if sign.is_empty() { ppm } else { -ppm }));
                    }
                    // Both verbs end with a clock reset of the node.
                    (Vec::new(), vec![z], format!("clock:{n}"))
                }
                _ => {
                    let (n, z) = pick(&mut rng, &able(verb)).clone();
                    f.insert("verb".into(), "cpu-slow".into());
                    f.insert("target".into(), n.clone().into());
                    f.insert("speed".into(), toml::Value::Float(rng.random_range(10..=60) as f64 / 100.0));
                    (Vec::new(), vec![z], format!("cpu:{n}"))
                }
            };
            let overlaps = |p: &Placed| p.from_ms < until_ms + 100 && from_ms < p.until_ms + 100;
            // The same rule twice at once, a node or zone stopped twice at
            // once (the world refuses the second), or a fault hidden by a
            // stop of its zone, is drawn again.
            let meets = |a: &[String], b: &[String]| a.iter().any(|z| b.contains(z));
            let clash = placed.iter().any(|p| overlaps(p) && (p.key == key || meets(&p.stops, &stops) || meets(&p.stops, &touches) || meets(&p.touches, &stops)));
            if clash {
                continue;
            }
            placed.push(Placed { from_ms, until_ms, stops, touches, key });
            faults.push(toml::Value::Table(f));
            break;
        }
    }
    if faults.is_empty() {
        return Err("no fault could be placed".into());
    }
    faults.sort_by_key(|f| f.get("at").and_then(|v| v.as_str()).and_then(|s| s.trim_end_matches("ms").parse::<u64>().ok()).unwrap_or(0));
    doc.insert("fault".into(), toml::Value::Array(faults));
    if let Some(ws) = doc.get_mut("workload").and_then(|w| w.as_array_mut()) {
        for w in ws {
            if let Some(rate) = w.get("rate").and_then(|r| r.as_float().or_else(|| r.as_integer().map(|i| i as f64))) {
                let scale = rng.random_range(50..=150) as f64 / 100.0;
                if let Some(t) = w.as_table_mut() {
                    t.insert("rate".into(), toml::Value::Float((rate * scale).round().max(1.0)));
                }
            }
        }
    }
    if let Some(e) = doc.get_mut("expect").and_then(|e| e.as_table_mut()) {
        for name in SWARM_DROPPED_EXPECTATIONS {
            e.remove(*name);
        }
        // A mix that takes two zones at once stalls every closed-loop
        // client, so a fault window may see no new invocation although the
        // operations in flight met the fault: the check is off (it is on by
        // default), and `faults_take_effect` still proves each fault acted.
        e.insert("min_fault_window_ops".into(), toml::Value::Integer(0));
        // A file may excuse its own inert faults (a control); drawn ones
        // must all act.
        e.remove("faults_take_effect");
    }
    let name = format!("{}-swarm-{seed}", scn.name);
    doc.insert("name".into(), toml::Value::String(name));
    doc.insert("seed".into(), toml::Value::Integer(i64::try_from(seed).unwrap_or(i64::MAX)));
    let desc = format!("{} (swarm draw of seed {seed}: its faults and rates drawn, its expectations of safety kept)", scn.description);
    doc.insert("description".into(), toml::Value::String(desc.chars().take(crate::scenario::limits::DESCRIPTION_CHARS_MAX).collect()));
    toml::to_string(&doc).map_err(|e| format!("the drawn scenario does not serialise: {e}"))
}

/// Draws the scenario of `seed` from `text` (the file `scn` was read
/// from) and validates it as any scenario file, named `dest` in messages;
/// returns it and its TOML.
pub fn draw_scenario(text: &str, scn: &Scenario, seed: u64, dest: &std::path::Path) -> Result<(Scenario, String), String> {
    let drawn = draw(text, scn, seed)?;
    let parsed = crate::parse_scenario(dest, drawn.as_bytes()).map_err(|e| format!("the drawn scenario is refused (a swarm bug): {e}"))?;
    Ok((parsed, drawn))
}

/// Writes a drawn scenario's TOML to `dest`, making its folder.
pub fn write_draw(dest: &std::path::Path, drawn: &str) -> Result<(), String> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        #[allow(clippy::disallowed_methods)] // the CLI writes the drawn scenario for the user
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    #[allow(clippy::disallowed_methods)] // the CLI writes the drawn scenario for the user
    std::fs::write(dest, drawn).map_err(|e| format!("{}: {e}", dest.display()))
}

/// Draws the scenario of `seed` from the file at `path` (read as `scn`
/// was), writes it to `dest` and validates it as any scenario file.
pub fn draw_file(path: &std::path::Path, scn: &Scenario, seed: u64, dest: &std::path::Path) -> Result<(Scenario, std::path::PathBuf), String> {
    let bytes = crate::scenario::read_capped(path, crate::scenario::SCENARIO_BYTES_MAX as u64).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    let (scn, drawn) = draw_scenario(text, scn, seed, dest).map_err(|e| format!("{}: {e}", path.display()))?;
    write_draw(dest, &drawn)?;
    Ok((scn, dest.to_path_buf()))
}

/// How often each drawn verb had an effect, over a swarm sweep.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct VerbTally(pub BTreeMap<String, (u64, u64)>);

impl VerbTally {
    /// Counts the faults of one report: (fault text, had an effect).
    pub fn add<'a>(&mut self, faults: impl Iterator<Item = (&'a str, bool)>) {
        for (text, effect) in faults {
            let mut words = text.split_whitespace();
            let verb = words.next().unwrap_or("");
            // `zone-down az2 (crash)`: the mode is part of the kind; a
            // node verb counts by the node's role (`az2-proxy-0`: proxy).
            let role = words.next().filter(|_| matches!(verb, "node-crash" | "node-pause" | "disk-faults" | "clock-offset" | "clock-drift" | "cpu-slow")).and_then(|n| n.rsplit_once('-')).and_then(|(zr, _)| zr.split_once('-')).map(|(_, r)| r);
            let kind = match (verb, role) {
                ("zone-down", _) if text.ends_with("(crash)") => "zone-down crash".to_string(),
                ("zone-down", _) => "zone-down isolate".to_string(),
                (v, Some(r)) => format!("{v} on {r}"),
                (v, None) => v.to_string(),
            };
            let e = self.0.entry(kind).or_default();
            e.0 += 1;
            e.1 += u64::from(effect);
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(|(v, (n, e))| format!("  {v:<26} drawn {n:>6}  had an effect {e:>6}  ({:.1}%)", 100.0 * *e as f64 / (*n).max(1) as f64)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(file: &str) -> (String, Scenario) {
        let text = std::fs::read_to_string(file).unwrap();
        let scn = crate::parse_scenario(Path::new(file), text.as_bytes()).unwrap();
        (text, scn)
    }

    fn faults_of(drawn: &str) -> Vec<toml::Table> {
        let doc: toml::Table = drawn.parse().unwrap();
        doc["fault"].as_array().unwrap().iter().map(|f| f.as_table().unwrap().clone()).collect()
    }

    fn ms_of(v: &toml::Value) -> u64 {
        v.as_str().unwrap().trim_end_matches("ms").parse().unwrap()
    }

    #[test]
    fn a_draw_is_a_valid_scenario_that_the_seed_alone_decides() {
        for file in ["scenarios/table-zone-isolate.toml", "scenarios/stream-zone-crash.toml", "scenarios/zone-crash.toml"] {
            let (text, scn) = load(file);
            let mut distinct = std::collections::BTreeSet::new();
            for seed in 0..100 {
                let d = draw(&text, &scn, seed).unwrap();
                assert_eq!(d, draw(&text, &scn, seed).unwrap(), "{file} seed {seed} draws the same twice");
                distinct.insert(d.clone());
                let drawn = crate::parse_scenario(Path::new("drawn.toml"), d.as_bytes()).unwrap_or_else(|e| panic!("{file} seed {seed}: {e}\n{d}"));
                assert_eq!((drawn.name.clone(), drawn.seed), (format!("{}-swarm-{seed}", scn.name), seed));
                let fs = faults_of(&d);
                assert!((1..=SWARM_FAULTS_MAX).contains(&fs.len()));
                for f in &fs {
                    let (at, until) = (ms_of(&f["at"]), ms_of(&f["until"]));
                    assert!(at >= 500 && at < until && until < scn.duration.as_millis() as u64, "{f:?}");
                }
                // Safety is kept; the prices of particular faults are dropped.
                let doc: toml::Table = d.parse().unwrap();
                let expect = doc["expect"].as_table().unwrap();
                let original: toml::Table = text.parse().unwrap();
                for k in original["expect"].as_table().unwrap().keys().filter(|k| *k != "min_fault_window_ops") {
                    assert_eq!(expect.contains_key(k), !SWARM_DROPPED_EXPECTATIONS.contains(&k.as_str()), "{file}: {k}");
                }
                assert_eq!(expect["min_fault_window_ops"].as_integer(), Some(0));
                assert!(!expect.contains_key("faults_take_effect"), "{file}: every fault must act");
                assert!(!expect.is_empty());
            }
            assert!(distinct.len() >= 95, "{file}: seeds draw different mixes ({} distinct of 100)", distinct.len());
        }
    }

    #[test]
    fn scenarios_that_share_a_topology_draw_different_mixes_at_one_seed() {
        let (a_text, a) = load("scenarios/table-zone-isolate.toml");
        let (b_text, b) = load("scenarios/table-rolling-crashes.toml");
        assert_eq!((a.duration, a.topology.nodes().len()), (b.duration, b.topology.nodes().len()), "the two share a shape");
        let same = (0..50).filter(|&seed| faults_of(&draw(&a_text, &a, seed).unwrap()) == faults_of(&draw(&b_text, &b, seed).unwrap())).count();
        assert!(same <= 2, "{same} of 50 seeds drew the same faults for both");
    }

    #[test]
    fn a_draw_spares_what_the_service_cannot_feel_and_hides_no_fault_behind_another() {
        let (text, scn) = load("scenarios/table-zone-isolate.toml");
        let (ktext, kscn) = load("scenarios/zone-crash.toml");
        let mut verbs = std::collections::BTreeSet::new();
        for seed in 0..300 {
            for f in faults_of(&draw(&ktext, &kscn, seed).unwrap()) {
                let v = f["verb"].as_str().unwrap();
                assert!(!["clock-offset", "clock-drift", "cpu-slow"].contains(&v), "minikv reads no clock and runs no CPU model: seed {seed} drew {v}");
            }
            let fs = faults_of(&draw(&text, &scn, seed).unwrap());
            for f in &fs {
                let v = f["verb"].as_str().unwrap().to_string();
                let target = f.get("target").and_then(|t| t.as_str()).unwrap_or("");
                if v.starts_with("clock") {
                    assert!(!target.contains("-storage-") && !target.contains("-proxy-") && !target.contains("-manager-"), "seed {seed}: {v} on {target}");
                }
                if v == "cpu-slow" {
                    assert!(!target.contains("-master-"), "seed {seed}: {v} on {target}");
                }
                if v == "disk-faults" {
                    assert!(!target.contains("-proxy-") && !target.contains("-table-") && !target.contains("-master-"), "seed {seed}: {v} on {target}");
                    let (at, until) = (ms_of(&f["at"]), ms_of(&f["until"]));
                    assert!(until - at >= DISK_FAULT_WINDOW_MIN_MS || until == scn.duration.as_millis() as u64 - 100, "seed {seed}: a disk fault of {}ms", until - at);
                    assert!(f["read_error_rate"].as_float().unwrap() >= 0.05);
                }
                verbs.insert(v);
            }
            // Two faults on one link, or a link fault while one of its zones
            // is down, never overlap.
            let zone_of = |f: &toml::Table, k: &str| f.get(k).and_then(|v| v.as_str()).map(str::to_string);
            for (i, a) in fs.iter().enumerate() {
                for b in &fs[i + 1..] {
                    let overlap = ms_of(&a["at"]) < ms_of(&b["until"]) + 100 && ms_of(&b["at"]) < ms_of(&a["until"]) + 100;
                    let link = |f: &toml::Table| zone_of(f, "from").map(|x| (x, zone_of(f, "to").unwrap()));
                    let down = |f: &toml::Table| (f["verb"].as_str() == Some("zone-down")).then(|| zone_of(f, "target").unwrap());
                    if !overlap {
                        continue;
                    }
                    if let (Some((p, q)), Some((r, s))) = (link(a), link(b)) {
                        assert!(!((p == r && q == s) || (p == s && q == r)), "seed {seed}: two faults on one link at once");
                    }
                    for (l, d) in [(link(a), down(b)), (link(b), down(a))] {
                        if let (Some((p, q)), Some(z)) = (l, d) {
                            assert!(p != z && q != z, "seed {seed}: a link fault hidden by its zone's outage");
                        }
                    }
                }
            }
        }
        for v in ["zone-down", "node-crash", "node-pause", "partition", "clog", "loss", "latency-spike", "disk-faults", "clock-offset", "clock-drift", "cpu-slow"] {
            assert!(verbs.contains(v), "300 draws never drew {v}");
        }
    }

    #[test]
    fn the_tally_counts_by_verb_and_role() {
        let mut t = VerbTally::default();
        t.add([("zone-down az2 (crash)", true), ("zone-down az2 (isolate)", false), ("clock-drift az2-proxy-0 5ppm", false), ("clock-drift az1-table-1 5ppm", true), ("loss az1 <-> az2 0.1", true)].into_iter());
        assert_eq!(t.0["zone-down crash"], (1, 1));
        assert_eq!(t.0["zone-down isolate"], (1, 0));
        assert_eq!(t.0["clock-drift on proxy"], (1, 0));
        assert_eq!(t.0["clock-drift on table"], (1, 1));
        assert_eq!(t.0["loss"], (1, 1));
    }
}
