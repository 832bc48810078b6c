//! The handshake (PROTOCOL.md §6, §8.2–8.3): the agent asks, the client answers every action in
//! order, the keys are exchanged through KMS outside the core, the challenge proves both ends
//! hold them. Our own extension action rides along; Go clients decline it.

use std::collections::VecDeque;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{
    AgentConfig, ClientConfig, EXTENDED_MAX_PAYLOAD, Event, KeyRequest, Session, SessionError,
    SessionType, Wire,
};
use crate::crypto::{Cipher, DATA_KEY_LEN, Direction};
use crate::kms::{
    CONTEXT_RANDOM_CHALLENGE, CONTEXT_SESSION_ID, CONTEXT_TARGET_ID, DataKey, EncryptionContext,
};
use crate::payload::{
    EncryptionChallenge, Extensions, HandshakeComplete, HandshakeRequest, HandshakeResponse,
    JsonPayload, KmsEncryptionRequest, KmsEncryptionResult, RawJson, RequestedClientAction,
    SessionTypeRequest,
};
use crate::{Frame, PayloadType, version};

/// What the application learns when the handshake is over.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct HandshakeInfo {
    /// What the session runs.
    pub session_type: SessionType,
    /// The document properties (`Port` sessions).
    pub properties: Option<serde_json::Value>,
    /// The peer's self-reported version, when it sent one (the version gates of PROTOCOL.md §14
    /// take it as input).
    pub peer_version: Option<String>,
    /// Text to show the user (HandshakeComplete's `CustomerMessage`).
    pub customer_message: String,
    /// Whether stream data is KMS-encrypted.
    pub encrypted: bool,
    /// Whether our own extensions are on.
    pub extensions: bool,
    /// No handshake took place: the type was inferred from the first Output (PROTOCOL.md §6.3).
    pub legacy: bool,
}

const ENCRYPTED_MESSAGE: &str = "This session is encrypted using AWS KMS.";
const UPDATE_MESSAGE: &str = "Please update session manager plugin version (minimum required version 1.2.312.0) for fully support of separate StdOut/StdErr output.\r\n";
const RESPONSE_TIMEOUT: &str = "Handshake timed out. Please ensure that you have the latest version of the session manager plugin.";
const CHALLENGE_TIMEOUT: &str = "Timed out waiting for encryption challenge.";
/// What our agent offers and our client accepts at most.
const OFFER: Extensions = Extensions {
    version: 1,
    max_payload_size: EXTENDED_MAX_PAYLOAD as u32,
    cumulative_ack: true,
};

pub(super) enum Handshake {
    Client(ClientHandshake),
    Agent(AgentHandshake),
}

impl Handshake {
    /// Client role, handshake done, and an agent that ends the session on `TerminateSession`
    /// (docs/PROTOCOL.md, version rules): a deliberate close can tell it the client left.
    pub(super) fn agent_takes_terminate_flag(&self) -> bool {
        match self {
            Handshake::Client(client) => {
                matches!(client.phase, ClientPhase::Complete)
                    && client
                        .info
                        .peer_version
                        .as_deref()
                        .is_some_and(crate::version::agent_supports_terminate_flag)
            }
            Handshake::Agent(_) => false,
        }
    }
}

pub(super) struct ClientHandshake {
    config: ClientConfig,
    phase: ClientPhase,
    info: HandshakeInfo,
    /// The agent named the session type (a handshake without one fails, as in Go).
    typed: bool,
    negotiated: Option<Wire>,
}

enum ClientPhase {
    /// No handshake message yet; the first Output would mean the legacy path.
    Waiting,
    /// Answering the request's actions; `kms` is set while a data key is awaited.
    Answering {
        response: HandshakeResponse,
        remaining: VecDeque<RequestedClientAction>,
        kms: Option<PendingKms>,
    },
    /// The response is sent; waiting for the challenge or the completion.
    Answered,
    Complete,
}

struct PendingKms {
    acknowledge_challenge: bool,
}

pub(super) struct AgentHandshake {
    config: AgentConfig,
    phase: AgentPhase,
    started: Option<Instant>,
    deadline: Option<Instant>,
    challenge: String,
    info: HandshakeInfo,
    negotiated: Option<Wire>,
}

enum AgentPhase {
    AwaitingResponse,
    AwaitingKey,
    AwaitingChallenge { expected: Vec<u8> },
    Complete,
}

impl Handshake {
    pub(super) fn client(config: ClientConfig) -> Self {
        Handshake::Client(ClientHandshake {
            config,
            phase: ClientPhase::Waiting,
            info: HandshakeInfo::default(),
            typed: false,
            negotiated: None,
        })
    }

    pub(super) fn agent(config: AgentConfig) -> Self {
        let info = HandshakeInfo {
            session_type: config.session_type,
            properties: config.properties.clone(),
            ..HandshakeInfo::default()
        };
        Handshake::Agent(AgentHandshake {
            config,
            phase: AgentPhase::AwaitingResponse,
            started: None,
            deadline: None,
            challenge: String::new(),
            info,
            negotiated: None,
        })
    }

    pub(super) fn is_complete(&self) -> bool {
        match self {
            Handshake::Client(client) => matches!(client.phase, ClientPhase::Complete),
            Handshake::Agent(agent) => matches!(agent.phase, AgentPhase::Complete),
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Handshake::Agent(agent) if !matches!(agent.phase, AgentPhase::Complete) => {
                agent.deadline
            }
            _ => None,
        }
    }

    /// The error to end the session with if the current step ran out of time.
    pub(super) fn check_timeout(&mut self, now: Instant) -> Option<SessionError> {
        let Handshake::Agent(agent) = self else {
            return None;
        };
        if agent.deadline.is_none_or(|deadline| deadline > now) {
            return None;
        }
        match agent.phase {
            AgentPhase::AwaitingResponse | AgentPhase::AwaitingKey => {
                Some(SessionError::HandshakeTimeout(RESPONSE_TIMEOUT))
            }
            AgentPhase::AwaitingChallenge { .. } => {
                Some(SessionError::HandshakeTimeout(CHALLENGE_TIMEOUT))
            }
            AgentPhase::Complete => None,
        }
    }
}

impl AgentHandshake {
    pub(super) fn session_id(&self) -> &str {
        &self.config.session_id
    }

    fn encrypts(&self) -> bool {
        self.config.kms_key_id.is_some() && self.config.session_type != SessionType::Port
    }
}

impl Session {
    fn agent_state(&mut self) -> &mut AgentHandshake {
        match &mut self.handshake {
            Handshake::Agent(agent) => agent,
            Handshake::Client(_) => unreachable!("agent handshake step in a client session"),
        }
    }

    fn client_state(&mut self) -> &mut ClientHandshake {
        match &mut self.handshake {
            Handshake::Client(client) => client,
            Handshake::Agent(_) => unreachable!("client handshake step in an agent session"),
        }
    }

    // ----- agent ---------------------------------------------------------------------------

    /// Sends the HandshakeRequest, or skips the handshake where the reference does (plain
    /// Standard_Stream and InteractiveCommands) and extensions are off.
    pub(super) fn start_agent_handshake(&mut self, now: Instant) {
        let challenge = STANDARD.encode(self.random::<16>());
        let timeout = self.limits.handshake_timeout;
        let agent = self.agent_state();
        let config = &agent.config;
        let needs_handshake = matches!(
            config.session_type,
            SessionType::Port | SessionType::NonInteractiveCommands
        ) || agent.encrypts()
            || config.extensions;
        if !needs_handshake {
            agent.phase = AgentPhase::Complete;
            let info = agent.info.clone();
            return self.events.push_back(Event::HandshakeComplete(info));
        }
        let properties = (config.session_type == SessionType::Port)
            .then(|| config.properties.clone())
            .flatten();
        let mut actions = vec![RequestedClientAction::session_type(&SessionTypeRequest {
            session_type: config.session_type.as_str().to_owned(),
            properties,
        })];
        if agent.encrypts() {
            actions.push(RequestedClientAction::kms_encryption(
                &KmsEncryptionRequest {
                    kms_key_id: config.kms_key_id.clone().unwrap_or_default(),
                    challenge: challenge.clone(),
                },
            ));
        }
        if config.extensions {
            actions.push(RequestedClientAction::extensions(&OFFER));
        }
        let request = HandshakeRequest {
            agent_version: config.agent_version.clone(),
            requested_client_actions: actions,
        };
        agent.challenge = challenge;
        agent.started = Some(now);
        agent.deadline = Some(now + timeout);
        self.queue_stream(now, PayloadType::HandshakeRequest, &request.to_json());
    }

    pub(super) fn on_handshake_response(&mut self, now: Instant, frame: &Frame) -> bool {
        if !matches!(self.agent_state().phase, AgentPhase::AwaitingResponse) {
            return true;
        }
        let Some(response) = self.read_json::<HandshakeResponse>(frame) else {
            return false;
        };
        let agent = self.agent_state();
        agent.info.peer_version = Some(response.client_version.clone());
        let mut key_request = None;
        for action in &response.processed_client_actions {
            if action.action_type == RequestedClientAction::EXTENSIONS {
                agent.negotiated =
                    negotiated_wire(action.action_status, action.action_result.as_ref());
                continue;
            }
            if action.action_status != crate::payload::ActionStatus::SUCCESS {
                let error = format!("{} {}", action.action_type, action.error);
                self.fail(SessionError::Handshake(error));
                return true;
            }
            if action.action_type == RequestedClientAction::KMS_ENCRYPTION && agent.encrypts() {
                let result: KmsEncryptionResult = match action
                    .action_result
                    .as_ref()
                    .map(RawJson::decode)
                    .transpose()
                {
                    Ok(result) => result.unwrap_or_default(),
                    Err(error) => {
                        self.fail(SessionError::Handshake(format!(
                            "unreadable KMSEncryption result: {error}"
                        )));
                        return true;
                    }
                };
                let acknowledged = result.challenge_acknowledgement == Some(true);
                if agent.config.require_challenge_ack && !acknowledged {
                    let error =
                        "client does not support required encryption context random challenge"
                            .into();
                    self.fail(SessionError::Handshake(error));
                    return true;
                }
                let mut context = kms_context(&agent.config.session_id, &agent.config.instance_id);
                if acknowledged {
                    context.insert(CONTEXT_RANDOM_CHALLENGE.into(), agent.challenge.clone());
                }
                key_request = Some(KeyRequest::Decrypt {
                    key_id: agent.config.kms_key_id.clone().unwrap_or_default(),
                    ciphertext_blob: result.kms_cipher_text_key,
                    context,
                });
            }
        }
        match key_request {
            Some(request) => {
                agent.phase = AgentPhase::AwaitingKey;
                self.events.push_back(Event::KeyRequest(request));
            }
            None if agent.encrypts() => {
                self.fail(SessionError::Handshake(
                    "the client did not answer the KMSEncryption action".into(),
                ));
            }
            None => self.complete_agent_handshake(now),
        }
        true
    }

    pub(super) fn agent_key_ready(
        &mut self,
        now: Instant,
        key: Result<[u8; DATA_KEY_LEN], String>,
    ) {
        if !matches!(self.agent_state().phase, AgentPhase::AwaitingKey) {
            return;
        }
        let plaintext = match key {
            Ok(plaintext) => plaintext,
            Err(error) => {
                return self.fail(SessionError::Handshake(format!(
                    "Fetching data key failed: {error}"
                )));
            }
        };
        let mut cipher = Cipher::new(&plaintext, Direction::Agent, self.random());
        let expected = self.random::<64>().to_vec();
        let challenge = EncryptionChallenge {
            challenge: cipher.seal(&expected),
        };
        self.cipher = Some(cipher);
        let timeout = self.limits.handshake_timeout;
        let agent = self.agent_state();
        agent.phase = AgentPhase::AwaitingChallenge { expected };
        agent.info.encrypted = true;
        agent.deadline = Some(now + timeout);
        self.queue_stream(now, PayloadType::EncChallengeRequest, &challenge.to_json());
    }

    pub(super) fn on_challenge_response(&mut self, now: Instant, frame: &Frame) -> bool {
        let AgentPhase::AwaitingChallenge { expected } = &self.agent_state().phase else {
            return true;
        };
        let expected = expected.clone();
        let answer =
            EncryptionChallenge::from_json(&frame.payload).map_err(|error| SessionError::Payload {
                payload_type: frame.payload_type,
                error,
            });
        let opened = answer.and_then(|answer| {
            let cipher = self
                .cipher
                .as_mut()
                .expect("the cipher exists once the challenge is sent");
            cipher
                .open(&answer.challenge)
                .map_err(|error| SessionError::Decrypt {
                    sequence_number: frame.sequence_number,
                    error,
                })
        });
        match opened {
            Ok(plaintext) if plaintext == expected => {
                self.complete_agent_handshake(now);
                true
            }
            Ok(_) => {
                // Not acknowledged: the client resends, and the step times out (PROTOCOL.md §8.5).
                self.events.push_back(Event::Error(SessionError::Handshake(
                    "encryption challenge mismatch".into(),
                )));
                false
            }
            Err(error) => {
                self.events.push_back(Event::Error(error));
                false
            }
        }
    }

    fn complete_agent_handshake(&mut self, now: Instant) {
        let agent = self.agent_state();
        let client_version = agent.info.peer_version.clone().unwrap_or_default();
        let mut message = String::new();
        if agent.config.session_type == SessionType::NonInteractiveCommands
            && agent.config.separate_output_stream
            && version::client_lacks_output_separation(&client_version)
        {
            message.push_str(UPDATE_MESSAGE);
        }
        if agent.info.encrypted {
            message.push_str(ENCRYPTED_MESSAGE);
        }
        let elapsed = agent.started.map_or(0, |started| {
            now.saturating_duration_since(started).as_nanos() as i64
        });
        agent.phase = AgentPhase::Complete;
        agent.deadline = None;
        agent.info.customer_message = message.clone();
        agent.info.extensions = agent.negotiated.is_some();
        let info = agent.info.clone();
        let complete = HandshakeComplete {
            handshake_time_to_complete: elapsed,
            customer_message: message,
        };
        self.queue_stream(now, PayloadType::HandshakeComplete, &complete.to_json());
        if let Some(wire) = self.agent_state().negotiated {
            self.wire = wire;
        }
        self.events.push_back(Event::HandshakeComplete(info));
        self.deliver_early();
    }

    // ----- client --------------------------------------------------------------------------

    pub(super) fn on_handshake_request(&mut self, now: Instant, frame: &Frame) -> bool {
        if !matches!(self.client_state().phase, ClientPhase::Waiting) {
            return true;
        }
        let Some(request) = self.read_json::<HandshakeRequest>(frame) else {
            return true;
        };
        let client = self.client_state();
        client.info.peer_version = Some(request.agent_version.clone());
        client.phase = ClientPhase::Answering {
            response: HandshakeResponse::new(client.config.client_version.clone()),
            remaining: request.requested_client_actions.into(),
            kms: None,
        };
        self.answer_actions(now);
        true
    }

    /// Answers actions in order until one needs a data key or all are answered.
    fn answer_actions(&mut self, now: Instant) {
        let client = self.client_state();
        let ClientPhase::Answering {
            response,
            remaining,
            kms,
        } = &mut client.phase
        else {
            return;
        };
        while let Some(action) = remaining.pop_front() {
            let action_type = action.action_type.as_str();
            match action_type {
                RequestedClientAction::SESSION_TYPE => {
                    match action.parameters::<SessionTypeRequest>() {
                        Ok(request)
                            if let Some(kind) = SessionType::from_wire(&request.session_type) =>
                        {
                            client.info.session_type = kind;
                            client.info.properties = request.properties;
                            client.typed = true;
                            response.push_success(action_type, None);
                        }
                        Ok(request) => response.push_failure(
                            action_type,
                            &format!("Unknown session type {}", request.session_type),
                        ),
                        Err(error) => response.push_failure(action_type, &error.to_string()),
                    }
                }
                RequestedClientAction::KMS_ENCRYPTION => {
                    match action.parameters::<KmsEncryptionRequest>() {
                        Ok(request) => {
                            let acknowledge = client.config.acknowledge_challenge
                                && !request.challenge.is_empty();
                            let mut context =
                                kms_context(&client.config.session_id, &client.config.target_id);
                            if acknowledge {
                                context.insert(CONTEXT_RANDOM_CHALLENGE.into(), request.challenge);
                            }
                            *kms = Some(PendingKms {
                                acknowledge_challenge: acknowledge,
                            });
                            let key_id = request.kms_key_id;
                            return self.events.push_back(Event::KeyRequest(
                                KeyRequest::GenerateDataKey { key_id, context },
                            ));
                        }
                        Err(error) => response.push_failure(action_type, &error.to_string()),
                    }
                }
                RequestedClientAction::EXTENSIONS if client.config.extensions => {
                    let offered: Extensions = action.parameters().unwrap_or_default();
                    let accepted = Extensions {
                        version: 1,
                        max_payload_size: offered.max_payload_size.min(OFFER.max_payload_size),
                        cumulative_ack: offered.cumulative_ack,
                    };
                    client.negotiated = negotiated_wire(
                        crate::payload::ActionStatus::SUCCESS,
                        Some(&RawJson::encode(&accepted)),
                    );
                    response.push_success(action_type, Some(RawJson::encode(&accepted)));
                }
                _ => response.push_unsupported(action_type),
            }
        }
        let response = std::mem::take(response);
        client.phase = ClientPhase::Answered;
        self.queue_stream(now, PayloadType::HandshakeResponse, &response.to_json());
        // The agent ends a session whose action failed; the application hears why from us.
        for failed in response
            .processed_client_actions
            .iter()
            .filter(|action| action.action_status == crate::payload::ActionStatus::FAILED)
        {
            let error = SessionError::Handshake(failed.error.clone());
            self.events.push_back(Event::Error(error));
        }
    }

    pub(super) fn client_key_ready(&mut self, now: Instant, key: Result<DataKey, String>) {
        let initial_nonce = self.random();
        let client = self.client_state();
        let ClientPhase::Answering { response, kms, .. } = &mut client.phase else {
            return;
        };
        let Some(pending) = kms.take() else { return };
        let action_type = RequestedClientAction::KMS_ENCRYPTION;
        match key {
            Ok(key) => {
                let result = KmsEncryptionResult {
                    kms_cipher_text_key: key.ciphertext_blob,
                    kms_cipher_text_hash: None,
                    challenge_acknowledgement: pending.acknowledge_challenge.then_some(true),
                };
                response.push_success(action_type, Some(RawJson::encode(&result)));
                client.info.encrypted = true;
                self.cipher = Some(Cipher::new(
                    &key.plaintext,
                    Direction::Client,
                    initial_nonce,
                ));
            }
            Err(error) => response.push_failure(
                action_type,
                &format!("Error calling KMS GenerateDataKey API: {error}"),
            ),
        }
        self.answer_actions(now);
    }

    pub(super) fn on_challenge_request(&mut self, now: Instant, frame: &Frame) -> bool {
        let answer = EncryptionChallenge::from_json(&frame.payload)
            .map_err(|error| SessionError::Payload {
                payload_type: frame.payload_type,
                error,
            })
            .and_then(|request| match self.cipher.as_mut() {
                Some(cipher) => cipher
                    .open(&request.challenge)
                    .map(|plaintext| cipher.seal(&plaintext))
                    .map_err(|error| SessionError::Decrypt {
                        sequence_number: frame.sequence_number,
                        error,
                    }),
                None => Err(SessionError::Handshake(
                    "encryption challenge without a data key".into(),
                )),
            });
        match answer {
            Ok(challenge) => {
                let response = EncryptionChallenge { challenge };
                self.queue_stream(now, PayloadType::EncChallengeResponse, &response.to_json());
            }
            // As the Go client: the request was acknowledged; the agent's step times out.
            Err(error) => self.events.push_back(Event::Error(error)),
        }
        true
    }

    pub(super) fn on_handshake_complete(&mut self, frame: &Frame) -> bool {
        let complete = HandshakeComplete::from_json(&frame.payload).unwrap_or_default();
        let client = self.client_state();
        if matches!(client.phase, ClientPhase::Complete) {
            return true;
        }
        if !client.typed {
            self.fail(SessionError::Handshake(
                "unable to determine SessionType".into(),
            ));
            return true;
        }
        client.phase = ClientPhase::Complete;
        client.info.customer_message = complete.customer_message;
        client.info.extensions = client.negotiated.is_some();
        let info = client.info.clone();
        if let Some(wire) = self.client_state().negotiated {
            self.wire = wire;
        }
        self.events.push_back(Event::HandshakeComplete(info));
        self.deliver_early();
        true
    }

    /// A non-handshake message before the handshake finished: kept and delivered after it (the
    /// Go agent acknowledges and throws such input away, PROTOCOL.md §15.3), except that a client
    /// that has seen no handshake at all takes the first Output as the legacy start (§6.3).
    pub(super) fn before_handshake(&mut self, frame: Frame, acked: bool) -> bool {
        if let Handshake::Client(client) = &mut self.handshake
            && matches!(client.phase, ClientPhase::Waiting)
        {
            client.phase = ClientPhase::Complete;
            client.info.session_type = SessionType::StandardStream;
            client.typed = true;
            client.info.legacy = true;
            let info = client.info.clone();
            self.events.push_back(Event::HandshakeComplete(info));
            return self.deliver(frame);
        }
        if self.early.len() >= self.limits.max_reorder && !acked {
            return false;
        }
        self.early.push_back(frame);
        true
    }

    fn deliver_early(&mut self) {
        while let Some(frame) = self.early.pop_front() {
            self.deliver(frame);
        }
    }
}

fn kms_context(session_id: &str, target_id: &str) -> EncryptionContext {
    EncryptionContext::from([
        (CONTEXT_SESSION_ID.to_owned(), session_id.to_owned()),
        (CONTEXT_TARGET_ID.to_owned(), target_id.to_owned()),
    ])
}

/// The wire both ends agreed on, from the client's answer to our extension action.
fn negotiated_wire(status: crate::payload::ActionStatus, result: Option<&RawJson>) -> Option<Wire> {
    if status != crate::payload::ActionStatus::SUCCESS {
        return None;
    }
    let accepted: Extensions = result?.decode().ok()?;
    (accepted.version >= 1).then(|| Wire {
        max_payload: (accepted.max_payload_size as usize)
            .clamp(super::COMPAT_MAX_PAYLOAD, EXTENDED_MAX_PAYLOAD),
        cumulative_ack: accepted.cumulative_ack,
    })
}
