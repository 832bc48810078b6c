//! Property tests: round trips for arbitrary frames and payloads, no panics on arbitrary bytes,
//! and smux decoding independent of how the stream is split.

use bytes::Bytes;
use proptest::prelude::*;
use ssm_session::payload::{
    Acknowledge, ChannelClosed, HandshakeResponse, JsonPayload, KmsEncryptionResult, TerminalSize,
};
use ssm_session::{Frame, Header, MessageType, PayloadType, fuzzing, smux};
use uuid::Uuid;

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::InputStreamData),
        Just(MessageType::OutputStreamData),
        Just(MessageType::Acknowledge),
        Just(MessageType::ChannelClosed),
        Just(MessageType::PausePublication),
        "[a-z_]{1,32}".prop_map(|text| MessageType::try_from(text.as_str()).unwrap()),
    ]
}

prop_compose! {
    fn encodable_frame()(
        message_type in message_type(),
        schema_version in any::<u32>(),
        created_date in 1..=u64::MAX,
        sequence_number in any::<i64>(),
        flags in any::<u64>(),
        message_id in 1..=u128::MAX,
        payload_type in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 1..2048),
    ) -> Frame {
        Frame {
            message_type,
            schema_version,
            created_date,
            sequence_number,
            flags,
            message_id: Uuid::from_u128(message_id),
            payload_type: PayloadType::from(payload_type),
            payload: Bytes::from(payload),
        }
    }
}

/// Strings heavy in the characters Go escapes differently from plain JSON writers.
fn tricky_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('<'),
            Just('>'),
            Just('&'),
            Just('"'),
            Just('\\'),
            Just('\u{2028}'),
            Just('\u{2029}'),
            Just('\n'),
            Just('\u{1}'),
            Just('é'),
            any::<char>(),
        ],
        0..24,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frames_round_trip(frame in encodable_frame()) {
        let wire = frame.to_bytes().unwrap();
        prop_assert_eq!(wire.len(), frame.encoded_len());
        let header = Header::parse(&wire).unwrap();
        prop_assert_eq!(header.header_length, 116);
        prop_assert_eq!(header.payload_length as usize, frame.payload.len());
        prop_assert_eq!(&header.message_type, &frame.message_type);
        prop_assert_eq!(Frame::decode(wire).unwrap(), frame);
    }

    #[test]
    fn corrupting_the_payload_is_caught_by_the_digest(frame in encodable_frame(), at in any::<prop::sample::Index>()) {
        prop_assume!(!frame.message_type.is_publication());
        let mut wire = frame.to_bytes().unwrap().to_vec();
        let at = 120 + at.index(frame.payload.len());
        wire[at] ^= 0x01;
        prop_assert_eq!(Frame::decode(wire.into()), Err(ssm_session::DecodeError::DigestMismatch));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::frame_decode(&data);
    }

    #[test]
    fn arbitrary_headers_never_panic_the_frame_decoder(
        frame in encodable_frame(),
        header_length in prop_oneof![Just(0u32), 1..130u32, any::<u32>()],
        payload_length in any::<u32>(),
        type_field in proptest::collection::vec(prop_oneof![Just(0u8), Just(b' '), any::<u8>()], 32),
    ) {
        let mut wire = frame.to_bytes().unwrap().to_vec();
        wire[..4].copy_from_slice(&header_length.to_be_bytes());
        wire[4..36].copy_from_slice(&type_field);
        wire[116..120].copy_from_slice(&payload_length.to_be_bytes());
        fuzzing::frame_decode(&wire);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_payload_decoders(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        fuzzing::payload_json(&data);
    }

    #[test]
    fn arbitrary_json_objects_never_panic_the_payload_decoders(
        keys in proptest::collection::vec(prop_oneof![
            Just("cols"), Just("ROWS"), Just("ActionType"), Just("ProcessedClientActions"),
            Just("Errors"), Just("CreatedDate"), Just("Challenge"), Just("KMSCipherTextKey"),
        ], 0..6),
        values in proptest::collection::vec(prop_oneof![
            Just("null"), Just("1"), Just("-1"), Just("\"AQID\""), Just("[]"), Just("{}"),
            Just("[{\"ActionType\":\"x\",\"ActionResult\":3}]"), Just("true"), Just("1e400"),
        ], 0..6),
    ) {
        let body: Vec<String> = keys.iter().zip(&values).map(|(k, v)| format!("\"{k}\":{v}")).collect();
        fuzzing::payload_json(format!("{{{}}}", body.join(",")).as_bytes());
    }

    #[test]
    fn payloads_round_trip_and_stay_valid_json(
        text in tricky_string(),
        number in any::<i64>(),
        cols in any::<u32>(),
        rows in any::<u32>(),
        key in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let ack = Acknowledge {
            acknowledged_message_type: text.clone(),
            acknowledged_message_id: text.clone(),
            acknowledged_message_sequence_number: number,
            is_sequential_message: number % 2 == 0,
            is_cumulative: (number % 3 == 0).then_some(true),
        };
        let json = ack.to_json();
        let plain: serde_json::Value = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(plain["AcknowledgedMessageId"].as_str(), Some(text.as_str()));
        prop_assert!(!json.iter().any(|b| matches!(b, b'<' | b'>' | b'&')), "Go escapes <, >, &");
        prop_assert_eq!(&Acknowledge::from_json(&json).unwrap(), &ack);
        // Go matches keys in any case: the lenient path must agree with the exact one.
        let folded = String::from_utf8(json.clone()).unwrap()
            .replace("\"AcknowledgedMessageType\"", "\"acknowledgedmessagetype\"")
            .replace("\"IsSequentialMessage\"", "\"ISSEQUENTIALMESSAGE\"");
        prop_assert_eq!(Acknowledge::from_json(folded.as_bytes()).unwrap(), ack.clone());

        let size = TerminalSize { cols, rows };
        prop_assert_eq!(TerminalSize::from_json(&size.to_json()).unwrap(), size);

        let closed = ChannelClosed { output: text.clone(), created_date: number.to_string(), ..Default::default() };
        prop_assert_eq!(ChannelClosed::from_json(&closed.to_json()).unwrap(), closed);

        let mut response = HandshakeResponse::new(text.clone());
        let result = KmsEncryptionResult { kms_cipher_text_key: key, ..Default::default() };
        response.push_success("KMSEncryption", Some(ssm_session::payload::RawJson::encode(&result)));
        response.push_failure("SessionType", &text);
        response.push_unsupported(&text);
        let decoded = HandshakeResponse::from_json(&response.to_json()).unwrap();
        let decoded_result: KmsEncryptionResult =
            decoded.processed_client_actions[0].action_result.as_ref().unwrap().decode().unwrap();
        prop_assert_eq!(decoded_result, result);
        prop_assert_eq!(decoded, response);
    }

    #[test]
    fn smux_decoding_is_independent_of_the_split(
        frames in proptest::collection::vec(
            (0..4u8, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..600)),
            0..20,
        ),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let frames: Vec<smux::Frame> = frames
            .into_iter()
            .map(|(command, id, data)| match command {
                0 => smux::Frame::syn(id),
                1 => smux::Frame::fin(id),
                2 => smux::Frame::psh(id, Bytes::from(data)),
                _ => smux::Frame::nop(),
            })
            .collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes().unwrap()).collect();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut decoder = smux::StreamDecoder::new();
        let mut decoded = Vec::new();
        for window in points.windows(2) {
            decoder.push(&stream[window[0]..window[1]]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(decoded, frames);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn arbitrary_smux_bytes_decode_the_same_whatever_the_split(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::smux_stream(&data);
    }
}

proptest! {
    /// The gateway KMS's blobs: any plaintext under any key id and context opens to itself,
    /// names its key, and any changed byte, or any other context, is refused.
    #[test]
    fn kms_blobs_open_only_unchanged_and_in_context(
        plaintext in proptest::collection::vec(any::<u8>(), 0..600),
        key_id in "[a-zA-Z0-9/_-]{1,40}",
        context in proptest::collection::btree_map("[a-z:]{1,12}", "[a-z0-9]{0,12}", 0..4),
        nonce in any::<[u8; 12]>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        use ssm_session::kms::LocalKms;
        let kms = LocalKms::from_master_key([3; 32]);
        let blob = kms.encrypt_with(&key_id, &context, &plaintext, nonce);
        prop_assert_eq!(LocalKms::blob_key_id(&blob), Some(key_id.as_str()));
        prop_assert_eq!(kms.open(&blob, &context).unwrap(), (key_id.clone(), plaintext.clone()));
        let mut changed = blob.clone();
        let at = flip.index(changed.len());
        changed[at] ^= 1 << bit;
        prop_assert!(kms.open(&changed, &context).is_err());
        let mut other = context.clone();
        other.insert("aws:ssm:SessionId".into(), "another".into());
        prop_assert!(kms.open(&blob, &other).is_err());
        prop_assert!(LocalKms::from_master_key([4; 32]).open(&blob, &context).is_err());
    }
}
