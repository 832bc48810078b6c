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

use super::{Inner, api, lock, sessions, wall_ms};
use crate::audit::{EventKind, Record};
use crate::control::{ControlMessage, OpenControlChannelInput};
use crate::entropy::{Entropy, SystemEntropy};
use crate::net::http::HttpRequest;

/// Messages queued toward one agent before sends fail (the agent is not reading).
const QUEUE: usize = 256;
/// How long an agent has to send its opening message.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway knows of one agent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Presence {
    sender: Option<mpsc::Sender<Bytes>>,
    generation: u64,
    pub(crate) connected_since_ms: Option<u64>,
    pub(crate) last_seen_ms: u64,
    pub(crate) version: String,
    pub(crate) platform: String,
    pub(crate) address: Option<SocketAddr>,
}

impl Presence {
    pub(crate) fn online(&self) -> bool {
        self.sender.is_some()
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    agents: Mutex<HashMap<String, Presence>>,
}

impl Registry {
    /// Queues `message` for `agent_id`; false when it is offline or not reading.
    pub(crate) fn send(&self, agent_id: &str, message: ControlMessage) -> bool {
        let agents = lock(&self.agents);
        let Some(sender) = agents.get(agent_id).and_then(|p| p.sender.as_ref()) else {
            return false;
        };
        sender
            .try_send(message.encode(random_uuid(), wall_ms()))
            .is_ok()
    }

    pub(crate) fn presence(&self, agent_id: &str) -> Option<Presence> {
        lock(&self.agents).get(agent_id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<(String, Presence)> {
        let mut all: Vec<_> = lock(&self.agents)
            .iter()
            .map(|(id, presence)| (id.clone(), presence.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

fn random_uuid() -> uuid::Uuid {
    let mut bytes = [0; 16];
    SystemEntropy::new().fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Checks the signature of a control-channel upgrade for `agent_id`.
pub(crate) fn authenticate(
    inner: &Inner,
    request: &HttpRequest,
    agent_id: &str,
    peer: SocketAddr,
) -> Result<(), (u16, Vec<u8>)> {
    let auth = inner.auth();
    let refusal = match auth.verify_agent(request, wall_ms() / 1000) {
        Ok(id) if id == agent_id => None,
        Ok(id) => Some(format!(
            "agent {id} may not open the control channel of {agent_id}"
        )),
        Err(error) => Some(error.to_string()),
    };
    let Some(why) = refusal else { return Ok(()) };
    let mut record = Record::new(EventKind::ApiCall);
    record.action = Some("ssmmessages:OpenControlChannel".into());
    record.source = Some(peer.to_string());
    record.target = Some(agent_id.to_owned());
    record.decision = Some("deny".into());
    record.reason = Some(why.clone());
    inner.audit(record);
    Err((403, api::error_body("AccessDeniedException", &why)))
}

/// Runs an authenticated agent's control channel until it drops or is replaced.
pub(crate) async fn serve<S>(
    inner: Arc<Inner>,
    mut ws: WebSocketStream<S>,
    agent_id: String,
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
        let _ = ws.close(None).await;
        return;
    };
    let (sender, mut outgoing) = mpsc::channel(QUEUE);
    let generation = {
        let mut agents = lock(&inner.agents.agents);
        let presence = agents.entry(agent_id.clone()).or_default();
        presence.generation += 1;
        presence.sender = Some(sender);
        presence.connected_since_ms = Some(wall_ms());
        presence.last_seen_ms = wall_ms();
        presence.version = opening.agent_version.clone();
        presence.platform = opening.platform_type.clone();
        presence.address = Some(peer);
        presence.generation
    };
    let mut record = Record::new(EventKind::AgentConnect);
    record.target = Some(agent_id.clone());
    record.source = Some(peer.to_string());
    record.detail = Some(format!(
        "agent {} on {}",
        opening.agent_version, opening.platform_type
    ));
    inner.audit(record);

    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            message = outgoing.recv() => {
                let Some(message) = message else { break };
                if sink.send(Message::Binary(message)).await.is_err() {
                    break;
                }
            }
            received = stream.next() => {
                let message = match received {
                    Some(Ok(Message::Binary(message))) => message,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                if let Some(presence) = lock(&inner.agents.agents).get_mut(&agent_id) {
                    presence.last_seen_ms = wall_ms();
                }
                match ControlMessage::decode(message) {
                    Ok(ControlMessage::SessionReport(report)) => {
                        sessions::agent_report(&inner, &agent_id, report);
                    }
                    Ok(ControlMessage::Recording(chunk)) => {
                        sessions::recording_chunk(&inner, &agent_id, chunk);
                    }
                    Ok(ControlMessage::Stream(report)) => {
                        sessions::stream_report(&inner, &agent_id, report);
                    }
                    // Anything else from an agent is ignored, as AWS ignores unknown types.
                    Ok(_) | Err(_) => {}
                }
            }
        }
    }
    {
        let mut agents = lock(&inner.agents.agents);
        if let Some(presence) = agents.get_mut(&agent_id)
            && presence.generation == generation
        {
            presence.sender = None;
            presence.connected_since_ms = None;
            presence.last_seen_ms = wall_ms();
        }
    }
    let mut record = Record::new(EventKind::AgentDisconnect);
    record.target = Some(agent_id);
    record.source = Some(peer.to_string());
    inner.audit(record);
}
