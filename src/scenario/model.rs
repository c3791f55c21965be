//! A validated scenario, ready to run, and the error that refuses a file.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sim::disk::DiskConfig;
use sim::fault::Fault;
use sim::topology::Topology;

use super::format::{ExpectDef, HotOp, ServiceDef, WorkloadDef};

/// A fault verb at a time, after validation.
#[derive(Clone, Debug)]
pub struct TimedFault {
    pub at: Duration,
    pub fault: Fault,
    /// 1-based line of the `[[fault]]` entry that asked for it.
    pub line: usize,
}

#[derive(Clone, Debug)]
pub struct Hotspot {
    pub at: Duration,
    pub until: Duration,
    pub lo: u64,
    pub hi: u64,
    pub op: HotOp,
    pub rate: f64,
    pub clients: u32,
    /// The instance whose keys it loads (`None`: the main one).
    pub instance: Option<String>,
}

/// The kind of operation a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuotaOp {
    Read,
    Write,
    Scan,
}

impl QuotaOp {
    pub fn parse(s: &str) -> Option<QuotaOp> {
        match s {
            "read" => Some(QuotaOp::Read),
            "write" => Some(QuotaOp::Write),
            "scan" => Some(QuotaOp::Scan),
            _ => None,
        }
    }
}

/// What a quota counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuotaUnit {
    Requests,
    Bytes,
    Rows,
}

impl QuotaUnit {
    pub fn parse(s: &str) -> Option<QuotaUnit> {
        match s {
            "requests" => Some(QuotaUnit::Requests),
            "bytes" => Some(QuotaUnit::Bytes),
            "rows" => Some(QuotaUnit::Rows),
            _ => None,
        }
    }
}

/// A validated `[[quota]]`: one limit from `at` on (`None`: at creation).
#[derive(Clone, Debug, PartialEq)]
pub struct Quota {
    /// `None`: the main instance.
    pub instance: Option<String>,
    pub table: bool,
    pub class: QuotaOp,
    pub unit: QuotaUnit,
    pub rate: u64,
    pub burst: u64,
    pub at: Option<Duration>,
}

/// A validated scenario, ready to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub duration: Duration,
    pub topology: Topology,
    pub disk: DiskConfig,
    pub service: ServiceDef,
    pub workloads: Vec<WorkloadDef>,
    pub faults: Vec<TimedFault>,
    pub hotspots: Vec<Hotspot>,
    pub quotas: Vec<Quota>,
    pub expect: ExpectDef,
    pub resources: Resources,
}

/// The CPUs of the nodes and what work costs, after validation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub cores: std::collections::BTreeMap<String, u32>,
    pub queue_max: std::collections::BTreeMap<String, u32>,
    /// By the names the service gives them ([`super::ServiceRules::costs`]).
    pub costs: std::collections::BTreeMap<String, Duration>,
}

impl Resources {
    /// The CPU of a node of `role`.
    pub fn cpu(&self, role: &str) -> sim::cpu::CpuConfig {
        let d = sim::cpu::CpuConfig::default();
        sim::cpu::CpuConfig { cores: self.cores.get(role).copied().unwrap_or(d.cores), queue_max: self.queue_max.get(role).copied().unwrap_or(d.queue_max), ..d }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() || self.field == "." { String::new() } else { format!("{}: ", self.field) };
        if self.line == 0 {
            write!(f, "{}: {field}{}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {field}{}", self.file.display(), self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ScenarioError {}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset - before.iter().rposition(|&b| b == b'\n').map(|p| p + 1).unwrap_or(0) + 1;
    (line, col)
}
