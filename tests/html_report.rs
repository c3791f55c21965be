//! `report.html` renders: the page is well-formed markup, each chart is a
//! well-formed SVG on its own, the page holds what a person looks for (the
//! fault bands, a row per partition with its failovers, the checkers'
//! witnesses), and one seed gives one page, byte for byte.
#![allow(clippy::disallowed_methods)] // host-side test: runs the CLI, reads what it wrote

use std::path::Path;
use std::process::Command;

use quick_xml::events::Event;
use quick_xml::Reader;
use tablesim::execute::execute;
use tablesim::parse_scenario;
use tablesim::run::RunOptions;

/// A small table deployment whose table server in az1 freezes past its
/// lease: its partitions fail over while the run goes on.
const TABLE_PAUSE: &str = r#"name = "html-table-pause"
description = "a table server freezes past its lease <and> its partitions move & come back"
duration = "8s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { meta = 1, manager = 1, storage = 1, master = 1, table = 1, proxy = 1, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[service]
kind = "table"
partitions = 8
dead_after = "500ms"
rereplicate_after = "2s"

[[workload]]
name = "rows"
clients = 4
rate = 300
keys = 64
mix = { read = 0.5, write = 0.5 }
timeout = "3s"

[[fault]]
at = "3s"
until = "4500ms"
verb = "node-pause"
target = "az1-table-0"

[expect]
lost_acked_writes = 0
linearizable = true
no_split_brain = true
"#;

/// minikv with a delete that is never logged: a crash brings a deleted
/// row back, and the checkers say so with a witness.
const KV_BUG: &str = r#"name = "html-kv-bug"
description = "minikv forgets deletes across a crash"
duration = "4s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { kv = 1, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[service]
planted_bug = "delete-not-logged"

[[workload]]
name = "kv"
clients = 8
rate = 800
keys = 8
mix = { read = 0.4, write = 0.3, delete = 0.3 }
timeout = "50ms"

[[fault]]
at = "1s"
until = "2s"
verb = "zone-down"
target = "az2"
mode = "crash"

[expect]
linearizable = true
lost_acked_writes = 0
"#;

/// Reads `xml` to its end: `Err` names the first mistake (an unclosed or
/// mismatched element, a bad entity, a stray `<`).
fn well_formed(xml: &str) -> Result<usize, String> {
    let mut r = Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    let mut depth = 0i64;
    let mut elements = 0usize;
    loop {
        match r.read_event() {
            Ok(Event::Start(_)) => {
                depth += 1;
                elements += 1;
            }
            Ok(Event::Empty(_)) => elements += 1,
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::GeneralRef(e)) => {
                let name: &str = e.as_ref();
                if !["amp", "lt", "gt", "quot", "apos"].contains(&name) && !name.starts_with('#') {
                    return Err(format!("unknown entity &{name}; at byte {}", r.buffer_position()));
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("at byte {}: {e}", r.error_position())),
        }
    }
    if depth != 0 {
        return Err(format!("{depth} elements left open"));
    }
    Ok(elements)
}

/// Every `<svg ...>...</svg>` of the page.
fn svgs(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<svg") {
        let end = rest[i..].find("</svg>").expect("an svg is closed") + i + "</svg>".len();
        out.push(&rest[i..end]);
        rest = &rest[end..];
    }
    out
}

fn page(text: &str, seed: u64) -> (String, tablesim::report::Report) {
    let scn = parse_scenario(Path::new("html.toml"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let done = execute(&scn, seed, &RunOptions::default()).unwrap();
    (done.html(&scn, "cargo run --release -- run html.toml --seed 1"), done.report)
}

#[test]
fn the_check_refuses_broken_markup() {
    assert!(well_formed("<p><b>x</p>").is_err(), "a mismatched end tag");
    assert!(well_formed("<svg><g></svg>").is_err());
    assert!(well_formed("<p>a & b</p>").is_err(), "an unescaped ampersand");
    assert!(well_formed("<p><br></p>").is_err(), "an unclosed element");
    assert!(well_formed("<p>fine &amp; closed<br/></p>").is_ok());
}

#[test]
fn a_table_run_draws_its_charts_its_fault_bands_and_every_partitions_owners() {
    let (html, report) = page(TABLE_PAUSE, 3);
    well_formed(&html).unwrap_or_else(|e| panic!("the page is not well-formed: {e}"));
    assert!(html.starts_with("<!DOCTYPE html>"));
    let charts = svgs(&html);
    // Operations, latency, availability, ownership, CPU by role and by
    // node, disk by role and by node.
    assert_eq!(charts.len(), 8, "{}", charts.iter().map(|c| &c[..80.min(c.len())]).collect::<Vec<_>>().join("\n"));
    for c in &charts {
        assert!(c.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg""#));
        assert!(well_formed(c).unwrap() > 10, "each chart draws something");
    }
    assert!(!html.contains("NaN") && !html.contains("inf\""), "no coordinate is NaN or infinite");
    // The fault window is a band on every chart, labelled.
    assert_eq!(html.matches(r#"class="band""#).count(), 8);
    assert!(html.contains("node-pause az1-table-0"));
    // A row per partition, and the frozen server's partitions moved.
    for p in 1..=8 {
        assert!(charts[3].contains(&format!(">p{p}</text>")), "partition {p} has its row");
    }
    // A row per node in the heat maps, and the storage nodes' disks worked.
    for node in ["az1-table-0", "az3-storage-0", "az2-meta-0"] {
        assert!(charts[5].contains(&format!(">{node}</text>")) && charts[7].contains(&format!(">{node}</text>")), "{node} has its rows");
    }
    assert!(charts[7].contains("<title>az1-storage-0 at "), "a busy disk second is drawn");
    let failovers = report.table.as_ref().map_or(0, |t| t.failovers.len());
    assert!(failovers > 0, "the pause moved partitions");
    assert!(charts[3].contains(r#"class="failover""#), "a new owner's start is marked");
    // The description's markup characters are escaped, not markup.
    assert!(html.contains("&lt;and&gt; its partitions move &amp; come back"));
    // One seed, one page.
    assert_eq!(html, page(TABLE_PAUSE, 3).0);
}

#[test]
fn a_failing_run_shows_its_verdict_and_each_checkers_witness() {
    let (html, report) = page(KV_BUG, 1);
    assert!(!report.pass, "the planted bug fails the run: {}", report.summary());
    well_formed(&html).unwrap_or_else(|e| panic!("{e}"));
    assert!(html.contains(r#"<span class="fail">FAIL</span></h1>"#));
    assert!(html.contains("The minikv service has no partitions to move."));
    assert_eq!(svgs(&html).len(), 7, "no ownership chart for minikv");
    let checks = report.checks.as_ref().unwrap();
    let witness = checks.linearizable.counterexample.as_deref().expect("a witness");
    let first_line = witness.lines().next().unwrap();
    assert!(html.contains(&tablesim::report::html::esc(first_line)), "the witness is on the page: {first_line}");
}

#[test]
fn run_writes_report_html_beside_the_yaml() {
    let dir = std::env::temp_dir().join(format!("tablesim-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kv.toml");
    std::fs::write(&file, KV_BUG).unwrap();
    let out = dir.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(["run", file.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    well_formed(&html).unwrap();
    assert!(html.contains(&format!("cargo run --release -- run {} --seed 1", file.display())), "the page carries its replay command");
    std::fs::remove_dir_all(&dir).unwrap();
}
