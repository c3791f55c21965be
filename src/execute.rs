//! One run from scenario to judged report: simulate, measure, check.

use crate::report::{self, Report};
use crate::runner::{self, RunError, RunOptions, RunOutput};
use crate::scenario::Scenario;

pub struct Executed {
    pub report: Report,
    pub output: RunOutput,
}

pub fn execute(scn: &Scenario, seed: u64, opts: &RunOptions) -> Result<Executed, RunError> {
    let output = runner::run(scn, seed, opts)?;
    let (mut report, measured) = report::build(scn, &output);
    report::judge_measured(&mut report, scn, &measured);
    Ok(Executed { report, output })
}

impl Executed {
    /// The operation history as JSON lines.
    pub fn write_history(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        for r in &self.output.ops {
            writeln!(w, "{:?}", r)?;
        }
        Ok(())
    }
}
