//! Session encryption (PROTOCOL.md §8.4): AES-256-GCM with the 64-byte KMS data key split per
//! direction, payloads laid out as `nonce (12) ‖ ciphertext ‖ tag (16)`, no associated data.
//!
//! Improvements over the reference that stay compatible on the wire: we send with a counter
//! nonce (never reused, whatever the message count), and refuse a nonce the peer already used
//! for another message.

use std::collections::{HashSet, VecDeque};
use std::fmt;

use bytes::Bytes;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Bytes of a KMS data key: two AES-256 keys.
pub const DATA_KEY_LEN: usize = 64;
/// Bytes added to every encrypted payload.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const TAG_LEN: usize = 16;
/// How many of the peer's recent nonces are remembered to refuse replays.
const REPLAY_WINDOW: usize = 16_384;

/// Which end of the session holds the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We are the client: we seal with bytes 32..64 and open with bytes 0..32.
    Client,
    /// We are the agent: we seal with bytes 0..32 and open with bytes 32..64.
    Agent,
}

/// Why a payload could not be opened. The payload must not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Shorter than nonce + tag (the reference panics here).
    #[error("encrypted payload of {len} bytes is shorter than nonce and tag (28)")]
    TooShort {
        /// Bytes in the payload.
        len: usize,
    },
    /// Authentication failed: wrong key, or the payload was altered.
    #[error("encrypted payload failed authentication: wrong key or altered in transit")]
    Authentication,
    /// The peer reused a nonce it had used for another message: a replay.
    #[error("the peer reused a nonce: replayed or forged payload refused")]
    ReplayedNonce,
}

/// The two directional keys of one session plus nonce state.
pub struct Cipher {
    seal: LessSafeKey,
    open: LessSafeKey,
    next_nonce: [u8; NONCE_LEN],
    seen: HashSet<[u8; NONCE_LEN]>,
    seen_order: VecDeque<[u8; NONCE_LEN]>,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher { .. }")
    }
}

impl Cipher {
    /// Splits `data_key` for `direction`; `initial_nonce` must be random.
    pub fn new(
        data_key: &[u8; DATA_KEY_LEN],
        direction: Direction,
        initial_nonce: [u8; NONCE_LEN],
    ) -> Cipher {
        let (agent_to_client, client_to_agent) = data_key.split_at(32);
        let (seal, open) = match direction {
            Direction::Client => (client_to_agent, agent_to_client),
            Direction::Agent => (agent_to_client, client_to_agent),
        };
        let key = |bytes: &[u8]| {
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256 key"))
        };
        Cipher {
            seal: key(seal),
            open: key(open),
            next_nonce: initial_nonce,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// Encrypts `plaintext` with the next counter nonce.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(plaintext, &mut out);
        out
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` of `plaintext` to `out`, encrypting in place there.
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce = self.next_nonce;
        increment_le96(&mut self.next_nonce);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .seal
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut out[start..],
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        out.extend_from_slice(tag.as_ref());
    }

    /// Decrypts a payload from the peer, refusing reused nonces.
    pub fn open(&mut self, payload: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = nonce_of(payload)?;
        let mut buffer = payload[NONCE_LEN..].to_vec();
        let len = self.open_in_place(nonce, &mut buffer)?;
        buffer.truncate(len);
        Ok(buffer)
    }

    /// Decrypts a received payload, in its own buffer when nothing else shares it.
    pub fn open_bytes(&mut self, payload: Bytes) -> Result<Bytes, CryptoError> {
        match payload.try_into_mut() {
            Ok(mut buffer) => {
                let nonce = nonce_of(&buffer)?;
                let len = self.open_in_place(nonce, &mut buffer[NONCE_LEN..])?;
                Ok(buffer.freeze().slice(NONCE_LEN..NONCE_LEN + len))
            }
            Err(shared) => self.open(&shared).map(Bytes::from),
        }
    }

    /// Decrypts `ciphertext ‖ tag` in place; the plaintext is its first `len` bytes.
    fn open_in_place(
        &mut self,
        nonce: [u8; NONCE_LEN],
        sealed: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if self.seen.contains(&nonce) {
            return Err(CryptoError::ReplayedNonce);
        }
        let len = self
            .open
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), sealed)
            .map_err(|_| CryptoError::Authentication)?
            .len();
        self.seen.insert(nonce);
        self.seen_order.push_back(nonce);
        if self.seen_order.len() > REPLAY_WINDOW
            && let Some(oldest) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        Ok(len)
    }
}

fn nonce_of(payload: &[u8]) -> Result<[u8; NONCE_LEN], CryptoError> {
    if payload.len() < OVERHEAD {
        return Err(CryptoError::TooShort { len: payload.len() });
    }
    let mut nonce = [0; NONCE_LEN];
    nonce.copy_from_slice(&payload[..NONCE_LEN]);
    Ok(nonce)
}

/// The agent's nonce counter (PROTOCOL.md §8.4): three 32-bit little-endian words, incremented as
/// one little-endian 96-bit integer.
fn increment_le96(nonce: &mut [u8; NONCE_LEN]) {
    for byte in nonce.iter_mut() {
        let (next, carry) = byte.overflowing_add(1);
        *byte = next;
        if !carry {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; DATA_KEY_LEN] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn counter_carries_little_endian() {
        let mut nonce = [0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        increment_le96(&mut nonce);
        assert_eq!(nonce, [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut top = [0xff; NONCE_LEN];
        increment_le96(&mut top);
        assert_eq!(top, [0; NONCE_LEN]);
    }

    #[test]
    fn each_direction_opens_what_the_other_seals() {
        let mut client = Cipher::new(&key(), Direction::Client, [1; 12]);
        let mut agent = Cipher::new(&key(), Direction::Agent, [2; 12]);
        let sealed = client.seal(b"ls\r");
        assert_eq!(sealed.len(), 3 + OVERHEAD);
        assert_eq!(agent.open(&sealed).unwrap(), b"ls\r");
        // A client cannot open its own direction.
        let own = client.seal(b"x");
        assert_eq!(client.open(&own), Err(CryptoError::Authentication));
        assert_eq!(client.open(&agent.seal(b"out")).unwrap(), b"out");
    }

    #[test]
    fn refuses_short_tampered_and_replayed_payloads() {
        let mut client = Cipher::new(&key(), Direction::Client, [1; 12]);
        let mut agent = Cipher::new(&key(), Direction::Agent, [2; 12]);
        assert_eq!(agent.open(&[0; 27]), Err(CryptoError::TooShort { len: 27 }));
        let mut sealed = client.seal(b"data");
        let replay = sealed.clone();
        assert_eq!(agent.open(&sealed).unwrap(), b"data");
        assert_eq!(agent.open(&replay), Err(CryptoError::ReplayedNonce));
        sealed = client.seal(b"data");
        sealed[13] ^= 1;
        assert_eq!(agent.open(&sealed), Err(CryptoError::Authentication));
    }

    #[test]
    fn received_payloads_decrypt_in_place_unless_shared() {
        let mut client = Cipher::new(&key(), Direction::Client, [1; 12]);
        let mut agent = Cipher::new(&key(), Direction::Agent, [2; 12]);
        let unique = Bytes::from(client.seal(b"in place"));
        let start = unique.as_ptr();
        let opened = agent.open_bytes(unique).unwrap();
        assert_eq!(&opened[..], b"in place");
        assert_eq!(opened.as_ptr(), start.wrapping_add(NONCE_LEN), "no copy");
        let shared = Bytes::from(client.seal(b"copied"));
        let kept = shared.clone();
        assert_eq!(&agent.open_bytes(shared).unwrap()[..], b"copied");
        let mut fresh = Cipher::new(&key(), Direction::Agent, [3; 12]);
        assert_eq!(
            fresh.open(&kept).unwrap(),
            b"copied",
            "the other owner's bytes are intact"
        );
    }

    #[test]
    fn sent_nonces_never_repeat() {
        let mut client = Cipher::new(&key(), Direction::Client, [0xfe; 12]);
        let nonces: HashSet<Vec<u8>> = (0..1000).map(|_| client.seal(b"")[..12].to_vec()).collect();
        assert_eq!(nonces.len(), 1000);
    }
}
