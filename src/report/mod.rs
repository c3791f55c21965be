//! The report of a run: what happened, measured, and judged against the
//! scenario's expectations.
//!
//! [`build`] measures what every run has (operations, latency,
//! availability, phases, the final read-back, counters); the service adds
//! its sections (`streams`, `table`) and judges its own expectations after
//! [`judge`] has judged the common ones (`run::deploy`). The shape of every
//! section lives here, in one file each.
//!
//! Reports hold no wall-clock values and no raw nanoseconds: durations are
//! printed with three significant decimals (`1.234ms`) and ratios with four,
//! so a snapshot changes only when behaviour changes.

pub mod html;
pub mod measure;
pub mod phases;
pub mod streams;
pub mod table;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sim::time::{fmt_duration, SimTime};

use crate::check::{durability, Verdict, Verdicts};
use crate::history::{Operation, Outcome, Phase};
use crate::run::output::RunOutput;
use crate::scenario::Scenario;
use crate::workload::badreq::{self, BadRequestFigures};
pub use measure::{Counts, Latency};
use measure::{answered, latency_of, max_unavailability, round4};
pub use phases::{fault_windows, phases, FaultWindow, PhaseFigures};
pub use streams::{AuditFigures, Stall, StreamFigures};
pub use table::{healthy_write, HealthyWrite, TableFigures};

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct FaultLine {
    pub at: String,
    pub fault: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// What a fault that begins one did while in force ("none" if nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// It began a fault and did nothing.
    #[serde(skip)]
    pub inert: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Availability {
    /// Operations the service answered (ok, or a definite answer such as a
    /// cas mismatch) over all main-phase operations.
    pub overall: f64,
    /// The same per second of the main phase, by invocation time.
    pub per_second: Vec<f64>,
    /// The longest span in which operations on one partition (or unit)
    /// were tried and none was answered, as the clients saw it (zero when
    /// no operation was tried in a gap: the table section's `unserved`
    /// spans are the servers' view).
    pub max_unavailability: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_window: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Expectation {
    pub name: String,
    pub expected: String,
    pub measured: String,
    pub pass: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub digest: String,
    pub events: u64,
    pub simulated: String,
    /// When the main phase began (model time): once the service was set
    /// up, on a whole second. Fault times count from it.
    pub main_start: String,
    pub topology: Vec<String>,
    pub faults: Vec<FaultLine>,
    /// Operations by kind and outcome (main phase).
    pub operations: BTreeMap<String, Counts>,
    /// Latency of successful main-phase operations, by kind.
    pub latency: BTreeMap<String, Latency>,
    pub availability: Availability,
    /// The main phase cut at every fault boundary: before the first fault,
    /// during each, after each (see [`phases()`]).
    pub phases: Vec<PhaseFigures>,
    pub final_reads: Counts,
    pub final_phase_complete: bool,
    pub network: sim::world::NetStats,
    pub disks: sim::disk::DiskStats,
    /// CPU and disk use per role, per second of the main phase.
    pub resources: Vec<crate::run::output::RoleUsage>,
    /// Open-loop workloads: the load offered against the load served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadFigures>,
    /// Services on the stream layer: stalls, replication and repair figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamFigures>,
    /// Table scenarios: failovers, time to recover, master takeovers,
    /// refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<TableFigures>,
    /// Table scenarios whose workloads send bad requests: sent, refused by
    /// reason, accepted (must be 0), and sightings of their values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_requests: Option<BadRequestFigures>,
    /// The checkers' verdicts over the run's history.
    pub checks: Option<Verdicts>,
    pub expectations: Vec<Expectation>,
    pub pass: bool,
}


/// The common measurements the expectations are judged on.
pub struct Measured {
    pub availability: f64,
    pub max_unavailability: Duration,
    /// Why the service could not be set up (no main phase then).
    pub setup_error: Option<String>,
    /// Each workload's operations that succeeded in the main phase, in
    /// scenario order.
    pub workload_ok: Vec<(String, u64)>,
    /// Each fault window (its text, from, to) and the main-phase
    /// operations invoked in it.
    pub window_ops: Vec<(String, SimTime, SimTime, u64)>,
    /// Successful main-phase operations by invocation time (ns).
    pub ok_at: Vec<u64>,
    /// When the last fault healed and the main phase ended (ns).
    pub heal_ns: u64,
    pub main_end_ns: u64,
    /// When the main phase began (ns).
    pub main_start_ns: u64,
}

/// How long after healing the store has to get its goodput back when the
/// scenario does not say.
pub const RECOVERY_WINDOW_DEFAULT: Duration = Duration::from_secs(10);

/// Seconds of the main phase, counted whole (at least one): the length of
/// the report's per-second series.
pub fn main_seconds(scn: &Scenario) -> usize {
    scn.duration.as_secs_f64().ceil().max(1.0) as usize
}

/// Builds the report's common measurements (everything but the checkers
/// and the service's own sections) from the run and its operations
/// (`out.history.operations()`). `partition_of` names the unit that
/// serves a key.
pub fn build(scn: &Scenario, out: &RunOutput, ops: &[Operation<'_>], partition_of: &dyn Fn(&str) -> String) -> (Report, Measured) {
    let mut operations: BTreeMap<String, Counts> = BTreeMap::new();
    let mut lat: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut final_reads = Counts::default();
    let secs = main_seconds(scn);
    let mut per_sec = vec![(0u64, 0u64); secs];
    let (mut answered_n, mut total_n) = (0u64, 0u64);
    for r in ops {
        let counts = if r.phase == Phase::Final { &mut final_reads } else { operations.entry(r.op.name().to_string()).or_default() };
        match r.outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Fail => counts.fail += 1,
            Outcome::Info | Outcome::Open => counts.info += 1,
        }
        if r.phase != Phase::Main {
            continue;
        }
        if let (Outcome::Ok, Some(c)) = (r.outcome, r.complete_ns) {
            lat.entry(r.op.name().to_string()).or_default().push(c - r.invoke_ns);
        }
        total_n += 1;
        let a = answered(r);
        answered_n += u64::from(a);
        let s = ((r.invoke_ns.saturating_sub(out.main_start.0) / 1_000_000_000) as usize).min(secs - 1);
        per_sec[s].1 += 1;
        per_sec[s].0 += u64::from(a);
    }
    let latency = lat.into_iter().map(|(k, v)| (k, latency_of(v))).collect();
    let mut workload_ok: Vec<(String, u64)> = scn.workloads.iter().map(|w| (w.name.clone(), 0)).collect();
    for r in ops.iter().filter(|r| r.phase == Phase::Main && r.outcome == Outcome::Ok) {
        let name = out.process_workloads.get(&r.process);
        if let Some((_, n)) = workload_ok.iter_mut().find(|(w, _)| Some(w) == name) {
            *n += 1;
        }
    }
    let windows = fault_windows(scn, out);
    let window_ops = windows
        .iter()
        .map(|w| {
            let to = w.to.unwrap_or(out.main_end).min(out.main_end);
            let n = ops.iter().filter(|r| r.phase == Phase::Main && (w.from.0..to.0).contains(&r.invoke_ns)).count() as u64;
            (w.text.clone(), w.from, to, n)
        })
        .collect();
    let overall = if total_n == 0 { 1.0 } else { answered_n as f64 / total_n as f64 };
    let (unavail, window) = max_unavailability(ops, out.main_end, partition_of);
    let report = Report {
        scenario: scn.name.clone(),
        seed: out.seed,
        digest: out.digest.to_string(),
        events: out.digest.events,
        simulated: fmt_duration(out.end.as_duration()),
        main_start: out.main_start.to_string(),
        topology: scn.topology.describe().lines().map(str::to_string).collect(),
        faults: out
            .faults
            .iter()
            .map(|f| FaultLine { at: f.at.to_string(), fault: f.text.clone(), refused: f.error.clone(), effect: f.effect.as_ref().map(|e| e.to_string()), inert: f.effect.as_ref().is_some_and(|e| e.is_none()) })
            .collect(),
        operations,
        latency,
        availability: Availability {
            overall: round4(overall),
            per_second: per_sec.iter().map(|&(a, t)| if t == 0 { 1.0 } else { round4(a as f64 / t as f64) }).collect(),
            max_unavailability: fmt_duration(unavail),
            worst_window: window,
        },
        // A run whose set-up failed has no main phase to cut.
        phases: if out.setup_error.is_none() { phases(ops, &windows, out.workloads_start(), out.main_end) } else { Vec::new() },
        final_reads,
        final_phase_complete: out.final_phase_complete,
        network: out.net.clone(),
        disks: out.disk.clone(),
        resources: out.usage.clone(),
        load: load_figures(scn, out, ops),
        streams: None,
        table: None,
        bad_requests: out.bad_requests.as_ref().map(|log| badreq::figures(log, ops)),
        checks: None,
        expectations: Vec::new(),
        pass: true,
    };
    let ok_at = ops.iter().filter(|r| r.phase == Phase::Main && r.outcome == Outcome::Ok).map(|r| r.invoke_ns).collect();
    let measured = Measured { availability: overall, max_unavailability: unavail, setup_error: out.setup_error.clone(), workload_ok, window_ops, ok_at, heal_ns: out.heal_at.0, main_end_ns: out.main_end.0, main_start_ns: out.main_start.0 };
    (report, measured)
}

/// Offered against served load (open-loop workloads; see
/// `WorkloadDef::open_loop`), per second of the main phase and overall.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct LoadFigures {
    /// Arrivals per second: what the workloads offered.
    pub offered_per_s: f64,
    /// Operations sent per second (arrivals not shed).
    pub sent_per_s: f64,
    /// Arrivals shed at the client: every lane of the process was busy.
    pub shed_at_client: u64,
    /// Successful operations per second (goodput).
    pub ok_per_s: f64,
    /// Per second: arrivals, arrivals shed, successes.
    pub offered: String,
    pub shed: String,
    pub ok: String,
}

fn load_figures(scn: &Scenario, out: &RunOutput, ops: &[Operation<'_>]) -> Option<LoadFigures> {
    if !scn.workloads.iter().any(|w| w.open_loop) {
        return None;
    }
    let secs = main_seconds(scn);
    // Goodput of the open-loop workloads only: the arrivals and sheds
    // beside it are theirs (closed-loop and hotspot processes offer what
    // the system lets them).
    let open: std::collections::BTreeSet<&str> = scn.workloads.iter().filter(|w| w.open_loop).map(|w| w.name.as_str()).collect();
    let is_open = |p: u64| out.process_workloads.get(&p).is_some_and(|w| open.contains(w.as_str()));
    let mut ok = vec![0u64; secs];
    for r in ops.iter().filter(|r| r.phase == Phase::Main && r.outcome == Outcome::Ok && is_open(r.process)) {
        ok[((r.invoke_ns.saturating_sub(out.main_start.0) / 1_000_000_000) as usize).min(secs - 1)] += 1;
    }
    // The main phase starts on a whole second of the world's clock.
    let first = out.main_start.as_duration().as_secs();
    let arrivals: Vec<u64> = (first..first + secs as u64).map(|s| out.offered.get(&s).map_or(0, |x| x.0)).collect();
    let shed: Vec<u64> = (first..first + secs as u64).map(|s| out.offered.get(&s).map_or(0, |x| x.1)).collect();
    let span = scn.duration.as_secs_f64().max(1e-9);
    let line = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    let (a, sh, k) = (arrivals.iter().sum::<u64>(), shed.iter().sum::<u64>(), ok.iter().sum::<u64>());
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    Some(LoadFigures { offered_per_s: r1(a as f64 / span), sent_per_s: r1((a - sh) as f64 / span), shed_at_client: sh, ok_per_s: r1(k as f64 / span), offered: line(&arrivals), shed: line(&shed), ok: line(&ok) })
}

impl Report {
    pub fn expect(&mut self, name: &str, expected: String, measured: String, pass: bool) {
        self.pass &= pass;
        self.expectations.push(Expectation { name: name.into(), expected, measured, pass });
    }

    /// A readable summary for stdout.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "scenario {}  seed {}  digest {}  ({} events, {} simulated)", self.scenario, self.seed, self.digest, self.events, self.simulated);
        let _ = writeln!(s, "  main phase from {}", self.main_start);
        for f in &self.faults {
            let said = match (&f.refused, &f.effect) {
                (Some(r), _) => format!("  (refused: {r})"),
                (None, Some(e)) => format!("  ({e})"),
                (None, None) => String::new(),
            };
            let _ = writeln!(s, "  fault {:>10}  {}{said}", f.at, f.fault);
        }
        for (k, c) in &self.operations {
            let l = self.latency.get(k);
            let _ = writeln!(
                s,
                "  {k:<7} ok {:>7}  fail {:>6}  info {:>6}   p50 {:>9}  p99 {:>9}",
                c.ok,
                c.fail,
                c.info,
                l.map(|l| l.p50.as_str()).unwrap_or("-"),
                l.map(|l| l.p99.as_str()).unwrap_or("-")
            );
        }
        let _ = writeln!(s, "  availability {:.4}  longest unavailability {} (clients' view: tried and unanswered)", self.availability.overall, self.availability.max_unavailability);
        if let Some(l) = self.table.as_ref().and_then(|t| t.longest_unserved.as_ref()) {
            let n = self.table.as_ref().and_then(|t| t.unserved.as_ref()).map_or(0, |u| u.count);
            let _ = writeln!(s, "  longest unserved {l} (servers' view, {n} spans in all)");
        }
        for e in self.table.iter().flat_map(|t| &t.elastic) {
            let added = e.added.as_deref().map(|a| format!(" added at {a},")).unwrap_or_default();
            let drain = match (&e.drain_from, &e.drained_after) {
                (Some(f), Some(d)) => format!(" drained from {f}, empty {d} later,"),
                (Some(f), None) => format!(" drained from {f}, never empty,"),
                _ => String::new(),
            };
            let _ = writeln!(s, "  server {}{added}{drain} {} partitions at the end (mean {:.1})", e.server, e.partitions_at_end, e.mean_at_end);
        }
        if let Some(t) = self.table.as_ref().and_then(|t| t.traffic.as_ref()) {
            for (r, l) in &t.resources {
                let limit = l.limit.as_deref().map(|x| format!(" quota {x}")).unwrap_or_default();
                let acc = l.accuracy.as_deref().map(|a| format!(", {a}")).unwrap_or_default();
                let _ = writeln!(s, "  traffic {r}{limit}: offered {} admitted {} throttled {}{acc}", l.offered, l.admitted, l.throttled);
            }
            for (w, l) in &t.tenants {
                let _ = writeln!(s, "  tenant {w} ({}): ok {} throttled {} failed {} availability {:.4} p50 {} p99 {}", l.instance, l.ok, l.throttled, l.failed, l.availability, l.p50, l.p99);
            }
        }
        for p in &self.phases {
            let lat = |k: &str| p.latency.get(k).map_or("-", |l| l.p99.as_str());
            let _ = writeln!(
                s,
                "  phase [{}, {}) {}: ok/s {:.1} answered/s {:.1} availability {:.4}  read p99 {}  write p99 {}",
                p.from,
                p.to,
                p.phase,
                p.ok_per_s,
                p.answered_per_s,
                p.availability,
                lat("reads"),
                lat("writes")
            );
        }
        if let Some(l) = &self.load {
            let _ = writeln!(s, "  load: offered {:.1}/s, sent {:.1}/s ({} shed at the client), ok {:.1}/s", l.offered_per_s, l.sent_per_s, l.shed_at_client, l.ok_per_s);
        }
        if let Some(h) = self.table.as_ref().and_then(|t| t.healthy_write.as_ref()) {
            let _ = writeln!(s, "  healthy writes: p50 {} over {} writes, modeled {} (inter-zone round trip + sync), ratio {:.2}", h.p50, h.writes, h.modeled, h.ratio);
        }
        let _ = writeln!(s, "  final reads: ok {} fail {} info {}", self.final_reads.ok, self.final_reads.fail, self.final_reads.info);
        if let Some(v) = &self.checks {
            for l in v.summary_lines() {
                let _ = writeln!(s, "  check {l}");
            }
        }
        for e in &self.expectations {
            let _ = writeln!(s, "  [{}] {:<20} expected {:<10} measured {}", if e.pass { "pass" } else { "FAIL" }, e.name, e.expected, e.measured);
        }
        let _ = write!(s, "  verdict: {}", if self.pass { "pass" } else { "FAIL" });
        s
    }
}


/// Judges the common expectations of the scenario: the checkers' verdicts,
/// then the run's own measurements (the service judges its own after).
pub fn judge(report: &mut Report, scn: &Scenario, m: &Measured, v: Verdicts) {
    let e = &scn.expect;
    if let Some(max) = e.lost_acked_writes {
        // Unreachable acknowledged writes (no final read answered their key)
        // count as lost: nothing shows they survived.
        let count = |name: &str| v.durability.counts.get(name).copied().unwrap_or(0);
        let lost = count("lost_acked_writes") + count("unreachable_acked_writes");
        // With a bound of 0 the durability checker must pass outright: a
        // phantom read or a resurrected delete is a durability failure too.
        let ok = lost <= max && (max > 0 || v.durability.verdict == Verdict::Pass);
        // The measured text names every rule the checker found broken.
        let broken: Vec<String> = durability::VIOLATIONS.iter().filter(|n| count(n) > 0).map(|n| format!("{n} {}", count(n))).collect();
        let measured = if broken.is_empty() { format!("{lost} ({})", v.durability.verdict.name()) } else { format!("{lost} ({}: {})", v.durability.verdict.name(), broken.join(", ")) };
        report.expect("lost_acked_writes", format!("<= {max}"), measured, ok);
    }
    for (name, want, r) in [
        ("linearizable", e.linearizable, &v.linearizable),
        ("sequence_ok", e.sequence_ok, &v.sequence),
        ("live", e.live, &v.liveness),
        ("streams_ok", e.streams_ok, &v.stream),
    ] {
        if let Some(want) = want {
            let holds = r.verdict == Verdict::Pass;
            // An undecided checker proves nothing either way: it fails the
            // expectation whichever way it was set.
            let pass = r.verdict != Verdict::Unknown && r.verdict != Verdict::Skipped && holds == want;
            report.expect(name, want.to_string(), r.verdict.name().to_string(), pass);
        }
    }
    report.checks = Some(v);
    // Durability judges keys by their final read: a read-back that did not
    // finish would let lost writes go unseen, so it always fails the run
    // (a run whose set-up failed has no final phase: `set_up` says why).
    if !report.final_phase_complete && m.setup_error.is_none() {
        report.expect("final_reads_complete", "true".into(), "false".into(), false);
    }
    judge_measured(report, scn, m);
    judge_not_vacuous(report, scn, m);
}

/// The expectations every run has, whatever its scenario says: the
/// service was set up before the main phase, every workload got
/// operations done, every fault window met operations, every fault did
/// something. Without them a run that tested nothing would pass.
fn judge_not_vacuous(report: &mut Report, scn: &Scenario, m: &Measured) {
    let limit = fmt_duration(crate::run::SETUP_MAX);
    match &m.setup_error {
        None => report.expect("set_up", format!("within {limit}"), format!("main phase from {}", report.main_start), true),
        Some(why) => report.expect("set_up", format!("within {limit}"), why.clone(), false),
    }
    let min = scn.expect.min_workload_ops.unwrap_or(1);
    if min > 0 {
        let measured = if m.workload_ok.is_empty() { "no workload".to_string() } else { m.workload_ok.iter().map(|(w, n)| format!("{w} {n}")).collect::<Vec<_>>().join(", ") };
        let pass = !m.workload_ok.is_empty() && m.workload_ok.iter().all(|(_, n)| *n >= min);
        report.expect("min_workload_ops", format!(">= {min} ok per workload"), measured, pass);
    }
    let min = scn.expect.min_fault_window_ops.unwrap_or(1);
    if min > 0 {
        let short: Vec<String> = m.window_ops.iter().filter(|w| w.3 < min).map(|(text, from, to, n)| format!("{n} in {text} [{from}, {to})")).collect();
        let measured = match m.window_ops.iter().min_by_key(|w| w.3) {
            None => "no fault window".to_string(),
            Some(_) if !short.is_empty() => short.join("; "),
            Some((text, _, _, n)) => format!("fewest {n}, in {text}"),
        };
        report.expect("min_fault_window_ops", format!(">= {min} per fault window"), measured, short.is_empty());
    }
    if scn.expect.faults_take_effect.unwrap_or(true) {
        let begun = report.faults.iter().filter(|f| f.effect.is_some()).count();
        let inert: Vec<String> = report.faults.iter().filter(|f| f.inert).map(|f| format!("{} at {}: no effect", f.fault, f.at)).collect();
        if begun > 0 {
            let measured = if inert.is_empty() { format!("all {begun}") } else { inert.join("; ") };
            report.expect("faults_take_effect", "every fault has an effect".into(), measured, inert.is_empty());
        }
    }
}

/// Successful operations per second invoked in `[from, to)` (ns).
fn goodput(ok_at: &[u64], from: u64, to: u64) -> f64 {
    let n = ok_at.iter().filter(|&&t| t >= from && t < to).count();
    n as f64 / ((to.saturating_sub(from)) as f64 / 1e9).max(1e-9)
}

fn judge_measured(report: &mut Report, scn: &Scenario, m: &Measured) {
    if let Some(min) = scn.expect.min_recovered_goodput {
        let window = scn.expect.recovery_window.map_or(RECOVERY_WINDOW_DEFAULT, |w| w.0);
        let start = m.main_start_ns + crate::workload::SERVICE_STARTUP.as_nanos() as u64;
        let first = scn.faults.first().map_or(m.main_end_ns, |f| m.main_start_ns + f.at.as_nanos() as u64);
        let from = m.heal_ns.saturating_add(window.as_nanos() as u64);
        let (before, after) = (goodput(&m.ok_at, start, first), goodput(&m.ok_at, from, m.main_end_ns));
        if from >= m.main_end_ns || first <= start {
            let why = format!("no time to judge: the run needs time before the first fault and after the heal + {}", fmt_duration(window));
            report.expect("min_recovered_goodput", format!(">= {min}"), why, false);
        } else {
            let ratio = after / before.max(1e-9);
            report.expect("min_recovered_goodput", format!(">= {min}"), format!("{ratio:.3} ({after:.1} ok/s from heal + {} against {before:.1} ok/s before the first fault)", fmt_duration(window)), ratio >= min);
        }
    }
    if let Some(min) = scn.expect.min_availability {
        report.expect("min_availability", format!(">= {min}"), format!("{:.4}", m.availability), m.availability >= min);
    }
    if let Some(max) = scn.expect.max_unavailability {
        report.expect("max_unavailability", format!("<= {}", fmt_duration(max.0)), fmt_duration(m.max_unavailability), m.max_unavailability <= max.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{History, Kind, Op};
    use sim::time::SimTime;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// One operation: invoked at `at`, completed `took` later as `kind`
    /// (never, with `None`), with an optional error.
    struct Spec {
        at: u64,
        done: Option<(u64, Kind, Option<&'static str>)>,
        op: Op,
        phase: Phase,
    }

    fn read(at: u64, took: u64) -> Spec {
        Spec { at, done: Some((took, Kind::Ok, None)), op: Op::Read { key: "k".into(), value: None }, phase: Phase::Main }
    }

    fn write(at: u64, done: Option<(u64, Kind, Option<&'static str>)>) -> Spec {
        Spec { at, done, op: Op::Write { key: "k".into(), value: format!("v{at}") }, phase: Phase::Main }
    }

    /// A well-formed history of `specs`, one process each, entries in time order.
    fn history(specs: Vec<Spec>) -> History {
        let mut events: Vec<(u64, usize, bool)> = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            events.push((s.at, i, false));
            if let Some((took, ..)) = s.done {
                events.push((s.at + took, i, true));
            }
        }
        events.sort_unstable();
        let mut h = History::new();
        for (t, i, completion) in events {
            let s = &specs[i];
            if completion {
                let (_, kind, error) = s.done.expect("a completion");
                let op = match (&s.op, kind) {
                    (Op::Append { pkey, .. }, Kind::Ok) => Op::Append { pkey: pkey.clone(), seq: Some(1) },
                    (op, _) => op.clone(),
                };
                h.complete(i as u64, t, kind, op, error.map(str::to_string));
            } else {
                h.invoke(i as u64, t, s.op.clone(), s.phase);
            }
        }
        h
    }

    fn window(from: u64, to: Option<u64>, text: &str) -> FaultWindow {
        FaultWindow { from: SimTime(from), to: to.map(SimTime), text: text.into() }
    }

    #[test]
    fn phases_cut_at_every_fault_boundary_and_measure_each_piece() {
        let h = history(vec![
            // Before [1s, 2s): four reads (1, 2, 3, 100 ms) and a write
            // invoked before the start, which counts in the first phase.
            write(S / 2, Some((5 * MS, Kind::Ok, None))),
            read(S, MS),
            read(S + 200 * MS, 2 * MS),
            read(S + 400 * MS, 3 * MS),
            // Invoked before A began, completed during it: still `before`.
            read(2 * S - 1, 100 * MS),
            // During A [2s, 3s): a cas mismatch (answered), a refusal (not
            // answered), a timeout (not answered, completes in a later phase).
            Spec { at: 2 * S + 100 * MS, done: Some((MS, Kind::Fail, Some("cas mismatch"))), op: Op::Cas { key: "k".into(), expected: None, value: "c".into() }, phase: Phase::Main },
            write(2 * S + 200 * MS, Some((MS, Kind::Fail, Some("not serving")))),
            write(2 * S + 500 * MS, Some((S, Kind::Info, Some("timeout")))),
            // During A + B [3s, 4s): invoked exactly at the boundary.
            write(3 * S, Some((7 * MS, Kind::Ok, None))),
            // During B [4s, 6s): nothing. After B [6s, 8s): a scan and a read.
            Spec { at: 7 * S, done: Some((4 * MS, Kind::Ok, None)), op: Op::Scan { start: "a".into(), end: "z".into(), count: None }, phase: Phase::Main },
            read(7 * S + 500 * MS, 2 * MS),
            // During C [8s, 10s): an append, and a write that never completes.
            Spec { at: 9 * S, done: Some((3 * MS, Kind::Ok, None)), op: Op::Append { pkey: "p".into(), seq: None }, phase: Phase::Main },
            write(9 * S + 900 * MS, None),
            // The final phase is not the main phase's.
            Spec { at: 9 * S + 950 * MS, done: Some((MS, Kind::Ok, None)), op: Op::Read { key: "k".into(), value: None }, phase: Phase::Final },
        ]);
        let windows = [window(2 * S, Some(4 * S), "A"), window(3 * S, Some(6 * S), "B"), window(8 * S, None, "C")];
        let ops = h.operations();
        let p = phases(&ops, &windows, SimTime(S), SimTime(10 * S));
        let names: Vec<(&str, &str, &str)> = p.iter().map(|p| (p.phase.as_str(), p.from.as_str(), p.to.as_str())).collect();
        assert_eq!(
            names,
            [("before", "1s", "2s"), ("during A", "2s", "3s"), ("during A + B", "3s", "4s"), ("during B", "4s", "6s"), ("after B", "6s", "8s"), ("during C", "8s", "10s")]
        );

        let before = &p[0];
        assert_eq!(before.operations, Counts { ok: 5, fail: 0, info: 0 });
        assert_eq!((before.answered, before.answered_per_s, before.ok_per_s, before.availability), (5, 5.0, 5.0, 1.0));
        let reads = &before.latency["reads"];
        assert_eq!((reads.count, reads.p50.as_str(), reads.p99.as_str(), reads.max.as_str()), (4, "3ms", "100ms", "100ms"));
        assert_eq!(before.latency["writes"].max, "5ms");

        let a = &p[1];
        assert_eq!(a.operations, Counts { ok: 0, fail: 2, info: 1 });
        assert_eq!((a.answered, a.answered_per_s, a.ok_per_s, a.availability), (1, 1.0, 0.0, 0.3333));
        assert!(a.latency.is_empty(), "no successful operation, no latency");

        assert_eq!(p[2].operations, Counts { ok: 1, fail: 0, info: 0 });
        assert_eq!(p[2].latency["writes"].p50, "7ms");

        let b = &p[3];
        assert_eq!((b.operations.clone(), b.answered_per_s, b.availability), (Counts::default(), 0.0, 1.0));

        let after = &p[4];
        assert_eq!((after.operations.ok, after.ok_per_s), (2, 1.0), "two in two seconds");
        // Of two, p50 is the upper one (the rank (n - 1) * p rounds half up).
        assert_eq!((after.latency["reads"].p50.as_str(), after.latency["reads"].max.as_str()), ("4ms", "4ms"));

        let c = &p[5];
        assert_eq!(c.operations, Counts { ok: 1, fail: 0, info: 1 }, "the open write counts as unknown; the final read not at all");
        assert_eq!((c.availability, c.ok_per_s), (0.5, 0.5));

        // Every main-phase operation is in exactly one phase.
        let total: u64 = p.iter().map(|p| p.operations.ok + p.operations.fail + p.operations.info).sum();
        assert_eq!(total, 13);
    }

    #[test]
    fn healthy_writes_are_the_successful_writes_before_the_first_fault_against_the_modeled_cost() {
        let h = history(vec![
            // Before the start (start-up), a read, a failed write, and a
            // write after the first fault: none counts.
            write(S / 2, Some((50 * MS, Kind::Ok, None))),
            read(S + 100 * MS, MS),
            write(S + 200 * MS, Some((9 * MS, Kind::Fail, Some("not serving")))),
            write(3 * S, Some((900 * MS, Kind::Ok, None))),
            // Three writes, a cas and an append before it: p50 5 ms.
            write(S, Some((4 * MS, Kind::Ok, None))),
            write(S + 300 * MS, Some((5 * MS, Kind::Ok, None))),
            Spec { at: S + 400 * MS, done: Some((6 * MS, Kind::Ok, None)), op: Op::Cas { key: "k".into(), expected: None, value: "c".into() }, phase: Phase::Main },
            Spec { at: S + 500 * MS, done: Some((5 * MS, Kind::Ok, None)), op: Op::Append { pkey: "p".into(), seq: None }, phase: Phase::Main },
            write(2 * S, Some((20 * MS, Kind::Ok, None))),
        ]);
        let ops = h.operations();
        let lp = |us: u64| sim::topology::LinkParams { latency: Duration::from_micros(us), jitter: Duration::ZERO, loss: 0.0 };
        let mut topo = sim::Topology::new(&["a".to_string(), "b".to_string(), "c".to_string()], lp(100), lp(1000));
        // One slower pair: its round trip is the modeled one.
        topo.set_link(sim::ZoneId(0), sim::ZoneId(2), lp(1500));
        let disk = sim::DiskConfig { sync_latency: Duration::from_micros(500), ..sim::DiskConfig::default() };
        let hw = healthy_write(&ops, SimTime(S), SimTime(3 * S), &topo, &disk).expect("writes before the fault");
        assert_eq!(hw, HealthyWrite { writes: 5, p50: "5ms".into(), modeled: "3.5ms".into(), ratio: 1.43 });
        assert_eq!(healthy_write(&ops, SimTime(S), SimTime(S), &topo, &disk), None, "a fault at the start leaves no healthy write");
    }

    #[test]
    fn phases_without_faults_or_with_faults_at_the_edges() {
        let h = history(vec![read(S, MS), read(2 * S, 3 * MS)]);
        let ops = h.operations();
        // No fault: one phase, the whole main phase.
        let p = phases(&ops, &[], SimTime(0), SimTime(4 * S));
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].phase.as_str(), p[0].ok_per_s, p[0].latency["reads"].p50.as_str()), ("before", 0.5, "3ms"));
        // A fault from the start, healed at the end: one phase, during it;
        // two faults healed at once both name the phase after.
        let w = [window(0, Some(4 * S), "X")];
        assert_eq!(phases(&ops, &w, SimTime(0), SimTime(4 * S)).iter().map(|p| p.phase.clone()).collect::<Vec<_>>(), ["during X"]);
        let w = [window(S, Some(3 * S), "X"), window(S, Some(3 * S), "Y")];
        let names: Vec<String> = phases(&ops, &w, SimTime(0), SimTime(4 * S)).into_iter().map(|p| format!("{} [{}, {})", p.phase, p.from, p.to)).collect();
        assert_eq!(names, ["before [0ns, 1s)", "during X + Y [1s, 3s)", "after X + Y [3s, 4s)"]);
        // The one that ended last names it.
        let w = [window(S, Some(2 * S), "X"), window(S, Some(3 * S), "Y")];
        let names: Vec<String> = phases(&ops, &w, SimTime(0), SimTime(4 * S)).into_iter().map(|p| p.phase).collect();
        assert_eq!(names, ["before", "during X + Y", "during Y", "after Y"]);
    }
}

