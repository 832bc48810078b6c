//! A sans-IO smux v1 session: the stream table both ends run directly over the session's byte
//! stream (the reference bridges smux onto the data channel through a socket pair, SPEC §14.20).
//!
//! Drive it like the session itself: feed what arrived ([`Mux::handle_input`]), deadlines
//! ([`Mux::handle_timeout`]) and application commands ([`Mux::open`], [`Mux::write`],
//! [`Mux::close`]); after each, drain [`Mux::poll_transmit`] (bytes to send as session data)
//! and [`Mux::poll_event`]. Memory is bounded: [`Mux::write`] takes only what fits under the
//! outgoing limit, and [`Mux::wants_input`] turns false while the application has not taken
//! what arrived (smux v1 has no per-stream window; not reading is the only lever).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Command, Frame, SmuxError, StreamDecoder};

/// A stream id (odd, from 3, when the client opens it).
pub type StreamId = u32;

/// Bounds and keep-alive of a [`Mux`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MuxConfig {
    /// Send NOP every 10 s and declare the peer dead after 30 s of silence. Both ends must
    /// agree (SPEC §8.4); callers decide from the peer's version (`crate::version`).
    pub keep_alive: bool,
    /// Most data per PSH frame (xtaci default 32 KiB).
    pub max_frame_data: usize,
    /// Received bytes waiting for the application above which input should pause.
    pub max_receive_buffer: usize,
    /// Encoded bytes waiting for the session above which writes are refused.
    pub max_outgoing: usize,
    /// Open streams at most; more SYNs are answered with FIN.
    pub max_streams: usize,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            keep_alive: true,
            max_frame_data: 32 * 1024,
            max_receive_buffer: 4 << 20,
            max_outgoing: 1 << 20,
            max_streams: 1024,
        }
    }
}

const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames are coalesced into transmits of at most this many bytes.
const TRANSMIT: usize = 64 * 1024;

/// What happened on the mux.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuxEvent {
    /// The peer opened a stream (server side).
    Opened(StreamId),
    /// Data for a stream.
    Data(StreamId, Bytes),
    /// The peer closed a stream (v1 FIN is a full close).
    Closed(StreamId),
    /// Nothing arrived for the keep-alive timeout: the mux is dead.
    Dead,
}

/// Why a mux operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The peer's bytes are not smux v1; the mux is unusable.
    #[error("smux protocol error: {0}")]
    Protocol(#[from] SmuxError),
    /// [`MuxConfig::max_streams`] streams are open; close one first.
    #[error("{0} smux streams are open already")]
    TooManyStreams(usize),
    /// Only the client side opens streams.
    #[error("only the smux client opens streams")]
    NotClient,
    /// The mux is dead (protocol error or keep-alive timeout).
    #[error("the smux session is over")]
    Dead,
}

/// One smux v1 session, client or server side.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use ssm_session::smux::{Mux, MuxConfig, MuxEvent};
///
/// let now = Instant::now();
/// let mut client = Mux::client(MuxConfig::default(), now);
/// let mut server = Mux::server(MuxConfig::default(), now);
/// let id = client.open()?;
/// assert_eq!(client.write(id, b"hello"), 5);
/// while let Some(bytes) = client.poll_transmit() {
///     server.handle_input(&bytes, now)?;
/// }
/// assert_eq!(server.poll_event(), Some(MuxEvent::Opened(id)));
/// assert_eq!(server.poll_event(), Some(MuxEvent::Data(id, "hello".into())));
/// # Ok::<(), ssm_session::smux::MuxError>(())
/// ```
#[derive(Debug)]
pub struct Mux {
    config: MuxConfig,
    client: bool,
    next_id: StreamId,
    streams: HashSet<StreamId>,
    decoder: StreamDecoder,
    outgoing: VecDeque<Bytes>,
    outgoing_bytes: usize,
    events: VecDeque<MuxEvent>,
    event_bytes: usize,
    last_received: Instant,
    next_ping: Instant,
    dead: bool,
}

impl Mux {
    /// The client side (opens streams), starting at `now`.
    pub fn client(config: MuxConfig, now: Instant) -> Mux {
        Mux::new(config, true, now)
    }

    /// The server side (accepts streams), starting at `now`.
    pub fn server(config: MuxConfig, now: Instant) -> Mux {
        Mux::new(config, false, now)
    }

    fn new(config: MuxConfig, client: bool, now: Instant) -> Mux {
        Mux {
            config,
            client,
            next_id: 1,
            streams: HashSet::new(),
            decoder: StreamDecoder::new(),
            outgoing: VecDeque::new(),
            outgoing_bytes: 0,
            events: VecDeque::new(),
            event_bytes: 0,
            last_received: now,
            next_ping: now + KEEP_ALIVE_INTERVAL,
            dead: false,
        }
    }

    /// Feeds bytes received from the peer, split anywhere.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), MuxError> {
        if self.dead {
            return Err(MuxError::Dead);
        }
        self.last_received = now;
        self.decoder.push(bytes);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.dead = true;
                    return Err(error.into());
                }
            };
            self.receive(frame);
        }
    }

    fn receive(&mut self, frame: Frame) {
        let id = frame.stream_id;
        match frame.command {
            Command::Syn => {
                // The client never accepts streams; a known id is ignored, as xtaci does.
                if self.client || self.streams.contains(&id) {
                    return;
                }
                if self.streams.len() >= self.config.max_streams {
                    self.queue(Frame::fin(id));
                    return;
                }
                self.streams.insert(id);
                self.events.push_back(MuxEvent::Opened(id));
            }
            Command::Psh => {
                // Data for a stream that is not open is discarded (xtaci).
                if self.streams.contains(&id) && !frame.data.is_empty() {
                    self.event_bytes += frame.data.len();
                    self.events.push_back(MuxEvent::Data(id, frame.data));
                }
            }
            Command::Fin => {
                if self.streams.remove(&id) {
                    self.events.push_back(MuxEvent::Closed(id));
                }
            }
            Command::Nop => {}
        }
    }

    /// Opens a stream (client side).
    pub fn open(&mut self) -> Result<StreamId, MuxError> {
        if self.dead {
            return Err(MuxError::Dead);
        }
        if !self.client {
            return Err(MuxError::NotClient);
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(MuxError::TooManyStreams(self.streams.len()));
        }
        self.next_id = self.next_id.wrapping_add(2);
        let id = self.next_id;
        self.streams.insert(id);
        self.queue(Frame::syn(id));
        Ok(id)
    }

    /// Queues `data` on stream `id`; returns how much was taken (0 when the outgoing buffer
    /// is full or the stream is not open). Send what [`Mux::poll_transmit`] gives, then retry.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> usize {
        if self.dead || !self.streams.contains(&id) {
            return 0;
        }
        let room = self.config.max_outgoing.saturating_sub(self.outgoing_bytes);
        let take = data.len().min(room);
        for chunk in data[..take].chunks(self.config.max_frame_data.clamp(1, super::MAX_DATA_LEN)) {
            self.queue(Frame::psh(id, Bytes::copy_from_slice(chunk)));
        }
        take
    }

    /// Closes stream `id` (sends FIN); nothing more is delivered for it.
    pub fn close(&mut self, id: StreamId) {
        if self.streams.remove(&id) {
            self.queue(Frame::fin(id));
        }
    }

    fn queue(&mut self, frame: Frame) {
        if let Ok(bytes) = frame.to_bytes() {
            self.outgoing_bytes += bytes.len();
            self.outgoing.push_back(bytes);
        }
    }

    /// Encoded frames to send, coalesced.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let first = self.outgoing.pop_front()?;
        self.outgoing_bytes -= first.len();
        if self.outgoing.front().is_none_or(|next| first.len() + next.len() > TRANSMIT) {
            return Some(first);
        }
        let mut batch = BytesMut::from(&first[..]);
        while let Some(next) = self.outgoing.front() {
            if batch.len() + next.len() > TRANSMIT {
                break;
            }
            let next = self.outgoing.pop_front().expect("front exists");
            self.outgoing_bytes -= next.len();
            batch.extend_from_slice(&next);
        }
        Some(batch.freeze())
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        let event = self.events.pop_front()?;
        if let MuxEvent::Data(_, data) = &event {
            self.event_bytes -= data.len();
        }
        Some(event)
    }

    /// Whether to keep feeding input: false while more than
    /// [`MuxConfig::max_receive_buffer`] bytes wait in events.
    pub fn wants_input(&self) -> bool {
        self.event_bytes < self.config.max_receive_buffer
    }

    /// Encoded bytes waiting for [`Mux::poll_transmit`].
    pub fn outgoing_len(&self) -> usize {
        self.outgoing_bytes
    }

    /// Open streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// When [`Mux::handle_timeout`] must be called next (keep-alive only).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.config.keep_alive && !self.dead)
            .then(|| self.next_ping.min(self.last_received + KEEP_ALIVE_TIMEOUT))
    }

    /// Sends due keep-alives and declares the peer dead after the keep-alive timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.config.keep_alive || self.dead {
            return;
        }
        if now >= self.last_received + KEEP_ALIVE_TIMEOUT {
            self.dead = true;
            self.events.push_back(MuxEvent::Dead);
            return;
        }
        if now >= self.next_ping {
            self.queue(Frame::nop());
            self.next_ping = now + KEEP_ALIVE_INTERVAL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump(from: &mut Mux, to: &mut Mux, now: Instant) {
        while let Some(bytes) = from.poll_transmit() {
            to.handle_input(&bytes, now).unwrap();
        }
    }

    #[test]
    fn streams_open_carry_data_and_close_both_ways() {
        let now = Instant::now();
        let mut client = Mux::client(MuxConfig::default(), now);
        let mut server = Mux::server(MuxConfig::default(), now);
        let a = client.open().unwrap();
        let b = client.open().unwrap();
        assert_eq!((a, b), (3, 5), "client ids are odd from 3");
        let big = vec![9u8; 100_000];
        assert_eq!(client.write(b, &big), big.len());
        pump(&mut client, &mut server, now);
        let mut received = Vec::new();
        let mut opened = Vec::new();
        while let Some(event) = server.poll_event() {
            match event {
                MuxEvent::Opened(id) => opened.push(id),
                MuxEvent::Data(id, data) => {
                    assert_eq!(id, b);
                    received.extend_from_slice(&data);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(opened, vec![a, b]);
        assert_eq!(received, big);
        server.write(a, b"back");
        server.close(a);
        pump(&mut server, &mut client, now);
        assert_eq!(client.poll_event(), Some(MuxEvent::Data(a, "back".into())));
        assert_eq!(client.poll_event(), Some(MuxEvent::Closed(a)));
        assert_eq!(client.write(a, b"late"), 0, "a closed stream takes nothing");
    }

    #[test]
    fn keep_alive_pings_and_times_out_only_when_on() {
        let start = Instant::now();
        let mut on = Mux::server(MuxConfig::default(), start);
        on.handle_timeout(start + Duration::from_secs(10));
        assert!(on.poll_transmit().is_some(), "a NOP after 10 s");
        on.handle_timeout(start + Duration::from_secs(30));
        assert_eq!(on.poll_event(), Some(MuxEvent::Dead));
        let mut config = MuxConfig::default();
        config.keep_alive = false;
        let mut off = Mux::server(config, start);
        assert_eq!(off.poll_timeout(), None);
        off.handle_timeout(start + Duration::from_secs(300));
        assert!(off.poll_transmit().is_none() && off.poll_event().is_none());
    }

    #[test]
    fn refusals_and_bounds() {
        let now = Instant::now();
        let mut config = MuxConfig::default();
        config.max_streams = 1;
        config.max_receive_buffer = 10;
        let mut server = Mux::server(config, now);
        let mut wire = Vec::new();
        for id in [3u32, 5] {
            Frame::syn(id).encode(&mut wire).unwrap();
        }
        Frame::psh(3, Bytes::from_static(b"0123456789abc")).encode(&mut wire).unwrap();
        Frame::psh(99, Bytes::from_static(b"lost")).encode(&mut wire).unwrap();
        server.handle_input(&wire, now).unwrap();
        assert!(!server.wants_input(), "13 bytes wait against a 10-byte limit");
        let fin = server.poll_transmit().unwrap();
        let mut decoder = StreamDecoder::new();
        decoder.push(&fin);
        assert_eq!(decoder.next_frame().unwrap(), Some(Frame::fin(5)), "the extra stream is refused");
        assert_eq!(server.poll_event(), Some(MuxEvent::Opened(3)));
        assert!(matches!(server.poll_event(), Some(MuxEvent::Data(3, _))));
        assert!(server.wants_input());
        assert_eq!(server.poll_event(), None, "data for an unknown stream is dropped");
        assert!(server.handle_input(&[2, 0, 0, 0, 0, 0, 0, 0], now).is_err());
        assert!(matches!(server.handle_input(b"", now), Err(MuxError::Dead)));
        assert_eq!(server.open(), Err(MuxError::Dead));

        let mut small = MuxConfig::default();
        small.max_outgoing = 100;
        let mut client = Mux::client(small, now);
        let id = client.open().unwrap();
        let taken = client.write(id, &[1; 1000]);
        assert!(taken < 100, "writes stop at the outgoing limit");
        while client.poll_transmit().is_some() {}
        assert!(client.write(id, &[1; 10]) > 0, "and resume once transmitted");
    }
}
