//! Randomness is passed into the session core, never drawn inside it, so tests and the
//! simulator replay exactly (PROTOCOL.md §3.3 ids, §8 nonces and challenges).

/// A source of random bytes for message ids, nonces and challenges.
pub trait Entropy: Send {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

/// The operating system's random source (through `ring`). Use this in production.
///
/// Bytes are drawn 256 at a time, so that a busy session does not make one system call per
/// message id; each byte is handed out once and wiped from the pool.
pub struct SystemEntropy {
    source: ring::rand::SystemRandom,
    pool: [u8; POOL],
    /// Bytes of `pool` already handed out.
    used: usize,
}

const POOL: usize = 256;

impl std::fmt::Debug for SystemEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemEntropy { .. }")
    }
}

impl SystemEntropy {
    /// The system source.
    pub fn new() -> Self {
        SystemEntropy {
            source: ring::rand::SystemRandom::new(),
            pool: [0; POOL],
            used: POOL,
        }
    }

    fn draw(&self, dest: &mut [u8]) {
        ring::rand::SecureRandom::fill(&self.source, dest)
            .expect("the operating system's random source is available");
    }
}

impl Default for SystemEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl Entropy for SystemEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        if dest.len() > POOL / 2 {
            return self.draw(dest);
        }
        if POOL - self.used < dest.len() {
            let mut pool = [0; POOL];
            self.draw(&mut pool);
            self.pool = pool;
            self.used = 0;
        }
        let taken = &mut self.pool[self.used..self.used + dest.len()];
        dest.copy_from_slice(taken);
        taken.fill(0);
        self.used += dest.len();
    }
}

/// A deterministic generator (SplitMix64) for tests, fuzzing and simulation.
///
/// Not cryptographically secure: never use it for real sessions, whose nonces and challenges
/// must be unpredictable.
#[derive(Debug, Clone)]
pub struct SeededEntropy(u64);

impl SeededEntropy {
    /// A generator that always produces the same bytes for the same seed.
    pub fn new(seed: u64) -> Self {
        SeededEntropy(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl SeededEntropy {
    /// A uniform number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod system_tests {
    use super::{Entropy, POOL, SystemEntropy};

    #[test]
    fn pooled_bytes_are_never_handed_out_twice() {
        let mut entropy = SystemEntropy::new();
        let mut seen = std::collections::HashSet::new();
        // Many pool refills, small and odd sizes, and draws larger than the pool.
        for round in 0..2000 {
            let mut id = vec![0u8; [16, 12, 7, POOL + 1][round % 4]];
            entropy.fill(&mut id);
            assert!(seen.insert(id), "a random value repeated");
        }
    }
}
