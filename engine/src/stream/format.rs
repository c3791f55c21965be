//! The file of one extent replica: a sequence of framed records
//!
//! ```text
//! [offset u64][len u32][crc32 of data u32][crc32 of the 16 bytes before u32][data]
//! ```
//!
//! (little endian). A data record holds the bytes at `offset` of the
//! extent; records follow each other without gaps (`offset` of each is the
//! end of the one before). A fence record has `offset == FENCE_OFFSET` and
//! 9 bytes of data: the fencing epoch (u64) and whether the replica is
//! sealed (u8). Records are appended and synced once per group.
//!
//! Recovery ([`scan`]) reads the file front to back. A bad record at the
//! end (it runs past the end of the file, or its checksum fails and it ends
//! exactly at the end, or its header is garbled within the last
//! [`TORN_TAIL_MAX`] bytes) is a torn tail and is cut. Any other bad record
//! is corruption: the replica keeps the good prefix, is marked damaged
//! (it serves reads below the damage and accepts no appends) and waits for
//! repair. Pure functions, no I/O.

use super::{BATCH_BYTES_MAX, PIPELINE_MAX};

pub const HEADER_LEN: usize = 20;
/// The `offset` of a fence record.
pub const FENCE_OFFSET: u64 = u64::MAX;
/// The largest data a record may hold.
pub const RECORD_DATA_MAX: u32 = 4 << 20;
/// A garbled header this close to the end of the file is taken for a torn
/// tail: the last unsynced group is at most this long.
pub const TORN_TAIL_MAX: usize = (PIPELINE_MAX + 1) * (BATCH_BYTES_MAX + HEADER_LEN) + 64;

fn header(offset: u64, data: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&offset.to_le_bytes());
    h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
    let hc = crc32fast::hash(&h[0..16]);
    h[16..20].copy_from_slice(&hc.to_le_bytes());
    h
}

/// A data record holding `data` at `offset` of the extent.
pub fn encode_record(offset: u64, data: &[u8]) -> Vec<u8> {
    assert!(offset != FENCE_OFFSET && data.len() <= RECORD_DATA_MAX as usize, "record out of bounds");
    let h = header(offset, data);
    let mut out = Vec::with_capacity(h.len() + data.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// A fence record.
pub fn encode_fence(epoch: u64, sealed: bool) -> Vec<u8> {
    let mut data = epoch.to_le_bytes().to_vec();
    data.push(u8::from(sealed));
    let mut out = header(FENCE_OFFSET, &data).to_vec();
    out.extend_from_slice(&data);
    out
}

/// Where one data record sits in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLoc {
    /// Offset in the extent.
    pub offset: u64,
    /// Position of the record (its header) in the file.
    pub pos: u64,
    pub len: u32,
    pub crc: u32,
}

/// Checks one record read back from the file at `loc`: its header and
/// data checksums. Returns the data.
pub fn check_record(loc: &RecordLoc, bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() != HEADER_LEN + loc.len as usize {
        return None;
    }
    let (h, data) = bytes.split_at(HEADER_LEN);
    let ok = crc32fast::hash(&h[0..16]).to_le_bytes() == h[16..20]
        && h[0..8] == loc.offset.to_le_bytes()
        && h[8..12] == loc.len.to_le_bytes()
        && h[12..16] == loc.crc.to_le_bytes()
        && crc32fast::hash(data) == loc.crc;
    ok.then(|| data.to_vec())
}

/// What recovery found in a replica file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    pub records: Vec<RecordLoc>,
    /// Length of the extent held (end of the last good data record).
    pub len: u64,
    pub fence: u64,
    pub sealed: bool,
    /// Bytes of the file that hold good records.
    pub good_bytes: u64,
    /// A torn tail was found after `good_bytes`.
    pub torn: bool,
    /// A bad record before the end: the replica is damaged from there.
    pub corrupt_at: Option<u64>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Scans a replica file (see the module doc).
pub fn scan(file: &[u8]) -> Scanned {
    let mut s = Scanned::default();
    let mut at = 0usize;
    while at < file.len() {
        let rest = file.len() - at;
        if rest < HEADER_LEN {
            s.torn = true;
            break;
        }
        let h = &file[at..at + HEADER_LEN];
        let header_ok = crc32fast::hash(&h[0..16]) == u32_at(h, 16);
        let len = u32_at(h, 8);
        if !header_ok || len > RECORD_DATA_MAX {
            if rest <= TORN_TAIL_MAX {
                s.torn = true;
            } else {
                s.corrupt_at = Some(at as u64);
            }
            break;
        }
        let offset = u64::from_le_bytes(h[0..8].try_into().expect("8 bytes"));
        let crc = u32_at(h, 12);
        let end = at + HEADER_LEN + len as usize;
        if end > file.len() {
            s.torn = true;
            break;
        }
        let data = &file[at + HEADER_LEN..end];
        if crc32fast::hash(data) != crc {
            if end == file.len() {
                s.torn = true;
            } else {
                s.corrupt_at = Some(at as u64);
            }
            break;
        }
        if offset == FENCE_OFFSET {
            if data.len() != 9 || data[8] > 1 {
                s.corrupt_at = Some(at as u64);
                break;
            }
            s.fence = s.fence.max(u64::from_le_bytes(data[0..8].try_into().expect("8 bytes")));
            s.sealed |= data[8] == 1;
        } else {
            if offset != s.len {
                // A gap or an overlap: never written that way.
                s.corrupt_at = Some(at as u64);
                break;
            }
            s.records.push(RecordLoc { offset, pos: at as u64, len, crc });
            s.len += u64::from(len);
        }
        at = end;
        s.good_bytes = at as u64;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<usize>) {
        let mut f = Vec::new();
        let mut starts = Vec::new();
        for (i, rec) in [encode_record(0, b"hello"), encode_fence(3, false), encode_record(5, b" world"), encode_record(11, &[7u8; 100])]
            .into_iter()
            .enumerate()
        {
            let _ = i;
            starts.push(f.len());
            f.extend_from_slice(&rec);
        }
        (f, starts)
    }

    #[test]
    fn records_and_fences_scan_back() {
        let (f, starts) = sample();
        let s = scan(&f);
        assert_eq!((s.len, s.fence, s.sealed, s.torn, s.corrupt_at), (111, 3, false, false, None));
        assert_eq!(s.good_bytes, f.len() as u64);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.records[1].pos, starts[2] as u64);
        let loc = s.records[1];
        let got = check_record(&loc, &f[loc.pos as usize..loc.pos as usize + HEADER_LEN + loc.len as usize]);
        assert_eq!(got.as_deref(), Some(&b" world"[..]));
        let mut sealed = f.clone();
        sealed.extend_from_slice(&encode_fence(2, true));
        let s = scan(&sealed);
        assert_eq!((s.fence, s.sealed), (3, true), "the fence never goes back");
    }

    #[test]
    fn a_torn_last_record_is_cut_at_every_length() {
        let (f, starts) = sample();
        let last = *starts.last().unwrap();
        for cut in last + 1..f.len() {
            let s = scan(&f[..cut]);
            assert!(s.torn && s.corrupt_at.is_none(), "cut at {cut}");
            assert_eq!((s.len, s.good_bytes), (11, last as u64), "cut at {cut}");
        }
        // A flipped byte inside the last record's data is a torn tail too.
        let mut g = f.clone();
        g[last + HEADER_LEN + 3] ^= 1;
        let s = scan(&g);
        assert!(s.torn);
        assert_eq!(s.len, 11);
    }

    #[test]
    fn damage_before_the_end_is_corruption_not_a_torn_tail() {
        let (f, starts) = sample();
        let mut g = f.clone();
        g[starts[2] + HEADER_LEN + 1] ^= 0x40; // data of " world"
        let s = scan(&g);
        assert_eq!(s.corrupt_at, Some(starts[2] as u64));
        assert_eq!(s.len, 5, "the good prefix is kept");
        assert!(!s.torn);
        // A record that leaves a gap is corruption too.
        let mut h = encode_record(0, b"ab");
        h.extend_from_slice(&encode_record(5, b"cd"));
        h.extend_from_slice(&encode_record(7, b"ef"));
        assert_eq!(scan(&h).corrupt_at, Some(22));
        // A garbled header far from the end is corruption.
        let mut big = encode_record(0, b"x");
        let bad_at = big.len();
        big.extend_from_slice(&encode_record(1, b"y"));
        big[bad_at] ^= 1;
        let mut off = 2u64;
        while big.len() <= TORN_TAIL_MAX + 100 {
            let data = vec![1u8; 64 * 1024];
            big.extend_from_slice(&encode_record(off, &data));
            off += data.len() as u64;
        }
        let s = scan(&big);
        assert_eq!((s.corrupt_at, s.len), (Some(bad_at as u64), 1));
    }

    #[test]
    fn a_bad_record_is_refused_on_read_back() {
        let rec = encode_record(4, b"data");
        let loc = RecordLoc { offset: 4, pos: 0, len: 4, crc: crc32fast::hash(b"data") };
        assert!(check_record(&loc, &rec).is_some());
        for i in 0..rec.len() {
            let mut r = rec.clone();
            r[i] ^= 0x10;
            assert!(check_record(&loc, &r).is_none(), "flip at {i}");
        }
    }
}
