//! One run from scenario to judged report: simulate, measure, check.

use crate::check::{self, CheckConfig, LIVENESS_BOUND_NS_DEFAULT};
use crate::report::{self, Report};
use crate::runner::{self, RunError, RunOptions, RunOutput};
use crate::scenario::Scenario;

pub struct Executed {
    pub report: Report,
    pub output: RunOutput,
}

pub fn execute(scn: &Scenario, seed: u64, opts: &RunOptions) -> Result<Executed, RunError> {
    let output = runner::run(scn, seed, opts)?;
    // minikv's partitions are its servers.
    let topo = &scn.topology;
    let mut servers = topo.nodes_with_role(scn.service.server_role());
    servers.sort();
    // The unit a key is unavailable with: its minikv server, or its table
    // partition (partitions may move between servers, so not the server).
    let splits = crate::tableload::split_points(scn.workloads.first().map(|w| w.keys).unwrap_or(1), scn.service.partitions.unwrap_or(crate::scenario::DEFAULT_PARTITIONS));
    let partition_of = |key: &str| match scn.service.kind {
        crate::scenario::ServiceKind::Table => format!("{}/{}", crate::tableload::TABLE, splits.partition_point(|s| s.as_str() <= key)),
        _ => topo.node(engine::minikv::owner(&servers, key)).name.clone(),
    };
    let (mut report, measured) = report::build(scn, &output, &partition_of);
    let config = CheckConfig {
        heal_at_ns: Some(output.heal_at.0),
        liveness_bound_ns: scn.expect.liveness_bound.map(|d| d.0.as_nanos() as u64).unwrap_or(LIVENESS_BOUND_NS_DEFAULT),
        ..CheckConfig::default()
    };
    let verdicts = check::check_all(&output.history, &config);
    report::judge(&mut report, scn, &measured, verdicts);
    Ok(Executed { report, output })
}

impl Executed {
    /// The operation history as JSON lines (`tablesim check` reads it back).
    pub fn write_history(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        self.output.history.write_jsonl(w)
    }
}
