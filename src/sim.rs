//! A client/agent pair over an emulated network, in virtual time: what the tests, the
//! `simulate` example and anyone embedding the core can use to see a session survive latency,
//! jitter, loss, duplication, reordering and dropped connections.
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
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::entropy::SeededEntropy;
use crate::kms::LocalKms;
use crate::session::{
    AgentConfig, ClientConfig, CloseReason, Event, KeyRequest, SendError, Session,
};

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
}

impl Link {
    /// A link behaving as `config`, its randomness drawn from `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Link {
        Link {
            config,
            rng: SeededEntropy::new(seed),
            queue: BinaryHeap::new(),
            counter: 0,
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
    }
}

/// A client and an agent session joined by two [`Link`]s, with a [`LocalKms`] answering their
/// key requests and byte sources and sinks on both sides.
pub struct Pair {
    /// The client-role session.
    pub client: Session,
    /// The agent-role session.
    pub agent: Session,
    /// Virtual time.
    pub now: Instant,
    wall_ms: u64,
    to_agent: Link,
    to_client: Link,
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
    /// Times at which the connection will drop, then come back after `reconnect_delay`.
    pub drops: Vec<Instant>,
    /// How long a dropped connection stays down.
    pub reconnect_delay: Duration,
    reconnect_at: Option<Instant>,
    /// Websocket messages put on the links.
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

impl Pair {
    /// A pair with the same `link` behaviour both ways; `seed` fixes every random choice.
    pub fn new(client: ClientConfig, agent: AgentConfig, link: LinkConfig, seed: u64) -> Pair {
        let now = Instant::now();
        let wall_ms = 1_700_000_000_000;
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
            to_agent: Link::new(link.clone(), seed ^ 0x11),
            to_client: Link::new(link, seed ^ 0x22),
            kms: LocalKms::from_master_key([0x5a; 32]),
            kms_rng: SeededEntropy::new(seed ^ 0x33),
            client_source: Vec::new(),
            agent_source: Vec::new(),
            taken: [0; 2],
            client_received: Vec::new(),
            agent_received: Vec::new(),
            events: Vec::new(),
            drops: Vec::new(),
            reconnect_delay: Duration::from_millis(300),
            reconnect_at: None,
            messages: 0,
            handshake_done: [false; 2],
        }
    }

    /// Whether both sides reported [`Event::HandshakeComplete`].
    pub fn handshake_done(&self) -> bool {
        self.handshake_done == [true; 2]
    }

    /// Whether either side closed.
    pub fn closed(&self) -> bool {
        self.client.is_closed() || self.agent.is_closed()
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
        for (link, session) in [
            (&mut self.to_agent, &mut self.agent),
            (&mut self.to_client, &mut self.client),
        ] {
            while let Some(message) = link.poll(self.now) {
                session.handle_message(self.now, self.wall_ms, message);
            }
        }
        for session in [&mut self.client, &mut self.agent] {
            if session.poll_timeout().is_some_and(|at| at <= self.now) {
                session.handle_timeout(self.now);
            }
        }
        self.pump_sources();
        self.drain();
        let next = [
            self.client.poll_timeout(),
            self.agent.poll_timeout(),
            self.to_agent.next_arrival(),
            self.to_client.next_arrival(),
            self.reconnect_at,
            self.drops.iter().min().copied(),
        ]
        .into_iter()
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
        if self.reconnect_at.is_some_and(|at| at <= self.now) {
            self.reconnect_at = None;
            self.client.transport_restored(self.now);
            self.agent.transport_restored(self.now);
        }
        if let Some(index) = self.drops.iter().position(|at| *at <= self.now) {
            self.drops.swap_remove(index);
            self.to_agent.clear();
            self.to_client.clear();
            self.client.transport_lost(self.now);
            self.agent.transport_lost(self.now);
            self.reconnect_at = Some(self.now + self.reconnect_delay);
        }
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
            while let Some(message) = self.client.poll_transmit() {
                self.to_agent.send(self.now, message);
                self.messages += 1;
                moved = true;
            }
            while let Some(message) = self.agent.poll_transmit() {
                self.to_client.send(self.now, message);
                self.messages += 1;
                moved = true;
            }
            for side in [Side::Client, Side::Agent] {
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
