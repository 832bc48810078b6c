//! Key management outside the session core (PROTOCOL.md §8.2).
//!
//! The session never calls KMS: it emits [`crate::session::Event::KeyRequest`] and is answered
//! with a command. A [`KeyProvider`] is what applications and adapters answer with; [`LocalKms`]
//! is the embedded one, used wherever no other KMS is configured.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::crypto::DATA_KEY_LEN;

/// Context key naming the session.
pub const CONTEXT_SESSION_ID: &str = "aws:ssm:SessionId";
/// Context key naming the target (the client's `Target`, the agent's instance id).
pub const CONTEXT_TARGET_ID: &str = "aws:ssm:TargetId";
/// Context key carrying the agent's challenge when the client acknowledges it.
pub const CONTEXT_RANDOM_CHALLENGE: &str = "aws:ssm:RandomChallenge";

/// A KMS encryption context: string pairs bound to the ciphertext.
pub type EncryptionContext = BTreeMap<String, String>;

/// A fresh data key: the plaintext for the session and the blob only KMS can open.
#[derive(Clone)]
pub struct DataKey {
    /// The 64 key bytes (never logged).
    pub plaintext: [u8; DATA_KEY_LEN],
    /// The KMS `CiphertextBlob`, sent to the agent.
    pub ciphertext_blob: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"<redacted>")
            .field("ciphertext_blob_len", &self.ciphertext_blob.len())
            .finish()
    }
}

/// Why a key operation failed; the text goes into the handshake error the peer sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// The blob does not open under this key and context (KMS: `InvalidCiphertextException`).
    #[error(
        "InvalidCiphertextException: the ciphertext does not match this key and encryption context"
    )]
    InvalidCiphertext,
    /// The key is not known or not usable.
    #[error("NotFoundException: key {key_id} does not exist")]
    KeyNotFound {
        /// The key asked for.
        key_id: String,
    },
    /// The caller may not use the key.
    #[error("AccessDeniedException: {0}")]
    AccessDenied(String),
    /// The KMS call needs credentials and there are none (or they were not accepted).
    #[error("{0}")]
    NoCredentials(String),
    /// Anything else (transport, service errors), as text.
    #[error("{0}")]
    Other(String),
}

/// The future a [`KeyProvider`] returns.
pub type KmsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KmsError>> + Send + 'a>>;

/// A KMS: generates data keys for clients and decrypts them for agents.
pub trait KeyProvider: Send + Sync {
    /// `GenerateDataKey` with `NumberOfBytes` 64 under `key_id` and `context`.
    fn generate_data_key<'a>(
        &'a self,
        key_id: &'a str,
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, DataKey>;

    /// `Decrypt` of `blob` under `key_id` and `context`; the 64 key bytes.
    fn decrypt<'a>(
        &'a self,
        key_id: &'a str,
        blob: &'a [u8],
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, [u8; DATA_KEY_LEN]>;
}

/// An embedded KMS: one 256-bit master key wraps data keys with AES-256-GCM, the key id and the
/// canonical encryption context as associated data. A blob opens only under the same key id and
/// exactly the same context, as with real KMS.
///
/// # Examples
///
/// ```
/// use ssm_session::kms::{EncryptionContext, LocalKms};
///
/// let kms = LocalKms::from_master_key([7; 32]);
/// let mut context = EncryptionContext::new();
/// context.insert("aws:ssm:SessionId".into(), "s-1".into());
/// let key = kms.generate_data_key_with("alias/dev", &context, [1; 64], [2; 12]);
/// assert_eq!(kms.decrypt_now("alias/dev", &key.ciphertext_blob, &context)?, key.plaintext);
/// context.insert("aws:ssm:TargetId".into(), "i-other".into());
/// assert!(kms.decrypt_now("alias/dev", &key.ciphertext_blob, &context).is_err());
/// # Ok::<(), ssm_session::kms::KmsError>(())
/// ```
pub struct LocalKms {
    master: LessSafeKey,
}

impl fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalKms { .. }")
    }
}

/// Blob layout: magic, key id length (u16 BE), key id, nonce, ciphertext, tag.
const BLOB_MAGIC: &[u8; 4] = b"LKM2";

impl LocalKms {
    /// A KMS whose master key is `master`.
    pub fn from_master_key(master: [u8; 32]) -> LocalKms {
        LocalKms {
            master: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &master).expect("32-byte key")),
        }
    }

    /// A KMS with a master key from the operating system's random source.
    pub fn generate() -> LocalKms {
        Self::from_master_key(system_random())
    }

    /// Loads the 32-byte master key at `path`, creating it (mode 0600 on Unix) if absent.
    pub fn load_or_create(path: &Path) -> std::io::Result<LocalKms> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let master: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{}: a master key file holds 32 bytes, not {}",
                            path.display(),
                            bytes.len()
                        ),
                    )
                })?;
                Ok(Self::from_master_key(master))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let master = system_random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                std::io::Write::write_all(&mut options.open(path)?, &master)?;
                Ok(Self::from_master_key(master))
            }
            Err(error) => Err(error),
        }
    }

    /// Wraps `plaintext` (random in real use) under `key_id` and `context` with `nonce`.
    pub fn generate_data_key_with(
        &self,
        key_id: &str,
        context: &EncryptionContext,
        plaintext: [u8; DATA_KEY_LEN],
        nonce: [u8; NONCE_LEN],
    ) -> DataKey {
        DataKey {
            plaintext,
            ciphertext_blob: self.encrypt_with(key_id, context, &plaintext, nonce),
        }
    }

    /// KMS `Encrypt`: seals `plaintext` under `key_id` and `context` with `nonce` (which must
    /// never repeat under this master key). The blob names its key, so [`LocalKms::open`]
    /// needs only the context, as with AWS KMS.
    pub fn encrypt_with(
        &self,
        key_id: &str,
        context: &EncryptionContext,
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        let id_len = u16::try_from(key_id.len()).expect("key ids are short");
        let mut blob = Vec::with_capacity(6 + key_id.len() + NONCE_LEN + plaintext.len() + 16);
        blob.extend_from_slice(BLOB_MAGIC);
        blob.extend_from_slice(&id_len.to_be_bytes());
        blob.extend_from_slice(key_id.as_bytes());
        blob.extend_from_slice(&nonce);
        let sealed_from = blob.len();
        blob.extend_from_slice(plaintext);
        let tag = self
            .master
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(key_id, context)),
                &mut blob[sealed_from..],
            )
            .expect("AES-GCM seals any plaintext shorter than 64 GiB");
        blob.extend_from_slice(tag.as_ref());
        blob
    }

    /// The key id a blob made by [`LocalKms::encrypt_with`] names, without opening it (so that
    /// a KMS can authorise on the key first); `None` if the blob is not one.
    pub fn blob_key_id(blob: &[u8]) -> Option<&str> {
        let (key_id, _) = split_blob(blob)?;
        std::str::from_utf8(key_id).ok()
    }

    /// KMS `Decrypt`: opens a blob made by this master key under exactly `context`; the key id
    /// it was made under and the plaintext.
    pub fn open(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), KmsError> {
        let (key_id, rest) = split_blob(blob).ok_or(KmsError::InvalidCiphertext)?;
        let key_id = std::str::from_utf8(key_id).map_err(|_| KmsError::InvalidCiphertext)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| KmsError::InvalidCiphertext)?;
        let mut buffer = sealed.to_vec();
        let length = self
            .master
            .open_in_place(
                nonce,
                Aad::from(associated_data(key_id, context)),
                &mut buffer,
            )
            .map_err(|_| KmsError::InvalidCiphertext)?
            .len();
        buffer.truncate(length);
        Ok((key_id.to_owned(), buffer))
    }

    /// Opens a data key made by [`LocalKms::generate_data_key_with`] under `key_id` and
    /// `context`.
    pub fn decrypt_now(
        &self,
        key_id: &str,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<[u8; DATA_KEY_LEN], KmsError> {
        match self.open(blob, context)? {
            (made_under, plaintext) if made_under == key_id => plaintext
                .try_into()
                .map_err(|_| KmsError::InvalidCiphertext),
            _ => Err(KmsError::InvalidCiphertext),
        }
    }
}

impl KeyProvider for LocalKms {
    fn generate_data_key<'a>(
        &'a self,
        key_id: &'a str,
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, DataKey> {
        let plaintext = system_random();
        let nonce = system_random();
        Box::pin(std::future::ready(Ok(
            self.generate_data_key_with(key_id, context, plaintext, nonce)
        )))
    }

    fn decrypt<'a>(
        &'a self,
        key_id: &'a str,
        blob: &'a [u8],
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, [u8; DATA_KEY_LEN]> {
        Box::pin(std::future::ready(self.decrypt_now(key_id, blob, context)))
    }
}

/// A blob's key id and the rest (nonce, ciphertext, tag), if it has the layout of one.
fn split_blob(blob: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = blob.strip_prefix(BLOB_MAGIC)?;
    let (id_len, rest) = rest.split_first_chunk::<2>()?;
    let id_len = usize::from(u16::from_be_bytes(*id_len));
    (rest.len() >= id_len + NONCE_LEN + 16).then(|| rest.split_at(id_len))
}

/// The bytes a wrapped key is bound to: key id and context, length-prefixed so that no two
/// different inputs give the same bytes.
fn associated_data(key_id: &str, context: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |text: &str| {
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    };
    put(key_id);
    for (key, value) in context {
        put(key);
        put(value);
    }
    out
}

fn system_random<const N: usize>() -> [u8; N] {
    ring::rand::generate(&ring::rand::SystemRandom::new())
        .expect("the operating system's random source is available")
        .expose()
}
