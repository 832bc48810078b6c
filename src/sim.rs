//! A client/agent pair over an emulated network, in virtual time: what the tests, the
//! `simulate` example and anyone embedding the core can use to see a session survive latency,
//! jitter, loss, duplication, reordering and dropped connections.
//!
//! As in production, the two sessions never meet: each talks over its own links to a
//! [`relay::Relay`] in the middle, which pairs them, queues, pauses and resumes them.
//!
//! Time only moves when [`Pair::step`] jumps it to the next thing that happens, so minutes of
//! session run in milliseconds and every run with the same seed is identical.
//!
//! ```
//! use ssm_session::sim::{LinkConfig, Pair};
//! use ssm_session::session::{AgentConfig, ClientConfig, SessionType};
//!
//! let link = LinkConfig { loss: 0.1, ..LinkConfig::default() };
//! let mut pair = Pair::new(ClientConfig::new("s-1", "i-1"), AgentConfig::new("s-1", "i-1", SessionType::Port), link, 7);
//! pair.run_until(|pair| pair.handshake_done(), 10_000);
//! pair.client_source.extend_from_slice(b"hello");
//! pair.run_until(|pair| pair.agent_received.len() == 5, 10_000);
//! assert_eq!(pair.agent_received, b"hello");
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::entropy::SeededEntropy;
use crate::kms::LocalKms;
use crate::relay::{self, ConnectionId, Refused};
use crate::session::{
    AgentConfig, ClientConfig, CloseReason, Event, KeyRequest, Role, SendError, Session,
};
use crate::{Header, MessageType};

/// How one direction of the network misbehaves. Probabilities apply per websocket message.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way latency.
    pub delay: Duration,
    /// Extra latency, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message arrives twice.
    pub duplicate: f64,
    /// Probability that a message is held back behind later ones.
    pub reorder: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
        }
    }
}

/// One direction of the emulated network.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    rng: SeededEntropy,
    queue: BinaryHeap<Reverse<(Instant, u64, Bytes)>>,
    counter: u64,
    /// When the latest [`Link::send_in_order`] message arrives.
    in_order: Option<Instant>,
}

impl Link {
    /// A link behaving as `config`, its randomness drawn from `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Link {
        Link {
            config,
            rng: SeededEntropy::new(seed),
            queue: BinaryHeap::new(),
            counter: 0,
            in_order: None,
        }
    }

    /// Puts `message` on the link at `now`.
    pub fn send(&mut self, now: Instant, message: Bytes) {
        if self.rng.next_f64() < self.config.loss {
            return;
        }
        let copies = if self.rng.next_f64() < self.config.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.config.delay + self.config.jitter.mul_f64(self.rng.next_f64());
            if self.rng.next_f64() < self.config.reorder {
                delay += self.config.delay + Duration::from_millis(5);
            }
            self.counter += 1;
            self.queue
                .push(Reverse((now + delay, self.counter, message.clone())));
        }
    }

    /// Puts `message` on the link at `now` as TCP would carry it: never lost or duplicated, and
    /// never ahead of an earlier message sent this way. For the relay's own frames, which
    /// nothing retransmits: a lost `start_publication` would leave its side paused for good.
    pub fn send_in_order(&mut self, now: Instant, message: Bytes) {
        let delay = self.config.delay + self.config.jitter.mul_f64(self.rng.next_f64());
        let at = self
            .in_order
            .map_or(now + delay, |last| last.max(now + delay));
        self.in_order = Some(at);
        self.counter += 1;
        self.queue.push(Reverse((at, self.counter, message)));
    }

    /// A message that has arrived by `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Bytes> {
        let Reverse((at, _, _)) = self.queue.peek()?;
        if *at > now {
            return None;
        }
        self.queue.pop().map(|Reverse((_, _, message))| message)
    }

    /// When the next message arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The connection died: everything in flight is gone.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.in_order = None;
    }
}

/// The network of a [`Pair`]: each side's two links to the relay, the relay's limits and how
/// fast each side reads what the relay writes to it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Network {
    /// Both directions between the client and the relay.
    pub client_link: LinkConfig,
    /// Both directions between the agent and the relay.
    pub agent_link: LinkConfig,
    /// The relay's limits and timings.
    pub relay: relay::Config,
    /// Bytes per second the client reads from the relay; `None` is as fast as it comes.
    pub client_read_rate: Option<u64>,
    /// Bytes per second the agent reads from the relay; `None` is as fast as it comes.
    pub agent_read_rate: Option<u64>,
}

impl Network {
    /// `client_link` between the client and the relay, the agent next to the relay (a perfect,
    /// instant link), default relay limits, no slow readers: the client's network is what
    /// misbehaves, as when the relay and the agent share a data centre.
    pub fn new(client_link: LinkConfig) -> Network {
        Network {
            client_link,
            agent_link: LinkConfig {
                delay: Duration::ZERO,
                ..LinkConfig::default()
            },
            relay: relay::Config::default(),
            client_read_rate: None,
            agent_read_rate: None,
        }
    }
}

/// A client and an agent session joined through a [`relay::Relay`] (client ⇄ links ⇄ relay ⇄
/// links ⇄ agent), with a [`LocalKms`] answering their key requests and byte sources and sinks
/// on both sides.
pub struct Pair {
    /// The client-role session.
    pub client: Session,
    /// The agent-role session.
    pub agent: Session,
    /// Virtual time.
    pub now: Instant,
    wall_ms: u64,
    session_id: String,
    relay: relay::Relay,
    /// Per side (client, agent): toward the relay, and from it.
    up: [Link; 2],
    down: [Link; 2],
    /// Per side: its connection to the relay, while connected.
    connections: [Option<ConnectionId>; 2],
    /// Per side: messages the relay refused as full, waiting in the "socket" in order.
    stalled: [VecDeque<Bytes>; 2],
    /// Per side: the relay announced messages for it.
    pending: [bool; 2],
    /// Per side: reading speed, and when it can read the next message.
    read_rate: [Option<u64>; 2],
    ready_at: [Instant; 2],
    /// Per side: when a lost connection comes back.
    reconnect_at: [Option<Instant>; 2],
    /// The relay ended the session: nobody reconnects.
    ended: bool,
    kms: LocalKms,
    kms_rng: SeededEntropy,
    /// Bytes the client sends, as fast as its window allows.
    pub client_source: Vec<u8>,
    /// Bytes the agent sends, as fast as its window allows.
    pub agent_source: Vec<u8>,
    /// How much of each source (client, agent) the sessions have taken.
    taken: [usize; 2],
    /// Stream bytes the client received.
    pub client_received: Vec<u8>,
    /// Stream bytes the agent received.
    pub agent_received: Vec<u8>,
    /// Every other event, with the side that saw it.
    pub events: Vec<(Side, Event)>,
    /// What the relay asked of the simulation apart from writing ([`relay::Event::Transmit`]).
    pub relay_events: Vec<(Instant, relay::Event)>,
    /// Frames the relay itself originated (pause, start, channel_closed), when it handed each
    /// out toward a side.
    pub relay_frames: Vec<(Instant, Side, MessageType)>,
    /// Times at which both connections will drop, then come back after `reconnect_delay`.
    pub drops: Vec<Instant>,
    /// How long a dropped connection stays down.
    pub reconnect_delay: Duration,
    /// Websocket messages the two sessions sent.
    pub messages: u64,
    handshake_done: [bool; 2],
}

/// Which session an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Client = 0,
    /// The agent.
    Agent = 1,
}

impl Side {
    /// The session role on this side.
    pub fn role(self) -> Role {
        match self {
            Side::Client => Role::Client,
            Side::Agent => Role::Agent,
        }
    }
}

const SIDES: [Side; 2] = [Side::Client, Side::Agent];

impl Pair {
    /// A pair whose client reaches the relay over `link` (both ways; see [`Network::new`]);
    /// `seed` fixes every random choice.
    pub fn new(client: ClientConfig, agent: AgentConfig, link: LinkConfig, seed: u64) -> Pair {
        Pair::with_network(client, agent, Network::new(link), seed)
    }

    /// A pair over `network`. Both sides connect at once.
    pub fn with_network(
        client: ClientConfig,
        agent: AgentConfig,
        network: Network,
        seed: u64,
    ) -> Pair {
        let now = Instant::now();
        let wall_ms = 1_700_000_000_000;
        let session_id = client.session_id.clone();
        let mut relay = relay::Relay::new(
            network.relay,
            now,
            wall_ms,
            Box::new(SeededEntropy::new(seed ^ 0x44)),
        );
        let connections = SIDES.map(|side| relay.attach(now, &session_id, side.role()).ok());
        Pair {
            client: Session::client(
                client,
                now,
                wall_ms,
                Box::new(SeededEntropy::new(seed ^ 0xc1)),
            ),
            agent: Session::agent(
                agent,
                now,
                wall_ms,
                Box::new(SeededEntropy::new(seed ^ 0xa6)),
            ),
            now,
            wall_ms,
            session_id,
            relay,
            up: [
                Link::new(network.client_link.clone(), seed ^ 0x11),
                Link::new(network.agent_link.clone(), seed ^ 0x55),
            ],
            down: [
                Link::new(network.client_link, seed ^ 0x22),
                Link::new(network.agent_link, seed ^ 0x66),
            ],
            connections,
            stalled: [VecDeque::new(), VecDeque::new()],
            pending: [false; 2],
            read_rate: [network.client_read_rate, network.agent_read_rate],
            ready_at: [now; 2],
            reconnect_at: [None; 2],
            ended: false,
            kms: LocalKms::from_master_key([0x5a; 32]),
            kms_rng: SeededEntropy::new(seed ^ 0x33),
            client_source: Vec::new(),
            agent_source: Vec::new(),
            taken: [0; 2],
            client_received: Vec::new(),
            agent_received: Vec::new(),
            events: Vec::new(),
            relay_events: Vec::new(),
            relay_frames: Vec::new(),
            drops: Vec::new(),
            reconnect_delay: Duration::from_millis(300),
            messages: 0,
            handshake_done: [false; 2],
        }
    }

    /// The relay in the middle.
    pub fn relay(&self) -> &relay::Relay {
        &self.relay
    }

    /// The session id both sides and the relay use.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Whether `side` is connected to the relay now.
    pub fn is_connected(&self, side: Side) -> bool {
        self.connections[side as usize].is_some()
    }

    /// Whether both sides reported [`Event::HandshakeComplete`].
    pub fn handshake_done(&self) -> bool {
        self.handshake_done == [true; 2]
    }

    /// Whether either side closed.
    pub fn closed(&self) -> bool {
        self.client.is_closed() || self.agent.is_closed()
    }

    /// `side`'s connection to the relay drops now (what is in flight on it is lost) and comes
    /// back after `down_for`, as a resume on a new websocket.
    pub fn disconnect(&mut self, side: Side, down_for: Duration) {
        let back = self.now + down_for;
        self.lose(side, back);
        self.drain();
    }

    /// The service ends the session: the relay sends `channel_closed` to both sides.
    pub fn end(&mut self, output: &str) {
        self.ended = true;
        self.relay.end(self.now, &self.session_id, output);
        self.drain();
    }

    /// Runs until `done` holds (`true`) or `max_steps` steps pass or nothing is left to happen
    /// (`false`).
    pub fn run_until(&mut self, mut done: impl FnMut(&Pair) -> bool, max_steps: usize) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        done(self)
    }

    /// Does everything due now, then jumps to the next instant anything happens. `false` when
    /// nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.apply_drops();
        self.pump_sources();
        self.drain();
        for side in SIDES {
            let s = side as usize;
            while let Some(message) = self.up[s].poll(self.now) {
                self.offer(side, message);
            }
            while let Some(message) = self.down[s].poll(self.now) {
                let (now, wall_ms) = (self.now, self.wall_ms);
                self.session(side).handle_message(now, wall_ms, message);
            }
        }
        for session in [&mut self.client, &mut self.agent] {
            if session.poll_timeout().is_some_and(|at| at <= self.now) {
                session.handle_timeout(self.now);
            }
        }
        if self.relay.poll_timeout().is_some_and(|at| at <= self.now) {
            self.relay.handle_timeout(self.now);
        }
        self.pump_sources();
        self.drain();
        let reads = SIDES.map(|side| {
            let s = side as usize;
            (self.pending[s] && self.connections[s].is_some()).then_some(self.ready_at[s])
        });
        let next = [
            self.client.poll_timeout(),
            self.agent.poll_timeout(),
            self.relay.poll_timeout(),
            self.drops.iter().min().copied(),
        ]
        .into_iter()
        .chain(self.up.iter().map(Link::next_arrival))
        .chain(self.down.iter().map(Link::next_arrival))
        .chain(self.reconnect_at)
        .chain(reads)
        .flatten()
        .min();
        match next {
            Some(at) => {
                if at > self.now {
                    self.wall_ms += (at - self.now).as_millis() as u64;
                    self.now = at;
                }
                true
            }
            None => false,
        }
    }

    fn apply_drops(&mut self) {
        for side in SIDES {
            if self.reconnect_at[side as usize].is_some_and(|at| at <= self.now) {
                self.restore(side);
            }
        }
        if let Some(index) = self.drops.iter().position(|at| *at <= self.now) {
            self.drops.swap_remove(index);
            let back = self.now + self.reconnect_delay;
            for side in SIDES {
                self.lose(side, back);
            }
        }
    }

    /// `side`'s websocket died: what was in flight either way is gone.
    fn lose(&mut self, side: Side, back: Instant) {
        let s = side as usize;
        self.up[s].clear();
        self.down[s].clear();
        self.stalled[s].clear();
        self.pending[s] = false;
        if let Some(conn) = self.connections[s].take() {
            let _ = self.relay.detach(self.now, conn);
        }
        let now = self.now;
        self.session(side).transport_lost(now);
        let at = self.reconnect_at[s].map_or(back, |at| at.max(back));
        self.reconnect_at[s] = Some(at);
    }

    /// `side` opens a new websocket to the relay and resumes on it.
    fn restore(&mut self, side: Side) {
        let s = side as usize;
        self.reconnect_at[s] = None;
        if self.ended {
            return;
        }
        if let Ok(conn) = self.relay.attach(self.now, &self.session_id, side.role()) {
            self.connections[s] = Some(conn);
            self.ready_at[s] = self.now;
            let now = self.now;
            self.session(side).transport_restored(now);
        }
    }

    /// A message from `side` reached the relay; a full relay leaves it (and what follows)
    /// unread until it says it can take more.
    fn offer(&mut self, side: Side, message: Bytes) {
        let s = side as usize;
        let Some(conn) = self.connections[s] else {
            return;
        };
        if !self.stalled[s].is_empty() {
            self.stalled[s].push_back(message);
            return;
        }
        if self.relay.receive(self.now, conn, message.clone()) == Err(Refused::Full) {
            self.stalled[s].push_back(message);
        }
    }

    fn unstall(&mut self, side: Side) {
        let s = side as usize;
        let Some(conn) = self.connections[s] else {
            return;
        };
        while let Some(message) = self.stalled[s].pop_front() {
            if self.relay.receive(self.now, conn, message.clone()) == Err(Refused::Full) {
                self.stalled[s].push_front(message);
                return;
            }
        }
    }

    fn side_of(&self, conn: ConnectionId) -> Option<Side> {
        SIDES
            .into_iter()
            .find(|side| self.connections[*side as usize] == Some(conn))
    }

    fn pump_sources(&mut self) {
        let [client_taken, agent_taken] = &mut self.taken;
        let sides = [
            (
                &mut self.client,
                &self.client_source,
                client_taken,
                self.handshake_done[0],
            ),
            (
                &mut self.agent,
                &self.agent_source,
                agent_taken,
                self.handshake_done[1],
            ),
        ];
        for (session, source, taken, ready) in sides {
            while ready && *taken < source.len() {
                match session.send(self.now, &source[*taken..]) {
                    Ok(n) => *taken += n,
                    Err(SendError::Blocked | SendError::NotReady | SendError::Closed) => break,
                }
            }
        }
    }

    fn drain(&mut self) {
        loop {
            let mut moved = false;
            for side in SIDES {
                let s = side as usize;
                while let Some(message) = self.session(side).poll_transmit() {
                    self.messages += 1;
                    moved = true;
                    if self.connections[s].is_some() {
                        self.up[s].send(self.now, message);
                    }
                }
            }
            while let Some(event) = self.relay.poll_event() {
                moved = true;
                self.on_relay_event(event);
            }
            for side in SIDES {
                moved |= self.write_to(side);
            }
            for side in SIDES {
                while let Some(event) = self.session(side).poll_event() {
                    moved = true;
                    self.on_event(side, event);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves what the relay has for `side` onto its link, as fast as the side reads.
    fn write_to(&mut self, side: Side) -> bool {
        let s = side as usize;
        let Some(conn) = self.connections[s] else {
            return false;
        };
        let mut moved = false;
        while self.pending[s] && self.ready_at[s] <= self.now {
            let Some(message) = self.relay.poll_transmit(self.now, conn) else {
                self.pending[s] = false;
                break;
            };
            moved = true;
            if let Some(rate) = self.read_rate[s] {
                let start = self.ready_at[s].max(self.now);
                let secs = message.len() as f64 / rate.max(1) as f64;
                self.ready_at[s] = start + Duration::from_secs_f64(secs);
            }
            match Header::parse(&message).map(|header| header.message_type) {
                Ok(
                    own @ (MessageType::PausePublication
                    | MessageType::StartPublication
                    | MessageType::ChannelClosed),
                ) => {
                    self.relay_frames.push((self.now, side, own));
                    self.down[s].send_in_order(self.now, message);
                }
                _ => self.down[s].send(self.now, message),
            }
        }
        moved
    }

    fn on_relay_event(&mut self, event: relay::Event) {
        match &event {
            relay::Event::Transmit(conn) => {
                if let Some(side) = self.side_of(*conn) {
                    self.pending[side as usize] = true;
                }
                return;
            }
            relay::Event::Readable(conn) => {
                if let Some(side) = self.side_of(*conn) {
                    self.unstall(side);
                }
            }
            // The peer's Close comes back at once; what is in flight still arrives.
            relay::Event::Close(conn) => {
                if let Some(side) = self.side_of(*conn) {
                    self.connections[side as usize] = None;
                    let _ = self.relay.detach(self.now, *conn);
                }
            }
            relay::Event::Drop(conn) => {
                if let Some(side) = self.side_of(*conn) {
                    self.connections[side as usize] = None;
                    let back = self.now + self.reconnect_delay;
                    self.lose(side, back);
                }
            }
            relay::Event::Abandoned(_) => {}
        }
        self.relay_events.push((self.now, event));
    }

    fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::Client => &mut self.client,
            Side::Agent => &mut self.agent,
        }
    }

    fn on_event(&mut self, side: Side, event: Event) {
        match event {
            Event::Stream { data, .. } => match side {
                Side::Client => self.client_received.extend_from_slice(&data),
                Side::Agent => self.agent_received.extend_from_slice(&data),
            },
            Event::KeyRequest(KeyRequest::GenerateDataKey { key_id, context }) => {
                let mut plaintext = [0; 64];
                let mut nonce = [0; 12];
                crate::Entropy::fill(&mut self.kms_rng, &mut plaintext);
                crate::Entropy::fill(&mut self.kms_rng, &mut nonce);
                let key = self
                    .kms
                    .generate_data_key_with(&key_id, &context, plaintext, nonce);
                self.client.provide_data_key(self.now, key);
            }
            Event::KeyRequest(KeyRequest::Decrypt {
                key_id,
                ciphertext_blob,
                context,
            }) => match self.kms.decrypt_now(&key_id, &ciphertext_blob, &context) {
                Ok(plaintext) => self.agent.provide_plaintext_key(self.now, plaintext),
                Err(error) => self.agent.key_failed(self.now, &error.to_string()),
            },
            Event::HandshakeComplete(info) => {
                self.handshake_done[side as usize] = true;
                self.events.push((side, Event::HandshakeComplete(info)));
            }
            other => self.events.push((side, other)),
        }
    }

    /// The reason a side closed, if it did.
    pub fn close_reason(&self, side: Side) -> Option<&CloseReason> {
        self.events.iter().find_map(|(s, event)| match event {
            Event::Closed(reason) if *s == side => Some(reason),
            _ => None,
        })
    }
}
