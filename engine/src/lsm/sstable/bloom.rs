//! A bloom filter over the row keys of an SSTable: a point read skips a
//! table whose filter says the row is absent. No false negatives.

use crate::lsm::format::{Dec, Enc};
use crate::lsm::error::Result;

pub const BITS_PER_KEY: usize = 10;
pub const PROBES: u32 = 7;
/// Largest filter in bytes.
pub const BLOOM_BYTES_MAX: usize = 4 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bloom {
    bits: Vec<u8>,
}

fn hash(key: &[u8]) -> (u64, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let h2 = h.rotate_left(31).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (h, h2)
}

impl Bloom {
    pub fn build(keys: &[Vec<u8>]) -> Bloom {
        let nbits = (keys.len() * BITS_PER_KEY).clamp(64, BLOOM_BYTES_MAX * 8);
        let mut bits = vec![0u8; nbits.div_ceil(8)];
        let n = bits.len() as u64 * 8;
        for k in keys {
            let (h1, h2) = hash(k);
            for i in 0..u64::from(PROBES) {
                let b = h1.wrapping_add(i.wrapping_mul(h2)) % n;
                bits[(b / 8) as usize] |= 1 << (b % 8);
            }
        }
        Bloom { bits }
    }

    pub fn may_contain(&self, key: &[u8]) -> bool {
        let n = self.bits.len() as u64 * 8;
        if n == 0 {
            return true;
        }
        let (h1, h2) = hash(key);
        (0..u64::from(PROBES)).all(|i| {
            let b = h1.wrapping_add(i.wrapping_mul(h2)) % n;
            self.bits[(b / 8) as usize] & (1 << (b % 8)) != 0
        })
    }

    pub fn encode(&self, e: &mut Enc) {
        e.bytes(&self.bits);
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Bloom> {
        let bits = d.bytes()?;
        if bits.len() > BLOOM_BYTES_MAX {
            return Err(d.err("bloom filter over its limit"));
        }
        Ok(Bloom { bits })
    }

    pub fn bytes(&self) -> usize {
        self.bits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let b = Bloom::build(&keys);
        assert!(keys.iter().all(|k| b.may_contain(k)));
        let fp = (1000..11000u32).filter(|i| b.may_contain(&i.to_be_bytes())).count();
        assert!(fp < 300, "{fp} false positives in 10000");
    }
}
