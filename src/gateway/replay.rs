//! Single-use signatures for the calls that mint tokens or open channels (StartSession,
//! ResumeSession, CreateDataChannel, the control-channel upgrade): SigV4 lets a captured
//! request be sent again unchanged for as long as its time is within the clock skew, and each
//! such copy would mint a new token. The cache remembers each accepted signature until its
//! request time is out of the window, after which the signature verifier refuses it anyway.
//!
//! Memory is bounded by a count cap. A full cache refuses new requests (a throttling error)
//! rather than forgetting signatures that are still valid: forgetting one would let it be
//! replayed. So that one access key cannot fill it and throttle everyone, each key holds at
//! most [`KEY_SHARE`] entries. A request is [`ReplayCache::check`]ed as soon as it is
//! verified and [`ReplayCache::claim`]ed only once it is allowed, so refused requests take no
//! room.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use super::lock;
use crate::sigv4::MAX_CLOCK_SKEW_SECONDS;

/// Signatures remembered at most: 5 minutes of about 100 token-minting calls a second, in
/// about 4 MiB.
pub(super) const CAPACITY: usize = 32_768;

/// Signatures one access key may hold at once: a sixteenth of [`CAPACITY`], about 7 calls a
/// second for 5 minutes, far more than one principal or agent needs.
pub(super) const KEY_SHARE: usize = 2_048;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// It was accepted before.
    Replayed,
    /// Its access key holds [`KEY_SHARE`] signatures still within the window.
    KeyShare,
    /// The cache holds [`CAPACITY`] signatures still within the window.
    Full,
}

/// The signatures accepted within the skew window.
pub(super) struct ReplayCache {
    capacity: usize,
    share: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Each signature and the access key that signed it.
    signatures: HashMap<[u8; 32], String>,
    /// The same signatures by the time (Unix seconds) after which they can be forgotten.
    expiries: BinaryHeap<Reverse<(u64, [u8; 32])>>,
    /// Live signatures per access key (keys with none are not kept).
    per_key: HashMap<String, usize>,
}

impl Seen {
    /// Forgets the signatures that can no longer verify at `now`.
    fn expire(&mut self, now: u64) {
        while let Some(Reverse((expiry, old))) = self.expiries.peek().copied()
            && expiry < now
        {
            self.expiries.pop();
            let Some(key) = self.signatures.remove(&old) else {
                continue;
            };
            if let Some(count) = self.per_key.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.per_key.remove(&key);
                }
            }
        }
    }

    fn refusal(
        &self,
        capacity: usize,
        share: usize,
        key: &str,
        signature: &[u8; 32],
    ) -> Option<Refused> {
        if self.signatures.contains_key(signature) {
            return Some(Refused::Replayed);
        }
        if self.per_key.get(key).copied().unwrap_or(0) >= share {
            return Some(Refused::KeyShare);
        }
        (self.signatures.len() >= capacity).then_some(Refused::Full)
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(CAPACITY, KEY_SHARE)
    }
}

impl ReplayCache {
    pub(super) fn new(capacity: usize, share: usize) -> ReplayCache {
        ReplayCache {
            capacity,
            share,
            seen: Mutex::default(),
        }
    }

    /// Whether [`ReplayCache::claim`] would accept `signature` by `key` at `now` (Unix
    /// seconds, the verifier's clock), remembering nothing: replays are refused before the
    /// request costs anything, without a refused request taking room.
    pub(super) fn check(&self, key: &str, signature: &[u8; 32], now: u64) -> Result<(), Refused> {
        let mut seen = lock(&self.seen);
        seen.expire(now);
        match seen.refusal(self.capacity, self.share, key, signature) {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// Accepts `signature` by `key`, of a request made at `request_time`, if it is new at
    /// `now`, and remembers it until it can no longer verify.
    pub(super) fn claim(
        &self,
        key: &str,
        signature: [u8; 32],
        request_time: u64,
        now: u64,
    ) -> Result<(), Refused> {
        let mut seen = lock(&self.seen);
        seen.expire(now);
        if let Some(refused) = seen.refusal(self.capacity, self.share, key, &signature) {
            return Err(refused);
        }
        seen.signatures.insert(signature, key.to_owned());
        *seen.per_key.entry(key.to_owned()).or_default() += 1;
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
        let cache = ReplayCache::new(8, 8);
        assert_eq!(cache.claim("k", [1; 32], T, T), Ok(()));
        assert_eq!(cache.claim("k", [1; 32], T, T + 1), Err(Refused::Replayed));
        // Still refused at the last second the verifier would accept it.
        let last = T + MAX_CLOCK_SKEW_SECONDS;
        assert_eq!(cache.claim("k", [1; 32], T, last), Err(Refused::Replayed));
        assert_eq!(cache.claim("k", [2; 32], T, T), Ok(()));
        // A request from the verifier's future stays remembered until its own time is past.
        assert_eq!(cache.claim("k", [3; 32], T + 300, T), Ok(()));
        assert_eq!(
            cache.claim("k", [3; 32], T + 300, T + 599),
            Err(Refused::Replayed)
        );
    }

    #[test]
    fn a_full_cache_refuses_new_signatures_and_forgets_expired_ones() {
        let cache = ReplayCache::new(2, 2);
        assert_eq!(cache.claim("a", [1; 32], T, T), Ok(()));
        assert_eq!(cache.claim("b", [2; 32], T + 10, T), Ok(()));
        assert_eq!(cache.claim("c", [3; 32], T, T), Err(Refused::Full));
        // The refused one was not remembered, and the remembered ones were not dropped.
        assert_eq!(cache.claim("a", [1; 32], T, T + 5), Err(Refused::Replayed));
        // Once the first is out of the window there is room again.
        let later = T + MAX_CLOCK_SKEW_SECONDS + 1;
        assert_eq!(cache.claim("c", [3; 32], later, later), Ok(()));
        assert_eq!(cache.claim("c", [4; 32], later, later), Err(Refused::Full));
    }

    #[test]
    fn one_key_over_its_share_does_not_throttle_another() {
        let cache = ReplayCache::new(8, 3);
        for n in 1..=3 {
            assert_eq!(cache.claim("greedy", [n; 32], T, T), Ok(()));
        }
        assert_eq!(cache.check("greedy", &[4; 32], T), Err(Refused::KeyShare));
        assert_eq!(cache.claim("greedy", [4; 32], T, T), Err(Refused::KeyShare));
        assert_eq!(cache.check("other", &[4; 32], T), Ok(()));
        assert_eq!(cache.claim("other", [4; 32], T, T), Ok(()));
        // A replay is told as one whoever sends it.
        assert_eq!(cache.check("other", &[1; 32], T), Err(Refused::Replayed));
        // The greedy key's share comes back as its signatures expire.
        let later = T + MAX_CLOCK_SKEW_SECONDS + 1;
        assert_eq!(cache.claim("greedy", [5; 32], later, later), Ok(()));
    }

    #[test]
    fn a_check_takes_no_room() {
        let cache = ReplayCache::new(1, 1);
        for n in 1..=5 {
            assert_eq!(cache.check("k", &[n; 32], T), Ok(()));
        }
        assert_eq!(cache.claim("k", [6; 32], T, T), Ok(()));
        assert_eq!(cache.check("j", &[7; 32], T), Err(Refused::Full));
    }
}
