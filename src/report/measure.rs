//! Counting and timing operations: outcomes, latency percentiles, what
//! counts as answered, and the longest time a unit was unavailable.
//! Durations print with three significant decimals, ratios round to a
//! fixed number of places, so a report changes only when behaviour does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sim::time::{fmt_duration, SimTime};

use crate::history::{Op, Operation, Outcome, Phase};
use crate::run::output::CLIENT_CRASHED;

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


pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Whether the service answered: ok, or a definite answer that is not an
/// outage (a cas that found another value, a stream writer told that
/// another writer took over).
pub fn answered(r: &Operation<'_>) -> bool {
    r.outcome == Outcome::Ok
        || (r.outcome == Outcome::Fail && r.error == Some("cas mismatch"))
        || r.error.is_some_and(|e| e.starts_with(crate::check::liveness::FENCED))
}

/// The `p` quantile of a non-empty sorted sample (nearest rank).
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn percentile(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    fmt_duration(Duration::from_nanos(quantile(sorted, p)))
}

pub fn route_key(op: &Op) -> &str {
    match op {
        Op::Read { key, .. } | Op::Write { key, .. } | Op::Cas { key, .. } | Op::Delete { key } => key,
        Op::Append { pkey, .. } => pkey,
        Op::Scan { start, .. } => start,
        Op::StreamOpen { stream, .. } | Op::StreamAppend { stream, .. } | Op::StreamRead { stream, .. } => stream,
    }
}

/// The longest time a partition (the unit `partition_of` names: a
/// server, a range partition) was seen unavailable: over a run of
/// consecutive unanswered operations on its keys (ordered by completion),
/// from the first one's invocation to the last one's completion.
/// Partitions, not keys or processes: every attempt on any of its keys
/// samples a partition, so its windows are dense; a single rarely used key
/// would join two outages that nobody observed in between.
pub fn max_unavailability<'a>(ops: &'a [Operation<'a>], main_end: SimTime, partition_of: &dyn Fn(&str) -> String) -> (Duration, Option<String>) {
    let mut by_key: BTreeMap<String, Vec<&Operation<'_>>> = BTreeMap::new();
    // An operation whose client process crashed says nothing about the
    // service: that process is not trying any more.
    for r in ops.iter().filter(|r| r.phase == Phase::Main && r.error != Some(CLIENT_CRASHED)) {
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

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn latency_of(mut v: Vec<u64>) -> Latency {
    v.sort_unstable();
    Latency { count: v.len() as u64, p50: percentile(&v, 0.5), p90: percentile(&v, 0.9), p99: percentile(&v, 0.99), max: percentile(&v, 1.0) }
}
