//! The agent program: dials out to the gateway and runs the sessions it is sent.
//!
//! ```text
//! cargo run --example agent -- --endpoint URL --agent-id ID --agent-secret SECRET [--ca-cert PATH]
//! ```
//! Every flag can also come from the environment (`SSM_AGENT_ENDPOINT`, `SSM_AGENT_ID`,
//! `SSM_AGENT_SECRET`, `SSM_AGENT_CA_CERT`, `SSM_AGENT_REGION`, `SSM_AGENT_KMS_ENDPOINT`).
//!
//! Data keys of encrypted sessions are decrypted by the gateway's KMS, by another KMS endpoint
//! (`--kms-endpoint`, signed with the agent's identity), or — built with `--features aws-kms` —
//! by AWS KMS with the host's standard AWS configuration (`--aws-kms`, e.g. an instance role).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ssm_session::agent::{self, AgentSettings};
use ssm_session::aws::{ApiClient, HttpKms};
use ssm_session::net::TlsConfig;
use ssm_session::sigv4::Credentials;

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
    /// A KMS endpoint other than the gateway's.
    #[arg(long, env = "SSM_AGENT_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,
    /// Use AWS KMS with the standard AWS configuration (`--kms-endpoint` overrides its URL).
    #[cfg(feature = "aws-kms")]
    #[arg(long)]
    aws_kms: bool,
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
    #[cfg(feature = "aws-kms")]
    if args.aws_kms {
        use ssm_session::aws_sdk::{self, AwsKms, SdkOptions};
        let options = SdkOptions::new(None, Some(&settings.region));
        let config = aws_sdk::load_config(&options)
            .await
            .unwrap_or_else(|error| {
                eprintln!("agent: {error}");
                std::process::exit(2);
            });
        let kms = AwsKms::new(&config, args.kms_endpoint.as_deref());
        settings = settings.key_provider(Arc::new(kms));
    }
    if settings.key_provider.is_none()
        && let Some(endpoint) = &args.kms_endpoint
    {
        let identity = Credentials::new(&settings.agent_id, &settings.agent_secret, None);
        match ApiClient::new(endpoint, &settings.region, identity, settings.tls.clone()) {
            Ok(api) => settings = settings.key_provider(Arc::new(HttpKms::new(api))),
            Err(error) => {
                eprintln!("agent: --kms-endpoint: {error}");
                std::process::exit(2);
            }
        }
    }
    eprintln!("agent {} dialling {}", settings.agent_id, settings.endpoint);
    tokio::select! {
        () = agent::run(settings) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
