//! A sans-IO, byte-compatible implementation of the AWS Systems Manager Session Manager data
//! channel: the protocol the `session-manager-plugin` client and the `amazon-ssm-agent` speak
//! through the gateway.
//!
//! The protocol itself is described in [docs/PROTOCOL.md], whose section numbers the comments
//! in this crate cite as "PROTOCOL.md §N".
//!
//! [docs/PROTOCOL.md]: https://github.com/ssm-session/ssm-session/blob/main/docs/PROTOCOL.md
//!
//! A [`session::Session`] is one end of a data channel as a state machine. It never touches a
//! socket, a clock or a random source: the caller passes in what happened and the time, and
//! polls for what to do, so the same inputs always give the same outputs. Tests, the
//! simulator and the tokio adapters all drive it with the same loop:
//!
//! 1. feed it input — [`handle_message`](session::Session::handle_message) for each websocket
//!    message, [`handle_timeout`](session::Session::handle_timeout) once its deadline has
//!    passed — or a command such as [`send`](session::Session::send) or
//!    [`close`](session::Session::close);
//! 2. drain [`poll_transmit`](session::Session::poll_transmit) until `None`, sending each as a
//!    binary websocket message;
//! 3. drain [`poll_event`](session::Session::poll_event) until `None`: data, and KMS work to
//!    answer (an answer is input again, so drain once more);
//! 4. arm a timer for [`poll_timeout`](session::Session::poll_timeout).
//!
//! Here both ends run in one process, with a queue for each websocket and virtual time, through
//! an encrypted handshake:
//!
//! ```
//! use std::collections::VecDeque;
//! use std::time::Instant;
//!
//! use bytes::Bytes;
//! use ssm_session::SeededEntropy;
//! use ssm_session::kms::LocalKms;
//! use ssm_session::session::{AgentConfig, ClientConfig, Event, KeyRequest, Session, SessionType};
//!
//! const WALL_MS: u64 = 1_700_000_000_000; // the wall clock: it only stamps CreatedDate
//!
//! /// What the driver of one end owns.
//! struct Driver {
//!     session: Session,
//!     sent: VecDeque<Bytes>, // the websocket: messages sent, not yet delivered
//!     timer: Option<Instant>,
//!     kms: LocalKms,
//!     received: Vec<u8>,
//! }
//!
//! impl Driver {
//!     /// Steps 2–4, after every input or command.
//!     fn drain(&mut self, now: Instant) {
//!         loop {
//!             while let Some(message) = self.session.poll_transmit() {
//!                 self.sent.push_back(message); // one binary websocket message each
//!             }
//!             let Some(event) = self.session.poll_event() else { break };
//!             match event {
//!                 Event::Stream { data, .. } => self.received.extend_from_slice(&data),
//!                 // The session never calls KMS itself. An answer is input: the loop goes on.
//!                 Event::KeyRequest(KeyRequest::GenerateDataKey { key_id, context }) => {
//!                     let (plaintext, nonce) = ([1; 64], [2; 12]); // random in real use
//!                     let kms = &self.kms;
//!                     let key = kms.generate_data_key_with(&key_id, &context, plaintext, nonce);
//!                     self.session.provide_data_key(now, key);
//!                 }
//!                 Event::KeyRequest(KeyRequest::Decrypt { key_id, ciphertext_blob, context }) => {
//!                     match self.kms.decrypt_now(&key_id, &ciphertext_blob, &context) {
//!                         Ok(plaintext) => self.session.provide_plaintext_key(now, plaintext),
//!                         Err(error) => self.session.key_failed(now, &error.to_string()),
//!                     }
//!                 }
//! #               Event::HandshakeComplete(info) => assert!(info.encrypted),
//!                 _ => {} // HandshakeComplete, Writable, Closed, …
//!             }
//!         }
//!         self.timer = self.session.poll_timeout();
//!     }
//! }
//!
//! /// Step 1, over a perfect network: deliver what is in flight; when nothing is, jump to the
//! /// earliest deadline. Returns the time once both ends are idle.
//! fn run(client: &mut Driver, agent: &mut Driver, mut now: Instant) -> Instant {
//!     loop {
//!         if let Some(message) = client.sent.pop_front() {
//!             agent.session.handle_message(now, WALL_MS, message);
//!             agent.drain(now);
//!         } else if let Some(message) = agent.sent.pop_front() {
//!             client.session.handle_message(now, WALL_MS, message);
//!             client.drain(now);
//!         } else if let Some(deadline) = client.timer.into_iter().chain(agent.timer).min() {
//!             now = deadline;
//!             for end in [&mut *client, &mut *agent] {
//!                 if end.timer.is_some_and(|at| at <= now) {
//!                     end.session.handle_timeout(now);
//!                     end.drain(now);
//!                 }
//!             }
//!         } else {
//!             return now;
//!         }
//!     }
//! }
//!
//! let now = Instant::now();
//! let mut agent_config = AgentConfig::new("s-1", "i-1", SessionType::StandardStream);
//! agent_config.kms_key_id = Some("alias/ssm".into()); // encrypted: each end asks for a key
//! let client_config = ClientConfig::new("s-1", "i-1");
//! // Randomness is passed in too: `SystemEntropy` in real use.
//! let client = Session::client(client_config, now, WALL_MS, Box::new(SeededEntropy::new(1)));
//! let agent = Session::agent(agent_config, now, WALL_MS, Box::new(SeededEntropy::new(2)));
//! # let driver = |session| Driver { session, sent: VecDeque::new(), timer: None,
//! #     kms: LocalKms::from_master_key([7; 32]), received: Vec::new() };
//! let (mut client, mut agent) = (driver(client), driver(agent));
//! client.drain(now); // a new session already has messages to send
//! agent.drain(now);
//!
//! let now = run(&mut client, &mut agent, now); // the handshake, KMS included
//! client.session.send(now, b"ls\r")?;
//! client.session.close(now); // done once the agent has acknowledged everything
//! client.drain(now);
//! run(&mut client, &mut agent, now);
//! assert_eq!(agent.received, b"ls\r");
//! assert!(client.session.is_closed());
//! # Ok::<(), ssm_session::session::SendError>(())
//! ```
//!
//! `src/net/driver.rs` runs the same loop against a real websocket; [`session::Session`] lists
//! every input and command.
//!
//! # How a session ends
//!
//! A lost websocket is not an end: [`transport_lost`](session::Session::transport_lost) and
//! [`transport_restored`](session::Session::transport_restored) carry the session over to a
//! new one, resending what was not acknowledged. A session ends when an end
//! [closes](session::Session::close) it — a client's close sends `TerminateSession` last, which
//! is how its agent learns the client left: it sees
//! [`Event::Flag`](session::Event::Flag)`(TerminateSession)` and ends what it runs — or when
//! the gateway sends `channel_closed` ([`CloseReason::ChannelClosed`](session::CloseReason)):
//! after `TerminateSession`, a revocation, or a side gone longer than its resume window.
//!
//! # Layers
//!
//! The core is what `default-features = false` builds: no async runtime, no I/O.
//!
//! * [`session`] — the data channel in either role: sequence numbers, acknowledgements,
//!   retransmission (RFC 6298), a bounded send window with back-pressure, the handshake,
//!   AES-256-GCM encryption with KMS data keys, and our own negotiated extensions.
//! * [`Frame`] — the 120-byte-header binary frame that carries every message (PROTOCOL.md §3).
//!   [`Frame::decode`] never panics and names every rejection in [`DecodeError`];
//!   [`Header::parse`] reads the fixed fields alone.
//! * [`payload`] — typed payloads with JSON byte-identical to the Go peers', decoded as
//!   leniently.
//! * [`crypto`], [`kms`] — the session cipher, and the [`kms::KeyProvider`] trait with the
//!   embedded [`kms::LocalKms`].
//! * [`smux`] — smux v1 frames and [`smux::Mux`], the stream table of multiplexed port
//!   forwarding, polled like a session.
//! * [`relay`] — the gateway's data-channel relay: pairing by session and side, queues that
//!   survive a side's reconnect, pause/start flow control, polled like a session.
//! * [`version`] — the version gates each end applies to the other.
//! * [`Entropy`] — the random source passed in: [`SystemEntropy`], or [`SeededEntropy`] to
//!   replay.
//!
//! Two features only extend the core, for tests: `sim` (`sim::Pair`, a client/agent pair over
//! an emulated lossy network in virtual time) and `fuzzing` (the fuzz targets' entry points,
//! not a stable API).
//!
//! Above the core, each layer behind its feature (the default is `gateway`, `agent` and
//! `client`, which bring in `net`):
//!
//! * `net` — tokio adapters: `net::connect` and `net::connect_agent` dial `ws://` or `wss://`
//!   (rustls on ring), run the handshake and return a `net::Connection`, an
//!   `AsyncRead + AsyncWrite` byte stream that survives transport loss; `net::relay` pairs the
//!   two ends of a session by id, as the gateway does.
//! * `gateway` — the service: the Systems Manager JSON API subset (SigV4, IAM-style policies,
//!   session documents), agents' control channels, the relay, revocation on policy reload and
//!   a hash-chained audit log.
//! * `agent` — dials out to the gateway and runs shells in a PTY, commands and port forwards
//!   (basic, or multiplexed over smux), recording terminals as asciicast.
//! * `client` — `StartSession` and friends through `aws::ApiClient`, then an interactive
//!   terminal or a local port forwarder, with the `session-manager-plugin` argument contract
//!   so that the AWS CLI can run sessions through it.
//! * `aws-kms` and `aws` — against AWS itself: `aws_sdk::AwsKms` (a key provider on
//!   `aws-sdk-kms`) and the standard AWS configuration, then sessions started with
//!   `aws-sdk-ssm`.
//!
//! # Programs and examples
//!
//! The programs in `src/bin/` are thin layers over those features: `ssm-gateway`, `ssm-agent`
//! and `session-manager-plugin`. The examples are `demo` (the whole system on loopback),
//! `frame` (decode and encode frames), `simulate` (a session over a lossy emulated network),
//! `throughput` (bytes through one session on loopback) and `aws` (a session with real AWS).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "agent")]
#[cfg_attr(docsrs, doc(cfg(feature = "agent")))]
pub mod agent;
#[cfg(any(feature = "gateway", feature = "agent", feature = "fuzzing"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "gateway", feature = "agent", feature = "fuzzing")))
)]
pub mod audit;
#[cfg(feature = "api-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "api-client")))]
pub mod aws;
#[cfg(feature = "aws-kms")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-kms")))]
pub mod aws_sdk;
#[cfg(feature = "programs")]
#[cfg_attr(docsrs, doc(cfg(feature = "programs")))]
pub mod cli;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
#[cfg(any(feature = "gateway", feature = "agent", feature = "fuzzing"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "gateway", feature = "agent", feature = "fuzzing")))
)]
pub mod control;
pub mod crypto;
#[cfg(any(feature = "gateway", feature = "agent", feature = "fuzzing"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "gateway", feature = "agent", feature = "fuzzing")))
)]
pub mod document;
mod entropy;
#[cfg(any(feature = "agent", feature = "client"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "agent", feature = "client"))))]
pub mod forward;
mod frame;
#[cfg(feature = "fuzzing")]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub mod gateway;
pub mod kms;
#[cfg(feature = "net")]
#[cfg_attr(docsrs, doc(cfg(feature = "net")))]
pub mod net;
pub mod payload;
#[cfg(any(feature = "gateway", feature = "fuzzing"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "gateway", feature = "fuzzing"))))]
pub mod policy;
pub mod relay;
pub mod session;
#[cfg(any(feature = "gateway", feature = "api-client", feature = "fuzzing"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "gateway", feature = "api-client", feature = "fuzzing")))
)]
pub mod sigv4;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;
pub mod smux;
pub mod version;

pub use entropy::{Entropy, SeededEntropy, SystemEntropy};

/// Compiles the README's examples as doctests; one of them runs over `net`.
#[cfg(all(doctest, feature = "net"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use frame::{
    DecodeError, DecodeOptions, EncodeError, Frame, HEADER_LENGTH, HEADER_SIZE, Header,
    MAX_MESSAGE_TYPE_LEN, MessageType, OtherMessageType, PayloadType, SCHEMA_VERSION,
    message_id_from_wire, message_id_to_wire,
};
