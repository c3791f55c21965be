//! A checker's verdict and report: what every checker returns, and all
//! the checkers share.

use serde::Serialize;
use std::collections::BTreeMap;

/// A checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// The checker could not decide (e.g. search budget spent).
    Unknown,
    /// The checker was not run.
    Skipped,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Unknown => "unknown",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One checker's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckerReport {
    pub verdict: Verdict,
    pub counts: BTreeMap<&'static str, u64>,
    /// The first counterexample, readable text (may span lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<String>,
    /// Why a verdict is unknown or skipped, or what was not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl CheckerReport {
    pub fn new(verdict: Verdict) -> CheckerReport {
        CheckerReport { verdict, counts: BTreeMap::new(), counterexample: None, note: None }
    }

    pub fn is_skipped(&self) -> bool {
        self.verdict == Verdict::Skipped
    }

    pub(super) fn skipped() -> CheckerReport {
        let mut r = CheckerReport::new(Verdict::Skipped);
        r.note = Some("not selected".to_string());
        r
    }

    pub fn count(&mut self, name: &'static str, value: u64) {
        self.counts.insert(name, value);
    }

    /// Records a violation: counts it and keeps the first counterexample.
    pub(super) fn violation(&mut self, counter: &'static str, example: impl FnOnce() -> String) {
        self.violations(counter, 1, example);
    }

    /// `n` violations of one kind at once, with one counterexample.
    pub(super) fn violations(&mut self, counter: &'static str, n: u64, example: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        *self.counts.entry(counter).or_insert(0) += n;
        self.verdict = Verdict::Fail;
        if self.counterexample.is_none() {
            self.counterexample = Some(example());
        }
    }
}
