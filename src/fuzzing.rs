//! Invariant checks shared by the fuzz targets in `fuzz/` and the seed-corpus test, so a
//! crash found by the fuzzer reproduces under `cargo test`. Not part of the public API.

use bytes::Bytes;

use crate::payload::{
    Acknowledge, AgentOpenDataChannelInput, AgentSessionState, ChannelClosed, EncryptionChallenge,
    ExitCode, Flag, HandshakeComplete, HandshakeRequest, HandshakeResponse, JsonPayload,
    KmsEncryptionRequest, KmsEncryptionResult, OpenDataChannelInput, SessionTypeRequest,
    TerminalSize,
};
use crate::{DecodeOptions, Frame, Header, smux};

/// Decodes `data` as a frame, both verifying and not; whatever decodes must re-encode to a
/// frame that decodes to the same value.
pub fn frame_decode(data: &[u8]) {
    let message = Bytes::copy_from_slice(data);
    let header = Header::parse(data);
    for verify in [true, false] {
        let options = DecodeOptions::default().verify_digest(verify);
        let Ok(frame) = Frame::decode_with(message.clone(), options) else {
            continue;
        };
        let header = header.as_ref().expect("a decoded frame has a header");
        assert_eq!(
            frame.payload.len() as u64 + u64::from(header.header_length) + 4,
            data.len() as u64,
            "the payload is everything after HeaderLength + 4"
        );
        if let Ok(encoded) = frame.to_bytes() {
            assert_eq!(Frame::decode(encoded).as_ref(), Ok(&frame));
        }
    }
}

/// Parses `data` as every payload type; whatever parses must survive encode → decode.
pub fn payload_json(data: &[u8]) {
    round_trip::<Acknowledge>(data);
    round_trip::<ChannelClosed>(data);
    round_trip::<AgentSessionState>(data);
    round_trip::<OpenDataChannelInput>(data);
    round_trip::<AgentOpenDataChannelInput>(data);
    round_trip::<TerminalSize>(data);
    round_trip::<HandshakeRequest>(data);
    round_trip::<SessionTypeRequest>(data);
    round_trip::<KmsEncryptionRequest>(data);
    round_trip::<HandshakeResponse>(data);
    round_trip::<KmsEncryptionResult>(data);
    round_trip::<HandshakeComplete>(data);
    round_trip::<EncryptionChallenge>(data);
    if let Ok(flag) = Flag::decode(data) {
        assert_eq!(Flag::decode(&flag.to_bytes()).ok(), Some(flag));
    }
    if let Ok(code) = ExitCode::decode(data) {
        assert_eq!(
            ExitCode::decode(code.to_string().as_bytes()).ok(),
            Some(code)
        );
    }
    if let Ok(request) = HandshakeRequest::from_json(data) {
        for action in &request.requested_client_actions {
            let _ = action.parameters::<SessionTypeRequest>();
            let _ = action.parameters::<KmsEncryptionRequest>();
        }
    }
}

fn round_trip<T: JsonPayload + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = T::from_json(data) {
        let again = T::from_json(&value.to_json()).expect("our own JSON parses");
        assert_eq!(again, value);
    }
}

/// Decodes `data` as an smux stream twice: whole, and in pieces whose sizes come from the
/// data itself. Both must give the same frames and the same final result.
pub fn smux_stream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = decode_in_pieces(stream, usize::MAX);
    let split = decode_in_pieces(stream, usize::from(seed % 16) + 1);
    assert_eq!(whole, split);
}

type Decoded = (Vec<smux::Frame>, Option<smux::SmuxError>);

fn decode_in_pieces(stream: &[u8], piece: usize) -> Decoded {
    let mut decoder = smux::StreamDecoder::new();
    let mut frames = Vec::new();
    for chunk in stream.chunks(piece.min(stream.len().max(1))) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, None)
}
