//! The stream layer under more load than it can serve: a client refuses
//! what it cannot admit at once, busy and without effect, instead of
//! queueing until its callers time out, and the final read-back of many
//! streams finishes within the final phase.

use std::path::Path;

use tablesim::execute::execute;
use tablesim::history::{Op, Outcome};
use tablesim::parse_scenario as parse;
use tablesim::run::RunOptions;

/// One client node per zone serving 900 writers of 450 streams: far more
/// opens and reads at once than a client admits.
const SATURATED: &str = r#"name = "stream-saturated-client"
description = "900 stream writers on three client nodes, a storage node crashed and restarted"
duration = "3s"

[topology]
zones = ["az1", "az2", "az3"]
nodes = { meta = 1, manager = 1, storage = 2, client = 1 }
intra_zone_latency = "100us"
inter_zone_latency = "1ms"

[service]
kind = "stream"
dead_after = "500ms"
extent_bytes = 65536

[[workload]]
name = "logs"
kind = "stream"
clients = 900
keys = 450
rate = 36000
mix = { append = 0.6, read = 0.35, open = 0.05 }
value_size = 64
timeout = "2s"

[[fault]]
at = "1s"
until = "1.3s"
verb = "node-crash"
target = "az1-storage-0"

[expect]
streams_ok = true
live = true
liveness_bound = "1s"
replicas_agree_at_end = true
"#;

#[test]
fn a_saturated_stream_client_refuses_at_once_without_effect_and_stays_live() {
    let scn = parse(Path::new("stream-saturated-client.toml"), SATURATED.as_bytes()).unwrap();
    let done = execute(&scn, 1, &RunOptions::default()).unwrap();
    assert!(done.report.pass, "{}", done.report.summary());
    let streams = done.report.streams.as_ref().expect("stream figures");
    let ops = done.output.history.operations();
    let refused: Vec<_> = ops.iter().filter(|o| o.error.is_some_and(|e| e.starts_with("busy: stream client"))).collect();
    assert!(!refused.is_empty(), "900 writers on three clients are refused some work");
    assert_eq!(refused.len() as u64, streams.refused_busy, "every refusal is counted once in the report");
    for o in &refused {
        // Refused before anything left the node: a definite failure,
        // answered at once.
        assert_eq!(o.outcome, Outcome::Fail, "{}", o.describe());
        assert_eq!(o.complete_ns, Some(o.invoke_ns), "refused at once: {}", o.describe());
    }
    assert!(refused.iter().any(|o| matches!(o.op, Op::StreamRead { .. })), "reads are refused");
    assert!(refused.iter().any(|o| matches!(o.op, Op::StreamOpen { .. })), "opens are refused");
    // What was admitted was served: nothing timed out.
    let timeouts = ops.iter().filter(|o| o.error == Some("timeout")).count();
    assert_eq!(timeouts, 0, "an admitted operation is answered within its timeout");
}
