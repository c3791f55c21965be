//! The bounds of a scenario: every number a file can give has a named
//! limit, checked at validation with an error at the field's line, so that
//! no accepted scenario can make the simulator use unbounded memory or run
//! unboundedly long. The README's scenario-writing section lists them.
//!
//! A run's size is bounded twice: each field on its own (a rate, a
//! duration, a count), and the run as a whole ([`OPERATIONS_MAX`]: the
//! operations its workloads and hotspots plan, [`VALUE_BYTES_MAX_PER_RUN`]:
//! the value bytes they carry), so that many fields each within their own
//! limit cannot add up to a run that does not fit.

use std::time::Duration;

/// Bytes of a scenario file (read through this cap, never whole first).
pub const SCENARIO_BYTES_MAX: usize = 1 << 20;
/// Characters of a name (the scenario's, a workload's, a zone's, a role's).
pub const NAME_CHARS_MAX: usize = 64;
/// Characters of the description.
pub const DESCRIPTION_CHARS_MAX: usize = 4096;
/// Characters of a duration as written (`"150us"`).
pub const DURATION_CHARS_MAX: usize = 32;
/// Characters of a user's word echoed in a message before it is cut.
pub const ECHO_CHARS_MAX: usize = 48;

/// The main phase (`duration`): simulated time is bounded, and so is the
/// time a run takes.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Zones of a topology.
pub const ZONES_MAX: usize = 16;
/// Roles in `[topology.nodes]`.
pub const ROLES_MAX: usize = 16;
/// Nodes of the world (every role in every zone).
pub const NODES_MAX: u64 = 1024;
/// One-way latency and jitter of a link, disk latencies, a latency spike's
/// extra delay.
pub const LATENCY_MAX: Duration = Duration::from_secs(10);

/// `[[workload]]` entries.
pub const WORKLOADS_MAX: usize = 32;
/// Client processes of one workload or hotspot.
pub const CLIENTS_MAX: u32 = 10_000;
/// Client processes of a run, over every workload and hotspot.
pub const PROCESSES_MAX: u64 = 20_000;
/// Operations per second of one workload or hotspot.
pub const RATE_MAX: f64 = 100_000.0;
/// Keys (or streams) of one workload: key names keep eight digits.
pub const KEYS_MAX: u64 = 10_000_000;
/// Zipf's exponent.
pub const ZIPF_THETA_MAX: f64 = 10.0;
/// Ranks of one Zipf table (a workload of more keys draws from its hottest
/// this many).
pub const ZIPF_KEYS_MAX: u64 = 4_000_000;
/// Ranks of every Zipf table of a run together (eight bytes each; the
/// hotspots share their workload's).
pub const ZIPF_KEYS_MAX_PER_RUN: u64 = 8_000_000;
/// Bytes of value payload per write.
pub const VALUE_BYTES_MAX: u32 = 64 * 1024;
/// Rows a scan asks for.
pub const SCAN_LIMIT_MAX: u32 = 10_000;
/// An operation's timeout (a run waits out the longest after its main
/// phase).
pub const OP_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Operations the workloads and hotspots of a run plan (rate times time
/// summed): the history holds each one twice.
pub const OPERATIONS_MAX: f64 = 2_000_000.0;
/// Value bytes the planned operations carry (operations times
/// `value_size`, and columns): the simulated disks keep what is written,
/// three times over on the stream layer.
pub const VALUE_BYTES_MAX_PER_RUN: f64 = 256.0 * 1024.0 * 1024.0;

/// `[[hotspot]]` entries.
pub const HOTSPOTS_MAX: usize = 64;
/// Most `[[quota]]` entries of one scenario.
pub const QUOTAS_MAX: usize = 64;
/// Most instances (tenants) the workloads of one scenario use.
pub const INSTANCES_MAX: usize = 8;
/// Highest quota rate (requests per second).
pub const QUOTA_RATE_MAX: u64 = 10_000_000;
/// `[[fault]]` entries.
pub const FAULTS_MAX: usize = 512;
/// Names in a fault's `from` or `to`.
pub const FAULT_NAMES_MAX: usize = 64;
/// A clock offset, either way.
pub const CLOCK_OFFSET_MAX: Duration = Duration::from_secs(3600);
/// A clock's drift, either way, in parts per million (at the limit a
/// clock runs at double speed or stands almost still).
pub const CLOCK_DRIFT_PPM_MAX: i64 = 999_999;
/// How many times slower a `disk-faults` disk is.
pub const DISK_SLOW_FACTOR_MAX: u32 = 1000;

/// `[disk]`: the largest sector, capacity and bandwidth.
pub const DISK_SECTOR_MAX: u64 = 64 * 1024;
pub const DISK_CAPACITY_MIB_MAX: u64 = 1 << 20;
pub const DISK_BANDWIDTH_MIB_S_MAX: u64 = 1 << 20;

/// `[service]`: records of one group commit.
pub const GROUP_COMMIT_MAX: usize = 4096;
/// `[service]`: the size at which a stream writer seals an extent.
pub const EXTENT_BYTES_MAX: u64 = 64 << 20;
/// `[service]`: `dead_after`, `rereplicate_after`.
pub const SERVICE_DELAY_MAX: Duration = Duration::from_secs(600);

/// `[expect]`: the durations it bounds (`liveness_bound`,
/// `max_unavailability`, ...).
pub const EXPECT_DURATION_MAX: Duration = DURATION_MAX;

/// A user's word as a message shows it: control characters escaped, cut
/// after [`ECHO_CHARS_MAX`] characters (a name with a newline or of a
/// hundred thousand characters never reaches a message raw).
pub fn shown(word: &str) -> String {
    let mut out: String = word.chars().take(ECHO_CHARS_MAX).flat_map(char::escape_debug).collect();
    let more = word.chars().count().saturating_sub(ECHO_CHARS_MAX);
    if more > 0 {
        out.push_str(&format!("… ({more} more characters)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_shown_escaped_and_cut() {
        assert_eq!(shown("az1"), "az1");
        assert_eq!(shown("a\nb\"c"), "a\\nb\\\"c");
        let long = "x".repeat(100_000);
        let s = shown(&long);
        assert!(s.len() < 120, "{s}");
        assert!(s.ends_with("(99952 more characters)"), "{s}");
    }
}
