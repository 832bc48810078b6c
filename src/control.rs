//! The control channel between an agent and the gateway (PROTOCOL.md §11): the agent's opening
//! message and the binary messages both ways, as typed values.
//!
//! Messages travel in the ordinary frame of PROTOCOL.md §3 (sequence 0, no payload type) over a
//! websocket the agent dials out to `/v1/control-channel/<agent-id>`:
//!
//! | direction | MessageType | payload |
//! |---|---|---|
//! | gateway → agent | `interactive_shell` | [`StartSession`]: the document of PROTOCOL.md §11.2 |
//! | gateway → agent | `channel_closed` | [`ChannelClosed`]: stop the session |
//! | agent → gateway | `agent_task_complete` | [`SessionReport`]: PROTOCOL.md §11.3, with our fields |
//! | agent → gateway | `agent_session_recording` | [`RecordingChunk`]: asciicast lines of a plaintext session, streamed live |
//! | agent → gateway | `agent_port_stream` | [`StreamReport`]: a forwarded TCP stream opened or closed |
//!
//! The agent authenticates with a SigV4 signature on the upgrade request (service
//! `ssmmessages`, its id as the access key id) and gets each session's data-channel token
//! from a signed `POST /v1/data-channel/<session-id>`, as AWS agents call `CreateDataChannel`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::payload::{ChannelClosed, JsonPayload};
use crate::{Frame, MessageType, PayloadType, SCHEMA_VERSION};

/// Path prefix of control-channel upgrades; the agent id follows.
pub const PATH_PREFIX: &str = "/v1/control-channel/";

/// Why a control message could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Not a valid frame.
    #[error("bad control frame: {0}")]
    Frame(#[from] crate::DecodeError),
    /// A known type whose JSON does not match.
    #[error("bad {message_type} payload: {error}")]
    Payload {
        /// The frame's MessageType.
        message_type: String,
        /// What serde said.
        error: String,
    },
    /// A type this side does not handle.
    #[error("unexpected control message {0}")]
    Unexpected(String),
}

/// The agent's first text message (PROTOCOL.md §11.1). The stock Go agent also sends
/// `TokenValue` (from `CreateControlChannel`) and `Cookie`; the upgrade is signed, so neither
/// is needed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpenControlChannelInput {
    /// Always `"1.0"`.
    pub message_schema_version: String,
    /// Fresh per connection.
    pub request_id: String,
    /// The agent's version.
    pub agent_version: String,
    /// `linux`, `windows` or `macos`.
    pub platform_type: String,
    /// What this agent does beyond the reference wire ([`EXTENSIONS`] for ours); empty for
    /// the stock Go agent, which sends no recordings, stream records or exit codes, so the
    /// gateway records what it relays for it instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

/// What this crate's agent announces in [`OpenControlChannelInput::extensions`]: it reports
/// exit codes and end reasons, streams or keeps its sessions' recordings
/// (`agent_session_recording`) and reports each forwarded stream (`agent_port_stream`).
pub const EXTENSIONS: &str = "ssm-session/1";

/// Gateway → agent: run a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartSession {
    /// The session id.
    pub task_id: String,
    /// The PROTOCOL.md §11.2 `Content` (document name and content, parameters, run-as, owner), as
    /// a JSON string, exactly as AWS nests it.
    pub content: String,
    /// `interactive_shell`.
    pub topic: String,
    /// Always 1.
    pub schema_version: u32,
}

/// How a session ended: the audit log's closed set, which the agent reports as it saw it.
pub use crate::audit::EndReason;

/// Agent → gateway: a session finished (PROTOCOL.md §11.3, plus our fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionReport {
    /// Always 1.
    pub schema_version: u32,
    /// The session id.
    pub task_id: String,
    /// `agent_task_complete`.
    pub topic: String,
    /// `Success`, `Failed`, `TimedOut` or `Cancelled`.
    pub final_task_status: String,
    /// Always false here.
    pub is_routing_failure: bool,
    /// The agent's id.
    pub instance_id: String,
    /// Error text for failed sessions, else empty.
    pub output: String,
    /// The command's exit code, for shell and command sessions.
    pub exit_code: Option<i32>,
    /// Why the session ended.
    pub end_reason: EndReason,
    /// The recording the agent kept on its own disk (encrypted sessions), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingSummary>,
}

impl SessionReport {
    /// A report for `session_id` on `instance_id`.
    pub fn new(
        session_id: &str,
        instance_id: &str,
        end_reason: EndReason,
        exit_code: Option<i32>,
        output: String,
    ) -> Self {
        let final_task_status = match end_reason {
            EndReason::ProcessExit | EndReason::ClientExit => "Success",
            EndReason::IdleTimeout | EndReason::MaxDuration => "TimedOut",
            EndReason::Terminated
            | EndReason::Revoked
            | EndReason::GatewayShutdown
            | EndReason::AgentShutdown => "Cancelled",
            _ => "Failed",
        };
        SessionReport {
            schema_version: 1,
            task_id: session_id.to_owned(),
            topic: "agent_task_complete".into(),
            final_task_status: final_task_status.into(),
            is_routing_failure: false,
            instance_id: instance_id.to_owned(),
            output,
            exit_code,
            end_reason,
            recording: None,
        }
    }
}

/// What the gateway learns of a recording kept on the agent: enough to audit it, nothing of
/// its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecordingSummary {
    /// The file on the agent's host.
    pub path: String,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// How many writes it took (as chunks count for recordings sent to the gateway).
    pub chunks: u64,
    /// Why the recording is incomplete (a write failed); empty when it is whole.
    pub error: String,
}

/// Agent → gateway: the next piece of a session's asciicast v2 recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecordingChunk {
    /// The session id.
    pub session_id: String,
    /// 0 for the chunk holding the header line, then 1, 2, …
    pub index: u64,
    /// Whole lines, each ending in `\n`.
    pub lines: String,
}

/// Agent → gateway: a forwarded TCP stream opened or closed (one audit record each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamReport {
    /// The session id.
    pub session_id: String,
    /// The smux stream id, or 0 for a basic-mode connection.
    pub stream_id: u64,
    /// `host:port` dialled.
    pub destination: String,
    /// False when opened (or refused), true when closed.
    pub closed: bool,
    /// Bytes written to the destination.
    pub bytes_to_destination: u64,
    /// Bytes read from the destination.
    pub bytes_from_destination: u64,
    /// How long the stream was open.
    pub duration_ms: u64,
    /// Close reason or dial error; empty when there is nothing to say.
    pub detail: String,
}

/// A message on the control channel.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ControlMessage {
    /// Gateway → agent.
    StartSession(StartSession),
    /// Gateway → agent.
    ChannelClosed(ChannelClosed),
    /// Agent → gateway.
    SessionReport(SessionReport),
    /// Agent → gateway.
    Recording(RecordingChunk),
    /// Agent → gateway.
    Stream(StreamReport),
}

impl ControlMessage {
    /// The binary websocket message carrying this, with the caller's id and wall clock.
    pub fn encode(&self, message_id: Uuid, wall_ms: u64) -> Bytes {
        let (message_type, payload) = match self {
            ControlMessage::StartSession(start) => {
                (MessageType::InteractiveShell, json(start).into_bytes())
            }
            ControlMessage::ChannelClosed(closed) => (MessageType::ChannelClosed, closed.to_json()),
            ControlMessage::SessionReport(report) => {
                (MessageType::AgentTaskComplete, json(report).into_bytes())
            }
            ControlMessage::Recording(chunk) => {
                (MessageType::AgentSessionRecording, json(chunk).into_bytes())
            }
            ControlMessage::Stream(report) => {
                (MessageType::AgentPortStream, json(report).into_bytes())
            }
        };
        Frame {
            message_type,
            schema_version: SCHEMA_VERSION,
            created_date: wall_ms.max(1),
            sequence_number: 0,
            flags: 0,
            message_id,
            payload_type: PayloadType::Unset,
            payload: payload.into(),
        }
        .to_bytes()
        .expect("control payloads are far below the frame limits")
    }

    /// Reads one binary websocket message.
    pub fn decode(message: Bytes) -> Result<ControlMessage, ControlError> {
        let frame = Frame::decode(message)?;
        let payload = &frame.payload[..];
        let bad = |error: String| ControlError::Payload {
            message_type: frame.message_type.to_string(),
            error,
        };
        Ok(match frame.message_type {
            MessageType::InteractiveShell => ControlMessage::StartSession(
                serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?,
            ),
            MessageType::ChannelClosed => ControlMessage::ChannelClosed(
                ChannelClosed::from_json(payload).map_err(|e| bad(e.to_string()))?,
            ),
            MessageType::AgentTaskComplete => ControlMessage::SessionReport(
                serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?,
            ),
            MessageType::AgentSessionRecording => ControlMessage::Recording(
                serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?,
            ),
            MessageType::AgentPortStream => ControlMessage::Stream(
                serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?,
            ),
            other => return Err(ControlError::Unexpected(other.to_string())),
        })
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plain structs always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let messages = [
            ControlMessage::StartSession(StartSession {
                task_id: "alice-0123".into(),
                content: r#"{"SessionId":"alice-0123"}"#.into(),
                topic: "interactive_shell".into(),
                schema_version: 1,
            }),
            ControlMessage::ChannelClosed(ChannelClosed {
                session_id: "alice-0123".into(),
                output: "revoked".into(),
                ..Default::default()
            }),
            ControlMessage::SessionReport(SessionReport::new(
                "alice-0123",
                "mi-1",
                EndReason::ProcessExit,
                Some(3),
                String::new(),
            )),
            ControlMessage::SessionReport(SessionReport {
                recording: Some(RecordingSummary {
                    path: "/var/lib/ssm-agent/recordings/alice-0123.cast".into(),
                    sha256: "ab".repeat(32),
                    bytes: 10,
                    chunks: 2,
                    error: String::new(),
                }),
                ..SessionReport::new(
                    "alice-0123",
                    "mi-1",
                    EndReason::ClientExit,
                    None,
                    String::new(),
                )
            }),
            ControlMessage::Recording(RecordingChunk {
                session_id: "alice-0123".into(),
                index: 4,
                lines: "[0.5, \"o\", \"$ \"]\n".into(),
            }),
            ControlMessage::Stream(StreamReport {
                session_id: "alice-0123".into(),
                stream_id: 3,
                destination: "127.0.0.1:22".into(),
                closed: true,
                bytes_to_destination: 10,
                bytes_from_destination: 20,
                duration_ms: 5,
                detail: "peer closed".into(),
            }),
        ];
        for message in messages {
            let wire = message.encode(Uuid::from_u128(9), 1_700_000_000_000);
            assert_eq!(ControlMessage::decode(wire).unwrap(), message);
        }
    }

    #[test]
    fn foreign_and_broken_messages_are_refused() {
        let frame = |message_type, payload: &'static [u8]| {
            Frame {
                message_type,
                schema_version: 1,
                created_date: 1,
                sequence_number: 0,
                flags: 0,
                message_id: Uuid::from_u128(1),
                payload_type: PayloadType::Unset,
                payload: Bytes::from_static(payload),
            }
            .to_bytes()
            .unwrap()
        };
        assert!(matches!(
            ControlMessage::decode(frame(MessageType::AgentJob, b"{}")),
            Err(ControlError::Unexpected(_))
        ));
        assert!(matches!(
            ControlMessage::decode(frame(MessageType::AgentTaskComplete, b"{")),
            Err(ControlError::Payload { .. })
        ));
        assert!(matches!(
            ControlMessage::decode(Bytes::from_static(b"short")),
            Err(ControlError::Frame(_))
        ));
    }
}
