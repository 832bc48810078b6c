//! Typed payloads (PROTOCOL.md §5): the JSON control messages and the small binary ones.
//!
//! Every JSON type implements [`JsonPayload`]: [`JsonPayload::to_json`] gives the exact bytes
//! the Go peers emit (field order, `null`s, base64, HTML escaping) and [`JsonPayload::from_json`]
//! accepts what Go accepts (keys in any case, unknown keys, missing keys).
//!
//! ```
//! use ssm_session::payload::{JsonPayload, TerminalSize};
//!
//! let size = TerminalSize { cols: 120, rows: 40 };
//! assert_eq!(size.to_json(), br#"{"cols":120,"rows":40}"#);
//! assert_eq!(TerminalSize::from_json(br#"{"COLS":120,"rows":40,"x":1}"#)?, size);
//! # Ok::<(), ssm_session::payload::PayloadError>(())
//! ```

mod ack;
mod control;
pub(crate) mod gojson;
mod handshake;
mod stream;

pub use ack::Acknowledge;
pub use control::{
    AgentOpenDataChannelInput, AgentSessionState, ChannelClosed, MESSAGE_SCHEMA_VERSION,
    OpenDataChannelInput,
};
pub use handshake::{
    ActionStatus, EncryptionChallenge, Extensions, HandshakeComplete, HandshakeRequest,
    HandshakeResponse, KmsEncryptionRequest, KmsEncryptionResult, ProcessedClientAction, RawJson,
    RequestedClientAction, SessionTypeRequest,
};
pub use stream::{ExitCode, Flag, TerminalSize};

/// A JSON payload with Go-compatible encoding and decoding.
pub trait JsonPayload: serde::Serialize + serde::de::DeserializeOwned + sealed::Sealed {
    /// The exact bytes the Go peers would send for this value.
    fn to_json(&self) -> Vec<u8> {
        gojson::to_vec(self)
    }

    /// Parses a payload as leniently as Go's `encoding/json`.
    fn from_json(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(PayloadError::Json)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not JSON, or a value of the wrong JSON type for its field.
    #[error("invalid JSON payload: {0}")]
    Json(#[source] serde_json::Error),
    /// A Flag payload needs 4 bytes (the reference panics on fewer).
    #[error("flag payload is {len} bytes; a flag is a 4-byte big-endian number")]
    FlagTooShort {
        /// Bytes in the payload.
        len: usize,
    },
    /// An ExitCode payload is not `EXIT_CODE: <decimal>`.
    #[error("exit code payload is not of the form `EXIT_CODE: <n>`")]
    InvalidExitCode,
}
