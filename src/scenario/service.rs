//! What the scenario format asks of a service kind to validate a scenario
//! that runs it: the roles it needs, the `[service]` fields it reads, the
//! workloads and expectations it serves, and the fault targets it
//! resolves. The deployments implement it (`run::deploy`); the format
//! itself knows no service.

use super::format::{ServiceDef, WorkloadDef, WorkloadKind};

/// The rules of one service kind, as validation needs them.
pub trait ServiceRules: Sync {
    /// The `kind` that names it in `[service]`.
    fn kind(&self) -> &'static str;

    /// The nodes it needs, in the order a scenario is checked: each role
    /// with the fewest nodes of it over all zones. The first is the role
    /// whose nodes serve data (`server_role` renames it). Each part of the
    /// service has a role of its own: a name twice (or `client`) is a
    /// collision validation refuses, and `[topology.nodes]` may name only
    /// these roles and `client`.
    fn roles(&self, def: &ServiceDef) -> Vec<Role>;

    /// The roles whose nodes may join the service while it runs (spares
    /// started by `node-add`).
    fn elastic_roles(&self, _def: &ServiceDef) -> Vec<String> {
        Vec::new()
    }

    /// The fewest zones its promises need, and why (`None`: any number);
    /// a scenario on fewer zones is refused, since a run could not show
    /// what the service promises.
    fn zones_needed(&self) -> Option<(usize, &'static str)> {
        None
    }

    /// (fault verb, role) pairs that cannot touch it (its nodes of the role
    /// read no clock, write no disk, run no CPU model; role `*`: every
    /// role), or touch only one node of the role that a draw cannot aim at:
    /// a swarm does not draw them, since they would mostly be inert.
    fn untouched_by(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// The optional `[service]` fields it reads
    /// ([`ServiceDef::optional_fields`]); a scenario may set no other.
    fn fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks the values of the `[service]` fields it reads.
    fn check(&self, _def: &ServiceDef) -> Result<(), Refusal> {
        Ok(())
    }

    /// The workloads it serves.
    fn workload(&self) -> WorkloadKind;

    /// The workload options it serves beyond plain operations.
    fn features(&self) -> &'static [WorkloadFeature] {
        &[]
    }

    /// Checks a workload against the limits of the service (the field is
    /// the workload's, e.g. `columns`).
    fn check_workload(&self, _w: &WorkloadDef) -> Result<(), Refusal> {
        Ok(())
    }

    /// The `[expect]` fields only it can meet; other kinds refuse them.
    fn expectations(&self) -> &'static [&'static str] {
        &[]
    }

    /// The kinds of work it charges its nodes' CPUs for: the names a
    /// scenario's `[resources.costs]` may set.
    fn costs(&self) -> &'static [&'static str] {
        &[]
    }

    /// The `zone-down` targets it names when their fault fires.
    fn dynamic_targets(&self) -> &'static [DynamicTarget] {
        &[]
    }
}

/// A role a service needs nodes of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// The fewest nodes of the role over all zones.
    pub min: usize,
    /// Why the scenario is refused with fewer.
    pub missing: String,
}

impl Role {
    /// The role whose nodes serve data: at least one node.
    pub fn serving(name: &str) -> Role {
        Role { name: name.to_string(), min: 1, missing: format!("the service needs nodes of role `{name}`") }
    }
}

/// Why a service refuses a scenario: the field at fault and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

impl Refusal {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal { field: field.into(), message: message.into() }
    }
}

/// A zone-down target decided only when its fault fires (the zone of the
/// metadata leader, of the active master, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicTarget {
    /// The name a fault's `target` gives (`meta-leader`).
    pub name: &'static str,
    /// What it names and which services have it, as a scenario for another
    /// service is told.
    pub offered_by: &'static str,
    /// Whether the fault log names it beside the zone it resolved to
    /// (`zone-down az2 (crash) [master-zone]`).
    pub shown: bool,
}

/// Workload options that need the service's support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadFeature {
    /// `bad_requests`: requests the service must refuse.
    BadRequests,
    /// `columns`: rows of several columns.
    WideRows,
}

impl WorkloadFeature {
    pub const ALL: [WorkloadFeature; 2] = [WorkloadFeature::BadRequests, WorkloadFeature::WideRows];

    /// The `[[workload]]` field that asks for it.
    pub fn field(self) -> &'static str {
        match self {
            WorkloadFeature::BadRequests => "bad_requests",
            WorkloadFeature::WideRows => "columns",
        }
    }

    /// Whether `w` asks for it.
    pub fn used_by(self, w: &WorkloadDef) -> bool {
        match self {
            WorkloadFeature::BadRequests => w.bad_requests > 0.0,
            WorkloadFeature::WideRows => w.columns > 0,
        }
    }

    /// What it is, for the message that refuses it.
    pub fn describe(self) -> &'static str {
        match self {
            WorkloadFeature::BadRequests => "bad requests (refused by the table store's proxies)",
            WorkloadFeature::WideRows => "wide rows (columns beside the value)",
        }
    }
}
