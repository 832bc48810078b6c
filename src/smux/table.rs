//! A sans-IO smux v1 session: the stream table both ends run directly over the session's byte
//! stream (the reference bridges smux onto the data channel via a socket pair, PROTOCOL.md §9.4).
//!
//! Peer behaviour follows xtaci/smux v1.5, the library both Go peers use: a SYN for an id that
//! is open is ignored, data and FIN for an id that is not open are dropped, and only a bad
//! version or command byte ends the session.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Command, Frame, HEADER_SIZE, MAX_DATA_LEN, SmuxError, StreamDecoder, put_header};

/// A stream id: odd from 3 in the order the client opens them.
pub type StreamId = u32;

/// Bounds and keep-alive of a [`Mux`].
///
/// `#[non_exhaustive]`: start from [`MuxConfig::new`] or [`MuxConfig::default`] (xtaci's
/// defaults, keep-alive on) and set fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MuxConfig {
    /// Send a NOP every 10 s and declare the mux dead after 30 s without input. Both ends must
    /// agree or the one sending NOPs kills the session (PROTOCOL.md §9.4); decide it from the
    /// peer's version with [`crate::version::client_disables_smux_keepalive`] or
    /// [`crate::version::agent_disables_smux_keepalive`].
    pub keep_alive: bool,
    /// Most data per PSH frame (xtaci's MaxFrameSize, 32 KiB), clamped to 1..=65 535.
    pub max_frame_data: usize,
    /// Received bytes waiting in events above which [`Mux::wants_input`] turns false
    /// (xtaci's MaxReceiveBuffer, 4 MiB). v1 has no per-stream window, so this one budget is
    /// shared by all streams.
    pub max_receive_buffer: usize,
    /// Encoded bytes waiting for [`Mux::poll_transmit`] above which [`Mux::write`] takes
    /// nothing.
    pub max_outgoing: usize,
    /// Streams open at once; the client's [`Mux::open`] fails beyond it and the server answers
    /// further SYNs with FIN.
    pub max_streams: usize,
}

impl MuxConfig {
    /// xtaci's defaults with keep-alive on or off: the one setting each end must decide.
    pub fn new(keep_alive: bool) -> MuxConfig {
        MuxConfig {
            keep_alive,
            ..MuxConfig::default()
        }
    }
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
/// Most bytes per [`Mux::poll_transmit`]. Frames may be cut anywhere: the peer reassembles
/// the byte stream.
const TRANSMIT: usize = 64 * 1024;

/// What the peer did, or that the mux died.
#[derive(Clone, PartialEq, Eq)]
pub enum MuxEvent {
    /// The peer opened a stream (server side only; the client refuses SYNs with FIN).
    Opened(StreamId),
    /// Data for an open stream, in order.
    Data(StreamId, Bytes),
    /// The peer closed the stream. v1 FIN is a full close: the stream is gone, writes to it
    /// take nothing, and no FIN needs to be sent back (calling [`Mux::close`] is harmless).
    Closed(StreamId),
    /// Nothing arrived for 30 s with keep-alive on: the mux is dead, end the session.
    Dead,
}

impl MuxEvent {
    fn stream(&self) -> Option<StreamId> {
        match self {
            MuxEvent::Opened(id) | MuxEvent::Data(id, _) | MuxEvent::Closed(id) => Some(*id),
            MuxEvent::Dead => None,
        }
    }

    /// What the event counts against [`MuxConfig::max_receive_buffer`]: the size of the frame
    /// it came from, so that a flood of empty control frames is bounded too.
    fn cost(&self) -> usize {
        match self {
            MuxEvent::Data(_, data) => HEADER_SIZE + data.len(),
            _ => HEADER_SIZE,
        }
    }
}

impl fmt::Debug for MuxEvent {
    // Data is forwarded port traffic: show its size, not its bytes (as `Frame` does).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MuxEvent::Opened(id) => f.debug_tuple("Opened").field(id).finish(),
            MuxEvent::Data(id, data) => write!(f, "Data({id}, {} bytes)", data.len()),
            MuxEvent::Closed(id) => f.debug_tuple("Closed").field(id).finish(),
            MuxEvent::Dead => f.write_str("Dead"),
        }
    }
}

/// Why a mux operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The peer's bytes are not smux v1 (version or command byte); the mux is dead.
    #[error("smux protocol error: {0}")]
    Protocol(#[from] SmuxError),
    /// [`MuxConfig::max_streams`] streams are open already; close one first.
    #[error("{0} smux streams are open already")]
    TooManyStreams(usize),
    /// Only the client side opens streams (PROTOCOL.md §9.4).
    #[error("only the smux client opens streams")]
    NotClient,
    /// All odd 32-bit ids have been used; a new mux session is needed (xtaci's ErrGoAway).
    #[error("smux stream ids are exhausted")]
    IdsExhausted,
    /// The mux died earlier (protocol error or keep-alive timeout).
    #[error("the smux session is over")]
    Dead,
}

/// One smux v1 session, client or server side, without IO or clock.
///
/// # Driving it
///
/// 1. Feed what happened: [`Mux::handle_input`] with the bytes of each received Output
///    payload (only while [`Mux::wants_input`] is true), [`Mux::handle_timeout`] once
///    [`Mux::poll_timeout`] has passed, and application commands ([`Mux::open`],
///    [`Mux::write`], [`Mux::close`]).
/// 2. After each call drain [`Mux::poll_transmit`] (send every buffer, in order, as session
///    data) and [`Mux::poll_event`]; then re-arm the timer from [`Mux::poll_timeout`].
///
/// Memory is bounded. Toward the application: events wait in one queue, and once they hold
/// [`MuxConfig::max_receive_buffer`] bytes [`Mux::wants_input`] turns false — stop reading
/// the session until the application has polled them (v1 has no per-stream window; not
/// reading is the only lever, and the keep-alive timeout is suspended meanwhile, as in xtaci).
/// Toward the peer: [`Mux::write`] takes only what fits under [`MuxConfig::max_outgoing`];
/// poll the transmit queue and retry the rest.
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
///
/// let id = client.open()?;
/// assert_eq!(client.write(id, b"ping"), 4);
/// while let Some(bytes) = client.poll_transmit() {
///     server.handle_input(&bytes, now)?; // in real use: session Output both ways
/// }
/// assert_eq!(server.poll_event(), Some(MuxEvent::Opened(id)));
/// assert_eq!(server.poll_event(), Some(MuxEvent::Data(id, "ping".into())));
///
/// server.write(id, b"pong");
/// server.close(id);
/// while let Some(bytes) = server.poll_transmit() {
///     client.handle_input(&bytes, now)?;
/// }
/// assert_eq!(client.poll_event(), Some(MuxEvent::Data(id, "pong".into())));
/// assert_eq!(client.poll_event(), Some(MuxEvent::Closed(id)));
/// assert_eq!((client.stream_count(), server.stream_count()), (0, 0));
/// # Ok::<(), ssm_session::smux::MuxError>(())
/// ```
pub struct Mux {
    config: MuxConfig,
    client: bool,
    /// The last id the client opened; 1 before the first, so that the first is 3.
    last_id: StreamId,
    streams: HashSet<StreamId>,
    decoder: StreamDecoder,
    /// Encoded frames not yet handed out by `poll_transmit`.
    outgoing: BytesMut,
    events: VecDeque<MuxEvent>,
    /// Sum of the events' [`MuxEvent::cost`].
    events_cost: usize,
    /// The event budget ran out since the last keep-alive check: we stopped reading, so the
    /// silence is ours, not the peer's.
    stalled: bool,
    last_received: Instant,
    next_ping: Instant,
    dead: bool,
}

impl fmt::Debug for Mux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mux")
            .field("client", &self.client)
            .field("streams", &self.streams.len())
            .field("outgoing", &self.outgoing.len())
            .field("events", &self.events.len())
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
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
            last_id: 1,
            streams: HashSet::new(),
            decoder: StreamDecoder::new(),
            outgoing: BytesMut::new(),
            events: VecDeque::new(),
            events_cost: 0,
            stalled: false,
            last_received: now,
            next_ping: now + KEEP_ALIVE_INTERVAL,
            dead: false,
        }
    }

    /// Feeds bytes received from the peer, split anywhere.
    ///
    /// A bad version or command byte kills the mux and returns [`MuxError::Protocol`];
    /// afterwards every call returns [`MuxError::Dead`]. Events decoded before the bad frame
    /// stay available.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), MuxError> {
        if self.dead {
            return Err(MuxError::Dead);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.last_received = now;
        self.decoder.push(bytes);
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => self.receive(frame),
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.die();
                    return Err(error.into());
                }
            }
        }
    }

    fn receive(&mut self, frame: Frame) {
        let id = frame.stream_id;
        match frame.command {
            Command::Nop => {}
            Command::Syn => {
                if self.streams.contains(&id) {
                    return; // xtaci ignores a SYN for an open id
                }
                if self.client || self.streams.len() >= self.config.max_streams {
                    // Refuse, but only while there is room: a SYN flood must not grow the
                    // queue when nobody drains it. A dropped refusal leaves the peer with a
                    // stream whose data we discard, as for any unknown id.
                    if self.outgoing.len() < self.config.max_outgoing {
                        self.queue_control(Command::Fin, id);
                    }
                    return;
                }
                self.streams.insert(id);
                self.push_event(MuxEvent::Opened(id));
            }
            Command::Psh => {
                // Data for a stream that is not open is dropped, as in xtaci.
                if !frame.data.is_empty() && self.streams.contains(&id) {
                    self.push_event(MuxEvent::Data(id, frame.data));
                }
            }
            Command::Fin => {
                // The peer has forgotten the stream once it sends FIN, so we do too.
                if self.streams.remove(&id) {
                    self.push_event(MuxEvent::Closed(id));
                }
            }
        }
    }

    fn push_event(&mut self, event: MuxEvent) {
        self.events_cost += event.cost();
        self.events.push_back(event);
        if !self.wants_input() {
            self.stalled = true;
        }
    }

    /// Opens a stream (client side): queues its SYN and returns its id (3, 5, 7, …).
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
        let id = self.last_id.checked_add(2).ok_or(MuxError::IdsExhausted)?;
        self.last_id = id;
        self.streams.insert(id);
        self.queue_control(Command::Syn, id);
        Ok(id)
    }

    /// Queues `data` on stream `id` as PSH frames of at most [`MuxConfig::max_frame_data`]
    /// bytes and returns how many bytes were taken: fewer than `data.len()` when the outgoing
    /// queue is full (poll [`Mux::poll_transmit`], then write the rest), 0 when the stream is
    /// not open (see [`Mux::is_open`]).
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> usize {
        if !self.is_open(id) {
            return 0;
        }
        let frame_limit = self.config.max_frame_data.clamp(1, MAX_DATA_LEN);
        let mut taken = 0;
        while taken < data.len() {
            let room = self.config.max_outgoing.saturating_sub(self.outgoing.len());
            if room <= HEADER_SIZE {
                break;
            }
            let size = (data.len() - taken)
                .min(frame_limit)
                .min(room - HEADER_SIZE);
            // `size` ≤ `frame_limit` ≤ 65 535: the cast is lossless.
            put_header(&mut self.outgoing, Command::Psh, size as u16, id);
            self.outgoing.extend_from_slice(&data[taken..taken + size]);
            taken += size;
        }
        taken
    }

    /// Closes stream `id`: queues its FIN (v1 has no half-close) and drops its events not
    /// yet polled, so nothing more is reported for it. Unknown ids are ignored.
    ///
    /// Events are dropped by scanning the queue, which holds at most
    /// [`MuxConfig::max_receive_buffer`] / 8 events while input is paused as asked.
    pub fn close(&mut self, id: StreamId) {
        if self.streams.remove(&id) {
            self.queue_control(Command::Fin, id);
        }
        let cost = &mut self.events_cost;
        self.events.retain(|event| {
            let keep = event.stream() != Some(id);
            if !keep {
                *cost -= event.cost();
            }
            keep
        });
    }

    fn queue_control(&mut self, command: Command, id: StreamId) {
        put_header(&mut self.outgoing, command, 0, id);
    }

    /// The next bytes to send to the peer (several frames coalesced, ≤ 64 KiB, possibly cut
    /// mid-frame), `None` when nothing waits.
    #[must_use = "polled bytes are gone: send them, and drain until None"]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.outgoing.is_empty() {
            return None;
        }
        let size = self.outgoing.len().min(TRANSMIT);
        Some(self.outgoing.split_to(size).freeze())
    }

    /// The next event for the application. Polling a [`MuxEvent::Data`] counts it as
    /// consumed: only poll when its bytes can be taken.
    #[must_use = "a polled event is gone (its data counts as consumed): handle it"]
    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        let event = self.events.pop_front()?;
        self.events_cost -= event.cost();
        Some(event)
    }

    /// Whether to keep feeding input: false while the events not yet polled hold
    /// [`MuxConfig::max_receive_buffer`] bytes or more. Stop reading the session until it is
    /// true again; input fed anyway is still processed.
    pub fn wants_input(&self) -> bool {
        self.events_cost < self.config.max_receive_buffer
    }

    /// Encoded bytes waiting for [`Mux::poll_transmit`].
    pub fn outgoing_len(&self) -> usize {
        self.outgoing.len()
    }

    /// Whether stream `id` is open: opened (or accepted) and closed by neither side.
    pub fn is_open(&self, id: StreamId) -> bool {
        self.streams.contains(&id)
    }

    /// Streams open now.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// When [`Mux::handle_timeout`] must be called next; `None` without keep-alive or once
    /// dead.
    #[must_use = "arm a timer for it: keep-alive pings and the dead-peer check wait on it"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.config.keep_alive && !self.dead)
            .then(|| self.next_ping.min(self.last_received + KEEP_ALIVE_TIMEOUT))
    }

    /// Queues a keep-alive NOP when one is due and declares the mux dead
    /// ([`MuxEvent::Dead`]) after 30 s without input, unless input was paused for
    /// back-pressure meanwhile. Does nothing without keep-alive.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.config.keep_alive || self.dead {
            return;
        }
        if now >= self.last_received + KEEP_ALIVE_TIMEOUT {
            if !self.stalled {
                self.die();
                self.push_event(MuxEvent::Dead);
                return;
            }
            // xtaci likewise spares a session whose receive budget is exhausted.
            self.stalled = !self.wants_input();
            self.last_received = now;
        }
        if now >= self.next_ping {
            // Anything already queued proves we are alive just as well once sent.
            if self.outgoing.is_empty() {
                self.queue_control(Command::Nop, 0);
            }
            self.next_ping = now + KEEP_ALIVE_INTERVAL;
        }
    }

    /// Ends the mux: nothing more is sent or accepted; queued events stay for the application.
    fn die(&mut self) {
        self.dead = true;
        self.streams.clear();
        self.outgoing.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_run_out_like_xtaci() {
        let now = Instant::now();
        let mut client = Mux::client(MuxConfig::default(), now);
        client.last_id = u32::MAX - 2;
        assert_eq!(
            client.open(),
            Ok(u32::MAX),
            "the last odd id is still usable"
        );
        assert_eq!(client.open(), Err(MuxError::IdsExhausted));
        client.close(u32::MAX);
        assert_eq!(
            client.open(),
            Err(MuxError::IdsExhausted),
            "ids are never reused"
        );
    }
}
