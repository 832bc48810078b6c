//! The agent program: dials out to the gateway and runs the sessions it is sent.
//!
//! ```text
//! cargo run --example agent -- --endpoint URL --agent-id ID --agent-secret SECRET [--ca-cert PATH]
//! ```
//! Every flag can also come from the environment (`SSM_AGENT_ENDPOINT`, `SSM_AGENT_ID`,
//! `SSM_AGENT_SECRET`, `SSM_AGENT_CA_CERT`, `SSM_AGENT_REGION`).

use std::path::PathBuf;

use clap::Parser;
use ssm_session::agent::{self, AgentSettings};
use ssm_session::net::TlsConfig;

#[derive(Parser)]
#[command(about = "Session Manager agent: dials out, runs shells, commands and port forwards")]
struct Args {
    /// Gateway endpoint, http(s)://host:port.
    #[arg(long, env = "SSM_AGENT_ENDPOINT")]
    endpoint: String,
    /// This host's id.
    #[arg(long, env = "SSM_AGENT_ID")]
    agent_id: String,
    /// This host's secret.
    #[arg(long, env = "SSM_AGENT_SECRET", hide_env_values = true)]
    agent_secret: String,
    /// PEM file of the CA that signed the gateway's certificate.
    #[arg(long, env = "SSM_AGENT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Region to sign for.
    #[arg(long, env = "SSM_AGENT_REGION", default_value = "us-east-1")]
    region: String,
    /// Allow port sessions to link-local and metadata addresses.
    #[arg(long)]
    allow_link_local: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut settings = match AgentSettings::new(&args.endpoint, &args.agent_id, &args.agent_secret)
    {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("agent: {error}");
            std::process::exit(2);
        }
    };
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read(path).unwrap_or_else(|error| {
            eprintln!("agent: reading {}: {error}", path.display());
            std::process::exit(2);
        });
        match TlsConfig::with_root_pem(&pem) {
            Ok(tls) => settings = settings.tls(tls),
            Err(error) => {
                eprintln!("agent: {}: {error}", path.display());
                std::process::exit(2);
            }
        }
    }
    settings.region = args.region;
    settings.allow_link_local = args.allow_link_local;
    eprintln!("agent {} dialling {}", settings.agent_id, settings.endpoint);
    tokio::select! {
        () = agent::run(settings) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
