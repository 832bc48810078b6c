//! The smux v1 session ([`Mux`]): a client and a server back to back through a wire that splits
//! bytes anywhere, the Go-produced session in tests/data/smux.json, keep-alive in virtual time,
//! refusals and bounds, and arbitrary input.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;
use ssm_session::smux::{
    Command, Frame, Mux, MuxConfig, MuxError, MuxEvent, SmuxError, StreamDecoder, StreamId,
};

fn wire(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.to_bytes().unwrap()).collect()
}

fn transmitted(mux: &mut Mux) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = mux.poll_transmit() {
        out.extend_from_slice(&bytes);
    }
    out
}

fn frames_of(bytes: &[u8]) -> Vec<Frame> {
    let mut decoder = StreamDecoder::new();
    decoder.push(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        frames.push(frame);
    }
    assert_eq!(decoder.buffered(), 0, "transmits end on a frame boundary");
    frames
}

fn events(mux: &mut Mux) -> Vec<MuxEvent> {
    std::iter::from_fn(|| mux.poll_event()).collect()
}

/// Deterministic choices inside one run (split points, who polls), seeded by proptest.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// One end's application in the back-to-back test.
#[derive(Default)]
struct App {
    /// Bytes of each stream's outgoing data already taken by `write`.
    written: BTreeMap<StreamId, usize>,
    received: BTreeMap<StreamId, Vec<u8>>,
    opened: BTreeSet<StreamId>,
    closed_by_peer: BTreeSet<StreamId>,
    closed_by_me: BTreeSet<StreamId>,
}

impl App {
    fn take_events(&mut self, mux: &mut Mux, expect_opened: bool) {
        while let Some(event) = mux.poll_event() {
            match event {
                MuxEvent::Opened(id) => {
                    assert!(expect_opened, "only the server sees Opened");
                    assert!(self.opened.insert(id), "stream {id} opened twice");
                }
                MuxEvent::Data(id, data) => {
                    assert!(!data.is_empty());
                    assert!(!self.closed_by_me.contains(&id), "data after close({id})");
                    assert!(
                        !self.closed_by_peer.contains(&id),
                        "data after Closed({id})"
                    );
                    self.received
                        .entry(id)
                        .or_default()
                        .extend_from_slice(&data);
                }
                MuxEvent::Closed(id) => {
                    assert!(!self.closed_by_me.contains(&id), "Closed after close({id})");
                    assert!(self.closed_by_peer.insert(id), "stream {id} closed twice");
                }
                MuxEvent::Dead => panic!("a connected pair died"),
            }
        }
    }
}

/// Moves a random prefix of `wire` into `to`, in random pieces, while it wants input.
fn deliver(wire: &mut Vec<u8>, to: &mut Mux, rng: &mut Rng, now: Instant) {
    while !wire.is_empty() && to.wants_input() {
        let piece = 1 + rng.below(wire.len().min(700));
        to.handle_input(&wire[..piece], now).unwrap();
        wire.drain(..piece);
        if rng.below(4) == 0 {
            break;
        }
    }
}

fn stream_data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..len).map(|_| rng.below(256) as u8).collect()
}

/// Per stream: bytes client → server, bytes server → client, whether the client closes it.
type Plan = Vec<(usize, usize, bool)>;

fn run_pair(plan: &Plan, keep_alive: bool, limits: (usize, usize, usize), seed: u64) {
    let (max_frame_data, max_outgoing, max_receive_buffer) = limits;
    let mut config = MuxConfig::new(keep_alive);
    config.max_frame_data = max_frame_data;
    config.max_outgoing = max_outgoing;
    config.max_receive_buffer = max_receive_buffer;
    let mut now = Instant::now();
    let mut client = Mux::client(config.clone(), now);
    let mut server = Mux::server(config, now);
    let mut rng = Rng(seed | 1);
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let (mut capp, mut sapp) = (App::default(), App::default());
    // Stream ids in plan order, and each stream's data both ways.
    let mut ids: Vec<StreamId> = Vec::new();
    let data: Vec<(Vec<u8>, Vec<u8>)> = plan
        .iter()
        .enumerate()
        .map(|(i, &(up, down, _))| {
            (
                stream_data(seed ^ (2 * i as u64), up),
                stream_data(seed ^ (2 * i as u64 + 1), down),
            )
        })
        .collect();
    let index = |ids: &[StreamId], id: StreamId| ids.iter().position(|&x| x == id).unwrap();

    let mut done = false;
    for _round in 0..20_000 {
        if ids.len() < plan.len() && rng.below(2) == 0 {
            let id = client.open().unwrap();
            assert_eq!(id, 3 + 2 * ids.len() as u32, "client ids are odd from 3");
            ids.push(id);
        }
        // Writes: the client on the streams it opened, the server on those it saw opened;
        // a few passes so that small outgoing limits still move data every round.
        for _pass in 0..1 + rng.below(4) {
            let mut moved = false;
            for (app, mux, is_client) in [
                (&mut capp, &mut client, true),
                (&mut sapp, &mut server, false),
            ] {
                let candidates: Vec<StreamId> = if is_client {
                    ids.clone()
                } else {
                    app.opened.iter().copied().collect()
                };
                for id in candidates {
                    let (up, down) = &data[index(&ids, id)];
                    let source = if is_client { up } else { down };
                    let done = app.written.entry(id).or_default();
                    if *done < source.len() && mux.is_open(id) {
                        let end = *done + 1 + rng.below(source.len() - *done);
                        let taken = mux.write(id, &source[*done..end]);
                        assert!(mux.outgoing_len() <= max_outgoing + 8 * (2 * plan.len() + 2));
                        *done += taken;
                        moved |= taken > 0;
                    }
                }
            }
            to_server.extend(transmitted(&mut client));
            to_client.extend(transmitted(&mut server));
            if !moved {
                break;
            }
        }
        deliver(&mut to_server, &mut server, &mut rng, now);
        deliver(&mut to_client, &mut client, &mut rng, now);
        // Sometimes the applications lag, so that input pauses.
        if rng.below(4) != 0 {
            capp.take_events(&mut client, false);
        }
        if rng.below(4) != 0 {
            sapp.take_events(&mut server, true);
        }

        // Close once everything is written and received; the other side sees Closed.
        for (i, &id) in ids.iter().enumerate() {
            let (up, down) = &data[i];
            let client_closes = plan[i].2;
            let (app, mux, mine, theirs) = if client_closes {
                (&mut capp, &mut client, up, down)
            } else {
                (&mut sapp, &mut server, down, up)
            };
            let ready = app.written.get(&id) == Some(&mine.len())
                && app.received.get(&id).map_or(0, Vec::len) == theirs.len()
                && (client_closes || app.opened.contains(&id));
            if ready && !app.closed_by_me.contains(&id) && rng.below(2) == 0 {
                mux.close(id);
                app.closed_by_me.insert(id);
            }
        }

        now += Duration::from_millis(700);
        for mux in [&mut client, &mut server] {
            if mux.poll_timeout().is_some_and(|at| at <= now) {
                mux.handle_timeout(now);
            }
        }

        let finished = ids.len() == plan.len()
            && client.stream_count() == 0
            && server.stream_count() == 0
            && to_server.is_empty()
            && to_client.is_empty()
            && client.outgoing_len() == 0
            && server.outgoing_len() == 0;
        if finished {
            capp.take_events(&mut client, false);
            sapp.take_events(&mut server, true);
            done = true;
            break;
        }
    }

    assert!(done, "the transfer finished");
    assert_eq!(ids.len(), plan.len());
    assert_eq!(
        sapp.opened,
        ids.iter().copied().collect(),
        "every stream was opened once"
    );
    for (i, &id) in ids.iter().enumerate() {
        let (up, down) = &data[i];
        assert_eq!(
            sapp.received.get(&id).map_or(&[][..], Vec::as_slice),
            &up[..],
            "stream {id} up"
        );
        assert_eq!(
            capp.received.get(&id).map_or(&[][..], Vec::as_slice),
            &down[..],
            "stream {id} down"
        );
        let (closer, other) = if plan[i].2 {
            (&capp, &sapp)
        } else {
            (&sapp, &capp)
        };
        assert!(closer.closed_by_me.contains(&id) && !closer.closed_by_peer.contains(&id));
        assert!(
            other.closed_by_peer.contains(&id),
            "stream {id}: the peer saw FIN"
        );
    }
    assert_eq!((client.stream_count(), server.stream_count()), (0, 0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every stream's bytes arrive intact and in order both ways, whatever the split points,
    /// frame size and buffer limits; Opened and Closed match the opens and closes.
    #[test]
    fn back_to_back_pair_delivers_every_stream(
        plan in prop::collection::vec((0usize..3000, 0usize..3000, any::<bool>()), 1..8),
        keep_alive in any::<bool>(),
        max_frame_data in 1usize..2000,
        max_outgoing in 64usize..20_000,
        max_receive_buffer in 1usize..20_000,
        seed in any::<u64>(),
    ) {
        run_pair(&plan, keep_alive, (max_frame_data, max_outgoing, max_receive_buffer), seed);
    }

    /// Arbitrary bytes, split anywhere, never panic; the first error kills the mux for good.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..4000),
        cuts in prop::collection::vec(1usize..300, 1..40),
        client in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut mux = if client { Mux::client(MuxConfig::new(true), now) } else { Mux::server(MuxConfig::new(true), now) };
        let mut rest = &bytes[..];
        let mut failed = false;
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*cut).min(rest.len()));
            rest = tail;
            match mux.handle_input(piece, now) {
                Ok(()) => prop_assert!(!failed),
                Err(MuxError::Dead) => prop_assert!(failed),
                Err(MuxError::Protocol(_)) => { prop_assert!(!failed); failed = true; }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
        events(&mut mux);
        transmitted(&mut mux);
    }

    /// Well-formed and malformed frames mixed with application calls on tiny limits: no panic,
    /// the stream table never exceeds its bound, and transmits stay decodable.
    #[test]
    fn hostile_frames_and_app_calls_stay_bounded(
        ops in prop::collection::vec((0u8..10, 0u32..12, 0usize..200), 1..300),
    ) {
        let mut config = MuxConfig::new(true);
        config.max_streams = 3;
        config.max_outgoing = 64;
        config.max_receive_buffer = 100;
        config.max_frame_data = 16;
        let start = Instant::now();
        let mut now = start;
        let mut mux = Mux::server(config, start);
        let mut sent = Vec::new();
        let mut closes = 0;
        for (op, id, len) in ops {
            match op {
                0..=4 => {
                    // SYN, FIN, PSH, NOP; op 4 is UPD (not v1) on id 11 and NOP otherwise.
                    let command = match op {
                        4 if id == 11 => 4,
                        4 => 3,
                        _ => op,
                    };
                    let mut frame = vec![1, command];
                    frame.extend_from_slice(&(len as u16).to_le_bytes());
                    frame.extend_from_slice(&id.to_le_bytes());
                    if command == 2 {
                        frame.extend(std::iter::repeat_n(0xAB, len));
                    }
                    let _ = mux.handle_input(&frame, now);
                }
                5 => { let _ = mux.write(id, &vec![1; len]); }
                6 => {
                    closes += usize::from(mux.is_open(id));
                    mux.close(id);
                }
                7 => {
                    // The application takes one event: data is exactly what a PSH carried.
                    if let Some(MuxEvent::Data(_, data)) = mux.poll_event() {
                        prop_assert!(!data.is_empty() && data.iter().all(|&byte| byte == 0xAB));
                    }
                }
                8 => {
                    sent.extend(transmitted(&mut mux));
                    closes = 0;
                }
                _ => {
                    now += Duration::from_secs(len as u64 / 10);
                    mux.handle_timeout(now);
                }
            }
            prop_assert!(mux.stream_count() <= 3);
            // Beyond the limit: one refusal or NOP, and the FINs the application asked for.
            prop_assert!(mux.outgoing_len() <= 64 + 8 + 8 * closes);
        }
        sent.extend(transmitted(&mut mux));
        for frame in frames_of(&sent) {
            prop_assert!(frame.data.len() <= 16);
        }
    }
}

#[test]
fn pair_with_large_streams_and_default_config() {
    run_pair(
        &vec![
            (200_000, 300_000, true),
            (0, 70_000, false),
            (65_536, 0, true),
        ],
        true,
        (32768, 1 << 20, 4 << 20),
        42,
    );
}

// --- Golden vectors: the session produced by the Go xtaci/smux client and server.

fn session_case() -> Value {
    let path = format!("{}/tests/data/smux.json", env!("CARGO_MANIFEST_DIR"));
    let root: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    root["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|case| case["kind"] == "session")
        .expect("smux.json has a session case")
        .clone()
}

fn hex_field(value: &Value, key: &str) -> Vec<u8> {
    hex::decode(value[key].as_str().unwrap()).unwrap()
}

/// The stream an operation such as "stream 5 Write(300 bytes)" acts on.
fn op_stream(action: &str) -> StreamId {
    let rest = action.strip_prefix("stream ").unwrap();
    rest.split(' ').next().unwrap().parse().unwrap()
}

/// Our client and server replay the Go operations: every client operation produces the Go
/// client's bytes exactly, and so does every server operation except the FIN the Go server
/// echoes after reading EOF — ours forgets a stream at the peer's FIN, as the Go peer does
/// when it sends one, so there is nothing to echo. The Go echo is harmless to our client.
#[test]
fn replays_the_go_session_byte_for_byte() {
    let case = session_case();
    let now = Instant::now();
    let mut client = Mux::client(MuxConfig::new(false), now);
    let mut server = Mux::server(MuxConfig::new(false), now);
    let mut server_events = Vec::new();
    let mut client_events = Vec::new();
    for op in case["operations"].as_array().unwrap() {
        let action = op["action"].as_str().unwrap();
        let go_bytes = hex_field(op, "bytes");
        let is_client = op["actor"] == "client";
        let mux = if is_client { &mut client } else { &mut server };
        if let Some(id) = action.strip_prefix("OpenStream() -> stream ") {
            assert_eq!(mux.open().unwrap(), id.parse::<StreamId>().unwrap());
        } else if action.contains("Write(") {
            let data = &go_bytes[8..];
            assert_eq!(mux.write(op_stream(action), data), data.len());
        } else if action.contains("Close()") {
            mux.close(op_stream(action));
        } else {
            panic!("unknown operation {action}");
        }
        let ours = transmitted(mux);
        if is_client {
            assert_eq!(ours, go_bytes, "{action}");
            server.handle_input(&ours, now).unwrap();
            server_events.extend(events(&mut server));
        } else {
            if action.contains("after reading EOF") {
                assert!(ours.is_empty(), "{action}: the stream is already gone");
            } else {
                assert_eq!(ours, go_bytes, "{action}");
            }
            // Feed the Go server's bytes, echo FIN included.
            client.handle_input(&go_bytes, now).unwrap();
            client_events.extend(events(&mut client));
        }
    }
    assert_eq!(
        server_events,
        vec![
            MuxEvent::Opened(3),
            MuxEvent::Opened(5),
            MuxEvent::Data(3, Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n")),
            MuxEvent::Data(
                5,
                Bytes::from((0..300).map(|i| i as u8).collect::<Vec<u8>>())
            ),
            MuxEvent::Closed(3),
            MuxEvent::Closed(5),
        ]
    );
    assert_eq!(
        client_events,
        vec![
            MuxEvent::Data(3, Bytes::from_static(b"HTTP/1.0 200 OK\r\n\r\n")),
            MuxEvent::Data(5, Bytes::from_static(b"pong")),
        ],
        "no Closed for streams the client closed itself"
    );
    assert_eq!((client.stream_count(), server.stream_count()), (0, 0));
}

/// The whole Go client stream, cut into pieces of every size, gives the same server events.
#[test]
fn go_client_stream_decodes_into_the_same_events_in_any_pieces() {
    let stream = hex_field(&session_case(), "client_to_server");
    let now = Instant::now();
    let mut whole = Mux::server(MuxConfig::new(false), now);
    whole.handle_input(&stream, now).unwrap();
    let expected = events(&mut whole);
    assert_eq!(expected.len(), 6);
    for piece in 1..=stream.len() {
        let mut server = Mux::server(MuxConfig::new(false), now);
        let mut got = Vec::new();
        for chunk in stream.chunks(piece) {
            server.handle_input(chunk, now).unwrap();
            got.extend(events(&mut server));
        }
        // Data may arrive in several events when the pieces cut a frame: compare per stream.
        let join = |events: &[MuxEvent]| {
            let mut order = Vec::new();
            let mut data: BTreeMap<StreamId, Vec<u8>> = BTreeMap::new();
            for event in events {
                match event {
                    MuxEvent::Data(id, bytes) => {
                        data.entry(*id).or_default().extend_from_slice(bytes)
                    }
                    other => order.push(other.clone()),
                }
            }
            (order, data)
        };
        assert_eq!(join(&got), join(&expected), "{piece}-byte pieces");
    }
}

// --- Keep-alive, in virtual time.

const NOP: [u8; 8] = [1, 3, 0, 0, 0, 0, 0, 0];

#[test]
fn keep_alive_sends_a_nop_every_ten_seconds() {
    let start = Instant::now();
    let mut mux = Mux::server(MuxConfig::new(true), start);
    let mut pings = Vec::new();
    for second in 1..=100u64 {
        let now = start + Duration::from_secs(second);
        if second % 5 == 0 {
            mux.handle_input(&NOP, now).unwrap(); // the peer's keep-alive
        }
        if mux.poll_timeout().is_some_and(|at| at <= now) {
            mux.handle_timeout(now);
        }
        let sent = transmitted(&mut mux);
        if !sent.is_empty() {
            assert_eq!(sent, NOP);
            pings.push(second);
        }
    }
    assert_eq!(pings, (1..=10).map(|i| i * 10).collect::<Vec<_>>());
    assert_eq!(mux.poll_event(), None, "a peer that pings stays alive");
}

#[test]
fn keep_alive_declares_the_mux_dead_after_thirty_silent_seconds() {
    let start = Instant::now();
    let mut mux = Mux::client(MuxConfig::new(true), start);
    let id = mux.open().unwrap();
    mux.handle_input(&NOP, start + Duration::from_secs(5))
        .unwrap();
    assert_eq!(mux.poll_timeout(), Some(start + Duration::from_secs(10)));
    for second in [10, 20, 30] {
        mux.handle_timeout(start + Duration::from_secs(second));
    }
    assert_eq!(mux.poll_timeout(), Some(start + Duration::from_secs(35)));
    mux.handle_timeout(start + Duration::from_millis(34_999));
    assert_eq!(mux.poll_event(), None);
    mux.handle_timeout(start + Duration::from_secs(35));
    assert_eq!(mux.poll_event(), Some(MuxEvent::Dead));
    assert_eq!(mux.poll_timeout(), None);
    assert_eq!(mux.poll_transmit(), None, "nothing more is sent once dead");
    assert_eq!(mux.handle_input(&NOP, start), Err(MuxError::Dead));
    assert_eq!(mux.open(), Err(MuxError::Dead));
    assert_eq!(mux.write(id, b"late"), 0);
}

#[test]
fn without_keep_alive_nothing_is_sent_and_nothing_dies() {
    let start = Instant::now();
    let mut mux = Mux::server(MuxConfig::new(false), start);
    assert_eq!(mux.poll_timeout(), None);
    mux.handle_timeout(start + Duration::from_secs(3600));
    assert_eq!((mux.poll_transmit(), mux.poll_event()), (None, None));
    mux.handle_input(&NOP, start + Duration::from_secs(3601))
        .unwrap();
}

#[test]
fn paused_input_does_not_count_as_silence() {
    let start = Instant::now();
    let mut config = MuxConfig::new(true);
    config.max_receive_buffer = 16;
    let mut mux = Mux::server(config, start);
    mux.handle_input(
        &wire(&[
            Frame::syn(3),
            Frame::psh(3, Bytes::from_static(b"12345678")),
        ]),
        start,
    )
    .unwrap();
    assert!(
        !mux.wants_input(),
        "8 + 16 bytes wait against a 16-byte budget"
    );
    mux.handle_timeout(start + Duration::from_secs(30));
    assert_eq!(mux.poll_timeout(), Some(start + Duration::from_secs(40)));
    mux.handle_timeout(start + Duration::from_secs(45));
    assert!(
        events(&mut mux)
            .iter()
            .all(|event| *event != MuxEvent::Dead),
        "we stopped reading, not the peer"
    );
    assert!(mux.wants_input());
    // The pause ended at an unknown time between two checks: one more full period of grace.
    mux.handle_timeout(start + Duration::from_secs(60));
    assert_eq!(mux.poll_event(), None);
    mux.handle_timeout(start + Duration::from_secs(90));
    assert_eq!(
        mux.poll_event(),
        Some(MuxEvent::Dead),
        "silent for 30 s after the grace"
    );
}

// --- Refusals and bounds.

#[test]
fn bad_version_and_unknown_command_kill_the_mux() {
    let now = Instant::now();
    let mut mux = Mux::server(MuxConfig::new(false), now);
    let mut bytes = wire(&[Frame::syn(3), Frame::psh(3, Bytes::from_static(b"ok"))]);
    bytes.extend_from_slice(&[2, 0, 0, 0, 5, 0, 0, 0]);
    assert_eq!(
        mux.handle_input(&bytes, now),
        Err(MuxError::Protocol(SmuxError::UnsupportedVersion {
            version: 2
        }))
    );
    assert_eq!(
        events(&mut mux),
        vec![MuxEvent::Opened(3), MuxEvent::Data(3, "ok".into())],
        "what came before the bad frame is delivered"
    );
    assert_eq!(mux.handle_input(&NOP, now), Err(MuxError::Dead));
    assert_eq!(mux.stream_count(), 0);

    // v2's UPD (4) is not a v1 command.
    let mut mux = Mux::client(MuxConfig::new(false), now);
    assert_eq!(
        mux.handle_input(&[1, 4, 0, 0, 3, 0, 0, 0], now),
        Err(MuxError::Protocol(SmuxError::UnknownCommand { command: 4 }))
    );
    assert_eq!(mux.open(), Err(MuxError::Dead));
}

#[test]
fn streams_beyond_the_limit_are_refused_with_fin() {
    let now = Instant::now();
    let mut config = MuxConfig::new(false);
    config.max_streams = 2;
    let mut server = Mux::server(config, now);
    let input = [3, 5, 7].map(Frame::syn).to_vec();
    server.handle_input(&wire(&input), now).unwrap();
    assert_eq!(frames_of(&transmitted(&mut server)), vec![Frame::fin(7)]);
    server
        .handle_input(&wire(&[Frame::psh(7, Bytes::from_static(b"refused"))]), now)
        .unwrap();
    assert_eq!(
        events(&mut server),
        vec![MuxEvent::Opened(3), MuxEvent::Opened(5)]
    );
    server.close(3);
    server.handle_input(&wire(&[Frame::syn(9)]), now).unwrap();
    assert_eq!(
        events(&mut server),
        vec![MuxEvent::Opened(9)],
        "room again after a close"
    );
}

#[test]
fn a_syn_flood_does_not_grow_the_outgoing_queue() {
    let now = Instant::now();
    let mut config = MuxConfig::new(false);
    config.max_streams = 0;
    config.max_outgoing = 80;
    let mut server = Mux::server(config, now);
    let flood: Vec<Frame> = (0..1000).map(|i| Frame::syn(2 * i + 3)).collect();
    server.handle_input(&wire(&flood), now).unwrap();
    assert_eq!(
        server.outgoing_len(),
        80,
        "ten refusals, then SYNs are only ignored"
    );
    assert_eq!(server.poll_event(), None);
}

#[test]
fn xtaci_leniency_unknown_ids_and_repeated_syn() {
    let now = Instant::now();
    let mut server = Mux::server(MuxConfig::new(false), now);
    let input = [
        Frame::psh(3, Bytes::from_static(b"before open")),
        Frame::fin(3),
        Frame::syn(3),
        Frame::syn(3),
        Frame::psh(3, Bytes::new()),
        Frame::psh(3, Bytes::from_static(b"x")),
        Frame::psh(99, Bytes::from_static(b"nobody")),
        Frame::fin(99),
        Frame::nop(),
    ];
    server.handle_input(&wire(&input), now).unwrap();
    assert_eq!(
        events(&mut server),
        vec![MuxEvent::Opened(3), MuxEvent::Data(3, "x".into())]
    );
    assert_eq!(server.poll_transmit(), None, "nothing to answer");

    // The client accepts no streams.
    let mut client = Mux::client(MuxConfig::new(false), now);
    client.handle_input(&wire(&[Frame::syn(2)]), now).unwrap();
    assert_eq!(frames_of(&transmitted(&mut client)), vec![Frame::fin(2)]);
    assert_eq!(client.poll_event(), None);
    assert_eq!(server.open(), Err(MuxError::NotClient));
}

#[test]
fn client_open_is_bounded() {
    let now = Instant::now();
    let mut config = MuxConfig::new(false);
    config.max_streams = 2;
    let mut client = Mux::client(config, now);
    assert_eq!((client.open(), client.open()), (Ok(3), Ok(5)));
    assert_eq!(client.open(), Err(MuxError::TooManyStreams(2)));
    client.handle_input(&wire(&[Frame::fin(3)]), now).unwrap();
    assert_eq!(client.open(), Ok(7), "ids never repeat");
}

#[test]
fn wants_input_follows_what_the_application_has_taken() {
    let now = Instant::now();
    let mut config = MuxConfig::new(false);
    config.max_receive_buffer = 100;
    let mut server = Mux::server(config, now);
    server
        .handle_input(
            &wire(&[Frame::syn(3), Frame::psh(3, vec![0; 80].into())]),
            now,
        )
        .unwrap();
    assert!(server.wants_input(), "96 bytes wait");
    server.handle_input(&wire(&[Frame::nop()]), now).unwrap();
    assert!(server.wants_input(), "NOP is not delivered");
    server.handle_input(&wire(&[Frame::fin(3)]), now).unwrap();
    assert!(!server.wants_input(), "104 bytes wait");
    assert_eq!(server.poll_event(), Some(MuxEvent::Opened(3)));
    assert!(server.wants_input());
}

#[test]
fn writes_stop_at_the_outgoing_limit_and_resume() {
    let now = Instant::now();
    let mut config = MuxConfig::new(false);
    config.max_outgoing = 1000;
    config.max_frame_data = 300;
    let mut client = Mux::client(config, now);
    let id = client.open().unwrap();
    assert_eq!(client.write(id, &[]), 0);
    let data: Vec<u8> = (0..5000).map(|i| i as u8).collect();
    let first = client.write(id, &data);
    assert!(client.outgoing_len() <= 1000);
    assert_eq!(
        first,
        1000 - 8 - 4 * 8,
        "SYN and four PSH headers fit with the data"
    );
    let mut sent = transmitted(&mut client);
    let second = client.write(id, &data[first..]);
    assert!(second > 0, "room again once transmitted");
    sent.extend(transmitted(&mut client));
    let frames = frames_of(&sent);
    assert_eq!(frames[0], Frame::syn(id));
    assert!(
        frames[1..]
            .iter()
            .all(|f| f.command == Command::Psh && f.data.len() <= 300)
    );
    let carried: Vec<u8> = frames[1..].iter().flat_map(|f| f.data.to_vec()).collect();
    assert_eq!(carried, data[..first + second]);
}

#[test]
fn transmits_coalesce_small_frames_and_cap_large_ones() {
    let now = Instant::now();
    let mut client = Mux::client(MuxConfig::new(false), now);
    let ids: Vec<StreamId> = (0..10).map(|_| client.open().unwrap()).collect();
    let first = client.poll_transmit().unwrap();
    assert_eq!(first.len(), 80, "ten SYNs in one buffer");
    assert_eq!(client.poll_transmit(), None);
    assert_eq!(client.write(ids[0], &vec![7; 200_000]), 200_000);
    let sizes: Vec<usize> = std::iter::from_fn(|| client.poll_transmit())
        .map(|b| b.len())
        .collect();
    assert!(sizes.iter().all(|&size| size <= 64 * 1024));
    assert_eq!(
        sizes.iter().sum::<usize>(),
        200_000 + 7 * 8,
        "seven 32 KiB frames"
    );
}

#[test]
fn close_ends_a_stream_and_drops_what_was_not_yet_taken() {
    let now = Instant::now();
    let mut server = Mux::server(MuxConfig::new(false), now);
    let input = [
        Frame::syn(3),
        Frame::syn(5),
        Frame::psh(3, "a".into()),
        Frame::psh(5, "b".into()),
        Frame::fin(5),
    ];
    server.handle_input(&wire(&input), now).unwrap();
    assert!(!server.is_open(5), "the peer's FIN closes at once");
    assert_eq!(server.write(5, b"late"), 0);
    server.close(3);
    server.close(5);
    assert_eq!(
        frames_of(&transmitted(&mut server)),
        vec![Frame::fin(3)],
        "no FIN for a stream the peer closed"
    );
    assert_eq!(
        events(&mut server),
        Vec::<MuxEvent>::new(),
        "closing drops the queued events"
    );
    assert!(server.wants_input());
    server
        .handle_input(&wire(&[Frame::psh(3, "after".into()), Frame::fin(3)]), now)
        .unwrap();
    assert_eq!(server.poll_event(), None, "the stream is forgotten");
}
