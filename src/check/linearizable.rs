//! Linearizability of per-row register operations (read, write, cas, delete).
//!
//! The search is Wing & Gong's as improved by Lowe and used by Porcupine:
//! - P-compositionality: a history is linearizable iff each key's sub-history is,
//!   so every key is searched on its own (keys are independent registers).
//! - Events (calls and returns) sit in a doubly linked list in real-time order.
//!   Walking from the head, any call met before the first return may be
//!   linearized next; linearizing it lifts its call and return out of the list.
//!   Meeting a return whose call is still in the list means a dead end: undo the
//!   last choice (a stack) and try the next call after it.
//! - Memoization: a configuration is (set of linearized ops, register value); a
//!   configuration seen before is never explored again.
//!
//! `info` and open operations have no response (it is at +∞): they never block
//! anything and may be dropped, so the search succeeds as soon as every `ok`
//! operation is linearized. `fail` operations and unknown-outcome reads have no
//! effect and are left out. A per-key budget (steps for time, configurations
//! for memory) turns hopeless searches into
//! `Unknown` instead of hanging.
//!
//! Bounded staleness: an `ok` read whose completion carries `stale_ns = S`
//! (served from a cache up to `S` behind) may take effect at any moment from
//! `complete_ns - S` to its completion: its call is moved back to just before
//! the first entry whose `time_ns` is at or after `complete_ns - S`, when that
//! is before its invocation (so at a tie of times the read may come first;
//! with `S = 0` and distinct times nothing moves). Every other operation stays
//! linearizable. Each stale read gets its own window, so two stale reads by
//! one process may see `b` and then the older `a`: bounded staleness does not
//! promise monotonic reads.

use super::verdict::{CheckerReport, Verdict};
use crate::history::{Op, Operation, Outcome};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Default search budget per key, in search steps (list positions visited):
/// bounds time, about 5 ns a step.
pub const LINEARIZABLE_STEPS_MAX: u64 = 40_000_000;
/// Default budget per key of configurations entered (memo entries): bounds
/// memory, at most about 70 bytes each.
pub const LINEARIZABLE_CONFIGURATIONS_MAX: u64 = 2_000_000;
/// Default bound on the number of re-checks spent shrinking a counterexample.
pub const SHRINK_CHECKS_MAX: usize = 400;
/// Search budget of each shrinking re-check.
pub const SHRINK_BUDGET: Budget = Budget { steps_max: 2_000_000, configurations_max: 200_000 };
/// Deletes looked back at when the shrinker keeps what made "absent" true.
pub const SHRINK_DELETE_SCAN_MAX: usize = 64;
/// Timelines longer than this are cut (the shrinker may stop early on huge keys).
pub const TIMELINE_OPS_MAX: usize = 40;
/// Up to this many operations per key the linearized set is a `u128` inline.
pub const SMALL_MEMO_OPS_MAX: usize = 128;
/// Above this many operations per key the memo stores a 128-bit fingerprint of
/// the linearized set instead of the set itself: exact sets would cost
/// O(ops / 64) words per visited configuration, which does not fit in memory for
/// hot keys with 100k operations. A false match needs a 128-bit collision.
pub const EXACT_MEMO_OPS_MAX: usize = 256;

/// The register model's view of one operation; values are interned per key
/// (0 = row absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Read(u32),
    Write(u32),
    Cas { expected: u32, value: u32 },
    Delete,
}

impl Step {
    /// The register's sequential specification.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Read(v) => (v == state).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas { expected, value } => (expected == state).then_some(value),
            Step::Delete => Some(0),
        }
    }
}

/// One operation of a key's sub-history, ready for the search.
///
/// `call` and `ret` are positions: only their order matters. Built from a
/// history, entry `e` sits at `2e + 1` (see [`Clock`]).
#[derive(Clone, Copy, Debug)]
struct KeyOp {
    step: Step,
    call: usize,
    /// `None`: no response (info/open), i.e. +∞.
    ret: Option<usize>,
}

/// The search position of entry `index`: odd, leaving the even slot before
/// each entry free for a stale read's moved call.
fn entry_pos(index: usize) -> usize {
    2 * index + 1
}

/// Entry times, to place a stale read's call at a model time.
///
/// Built from any set of operations that holds every operation of the key
/// being searched: only the order of the call relative to that key's own
/// entries matters, and "before the first entry at or after `t`" gives the
/// same order whichever other entries are known (time never decreases along
/// the entries).
struct Clock {
    /// `(time_ns, entry index)`, ascending.
    entries: Vec<(u64, usize)>,
}

impl Clock {
    fn new<'x, 'o: 'x>(ops: impl IntoIterator<Item = &'x Operation<'o>>) -> Clock {
        let mut entries = Vec::new();
        for o in ops {
            entries.push((o.invoke_ns, o.invoke_index));
            if let (Some(c), Some(t)) = (o.complete_index, o.complete_ns) {
                entries.push((t, c));
            }
        }
        entries.sort_unstable();
        Clock { entries }
    }

    /// The index of the first known entry at or after model time `t`.
    fn first_at(&self, t: u64) -> Option<usize> {
        let k = self.entries.partition_point(|&(time, _)| time < t);
        self.entries.get(k).map(|&(_, index)| index)
    }

    /// Search position of an `ok` read's call: its invocation, or for a stale
    /// read the even slot before the first entry at or after `complete_ns -
    /// stale_ns` when that comes first.
    fn call_pos(&self, o: &Operation<'_>) -> usize {
        let invoked = entry_pos(o.invoke_index);
        match stale_from(o).and_then(|t| self.first_at(t)) {
            Some(first) => invoked.min(2 * first),
            None => invoked,
        }
    }
}

/// The moment from which a stale read may take effect (`complete_ns -
/// stale_ns`, saturating); `None` for every other operation.
fn stale_from(o: &Operation<'_>) -> Option<u64> {
    match (o.op, o.outcome, o.stale_ns, o.complete_ns) {
        (Op::Read { .. }, Outcome::Ok, Some(s), Some(c)) => Some(c.saturating_sub(s)),
        _ => None,
    }
}

/// A key's sub-history, ready for the search.
struct KeyInput {
    ops: Vec<KeyOp>,
    /// Number of value ids, including 0 (absent).
    values: usize,
    /// No value is written twice (the workload's contract).
    unique_writes: bool,
}

/// Canonical register value of configurations whose value nobody will ever
/// observe again: all such configurations have the same future, so they share
/// one memo entry. No read or cas can match it.
const DEAD: u32 = u32::MAX;

/// How much one key's search may spend before answering `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub steps_max: u64,
    pub configurations_max: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { steps_max: LINEARIZABLE_STEPS_MAX, configurations_max: LINEARIZABLE_CONFIGURATIONS_MAX }
    }
}

/// Outcome of searching one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable,
    Unknown,
}

/// Result of a single-key search, with its cost.
#[derive(Clone, Copy, Debug)]
pub struct KeyResult {
    pub verdict: KeyVerdict,
    pub steps: u64,
    pub configurations: u64,
}

/// A deterministic FxHash-style hasher: the memo is only probed, never iterated,
/// so its order cannot leak into reports; a fixed hasher keeps runs reproducible
/// and is much faster than SipHash on these small keys.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        // The multiply only carries low input bits upwards; hash tables index by
        // the low bits, so finish with a full avalanche (strings with a common
        // prefix otherwise collide en masse).
        splitmix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.write_u64(word);
        }
        // Byte by byte: a variable-length copy would be a libc call per hash.
        let rest = chunks.remainder();
        let mut tail = rest.len() as u64;
        for &b in rest {
            tail = (tail << 8) | u64::from(b);
        }
        self.write_u64(tail);
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

type FxSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;
type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Visited configurations: (linearized set, register value).
enum Memo {
    /// Up to 128 operations: the set fits in a u128 (the common case).
    Small(FxSet<(u128, u32)>),
    Exact(FxSet<(Box<[u64]>, u32)>),
    Fingerprint(FxSet<(u64, u64, u32)>),
}

/// The linearized set, kept both as bits and as a Zobrist-style fingerprint.
struct Linearized {
    bits: Vec<u64>,
    fp: (u64, u64),
}

impl Linearized {
    fn toggle(&mut self, i: usize) {
        self.bits[i / 64] ^= 1 << (i % 64);
        let z = splitmix64(i as u64);
        self.fp.0 ^= z;
        self.fp.1 ^= splitmix64(z ^ 0x5851_f42d_4c95_7f2d);
    }
}

impl Memo {
    fn for_ops(n: usize) -> Memo {
        if n <= SMALL_MEMO_OPS_MAX {
            Memo::Small(FxSet::default())
        } else if n <= EXACT_MEMO_OPS_MAX {
            Memo::Exact(FxSet::default())
        } else {
            Memo::Fingerprint(FxSet::default())
        }
    }

    /// Records a configuration; false if it was seen before.
    fn insert(&mut self, set: &Linearized, state: u32) -> bool {
        match self {
            Memo::Small(memo) => {
                let lo = u128::from(set.bits[0]);
                let hi = u128::from(set.bits.get(1).copied().unwrap_or(0));
                memo.insert((lo | (hi << 64), state))
            }
            Memo::Exact(memo) => memo.insert((set.bits.clone().into_boxed_slice(), state)),
            Memo::Fingerprint(memo) => memo.insert((set.fp.0, set.fp.1, state)),
        }
    }
}

/// A choice on the search stack.
#[derive(Clone, Copy)]
struct Choice {
    op: usize,
    old_state: u32,
    /// An enabled op that leaves the (canonical) state as it is, linearized
    /// without branching: if there is a linearization at all, there is one
    /// that takes it first (nothing it does is visible, and every op that must
    /// precede it is already placed), so its alternatives need no exploring.
    forced: bool,
}

/// Searches one key's operations.
///
/// With unique written values, a value overwritten is gone for good. So while
/// some not-yet-linearized `ok` op still has to observe the current value (a
/// read of it, a cas expecting it), nothing may overwrite it; and once nobody
/// will observe it, the value is replaced by `DEAD` so that equivalent
/// configurations meet in the memo. Both cut the search from exponential in
/// the number of concurrent writers to near-linear on typical histories.
fn search(input: &KeyInput, budget: Budget) -> KeyResult {
    let ops = &input.ops;
    let n = ops.len();
    let prune = input.unique_writes;
    // Pending observers of each value (0 = absent is never pruned): `required`
    // counts ok ops, which must still be linearized; `possible` also counts
    // unknown-outcome cas ops, which may be.
    let mut required = vec![0u32; input.values];
    let mut possible = vec![0u32; input.values];
    let observes = |op: &KeyOp| -> Option<u32> {
        match op.step {
            Step::Read(v) | Step::Cas { expected: v, .. } if v != 0 => Some(v),
            _ => None,
        }
    };
    // Adds `delta` to the counters of the value op `i` observes.
    let count = |required: &mut [u32], possible: &mut [u32], i: usize, add: bool| {
        if let Some(v) = observes(&ops[i]) {
            let v = v as usize;
            let d = |x: &mut u32| *x = if add { *x + 1 } else { *x - 1 };
            d(&mut possible[v]);
            if ops[i].ret.is_some() {
                d(&mut required[v]);
            }
        }
    };
    for i in 0..n {
        count(&mut required, &mut possible, i, true);
    }
    // Event list: node 0 is the head sentinel, node `m + 1` the tail sentinel.
    let mut events: Vec<(usize, u32, bool)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, i as u32, true));
        if let Some(r) = op.ret {
            events.push((r, i as u32, false));
        }
    }
    events.sort_unstable_by_key(|e| e.0);
    let m = events.len();
    let end = m + 1;
    let mut next: Vec<usize> = (1..=m + 1).collect();
    next.push(end);
    let mut prev: Vec<usize> = Vec::with_capacity(m + 2);
    prev.push(0);
    prev.extend(0..=m);
    // Node of each op's call and return; and each node's op and kind.
    let mut call_node = vec![0usize; n];
    let mut ret_node = vec![usize::MAX; n];
    for (pos, &(_, op, is_call)) in events.iter().enumerate() {
        if is_call {
            call_node[op as usize] = pos + 1;
        } else {
            ret_node[op as usize] = pos + 1;
        }
    }
    let node_op = |node: usize| -> (usize, bool) {
        let (_, op, is_call) = events[node - 1];
        (op as usize, is_call)
    };

    let mut ok_left = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut set = Linearized { bits: vec![0u64; n.div_ceil(64).max(1)], fp: (0, 0) };
    let mut memo = Memo::for_ops(n);
    let mut stack: Vec<Choice> = Vec::new();
    let mut state = 0u32;
    let mut cur = next[0];
    let mut steps = 0u64;
    let mut configurations = 0u64;

    loop {
        if ok_left == 0 {
            return KeyResult { verdict: KeyVerdict::Linearizable, steps, configurations };
        }
        steps += 1;
        if steps > budget.steps_max || configurations > budget.configurations_max {
            return KeyResult { verdict: KeyVerdict::Unknown, steps, configurations };
        }
        let mut dead_end = cur == end || !node_op(cur).1;
        if !dead_end {
            let (i, _) = node_op(cur);
            if let Some(mut new_state) = ops[i].step.apply(state) {
                count(&mut required, &mut possible, i, false);
                let overwrites_needed = prune
                    && new_state != state
                    && state != 0
                    && state != DEAD
                    && required[state as usize] > 0;
                if prune && new_state != 0 && new_state != DEAD && possible[new_state as usize] == 0 {
                    new_state = DEAD;
                }
                // Reads change nothing; an ok write nobody observes, taken when
                // the current value is dead too, changes nothing either (dead to
                // dead). If any linearization exists, one takes such an enabled
                // op right now, so it needs no alternatives.
                let forced = matches!(ops[i].step, Step::Read(_))
                    || (prune && state == DEAD && new_state == DEAD && ops[i].ret.is_some());
                set.toggle(i);
                if !overwrites_needed && memo.insert(&set, new_state) {
                    configurations += 1;
                    stack.push(Choice { op: i, old_state: state, forced });
                    state = new_state;
                    // Lift the op's call and return out of the list.
                    for x in [call_node[i], ret_node[i]] {
                        if x != usize::MAX {
                            next[prev[x]] = next[x];
                            prev[next[x]] = prev[x];
                        }
                    }
                    if ret_node[i] != usize::MAX {
                        ok_left -= 1;
                    }
                    cur = next[0];
                    continue;
                }
                set.toggle(i);
                count(&mut required, &mut possible, i, true);
                // Taking the forced read leads to an explored dead end, so the
                // current configuration is one too.
                dead_end = forced;
            }
            if !dead_end {
                cur = next[cur];
                continue;
            }
        }
        // A pending op's response (or a dominated configuration): undo choices
        // until one has alternatives, then try the calls after it.
        loop {
            let Some(c) = stack.pop() else {
                return KeyResult { verdict: KeyVerdict::NotLinearizable, steps, configurations };
            };
            state = c.old_state;
            set.toggle(c.op);
            count(&mut required, &mut possible, c.op, true);
            // Relink in reverse order of lifting.
            for x in [ret_node[c.op], call_node[c.op]] {
                if x != usize::MAX {
                    next[prev[x]] = x;
                    prev[next[x]] = x;
                }
            }
            if ret_node[c.op] != usize::MAX {
                ok_left += 1;
            }
            if !c.forced {
                cur = next[call_node[c.op]];
                break;
            }
        }
    }
}

/// A value as an operation names it (`None` = row absent).
type Value<'a> = Option<&'a str>;

/// An operation reduced to what the search needs, values still as strings.
/// Fail ops and unknown-outcome reads never become records: they have no
/// effect and constrain nothing. Positions as in [`KeyOp`].
#[derive(Clone, Copy, Debug)]
struct Record<'a> {
    step: RecordStep<'a>,
    call: usize,
    ret: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
enum RecordStep<'a> {
    Read(Value<'a>),
    Write(&'a str),
    Cas { expected: Value<'a>, value: &'a str },
    Delete,
}

/// Turns an operation into a record. A stale read's call is placed by the
/// clock, built by `make_clock` on first need (it is never built for
/// histories without stale reads).
fn record<'a>(o: &Operation<'a>, clock: &mut Option<Clock>, make_clock: impl FnOnce() -> Clock) -> Option<Record<'a>> {
    if o.outcome == Outcome::Fail {
        return None;
    }
    let step = match o.op {
        Op::Read { value, .. } => {
            if o.outcome != Outcome::Ok {
                return None;
            }
            RecordStep::Read(value.as_deref())
        }
        Op::Write { value, .. } => RecordStep::Write(value),
        Op::Cas { expected, value, .. } => RecordStep::Cas { expected: expected.as_deref(), value },
        Op::Delete { .. } => RecordStep::Delete,
        Op::Append { .. } | Op::Scan { .. } | Op::StreamOpen { .. } | Op::StreamAppend { .. } | Op::StreamRead { .. } => return None,
    };
    let call = match stale_from(o) {
        Some(_) => clock.get_or_insert_with(make_clock).call_pos(o),
        None => entry_pos(o.invoke_index),
    };
    Some(Record { step, call, ret: o.response_index().map(entry_pos) })
}

/// Builds a key's search input from its records: interns values densely per
/// key (0 = absent; a small table that stays in cache), drops unknown-outcome
/// writes whose value nobody observed (such a write can always be dropped from
/// a linearization: nothing reads its value, so removing it changes no result,
/// and dropping it spares the search a branch), and checks that written values
/// are unique.
fn build_input<'a>(records: &[Record<'a>], local: &mut FxMap<&'a str, u32>) -> KeyInput {
    local.clear();
    let mut intern = |v: Value<'a>| -> u32 {
        match v {
            None => 0,
            Some(s) => {
                let next = local.len() as u32 + 1;
                *local.entry(s).or_insert(next)
            }
        }
    };
    let mut observed: Vec<u32> = Vec::new();
    let mut ops: Vec<KeyOp> = Vec::with_capacity(records.len());
    for r in records {
        let step = match r.step {
            RecordStep::Read(v) => {
                let v = intern(v);
                observed.push(v);
                Step::Read(v)
            }
            RecordStep::Write(v) => Step::Write(intern(Some(v))),
            RecordStep::Cas { expected, value } => {
                let expected = intern(expected);
                observed.push(expected);
                Step::Cas { expected, value: intern(Some(value)) }
            }
            RecordStep::Delete => Step::Delete,
        };
        ops.push(KeyOp { step, call: r.call, ret: r.ret });
    }
    observed.sort_unstable();
    observed.dedup();
    ops.retain(|k| match (k.ret, k.step) {
        (None, Step::Write(v)) | (None, Step::Cas { value: v, .. }) => observed.binary_search(&v).is_ok(),
        _ => true,
    });
    // Written values are unique per key by workload contract; check it, since
    // the search's overwrite pruning relies on it.
    let mut written: Vec<u32> = ops
        .iter()
        .filter_map(|k| match k.step {
            Step::Write(v) | Step::Cas { value: v, .. } => Some(v),
            _ => None,
        })
        .collect();
    written.sort_unstable();
    let unique_writes = written.windows(2).all(|w| w[0] != w[1]);
    KeyInput { ops, values: local.len() + 1, unique_writes }
}

/// Builds the search input for one key from the operations at `members`.
fn key_ops(all: &[Operation<'_>], members: &[usize]) -> KeyInput {
    let mut clock = None;
    let records: Vec<Record<'_>> = members
        .iter()
        .filter_map(|&i| record(&all[i], &mut clock, || Clock::new(members.iter().map(|&m| &all[m]))))
        .collect();
    build_input(&records, &mut FxMap::default())
}

/// Checks one key's operations (indices into `all`).
pub fn check_key(all: &[Operation<'_>], members: &[usize], budget: Budget) -> KeyResult {
    let input = key_ops(all, members);
    search(&input, budget)
}

/// Shrinks a failing key to a small failing subset (greedy chunk removal, as in
/// delta debugging), keeping the subset closed under "reads from": the writer of
/// every value a kept operation observes is kept too, so the result shows the
/// real anomaly rather than a read of a write the shrinker removed.
fn shrink(all: &[Operation<'_>], members: &[usize], checks_max: usize) -> (Vec<usize>, bool) {
    // Writers by value, to close subsets under reads-from.
    let mut writer: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in members {
        match all[i].op {
            Op::Write { value, .. } | Op::Cas { value, .. } if all[i].outcome != Outcome::Fail => {
                writer.insert(value.as_str(), i);
            }
            _ => {}
        }
    }
    // What made an observed "row absent" true: the last deletes invoked before
    // the observer completed (all those concurrent with the latest one).
    let mut deletes: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| matches!(all[i].op, Op::Delete { .. }) && all[i].outcome != Outcome::Fail)
        .collect();
    deletes.sort_unstable_by_key(|&i| all[i].invoke_index);
    // A stale read may have seen the row as of the start of its window: the
    // deletes invoked within the window may all be what it saw, and before
    // the window the rule above applies from the window's start.
    let clock = members.iter().any(|&i| stale_from(&all[i]).is_some()).then(|| Clock::new(members.iter().map(|&m| &all[m])));
    let absent_support = |i: usize| -> Vec<usize> {
        let end = all[i].complete_index.unwrap_or(usize::MAX);
        let from = match (&clock, stale_from(&all[i])) {
            (Some(clock), Some(t)) => clock.first_at(t).map_or(end, |first| first.min(end)),
            _ => end,
        };
        let upto = deletes.partition_point(|&d| all[d].invoke_index < end);
        let before = deletes[..upto].partition_point(|&d| all[d].invoke_index < from);
        let mut support: Vec<usize> = deletes[upto.saturating_sub(SHRINK_DELETE_SCAN_MAX).max(before)..upto].to_vec();
        let Some(&latest) = before.checked_sub(1).and_then(|k| deletes.get(k)) else { return support };
        let latest_invoke = all[latest].invoke_index;
        support.extend(
            deletes[before.saturating_sub(SHRINK_DELETE_SCAN_MAX)..before]
                .iter()
                .copied()
                .filter(|&d| d == latest || all[d].response_index().is_none_or(|r| r > latest_invoke)),
        );
        support
    };
    // To a fixpoint: an added cas observes a value whose writer joins too.
    let close = |set: &mut Vec<usize>| {
        let mut members: BTreeSet<usize> = set.iter().copied().collect();
        let mut todo: Vec<usize> = set.clone();
        while let Some(i) = todo.pop() {
            let seen = match all[i].op {
                Op::Read { value, .. } if all[i].outcome == Outcome::Ok => Some(value),
                Op::Cas { expected, .. } => Some(expected),
                _ => None,
            };
            let support = match seen {
                Some(Some(v)) => writer.get(v.as_str()).map(|&w| vec![w]).unwrap_or_default(),
                Some(None) => absent_support(i),
                None => Vec::new(),
            };
            for w in support {
                if members.insert(w) {
                    todo.push(w);
                }
            }
        }
        *set = members.into_iter().collect();
    };
    let fails = |set: &[usize]| check_key(all, set, SHRINK_BUDGET).verdict == KeyVerdict::NotLinearizable;

    let mut current: Vec<usize> = members.iter().copied().filter(|&i| all[i].outcome != Outcome::Fail).collect();
    let mut checks = 0usize;
    let mut chunk = current.len().div_ceil(2).max(1);
    let mut complete = false;
    'outer: loop {
        let mut start = 0usize;
        let mut progress = false;
        while start < current.len() {
            if checks >= checks_max {
                break 'outer;
            }
            let stop = (start + chunk).min(current.len());
            let mut candidate: Vec<usize> = current[..start].iter().chain(&current[stop..]).copied().collect();
            close(&mut candidate);
            if candidate.len() < current.len() {
                checks += 1;
                if fails(&candidate) {
                    current = candidate;
                    progress = true;
                    continue;
                }
            }
            start = stop;
        }
        // Single removals can unlock others (a write goes once its readers
        // went), so repeat them until a pass removes nothing: 1-minimal.
        if chunk == 1 && !progress {
            complete = true;
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    (current, complete)
}

/// Renders operations as a text timeline, one line per op, bars over the
/// positions of invocations and responses (`>` = no response, may land later;
/// dots before a stale read's bar = where its window opens, so it may have
/// taken effect there).
pub fn timeline(all: &[Operation<'_>], set: &[usize]) -> String {
    let shown: Vec<usize> = set.iter().copied().take(TIMELINE_OPS_MAX).collect();
    let clock = shown.iter().any(|&i| stale_from(&all[i]).is_some()).then(|| Clock::new(shown.iter().map(|&i| &all[i])));
    let window = |o: &Operation<'_>| clock.as_ref().map_or(entry_pos(o.invoke_index), |c| c.call_pos(o));
    let mut points: Vec<usize> = Vec::new();
    for &i in &shown {
        points.push(window(&all[i]));
        points.push(entry_pos(all[i].invoke_index));
        if let Some(c) = all[i].complete_index {
            points.push(entry_pos(c));
        }
    }
    points.sort_unstable();
    points.dedup();
    let col = |p: usize| points.binary_search(&p).unwrap_or(0) * 2;
    let width = points.len() * 2;
    let mut out = String::new();
    for &i in &shown {
        let o = &all[i];
        let from = col(entry_pos(o.invoke_index));
        let mut bar: Vec<char> = vec![' '; width + 1];
        for ch in bar.iter_mut().take(from).skip(col(window(o))) {
            *ch = '.';
        }
        match (o.outcome, o.complete_index) {
            (Outcome::Ok | Outcome::Fail, Some(c)) => {
                let to = col(entry_pos(c));
                for ch in bar.iter_mut().take(to + 1).skip(from) {
                    *ch = '-';
                }
                bar[from] = '|';
                bar[to] = '|';
            }
            _ => {
                for ch in bar.iter_mut().skip(from) {
                    *ch = '-';
                }
                bar[from] = '|';
                bar[width] = '>';
            }
        }
        let bar: String = bar.into_iter().collect();
        out.push_str(&format!(
            "  {bar} p{:<3} {:<4} {:<28} {}\n",
            o.process,
            o.outcome.name(),
            o.describe_op(),
            o.span()
        ));
    }
    if set.len() > shown.len() {
        out.push_str(&format!("  ... {} more operations\n", set.len() - shown.len()));
    }
    out
}

/// Settings of the linearizability checker.
#[derive(Clone, Copy, Debug)]
pub struct LinearizableConfig {
    pub budget: Budget,
    pub shrink_checks_max: usize,
}

impl Default for LinearizableConfig {
    fn default() -> Self {
        LinearizableConfig { budget: Budget::default(), shrink_checks_max: SHRINK_CHECKS_MAX }
    }
}

/// Groups register operations by key, sorted by key (the hash map is only
/// used to collect; its order never reaches a report).
pub fn group_by_key<'a>(all: &[Operation<'a>]) -> Vec<(&'a str, Vec<usize>)> {
    let mut keys: FxMap<&'a str, Vec<usize>> = FxMap::default();
    for (i, o) in all.iter().enumerate() {
        if let Some(k) = o.op.register_key() {
            keys.entry(k).or_default().push(i);
        }
    }
    let mut sorted: Vec<(&'a str, Vec<usize>)> = keys.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// Runs the checker over every key.
///
/// One sequential pass turns operations into compact records bucketed by key
/// (values interned per key later), so the per-key searches never chase pointers
/// back into the history: on 1M operations that is most of the cost.
pub fn check(all: &[Operation<'_>], config: &LinearizableConfig) -> CheckerReport {
    let mut key_ids: FxMap<&str, u32> = FxMap::default();
    let mut buckets: Vec<Vec<Record<'_>>> = Vec::new();
    let mut members_per_key: Vec<u64> = Vec::new();
    let mut clock = None;
    let mut stale_reads = 0u64;
    for o in all {
        let Some(key) = o.op.register_key() else { continue };
        let next = key_ids.len() as u32;
        let id = *key_ids.entry(key).or_insert(next) as usize;
        if id == buckets.len() {
            buckets.push(Vec::new());
            members_per_key.push(0);
        }
        members_per_key[id] += 1;
        stale_reads += u64::from(stale_from(o).is_some());
        if let Some(r) = record(o, &mut clock, || Clock::new(all)) {
            buckets[id].push(r);
        }
    }
    // Keys in name order, so the first failing key is well defined.
    let mut keys: Vec<(&str, u32)> = key_ids.into_iter().collect();
    keys.sort_unstable();

    let (mut failed, mut unknown, mut steps, mut ops) = (0u64, 0u64, 0u64, 0u64);
    let mut configurations = 0u64;
    let mut first_fail: Option<&str> = None;
    let mut first_unknown: Option<&str> = None;
    let mut local = FxMap::default();
    for &(key, id) in &keys {
        ops += members_per_key[id as usize];
        let r = search(&build_input(&buckets[id as usize], &mut local), config.budget);
        steps += r.steps;
        configurations += r.configurations;
        match r.verdict {
            KeyVerdict::Linearizable => {}
            KeyVerdict::NotLinearizable => {
                failed += 1;
                first_fail.get_or_insert(key);
            }
            KeyVerdict::Unknown => {
                unknown += 1;
                first_unknown.get_or_insert(key);
            }
        }
    }
    drop(buckets);
    drop(clock);
    let mut report = CheckerReport::new(Verdict::Pass);
    report.count("keys", keys.len() as u64);
    report.count("operations", ops);
    report.count("keys_not_linearizable", failed);
    report.count("keys_unknown", unknown);
    report.count("search_steps", steps);
    report.count("search_configurations", configurations);
    // Only histories with stale reads have the count: reports of all others
    // stay as they were.
    if stale_reads > 0 {
        report.count("stale_reads", stale_reads);
    }
    if let Some(key) = first_fail {
        report.verdict = Verdict::Fail;
        let members: Vec<usize> = (0..all.len()).filter(|&i| all[i].op.register_key() == Some(key)).collect();
        let (small, complete) = shrink(all, &members, config.shrink_checks_max);
        report.counterexample = Some(format!(
            "key {key:?} is not linearizable; {} failing sub-history of {} of its {} operations:\n{}",
            if complete { "smallest" } else { "a reduced (shrink budget spent)" },
            small.len(),
            members.len(),
            timeline(all, &small)
        ));
    } else if let Some(key) = first_unknown {
        report.verdict = Verdict::Unknown;
        report.note = Some(format!(
            "search budget ({} steps or {} configurations per key) spent on key {key:?} ({} keys undecided)",
            config.budget.steps_max, config.budget.configurations_max, unknown
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{History, Kind, Phase};
    use std::hash::BuildHasher;

    #[test]
    fn hasher_spreads_strings_with_a_common_prefix() {
        // Hash tables index by the low bits; before the final mix, "v1234"-style
        // values collided there en masse.
        let build = BuildHasherDefault::<FxHasher>::default();
        let mut low: Vec<u64> = (0..4096).map(|i| build.hash_one(format!("v{i}")) & 0xfff).collect();
        low.sort_unstable();
        low.dedup();
        assert!(low.len() > 2_000, "only {} distinct low-bit buckets of 4096", low.len());
    }

    #[test]
    fn register_model() {
        assert_eq!(Step::Read(0).apply(0), Some(0));
        assert_eq!(Step::Read(1).apply(2), None);
        assert_eq!(Step::Write(3).apply(2), Some(3));
        assert_eq!(Step::Cas { expected: 0, value: 4 }.apply(0), Some(4));
        assert_eq!(Step::Cas { expected: 0, value: 4 }.apply(1), None);
        assert_eq!(Step::Delete.apply(5), Some(0));
        // Nothing matches a dead value.
        assert_eq!(Step::Read(1).apply(DEAD), None);
        assert_eq!(Step::Cas { expected: 1, value: 2 }.apply(DEAD), None);
    }

    fn input(ops: &[(Step, usize, Option<usize>)], values: usize) -> KeyInput {
        let ops = ops.iter().map(|&(step, call, ret)| KeyOp { step, call, ret }).collect();
        KeyInput { ops, values, unique_writes: true }
    }

    #[test]
    fn an_info_write_lands_after_a_later_ok_write() {
        // w1 info [0, +inf), w2 ok [1, 2], read 1 [3, 4]: w1 took effect late.
        let ops = [(Step::Write(1), 0, None), (Step::Write(2), 1, Some(2)), (Step::Read(1), 3, Some(4))];
        assert_eq!(search(&input(&ops, 3), Budget::default()).verdict, KeyVerdict::Linearizable);
        // Without the info write the read has no source.
        assert_eq!(search(&input(&ops[1..], 3), Budget::default()).verdict, KeyVerdict::NotLinearizable);
    }

    fn write(v: &str) -> Op {
        Op::Write { key: "k".into(), value: v.into() }
    }

    fn read(v: Option<&str>) -> Op {
        Op::Read { key: "k".into(), value: v.map(String::from) }
    }

    /// A history of operations one after the other, each `(process,
    /// invoke_ns, complete_ns, op with outputs, stale_ns)`, all `ok`.
    fn sequential(ops: &[(u64, u64, u64, Op, Option<u64>)]) -> History {
        let mut h = History::new();
        for (p, from, to, op, stale) in ops {
            let invoked = match op {
                Op::Read { key, .. } => Op::Read { key: key.clone(), value: None },
                other => other.clone(),
            };
            h.invoke(*p, *from, invoked, Phase::Main);
            h.complete_stale(*p, *to, Kind::Ok, op.clone(), None, *stale);
        }
        h
    }

    fn lin(h: &History) -> CheckerReport {
        check(&h.operations(), &LinearizableConfig::default())
    }

    /// w(k,a) at 0..10, w(k,b) at 20..30, then a read at 40..50 that still
    /// returns `a`, with the given allowance.
    fn stale_a(stale: Option<u64>) -> History {
        sequential(&[
            (1, 0, 10, write("a"), None),
            (1, 20, 30, write("b"), None),
            (2, 40, 50, read(Some("a")), stale),
        ])
    }

    #[test]
    fn a_stale_read_within_the_bound_is_linearizable() {
        // a was the latest value until b took effect, as late as 30 >= 50 - 25.
        let r = lin(&stale_a(Some(25)));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts.get("stale_reads"), Some(&1));
    }

    #[test]
    fn a_stale_read_beyond_the_bound_is_not() {
        // 50 - 19 = 31: b certainly took effect before the window opened.
        let r = lin(&stale_a(Some(19)));
        assert_eq!(r.verdict, Verdict::Fail);
        let ex = r.counterexample.expect("a counterexample");
        assert!(ex.contains(r#"p2   ok   read k -> "a" (stale ≤ 19ns)"#), "{ex}");
        assert!(ex.contains("smallest failing sub-history of 3"), "{ex}");
        assert_eq!(r.counts.get("stale_reads"), Some(&1));
    }

    /// The window is closed: a read with allowance S completing at c may take
    /// effect at exactly c - S, before every entry of that time, including
    /// the completion of the write that replaced its value and entries
    /// recorded before its own invocation.
    #[test]
    fn at_the_edge_of_the_bound_the_read_comes_first() {
        // The window opens at 30, the time of b's completion.
        assert_eq!(lin(&stale_a(Some(20))).verdict, Verdict::Pass);
        assert_eq!(lin(&stale_a(Some(21))).verdict, Verdict::Pass);
        // b completes at 40 and the read is invoked at 40, recorded after it.
        let tie = |stale| {
            sequential(&[
                (1, 0, 10, write("a"), None),
                (1, 20, 40, write("b"), None),
                (2, 40, 50, read(Some("a")), stale),
            ])
        };
        assert_eq!(lin(&tie(Some(10))).verdict, Verdict::Pass);
        assert_eq!(lin(&tie(Some(9))).verdict, Verdict::Fail);
        assert_eq!(lin(&tie(None)).verdict, Verdict::Fail);
        // An allowance of 0 with times apart is no allowance.
        assert_eq!(lin(&stale_a(Some(0))).verdict, Verdict::Fail);
    }

    #[test]
    fn without_an_allowance_the_old_value_is_a_violation() {
        let r = lin(&stale_a(None));
        assert_eq!(r.verdict, Verdict::Fail);
        // Histories without stale reads report exactly the counts they did.
        assert_eq!(r.counts.get("stale_reads"), None);
        let ex = r.counterexample.expect("a counterexample");
        assert!(ex.contains(r#"read k -> "a"  "#) && !ex.contains("stale"), "{ex}");
    }

    #[test]
    fn a_stale_read_of_a_value_never_written_or_written_later_is_a_violation() {
        let never = sequential(&[(1, 0, 10, write("a"), None), (2, 20, 30, read(Some("z")), Some(1_000))]);
        assert_eq!(lin(&never).verdict, Verdict::Fail);
        // The allowance reaches back to 0, but b is invoked only after the read.
        let future = sequential(&[
            (1, 0, 10, write("a"), None),
            (2, 20, 30, read(Some("b")), Some(1_000)),
            (1, 40, 50, write("b"), None),
        ]);
        let r = lin(&future);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.counterexample.expect("a counterexample").contains("(stale ≤ 1us)"));
    }

    #[test]
    fn a_stale_read_may_see_a_deleted_row_within_the_bound() {
        let h = |stale| {
            sequential(&[
                (1, 0, 10, write("a"), None),
                (1, 20, 30, Op::Delete { key: "k".into() }, None),
                (1, 40, 50, write("b"), None),
                (2, 60, 70, read(None), stale),
            ])
        };
        // The window opens at 45, before b's completion at 50.
        assert_eq!(lin(&h(Some(25))).verdict, Verdict::Pass);
        assert_eq!(lin(&h(Some(19))).verdict, Verdict::Fail);
        assert_eq!(lin(&h(None)).verdict, Verdict::Fail);
    }

    /// Each stale read has its own window: one process may read b, then a.
    #[test]
    fn stale_reads_need_not_be_monotonic() {
        let h = |last| {
            sequential(&[
                (1, 0, 10, write("a"), None),
                (1, 20, 30, write("b"), None),
                (2, 32, 34, read(Some("a")), Some(10)),
                (2, 36, 38, read(Some("b")), Some(10)),
                (2, 40, 42, read(Some("a")), last),
            ])
        };
        let r = lin(&h(Some(15)));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts.get("stale_reads"), Some(&3));
        // 42 - 11 = 31: b had certainly taken effect.
        assert_eq!(lin(&h(Some(11))).verdict, Verdict::Fail);
        assert_eq!(lin(&h(None)).verdict, Verdict::Fail);
    }

    /// Writes, cas and deletes never get an allowance: the history refuses it.
    #[test]
    fn only_reads_carry_an_allowance() {
        for op in [write("a"), Op::Cas { key: "k".into(), expected: None, value: "a".into() }, Op::Delete { key: "k".into() }] {
            let mut h = History::new();
            h.invoke(1, 0, op.clone(), Phase::Main);
            let err = h.try_complete_stale(1, 10, Kind::Ok, op.clone(), None, Some(5)).expect_err("refused");
            assert!(matches!(err, crate::history::HistoryErrorKind::StalenessNotOnRead { .. }), "{err}");
        }
    }

    /// A stale read of an absent row keeps the delete it contradicts.
    #[test]
    fn a_stale_read_of_an_absent_row_shrinks_with_its_delete() {
        let h = sequential(&[
            (1, 0, 10, write("a"), None),
            (1, 20, 30, Op::Delete { key: "k".into() }, None),
            (1, 40, 50, write("b"), None),
            (2, 60, 70, read(None), Some(15)),
        ]);
        let ex = lin(&h).counterexample.expect("a counterexample");
        assert!(ex.contains("smallest failing sub-history of 3 of its 4 operations"), "{ex}");
        assert!(ex.contains("delete k") && ex.contains("read k -> nil (stale ≤ 15ns)") && !ex.contains(r#"= "a""#), "{ex}");
    }

    /// Shrinking keeps the stale read and what it contradicts; the timeline
    /// marks it and draws its window.
    #[test]
    fn a_stale_counterexample_shrinks_and_shows_its_window() {
        let mut ops = vec![(1, 0, 10, write("a"), None), (1, 20, 30, write("b"), None)];
        // Unrelated traffic, and a write of c inside the read's window.
        for i in 0..20u64 {
            ops.push((3, 31 + i, 31 + i, read(Some("b")), None));
        }
        ops.push((1, 60, 70, write("c"), None));
        ops.push((2, 80, 90, read(Some("a")), Some(35)));
        let h = sequential(&ops);
        let r = lin(&h);
        assert_eq!(r.verdict, Verdict::Fail);
        let ex = r.counterexample.expect("a counterexample");
        assert!(ex.contains("smallest failing sub-history of 3 of its 24 operations"), "{ex}");
        assert!(ex.contains(r#"read k -> "a" (stale ≤ 35ns)"#), "{ex}");
        // The window opens at 55, before c's invocation at 60.
        let all = h.operations();
        let text = timeline(&all, &[0, 1, 22, 23]);
        let expected = [
            r#"  |-|                 p1   ok   write k = "a"                invoked t=0ns #0, ok t=10ns #1"#,
            r#"      |-|             p1   ok   write k = "b"                invoked t=20ns #2, ok t=30ns #3"#,
            r#"            |-|       p1   ok   write k = "c"                invoked t=60ns #44, ok t=70ns #45"#,
            r#"          ......|-|   p2   ok   read k -> "a" (stale ≤ 35ns) invoked t=80ns #46, ok t=90ns #47"#,
        ];
        assert_eq!(text, expected.map(|l| format!("{l}\n")).concat(), "{text}");
    }

    #[test]
    fn budget_exhaustion_is_unknown() {
        let ops = [(Step::Write(1), 0, Some(1)), (Step::Read(1), 2, Some(3))];
        let tiny = Budget { steps_max: 1, configurations_max: 1 };
        assert_eq!(search(&input(&ops, 2), tiny).verdict, KeyVerdict::Unknown);
    }
}
