//! Workloads: client processes that drive the service and record every
//! operation (invocation and completion) for the checkers and the report.
//!
//! Each process has at most one operation open (as in Jepsen), draws from
//! its own random stream (`workload/<name>/<process>`), and issues
//! operations at its share of the workload's rate with exponential gaps,
//! falling behind (closed loop) when the service is slower than the rate.
//!
//! - [`kv`]: key-value processes against any [`kv::KvService`], and the
//!   final read-back; [`minikv`] and [`table`] put a service's client
//!   behind that trait.
//! - [`stream`]: stream writers and readers against the stream layer.
//! - [`badreq`]: bad requests a key-value workload sends on purpose.
//! - [`clients`]: the processes spread over the client nodes, and what one
//!   client node runs with the client its deployment bound there.
//!
//! This module holds what they share: the recorded history and the
//! arrival process.

pub mod badreq;
pub mod clients;
pub mod kv;
pub mod minikv;
pub mod stream;
pub mod table;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sim::log::Event;
use sim::time::{self, SimTime};
use sim::world::World;

use crate::history::{History, Kind, Op, Phase};

/// Workloads start this long into the main phase: servers recover their
/// disks and bind their transports first (a request before that vanishes);
/// the main phase itself begins once the service is set up.
pub const SERVICE_STARTUP: Duration = Duration::from_millis(10);

/// Every operation of a run, in the order the runner observed it.
pub type SharedHistory = Arc<Mutex<History>>;

/// Records an operation's invocation: the event log's text and the history.
pub(crate) fn invoke(world: &World, history: &SharedHistory, process: u64, phase: Phase, op: Op) {
    let at = time::now();
    let mut text = String::from("invoke ");
    op.describe_into(&mut text);
    world.record(Event::Client { at, process, text });
    history.lock().expect("history").invoke(process, at.0, op, phase);
}

/// Records an operation's completion: the event log's text and the history.
/// `stale_ns`: a read served by a cache that may be this far behind.
pub(crate) fn complete(world: &World, history: &SharedHistory, process: u64, op: Op, kind: Kind, error: Option<String>, stale_ns: Option<u64>) {
    let at = time::now();
    let mut text = format!("{kind:?} ");
    op.describe_into(&mut text);
    let _ = write!(text, " {error:?}");
    if let Some(s) = stale_ns {
        let _ = write!(text, " stale<={s}ns");
    }
    world.record(Event::Client { at, process, text });
    history.lock().expect("history").complete_stale(process, at.0, kind, op, error, stale_ns);
}

/// When a process with Poisson arrivals at `rate` per second starts its
/// next operation. A process that fell behind (its operations were slow)
/// starts its next operation now rather than working off a backlog in a
/// burst.
pub fn next_arrival(prev: SimTime, rate: f64, rng: &mut ChaCha8Rng) -> SimTime {
    let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
    prev.max(time::now()) + Duration::from_nanos((gap * 1e9) as u64)
}
