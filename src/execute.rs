//! One run from scenario to judged report: simulate, measure (the common
//! measurements, then the service's sections), check, judge (the common
//! expectations, then the service's own).

use crate::check::{self, CheckConfig, LIVENESS_BOUND_NS_DEFAULT};
use crate::report::{self, Report};
use crate::run::deploy::catalog;
use crate::run::{self, RunError, RunOptions, RunOutput};
use crate::scenario::Scenario;

pub struct Executed {
    pub report: Report,
    pub output: RunOutput,
}

pub fn execute(scn: &Scenario, seed: u64, opts: &RunOptions) -> Result<Executed, RunError> {
    let output = run::run(scn, seed, opts)?;
    let service = catalog::service(scn.service.kind());
    let ops = output.history.operations();
    let (mut report, measured) = report::build(scn, &output, &ops, &*service.availability_unit(scn));
    service.report(scn, &output, &ops, &mut report);
    let config = CheckConfig {
        heal_at_ns: Some(output.heal_at.0),
        liveness_bound_ns: scn.expect.liveness_bound.map(|d| d.0.as_nanos() as u64).unwrap_or(LIVENESS_BOUND_NS_DEFAULT),
        ..CheckConfig::default()
    };
    let verdicts = check::check_all(&output.history, &config);
    report::judge(&mut report, scn, &measured, verdicts);
    service.judge(scn, &output, &mut report);
    Ok(Executed { report, output })
}

impl Executed {
    /// The run as one self-contained HTML page (`report.html`); `replay`
    /// is the command that replays it.
    pub fn html(&self, scn: &Scenario, replay: &str) -> String {
        let ops = self.output.history.operations();
        let windows = report::phases::fault_windows(scn, &self.output);
        report::html::render(scn, &self.output, &self.report, &ops, &windows, replay)
    }

    /// The operation history as JSON lines (`tablesim check` reads it back).
    pub fn write_history(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        self.output.history.write_jsonl(w)
    }
}
