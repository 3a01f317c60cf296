//! What the deterministic fuzz tests share (the REST request parser and mutating bodies in
//! `pgpilot-api`, the configuration loader in `pgpilot-config`, the DCS value parsers in
//! `pgpilot-dcs`): a seeded xorshift generator, so every run tries the same inputs and a
//! failure is reproduced by running the test again, and the number of inputs, which
//! `PGPILOT_FUZZ_SCALE=N` multiplies for a longer run on demand (CI runs the default).
//! The seed inputs each test mutates are its corpus, kept in the test beside it.

/// xorshift64: small, seedable, good enough to pick mutations.
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero `seed` (zero would stay zero; it is replaced).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        // usize is 64 bits wide on the platforms pgpilot runs on; truncation only reduces
        // the spread of a test's choices elsewhere.
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// `default` inputs, times `PGPILOT_FUZZ_SCALE` when it is set to a positive number.
pub fn runs(default: usize) -> usize {
    let scale = std::env::var("PGPILOT_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    default.saturating_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_bounded() {
        let (mut a, mut b) = (XorShift::new(7), XorShift::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(3) < 3);
            b.below(3);
        }
        assert_ne!(XorShift::new(0).next_u64(), 0);
    }
}
