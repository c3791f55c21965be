//! What work costs on a node's simulated CPU ([`sim::cpu`]).
//!
//! Every role charges its node's CPU where the work happens: a proxy per
//! request (parse, authenticate, route), a table server per operation (a
//! point read, a write, a scan and each row it returns, each KiB of value,
//! each KiB its partitions' LSMs write to their tables in memtable flushes
//! and compactions),
//! a storage node per message it handles (each append and read, each KiB
//! it checksums), a metadata replica per Raft step, and every role a little
//! per control message (heartbeat, grant, lease renewal) on the control
//! lane. The defaults are of realistic size for a server core (tens of
//! microseconds per point operation); a scenario's `[resources]` changes
//! them, and the cores each role has, to make one role scarce.

use std::time::Duration;

/// CPU time of each kind of work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Costs {
    /// Proxy: parse, authenticate and route one request.
    pub proxy_request: Duration,
    /// Table server: one point read (get, get-row).
    pub server_read: Duration,
    /// Table server: one write (put, cas, delete, append): encoding, the
    /// memtable insert, the log record.
    pub server_write: Duration,
    /// Table server: a put of a hot key that joins a combined batch: its
    /// share of the batch's one engine write.
    pub server_combined: Duration,
    /// Table server: a scan's set-up, plus `server_scan_row` per row.
    pub server_scan: Duration,
    pub server_scan_row: Duration,
    /// Table server: each KiB of values a request carries or returns.
    pub server_kib: Duration,
    /// Table server: each KiB a partition's LSM writes to its tables (sort,
    /// encode, checksum; a compaction's merge): memtable flushes and
    /// compaction output. The WAL's records are in `server_write`, and
    /// reads in the read costs.
    pub server_table_kib: Duration,
    /// Storage node: one append (checksum, record, page cache).
    pub storage_append: Duration,
    /// Storage node: one read.
    pub storage_read: Duration,
    /// Storage node: each KiB appended or read.
    pub storage_kib: Duration,
    /// Any role: one control message (heartbeat, grant, ping, lease).
    pub control: Duration,
    /// Metadata replica: one step of the Raft core.
    pub raft_step: Duration,
}

impl Default for Costs {
    fn default() -> Self {
        let us = Duration::from_micros;
        Costs {
            proxy_request: us(20),
            server_read: us(30),
            server_write: us(40),
            server_combined: us(5),
            server_scan: us(20),
            server_scan_row: us(2),
            server_kib: us(2),
            server_table_kib: us(2),
            storage_append: us(8),
            storage_read: us(8),
            storage_kib: us(1),
            control: us(5),
            raft_step: us(10),
        }
    }
}

impl Costs {
    /// No work costs anything (the world before the CPU model; tests).
    pub fn free() -> Costs {
        Costs {
            proxy_request: Duration::ZERO,
            server_read: Duration::ZERO,
            server_write: Duration::ZERO,
            server_combined: Duration::ZERO,
            server_scan: Duration::ZERO,
            server_scan_row: Duration::ZERO,
            server_kib: Duration::ZERO,
            server_table_kib: Duration::ZERO,
            storage_append: Duration::ZERO,
            storage_read: Duration::ZERO,
            storage_kib: Duration::ZERO,
            control: Duration::ZERO,
            raft_step: Duration::ZERO,
        }
    }

    /// `per_kib` for `bytes` bytes (rounded up to whole KiB).
    pub fn per_kib(per_kib: Duration, bytes: usize) -> Duration {
        per_kib * (bytes.div_ceil(1024) as u32)
    }
}
