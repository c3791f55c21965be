//! Phases of the fault timeline: the main phase cut at every fault's start
//! and end, each piece measured (throughput, availability, latency).

use std::collections::BTreeMap;

use serde::Serialize;
use sim::time::SimTime;

use super::measure::{answered, latency_of, round1, round4, Counts, Latency};
use crate::history::{Op, Operation, Outcome, Phase};
use crate::run::output::RunOutput;
use crate::scenario::Scenario;

/// A fault in place from `from` until `to` (`None`: to the end of the run).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    pub from: SimTime,
    pub to: Option<SimTime>,
    pub text: String,
}

/// Throughput, availability and latency of the operations invoked while
/// one state of the fault timeline held.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PhaseFigures {
    /// `before` (no fault yet), `during F` (faults in place, joined by
    /// ` + ` in the order they began), `after F` (none in place; F is the
    /// fault that ended last, or the faults that ended together last).
    pub phase: String,
    pub from: String,
    pub to: String,
    /// The operations invoked in the phase, by outcome.
    pub operations: Counts,
    /// Of those, the ones the service answered (as `availability` counts).
    pub answered: u64,
    /// Answered and successful operations per simulated second of the phase.
    pub answered_per_s: f64,
    pub ok_per_s: f64,
    /// `answered / operations` (1 when there were none).
    pub availability: f64,
    /// Latency of the successful operations, `reads` (read, scan,
    /// stream-read) and `writes` (the others).
    pub latency: BTreeMap<String, Latency>,
}


/// The fault windows of a run: each fault of the scenario's timeline that
/// has an inverse, at the model time it was applied, until its inverse was
/// applied. A refused fault opens no window; a refused inverse closes none.
pub fn fault_windows(scn: &Scenario, out: &RunOutput) -> Vec<FaultWindow> {
    let applied = |i: usize| out.faults.get(i).filter(|f| f.error.is_none());
    crate::scenario::fault_windows(&scn.faults)
        .into_iter()
        .filter_map(|(on, off)| {
            let on = applied(on)?;
            Some(FaultWindow { from: on.at, to: off.and_then(applied).map(|f| f.at), text: on.text.clone() })
        })
        .collect()
}

/// Cuts `[start, end)` at every fault boundary (each window's start and
/// end inside it; equal times make one cut) and measures each piece over
/// the main-phase operations invoked in it (an operation invoked before
/// `start` counts in the first piece). Overlapping faults make a phase for
/// every combination in place: `during A`, `during A + B`, `during B`, ...
pub fn phases(ops: &[Operation<'_>], windows: &[FaultWindow], start: SimTime, end: SimTime) -> Vec<PhaseFigures> {
    let mut cuts: Vec<SimTime> = vec![start, end];
    for w in windows {
        cuts.extend(std::iter::once(w.from).chain(w.to).filter(|&t| t > start && t < end));
    }
    cuts.sort_unstable();
    cuts.dedup();
    #[derive(Default)]
    struct Acc {
        counts: Counts,
        answered: u64,
        reads: Vec<u64>,
        writes: Vec<u64>,
    }
    let mut acc: Vec<Acc> = (1..cuts.len()).map(|_| Acc::default()).collect();
    for r in ops.iter().filter(|r| r.phase == Phase::Main) {
        // The last cut at or before the invocation (the first piece for
        // anything earlier, the last for anything at or after `end`).
        let i = cuts.partition_point(|&c| c <= SimTime(r.invoke_ns)).clamp(1, acc.len()) - 1;
        let a = &mut acc[i];
        match r.outcome {
            Outcome::Ok => a.counts.ok += 1,
            Outcome::Fail => a.counts.fail += 1,
            Outcome::Info | Outcome::Open => a.counts.info += 1,
        }
        a.answered += u64::from(answered(r));
        if let (Outcome::Ok, Some(c)) = (r.outcome, r.complete_ns) {
            let is_read = matches!(r.op, Op::Read { .. } | Op::Scan { .. } | Op::StreamRead { .. });
            if is_read { &mut a.reads } else { &mut a.writes }.push(c - r.invoke_ns);
        }
    }
    acc.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let (from, to) = (cuts[i], cuts[i + 1]);
            let in_place: Vec<&str> = windows.iter().filter(|w| w.from <= from && w.to.is_none_or(|t| t > from)).map(|w| w.text.as_str()).collect();
            let phase = if !in_place.is_empty() {
                format!("during {}", in_place.join(" + "))
            } else {
                // The fault(s) that ended last before this phase, if any.
                let last = windows.iter().filter_map(|w| w.to).filter(|&t| t <= from).max();
                let ended: Vec<&str> = windows.iter().filter(|w| last.is_some() && w.to == last).map(|w| w.text.as_str()).collect();
                if ended.is_empty() {
                    "before".to_string()
                } else {
                    format!("after {}", ended.join(" + "))
                }
            };
            let secs = to.saturating_sub(from).as_secs_f64();
            let total = a.counts.ok + a.counts.fail + a.counts.info;
            let mut latency = BTreeMap::new();
            for (name, v) in [("reads", a.reads), ("writes", a.writes)] {
                if !v.is_empty() {
                    latency.insert(name.to_string(), latency_of(v));
                }
            }
            PhaseFigures {
                phase,
                from: from.to_string(),
                to: to.to_string(),
                answered_per_s: round1(a.answered as f64 / secs),
                ok_per_s: round1(a.counts.ok as f64 / secs),
                availability: if total == 0 { 1.0 } else { round4(a.answered as f64 / total as f64) },
                answered: a.answered,
                operations: a.counts,
                latency,
            }
        })
        .collect()
}
