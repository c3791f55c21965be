//! minikv: the testbed's self-check. A deliberately simple key-value
//! service whose guarantees are few and plain, so that scenarios running it
//! check the testbed itself (the simulated network and disks, the fault
//! machinery, the checkers) apart from the table store: when a minikv
//! scenario fails, the testbed is at fault, not the store.
//!
//! Keys are spread over the server nodes by a stable hash; each key has one
//! copy (no replication), so a key is unavailable while its server is down,
//! and a scan sees the rows of one server. Writes go through a checksummed,
//! length-framed WAL with group commit and are acknowledged only after the
//! sync that covers them. A sync that keeps failing after
//! [`SYNC_RETRIES_MAX`] retries stops the server from accepting writes: the
//! writes of that batch get "unknown", later ones "refused", while the
//! server retries the sync every [`STOPPED_RETRY_INTERVAL`] (the disk keeps
//! unsynced data dirty after a failed sync). Once a sync succeeds the batch
//! is durable, so it is applied and the server accepts writes again; after
//! [`STOPPED_RETRIES_MAX`] failures it stays stopped.
//!
//! Invariants: memory holds exactly the acknowledged state plus nothing
//! else; auto-increment values per partition key are assigned in commit
//! order, +1 consecutive, and recovered from the WAL after a crash.
//!
//! Its bugs are known, so the checkers must find them: a [`PlantedBug`]
//! (off unless a scenario asks for one) breaks one guarantee on purpose.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sim::disk::{Disk, DiskError};
use sim::log::StableHasher;
use sim::net::{Incoming, Message, Net, NetError, RequestId};
use sim::topology::NodeId;
use sim::world::NodeCtx;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum KvMsg {
    Get { key: String },
    Put { key: String, value: String, size: u32 },
    Cas { key: String, expected: Option<String>, value: String, size: u32 },
    Delete { key: String },
    Append { pkey: String },
    Scan { start: String, end: String, limit: u32 },
    // Responses.
    Value(Option<String>),
    Done,
    CasMismatch,
    Seq(u64),
    Rows(u64),
    /// Definitely not applied (queue full, server stopped accepting writes).
    Refused(String),
    /// May or may not have been applied.
    Unknown(String),
}

impl Message for KvMsg {
    const TAG: u16 = 2;
    fn kind(&self) -> &'static str {
        match self {
            KvMsg::Get { .. } => "get",
            KvMsg::Put { .. } => "put",
            KvMsg::Cas { .. } => "cas",
            KvMsg::Delete { .. } => "delete",
            KvMsg::Append { .. } => "append",
            KvMsg::Scan { .. } => "scan",
            KvMsg::Value(_) => "value",
            KvMsg::Done => "done",
            KvMsg::CasMismatch => "cas-mismatch",
            KvMsg::Seq(_) => "seq",
            KvMsg::Rows(_) => "rows",
            KvMsg::Refused(_) => "refused",
            KvMsg::Unknown(_) => "unknown",
        }
    }
}

/// Writes waiting for the committer; beyond it writes are refused.
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Retries of a failed WAL append or sync before the server fail-stops.
pub const SYNC_RETRIES_MAX: u32 = 3;
/// How often a stopped server retries the sync that failed.
pub const STOPPED_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Retries of a stopped server before it gives up for good.
pub const STOPPED_RETRIES_MAX: u32 = 600;
/// Whole recoveries a server attempts before it stays down.
pub const RECOVERY_ATTEMPTS_MAX: u32 = 100;
/// Pause between recovery attempts.
pub const RECOVERY_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts of each read, and re-reads of a bad record, while replaying the WAL.
const RECOVERY_READ_ATTEMPTS_MAX: u32 = 5;
/// Bytes read per call while replaying the WAL.
const RECOVERY_READ_BYTES: u64 = 1 << 20;
/// A WAL record larger than this is corruption, not data.
const RECORD_BYTES_MAX: u32 = 16 << 20;
/// Rows a scan may ask for.
pub const SCAN_LIMIT_MAX: u32 = 10_000;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub group_commit_max: usize,
    /// A bug to plant (none by default).
    pub planted_bug: Option<PlantedBug>,
}

/// A bug planted on purpose, to show that the checkers find what it breaks
/// (and that `shrink` reduces a run that shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// A batch is applied and acknowledged before its WAL records are
    /// synced: a crash in between loses acknowledged writes.
    AckBeforeSync,
    /// A compare-and-set is decided against the state before its batch,
    /// blind to the writes ahead of it in the same batch: two CAS from one
    /// value both succeed. Needs no fault, only concurrent CAS on a key.
    CasIgnoresBatch,
    /// Recovery skips the auto-increment records of the WAL: after a
    /// restart a partition key's sequence starts again from 1.
    SeqNotRecovered,
    /// A delete is applied and acknowledged but never written to the WAL:
    /// after a restart the deleted row is back.
    DeleteNotLogged,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 4] = [PlantedBug::AckBeforeSync, PlantedBug::CasIgnoresBatch, PlantedBug::SeqNotRecovered, PlantedBug::DeleteNotLogged];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::AckBeforeSync => "ack-before-sync",
            PlantedBug::CasIgnoresBatch => "cas-ignores-batch",
            PlantedBug::SeqNotRecovered => "seq-not-recovered",
            PlantedBug::DeleteNotLogged => "delete-not-logged",
        }
    }

    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// One WAL record: the effect of one acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Put { key: String, value: String, pad: u32 },
    Delete { key: String },
    Seq { pkey: String, seq: u64 },
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        match self {
            Record::Put { key, value, pad } => {
                out.push(1);
                put_str(out, key);
                put_str(out, value);
                out.extend_from_slice(&pad.to_le_bytes());
                out.resize(out.len() + *pad as usize, 0);
            }
            Record::Delete { key } => {
                out.push(2);
                put_str(out, key);
            }
            Record::Seq { pkey, seq } => {
                out.push(3);
                put_str(out, pkey);
                out.extend_from_slice(&seq.to_le_bytes());
            }
        }
        let len = (out.len() - start - 8) as u32;
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(p: &[u8]) -> Option<Record> {
        let mut at = 1usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = p.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let mut string = || -> Option<String> {
            let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            String::from_utf8(take(n)?.to_vec()).ok()
        };
        match p.first()? {
            1 => {
                let key = string()?;
                let value = string()?;
                Some(Record::Put { key, value, pad: 0 })
            }
            2 => Some(Record::Delete { key: string()? }),
            3 => {
                let pkey = string()?;
                let seq = u64::from_le_bytes(p.get(p.len() - 8..)?.try_into().ok()?);
                Some(Record::Seq { pkey, seq })
            }
            _ => None,
        }
    }
}

#[derive(Default, Debug)]
struct State {
    rows: BTreeMap<String, String>,
    seqs: BTreeMap<String, u64>,
}

impl State {
    fn apply(&mut self, r: &Record) {
        match r {
            Record::Put { key, value, .. } => {
                self.rows.insert(key.clone(), value.clone());
            }
            Record::Delete { key } => {
                self.rows.remove(key);
            }
            Record::Seq { pkey, seq } => {
                let prev = self.seqs.insert(pkey.clone(), *seq).unwrap_or(0);
                assert_eq!(*seq, prev + 1, "auto-increment values of {pkey} are +1 consecutive");
            }
        }
    }
}

/// Reads `name` from `offset` to its end, retrying failed reads.
async fn read_rest(disk: &Disk, name: &str, offset: u64) -> Result<Vec<u8>, DiskError> {
    let len = disk.len(name)?;
    let mut data = Vec::with_capacity(len.saturating_sub(offset) as usize);
    while offset + (data.len() as u64) < len {
        let mut attempt = 0;
        let chunk = loop {
            match disk.read_at(name, offset + data.len() as u64, RECOVERY_READ_BYTES).await {
                Ok(c) => break c,
                Err(e) if attempt + 1 >= RECOVERY_READ_ATTEMPTS_MAX => return Err(e),
                Err(_) => attempt += 1,
            }
        };
        if chunk.is_empty() {
            break;
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// The record at the start of `data`: `Some((record, framed length))`, or
/// `None` when it is torn, fails its checksum or does not decode.
fn parse_record(data: &[u8]) -> Option<(Record, usize)> {
    let n = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    if n == 0 || n > RECORD_BYTES_MAX {
        return None;
    }
    let payload = data.get(8..8 + n as usize)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((Record::decode(payload)?, 8 + n as usize))
}

/// Replays every WAL generation in order. A bad record is re-read (a read
/// may return flipped bits once); one that stays bad is the torn tail of
/// the last group commit, which was never synced, so never acknowledged:
/// its generation ends there, and later generations start after it.
async fn recover(disk: &Disk, bug: Option<PlantedBug>) -> Result<(State, u64), DiskError> {
    let mut state = State::default();
    let mut gens: Vec<u64> = disk.list("kv.wal.").iter().filter_map(|n| n.strip_prefix("kv.wal.")?.parse().ok()).collect();
    gens.sort_unstable();
    for &g in &gens {
        let name = format!("kv.wal.{g}");
        let mut data = read_rest(disk, &name, 0).await?;
        let mut at = 0usize;
        let mut rereads = 0;
        while at + 8 <= data.len() {
            match parse_record(&data[at..]) {
                Some((r, framed)) => {
                    if !(bug == Some(PlantedBug::SeqNotRecovered) && matches!(r, Record::Seq { .. })) {
                        state.apply(&r);
                    }
                    at += framed;
                    rereads = 0;
                }
                None if rereads < RECOVERY_READ_ATTEMPTS_MAX => {
                    rereads += 1;
                    let fresh = read_rest(disk, &name, at as u64).await?;
                    data.truncate(at);
                    data.extend_from_slice(&fresh);
                }
                None => break,
            }
        }
    }
    Ok((state, gens.last().map(|g| g + 1).unwrap_or(0)))
}

struct Write {
    from: NodeId,
    req: RequestId,
    msg: KvMsg,
}

/// The server's main: recover, then serve until the node dies.
pub async fn serve(ctx: NodeCtx, cfg: ServerConfig) {
    let disk = ctx.disk();
    // A recovery that fails (the disk kept refusing reads) is retried, as a
    // supervisor would restart the process; after the last attempt the
    // server stays down and the run's checkers see the unavailability.
    let mut attempt = 0;
    let (state, next_gen) = loop {
        match recover(&disk, cfg.planted_bug).await {
            Ok(x) => break x,
            Err(e) if attempt + 1 < RECOVERY_ATTEMPTS_MAX => {
                attempt += 1;
                ctx.note(format!("minikv recovery failed ({e}); retrying"));
                sim::time::sleep(RECOVERY_RETRY_INTERVAL).await;
            }
            Err(e) => {
                ctx.note(format!("minikv recovery failed ({e}); giving up"));
                return;
            }
        }
    };
    let wal = format!("kv.wal.{next_gen}");
    let opened = async {
        disk.create(&wal).await?;
        disk.sync_dir().await
    };
    if let Err(e) = opened.await {
        ctx.note(format!("minikv cannot open its wal: {e}"));
        return;
    }
    ctx.note(format!("minikv up: {} rows, wal gen {next_gen}", state.rows.len()));
    let state = std::sync::Arc::new(std::sync::Mutex::new(state));
    let (net, mut inbox) = Net::<KvMsg>::bind(&ctx).await;
    let (tx, rx) = mpsc::channel::<Write>(WRITE_QUEUE_MAX);
    madsim::task::spawn(committer(net.clone(), disk, wal, state.clone(), rx, cfg));
    while let Some(Incoming { from, msg, request }) = inbox.recv().await {
        let Some(req) = request else { continue };
        let reply = match &msg {
            KvMsg::Get { key } => Some(KvMsg::Value(state.lock().expect("state").rows.get(key).cloned())),
            KvMsg::Scan { start, end, limit } => {
                let limit = (*limit).min(SCAN_LIMIT_MAX) as usize;
                let st = state.lock().expect("state");
                Some(KvMsg::Rows(st.rows.range(start.clone()..end.clone()).take(limit).count() as u64))
            }
            KvMsg::Put { .. } | KvMsg::Cas { .. } | KvMsg::Delete { .. } | KvMsg::Append { .. } => {
                match tx.try_send(Write { from, req, msg: msg.clone() }) {
                    Ok(()) => None,
                    Err(_) => Some(KvMsg::Refused("write queue full".into())),
                }
            }
            _ => Some(KvMsg::Refused("not a request".into())),
        };
        if let Some(r) = reply {
            net.reply(from, req, r).await;
        }
    }
}

async fn committer(net: Net<KvMsg>, disk: Disk, wal: String, state: std::sync::Arc<std::sync::Mutex<State>>, mut rx: mpsc::Receiver<Write>, cfg: ServerConfig) {
    // Records of a batch whose sync failed, waiting for a sync to succeed.
    let mut stopped: Option<Vec<Record>> = None;
    let mut stopped_retries = 0u32;
    loop {
        let first = if stopped.is_some() {
            match sim::time::timeout(STOPPED_RETRY_INTERVAL, rx.recv()).await {
                Ok(Some(w)) => Some(w),
                Ok(None) => return,
                Err(_) => None,
            }
        } else {
            match rx.recv().await {
                Some(w) => Some(w),
                None => return,
            }
        };
        if let Some(pending) = &stopped {
            if stopped_retries < STOPPED_RETRIES_MAX {
                stopped_retries += 1;
                if disk.sync(&wal).await.is_ok() {
                    let mut st = state.lock().expect("state");
                    for r in pending {
                        st.apply(r);
                    }
                    drop(st);
                    stopped = None;
                    stopped_retries = 0;
                }
            }
        }
        let Some(first) = first else { continue };
        let mut batch = vec![first];
        while batch.len() < cfg.group_commit_max {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if stopped.is_some() {
            for w in batch {
                net.reply(w.from, w.req, KvMsg::Refused("server stopped accepting writes after a disk error".into())).await;
            }
            continue;
        }
        // Decide every write of the batch against the state as the batch
        // leaves it, in arrival order.
        let mut records = Vec::new();
        let mut replies = Vec::new();
        {
            let st = state.lock().expect("state");
            let mut rows: BTreeMap<String, Option<String>> = BTreeMap::new();
            let mut seqs: BTreeMap<&str, u64> = BTreeMap::new();
            for w in &batch {
                let blind = cfg.planted_bug == Some(PlantedBug::CasIgnoresBatch);
                let current = |rows: &BTreeMap<String, Option<String>>, k: &str| rows.get(k).filter(|_| !blind).cloned().unwrap_or_else(|| st.rows.get(k).cloned());
                let (rec, reply) = match &w.msg {
                    KvMsg::Put { key, value, size } => (Some(Record::Put { key: key.clone(), value: value.clone(), pad: *size }), KvMsg::Done),
                    KvMsg::Delete { key } => (Some(Record::Delete { key: key.clone() }), KvMsg::Done),
                    KvMsg::Cas { key, expected, value, size } => {
                        if current(&rows, key) == *expected {
                            (Some(Record::Put { key: key.clone(), value: value.clone(), pad: *size }), KvMsg::Done)
                        } else {
                            (None, KvMsg::CasMismatch)
                        }
                    }
                    KvMsg::Append { pkey } => {
                        let last = seqs.get(pkey.as_str()).copied().unwrap_or_else(|| st.seqs.get(pkey).copied().unwrap_or(0));
                        seqs.insert(pkey, last + 1);
                        (Some(Record::Seq { pkey: pkey.clone(), seq: last + 1 }), KvMsg::Seq(last + 1))
                    }
                    _ => unreachable!("only writes are queued"),
                };
                if let Some(r) = &rec {
                    match r {
                        Record::Put { key, value, .. } => {
                            rows.insert(key.clone(), Some(value.clone()));
                        }
                        Record::Delete { key } => {
                            rows.insert(key.clone(), None);
                        }
                        Record::Seq { .. } => {}
                    }
                }
                records.push(rec);
                replies.push(reply);
            }
        }
        let mut buf = Vec::new();
        for r in records.iter().flatten() {
            if !(cfg.planted_bug == Some(PlantedBug::DeleteNotLogged) && matches!(r, Record::Delete { .. })) {
                r.encode(&mut buf);
            }
        }
        if cfg.planted_bug == Some(PlantedBug::AckBeforeSync) {
            apply_and_reply(&net, &state, &records, batch, replies).await;
            if !buf.is_empty() {
                // Whatever the disk says, the batch was acknowledged already.
                let _ = write_durably(&disk, &wal, &buf).await;
            }
            continue;
        }
        let durable = if buf.is_empty() { Ok(()) } else { write_durably(&disk, &wal, &buf).await };
        match durable {
            Ok(()) => apply_and_reply(&net, &state, &records, batch, replies).await,
            Err(WalFailure::NothingWritten(e)) => {
                for w in batch {
                    net.reply(w.from, w.req, KvMsg::Refused(format!("wal append failed: {e}"))).await;
                }
            }
            Err(WalFailure::NotDurable(e)) => {
                stopped = Some(records.into_iter().flatten().collect());
                for w in batch {
                    net.reply(w.from, w.req, KvMsg::Unknown(format!("wal sync failed: {e}"))).await;
                }
            }
        }
    }
}

/// Applies a batch's records to the state, then answers its writes.
async fn apply_and_reply(net: &Net<KvMsg>, state: &std::sync::Mutex<State>, records: &[Option<Record>], batch: Vec<Write>, replies: Vec<KvMsg>) {
    {
        let mut st = state.lock().expect("state");
        for r in records.iter().flatten() {
            st.apply(r);
        }
    }
    for (w, reply) in batch.into_iter().zip(replies) {
        net.reply(w.from, w.req, reply).await;
    }
}

enum WalFailure {
    /// The append failed: nothing reached the file.
    NothingWritten(DiskError),
    /// The append reached the page cache but no sync succeeded.
    NotDurable(DiskError),
}

async fn write_durably(disk: &Disk, wal: &str, buf: &[u8]) -> Result<(), WalFailure> {
    let mut last = None;
    for _ in 0..=SYNC_RETRIES_MAX {
        match disk.append(wal, buf).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        return Err(WalFailure::NothingWritten(e));
    }
    let mut err = None;
    for _ in 0..=SYNC_RETRIES_MAX {
        match disk.sync(wal).await {
            Ok(()) => return Ok(()),
            Err(e) => err = Some(e),
        }
    }
    Err(WalFailure::NotDurable(err.expect("a failed sync left its error")))
}

/// The server that owns `key` among `servers` (sorted): a stable hash.
pub fn owner(servers: &[NodeId], key: &str) -> NodeId {
    assert!(!servers.is_empty(), "minikv needs at least one server");
    let mut h = StableHasher::new();
    h.write_bytes(key.as_bytes());
    servers[(h.finish() % servers.len() as u64) as usize]
}

/// What a client learns about an operation that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Definitely not applied.
    Failed(String),
    /// May or may not have been applied.
    Unknown(String),
}

/// The client library: routes each key to its server, one attempt per call
/// (a retry of a write could apply it twice).
#[derive(Clone)]
pub struct KvClient {
    net: Net<KvMsg>,
    servers: Vec<NodeId>,
    timeout: Duration,
}

impl KvClient {
    pub fn new(net: Net<KvMsg>, mut servers: Vec<NodeId>, timeout: Duration) -> KvClient {
        assert!(!servers.is_empty(), "minikv needs at least one server");
        servers.sort();
        KvClient { net, servers, timeout }
    }

    pub fn owner(&self, key: &str) -> NodeId {
        owner(&self.servers, key)
    }

    /// Sends a request to the key's owner and classifies the outcome.
    pub async fn request(&self, key: &str, msg: KvMsg) -> Result<KvMsg, ClientError> {
        let is_write = matches!(msg, KvMsg::Put { .. } | KvMsg::Cas { .. } | KvMsg::Delete { .. } | KvMsg::Append { .. });
        match self.net.call(self.owner(key), msg, self.timeout).await {
            Ok(KvMsg::Refused(why)) => Err(ClientError::Failed(why)),
            Ok(KvMsg::Unknown(why)) => Err(ClientError::Unknown(why)),
            Ok(KvMsg::CasMismatch) => Err(ClientError::Failed("cas mismatch".into())),
            Ok(m) => Ok(m),
            // A read that timed out changed nothing; a write may have landed.
            Err(NetError::Timeout) if is_write => Err(ClientError::Unknown("timeout".into())),
            Err(e) => Err(ClientError::Failed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_detect_corruption() {
        let recs = [
            Record::Put { key: "k1".into(), value: "v".into(), pad: 0 },
            Record::Delete { key: "k2".into() },
            Record::Seq { pkey: "u1".into(), seq: 7 },
        ];
        for r in &recs {
            let mut buf = Vec::new();
            r.encode(&mut buf);
            let n = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
            assert_eq!(n + 8, buf.len());
            assert_eq!(crc32fast::hash(&buf[8..]), u32::from_le_bytes(buf[4..8].try_into().unwrap()));
            assert_eq!(Record::decode(&buf[8..]).as_ref(), Some(r));
            buf[9] ^= 1;
            assert_ne!(crc32fast::hash(&buf[8..]), u32::from_le_bytes(buf[4..8].try_into().unwrap()));
        }
        let mut padded = Vec::new();
        Record::Put { key: "k".into(), value: "v".into(), pad: 100 }.encode(&mut padded);
        assert!(padded.len() > 100, "the value's payload size reaches the disk");
    }
}
