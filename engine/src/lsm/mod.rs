//! The LSM partition storage engine.
//!
//! A partition's rows live in one LSM tree written against [`crate::fs::Files`]:
//! writes go to the [`wal`] (group commit, acknowledged after sync) and the
//! [`memtable`]; full memtables are flushed to [`sstable`]s; leveled
//! [`compaction`] merges them and drops garbage; the [`manifest`] records
//! which tables are live; [`recovery`] rebuilds it all after a crash. The
//! [`table`] module gives it the table model of the store (typed primary
//! keys, multi-versioned schema-free columns, conditional writes,
//! auto-increment, scans), and [`crashtest`] proves crash consistency.
//!
//! Architecture invariants: the engine reads time only from the clock it is
//! handed, owns no randomness, touches no real file and spawns no thread.

pub mod block_cache;
pub mod compaction;
pub mod crashtest;
pub mod db;
pub mod error;
pub mod format;
pub mod keys;
pub mod manifest;
pub mod memtable;
pub mod read;
pub mod recovery;
pub mod sstable;
pub mod table;
pub mod wal;
pub mod bench;

pub use db::{ClockFn, Db, GcPolicy, Options, Ticket};
pub use error::{Error, Result};
pub use table::{Table, TableSchema};

/// One versioned key: `value` `None` is a point tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub seq: u64,
    pub value: Option<Vec<u8>>,
}

/// Iteration direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dir {
    Forward,
    Backward,
}
