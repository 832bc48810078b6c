//! A session with real AWS: `StartSession` through `aws-sdk-ssm`, then the session run by
//! this crate, with data keys from AWS KMS when the document asks for encryption.
//!
//! ```text
//! cargo run --features aws --example aws -- --target i-0123456789abcdef0 \
//!     [--document-name AWS-StartPortForwardingSession] \
//!     [--parameters '{"portNumber":["80"],"localPortNumber":["8080"]}'] [--profile P] [--region R]
//! ```
//! Credentials, region and endpoints come from the standard AWS configuration (environment,
//! `~/.aws/config`, SSO, instance roles; `AWS_ENDPOINT_URL_SSM` points it at a gateway).

use std::collections::HashMap;
use std::sync::Arc;

use clap::Parser;
use ssm_session::aws::ApiClient;
use ssm_session::aws_sdk::{self, AwsKms, SdkOptions};
use ssm_session::client::SessionClient;
use ssm_session::net::TlsConfig;

#[derive(Parser)]
#[command(about = "Start a Session Manager session with the AWS SDK and run it with ssm-session")]
struct Args {
    /// The managed node (instance or mi- id).
    #[arg(long)]
    target: String,
    /// Session document (default: the account's SSM-SessionManagerRunShell).
    #[arg(long)]
    document_name: Option<String>,
    /// Document parameters as JSON, e.g. '{"portNumber":["80"]}'.
    #[arg(long)]
    parameters: Option<String>,
    /// Profile of ~/.aws/config.
    #[arg(long)]
    profile: Option<String>,
    /// Region (else the configuration's).
    #[arg(long)]
    region: Option<String>,
}

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() {
    match run(Args::parse()).await {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("\nError: {error}");
            std::process::exit(255);
        }
    }
}

async fn run(args: Args) -> Result<i32, Error> {
    let options = SdkOptions::new(args.profile.as_deref(), args.region.as_deref());
    let config = aws_sdk::load_config(&options).await?;
    let ssm = aws_sdk_ssm::Client::new(&config);
    let parameters: HashMap<String, Vec<String>> = match &args.parameters {
        Some(json) => serde_json::from_str(json)?,
        None => HashMap::new(),
    };
    let answer = ssm
        .start_session()
        .target(&args.target)
        .set_document_name(args.document_name.clone())
        .set_parameters((!parameters.is_empty()).then_some(parameters))
        .send()
        .await
        .map_err(|error| aws_sdk_ssm::error::DisplayErrorContext(error).to_string())?;
    let started = aws_sdk::started_session(&answer, &args.target)?;
    eprintln!("\nStarting session with SessionId: {}", started.session_id);

    // ResumeSession and TerminateSession are signed by this crate with the same identity, at
    // the SSM endpoint (an override as the SDK reads it, else the region's).
    let region = config.region().map(ToString::to_string).unwrap_or_default();
    let endpoint = std::env::var("AWS_ENDPOINT_URL_SSM")
        .ok()
        .or_else(|| config.endpoint_url().map(str::to_owned))
        .unwrap_or_else(|| format!("https://ssm.{region}.amazonaws.com"));
    let credentials = Arc::new(aws_sdk::SdkCredentials::new(&config, None));
    let api = ApiClient::with_credentials(&endpoint, &region, credentials, TlsConfig::default())?;
    let sessions = SessionClient::new(api).key_provider(Arc::new(AwsKms::new(&config, None)));
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let summary = sessions
        .run_session(&started, interrupted, |notice| println!("{notice}"))
        .await?;
    eprintln!("\n{}: {summary}", started.session_id);
    Ok(summary.exit_code.unwrap_or(0))
}
