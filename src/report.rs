//! The report of a run: what happened, measured, and judged against the
//! scenario's expectations.
//!
//! Reports hold no wall-clock values and no raw nanoseconds: durations are
//! printed with three significant decimals (`1.234ms`) and ratios with four,
//! so a snapshot changes only when behaviour changes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sim::time::{fmt_duration, SimTime};

use crate::runner::RunOutput;
use crate::scenario::Scenario;
use crate::history::{Op, Operation, Outcome, Phase};

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50: String,
    pub p90: String,
    pub p99: String,
    pub max: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct FaultLine {
    pub at: String,
    pub fault: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Availability {
    /// Operations the service answered (ok, or a definite answer such as a
    /// cas mismatch) over all main-phase operations.
    pub overall: f64,
    /// The same per second of the main phase, by invocation time.
    pub per_second: Vec<f64>,
    /// The longest time one partition was seen unavailable (see `max_unavailability`).
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
    pub topology: Vec<String>,
    pub faults: Vec<FaultLine>,
    /// Operations by kind and outcome (main phase).
    pub operations: BTreeMap<String, Counts>,
    /// Latency of successful main-phase operations, by kind.
    pub latency: BTreeMap<String, Latency>,
    pub availability: Availability,
    pub final_reads: Counts,
    pub final_phase_complete: bool,
    pub network: sim::world::NetStats,
    pub disks: sim::disk::DiskStats,
    /// The checkers' verdicts over the run's history.
    pub checks: Option<crate::check::Verdicts>,
    pub expectations: Vec<Expectation>,
    pub pass: bool,
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn answered(r: &Operation<'_>) -> bool {
    r.outcome == Outcome::Ok || (r.outcome == Outcome::Fail && r.error == Some("cas mismatch"))
}

fn percentile(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    fmt_duration(Duration::from_nanos(sorted[i]))
}

fn route_key(op: &Op) -> &str {
    match op {
        Op::Read { key, .. } | Op::Write { key, .. } | Op::Cas { key, .. } | Op::Delete { key } => key,
        Op::Append { pkey, .. } => pkey,
        Op::Scan { start, .. } => start,
        Op::StreamOpen { stream, .. } | Op::StreamAppend { stream, .. } | Op::StreamRead { stream, .. } => stream,
    }
}

/// The longest time a partition was seen unavailable: over a run of
/// consecutive unanswered operations on its keys (ordered by completion),
/// from the first one's invocation to the last one's completion.
/// Partitions, not keys or processes: every attempt on any of its keys
/// samples a partition, so its windows are dense; a single rarely used key
/// would join two outages that nobody observed in between.
fn max_unavailability<'a>(ops: &'a [Operation<'a>], main_end: SimTime, partition_of: &dyn Fn(&str) -> String) -> (Duration, Option<String>) {
    let mut by_key: BTreeMap<String, Vec<&Operation<'_>>> = BTreeMap::new();
    // An operation whose client process crashed says nothing about the
    // service: that process is not trying any more.
    for r in ops.iter().filter(|r| r.phase == Phase::Main && r.error != Some(crate::runner::CLIENT_CRASHED)) {
        by_key.entry(partition_of(route_key(r.op))).or_default().push(r);
    }
    let mut worst = (Duration::ZERO, None);
    for (key, mut list) in by_key {
        let done = |r: &Operation<'_>| r.complete_ns.map(SimTime).unwrap_or(main_end);
        list.sort_by_key(|r| (done(r), r.invoke_index));
        // (first invocation, last completion) of the current unanswered run.
        let mut run: Option<(SimTime, SimTime)> = None;
        let mut close = |run: Option<(SimTime, SimTime)>| {
            if let Some((from, to)) = run {
                let w = to.saturating_sub(from);
                if w > worst.0 {
                    worst = (w, Some(format!("partition {key} from {from} to {to}")));
                }
            }
        };
        for r in list {
            let (invoked, done) = (SimTime(r.invoke_ns), done(r));
            if answered(r) {
                close(run.take());
            } else {
                run = Some(match run {
                    None => (invoked, done),
                    Some((from, to)) => (from.min(invoked), to.max(done)),
                });
            }
        }
        close(run);
    }
    worst
}

pub struct Measured {
    pub availability: f64,
    pub max_unavailability: Duration,
}

/// Builds the report's measurements (everything but the checkers).
/// `partition_of` names the partition that serves a key.
pub fn build(scn: &Scenario, out: &RunOutput, partition_of: &dyn Fn(&str) -> String) -> (Report, Measured) {
    let mut operations: BTreeMap<String, Counts> = BTreeMap::new();
    let mut lat: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut final_reads = Counts::default();
    let secs = scn.duration.as_secs_f64().ceil().max(1.0) as usize;
    let mut per_sec = vec![(0u64, 0u64); secs];
    let (mut answered_n, mut total_n) = (0u64, 0u64);
    let ops = out.history.operations();
    for r in &ops {
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
        let s = ((r.invoke_ns / 1_000_000_000) as usize).min(secs - 1);
        per_sec[s].1 += 1;
        per_sec[s].0 += u64::from(a);
    }
    let latency = lat
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            let l = Latency { count: v.len() as u64, p50: percentile(&v, 0.5), p90: percentile(&v, 0.9), p99: percentile(&v, 0.99), max: percentile(&v, 1.0) };
            (k, l)
        })
        .collect();
    let overall = if total_n == 0 { 1.0 } else { answered_n as f64 / total_n as f64 };
    let (unavail, window) = max_unavailability(&ops, out.main_end, partition_of);
    let report = Report {
        scenario: scn.name.clone(),
        seed: out.seed,
        digest: out.digest.to_string(),
        events: out.digest.events,
        simulated: fmt_duration(out.end.as_duration()),
        topology: scn.topology.describe().lines().map(str::to_string).collect(),
        faults: out.faults.iter().map(|f| FaultLine { at: f.at.to_string(), fault: f.text.clone(), refused: f.error.clone() }).collect(),
        operations,
        latency,
        availability: Availability {
            overall: round4(overall),
            per_second: per_sec.iter().map(|&(a, t)| if t == 0 { 1.0 } else { round4(a as f64 / t as f64) }).collect(),
            max_unavailability: fmt_duration(unavail),
            worst_window: window,
        },
        final_reads,
        final_phase_complete: out.final_phase_complete,
        network: out.net.clone(),
        disks: out.disk.clone(),
        checks: None,
        expectations: Vec::new(),
        pass: true,
    };
    (report, Measured { availability: overall, max_unavailability: unavail })
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
        for f in &self.faults {
            let _ = writeln!(s, "  fault {:>10}  {}{}", f.at, f.fault, f.refused.as_ref().map(|r| format!("  (refused: {r})")).unwrap_or_default());
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
        let _ = writeln!(s, "  availability {:.4}  longest unavailability {}", self.availability.overall, self.availability.max_unavailability);
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


/// Judges every expectation of the scenario: the checkers' verdicts, then
/// the run's own measurements.
pub fn judge(report: &mut Report, scn: &Scenario, m: &Measured, v: crate::check::Verdicts) {
    use crate::check::Verdict;
    let e = &scn.expect;
    if let Some(max) = e.lost_acked_writes {
        let lost = v.durability.counts.get("lost_acked_writes").copied().unwrap_or(0);
        // With a bound of 0 the durability checker must pass outright: a
        // phantom read or a resurrected delete is a durability failure too.
        let ok = lost <= max && (max > 0 || v.durability.verdict == Verdict::Pass);
        report.expect("lost_acked_writes", format!("<= {max}"), format!("{lost} ({})", v.durability.verdict.name()), ok);
    }
    for (name, want, r) in [("linearizable", e.linearizable, &v.linearizable), ("sequence_ok", e.sequence_ok, &v.sequence), ("live", e.live, &v.liveness)] {
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
    // finish would let lost writes go unseen, so it always fails the run.
    if !report.final_phase_complete {
        report.expect("final_reads_complete", "true".into(), "false".into(), false);
    }
    judge_measured(report, scn, m);
}

fn judge_measured(report: &mut Report, scn: &Scenario, m: &Measured) {
    if let Some(min) = scn.expect.min_availability {
        report.expect("min_availability", format!(">= {min}"), format!("{:.4}", m.availability), m.availability >= min);
    }
    if let Some(max) = scn.expect.max_unavailability {
        report.expect("max_unavailability", format!("<= {}", fmt_duration(max.0)), fmt_duration(m.max_unavailability), m.max_unavailability <= max.0);
    }
}
