//! A small seeded PRNG (SplitMix64) for generated tests: the same seed gives the same
//! sequence on every machine, so a failing run can be replayed from its seed alone.

use std::ops::{Range, RangeInclusive};
use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, fast, and good enough for test
/// generation. Not for anything that needs unpredictability.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

/// Unsigned integers the range helpers can produce.
pub trait Int: Copy {
    fn to_u64(self) -> u64;
    /// Only called with values that fit (they come from a range of `Self`).
    fn from_u64(v: u64) -> Self;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            fn to_u64(self) -> u64 {
                self as u64
            }
            #[allow(clippy::cast_possible_truncation, reason = "values come from a range of Self")]
            fn from_u64(v: u64) -> Self {
                v as $t
            }
        }
    )*};
}
int!(u8, u16, u32, u64, usize);

impl Rng {
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The seed from environment variable `var` (decimal or `0x` hex) if it is set, else one
    /// taken from the clock. Panics on an unparsable value rather than ignoring it.
    pub fn seed_from_env_or_clock(var: &str) -> u64 {
        match std::env::var(var) {
            Ok(text) => parse_seed(&text)
                .unwrap_or_else(|| panic!("{var}={text:?} is not a decimal or 0x-hex u64")),
            Err(_) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock before 1970");
                // Mix so that runs started within the same second still differ.
                Self::new(now.as_secs() ^ u64::from(now.subsec_nanos()).rotate_left(32)).next_u64()
            }
        }
    }

    pub const fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        // Reject the top partial block so every residue is equally likely.
        let limit = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < limit {
                return v % n;
            }
        }
    }

    /// Uniform in `range` (must not be empty).
    pub fn range<T: Int>(&mut self, range: Range<T>) -> T {
        let (lo, hi) = (range.start.to_u64(), range.end.to_u64());
        assert!(lo < hi, "empty range {lo}..{hi}");
        T::from_u64(lo + self.below(hi - lo))
    }

    /// Uniform in `range` (must not be empty).
    pub fn range_inclusive<T: Int>(&mut self, range: RangeInclusive<T>) -> T {
        let (lo, hi) = (range.start().to_u64(), range.end().to_u64());
        assert!(lo <= hi, "empty range {lo}..={hi}");
        match (hi - lo).checked_add(1) {
            Some(span) => T::from_u64(lo + self.below(span)),
            None => T::from_u64(self.next_u64()),
        }
    }

    /// True with probability `p` (0.0 ..= 1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform f64 in [0, 1).
        #[allow(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// A uniformly chosen element (the slice must not be empty).
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0..items.len())]
    }

    /// An index chosen with the given relative weights (at least one must be non-zero).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut pick = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if pick < u64::from(w) {
                return i;
            }
            pick -= u64::from(w);
        }
        unreachable!("pick < total")
    }

    pub fn u8(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }

    pub fn u16(&mut self) -> u16 {
        let b = self.next_u64().to_le_bytes();
        u16::from_le_bytes([b[0], b[1]])
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        self.fill(&mut out);
        out
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        self.fill(&mut out);
        out
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (as in the reference implementation).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn ranges_stay_in_bounds_and_cover_them() {
        let mut r = Rng::new(7);
        let mut seen = [false; 6];
        for _ in 0..1000 {
            let v = r.range(10u8..16);
            assert!((10..16).contains(&v));
            seen[usize::from(v - 10)] = true;
            let w = r.range_inclusive(3usize..=4);
            assert!(w == 3 || w == 4);
        }
        assert!(seen.iter().all(|&s| s));
        let _full_range: u64 = r.range_inclusive(0..=u64::MAX);
        assert_eq!(r.weighted(&[0, 5, 0]), 1);
        assert!(!r.chance(0.0) && r.chance(1.0));
        assert_eq!(parse_seed("0x10"), Some(16));
        assert_eq!(parse_seed("17"), Some(17));
        assert_eq!(parse_seed("x"), None);
    }
}
