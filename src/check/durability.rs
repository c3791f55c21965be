//! Durability (RPO 0): after faults heal, the final reads must show every
//! acknowledged write unless something that may have come after it replaced it;
//! values of failed writes are never observed by any read.
//!
//! Written values are unique per key, so a read's value names its writer. The
//! rules, chosen so that every violation is a real loss (the linearizability
//! checker catches the subtler orderings):
//! - A read (or a cas expectation) of a value nobody wrote is a phantom; of a
//!   failed write's value, a failed-write read; of a write invoked only after
//!   the read completed, a read from the future.
//! - A final read returning `x` loses an acknowledged write `W` (value `w != x`)
//!   when the writer of `x` certainly took effect before `W` (it responded
//!   before `W` was invoked, or before some read that still saw `w` started),
//!   or when `x` is absent and no delete may have followed `W`.
//!   `info` and open writes whose value some read observed count as
//!   acknowledged too: they certainly happened. Other `info` writes may be
//!   either present or absent. A read allowed to be stale (`stale_ns`, served
//!   by a cache) shows that its value was written, not that it was still in
//!   place when the read started: it is no "read that still saw `w`".
//! - An acknowledged delete is resurrected when the final value's writer
//!   certainly finished before the delete started.
//! - Once the history has a final phase, a key with an acknowledged write or
//!   delete that no final read answered (every attempt failed or timed out,
//!   or none was made) is unreachable: its acknowledged writes count as lost
//!   (`unreachable_acked_writes`), since nothing in the run shows they
//!   survived. A store whose partition never comes back passes no rule above
//!   (it answers no final read at all), so this rule is what fails it.

use super::verdict::{CheckerReport, Verdict};
use crate::history::{Op, Operation, Outcome, Phase};
use std::collections::{BTreeMap, BTreeSet};

/// Register operations of one key, with the writers of its values.
#[derive(Default)]
struct KeyView<'o> {
    members: Vec<usize>,
    writer: BTreeMap<&'o str, usize>,
}

fn written_value(op: &Op) -> Option<&str> {
    match op {
        Op::Write { value, .. } | Op::Cas { value, .. } => Some(value),
        _ => None,
    }
}

/// The value an ok operation observed: a read's result or a cas expectation.
fn observed<'o>(o: &Operation<'o>) -> Option<&'o str> {
    if o.outcome != Outcome::Ok {
        return None;
    }
    match o.op {
        Op::Read { value, .. } => value.as_deref(),
        Op::Cas { expected, .. } => expected.as_deref(),
        _ => None,
    }
}

/// The counters of the rules this checker judges, each a violation.
pub const VIOLATIONS: [&str; 6] = ["lost_acked_writes", "unreachable_acked_writes", "resurrected_deletes", "failed_write_reads", "phantom_reads", "future_reads"];

pub fn check(all: &[Operation<'_>]) -> CheckerReport {
    let mut keys: BTreeMap<&str, KeyView<'_>> = BTreeMap::new();
    for (i, o) in all.iter().enumerate() {
        let Some(key) = o.op.register_key() else { continue };
        let view = keys.entry(key).or_default();
        view.members.push(i);
        if let Some(v) = written_value(o.op) {
            // Values are unique per key; if a workload breaks that, the first
            // non-failed writer wins so no real write is reported as failed.
            let keep_old = view.writer.get(v).is_some_and(|&w| all[w].outcome != Outcome::Fail);
            if !keep_old {
                view.writer.insert(v, i);
            }
        }
    }

    let mut report = CheckerReport::new(Verdict::Pass);
    for name in VIOLATIONS {
        report.count(name, 0);
    }
    let has_final = all.iter().any(|o| o.phase == Phase::Final);
    let mut final_reads = 0u64;
    let mut acked_writes = 0u64;
    for (key, view) in &keys {
        // 1. Every observed value must come from a write that may have happened
        //    before the observation.
        // Writer -> latest position at which its value was certainly in place
        // (its invocation, or the invocation of a later ok read of its value).
        let mut evidence: BTreeMap<usize, usize> = BTreeMap::new();
        for &i in &view.members {
            let o = &all[i];
            let Some(v) = observed(o) else { continue };
            match view.writer.get(v) {
                None => report.violation("phantom_reads", || {
                    format!("key {key:?}: {} observed {v:?}, which no operation wrote", o.describe())
                }),
                Some(&w) if all[w].outcome == Outcome::Fail => report.violation("failed_write_reads", || {
                    format!(
                        "key {key:?}: {} observed {v:?}, written only by a failed write: {}",
                        o.describe(),
                        all[w].describe()
                    )
                }),
                Some(&w) if o.complete_index.is_some_and(|c| c < all[w].invoke_index) => {
                    report.violation("future_reads", || {
                        format!(
                            "key {key:?}: {} observed {v:?} before its write was invoked: {}",
                            o.describe(),
                            all[w].describe()
                        )
                    })
                }
                // A read that may be stale (`stale_ns`) shows only that the
                // value was in place some time before it: no evidence.
                Some(&w) if o.stale_ns.is_some() => {
                    evidence.entry(w).or_insert(all[w].invoke_index);
                }
                Some(&w) => {
                    let e = evidence.entry(w).or_insert(all[w].invoke_index);
                    *e = (*e).max(o.invoke_index);
                }
            }
        }

        // 2. Final reads against acknowledged writes and deletes.
        let acked: Vec<usize> = view
            .members
            .iter()
            .copied()
            .filter(|&i| {
                let o = &all[i];
                written_value(o.op).is_some()
                    && (o.outcome == Outcome::Ok || (o.outcome.is_unknown() && evidence.contains_key(&i)))
            })
            .collect();
        acked_writes += acked.len() as u64;
        // `x` certainly took effect before `w` did: it responded before `w`
        // was invoked, or before a read that still saw `w`'s value started
        // (values are unique, so `w` was then written after `x`).
        let before = |x: &Operation<'_>, w: usize| -> bool {
            let seen = evidence.get(&w).copied().unwrap_or(all[w].invoke_index);
            x.response_index().is_some_and(|c| c < seen)
        };
        let mut lost: BTreeSet<usize> = BTreeSet::new();
        let mut resurrected: BTreeSet<usize> = BTreeSet::new();
        if has_final {
            let answered = view.members.iter().any(|&r| matches!(all[r].op, Op::Read { .. }) && all[r].phase == Phase::Final && all[r].outcome == Outcome::Ok);
            let acked_deletes = view.members.iter().filter(|&&i| matches!(all[i].op, Op::Delete { .. }) && all[i].outcome == Outcome::Ok).count();
            if !answered && acked.len() + acked_deletes > 0 {
                let attempts: Vec<&Operation<'_>> = view.members.iter().map(|&r| &all[r]).filter(|o| o.phase == Phase::Final && matches!(o.op, Op::Read { .. })).collect();
                let n = (acked.len() + acked_deletes) as u64;
                report.violations("unreachable_acked_writes", n, || {
                    let first = acked.first().map(|&w| all[w].describe()).unwrap_or_else(|| "an acknowledged delete".to_string());
                    match attempts.last() {
                        Some(last) => format!(
                            "key {key:?}: {n} acknowledged write(s) and delete(s), the first {first}, are unreachable: none of the {} final reads answered, the last {}",
                            attempts.len(),
                            last.describe()
                        ),
                        None => format!("key {key:?}: {n} acknowledged write(s) and delete(s), the first {first}, are unreachable: the final phase never read the key"),
                    }
                });
            }
        }
        for &r in &view.members {
            let read = &all[r];
            let Op::Read { value, .. } = read.op else { continue };
            if read.phase != Phase::Final || read.outcome != Outcome::Ok {
                continue;
            }
            final_reads += 1;
            let read_end = read.complete_index.unwrap_or(usize::MAX);
            // Deletes that took (or may have taken) effect before the read.
            let delete_ids: Vec<usize> = view
                .members
                .iter()
                .copied()
                .filter(|&i| {
                    let o = &all[i];
                    matches!(o.op, Op::Delete { .. }) && o.outcome != Outcome::Fail && o.invoke_index < read_end
                })
                .collect();
            let deletes: Vec<&Operation<'_>> = delete_ids.iter().map(|&i| &all[i]).collect();
            match value {
                Some(x) => {
                    // Unknown writers were reported above; nothing to judge against.
                    let Some(&xw) = view.writer.get(x.as_str()) else { continue };
                    let x_writer = &all[xw];
                    if x_writer.outcome == Outcome::Fail {
                        continue;
                    }
                    for &w in &acked {
                        if w != xw && before(x_writer, w) && lost.insert(w) {
                            report.violation("lost_acked_writes", || {
                                format!(
                                    "key {key:?}: acknowledged {} is lost: the final read {} shows an older value, whose write finished before it took effect: {}",
                                    all[w].describe(),
                                    read.describe(),
                                    x_writer.describe()
                                )
                            });
                        }
                    }
                    for (d, &di) in deletes.iter().zip(&delete_ids) {
                        if d.outcome == Outcome::Ok && x_writer.precedes(d) && resurrected.insert(di) {
                            report.violation("resurrected_deletes", || {
                                format!(
                                    "key {key:?}: acknowledged {} is undone: the final read {} shows a value written before the delete started: {}",
                                    d.describe(),
                                    read.describe(),
                                    x_writer.describe()
                                )
                            });
                        }
                    }
                }
                None => {
                    // A delete may follow `w` unless it responded before `w`
                    // took effect: only the latest response and unknown
                    // deletes matter (keeps hot keys linear).
                    let unknown_delete = deletes.iter().any(|d| d.response_index().is_none());
                    let last_response = deletes.iter().filter_map(|d| d.response_index()).max();
                    for &w in &acked {
                        let seen = evidence.get(&w).copied().unwrap_or(all[w].invoke_index);
                        let superseded = unknown_delete || last_response.is_some_and(|c| c >= seen);
                        if !superseded && lost.insert(w) {
                            report.violation("lost_acked_writes", || {
                                format!(
                                    "key {key:?}: acknowledged {} is lost: the final read {} finds no row and no delete may have followed the write",
                                    all[w].describe(),
                                    read.describe()
                                )
                            });
                        }
                    }
                }
            }
        }
    }
    report.count("final_reads", final_reads);
    report.count("acked_writes", acked_writes);
    if final_reads == 0 {
        report.note = Some("no final reads: only the failed-write, phantom and future read rules ran".to_string());
    }
    report
}
