//! A fast, unkeyed hash for tables that only the application fills (its procedures, their
//! timeouts, its aliases): a client only looks names up in them, so it cannot grow a chain
//! of colliding keys, and a keyed SipHash (about 250 instructions for a 30-byte URI, on
//! every call) buys nothing there. Tables that clients fill keep the standard hasher.

use std::hash::{BuildHasher, Hasher};

/// Builds [`FastHasher`]s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fast;

/// A `HashMap` with the [`Fast`] hash.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, Fast>;

impl BuildHasher for Fast {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// Eight bytes a step: rotate, xor, multiply by an odd constant.
#[derive(Debug)]
pub(crate) struct FastHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            // The length in the top byte: "a" and "a\0" differ.
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // A multiply carries only upward, and the table takes its bucket from the low
        // bits: a full mix of the 64 bits (MurmurHash3's finalizer) spreads them.
        let mut h = self.0;
        h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_names_spread_over_buckets() {
        let hashes: std::collections::HashSet<u64> = (0..10_000)
            .map(|i| Fast.hash_one(format!("com.example.procedure{i}")) & 1023)
            .collect();
        // 10,000 names into 1,024 buckets: nearly every bucket is used.
        assert!(hashes.len() > 1000, "{}", hashes.len());
        assert_ne!(Fast.hash_one("a"), Fast.hash_one("a\0"));
        assert_ne!(Fast.hash_one(("ab", "c")), Fast.hash_one(("a", "bc")));
    }
}
