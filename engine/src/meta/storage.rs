//! The on-disk form of one metadata replica's Raft state: a single
//! append-only file of checksummed, length-framed records, one per
//! [`Output::Persist`](super::raft::Output::Persist), each holding the hard
//! state (term, vote) and the log change. A record is appended and the file
//! synced before the shell carries out anything after the `Persist`.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload`.
//!
//! Recovery replays the records in order. Only the last record can be torn
//! (it is the only one that may be unsynced at a crash): a bad record that
//! reaches the end of the file is a torn tail, dropped by rewriting the good
//! prefix (write, sync, rename, `sync_dir`). A bad record with data after
//! it, or a good record that does not decode or leaves a gap in the log, is
//! [`StorageError::Corrupt`] and the replica stays down.
//!
//! Limitation: an at-rest bit flip inside the last record is taken for a
//! torn tail. The file is never compacted (the core bounds the log at
//! [`LOG_LEN_MAX`](super::raft::LOG_LEN_MAX) entries).

use sim::disk::{Disk, DiskError};

use super::raft::{Entry, LogWrite, PersistedState, ReplicaId};
use super::state::Command;

/// The log file's name on the replica's disk.
pub const LOG_FILE: &str = "meta.raft";
const TMP_FILE: &str = "meta.raft.tmp";
/// Largest payload one record may hold (64 entries of the largest command
/// fit with room to spare).
pub const RECORD_BYTES_MAX: u32 = 16 << 20;
/// Largest log file recovery reads.
pub const FILE_BYTES_MAX: u64 = 4 << 30;
/// Attempts at one append, and at one sync, of a record before the replica
/// gives up (a disk failing some writes is retried: a failed append changed
/// nothing, a failed sync left the bytes unsynced, and both can be tried
/// again; giving up stops the replica until its node restarts).
pub const PERSIST_ATTEMPTS_MAX: u32 = 64;
/// The pause between two attempts.
pub const PERSIST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("disk: {0}")]
    Disk(#[from] DiskError),
    #[error("corrupt raft log at offset {offset}: {why}")]
    Corrupt { offset: u64, why: &'static str },
    #[error("raft record of {0} bytes exceeds the bound")]
    RecordTooLarge(usize),
}

/// Handle on the replica's log file.
pub struct Storage {
    disk: Disk,
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    pub state: PersistedState,
    pub records: u64,
    /// Bytes of torn tail dropped.
    pub torn_bytes: u64,
}

impl Storage {
    /// Reads the log file (creating it on first boot), drops a torn tail and
    /// returns the persisted state.
    pub async fn recover(disk: Disk) -> Result<(Storage, Recovered), StorageError> {
        if !disk.exists(LOG_FILE) {
            disk.create(LOG_FILE).await?;
            disk.sync(LOG_FILE).await?;
            disk.sync_dir().await?;
            let rec = Recovered { state: PersistedState::default(), records: 0, torn_bytes: 0 };
            return Ok((Storage { disk }, rec));
        }
        let len = disk.len(LOG_FILE)?;
        if len > FILE_BYTES_MAX {
            return Err(StorageError::Corrupt { offset: 0, why: "log file larger than the bound" });
        }
        let data = disk.read_at(LOG_FILE, 0, len).await?;
        let (state, records, good) = replay(&data)?;
        let torn_bytes = data.len() as u64 - good as u64;
        if torn_bytes > 0 {
            // Rewrite the good prefix, so later appends follow it directly.
            if disk.exists(TMP_FILE) {
                disk.remove(TMP_FILE).await?;
            }
            disk.create(TMP_FILE).await?;
            disk.write_at(TMP_FILE, 0, &data[..good]).await?;
            disk.sync(TMP_FILE).await?;
            disk.rename(TMP_FILE, LOG_FILE).await?;
            disk.sync_dir().await?;
        }
        Ok((Storage { disk }, Recovered { state, records, torn_bytes }))
    }

    /// Makes one `Persist` output durable: append one record and sync.
    pub async fn persist(&mut self, term: u64, vote: Option<ReplicaId>, log: Option<&LogWrite>) -> Result<(), StorageError> {
        let frame = encode_frame(term, vote, log)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.disk.append(LOG_FILE, &frame).await {
                Ok(_) => break,
                Err(e) if attempt >= PERSIST_ATTEMPTS_MAX => return Err(e.into()),
                Err(_) => sim::time::sleep(PERSIST_RETRY_PAUSE).await,
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.disk.sync(LOG_FILE).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= PERSIST_ATTEMPTS_MAX => return Err(e.into()),
                Err(_) => sim::time::sleep(PERSIST_RETRY_PAUSE).await,
            }
        }
    }
}

/// Replays every record: the state, the record count and the length of the
/// good prefix.
pub fn replay(data: &[u8]) -> Result<(PersistedState, u64, usize), StorageError> {
    let mut state = PersistedState::default();
    let mut at = 0usize;
    let mut records = 0u64;
    while at < data.len() {
        let offset = at as u64;
        let rest = data.len() - at;
        if rest < 8 {
            break; // torn header at the end
        }
        let n = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        if n == 0 || n > RECORD_BYTES_MAX {
            // A zeroed or garbled header: torn only if what follows could
            // all belong to one last record.
            if rest as u64 <= u64::from(RECORD_BYTES_MAX) + 8 {
                break;
            }
            return Err(StorageError::Corrupt { offset, why: "bad record length" });
        }
        let end = at + 8 + n as usize;
        if end > data.len() {
            break; // torn: the record runs past the end
        }
        let payload = &data[at + 8..end];
        if crc32fast::hash(payload) != crc {
            if end == data.len() {
                break; // the last record, torn inside
            }
            return Err(StorageError::Corrupt { offset, why: "checksum mismatch before the end of the log" });
        }
        let (term, vote, log) = decode_payload(payload).ok_or(StorageError::Corrupt { offset, why: "undecodable record" })?;
        if term < state.term {
            return Err(StorageError::Corrupt { offset, why: "term goes backwards" });
        }
        if let Some(w) = &log {
            if w.from == 0 || w.from > state.log.len() as u64 + 1 {
                return Err(StorageError::Corrupt { offset, why: "log write leaves a gap" });
            }
        }
        state.apply(term, vote, log.as_ref());
        records += 1;
        at = end;
    }
    Ok((state, records, at))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, b: &Option<Vec<u8>>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

fn encode_command(out: &mut Vec<u8>, c: &Command) {
    match c {
        Command::Noop => out.push(0),
        Command::Put { key, value } => {
            out.push(1);
            put_bytes(out, key.as_bytes());
            put_bytes(out, value);
        }
        Command::Delete { key } => {
            out.push(2);
            put_bytes(out, key.as_bytes());
        }
        Command::Cas { key, expected, new } => {
            out.push(3);
            put_bytes(out, key.as_bytes());
            put_opt(out, expected);
            put_opt(out, new);
        }
        Command::Txn { checks, writes } => {
            out.push(5);
            for list in [checks, writes] {
                out.extend_from_slice(&(list.len() as u32).to_le_bytes());
                for (k, v) in list {
                    put_bytes(out, k.as_bytes());
                    put_opt(out, v);
                }
            }
        }
        Command::Request { client, seq, command } => {
            out.push(4);
            out.extend_from_slice(&client.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            encode_command(out, command);
        }
    }
}

/// One framed record.
pub fn encode_frame(term: u64, vote: Option<ReplicaId>, log: Option<&LogWrite>) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![0u8; 8];
    out.extend_from_slice(&term.to_le_bytes());
    match vote {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    match log {
        None => out.push(0),
        Some(w) => {
            out.push(1);
            out.extend_from_slice(&w.from.to_le_bytes());
            out.extend_from_slice(&(w.entries.len() as u32).to_le_bytes());
            for e in &w.entries {
                out.extend_from_slice(&e.term.to_le_bytes());
                encode_command(&mut out, &e.command);
            }
        }
    }
    let n = out.len() - 8;
    if n > RECORD_BYTES_MAX as usize {
        return Err(StorageError::RecordTooLarge(n));
    }
    let crc = crc32fast::hash(&out[8..]);
    out[0..4].copy_from_slice(&(n as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.data.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
    fn opt(&mut self) -> Option<Option<Vec<u8>>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }
    /// A length-prefixed list of (key, optional value) pairs.
    fn pairs(&mut self) -> Option<Vec<(String, Option<Vec<u8>>)>> {
        let n = self.u32()? as usize;
        // Each pair takes at least 5 bytes: bound the allocation.
        if n > self.data.len().saturating_sub(self.at) / 5 {
            return None;
        }
        (0..n).map(|_| Some((self.string()?, self.opt()?))).collect()
    }
    /// A command; a request may wrap one plain command, no deeper.
    fn command(&mut self, in_request: bool) -> Option<Command> {
        Some(match self.u8()? {
            0 => Command::Noop,
            1 => Command::Put { key: self.string()?, value: self.bytes()? },
            2 => Command::Delete { key: self.string()? },
            3 => Command::Cas { key: self.string()?, expected: self.opt()?, new: self.opt()? },
            5 => Command::Txn { checks: self.pairs()?, writes: self.pairs()? },
            4 if !in_request => Command::Request { client: self.u64()?, seq: self.u64()?, command: Box::new(self.command(true)?) },
            _ => return None,
        })
    }
}

type Payload = (u64, Option<ReplicaId>, Option<LogWrite>);

fn decode_payload(p: &[u8]) -> Option<Payload> {
    let mut r = Reader { data: p, at: 0 };
    let term = r.u64()?;
    let vote = match r.u8()? {
        0 => None,
        1 => Some(r.u32()?),
        _ => return None,
    };
    let log = match r.u8()? {
        0 => None,
        1 => {
            let from = r.u64()?;
            let n = r.u32()? as usize;
            // Each entry takes at least 9 bytes: bound the allocation.
            if n > p.len() / 9 {
                return None;
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let term = r.u64()?;
                entries.push(Entry { term, command: r.command(false)? });
            }
            Some(LogWrite { from, entries })
        }
        _ => return None,
    };
    if r.at != p.len() {
        return None;
    }
    Some((term, vote, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Vec<u8>> {
        let e = |term, key: &str| Entry { term, command: Command::Put { key: key.into(), value: vec![7; 3] } };
        let cas = Command::Cas { key: "c".into(), expected: None, new: Some(vec![1]) };
        let cas = Entry { term: 2, command: Command::Request { client: 5, seq: 1, command: Box::new(cas) } };
        vec![
            encode_frame(1, Some(2), None).unwrap(),
            encode_frame(1, Some(2), Some(&LogWrite { from: 1, entries: vec![e(1, "a"), e(1, "b")] })).unwrap(),
            encode_frame(2, None, Some(&LogWrite { from: 2, entries: vec![cas] })).unwrap(),
        ]
    }

    fn sample() -> Vec<u8> {
        frames().concat()
    }

    #[test]
    fn a_txn_survives_the_log_round_trip() {
        let txn = Command::Txn {
            checks: vec![("ns/a".into(), Some(vec![1])), ("st/a/x".into(), None)],
            writes: vec![("st/a/x".into(), Some(vec![2, 3])), ("old".into(), None)],
        };
        let req = Command::Request { client: 1, seq: 2, command: Box::new(txn) };
        let frame = encode_frame(3, None, Some(&LogWrite { from: 1, entries: vec![Entry { term: 3, command: req.clone() }] })).unwrap();
        let (s, records, _) = replay(&frame).unwrap();
        assert_eq!(records, 1);
        assert_eq!(s.log[0].command, req);
    }

    #[test]
    fn records_replay_into_the_persisted_state() {
        let data = sample();
        let (s, records, good) = replay(&data).unwrap();
        assert_eq!((s.term, s.vote, s.log.len(), records, good), (2, None, 2, 3, data.len()));
        assert!(matches!(&s.log[1].command, Command::Request { client: 5, seq: 1, command } if matches!(**command, Command::Cas { .. })));
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_earlier_damage_is_corruption() {
        let data = sample();
        let last_start = data.len() - frames()[2].len();
        for cut in last_start..data.len() {
            let (s, records, good) = replay(&data[..cut]).unwrap();
            assert_eq!((records, s.term), (2, 1), "cut at {cut}");
            assert!(good <= cut);
        }
        // A zeroed sector inside the last record: torn.
        let mut torn = data.clone();
        let n = torn.len();
        torn[n - 3] ^= 0xff;
        assert_eq!(replay(&torn).unwrap().1, 2);
        // A flipped byte in the first record, with records after it: corrupt.
        let mut bad = data.clone();
        bad[10] ^= 1;
        assert!(matches!(replay(&bad), Err(StorageError::Corrupt { offset: 0, .. })));
    }

    #[test]
    fn a_record_that_leaves_a_gap_is_corruption() {
        let e = Entry { term: 1, command: Command::Noop };
        let data = encode_frame(1, None, Some(&LogWrite { from: 3, entries: vec![e] })).unwrap();
        assert!(matches!(replay(&data), Err(StorageError::Corrupt { why: "log write leaves a gap", .. })));
    }
}
