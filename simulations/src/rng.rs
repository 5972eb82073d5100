//! The one seeded random source: the runtime's SplitMix64 (`hodei_runtime::scheduling::bench`),
//! split into independent streams. Every draw of a run comes from streams split off the master
//! seed, so the same seed gives the same run.

use hodei_runtime::scheduling::bench::SplitMix64;

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }

    /// An independent stream for `purpose` (workload, providers, faults...), so adding draws to
    /// one part of the model does not shift the others.
    pub fn stream(seed: u64, purpose: u64) -> Rng {
        let mut r = Rng(SplitMix64::new(
            seed ^ purpose.wrapping_mul(0xD6E8_FEB8_6659_FD93),
        ));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let n = hi - lo + 1;
        lo + ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// True with probability `pct`/100.
    pub fn chance_pct(&mut self, pct: f64) -> bool {
        self.unit() * 100.0 < pct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::stream(7, 1).next_u64(), Rng::stream(7, 2).next_u64());
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let v = r.range(3, 5);
            assert!((3..=5).contains(&v));
            assert!((0.0..1.0).contains(&r.unit()));
        }
    }
}
