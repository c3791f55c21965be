//! Consistency checkers over recorded histories (the job of Jepsen's Knossos and
//! Elle, and of Porcupine).
//!
//! Checkers read a `History` only; they know nothing about the engine. Each one
//! returns a `CheckerReport`: a verdict, named counts and the first
//! counterexample as text. Reports are deterministic: counts live in BTreeMaps
//! and every checker walks keys in sorted order.
//!
//! - `linearizable`: per-key register linearizability (Wing–Gong/Lowe search).
//! - `durability`: acknowledged writes survive into the final reads (RPO 0);
//!   failed writes are never observed.
//! - `sequence`: auto-increment values are unique, real-time increasing, gapless.
//! - `liveness`: after the last fault heals (plus a bound), operations succeed.
//! - `stream`: stream reads agree byte for byte, acknowledged appends stay at
//!   their offsets, fenced writers' appends never appear.
//!
//! Entry points: the runner records with `History::invoke`/`complete`, saves
//! with `History::write_jsonl`, and calls `check_all(&history, &config)`; the
//! CLI calls `check_file(path, only)` (`tablesim check HISTORY [--checker
//! NAME]`) and `bench_linearizability(seed, ops, budget)` (`tablesim bench`).
//! Print `Verdicts::summary_lines()`; serialize `Verdicts` into the report;
//! read expectations with `Verdicts::count("lost_acked_writes")` and
//! `Verdicts::report(Checker::Linearizable).verdict`.

pub mod bench;
pub mod durability;
pub mod linearizable;
pub mod liveness;
pub mod sequence;
pub mod stream;
pub mod verdict;

pub use bench::{bench_linearizability, BenchFigures, WorstCase};
pub use verdict::{CheckerReport, Verdict};

use crate::history::History;
use serde::Serialize;

/// The checkers, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Checker {
    Linearizable,
    Durability,
    Sequence,
    Liveness,
    Stream,
}

impl Checker {
    pub const ALL: [Checker; 5] =
        [Checker::Linearizable, Checker::Durability, Checker::Sequence, Checker::Liveness, Checker::Stream];

    pub fn name(self) -> &'static str {
        match self {
            Checker::Linearizable => "linearizable",
            Checker::Durability => "durability",
            Checker::Sequence => "sequence",
            Checker::Liveness => "liveness",
            Checker::Stream => "stream",
        }
    }

    /// Parses a checker name; the error lists the valid names.
    pub fn from_name(name: &str) -> Result<Checker, UnknownChecker> {
        Checker::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| UnknownChecker(name.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown checker {0:?}, valid names: linearizable, durability, sequence, liveness, stream")]
pub struct UnknownChecker(pub String);

/// Default liveness bound after the last fault heals.
pub const LIVENESS_BOUND_NS_DEFAULT: u64 = 30_000_000_000;

/// Which checkers run, and their budgets.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    pub checkers: Vec<Checker>,
    pub linearizable: linearizable::LinearizableConfig,
    /// Model time the last fault healed; `None` = unknown (liveness then judges
    /// only the final phase, which starts after healing, and open operations).
    pub heal_at_ns: Option<u64>,
    /// Operations invoked after `heal_at_ns + liveness_bound_ns` must succeed.
    pub liveness_bound_ns: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            checkers: Checker::ALL.to_vec(),
            linearizable: linearizable::LinearizableConfig::default(),
            heal_at_ns: None,
            liveness_bound_ns: LIVENESS_BOUND_NS_DEFAULT,
        }
    }
}

impl CheckConfig {
    /// A default config that runs only the named checker (`None` = all).
    pub fn only(name: Option<&str>) -> Result<CheckConfig, UnknownChecker> {
        let mut config = CheckConfig::default();
        if let Some(name) = name {
            config.checkers = vec![Checker::from_name(name)?];
        }
        Ok(config)
    }

    fn runs(&self, c: Checker) -> bool {
        self.checkers.contains(&c)
    }
}

/// All verdicts of one history, for the report (serialize) and stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    /// The key-value checkers are left out of reports when the history
    /// holds no key-value operations (a stream scenario).
    #[serde(skip_serializing_if = "CheckerReport::is_skipped")]
    pub linearizable: CheckerReport,
    #[serde(skip_serializing_if = "CheckerReport::is_skipped")]
    pub durability: CheckerReport,
    #[serde(skip_serializing_if = "CheckerReport::is_skipped")]
    pub sequence: CheckerReport,
    pub liveness: CheckerReport,
    /// Left out of reports when the history holds no stream operations.
    #[serde(skip_serializing_if = "CheckerReport::is_skipped")]
    pub stream: CheckerReport,
}

impl Verdicts {
    /// Reports in checker order.
    pub fn reports(&self) -> [(Checker, &CheckerReport); 5] {
        [
            (Checker::Linearizable, &self.linearizable),
            (Checker::Durability, &self.durability),
            (Checker::Sequence, &self.sequence),
            (Checker::Liveness, &self.liveness),
            (Checker::Stream, &self.stream),
        ]
    }

    pub fn report(&self, checker: Checker) -> &CheckerReport {
        match checker {
            Checker::Linearizable => &self.linearizable,
            Checker::Durability => &self.durability,
            Checker::Sequence => &self.sequence,
            Checker::Liveness => &self.liveness,
            Checker::Stream => &self.stream,
        }
    }

    /// True when no checker failed (unknown and skipped do not fail).
    pub fn no_failures(&self) -> bool {
        self.reports().iter().all(|(_, r)| r.verdict != Verdict::Fail)
    }

    /// A count by name, searched across all checkers (names are distinct), for
    /// scenario expectations such as `lost_acked_writes = 0`.
    pub fn count(&self, name: &str) -> Option<u64> {
        self.reports().iter().find_map(|(_, r)| r.counts.get(name).copied())
    }

    /// One line per checker, then the first counterexample lines indented.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (checker, r) in self.reports() {
            let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            lines.push(format!("{:<13} {:<8} {}", checker.name(), r.verdict.name(), counts.join(" ")));
            if let Some(note) = &r.note {
                lines.push(format!("    note: {note}"));
            }
            if let Some(ex) = &r.counterexample {
                lines.extend(ex.lines().map(|l| format!("    {l}")));
            }
        }
        lines
    }
}

/// Runs the selected checkers over a history.
pub fn check_all(history: &History, config: &CheckConfig) -> Verdicts {
    let ops = history.operations();
    let run = |c: Checker, f: &dyn Fn() -> CheckerReport| if config.runs(c) { f() } else { CheckerReport::skipped() };
    let has_kv = ops.is_empty() || ops.iter().any(|o| o.op.stream().is_none());
    let kv = |c: Checker, f: &dyn Fn() -> CheckerReport| {
        if has_kv {
            run(c, f)
        } else {
            let mut r = CheckerReport::new(Verdict::Skipped);
            r.note = Some("no key-value operations in the history".to_string());
            r
        }
    };
    Verdicts {
        linearizable: kv(Checker::Linearizable, &|| linearizable::check(&ops, &config.linearizable)),
        durability: kv(Checker::Durability, &|| durability::check(&ops)),
        sequence: kv(Checker::Sequence, &|| sequence::check(&ops)),
        liveness: run(Checker::Liveness, &|| {
            liveness::check(&ops, config.heal_at_ns, config.liveness_bound_ns)
        }),
        stream: run(Checker::Stream, &|| stream::check(&ops)),
    }
}

/// Re-checks a saved history file (`tablesim check HISTORY [--checker NAME]`).
/// Errors name the line of a malformed history, or list the valid checkers.
pub fn check_file(path: &std::path::Path, only: Option<&str>) -> anyhow::Result<Verdicts> {
    let config = CheckConfig::only(only)?;
    check_file_with(path, &config)
}

/// The largest history file `check_file` reads (it is read through this
/// cap, never whole first): a run's history at the scenario format's
/// bound on operations fits well within it.
pub const HISTORY_BYTES_MAX: u64 = 1 << 30;

/// Like `check_file`, with an explicit config (heal time, bounds, budgets).
/// A history without an operation is refused: there is nothing to judge,
/// and a verdict of `pass` would say more than it knows.
// The CLI reads a real file outside the simulation.
#[allow(clippy::disallowed_methods)]
pub fn check_file_with(path: &std::path::Path, config: &CheckConfig) -> anyhow::Result<Verdicts> {
    use anyhow::Context;
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(HISTORY_BYTES_MAX + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read history {}", path.display()))?;
    if bytes.len() as u64 > HISTORY_BYTES_MAX {
        anyhow::bail!("history {} is over {HISTORY_BYTES_MAX} bytes, the limit of a history file", path.display());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!("invalid history {}: line {line}: not UTF-8 text", path.display())
    })?;
    let history = History::parse_jsonl(&text)
        .with_context(|| format!("invalid history {}", path.display()))?;
    if history.entries().is_empty() {
        anyhow::bail!("history {} is empty: no operation to check", path.display());
    }
    Ok(check_all(&history, config))
}
