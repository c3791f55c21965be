//! Checkers against hand-written histories (tests/histories, generated from the
//! compact descriptions in tests/gen/make_histories.py), malformed files,
//! generated valid histories and a brute-force cross-check of the search.

use tablesim::check::linearizable::{self, KeyVerdict};
use tablesim::check::{bench, check_all, CheckConfig, Checker, Verdict, Verdicts};
use tablesim::history::{History, HistoryErrorKind, Kind, Op, Outcome, Phase};

const P: Verdict = Verdict::Pass;
const F: Verdict = Verdict::Fail;

macro_rules! history_file {
    ($name:literal) => {
        ($name, include_str!(concat!("histories/", $name, ".jsonl")))
    };
}

/// One row: file, verdicts (linearizable, durability, sequence, liveness), counts.
struct Case {
    file: (&'static str, &'static str),
    verdicts: [Verdict; 4],
    counts: &'static [(&'static str, u64)],
}

fn cases() -> Vec<Case> {
    let c = |file, verdicts, counts| Case { file, verdicts, counts };
    vec![
        // Valid histories, several of which a naive checker would flag.
        c(history_file!("lin_valid_sequential"), [P, P, P, P], &[("keys", 1)]),
        c(history_file!("lin_valid_concurrent"), [P, P, P, P], &[]),
        c(history_file!("lin_valid_read_in_flight"), [P, P, P, P], &[]),
        c(history_file!("lin_valid_info_late"), [P, P, P, P], &[]),
        c(history_file!("lin_valid_info_never"), [P, P, P, P], &[]),
        c(history_file!("lin_valid_fail_and_info_reads"), [P, P, P, P], &[]),
        c(history_file!("lin_valid_cas"), [P, P, P, P], &[]),
        // Linearizability violations.
        c(history_file!("lin_stale_read"), [F, P, P, P], &[("keys_not_linearizable", 1)]),
        c(history_file!("lin_lost_write"), [F, P, P, P], &[]),
        c(history_file!("lin_phantom_read"), [F, F, P, P], &[("phantom_reads", 1)]),
        c(history_file!("lin_failed_write_read"), [F, F, P, P], &[("failed_write_reads", 1)]),
        c(history_file!("lin_future_read"), [F, F, P, P], &[("future_reads", 1)]),
        c(history_file!("lin_info_read_then_unread"), [F, P, P, P], &[]),
        c(history_file!("lin_cas_wrong_expected"), [F, P, P, P], &[]),
        c(history_file!("lin_cas_absent_but_exists"), [F, P, P, P], &[]),
        c(history_file!("lin_cas_lost"), [F, P, P, P], &[]),
        c(history_file!("lin_delete_undone"), [F, P, P, P], &[]),
        c(history_file!("lin_two_keys_one_bad"), [F, P, P, P], &[("keys", 2), ("keys_not_linearizable", 1)]),
        // Durability.
        c(history_file!("dur_valid"), [P, P, P, P], &[("final_reads", 4), ("lost_acked_writes", 0)]),
        c(history_file!("dur_valid_concurrent"), [P, P, P, P], &[("lost_acked_writes", 0)]),
        c(history_file!("dur_lost_write_absent"), [F, F, P, P], &[("lost_acked_writes", 1)]),
        c(history_file!("dur_lost_write_older"), [F, F, P, P], &[("lost_acked_writes", 2)]),
        c(history_file!("dur_failed_write_final"), [F, F, P, P], &[("failed_write_reads", 1), ("lost_acked_writes", 0)]),
        c(history_file!("dur_info_read_then_lost"), [F, F, P, P], &[("lost_acked_writes", 1)]),
        c(history_file!("dur_lost_write_read_evidence"), [F, F, P, P], &[("lost_acked_writes", 1)]),
        c(history_file!("dur_valid_read_then_overwritten"), [P, P, P, P], &[("lost_acked_writes", 0)]),
        c(history_file!("dur_valid_stale_read"), [P, P, P, P], &[("lost_acked_writes", 0), ("stale_reads", 1)]),
        c(history_file!("dur_lost_write_fresh_read"), [F, F, P, P], &[("lost_acked_writes", 1)]),
        c(history_file!("dur_delete_resurrected"), [F, F, P, P], &[("resurrected_deletes", 1)]),
        c(history_file!("dur_unreachable_partition"), [P, F, P, F], &[("unreachable_acked_writes", 3), ("lost_acked_writes", 0), ("final_reads", 1)]),
        c(history_file!("dur_valid_final_retry"), [P, P, P, F], &[("unreachable_acked_writes", 0), ("final_reads", 1)]),
        // Sequences.
        c(history_file!("seq_valid"), [P, P, P, P], &[("acked_appends", 8), ("partitions", 2)]),
        c(history_file!("seq_valid_open_fills_gap"), [P, P, P, F], &[("skipped_values", 0), ("open_at_end", 1)]),
        c(history_file!("seq_duplicate"), [P, P, F, P], &[("duplicates", 1)]),
        c(history_file!("seq_duplicate_concurrent"), [P, P, F, P], &[("duplicates", 1), ("order_violations", 0)]),
        c(history_file!("seq_skip"), [P, P, F, P], &[("skipped_values", 1), ("duplicates", 0)]),
        c(history_file!("seq_skip_fail_is_no_excuse"), [P, P, F, P], &[("skipped_values", 1)]),
        c(history_file!("seq_skip_info_too_late"), [P, P, F, P], &[("skipped_values", 1)]),
        c(history_file!("seq_order"), [P, P, F, P], &[("order_violations", 1), ("skipped_values", 0), ("duplicates", 0)]),
        // Liveness (no heal time: the final phase and open operations are judged).
        c(history_file!("live_valid"), [P, P, P, P], &[("judged", 2)]),
        c(history_file!("live_open_at_end"), [P, P, P, F], &[("open_at_end", 1)]),
        // The key's only final read timed out: its acknowledged write is unreachable too.
        c(history_file!("live_final_timeout"), [P, F, P, F], &[("info_after_bound", 1), ("unreachable_acked_writes", 1)]),
    ]
}

fn check_text(text: &str) -> Verdicts {
    let history = History::parse_jsonl(text).expect("test history parses");
    check_all(&history, &CheckConfig::default())
}

#[test]
fn hand_written_histories_get_the_expected_verdicts() {
    let mut wrong = Vec::new();
    for case in cases() {
        let (name, text) = case.file;
        let v = check_text(text);
        // Key-value histories hold no stream operations: the stream checker skips them.
        let expected = case.verdicts.iter().copied().chain([Verdict::Skipped]);
        for (checker, want) in Checker::ALL.into_iter().zip(expected) {
            let got = v.report(checker).verdict;
            if got != want {
                wrong.push(format!("{name}: {} is {got:?}, expected {want:?}\n{}", checker.name(), v.summary_lines().join("\n")));
            }
        }
        for &(count, expected) in case.counts {
            let got = v.count(count);
            if got != Some(expected) {
                wrong.push(format!("{name}: count {count} is {got:?}, expected {expected}"));
            }
        }
        // Every failure comes with a counterexample.
        for (checker, r) in v.reports() {
            if r.verdict == Verdict::Fail && r.counterexample.is_none() {
                wrong.push(format!("{name}: {} fails without a counterexample", checker.name()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn linearizability_counterexample_is_small_and_names_the_key() {
    let (_, text) = history_file!("lin_two_keys_one_bad");
    let v = check_text(text);
    let ex = v.linearizable.counterexample.as_deref().unwrap_or_default();
    assert!(ex.starts_with("key \"k\" is not linearizable"), "{ex}");
    assert!(ex.contains("smallest failing sub-history of 3 of its 3 operations"), "{ex}");
    // One timeline line per operation: both writes and the stale read.
    let timeline: Vec<&str> = ex.lines().skip(1).collect();
    assert_eq!(timeline.len(), 3, "{ex}");
    assert!(timeline[2].contains("read k -> \"a\""), "{ex}");
}

#[test]
fn stale_read_in_a_long_history_shrinks_to_the_anomaly() {
    let mut h = History::new();
    let mut t = 0;
    let mut step = |h: &mut History, p: u64, op: Op, done: Op| {
        t += 10;
        h.invoke(p, t, op, Phase::Main);
        t += 10;
        h.complete(p, t, Kind::Ok, done, None);
    };
    for i in 0..60 {
        let v = format!("v{i}");
        step(&mut h, 1, Op::Write { key: "k".into(), value: v.clone() }, Op::Write { key: "k".into(), value: v.clone() });
        step(&mut h, 2, Op::Read { key: "k".into(), value: None }, Op::Read { key: "k".into(), value: Some(v) });
    }
    // A stale read of v10 at the end.
    step(&mut h, 3, Op::Read { key: "k".into(), value: None }, Op::Read { key: "k".into(), value: Some("v10".into()) });
    let v = check_all(&h, &CheckConfig::default());
    assert_eq!(v.linearizable.verdict, Verdict::Fail);
    let ex = v.linearizable.counterexample.unwrap_or_default();
    assert!(ex.contains("smallest failing sub-history of 3 of its 121 operations"), "{ex}");
}

#[test]
fn malformed_files_name_the_line() {
    type Expect = fn(&HistoryErrorKind) -> bool;
    let table: [((&str, &str), usize, Expect); 12] = [
        (history_file!("bad_json"), 3, |k| matches!(k, HistoryErrorKind::Malformed(_))),
        (history_file!("bad_truncated"), 3, |k| matches!(k, HistoryErrorKind::Truncated(_))),
        (history_file!("bad_completion_without_invocation"), 3, |k| {
            matches!(k, HistoryErrorKind::CompletionWithoutInvocation { process: 2 })
        }),
        (history_file!("bad_two_open"), 3, |k| {
            matches!(k, HistoryErrorKind::TwoOpenOperations { process: 1, open_line: 1 })
        }),
        (history_file!("bad_time_backwards"), 3, |k| {
            matches!(k, HistoryErrorKind::TimeWentBackwards { previous: 20, got: 15 })
        }),
        (history_file!("bad_op_mismatch"), 2, |k| matches!(k, HistoryErrorKind::OpMismatch { invoke_line: 1, .. })),
        (history_file!("bad_kind_mismatch"), 2, |k| matches!(k, HistoryErrorKind::OpMismatch { .. })),
        (history_file!("bad_index"), 2, |k| {
            matches!(k, HistoryErrorKind::IndexOutOfSequence { expected: 1, got: 2 })
        }),
        (history_file!("bad_type"), 2, |k| matches!(k, HistoryErrorKind::Malformed(_))),
        (history_file!("bad_missing_field"), 2, |k| matches!(k, HistoryErrorKind::Malformed(_))),
        (history_file!("bad_append_without_seq"), 2, |k| matches!(k, HistoryErrorKind::MissingOutput { .. })),
        (history_file!("bad_after_comment"), 4, |k| {
            matches!(k, HistoryErrorKind::CompletionWithoutInvocation { process: 2 })
        }),
    ];
    for ((name, text), line, expect) in table {
        match History::parse_jsonl(text) {
            Ok(_) => panic!("{name}: parsed a malformed history"),
            Err(e) => {
                assert_eq!(e.line, line, "{name}: {e}");
                assert!(expect(&e.kind), "{name}: unexpected error {e}");
                let msg = e.to_string();
                assert!(msg.starts_with(&format!("line {line}: ")), "{name}: {msg}");
                assert!(!msg.ends_with('.'), "{name}: {msg}");
            }
        }
    }
}

#[test]
fn jsonl_round_trips_and_missing_phase_means_main() {
    let (_, text) = history_file!("dur_valid");
    let h = History::parse_jsonl(text).expect("parses");
    let mut out = Vec::new();
    h.write_jsonl(&mut out).expect("writes");
    let again = History::parse_jsonl(std::str::from_utf8(&out).expect("utf-8")).expect("parses again");
    assert_eq!(h.entries(), again.entries());
    assert_eq!(std::str::from_utf8(&out).ok(), Some(text));

    let no_phase = r#"{"index":0,"type":"invoke","process":1,"time_ns":0,"op":{"f":"read","key":"k"}}"#;
    let h = History::parse_jsonl(no_phase).expect("phase and outputs may be omitted");
    assert_eq!(h.entries()[0].phase, Phase::Main);
}

#[test]
fn liveness_with_a_heal_time_judges_operations_after_the_bound() {
    let mut h = History::new();
    let w = |v: &str| Op::Write { key: "k".into(), value: v.into() };
    // Before heal + bound: failures are allowed.
    h.invoke(1, 100, w("a"), Phase::Main);
    h.complete(1, 200, Kind::Fail, w("a"), Some("unavailable".into()));
    // After: a cas that found another value is an answer, not an outage.
    let cas = Op::Cas { key: "k".into(), expected: Some("zz".into()), value: "b".into() };
    h.invoke(2, 1_000, cas.clone(), Phase::Main);
    h.complete(2, 1_100, Kind::Fail, cas, None);
    h.invoke(1, 1_200, w("c"), Phase::Main);
    h.complete(1, 1_300, Kind::Ok, w("c"), None);
    let config = CheckConfig { heal_at_ns: Some(500), liveness_bound_ns: 400, ..CheckConfig::default() };
    let v = check_all(&h, &config);
    assert_eq!(v.liveness.verdict, Verdict::Pass, "{:?}", v.liveness);
    assert_eq!(v.count("judged"), Some(2));

    h.invoke(3, 1_400, w("d"), Phase::Main);
    h.complete(3, 1_500, Kind::Info, w("d"), Some("timeout".into()));
    h.invoke(1, 1_600, w("e"), Phase::Main);
    h.complete(1, 1_700, Kind::Fail, w("e"), Some("unavailable".into()));
    let v = check_all(&h, &config);
    assert_eq!(v.liveness.verdict, Verdict::Fail);
    assert_eq!(v.count("info_after_bound"), Some(1));
    assert_eq!(v.count("failed_after_bound"), Some(1));
    let ex = v.liveness.counterexample.unwrap_or_default();
    assert!(ex.contains("p3 info write k = \"d\""), "{ex}");
}

#[test]
fn only_one_checker_and_unknown_names() {
    let config = CheckConfig::only(Some("sequence")).expect("valid name");
    let (_, text) = history_file!("lin_stale_read");
    let h = History::parse_jsonl(text).expect("parses");
    let v = check_all(&h, &config);
    assert_eq!(v.linearizable.verdict, Verdict::Skipped);
    assert_eq!(v.sequence.verdict, Verdict::Pass);
    let err = CheckConfig::only(Some("knossos")).expect_err("unknown name");
    assert_eq!(
        err.to_string(),
        "unknown checker \"knossos\", valid names: linearizable, durability, sequence, liveness, stream"
    );
    let err = tablesim::check::check_file(std::path::Path::new("tests/histories/seq_skip.jsonl"), Some("elle"))
        .expect_err("unknown name");
    assert!(err.to_string().contains("valid names"), "{err}");
}

#[test]
fn check_file_reads_a_saved_history() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories/seq_skip.jsonl");
    let v = tablesim::check::check_file(&path, None).expect("checks");
    assert_eq!(v.sequence.verdict, Verdict::Fail);
    let bad = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories/bad_two_open.jsonl");
    let err = tablesim::check::check_file(&bad, None).expect_err("malformed");
    assert!(format!("{err:#}").contains("line 3: process 1 invokes a second operation"), "{err:#}");
}

#[test]
fn verdicts_are_deterministic_and_serialize() {
    let (_, text) = history_file!("dur_lost_write_older");
    let a = serde_json::to_string(&check_text(text)).expect("serializes");
    let b = serde_json::to_string(&check_text(text)).expect("serializes");
    assert_eq!(a, b);
    assert!(a.contains("\"verdict\":\"fail\""), "{a}");
    assert!(a.contains("\"lost_acked_writes\":2"), "{a}");
}

fn small_shape(ops: u64, keys: u64, clients: u64, info_per_mille: u64) -> bench::GenShape {
    bench::GenShape { ops, keys, clients, info_per_mille, read_percent: 40, append_percent: 15, final_reads: true }
}

#[test]
fn generated_valid_histories_pass() {
    for seed in 0..6 {
        for shape in [small_shape(3_000, 50, 20, 50), small_shape(1_000, 1, 8, 150), small_shape(600, 2, 16, 300)] {
            let (h, _) = bench::generate(seed, shape);
            let v = check_all(&h, &CheckConfig::default());
            assert!(
                v.reports().iter().all(|(c, r)| r.verdict == Verdict::Pass || (*c == Checker::Stream && r.verdict == Verdict::Skipped)),
                "seed {seed} {shape:?}:\n{}",
                v.summary_lines().join("\n")
            );
            assert_eq!(v.count("final_reads"), Some(shape.keys));
        }
    }
}

#[test]
fn generated_histories_with_a_corrupted_read_fail() {
    // Turn one ok read into a read of a value nobody wrote; then into a read of an
    // older value of a hot key that was overwritten long before.
    let (h, _) = bench::generate(7, small_shape(2_000, 3, 10, 50));
    let mut text = Vec::new();
    h.write_jsonl(&mut text).expect("writes");
    let text = String::from_utf8(text).expect("utf-8");
    let needle = "\"type\":\"ok\",";
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let target = lines
        .iter()
        .rposition(|l| l.contains(needle) && l.contains("\"f\":\"read\"") && l.contains("\"value\":\"v"))
        .expect("an ok read with a value");
    let start = lines[target].find("\"value\":\"v").expect("value") + "\"value\":\"".len();
    let end = start + lines[target][start..].find('"').expect("closing quote");
    lines[target].replace_range(start..end, "never-written");
    let v = check_text(&(lines.join("\n") + "\n"));
    assert_eq!(v.linearizable.verdict, Verdict::Fail);
    assert_eq!(v.durability.verdict, Verdict::Fail);
}

#[test]
fn tiny_budget_gives_unknown() {
    let (h, _) = bench::generate(3, small_shape(400, 1, 12, 200));
    let mut config = CheckConfig::only(Some("linearizable")).expect("name");
    config.linearizable.budget.steps_max = 5;
    let v = check_all(&h, &config);
    assert_eq!(v.linearizable.verdict, Verdict::Unknown);
    assert!(v.linearizable.note.as_deref().unwrap_or_default().contains("budget"));
}

/// An obviously correct, exponential checker for tiny histories: try every
/// subset of unknown-outcome operations and every order respecting real time.
fn brute_force(ops: &[(u64, Option<u64>, Op, Outcome)]) -> bool {
    // (call, ret) with ret None = +∞; ok and unknown effects only.
    let live: Vec<&(u64, Option<u64>, Op, Outcome)> = ops
        .iter()
        .filter(|o| o.3 != Outcome::Fail && !(o.3 != Outcome::Ok && matches!(o.2, Op::Read { .. })))
        .collect();
    let unknown: Vec<usize> = (0..live.len()).filter(|&i| live[i].3 != Outcome::Ok).collect();
    for mask in 0..(1u32 << unknown.len()) {
        let chosen: Vec<usize> = (0..live.len())
            .filter(|i| match unknown.iter().position(|u| u == i) {
                Some(b) => mask & (1 << b) != 0,
                None => true,
            })
            .collect();
        if orders(&live, &chosen, &mut Vec::new(), None) {
            return true;
        }
    }
    false
}

fn orders(live: &[&(u64, Option<u64>, Op, Outcome)], chosen: &[usize], done: &mut Vec<usize>, state: Option<String>) -> bool {
    if done.len() == chosen.len() {
        return true;
    }
    for &i in chosen {
        if done.contains(&i) {
            continue;
        }
        // Every not-yet-placed op that returned before i was called must go first.
        let blocked = chosen
            .iter()
            .any(|&j| j != i && !done.contains(&j) && live[j].1.is_some_and(|r| r < live[i].0));
        if blocked {
            continue;
        }
        let next = match &live[i].2 {
            Op::Read { value, .. } => (*value == state).then(|| state.clone()),
            Op::Write { value, .. } => Some(Some(value.clone())),
            Op::Cas { expected, value, .. } => (*expected == state).then(|| Some(value.clone())),
            Op::Delete { .. } => Some(None),
            _ => Some(state.clone()),
        };
        if let Some(next) = next {
            done.push(i);
            if orders(live, chosen, done, next) {
                return true;
            }
            done.pop();
        }
    }
    false
}

#[test]
fn search_agrees_with_brute_force_on_tiny_random_histories() {
    let mut rng = 0x1234_5678_u64;
    let mut next = |n: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..20_000 {
        let mut h = History::new();
        let mut open: Vec<Option<Op>> = vec![None; 4];
        let mut started = 0;
        let mut t = 0;
        let mut value = 0;
        let n_ops = 2 + next(7);
        // Every third history breaks the unique-values contract, which turns
        // the search's overwrite pruning off: both paths must agree.
        let duplicates = next(3) == 0;
        while started < n_ops || open.iter().any(Option::is_some) {
            t += 1;
            let p = next(4) as usize;
            match open[p].take() {
                None if started < n_ops => {
                    started += 1;
                    let vals = ["w1", "w2", "w3", "w4", "w5", "w6"];
                    let pick = |r: u64| if r == 0 { None } else { Some(vals[(r - 1) as usize % vals.len()].to_string()) };
                    let op = match next(5) {
                        0 => Op::Read { key: "k".into(), value: None },
                        4 => Op::Delete { key: "k".into() },
                        1 | 2 => {
                            value += 1;
                            let v = if duplicates { 1 + next(3) } else { value };
                            Op::Write { key: "k".into(), value: format!("w{v}") }
                        }
                        _ => {
                            value += 1;
                            let e = next(5);
                            Op::Cas { key: "k".into(), expected: pick(e), value: format!("w{value}") }
                        }
                    };
                    h.invoke(p as u64, t, op.clone(), Phase::Main);
                    open[p] = Some(op);
                }
                None => {}
                Some(op) => {
                    let kind = [Kind::Ok, Kind::Ok, Kind::Ok, Kind::Info, Kind::Fail][next(5) as usize];
                    let done = match op {
                        Op::Read { key, .. } if kind == Kind::Ok => {
                            let r = next(5);
                            Op::Read { key, value: if r == 0 { None } else { Some(format!("w{}", r)) } }
                        }
                        other => other,
                    };
                    h.complete(p as u64, t, kind, done, None);
                }
            }
        }
        let all = h.operations();
        let members: Vec<usize> = (0..all.len()).collect();
        let fast = linearizable::check_key(&all, &members, linearizable::Budget::default()).verdict;
        let tiny: Vec<(u64, Option<u64>, Op, Outcome)> =
            all.iter().map(|o| (o.invoke_index as u64, o.response_index().map(|r| r as u64), o.op.clone(), o.outcome)).collect();
        let slow = brute_force(&tiny);
        let mut jsonl = Vec::new();
        h.write_jsonl(&mut jsonl).expect("writes");
        let text: Vec<String> = all.iter().map(|o| o.describe()).chain([String::from_utf8_lossy(&jsonl).to_string()]).collect();
        assert_eq!(fast == KeyVerdict::Linearizable, slow, "disagree ({fast:?}) on:\n{}", text.join("\n"));
        if slow {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    // Both kinds must be well represented for the comparison to mean anything.
    assert!(valid > 500 && invalid > 500, "valid {valid}, invalid {invalid}");
}

#[test]
fn corrupted_files_never_panic() {
    // Random byte edits of a valid file: parsing either fails with a line or
    // succeeds, and checking whatever parsed never panics.
    let (_, text) = history_file!("dur_valid");
    let base: Vec<u8> = text.as_bytes().to_vec();
    let mut rng = 0x9e37_79b9_u64;
    let mut next = |n: usize| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((rng >> 33) as usize) % n
    };
    let alphabet = b"{}[]\":,0123456789-abcnulltruefalse \n#";
    let (mut parsed, mut rejected) = (0, 0);
    for _ in 0..2_000 {
        let mut bytes = base.clone();
        for _ in 0..1 + next(4) {
            let at = next(bytes.len());
            match next(3) {
                0 => bytes[at] = alphabet[next(alphabet.len())],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, alphabet[next(alphabet.len())]),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        match History::parse_jsonl(&text) {
            Ok(h) => {
                parsed += 1;
                let _ = check_all(&h, &CheckConfig::default());
            }
            Err(e) => {
                rejected += 1;
                assert!(e.line >= 1 && e.line <= text.lines().count(), "{e}");
            }
        }
    }
    assert!(parsed > 0 && rejected > 0, "parsed {parsed}, rejected {rejected}");
}

#[test]
fn sequence_gaps_at_the_edges_of_u64_do_not_overflow() {
    let mut h = History::new();
    let mut t = 0;
    for seq in [0, 1, u64::MAX - 1, u64::MAX] {
        let op = Op::Append { pkey: "p".into(), seq: None };
        t += 1;
        h.invoke(1, t, op, Phase::Main);
        t += 1;
        h.complete(1, t, Kind::Ok, Op::Append { pkey: "p".into(), seq: Some(seq) }, None);
    }
    let v = check_all(&h, &CheckConfig::default());
    assert_eq!(v.sequence.verdict, Verdict::Fail);
    assert_eq!(v.count("skipped_values"), Some(u64::MAX - 3));
    let config = CheckConfig { heal_at_ns: Some(u64::MAX - 1), liveness_bound_ns: u64::MAX, ..CheckConfig::default() };
    assert_eq!(check_all(&h, &config).liveness.verdict, Verdict::Pass);
}

#[test]
fn shrinking_keeps_writers_of_writers_and_what_made_a_row_absent() {
    // Sequential: write x, delete, read nil, write a, cas a -> b, read b, then a
    // stale read of x. Subsets that drop the writer behind a kept cas, or the
    // delete behind a kept read of nil, fail for the wrong reason; the
    // shrinker must show the stale read instead.
    let k = || "k".to_string();
    let steps = [
        (Op::Write { key: k(), value: "x".into() }, None),
        (Op::Delete { key: k() }, None),
        (Op::Read { key: k(), value: None }, Some(None)),
        (Op::Write { key: k(), value: "a".into() }, None),
        (Op::Cas { key: k(), expected: Some("a".into()), value: "b".into() }, None),
        (Op::Read { key: k(), value: None }, Some(Some("b".to_string()))),
        (Op::Read { key: k(), value: None }, Some(Some("x".to_string()))),
    ];
    let mut h = History::new();
    for (i, (op, read)) in steps.into_iter().enumerate() {
        let t = 10 * i as u64;
        h.invoke(1, t, op.clone(), Phase::Main);
        let done = match read {
            Some(value) => Op::Read { key: k(), value },
            None => op,
        };
        h.complete(1, t + 5, Kind::Ok, done, None);
    }
    let v = check_all(&h, &CheckConfig::default());
    let ex = v.linearizable.counterexample.unwrap_or_default();
    assert!(ex.contains("read k -> \"x\""), "{ex}");
    assert!(ex.contains("smallest failing sub-history of 3 of its 7 operations"), "{ex}");
}

#[test]
fn runner_api_reports_misuse_without_panicking() {
    let w = || Op::Write { key: "k".into(), value: "a".into() };
    let mut h = History::new();
    assert_eq!(h.try_invoke(1, 10, w(), Phase::Final), Ok(0));
    assert!(matches!(
        h.try_invoke(1, 11, w(), Phase::Main),
        Err(HistoryErrorKind::TwoOpenOperations { process: 1, open_line: 1 })
    ));
    assert!(matches!(
        h.try_complete(2, 12, Kind::Ok, w(), None),
        Err(HistoryErrorKind::CompletionWithoutInvocation { process: 2 })
    ));
    assert!(matches!(
        h.try_complete(1, 5, Kind::Ok, w(), None),
        Err(HistoryErrorKind::TimeWentBackwards { previous: 10, got: 5 })
    ));
    assert!(matches!(
        h.try_complete(1, 12, Kind::Ok, Op::Delete { key: "k".into() }, None),
        Err(HistoryErrorKind::OpMismatch { .. })
    ));
    assert_eq!(h.try_complete(1, 12, Kind::Ok, w(), None), Ok(1));
    // The completion inherits the invocation's phase; rejected calls left no trace.
    assert_eq!(h.len(), 2);
    assert_eq!(h.entries()[1].phase, Phase::Final);
}

/// A store that refuses for lack of capacity answers: a `busy` failure after
/// healing is counted, not a liveness violation; any other failure is one.
#[test]
fn a_busy_refusal_is_an_answer_for_liveness() {
    let line = |i: u64, t: &str, f: &str, err: Option<&str>| {
        let e = err.map(|e| format!(",\"error\":\"{e}\"")).unwrap_or_default();
        format!("{{\"index\":{i},\"type\":\"{t}\",\"process\":1,\"time_ns\":{},\"op\":{{\"f\":\"{f}\",\"key\":\"k\",\"value\":null}},\"phase\":\"final\"{e}}}", (i + 1) * 10)
    };
    let busy = [line(0, "invoke", "read", None), line(1, "fail", "read", Some("busy: table server cpu (retry after 40 us)"))].join("\n");
    let v = check_text(&busy);
    assert_eq!(v.liveness.verdict, P, "{}", v.summary_lines().join("\n"));
    assert_eq!(v.count("busy_after_bound"), Some(1));
    let down = [line(0, "invoke", "read", None), line(1, "fail", "read", Some("unavailable: no partition holds k"))].join("\n");
    assert_eq!(check_text(&down).liveness.verdict, F);
    // A write left unknown by one unanswered attempt, then refused busy
    // until its deadline, was answered; left unknown by an outage, it was not.
    let write = |err: &str| [line(0, "invoke", "write", None), line(1, "info", "write", Some(err))].join("\n").replace("\"value\":null", "\"value\":\"v\"");
    let v = check_text(&write("outcome unknown: no definite answer before the deadline (last: busy: table server cpu (retry after 102492 us))"));
    assert_eq!(v.liveness.verdict, P, "{}", v.summary_lines().join("\n"));
    assert_eq!(v.count("busy_after_bound"), Some(1));
    let v = check_text(&write("outcome unknown: no definite answer before the deadline (last: unavailable: proxy 3 did not answer)"));
    assert_eq!(v.liveness.verdict, F);
    assert_eq!(v.count("info_after_bound"), Some(1));
}
