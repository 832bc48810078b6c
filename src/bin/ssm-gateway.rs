//! The gateway program: `--config FILE` (JSON, see `dist/gateway.example.json`), or `--dev`
//! for a generated configuration on 127.0.0.1 whose credentials it prints as one JSON line.
//! SIGHUP (or editing the file) reloads policies and revokes sessions no longer allowed;
//! SIGTERM or Ctrl-C shuts down gracefully (sessions end as `gateway_shutdown`) and exits 0.
//!
//! ```text
//! ssm-gateway --config /etc/ssm-gateway/config.json [--listen ADDR] [--state-dir DIR]
//!             [--tls-cert PEM --tls-key PEM] [--log-format text|json]
//! ssm-gateway --dev [--tls] [--listen ADDR] [--state-dir DIR] [--agents N]
//! ```
//! With `--dev --state-dir DIR`, the first start generates the set-up in DIR (a free port,
//! saved) and later starts load it: the same endpoint, agent ids, keys and certificate. Each
//! agent's secret is in `DIR/agent-secret` (`agent-secret-N` for the N-th), 0600.
//! Each flag can also come from the environment (`SSM_GATEWAY_CONFIG`, `SSM_GATEWAY_LISTEN`,
//! `SSM_GATEWAY_STATE_DIR`, `SSM_GATEWAY_TLS_CERT`, `SSM_GATEWAY_TLS_KEY`,
//! `SSM_GATEWAY_LOG_FORMAT`); flags and variables override the file's fields. Log records go
//! to standard error, filtered by `RUST_LOG` (default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use ssm_session::cli::{self, LogFormat};
use ssm_session::gateway::{self, Gateway, GatewayConfig, TlsFiles};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "ssm-gateway",
    about = "Session Manager gateway: API, policies, agents, relay and audit",
    disable_version_flag = true
)]
struct Args {
    /// The configuration file (JSON).
    #[arg(long, env = "SSM_GATEWAY_CONFIG", required_unless_present_any = ["dev", "version"], conflicts_with = "dev")]
    config: Option<PathBuf>,
    /// Generate a development configuration and print its credentials as one JSON line.
    #[arg(long)]
    dev: bool,
    /// Serve https/wss with a generated self-signed certificate (with --dev).
    #[arg(long, requires = "dev", conflicts_with = "tls_cert")]
    tls: bool,
    /// Address to listen on (default with --dev: 127.0.0.1 on any free port, the same one
    /// again with the same --state-dir).
    #[arg(long, env = "SSM_GATEWAY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where the audit log, recordings and KMS master key live (with --dev also the
    /// generated configuration and credentials, reused by the next start; default: a new
    /// directory under the temporary directory).
    #[arg(long, env = "SSM_GATEWAY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// How many agent identities the development set-up has (with --dev, default 1; more are
    /// added to an existing --state-dir, none removed).
    #[arg(long, requires = "dev", value_parser = clap::value_parser!(u16).range(1..=100))]
    agents: Option<u16>,
    /// PEM certificate chain to serve https/wss with, leaf first.
    #[arg(long, env = "SSM_GATEWAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM (PKCS#8) private key of --tls-cert.
    #[arg(long, env = "SSM_GATEWAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How log records are written to standard error.
    #[arg(long, env = "SSM_GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print the version and exit.
    #[arg(long, short = 'V')]
    version: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.version {
        println!("{}", cli::version_line("ssm-gateway"));
        return;
    }
    if let Err(error) = cli::init_logging(args.log_format, "info") {
        eprintln!("ssm-gateway: {error}");
        std::process::exit(2);
    }
    if let Err(error) = run(args).await {
        tracing::error!(%error, "ssm-gateway stopped");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!("{}", cli::version_line("ssm-gateway"));
    cli::raise_fd_limit();
    let tls_files = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let (mut config, config_path, dev) = match args.config {
        Some(path) => (GatewayConfig::load(&path)?, path, None),
        None => {
            let agents = usize::from(args.agents.unwrap_or(1));
            // With --state-dir, kept: the next start with it loads the same set-up; without,
            // a new one in a new directory each time.
            let dir = match args.state_dir.clone() {
                Some(dir) => dir,
                None => std::env::temp_dir().join(format!(
                    "ssm-session-dev-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_millis()
                )),
            };
            let dev = gateway::open_dev(&dir, args.listen, args.tls, agents)?;
            (dev.config.clone(), dev.config_path.clone(), Some(dev))
        }
    };
    // A --dev --state-dir set-up listens where it did before: say so when that is taken.
    let saved_port = dev.is_some() && args.listen.is_none() && args.state_dir.is_some();
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    if let Some(files) = tls_files {
        config.tls = Some(files);
    }
    let gateway = match Gateway::start(config.clone(), Some(config_path.clone())).await {
        Err(gateway::GatewayError::Io { source, .. })
            if saved_port && source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            return Err(format!(
                "{} (saved in {} by the first start) is in use, by another gateway on this \
                 --state-dir or another program: stop it, or pass --listen to serve elsewhere",
                config.listen,
                config_path.display()
            )
            .into());
        }
        started => started?,
    };
    tracing::info!(
        listen = %gateway.local_addr(),
        endpoint = gateway.endpoint(),
        scheme = if config.tls.is_some() { "https" } else { "http" },
        region = %config.region,
        account = %config.account,
        config = %config_path.display(),
        audit_log = %gateway.audit_path().display(),
        "serving"
    );
    // One JSON line on standard output, for scripts and tests: where to connect and, with
    // --dev, the generated credentials.
    let mut line = serde_json::json!({
        "endpoint": gateway.endpoint(),
        "audit_log": gateway.audit_path(),
    });
    if let Some(dev) = dev {
        let setup = serde_json::to_value(&dev.setup)?;
        if let (Some(line), Some(setup)) = (line.as_object_mut(), setup.as_object()) {
            line.extend(setup.clone());
            line.insert("config".into(), serde_json::json!(dev.config_path));
            if let Some(ca) = dev.ca_cert {
                line.insert("ca_cert".into(), serde_json::json!(ca));
            }
            if let Some((_, file)) = dev.agents.first() {
                line.insert("agent_secret_file".into(), serde_json::json!(file));
            }
            let agents: Vec<_> = dev
                .agents
                .iter()
                .map(|(id, file)| serde_json::json!({"agent_id": id, "agent_secret_file": file}))
                .collect();
            line.insert("agents".into(), serde_json::json!(agents));
        }
    }
    println!("{line}");

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            // `reload` logs its outcome, revocations included.
            _ = hangup.recv() => { let _ = gateway.reload(); }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    gateway.shutdown().await;
    Ok(())
}
