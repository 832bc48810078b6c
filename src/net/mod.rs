//! Tokio adapters: a [`Session`](crate::session::Session) over a real websocket (`ws://` or
//! `wss://` with rustls on ring), for either role, plus a small [`relay`] that pairs the two
//! ends by session id as the gateway does.
//!
//! [`connect`] (client role) and [`connect_agent`] (agent role) dial the stream URL, send the
//! opening text message, run the handshake (asking the [`KeyProvider`] for KMS work) and
//! return a [`Connection`]: an `AsyncRead + AsyncWrite` byte stream with control methods
//! (resize, flags, exit code, stderr) that can be split into a [`ReadHalf`] and a
//! [`WriteHalf`].
//!
//! One driver task per connection owns the session and `select!`s over the websocket, the
//! session's next deadline, the application's commands and the KMS call in progress. It holds
//! no protocol logic: everything it does is feed the session and carry out what it asks.
//!
//! * **Back-pressure.** Writes wait while the session's send window is full; the driver stops
//!   reading the websocket while the application has not taken what was already received, so
//!   a slow reader slows the remote writer and no buffer grows without bound.
//! * **Liveness.** A ping goes out on connect and every [`Options::ping_interval`]; when
//!   nothing at all arrives for [`Options::pong_timeout`] after a ping, the connection is
//!   declared dead.
//! * **Resume.** On transport loss the driver asks the [`TokenSource`] for a fresh token (the
//!   `ResumeSession` equivalent), redials with exponential back-off and jitter, and the session
//!   resends whatever is unacknowledged with the same sequence numbers. The application sees
//!   neither loss nor duplication. When resuming is impossible the connection ends with a
//!   [`NetError`] that says why.
//!
//! # Examples
//!
//! ```no_run
//! use ssm_session::net::{self, Options};
//! use ssm_session::session::ClientConfig;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn run(stream_url: &str, token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new("session-id", "i-0123456789abcdef0");
//! let mut connection = net::connect(stream_url, token, config, Options::default()).await?;
//! println!("session type {}", connection.info().session_type);
//! connection.write_all(b"uname -a\r").await?;
//! let mut output = [0; 4096];
//! let n = connection.read(&mut output).await?;
//! print!("{}", String::from_utf8_lossy(&output[..n]));
//! connection.close().await?;
//! # Ok(()) }
//! ```

mod dial;
#[cfg(any(feature = "gateway", feature = "agent"))]
pub(crate) use dial::websocket_config;
mod driver;
mod handle;
#[cfg(feature = "api-client")]
pub mod http;
pub mod relay;
pub mod runtime;
mod tls;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use handle::{Connection, Counters, Ending, Incoming, ReadHalf, WriteHalf};
pub use tls::{CaFileError, TlsConfig, TlsMismatch, server_config};

use crate::kms::KeyProvider;
use crate::session::{AgentConfig, ClientConfig, SessionError};

/// Opens a client-role data channel: dials `stream_url` (the `StreamUrl` of StartSession) with
/// no extra headers, sends `OpenDataChannelInput` with `token` (its `TokenValue`), and returns
/// once the handshake is complete.
///
/// A refused token, an unreachable gateway or a failed handshake is an error here; after this
/// returns, transport failures are handled by resuming (see [`Options::token_source`]).
pub async fn connect(
    stream_url: &str,
    token: &str,
    config: ClientConfig,
    options: Options,
) -> Result<Connection, NetError> {
    driver::start(
        stream_url,
        token,
        driver::RoleConfig::Client(config),
        options,
    )
    .await
}

/// Opens an agent-role data channel: dials `stream_url`, sends the agent's
/// `OpenDataChannelInput` with `token` and `config.instance_id`, leads the handshake and
/// returns once it is complete.
pub async fn connect_agent(
    stream_url: &str,
    token: &str,
    config: AgentConfig,
    options: Options,
) -> Result<Connection, NetError> {
    driver::start(
        stream_url,
        token,
        driver::RoleConfig::Agent(config),
        options,
    )
    .await
}

/// How a connection is made and kept. The defaults suit a gateway across the internet.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Trusted roots for `wss://` (the webpki roots unless replaced).
    pub tls: TlsConfig,
    /// KMS for encrypted sessions; without one, a session that asks for a key fails.
    pub key_provider: Option<Arc<dyn KeyProvider>>,
    /// Fresh tokens for reconnecting; without one, losing the transport ends the connection.
    pub token_source: Option<Arc<dyn TokenSource>>,
    /// How long dialing (TCP, TLS and the websocket upgrade) may take.
    pub connect_timeout: Duration,
    /// How often to ping the gateway.
    pub ping_interval: Duration,
    /// How long after a ping the connection may stay silent before it is declared dead.
    pub pong_timeout: Duration,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// Received messages held for the application before the driver stops reading.
    pub read_buffer: usize,
    /// Writes (each at most one message payload) queued before `write` waits.
    pub write_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: TlsConfig::default(),
            key_provider: None,
            token_source: None,
            connect_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(20),
            backoff: Backoff::default(),
            read_buffer: 64,
            write_buffer: 16,
        }
    }
}

impl Options {
    /// These options with `provider` answering the session's KMS requests.
    pub fn key_provider(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.key_provider = Some(provider);
        self
    }

    /// These options with `source` supplying a token for every reconnection.
    pub fn token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token_source = Some(source);
        self
    }

    /// These options with `tls` for `wss://`.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("key_provider", &self.key_provider.is_some())
            .field("token_source", &self.token_source.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("backoff", &self.backoff)
            .field("read_buffer", &self.read_buffer)
            .field("write_buffer", &self.write_buffer)
            .finish_non_exhaustive()
    }
}

/// Exponential back-off between reconnection attempts, with jitter.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Backoff {
    /// Delay after the first failed attempt (the first attempt is immediate).
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Stop trying after this long without a connection.
    pub give_up_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// The future a [`TokenSource`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send>>;

/// Where reconnections get their token: `ResumeSession` for a client, `CreateDataChannel` for
/// an agent. Closures returning a [`TokenFuture`] are token sources.
pub trait TokenSource: Send + Sync {
    /// A fresh token for the same session.
    fn next_token(&self) -> TokenFuture;
}

impl<F> TokenSource for F
where
    F: Fn() -> TokenFuture + Send + Sync,
{
    fn next_token(&self) -> TokenFuture {
        self()
    }
}

/// The error behind a [`NetError`] or [`TokenError`], kept for [`std::error::Error::source`].
/// Anything that is an error converts into it (`error.into()`), and so does a `String`.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a [`TokenSource`] has no token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The session cannot be resumed (terminated, expired, access revoked): stop trying.
    #[error("session cannot be resumed: {0}")]
    Final(#[source] Cause),
    /// A passing failure (network, throttling): try again after the back-off.
    #[error("no token yet: {0}")]
    Retry(#[source] Cause),
}

/// What ended or prevented a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The stream URL is not a usable `ws://` or `wss://` URL.
    #[error("invalid stream URL: {0}")]
    InvalidUrl(String),
    /// Dialing failed (TCP, TLS or the websocket upgrade).
    #[error("could not connect: {0}")]
    Connect(#[source] Cause),
    /// Dialing took longer than [`Options::connect_timeout`].
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The gateway refused the token or the session: get a new one (StartSession or
    /// ResumeSession) rather than retrying with the same.
    #[error("the gateway refused the connection: {0}")]
    Refused(String),
    /// The connection was lost and no [`TokenSource`] was given to resume it.
    #[error("connection lost ({0}) and no token source to resume it: set Options::token_source")]
    NoTokenSource(#[source] Box<NetError>),
    /// The token source said the session cannot be resumed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Reconnecting kept failing for [`Backoff::give_up_after`].
    #[error("gave up resuming after {attempts} attempts over {elapsed:?}; last error: {last}")]
    ResumeFailed {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<NetError>,
    },
    /// The session failed (handshake, KMS, timeouts).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The session is over: nothing more can be sent.
    #[error("the session is over")]
    SessionOver,
    /// The connection ended before the handshake completed.
    #[error("the connection ended during the handshake: {0}")]
    EndedDuringHandshake(String),
}
