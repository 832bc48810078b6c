//! smux protocol version 1 frames (PROTOCOL.md §9.4), the multiplexing layer of port-forwarding
//! sessions in mux mode.
//!
//! The Output payloads of a session, concatenated in sequence order, form one byte stream per
//! direction; smux frames cross message boundaries freely. [`StreamDecoder`] takes that stream
//! in pieces of any size and yields whole frames.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 1 | version, 1 |
//! | 1 | 1 | command: 0 SYN, 1 FIN, 2 PSH, 3 NOP |
//! | 2 | 2 | data length, **little-endian** |
//! | 4 | 4 | stream id, **little-endian** |
//! | 8 | n | data (PSH only) |
//!
//! As in xtaci/smux, only PSH frames are followed by data: the length field of SYN, FIN and NOP
//! is read but no bytes are consumed for it.
//!
//! [`Mux`] is the session on top: the stream table both the client and the agent run directly
//! over that byte stream.

use std::fmt;

mod table;

pub use table::{Mux, MuxConfig, MuxError, MuxEvent, StreamId};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version this module speaks.
pub const VERSION: u8 = 1;
/// Size of a frame header.
pub const HEADER_SIZE: usize = 8;
/// Most data one PSH frame can carry.
pub const MAX_DATA_LEN: usize = u16::MAX as usize;

/// What a frame does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Opens a stream.
    Syn,
    /// Closes a stream (no half-close in v1).
    Fin,
    /// Carries stream data.
    Psh,
    /// Keep-alive, stream id 0.
    Nop,
}

impl Command {
    fn from_wire(byte: u8) -> Option<Command> {
        match byte {
            0 => Some(Command::Syn),
            1 => Some(Command::Fin),
            2 => Some(Command::Psh),
            3 => Some(Command::Nop),
            _ => None,
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            Command::Syn => 0,
            Command::Fin => 1,
            Command::Psh => 2,
            Command::Nop => 3,
        }
    }
}

/// One smux frame.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use ssm_session::smux::{Command, Frame};
///
/// let frame = Frame::psh(3, Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"));
/// let wire = frame.to_bytes()?;
/// assert_eq!(&wire[..8], [1, 2, 18, 0, 3, 0, 0, 0]);
/// assert_eq!(Frame::syn(3).command, Command::Syn);
/// # Ok::<(), ssm_session::smux::SmuxError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame does.
    pub command: Command,
    /// The stream; odd ids from 3 when the client opens them, 0 for NOP.
    pub stream_id: u32,
    /// Data; non-empty only for PSH.
    pub data: Bytes,
}

impl Frame {
    /// Opens `stream_id`.
    pub fn syn(stream_id: u32) -> Frame {
        Frame {
            command: Command::Syn,
            stream_id,
            data: Bytes::new(),
        }
    }

    /// Closes `stream_id`.
    pub fn fin(stream_id: u32) -> Frame {
        Frame {
            command: Command::Fin,
            stream_id,
            data: Bytes::new(),
        }
    }

    /// Sends `data` on `stream_id`.
    pub fn psh(stream_id: u32, data: Bytes) -> Frame {
        Frame {
            command: Command::Psh,
            stream_id,
            data,
        }
    }

    /// A keep-alive.
    pub fn nop() -> Frame {
        Frame {
            command: Command::Nop,
            stream_id: 0,
            data: Bytes::new(),
        }
    }

    /// Size of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        HEADER_SIZE + self.data.len()
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut impl BufMut) -> Result<(), SmuxError> {
        if self.command != Command::Psh && !self.data.is_empty() {
            return Err(SmuxError::DataOnControlFrame {
                command: self.command,
            });
        }
        let len = u16::try_from(self.data.len()).map_err(|_| SmuxError::DataTooLong {
            len: self.data.len(),
        })?;
        put_header(out, self.command, len, self.stream_id);
        out.put_slice(&self.data);
        Ok(())
    }

    /// Encodes the frame into a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, SmuxError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.into())
    }
}

impl fmt::Debug for Frame {
    // Data is forwarded port traffic: show its size, not its bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("command", &self.command)
            .field("stream_id", &self.stream_id)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Appends a frame header; `len` bytes of data must follow for PSH, none otherwise.
///
/// [`Mux`] writes headers this way to encode data straight from the caller's slice.
fn put_header(out: &mut impl BufMut, command: Command, len: u16, stream_id: u32) {
    out.put_u8(VERSION);
    out.put_u8(command.to_wire());
    out.put_u16_le(len);
    out.put_u32_le(stream_id);
}

/// Turns a byte stream, delivered in pieces split anywhere, into frames.
///
/// It buffers only what has been pushed and not yet decoded; drain it with
/// [`StreamDecoder::next_frame`] after every [`StreamDecoder::push`] and at most one partial
/// frame (≤ 8 + 65 535 bytes) stays behind. After an error it returns that error forever: smux
/// ends the whole session on a bad version or command.
///
/// # Examples
///
/// ```
/// use ssm_session::smux::{Command, StreamDecoder};
///
/// let mut decoder = StreamDecoder::new();
/// decoder.push(&[1, 2, 2, 0, 3, 0]);
/// assert!(decoder.next_frame()?.is_none());
/// decoder.push(&[0, 0, b'h', b'i', 1, 1, 0, 0, 3, 0, 0, 0]);
/// let data = decoder.next_frame()?.unwrap();
/// assert_eq!((data.command, &data.data[..]), (Command::Psh, &b"hi"[..]));
/// assert_eq!(decoder.next_frame()?.unwrap().command, Command::Fin);
/// assert!(decoder.next_frame()?.is_none());
/// # Ok::<(), ssm_session::smux::SmuxError>(())
/// ```
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buffer: BytesMut,
    failed: Option<SmuxError>,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the next piece of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// Bytes pushed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SmuxError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.decode_one();
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.buffer = BytesMut::new();
        }
        result
    }

    fn decode_one(&mut self) -> Result<Option<Frame>, SmuxError> {
        let Some(header) = self.buffer.first_chunk::<HEADER_SIZE>() else {
            return Ok(None);
        };
        if header[0] != VERSION {
            return Err(SmuxError::UnsupportedVersion { version: header[0] });
        }
        let command = Command::from_wire(header[1])
            .ok_or(SmuxError::UnknownCommand { command: header[1] })?;
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let stream_id = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let data_len = if command == Command::Psh { len } else { 0 };
        if self.buffer.len() < HEADER_SIZE + data_len {
            return Ok(None);
        }
        self.buffer.advance(HEADER_SIZE);
        let data = self.buffer.split_to(data_len).freeze();
        Ok(Some(Frame {
            command,
            stream_id,
            data,
        }))
    }
}

/// Why smux bytes cannot be encoded or decoded. Decoding errors end the smux session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmuxError {
    /// The peer speaks another smux version (v2 peers must be configured for v1).
    #[error("smux version {version} received; only version 1 is spoken here")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// A command byte other than SYN, FIN, PSH, NOP (v2's UPD included).
    #[error("unknown smux v1 command {command}")]
    UnknownCommand {
        /// The command byte.
        command: u8,
    },
    /// A PSH frame carries at most 65 535 bytes; split the data.
    #[error("smux frame data of {len} bytes exceeds 65535; split it over several PSH frames")]
    DataTooLong {
        /// Bytes of data.
        len: usize,
    },
    /// Only PSH frames carry data.
    #[error("smux {command:?} frames carry no data")]
    DataOnControlFrame {
        /// The command.
        command: Command,
    },
}
