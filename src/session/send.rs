//! Outgoing stream messages kept until acknowledged (PROTOCOL.md §7.4), bounded in messages and
//! bytes. Nothing is ever evicted: when full, the application is told to wait.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) seq: i64,
    /// The exact frame bytes; retransmissions resend them unchanged.
    pub(crate) frame: Bytes,
    /// When it was last put on the wire; `None` while it waits for a transport.
    pub(crate) sent_at: Option<Instant>,
    pub(crate) first_sent_at: Option<Instant>,
    /// How many times it went on the wire.
    pub(crate) sends: u32,
}

#[derive(Debug)]
pub(crate) struct SendBuffer {
    entries: VecDeque<InFlight>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl SendBuffer {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        SendBuffer {
            entries: VecDeque::new(),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Whether one more message of `len` bytes fits.
    pub(crate) fn has_room_for(&self, len: usize) -> bool {
        self.entries.len() < self.max_messages
            && (self.bytes == 0 || self.bytes + len <= self.max_bytes)
    }

    pub(crate) fn push(&mut self, seq: i64, frame: Bytes) {
        self.bytes += frame.len();
        self.entries.push_back(InFlight {
            seq,
            frame,
            sent_at: None,
            first_sent_at: None,
            sends: 0,
        });
    }

    /// Removes the message `seq`, if still held.
    pub(crate) fn acknowledge(&mut self, seq: i64) -> Option<InFlight> {
        let index = self
            .entries
            .binary_search_by_key(&seq, |entry| entry.seq)
            .ok()?;
        let entry = self.entries.remove(index)?;
        self.bytes -= entry.frame.len();
        Some(entry)
    }

    /// Removes every message up to and including `seq`; returns the newest one removed.
    pub(crate) fn acknowledge_up_to(&mut self, seq: i64) -> Option<InFlight> {
        let mut newest = None;
        while self.entries.front().is_some_and(|entry| entry.seq <= seq) {
            let entry = self.entries.pop_front()?;
            self.bytes -= entry.frame.len();
            newest = Some(entry);
        }
        newest
    }

    pub(crate) fn newest_mut(&mut self) -> Option<&mut InFlight> {
        self.entries.back_mut()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut InFlight> {
        self.entries.iter_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
