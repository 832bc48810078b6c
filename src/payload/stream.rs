//! Small stream payloads: terminal size, flags and exit codes (PROTOCOL.md §5.7).

use std::fmt;

use super::PayloadError;
use super::gojson::go_struct;

go_struct! {
    /// PayloadType 3, client → agent: the terminal size. Never encrypted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct TerminalSize {
        /// Columns.
        "cols" => pub cols: u32,
        /// Rows.
        "rows" => pub rows: u32,
    }
}

/// PayloadType 10: a 4-byte big-endian flag value. Never encrypted.
///
/// # Examples
///
/// ```
/// use ssm_session::payload::Flag;
///
/// assert_eq!(Flag::TerminateSession.to_bytes(), [0, 0, 0, 2]);
/// assert_eq!(Flag::decode(&[0, 0, 0, 3])?, Flag::ConnectToPortError);
/// # Ok::<(), ssm_session::payload::PayloadError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Flag {
    /// Client → agent: the local connection closed (basic port forwarding).
    DisconnectToPort,
    /// Client → agent: end the session.
    TerminateSession,
    /// Agent → client: the destination port could not be reached.
    ConnectToPortError,
    /// A value this crate does not know.
    Other(u32),
}

impl Flag {
    /// The payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        u32::from(self).to_be_bytes()
    }

    /// Reads a flag payload. Like the reference, only the first 4 bytes count; fewer is an
    /// error (the reference panics).
    pub fn decode(payload: &[u8]) -> Result<Flag, PayloadError> {
        let Some(value) = payload.first_chunk::<4>() else {
            return Err(PayloadError::FlagTooShort { len: payload.len() });
        };
        Ok(u32::from_be_bytes(*value).into())
    }
}

impl From<u32> for Flag {
    fn from(value: u32) -> Self {
        match value {
            1 => Flag::DisconnectToPort,
            2 => Flag::TerminateSession,
            3 => Flag::ConnectToPortError,
            other => Flag::Other(other),
        }
    }
}

impl From<Flag> for u32 {
    fn from(flag: Flag) -> u32 {
        match flag {
            Flag::DisconnectToPort => 1,
            Flag::TerminateSession => 2,
            Flag::ConnectToPortError => 3,
            Flag::Other(other) => other,
        }
    }
}

/// PayloadType 12: the exit status of a NonInteractiveCommands session, sent as the text
/// `EXIT_CODE: <n>`.
///
/// # Examples
///
/// ```
/// use ssm_session::payload::ExitCode;
///
/// assert_eq!(ExitCode(127).to_string(), "EXIT_CODE: 127");
/// assert_eq!(ExitCode::decode(b"EXIT_CODE: 0")?, ExitCode(0));
/// # Ok::<(), ssm_session::payload::PayloadError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitCode(pub i32);

impl ExitCode {
    const PREFIX: &str = "EXIT_CODE: ";

    /// Reads `EXIT_CODE: <n>`; surrounding whitespace is tolerated.
    pub fn decode(payload: &[u8]) -> Result<ExitCode, PayloadError> {
        std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.trim().strip_prefix(Self::PREFIX))
            .and_then(|number| number.trim().parse().ok())
            .map(ExitCode)
            .ok_or(PayloadError::InvalidExitCode)
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}
