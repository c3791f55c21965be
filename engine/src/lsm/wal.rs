//! The write-ahead log: one file per memtable, a sequence of frames (see
//! [`crate::lsm::format`]), one frame per group commit. A frame holds the
//! write batches of every writer the commit served, so it is replayed all
//! or nothing; each batch's entries carry consecutive sequence numbers.
//!
//! Invariants: a frame is appended only after the previous frame of the
//! file was synced, so only the last frame can be torn by a crash; a writer
//! is acknowledged only after the sync covering its frame returned `Ok`.

use crate::fs::Files;
use crate::lsm::error::{Error, Result};
use crate::lsm::format::{scan_frames, Dec, Enc};

/// Most write batches one group commit serves.
pub const GROUP_COMMIT_MAX: usize = 256;
/// Most entries one write batch may carry.
pub const BATCH_ENTRIES_MAX: usize = 1024;
/// Attempts of an append or sync before the engine stops accepting writes.
pub const IO_ATTEMPTS_MAX: u32 = 3;

/// How every WAL file's name begins.
pub const WAL_PREFIX: &str = "wal-";

pub fn wal_name(number: u64) -> String {
    format!("{WAL_PREFIX}{number:012}")
}

/// Number of a WAL file name, if it is one.
pub fn wal_number(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?.parse().ok()
}

/// One writer's atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalBatch {
    pub first_seq: u64,
    pub entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WalBatch {
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64 - 1
    }
}

pub fn encode_frame_payload(batches: &[&WalBatch]) -> Vec<u8> {
    // Sized up front: a frame is encoded for every group commit.
    let size = 4 + batches.iter().map(|b| 12 + b.entries.iter().map(|(k, v)| 4 + k.len() + 1 + v.as_ref().map_or(0, |v| 4 + v.len())).sum::<usize>()).sum::<usize>();
    let mut e = Enc(Vec::with_capacity(size));
    e.u32(batches.len() as u32);
    for b in batches {
        e.u64(b.first_seq).u32(b.entries.len() as u32);
        for (k, v) in &b.entries {
            e.bytes(k);
            match v {
                Some(v) => e.u8(1).bytes(v),
                None => e.u8(0),
            };
        }
    }
    debug_assert_eq!(e.0.len(), size, "frame size computed up front");
    e.0
}

pub fn decode_frame_payload(file: &str, off: u64, buf: &[u8]) -> Result<Vec<WalBatch>> {
    let mut d = Dec::new(file, off, buf);
    let n = d.u32()? as usize;
    if n == 0 || n > GROUP_COMMIT_MAX {
        return Err(d.err("batch count out of range"));
    }
    let mut out: Vec<WalBatch> = Vec::with_capacity(n);
    for _ in 0..n {
        let first_seq = d.u64()?;
        let m = d.u32()? as usize;
        if m == 0 || m > BATCH_ENTRIES_MAX {
            return Err(d.err("batch entry count out of range"));
        }
        if out.last().is_some_and(|p| p.last_seq() >= first_seq) {
            return Err(d.err("batch sequence numbers out of order"));
        }
        let mut entries = Vec::with_capacity(m);
        for _ in 0..m {
            let k = d.bytes()?;
            let v = match d.u8()? {
                0 => None,
                1 => Some(d.bytes()?),
                _ => return Err(d.err("unknown entry kind")),
            };
            entries.push((k, v));
        }
        out.push(WalBatch { first_seq, entries });
    }
    if !d.done() {
        return Err(d.err("trailing bytes in frame"));
    }
    Ok(out)
}

/// Reads every intact batch of a WAL file; a torn tail is ignored.
pub async fn read_wal<F: Files>(fs: &F, number: u64) -> Result<(Vec<WalBatch>, bool)> {
    let name = wal_name(number);
    let len = fs.len(&name)?;
    let buf = fs.read_at(&name, 0, len).await?;
    if buf.len() as u64 != len {
        return Err(Error::corrupt(&name, 0, "short read"));
    }
    let scan = scan_frames(&name, &buf)?;
    let mut out = Vec::new();
    for (off, p) in &scan.frames {
        out.extend(decode_frame_payload(&name, *off, p)?);
    }
    Ok((out, scan.torn))
}

/// Appends then syncs, retrying each step a bounded number of times (the
/// file layer promises a failed call changed nothing and a failed sync can
/// be retried). An error means the frame's durability is unknown.
pub async fn append_synced<F: Files>(fs: &F, name: &str, frame: &[u8]) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fs.append(name, frame).await {
            Ok(_) => break,
            Err(e) if attempt >= IO_ATTEMPTS_MAX => return Err(e.into()),
            Err(_) => {}
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fs.sync(name).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= IO_ATTEMPTS_MAX => return Err(e.into()),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_payload_round_trips_and_rejects_garbage() {
        let a = WalBatch { first_seq: 5, entries: vec![(b"k".to_vec(), Some(b"v".to_vec())), (b"d".to_vec(), None)] };
        let b = WalBatch { first_seq: 7, entries: vec![(b"x".to_vec(), Some(vec![]))] };
        let p = encode_frame_payload(&[&a, &b]);
        assert_eq!(decode_frame_payload("w", 0, &p).unwrap(), vec![a.clone(), b.clone()]);
        let p = encode_frame_payload(&[&b, &a]);
        assert!(decode_frame_payload("w", 0, &p).is_err(), "sequence order is checked");
        assert!(decode_frame_payload("w", 0, &p[..p.len() - 2]).is_err());
        assert_eq!(wal_number(&wal_name(42)), Some(42));
    }
}
