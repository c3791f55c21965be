//! Traffic control's cores, as pure state machines (time in, decisions
//! out); the proxy, the master and the table server drive them.
//!
//! - [`TokenBucket`]: integer token bucket (micro-requests), a stated
//!   burst, no window boundary to double at.
//! - [`ShareDivider`]: the master's half of the instance-wide limiter. Each
//!   quota's rate `R` is cut in two: a floor of [`FLOOR_PERMILLE`]‰ of `R`,
//!   split evenly over the configured proxies, which a proxy holds without
//!   any lease; and the rest, `D`, leased to proxies in shares re-divided
//!   by their reported demand (max-min fair; what no proxy asks for is
//!   split evenly). A grant never lets the shares that proxies may still
//!   hold add up to more than `D`: a share taken from one proxy is given to
//!   another only once the first has reported that it applied the smaller
//!   grant, or its lease ran out. So the instance's admitted rate stays
//!   within `R` (and its burst) whatever proxies fail, and a proxy that
//!   cannot renew falls back to its floor (fail-safe, not fail-open).
//! - [`ProxyLimiter`]: the proxy's half: buckets at its floor plus its
//!   leased share, demand counted per report period.
//! - [`PartitionController`]: a table server's active partition traffic
//!   control: per-partition statistics, and a hot partition throttled while
//!   others wait for the server's CPU.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sim::time::SimTime;
use sim::topology::NodeId;

use super::{Op, PartitionId};

/// Per mille of a quota's rate that the proxies hold without a lease
/// (split evenly): what each may admit when it cannot reach the master.
pub const FLOOR_PERMILLE: u64 = 30;
/// How long a proxy may use a leased share after it sent the report the
/// grant answered (less [`SHARE_SKEW`], on its own clock). Proxies report
/// every heartbeat, so a lease spans a few reports and one lost message
/// does not drop a proxy to its floor; a crashed proxy's share is given
/// to the others `SHARE_LEASE + SHARE_SKEW` after its last grant.
pub const SHARE_LEASE: Duration = Duration::from_millis(300);
/// Clock error a share's lease tolerates (it ends this much early at the
/// proxy and is waited out this much longer by the master). Shorter than
/// the partition leases' `max_skew`: a share is measured on one clock over
/// a few hundred milliseconds, where only drift counts, and a clock that
/// jumps further makes the quota's accuracy worse for one lease, not two
/// owners of one partition.
pub const SHARE_SKEW: Duration = Duration::from_millis(50);
/// Grants per proxy the divider remembers (those the proxy may still be
/// using); a proxy with this many unconfirmed live grants gets no new one
/// until some run out.
pub const GRANTS_HELD_MAX: usize = 32;
/// Quotas one instance may have (per table and operation kind).
pub const QUOTAS_PER_INSTANCE_MAX: usize = 64;
/// Quotas the whole service may have.
pub const QUOTAS_MAX: usize = 4096;
/// Fewest requests a bucket holds (a share too small for one request
/// would never admit any).
pub const BUCKET_MIN: u64 = 1;
/// The retry hint of a bucket whose rate is 0.
pub const EMPTY_RETRY: Duration = Duration::from_secs(1);
/// Answered scans a proxy remembers per rows quota: a scan is charged,
/// when admitted, the most rows any of them got (at most what it asks
/// for), and settled once answered.
pub const SCAN_ROWS_REMEMBERED: usize = 8;

const MICRO: i128 = 1_000_000;

/// The kind of operation a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpClass {
    Read,
    Write,
    Scan,
}

impl OpClass {
    pub fn of(op: &Op) -> OpClass {
        match op {
            Op::Get { .. } | Op::GetRow { .. } => OpClass::Read,
            Op::Scan { .. } => OpClass::Scan,
            Op::Put { .. } | Op::Cas { .. } | Op::Delete { .. } | Op::Append { .. } => OpClass::Write,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OpClass::Read => "read",
            OpClass::Write => "write",
            OpClass::Scan => "scan",
        }
    }
    pub fn parse(s: &str) -> Option<OpClass> {
        match s {
            "read" => Some(OpClass::Read),
            "write" => Some(OpClass::Write),
            "scan" => Some(OpClass::Scan),
            _ => None,
        }
    }
}

/// What a quota counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Requests.
    #[default]
    Requests,
    /// Bytes of row data: a write's when it is admitted, a read's or
    /// scan's once answered.
    Bytes,
    /// Rows: a write's or read's one, a scan's once answered.
    Rows,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Bytes => "bytes",
            Unit::Rows => "rows",
        }
    }
}

/// What one quota limits: an instance's requests (or bytes, or rows) of
/// one kind, or one table's of that instance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaKey {
    pub instance: String,
    pub table: Option<String>,
    pub class: OpClass,
    #[serde(default)]
    pub unit: Unit,
}

impl std::fmt::Display for QuotaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            Some(t) => write!(f, "table {}/{} {}", self.instance, t, self.class.name())?,
            None => write!(f, "instance {} {}", self.instance, self.class.name())?,
        }
        match self.unit {
            Unit::Requests => Ok(()),
            u => write!(f, " {}", u.name()),
        }
    }
}

/// What a request costs a quota of each unit: charged when it is admitted
/// (a write's bytes and row; a read's row; the rows a scan asks for, which
/// a rows quota lowers to an estimate: [`ProxyLimiter::charge_of`]), then
/// settled once it is answered (a read's or scan's bytes charged, a scan's
/// rows settled to what it got).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub bytes: u64,
    pub rows: u64,
}

impl Cost {
    fn of(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Requests => 1,
            Unit::Bytes => self.bytes,
            Unit::Rows => self.rows,
        }
    }
}

/// A rate in requests per second and the burst above it: a bucket of
/// `burst` requests refilled at `rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub rate: u64,
    pub burst: u64,
}

/// One stored quota of an instance (`tbl/quota/{instance}` holds a list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaEntry {
    /// `None`: the whole instance.
    pub table: Option<String>,
    pub class: OpClass,
    #[serde(default)]
    pub unit: Unit,
    pub limit: Limit,
}

impl QuotaEntry {
    pub fn key(&self, instance: &str) -> QuotaKey {
        QuotaKey { instance: instance.to_string(), table: self.table.clone(), class: self.class, unit: self.unit }
    }
}

/// The metadata key of an instance's quotas.
pub fn quota_key(instance: &str) -> String {
    format!("{}{instance}", super::QUOTA_PREFIX)
}

// ---- token bucket ----------------------------------------------------------

/// A token bucket in micro-units: `rate` units per second, at most
/// `burst` (at least [`BUCKET_MIN`]) held; starts full. What is charged
/// after the fact (a read's bytes) may take it below zero, down to
/// [`DEBT_BURSTS_MAX`] bursts: nothing passes until the debt is repaid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    rate: u64,
    cap: i128,
    tokens: i128,
    at: SimTime,
}

/// The most a bucket may owe, in bursts.
pub const DEBT_BURSTS_MAX: i128 = 16;

impl TokenBucket {
    pub fn new(rate: u64, burst: u64, now: SimTime) -> TokenBucket {
        let cap = i128::from(burst.max(BUCKET_MIN)) * MICRO;
        TokenBucket { rate, cap, tokens: cap, at: now }
    }

    fn refill(&mut self, now: SimTime) {
        if now > self.at {
            let ns = now.saturating_sub(self.at).as_nanos();
            // rate units/s = rate * 1e6 micro per 1e9 ns.
            self.tokens = (self.tokens + i128::from(self.rate) * i128::try_from(ns).unwrap_or(i128::MAX / 4) / 1000).min(self.cap);
            self.at = now;
        }
    }

    /// Changes the rate and burst from `now` on (what was earned so far at
    /// the old rate is kept, up to the new burst).
    pub fn set(&mut self, rate: u64, burst: u64, now: SimTime) {
        self.refill(now);
        self.rate = rate;
        self.cap = i128::from(burst.max(BUCKET_MIN)) * MICRO;
        self.tokens = self.tokens.min(self.cap);
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether one unit may pass now, without taking it; else how long
    /// until it could.
    pub fn check(&mut self, now: SimTime) -> Result<(), Duration> {
        self.check_n(now, 1)
    }

    /// Whether `n` units may pass now (at most a burst's worth is asked
    /// for: a larger request passes on a full bucket and leaves a debt).
    pub fn check_n(&mut self, now: SimTime, n: u64) -> Result<(), Duration> {
        self.refill(now);
        let need = (i128::from(n.max(1)) * MICRO).min(self.cap);
        if self.tokens >= need {
            return Ok(());
        }
        if self.rate == 0 {
            return Err(EMPTY_RETRY);
        }
        let missing = need - self.tokens;
        // ns = micro * 1000 / rate, rounded up.
        let rate = i128::from(self.rate);
        let ns = (missing * 1000 + rate - 1) / rate;
        Err(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Takes one unit (after a successful [`TokenBucket::check`]).
    pub fn take(&mut self, now: SimTime) {
        self.take_n(now, 1);
    }

    /// Gives back `n` units taken too many (up to its burst).
    pub fn give_n(&mut self, now: SimTime, n: u64) {
        self.refill(now);
        self.tokens = (self.tokens + i128::from(n) * MICRO).min(self.cap);
    }

    /// Takes `n` units, owing what it does not hold (at most
    /// [`DEBT_BURSTS_MAX`] bursts).
    pub fn take_n(&mut self, now: SimTime, n: u64) {
        self.refill(now);
        self.tokens = (self.tokens - i128::from(n) * MICRO).max(-self.cap * DEBT_BURSTS_MAX);
    }
}

// ---- the master's divider ----------------------------------------------------

/// A proxy's report to the master, sent every heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReport {
    /// (master epoch, grant sequence) of the grant the proxy uses now.
    pub applied: Option<(u64, u64)>,
    /// The shares (requests per second) it holds under that grant.
    pub held: Vec<(QuotaKey, u64)>,
    /// Requests offered per second since its last report, per quota.
    pub demand: Vec<(QuotaKey, u64)>,
}

/// The master's answer: every quota's limit, and the proxy's leased
/// share of each (on top of its floor), valid for the lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaGrant {
    pub epoch: u64,
    pub seq: u64,
    pub limits: Vec<(QuotaKey, Limit)>,
    pub shares: Vec<(QuotaKey, u64)>,
}

/// The floor (requests per second) each of `proxies` proxies holds of a
/// quota of `rate`.
pub fn floor_of(rate: u64, proxies: usize) -> u64 {
    rate * FLOOR_PERMILLE / 1000 / (proxies.max(1) as u64)
}

/// The leased part of a quota of `rate` (what the floors leave).
pub fn leased_of(rate: u64, proxies: usize) -> u64 {
    rate - floor_of(rate, proxies) * proxies.max(1) as u64
}

#[derive(Clone, Debug)]
struct Sent {
    seq: u64,
    /// Until when (divider clock) the proxy may use it: `lease + max_skew`
    /// after it was sent.
    until: SimTime,
    shares: BTreeMap<QuotaKey, u64>,
}

#[derive(Clone, Debug, Default)]
struct ProxyView {
    heard: Option<SimTime>,
    demand: BTreeMap<QuotaKey, u64>,
    /// Shares it reported holding under another divider's grant, and until
    /// when they may be used.
    foreign: BTreeMap<QuotaKey, u64>,
    foreign_until: SimTime,
    /// This divider's grants it may still use.
    sent: VecDeque<Sent>,
}

/// The master's share divider (see the module doc).
#[derive(Clone, Debug)]
pub struct ShareDivider {
    epoch: u64,
    proxies: Vec<NodeId>,
    lease: Duration,
    max_skew: Duration,
    since: SimTime,
    seq: u64,
    limits: BTreeMap<QuotaKey, Limit>,
    views: BTreeMap<NodeId, ProxyView>,
}

impl ShareDivider {
    /// A divider of master `epoch` that started at `now`, for the
    /// configured `proxies`.
    pub fn new(epoch: u64, proxies: Vec<NodeId>, lease: Duration, max_skew: Duration, now: SimTime) -> ShareDivider {
        ShareDivider { epoch, proxies, lease, max_skew, since: now, seq: 0, limits: BTreeMap::new(), views: BTreeMap::new() }
    }

    fn hold(&self) -> Duration {
        self.lease + self.max_skew
    }

    /// Replaces one instance's quotas.
    pub fn set_instance(&mut self, instance: &str, entries: &[QuotaEntry]) {
        self.limits.retain(|k, _| k.instance != instance);
        for e in entries {
            if self.limits.len() < QUOTAS_MAX {
                self.limits.insert(e.key(instance), e.limit);
            }
        }
    }

    pub fn limits(&self) -> &BTreeMap<QuotaKey, Limit> {
        &self.limits
    }

    /// The most of key `k` that proxy `p` may be using now.
    fn held(&self, p: NodeId, k: &QuotaKey, now: SimTime) -> u64 {
        let Some(v) = self.views.get(&p) else { return 0 };
        let foreign = if now < v.foreign_until { v.foreign.get(k).copied().unwrap_or(0) } else { 0 };
        let mine = v.sent.iter().filter(|s| now < s.until).map(|s| s.shares.get(k).copied().unwrap_or(0)).max().unwrap_or(0);
        foreign.max(mine)
    }

    /// Whether every configured proxy has reported to this divider, or the
    /// grants of an earlier divider have run out anyway.
    fn settled(&self, now: SimTime) -> bool {
        now >= self.since + self.hold() || self.proxies.iter().all(|p| self.views.get(p).is_some_and(|v| v.heard.is_some()))
    }

    /// The target shares of `k` among the proxies heard within the lease:
    /// max-min fair by demand, the rest split evenly.
    fn targets(&self, k: &QuotaKey, dynamic: u64, now: SimTime) -> BTreeMap<NodeId, u64> {
        let live: Vec<(NodeId, u64)> = self
            .views
            .iter()
            .filter(|(_, v)| v.heard.is_some_and(|h| now < h + self.lease))
            .map(|(&p, v)| (p, v.demand.get(k).copied().unwrap_or(0)))
            .collect();
        let mut out: BTreeMap<NodeId, u64> = live.iter().map(|&(p, _)| (p, 0)).collect();
        if live.is_empty() {
            return out;
        }
        // Water-filling: satisfy the smallest demands first.
        let mut order = live.clone();
        order.sort_by_key(|&(p, d)| (d, p));
        let mut left = dynamic;
        let mut n = order.len() as u64;
        for &(p, d) in &order {
            let fair = left / n;
            let give = d.min(fair);
            out.insert(p, give);
            left -= give;
            n -= 1;
        }
        // What nobody asked for: evenly (the lowest ids take the remainder).
        let n = live.len() as u64;
        let each = left / n;
        let mut extra = left % n;
        for (_, s) in out.iter_mut() {
            *s += each;
            if extra > 0 {
                *s += 1;
                extra -= 1;
            }
        }
        out
    }

    /// A proxy's report: its grant, or `None` when it still has
    /// [`GRANTS_HELD_MAX`] live grants it has not confirmed.
    pub fn report(&mut self, now: SimTime, proxy: NodeId, r: QuotaReport) -> Option<QuotaGrant> {
        let hold = self.hold();
        let epoch = self.epoch;
        let v = self.views.entry(proxy).or_default();
        v.heard = Some(now);
        v.demand = r.demand.into_iter().collect();
        match r.applied {
            Some((e, seq)) if e == epoch => {
                // Grants older than the one it uses are never used again.
                v.sent.retain(|s| s.seq >= seq);
                v.foreign.clear();
            }
            Some(_) => {
                v.foreign = r.held.into_iter().collect();
                v.foreign_until = now + hold;
            }
            None => v.foreign.clear(),
        }
        v.sent.retain(|s| now < s.until);
        if v.sent.len() >= GRANTS_HELD_MAX {
            return None;
        }
        let settled = self.settled(now);
        let n = self.proxies.len();
        let mut shares = BTreeMap::new();
        for (k, l) in &self.limits {
            let dynamic = leased_of(l.rate, n);
            let target = self.targets(k, dynamic, now).get(&proxy).copied().unwrap_or(0);
            let others: u64 = self.views.keys().filter(|&&p| p != proxy).map(|&p| self.held(p, k, now)).sum();
            let mut share = target.min(dynamic.saturating_sub(others));
            if !settled {
                // A proxy not heard yet may hold an earlier master's share:
                // renew, never grow, until it reports or that share ran out.
                share = share.min(self.held(proxy, k, now));
            }
            shares.insert(k.clone(), share);
        }
        self.seq += 1;
        let seq = self.seq;
        let v = self.views.get_mut(&proxy).expect("inserted");
        v.sent.push_back(Sent { seq, until: now + hold, shares: shares.clone() });
        Some(QuotaGrant { epoch, seq, limits: self.limits.iter().map(|(k, l)| (k.clone(), *l)).collect(), shares: shares.into_iter().collect() })
    }
}

// ---- the proxy's limiter -----------------------------------------------------

/// Why a request was refused by a quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub key: QuotaKey,
    pub limit: Limit,
    pub retry_after: Duration,
}

/// Requests a proxy saw per quota, since some start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub offered: u64,
    pub admitted: u64,
    pub throttled: u64,
    /// Units (requests, bytes or rows) charged for what was admitted.
    pub units: u64,
    /// Units asked for, admitted or not (what a refused request would
    /// have been charged when admitted).
    pub offered_units: u64,
}

#[derive(Clone, Debug)]
struct Held {
    epoch: u64,
    seq: u64,
    /// Local time until which the shares may be used.
    until: SimTime,
    shares: BTreeMap<QuotaKey, u64>,
}

/// The proxy's limiter (see the module doc).
#[derive(Clone, Debug)]
pub struct ProxyLimiter {
    proxies: usize,
    lease: Duration,
    max_skew: Duration,
    limits: BTreeMap<QuotaKey, Limit>,
    held: Option<Held>,
    buckets: BTreeMap<QuotaKey, TokenBucket>,
    window: BTreeMap<QuotaKey, u64>,
    window_start: SimTime,
    /// Per scan rows quota: the rows the last answered scans got (at most
    /// [`SCAN_ROWS_REMEMBERED`], newest last).
    scan_rows: BTreeMap<QuotaKey, VecDeque<u64>>,
}

impl ProxyLimiter {
    pub fn new(proxies: usize, lease: Duration, max_skew: Duration, now: SimTime) -> ProxyLimiter {
        ProxyLimiter { proxies, lease, max_skew, limits: BTreeMap::new(), held: None, buckets: BTreeMap::new(), window: BTreeMap::new(), window_start: now, scan_rows: BTreeMap::new() }
    }

    /// The rate (requests per second) and burst this proxy may admit of `k`.
    pub fn allowance(&self, k: &QuotaKey, now: SimTime) -> Option<Limit> {
        let l = self.limits.get(k)?;
        let share = self.held.as_ref().filter(|h| now < h.until).and_then(|h| h.shares.get(k).copied()).unwrap_or(0);
        let rate = floor_of(l.rate, self.proxies) + share;
        // The burst in proportion to the rate (the proxies' bursts add up
        // to the quota's).
        let burst = if l.rate == 0 { 0 } else { (u128::from(l.burst) * u128::from(rate) / u128::from(l.rate)) as u64 };
        Some(Limit { rate, burst })
    }

    fn retune(&mut self, now: SimTime) {
        let keys: Vec<QuotaKey> = self.limits.keys().cloned().collect();
        self.buckets.retain(|k, _| self.limits.contains_key(k));
        self.scan_rows.retain(|k, _| self.limits.contains_key(k));
        for k in keys {
            let a = self.allowance(&k, now).expect("known");
            match self.buckets.get_mut(&k) {
                Some(b) => b.set(a.rate, a.burst, now),
                None => {
                    self.buckets.insert(k, TokenBucket::new(a.rate, a.burst, now));
                }
            }
        }
    }

    /// Whether it holds a live grant of the master's.
    pub fn leased(&self, now: SimTime) -> bool {
        self.held.as_ref().is_some_and(|h| now < h.until)
    }

    /// One instance's quotas as read from the metadata store (a proxy that
    /// has no grant yet still holds its floors).
    pub fn set_instance(&mut self, now: SimTime, instance: &str, entries: &[QuotaEntry]) {
        if self.held.as_ref().is_some_and(|h| now < h.until) {
            return;
        }
        let before = self.limits.len();
        self.limits.retain(|k, _| k.instance != instance);
        let mut changed = before != self.limits.len();
        for e in entries.iter().take(QUOTAS_PER_INSTANCE_MAX) {
            let k = e.key(instance);
            if self.limits.len() < QUOTAS_MAX {
                changed |= self.limits.insert(k, e.limit).is_none_or(|old| old != e.limit);
            }
        }
        if changed || before != self.limits.len() {
            self.retune(now);
        }
    }

    /// A grant that answers the report sent at `asked` (local clock).
    pub fn grant(&mut self, asked: SimTime, now: SimTime, g: QuotaGrant) {
        if let Some(h) = &self.held {
            if (h.epoch, h.seq) >= (g.epoch, g.seq) {
                return;
            }
        }
        self.limits = g.limits.into_iter().take(QUOTAS_MAX).collect();
        self.held = Some(Held { epoch: g.epoch, seq: g.seq, until: asked + self.lease.saturating_sub(self.max_skew), shares: g.shares.into_iter().collect() });
        self.retune(now);
    }

    /// The report for the master; starts a new demand window.
    pub fn report(&mut self, now: SimTime) -> QuotaReport {
        let ns = now.saturating_sub(self.window_start).as_nanos().max(1);
        let demand = std::mem::take(&mut self.window).into_iter().map(|(k, n)| (k, (u128::from(n) * 1_000_000_000 / ns) as u64)).collect();
        self.window_start = now;
        let live = self.held.as_ref().filter(|h| now < h.until);
        QuotaReport {
            applied: self.held.as_ref().map(|h| (h.epoch, h.seq)),
            held: live.map(|h| h.shares.iter().map(|(k, &s)| (k.clone(), s)).collect()).unwrap_or_default(),
            demand,
        }
    }

    /// The quotas that cover a request of `class` on `instance`'s `table`.
    pub fn covering(&self, instance: &str, table: &str, class: OpClass) -> Vec<QuotaKey> {
        if self.limits.is_empty() {
            return Vec::new();
        }
        let k = |table: Option<&str>, unit| QuotaKey { instance: instance.to_string(), table: table.map(str::to_string), class, unit };
        let mut v = Vec::new();
        for unit in [Unit::Requests, Unit::Bytes, Unit::Rows] {
            for t in [None, Some(table)] {
                let key = k(t, unit);
                if self.limits.contains_key(&key) {
                    v.push(key);
                }
            }
        }
        v
    }

    /// Whether a request of `class` on `instance`'s `table`, costing
    /// `cost` when admitted, may pass: every quota that covers it must
    /// admit it (none is charged unless all do). The first that refuses
    /// is named. Returns the quotas charged, with what each was charged.
    pub fn admit(&mut self, now: SimTime, instance: &str, table: &str, class: OpClass, cost: Cost) -> Result<Vec<(QuotaKey, u64)>, Throttle> {
        if self.limits.is_empty() {
            return Ok(Vec::new());
        }
        // The lease may have run out since the last grant: back to floors.
        if self.held.as_ref().is_some_and(|h| now >= h.until && !h.shares.is_empty()) {
            if let Some(h) = self.held.as_mut() {
                h.shares.clear();
            }
            self.retune(now);
        }
        let keys = self.covering(instance, table, class);
        let mut refused = None;
        let mut charges = Vec::with_capacity(keys.len());
        for k in keys {
            let n = self.charge_of(&k, cost);
            *self.window.entry(k.clone()).or_default() += n;
            if refused.is_none() {
                if let Err(wait) = self.buckets.get_mut(&k).expect("retuned").check_n(now, n) {
                    refused = Some(Throttle { key: k.clone(), limit: self.limits[&k], retry_after: wait });
                }
            }
            charges.push((k, n));
        }
        if let Some(t) = refused {
            return Err(t);
        }
        for (k, n) in &charges {
            if let Some(b) = self.buckets.get_mut(k) {
                b.take_n(now, *n);
            }
        }
        Ok(charges)
    }

    /// What quota `k` charges a request costing `cost` when it is
    /// admitted: a scan's rows are the most the last answered scans got
    /// (what it asks for until one was answered); anything else its cost.
    /// Charging the rows a scan asks for would hold them until it is
    /// answered, and what it gives back then is lost whenever the bucket
    /// has refilled meanwhile: a quota whose scans get fewer rows than
    /// they ask for would admit a fraction of its rate.
    pub fn charge_of(&self, k: &QuotaKey, cost: Cost) -> u64 {
        let n = cost.of(k.unit);
        if k.unit != Unit::Rows || k.class != OpClass::Scan {
            return n;
        }
        match self.scan_rows.get(k).and_then(|v| v.iter().max()) {
            Some(&most) => most.clamp(1, n.max(1)),
            None => n,
        }
    }

    /// An admitted request once answered (`actual`: what it cost; `None`
    /// when it failed, which keeps every charge): each quota in `charged`
    /// (what [`ProxyLimiter::admit`] charged it) is charged what the
    /// request cost beyond that (a read's bytes, a scan's rows over its
    /// estimate), or given back what it was charged too much (a scan's
    /// rows it did not get). Returns the change per quota.
    pub fn settle(&mut self, now: SimTime, charged: &[(QuotaKey, u64)], actual: Option<Cost>) -> Vec<(QuotaKey, i64)> {
        let Some(actual) = actual else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (k, b) in charged {
            let (b, a) = (*b, actual.of(k.unit));
            if k.unit == Unit::Rows && k.class == OpClass::Scan && self.limits.contains_key(k) {
                let seen = self.scan_rows.entry(k.clone()).or_default();
                if seen.len() == SCAN_ROWS_REMEMBERED {
                    seen.pop_front();
                }
                seen.push_back(a);
            }
            if a == b {
                continue;
            }
            if let Some(bucket) = self.buckets.get_mut(k) {
                if a > b {
                    bucket.take_n(now, a - b);
                    *self.window.entry(k.clone()).or_default() += a - b;
                } else {
                    bucket.give_n(now, b - a);
                }
                changed.push((k.clone(), a as i64 - b as i64));
            }
        }
        changed
    }
}

// ---- partition traffic control -----------------------------------------------

/// A throttled partition's burst, as a fraction of a second of its rate.
pub const PART_BURST_DIVISOR: u64 = 100;
/// A partition is hot when it took more than this many times its fair
/// share (the server's busy time over the partitions that had requests).
pub const HOT_FACTOR: u64 = 2;
/// Nor is a partition hot that took less than this fraction (per mille) of
/// the server's busy time: a server whose load is spread over its
/// partitions, if unevenly, is overloaded, not hogged, and throttling its
/// busiest partitions would only refuse what it would have served late.
pub const HOT_SHARE_MIN_PERMILLE: u64 = 250;
/// A hot partition's allowed rate is cut to this fraction (per mille) of
/// its admitted rate each period the server stays contended.
pub const CUT_PERMILLE: u64 = 700;
/// Each calm period a throttled partition's allowed rate grows by this
/// fraction (per mille); once it is twice the admitted rate, the limit goes.
pub const GROW_PERMILLE: u64 = 200;
/// Partitions one server keeps statistics of.
pub const TRACKED_MAX: usize = 16_384;

/// One partition's work in one period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartStats {
    pub requests: u64,
    pub rows: u64,
    pub bytes: u64,
    /// CPU time (ns) its requests cost.
    pub cpu_ns: u64,
    pub throttled: u64,
}

/// The table server's partition controller. Every request is asked
/// through [`PartitionController::admit`] before it touches the engine;
/// its cost is reported through [`PartitionController::done`]; each
/// `tick` (every heartbeat) says whether other work waited for the CPU
/// (contended). A partition that took more than [`HOT_FACTOR`] times its
/// fair share, and at least [`HOT_SHARE_MIN_PERMILLE`] of a contended
/// server, gets a token bucket at the rate at which it would take that
/// share, reached in steps of at most [`CUT_PERMILLE`] per period; calm
/// periods grow it back, and it goes once it no longer binds.
#[derive(Clone, Debug, Default)]
pub struct PartitionController {
    period: BTreeMap<PartitionId, PartStats>,
    last: BTreeMap<PartitionId, PartStats>,
    limits: BTreeMap<PartitionId, TokenBucket>,
}

impl PartitionController {
    pub fn new() -> PartitionController {
        PartitionController::default()
    }

    /// Whether a request of `pid` may run now; else its retry hint.
    pub fn admit(&mut self, now: SimTime, pid: PartitionId) -> Result<(), Duration> {
        if self.period.len() >= TRACKED_MAX && !self.period.contains_key(&pid) {
            return Ok(());
        }
        let s = self.period.entry(pid).or_default();
        if let Some(b) = self.limits.get_mut(&pid) {
            if let Err(wait) = b.check(now) {
                s.throttled += 1;
                return Err(wait);
            }
            b.take(now);
        }
        s.requests += 1;
        Ok(())
    }

    /// Lifts `pid`'s limit at once: its load changed in kind (a hot key of
    /// it is now combined or read from HotZones, so the rate its limit was
    /// cut to, measured at the old cost per request, no longer says what it
    /// takes of the server). Returns whether it was limited.
    pub fn release(&mut self, pid: PartitionId) -> bool {
        self.limits.remove(&pid).is_some()
    }

    /// What an admitted request cost.
    pub fn done(&mut self, pid: PartitionId, cpu: Duration, rows: u64, bytes: u64) {
        if let Some(s) = self.period.get_mut(&pid) {
            s.cpu_ns += u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
            s.rows += rows;
            s.bytes += bytes;
        }
    }

    /// The end of a period of length `len`; `contended`: data work waited
    /// for the CPU in it. Returns the partitions newly throttled.
    pub fn tick(&mut self, now: SimTime, len: Duration, contended: bool) -> Vec<PartitionId> {
        let period = std::mem::take(&mut self.period);
        let ns = u64::try_from(len.as_nanos()).unwrap_or(u64::MAX).max(1);
        let per_sec = |n: u64| n.saturating_mul(1_000_000_000) / ns;
        let mut newly = Vec::new();
        let active: Vec<(&PartitionId, &PartStats)> = period.iter().filter(|(_, s)| s.requests > 0).collect();
        let total: u64 = active.iter().map(|(_, s)| s.cpu_ns).sum();
        let n = active.len() as u64;
        if contended && n > 1 {
            let fair = total / n;
            for (&pid, s) in &active {
                let share = fair.saturating_mul(HOT_FACTOR).max(total / 1000 * HOT_SHARE_MIN_PERMILLE);
                if s.cpu_ns > share {
                    // The rate at which it would take its allowed share,
                    // reached in steps of at most CUT_PERMILLE.
                    let admitted = per_sec(s.requests);
                    let target = (u128::from(admitted) * u128::from(share) / u128::from(s.cpu_ns.max(1))) as u64;
                    let rate = target.max(admitted * CUT_PERMILLE / 1000).max(1);
                    match self.limits.get_mut(&pid) {
                        Some(b) => b.set(rate.min(b.rate()), (rate / PART_BURST_DIVISOR).max(1), now),
                        None => {
                            self.limits.insert(pid, TokenBucket::new(rate, (rate / PART_BURST_DIVISOR).max(1), now));
                            newly.push(pid);
                        }
                    }
                }
            }
        } else if !contended {
            let mut gone = Vec::new();
            for (&pid, b) in self.limits.iter_mut() {
                let admitted = per_sec(period.get(&pid).map_or(0, |s| s.requests));
                if b.rate() >= admitted.saturating_mul(2).max(1) && period.get(&pid).is_none_or(|s| s.throttled == 0) {
                    gone.push(pid);
                } else {
                    let rate = b.rate() + (b.rate() * GROW_PERMILLE / 1000).max(1);
                    b.set(rate, (rate / PART_BURST_DIVISOR).max(1), now);
                }
            }
            for pid in gone {
                self.limits.remove(&pid);
            }
        }
        self.last = period;
        newly
    }

    /// Statistics of the last complete period.
    pub fn last_period(&self) -> &BTreeMap<PartitionId, PartStats> {
        &self.last
    }

    /// Whether `pid` has a limit now.
    pub fn is_limited(&self, pid: PartitionId) -> bool {
        self.limits.contains_key(&pid)
    }

    /// The partitions throttled now, with their allowed rate.
    pub fn throttled(&self) -> Vec<(PartitionId, u64)> {
        self.limits.iter().map(|(&p, b)| (p, b.rate())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> SimTime {
        SimTime::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn a_bucket_admits_its_burst_then_exactly_its_rate() {
        let mut b = TokenBucket::new(100, 10, t(0));
        let mut admitted = 0;
        for _ in 0..50 {
            if b.check(t(0)).is_ok() {
                b.take(t(0));
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10, "the burst");
        assert_eq!(b.check(t(0)), Err(Duration::from_millis(10)), "one request per 10 ms");
        // Over the next second, requests every millisecond: 100 pass.
        let mut n = 0;
        for ms in 1..=1000 {
            if b.check(t(ms)).is_ok() {
                b.take(t(ms));
                n += 1;
            }
        }
        assert_eq!(n, 100);
        // Idle for 10 s: the bucket holds the burst, not more.
        let mut n = 0;
        for _ in 0..100 {
            if b.check(t(11_000)).is_ok() {
                b.take(t(11_000));
                n += 1;
            }
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn a_bucket_at_rate_zero_admits_its_burst_and_then_nothing() {
        let mut b = TokenBucket::new(0, 1, t(0));
        assert!(b.check(t(0)).is_ok());
        b.take(t(0));
        assert_eq!(b.check(t(60_000)), Err(EMPTY_RETRY));
    }

    #[test]
    fn lowering_a_bucket_keeps_at_most_the_new_burst() {
        let mut b = TokenBucket::new(1000, 100, t(0));
        b.set(10, 2, t(5));
        let mut n = 0;
        while b.check(t(5)).is_ok() {
            b.take(t(5));
            n += 1;
        }
        assert_eq!(n, 2);
    }

    const ONE: Cost = Cost { bytes: 0, rows: 1 };

    #[test]
    fn a_charge_after_the_fact_leaves_a_debt_that_blocks_until_repaid() {
        let mut b = TokenBucket::new(1000, 100, t(0));
        // A request larger than the burst passes on a full bucket only.
        assert!(b.check_n(t(0), 500).is_ok());
        b.take_n(t(0), 500);
        // 400 owed: nothing passes for 401 ms (400 to repay, then 1).
        assert_eq!(b.check(t(0)), Err(Duration::from_millis(401)));
        assert!(b.check(t(400)).is_err());
        assert!(b.check(t(401)).is_ok());
        // The debt is bounded: 16 bursts.
        b.take_n(t(401), 1_000_000);
        assert_eq!(b.check(t(401)), Err(Duration::from_millis(1601)));
    }

    #[test]
    fn a_bytes_quota_charges_writes_when_admitted_and_reads_once_answered() {
        let mut p = ProxyLimiter::new(1, Duration::from_millis(300), Duration::from_millis(50), t(0));
        let bytes = |class| QuotaEntry { table: None, class, unit: Unit::Bytes, limit: Limit { rate: 100_000, burst: 1000 } };
        p.set_instance(t(0), "b", &[bytes(OpClass::Write), bytes(OpClass::Read)]);
        let wk = QuotaKey { instance: "b".into(), table: None, class: OpClass::Write, unit: Unit::Bytes };
        let rk = QuotaKey { class: OpClass::Read, ..wk.clone() };
        // One proxy's floor: 3% of 100 kB/s, its burst 30 bytes.
        assert_eq!(p.allowance(&wk, t(0)), Some(Limit { rate: 3000, burst: 30 }));
        // A 20-byte write passes, a second does not (10 bytes left).
        let w = Cost { bytes: 20, rows: 1 };
        assert_eq!(p.admit(t(0), "b", "rows", OpClass::Write, w), Ok(vec![(wk.clone(), 20)]));
        let e = p.admit(t(0), "b", "rows", OpClass::Write, w).unwrap_err();
        assert_eq!((e.key, e.retry_after), (wk.clone(), Duration::from_nanos(3_333_334)), "10 bytes at 3000/s");
        // A read is admitted on any credit and charged its 200 bytes after.
        let r = Cost { bytes: 0, rows: 1 };
        assert_eq!(p.admit(t(0), "b", "rows", OpClass::Read, r), Ok(vec![(rk.clone(), 0)]));
        assert_eq!(p.settle(t(0), &[(rk.clone(), 0)], Some(Cost { bytes: 200, rows: 1 })), vec![(rk.clone(), 200)]);
        // 170 bytes owed: the next read waits 171 bytes' time.
        let e = p.admit(t(0), "b", "rows", OpClass::Read, r).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_millis(57));
        assert!(p.admit(t(57), "b", "rows", OpClass::Read, r).is_ok());
        // Demand counts the units offered: 20 + 20 + 200 + 0 + 0 bytes.
        let report = p.report(t(100));
        assert_eq!(report.demand, vec![(rk, 2000), (wk, 400)]);
    }

    #[test]
    fn a_scan_is_charged_the_most_rows_recent_scans_got_and_settled_once_answered() {
        let mut p = ProxyLimiter::new(1, Duration::from_millis(300), Duration::from_millis(50), t(0));
        p.set_instance(t(0), "b", &[QuotaEntry { table: None, class: OpClass::Scan, unit: Unit::Rows, limit: Limit { rate: 100_000, burst: 10_000 } }]);
        let k = QuotaKey { instance: "b".into(), table: None, class: OpClass::Scan, unit: Unit::Rows };
        // One proxy's floor: 3,000 rows/s, a burst of 300.
        let scan = Cost { bytes: 0, rows: 100 };
        // No scan answered yet: charged the 100 rows it asks for; it got
        // 10, so 90 come back.
        assert_eq!(p.admit(t(0), "b", "t", OpClass::Scan, scan), Ok(vec![(k.clone(), 100)]));
        assert_eq!(p.settle(t(0), &[(k.clone(), 100)], Some(Cost { bytes: 0, rows: 10 })), vec![(k.clone(), -90)]);
        // Now charged the most any recent scan got: 10, then 30.
        assert_eq!(p.admit(t(0), "b", "t", OpClass::Scan, scan), Ok(vec![(k.clone(), 10)]));
        assert_eq!(p.settle(t(0), &[(k.clone(), 10)], Some(Cost { bytes: 0, rows: 30 })), vec![(k.clone(), 20)], "the rows over the estimate are owed");
        assert_eq!(p.charge_of(&k, scan), 30);
        // Never more than it asks for, never less than one row.
        assert_eq!(p.charge_of(&k, Cost { bytes: 0, rows: 5 }), 5);
        for _ in 0..SCAN_ROWS_REMEMBERED {
            assert_eq!(p.settle(t(0), &[(k.clone(), 30)], Some(Cost { bytes: 0, rows: 0 })), vec![(k.clone(), -30)]);
        }
        assert_eq!(p.charge_of(&k, scan), 1, "only the last {SCAN_ROWS_REMEMBERED} scans count");
        // A failed scan keeps its charge and teaches nothing.
        assert_eq!(p.settle(t(0), &[(k.clone(), 1)], None), vec![]);
        assert_eq!(p.charge_of(&k, scan), 1);
        // The bucket is full again (what came back is capped at its
        // burst of 300): the first scan is charged 1 row and owes the 49
        // more it got, the next ones 50 each, so it pays for exactly six.
        let mut admitted = 0;
        while let Ok(c) = p.admit(t(0), "b", "t", OpClass::Scan, scan) {
            p.settle(t(0), &c, Some(Cost { bytes: 0, rows: 50 }));
            admitted += 1;
        }
        assert_eq!(admitted, 6, "300 rows pay for six scans of 50");
    }

    fn key(i: &str, class: OpClass) -> QuotaKey {
        QuotaKey { instance: i.into(), table: None, class, unit: Unit::Requests }
    }

    fn divider(n: u32) -> ShareDivider {
        let mut d = ShareDivider::new(1, (1..=n).map(NodeId).collect(), Duration::from_millis(600), Duration::from_millis(200), t(0));
        d.set_instance("b", &[QuotaEntry { table: None, class: OpClass::Write, unit: Unit::Requests, limit: Limit { rate: 1000, burst: 100 } }]);
        d
    }

    fn report(d: &mut ShareDivider, now: u64, p: u32, applied: Option<u64>, demand: u64) -> u64 {
        let g = d.report(t(now), NodeId(p), QuotaReport { applied: applied.map(|s| (1, s)), held: vec![], demand: vec![(key("b", OpClass::Write), demand)] }).expect("a grant");
        assert_eq!(g.limits, vec![(key("b", OpClass::Write), Limit { rate: 1000, burst: 100 })]);
        g.shares[0].1
    }

    #[test]
    fn floors_and_leases_add_up_to_the_quota() {
        assert_eq!(floor_of(1000, 3), 10);
        assert_eq!(leased_of(1000, 3), 970);
        assert_eq!(floor_of(1000, 3) * 3 + leased_of(1000, 3), 1000);
        assert_eq!(floor_of(7, 3) * 3 + leased_of(7, 3), 7);
    }

    /// The invariant: what the proxies may hold adds up to at most the
    /// leased part of the quota.
    fn assert_within(d: &ShareDivider, now: u64) {
        let k = key("b", OpClass::Write);
        let held: u64 = d.views.keys().map(|&p| d.held(p, &k, t(now))).sum();
        assert!(held <= leased_of(1000, d.proxies.len()), "at {now}: proxies may hold {held}");
    }

    #[test]
    fn the_divider_gives_by_demand_and_never_more_than_the_proxies_may_still_hold() {
        let mut d = divider(3);
        // (time, proxy, the grant it applied, its demand, expected share).
        // The leased part is 970 (3 floors of 10).
        let steps: [(u64, u32, Option<u64>, u64, u64); 15] = [
            // Until all three reported, nothing grows.
            (0, 1, None, 800, 0),
            (1, 2, None, 50, 0),
            // Settled. Targets: 50 and 50 and 800, the 70 left evenly
            // (24, 23, 23): 824, 73, 73.
            (2, 3, None, 50, 73),
            (100, 1, Some(1), 800, 824),
            (101, 2, Some(2), 50, 73),
            (102, 3, Some(3), 50, 73),
            // Proxy 1 wants 100 now: targets 357, 307, 306.
            (200, 1, Some(4), 100, 357),
            // Proxy 3 wants 900: its target is 820, but proxy 1 may still
            // use the grant of 824 until it confirms the next one.
            (201, 3, Some(6), 900, 73),
            (300, 1, Some(7), 100, 100),
            (301, 2, Some(5), 50, 50),
            // Proxy 1 may still hold 357 (its grant of 200), proxy 2 73.
            (302, 3, Some(8), 900, 540),
            (400, 1, Some(9), 100, 100),
            (401, 2, Some(10), 50, 50),
            // Everybody confirmed: proxy 3 has its target.
            (402, 3, Some(11), 900, 820),
            (500, 1, Some(12), 100, 100),
        ];
        for (now, p, applied, demand, want) in steps {
            assert_eq!(report(&mut d, now, p, applied, demand), want, "at {now}, proxy {p}");
            assert_within(&d, now);
        }
    }

    #[test]
    fn a_silent_proxys_share_is_given_away_only_after_its_lease() {
        let mut d = divider(2);
        assert_eq!(report(&mut d, 0, 1, None, 400), 0);
        // Targets 400 and 400, the 170 left evenly: 485 each.
        assert_eq!(report(&mut d, 0, 2, None, 400), 485);
        assert_eq!(report(&mut d, 100, 1, Some(1), 400), 485);
        assert_eq!(report(&mut d, 100, 2, Some(2), 400), 485);
        // Proxy 2 falls silent; proxy 1 wants 900. Proxy 2's grant of 100
        // may be used until 100 + lease + skew = 900.
        let mut applied = 3;
        for now in (200..=800).step_by(100) {
            assert_eq!(report(&mut d, now, 1, Some(applied), 900), 485, "at {now}");
            assert_within(&d, now);
            applied += 1;
        }
        // Alone now: its demand and what nobody asked for.
        assert_eq!(report(&mut d, 900, 1, Some(applied), 900), 970);
        assert_within(&d, 900);
    }

    #[test]
    fn a_new_divider_never_grows_a_share_until_every_proxy_reported() {
        let mut d = ShareDivider::new(2, vec![NodeId(1), NodeId(2)], Duration::from_millis(600), Duration::from_millis(200), t(5000));
        d.set_instance("b", &[QuotaEntry { table: None, class: OpClass::Write, unit: Unit::Requests, limit: Limit { rate: 1000, burst: 100 } }]);
        let k = key("b", OpClass::Write);
        let ask = |d: &mut ShareDivider, now: u64, p: u32, applied: (u64, u64), held: u64, demand: u64| {
            let g = d.report(t(now), NodeId(p), QuotaReport { applied: Some(applied), held: vec![(k.clone(), held)], demand: vec![(k.clone(), demand)] }).unwrap();
            assert_within(d, now);
            g.shares[0].1
        };
        // Proxy 1 holds 700 of the old master's (epoch 1) grant: renewed,
        // not grown, while proxy 2 is unheard.
        assert_eq!(ask(&mut d, 5000, 1, (1, 9), 700, 900), 700);
        // Proxy 2 holds 270 of the old master's; its target is 40 (10 and
        // 900, the 60 left evenly).
        assert_eq!(ask(&mut d, 5010, 2, (1, 8), 270, 10), 40);
        // Proxy 2 may still use its old 270: proxy 1 keeps 700, not 930.
        assert_eq!(ask(&mut d, 5100, 1, (2, 1), 700, 900), 700);
        assert_eq!(ask(&mut d, 5110, 2, (2, 2), 40, 10), 40);
        // Both on this master's grants: proxy 1 gets its target.
        assert_eq!(ask(&mut d, 5200, 1, (2, 3), 700, 900), 930);
    }

    #[test]
    fn a_proxy_admits_its_floor_without_a_grant_and_its_share_while_leased() {
        let mut p = ProxyLimiter::new(3, Duration::from_millis(600), Duration::from_millis(200), t(0));
        p.set_instance(t(0), "b", &[QuotaEntry { table: None, class: OpClass::Write, unit: Unit::Requests, limit: Limit { rate: 1000, burst: 100 } }]);
        // Floor: 10/s, burst 1.
        let count = |p: &mut ProxyLimiter, from: u64, to: u64| (from..to).filter(|&ms| p.admit(t(ms), "b", "rows", OpClass::Write, ONE).is_ok()).count();
        assert_eq!(count(&mut p, 0, 1000), 10);
        // Other kinds and instances are not limited.
        assert!(p.admit(t(1000), "b", "rows", OpClass::Read, ONE).is_ok());
        assert!(p.admit(t(1000), "a", "rows", OpClass::Write, ONE).is_ok());
        let k = key("b", OpClass::Write);
        p.grant(t(1000), t(1001), QuotaGrant { epoch: 1, seq: 1, limits: vec![(k.clone(), Limit { rate: 1000, burst: 100 })], shares: vec![(k.clone(), 490)] });
        assert_eq!(p.allowance(&k, t(1001)), Some(Limit { rate: 500, burst: 50 }));
        // The lease runs 400 ms from the report (600 - 200): then the floor.
        assert_eq!(p.allowance(&k, t(1399)), Some(Limit { rate: 500, burst: 50 }));
        assert_eq!(p.allowance(&k, t(1400)), Some(Limit { rate: 10, burst: 1 }));
        // An older grant never replaces a newer one.
        p.grant(t(1000), t(1002), QuotaGrant { epoch: 1, seq: 0, limits: vec![(k.clone(), Limit { rate: 1000, burst: 100 })], shares: vec![(k.clone(), 900)] });
        assert_eq!(p.allowance(&k, t(1002)), Some(Limit { rate: 500, burst: 50 }));
        let r = p.report(t(1100));
        assert_eq!(r.applied, Some((1, 1)));
        assert_eq!(r.held, vec![(k.clone(), 490)]);
    }

    #[test]
    fn a_request_is_charged_to_no_quota_unless_every_quota_admits_it() {
        let mut p = ProxyLimiter::new(1, Duration::from_millis(600), Duration::from_millis(200), t(0));
        p.set_instance(
            t(0),
            "b",
            &[
                QuotaEntry { table: None, class: OpClass::Read, unit: Unit::Requests, limit: Limit { rate: 1000, burst: 5 } },
                QuotaEntry { table: Some("t".into()), class: OpClass::Read, unit: Unit::Requests, limit: Limit { rate: 1000, burst: 2 } },
            ],
        );
        let ik = key("b", OpClass::Read);
        let tk = QuotaKey { table: Some("t".into()), ..ik.clone() };
        // One proxy: its floor is 3% (30/s), burst in proportion (0 -> 1).
        assert_eq!(p.allowance(&ik, t(0)), Some(Limit { rate: 30, burst: 0 }));
        assert!(p.admit(t(0), "b", "t", OpClass::Read, ONE).is_ok());
        let e = p.admit(t(0), "b", "t", OpClass::Read, ONE).unwrap_err();
        assert_eq!(e.key, ik, "the instance quota refuses first");
        // Another table of b: only the instance quota applies, and it was
        // not charged by the refused request.
        assert!(p.admit(t(34), "b", "u", OpClass::Read, ONE).is_ok());
        let e = p.admit(t(34), "b", "t", OpClass::Read, ONE).unwrap_err();
        assert_eq!(e.key, ik);
        let _ = tk;
        let r = p.report(t(100));
        assert_eq!(r.demand.iter().find(|(k, _)| *k == ik).map(|x| x.1), Some(40), "4 offered in 100 ms");
    }

    const P: Duration = Duration::from_millis(100);

    #[test]
    fn the_partition_controller_throttles_the_hog_of_a_contended_server_only() {
        let mut c = PartitionController::new();
        let run = |c: &mut PartitionController, start: u64, hot: u64, cold: u64| -> (u64, u64) {
            let (mut h, mut k) = (0, 0);
            for i in 0..hot {
                if c.admit(t(start) + Duration::from_micros(i * 100_000 / hot), 1).is_ok() {
                    c.done(1, Duration::from_micros(100), 1, 100);
                    h += 1;
                }
            }
            for i in 0..cold {
                if c.admit(t(start) + Duration::from_micros(i * 100_000 / cold), 2 + i % 4).is_ok() {
                    c.done(2 + i % 4, Duration::from_micros(100), 1, 100);
                    k += 1;
                }
            }
            (h, k)
        };
        // Not contended: nothing is throttled however skewed.
        assert_eq!(run(&mut c, 0, 500, 40), (500, 40));
        assert!(c.tick(t(100), P, false).is_empty());
        // Contended: partition 1 took 500 of 540 requests' CPU.
        assert_eq!(run(&mut c, 100, 500, 40), (500, 40));
        assert_eq!(c.tick(t(200), P, true), vec![1]);
        assert_eq!(c.throttled(), vec![(1, 3500)]);
        // Next period: 1 may take 350 in 100 ms plus its burst of 35 (10 ms
        // of its rate), 2..5 all.
        let (h, k) = run(&mut c, 200, 500, 40);
        assert!((340..=385).contains(&h), "{h}");
        assert_eq!(k, 40);
        assert!(c.last_period().is_empty() || c.last_period().contains_key(&1));
        c.tick(t(300), P, true);
        assert!(c.throttled()[0].1 < 3500, "cut again while contended");
        // Calm: the limit grows back, then goes.
        let mut calm = 0;
        while !c.throttled().is_empty() {
            calm += 1;
            assert!(calm < 100, "the limit never went");
            run(&mut c, 300 + calm * 100, 20, 0);
            c.tick(t(400 + calm * 100), P, false);
        }
        // One partition alone is never "more than its share".
        run(&mut c, 20_000, 500, 0);
        assert!(c.tick(t(20_100), P, true).is_empty());
    }
}
