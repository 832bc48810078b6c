//! The few runtime helpers every role needs, each in exactly one place: the wall clock,
//! random identifiers, poison-tolerant locks and back-off with jitter.
//!
//! The sans-IO core takes time and randomness as arguments; these are where the programs and
//! adapters get them.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::entropy::{Entropy, SystemEntropy};

/// Milliseconds since the Unix epoch, as frames' `CreatedDate` carries them.
///
/// Never 0: the Go agent treats `CreatedDate` 0 as a malformed frame, so a clock set before
/// 1970 reads as 1 ms rather than producing frames a peer refuses.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_millis() as u64)
        .max(1)
}

/// A random (version 4) UUID from `entropy`.
pub fn uuid_from(entropy: &mut dyn Entropy) -> uuid::Uuid {
    let mut bytes = [0; 16];
    entropy.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A random (version 4) UUID from the operating system's generator.
pub fn random_uuid() -> uuid::Uuid {
    uuid_from(&mut SystemEntropy::new())
}

/// Locks `mutex`, carrying on if a thread panicked while holding it: every structure guarded
/// this way stays consistent between statements, so a poisoned lock holds valid data.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `delay` with jitter over its upper half (between `delay / 2` and `delay`), so that many
/// peers that lost the same gateway do not redial in step.
pub fn jittered(delay: Duration, entropy: &mut dyn Entropy) -> Duration {
    let mut bytes = [0; 2];
    entropy.fill(&mut bytes);
    let fraction = u32::from(u16::from_le_bytes(bytes)) % 1001;
    delay / 2 + delay / 2 * fraction / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let mut entropy = SeededEntropy::new(7);
        let delay = Duration::from_millis(800);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let jittered = jittered(delay, &mut entropy);
            assert!(jittered >= delay / 2 && jittered <= delay, "{jittered:?}");
            seen.insert(jittered);
        }
        assert!(
            seen.len() > 50,
            "jitter barely varies: {} values",
            seen.len()
        );
    }

    #[test]
    fn wall_clock_is_never_zero() {
        assert!(wall_ms() > 1_600_000_000_000);
    }
}
