//! Round-trip time estimation and retransmission timeout (RFC 6298), seeded with the reference
//! constants (PROTOCOL.md §7.4): SRTT 100 ms, RTTVAR 0, RTO 200 ms, granularity 10 ms, RTO ≤ 1 s.
//! Unlike the reference, samples come only from messages sent once (Karn's rule) and each
//! retransmission of a message doubles its own timeout.

use std::time::Duration;

const INITIAL_SRTT: Duration = Duration::from_millis(100);
const INITIAL_RTO: Duration = Duration::from_millis(200);
const GRANULARITY: Duration = Duration::from_millis(10);
const MAX_RTO: Duration = Duration::from_secs(1);
/// Longest wait between two retransmissions of one message after back-off.
const MAX_BACKED_OFF: Duration = Duration::from_secs(8);

#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
}

impl RttEstimator {
    pub(crate) fn new() -> Self {
        RttEstimator {
            srtt: INITIAL_SRTT,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
        }
    }

    /// Folds in one round-trip sample from a message that was sent exactly once.
    pub(crate) fn on_sample(&mut self, sample: Duration) {
        let deviation = self.srtt.abs_diff(sample);
        self.rttvar = self.rttvar * 3 / 4 + deviation / 4;
        self.srtt = self.srtt * 7 / 8 + sample / 8;
        self.rto = (self.srtt + GRANULARITY.max(self.rttvar * 4)).min(MAX_RTO);
    }

    /// How long to wait before sending a message again that was already sent `sends` times.
    pub(crate) fn timeout(&self, sends: u32) -> Duration {
        let doublings = sends.saturating_sub(1).min(16);
        (self.rto * (1 << doublings)).min(MAX_BACKED_OFF.max(self.rto))
    }

    pub(crate) fn smoothed(&self) -> Duration {
        self.srtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_reference_constants() {
        let rtt = RttEstimator::new();
        assert_eq!(rtt.timeout(1), Duration::from_millis(200));
        assert_eq!(rtt.smoothed(), Duration::from_millis(100));
    }

    #[test]
    fn follows_rfc6298_and_caps_at_one_second() {
        let mut rtt = RttEstimator::new();
        rtt.on_sample(Duration::from_millis(20));
        // RTTVAR = 0.25·80 = 20 ms; SRTT = 87.5 + 2.5 = 90 ms; RTO = 90 + 80 = 170 ms.
        assert_eq!(rtt.timeout(1), Duration::from_millis(170));
        for _ in 0..50 {
            rtt.on_sample(Duration::from_secs(5));
        }
        assert_eq!(rtt.timeout(1), MAX_RTO);
    }

    #[test]
    fn backs_off_per_retransmission_up_to_a_bound() {
        let rtt = RttEstimator::new();
        assert_eq!(rtt.timeout(2), Duration::from_millis(400));
        assert_eq!(rtt.timeout(3), Duration::from_millis(800));
        assert_eq!(rtt.timeout(40), MAX_BACKED_OFF);
    }

    #[test]
    fn small_steady_rtt_keeps_the_granularity_floor() {
        let mut rtt = RttEstimator::new();
        for _ in 0..200 {
            rtt.on_sample(Duration::from_micros(50));
        }
        assert!(rtt.timeout(1) >= GRANULARITY);
        assert!(rtt.timeout(1) < Duration::from_millis(11));
    }
}
