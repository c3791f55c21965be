//! The Raft core of the metadata store, as a pure state machine.
//!
//! [`Node::step`] takes the time `now` (the replica's local clock) and one
//! [`Input`], and returns the [`Output`]s the shell must carry out, in
//! order. The core reads no clock, creates no randomness (it draws election
//! timeouts from the seeded RNG it was given) and does no I/O.
//!
//! # Durability contract
//! When a step changes the term, the vote or the log, its first output is
//! one [`Output::Persist`]. The shell must make it durable (write and sync)
//! before it carries out any later output of the same step: votes, append
//! acknowledgements and the leader's own commit counting all rely on it.
//! After a crash the shell passes what it persisted to [`Node::new`].
//!
//! # Protocol
//! Standard Raft (Ongaro's thesis) with:
//! - pre-vote (§9.6): a replica whose election timer fires first asks
//!   whether it could win, without bumping its term, so a replica returning
//!   from a partition does not depose a healthy leader;
//! - leader stickiness (§4.2.3): a replica that heard from a leader less
//!   than `election_timeout_min` ago (by its own clock) ignores vote and
//!   pre-vote requests entirely, without adopting their term; a replica
//!   counts its own boot as such contact, so a restart does not let it vote
//!   early; a leader counts each heartbeat round it sends;
//! - check-quorum: a leader that has had no round acknowledged by a
//!   majority for `election_timeout_max` steps down;
//! - a no-op entry at the start of every term, so that entries of earlier
//!   terms commit (the leader only counts replicas for entries of its own
//!   term, §5.4.2) and so that reads know a committed index;
//! - pipelined replication: the leader sends each entry to a peer once,
//!   moving the peer's `next` past it when it sends; a lost append leaves a
//!   gap that the peer reports by rejecting the next append or heartbeat
//!   round with its last index + 1 as the hint, and the leader resends from
//!   there.
//!
//! # Leases and clock skew
//! `max_skew` (model nanoseconds, like all of [`SimTime`]) bounds the error
//! of any replica's measurement of an elapsed interval of up to
//! `election_timeout_max`: offset steps plus drift over the interval, as
//! `sim::clock` can inject them. [`Config::validate`] requires
//! `lease_duration + max_skew <= election_timeout_min`.
//!
//! A leader stamps each append with its local send time. When replicas
//! that make a majority with the leader acknowledged appends sent at or
//! after `s` (leader's clock), `s` is the lease start, and the leader serves
//! reads locally while `now < s + lease_duration - max_skew`.
//!
//! Safety argument: let `S` be the true time of the send stamped `s`. By
//! the skew bound the lease ends, in true time, before `S + lease_duration`.
//! Every replica `r` of that majority received the append at a true time
//! `R >= S` and, by stickiness, neither votes for nor pre-votes another
//! candidate (and does not start an election itself) until its own clock
//! shows `election_timeout_min` since `R`, that is, not before true time
//! `R + election_timeout_min - max_skew >= S + lease_duration`. A leader of
//! a later term needs a vote from some replica of that majority, so it is
//! elected, and can hold a lease, only after the old lease has ended. A
//! crash does not void this: a restarted replica waits a full
//! `election_timeout_min` before voting. A leader also counts its own
//! heartbeat rounds as contact, so it cannot vote right after stepping down.
//!
//! Reads without a valid lease use ReadIndex: they wait for a majority to
//! acknowledge a round sent after the read arrived (no clock involved).
//! Either way a read waits until the leader has committed an entry of its
//! own term and applied up to the read index.
//!
//! # Invariants (checked by `raft_tests`)
//! - election safety: at most one leader per term;
//! - log matching: two logs with an entry of the same index and term are
//!   identical up to it;
//! - leader completeness: a committed entry is in every later leader's log
//!   and stays on a majority of replicas;
//! - state-machine safety: no two replicas apply different commands at one
//!   index;
//! - lease safety: no two replicas hold a valid lease at one true instant.
//!
//! # Bounds
//! [`ENTRIES_PER_APPEND_MAX`], [`UNCOMMITTED_MAX`], [`LOG_LEN_MAX`],
//! [`READS_PENDING_MAX`], [`APPLY_PER_STEP_MAX`], [`CONFLICT_SCAN_MAX`].
//! The log is not compacted yet: once it holds [`LOG_LEN_MAX`] entries the
//! leader refuses proposals (the no-op of a new term may still be added).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sim::time::SimTime;

use super::state::Command;

/// Identifies a replica within its group.
pub type ReplicaId = u32;

/// Most entries one append message carries.
pub const ENTRIES_PER_APPEND_MAX: usize = 64;
/// Most proposals a leader holds appended but not committed.
pub const UNCOMMITTED_MAX: u64 = 256;
/// Log length at which a leader refuses proposals.
pub const LOG_LEN_MAX: u64 = 100_000;
/// Most reads a leader holds waiting for their index or confirmation.
pub const READS_PENDING_MAX: usize = 1024;
/// Most committed entries one step hands out to apply; the rest follow on
/// later steps.
pub const APPLY_PER_STEP_MAX: u64 = 512;
/// Most entries a follower scans back to find where a conflicting term
/// starts, for the rejection hint.
pub const CONFLICT_SCAN_MAX: u64 = 1024;

/// Timing configuration, all in model time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Election timeouts are drawn uniformly from `[min, max)`.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// A leader sends a round of appends at least this often.
    pub heartbeat_interval: Duration,
    /// How long a majority acknowledgement keeps the leader's lease (before
    /// subtracting `max_skew`).
    pub lease_duration: Duration,
    /// Bound on the clock error of any replica over one interval of up to
    /// `election_timeout_max` (see the module doc), in model nanoseconds.
    pub max_skew: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(30),
            lease_duration: Duration::from_millis(130),
            max_skew: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("election_timeout_min must be below election_timeout_max")]
    ElectionTimeoutRange,
    #[error("heartbeat_interval must be nonzero and below lease_duration - max_skew")]
    Heartbeat,
    #[error("lease_duration + max_skew must not exceed election_timeout_min")]
    LeaseTooLong,
    #[error("peers must not contain the replica itself nor repeat")]
    Peers,
    #[error("persisted log is inconsistent with the persisted term")]
    PersistedLog,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout_min.is_zero() || self.election_timeout_min >= self.election_timeout_max {
            return Err(ConfigError::ElectionTimeoutRange);
        }
        if self.lease_duration + self.max_skew > self.election_timeout_min {
            return Err(ConfigError::LeaseTooLong);
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval + self.max_skew >= self.lease_duration {
            return Err(ConfigError::Heartbeat);
        }
        Ok(())
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: u64,
    pub command: Command,
}

/// What a replica keeps on disk; [`Output::Persist`] describes changes to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub term: u64,
    pub vote: Option<ReplicaId>,
    /// Entry `i` (1-based) is `log[i - 1]`.
    pub log: Vec<Entry>,
}

impl PersistedState {
    /// Applies one [`Output::Persist`] the way a shell writes it to disk.
    pub fn apply(&mut self, term: u64, vote: Option<ReplicaId>, log: Option<&LogWrite>) {
        self.term = term;
        self.vote = vote;
        if let Some(w) = log {
            assert!(w.from >= 1 && w.from <= self.log.len() as u64 + 1, "log write leaves a gap");
            self.log.truncate((w.from - 1) as usize);
            self.log.extend(w.entries.iter().cloned());
        }
    }
}

/// A change to the persisted log: drop entries at `from` and beyond, then
/// append `entries` (the first becomes entry `from`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogWrite {
    pub from: u64,
    pub entries: Vec<Entry>,
}

/// Messages between replicas. All carry the sender's term (for pre-votes:
/// the term the sender would campaign in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    PreVote { term: u64, last_index: u64, last_term: u64 },
    /// `term` echoes the request when granted, else is the voter's term.
    PreVoteResp { term: u64, granted: bool },
    Vote { term: u64, last_index: u64, last_term: u64 },
    VoteResp { term: u64, granted: bool },
    Append {
        term: u64,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
        /// The leader's round counter and local send time, echoed back.
        round: u64,
        sent_at: SimTime,
    },
    AppendResp {
        term: u64,
        /// Last index known to match the leader's log when `success`, else
        /// the index the leader should retry from.
        index: u64,
        success: bool,
        round: u64,
        sent_at: SimTime,
    },
}

impl Message {
    pub fn term(&self) -> u64 {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResp { term, .. }
            | Message::Vote { term, .. }
            | Message::VoteResp { term, .. }
            | Message::Append { term, .. }
            | Message::AppendResp { term, .. } => *term,
        }
    }
}

/// Events into the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed; the shell ticks at least every `heartbeat_interval / 2`.
    Tick,
    Message { from: ReplicaId, msg: Message },
    /// A client proposal; `id` is the shell's handle for the answer.
    Propose { id: u64, command: Command },
    /// A linearizable read: answered by [`Output::ReadReady`] once the local
    /// state machine may serve it.
    Read { id: u64 },
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// [`UNCOMMITTED_MAX`] proposals are waiting to commit.
    TooManyUncommitted,
    /// The log holds [`LOG_LEN_MAX`] entries.
    LogFull,
    /// [`READS_PENDING_MAX`] reads are waiting.
    TooManyReads,
    /// The command exceeds the key or value bound.
    CommandTooLarge,
}

/// Commands out of the core, to carry out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make durable before carrying out any later output of this step.
    Persist { term: u64, vote: Option<ReplicaId>, log: Option<LogWrite> },
    Send { to: ReplicaId, msg: Message },
    /// A proposal was appended at `index` in `term`; it took effect once an
    /// `Apply` with that index and term appears (a different term at that
    /// index means it was lost).
    Accepted { id: u64, index: u64, term: u64 },
    /// Apply the committed entry `index` to the state machine.
    Apply { index: u64, term: u64, command: Command },
    /// The read may be served from the state machine, now that everything
    /// up to `index` has been applied.
    ReadReady { id: u64, index: u64 },
    /// This replica is not the leader (or stopped being it); try `hint`.
    NotLeader { id: u64, hint: Option<ReplicaId> },
    Busy { id: u64, reason: Busy },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Clone, Debug)]
struct Progress {
    next: u64,
    matched: u64,
    /// Highest round / send time this peer acknowledged in this term.
    acked_round: u64,
    acked_sent_at: Option<SimTime>,
}

#[derive(Clone, Debug)]
struct PendingRead {
    id: u64,
    index: u64,
    /// The first round sent after the read arrived.
    round: u64,
}

/// One replica's Raft state.
pub struct Node {
    id: ReplicaId,
    peers: Vec<ReplicaId>,
    config: Config,
    rng: ChaCha8Rng,
    // Persistent state.
    term: u64,
    vote: Option<ReplicaId>,
    log: Vec<Entry>,
    // What the last Persist output said, to emit hard state only on change.
    persisted_hard: (u64, Option<ReplicaId>),
    log_dirty_from: Option<u64>,
    // Volatile state.
    role: Role,
    leader_hint: Option<ReplicaId>,
    commit: u64,
    applied: u64,
    election_deadline: SimTime,
    last_leader_contact: SimTime,
    prevotes: BTreeSet<ReplicaId>,
    votes: BTreeSet<ReplicaId>,
    // Leader state.
    progress: BTreeMap<ReplicaId, Progress>,
    round: u64,
    last_round_sent_at: SimTime,
    /// Latest send time stamped on any append of this term.
    last_append_sent_at: SimTime,
    became_leader_at: SimTime,
    term_start_index: u64,
    pending_reads: Vec<PendingRead>,
    // Outputs of the current step, other than Persist.
    sends: Vec<Output>,
    events: Vec<Output>,
}

impl Node {
    /// A replica booting at local time `now` from what it persisted.
    /// `peers` are the other replicas of the group.
    pub fn new(
        id: ReplicaId,
        peers: &[ReplicaId],
        config: Config,
        persisted: PersistedState,
        rng: ChaCha8Rng,
        now: SimTime,
    ) -> Result<Node, ConfigError> {
        config.validate()?;
        let mut sorted = peers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != peers.len() || sorted.contains(&id) {
            return Err(ConfigError::Peers);
        }
        let terms_ok = persisted.log.windows(2).all(|w| w[0].term <= w[1].term)
            && persisted.log.last().is_none_or(|e| e.term <= persisted.term);
        if !terms_ok {
            return Err(ConfigError::PersistedLog);
        }
        let mut node = Node {
            id,
            peers: sorted,
            config,
            rng,
            term: persisted.term,
            vote: persisted.vote,
            log: persisted.log,
            persisted_hard: (persisted.term, persisted.vote),
            log_dirty_from: None,
            role: Role::Follower,
            leader_hint: None,
            commit: 0,
            applied: 0,
            election_deadline: now,
            // Boot counts as leader contact: a replica that acknowledged a
            // leader's round just before crashing must not vote right away.
            last_leader_contact: now,
            prevotes: BTreeSet::new(),
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            round: 0,
            last_round_sent_at: now,
            last_append_sent_at: now,
            became_leader_at: now,
            term_start_index: 0,
            pending_reads: Vec::new(),
            sends: Vec::new(),
            events: Vec::new(),
        };
        node.reset_election_timer(now);
        Ok(node)
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> u64 {
        self.term
    }
    pub fn vote(&self) -> Option<ReplicaId> {
        self.vote
    }
    pub fn commit_index(&self) -> u64 {
        self.commit
    }
    pub fn applied_index(&self) -> u64 {
        self.applied
    }
    pub fn log(&self) -> &[Entry] {
        &self.log
    }
    pub fn leader_hint(&self) -> Option<ReplicaId> {
        self.leader_hint
    }
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// Whether this replica holds a valid read lease at local time `now`.
    pub fn lease_valid(&self, now: SimTime) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let Some(start) = self.lease_start() else { return false };
        let Some(usable) = self.config.lease_duration.checked_sub(self.config.max_skew) else { return false };
        now < start + usable
    }

    /// Feeds one input at local time `now`; returns the outputs to carry
    /// out in order (a [`Output::Persist`], if any, comes first).
    pub fn step(&mut self, now: SimTime, input: Input) -> Vec<Output> {
        debug_assert!(self.sends.is_empty() && self.events.is_empty());
        match input {
            Input::Tick => self.tick(now),
            Input::Message { from, msg } => self.receive(now, from, msg),
            Input::Propose { id, command } => self.propose(now, id, command),
            Input::Read { id } => self.read(now, id),
        }
        self.apply_committed();
        self.serve_reads(now);
        self.flush()
    }

    // ---- outputs ----

    fn flush(&mut self) -> Vec<Output> {
        let mut out = Vec::with_capacity(1 + self.sends.len() + self.events.len());
        let hard = (self.term, self.vote);
        let log = self.log_dirty_from.take().map(|from| {
            assert!(from >= 1 && from <= self.last_index() + 1, "dirty log index out of range");
            LogWrite { from, entries: self.log[(from - 1) as usize..].to_vec() }
        });
        if hard != self.persisted_hard || log.is_some() {
            self.persisted_hard = hard;
            out.push(Output::Persist { term: self.term, vote: self.vote, log });
        }
        out.append(&mut self.sends);
        out.append(&mut self.events);
        out
    }

    fn send(&mut self, to: ReplicaId, msg: Message) {
        self.sends.push(Output::Send { to, msg });
    }

    fn mark_log_dirty(&mut self, from: u64) {
        self.log_dirty_from = Some(self.log_dirty_from.map_or(from, |f| f.min(from)));
    }

    // ---- log helpers ----

    fn last_index(&self) -> u64 {
        self.log.len() as u64
    }
    fn last_term(&self) -> u64 {
        self.log.last().map_or(0, |e| e.term)
    }
    /// Term of entry `index`; 0 for index 0; None beyond the log.
    fn term_at(&self, index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.log.get((index - 1) as usize).map(|e| e.term)
    }
    fn truncate_from(&mut self, index: u64) {
        assert!(index > self.commit, "truncating committed entry {index} (commit {})", self.commit);
        self.log.truncate((index - 1) as usize);
        self.mark_log_dirty(index);
    }
    fn append_entry(&mut self, entry: Entry) {
        assert!(entry.term <= self.term, "entry from a future term");
        assert!(entry.term >= self.last_term(), "log terms must not decrease");
        self.log.push(entry);
        self.mark_log_dirty(self.last_index());
    }
    /// Whether a candidate's log is at least as up to date as ours (§5.4.1).
    fn log_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }
    fn quorum(&self) -> usize {
        let replicas = self.peers.len() + 1;
        replicas / 2 + 1
    }

    // ---- timers and roles ----

    fn reset_election_timer(&mut self, now: SimTime) {
        let min = self.config.election_timeout_min.as_nanos() as u64;
        let max = self.config.election_timeout_max.as_nanos() as u64;
        let timeout = self.rng.random_range(min..max);
        self.election_deadline = now + Duration::from_nanos(timeout);
    }

    /// Whether a leader was heard (or, for a leader, a round sent) less than
    /// `election_timeout_min` ago.
    fn leader_recently_heard(&self, now: SimTime) -> bool {
        now < self.last_leader_contact + self.config.election_timeout_min
    }

    fn fail_pending_reads(&mut self) {
        let hint = self.leader_hint;
        for r in std::mem::take(&mut self.pending_reads) {
            self.events.push(Output::NotLeader { id: r.id, hint });
        }
    }

    fn become_follower(&mut self, now: SimTime, term: u64, leader: Option<ReplicaId>) {
        assert!(term >= self.term, "terms never decrease");
        let was_leader = self.role == Role::Leader;
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader_hint = leader;
        self.prevotes.clear();
        self.votes.clear();
        self.progress.clear();
        self.fail_pending_reads();
        if was_leader {
            self.reset_election_timer(now);
        }
    }

    fn tick(&mut self, now: SimTime) {
        if self.role == Role::Leader {
            let confirmed = self.lease_start().unwrap_or(self.became_leader_at).max(self.became_leader_at);
            if !self.peers.is_empty() && now >= confirmed + self.config.election_timeout_max {
                // check-quorum: cut off from a majority for too long
                self.leader_hint = None;
                self.become_follower(now, self.term, None);
                return;
            }
            if now >= self.last_round_sent_at + self.config.heartbeat_interval {
                self.broadcast_round(now);
            }
            return;
        }
        if now >= self.election_deadline && !self.leader_recently_heard(now) {
            self.start_prevote(now);
        }
    }

    fn start_prevote(&mut self, now: SimTime) {
        self.role = Role::PreCandidate;
        self.leader_hint = None;
        self.votes.clear();
        self.prevotes.clear();
        self.prevotes.insert(self.id);
        self.reset_election_timer(now);
        let (term, last_index, last_term) = (self.term + 1, self.last_index(), self.last_term());
        for p in self.peers.clone() {
            self.send(p, Message::PreVote { term, last_index, last_term });
        }
        if self.prevotes.len() >= self.quorum() {
            self.start_election(now);
        }
    }

    fn start_election(&mut self, now: SimTime) {
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.prevotes.clear();
        self.votes.clear();
        self.votes.insert(self.id);
        self.reset_election_timer(now);
        let (term, last_index, last_term) = (self.term, self.last_index(), self.last_term());
        for p in self.peers.clone() {
            self.send(p, Message::Vote { term, last_index, last_term });
        }
        if self.votes.len() >= self.quorum() {
            self.become_leader(now);
        }
    }

    fn become_leader(&mut self, now: SimTime) {
        assert_eq!(self.role, Role::Candidate);
        assert_eq!(self.vote, Some(self.id));
        self.role = Role::Leader;
        self.leader_hint = Some(self.id);
        self.votes.clear();
        self.became_leader_at = now;
        self.last_append_sent_at = now;
        let next = self.last_index() + 1;
        self.progress = self
            .peers
            .iter()
            .map(|&p| (p, Progress { next, matched: 0, acked_round: 0, acked_sent_at: None }))
            .collect();
        self.append_entry(Entry { term: self.term, command: Command::Noop });
        self.term_start_index = self.last_index();
        self.broadcast_round(now);
        self.advance_commit();
    }

    // ---- leader: replication ----

    fn broadcast_round(&mut self, now: SimTime) {
        self.round += 1;
        self.last_round_sent_at = now;
        self.last_leader_contact = now;
        for p in self.peers.clone() {
            self.send_append(now, p);
        }
    }

    fn send_append(&mut self, now: SimTime, to: ReplicaId) {
        let Some(pr) = self.progress.get(&to) else { return };
        let next = pr.next.clamp(1, self.last_index() + 1);
        let prev_index = next - 1;
        let prev_term = self.term_at(prev_index).expect("next is within the log");
        let end = (prev_index as usize + ENTRIES_PER_APPEND_MAX).min(self.log.len());
        let entries = self.log[prev_index as usize..end].to_vec();
        // Pipelining: the next append to this peer starts after these
        // entries, so each entry goes out once rather than again with every
        // proposal and round until the peer answers. A lost append shows as
        // a gap at the peer, which rejects the next append or round with
        // its last index + 1 as the hint, and `next` moves back there.
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.next = end as u64 + 1;
        }
        self.last_append_sent_at = self.last_append_sent_at.max(now);
        let msg = Message::Append {
            term: self.term,
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
            round: self.round,
            sent_at: now,
        };
        self.send(to, msg);
    }

    /// Latest leader send time acknowledged by a majority (the leader
    /// counting itself with its latest round).
    fn lease_start(&self) -> Option<SimTime> {
        let mut acked: Vec<Option<SimTime>> = self.progress.values().map(|p| p.acked_sent_at).collect();
        acked.push(Some(self.last_round_sent_at));
        acked.sort_unstable_by(|a, b| b.cmp(a));
        acked[self.quorum() - 1]
    }

    fn acked_round(&self) -> u64 {
        let mut acked: Vec<u64> = self.progress.values().map(|p| p.acked_round).collect();
        acked.push(self.round);
        acked.sort_unstable_by(|a, b| b.cmp(a));
        acked[self.quorum() - 1]
    }

    fn advance_commit(&mut self) {
        let mut matched: Vec<u64> = self.progress.values().map(|p| p.matched).collect();
        matched.push(self.last_index());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let n = matched[self.quorum() - 1];
        // Only entries of the current term are committed by counting (§5.4.2).
        if n > self.commit && self.term_at(n) == Some(self.term) {
            self.commit = n;
        }
    }

    fn propose(&mut self, now: SimTime, id: u64, command: Command) {
        if self.role != Role::Leader {
            self.events.push(Output::NotLeader { id, hint: self.leader_hint });
            return;
        }
        let busy = if !command.within_bounds() {
            Some(Busy::CommandTooLarge)
        } else if self.last_index() - self.commit >= UNCOMMITTED_MAX {
            Some(Busy::TooManyUncommitted)
        } else if self.last_index() >= LOG_LEN_MAX {
            Some(Busy::LogFull)
        } else {
            None
        };
        if let Some(reason) = busy {
            self.events.push(Output::Busy { id, reason });
            return;
        }
        self.append_entry(Entry { term: self.term, command });
        self.events.push(Output::Accepted { id, index: self.last_index(), term: self.term });
        for p in self.peers.clone() {
            self.send_append(now, p);
        }
        self.advance_commit();
    }

    // ---- reads ----

    fn read(&mut self, now: SimTime, id: u64) {
        if self.role != Role::Leader {
            self.events.push(Output::NotLeader { id, hint: self.leader_hint });
            return;
        }
        if self.pending_reads.len() >= READS_PENDING_MAX {
            self.events.push(Output::Busy { id, reason: Busy::TooManyReads });
            return;
        }
        let index = self.commit.max(self.term_start_index);
        let lease = self.lease_valid(now);
        if !lease {
            self.broadcast_round(now);
        }
        // Without a lease, the round just sent (self.round) confirms it;
        // with one, any later round does if the lease runs out meanwhile.
        let round = if lease { self.round + 1 } else { self.round };
        self.pending_reads.push(PendingRead { id, index, round });
    }

    fn serve_reads(&mut self, now: SimTime) {
        if self.role != Role::Leader || self.pending_reads.is_empty() {
            return;
        }
        let lease = self.lease_valid(now);
        let acked_round = self.acked_round();
        let applied = self.applied;
        let mut waiting = Vec::new();
        for r in std::mem::take(&mut self.pending_reads) {
            if r.index <= applied && (lease || acked_round >= r.round) {
                self.events.push(Output::ReadReady { id: r.id, index: r.index });
            } else {
                waiting.push(r);
            }
        }
        self.pending_reads = waiting;
    }

    fn apply_committed(&mut self) {
        assert!(self.commit <= self.last_index(), "commit beyond the log");
        let end = self.commit.min(self.applied + APPLY_PER_STEP_MAX);
        while self.applied < end {
            self.applied += 1;
            let e = &self.log[(self.applied - 1) as usize];
            self.events.push(Output::Apply { index: self.applied, term: e.term, command: e.command.clone() });
        }
    }

    // ---- messages ----

    fn receive(&mut self, now: SimTime, from: ReplicaId, msg: Message) {
        if !self.peers.contains(&from) {
            return; // not a member of this group
        }
        if let Message::PreVote { term, last_index, last_term } = msg {
            let granted = term > self.term
                && !self.leader_recently_heard(now)
                && self.log_up_to_date(last_index, last_term);
            if self.leader_recently_heard(now) && term > self.term {
                return; // stickiness: ignore, as for votes
            }
            let term = if granted { term } else { self.term };
            self.send(from, Message::PreVoteResp { term, granted });
            return;
        }
        let term = msg.term();
        if term > self.term {
            if matches!(msg, Message::Vote { .. }) && self.leader_recently_heard(now) {
                return; // stickiness: a live leader was heard, ignore entirely
            }
            if let Message::PreVoteResp { granted: true, .. } = msg {
                // a granted pre-vote echoes the proposed term: no term change
            } else {
                let leader = matches!(msg, Message::Append { .. }).then_some(from);
                self.become_follower(now, term, leader);
            }
        }
        match msg {
            Message::PreVote { .. } => unreachable!("handled above"),
            Message::PreVoteResp { term, granted } => {
                if self.role == Role::PreCandidate && granted && term == self.term + 1 {
                    self.prevotes.insert(from);
                    if self.prevotes.len() >= self.quorum() {
                        self.start_election(now);
                    }
                }
            }
            Message::Vote { term, last_index, last_term } => self.on_vote(now, from, term, last_index, last_term),
            Message::VoteResp { term, granted } => {
                if term != self.term || self.role != Role::Candidate || !granted {
                    return; // a stale answer from an earlier term never counts
                }
                self.votes.insert(from);
                if self.votes.len() >= self.quorum() {
                    self.become_leader(now);
                }
            }
            Message::Append { term, prev_index, prev_term, entries, commit, round, sent_at } => {
                self.on_append(now, from, term, prev_index, prev_term, entries, commit, round, sent_at)
            }
            Message::AppendResp { term, index, success, round, sent_at } => {
                self.on_append_resp(now, from, term, index, success, round, sent_at)
            }
        }
    }

    fn on_vote(&mut self, now: SimTime, from: ReplicaId, term: u64, last_index: u64, last_term: u64) {
        if term < self.term {
            self.send(from, Message::VoteResp { term: self.term, granted: false });
            return;
        }
        let granted = self.vote.is_none_or(|v| v == from)
            && self.role == Role::Follower
            && !self.leader_recently_heard(now)
            && self.log_up_to_date(last_index, last_term);
        if granted {
            self.vote = Some(from);
            self.reset_election_timer(now);
        }
        self.send(from, Message::VoteResp { term: self.term, granted });
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        now: SimTime,
        from: ReplicaId,
        term: u64,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
        round: u64,
        sent_at: SimTime,
    ) {
        let reject = |node: &mut Node, index: u64| {
            let msg = Message::AppendResp { term: node.term, index, success: false, round, sent_at };
            node.send(from, msg);
        };
        if term < self.term {
            reject(self, 0); // tells a deposed leader the newer term
            return;
        }
        if self.role == Role::Leader {
            return; // a second leader in one term: cannot happen, ignore
        }
        if self.role != Role::Follower {
            self.become_follower(now, term, Some(from));
        }
        self.leader_hint = Some(from);
        self.last_leader_contact = now;
        self.reset_election_timer(now);

        let malformed = entries.len() > ENTRIES_PER_APPEND_MAX
            || entries.iter().any(|e| e.term > term || e.term < prev_term)
            || entries.windows(2).any(|w| w[0].term > w[1].term)
            || prev_index.checked_add(entries.len() as u64).is_none();
        if malformed {
            return;
        }
        if prev_index > self.last_index() {
            reject(self, self.last_index() + 1);
            return;
        }
        if self.term_at(prev_index) != Some(prev_term) {
            // Hint: the first index of our conflicting term, not below commit.
            let conflict_term = self.term_at(prev_index);
            let floor = (self.commit + 1).max(prev_index.saturating_sub(CONFLICT_SCAN_MAX)).max(1);
            let mut hint = prev_index;
            while hint > floor && self.term_at(hint - 1) == conflict_term {
                hint -= 1;
            }
            reject(self, hint);
            return;
        }
        let mut index = prev_index;
        for e in entries {
            index += 1;
            match self.term_at(index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    self.truncate_from(index);
                    self.append_entry(e);
                }
                None => self.append_entry(e),
            }
        }
        let new_commit = commit.min(index);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        let msg = Message::AppendResp { term: self.term, index, success: true, round, sent_at };
        self.send(from, msg);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append_resp(
        &mut self,
        now: SimTime,
        from: ReplicaId,
        term: u64,
        index: u64,
        success: bool,
        round: u64,
        sent_at: SimTime,
    ) {
        if term != self.term || self.role != Role::Leader {
            return;
        }
        let last_index = self.last_index();
        let (cur_round, last_sent) = (self.round, self.last_append_sent_at);
        let Some(pr) = self.progress.get_mut(&from) else { return };
        if round > cur_round || sent_at > last_sent || index > last_index {
            return; // claims a round, time or entry this leader never sent
        }
        // Any answer in this term means the peer accepted this leader.
        pr.acked_round = pr.acked_round.max(round);
        pr.acked_sent_at = Some(pr.acked_sent_at.map_or(sent_at, |a| a.max(sent_at)));
        if success {
            if index > pr.matched {
                pr.matched = index;
            }
            pr.next = pr.next.max(pr.matched + 1);
            let more = pr.next <= last_index;
            self.advance_commit();
            if more {
                self.send_append(now, from);
            }
        } else if index >= 1 && index < pr.next {
            // Back off to the hint, never below what is known to match; a
            // stale rejection (hint at or past `next`) changes nothing.
            pr.next = index.max(pr.matched + 1);
            self.send_append(now, from);
        }
    }
}
