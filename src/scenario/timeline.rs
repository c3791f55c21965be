//! The fault timeline: a `[[fault]]` entry's verb and its inverse, the
//! static replay that refuses contradictions, and the windows that pair
//! each fault with what undid it.

use std::collections::BTreeMap;

use serde_spanned::Spanned;
use sim::disk::DiskFaults;
use sim::fault::{Direction, Fault, ZoneMode};
use sim::topology::Topology;

use super::format::{FaultDef, Names};
use super::limits::{self, shown};
use sim::time::fmt_duration;
use super::model::{ScenarioError, TimedFault};
use super::service::DynamicTarget;

pub(super) type ErrFn<'a> = dyn Fn(std::ops::Range<usize>, String, String) -> ScenarioError + 'a;

/// The zone-down targets decided when their fault fires: those the
/// scenario's service offers, and every one any service offers (a target
/// of another service is refused by name, not as an unknown zone).
pub(super) struct Targets<'a> {
    pub own: &'a [DynamicTarget],
    pub all: Vec<DynamicTarget>,
}

impl Targets<'_> {
    pub fn is_own(&self, name: &str) -> bool {
        self.own.iter().any(|t| t.name == name)
    }

    pub fn known(&self, name: &str) -> Option<&DynamicTarget> {
        self.all.iter().find(|t| t.name == name)
    }
}

/// Every verb, and the fields beside `at`, `until` and `verb` it reads.
const VERBS: [(&str, &[&str]); 23] = [
    ("zone-down", &["target", "mode"]),
    ("zone-up", &["target"]),
    ("node-crash", &["target"]),
    ("node-restart", &["target"]),
    ("node-pause", &["target"]),
    ("node-resume", &["target"]),
    ("partition", &["from", "to", "direction"]),
    ("heal", &["from", "to", "direction"]),
    ("clog", &["from", "to"]),
    ("unclog", &["from", "to"]),
    ("loss", &["from", "to", "rate"]),
    ("loss-off", &["from", "to"]),
    ("latency-spike", &["from", "to", "extra"]),
    ("latency-clear", &["from", "to"]),
    ("disk-faults", &["target", "read_error_rate", "write_error_rate", "bitflip_read_rate", "bitflip_write_rate", "misdirect_rate", "full", "slow_factor"]),
    ("disk-faults-off", &["target"]),
    ("clock-offset", &["target", "offset"]),
    ("clock-drift", &["target", "ppm"]),
    ("clock-reset", &["target"]),
    ("cpu-slow", &["target", "speed"]),
    ("cpu-restore", &["target"]),
    ("node-add", &["target"]),
    ("node-drain", &["target"]),
];

/// The verb of a `[[fault]]` entry and, for entries with `until`, its inverse.
pub(super) fn fault_pair(topo: &Topology, fd: &FaultDef, i: usize, targets: &Targets<'_>, err: &ErrFn<'_>) -> Result<(Fault, Option<Fault>), ScenarioError> {
    let verb = fd.verb.get_ref().as_str();
    let field = |s: &str| format!("fault[{i}].{s}");
    let Some((_, reads)) = VERBS.iter().find(|(v, _)| *v == verb) else {
        let verbs: Vec<&str> = VERBS.iter().map(|(v, _)| *v).collect();
        return Err(err(fd.verb.span(), field("verb"), format!("unknown verb `{}` ({})", shown(verb), verbs.join(", "))));
    };
    if let Some((name, _)) = fd.optional_fields().into_iter().find(|(name, set)| *set && !reads.contains(name)) {
        let uses = if reads.is_empty() { "no other field".to_string() } else { reads.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ") };
        return Err(err(fd.verb.span(), field(name), format!("`{verb}` does not read `{name}` (it reads {uses})")));
    }
    for (name, set) in [("from", &fd.from), ("to", &fd.to)] {
        if let Some(s) = set.as_ref().filter(|s| s.get_ref().to_vec().len() > limits::FAULT_NAMES_MAX) {
            return Err(err(s.span(), field(name), format!("{} names: at most {}", s.get_ref().to_vec().len(), limits::FAULT_NAMES_MAX)));
        }
    }
    let zone_names: Vec<&str> = topo.zones().map(|z| topo.zone_name(z)).collect();
    let target = |want_zone: bool, want_node: bool| -> Result<String, ScenarioError> {
        let t = fd.target.as_ref().ok_or_else(|| err(fd.verb.span(), field("target"), format!("`{verb}` needs a `target`")))?;
        let name = t.get_ref();
        let is_zone = topo.zone_by_name(name).is_some();
        let is_node = topo.node_by_name(name).is_some();
        if (want_zone && is_zone) || (want_node && is_node) {
            return Ok(name.clone());
        }
        let what = match (want_zone, want_node) {
            (true, false) => format!("unknown zone `{}` (zones: {})", shown(name), zone_names.join(", ")),
            (false, true) => format!("unknown node `{}` (nodes are named zone-role-index, e.g. `{}`)", shown(name), topo.nodes()[0].name),
            _ => format!("unknown zone or node `{}`", shown(name)),
        };
        Err(err(t.span(), field("target"), what))
    };
    let set = |which: &Option<Spanned<Names>>, name: &str| -> Result<Vec<String>, ScenarioError> {
        let Some(s) = which else { return Ok(Vec::new()) };
        let v = s.get_ref().to_vec();
        for n in &v {
            if topo.zone_by_name(n).is_none() && topo.node_by_name(n).is_none() {
                return Err(err(s.span(), field(name), format!("unknown zone or node `{}` (zones: {})", shown(n), zone_names.join(", "))));
            }
        }
        Ok(v)
    };
    let prob = |p: &Option<Spanned<f64>>, name: &str| -> Result<f64, ScenarioError> {
        match p {
            None => Ok(0.0),
            Some(s) if (0.0..=1.0).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(err(s.span(), field(name), format!("{} is not a probability in [0, 1]", s.get_ref()))),
        }
    };
    let direction = match fd.direction.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
        None | Some(("both", _)) => Direction::Both,
        Some(("one-way", _)) => Direction::OneWay,
        Some((other, span)) => return Err(err(span, field("direction"), format!("unknown direction `{}` (both, one-way)", shown(other)))),
    };
    let (a, b) = (set(&fd.from, "from")?, set(&fd.to, "to")?);
    Ok(match verb {
        "zone-down" if fd.target.as_ref().is_some_and(|t| targets.known(t.get_ref()).is_some()) => {
            let dynamic = fd.target.as_ref().map(|t| t.get_ref().as_str()).unwrap_or_default();
            let span = fd.target.as_ref().map_or_else(|| fd.verb.span(), |t| t.span());
            if let (false, Some(known)) = (targets.is_own(dynamic), targets.known(dynamic)) {
                return Err(err(span, field("target"), format!("`{dynamic}` {}", known.offered_by)));
            }
            let mode = match fd.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("crash", _)) => ZoneMode::Crash,
                Some(("isolate", _)) => ZoneMode::Isolate,
                Some((other, span)) => return Err(err(span, field("mode"), format!("unknown mode `{}` (crash, isolate)", shown(other)))),
            };
            (Fault::ZoneDown { zone: dynamic.into(), mode }, Some(Fault::ZoneUp { zone: dynamic.into() }))
        }
        "zone-down" => {
            let zone = target(true, false)?;
            let mode = match fd.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("crash", _)) => ZoneMode::Crash,
                Some(("isolate", _)) => ZoneMode::Isolate,
                Some((other, span)) => return Err(err(span, field("mode"), format!("unknown mode `{}` (crash, isolate)", shown(other)))),
            };
            (Fault::ZoneDown { zone: zone.clone(), mode }, Some(Fault::ZoneUp { zone }))
        }
        "zone-up" => (Fault::ZoneUp { zone: target(true, false)? }, None),
        "node-crash" => {
            let node = target(false, true)?;
            (Fault::NodeCrash { node: node.clone() }, Some(Fault::NodeRestart { node }))
        }
        "node-restart" => (Fault::NodeRestart { node: target(false, true)? }, None),
        "node-pause" => {
            let node = target(false, true)?;
            (Fault::NodePause { node: node.clone() }, Some(Fault::NodeResume { node }))
        }
        "node-resume" => (Fault::NodeResume { node: target(false, true)? }, None),
        "partition" => (Fault::Partition { a: a.clone(), b: b.clone(), direction }, Some(Fault::Heal { a, b, direction })),
        "heal" => (Fault::Heal { a, b, direction }, None),
        "clog" => (Fault::Clog { a: a.clone(), b: b.clone() }, Some(Fault::Unclog { a, b })),
        "unclog" => (Fault::Unclog { a, b }, None),
        "loss" => {
            let rate = fd.rate.as_ref().ok_or_else(|| err(fd.verb.span(), field("rate"), "`loss` needs a `rate`".into()))?;
            let r = prob(&Some(rate.clone()), "rate")?;
            (Fault::Loss { a: a.clone(), b: b.clone(), rate: r }, Some(Fault::LossOff { a, b }))
        }
        "loss-off" => (Fault::LossOff { a, b }, None),
        "latency-spike" => {
            let extra = fd.extra.ok_or_else(|| err(fd.verb.span(), field("extra"), "`latency-spike` needs `extra` (e.g. \"5ms\")".into()))?.0;
            if extra > limits::LATENCY_MAX {
                return Err(err(fd.verb.span(), field("extra"), format!("{} is over the limit of {}", fmt_duration(extra), fmt_duration(limits::LATENCY_MAX))));
            }
            (Fault::LatencySpike { a: a.clone(), b: b.clone(), extra }, Some(Fault::LatencyClear { a, b }))
        }
        "latency-clear" => (Fault::LatencyClear { a, b }, None),
        "disk-faults" => {
            let node = target(false, true)?;
            let faults = DiskFaults {
                read_error_rate: prob(&fd.read_error_rate, "read_error_rate")?,
                write_error_rate: prob(&fd.write_error_rate, "write_error_rate")?,
                bitflip_read_rate: prob(&fd.bitflip_read_rate, "bitflip_read_rate")?,
                bitflip_write_rate: prob(&fd.bitflip_write_rate, "bitflip_write_rate")?,
                misdirect_rate: prob(&fd.misdirect_rate, "misdirect_rate")?,
                full: fd.full.unwrap_or(false),
                slow_factor: fd.slow_factor.unwrap_or(1),
            };
            if faults.slow_factor == 0 || faults.slow_factor > limits::DISK_SLOW_FACTOR_MAX {
                return Err(err(fd.verb.span(), field("slow_factor"), format!("{}: use 1 to {}", faults.slow_factor, limits::DISK_SLOW_FACTOR_MAX)));
            }
            if faults == (DiskFaults { slow_factor: 1, ..DiskFaults::default() }) {
                return Err(err(fd.verb.span(), field("verb"), "`disk-faults` sets no fault: give a rate, `full` or `slow_factor`".into()));
            }
            (Fault::DiskFaultsOn { node: node.clone(), faults }, Some(Fault::DiskFaultsOff { node }))
        }
        "disk-faults-off" => (Fault::DiskFaultsOff { node: target(false, true)? }, None),
        "clock-offset" => {
            let node = target(false, true)?;
            let offset = fd.offset.ok_or_else(|| err(fd.verb.span(), field("offset"), "`clock-offset` needs `offset` (e.g. \"-200ms\")".into()))?;
            if offset.0.unsigned_abs() > limits::CLOCK_OFFSET_MAX.as_nanos() as u64 {
                return Err(err(fd.verb.span(), field("offset"), format!("over the limit of {} either way", fmt_duration(limits::CLOCK_OFFSET_MAX))));
            }
            (Fault::ClockOffset { node: node.clone(), offset_ns: offset.0 }, Some(Fault::ClockReset { node }))
        }
        "clock-drift" => {
            let node = target(false, true)?;
            let ppm = fd.ppm.as_ref().ok_or_else(|| err(fd.verb.span(), field("ppm"), "`clock-drift` needs `ppm`".into()))?;
            if ppm.get_ref().unsigned_abs() > limits::CLOCK_DRIFT_PPM_MAX as u64 {
                let max = limits::CLOCK_DRIFT_PPM_MAX;
                return Err(err(ppm.span(), field("ppm"), format!("{}: use -{max} to {max} (a clock cannot stop or run backwards)", ppm.get_ref())));
            }
            (Fault::ClockDrift { node: node.clone(), ppm: *ppm.get_ref() }, Some(Fault::ClockReset { node }))
        }
        "clock-reset" => (Fault::ClockReset { node: target(false, true)? }, None),
        "cpu-slow" => {
            let t = target(true, true)?;
            let speed = fd.speed.as_ref().ok_or_else(|| err(fd.verb.span(), field("speed"), "`cpu-slow` needs `speed`, the fraction of full speed (e.g. 0.2)".into()))?;
            let s = *speed.get_ref();
            if !(s > 0.0 && s < 1.0) || (s * 1000.0).round() < 1.0 {
                return Err(err(speed.span(), field("speed"), format!("{s} is not a speed in (0, 1) of at least 0.001")));
            }
            let speed_permille = (s * 1000.0).round() as u32;
            (Fault::CpuSlow { target: vec![t.clone()], speed_permille }, Some(Fault::CpuRestore { target: vec![t] }))
        }
        "cpu-restore" => (Fault::CpuRestore { target: vec![target(true, true)?] }, None),
        "node-add" => {
            let node = target(false, true)?;
            if !topo.node_by_name(&node).is_some_and(|n| topo.node(n).spare) {
                let spares: Vec<&str> = topo.nodes().iter().filter(|n| n.spare).map(|n| n.name.as_str()).collect();
                let known = if spares.is_empty() { "none: declare them in [topology] spare = { role = count }".to_string() } else { spares.join(", ") };
                return Err(err(fd.target.as_ref().map_or_else(|| fd.verb.span(), |t| t.span()), field("target"), format!("`{node}` is not a spare node (spares: {known})")));
            }
            (Fault::NodeAdd { node }, None)
        }
        "node-drain" => (Fault::NodeDrain { node: target(false, true)? }, None),
        other => unreachable!("`{other}` is in VERBS"),
    })
}

/// Replays the fault timeline on a model of the world's state and returns
/// the index of the first contradictory action, with why.
pub(super) fn replay(topo: &Topology, faults: &[TimedFault], is_dynamic_zone: &dyn Fn(&str) -> bool) -> Result<(), (usize, String)> {
    use std::collections::BTreeSet;
    let mut zone_down: BTreeMap<String, ZoneMode> = BTreeMap::new();
    let mut node_down: BTreeSet<String> = BTreeSet::new();
    let mut paused: BTreeSet<String> = BTreeSet::new();
    let mut rules: BTreeSet<String> = BTreeSet::new();
    let key = |kind: &str, a: &[String], b: &[String]| format!("{kind}:{}|{}", a.join(","), b.join(","));
    let zone_nodes = |z: &str| -> Vec<String> {
        topo.zone_by_name(z).map(|id| topo.nodes_in_zone(id).into_iter().map(|n| topo.node(n).name.clone()).collect()).unwrap_or_default()
    };
    let zone_of = |n: &str| topo.node_by_name(n).map(|id| topo.zone_name(topo.zone_of(id)).to_string()).unwrap_or_default();
    // Spares not yet added, and nodes marked for removal.
    let mut waiting: BTreeSet<String> = topo.nodes().iter().filter(|n| n.spare).map(|n| n.name.clone()).collect();
    let mut drained: BTreeSet<String> = BTreeSet::new();
    for (i, tf) in faults.iter().enumerate() {
        let bad = |why: String| Err((i, why));
        match &tf.fault {
            Fault::NodeCrash { node } | Fault::NodeRestart { node } | Fault::NodePause { node } | Fault::NodeDrain { node } if waiting.contains(node) => {
                return bad(format!("node {node} is a spare not yet added: node-add starts it"));
            }
            _ => {}
        }
        match &tf.fault {
            Fault::ZoneDown { zone, mode } => {
                if zone_down.contains_key(zone) {
                    return bad(format!("zone {zone} is already down"));
                }
                // A dynamic zone (the metadata leader's, the master's) is
                // known only when the fault fires: it may be any zone, so it
                // may not overlap another zone fault, nor a crashed or paused
                // node.
                let dynamic = if is_dynamic_zone(zone) && !zone_down.is_empty() { Some(zone) } else { zone_down.keys().find(|z| is_dynamic_zone(z)) };
                if let Some(d) = dynamic {
                    return bad(format!("`{d}` may be any zone: it cannot be down together with another zone"));
                }
                if is_dynamic_zone(zone) && *mode == ZoneMode::Crash {
                    if let Some(n) = node_down.iter().chain(paused.iter()).next() {
                        return bad(format!("`{zone}` may be any zone: node {n} is down or paused; bring it back first"));
                    }
                }
                if *mode == ZoneMode::Crash {
                    if let Some(n) = zone_nodes(zone).iter().find(|n| node_down.contains(*n)) {
                        return bad(format!("node {n} of the zone is already crashed; restart it first"));
                    }
                    if let Some(n) = zone_nodes(zone).iter().find(|n| paused.contains(*n)) {
                        return bad(format!("node {n} of the zone is paused; resume it first"));
                    }
                }
                zone_down.insert(zone.clone(), *mode);
            }
            Fault::ZoneUp { zone } => {
                if zone_down.remove(zone).is_none() {
                    return bad(format!("zone {zone} is not down"));
                }
            }
            Fault::NodeCrash { node } => {
                if let Some(d) = zone_down.iter().find(|(z, m)| is_dynamic_zone(z) && **m == ZoneMode::Crash).map(|(z, _)| z) {
                    return bad(format!("`{d}` is down and may be the zone of {node}: bring it back first"));
                }
                if node_down.contains(node) || zone_down.get(&zone_of(node)) == Some(&ZoneMode::Crash) {
                    return bad(format!("node {node} is already down"));
                }
                if paused.contains(node) {
                    return bad(format!("node {node} is paused; resume it first"));
                }
                node_down.insert(node.clone());
            }
            Fault::NodeRestart { node } => {
                if !node_down.remove(node) {
                    return bad(format!("node {node} is not crashed"));
                }
            }
            Fault::NodePause { node } => {
                if let Some(d) = zone_down.iter().find(|(z, m)| is_dynamic_zone(z) && **m == ZoneMode::Crash).map(|(z, _)| z) {
                    return bad(format!("`{d}` is down and may be the zone of {node}: bring it back first"));
                }
                if node_down.contains(node) || zone_down.get(&zone_of(node)) == Some(&ZoneMode::Crash) {
                    return bad(format!("node {node} is down"));
                }
                if !paused.insert(node.clone()) {
                    return bad(format!("node {node} is already paused"));
                }
            }
            Fault::NodeResume { node } => {
                if !paused.remove(node) {
                    return bad(format!("node {node} is not paused"));
                }
            }
            Fault::NodeAdd { node } => {
                if let Some(d) = zone_down.iter().find(|(z, m)| is_dynamic_zone(z) && **m == ZoneMode::Crash).map(|(z, _)| z) {
                    return bad(format!("`{d}` is down and may be the zone of {node}: bring it back first"));
                }
                if zone_down.get(&zone_of(node)) == Some(&ZoneMode::Crash) {
                    return bad(format!("the zone of {node} is down"));
                }
                if !waiting.remove(node) {
                    return bad(format!("node {node} was already added"));
                }
            }
            Fault::NodeDrain { node } => {
                if !drained.insert(node.clone()) {
                    return bad(format!("node {node} is already marked for removal"));
                }
            }
            Fault::Partition { a, b, .. } => {
                if !rules.insert(key("partition", a, b)) {
                    return bad("the same partition is already in place".into());
                }
            }
            Fault::Heal { a, b, .. } => {
                if !rules.remove(&key("partition", a, b)) {
                    return bad("no such partition to heal".into());
                }
            }
            Fault::Clog { a, b } => {
                if !rules.insert(key("clog", a, b)) {
                    return bad("the link is already clogged".into());
                }
            }
            Fault::Unclog { a, b } => {
                if !rules.remove(&key("clog", a, b)) {
                    return bad("the link is not clogged".into());
                }
            }
            Fault::Loss { a, b, .. } => {
                if !rules.insert(key("loss", a, b)) {
                    return bad("a loss rule is already in place there".into());
                }
            }
            Fault::LossOff { a, b } => {
                if !rules.remove(&key("loss", a, b)) {
                    return bad("no loss rule there".into());
                }
            }
            Fault::LatencySpike { a, b, .. } => {
                if !rules.insert(key("spike", a, b)) {
                    return bad("a latency spike is already in place there".into());
                }
            }
            Fault::LatencyClear { a, b } => {
                if !rules.remove(&key("spike", a, b)) {
                    return bad("no latency spike there".into());
                }
            }
            Fault::DiskFaultsOn { node, .. } => {
                if !rules.insert(format!("disk:{node}")) {
                    return bad(format!("disk faults are already on for {node}"));
                }
            }
            Fault::DiskFaultsOff { node } => {
                if !rules.remove(&format!("disk:{node}")) {
                    return bad(format!("disk faults are not on for {node}"));
                }
            }
            Fault::ClockOffset { node, .. } | Fault::ClockDrift { node, .. } => {
                if !rules.insert(format!("clock:{node}")) {
                    return bad(format!("the clock of {node} is already skewed; reset it first"));
                }
            }
            Fault::ClockReset { node } => {
                if !rules.remove(&format!("clock:{node}")) {
                    return bad(format!("the clock of {node} is not skewed"));
                }
            }
            Fault::CpuSlow { target, .. } => {
                if !rules.insert(format!("cpu:{}", target.join(","))) {
                    return bad(format!("the CPUs of {} are already slowed", target.join(",")));
                }
            }
            Fault::CpuRestore { target } => {
                if !rules.remove(&format!("cpu:{}", target.join(","))) {
                    return bad(format!("the CPUs of {} are not slowed", target.join(",")));
                }
            }
        }
    }
    Ok(())
}

/// The windows of a fault timeline: each fault that has an inverse, by its
/// index in `faults`, with the index of the entry that undid it (its
/// `until`, or a later entry with the inverse verb), `None` if nothing did.
/// An inverse undoes the oldest open fault it is the inverse of.
pub fn fault_windows(faults: &[TimedFault]) -> Vec<(usize, Option<usize>)> {
    let mut windows: Vec<(usize, Option<usize>)> = Vec::new();
    let mut open: Vec<(usize, Fault)> = Vec::new();
    for (i, tf) in faults.iter().enumerate() {
        match inverse(&tf.fault) {
            Some(inv) => {
                open.push((windows.len(), inv));
                windows.push((i, None));
            }
            None => {
                if let Some(pos) = open.iter().position(|(_, o)| o == &tf.fault) {
                    let (w, _) = open.remove(pos);
                    windows[w].1 = Some(i);
                }
            }
        }
    }
    windows
}

/// Inverse verbs that heal whatever the timeline leaves in place at its
/// end, so the liveness phase starts from a healed world.
pub fn heal_all(faults: &[TimedFault]) -> Vec<Fault> {
    fault_windows(faults).into_iter().filter(|(_, off)| off.is_none()).filter_map(|(on, _)| inverse(&faults[on].fault)).collect()
}

fn inverse(f: &Fault) -> Option<Fault> {
    Some(match f {
        Fault::ZoneDown { zone, .. } => Fault::ZoneUp { zone: zone.clone() },
        Fault::NodeCrash { node } => Fault::NodeRestart { node: node.clone() },
        Fault::NodePause { node } => Fault::NodeResume { node: node.clone() },
        Fault::Partition { a, b, direction } => Fault::Heal { a: a.clone(), b: b.clone(), direction: *direction },
        Fault::Clog { a, b } => Fault::Unclog { a: a.clone(), b: b.clone() },
        Fault::Loss { a, b, .. } => Fault::LossOff { a: a.clone(), b: b.clone() },
        Fault::LatencySpike { a, b, .. } => Fault::LatencyClear { a: a.clone(), b: b.clone() },
        Fault::DiskFaultsOn { node, .. } => Fault::DiskFaultsOff { node: node.clone() },
        Fault::ClockOffset { node, .. } | Fault::ClockDrift { node, .. } => Fault::ClockReset { node: node.clone() },
        Fault::CpuSlow { target, .. } => Fault::CpuRestore { target: target.clone() },
        _ => return None,
    })
}

