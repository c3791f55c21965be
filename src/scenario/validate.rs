//! Validation: a parsed file becomes a [`Scenario`] or one error naming the
//! line and field. It goes beyond types: names must exist in the
//! topology, the service's kind says which nodes, fields, workloads,
//! expectations and fault targets it takes, faults must fall inside the
//! run, and the fault timeline is replayed statically so that
//! contradictions are refused before the run.

use std::path::Path;
use std::time::Duration;

use sim::disk::DiskConfig;
use sim::time::fmt_duration;
use sim::topology::{LinkParams, Topology};

use super::format::{Distribution, ScenarioFile, WorkloadDef, WorkloadKind, CLIENT_ROLE};
use super::limits::{self, shown};
use super::model::{line_col, Hotspot, Quota, Scenario, ScenarioError, TimedFault};
use super::service::{ServiceRules, WorkloadFeature};
use super::spans::FieldSpans;
use super::timeline::{fault_pair, replay, Targets};

/// The largest CPU cost one kind of work may be given.
pub const RESOURCE_COST_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Validates a parsed file against the service kinds `services` (the
/// scenario's `kind` must be one of them). An error names the line of the
/// field it is about when the file writes that field (`spans`), else the
/// line of what the check was given (the table, the entry).
pub(super) fn validate(path: &Path, text: &str, spans: &FieldSpans<'_>, f: ScenarioFile, services: &[&dyn ServiceRules]) -> Result<Scenario, ScenarioError> {
    let err = |span: std::ops::Range<usize>, field: String, message: String| {
        let at = spans.of(&field).unwrap_or(span);
        let (line, column) = line_col(text, at.start);
        ScenarioError { file: path.to_path_buf(), line, column, field, message }
    };
    let kind = f.service.kind();
    let Some(service) = services.iter().copied().find(|s| s.kind() == kind) else {
        let kinds: Vec<String> = services.iter().map(|s| format!("`{}`", s.kind())).collect();
        return Err(err(f.service.kind.span(), "service.kind".into(), format!("unknown variant `{}`, expected one of {}", shown(kind), kinds.join(", "))));
    };
    check_name(&f.name).map_err(|m| err(0..0, "name".into(), m))?;
    if f.description.chars().count() > limits::DESCRIPTION_CHARS_MAX {
        return Err(err(0..0, "description".into(), format!("over {} characters", limits::DESCRIPTION_CHARS_MAX)));
    }
    // `list` prints it: no terminal control characters.
    if let Some(c) = f.description.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\t')) {
        return Err(err(0..0, "description".into(), format!("contains the control character {}", c.escape_unicode())));
    }
    let duration = f.duration.get_ref().0;
    if duration.is_zero() {
        return Err(err(f.duration.span(), "duration".into(), "the run must last longer than zero".into()));
    }
    if duration > limits::DURATION_MAX {
        return Err(err(f.duration.span(), "duration".into(), over(duration, limits::DURATION_MAX)));
    }

    // Topology.
    let zones = f.topology.zones.get_ref();
    if zones.is_empty() {
        return Err(err(f.topology.zones.span(), "topology.zones".into(), "at least one zone is needed".into()));
    }
    if zones.len() > limits::ZONES_MAX {
        return Err(err(f.topology.zones.span(), "topology.zones".into(), format!("{} zones: at most {}", zones.len(), limits::ZONES_MAX)));
    }
    for (i, z) in zones.iter().enumerate() {
        if zones[..i].contains(z) {
            return Err(err(f.topology.zones.span(), "topology.zones".into(), format!("zone `{}` is listed twice", shown(z))));
        }
        if z.is_empty() || z.len() > limits::NAME_CHARS_MAX || !z.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(f.topology.zones.span(), "topology.zones".into(), format!("zone name `{}` must be 1 to {} letters, digits and `_`", shown(z), limits::NAME_CHARS_MAX)));
        }
    }
    if let Some((needed, why)) = service.zones_needed().filter(|(n, _)| zones.len() < *n) {
        return Err(err(f.topology.zones.span(), "topology.zones".into(), format!("{} zone(s): the {kind} service {why}, so it needs at least {needed}", zones.len())));
    }
    let loss = f.topology.packet_loss.as_ref().map(|l| *l.get_ref()).unwrap_or(0.0);
    if let Some(l) = f.topology.packet_loss.as_ref().filter(|_| !(0.0..=1.0).contains(&loss)) {
        return Err(err(l.span(), "topology.packet_loss".into(), format!("{loss} is not a probability in [0, 1]")));
    }
    for (name, d) in [("intra_zone_latency", f.topology.intra_zone_latency), ("inter_zone_latency", f.topology.inter_zone_latency), ("jitter", f.topology.jitter)] {
        if d.0 > limits::LATENCY_MAX {
            return Err(err(0..0, format!("topology.{name}"), over(d.0, limits::LATENCY_MAX)));
        }
    }
    let jitter = f.topology.jitter.0;
    let intra = LinkParams { latency: f.topology.intra_zone_latency.0, jitter, loss };
    let inter = LinkParams { latency: f.topology.inter_zone_latency.0, jitter, loss };
    let mut topology = Topology::new(zones, intra, inter);
    for (i, l) in f.topology.link.iter().enumerate() {
        let field = format!("topology.link[{i}]");
        let names = l.get_ref().zones.get_ref();
        if names.len() != 2 || names[0] == names[1] {
            return Err(err(l.get_ref().zones.span(), format!("{field}.zones"), format!("a link joins two different zones ({} given)", names.len())));
        }
        let mut ids = Vec::new();
        for n in names {
            ids.push(topology.zone_by_name(n).ok_or_else(|| {
                err(l.get_ref().zones.span(), format!("{field}.zones"), format!("unknown zone `{}` (zones: {})", shown(n), zones.join(", ")))
            })?);
        }
        let loss = l.get_ref().loss.unwrap_or(loss);
        if !(0.0..=1.0).contains(&loss) {
            return Err(err(l.span(), format!("{field}.loss"), format!("{loss} is not a probability in [0, 1]")));
        }
        for (name, d) in [("latency", Some(l.get_ref().latency)), ("jitter", l.get_ref().jitter)] {
            if let Some(d) = d.filter(|d| d.0 > limits::LATENCY_MAX) {
                return Err(err(l.span(), format!("{field}.{name}"), over(d.0, limits::LATENCY_MAX)));
            }
        }
        topology.set_link(ids[0], ids[1], LinkParams { latency: l.get_ref().latency.0, jitter: l.get_ref().jitter.map(|d| d.0).unwrap_or(jitter), loss });
    }
    let roles = f.topology.nodes.get_ref();
    if roles.values().all(|&c| c == 0) {
        return Err(err(f.topology.nodes.span(), "topology.nodes".into(), "no nodes: give each role a count per zone, e.g. { kv = 2, client = 1 }".into()));
    }
    if roles.len() > limits::ROLES_MAX {
        return Err(err(f.topology.nodes.span(), "topology.nodes".into(), format!("{} roles: at most {}", roles.len(), limits::ROLES_MAX)));
    }
    // The service's roles: known, and each of its parts on a role of its own.
    let needed = service.roles(&f.service);
    for (i, role) in needed.iter().enumerate() {
        let taken = role.name == CLIENT_ROLE || needed[..i].iter().any(|r| r.name == role.name);
        if taken {
            let field = if f.service.meta_role.as_deref() == Some(role.name.as_str()) { "service.meta_role" } else { "service.server_role" };
            let roles: Vec<String> = needed.iter().map(|r| r.name.clone()).chain([CLIENT_ROLE.to_string()]).collect();
            return Err(err(0..0, field.into(), format!("role `{}` is already the role of another part of the {kind} service (its roles: {})", shown(&role.name), roles.join(", "))));
        }
    }
    for role in roles.keys().chain(needed.iter().map(|r| &r.name)) {
        if let Err(m) = check_role(role) {
            let field = if roles.contains_key(role) { format!("topology.nodes.{}", shown(role)) } else if f.service.meta_role.as_ref() == Some(role) { "service.meta_role".into() } else { "service.server_role".into() };
            return Err(err(f.topology.nodes.span(), field, m));
        }
    }
    for role in roles.keys() {
        if role != CLIENT_ROLE && !needed.iter().any(|r| &r.name == role) {
            let known: Vec<String> = needed.iter().map(|r| format!("`{}`", shown(&r.name))).chain([format!("`{CLIENT_ROLE}`")]).collect();
            return Err(err(f.topology.nodes.span(), format!("topology.nodes.{}", shown(role)), format!("the {kind} service has no role `{}` (its roles: {})", shown(role), known.join(", "))));
        }
    }
    // Counted before any node is built.
    let per_zone = roles.values().map(|&c| u64::from(c)).sum::<u64>();
    let nodes = per_zone.saturating_mul(zones.len() as u64);
    if nodes > limits::NODES_MAX {
        return Err(err(f.topology.nodes.span(), "topology.nodes".into(), format!("{nodes} nodes ({per_zone} per zone in {} zones): at most {}", zones.len(), limits::NODES_MAX)));
    }
    let spares = f.topology.spare.as_ref().map(|s| (s.get_ref().clone(), s.span())).unwrap_or_default();
    let elastic = service.elastic_roles(&f.service);
    for (role, &count) in &spares.0 {
        if count == 0 {
            continue;
        }
        if !elastic.contains(role) {
            let which = if elastic.is_empty() { format!("the {kind} service takes no new nodes while it runs") } else { format!("only {} may", elastic.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")) };
            return Err(err(spares.1.clone(), format!("topology.spare.{}", shown(role)), format!("nodes of role `{}` cannot be spares: {which}", shown(role))));
        }
    }
    let spare_per_zone = spares.0.values().map(|&c| u64::from(c)).sum::<u64>();
    let all = (per_zone + spare_per_zone).saturating_mul(zones.len() as u64);
    if all > limits::NODES_MAX {
        return Err(err(spares.1.clone(), "topology.spare".into(), format!("{all} nodes with the spares: at most {}", limits::NODES_MAX)));
    }
    for z in topology.zones().collect::<Vec<_>>() {
        for (role, &count) in roles {
            for _ in 0..count {
                topology.add_node(z, role);
            }
        }
        for (role, &count) in &spares.0 {
            for _ in 0..count {
                topology.add_spare_node(z, role);
            }
        }
    }
    // The service: its kind, the nodes it needs, the fields it reads.
    for role in needed {
        if topology.nodes_with_role(&role.name).iter().filter(|&&n| !topology.node(n).spare).count() < role.min {
            return Err(err(f.topology.nodes.span(), "topology.nodes".into(), role.missing));
        }
    }
    service.check(&f.service).map_err(|r| err(0..0, r.field, r.message))?;
    check_service_bounds(&f.service).map_err(|(field, m)| err(0..0, field, m))?;
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
    if f.service.group_commit_max == 0 || f.service.group_commit_max > limits::GROUP_COMMIT_MAX {
        return Err(err(0..0, "service.group_commit_max".into(), format!("{}: use 1 to {}", f.service.group_commit_max, limits::GROUP_COMMIT_MAX)));
    }

    // Expectations that only one service can meet.
    for (name, set) in f.expect.fields() {
        let owner = services.iter().find(|s| s.expectations().contains(&name));
        if let (true, Some(owner)) = (set && !service.expectations().contains(&name), owner) {
            return Err(err(0..0, format!("expect.{name}"), format!("applies to `kind = \"{}\"` scenarios only", owner.kind())));
        }
    }
    check_expect_bounds(&f.expect).map_err(|(field, m)| err(0..0, field, m))?;

    // Disk.
    let mut disk = DiskConfig::default();
    let d = &f.disk;
    if let Some(s) = d.sector {
        if s == 0 || !s.is_power_of_two() || s > limits::DISK_SECTOR_MAX {
            return Err(err(0..0, "disk.sector".into(), format!("{s} is not a power of two from 1 to {}", limits::DISK_SECTOR_MAX)));
        }
        disk.sector = s;
    }
    let mib = |field: &str, v: u64, max: u64| -> Result<u64, ScenarioError> {
        match v.checked_mul(1 << 20) {
            Some(bytes) if (1..=max).contains(&v) => Ok(bytes),
            _ => Err(err(0..0, format!("disk.{field}"), format!("{v}: use 1 to {max}"))),
        }
    };
    if let Some(c) = d.capacity_mib {
        disk.capacity = mib("capacity_mib", c, limits::DISK_CAPACITY_MIB_MAX)?;
    }
    if let Some(b) = d.bandwidth_mib_s {
        disk.bandwidth = mib("bandwidth_mib_s", b, limits::DISK_BANDWIDTH_MIB_S_MAX)?;
    }
    for (name, l) in [("write_latency", d.write_latency), ("read_latency", d.read_latency), ("sync_latency", d.sync_latency)] {
        if let Some(l) = l.filter(|l| l.0 > limits::LATENCY_MAX) {
            return Err(err(0..0, format!("disk.{name}"), over(l.0, limits::LATENCY_MAX)));
        }
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
                let field = format!("resources.{what}.{}", shown(role));
                if !roles.contains(role) {
                    return Err(err(span.clone(), field, format!("no role `{}` in [topology.nodes] (roles: {})", shown(role), roles.join(", "))));
                }
                if n == 0 || n > max {
                    return Err(err(span.clone(), field, format!("{n}: use 1 to {max}")));
                }
            }
        }
        for (name, d) in &r.costs {
            let field = format!("resources.costs.{}", shown(name));
            if !service.costs().contains(&name.as_str()) {
                let known = if service.costs().is_empty() { "it charges no work".to_string() } else { format!("it charges {}", service.costs().join(", ")) };
                return Err(err(span.clone(), field, format!("`kind = \"{kind}\"` has no cost `{}` ({known})", shown(name))));
            }
            if d.0 > RESOURCE_COST_MAX {
                return Err(err(span.clone(), field, format!("{} is over the limit of {}", fmt_duration(d.0), fmt_duration(RESOURCE_COST_MAX))));
            }
        }
        resources = super::model::Resources { cores: r.cores.clone(), queue_max: r.queue_max.clone(), costs: r.costs.iter().map(|(k, v)| (k.clone(), v.0)).collect() };
    }

    // Workloads.
    let client_nodes = topology.nodes_with_role(CLIENT_ROLE);
    if let Some(w) = f.workload.get(limits::WORKLOADS_MAX) {
        return Err(err(w.span(), format!("workload[{}]", limits::WORKLOADS_MAX), format!("{} workloads: at most {}", f.workload.len(), limits::WORKLOADS_MAX)));
    }
    let mut workloads = Vec::new();
    let mut budget = Budget::default();
    let mut zipf_keys = 0u64;
    for (i, w) in f.workload.iter().enumerate() {
        let field = format!("workload[{i}]");
        let wd = w.get_ref();
        let bad = |what: &str, msg: String| Err(err(w.span(), format!("{field}.{what}"), msg));
        if client_nodes.is_empty() {
            return bad("clients", "workloads run on nodes of role `client`: add `client = 1` to [topology.nodes]".into());
        }
        if let Err(m) = check_name(&wd.name) {
            return bad("name", m);
        }
        if !(wd.rate.is_finite() && wd.rate > 0.0 && wd.rate <= limits::RATE_MAX) {
            return bad("rate", format!("{} is not a rate above 0 and at most {} (operations per second)", wd.rate, limits::RATE_MAX));
        }
        if wd.clients == 0 || wd.clients > limits::CLIENTS_MAX {
            return bad("clients", format!("{} clients: use 1 to {}", wd.clients, limits::CLIENTS_MAX));
        }
        if wd.outstanding_max == 0 || wd.outstanding_max > super::format::OUTSTANDING_MAX_LIMIT {
            return bad("outstanding_max", format!("{}: use 1 to {}", wd.outstanding_max, super::format::OUTSTANDING_MAX_LIMIT));
        }
        if wd.open_loop && wd.kind == WorkloadKind::Stream {
            return bad("open_loop", "stream workloads run closed loop only".into());
        }
        if wd.keys == 0 || wd.keys > limits::KEYS_MAX {
            return bad("keys", format!("{} keys: use 1 to {}", wd.keys, limits::KEYS_MAX));
        }
        if wd.distribution == Distribution::Zipf && !(wd.zipf_theta > 0.0 && wd.zipf_theta <= limits::ZIPF_THETA_MAX) {
            return bad("zipf_theta", format!("{} must be above 0 and at most {}", wd.zipf_theta, limits::ZIPF_THETA_MAX));
        }
        if wd.distribution == Distribution::Zipf {
            zipf_keys += wd.keys.min(limits::ZIPF_KEYS_MAX);
            if zipf_keys > limits::ZIPF_KEYS_MAX_PER_RUN {
                return bad("keys", format!("the run's Zipf workloads rank {zipf_keys} keys: at most {}", limits::ZIPF_KEYS_MAX_PER_RUN));
            }
        }
        if wd.value_size > limits::VALUE_BYTES_MAX {
            return bad("value_size", format!("{} bytes: at most {}", wd.value_size, limits::VALUE_BYTES_MAX));
        }
        if wd.scan_limit == 0 || wd.scan_limit > limits::SCAN_LIMIT_MAX {
            return bad("scan_limit", format!("{}: use 1 to {}", wd.scan_limit, limits::SCAN_LIMIT_MAX));
        }
        if wd.timeout.0 > limits::OP_TIMEOUT_MAX {
            return bad("timeout", over(wd.timeout.0, limits::OP_TIMEOUT_MAX));
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
        if let Some(inst) = &wd.instance {
            if kind != "table" {
                return bad("instance", "instances (tenants) are the table store's: use `kind = \"table\"`".into());
            }
            if let Err(m) = check_instance(inst) {
                return bad("instance", m);
            }
            let mut names: Vec<&str> = workloads.iter().filter_map(|w: &WorkloadDef| w.instance.as_deref()).collect();
            names.push(inst);
            names.sort();
            names.dedup();
            if names.len() > limits::INSTANCES_MAX {
                return bad("instance", format!("{} instances: at most {}", names.len(), limits::INSTANCES_MAX));
            }
            if wd.bad_requests > 0.0 {
                return bad("bad_requests", "bad requests come from workloads of the main instance only".into());
            }
        }
        let bytes = f64::from(wd.value_size) * (1.0 + f64::from(wd.columns));
        if let Err(m) = budget.add(u64::from(wd.clients), wd.rate, duration, bytes) {
            return bad(m.0, m.1);
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
    if let Some(h) = f.hotspot.get(limits::HOTSPOTS_MAX) {
        return Err(err(h.span(), format!("hotspot[{}]", limits::HOTSPOTS_MAX), format!("{} hotspots: at most {}", f.hotspot.len(), limits::HOTSPOTS_MAX)));
    }
    let mut hotspots = Vec::new();
    for (i, h) in f.hotspot.iter().enumerate() {
        let field = format!("hotspot[{i}]");
        let hd = h.get_ref();
        let instance = hd.instance.as_ref().map(|s| s.get_ref().clone()).filter(|s| s != MAIN_INSTANCE);
        let keys = workloads.iter().find(|w| w.instance.as_ref().filter(|s| *s != MAIN_INSTANCE) == instance.as_ref()).map(|w| w.keys).unwrap_or(0);
        if keys == 0 {
            if let Some(s) = &hd.instance {
                return Err(err(s.span(), format!("{field}.instance"), format!("no workload of instance `{}`", shown(s.get_ref()))));
            }
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
        if !(rate.is_finite() && rate > 0.0 && rate <= limits::RATE_MAX) {
            return Err(err(hd.rate.span(), format!("{field}.rate"), format!("{rate} is not a rate above 0 and at most {}", limits::RATE_MAX)));
        }
        let (at, until) = (hd.at.get_ref().0, hd.until.get_ref().0);
        if until <= at {
            return Err(err(hd.until.span(), format!("{field}.until"), "must be after `at`".into()));
        }
        if until > duration {
            return Err(err(hd.until.span(), format!("{field}.until"), format!("{} is after the end of the run ({})", fmt_duration(until), fmt_duration(duration))));
        }
        if hd.clients == 0 || hd.clients > limits::CLIENTS_MAX {
            return Err(err(h.span(), format!("{field}.clients"), format!("{} clients: use 1 to {}", hd.clients, limits::CLIENTS_MAX)));
        }
        let bytes = workloads.first().map_or(0.0, |w| f64::from(w.value_size) * (1.0 + f64::from(w.columns)));
        if let Err((what, m)) = budget.add(u64::from(hd.clients), rate, until - at, bytes) {
            return Err(err(h.span(), format!("{field}.{what}"), m));
        }
        hotspots.push(Hotspot { at, until, lo, hi, op: hd.op, rate, clients: hd.clients, instance });
    }

    // Quotas.
    if let Some(q) = f.quota.first().filter(|_| kind != "table") {
        return Err(err(q.span(), "quota[0]".into(), format!("quotas are the table store's traffic control; the {kind} service has none")));
    }
    if let Some(q) = f.quota.get(limits::QUOTAS_MAX) {
        return Err(err(q.span(), format!("quota[{}]", limits::QUOTAS_MAX), format!("{} quotas: at most {}", f.quota.len(), limits::QUOTAS_MAX)));
    }
    let mut quotas = Vec::new();
    for (i, q) in f.quota.iter().enumerate() {
        let field = format!("quota[{i}]");
        let qd = q.get_ref();
        let name = qd.instance.get_ref();
        let instance = (name != MAIN_INSTANCE).then(|| name.clone());
        if !workloads.iter().any(|w| w.instance.as_ref().filter(|s| *s != MAIN_INSTANCE) == instance.as_ref()) {
            return Err(err(qd.instance.span(), format!("{field}.instance"), format!("no workload of instance `{}` (`{MAIN_INSTANCE}` is the workloads' without `instance`)", shown(name))));
        }
        let Some(class) = super::model::QuotaOp::parse(qd.op.get_ref()) else {
            return Err(err(qd.op.span(), format!("{field}.op"), format!("unknown operation kind `{}` (read, write, scan)", shown(qd.op.get_ref()))));
        };
        let unit = match &qd.unit {
            None => super::model::QuotaUnit::Requests,
            Some(u) => super::model::QuotaUnit::parse(u.get_ref()).ok_or_else(|| err(u.span(), format!("{field}.unit"), format!("unknown unit `{}` (requests, bytes, rows)", shown(u.get_ref()))))?,
        };
        let rate = *qd.rate.get_ref();
        if rate > limits::QUOTA_RATE_MAX {
            return Err(err(qd.rate.span(), format!("{field}.rate"), format!("{rate} requests per second: at most {}", limits::QUOTA_RATE_MAX)));
        }
        let burst = match &qd.burst {
            Some(b) if *b.get_ref() == 0 || *b.get_ref() > limits::QUOTA_RATE_MAX => {
                return Err(err(b.span(), format!("{field}.burst"), format!("{}: use 1 to {}", b.get_ref(), limits::QUOTA_RATE_MAX)));
            }
            Some(b) => *b.get_ref(),
            None => (rate / 10).max(1),
        };
        let at = qd.at.as_ref().map(|a| a.get_ref().0);
        if let (Some(a), Some(span)) = (at, qd.at.as_ref().map(|a| a.span())) {
            if a > duration {
                return Err(err(span, format!("{field}.at"), format!("{} is after the end of the run ({})", fmt_duration(a), fmt_duration(duration))));
            }
        }
        let quota = Quota { instance, table: qd.table, class, unit, rate, burst, at };
        if quotas.iter().any(|o: &Quota| o.instance == quota.instance && o.table == quota.table && o.class == quota.class && o.unit == quota.unit && o.at == quota.at) {
            return Err(err(q.span(), field, "another quota sets the same limit at the same time".into()));
        }
        quotas.push(quota);
    }

    // Faults.
    let targets = Targets { own: service.dynamic_targets(), all: services.iter().flat_map(|s| s.dynamic_targets().iter().copied()).collect() };
    if let Some(fd) = f.fault.get(limits::FAULTS_MAX) {
        return Err(err(fd.span(), format!("fault[{}]", limits::FAULTS_MAX), format!("{} faults: at most {}", f.fault.len(), limits::FAULTS_MAX)));
    }
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
        quotas,
        expect: f.expect,
        resources,
    })
}

/// The name `[[quota]]` entries give the workloads' instance when they
/// set no `instance`.
pub const MAIN_INSTANCE: &str = "main";

/// An instance name: 1 to 32 lowercase letters, digits and `-`, not
/// `main` (the name quotas give the main instance).
fn check_instance(s: &str) -> Result<(), String> {
    let ok = !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(format!("`{}`: 1 to 32 lowercase letters, digits and `-`", shown(s)));
    }
    if s == MAIN_INSTANCE {
        return Err(format!("`{s}` names the main instance: leave `instance` out"));
    }
    Ok(())
}

/// "`d` is over the limit of `max`".
fn over(d: Duration, max: Duration) -> String {
    format!("{} is over the limit of {}", fmt_duration(d), fmt_duration(max))
}

/// A name (the scenario's, a workload's): it names folders and random
/// streams, so it is short and plain.
fn check_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.chars().count() > limits::NAME_CHARS_MAX || !name.chars().all(plain) || name.starts_with('.') {
        return Err(format!("`{}` must be 1 to {} letters, digits, `-`, `_` and `.`, not starting with `.`", shown(name), limits::NAME_CHARS_MAX));
    }
    Ok(())
}

/// A role's name: it is part of its nodes' names (`az1-table-0`), so it
/// is short and made of letters, digits and `_`.
fn check_role(role: &str) -> Result<(), String> {
    if role.is_empty() || role.chars().count() > limits::NAME_CHARS_MAX || !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("role `{}` must be 1 to {} letters, digits and `_`", shown(role), limits::NAME_CHARS_MAX));
    }
    Ok(())
}

/// The bounds of the `[service]` fields any kind may read (each kind
/// checks what else its values mean).
fn check_service_bounds(s: &super::format::ServiceDef) -> Result<(), (String, String)> {
    if let Some(b) = s.extent_bytes.filter(|&b| b > limits::EXTENT_BYTES_MAX) {
        return Err(("service.extent_bytes".into(), format!("{b}: at most {}", limits::EXTENT_BYTES_MAX)));
    }
    for (name, d) in [("dead_after", s.dead_after), ("rereplicate_after", s.rereplicate_after)] {
        if let Some(d) = d.filter(|d| d.0 > limits::SERVICE_DELAY_MAX) {
            return Err((format!("service.{name}"), over(d.0, limits::SERVICE_DELAY_MAX)));
        }
    }
    if let Some(b) = s.planted_bug.as_deref().filter(|b| b.chars().count() > limits::NAME_CHARS_MAX) {
        return Err(("service.planted_bug".into(), format!("`{}` is no bug's name", shown(b))));
    }
    Ok(())
}

/// The bounds of the `[expect]` values.
fn check_expect_bounds(e: &super::format::ExpectDef) -> Result<(), (String, String)> {
    if let Some(a) = e.min_availability.filter(|a| !(0.0..=1.0).contains(a)) {
        return Err(("expect.min_availability".into(), format!("{a} is not a fraction in [0, 1]")));
    }
    if let Some(a) = e.min_added_share.filter(|a| !(0.0..=1.0).contains(a)) {
        return Err(("expect.min_added_share".into(), format!("{a} is not a fraction in [0, 1]")));
    }
    if let Some(a) = e.min_hotzone_hit_rate.filter(|a| !(0.0..=1.0).contains(a)) {
        return Err(("expect.min_hotzone_hit_rate".into(), format!("{a} is not a fraction in [0, 1]")));
    }
    if let Some(a) = e.max_hotzone_spread.filter(|a| !(1.0..=1000.0).contains(a)) {
        return Err(("expect.max_hotzone_spread".into(), format!("{a} is not a ratio in [1, 1000]")));
    }
    for (name, d) in [
        ("max_unavailability", e.max_unavailability),
        ("liveness_bound", e.liveness_bound),
        ("max_append_stall", e.max_append_stall),
        ("max_time_to_recover", e.max_time_to_recover),
        ("max_drain_time", e.max_drain_time),
        ("max_hot_key_detection", e.max_hot_key_detection),
        ("max_hot_key_cooldown", e.max_hot_key_cooldown),
    ] {
        if let Some(d) = d.filter(|d| d.0 > limits::EXPECT_DURATION_MAX) {
            return Err((format!("expect.{name}"), over(d.0, limits::EXPECT_DURATION_MAX)));
        }
    }
    Ok(())
}

/// What the workloads and hotspots of a run add up to: processes,
/// planned operations and the value bytes they carry, each bounded.
#[derive(Default)]
struct Budget {
    processes: u64,
    operations: f64,
    bytes: f64,
}

impl Budget {
    /// Adds `clients` processes issuing `rate` operations per second for
    /// `time`, each carrying `bytes` of values; the field at fault and why
    /// when a bound of the run is passed.
    fn add(&mut self, clients: u64, rate: f64, time: Duration, bytes: f64) -> Result<(), (&'static str, String)> {
        self.processes += clients;
        if self.processes > limits::PROCESSES_MAX {
            return Err(("clients", format!("{} client processes in the run: at most {}", self.processes, limits::PROCESSES_MAX)));
        }
        let ops = rate * time.as_secs_f64();
        self.operations += ops;
        if self.operations > limits::OPERATIONS_MAX {
            return Err(("rate", format!("the run plans {:.0} operations (rate times time, over every workload and hotspot): at most {}", self.operations, limits::OPERATIONS_MAX)));
        }
        self.bytes += ops * bytes;
        if self.bytes > limits::VALUE_BYTES_MAX_PER_RUN {
            return Err(("value_size", format!("the run's operations carry {:.0} MiB of values: at most {:.0} MiB", self.bytes / 1048576.0, limits::VALUE_BYTES_MAX_PER_RUN / 1048576.0)));
        }
        Ok(())
    }
}
