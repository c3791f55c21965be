//! Traffic control end to end: a tenant's surge is throttled to its quota
//! with a reason, its throttled writes are recorded failed (and the
//! checkers prove no failed write is ever seen), and the other tenant is
//! protected only because of the quota: the same surge without it fails
//! the other tenant's availability expectation.
#![allow(clippy::disallowed_methods)] // host-side test: reads a shipped scenario

use std::path::Path;

mod common;

use common::{expectation, run};
use tablesim::history::{Op, Outcome};

fn surge() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/table-tenant-surge.toml")).expect("shipped scenario")
}



#[test]
fn a_surge_is_throttled_to_its_quota_and_the_other_tenant_is_protected_only_by_it() {
    let done = run(&surge());
    assert!(done.report.pass, "{}", done.report.summary());
    // Every throttled operation failed and names why: b's its quota (or a
    // hot partition), main's only ever a hot partition of its own.
    let ops = done.output.history.operations();
    let throttled: Vec<_> = ops.iter().filter(|o| o.error.is_some_and(|e| e.starts_with("busy: throttled"))).collect();
    assert!(throttled.len() > 1000, "{} throttled", throttled.len());
    for o in &throttled {
        assert_eq!(o.outcome, Outcome::Fail, "{}", o.describe());
        let key = match &o.op {
            Op::Write { key, .. } | Op::Read { key, .. } | Op::Cas { key, .. } | Op::Delete { key } => key.as_str(),
            other => panic!("throttled {other:?}"),
        };
        let e = o.error.unwrap();
        if key.starts_with("b.") {
            assert!(e.contains("by instance b write: over its quota") || e.contains("by instance b read: over its quota") || e.contains("by partition"), "{e}");
        } else {
            assert!(e.contains("by partition") && e.contains("more than its share of a contended server"), "main is over no quota: {e}");
        }
    }
    let traffic = done.report.table.as_ref().and_then(|t| t.traffic.clone()).expect("a traffic section");
    let b = &traffic.resources["instance b write"];
    assert!(b.ratios.is_some_and(|(lo, hi)| lo >= 0.95 && hi <= 1.05), "{b:?}");
    assert!(b.max_over_rate_100ms.is_some_and(|o| o <= 30), "never more than the burst above the rate in 100 ms: {b:?}");

    // The same surge with b's quotas gone: main is no longer protected.
    let text = surge().replace("[[quota]]\ninstance = \"b\"\nop = \"write\"\nrate = 300\nburst = 30\n", "").replace("[[quota]]\ninstance = \"b\"\nop = \"read\"\nrate = 300\nburst = 30\n", "");
    let text = text.replace("quota_accuracy = 0.05\n", "").replace("min_throttled = { \"instance b write\" = 10000 }\n", "");
    assert!(!text.contains("[[quota]]"), "{text}");
    let unlimited = run(&text);
    let (pass, measured) = expectation(&unlimited, "tenant_min_availability.main");
    assert!(!pass, "main kept its availability without b's quota: {measured}");
    assert!(unlimited.report.table.as_ref().and_then(|t| t.traffic.as_ref()).is_some_and(|t| t.resources.keys().all(|r| !r.starts_with("instance"))));
}
