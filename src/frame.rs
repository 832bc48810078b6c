//! The binary frame every data-channel message travels in (PROTOCOL.md §3).
//!
//! One websocket message carries exactly one frame: a fixed 120-byte header followed by the
//! payload. All integers are big-endian.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | HeaderLength, always 116 (the offset of PayloadLength, not the header size) |
//! | 4 | 32 | MessageType, ASCII, right-padded with spaces |
//! | 36 | 4 | SchemaVersion, always 1 |
//! | 40 | 8 | CreatedDate, wall-clock milliseconds since the Unix epoch |
//! | 48 | 8 | SequenceNumber, **signed** |
//! | 56 | 8 | Flags |
//! | 64 | 16 | MessageId, a UUID with its two 8-byte halves swapped |
//! | 80 | 32 | PayloadDigest, SHA-256 of the payload |
//! | 112 | 4 | PayloadType |
//! | 116 | 4 | PayloadLength |
//! | 120 | n | Payload |
//!
//! Decoding follows the reference readers: the payload is every byte from `HeaderLength + 4` to
//! the end of the message, the PayloadLength field is recorded but does not delimit anything, and
//! padding may be spaces or NULs. Where the reference panics (a HeaderLength past the end of the
//! message, a 116–119-byte message) this decoder returns an error.

use std::fmt;

use bytes::{BufMut, Bytes};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The HeaderLength value every sender writes: the offset of the PayloadLength field.
pub const HEADER_LENGTH: u32 = 116;
/// Size of the fixed header including PayloadLength; the payload starts here.
pub const HEADER_SIZE: usize = 120;
/// Longest MessageType the 32-byte field can hold.
pub const MAX_MESSAGE_TYPE_LEN: usize = 32;
/// The frame SchemaVersion both reference implementations write.
pub const SCHEMA_VERSION: u32 = 1;

const MESSAGE_TYPE_AT: usize = 4;
const SCHEMA_VERSION_AT: usize = 36;
const CREATED_DATE_AT: usize = 40;
const SEQUENCE_NUMBER_AT: usize = 48;
const FLAGS_AT: usize = 56;
const MESSAGE_ID_AT: usize = 64;
const PAYLOAD_DIGEST_AT: usize = 80;
const PAYLOAD_TYPE_AT: usize = 112;
const PAYLOAD_LENGTH_AT: usize = 116;

macro_rules! message_types {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// The MessageType field. Unknown types are data, not errors: they decode to
        /// [`MessageType::Other`] and both reference peers ignore them.
        ///
        /// Build one from text with `MessageType::try_from("…")`, which refuses what the
        /// 32-byte field cannot hold.
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum MessageType {
            $($(#[$doc])* $variant,)*
            /// A type this crate does not know, as it appeared on the wire (padding removed).
            Other(OtherMessageType),
        }

        impl MessageType {
            /// Maps at most 32 trimmed wire bytes to a type; known names never become `Other`.
            fn from_trimmed(bytes: &[u8]) -> Self {
                match std::str::from_utf8(bytes) {
                    $(Ok($text) => Self::$variant,)*
                    _ => Self::Other(OtherMessageType::new(bytes)),
                }
            }

            /// The fast path for what every known sender writes: a known type padded with spaces.
            fn from_space_padded(field: &[u8; MAX_MESSAGE_TYPE_LEN]) -> Option<Self> {
                $(
                    if *field == const { space_padded($text) } {
                        return Some(Self::$variant);
                    }
                )*
                None
            }

            /// The bytes written into the MessageType field (before padding).
            pub fn as_bytes(&self) -> &[u8] {
                match self {
                    $(Self::$variant => $text.as_bytes(),)*
                    Self::Other(other) => other.as_bytes(),
                }
            }
        }
    };
}

message_types! {
    /// Stream data from the client to the agent (sequenced, acknowledged).
    InputStreamData => "input_stream_data",
    /// Stream data from the agent to the client (sequenced, acknowledged).
    OutputStreamData => "output_stream_data",
    /// Acknowledgement of one stream message (PROTOCOL.md §5.3).
    Acknowledge => "acknowledge",
    /// The gateway closed the channel (PROTOCOL.md §5.4).
    ChannelClosed => "channel_closed",
    /// The gateway asks the agent to resume sending (PROTOCOL.md §5.5).
    StartPublication => "start_publication",
    /// The gateway asks the agent to stop sending (PROTOCOL.md §5.5).
    PausePublication => "pause_publication",
    /// The agent reports its session state to the gateway (PROTOCOL.md §5.6).
    AgentSessionState => "agent_session_state",
    /// Control channel: a session was started for this instance (PROTOCOL.md §11).
    InteractiveShell => "interactive_shell",
    /// Control channel: a job for the agent.
    AgentJob => "agent_job",
    /// Control channel: acknowledgement of a job.
    AgentJobAck => "agent_job_ack",
    /// Control channel: reply to a job.
    AgentJobReply => "agent_job_reply",
    /// Control channel: acknowledgement of a job reply.
    AgentJobReplyAck => "agent_job_reply_ack",
    /// Control channel: task reply.
    AgentTaskReply => "agent_task_reply",
    /// Control channel: the agent reports a finished session.
    AgentTaskComplete => "agent_task_complete",
    /// Control channel: acknowledgement of a task message.
    AgentTaskAcknowledge => "agent_task_acknowledge",
    /// Control channel (this crate's agents): a chunk of a session's asciicast recording.
    AgentSessionRecording => "agent_session_recording",
    /// Control channel (this crate's agents): a forwarded TCP stream opened or closed.
    AgentPortStream => "agent_port_stream",
}

/// `text` left-aligned in a space-filled MessageType field.
const fn space_padded(text: &str) -> [u8; MAX_MESSAGE_TYPE_LEN] {
    let mut field = [b' '; MAX_MESSAGE_TYPE_LEN];
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        field[i] = bytes[i];
        i += 1;
    }
    field
}

impl MessageType {
    /// Reads the 32-byte MessageType field: padding of NULs and whitespace is removed first.
    fn from_field(field: &[u8; MAX_MESSAGE_TYPE_LEN]) -> Self {
        Self::from_space_padded(field)
            .unwrap_or_else(|| Self::from_trimmed(trim_message_type(field)))
    }

    /// `start_publication` and `pause_publication` are generated by the gateway and skip the
    /// field and digest validation on the client (PROTOCOL.md §15.1).
    pub fn is_publication(&self) -> bool {
        matches!(self, Self::StartPublication | Self::PausePublication)
    }
}

impl TryFrom<&str> for MessageType {
    type Error = EncodeError;

    /// Refuses text longer than the 32-byte field ([`EncodeError::MessageTypeTooLong`]).
    fn try_from(text: &str) -> Result<Self, EncodeError> {
        if text.len() > MAX_MESSAGE_TYPE_LEN {
            return Err(EncodeError::MessageTypeTooLong { len: text.len() });
        }
        Ok(Self::from_trimmed(text.as_bytes()))
    }
}

/// The bytes of a MessageType this crate does not know (at most 32), stored inline so that
/// parsing a header never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OtherMessageType {
    bytes: [u8; MAX_MESSAGE_TYPE_LEN],
    len: u8,
}

impl OtherMessageType {
    fn new(text: &[u8]) -> Self {
        let mut bytes = [0; MAX_MESSAGE_TYPE_LEN];
        bytes[..text.len()].copy_from_slice(text);
        OtherMessageType {
            bytes,
            len: text.len() as u8,
        }
    }

    /// The type as it appeared on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Debug for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageType({self})")
    }
}

macro_rules! payload_types {
    ($($(#[$doc:meta])* $variant:ident = $value:literal,)*) => {
        /// The PayloadType field (PROTOCOL.md §3.6). Unknown values are kept in
        /// [`PayloadType::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum PayloadType {
            $($(#[$doc])* $variant,)*
            /// A value this crate does not know. Build values with `PayloadType::from(u32)` so
            /// known values never end up here.
            Other(u32),
        }

        impl From<u32> for PayloadType {
            fn from(value: u32) -> Self {
                match value {
                    $($value => Self::$variant,)*
                    other => Self::Other(other),
                }
            }
        }

        impl From<PayloadType> for u32 {
            fn from(value: PayloadType) -> u32 {
                match value {
                    $(PayloadType::$variant => $value,)*
                    PayloadType::Other(other) => other,
                }
            }
        }
    };
}

payload_types! {
    /// 0: acknowledgements and the other JSON control messages.
    Unset = 0,
    /// 1: terminal or port bytes (possibly encrypted).
    Output = 1,
    /// 2: defined, never sent by the reference peers.
    Error = 2,
    /// 3: terminal size, JSON `{"cols":..,"rows":..}`.
    Size = 3,
    /// 4: defined, never sent by the reference peers.
    Parameter = 4,
    /// 5: agent → client handshake request.
    HandshakeRequest = 5,
    /// 6: client → agent handshake response.
    HandshakeResponse = 6,
    /// 7: agent → client handshake completion.
    HandshakeComplete = 7,
    /// 8: agent → client encryption challenge.
    EncChallengeRequest = 8,
    /// 9: client → agent encryption challenge answer.
    EncChallengeResponse = 9,
    /// 10: a 4-byte flag value.
    Flag = 10,
    /// 11: standard error bytes (possibly encrypted).
    StdErr = 11,
    /// 12: `EXIT_CODE: <n>` text (possibly encrypted).
    ExitCode = 12,
}

/// One data-channel message: the header fields a sender chooses, plus the payload.
///
/// The wire-only fields (HeaderLength, PayloadDigest, PayloadLength) are computed by
/// [`Frame::encode`]; to see them as received, use [`Header::parse`].
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use ssm_session::{Frame, MessageType, PayloadType};
/// use uuid::Uuid;
///
/// let frame = Frame {
///     message_type: MessageType::InputStreamData,
///     schema_version: 1,
///     created_date: 1_700_000_000_000,
///     sequence_number: 5,
///     flags: 0,
///     message_id: Uuid::parse_str("dd01e56b-ff48-483e-a508-b5f073f31b16")?,
///     payload_type: PayloadType::Output,
///     payload: Bytes::from_static(b"ls\r"),
/// };
/// let wire = frame.to_bytes()?;
/// assert_eq!(wire.len(), 123);
/// assert_eq!(Frame::decode(wire)?, frame);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the message is; decides how the payload is read.
    pub message_type: MessageType,
    /// Always 1 in practice; never checked by the reference readers.
    pub schema_version: u32,
    /// Wall-clock milliseconds since the Unix epoch; receivers reject 0.
    pub created_date: u64,
    /// Stream sequence number, or 0 for messages outside the stream.
    pub sequence_number: i64,
    /// Flags ([`Frame::FLAG_SYN`], [`Frame::FLAG_FIN`]); no receiver inspects them.
    pub flags: u64,
    /// Random v4 id; acknowledgements quote it.
    pub message_id: Uuid,
    /// How the payload is encoded.
    pub payload_type: PayloadType,
    /// The payload, as sent (ciphertext when the session is encrypted).
    pub payload: Bytes,
}

impl Frame {
    /// Flags bit the agent sets on its stream message 0 ("first message").
    pub const FLAG_SYN: u64 = 1;
    /// Flags bit meaning "last message"; with SYN it marks acknowledgements.
    pub const FLAG_FIN: u64 = 2;

    /// Size of the encoded frame in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_SIZE + self.payload.len()
    }

    /// Appends the encoded frame to `out`.
    ///
    /// Refuses, without writing anything, the frames no reference peer can send: an empty payload,
    /// an empty or padded MessageType, CreatedDate 0 and the nil MessageId. (Over-long types
    /// are refused earlier, by `MessageType::try_from`.)
    pub fn encode(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        self.check_header()?;
        let payload_length = check_payload(&self.payload)?;
        self.put_header(out, &Sha256::digest(&self.payload), payload_length);
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Encodes the frame into a new buffer of exactly [`Frame::encoded_len`] bytes.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.into())
    }

    /// Encodes this frame's header in front of a payload that `write_payload` appends straight
    /// into the output buffer (an encrypted payload is sealed there, never copied). The frame's
    /// own `payload` field is not used.
    pub(crate) fn encode_around(
        &self,
        payload_capacity: usize,
        write_payload: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Bytes, EncodeError> {
        self.check_header()?;
        let mut out = Vec::with_capacity(HEADER_SIZE + payload_capacity);
        out.resize(HEADER_SIZE, 0);
        write_payload(&mut out);
        let payload = &out[HEADER_SIZE..];
        let payload_length = check_payload(payload)?;
        let digest = Sha256::digest(payload);
        self.put_header(&mut &mut out[..HEADER_SIZE], &digest, payload_length);
        Ok(out.into())
    }

    fn put_header(&self, out: &mut impl BufMut, digest: &[u8], payload_length: u32) {
        let message_type = self.message_type.as_bytes();
        let mut padded_type = [b' '; MAX_MESSAGE_TYPE_LEN];
        padded_type[..message_type.len()].copy_from_slice(message_type);
        out.put_u32(HEADER_LENGTH);
        out.put_slice(&padded_type);
        out.put_u32(self.schema_version);
        out.put_u64(self.created_date);
        out.put_i64(self.sequence_number);
        out.put_u64(self.flags);
        out.put_slice(&message_id_to_wire(self.message_id));
        out.put_slice(digest);
        out.put_u32(self.payload_type.into());
        out.put_u32(payload_length);
    }

    fn check_header(&self) -> Result<(), EncodeError> {
        let type_len = self.message_type.as_bytes().len();
        if type_len == 0 {
            return Err(EncodeError::EmptyMessageType);
        }
        if trim_message_type(self.message_type.as_bytes()).len() != type_len {
            return Err(EncodeError::MessageTypeNotTrimmed);
        }
        if self.created_date == 0 {
            return Err(EncodeError::ZeroCreatedDate);
        }
        if self.message_id.is_nil() {
            return Err(EncodeError::NilMessageId);
        }
        Ok(())
    }

    /// Decodes one websocket message, verifying the payload digest.
    ///
    /// The payload is a zero-copy slice of `message`. See [`DecodeOptions`] to skip the digest
    /// check.
    pub fn decode(message: Bytes) -> Result<Frame, DecodeError> {
        Self::decode_with(message, DecodeOptions::default())
    }

    /// Decodes one websocket message with explicit options.
    pub fn decode_with(message: Bytes, options: DecodeOptions) -> Result<Frame, DecodeError> {
        let header = Header::parse(&message)?;
        let publication = header.message_type.is_publication();
        let payload = message.slice(header.payload_offset(message.len(), publication)?..);
        if !publication {
            header.validate_fields()?;
            let digest_applies = options.verify_digest && header.payload_length != 0;
            if digest_applies && Sha256::digest(&payload)[..] != header.payload_digest {
                return Err(DecodeError::DigestMismatch);
            }
        }
        Ok(Frame {
            message_type: header.message_type,
            schema_version: header.schema_version,
            created_date: header.created_date,
            sequence_number: header.sequence_number,
            flags: header.flags,
            message_id: header.message_id,
            payload_type: header.payload_type,
            payload,
        })
    }
}

impl fmt::Debug for Frame {
    // The payload may be keystrokes (passwords): show its size, never its bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("message_type", &self.message_type)
            .field("schema_version", &self.schema_version)
            .field("created_date", &self.created_date)
            .field("sequence_number", &self.sequence_number)
            .field("flags", &self.flags)
            .field("message_id", &self.message_id)
            .field("payload_type", &self.payload_type)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// How strictly [`Frame::decode_with`] checks a frame.
///
/// # Examples
///
/// ```
/// use ssm_session::DecodeOptions;
///
/// // The agent role never checks digests (PROTOCOL.md §3.4); the client role does.
/// let agent_like = DecodeOptions::default().verify_digest(false);
/// # let _ = agent_like;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    verify_digest: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            verify_digest: true,
        }
    }
}

impl DecodeOptions {
    /// Whether to reject frames whose PayloadDigest is not the SHA-256 of the payload
    /// (default: yes). As in the reference client, the check is skipped when the PayloadLength
    /// field is 0 and for `start_publication`/`pause_publication`.
    pub fn verify_digest(mut self, verify: bool) -> Self {
        self.verify_digest = verify;
        self
    }
}

/// Every header field exactly as received, including the wire-only ones.
///
/// [`Header::parse`] reads only the fixed 120 bytes and checks nothing but their presence; it is
/// what debugging tools and routers that must not look at payloads want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// HeaderLength as written (116 from every known sender).
    pub header_length: u32,
    /// MessageType with NUL and whitespace padding removed.
    pub message_type: MessageType,
    /// SchemaVersion.
    pub schema_version: u32,
    /// CreatedDate in epoch milliseconds.
    pub created_date: u64,
    /// SequenceNumber.
    pub sequence_number: i64,
    /// Flags.
    pub flags: u64,
    /// MessageId with its halves put back in canonical order.
    pub message_id: Uuid,
    /// PayloadDigest as sent.
    pub payload_digest: [u8; 32],
    /// PayloadType.
    pub payload_type: PayloadType,
    /// PayloadLength as sent; it may disagree with the bytes present.
    pub payload_length: u32,
}

impl Header {
    /// Reads the fixed header fields of a websocket message.
    ///
    /// # Examples
    ///
    /// ```
    /// use ssm_session::{Header, MessageType};
    ///
    /// let mut message = vec![0u8; 120];
    /// message[3] = 116;
    /// message[4..15].copy_from_slice(b"acknowledge");
    /// let header = Header::parse(&message)?;
    /// assert_eq!(header.message_type, MessageType::Acknowledge);
    /// # Ok::<(), ssm_session::DecodeError>(())
    /// ```
    pub fn parse(message: &[u8]) -> Result<Header, DecodeError> {
        let Some(fixed) = message.first_chunk::<HEADER_SIZE>() else {
            return Err(DecodeError::TooShort { len: message.len() });
        };
        Ok(Header {
            header_length: be_u32(fixed, 0),
            message_type: MessageType::from_field(&array_at(fixed, MESSAGE_TYPE_AT)),
            schema_version: be_u32(fixed, SCHEMA_VERSION_AT),
            created_date: be_u64(fixed, CREATED_DATE_AT),
            sequence_number: be_u64(fixed, SEQUENCE_NUMBER_AT) as i64,
            flags: be_u64(fixed, FLAGS_AT),
            message_id: message_id_from_wire(array_at(fixed, MESSAGE_ID_AT)),
            payload_digest: array_at(fixed, PAYLOAD_DIGEST_AT),
            payload_type: be_u32(fixed, PAYLOAD_TYPE_AT).into(),
            payload_length: be_u32(fixed, PAYLOAD_LENGTH_AT),
        })
    }

    /// Where the payload starts: `HeaderLength + 4`, checked against the message length.
    ///
    /// `start_publication` / `pause_publication` (`lenient`) skip the HeaderLength checks, as
    /// the Go client accepts them unconditionally (PROTOCOL.md §3.9, §15.1): the relay may
    /// send them with fields that fail the generic checks, and nothing in them is read.
    fn payload_offset(&self, len: usize, lenient: bool) -> Result<usize, DecodeError> {
        let header_length = self.header_length;
        match header_length {
            0 if !lenient => Err(DecodeError::ZeroHeaderLength),
            1..HEADER_LENGTH if !lenient => {
                Err(DecodeError::HeaderLengthTooSmall { header_length })
            }
            _ => usize::try_from(u64::from(header_length) + 4)
                .ok()
                .filter(|offset| *offset <= len)
                .ok_or(DecodeError::HeaderLengthBeyondFrame { header_length, len }),
        }
    }

    fn validate_fields(&self) -> Result<(), DecodeError> {
        if self.message_type.as_bytes().is_empty() {
            return Err(DecodeError::EmptyMessageType);
        }
        if self.created_date == 0 {
            return Err(DecodeError::ZeroCreatedDate);
        }
        Ok(())
    }
}

/// Why a websocket message is not an acceptable frame. The message should be dropped; the
/// connection stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the fixed 120-byte header (the reference client panics on 116–119).
    #[error(
        "frame is {len} bytes, shorter than the 120-byte header: truncated or not a session frame"
    )]
    TooShort {
        /// Bytes in the message.
        len: usize,
    },
    /// HeaderLength is 0 (reference text: "HeaderLength cannot be zero").
    #[error("HeaderLength is 0: not a session frame header")]
    ZeroHeaderLength,
    /// HeaderLength is below 116, so the payload would overlap the fixed header.
    #[error("HeaderLength {header_length} is below 116: the payload would overlap the header")]
    HeaderLengthTooSmall {
        /// The HeaderLength field.
        header_length: u32,
    },
    /// HeaderLength + 4 points past the end of the message (the reference panics here).
    #[error("HeaderLength {header_length} points past the end of the {len}-byte frame")]
    HeaderLengthBeyondFrame {
        /// The HeaderLength field.
        header_length: u32,
        /// Bytes in the message.
        len: usize,
    },
    /// MessageType is empty after removing padding ("MessageType is missing").
    #[error("MessageType is empty")]
    EmptyMessageType,
    /// CreatedDate is 0 ("CreatedDate is missing").
    #[error("CreatedDate is 0")]
    ZeroCreatedDate,
    /// PayloadDigest is not the SHA-256 of the payload ("payload Hash is not valid").
    #[error("payload digest is not the SHA-256 of the payload: the frame was corrupted or altered")]
    DigestMismatch,
}

/// Why a frame cannot be encoded. Each case is a frame the reference peers never send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Empty payloads cannot be framed by either reference serializer; send nothing instead.
    #[error("empty payload: the reference peers cannot frame it, so send nothing")]
    EmptyPayload,
    /// An empty MessageType is rejected by every receiver.
    #[error("MessageType is empty: every receiver rejects it")]
    EmptyMessageType,
    /// The MessageType does not fit the 32-byte field (from `MessageType::try_from`).
    #[error("MessageType is {len} bytes; the field holds at most 32")]
    MessageTypeTooLong {
        /// Bytes in the type.
        len: usize,
    },
    /// Receivers strip leading and trailing NULs and whitespace, so they would read another type.
    #[error("MessageType starts or ends with NUL or whitespace, which receivers strip")]
    MessageTypeNotTrimmed,
    /// CreatedDate 0 is rejected by every receiver; pass the wall clock in milliseconds.
    #[error("CreatedDate is 0: pass the wall-clock time in milliseconds")]
    ZeroCreatedDate,
    /// The nil UUID cannot be serialized by the reference peers; use a random v4 id.
    #[error("MessageId is the nil UUID: use a random v4 id")]
    NilMessageId,
    /// The payload does not fit the 32-bit PayloadLength field.
    #[error("payload of {len} bytes does not fit the 32-bit PayloadLength field")]
    PayloadTooLarge {
        /// Bytes in the payload.
        len: usize,
    },
}

/// The PayloadLength of a payload the reference peers can send: not empty, fits 32 bits.
fn check_payload(payload: &[u8]) -> Result<u32, EncodeError> {
    if payload.is_empty() {
        return Err(EncodeError::EmptyPayload);
    }
    u32::try_from(payload.len()).map_err(|_| EncodeError::PayloadTooLarge { len: payload.len() })
}

/// The 16 wire bytes of a MessageId: the canonical UUID with its two halves swapped.
pub fn message_id_to_wire(id: Uuid) -> [u8; 16] {
    swap_halves(*id.as_bytes())
}

/// The MessageId carried by 16 wire bytes.
pub fn message_id_from_wire(wire: [u8; 16]) -> Uuid {
    Uuid::from_bytes(swap_halves(wire))
}

fn swap_halves(bytes: [u8; 16]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&bytes[8..]);
    out[8..].copy_from_slice(&bytes[..8]);
    out
}

/// Strips NULs, then whitespace as Go's `strings.TrimSpace` does (ASCII space, \t\n\v\f\r,
/// U+0085 and U+00A0), from both ends: the reference readers' exact rule.
fn trim_message_type(field: &[u8]) -> &[u8] {
    let mut trimmed = trim_bytes(field, |b| b == 0);
    loop {
        trimmed = trim_bytes(trimmed, |b| {
            matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
        });
        let before = trimmed.len();
        for space in [[0xc2, 0x85], [0xc2, 0xa0]] {
            trimmed = trimmed.strip_prefix(&space[..]).unwrap_or(trimmed);
            trimmed = trimmed.strip_suffix(&space[..]).unwrap_or(trimmed);
        }
        if trimmed.len() == before {
            return trimmed;
        }
    }
}

fn trim_bytes(bytes: &[u8], strip: impl Fn(u8) -> bool) -> &[u8] {
    let start = bytes.iter().position(|b| !strip(*b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !strip(*b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn array_at<const N: usize>(fixed: &[u8; HEADER_SIZE], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&fixed[at..at + N]);
    out
}

fn be_u32(fixed: &[u8; HEADER_SIZE], at: usize) -> u32 {
    u32::from_be_bytes(array_at(fixed, at))
}

fn be_u64(fixed: &[u8; HEADER_SIZE], at: usize) -> u64 {
    u64::from_be_bytes(array_at(fixed, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_follows_go_order_nuls_then_whitespace() {
        assert_eq!(trim_message_type(b"\0\0  abc\t\r\n \0\0"), b"abc");
        // A NUL behind leading whitespace is not padding any more.
        assert_eq!(trim_message_type(b" \0abc"), b"\0abc");
        assert_eq!(trim_message_type(b"\xc2\xa0abc\xc2\x85 "), b"abc");
        assert_eq!(trim_message_type(b"   "), b"");
    }

    #[test]
    fn message_id_halves_swap_both_ways() {
        let id = Uuid::parse_str("dd01e56b-ff48-483e-a508-b5f073f31b16").unwrap();
        let wire = message_id_to_wire(id);
        assert_eq!(hex::encode(wire), "a508b5f073f31b16dd01e56bff48483e");
        assert_eq!(message_id_from_wire(wire), id);
    }

    #[test]
    fn unknown_types_keep_their_value() {
        assert_eq!(PayloadType::from(99), PayloadType::Other(99));
        assert_eq!(u32::from(PayloadType::Other(99)), 99);
        assert_eq!(u32::from(PayloadType::ExitCode), 12);
        let other = MessageType::try_from("foo_bar").unwrap();
        assert_eq!(other.as_bytes(), b"foo_bar");
        assert_eq!(
            MessageType::try_from("acknowledge"),
            Ok(MessageType::Acknowledge)
        );
        assert_eq!(
            MessageType::try_from("x".repeat(33).as_str()),
            Err(EncodeError::MessageTypeTooLong { len: 33 })
        );
    }

    #[test]
    fn debug_never_shows_payload_bytes() {
        let frame = Frame {
            message_type: MessageType::InputStreamData,
            schema_version: 1,
            created_date: 1,
            sequence_number: 0,
            flags: 0,
            message_id: Uuid::from_u128(1),
            payload_type: PayloadType::Output,
            payload: Bytes::from_static(b"hunter2"),
        };
        let shown = format!("{frame:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("payload_len: 7"), "{shown}");
    }
}
