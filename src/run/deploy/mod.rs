//! Deployments: how a service kind runs in a simulated world. One module
//! per kind ([`minikv`], [`stream`], [`table`]), each a [`Service`]:
//!
//! - its rules for scenarios (roles, `[service]` fields, workloads,
//!   expectations, dynamic fault targets: [`ServiceRules`]);
//! - [`Service::deploy`]: starts its nodes in a world and returns the
//!   running [`Deployment`], which binds the service's client on each
//!   client node and hands it to the workloads, says when it is set up
//!   for them (the main phase begins then), resolves dynamic fault
//!   targets, says whether the service is still settling, and hands back
//!   its observers with the run;
//! - after the run: the unit a key is unavailable with, its report sections
//!   and the verdicts on its own expectations.
//!
//! The runner knows this interface and [`catalog`], never a service. A new
//! service is a new module here and one line in the catalog.

pub mod catalog;
pub mod minikv;
pub mod stream;
pub mod table;

use sim::topology::{NodeId, Topology, ZoneId};
use sim::world::World;

use crate::history::Operation;
use crate::report::Report;
use crate::run::output::{Observers, RunOutput};
use crate::scenario::{Scenario, ServiceRules};
use crate::workload::clients::ClientNode;

/// A service kind: its rules, its deployment, its part of the report.
pub trait Service: Sync {
    /// Its rules for scenarios.
    fn rules(&self) -> &dyn ServiceRules;

    /// Starts the service's nodes in `world` for `scn`.
    fn deploy(&self, world: &World, scn: &Scenario) -> Box<dyn Deployment>;

    /// Names the unit a key is unavailable with (the report's longest
    /// unavailability is per unit): a server, a partition, ...
    fn availability_unit<'a>(&self, scn: &'a Scenario) -> Box<dyn Fn(&str) -> String + 'a>;

    /// Adds its sections to the report (`ops` are the run's operations).
    fn report(&self, _scn: &Scenario, _out: &RunOutput, _ops: &[Operation<'_>], _report: &mut Report) {}

    /// Judges the expectations only it can meet, after the common ones.
    fn judge(&self, _scn: &Scenario, _out: &RunOutput, _report: &mut Report) {}
}

/// A service running in a world.
pub trait Deployment {
    /// Starts client node `node`: binds the service's client there and
    /// hands it to the node's share of the workloads.
    fn start_client(&self, world: &World, node: NodeId, share: ClientNode);

    /// Whether the service is set up for the workloads (e.g. its table
    /// created): the runner begins the main phase only once it is, and
    /// waits at most `SETUP_MAX`. A service that needs no set-up is ready
    /// at once.
    fn set_up(&self) -> SetUp {
        SetUp::Ready
    }

    /// The zone a dynamic fault target names now (`None`: not known yet).
    fn resolve_target(&self, _topology: &Topology, _name: &str) -> Option<ZoneId> {
        None
    }

    /// The final phase is over: the service may begin what it does once
    /// nothing changes any more (e.g. audit its replicas).
    fn begin_settling(&self) {}

    /// Whether the service is still repairing itself after the final
    /// phase (the runner waits a while for it).
    fn settling(&self) -> bool {
        false
    }

    /// What it observed, handed back with the run.
    fn observers(&self) -> Observers {
        Observers::default()
    }
}

/// How far a deployment's set-up has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetUp {
    Pending,
    Ready,
    /// It cannot be set up, and why.
    Failed(String),
}

/// Names a key after the node of `role` that the stable hash minikv routes
/// by gives it.
fn hashed_owner<'a>(scn: &'a Scenario, role: &str) -> Box<dyn Fn(&str) -> String + 'a> {
    let topo = &scn.topology;
    let mut servers = topo.nodes_with_role(role);
    servers.sort();
    Box::new(move |key| topo.node(engine::minikv::owner(&servers, key)).name.clone())
}
