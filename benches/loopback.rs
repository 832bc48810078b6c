//! One session over real loopback sockets with the relay in the path (client ⇄ relay ⇄ agent,
//! all in this process, a two-thread tokio runtime): bytes each way per second, both directions
//! at once. Each sample opens a fresh session; only the transfer is timed.
//!
//! `cargo bench --bench loopback`; figures are recorded in BENCHMARKS.md.

#[path = "../tests/support/loopback.rs"]
mod loopback;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loopback::{Loopback, Transfer};

/// Bytes sent each way per sample.
const BYTES: u64 = 32 << 20;

/// (name, TLS, encrypted, reference wire)
const MODES: [(&str, bool, bool, bool); 3] = [
    ("extensions_tls_encrypted", true, true, false),
    ("compat_plain_port", false, false, true),
    ("compat_tls_encrypted", true, true, true),
];

fn transfer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("loopback_each_way");
    group.throughput(Throughput::Bytes(BYTES));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (name, tls, encrypt, compat) in MODES {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        total += one_transfer(tls, encrypt, compat).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

async fn one_transfer(tls: bool, encrypt: bool, compat: bool) -> Duration {
    let lo = Loopback::start(tls).await;
    let (client_config, agent_config) = lo.configs(encrypt, compat);
    let (client, agent) = lo
        .connect_pair(client_config, agent_config)
        .await
        .expect("connect");
    let transfer = Transfer {
        bytes: BYTES,
        chunk: 64 * 1024,
        sha256: false,
    };
    let started = Instant::now();
    loopback::exchange(client, agent, transfer, None)
        .await
        .expect("intact");
    started.elapsed()
}

criterion_group!(benches, transfer);
criterion_main!(benches);
