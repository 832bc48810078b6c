//! The gateway program: `--dev` for a generated configuration on 127.0.0.1, or `--config FILE`.
//! SIGHUP (or editing the file) reloads policies and revokes sessions no longer allowed.
//!
//! ```text
//! cargo run --example gateway -- --dev [--tls]
//! cargo run --example gateway -- --config gateway.json
//! ```

use std::path::PathBuf;

use clap::Parser;
use ssm_session::gateway::{self, Gateway, GatewayConfig};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "Session Manager gateway: API, policies, agents, relay and audit")]
struct Args {
    /// Generate a development configuration and print its credentials as one JSON line.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// Serve https/wss with a generated certificate (with --dev).
    #[arg(long, requires = "dev")]
    tls: bool,
    /// Address to listen on (with --dev).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Where --dev keeps its configuration, audit log and recordings (default: a new
    /// directory under the system temporary directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// A configuration file.
    #[arg(long, required_unless_present = "dev")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    if let Err(error) = run(Args::parse()).await {
        eprintln!("gateway: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (config, config_path, line) = match args.config {
        Some(path) => (GatewayConfig::load(&path)?, path, None),
        None => {
            let dir = match args.state_dir {
                Some(dir) => dir,
                None => std::env::temp_dir().join(format!(
                    "ssm-session-dev-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_millis()
                )),
            };
            let dev = gateway::prepare_dev(&dir, args.listen, args.tls)?;
            (
                dev.config,
                dev.config_path.clone(),
                Some((dev.setup, dev.ca_cert, dev.config_path)),
            )
        }
    };
    let gateway = Gateway::start(config, Some(config_path)).await?;
    if let Some((setup, ca_cert, config_path)) = line {
        let mut json = serde_json::json!({
            "endpoint": gateway.endpoint(),
            "region": setup.region,
            "access_key_id": setup.access_key_id,
            "secret_access_key": setup.secret_access_key,
            "restricted_access_key_id": setup.restricted_access_key_id,
            "restricted_secret_access_key": setup.restricted_secret_access_key,
            "agent_id": setup.agent_id,
            "agent_secret": setup.agent_secret,
            "kms_key_id": setup.kms_key_id,
            "config": config_path,
            "audit_log": gateway.audit_path(),
        });
        if let Some(ca) = ca_cert {
            json["ca_cert"] = serde_json::json!(ca);
        }
        println!("{json}");
    } else {
        let json = serde_json::json!({
            "endpoint": gateway.endpoint(),
            "audit_log": gateway.audit_path(),
        });
        println!("{json}");
    }
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match gateway.reload() {
                Ok(revoked) => eprintln!("gateway: reloaded; revoked {} sessions", revoked.len()),
                Err(error) => eprintln!("gateway: reload refused: {error}"),
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    gateway.shutdown().await;
    Ok(())
}
