//! Runs a client/agent session over an emulated network in virtual time and checks that both
//! byte streams arrive complete, in order and unaltered.
//!
//! ```text
//! cargo run --release --example simulate -- --seed 1 --loss 0.1 --dup 0.02 --reorder 0.1 \
//!     --delay-ms 20 --jitter-ms 10 --drops 2 --bytes 10000000 [--encrypt] [--compat]
//! ```
//!
//! Prints one JSON line; exits 0 only if both streams arrived intact.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ssm_session::SeededEntropy;
use ssm_session::session::{AgentConfig, ClientConfig, SessionType};
use ssm_session::sim::{LinkConfig, Pair};

#[derive(Parser)]
#[command(about = "Simulate a session over a lossy network in virtual time")]
struct Args {
    /// Seed for every random choice (data, network, ids).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability that a websocket message is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that a message is duplicated.
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Probability that a message is delayed behind later ones.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// One-way latency in milliseconds.
    #[arg(long, default_value_t = 10)]
    delay_ms: u64,
    /// Extra random latency, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// How many times the connection drops during the transfer.
    #[arg(long, default_value_t = 0)]
    drops: u32,
    /// Bytes to send each way.
    #[arg(long, default_value_t = 1_000_000)]
    bytes: usize,
    /// Encrypt with a KMS data key (from the embedded LocalKms).
    #[arg(long)]
    encrypt: bool,
    /// Force the reference-compatible wire (no extensions).
    #[arg(long)]
    compat: bool,
}

#[derive(serde::Serialize)]
struct Report {
    ok: bool,
    bytes_each_way: usize,
    virtual_ms: u64,
    messages: u64,
    retransmits: u64,
    wall_ms: u64,
    cpu_mb_per_s: f64,
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SeededEntropy::new(seed);
    let mut data = vec![0; len];
    ssm_session::Entropy::fill(&mut rng, &mut data);
    data
}

fn main() -> ExitCode {
    let args = Args::parse();
    let link = LinkConfig {
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        loss: args.loss,
        duplicate: args.dup,
        reorder: args.reorder,
    };
    let mut client = ClientConfig::new("sim-session", "i-0123456789abcdef0");
    let mut agent = AgentConfig::new(
        "sim-session",
        "i-0123456789abcdef0",
        SessionType::StandardStream,
    );
    client.extensions = !args.compat;
    agent.extensions = !args.compat;
    if args.encrypt {
        agent.kms_key_id = Some("alias/simulate".into());
    }
    let mut pair = Pair::new(client, agent, link, args.seed);
    let to_agent = random_bytes(args.seed ^ 1, args.bytes);
    let to_client = random_bytes(args.seed ^ 2, args.bytes);
    pair.client_source = to_agent.clone();
    pair.agent_source = to_client.clone();

    let started = Instant::now();
    let virtual_start = pair.now;
    let total = 2 * args.bytes;
    let mut drops_done = 0;
    let complete = |pair: &Pair| {
        pair.agent_received.len() >= args.bytes && pair.client_received.len() >= args.bytes
    };
    while !complete(&pair) && !pair.closed() {
        let progress = pair.agent_received.len() + pair.client_received.len();
        if drops_done < args.drops
            && progress * (args.drops as usize + 1) >= total * (drops_done as usize + 1)
        {
            pair.drops.push(pair.now);
            drops_done += 1;
        }
        if !pair.step() {
            break;
        }
    }
    let wall = started.elapsed();
    let intact = pair.agent_received == to_agent && pair.client_received == to_client;
    let stats = [pair.client.stats(), pair.agent.stats()];
    let report = Report {
        ok: intact,
        bytes_each_way: args.bytes,
        virtual_ms: (pair.now - virtual_start).as_millis() as u64,
        messages: pair.messages,
        retransmits: stats.iter().map(|s| s.retransmits).sum(),
        wall_ms: wall.as_millis() as u64,
        cpu_mb_per_s: (total as f64 / wall.as_secs_f64().max(1e-9) / 1e6 * 10.0).round() / 10.0,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("plain data serializes")
    );
    if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
