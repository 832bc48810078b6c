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

/// Drives a client and an agent with arbitrary operations: real traffic between them mixed with
/// arbitrary frames, time jumps, sends, transport changes and KMS answers. Nothing may panic,
/// the send window must hold, and time-outs must never lie in the past after handling.
pub fn session_ops(data: &[u8]) {
    use std::time::{Duration, Instant};

    use crate::SeededEntropy;
    use crate::kms::LocalKms;
    use crate::session::{AgentConfig, ClientConfig, Event, KeyRequest, Session, SessionType};

    let Some((&mode, mut ops)) = data.split_first() else {
        return;
    };
    let start = Instant::now();
    let mut now = start;
    let wall = 1_700_000_000_000;
    let mut client_config = ClientConfig::new("s-fuzz", "i-fuzz");
    let mut agent_config = AgentConfig::new(
        "s-fuzz",
        "i-fuzz",
        [
            SessionType::StandardStream,
            SessionType::Port,
            SessionType::NonInteractiveCommands,
        ][usize::from(mode % 3)],
    );
    client_config.extensions = mode & 4 != 0;
    agent_config.extensions = mode & 8 != 0;
    if mode & 16 != 0 {
        agent_config.kms_key_id = Some("alias/fuzz".into());
    }
    let max_in_flight = agent_config.limits.max_in_flight;
    let mut sessions = [
        Session::client(client_config, now, wall, Box::new(SeededEntropy::new(1))),
        Session::agent(agent_config, now, wall, Box::new(SeededEntropy::new(2))),
    ];
    let kms = LocalKms::from_master_key([1; 32]);
    let mut key_requests: Vec<(usize, KeyRequest)> = Vec::new();
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        let side = usize::from(op & 1);
        match op >> 1 {
            // Real traffic from one side to the other.
            0..=39 => {
                if let Some(message) = sessions[side].poll_transmit() {
                    sessions[1 - side].handle_message(now, wall, message);
                }
            }
            // An arbitrary websocket message.
            40..=49 => {
                let len =
                    usize::from(ops.first().copied().unwrap_or(0)).min(ops.len().saturating_sub(1));
                let message =
                    Bytes::copy_from_slice(&ops[1.min(ops.len())..1.min(ops.len()) + len]);
                ops = &ops[(1 + len).min(ops.len())..];
                sessions[side].handle_message(now, wall, message);
            }
            50..=69 => {
                now += Duration::from_millis(u64::from(op) * 7);
                for session in &mut sessions {
                    session.handle_timeout(now);
                }
            }
            70..=89 => {
                let _ = sessions[side].send(now, &ops[..ops.len().min(3000)]);
            }
            90..=99 => sessions[side].transport_lost(now),
            100..=109 => sessions[side].transport_restored(now),
            110..=119 => {
                if let Some(index) = key_requests.iter().position(|(s, _)| *s == side) {
                    let (_, request) = key_requests.remove(index);
                    match request {
                        KeyRequest::GenerateDataKey { key_id, context } => {
                            let key =
                                kms.generate_data_key_with(&key_id, &context, [op; 64], [op; 12]);
                            sessions[side].provide_data_key(now, key);
                        }
                        KeyRequest::Decrypt {
                            key_id,
                            ciphertext_blob,
                            context,
                        } => match kms.decrypt_now(&key_id, &ciphertext_blob, &context) {
                            Ok(plaintext) => sessions[side].provide_plaintext_key(now, plaintext),
                            Err(error) => sessions[side].key_failed(now, &error.to_string()),
                        },
                    }
                }
            }
            _ => sessions[side].close(now),
        }
        for (side, session) in sessions.iter_mut().enumerate() {
            assert!(
                session.in_flight() <= max_in_flight,
                "the send window holds"
            );
            while let Some(event) = session.poll_event() {
                if let Event::KeyRequest(request) = event {
                    key_requests.push((side, request));
                }
            }
            if let Some(at) = session.poll_timeout() {
                assert!(at >= start, "time-outs are never before the session began");
            }
        }
    }
}

/// Feeds `data` to the decoders of the system layer, chosen by its first byte: control-channel
/// messages, SigV4 verification of an arbitrary request, session documents and agent session
/// requests, policies, audit logs, the smux stream table, and the gateway KMS's ciphertext
/// blobs. Nothing may panic; what decodes must re-encode.
pub fn gateway_inputs(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 7 {
        0 => {
            use crate::control::ControlMessage;
            if let Ok(message) = ControlMessage::decode(Bytes::copy_from_slice(rest)) {
                let again = message.encode(uuid::Uuid::from_u128(1), 1);
                assert_eq!(ControlMessage::decode(again).ok(), Some(message));
            }
        }
        1 => {
            // "METHOD path?query\nName: value\n…\n\nbody"
            let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
            let mut lines = head.lines();
            let first = lines.next().unwrap_or("");
            let (method, target) = first.split_once(' ').unwrap_or((first, "/"));
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let headers: Vec<(String, String)> = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
                .collect();
            let request = crate::sigv4::Request {
                method,
                path,
                query,
                headers: &headers,
                body: body.as_bytes(),
            };
            let expected = crate::sigv4::Expected {
                region: "us-east-1",
                service: "ssm",
                signed_headers: &["x-amz-target"],
            };
            let _ = crate::sigv4::verify(&request, &expected, |_| Some("secret"), 1_800_000_000);
        }
        2 => {
            if let Ok(document) = crate::document::Document::from_json("Fuzz-Document", &text) {
                let _ = document.resolve(&Default::default());
            }
            let _ = crate::document::AgentSessionRequest::from_json(&text);
        }
        3 => {
            if let Ok(policy) = crate::policy::Policy::from_json(&text) {
                let policies = [("fuzz".to_owned(), policy)];
                let resources = ["arn:aws:ssm:us-east-1:123456789012:managed-instance/mi-1"];
                let decision = crate::policy::evaluate(
                    &policies,
                    &crate::policy::AuthzRequest {
                        action: "ssm:StartSession",
                        resources: &resources,
                        username: "alice",
                    },
                );
                let _ = decision.to_string();
            }
        }
        4 => {
            let _ = crate::audit::verify(rest);
        }
        6 => {
            // A `Decrypt` blob from the network: refused, never forged; our own blobs round-trip.
            use crate::kms::LocalKms;
            let kms = LocalKms::from_master_key([1; 32]);
            let context = crate::kms::EncryptionContext::new();
            let _ = LocalKms::blob_key_id(rest);
            assert!(kms.open(rest, &context).is_err(), "a forged blob opened");
            let blob = kms.encrypt_with(&text, &context, rest, [which; 12]);
            assert_eq!(LocalKms::blob_key_id(&blob), Some(&*text));
            assert_eq!(
                kms.open(&blob, &context).ok(),
                Some((text.to_string(), rest.to_vec()))
            );
        }
        _ => {
            // The smux stream table at the agent, fed hostile bytes in pieces.
            let now = std::time::Instant::now();
            let mut mux = smux::Mux::server(smux::MuxConfig::default(), now);
            for piece in rest.chunks(usize::from(which % 7) + 1) {
                if mux.handle_input(piece, now).is_err() {
                    break;
                }
                while mux.poll_event().is_some() {}
                while mux.poll_transmit().is_some() {}
            }
        }
    }
}

/// Drives the relay core with arbitrary operations on three sessions: attaches, detaches and
/// disconnects, messages of any size from any connection id (stale ones included), partial
/// writes, time jumps and ends. Nothing may panic, the queues must stay within the limits (one
/// message past the hard limit, plus the closing frame) and deadlines must lie ahead once
/// handled.
pub fn relay_ops(data: &[u8]) {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use crate::SeededEntropy;
    use crate::relay::{Config, ConnectionId, Relay};
    use crate::session::Role;

    let config = Config {
        soft_limit: 64,
        hard_limit: 256,
        max_queued: 8,
        total_limit: 512,
        abandon_after: Duration::from_secs(1),
        close_linger: Duration::from_millis(100),
    };
    let start = Instant::now();
    let mut now = start;
    let mut relay = Relay::new(
        config.clone(),
        now,
        1_700_000_000_000,
        Box::new(SeededEntropy::new(9)),
    );
    let sessions = ["s-0", "s-1", "s-2"];
    let mut conns: VecDeque<ConnectionId> = VecDeque::new();
    let mut largest = 0;
    let mut ops = data;
    while let Some((&op, rest)) = ops.split_first() {
        let arg = rest.first().copied().unwrap_or(0);
        ops = rest.get(1..).unwrap_or_default();
        let session = sessions[usize::from(arg % 3)];
        let side = match arg & 4 {
            0 => Role::Client,
            _ => Role::Agent,
        };
        let conn = conns.get(usize::from(arg) % conns.len().max(1)).copied();
        match (op % 8, conn) {
            (0, _) => {
                if let Ok(conn) = relay.attach(now, session, side) {
                    if conns.len() == 16 {
                        conns.pop_front();
                    }
                    conns.push_back(conn);
                }
            }
            (1, Some(conn)) => {
                let _ = relay.detach(now, conn);
            }
            (2 | 3, Some(conn)) => {
                let len = usize::from(op) * 2;
                largest = largest.max(len);
                let _ = relay.receive(now, conn, Bytes::from(vec![arg; len]));
            }
            (4, Some(conn)) => {
                for _ in 0..arg % 5 {
                    let _ = relay.poll_transmit(now, conn);
                }
            }
            (5, _) => {
                now += Duration::from_millis(u64::from(arg) * 10);
                relay.handle_timeout(now);
                if let Some(at) = relay.poll_timeout() {
                    assert!(at > now, "a handled deadline is not left behind");
                }
            }
            (6, _) => {
                relay.end(now, session, "fuzz");
            }
            (7, _) => {
                relay.disconnect(now, session, side);
            }
            _ => {}
        }
        while relay.poll_event().is_some() {}
        for session in sessions {
            for side in [Role::Client, Role::Agent] {
                let backlog = relay.backlog(session, side);
                assert!(
                    backlog.bytes <= config.hard_limit + largest + 512,
                    "{backlog:?} exceeds the hard limit by more than a message"
                );
                assert!(backlog.messages <= config.max_queued + 1, "{backlog:?}");
            }
        }
        assert!(relay.session_count() <= sessions.len());
    }
}
