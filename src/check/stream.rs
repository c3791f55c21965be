//! Streams: what readers saw, what writers were told, and what the stream
//! finally holds must agree.
//!
//! Per stream, from `stream-open`, `stream-append` and `stream-read`
//! operations:
//! - **one byte per offset**: no two ok reads ever returned different bytes
//!   at one offset (`read_disagreements`);
//! - **acknowledged appends stay where they were acknowledged**: two ok
//!   appends never overlap (`overlapping_acks`), every read that covers an
//!   ok append shows its bytes (`acked_bytes_differ`), and once the final
//!   phase has read the whole committed stream, every ok append lies inside
//!   it (`lost_acked_appends`);
//! - **fencing**: an append is *fenced* when, before it was invoked, another
//!   process's `stream-open` completed ok with a higher epoch than the
//!   appender's own latest ok open. A fenced append never completes ok
//!   (`fenced_appends_acked`) and its bytes never appear
//!   (`fenced_appends_visible`); no two ok opens of a stream share an epoch
//!   (`duplicate_epochs`);
//! - **the final content is made of appends**: stream-append values are
//!   bracketed, `[` … `]` with no bracket inside, so the content the final
//!   phase read splits back into values; each must be the value of an
//!   append that did not fail (`failed_appends_visible`), appear once
//!   (`duplicated_appends`), and sit at its acknowledged offset if it was
//!   acknowledged; bytes that split into no append are `foreign_bytes`.
//!
//! The final phase reads each stream from offset 0 in chunks until a read
//! comes back short (the committed end). When it did not get there (a read
//! failed) the stream's acknowledged appends are counted as
//! `unverified_appends` instead of judged.

use std::collections::BTreeMap;

use super::verdict::{CheckerReport, Verdict};
use crate::history::{Op, Operation, Outcome, Phase};

/// Largest stream end (bytes) the checker tracks; beyond it the verdict is unknown.
pub const STREAM_BYTES_MAX: u64 = 1 << 30;

#[derive(Default)]
struct StreamOps<'h> {
    opens: Vec<&'h Operation<'h>>,
    appends: Vec<&'h Operation<'h>>,
    reads: Vec<&'h Operation<'h>>,
}

pub fn check(all: &[Operation<'_>]) -> CheckerReport {
    let mut report = CheckerReport::new(Verdict::Pass);
    for name in [
        "streams",
        "acked_stream_appends",
        "reads_checked",
        "lost_acked_appends",
        "read_disagreements",
        "acked_bytes_differ",
        "overlapping_acks",
        "fenced_appends",
        "fenced_appends_acked",
        "fenced_appends_visible",
        "duplicate_epochs",
        "failed_appends_visible",
        "duplicated_appends",
        "foreign_bytes",
        "unverified_appends",
    ] {
        report.count(name, 0);
    }
    let mut streams: BTreeMap<&str, StreamOps<'_>> = BTreeMap::new();
    for o in all {
        let Some(s) = o.op.stream() else { continue };
        let e = streams.entry(s).or_default();
        match o.op {
            Op::StreamOpen { .. } => e.opens.push(o),
            Op::StreamAppend { .. } => e.appends.push(o),
            Op::StreamRead { .. } => e.reads.push(o),
            _ => {}
        }
    }
    if streams.is_empty() {
        let mut r = CheckerReport::new(Verdict::Skipped);
        r.note = Some("no stream operations in the history".to_string());
        return r;
    }
    let mut totals = Totals::default();
    for (name, ops) in &streams {
        if let Err(why) = check_stream(name, ops, &mut report, &mut totals) {
            if report.verdict == Verdict::Pass {
                report.verdict = Verdict::Unknown;
            }
            report.note.get_or_insert(why);
        }
    }
    report.count("streams", streams.len() as u64);
    report.count("acked_stream_appends", totals.acked);
    report.count("reads_checked", totals.reads);
    report.count("fenced_appends", totals.fenced);
    report
}

#[derive(Default)]
struct Totals {
    acked: u64,
    reads: u64,
    fenced: u64,
}

fn check_stream(stream: &str, ops: &StreamOps<'_>, report: &mut CheckerReport, totals: &mut Totals) -> Result<(), String> {
    // Fencing: ok opens in completion order.
    let mut opens: Vec<(usize, u64, u64)> = ops
        .opens
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| match o.op {
            Op::StreamOpen { epoch: Some(e), .. } => Some((o.complete_index.unwrap_or(usize::MAX), *e, o.process)),
            _ => None,
        })
        .collect();
    opens.sort_unstable();
    let mut by_epoch: BTreeMap<u64, u64> = BTreeMap::new();
    for &(_, epoch, process) in &opens {
        if let Some(other) = by_epoch.insert(epoch, process) {
            report.violation("duplicate_epochs", || format!("stream {stream}: processes p{other} and p{process} both opened epoch {epoch}"));
        }
    }
    let fenced = |a: &Operation<'_>| -> bool {
        let before = opens.iter().filter(|(c, _, _)| *c < a.invoke_index);
        let mine = before.clone().filter(|(_, _, p)| *p == a.process).map(|(_, e, _)| *e).max().unwrap_or(0);
        before.filter(|(_, _, p)| *p != a.process).any(|(_, e, _)| *e > mine)
    };

    // Acknowledged appends, by offset.
    let mut acked: BTreeMap<u64, &Operation<'_>> = BTreeMap::new();
    let mut by_value: BTreeMap<&str, (&Operation<'_>, bool)> = BTreeMap::new();
    for a in &ops.appends {
        let Op::StreamAppend { value, offset, .. } = a.op else { continue };
        let is_fenced = fenced(a);
        if is_fenced {
            totals.fenced += 1;
        }
        by_value.insert(value.as_str(), (a, is_fenced));
        if a.outcome != Outcome::Ok {
            continue;
        }
        if is_fenced {
            report.violation("fenced_appends_acked", || format!("stream {stream}: an append invoked after its writer was fenced was acknowledged: {}", a.describe()));
        }
        let Some(o) = *offset else { continue };
        totals.acked += 1;
        if let Some(prev) = acked.insert(o, a) {
            report.violation("overlapping_acks", || format!("stream {stream}: two appends acknowledged at offset {o}:\n  {}\n  {}", prev.describe(), a.describe()));
        }
    }
    let mut end = 0u64;
    for (&o, a) in &acked {
        if let Op::StreamAppend { value, .. } = a.op {
            if o < end {
                report.violation("overlapping_acks", || format!("stream {stream}: acknowledged append overlaps the one before it: {}", a.describe()));
            }
            end = end.max(o + value.len() as u64);
        }
    }

    // What readers saw, byte by byte, with the read that first showed it.
    let mut stream_end = end;
    for r in ops.reads.iter().filter(|r| r.outcome == Outcome::Ok) {
        if let Op::StreamRead { offset, value: Some(v), .. } = r.op {
            stream_end = stream_end.max(offset + v.len() as u64);
        }
    }
    if stream_end > STREAM_BYTES_MAX {
        return Err(format!("stream {stream} reaches offset {stream_end}, beyond the checker's {STREAM_BYTES_MAX} bytes"));
    }
    let mut seen: Vec<Option<(u8, usize)>> = vec![None; stream_end as usize];
    for (ri, r) in ops.reads.iter().enumerate().filter(|(_, r)| r.outcome == Outcome::Ok) {
        let Op::StreamRead { offset, value: Some(v), .. } = r.op else { continue };
        totals.reads += 1;
        for (i, &b) in v.as_bytes().iter().enumerate() {
            let at = *offset as usize + i;
            match seen[at] {
                None => seen[at] = Some((b, ri)),
                Some((old, first)) if old != b => {
                    report.violation("read_disagreements", || {
                        format!("stream {stream}: two reads saw different bytes at offset {at}:\n  {}\n  {}", ops.reads[first].describe(), r.describe())
                    });
                    break;
                }
                Some(_) => {}
            }
        }
    }
    for (&o, a) in &acked {
        let Op::StreamAppend { value, .. } = a.op else { continue };
        let differs = value.as_bytes().iter().enumerate().any(|(i, &b)| seen[o as usize + i].is_some_and(|(s, _)| s != b));
        if differs {
            report.violation("acked_bytes_differ", || format!("stream {stream}: a read shows other bytes where an append was acknowledged: {}", a.describe()));
        }
    }

    // The final phase: the committed end, and whether it read all of [0, end).
    let finals: Vec<&Operation<'_>> = ops.reads.iter().copied().filter(|r| r.phase == Phase::Final).collect();
    let committed_end = finals.iter().filter(|r| r.outcome == Outcome::Ok).find_map(|r| match r.op {
        Op::StreamRead { offset, len, value: Some(v), .. } if (v.len() as u64) < *len => Some(offset + v.len() as u64),
        _ => None,
    });
    let complete = committed_end.filter(|&e| seen[..e as usize].iter().all(Option::is_some));
    let Some(final_end) = complete else {
        *report.counts.entry("unverified_appends").or_insert(0) += acked.len() as u64;
        return Ok(());
    };
    for a in acked.iter().filter(|(&o, _)| o >= final_end).map(|(_, a)| a) {
        report.violation("lost_acked_appends", || format!("stream {stream}: the final reads end at offset {final_end}, before this acknowledged append: {}", a.describe()));
    }
    // Split the final content back into appends.
    let content: Vec<u8> = seen[..final_end as usize].iter().map(|s| s.map(|(b, _)| b).unwrap_or(0)).collect();
    let mut at = 0usize;
    let mut visible: BTreeMap<&str, usize> = BTreeMap::new();
    while at < content.len() {
        let close = if content[at] == b'[' { content[at..].iter().position(|&b| b == b']').map(|p| at + p) } else { None };
        let Some(close) = close else {
            report.violation("foreign_bytes", || format!("stream {stream}: bytes at offset {at} are not an append value: {:?}", String::from_utf8_lossy(&content[at..content.len().min(at + 40)])));
            break;
        };
        let text = String::from_utf8_lossy(&content[at..=close]).into_owned();
        match by_value.get(text.as_str()) {
            None => {
                report.violation("foreign_bytes", || format!("stream {stream}: {text:?} at offset {at} was never appended"));
            }
            Some(&(a, is_fenced)) => {
                if let Some(first) = visible.insert(by_value.get_key_value(text.as_str()).map(|(k, _)| *k).unwrap_or(""), at) {
                    report.violation("duplicated_appends", || format!("stream {stream}: append visible at offsets {first} and {at}: {}", a.describe()));
                }
                if a.outcome == Outcome::Fail {
                    report.violation("failed_appends_visible", || format!("stream {stream}: a failed append is visible at offset {at}: {}", a.describe()));
                }
                if is_fenced {
                    report.violation("fenced_appends_visible", || format!("stream {stream}: a fenced writer's append is visible at offset {at}: {}", a.describe()));
                }
                if let Op::StreamAppend { offset: Some(o), .. } = a.op {
                    if a.outcome == Outcome::Ok && *o != at as u64 {
                        report.violation("acked_bytes_differ", || format!("stream {stream}: append acknowledged at {o} is visible at {at}: {}", a.describe()));
                    }
                }
            }
        }
        at = close + 1;
    }
    Ok(())
}
