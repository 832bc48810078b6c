//! Moves `--mb` megabytes (10^6 bytes) of seeded random bytes each way through one session on
//! loopback (relay, agent and client in this process) and prints one JSON line. The exit status
//! is 0 only if both streams arrived intact.
//!
//! ```sh
//! cargo run --release --example throughput -- --mb 200 [--tls] [--encrypt] [--compat] \
//!     [--kill-after-mb 50 [--kill client|agent|relay]]
//! ```

#[path = "../tests/support/loopback.rs"]
mod loopback;

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use loopback::{Loopback, Transfer};
use ssm_session::session::Role;
use tokio::sync::oneshot;

#[derive(Parser)]
#[command(about = "Session throughput on loopback, with the relay in the path")]
struct Args {
    /// Megabytes (10^6 bytes) to send each way.
    #[arg(long, default_value_t = 200)]
    mb: u64,
    /// Serve and dial wss:// with a generated certificate.
    #[arg(long)]
    tls: bool,
    /// KMS-encrypt the session (an encrypted shell session; otherwise a port session).
    #[arg(long)]
    encrypt: bool,
    /// Keep the reference wire: 1 KiB messages, one acknowledgement each.
    #[arg(long)]
    compat: bool,
    /// Drop a connection once the client has received this many megabytes.
    #[arg(long)]
    kill_after_mb: Option<u64>,
    /// Whose connection to drop.
    #[arg(long, value_enum, default_value_t = Kill::Client)]
    kill: Kill,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kill {
    Client,
    Agent,
    Relay,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(&args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("{}", serde_json::json!({"ok": false, "error": error}));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<serde_json::Value, String> {
    let mut lo = Loopback::start(args.tls).await;
    let (client_config, agent_config) = lo.configs(args.encrypt, args.compat);
    let (client, agent) = lo
        .connect_pair(client_config, agent_config)
        .await
        .map_err(|e| e.to_string())?;
    let transfer = Transfer {
        bytes: args.mb * 1_000_000,
        chunk: 64 * 1024,
        sha256: false,
    };
    let counters = [client.counters(), agent.counters()];
    let (fire, fired) = oneshot::channel();
    let kill = args.kill_after_mb.map(|mb| (mb * 1_000_000, fire));
    let started = Instant::now();
    let exchange = tokio::spawn(loopback::exchange(client, agent, transfer, kill));
    if fired.await.is_ok() {
        match args.kill {
            Kill::Client => {
                lo.relay
                    .as_ref()
                    .expect("relay")
                    .disconnect(&lo.session_id, Role::Client);
            }
            Kill::Agent => {
                lo.relay
                    .as_ref()
                    .expect("relay")
                    .disconnect(&lo.session_id, Role::Agent);
            }
            Kill::Relay => lo.restart_relay().await,
        }
    }
    let (up, down) = exchange.await.map_err(|e| e.to_string())??;
    let seconds = started.elapsed().as_secs_f64();
    for (name, direction) in [("client to agent", up), ("agent to client", down)] {
        if direction.received != transfer.bytes {
            return Err(format!(
                "{name}: {} of {} bytes",
                direction.received, transfer.bytes
            ));
        }
    }
    Ok(serde_json::json!({
        "ok": true,
        "mb_each_way": args.mb,
        "mb_per_s": ((args.mb as f64 / seconds) * 10.0).round() / 10.0,
        "reconnects": counters.iter().map(|c| c.reconnects()).sum::<u64>(),
        "retransmits": counters.iter().map(|c| c.retransmits()).sum::<u64>(),
        "seconds": (seconds * 1000.0).round() / 1000.0,
    }))
}
