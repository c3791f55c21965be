//! Liveness: once the last fault has healed and the scenario's bound has passed,
//! the store serves again. Every operation invoked from `heal_at + bound` on
//! completes `ok`, and no operation is still open at the end of the history
//! (TigerBeetle VOPR's liveness phase: faults off, then convergence must happen).
//!
//! Without a heal time the checker relies on what the history itself says: the
//! final phase starts after every fault healed, so its operations must succeed.
//! A `cas` that completes `fail` found another value: that is an answer, not an
//! outage, so it never counts as an offender; nor does a stream append or
//! open refused because another writer took the stream over (recorded
//! `info` or `fail` with an error starting `fenced`), nor an operation the
//! store refused for lack of capacity (`fail` with an error starting
//! `busy`): a saturated store answers, it is not down. Nor does a write
//! whose outcome is unknown because one attempt went unanswered and every
//! later one was refused for lack of capacity until its deadline (`info`
//! with an error naming its last answer [`LAST_BUSY`]): it was answered,
//! busy, and the retry that would have learnt its outcome never got in.
//! Those are counted (`busy_after_bound`); the load expectations judge
//! capacity.

use super::verdict::{CheckerReport, Verdict};
use crate::history::{Op, Operation, Outcome, Phase};

/// The error text (prefix) of a stream append refused because its writer was fenced.
pub const FENCED: &str = "fenced";
/// The error text (prefix) of an operation refused for lack of capacity.
pub const BUSY: &str = "busy";
/// In the error of an operation whose outcome is unknown: its last
/// attempt was refused for lack of capacity.
pub const LAST_BUSY: &str = "(last: busy";

pub fn check(all: &[Operation<'_>], heal_at_ns: Option<u64>, bound_ns: u64) -> CheckerReport {
    let deadline = heal_at_ns.map(|h| h.saturating_add(bound_ns));
    let mut report = CheckerReport::new(Verdict::Pass);
    for name in ["judged", "failed_after_bound", "info_after_bound", "open_at_end", "busy_after_bound"] {
        report.count(name, 0);
    }
    let mut judged = 0u64;
    let mut busy = 0u64;
    for o in all {
        let after_bound = match deadline {
            Some(d) => o.invoke_ns >= d,
            None => o.phase == Phase::Final,
        };
        if o.outcome == Outcome::Open {
            report.violation("open_at_end", || format!("operation never completed: {}", o.describe()));
            continue;
        }
        if !after_bound {
            continue;
        }
        judged += 1;
        let fenced = matches!(o.op, Op::StreamAppend { .. } | Op::StreamOpen { .. }) && o.error.is_some_and(|e| e.starts_with(FENCED));
        if fenced {
            continue;
        }
        let refused = match o.outcome {
            Outcome::Fail => o.error.is_some_and(|e| e.starts_with(BUSY)),
            Outcome::Info => o.error.is_some_and(|e| e.contains(LAST_BUSY)),
            _ => false,
        };
        if refused {
            busy += 1;
            continue;
        }
        let cas_answer = o.outcome == Outcome::Fail && matches!(o.op, Op::Cas { .. });
        let why = match o.outcome {
            Outcome::Fail if !cas_answer => "failed_after_bound",
            Outcome::Info => "info_after_bound",
            _ => continue,
        };
        let when = match deadline {
            Some(d) => format!("invoked at or after heal + bound = {d}ns"),
            None => "in the final phase (after all faults healed)".to_string(),
        };
        report.violation(why, || {
            let err = o.error.map(|e| format!(", error {e:?}")).unwrap_or_default();
            format!("operation {when} did not succeed: {}{err}", o.describe())
        });
    }
    report.count("judged", judged);
    report.count("busy_after_bound", busy);
    if deadline.is_none() {
        report.note = Some("no heal time given: judged the final phase and open operations".to_string());
    }
    report
}
