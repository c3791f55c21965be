//! The stream workload: client processes that take streams over as their
//! writer, append to them and read them back, recording every operation for
//! the stream checker (`check::stream`).
//!
//! Each workload has `keys` streams; process `i` works on stream
//! `i % keys` (the runner spreads one stream's processes over the client
//! nodes of different zones), so several processes share a stream and
//! fence each other:
//! a process appends with the writer it last opened until it draws `open`
//! again (the mix). A writer cut off from the others does not know it was
//! deposed and keeps appending, which is exactly what fencing must
//! withstand; one that was told reads instead, except for an occasional
//! late append ([`LATE_APPEND_P`]), until no append to its stream has been
//! acknowledged for [`TAKEOVER_AFTER`] (its new writer died with its zone,
//! say): then it takes the stream back, backing off for a random time when
//! its open loses to another process's. Without that, how long appends
//! stall after a fault would measure the mix, not the stream layer. Appended values are unique and
//! bracketed (`[p<process>.<n>....]`, `value_size` bytes) so the checker can
//! split a stream's content back into appends. Reads pick a random offset
//! below the highest acknowledged end this client node has seen; a process
//! that draws a read of a stream no process has opened yet opens it instead.
//!
//! Outcomes: an append acknowledged is `ok` at its offset; refused because
//! the writer was fenced is `info` with error `fenced…` (a batch in flight
//! when the fence landed may still have reached every replica that the new
//! writer's seal counted, so it is not a definite failure), and liveness
//! takes it for an answer; an open or read the client refused, busy, is
//! `fail` (it had no effect); any other error or a timeout is `info`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::stream::client::{Namespace, StreamClient};
use engine::stream::StreamError;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sim::time::{self, SimTime};
use sim::world::World;

use super::{next_arrival, SharedHistory};
use crate::check::liveness::FENCED;
use crate::history::{Kind, Op, Phase};
use crate::scenario::WorkloadDef;

/// The one file each stream namespace holds.
pub const STREAM_FILE: &str = "log";
/// Bytes one final-phase read asks for.
pub const FINAL_CHUNK: u64 = 64 * 1024;
/// Streams the final phase reads back at once (each lane its own process).
pub const FINAL_LANES: u64 = 16;
/// Attempts per final-phase step (open, or one chunk) before giving up.
pub const FINAL_ATTEMPTS_MAX: u32 = 50;
/// A writer that knows it was deposed still tries an append with this
/// probability when it draws one (it reads otherwise, until it draws `open`):
/// late appends exercise fencing without wasting most of the load.
const LATE_APPEND_P: f64 = 0.1;
/// A process whose writer was deposed takes its stream back when it draws
/// an append and no process had one acknowledged for this long.
pub const TAKEOVER_AFTER: Duration = Duration::from_millis(250);
/// Most bytes one main-phase read asks for, in appends.
const READ_APPENDS_MAX: u64 = 4;

/// Highest acknowledged end per stream seen on one client node.
pub type SharedEnds = Arc<Mutex<BTreeMap<String, u64>>>;
/// When each stream last had an append acknowledged or a writer opened,
/// over all client nodes (the workload's view, which drives
/// [`TAKEOVER_AFTER`]).
pub type SharedProgress = Arc<Mutex<BTreeMap<String, SimTime>>>;

pub fn stream_name(workload: &str, i: u64) -> String {
    format!("{workload}-s{i:03}")
}

/// What one stream process runs.
pub struct StreamProcessSpec {
    pub process: u64,
    pub def: Arc<WorkloadDef>,
    pub stream: String,
    /// Operations per second of this process.
    pub rate: f64,
    pub start: Duration,
    pub stop: Duration,
}

fn invoke(world: &World, history: &SharedHistory, process: u64, phase: Phase, op: &Op) {
    super::invoke(world, history, process, phase, op.clone());
}

fn complete(world: &World, history: &SharedHistory, process: u64, op: Op, kind: Kind, error: Option<String>) -> (Op, Kind) {
    super::complete(world, history, process, op.clone(), kind, error, None);
    (op, kind)
}

/// The history kind and error text of a failed stream call. A client's
/// busy refusal came before anything left the node: a definite failure
/// whose error starts `busy`, which liveness takes for an answer.
fn classify(e: &StreamError) -> (Kind, String) {
    match e {
        StreamError::Fenced => (Kind::Info, format!("{FENCED}: {e}")),
        StreamError::Busy(_) => (Kind::Fail, e.to_string()),
        _ => (Kind::Info, e.to_string()),
    }
}

/// Who invokes stream operations, and how: shared by [`open`] and [`read`].
pub struct Caller<'a> {
    pub world: &'a World,
    pub client: &'a StreamClient,
    pub history: &'a SharedHistory,
    pub process: u64,
    pub phase: Phase,
    pub timeout: Duration,
}

/// Opens `stream` as its writer (creating its file), recorded as `stream-open`.
///
/// A successful open counts as progress on the stream (`progress`), so the
/// new writer has [`TAKEOVER_AFTER`] to get its first append acknowledged
/// before a deposed process takes the stream back.
pub async fn open(c: &Caller<'_>, stream: &str, progress: Option<&SharedProgress>) -> Option<Namespace> {
    let Caller { world, client, history, process, phase, timeout } = *c;
    let op = Op::StreamOpen { stream: stream.to_string(), epoch: None };
    invoke(world, history, process, phase, &op);
    let attempt = async {
        let ns = client.open_namespace(stream).await?;
        if ns.len(STREAM_FILE).is_none() {
            ns.create(STREAM_FILE).await?;
        }
        Ok::<Namespace, StreamError>(ns)
    };
    match time::timeout(timeout, attempt).await {
        Ok(Ok(ns)) => {
            if let Some(p) = progress {
                p.lock().expect("progress").insert(stream.to_string(), time::now());
            }
            complete(world, history, process, Op::StreamOpen { stream: stream.to_string(), epoch: Some(ns.epoch()) }, Kind::Ok, None);
            Some(ns)
        }
        Ok(Err(e)) => {
            let (kind, error) = classify(&e);
            complete(world, history, process, op, kind, Some(error));
            None
        }
        Err(_) => {
            complete(world, history, process, op, Kind::Info, Some("timeout".into()));
            None
        }
    }
}

/// Reads `len` bytes at `offset`, recorded as `stream-read`.
pub async fn read(c: &Caller<'_>, stream: &str, offset: u64, len: u64) -> (Op, Kind) {
    let Caller { world, client, history, process, phase, timeout } = *c;
    let op = Op::StreamRead { stream: stream.to_string(), offset, len, value: None };
    invoke(world, history, process, phase, &op);
    match time::timeout(timeout, client.read(stream, STREAM_FILE, offset, len)).await {
        Ok(Ok(bytes)) => match String::from_utf8(bytes) {
            Ok(v) => complete(world, history, process, Op::StreamRead { stream: stream.to_string(), offset, len, value: Some(v) }, Kind::Ok, None),
            // Our values are ASCII: anything else is damage the checker must see.
            Err(e) => {
                let v = String::from_utf8_lossy(e.as_bytes()).into_owned();
                complete(world, history, process, Op::StreamRead { stream: stream.to_string(), offset, len, value: Some(v) }, Kind::Ok, None)
            }
        },
        Ok(Err(e)) => {
            let (_, error) = classify(&e);
            // A read changes nothing: a failed one is a definite failure.
            complete(world, history, process, op, Kind::Fail, Some(error))
        }
        Err(_) => complete(world, history, process, op, Kind::Fail, Some("timeout".into())),
    }
}

fn value(process: u64, n: u64, size: u32) -> String {
    let mut v = format!("[p{process}.{n}");
    while v.len() + 1 < size as usize {
        v.push('.');
    }
    v.push(']');
    v
}

/// Runs one stream process until its stop time.
pub async fn run_process(world: World, client: StreamClient, history: SharedHistory, spec: StreamProcessSpec, ends: SharedEnds, progress: SharedProgress, mut rng: ChaCha8Rng) {
    let mut next = SimTime::from_duration(spec.start);
    let stop = SimTime::from_duration(spec.stop);
    let timeout = spec.def.timeout.0;
    let mix = &spec.def.mix;
    let total = mix.append + mix.read + mix.open;
    let mut writer: Option<Namespace> = None;
    let mut backoff_until = SimTime::ZERO;
    let mut counter = 0u64;
    let caller = Caller { world: &world, client: &client, history: &history, process: spec.process, phase: Phase::Main, timeout };
    loop {
        next = next_arrival(next, spec.rate, &mut rng);
        if next >= stop {
            return;
        }
        time::sleep_until(next).await;
        let x = rng.random::<f64>() * total;
        let wants_append = x >= mix.open && x < mix.open + mix.append;
        let stalled = || {
            let last = progress.lock().expect("progress").get(&spec.stream).copied().unwrap_or(SimTime::ZERO);
            time::now().saturating_sub(last) >= TAKEOVER_AFTER
        };
        let deposed = writer.as_ref().is_some_and(|ns| ns.is_deposed());
        // A read of a stream no process has opened yet would only find it
        // missing: the process opens it instead.
        let wants_read = x >= mix.open + mix.append;
        let created = || progress.lock().expect("progress").contains_key(&spec.stream);
        if x < mix.open || (wants_append && (writer.is_none() || (deposed && time::now() >= backoff_until && stalled()))) || (wants_read && !created()) {
            match open(&caller, &spec.stream, Some(&progress)).await {
                Some(ns) => writer = Some(ns),
                // Two processes taking a stream over at once fence each
                // other's opens: back off for a random time, as a client of
                // a real store would, so one of them wins.
                None => backoff_until = time::now() + TAKEOVER_AFTER.mul_f64(2.0 * rng.random::<f64>()),
            }
        } else if x < mix.open + mix.append && writer.as_ref().is_some_and(|ns| !ns.is_deposed() || rng.random::<f64>() < LATE_APPEND_P) {
            let Some(ns) = writer.as_ref() else { continue };
            counter += 1;
            let v = value(spec.process, counter, spec.def.value_size);
            let op = Op::StreamAppend { stream: spec.stream.clone(), value: v.clone(), offset: None };
            invoke(&world, &history, spec.process, Phase::Main, &op);
            match time::timeout(timeout, ns.append(STREAM_FILE, v.as_bytes())).await {
                Ok(Ok(offset)) => {
                    let end = offset + v.len() as u64;
                    progress.lock().expect("progress").insert(spec.stream.clone(), time::now());
                    let mut e = ends.lock().expect("ends");
                    let known = e.entry(spec.stream.clone()).or_insert(0);
                    *known = (*known).max(end);
                    drop(e);
                    complete(&world, &history, spec.process, Op::StreamAppend { stream: spec.stream.clone(), value: v, offset: Some(offset) }, Kind::Ok, None);
                }
                Ok(Err(e)) => {
                    let (kind, error) = classify(&e);
                    complete(&world, &history, spec.process, op, kind, Some(error));
                }
                Err(_) => {
                    complete(&world, &history, spec.process, op, Kind::Info, Some("timeout".into()));
                }
            }
        } else {
            let end = ends.lock().expect("ends").get(&spec.stream).copied().unwrap_or(0);
            let span = u64::from(spec.def.value_size) * READ_APPENDS_MAX;
            let offset = if end == 0 { 0 } else { rng.random_range(0..end) };
            read(&caller, &spec.stream, offset, span).await;
        }
    }
}

/// The final phase for streams: take each stream over (which seals whatever
/// its last writer left open at the committed length), then read it from
/// offset 0 in chunks until a short read marks its end. Streams are read
/// [`FINAL_LANES`] at a time, stream `i` by lane `i % lanes`, each lane
/// its own process (`processes`), so a run of many streams reads them back
/// within the final phase's limit.
pub async fn final_reads(world: &World, client: &StreamClient, history: &SharedHistory, processes: &[u64], streams: Vec<String>, timeout: Duration) {
    let lanes = processes.len().max(1);
    let mut by_lane: Vec<Vec<String>> = vec![Vec::new(); lanes];
    for (i, stream) in streams.into_iter().enumerate() {
        by_lane[i % lanes].push(stream);
    }
    let work = processes.iter().zip(by_lane).map(|(&process, streams)| async move {
        let caller = Caller { world, client, history, process, phase: Phase::Final, timeout };
        for stream in streams {
            read_back(&caller, &stream).await;
        }
    });
    engine::join::join_all(work.collect()).await;
}

/// Takes one stream over and reads it back whole (see [`final_reads`]).
async fn read_back(caller: &Caller<'_>, stream: &str) {
    let mut opened = false;
    for attempt in 0..FINAL_ATTEMPTS_MAX {
        if open(caller, stream, None).await.is_some() {
            opened = true;
            break;
        }
        time::sleep(Duration::from_millis(10 * u64::from(attempt + 1).min(10))).await;
    }
    if !opened {
        return;
    }
    let mut offset = 0u64;
    'chunks: loop {
        for attempt in 0..FINAL_ATTEMPTS_MAX {
            let (op, kind) = read(caller, stream, offset, FINAL_CHUNK).await;
            if let (Kind::Ok, Op::StreamRead { value: Some(v), .. }) = (kind, op) {
                if (v.len() as u64) < FINAL_CHUNK {
                    break 'chunks;
                }
                offset += v.len() as u64;
                continue 'chunks;
            }
            time::sleep(Duration::from_millis(10 * u64::from(attempt + 1).min(10))).await;
        }
        break;
    }
}
