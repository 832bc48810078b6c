//! Incoming stream messages: the next expected sequence number and a bounded buffer of those
//! that arrived early (PROTOCOL.md §7.3).

use std::collections::BTreeMap;

use crate::Frame;

/// What to do with a received stream message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// It is the next one: process it.
    InOrder,
    /// Ahead of the next one and now buffered: acknowledge it.
    Buffered,
    /// Ahead, but the buffer is full: drop it unacknowledged, the peer will resend.
    Dropped,
    /// Already received: acknowledge it again, do not deliver it again.
    Duplicate,
}

#[derive(Debug)]
pub(crate) struct ReceiveBuffer {
    expected: i64,
    early: BTreeMap<i64, Frame>,
    max_early: usize,
}

impl ReceiveBuffer {
    pub(crate) fn new(max_early: usize) -> Self {
        ReceiveBuffer {
            expected: 0,
            early: BTreeMap::new(),
            max_early,
        }
    }

    pub(crate) fn expected(&self) -> i64 {
        self.expected
    }

    /// Classifies `frame`, keeping it when it arrived early.
    pub(crate) fn arrive(&mut self, frame: &Frame) -> Arrival {
        let seq = frame.sequence_number;
        if seq < self.expected || self.early.contains_key(&seq) {
            Arrival::Duplicate
        } else if seq == self.expected {
            Arrival::InOrder
        } else if self.early.len() < self.max_early {
            self.early.insert(seq, frame.clone());
            Arrival::Buffered
        } else {
            Arrival::Dropped
        }
    }

    /// Marks the expected message processed.
    pub(crate) fn advance(&mut self) {
        self.expected += 1;
    }

    /// Returns a message taken with [`ReceiveBuffer::take_next`] that could not be processed.
    pub(crate) fn put_back(&mut self, frame: Frame) {
        self.early.insert(frame.sequence_number, frame);
    }

    /// The buffered message that is now next, if any.
    pub(crate) fn take_next(&mut self) -> Option<Frame> {
        self.early.remove(&self.expected)
    }
}
