//! The `tablesim` binary: the allocator, then the command line
//! (`tablesim::cli`).
//!
//! Exit codes: 0 every expectation held; 1 an expectation failed, a run
//! diverged or panicked (the replay command is printed); 2 bad input.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: a run allocates and frees small
/// objects (messages, tasks, timers) at a high rate; glibc's consolidation
/// and free-list work was about 15% of double11's CPU time. Allocation
/// addresses never reach the simulation's decisions, so digests are unchanged.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's option setter, from the library the `mimalloc` crate links in
// (its Rust binding sits behind a feature that pulls in another crate).
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (its 16th option):
/// how long freed pages stay committed before they are returned to the OS.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Keeps freed memory committed. With mimalloc's default (purge after
/// 1 s) a run keeps returning pages and faulting them back in: the kernel's
/// page clearing and mimalloc's page set-up were about 7% of double11's CPU
/// time, and double11 ran 6-13% faster without purging (paired bench runs).
/// A run peaks near 70 MiB, so holding it costs little.
fn keep_freed_memory() {
    // SAFETY: a plain C call that sets one integer option.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    debug_assert_eq!(purge_delay(), -1);
}

fn purge_delay() -> std::ffi::c_long {
    // SAFETY: a plain C call that reads one integer option.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

fn main() -> ExitCode {
    keep_freed_memory();
    tablesim::cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the option's number: option 15 has purge_delay's default
    /// (1000 ms) until `keep_freed_memory` turns purging off. A mimalloc
    /// upgrade that renumbers its options fails here.
    #[test]
    fn option_15_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), 1000);
        }
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
