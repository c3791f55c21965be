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

/// Current model time (true time, the same for every node). Engine code
/// reads time through its node's [`crate::Clock`] instead, which adds skew.
pub fn now() -> SimTime {
    let e = madsim::time::TimeHandle::current().elapsed();
    SimTime(u64::try_from(e.as_nanos() / u128::from(MODEL_SCALE)).unwrap_or(u64::MAX))
}

fn to_madsim(d: Duration) -> Duration {
    d.saturating_mul(MODEL_SCALE)
}

/// Sleeps for a model duration (at least 1 µs of model time: madsim's floor).
pub async fn sleep(d: Duration) {
    madsim::time::sleep(to_madsim(d)).await
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
    let h = madsim::time::TimeHandle::current();
    let start = h.now_instant() - h.elapsed();
    h.sleep_until(start + to_madsim(t.as_duration()))
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
