//! Broken scenario files: each gets one clear error naming the file, the
//! line and the field, and the CLI exits with 2. Never a panic.
#![allow(clippy::disallowed_methods)] // host-side test: writes scratch scenario files, reads the scenarios folder

use std::path::Path;
use std::process::Command;

use tablesim::parse_scenario as parse;
use tablesim::scenario::ScenarioError;

const GOOD: &str = r#"name = "t"
description = "d"
duration = "10s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { kv = 1, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[[workload]]
name = "kv"
clients = 2
rate = 100
keys = 10
mix = { read = 1.0, write = 1.0 }

[[fault]]
at = "2s"
until = "4s"
verb = "zone-down"
target = "az2"
"#;

fn err(text: &str) -> ScenarioError {
    parse(Path::new("bad.toml"), text.as_bytes()).expect_err("the scenario must be refused")
}

/// `check(input, line, field, words)`: the error names this line and field
/// and its message contains these words.
fn check(text: &str, line: usize, field: &str, words: &str) {
    let e = err(text);
    assert_eq!((e.line, e.field.as_str()), (line, field), "{e}");
    assert!(e.message.contains(words), "`{}` does not mention `{words}`", e.message);
    let shown = e.to_string();
    assert!(shown.starts_with("bad.toml:"), "{shown}");
    assert_eq!(shown.lines().count(), 1, "one line: {shown}");
}

#[test]
fn the_good_file_parses() {
    let s = parse(Path::new("good.toml"), GOOD.as_bytes()).unwrap();
    assert_eq!(s.topology.nodes().len(), 6);
    assert_eq!(s.faults.len(), 2, "zone-down and its zone-up at `until`");
}

#[test]
fn unknown_field() {
    check(&GOOD.replace("rate = 100", "rate = 100\ncolour = \"red\""), 15, "workload[0].colour", "unknown field `colour`");
}

#[test]
fn bad_duration() {
    check(&GOOD.replace("duration = \"10s\"", "duration = \"10 parsecs\""), 3, "duration", "unknown unit");
    check(&GOOD.replace("at = \"2s\"", "at = \"soon\""), 19, "fault[0].at", "duration `soon`");
}

#[test]
fn unknown_zone_and_node() {
    check(&GOOD.replace("target = \"az2\"", "target = \"az9\""), 22, "fault[0].target", "unknown zone `az9`");
    let t = GOOD.replace("verb = \"zone-down\"\ntarget = \"az2\"", "verb = \"node-crash\"\ntarget = \"az1-kv-7\"");
    check(&t, 22, "fault[0].target", "unknown node `az1-kv-7`");
}

#[test]
fn fault_after_the_end() {
    check(&GOOD.replace("until = \"4s\"", "until = \"40s\""), 20, "fault[0].until", "after the end of the run");
    check(&GOOD.replace("at = \"2s\"\nuntil = \"4s\"", "at = \"12s\""), 19, "fault[0].at", "after the end of the run");
}

#[test]
fn zero_or_negative_rates() {
    check(&GOOD.replace("rate = 100", "rate = 0"), 11, "workload[0].rate", "not a positive rate");
    check(&GOOD.replace("rate = 100", "rate = -5"), 11, "workload[0].rate", "not a positive rate");
}

#[test]
fn overlapping_contradictory_faults() {
    let t = format!("{GOOD}\n[[fault]]\nat = \"3s\"\nverb = \"zone-down\"\ntarget = \"az2\"\nmode = \"isolate\"\n");
    check(&t, 24, "fault", "already down");
    let t = format!("{GOOD}\n[[fault]]\nat = \"3s\"\nverb = \"node-crash\"\ntarget = \"az2-kv-0\"\n");
    check(&t, 24, "fault", "already down");
    let t = GOOD.replace("verb = \"zone-down\"", "verb = \"zone-up\"").replace("until = \"4s\"\n", "");
    check(&t, 18, "fault", "is not down");
}

#[test]
fn not_text_and_empty_files() {
    let e = parse(Path::new("bad.toml"), &[0x7f, 0x45, 0x4c, 0x46, 0xff, 0xfe, 0, 1]).unwrap_err();
    assert!(e.message.contains("not a text file"), "{e}");
    let e = parse(Path::new("bad.toml"), b"").unwrap_err();
    assert!(e.message.contains("empty"), "{e}");
    let e = parse(Path::new("bad.toml"), b"  \n\n").unwrap_err();
    assert!(e.message.contains("empty"), "{e}");
}

#[test]
fn toml_syntax_and_missing_fields() {
    check("name = \"x\"\ndescription = \n", 2, "", "");
    let e = err("name = \"x\"\ndescription = \"d\"\n");
    assert!(e.message.contains("missing field"), "{e}");
    check(&GOOD.replace("verb = \"zone-down\"", "verb = \"zone-explode\""), 21, "fault[0].verb", "unknown verb `zone-explode`");
    check(&GOOD.replace("zones = [\"az1\", \"az2\", \"az3\"]", "zones = [\"az1\", \"az1\"]"), 6, "topology.zones", "listed twice");
}

#[test]
fn fuzzed_inputs_never_panic() {
    // Every prefix and a sample of one-byte corruptions of a good file:
    // each either parses or yields an error, never a panic.
    let bytes = GOOD.as_bytes();
    for end in 0..bytes.len() {
        let _ = parse(Path::new("p.toml"), &bytes[..end]);
    }
    for i in (0..bytes.len()).step_by(3) {
        for b in [b'"', b'[', b'=', b'\n', b'9', 0xff] {
            let mut v = bytes.to_vec();
            v[i] = b;
            let _ = parse(Path::new("p.toml"), &v);
        }
    }
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesim")).args(args).output().expect("run tablesim");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_cli_exits_2_with_one_message() {
    let dir = std::env::temp_dir().join(format!("tablesim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("unknown-field.toml", GOOD.replace("rate = 100", "rate = 100\ncolour = 1").into_bytes(), "unknown field"),
        ("bad-zone.toml", GOOD.replace("target = \"az2\"", "target = \"az9\"").into_bytes(), "unknown zone"),
        ("binary.toml", vec![0, 159, 146, 150, 0, 1, 2], "not a text file"),
        ("empty.toml", Vec::new(), "empty"),
        ("late.toml", GOOD.replace("until = \"4s\"", "until = \"11s\"").into_bytes(), "after the end"),
    ];
    for (name, body, words) in cases {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        for cmd in ["run", "validate"] {
            let (code, _, stderr) = cli(&[cmd, p.to_str().unwrap()]);
            assert_eq!(code, 2, "{cmd} {name}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{cmd} {name}: one message: {stderr}");
            assert!(stderr.contains(words) && stderr.contains(name), "{cmd} {name}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    let (code, _, stderr) = cli(&["run", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, _) = cli(&["sweep", "scenarios/smoke.toml", "--seeds", "5..3"]);
    assert_eq!(code, 2, "an empty seed range is bad input");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A good stream scenario, to break one field at a time.
fn stream_scenario() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/stream-meta-zone-loss.toml")).expect("shipped scenario")
}

#[test]
fn the_stream_scenario_parses() {
    let text = stream_scenario();
    parse(Path::new("good.toml"), text.as_bytes()).unwrap();
}

#[test]
fn a_stream_service_without_managers_is_refused() {
    let text = stream_scenario().replace("manager = 1, ", "");
    check(&text, 8, "topology.nodes", "stream managers");
}

#[test]
fn a_stream_service_with_too_few_storage_nodes_is_refused() {
    let text = stream_scenario().replace("[topology]\nzones = [\"az1\", \"az2\", \"az3\"]", "[topology]\nzones = [\"az1\"]").replace("storage = 3", "storage = 2");
    let e = err(&text);
    assert!(e.to_string().lines().count() == 1, "{e}");
}

#[test]
fn meta_leader_as_a_target_needs_the_stream_service() {
    let text = GOOD.replace("target = \"az2\"", "target = \"meta-leader\"");
    check(&text, 22, "fault[0].target", "stream service only");
}

#[test]
fn stream_expectations_on_a_key_value_scenario_are_refused() {
    let text = format!("{GOOD}\n[expect]\nrereplicated = true\n");
    let e = err(&text);
    assert_eq!(e.field, "expect.rereplicated", "{e}");
    assert!(e.message.contains("stream"), "{e}");
}

#[test]
fn meta_leader_cannot_overlap_another_zone_fault() {
    let text = format!("{}\n[[fault]]\nat = \"3s\"\nuntil = \"5s\"\nverb = \"zone-down\"\ntarget = \"az1\"\n", stream_scenario().split("[expect]").next().unwrap());
    let e = err(&text);
    assert!(e.message.contains("meta-leader"), "{e}");
}

fn double11() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/double11.toml")).expect("shipped scenario")
}

#[test]
fn the_reference_scenario_parses() {
    let text = double11();
    let s = parse(Path::new("double11.toml"), text.as_bytes()).unwrap();
    assert!(s.topology.nodes().len() >= 24, "at least 8 nodes per zone");
    assert!(s.service.partitions.unwrap() >= 64);
}

#[test]
fn a_table_service_without_proxies_is_refused() {
    let text = double11().replace(" proxy = 1,", "");
    check(&text, 8, "topology.nodes", "`proxy`");
}

#[test]
fn too_many_partitions_are_refused() {
    let text = double11().replace("partitions = 64", "partitions = 100000");
    let e = err(&text);
    assert_eq!(e.field, "service.partitions", "{e}");
}

#[test]
fn partitions_on_another_service_are_refused() {
    let text = GOOD.replace("[[workload]]", "[service]\npartitions = 4\n\n[[workload]]");
    let e = err(&text);
    assert_eq!(e.field, "service.partitions", "{e}");
}

fn table_bad_keys() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/table-bad-keys.toml")).expect("shipped scenario")
}

#[test]
fn the_bad_requests_scenario_parses() {
    let s = parse(Path::new("table-bad-keys.toml"), table_bad_keys().as_bytes()).unwrap();
    assert!(s.workloads[0].bad_requests > 0.0);
}

#[test]
fn a_bad_request_fraction_outside_0_to_1_is_refused() {
    for v in ["1.5", "-0.1", "nan"] {
        let text = table_bad_keys().replace("bad_requests = 0.05", &format!("bad_requests = {v}"));
        let e = err(&text);
        assert_eq!(e.field, "workload[0].bad_requests", "{v}: {e}");
        assert!(e.message.contains("[0, 1]"), "{v}: {e}");
    }
}

#[test]
fn bad_requests_on_another_service_are_refused() {
    let text = GOOD.replace("mix = { read = 1.0, write = 1.0 }", "mix = { read = 1.0, write = 1.0 }\nbad_requests = 0.1");
    let e = err(&text);
    assert_eq!(e.field, "workload[0].bad_requests", "{e}");
    assert!(e.message.contains("table"), "{e}");
}

#[test]
fn table_expectations_on_another_service_are_refused() {
    for name in ["bad_requests_accepted = 0", "min_bad_requests_refused = 1", "bad_values_seen = 0", "min_master_takeovers = 1", "max_time_to_recover = \"3s\""] {
        let e = err(&format!("{GOOD}\n[expect]\n{name}\n"));
        assert_eq!(e.field, format!("expect.{}", name.split(' ').next().unwrap()), "{e}");
        assert!(e.message.contains("table"), "{e}");
    }
}

#[test]
fn a_refusal_minimum_without_bad_requests_is_refused() {
    let text = table_bad_keys().replace("bad_requests = 0.05\n", "");
    let e = err(&text);
    assert_eq!(e.field, "expect.min_bad_requests_refused", "{e}");
}

#[test]
fn master_zone_as_a_target_needs_the_table_service() {
    let text = GOOD.replace("target = \"az2\"", "target = \"master-zone\"");
    check(&text, 22, "fault[0].target", "table");
    let text = stream_scenario().replace("target = \"meta-leader\"", "target = \"master-zone\"");
    let e = err(&text);
    assert_eq!(e.field, "fault[0].target", "{e}");
}

#[test]
fn master_zone_cannot_overlap_another_zone_fault_or_a_crashed_node() {
    let scn = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/table-master-zone-loss.toml")).unwrap();
    let head = scn.split("[expect]").next().unwrap();
    parse(Path::new("good.toml"), scn.as_bytes()).unwrap();
    let e = err(&format!("{head}\n[[fault]]\nat = \"5s\"\nuntil = \"6s\"\nverb = \"zone-down\"\ntarget = \"az1\"\n"));
    assert!(e.message.contains("master-zone"), "{e}");
    let e = err(&format!("{head}\n[[fault]]\nat = \"5s\"\nuntil = \"6s\"\nverb = \"node-crash\"\ntarget = \"az1-table-0\"\n"));
    assert!(e.message.contains("master-zone"), "{e}");
    let e = err(&format!("{head}\n[[fault]]\nat = \"3s\"\nuntil = \"5s\"\nverb = \"node-pause\"\ntarget = \"az3-proxy-0\"\n"));
    assert!(e.message.contains("master-zone"), "{e}");
}

fn table_wide_rows() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/table-wide-rows.toml")).unwrap()
}

#[test]
fn wide_rows_are_refused_beyond_the_stores_limits_and_off_the_table_service() {
    let text = table_wide_rows();
    assert_eq!(parse(Path::new("table-wide-rows.toml"), text.as_bytes()).unwrap().workloads[0].columns, 8);
    let e = err(&text.replace("columns = 8", "columns = 33"));
    assert_eq!(e.field, "workload[0].columns", "{e}");
    assert!(e.message.contains("33 columns"), "{e}");
    let e = err(&text.replace("value_size = 96", "value_size = 12000"));
    assert_eq!(e.field, "workload[0].columns", "{e}");
    assert!(e.message.contains("over the table store's"), "{e}");
    let e = err(&GOOD.replace("mix = { read = 1.0, write = 1.0 }", "mix = { read = 1.0, write = 1.0 }\ncolumns = 2"));
    assert_eq!(e.field, "workload[0].columns", "{e}");
    assert!(e.message.contains("table"), "{e}");
}

#[test]
fn resources_name_known_roles_limits_and_the_service_s_costs() {
    // The reference scenario without its own `[resources]` table.
    let full = double11();
    let start = full.find("[resources]").expect("double11 sets resources");
    let end = full[start..].find("\n[").map_or(full.len(), |e| start + e + 1);
    let d = format!("{}{}", &full[..start], &full[end..]);
    let with = |r: &str| format!("{d}\n[resources]\n{r}\n");
    let ok = parse(Path::new("d.toml"), with("cores = { table = 1, proxy = 2 }\nqueue_max = { table = 64 }\ncosts = { server_read = \"300us\" }").as_bytes()).expect("valid resources");
    assert_eq!((ok.resources.cpu("table").cores, ok.resources.cpu("table").queue_max, ok.resources.cpu("proxy").cores), (1, 64, 2));
    assert_eq!(ok.resources.cpu("storage"), sim::cpu::CpuConfig::default(), "roles not named keep the defaults");
    let line = d.lines().count() + 2;
    check(&with("cores = { tabel = 1 }"), line, "resources.cores.tabel", "no role `tabel`");
    check(&with("cores = { table = 0 }"), line, "resources.cores.table", "use 1 to");
    check(&with("costs = { server_reed = \"1us\" }"), line, "resources.costs.server_reed", "has no cost `server_reed`");
    check(&with("costs = { server_read = \"2s\" }"), line, "resources.costs.server_read", "over the limit");
    // minikv charges no work.
    check(&format!("{GOOD}\n[resources]\ncosts = {{ server_read = \"1us\" }}\n"), GOOD.lines().count() + 2, "resources.costs.server_read", "it charges no work");
}

#[test]
fn cpu_slow_needs_a_speed_in_the_open_unit_interval() {
    let d = double11().replace("[resources]", "[resources.unused]").split("[resources.unused]").next().expect("text").to_string();
    let fault = |extra: &str| format!("{d}\n[[fault]]\nat = \"2s\"\nuntil = \"3s\"\nverb = \"cpu-slow\"\ntarget = \"az1\"\n{extra}\n");
    let s = parse(Path::new("d.toml"), fault("speed = 0.2").as_bytes()).expect("valid cpu-slow");
    assert!(s.faults.iter().any(|f| f.fault == sim::Fault::CpuSlow { target: vec!["az1".into()], speed_permille: 200 }));
    assert!(s.faults.iter().any(|f| f.fault == sim::Fault::CpuRestore { target: vec!["az1".into()] }));
    let line = d.lines().count() + 5;
    check(&fault(""), line, "fault[1].speed", "needs `speed`");
    check(&fault("speed = 1.5"), line + 2, "fault[1].speed", "not a speed in (0, 1)");
}
