//! The table store refuses bad requests (missing or wrong access key,
//! another instance's table, malformed row keys, oversized cells) and
//! never lets one touch data; a fault on the master's zone hits the zone
//! the active master is in.

use std::path::Path;

use tablesim::execute::execute;
use engine::table::TableObserver;
use tablesim::run::RunOptions;
use tablesim::scenario;

fn load(name: &str) -> scenario::Scenario {
    tablesim::load_scenario(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_kind_of_bad_request_is_sent_and_refused_for_its_own_reason() {
    let scn = load("table-bad-keys.toml");
    let done = execute(&scn, scn.seed, &RunOptions::default()).unwrap();
    let r = &done.report;
    let bad = r.bad_requests.as_ref().expect("the report has a bad_requests section");
    assert_eq!(bad.accepted, 0, "{bad:#?}");
    assert_eq!(bad.values_seen, 0, "{bad:#?}");
    assert_eq!(bad.refused + bad.unanswered, bad.sent, "{bad:#?}");
    // Each kind is sent, and refused for the reason that kind deserves.
    let reasons = [
        ("missing-access-key", "not authorized: missing access key"),
        ("wrong-access-key", "not authorized: wrong access key"),
        ("other-instance-table", "not authorized: table not in this instance"),
        ("bad-row-key", "refused: bad key shape"),
        ("oversized-cell", "refused: cell of"),
    ];
    for (kind, reason) in reasons {
        let c = bad.by_kind.get(kind).unwrap_or_else(|| panic!("no {kind} requests: {bad:#?}"));
        assert!(c.sent >= 20, "{kind}: {c:?}");
        assert_eq!(c.accepted, 0, "{kind}: {c:?}");
        let by_reason: u64 = bad.refused_by_reason.iter().filter(|(k, _)| k.starts_with(reason)).map(|(_, n)| n).sum();
        assert_eq!(by_reason, c.refused, "{kind} refused as `{reason}`: {bad:#?}");
    }
    // The proxies' own counts agree: every refusal was theirs.
    let table = r.table.as_ref().expect("table figures");
    assert!(table.auth_refused.values().sum::<u64>() + table.invalid_refused >= bad.refused, "{table:#?}");
    assert!(r.pass, "{}", r.summary());
}

#[test]
fn the_master_zone_fault_hits_the_zone_of_the_active_master() {
    let scn = load("table-master-zone-loss.toml");
    let done = execute(&scn, scn.seed, &RunOptions::default()).unwrap();
    let r = &done.report;
    let obs = done.output.observers.get::<TableObserver>().expect("table observer").snapshot();
    let fault_at = done.output.faults[0].at;
    let (_, master, _) = *obs.master_takeovers.iter().rfind(|t| t.0 <= fault_at).expect("a master before the fault");
    let zone = scn.topology.zone_name(scn.topology.zone_of(master));
    assert_eq!(r.faults[0].fault, format!("zone-down {zone} (crash) [master-zone]"), "{:?}", r.faults);
    assert_eq!(r.faults[1].fault, format!("zone-up {zone} [master-zone]"), "{:?}", r.faults);
    // A master in another zone took over after the fault.
    let after: Vec<_> = obs.master_takeovers.iter().filter(|t| t.0 >= fault_at).collect();
    assert!(after.iter().any(|t| scn.topology.zone_name(scn.topology.zone_of(t.1)) != zone), "{after:?}");
    assert!(r.pass, "{}", r.summary());
}
