//! The manifest: a log of [`Edit`]s (a closed enum) that rebuilds the
//! current [`Version`] (which tables are live at which level, the oldest
//! WAL still needed, the next file number and the last sequence number).
//!
//! Each log frame carries a list of edits applied atomically. A manifest
//! file starts with a [`Edit::Snapshot`]; the engine starts a new file on
//! every open and when one grows past [`MANIFEST_BYTES_MAX`], syncs it and
//! the directory, then removes the older files. Recovery takes the newest
//! file whose snapshot is intact. Invariant: a table is referenced only
//! after its file and the directory were synced.

use crate::fs::Files;
use crate::lsm::error::{Error, Result};
use crate::lsm::format::{frame, scan_frames, Dec, Enc};

/// A manifest is rewritten as a snapshot once it grows past this.
pub const MANIFEST_BYTES_MAX: u64 = 1 << 20;
/// Levels of the tree (level 0 plus six sorted levels).
pub const LEVELS: usize = 7;
/// Most edits one frame may carry.
pub const EDITS_PER_FRAME_MAX: usize = 1 << 16;

pub fn manifest_name(number: u64) -> String {
    format!("MANIFEST-{number:012}")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub number: u64,
    pub size: u64,
    pub entries: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
    pub min_seq: u64,
    pub max_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// The whole version; the first edit of every manifest file.
    Snapshot { log_number: u64, next_file: u64, last_seq: u64, files: Vec<(u32, FileMeta)> },
    AddFile { level: u32, meta: FileMeta },
    RemoveFile { level: u32, number: u64 },
    /// WAL files numbered below this are flushed and no longer needed.
    SetLogNumber(u64),
    SetNextFile(u64),
    SetLastSeq(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Level 0 newest first (overlapping); deeper levels sorted by key, disjoint.
    pub levels: Vec<Vec<FileMeta>>,
    pub log_number: u64,
    pub next_file: u64,
    pub last_seq: u64,
}

impl Default for Version {
    fn default() -> Self {
        Version { levels: vec![Vec::new(); LEVELS], log_number: 0, next_file: 1, last_seq: 0 }
    }
}

impl Version {
    pub fn apply(&mut self, e: &Edit, file: &str) -> Result<()> {
        let bad = |what: String| Error::corrupt(file, 0, what);
        match e {
            Edit::Snapshot { log_number, next_file, last_seq, files } => {
                *self = Version { log_number: *log_number, next_file: *next_file, last_seq: *last_seq, ..Version::default() };
                for (level, meta) in files {
                    self.apply(&Edit::AddFile { level: *level, meta: meta.clone() }, file)?;
                }
            }
            Edit::AddFile { level, meta } => {
                let l = self.levels.get_mut(*level as usize).ok_or_else(|| bad(format!("level {level} out of range")))?;
                if meta.smallest > meta.largest {
                    return Err(bad(format!("table {} has inverted key range", meta.number)));
                }
                l.push(meta.clone());
                if *level == 0 {
                    l.sort_by(|a, b| b.max_seq.cmp(&a.max_seq).then(b.number.cmp(&a.number)));
                } else {
                    l.sort_by(|a, b| a.smallest.cmp(&b.smallest));
                    let row = |k: &[u8]| k[..crate::lsm::keys::row_len(k)].to_vec();
                    if l.windows(2).any(|w| row(&w[0].largest) >= row(&w[1].smallest)) {
                        return Err(bad(format!("overlapping tables at level {level}")));
                    }
                }
            }
            Edit::RemoveFile { level, number } => {
                let l = self.levels.get_mut(*level as usize).ok_or_else(|| bad(format!("level {level} out of range")))?;
                let before = l.len();
                l.retain(|f| f.number != *number);
                if l.len() == before {
                    return Err(bad(format!("removing absent table {number}")));
                }
            }
            Edit::SetLogNumber(n) => self.log_number = *n,
            Edit::SetNextFile(n) => self.next_file = *n,
            Edit::SetLastSeq(n) => self.last_seq = *n,
        }
        Ok(())
    }

    pub fn snapshot(&self) -> Edit {
        let files = self.levels.iter().enumerate().flat_map(|(i, l)| l.iter().map(move |f| (i as u32, f.clone()))).collect();
        Edit::Snapshot { log_number: self.log_number, next_file: self.next_file, last_seq: self.last_seq, files }
    }

    pub fn all_files(&self) -> impl Iterator<Item = (usize, &FileMeta)> {
        self.levels.iter().enumerate().flat_map(|(i, l)| l.iter().map(move |f| (i, f)))
    }
}

fn enc_meta(e: &mut Enc, m: &FileMeta) {
    e.u64(m.number).u64(m.size).u64(m.entries).bytes(&m.smallest).bytes(&m.largest).u64(m.min_seq).u64(m.max_seq);
}

fn dec_meta(d: &mut Dec<'_>) -> Result<FileMeta> {
    Ok(FileMeta { number: d.u64()?, size: d.u64()?, entries: d.u64()?, smallest: d.bytes()?, largest: d.bytes()?, min_seq: d.u64()?, max_seq: d.u64()? })
}

pub fn encode_edits(edits: &[Edit]) -> Vec<u8> {
    let mut e = Enc::default();
    e.u32(edits.len() as u32);
    for ed in edits {
        match ed {
            Edit::Snapshot { log_number, next_file, last_seq, files } => {
                e.u8(0).u64(*log_number).u64(*next_file).u64(*last_seq).u32(files.len() as u32);
                for (l, m) in files {
                    e.u32(*l);
                    enc_meta(&mut e, m);
                }
            }
            Edit::AddFile { level, meta } => {
                e.u8(1).u32(*level);
                enc_meta(&mut e, meta);
            }
            Edit::RemoveFile { level, number } => {
                e.u8(2).u32(*level).u64(*number);
            }
            Edit::SetLogNumber(n) => {
                e.u8(3).u64(*n);
            }
            Edit::SetNextFile(n) => {
                e.u8(4).u64(*n);
            }
            Edit::SetLastSeq(n) => {
                e.u8(5).u64(*n);
            }
        }
    }
    e.0
}

pub fn decode_edits(file: &str, off: u64, buf: &[u8]) -> Result<Vec<Edit>> {
    let mut d = Dec::new(file, off, buf);
    let n = d.u32()? as usize;
    if n > EDITS_PER_FRAME_MAX {
        return Err(d.err("edit count over its limit"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ed = match d.u8()? {
            0 => {
                let (log_number, next_file, last_seq, nf) = (d.u64()?, d.u64()?, d.u64()?, d.u32()?);
                let mut files = Vec::new();
                for _ in 0..nf {
                    let l = d.u32()?;
                    files.push((l, dec_meta(&mut d)?));
                }
                Edit::Snapshot { log_number, next_file, last_seq, files }
            }
            1 => Edit::AddFile { level: d.u32()?, meta: dec_meta(&mut d)? },
            2 => Edit::RemoveFile { level: d.u32()?, number: d.u64()? },
            3 => Edit::SetLogNumber(d.u64()?),
            4 => Edit::SetNextFile(d.u64()?),
            5 => Edit::SetLastSeq(d.u64()?),
            t => return Err(d.err(&format!("unknown edit tag {t}"))),
        };
        out.push(ed);
    }
    if !d.done() {
        return Err(d.err("trailing bytes after edits"));
    }
    Ok(out)
}

/// Replays one manifest file. `Ok(None)` if its snapshot never became
/// durable (a new manifest torn by a crash): the caller uses an older one.
pub async fn replay<F: Files>(fs: &F, number: u64) -> Result<Option<Version>> {
    let name = manifest_name(number);
    let len = fs.len(&name)?;
    let buf = fs.read_at(&name, 0, len).await?;
    if buf.len() as u64 != len {
        return Err(Error::corrupt(&name, 0, "short read"));
    }
    let scan = scan_frames(&name, &buf)?;
    let mut v = Version::default();
    for (i, (off, payload)) in scan.frames.iter().enumerate() {
        let edits = decode_edits(&name, *off, payload)?;
        if i == 0 && !matches!(edits.first(), Some(Edit::Snapshot { .. })) {
            return Err(Error::corrupt(&name, *off, "manifest does not start with a snapshot"));
        }
        for e in &edits {
            v.apply(e, &name)?;
        }
    }
    Ok(if scan.frames.is_empty() { None } else { Some(v) })
}

/// The open manifest file the engine appends edits to.
#[derive(Debug)]
pub struct ManifestLog {
    pub number: u64,
    pub size: u64,
}

impl ManifestLog {
    /// Writes a new manifest holding `v`, makes it durable, removes older ones.
    pub async fn create<F: Files>(fs: &F, number: u64, v: &Version) -> Result<ManifestLog> {
        let name = manifest_name(number);
        let f = frame(&encode_edits(&[v.snapshot()]));
        fs.create(&name).await?;
        fs.append(&name, &f).await?;
        fs.sync(&name).await?;
        fs.sync_dir().await?;
        for old in fs.list("MANIFEST-") {
            if old < name {
                fs.remove(&old).await?;
            }
        }
        fs.sync_dir().await?;
        Ok(ManifestLog { number, size: f.len() as u64 })
    }

    /// Appends edits durably (the caller stops the engine on error).
    pub async fn append<F: Files>(&mut self, fs: &F, edits: &[Edit]) -> Result<()> {
        let f = frame(&encode_edits(edits));
        let name = manifest_name(self.number);
        fs.append(&name, &f).await?;
        fs.sync(&name).await?;
        self.size += f.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_round_trip_and_apply() {
        let k = |s: &[u8]| {
            let mut v = Vec::new();
            crate::lsm::keys::put_bytes(&mut v, crate::lsm::keys::TAG_STR, s);
            v
        };
        let m = |n: u64, a: &[u8], b: &[u8]| FileMeta { number: n, size: 10, entries: 1, smallest: k(a), largest: k(b), min_seq: n, max_seq: n };
        let edits = vec![
            Edit::Snapshot { log_number: 3, next_file: 9, last_seq: 7, files: vec![(1, m(1, b"a", b"c"))] },
            Edit::AddFile { level: 1, meta: m(2, b"d", b"f") },
            Edit::AddFile { level: 0, meta: m(4, b"a", b"z") },
            Edit::RemoveFile { level: 1, number: 1 },
            Edit::SetLogNumber(5),
            Edit::SetNextFile(10),
            Edit::SetLastSeq(8),
        ];
        let buf = encode_edits(&edits);
        assert_eq!(decode_edits("m", 0, &buf).unwrap(), edits);
        let mut v = Version::default();
        for e in &edits {
            v.apply(e, "m").unwrap();
        }
        assert_eq!(v.levels[1].len(), 1);
        assert_eq!((v.log_number, v.next_file, v.last_seq), (5, 10, 8));
        assert!(v.apply(&Edit::AddFile { level: 1, meta: m(6, b"e", b"g") }, "m").is_err(), "overlap rejected");
        assert!(v.apply(&Edit::RemoveFile { level: 2, number: 99 }, "m").is_err());
        assert!(decode_edits("m", 0, &buf[..buf.len() - 1]).is_err());
    }
}
