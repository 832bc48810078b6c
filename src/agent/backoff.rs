//! How long the agent waits before it dials the gateway again: a pure policy, so that it can
//! be tested without a clock or a network.
//!
//! * A **refusal** (the gateway answered 4xx: unknown agent id, wrong secret, clock skew, agent
//!   removed) will not go away by itself: someone has to fix the configuration. Retrying it
//!   once a second only fills both logs, so its delay starts at 1 s and doubles up to 5 min.
//! * A **network** failure (no answer, connection reset, 5xx, the channel dropped) usually
//!   heals on its own (a gateway restart, a blip): its delay starts short and doubles up to
//!   30 s only.
//!
//! Each delay is jittered to between half and all of its value, so that agents cut off
//! together (a gateway restart) do not all dial again in the same instant. The randomness
//! is passed in. After a connection that stayed up, [`Backoff::reset`] starts both over.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use ssm_session::agent::backoff::{Backoff, Failure};
//! use ssm_session::SystemEntropy;
//!
//! let mut backoff = Backoff::default();
//! let first = backoff.next(Failure::Refused, &mut SystemEntropy::new());
//! assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
//! let second = backoff.next(Failure::Refused, &mut SystemEntropy::new());
//! assert!(second >= Duration::from_secs(1) && second <= Duration::from_secs(2));
//! backoff.reset();
//! assert!(backoff.next(Failure::Refused, &mut SystemEntropy::new()) <= Duration::from_secs(1));
//! ```

use std::time::Duration;

use crate::entropy::Entropy;
use crate::net::runtime::jittered;

/// Default first delay after a network failure.
pub const NETWORK_INITIAL: Duration = Duration::from_millis(200);
/// Default largest delay after network failures.
pub const NETWORK_MAX: Duration = Duration::from_secs(30);
/// Default first delay after a refusal.
pub const REFUSED_INITIAL: Duration = Duration::from_secs(1);
/// Default largest delay after refusals.
pub const REFUSED_MAX: Duration = Duration::from_secs(300);
/// A control channel that stayed up this long resets the back-off when it drops; one that
/// drops sooner counts as a network failure (a gateway that accepts and closes at once is
/// not redialled in a tight loop).
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Why a dial failed, for the delay before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The gateway refused the agent (HTTP 4xx, or a policy close): a configuration problem.
    Refused,
    /// No answer, a broken connection, a server error, or a channel that dropped.
    Network,
}

/// One doubling sequence: `initial`, `2 × initial`, … up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Doubling {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Doubling {
    fn new(initial: Duration, max: Duration) -> Doubling {
        let max = max.max(initial);
        Doubling {
            initial,
            max,
            next: initial,
        }
    }

    fn take(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The agent's reconnection back-off: separate doubling sequences for refusals and network
/// failures, jittered, reset after a connection that stayed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    refused: Doubling,
    network: Doubling,
}

impl Default for Backoff {
    /// 1 s doubling to 5 min after refusals, 200 ms doubling to 30 s after network failures.
    fn default() -> Self {
        Backoff::new(
            (NETWORK_INITIAL, NETWORK_MAX),
            (REFUSED_INITIAL, REFUSED_MAX),
        )
    }
}

impl Backoff {
    /// A back-off from `(initial, max)` for network failures and for refusals (a `max` below
    /// its `initial` is raised to it).
    pub fn new(network: (Duration, Duration), refused: (Duration, Duration)) -> Backoff {
        Backoff {
            refused: Doubling::new(refused.0, refused.1),
            network: Doubling::new(network.0, network.1),
        }
    }

    /// The delay before the next dial after a failure of `kind`: the sequence's next value,
    /// jittered to between half and all of it with bytes from `entropy`.
    pub fn next(&mut self, kind: Failure, entropy: &mut dyn Entropy) -> Duration {
        let delay = match kind {
            Failure::Refused => self.refused.take(),
            Failure::Network => self.network.take(),
        };
        jittered(delay, entropy)
    }

    /// The delay `next(kind, …)` would jitter, without advancing (for log messages and tests).
    pub fn peek(&self, kind: Failure) -> Duration {
        match kind {
            Failure::Refused => self.refused.next,
            Failure::Network => self.network.next,
        }
    }

    /// Starts both sequences over: the last connection stayed up.
    pub fn reset(&mut self) {
        self.refused.reset();
        self.network.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the same two bytes: 0 gives the smallest delay, 1000 the largest.
    struct Fixed(u16);

    impl Entropy for Fixed {
        fn fill(&mut self, dest: &mut [u8]) {
            for (byte, value) in dest.iter_mut().zip(self.0.to_le_bytes().iter().cycle()) {
                *byte = *value;
            }
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn refusals_double_from_one_second_to_five_minutes() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..12)
            .map(|_| backoff.next(Failure::Refused, &mut Fixed(1000)))
            .collect();
        let expected: Vec<_> = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
            .into_iter()
            .map(secs)
            .collect();
        assert_eq!(delays, expected);
    }

    #[test]
    fn network_failures_stay_short() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..12)
            .map(|_| backoff.next(Failure::Network, &mut Fixed(1000)))
            .collect();
        assert_eq!(delays[0], Duration::from_millis(200));
        assert_eq!(delays[1], Duration::from_millis(400));
        assert!(delays.iter().all(|delay| *delay <= NETWORK_MAX));
        assert_eq!(delays[11], NETWORK_MAX);
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        let mut backoff = Backoff::default();
        assert_eq!(
            backoff.next(Failure::Refused, &mut Fixed(0)),
            Duration::from_millis(500)
        );
        assert_eq!(
            backoff.next(Failure::Refused, &mut Fixed(500)),
            secs(1) + secs(1) / 2
        );
        // 65535 % 1001 = 470: 2 s + 2 s × 0.47.
        let delay = backoff.next(Failure::Refused, &mut Fixed(u16::MAX));
        assert_eq!(delay, secs(2) + Duration::from_millis(940));
        let mut system = crate::entropy::SystemEntropy::new();
        for _ in 0..100 {
            let delay = Backoff::default().next(Failure::Refused, &mut system);
            assert!(
                (Duration::from_millis(500)..=secs(1)).contains(&delay),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn the_kinds_back_off_independently_and_reset_together() {
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            backoff.next(Failure::Refused, &mut Fixed(1000));
        }
        assert_eq!(backoff.peek(Failure::Refused), secs(32));
        assert_eq!(
            backoff.next(Failure::Network, &mut Fixed(1000)),
            NETWORK_INITIAL
        );
        assert_eq!(backoff.peek(Failure::Refused), secs(32));
        backoff.reset();
        assert_eq!(backoff.peek(Failure::Refused), REFUSED_INITIAL);
        assert_eq!(backoff.peek(Failure::Network), NETWORK_INITIAL);
    }

    #[test]
    fn a_cap_below_the_start_is_raised_and_long_runs_do_not_overflow() {
        let mut backoff = Backoff::new((secs(5), secs(1)), (Duration::MAX / 2, Duration::MAX));
        assert_eq!(backoff.next(Failure::Network, &mut Fixed(1000)), secs(5));
        assert_eq!(backoff.next(Failure::Network, &mut Fixed(1000)), secs(5));
        for _ in 0..100 {
            backoff.next(Failure::Refused, &mut Fixed(1000));
        }
        assert_eq!(backoff.peek(Failure::Refused), Duration::MAX);
    }
}
