//! Single-use signatures for the calls that mint tokens or open channels (StartSession,
//! ResumeSession, CreateDataChannel, the control-channel upgrade): SigV4 lets a captured
//! request be sent again unchanged for as long as its time is within the clock skew, and each
//! such copy would mint a new token. The cache remembers each accepted signature until its
//! request time is out of the window, after which the signature verifier refuses it anyway.
//!
//! Memory is bounded by a count cap. A full cache refuses new requests (a throttling error)
//! rather than forgetting signatures that are still valid: forgetting one would let it be
//! replayed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

use super::lock;
use crate::sigv4::MAX_CLOCK_SKEW_SECONDS;

/// Signatures remembered at most: 5 minutes of about 100 token-minting calls a second, in
/// about 4 MiB.
pub(super) const CAPACITY: usize = 32_768;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// It was accepted before.
    Replayed,
    /// The cache holds [`CAPACITY`] signatures still within the window.
    Full,
}

/// The signatures accepted within the skew window.
pub(super) struct ReplayCache {
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    signatures: HashSet<[u8; 32]>,
    /// The same signatures by the time (Unix seconds) after which they can be forgotten.
    expiries: BinaryHeap<Reverse<(u64, [u8; 32])>>,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(CAPACITY)
    }
}

impl ReplayCache {
    pub(super) fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            capacity,
            seen: Mutex::default(),
        }
    }

    /// Accepts `signature`, of a request made at `request_time`, if it is new at `now` (Unix
    /// seconds, the verifier's clock), and remembers it until it can no longer verify.
    pub(super) fn first_use(
        &self,
        signature: [u8; 32],
        request_time: u64,
        now: u64,
    ) -> Result<(), Refused> {
        let mut seen = lock(&self.seen);
        while let Some(Reverse((expiry, old))) = seen.expiries.peek().copied()
            && expiry < now
        {
            seen.expiries.pop();
            seen.signatures.remove(&old);
        }
        if seen.signatures.contains(&signature) {
            return Err(Refused::Replayed);
        }
        if seen.signatures.len() >= self.capacity {
            return Err(Refused::Full);
        }
        seen.signatures.insert(signature);
        let expiry = request_time.saturating_add(MAX_CLOCK_SKEW_SECONDS);
        seen.expiries.push(Reverse((expiry, signature)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000;

    #[test]
    fn a_signature_is_good_once_while_it_can_verify() {
        let cache = ReplayCache::new(8);
        assert_eq!(cache.first_use([1; 32], T, T), Ok(()));
        assert_eq!(cache.first_use([1; 32], T, T + 1), Err(Refused::Replayed));
        // Still refused at the last second the verifier would accept it.
        let last = T + MAX_CLOCK_SKEW_SECONDS;
        assert_eq!(cache.first_use([1; 32], T, last), Err(Refused::Replayed));
        assert_eq!(cache.first_use([2; 32], T, T), Ok(()));
        // A request from the verifier's future stays remembered until its own time is past.
        assert_eq!(cache.first_use([3; 32], T + 300, T), Ok(()));
        assert_eq!(
            cache.first_use([3; 32], T + 300, T + 599),
            Err(Refused::Replayed)
        );
    }

    #[test]
    fn a_full_cache_refuses_new_signatures_and_forgets_expired_ones() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.first_use([1; 32], T, T), Ok(()));
        assert_eq!(cache.first_use([2; 32], T + 10, T), Ok(()));
        assert_eq!(cache.first_use([3; 32], T, T), Err(Refused::Full));
        // The refused one was not remembered, and the remembered ones were not dropped.
        assert_eq!(cache.first_use([1; 32], T, T + 5), Err(Refused::Replayed));
        // Once the first is out of the window there is room again.
        let later = T + MAX_CLOCK_SKEW_SECONDS + 1;
        assert_eq!(cache.first_use([3; 32], later, later), Ok(()));
        assert_eq!(cache.first_use([4; 32], later, later), Err(Refused::Full));
    }
}
