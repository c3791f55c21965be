//! The `streams` section: what the stream layer did (replication,
//! repair, seals, fencing) and how long appends stalled while each state
//! of the fault timeline held.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sim::time::{fmt_duration, SimTime};

use crate::history::{Op, Operation, Outcome, Phase};
use crate::run::output::RunOutput;

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

/// The end-of-run audit: every replica of every sealed extent read whole
/// and compared with the others.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct AuditFigures {
    pub sealed_extents: u64,
    pub replicas: u64,
    pub mib_read: f64,
    /// Replicas that could not give their sealed bytes or differ from the
    /// others.
    pub bad_replicas: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Bad replicas earlier rounds found (rot no read had met), made
    /// suspect and repaired before this, the last round.
    pub found_by_earlier_rounds: u64,
    pub rounds: u32,
}

/// What the stream layer did, for stream scenarios.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct StreamFigures {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stalls: Vec<Stall>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub max_append_stall: String,
    /// The longest stall (for `max_append_stall`; absent when the history
    /// holds no appends).
    #[serde(skip)]
    pub max_append_stall_time: Option<Duration>,
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
    /// Replicas replaced in place by a checked copy of their sealed extent.
    pub replicas_repaired: u64,
    /// The most times one replica was repaired: a repair that leaves its
    /// replica short brings it back again and again.
    pub most_repairs_of_one_replica: u64,
    /// That replica (extent and node), when one was repaired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub most_repaired_replica: Option<String>,
    pub fenced_appends_refused: u64,
    /// The end-of-run audit of every sealed extent's replicas (absent when
    /// the layer did not settle in time for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditFigures>,
    /// Reads that fell back to another replica after an error or corruption.
    pub read_fallbacks: u64,
    /// Of those, the ones after the last fault healed.
    pub read_fallbacks_after_heal: u64,
    /// Opens and reads a stream client refused at once, busy, having
    /// had no effect: more were waiting for its metadata sessions than it
    /// admits.
    pub refused_busy: u64,
}


impl StreamFigures {
    /// Adds the stalls of the acknowledged appends among `ops` per window
    /// of the fault timeline, and the longest.
    pub fn add_stalls(&mut self, ops: &[Operation<'_>], out: &RunOutput, start: SimTime) {
        let (stalls, worst) = append_stalls(ops, out, start);
        self.stalls = stalls;
        self.max_append_stall = fmt_duration(worst);
        self.max_append_stall_time = Some(worst);
    }
}

/// Stalls of acknowledged appends per window of the fault timeline.
pub fn append_stalls(ops: &[Operation<'_>], out: &RunOutput, start: SimTime) -> (Vec<Stall>, Duration) {
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
