//! Agents' control channels: which agents are online (and since when they are not), and the
//! messages both ways.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::service::Service;
use super::{lock, wall_ms};
use crate::audit::{EventKind, Record};
use crate::control::{ControlMessage, OpenControlChannelInput};
use crate::net::runtime::random_uuid;

/// Messages queued toward one agent before sends fail (the agent is not reading).
const QUEUE: usize = 256;
/// How long an agent has to send its opening message.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway knows of one agent.
#[derive(Debug, Clone, Default)]
pub(super) struct Presence {
    sender: Option<mpsc::Sender<Bytes>>,
    generation: u64,
    pub(super) connected_since_ms: Option<u64>,
    pub(super) last_seen_ms: u64,
    pub(super) version: String,
    pub(super) platform: String,
    pub(super) address: Option<SocketAddr>,
    /// It announced this crate's extensions ([`crate::control::EXTENSIONS`]): it reports
    /// exit codes, recordings and streams itself. The stock Go agent does not.
    pub(super) extended: bool,
}

impl Presence {
    pub(super) fn online(&self) -> bool {
        self.sender.is_some()
    }
}

#[derive(Default)]
pub(super) struct Registry {
    agents: Mutex<HashMap<String, Presence>>,
}

impl Registry {
    /// Queues `message` for `agent_id`; false when it is offline or not reading.
    pub(super) fn send(&self, agent_id: &str, message: ControlMessage) -> bool {
        let agents = lock(&self.agents);
        let Some(sender) = agents.get(agent_id).and_then(|p| p.sender.as_ref()) else {
            return false;
        };
        sender
            .try_send(message.encode(random_uuid(), wall_ms()))
            .is_ok()
    }

    /// Closes `agent_id`'s control channel (after the messages already queued toward it) and
    /// marks it offline. Returns whether it was online.
    pub(super) fn disconnect(&self, agent_id: &str) -> bool {
        let mut agents = lock(&self.agents);
        let Some(presence) = agents.get_mut(agent_id) else {
            return false;
        };
        presence.connected_since_ms = None;
        presence.last_seen_ms = wall_ms();
        // The channel's task ends when its receiver sees the last sender gone.
        presence.sender.take().is_some()
    }

    /// Whether any agent's control channel is open.
    pub(super) fn any_online(&self) -> bool {
        lock(&self.agents).values().any(Presence::online)
    }

    pub(super) fn presence(&self, agent_id: &str) -> Option<Presence> {
        lock(&self.agents).get(agent_id).cloned()
    }

    pub(super) fn all(&self) -> Vec<(String, Presence)> {
        let mut all: Vec<_> = lock(&self.agents)
            .iter()
            .map(|(id, presence)| (id.clone(), presence.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// A Close that refuses the agent (1008, policy): the agent logs `reason` as a refusal and
/// backs off as for one. A close reason is at most 123 bytes.
fn policy_close(reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: CloseCode::Policy,
        reason: reason[..end].to_owned().into(),
    }
}

impl Service {
    /// Runs an authenticated agent's control channel until it drops, is replaced or the
    /// gateway stops. `key` is the digest of the key its upgrade was signed with: unless the
    /// configuration still holds it when the channel opens, the agent is not registered (a
    /// reload may have removed or re-keyed it meanwhile, and cut off only what was online).
    pub(super) async fn serve_agent<S>(
        self: Arc<Self>,
        mut ws: WebSocketStream<S>,
        agent_id: String,
        key: [u8; 32],
        peer: SocketAddr,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let opening = match tokio::time::timeout(OPEN_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                serde_json::from_str::<OpenControlChannelInput>(text.as_str()).ok()
            }
            _ => None,
        };
        let Some(opening) = opening else {
            tracing::info!(%agent_id, %peer, "control channel refused: no valid opening message");
            let _ = ws
                .close(Some(policy_close("no valid opening message")))
                .await;
            return;
        };
        let (sender, mut outgoing) = mpsc::channel(QUEUE);
        let generation = {
            let mut agents = lock(&self.agents.agents);
            // Checked under the registry's lock: a reload swaps the configuration first and
            // then disconnects what is registered, so it either sees this agent or this sees
            // the new configuration.
            if !self.auth().agent_key_is(&agent_id, &key) {
                drop(agents);
                let why = "its key was removed from the configuration while its channel opened";
                self.control_channel_refused(&agent_id, peer, why, true);
                let told = format!(
                    "agent {agent_id} was removed from this gateway, or its secret changed"
                );
                let _ = ws.close(Some(policy_close(&told))).await;
                return;
            }
            let presence = agents.entry(agent_id.clone()).or_default();
            presence.generation += 1;
            presence.sender = Some(sender);
            presence.connected_since_ms = Some(wall_ms());
            presence.last_seen_ms = wall_ms();
            presence.version = opening.agent_version.clone();
            presence.platform = opening.platform_type.clone();
            presence.address = Some(peer);
            presence.extended = opening
                .extensions
                .iter()
                .any(|extension| extension == crate::control::EXTENSIONS);
            presence.generation
        };
        tracing::info!(
            %agent_id,
            %peer,
            version = %opening.agent_version,
            platform = %opening.platform_type,
            "agent connected"
        );
        let mut record = Record::new(EventKind::AgentConnect);
        record.target = Some(agent_id.clone());
        record.source = Some(peer.to_string());
        record.detail = Some(format!(
            "agent {} on {}",
            opening.agent_version, opening.platform_type
        ));
        self.audit(record);

        let (mut sink, mut stream) = ws.split();
        let why = loop {
            tokio::select! {
                () = self.closing_agents.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    break "the gateway is shutting down";
                }
                message = outgoing.recv() => {
                    let Some(message) = message else { break "replaced by a newer connection, or removed" };
                    if sink.send(Message::Binary(message)).await.is_err() {
                        break "send failed";
                    }
                }
                received = stream.next() => {
                    let message = match received {
                        Some(Ok(Message::Binary(message))) => message,
                        Some(Ok(Message::Close(_))) | None => break "closed by the agent",
                        Some(Err(_)) => break "connection lost",
                        Some(Ok(_)) => continue,
                    };
                    if let Some(presence) = lock(&self.agents.agents).get_mut(&agent_id) {
                        presence.last_seen_ms = wall_ms();
                    }
                    match ControlMessage::decode(message) {
                        Ok(ControlMessage::SessionReport(report)) => {
                            self.agent_report(&agent_id, report);
                        }
                        Ok(ControlMessage::Recording(chunk)) => {
                            self.recording_chunk(&agent_id, chunk);
                        }
                        Ok(ControlMessage::Stream(report)) => {
                            self.stream_report(&agent_id, report);
                        }
                        // Anything else from an agent is ignored, as AWS ignores unknown types.
                        Ok(_) | Err(_) => {}
                    }
                }
            }
        };
        {
            let mut agents = lock(&self.agents.agents);
            if let Some(presence) = agents.get_mut(&agent_id)
                && presence.generation == generation
            {
                presence.sender = None;
                presence.connected_since_ms = None;
                presence.last_seen_ms = wall_ms();
            }
        }
        tracing::info!(%agent_id, %peer, reason = why, "agent disconnected");
        let mut record = Record::new(EventKind::AgentDisconnect);
        record.target = Some(agent_id);
        record.source = Some(peer.to_string());
        self.audit(record);
    }
}
