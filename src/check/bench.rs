//! Linearizability benchmark: seeded, valid histories checked against the clock.
//!
//! The generator simulates clients against a model store: each operation is
//! invoked, takes effect at one later step (its linearization point, which
//! makes the history valid by construction) and then completes. Some
//! operations end `info`: those take effect or not, and report no result.

use super::linearizable::{self, Budget, KeyVerdict, LinearizableConfig};
use super::verdict::{CheckerReport, Verdict};
use crate::history::{History, Kind, Op, Phase};
use serde::Serialize;
use std::collections::BTreeMap;

/// The headline benchmark shape (Porcupine-style anchor: 1M ops, 10k keys).
pub const BENCH_OPS: u64 = 1_000_000;
pub const BENCH_KEYS: u64 = 10_000;
pub const BENCH_CLIENTS: u64 = 50;
/// Timed runs of the headline check.
pub const BENCH_REPEATS: usize = 3;
/// Share of operations that end `info`, in per mille.
pub const BENCH_INFO_PER_MILLE: u64 = 20;
/// Worst-case single-key shapes tried in order: (concurrent writers, ops).
pub const WORST_CASE_SHAPES: [(u64, u64); 8] =
    [(4, 400), (8, 800), (16, 1600), (32, 3200), (64, 6400), (128, 12800), (256, 25600), (512, 51200)];
/// Share of `info` operations in the worst-case histories, in per mille.
pub const WORST_CASE_INFO_PER_MILLE: u64 = 100;

/// Figures of one worst-case single-key run.
#[derive(Clone, Debug, Serialize)]
pub struct WorstCase {
    pub writers: u64,
    pub ops: u64,
    pub info_ops: u64,
    pub verdict: Verdict,
    pub search_steps: u64,
    pub search_configurations: u64,
    pub check_ms: f64,
}

/// What `tablesim bench` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchFigures {
    pub seed: u64,
    pub ops: u64,
    pub keys: u64,
    pub clients: u64,
    pub info_ops: u64,
    pub generate_ms: f64,
    /// Best of `BENCH_REPEATS` runs (history -> operations -> verdict).
    pub check_ms: f64,
    /// The first (cold) run.
    pub check_ms_first: f64,
    /// Best CPU time of this thread over the runs (Linux only; 10 ms ticks):
    /// what one core costs even when the machine is shared.
    pub check_cpu_ms: Option<f64>,
    pub verdict: Verdict,
    pub search_steps: u64,
    pub budget_steps_per_key: u64,
    pub budget_configurations_per_key: u64,
    pub worst_case: Vec<WorstCase>,
    /// Operations in the largest worst-case history decided within the budget.
    pub worst_case_decided_ops_max: u64,
}

/// SplitMix64: a tiny seeded generator, enough for workload shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Shape of a generated history.
#[derive(Clone, Copy, Debug)]
pub struct GenShape {
    pub ops: u64,
    pub keys: u64,
    pub clients: u64,
    pub info_per_mille: u64,
    /// Percent of reads among operations.
    pub read_percent: u64,
    /// Percent of auto-increment appends (the rest: writes, cas, deletes).
    pub append_percent: u64,
    /// After the main phase, read every key once in the final phase.
    pub final_reads: bool,
}

enum Client {
    Idle,
    /// Invoked; `result` is set once the op took effect (or was dropped).
    Pending { op: Op, info: bool, result: Option<Option<Op>> },
}

/// Generates a valid history (see the module header). Deterministic in `seed`.
pub fn generate(seed: u64, shape: GenShape) -> (History, u64) {
    let mut rng = Rng(seed);
    let mut history = History::new();
    let mut clients: Vec<Client> = (0..shape.clients).map(|_| Client::Idle).collect();
    let mut store: BTreeMap<u64, String> = BTreeMap::new();
    // Last value handed out per partition key of appends.
    let mut counters: BTreeMap<u64, u64> = BTreeMap::new();
    let mut time_ns = 0u64;
    let (mut invoked, mut done, mut info_ops, mut value_id) = (0u64, 0u64, 0u64, 0u64);
    while done < shape.ops {
        time_ns += 1 + rng.below(1_000);
        let c = rng.below(shape.clients) as usize;
        let process = c as u64;
        match &mut clients[c] {
            Client::Idle => {
                if invoked == shape.ops {
                    continue;
                }
                invoked += 1;
                let k = rng.below(shape.keys);
                let key = format!("k{k}");
                let roll = rng.below(100);
                let op = if roll < shape.read_percent {
                    Op::Read { key, value: None }
                } else if roll < shape.read_percent + shape.append_percent {
                    Op::Append { pkey: format!("p{k}"), seq: None }
                } else {
                    value_id += 1;
                    let value = format!("v{value_id}");
                    match rng.below(10) {
                        0..=5 => Op::Write { key, value },
                        6..=8 => Op::Cas { key, expected: store.get(&k).cloned(), value },
                        _ => Op::Delete { key },
                    }
                };
                let info = rng.below(1_000) < shape.info_per_mille;
                history.invoke(process, time_ns, op.clone(), Phase::Main);
                clients[c] = Client::Pending { op, info, result: None };
            }
            Client::Pending { op, info, result: result @ None } => {
                // Take effect now: the linearization point. An info op may be dropped.
                if *info && rng.below(2) == 0 {
                    *result = Some(None);
                    continue;
                }
                let name = match op {
                    Op::Append { pkey, .. } => pkey.as_str(),
                    _ => op.register_key().unwrap_or("k0"),
                };
                let k: u64 = name[1..].parse().unwrap_or(0);
                let op: &Op = op;
                let outcome = match op {
                    Op::StreamOpen { .. } | Op::StreamAppend { .. } | Op::StreamRead { .. } => None,
                    Op::Read { key, .. } => Some(Op::Read { key: key.clone(), value: store.get(&k).cloned() }),
                    Op::Write { value, .. } => {
                        store.insert(k, value.clone());
                        Some(op.clone())
                    }
                    Op::Cas { expected, value, .. } => {
                        if store.get(&k) == expected.as_ref() {
                            store.insert(k, value.clone());
                            Some(op.clone())
                        } else {
                            None
                        }
                    }
                    Op::Delete { .. } => {
                        store.remove(&k);
                        Some(op.clone())
                    }
                    Op::Append { pkey, .. } => {
                        let seq = counters.entry(k).or_insert(0);
                        *seq += 1;
                        Some(Op::Append { pkey: pkey.clone(), seq: Some(*seq) })
                    }
                    Op::Scan { .. } => Some(op.clone()),
                };
                *result = Some(outcome);
            }
            Client::Pending { op, info, result: Some(outcome) } => {
                let (kind, completed) = if *info {
                    (Kind::Info, op.clone())
                } else {
                    match outcome.take() {
                        Some(done_op) => (Kind::Ok, done_op),
                        None => (Kind::Fail, op.clone()),
                    }
                };
                if kind == Kind::Info {
                    info_ops += 1;
                }
                history.complete(process, time_ns, kind, completed, None);
                clients[c] = Client::Idle;
                done += 1;
            }
        }
    }
    if shape.final_reads {
        // Every client is idle here: the main loop ends when all ops completed.
        for k in 0..shape.keys {
            time_ns += 1 + rng.below(1_000);
            let key = format!("k{k}");
            history.invoke(0, time_ns, Op::Read { key: key.clone(), value: None }, Phase::Final);
            time_ns += 1 + rng.below(1_000);
            let value = store.get(&k).cloned();
            history.complete(0, time_ns, Kind::Ok, Op::Read { key, value }, None);
        }
    }
    (history, info_ops)
}

/// Generates and checks the headline history, then worst-case single-key
/// histories of growing concurrency until one is undecided within the budget.
// Measuring wall time is the point of a benchmark; this runs outside the
// simulation, from the CLI only.
#[allow(clippy::disallowed_methods)]
pub fn bench_linearizability(seed: u64, ops: u64, budget: Budget) -> BenchFigures {
    use std::time::Instant;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let config = LinearizableConfig { budget, ..LinearizableConfig::default() };

    let t = Instant::now();
    let shape = GenShape {
        ops,
        keys: BENCH_KEYS,
        clients: BENCH_CLIENTS,
        info_per_mille: BENCH_INFO_PER_MILLE,
        read_percent: 50,
        append_percent: 0,
        final_reads: false,
    };
    let (history, info_ops) = generate(seed, shape);
    let generate_ms = ms(t);
    // The first run pays for fresh pages; later ones show the steady state. Both
    // are reported, since the machine may be shared.
    let mut runs_ms = Vec::with_capacity(BENCH_REPEATS);
    let mut cpu_ms = Vec::with_capacity(BENCH_REPEATS);
    let mut report = None;
    for _ in 0..BENCH_REPEATS {
        let cpu = thread_cpu_ms();
        let t = Instant::now();
        report = Some(linearizable::check(&history.operations(), &config));
        runs_ms.push(ms(t));
        if let (Some(before), Some(after)) = (cpu, thread_cpu_ms()) {
            cpu_ms.push(after - before);
        }
    }
    let check_cpu_ms = cpu_ms.iter().copied().reduce(f64::min);
    let report = report.unwrap_or_else(|| CheckerReport::new(Verdict::Unknown));
    let check_ms_first = runs_ms.first().copied().unwrap_or(0.0);
    let check_ms = runs_ms.iter().copied().fold(f64::INFINITY, f64::min);
    drop(history);

    let mut worst_case = Vec::new();
    let mut decided_max = 0u64;
    for (writers, wops) in WORST_CASE_SHAPES {
        let shape = GenShape {
            ops: wops,
            keys: 1,
            clients: writers,
            info_per_mille: WORST_CASE_INFO_PER_MILLE,
            read_percent: 40,
            append_percent: 0,
            final_reads: false,
        };
        let (h, info) = generate(seed ^ writers, shape);
        let all = h.operations();
        let members: Vec<usize> = (0..all.len()).collect();
        let t = Instant::now();
        let r = linearizable::check_key(&all, &members, budget);
        let verdict = match r.verdict {
            KeyVerdict::Linearizable => Verdict::Pass,
            KeyVerdict::NotLinearizable => Verdict::Fail,
            KeyVerdict::Unknown => Verdict::Unknown,
        };
        worst_case.push(WorstCase {
            writers,
            ops: wops,
            info_ops: info,
            verdict,
            search_steps: r.steps,
            search_configurations: r.configurations,
            check_ms: ms(t),
        });
        if verdict == Verdict::Unknown {
            break;
        }
        decided_max = wops;
    }

    BenchFigures {
        seed,
        ops,
        keys: BENCH_KEYS,
        clients: BENCH_CLIENTS,
        info_ops,
        generate_ms,
        check_ms,
        check_ms_first,
        check_cpu_ms,
        verdict: report.verdict,
        search_steps: report.counts.get("search_steps").copied().unwrap_or(0),
        budget_steps_per_key: budget.steps_max,
        budget_configurations_per_key: budget.configurations_max,
        worst_case,
        worst_case_decided_ops_max: decided_max,
    }
}

/// CPU time this thread has used, from /proc/thread-self/stat (user + system
/// ticks, fields 14 and 15; the kernel's USER_HZ is 100 on every mainstream
/// Linux). `None` elsewhere.
// Reads a real /proc file: benchmark only, outside the simulation.
#[allow(clippy::disallowed_methods)]
fn thread_cpu_ms() -> Option<f64> {
    /// Clock ticks per second of /proc times (USER_HZ).
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 sit at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000.0 / USER_HZ)
}
