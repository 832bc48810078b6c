//! One data channel as a deterministic state machine, for either role (PROTOCOL.md §6–8).
//!
//! See [`Session`] for the run loop.

mod handshake;
mod kind;
mod recv;
mod rtt;
mod send;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use crate::crypto::{Cipher, CryptoError, OVERHEAD};
use crate::entropy::Entropy;
use crate::kms::{DataKey, EncryptionContext};
use crate::payload::{
    Acknowledge, AgentSessionState, ChannelClosed, ExitCode, Flag, JsonPayload, PayloadError,
    TerminalSize,
};
use crate::{DecodeError, DecodeOptions, Frame, Header, MessageType, PayloadType};

use handshake::Handshake;
use recv::{Arrival, ReceiveBuffer};
use rtt::RttEstimator;
use send::SendBuffer;

pub use handshake::HandshakeInfo;
pub use kind::{PortKind, SessionType};

/// Payload size the reference peers use and every peer accepts (PROTOCOL.md §7.8).
pub const COMPAT_MAX_PAYLOAD: usize = 1024;
/// Largest plaintext chunk once our extensions are negotiated.
pub const EXTENDED_MAX_PAYLOAD: usize = 64 * 1024;
/// How long a cumulative acknowledgement may wait for more in-order messages.
const CUMULATIVE_ACK_DELAY: Duration = Duration::from_millis(2);
/// Send a cumulative acknowledgement at the latest after this many messages.
const CUMULATIVE_ACK_EVERY: u32 = 32;

/// Which end of the data channel this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user's end (`session-manager-plugin`): sends `input_stream_data`.
    Client,
    /// The host's end (`amazon-ssm-agent`): sends `output_stream_data`, leads the handshake.
    Agent,
}

/// Bounds and timings shared by both roles. The defaults suit the Go peers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Stream messages sent but not yet acknowledged, at most. Well under the Go receivers'
    /// 10 000-message reorder buffers.
    pub max_in_flight: usize,
    /// Bytes of frames sent but not yet acknowledged, at most (one message may exceed it alone).
    pub max_in_flight_bytes: usize,
    /// Early (out-of-order) messages kept, at most; more are dropped unacknowledged.
    pub max_reorder: usize,
    /// How long the agent waits for each handshake step (reference: 15 s).
    pub handshake_timeout: Duration,
    /// How long [`Session::close`] waits for outstanding messages to be acknowledged.
    pub drain_timeout: Duration,
    /// Verify payload digests of received frames (what the Go client does).
    pub verify_digest: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 512,
            max_in_flight_bytes: 8 << 20,
            max_reorder: 4096,
            handshake_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(10),
            verify_digest: true,
        }
    }
}

/// Settings of a client-role session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The 4-part version reported to the agent, which gates features on it (PROTOCOL.md §14).
    pub client_version: String,
    /// The session id (`aws:ssm:SessionId` in the KMS context).
    pub session_id: String,
    /// The target as given to StartSession (`aws:ssm:TargetId`).
    pub target_id: String,
    /// Bind the data key to the agent's challenge (`aws:ssm:RandomChallenge`) and say so.
    pub acknowledge_challenge: bool,
    /// Accept our own extensions when an agent built from this crate offers them.
    pub extensions: bool,
    /// Bounds and timings.
    pub limits: Limits,
}

impl ClientConfig {
    /// A client for `session_id` on `target_id`, reporting [`crate::version::CLIENT_VERSION`],
    /// with challenge acknowledgement and extensions on.
    pub fn new(session_id: impl Into<String>, target_id: impl Into<String>) -> Self {
        ClientConfig {
            client_version: crate::version::CLIENT_VERSION.into(),
            session_id: session_id.into(),
            target_id: target_id.into(),
            acknowledge_challenge: true,
            extensions: true,
            limits: Limits::default(),
        }
    }
}

/// Settings of an agent-role session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The version reported to the client, which gates features on it (PROTOCOL.md §14).
    pub agent_version: String,
    /// The session id.
    pub session_id: String,
    /// The instance id (`aws:ssm:TargetId` in the KMS context).
    pub instance_id: String,
    /// What the session runs.
    pub session_type: SessionType,
    /// Document properties, sent to the client for `Port` sessions only.
    pub properties: Option<serde_json::Value>,
    /// KMS key from the session preferences; encryption is on when set (never for `Port`).
    pub kms_key_id: Option<String>,
    /// Refuse clients that do not acknowledge the random challenge.
    pub require_challenge_ack: bool,
    /// NonInteractiveCommands with separate stdout/stderr (changes HandshakeComplete's text).
    pub separate_output_stream: bool,
    /// Offer our own extensions. With them on, the agent always runs a handshake (the Go client
    /// handles one for every session type) and Go clients decline the extra action.
    pub extensions: bool,
    /// Bounds and timings.
    pub limits: Limits,
}

impl AgentConfig {
    /// An agent for `session_id` on `instance_id` running `session_type`, unencrypted, with
    /// extensions on.
    pub fn new(
        session_id: impl Into<String>,
        instance_id: impl Into<String>,
        session_type: SessionType,
    ) -> Self {
        AgentConfig {
            agent_version: "3.3.1957.0".into(),
            session_id: session_id.into(),
            instance_id: instance_id.into(),
            session_type,
            properties: None,
            kms_key_id: None,
            require_challenge_ack: false,
            separate_output_stream: false,
            extensions: true,
            limits: Limits::default(),
        }
    }
}

/// What the session tells the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// KMS work the application must do and answer ([`Session::provide_data_key`],
    /// [`Session::provide_plaintext_key`] or [`Session::key_failed`]).
    KeyRequest(KeyRequest),
    /// The session type is known and application data may flow.
    HandshakeComplete(HandshakeInfo),
    /// Stream bytes from the peer: Output (terminal or port bytes) or StdErr, decrypted.
    Stream {
        /// [`PayloadType::Output`], [`PayloadType::StdErr`] or an unknown type.
        payload_type: PayloadType,
        /// The bytes.
        data: Bytes,
    },
    /// The agent's terminal size changed (agent role).
    Resize(TerminalSize),
    /// A flag from the peer.
    Flag(Flag),
    /// The command's exit status (client role).
    ExitCode(ExitCode),
    /// The send window has room again after [`SendError::Blocked`].
    Writable,
    /// Something was wrong with one received message; the session goes on.
    Error(SessionError),
    /// The session is over; nothing more will be sent or delivered.
    Closed(CloseReason),
}

/// KMS work for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRequest {
    /// Client: call `GenerateDataKey` (64 bytes) and answer with [`Session::provide_data_key`].
    GenerateDataKey {
        /// The agent's key id.
        key_id: String,
        /// The encryption context to use.
        context: EncryptionContext,
    },
    /// Agent: call `Decrypt` and answer with [`Session::provide_plaintext_key`].
    Decrypt {
        /// The session's key id.
        key_id: String,
        /// The client's `KMSCipherTextKey`.
        ciphertext_blob: Vec<u8>,
        /// The encryption context to use.
        context: EncryptionContext,
    },
}

/// Why a session ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The gateway closed the channel.
    ChannelClosed(ChannelClosed),
    /// [`Session::close`] finished: everything sent was acknowledged.
    Local,
    /// [`Session::close`] gave up waiting; this many messages were never acknowledged.
    DrainTimedOut {
        /// Messages the peer did not acknowledge.
        unacknowledged: usize,
    },
    /// The session failed.
    Failed(SessionError),
}

/// What went wrong in a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A received message was not a valid frame; it was dropped.
    #[error("dropped an invalid frame: {0}")]
    Frame(#[from] DecodeError),
    /// A received payload could not be read; the message was not acknowledged.
    #[error("unreadable {payload_type:?} payload: {error}")]
    Payload {
        /// The payload's type.
        payload_type: PayloadType,
        /// Why.
        #[source]
        error: PayloadError,
    },
    /// A received payload failed to decrypt and was not delivered (nor acknowledged).
    #[error("payload of message {sequence_number} did not decrypt: {error}")]
    Decrypt {
        /// The message's sequence number.
        sequence_number: i64,
        /// Why.
        #[source]
        error: CryptoError,
    },
    /// A handshake step did not finish in time.
    #[error("{0}")]
    HandshakeTimeout(&'static str),
    /// The handshake failed; the text is what the peer or the KMS said.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// Why [`Session::send`] and friends refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The window is full: wait for [`Event::Writable`].
    #[error("send window full: wait for Event::Writable")]
    Blocked,
    /// The handshake has not finished: wait for [`Event::HandshakeComplete`].
    #[error("handshake not complete: wait for Event::HandshakeComplete")]
    NotReady,
    /// The session is closing or closed.
    #[error("session closed")]
    Closed,
}

/// Counters for tests, tools and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Stream messages created.
    pub messages_sent: u64,
    /// Stream messages put on the wire again.
    pub retransmits: u64,
    /// Acknowledgements sent.
    pub acks_sent: u64,
    /// In-order stream messages received and processed.
    pub messages_received: u64,
    /// Received stream messages that were already received.
    pub duplicates_received: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closing { deadline: Instant },
    Closed,
}

/// The negotiated wire behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wire {
    max_payload: usize,
    cumulative_ack: bool,
}

const COMPAT_WIRE: Wire = Wire {
    max_payload: COMPAT_MAX_PAYLOAD,
    cumulative_ack: false,
};

/// A pending cumulative acknowledgement: the newest in-order message not yet acknowledged.
#[derive(Debug, Clone, Copy)]
struct PendingAck {
    seq: i64,
    message_id: Uuid,
    count: u32,
    due: Instant,
}

/// One data channel as a state machine: the reliability, flow control, handshake and
/// encryption of PROTOCOL.md §6–8, with no I/O, clock or randomness inside.
///
/// # Run loop
///
/// The application (or an adapter) owns the websocket and a timer, and:
///
/// 1. feeds every received websocket message (text or binary) to
///    [`Session::handle_message`], and calls [`Session::handle_timeout`] when the instant from
///    [`Session::poll_timeout`] has passed;
/// 2. issues commands: [`Session::send`], [`Session::send_size`], [`Session::send_flag`],
///    KMS answers, [`Session::transport_lost`] / [`Session::transport_restored`],
///    [`Session::close`];
/// 3. **after every input or command, drains all outputs**: [`Session::poll_transmit`] until
///    `None` (send each as one binary websocket message), [`Session::poll_event`] until `None`,
///    then re-arms its timer with [`Session::poll_timeout`].
///
/// `now` must never go backwards. The wall clock is only used to stamp CreatedDate.
///
/// ```
/// use std::time::Instant;
/// use ssm_session::SeededEntropy;
/// use ssm_session::session::{AgentConfig, ClientConfig, Event, Session, SessionType};
///
/// let now = Instant::now();
/// let wall_ms = 1_700_000_000_000;
/// let mut agent = Session::agent(AgentConfig::new("s-1", "i-1", SessionType::StandardStream), now, wall_ms, Box::new(SeededEntropy::new(1)));
/// let mut client = Session::client(ClientConfig::new("s-1", "i-1"), now, wall_ms, Box::new(SeededEntropy::new(2)));
/// // Shuttle messages both ways until both sides are quiet (a real loop would use sockets).
/// loop {
///     let mut moved = false;
///     while let Some(message) = agent.poll_transmit() { client.handle_message(now, wall_ms, message); moved = true; }
///     while let Some(message) = client.poll_transmit() { agent.handle_message(now, wall_ms, message); moved = true; }
///     if !moved { break; }
/// }
/// assert!(matches!(client.poll_event(), Some(Event::HandshakeComplete(_))));
/// client.send(now, b"ls\r")?;
/// # while let Some(m) = client.poll_transmit() { agent.handle_message(now, wall_ms, m); }
/// # let mut got = Vec::new();
/// # while let Some(e) = agent.poll_event() { if let Event::Stream { data, .. } = e { got.extend_from_slice(&data); } }
/// # assert_eq!(got, b"ls\r");
/// # Ok::<(), ssm_session::session::SendError>(())
/// ```
pub struct Session {
    role: Role,
    limits: Limits,
    entropy: Box<dyn Entropy>,
    clock: (Instant, u64),
    handshake: Handshake,
    cipher: Option<Cipher>,
    wire: Wire,
    state: State,
    send: SendBuffer,
    next_seq: i64,
    rtt: RttEstimator,
    retransmit_at: Option<Instant>,
    recv: ReceiveBuffer,
    pending_ack: Option<PendingAck>,
    /// Peer data that arrived, acknowledged, before the handshake finished; delivered after it.
    early: VecDeque<Frame>,
    transport_up: bool,
    paused: bool,
    blocked: bool,
    transmits: VecDeque<Bytes>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("in_flight", &self.send.len())
            .field("expected", &self.recv.expected())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A client-role session whose websocket is open and whose opening message has been sent.
    pub fn client(
        config: ClientConfig,
        now: Instant,
        wall_ms: u64,
        entropy: Box<dyn Entropy>,
    ) -> Session {
        let limits = config.limits.clone();
        Self::new(
            Role::Client,
            Handshake::client(config),
            limits,
            now,
            wall_ms,
            entropy,
        )
    }

    /// An agent-role session whose websocket is open and whose opening message has been sent.
    /// It announces itself (`agent_session_state Connected`) and starts the handshake.
    pub fn agent(
        config: AgentConfig,
        now: Instant,
        wall_ms: u64,
        entropy: Box<dyn Entropy>,
    ) -> Session {
        let limits = config.limits.clone();
        let session_id = config.session_id.clone();
        let mut session = Self::new(
            Role::Agent,
            Handshake::agent(config),
            limits,
            now,
            wall_ms,
            entropy,
        );
        session.send_control(
            MessageType::AgentSessionState,
            AgentSessionState {
                schema_version: 1,
                session_state: AgentSessionState::CONNECTED.into(),
                session_id,
            }
            .to_json(),
        );
        session.start_agent_handshake(now);
        session
    }

    fn new(
        role: Role,
        handshake: Handshake,
        limits: Limits,
        now: Instant,
        wall_ms: u64,
        entropy: Box<dyn Entropy>,
    ) -> Session {
        Session {
            role,
            send: SendBuffer::new(limits.max_in_flight, limits.max_in_flight_bytes),
            recv: ReceiveBuffer::new(limits.max_reorder),
            limits,
            entropy,
            clock: (now, wall_ms),
            handshake,
            cipher: None,
            wire: COMPAT_WIRE,
            state: State::Open,
            next_seq: 0,
            rtt: RttEstimator::new(),
            retransmit_at: None,
            pending_ack: None,
            early: VecDeque::new(),
            transport_up: true,
            paused: false,
            blocked: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next websocket message to send (binary), if any.
    #[must_use = "a polled message is gone: send it, and drain until None"]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// The next event for the application, if any.
    #[must_use = "a polled event is gone: handle it, and drain until None"]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next, if ever.
    #[must_use = "arm a timer for it: retransmissions and acknowledgements wait on it"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let closing = match self.state {
            State::Closing { deadline } => Some(deadline),
            _ => None,
        };
        [
            self.retransmit_at,
            self.pending_ack.map(|ack| ack.due),
            self.handshake.deadline(),
            closing,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the session is over and may be dropped.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Stream messages sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.send.len()
    }

    /// The current smoothed round-trip time.
    pub fn smoothed_rtt(&self) -> Duration {
        self.rtt.smoothed()
    }

    /// Largest chunk [`Session::send`] puts in one message (1024, or 64 KiB with extensions).
    pub fn max_payload(&self) -> usize {
        self.wire.max_payload
    }

    // ----- inputs --------------------------------------------------------------------------

    /// One received websocket message (a text message's bytes are treated the same way).
    pub fn handle_message(&mut self, now: Instant, wall_ms: u64, message: Bytes) {
        self.clock = (now, wall_ms);
        if self.state == State::Closed {
            return;
        }
        let verify = match Header::parse(&message) {
            Ok(header) => self.limits.verify_digest && !self.authenticated_on_arrival(&header),
            Err(error) => return self.events.push_back(Event::Error(error.into())),
        };
        let frame =
            match Frame::decode_with(message, DecodeOptions::default().verify_digest(verify)) {
                Ok(frame) => frame,
                Err(error) => return self.events.push_back(Event::Error(error.into())),
            };
        match frame.message_type {
            MessageType::InputStreamData if self.role == Role::Agent => self.on_stream(now, frame),
            MessageType::OutputStreamData if self.role == Role::Client => {
                self.on_stream(now, frame)
            }
            MessageType::Acknowledge => self.on_ack(now, &frame),
            MessageType::PausePublication => self.paused = true,
            MessageType::StartPublication => self.resume(now),
            MessageType::ChannelClosed => {
                // The client closes even when the payload does not parse (PROTOCOL.md §5.4).
                let closed = ChannelClosed::from_json(&frame.payload).unwrap_or_default();
                self.finish(CloseReason::ChannelClosed(closed));
            }
            // Unknown and foreign types are ignored, as by both reference peers.
            _ => {}
        }
    }

    /// The timer from [`Session::poll_timeout`] fired; extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.wall_at(now);
        if self.state == State::Closed {
            return;
        }
        if self.pending_ack.is_some_and(|ack| ack.due <= now) {
            self.flush_cumulative_ack();
        }
        if self.retransmit_at.is_some_and(|at| at <= now) {
            self.retransmit_expired(now);
        }
        if let Some(error) = self.handshake.check_timeout(now) {
            return self.finish(CloseReason::Failed(error));
        }
        if let State::Closing { deadline } = self.state
            && deadline <= now
        {
            let unacknowledged = self.send.len();
            self.finish_local(CloseReason::DrainTimedOut { unacknowledged });
        }
    }

    /// The websocket is gone. Messages keep their sequence numbers and wait in the send buffer.
    pub fn transport_lost(&mut self, now: Instant) {
        self.clock = self.wall_at(now);
        self.transport_up = false;
        self.transmits.clear();
        self.retransmit_at = None;
    }

    /// A new websocket is open (and its opening text message sent): everything unacknowledged
    /// is sent again at once, in order. Sequence numbers continue.
    pub fn transport_restored(&mut self, now: Instant) {
        self.clock = self.wall_at(now);
        self.transport_up = true;
        self.paused = false;
        self.resend_all(now);
    }

    // ----- commands ------------------------------------------------------------------------

    /// Sends bytes as Output messages (keystrokes or port data from the client, terminal or
    /// port output from the agent), split at [`Session::max_payload`]. Returns how many bytes
    /// were taken; less than `data.len()` when the window filled up, and then
    /// [`Event::Writable`] follows once there is room again.
    pub fn send(&mut self, now: Instant, data: &[u8]) -> Result<usize, SendError> {
        self.send_stream(now, PayloadType::Output, data)
    }

    /// Sends standard-error bytes (agent role, NonInteractiveCommands).
    pub fn send_stderr(&mut self, now: Instant, data: &[u8]) -> Result<usize, SendError> {
        self.send_stream(now, PayloadType::StdErr, data)
    }

    /// Sends the exit status (agent role, NonInteractiveCommands with separate streams).
    pub fn send_exit_code(&mut self, now: Instant, code: ExitCode) -> Result<(), SendError> {
        self.send_one(now, PayloadType::ExitCode, code.to_string().into_bytes())
    }

    /// Sends the terminal size (client role). Never encrypted.
    pub fn send_size(&mut self, now: Instant, size: TerminalSize) -> Result<(), SendError> {
        self.send_one(now, PayloadType::Size, size.to_json())
    }

    /// Sends a flag. Never encrypted.
    pub fn send_flag(&mut self, now: Instant, flag: Flag) -> Result<(), SendError> {
        self.send_one(now, PayloadType::Flag, flag.to_bytes().to_vec())
    }

    /// Client: the data key asked for by [`KeyRequest::GenerateDataKey`].
    pub fn provide_data_key(&mut self, now: Instant, key: DataKey) {
        self.clock = self.wall_at(now);
        self.client_key_ready(now, Ok(key));
    }

    /// Agent: the plaintext data key asked for by [`KeyRequest::Decrypt`].
    pub fn provide_plaintext_key(
        &mut self,
        now: Instant,
        plaintext: [u8; crate::crypto::DATA_KEY_LEN],
    ) {
        self.clock = self.wall_at(now);
        self.agent_key_ready(now, Ok(plaintext));
    }

    /// Either role: the KMS call failed with `error` (its text reaches the peer).
    pub fn key_failed(&mut self, now: Instant, error: &str) {
        self.clock = self.wall_at(now);
        match self.role {
            Role::Client => self.client_key_ready(now, Err(error.to_owned())),
            Role::Agent => self.agent_key_ready(now, Err(error.to_owned())),
        }
    }

    /// Ends the session gracefully: nothing new is accepted, and once everything sent is
    /// acknowledged (or [`Limits::drain_timeout`] passes) the agent reports `Terminating` and
    /// [`Event::Closed`] follows.
    ///
    /// A client's close is how its agent learns the client left: it sends `TerminateSession`
    /// last (to agents newer than 2.3.722.0, which end the session on it; older ones, like a
    /// lost transport, wait for the gateway's resume window to end it), and the agent sees
    /// [`Event::Flag`]`(`[`Flag::TerminateSession`]`)`.
    pub fn close(&mut self, now: Instant) {
        self.clock = self.wall_at(now);
        if self.state == State::Open {
            if self.handshake.agent_takes_terminate_flag() {
                // Past the send window: four bytes, once, and the close waits for its ack.
                let flag = Flag::TerminateSession.to_bytes();
                self.queue_stream(now, PayloadType::Flag, &flag);
            }
            self.state = State::Closing {
                deadline: now + self.limits.drain_timeout,
            };
            self.flush_cumulative_ack();
            self.check_drained();
        }
    }

    // ----- sending -------------------------------------------------------------------------

    fn send_stream(
        &mut self,
        now: Instant,
        payload_type: PayloadType,
        data: &[u8],
    ) -> Result<usize, SendError> {
        self.clock = self.wall_at(now);
        self.check_can_send()?;
        let mut taken = 0;
        for chunk in data.chunks(self.wire.max_payload) {
            if !self
                .send
                .has_room_for(chunk.len() + crate::HEADER_SIZE + OVERHEAD)
            {
                break;
            }
            self.queue_stream(now, payload_type, chunk);
            taken += chunk.len();
        }
        if taken < data.len() {
            // The window is full: Event::Writable follows once there is room.
            self.blocked = true;
            if taken == 0 {
                return Err(SendError::Blocked);
            }
        }
        Ok(taken)
    }

    fn send_one(
        &mut self,
        now: Instant,
        payload_type: PayloadType,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        self.clock = self.wall_at(now);
        self.check_can_send()?;
        if !self
            .send
            .has_room_for(payload.len() + crate::HEADER_SIZE + OVERHEAD)
        {
            self.blocked = true;
            return Err(SendError::Blocked);
        }
        self.queue_stream(now, payload_type, &payload);
        Ok(())
    }

    fn check_can_send(&self) -> Result<(), SendError> {
        if self.state != State::Open {
            Err(SendError::Closed)
        } else if !self.handshake.is_complete() {
            Err(SendError::NotReady)
        } else {
            Ok(())
        }
    }

    /// Whether we encrypt payloads of this type: those the reference encrypts (PROTOCOL.md §8.4).
    fn we_encrypt(&self, payload_type: PayloadType) -> bool {
        match self.role {
            Role::Client => payload_type == PayloadType::Output,
            Role::Agent => matches!(
                payload_type,
                PayloadType::Output | PayloadType::StdErr | PayloadType::ExitCode
            ),
        }
    }

    /// Gives `payload` the next sequence number (encrypting it if the session is encrypted and
    /// its type calls for it), keeps it until acknowledged and sends it when the transport
    /// allows.
    fn queue_stream(&mut self, now: Instant, payload_type: PayloadType, payload: &[u8]) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (message_type, flags) = match self.role {
            Role::Client => (MessageType::InputStreamData, 0),
            Role::Agent => (
                MessageType::OutputStreamData,
                if seq == 0 { Frame::FLAG_SYN } else { 0 },
            ),
        };
        let seal = self.we_encrypt(payload_type);
        let frame = self.frame(message_type, seq, flags, payload_type, payload, seal);
        self.send.push(seq, frame);
        self.stats.messages_sent += 1;
        if self.can_transmit()
            && let Some(entry) = self.send.newest_mut()
        {
            entry.sent_at = Some(now);
            entry.first_sent_at = Some(now);
            entry.sends = 1;
            self.transmits.push_back(entry.frame.clone());
            let due = now + self.rtt.timeout(1);
            self.retransmit_at = Some(self.retransmit_at.map_or(due, |at| at.min(due)));
        }
    }

    fn can_transmit(&self) -> bool {
        self.transport_up && !self.paused
    }

    /// A frame with a fresh random id and the current wall-clock time; with `seal` (and a
    /// cipher) the payload is encrypted straight into the frame buffer.
    fn frame(
        &mut self,
        message_type: MessageType,
        seq: i64,
        flags: u64,
        payload_type: PayloadType,
        payload: &[u8],
        seal: bool,
    ) -> Bytes {
        let header = Frame {
            message_type,
            schema_version: crate::SCHEMA_VERSION,
            created_date: self.clock.1.max(1),
            sequence_number: seq,
            flags,
            message_id: self.random_id(),
            payload_type,
            payload: Bytes::new(),
        };
        let cipher = if seal { self.cipher.as_mut() } else { None };
        header
            .encode_around(payload.len() + OVERHEAD, |out| match cipher {
                Some(cipher) => cipher.seal_into(payload, out),
                None => out.extend_from_slice(payload),
            })
            .expect("session frames have a known type, a payload, a date and an id")
    }

    /// A message outside the stream (acknowledgements, session state): sent now or never.
    fn send_control(&mut self, message_type: MessageType, payload: Vec<u8>) {
        let flags = Frame::FLAG_SYN | Frame::FLAG_FIN;
        let frame = self.frame(message_type, 0, flags, PayloadType::Unset, &payload, false);
        if self.transport_up {
            self.transmits.push_back(frame);
        }
    }

    fn random_id(&mut self) -> Uuid {
        let mut bytes = [0; 16];
        self.entropy.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut bytes = [0; N];
        self.entropy.fill(&mut bytes);
        bytes
    }

    fn wall_at(&self, now: Instant) -> (Instant, u64) {
        let (then, wall_ms) = self.clock;
        let elapsed = now.saturating_duration_since(then).as_millis() as u64;
        (now, wall_ms + elapsed)
    }

    // ----- retransmission ------------------------------------------------------------------

    /// Sends again every message whose timeout passed, oldest first, each backing off alone.
    fn retransmit_expired(&mut self, now: Instant) {
        if !self.can_transmit() {
            self.retransmit_at = None;
            return;
        }
        let mut next: Option<Instant> = None;
        for entry in self.send.iter_mut() {
            let Some(sent_at) = entry.sent_at else {
                continue;
            };
            let mut due = sent_at + self.rtt.timeout(entry.sends);
            if due <= now {
                entry.sent_at = Some(now);
                entry.sends += 1;
                self.transmits.push_back(entry.frame.clone());
                self.stats.retransmits += 1;
                due = now + self.rtt.timeout(entry.sends);
            }
            next = Some(next.map_or(due, |at| at.min(due)));
        }
        self.retransmit_at = next;
    }

    /// Sends everything held, now: after a reconnect or a resumed publication.
    fn resend_all(&mut self, now: Instant) {
        if !self.can_transmit() {
            return;
        }
        let mut next: Option<Instant> = None;
        for entry in self.send.iter_mut() {
            if entry.sends > 0 {
                self.stats.retransmits += 1;
            } else {
                entry.first_sent_at = Some(now);
            }
            entry.sends += 1;
            entry.sent_at = Some(now);
            self.transmits.push_back(entry.frame.clone());
            let due = now + self.rtt.timeout(entry.sends);
            next = Some(next.map_or(due, |at| at.min(due)));
        }
        self.retransmit_at = next;
    }

    fn resume(&mut self, now: Instant) {
        if self.paused {
            self.paused = false;
            self.resend_unsent(now);
        }
    }

    /// Sends the messages created while paused.
    fn resend_unsent(&mut self, now: Instant) {
        if !self.can_transmit() {
            return;
        }
        for entry in self.send.iter_mut().filter(|entry| entry.sends == 0) {
            entry.sends = 1;
            entry.sent_at = Some(now);
            entry.first_sent_at = Some(now);
            self.transmits.push_back(entry.frame.clone());
        }
        // The retransmission timer was idle while sending was not allowed.
        self.retransmit_at = self
            .send
            .iter_mut()
            .filter_map(|entry| Some(entry.sent_at? + self.rtt.timeout(entry.sends)))
            .min();
    }

    // ----- receiving -----------------------------------------------------------------------

    fn on_ack(&mut self, now: Instant, frame: &Frame) {
        // Any acknowledgement means the peer is back: the agent ends its pause (PROTOCOL.md §7.5).
        self.resume(now);
        let Some(ack) = self.read_json::<Acknowledge>(frame) else {
            return;
        };
        let seq = ack.acknowledged_message_sequence_number;
        let acked = if ack.is_cumulative == Some(true) {
            self.send.acknowledge_up_to(seq)
        } else {
            self.send.acknowledge(seq)
        };
        if let Some(entry) = acked
            && entry.sends == 1
            && let Some(sent) = entry.first_sent_at
        {
            self.rtt.on_sample(now.saturating_duration_since(sent));
        }
        if self.send.is_empty() {
            self.retransmit_at = None;
        }
        if self.blocked
            && self
                .send
                .has_room_for(self.wire.max_payload + crate::HEADER_SIZE + OVERHEAD)
        {
            self.blocked = false;
            self.events.push_back(Event::Writable);
        }
        self.check_drained();
    }

    /// Parses a JSON payload, reporting an unreadable one as [`Event::Error`].
    fn read_json<T: JsonPayload>(&mut self, frame: &Frame) -> Option<T> {
        match T::from_json(&frame.payload) {
            Ok(value) => Some(value),
            Err(error) => {
                let payload_type = frame.payload_type;
                self.events.push_back(Event::Error(SessionError::Payload {
                    payload_type,
                    error,
                }));
                None
            }
        }
    }

    fn on_stream(&mut self, now: Instant, frame: Frame) {
        // Any stream data means the peer is back: clear the pause (PROTOCOL.md §7.5).
        self.resume(now);
        match self.recv.arrive(&frame) {
            Arrival::Duplicate => {
                // Unlike the Go client, re-acknowledge: the first ack may have been lost.
                self.stats.duplicates_received += 1;
                self.send_ack(&frame);
            }
            Arrival::Buffered => self.send_ack(&frame),
            Arrival::Dropped => {}
            Arrival::InOrder => {
                if self.process_in_order(now, frame) {
                    while let Some(next) = self.recv.take_next() {
                        // Already acknowledged: if it cannot be processed (it failed to
                        // decrypt) it stays, and the error event says why the stream stalls.
                        if !self.process(now, next.clone(), true) {
                            self.recv.put_back(next);
                            break;
                        }
                        self.stats.messages_received += 1;
                        self.recv.advance();
                    }
                }
            }
        }
    }

    /// Processes the expected message and acknowledges it; `false` if it could not be processed
    /// (it is then neither acknowledged nor counted, and the peer sends it again).
    fn process_in_order(&mut self, now: Instant, frame: Frame) -> bool {
        let handshake_type = matches!(
            frame.payload_type,
            PayloadType::HandshakeRequest
                | PayloadType::HandshakeComplete
                | PayloadType::EncChallengeRequest
        );
        if self.role == Role::Client && handshake_type {
            // The Go client acknowledges handshake messages first (PROTOCOL.md §15.3).
            self.send_ack(&frame);
            self.recv.advance();
            self.stats.messages_received += 1;
            self.process(now, frame, true);
            return true;
        }
        // Keep only the header for the acknowledgement: an unshared payload decrypts in place.
        let ack_copy = Frame {
            payload: Bytes::new(),
            ..frame.clone()
        };
        if !self.process(now, frame, false) {
            return false;
        }
        self.stats.messages_received += 1;
        self.recv.advance();
        self.acknowledge_in_order(now, &ack_copy);
        true
    }

    /// Handles one in-order stream message; `acked` says it was already acknowledged.
    fn process(&mut self, now: Instant, frame: Frame, acked: bool) -> bool {
        match (self.role, frame.payload_type) {
            (Role::Agent, PayloadType::HandshakeResponse) => {
                self.on_handshake_response(now, &frame)
            }
            (Role::Agent, PayloadType::EncChallengeResponse) => {
                self.on_challenge_response(now, &frame)
            }
            (Role::Client, PayloadType::HandshakeRequest) => self.on_handshake_request(now, &frame),
            (Role::Client, PayloadType::EncChallengeRequest) => {
                self.on_challenge_request(now, &frame)
            }
            (Role::Client, PayloadType::HandshakeComplete) => self.on_handshake_complete(&frame),
            _ if !self.handshake.is_complete() => self.before_handshake(frame, acked),
            _ => self.deliver(frame),
        }
    }

    /// Whether the peer encrypts payloads of this type (PROTOCOL.md §8.4).
    fn peer_encrypts(&self, payload_type: PayloadType) -> bool {
        match self.role {
            Role::Client => matches!(
                payload_type,
                PayloadType::Output | PayloadType::StdErr | PayloadType::ExitCode
            ),
            Role::Agent => payload_type == PayloadType::Output,
        }
    }

    /// Whether AES-GCM will authenticate this frame's payload as soon as it arrives, which makes
    /// the SHA-256 digest check redundant: an encrypted stream message that is next in order is
    /// decrypted at once, and one that fails is dropped unacknowledged, exactly as a digest
    /// mismatch would be. Early messages are acknowledged before they are decrypted, so their
    /// digest is still checked.
    fn authenticated_on_arrival(&self, header: &Header) -> bool {
        self.cipher.is_some()
            && self.handshake.is_complete()
            && header.message_type == self.peer_stream_type()
            && header.sequence_number == self.recv.expected()
            && self.peer_encrypts(header.payload_type)
    }

    /// Delivers application data to the application, decrypting what the reference encrypts.
    fn deliver(&mut self, frame: Frame) -> bool {
        let encrypted = self.peer_encrypts(frame.payload_type);
        let data = match &mut self.cipher {
            Some(cipher) if encrypted => match cipher.open_bytes(frame.payload) {
                Ok(plaintext) => plaintext,
                Err(error) => {
                    self.events.push_back(Event::Error(SessionError::Decrypt {
                        sequence_number: frame.sequence_number,
                        error,
                    }));
                    return false;
                }
            },
            _ => frame.payload,
        };
        let payload_type = frame.payload_type;
        let event = match payload_type {
            PayloadType::Size => match TerminalSize::from_json(&data) {
                Ok(size) => Event::Resize(size),
                Err(error) => Event::Error(SessionError::Payload {
                    payload_type,
                    error,
                }),
            },
            PayloadType::Flag => match Flag::decode(&data) {
                Ok(flag) => Event::Flag(flag),
                Err(error) => Event::Error(SessionError::Payload {
                    payload_type,
                    error,
                }),
            },
            PayloadType::ExitCode => match ExitCode::decode(&data) {
                Ok(code) => Event::ExitCode(code),
                Err(error) => Event::Error(SessionError::Payload {
                    payload_type,
                    error,
                }),
            },
            _ => Event::Stream { payload_type, data },
        };
        self.events.push_back(event);
        true
    }

    /// Acknowledges a processed in-order message: at once, or folded into a cumulative
    /// acknowledgement when the extension is on.
    fn acknowledge_in_order(&mut self, now: Instant, frame: &Frame) {
        if !self.wire.cumulative_ack {
            return self.send_ack(frame);
        }
        let pending = self.pending_ack.get_or_insert(PendingAck {
            seq: frame.sequence_number,
            message_id: frame.message_id,
            count: 0,
            due: now + CUMULATIVE_ACK_DELAY,
        });
        pending.seq = frame.sequence_number;
        pending.message_id = frame.message_id;
        pending.count += 1;
        if pending.count >= CUMULATIVE_ACK_EVERY {
            self.flush_cumulative_ack();
        }
    }

    fn flush_cumulative_ack(&mut self) {
        if let Some(pending) = self.pending_ack.take() {
            let message_type = self.peer_stream_type();
            let ack = Acknowledge {
                acknowledged_message_type: message_type.to_string(),
                acknowledged_message_id: pending.message_id.hyphenated().to_string(),
                acknowledged_message_sequence_number: pending.seq,
                is_sequential_message: true,
                is_cumulative: Some(true),
            };
            self.stats.acks_sent += 1;
            self.send_control(MessageType::Acknowledge, ack.to_json());
        }
    }

    fn send_ack(&mut self, frame: &Frame) {
        self.stats.acks_sent += 1;
        self.send_control(
            MessageType::Acknowledge,
            Acknowledge::for_frame(frame).to_json(),
        );
    }

    fn peer_stream_type(&self) -> MessageType {
        match self.role {
            Role::Client => MessageType::OutputStreamData,
            Role::Agent => MessageType::InputStreamData,
        }
    }

    // ----- ending --------------------------------------------------------------------------

    fn check_drained(&mut self) {
        if matches!(self.state, State::Closing { .. }) && self.send.is_empty() {
            self.finish_local(CloseReason::Local);
        }
    }

    /// Local end of the session: the agent reports `Terminating` (PROTOCOL.md §5.6).
    fn finish_local(&mut self, reason: CloseReason) {
        if let Handshake::Agent(agent) = &self.handshake {
            let session_id = agent.session_id().to_owned();
            self.send_control(
                MessageType::AgentSessionState,
                AgentSessionState {
                    schema_version: 1,
                    session_state: AgentSessionState::TERMINATING.into(),
                    session_id,
                }
                .to_json(),
            );
        }
        self.finish(reason);
    }

    fn finish(&mut self, reason: CloseReason) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.retransmit_at = None;
            self.pending_ack = None;
            self.events.push_back(Event::Closed(reason));
        }
    }

    fn fail(&mut self, error: SessionError) {
        self.finish(CloseReason::Failed(error));
    }
}
