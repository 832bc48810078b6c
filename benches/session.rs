//! Session engine costs on an in-memory pair (no network, no emulator): one direction of bulk
//! data from the agent to the client, acknowledgements flowing back, and the memory an idle
//! session holds.
//!
//! `cargo bench --bench session`; figures are recorded in BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ssm_session::SeededEntropy;
use ssm_session::kms::LocalKms;
use ssm_session::session::{AgentConfig, ClientConfig, Event, KeyRequest, Session, SessionType};

/// Counts live heap bytes, to measure what a session holds.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const WALL: u64 = 1_700_000_000_000;

/// A client and agent after the handshake, with every output drained.
fn connected(extensions: bool, encrypt: bool) -> (Session, Session, Instant) {
    let now = Instant::now();
    let mut client_config = ClientConfig::new("s-bench", "i-bench");
    let mut agent_config = AgentConfig::new("s-bench", "i-bench", SessionType::Port);
    client_config.extensions = extensions;
    agent_config.extensions = extensions;
    if encrypt {
        agent_config.session_type = SessionType::StandardStream;
        agent_config.kms_key_id = Some("alias/bench".into());
    }
    let mut client = Session::client(client_config, now, WALL, Box::new(SeededEntropy::new(1)));
    let mut agent = Session::agent(agent_config, now, WALL, Box::new(SeededEntropy::new(2)));
    let kms = LocalKms::from_master_key([3; 32]);
    for _ in 0..20 {
        while let Some(m) = agent.poll_transmit() {
            client.handle_message(now, WALL, m);
        }
        while let Some(m) = client.poll_transmit() {
            agent.handle_message(now, WALL, m);
        }
        while let Some(event) = client.poll_event() {
            if let Event::KeyRequest(KeyRequest::GenerateDataKey { key_id, context }) = event {
                client.provide_data_key(
                    now,
                    kms.generate_data_key_with(&key_id, &context, [4; 64], [5; 12]),
                );
            }
        }
        while let Some(event) = agent.poll_event() {
            if let Event::KeyRequest(KeyRequest::Decrypt {
                key_id,
                ciphertext_blob,
                context,
            }) = event
            {
                agent.provide_plaintext_key(
                    now,
                    kms.decrypt_now(&key_id, &ciphertext_blob, &context)
                        .unwrap(),
                );
            }
        }
    }
    (client, agent, now)
}

/// Moves `total` bytes agent → client through the pair; returns the bytes delivered.
fn transfer(
    client: &mut Session,
    agent: &mut Session,
    now: Instant,
    chunk: &[u8],
    total: usize,
) -> usize {
    let (mut sent, mut received) = (0, 0);
    while received < total {
        while sent < total {
            match agent.send(now, &chunk[..chunk.len().min(total - sent)]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        while let Some(m) = agent.poll_transmit() {
            client.handle_message(now, WALL, m);
        }
        client.handle_timeout(now + std::time::Duration::from_millis(3));
        while let Some(event) = client.poll_event() {
            if let Event::Stream { data, .. } = event {
                received += data.len();
            }
        }
        while let Some(m) = client.poll_transmit() {
            agent.handle_message(now, WALL, m);
        }
        while agent.poll_event().is_some() {}
    }
    received
}

fn throughput(c: &mut Criterion) {
    const TOTAL: usize = 8 << 20;
    let mut group = c.benchmark_group("session_transfer");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);
    for (name, extensions, encrypt) in [
        ("extensions_encrypted", true, true),
        ("extensions_plain", true, false),
        ("compat_1KiB_plain", false, false),
        ("compat_1KiB_encrypted", false, true),
    ] {
        let chunk = vec![0x5a; 64 * 1024];
        group.bench_function(name, |b| {
            b.iter_batched(
                || connected(extensions, encrypt),
                |(mut client, mut agent, now)| {
                    black_box(transfer(&mut client, &mut agent, now, &chunk, TOTAL))
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn idle_memory(c: &mut Criterion) {
    for (name, extensions, encrypt) in [
        ("compat", false, false),
        ("extensions_encrypted", true, true),
    ] {
        let before = LIVE.load(Ordering::Relaxed);
        let pair = connected(extensions, encrypt);
        let held = (LIVE.load(Ordering::Relaxed) - before) / 2 + std::mem::size_of::<Session>();
        println!("idle_session_bytes/{name}: {held} bytes per session (heap + struct)");
        drop(pair);
    }
    c.bench_function("idle_session_create", |b| {
        b.iter(|| black_box(connected(false, false)))
    });
}

criterion_group!(benches, throughput, idle_memory);
criterion_main!(benches);
