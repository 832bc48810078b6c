//! The few runtime helpers every role needs, each in exactly one place: the wall clock,
//! random identifiers, poison-tolerant locks and back-off with jitter.
//!
//! The sans-IO core takes time and randomness as arguments; these are where the programs and
//! adapters get them.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    let fraction = u128::from(u16::from_le_bytes(bytes) % 1001);
    let half = delay / 2;
    // In nanoseconds, so that no delay overflows (`Duration * u32` would panic).
    let extra = half.as_nanos() * fraction / 1000;
    let extra = Duration::new(
        u64::try_from(extra / 1_000_000_000).unwrap_or(u64::MAX),
        (extra % 1_000_000_000) as u32,
    );
    half.saturating_add(extra)
}

/// When to ping a peer, and when it is gone: a ping that nothing at all answers (anything
/// received counts) within `timeout`. While the caller deliberately does not read (its
/// application is behind), nothing can be heard, so no deadline runs.
#[derive(Debug)]
pub(crate) struct Liveness {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    waiting_since: Option<Instant>,
}

/// Nothing answered a ping in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer to a ping within {0:?}")]
pub(crate) struct Unanswered(Duration);

impl Liveness {
    /// Pings every `interval` from `now` on; gone after `timeout` without an answer.
    pub(crate) fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Liveness {
            interval,
            timeout,
            next_ping: now,
            waiting_since: None,
        }
    }

    /// Whether a ping is due (send one when `Ok(true)`); `Err` when the peer is gone.
    /// `listening` is false while the caller is not reading.
    pub(crate) fn poll(&mut self, now: Instant, listening: bool) -> Result<bool, Unanswered> {
        if !listening {
            self.waiting_since = None;
        } else if self
            .waiting_since
            .is_some_and(|since| now >= since + self.timeout)
        {
            return Err(Unanswered(self.timeout));
        }
        if now < self.next_ping {
            return Ok(false);
        }
        self.next_ping = now + self.interval;
        if listening && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        Ok(true)
    }

    /// Something arrived from the peer.
    pub(crate) fn heard(&mut self) {
        self.waiting_since = None;
    }

    /// When [`Liveness::poll`] has something to say next.
    pub(crate) fn deadline(&self) -> Instant {
        match self.waiting_since {
            Some(since) => self.next_ping.min(since + self.timeout),
            None => self.next_ping,
        }
    }
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
    fn liveness_pings_on_schedule_and_gives_up_only_while_listening() {
        let start = Instant::now();
        let (every, timeout) = (Duration::from_secs(20), Duration::from_secs(30));
        let mut liveness = Liveness::new(start, every, timeout);
        assert!(liveness.poll(start, true).unwrap(), "a ping at once");
        assert!(!liveness.poll(start + Duration::from_secs(1), true).unwrap());
        assert_eq!(liveness.deadline(), start + every);
        liveness.heard();
        assert!(liveness.poll(start + every, true).unwrap());
        // Not listening: no deadline runs however long it lasts…
        assert!(liveness.poll(start + every * 5, false).is_ok());
        // …but once listening again an unanswered ping ends it after `timeout`.
        let back = start + every * 6;
        assert!(liveness.poll(back, true).unwrap());
        assert!(
            liveness
                .poll(back + timeout - Duration::from_millis(1), true)
                .is_ok()
        );
        let gone = liveness.poll(back + timeout, true).unwrap_err();
        assert_eq!(gone.to_string(), "no answer to a ping within 30s");
    }

    #[test]
    fn wall_clock_is_never_zero() {
        assert!(wall_ms() > 1_600_000_000_000);
    }
}
