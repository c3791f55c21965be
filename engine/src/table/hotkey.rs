//! The table server's hot-key recognizer, as a pure state machine
//! (requests and ticks in, decisions out); the server drives it.
//!
//! A hot key is one key accessed far above the rest: a QPS hotspot (many
//! requests per second) or a traffic hotspot (few requests for large
//! values: many bytes per second). Time is cut into sampling periods of
//! [`HotKeyConfig::period`], aligned on multiples of it from time zero.
//!
//! **Statistics, on the request path** ([`Recognizer::observe`]:
//! O(log n), bounded memory), in two levels:
//! - level 0 finds candidates: a least-recently-used list of at most
//!   [`LEVEL0_KEYS_MAX`] keys with their counts in the current period,
//!   emptied at the end of every period. A key whose requests (or bytes)
//!   in one period reach [`PROMOTE_PERMILLE`]‰ of what a hot key makes in
//!   a period is promoted to level 1, with the counts it has so far.
//! - level 1 keeps the candidates: at most [`LEVEL1_KEYS_MAX`] keys, each
//!   with its reads, writes and bytes per period over the last
//!   [`HotKeyConfig::window`] periods. It is weighted, not ordered by age:
//!   a candidate gets into a full level 1 only if it is heavier than the
//!   lightest key there that is not hot, which it evicts. A key's weight
//!   is what it made in the window and the current period, as a fraction
//!   of the nearer threshold. Hot keys are never evicted, so a key cools
//!   down by its own rate only (and a level 1 full of hot keys takes no
//!   new candidate). A key that is not hot and made fewer requests and
//!   bytes in the whole window than promotion asks of one period is
//!   dropped (level 0 may find it again).
//!
//! **Analysis, off the request path**, at the end of every period
//! ([`Recognizer::tick`]): a key's rates are its counts over the
//! last `window` periods divided by `window * period`, so a key is found
//! within `window` periods of crossing a threshold, and one noisy period
//! does not make a key hot (unless it alone carries a window's worth of
//! hot traffic). A key becomes hot when its request rate reaches
//! [`HotKeyConfig::qps_hot`] ([`HotKind::Qps`]), or else its byte rate
//! reaches [`HotKeyConfig::bytes_hot`] ([`HotKind::Traffic`]). It cools
//! down once both rates stayed below
//! [`HotKeyConfig::cool_ratio_permille`]‰ of their thresholds for
//! [`HotKeyConfig::cool_periods`] periods in a row: hysteresis, so that a
//! key near a threshold does not flap.
//!
//! A request observed after its period ended closes that period (and any
//! later one that ended) first: the counts do not depend on whether the
//! tick or a request comes first at a period's end, and a late tick ages
//! the window as if none had been missed. `tick` reports how the hot set
//! changed since the previous tick, in key order: [`HotEvent::Cooled`] for
//! a key reported hot that is not any more, [`HotEvent::Hot`] for a key
//! that became hot (a key that became hot and cooled down between two
//! ticks is not reported at all).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use sim::time::SimTime;

/// Keys level 0 counts in one period at most; the least recently used one
/// is forgotten for a new key. A key that could become hot comes back
/// every few hundred requests at most, so it stays among the most recent.
pub const LEVEL0_KEYS_MAX: usize = 4096;
/// Candidates level 1 tracks at most: far more keys than are hot at once on
/// one server (each takes 3,000 requests/s or 8 MiB/s of it), few enough
/// that a period's analysis is cheap.
pub const LEVEL1_KEYS_MAX: usize = 64;
/// Per mille of a hot key's requests (or bytes) in one period at which a
/// key is promoted to level 1 (30 requests or 83,886 bytes in 100 ms with
/// the defaults): far above a background key, well below hot, so that a
/// key rising to hot is tracked from its first busy period on.
pub const PROMOTE_PERMILLE: u64 = 100;
/// Longest window, in periods (each level-1 key keeps one count per period).
pub const WINDOW_MAX: u32 = 64;
/// Most calm periods a cool-down may ask for (a minute of 100 ms periods).
pub const COOL_PERIODS_MAX: u32 = 600;
/// Shortest period: level 1 is analysed every period.
pub const PERIOD_MIN: Duration = Duration::from_millis(1);
/// Longest period: a slower analysis no longer finds a hotspot in time.
pub const PERIOD_MAX: Duration = Duration::from_secs(60);

const NANOS_PER_S: u128 = 1_000_000_000;

/// The recognizer's tunables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKeyConfig {
    /// The sampling period: statistics are analysed at the end of each.
    pub period: Duration,
    /// Periods the rates are taken over.
    pub window: u32,
    /// Requests per second (reads and writes) that make a key hot.
    pub qps_hot: u64,
    /// Bytes per second that make a key hot.
    pub bytes_hot: u64,
    /// A hot key is calm in a period while both its rates are below this
    /// per mille of their thresholds.
    pub cool_ratio_permille: u64,
    /// Calm periods in a row after which a hot key has cooled down.
    pub cool_periods: u32,
}

impl Default for HotKeyConfig {
    /// Periods of 100 ms and a window of 5: a key is found within 0.5 s of
    /// crossing a threshold. Hot at 3,000 requests/s (a single key is
    /// usually called hot at 3,000 to 5,000) or 8 MiB/s. Cooled down after
    /// 10 periods (1 s) below half of both thresholds.
    fn default() -> HotKeyConfig {
        HotKeyConfig { period: Duration::from_millis(100), window: 5, qps_hot: 3_000, bytes_hot: 8 << 20, cool_ratio_permille: 500, cool_periods: 10 }
    }
}

impl HotKeyConfig {
    /// Why the configuration cannot be used, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.period < PERIOD_MIN || self.period > PERIOD_MAX {
            return Err(format!("period {:?} is outside {PERIOD_MIN:?}..={PERIOD_MAX:?}", self.period));
        }
        if self.window == 0 || self.window > WINDOW_MAX {
            return Err(format!("window {} is outside 1..={WINDOW_MAX} periods", self.window));
        }
        if self.qps_hot == 0 {
            return Err("qps_hot must be at least 1 request/s".to_string());
        }
        if self.bytes_hot == 0 {
            return Err("bytes_hot must be at least 1 byte/s".to_string());
        }
        if self.cool_ratio_permille == 0 || self.cool_ratio_permille > 1000 {
            return Err(format!("cool_ratio_permille {} is outside 1..=1000", self.cool_ratio_permille));
        }
        if self.cool_periods == 0 || self.cool_periods > COOL_PERIODS_MAX {
            return Err(format!("cool_periods {} is outside 1..={COOL_PERIODS_MAX}", self.cool_periods));
        }
        Ok(())
    }

    /// Requests of one key in one period that promote it to level 1.
    pub fn promote_hits(&self) -> u64 {
        self.promote_of(self.qps_hot)
    }

    /// Bytes of one key in one period that promote it to level 1.
    pub fn promote_bytes(&self) -> u64 {
        self.promote_of(self.bytes_hot)
    }

    fn promote_of(&self, per_s: u64) -> u64 {
        let n = u128::from(per_s) * self.period.as_nanos() * u128::from(PROMOTE_PERMILLE) / 1000 / NANOS_PER_S;
        u64::try_from(n).unwrap_or(u64::MAX).max(1)
    }
}

/// Which threshold made a key hot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HotKind {
    /// Its request rate reached [`HotKeyConfig::qps_hot`].
    Qps,
    /// Only its byte rate reached [`HotKeyConfig::bytes_hot`].
    Traffic,
}

impl HotKind {
    pub fn name(self) -> &'static str {
        match self {
            HotKind::Qps => "qps",
            HotKind::Traffic => "traffic",
        }
    }
}

/// A hot key and its rates over the last window. The rates (and the kind,
/// whenever a threshold is reached again) are brought up to date at the
/// end of every period while the key is hot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HotKey {
    pub key: String,
    pub kind: HotKind,
    pub reads_per_s: u64,
    pub writes_per_s: u64,
    pub bytes_per_s: u64,
    /// The end of the period at which it became hot.
    pub since: SimTime,
}

/// A change of the hot set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum HotEvent {
    Hot(HotKey),
    Cooled { key: String },
}

/// One key's requests and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    reads: u64,
    writes: u64,
    bytes: u64,
}

impl Counts {
    fn of(requests: u64, bytes: u64, write: bool) -> Counts {
        if write {
            Counts { reads: 0, writes: requests, bytes }
        } else {
            Counts { reads: requests, writes: 0, bytes }
        }
    }
    fn requests(&self) -> u64 {
        self.reads.saturating_add(self.writes)
    }
    fn add(&mut self, o: Counts) {
        self.reads = self.reads.saturating_add(o.reads);
        self.writes = self.writes.saturating_add(o.writes);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

#[derive(Clone, Debug)]
struct Level0Entry {
    /// When it was used last (the key of its place in the LRU order).
    used: u64,
    counts: Counts,
}

#[derive(Clone, Debug)]
struct Level1Entry {
    /// Promotion order: breaks ties between equal weights.
    id: u64,
    /// Counts of the last closed periods, oldest first (at most `window`).
    ring: VecDeque<Counts>,
    /// The sum of `ring`.
    ring_sum: Counts,
    /// Counts of the open period.
    cur: Counts,
    /// Its weight, its place in `lightest` while it is not hot.
    weight: u128,
    hot: Option<HotState>,
}

#[derive(Clone, Debug)]
struct HotState {
    info: HotKey,
    /// Calm periods in a row.
    calm: u32,
}

/// The recognizer (see the module doc).
#[derive(Clone, Debug)]
pub struct Recognizer {
    cfg: HotKeyConfig,
    period_ns: u64,
    window_ns: u128,
    promote_hits: u64,
    promote_bytes: u64,
    /// The open period: `[open * period, (open + 1) * period)`.
    open: u64,
    level0: BTreeMap<String, Level0Entry>,
    /// Level 0's keys by last use, least recent first.
    lru: BTreeMap<u64, String>,
    next_use: u64,
    level1: BTreeMap<String, Level1Entry>,
    /// Level 1's keys that are not hot, by (weight, id): the first is the
    /// one a heavier candidate evicts.
    lightest: BTreeMap<(u128, u64), String>,
    next_id: u64,
    /// The hot keys (and since when) as the last tick reported them.
    reported: BTreeMap<String, SimTime>,
}

/// Whether `sum` over a window of `window_ns` is at least `permille`‰ of
/// `per_s`.
fn reaches(sum: u64, per_s: u64, permille: u64, window_ns: u128) -> bool {
    u128::from(sum) * NANOS_PER_S * 1000 >= u128::from(per_s) * u128::from(permille) * window_ns
}

/// `sum` over a window of `window_ns`, per second.
fn per_s(sum: u64, window_ns: u128) -> u64 {
    u64::try_from(u128::from(sum) * NANOS_PER_S / window_ns).unwrap_or(u64::MAX)
}

/// How close counts are to hot: the larger of requests / qps_hot and
/// bytes / bytes_hot, both multiplied by qps_hot * bytes_hot.
fn weight(cfg: &HotKeyConfig, c: Counts) -> u128 {
    (u128::from(c.requests()) * u128::from(cfg.bytes_hot)).max(u128::from(c.bytes) * u128::from(cfg.qps_hot))
}

/// Moves a level-1 entry that is not hot to weight `w` in `lightest`.
fn reweigh(lightest: &mut BTreeMap<(u128, u64), String>, e: &mut Level1Entry, w: u128) {
    if e.weight != w {
        if let Some(k) = lightest.remove(&(e.weight, e.id)) {
            lightest.insert((w, e.id), k);
        }
        e.weight = w;
    }
}

impl Recognizer {
    /// A recognizer with nothing observed, its first period starting at
    /// time zero. Panics on a configuration that
    /// [`HotKeyConfig::validate`] refuses.
    pub fn new(cfg: HotKeyConfig) -> Recognizer {
        if let Err(e) = cfg.validate() {
            panic!("invalid hot-key configuration: {e}");
        }
        let period_ns = u64::try_from(cfg.period.as_nanos()).expect("validated period");
        Recognizer {
            window_ns: u128::from(period_ns) * u128::from(cfg.window),
            promote_hits: cfg.promote_hits(),
            promote_bytes: cfg.promote_bytes(),
            period_ns,
            cfg,
            open: 0,
            level0: BTreeMap::new(),
            lru: BTreeMap::new(),
            next_use: 0,
            level1: BTreeMap::new(),
            lightest: BTreeMap::new(),
            next_id: 0,
            reported: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &HotKeyConfig {
        &self.cfg
    }

    /// The end of the open period: when the next tick is due.
    pub fn next_tick(&self) -> SimTime {
        SimTime(self.open.saturating_add(1).saturating_mul(self.period_ns))
    }

    /// Keys held in level 0 and level 1.
    pub fn level_sizes(&self) -> (usize, usize) {
        (self.level0.len(), self.level1.len())
    }

    /// One request of `key` at `now`, moving `bytes` (the value written or
    /// read). A request earlier than the open period counts in it.
    pub fn observe(&mut self, now: SimTime, key: &str, bytes: u64, write: bool) {
        self.observe_n(now, key, 1, bytes, write);
    }

    /// `requests` requests of `key` at once, `bytes` in all (a HotZone's
    /// refresh reports the reads it answered beside itself; a read's bytes
    /// are known only once answered, and are counted then with no request).
    pub fn observe_n(&mut self, now: SimTime, key: &str, requests: u64, bytes: u64, write: bool) {
        self.roll(now);
        let one = Counts::of(requests, bytes, write);
        if let Some(e) = self.level1.get_mut(key) {
            e.cur.add(one);
            if e.hot.is_none() {
                let mut total = e.ring_sum;
                total.add(e.cur);
                reweigh(&mut self.lightest, e, weight(&self.cfg, total));
            }
            return;
        }
        let used = self.next_use;
        self.next_use += 1;
        let counts = match self.level0.get_mut(key) {
            Some(e) => {
                if let Some(k) = self.lru.remove(&e.used) {
                    self.lru.insert(used, k);
                }
                e.used = used;
                e.counts.add(one);
                e.counts
            }
            None => {
                if self.level0.len() >= LEVEL0_KEYS_MAX {
                    if let Some((_, old)) = self.lru.pop_first() {
                        self.level0.remove(&old);
                    }
                }
                self.level0.insert(key.to_string(), Level0Entry { used, counts: one });
                self.lru.insert(used, key.to_string());
                one
            }
        };
        if counts.requests() >= self.promote_hits || counts.bytes >= self.promote_bytes {
            self.promote(key, counts);
        }
    }

    /// Moves a level-0 key with `counts` this period to level 1, if there
    /// is room or it is heavier than the lightest key there that is not hot.
    fn promote(&mut self, key: &str, counts: Counts) {
        let w = weight(&self.cfg, counts);
        if self.level1.len() >= LEVEL1_KEYS_MAX {
            // Every tracked key hot: no room.
            let Some((&(lw, lid), _)) = self.lightest.first_key_value() else { return };
            if w <= lw {
                return;
            }
            if let Some(k) = self.lightest.remove(&(lw, lid)) {
                self.level1.remove(&k);
            }
        }
        let Some((name, e)) = self.level0.remove_entry(key) else { return };
        self.lru.remove(&e.used);
        let id = self.next_id;
        self.next_id += 1;
        self.lightest.insert((w, id), name.clone());
        let ring = VecDeque::with_capacity(self.cfg.window as usize);
        self.level1.insert(name, Level1Entry { id, ring, ring_sum: Counts::default(), cur: counts, weight: w, hot: None });
    }

    /// Closes every period that ended by `now`. After `window +
    /// cool_periods` periods without a request nothing is left, so a long
    /// gap closes that many and skips the rest.
    fn roll(&mut self, now: SimTime) {
        let current = now.as_nanos() / self.period_ns;
        if current <= self.open {
            return;
        }
        let busy = u64::from(self.cfg.window) + u64::from(self.cfg.cool_periods) + 1;
        for _ in 0..(current - self.open).min(busy) {
            self.close();
            self.open += 1;
        }
        debug_assert!(self.open == current || self.level1.is_empty(), "an idle recognizer keeps nothing");
        self.open = current;
    }

    /// Closes the open period: level 0 emptied, level 1's windows moved on
    /// and analysed.
    fn close(&mut self) {
        let end = SimTime(self.open.saturating_add(1).saturating_mul(self.period_ns));
        self.level0.clear();
        self.lru.clear();
        let (cfg, window_ns) = (&self.cfg, self.window_ns);
        let mut demoted = Vec::new();
        for (key, e) in self.level1.iter_mut() {
            e.ring.push_back(std::mem::take(&mut e.cur));
            if e.ring.len() > cfg.window as usize {
                e.ring.pop_front();
            }
            let s = e.ring.iter().fold(Counts::default(), |mut s, c| {
                s.add(*c);
                s
            });
            e.ring_sum = s;
            let qps = reaches(s.requests(), cfg.qps_hot, 1000, window_ns);
            let traffic = reaches(s.bytes, cfg.bytes_hot, 1000, window_ns);
            let (reads_per_s, writes_per_s, bytes_per_s) = (per_s(s.reads, window_ns), per_s(s.writes, window_ns), per_s(s.bytes, window_ns));
            match e.hot.as_mut() {
                None if qps || traffic => {
                    self.lightest.remove(&(e.weight, e.id));
                    let kind = if qps { HotKind::Qps } else { HotKind::Traffic };
                    let info = HotKey { key: key.clone(), kind, reads_per_s, writes_per_s, bytes_per_s, since: end };
                    e.hot = Some(HotState { info, calm: 0 });
                }
                None => {}
                Some(h) => {
                    h.info.reads_per_s = reads_per_s;
                    h.info.writes_per_s = writes_per_s;
                    h.info.bytes_per_s = bytes_per_s;
                    if qps {
                        h.info.kind = HotKind::Qps;
                    } else if traffic {
                        h.info.kind = HotKind::Traffic;
                    }
                    let calm = !reaches(s.requests(), cfg.qps_hot, cfg.cool_ratio_permille, window_ns) && !reaches(s.bytes, cfg.bytes_hot, cfg.cool_ratio_permille, window_ns);
                    h.calm = if calm { h.calm + 1 } else { 0 };
                    if h.calm >= cfg.cool_periods {
                        e.hot = None;
                        self.lightest.insert((e.weight, e.id), key.clone());
                    }
                }
            }
            if e.hot.is_none() {
                reweigh(&mut self.lightest, e, weight(cfg, s));
                if s.requests() < self.promote_hits && s.bytes < self.promote_bytes {
                    demoted.push(key.clone());
                }
            }
        }
        for k in demoted {
            if let Some(e) = self.level1.remove(&k) {
                self.lightest.remove(&(e.weight, e.id));
            }
        }
    }

    /// The end of a sampling period: closes every period that ended by
    /// `now` and returns how the hot set changed since the last tick, in
    /// key order (a key's `Cooled` before its `Hot` when it cooled down
    /// and became hot again in between).
    pub fn tick(&mut self, now: SimTime) -> Vec<HotEvent> {
        self.roll(now);
        let mut events: Vec<(&str, u8, HotEvent)> = Vec::new();
        for (key, since) in &self.reported {
            if self.hot(key).map(|h| h.since) != Some(*since) {
                events.push((key, 0, HotEvent::Cooled { key: key.clone() }));
            }
        }
        for h in self.hot_keys() {
            if self.reported.get(&h.key) != Some(&h.since) {
                events.push((&h.key, 1, HotEvent::Hot(h.clone())));
            }
        }
        events.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let events = events.into_iter().map(|(_, _, e)| e).collect();
        self.reported = self.hot_keys().map(|h| (h.key.clone(), h.since)).collect();
        events
    }

    /// `key`'s hot state, if it is hot.
    pub fn hot(&self, key: &str) -> Option<&HotKey> {
        self.level1.get(key)?.hot.as_ref().map(|h| &h.info)
    }

    /// The hot keys, in key order.
    pub fn hot_keys(&self) -> impl Iterator<Item = &HotKey> {
        self.level1.values().filter_map(|e| e.hot.as_ref().map(|h| &h.info))
    }

    /// Forgets every key (the server lost or moved the partition): nothing
    /// is hot any more and the next tick reports nothing.
    pub fn reset(&mut self) {
        self.level0.clear();
        self.lru.clear();
        self.level1.clear();
        self.lightest.clear();
        self.reported.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::rng::{ChaCha8Rng, RngExt, SeedableRng};

    const PERIOD_NS: u64 = 100_000_000;

    fn ms(x: u64) -> SimTime {
        SimTime(x * 1_000_000)
    }

    /// One request: (offset in its period in ns, key index, bytes, write).
    type Req = (u64, usize, u64, bool);

    /// `n` requests of `key` spread evenly over a period.
    fn steady(out: &mut Vec<Req>, key: usize, n: u64, bytes: u64, write: bool) {
        for i in 0..n {
            out.push((i * PERIOD_NS / n, key, bytes, write));
        }
    }

    /// The structure's invariants and bounds.
    fn assert_bounded(r: &Recognizer) {
        assert!(r.level0.len() <= LEVEL0_KEYS_MAX, "level 0 holds {}", r.level0.len());
        assert_eq!(r.lru.len(), r.level0.len());
        assert!(r.level1.len() <= LEVEL1_KEYS_MAX, "level 1 holds {}", r.level1.len());
        assert_eq!(r.lightest.len() + r.hot_keys().count(), r.level1.len());
        assert!(r.level1.values().all(|e| e.ring.len() <= r.cfg.window as usize));
        assert!(r.level1.keys().all(|k| !r.level0.contains_key(k)));
    }

    /// Drives `r` period by period over `[from, to)` (ms, on period
    /// boundaries): the requests `load` makes for each period (given its
    /// start in ms) in time order, then a tick at the period's end.
    /// Returns the events with their tick's time (ms).
    fn run(r: &mut Recognizer, keys: &[String], from: u64, to: u64, mut load: impl FnMut(u64, &mut Vec<Req>)) -> Vec<(u64, HotEvent)> {
        let mut events = Vec::new();
        let mut reqs = Vec::new();
        for start in (from..to).step_by(100) {
            reqs.clear();
            load(start, &mut reqs);
            reqs.sort_by_key(|q| q.0);
            for &(off, k, bytes, write) in &reqs {
                r.observe(ms(start) + Duration::from_nanos(off), &keys[k], bytes, write);
            }
            assert_bounded(r);
            events.extend(r.tick(ms(start + 100)).into_iter().map(|e| (start + 100, e)));
            assert_bounded(r);
        }
        events
    }

    /// Events as (tick ms, "hot" or "cooled", key).
    fn summary(events: &[(u64, HotEvent)]) -> Vec<(u64, &'static str, &str)> {
        events
            .iter()
            .map(|(at, e)| match e {
                HotEvent::Hot(h) => (*at, "hot", h.key.as_str()),
                HotEvent::Cooled { key } => (*at, "cooled", key.as_str()),
            })
            .collect()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_defaults_are_valid_and_bad_values_are_refused() {
        let d = HotKeyConfig::default();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!((d.promote_hits(), d.promote_bytes()), (30, 83_886));
        let bad = [
            HotKeyConfig { period: Duration::ZERO, ..d.clone() },
            HotKeyConfig { period: Duration::from_micros(999), ..d.clone() },
            HotKeyConfig { period: Duration::from_secs(61), ..d.clone() },
            HotKeyConfig { window: 0, ..d.clone() },
            HotKeyConfig { window: WINDOW_MAX + 1, ..d.clone() },
            HotKeyConfig { qps_hot: 0, ..d.clone() },
            HotKeyConfig { bytes_hot: 0, ..d.clone() },
            HotKeyConfig { cool_ratio_permille: 0, ..d.clone() },
            HotKeyConfig { cool_ratio_permille: 1001, ..d.clone() },
            HotKeyConfig { cool_periods: 0, ..d.clone() },
            HotKeyConfig { cool_periods: COOL_PERIODS_MAX + 1, ..d.clone() },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert_eq!(HotKeyConfig { window: 0, ..d.clone() }.validate(), Err("window 0 is outside 1..=64 periods".to_string()));
        // Promotion needs at least one request or byte, however low the thresholds.
        let low = HotKeyConfig { qps_hot: 1, bytes_hot: 1, ..d };
        assert_eq!((low.promote_hits(), low.promote_bytes()), (1, 1));
        assert_eq!((HotKind::Qps.name(), HotKind::Traffic.name()), ("qps", "traffic"));
        assert_eq!(serde_json::to_string(&HotKind::Traffic).unwrap(), "\"traffic\"");
    }

    #[test]
    #[should_panic(expected = "invalid hot-key configuration: qps_hot")]
    fn a_bad_configuration_is_refused_at_construction() {
        Recognizer::new(HotKeyConfig { qps_hot: 0, ..HotKeyConfig::default() });
    }

    #[test]
    fn a_qps_hotspot_is_found_within_the_window_and_no_background_key_is() {
        let mut keys = names(&["hot"]);
        keys.extend((0..1000).map(|i| format!("bg{i:04}")));
        let mut r = Recognizer::new(HotKeyConfig::default());
        let events = run(&mut r, &keys, 0, 3000, |start, out| {
            // Background: key i once a second, at millisecond i of it.
            let s = start % 1000;
            for i in s..s + 100 {
                out.push(((i - s) * 1_000_000, 1 + i as usize, 100, false));
            }
            // The hotspot: 5,000 requests/s (one every 200 µs) from 1.05 s on.
            if start >= 1000 {
                let from = if start == 1000 { 50_000_000 } else { 0 };
                for off in (from..PERIOD_NS).step_by(200_000) {
                    out.push((off, 0, 100, false));
                }
            }
        });
        // Its window holds 250, 750, 1,250 and 1,750 requests at the ends
        // of 1.1, 1.2, 1.3 and 1.4 s: 3,000/s over 0.5 s is 1,500, so it
        // is reported at 1.4 s, 350 ms after it began.
        let want = HotKey { key: "hot".into(), kind: HotKind::Qps, reads_per_s: 3500, writes_per_s: 0, bytes_per_s: 350_000, since: ms(1400) };
        assert_eq!(events, vec![(1400, HotEvent::Hot(want))]);
        let h = r.hot("hot").expect("still hot");
        assert_eq!((h.reads_per_s, h.bytes_per_s, h.since), (5000, 500_000, ms(1400)));
        assert_eq!(r.hot_keys().map(|h| h.key.as_str()).collect::<Vec<_>>(), vec!["hot"]);
        assert_eq!(r.level1.keys().collect::<Vec<_>>(), vec!["hot"], "no background key is even a candidate");
        assert!(r.hot("bg0001").is_none());
    }

    #[test]
    fn a_traffic_hotspot_is_found_by_its_bytes() {
        let keys = names(&["small", "traffic"]);
        let mut r = Recognizer::new(HotKeyConfig::default());
        // Both at 200 requests/s: 64 KiB values (12.5 MiB/s) and 100 bytes.
        let events = run(&mut r, &keys, 0, 2000, |_, out| {
            steady(out, 0, 20, 100, false);
            steady(out, 1, 20, 64 << 10, false);
        });
        // 1,310,720 bytes a period: 3 periods are 3,932,160, below the
        // 4,194,304 of 8 MiB/s over 0.5 s; 4 are above.
        let want = HotKey { key: "traffic".into(), kind: HotKind::Traffic, reads_per_s: 160, writes_per_s: 0, bytes_per_s: 10_485_760, since: ms(400) };
        assert_eq!(events, vec![(400, HotEvent::Hot(want))]);
        let h = r.hot("traffic").expect("still hot");
        assert_eq!((h.kind, h.reads_per_s, h.bytes_per_s), (HotKind::Traffic, 200, 13_107_200));
        assert!(r.hot("small").is_none());
        assert!(!r.level1.contains_key("small"), "20 requests and 2,000 bytes a period promote nothing");
    }

    /// One key at `rate(period start ms)` requests/s (100 bytes each) over
    /// `[0, to)` ms.
    fn one_key(to: u64, rate: impl Fn(u64) -> u64) -> (Recognizer, Vec<(u64, HotEvent)>) {
        let keys = names(&["k"]);
        let mut r = Recognizer::new(HotKeyConfig::default());
        let events = run(&mut r, &keys, 0, to, |start, out| steady(out, 0, rate(start) / 10, 100, false));
        (r, events)
    }

    #[test]
    fn a_hot_key_cools_down_after_its_calm_periods_and_never_flaps() {
        // 5,000/s, hot once its window holds 1,500 requests (at 0.3 s),
        // then nothing from 2 s on. The window still holds 2,000, 1,500,
        // 1,000 (2,000/s, not calm), then 500 requests at 2.4 s: calm
        // period 1 of 10; the tenth ends at 3.3 s.
        let (_, events) = one_key(5000, |t| if t < 2000 { 5000 } else { 0 });
        assert_eq!(summary(&events), vec![(300, "hot", "k"), (3300, "cooled", "k")]);
        let HotEvent::Hot(h) = &events[0].1 else { panic!("{events:?}") };
        assert_eq!((h.kind, h.reads_per_s, h.since), (HotKind::Qps, 3000, ms(300)));

        // Down to 40% (120 a period): the window holds 2,120, 1,740, 1,360,
        // 980 then 600 (1,200/s) at 2.5 s, the first calm period.
        let (_, events) = one_key(5000, |t| if t < 2000 { 5000 } else { 1200 });
        assert_eq!(summary(&events), vec![(300, "hot", "k"), (3400, "cooled", "k")]);

        // Down to 60%: above half the threshold, it stays hot.
        let (r, events) = one_key(10_000, |t| if t < 2000 { 5000 } else { 1800 });
        assert_eq!(summary(&events), vec![(300, "hot", "k")]);
        assert_eq!(r.hot("k").map(|h| h.reads_per_s), Some(1800));

        // 90% of the threshold for ever: never hot.
        let (_, events) = one_key(5000, |_| 2700);
        assert_eq!(events, vec![]);

        // Two seconds at 110%, two at 90%, for 10 s: hot once (its window
        // holds 1,650 requests at 0.5 s) and never cooled, though its rate
        // stays below the threshold for more than cool_periods every
        // other two seconds.
        let flip = |t: u64| if (t / 2000) % 2 == 0 { 3300 } else { 2700 };
        let (r, events) = one_key(3500, flip);
        assert_eq!(summary(&events), vec![(500, "hot", "k")]);
        assert_eq!(r.hot("k").map(|h| h.reads_per_s), Some(2700), "below the threshold, still hot");
        let (r, events) = one_key(10_000, flip);
        assert_eq!(summary(&events), vec![(500, "hot", "k")]);
        assert_eq!(r.hot("k").map(|h| h.since), Some(ms(500)));
    }

    #[test]
    fn a_zipf_mix_reports_exactly_the_keys_above_the_threshold() {
        // θ = 1.22 over 100,000 keys at 50,000 requests/s.
        const KEYS: usize = 100_000;
        const TOTAL: u64 = 50_000;
        let weights: Vec<f64> = (1..=KEYS).map(|i| (i as f64).powf(-1.22)).collect();
        let sum: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(KEYS);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / sum;
            cdf.push(acc);
        }
        // The key of rank i, scrambled so that key order is not rank order.
        let keys: Vec<String> = (0..KEYS as u64).map(|i| format!("user{:06}", i * 7_919 % KEYS as u64)).collect();
        let rate = |i: usize| TOTAL as f64 * weights[i] / sum;
        let qps_hot = HotKeyConfig::default().qps_hot as f64;
        // Must be reported: 10% above the threshold or more; may be: within
        // 10% of it (rank 3, at 2,740/s); must not: the rest.
        let must: Vec<&str> = (0..KEYS).filter(|&i| rate(i) >= qps_hot * 1.1).map(|i| keys[i].as_str()).collect();
        let may: Vec<&str> = (0..KEYS).filter(|&i| rate(i) >= qps_hot * 0.9).map(|i| keys[i].as_str()).collect();
        assert_eq!((must.len(), may.len()), (2, 3), "ranks 1 and 2 are hot (10,466/s and 4,493/s), rank 3 borderline");

        let mut rng = ChaCha8Rng::seed_from_u64(1_22);
        let mut r = Recognizer::new(HotKeyConfig::default());
        let per_period = TOTAL / 10;
        let events = run(&mut r, &keys, 0, 10_000, |_, out| {
            for j in 0..per_period {
                let u: f64 = rng.random();
                let i = cdf.partition_point(|&c| c <= u).min(KEYS - 1);
                out.push((j * PERIOD_NS / per_period, i, 100, false));
            }
        });
        for (at, e) in &events {
            let HotEvent::Hot(h) = e else { panic!("nothing cools down in a steady mix: {at} {e:?}") };
            assert!(may.contains(&h.key.as_str()), "{} is not near the threshold: {h:?}", h.key);
        }
        for k in &must {
            let at = events.iter().find(|(_, e)| matches!(e, HotEvent::Hot(h) if h.key == *k)).map(|(at, _)| *at);
            assert!(at.is_some_and(|at| at <= 1000), "{k} reported at {at:?}");
            assert_eq!(r.hot(k).map(|h| h.kind), Some(HotKind::Qps));
        }
        // Level 1 holds every key above the promotion rate of 300/s (the 18
        // first ranks), and some just below that a busy period promoted.
        let above: Vec<&str> = (0..KEYS).filter(|&i| rate(i) >= 300.0).map(|i| keys[i].as_str()).collect();
        assert_eq!(above.len(), 18);
        assert!(above.iter().all(|k| r.level1.contains_key(*k)));
        let (l0, l1) = r.level_sizes();
        assert!(l1 <= LEVEL1_KEYS_MAX && l0 <= LEVEL0_KEYS_MAX, "{l0} {l1}");
    }

    #[test]
    fn a_uniform_load_makes_no_key_hot() {
        const KEYS: usize = 10_000;
        let keys: Vec<String> = (0..KEYS).map(|i| format!("u{i:05}")).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut r = Recognizer::new(HotKeyConfig::default());
        let mut most = 0;
        for second in 0..30 {
            let events = run(&mut r, &keys, second * 1000, (second + 1) * 1000, |_, out| {
                for j in 0..5000 {
                    out.push((j * PERIOD_NS / 5000, rng.random_range(0..KEYS), 100, j % 10 == 0));
                }
            });
            assert_eq!(events, vec![], "at {second} s");
            most = most.max(r.level_sizes().1);
        }
        assert_eq!(most, 0, "5 requests/s a key is never a candidate");
        assert_eq!(r.hot_keys().count(), 0);
    }

    #[test]
    fn the_levels_stay_bounded_and_the_heaviest_keys_survive_eviction() {
        // 100 candidates, key i at 40 + i requests a period (400/s to
        // 1,390/s), round-robin, with 100 keys seen once after every round
        // (13,900 a period).
        const ROUNDS: u64 = 139;
        const ONCE: usize = 100;
        let mut keys: Vec<String> = (0..100).map(|i| format!("c{i:02}")).collect();
        let once = ROUNDS as usize * ONCE;
        keys.extend((0..10 * once).map(|j| format!("once{j:06}")));
        let period = |p: usize, out: &mut Vec<Req>| {
            let mut seq = Vec::new();
            let mut j = 100 + p * once;
            for round in 1..=ROUNDS {
                seq.extend((0..100).filter(|&i| 40 + i as u64 >= round));
                seq.extend(j..j + ONCE);
                j += ONCE;
            }
            let n = seq.len() as u64;
            out.extend(seq.into_iter().enumerate().map(|(x, k)| (x as u64 * PERIOD_NS / n, k, 100, false)));
        };
        let heaviest: Vec<&str> = keys[36..100].iter().map(String::as_str).collect();
        let mut r = Recognizer::new(HotKeyConfig::default());
        let mut reqs = Vec::new();
        period(0, &mut reqs);
        for &(off, k, bytes, write) in &reqs {
            r.observe(SimTime(off), &keys[k], bytes, write);
            assert_bounded(&r);
        }
        // Every candidate reached 30 requests by round 30 and c00 to c63
        // took level 1; from round 41 on, each round the lightest resident
        // (one that stopped) gave way to the next heavier candidate, so c99
        // got in at round 76. It waited in level 0 meanwhile, touched every
        // round while 7,600 keys seen once went through it (more than it
        // holds): level 0 ends with the 4,096 most recent of those.
        assert_eq!(r.level_sizes(), (LEVEL0_KEYS_MAX, LEVEL1_KEYS_MAX));
        assert_eq!(r.level1.keys().map(String::as_str).collect::<Vec<_>>(), heaviest);
        let recent: Vec<&str> = keys[100 + once - LEVEL0_KEYS_MAX..100 + once].iter().map(String::as_str).collect();
        assert_eq!(r.level0.keys().map(String::as_str).collect::<Vec<_>>(), recent);
        assert_eq!(r.tick(ms(100)), vec![]);
        assert_eq!(r.level_sizes(), (0, LEVEL1_KEYS_MAX));
        // Later periods: the lighter candidates, with one period's counts,
        // never outweigh a resident's window.
        let events = run(&mut r, &keys, 100, 1000, |start, out| period(start as usize / 100, out));
        assert_eq!(events, vec![]);
        assert_eq!(r.level1.keys().map(String::as_str).collect::<Vec<_>>(), heaviest);
    }

    #[test]
    fn hot_keys_are_never_evicted_and_a_full_level_of_them_takes_no_candidate() {
        // 65 keys at 200 requests/s of 64 KiB: traffic hotspots, each
        // promoted at its second request; only 64 fit.
        let keys: Vec<String> = (0..=LEVEL1_KEYS_MAX).map(|i| format!("t{i:02}")).collect();
        let mut r = Recognizer::new(HotKeyConfig::default());
        let events = run(&mut r, &keys, 0, 2000, |_, out| {
            for x in 0..20 {
                out.extend((0..keys.len()).map(|k| (x * PERIOD_NS / 20, k, 64 << 10, false)));
            }
        });
        let want: Vec<(u64, &str, &str)> = keys[..LEVEL1_KEYS_MAX].iter().map(|k| (400, "hot", k.as_str())).collect();
        assert_eq!(summary(&events), want);
        assert!(r.hot("t64").is_none() && !r.level1.contains_key("t64"));
        assert!(r.lightest.is_empty());
    }

    #[test]
    fn reads_and_writes_are_counted_apart() {
        let keys = names(&["rw", "w"]);
        let mut r = Recognizer::new(HotKeyConfig::default());
        let events = run(&mut r, &keys, 0, 1000, |_, out| {
            steady(out, 1, 400, 100, true);
            steady(out, 0, 200, 100, false);
            out.extend((0..200).map(|i| (i * PERIOD_NS / 200 + 250_000, 0, 100, true)));
        });
        let rw = HotKey { key: "rw".into(), kind: HotKind::Qps, reads_per_s: 1600, writes_per_s: 1600, bytes_per_s: 320_000, since: ms(400) };
        let w = HotKey { key: "w".into(), kind: HotKind::Qps, reads_per_s: 0, writes_per_s: 3200, bytes_per_s: 320_000, since: ms(400) };
        assert_eq!(events, vec![(400, HotEvent::Hot(rw)), (400, HotEvent::Hot(w))]);
        let rates = |k: &str| r.hot(k).map(|h| (h.reads_per_s, h.writes_per_s, h.bytes_per_s));
        assert_eq!(rates("rw"), Some((2000, 2000, 400_000)));
        assert_eq!(rates("w"), Some((0, 4000, 400_000)));
    }

    #[test]
    fn missed_ticks_age_the_window_as_if_none_had_been_missed() {
        let keys = names(&["a", "b"]);
        let mut r = Recognizer::new(HotKeyConfig::default());
        // a at 5,000/s (hot), b at 2,000/s (a candidate), ticking.
        let events = run(&mut r, &keys, 0, 1000, |_, out| {
            steady(out, 0, 500, 100, false);
            steady(out, 1, 200, 100, false);
        });
        assert_eq!(summary(&events), vec![(300, "hot", "a")]);
        // a goes on until 1.2 s with no tick, then stops; the next tick
        // is at 1.4 s: its window holds the periods of 0.9 to 1.2 s (500
        // each) and two empty ones.
        for p in 10..12 {
            for off in (0..PERIOD_NS).step_by(200_000) {
                r.observe(ms(p * 100) + Duration::from_nanos(off), "a", 100, false);
            }
        }
        assert_eq!(r.tick(ms(1400)), vec![]);
        assert_eq!(r.hot("a").map(|h| h.reads_per_s), Some(3000));
        assert!(r.level1.contains_key("b"), "200 requests in the window keep b a candidate");
        assert_eq!(r.tick(ms(1400)), vec![], "a second tick at the same time closes nothing");
        // Two seconds without a tick: a's window emptied by 1.7 s, its
        // tenth calm period ended at 2.5 s; b went back to level 0.
        assert_eq!(r.tick(ms(3400)), vec![HotEvent::Cooled { key: "a".into() }]);
        assert_eq!(r.level_sizes(), (0, 0));
        // Starting again, a needs a whole window's worth once more.
        let events = run(&mut r, &keys, 3400, 4000, |_, out| steady(out, 0, 500, 100, false));
        let want = HotKey { key: "a".into(), kind: HotKind::Qps, reads_per_s: 3000, writes_per_s: 0, bytes_per_s: 300_000, since: ms(3700) };
        assert_eq!(events, vec![(3700, HotEvent::Hot(want))]);
        // An hour without a tick: the closes stop once nothing is left.
        assert_eq!(r.tick(ms(4000 + 3_600_000)), vec![HotEvent::Cooled { key: "a".into() }]);
        assert_eq!(r.level_sizes(), (0, 0));
        assert_eq!(r.next_tick(), ms(3_604_100));
    }

    #[test]
    fn a_request_after_a_period_ended_counts_in_the_next_one_whether_or_not_the_tick_came_first() {
        let keys = names(&["k"]);
        let mut ticked = Recognizer::new(HotKeyConfig::default());
        run(&mut ticked, &keys, 0, 100, |_, out| steady(out, 0, 500, 100, false));
        ticked.observe(ms(150), "k", 100, false);
        let mut late = ticked.clone();
        // At 0.2 s exactly: one tick before the request, one after.
        assert_eq!(ticked.tick(ms(200)), vec![]);
        ticked.observe(ms(200), "k", 100, false);
        late.observe(ms(200), "k", 100, false);
        assert_eq!(late.tick(ms(200)), vec![]);
        let ring = |r: &Recognizer| r.level1["k"].ring.iter().map(Counts::requests).collect::<Vec<_>>();
        assert_eq!((ring(&late), ring(&ticked)), (vec![500, 1], vec![500, 1]));
        assert_eq!((late.level1["k"].cur, ticked.level1["k"].cur), (Counts::of(1, 100, false), Counts::of(1, 100, false)));
        assert_eq!(late.next_tick(), ms(300));
    }

    #[test]
    fn reset_forgets_everything() {
        let keys = names(&["k"]);
        let mut r = Recognizer::new(HotKeyConfig::default());
        let events = run(&mut r, &keys, 0, 500, |_, out| steady(out, 0, 500, 100, false));
        assert_eq!(summary(&events), vec![(300, "hot", "k")]);
        r.reset();
        assert_eq!((r.hot("k"), r.hot_keys().count(), r.level_sizes()), (None, 0, (0, 0)));
        // The integrator forgets the hot set itself: no Cooled; and the
        // key needs a whole window again.
        let events = run(&mut r, &keys, 500, 1000, |_, out| steady(out, 0, 500, 100, false));
        assert_eq!(summary(&events), vec![(800, "hot", "k")]);
    }
}
