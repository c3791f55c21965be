//! Operation histories: what the simulated clients did, as Jepsen records it.
//!
//! Every client operation is an invocation followed (usually) by a completion:
//! `ok` (it happened, with its result), `fail` (it definitely did not happen) or
//! `info` (unknown outcome, e.g. a timeout). An invocation without a completion at
//! the end of the history is "open" and is treated like `info` by the checkers.
//!
//! On disk a history is JSON lines, one entry per line:
//!
//! ```text
//! {"index":0,"type":"invoke","process":1,"time_ns":10,"op":{"f":"write","key":"k1","value":"a"},"phase":"main"}
//! {"index":1,"type":"ok","process":1,"time_ns":20,"op":{"f":"write","key":"k1","value":"a"},"phase":"main"}
//! ```
//!
//! Fields: `index` counts entries from 0; `type` is `invoke`, `ok`, `fail` or
//! `info`; `process` is the client id; `time_ns` is model time, never
//! decreasing; `op` is tagged by `f`: `read {key, value}`, `write {key, value}`,
//! `cas {key, expected, value}` (`expected: null` = the row must not exist),
//! `delete {key}`, `append {pkey, seq}`, `scan {start, end, count}`, and for
//! streams `stream-open {stream, epoch}`, `stream-append {stream, value,
//! offset}`, `stream-read {stream, offset, len, value}`. Outputs
//! (`read.value`, `append.seq`, `scan.count`, `epoch`, `offset`,
//! `stream-read.value`) are null on invocations and set on `ok` completions. `phase` is `main` (default when absent) or `final` (the
//! durability reads after healing); a completion belongs to its invocation's
//! phase. `error` is optional text on completions. `stale_ns` is optional
//! and allowed only on the `ok` completion of a `read`: the read was served
//! from a cache that may be up to `stale_ns` nanoseconds behind, so it may
//! return any value the key held at some moment from `time_ns - stale_ns`
//! (or its invocation, if earlier) to its completion at `time_ns` (see
//! `check::linearizable`); when absent (an ordinary read) it is not written.
//! Written values are unique per key. Blank lines and lines starting with `#`
//! are skipped when parsing.
//!
//! Invariant: a `History` is always well formed (indices count from 0, time never
//! goes backwards, every completion matches the open invocation of its process,
//! `stale_ns` only on ok read completions).
//! `parse_jsonl` returns a typed error naming the line instead of building a bad
//! one; `invoke`/`complete` panic on misuse because that is a bug in the runner.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One operation and, on completions, its result.
///
/// Outputs (`Read::value`, `Append::seq`, `Scan::count`) are `None` on invocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Op {
    /// Read a row; `value` is the result (`None` = row absent).
    Read {
        key: String,
        #[serde(default)]
        value: Option<String>,
    },
    /// Write (upsert) a row.
    Write { key: String, value: String },
    /// Conditional write: `expected == None` means "the row must not exist".
    Cas {
        key: String,
        #[serde(default)]
        expected: Option<String>,
        value: String,
    },
    /// Delete a row.
    Delete { key: String },
    /// Auto-increment append: the store assigns `seq` and returns it.
    Append {
        pkey: String,
        #[serde(default)]
        seq: Option<u64>,
    },
    /// Range scan; recorded, not checked for linearizability.
    Scan {
        start: String,
        end: String,
        #[serde(default)]
        count: Option<u64>,
    },
    /// Becomes the writer of a stream, fencing the previous one; `epoch` is
    /// the writer epoch it got.
    #[serde(rename = "stream-open")]
    StreamOpen {
        stream: String,
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Appends `value` to a stream as its current writer; `offset` is where
    /// the bytes landed.
    #[serde(rename = "stream-append")]
    StreamAppend {
        stream: String,
        value: String,
        #[serde(default)]
        offset: Option<u64>,
    },
    /// Reads up to `len` bytes at `offset`; `value` is what came back (shorter
    /// at the committed end of the stream).
    #[serde(rename = "stream-read")]
    StreamRead {
        stream: String,
        offset: u64,
        len: u64,
        #[serde(default)]
        value: Option<String>,
    },
}

impl Op {
    /// The function name as written in the `f` field.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Cas { .. } => "cas",
            Op::Delete { .. } => "delete",
            Op::Append { .. } => "append",
            Op::Scan { .. } => "scan",
            Op::StreamOpen { .. } => "stream-open",
            Op::StreamAppend { .. } => "stream-append",
            Op::StreamRead { .. } => "stream-read",
        }
    }

    /// The stream of stream operations.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Op::StreamOpen { stream, .. } | Op::StreamAppend { stream, .. } | Op::StreamRead { stream, .. } => Some(stream),
            _ => None,
        }
    }

    /// The row key of register operations (read, write, cas, delete).
    pub fn register_key(&self) -> Option<&str> {
        match self {
            Op::Read { key, .. } | Op::Write { key, .. } | Op::Cas { key, .. } | Op::Delete { key } => {
                Some(key)
            }
            _ => None,
        }
    }

    /// True when `other` is the same operation with (possibly) different outputs:
    /// same function and same inputs. A completion must match its invocation so.
    pub fn same_inputs(&self, other: &Op) -> bool {
        match (self, other) {
            (Op::Read { key: a, .. }, Op::Read { key: b, .. }) => a == b,
            (Op::Write { key: a, value: va }, Op::Write { key: b, value: vb }) => a == b && va == vb,
            (
                Op::Cas { key: a, expected: ea, value: va },
                Op::Cas { key: b, expected: eb, value: vb },
            ) => a == b && ea == eb && va == vb,
            (Op::Delete { key: a }, Op::Delete { key: b }) => a == b,
            (Op::Append { pkey: a, .. }, Op::Append { pkey: b, .. }) => a == b,
            (Op::Scan { start: sa, end: ea, .. }, Op::Scan { start: sb, end: eb, .. }) => {
                sa == sb && ea == eb
            }
            (Op::StreamOpen { stream: a, .. }, Op::StreamOpen { stream: b, .. }) => a == b,
            (Op::StreamAppend { stream: a, value: va, .. }, Op::StreamAppend { stream: b, value: vb, .. }) => a == b && va == vb,
            (
                Op::StreamRead { stream: a, offset: oa, len: la, .. },
                Op::StreamRead { stream: b, offset: ob, len: lb, .. },
            ) => a == b && oa == ob && la == lb,
            _ => false,
        }
    }

    /// A short human-readable rendering, e.g. `write k1 = "a"` or `read k1 -> nil`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        self.describe_into(&mut out);
        out
    }

    /// [`Op::describe`] appended to `out` (the workload renders two of
    /// these per operation into the event log: one string, no copies).
    pub fn describe_into(&self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = self.render(out);
    }

    fn render(&self, out: &mut String) -> std::fmt::Result {
        use std::fmt::Write;
        fn val(out: &mut String, v: &Option<String>) {
            match v {
                Some(s) => push_debug_str(out, s),
                None => out.push_str("nil"),
            }
        }
        match self {
            Op::Read { key, value } => {
                write!(out, "read {key} -> ")?;
                val(out, value);
            }
            Op::Write { key, value } => {
                write!(out, "write {key} = ")?;
                push_debug_str(out, value);
            }
            Op::Cas { key, expected, value } => {
                write!(out, "cas {key} ")?;
                val(out, expected);
                out.push_str(" -> ");
                push_debug_str(out, value);
            }
            Op::Delete { key } => write!(out, "delete {key}")?,
            Op::Append { pkey, seq } => match seq {
                Some(s) => write!(out, "append {pkey} -> seq {s}")?,
                None => write!(out, "append {pkey}")?,
            },
            Op::Scan { start, end, count } => match count {
                Some(c) => write!(out, "scan [{start}, {end}) -> {c} rows")?,
                None => write!(out, "scan [{start}, {end})")?,
            },
            Op::StreamOpen { stream, epoch } => match epoch {
                Some(e) => write!(out, "stream-open {stream} -> epoch {e}")?,
                None => write!(out, "stream-open {stream}")?,
            },
            Op::StreamAppend { stream, value, offset } => match offset {
                Some(o) => write!(out, "stream-append {stream} {value:?} -> offset {o}")?,
                None => write!(out, "stream-append {stream} {value:?}")?,
            },
            Op::StreamRead { stream, offset, len, value } => match value {
                Some(v) => write!(out, "stream-read {stream} [{offset}, +{len}) -> {} bytes {v:?}", v.len())?,
                None => write!(out, "stream-read {stream} [{offset}, +{len})")?,
            },
        }
        Ok(())
    }
}

/// Appends `s` as `format!("{s:?}")` would: quoted, with escapes. Printable
/// ASCII other than `"` and `\` needs none (the workload's values are all
/// such), so it is copied as is instead of going through the escaper.
pub fn push_debug_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{s:?}");
    }
}

/// Appends nanoseconds in the largest unit that shows them exactly: `5ms`,
/// `1500us`, `25ns`.
fn push_duration(out: &mut String, ns: u64) {
    use std::fmt::Write;
    let _ = match ns {
        0 => write!(out, "0ns"),
        _ if ns % 1_000_000_000 == 0 => write!(out, "{}s", ns / 1_000_000_000),
        _ if ns % 1_000_000 == 0 => write!(out, "{}ms", ns / 1_000_000),
        _ if ns % 1_000 == 0 => write!(out, "{}us", ns / 1_000),
        _ => write!(out, "{ns}ns"),
    };
}

/// The entry type (`type` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// How a completed operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// It happened; the op carries its outputs.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Unknown outcome: it may have happened, at any time after its invocation.
    Info,
}

impl EntryType {
    /// The name as written in the `type` field.
    pub fn name(self) -> &'static str {
        match self {
            EntryType::Invoke => "invoke",
            EntryType::Ok => "ok",
            EntryType::Fail => "fail",
            EntryType::Info => "info",
        }
    }
}

impl From<Kind> for EntryType {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Ok => EntryType::Ok,
            Kind::Fail => EntryType::Fail,
            Kind::Info => EntryType::Info,
        }
    }
}

/// The scenario phase an operation belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The workload, under faults.
    #[default]
    Main,
    /// The final reads of the durability check, after all faults healed and all
    /// main-phase operations completed.
    Final,
}

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: usize,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    pub process: u64,
    pub time_ns: u64,
    pub op: Op,
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set on a read's `ok` completion when the read was served from a cache
    /// that may be up to `stale_ns` nanoseconds behind: it may return any
    /// value the key held at some moment within `stale_ns` before this
    /// completion. `None` (and left out of the file) for every other entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_ns: Option<u64>,
}

/// The outcome of an operation, pairing its invocation with its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
    /// Still open at the end of the history; treated as `Info` by the checkers.
    Open,
}

impl Outcome {
    /// True for outcomes after which the operation may or may not have happened.
    pub fn is_unknown(self) -> bool {
        matches!(self, Outcome::Info | Outcome::Open)
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
            Outcome::Open => "open",
        }
    }
}

/// An invocation paired with its completion (if any), borrowed from a `History`.
///
/// Positions (`invoke_index`, `complete_index`) are entry indices: they order
/// events exactly as the runner observed them, even when model times tie, so the
/// checkers use them for real-time precedence and `time_ns` only for display,
/// for the liveness bound and for the window of a stale read (`stale_ns`).
#[derive(Clone, Copy, Debug)]
pub struct Operation<'a> {
    pub process: u64,
    pub invoke_index: usize,
    pub invoke_ns: u64,
    pub complete_index: Option<usize>,
    pub complete_ns: Option<u64>,
    pub outcome: Outcome,
    /// The completion's op (with outputs) if completed, else the invocation's.
    pub op: &'a Op,
    pub phase: Phase,
    pub error: Option<&'a str>,
    /// The completion's staleness allowance (only ever on an ok read): the
    /// read may have taken effect as early as `complete_ns - stale_ns`.
    pub stale_ns: Option<u64>,
}

impl Operation<'_> {
    /// True when `self` certainly finished before `other` started.
    ///
    /// This is the recorded order: a stale read (`stale_ns`) may have
    /// observed the key as of before its invocation, which this does not
    /// account for.
    pub fn precedes(&self, other: &Operation<'_>) -> bool {
        match self.complete_index {
            Some(c) => self.outcome != Outcome::Info && c < other.invoke_index,
            None => false,
        }
    }

    /// Position of the response for real-time order; `None` = never (+∞).
    pub fn response_index(&self) -> Option<usize> {
        match self.outcome {
            Outcome::Ok | Outcome::Fail => self.complete_index,
            Outcome::Info | Outcome::Open => None,
        }
    }

    /// `[t=10ns #3 .. t=20ns #5]`-style span for reports.
    pub fn span(&self) -> String {
        match (self.complete_index, self.complete_ns) {
            (Some(ci), Some(cn)) => format!(
                "invoked t={}ns #{}, {} t={}ns #{}",
                self.invoke_ns,
                self.invoke_index,
                self.outcome.name(),
                cn,
                ci
            ),
            _ => format!("invoked t={}ns #{}, still open", self.invoke_ns, self.invoke_index),
        }
    }

    /// The op as text, marked with a stale read's allowance:
    /// `read k1 -> "a" (stale ≤ 5ms)`.
    pub fn describe_op(&self) -> String {
        let mut out = self.op.describe();
        if let Some(s) = self.stale_ns {
            out.push_str(" (stale ≤ ");
            push_duration(&mut out, s);
            out.push(')');
        }
        out
    }

    /// One line: process, outcome, op and span.
    pub fn describe(&self) -> String {
        format!("p{} {} {} ({})", self.process, self.outcome.name(), self.describe_op(), self.span())
    }
}

/// What is wrong with a history file, at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct HistoryError {
    /// 1-based line in the file (for runner-built histories: entry index + 1).
    pub line: usize,
    pub kind: HistoryErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryErrorKind {
    #[error("malformed entry: {0}")]
    Malformed(String),
    #[error("truncated last line: {0}")]
    Truncated(String),
    #[error("index {got} out of sequence, expected {expected}")]
    IndexOutOfSequence { expected: usize, got: usize },
    #[error("time went backwards: {got}ns after {previous}ns")]
    TimeWentBackwards { previous: u64, got: u64 },
    #[error("process {process} completes an operation it never invoked")]
    CompletionWithoutInvocation { process: u64 },
    #[error("process {process} invokes a second operation while the one from line {open_line} is open")]
    TwoOpenOperations { process: u64, open_line: usize },
    #[error("completion `{completed}` does not match invocation `{invoked}` from line {invoke_line}")]
    OpMismatch { invoked: String, completed: String, invoke_line: usize },
    /// An ok completion without its output (an append's seq, a stream
    /// append's offset, a stream open's epoch, a stream read's value).
    #[error("ok completion on {pkey} carries no output")]
    MissingOutput { pkey: String },
    /// `stale_ns` on anything but the `ok` completion of a read: `f` is the
    /// entry's op, `entry_type` its type.
    #[error("stale_ns on a `{f}` {} entry: only an ok read completion may carry one", .entry_type.name())]
    StalenessNotOnRead { f: String, entry_type: EntryType },
}

/// A recorded history: the entries, plus each process's open invocation.
#[derive(Clone, Debug, Default)]
pub struct History {
    entries: Vec<Entry>,
    /// Process -> entry index of its open invocation.
    open: BTreeMap<u64, usize>,
    /// Entry index -> file line, when parsed from a file with comments or blank lines.
    lines: Option<Vec<usize>>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The 1-based file line of entry `index` (for messages).
    pub fn line_of(&self, index: usize) -> usize {
        match &self.lines {
            Some(lines) => lines.get(index).copied().unwrap_or(index + 1),
            None => index + 1,
        }
    }

    /// Records an invocation and returns its entry index.
    ///
    /// # Panics
    /// If `process` already has an open operation or time goes backwards: both are
    /// bugs in the caller, not properties of the system under test. See
    /// `try_invoke` for a non-panicking variant.
    pub fn invoke(&mut self, process: u64, time_ns: u64, op: Op, phase: Phase) -> usize {
        match self.try_invoke(process, time_ns, op, phase) {
            Ok(index) => index,
            Err(kind) => panic!("history misuse: {kind}"),
        }
    }

    /// Like `invoke`, returning what is wrong instead of panicking.
    pub fn try_invoke(
        &mut self,
        process: u64,
        time_ns: u64,
        op: Op,
        phase: Phase,
    ) -> Result<usize, HistoryErrorKind> {
        let entry = Entry {
            index: self.entries.len(),
            entry_type: EntryType::Invoke,
            process,
            time_ns,
            op,
            phase,
            error: None,
            stale_ns: None,
        };
        self.push(entry)
    }

    /// The invoked op of `process`'s open operation, if it has one.
    pub fn open_op(&self, process: u64) -> Option<&Op> {
        self.open.get(&process).map(|&i| &self.entries[i].op)
    }

    /// Records the completion of `process`'s open operation and returns its entry
    /// index. `op` is the invoked op with its outputs filled in.
    ///
    /// # Panics
    /// If `process` has no open operation, `op` differs from the invocation in
    /// function or inputs, an ok append carries no seq, or time goes backwards
    /// (all bugs in the caller). See `try_complete`.
    pub fn complete(
        &mut self,
        process: u64,
        time_ns: u64,
        kind: Kind,
        op: Op,
        error: Option<String>,
    ) -> usize {
        self.complete_stale(process, time_ns, kind, op, error, None)
    }

    /// Like `complete`, for a read served from a cache that may be up to
    /// `stale_ns` behind (`None`: an ordinary completion).
    ///
    /// # Panics
    /// As `complete`, and if `stale_ns` is set on anything but an ok read.
    /// See `try_complete_stale`.
    pub fn complete_stale(
        &mut self,
        process: u64,
        time_ns: u64,
        kind: Kind,
        op: Op,
        error: Option<String>,
        stale_ns: Option<u64>,
    ) -> usize {
        match self.try_complete_stale(process, time_ns, kind, op, error, stale_ns) {
            Ok(index) => index,
            Err(kind) => panic!("history misuse: {kind}"),
        }
    }

    /// Like `complete`, returning what is wrong instead of panicking.
    pub fn try_complete(
        &mut self,
        process: u64,
        time_ns: u64,
        kind: Kind,
        op: Op,
        error: Option<String>,
    ) -> Result<usize, HistoryErrorKind> {
        self.try_complete_stale(process, time_ns, kind, op, error, None)
    }

    /// Like `complete_stale`, returning what is wrong instead of panicking.
    pub fn try_complete_stale(
        &mut self,
        process: u64,
        time_ns: u64,
        kind: Kind,
        op: Op,
        error: Option<String>,
        stale_ns: Option<u64>,
    ) -> Result<usize, HistoryErrorKind> {
        // A completion belongs to the phase of its invocation.
        let phase = self
            .open
            .get(&process)
            .and_then(|&i| self.entries.get(i))
            .map(|e| e.phase)
            .unwrap_or_default();
        let entry = Entry {
            index: self.entries.len(),
            entry_type: kind.into(),
            process,
            time_ns,
            op,
            phase,
            error,
            stale_ns,
        };
        self.push(entry)
    }

    /// Appends a validated entry; the single place where the invariant is kept.
    fn push(&mut self, entry: Entry) -> Result<usize, HistoryErrorKind> {
        let expected = self.entries.len();
        if entry.index != expected {
            return Err(HistoryErrorKind::IndexOutOfSequence { expected, got: entry.index });
        }
        if let Some(last) = self.entries.last() {
            if entry.time_ns < last.time_ns {
                return Err(HistoryErrorKind::TimeWentBackwards {
                    previous: last.time_ns,
                    got: entry.time_ns,
                });
            }
        }
        let stale_allowed = entry.entry_type == EntryType::Ok && matches!(entry.op, Op::Read { .. });
        if entry.stale_ns.is_some() && !stale_allowed {
            return Err(HistoryErrorKind::StalenessNotOnRead {
                f: entry.op.name().to_string(),
                entry_type: entry.entry_type,
            });
        }
        match entry.entry_type {
            EntryType::Invoke => {
                if let Some(&open) = self.open.get(&entry.process) {
                    return Err(HistoryErrorKind::TwoOpenOperations {
                        process: entry.process,
                        open_line: self.line_of(open),
                    });
                }
                self.open.insert(entry.process, expected);
            }
            EntryType::Ok | EntryType::Fail | EntryType::Info => {
                let Some(&open) = self.open.get(&entry.process) else {
                    return Err(HistoryErrorKind::CompletionWithoutInvocation {
                        process: entry.process,
                    });
                };
                let invoked = &self.entries[open].op;
                if !invoked.same_inputs(&entry.op) {
                    return Err(HistoryErrorKind::OpMismatch {
                        invoked: invoked.describe(),
                        completed: entry.op.describe(),
                        invoke_line: self.line_of(open),
                    });
                }
                if entry.entry_type == EntryType::Ok {
                    match &entry.op {
                        Op::Append { pkey, seq: None } => return Err(HistoryErrorKind::MissingOutput { pkey: pkey.clone() }),
                        Op::StreamOpen { stream, epoch: None } | Op::StreamAppend { stream, offset: None, .. } | Op::StreamRead { stream, value: None, .. } => {
                            return Err(HistoryErrorKind::MissingOutput { pkey: stream.clone() })
                        }
                        _ => {}
                    }
                }
                self.open.remove(&entry.process);
            }
        }
        self.entries.push(entry);
        Ok(expected)
    }

    /// Pairs invocations with completions, in invocation order.
    pub fn operations(&self) -> Vec<Operation<'_>> {
        // Entry index of the invocation -> position in `ops`.
        let mut ops: Vec<Operation<'_>> = Vec::with_capacity(self.entries.len() / 2 + 1);
        let mut open: BTreeMap<u64, usize> = BTreeMap::new();
        for e in &self.entries {
            match e.entry_type {
                EntryType::Invoke => {
                    open.insert(e.process, ops.len());
                    ops.push(Operation {
                        process: e.process,
                        invoke_index: e.index,
                        invoke_ns: e.time_ns,
                        complete_index: None,
                        complete_ns: None,
                        outcome: Outcome::Open,
                        op: &e.op,
                        phase: e.phase,
                        error: None,
                        stale_ns: None,
                    });
                }
                EntryType::Ok | EntryType::Fail | EntryType::Info => {
                    // The invariant guarantees an open invocation; skip defensively.
                    let Some(pos) = open.remove(&e.process) else { continue };
                    let o = &mut ops[pos];
                    o.complete_index = Some(e.index);
                    o.complete_ns = Some(e.time_ns);
                    o.outcome = match e.entry_type {
                        EntryType::Ok => Outcome::Ok,
                        EntryType::Fail => Outcome::Fail,
                        _ => Outcome::Info,
                    };
                    o.op = &e.op;
                    o.error = e.error.as_deref();
                    o.stale_ns = e.stale_ns;
                }
            }
        }
        ops
    }

    /// Writes the history as JSON lines.
    pub fn write_jsonl(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        for e in &self.entries {
            serde_json::to_writer(&mut *w, e)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Parses JSON lines. Blank lines and lines starting with `#` are skipped (so
    /// test files may carry a `# why` comment).
    pub fn parse_jsonl(text: &str) -> Result<History, HistoryError> {
        let mut history = History { lines: Some(Vec::new()), ..History::default() };
        let ends_with_newline = text.ends_with('\n');
        let line_count = text.lines().count();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let entry: Entry = match serde_json::from_str(trimmed) {
                Ok(entry) => entry,
                Err(err) => {
                    // A writer killed mid-line leaves an unterminated last line
                    // that is cut inside the JSON value.
                    let kind = if line == line_count && !ends_with_newline && err.is_eof() {
                        HistoryErrorKind::Truncated(err.to_string())
                    } else {
                        HistoryErrorKind::Malformed(err.to_string())
                    };
                    return Err(HistoryError { line, kind });
                }
            };
            if let Some(lines) = history.lines.as_mut() {
                lines.push(line);
            }
            if let Err(kind) = history.push(entry) {
                return Err(HistoryError { line, kind });
            }
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut for plain strings renders exactly what `{:?}` does.
    #[test]
    fn debug_strings_render_as_the_formatter_does() {
        let mut cases: Vec<String> = (0u8..=127).map(|b| format!("a{}b", b as char)).collect();
        cases.extend(["", "p10.1", "\"", "\\", "it's", "tab\there", "é", "\u{200b}", "line\nbreak", "\u{7f}"].map(String::from));
        for s in cases {
            let mut out = String::from(">");
            push_debug_str(&mut out, &s);
            assert_eq!(out, format!(">{s:?}"), "{s:?}");
        }
        let op = Op::Cas { key: "k1".into(), expected: None, value: "v\"1".into() };
        assert_eq!(op.describe(), "cas k1 nil -> \"v\\\"1\"");
        let op = Op::Read { key: "k2".into(), value: Some("x y".into()) };
        assert_eq!(op.describe(), "read k2 -> \"x y\"");
    }

    const W_INVOKE: &str = r#"{"index":0,"type":"invoke","process":1,"time_ns":0,"op":{"f":"write","key":"k","value":"a"}}"#;
    const W_OK: &str = r#"{"index":1,"type":"ok","process":1,"time_ns":10,"op":{"f":"write","key":"k","value":"a"}}"#;
    const R_INVOKE: &str = r#"{"index":2,"type":"invoke","process":2,"time_ns":20,"op":{"f":"read","key":"k","value":null}}"#;

    fn parse_err(lines: &[&str]) -> HistoryError {
        History::parse_jsonl(&lines.join("\n")).expect_err("history must be refused")
    }

    /// A stale allowance sits only on an ok read completion; it is kept
    /// through a round trip, written after `error`, and shows in `describe`.
    #[test]
    fn stale_reads_parse_and_round_trip() {
        let read_ok = r#"{"index":3,"type":"ok","process":2,"time_ns":30,"op":{"f":"read","key":"k","value":"a"},"phase":"main","error":"cached","stale_ns":5000000}"#;
        let text = [W_INVOKE, W_OK, R_INVOKE, read_ok].join("\n") + "\n";
        let h = History::parse_jsonl(&text).expect("parses");
        assert_eq!(h.entries()[3].stale_ns, Some(5_000_000));
        assert!(h.entries()[..3].iter().all(|e| e.stale_ns.is_none()));
        let ops = h.operations();
        assert_eq!(ops[0].stale_ns, None);
        assert_eq!(ops[1].stale_ns, Some(5_000_000));
        assert!(ops[1].describe().contains(r#"read k -> "a" (stale ≤ 5ms)"#), "{}", ops[1].describe());
        let mut out = Vec::new();
        h.write_jsonl(&mut out).expect("writes");
        let out = String::from_utf8(out).expect("utf-8");
        assert_eq!(out.lines().nth(3), Some(read_ok));
        // Entries without the field serialize exactly as before it existed.
        let plain = r#"{"index":1,"type":"ok","process":1,"time_ns":10,"op":{"f":"write","key":"k","value":"a"},"phase":"main"}"#;
        assert_eq!(out.lines().nth(1), Some(plain));
    }

    #[test]
    fn stale_ns_on_a_write_completion_is_refused() {
        let w_ok = r#"{"index":1,"type":"ok","process":1,"time_ns":10,"op":{"f":"write","key":"k","value":"a"},"stale_ns":5}"#;
        let err = parse_err(&["# why", W_INVOKE, w_ok]);
        assert_eq!(err.line, 3);
        assert_eq!(err.kind, HistoryErrorKind::StalenessNotOnRead { f: "write".into(), entry_type: EntryType::Ok });
        assert_eq!(err.to_string(), "line 3: stale_ns on a `write` ok entry: only an ok read completion may carry one");
        let cas_ok = r#"{"index":1,"type":"ok","process":1,"time_ns":10,"op":{"f":"cas","key":"k","expected":null,"value":"a"},"stale_ns":5}"#;
        let cas_invoke = r#"{"index":0,"type":"invoke","process":1,"time_ns":0,"op":{"f":"cas","key":"k","expected":null,"value":"a"}}"#;
        let err = parse_err(&[cas_invoke, cas_ok]);
        assert_eq!(err.kind, HistoryErrorKind::StalenessNotOnRead { f: "cas".into(), entry_type: EntryType::Ok });
    }

    #[test]
    fn stale_ns_on_an_invocation_or_a_failed_read_is_refused() {
        let r_invoke = r#"{"index":2,"type":"invoke","process":2,"time_ns":20,"op":{"f":"read","key":"k"},"stale_ns":5}"#;
        let err = parse_err(&[W_INVOKE, W_OK, r_invoke]);
        assert_eq!((err.line, err.kind), (3, HistoryErrorKind::StalenessNotOnRead { f: "read".into(), entry_type: EntryType::Invoke }));
        let r_fail = r#"{"index":3,"type":"fail","process":2,"time_ns":30,"op":{"f":"read","key":"k"},"stale_ns":5}"#;
        let err = parse_err(&[W_INVOKE, W_OK, R_INVOKE, r_fail]);
        assert_eq!((err.line, err.kind), (4, HistoryErrorKind::StalenessNotOnRead { f: "read".into(), entry_type: EntryType::Fail }));
    }

    /// The runner's path refuses the same, and leaves the history as it was.
    #[test]
    fn try_complete_stale_refuses_an_allowance_on_a_write() {
        let mut h = History::new();
        let write = Op::Write { key: "k".into(), value: "a".into() };
        h.invoke(1, 0, write.clone(), Phase::Main);
        let err = h.try_complete_stale(1, 10, Kind::Ok, write.clone(), None, Some(5));
        assert_eq!(err, Err(HistoryErrorKind::StalenessNotOnRead { f: "write".into(), entry_type: EntryType::Ok }));
        assert_eq!(h.len(), 1);
        h.complete(1, 10, Kind::Ok, write, None);
        let read = Op::Read { key: "k".into(), value: None };
        h.invoke(1, 20, read, Phase::Main);
        let index = h.complete_stale(1, 30, Kind::Ok, Op::Read { key: "k".into(), value: Some("a".into()) }, None, Some(5));
        assert_eq!(h.entries()[index].stale_ns, Some(5));
    }
}
