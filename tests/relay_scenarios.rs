//! The relay between two real sessions, in virtual time (`sim::Pair`): pause while a side is
//! away, pause and start around the soft limit with a slow reader, reconnects mid-transfer
//! with the relay's queue surviving, the hard limit, the end of a session, abandoned sessions,
//! and exact delivery under random drop schedules.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ssm_session::MessageType;
use ssm_session::fuzzing;
use ssm_session::relay::{self, Backlog};
use ssm_session::session::{AgentConfig, ClientConfig, CloseReason, SessionType};
use ssm_session::sim::{LinkConfig, Network, Pair, Side};

const DELAY: Duration = Duration::from_millis(10);

fn pair(network: Network, seed: u64) -> Pair {
    let mut client = ClientConfig::new("s-relay", "i-relay");
    let mut agent = AgentConfig::new("s-relay", "i-relay", SessionType::Port);
    // 1 KiB frames: the client's window (512 messages) is then larger than the soft limits
    // used here, but not by much.
    client.extensions = false;
    agent.extensions = false;
    Pair::with_network(client, agent, network, seed)
}

fn network() -> Network {
    Network::new(LinkConfig {
        delay: DELAY,
        ..LinkConfig::default()
    })
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn toward_agent(pair: &Pair) -> Backlog {
    pair.relay().backlog(pair.session_id(), Side::Agent.role())
}

fn frames(pair: &Pair, side: Side, kind: MessageType) -> Vec<Instant> {
    pair.relay_frames
        .iter()
        .filter(|(_, s, t)| *s == side && *t == kind)
        .map(|(at, _, _)| *at)
        .collect()
}

fn run_for(pair: &mut Pair, duration: Duration) {
    let until = pair.now + duration;
    pair.run_until(|p| p.now >= until, 1_000_000);
}

fn finish(pair: &mut Pair) {
    let (a, c) = (pair.client_source.len(), pair.agent_source.len());
    let done = pair.run_until(
        |p| p.agent_received.len() >= a && p.client_received.len() >= c,
        5_000_000,
    );
    assert!(done, "transfer stalled: {:?}", pair.events);
    assert!(!pair.closed(), "{:?}", pair.events);
    assert!(
        pair.agent_received == pair.client_source,
        "client → agent stream differs"
    );
    assert!(
        pair.client_received == pair.agent_source,
        "agent → client stream differs"
    );
}

#[test]
fn pause_while_the_agent_is_away_then_start_when_it_is_back() {
    let mut pair = pair(network(), 1);
    assert!(pair.run_until(|p| p.handshake_done(), 100_000));
    assert!(frames(&pair, Side::Client, MessageType::PausePublication).is_empty());
    // More than the client's window, so it is still sending when the agent leaves.
    pair.client_source = bytes(3_000_000, 1);
    assert!(pair.run_until(|p| p.agent_received.len() > 100_000, 1_000_000));

    let dropped = pair.now;
    let back = dropped + Duration::from_secs(2);
    pair.disconnect(Side::Agent, back - dropped);
    // The queue toward the agent after each instant of its absence.
    let mut away = Vec::new();
    pair.run_until(
        |p| {
            if !p.is_connected(Side::Agent) {
                away.push((p.now, toward_agent(p)));
            }
            p.is_connected(Side::Agent)
        },
        1_000_000,
    );
    let pauses = frames(&pair, Side::Client, MessageType::PausePublication);
    assert_eq!(pauses, [dropped], "paused as soon as the agent left");
    // The client honours the pause: once what was in flight has arrived, nothing new (no
    // retransmission either) reaches the relay until the agent is back.
    let settled: Vec<_> = away
        .iter()
        .filter(|(at, _)| *at > dropped + 2 * DELAY)
        .map(|(_, backlog)| *backlog)
        .collect();
    assert!(!settled.is_empty());
    assert!(settled.iter().all(|b| *b == settled[0]), "{settled:?}");
    run_for(&mut pair, DELAY);
    let starts = frames(&pair, Side::Client, MessageType::StartPublication);
    assert_eq!(starts, [back], "started on the agent's return");
    assert!(frames(&pair, Side::Agent, MessageType::PausePublication).is_empty());
    finish(&mut pair);
}

#[test]
fn pause_at_the_soft_limit_and_start_at_half_of_it_with_a_slow_reader() {
    let mut network = network();
    network.relay.soft_limit = 64 << 10;
    network.agent_read_rate = Some(400_000);
    let soft = network.relay.soft_limit;
    let mut pair = pair(network, 2);
    assert!(pair.run_until(|p| p.handshake_done(), 100_000));
    pair.client_source = bytes(1_500_000, 2);
    // The backlog toward the agent after each instant of the run.
    let mut samples: Vec<(Instant, usize)> = Vec::new();
    let (a, mut last) = (pair.client_source.len(), pair.now);
    // Until the queue is empty: retransmissions wait in it after the last byte arrived.
    pair.run_until(
        |p| {
            samples.push((last, toward_agent(p).bytes));
            last = p.now;
            p.agent_received.len() >= a && toward_agent(p).bytes == 0
        },
        5_000_000,
    );
    assert_eq!(pair.agent_received, pair.client_source);
    let at = |instant: Instant| {
        samples
            .iter()
            .filter(|(t, _)| *t == instant)
            .map(|(_, bytes)| *bytes)
            .collect::<Vec<_>>()
    };
    let pauses = frames(&pair, Side::Client, MessageType::PausePublication);
    let starts = frames(&pair, Side::Client, MessageType::StartPublication);
    assert!(
        !pauses.is_empty() && !starts.is_empty(),
        "{pauses:?} {starts:?}"
    );
    // One 1 KiB frame of slack: the slow reader may take one in the same instant.
    let frame = 2 << 10;
    for pause in &pauses {
        let backlog = at(*pause);
        assert!(
            backlog.iter().any(|b| *b + frame > soft),
            "paused at {backlog:?}"
        );
    }
    for start in &starts {
        let backlog = at(*start);
        assert!(
            backlog.iter().any(|b| *b <= soft / 2),
            "started at {backlog:?}"
        );
    }
    let first_over = samples.iter().find(|(_, b)| *b > soft).map(|(t, _)| *t);
    assert!(first_over.is_some_and(|t| t >= pauses[0]), "paused late");
    // Alternating, pause first.
    let mut all: Vec<_> = pauses.iter().map(|t| (*t, true)).collect();
    all.extend(starts.iter().map(|t| (*t, false)));
    all.sort();
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (_, pause))| *pause == (i % 2 == 0)),
        "{all:?}"
    );
}

#[test]
fn an_agent_reconnect_mid_transfer_keeps_the_relay_queue_and_loses_nothing() {
    let mut network = network();
    network.agent_read_rate = Some(300_000);
    let mut pair = pair(network, 3);
    assert!(pair.run_until(|p| p.handshake_done(), 100_000));
    pair.client_source = bytes(600_000, 3);
    pair.agent_source = bytes(300_000, 4);
    assert!(pair.run_until(
        |p| p.agent_received.len() > 200_000 && toward_agent(p).messages > 20,
        1_000_000
    ));
    let queued = toward_agent(&pair);
    pair.disconnect(Side::Agent, Duration::from_millis(500));
    assert!(!pair.is_connected(Side::Agent));
    assert_eq!(
        toward_agent(&pair),
        queued,
        "the queue survives the agent's absence"
    );
    run_for(&mut pair, Duration::from_millis(499));
    assert!(toward_agent(&pair).bytes >= queued.bytes);
    finish(&mut pair);
    let drained = pair.run_until(|p| toward_agent(p) == Backlog::default(), 1_000_000);
    assert!(drained, "what the relay queued is all written in the end");
}

#[test]
fn a_client_reconnect_mid_transfer_loses_nothing() {
    let mut network = network();
    network.client_read_rate = Some(300_000);
    let mut pair = pair(network, 4);
    assert!(pair.run_until(|p| p.handshake_done(), 100_000));
    pair.client_source = bytes(300_000, 5);
    pair.agent_source = bytes(600_000, 6);
    let toward_client = |p: &Pair| p.relay().backlog(p.session_id(), Side::Client.role());
    assert!(pair.run_until(
        |p| p.client_received.len() > 200_000 && toward_client(p).messages > 20,
        1_000_000
    ));
    let queued = toward_client(&pair);
    pair.disconnect(Side::Client, Duration::from_millis(700));
    assert_eq!(toward_client(&pair), queued);
    let pauses = frames(&pair, Side::Agent, MessageType::PausePublication);
    assert!(
        !pauses.is_empty(),
        "the agent is paused while the client is away"
    );
    finish(&mut pair);
    assert!(frames(&pair, Side::Agent, MessageType::StartPublication).len() >= pauses.len());
}

#[test]
fn the_hard_limit_stops_reading_a_peer_that_does_not_pause() {
    let mut network = network();
    network.relay.soft_limit = 16 << 10;
    network.relay.hard_limit = 64 << 10;
    network.agent_read_rate = Some(200_000);
    let hard = network.relay.hard_limit;
    let mut pair = pair(network, 5);
    assert!(pair.run_until(|p| p.handshake_done(), 100_000));
    // The client resumes on every acknowledgement (PROTOCOL.md §7.5), so the pause holds it only
    // briefly and its window is far larger than the hard limit.
    pair.client_source = bytes(800_000, 7);
    let mut largest = 0;
    let a = pair.client_source.len();
    pair.run_until(
        |p| {
            largest = largest.max(toward_agent(p).bytes);
            p.agent_received.len() >= a
        },
        5_000_000,
    );
    assert_eq!(pair.agent_received, pair.client_source);
    assert!(largest >= hard, "the limit was reached: {largest}");
    assert!(
        largest < hard + (2 << 10),
        "one message past it at most: {largest}"
    );
    assert!(!frames(&pair, Side::Client, MessageType::PausePublication).is_empty());
    let readable = pair
        .relay_events
        .iter()
        .filter(|(_, event)| matches!(event, relay::Event::Readable(_)))
        .count();
    assert!(
        readable > 0,
        "the relay stopped reading the client and resumed"
    );
}

#[test]
fn end_sends_channel_closed_to_both_sides_then_closes() {
    let mut pair = pair(network(), 6);
    assert!(pair.run_until(|p| p.handshake_done(), 100_000));
    pair.client_source = bytes(20_000, 8);
    assert!(pair.run_until(|p| p.agent_received.len() == 20_000, 1_000_000));
    pair.end("terminated by the administrator");
    let both = pair.run_until(|p| p.client.is_closed() && p.agent.is_closed(), 100_000);
    assert!(both, "{:?}", pair.events);
    for side in [Side::Client, Side::Agent] {
        assert_eq!(frames(&pair, side, MessageType::ChannelClosed).len(), 1);
        match pair.close_reason(side) {
            Some(CloseReason::ChannelClosed(closed)) => {
                assert_eq!(closed.session_id, "s-relay");
                if side == Side::Client {
                    assert_eq!(closed.output, "terminated by the administrator");
                }
            }
            other => panic!("{side:?} closed with {other:?}"),
        }
        assert!(!pair.is_connected(side));
    }
    let closes = pair
        .relay_events
        .iter()
        .filter(|(_, event)| matches!(event, relay::Event::Close(_)))
        .count();
    assert_eq!(closes, 2);
    assert_eq!(
        pair.relay().session_count(),
        0,
        "an ended session is forgotten"
    );
}

#[test]
fn a_session_without_connections_is_abandoned_and_then_starts_afresh() {
    let mut network = network();
    network.relay.abandon_after = Duration::from_secs(5);
    network.agent_read_rate = Some(100_000);
    let mut pair = pair(network, 7);
    assert!(pair.run_until(|p| p.handshake_done(), 100_000));
    pair.client_source = bytes(200_000, 9);
    assert!(pair.run_until(|p| toward_agent(p).messages > 10, 1_000_000));
    pair.reconnect_delay = Duration::from_secs(8);
    let dropped = pair.now;
    pair.drops.push(dropped);
    run_for(&mut pair, Duration::from_millis(4_900));
    assert_eq!(
        pair.relay().session_count(),
        1,
        "kept while it may come back"
    );
    assert!(toward_agent(&pair).messages > 0);
    run_for(&mut pair, Duration::from_millis(200));
    assert_eq!(pair.relay().session_count(), 0);
    let abandoned: Vec<_> = pair
        .relay_events
        .iter()
        .filter(|(_, event)| matches!(event, relay::Event::Abandoned(_)))
        .collect();
    assert_eq!(
        abandoned,
        [&(
            dropped + Duration::from_secs(5),
            relay::Event::Abandoned("s-relay".into())
        )]
    );
    // Both come back to a fresh session; the sessions' own resume recovers what was lost.
    finish(&mut pair);
}

/// Drops the proptest made before both transfers were complete, over all its cases.
static MID_TRANSFER: AtomicUsize = AtomicUsize::new(0);

#[test]
fn random_schedules_drop_connections_mid_transfer() {
    delivery_is_exact_under_random_drops_and_reconnects();
    assert!(
        MID_TRANSFER.load(Ordering::Relaxed) > 10,
        "the schedules hit the transfers"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn delivery_is_exact_under_random_drops_and_reconnects(
        seed in any::<u64>(),
        loss in 0.0..0.1f64,
        drops in proptest::collection::vec((1..1_000u64, any::<bool>(), 1..1_500u64), 0..5),
        client_rate in proptest::option::of(100_000..2_000_000u64),
        agent_rate in proptest::option::of(100_000..2_000_000u64),
        soft_kib in 8..512usize,
        to_agent in 1..200_000usize,
        to_client in 1..200_000usize,
    ) {
        let mut network = Network::new(LinkConfig { delay: DELAY, loss, ..LinkConfig::default() });
        network.agent_link.loss = loss;
        network.relay.soft_limit = soft_kib << 10;
        network.relay.hard_limit = soft_kib << 12;
        network.client_read_rate = client_rate;
        network.agent_read_rate = agent_rate;
        let mut pair = pair(network, seed);
        pair.client_source = bytes(to_agent, 10);
        pair.agent_source = bytes(to_client, 11);
        let start = pair.now;
        let mut schedule = drops.clone();
        schedule.sort();
        let mut mid_transfer = 0;
        for (at_ms, agent, down_ms) in schedule {
            let at = start + Duration::from_millis(at_ms);
            pair.run_until(|p| p.now >= at, 2_000_000);
            let side = if agent { Side::Agent } else { Side::Client };
            mid_transfer += usize::from(pair.agent_received.len() < to_agent || pair.client_received.len() < to_client);
            pair.disconnect(side, Duration::from_millis(down_ms));
        }
        MID_TRANSFER.fetch_add(mid_transfer, Ordering::Relaxed);
        let (a, c) = (to_agent, to_client);
        pair.run_until(|p| p.agent_received.len() >= a && p.client_received.len() >= c, 5_000_000);
        prop_assert!(!pair.closed(), "{:?}", pair.events);
        prop_assert!(pair.agent_received == pair.client_source, "client → agent stream differs");
        prop_assert!(pair.client_received == pair.agent_source, "agent → client stream differs");
    }

    #[test]
    fn random_relay_operations_never_panic_and_stay_bounded(ops in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        fuzzing::relay_ops(&ops);
    }
}
