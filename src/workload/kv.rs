//! The key-value workload: processes that read, write, cas, delete,
//! append (auto-increment) and scan keys chosen uniformly or by Zipf, then
//! the final read-back of every key written. The service sits behind
//! [`KvService`]. Written values are unique (`p<process>.<n>`), so the
//! checkers can tell every write apart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sim::log::Event;
use sim::time::{self, SimTime};
use sim::world::World;

use super::badreq::{self, BadAnswer, BadKind, BadRequest};
use super::{complete, invoke, next_arrival, SharedHistory};
use crate::history::{Kind, Op, Phase};
use crate::scenario::{Distribution, HotOp, WorkloadDef};

/// Operations the final phase reads back, per key, before giving up.
pub const FINAL_READ_ATTEMPTS_MAX: u32 = 50;
/// Values a process remembers for building `cas` expectations.
const KNOWN_VALUES_MAX: usize = 1024;
/// Partition keys of the auto-increment (append) operations.
pub const APPEND_PKEYS: u64 = 64;

pub fn key_name(i: u64) -> String {
    format!("k{i:08}")
}

/// What the row keys of a workload of `instance` begin with (nothing for
/// the main instance): the instances' keys never meet in the history.
pub fn key_prefix(instance: Option<&str>) -> String {
    instance.map(|i| format!("{i}.")).unwrap_or_default()
}

/// Samples key indices uniformly or Zipf-distributed (rank 0 hottest).
pub struct KeyChooser {
    keys: u64,
    /// Cumulative Zipf weights; empty for uniform.
    cdf: Vec<f64>,
}

/// Largest key space for which a Zipf table is built (the scenario
/// format's limit, which also bounds every table of a run together).
pub use crate::scenario::limits::ZIPF_KEYS_MAX;

impl KeyChooser {
    pub fn new(keys: u64, dist: Distribution, theta: f64) -> KeyChooser {
        let cdf = match dist {
            Distribution::Uniform => Vec::new(),
            Distribution::Zipf => {
                let n = keys.min(ZIPF_KEYS_MAX);
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = (1..=n).map(|r| {
                    acc += 1.0 / (r as f64).powf(theta);
                    acc
                }).collect();
                let total = acc;
                cdf.iter_mut().for_each(|c| *c /= total);
                cdf
            }
        };
        KeyChooser { keys, cdf }
    }

    pub fn pick(&self, rng: &mut ChaCha8Rng) -> u64 {
        if self.cdf.is_empty() {
            return rng.random_range(0..self.keys);
        }
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// What one process runs.
pub struct ProcessSpec {
    pub process: u64,
    /// Names the process's random stream.
    pub workload: String,
    pub def: Arc<WorkloadDef>,
    pub chooser: Arc<KeyChooser>,
    /// Hotspot processes read or write only keys `lo..=hi`.
    pub hot: Option<(HotOp, u64, u64)>,
    /// Operations per second of this process.
    pub rate: f64,
    pub start: Duration,
    pub stop: Duration,
    /// Open loop: the history processes of the lanes (empty: closed loop).
    pub lanes: Vec<u64>,
    /// Open loop: where arrivals and sheds are counted.
    pub offered: Option<OfferedLog>,
}

/// Arrivals and arrivals shed at the client, per second of model time, over
/// every open-loop process of a run.
#[derive(Clone, Default)]
pub struct OfferedLog(Arc<std::sync::Mutex<BTreeMap<u64, (u64, u64)>>>);

impl OfferedLog {
    fn arrival(&self, at: SimTime, shed: bool) {
        let mut m = self.0.lock().expect("offered");
        let e = m.entry(at.as_nanos() / 1_000_000_000).or_default();
        e.0 += 1;
        e.1 += u64::from(shed);
    }

    /// (arrivals, shed) per second, by second.
    pub fn snapshot(&self) -> BTreeMap<u64, (u64, u64)> {
        self.0.lock().expect("offered").clone()
    }
}

/// What a process sends next: an operation for the history, or a bad
/// request (kept out of it).
enum Next {
    Op(Op),
    Bad(BadRequest),
}

/// Draws a process's operations from its random stream.
struct Generator {
    process: u64,
    counter: u64,
    weights: Vec<(&'static str, f64)>,
    total: f64,
    bad_fraction: f64,
    bad_sent: u64,
    hot: Option<(HotOp, u64, u64)>,
    chooser: Arc<KeyChooser>,
    /// The workload's instance's key prefix.
    prefix: String,
}

impl Generator {
    fn new(spec: &ProcessSpec, rng: &mut ChaCha8Rng) -> Generator {
        let weights = spec.def.mix.weights().to_vec();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        // Bad requests cycle through the kinds from a point of the process's
        // own random stream (drawn only when the workload sends any, so other
        // scenarios' streams are unchanged).
        let bad_fraction = spec.def.bad_requests;
        let bad_sent = if bad_fraction > 0.0 { rng.random_range(0..BadKind::ALL.len() as u64) } else { 0 };
        let prefix = key_prefix(spec.def.instance.as_deref());
        Generator { process: spec.process, counter: 0, weights, total, bad_fraction, bad_sent, hot: spec.hot, chooser: spec.chooser.clone(), prefix }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng, known: &BTreeMap<String, Option<String>>) -> Next {
        let p = &self.prefix;
        if let Some((hop, lo, hi)) = self.hot {
            let key = format!("{p}{}", key_name(rng.random_range(lo..=hi)));
            return Next::Op(match hop {
                HotOp::Read => Op::Read { key, value: None },
                HotOp::Write => {
                    self.counter += 1;
                    Op::Write { key, value: format!("p{}.{}", self.process, self.counter) }
                }
            });
        }
        let mut x = rng.random::<f64>() * self.total;
        let kind = self.weights.iter().find(|(_, w)| {
            if x < *w {
                true
            } else {
                x -= w;
                false
            }
        }).map(|(k, _)| *k).unwrap_or("read");
        let idx = self.chooser.pick(rng);
        let key = format!("{p}{}", key_name(idx));
        self.counter += 1;
        let value = format!("p{}.{}", self.process, self.counter);
        let op = match kind {
            "write" => Op::Write { key, value },
            "cas" => Op::Cas { expected: known.get(&key).cloned().unwrap_or(None), key, value },
            "delete" => Op::Delete { key },
            "append" => Op::Append { pkey: format!("{p}u{:04}", idx % APPEND_PKEYS), seq: None },
            "scan" => Op::Scan { start: key, end: format!("{p}{}", key_name(idx + 50)), count: None },
            _ => Op::Read { key, value: None },
        };
        if self.bad_fraction > 0.0 && rng.random::<f64>() < self.bad_fraction {
            let req = BadRequest { kind: BadKind::ALL[(self.bad_sent % BadKind::ALL.len() as u64) as usize], variant: self.bad_sent, op: mark(op, self.process, self.counter) };
            self.bad_sent += 1;
            return Next::Bad(req);
        }
        Next::Op(op)
    }
}

/// Learns a key's value from a successful operation (for `cas`).
fn learn(known: &mut BTreeMap<String, Option<String>>, op: &Op) {
    match op {
        Op::Read { key, value } => remember(known, key, value.clone()),
        Op::Write { key, value } | Op::Cas { key, value, .. } => remember(known, key, Some(value.clone())),
        Op::Delete { key } => remember(known, key, None),
        _ => {}
    }
}

/// Runs one client process until its stop time: closed loop (one
/// operation at a time) or, with lanes, open loop.
pub async fn run_process<S: KvService>(world: World, client: S, history: SharedHistory, spec: ProcessSpec, mut rng: ChaCha8Rng) {
    if !spec.lanes.is_empty() {
        return run_open(world, client, history, spec, rng).await;
    }
    let mut next = SimTime::from_duration(spec.start);
    let stop = SimTime::from_duration(spec.stop);
    let mut known: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut gen = Generator::new(&spec, &mut rng);
    loop {
        next = next_arrival(next, spec.rate, &mut rng);
        if next >= stop {
            return;
        }
        time::sleep_until(next).await;
        let op = match gen.next(&mut rng, &known) {
            Next::Op(op) => op,
            Next::Bad(req) => {
                send_bad(&world, &client, spec.process, req).await;
                continue;
            }
        };
        let (op, kind) = execute(&world, &client, &history, spec.process, Phase::Main, op, spec.def.value_size).await;
        if kind == Kind::Ok {
            learn(&mut known, &op);
        }
    }
}

/// The open loop: arrivals on schedule (Poisson at the process's rate,
/// never delayed by answers); each goes out at once on a free lane (a
/// history process of its own), or is shed at the client when every lane
/// has an operation open. `offered` counts arrivals and sheds per second.
async fn run_open<S: KvService>(world: World, client: S, history: SharedHistory, spec: ProcessSpec, mut rng: ChaCha8Rng) {
    let mut next = SimTime::from_duration(spec.start);
    let stop = SimTime::from_duration(spec.stop);
    let known: Arc<std::sync::Mutex<BTreeMap<String, Option<String>>>> = Arc::default();
    let free: Arc<std::sync::Mutex<Vec<u64>>> = Arc::new(std::sync::Mutex::new(spec.lanes.iter().rev().copied().collect()));
    let mut gen = Generator::new(&spec, &mut rng);
    loop {
        let gap = -(1.0 - rng.random::<f64>()).ln() / spec.rate;
        next = next + Duration::from_nanos((gap * 1e9) as u64);
        if next >= stop {
            return;
        }
        time::sleep_until(next).await;
        let lane = free.lock().expect("lanes").pop();
        if let Some(o) = &spec.offered {
            o.arrival(next, lane.is_none());
        }
        let Some(lane) = lane else { continue };
        let next_op = gen.next(&mut rng, &known.lock().expect("known"));
        let (world, client, history, known, free, size) = (world.clone(), client.clone(), history.clone(), known.clone(), free.clone(), spec.def.value_size);
        madsim::task::spawn_local(async move {
            match next_op {
                Next::Bad(req) => send_bad(&world, &client, lane, req).await,
                Next::Op(op) => {
                    let (op, kind) = execute(&world, &client, &history, lane, Phase::Main, op, size).await;
                    if kind == Kind::Ok {
                        learn(&mut known.lock().expect("known"), &op);
                    }
                }
            }
            free.lock().expect("lanes").push(lane);
        });
    }
}

/// The operation with its written values marked as a bad request's.
fn mark(op: Op, process: u64, counter: u64) -> Op {
    let value = format!("{}p{process}.{counter}", badreq::MARKER);
    match op {
        Op::Write { key, .. } => Op::Write { key, value },
        Op::Cas { key, expected, .. } => Op::Cas { key, expected, value },
        other => other,
    }
}

/// Sends one bad request and records it in the event log (not in the
/// history: see [`super::badreq`]).
async fn send_bad<S: KvService>(world: &World, client: &S, process: u64, req: BadRequest) {
    world.record(Event::Client { at: time::now(), process, text: format!("invoke bad {} #{} {}", req.kind.name(), req.variant, req.op.describe()) });
    let answer = client.bad(&req).await;
    world.record(Event::Client { at: time::now(), process, text: format!("bad {} #{} {}", req.kind.name(), req.variant, answer.describe()) });
}

fn remember(known: &mut BTreeMap<String, Option<String>>, key: &str, v: Option<String>) {
    if known.len() >= KNOWN_VALUES_MAX && !known.contains_key(key) {
        let first = known.keys().next().cloned().expect("non-empty");
        known.remove(&first);
    }
    known.insert(key.to_string(), v);
}

/// How a key-value service answered one operation.
pub enum Answer {
    /// It happened: the op with its outputs.
    Ok(Op),
    /// A read happened, served by a cache that may be up to `stale_ns`
    /// behind (see the history's bounded staleness).
    OkStale { done: Op, stale_ns: u64 },
    /// It definitely did not happen (error text).
    Failed(String),
    /// It may or may not have happened (error text).
    Unknown(String),
}

/// A key-value service as the workload drives it: one operation in, its
/// outcome out ([`super::minikv`] and [`super::table`] implement it).
pub trait KvService: Clone + 'static {
    /// The service's client as one process uses it (a client of its own
    /// where the service tells them apart); the same client by default.
    fn for_process(&self, _process: u64) -> Self {
        self.clone()
    }

    fn call(&self, op: &Op, value_size: u32) -> impl std::future::Future<Output = Answer>;

    /// Sends a request the service must refuse (see [`super::badreq`]).
    /// Only the table store takes bad requests (scenario validation
    /// allows them nowhere else); any other service leaves them unanswered.
    fn bad(&self, req: &BadRequest) -> impl std::future::Future<Output = BadAnswer> {
        let kind = req.kind;
        async move { BadAnswer::Unanswered(format!("this service takes no bad requests ({})", kind.name())) }
    }
}

/// Invokes one operation, records it, and returns it with its outputs.
pub async fn execute<S: KvService>(world: &World, client: &S, history: &SharedHistory, process: u64, phase: Phase, op: Op, size: u32) -> (Op, Kind) {
    invoke(world, history, process, phase, op.clone());
    let (done, kind, error, stale_ns) = match client.call(&op, size).await {
        Answer::Ok(done) => (done, Kind::Ok, None, None),
        Answer::OkStale { done, stale_ns } => (done, Kind::Ok, None, Some(stale_ns)),
        Answer::Failed(e) => (op, Kind::Fail, Some(e), None),
        Answer::Unknown(e) => (op, Kind::Info, Some(e), None),
    };
    complete(world, history, process, done.clone(), kind, error, stale_ns);
    (done, kind)
}

/// Reads back every key the run wrote, retrying each until it answers.
pub async fn final_reads<S: KvService>(world: &World, client: &S, history: &SharedHistory, process: u64, keys: Vec<String>) {
    for key in keys {
        for attempt in 0..FINAL_READ_ATTEMPTS_MAX {
            let (_, kind) = execute(world, client, history, process, Phase::Final, Op::Read { key: key.clone(), value: None }, 0).await;
            if kind == Kind::Ok {
                break;
            }
            time::sleep(Duration::from_millis(10 * u64::from(attempt + 1).min(10))).await;
        }
    }
}
