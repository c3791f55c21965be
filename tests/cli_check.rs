//! `tablesim check`: a saved history is re-checked offline with the run's
//! checkers; exit 0 when it holds, 1 on a violation, 2 on a bad file.

use std::process::Command;

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesim")).arg("check").args(args).output().expect("run tablesim");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn valid_history_passes_and_violations_fail() {
    assert_eq!(check(&["tests/histories/lin_valid_concurrent.jsonl"]).0, 0);
    let (code, out) = check(&["tests/histories/lin_stale_read.jsonl"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("linearizable") && out.contains("fail"), "{out}");
    let (code, out) = check(&["tests/histories/seq_skip.jsonl", "--checker", "sequence"]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn bad_input_exits_2_naming_the_line() {
    let (code, out) = check(&["tests/histories/bad_two_open.jsonl"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("line"), "{out}");
    let (code, out) = check(&["tests/histories/lin_valid_concurrent.jsonl", "--checker", "nonsense"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("valid names"), "{out}");
    assert_eq!(check(&["tests/histories/does-not-exist.jsonl"]).0, 2);
}

#[test]
fn a_recorded_run_rechecks_the_same_offline() {
    let dir = std::env::temp_dir().join(format!("tablesim-check-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_tablesim"))
        .args(["run", "scenarios/zone-crash.toml", "--seed", "2", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stdout));
    let (code, out) = check(&[dir.join("history.jsonl").to_str().unwrap(), "--heal-at", "5s", "--liveness-bound", "1s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("lost_acked_writes=0"), "{out}");
    #[allow(clippy::disallowed_methods)] // host-side clean-up
    let _ = std::fs::remove_dir_all(&dir);
}
