//! What kind of session a data channel carries: the document's `sessionType`, and for `Port`
//! sessions how the client forwards (PROTOCOL.md §9.2). Both ends and the gateway decide by these.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A document's `sessionType`; the serde and [`as_str`](Self::as_str) forms are the wire
/// strings (`Standard_Stream`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SessionType {
    /// `Standard_Stream`: an interactive shell (the default of shell documents and of the
    /// legacy no-handshake path, PROTOCOL.md §6.3).
    #[default]
    #[serde(rename = "Standard_Stream")]
    StandardStream,
    /// `InteractiveCommands`: one command in a terminal.
    InteractiveCommands,
    /// `NonInteractiveCommands`: one command, output only.
    NonInteractiveCommands,
    /// `Port`: TCP forwarding.
    Port,
}

impl SessionType {
    /// All four, in AWS's order.
    pub const ALL: [SessionType; 4] = [
        SessionType::StandardStream,
        SessionType::InteractiveCommands,
        SessionType::NonInteractiveCommands,
        SessionType::Port,
    ];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::StandardStream => "Standard_Stream",
            SessionType::InteractiveCommands => "InteractiveCommands",
            SessionType::NonInteractiveCommands => "NonInteractiveCommands",
            SessionType::Port => "Port",
        }
    }

    /// The type a wire string names (exact match, as the Go peers compare).
    ///
    /// # Examples
    ///
    /// ```
    /// use ssm_session::session::SessionType;
    ///
    /// assert_eq!(SessionType::from_wire("Port"), Some(SessionType::Port));
    /// assert_eq!(SessionType::from_wire("port"), None);
    /// ```
    pub fn from_wire(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

impl fmt::Display for SessionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client and agent treat a `Port` session (PROTOCOL.md §9.2), from the `type` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortKind {
    /// `type` is `LocalPortForwarding`: the client listens locally (basic or mux mode).
    LocalPortForwarding,
    /// Any other `type`, usually absent as in `AWS-StartSSHSession`: the client forwards its
    /// stdin/stdout (standard-stream mode) and the agent uses basic mode.
    Standard,
}

impl PortKind {
    /// The kind a session's `properties` ask for (their `type`).
    pub fn from_properties(properties: Option<&serde_json::Value>) -> PortKind {
        match properties
            .and_then(|properties| properties.get("type"))
            .and_then(serde_json::Value::as_str)
        {
            Some("LocalPortForwarding") => PortKind::LocalPortForwarding,
            _ => PortKind::Standard,
        }
    }
}
