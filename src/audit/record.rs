//! What one log line says, and how it is hashed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// What the first record's `prev` is the SHA-256 of. Versioned so that a future format starts
/// a chain no old log can be mistaken for.
pub const GENESIS: &str = "ssm-session audit log v1";

/// The longest line [`verify`](super::verify) reads. Bounding it lets a hostile file cost at
/// most this much memory per line.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The longest text a string field keeps; longer values are cut when appended (and say so).
/// Peers supply some of these strings: without a cap, an oversized one could push its record
/// past [`MAX_LINE_BYTES`] and keep it out of the log. Twelve fields of this size, even
/// escaped six-fold, stay under that limit.
pub const MAX_FIELD_BYTES: usize = 8 * 1024;

/// Declares a closed enum whose log names live in one place: `as_str`, `Display` and serde
/// all use them, and reading refuses any other name.
macro_rules! closed_enum {
    ($(#[$attr:meta])* $name:ident { $($(#[$vattr:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vattr])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name written in the log.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                match name.as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(serde::de::Error::unknown_variant(other, Self::NAMES)),
                }
            }
        }
    };
}

closed_enum! {
    /// What a record is about.
    EventKind {
        /// An API call, with its `decision` and the `reason` for it.
        ApiCall = "api.call",
        /// A session was created.
        SessionStart = "session.start",
        /// A session ended; `end_reason` says why.
        SessionEnd = "session.end",
        /// A session was refused before it started.
        SessionRejected = "session.rejected",
        /// A session's client or agent connection dropped; it may still resume.
        SessionDisconnect = "session.disconnect",
        /// A dropped session connection came back.
        SessionResume = "session.resume",
        /// A forwarded TCP stream opened, to `destination`.
        StreamOpen = "stream.open",
        /// A forwarded TCP stream closed, with its byte counts.
        StreamClose = "stream.close",
        /// A piece of a session recording was stored; `chunk_sha256` is its digest.
        RecordingChunk = "recording.chunk",
        /// The policies were reloaded.
        PolicyReload = "policy.reload",
        /// An agent's control channel opened.
        AgentConnect = "agent.connect",
        /// An agent's control channel closed.
        AgentDisconnect = "agent.disconnect",
    }
}

closed_enum! {
    /// Why a session ended: a closed set, so reports can count them.
    EndReason {
        /// The client ended it.
        ClientExit = "client_exit",
        /// The shell or command exited.
        ProcessExit = "process_exit",
        /// No input for the idle timeout.
        IdleTimeout = "idle_timeout",
        /// The maximum session duration passed.
        MaxDuration = "max_duration",
        /// A policy change revoked it.
        Revoked = "revoked",
        /// `TerminateSession` ended it.
        Terminated = "terminated",
        /// A side disconnected and did not come back in time.
        NetworkLost = "network_lost",
        /// The agent went away.
        AgentLost = "agent_lost",
        /// The gateway shut down.
        GatewayShutdown = "gateway_shutdown",
        /// The agent was stopped (SIGTERM) while the session ran.
        AgentShutdown = "agent_shutdown",
        /// The session never got going (request, spawn or handshake failure).
        HandshakeFailed = "handshake_failed",
    }
}

/// One audit event, before it is chained. Fill the fields that apply and pass it to
/// [`ChainWriter::append`](super::ChainWriter::append).
///
/// There is deliberately no field for tokens, credentials, keys or session bytes: they must
/// never be logged. The field order here is the order in the log (and in the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// What happened.
    pub event: EventKind,
    /// Who: the principal's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// From where: the client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The API action, e.g. `ssm:StartSession`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The target instance (or the resource acted on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The session document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// The session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `allow` or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// What decided: the policy statement, or the error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How a session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// How long the session or stream lasted, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Bytes from the client toward the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_client_to_target: Option<u64>,
    /// Bytes from the target toward the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_target_to_client: Option<u64>,
    /// The shell's or command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `host:port` of a forwarded stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The smux stream id, or a recording chunk's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u64>,
    /// The recording's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// SHA-256 (hex) of a recording chunk, from [`chunk_digest`](super::cast::chunk_digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_sha256: Option<String>,
    /// Size of a recording chunk (or of the whole recording, in `session.end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
    /// Anything else worth reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Record {
    /// A record of `event` with every other field empty.
    pub fn new(event: EventKind) -> Record {
        Record {
            event,
            principal: None,
            source: None,
            action: None,
            target: None,
            document: None,
            session_id: None,
            decision: None,
            reason: None,
            end_reason: None,
            duration_ms: None,
            bytes_client_to_target: None,
            bytes_target_to_client: None,
            exit_code: None,
            destination: None,
            stream_id: None,
            recording: None,
            chunk_sha256: None,
            chunk_bytes: None,
            detail: None,
        }
    }

    /// Cuts every string field to [`MAX_FIELD_BYTES`] (on a character boundary), noting how
    /// much was dropped, so that any record fits in a line.
    pub(super) fn cut_long_fields(&mut self) {
        let fields = [
            &mut self.principal,
            &mut self.source,
            &mut self.action,
            &mut self.target,
            &mut self.document,
            &mut self.session_id,
            &mut self.decision,
            &mut self.reason,
            &mut self.destination,
            &mut self.recording,
            &mut self.chunk_sha256,
            &mut self.detail,
        ];
        for text in fields.into_iter().flatten() {
            if text.len() > MAX_FIELD_BYTES {
                let keep = text.floor_char_boundary(MAX_FIELD_BYTES);
                let dropped = text.len() - keep;
                text.truncate(keep);
                text.push_str(&format!("…[{dropped} more bytes cut]"));
            }
        }
    }
}

/// One line of the log: a record with its place in the chain. Serialised with
/// `serde_json::to_vec`, it is exactly the line (without the newline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// Its index in the log, from 0.
    pub seq: u64,
    /// When it was written: UTC RFC 3339 with milliseconds.
    pub time: String,
    /// What it records.
    #[serde(flatten)]
    pub record: Record,
    /// The previous entry's hash (hex), or the SHA-256 of [`GENESIS`] for the first.
    pub prev: String,
    /// SHA-256 (hex) of `prev` followed by this entry's canonical JSON without `hash`.
    pub hash: String,
}

/// An entry without its hash: the bytes that are hashed.
#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    time: &'a str,
    #[serde(flatten)]
    record: &'a Record,
    prev: &'a str,
}

impl Entry {
    /// The hash this entry must carry, computed from its other fields. Only fails if the
    /// record cannot be serialised, which plain fields cannot cause.
    pub fn expected_hash(&self) -> Result<String, serde_json::Error> {
        let canonical = serde_json::to_vec(&Unsealed {
            seq: self.seq,
            time: &self.time,
            record: &self.record,
            prev: &self.prev,
        })?;
        let mut hash = Sha256::new();
        hash.update(self.prev.as_bytes());
        hash.update(&canonical);
        Ok(hex::encode(hash.finalize()))
    }
}

/// The last entry of a log: what the next one chains from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
}

/// The `prev` of the first entry.
pub(super) fn genesis_hash() -> String {
    hex::encode(Sha256::digest(GENESIS.as_bytes()))
}
