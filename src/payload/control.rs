//! Messages about the channel rather than the session: opening it, its state, its closing
//! (PROTOCOL.md §5.2, §5.4, §5.6).

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::gojson::go_struct;

/// The `MessageSchemaVersion` both reference peers send when opening a data channel.
pub const MESSAGE_SCHEMA_VERSION: &str = "1.0";

go_struct! {
    /// The client's first websocket TEXT message on every (re)connect (PROTOCOL.md §5.2).
    ///
    /// Its `Debug` output hides the token.
    #[derive(Clone, PartialEq, Eq, Default)]
    pub struct OpenDataChannelInput {
        /// Always `"1.0"`.
        "MessageSchemaVersion" => pub message_schema_version: String,
        /// A fresh random UUID per connection.
        "RequestId" => pub request_id: String,
        /// The `TokenValue` of the latest StartSession/ResumeSession answer. Secret.
        "TokenValue" => pub token_value: String,
        /// A random UUID chosen once per client process.
        "ClientId" => pub client_id: String,
        /// The client's 4-part version, e.g. `1.2.677.0`.
        "ClientVersion" => pub client_version: String,
    }
}

go_struct! {
    /// The agent's first websocket TEXT message (PROTOCOL.md §5.2).
    ///
    /// Its `Debug` output hides the token.
    #[derive(Clone, PartialEq, Eq, Default)]
    pub struct AgentOpenDataChannelInput {
        /// Always `"1.0"`.
        "MessageSchemaVersion" => pub message_schema_version: String,
        /// A fresh random UUID per connection.
        "RequestId" => pub request_id: String,
        /// The token from CreateDataChannel. Secret.
        "TokenValue" => pub token_value: String,
        /// The instance id, e.g. `i-0123456789abcdef0` or `mi-…`.
        "ClientInstanceId" => pub client_instance_id: String,
        /// The empty string from the reference agent.
        "ClientId" => pub client_id: String,
    }
}

impl fmt::Debug for OpenDataChannelInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenDataChannelInput")
            .field("message_schema_version", &self.message_schema_version)
            .field("request_id", &self.request_id)
            .field("token_value", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("client_version", &self.client_version)
            .finish()
    }
}

impl fmt::Debug for AgentOpenDataChannelInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentOpenDataChannelInput")
            .field("message_schema_version", &self.message_schema_version)
            .field("request_id", &self.request_id)
            .field("token_value", &"<redacted>")
            .field("client_instance_id", &self.client_instance_id)
            .field("client_id", &self.client_id)
            .finish()
    }
}

go_struct! {
    /// `channel_closed` payload from the gateway (PROTOCOL.md §5.4), in the client's field order.
    ///
    /// Decoding also accepts the agent's shape (other order, no `Output`) and a numeric
    /// `CreatedDate`, whose format the reference code never shows.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct ChannelClosed {
        /// Id of the closing message.
        "MessageId" => pub message_id: String,
        /// Epoch milliseconds, as a string.
        #[serde(deserialize_with = "string_or_number")]
        "CreatedDate" => pub created_date: String,
        /// The target.
        "DestinationId" => pub destination_id: String,
        /// The session being closed.
        "SessionId" => pub session_id: String,
        /// `"channel_closed"`.
        "MessageType" => pub message_type: String,
        /// 1.
        "SchemaVersion" => pub schema_version: u32,
        /// Text the client shows instead of the default goodbye; may be empty.
        "Output" => pub output: String,
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Number(serde_json::Number),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::String(text) => text,
        Text::Number(number) => number.to_string(),
    })
}

go_struct! {
    /// Payload of `agent_session_state`, agent → gateway (PROTOCOL.md §5.6).
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct AgentSessionState {
        /// 1.
        "SchemaVersion" => pub schema_version: u32,
        /// [`AgentSessionState::CONNECTED`] or [`AgentSessionState::TERMINATING`].
        "SessionState" => pub session_state: String,
        /// The session.
        "SessionId" => pub session_id: String,
    }
}

impl AgentSessionState {
    /// Sent as soon as the agent's data channel is open.
    pub const CONNECTED: &str = "Connected";
    /// Sent when a shell or command session ends normally.
    pub const TERMINATING: &str = "Terminating";
}
