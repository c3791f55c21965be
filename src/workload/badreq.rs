//! Bad requests: requests a table scenario's workload sends on purpose
//! (`bad_requests` in a `[[workload]]`: the fraction of a process's
//! operations sent so), which the store's proxies must refuse without
//! touching data.
//!
//! A process cycles through the [`BadKind`]s from a starting point drawn
//! from its own random stream: a missing access key, a wrong access key,
//! another instance's table, a malformed row key (empty, too long, a space
//! in it) and an oversized cell. Bad writes carry values that begin with
//! [`MARKER`] (normal values never do), so a read, scan or final read that
//! sees one proves a bad request touched data.
//!
//! Bad requests stay out of the operation history (the other instance's
//! table and malformed keys would read as phantoms or unreadable keys to
//! the checkers); they are counted here, in the event log, and in the
//! report's `bad_requests` section. A bad write that the service wrongly
//! applied still shows in the history: reads of workload keys then see
//! its marker value, which the durability and linearizability checkers
//! flag as a value nobody wrote.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::history::{Op, Operation, Outcome, Phase};

/// The prefix of every value a bad request writes.
pub const MARKER: &str = "bad!";
/// Examples (accepted requests, sightings) a log keeps.
pub const EXAMPLES_MAX: usize = 8;
/// Distinct reasons a log keeps; further ones are counted as `other`.
pub const REASONS_MAX: usize = 32;

/// What is wrong with a bad request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BadKind {
    /// No access key at all.
    MissingKey,
    /// The instance's name with a key that is not its key.
    WrongKey,
    /// A table of another instance (own credentials on the other
    /// instance's table, or the other instance's credentials on this one).
    ForeignTable,
    /// A row key the store does not accept (empty, too long, a space).
    BadRowKey,
    /// A write whose cell is larger than the store accepts.
    OversizedCell,
}

impl BadKind {
    pub const ALL: [BadKind; 5] = [BadKind::MissingKey, BadKind::WrongKey, BadKind::ForeignTable, BadKind::BadRowKey, BadKind::OversizedCell];

    pub fn name(self) -> &'static str {
        match self {
            BadKind::MissingKey => "missing-access-key",
            BadKind::WrongKey => "wrong-access-key",
            BadKind::ForeignTable => "other-instance-table",
            BadKind::BadRowKey => "bad-row-key",
            BadKind::OversizedCell => "oversized-cell",
        }
    }
}

/// One bad request: what is wrong with it, the `variant`-th bad request of
/// its process (picks among the forms of a kind), and the operation it
/// starts from (a workload operation whose written values carry
/// [`MARKER`]); the service makes it bad.
#[derive(Clone, Debug)]
pub struct BadRequest {
    pub kind: BadKind,
    pub variant: u64,
    pub op: Op,
}

/// How the service answered a bad request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadAnswer {
    /// A definite refusal (authentication or validation), with its text.
    Refused(String),
    /// Served as if valid (it reached the data), with what came back.
    Accepted(String),
    /// No definite answer (unavailable, timed out); neither refused nor
    /// known to be applied.
    Unanswered(String),
}

impl BadAnswer {
    pub fn describe(&self) -> String {
        match self {
            BadAnswer::Refused(e) => format!("refused ({e})"),
            BadAnswer::Accepted(e) => format!("ACCEPTED ({e})"),
            BadAnswer::Unanswered(e) => format!("unanswered ({e})"),
        }
    }
}

/// Per kind: sent and how they were answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    pub sent: u64,
    pub refused: u64,
    pub accepted: u64,
    pub unanswered: u64,
}

/// What the bad requests of a run met.
#[derive(Clone, Debug, Default)]
pub struct BadLogData {
    pub by_kind: BTreeMap<&'static str, KindCounts>,
    pub refused_by_reason: BTreeMap<String, u64>,
    pub unanswered_by_reason: BTreeMap<String, u64>,
    /// The first accepted requests, described.
    pub accepted_examples: Vec<String>,
    /// Rows returned to normal scans that carry a marker value or a
    /// malformed key.
    pub seen_by_scans: u64,
    pub seen_examples: Vec<String>,
}

/// The shared log of a run's bad requests (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct BadLog(Arc<Mutex<BadLogData>>);

/// A reason as counted: the error text up to its first parenthesis (sizes
/// and shapes vary within one reason).
fn reason(text: &str) -> String {
    text.split(" (").next().unwrap_or(text).trim().to_string()
}

fn count_reason(map: &mut BTreeMap<String, u64>, text: &str) {
    let r = reason(text);
    let r = if map.len() >= REASONS_MAX && !map.contains_key(&r) { "other".to_string() } else { r };
    *map.entry(r).or_default() += 1;
}

impl BadLog {
    pub fn snapshot(&self) -> BadLogData {
        self.0.lock().expect("bad log").clone()
    }

    /// Records one bad request and its answer.
    pub fn record(&self, kind: BadKind, what: &str, answer: &BadAnswer) {
        let mut d = self.0.lock().expect("bad log");
        let c = d.by_kind.entry(kind.name()).or_default();
        c.sent += 1;
        match answer {
            BadAnswer::Refused(e) => {
                c.refused += 1;
                count_reason(&mut d.refused_by_reason, e);
            }
            BadAnswer::Accepted(e) => {
                c.accepted += 1;
                if d.accepted_examples.len() < EXAMPLES_MAX {
                    d.accepted_examples.push(format!("{}: {what} -> {e}", kind.name()));
                }
            }
            BadAnswer::Unanswered(e) => {
                c.unanswered += 1;
                count_reason(&mut d.unanswered_by_reason, e);
            }
        }
    }

    /// Records a row a normal scan returned that a bad request wrote.
    pub fn seen_by_scan(&self, what: String) {
        let mut d = self.0.lock().expect("bad log");
        d.seen_by_scans += 1;
        if d.seen_examples.len() < EXAMPLES_MAX {
            d.seen_examples.push(what);
        }
    }
}

/// Whether a value was written by a bad request.
pub fn is_marked(value: &str) -> bool {
    value.starts_with(MARKER)
}

/// The report's `bad_requests` section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadRequestFigures {
    pub sent: u64,
    pub refused: u64,
    /// Served as if valid: must be 0.
    pub accepted: u64,
    /// Neither refused nor served (e.g. the proxy could not reach the
    /// metadata store during a fault).
    pub unanswered: u64,
    pub by_kind: BTreeMap<String, KindCounts>,
    pub refused_by_reason: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unanswered_by_reason: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accepted_examples: Vec<String>,
    /// Reads, final reads and scan rows that saw a bad request's marker
    /// value (or, for scans, a malformed key): must be 0.
    pub values_seen: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seen_examples: Vec<String>,
}

/// The section from the log and the history's reads.
pub fn figures(log: &BadLogData, ops: &[Operation<'_>]) -> BadRequestFigures {
    let mut seen_examples = log.seen_examples.clone();
    let mut values_seen = log.seen_by_scans;
    for o in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        if let Op::Read { key, value: Some(v) } = o.op {
            if is_marked(v) {
                values_seen += 1;
                if seen_examples.len() < EXAMPLES_MAX {
                    let phase = if o.phase == Phase::Final { "final read" } else { "read" };
                    seen_examples.push(format!("{phase} of {key} by process {} saw {v:?}", o.process));
                }
            }
        }
    }
    let total = |f: fn(&KindCounts) -> u64| log.by_kind.values().map(f).sum::<u64>();
    BadRequestFigures {
        sent: total(|c| c.sent),
        refused: total(|c| c.refused),
        accepted: total(|c| c.accepted),
        unanswered: total(|c| c.unanswered),
        by_kind: log.by_kind.iter().map(|(k, c)| (k.to_string(), c.clone())).collect(),
        refused_by_reason: log.refused_by_reason.clone(),
        unanswered_by_reason: log.unanswered_by_reason.clone(),
        accepted_examples: log.accepted_examples.clone(),
        values_seen,
        seen_examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{History, Kind};

    #[test]
    fn answers_are_counted_by_kind_and_reason() {
        let log = BadLog::default();
        log.record(BadKind::BadRowKey, "write", &BadAnswer::Refused("refused: bad key shape (0 bytes; 1..=128)".into()));
        log.record(BadKind::BadRowKey, "write", &BadAnswer::Refused("refused: bad key shape (129 bytes; 1..=128)".into()));
        log.record(BadKind::WrongKey, "read k1", &BadAnswer::Accepted("value None".into()));
        log.record(BadKind::MissingKey, "read k1", &BadAnswer::Unanswered("unavailable: metadata".into()));
        let f = figures(&log.snapshot(), &[]);
        assert_eq!((f.sent, f.refused, f.accepted, f.unanswered), (4, 2, 1, 1));
        assert_eq!(f.refused_by_reason.get("refused: bad key shape"), Some(&2), "{f:?}");
        assert_eq!(f.by_kind["wrong-access-key"].accepted, 1);
        assert_eq!(f.accepted_examples, ["wrong-access-key: read k1 -> value None"]);
    }

    #[test]
    fn reads_of_marked_values_are_seen() {
        let mut h = History::new();
        h.invoke(1, 10, Op::Read { key: "k1".into(), value: None }, Phase::Main);
        h.complete(1, 20, Kind::Ok, Op::Read { key: "k1".into(), value: Some(format!("{MARKER}p3.1")) }, None);
        h.invoke(1, 30, Op::Read { key: "k2".into(), value: None }, Phase::Final);
        h.complete(1, 40, Kind::Ok, Op::Read { key: "k2".into(), value: Some("p3.2".into()) }, None);
        let log = BadLog::default();
        log.seen_by_scan("scan row".into());
        let f = figures(&log.snapshot(), &h.operations());
        assert_eq!(f.values_seen, 2, "{f:?}");
        assert_eq!(f.seen_examples.len(), 2);
    }
}
