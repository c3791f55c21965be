//! The run's event log and its digest.
//!
//! Every semantic event (a message delivered or dropped, a disk operation, a
//! fault, a client operation and its result) is folded into a stable 64-bit
//! hash: the run's digest, printed in every report. Two runs of one seed
//! must produce the same digest; `check-determinism` keeps the events
//! themselves (up to [`KEPT_EVENTS_MAX`]) to name the first one where two
//! runs diverge. madsim's own determinism check only sees its random calls,
//! not data, so this log is what proves determinism.

use std::fmt;

use crate::time::SimTime;

/// A word-at-a-time multiplicative hash with a splitmix64 finaliser: stable
/// across platforms, compilers and releases (unlike `std`'s `DefaultHasher`),
/// and cheap enough to hash every event of a run.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl StableHasher {
    pub const fn new() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
    pub fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(MIX).rotate_left(31);
    }
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.write_u64(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }
    pub fn write_str(&mut self, s: &str) {
        self.write_u64(s.len() as u64);
        self.write_bytes(s.as_bytes());
    }
    pub fn finish(&self) -> u64 {
        // splitmix64 finaliser
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Hash of a byte string, for events that mention data.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::new();
    h.write_bytes(bytes);
    h.finish()
}

/// One semantic event. Node ids are indices into the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message handed to its receiver.
    Deliver { at: SimTime, from: u32, to: u32, kind: &'static str, rpc: u64 },
    /// A message that vanished: lost, cut off, dead receiver, full mailbox.
    Drop { at: SimTime, from: u32, to: u32, kind: &'static str, reason: &'static str },
    /// A disk operation completed (`ok = false` when it returned an error).
    Disk { at: SimTime, node: u32, op: &'static str, file: u64, offset: u64, len: u64, data: u64, ok: bool },
    /// A fault verb applied.
    Fault { at: SimTime, text: String },
    /// A client operation completed (from the workloads of the root package).
    Client { at: SimTime, process: u64, text: String },
    /// Anything else worth hashing (engine decisions, node starts).
    Note { at: SimTime, node: u32, text: String },
}

impl Event {
    pub fn at(&self) -> SimTime {
        match self {
            Event::Deliver { at, .. }
            | Event::Drop { at, .. }
            | Event::Disk { at, .. }
            | Event::Fault { at, .. }
            | Event::Client { at, .. }
            | Event::Note { at, .. } => *at,
        }
    }

    fn hash_into(&self, h: &mut StableHasher) {
        match self {
            Event::Deliver { at, from, to, kind, rpc } => {
                h.write_u64(1);
                h.write_u64(at.0);
                h.write_u64(u64::from(*from) << 32 | u64::from(*to));
                h.write_str(kind);
                h.write_u64(*rpc);
            }
            Event::Drop { at, from, to, kind, reason } => {
                h.write_u64(2);
                h.write_u64(at.0);
                h.write_u64(u64::from(*from) << 32 | u64::from(*to));
                h.write_str(kind);
                h.write_str(reason);
            }
            Event::Disk { at, node, op, file, offset, len, data, ok } => {
                h.write_u64(3);
                h.write_u64(at.0);
                h.write_u64(u64::from(*node));
                h.write_str(op);
                h.write_u64(*file);
                h.write_u64(*offset);
                h.write_u64(*len);
                h.write_u64(*data);
                h.write_u64(u64::from(*ok));
            }
            Event::Fault { at, text } => {
                h.write_u64(4);
                h.write_u64(at.0);
                h.write_str(text);
            }
            Event::Client { at, process, text } => {
                h.write_u64(5);
                h.write_u64(at.0);
                h.write_u64(*process);
                h.write_str(text);
            }
            Event::Note { at, node, text } => {
                h.write_u64(6);
                h.write_u64(at.0);
                h.write_u64(u64::from(*node));
                h.write_str(text);
            }
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Deliver { at, from, to, kind, rpc } => write!(f, "{at} deliver {kind} n{from}->n{to} rpc={rpc}"),
            Event::Drop { at, from, to, kind, reason } => write!(f, "{at} drop {kind} n{from}->n{to} ({reason})"),
            Event::Disk { at, node, op, file, offset, len, data, ok } => {
                write!(f, "{at} disk n{node} {op} file={file:016x} off={offset} len={len} data={data:016x} ok={ok}")
            }
            Event::Fault { at, text } => write!(f, "{at} fault {text}"),
            Event::Client { at, process, text } => write!(f, "{at} client p{process} {text}"),
            Event::Note { at, node, text } => write!(f, "{at} note n{node} {text}"),
        }
    }
}

/// Events kept in memory for divergence reports (later events are hashed only).
pub const KEPT_EVENTS_MAX: usize = 4_000_000;

/// The digest of a run: how many events and their folded hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
pub struct Digest {
    pub events: u64,
    pub hash: u64,
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.hash)
    }
}

#[derive(Debug, Default)]
pub struct EventLog {
    hash: StableHasher,
    count: u64,
    keep: bool,
    kept: Vec<Event>,
}

impl EventLog {
    pub fn new(keep: bool) -> EventLog {
        EventLog { hash: StableHasher::new(), count: 0, keep, kept: Vec::new() }
    }
    pub fn record(&mut self, e: Event) {
        e.hash_into(&mut self.hash);
        self.count += 1;
        if self.keep && self.kept.len() < KEPT_EVENTS_MAX {
            self.kept.push(e);
        }
    }
    pub fn digest(&self) -> Digest {
        Digest { events: self.count, hash: self.hash.finish() }
    }
    pub fn take_kept(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.kept)
    }
}

/// The first index at which two kept logs differ, if any.
pub fn first_divergence(a: &[Event], b: &[Event]) -> Option<usize> {
    let common = a.len().min(b.len());
    (0..common).find(|&i| a[i] != b[i]).or(if a.len() != b.len() { Some(common) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_every_field_and_order() {
        let e1 = Event::Fault { at: SimTime(5), text: "zone-down az1".into() };
        let e2 = Event::Note { at: SimTime(6), node: 1, text: "x".into() };
        let mut a = EventLog::new(false);
        a.record(e1.clone());
        a.record(e2.clone());
        let mut b = EventLog::new(false);
        b.record(e2);
        b.record(e1.clone());
        assert_ne!(a.digest(), b.digest());
        let mut c = EventLog::new(false);
        c.record(Event::Fault { at: SimTime(5), text: "zone-down az2".into() });
        let mut d = EventLog::new(false);
        d.record(e1);
        assert_ne!(c.digest(), d.digest());
        // A known value pins the hash function: a change here changes every
        // digest, so every snapshot.
        assert_eq!(hash_bytes(b"tablesim"), 0xd03a_16a9_6af8_789c);
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"a\0"));
        assert_ne!(hash_bytes(b"abcdefgh"), hash_bytes(b"abcdefgh\0"));
    }

    #[test]
    fn divergence_is_found() {
        let ev = |t| Event::Note { at: SimTime(t), node: 0, text: String::new() };
        assert_eq!(first_divergence(&[ev(1), ev(2)], &[ev(1), ev(2)]), None);
        assert_eq!(first_divergence(&[ev(1), ev(2)], &[ev(1), ev(3)]), Some(1));
        assert_eq!(first_divergence(&[ev(1)], &[ev(1), ev(3)]), Some(1));
    }
}
