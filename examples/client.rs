//! The client program: `start-session` against a gateway, as `aws ssm start-session` does.
//!
//! ```text
//! cargo run --example client -- start-session --target ID [--document-name NAME] \
//!     [--parameters '{"portNumber":["80"]}'] --endpoint-url URL
//! ```
//! Credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`
//! (or the flags), the region from `AWS_REGION` / `AWS_DEFAULT_REGION`, a private CA from
//! `AWS_CA_BUNDLE` or `--ca-cert`. The remote exit code becomes this process's exit code.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ssm_session::aws::{ApiCallError, ApiClient};
use ssm_session::client::{self, SessionClient, StartedSession};
use ssm_session::net::TlsConfig;
use ssm_session::sigv4::Credentials;

#[derive(Parser)]
#[command(about = "Session Manager client")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a session: a terminal, a command, or port forwarding (by document).
    StartSession(StartArgs),
}

#[derive(clap::Args)]
struct StartArgs {
    /// The managed node to connect to.
    #[arg(long)]
    target: String,
    /// Session document (default SSM-SessionManagerRunShell).
    #[arg(long)]
    document_name: Option<String>,
    /// Document parameters as JSON, e.g. '{"portNumber":["8080"]}'.
    #[arg(long)]
    parameters: Option<String>,
    /// Gateway endpoint.
    #[arg(long, env = "AWS_ENDPOINT_URL_SSM")]
    endpoint_url: String,
    /// Region to sign for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key_id: String,
    /// Secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: String,
    /// Session token of temporary credentials.
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    session_token: Option<String>,
    /// PEM file of the CA to trust for https/wss.
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_cert: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let Command::StartSession(args) = Args::parse().command;
    let code = match start_session(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("\nError: {error}");
            255
        }
    };
    std::process::exit(code);
}

fn hint(error: &ApiCallError) -> String {
    let advice = match error.code() {
        Some("AccessDeniedException") => {
            "\nAsk an administrator for a policy that allows this action on this target and document."
        }
        Some("TargetNotConnected") => {
            "\nStart the agent on that host, or check its connection to the gateway."
        }
        Some(
            "InvalidSignatureException" | "SignatureDoesNotMatch" | "IncompleteSignatureException",
        ) => "\nCheck the secret access key and the clock of this machine.",
        Some("UnrecognizedClientException") => {
            "\nCheck AWS_ACCESS_KEY_ID: the gateway does not know it."
        }
        Some("InvalidDocument" | "InvalidParameters") => {
            "\nCheck --document-name and --parameters."
        }
        _ => "",
    };
    format!("{error}{advice}")
}

fn parameters(text: Option<&str>) -> Result<BTreeMap<String, Vec<String>>, String> {
    let Some(text) = text else {
        return Ok(BTreeMap::new());
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("--parameters is not JSON: {error}"))?;
    let object = value
        .as_object()
        .ok_or("--parameters must be a JSON object")?;
    object
        .iter()
        .map(|(name, value)| {
            let values = match value {
                serde_json::Value::String(one) => vec![one.clone()],
                serde_json::Value::Array(many) => many
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_owned)
                            .ok_or(format!("parameter {name}: values must be strings"))
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(format!("parameter {name}: a string or a list of strings")),
            };
            Ok((name.clone(), values))
        })
        .collect()
}

async fn start_session(args: StartArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let tls = match &args.ca_cert {
        Some(path) => TlsConfig::with_root_pem(&std::fs::read(path)?)?,
        None => TlsConfig::default(),
    };
    let credentials = Credentials::new(
        &args.access_key_id,
        &args.secret_access_key,
        args.session_token.as_deref(),
    );
    let api = ApiClient::new(&args.endpoint_url, &args.region, credentials, tls)?;
    let sessions = SessionClient::new(api);
    let parameters = parameters(args.parameters.as_deref())?;
    let local_port: u16 = match parameters
        .get("localPortNumber")
        .and_then(|values| values.first())
    {
        Some(port) => port
            .parse()
            .map_err(|_| "localPortNumber must be a port number")?,
        None => 0,
    };
    let started = sessions
        .start_session(&args.target, args.document_name.as_deref(), parameters)
        .await
        .map_err(|error| hint(&error))?;
    eprintln!("\nStarting session with SessionId: {}", started.session_id);
    let connection = sessions.connect(&started).await?;
    let local_forwarding = connection
        .info()
        .properties
        .as_ref()
        .and_then(|properties| properties.get("type"))
        .and_then(|kind| kind.as_str())
        == Some("LocalPortForwarding");
    // Port sessions of other kinds (SSH) carry one stream on stdin/stdout (SPEC §8.5).
    let summary = if connection.info().session_type == "Port" && local_forwarding {
        port_forwarding(&sessions, &started, connection, local_port).await?
    } else if connection.info().session_type == "Port" {
        client::run_standard_stream(connection).await?
    } else {
        client::run_terminal(connection).await?
    };
    if let ssm_session::net::Ending::ChannelClosed { output } = &summary.ending
        && !output.is_empty()
    {
        eprintln!("\n{output}");
    }
    eprintln!("\n{}: {summary}", started.session_id);
    Ok(summary.exit_code.unwrap_or(0))
}

async fn port_forwarding(
    sessions: &SessionClient,
    started: &StartedSession,
    connection: ssm_session::net::Connection,
    local_port: u16,
) -> Result<client::SessionSummary, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", local_port)).await?;
    eprintln!(
        "Port {} opened for sessionId {}.\nWaiting for connections...",
        listener.local_addr()?.port(),
        started.session_id
    );
    let forward = client::run_port_forwarding(connection, listener, |event| {
        if !event.closed {
            eprintln!("Connection accepted for session [{}]", event.destination);
        }
    });
    tokio::select! {
        summary = forward => Ok(summary?),
        _ = tokio::signal::ctrl_c() => {
            sessions.terminate_session(&started.session_id).await?;
            eprintln!("\nExiting session with sessionId: {}.", started.session_id);
            Ok(client::SessionSummary {
                exit_code: None,
                ending: ssm_session::net::Ending::Closed,
                bytes_sent: 0,
                bytes_received: 0,
                duration: std::time::Duration::ZERO,
            })
        }
    }
}
