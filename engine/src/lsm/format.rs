//! Byte-level building blocks shared by the WAL, the manifest and SSTables:
//! little-endian encoders, a bounds-checked decoder that reports typed
//! corruption, and the checksummed length-framed record format.
//!
//! A frame is `magic:u8 | len:u32 | payload_crc:u32 | header_crc:u32 | payload`.
//! The payload is XOR-masked with a fixed pseudo-random stream so that a
//! legitimate payload never contains a long run of zero bytes: a crash that
//! loses a sector of an unsynced append leaves such a run (the simulated disk
//! zero-fills lost sectors), and that is how [`scan_frames`] tells a torn
//! tail (truncated, point-in-time recovery) from corruption of synced bytes
//! (a typed error). Only the last frame of a log can be torn, because the
//! writers sync each frame before appending the next.

use crate::lsm::error::{Error, Result};

pub const FRAME_MAGIC: u8 = 0xA7;
pub const FRAME_HEADER: usize = 13;
/// Largest payload a frame may carry.
pub const FRAME_PAYLOAD_MAX: usize = 16 << 20;
/// A run of this many zero bytes in a frame marks a lost sector (masked
/// payloads never hold one); recovery thus assumes sectors of at least
/// this many bytes.
pub const TORN_ZERO_RUN_MIN: usize = 16;

pub fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn mask(buf: &mut [u8]) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (b, m) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *b ^= m;
        }
    }
}

/// Encodes one frame around `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= FRAME_PAYLOAD_MAX, "frame payload over its limit");
    let mut body = payload.to_vec();
    mask(&mut body);
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    out.push(FRAME_MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(&body).to_le_bytes());
    let hcrc = crc(&out[..9]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// What scanning a log file found.
#[derive(Debug)]
pub struct Scan {
    /// Each intact frame's offset and unmasked payload, in file order.
    pub frames: Vec<(u64, Vec<u8>)>,
    /// End of the last intact frame.
    pub valid_end: u64,
    /// Whether bytes after `valid_end` were a torn tail and were ignored.
    pub torn: bool,
}

fn has_zero_run(buf: &[u8]) -> bool {
    let mut run = 0usize;
    for &b in buf {
        run = if b == 0 { run + 1 } else { 0 };
        if run >= TORN_ZERO_RUN_MIN {
            return true;
        }
    }
    false
}

/// Splits a whole log file into frames. A damaged last frame that shows the
/// marks of a crash is a torn tail; any other damage is corruption.
pub fn scan_frames(file: &str, buf: &[u8]) -> Result<Scan> {
    let mut frames = Vec::new();
    let mut x = 0usize;
    let end = buf.len();
    while x < end {
        let rest = &buf[x..];
        let torn = |frames: Vec<(u64, Vec<u8>)>| Ok(Scan { frames, valid_end: x as u64, torn: true });
        if rest.len() < FRAME_HEADER || rest[0] == 0 {
            return torn(frames);
        }
        let h = &rest[..FRAME_HEADER];
        let hcrc = u32::from_le_bytes(h[9..13].try_into().expect("4 bytes"));
        if h[0] != FRAME_MAGIC || hcrc != crc(&h[..9]) {
            // Torn only if a lost sector (a zero run) damaged this header:
            // the frame before it was intact, so such a run starts inside
            // the header. A zero run further on (say, a torn tail after a
            // crash) says nothing about this header: it is corruption.
            let window = &rest[..rest.len().min(FRAME_HEADER + TORN_ZERO_RUN_MIN - 1)];
            if has_zero_run(window) {
                return torn(frames);
            }
            return Err(Error::corrupt(file, x as u64, "frame header checksum mismatch"));
        }
        let len = u32::from_le_bytes(h[1..5].try_into().expect("4 bytes")) as usize;
        let pcrc = u32::from_le_bytes(h[5..9].try_into().expect("4 bytes"));
        if len > FRAME_PAYLOAD_MAX {
            return Err(Error::corrupt(file, x as u64, format!("frame length {len} over the limit")));
        }
        let fend = x + FRAME_HEADER + len;
        if fend > end {
            return torn(frames);
        }
        let body = &buf[x + FRAME_HEADER..fend];
        if crc(body) != pcrc {
            if fend == end && has_zero_run(body) {
                return torn(frames);
            }
            return Err(Error::corrupt(file, x as u64, "frame payload checksum mismatch"));
        }
        let mut payload = body.to_vec();
        mask(&mut payload);
        frames.push((x as u64, payload));
        x = fend;
    }
    Ok(Scan { frames, valid_end: x as u64, torn: false })
}

/// Appends little-endian fields and length-prefixed byte strings.
#[derive(Default, Debug)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
}

/// A bounds-checked decoder: running off the end is corruption of `file`.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
    base: u64,
}

impl<'a> Dec<'a> {
    pub fn new(file: &'a str, base: u64, buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0, file, base }
    }
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn err(&self, what: &str) -> Error {
        Error::corrupt(self.file, self.base + self.pos as u64, what)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.err("record truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

#[cfg(test)]
mod tests {

    /// Regression (crash seed 585): an at-rest bit flip in an early frame's
    /// header, followed by intact frames and then a crash-torn tail, was
    /// taken for the torn tail itself, dropping acknowledged frames.
    #[test]
    fn a_flipped_header_before_a_torn_tail_is_corruption_not_a_tear() {
        let mut buf = frame(b"first frame payload");
        buf.extend(frame(b"second frame, intact"));
        buf.extend(vec![0u8; 64]); // a lost sector at the tail
        assert!(scan_frames("w", &buf).unwrap().torn, "the zero tail alone is a tear");
        buf[2] ^= 0x10; // flip a bit in the first frame's length
        let r = scan_frames("w", &buf);
        assert!(matches!(r, Err(Error::Corruption { .. })), "{r:?}");
        // A header that a lost sector really overlaps is still a tear.
        let mut torn = frame(b"kept");
        let at = torn.len();
        torn.extend(frame(b"lost in the crash"));
        torn[at..at + 20].fill(0);
        let r = scan_frames("w", &torn).unwrap();
        assert!(r.torn && r.frames.len() == 1);
    }

    use super::*;

    #[test]
    fn frames_round_trip_and_zero_payloads_survive_masking() {
        let mut f = frame(b"hello");
        f.extend(frame(&[0u8; 4000]));
        let s = scan_frames("wal", &f).unwrap();
        assert_eq!(s.frames.len(), 2);
        assert_eq!(s.frames[1].1, vec![0u8; 4000]);
        assert!(!s.torn);
    }

    #[test]
    fn truncated_or_zero_filled_tail_is_torn() {
        let mut f = frame(b"first");
        let keep = f.len();
        f.extend(frame(&[5u8; 3000]));
        let mut cut = f.clone();
        cut.truncate(f.len() - 10);
        let s = scan_frames("wal", &cut).unwrap();
        assert!(s.torn && s.frames.len() == 1 && s.valid_end == keep as u64);
        let mut holed = f.clone();
        holed[keep + 100..keep + 116].fill(0);
        assert!(scan_frames("wal", &holed).unwrap().torn);
        let mut zero_header = f.clone();
        zero_header[keep..keep + 5].fill(0);
        assert!(scan_frames("wal", &zero_header).unwrap().torn);
    }

    #[test]
    fn a_bit_flip_is_corruption_wherever_it_lands() {
        let mut f = frame(b"first record");
        f.extend(frame(b"second record"));
        for bit in 0..f.len() * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            let r = scan_frames("wal", &g);
            assert!(matches!(r, Err(Error::Corruption { .. })), "bit {bit}: {r:?}");
        }
    }
}
