//! The routing part of a gateway: accepts data channels on
//! `/v1/data-channel/<session-id>`, checks each opening token, pairs the client's and the
//! agent's connection of a session and forwards their messages without reading them.
//!
//! Flow control uses the protocol's own messages (SPEC §6.6): while one side is absent, or
//! while the messages queued toward it pass [`RelayConfig::soft_limit`], the other side is
//! sent `pause_publication`; `start_publication` follows when the queue has drained to half
//! that. The relay keeps reading (so pings are answered) until a queue reaches
//! [`RelayConfig::hard_limit`], which only a peer that ignores the pause can cause; then it
//! stops reading that peer. Queued messages survive a side's reconnection.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use ssm_session::net::relay::{Relay, RelayConfig, TokenTable};
//! use ssm_session::session::Role;
//!
//! # async fn run() -> std::io::Result<()> {
//! let tokens = Arc::new(TokenTable::default());
//! let relay = Relay::bind("127.0.0.1:0", RelayConfig::new(tokens.clone())).await?;
//! let url = relay.stream_url("session-1");
//! let client_token = tokens.issue("session-1", Role::Client);
//! let agent_token = tokens.issue("session-1", Role::Agent);
//! // hand `url` and the tokens to net::connect and net::connect_agent
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::dial::websocket_config;
use crate::entropy::{Entropy, SystemEntropy};
use crate::payload::{AgentOpenDataChannelInput, ChannelClosed, JsonPayload};
use crate::session::Role;
use crate::{Frame, MessageType, PayloadType, SCHEMA_VERSION};

/// Path prefix of data-channel upgrades; the session id follows.
pub const PATH_PREFIX: &str = "/v1/data-channel/";
/// Messages a writer takes from its queue at once before flushing.
const WRITE_BATCH: usize = 256;

/// Relay settings.
#[derive(Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Valid opening tokens.
    pub tokens: Arc<TokenTable>,
    /// Serve `wss://` with this configuration (see [`super::server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bytes queued toward one side above which the other side is paused.
    pub soft_limit: usize,
    /// Bytes queued toward one side above which the relay stops reading the other side.
    pub hard_limit: usize,
    /// How long a new connection may take for TLS, the upgrade, and its opening message, each.
    pub open_timeout: Duration,
}

impl RelayConfig {
    /// Plain `ws://`, 4 MiB soft and 16 MiB hard queue limits, 10 s to open.
    pub fn new(tokens: Arc<TokenTable>) -> Self {
        RelayConfig {
            tokens,
            tls: None,
            soft_limit: 4 << 20,
            hard_limit: 16 << 20,
            open_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("tls", &self.tls.is_some())
            .field("soft_limit", &self.soft_limit)
            .field("hard_limit", &self.hard_limit)
            .field("open_timeout", &self.open_timeout)
            .finish_non_exhaustive()
    }
}

/// Single-use, short-lived opening tokens, each bound to a session and a side. Only SHA-256
/// digests are kept, so a lookup reveals nothing about a token through timing and a dump
/// reveals no token.
pub struct TokenTable {
    digests: Mutex<HashMap<[u8; 32], Issued>>,
    lifetime: Duration,
}

struct Issued {
    session_id: String,
    side: Role,
    expires: std::time::Instant,
}

impl Default for TokenTable {
    /// Tokens valid for 60 seconds.
    fn default() -> Self {
        TokenTable::new(Duration::from_secs(60))
    }
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenTable { .. }")
    }
}

impl TokenTable {
    /// Tokens that must be redeemed within `lifetime` of being issued.
    pub fn new(lifetime: Duration) -> Self {
        TokenTable {
            digests: Mutex::new(HashMap::new()),
            lifetime,
        }
    }

    /// A new random token for `side` of `session_id`. Expired tokens are forgotten here, so
    /// the table holds at most the tokens of one lifetime.
    pub fn issue(&self, session_id: &str, side: Role) -> String {
        let mut bytes = [0; 32];
        SystemEntropy::new().fill(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = std::time::Instant::now();
        let mut digests = lock(&self.digests);
        digests.retain(|_, issued| issued.expires > now);
        digests.insert(
            digest(&token),
            Issued {
                session_id: session_id.to_owned(),
                side,
                expires: now + self.lifetime,
            },
        );
        token
    }

    /// Forgets every unused token of `session_id`, so an ended session cannot be reopened.
    pub fn revoke_session(&self, session_id: &str) {
        lock(&self.digests).retain(|_, issued| issued.session_id != session_id);
    }

    /// Consumes `token` if it was issued for `side` of `session_id` and has not expired.
    fn redeem(&self, session_id: &str, side: Role, token: &str) -> bool {
        let mut digests = lock(&self.digests);
        let Some(issued) = digests.remove(&digest(token)) else {
            return false;
        };
        let matches = issued.session_id == session_id && issued.side == side;
        if !matches {
            digests.insert(digest(token), issued); // not this connection's to consume
            return false;
        }
        issued.expires > std::time::Instant::now()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running relay; dropping it (or [`Relay::shutdown`]) closes every connection at once.
pub struct Relay {
    addr: SocketAddr,
    tls: bool,
    hub: Hub,
    tasks: tokio::task::JoinHandle<()>,
}

/// The pairing and forwarding state of a relay without a listener: a gateway that accepts
/// connections itself hands each upgraded data channel to [`Hub::serve`].
#[derive(Clone)]
pub struct Hub {
    state: Arc<State>,
}

/// Bytes forwarded for one session, whole websocket messages counted.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// From the client toward the agent.
    pub client_to_agent: AtomicU64,
    /// From the agent toward the client.
    pub agent_to_client: AtomicU64,
}

impl Hub {
    /// A hub with `config` (its `tls` is not used: the caller terminates TLS).
    pub fn new(config: RelayConfig) -> Hub {
        Hub {
            state: Arc::new(State {
                config,
                sessions: Mutex::new(HashMap::new()),
                stats: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts counting the bytes of `session_id`; the counters live until [`Hub::end`].
    pub fn register(&self, session_id: &str) -> Arc<ChannelStats> {
        lock(&self.state.stats)
            .entry(session_id.to_owned())
            .or_default()
            .clone()
    }

    /// Runs one data channel whose upgrade request named `session_id`: reads the opening
    /// message, checks its token and forwards until the connection drops.
    pub async fn serve<S>(&self, ws: WebSocketStream<S>, session_id: String)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        serve_channel(ws, session_id, self.state.clone()).await;
    }

    /// Which sides of `session_id` are connected now: `(client, agent)`.
    pub fn connected(&self, session_id: &str) -> (bool, bool) {
        let sessions = lock(&self.state.sessions);
        sessions.get(session_id).map_or((false, false), |slot| {
            (
                slot.sides[0].connection.is_some(),
                slot.sides[1].connection.is_some(),
            )
        })
    }

    /// Ends `session_id` for good: both sides get `channel_closed` with `output` after what is
    /// already queued toward them, then their connections close; unused tokens are revoked.
    pub fn end(&self, session_id: &str, output: &str) {
        self.state.config.tokens.revoke_session(session_id);
        lock(&self.state.stats).remove(session_id);
        let mut sessions = lock(&self.state.sessions);
        let Some(slot) = sessions.get_mut(session_id) else {
            return;
        };
        for endpoint in &mut slot.sides {
            let frame = channel_closed_frame(session_id, output);
            endpoint.outbox_bytes += frame.len();
            endpoint.outbox.push_back(frame);
            endpoint.closing = true;
            endpoint.writer.notify_one();
        }
    }

    /// Drops `side`'s connection of `session_id` abruptly (no Close frame), as a network
    /// failure would. Returns whether there was one.
    pub fn disconnect(&self, session_id: &str, side: Role) -> bool {
        let sessions = lock(&self.state.sessions);
        let Some(kill) = sessions
            .get(session_id)
            .and_then(|slot| slot.sides[index(side)].connection.as_ref())
        else {
            return false;
        };
        kill.notify_one();
        true
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Relay {
    /// Listens on `addr` and serves until dropped.
    pub async fn bind(addr: impl ToSocketAddrs, config: RelayConfig) -> io::Result<Relay> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let tls = config.tls.is_some();
        let hub = Hub::new(config);
        let tasks = tokio::spawn(accept_loop(listener, hub.state.clone()));
        Ok(Relay {
            addr,
            tls,
            hub,
            tasks,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stream URL of `session_id`, as StartSession would return it. With TLS the host is
    /// `localhost` (the name a test certificate is made for).
    pub fn stream_url(&self, session_id: &str) -> String {
        let (scheme, host) = match self.tls {
            true => ("wss", "localhost".to_owned()),
            false => ("ws", self.addr.ip().to_string()),
        };
        format!(
            "{scheme}://{host}:{}{PATH_PREFIX}{session_id}?role=publish_subscribe",
            self.addr.port()
        )
    }

    /// Drops `side`'s connection of `session_id` abruptly (no Close frame), as a network
    /// failure would. Returns whether there was one.
    pub fn disconnect(&self, session_id: &str, side: Role) -> bool {
        self.hub.disconnect(session_id, side)
    }

    /// The hub behind this relay.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Stops listening and drops every connection.
    pub fn shutdown(self) {
        self.tasks.abort();
    }
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.tasks.abort();
    }
}

struct State {
    config: RelayConfig,
    sessions: Mutex<HashMap<String, Slot>>,
    stats: Mutex<HashMap<String, Arc<ChannelStats>>>,
}

/// Both sides of one session.
#[derive(Default)]
struct Slot {
    sides: [Endpoint; 2],
    stats: Arc<ChannelStats>,
}

/// One side of a session: its current connection and the messages waiting to be written to
/// it.
#[derive(Default)]
struct Endpoint {
    /// Set while connected: notified to drop the connection.
    connection: Option<Arc<Notify>>,
    generation: u64,
    outbox: VecDeque<Bytes>,
    outbox_bytes: usize,
    /// Whether this side was last told to pause.
    paused: bool,
    /// The session was ended: close the connection once the outbox is written.
    closing: bool,
    /// Wakes this side's writer when its outbox gains messages.
    writer: Arc<Notify>,
    /// Wakes this side's reader when the other side's outbox drains.
    reader: Arc<Notify>,
}

fn index(side: Role) -> usize {
    match side {
        Role::Client => 0,
        Role::Agent => 1,
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                connections.spawn(serve_tcp(tcp, state.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_tcp(tcp: TcpStream, state: Arc<State>) {
    let _ = tcp.set_nodelay(true);
    match state.config.tls.clone() {
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
            if let Ok(Ok(stream)) = tokio::time::timeout(state.config.open_timeout, accept).await {
                serve(stream, state).await;
            }
        }
        None => serve(tcp, state).await,
    }
}

/// Upgrades, checks the opening message and forwards until either end drops.
async fn serve<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut session_id = None;
    // The signature is tungstenite's `Callback`; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        match request.uri().path().strip_prefix(PATH_PREFIX) {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                session_id = Some(id.to_owned());
                Ok(response)
            }
            _ => {
                let mut refusal = ErrorResponse::new(Some("no such data channel".into()));
                *refusal.status_mut() = StatusCode::NOT_FOUND;
                Err(refusal)
            }
        }
    };
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(websocket_config()));
    let Ok(Ok(ws)) = tokio::time::timeout(state.config.open_timeout, upgrade).await else {
        return;
    };
    let Some(session_id) = session_id else { return };
    serve_channel(ws, session_id, state).await;
}

/// Checks the opening message of an upgraded data channel and forwards until either end drops.
async fn serve_channel<S>(mut ws: WebSocketStream<S>, session_id: String, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let opening = tokio::time::timeout(state.config.open_timeout, ws.next()).await;
    let side = match opening {
        Ok(Some(Ok(Message::Text(text)))) => opening_side(&state, &session_id, text.as_bytes()),
        _ => Err("expected the opening message"),
    };
    let side = match side {
        Ok(side) => side,
        Err(reason) => {
            let close = CloseFrame {
                code: CloseCode::Policy,
                reason: reason.into(),
            };
            let _ = ws.close(Some(close)).await;
            return;
        }
    };
    let (sink, mut stream) = ws.split();
    let (kill, generation) = attach(&state, &session_id, side);
    let ended = tokio::select! {
        () = kill.notified() => Ended::Dropped,
        () = forward_in(&state, &session_id, side, &mut stream) => Ended::Dropped,
        ended = forward_out(&state, &session_id, side, sink) => ended,
    };
    detach(&state, &session_id, side, generation);
    if ended == Ended::Closed {
        // Closing handshake: read (and discard) until the peer's Close. Dropping the socket
        // with its data unread would make the kernel reset the connection, and the peer could
        // lose the channel_closed still in its receive buffer and try to resume.
        let drain = async {
            while let Some(Ok(message)) = stream.next().await {
                if message.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
    }
}

/// How a connection's writer stopped.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The session ended: its last messages and a Close frame were sent.
    Closed,
    /// The connection failed or was replaced.
    Dropped,
}

/// How long a connection ended by the session waits for the peer's Close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Which side the opening message is from, if its token is valid for this session. Both
/// openings read as the agent's shape; only the agent's names an instance (SPEC §4.1, §4.2).
fn opening_side(state: &State, session_id: &str, text: &[u8]) -> Result<Role, &'static str> {
    let opening = AgentOpenDataChannelInput::from_json(text)
        .map_err(|_| "the opening message is not valid JSON")?;
    let side = match opening.client_instance_id.is_empty() {
        true => Role::Client,
        false => Role::Agent,
    };
    match state
        .config
        .tokens
        .redeem(session_id, side, &opening.token_value)
    {
        true => Ok(side),
        false => Err("token refused"),
    }
}

/// Registers a new connection for `side`, replacing (and dropping) any previous one.
fn attach(state: &State, session_id: &str, side: Role) -> (Arc<Notify>, u64) {
    let mut sessions = lock(&state.sessions);
    let slot = sessions
        .entry(session_id.to_owned())
        .or_insert_with(|| Slot {
            sides: Default::default(),
            stats: lock(&state.stats)
                .get(session_id)
                .cloned()
                .unwrap_or_default(),
        });
    let endpoint = &mut slot.sides[index(side)];
    if let Some(previous) = endpoint.connection.take() {
        previous.notify_one();
    }
    let kill = Arc::new(Notify::new());
    endpoint.connection = Some(kill.clone());
    endpoint.generation += 1;
    // A new connection starts unpaused (the session resumes on a new transport).
    endpoint.paused = false;
    let generation = endpoint.generation;
    let writer = endpoint.writer.clone();
    update_publication(state, session_id, slot, side);
    update_publication(state, session_id, slot, other(side));
    writer.notify_one();
    (kill, generation)
}

fn detach(state: &State, session_id: &str, side: Role, generation: u64) {
    let mut sessions = lock(&state.sessions);
    let Some(slot) = sessions.get_mut(session_id) else {
        return;
    };
    let endpoint = &mut slot.sides[index(side)];
    if endpoint.generation != generation {
        return; // already replaced by a newer connection
    }
    endpoint.connection = None;
    if slot
        .sides
        .iter()
        .all(|endpoint| endpoint.connection.is_none())
    {
        sessions.remove(session_id);
        return;
    }
    update_publication(state, session_id, slot, other(side));
}

fn other(side: Role) -> Role {
    match side {
        Role::Client => Role::Agent,
        Role::Agent => Role::Client,
    }
}

/// Tells `side` to pause or start publishing, if its peer's presence or backlog changed that.
fn update_publication(state: &State, session_id: &str, slot: &mut Slot, side: Role) {
    let peer = &slot.sides[index(other(side))];
    let pause = if peer.connection.is_none() || peer.outbox_bytes > state.config.soft_limit {
        true
    } else if peer.outbox_bytes <= state.config.soft_limit / 2 {
        false
    } else {
        return; // between the marks: leave it as it is
    };
    let endpoint = &mut slot.sides[index(side)];
    if endpoint.connection.is_none() || endpoint.paused == pause {
        return;
    }
    endpoint.paused = pause;
    let message_type = match pause {
        true => MessageType::PausePublication,
        false => MessageType::StartPublication,
    };
    let frame = publication_frame(message_type, session_id);
    // Ahead of queued data: it is about what the side should send, not what it receives.
    endpoint.outbox_bytes += frame.len();
    endpoint.outbox.push_front(frame);
    endpoint.writer.notify_one();
}

/// The `channel_closed` frame that ends a session at either side (SPEC §4.4).
fn channel_closed_frame(session_id: &str, output: &str) -> Bytes {
    let message_id = random_uuid();
    let payload = ChannelClosed {
        message_id: message_id.to_string(),
        created_date: wall_ms().to_string(),
        destination_id: session_id.to_owned(),
        session_id: session_id.to_owned(),
        message_type: MessageType::ChannelClosed.to_string(),
        schema_version: 1,
        output: output.to_owned(),
    };
    relay_frame(
        MessageType::ChannelClosed,
        message_id,
        payload.to_json().into(),
    )
}

fn random_uuid() -> uuid::Uuid {
    let mut id = [0; 16];
    SystemEntropy::new().fill(&mut id);
    uuid::Builder::from_random_bytes(id).into_uuid()
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_millis() as u64)
        .max(1)
}

/// A frame the relay itself originates (sequence 0, flags SYN|FIN, no payload type).
fn relay_frame(message_type: MessageType, message_id: uuid::Uuid, payload: Bytes) -> Bytes {
    Frame {
        message_type,
        schema_version: SCHEMA_VERSION,
        created_date: wall_ms(),
        sequence_number: 0,
        flags: Frame::FLAG_SYN | Frame::FLAG_FIN,
        message_id,
        payload_type: PayloadType::Unset,
        payload,
    }
    .to_bytes()
    .unwrap_or_default()
}

/// A `pause_publication` / `start_publication` frame. No peer reads the payload (SPEC §4.5,
/// §15): ours names the message and the session, as `channel_closed` does.
fn publication_frame(message_type: MessageType, session_id: &str) -> Bytes {
    let payload = serde_json::json!({
        "MessageType": message_type.to_string(),
        "SchemaVersion": 1,
        "SessionId": session_id,
    });
    relay_frame(message_type, random_uuid(), payload.to_string().into())
}

/// Reads `side` and queues its messages toward the other side.
async fn forward_in<S>(
    state: &State,
    session_id: &str,
    side: Role,
    stream: &mut SplitStream<WebSocketStream<S>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let to = other(side);
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Text(text) => Bytes::from(text),
            Message::Close(_) => return,
            _ => continue, // pings are answered by tungstenite
        };
        loop {
            let full = {
                let mut sessions = lock(&state.sessions);
                let Some(slot) = sessions.get_mut(session_id) else {
                    return;
                };
                let queue = &mut slot.sides[index(to)];
                if queue.outbox_bytes > state.config.hard_limit {
                    Some(slot.sides[index(side)].reader.clone())
                } else {
                    queue.outbox_bytes += data.len();
                    queue.outbox.push_back(data.clone());
                    queue.writer.notify_one();
                    let counter = match side {
                        Role::Client => &slot.stats.client_to_agent,
                        Role::Agent => &slot.stats.agent_to_client,
                    };
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                    update_publication(state, session_id, slot, side);
                    None
                }
            };
            match full {
                Some(drained) => drained.notified().await,
                None => break,
            }
        }
    }
}

/// Writes what is queued toward `side`.
async fn forward_out<S>(
    state: &State,
    session_id: &str,
    side: Role,
    mut sink: SplitSink<WebSocketStream<S>, Message>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let from = other(side);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let wake = {
            let mut sessions = lock(&state.sessions);
            let Some(slot) = sessions.get_mut(session_id) else {
                return Ended::Dropped;
            };
            let endpoint = &mut slot.sides[index(side)];
            while batch.len() < WRITE_BATCH {
                let Some(message) = endpoint.outbox.pop_front() else {
                    break;
                };
                endpoint.outbox_bytes -= message.len();
                batch.push(message);
            }
            let writer = endpoint.writer.clone();
            let finished = endpoint.closing && endpoint.outbox.is_empty();
            if !batch.is_empty() {
                slot.sides[index(from)].reader.notify_one();
                update_publication(state, session_id, slot, from);
            }
            (writer, finished)
        };
        let (wake, finished) = wake;
        if batch.is_empty() && finished {
            let _ = sink.send(Message::Close(None)).await;
            return Ended::Closed;
        }
        if batch.is_empty() {
            wake.notified().await;
            continue;
        }
        for message in batch.drain(..) {
            if sink.feed(Message::Binary(message)).await.is_err() {
                return Ended::Dropped;
            }
        }
        if sink.flush().await.is_err() {
            return Ended::Dropped;
        }
    }
}
