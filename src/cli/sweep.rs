//! `sweep` over several scenario files and one seed range, optionally one
//! shard of it (`--shard K/N`), with a results file (`--results`) and JUnit
//! XML (`--junit`); `merge` joins the results of every shard into one
//! summary, results file and JUnit file, refusing shards that are missing,
//! repeated, from another sweep, or not holding exactly their cases.
//!
//! The (scenario, seed) pairs of a sweep are numbered scenario by scenario,
//! seeds ascending: pair `i` is the scenario `i / S` (S seeds each) at seed
//! `A + i % S`. Shard `K` of `N` runs the pairs with `i % N == K - 1`, so the
//! shards interleave through every scenario and their union is the sweep.
#![allow(clippy::disallowed_methods)] // outside the simulation: real files, environment, wall clock

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::execute;
use crate::run::RunOptions;
use crate::scenario::limits::shown;
use crate::scenario::Scenario;

/// The most shards a sweep may be split into.
pub const SHARDS_MAX: u64 = 100_000;
/// The most scenario files one sweep takes.
pub const SWEEP_SCENARIOS_MAX: usize = 1_000;
/// The most cases a results or JUnit file records (each takes a few hundred
/// bytes in memory and on disk); a larger sweep without these files keeps
/// only its failures.
pub const RECORDED_CASES_MAX: u64 = 1_000_000;
/// The largest results file `merge` reads.
pub const RESULTS_BYTES_MAX: u64 = 1 << 30;
/// The most results files `merge` joins.
pub const MERGE_FILES_MAX: usize = SHARDS_MAX as usize;
/// What a results file declares itself to be.
pub const RESULTS_FORMAT: &str = "tablesim-sweep/1";

/// One shard of a sweep, `k` counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub k: u64,
    pub n: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { k: 1, n: 1 };

    fn new(k: u64, n: u64) -> Result<Shard, String> {
        if !(1..=SHARDS_MAX).contains(&n) {
            return Err(format!("a sweep splits into 1 to {SHARDS_MAX} shards, not {n}"));
        }
        if !(1..=n).contains(&k) {
            return Err(format!("shard {k} of {n}: the shard is counted from 1 to {n}"));
        }
        Ok(Shard { k, n })
    }

    /// The pairs of `total` this shard runs.
    fn count(self, total: u128) -> u128 {
        let first = u128::from(self.k - 1);
        if total <= first {
            0
        } else {
            (total - first).div_ceil(u128::from(self.n))
        }
    }

    /// The sweep's pair index of this shard's `j`-th pair.
    fn pair(self, j: u128) -> u128 {
        j * u128::from(self.n) + u128::from(self.k - 1)
    }

    fn holds(self, i: u128) -> bool {
        i % u128::from(self.n) == u128::from(self.k - 1)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// `--shard`: `K/N`, or `env` / `env/N` to read the index (and the count)
/// from the job runner's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardArg {
    Fixed(Shard),
    FromEnv { n: Option<u64> },
}

pub fn parse_shard(s: &str) -> Result<ShardArg, String> {
    let bad = || format!("`{}` is not a shard: K/N (e.g. 2/8), env/N or env", shown(s));
    let (k, n) = match s.trim().split_once('/') {
        Some((k, n)) => (k.trim(), Some(n.trim())),
        None => (s.trim(), None),
    };
    let n = match n {
        Some(n) => Some(n.parse::<u64>().map_err(|_| bad())?),
        None => None,
    };
    if k == "env" {
        if let Some(n) = n {
            Shard::new(1, n)?;
        }
        return Ok(ShardArg::FromEnv { n });
    }
    let (k, n) = (k.parse::<u64>().map_err(|_| bad())?, n.ok_or_else(bad)?);
    Ok(ShardArg::Fixed(Shard::new(k, n)?))
}

/// Where a shard's index may come from: the variable, whether it counts
/// from 0, and the variable giving the count of shards beside it.
const SHARD_INDEX_VARS: &[(&str, bool, Option<&str>)] = &[
    // A Kubernetes Indexed Job: the completion index, from 0.
    ("JOB_COMPLETION_INDEX", true, None),
    // GitLab CI `parallel:`, from 1.
    ("CI_NODE_INDEX", false, Some("CI_NODE_TOTAL")),
    // CircleCI `parallelism`, from 0.
    ("CIRCLE_NODE_INDEX", true, Some("CIRCLE_NODE_TOTAL")),
    // Buildkite `parallelism`, from 0.
    ("BUILDKITE_PARALLEL_JOB", true, Some("BUILDKITE_PARALLEL_JOB_COUNT")),
];

/// Resolves `--shard`. `TABLESIM_SHARD` (`K/N`, e.g. set from a CI matrix)
/// comes first, then the runners' own variables in the order above; `env/N`
/// gives the count where the runner has no variable for it (Kubernetes).
/// Returns the shard and where it came from.
pub fn resolve_shard(arg: ShardArg, env: impl Fn(&str) -> Option<String>) -> Result<(Shard, String), String> {
    let n_arg = match arg {
        ShardArg::Fixed(s) => return Ok((s, "--shard".into())),
        ShardArg::FromEnv { n } => n,
    };
    if let Some(v) = env("TABLESIM_SHARD") {
        let ShardArg::Fixed(s) = parse_shard(&v).map_err(|e| format!("TABLESIM_SHARD: {e}"))? else {
            return Err(format!("TABLESIM_SHARD: `{}` must be K/N", shown(&v)));
        };
        if n_arg.is_some_and(|n| n != s.n) {
            return Err(format!("TABLESIM_SHARD says {s} but --shard says {} shards", n_arg.unwrap_or(0)));
        }
        return Ok((s, "TABLESIM_SHARD".into()));
    }
    for &(var, from_zero, total_var) in SHARD_INDEX_VARS {
        let Some(v) = env(var) else { continue };
        let index: u64 = v.trim().parse().map_err(|_| format!("{var}: `{}` is not a shard index", shown(&v)))?;
        let k = if from_zero { index.checked_add(1) } else { Some(index) }.ok_or_else(|| format!("{var}: {index} is out of range"))?;
        let total = match total_var.and_then(&env) {
            Some(t) => Some(t.trim().parse::<u64>().map_err(|_| format!("{}: `{}` is not a count of shards", total_var.unwrap_or(""), shown(&t)))?),
            None => None,
        };
        let n = match (n_arg, total) {
            (Some(a), Some(b)) if a != b => return Err(format!("--shard env/{a} but {} is {b}", total_var.unwrap_or(""))),
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => return Err(format!("{var} gives the shard's index but nothing gives the count of shards: use --shard env/N")),
        };
        return Shard::new(k, n).map(|s| (s, var.to_string())).map_err(|e| format!("{var}: {e}"));
    }
    let names: Vec<&str> = std::iter::once("TABLESIM_SHARD").chain(SHARD_INDEX_VARS.iter().map(|v| v.0)).collect();
    Err(format!("--shard env: none of {} is set", names.join(", ")))
}

/// A scenario of the sweep, as a results file names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioRef {
    pub name: String,
    pub file: String,
    /// A stable hash of the file's bytes: shards that ran different
    /// versions of a file do not merge.
    pub fingerprint: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// An expectation failed.
    Fail,
    /// The run could not be made (a panic, a run error).
    Error,
}

/// One (scenario, seed) of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Index into the sweep's scenarios.
    pub scenario: usize,
    pub seed: u64,
    pub outcome: Outcome,
    /// The failed expectations, or the error.
    pub why: Vec<String>,
    /// The report's digest (none for an error).
    pub digest: Option<String>,
    pub replay: String,
    /// Wall-clock seconds of the run (the only field that differs between
    /// two sweeps of the same pairs).
    pub seconds: f64,
}

/// What `--results` writes and `merge` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepResults {
    pub format: String,
    pub scenarios: Vec<ScenarioRef>,
    /// The seed range `[A, B)`.
    pub seeds: (u64, u64),
    pub shard: Shard,
    /// Sorted by scenario, then seed.
    pub cases: Vec<Case>,
}

impl SweepResults {
    fn seeds_per_scenario(&self) -> u64 {
        self.seeds.1 - self.seeds.0
    }

    fn total(&self) -> u128 {
        self.scenarios.len() as u128 * u128::from(self.seeds_per_scenario())
    }

    fn index(&self, c: &Case) -> u128 {
        c.scenario as u128 * u128::from(self.seeds_per_scenario()) + u128::from(c.seed - self.seeds.0)
    }

    fn failures(&self) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(|c| c.outcome != Outcome::Pass)
    }

    /// Prints the per-scenario counts and every failure with its replay.
    fn print_summary(&self) {
        for (si, s) in self.scenarios.iter().enumerate() {
            let cases: Vec<&Case> = self.cases.iter().filter(|c| c.scenario == si).collect();
            let failed = cases.iter().filter(|c| c.outcome != Outcome::Pass).count();
            println!("{} seeds of {}: {} passed, {} failed", cases.len(), s.name, cases.len() - failed, failed);
        }
        for c in self.failures() {
            println!("  {} seed {:<8} {}\n           replay: {}", self.scenarios[c.scenario].name, c.seed, c.why.join("; "), c.replay);
        }
    }

    /// The results as JUnit XML: a test suite per scenario, a test case per
    /// seed, failures carrying the failed expectations and the replay.
    pub fn junit(&self) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let fails = self.cases.iter().filter(|c| c.outcome == Outcome::Fail).count();
        let errors = self.cases.iter().filter(|c| c.outcome == Outcome::Error).count();
        let time: f64 = self.cases.iter().map(|c| c.seconds).sum();
        let _ = writeln!(x, "<testsuites name=\"tablesim sweep\" tests=\"{}\" failures=\"{fails}\" errors=\"{errors}\" time=\"{time:.3}\">", self.cases.len());
        for (si, s) in self.scenarios.iter().enumerate() {
            let cases: Vec<&Case> = self.cases.iter().filter(|c| c.scenario == si).collect();
            let f = cases.iter().filter(|c| c.outcome == Outcome::Fail).count();
            let e = cases.iter().filter(|c| c.outcome == Outcome::Error).count();
            let t: f64 = cases.iter().map(|c| c.seconds).sum();
            let _ = writeln!(x, "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{e}\" time=\"{t:.3}\">", xml(&s.name), cases.len());
            let _ = writeln!(x, "    <properties><property name=\"file\" value=\"{}\"/><property name=\"shard\" value=\"{}\"/></properties>", xml(&s.file), self.shard);
            for c in cases {
                let _ = write!(x, "    <testcase classname=\"tablesim.{}\" name=\"seed {}\" file=\"{}\" time=\"{:.3}\"", xml(&s.name), c.seed, xml(&s.file), c.seconds);
                let body = format!("{}\nreplay: {}", c.why.join("\n"), c.replay);
                match c.outcome {
                    Outcome::Pass => {
                        let _ = writeln!(x, "/>");
                    }
                    Outcome::Fail => {
                        let _ = writeln!(x, ">\n      <failure type=\"expectations\" message=\"{}\">{}</failure>\n    </testcase>", xml(&c.why.join("; ")), xml(&body));
                    }
                    Outcome::Error => {
                        let _ = writeln!(x, ">\n      <error type=\"run\" message=\"{}\">{}</error>\n    </testcase>", xml(&c.why.join("; ")), xml(&body));
                    }
                }
            }
            x.push_str("  </testsuite>\n");
        }
        x.push_str("</testsuites>\n");
        x
    }
}

/// Escapes text for an XML attribute or element; characters XML 1.0 cannot
/// hold at all become U+FFFD.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn replay_command(path: &Path, seed: u64) -> String {
    format!("cargo run --release -- run {} --seed {seed}", path.display())
}

/// What `sweep` was asked for.
pub struct SweepArgs {
    pub scenarios: Vec<PathBuf>,
    pub seeds: (u64, u64),
    pub jobs: Option<usize>,
    pub shard: Option<ShardArg>,
    pub junit: Option<PathBuf>,
    pub results: Option<PathBuf>,
    /// Each seed draws its faults and rates ([`super::swarm`]).
    pub swarm: bool,
}

/// Writes `text` to `path`, making its folder.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// Refuses an output path that cannot be written, before anything runs.
fn check_writable(flag: &str, path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{flag} {}: is a folder", path.display()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{flag} {}: cannot make its folder: {e}", path.display()))?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    Ok(())
}

/// `sweep`: every (scenario, seed) pair of this shard in parallel.
pub fn sweep(args: SweepArgs) -> ExitCode {
    let bad = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    if args.scenarios.is_empty() || args.scenarios.len() > SWEEP_SCENARIOS_MAX {
        return bad(format!("a sweep takes 1 to {SWEEP_SCENARIOS_MAX} scenario files, not {}", args.scenarios.len()));
    }
    let shard = match args.shard.map(|a| resolve_shard(a, |v| std::env::var(v).ok())) {
        None => Shard::WHOLE,
        Some(Ok((s, from))) => {
            if from != "--shard" {
                eprintln!("shard {s} (from {from})");
            }
            s
        }
        Some(Err(e)) => return bad(e),
    };
    // Each scenario with its file's text (a swarm draws from the text).
    let mut loaded: Vec<(PathBuf, Scenario, String)> = Vec::new();
    let mut refs = Vec::new();
    for p in &args.scenarios {
        let bytes = match crate::scenario::read_capped(p, crate::scenario::SCENARIO_BYTES_MAX as u64) {
            Ok(b) => b,
            Err(e) => return bad(format!("{}: cannot read the scenario file: {e}", p.display())),
        };
        let scn = match crate::parse_scenario(p, &bytes) {
            Ok(s) => s,
            Err(e) => return bad(e.to_string()),
        };
        if let Some(i) = refs.iter().position(|r: &ScenarioRef| r.name == scn.name) {
            return bad(format!("{} and {} both name the scenario `{}`: each scenario of a sweep needs its own name", refs[i].file, p.display(), shown(&scn.name)));
        }
        refs.push(ScenarioRef { name: scn.name.clone(), file: p.display().to_string(), fingerprint: format!("{:016x}", sim::log::hash_bytes(&bytes)) });
        loaded.push((p.clone(), scn, String::from_utf8_lossy(&bytes).into_owned()));
    }
    let (a, b) = args.seeds;
    let per = u128::from(b - a);
    let total = loaded.len() as u128 * per;
    let count = shard.count(total);
    let record = args.junit.is_some() || args.results.is_some();
    if record && count > u128::from(RECORDED_CASES_MAX) {
        return bad(format!("this shard has {count} cases; --junit and --results record at most {RECORDED_CASES_MAX} (use more shards or fewer seeds)"));
    }
    let Ok(count) = u64::try_from(count) else {
        return bad(format!("this shard has {count} cases, more than one sweep can count"));
    };
    for (flag, p) in [("--junit", &args.junit), ("--results", &args.results)] {
        if let Some(p) = p {
            if let Err(e) = check_writable(flag, p) {
                return bad(e);
            }
        }
    }
    let loaded = Arc::new(loaded);
    let cases: Arc<Mutex<Vec<Case>>> = Arc::new(Mutex::new(Vec::new()));
    let tally: Arc<Mutex<super::swarm::VerbTally>> = Arc::default();
    let (l, cs, t) = (loaded.clone(), cases.clone(), tally.clone());
    let n_scenarios = loaded.len();
    let swarm = args.swarm;
    let failed = super::runs::run_in_parallel(count, args.jobs, move |j| {
        let i = shard.pair(u128::from(j));
        let (si, seed) = ((i / per) as usize, a + (i % per) as u64);
        let (path, scn, text) = &l[si];
        let started = std::time::Instant::now();
        // A swarm case runs its own draw, written to disk only if it fails.
        let dest = PathBuf::from(format!("target/tablesim/swarm/{}-swarm-{seed}.toml", scn.name));
        let drawn = if swarm { Some(super::swarm::draw_scenario(text, scn, seed, &dest)) } else { None };
        let (run_scn, replay_path) = match &drawn {
            Some(Ok((d, _))) => (d, dest.as_path()),
            _ => (scn, path.as_path()),
        };
        let ran = match &drawn {
            Some(Err(e)) => Err(format!("swarm: {e}")),
            _ => execute::execute(run_scn, seed, &RunOptions::default()).map_err(|e| e.to_string()),
        };
        let (outcome, why, digest) = match ran {
            Ok(d) => {
                if swarm {
                    t.lock().expect("tally").add(d.report.faults.iter().filter(|f| f.effect.is_some()).map(|f| (f.fault.as_str(), !f.inert)));
                }
                if d.report.pass {
                    (Outcome::Pass, Vec::new(), Some(d.report.digest.clone()))
                } else {
                    (Outcome::Fail, d.report.expectations.iter().filter(|e| !e.pass).map(|e| format!("{} {} (expected {})", e.name, e.measured, e.expected)).collect(), Some(d.report.digest.clone()))
                }
            }
            Err(e) => (Outcome::Error, vec![e], None),
        };
        if let (Some(Ok((_, toml))), true) = (&drawn, outcome != Outcome::Pass) {
            if let Err(e) = super::swarm::write_draw(&dest, toml) {
                eprintln!("warning: {e}: the failing draw of seed {seed} is not kept");
            }
        }
        let case = Case { scenario: si, seed, outcome, why, digest, replay: replay_command(replay_path, seed), seconds: started.elapsed().as_secs_f64() };
        let failed = (outcome != Outcome::Pass).then(|| if n_scenarios > 1 { format!("{} seed {seed}", scn.name) } else { format!("seed {seed}") });
        if record || outcome != Outcome::Pass {
            cs.lock().expect("cases").push(case);
        }
        failed
    })
    .len();
    let mut cases = std::mem::take(&mut *cases.lock().expect("cases"));
    cases.sort_by_key(|c| (c.scenario, c.seed));
    let results = SweepResults { format: RESULTS_FORMAT.into(), scenarios: refs, seeds: (a, b), shard, cases };
    if shard != Shard::WHOLE {
        println!("shard {shard}: {count} of {total} (scenario, seed) pairs");
    }
    // Without recorded passes, the counts come from the shard's arithmetic.
    for (si, s) in results.scenarios.iter().enumerate() {
        let ran = shard.count((si as u128 + 1) * per) - shard.count(si as u128 * per);
        let failed = results.cases.iter().filter(|c| c.scenario == si && c.outcome != Outcome::Pass).count() as u128;
        if n_scenarios == 1 || ran > 0 {
            println!("{ran} seeds of {}: {} passed, {failed} failed", s.name, ran - failed);
        }
    }
    for c in results.failures() {
        println!("  {} seed {:<8} {}\n           replay: {}", results.scenarios[c.scenario].name, c.seed, c.why.join("; "), c.replay);
    }
    debug_assert_eq!(failed, results.failures().count());
    if swarm {
        println!("swarm: how often each drawn verb had an effect");
        for l in tally.lock().expect("tally").lines() {
            println!("{l}");
        }
    }
    if let Err(e) = write_outputs(&results, args.junit.as_deref(), args.results.as_deref()) {
        return bad(e);
    }
    ExitCode::from(if results.failures().next().is_none() { 0 } else { 1 })
}

fn write_outputs(results: &SweepResults, junit: Option<&Path>, out: Option<&Path>) -> Result<(), String> {
    if let Some(p) = junit {
        write_file(p, &results.junit()).map_err(|e| format!("--junit {}: {e}", p.display()))?;
        println!("  junit: {}", p.display());
    }
    if let Some(p) = out {
        let text = serde_json::to_string(results).map_err(|e| format!("--results: {e}"))? + "\n";
        write_file(p, &text).map_err(|e| format!("--results {}: {e}", p.display()))?;
        println!("  results: {}", p.display());
    }
    Ok(())
}

/// Reads one results file: JSON of the current format, whose cases are
/// exactly its shard's.
pub fn read_results(path: &Path) -> Result<SweepResults, String> {
    let bytes = crate::scenario::read_capped(path, RESULTS_BYTES_MAX).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > RESULTS_BYTES_MAX {
        return Err(format!("{}: over {RESULTS_BYTES_MAX} bytes", path.display()));
    }
    let r: SweepResults = serde_json::from_slice(&bytes).map_err(|e| format!("{}:{}:{}: not a sweep's results file: {e}", path.display(), e.line(), e.column()))?;
    if r.format != RESULTS_FORMAT {
        return Err(format!("{}: format `{}`, this tablesim reads `{RESULTS_FORMAT}`", path.display(), shown(&r.format)));
    }
    Shard::new(r.shard.k, r.shard.n).map_err(|e| format!("{}: {e}", path.display()))?;
    if r.seeds.1 <= r.seeds.0 || r.scenarios.is_empty() {
        return Err(format!("{}: an empty sweep", path.display()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &r.cases {
        if c.scenario >= r.scenarios.len() || c.seed < r.seeds.0 || c.seed >= r.seeds.1 {
            return Err(format!("{}: a case (scenario {}, seed {}) outside the sweep", path.display(), c.scenario, c.seed));
        }
        let i = r.index(c);
        if !r.shard.holds(i) {
            return Err(format!("{}: {} seed {} belongs to another shard than {}", path.display(), r.scenarios[c.scenario].name, c.seed, r.shard));
        }
        if !seen.insert(i) {
            return Err(format!("{}: {} seed {} is there twice", path.display(), r.scenarios[c.scenario].name, c.seed));
        }
    }
    let want = r.shard.count(r.total());
    if seen.len() as u128 != want {
        return Err(format!("{}: shard {} holds {} cases of its {want} (written by a sweep without --results, or cut short)", path.display(), r.shard, seen.len()));
    }
    Ok(r)
}

/// Joins the results of every shard of one sweep.
pub fn merge_results(parts: Vec<(PathBuf, SweepResults)>) -> Result<SweepResults, String> {
    let Some((first_path, first)) = parts.first() else {
        return Err("merge takes at least one results file".into());
    };
    let n = first.shard.n;
    let mut by_k: BTreeMap<u64, &Path> = BTreeMap::new();
    for (p, r) in &parts {
        if r.scenarios != first.scenarios || r.seeds != first.seeds || r.shard.n != n {
            return Err(format!("{} and {} are shards of different sweeps (scenarios, file versions, seeds or shard count differ)", first_path.display(), p.display()));
        }
        if let Some(other) = by_k.insert(r.shard.k, p) {
            return Err(format!("{} and {} are both shard {}", other.display(), p.display(), r.shard));
        }
    }
    let missing: Vec<String> = (1..=n).filter(|k| !by_k.contains_key(k)).take(20).map(|k| k.to_string()).collect();
    if !missing.is_empty() {
        return Err(format!("shards missing of {n}: {}{}", missing.join(", "), if n - (by_k.len() as u64) > 20 { ", …" } else { "" }));
    }
    let (scenarios, seeds) = (first.scenarios.clone(), first.seeds);
    let mut cases: Vec<Case> = parts.into_iter().flat_map(|(_, r)| r.cases).collect();
    cases.sort_by_key(|c| (c.scenario, c.seed));
    let merged = SweepResults { format: RESULTS_FORMAT.into(), scenarios, seeds, shard: Shard::WHOLE, cases };
    debug_assert_eq!(merged.cases.len() as u128, merged.total());
    Ok(merged)
}

/// `merge`: the results of every shard into one summary, results file and
/// JUnit file.
pub fn merge(files: Vec<PathBuf>, junit: Option<PathBuf>, out: Option<PathBuf>) -> ExitCode {
    let bad = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    if files.is_empty() || files.len() > MERGE_FILES_MAX {
        return bad(format!("merge takes 1 to {MERGE_FILES_MAX} results files, not {}", files.len()));
    }
    let mut parts = Vec::new();
    for f in files {
        match read_results(&f) {
            Ok(r) => parts.push((f, r)),
            Err(e) => return bad(e),
        }
    }
    let shards = parts.len();
    let merged = match merge_results(parts) {
        Ok(m) => m,
        Err(e) => return bad(e),
    };
    println!("merged {shards} shards: {} (scenario, seed) pairs, none missing or repeated", merged.cases.len());
    merged.print_summary();
    if let Err(e) = write_outputs(&merged, junit.as_deref(), out.as_deref()) {
        return bad(e);
    }
    ExitCode::from(if merged.failures().next().is_none() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_pairs_without_gap_or_overlap() {
        for total in [0u128, 1, 5, 7, 64, 1000] {
            for n in [1u64, 2, 3, 4, 7, 9] {
                let mut all: Vec<u128> = (1..=n).flat_map(|k| {
                    let s = Shard::new(k, n).unwrap();
                    (0..s.count(total)).map(move |j| s.pair(j))
                }).collect();
                assert!(all.iter().all(|&i| i < total));
                all.sort_unstable();
                assert_eq!(all, (0..total).collect::<Vec<_>>(), "total {total} in {n} shards");
            }
        }
    }

    #[test]
    fn shard_arguments_are_read_or_refused() {
        assert_eq!(parse_shard("2/8"), Ok(ShardArg::Fixed(Shard { k: 2, n: 8 })));
        assert_eq!(parse_shard("env"), Ok(ShardArg::FromEnv { n: None }));
        assert_eq!(parse_shard("env/4"), Ok(ShardArg::FromEnv { n: Some(4) }));
        for bad in ["0/8", "9/8", "1/0", "2", "a/b", "", "env/0", "1/100001"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| vars.iter().find(|v| v.0 == k).map(|v| v.1.to_string())
    }

    #[test]
    fn a_shard_reads_its_index_from_the_job_runner() {
        let env = ShardArg::FromEnv { n: None };
        let k8s = ShardArg::FromEnv { n: Some(4) };
        assert_eq!(resolve_shard(k8s, env_of(&[("JOB_COMPLETION_INDEX", "0")])).unwrap().0, Shard { k: 1, n: 4 });
        assert_eq!(resolve_shard(k8s, env_of(&[("JOB_COMPLETION_INDEX", "3")])).unwrap().0, Shard { k: 4, n: 4 });
        assert!(resolve_shard(k8s, env_of(&[("JOB_COMPLETION_INDEX", "4")])).is_err(), "index past the count");
        assert!(resolve_shard(env, env_of(&[("JOB_COMPLETION_INDEX", "1")])).unwrap_err().contains("env/N"));
        assert_eq!(resolve_shard(env, env_of(&[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "5")])).unwrap().0, Shard { k: 2, n: 5 });
        assert_eq!(resolve_shard(env, env_of(&[("CIRCLE_NODE_INDEX", "2"), ("CIRCLE_NODE_TOTAL", "5")])).unwrap().0, Shard { k: 3, n: 5 });
        assert_eq!(resolve_shard(env, env_of(&[("BUILDKITE_PARALLEL_JOB", "0"), ("BUILDKITE_PARALLEL_JOB_COUNT", "2")])).unwrap().0, Shard { k: 1, n: 2 });
        assert_eq!(resolve_shard(env, env_of(&[("TABLESIM_SHARD", "3/6"), ("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "2")])).unwrap(), (Shard { k: 3, n: 6 }, "TABLESIM_SHARD".into()));
        assert!(resolve_shard(k8s, env_of(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "2")])).is_err(), "counts disagree");
        assert!(resolve_shard(env, env_of(&[("CI_NODE_INDEX", "x"), ("CI_NODE_TOTAL", "2")])).is_err());
        assert!(resolve_shard(env, env_of(&[])).unwrap_err().contains("none of"));
        assert_eq!(resolve_shard(ShardArg::Fixed(Shard { k: 2, n: 3 }), env_of(&[("TABLESIM_SHARD", "1/2")])).unwrap().0, Shard { k: 2, n: 3 });
    }

    fn case(scenario: usize, seed: u64, outcome: Outcome) -> Case {
        Case { scenario, seed, outcome, why: if outcome == Outcome::Pass { vec![] } else { vec!["lost_acked_writes 1 (expected 0) <&\"'>".into()] }, digest: Some(format!("d{seed}")), replay: format!("cargo run --release -- run s.toml --seed {seed}"), seconds: 0.5 }
    }

    fn results(shard: Shard) -> SweepResults {
        let scenarios = vec![
            ScenarioRef { name: "a".into(), file: "scenarios/a.toml".into(), fingerprint: "1".into() },
            ScenarioRef { name: "b&c".into(), file: "scenarios/b.toml".into(), fingerprint: "2".into() },
        ];
        let mut r = SweepResults { format: RESULTS_FORMAT.into(), scenarios, seeds: (10, 15), shard, cases: vec![] };
        for i in 0..r.total() {
            if shard.holds(i) {
                let (s, seed) = ((i / 5) as usize, 10 + (i % 5) as u64);
                r.cases.push(case(s, seed, if seed == 12 { Outcome::Fail } else if seed == 14 && s == 1 { Outcome::Error } else { Outcome::Pass }));
            }
        }
        r
    }

    #[test]
    fn merged_shards_equal_the_whole_sweep_and_bad_sets_are_refused() {
        let whole = results(Shard::WHOLE);
        let parts: Vec<(PathBuf, SweepResults)> = (1..=3).map(|k| (PathBuf::from(format!("s{k}.json")), results(Shard { k, n: 3 }))).collect();
        assert_eq!(merge_results(parts.clone()).unwrap(), whole);
        let mut missing = parts.clone();
        missing.remove(1);
        assert!(merge_results(missing).unwrap_err().contains("missing of 3: 2"));
        let mut twice = parts.clone();
        twice[2] = twice[0].clone();
        assert!(merge_results(twice).unwrap_err().contains("both shard 1/3"));
        let mut other = parts.clone();
        other[1].1.scenarios[0].fingerprint = "9".into();
        assert!(merge_results(other).unwrap_err().contains("different sweeps"));
    }

    #[test]
    fn a_results_file_holds_exactly_its_shards_cases() {
        let dir = std::env::temp_dir().join(format!("tablesim-sweep-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        let write = |r: &SweepResults| std::fs::write(&path, serde_json::to_string(r).unwrap()).unwrap();
        let good = results(Shard { k: 2, n: 3 });
        write(&good);
        assert_eq!(read_results(&path).unwrap(), good);
        let mut lost = good.clone();
        lost.cases.pop();
        write(&lost);
        assert!(read_results(&path).unwrap_err().contains("holds 2 cases of its 3"));
        let mut dup = good.clone();
        dup.cases.push(dup.cases[0].clone());
        write(&dup);
        assert!(read_results(&path).unwrap_err().contains("twice"));
        let mut stray = good.clone();
        stray.cases[0].seed = 10;
        write(&stray);
        assert!(read_results(&path).unwrap_err().contains("another shard"));
        std::fs::write(&path, "{\"format\": 3").unwrap();
        assert!(read_results(&path).unwrap_err().contains(":1:"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn junit_counts_and_escapes() {
        let x = results(Shard::WHOLE).junit();
        assert!(x.contains("<testsuites name=\"tablesim sweep\" tests=\"10\" failures=\"2\" errors=\"1\""), "{x}");
        assert!(x.contains("<testsuite name=\"b&amp;c\" tests=\"5\" failures=\"1\" errors=\"1\""), "{x}");
        assert!(x.contains("name=\"seed 12\""));
        assert!(x.contains("(expected 0) &lt;&amp;&quot;&apos;&gt;"), "{x}");
        assert!(x.contains("replay: cargo run --release -- run s.toml --seed 12</failure>"), "{x}");
        assert_eq!(x.matches("<testcase ").count(), 10);
        assert_eq!(xml("a\u{1}b\nc"), "a\u{FFFD}b&#10;c");
    }
}
