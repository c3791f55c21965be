//! `curve`: the capacity curve of a scenario's deployment. The scenario is
//! run with every workload's rate multiplied by each step (open loop, so
//! that the offered load does not fall when the store slows down), with
//! its faults and without them; each run gives its goodput, latency,
//! refusals and availability. Past saturation a store that degrades
//! gracefully keeps its goodput near the peak instead of collapsing.
#![allow(clippy::disallowed_methods)] // outside the simulation: threads

use std::process::ExitCode;

use serde::Serialize;

use crate::execute;
use crate::history::{Operation, Outcome, Phase};
use crate::report::measure::latency_of;
use crate::run::RunOptions;
use crate::scenario::Scenario;

/// Steps one curve may have.
pub const CURVE_STEPS_MAX: usize = 32;
/// The largest rate multiplier of a step.
pub const CURVE_MULTIPLIER_MAX: f64 = 256.0;

/// One run of the curve.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Step {
    pub multiplier: f64,
    pub faults: bool,
    /// Operations offered per second (open-loop arrivals).
    pub offered_per_s: f64,
    /// Successful operations per second (goodput).
    pub ok_per_s: f64,
    pub p50: String,
    pub p99: String,
    /// Operations that failed `busy` (the client gave up retrying).
    pub busy_refused: u64,
    /// Requests the store refused at once for lack of CPU (proxies and
    /// servers; a client retries them).
    pub store_refusals: u64,
    /// Arrivals shed at the client (every lane busy).
    pub shed_at_client: u64,
    pub availability: f64,
    /// Goodput before the first fault and from 10 s after healing.
    pub ok_per_s_before: f64,
    pub ok_per_s_recovered: Option<f64>,
}

/// The scenario at `m` times its rate, open loop, with or without faults.
pub fn scaled(scn: &Scenario, m: f64, faults: bool) -> Scenario {
    let mut s = scn.clone();
    for w in &mut s.workloads {
        w.rate *= m;
        w.open_loop = true;
    }
    if !faults {
        s.faults.clear();
    }
    s
}

/// Runs one step and measures it.
pub fn step(scn: &Scenario, m: f64, faults: bool, seed: u64) -> Result<Step, String> {
    let s = scaled(scn, m, faults);
    let done = execute::execute(&s, seed, &RunOptions::default()).map_err(|e| e.to_string())?;
    let ops: Vec<Operation<'_>> = done.output.history.operations();
    let main: Vec<&Operation<'_>> = ops.iter().filter(|o| o.phase == Phase::Main).collect();
    let ok: Vec<u64> = main.iter().filter(|o| o.outcome == Outcome::Ok).filter_map(|o| o.complete_ns.map(|c| c - o.invoke_ns)).collect();
    let busy = main.iter().filter(|o| o.outcome == Outcome::Fail && o.error.is_some_and(|e| e.starts_with(crate::check::liveness::BUSY))).count() as u64;
    let span = s.duration.as_secs_f64();
    let lat = latency_of(ok.clone());
    let load = done.report.load.clone();
    let ok_at: Vec<u64> = main.iter().filter(|o| o.outcome == Outcome::Ok).map(|o| o.invoke_ns).collect();
    let rate = |from: u64, to: u64| if to > from { ok_at.iter().filter(|&&t| t >= from && t < to).count() as f64 / ((to - from) as f64 / 1e9) } else { 0.0 };
    let first = s.faults.first().map_or(done.output.main_end.0, |f| done.output.main_start.0 + f.at.as_nanos() as u64);
    let from = done.output.heal_at.0 + crate::report::RECOVERY_WINDOW_DEFAULT.as_nanos() as u64;
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    Ok(Step {
        multiplier: m,
        faults,
        offered_per_s: load.as_ref().map_or(0.0, |l| l.offered_per_s),
        ok_per_s: r1(ok.len() as f64 / span),
        p50: lat.p50.clone(),
        p99: lat.p99.clone(),
        busy_refused: busy,
        store_refusals: done.report.resources.iter().map(|r| r.refused).sum(),
        shed_at_client: load.as_ref().map_or(0, |l| l.shed_at_client),
        availability: done.report.availability.overall,
        ok_per_s_before: r1(rate(done.output.workloads_start().0, first)),
        ok_per_s_recovered: (faults && !s.faults.is_empty() && from < done.output.main_end.0).then(|| r1(rate(from, done.output.main_end.0))),
    })
}

/// Parses `1,2,4` into multipliers.
pub fn parse_steps(s: &str) -> Result<Vec<f64>, String> {
    let v: Vec<f64> = s.split(',').map(|x| x.trim().trim_end_matches('x').parse::<f64>().map_err(|_| format!("`{x}` is not a rate multiplier"))).collect::<Result<_, _>>()?;
    if v.is_empty() || v.len() > CURVE_STEPS_MAX {
        return Err(format!("give 1 to {CURVE_STEPS_MAX} multipliers"));
    }
    if let Some(bad) = v.iter().find(|m| !(m.is_finite() && **m > 0.0 && **m <= CURVE_MULTIPLIER_MAX)) {
        return Err(format!("{bad} is not a multiplier in (0, {CURVE_MULTIPLIER_MAX}]"));
    }
    Ok(v)
}

/// The curve as a table.
pub fn table(steps: &[Step]) -> String {
    let mut s = String::from("| rate | faults | offered/s | ok/s | p50 | p99 | store refusals | failed busy | shed at client | availability | ok/s before | ok/s from heal + 10 s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for x in steps {
        s += &format!(
            "| {}x | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {:.4} | {:.1} | {} |\n",
            x.multiplier,
            if x.faults { "yes" } else { "no" },
            x.offered_per_s,
            x.ok_per_s,
            x.p50,
            x.p99,
            x.store_refusals,
            x.busy_refused,
            x.shed_at_client,
            x.availability,
            x.ok_per_s_before,
            x.ok_per_s_recovered.map_or("-".to_string(), |r| format!("{r:.1}"))
        );
    }
    s
}

/// Every step, with and/or without the faults, `jobs` runs at a time; the
/// steps in plan order (each rate without, then with, the faults).
pub fn run(scn: &Scenario, steps: &[f64], with: bool, without: bool, seed: u64, jobs: usize) -> Result<Vec<Step>, String> {
    let mut plan: Vec<(f64, bool)> = Vec::new();
    for &m in steps {
        if without {
            plan.push((m, false));
        }
        if with {
            plan.push((m, true));
        }
    }
    let results = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..jobs.max(1) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(m, f)) = plan.get(i) else { return };
                let r = step(scn, m, f, seed);
                results.lock().expect("results").push((i, r));
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    results
        .into_iter()
        .map(|(i, r)| {
            let (m, f) = plan[i];
            r.map_err(|e| format!("step {m}x (faults {f}): {e}"))
        })
        .collect()
}

/// What a curve says about collapse and recovery.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct CurveGoals {
    /// The highest goodput of a step without faults, and its rate.
    pub peak_ok_per_s: f64,
    pub peak_at: f64,
    /// The lowest goodput of a step without faults past the peak, over the
    /// peak (1.0 when no step lies past it): no congestion collapse keeps
    /// it near 1.
    pub past_peak_worst_ratio: f64,
    /// The lowest ratio over the steps with faults of the goodput from
    /// 10 s after healing to the goodput before the first fault.
    pub recovered_worst_ratio: Option<f64>,
}

/// The goals of `steps` (see [`CurveGoals`]).
pub fn goals(steps: &[Step]) -> CurveGoals {
    let quiet: Vec<&Step> = steps.iter().filter(|s| !s.faults).collect();
    let peak = quiet.iter().copied().max_by(|a, b| a.ok_per_s.total_cmp(&b.ok_per_s).then(b.multiplier.total_cmp(&a.multiplier)));
    let (peak_ok, peak_at) = peak.map_or((0.0, 0.0), |p| (p.ok_per_s, p.multiplier));
    let past = quiet.iter().filter(|s| s.multiplier > peak_at).map(|s| s.ok_per_s / peak_ok.max(1e-9)).fold(1.0_f64, f64::min);
    let recovered = steps.iter().filter_map(|s| s.ok_per_s_recovered.map(|r| r / s.ok_per_s_before.max(1e-9))).reduce(f64::min);
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    CurveGoals { peak_ok_per_s: peak_ok, peak_at, past_peak_worst_ratio: r3(past), recovered_worst_ratio: recovered.map(r3) }
}

/// `curve`: every step, with and/or without the faults, in parallel.
pub fn command(scn: &Scenario, steps: &[f64], with: bool, without: bool, seed: u64, jobs: usize) -> ExitCode {
    match run(scn, steps, with, without, seed, jobs) {
        Ok(done) => {
            print!("{}", table(&done));
            let g = goals(&done);
            println!(
                "\npeak {:.1} ok/s at {}x; past the peak, goodput at least {} of it; after healing, at least {} of the goodput before the fault",
                g.peak_ok_per_s,
                g.peak_at,
                g.past_peak_worst_ratio,
                g.recovered_worst_ratio.map_or("-".into(), |r| r.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
