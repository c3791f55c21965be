//! The metadata store: a small replicated service, one replica per zone,
//! holding stream and extent metadata, leases, the partition map and the
//! master role.
//!
//! This module holds its protocol core, without I/O: [`raft`] (consensus,
//! leader leases) and [`state`] (the key-value state machine with
//! compare-and-set that the metadata is stored in). [`service`] is the I/O
//! shell that runs the core on simulated nodes (replica main and client),
//! and [`storage`] its checksummed on-disk log of Raft state.
//!
//! Why Raft: the store needs a totally ordered log of small metadata
//! commands (stream opens, extent seals, fencing epochs, partition
//! assignments) with linearizable reads served by one replica. Raft gives
//! that with a single stable leader per term, which also serves as the
//! natural place to hold read leases; Multi-Paxos would need the same leader
//! election and log-gap handling built on top, and CASPaxos keeps
//! independent registers, so multi-key metadata updates and an ordered log
//! for the stream layer to follow would have to be rebuilt above it. Raft's
//! well-known safety properties (election safety, log matching, leader
//! completeness) are also what the tests check after every step.

pub mod raft;
pub mod service;
pub mod state;
pub mod storage;

#[cfg(test)]
mod raft_tests;
