//! Hot keys end to end: a read hot key served by the proxies' HotZones
//! within its staleness bound, a write hot key's puts combined, and for
//! each a planted bug that the checkers must find.
#![allow(clippy::disallowed_methods)] // host-side test: reads shipped scenarios

use std::path::Path;

use tablesim::check::Verdict;
use tablesim::execute::execute;
use tablesim::parse_scenario;
use tablesim::report::Report;
use tablesim::run::RunOptions;

/// A shipped scenario, with `line` added to its `[service]` table.
fn run(file: &str, service_line: Option<&str>) -> Report {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(file)).expect("shipped scenario");
    let text = match service_line {
        Some(line) => text.replacen("[service]\n", &format!("[service]\n{line}\n"), 1),
        None => text,
    };
    let scn = parse_scenario(Path::new(file), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    execute(&scn, scn.seed, &RunOptions::default()).expect("runs").report
}

fn failed(r: &Report) -> Vec<&str> {
    r.expectations.iter().filter(|e| !e.pass).map(|e| e.name.as_str()).collect()
}

#[test]
fn a_read_hot_key_is_served_by_every_hotzone_within_its_bound_and_a_staler_hotzone_is_caught() {
    let r = run("table-hot-key-read.toml", None);
    assert!(r.pass, "{}", r.summary());
    let hot = r.table.as_ref().and_then(|t| t.hot_keys.clone()).expect("hot keys");
    assert_eq!(hot.first_hot.len(), 1, "one key called hot: {:?}", hot.events);
    assert!(hot.hit_rate >= 0.9, "{hot:?}");
    assert_eq!(hot.hotzone_hits.values().filter(|&&n| n > 0).count(), 6, "every proxy serves: {hot:?}");
    let staleness = hot.staleness.clone().expect("HotZone reads");
    assert!(staleness.count > 10_000, "{staleness:?}");
    let stale = r.checks.as_ref().expect("checked").linearizable.counts.get("stale_reads").copied().unwrap_or(0);
    assert_eq!(stale, staleness.count, "every HotZone read is checked with its allowance");
    assert!(hot.cooled.iter().any(|(k, _)| hot.first_hot.iter().any(|(h, _)| h == k)), "the key cools down: {:?}", hot.events);

    // Copies served up to four times the bound old: reads see values older
    // than the bound allows, and the checker says so.
    let r = run("table-hot-key-read.toml", Some("planted_bug = \"hotzone-stale\""));
    assert_eq!(r.checks.as_ref().expect("checked").linearizable.verdict, Verdict::Fail, "{}", r.summary());
    assert_eq!(failed(&r), ["linearizable"]);
}

#[test]
fn a_write_hot_keys_puts_are_combined_under_the_cap_and_an_early_answer_is_caught() {
    let r = run("table-hot-key-write.toml", None);
    assert!(r.pass, "{}", r.summary());
    let hot = r.table.as_ref().and_then(|t| t.hot_keys.clone()).expect("hot keys");
    assert!(hot.combined_writes > 20_000, "{hot:?}");
    let batches = hot.combined_batches.clone().expect("batches");
    assert!(batches.max <= 100 && batches.p50 > 1, "{batches:?}");
    // One batch per combining period at most (1 ms), and the writes of the
    // key that were not combined while it was hot.
    assert!(hot.engine_writes_per_s_max <= 1000, "{hot:?}");

    // A put answered before its batch is written: a read that began after
    // the answer misses it.
    let r = run("table-hot-key-write.toml", Some("planted_bug = \"combine-early-ack\""));
    assert_eq!(r.checks.as_ref().expect("checked").linearizable.verdict, Verdict::Fail, "{}", r.summary());
    assert!(failed(&r).contains(&"linearizable"), "{:?}", failed(&r));
}
