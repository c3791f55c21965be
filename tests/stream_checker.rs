//! The stream checker against hand-built histories: valid ones that a naive
//! checker would flag, and one of each violation.

use tablesim::check::{check_all, CheckConfig, Checker, CheckerReport, Verdict};
use tablesim::history::{History, Kind, Op, Phase};

/// Builds a history one step at a time; time advances by 1 per entry.
struct B {
    h: History,
    t: u64,
}

impl B {
    fn new() -> B {
        B { h: History::new(), t: 0 }
    }
    fn tick(&mut self) -> u64 {
        self.t += 1;
        self.t
    }
    fn invoke(&mut self, p: u64, op: Op, phase: Phase) -> &mut Self {
        let t = self.tick();
        self.h.invoke(p, t, op, phase);
        self
    }
    fn done(&mut self, p: u64, kind: Kind, op: Op, error: Option<&str>) -> &mut Self {
        let t = self.tick();
        self.h.complete(p, t, kind, op, error.map(str::to_string));
        self
    }
    fn open(&mut self, p: u64, epoch: u64) -> &mut Self {
        self.invoke(p, Op::StreamOpen { stream: "s".into(), epoch: None }, Phase::Main);
        self.done(p, Kind::Ok, Op::StreamOpen { stream: "s".into(), epoch: Some(epoch) }, None)
    }
    fn append_invoke(&mut self, p: u64, v: &str) -> &mut Self {
        self.invoke(p, Op::StreamAppend { stream: "s".into(), value: v.into(), offset: None }, Phase::Main)
    }
    fn append_done(&mut self, p: u64, v: &str, kind: Kind, offset: Option<u64>, error: Option<&str>) -> &mut Self {
        self.done(p, kind, Op::StreamAppend { stream: "s".into(), value: v.into(), offset }, error)
    }
    fn append(&mut self, p: u64, v: &str, offset: u64) -> &mut Self {
        self.append_invoke(p, v).append_done(p, v, Kind::Ok, Some(offset), None)
    }
    fn read(&mut self, p: u64, offset: u64, len: u64, got: &str, phase: Phase) -> &mut Self {
        self.invoke(p, Op::StreamRead { stream: "s".into(), offset, len, value: None }, phase);
        self.done(p, Kind::Ok, Op::StreamRead { stream: "s".into(), offset, len, value: Some(got.into()) }, None)
    }
    /// The final phase: reads the whole content in one chunk, then the short read at its end.
    fn final_content(&mut self, content: &str) -> &mut Self {
        let n = content.len() as u64;
        self.read(99, 0, n, content, Phase::Final).read(99, n, 64, "", Phase::Final)
    }
    fn stream_report(&self) -> CheckerReport {
        let v = check_all(&self.h, &CheckConfig::default());
        v.report(Checker::Stream).clone()
    }
}

fn count(r: &CheckerReport, name: &str) -> u64 {
    r.counts.get(name).copied().unwrap_or_else(|| panic!("no count {name} in {r:?}"))
}

fn assert_fails(b: &B, counter: &str) {
    let r = b.stream_report();
    assert_eq!(r.verdict, Verdict::Fail, "expected a failure counted as {counter}: {r:?}");
    assert!(count(&r, counter) >= 1, "expected {counter} >= 1: {r:?}");
    assert!(r.counterexample.is_some());
}

#[test]
fn a_clean_stream_passes_and_counts_what_it_checked() {
    let mut b = B::new();
    b.open(1, 1).append(1, "[a]", 0).append(1, "[bb]", 3).read(2, 1, 4, "a][b", Phase::Main).final_content("[a][bb]");
    let r = b.stream_report();
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(count(&r, "acked_stream_appends"), 2);
    assert_eq!(count(&r, "reads_checked"), 3);
    assert_eq!(count(&r, "streams"), 1);
}

#[test]
fn appends_with_unknown_outcome_may_or_may_not_appear() {
    let mut b = B::new();
    b.open(1, 1).append_invoke(1, "[x]").append_done(1, "[x]", Kind::Info, None, Some("timeout"));
    b.append_invoke(1, "[y]").append_done(1, "[y]", Kind::Info, None, Some("timeout"));
    b.append(1, "[z]", 3).final_content("[x][z]");
    assert_eq!(b.stream_report().verdict, Verdict::Pass);
}

#[test]
fn an_append_invoked_before_the_fence_may_be_acknowledged_after_it() {
    // p1's append was in flight when p2 opened: all three replicas may have
    // taken it before their fence, so its late acknowledgement is legal.
    let mut b = B::new();
    b.open(1, 1).append_invoke(1, "[a]").open(2, 2).append_done(1, "[a]", Kind::Ok, Some(0), None);
    b.append(2, "[b]", 3).final_content("[a][b]");
    assert_eq!(b.stream_report().verdict, Verdict::Pass, "{:?}", b.stream_report());
}

#[test]
fn a_fenced_writer_that_is_refused_is_fine_and_counted() {
    let mut b = B::new();
    b.open(1, 1).open(2, 2).append_invoke(1, "[late]").append_done(1, "[late]", Kind::Fail, None, Some("fenced"));
    b.append(2, "[b]", 0).final_content("[b]");
    let r = b.stream_report();
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(count(&r, "fenced_appends"), 1);
}

#[test]
fn a_writer_that_reopens_is_no_longer_fenced() {
    let mut b = B::new();
    b.open(1, 1).open(2, 2).open(1, 3).append(1, "[a]", 0).final_content("[a]");
    let r = b.stream_report();
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(count(&r, "fenced_appends"), 0);
}

#[test]
fn a_lost_acknowledged_append_fails() {
    let mut b = B::new();
    b.open(1, 1).append(1, "[a]", 0).append(1, "[b]", 3).final_content("[a]");
    assert_fails(&b, "lost_acked_appends");
}

#[test]
fn two_readers_seeing_different_bytes_fail() {
    let mut b = B::new();
    b.open(1, 1).append_invoke(1, "[a]").append_done(1, "[a]", Kind::Info, None, None);
    b.read(2, 0, 3, "[a]", Phase::Main).read(3, 0, 3, "[c]", Phase::Main);
    assert_fails(&b, "read_disagreements");
}

#[test]
fn a_read_contradicting_an_acknowledged_append_fails() {
    let mut b = B::new();
    b.open(1, 1).append(1, "[a]", 0).read(2, 0, 3, "[b]", Phase::Main);
    assert_fails(&b, "acked_bytes_differ");
}

#[test]
fn an_acknowledged_append_visible_elsewhere_fails() {
    let mut b = B::new();
    b.open(1, 1).append_invoke(1, "[x]").append_done(1, "[x]", Kind::Info, None, None).append(1, "[a]", 0).final_content("[x][a]");
    assert_fails(&b, "acked_bytes_differ");
}

#[test]
fn overlapping_acknowledgements_fail() {
    let mut b = B::new();
    b.open(1, 1).append(1, "[aaaa]", 0).append(1, "[b]", 2);
    assert_fails(&b, "overlapping_acks");
}

#[test]
fn a_fenced_append_acknowledged_fails() {
    let mut b = B::new();
    b.open(1, 1).open(2, 2).append(1, "[late]", 0);
    assert_fails(&b, "fenced_appends_acked");
}

#[test]
fn a_fenced_append_that_becomes_visible_fails() {
    let mut b = B::new();
    b.open(1, 1).open(2, 2).append_invoke(1, "[late]").append_done(1, "[late]", Kind::Info, None, Some("timeout"));
    b.append(2, "[b]", 6).final_content("[late][b]");
    assert_fails(&b, "fenced_appends_visible");
}

#[test]
fn two_writers_with_one_epoch_fail() {
    let mut b = B::new();
    b.open(1, 4).open(2, 4);
    assert_fails(&b, "duplicate_epochs");
}

#[test]
fn a_failed_append_that_is_visible_fails() {
    let mut b = B::new();
    b.open(1, 1).append_invoke(1, "[f]").append_done(1, "[f]", Kind::Fail, None, Some("refused")).final_content("[f]");
    assert_fails(&b, "failed_appends_visible");
}

#[test]
fn an_append_visible_twice_fails() {
    let mut b = B::new();
    b.open(1, 1).append_invoke(1, "[d]").append_done(1, "[d]", Kind::Info, None, None).final_content("[d][d]");
    assert_fails(&b, "duplicated_appends");
}

#[test]
fn bytes_nobody_appended_fail() {
    let mut b = B::new();
    b.open(1, 1).append(1, "[a]", 0).final_content("[a][zz]");
    assert_fails(&b, "foreign_bytes");
    let mut b = B::new();
    b.open(1, 1).append(1, "[a]", 0).final_content("[a]\0\0");
    assert_fails(&b, "foreign_bytes");
}

#[test]
fn an_unfinished_final_phase_leaves_appends_unverified_not_lost() {
    let mut b = B::new();
    b.open(1, 1).append(1, "[a]", 0).append(1, "[b]", 3);
    b.invoke(99, Op::StreamRead { stream: "s".into(), offset: 0, len: 64, value: None }, Phase::Final);
    b.done(99, Kind::Info, Op::StreamRead { stream: "s".into(), offset: 0, len: 64, value: None }, Some("timeout"));
    let r = b.stream_report();
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(count(&r, "unverified_appends"), 2);
    assert_eq!(count(&r, "lost_acked_appends"), 0);
}

#[test]
fn liveness_takes_a_fenced_refusal_for_an_answer() {
    let mut b = B::new();
    b.open(1, 1).open(2, 2);
    b.invoke(1, Op::StreamAppend { stream: "s".into(), value: "[x]".into(), offset: None }, Phase::Final);
    b.done(1, Kind::Fail, Op::StreamAppend { stream: "s".into(), value: "[x]".into(), offset: None }, Some("fenced: epoch 1 < 2"));
    b.invoke(1, Op::StreamAppend { stream: "s".into(), value: "[y]".into(), offset: None }, Phase::Final);
    b.done(1, Kind::Fail, Op::StreamAppend { stream: "s".into(), value: "[y]".into(), offset: None }, Some("unavailable"));
    let v = check_all(&b.h, &CheckConfig::default());
    let live = v.report(Checker::Liveness);
    assert_eq!(count(live, "failed_after_bound"), 1, "{live:?}");
}

#[test]
fn stream_histories_round_trip_through_json_lines() {
    let mut b = B::new();
    b.open(1, 1).append(1, "[a]", 0).final_content("[a]");
    let mut out = Vec::new();
    b.h.write_jsonl(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"f\":\"stream-append\""), "{text}");
    let back = History::parse_jsonl(&text).unwrap();
    assert_eq!(back.entries(), b.h.entries());
    // An ok append without its offset is refused, naming the line.
    let bad = text.replacen("\"offset\":0", "\"offset\":null", 1);
    let err = History::parse_jsonl(&bad).unwrap_err();
    assert_eq!(err.line, 4, "{err}");
}
