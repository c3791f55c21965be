//! Validation: a parsed file becomes a [`Scenario`] or one error naming the
//! line and field. It goes beyond types: names must exist in the
//! topology, the service's kind says which nodes, fields, workloads,
//! expectations and fault targets it takes, faults must fall inside the
//! run, and the fault timeline is replayed statically so that
//! contradictions are refused before the run.

use std::path::Path;

use sim::disk::DiskConfig;
use sim::time::fmt_duration;
use sim::topology::{LinkParams, Topology};

use super::format::{Distribution, ScenarioFile, WorkloadDef, WorkloadKind, CLIENT_ROLE};
use super::model::{line_col, Hotspot, Scenario, ScenarioError, TimedFault};
use super::service::{ServiceRules, WorkloadFeature};
use super::timeline::{fault_pair, replay, Targets};

/// The largest CPU cost one kind of work may be given.
pub const RESOURCE_COST_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Validates a parsed file against the service kinds `services` (the
/// scenario's `kind` must be one of them).
pub(super) fn validate(path: &Path, text: &str, f: ScenarioFile, services: &[&dyn ServiceRules]) -> Result<Scenario, ScenarioError> {
    let err = |span: std::ops::Range<usize>, field: String, message: String| {
        let (line, column) = line_col(text, span.start);
        ScenarioError { file: path.to_path_buf(), line, column, field, message }
    };
    let kind = f.service.kind();
    let Some(service) = services.iter().copied().find(|s| s.kind() == kind) else {
        let kinds: Vec<String> = services.iter().map(|s| format!("`{}`", s.kind())).collect();
        return Err(err(f.service.kind.span(), "service.kind".into(), format!("unknown variant `{kind}`, expected one of {}", kinds.join(", "))));
    };
    let duration = f.duration.get_ref().0;
    if duration.is_zero() {
        return Err(err(f.duration.span(), "duration".into(), "the run must last longer than zero".into()));
    }

    // Topology.
    let zones = f.topology.zones.get_ref();
    if zones.is_empty() {
        return Err(err(f.topology.zones.span(), "topology.zones".into(), "at least one zone is needed".into()));
    }
    for (i, z) in zones.iter().enumerate() {
        if zones[..i].contains(z) {
            return Err(err(f.topology.zones.span(), "topology.zones".into(), format!("zone `{z}` is listed twice")));
        }
        if z.is_empty() || !z.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(f.topology.zones.span(), "topology.zones".into(), format!("zone name `{z}` must be letters, digits and `_`")));
        }
    }
    let loss = f.topology.packet_loss.as_ref().map(|l| *l.get_ref()).unwrap_or(0.0);
    if let Some(l) = f.topology.packet_loss.as_ref().filter(|_| !(0.0..=1.0).contains(&loss)) {
        return Err(err(l.span(), "topology.packet_loss".into(), format!("{loss} is not a probability in [0, 1]")));
    }
    let jitter = f.topology.jitter.0;
    let intra = LinkParams { latency: f.topology.intra_zone_latency.0, jitter, loss };
    let inter = LinkParams { latency: f.topology.inter_zone_latency.0, jitter, loss };
    let mut topology = Topology::new(zones, intra, inter);
    for (i, l) in f.topology.link.iter().enumerate() {
        let field = format!("topology.link[{i}]");
        let names = l.get_ref().zones.get_ref();
        let mut ids = Vec::new();
        for n in names {
            ids.push(topology.zone_by_name(n).ok_or_else(|| {
                err(l.get_ref().zones.span(), format!("{field}.zones"), format!("unknown zone `{n}` (zones: {})", zones.join(", ")))
            })?);
        }
        let loss = l.get_ref().loss.unwrap_or(loss);
        if !(0.0..=1.0).contains(&loss) {
            return Err(err(l.span(), format!("{field}.loss"), format!("{loss} is not a probability in [0, 1]")));
        }
        topology.set_link(ids[0], ids[1], LinkParams { latency: l.get_ref().latency.0, jitter: l.get_ref().jitter.map(|d| d.0).unwrap_or(jitter), loss });
    }
    let roles = f.topology.nodes.get_ref();
    if roles.values().all(|&c| c == 0) {
        return Err(err(f.topology.nodes.span(), "topology.nodes".into(), "no nodes: give each role a count per zone, e.g. { kv = 2, client = 1 }".into()));
    }
    for z in topology.zones().collect::<Vec<_>>() {
        for (role, &count) in roles {
            for _ in 0..count {
                topology.add_node(z, role);
            }
        }
    }
    if topology.nodes().len() > 4096 {
        return Err(err(f.topology.nodes.span(), "topology.nodes".into(), "more than 4096 nodes".into()));
    }
    // The service: its kind, the nodes it needs, the fields it reads.
    for role in service.roles(&f.service) {
        if topology.nodes_with_role(&role.name).len() < role.min {
            return Err(err(f.topology.nodes.span(), "topology.nodes".into(), role.missing));
        }
    }
    service.check(&f.service).map_err(|r| err(0..0, r.field, r.message))?;
    for (name, set) in f.service.optional_fields() {
        if set && !service.fields().contains(&name) {
            let readers: Vec<&str> = services.iter().filter(|s| s.fields().contains(&name)).map(|s| s.kind()).collect();
            let message = match readers.as_slice() {
                [one] => format!("applies to `kind = \"{one}\"` only"),
                many => format!("applies to the {} services only", many.join(" and ")),
            };
            return Err(err(0..0, format!("service.{name}"), message));
        }
    }
    // Every kind takes it (it has a default); minikv reads it.
    if f.service.group_commit_max == 0 {
        return Err(err(0..0, "service.group_commit_max".into(), "must be at least 1".into()));
    }

    // Expectations that only one service can meet.
    for (name, set) in f.expect.fields() {
        let owner = services.iter().find(|s| s.expectations().contains(&name));
        if let (true, Some(owner)) = (set && !service.expectations().contains(&name), owner) {
            return Err(err(0..0, format!("expect.{name}"), format!("applies to `kind = \"{}\"` scenarios only", owner.kind())));
        }
    }

    // Disk.
    let mut disk = DiskConfig::default();
    let d = &f.disk;
    if let Some(s) = d.sector {
        if s == 0 || !s.is_power_of_two() {
            return Err(err(0..0, "disk.sector".into(), format!("{s} is not a power of two")));
        }
        disk.sector = s;
    }
    if let Some(c) = d.capacity_mib {
        disk.capacity = c << 20;
    }
    if let Some(b) = d.bandwidth_mib_s {
        if b == 0 {
            return Err(err(0..0, "disk.bandwidth_mib_s".into(), "must be positive".into()));
        }
        disk.bandwidth = b << 20;
    }
    disk.write_latency = d.write_latency.map(|x| x.0).unwrap_or(disk.write_latency);
    disk.read_latency = d.read_latency.map(|x| x.0).unwrap_or(disk.read_latency);
    disk.sync_latency = d.sync_latency.map(|x| x.0).unwrap_or(disk.sync_latency);
    if let Some(p) = d.crash_writeback {
        if !(0.0..=1.0).contains(&p) {
            return Err(err(0..0, "disk.crash_writeback".into(), format!("{p} is not a probability in [0, 1]")));
        }
        disk.crash_writeback = p;
    }

    // Resources.
    let mut resources = super::model::Resources::default();
    if let Some(r) = &f.resources {
        let span = r.span();
        let r = r.get_ref();
        let roles: Vec<String> = {
            let mut v: Vec<String> = topology.nodes().iter().map(|n| n.role.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        for (what, map, max) in [("cores", &r.cores, sim::cpu::CPU_CORES_MAX), ("queue_max", &r.queue_max, sim::cpu::CPU_QUEUE_MAX_LIMIT)] {
            for (role, &n) in map {
                if !roles.contains(role) {
                    return Err(err(span.clone(), format!("resources.{what}.{role}"), format!("no role `{role}` in [topology.nodes] (roles: {})", roles.join(", "))));
                }
                if n == 0 || n > max {
                    return Err(err(span.clone(), format!("resources.{what}.{role}"), format!("{n}: use 1 to {max}")));
                }
            }
        }
        for (name, d) in &r.costs {
            if !service.costs().contains(&name.as_str()) {
                let known = if service.costs().is_empty() { "it charges no work".to_string() } else { format!("it charges {}", service.costs().join(", ")) };
                return Err(err(span.clone(), format!("resources.costs.{name}"), format!("`kind = \"{kind}\"` has no cost `{name}` ({known})")));
            }
            if d.0 > RESOURCE_COST_MAX {
                return Err(err(span.clone(), format!("resources.costs.{name}"), format!("{} is over the limit of {}", fmt_duration(d.0), fmt_duration(RESOURCE_COST_MAX))));
            }
        }
        resources = super::model::Resources { cores: r.cores.clone(), queue_max: r.queue_max.clone(), costs: r.costs.iter().map(|(k, v)| (k.clone(), v.0)).collect() };
    }

    // Workloads.
    let client_nodes = topology.nodes_with_role(CLIENT_ROLE);
    let mut workloads = Vec::new();
    for (i, w) in f.workload.iter().enumerate() {
        let field = format!("workload[{i}]");
        let wd = w.get_ref();
        let bad = |what: &str, msg: String| Err(err(w.span(), format!("{field}.{what}"), msg));
        if client_nodes.is_empty() {
            return bad("clients", "workloads run on nodes of role `client`: add `client = 1` to [topology.nodes]".into());
        }
        if !(wd.rate.is_finite() && wd.rate > 0.0) {
            return bad("rate", format!("{} is not a positive rate (operations per second)", wd.rate));
        }
        if wd.clients == 0 || wd.clients > 10_000 {
            return bad("clients", format!("{} clients: use 1 to 10000", wd.clients));
        }
        if wd.outstanding_max == 0 || wd.outstanding_max > super::format::OUTSTANDING_MAX_LIMIT {
            return bad("outstanding_max", format!("{}: use 1 to {}", wd.outstanding_max, super::format::OUTSTANDING_MAX_LIMIT));
        }
        if wd.open_loop && wd.kind == WorkloadKind::Stream {
            return bad("open_loop", "stream workloads run closed loop only".into());
        }
        if wd.keys == 0 {
            return bad("keys", "at least one key is needed".into());
        }
        if wd.distribution == Distribution::Zipf && !(wd.zipf_theta > 0.0 && wd.zipf_theta.is_finite()) {
            return bad("zipf_theta", format!("{} must be positive", wd.zipf_theta));
        }
        let weights = wd.mix.weights();
        if weights.iter().any(|(_, x)| !(x.is_finite() && *x >= 0.0)) || weights.iter().map(|(_, x)| x).sum::<f64>() <= 0.0 {
            return bad("mix", "weights must be non-negative and not all zero".into());
        }
        if wd.timeout.0.is_zero() {
            return bad("timeout", "must be positive".into());
        }
        if wd.kind != service.workload() {
            return bad("kind", format!("a {:?} workload cannot run against the {kind} service", wd.kind).to_lowercase());
        }
        let allowed: &[&str] = match wd.kind {
            WorkloadKind::Kv => &["read", "write", "cas", "delete", "append", "scan"],
            WorkloadKind::Stream => &["read", "append", "open"],
        };
        if let Some((name, _)) = weights.iter().find(|(n, w)| *w > 0.0 && !allowed.contains(n)) {
            return bad("mix", format!("`{name}` is not an operation of a {:?} workload (use {})", wd.kind, allowed.join(", ")).to_lowercase());
        }
        if wd.kind == WorkloadKind::Stream && wd.value_size < 16 {
            return bad("value_size", format!("{} bytes: a stream append carries at least 16 (its id and brackets)", wd.value_size));
        }
        if !(0.0..=1.0).contains(&wd.bad_requests) {
            return bad("bad_requests", format!("{} is not a fraction in [0, 1]", wd.bad_requests));
        }
        for feature in WorkloadFeature::ALL {
            if feature.used_by(wd) && !service.features().contains(&feature) {
                let kinds: Vec<String> = services.iter().filter(|s| s.features().contains(&feature)).map(|s| format!("`kind = \"{}\"`", s.kind())).collect();
                return bad(feature.field(), format!("{} apply to {} scenarios only", feature.describe(), kinds.join(" or ")));
            }
        }
        if let Err(r) = service.check_workload(wd) {
            return bad(&r.field, r.message);
        }
        if workloads.iter().any(|o: &WorkloadDef| o.columns != wd.columns) {
            return bad("columns", "the workloads of a scenario drive one table: give them the same `columns`".into());
        }
        if workloads.iter().any(|o: &WorkloadDef| o.name == wd.name) {
            return bad("name", format!("two workloads are named `{}`", wd.name));
        }
        workloads.push(wd.clone());
    }
    if f.expect.min_bad_requests_refused.is_some_and(|n| n > 0) && !workloads.iter().any(|w| w.bad_requests > 0.0) {
        return Err(err(0..0, "expect.min_bad_requests_refused".into(), "no workload sends bad requests: set `bad_requests` in a [[workload]]".into()));
    }

    // Hotspots.
    if let (Some(h), false) = (f.hotspot.first(), service.workload() == WorkloadKind::Kv) {
        return Err(err(h.span(), "hotspot[0]".into(), format!("hotspots add load to key-value workloads; the {kind} service has none")));
    }
    let mut hotspots = Vec::new();
    for (i, h) in f.hotspot.iter().enumerate() {
        let field = format!("hotspot[{i}]");
        let hd = h.get_ref();
        let keys = workloads.first().map(|w| w.keys).unwrap_or(0);
        if keys == 0 {
            return Err(err(h.span(), field, "a hotspot adds load to the first workload's keys: define a [[workload]]".into()));
        }
        let (lo, hi) = match (hd.key, hd.keys) {
            (Some(k), None) => (k, k),
            (None, Some([lo, hi])) if lo <= hi => (lo, hi),
            (None, Some(_)) => return Err(err(h.span(), format!("{field}.keys"), "the range must be [low, high] with low <= high".into())),
            _ => return Err(err(h.span(), field, "give exactly one of `key` or `keys`".into())),
        };
        if hi >= keys {
            return Err(err(h.span(), format!("{field}.key"), format!("key {hi} is outside the workload's {keys} keys")));
        }
        let rate = *hd.rate.get_ref();
        if !(rate.is_finite() && rate > 0.0) {
            return Err(err(hd.rate.span(), format!("{field}.rate"), format!("{rate} is not a positive rate")));
        }
        let (at, until) = (hd.at.get_ref().0, hd.until.get_ref().0);
        if until <= at {
            return Err(err(hd.until.span(), format!("{field}.until"), "must be after `at`".into()));
        }
        if until > duration {
            return Err(err(hd.until.span(), format!("{field}.until"), format!("{} is after the end of the run ({})", fmt_duration(until), fmt_duration(duration))));
        }
        if hd.clients == 0 {
            return Err(err(h.span(), format!("{field}.clients"), "at least one client".into()));
        }
        hotspots.push(Hotspot { at, until, lo, hi, op: hd.op, rate, clients: hd.clients });
    }

    // Faults.
    let targets = Targets { own: service.dynamic_targets(), all: services.iter().flat_map(|s| s.dynamic_targets().iter().copied()).collect() };
    let mut faults = Vec::new();
    for (i, fd) in f.fault.iter().enumerate() {
        let (line, _) = line_col(text, fd.span().start);
        let (on, off) = fault_pair(&topology, fd.get_ref(), i, &targets, &err)?;
        let at = fd.get_ref().at.get_ref().0;
        if at > duration {
            return Err(err(fd.get_ref().at.span(), format!("fault[{i}].at"), format!("{} is after the end of the run ({})", fmt_duration(at), fmt_duration(duration))));
        }
        faults.push(TimedFault { at, fault: on, line });
        if let Some(until) = &fd.get_ref().until {
            let u = until.get_ref().0;
            if u <= at {
                return Err(err(until.span(), format!("fault[{i}].until"), "must be after `at`".into()));
            }
            if u > duration {
                return Err(err(until.span(), format!("fault[{i}].until"), format!("{} is after the end of the run ({})", fmt_duration(u), fmt_duration(duration))));
            }
            let off = off.ok_or_else(|| err(until.span(), format!("fault[{i}].until"), format!("`{}` has no inverse to apply at `until`", fd.get_ref().verb.get_ref())))?;
            faults.push(TimedFault { at: u, fault: off, line });
        }
    }
    // Stable: equal times keep file order.
    faults.sort_by_key(|f| f.at);
    replay(&topology, &faults, &|zone| targets.is_own(zone)).map_err(|(idx, msg)| {
        let tf = &faults[idx];
        ScenarioError { file: path.to_path_buf(), line: tf.line, column: 1, field: "fault".into(), message: format!("at {}: {} — {msg}", fmt_duration(tf.at), tf.fault) }
    })?;

    Ok(Scenario {
        path: path.to_path_buf(),
        name: f.name,
        description: f.description,
        seed: f.seed,
        duration,
        topology,
        disk,
        service: f.service,
        workloads,
        faults,
        hotspots,
        expect: f.expect,
        resources,
    })
}
