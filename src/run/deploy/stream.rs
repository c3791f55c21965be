//! The stream layer as a service: metadata replicas (one Raft group, a
//! replica per zone), stream managers (one per zone, the one whose zone's
//! replica leads acts) and storage nodes holding three replicas of every
//! extent in three zones; stream workloads write and read through
//! `StreamClient`. The table service runs on the same layer and uses the
//! pieces here for it.

use std::collections::BTreeMap;

use engine::stream::client::StreamClient;
use engine::stream::{SealCause, StreamConfig, StreamObserver};
use sim::time::fmt_duration;
use sim::topology::{NodeId, Topology, ZoneId};
use sim::world::{NodeCtx, World};

use super::{hashed_owner, Deployment, Service};
use crate::history::{Op, Operation};
use crate::report::{main_seconds, AuditFigures, Report, StreamFigures};
use crate::run::output::{Observers, RunOutput};
use crate::scenario::{DynamicTarget, Refusal, Role, Scenario, ServiceDef, ServiceRules, WorkloadKind};
use crate::workload::clients::ClientNode;

/// The role of the metadata replicas unless `meta_role` names another.
pub const META_ROLE: &str = "meta";
/// The role of the stream managers' nodes (one per zone).
pub const MANAGER_ROLE: &str = "manager";
/// The role of the storage nodes.
pub const STORAGE_ROLE: &str = "storage";
/// What cannot touch the stream layer: storage nodes and stream managers
/// time everything by the true clock (their timers are not leases), so a
/// skewed clock there is never read; a manager keeps nothing on disk and
/// its work is control work that no CPU model charges (measured: no effect
/// in any swarm draw of these).
pub const LAYER_UNTOUCHED: &[(&str, &str)] = &[
    ("clock-offset", STORAGE_ROLE),
    ("clock-drift", STORAGE_ROLE),
    ("clock-offset", MANAGER_ROLE),
    ("clock-drift", MANAGER_ROLE),
    ("disk-faults", MANAGER_ROLE),
    ("cpu-slow", MANAGER_ROLE),
];

/// The zone whose metadata replica leads when the fault fires.
pub const META_LEADER: DynamicTarget = DynamicTarget {
    name: "meta-leader",
    offered_by: "names the zone of the metadata leader: the stream service only (and the table service on it)",
    shown: false,
};

/// The stream layer's promise that needs three zones.
pub(super) const THREE_ZONES: (usize, &str) = (3, "keeps every extent's three replicas in three zones and a metadata replica in each");

/// The `[service]` fields the stream layer reads.
pub const FIELDS: &[&str] = &["meta_role", "dead_after", "rereplicate_after", "extent_bytes"];

pub struct Stream;

impl ServiceRules for Stream {
    fn kind(&self) -> &'static str {
        "stream"
    }

    fn untouched_by(&self) -> Vec<(&'static str, &'static str)> {
        LAYER_UNTOUCHED.to_vec()
    }

    /// The storage nodes first (they serve data), then the rest of the
    /// layer.
    fn roles(&self, def: &ServiceDef) -> Vec<Role> {
        let mut roles = layer_roles(def, def.server_role_or(STORAGE_ROLE));
        roles.rotate_right(1);
        roles
    }

    fn zones_needed(&self) -> Option<(usize, &'static str)> {
        Some(THREE_ZONES)
    }

    fn fields(&self) -> &'static [&'static str] {
        FIELDS
    }

    fn check(&self, def: &ServiceDef) -> Result<(), Refusal> {
        check_fields(def)
    }

    fn workload(&self) -> WorkloadKind {
        WorkloadKind::Stream
    }

    fn expectations(&self) -> &'static [&'static str] {
        &["streams_ok", "max_append_stall", "rereplicated", "replicated_at_end", "min_replicas_repaired", "replicas_agree_at_end", "max_repairs_per_replica", "max_read_fallbacks_after_heal"]
    }

    fn dynamic_targets(&self) -> &'static [DynamicTarget] {
        &[META_LEADER]
    }

    fn costs(&self) -> &'static [&'static str] {
        LAYER_COSTS
    }
}

/// The work the stream layer charges its nodes' CPUs for.
pub(super) const LAYER_COSTS: &[&str] = &["storage_append", "storage_read", "storage_kib", "control", "raft_step"];

/// Sets the costs a scenario gives (names from the service's `costs()`,
/// checked by validation) in the layer's configuration.
pub(super) fn apply_costs(cfg: &mut StreamConfig, given: &std::collections::BTreeMap<String, std::time::Duration>) {
    let c = &mut cfg.costs;
    for (name, &d) in given {
        let slot = match name.as_str() {
            "proxy_request" => &mut c.proxy_request,
            "server_read" => &mut c.server_read,
            "server_write" => &mut c.server_write,
            "server_combined" => &mut c.server_combined,
            "server_scan" => &mut c.server_scan,
            "server_scan_row" => &mut c.server_scan_row,
            "server_kib" => &mut c.server_kib,
            "server_table_kib" => &mut c.server_table_kib,
            "storage_append" => &mut c.storage_append,
            "storage_read" => &mut c.storage_read,
            "storage_kib" => &mut c.storage_kib,
            "control" => &mut c.control,
            "raft_step" => &mut c.raft_step,
            other => unreachable!("validation refused the cost `{other}`"),
        };
        *slot = d;
    }
    cfg.meta.step_cost = c.raft_step;
}

/// The stream layer's roles beside its storage nodes' (`storage`, which
/// must be at least three): metadata replicas and managers.
pub(super) fn layer_roles(def: &ServiceDef, storage: &str) -> Vec<Role> {
    let meta = def.meta_role.as_deref().unwrap_or(META_ROLE);
    vec![
        Role { name: meta.to_string(), min: 1, missing: format!("the stream service needs metadata replicas: nodes of role `{meta}`") },
        Role { name: MANAGER_ROLE.to_string(), min: 1, missing: format!("the stream service needs stream managers: nodes of role `{MANAGER_ROLE}` (one per zone)") },
        Role { name: storage.to_string(), min: 3, missing: format!("an extent has three replicas on three `{storage}` nodes: give at least three") },
    ]
}

/// Checks the stream layer's fields.
pub(super) fn check_fields(def: &ServiceDef) -> Result<(), Refusal> {
    if def.extent_bytes == Some(0) {
        return Err(Refusal::new("service.extent_bytes", "must be at least 1"));
    }
    for (name, d) in [("dead_after", def.dead_after), ("rereplicate_after", def.rereplicate_after)] {
        if d.is_some_and(|d| d.0.is_zero()) {
            return Err(Refusal::new(format!("service.{name}"), "must be positive"));
        }
    }
    Ok(())
}

/// Sets the stream layer's knobs the scenario gives.
pub(super) fn apply_fields(cfg: &mut StreamConfig, def: &ServiceDef) {
    if let Some(d) = def.dead_after {
        cfg.dead_after = d.0;
    }
    if let Some(d) = def.rereplicate_after {
        cfg.rereplicate_after = d.0;
    }
    if let Some(b) = def.extent_bytes {
        cfg.extent_bytes_max = b;
    }
}

/// Starts the stream layer: a metadata replica on every replica node of
/// `cfg`, a stream manager on every `manager` node, the extent service on
/// every storage node of `cfg`.
pub(super) fn start_layer(world: &World, cfg: &StreamConfig) {
    for &m in &cfg.meta.replicas {
        let meta = cfg.meta.clone();
        world.start_node(m, move |ctx| engine::meta::service::serve(ctx, meta.clone()));
    }
    for &m in &world.topology().nodes_with_role(MANAGER_ROLE) {
        let cfg = cfg.clone();
        world.start_node(m, move |ctx| engine::stream::manager::serve_manager(ctx, cfg.clone()));
    }
    for &s in &cfg.storage {
        let cfg = cfg.clone();
        world.start_node(s, move |ctx| engine::stream::replica::serve_storage(ctx, cfg.clone()));
    }
}

/// The zone of the metadata leader the stream layer last saw.
pub(super) fn meta_leader_zone(obs: &StreamObserver, topology: &Topology) -> Option<ZoneId> {
    obs.snapshot().meta_leader.map(|n| topology.zone_of(n))
}

/// Still under-replicated, or the audit asked for not done yet.
pub(super) fn settling(obs: &StreamObserver) -> bool {
    let d = obs.snapshot();
    d.under_replicated.last().map(|s| s.1) != Some(0) || (d.audit_requested && d.audit.is_none())
}


/// The report's `streams` section: the stream layer's figures and, when
/// the history holds appends, their stalls per window of the fault
/// timeline (a table scenario has the layer beneath but no appends).
pub(super) fn report_section(scn: &Scenario, out: &RunOutput, ops: &[Operation<'_>]) -> Option<StreamFigures> {
    let obs = out.observers.get::<StreamObserver>()?;
    let mut f = figures(obs, out, &scn.topology, main_seconds(scn));
    if ops.iter().any(|o| matches!(o.op, Op::StreamAppend { .. })) {
        f.add_stalls(ops, out, out.workloads_start());
    }
    Some(f)
}

impl Service for Stream {
    fn rules(&self) -> &dyn ServiceRules {
        self
    }

    fn deploy(&self, world: &World, scn: &Scenario) -> Box<dyn Deployment> {
        let topo = world.topology();
        let metas = topo.nodes_with_role(scn.service.meta_role.as_deref().unwrap_or(META_ROLE));
        let storage = topo.nodes_with_role(scn.service.server_role_or(STORAGE_ROLE));
        let mut cfg = StreamConfig::new(metas, storage);
        apply_fields(&mut cfg, &scn.service);
        apply_costs(&mut cfg, &scn.resources.costs);
        start_layer(world, &cfg);
        Box::new(Running { cfg })
    }

    /// Streams are grouped by the stable hash of their names over the
    /// storage nodes (a group is named after one; a stream's extents live
    /// on three).
    fn availability_unit<'a>(&self, scn: &'a Scenario) -> Box<dyn Fn(&str) -> String + 'a> {
        hashed_owner(scn, scn.service.server_role_or(STORAGE_ROLE))
    }

    fn report(&self, scn: &Scenario, out: &RunOutput, ops: &[Operation<'_>], report: &mut Report) {
        report.streams = report_section(scn, out, ops);
    }

    fn judge(&self, scn: &Scenario, _out: &RunOutput, report: &mut Report) {
        let e = &scn.expect;
        let figures = report.streams.clone().unwrap_or_default();
        if let (Some(max), Some(got)) = (e.max_append_stall, figures.max_append_stall_time) {
            report.expect("max_append_stall", format!("<= {}", fmt_duration(max.0)), fmt_duration(got), got <= max.0);
        }
        if let Some(want) = e.rereplicated {
            let did = figures.bytes_rereplicated > 0;
            report.expect("rereplicated", want.to_string(), format!("{} bytes", figures.bytes_rereplicated), did == want);
        }
        if let Some(want) = e.replicated_at_end {
            let did = figures.under_replicated_at_end == 0;
            report.expect("replicated_at_end", want.to_string(), format!("{} extents under-replicated", figures.under_replicated_at_end), did == want);
        }
        judge_repairs(scn, report);
    }
}

struct Running {
    cfg: StreamConfig,
}

impl Deployment for Running {
    fn start_client(&self, world: &World, node: NodeId, share: ClientNode) {
        let cfg = self.cfg.clone();
        world.start_node(node, move |ctx| client_main(ctx, share.clone(), cfg.clone()));
    }

    fn resolve_target(&self, topology: &Topology, name: &str) -> Option<ZoneId> {
        (name == META_LEADER.name).then(|| meta_leader_zone(&self.cfg.observer, topology)).flatten()
    }

    fn begin_settling(&self) {
        self.cfg.observer.request_audit();
    }

    /// Re-replication brings every extent back to three zones; then the
    /// manager audits the replicas.
    fn settling(&self) -> bool {
        settling(&self.cfg.observer)
    }

    fn observers(&self) -> Observers {
        Observers::default().with(self.cfg.observer.clone())
    }
}

/// A client node: a stream client for the node's stream processes.
async fn client_main(ctx: NodeCtx, share: ClientNode, cfg: StreamConfig) {
    let client = StreamClient::bind(&ctx, cfg).await;
    share.run_streams(ctx, client).await
}

/// The stream layer's own observations, per second and at the end.
fn figures(obs: &StreamObserver, out: &RunOutput, topology: &Topology, secs: usize) -> StreamFigures {
    let d = obs.snapshot();
    let mut per_second = vec![0u64; secs];
    for &(t, n) in d.under_replicated.iter().filter(|(t, _)| *t >= out.main_start) {
        let s = (((t.0 - out.main_start.0) / 1_000_000_000) as usize).min(secs - 1);
        per_second[s] = per_second[s].max(n);
    }
    let at_end = d.under_replicated.last().map(|&(_, n)| n).unwrap_or(0);
    // The first sample after the last heal from which every sample is zero.
    let mut fully = None;
    for &(t, n) in d.under_replicated.iter().filter(|(t, _)| *t >= out.heal_at) {
        if n == 0 {
            fully.get_or_insert(t);
        } else {
            fully = None;
        }
    }
    // The replica repaired most often (ties: the first by extent and node).
    let most = d.repairs_by_replica.iter().map(|(k, &n)| (n, k)).max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
    let mut seals = BTreeMap::new();
    for (_, cause) in &d.seals {
        let name = match cause {
            SealCause::ReplicaFailed => "replica_failed",
            SealCause::Full => "extent_full",
            SealCause::OwnerChange => "owner_change",
            SealCause::ZoneBack => "zone_back",
        };
        *seals.entry(name.to_string()).or_insert(0) += 1;
    }
    StreamFigures {
        stalls: Vec::new(),
        max_append_stall: String::new(),
        max_append_stall_time: None,
        under_replicated_per_second: per_second,
        under_replicated_at_end: at_end,
        fully_replicated_after_heal: fully.map(|t| fmt_duration(t.saturating_sub(out.heal_at))),
        bytes_rereplicated: d.bytes_rereplicated,
        seals,
        corrupt_replicas_detected: d.corrupt_replicas_detected,
        replicas_repaired: d.repairs,
        most_repairs_of_one_replica: most.map_or(0, |m| m.0),
        most_repaired_replica: most.map(|(_, (extent, node))| format!("{extent} on {}", topology.node(*node).name)),
        fenced_appends_refused: d.fenced_appends_rejected,
        audit: d.audit.map(|a| AuditFigures {
            sealed_extents: a.extents,
            replicas: a.replicas,
            mib_read: (a.bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0,
            bad_replicas: a.bad_replicas,
            problems: a.problems,
            found_by_earlier_rounds: a.found_earlier,
            rounds: a.rounds,
        }),
        read_fallbacks: d.read_fallbacks,
        read_fallbacks_after_heal: d.read_fallback_times.iter().filter(|&&t| t >= out.heal_at).count() as u64,
        refused_busy: d.refused_busy,
    }
}

/// Judges the stream layer's repair expectations (stream and table
/// services alike) on the report's `streams` section.
pub(super) fn judge_repairs(scn: &Scenario, report: &mut Report) {
    let e = &scn.expect;
    let f = report.streams.clone().unwrap_or_default();
    if e.replicas_agree_at_end.unwrap_or(true) {
        let (measured, pass) = match &f.audit {
            Some(a) if a.bad_replicas == 0 => (format!("{} replicas of {} sealed extents agree", a.replicas, a.sealed_extents), true),
            Some(a) => (format!("{} of {} replicas bad: {}", a.bad_replicas, a.replicas, a.problems.first().map_or("", String::as_str)), false),
            None => ("not audited: the layer did not settle".to_string(), false),
        };
        report.expect("replicas_agree_at_end", "true".to_string(), measured, pass);
    }
    if let Some(min) = e.min_replicas_repaired {
        report.expect("min_replicas_repaired", format!(">= {min}"), f.replicas_repaired.to_string(), f.replicas_repaired >= min);
    }
    if let Some(max) = e.max_repairs_per_replica {
        let most = f.most_repairs_of_one_replica;
        let measured = match &f.most_repaired_replica {
            Some(r) => format!("{most} ({r})"),
            None => "0 (no repair)".to_string(),
        };
        report.expect("max_repairs_per_replica", format!("<= {max}"), measured, most <= max);
    }
    if let Some(max) = e.max_read_fallbacks_after_heal {
        let after = f.read_fallbacks_after_heal;
        report.expect("max_read_fallbacks_after_heal", format!("<= {max}"), format!("{after} of {}", f.read_fallbacks), after <= max);
    }
}
