//! The routing part of a gateway: accepts data channels on
//! `/v1/data-channel/<session-id>`, checks each opening token, pairs the client's and the
//! agent's connection of a session and forwards their messages without reading them.
//!
//! Flow control uses the protocol's own messages (PROTOCOL.md §7.5): while one side is absent, or
//! while the messages queued toward it pass [`RelayConfig::soft_limit`], the other side is
//! sent `pause_publication`; `start_publication` follows when the queue has drained to half
//! that. The relay keeps reading (so pings are answered) until a queue reaches
//! [`RelayConfig::hard_limit`], which only a peer that ignores the pause can cause; then it
//! stops reading that peer. Queued messages survive a side's reconnection.
//!
//! All of that is decided by the sans-IO [`crate::relay::Relay`]; this module is its tokio
//! driver: one task per connection feeds it and writes what it hands out, and one timer task
//! per hub runs its deadlines (abandoned sessions, closes that linger).
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

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

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
use super::runtime::{lock, wall_ms};
use crate::entropy::{Entropy, SystemEntropy};
use crate::payload::{AgentOpenDataChannelInput, JsonPayload};
use crate::relay::{self, ConnectionId, Event, Refused};
use crate::session::Role;

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
    /// Bytes queued across all sessions above which the relay stops reading senders whose
    /// peer already has something queued ([`crate::relay::Config::total_limit`]).
    pub total_limit: usize,
    /// How long a new connection may take for TLS, the upgrade, and its opening message, each.
    pub open_timeout: Duration,
    /// How long a session's queues are kept while neither side is connected
    /// ([`crate::relay::Config::abandon_after`]); a gateway that ends sessions itself keeps
    /// them longer than its resume window.
    pub abandon_after: Duration,
}

impl RelayConfig {
    /// Plain `ws://`, 4 MiB soft and 16 MiB hard queue limits, 256 MiB in all, 10 s to open,
    /// queues of a session without connections kept 60 s.
    pub fn new(tokens: Arc<TokenTable>) -> Self {
        RelayConfig {
            tokens,
            tls: None,
            soft_limit: 4 << 20,
            hard_limit: 16 << 20,
            total_limit: 256 << 20,
            open_timeout: Duration::from_secs(10),
            abandon_after: relay::Config::default().abandon_after,
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("tls", &self.tls.is_some())
            .field("soft_limit", &self.soft_limit)
            .field("hard_limit", &self.hard_limit)
            .field("total_limit", &self.total_limit)
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
    fn redeem(&self, session_id: &str, side: Role, token: &str) -> Result<(), OpenRefused> {
        let mut digests = lock(&self.digests);
        let Some(issued) = digests.remove(&digest(token)) else {
            return Err(OpenRefused::UnknownToken);
        };
        let refused = if issued.session_id != session_id {
            Some(OpenRefused::OtherSession)
        } else if issued.side != side {
            Some(OpenRefused::WrongSide(side))
        } else {
            None
        };
        if let Some(refused) = refused {
            digests.insert(digest(token), issued); // not this connection's to consume
            return Err(refused);
        }
        match issued.expires > std::time::Instant::now() {
            true => Ok(()),
            false => Err(OpenRefused::Expired),
        }
    }
}

/// Why the relay refused to attach a data channel; [`Hub::serve`] returns it so that the
/// caller can audit it. The messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenRefused {
    /// No text opening message arrived within [`RelayConfig::open_timeout`].
    #[error("no opening message in time: send the open_data_channel message first")]
    NoOpening,
    /// The opening message is not the open_data_channel JSON.
    #[error("the opening message is not valid open_data_channel JSON")]
    BadOpening,
    /// The token was never issued, was already used, or its session ended.
    #[error("token refused: unknown, already used or revoked; get a new one")]
    UnknownToken,
    /// The token was issued for another session.
    #[error("token refused: it was issued for another session")]
    OtherSession,
    /// The token was issued for the other side of the session.
    #[error("token refused: not issued for the {0:?} side")]
    WrongSide(Role),
    /// The token was not redeemed within its lifetime.
    #[error("token refused: expired; get a new one (ResumeSession or CreateDataChannel)")]
    Expired,
    /// The session has ended.
    #[error("the session has ended")]
    Ended,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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
        let limits = relay::Config {
            soft_limit: config.soft_limit,
            hard_limit: config.hard_limit,
            total_limit: config.total_limit,
            abandon_after: config.abandon_after,
            ..relay::Config::default()
        };
        let core = relay::Relay::new(
            limits,
            Instant::now(),
            wall_ms(),
            Box::new(SystemEntropy::new()),
        );
        Hub {
            state: Arc::new(State {
                config,
                inner: Mutex::new(Inner {
                    core,
                    connections: HashMap::new(),
                    stats: HashMap::new(),
                    armed: None,
                }),
                timer: Arc::new(Notify::new()),
                timer_started: AtomicBool::new(false),
            }),
        }
    }

    /// Starts counting the bytes of `session_id`; the counters live until [`Hub::end`].
    pub fn register(&self, session_id: &str) -> Arc<ChannelStats> {
        lock(&self.state.inner)
            .stats
            .entry(session_id.to_owned())
            .or_default()
            .clone()
    }

    /// Runs one data channel whose upgrade request named `session_id`: reads the opening
    /// message, checks its token and forwards until the connection drops. A refused opening
    /// is closed with a policy-violation Close frame and returned.
    pub async fn serve<S>(
        &self,
        ws: WebSocketStream<S>,
        session_id: String,
    ) -> Result<(), OpenRefused>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_then(ws, session_id, || {}).await
    }

    /// [`Hub::serve`], calling `opened` once the opening message's token is accepted: until
    /// then the peer has proved nothing, and a server may count it as unauthenticated.
    pub async fn serve_then<S>(
        &self,
        ws: WebSocketStream<S>,
        session_id: String,
        opened: impl FnOnce() + Send,
    ) -> Result<(), OpenRefused>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        serve_channel(ws, session_id, self.state.clone(), opened).await
    }

    /// Which sides of `session_id` are connected now: `(client, agent)`.
    pub fn connected(&self, session_id: &str) -> (bool, bool) {
        lock(&self.state.inner).core.connected(session_id)
    }

    /// Ends `session_id` for good: both sides get `channel_closed` with `output` after what is
    /// already queued toward them, then their connections close; unused tokens are revoked.
    pub fn end(&self, session_id: &str, output: &str) {
        self.state.config.tokens.revoke_session(session_id);
        self.state.with_core(|inner| {
            inner.stats.remove(session_id);
            inner.core.end(Instant::now(), session_id, output);
        });
    }

    /// Drops `side`'s connection of `session_id` abruptly (no Close frame), as a network
    /// failure would. Returns whether there was one.
    pub fn disconnect(&self, session_id: &str, side: Role) -> bool {
        self.state
            .with_core(|inner| inner.core.disconnect(Instant::now(), session_id, side))
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

/// The core and what its events are carried out with; one lock for all sessions.
struct State {
    config: RelayConfig,
    inner: Mutex<Inner>,
    /// Wakes the timer task when the core's deadline moves earlier, or the state goes away.
    timer: Arc<Notify>,
    timer_started: AtomicBool,
}

struct Inner {
    core: relay::Relay,
    /// The wake-ups of each attached connection's task.
    connections: HashMap<ConnectionId, Arc<Signals>>,
    stats: HashMap<String, Arc<ChannelStats>>,
    /// The deadline the timer task sleeps until.
    armed: Option<Instant>,
}

/// How the core's events reach one connection's task.
#[derive(Default)]
struct Signals {
    /// [`Event::Transmit`] and [`Event::Close`].
    writer: Notify,
    /// [`Event::Readable`].
    reader: Notify,
    /// [`Event::Drop`].
    kill: Notify,
    /// [`Event::Close`] came: send a Close frame once the queue is written.
    closing: AtomicBool,
}

impl State {
    /// Runs `f` on the core, then carries out the events it caused.
    fn with_core<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = lock(&self.inner);
        let result = f(&mut inner);
        inner.dispatch(&self.timer);
        result
    }

    /// Starts the task that runs the core's timers, once per hub (inside the runtime).
    fn start_timers(self: &Arc<Self>) {
        if !self.timer_started.swap(true, Ordering::Relaxed) {
            tokio::spawn(run_timers(Arc::downgrade(self), self.timer.clone()));
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.timer.notify_one(); // the timer task sees the state gone and ends
    }
}

impl Inner {
    fn dispatch(&mut self, timer: &Notify) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Transmit(conn) => self.signal(conn, |signals| signals.writer.notify_one()),
                Event::Readable(conn) => self.signal(conn, |signals| signals.reader.notify_one()),
                Event::Close(conn) => self.signal(conn, |signals| {
                    signals.closing.store(true, Ordering::Relaxed);
                    signals.writer.notify_one();
                }),
                Event::Drop(conn) => {
                    if let Some(signals) = self.connections.remove(&conn) {
                        signals.kill.notify_one();
                    }
                }
                // The gateway ends such sessions itself; the counters wait for that.
                Event::Abandoned(_) => {}
            }
        }
        let deadline = self.core.poll_timeout();
        if deadline.is_some_and(|at| self.armed.is_none_or(|armed| at < armed)) {
            self.armed = deadline;
            timer.notify_one();
        }
    }

    fn signal(&self, conn: ConnectionId, f: impl FnOnce(&Signals)) {
        if let Some(signals) = self.connections.get(&conn) {
            f(signals);
        }
    }
}

/// Sleeps until the core's next deadline and handles it, while the hub exists.
async fn run_timers(state: Weak<State>, wake: Arc<Notify>) {
    loop {
        let deadline = {
            let Some(state) = state.upgrade() else { return };
            let mut inner = lock(&state.inner);
            inner.armed = inner.core.poll_timeout();
            inner.armed
        };
        match deadline {
            Some(at) => {
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(at));
                tokio::select! {
                    () = sleep => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
        let Some(state) = state.upgrade() else { return };
        state.with_core(|inner| inner.core.handle_timeout(Instant::now()));
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
    if let Err(refused) = serve_channel(ws, session_id, state, || {}).await {
        tracing::debug!(%refused, "data channel refused");
    }
}

/// Checks the opening message of an upgraded data channel and forwards until either end drops.
async fn serve_channel<S>(
    mut ws: WebSocketStream<S>,
    session_id: String,
    state: Arc<State>,
    opened: impl FnOnce() + Send,
) -> Result<(), OpenRefused>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let opening = tokio::time::timeout(state.config.open_timeout, ws.next()).await;
    let side = match opening {
        Ok(Some(Ok(Message::Text(text)))) => opening_side(&state, &session_id, text.as_bytes()),
        _ => Err(OpenRefused::NoOpening),
    };
    let attached = side.and_then(|side| {
        state.with_core(|inner| {
            let now = Instant::now();
            inner.core.set_wall_clock(now, wall_ms());
            let conn = inner
                .core
                .attach(now, &session_id, side)
                .map_err(|_| OpenRefused::Ended)?;
            let signals = Arc::new(Signals::default());
            inner.connections.insert(conn, signals.clone());
            let stats = inner.stats.get(&session_id).cloned();
            Ok((conn, side, signals, stats))
        })
    });
    let (conn, side, signals, stats) = match attached {
        Ok(attached) => attached,
        Err(refused) => {
            let close = CloseFrame {
                code: CloseCode::Policy,
                reason: refused.to_string().into(),
            };
            let _ = ws.close(Some(close)).await;
            return Err(refused);
        }
    };
    opened();
    state.start_timers();
    let counter = stats.map(|stats| (stats, side));
    let (sink, mut stream) = ws.split();
    let ended = tokio::select! {
        () = signals.kill.notified() => Ended::Dropped,
        () = forward_in(&state, conn, &signals, counter, &mut stream) => Ended::Dropped,
        ended = forward_out(&state, conn, &signals, sink) => ended,
    };
    if ended == Ended::Closed {
        // Closing handshake: read (and discard) until the peer's Close, or until the core
        // gives up on it. Dropping the socket with its data unread would make the kernel reset
        // the connection, and the peer could lose the channel_closed still in its receive
        // buffer and try to resume.
        let drain = async {
            while let Some(Ok(message)) = stream.next().await {
                if message.is_close() {
                    break;
                }
            }
        };
        tokio::select! {
            () = signals.kill.notified() => {}
            () = drain => {}
        }
    }
    state.with_core(|inner| {
        inner.connections.remove(&conn);
        // Already detached if it was dropped or replaced.
        let _ = inner.core.detach(Instant::now(), conn);
    });
    Ok(())
}

/// How a connection's writer stopped.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The session ended: its last messages and a Close frame were sent.
    Closed,
    /// The connection failed or was replaced.
    Dropped,
}

/// Which side the opening message is from, if its token is valid for this session. Both
/// openings read as the agent's shape; only the agent's names an instance (PROTOCOL.md §5.2).
fn opening_side(state: &State, session_id: &str, text: &[u8]) -> Result<Role, OpenRefused> {
    let opening =
        AgentOpenDataChannelInput::from_json(text).map_err(|_| OpenRefused::BadOpening)?;
    let side = match opening.client_instance_id.is_empty() {
        true => Role::Client,
        false => Role::Agent,
    };
    state
        .config
        .tokens
        .redeem(session_id, side, &opening.token_value)?;
    Ok(side)
}

/// Reads the connection and hands its messages to the core; while the queue toward the peer
/// is full it stops reading and offers the refused message again when the core says so.
async fn forward_in<S>(
    state: &State,
    conn: ConnectionId,
    signals: &Signals,
    counter: Option<(Arc<ChannelStats>, Role)>,
    stream: &mut SplitStream<WebSocketStream<S>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Text(text) => Bytes::from(text),
            Message::Close(_) => return,
            _ => continue, // pings are answered by tungstenite
        };
        loop {
            let received =
                state.with_core(|inner| inner.core.receive(Instant::now(), conn, data.clone()));
            match received {
                Ok(()) => {
                    if let Some((stats, side)) = &counter {
                        let total = match side {
                            Role::Client => &stats.client_to_agent,
                            Role::Agent => &stats.agent_to_client,
                        };
                        total.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    break;
                }
                Err(Refused::Full) => signals.reader.notified().await,
                // Ended or replaced: the writer or the kill signal ends this connection.
                Err(_) => break,
            }
        }
    }
}

/// Writes what the core hands out for the connection; after the session's end, a Close.
async fn forward_out<S>(
    state: &State,
    conn: ConnectionId,
    signals: &Signals,
    mut sink: SplitSink<WebSocketStream<S>, Message>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        state.with_core(|inner| {
            inner
                .core
                .poll_transmits(Instant::now(), conn, WRITE_BATCH, &mut batch)
        });
        if batch.is_empty() {
            if signals.closing.load(Ordering::Relaxed) {
                let _ = sink.send(Message::Close(None)).await;
                return Ended::Closed;
            }
            signals.writer.notified().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refused_for_what_they_were_not_issued_for() {
        let tokens = TokenTable::default();
        let token = tokens.issue("s-1", Role::Client);
        assert_eq!(
            tokens.redeem("s-1", Role::Agent, &token),
            Err(OpenRefused::WrongSide(Role::Agent))
        );
        assert_eq!(
            tokens.redeem("s-2", Role::Client, &token),
            Err(OpenRefused::OtherSession)
        );
        // Still good for its own side, once.
        assert_eq!(tokens.redeem("s-1", Role::Client, &token), Ok(()));
        assert_eq!(
            tokens.redeem("s-1", Role::Client, &token),
            Err(OpenRefused::UnknownToken)
        );
        assert_eq!(
            tokens.redeem("s-1", Role::Client, "forged"),
            Err(OpenRefused::UnknownToken)
        );

        let expired = TokenTable::new(Duration::ZERO);
        let token = expired.issue("s-1", Role::Agent);
        assert_eq!(
            expired.redeem("s-1", Role::Agent, &token),
            Err(OpenRefused::Expired)
        );
        for refused in [OpenRefused::Expired, OpenRefused::UnknownToken] {
            assert!(refused.to_string().contains("get a new one"), "{refused}");
        }
    }
}
