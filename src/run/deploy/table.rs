//! The table store as a service: the stream layer (metadata replicas,
//! stream managers, storage nodes), then masters, table servers and
//! proxies in every zone. Key-value workloads drive one table, split into
//! `partitions` range partitions, through the table client; its report
//! adds failovers, time to recover, master takeovers and refusals.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::table::client::TableClient;
use engine::table::part::{PART_BLOCK_CACHE_BYTES_MAX, PART_MEMTABLE_BYTES_MAX, PART_MEMTABLE_BYTES_MIN};
use engine::table::{FailoverCause, TableConfig, TableObserver, TableObserverData};
use sim::time::{self, fmt_duration, SimTime};
use sim::topology::{NodeId, Topology, ZoneId};
use sim::world::{NodeCtx, World};

use super::stream::{self, META_LEADER, STORAGE_ROLE};
use super::{Deployment, Service, SetUp};
use crate::history::Operation;
use crate::report::measure::{latency_of, round2};
use crate::report::{healthy_write, HealthyWrite, Report, TableFigures};
use crate::run::output::{Observers, RunOutput};
use crate::scenario::{DynamicTarget, Refusal, Role, Scenario, ServiceDef, ServiceRules, WorkloadDef, WorkloadFeature, WorkloadKind};
use crate::workload::clients::ClientNode;
use crate::workload::kv::key_prefix as kv_prefix;
use crate::workload::table::{self as kv_table, split_points, wide_row_bytes, TableKv, ACCESS_KEY, INSTANCE, TABLE};

/// The role of the table servers unless `server_role` names another.
pub const TABLE_SERVER_ROLE: &str = "table";
/// Shortest `[service] lease` (table): a holder's lease ends `max_skew`
/// (200 ms) early on its own clock, so it must stay well above that.
const LEASE_MIN: Duration = Duration::from_millis(500);
/// Longest `[service] lease`.
const LEASE_MAX: Duration = Duration::from_secs(60);
/// `[service] hotkey_qps` bounds (reads per second of one key).
const HOTKEY_QPS_MIN: u64 = 10;
const HOTKEY_QPS_MAX: u64 = 10_000_000;
/// `[service] combine_period` bounds.
const COMBINE_PERIOD_MIN: Duration = Duration::from_micros(1);
const COMBINE_PERIOD_MAX: Duration = Duration::from_millis(100);
/// `[service] combine_max` bound.
const COMBINE_MAX: u64 = 10_000;
/// `[service] hot_staleness` bounds.
const HOT_STALENESS_MIN: Duration = Duration::from_millis(1);
const HOT_STALENESS_MAX: Duration = Duration::from_secs(10);

/// The role of the masters' nodes (the one holding the master lease acts).
pub const MASTER_ROLE: &str = "master";
/// The role of the proxies' nodes.
pub const PROXY_ROLE: &str = "proxy";
/// Partitions of a table when `service.partitions` is not given.
pub const DEFAULT_PARTITIONS: u32 = 8;

/// The zone of the latest master takeover when the fault fires.
pub const MASTER_ZONE: DynamicTarget = DynamicTarget {
    name: "master-zone",
    offered_by: "names the zone of the active table master: `kind = \"table\"` scenarios only",
    shown: true,
};

/// The zone of the table server that last called a key hot when the
/// fault fires.
pub const HOT_KEY_ZONE: DynamicTarget = DynamicTarget {
    name: "hot-key-zone",
    offered_by: "names the zone of the table server that last called a key hot: `kind = \"table\"` scenarios only",
    shown: true,
};

pub struct Table;

impl ServiceRules for Table {
    fn kind(&self) -> &'static str {
        "table"
    }

    /// The stream layer's, and: proxies read no clock and keep nothing on
    /// disk; table servers keep their data in the stream layer, not on
    /// their own disks.
    fn untouched_by(&self) -> Vec<(&'static str, &'static str)> {
        // Masters keep their state in the metadata store (no disk of their
        // own), and only the acting one does CPU work: a slowed standby
        // (two draws in three) has nothing to slow.
        let own = [("clock-offset", PROXY_ROLE), ("clock-drift", PROXY_ROLE), ("disk-faults", PROXY_ROLE), ("disk-faults", TABLE_SERVER_ROLE), ("disk-faults", MASTER_ROLE), ("cpu-slow", MASTER_ROLE)];
        stream::LAYER_UNTOUCHED.iter().copied().chain(own).collect()
    }

    fn roles(&self, def: &ServiceDef) -> Vec<Role> {
        let mut roles = vec![Role::serving(def.server_role_or(TABLE_SERVER_ROLE))];
        roles.extend(stream::layer_roles(def, STORAGE_ROLE));
        for role in [MASTER_ROLE, PROXY_ROLE] {
            roles.push(Role { name: role.to_string(), min: 1, missing: format!("the table service needs nodes of role `{role}`") });
        }
        roles
    }

    /// Table servers: the master takes a new one from its first heartbeat.
    fn elastic_roles(&self, def: &ServiceDef) -> Vec<String> {
        vec![def.server_role_or(TABLE_SERVER_ROLE).to_string()]
    }

    fn zones_needed(&self) -> Option<(usize, &'static str)> {
        Some(stream::THREE_ZONES)
    }

    fn fields(&self) -> &'static [&'static str] {
        &["meta_role", "dead_after", "rereplicate_after", "extent_bytes", "partitions", "lease", "memtable_bytes", "block_cache_bytes", "hotkey_qps", "hot_staleness", "combine_period", "combine_max", "planted_bug"]
    }

    fn check(&self, def: &ServiceDef) -> Result<(), Refusal> {
        let max = engine::table::master::CREATE_PARTITIONS_MAX as u32;
        if def.partitions.is_some_and(|p| p == 0 || p > max) {
            return Err(Refusal::new("service.partitions", format!("must be 1..={max}")));
        }
        if def.lease.is_some_and(|d| !(LEASE_MIN..=LEASE_MAX).contains(&d.0)) {
            return Err(Refusal::new("service.lease", format!("must be {} to {}", fmt_duration(LEASE_MIN), fmt_duration(LEASE_MAX))));
        }
        let (lo, hi) = (PART_MEMTABLE_BYTES_MIN as u64, PART_MEMTABLE_BYTES_MAX as u64);
        if def.memtable_bytes.is_some_and(|b| !(lo..=hi).contains(&b)) {
            return Err(Refusal::new("service.memtable_bytes", format!("must be {lo}..={hi}")));
        }
        let max = PART_BLOCK_CACHE_BYTES_MAX as u64;
        if def.block_cache_bytes.is_some_and(|b| b > max) {
            return Err(Refusal::new("service.block_cache_bytes", format!("must be 0..={max}")));
        }
        if def.hotkey_qps.is_some_and(|q| !(HOTKEY_QPS_MIN..=HOTKEY_QPS_MAX).contains(&q)) {
            return Err(Refusal::new("service.hotkey_qps", format!("must be {HOTKEY_QPS_MIN}..={HOTKEY_QPS_MAX}")));
        }
        if let Some(name) = def.planted_bug.as_deref().filter(|n| engine::table::PlantedBug::from_name(n).is_none()) {
            let known: Vec<&str> = engine::table::PlantedBug::ALL.iter().map(|b| b.name()).collect();
            return Err(Refusal::new("service.planted_bug", format!("unknown bug `{name}` (known: {})", known.join(", "))));
        }
        if def.combine_period.is_some_and(|d| !(COMBINE_PERIOD_MIN..=COMBINE_PERIOD_MAX).contains(&d.0)) {
            return Err(Refusal::new("service.combine_period", format!("must be {} to {}", fmt_duration(COMBINE_PERIOD_MIN), fmt_duration(COMBINE_PERIOD_MAX))));
        }
        if def.combine_max.is_some_and(|m| !(1..=COMBINE_MAX).contains(&m)) {
            return Err(Refusal::new("service.combine_max", format!("must be 1..={COMBINE_MAX}")));
        }
        if def.hot_staleness.is_some_and(|d| !(HOT_STALENESS_MIN..=HOT_STALENESS_MAX).contains(&d.0)) {
            return Err(Refusal::new("service.hot_staleness", format!("must be {} to {}", fmt_duration(HOT_STALENESS_MIN), fmt_duration(HOT_STALENESS_MAX))));
        }
        stream::check_fields(def)
    }

    fn workload(&self) -> WorkloadKind {
        WorkloadKind::Kv
    }

    fn features(&self) -> &'static [WorkloadFeature] {
        &[WorkloadFeature::BadRequests, WorkloadFeature::WideRows]
    }

    /// Wide rows must fit the store's limits.
    fn check_workload(&self, w: &WorkloadDef) -> Result<(), Refusal> {
        if w.instance.as_deref() == Some(INSTANCE) {
            return Err(Refusal::new("instance", format!("`{INSTANCE}` is the main instance's name in the store: leave `instance` out")));
        }
        if w.columns as usize > engine::table::COLUMNS_MAX {
            return Err(Refusal::new("columns", format!("{} columns over the table store's {} per row", w.columns, engine::table::COLUMNS_MAX)));
        }
        let row_bytes = wide_row_bytes(w.value_size as usize, w.columns);
        if w.columns > 0 && row_bytes > engine::table::ROW_BYTES_MAX {
            let message = format!("{} columns of {} bytes make rows of up to {row_bytes} bytes, over the table store's {}", w.columns, w.value_size, engine::table::ROW_BYTES_MAX);
            return Err(Refusal::new("columns", message));
        }
        Ok(())
    }

    fn expectations(&self) -> &'static [&'static str] {
        &[
            "bad_requests_accepted",
            "min_bad_requests_refused",
            "bad_values_seen",
            "min_master_takeovers",
            "no_split_brain",
            "max_time_to_recover",
            "min_replicas_repaired",
            "replicas_agree_at_end",
            "max_repairs_per_replica",
            "max_read_fallbacks_after_heal",
            "tenant_max_p99",
            "tenant_min_availability",
            "quota_accuracy",
            "min_throttled",
            "max_drain_time",
            "min_added_share",
            "max_hot_key_detection",
            "max_hot_key_cooldown",
            "max_false_hot_keys",
            "min_hotzone_hit_rate",
            "max_hotzone_spread",
            "max_hot_source_reads",
            "max_hot_key_engine_writes",
            "min_combined_writes",
        ]
    }

    fn dynamic_targets(&self) -> &'static [DynamicTarget] {
        &[META_LEADER, MASTER_ZONE, HOT_KEY_ZONE]
    }

    fn costs(&self) -> &'static [&'static str] {
        &[
            "proxy_request",
            "server_read",
            "server_write",
            "server_combined",
            "server_scan",
            "server_scan_row",
            "server_kib",
            "server_table_kib",
            "storage_append",
            "storage_read",
            "storage_kib",
            "control",
            "raft_step",
        ]
    }
}

impl Service for Table {
    fn rules(&self) -> &dyn ServiceRules {
        self
    }

    /// The stream layer, then a master on every `master` node, a table
    /// server on every server node and a proxy on every `proxy` node.
    fn deploy(&self, world: &World, scn: &Scenario) -> Box<dyn Deployment> {
        let topo = world.topology();
        let role = |r: &str| topo.nodes_with_role(r);
        let metas = role(scn.service.meta_role.as_deref().unwrap_or(stream::META_ROLE));
        let meta_cfg = engine::meta::service::ServiceConfig::new(metas);
        let mut cfg = TableConfig::new(meta_cfg, role(STORAGE_ROLE), role(MASTER_ROLE), role(scn.service.server_role_or(TABLE_SERVER_ROLE)), role(PROXY_ROLE));
        stream::apply_fields(&mut cfg.stream, &scn.service);
        stream::apply_costs(&mut cfg.stream, &scn.resources.costs);
        if let Some(d) = scn.service.lease {
            cfg.lease = d.0;
        }
        // Validation bounded both sizes.
        if let Some(b) = scn.service.memtable_bytes {
            cfg.part_memory.memtable_bytes = b as usize;
        }
        if let Some(b) = scn.service.block_cache_bytes {
            cfg.part_memory.block_cache_bytes = b as usize;
        }
        if let Some(q) = scn.service.hotkey_qps {
            cfg.hotkeys.qps_hot = q;
        }
        if let Some(d) = scn.service.hot_staleness {
            cfg.hot_staleness = d.0;
        }
        if let Some(d) = scn.service.combine_period {
            cfg.combine.period = d.0;
        }
        if let Some(m) = scn.service.combine_max {
            cfg.combine.max = m as usize;
        }
        cfg.planted = scn.service.planted_bug.as_deref().and_then(engine::table::PlantedBug::from_name);
        cfg.combine.early_ack = cfg.planted == Some(engine::table::PlantedBug::CombineEarlyAck);
        // A client operation gives up (with an unknown outcome for a write)
        // after the workload's timeout.
        if let Some(t) = scn.workloads.iter().map(|w| w.timeout.0).max() {
            cfg.op_deadline = t;
        }
        stream::start_layer(world, &cfg.stream);
        for &m in &cfg.masters {
            let c = cfg.clone();
            world.start_node(m, move |ctx| engine::table::master::serve(ctx, c.clone()));
        }
        for &s in &cfg.servers {
            let c = cfg.clone();
            world.start_node(s, move |ctx| engine::table::server::serve(ctx, c.clone()));
        }
        for &p in &cfg.proxies {
            let c = cfg.clone();
            world.start_node(p, move |ctx| engine::table::proxy::serve(ctx, c.clone()));
        }
        let mut tenants: Vec<kv_table::Tenant> = Vec::new();
        for w in &scn.workloads {
            if let Some(i) = &w.instance {
                if !tenants.iter().any(|t| &t.instance == i) {
                    tenants.push(kv_table::Tenant { instance: i.clone(), keys: w.keys });
                }
            }
        }
        let setup = TableSetup {
            keys: scn.workloads.iter().find(|w| w.instance.is_none()).map(|w| w.keys).unwrap_or(1),
            partitions: scn.service.partitions.unwrap_or(DEFAULT_PARTITIONS),
            columns: scn.workloads.iter().map(|w| w.columns).max().unwrap_or(0),
            tenants,
            quotas: scn.quotas.clone(),
        };
        Box::new(Running { cfg, setup, ready: Arc::new(Mutex::new(SetUp::Pending)) })
    }

    /// A key is unavailable with its range partition (partitions move
    /// between servers, so not with a server).
    fn availability_unit<'a>(&self, scn: &'a Scenario) -> Box<dyn Fn(&str) -> String + 'a> {
        let parts = scn.service.partitions.unwrap_or(DEFAULT_PARTITIONS);
        let splits = split_points(scn.workloads.iter().find(|w| w.instance.is_none()).map(|w| w.keys).unwrap_or(1), parts);
        // Another instance's keys are its table's, split alike.
        let mut tenants: Vec<(String, Vec<String>)> = Vec::new();
        for w in &scn.workloads {
            if let Some(i) = &w.instance {
                if !tenants.iter().any(|(p, _)| *p == kv_prefix(Some(i))) {
                    tenants.push((kv_prefix(Some(i)), split_points(w.keys, parts)));
                }
            }
        }
        Box::new(move |key| match tenants.iter().find(|(p, _)| key.starts_with(p.as_str())) {
            Some((p, s)) => {
                let k = &key[p.len()..];
                format!("{p}{TABLE}/{}", s.partition_point(|x| x.as_str() <= k))
            }
            None => format!("{TABLE}/{}", splits.partition_point(|s| s.as_str() <= key)),
        })
    }

    fn report(&self, scn: &Scenario, out: &RunOutput, ops: &[Operation<'_>], report: &mut Report) {
        report.streams = stream::report_section(scn, out, ops);
        report.table = out.observers.get::<TableObserver>().map(|t| {
            let first_fault = out.faults.first().map(|f| f.at).unwrap_or(out.main_end);
            let mut f = figures(t, healthy_write(ops, out.workloads_start(), first_fault, &scn.topology, &scn.disk), out.main_end);
            f.traffic = traffic_section(scn, out, ops, t);
            let d = t.snapshot();
            f.elastic = elastic_servers(out, &d, &scn.topology);
            f.hot_keys = hot_key_figures(&d, &scn.topology, hot_staleness(scn));
            f
        });
    }

    fn judge(&self, scn: &Scenario, out: &RunOutput, report: &mut Report) {
        let e = &scn.expect;
        if let Some(max) = e.max_time_to_recover {
            // Every unserved span counts, whatever its cause.
            let table = report.table.as_ref();
            let (slowest, what) = match table.and_then(|t| t.longest_unserved_time.zip(t.longest_unserved.clone())) {
                Some((d, w)) => (d, w),
                None => (Duration::ZERO, "no partition was ever unserved".into()),
            };
            report.expect("max_time_to_recover", format!("<= {}", fmt_duration(max.0)), what, slowest <= max.0);
        }
        let elastic = report.table.as_ref().map(|t| t.elastic.clone()).unwrap_or_default();
        if let Some(max) = e.max_drain_time {
            let drains: Vec<_> = elastic.iter().filter(|s| s.drain_from.is_some()).collect();
            let slowest = drains.iter().max_by_key(|s| s.drained_after_time.unwrap_or(Duration::MAX));
            let measured = match slowest {
                None => "no server was drained".to_string(),
                Some(s) => match &s.drained_after {
                    Some(d) => format!("{} empty {d} after its drain began ({} drained)", s.server, drains.len()),
                    None => format!("{} was never empty after its drain began", s.server),
                },
            };
            let pass = !drains.is_empty() && drains.iter().all(|s| s.drained_after_time.is_some_and(|d| d <= max.0));
            report.expect("max_drain_time", format!("<= {}", fmt_duration(max.0)), measured, pass);
        }
        if let Some(min) = e.min_added_share {
            let added: Vec<_> = elastic.iter().filter(|s| s.added.is_some()).collect();
            let share = |s: &crate::report::table::ElasticServer| if s.mean_at_end > 0.0 { s.partitions_at_end as f64 / s.mean_at_end } else { 0.0 };
            let least = added.iter().min_by(|a, b| share(a).total_cmp(&share(b)));
            let measured = least.map_or_else(|| "no server was added".to_string(), |s| format!("{}: {} partitions, {:.2} of the mean ({} added)", s.server, s.partitions_at_end, share(s), added.len()));
            let pass = !added.is_empty() && added.iter().all(|s| share(s) >= min);
            report.expect("min_added_share", format!(">= {min}"), measured, pass);
        }
        self.judge_hot_keys(scn, out, report);
        if let Some(min) = e.min_master_takeovers {
            // From the first fault as applied (a fault's time is when it fired).
            let first_fault = out.faults.first().map(|f| f.at).unwrap_or(out.end);
            let (after, at, all) = out
                .observers
                .get::<TableObserver>()
                .map(|t| {
                    let takeovers = t.snapshot().master_takeovers;
                    (takeovers.iter().filter(|(at, _, _)| *at >= first_fault).count() as u64, first_fault, takeovers.len() as u64)
                })
                .unwrap_or((0, SimTime::ZERO, 0));
            report.expect("min_master_takeovers", format!(">= {min}"), format!("{after} from {at} on ({all} in all)"), after >= min);
        }
        if let Some(want) = e.no_split_brain {
            let (count, first) = out.observers.get::<TableObserver>().map(|t| split_brain(&t.snapshot(), &scn.topology)).unwrap_or((0, None));
            let measured = match first {
                Some(f) => format!("{count} partitions ({f})"),
                None => "0 partitions".to_string(),
            };
            report.expect("no_split_brain", want.to_string(), measured, (count == 0) == want);
        }
        let traffic = report.table.as_ref().and_then(|t| t.traffic.clone()).unwrap_or_default();
        for (w, max) in e.tenant_max_p99.iter().flatten() {
            let l = traffic.tenants.get(w);
            let p99 = l.map_or(0, |l| l.p99_ns);
            let measured = l.map_or_else(|| "no operations".to_string(), |l| format!("{} ({} ok)", l.p99, l.ok));
            report.expect(&format!("tenant_max_p99.{w}"), format!("<= {}", fmt_duration(max.0)), measured, l.is_some_and(|l| l.ok > 0) && Duration::from_nanos(p99) <= max.0);
        }
        for (w, min) in e.tenant_min_availability.iter().flatten() {
            let a = traffic.tenants.get(w).map(|l| l.availability);
            report.expect(&format!("tenant_min_availability.{w}"), format!(">= {min}"), a.map_or("no operations".into(), |a| format!("{a:.4}")), a.is_some_and(|a| a >= *min));
        }
        if let Some(tol) = e.quota_accuracy {
            let mut worst: Option<(f64, String)> = None;
            let mut judged = 0;
            for (r, l) in traffic.resources.iter().filter(|(r, _)| !r.starts_with("partition ")) {
                if let Some((lo, hi)) = l.ratios {
                    judged += 1;
                    let dev = (1.0 - lo).max(hi - 1.0);
                    if worst.as_ref().is_none_or(|w| dev > w.0) {
                        worst = Some((dev, format!("{r}: {}", l.accuracy.clone().unwrap_or_default())));
                    }
                }
            }
            // Nor more than the burst above the rate in any 100 ms.
            let over = traffic.resources.iter().filter_map(|(r, l)| l.max_over_burst_100ms.filter(|&o| o > 0).map(|o| format!("{r}: {o} over its burst in 100 ms"))).next();
            let pass = judged > 0 && worst.as_ref().is_some_and(|w| w.0 <= tol) && over.is_none();
            let measured = match (over, worst) {
                (Some(o), _) => o,
                (None, w) => w.map_or("no quota was saturated for two whole seconds".into(), |w| w.1),
            };
            report.expect("quota_accuracy", format!("within {:.0}% of the quota", tol * 100.0), measured, pass);
        }
        for (prefix, min) in e.min_throttled.iter().flatten() {
            let n: u64 = traffic.resources.iter().filter(|(r, _)| r.starts_with(prefix.as_str())).map(|(_, l)| l.throttled).sum();
            report.expect(&format!("min_throttled.{prefix}"), format!(">= {min}"), n.to_string(), n >= *min);
        }
        let bad = report.bad_requests.clone();
        let bad_figure = |f: fn(&crate::workload::badreq::BadRequestFigures) -> u64| bad.as_ref().map(f).unwrap_or(0);
        if let Some(max) = e.bad_requests_accepted {
            let (accepted, sent) = (bad_figure(|b| b.accepted), bad_figure(|b| b.sent));
            report.expect("bad_requests_accepted", format!("<= {max}"), format!("{accepted} of {sent}"), accepted <= max);
        }
        if let Some(min) = e.min_bad_requests_refused {
            let (refused, sent) = (bad_figure(|b| b.refused), bad_figure(|b| b.sent));
            report.expect("min_bad_requests_refused", format!(">= {min}"), format!("{refused} of {sent}"), refused >= min);
        }
        if let Some(max) = e.bad_values_seen {
            let seen = bad_figure(|b| b.values_seen);
            report.expect("bad_values_seen", format!("<= {max}"), seen.to_string(), seen <= max);
        }
        stream::judge_repairs(scn, report);
    }
}

/// Partitions that an older owner served (a request took effect under its
/// lease) after a newer owner of them began serving, and the first such.
fn split_brain(d: &TableObserverData, topology: &Topology) -> (u64, Option<String>) {
    let mut by_part: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for iv in &d.serving {
        by_part.entry(iv.partition).or_default().push(iv);
    }
    let mut count = 0;
    let mut first: Option<(SimTime, String)> = None;
    for (pid, ivs) in by_part {
        let mut broken = false;
        for a in &ivs {
            for b in ivs.iter().filter(|b| a.epoch < b.epoch && a.last_served > b.start) {
                broken = true;
                if first.as_ref().is_none_or(|(t, _)| b.start < *t) {
                    let what = format!(
                        "partition {pid}: {} (epoch {}) served a request at {} after {} (epoch {}) began serving at {}",
                        topology.node(a.server).name,
                        a.epoch,
                        a.last_served,
                        topology.node(b.server).name,
                        b.epoch,
                        b.start
                    );
                    first = Some((b.start, what));
                }
            }
        }
        count += u64::from(broken);
    }
    (count, first.map(|(_, w)| w))
}

/// What the table's set-up needs: its keys and partitions, and the
/// columns per row (the workloads agree: validated).
#[derive(Clone)]
struct TableSetup {
    keys: u64,
    partitions: u32,
    columns: u32,
    /// The other instances and their key spaces.
    tenants: Vec<kv_table::Tenant>,
    quotas: Vec<crate::scenario::Quota>,
}

struct Running {
    cfg: TableConfig,
    setup: TableSetup,
    /// Whether the instance and the table exist.
    ready: Arc<Mutex<SetUp>>,
}

impl Deployment for Running {
    fn start_client(&self, world: &World, node: NodeId, share: ClientNode) {
        let (cfg, setup, ready) = (self.cfg.clone(), self.setup.clone(), self.ready.clone());
        world.start_node(node, move |ctx| client_main(ctx, share.clone(), cfg.clone(), setup.clone(), ready.clone()));
    }

    /// The first client node creates the instance and the table.
    fn set_up(&self) -> SetUp {
        self.ready.lock().expect("set-up").clone()
    }

    fn resolve_target(&self, topology: &Topology, name: &str) -> Option<ZoneId> {
        if name == META_LEADER.name {
            stream::meta_leader_zone(&self.cfg.stream.observer, topology)
        } else if name == MASTER_ZONE.name {
            self.cfg.observer.snapshot().master_takeovers.last().map(|t| topology.zone_of(t.1))
        } else if name == HOT_KEY_ZONE.name {
            self.cfg.observer.with_data(|d| d.hot_keys.iter().rev().find(|e| e.kind != "cooled").map(|e| topology.zone_of(e.server)))
        } else {
            None
        }
    }

    fn begin_settling(&self) {
        self.cfg.stream.observer.request_audit();
    }

    /// Re-replication brings every extent back to three zones; then the
    /// stream manager audits the replicas.
    fn settling(&self) -> bool {
        stream::settling(&self.cfg.stream.observer)
    }

    fn observers(&self) -> Observers {
        Observers::default().with(self.cfg.stream.observer.clone()).with(self.cfg.observer.clone())
    }
}

/// A client node of the table service: the first one creates the instance
/// and the table (and, when a workload sends bad requests, a second
/// instance); every one waits for that, then runs its processes (from the
/// main phase on, which begins once the table exists).
async fn client_main(ctx: NodeCtx, share: ClientNode, cfg: TableConfig, setup: TableSetup, ready: Arc<Mutex<SetUp>>) {
    let client = TableClient::bind(&ctx, &cfg, INSTANCE, ACCESS_KEY).await;
    let pending = || *ready.lock().expect("set-up") == SetUp::Pending;
    if share.is_first() && pending() {
        let state = match kv_table::setup(&client, setup.keys, setup.partitions, share.bad_requests.is_some(), &setup.tenants, &setup.quotas).await {
            Ok(n) => {
                ctx.note(format!("table {TABLE} created with {n} partitions"));
                SetUp::Ready
            }
            Err(e) => {
                ctx.note(e.clone());
                SetUp::Failed(e)
            }
        };
        *ready.lock().expect("set-up") = state;
    }
    while *ready.lock().expect("set-up") != SetUp::Ready {
        time::sleep(Duration::from_millis(5)).await;
    }
    if share.is_first() && setup.quotas.iter().any(|q| q.at.is_some()) {
        let (c, quotas) = (client.clone(), setup.quotas.clone());
        madsim::task::spawn_local(async move { kv_table::quota_changes(&c, &quotas).await });
    }
    let bad = share.bad_requests.clone();
    share.run_kv(ctx, TableKv::new(client, bad, setup.columns, &setup.tenants)).await
}

/// The traffic section: when the scenario has quotas or instances or
/// expectations about them, or a server throttled a partition.
fn traffic_section(scn: &Scenario, out: &RunOutput, ops: &[Operation<'_>], obs: &TableObserver) -> Option<crate::report::table::TrafficFigures> {
    let d = obs.snapshot();
    let tenants_used = scn.workloads.iter().any(|w| w.instance.is_some());
    let e = &scn.expect;
    let judged = e.tenant_max_p99.is_some() || e.tenant_min_availability.is_some() || e.min_throttled.is_some() || e.quota_accuracy.is_some();
    if scn.quotas.is_empty() && !tenants_used && d.traffic.is_empty() && !judged {
        return None;
    }
    let slot = engine::table::TRAFFIC_SLOT;
    let limit_at = |r: &str, s: u64| -> Option<(u64, u64)> {
        let at = slot * u32::try_from(s).unwrap_or(u32::MAX);
        let mut best: Option<(Duration, u64, u64)> = None;
        for q in &scn.quotas {
            let key = engine::table::quota::QuotaKey { instance: kv_table::store_instance(q.instance.as_deref()).to_string(), table: q.table.then(|| TABLE.to_string()), class: kv_table::op_class(q.class), unit: kv_table::unit_of(q.unit) };
            let from = q.at.unwrap_or_default();
            if key.to_string() == r && from <= at && best.is_none_or(|b| from >= b.0) {
                best = Some((from, q.rate, q.burst));
            }
        }
        best.map(|b| (b.1, b.2))
    };
    let workload_of = |p: u64| -> Option<(String, String)> {
        let w = out.process_workloads.get(&p)?;
        let instance = match w.strip_prefix("hotspot").and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => scn.hotspots.get(i)?.instance.clone(),
            None => scn.workloads.iter().find(|d| &d.name == w)?.instance.clone(),
        };
        Some((w.clone(), kv_table::store_instance(instance.as_deref()).to_string()))
    };
    let tenants = crate::report::table::tenant_lines(ops, &workload_of);
    Some(crate::report::table::traffic_figures(&d.traffic, &d.quota_changes, (out.main_start, out.main_end), &limit_at, tenants))
}

/// Servers a `node-add` started or a `node-drain` marked, in the order of
/// those verbs: when, how long the drain took, what each held at the end
/// of the main phase.
fn elastic_servers(out: &RunOutput, d: &TableObserverData, topology: &Topology) -> Vec<crate::report::table::ElasticServer> {
    let mut owner: BTreeMap<u64, Option<NodeId>> = BTreeMap::new();
    for f in d.failovers.iter().filter(|f| f.at <= out.main_end) {
        owner.insert(f.partition, f.to);
    }
    let mut held: BTreeMap<NodeId, u64> = BTreeMap::new();
    for o in owner.values().flatten() {
        *held.entry(*o).or_default() += 1;
    }
    let mean = if held.is_empty() { 0.0 } else { held.values().sum::<u64>() as f64 / held.len() as f64 };
    let mut v: Vec<crate::report::table::ElasticServer> = Vec::new();
    for f in out.faults.iter().filter(|f| f.error.is_none()) {
        let (name, add) = match (f.text.strip_prefix("node-add "), f.text.strip_prefix("node-drain ")) {
            (Some(n), _) => (n, true),
            (_, Some(n)) => (n, false),
            _ => continue,
        };
        let Some(id) = topology.node_by_name(name) else { continue };
        let i = match v.iter().position(|e| e.server == name) {
            Some(i) => i,
            None => {
                v.push(crate::report::table::ElasticServer { server: name.to_string(), added: None, drain_from: None, drained_after: None, drained_after_time: None, partitions_at_end: held.get(&id).copied().unwrap_or(0), mean_at_end: round2(mean) });
                v.len() - 1
            }
        };
        if add {
            v[i].added = Some(f.at.to_string());
        } else {
            v[i].drain_from = Some(f.at.to_string());
            let empty = d.drained.iter().find(|(n, at)| *n == id && *at >= f.at).map(|(_, at)| at.saturating_sub(f.at));
            v[i].drained_after = empty.map(fmt_duration);
            v[i].drained_after_time = empty;
        }
    }
    v
}

/// The table section: failovers and recovery from the observer, and the
/// healthy-write figures computed from the history.
fn figures(obs: &TableObserver, healthy_write: Option<HealthyWrite>, main_end: SimTime) -> TableFigures {
    let d = obs.snapshot();
    let (unserved, longest_unserved, longest_unserved_time) = unserved_spans(&d, main_end);
    let topo_name = |n: sim::NodeId| format!("node {}", n.0);
    let mut failovers = BTreeMap::new();
    let mut recover: Vec<(Duration, String)> = Vec::new();
    for f in &d.failovers {
        *failovers.entry(format!("{:?}", f.cause)).or_insert(0) += 1;
        if !matches!(f.cause, FailoverCause::ServerDead | FailoverCause::LeaseLost) {
            continue;
        }
        // The old owner's last sign of service before the failover (its
        // last answer or the last renewal of its lease, whichever is
        // later), and the first interval of the partition that began after.
        let last = d.serving.iter().filter(|iv| iv.partition == f.partition && iv.start <= f.at).map(|iv| iv.last_served.max(iv.renewed)).max();
        let next = d.serving.iter().filter(|iv| iv.partition == f.partition && iv.start >= f.at).map(|iv| iv.start).min();
        if let (Some(last), Some(next)) = (last, next) {
            let what = format!("partition {} {} -> {} at {}", f.partition, f.from.map_or("-".into(), topo_name), f.to.map_or("-".into(), topo_name), f.at);
            recover.push((next.saturating_sub(last), what));
        }
    }
    let slowest = recover.iter().max_by_key(|(d, w)| (*d, std::cmp::Reverse(w.clone())));
    let slowest_recovery = slowest.map(|(d, w)| format!("{} for {w}", fmt_duration(*d)));
    let slowest_recovery_time = slowest.map(|(d, _)| *d);
    let v: Vec<u64> = recover.into_iter().map(|(d, _)| d.as_nanos() as u64).collect();
    let time_to_recover = (!v.is_empty()).then(|| latency_of(v));
    TableFigures {
        slowest_recovery_time,
        failovers,
        time_to_recover,
        slowest_recovery,
        master_takeovers: d.master_takeovers.len() as u64,
        auth_refused: d.auth_refused.clone(),
        invalid_refused: d.invalid_refused,
        dedupe_hits: d.dedupe_hits,
        not_serving_answers: d.not_serving,
        partition_loads: d.loads.len() as u64,
        healthy_write,
        traffic: None,
        elastic: Vec::new(),
        hot_keys: None,
        unserved,
        longest_unserved,
        longest_unserved_time,
    }
}

impl Table {
    /// The hot-key expectations.
    fn judge_hot_keys(&self, scn: &Scenario, out: &RunOutput, report: &mut Report) {
        let e = &scn.expect;
        let hot = report.table.as_ref().and_then(|t| t.hot_keys.clone());
        let none = || "no key was called hot".to_string();
        // Every hotspot's keys, by name.
        let ranges: Vec<(String, String, SimTime, f64, SimTime)> = scn
            .hotspots
            .iter()
            .map(|h| {
                let p = kv_prefix(h.instance.as_deref());
                let per_key = h.rate / (h.hi - h.lo + 1) as f64;
                (format!("{p}{}", crate::workload::kv::key_name(h.lo)), format!("{p}{}", crate::workload::kv::key_name(h.hi)), out.main_start + h.at, per_key, out.main_start + h.until)
            })
            .collect();
        if let Some(max) = e.max_hot_key_detection {
            let threshold = scn.service.hotkey_qps.unwrap_or(engine::table::hotkey::HotKeyConfig::default().qps_hot) as f64;
            let mut worst: Option<(Duration, String)> = None;
            let mut pass = true;
            let mut judged = 0;
            for (lo, hi, start, per_key, _) in ranges.iter().filter(|r| r.3 >= threshold) {
                judged += 1;
                let found = hot.iter().flat_map(|h| &h.first_hot).filter(|(k, at)| k >= lo && k <= hi && at >= start).map(|(k, at)| (at.saturating_sub(*start), k.clone())).min();
                match found {
                    Some((d, k)) => {
                        pass &= d <= max.0;
                        if worst.as_ref().is_none_or(|w| d > w.0) {
                            worst = Some((d, format!("{k} called hot {} after its hotspot began ({per_key:.0} requests/s a key)", fmt_duration(d))));
                        }
                    }
                    None => {
                        pass = false;
                        worst = Some((Duration::MAX, format!("no key of {lo}..={hi} was called hot")));
                    }
                }
            }
            let measured = match (judged, worst) {
                (0, _) => format!("no hotspot reaches {threshold:.0} requests/s a key"),
                (_, Some((_, w))) => w,
                (_, None) => none(),
            };
            report.expect("max_hot_key_detection", format!("<= {}", fmt_duration(max.0)), measured, pass && judged > 0);
        }
        if let Some(max) = e.max_hot_key_cooldown {
            // Each key called hot, against the last end of a hotspot that
            // covers it: its last cool-down after that end.
            let mut worst: Option<(Duration, String)> = None;
            let mut pass = true;
            let keys: Vec<&String> = hot.iter().flat_map(|h| &h.first_hot).map(|(k, _)| k).collect();
            for k in &keys {
                let Some(end) = ranges.iter().filter(|(lo, hi, ..)| *k >= lo && *k <= hi).map(|r| r.4).max() else { continue };
                let cooled = hot.iter().flat_map(|h| &h.cooled).filter(|(c, at)| c == *k && *at >= end).map(|(_, at)| *at).min();
                let (d, what) = match cooled {
                    Some(at) => (at.saturating_sub(end), format!("{k} cooled {} after its hotspot ended", fmt_duration(at.saturating_sub(end)))),
                    None => (Duration::MAX, format!("{k} never cooled after its hotspot ended")),
                };
                pass &= d <= max.0;
                if worst.as_ref().is_none_or(|w| d > w.0) {
                    worst = Some((d, what));
                }
            }
            let measured = worst.map_or_else(none, |w| w.1);
            report.expect("max_hot_key_cooldown", format!("<= {}", fmt_duration(max.0)), measured, pass && !keys.is_empty());
        }
        if let Some(max) = e.max_false_hot_keys {
            let false_keys: Vec<&String> = hot.iter().flat_map(|h| &h.first_hot).map(|(k, _)| k).filter(|k| !ranges.iter().any(|(lo, hi, ..)| *k >= lo && *k <= hi)).collect();
            let measured = match false_keys.first() {
                Some(k) => format!("{} keys outside every hotspot, first {k}", false_keys.len()),
                None => format!("none ({} hot keys in all)", hot.as_ref().map_or(0, |h| h.first_hot.len())),
            };
            report.expect("max_false_hot_keys", format!("<= {max}"), measured, false_keys.len() as u64 <= max);
        }
        if let Some(min) = e.min_hotzone_hit_rate {
            let measured = hot.as_ref().map_or_else(none, |h| format!("{} ({} HotZone hits, {} source reads)", h.hit_rate, h.hotzone_hits.values().sum::<u64>(), h.source_reads));
            report.expect("min_hotzone_hit_rate", format!(">= {min}"), measured, hot.as_ref().is_some_and(|h| h.hit_rate >= min));
        }
        if let Some(max) = e.max_hotzone_spread {
            let measured = hot.as_ref().map_or_else(none, |h| format!("{} over {} HotZones", h.spread, h.hotzone_hits.values().filter(|&&n| n > 0).count()));
            report.expect("max_hotzone_spread", format!("<= {max}"), measured, hot.as_ref().is_some_and(|h| h.spread > 0.0 && h.spread <= max));
        }
        if let Some(max) = e.max_hot_key_engine_writes {
            let measured = hot.as_ref().map_or_else(none, |h| format!("{} in the busiest second ({} puts combined)", h.engine_writes_per_s_max, h.combined_writes));
            report.expect("max_hot_key_engine_writes", format!("<= {max}/s"), measured, hot.as_ref().is_some_and(|h| h.engine_writes_per_s_max <= max));
        }
        if let Some(min) = e.min_combined_writes {
            let measured = hot.as_ref().map_or_else(none, |h| format!("{} in {} batches", h.combined_writes, h.combined_batches.as_ref().map_or(0, |b| b.count)));
            report.expect("min_combined_writes", format!(">= {min}"), measured, hot.as_ref().is_some_and(|h| h.combined_writes >= min));
        }
        if let Some(max) = e.max_hot_source_reads {
            let measured = hot.as_ref().map_or_else(none, |h| format!("{} in the busiest second", h.source_reads_per_s_max));
            report.expect("max_hot_source_reads", format!("<= {max}/s"), measured, hot.as_ref().is_some_and(|h| h.source_reads_per_s_max <= max));
        }
    }
}

/// The HotZone staleness bound a scenario's run uses.
fn hot_staleness(scn: &Scenario) -> Duration {
    scn.service.hot_staleness.map_or(engine::table::TableConfig::HOT_STALENESS_DEFAULT, |d| d.0)
}

/// The hot keys' section, when a server called any key hot.
fn hot_key_figures(d: &TableObserverData, topology: &Topology, bound: Duration) -> Option<crate::report::table::HotKeyFigures> {
    if d.hot_keys.is_empty() && d.hotzone_hits.is_empty() && d.combined_batches.is_empty() {
        return None;
    }
    let name = |n: NodeId| topology.node(n).name.clone();
    let events = d
        .hot_keys
        .iter()
        .map(|e| match e.kind.as_str() {
            "cooled" => format!("{} {} {} cooled", e.at, name(e.server), e.key),
            kind => format!("{} {} {} {kind} ({} reads/s, {} writes/s, {} bytes/s)", e.at, name(e.server), e.key, e.reads_per_s, e.writes_per_s, e.bytes_per_s),
        })
        .collect();
    let mut first_hot: Vec<(String, SimTime)> = Vec::new();
    for e in d.hot_keys.iter().filter(|e| e.kind != "cooled") {
        if !first_hot.iter().any(|(k, _)| *k == e.key) {
            first_hot.push((e.key.clone(), e.at));
        }
    }
    let mut hotzone_hits: BTreeMap<String, u64> = BTreeMap::new();
    for (&(proxy, _), &n) in &d.hotzone_hits {
        *hotzone_hits.entry(name(proxy)).or_default() += n;
    }
    let hits: u64 = hotzone_hits.values().sum();
    let source_reads: u64 = d.hot_source_reads.values().sum();
    let hit_rate = if hits + source_reads == 0 { 0.0 } else { round2(hits as f64 / (hits + source_reads) as f64) };
    let serving: Vec<u64> = hotzone_hits.values().copied().filter(|&n| n > 0).collect();
    let spread = match serving.iter().max() {
        Some(&max) => round2(max as f64 * serving.len() as f64 / hits as f64),
        None => 0.0,
    };
    Some(crate::report::table::HotKeyFigures {
        events,
        hotzone_hits,
        source_reads,
        hit_rate,
        source_reads_per_s_max: d.hot_source_reads.values().copied().max().unwrap_or(0),
        spread,
        staleness: (!d.hotzone_ages.is_empty()).then(|| latency_of(d.hotzone_ages.clone())),
        staleness_bound: fmt_duration(bound),
        too_old: d.hotzone_too_old,
        combined_writes: d.combined_batches.iter().map(|&n| u64::from(n)).sum(),
        combined_batches: (!d.combined_batches.is_empty()).then(|| crate::report::table::BatchSizes::of(&d.combined_batches)),
        engine_writes_per_s_max: d.hot_key_writes.values().copied().max().unwrap_or(0),
        first_hot,
        cooled: d.hot_keys.iter().filter(|e| e.kind == "cooled").map(|e| (e.key.clone(), e.at)).collect(),
    })
}

/// The spans in which no server served a partition, after it was first
/// served and before `main_end` (see `TableFigures::unserved`): their
/// distribution and the longest, named with its partition, time and cause.
fn unserved_spans(d: &engine::table::TableObserverData, main_end: SimTime) -> (Option<crate::report::measure::Latency>, Option<String>, Option<Duration>) {
    let mut by_part: BTreeMap<u64, Vec<(SimTime, SimTime)>> = BTreeMap::new();
    for iv in &d.serving {
        let end = iv.stopped.unwrap_or(iv.last_served.max(iv.renewed));
        by_part.entry(iv.partition).or_default().push((iv.start, end.max(iv.start)));
    }
    let mut spans: Vec<(Duration, u64, SimTime, SimTime)> = Vec::new();
    for (pid, mut ivs) in by_part {
        ivs.sort();
        let mut covered = ivs[0].1;
        for &(start, end) in &ivs[1..] {
            if start > covered && covered < main_end {
                spans.push((start.min(main_end).saturating_sub(covered), pid, covered, start));
            }
            covered = covered.max(end);
        }
        // Unserved at the end: a partition whose last server stopped (its
        // lease ran out, or it crashed) and nobody took over.
        let still_served = d.serving.iter().any(|iv| iv.partition == pid && iv.stopped.is_none() && iv.renewed.max(iv.last_served) >= covered);
        if covered < main_end && !still_served {
            spans.push((main_end.saturating_sub(covered), pid, covered, main_end));
        }
    }
    let spans: Vec<_> = spans.into_iter().filter(|s| !s.0.is_zero()).collect();
    let worst = spans.iter().max_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
    let longest = worst.map(|&(len, pid, from, to)| {
        let cause = d.failovers.iter().filter(|f| f.partition == pid && f.at >= from && f.at <= to).map(|f| format!("{:?}", f.cause)).next().unwrap_or_else(|| "no failover: the owner came back".into());
        (format!("{} for partition {pid} from {from} ({cause})", fmt_duration(len)), len)
    });
    let lat = (!spans.is_empty()).then(|| latency_of(spans.iter().map(|s| s.0.as_nanos() as u64).collect()));
    (lat, longest.as_ref().map(|l| l.0.clone()), longest.map(|l| l.1))
}
