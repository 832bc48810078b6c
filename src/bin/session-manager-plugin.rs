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
//!   session-manager-plugin terminate-session --session-id ID --endpoint-url URL
//!   session-manager-plugin describe-sessions [--state Active|History] \
//!       [--filter Target=ID] --endpoint-url URL
//!   ```
//!   each with `--region`, `--profile` and `--ca-cert FILE` (which wins over
//!   `AWS_CA_BUNDLE`). `describe-sessions` prints the answer as JSON on stdout, as the AWS CLI
//!   does; `terminate-session` prints `{"SessionId": …}`.
//!
//! Credentials, when needed: built with the `aws-kms` feature, the AWS SDK's whole chain
//! (environment, profiles, SSO, assume-role, `credential_process`, instance roles) and AWS KMS
//! through the SDK; otherwise `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_SESSION_TOKEN`, else the profile's keys in `~/.aws/credentials`. A private CA from
//! `AWS_CA_BUNDLE`, a KMS endpoint other than the gateway's from `AWS_ENDPOINT_URL_KMS`.
//! Diagnostics go to stderr through `RUST_LOG` (default `warn`); `SSM_PLUGIN_LOG_FORMAT=json`
//! writes them as JSON.
//!
//! # Exit status
//!
//! The remote exit code becomes this process's exit code (0 to 255) when the target reported
//! one. Otherwise, and for every local failure, a code of
//! `ssm_session::client::exit::ExitCode`, after a line `Error: …` (or, for a
//! session the gateway ended, `The session was ended before …`) on stderr that tells it from a
//! remote exit with the same number:
//!
//! | Code | Meaning |
//! |-----:|---------|
//! | 64 | bad command line or plugin arguments |
//! | 69 | endpoint unreachable, or the call refused (`AccessDeniedException`, `TargetNotConnected`, …) |
//! | 70 | any other error |
//! | 74 | the connection was lost and could not be resumed; the terminal or local port failed |
//! | 75 | the gateway ended the session before the target reported an exit code |
//! | 76 | wrong scheme (`http://` for a TLS endpoint or the reverse), not an API answer, handshake failure |
//! | 77 | no credentials, or the service did not accept them |
//! | 78 | bad endpoint URL, unusable CA file, or an untrusted gateway certificate |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ssm_session::aws::{ApiCallError, ApiClient, CredentialSource};
use ssm_session::cli::{self, LogFormat};
use ssm_session::client::RunError;
use ssm_session::client::exit::{ExitCode, UsageError};
use ssm_session::client::plugin::{self, LegacyCliKms, PluginCall, PluginStart};
use ssm_session::client::{SessionClient, SessionFilter, SessionState, StartedSession};
use ssm_session::crypto::DATA_KEY_LEN;
use ssm_session::kms::{DataKey, EncryptionContext, KeyProvider, KmsError, KmsFuture};
use ssm_session::net::NetError;
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
    /// End a session for both sides.
    TerminateSession(TerminateArgs),
    /// List your sessions as JSON, as `aws ssm describe-sessions` does.
    DescribeSessions(DescribeArgs),
}

#[derive(clap::Args)]
struct TerminateArgs {
    /// The session to end.
    #[arg(long)]
    session_id: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(clap::Args)]
struct DescribeArgs {
    /// Active (connected) sessions, or History (ended ones).
    #[arg(long, default_value_t = SessionState::Active)]
    state: SessionState,
    /// Only sessions matching KEY=VALUE (Target, Owner, Status, SessionId, InvokedAfter,
    /// InvokedBefore); repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = filter)]
    filter: Vec<SessionFilter>,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

fn filter(text: &str) -> Result<SessionFilter, String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok(SessionFilter::new(key, value))
}

/// Where and as whom the calls go.
#[derive(clap::Args)]
struct EndpointArgs {
    /// Gateway endpoint.
    #[arg(long, env = "AWS_ENDPOINT_URL_SSM")]
    endpoint_url: String,
    /// Region to sign for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Profile to take credentials from (else the environment, then `default`).
    #[arg(long, env = "AWS_PROFILE")]
    profile: Option<String>,
    /// PEM file of the CA to trust for https/wss (given here, it wins over AWS_CA_BUNDLE).
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_cert: Option<PathBuf>,
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
    #[command(flatten)]
    endpoint: EndpointArgs,
}

type Error = Box<dyn std::error::Error>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let own_command_line = args.first().is_some_and(|first| {
        matches!(
            first.as_str(),
            "start-session" | "terminate-session" | "describe-sessions" | "help" | "--help" | "-h"
        ) || first.starts_with("--log-format")
    });
    if own_command_line {
        let args = match Args::try_parse() {
            Ok(args) => args,
            Err(error) => {
                let _ = error.print();
                // Help is no failure; anything else is a usage error.
                std::process::exit(match error.use_stderr() {
                    true => ExitCode::Usage.code(),
                    false => 0,
                });
            }
        };
        logging(args.log_format);
        // Exits while the runtime still exists: dropping it would wait for the blocking read
        // of stdin.
        let runtime = runtime();
        exit_with(match args.command {
            Command::StartSession(start) => runtime.block_on(start_session(start)),
            Command::TerminateSession(terminate) => runtime.block_on(terminate_session(terminate)),
            Command::DescribeSessions(describe) => runtime.block_on(describe_sessions(describe)),
        });
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
            std::process::exit(ExitCode::Usage.code());
        }
    }
}

fn logging(format: LogFormat) {
    if let Err(error) = cli::init_logging(format, "warn") {
        eprintln!("Error: {error}");
        std::process::exit(ExitCode::Config.code());
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
            ExitCode::of(error.as_ref()).code()
        }
    })
}

/// Trust for https/wss: the built-in roots, or the CA file's (`--ca-cert`, else
/// `AWS_CA_BUNDLE`).
fn tls(ca_bundle: Option<&Path>) -> Result<TlsConfig, Error> {
    Ok(match ca_bundle {
        Some(path) => TlsConfig::from_pem_file(path)?,
        None => TlsConfig::default(),
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// `aws ssm start-session` handed a started session over.
async fn plugin_session(start: PluginStart) -> Result<i32, Error> {
    let ca_file = env("AWS_CA_BUNDLE").map(PathBuf::from);
    let tls = tls(ca_file.as_deref())?;
    let kms_endpoint = start.kms_endpoint(env("AWS_ENDPOINT_URL_KMS").as_deref());
    let (credentials, kms) = identity(
        start.profile.as_deref(),
        &start.region,
        &kms_endpoint,
        &tls,
        ca_file.as_deref(),
    )
    .await?;
    let api = ApiClient::with_credentials(&start.endpoint, &start.region, credentials, tls)?;
    let kms: Arc<dyn KeyProvider> = match start.legacy_cli {
        true => Arc::new(LegacyCliKms),
        false => kms,
    };
    let kms = Arc::new(WatchedKms::new(kms));
    run(
        SessionClient::new(api).key_provider(kms.clone()),
        &start.session,
        &kms,
    )
    .await
}

/// Where credentials come from when a call needs them, and the KMS: the AWS SDK's standard
/// configuration. Nothing here resolves credentials.
#[cfg(feature = "aws-kms")]
async fn identity(
    profile: Option<&str>,
    region: &str,
    kms_endpoint: &str,
    _tls: &TlsConfig,
    ca_file: Option<&Path>,
) -> Result<(Arc<dyn CredentialSource>, Arc<dyn KeyProvider>), Error> {
    use ssm_session::aws_sdk::{self, AwsKms, SdkCredentials, SdkOptions};
    let mut options = SdkOptions::new(profile, Some(region));
    // The CA chosen for the gateway (`--ca-cert` wins over `AWS_CA_BUNDLE`).
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|error| ssm_session::net::CaFileError {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        options = options.ca_pem(pem);
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
    _ca_file: Option<&Path>,
) -> Result<(Arc<dyn CredentialSource>, Arc<dyn KeyProvider>), Error> {
    let credentials: Arc<dyn CredentialSource> =
        Arc::new(ssm_session::aws::SharedFileCredentials::new(profile));
    let kms = ApiClient::with_credentials(kms_endpoint, region, credentials.clone(), tls.clone())?;
    Ok((credentials, Arc::new(ssm_session::aws::HttpKms::new(kms))))
}

/// Runs the session and reports how it ended; the remote exit code, if any.
async fn run(
    sessions: SessionClient,
    started: &StartedSession,
    kms: &WatchedKms,
) -> Result<i32, Error> {
    eprintln!("\nStarting session with SessionId: {}", started.session_id);
    // On stdout, as the reference prints them (tools wait for these lines).
    let summary = sessions
        .run_session(started, cli::session_end_signal(), |notice| {
            println!("{notice}")
        })
        .await
        .map_err(|error| kms.explain(error))?;
    let ssm_session::net::Ending::ChannelClosed { output } = &summary.ending else {
        eprintln!("\n{}: {summary}", started.session_id);
        return Ok(finish(&summary));
    };
    if !output.is_empty() {
        eprintln!("\n{output}");
    }
    eprintln!("\n{}: {summary}", started.session_id);
    if summary.interrupted().is_none() {
        // The target ended the session (`exit`): the reference client's goodbye.
        eprintln!(
            "\nExiting session with sessionId: {}.\n",
            started.session_id
        );
    }
    Ok(finish(&summary))
}

/// The exit status for `summary`, with a warning when the session did not end the ordinary way.
fn finish(summary: &ssm_session::client::SessionSummary) -> i32 {
    let code = summary.program_exit_code();
    if let Some(why) = summary.interrupted() {
        eprintln!(
            "\nThe session was ended before the target finished it ({why}): exit status {code}"
        );
    }
    code
}

/// A key provider that keeps its last failure: the session's handshake error carries only its
/// text, and the exit status depends on its type (no credentials, access denied).
struct WatchedKms {
    inner: Arc<dyn KeyProvider>,
    failed: std::sync::Mutex<Option<KmsError>>,
}

impl WatchedKms {
    fn new(inner: Arc<dyn KeyProvider>) -> WatchedKms {
        WatchedKms {
            inner,
            failed: std::sync::Mutex::default(),
        }
    }

    fn keep<T>(&self, result: Result<T, KmsError>) -> Result<T, KmsError> {
        if let Err(error) = &result
            && let Ok(mut failed) = self.failed.lock()
        {
            *failed = Some(error.clone());
        }
        result
    }

    /// `error`, with the KMS failure behind a failed handshake as its source.
    fn explain(&self, error: RunError) -> Error {
        let kms = self.failed.lock().ok().and_then(|mut failed| failed.take());
        match (error, kms) {
            // The session fails, or the gateway ends it, after the KMS error.
            (
                RunError::Connect(
                    error @ (NetError::Session(_) | NetError::EndedDuringHandshake(_)),
                ),
                Some(kms),
            ) => Box::new(KmsFailed { error, kms }),
            (error, _) => Box::new(error),
        }
    }
}

impl KeyProvider for WatchedKms {
    fn generate_data_key<'a>(
        &'a self,
        key_id: &'a str,
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, DataKey> {
        Box::pin(async move { self.keep(self.inner.generate_data_key(key_id, context).await) })
    }

    fn decrypt<'a>(
        &'a self,
        key_id: &'a str,
        blob: &'a [u8],
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, [u8; DATA_KEY_LEN]> {
        Box::pin(async move { self.keep(self.inner.decrypt(key_id, blob, context).await) })
    }
}

/// A handshake that failed because of the KMS.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
struct KmsFailed {
    error: NetError,
    #[source]
    kms: KmsError,
}

/// A client of the endpoint `args` name, with its identity and KMS.
async fn session_client(args: &EndpointArgs) -> Result<(SessionClient, Arc<WatchedKms>), Error> {
    let tls = tls(args.ca_cert.as_deref())?;
    let kms_endpoint = env("AWS_ENDPOINT_URL_KMS").unwrap_or_else(|| args.endpoint_url.clone());
    let (credentials, kms) = identity(
        args.profile.as_deref(),
        &args.region,
        &kms_endpoint,
        &tls,
        args.ca_cert.as_deref(),
    )
    .await?;
    let api = ApiClient::with_credentials(&args.endpoint_url, &args.region, credentials, tls)?;
    let kms = Arc::new(WatchedKms::new(kms));
    Ok((SessionClient::new(api).key_provider(kms.clone()), kms))
}

/// This program's own `start-session`.
async fn start_session(args: StartArgs) -> Result<i32, Error> {
    let parameters = parameters(args.parameters.as_deref()).map_err(UsageError)?;
    let (sessions, kms) = session_client(&args.endpoint).await?;
    let started = sessions
        .start_session(&args.target, args.document_name.as_deref(), parameters)
        .await
        .map_err(Hinted)?;
    run(sessions, &started, &kms).await
}

/// `terminate-session`: prints `{"SessionId": …}` as the AWS CLI does.
async fn terminate_session(args: TerminateArgs) -> Result<i32, Error> {
    let (sessions, _) = session_client(&args.endpoint).await?;
    sessions
        .terminate_session(&args.session_id)
        .await
        .map_err(Hinted)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "SessionId": args.session_id }))?
    );
    Ok(0)
}

/// `describe-sessions`: prints `{"Sessions": […]}` as the AWS CLI does.
async fn describe_sessions(args: DescribeArgs) -> Result<i32, Error> {
    let (sessions, _) = session_client(&args.endpoint).await?;
    let found = sessions
        .describe_sessions(args.state, &args.filter)
        .await
        .map_err(Hinted)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "Sessions": found }))?
    );
    Ok(0)
}

/// A refused call with advice on what to change; its source keeps the error's type.
#[derive(Debug)]
struct Hinted(ApiCallError);

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.0, hint(&self.0))
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn hint(error: &ApiCallError) -> &'static str {
    match error.code() {
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
    }
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
