//! The one task that owns a [`Session`]: it feeds the session what happens (websocket
//! messages, deadlines, application commands, KMS answers) and carries out what the session
//! asks (messages to send, events to deliver). It decides nothing about the protocol.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

use super::dial::{Ws, dial};
use super::handle::{Command, Connection, Ending, Incoming, Shared};
use super::runtime::{self, Liveness, wall_ms};
use super::{NetError, Options, TokenError};
use crate::PayloadType;
use crate::crypto::DATA_KEY_LEN;
use crate::entropy::{Entropy, SystemEntropy};
use crate::kms::{DataKey, KmsError};
use crate::payload::{
    AgentOpenDataChannelInput, JsonPayload, MESSAGE_SCHEMA_VERSION, OpenDataChannelInput,
};
use crate::session::{
    AgentConfig, ClientConfig, CloseReason, EXTENDED_MAX_PAYLOAD, Event, HandshakeInfo, KeyRequest,
    SendError, Session,
};

/// Largest write handed to the session at once (it splits it into messages).
const MAX_WRITE: usize = EXTENDED_MAX_PAYLOAD;
/// Messages waiting for the socket before application writes are no longer taken.
const MAX_QUEUED_MESSAGES: usize = 256;
/// Messages waiting for the socket before the websocket is no longer read either (what is
/// read makes acknowledgements to write). Only a peer that stopped reading gets us here, and
/// then the pong deadline, which keeps running, ends the connection.
const MAX_UNSENT: usize = 4 * MAX_QUEUED_MESSAGES;
/// Messages read in one go before the other branches get a turn.
const READ_BATCH: usize = 128;
/// The ping payload both reference peers send.
const PING: &[u8] = b"keepalive";
/// How long a finished session waits for its last messages to reach the socket.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Which end to open.
pub(crate) enum RoleConfig {
    Client(ClientConfig),
    Agent(AgentConfig),
}

/// Dials, spawns the driver and waits for the handshake.
pub(crate) async fn start(
    url: &str,
    token: &str,
    role: RoleConfig,
    options: Options,
) -> Result<Connection, NetError> {
    let span = match &role {
        RoleConfig::Client(config) => tracing::info_span!(
            "session",
            role = "client",
            session_id = %config.session_id,
            target = %config.target_id,
        ),
        RoleConfig::Agent(config) => tracing::info_span!(
            "session",
            role = "agent",
            session_id = %config.session_id,
            target = %config.instance_id,
        ),
    };
    start_in(url, token, role, options).instrument(span).await
}

async fn start_in(
    url: &str,
    token: &str,
    role: RoleConfig,
    options: Options,
) -> Result<Connection, NetError> {
    let mut entropy = SystemEntropy::new();
    let opening = match &role {
        RoleConfig::Client(config) => Opening::Client {
            client_id: random_uuid(&mut entropy),
            client_version: config.client_version.clone(),
        },
        RoleConfig::Agent(config) => Opening::Agent {
            instance_id: config.instance_id.clone(),
        },
    };
    let text = opening.text(token, &mut entropy);
    let ws = dial(url, &options.tls, text, options.connect_timeout)
        .await
        .inspect_err(|error| tracing::warn!(%url, %error, "data channel refused"))?;
    tracing::debug!(%url, "data channel connected");

    let now = Instant::now();
    let session_entropy = Box::new(SystemEntropy::new());
    let session = match role {
        RoleConfig::Client(config) => Session::client(config, now, wall_ms(), session_entropy),
        RoleConfig::Agent(config) => Session::agent(config, now, wall_ms(), session_entropy),
    };
    let (incoming_tx, incoming_rx) = mpsc::channel(options.read_buffer.max(1));
    let (command_tx, command_rx) = mpsc::channel(options.write_buffer.max(1));
    let (ready_tx, ready_rx) = oneshot::channel();
    let shared = Arc::new(Shared::default());
    let driver = Driver {
        session,
        url: url.to_owned(),
        opening,
        options,
        entropy,
        commands: command_rx,
        commands_open: true,
        pending: None,
        incoming: incoming_tx,
        app_reading: true,
        to_app: VecDeque::new(),
        key_job: None,
        ready: Some(ready_tx),
        close_waiters: Vec::new(),
        ending: None,
        shared: shared.clone(),
    };
    tokio::spawn(driver.run(ws).in_current_span());
    let info = ready_rx
        .await
        .map_err(|_| NetError::EndedDuringHandshake("the driver stopped".into()))??;
    Ok(Connection::new(
        incoming_rx,
        command_tx,
        MAX_WRITE,
        info,
        shared,
    ))
}

/// The first text message of every connection (PROTOCOL.md §5.2).
enum Opening {
    Client {
        client_id: String,
        client_version: String,
    },
    Agent {
        instance_id: String,
    },
}

impl Opening {
    /// The opening JSON with `token` and a fresh request id.
    fn text(&self, token: &str, entropy: &mut dyn Entropy) -> String {
        let json = match self {
            Opening::Client {
                client_id,
                client_version,
            } => OpenDataChannelInput {
                message_schema_version: MESSAGE_SCHEMA_VERSION.into(),
                request_id: random_uuid(entropy),
                token_value: token.into(),
                client_id: client_id.clone(),
                client_version: client_version.clone(),
            }
            .to_json(),
            Opening::Agent { instance_id } => AgentOpenDataChannelInput {
                message_schema_version: MESSAGE_SCHEMA_VERSION.into(),
                request_id: random_uuid(entropy),
                token_value: token.into(),
                client_instance_id: instance_id.clone(),
                client_id: String::new(),
            }
            .to_json(),
        };
        String::from_utf8(json).expect("JSON is UTF-8")
    }
}

fn random_uuid(entropy: &mut dyn Entropy) -> String {
    runtime::uuid_from(entropy).to_string()
}

/// What one turn of the driver's loop saw.
enum Step {
    Written(Result<(), tokio_tungstenite::tungstenite::Error>),
    Delivered,
    ReaderGone,
    Key(KeyAnswer),
    Message(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Command(Option<Command>),
    Timer,
}

type KeyJob = Pin<Box<dyn Future<Output = KeyAnswer> + Send>>;

enum KeyAnswer {
    DataKey(Result<DataKey, KmsError>),
    Plaintext(Result<[u8; DATA_KEY_LEN], KmsError>),
}

struct Driver {
    session: Session,
    url: String,
    opening: Opening,
    options: Options,
    entropy: SystemEntropy,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    /// A command the session's window could not take yet; retried on `Writable`.
    pending: Option<Command>,
    incoming: mpsc::Sender<Incoming>,
    /// False once the application dropped its reader: what arrives is discarded.
    app_reading: bool,
    /// Items for the application that its channel had no room for; the websocket is not read
    /// while any wait, which is what pushes back on the remote writer.
    to_app: VecDeque<Incoming>,
    key_job: Option<KeyJob>,
    /// Answered once the handshake completes (or fails).
    ready: Option<oneshot::Sender<Result<HandshakeInfo, NetError>>>,
    close_waiters: Vec<oneshot::Sender<Ending>>,
    ending: Option<Ending>,
    shared: Arc<Shared>,
}

impl Driver {
    async fn run(mut self, mut ws: Ws) {
        loop {
            let cause = match self.serve(ws).await {
                None => break,
                Some(cause) => cause,
            };
            if matches!(cause, NetError::Refused(_)) {
                self.fail(cause);
                break;
            }
            tracing::warn!(%cause, "transport lost: resuming");
            self.session.transport_lost(Instant::now());
            match self.reconnect(cause).await {
                Ok(new) => {
                    ws = new;
                    self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.session.transport_restored(Instant::now());
                    tracing::info!(
                        unacknowledged = self.session.in_flight(),
                        "resumed: resending what was not acknowledged"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot resume");
                    self.fail(error);
                    break;
                }
            }
        }
        // Whatever the application has not taken yet, then the end.
        while let Some(item) = self.to_app.pop_front() {
            if !self.app_reading || self.incoming.send(item).await.is_err() {
                break;
            }
        }
    }

    /// Drives one websocket until the session ends (`None`) or the transport is lost (the
    /// cause).
    async fn serve(&mut self, ws: Ws) -> Option<NetError> {
        let (mut sink, mut stream) = ws.split();
        let mut out = Outgoing::default();
        let mut liveness = Liveness::new(
            Instant::now(),
            self.options.ping_interval,
            self.options.pong_timeout,
        );
        let timer = tokio::time::sleep_until(Instant::now().into());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            self.drain_session(&mut out);
            if self.ending.is_some() {
                let flushed = tokio::time::timeout(FINAL_FLUSH, async {
                    poll_fn(|cx| out.poll_write(cx, &mut sink)).await?;
                    sink.close().await
                });
                let _ = flushed.await;
                return None;
            }
            let now = Instant::now();
            let app_keeps_up = self.to_app.is_empty();
            let reading = app_keeps_up && out.messages.len() < MAX_UNSENT;
            match liveness.poll(now, app_keeps_up) {
                Err(unanswered) => return Some(NetError::Connect(Box::new(unanswered))),
                Ok(true) => out
                    .messages
                    .push_back(Message::Ping(Bytes::from_static(PING))),
                Ok(false) => {}
            }
            let deadline = self
                .session
                .poll_timeout()
                .map_or(liveness.deadline(), |at| at.min(liveness.deadline()));
            if armed != Some(deadline) {
                timer.as_mut().reset(deadline.into());
                armed = Some(deadline);
            }
            let accepting = self.pending.is_none()
                && self.commands_open
                && out.messages.len() < MAX_QUEUED_MESSAGES;

            let step = tokio::select! {
                biased;
                written = poll_fn(|cx| out.poll_write(cx, &mut sink)), if out.has_work() => {
                    Step::Written(written)
                }
                permit = self.incoming.reserve(), if !self.to_app.is_empty() => match permit {
                    Ok(permit) => {
                        permit.send(self.to_app.pop_front().expect("not empty"));
                        while let Some(item) = self.to_app.pop_front() {
                            if let Err(mpsc::error::TrySendError::Full(item)) = self.incoming.try_send(item) {
                                self.to_app.push_front(item);
                                break;
                            }
                        }
                        Step::Delivered
                    }
                    Err(_) => Step::ReaderGone,
                },
                answer = poll_fn(|cx| poll_key_job(cx, &mut self.key_job)), if self.key_job.is_some() => {
                    Step::Key(answer)
                }
                () = self.incoming.closed(), if self.app_reading => Step::ReaderGone,
                message = stream.next(), if reading => Step::Message(message),
                command = self.commands.recv(), if accepting => Step::Command(command),
                () = &mut timer => Step::Timer,
            };
            match step {
                Step::Written(Ok(())) | Step::Delivered => {}
                Step::Written(Err(error)) => {
                    return Some(NetError::Connect(Box::new(error)));
                }
                Step::ReaderGone => self.reader_dropped(),
                Step::Key(answer) => {
                    self.key_job = None;
                    self.answer_key(answer);
                }
                Step::Message(message) => {
                    liveness.heard();
                    if let Some(cause) = self.on_message(message) {
                        return self.ending.is_none().then_some(cause);
                    }
                    // Take what else has already arrived, while the application keeps up.
                    for _ in 1..READ_BATCH {
                        self.drain_session(&mut out);
                        if !self.to_app.is_empty() || self.ending.is_some() {
                            break;
                        }
                        let Some(message) = stream.next().now_or_never() else {
                            break;
                        };
                        if let Some(cause) = self.on_message(message) {
                            return self.ending.is_none().then_some(cause);
                        }
                    }
                }
                Step::Command(Some(command)) => self.apply(command),
                Step::Command(None) => self.writer_dropped(),
                Step::Timer => {
                    armed = None;
                    self.session.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Takes everything the session has to send and report.
    fn drain_session(&mut self, out: &mut Outgoing) {
        while let Some(message) = self.session.poll_transmit() {
            out.messages.push_back(Message::Binary(message));
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::KeyRequest(request) => self.start_key_job(request),
                Event::HandshakeComplete(info) => {
                    tracing::info!(
                        session_type = %info.session_type,
                        encrypted = info.encrypted,
                        peer_version = info.peer_version.as_deref().unwrap_or("unknown"),
                        "handshake complete"
                    );
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Ok(info));
                    }
                    self.retry_pending();
                }
                Event::Stream { payload_type, data } => self.deliver(match payload_type {
                    PayloadType::StdErr => Incoming::Stderr(data),
                    _ => Incoming::Data(data),
                }),
                Event::Resize(size) => self.deliver(Incoming::Resize(size)),
                Event::Flag(flag) => self.deliver(Incoming::Flag(flag)),
                Event::ExitCode(code) => self.deliver(Incoming::ExitCode(code)),
                Event::Writable => self.retry_pending(),
                Event::Error(error) => {
                    tracing::debug!(%error, "message refused");
                    self.deliver(Incoming::Error(error));
                }
                Event::Closed(reason) => self.closed(reason),
            }
        }
        let retransmits = self.session.stats().retransmits;
        let before = self.shared.retransmits.swap(retransmits, Ordering::Relaxed);
        if retransmits > before {
            tracing::debug!(
                count = retransmits - before,
                total = retransmits,
                "retransmitted"
            );
        }
    }

    fn on_message(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Option<NetError> {
        let data = match message {
            None => {
                return Some(NetError::Connect(described(
                    "the gateway closed the connection",
                )));
            }
            Some(Err(error)) => return Some(NetError::Connect(Box::new(error))),
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Text(text))) => Bytes::from(text),
            Some(Ok(Message::Close(frame))) => return Some(close_cause(frame)),
            Some(Ok(_)) => return None, // pings are answered by tungstenite; pongs count as heard
        };
        self.session.handle_message(Instant::now(), wall_ms(), data);
        None
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        let result = match &command {
            Command::Data(data) => self.session.send(now, data),
            Command::Stderr(data) => self.session.send_stderr(now, data),
            Command::Size(size) => self.session.send_size(now, *size).map(|()| 1),
            Command::Flag(flag) => self.session.send_flag(now, *flag).map(|()| 1),
            Command::ExitCode(code) => self.session.send_exit_code(now, *code).map(|()| 1),
            Command::Close(_) => Ok(0),
        };
        match (command, result) {
            (Command::Close(done), _) => match &self.ending {
                Some(ending) => {
                    let _ = done.send(ending.clone());
                }
                None => {
                    self.close_waiters.push(done);
                    self.session.close(now);
                }
            },
            (Command::Data(data), Ok(taken)) if taken < data.len() => {
                self.pending = Some(Command::Data(data.slice(taken..)));
            }
            (Command::Stderr(data), Ok(taken)) if taken < data.len() => {
                self.pending = Some(Command::Stderr(data.slice(taken..)));
            }
            (command, Err(SendError::Blocked | SendError::NotReady)) => {
                self.pending = Some(command);
            }
            // Taken whole, or the session is closing: the writer learns when the driver stops.
            _ => {}
        }
    }

    fn retry_pending(&mut self) {
        if let Some(command) = self.pending.take() {
            self.apply(command);
        }
    }

    /// Hands `item` to the application, or holds it (and stops reading) while its channel is
    /// full.
    fn deliver(&mut self, item: Incoming) {
        if !self.app_reading {
            return;
        }
        if !self.to_app.is_empty() {
            return self.to_app.push_back(item);
        }
        match self.incoming.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => self.to_app.push_back(item),
            Err(mpsc::error::TrySendError::Closed(_)) => self.reader_dropped(),
        }
    }

    fn reader_dropped(&mut self) {
        self.app_reading = false;
        self.to_app.clear();
        if !self.commands_open {
            self.session.close(Instant::now());
        }
    }

    fn writer_dropped(&mut self) {
        self.commands_open = false;
        if !self.app_reading {
            self.session.close(Instant::now());
        }
    }

    fn start_key_job(&mut self, request: KeyRequest) {
        let Some(provider) = self.options.key_provider.clone() else {
            let error = "no KeyProvider configured: set Options::key_provider";
            return self.session.key_failed(Instant::now(), error);
        };
        self.key_job = Some(match request {
            KeyRequest::GenerateDataKey { key_id, context } => Box::pin(async move {
                KeyAnswer::DataKey(provider.generate_data_key(&key_id, &context).await)
            }),
            KeyRequest::Decrypt {
                key_id,
                ciphertext_blob,
                context,
            } => Box::pin(async move {
                KeyAnswer::Plaintext(provider.decrypt(&key_id, &ciphertext_blob, &context).await)
            }),
        });
    }

    fn answer_key(&mut self, answer: KeyAnswer) {
        let now = Instant::now();
        match answer {
            KeyAnswer::DataKey(Ok(key)) => self.session.provide_data_key(now, key),
            KeyAnswer::Plaintext(Ok(key)) => self.session.provide_plaintext_key(now, key),
            KeyAnswer::DataKey(Err(error)) | KeyAnswer::Plaintext(Err(error)) => {
                self.session.key_failed(now, &error.to_string())
            }
        }
    }

    /// The session reported its end.
    fn closed(&mut self, reason: CloseReason) {
        let ending = match reason {
            CloseReason::ChannelClosed(closed) => Ending::ChannelClosed {
                output: closed.output,
            },
            CloseReason::Local => Ending::Closed,
            CloseReason::DrainTimedOut { unacknowledged } => {
                Ending::DrainTimedOut { unacknowledged }
            }
            CloseReason::Failed(error) => return self.fail(NetError::Session(error)),
        };
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(NetError::EndedDuringHandshake(ending.to_string())));
        }
        self.end(ending);
    }

    fn fail(&mut self, error: NetError) {
        match self.ready.take() {
            Some(ready) => {
                let _ = ready.send(Err(error));
                self.end(Ending::Failed(Arc::new(NetError::SessionOver)));
            }
            None => self.end(Ending::Failed(Arc::new(error))),
        }
    }

    fn end(&mut self, ending: Ending) {
        tracing::info!(%ending, "session ended");
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(ending.clone());
        }
        self.deliver(Incoming::Ended(ending.clone()));
        self.ending = Some(ending);
    }

    /// Redials with fresh tokens and back-off until it works or resuming is impossible.
    async fn reconnect(&mut self, cause: NetError) -> Result<Ws, NetError> {
        let Some(source) = self.options.token_source.clone() else {
            return Err(NetError::NoTokenSource(Box::new(cause)));
        };
        let backoff = self.options.backoff;
        let started = Instant::now();
        let mut delay = backoff.initial;
        let mut last;
        for attempts in 1.. {
            let attempt = async {
                let token = source.next_token().await?;
                let text = self.opening.text(&token, &mut self.entropy);
                dial(
                    &self.url,
                    &self.options.tls,
                    text,
                    self.options.connect_timeout,
                )
                .await
            };
            match attempt.await {
                Ok(ws) => return Ok(ws),
                Err(
                    error @ (NetError::Refused(_)
                    | NetError::InvalidUrl(_)
                    | NetError::Token(TokenError::Final(_))),
                ) => return Err(error),
                Err(error) => last = error,
            }
            let elapsed = started.elapsed();
            if elapsed + delay > backoff.give_up_after {
                return Err(NetError::ResumeFailed {
                    attempts,
                    elapsed,
                    last: Box::new(last),
                });
            }
            tokio::time::sleep(runtime::jittered(delay, &mut self.entropy)).await;
            delay = (delay * 2).min(backoff.max);
        }
        unreachable!("the attempt loop only ends by returning")
    }
}

fn poll_key_job(cx: &mut Context<'_>, job: &mut Option<KeyJob>) -> Poll<KeyAnswer> {
    match job {
        Some(job) => job.as_mut().poll(cx),
        None => Poll::Pending,
    }
}

/// A cause that is only a description.
fn described(text: impl Into<String>) -> super::Cause {
    text.into().into()
}

/// A Close from the gateway: a policy close is a refusal (bad token, session gone).
fn close_cause(frame: Option<CloseFrame>) -> NetError {
    match frame {
        Some(frame) if frame.code == CloseCode::Policy => {
            NetError::Refused(frame.reason.as_str().to_owned())
        }
        Some(frame) => NetError::Connect(described(format!(
            "the gateway closed the connection ({}: {})",
            frame.code, frame.reason
        ))),
        None => NetError::Connect(described("the gateway closed the connection")),
    }
}

/// Messages waiting for the socket.
#[derive(Default)]
struct Outgoing {
    messages: VecDeque<Message>,
    unflushed: bool,
}

impl Outgoing {
    fn has_work(&self) -> bool {
        !self.messages.is_empty() || self.unflushed
    }

    /// Writes and flushes; state lives here, so a dropped future loses nothing.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut SplitSink<Ws, Message>,
    ) -> Poll<Result<(), tokio_tungstenite::tungstenite::Error>> {
        while !self.messages.is_empty() {
            ready!(sink.poll_ready_unpin(cx))?;
            let message = self.messages.pop_front().expect("not empty");
            sink.start_send_unpin(message)?;
            self.unflushed = true;
        }
        ready!(sink.poll_flush_unpin(cx))?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }
}
