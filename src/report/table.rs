//! The `table` section: failovers and their time to recover, master
//! takeovers, refusals, and healthy writes against their modeled cost.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sim::time::{fmt_duration, SimTime};

use super::measure::{quantile, round2, Latency};
use crate::history::{Op, Operation, Outcome, Phase};

/// What the table service did about faults.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TableFigures {
    /// Partition owner changes by cause (`Initial` = first placement).
    pub failovers: BTreeMap<String, u64>,
    /// Per failover after a server died or lost its lease: from the old
    /// owner's last sign of service (its last answer or its lease's last
    /// renewal, whichever is later: a crashed server was alive then) to
    /// the new owner's first moment of serving (the partition's
    /// unavailability as the service saw it).
    pub time_to_recover: Option<Latency>,
    /// The worst one: partition, from, to.
    pub slowest_recovery: Option<String>,
    /// The worst one's time to recover.
    #[serde(skip)]
    pub slowest_recovery_time: Option<Duration>,
    /// Every span, after a partition was first served, in which no server
    /// served it, whatever the cause (a failover, a server that crashed and
    /// reloaded its own partitions, a move, a lease that lapsed): from the
    /// last sign of service (last answer, lease renewal or stop) to the
    /// next server's first moment of serving, or to the end of the main
    /// phase. `max_time_to_recover` judges the longest.
    pub unserved: Option<Latency>,
    /// The longest unserved span: partition, when, why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_unserved: Option<String>,
    #[serde(skip)]
    pub longest_unserved_time: Option<Duration>,
    pub master_takeovers: u64,
    /// Requests the proxies refused, by reason.
    pub auth_refused: BTreeMap<String, u64>,
    pub invalid_refused: u64,
    /// Write retries answered from a partition's de-duplication records.
    pub dedupe_hits: u64,
    pub not_serving_answers: u64,
    pub partition_loads: u64,
    /// Write latency before the first fault against its modeled cost
    /// (absent when no write succeeded before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_write: Option<HealthyWrite>,
    /// Traffic control (scenarios with quotas or instances, and any run
    /// in which a table server throttled a partition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficFigures>,
    /// Servers that joined the cluster (`node-add`) or were marked for
    /// removal (`node-drain`) during the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub elastic: Vec<ElasticServer>,
    /// Hot keys (runs in which a table server found one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_keys: Option<HotKeyFigures>,
}

/// The sizes of combined batches.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct BatchSizes {
    pub count: u64,
    pub p50: u32,
    pub p99: u32,
    pub max: u32,
}

impl BatchSizes {
    pub fn of(sizes: &[u32]) -> BatchSizes {
        let mut v = sizes.to_vec();
        v.sort_unstable();
        let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        BatchSizes { count: v.len() as u64, p50: at(0.5), p99: at(0.99), max: v.last().copied().unwrap_or(0) }
    }
}

/// What the table servers' recognizers found hot, and how the proxies'
/// HotZones served those keys.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct HotKeyFigures {
    /// Every key called hot or cooled down: when, where, which kind, at
    /// what rates.
    pub events: Vec<String>,
    /// Reads each proxy answered from its HotZone.
    pub hotzone_hits: BTreeMap<String, u64>,
    /// Reads of hot keys that reached their owner (source reads).
    pub source_reads: u64,
    /// HotZone hits over every read of a hot key (hits and source reads).
    pub hit_rate: f64,
    /// The most source reads one hot key got in one second.
    pub source_reads_per_s_max: u64,
    /// The busiest proxy's HotZone hits over the mean of the proxies that
    /// answered any.
    pub spread: f64,
    /// The age of the HotZone answers clients accepted, on arrival.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staleness: Option<super::measure::Latency>,
    /// How old a HotZone answer may be (the scenario's `hot_staleness`).
    pub staleness_bound: String,
    /// HotZone answers clients found older than the bound on arrival.
    pub too_old: u64,
    /// Puts of hot keys combined into batches, and the batches' sizes.
    pub combined_writes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined_batches: Option<BatchSizes>,
    /// The most engine writes one hot key got in one second.
    pub engine_writes_per_s_max: u64,
    /// First recognition of each hot key (its kind and time), for the
    /// expectations.
    #[serde(skip)]
    pub first_hot: Vec<(String, SimTime)>,
    /// Every cool-down (key, time), for the expectations.
    #[serde(skip)]
    pub cooled: Vec<(String, SimTime)>,
}

/// A server that joined or left: when, and what it held.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ElasticServer {
    pub server: String,
    /// When its `node-add` started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added: Option<String>,
    /// When its `node-drain` marked it for removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_from: Option<String>,
    /// How long after that it first held no partition (absent: it never
    /// did before the run ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained_after: Option<String>,
    #[serde(skip)]
    pub drained_after_time: Option<Duration>,
    /// Partitions it owned at the end of the main phase, and the mean over
    /// the servers that owned any then.
    pub partitions_at_end: u64,
    pub mean_at_end: f64,
}

/// How close healthy writes come to what the model makes them cost.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct HealthyWrite {
    /// Successful writes (write, cas, delete, append) of the main phase
    /// invoked before the first fault.
    pub writes: u64,
    pub p50: String,
    /// The slowest round trip between two zones plus one disk sync: the
    /// least a write acknowledged by copies in three zones can cost.
    pub modeled: String,
    /// `p50 / modeled`; the client -> proxy -> server hops and queueing
    /// make up the rest.
    pub ratio: f64,
}

/// The healthy-write figures of the main phase's writes invoked in
/// `[start, first_fault)`.
pub fn healthy_write(ops: &[Operation<'_>], start: SimTime, first_fault: SimTime, topology: &sim::Topology, disk: &sim::DiskConfig) -> Option<HealthyWrite> {
    let mut v: Vec<u64> = ops
        .iter()
        .filter(|r| r.phase == Phase::Main && r.outcome == Outcome::Ok && SimTime(r.invoke_ns) >= start && SimTime(r.invoke_ns) < first_fault)
        .filter(|r| !matches!(r.op, Op::Read { .. } | Op::Scan { .. } | Op::StreamRead { .. }))
        .filter_map(|r| r.complete_ns.map(|c| c - r.invoke_ns))
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let zones = topology.zone_count();
    let mut rtt = Duration::ZERO;
    for a in 0..zones {
        for b in a + 1..zones {
            let (za, zb) = (sim::ZoneId(a as u16), sim::ZoneId(b as u16));
            rtt = rtt.max(topology.zone_link(za, zb).latency + topology.zone_link(zb, za).latency);
        }
    }
    let modeled = rtt + disk.sync_latency;
    let p50 = quantile(&v, 0.5);
    Some(HealthyWrite {
        writes: v.len() as u64,
        p50: fmt_duration(Duration::from_nanos(p50)),
        modeled: fmt_duration(modeled),
        ratio: if modeled.is_zero() { 0.0 } else { round2(p50 as f64 / modeled.as_nanos() as f64) },
    })
}

/// Traffic control: what each quota (and each partition a table server
/// throttled) was offered, admitted and throttled, and every tenant's
/// service, so that a reader sees who was protected from whom.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct TrafficFigures {
    /// By quota (`instance b write`, `table b/rows read`) or partition
    /// (`partition 7`; the [`TOP_PARTITIONS`] most throttled).
    pub resources: BTreeMap<String, TrafficLine>,
    /// By workload (each belongs to one instance).
    pub tenants: BTreeMap<String, TenantLine>,
    /// (time, instance) of every quota change the master committed.
    pub quota_changes: Vec<String>,
}

/// Partitions the traffic section lists.
pub const TOP_PARTITIONS: usize = 5;

#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct TrafficLine {
    /// The quota in force at the end (`1000/s burst 100`, in its unit);
    /// none for a partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Requests.
    pub offered: u64,
    pub admitted: u64,
    pub throttled: u64,
    /// What was charged for the admitted requests, in the quota's unit
    /// (requests, bytes or rows; a partition's: requests).
    pub units: u64,
    /// Per second of the main phase: units admitted, and requests
    /// throttled.
    pub admitted_per_s: String,
    pub throttled_per_s: String,
    /// Limiter accuracy (judged by `quota_accuracy`, with the burst bound
    /// below): admitted over the quota in every whole saturated second
    /// (in all of its 100 ms slots but one a request was throttled or the
    /// slot's share of the rate was offered), after the first such second
    /// and leaving out the seconds a quota change took effect in: the
    /// lowest and the highest ratio, and how many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<String>,
    /// The most admitted in one 100 ms slot beyond a tenth of the rate
    /// (the burst bounds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_over_rate_100ms: Option<i64>,
    /// The most admitted in one 100 ms slot beyond a tenth of the rate and
    /// the burst (0 or less: the burst held).
    #[serde(skip)]
    pub max_over_burst_100ms: Option<i64>,
    /// Lowest and highest accuracy ratios (for expectations).
    #[serde(skip)]
    pub ratios: Option<(f64, f64)>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct TenantLine {
    pub instance: String,
    pub ok: u64,
    /// Refused by a quota or a partition's traffic control.
    pub throttled: u64,
    pub failed: u64,
    pub availability: f64,
    pub p50: String,
    pub p99: String,
    #[serde(skip)]
    pub p99_ns: u64,
}

/// A quota's limit per 100 ms slot: (rate, burst) in force, and whether a
/// change took effect in that slot's second.
pub type LimitAt<'a> = &'a dyn Fn(&str, u64) -> Option<(u64, u64)>;

/// The traffic section from the observer's counts (`traffic`, per
/// resource and 100 ms slot of true time), the main phase's bounds, the
/// limits in force per slot, and the tenants' operations.
pub fn traffic_figures(
    traffic: &BTreeMap<(String, u64), engine::table::quota::Counts>,
    changes: &[(SimTime, String)],
    main: (SimTime, SimTime),
    limit_at: LimitAt<'_>,
    tenants: BTreeMap<String, TenantLine>,
) -> TrafficFigures {
    let slot_ns = engine::table::TRAFFIC_SLOT.as_nanos() as u64;
    let (from, to) = (main.0.as_nanos() / slot_ns, main.1.as_nanos().div_ceil(slot_ns));
    let per_sec = 1_000_000_000 / slot_ns;
    let change_secs: Vec<u64> = changes.iter().map(|(t, _)| t.as_nanos() / 1_000_000_000).collect();
    let mut by: BTreeMap<&str, Vec<(u64, engine::table::quota::Counts)>> = BTreeMap::new();
    for ((r, slot), c) in traffic.range(..) {
        if (from..to).contains(slot) {
            by.entry(r.as_str()).or_default().push((*slot, *c));
        }
    }
    let mut resources = BTreeMap::new();
    let mut parts: Vec<(u64, String, TrafficLine)> = Vec::new();
    for (r, slots) in by {
        let mut line = TrafficLine::default();
        let secs = ((to - from).div_ceil(per_sec)) as usize;
        let (mut adm_s, mut thr_s, mut off_s) = (vec![0u64; secs], vec![0u64; secs], vec![0u64; secs]);
        // Slots of each second in which the quota was wanted in full: some
        // request throttled, or its slot's worth offered.
        let mut busy_s = vec![0u64; secs];
        let mut over: Option<i64> = None;
        for &(slot, c) in &slots {
            line.offered += c.offered;
            line.admitted += c.admitted;
            line.throttled += c.throttled;
            let i = ((slot - from) / per_sec) as usize;
            // Units (requests, bytes or rows) for the quota's accuracy.
            adm_s[i] += c.units;
            line.units += c.units;
            thr_s[i] += c.throttled;
            off_s[i] += c.offered_units;
            if let Some((rate, burst)) = limit_at(r, slot) {
                busy_s[i] += u64::from(c.throttled > 0 || c.offered_units >= rate / per_sec);
                let excess = c.units as i64 - (rate / per_sec) as i64;
                over = Some(over.map_or(excess, |o| o.max(excess)));
                let beyond = excess - burst as i64;
                line.max_over_burst_100ms = Some(line.max_over_burst_100ms.map_or(beyond, |o| o.max(beyond)));
            }
        }
        let line_of = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        line.admitted_per_s = line_of(&adm_s);
        line.throttled_per_s = line_of(&thr_s);
        line.max_over_rate_100ms = over;
        let end_limit = limit_at(r, to.saturating_sub(1));
        line.limit = end_limit.map(|(rate, burst)| format!("{rate}/s burst {burst}"));
        if end_limit.is_some() || limit_at(r, from).is_some() {
            let mut ratios = Vec::new();
            let mut first = true;
            for i in 0..secs {
                let slot = from + i as u64 * per_sec;
                let Some((rate, _)) = limit_at(r, slot) else { continue };
                let whole = slot + per_sec <= to;
                let sec = slot * slot_ns / 1_000_000_000;
                let changed = change_secs.contains(&sec) || limit_at(r, slot + per_sec - 1) != limit_at(r, slot);
                // Saturated: wanted in full in all its slots but one
                // (clients that back off offer little while throttled, so
                // offered alone would miss a second the limiter starved).
                let saturated = busy_s[i] + 1 >= per_sec;
                if rate == 0 || !whole || !saturated {
                    first = true;
                    continue;
                }
                if first || changed {
                    first = false;
                    continue;
                }
                ratios.push(adm_s[i] as f64 / rate as f64);
            }
            if !ratios.is_empty() {
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(0.0, f64::max);
                line.accuracy = Some(format!("{:.3}..{:.3} of the quota over {} saturated seconds", lo, hi, ratios.len()));
                line.ratios = Some((lo, hi));
            }
        }
        if r.starts_with("partition ") {
            parts.push((line.throttled, r.to_string(), line));
        } else {
            resources.insert(r.to_string(), line);
        }
    }
    parts.sort_by_key(|(t, r, _)| (std::cmp::Reverse(*t), r.clone()));
    for (_, r, line) in parts.into_iter().take(TOP_PARTITIONS) {
        resources.insert(r, line);
    }
    let _ = round2;
    TrafficFigures { resources, tenants, quota_changes: changes.iter().map(|(t, i)| format!("{t} {i}")).collect() }
}

/// Every workload's service: its instance, answers and latency.
pub fn tenant_lines(ops: &[Operation<'_>], workload_of: &dyn Fn(u64) -> Option<(String, String)>) -> BTreeMap<String, TenantLine> {
    let mut acc: BTreeMap<String, (TenantLine, Vec<u64>, u64)> = BTreeMap::new();
    for r in ops.iter().filter(|r| r.phase == Phase::Main) {
        let Some((w, instance)) = workload_of(r.process) else { continue };
        let e = acc.entry(w).or_insert_with(|| (TenantLine { instance, ..TenantLine::default() }, Vec::new(), 0));
        e.2 += 1;
        match r.outcome {
            Outcome::Ok => {
                e.0.ok += 1;
                if let Some(c) = r.complete_ns {
                    e.1.push(c - r.invoke_ns);
                }
            }
            _ if r.error.is_some_and(|x| x.starts_with("busy: throttled")) => e.0.throttled += 1,
            _ => e.0.failed += 1,
        }
        if super::measure::answered(r) {
            e.0.availability += 1.0;
        }
    }
    acc.into_iter()
        .map(|(w, (mut l, mut lat, n))| {
            lat.sort_unstable();
            l.availability = super::measure::round4(l.availability / n.max(1) as f64);
            if !lat.is_empty() {
                l.p50 = fmt_duration(Duration::from_nanos(quantile(&lat, 0.5)));
                l.p99_ns = quantile(&lat, 0.99);
                l.p99 = fmt_duration(Duration::from_nanos(l.p99_ns));
            }
            (w, l)
        })
        .collect()
}
