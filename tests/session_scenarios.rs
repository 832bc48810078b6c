//! Scenario tests of the session engine, one per PROTOCOL.md §6–8 rule, in virtual time with full
//! control over which message reaches which side.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ssm_session::crypto::{Cipher, Direction};
use ssm_session::kms::{CONTEXT_RANDOM_CHALLENGE, EncryptionContext, LocalKms};
use ssm_session::payload::{
    Acknowledge, ChannelClosed, EncryptionChallenge, ExitCode, HandshakeResponse, JsonPayload,
    KmsEncryptionResult, RawJson, RequestedClientAction, TerminalSize,
};
use ssm_session::session::{
    AgentConfig, ClientConfig, CloseReason, Event, KeyRequest, SendError, Session, SessionError,
    SessionType,
};
use ssm_session::{Frame, MessageType, PayloadType, SeededEntropy};
use uuid::Uuid;

const WALL: u64 = 1_700_000_000_000;

/// Two sessions and a hand-operated wire between them.
struct Duo {
    client: Session,
    agent: Session,
    now: Instant,
    kms: LocalKms,
    client_events: Vec<Event>,
    agent_events: Vec<Event>,
}

fn compat_client() -> ClientConfig {
    let mut config = ClientConfig::new("s-1", "i-1");
    config.extensions = false;
    config
}

fn compat_agent(session_type: &str) -> AgentConfig {
    let mut config = AgentConfig::new("s-1", "i-1", SessionType::from_wire(session_type).unwrap());
    config.extensions = false;
    config
}

impl Duo {
    fn new(client: ClientConfig, agent: AgentConfig) -> Duo {
        let now = Instant::now();
        Duo {
            client: Session::client(client, now, WALL, Box::new(SeededEntropy::new(1))),
            agent: Session::agent(agent, now, WALL, Box::new(SeededEntropy::new(2))),
            now,
            kms: LocalKms::from_master_key([9; 32]),
            client_events: Vec::new(),
            agent_events: Vec::new(),
        }
    }

    fn client_out(&mut self) -> Vec<Bytes> {
        std::iter::from_fn(|| self.client.poll_transmit()).collect()
    }

    fn agent_out(&mut self) -> Vec<Bytes> {
        std::iter::from_fn(|| self.agent.poll_transmit()).collect()
    }

    fn deliver_to_client(&mut self, messages: &[Bytes]) {
        for message in messages {
            self.client.handle_message(self.now, WALL, message.clone());
        }
        self.collect();
    }

    fn deliver_to_agent(&mut self, messages: &[Bytes]) {
        for message in messages {
            self.agent.handle_message(self.now, WALL, message.clone());
        }
        self.collect();
    }

    /// Moves events out, answering KMS requests with the LocalKms.
    fn collect(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::KeyRequest(KeyRequest::GenerateDataKey { key_id, context }) => {
                    let key = self
                        .kms
                        .generate_data_key_with(&key_id, &context, [0x42; 64], [3; 12]);
                    self.client.provide_data_key(self.now, key);
                }
                other => self.client_events.push(other),
            }
        }
        while let Some(event) = self.agent.poll_event() {
            match event {
                Event::KeyRequest(KeyRequest::Decrypt {
                    key_id,
                    ciphertext_blob,
                    context,
                }) => match self.kms.decrypt_now(&key_id, &ciphertext_blob, &context) {
                    Ok(plaintext) => self.agent.provide_plaintext_key(self.now, plaintext),
                    Err(error) => self.agent.key_failed(self.now, &error.to_string()),
                },
                other => self.agent_events.push(other),
            }
        }
    }

    /// Moves everything both ways until both sides are quiet.
    fn exchange(&mut self) {
        self.collect();
        loop {
            let (to_agent, to_client) = (self.client_out(), self.agent_out());
            if to_agent.is_empty() && to_client.is_empty() {
                break;
            }
            self.deliver_to_agent(&to_agent);
            self.deliver_to_client(&to_client);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.agent.handle_timeout(self.now);
        self.collect();
    }
}

fn decode(message: &Bytes) -> Frame {
    Frame::decode(message.clone()).unwrap()
}

fn stream_bytes(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Stream { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn handshake_done(events: &[Event]) -> bool {
    events
        .iter()
        .any(|event| matches!(event, Event::HandshakeComplete(_)))
}

/// The text of the handshake failure that closed the session, if that is how it ended.
fn handshake_failure(events: &[Event]) -> Option<&str> {
    match events.last()? {
        Event::Closed(CloseReason::Failed(SessionError::Handshake(text))) => Some(text),
        _ => None,
    }
}

fn ack_seq(message: &Bytes) -> i64 {
    let frame = decode(message);
    assert_eq!(frame.message_type, MessageType::Acknowledge);
    Acknowledge::from_json(&frame.payload)
        .unwrap()
        .acknowledged_message_sequence_number
}

/// A frame as a peer (or the gateway) would send it.
fn crafted(
    message_type: MessageType,
    seq: i64,
    payload_type: PayloadType,
    payload: Vec<u8>,
) -> Bytes {
    Frame {
        message_type,
        schema_version: 1,
        created_date: WALL,
        sequence_number: seq,
        flags: 0,
        message_id: Uuid::from_u128(0x1234_5678_9abc_4def_8123_0000_0000_0000 + seq as u128),
        payload_type,
        payload: payload.into(),
    }
    .to_bytes()
    .unwrap()
}

#[test]
fn sequence_spaces_flags_and_ack_before_processing() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    let agent_first = duo.agent_out();
    let [state, request] = &agent_first[..] else {
        panic!("agent sends state then request")
    };
    let state = decode(state);
    assert_eq!(
        (state.message_type, state.flags, state.sequence_number),
        (MessageType::AgentSessionState, 3, 0)
    );
    let request = decode(request);
    assert_eq!(
        (request.sequence_number, request.flags, request.payload_type),
        (0, 1, PayloadType::HandshakeRequest)
    );

    duo.deliver_to_client(&agent_first);
    let client_first = duo.client_out();
    let [ack, response] = &client_first[..] else {
        panic!("client acks, then answers")
    };
    let ack_frame = decode(ack);
    assert_eq!(
        (
            ack_frame.flags,
            ack_frame.sequence_number,
            ack_frame.payload_type
        ),
        (3, 0, PayloadType::Unset)
    );
    assert_eq!(ack_seq(ack), 0);
    let response = decode(response);
    assert_eq!(
        (
            response.sequence_number,
            response.flags,
            response.payload_type
        ),
        (0, 0, PayloadType::HandshakeResponse)
    );

    duo.deliver_to_agent(&client_first);
    let agent_second = duo.agent_out();
    let frames: Vec<Frame> = agent_second.iter().map(decode).collect();
    let ack = frames
        .iter()
        .find(|f| f.message_type == MessageType::Acknowledge)
        .unwrap();
    assert_eq!(
        Acknowledge::from_json(&ack.payload)
            .unwrap()
            .acknowledged_message_sequence_number,
        0
    );
    let complete = frames
        .iter()
        .find(|f| f.message_type == MessageType::OutputStreamData)
        .unwrap();
    assert_eq!(
        (
            complete.sequence_number,
            complete.flags,
            complete.payload_type
        ),
        (1, 0, PayloadType::HandshakeComplete)
    );
    duo.deliver_to_client(&agent_second);
    duo.exchange();
    assert!(handshake_done(&duo.client_events) && handshake_done(&duo.agent_events));

    duo.client.send(duo.now, b"port bytes").unwrap();
    let data = decode(&duo.client_out()[0]);
    assert_eq!(
        (data.message_type, data.sequence_number),
        (MessageType::InputStreamData, 1),
        "client space continues"
    );
}

#[test]
fn legacy_shell_session_has_no_handshake() {
    let mut duo = Duo::new(compat_client(), compat_agent("Standard_Stream"));
    assert!(
        handshake_done(&duo.agent_events) || {
            duo.collect();
            handshake_done(&duo.agent_events)
        }
    );
    assert_eq!(
        duo.client.send(duo.now, b"x"),
        Err(SendError::NotReady),
        "client waits for the agent's first output"
    );
    duo.agent.send(duo.now, b"sh-5.2$ ").unwrap();
    let out = duo.agent_out();
    let first = decode(out.last().unwrap());
    assert_eq!(
        (first.sequence_number, first.flags, first.payload_type),
        (0, 1, PayloadType::Output)
    );
    duo.deliver_to_client(&out);
    let Some(Event::HandshakeComplete(info)) = duo.client_events.first() else {
        panic!("{:?}", duo.client_events)
    };
    assert!(
        info.legacy
            && info.session_type == SessionType::StandardStream
            && info.peer_version.is_none()
    );
    assert_eq!(stream_bytes(&duo.client_events), b"sh-5.2$ ");
}

#[test]
fn a_client_without_extensions_answers_like_the_go_client() {
    let mut duo = Duo::new(
        compat_client(),
        AgentConfig::new("s-1", "i-1", SessionType::StandardStream),
    );
    let out = duo.agent_out();
    duo.deliver_to_client(&out);
    let out = duo.client_out();
    let response = HandshakeResponse::from_json(&decode(&out[1]).payload).unwrap();
    let extension = &response.processed_client_actions[1];
    assert_eq!(extension.action_type, RequestedClientAction::EXTENSIONS);
    assert_eq!(extension.action_status.0, 0, "Go's quirk: status 0 …");
    assert_eq!(
        extension.action_result.as_ref().map(RawJson::get),
        Some("3"),
        "… and 3 in ActionResult"
    );
    duo.deliver_to_agent(&out);
    duo.exchange();
    assert!(
        handshake_done(&duo.agent_events),
        "the agent carries on without extensions"
    );
    assert_eq!(duo.agent.max_payload(), 1024);
    duo.agent.send(duo.now, &[7; 3000]).unwrap();
    assert_eq!(
        duo.agent_out().len(),
        3,
        "1 KiB messages on the reference wire"
    );
}

#[test]
fn negotiated_extensions_send_large_payloads_and_fewer_acks() {
    let mut duo = Duo::new(
        ClientConfig::new("s-1", "i-1"),
        AgentConfig::new("s-1", "i-1", SessionType::StandardStream),
    );
    duo.exchange();
    assert_eq!(
        (duo.client.max_payload(), duo.agent.max_payload()),
        (65536, 65536)
    );
    let data = vec![1u8; 40 * 65536];
    assert_eq!(duo.agent.send(duo.now, &data).unwrap(), data.len());
    let out = duo.agent_out();
    assert_eq!(out.len(), 40);
    let acks_before = duo.client.stats().acks_sent;
    duo.deliver_to_client(&out);
    duo.advance(Duration::from_millis(5));
    let acks = duo.client_out();
    assert_eq!(
        acks.len() as u64,
        duo.client.stats().acks_sent - acks_before
    );
    assert!(
        acks.len() <= 2,
        "{} acknowledgements for 40 messages",
        acks.len()
    );
    duo.deliver_to_agent(&acks);
    assert_eq!(
        duo.agent.in_flight(),
        0,
        "one cumulative ack releases everything up to it"
    );
    assert!(
        stream_bytes(&duo.client_events) == data,
        "received bytes differ"
    );
}

#[test]
fn duplicates_are_acknowledged_again_but_delivered_once() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    duo.exchange();
    duo.agent.send(duo.now, b"once").unwrap();
    let out = duo.agent_out();
    duo.deliver_to_client(&out);
    duo.deliver_to_client(&out);
    let acks = duo.client_out();
    assert_eq!(
        acks.len(),
        2,
        "the duplicate is re-acknowledged (the Go client would not)"
    );
    assert_eq!(ack_seq(&acks[0]), ack_seq(&acks[1]));
    assert_eq!(stream_bytes(&duo.client_events), b"once");
    assert_eq!(duo.client.stats().duplicates_received, 1);
}

#[test]
fn early_messages_are_acknowledged_buffered_and_delivered_in_order() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    duo.exchange();
    for chunk in [&b"a"[..], b"b", b"c"] {
        duo.agent.send(duo.now, chunk).unwrap();
    }
    let out = duo.agent_out();
    duo.deliver_to_client(&[out[2].clone(), out[1].clone()]);
    assert_eq!(
        duo.client_out().len(),
        2,
        "each early message is acknowledged at once"
    );
    assert!(stream_bytes(&duo.client_events).is_empty());
    duo.deliver_to_client(&[out[0].clone()]);
    assert_eq!(stream_bytes(&duo.client_events), b"abc");
}

#[test]
fn every_expired_message_is_retransmitted_with_identical_bytes_and_backs_off() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    duo.exchange();
    for chunk in [&b"1"[..], b"2", b"3"] {
        duo.agent.send(duo.now, chunk).unwrap();
    }
    let originals = duo.agent_out();
    let sent_at = duo.now;
    let first = duo.agent.poll_timeout().unwrap();
    duo.advance(first - duo.now);
    assert_eq!(duo.agent_out(), originals, "all three, unchanged, in order");
    let second = duo.agent.poll_timeout().unwrap();
    duo.advance(second - duo.now);
    assert_eq!(duo.agent_out().len(), 3);
    let third = duo.agent.poll_timeout().unwrap();
    assert_eq!(
        second - first,
        2 * (first - sent_at),
        "the timeout doubles per retransmission"
    );
    assert_eq!(third - second, 4 * (first - sent_at));
    assert_eq!(duo.agent.stats().retransmits, 6);
    duo.deliver_to_client(&originals);
    let out = duo.client_out();
    duo.deliver_to_agent(&out);
    assert_eq!(duo.agent.in_flight(), 0);
    assert_eq!(duo.agent.poll_timeout(), None, "nothing left to retransmit");
}

#[test]
fn a_full_window_blocks_the_sender_without_dropping_anything() {
    let mut client = compat_client();
    client.limits.max_in_flight = 4;
    let mut duo = Duo::new(client, compat_agent("Port"));
    duo.exchange();
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    assert_eq!(duo.client.send(duo.now, &data), Ok(4 * 1024));
    assert_eq!(
        duo.client.send(duo.now, &data[4096..]),
        Err(SendError::Blocked)
    );
    let window = duo.client_out();
    duo.deliver_to_agent(&window[..1]);
    let acks = duo.agent_out();
    duo.deliver_to_client(&acks);
    assert!(
        duo.client_events
            .iter()
            .any(|e| matches!(e, Event::Writable))
    );
    assert_eq!(duo.client.send(duo.now, &data[4096..]), Ok(1024));
    duo.deliver_to_agent(&window[1..]);
    duo.exchange();
    let mut sent = 5 * 1024;
    while sent < data.len() {
        sent += duo.client.send(duo.now, &data[sent..]).unwrap();
        duo.exchange();
    }
    let received = stream_bytes(&duo.agent_events);
    assert_eq!(received.len(), data.len());
    assert!(received == data, "received bytes differ from sent bytes");
}

#[test]
fn pause_publication_holds_messages_until_start_publication() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    duo.exchange();
    duo.deliver_to_agent(&[crafted(
        MessageType::PausePublication,
        0,
        PayloadType::Unset,
        b"{}".to_vec(),
    )]);
    duo.agent.send(duo.now, b"held").unwrap();
    assert!(duo.agent_out().is_empty(), "nothing is sent while paused");
    duo.advance(Duration::from_secs(5));
    assert!(duo.agent_out().is_empty(), "not even retransmissions");
    duo.deliver_to_agent(&[crafted(
        MessageType::StartPublication,
        0,
        PayloadType::Unset,
        b"{}".to_vec(),
    )]);
    let out = duo.agent_out();
    assert_eq!(out.len(), 1);
    duo.deliver_to_client(&out);
    assert_eq!(stream_bytes(&duo.client_events), b"held");
}

#[test]
fn client_takes_a_malformed_start_publication_as_go_does() {
    // HeaderLength 0, CreatedDate 0 and a wrong digest: the Go client accepts start/pause
    // publication unconditionally (PROTOCOL.md §3.9). Nothing in it is read, so no error either.
    let mut duo = Duo::new(compat_client(), compat_agent("Standard_Stream"));
    duo.exchange();
    duo.client_events.clear();
    let mut wire = crafted(
        MessageType::StartPublication,
        0,
        PayloadType::Unset,
        b"{}".to_vec(),
    )
    .to_vec();
    wire[..4].copy_from_slice(&0u32.to_be_bytes()); // HeaderLength
    wire[40..48].copy_from_slice(&0u64.to_be_bytes()); // CreatedDate
    wire[80..112].fill(0xee); // PayloadDigest
    assert!(Frame::decode(Bytes::from(wire.clone())).is_ok());
    duo.deliver_to_client(&[Bytes::from(wire)]);
    assert!(
        duo.client_events.is_empty(),
        "no error event: {:?}",
        duo.client_events
    );
    // The session carries on as before.
    duo.agent.send(duo.now, b"after").unwrap();
    duo.exchange();
    assert_eq!(stream_bytes(&duo.client_events), b"after");
}

#[test]
fn a_new_transport_resends_everything_unacknowledged_at_once() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    duo.exchange();
    duo.client.send(duo.now, b"abc").unwrap();
    let lost = duo.client_out();
    duo.client.transport_lost(duo.now);
    duo.client.send(duo.now, b"def").unwrap();
    assert!(duo.client_out().is_empty(), "no transport: kept, not sent");
    duo.now += Duration::from_millis(50);
    duo.client.transport_restored(duo.now);
    let resent = duo.client_out();
    assert_eq!(resent.len(), 2);
    assert_eq!(resent[0], lost[0], "same bytes, same sequence number");
    assert_eq!(
        decode(&resent[1]).sequence_number,
        decode(&lost[0]).sequence_number + 1
    );
    duo.deliver_to_agent(&resent);
    duo.deliver_to_agent(&lost);
    assert_eq!(
        stream_bytes(&duo.agent_events),
        b"abcdef",
        "no loss, no duplication"
    );
}

fn encrypted_agent() -> AgentConfig {
    let mut agent = compat_agent("Standard_Stream");
    agent.kms_key_id = Some("alias/session".into());
    agent
}

#[test]
fn encrypted_session_hides_data_but_not_size_and_flags() {
    let mut duo = Duo::new(compat_client(), encrypted_agent());
    duo.exchange();
    let Some(Event::HandshakeComplete(info)) = duo
        .client_events
        .iter()
        .find(|e| matches!(e, Event::HandshakeComplete(_)))
    else {
        panic!("{:?}", duo.client_events)
    };
    assert!(info.encrypted);
    assert_eq!(
        info.customer_message,
        "This session is encrypted using AWS KMS."
    );
    duo.client.send(duo.now, b"secret keystrokes").unwrap();
    duo.client
        .send_size(duo.now, TerminalSize { cols: 80, rows: 24 })
        .unwrap();
    let out = duo.client_out();
    let data = decode(&out[0]);
    assert_eq!(data.payload.len(), 17 + 28);
    assert!(!data.payload.windows(6).any(|w| w == b"secret"));
    assert_eq!(&decode(&out[1]).payload[..], br#"{"cols":80,"rows":24}"#);
    duo.deliver_to_agent(&out);
    assert_eq!(stream_bytes(&duo.agent_events), b"secret keystrokes");
    assert!(
        duo.agent_events
            .iter()
            .any(|e| matches!(e, Event::Resize(TerminalSize { cols: 80, rows: 24 })))
    );
}

#[test]
fn acknowledged_challenge_is_bound_into_the_kms_context() {
    let mut fresh = Duo::new(compat_client(), encrypted_agent());
    let out = fresh.agent_out();
    for message in &out {
        fresh
            .client
            .handle_message(fresh.now, WALL, message.clone());
    }
    let Some(Event::KeyRequest(KeyRequest::GenerateDataKey { context, .. })) =
        std::iter::from_fn(|| fresh.client.poll_event())
            .find(|e| matches!(e, Event::KeyRequest(_)))
    else {
        panic!("no key request")
    };
    assert!(context.contains_key(CONTEXT_RANDOM_CHALLENGE));
}

#[test]
fn an_agent_requiring_the_challenge_refuses_clients_that_skip_it() {
    let mut client = compat_client();
    client.acknowledge_challenge = false;
    let mut agent = encrypted_agent();
    agent.require_challenge_ack = true;
    let mut duo = Duo::new(client, agent);
    duo.exchange();
    let failure = handshake_failure(&duo.agent_events).unwrap_or_default();
    assert!(
        failure.contains("random challenge"),
        "{:?}",
        duo.agent_events
    );
}

#[test]
fn a_mismatched_kms_context_fails_the_handshake() {
    let client = ClientConfig::new("s-1", "i-typed-by-user");
    let mut agent = encrypted_agent();
    agent.extensions = true;
    let mut duo = Duo::new(client, agent);
    duo.exchange();
    let failure = handshake_failure(&duo.agent_events).unwrap_or_default();
    assert!(
        failure.starts_with("Fetching data key failed"),
        "{:?}",
        duo.agent_events
    );
}

#[test]
fn tampered_and_replayed_payloads_are_errors_never_data() {
    let mut duo = Duo::new(compat_client(), encrypted_agent());
    duo.exchange();
    duo.client.send(duo.now, b"genuine").unwrap();
    let genuine = decode(&duo.client_out()[0]);
    let mut tampered = genuine.payload.to_vec();
    tampered[14] ^= 1;
    let seq = genuine.sequence_number;
    duo.deliver_to_agent(&[crafted(
        MessageType::InputStreamData,
        seq,
        PayloadType::Output,
        tampered,
    )]);
    assert!(matches!(
        duo.agent_events.last(),
        Some(Event::Error(SessionError::Decrypt { .. }))
    ));
    assert!(duo.agent_out().is_empty(), "not acknowledged");
    duo.deliver_to_agent(&[genuine.to_bytes().unwrap()]);
    assert_eq!(stream_bytes(&duo.agent_events), b"genuine");
    // The same ciphertext under the next sequence number is a replay.
    duo.deliver_to_agent(&[crafted(
        MessageType::InputStreamData,
        seq + 1,
        PayloadType::Output,
        genuine.payload.to_vec(),
    )]);
    assert!(matches!(
        duo.agent_events.last(),
        Some(Event::Error(SessionError::Decrypt {
            error: ssm_session::crypto::CryptoError::ReplayedNonce,
            ..
        }))
    ));
    assert_eq!(stream_bytes(&duo.agent_events), b"genuine");
}

#[test]
fn the_agent_keeps_client_input_that_arrives_during_the_handshake() {
    let kms = LocalKms::from_master_key([9; 32]);
    let now = Instant::now();
    let mut agent = Session::agent(
        encrypted_agent(),
        now,
        WALL,
        Box::new(SeededEntropy::new(5)),
    );
    let request = std::iter::from_fn(|| agent.poll_transmit())
        .map(|m| decode(&m))
        .last()
        .unwrap();
    let challenge = ssm_session::payload::HandshakeRequest::from_json(&request.payload)
        .unwrap()
        .requested_client_actions[1]
        .parameters::<ssm_session::payload::KmsEncryptionRequest>()
        .unwrap()
        .challenge;
    let context = EncryptionContext::from([
        ("aws:ssm:SessionId".to_owned(), "s-1".to_owned()),
        ("aws:ssm:TargetId".to_owned(), "i-1".to_owned()),
        (CONTEXT_RANDOM_CHALLENGE.to_owned(), challenge),
    ]);
    let key = kms.generate_data_key_with("alias/session", &context, [0x33; 64], [1; 12]);
    let mut response = HandshakeResponse::new("1.2.694.0");
    response.push_success(RequestedClientAction::SESSION_TYPE, None);
    let result = KmsEncryptionResult {
        kms_cipher_text_key: key.ciphertext_blob.clone(),
        kms_cipher_text_hash: None,
        challenge_acknowledgement: Some(true),
    };
    response.push_success(
        RequestedClientAction::KMS_ENCRYPTION,
        Some(RawJson::encode(&result)),
    );
    agent.handle_message(
        now,
        WALL,
        crafted(
            MessageType::InputStreamData,
            0,
            PayloadType::HandshakeResponse,
            response.to_json(),
        ),
    );
    let Some(Event::KeyRequest(KeyRequest::Decrypt {
        ciphertext_blob,
        context,
        key_id,
    })) = agent.poll_event()
    else {
        panic!("the agent asks for the key")
    };
    // Input arrives while the key is being fetched.
    agent.handle_message(
        now,
        WALL,
        crafted(
            MessageType::InputStreamData,
            1,
            PayloadType::Size,
            br#"{"cols":1,"rows":2}"#.to_vec(),
        ),
    );
    agent.provide_plaintext_key(
        now,
        kms.decrypt_now(&key_id, &ciphertext_blob, &context)
            .unwrap(),
    );
    let out: Vec<Frame> = std::iter::from_fn(|| agent.poll_transmit())
        .map(|m| decode(&m))
        .collect();
    let challenge_request = out
        .iter()
        .find(|f| f.payload_type == PayloadType::EncChallengeRequest)
        .unwrap();
    let mut client_cipher = Cipher::new(&key.plaintext, Direction::Client, [7; 12]);
    let sealed = EncryptionChallenge::from_json(&challenge_request.payload)
        .unwrap()
        .challenge;
    let opened = client_cipher.open(&sealed).unwrap();
    let answer = EncryptionChallenge {
        challenge: client_cipher.seal(&opened),
    };
    agent.handle_message(
        now,
        WALL,
        crafted(
            MessageType::InputStreamData,
            2,
            PayloadType::EncChallengeResponse,
            answer.to_json(),
        ),
    );
    let events: Vec<Event> = std::iter::from_fn(|| agent.poll_event()).collect();
    let complete_at = events
        .iter()
        .position(|e| matches!(e, Event::HandshakeComplete(_)))
        .unwrap();
    let resize_at = events
        .iter()
        .position(|e| matches!(e, Event::Resize(TerminalSize { cols: 1, rows: 2 })))
        .unwrap();
    assert!(
        resize_at > complete_at,
        "kept and delivered after the handshake, not thrown away"
    );
}

#[test]
fn an_unanswered_handshake_times_out_after_fifteen_seconds() {
    let now = Instant::now();
    let mut agent = Session::agent(
        compat_agent("Port"),
        now,
        WALL,
        Box::new(SeededEntropy::new(5)),
    );
    while agent.poll_transmit().is_some() {}
    let mut at = now;
    while let Some(deadline) = agent.poll_timeout() {
        at = deadline;
        agent.handle_timeout(at);
        while agent.poll_transmit().is_some() {}
    }
    assert!(at - now >= Duration::from_secs(15) && at - now < Duration::from_secs(16));
    let closed = std::iter::from_fn(|| agent.poll_event()).last();
    assert!(matches!(
        closed,
        Some(Event::Closed(CloseReason::Failed(SessionError::HandshakeTimeout(text)))) if text.starts_with("Handshake timed out")
    ));
}

#[test]
fn channel_closed_from_the_gateway_ends_the_session() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    duo.exchange();
    let closed = ChannelClosed {
        session_id: "s-1".into(),
        output: "bye".into(),
        ..Default::default()
    };
    duo.deliver_to_client(&[crafted(
        MessageType::ChannelClosed,
        0,
        PayloadType::Unset,
        closed.to_json(),
    )]);
    assert!(
        matches!(duo.client_events.last(), Some(Event::Closed(CloseReason::ChannelClosed(c))) if c.output == "bye")
    );
    assert!(duo.client.is_closed());
    assert_eq!(duo.client.send(duo.now, b"x"), Err(SendError::Closed));
}

#[test]
fn close_waits_for_acknowledgements_then_reports_terminating() {
    let mut duo = Duo::new(compat_client(), compat_agent("NonInteractiveCommands"));
    duo.exchange();
    duo.agent.send_stderr(duo.now, b"warning\n").unwrap();
    duo.agent.send_exit_code(duo.now, ExitCode(3)).unwrap();
    duo.agent.close(duo.now);
    assert!(
        !duo.agent.is_closed(),
        "two messages are not acknowledged yet"
    );
    let out = duo.agent_out();
    duo.deliver_to_client(&out);
    assert!(
        duo.client_events
            .iter()
            .any(|e| matches!(e, Event::ExitCode(ExitCode(3))))
    );
    assert_eq!(stream_bytes(&duo.client_events), b"warning\n");
    let out = duo.client_out();
    duo.deliver_to_agent(&out);
    assert!(duo.agent.is_closed());
    let terminating = decode(&duo.agent_out()[0]);
    assert_eq!(terminating.message_type, MessageType::AgentSessionState);
    assert!(
        std::str::from_utf8(&terminating.payload)
            .unwrap()
            .contains("Terminating")
    );
}

#[test]
fn gcm_authenticated_messages_skip_the_digest_but_early_ones_do_not() {
    let mut duo = Duo::new(compat_client(), encrypted_agent());
    duo.exchange();
    duo.client.send(duo.now, b"one").unwrap();
    duo.client.send(duo.now, b"two").unwrap();
    let sent: Vec<Frame> = duo.client_out().iter().map(decode).collect();
    let bad_digest = |frame: &Frame| {
        let mut wire = frame.to_bytes().unwrap().to_vec();
        wire[80] ^= 0xff;
        Bytes::from(wire)
    };
    // Early (seq + 1) with a wrong digest: refused before it could be acknowledged.
    duo.deliver_to_agent(&[bad_digest(&sent[1])]);
    assert!(matches!(
        duo.agent_events.last(),
        Some(Event::Error(SessionError::Frame(
            ssm_session::DecodeError::DigestMismatch
        )))
    ));
    assert!(duo.agent_out().is_empty());
    // Next in order with a wrong digest: AES-GCM authenticates it, the hash adds nothing.
    duo.deliver_to_agent(&[bad_digest(&sent[0])]);
    assert_eq!(stream_bytes(&duo.agent_events), b"one");
    duo.deliver_to_agent(&[sent[1].to_bytes().unwrap()]);
    assert_eq!(stream_bytes(&duo.agent_events), b"onetwo");
}

#[test]
fn flags_travel_in_the_stream_unencrypted() {
    let mut duo = Duo::new(compat_client(), encrypted_agent());
    duo.exchange();
    duo.client
        .send_flag(duo.now, ssm_session::payload::Flag::TerminateSession)
        .unwrap();
    let out = duo.client_out();
    let flag = decode(&out[0]);
    assert_eq!(
        (flag.payload_type, &flag.payload[..]),
        (PayloadType::Flag, &[0, 0, 0, 2][..])
    );
    duo.deliver_to_agent(&out);
    assert!(
        duo.agent_events
            .iter()
            .any(|e| matches!(e, Event::Flag(ssm_session::payload::Flag::TerminateSession)))
    );
    assert_eq!(
        ack_seq(&duo.agent_out()[0]),
        flag.sequence_number,
        "acknowledged like data"
    );
}

#[test]
fn any_acknowledgement_ends_a_pause() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    duo.exchange();
    duo.agent.send(duo.now, b"first").unwrap();
    let first = duo.agent_out();
    duo.deliver_to_agent(&[crafted(
        MessageType::PausePublication,
        0,
        PayloadType::Unset,
        b"{}".to_vec(),
    )]);
    duo.agent.send(duo.now, b"second").unwrap();
    assert!(duo.agent_out().is_empty());
    duo.deliver_to_client(&first);
    let ack = duo.client_out();
    duo.deliver_to_agent(&ack);
    let resumed = duo.agent_out();
    assert_eq!(
        resumed.len(),
        1,
        "the acknowledgement resumed publication (PROTOCOL.md §7.5)"
    );
    duo.deliver_to_client(&resumed);
    assert_eq!(stream_bytes(&duo.client_events), b"firstsecond");
}

#[test]
fn retransmitted_messages_give_no_rtt_sample() {
    let mut duo = Duo::new(compat_client(), compat_agent("Port"));
    duo.exchange();
    let before = duo.agent.smoothed_rtt();
    duo.agent.send(duo.now, b"late").unwrap();
    let original = duo.agent_out();
    let deadline = duo.agent.poll_timeout().unwrap();
    duo.advance(deadline - duo.now);
    assert_eq!(duo.agent_out(), original, "retransmitted");
    duo.now += Duration::from_secs(3);
    duo.deliver_to_client(&original);
    let ack = duo.client_out();
    duo.deliver_to_agent(&ack);
    assert_eq!(duo.agent.in_flight(), 0);
    assert_eq!(
        duo.agent.smoothed_rtt(),
        before,
        "Karn's rule: an ambiguous sample is ignored"
    );
    // A message sent once does update the estimate.
    duo.agent.send(duo.now, b"prompt").unwrap();
    let out = duo.agent_out();
    duo.now += Duration::from_millis(40);
    duo.deliver_to_client(&out);
    let ack = duo.client_out();
    duo.deliver_to_agent(&ack);
    assert_ne!(duo.agent.smoothed_rtt(), before);
}

#[test]
fn port_sessions_are_never_encrypted() {
    let mut agent = compat_agent("Port");
    agent.kms_key_id = Some("alias/session".into());
    let mut duo = Duo::new(compat_client(), agent);
    let out = duo.agent_out();
    let request = out
        .iter()
        .map(decode)
        .find(|f| f.payload_type == PayloadType::HandshakeRequest)
        .unwrap();
    let request = ssm_session::payload::HandshakeRequest::from_json(&request.payload).unwrap();
    assert_eq!(
        request.requested_client_actions.len(),
        1,
        "SessionType only (PROTOCOL.md §8.1)"
    );
    duo.deliver_to_client(&out);
    duo.exchange();
    let Some(Event::HandshakeComplete(info)) = duo
        .client_events
        .iter()
        .find(|e| matches!(e, Event::HandshakeComplete(_)))
    else {
        panic!("{:?}", duo.client_events)
    };
    assert!(!info.encrypted);
}

#[test]
fn a_client_kms_failure_reaches_the_agent_as_a_failed_action() {
    let now = Instant::now();
    let mut client = Session::client(compat_client(), now, WALL, Box::new(SeededEntropy::new(1)));
    let mut agent = Session::agent(
        encrypted_agent(),
        now,
        WALL,
        Box::new(SeededEntropy::new(2)),
    );
    for message in std::iter::from_fn(|| agent.poll_transmit()).collect::<Vec<_>>() {
        client.handle_message(now, WALL, message);
    }
    assert!(std::iter::from_fn(|| client.poll_event()).any(|e| matches!(e, Event::KeyRequest(_))));
    client.key_failed(now, "AccessDeniedException: not authorized");
    let response = std::iter::from_fn(|| client.poll_transmit())
        .map(|m| decode(&m))
        .find(|f| f.payload_type == PayloadType::HandshakeResponse)
        .unwrap();
    let parsed = HandshakeResponse::from_json(&response.payload).unwrap();
    assert_eq!(
        parsed.errors,
        Some(vec![
            "Error calling KMS GenerateDataKey API: AccessDeniedException: not authorized"
                .to_owned()
        ])
    );
    agent.handle_message(now, WALL, response.to_bytes().unwrap());
    let events: Vec<Event> = std::iter::from_fn(|| agent.poll_event()).collect();
    let failure = handshake_failure(&events).unwrap_or_default();
    assert!(failure.contains("AccessDeniedException"), "{events:?}");
}

#[test]
fn a_client_close_tells_the_agent_the_client_left() {
    use ssm_session::payload::Flag;
    let mut duo = Duo::new(compat_client(), compat_agent("Standard_Stream"));
    duo.agent.close(duo.now);
    duo.exchange();
    assert!(duo.agent.is_closed());
    assert!(
        !duo.client_events
            .iter()
            .any(|e| matches!(e, Event::Flag(_))),
        "an agent's close sends no flag"
    );

    for (version, told) in [("3.3.1957.0", true), ("2.3.722.0", false)] {
        let mut agent = compat_agent("NonInteractiveCommands");
        agent.agent_version = version.into();
        let mut duo = Duo::new(compat_client(), agent);
        duo.exchange();
        assert!(handshake_done(&duo.client_events));
        duo.client.close(duo.now);
        assert_eq!(
            duo.client.is_closed(),
            !told,
            "{version}: a flag sent holds the close until its ack"
        );
        duo.exchange();
        let heard = duo
            .agent_events
            .iter()
            .any(|e| matches!(e, Event::Flag(Flag::TerminateSession)));
        assert_eq!(heard, told, "agent {version}");
        assert!(duo.client.is_closed(), "{version}");
    }
}

#[test]
fn a_client_that_cannot_run_the_session_type_hears_why() {
    let now = Instant::now();
    let mut client = Session::client(compat_client(), now, WALL, Box::new(SeededEntropy::new(1)));
    let mut agent = Session::agent(
        compat_agent("Port"),
        now,
        WALL,
        Box::new(SeededEntropy::new(2)),
    );
    let request = std::iter::from_fn(|| agent.poll_transmit())
        .map(|m| decode(&m))
        .find(|f| f.payload_type == PayloadType::HandshakeRequest)
        .unwrap();
    let misspelt = String::from_utf8(request.payload.to_vec())
        .unwrap()
        .replace("\"Port\"", "\"Prot\"");
    let request = Frame {
        payload: misspelt.into_bytes().into(),
        ..request
    };
    client.handle_message(now, WALL, request.to_bytes().unwrap());
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error(SessionError::Handshake(text)) if text.contains("Unknown session type Prot")
        )),
        "{events:?}"
    );
}
