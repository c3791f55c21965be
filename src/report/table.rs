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
