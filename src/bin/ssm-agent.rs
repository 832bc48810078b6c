//! `ssm-agent`: dials out to the gateway and runs the sessions it is sent.
//!
//! ```text
//! ssm-agent [--config /etc/ssm-agent/config.json] [--endpoint URL] [--agent-id ID]
//!           [--agent-secret-file PATH] [--ca-cert PATH] [--log-format text|json]
//! ```
//! Settings come from the configuration file (JSON, see `dist/agent.example.json`), then the
//! `SSM_AGENT_*` variables and flags, which override it (`SSM_AGENT_SECRET` carries the secret
//! itself, for development). SIGTERM or Ctrl-C stops it gracefully: live sessions end,
//! reported as `agent_shutdown`. Logs go to stderr (`RUST_LOG`, default `info`; under systemd,
//! `journalctl -u ssm-agent`): "connected to the gateway", "disconnected, reconnecting in Ns",
//! each session's start and end, and "the gateway refused this agent: REASON" (retried after
//! 1 s doubling to 5 minutes; network failures after 200 ms doubling to 30 s).
//!
//! Data keys of encrypted sessions are decrypted by the gateway's KMS, by another KMS endpoint
//! (`--kms-endpoint`, signed with the agent's identity), or — built with `--features aws-kms` —
//! by AWS KMS with the host's standard AWS configuration (`--aws-kms`, e.g. an instance role).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use ssm_session::agent::config::AgentFile;
use ssm_session::agent::{self, AgentSettings};
use ssm_session::aws::{ApiClient, HttpKms};
use ssm_session::cli::{self, LogFormat};
use ssm_session::net::TlsConfig;
use ssm_session::sigv4::Credentials;

#[derive(Parser)]
#[command(
    name = "ssm-agent",
    about = "Session Manager agent: dials out, runs shells, commands and port forwards",
    version = env!("CARGO_PKG_VERSION")
)]
struct Args {
    /// Configuration file (JSON); flags and SSM_AGENT_* variables override its fields.
    #[arg(long, env = "SSM_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Gateway endpoint, http(s)://host:port.
    #[arg(long, env = "SSM_AGENT_ENDPOINT")]
    endpoint: Option<String>,
    /// This host's id.
    #[arg(long, env = "SSM_AGENT_ID")]
    agent_id: Option<String>,
    /// A file holding this host's secret (mode 0600 or stricter: others may not read it).
    #[arg(long, env = "SSM_AGENT_SECRET_FILE")]
    agent_secret_file: Option<PathBuf>,
    /// This host's secret itself (development; prefer --agent-secret-file).
    #[arg(long, env = "SSM_AGENT_SECRET", hide_env_values = true)]
    agent_secret: Option<String>,
    /// PEM file of the CA that signed the gateway's certificate.
    #[arg(long, env = "SSM_AGENT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Region to sign for (default us-east-1).
    #[arg(long, env = "SSM_AGENT_REGION")]
    region: Option<String>,
    /// Shell for interactive sessions (default $SHELL, else /bin/sh).
    #[arg(long, env = "SSM_AGENT_SHELL")]
    shell: Option<String>,
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
    /// Log records on stderr as text or JSON (filter with RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SSM_AGENT_LOG_FORMAT")]
    log_format: LogFormat,
}

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args = Args::parse();
    // The sessions' shells inherit this process's environment: the secret must not be in it.
    // SAFETY: single-threaded: no runtime, no logging thread exists yet.
    unsafe { std::env::remove_var("SSM_AGENT_SECRET") };
    if let Err(error) = cli::init_logging(args.log_format, "info") {
        eprintln!("ssm-agent: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: Args) -> Result<(), Error> {
    let settings = settings(&args).await?;
    tracing::info!(
        version = %cli::version_line("ssm-agent"),
        protocol_version = agent::AGENT_VERSION,
        endpoint = %settings.endpoint,
        agent_id = %settings.agent_id,
        region = %settings.region,
        config = ?args.config,
        "dialling the gateway"
    );
    agent::run(settings, cli::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The file's settings with the flags and variables over them.
async fn settings(args: &Args) -> Result<AgentSettings, Error> {
    let file = match &args.config {
        Some(path) => AgentFile::load(path)?,
        None => AgentFile::default(),
    };
    let missing = |what: &str, flag: &str| {
        format!(
            "no {what}: set --{flag} (or SSM_AGENT_*), or \"{}\" in --config",
            flag.replace('-', "_")
        )
    };
    let endpoint = args
        .endpoint
        .clone()
        .or(file.endpoint)
        .ok_or_else(|| missing("gateway endpoint", "endpoint"))?;
    let agent_id = args
        .agent_id
        .clone()
        .or(file.agent_id)
        .ok_or_else(|| missing("agent id", "agent-id"))?;
    let secret = match (
        &args.agent_secret,
        &args.agent_secret_file,
        &file.agent_secret_file,
    ) {
        (Some(secret), _, _) => secret.clone(),
        (None, Some(path), _) | (None, None, Some(path)) => AgentFile::read_secret(path)?,
        (None, None, None) => Err(missing("agent secret", "agent-secret-file"))?,
    };
    let mut settings = AgentSettings::new(&endpoint, &agent_id, &secret)?;
    if let Some(path) = args.ca_cert.as_ref().or(file.ca_cert.as_ref()) {
        let pem = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
        let tls = TlsConfig::with_root_pem(&pem)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        settings = settings.tls(tls);
    }
    if let Some(region) = args.region.clone().or(file.region) {
        settings.region = region;
    }
    if let Some(shell) = args.shell.clone().or(file.shell) {
        settings.shell = shell;
    }
    settings.allow_link_local = args.allow_link_local || file.allow_link_local.unwrap_or(false);
    if file.run_as_agent_user == Some(true) {
        settings.default_run_as = None;
    } else if let Some(user) = file.default_run_as {
        settings.default_run_as = Some(user);
    }
    if let Some(dir) = file.recordings_dir {
        settings.recordings_dir = dir;
    }
    let kms_endpoint = args.kms_endpoint.clone().or(file.kms_endpoint);
    #[cfg(feature = "aws-kms")]
    if args.aws_kms {
        use ssm_session::aws_sdk::{self, AwsKms, SdkOptions};
        let options = SdkOptions::new(None, Some(&settings.region));
        let config = aws_sdk::load_config(&options).await?;
        let kms = AwsKms::new(&config, kms_endpoint.as_deref());
        return Ok(settings.key_provider(Arc::new(kms)));
    }
    if let Some(endpoint) = &kms_endpoint {
        let identity = Credentials::new(&settings.agent_id, &settings.agent_secret, None);
        let api = ApiClient::new(endpoint, &settings.region, identity, settings.tls.clone())
            .map_err(|error| format!("--kms-endpoint: {error}"))?;
        settings = settings.key_provider(Arc::new(HttpKms::new(api)));
    }
    Ok(settings)
}
