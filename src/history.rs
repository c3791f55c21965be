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
//! phase. `error` is optional text on completions. Written values are unique
//! per key. Blank lines and lines starting with `#` are skipped when parsing.
//!
//! Invariant: a `History` is always well formed (indices count from 0, time never
//! goes backwards, every completion matches the open invocation of its process).
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
/// checkers use them for real-time precedence and `time_ns` only for display and
/// for the liveness bound.
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
}

impl Operation<'_> {
    /// True when `self` certainly finished before `other` started.
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

    /// One line: process, outcome, op and span.
    pub fn describe(&self) -> String {
        format!("p{} {} {} ({})", self.process, self.outcome.name(), self.op.describe(), self.span())
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
        match self.try_complete(process, time_ns, kind, op, error) {
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
}
