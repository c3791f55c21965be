//! A proxy's HotZone: copies of hot keys' values, served to the clients
//! that chose this proxy for them, as a pure state machine (time in,
//! decisions out; the proxy performs the reads).
//!
//! **Why on the proxies.** Every request already passes through a proxy,
//! and proxies hold no partition: a HotZone there adds no hop to a hit,
//! spreads a hot key's reads over every proxy instead of every table server
//! (whose cores serve the partitions), and a proxy's crash loses nothing
//! but copies. A HotZone on the table servers would put the copies on the
//! machines that are already loaded by the hot key's partition and its
//! neighbours, and a client would need a second route (to a non-owner
//! server) besides the proxy's.
//!
//! **Staleness.** An entry is the value a source read (at the key's owner,
//! linearizable) returned, stamped with the time the proxy *sent* that read:
//! the read took effect at or after the stamp, so the value was the key's
//! latest at some moment at or after it. An entry is served only while
//! younger than the staleness bound `S`, and the client checks the age
//! again when the answer arrives: a HotZone read completing at `t` returns
//! a value that was the latest at some moment in `[t - S, t]` (the bounded
//! staleness the history checker verifies).
//!
//! **Refresh ahead.** A hit on an entry older than `S / 2` asks the proxy to
//! refresh it in the background (one refresh at a time per entry), so that
//! under steady demand entries are renewed before they expire and the
//! owner sees about one read per proxy per `S / 2` for the key. The refresh
//! read carries the hits the entry served since the last one, so that the
//! owner's recognizer still sees the key's whole demand.
//!
//! **Hot no more.** An owner answers a source read of a key that is not
//! hot (any more) with a plain value: the proxy drops the entry.

use std::collections::BTreeMap;
use std::time::Duration;

use sim::time::SimTime;

/// Keys one proxy's HotZone holds at most; a fill beyond it evicts the
/// entry hit least recently.
pub const HOTZONE_KEYS_MAX: usize = 1024;

/// (instance, table, key).
pub type HotKeyId = (String, String, String);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    value: Option<String>,
    /// When the source read that returned `value` was sent.
    filled_at: SimTime,
    /// Hits since the last source read was sent.
    hits: u64,
    /// A refresh is under way.
    refreshing: bool,
    last_hit: SimTime,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HotLookup {
    /// A copy young enough; `refresh`: the caller should refresh it in the
    /// background now (reporting [`HotZone::take_hits`]).
    Hit { value: Option<String>, filled_at: SimTime, refresh: bool },
    /// No copy, or one too old: read the source.
    Miss,
}

/// One proxy's HotZone.
#[derive(Clone, Debug)]
pub struct HotZone {
    staleness: Duration,
    entries: BTreeMap<HotKeyId, Entry>,
    hits: u64,
    misses: u64,
}

impl HotZone {
    /// A HotZone whose copies are served while younger than `staleness`.
    pub fn new(staleness: Duration) -> HotZone {
        HotZone { staleness, entries: BTreeMap::new(), hits: 0, misses: 0 }
    }

    pub fn staleness(&self) -> Duration {
        self.staleness
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (hits, misses) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// A read of `id` at `now`.
    pub fn lookup(&mut self, now: SimTime, id: &HotKeyId) -> HotLookup {
        let half = self.staleness / 2;
        match self.entries.get_mut(id) {
            Some(e) if now.saturating_sub(e.filled_at) < self.staleness => {
                self.hits += 1;
                e.hits += 1;
                e.last_hit = now;
                let refresh = !e.refreshing && now.saturating_sub(e.filled_at) >= half;
                if refresh {
                    e.refreshing = true;
                }
                HotLookup::Hit { value: e.value.clone(), filled_at: e.filled_at, refresh }
            }
            _ => {
                self.misses += 1;
                HotLookup::Miss
            }
        }
    }

    /// A source read of `id` is being sent: the hits to report to the owner
    /// with it (taken, so that no hit is reported twice).
    pub fn take_hits(&mut self, id: &HotKeyId) -> u64 {
        self.entries.get_mut(id).map_or(0, |e| std::mem::take(&mut e.hits))
    }

    /// A source read sent at `sent` answered `value` and the owner called
    /// the key hot: keep the copy unless a newer one is held.
    pub fn fill(&mut self, sent: SimTime, id: &HotKeyId, value: Option<String>) {
        if let Some(e) = self.entries.get_mut(id) {
            if sent >= e.filled_at {
                e.value = value;
                e.filled_at = sent;
            }
            e.refreshing = false;
            return;
        }
        if self.entries.len() >= HOTZONE_KEYS_MAX {
            let coldest = self.entries.iter().min_by_key(|(k, e)| (e.last_hit, *k)).map(|(k, _)| k.clone());
            if let Some(k) = coldest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(id.clone(), Entry { value, filled_at: sent, hits: 0, refreshing: false, last_hit: sent });
    }

    /// A source read of `id` answered, but the owner no longer calls the
    /// key hot: drop the copy.
    pub fn cooled(&mut self, id: &HotKeyId) {
        self.entries.remove(id);
    }

    /// A background refresh of `id` failed: the next hit past half the
    /// bound may try again.
    pub fn refresh_failed(&mut self, id: &HotKeyId) {
        if let Some(e) = self.entries.get_mut(id) {
            e.refreshing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: &str) -> HotKeyId {
        ("i".into(), "t".into(), k.into())
    }

    fn ms(n: u64) -> SimTime {
        SimTime(n * 1_000_000)
    }

    #[test]
    fn a_copy_is_served_while_younger_than_the_bound_and_refreshed_after_half_of_it() {
        let mut z = HotZone::new(Duration::from_millis(20));
        assert_eq!(z.lookup(ms(0), &id("k")), HotLookup::Miss);
        z.fill(ms(1), &id("k"), Some("a".into()));
        assert_eq!(z.lookup(ms(5), &id("k")), HotLookup::Hit { value: Some("a".into()), filled_at: ms(1), refresh: false });
        // Past half the bound: one refresh asked, not two.
        assert_eq!(z.lookup(ms(11), &id("k")), HotLookup::Hit { value: Some("a".into()), filled_at: ms(1), refresh: true });
        assert_eq!(z.lookup(ms(12), &id("k")), HotLookup::Hit { value: Some("a".into()), filled_at: ms(1), refresh: false });
        assert_eq!(z.take_hits(&id("k")), 3);
        assert_eq!(z.take_hits(&id("k")), 0);
        // At the bound the copy is too old.
        assert_eq!(z.lookup(ms(21), &id("k")), HotLookup::Miss);
        // The refresh lands: served again, from its send time.
        z.fill(ms(19), &id("k"), Some("b".into()));
        assert_eq!(z.lookup(ms(21), &id("k")), HotLookup::Hit { value: Some("b".into()), filled_at: ms(19), refresh: false });
        assert_eq!(z.lookup(ms(28), &id("k")), HotLookup::Hit { value: Some("b".into()), filled_at: ms(19), refresh: false });
        assert_eq!(z.lookup(ms(38), &id("k")), HotLookup::Hit { value: Some("b".into()), filled_at: ms(19), refresh: true });
        assert_eq!(z.lookup(ms(39), &id("k")), HotLookup::Miss);
        assert_eq!(z.counts(), (6, 3));
    }

    #[test]
    fn an_older_fill_never_replaces_a_newer_copy() {
        let mut z = HotZone::new(Duration::from_millis(20));
        z.fill(ms(10), &id("k"), Some("new".into()));
        z.fill(ms(5), &id("k"), Some("old".into()));
        assert_eq!(z.lookup(ms(11), &id("k")), HotLookup::Hit { value: Some("new".into()), filled_at: ms(10), refresh: false });
    }

    #[test]
    fn a_failed_refresh_lets_the_next_hit_try_again_and_a_cooled_key_is_dropped() {
        let mut z = HotZone::new(Duration::from_millis(20));
        z.fill(ms(0), &id("k"), None);
        assert!(matches!(z.lookup(ms(10), &id("k")), HotLookup::Hit { refresh: true, value: None, .. }));
        assert!(matches!(z.lookup(ms(11), &id("k")), HotLookup::Hit { refresh: false, .. }));
        z.refresh_failed(&id("k"));
        assert!(matches!(z.lookup(ms(12), &id("k")), HotLookup::Hit { refresh: true, .. }));
        z.cooled(&id("k"));
        assert_eq!(z.lookup(ms(13), &id("k")), HotLookup::Miss);
        assert!(z.is_empty());
    }

    #[test]
    fn the_zone_is_bounded_and_evicts_the_key_hit_least_recently() {
        let mut z = HotZone::new(Duration::from_secs(10));
        for i in 0..HOTZONE_KEYS_MAX {
            z.fill(ms(i as u64), &id(&format!("k{i}")), None);
        }
        // k0 is hit last, so k1 is the coldest.
        assert!(matches!(z.lookup(ms(5000), &id("k0")), HotLookup::Hit { .. }));
        z.fill(ms(5001), &id("new"), None);
        assert_eq!(z.len(), HOTZONE_KEYS_MAX);
        assert!(matches!(z.lookup(ms(5002), &id("k0")), HotLookup::Hit { .. }));
        assert_eq!(z.lookup(ms(5002), &id("k1")), HotLookup::Miss);
        assert!(matches!(z.lookup(ms(5002), &id("new")), HotLookup::Hit { .. }));
    }
}
