//! The report of a run: what happened, measured, and judged against the
//! scenario's expectations.
//!
//! Reports hold no wall-clock values and no raw nanoseconds: durations are
//! printed with three significant decimals (`1.234ms`) and ratios with four,
//! so a snapshot changes only when behaviour changes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sim::time::{fmt_duration, SimTime};

use crate::runner::RunOutput;
use crate::scenario::Scenario;
use crate::history::{Op, Operation, Outcome, Phase};

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50: String,
    pub p90: String,
    pub p99: String,
    pub max: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct FaultLine {
    pub at: String,
    pub fault: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Availability {
    /// Operations the service answered (ok, or a definite answer such as a
    /// cas mismatch) over all main-phase operations.
    pub overall: f64,
    /// The same per second of the main phase, by invocation time.
    pub per_second: Vec<f64>,
    /// The longest time one partition was seen unavailable (see `max_unavailability`).
    pub max_unavailability: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_window: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Expectation {
    pub name: String,
    pub expected: String,
    pub measured: String,
    pub pass: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub digest: String,
    pub events: u64,
    pub simulated: String,
    pub topology: Vec<String>,
    pub faults: Vec<FaultLine>,
    /// Operations by kind and outcome (main phase).
    pub operations: BTreeMap<String, Counts>,
    /// Latency of successful main-phase operations, by kind.
    pub latency: BTreeMap<String, Latency>,
    pub availability: Availability,
    /// The main phase cut at every fault boundary: before the first fault,
    /// during each, after each (see [`phases`]).
    pub phases: Vec<PhaseFigures>,
    pub final_reads: Counts,
    pub final_phase_complete: bool,
    pub network: sim::world::NetStats,
    pub disks: sim::disk::DiskStats,
    /// Stream scenarios: stalls, replication and repair figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamFigures>,
    /// Table scenarios: failovers, time to recover, master takeovers,
    /// refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<TableFigures>,
    /// Table scenarios whose workloads send bad requests: sent, refused by
    /// reason, accepted (must be 0), and sightings of their values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_requests: Option<crate::badreq::BadRequestFigures>,
    /// The checkers' verdicts over the run's history.
    pub checks: Option<crate::check::Verdicts>,
    pub expectations: Vec<Expectation>,
    pub pass: bool,
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Whether the service answered: ok, or a definite answer that is not an
/// outage (a cas that found another value, a stream writer told that
/// another writer took over).
fn answered(r: &Operation<'_>) -> bool {
    r.outcome == Outcome::Ok
        || (r.outcome == Outcome::Fail && r.error == Some("cas mismatch"))
        || r.error.is_some_and(|e| e.starts_with(crate::check::liveness::FENCED))
}

/// The `p` quantile of a non-empty sorted sample (nearest rank).
fn quantile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn percentile(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    fmt_duration(Duration::from_nanos(quantile(sorted, p)))
}

fn route_key(op: &Op) -> &str {
    match op {
        Op::Read { key, .. } | Op::Write { key, .. } | Op::Cas { key, .. } | Op::Delete { key } => key,
        Op::Append { pkey, .. } => pkey,
        Op::Scan { start, .. } => start,
        Op::StreamOpen { stream, .. } | Op::StreamAppend { stream, .. } | Op::StreamRead { stream, .. } => stream,
    }
}

/// The longest time a partition was seen unavailable: over a run of
/// consecutive unanswered operations on its keys (ordered by completion),
/// from the first one's invocation to the last one's completion.
/// Partitions, not keys or processes: every attempt on any of its keys
/// samples a partition, so its windows are dense; a single rarely used key
/// would join two outages that nobody observed in between.
fn max_unavailability<'a>(ops: &'a [Operation<'a>], main_end: SimTime, partition_of: &dyn Fn(&str) -> String) -> (Duration, Option<String>) {
    let mut by_key: BTreeMap<String, Vec<&Operation<'_>>> = BTreeMap::new();
    // An operation whose client process crashed says nothing about the
    // service: that process is not trying any more.
    for r in ops.iter().filter(|r| r.phase == Phase::Main && r.error != Some(crate::runner::CLIENT_CRASHED)) {
        by_key.entry(partition_of(route_key(r.op))).or_default().push(r);
    }
    let mut worst = (Duration::ZERO, None);
    for (key, mut list) in by_key {
        let done = |r: &Operation<'_>| r.complete_ns.map(SimTime).unwrap_or(main_end);
        list.sort_by_key(|r| (done(r), r.invoke_index));
        // (first invocation, last completion) of the current unanswered run.
        let mut run: Option<(SimTime, SimTime)> = None;
        let mut close = |run: Option<(SimTime, SimTime)>| {
            if let Some((from, to)) = run {
                let w = to.saturating_sub(from);
                if w > worst.0 {
                    worst = (w, Some(format!("partition {key} from {from} to {to}")));
                }
            }
        };
        for r in list {
            let (invoked, done) = (SimTime(r.invoke_ns), done(r));
            if answered(r) {
                close(run.take());
            } else {
                run = Some(match run {
                    None => (invoked, done),
                    Some((from, to)) => (from.min(invoked), to.max(done)),
                });
            }
        }
        close(run);
    }
    worst
}

/// The longest time appends stalled while one state of the fault timeline held.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Stall {
    /// `[from, to)` of the window and the fault that opened it.
    pub window: String,
    pub after: String,
    /// The longest gap between acknowledged appends of one stream that
    /// ends in the window (a gap still open at the end of the main phase
    /// counts up to it, in the last window).
    pub longest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// What the stream layer did, for stream scenarios.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct StreamFigures {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stalls: Vec<Stall>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub max_append_stall: String,
    /// Extents with fewer than three healthy replicas in three zones, the
    /// most seen in each second of the run (the manager's samples).
    pub under_replicated_per_second: Vec<u64>,
    pub under_replicated_at_end: u64,
    /// From the last heal until every extent had three replicas in three
    /// zones again (`None`: not within the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fully_replicated_after_heal: Option<String>,
    pub bytes_rereplicated: u64,
    /// Extent seals by cause.
    pub seals: BTreeMap<String, u64>,
    pub corrupt_replicas_detected: u64,
    pub replicas_repaired: u64,
    pub fenced_appends_refused: u64,
    /// Reads that fell back to another replica after an error or corruption.
    pub read_fallbacks: u64,
}

/// The stream layer's own observations, per second and at the end.
fn stream_figures(obs: &engine::stream::StreamObserver, out: &RunOutput, secs: usize) -> StreamFigures {
    use engine::stream::SealCause;
    let d = obs.snapshot();
    let mut per_second = vec![0u64; secs];
    for &(t, n) in &d.under_replicated {
        let s = ((t.0 / 1_000_000_000) as usize).min(secs - 1);
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
        under_replicated_per_second: per_second,
        under_replicated_at_end: at_end,
        fully_replicated_after_heal: fully.map(|t| fmt_duration(t.saturating_sub(out.heal_at))),
        bytes_rereplicated: d.bytes_rereplicated,
        seals,
        corrupt_replicas_detected: d.corrupt_replicas_detected,
        replicas_repaired: d.repairs,
        fenced_appends_refused: d.fenced_appends_rejected,
        read_fallbacks: d.read_fallbacks,
    }
}

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
    /// The worst one's time to recover (for `max_time_to_recover`).
    #[serde(skip)]
    pub slowest_recovery_time: Option<Duration>,
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

/// The table section: failovers and recovery from the observer, and the
/// healthy-write figures computed from the history.
fn table_figures(obs: &engine::table::TableObserver, healthy_write: Option<HealthyWrite>) -> TableFigures {
    use engine::table::FailoverCause;
    let d = obs.snapshot();
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
    }
}

/// Stalls of acknowledged appends per window of the fault timeline.
fn append_stalls(ops: &[Operation<'_>], out: &RunOutput, start: SimTime) -> (Vec<Stall>, Duration) {
    let mut acks: BTreeMap<&str, Vec<SimTime>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.phase == Phase::Main && o.outcome == Outcome::Ok) {
        if let (Op::StreamAppend { stream, .. }, Some(c)) = (o.op, o.complete_ns) {
            acks.entry(stream.as_str()).or_default().push(SimTime(c));
        }
    }
    // Gaps per stream: from the start (or an ack) to the next ack, and the
    // last one to the end of the main phase.
    let mut gaps: Vec<(SimTime, SimTime, &str)> = Vec::new();
    for (stream, mut times) in acks {
        times.sort_unstable();
        let mut prev = start;
        for t in times {
            gaps.push((prev, t, stream));
            prev = t;
        }
        gaps.push((prev, out.main_end, stream));
    }
    let mut bounds: Vec<(SimTime, String)> = vec![(start, "start".to_string())];
    bounds.extend(out.faults.iter().filter(|f| f.at < out.main_end && f.at >= start).map(|f| (f.at, f.text.clone())));
    let mut stalls = Vec::new();
    let mut worst = Duration::ZERO;
    for (i, (from, after)) in bounds.iter().enumerate() {
        let to = bounds.get(i + 1).map(|b| b.0).unwrap_or(out.main_end);
        if to <= *from {
            continue;
        }
        // A gap belongs to the window it ends in (the last one if it runs
        // to the end): a stall that began just before a fault is the fault's.
        let last = i + 1 == bounds.len();
        let longest = gaps.iter().filter(|(_, b, _)| *b > *from && (*b <= to || last)).max_by_key(|(a, b, s)| (b.saturating_sub(*a), std::cmp::Reverse(*s)));
        let (len, stream) = match longest {
            Some((a, b, s)) => (b.saturating_sub(*a), Some(s.to_string())),
            None => (to.saturating_sub(*from), None),
        };
        worst = worst.max(len);
        stalls.push(Stall { window: format!("[{from}, {to})"), after: after.clone(), longest: fmt_duration(len), stream });
    }
    (stalls, worst)
}

/// A fault in place from `from` until `to` (`None`: to the end of the run).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    pub from: SimTime,
    pub to: Option<SimTime>,
    pub text: String,
}

/// Throughput, availability and latency of the operations invoked while
/// one state of the fault timeline held.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PhaseFigures {
    /// `before` (no fault yet), `during F` (faults in place, joined by
    /// ` + ` in the order they began), `after F` (none in place; F is the
    /// fault that ended last, or the faults that ended together last).
    pub phase: String,
    pub from: String,
    pub to: String,
    /// The operations invoked in the phase, by outcome.
    pub operations: Counts,
    /// Of those, the ones the service answered (as `availability` counts).
    pub answered: u64,
    /// Answered and successful operations per simulated second of the phase.
    pub answered_per_s: f64,
    pub ok_per_s: f64,
    /// `answered / operations` (1 when there were none).
    pub availability: f64,
    /// Latency of the successful operations, `reads` (read, scan,
    /// stream-read) and `writes` (the others).
    pub latency: BTreeMap<String, Latency>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn latency_of(mut v: Vec<u64>) -> Latency {
    v.sort_unstable();
    Latency { count: v.len() as u64, p50: percentile(&v, 0.5), p90: percentile(&v, 0.9), p99: percentile(&v, 0.99), max: percentile(&v, 1.0) }
}

/// The fault windows of a run: each fault of the scenario's timeline that
/// has an inverse, at the model time it was applied, until its inverse was
/// applied. A refused fault opens no window; a refused inverse closes none.
pub fn fault_windows(scn: &Scenario, out: &RunOutput) -> Vec<FaultWindow> {
    let applied = |i: usize| out.faults.get(i).filter(|f| f.error.is_none());
    crate::scenario::fault_windows(&scn.faults)
        .into_iter()
        .filter_map(|(on, off)| {
            let on = applied(on)?;
            Some(FaultWindow { from: on.at, to: off.and_then(applied).map(|f| f.at), text: on.text.clone() })
        })
        .collect()
}

/// Cuts `[start, end)` at every fault boundary (each window's start and
/// end inside it; equal times make one cut) and measures each piece over
/// the main-phase operations invoked in it (an operation invoked before
/// `start` counts in the first piece). Overlapping faults make a phase for
/// every combination in place: `during A`, `during A + B`, `during B`, ...
pub fn phases(ops: &[Operation<'_>], windows: &[FaultWindow], start: SimTime, end: SimTime) -> Vec<PhaseFigures> {
    let mut cuts: Vec<SimTime> = vec![start, end];
    for w in windows {
        cuts.extend(std::iter::once(w.from).chain(w.to).filter(|&t| t > start && t < end));
    }
    cuts.sort_unstable();
    cuts.dedup();
    #[derive(Default)]
    struct Acc {
        counts: Counts,
        answered: u64,
        reads: Vec<u64>,
        writes: Vec<u64>,
    }
    let mut acc: Vec<Acc> = (1..cuts.len()).map(|_| Acc::default()).collect();
    for r in ops.iter().filter(|r| r.phase == Phase::Main) {
        // The last cut at or before the invocation (the first piece for
        // anything earlier, the last for anything at or after `end`).
        let i = cuts.partition_point(|&c| c <= SimTime(r.invoke_ns)).clamp(1, acc.len()) - 1;
        let a = &mut acc[i];
        match r.outcome {
            Outcome::Ok => a.counts.ok += 1,
            Outcome::Fail => a.counts.fail += 1,
            Outcome::Info | Outcome::Open => a.counts.info += 1,
        }
        a.answered += u64::from(answered(r));
        if let (Outcome::Ok, Some(c)) = (r.outcome, r.complete_ns) {
            let is_read = matches!(r.op, Op::Read { .. } | Op::Scan { .. } | Op::StreamRead { .. });
            if is_read { &mut a.reads } else { &mut a.writes }.push(c - r.invoke_ns);
        }
    }
    acc.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let (from, to) = (cuts[i], cuts[i + 1]);
            let in_place: Vec<&str> = windows.iter().filter(|w| w.from <= from && w.to.is_none_or(|t| t > from)).map(|w| w.text.as_str()).collect();
            let phase = if !in_place.is_empty() {
                format!("during {}", in_place.join(" + "))
            } else {
                // The fault(s) that ended last before this phase, if any.
                let last = windows.iter().filter_map(|w| w.to).filter(|&t| t <= from).max();
                let ended: Vec<&str> = windows.iter().filter(|w| last.is_some() && w.to == last).map(|w| w.text.as_str()).collect();
                if ended.is_empty() {
                    "before".to_string()
                } else {
                    format!("after {}", ended.join(" + "))
                }
            };
            let secs = to.saturating_sub(from).as_secs_f64();
            let total = a.counts.ok + a.counts.fail + a.counts.info;
            let mut latency = BTreeMap::new();
            for (name, v) in [("reads", a.reads), ("writes", a.writes)] {
                if !v.is_empty() {
                    latency.insert(name.to_string(), latency_of(v));
                }
            }
            PhaseFigures {
                phase,
                from: from.to_string(),
                to: to.to_string(),
                answered_per_s: round1(a.answered as f64 / secs),
                ok_per_s: round1(a.counts.ok as f64 / secs),
                availability: if total == 0 { 1.0 } else { round4(a.answered as f64 / total as f64) },
                answered: a.answered,
                operations: a.counts,
                latency,
            }
        })
        .collect()
}

pub struct Measured {
    pub availability: f64,
    pub max_unavailability: Duration,
    pub max_append_stall: Option<Duration>,
    /// Table scenarios: master takeovers from the first fault on, the time
    /// of that fault, and takeovers over the whole run.
    pub master_takeovers_after_fault: Option<(u64, SimTime, u64)>,
}

/// Builds the report's measurements (everything but the checkers).
/// `partition_of` names the partition that serves a key.
pub fn build(scn: &Scenario, out: &RunOutput, partition_of: &dyn Fn(&str) -> String) -> (Report, Measured) {
    let mut operations: BTreeMap<String, Counts> = BTreeMap::new();
    let mut lat: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut final_reads = Counts::default();
    let secs = scn.duration.as_secs_f64().ceil().max(1.0) as usize;
    let mut per_sec = vec![(0u64, 0u64); secs];
    let (mut answered_n, mut total_n) = (0u64, 0u64);
    let ops = out.history.operations();
    for r in &ops {
        let counts = if r.phase == Phase::Final { &mut final_reads } else { operations.entry(r.op.name().to_string()).or_default() };
        match r.outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Fail => counts.fail += 1,
            Outcome::Info | Outcome::Open => counts.info += 1,
        }
        if r.phase != Phase::Main {
            continue;
        }
        if let (Outcome::Ok, Some(c)) = (r.outcome, r.complete_ns) {
            lat.entry(r.op.name().to_string()).or_default().push(c - r.invoke_ns);
        }
        total_n += 1;
        let a = answered(r);
        answered_n += u64::from(a);
        let s = ((r.invoke_ns / 1_000_000_000) as usize).min(secs - 1);
        per_sec[s].1 += 1;
        per_sec[s].0 += u64::from(a);
    }
    let latency = lat.into_iter().map(|(k, v)| (k, latency_of(v))).collect();
    let overall = if total_n == 0 { 1.0 } else { answered_n as f64 / total_n as f64 };
    let (unavail, window) = max_unavailability(&ops, out.main_end, partition_of);
    let (streams, max_append_stall) = match &out.streams {
        // A table scenario has the stream layer beneath but no stream
        // operations: its figures, no append stalls.
        Some(obs) if !ops.iter().any(|o| matches!(o.op, Op::StreamAppend { .. })) => (Some(stream_figures(obs, out, secs)), None),
        Some(obs) => {
            let (stalls, worst) = append_stalls(&ops, out, SimTime::from_duration(crate::runner::SERVICE_STARTUP));
            let mut f = stream_figures(obs, out, secs);
            f.stalls = stalls;
            f.max_append_stall = fmt_duration(worst);
            (Some(f), Some(worst))
        }
        None => (None, None),
    };
    let report = Report {
        scenario: scn.name.clone(),
        seed: out.seed,
        digest: out.digest.to_string(),
        events: out.digest.events,
        simulated: fmt_duration(out.end.as_duration()),
        topology: scn.topology.describe().lines().map(str::to_string).collect(),
        faults: out.faults.iter().map(|f| FaultLine { at: f.at.to_string(), fault: f.text.clone(), refused: f.error.clone() }).collect(),
        operations,
        latency,
        availability: Availability {
            overall: round4(overall),
            per_second: per_sec.iter().map(|&(a, t)| if t == 0 { 1.0 } else { round4(a as f64 / t as f64) }).collect(),
            max_unavailability: fmt_duration(unavail),
            worst_window: window,
        },
        phases: phases(&ops, &fault_windows(scn, out), SimTime::from_duration(crate::runner::SERVICE_STARTUP), out.main_end),
        final_reads,
        final_phase_complete: out.final_phase_complete,
        network: out.net.clone(),
        disks: out.disk.clone(),
        streams,
        table: out.table.as_ref().map(|t| {
            let first_fault = out.faults.first().map(|f| f.at).unwrap_or(out.main_end);
            table_figures(t, healthy_write(&ops, SimTime::from_duration(crate::runner::SERVICE_STARTUP), first_fault, &scn.topology, &scn.disk))
        }),
        bad_requests: out.bad_requests.as_ref().map(|log| crate::badreq::figures(log, &ops)),
        checks: None,
        expectations: Vec::new(),
        pass: true,
    };
    // The first fault as applied (a fault's time is when it fired).
    let first_fault = out.faults.first().map(|f| f.at).unwrap_or(out.end);
    let master_takeovers_after_fault = out.table.as_ref().map(|t| {
        let takeovers = t.snapshot().master_takeovers;
        (takeovers.iter().filter(|(at, _, _)| *at >= first_fault).count() as u64, first_fault, takeovers.len() as u64)
    });
    (report, Measured { availability: overall, max_unavailability: unavail, max_append_stall, master_takeovers_after_fault })
}

impl Report {
    pub fn expect(&mut self, name: &str, expected: String, measured: String, pass: bool) {
        self.pass &= pass;
        self.expectations.push(Expectation { name: name.into(), expected, measured, pass });
    }

    /// A readable summary for stdout.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "scenario {}  seed {}  digest {}  ({} events, {} simulated)", self.scenario, self.seed, self.digest, self.events, self.simulated);
        for f in &self.faults {
            let _ = writeln!(s, "  fault {:>10}  {}{}", f.at, f.fault, f.refused.as_ref().map(|r| format!("  (refused: {r})")).unwrap_or_default());
        }
        for (k, c) in &self.operations {
            let l = self.latency.get(k);
            let _ = writeln!(
                s,
                "  {k:<7} ok {:>7}  fail {:>6}  info {:>6}   p50 {:>9}  p99 {:>9}",
                c.ok,
                c.fail,
                c.info,
                l.map(|l| l.p50.as_str()).unwrap_or("-"),
                l.map(|l| l.p99.as_str()).unwrap_or("-")
            );
        }
        let _ = writeln!(s, "  availability {:.4}  longest unavailability {}", self.availability.overall, self.availability.max_unavailability);
        for p in &self.phases {
            let lat = |k: &str| p.latency.get(k).map_or("-", |l| l.p99.as_str());
            let _ = writeln!(
                s,
                "  phase [{}, {}) {}: ok/s {:.1} answered/s {:.1} availability {:.4}  read p99 {}  write p99 {}",
                p.from,
                p.to,
                p.phase,
                p.ok_per_s,
                p.answered_per_s,
                p.availability,
                lat("reads"),
                lat("writes")
            );
        }
        if let Some(h) = self.table.as_ref().and_then(|t| t.healthy_write.as_ref()) {
            let _ = writeln!(s, "  healthy writes: p50 {} over {} writes, modeled {} (inter-zone round trip + sync), ratio {:.2}", h.p50, h.writes, h.modeled, h.ratio);
        }
        let _ = writeln!(s, "  final reads: ok {} fail {} info {}", self.final_reads.ok, self.final_reads.fail, self.final_reads.info);
        if let Some(v) = &self.checks {
            for l in v.summary_lines() {
                let _ = writeln!(s, "  check {l}");
            }
        }
        for e in &self.expectations {
            let _ = writeln!(s, "  [{}] {:<20} expected {:<10} measured {}", if e.pass { "pass" } else { "FAIL" }, e.name, e.expected, e.measured);
        }
        let _ = write!(s, "  verdict: {}", if self.pass { "pass" } else { "FAIL" });
        s
    }
}


/// Judges every expectation of the scenario: the checkers' verdicts, then
/// the run's own measurements.
pub fn judge(report: &mut Report, scn: &Scenario, m: &Measured, v: crate::check::Verdicts) {
    use crate::check::Verdict;
    let e = &scn.expect;
    if let Some(max) = e.lost_acked_writes {
        // Unreachable acknowledged writes (no final read answered their key)
        // count as lost: nothing shows they survived.
        let count = |name: &str| v.durability.counts.get(name).copied().unwrap_or(0);
        let lost = count("lost_acked_writes") + count("unreachable_acked_writes");
        // With a bound of 0 the durability checker must pass outright: a
        // phantom read or a resurrected delete is a durability failure too.
        let ok = lost <= max && (max > 0 || v.durability.verdict == Verdict::Pass);
        // The measured text names every rule the checker found broken.
        let broken: Vec<String> = crate::check::durability::VIOLATIONS.iter().filter(|n| count(n) > 0).map(|n| format!("{n} {}", count(n))).collect();
        let measured = if broken.is_empty() { format!("{lost} ({})", v.durability.verdict.name()) } else { format!("{lost} ({}: {})", v.durability.verdict.name(), broken.join(", ")) };
        report.expect("lost_acked_writes", format!("<= {max}"), measured, ok);
    }
    for (name, want, r) in [
        ("linearizable", e.linearizable, &v.linearizable),
        ("sequence_ok", e.sequence_ok, &v.sequence),
        ("live", e.live, &v.liveness),
        ("streams_ok", e.streams_ok, &v.stream),
    ] {
        if let Some(want) = want {
            let holds = r.verdict == Verdict::Pass;
            // An undecided checker proves nothing either way: it fails the
            // expectation whichever way it was set.
            let pass = r.verdict != Verdict::Unknown && r.verdict != Verdict::Skipped && holds == want;
            report.expect(name, want.to_string(), r.verdict.name().to_string(), pass);
        }
    }
    report.checks = Some(v);
    // Durability judges keys by their final read: a read-back that did not
    // finish would let lost writes go unseen, so it always fails the run.
    if !report.final_phase_complete {
        report.expect("final_reads_complete", "true".into(), "false".into(), false);
    }
    judge_measured(report, scn, m);
}

fn judge_measured(report: &mut Report, scn: &Scenario, m: &Measured) {
    if let Some(min) = scn.expect.min_availability {
        report.expect("min_availability", format!(">= {min}"), format!("{:.4}", m.availability), m.availability >= min);
    }
    if let Some(max) = scn.expect.max_unavailability {
        report.expect("max_unavailability", format!("<= {}", fmt_duration(max.0)), fmt_duration(m.max_unavailability), m.max_unavailability <= max.0);
    }
    if let (Some(max), Some(got)) = (scn.expect.max_append_stall, m.max_append_stall) {
        report.expect("max_append_stall", format!("<= {}", fmt_duration(max.0)), fmt_duration(got), got <= max.0);
    }
    if let Some(max) = scn.expect.max_time_to_recover {
        let table = report.table.as_ref();
        let (slowest, what) = match table.and_then(|t| t.slowest_recovery_time.zip(t.slowest_recovery.clone())) {
            Some((d, w)) => (d, w),
            None => (Duration::ZERO, "no failover to recover from".into()),
        };
        report.expect("max_time_to_recover", format!("<= {}", fmt_duration(max.0)), what, slowest <= max.0);
    }
    if let Some(min) = scn.expect.min_master_takeovers {
        let (after, at, all) = m.master_takeovers_after_fault.unwrap_or((0, SimTime::ZERO, 0));
        report.expect("min_master_takeovers", format!(">= {min}"), format!("{after} from {at} on ({all} in all)"), after >= min);
    }
    let bad = report.bad_requests.clone();
    let bad_figure = |f: fn(&crate::badreq::BadRequestFigures) -> u64| bad.as_ref().map(f).unwrap_or(0);
    if let Some(max) = scn.expect.bad_requests_accepted {
        let (accepted, sent) = (bad_figure(|b| b.accepted), bad_figure(|b| b.sent));
        report.expect("bad_requests_accepted", format!("<= {max}"), format!("{accepted} of {sent}"), accepted <= max);
    }
    if let Some(min) = scn.expect.min_bad_requests_refused {
        let (refused, sent) = (bad_figure(|b| b.refused), bad_figure(|b| b.sent));
        report.expect("min_bad_requests_refused", format!(">= {min}"), format!("{refused} of {sent}"), refused >= min);
    }
    if let Some(max) = scn.expect.bad_values_seen {
        let seen = bad_figure(|b| b.values_seen);
        report.expect("bad_values_seen", format!("<= {max}"), seen.to_string(), seen <= max);
    }
    let figures = report.streams.clone().unwrap_or_default();
    if let Some(want) = scn.expect.rereplicated {
        let did = figures.bytes_rereplicated > 0;
        report.expect("rereplicated", want.to_string(), format!("{} bytes", figures.bytes_rereplicated), did == want);
    }
    if let Some(want) = scn.expect.replicated_at_end {
        let did = figures.under_replicated_at_end == 0;
        report.expect("replicated_at_end", want.to_string(), format!("{} extents under-replicated", figures.under_replicated_at_end), did == want);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{History, Kind};

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// One operation: invoked at `at`, completed `took` later as `kind`
    /// (never, with `None`), with an optional error.
    struct Spec {
        at: u64,
        done: Option<(u64, Kind, Option<&'static str>)>,
        op: Op,
        phase: Phase,
    }

    fn read(at: u64, took: u64) -> Spec {
        Spec { at, done: Some((took, Kind::Ok, None)), op: Op::Read { key: "k".into(), value: None }, phase: Phase::Main }
    }

    fn write(at: u64, done: Option<(u64, Kind, Option<&'static str>)>) -> Spec {
        Spec { at, done, op: Op::Write { key: "k".into(), value: format!("v{at}") }, phase: Phase::Main }
    }

    /// A well-formed history of `specs`, one process each, entries in time order.
    fn history(specs: Vec<Spec>) -> History {
        let mut events: Vec<(u64, usize, bool)> = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            events.push((s.at, i, false));
            if let Some((took, ..)) = s.done {
                events.push((s.at + took, i, true));
            }
        }
        events.sort_unstable();
        let mut h = History::new();
        for (t, i, completion) in events {
            let s = &specs[i];
            if completion {
                let (_, kind, error) = s.done.expect("a completion");
                let op = match (&s.op, kind) {
                    (Op::Append { pkey, .. }, Kind::Ok) => Op::Append { pkey: pkey.clone(), seq: Some(1) },
                    (op, _) => op.clone(),
                };
                h.complete(i as u64, t, kind, op, error.map(str::to_string));
            } else {
                h.invoke(i as u64, t, s.op.clone(), s.phase);
            }
        }
        h
    }

    fn window(from: u64, to: Option<u64>, text: &str) -> FaultWindow {
        FaultWindow { from: SimTime(from), to: to.map(SimTime), text: text.into() }
    }

    #[test]
    fn phases_cut_at_every_fault_boundary_and_measure_each_piece() {
        let h = history(vec![
            // Before [1s, 2s): four reads (1, 2, 3, 100 ms) and a write
            // invoked before the start, which counts in the first phase.
            write(S / 2, Some((5 * MS, Kind::Ok, None))),
            read(S, MS),
            read(S + 200 * MS, 2 * MS),
            read(S + 400 * MS, 3 * MS),
            // Invoked before A began, completed during it: still `before`.
            read(2 * S - 1, 100 * MS),
            // During A [2s, 3s): a cas mismatch (answered), a refusal (not
            // answered), a timeout (not answered, completes in a later phase).
            Spec { at: 2 * S + 100 * MS, done: Some((MS, Kind::Fail, Some("cas mismatch"))), op: Op::Cas { key: "k".into(), expected: None, value: "c".into() }, phase: Phase::Main },
            write(2 * S + 200 * MS, Some((MS, Kind::Fail, Some("not serving")))),
            write(2 * S + 500 * MS, Some((S, Kind::Info, Some("timeout")))),
            // During A + B [3s, 4s): invoked exactly at the boundary.
            write(3 * S, Some((7 * MS, Kind::Ok, None))),
            // During B [4s, 6s): nothing. After B [6s, 8s): a scan and a read.
            Spec { at: 7 * S, done: Some((4 * MS, Kind::Ok, None)), op: Op::Scan { start: "a".into(), end: "z".into(), count: None }, phase: Phase::Main },
            read(7 * S + 500 * MS, 2 * MS),
            // During C [8s, 10s): an append, and a write that never completes.
            Spec { at: 9 * S, done: Some((3 * MS, Kind::Ok, None)), op: Op::Append { pkey: "p".into(), seq: None }, phase: Phase::Main },
            write(9 * S + 900 * MS, None),
            // The final phase is not the main phase's.
            Spec { at: 9 * S + 950 * MS, done: Some((MS, Kind::Ok, None)), op: Op::Read { key: "k".into(), value: None }, phase: Phase::Final },
        ]);
        let windows = [window(2 * S, Some(4 * S), "A"), window(3 * S, Some(6 * S), "B"), window(8 * S, None, "C")];
        let ops = h.operations();
        let p = phases(&ops, &windows, SimTime(S), SimTime(10 * S));
        let names: Vec<(&str, &str, &str)> = p.iter().map(|p| (p.phase.as_str(), p.from.as_str(), p.to.as_str())).collect();
        assert_eq!(
            names,
            [("before", "1s", "2s"), ("during A", "2s", "3s"), ("during A + B", "3s", "4s"), ("during B", "4s", "6s"), ("after B", "6s", "8s"), ("during C", "8s", "10s")]
        );

        let before = &p[0];
        assert_eq!(before.operations, Counts { ok: 5, fail: 0, info: 0 });
        assert_eq!((before.answered, before.answered_per_s, before.ok_per_s, before.availability), (5, 5.0, 5.0, 1.0));
        let reads = &before.latency["reads"];
        assert_eq!((reads.count, reads.p50.as_str(), reads.p99.as_str(), reads.max.as_str()), (4, "3ms", "100ms", "100ms"));
        assert_eq!(before.latency["writes"].max, "5ms");

        let a = &p[1];
        assert_eq!(a.operations, Counts { ok: 0, fail: 2, info: 1 });
        assert_eq!((a.answered, a.answered_per_s, a.ok_per_s, a.availability), (1, 1.0, 0.0, 0.3333));
        assert!(a.latency.is_empty(), "no successful operation, no latency");

        assert_eq!(p[2].operations, Counts { ok: 1, fail: 0, info: 0 });
        assert_eq!(p[2].latency["writes"].p50, "7ms");

        let b = &p[3];
        assert_eq!((b.operations.clone(), b.answered_per_s, b.availability), (Counts::default(), 0.0, 1.0));

        let after = &p[4];
        assert_eq!((after.operations.ok, after.ok_per_s), (2, 1.0), "two in two seconds");
        // Of two, p50 is the upper one (the rank (n - 1) * p rounds half up).
        assert_eq!((after.latency["reads"].p50.as_str(), after.latency["reads"].max.as_str()), ("4ms", "4ms"));

        let c = &p[5];
        assert_eq!(c.operations, Counts { ok: 1, fail: 0, info: 1 }, "the open write counts as unknown; the final read not at all");
        assert_eq!((c.availability, c.ok_per_s), (0.5, 0.5));

        // Every main-phase operation is in exactly one phase.
        let total: u64 = p.iter().map(|p| p.operations.ok + p.operations.fail + p.operations.info).sum();
        assert_eq!(total, 13);
    }

    #[test]
    fn healthy_writes_are_the_successful_writes_before_the_first_fault_against_the_modeled_cost() {
        let h = history(vec![
            // Before the start (start-up), a read, a failed write, and a
            // write after the first fault: none counts.
            write(S / 2, Some((50 * MS, Kind::Ok, None))),
            read(S + 100 * MS, MS),
            write(S + 200 * MS, Some((9 * MS, Kind::Fail, Some("not serving")))),
            write(3 * S, Some((900 * MS, Kind::Ok, None))),
            // Three writes, a cas and an append before it: p50 5 ms.
            write(S, Some((4 * MS, Kind::Ok, None))),
            write(S + 300 * MS, Some((5 * MS, Kind::Ok, None))),
            Spec { at: S + 400 * MS, done: Some((6 * MS, Kind::Ok, None)), op: Op::Cas { key: "k".into(), expected: None, value: "c".into() }, phase: Phase::Main },
            Spec { at: S + 500 * MS, done: Some((5 * MS, Kind::Ok, None)), op: Op::Append { pkey: "p".into(), seq: None }, phase: Phase::Main },
            write(2 * S, Some((20 * MS, Kind::Ok, None))),
        ]);
        let ops = h.operations();
        let lp = |us: u64| sim::topology::LinkParams { latency: Duration::from_micros(us), jitter: Duration::ZERO, loss: 0.0 };
        let mut topo = sim::Topology::new(&["a".to_string(), "b".to_string(), "c".to_string()], lp(100), lp(1000));
        // One slower pair: its round trip is the modeled one.
        topo.set_link(sim::ZoneId(0), sim::ZoneId(2), lp(1500));
        let disk = sim::DiskConfig { sync_latency: Duration::from_micros(500), ..sim::DiskConfig::default() };
        let hw = healthy_write(&ops, SimTime(S), SimTime(3 * S), &topo, &disk).expect("writes before the fault");
        assert_eq!(hw, HealthyWrite { writes: 5, p50: "5ms".into(), modeled: "3.5ms".into(), ratio: 1.43 });
        assert_eq!(healthy_write(&ops, SimTime(S), SimTime(S), &topo, &disk), None, "a fault at the start leaves no healthy write");
    }

    #[test]
    fn phases_without_faults_or_with_faults_at_the_edges() {
        let h = history(vec![read(S, MS), read(2 * S, 3 * MS)]);
        let ops = h.operations();
        // No fault: one phase, the whole main phase.
        let p = phases(&ops, &[], SimTime(0), SimTime(4 * S));
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].phase.as_str(), p[0].ok_per_s, p[0].latency["reads"].p50.as_str()), ("before", 0.5, "3ms"));
        // A fault from the start, healed at the end: one phase, during it;
        // two faults healed at once both name the phase after.
        let w = [window(0, Some(4 * S), "X")];
        assert_eq!(phases(&ops, &w, SimTime(0), SimTime(4 * S)).iter().map(|p| p.phase.clone()).collect::<Vec<_>>(), ["during X"]);
        let w = [window(S, Some(3 * S), "X"), window(S, Some(3 * S), "Y")];
        let names: Vec<String> = phases(&ops, &w, SimTime(0), SimTime(4 * S)).into_iter().map(|p| format!("{} [{}, {})", p.phase, p.from, p.to)).collect();
        assert_eq!(names, ["before [0ns, 1s)", "during X + Y [1s, 3s)", "after X + Y [3s, 4s)"]);
        // The one that ended last names it.
        let w = [window(S, Some(2 * S), "X"), window(S, Some(3 * S), "Y")];
        let names: Vec<String> = phases(&ops, &w, SimTime(0), SimTime(4 * S)).into_iter().map(|p| p.phase).collect();
        assert_eq!(names, ["before", "during X + Y", "during Y", "after Y"]);
    }
}
