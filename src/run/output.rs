//! What a run takes besides its scenario and seed, and what it returns.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use sim::disk::DiskStats;
use sim::log::{Digest, Event};
use sim::time::SimTime;
use sim::world::NetStats;

use crate::history::History;
use crate::workload::badreq::BadLogData;
use crate::workload::SERVICE_STARTUP;

/// Longest the final phase may take (model time) before the run ends anyway.
pub const FINAL_PHASE_MAX: Duration = Duration::from_secs(120);
/// The longest a deployment's set-up may take (model time) before the run
/// ends with it failed, without a main phase.
pub const SETUP_MAX: Duration = Duration::from_secs(30);
/// After the final phase, the longest the run waits for the service to
/// settle (e.g. every extent back to three replicas in three zones).
pub const SETTLE_MAX: Duration = Duration::from_secs(30);
/// The error of an operation whose client process crashed while it was open.
pub const CLIENT_CRASHED: &str = "client process crashed with the operation open";
/// Stack of a simulation thread (the engine's futures nest deeply).
pub const SIM_THREAD_STACK: usize = 64 << 20;

#[derive(Clone, Default)]
pub struct RunOptions {
    /// Keep the event log in memory (for divergence reports).
    pub keep_events: bool,
    /// Called on the simulation thread when the main phase ends (the bench
    /// reads the thread's CPU time there); it must not touch the world.
    pub on_main_end: Option<MainEndHook>,
}

/// See [`RunOptions::on_main_end`]; gets the model time.
pub type MainEndHook = Arc<dyn Fn(SimTime) + Send + Sync>;

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("keep_events", &self.keep_events).field("on_main_end", &self.on_main_end.is_some()).finish()
    }
}

#[derive(Clone, Debug)]
pub struct AppliedFault {
    pub at: SimTime,
    pub text: String,
    /// Why the world refused it, if it did.
    pub error: Option<String>,
    /// Whether the verb begins a fault (its inverse ends one).
    pub opens: bool,
    /// What the fault did while in force (a fault the world applied that
    /// begins one; filled at the end of the run).
    pub effect: Option<sim::fault::FaultEffect>,
}

pub struct RunOutput {
    pub seed: u64,
    pub digest: Digest,
    /// Every client operation; processes that died leave theirs open.
    pub history: History,
    /// The workload (or `hotspot<i>`) of every process.
    pub process_workloads: std::collections::BTreeMap<u64, String>,
    pub faults: Vec<AppliedFault>,
    /// When the last fault was healed (zero when there were none).
    pub heal_at: SimTime,
    /// When the main phase began: the deployment was set up (a whole
    /// second; zero for a service that needs no set-up). Fault times and
    /// workload windows count from it.
    pub main_start: SimTime,
    /// Why the deployment could not be set up (the run then has no main
    /// phase).
    pub setup_error: Option<String>,
    /// When the main phase ended and the final phase began.
    pub main_end: SimTime,
    pub end: SimTime,
    pub final_phase_complete: bool,
    pub net: NetStats,
    pub disk: DiskStats,
    /// CPU and disk use of each role's nodes.
    pub usage: Vec<RoleUsage>,
    /// Open-loop workloads: (arrivals, shed at the client) per second.
    pub offered: std::collections::BTreeMap<u64, (u64, u64)>,
    pub events: Vec<Event>,
    /// What the service observed (its observers, by type: the stream
    /// layer's, the table service's, ...).
    pub observers: Observers,
    /// What the bad requests met (scenarios whose workloads send them).
    pub bad_requests: Option<BadLogData>,
}

impl RunOutput {
    /// When the workloads began: [`SERVICE_STARTUP`] into the main phase.
    pub fn workloads_start(&self) -> SimTime {
        self.main_start + SERVICE_STARTUP
    }
}

/// How busy one role's nodes were, per second of the main phase.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RoleUsage {
    pub role: String,
    pub nodes: usize,
    pub cores: u32,
    /// Data-lane CPU utilisation (0 to 1) per second: the mean over the
    /// role's nodes, and the busiest node's (one line in reports).
    #[serde(serialize_with = "series")]
    pub cpu_mean: Vec<f64>,
    #[serde(serialize_with = "series")]
    pub cpu_max: Vec<f64>,
    /// Control-lane utilisation of one core, the busiest node's busiest
    /// second.
    pub control_max: f64,
    /// The longest CPU run queue any node of the role had.
    pub run_queue_max: u32,
    /// Data jobs refused for a full run queue.
    pub refused: u64,
    /// Disk device utilisation per second, the busiest node's.
    #[serde(serialize_with = "series")]
    pub disk_max: Vec<f64>,
    /// Each node of the role, per second (for `report.html`; reports keep
    /// the role's lines only).
    #[serde(skip)]
    pub per_node: Vec<NodeUsage>,
}

/// How busy one node was, per second of the main phase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeUsage {
    pub name: String,
    /// Data-lane CPU utilisation (0 to 1 of its cores).
    pub cpu: Vec<f64>,
    /// Disk device utilisation (0 to 1 of the second).
    pub disk: Vec<f64>,
}

/// A per-second series as one line of two-decimal values.
fn series<S: serde::Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
    s.serialize_str(&text.join(" "))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the simulation panicked: {0}")]
    Panicked(String),
}

/// The observers a deployment hands back with a run, looked up by type;
/// the deployment reads its own into the report, tests read them directly.
#[derive(Default)]
pub struct Observers(Vec<Box<dyn Any + Send>>);

impl Observers {
    /// Adds an observer (at most one of each type).
    pub fn with<T: Any + Send>(mut self, observer: T) -> Observers {
        assert!(self.get::<T>().is_none(), "one observer of each type");
        self.0.push(Box::new(observer));
        self
    }

    /// The observer of type `T`, if the service has one.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.iter().find_map(|o| o.downcast_ref::<T>())
    }
}
