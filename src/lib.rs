//! A sans-IO, byte-compatible implementation of the AWS Systems Manager Session Manager data
//! channel: the protocol the `session-manager-plugin` client and the `amazon-ssm-agent` speak
//! through the gateway.
//!
//! # Layers
//!
//! Everything here is a pure function of its input: no sockets, no clock, no randomness inside.
//! Callers pass in `Instant`s, wall-clock milliseconds and an [`Entropy`] source, which is what
//! lets the tests run sessions in virtual time and the fuzzer drive the whole state machine.
//!
//! * [`session::Session`] — one data channel, client or agent role: sequence numbers,
//!   acknowledgements, retransmission (RFC 6298), a bounded send window with back-pressure,
//!   the handshake, KMS-style AES-256-GCM encryption, and our own negotiated extensions.
//! * [`Frame`] — the 120-byte-header binary frame that carries every message (SPEC §2).
//!   [`Frame::decode`] never panics and names every rejection in [`DecodeError`];
//!   [`Header::parse`] reads the fixed fields alone.
//! * [`payload`] — typed payloads with JSON byte-identical to the Go peers', decoded as leniently.
//! * [`crypto`], [`kms`] — the session cipher, and the [`kms::KeyProvider`] trait with the
//!   embedded [`kms::LocalKms`]. The session never calls KMS itself: it asks through an event.
//! * [`smux`] — smux v1 frames for multiplexed port forwarding.
//! * [`relay`] — the gateway's data-channel relay: pairing, queues and pause/start flow control.
//! * [`sim`] — a client/agent pair over an emulated lossy network, in virtual time.
//!
//! On top, behind the default cargo feature `net` (`default-features = false` keeps only the
//! sans-IO core above):
//!
//! * `net` — tokio adapters: [`net::connect`] / [`net::connect_agent`] dial `ws://` or
//!   `wss://` (rustls on ring), run the handshake and return a [`net::Connection`] that is an
//!   `AsyncRead + AsyncWrite` byte stream with control methods. One driver task per connection
//!   runs the loop below against the socket; it resumes after transport loss with fresh tokens.
//!   [`net::relay`] pairs the two ends of a session by id, as the gateway does.
//!
//! The self-hosted system, behind the default feature `system`:
//!
//! * `gateway` — the service: the Systems Manager JSON API subset (SigV4 via [`sigv4`],
//!   IAM-style [`policy`], session [`document`]s), agents' control channels ([`control`]), the
//!   relay, instant revocation on policy reload, and the hash-chained [`audit`] log.
//! * `agent` — dials out to the gateway and runs shells in a PTY, commands and port forwards
//!   (basic, or smux via [`smux::Mux`]), recording terminals as asciicast.
//! * `client` — `StartSession` and friends through `aws::ApiClient`, then an interactive
//!   terminal or a local port forwarder; `client::plugin` is the `session-manager-plugin`
//!   argument contract, so the AWS CLI can run sessions through it.
//!
//! Against AWS itself, behind the optional features `aws-kms` and `aws`: `aws_sdk` — the
//! standard AWS configuration, `aws_sdk::AwsKms` (a key provider on `aws-sdk-kms`), and
//! sessions started with `aws-sdk-ssm`.
//!
//! The programs in `examples/` (`gateway`, `agent`, `client`, `demo`, `aws`) are thin layers
//! over these.
//!
//! # The run loop
//!
//! A [`session::Session`] is driven the same way by tests, the simulator and the socket
//! adapters (`src/net/driver.rs` is this loop over a real websocket):
//!
//! 1. feed it what happened: [`session::Session::handle_message`] for each websocket message,
//!    [`session::Session::handle_timeout`] when its deadline passes, and commands
//!    ([`session::Session::send`], KMS answers, transport lost/restored, close);
//! 2. after **every** such call, drain it: [`session::Session::poll_transmit`] until `None`
//!    (send each as a binary websocket message), [`session::Session::poll_event`] until `None`
//!    (deliver data, answer key requests), then arm a timer for
//!    [`session::Session::poll_timeout`].
//!
//! Nothing happens between calls, so the same inputs always give the same outputs.
//!
//! # Example: answer a received stream message
//!
//! ```
//! use bytes::Bytes;
//! use ssm_session::payload::{Acknowledge, JsonPayload};
//! use ssm_session::{Frame, MessageType, PayloadType};
//! use uuid::Uuid;
//!
//! # let received = Frame { message_type: MessageType::OutputStreamData, schema_version: 1,
//! #     created_date: 1_700_000_000_000, sequence_number: 0, flags: Frame::FLAG_SYN,
//! #     message_id: Uuid::from_u128(7), payload_type: PayloadType::Output,
//! #     payload: Bytes::from_static(b"sh-5.2$ ") }.to_bytes()?;
//! // `received` is one binary websocket message.
//! let frame = Frame::decode(received)?;
//! assert_eq!(frame.payload_type, PayloadType::Output);
//!
//! let ack = Frame {
//!     message_type: MessageType::Acknowledge,
//!     schema_version: 1,
//!     created_date: 1_700_000_000_123, // wall clock, passed in
//!     sequence_number: 0,
//!     flags: Frame::FLAG_SYN | Frame::FLAG_FIN,
//!     message_id: Uuid::from_u128(8), // random v4 in real use, passed in
//!     payload_type: PayloadType::Unset,
//!     payload: Acknowledge::for_frame(&frame).to_json().into(),
//! };
//! let reply: Bytes = ack.to_bytes()?; // send as one binary websocket message
//! # assert_eq!(Frame::decode(reply)?.message_type, MessageType::Acknowledge);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "system")]
pub mod agent;
pub mod audit;
#[cfg(feature = "system")]
pub mod aws;
#[cfg(feature = "aws-kms")]
pub mod aws_sdk;
#[cfg(feature = "system")]
pub mod client;
pub mod control;
pub mod crypto;
pub mod document;
mod entropy;
#[cfg(feature = "system")]
pub mod forward;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "system")]
pub mod gateway;
pub mod kms;
#[cfg(feature = "net")]
pub mod net;
pub mod payload;
pub mod policy;
pub mod relay;
pub mod session;
pub mod sigv4;
pub mod sim;
pub mod smux;
pub mod version;

pub use entropy::{Entropy, SeededEntropy, SystemEntropy};

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use frame::{
    DecodeError, DecodeOptions, EncodeError, Frame, HEADER_LENGTH, HEADER_SIZE, Header,
    MAX_MESSAGE_TYPE_LEN, MessageType, OtherMessageType, PayloadType, SCHEMA_VERSION,
    message_id_from_wire, message_id_to_wire,
};
