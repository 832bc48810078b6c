//! Every refusal path of the wire layer, beyond those the golden vectors already reach.

use bytes::Bytes;
use ssm_session::payload::{ExitCode, Flag, PayloadError};
use ssm_session::smux::{self, Command, SmuxError, StreamDecoder};
use ssm_session::{DecodeError, EncodeError, Frame, MessageType, PayloadType};
use uuid::Uuid;

fn frame() -> Frame {
    Frame {
        message_type: MessageType::InputStreamData,
        schema_version: 1,
        created_date: 1_700_000_000_000,
        sequence_number: 5,
        flags: 0,
        message_id: Uuid::from_u128(0xdd01e56b_ff48_483e_a508_b5f073f31b16),
        payload_type: PayloadType::Output,
        payload: Bytes::from_static(b"ls\r"),
    }
}

fn wire_with(edit: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut wire = frame().to_bytes().unwrap().to_vec();
    edit(&mut wire);
    wire.into()
}

#[test]
fn encoder_refuses_frames_no_reference_peer_sends() {
    let refusals = [
        (
            Frame {
                payload: Bytes::new(),
                ..frame()
            },
            EncodeError::EmptyPayload,
        ),
        (
            Frame {
                message_type: MessageType::try_from("").unwrap(),
                ..frame()
            },
            EncodeError::EmptyMessageType,
        ),
        (
            Frame {
                message_type: MessageType::try_from(" ack").unwrap(),
                ..frame()
            },
            EncodeError::MessageTypeNotTrimmed,
        ),
        (
            Frame {
                message_type: MessageType::try_from("ack\0").unwrap(),
                ..frame()
            },
            EncodeError::MessageTypeNotTrimmed,
        ),
        (
            Frame {
                created_date: 0,
                ..frame()
            },
            EncodeError::ZeroCreatedDate,
        ),
        (
            Frame {
                message_id: Uuid::nil(),
                ..frame()
            },
            EncodeError::NilMessageId,
        ),
    ];
    for (frame, expected) in refusals {
        let mut out = Vec::new();
        assert_eq!(frame.encode(&mut out), Err(expected));
        assert!(out.is_empty(), "nothing is written on refusal");
    }
    // The 32-byte field cannot hold more; exactly 32 bytes still fits.
    assert_eq!(
        MessageType::try_from("x".repeat(33).as_str()),
        Err(EncodeError::MessageTypeTooLong { len: 33 })
    );
    let longest = Frame {
        message_type: MessageType::try_from("y".repeat(32).as_str()).unwrap(),
        ..frame()
    };
    assert_eq!(Frame::decode(longest.to_bytes().unwrap()).unwrap(), longest);
}

#[test]
fn decoder_refuses_a_header_length_that_overlaps_the_header() {
    for header_length in [1u32, 100, 115] {
        let wire = wire_with(|w| w[..4].copy_from_slice(&header_length.to_be_bytes()));
        assert_eq!(
            Frame::decode(wire),
            Err(DecodeError::HeaderLengthTooSmall { header_length })
        );
    }
}

#[test]
fn decoder_takes_the_payload_from_header_length_plus_four() {
    // HeaderLength 117 in a 123-byte message: the payload is the last 2 bytes.
    let wire = wire_with(|w| {
        w[..4].copy_from_slice(&117u32.to_be_bytes());
        w[116..120].copy_from_slice(&0u32.to_be_bytes()); // digest check off, as in Go
    });
    assert_eq!(&Frame::decode(wire).unwrap().payload[..], b"s\r");
    // HeaderLength 119 leaves an empty payload, which is accepted when PayloadLength is 0.
    let wire = wire_with(|w| {
        w[..4].copy_from_slice(&119u32.to_be_bytes());
        w[116..120].copy_from_slice(&0u32.to_be_bytes());
    });
    assert!(Frame::decode(wire).unwrap().payload.is_empty());
    let wire = wire_with(|w| w[..4].copy_from_slice(&120u32.to_be_bytes()));
    assert_eq!(
        Frame::decode(wire),
        Err(DecodeError::HeaderLengthBeyondFrame {
            header_length: 120,
            len: 123
        })
    );
}

#[test]
fn decoded_payload_shares_the_message_buffer() {
    let wire = frame().to_bytes().unwrap();
    let decoded = Frame::decode(wire.clone()).unwrap();
    assert_eq!(
        decoded.payload.as_ptr(),
        wire[120..].as_ptr(),
        "zero-copy slice"
    );
}

#[test]
fn smux_decoder_refuses_other_versions_and_commands_and_stays_failed() {
    let cases: [(&[u8], SmuxError); 3] = [
        (
            &[2, 2, 0, 0, 3, 0, 0, 0],
            SmuxError::UnsupportedVersion { version: 2 },
        ),
        (
            &[1, 4, 0, 0, 3, 0, 0, 0],
            SmuxError::UnknownCommand { command: 4 },
        ),
        (
            &[1, 255, 0, 0, 3, 0, 0, 0],
            SmuxError::UnknownCommand { command: 255 },
        ),
    ];
    for (bytes, expected) in cases {
        let mut decoder = StreamDecoder::new();
        decoder.push(bytes);
        assert_eq!(decoder.next_frame(), Err(expected.clone()));
        decoder.push(&smux::Frame::syn(3).to_bytes().unwrap());
        assert_eq!(
            decoder.next_frame(),
            Err(expected),
            "the session is dead after an error"
        );
        assert_eq!(decoder.buffered(), 0, "a dead decoder holds no memory");
    }
}

#[test]
fn smux_control_frames_consume_no_data_bytes() {
    // A SYN whose length field says 5: as in xtaci/smux, the next byte starts a new header.
    let mut decoder = StreamDecoder::new();
    decoder.push(&[1, 0, 5, 0, 3, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0]);
    assert_eq!(decoder.next_frame().unwrap(), Some(smux::Frame::syn(3)));
    assert_eq!(decoder.next_frame().unwrap(), Some(smux::Frame::nop()));
    assert_eq!(decoder.next_frame().unwrap(), None);
}

#[test]
fn smux_encoder_refuses_what_v1_cannot_carry() {
    let big = smux::Frame::psh(3, Bytes::from(vec![0; 65_536]));
    assert_eq!(big.to_bytes(), Err(SmuxError::DataTooLong { len: 65_536 }));
    let largest = smux::Frame::psh(3, Bytes::from(vec![7; 65_535]));
    assert_eq!(largest.to_bytes().unwrap().len(), 8 + 65_535);
    let syn_with_data = smux::Frame {
        data: Bytes::from_static(b"x"),
        ..smux::Frame::syn(3)
    };
    assert_eq!(
        syn_with_data.to_bytes(),
        Err(SmuxError::DataOnControlFrame {
            command: Command::Syn
        })
    );
}

#[test]
fn flag_payloads_need_four_bytes_and_read_only_four() {
    assert!(matches!(
        Flag::decode(&[0, 0, 1]),
        Err(PayloadError::FlagTooShort { len: 3 })
    ));
    assert!(matches!(
        Flag::decode(&[]),
        Err(PayloadError::FlagTooShort { len: 0 })
    ));
    assert_eq!(
        Flag::decode(&[0, 0, 0, 1, 9, 9]).unwrap(),
        Flag::DisconnectToPort
    );
    assert_eq!(Flag::decode(&[0, 0, 1, 0]).unwrap(), Flag::Other(256));
    assert_eq!(u32::from(Flag::Other(256)), 256);
}

#[test]
fn exit_codes_must_have_the_reference_shape() {
    assert_eq!(ExitCode::decode(b"EXIT_CODE: -1").unwrap(), ExitCode(-1));
    assert_eq!(ExitCode::decode(b" EXIT_CODE: 3\n").unwrap(), ExitCode(3));
    for bad in [
        &b"EXIT_CODE:3"[..],
        b"exit_code: 3",
        b"EXIT_CODE: ",
        b"EXIT_CODE: 3x",
        b"\xff",
        b"",
    ] {
        assert!(
            matches!(ExitCode::decode(bad), Err(PayloadError::InvalidExitCode)),
            "{bad:?}"
        );
    }
}
