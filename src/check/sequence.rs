//! Auto-increment sequences: per partition key, acknowledged `append` values are
//! unique, increase in real-time order, and are +1 consecutive.
//!
//! - Duplicate: two ok appends returned the same value.
//! - Order: A completed before B was invoked, yet seq(A) >= seq(B).
//! - Skip: a value between the smallest and largest acknowledged one that no ok
//!   append returned and no unknown-outcome append can have taken. An `info` (or
//!   open) append consumes at most one value, and only a value above every seq
//!   acknowledged before it was invoked (real-time order again); a `fail` append
//!   consumes none. Missing values are matched to such appends greedily from
//!   the lowest value up; the sets of eligible appends grow with the value, so
//!   the greedy matching is maximal.

use super::verdict::{CheckerReport, Verdict};
use crate::history::{Op, Operation, Outcome};
use std::collections::BTreeMap;

/// Examples quoted per kind of violation in the counterexample text.
pub const SEQUENCE_EXAMPLES_MAX: usize = 3;

#[derive(Default)]
struct Partition {
    /// (seq, op index) of ok appends.
    acked: Vec<(u64, usize)>,
    /// Unknown-outcome appends (op indices).
    unknown: Vec<usize>,
}

pub fn check(all: &[Operation<'_>]) -> CheckerReport {
    let mut parts: BTreeMap<&str, Partition> = BTreeMap::new();
    for (i, o) in all.iter().enumerate() {
        let Op::Append { pkey, seq } = o.op else { continue };
        let part = parts.entry(pkey.as_str()).or_default();
        match (o.outcome, seq) {
            (Outcome::Ok, Some(s)) => part.acked.push((*s, i)),
            (Outcome::Info | Outcome::Open, _) => part.unknown.push(i),
            // Fail appends consumed nothing; ok without seq is rejected on parse.
            _ => {}
        }
    }

    let mut report = CheckerReport::new(Verdict::Pass);
    let (mut duplicates, mut order, mut skipped, mut acked_total) = (0u64, 0u64, 0u64, 0u64);
    let mut examples: Vec<String> = Vec::new();
    let (mut dup_ex, mut order_ex, mut skip_ex) = (0usize, 0usize, 0usize);
    for (pkey, part) in &parts {
        acked_total += part.acked.len() as u64;

        // Duplicates.
        let mut by_seq = part.acked.clone();
        by_seq.sort_unstable();
        for pair in by_seq.windows(2) {
            if pair[0].0 == pair[1].0 {
                duplicates += 1;
                if dup_ex < SEQUENCE_EXAMPLES_MAX {
                    dup_ex += 1;
                    examples.push(format!(
                        "duplicate: pkey {pkey:?} seq {} returned twice: {} and {}",
                        pair[0].0,
                        all[pair[0].1].describe(),
                        all[pair[1].1].describe()
                    ));
                }
            }
        }

        // Real-time order: sweep events by position; at each invocation, every
        // ack completed earlier must carry a smaller seq.
        let mut events: Vec<(usize, bool, usize)> = Vec::new(); // (position, is_invoke, op)
        for &(_, i) in &part.acked {
            events.push((all[i].invoke_index, true, i));
            if let Some(c) = all[i].complete_index {
                events.push((c, false, i));
            }
        }
        for &i in &part.unknown {
            events.push((all[i].invoke_index, true, i));
        }
        events.sort_unstable();
        let seq_of = |i: usize| match all[i].op {
            Op::Append { seq: Some(s), .. } if all[i].outcome == Outcome::Ok => Some(*s),
            _ => None,
        };
        // Highest seq acknowledged so far, and by whom.
        let mut high: Option<(u64, usize)> = None;
        // For unknown appends: the highest seq acknowledged before their invocation.
        let mut floor_of_unknown: Vec<Option<u64>> = Vec::new();
        for &(_, is_invoke, i) in &events {
            if is_invoke {
                match seq_of(i) {
                    Some(s) => {
                        if let Some((h, hi)) = high {
                            if s <= h {
                                order += 1;
                                if order_ex < SEQUENCE_EXAMPLES_MAX {
                                    order_ex += 1;
                                    examples.push(format!(
                                        "order: pkey {pkey:?} seq {s} was acknowledged to {} although seq {h} was already acknowledged before it started: {}",
                                        all[i].describe(),
                                        all[hi].describe()
                                    ));
                                }
                            }
                        }
                    }
                    None => floor_of_unknown.push(high.map(|(h, _)| h)),
                }
            } else if let Some(s) = seq_of(i) {
                if high.is_none_or(|(h, _)| s > h) {
                    high = Some((s, i));
                }
            }
        }

        // Skips: missing values in [min, max] matched to unknown appends.
        let mut distinct: Vec<u64> = by_seq.iter().map(|&(s, _)| s).collect();
        distinct.dedup();
        // An unknown append with floor f can take any missing value > f; sort the
        // thresholds (f + 1, or 0 for "anything").
        let mut thresholds: Vec<u64> =
            floor_of_unknown.iter().map(|f| f.map_or(0, |f| f.saturating_add(1))).collect();
        thresholds.sort_unstable();
        let mut next_threshold = 0usize;
        let mut available = 0u64;
        for pair in distinct.windows(2) {
            let (lo, hi) = (pair[0], pair[1]);
            // Missing range [lo + 1, hi - 1], split where more appends become eligible.
            let mut p = lo + 1;
            while p < hi {
                while next_threshold < thresholds.len() && thresholds[next_threshold] <= p {
                    available += 1;
                    next_threshold += 1;
                }
                let segment_end = match thresholds.get(next_threshold) {
                    Some(&t) if t < hi => t,
                    _ => hi,
                };
                let len = segment_end - p;
                let covered = len.min(available);
                available -= covered;
                let missing = len - covered;
                if missing > 0 {
                    skipped += missing;
                    if skip_ex < SEQUENCE_EXAMPLES_MAX {
                        skip_ex += 1;
                        let first = p + covered;
                        examples.push(format!(
                            "skip: pkey {pkey:?} seq {first} was never acknowledged ({missing} value(s) from {first} missing between {lo} and {hi}, {} unknown-outcome append(s) could fill none of them)",
                            part.unknown.len()
                        ));
                    }
                }
                p = segment_end;
            }
        }
    }
    report.count("partitions", parts.len() as u64);
    report.count("acked_appends", acked_total);
    report.count("duplicates", duplicates);
    report.count("order_violations", order);
    report.count("skipped_values", skipped);
    if duplicates + order + skipped > 0 {
        report.verdict = Verdict::Fail;
        report.counterexample = Some(examples.join("\n"));
    }
    report
}
