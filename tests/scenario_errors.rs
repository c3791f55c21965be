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
    // The field's own line, not its table's.
    check(&GOOD.replace("rate = 100", "rate = 0"), 14, "workload[0].rate", "not a rate above 0");
    check(&GOOD.replace("rate = 100", "rate = -5"), 14, "workload[0].rate", "not a rate above 0");
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
fn partition_memory_out_of_bounds_is_refused() {
    for (field, value) in [("memtable_bytes", "1024"), ("memtable_bytes", "1073741824"), ("block_cache_bytes", "1073741824")] {
        let text = double11().replace("partitions = 64", &format!("partitions = 64\n{field} = {value}"));
        let e = err(&text);
        assert_eq!(e.field, format!("service.{field}"), "{e}");
    }
    let text = double11().replace("partitions = 64", "partitions = 64\nmemtable_bytes = 8192\nblock_cache_bytes = 0");
    assert!(parse(Path::new("ok.toml"), text.as_bytes()).is_ok(), "in bounds");
}

#[test]
fn a_lease_out_of_bounds_is_refused() {
    for value in ["\"100ms\"", "\"2m\""] {
        let text = double11().replace("partitions = 64", &format!("partitions = 64\nlease = {value}"));
        let e = err(&text);
        assert_eq!(e.field, "service.lease", "{e}");
    }
    let text = double11().replace("partitions = 64", "partitions = 64\nlease = \"3s\"");
    assert!(parse(Path::new("ok.toml"), text.as_bytes()).is_ok(), "in bounds");
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
    // The line of the value itself (the table's header is one line up).
    let line = d.lines().count() + 3;
    check(&with("cores = { tabel = 1 }"), line, "resources.cores.tabel", "no role `tabel`");
    check(&with("cores = { table = 0 }"), line, "resources.cores.table", "use 1 to");
    check(&with("costs = { server_reed = \"1us\" }"), line, "resources.costs.server_reed", "has no cost `server_reed`");
    check(&with("costs = { server_read = \"2s\" }"), line, "resources.costs.server_read", "over the limit");
    // minikv charges no work.
    check(&format!("{GOOD}\n[resources]\ncosts = {{ server_read = \"1us\" }}\n"), GOOD.lines().count() + 3, "resources.costs.server_read", "it charges no work");
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

/// `GOOD` with `line` added at the end of its `[topology]` table, and
/// the line number it lands on.
fn with_topology(line: &str) -> (String, usize) {
    (GOOD.replace("inter_zone_latency = \"1ms\"\n", &format!("inter_zone_latency = \"1ms\"\n{line}\n")), 10)
}

/// `GOOD` with a table appended (`[service]`, `[disk]`, `[expect]`): the
/// field is on the line after the header.
fn with_table(header: &str, field: &str) -> (String, usize) {
    (format!("{GOOD}\n{header}\n{field}\n"), GOOD.lines().count() + 3)
}

#[test]
fn service_disk_and_expect_values_are_refused_at_their_own_line() {
    let (t, line) = with_table("[service]", "group_commit_max = 0");
    check(&t, line, "service.group_commit_max", "use 1 to 4096");
    let (t, line) = with_table("[service]", "planted_bug = \"gremlins\"");
    check(&t, line, "service.planted_bug", "unknown bug `gremlins`");
    let (t, line) = with_table("[disk]", "sector = 3");
    check(&t, line, "disk.sector", "not a power of two");
    let (t, line) = with_table("[disk]", "crash_writeback = 1.5");
    check(&t, line, "disk.crash_writeback", "[0, 1]");
    let (t, line) = with_table("[expect]", "min_availability = 2.0");
    check(&t, line, "expect.min_availability", "not a fraction in [0, 1]");
    let (t, line) = with_table("[expect]", "min_availability = nan");
    check(&t, line, "expect.min_availability", "not a fraction in [0, 1]");
    let (t, line) = with_table("[expect]", "liveness_bound = \"2h\"");
    check(&t, line, "expect.liveness_bound", "over the limit of 3600s");
    // A field further down its table.
    let t = format!("{GOOD}\n[expect]\nlive = true\n\nmin_availability = -1\n");
    check(&t, GOOD.lines().count() + 5, "expect.min_availability", "[0, 1]");
}

#[test]
fn disk_sizes_whose_byte_count_would_overflow_are_refused() {
    for (field, value) in [("bandwidth_mib_s", "17592186044416"), ("capacity_mib", "17592186044416"), ("bandwidth_mib_s", "0"), ("capacity_mib", "0")] {
        let (t, line) = with_table("[disk]", &format!("{field} = {value}"));
        check(&t, line, &format!("disk.{field}"), "use 1 to 1048576");
    }
    let (t, _) = with_table("[disk]", "bandwidth_mib_s = 1048576\ncapacity_mib = 1048576");
    let s = parse(Path::new("ok.toml"), t.as_bytes()).expect("at the limits");
    assert_eq!((s.disk.bandwidth, s.disk.capacity), (1 << 40, 1 << 40));
}

#[test]
fn every_size_count_rate_and_duration_has_a_limit() {
    let cases: [(&str, &str, usize, &str, &str); 12] = [
        ("duration = \"10s\"", "duration = \"2h\"", 3, "duration", "over the limit of 3600s"),
        ("rate = 100", "rate = 1e9", 14, "workload[0].rate", "at most 100000"),
        ("clients = 2", "clients = 10001", 13, "workload[0].clients", "use 1 to 10000"),
        ("keys = 10", "keys = 18446744073709551615", 15, "workload[0].keys", "use 1 to 10000000"),
        ("keys = 10", "keys = 10\nvalue_size = 1000000000", 16, "workload[0].value_size", "at most 65536"),
        ("keys = 10", "keys = 10\ntimeout = \"277777h\"", 16, "workload[0].timeout", "over the limit of 60s"),
        ("keys = 10", "keys = 10\nscan_limit = 0", 16, "workload[0].scan_limit", "use 1 to 10000"),
        ("keys = 10", "keys = 10\ndistribution = \"zipf\"\nzipf_theta = 1e300", 17, "workload[0].zipf_theta", "at most 10"),
        ("intra_zone_latency = \"100us\"", "intra_zone_latency = \"1h\"", 8, "topology.intra_zone_latency", "over the limit of 10s"),
        ("kv = 1,", "kv = 4294967295,", 7, "topology.nodes", "at most 1024"),
        ("zones = [\"az1\", \"az2\", \"az3\"]", "zones = [\"az1\", \"az2\", \"az3\", \"a4\", \"a5\", \"a6\", \"a7\", \"a8\", \"a9\", \"a10\", \"a11\", \"a12\", \"a13\", \"a14\", \"a15\", \"a16\", \"a17\"]", 6, "topology.zones", "at most 16"),
        ("duration = \"10s\"", "duration = \"100000000000000000000000000000000000h\"", 3, "duration", "a duration of 37 characters"),
    ];
    for (from, to, line, field, words) in cases {
        assert!(GOOD.contains(from), "{from}");
        check(&GOOD.replace(from, to), line, field, words);
    }
}

#[test]
fn a_run_whose_workloads_add_up_past_the_run_s_bounds_is_refused() {
    // Each field within its own limit, together too many.
    let t = GOOD.replace("rate = 100", "rate = 100000").replace("duration = \"10s\"", "duration = \"60s\"");
    check(&t, 14, "workload[0].rate", "plans 6000000 operations");
    let t = GOOD.replace("rate = 100", "rate = 10000\nvalue_size = 65536").replace("duration = \"10s\"", "duration = \"60s\"");
    check(&t, 15, "workload[0].value_size", "MiB of values");
}

#[test]
fn the_node_limit_is_checked_before_any_node_is_built() {
    let started = std::time::Instant::now();
    let t = GOOD.replace("kv = 1,", "kv = 4294967295,");
    let e = err(&t);
    assert!(e.message.contains("at most 1024"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "refused at once");
}

#[test]
fn a_typo_in_a_role_name_is_an_unknown_role() {
    check(&GOOD.replace("client = 1", "clinet = 1, client = 1"), 7, "topology.nodes.clinet", "has no role `clinet`");
    let text = double11().replace("proxy = 1,", "proxy = 1, proxie = 1,");
    let e = err(&text);
    assert_eq!(e.field, "topology.nodes.proxie", "{e}");
    assert!(e.message.contains("`proxy`") && e.message.contains("`client`"), "the message lists the roles: {e}");
}

#[test]
fn roles_that_collide_are_refused() {
    let (t, line) = with_table("[service]", "server_role = \"client\"");
    check(&t.replace("kv = 1,", ""), line, "service.server_role", "already the role of another part");
    let text = double11().replace("[service]\n", "[service]\nmeta_role = \"proxy\"\n");
    let e = err(&text);
    assert_eq!(e.field, "service.meta_role", "{e}");
    let text = double11().replace("[service]\n", "[service]\nserver_role = \"storage\"\n");
    let e = err(&text);
    assert_eq!(e.field, "service.server_role", "{e}");
    assert!(e.message.contains("`storage`"), "{e}");
}

#[test]
fn the_three_zone_stores_are_refused_on_fewer_zones() {
    let text = stream_scenario().replace("zones = [\"az1\", \"az2\", \"az3\"]", "zones = [\"az1\", \"az2\"]").replace("storage = 1", "storage = 2");
    let e = err(&text);
    assert_eq!((e.line, e.field.as_str()), (7, "topology.zones"), "{e}");
    assert!(e.message.contains("three replicas in three zones") && e.message.contains("at least 3"), "{e}");
    let text = double11().replace("zones = [\"az1\", \"az2\", \"az3\"]", "zones = [\"az1\", \"az2\"]");
    let e = err(&text);
    assert_eq!(e.field, "topology.zones", "{e}");
    // minikv promises nothing of zones.
    parse(Path::new("one.toml"), GOOD.replace("zones = [\"az1\", \"az2\", \"az3\"]", "zones = [\"az1\", \"az2\"]").as_bytes()).expect("minikv on two zones");
}

#[test]
fn a_link_joins_exactly_two_different_zones() {
    let (t, line) = with_topology("[[topology.link]]\nzones = [\"az1\", \"az2\", \"az3\"]\nlatency = \"2ms\"");
    check(&t, line + 1, "topology.link[0].zones", "two different zones (3 given)");
    let (t, line) = with_topology("[[topology.link]]\nzones = [\"az1\", \"az1\"]\nlatency = \"2ms\"");
    check(&t, line + 1, "topology.link[0].zones", "two different zones");
    let (t, _) = with_topology("[[topology.link]]\nzones = [\"az1\", \"az3\"]\nlatency = \"2ms\"");
    parse(Path::new("ok.toml"), t.as_bytes()).expect("a link of two zones");
}

#[test]
fn fields_a_verb_does_not_read_are_refused() {
    let fault = |body: &str| format!("{GOOD}\n[[fault]]\nat = \"5s\"\n{body}\n");
    let line = GOOD.lines().count() + 4;
    check(&fault("verb = \"partition\"\nfrom = \"az1\"\ntarget = \"az2\""), line + 2, "fault[1].target", "`partition` does not read `target`");
    check(&fault("verb = \"node-crash\"\ntarget = \"az1-kv-0\"\nmode = \"crash\""), line + 2, "fault[1].mode", "does not read `mode`");
    check(&fault("verb = \"loss\"\nrate = 0.1\nextra = \"5ms\""), line + 2, "fault[1].extra", "does not read `extra`");
    check(&GOOD.replace("target = \"az2\"", "target = \"az2\"\nmode = \"melt\""), 23, "fault[0].mode", "unknown mode `melt`");
    check(&fault("verb = \"latency-spike\"\nextra = \"1h\""), line + 1, "fault[1].extra", "over the limit of 10s");
    check(&fault("verb = \"clock-drift\"\ntarget = \"az1-kv-0\"\nppm = 5000000"), line + 2, "fault[1].ppm", "use -999999 to 999999");
    check(&fault("verb = \"clock-offset\"\ntarget = \"az1-kv-0\"\noffset = \"-2h\""), line + 2, "fault[1].offset", "over the limit of 3600s");
    check(&fault("verb = \"disk-faults\"\ntarget = \"az1-kv-0\"\nslow_factor = 0"), line + 2, "fault[1].slow_factor", "use 1 to 1000");
}

#[test]
fn names_are_plain_and_never_echoed_raw() {
    check(&GOOD.replace("name = \"t\"", "name = \"../../etc\""), 1, "name", "must be 1 to 64 letters");
    check(&GOOD.replace("name = \"kv\"", "name = \"a\\nb\""), 12, "workload[0].name", "`a\\nb`");
    check(&GOOD.replace("description = \"d\"", "description = \"red \\u001b[31m alert\""), 2, "description", "control character \\u{1b}");
    let long = "z".repeat(100_000);
    for text in [
        GOOD.replace("target = \"az2\"", &format!("target = \"{long}\"")),
        GOOD.replace("kv = 1,", &format!("{long} = 1,")),
        GOOD.replace("verb = \"zone-down\"", &format!("verb = \"{long}\"")),
        GOOD.replace("rate = 100", &format!("{long} = 1")),
        GOOD.replace("name = \"t\"", &format!("name = \"{long}\"")),
        GOOD.replace("target = \"az2\"", "target = \"az\\nzone\""),
    ] {
        let e = err(&text).to_string();
        assert!(e.len() < 600, "the message is short: {} characters", e.len());
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn the_zipf_tables_of_a_run_are_bounded_together() {
    let w = |name: &str| format!("\n[[workload]]\nname = \"{name}\"\nclients = 1\nrate = 10\nkeys = 10000000\ndistribution = \"zipf\"\nmix = {{ read = 1.0 }}\n");
    let two = format!("{}{}{}", GOOD.split("[[fault]]").next().unwrap(), w("a"), w("b"));
    parse(Path::new("ok.toml"), two.as_bytes()).expect("two tables of 4000000 ranks");
    let three = format!("{two}{}", w("c"));
    let e = err(&three);
    assert_eq!(e.field, "workload[3].keys", "{e}");
    assert!(e.message.contains("rank 12000000 keys: at most 8000000"), "{e}");
}

fn tenant_surge() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/table-tenant-surge.toml")).expect("shipped scenario")
}

#[test]
fn the_tenant_scenario_parses_with_its_instances_quotas_and_surge() {
    let s = parse(Path::new("table-tenant-surge.toml"), tenant_surge().as_bytes()).unwrap();
    assert_eq!(s.workloads[1].instance.as_deref(), Some("b"));
    assert_eq!(s.hotspots[0].instance.as_deref(), Some("b"));
    assert_eq!(s.quotas.len(), 2);
    assert_eq!((s.quotas[0].rate, s.quotas[0].burst, s.quotas[0].at), (300, 30, None));
}

#[test]
fn bad_quotas_are_refused_with_their_field() {
    let with = |from: &str, to: &str| {
        let text = tenant_surge();
        assert!(text.contains(from), "{from}");
        text.replacen(from, to, 1)
    };
    let cases = [
        (with("op = \"write\"", "op = \"delete\""), "quota[0].op", "unknown operation kind `delete`"),
        (with("instance = \"b\"\nop", "instance = \"c\"\nop"), "quota[0].instance", "no workload of instance `c`"),
        (with("burst = 30", "burst = 0"), "quota[0].burst", "use 1 to"),
        (with("rate = 300\nburst", "rate = 20000000\nburst"), "quota[0].rate", "at most"),
        (with("burst = 30", "burst = 30\nat = \"99s\""), "quota[0].at", "after the end of the run"),
        (with("burst = 30", "burst = 30\ncolour = 1"), "quota[0].colour", "unknown field"),
        (with("burst = 30", "burst = 30\nunit = \"pages\""), "quota[0].unit", "unknown unit `pages`"),
    ];
    for (text, field, words) in cases {
        let e = err(&text);
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(words), "{e}");
    }
}

#[test]
fn bad_instances_are_refused() {
    for (name, words) in [("B", "lowercase"), ("main", "names the main instance"), ("tablesim", "main instance's name in the store")] {
        let text = tenant_surge().replacen("instance = \"b\"\nclients", &format!("instance = \"{name}\"\nclients"), 1);
        let e = err(&text);
        assert_eq!(e.field, "workload[1].instance", "{name}: {e}");
        assert!(e.message.contains(words), "{name}: {e}");
    }
    let text = tenant_surge().replacen("instance = \"b\"\nat", "instance = \"c\"\nat", 1);
    let e = err(&text);
    assert_eq!(e.field, "hotspot[0].instance", "{e}");
}

#[test]
fn quotas_and_instances_on_another_service_are_refused() {
    let e = err(&format!("{GOOD}\n[[quota]]\ninstance = \"main\"\nop = \"read\"\nrate = 10\n"));
    assert_eq!(e.field, "quota[0]", "{e}");
    assert!(e.message.contains("table"), "{e}");
    let e = err(&GOOD.replace("keys = 10", "keys = 10\ninstance = \"b\""));
    assert_eq!(e.field, "workload[0].instance", "{e}");
}

fn scale_out_in() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/table-scale-out-in.toml")).expect("shipped scenario")
}

#[test]
fn spares_are_named_after_their_role_and_start_only_at_node_add() {
    let s = parse(Path::new("s.toml"), scale_out_in().as_bytes()).expect("valid");
    let spares: Vec<&str> = s.topology.nodes().iter().filter(|n| n.spare).map(|n| n.name.as_str()).collect();
    assert_eq!(spares, vec!["az1-table-1", "az2-table-1", "az3-table-1"]);
    assert!(s.topology.describe().contains("2 table (1 spare)"), "{}", s.topology.describe());
    assert!(s.faults.iter().any(|f| f.fault == sim::Fault::NodeAdd { node: "az2-table-1".into() }));
    assert!(s.faults.iter().any(|f| f.fault == sim::Fault::NodeDrain { node: "az2-table-0".into() }));
}

#[test]
fn spares_and_the_elastic_verbs_are_refused_where_they_cannot_work() {
    let text = scale_out_in();
    let spare_line = text.lines().position(|l| l.starts_with("spare =")).expect("spare line") + 1;
    // Only the table service's servers join a running cluster.
    check(&text.replace("spare = { table = 1 }", "spare = { proxy = 1 }"), spare_line, "topology.spare.proxy", "only `table` may");
    check(&GOOD.replace("nodes = {", "spare = { kv = 1 }\nnodes = {"), 7, "topology.spare.kv", "takes no new nodes while it runs");
    // node-add names a spare.
    let add = text.lines().position(|l| l == "target = \"az1-table-1\"").expect("the first node-add") + 1;
    check(&text.replacen("target = \"az1-table-1\"", "target = \"az1-table-0\"", 1), add, "fault[0].target", "`az1-table-0` is not a spare node (spares: az1-table-1, az2-table-1, az3-table-1)");
    // A spare cannot crash, pause or drain before it is added, nor be
    // added twice; a node is drained once.
    let late = format!("{text}\n[[fault]]\nat = \"1s\"\nverb = \"node-crash\"\ntarget = \"az1-table-1\"\n");
    assert!(err(&late).message.contains("node az1-table-1 is a spare not yet added: node-add starts it"), "{}", err(&late));
    let twice = format!("{text}\n[[fault]]\nat = \"6s\"\nverb = \"node-add\"\ntarget = \"az1-table-1\"\n");
    assert!(err(&twice).message.contains("node az1-table-1 was already added"), "{}", err(&twice));
    let drain = format!("{text}\n[[fault]]\nat = \"16s\"\nverb = \"node-drain\"\ntarget = \"az1-table-0\"\n");
    assert!(err(&drain).message.contains("node az1-table-0 is already marked for removal"), "{}", err(&drain));
    // The expectations' bounds.
    let e = err(&text.replace("min_added_share = 0.8", "min_added_share = 1.5"));
    assert_eq!(e.field, "expect.min_added_share", "{e}");
}
