//! The gateway's data-channel relay as a state machine: it pairs the client's and the agent's
//! connection of each session, forwards their messages without reading them, and throttles
//! them with the protocol's own messages. No sockets, clock or randomness inside:
//! `net::relay` drives it over websockets and `sim` in virtual time.
//!
//! # Flow control (PROTOCOL.md §5.5, §7.5)
//!
//! Each side has a queue of messages toward it. A connected side is sent `pause_publication`
//! while its peer is absent or while the queue toward the peer holds more than
//! [`Config::soft_limit`] bytes, and `start_publication` once the peer is back and that queue
//! has drained to half the soft limit; the publication frame goes ahead of queued data. A peer
//! that ignores the pause meets [`Config::hard_limit`]: its messages are refused
//! ([`Refused::Full`]) until [`Event::Readable`], so the caller stops reading it instead of the
//! relay dropping anything. Queues survive a side's reconnection (its new connection replaces
//! the old one); a session without any connection for [`Config::abandon_after`] is forgotten.
//!
//! # Run loop
//!
//! After every call, drain [`Relay::poll_event`]; for each [`Event::Transmit`] write what
//! [`Relay::poll_transmit`] hands out until `None`; call [`Relay::handle_timeout`] when
//! [`Relay::poll_timeout`] passes.
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use ssm_session::SeededEntropy;
//! use ssm_session::relay::{Config, Event, Relay};
//! use ssm_session::session::Role;
//!
//! let now = Instant::now();
//! let mut relay = Relay::new(Config::default(), now, 1_700_000_000_000, Box::new(SeededEntropy::new(1)));
//! let client = relay.attach(now, "s-1", Role::Client)?;
//! let agent = relay.attach(now, "s-1", Role::Agent)?;
//! relay.receive(now, client, Bytes::from_static(b"frame"))?;
//! let mut written = Vec::new(); // what a driver would write to each websocket
//! while let Some(event) = relay.poll_event() {
//!     if let Event::Transmit(conn) = event {
//!         while let Some(message) = relay.poll_transmit(now, conn) {
//!             written.push((conn, message));
//!         }
//!     }
//! }
//! assert_eq!(written, [(agent, Bytes::from_static(b"frame"))]);
//! # Ok::<(), ssm_session::relay::Refused>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use crate::entropy::Entropy;
use crate::payload::{ChannelClosed, JsonPayload};
use crate::session::Role;
use crate::{Frame, MessageType, PayloadType, SCHEMA_VERSION};

/// Limits and timings of a [`Relay`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Bytes queued toward one side above which the other side is paused.
    pub soft_limit: usize,
    /// Bytes queued toward one side at which the other side's messages are refused.
    pub hard_limit: usize,
    /// Messages queued toward one side at which the other side's messages are refused: many
    /// tiny messages cost memory beyond their bytes.
    pub max_queued: usize,
    /// Bytes queued across all sessions at which a message is refused ([`Refused::Full`])
    /// unless the queue it would join is empty: many sessions together stay within this plus
    /// one message each, and every session still moves.
    pub total_limit: usize,
    /// How long a session keeps its queues with neither side connected.
    pub abandon_after: Duration,
    /// How long a connection closed by the session's end waits for the peer's Close frame.
    pub close_linger: Duration,
}

impl Default for Config {
    /// 4 MiB soft and 16 MiB hard limits, 65 536 messages, 256 MiB in all, 60 s to come
    /// back, 2 s linger.
    fn default() -> Self {
        Config {
            soft_limit: 4 << 20,
            hard_limit: 16 << 20,
            max_queued: 1 << 16,
            total_limit: 256 << 20,
            abandon_after: Duration::from_secs(60),
            close_linger: Duration::from_secs(2),
        }
    }
}

/// One websocket attached to the relay; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Messages wait for this connection: write what [`Relay::poll_transmit`] hands out until
    /// `None`. Not repeated until that `None`.
    Transmit(ConnectionId),
    /// The queue that refused this connection's message drained: offer it again.
    Readable(ConnectionId),
    /// The session ended and everything for this connection was handed out: send a Close
    /// frame, read until the peer's Close, then [`Relay::detach`]. [`Event::Drop`] follows
    /// after [`Config::close_linger`] if the peer never closes.
    Close(ConnectionId),
    /// Drop this connection now, without a Close frame: it was replaced by a newer one of its
    /// side, disconnected, or lingered too long. It is already detached.
    Drop(ConnectionId),
    /// The session had no connection for [`Config::abandon_after`]; its queues are gone.
    Abandoned(String),
}

/// Why the relay refused an input. Nothing is changed by a refused call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The connection was never attached, or was detached, dropped or replaced.
    #[error("no such connection")]
    UnknownConnection,
    /// The session has ended: nothing more is forwarded and no side may attach.
    #[error("the session has ended")]
    Ended,
    /// The queue toward the peer is at the hard limit: stop reading this connection and offer
    /// the same message again after [`Event::Readable`].
    #[error("the queue toward the peer is full")]
    Full,
}

/// What is queued toward one side of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Messages waiting.
    pub messages: usize,
    /// Their bytes.
    pub bytes: usize,
}

/// Every session's pairing, queues and flow control. See the [module docs](self).
pub struct Relay {
    sessions: HashMap<String, Slot>,
    /// The session and side of every attached connection.
    connections: HashMap<ConnectionId, (String, Role)>,
    out: Outputs,
}

/// Everything a session's update writes to, apart from the session itself.
struct Outputs {
    config: Config,
    entropy: Box<dyn Entropy>,
    /// The latest instant seen and the wall clock at it, for frames' CreatedDate.
    clock: (Instant, u64),
    next_id: u64,
    /// Bytes in every session's outboxes.
    queued: usize,
    events: VecDeque<Event>,
    /// Deadlines, checked against the state when they come due (stale ones are skipped).
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Abandon(String),
    Linger(ConnectionId),
}

/// Both sides of one session.
#[derive(Default)]
struct Slot {
    sides: [Endpoint; 2],
    ended: bool,
    /// Set while neither side is connected.
    abandon_at: Option<Instant>,
}

/// One side of a session: its connection and the messages waiting to be written to it.
#[derive(Default)]
struct Endpoint {
    connection: Option<Connection>,
    outbox: VecDeque<Bytes>,
    outbox_bytes: usize,
}

struct Connection {
    id: ConnectionId,
    /// What this side was last told, or is about to be told by `publication`.
    paused: bool,
    /// A pause or start frame not yet handed out; it goes ahead of the outbox.
    publication: Option<Bytes>,
    /// An [`Event::Transmit`] is outstanding.
    announced: bool,
    /// A message was refused as [`Refused::Full`]: an [`Event::Readable`] is owed.
    refused: bool,
    /// [`Event::Close`] was given; a linger timer drops the connection.
    closing: bool,
}

fn index(side: Role) -> usize {
    match side {
        Role::Client => 0,
        Role::Agent => 1,
    }
}

fn other(side: Role) -> Role {
    match side {
        Role::Client => Role::Agent,
        Role::Agent => Role::Client,
    }
}

impl Relay {
    /// An empty relay. `wall_ms` is the wall clock at `now`; later frames are stamped from
    /// the `now`s passed in (see [`Relay::set_wall_clock`]).
    pub fn new(config: Config, now: Instant, wall_ms: u64, entropy: Box<dyn Entropy>) -> Relay {
        Relay {
            sessions: HashMap::new(),
            connections: HashMap::new(),
            out: Outputs {
                config,
                entropy,
                clock: (now, wall_ms),
                next_id: 0,
                queued: 0,
                events: VecDeque::new(),
                timers: BinaryHeap::new(),
            },
        }
    }

    /// Re-anchors the wall clock, which otherwise drifts with the monotonic one.
    pub fn set_wall_clock(&mut self, now: Instant, wall_ms: u64) {
        self.out.clock = (now, wall_ms);
    }

    /// A new connection of `side` of `session_id`. It replaces the side's previous connection
    /// (which gets [`Event::Drop`]); what is queued toward the side survives and is announced.
    pub fn attach(
        &mut self,
        now: Instant,
        session_id: &str,
        side: Role,
    ) -> Result<ConnectionId, Refused> {
        self.out.tick(now);
        let slot = self.sessions.entry(session_id.to_owned()).or_default();
        if slot.ended {
            return Err(Refused::Ended);
        }
        let id = ConnectionId(self.out.next_id);
        self.out.next_id += 1;
        let endpoint = &mut slot.sides[index(side)];
        let previous = endpoint.connection.replace(Connection {
            id,
            // A new transport starts unpaused (the session resumes on it).
            paused: false,
            publication: None,
            announced: false,
            refused: false,
            closing: false,
        });
        if let Some(previous) = previous {
            self.connections.remove(&previous.id);
            self.out.events.push_back(Event::Drop(previous.id));
        }
        self.connections.insert(id, (session_id.to_owned(), side));
        slot.abandon_at = None;
        slot.update_publication(session_id, side, &mut self.out);
        slot.update_publication(session_id, other(side), &mut self.out);
        if !slot.sides[index(side)].outbox.is_empty() {
            slot.announce(side, &mut self.out);
        }
        Ok(id)
    }

    /// `conn` is gone (the network failed or the peer closed). Its peer is paused; a session
    /// left without connections is kept for [`Config::abandon_after`], or forgotten at once
    /// if it has ended.
    pub fn detach(&mut self, now: Instant, conn: ConnectionId) -> Result<(), Refused> {
        self.out.tick(now);
        let (session_id, side) = self
            .connections
            .remove(&conn)
            .ok_or(Refused::UnknownConnection)?;
        self.unlink(&session_id, side);
        Ok(())
    }

    /// Drops `side`'s connection of `session_id` abruptly, as a network failure would: it gets
    /// [`Event::Drop`]. Returns whether there was one.
    pub fn disconnect(&mut self, now: Instant, session_id: &str, side: Role) -> bool {
        self.out.tick(now);
        let Some(id) = self
            .sessions
            .get(session_id)
            .and_then(|slot| slot.sides[index(side)].connection.as_ref())
            .map(|connection| connection.id)
        else {
            return false;
        };
        self.connections.remove(&id);
        self.unlink(session_id, side);
        self.out.events.push_back(Event::Drop(id));
        true
    }

    /// Forgets `side`'s connection of `session_id`, already removed from `connections`.
    fn unlink(&mut self, session_id: &str, side: Role) {
        let Some(slot) = self.sessions.get_mut(session_id) else {
            return;
        };
        slot.sides[index(side)].connection = None;
        let connected = slot.sides.iter().any(|end| end.connection.is_some());
        if slot.ended {
            if !connected {
                self.forget(session_id);
            }
        } else if connected {
            slot.update_publication(session_id, other(side), &mut self.out);
        } else {
            let at = self.out.clock.0 + self.out.config.abandon_after;
            slot.abandon_at = Some(at);
            let timer = Timer::Abandon(session_id.to_owned());
            self.out.timers.push(Reverse((at, timer)));
        }
    }

    /// A message read from `conn`, queued toward its peer unread (even while the peer is
    /// absent). On [`Refused::Full`] stop reading `conn` and offer the same message again after
    /// [`Event::Readable`]; messages after the end are refused as [`Refused::Ended`].
    pub fn receive(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        message: Bytes,
    ) -> Result<(), Refused> {
        self.out.tick(now);
        let (session_id, side) = self
            .connections
            .get(&conn)
            .ok_or(Refused::UnknownConnection)?;
        let Some(slot) = self.sessions.get_mut(session_id) else {
            return Err(Refused::UnknownConnection);
        };
        if slot.ended {
            return Err(Refused::Ended);
        }
        let side = *side;
        let config = &self.out.config;
        let peer = &mut slot.sides[index(other(side))];
        let full = !peer.outbox.is_empty()
            && (peer.outbox_bytes >= config.hard_limit
                || peer.outbox.len() >= config.max_queued
                || self.out.queued >= config.total_limit);
        if full {
            if let Some(connection) = &mut slot.sides[index(side)].connection {
                connection.refused = true;
            }
            return Err(Refused::Full);
        }
        peer.outbox_bytes += message.len();
        self.out.queued += message.len();
        peer.outbox.push_back(message);
        slot.announce(other(side), &mut self.out);
        slot.update_publication(session_id, side, &mut self.out);
        Ok(())
    }

    /// Ends `session_id` for good: each side gets `channel_closed` with `output` after what is
    /// already queued toward it, then [`Event::Close`]. Returns whether the session was known.
    pub fn end(&mut self, now: Instant, session_id: &str, output: &str) -> bool {
        self.out.tick(now);
        let Some(slot) = self.sessions.get_mut(session_id) else {
            return false;
        };
        if slot.ended {
            return true;
        }
        slot.ended = true;
        for side in [Role::Client, Role::Agent] {
            let frame = channel_closed_frame(
                session_id,
                output,
                self.out.message_id(),
                self.out.wall_ms(),
            );
            let endpoint = &mut slot.sides[index(side)];
            endpoint.outbox_bytes += frame.len();
            self.out.queued += frame.len();
            endpoint.outbox.push_back(frame);
            if let Some(connection) = &mut endpoint.connection {
                // A refused message will not be taken: its reader learns so by offering it.
                if std::mem::take(&mut connection.refused) {
                    self.out.events.push_back(Event::Readable(connection.id));
                }
            }
            slot.announce(side, &mut self.out);
        }
        if slot.sides.iter().all(|end| end.connection.is_none()) {
            self.forget(session_id);
        }
        true
    }

    /// The next message to write to `conn`: a pause or start for it first, then what its peer
    /// sent, in order. `now` dates the frames this causes and starts the close linger.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, conn: ConnectionId) -> Option<Bytes> {
        let mut next = None;
        self.transmit(now, conn, 1, |message| next = Some(message));
        next
    }

    /// As [`Relay::poll_transmit`], up to `max` messages at once appended to `batch` (the
    /// session is looked up once, not per message: what keeps 1 KiB reference-wire messages
    /// cheap); returns how many.
    pub fn poll_transmits(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        max: usize,
        batch: &mut Vec<Bytes>,
    ) -> usize {
        self.transmit(now, conn, max, |message| batch.push(message))
    }

    fn transmit(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        max: usize,
        mut emit: impl FnMut(Bytes),
    ) -> usize {
        self.out.tick(now);
        let Some((session_id, side)) = self.connections.get(&conn) else {
            return 0;
        };
        let side = *side;
        let Some(slot) = self.sessions.get_mut(session_id) else {
            return 0;
        };
        let endpoint = &mut slot.sides[index(side)];
        let Some(connection) = endpoint.connection.as_mut() else {
            return 0;
        };
        let mut count = 0;
        if count < max
            && let Some(frame) = connection.publication.take()
        {
            emit(frame);
            count += 1;
        }
        let mut taken = 0;
        while count < max {
            let Some(message) = endpoint.outbox.pop_front() else {
                if count == 0 {
                    connection.announced = false;
                    if slot.ended && !connection.closing {
                        connection.closing = true;
                        let at = self.out.clock.0 + self.out.config.close_linger;
                        self.out.timers.push(Reverse((at, Timer::Linger(conn))));
                        self.out.events.push_back(Event::Close(conn));
                    }
                }
                break;
            };
            endpoint.outbox_bytes -= message.len();
            self.out.queued -= message.len();
            emit(message);
            count += 1;
            taken += 1;
        }
        if taken == 0 {
            return count;
        }
        let drained = endpoint.outbox.is_empty()
            || (endpoint.outbox_bytes
                <= self.out.config.soft_limit.min(self.out.config.hard_limit)
                && endpoint.outbox.len() <= self.out.config.max_queued / 2);
        if drained
            && let Some(sender) = &mut slot.sides[index(other(side))].connection
            && std::mem::take(&mut sender.refused)
        {
            self.out.events.push_back(Event::Readable(sender.id));
        }
        slot.update_publication(session_id, other(side), &mut self.out);
        count
    }

    /// The next thing the driver must do, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`Relay::handle_timeout`] must be called next, if ever. May be early, never late.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.out.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The instant from [`Relay::poll_timeout`] passed: forgets abandoned sessions and drops
    /// connections that lingered too long. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.out.tick(now);
        while let Some(Reverse((at, _))) = self.out.timers.peek()
            && *at <= now
        {
            let Some(Reverse((at, timer))) = self.out.timers.pop() else {
                break;
            };
            match timer {
                Timer::Abandon(session_id) => {
                    let due = self
                        .sessions
                        .get(&session_id)
                        .is_some_and(|slot| slot.abandon_at == Some(at));
                    if due {
                        self.forget(&session_id);
                        self.out.events.push_back(Event::Abandoned(session_id));
                    }
                }
                Timer::Linger(conn) => {
                    let Some((session_id, side)) = self.connections.get(&conn).cloned() else {
                        continue;
                    };
                    self.connections.remove(&conn);
                    self.unlink(&session_id, side);
                    self.out.events.push_back(Event::Drop(conn));
                }
            }
        }
    }

    /// Which sides of `session_id` are connected: `(client, agent)`.
    pub fn connected(&self, session_id: &str) -> (bool, bool) {
        self.sessions
            .get(session_id)
            .map_or((false, false), |slot| {
                (
                    slot.sides[0].connection.is_some(),
                    slot.sides[1].connection.is_some(),
                )
            })
    }

    /// What is queued toward `side` of `session_id`.
    pub fn backlog(&self, session_id: &str, side: Role) -> Backlog {
        self.sessions
            .get(session_id)
            .map_or(Backlog::default(), |slot| {
                let endpoint = &slot.sides[index(side)];
                Backlog {
                    messages: endpoint.outbox.len(),
                    bytes: endpoint.outbox_bytes,
                }
            })
    }

    /// Bytes queued toward every side of every session.
    pub fn queued_bytes(&self) -> usize {
        self.out.queued
    }

    /// Removes `session_id`'s state, and its queues from the total.
    fn forget(&mut self, session_id: &str) {
        if let Some(slot) = self.sessions.remove(session_id) {
            let bytes: usize = slot.sides.iter().map(|end| end.outbox_bytes).sum();
            self.out.queued -= bytes;
        }
    }

    /// Sessions the relay holds state for.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.out.config)
            .field("sessions", &self.sessions.len())
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Outputs {
    fn tick(&mut self, now: Instant) {
        let (then, wall_ms) = self.clock;
        if now > then {
            let elapsed = (now - then).as_millis() as u64;
            self.clock = (now, wall_ms + elapsed);
        }
    }

    fn wall_ms(&self) -> u64 {
        self.clock.1
    }

    fn message_id(&mut self) -> Uuid {
        let mut bytes = [0; 16];
        self.entropy.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

impl Slot {
    /// Announces what waits for `side`'s connection, once until it is drained.
    fn announce(&mut self, side: Role, out: &mut Outputs) {
        if let Some(connection) = &mut self.sides[index(side)].connection
            && !std::mem::replace(&mut connection.announced, true)
        {
            out.events.push_back(Event::Transmit(connection.id));
        }
    }

    /// Tells `side` to pause or start publishing if its peer's presence or backlog changed
    /// that; between the marks it is left as it is.
    fn update_publication(&mut self, session_id: &str, side: Role, out: &mut Outputs) {
        if self.ended {
            return;
        }
        let peer = &self.sides[index(other(side))];
        let soft = out.config.soft_limit;
        let pause = if peer.connection.is_none() || peer.outbox_bytes > soft {
            true
        } else if peer.outbox_bytes <= soft / 2 {
            false
        } else {
            return;
        };
        let Some(connection) = &mut self.sides[index(side)].connection else {
            return;
        };
        if connection.paused == pause {
            return;
        }
        connection.paused = pause;
        if connection.publication.take().is_some() {
            return; // the opposite was never handed out: the side still believes this
        }
        let message_type = match pause {
            true => MessageType::PausePublication,
            false => MessageType::StartPublication,
        };
        connection.publication = Some(publication_frame(
            message_type,
            session_id,
            out.message_id(),
            out.wall_ms(),
        ));
        self.announce(side, out);
    }
}

/// The `channel_closed` payload that ends `session_id` (PROTOCOL.md §5.4), on a data channel or the
/// agent's control channel.
pub fn channel_closed(
    session_id: &str,
    output: &str,
    message_id: Uuid,
    wall_ms: u64,
) -> ChannelClosed {
    ChannelClosed {
        message_id: message_id.to_string(),
        created_date: wall_ms.to_string(),
        destination_id: session_id.to_owned(),
        session_id: session_id.to_owned(),
        message_type: MessageType::ChannelClosed.to_string(),
        schema_version: 1,
        output: output.to_owned(),
    }
}

/// The `channel_closed` frame the relay sends both sides when a session ends.
pub fn channel_closed_frame(
    session_id: &str,
    output: &str,
    message_id: Uuid,
    wall_ms: u64,
) -> Bytes {
    let payload = channel_closed(session_id, output, message_id, wall_ms).to_json();
    relay_frame(
        MessageType::ChannelClosed,
        message_id,
        wall_ms,
        payload.into(),
    )
}

/// A `pause_publication` / `start_publication` frame. No peer reads the payload (PROTOCOL.md §5.5,
/// §16): ours names the message and the session, as `channel_closed` does.
fn publication_frame(
    message_type: MessageType,
    session_id: &str,
    message_id: Uuid,
    wall_ms: u64,
) -> Bytes {
    let payload = serde_json::json!({
        "MessageType": message_type.to_string(),
        "SchemaVersion": 1,
        "SessionId": session_id,
    });
    relay_frame(
        message_type,
        message_id,
        wall_ms,
        payload.to_string().into(),
    )
}

/// A frame the relay itself originates (sequence 0, flags SYN|FIN, no payload type).
fn relay_frame(message_type: MessageType, message_id: Uuid, wall_ms: u64, payload: Bytes) -> Bytes {
    Frame {
        message_type,
        schema_version: SCHEMA_VERSION,
        created_date: wall_ms.max(1),
        sequence_number: 0,
        flags: Frame::FLAG_SYN | Frame::FLAG_FIN,
        message_id,
        payload_type: PayloadType::Unset,
        payload,
    }
    .to_bytes()
    .expect("relay frames have a known type, a JSON payload, a date and a random id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededEntropy;

    fn relay(config: Config) -> (Relay, Instant) {
        let now = Instant::now();
        let relay = Relay::new(
            config,
            now,
            1_700_000_000_000,
            Box::new(SeededEntropy::new(3)),
        );
        (relay, now)
    }

    fn events(relay: &mut Relay) -> Vec<Event> {
        std::iter::from_fn(|| relay.poll_event()).collect()
    }

    fn drain(relay: &mut Relay, now: Instant, conn: ConnectionId) -> Vec<Bytes> {
        std::iter::from_fn(|| relay.poll_transmit(now, conn)).collect()
    }

    fn types(messages: &[Bytes]) -> Vec<MessageType> {
        messages
            .iter()
            .map(|m| Frame::decode(m.clone()).map_or(MessageType::Acknowledge, |f| f.message_type))
            .collect()
    }

    #[test]
    fn batches_hand_out_what_single_polls_do_in_the_same_order() {
        let run = |batched: bool| {
            let (mut relay, now) = relay(Config::default());
            let agent = relay.attach(now, "s", Role::Agent).unwrap();
            assert_eq!(
                types(&drain(&mut relay, now, agent)),
                [MessageType::PausePublication]
            );
            let client = relay.attach(now, "s", Role::Client).unwrap();
            for n in 0..300u32 {
                relay
                    .receive(now, client, Bytes::from(n.to_be_bytes().to_vec()))
                    .unwrap();
            }
            let mut out = Vec::new();
            if batched {
                while relay.poll_transmits(now, agent, 7, &mut out) > 0 {}
            } else {
                out = drain(&mut relay, now, agent);
            }
            let tail: Vec<Vec<u8>> = out.iter().rev().take(300).map(|m| m.to_vec()).collect();
            (types(&out[..out.len() - 300]), tail)
        };
        let (single_head, single_tail) = run(false);
        let (batch_head, batch_tail) = run(true);
        assert_eq!(single_head, [MessageType::StartPublication]);
        assert_eq!(batch_head, single_head);
        assert_eq!(batch_tail, single_tail);
        assert_eq!(batch_tail[0], 299u32.to_be_bytes());
    }

    #[test]
    fn unknown_connections_are_refused() {
        let (mut relay, now) = relay(Config::default());
        let ghost = ConnectionId(42);
        assert_eq!(
            relay.receive(now, ghost, Bytes::from_static(b"x")),
            Err(Refused::UnknownConnection)
        );
        assert_eq!(relay.detach(now, ghost), Err(Refused::UnknownConnection));
        assert_eq!(relay.poll_transmit(now, ghost), None);
        assert!(!relay.disconnect(now, "nobody", Role::Agent));
        assert!(!relay.end(now, "nobody", ""));
        assert_eq!(relay.poll_event(), None);
    }

    #[test]
    fn a_detached_or_replaced_connection_is_refused() {
        let (mut relay, now) = relay(Config::default());
        let first = relay.attach(now, "s", Role::Client).unwrap();
        let second = relay.attach(now, "s", Role::Client).unwrap();
        assert!(events(&mut relay).contains(&Event::Drop(first)));
        assert_eq!(
            relay.receive(now, first, Bytes::from_static(b"x")),
            Err(Refused::UnknownConnection)
        );
        assert_eq!(relay.detach(now, first), Err(Refused::UnknownConnection));
        assert_eq!(relay.detach(now, second), Ok(()));
        assert_eq!(relay.detach(now, second), Err(Refused::UnknownConnection));
        assert_eq!(relay.connected("s"), (false, false));
    }

    #[test]
    fn messages_after_the_end_are_refused_and_nobody_reattaches() {
        let (mut relay, now) = relay(Config::default());
        let client = relay.attach(now, "s", Role::Client).unwrap();
        let agent = relay.attach(now, "s", Role::Agent).unwrap();
        assert!(relay.end(now, "s", "bye"));
        assert!(relay.end(now, "s", "again"), "a second end changes nothing");
        assert_eq!(
            relay.receive(now, client, Bytes::from_static(b"x")),
            Err(Refused::Ended)
        );
        assert_eq!(relay.attach(now, "s", Role::Agent), Err(Refused::Ended));
        let sent = drain(&mut relay, now, agent);
        assert_eq!(types(&sent), [MessageType::ChannelClosed]);
        assert!(events(&mut relay).contains(&Event::Close(agent)));
    }

    #[test]
    fn the_side_that_arrives_first_is_paused_and_started_when_its_peer_attaches() {
        let (mut relay, now) = relay(Config::default());
        let client = relay.attach(now, "s", Role::Client).unwrap();
        assert_eq!(events(&mut relay), [Event::Transmit(client)]);
        relay
            .receive(now, client, Bytes::from_static(b"early"))
            .unwrap();
        assert_eq!(
            types(&drain(&mut relay, now, client)),
            [MessageType::PausePublication]
        );
        let agent = relay.attach(now, "s", Role::Agent).unwrap();
        assert_eq!(
            drain(&mut relay, now, agent),
            [Bytes::from_static(b"early")],
            "queued while absent"
        );
        assert_eq!(
            types(&drain(&mut relay, now, client)),
            [MessageType::StartPublication]
        );
    }

    #[test]
    fn a_pause_not_yet_handed_out_is_withdrawn_by_the_start() {
        let (mut relay, now) = relay(Config::default());
        let client = relay.attach(now, "s", Role::Client).unwrap();
        relay.attach(now, "s", Role::Agent).unwrap();
        assert_eq!(drain(&mut relay, now, client), Vec::<Bytes>::new());
    }

    #[test]
    fn the_hard_limit_refuses_until_the_queue_drains() {
        let config = Config {
            soft_limit: 10,
            hard_limit: 30,
            ..Config::default()
        };
        let (mut relay, now) = relay(config);
        let client = relay.attach(now, "s", Role::Client).unwrap();
        let agent = relay.attach(now, "s", Role::Agent).unwrap();
        let chunk = Bytes::from_static(&[7; 10]);
        for _ in 0..3 {
            relay.receive(now, client, chunk.clone()).unwrap();
        }
        assert_eq!(
            relay.receive(now, client, chunk.clone()),
            Err(Refused::Full)
        );
        assert_eq!(
            relay.backlog("s", Role::Agent),
            Backlog {
                messages: 3,
                bytes: 30
            }
        );
        events(&mut relay);
        let _ = relay.poll_transmit(now, agent);
        assert!(
            !events(&mut relay).contains(&Event::Readable(client)),
            "20 bytes is above soft"
        );
        let _ = relay.poll_transmit(now, agent);
        assert!(events(&mut relay).contains(&Event::Readable(client)));
        relay.receive(now, client, chunk).unwrap();
    }

    #[test]
    fn the_message_count_is_bounded_too() {
        let config = Config {
            max_queued: 4,
            ..Config::default()
        };
        let (mut relay, now) = relay(config);
        let client = relay.attach(now, "s", Role::Client).unwrap();
        let accepted = (0..10)
            .take_while(|_| relay.receive(now, client, Bytes::from_static(b"a")).is_ok())
            .count();
        assert_eq!(accepted, 4);
    }

    #[test]
    fn a_lingering_close_is_dropped_and_the_ended_session_forgotten() {
        let (mut relay, now) = relay(Config::default());
        let client = relay.attach(now, "s", Role::Client).unwrap();
        relay.end(now, "s", "");
        // The linger counts from the Close, however long the last messages took to write.
        let written = now + Duration::from_secs(30);
        let _ = drain(&mut relay, written, client);
        assert!(events(&mut relay).contains(&Event::Close(client)));
        let at = relay.poll_timeout().unwrap();
        assert_eq!(at, written + Config::default().close_linger);
        relay.handle_timeout(at - Duration::from_millis(1));
        assert_eq!(relay.session_count(), 1);
        relay.handle_timeout(at);
        assert_eq!(events(&mut relay), [Event::Drop(client)]);
        assert_eq!(relay.session_count(), 0);
        assert_eq!(relay.poll_timeout(), None);
    }

    #[test]
    fn a_session_comes_back_before_it_is_abandoned() {
        let (mut relay, now) = relay(Config::default());
        let client = relay.attach(now, "s", Role::Client).unwrap();
        relay
            .receive(now, client, Bytes::from_static(b"kept"))
            .unwrap();
        relay.detach(now, client).unwrap();
        let later = now + Duration::from_secs(59);
        relay.attach(later, "s", Role::Client).unwrap();
        relay.handle_timeout(now + Duration::from_secs(61));
        assert!(
            !events(&mut relay)
                .iter()
                .any(|e| matches!(e, Event::Abandoned(_)))
        );
        assert_eq!(relay.backlog("s", Role::Agent).messages, 1);
    }

    #[test]
    fn frames_are_stamped_from_the_clock_passed_in() {
        let (mut relay, now) = relay(Config::default());
        let later = now + Duration::from_millis(250);
        let client = relay.attach(later, "s", Role::Client).unwrap();
        let frame = Frame::decode(relay.poll_transmit(later, client).unwrap()).unwrap();
        assert_eq!(frame.created_date, 1_700_000_000_250);
        assert!(!frame.message_id.is_nil());
    }

    #[test]
    fn channel_closed_names_the_session_and_the_output() {
        let frame =
            Frame::decode(channel_closed_frame("s-9", "done", Uuid::from_u128(5), 7)).unwrap();
        let closed = ChannelClosed::from_json(&frame.payload).unwrap();
        assert_eq!(
            (closed.session_id.as_str(), closed.output.as_str()),
            ("s-9", "done")
        );
        assert_eq!(closed.message_id, frame.message_id.to_string());
        assert_eq!(frame.created_date, 7);
    }
}
