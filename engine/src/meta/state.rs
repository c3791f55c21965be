//! The replicated state machine of the metadata store: a sorted key-value
//! map with compare-and-set. Stream and extent metadata, the partition map
//! and the master role are layered on it as keys.
//!
//! Invariants: commands are applied exactly once each, in log order (the
//! index given to [`MetaState::apply`] is always `applied + 1`); applying the
//! same commands in the same order yields the same map on every replica.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest key a proposal may carry, in bytes.
pub const KEY_LEN_MAX: usize = 256;
/// Largest value a proposal may carry, in bytes.
pub const VALUE_LEN_MAX: usize = 64 * 1024;
/// Client sessions remembered for de-duplication; beyond it the one used
/// least recently is forgotten (its retries could then apply twice).
pub const SESSIONS_MAX: usize = 4096;
/// Keys one transaction may check plus write.
pub const TXN_KEYS_MAX: usize = 256;

/// A command in the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Appended by every new leader to commit the entries of earlier terms.
    Noop,
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
    /// Sets `key` to `new` (deletes it when `None`) only if it currently
    /// holds `expected` (is absent when `None`).
    Cas { key: String, expected: Option<Vec<u8>>, new: Option<Vec<u8>> },
    /// A multi-key transaction: if every `checks` key holds exactly the
    /// given value (is absent when `None`), applies every write in order
    /// (a put, or a delete when `None`); otherwise changes nothing.
    Txn { checks: Vec<(String, Option<Vec<u8>>)>, writes: Vec<(String, Option<Vec<u8>>)> },
    /// A client's write `seq` (increasing per client, one outstanding at a
    /// time). Applied once: a retry of the latest `seq` returns the outcome
    /// remembered from the first apply, and an older `seq` (whose answer
    /// the client no longer waits for) changes nothing either.
    Request { client: u64, seq: u64, command: Box<Command> },
}

impl Command {
    /// Whether the command respects [`KEY_LEN_MAX`] and [`VALUE_LEN_MAX`].
    pub fn within_bounds(&self) -> bool {
        let value_ok = |v: &Option<Vec<u8>>| v.as_ref().is_none_or(|v| v.len() <= VALUE_LEN_MAX);
        match self {
            Command::Noop => true,
            Command::Put { key, value } => key.len() <= KEY_LEN_MAX && value.len() <= VALUE_LEN_MAX,
            Command::Delete { key } => key.len() <= KEY_LEN_MAX,
            Command::Cas { key, expected, new } => key.len() <= KEY_LEN_MAX && value_ok(expected) && value_ok(new),
            Command::Txn { checks, writes } => {
                checks.len() + writes.len() <= TXN_KEYS_MAX
                    && checks.iter().chain(writes.iter()).all(|(k, v)| k.len() <= KEY_LEN_MAX && value_ok(v))
            }
            Command::Request { command, .. } => !matches!(**command, Command::Request { .. }) && command.within_bounds(),
        }
    }
}

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A compare-and-set found another value; nothing changed.
    CasFailed { current: Option<Vec<u8>> },
    /// A transaction's check on `key` found `current`; nothing changed.
    TxnFailed { key: String, current: Option<Vec<u8>> },
}

/// The metadata map of one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaState {
    map: BTreeMap<String, Vec<u8>>,
    applied: u64,
    /// Per client: latest seq applied, its outcome, and the index it was
    /// last seen at.
    sessions: BTreeMap<u64, (u64, Outcome, u64)>,
}

impl MetaState {
    pub fn new() -> MetaState {
        MetaState::default()
    }

    /// Index of the last applied command (0 before the first).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Keys in `[from, to)`, in order.
    pub fn range<'a>(&'a self, from: &str, to: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let (from, to) = (from.to_string(), to.to_string());
        self.map.range(from..to).map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Applies the command at log index `index`, which must be the next one.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        assert_eq!(index, self.applied + 1, "commands must be applied in log order");
        self.applied = index;
        self.apply_at(index, command)
    }

    fn apply_at(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::Request { client, seq, command } => {
                if let Some((last, outcome, used)) = self.sessions.get_mut(client) {
                    if *seq <= *last {
                        *used = index;
                        return outcome.clone();
                    }
                }
                let outcome = match **command {
                    Command::Request { .. } => Outcome::Done, // nested requests are out of bounds; never applied
                    ref c => self.apply_at(index, c),
                };
                self.sessions.insert(*client, (*seq, outcome.clone(), index));
                if self.sessions.len() > SESSIONS_MAX {
                    let oldest = self.sessions.iter().min_by_key(|(_, (_, _, used))| *used).map(|(&c, _)| c);
                    if let Some(c) = oldest {
                        self.sessions.remove(&c);
                    }
                }
                outcome
            }
            Command::Noop => Outcome::Done,
            Command::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                Outcome::Done
            }
            Command::Delete { key } => {
                self.map.remove(key);
                Outcome::Done
            }
            Command::Cas { key, expected, new } => {
                let current = self.map.get(key);
                if current != expected.as_ref() {
                    return Outcome::CasFailed { current: current.cloned() };
                }
                match new {
                    Some(v) => self.map.insert(key.clone(), v.clone()),
                    None => self.map.remove(key),
                };
                Outcome::Done
            }
            Command::Txn { checks, writes } => {
                for (key, expected) in checks {
                    let current = self.map.get(key);
                    if current != expected.as_ref() {
                        return Outcome::TxnFailed { key: key.clone(), current: current.cloned() };
                    }
                }
                for (key, value) in writes {
                    match value {
                        Some(v) => self.map.insert(key.clone(), v.clone()),
                        None => self.map.remove(key),
                    };
                }
                Outcome::Done
            }
        }
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order.
    pub fn scan(&self, prefix: &str, limit: usize) -> Vec<(String, Vec<u8>)> {
        self.scan_from(prefix, "", limit)
    }

    /// Up to `limit` entries whose key starts with `prefix` and is at
    /// least `from`, in key order (a page after an earlier one).
    pub fn scan_from(&self, prefix: &str, from: &str, limit: usize) -> Vec<(String, Vec<u8>)> {
        let start = if from > prefix { from } else { prefix };
        self.map
            .range(start.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_sets_only_when_the_expected_value_is_there() {
        let mut s = MetaState::new();
        let cas = |expected: Option<&[u8]>, new: Option<&[u8]>| Command::Cas {
            key: "stream/1/epoch".into(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        };
        assert_eq!(s.apply(1, &cas(None, Some(b"1"))), Outcome::Done);
        assert_eq!(s.apply(2, &cas(None, Some(b"2"))), Outcome::CasFailed { current: Some(b"1".to_vec()) });
        assert_eq!(s.apply(3, &cas(Some(b"1"), Some(b"2"))), Outcome::Done);
        assert_eq!(s.get("stream/1/epoch"), Some(&b"2"[..]));
        assert_eq!(s.apply(4, &cas(Some(b"2"), None)), Outcome::Done);
        assert_eq!(s.get("stream/1/epoch"), None);
        assert_eq!(s.applied(), 4);
    }

    #[test]
    fn a_retried_request_applies_once_and_returns_the_first_outcome() {
        let mut s = MetaState::new();
        let req = |seq, expected: Option<&[u8]>, new: &[u8]| Command::Request {
            client: 9,
            seq,
            command: Box::new(Command::Cas { key: "n".into(), expected: expected.map(<[u8]>::to_vec), new: Some(new.to_vec()) }),
        };
        assert_eq!(s.apply(1, &req(1, None, b"1")), Outcome::Done);
        assert_eq!(s.apply(2, &req(1, None, b"1")), Outcome::Done, "the retry sees the first outcome");
        assert_eq!(s.apply(3, &req(2, Some(b"1"), b"2")), Outcome::Done);
        assert_eq!(s.apply(4, &req(1, None, b"1")), Outcome::Done, "a stale retry changes nothing");
        assert_eq!(s.get("n"), Some(&b"2"[..]));
        assert_eq!(s.apply(5, &req(3, None, b"3")), Outcome::CasFailed { current: Some(b"2".to_vec()) });
        assert_eq!(s.apply(6, &req(3, None, b"3")), Outcome::CasFailed { current: Some(b"2".to_vec()) });
        let nested = Command::Request { client: 1, seq: 1, command: Box::new(req(4, None, b"4")) };
        assert!(!nested.within_bounds());
    }

    #[test]
    fn a_txn_applies_all_writes_or_none_and_names_the_failed_check() {
        let mut s = MetaState::new();
        let put = |k: &str, v: &[u8]| (k.to_string(), Some(v.to_vec()));
        let txn = |checks, writes| Command::Txn { checks, writes };
        assert_eq!(s.apply(1, &txn(vec![("ns/a".into(), None)], vec![put("ns/a", b"1"), put("st/a/x", b"m")])), Outcome::Done);
        assert_eq!(s.get("ns/a"), Some(&b"1"[..]));
        assert_eq!(s.get("st/a/x"), Some(&b"m"[..]));
        // The second check fails: nothing is written.
        let failing = txn(vec![put("ns/a", b"1"), put("st/a/x", b"old")], vec![put("st/a/x", b"n"), put("st/a/y", b"n")]);
        assert_eq!(s.apply(2, &failing), Outcome::TxnFailed { key: "st/a/x".into(), current: Some(b"m".to_vec()) });
        assert_eq!(s.get("st/a/x"), Some(&b"m"[..]));
        assert_eq!(s.get("st/a/y"), None);
        // Deletes, and a check that a key is absent.
        let del = txn(vec![put("ns/a", b"1"), ("st/a/y".into(), None)], vec![("st/a/x".into(), None)]);
        assert_eq!(s.apply(3, &del), Outcome::Done);
        assert_eq!(s.get("st/a/x"), None);
        let too_many: Vec<_> = (0..=TXN_KEYS_MAX).map(|i| put(&format!("k{i}"), b"v")).collect();
        assert!(!txn(vec![], too_many).within_bounds());
        assert!(!txn(vec![("k".repeat(KEY_LEN_MAX + 1), None)], vec![]).within_bounds());
    }

    #[test]
    fn scan_returns_the_prefix_in_order_up_to_the_limit() {
        let mut s = MetaState::new();
        for (i, k) in ["st/a/2", "st/a/1", "st/b/1", "st/a0", "ns/a", "st/a/3"].iter().enumerate() {
            s.apply(i as u64 + 1, &Command::Put { key: k.to_string(), value: vec![i as u8] });
        }
        let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(s.scan("st/a/", 10)), ["st/a/1", "st/a/2", "st/a/3"]);
        assert_eq!(keys(s.scan("st/a/", 2)), ["st/a/1", "st/a/2"]);
        assert!(s.scan("zz", 10).is_empty());
        assert_eq!(keys(s.scan_from("st/a/", "st/a/2", 10)), ["st/a/2", "st/a/3"]);
        assert_eq!(keys(s.scan_from("st/a/", "a", 1)), ["st/a/1"], "a start before the prefix starts at the prefix");
    }

    #[test]
    fn oversized_commands_are_out_of_bounds() {
        let long_key = "k".repeat(KEY_LEN_MAX + 1);
        assert!(!Command::Delete { key: long_key }.within_bounds());
        assert!(!Command::Put { key: "k".into(), value: vec![0; VALUE_LEN_MAX + 1] }.within_bounds());
        assert!(Command::Put { key: "k".into(), value: vec![0; VALUE_LEN_MAX] }.within_bounds());
    }
}
