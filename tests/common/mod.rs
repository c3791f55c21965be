//! What the integration tests that run scenario text share.
// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::path::Path;

use tablesim::execute::{execute, Executed};
use tablesim::parse_scenario as parse;
use tablesim::run::RunOptions;

/// Parses scenario text (panicking with its error) and runs it at its seed.
pub fn run(text: &str) -> Executed {
    let scn = parse(Path::new("t.toml"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    execute(&scn, scn.seed, &RunOptions::default()).expect("the run ends")
}

/// The verdict and measured value of the expectation `name`.
pub fn expectation(done: &Executed, name: &str) -> (bool, String) {
    let e = done.report.expectations.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no `{name}` in {:?}", done.report.expectations));
    (e.pass, e.measured.clone())
}

/// `f` over `items` on as many threads as the machine has cores, results
/// in the items' order (each run is its own simulation on its own thread,
/// so runs may go side by side; a test binary runs alone in CI).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let done: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break mine };
                        mine.push((i, f(item)));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    for (i, r) in done.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter().map(|r| r.expect("every item ran")).collect()
}
