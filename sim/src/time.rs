//! Model time.
//!
//! madsim sleeps at least 1 ms, so madsim time used 1:1 cannot express a
//! 100 µs intra-zone hop.
//! tablesim therefore runs model time [`MODEL_SCALE`] times slower than madsim
//! time: one model nanosecond is one madsim microsecond. madsim's 1 ms floor
//! becomes 1 µs of model time, well inside the 10 µs fidelity target, and
//! virtual time still jumps from timer to timer so the scale costs nothing.
//!
//! All of tablesim reads and waits on model time through this module.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// madsim nanoseconds per model nanosecond.
pub const MODEL_SCALE: u32 = 1000;

/// A point in model time: nanoseconds since the start of the run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct SimTime(pub u64);

impl SimTime {
    pub const ZERO: SimTime = SimTime(0);

    pub fn from_duration(d: Duration) -> SimTime {
        SimTime(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }
    pub fn saturating_sub(self, other: SimTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(other.0))
    }
}

/// Saturates at the end of time instead of overflowing.
impl std::ops::Add<Duration> for SimTime {
    type Output = SimTime;
    fn add(self, d: Duration) -> SimTime {
        SimTime(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
}

impl fmt::Debug for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", fmt_duration(Duration::from_nanos(self.0)))
    }
}
impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

thread_local! {
    /// The running simulation's madsim time handle, while a [`TimeScope`]
    /// holds it. Reading the time through it saves cloning and dropping
    /// madsim's handle (two reference counts) on every call: `now()` runs
    /// about a million times in a double11 run.
    static SCOPED: std::cell::RefCell<Option<Scoped>> = const { std::cell::RefCell::new(None) };
}

/// Makes [`now`] and the sleeps read the current madsim runtime's time
/// handle from a thread-local slot until dropped. Enter it inside the
/// runtime (in the future `block_on` runs) and drop it before that future
/// ends; without a scope they look the handle up on every call.
#[must_use = "the scope ends when this is dropped"]
pub struct TimeScope {
    previous: Option<Scoped>,
}

/// A runtime's time handle and the madsim instant its time started at.
struct Scoped {
    handle: madsim::time::TimeHandle,
    start: std::time::Instant,
}

impl Scoped {
    fn of(handle: madsim::time::TimeHandle) -> Scoped {
        let start = handle.now_instant() - handle.elapsed();
        Scoped { handle, start }
    }
}

impl TimeScope {
    /// Panics outside a madsim runtime.
    pub fn enter() -> TimeScope {
        let s = Scoped::of(madsim::time::TimeHandle::current());
        TimeScope { previous: SCOPED.with(|c| c.borrow_mut().replace(s)) }
    }
}

impl Drop for TimeScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SCOPED.with(|s| *s.borrow_mut() = previous);
    }
}

fn with_scoped<T>(f: impl FnOnce(&Scoped) -> T) -> T {
    SCOPED.with(|s| match &*s.borrow() {
        Some(scoped) => f(scoped),
        None => f(&Scoped::of(madsim::time::TimeHandle::current())),
    })
}

fn with_handle<T>(f: impl FnOnce(&madsim::time::TimeHandle) -> T) -> T {
    SCOPED.with(|s| match &*s.borrow() {
        Some(scoped) => f(&scoped.handle),
        None => f(&madsim::time::TimeHandle::current()),
    })
}

/// Model nanoseconds in a madsim duration (1 model ns per MODEL_SCALE
/// madsim ns), in u64 arithmetic: a second is a whole number of model
/// nanoseconds, so splitting at the second loses nothing.
fn from_madsim(e: Duration) -> SimTime {
    const PER_SEC: u64 = 1_000_000_000 / MODEL_SCALE as u64;
    const _: () = assert!(1_000_000_000 % MODEL_SCALE == 0);
    let ns = e.as_secs().checked_mul(PER_SEC).and_then(|n| n.checked_add(u64::from(e.subsec_nanos() / MODEL_SCALE)));
    SimTime(ns.unwrap_or(u64::MAX))
}

/// Current model time (true time, the same for every node). Engine code
/// reads time through its node's [`crate::Clock`] instead, which adds skew.
pub fn now() -> SimTime {
    with_handle(|h| from_madsim(h.elapsed()))
}

fn to_madsim(d: Duration) -> Duration {
    d.saturating_mul(MODEL_SCALE)
}

/// Sleeps for a model duration (at least 1 µs of model time: madsim's floor).
pub async fn sleep(d: Duration) {
    with_handle(|h| h.sleep(to_madsim(d))).await
}

/// Sleeps until a model time point; returns at once if it has passed.
pub async fn sleep_until(t: SimTime) {
    let now = now();
    if t > now {
        sleep(t.saturating_sub(now)).await
    }
}

/// madsim's sleep that ends at model time `t` (or 1 µs from now if `t` is
/// earlier: madsim's floor). The transport polls it by hand to schedule a
/// message's arrival without a task.
pub(crate) fn madsim_sleep_until(t: SimTime) -> madsim::time::Sleep {
    with_scoped(|s| s.handle.sleep_until(s.start + to_madsim(t.as_duration())))
}

/// The future's output, or `Err(Elapsed)` after a model duration.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    madsim::time::timeout(to_madsim(d), fut).await.map_err(|_| Elapsed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Formats a duration the way scenario files write them: `150us`, `2.5ms`, `30s`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let (unit, div) = if ns >= 1_000_000_000 {
        ("s", 1_000_000_000u128)
    } else if ns >= 1_000_000 {
        ("ms", 1_000_000)
    } else if ns >= 1_000 {
        ("us", 1_000)
    } else {
        return format!("{ns}ns");
    };
    let whole = ns / div;
    let frac = ns % div;
    if frac == 0 {
        return format!("{whole}{unit}");
    }
    // Three significant decimals are what reports show; the rest is noise.
    let milli = (frac * 1000) / div;
    let s = format!("{whole}.{milli:03}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

/// Parses `150us`, `2ms`, `1.5s`, `3m`, `250ns` into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration `{s}` has no unit (write e.g. `150us`, `2ms`, `30s`)"))?;
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!("duration `{s}` does not start with a number"));
    }
    let per_unit: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("duration `{s}` has unknown unit `{unit}` (use ns, us, ms, s, m, h)")),
    };
    let value: f64 = num.parse().map_err(|_| format!("duration `{s}`: `{num}` is not a number"))?;
    let ns = value * per_unit;
    if !ns.is_finite() || ns > 1e18 {
        return Err(format!("duration `{s}` is too large"));
    }
    Ok(Duration::from_nanos(ns.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_time_from_madsim_time_matches_the_exact_division() {
        let cases = [0u64, 1, 999, 1000, 1001, 999_999_999, 1_000_000_000, 1_000_000_999, 123_456_789_012_345, u64::MAX];
        for ns in cases {
            let e = Duration::from_nanos(ns);
            assert_eq!(from_madsim(e).0, ns / u64::from(MODEL_SCALE), "{ns} madsim ns");
        }
        assert_eq!(from_madsim(Duration::MAX), SimTime(u64::MAX), "saturates");
    }

    /// Inside a scope, time comes from the scoped handle; the scope ends
    /// with its guard, and a scope from an earlier runtime never leaks
    /// into the next one on the same thread.
    #[test]
    fn a_time_scope_reads_its_runtimes_clock_and_ends_with_its_guard() {
        for run in 0..2u64 {
            let rt = madsim::runtime::Runtime::with_seed_and_config(run, madsim::Config::default());
            rt.block_on(async move {
                let scope = TimeScope::enter();
                assert!(SCOPED.with(|s| s.borrow().is_some()));
                sleep(Duration::from_micros(250 * (run + 1))).await;
                let inside = now();
                let direct = from_madsim(madsim::time::TimeHandle::current().elapsed());
                assert_eq!(inside, direct);
                // A hand-polled sleep to a model time point ends there.
                let until = SimTime(inside.0 + 3_000);
                madsim_sleep_until(until).await;
                assert_eq!(now(), until);
                let direct = from_madsim(madsim::time::TimeHandle::current().elapsed());
                assert!(inside.0 >= 250_000 * (run + 1), "{inside:?}");
                drop(scope);
                assert!(SCOPED.with(|s| s.borrow().is_none()));
                assert_eq!(now(), direct, "the unscoped path reads the same clock");
            });
        }
    }

    #[test]
    fn durations_round_trip() {
        for (text, ns) in [("150us", 150_000u64), ("2ms", 2_000_000), ("30s", 30_000_000_000), ("1.5s", 1_500_000_000), ("250ns", 250)] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_nanos() as u64, ns, "{text}");
            assert_eq!(parse_duration(&fmt_duration(d)).unwrap(), d);
        }
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1.5ms");
    }

    #[test]
    fn bad_durations_are_errors() {
        for bad in ["", "10", "ms", "10 parsecs", "1e400s", "-5ms", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
