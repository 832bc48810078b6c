//! `session-manager-plugin`: the Session Manager client, two ways.
//!
//! * The AWS CLI's plugin contract (PROTOCOL.md §13): on `PATH` under this name, `aws ssm
//!   start-session` runs it with the `StartSession` answer — against AWS or against a gateway
//!   (`--endpoint-url`). A plain shell, a command or a port forward needs no credentials, as
//!   with the reference plugin; KMS-encrypted sessions and `ResumeSession` after a lost
//!   connection load them when they first need them.
//! * Its own command line, against a gateway:
//!   ```text
//!   session-manager-plugin start-session --target ID [--document-name NAME] \
//!       [--parameters '{"portNumber":["80"]}'] --endpoint-url URL
//!   ```
//!
//! Credentials, when needed: built with the `aws-kms` feature, the AWS SDK's whole chain
//! (environment, profiles, SSO, assume-role, `credential_process`, instance roles) and AWS KMS
//! through the SDK; otherwise `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_SESSION_TOKEN`, else the profile's keys in `~/.aws/credentials`. A private CA from
//! `AWS_CA_BUNDLE`, a KMS endpoint other than the gateway's from `AWS_ENDPOINT_URL_KMS`.
//! Diagnostics go to stderr through `RUST_LOG` (default `warn`); `SSM_PLUGIN_LOG_FORMAT=json`
//! writes them as JSON. The remote exit code becomes this process's exit code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ssm_session::aws::{ApiCallError, ApiClient, CredentialSource};
use ssm_session::cli::{self, LogFormat};
use ssm_session::client::plugin::{self, LegacyCliKms, PluginCall, PluginStart};
use ssm_session::client::{SessionClient, StartedSession};
use ssm_session::kms::KeyProvider;
use ssm_session::net::TlsConfig;

#[derive(Parser)]
#[command(
    name = "session-manager-plugin",
    about = "Session Manager client (also the AWS CLI's session-manager-plugin)",
    version = ssm_session::version::CLIENT_VERSION
)]
struct Args {
    /// Log records on stderr as text or JSON (filter with RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
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
    /// Profile to take credentials from (else the environment, then `default`).
    #[arg(long, env = "AWS_PROFILE")]
    profile: Option<String>,
    /// PEM file of the CA to trust for https/wss.
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_cert: Option<PathBuf>,
}

type Error = Box<dyn std::error::Error>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let own_command_line = args.first().is_some_and(|first| {
        matches!(first.as_str(), "start-session" | "help" | "--help" | "-h")
            || first.starts_with("--log-format")
    });
    if own_command_line {
        let args = Args::parse();
        logging(args.log_format);
        let Command::StartSession(start) = args.command;
        exit_with(runtime().block_on(start_session(start)));
    }
    // The answer's variable is read and removed before any thread exists, so that the token
    // does not reach child processes.
    let call = plugin::parse(&args, |name| {
        let value = std::env::var(name).ok();
        // SAFETY: single-threaded: the runtime is built after this.
        unsafe { std::env::remove_var(name) };
        value
    });
    match call {
        Ok(PluginCall::Installed) => println!("{}", plugin::INSTALLED_MESSAGE),
        Ok(PluginCall::Version) => println!("{}", ssm_session::version::CLIENT_VERSION),
        Ok(PluginCall::Start(start)) => {
            let json = env("SSM_PLUGIN_LOG_FORMAT").is_some_and(|format| format == "json");
            logging(if json {
                LogFormat::Json
            } else {
                LogFormat::Text
            });
            exit_with(runtime().block_on(plugin_session(*start)))
        }
        Err(error) => {
            eprintln!("\n{error}\n");
            std::process::exit(2);
        }
    }
}

fn logging(format: LogFormat) {
    if let Err(error) = cli::init_logging(format, "warn") {
        eprintln!("{error}");
        std::process::exit(2);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn exit_with(outcome: Result<i32, Error>) -> ! {
    std::process::exit(match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("\nError: {error}");
            255
        }
    })
}

/// Trust for https/wss: the system's roots, or `AWS_CA_BUNDLE`'s.
fn tls(ca_bundle: Option<PathBuf>) -> Result<TlsConfig, Error> {
    Ok(match ca_bundle {
        Some(path) => TlsConfig::with_root_pem(&std::fs::read(path)?)?,
        None => TlsConfig::default(),
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// `aws ssm start-session` handed a started session over.
async fn plugin_session(start: PluginStart) -> Result<i32, Error> {
    let tls = tls(env("AWS_CA_BUNDLE").map(PathBuf::from))?;
    let kms_endpoint = start.kms_endpoint(env("AWS_ENDPOINT_URL_KMS").as_deref());
    let (credentials, kms) =
        identity(start.profile.as_deref(), &start.region, &kms_endpoint, &tls).await?;
    let api = ApiClient::with_credentials(&start.endpoint, &start.region, credentials, tls)?;
    let kms: Arc<dyn KeyProvider> = match start.legacy_cli {
        true => Arc::new(LegacyCliKms),
        false => kms,
    };
    run(SessionClient::new(api).key_provider(kms), &start.session).await
}

/// Where credentials come from when a call needs them, and the KMS: the AWS SDK's standard
/// configuration. Nothing here resolves credentials.
#[cfg(feature = "aws-kms")]
async fn identity(
    profile: Option<&str>,
    region: &str,
    kms_endpoint: &str,
    _tls: &TlsConfig,
) -> Result<(Arc<dyn CredentialSource>, Arc<dyn KeyProvider>), Error> {
    use ssm_session::aws_sdk::{self, AwsKms, SdkCredentials, SdkOptions};
    let mut options = SdkOptions::new(profile, Some(region));
    if let Some(path) = env("AWS_CA_BUNDLE") {
        options = options.ca_pem(std::fs::read(path)?);
    }
    let config = aws_sdk::load_config(&options).await?;
    Ok((
        Arc::new(SdkCredentials::new(&config, profile)),
        Arc::new(AwsKms::new(&config, Some(kms_endpoint))),
    ))
}

/// Static keys from the environment or the shared files, looked up at the first signed call;
/// KMS over signed JSON.
#[cfg(not(feature = "aws-kms"))]
async fn identity(
    profile: Option<&str>,
    region: &str,
    kms_endpoint: &str,
    tls: &TlsConfig,
) -> Result<(Arc<dyn CredentialSource>, Arc<dyn KeyProvider>), Error> {
    let credentials: Arc<dyn CredentialSource> =
        Arc::new(ssm_session::aws::SharedFileCredentials::new(profile));
    let kms = ApiClient::with_credentials(kms_endpoint, region, credentials.clone(), tls.clone())?;
    Ok((credentials, Arc::new(ssm_session::aws::HttpKms::new(kms))))
}

/// Runs the session and reports how it ended; the remote exit code, if any.
async fn run(sessions: SessionClient, started: &StartedSession) -> Result<i32, Error> {
    eprintln!("\nStarting session with SessionId: {}", started.session_id);
    // On stdout, as the reference prints them (tools wait for these lines).
    let summary = sessions
        .run_session(started, cli::session_end_signal(), |notice| {
            println!("{notice}")
        })
        .await?;
    if let ssm_session::net::Ending::ChannelClosed { output } = &summary.ending
        && !output.is_empty()
    {
        eprintln!("\n{output}");
    }
    eprintln!("\n{}: {summary}", started.session_id);
    if let Some(why) = summary.interrupted() {
        eprintln!("\nThe session was ended before the target finished it ({why}): exit status 1");
    }
    Ok(summary.exit_status())
}

/// This program's own `start-session`.
async fn start_session(args: StartArgs) -> Result<i32, Error> {
    let tls = tls(args.ca_cert)?;
    let kms_endpoint = env("AWS_ENDPOINT_URL_KMS").unwrap_or_else(|| args.endpoint_url.clone());
    let (credentials, kms) =
        identity(args.profile.as_deref(), &args.region, &kms_endpoint, &tls).await?;
    let api = ApiClient::with_credentials(&args.endpoint_url, &args.region, credentials, tls)?;
    let sessions = SessionClient::new(api).key_provider(kms);
    let parameters = parameters(args.parameters.as_deref())?;
    let started = sessions
        .start_session(&args.target, args.document_name.as_deref(), parameters)
        .await
        .map_err(|error| hint(&error))?;
    run(sessions, &started).await
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
