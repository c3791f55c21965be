//! The CPU model as the report shows it: each cost a scenario gives is
//! charged where its work happens, so raising one raises its role's CPU use.

use std::path::Path;

use tablesim::execute::execute;
use tablesim::parse_scenario as parse;
use tablesim::run::RunOptions;

/// A one-partition table under steady writes, so that the partition's
/// memtable fills and flushes several times; `COSTS` is replaced per run.
const WRITES: &str = r#"name = "costs"
description = "steady writes to one partition"
duration = "4s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { meta = 1, manager = 1, storage = 3, master = 1, table = 1, proxy = 1, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[service]
kind = "table"
partitions = 1

[[workload]]
name = "rows"
clients = 16
rate = 1000
keys = 5000
mix = { write = 1.0 }
timeout = "3s"

[resources]
cores = { table = 1 }
costs = { COSTS }
"#;

/// The busiest table server's CPU use (one core) summed over the seconds.
fn table_cpu(costs: &str) -> f64 {
    let text = WRITES.replace("COSTS", costs);
    let scn = parse(Path::new("costs.toml"), text.as_bytes()).unwrap();
    let done = execute(&scn, 1, &RunOptions::default()).unwrap();
    assert!(done.report.pass, "{}", done.report.summary());
    let table = done.report.resources.iter().find(|r| r.role == "table").expect("the table role's use is reported");
    table.cpu_max.iter().sum()
}

#[test]
fn flushes_and_compactions_cost_the_table_servers_cpu_per_kib_written() {
    let cheap = table_cpu(r#"server_table_kib = "1ns""#);
    let dear = table_cpu(r#"server_table_kib = "500us""#);
    // The memtable (256 KiB) flushes twice in the run: 0.128 s of CPU at
    // 500 µs per KiB written.
    assert!(dear > cheap + 0.1, "the tables' writes are charged: {cheap} -> {dear}");
}

#[test]
fn a_point_write_s_cost_is_charged_on_the_table_server() {
    let cheap = table_cpu(r#"server_write = "1us""#);
    let dear = table_cpu(r#"server_write = "500us""#);
    assert!(dear > cheap + 1.0, "1000 writes/s at 500 µs on one core: {cheap} -> {dear}");
}
